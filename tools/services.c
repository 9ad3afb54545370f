/* services.c - spbe req, spbe serve, spbe consumer ls|info|rm, spbe dlq ls|replay|purge. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "wire.h"

static const char req_usage[] =
    "usage: spbe req SERVICE [PAYLOAD | -] [--timeout-ms N] [--json]\n"
    "\n"
    "Calls SERVICE with a signed request (PAYLOAD, or standard input with '-') and\n"
    "writes the signed reply's payload to standard output. The broker logs both in\n"
    "$sys.svc.SERVICE. Exit 1 with UNAVAILABLE when nobody serves it, TIMEOUT when no\n"
    "reply comes within --timeout-ms (default 30000).\n"
    "  --key FILE --broker EP --broker-key HEX\n";

static const char serve_usage[] =
    "usage: spbe serve SERVICE [--count N] -- COMMAND [ARG...]\n"
    "\n"
    "Serves SERVICE: runs COMMAND for each request, with the request's payload on its\n"
    "standard input and SPBE_SENDER, SPBE_SERVICE, SPBE_REQUEST_SEQUENCE in its\n"
    "environment, and answers with what COMMAND writes to standard output. Stops after\n"
    "N requests with --count, else on SIGINT/SIGTERM.\n"
    "  --key FILE --broker EP --broker-key HEX\n";

static const char consumer_usage[] =
    "usage: spbe consumer ls [--json] [--data DIR]\n"
    "       spbe consumer info NAME [--json] [--data DIR]\n"
    "       spbe consumer rm NAME\n"
    "\n"
    "Durable consumers: pattern, pending (delivered, not yet acknowledged), redelivered,\n"
    "ack floor and lag (stored, not yet delivered) per consumer and topic. Create one\n"
    "with spbe sub --consumer NAME PATTERN. rm is for its owner or an admin.\n";

static const char dlq_usage[] =
    "usage: spbe dlq ls CONSUMER [--count N] [--json] [--data DIR]\n"
    "       spbe dlq replay CONSUMER [--count N]\n"
    "       spbe dlq purge CONSUMER\n"
    "\n"
    "Dead letters of a consumer (topic $sys.dlq.CONSUMER): messages that reached max\n"
    "deliveries, were terminated, or expired. ls shows the oldest N (default 100) with\n"
    "the reason; replay puts the oldest N (default all) back into their topics (the\n"
    "original signed bytes, at a new sequence) and removes them from the dead letters;\n"
    "purge drops them all.\n";

static int
count_option(int opt, const char *arg, void *ctx)
{
    char *end;
    if (opt != 1)
        return 1;
    long v = strtol(arg, &end, 10);
    *(long *)ctx = v;
    return *end || v < 1;
}

static const struct option count_opts[] = {{"count", required_argument, 0, 1}, {0, 0, 0, 0}};

/* ------------------------------------------------------------ req */

static uint8_t *
slurp(int fd, size_t *len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            uint8_t *b = realloc(buf, cap *= 2);
            if (!b)
                break;
            buf = b;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    free(buf);
    return NULL;
}

