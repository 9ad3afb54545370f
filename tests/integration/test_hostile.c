/*
 * test_hostile.c - clients that mean harm: floods of connections, half-open ones,
 * oversized frames, replayed and misattributed messages, skewed clocks, members over
 * their quotas. Each case asserts the error code (or that the broker cut the peer off)
 * while a witness - a good member publishing all along - is served without a failure.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include <cmocka.h>

#include "harness.h"
#include "identity.h"
#include "wire.h"

/* ------------------------------------------------------------ the witness */

typedef struct witness {
    test_broker *b;
    char key[400];
    pthread_t thread;
    volatile int stop;
    long ok, failed;
    int last_code;
    char last_error[256];
    int64_t worst_ns;
} witness;

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *
witness_run(void *arg)
{
    witness *w = arg;
    spbe_client *c = harness_connect(w->b, w->key, 0);
    if (!c) {
        w->failed++;
        snprintf(w->last_error, sizeof w->last_error, "could not connect");
        return NULL;
    }
    while (!w->stop) {
        spbe_receipt r;
        int64_t t0 = mono_ns();
        int rc = spbe_publish(c, "hostile.witness", "still here", 10, NULL, &r);
        int64_t took = mono_ns() - t0;
        if (took > w->worst_ns)
            w->worst_ns = took;
        if (rc == SPBE_OK && r.signed_by_broker) {
            w->ok++;
        } else {
            w->failed++;
            w->last_code = rc;
            snprintf(w->last_error, sizeof w->last_error, "%s", r.error);
        }
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }
    spbe_close(&c);
    return NULL;
}

static void
witness_start(witness *w, test_broker *b)
{
    memset(w, 0, sizeof *w);
    w->b = b;
    assert_int_equal(harness_member(b, "kemenpan/witness", "hostile.witness", NULL, NULL, w->key),
                     0);
    assert_int_equal(pthread_create(&w->thread, NULL, witness_run, w), 0);
    while (w->ok == 0 && w->failed == 0)
        usleep(1000);
}

/* Stops the witness and asserts it was served throughout. */
static void
witness_check(witness *w, const char *what)
{
    w->stop = 1;
    pthread_join(w->thread, NULL);
    printf("# %s: the witness published %ld times, %ld failed (last %s: %s), slowest %.1f ms\n",
           what, w->ok, w->failed, spbe_error_name(w->last_code), w->last_error,
           (double)w->worst_ns / 1e6);
    assert_int_equal(w->failed, 0);
    assert_true(w->ok > 0);
}

static long long
sessions_now(test_broker *b)
{
    return harness_broker_metric(b, "spbe_sessions");
}

/* Waits up to ms for the broker to count want sessions; the last count. */
static long long
wait_sessions(test_broker *b, long long want, int ms)
{
    long long n = -1;
    for (int waited = 0; waited <= ms; waited += 50) {
        n = sessions_now(b);
        if (n == want)
            break;
        usleep(50000);
    }
    return n;
}

/* Waits up to ms for the broker's descriptors to fall to at most limit; the last count. */
static int
wait_fds(test_broker *b, int limit, int ms)
{
    int n = -1;
    for (int waited = 0; waited <= ms; waited += 50) {
        n = harness_fds(b->pid);
        if (n <= limit)
            break;
        usleep(50000);
    }
    return n;
}

/* ------------------------------------------------------------ cases */

/* 1200 sessions open and close, 100 at a time, and 240 connections with a key no member
 * has are refused at the handshake; the broker ends as it began. */
