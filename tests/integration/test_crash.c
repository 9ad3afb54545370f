/*
 * test_crash.c - the chaos test: nothing acknowledged is lost to kill -9. Publishers
 * send with receipts while the broker is killed with SIGKILL at a random moment and
 * restarted, several times over. Their sessions reconnect and resend what had no
 * receipt. At the end every message got a positive receipt, each is present exactly
 * once at the sequence its receipt named, sequences have no gap, the environment is
 * consistent and `spbe audit verify` passes.
 * Meanwhile two members attached to one durable consumer acknowledge whatever comes,
 * and adapters run as processes of their own that are killed (SIGKILL) and started
 * again at random too: a consumer (`spbe sub --consumer`) and a service
 * (`spbe serve -- cat`) that a caller keeps calling. After the restarts every
 * acknowledged publish has reached both consumers (at least once), none skipped,
 * nothing stays pending, and no call got an answer that was not its own.
 * SPBE_CRASH_ROUNDS sets the number of broker kills (default 5; tests/chaos/run 100
 * is the long form), SPBE_CRASH_SEED the seed.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "harness.h"
#include "store.h"
#include "wire.h"

#define PUBLISHERS 4
#define WINDOW 200
#define MAX_ACKED 2000000

typedef struct acked {
    uint64_t sequence;
    uint8_t id[16];
} acked;

typedef struct publisher {
    test_broker *broker;
    const char *key;
    char topic[64];
    acked *acks;
    size_t n_acks;
    volatile int *stop;
    long sent;
    int flushed;
    int batch; /* spbe_options.publish_batch */
} publisher;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    publisher *p = arg;
    if (r->code == SPBE_OK && r->signed_by_broker && p->n_acks < MAX_ACKED) {
        p->acks[p->n_acks].sequence = r->sequence;
        memcpy(p->acks[p->n_acks].id, r->message_id, 16);
        p->n_acks++;
    }
}

static void *
publisher_run(void *arg)
{
    publisher *p = arg;
    /* half of them gather their publishes into frames of many */
    spbe_options o = {
        .endpoint = p->broker->endpoint, .timeout_ms = 2000, .publish_batch = p->batch};
    spbe_client *c;
    if (spbe_connect(p->key, &o, &c) != SPBE_OK) {
        spbe_close(&c);
        return NULL;
    }
    spbe_set_receipt_handler(c, on_receipt, p);
    char payload[64];
    while (!*p->stop) {
        if (spbe_in_flight(c) < WINDOW) {
            int n = snprintf(payload, sizeof payload, "%s #%ld", p->topic, p->sent);
            if (spbe_publish_async(c, p->topic, payload, (size_t)n, NULL, NULL) != SPBE_OK)
                break;
            p->sent++;
            if (spbe_dispatch(c, 0, NULL) != SPBE_OK)
                break;
        } else if (spbe_dispatch(c, 100, NULL) != SPBE_OK) {
            break;
        }
    }
    /* every message sent gets its receipt, across however many restarts */
    p->flushed = spbe_flush(c, 60000) == SPBE_OK;
    spbe_close(&c);
    return NULL;
}

/* A member attached to the consumer "crash", acknowledging everything at once. */
typedef struct taker {
    test_broker *broker;
    const char *key;
    uint8_t **seen; /* [publisher][sequence], set once delivered */
    volatile int *stop;
    long deliveries, redeliveries;
    spbe_client *c;
    int ok;
} taker;

static void
on_consumed(const spbe_delivery *d, void *arg)
{
    taker *t = arg;
    int i = atoi(d->topic + strlen("crash.topic"));
    if (i >= 0 && i < PUBLISHERS && d->sequence < MAX_ACKED)
        __atomic_store_n(&t->seen[i][d->sequence], 1, __ATOMIC_RELAXED);
    t->deliveries++;
    if (d->delivery_count > 1)
        t->redeliveries++;
    spbe_ack(t->c, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 0);
}

