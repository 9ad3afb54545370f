/*
 * test_ops.c - operations: the HTTP endpoint (/metrics checked by promtool and against
 * what the test did, /healthz, /readyz and the JSON under /v1/, all under load); a backup
 * taken while publishers run opens cleanly, passes spbe audit verify, and a broker
 * started on it serves every message acknowledged before the backup began.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>
#include <zmq.h>

#include "harness.h"
#include "identity.h"
#include "spbe/errors.h"
#include "spbe/v1/spbe.pb-c.h"
#include "wire.h"

#define MAX_ACKED 200000

typedef struct publisher {
    test_broker *broker;
    const char *key;
    volatile int stop;
    volatile long acked; /* receipts so far: sequences 1..acked of backup.t */
    int ok;
} publisher;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    publisher *p = arg;
    if (r->code == SPBE_OK)
        __atomic_add_fetch(&p->acked, 1, __ATOMIC_RELEASE);
}

static void *
publish_run(void *arg)
{
    publisher *p = arg;
    spbe_client *c = harness_connect(p->broker, p->key, 0);
    if (!c)
        return NULL;
    spbe_set_receipt_handler(c, on_receipt, p);
    int ok = 1;
    while (ok && !p->stop) {
        if (spbe_in_flight(c) < 100)
            ok = spbe_publish_async(c, "backup.t", "data", 4, NULL, NULL) == SPBE_OK;
        ok = ok && spbe_dispatch(c, spbe_in_flight(c) < 100 ? 0 : 50, NULL) == SPBE_OK;
    }
    p->ok = ok && spbe_flush(c, 10000) == SPBE_OK;
    spbe_close(&c);
    return NULL;
}

typedef struct seen {
    uint64_t next;
    int gaps;
} seen;

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    seen *s = arg;
    if (d->sequence != s->next)
        s->gaps++;
    s->next = d->sequence + 1;
}

static void
test_backup_while_publishing(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, NULL), 0);
    char key[400], backup[600], out[4096], err[4096];
    assert_int_equal(harness_member(&b, "bkn/siasn", "backup.>", "backup.>", NULL, key), 0);
    publisher p = {.broker = &b, .key = key};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publish_run, &p), 0);
    while (__atomic_load_n(&p.acked, __ATOMIC_ACQUIRE) < 2000)
        usleep(10000);
    long before = __atomic_load_n(&p.acked, __ATOMIC_ACQUIRE);
    snprintf(backup, sizeof backup, "%s/backup", b.dir);
    int rc =
        harness_run(out, sizeof out, err, sizeof err, "$SPBE backup --data %s %s", b.data, backup);
    long after = __atomic_load_n(&p.acked, __ATOMIC_ACQUIRE);
    usleep(200000); /* publishing went on during the copy */
    p.stop = 1;
    pthread_join(th, NULL);
    if (rc != 0)
        fail_msg("backup: %s", err);
    assert_true(p.ok);
    printf("# backup taken with %ld acknowledged before it, %ld by its end, %ld in all\n", before,
           after, p.acked);
    assert_true(p.acked > after); /* it did not stop the publisher */
    /* the copy opens cleanly and verifies */
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s", backup);
    if (rc != 0)
        fail_msg("verify of the backup: %s", err);
    /* a broker on the backup serves every message acknowledged before it began */
    assert_int_equal(harness_broker_signal(&b, SIGTERM), 0);
    assert_int_equal(harness_run(NULL, 0, NULL, 0, "rm -rf %s && mv %s %s", b.data, backup, b.data),
                     0);
    assert_int_equal(harness_broker_restart(&b), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    seen s = {.next = 1};
    spbe_set_delivery_handler(c, on_delivery, &s);
    assert_int_equal(spbe_subscribe(c, "backup.t", SPBE_START_FIRST, 0, NULL), SPBE_OK);
    for (int i = 0; i < 200 && s.next <= (uint64_t)before; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_true(s.next > (uint64_t)before);
    assert_int_equal(s.gaps, 0);
    /* and it takes new messages after them */
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "backup.t", "restored", 8, NULL, &r), SPBE_OK);
    assert_true(r.sequence >= (uint64_t)before + 1);
    spbe_close(&c);
    assert_int_equal(harness_broker_stop(&b), 0);
}