static void
test_connection_flood(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--member-max-sessions 0 --heartbeat-ms 300"), 0);
    char flood[400], stranger[400];
    assert_int_equal(harness_member(&b, "rogue/flood", "hostile.flood", NULL, NULL, flood), 0);
    assert_int_equal(harness_identity(&b, "rogue/stranger", stranger), 0);
    witness w;
    witness_start(&w, &b);
    int fds_before = harness_fds(b.pid);
    int64_t t0 = mono_ns();
    enum { ROUNDS = 12, AT_ONCE = 100, STRANGERS = 20 };
    void *ctx = zmq_ctx_new();
    int max_fds = 0;
    long long max_sessions = 0;
    for (int round = 0; round < ROUNDS; round++) {
        void *s[AT_ONCE], *x[STRANGERS];
        for (int i = 0; i < AT_ONCE; i++)
            assert_non_null(s[i] = harness_raw_connect(&b, ctx, flood, 0));
        for (int i = 0; i < STRANGERS; i++)
            assert_non_null(x[i] = harness_raw_connect(&b, ctx, stranger, 0));
        for (int i = 0; i < AT_ONCE; i++)
            assert_int_equal(harness_raw_reply(s[i], NULL), SPBE_OK); /* welcome */
        long long n = sessions_now(&b);
        if (n > max_sessions)
            max_sessions = n;
        int f = harness_fds(b.pid);
        if (f > max_fds)
            max_fds = f;
        for (int i = 0; i < AT_ONCE; i++)
            zmq_close(s[i]); /* gone without a bye, as a crashed client goes */
        for (int i = 0; i < STRANGERS; i++)
            zmq_close(x[i]);
    }
    zmq_ctx_term(ctx);
    double secs = (double)(mono_ns() - t0) / 1e9;
    /* the sessions of the vanished clients end after three heartbeats; the connections
     * at once */
    long long left = wait_sessions(&b, 1, 5000);
    int fds_after = wait_fds(&b, fds_before + 4, 5000);
    printf("# %d sessions opened and dropped, %d strangers refused, in %.2f s; at most %lld "
           "sessions and %d descriptors at once; descriptors %d before, %d after\n",
           ROUNDS * AT_ONCE, ROUNDS * STRANGERS, secs, max_sessions, max_fds, fds_before,
           fds_after);
    assert_true(max_sessions >= AT_ONCE); /* they were there... */
    assert_int_equal(left, 1);            /* ...and only the witness is left */
    assert_true(fds_after <= fds_before + 4);
    witness_check(&w, "connection flood");
    assert_int_equal(harness_broker_stop(&b), 0);
}

/* Sends a command with only a request id and an empty body of the given case. */
static void
raw_command(void *s, uint64_t request_id, Spbe__V1__Command__BodyCase body)
{
    Spbe__V1__Ping ping = SPBE__V1__PING__INIT;
    Spbe__V1__Bye bye = SPBE__V1__BYE__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = request_id;
    cmd.body_case = body;
    if (body == SPBE__V1__COMMAND__BODY_PING)
        cmd.ping = &ping;
    else
        cmd.bye = &bye;
    uint8_t buf[64];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    assert_int_equal(zmq_send(s, buf, n, 0), (int)n);
}

/* Pings sessions[from, to) (a step apart) and checks that each answer is its own. */
static void
ping_each(void **s, int from, int to, int step, uint64_t base)
{
    for (int i = from; i < to; i += step)
        raw_command(s[i], base + (uint64_t)i, SPBE__V1__COMMAND__BODY_PING);
    for (int i = from; i < to; i += step) {
        uint64_t rid = 0;
        assert_int_equal(harness_raw_reply(s[i], &rid), SPBE_OK);
        assert_int_equal(rid, base + (uint64_t)i);
    }
}

/* 1000 sessions open at once: every command finds its own session among them, and
 * sessions that end in between (half of them, by bye) leave the others reachable and
 * their places to new ones. */
