/* harness.c - brokers, members and CLI runs for integration tests. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "identity.h"
#include "store.h"
#include "wire.h"

int
harness_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Waits for the broker's "event=started" line after offset, or for its death. */
static int
wait_started(test_broker *b, long offset)
{
    for (int i = 0; i < 2000; i++) {
        int status;
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            fprintf(stderr, "harness: broker exited during start (status %d), see %s\n", status,
                    b->log);
            b->pid = 0;
            return -1;
        }
        FILE *f = fopen(b->log, "r");
        if (f) {
            char line[2048];
            int found = 0;
            fseek(f, offset, SEEK_SET);
            while (!found && fgets(line, sizeof line, f))
                found = strstr(line, "event=started") || strstr(line, "\"event\":\"started\"");
            fclose(f);
            if (found)
                return 0;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "harness: broker did not start within 20 s, see %s\n", b->log);
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
    return -1;
}

pid_t
harness_spawn(const char *log, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* the test ended before the line above */
        _exit(127);
    int fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : open("/dev/null", O_WRONLY);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
}

static int
spawn(test_broker *b)
{
    struct stat st;
    long offset = stat(b->log, &st) == 0 ? (long)st.st_size : 0;
    pid_t pid = harness_spawn(b->log, "exec %s --data %s --listen %s --http 127.0.0.1:%d %s",
                              SPBE_BROKER_BIN, b->data, b->endpoint, b->http_port, b->extra);
    if (pid < 0)
        return -1;
    b->pid = pid;
    return wait_started(b, offset);
}

int
harness_broker_start(test_broker *b, const char *extra_flags)
{
    return harness_broker_start_in(b, NULL, extra_flags);
}

int
harness_broker_start_in(test_broker *b, const char *data_dir, const char *extra_flags)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "/tmp/spbe-test-XXXXXX");
    if (!mkdtemp(b->dir))
        return -1;
    if (data_dir)
        snprintf(b->data, sizeof b->data, "%s", data_dir);
    else
        snprintf(b->data, sizeof b->data, "%s/data", b->dir);
    snprintf(b->admin_key, sizeof b->admin_key, "%s/admin.key", b->data);
    snprintf(b->broker_pub, sizeof b->broker_pub, "%s/broker.pub", b->data);
    snprintf(b->log, sizeof b->log, "%s/broker.log", b->dir);
    snprintf(b->extra, sizeof b->extra, "%s", extra_flags ? extra_flags : "");
    b->port = harness_free_port();
    do
        b->http_port = harness_free_port();
    while (b->http_port == b->port);
    if (b->port < 0 || b->http_port < 0)
        return -1;
    snprintf(b->endpoint, sizeof b->endpoint, "tcp://127.0.0.1:%d", b->port);
    setenv("SPBE_BROKER", b->endpoint, 1);
    setenv("SPBE", SPBE_CLI_BIN, 1);
    unsetenv("SPBE_KEY");
    unsetenv("SPBE_BROKER_KEY");
    unsetenv("SPBE_DATA");
    return spawn(b);
}

int
harness_broker_restart(test_broker *b)
{
    setenv("SPBE_BROKER", b->endpoint, 1);
    /* the port may linger briefly after a kill: retry the bind a few times */
    for (int attempt = 0; attempt < 50; attempt++) {
        if (spawn(b) == 0)
            return 0;
        sleep_ms(100);
    }
    return -1;
}

int
harness_broker_signal(test_broker *b, int sig)
{
    int status = -1;
    if (b->pid > 0) {
        kill(b->pid, sig);
        while (waitpid(b->pid, &status, 0) < 0 && errno == EINTR)
            ;
        b->pid = 0;
    }
    return status;
}