static void *
taker_run(void *arg)
{
    taker *t = arg;
    t->c = harness_connect(t->broker, t->key, 2000);
    if (!t->c)
        return NULL;
    spbe_set_delivery_handler(t->c, on_consumed, t);
    spbe_consumer_options o = {
        .start = SPBE_START_FIRST, .ack_wait_ms = 1000, .max_deliveries = 1000};
    if (spbe_consume(t->c, "crash", "crash.>", &o, NULL) != SPBE_OK)
        return NULL;
    t->ok = 1;
    while (!*t->stop)
        if (spbe_dispatch(t->c, 100, NULL) != SPBE_OK) {
            t->ok = 0;
            break;
        }
    spbe_close(&t->c);
    return NULL;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* An adapter run as a process of its own (a shell command line), killed and started
 * again at random. */
typedef struct adapter {
    char cmd[1536];
    char log[400]; /* its stderr (and stdout, unless the command line says otherwise) */
    pid_t pid;
    int starts, kills, exits;
} adapter;

static void
adapter_start(adapter *a)
{
    pid_t pid = harness_spawn(a->log, "%s", a->cmd);
    assert_true(pid >= 0);
    a->pid = pid;
    a->starts++;
}

static void
adapter_kill(adapter *a)
{
    if (a->pid <= 0)
        return;
    int status;
    if (waitpid(a->pid, &status, WNOHANG) == a->pid) { /* it ended by itself */
        fprintf(stderr, "# adapter ended by itself (status %d), see %s: %s\n", status, a->log,
                a->cmd);
        a->exits++;
    } else {
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
        a->kills++;
    }
    a->pid = 0;
}

/* Marks in seen[publisher][sequence] what the consumer process printed
 * ("TOPIC #SEQUENCE ..." per line). */
static void
read_printed(const char *path, uint8_t **seen)
{
    FILE *f = fopen(path, "r");
    char line[512], topic[128];
    unsigned long long sequence;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%127s #%llu", topic, &sequence) == 2 &&
            strncmp(topic, "crash.topic", 11) == 0) {
            int i = atoi(topic + 11);
            if (i >= 0 && i < PUBLISHERS && sequence < MAX_ACKED)
                seen[i][sequence] = 1;
        }
    if (f)
        fclose(f);
}

/* A member calling the echo service over and over. */
typedef struct caller {
    test_broker *broker;
    const char *key;
    volatile int *stop;
    long answered, unavailable, timeouts, other, wrong;
} caller;

static void *
caller_run(void *arg)
{
    caller *k = arg;
    spbe_client *c = harness_connect(k->broker, k->key, 2000);
    if (!c)
        return NULL;
    for (long n = 0; !*k->stop; n++) {
        char payload[64];
        int len = snprintf(payload, sizeof payload, "NIK 3171%012ld", n);
        spbe_response resp;
        int rc = spbe_request(c, "chaos.echo", payload, (size_t)len, 2000, NULL, &resp);
        if (rc == SPBE_OK) {
            if (resp.payload_len != (size_t)len || memcmp(resp.payload, payload, (size_t)len) ||
                !resp.receipts_verified)
                k->wrong++;
            else
                k->answered++;
        } else if (rc == SPBE_UNAVAILABLE) {
            k->unavailable++;
            sleep_ms(20);
        } else if (rc == SPBE_TIMEOUT) {
            k->timeouts++;
        } else {
            k->other++;
        }
        spbe_response_free(&resp);
    }
    spbe_close(&c);
    return NULL;
}

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

typedef struct scan {
    uint8_t (*ids)[16];
    size_t n;
} scan;

static int
scan_one(const store_message *m, void *arg)
{
    scan *s = arg;
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    if (wire_envelope_decode(m->data, m->len, &sm, &msg, NULL) == SPBE_OK)
        memcpy(s->ids[s->n++], msg->id.data, 16);
    wire_envelope_free(&sm, &msg);
    return 0;
}