static void
test_thousand_sessions(void **state)
{
    (void)state;
    struct rlimit nofile;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &nofile), 0);
    if (nofile.rlim_cur < 8192 && nofile.rlim_max > nofile.rlim_cur) {
        nofile.rlim_cur = nofile.rlim_max < 8192 ? nofile.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--member-max-sessions 0"), 0);
    char many[400];
    assert_int_equal(harness_member(&b, "rogue/many", "hostile.many", NULL, NULL, many), 0);
    enum { N = 1000 };
    void *ctx = zmq_ctx_new();
    assert_int_equal(zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, 4 * N), 0);
    void **s = calloc(N + N / 2, sizeof *s);
    int64_t t0 = mono_ns();
    for (int i = 0; i < N; i++)
        assert_non_null(s[i] = harness_raw_connect(&b, ctx, many, 0));
    for (int i = 0; i < N; i++)
        assert_int_equal(harness_raw_reply(s[i], NULL), SPBE_OK); /* welcome */
    double open_s = (double)(mono_ns() - t0) / 1e9;
    assert_int_equal(wait_sessions(&b, N, 5000), N);
    ping_each(s, 0, N, 1, 1000000);
    for (int i = 1; i < N; i += 2) { /* every other one leaves */
        raw_command(s[i], 7, SPBE__V1__COMMAND__BODY_BYE);
        zmq_close(s[i]);
        s[i] = NULL;
    }
    assert_int_equal(wait_sessions(&b, N / 2, 5000), N / 2);
    ping_each(s, 0, N, 2, 2000000);
    for (int i = N; i < N + N / 2; i++) /* newcomers take their places */
        assert_non_null(s[i] = harness_raw_connect(&b, ctx, many, 0));
    for (int i = N; i < N + N / 2; i++)
        assert_int_equal(harness_raw_reply(s[i], NULL), SPBE_OK);
    assert_int_equal(wait_sessions(&b, N, 5000), N);
    ping_each(s, 0, N, 2, 3000000);
    ping_each(s, N, N + N / 2, 1, 4000000);
    printf("# %d sessions opened in %.2f s, each answered; half left, %d came, all answered\n", N,
           open_s, N / 2);
    for (int i = 0; i < N + N / 2; i++)
        if (s[i])
            zmq_close(s[i]);
    free(s);
    zmq_ctx_term(ctx);
    assert_int_equal(harness_broker_stop(&b), 0);
}

static int
tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Slowloris: 100 connections that say nothing, 100 that stop in the middle of the
 * greeting, 50 sessions that say hello and then nothing. The first two are cut off at
 * the handshake timeout, the sessions after three heartbeats. */
static void
test_half_open_connections(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--handshake-timeout-ms 1500 --heartbeat-ms 300"), 0);
    char idle[400];
    assert_int_equal(harness_member(&b, "rogue/idle", "hostile.idle", NULL, NULL, idle), 0);
    witness w;
    witness_start(&w, &b);
    int fds_before = harness_fds(b.pid);
    enum { SILENT = 100, PARTIAL = 100, HELLO_ONLY = 50 };
    int fd[SILENT + PARTIAL];
    static const uint8_t greeting_start[10] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f};
    for (int i = 0; i < SILENT + PARTIAL; i++) {
        fd[i] = tcp_connect(b.port);
        if (i >= SILENT)
            assert_int_equal(write(fd[i], greeting_start, sizeof greeting_start),
                             (ssize_t)sizeof greeting_start);
    }
    int fds_held = 0; /* the broker takes them all */
    for (int waited = 0; waited < 1000 && fds_held < fds_before + SILENT + PARTIAL; waited += 10) {
        fds_held = harness_fds(b.pid);
        usleep(10000);
    }
    printf("# descriptors %d before, %d with the half-open connections\n", fds_before, fds_held);
    assert_true(fds_held >= fds_before + SILENT + PARTIAL);
    void *ctx = zmq_ctx_new();
    void *quiet[HELLO_ONLY];
    for (int i = 0; i < HELLO_ONLY; i++) {
        assert_non_null(quiet[i] = harness_raw_connect(&b, ctx, idle, 0));
        assert_int_equal(harness_raw_reply(quiet[i], NULL), SPBE_OK);
    }
    /* each half-open connection is closed by the broker */
    int closed = 0;
    for (int i = 0; i < SILENT + PARTIAL; i++) {
        uint8_t buf[256];
        ssize_t n;
        while ((n = read(fd[i], buf, sizeof buf)) > 0) {
        }
        if (n == 0 || errno == ECONNRESET)
            closed++;
        close(fd[i]);
    }
    /* the silent sessions end after three heartbeats (their connections stay theirs) */
    long long left = wait_sessions(&b, 1, 5000);
    int fds_after_handshakes = wait_fds(&b, fds_before + HELLO_ONLY + 4, 5000);
    for (int i = 0; i < HELLO_ONLY; i++)
        zmq_close(quiet[i]);
    zmq_ctx_term(ctx);
    int fds_after = wait_fds(&b, fds_before + 4, 5000);
    printf("# %d half-open connections: %d closed by the broker; %d hello-only sessions "
           "expired (left %lld); descriptors %d before, %d held, %d after\n",
           SILENT + PARTIAL, closed, HELLO_ONLY, left, fds_before, fds_held, fds_after);
    assert_int_equal(closed, SILENT + PARTIAL);
    assert_int_equal(left, 1);
    assert_true(fds_after_handshakes <= fds_before + HELLO_ONLY + 4);
    assert_true(fds_after <= fds_before + 4);
    witness_check(&w, "half-open connections");
    assert_int_equal(harness_broker_stop(&b), 0);
}