int
cmd_req(int argc, char **argv)
{
    cli_common common;
    int i = cli_parse(argc, argv, &common, NULL, "", NULL, NULL, req_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - i < 1 || argc - i > 2) {
        fputs(req_usage, stderr);
        return EXIT_USAGE;
    }
    const char *service = argv[i];
    uint8_t *payload = NULL;
    size_t len = 0;
    if (argc - i == 2 && strcmp(argv[i + 1], "-") == 0) {
        payload = slurp(0, &len);
        if (!payload)
            return cli_fail("req", SPBE_INTERNAL, "cannot read standard input");
    } else if (argc - i == 2) {
        len = strlen(argv[i + 1]);
        payload = (uint8_t *)strdup(argv[i + 1]);
    }
    spbe_client *c = cli_connect(&common, "req");
    if (!c) {
        free(payload);
        return EXIT_ERROR;
    }
    spbe_response r;
    int rc = spbe_request(c, service, payload, len, common.timeout_ms ? common.timeout_ms : 30000,
                          NULL, &r);
    free(payload);
    int exit_code = EXIT_OK;
    if (rc != SPBE_OK) {
        exit_code = cli_fail("req", rc, "%s", r.error);
    } else if (common.json) {
        printf("{\"service\":");
        cli_json_string(stdout, service);
        printf(",\"server\":");
        cli_json_string(stdout, r.server);
        printf(",\"request_sequence\":%llu,\"reply_sequence\":%llu,\"receipts\":\"%s\","
               "\"payload\":",
               (unsigned long long)r.request_sequence, (unsigned long long)r.reply_sequence,
               r.receipts_verified ? "valid" : "unchecked");
        cli_payload(stdout, r.schema, r.payload, r.payload_len, 1, 0);
        printf("}\n");
    } else {
        fwrite(r.payload, 1, r.payload_len, stdout);
        if (r.payload_len && r.payload[r.payload_len - 1] != '\n' && isatty(1))
            putchar('\n');
    }
    spbe_response_free(&r);
    spbe_close(&c);
    return exit_code;
}

/* ------------------------------------------------------------ serve */

typedef struct serve_state {
    char **command;
    long served;
    int failed;
} serve_state;

static volatile sig_atomic_t serve_stop;

static void
on_serve_signal(int sig)
{
    (void)sig;
    serve_stop = 1;
}

/* Runs the command with the payload on stdin; its stdout (malloc'ed) in *out. */
static int
run_command(char **command, const spbe_service_request *r, uint8_t **out, size_t *out_len)
{
    char in_path[] = "/tmp/spbe-serve-XXXXXX";
    int in = mkstemp(in_path);
    if (in < 0)
        return -1;
    unlink(in_path);
    if (write(in, r->payload, r->payload_len) != (ssize_t)r->payload_len ||
        lseek(in, 0, SEEK_SET) != 0) {
        close(in);
        return -1;
    }
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        close(in);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        char seq[32];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)r->sequence);
        setenv("SPBE_SENDER", r->sender, 1);
        setenv("SPBE_SERVICE", r->service, 1);
        setenv("SPBE_REQUEST_SEQUENCE", seq, 1);
        dup2(in, 0);
        dup2(pipefd[1], 1);
        close(in);
        close(pipefd[0]);
        close(pipefd[1]);
        execvp(command[0], command);
        fprintf(stderr, "spbe serve: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(127);
    }
    close(in);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        return -1;
    }
    *out = slurp(pipefd[0], out_len);
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void
on_serve_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    serve_state *st = arg;
    uint8_t *out = NULL;
    size_t len = 0;
    int status = run_command(st->command, r, &out, &len);
    if (status != 0)
        fprintf(stderr, "spbe serve: request #%llu from %s: %s exited with %d\n",
                (unsigned long long)r->sequence, r->sender, st->command[0], status);
    int rc = spbe_respond(c, r->service, r->ref, r->id, out, out ? len : 0, NULL, NULL);
    if (rc != SPBE_OK) {
        fprintf(stderr, "spbe serve: cannot answer #%llu: %s: %s\n",
                (unsigned long long)r->sequence, spbe_error_name(rc), spbe_last_error(c));
        st->failed++;
    }
    free(out);
    st->served++;
}