static void
test_acknowledged_messages_survive_sigkill(void **state)
{
    (void)state;
    assert_int_equal(wire_init(), SPBE_OK);
    const char *rounds_env = getenv("SPBE_CRASH_ROUNDS");
    const char *seed_env = getenv("SPBE_CRASH_SEED");
    int rounds = rounds_env ? atoi(rounds_env) : 5;
    unsigned seed = seed_env ? (unsigned)atoi(seed_env) : (unsigned)time(NULL);
    printf("# crash test: %d kills, seed %u\n", rounds, seed);
    srand(seed);

    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--heartbeat-ms 300"), 0);
    char key[400], reader_key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "crash.>", NULL, NULL, key), 0);
    assert_int_equal(harness_member(&b, "portal/status", NULL, "crash.>", NULL, reader_key), 0);
    char server_key[400], caller_key[400], proc_key[400];
    assert_int_equal(harness_member(&b, "dukcapil/ikd", NULL, NULL, "serve:chaos.echo", server_key),
                     0);
    assert_int_equal(
        harness_member(&b, "kemenpan/caller", NULL, NULL, "call:chaos.echo", caller_key), 0);
    assert_int_equal(harness_member(&b, "portal/arsip", NULL, "crash.>", NULL, proc_key), 0);
    uint8_t *seen[PUBLISHERS], *printed[PUBLISHERS];
    for (int i = 0; i < PUBLISHERS; i++) {
        assert_non_null(seen[i] = calloc(MAX_ACKED, 1));
        assert_non_null(printed[i] = calloc(MAX_ACKED, 1));
    }
    /* the adapters of their own */
    char printed_path[400];
    snprintf(printed_path, sizeof printed_path, "%s/arsip.out", b.dir);
    adapter archive = {.pid = 0}, server = {.pid = 0};
    snprintf(archive.cmd, sizeof archive.cmd,
             "exec $SPBE sub 'crash.>' --consumer arsip --from first --ack --ack-wait-ms 1000 "
             "--max-deliveries 1000 --key %s >> %s",
             proc_key, printed_path);
    snprintf(archive.log, sizeof archive.log, "%s/arsip.log", b.dir);
    snprintf(server.cmd, sizeof server.cmd, "exec $SPBE serve chaos.echo --key %s -- cat",
             server_key);
    snprintf(server.log, sizeof server.log, "%s/serve.log", b.dir);
    adapter_start(&archive);
    adapter_start(&server);
    volatile int callers_stop = 0;
    caller calling = {.broker = &b, .key = caller_key, .stop = &callers_stop};
    pthread_t caller_thread;
    pthread_create(&caller_thread, NULL, caller_run, &calling);
    volatile int takers_stop = 0;
    taker takers[2];
    pthread_t taker_threads[2];
    for (int i = 0; i < 2; i++) {
        takers[i] = (taker){.broker = &b, .key = reader_key, .seen = seen, .stop = &takers_stop};
        pthread_create(&taker_threads[i], NULL, taker_run, &takers[i]);
        sleep_ms(100); /* the first creates the consumer */
    }

    publisher pubs[PUBLISHERS];
    for (int i = 0; i < PUBLISHERS; i++) {
        memset(&pubs[i], 0, sizeof pubs[i]);
        pubs[i].broker = &b;
        pubs[i].key = key;
        snprintf(pubs[i].topic, sizeof pubs[i].topic, "crash.topic%d", i);
        pubs[i].batch = i % 2 ? 64 : 0;
        pubs[i].acks = calloc(MAX_ACKED, sizeof(acked));
        assert_non_null(pubs[i].acks);
    }
    volatile int stop = 0;
    pthread_t threads[PUBLISHERS];
    for (int i = 0; i < PUBLISHERS; i++) {
        pubs[i].stop = &stop;
        pthread_create(&threads[i], NULL, publisher_run, &pubs[i]);
    }
    for (int round = 0; round < rounds; round++) {
        sleep_ms(300 + rand() % 700);
        harness_broker_signal(&b, SIGKILL);
        sleep_ms(rand() % 300);
        assert_int_equal(harness_broker_restart(&b), 0);
        adapter *victim = rand() % 2 ? &archive : &server; /* and an adapter, often */
        if (rand() % 3) {
            sleep_ms(rand() % 300);
            adapter_kill(victim);
            adapter_start(victim);
        }
    }
    sleep_ms(500);
    stop = 1;
    for (int i = 0; i < PUBLISHERS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < PUBLISHERS; i++) {
        assert_true(pubs[i].flushed);
        assert_int_equal((long)pubs[i].n_acks, pubs[i].sent); /* every message acknowledged */
    }

    /* the consumer gets every acknowledged publish, none skipped, and acks them all */
    size_t missing = 1;
    for (int wait = 0; wait < 600 && missing; wait++) {
        missing = 0;
        for (int i = 0; i < PUBLISHERS; i++)
            for (size_t k = 0; k < pubs[i].n_acks; k++)
                if (!__atomic_load_n(&seen[i][pubs[i].acks[k].sequence], __ATOMIC_RELAXED))
                    missing++;
        if (missing)
            sleep_ms(100);
    }
    if (missing)
        fail_msg("%zu acknowledged messages never reached the consumer", missing);
    char out[8192], cli_err[1024];
    const char *pending = NULL;
    for (int wait = 0; wait < 100; wait++) {
        assert_int_equal(harness_run(out, sizeof out, cli_err, sizeof cli_err,
                                     "$SPBE consumer info crash --json --key %s", reader_key),
                         0);
        pending = strstr(out, "\"pending\":"); /* the consumer's, before its topics' */
        if (pending && atoll(pending + 10) == 0)
            break;
        pending = NULL;
        sleep_ms(100);
    }
    if (!pending)
        fail_msg("the consumer still has pending deliveries: %s", out);
    takers_stop = 1;
    for (int i = 0; i < 2; i++) {
        pthread_join(taker_threads[i], NULL);
        assert_true(takers[i].ok);
    }
    printf("# consumer: %ld deliveries, %ld of them again after a kill or ack wait\n",
           takers[0].deliveries + takers[1].deliveries,
           takers[0].redeliveries + takers[1].redeliveries);

    /* the consumer process, killed with the rest, printed every acknowledged publish */
    missing = 1;
    for (int wait = 0; wait < 600 && missing; wait++) {
        read_printed(printed_path, printed);
        missing = 0;
        for (int i = 0; i < PUBLISHERS; i++)
            for (size_t k = 0; k < pubs[i].n_acks; k++)
                missing += !printed[i][pubs[i].acks[k].sequence];
        if (missing)
            sleep_ms(100);
    }
    if (missing)
        fail_msg("%zu acknowledged messages never reached the consumer process", missing);
    pending = NULL;
    for (int wait = 0; wait < 100; wait++) {
        assert_int_equal(harness_run(out, sizeof out, cli_err, sizeof cli_err,
                                     "$SPBE consumer info arsip --json --key %s", proc_key),
                         0);
        pending = strstr(out, "\"pending\":");
        if (pending && atoll(pending + 10) == 0)
            break;
        pending = NULL;
        sleep_ms(100);
    }
    if (!pending)
        fail_msg("the consumer process's consumer still has pending deliveries: %s", out);
    char lines[64];
    assert_int_equal(
        harness_run(lines, sizeof lines, cli_err, sizeof cli_err, "wc -l < %s", printed_path), 0);
    printf("# consumer process: started %d times (%d kills), printed %ld lines for %zu messages\n",
           archive.starts, archive.kills, atol(lines),
           (size_t)(pubs[0].n_acks + pubs[1].n_acks + pubs[2].n_acks + pubs[3].n_acks));
    adapter_kill(&archive);

    /* the service answers again after all that, and never answered the wrong call */
    long answered_before = calling.answered;
    for (int wait = 0; wait < 100 && calling.answered == answered_before; wait++)
        sleep_ms(100);
    callers_stop = 1;
    pthread_join(caller_thread, NULL);
    adapter_kill(&server);
    printf("# service: server started %d times (%d kills); calls answered %ld, unavailable %ld, "
           "timed out %ld, other %ld, wrong %ld\n",
           server.starts, server.kills, calling.answered, calling.unavailable, calling.timeouts,
           calling.other, calling.wrong);
    assert_int_equal(calling.wrong, 0);
    assert_true(calling.answered > answered_before);
    /* adapters ride out the broker's restarts: none gave up */
    assert_int_equal(archive.exits, 0);
    assert_int_equal(server.exits, 0);
    for (int i = 0; i < PUBLISHERS; i++) {
        free(seen[i]);
        free(printed[i]);
    }
    assert_int_equal(harness_broker_signal(&b, SIGTERM), 0); /* a clean stop: exit 0 */

    /* offline: consistent, every acknowledged message present once where its receipt said */
    store_options so = {.read_only = 1};
    store *s;
    char err[512];
    assert_int_equal(store_open(b.data, &so, &s, err, sizeof err), SPBE_OK);
    assert_int_equal(store_check(s, err, sizeof err), SPBE_OK);
    store_reader *r;
    assert_int_equal(store_reader_begin(s, &r), SPBE_OK);
    size_t total_acked = 0;
    for (int i = 0; i < PUBLISHERS; i++) {
        publisher *p = &pubs[i];
        total_acked += p->n_acks;
        store_topic_info t;
        if (p->n_acks == 0)
            continue;
        assert_int_equal(store_topic_get(r, p->topic, &t), SPBE_OK);
        for (size_t k = 0; k < p->n_acks; k++) {
            store_message m;
            assert_int_equal(store_message_get(r, t.id, p->acks[k].sequence, &m), SPBE_OK);
            Spbe__V1__SignedMessage *sm;
            Spbe__V1__Message *msg;
            assert_int_equal(wire_envelope_decode(m.data, m.len, &sm, &msg, NULL), SPBE_OK);
            assert_memory_equal(msg->id.data, p->acks[k].id, 16);
            wire_envelope_free(&sm, &msg);
        }
        /* exactly once: no id twice in the topic */
        scan sc = {calloc(t.messages + 1, 16), 0};
        uint64_t next;
        assert_int_equal(store_read_from(r, t.id, 1, 0, scan_one, &sc, &next), SPBE_OK);
        assert_int_equal(sc.n, t.messages);
        assert_int_equal(t.first_sequence, 1);
        assert_int_equal(t.last_sequence, t.messages);
        qsort(sc.ids, sc.n, 16, cmp_id);
        for (size_t k = 1; k < sc.n; k++)
            assert_true(memcmp(sc.ids[k - 1], sc.ids[k], 16) != 0);
        free(sc.ids);
    }
    store_reader_end(&r);
    store_close(&s);
    printf("# %zu messages sent, acknowledged and checked across %d kills\n", total_acked, rounds);
    assert_true(total_acked > 0);

    /* the audit log agrees with every message, across the kills */
    char verify_err[4096];
    int vrc = harness_run(out, sizeof out, verify_err, sizeof verify_err,
                          "$SPBE audit verify --data %s", b.data);
    if (vrc != 0)
        fail_msg("audit verify after the kills: %s", verify_err);
    printf("# %s", out);

    /* and the broker starts again and serves */
    assert_int_equal(harness_broker_restart(&b), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    assert_non_null(c);
    assert_int_equal(spbe_publish(c, "crash.after", "ok", 2, NULL, NULL), SPBE_OK);
    spbe_close(&c);
    assert_int_equal(harness_broker_stop(&b), 0);
    for (int i = 0; i < PUBLISHERS; i++)
        free(pubs[i].acks);
}