int
harness_broker_stop(test_broker *b)
{
    int status = harness_broker_signal(b, SIGTERM);
    if (b->dir[0] && !getenv("SPBE_TEST_KEEP")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", b->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "harness: could not remove %s\n", b->dir);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *
read_all(int fd, char *buf, size_t len)
{
    size_t n = 0;
    if (!buf || len == 0) {
        char scratch[4096];
        while (read(fd, scratch, sizeof scratch) > 0)
            ;
        return NULL;
    }
    ssize_t got;
    while ((got = read(fd, buf + n, len - 1 - n)) > 0) {
        n += (size_t)got;
        if (n == len - 1) {
            char scratch[4096];
            while (read(fd, scratch, sizeof scratch) > 0)
                ;
            break;
        }
    }
    buf[n] = '\0';
    return buf;
}

int
harness_run(char *out, size_t out_len, char *err, size_t err_len, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char errfile[] = "/tmp/spbe-test-err-XXXXXX";
    int efd = mkstemp(errfile);
    int pipefd[2];
    if (efd < 0 || pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(efd, 2);
        close(pipefd[0]);
        close(pipefd[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    read_all(pipefd[0], out, out_len);
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    lseek(efd, 0, SEEK_SET);
    read_all(efd, err, err_len);
    close(efd);
    unlink(errfile);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
split_flags(char *out, size_t n, const char *flag, const char *list)
{
    out[0] = '\0';
    if (!list)
        return;
    char copy[512];
    snprintf(copy, sizeof copy, "%s", list);
    size_t used = 0;
    for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        used += (size_t)snprintf(out + used, n > used ? n - used : 0, " %s '%s'", flag, tok);
}

int
harness_identity(test_broker *b, const char *name, char *key_path)
{
    char file[128], err[2048];
    snprintf(file, sizeof file, "%s", name);
    *strchr(file, '/') = '_';
    snprintf(key_path, 400, "%s/%s.key", b->dir, file);
    int rc =
        harness_run(NULL, 0, err, sizeof err, "%s keygen %s -o %s --broker-pub %s --endpoint %s",
                    SPBE_CLI_BIN, name, key_path, b->broker_pub, b->endpoint);
    if (rc != 0)
        fprintf(stderr, "harness: keygen %s: %s\n", name, err);
    return rc == 0 ? 0 : -1;
}

int
harness_member(test_broker *b, const char *name, const char *publish, const char *subscribe,
               const char *roles, char *key_path)
{
    char pubf[256], subf[256], rolef[256], err[2048];
    if (harness_identity(b, name, key_path) != 0)
        return -1;
    split_flags(pubf, sizeof pubf, "--pub", publish);
    split_flags(subf, sizeof subf, "--sub", subscribe);
    /* roles: "admin", "ops", and service rights as "serve:PATTERN" / "call:PATTERN" */
    rolef[0] = '\0';
    if (roles) {
        char copy[512];
        size_t used = 0;
        snprintf(copy, sizeof copy, "%s", roles);
        for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            const char *flag = "--role", *value = tok;
            if (strncmp(tok, "serve:", 6) == 0)
                flag = "--serve", value = tok + 6;
            else if (strncmp(tok, "call:", 5) == 0)
                flag = "--call", value = tok + 5;
            used += (size_t)snprintf(rolef + used, sizeof rolef > used ? sizeof rolef - used : 0,
                                     " %s '%s'", flag, value);
        }
    }
    int rc =
        harness_run(NULL, 0, err, sizeof err, "%s member add %s --key %s --key-file %s.pub%s%s%s",
                    SPBE_CLI_BIN, name, b->admin_key, key_path, pubf, subf, rolef);
    if (rc != 0)
        fprintf(stderr, "harness: member add %s: %s\n", name, err);
    return rc == 0 ? 0 : -1;
}

spbe_client *
harness_connect(test_broker *b, const char *key_path, int timeout_ms)
{
    spbe_options o = {.endpoint = b->endpoint, .timeout_ms = timeout_ms};
    spbe_client *c;
    int rc = spbe_connect(key_path, &o, &c);
    if (rc != SPBE_OK) {
        fprintf(stderr, "harness: connect %s: %s: %s\n", key_path, spbe_error_name(rc),
                spbe_last_error(c));
        spbe_close(&c);
        return NULL;
    }
    return c;
}

uint64_t
harness_stored(test_broker *b, const char *topic)
{
    store_options so = {.read_only = 1};
    store *s;
    char err[256];
    if (store_open(b->data, &so, &s, err, sizeof err) != SPBE_OK)
        return 0;
    store_reader *r;
    store_topic_info t = {0};
    if (store_reader_begin(s, &r) == SPBE_OK) {
        if (store_topic_get(r, topic, &t) != SPBE_OK)
            t.messages = 0;
        store_reader_end(&r);
    }
    store_close(&s);
    return t.messages;
}

int
harness_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

void *
harness_raw_connect(test_broker *b, void *ctx, const char *key_path, int rcvhwm)
{
    identity id, broker;
    char err[256];
    if (identity_load(key_path, &id, err, sizeof err) != SPBE_OK ||
        identity_load(b->broker_pub, &broker, err, sizeof err) != SPBE_OK)
        return NULL;
    uint8_t server[32], pub[32], sec[32];
    wire_curve_public(broker.public_key, server);
    wire_curve_public(id.public_key, pub);
    wire_curve_secret(id.secret_key, sec);
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = 3000;
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 32);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    if (rcvhwm > 0)
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    if (zmq_connect(s, b->endpoint) != 0) {
        zmq_close(s);
        return NULL;
    }
    /* hello */
    Spbe__V1__Hello hello = SPBE__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.member = id.member;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 1;
    cmd.body_case = SPBE__V1__COMMAND__BODY_HELLO;
    cmd.hello = &hello;
    uint8_t buf[256];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    zmq_send(s, buf, n, 0);
    return s;
}

int
harness_raw_reply(void *s, uint64_t *request_id)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, 0) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    Spbe__V1__BrokerFrame *f =
        spbe__v1__broker_frame__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
        zmq_msg_init(&m);
        zmq_msg_recv(&m, s, 0);
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    if (!f || f->body_case != SPBE__V1__BROKER_FRAME__BODY_REPLY) {
        if (f)
            spbe__v1__broker_frame__free_unpacked(f, NULL);
        return -2;
    }
    int code = (int)f->reply->code;
    if (request_id)
        *request_id = f->reply->request_id;
    if (f->reply->body_case == SPBE__V1__REPLY__BODY_RECEIPT) {
        Spbe__V1__Receipt *r = spbe__v1__receipt__unpack(NULL, f->reply->receipt->receipt.len,
                                                         f->reply->receipt->receipt.data);
        if (!r || (int)r->code != code)
            code = -3; /* a receipt must say what the reply says */
        if (r)
            spbe__v1__receipt__free_unpacked(r, NULL);
    }
    spbe__v1__broker_frame__free_unpacked(f, NULL);
    return code;
}

/* GET path from 127.0.0.1:port: the status, and the body into out. -1 if no answer. */
int
harness_http_get(int port, const char *path, char *out, size_t out_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    static char resp[1 << 20];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int status = -1;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    const char *body = strstr(resp, "\r\n\r\n");
    snprintf(out, out_len, "%s", body ? body + 4 : "");
    return status;
}

/* The value of a metric line that starts with prefix (name and labels), or -1. */
long long
harness_metric(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, strlen(prefix)) == 0 && p[strlen(prefix)] == ' ')
            return atoll(p + strlen(prefix) + 1);
    return -1;
}

long long
harness_broker_metric(test_broker *b, const char *prefix)
{
    static char out[1 << 20];
    if (harness_http_get(b->http_port, "/metrics", out, sizeof out) != 200)
        return -1;
    return harness_metric(out, prefix);
}

int
harness_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}