typedef struct acker {
    spbe_client *c;
    int got;
} acker;

static void
count_and_ack(const spbe_delivery *d, void *arg)
{
    acker *a = arg;
    a->got++;
    assert_int_equal(spbe_ack(a->c, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 1), SPBE_OK);
}

static void
test_http_endpoint_under_load(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, NULL), 0);
    char key[400], reader[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "ops.>,backup.>", NULL, NULL, key), 0);
    assert_int_equal(harness_member(&b, "portal/status", NULL, "ops.>", NULL, reader), 0);
    static char out[1 << 20];
    assert_int_equal(harness_http_get(b.http_port, "/healthz", out, sizeof out), 200);
    assert_string_equal(out, "ok\n");
    assert_int_equal(harness_http_get(b.http_port, "/readyz", out, sizeof out), 200);
    assert_int_equal(harness_http_get(b.http_port, "/nowhere", out, sizeof out), 404);

    /* known traffic: 25 accepted, 3 refused, a consumer acknowledging all 25 */
    spbe_client *c = harness_connect(&b, key, 0);
    for (int i = 0; i < 25; i++)
        assert_int_equal(spbe_publish(c, "ops.counted", "x", 1, NULL, NULL), SPBE_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(spbe_publish(c, "elsewhere.t", "x", 1, NULL, NULL), SPBE_FORBIDDEN);
    spbe_close(&c);
    spbe_client *r = harness_connect(&b, reader, 0);
    acker ak = {r, 0};
    spbe_set_delivery_handler(r, count_and_ack, &ak);
    spbe_consumer_options o = {.start = SPBE_START_FIRST};
    assert_int_equal(spbe_consume(r, "ops-portal", "ops.counted", &o, NULL), SPBE_OK);
    for (int i = 0; i < 100 && ak.got < 25; i++)
        assert_int_equal(spbe_dispatch(r, 50, NULL), SPBE_OK);
    assert_int_equal(ak.got, 25);
    assert_int_equal(spbe_flush(r, 2000), SPBE_OK);

    /* load beside the reads: a publisher runs while the endpoint is asked */
    publisher p = {.broker = &b, .key = key};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publish_run, &p), 0);
    usleep(300000);
    long long acked = -1;
    for (int i = 0; i < 40 && acked != 25; i++) { /* the consumers' snapshot: every 250 ms */
        assert_int_equal(harness_http_get(b.http_port, "/metrics", out, sizeof out), 200);
        acked = harness_metric(out, "spbe_consumer_acked_total{consumer=\"ops-portal\"}");
        if (acked != 25)
            usleep(100000);
    }
    assert_int_equal(acked, 25);
    assert_int_equal(harness_metric(out, "spbe_messages_rejected_total{code=\"FORBIDDEN\"}"), 3);
    assert_int_equal(harness_metric(out, "spbe_topic_messages{topic=\"ops.counted\"}"), 25);
    assert_true(harness_metric(out, "spbe_messages_accepted_total") >= 25 + 1);
    assert_true(harness_metric(out, "spbe_messages_delivered_total") >= 25);
    assert_int_equal(harness_metric(out, "spbe_consumer_pending{consumer=\"ops-portal\"}"), 0);
    assert_true(harness_metric(out, "spbe_commit_duration_seconds_count") > 0);
    assert_int_equal(harness_metric(out, "spbe_sessions"), 2);
    /* the format holds for promtool */
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.txt", b.dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(out, fp);
    fclose(fp);
    char check[4096], err[4096];
    int rc = harness_run(check, sizeof check, err, sizeof err, "promtool check metrics < %s", path);
    if (rc != 0)
        fail_msg("promtool: %s %s", check, err);
    assert_int_equal(harness_http_get(b.http_port, "/healthz", out, sizeof out), 200);
    assert_int_equal(harness_http_get(b.http_port, "/readyz", out, sizeof out), 200);
    assert_int_equal(harness_http_get(b.http_port, "/v1/topics", out, sizeof out), 200);
    assert_non_null(
        strstr(out, "\"name\":\"ops.counted\",\"first_sequence\":1,\"last_sequence\":25"));
    assert_int_equal(harness_http_get(b.http_port, "/v1/consumers", out, sizeof out), 200);
    assert_non_null(strstr(out, "\"name\":\"ops-portal\""));
    assert_non_null(strstr(out, "\"acked\":25"));
    assert_int_equal(harness_http_get(b.http_port, "/v1/members", out, sizeof out), 200);
    assert_non_null(strstr(out, "\"name\":\"portal/status\""));
    assert_null(strstr(out, "ops.>")); /* public data only: no rights */
    assert_int_equal(harness_http_get(b.http_port, "/v1/sessions", out, sizeof out), 200);
    assert_non_null(strstr(out, "\"member\":\"portal/status\""));
    /* the CLI's live view and the session list, as ops use them */
    char cli[8192], cli_err[1024];
    assert_int_equal(harness_run(cli, sizeof cli, cli_err, sizeof cli_err,
                                 "$SPBE stats --interval-ms 500 --json --key %s", b.admin_key),
                     0);
    assert_non_null(strstr(cli, "\"topic\":\"backup.t\",\"msgs_per_s\":"));
    assert_non_null(strstr(cli, "\"consumer\":\"ops-portal\""));
    const char *busy = strstr(cli, "\"topic\":\"backup.t\",\"msgs_per_s\":");
    assert_true(atof(busy + strlen("\"topic\":\"backup.t\",\"msgs_per_s\":")) > 0);
    assert_int_equal(harness_run(cli, sizeof cli, cli_err, sizeof cli_err,
                                 "$SPBE session ls --json --key %s", b.admin_key),
                     0);
    assert_non_null(strstr(cli, "\"member\":\"bkn/siasn\""));
    assert_non_null(strstr(cli, "\"member\":\"portal/status\""));
    assert_int_equal(
        harness_run(cli, sizeof cli, cli_err, sizeof cli_err, "$SPBE session ls --key %s", reader),
        1); /* not for a plain member */
    assert_non_null(strstr(cli_err, "FORBIDDEN"));
    p.stop = 1;
    pthread_join(th, NULL);
    assert_true(p.ok);
    spbe_close(&r);
    assert_int_equal(harness_broker_stop(&b), 0);
}