int
cmd_serve(int argc, char **argv)
{
    cli_common common;
    long count = 0;
    int i = cli_parse(argc, argv, &common, count_opts, "", count_option, &count, serve_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    /* SERVICE, then the command after "--" (getopt leaves "--" out) */
    if (argc - i < 2) {
        fputs(serve_usage, stderr);
        return EXIT_USAGE;
    }
    const char *service = argv[i];
    char **command = argv + i + 1;
    if (strcmp(command[0], "--") == 0)
        command++;
    if (!command[0]) {
        fputs(serve_usage, stderr);
        return EXIT_USAGE;
    }
    spbe_client *c = cli_connect(&common, "serve");
    if (!c)
        return EXIT_ERROR;
    serve_state st = {command, 0, 0};
    int rc = spbe_serve(c, service, on_serve_request, &st);
    if (rc != SPBE_OK) {
        int e = cli_fail("serve", rc, "%s", spbe_last_error(c));
        spbe_close(&c);
        return e;
    }
    fprintf(stderr, "spbe serve: serving %s\n", service);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_serve_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int exit_code = EXIT_OK;
    while (!serve_stop && (!count || st.served < count)) {
        rc = spbe_dispatch(c, 500, NULL);
        if (rc != SPBE_OK) {
            exit_code = cli_fail("serve", rc, "%s", spbe_last_error(c));
            break;
        }
    }
    spbe_flush(c, 5000); /* the receipts of the last replies */
    spbe_close(&c);
    return exit_code == EXIT_OK && st.failed ? EXIT_ERROR : exit_code;
}

/* ------------------------------------------------------------ consumer */

static void
consumer_print(const Spbe__V1__ConsumerInfo *ci, int json, int detail, int *rows)
{
    const Spbe__V1__ConsumerConfig *cfg = ci->config;
    uint64_t floor = 0;
    for (size_t k = 0; k < ci->n_topics; k++)
        if (k == 0 || ci->topics[k]->ack_floor < floor)
            floor = ci->topics[k]->ack_floor;
    if (json) {
        char t[40];
        cli_time(ci->created_ns, t, sizeof t);
        printf("{\"name\":");
        cli_json_string(stdout, cfg->name);
        printf(",\"pattern\":");
        cli_json_string(stdout, cfg->pattern);
        printf(",\"owner\":");
        cli_json_string(stdout, ci->owner);
        printf(",\"created\":\"%s\",\"ack_wait_ms\":%u,\"max_deliveries\":%u,"
               "\"max_in_flight\":%u,\"pending\":%llu,\"scheduled\":%llu,\"lag\":%llu,"
               "\"delivered\":%llu,\"redelivered\":%llu,\"acked\":%llu,\"dead_lettered\":%llu,"
               "\"expired\":%llu,\"attached\":%u,\"topics\":[",
               t, cfg->ack_wait_ms ? cfg->ack_wait_ms : 30000,
               cfg->max_deliveries ? cfg->max_deliveries : 5,
               cfg->max_in_flight ? cfg->max_in_flight : 1000, (unsigned long long)ci->pending,
               (unsigned long long)ci->scheduled, (unsigned long long)ci->lag,
               (unsigned long long)ci->delivered, (unsigned long long)ci->redelivered,
               (unsigned long long)ci->acked, (unsigned long long)ci->dead_lettered,
               (unsigned long long)ci->expired, ci->attached);
        for (size_t k = 0; k < ci->n_topics; k++) {
            const Spbe__V1__ConsumerTopic *tp = ci->topics[k];
            printf("%s{\"topic\":", k ? "," : "");
            cli_json_string(stdout, tp->topic);
            printf(",\"next_sequence\":%llu,\"ack_floor\":%llu,\"pending\":%llu,\"lag\":%llu}",
                   (unsigned long long)tp->next_sequence, (unsigned long long)tp->ack_floor,
                   (unsigned long long)tp->pending, (unsigned long long)tp->lag);
        }
        printf("]}\n");
        return;
    }
    if (!detail) {
        if ((*rows)++ == 0)
            printf("%-24s %-28s %9s %11s %9s %9s %8s\n", "CONSUMER", "PATTERN", "PENDING",
                   "REDELIVERED", "ACK FLOOR", "LAG", "ATTACHED");
        printf("%-24s %-28s %9llu %11llu %9llu %9llu %8u\n", cfg->name, cfg->pattern,
               (unsigned long long)ci->pending, (unsigned long long)ci->redelivered,
               (unsigned long long)floor, (unsigned long long)ci->lag, ci->attached);
        return;
    }
    char t[40];
    cli_time(ci->created_ns, t, sizeof t);
    printf("consumer       %s\npattern        %s\nowner          %s\ncreated        %s\n"
           "ack wait       %u ms\nmax deliveries %u\nmax in flight  %u per client\n"
           "pending        %llu\nscheduled      %llu\nlag            %llu\ndelivered      %llu\n"
           "redelivered    %llu\nacknowledged   %llu\ndead letters   %llu\nexpired        %llu\n"
           "attached       %u\n",
           cfg->name, cfg->pattern, ci->owner, t, cfg->ack_wait_ms ? cfg->ack_wait_ms : 30000,
           cfg->max_deliveries ? cfg->max_deliveries : 5,
           cfg->max_in_flight ? cfg->max_in_flight : 1000, (unsigned long long)ci->pending,
           (unsigned long long)ci->scheduled, (unsigned long long)ci->lag,
           (unsigned long long)ci->delivered, (unsigned long long)ci->redelivered,
           (unsigned long long)ci->acked, (unsigned long long)ci->dead_lettered,
           (unsigned long long)ci->expired, ci->attached);
    if (ci->n_topics)
        printf("\n%-40s %10s %10s %9s %9s\n", "TOPIC", "NEXT", "ACK FLOOR", "PENDING", "LAG");
    for (size_t k = 0; k < ci->n_topics; k++) {
        const Spbe__V1__ConsumerTopic *tp = ci->topics[k];
        printf("%-40s %10llu %10llu %9llu %9llu\n", tp->topic,
               (unsigned long long)tp->next_sequence, (unsigned long long)tp->ack_floor,
               (unsigned long long)tp->pending, (unsigned long long)tp->lag);
    }
}

typedef struct offline_consumers {
    store_reader *rd;
    const char *only;
    int json, rows, found;
} offline_consumers;

typedef struct offline_one {
    store_reader *rd;
    Spbe__V1__ConsumerTopic *topics;
    size_t n;
    uint64_t pending;
} offline_one;

static int
offline_cursor(uint32_t topic_id, uint64_t next, void *arg)
{
    offline_one *o = arg;
    store_topic_info t;
    if (o->n >= 1024 || store_topic_get_by_id(o->rd, topic_id, &t) != SPBE_OK)
        return 0;
    Spbe__V1__ConsumerTopic *tp = &o->topics[o->n++];
    spbe__v1__consumer_topic__init(tp);
    tp->topic = strdup(t.name);
    tp->next_sequence = next;
    tp->ack_floor = next ? next - 1 : 0;
    tp->lag = t.last_sequence >= next ? t.last_sequence - next + 1 : 0;
    return 0;
}

static int
offline_pending(const store_pending *p, void *arg)
{
    offline_one *o = arg;
    o->pending++;
    for (size_t k = 0; k < o->n; k++) {
        store_topic_info t;
        if (store_topic_get_by_id(o->rd, p->topic_id, &t) == SPBE_OK &&
            strcmp(t.name, o->topics[k].topic) == 0) {
            o->topics[k].pending++;
            if (p->sequence <= o->topics[k].ack_floor)
                o->topics[k].ack_floor = p->sequence - 1;
        }
    }
    return 0;
}

/* What the store says of a consumer: config, counters at the last commit, cursors. */
static int
offline_consumer(const Spbe__V1__ConsumerInfo *stored, void *arg)
{
    offline_consumers *oc = arg;
    if (oc->only && strcmp(oc->only, stored->config->name) != 0)
        return 0;
    oc->found = 1;
    offline_one o = {.rd = oc->rd};
    o.topics = calloc(1024, sizeof *o.topics);
    if (!o.topics)
        return 1;
    store_cursor_each(oc->rd, stored->config->name, offline_cursor, &o);
    store_pending_each(oc->rd, stored->config->name, offline_pending, &o);
    Spbe__V1__ConsumerInfo ci = *stored;
    Spbe__V1__ConsumerTopic **ptrs = calloc(o.n ? o.n : 1, sizeof *ptrs);
    uint64_t lag = 0;
    for (size_t k = 0; ptrs && k < o.n; k++) {
        ptrs[k] = &o.topics[k];
        lag += o.topics[k].lag;
    }
    ci.topics = ptrs;
    ci.n_topics = ptrs ? o.n : 0;
    ci.pending = o.pending;
    ci.lag = lag;
    ci.attached = 0;
    consumer_print(&ci, oc->json, oc->only != NULL, &oc->rows);
    for (size_t k = 0; k < o.n; k++)
        free(o.topics[k].topic);
    free(o.topics);
    free(ptrs);
    return 0;
}

int
cmd_consumer(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, consumer_usage);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    int i = cli_parse(argc - 1, argv + 1, &common, NULL, "", NULL, NULL, consumer_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    int npos = argc - 1 - i, needs = strcmp(what, "ls") != 0;
    if ((strcmp(what, "ls") && strcmp(what, "info") && strcmp(what, "rm")) || npos != needs) {
        fputs(consumer_usage, stderr);
        return EXIT_USAGE;
    }
    const char *name = needs ? argv[1 + i] : NULL;
    if (common.data) {
        if (strcmp(what, "rm") == 0) {
            fprintf(stderr, "spbe consumer: rm works online only\n");
            return EXIT_USAGE;
        }
        store *s = cli_open_store(&common, "consumer");
        if (!s)
            return EXIT_ERROR;
        offline_consumers oc = {.only = name, .json = common.json};
        int rc = store_reader_begin(s, &oc.rd);
        if (rc == SPBE_OK) {
            rc = store_consumer_each(oc.rd, offline_consumer, &oc);
            store_reader_end(&oc.rd);
        }
        store_close(&s);
        if (rc != SPBE_OK)
            return cli_fail("consumer", rc, "cannot read the consumers");
        if (name && !oc.found)
            return cli_fail("consumer", SPBE_NOT_FOUND, "no consumer %s", name);
        return EXIT_OK;
    }
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    Spbe__V1__ConsumerList list = SPBE__V1__CONSUMER_LIST__INIT;
    Spbe__V1__ConsumerGet get = SPBE__V1__CONSUMER_GET__INIT;
    Spbe__V1__ConsumerDelete del = SPBE__V1__CONSUMER_DELETE__INIT;
    if (strcmp(what, "ls") == 0) {
        cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_LIST;
        cmd.consumer_list = &list;
    } else if (strcmp(what, "info") == 0) {
        get.name = (char *)name;
        cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_GET;
        cmd.consumer_get = &get;
    } else {
        del.name = (char *)name;
        cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_DELETE;
        cmd.consumer_delete = &del;
    }
    spbe_client *c = cli_connect(&common, "consumer");
    if (!c)
        return EXIT_ERROR;
    Spbe__V1__Reply *reply = NULL;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL), exit_code = EXIT_OK, rows = 0;
    if (rc != SPBE_OK)
        exit_code = cli_fail("consumer", rc, "%s", spbe_last_error(c));
    else if (reply->code != SPBE__V1__ERROR_CODE__OK)
        exit_code = cli_fail("consumer", (int)reply->code, "%s", reply->error);
    else if (reply->body_case == SPBE__V1__REPLY__BODY_CONSUMERS)
        for (size_t k = 0; k < reply->consumers->n_consumers; k++)
            consumer_print(reply->consumers->consumers[k], common.json, 0, &rows);
    else if (reply->body_case == SPBE__V1__REPLY__BODY_CONSUMER)
        consumer_print(reply->consumer, common.json, 1, &rows);
    else if (!common.json)
        printf("consumer %s deleted\n", name);
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}