/* A frame larger than the transport allows cuts the sender off; one larger than the
 * message limit but within the transport is TOO_LARGE; neither is stored. */
static void
test_oversized_frames(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--max-message-bytes 65536"), 0);
    char big[400];
    assert_int_equal(harness_member(&b, "rogue/big", "hostile.big", NULL, NULL, big), 0);
    witness w;
    witness_start(&w, &b);
    void *ctx = zmq_ctx_new();
    void *s = harness_raw_connect(&b, ctx, big, 0);
    assert_non_null(s);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);
    size_t huge = 8u << 20; /* far beyond 2 x 64 KiB + 1 MiB */
    uint8_t *junk = malloc(huge);
    assert_non_null(junk);
    memset(junk, 0xa5, huge);
    for (int i = 0; i < 5; i++) /* again and again: each time it is dropped */
        assert_int_equal(zmq_send(s, junk, huge, 0), (int)huge);
    assert_int_equal(harness_raw_reply(s, NULL), -1); /* no answer: the connection was cut */
    zmq_close(s);
    /* within the transport's bound but over the message limit */
    spbe_client *c = harness_connect(&b, big, 0);
    assert_non_null(c);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "hostile.big", junk, 100000, NULL, &r), SPBE_TOO_LARGE);
    assert_non_null(strstr(r.error, "exceeds the limit"));
    assert_int_equal(spbe_publish(c, "hostile.big", junk, 1000, NULL, &r), SPBE_OK);
    spbe_close(&c);
    free(junk);
    zmq_ctx_term(ctx);
    char path[64], out[64], err[64];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)b.pid);
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "awk '/^VmRSS/ {print $2}' %s", path), 0);
    long rss_kb = atol(out);
    printf("# 5 frames of 8 MiB: cut off; 100 kB message: TOO_LARGE; broker RSS %ld KiB\n", rss_kb);
    assert_true(rss_kb < 128 * 1024); /* the frames were not kept */
    assert_int_equal(harness_stored(&b, "hostile.big"), 1);
    witness_check(&w, "oversized frames");
    assert_int_equal(harness_broker_stop(&b), 0);
}

typedef struct capture {
    uint8_t bytes[4096];
    size_t len;
} capture;

static void
capture_delivery(const spbe_delivery *d, void *arg)
{
    capture *cap = arg;
    if (d->raw_len <= sizeof cap->bytes) {
        memcpy(cap->bytes, d->raw, d->raw_len);
        cap->len = d->raw_len;
    }
}

static void
keep_receipt(const spbe_receipt *r, void *arg)
{
    *(spbe_receipt *)arg = *r;
}