/* 100,000 malformed requests: the broker keeps serving, its log stays bounded, every
 * one is counted. */
static void
test_a_flood_of_bad_requests(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, NULL), 0);
    char key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "ops.>", NULL, NULL, key), 0);
    void *ctx = zmq_ctx_new();
    void *s = harness_raw_connect(&b, ctx, key, 0);
    assert_non_null(s);
    uint64_t rid;
    assert_int_equal(harness_raw_reply(s, &rid), SPBE_OK); /* welcome */
    enum { FLOOD = 100000 };
    for (int i = 0; i < FLOOD; i++) {
        static const uint8_t junk[] = {0xff, 0xff, 0x01};
        assert_int_equal(zmq_send(s, junk, sizeof junk, 0), (int)sizeof junk);
    }
    static char out[1 << 20];
    long long bad = -1;
    for (int i = 0; i < 600 && bad != FLOOD; i++) {
        assert_int_equal(harness_http_get(b.http_port, "/metrics", out, sizeof out), 200);
        bad = harness_metric(out, "spbe_messages_rejected_total{code=\"BAD_REQUEST\"}");
        if (bad != FLOOD)
            usleep(100000);
    }
    assert_int_equal(bad, FLOOD); /* exact */
    zmq_close(s);
    zmq_ctx_term(ctx);
    /* still serving */
    spbe_client *c = harness_connect(&b, key, 0);
    assert_non_null(c);
    assert_int_equal(spbe_publish(c, "ops.after", "ok", 2, NULL, NULL), SPBE_OK);
    spbe_close(&c);
    usleep(1100000); /* the last second's count of lines left out is written */
    /* the log: a bounded number of lines, and how many were left out */
    char lines[64], err[256];
    assert_int_equal(
        harness_run(lines, sizeof lines, err, sizeof err, "grep -c bad_frame %s", b.log), 0);
    long written = atol(lines);
    assert_int_equal(harness_run(lines, sizeof lines, err, sizeof err,
                                 "grep -o 'of=rejections lines=[0-9]*' %s | "
                                 "awk -F'lines=' '{n += $2} END {print n + 0}'",
                                 b.log),
                     0);
    long suppressed = atol(lines);
    printf("# %d bad requests: %ld logged, %ld counted as left out\n", FLOOD, written, suppressed);
    assert_true(written < 5000);
    assert_int_equal(written + suppressed, FLOOD);
    assert_int_equal(harness_broker_stop(&b), 0);
}