/* ------------------------------------------------------------ dlq */

static void
dead_letter_print(uint64_t seq, const uint8_t *raw, size_t len, int json)
{
    Spbe__V1__SignedMessage *sm = NULL, *osm = NULL;
    Spbe__V1__Message *m = NULL, *orig = NULL;
    Spbe__V1__DeadLetter *dl = NULL;
    if (wire_envelope_decode(raw, len, &sm, &m, NULL) == SPBE_OK)
        dl = spbe__v1__dead_letter__unpack(NULL, m->payload.len, m->payload.data);
    if (dl)
        wire_envelope_decode(dl->message.data, dl->message.len, &osm, &orig, NULL);
    char t[40] = "-";
    if (dl)
        cli_time(dl->accepted_ns, t, sizeof t);
    if (json) {
        printf("{\"sequence\":%llu,\"topic\":", (unsigned long long)seq);
        cli_json_string(stdout, dl ? dl->topic : "");
        printf(",\"original_sequence\":%llu,\"reason\":",
               (unsigned long long)(dl ? dl->sequence : 0));
        cli_json_string(stdout, dl ? dl->reason : "malformed");
        printf(",\"deliveries\":%u,\"accepted\":\"%s\",\"sender\":", dl ? dl->deliveries : 0, t);
        cli_json_string(stdout, orig ? orig->sender : "");
        printf(",\"payload\":");
        if (orig)
            cli_payload(stdout, orig->schema, orig->payload.data, orig->payload.len, 1, 0);
        else
            printf("null");
        printf("}\n");
    } else if (dl && orig) {
        printf("#%-6llu %s #%llu from %s, %s after %u deliveries: ", (unsigned long long)seq,
               dl->topic, (unsigned long long)dl->sequence, orig->sender, dl->reason,
               dl->deliveries);
        cli_payload(stdout, orig->schema, orig->payload.data, orig->payload.len, 0, 120);
        printf("\n");
    } else {
        printf("#%-6llu (not a dead letter)\n", (unsigned long long)seq);
    }
    if (dl)
        spbe__v1__dead_letter__free_unpacked(dl, NULL);
    wire_envelope_free(&osm, &orig);
    wire_envelope_free(&sm, &m);
}