typedef struct received {
    uint64_t next; /* the sequence expected next */
    int out_of_order;
    long n;
} received;

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    received *r = arg;
    if (d->sequence != r->next)
        r->out_of_order++;
    r->next = d->sequence + 1;
    r->n++;
}

/* A subscriber's session survives broker restarts (a clean stop and a kill): it
 * resumes after the last sequence it received, with nothing missed or repeated. */
static void
test_subscriber_resumes_after_broker_restarts(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, "--heartbeat-ms 300"), 0);
    char pub_key[400], sub_key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "resume.>", NULL, NULL, pub_key), 0);
    assert_int_equal(harness_member(&b, "oikn/hunian", NULL, "resume.>", NULL, sub_key), 0);
    spbe_client *sub = harness_connect(&b, sub_key, 2000);
    spbe_client *pub = harness_connect(&b, pub_key, 2000);
    assert_non_null(sub);
    assert_non_null(pub);
    received r = {.next = 1};
    spbe_set_delivery_handler(sub, on_delivery, &r);
    assert_int_equal(spbe_subscribe(sub, "resume.>", SPBE_START_FIRST, 0, NULL), SPBE_OK);
    long published = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 200; i++, published++)
            assert_int_equal(spbe_publish_async(pub, "resume.asn", "x", 1, NULL, NULL), SPBE_OK);
        assert_int_equal(spbe_flush(pub, 30000), SPBE_OK);
        for (int i = 0; i < 100 && r.n < published; i++)
            assert_int_equal(spbe_dispatch(sub, 50, NULL), SPBE_OK);
        assert_int_equal(r.n, published);
        harness_broker_signal(&b, round % 2 ? SIGKILL : SIGTERM);
        assert_int_equal(harness_broker_restart(&b), 0);
    }
    for (int i = 0; i < 200; i++, published++)
        assert_int_equal(spbe_publish_async(pub, "resume.asn", "x", 1, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 30000), SPBE_OK);
    for (int i = 0; i < 200 && r.n < published; i++)
        assert_int_equal(spbe_dispatch(sub, 50, NULL), SPBE_OK);
    assert_int_equal(r.n, published);
    assert_int_equal(r.out_of_order, 0);
    assert_true(spbe_connected(sub));
    spbe_close(&sub);
    spbe_close(&pub);
    assert_int_equal(harness_broker_stop(&b), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acknowledged_messages_survive_sigkill),
        cmocka_unit_test(test_subscriber_resumes_after_broker_restarts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