static void
write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* The configuration file: refused with file, line and reason; every documented key
 * accepted; a sample of keys has its effect. */
static void
test_configuration_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/spbe-config-XXXXXX", path[256], out[4096], err[4096];
    assert_non_null(mkdtemp(dir));
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"name = \"a\";\nbogus = 3;\n", "bad.conf:2: unknown key 'bogus'"},
        {"heartbeat_ms = 5;\n", "bad.conf:1: heartbeat_ms: 100..600000"},
        {"name = \"a\"\nlisten = ;\n", "bad.conf:2: syntax error"},
        {"retention = ( { pattern = \"ikn.>\"; max_aeg = \"1d\"; } );\n",
         "bad.conf:1: retention rules know pattern"},
        {"retention = ( { pattern = \"IKN\"; max_age = \"1d\"; } );\n", "invalid topic pattern"},
        {"log = { level = \"loud\"; };\n", "bad.conf:1: log level"},
        {"consumer_defaults = { ack_wait = 1; };\n", "consumer_defaults knows"},
        {"max_store_bytes = \"12\";\n", "max_store_bytes"},
        {"retention = ( { pattern = 5; max_age = \"1d\"; } );\n", /* found by fuzzing */
         "pattern is a topic pattern in quotes"},
    };
    snprintf(path, sizeof path, "%s/bad.conf", dir);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i].text);
        int rc = harness_run(out, sizeof out, err, sizeof err, "%s --config %s --check-config",
                             SPBE_BROKER_BIN, path);
        if (rc != 2 || !strstr(err, bad[i].want))
            fail_msg("config %zu: exit %d, wanted '%s' in: %s", i, rc, bad[i].want, err);
    }
    /* every key of docs/configuration.md */
    snprintf(path, sizeof path, "%s/all.conf", dir);
    char all[2048];
    snprintf(
        all, sizeof all,
        "data = \"%s/data\";\nlisten = \"tcp://127.0.0.1:7599\";\n"
        "http = \"127.0.0.1:7598\";\nname = \"broker-pusat\";\n"
        "max_message_bytes = \"2M\";\nmax_store_bytes = \"1G\";\ndedup_window_s = 3600;\n"
        "heartbeat_ms = 2000;\ntree_head_ms = 5000;\nmember_rate = 1000;\nmember_burst = 2000;\n"
        "max_clock_skew_s = 300;\n"
        "retention = ( { pattern = \"ikn.>\"; max_age = \"90d\"; max_messages = 1000000; "
        "max_bytes = \"20G\"; } );\n"
        "consumer_defaults = { ack_wait_ms = 60000; max_deliveries = 10; max_in_flight = 500; "
        "};\nlog = { level = \"debug\"; format = \"json\"; };\n",
        dir);
    write_text(path, all);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s --config %s --check-config",
                                 SPBE_BROKER_BIN, path),
                     0);
    assert_non_null(strstr(out, "valid"));
    /* their effect, for a sample: retention, consumer defaults, JSON logs, the name */
    snprintf(path, sizeof path, "%s/sample.conf", dir);
    write_text(path, "name = \"broker-pusat\";\n"
                     "retention = ( { pattern = \"conf.kept.>\"; max_messages = 5; } );\n"
                     "consumer_defaults = { ack_wait_ms = 60000; max_deliveries = 10; };\n"
                     "log = { format = \"json\"; };\n");
    char flags[400];
    snprintf(flags, sizeof flags, "--config %s", path);
    test_broker b;
    assert_int_equal(harness_broker_start(&b, flags), 0);
    char key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "conf.>", "conf.>", NULL, key), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(spbe_publish(c, "conf.kept.a", "x", 1, NULL, NULL), SPBE_OK);
    spbe_consumer_options o = {0};
    assert_int_equal(spbe_consume(c, "conf-consumer", "conf.>", &o, NULL), SPBE_OK);
    spbe_close(&c);
    uint64_t kept = 20;
    for (int i = 0; i < 50 && kept > 5; i++) {
        usleep(100000);
        kept = harness_stored(&b, "conf.kept.a");
    }
    assert_int_equal(kept, 5);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "$SPBE consumer info conf-consumer --json --key %s", key),
                     0);
    assert_non_null(strstr(out, "\"ack_wait_ms\":60000,\"max_deliveries\":10"));
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "grep -c '^{\"ts\":' %s", b.log),
                     0);
    assert_true(atoi(out) > 0);
    assert_int_equal(harness_broker_stop(&b), 0);
    harness_run(NULL, 0, NULL, 0, "rm -rf %s", dir);
}