typedef struct dlq_offline {
    int json;
    long left;
} dlq_offline;

static int
dlq_offline_row(const store_message *m, void *arg)
{
    dlq_offline *d = arg;
    dead_letter_print(m->sequence, m->data, m->len, d->json);
    return --d->left <= 0;
}

int
cmd_dlq(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, dlq_usage);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    long count = 0;
    int i = cli_parse(argc - 1, argv + 1, &common, count_opts, "", count_option, &count, dlq_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if ((strcmp(what, "ls") && strcmp(what, "replay") && strcmp(what, "purge")) ||
        argc - 1 - i != 1) {
        fputs(dlq_usage, stderr);
        return EXIT_USAGE;
    }
    const char *consumer = argv[1 + i];
    char topic[WIRE_TOPIC_MAX_BYTES + 16];
    snprintf(topic, sizeof topic, "$sys.dlq.%s", consumer);
    if (strcmp(what, "ls") == 0 && common.data) {
        store *s = cli_open_store(&common, "dlq");
        if (!s)
            return EXIT_ERROR;
        store_reader *rd;
        store_topic_info t;
        dlq_offline d = {common.json, count ? count : 100};
        if (store_reader_begin(s, &rd) == SPBE_OK) {
            if (store_topic_get(rd, topic, &t) == SPBE_OK && t.messages) {
                uint64_t next;
                store_read_from(rd, t.id, t.first_sequence, 0, dlq_offline_row, &d, &next);
            }
            store_reader_end(&rd);
        }
        store_close(&s);
        return EXIT_OK;
    }
    if (common.data) {
        fprintf(stderr, "spbe dlq: %s works online only\n", what);
        return EXIT_USAGE;
    }
    spbe_client *c = cli_connect(&common, "dlq");
    if (!c)
        return EXIT_ERROR;
    int exit_code = EXIT_OK;
    Spbe__V1__Reply *reply = NULL;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    if (strcmp(what, "ls") == 0) {
        Spbe__V1__TopicGet get = SPBE__V1__TOPIC_GET__INIT;
        get.topic = topic;
        cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_GET;
        cmd.topic_get = &get;
        int rc = cli_call(c, &cmd, &reply, NULL, NULL);
        if (rc != SPBE_OK) {
            exit_code = cli_fail("dlq", rc, "%s", spbe_last_error(c));
        } else if (reply->code == SPBE__V1__ERROR_CODE__OK &&
                   reply->body_case == SPBE__V1__REPLY__BODY_TOPIC && reply->topic->messages) {
            uint64_t first = reply->topic->first_sequence, last = reply->topic->last_sequence;
            long left = count ? count : 100;
            for (uint64_t seq = first; seq <= last && left > 0; seq++, left--) {
                Spbe__V1__MessageGet mg = SPBE__V1__MESSAGE_GET__INIT;
                mg.topic = topic;
                mg.sequence = seq;
                Spbe__V1__Command one = SPBE__V1__COMMAND__INIT;
                one.body_case = SPBE__V1__COMMAND__BODY_MESSAGE_GET;
                one.message_get = &mg;
                Spbe__V1__Reply *r2 = NULL;
                uint8_t *body = NULL;
                size_t blen = 0;
                if (cli_call(c, &one, &r2, &body, &blen) == SPBE_OK &&
                    r2->code == SPBE__V1__ERROR_CODE__OK && body)
                    dead_letter_print(seq, body, blen, common.json);
                free(body);
                if (r2)
                    spbe__v1__reply__free_unpacked(r2, NULL);
            }
        } else if (reply->code != SPBE__V1__ERROR_CODE__OK &&
                   reply->code != SPBE__V1__ERROR_CODE__NOT_FOUND) {
            exit_code = cli_fail("dlq", (int)reply->code, "%s", reply->error);
        }
    } else {
        Spbe__V1__DlqReplay replay = SPBE__V1__DLQ_REPLAY__INIT;
        Spbe__V1__DlqPurge purge = SPBE__V1__DLQ_PURGE__INIT;
        if (strcmp(what, "replay") == 0) {
            replay.consumer = (char *)consumer;
            replay.count = (uint64_t)count;
            cmd.body_case = SPBE__V1__COMMAND__BODY_DLQ_REPLAY;
            cmd.dlq_replay = &replay;
        } else {
            purge.consumer = (char *)consumer;
            cmd.body_case = SPBE__V1__COMMAND__BODY_DLQ_PURGE;
            cmd.dlq_purge = &purge;
        }
        int rc = cli_call(c, &cmd, &reply, NULL, NULL);
        if (rc != SPBE_OK)
            exit_code = cli_fail("dlq", rc, "%s", spbe_last_error(c));
        else if (reply->code != SPBE__V1__ERROR_CODE__OK)
            exit_code = cli_fail("dlq", (int)reply->code, "%s", reply->error);
        else if (common.json)
            printf("{\"%s\":%llu}\n", strcmp(what, "replay") == 0 ? "replayed" : "purged",
                   (unsigned long long)(reply->body_case == SPBE__V1__REPLY__BODY_COUNT
                                            ? reply->count->count
                                            : 0));
        else
            printf("%llu dead letters %s\n",
                   (unsigned long long)(reply->body_case == SPBE__V1__REPLY__BODY_COUNT
                                            ? reply->count->count
                                            : 0),
                   strcmp(what, "replay") == 0 ? "replayed into their topics" : "purged");
    }
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}