/* Sends signed bytes through a session and waits for the receipt. */
static int
send_signed(spbe_client *c, const uint8_t *bytes, size_t len, spbe_receipt *r)
{
    memset(r, 0, sizeof *r);
    r->code = -1;
    spbe_set_receipt_handler(c, keep_receipt, r);
    assert_int_equal(spbe_publish_signed(c, bytes, len, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(c, 5000), SPBE_OK);
    return r->code;
}

static void
sign_as(const char *key_path, const char *topic, int64_t created_ns, uint8_t **bytes, size_t *len)
{
    identity id;
    char err[256];
    assert_int_equal(identity_load(key_path, &id, err, sizeof err), SPBE_OK);
    uint8_t mid[16];
    wire_random_id(mid);
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = mid;
    m.id.len = sizeof mid;
    m.topic = (char *)topic;
    m.sender = id.member;
    m.created_ns = created_ns;
    m.payload.data = (uint8_t *)"x";
    m.payload.len = 1;
    assert_int_equal(wire_message_sign(&m, id.secret_key, bytes, len), SPBE_OK);
}

/* A subscriber captures a member's signed message and sends it as its own: FORBIDDEN.
 * The member sends it again, before and after a restart: DUPLICATE with the original
 * sequence. A copy with one byte changed: BAD_SIGNATURE. A message the eavesdropper
 * signs for a topic it may not use: FORBIDDEN. Messages dated beyond the clock bound:
 * BAD_REQUEST. Only the original is stored. */
static void
test_replays_forgeries_and_skewed_clocks(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--max-clock-skew 60"), 0);
    char owner[400], eve[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "hostile.bkn.>", NULL, NULL, owner), 0);
    assert_int_equal(harness_member(&b, "rogue/eve", "hostile.eve.>", "hostile.>", NULL, eve), 0);
    witness w;
    witness_start(&w, &b);
    spbe_client *o = harness_connect(&b, owner, 0), *e = harness_connect(&b, eve, 0);
    assert_non_null(o);
    assert_non_null(e);
    capture cap = {.len = 0};
    spbe_set_delivery_handler(e, capture_delivery, &cap);
    assert_int_equal(spbe_subscribe(e, "hostile.bkn.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    spbe_receipt first, r;
    assert_int_equal(
        spbe_publish(o, "hostile.bkn.mutasi", "NIP 199001012015031001", 22, NULL, &first), SPBE_OK);
    for (int i = 0; i < 100 && cap.len == 0; i++)
        spbe_dispatch(e, 50, NULL);
    assert_true(cap.len > 0); /* captured */

    assert_int_equal(send_signed(e, cap.bytes, cap.len, &r), SPBE_FORBIDDEN);
    assert_non_null(strstr(r.error, "sender differs"));
    assert_int_equal(send_signed(o, cap.bytes, cap.len, &r), SPBE_DUPLICATE);
    assert_int_equal(r.sequence, first.sequence);
    uint8_t tampered[4096];
    memcpy(tampered, cap.bytes, cap.len);
    tampered[cap.len / 2] ^= 0x01;
    int code = send_signed(o, tampered, cap.len, &r);
    assert_true(code == SPBE_BAD_SIGNATURE || code == SPBE_BAD_REQUEST);

    uint8_t *bytes;
    size_t len;
    sign_as(eve, "hostile.bkn.mutasi", wire_now_ns(), &bytes, &len);
    assert_int_equal(send_signed(e, bytes, len, &r), SPBE_FORBIDDEN);
    assert_non_null(strstr(r.error, "no right to publish"));
    free(bytes);
    const int64_t hour = 3600LL * 1000000000;
    int64_t when[] = {wire_now_ns() + 2 * hour, wire_now_ns() - 2 * hour};
    for (int i = 0; i < 2; i++) {
        sign_as(owner, "hostile.bkn.mutasi", when[i], &bytes, &len);
        assert_int_equal(send_signed(o, bytes, len, &r), SPBE_BAD_REQUEST);
        assert_non_null(strstr(r.error, "from the broker's clock"));
        free(bytes);
    }
    sign_as(owner, "hostile.bkn.mutasi", wire_now_ns() + 30LL * 1000000000, &bytes, &len);
    assert_int_equal(send_signed(o, bytes, len, &r), SPBE_OK); /* within the bound */
    free(bytes);
    spbe_close(&e);

    /* after a restart the replay is still recognised */
    witness_check(&w, "replays and forgeries");
    spbe_close(&o);
    assert_int_equal(harness_broker_signal(&b, SIGTERM) & 0x7f, 0);
    assert_int_equal(harness_broker_restart(&b), 0);
    o = harness_connect(&b, owner, 0);
    assert_non_null(o);
    assert_int_equal(send_signed(o, cap.bytes, cap.len, &r), SPBE_DUPLICATE);
    assert_int_equal(r.sequence, first.sequence);
    spbe_close(&o);
    assert_int_equal(harness_stored(&b, "hostile.bkn.mutasi"), 2);
    assert_int_equal(harness_broker_stop(&b), 0);
}

/* A member at its quotas of sessions, subscriptions and consumers gets QUOTA_EXCEEDED;
 * freeing one makes room; other members are not affected. */
static void
test_quotas(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--member-max-sessions 3 "
                                              "--session-max-subscriptions 4 "
                                              "--member-max-consumers 2"),
                     0);
    char greedy[400];
    assert_int_equal(
        harness_member(&b, "rogue/greedy", "hostile.greedy.>", "hostile.greedy.>", NULL, greedy),
        0);
    witness w;
    witness_start(&w, &b);
    long long refused = 0;

    /* sessions */
    spbe_client *c[4] = {0};
    for (int i = 0; i < 3; i++)
        assert_non_null(c[i] = harness_connect(&b, greedy, 0));
    spbe_options o = {.timeout_ms = 3000, .no_reconnect = 1};
    assert_int_equal(spbe_connect(greedy, &o, &c[3]), SPBE_QUOTA_EXCEEDED);
    assert_non_null(strstr(spbe_last_error(c[3]), "member_max_sessions"));
    spbe_close(&c[3]);
    refused++;
    spbe_close(&c[2]);
    assert_non_null(c[2] = harness_connect(&b, greedy, 0)); /* room again */

    /* subscriptions of one session */
    uint64_t id[5];
    for (int i = 0; i < 4; i++)
        assert_int_equal(spbe_subscribe(c[0], "hostile.greedy.>", SPBE_START_NEW, 0, &id[i]),
                         SPBE_OK);
    assert_int_equal(spbe_subscribe(c[0], "hostile.greedy.>", SPBE_START_NEW, 0, &id[4]),
                     SPBE_QUOTA_EXCEEDED);
    refused++;
    assert_int_equal(spbe_unsubscribe(c[0], id[0]), SPBE_OK);
    assert_int_equal(spbe_subscribe(c[0], "hostile.greedy.>", SPBE_START_NEW, 0, &id[4]), SPBE_OK);
    /* attachments count as subscriptions */
    assert_int_equal(spbe_consume(c[0], "greedy-a", "hostile.greedy.>", NULL, NULL),
                     SPBE_QUOTA_EXCEEDED);
    refused++;

    /* consumers of the member */
    assert_int_equal(spbe_consume(c[1], "greedy-a", "hostile.greedy.>", NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_consume(c[1], "greedy-b", "hostile.greedy.>", NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_consume(c[1], "greedy-c", "hostile.greedy.>", NULL, NULL),
                     SPBE_QUOTA_EXCEEDED);
    refused++;
    assert_int_equal(spbe_consume(c[2], "greedy-a", NULL, NULL, NULL), SPBE_OK); /* attach */
    for (int i = 0; i < 3; i++)
        spbe_close(&c[i]);
    assert_int_equal(
        harness_broker_metric(&b, "spbe_messages_rejected_total{code=\"QUOTA_EXCEEDED\"}"),
        refused);
    witness_check(&w, "quotas");
    assert_int_equal(harness_broker_stop(&b), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_flood),
        cmocka_unit_test(test_thousand_sessions),
        cmocka_unit_test(test_half_open_connections),
        cmocka_unit_test(test_oversized_frames),
        cmocka_unit_test(test_replays_forgeries_and_skewed_clocks),
        cmocka_unit_test(test_quotas),
    };
    if (wire_init() != SPBE_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