typedef struct receipts {
    int ok, limited, other;
} receipts;

static void
count_receipt(const spbe_receipt *r, void *arg)
{
    receipts *c = arg;
    if (r->code == SPBE_OK)
        c->ok++;
    else if (r->code == SPBE_RATE_LIMITED)
        c->limited++;
    else
        c->other++;
}

static void
remember_receipt(const spbe_receipt *r, void *arg)
{
    *(spbe_receipt *)arg = *r;
}

/* A member over its rate gets RATE_LIMITED; other members do not notice; it recovers. */
static void
test_member_rate_limit(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(
        harness_broker_start(&b, "--member-rate 100 --member-burst 100 --max-clock-skew 60"), 0);
    char fast[400], calm[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "ops.>", NULL, NULL, fast), 0);
    assert_int_equal(harness_member(&b, "oikn/hunian", "ops.>", NULL, NULL, calm), 0);
    spbe_client *c = harness_connect(&b, fast, 0);
    receipts got = {0};
    spbe_set_receipt_handler(c, count_receipt, &got);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 400; i++)
        assert_int_equal(spbe_publish_async(c, "ops.rate", "x", 1, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(c, 20000), SPBE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("# 400 sent in %.2f s: %d accepted, %d RATE_LIMITED\n", secs, got.ok, got.limited);
    assert_int_equal(got.ok + got.limited, 400);
    assert_int_equal(got.other, 0);
    assert_true(got.limited > 0);
    assert_true(got.ok <= 100 + (int)(100 * secs) + 1); /* the burst, then the rate */
    /* another member is not held back */
    spbe_client *d = harness_connect(&b, calm, 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(spbe_publish(d, "ops.rate", "y", 1, NULL, NULL), SPBE_OK);
    spbe_close(&d);
    /* the budget refills */
    usleep(1100000);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "ops.rate", "again", 5, NULL, &r), SPBE_OK);
    /* a message dated an hour away from the broker's clock is refused, the reason says so */
    identity id;
    char ierr[256];
    assert_int_equal(identity_load(fast, &id, ierr, sizeof ierr), SPBE_OK);
    uint8_t mid[16] = {9};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = mid;
    m.id.len = sizeof mid;
    m.topic = "ops.rate";
    m.sender = id.member;
    m.created_ns = wire_now_ns() - 3600LL * 1000000000;
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&m, id.secret_key, &bytes, &len), SPBE_OK);
    spbe_set_receipt_handler(c, remember_receipt, &r);
    assert_int_equal(spbe_publish_signed(c, bytes, len, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(c, 5000), SPBE_OK);
    free(bytes);
    assert_int_equal(r.code, SPBE_BAD_REQUEST);
    assert_non_null(strstr(r.error, "from the broker's clock"));
    spbe_close(&c);
    static char out[1 << 20];
    assert_int_equal(harness_http_get(b.http_port, "/metrics", out, sizeof out), 200);
    assert_int_equal(harness_metric(out, "spbe_messages_rejected_total{code=\"RATE_LIMITED\"}"),
                     got.limited);
    assert_int_equal(harness_broker_stop(&b), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_endpoint_under_load),
        cmocka_unit_test(test_backup_while_publishing),
        cmocka_unit_test(test_a_flood_of_bad_requests),
        cmocka_unit_test(test_configuration_file),
        cmocka_unit_test(test_member_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
