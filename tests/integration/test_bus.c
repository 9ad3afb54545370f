/* test_bus.c - publish, subscribe and replay end to end: a real broker, the library
 * and the CLI, as members use them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <cmocka.h>

#include "harness.h"
#include "spbe/v1/spbe.pb-c.h"

typedef struct fixture {
    test_broker broker;
    char publisher[400], reader[400], narrow[400];
} fixture;

typedef struct collected {
    int n;
    char topics[64][64];
    uint64_t sequences[64];
    char payloads[64][64];
    uint8_t raw[4096];
    size_t raw_len;
    spbe_client *client;
    int verified;
} collected;

static void
collect(const spbe_delivery *d, void *arg)
{
    collected *c = arg;
    if (c->n >= 64)
        return;
    snprintf(c->topics[c->n], 64, "%s", d->topic);
    c->sequences[c->n] = d->sequence;
    snprintf(c->payloads[c->n], 64, "%.*s", (int)d->payload_len, (const char *)d->payload);
    if (d->raw_len <= sizeof c->raw) {
        memcpy(c->raw, d->raw, d->raw_len);
        c->raw_len = d->raw_len;
    }
    if (c->client && spbe_verify(c->client, d) == SPBE_OK)
        c->verified++;
    c->n++;
}

/* Dispatches until n deliveries arrived or 5 s passed. */
static void
wait_for(spbe_client *c, collected *col, int n)
{
    for (int i = 0; i < 50 && col->n < n; i++)
        assert_int_equal(spbe_dispatch(c, 100, NULL), SPBE_OK);
}

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || harness_broker_start(&f->broker, NULL) != 0)
        return -1;
    if (harness_member(&f->broker, "bkn/siasn", "ikn.>", "ikn.>", NULL, f->publisher) ||
        harness_member(&f->broker, "oikn/hunian", NULL, "ikn.>", NULL, f->reader) ||
        harness_member(&f->broker, "kemenkeu/tunjangan", NULL, "ikn.relokasi.*", NULL, f->narrow))
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;
    int rc = harness_broker_stop(&f->broker);
    free(f);
    return rc == 0 ? 0 : -1; /* a clean stop on SIGTERM is part of the contract */
}

static void
test_round_trip_delivers_the_senders_exact_signed_bytes(void **state)
{
    fixture *f = *state;
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    spbe_client *sub = harness_connect(&f->broker, f->reader, 0);
    assert_non_null(pub);
    assert_non_null(sub);
    collected col = {.client = sub};
    spbe_set_delivery_handler(sub, collect, &col);
    assert_int_equal(spbe_subscribe(sub, "ikn.roundtrip.>", SPBE_START_NEW, 0, NULL), SPBE_OK);

    uint8_t *signed_bytes;
    size_t len;
    assert_int_equal(spbe_sign(pub, "ikn.roundtrip.asn", "NIP 199001012020121001", 22, NULL,
                               &signed_bytes, &len),
                     SPBE_OK);
    uint64_t token;
    assert_int_equal(spbe_publish_signed(pub, signed_bytes, len, &token), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    wait_for(sub, &col, 1);
    assert_int_equal(col.n, 1);
    assert_string_equal(col.topics[0], "ikn.roundtrip.asn");
    assert_int_equal(col.sequences[0], 1);
    assert_string_equal(col.payloads[0], "NIP 199001012020121001");
    assert_int_equal(col.raw_len, len);
    assert_memory_equal(col.raw, signed_bytes, len);
    assert_int_equal(col.verified, 1);
    free(signed_bytes);

    spbe_receipt r;
    assert_int_equal(spbe_publish(pub, "ikn.roundtrip.asn", "two", 3, NULL, &r), SPBE_OK);
    assert_int_equal(r.sequence, 2);
    assert_true(r.signed_by_broker);
    assert_string_equal(r.topic, "ikn.roundtrip.asn");

    /* a message bigger than a batch between small ones: each arrives whole, in order */
    size_t big_len = 300000;
    char *big = malloc(big_len);
    memset(big, 'B', big_len);
    assert_int_equal(spbe_publish_async(pub, "ikn.roundtrip.asn", "three", 5, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_publish_async(pub, "ikn.roundtrip.asn", big, big_len, NULL, NULL),
                     SPBE_OK);
    assert_int_equal(spbe_publish_async(pub, "ikn.roundtrip.asn", "five", 4, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    free(big);
    wait_for(sub, &col, 5);
    assert_int_equal(col.n, 5);
    assert_int_equal(col.sequences[2], 3);
    assert_int_equal(col.sequences[3], 4);
    assert_int_equal(col.sequences[4], 5);
    assert_string_equal(col.payloads[3],
                        "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB");
    assert_string_equal(col.payloads[4], "five");
    assert_int_equal(col.verified, 5);
    spbe_close(&pub);
    spbe_close(&sub);
}

typedef struct receipts {
    int n, ok, signed_by_broker, bad_signature;
    uint64_t sequences[64];
    int last_code;
    char last_error[256];
} receipts;

static void
count_receipt(const spbe_receipt *r, void *arg)
{
    receipts *rs = arg;
    if (rs->n < 64)
        rs->sequences[rs->n] = r->sequence;
    rs->n++;
    rs->ok += r->code == SPBE_OK;
    rs->signed_by_broker += r->signed_by_broker;
    rs->bad_signature += r->code == SPBE_BAD_SIGNATURE;
    rs->last_code = r->code;
    snprintf(rs->last_error, sizeof rs->last_error, "%s", r->error);
}

/* Batch signatures: one signature over a batch's Merkle root; the broker stores each
 * message as sent, subscribers verify each on its own, receipts of one commit come
 * batch-signed too. A proof that does not lead to the signed root is refused. */
static void
test_batch_signed_messages_are_stored_and_verified_each(void **state)
{
    fixture *f = *state;
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    spbe_client *sub = harness_connect(&f->broker, f->reader, 0);
    collected col = {.client = sub};
    spbe_set_delivery_handler(sub, collect, &col);
    assert_int_equal(spbe_subscribe(sub, "ikn.batch.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    receipts rs = {0};
    spbe_set_receipt_handler(pub, count_receipt, &rs);

    enum { N = 40 };
    spbe_batch_item items[N];
    char payloads[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(payloads[i], sizeof payloads[i], "b%d", i);
        items[i] = (spbe_batch_item){"ikn.batch.asn", payloads[i], strlen(payloads[i]), NULL};
    }
    uint8_t *out[N];
    size_t lens[N];
    assert_int_equal(spbe_sign_batch(pub, items, N, out, lens), SPBE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(spbe_publish_signed(pub, out[i], lens[i], NULL), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    assert_int_equal(rs.ok, N);
    assert_int_equal(rs.signed_by_broker, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(rs.sequences[i], (uint64_t)i + 1);
    wait_for(sub, &col, N);
    assert_int_equal(col.n, N);
    assert_int_equal(col.verified, N);
    assert_string_equal(col.payloads[N - 1], "b39");
    assert_int_equal(col.raw_len, lens[N - 1]); /* stored and delivered as sent */
    assert_memory_equal(col.raw, out[N - 1], lens[N - 1]);

    /* message 1's proof moved to index 2: no longer leads to the signed root */
    Spbe__V1__SignedMessage *sm = spbe__v1__signed_message__unpack(NULL, lens[1], out[1]);
    assert_non_null(sm);
    assert_non_null(sm->batch);
    sm->batch->index = 2;
    size_t len = spbe__v1__signed_message__get_packed_size(sm);
    uint8_t *forged = malloc(len);
    spbe__v1__signed_message__pack(sm, forged);
    assert_int_equal(spbe_publish_signed(pub, forged, len, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    assert_int_equal(rs.last_code, SPBE_BAD_SIGNATURE);
    assert_string_equal(rs.last_error, "signature does not verify with the sender's key");
    /* a proof of the wrong shape is a bad request, with the reason */
    sm->batch->index = 1;
    sm->batch->size = 0;
    len = spbe__v1__signed_message__get_packed_size(sm);
    forged = realloc(forged, len);
    spbe__v1__signed_message__pack(sm, forged);
    assert_int_equal(spbe_publish_signed(pub, forged, len, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    assert_int_equal(rs.last_code, SPBE_BAD_REQUEST);
    assert_string_equal(rs.last_error, "batch size must be 1 to 1048576");
    assert_int_equal(rs.ok, N);
    spbe__v1__signed_message__free_unpacked(sm, NULL);
    free(forged);
    for (int i = 0; i < N; i++)
        free(out[i]);
    /* nothing more was stored */
    collected col2 = {0};
    spbe_set_delivery_handler(sub, collect, &col2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(spbe_dispatch(sub, 100, NULL), SPBE_OK);
    assert_int_equal(col2.n, 0);
    spbe_close(&pub);
    spbe_close(&sub);
}

typedef struct gathered {
    int n;
    uint64_t tokens[512], sequences[512];
    int codes[512];
} gathered;

static void
gather_receipt(const spbe_receipt *r, void *arg)
{
    gathered *g = arg;
    if (g->n < 512) {
        g->tokens[g->n] = r->token;
        g->sequences[g->n] = r->sequence;
        g->codes[g->n] = r->code;
    }
    g->n++;
}

/* Publishes gathered into frames of many (spbe_options.publish_batch): each still gets
 * a receipt of its own, one refused in the middle is refused alone, the others are
 * stored in the order they were made; a publish waits for the next dispatch to leave. */
static void
test_publishes_gathered_in_one_frame(void **state)
{
    fixture *f = *state;
    spbe_options o = {.endpoint = f->broker.endpoint, .publish_batch = 64};
    spbe_client *pub;
    assert_int_equal(spbe_connect(f->publisher, &o, &pub), SPBE_OK);
    gathered g = {0};
    spbe_set_receipt_handler(pub, gather_receipt, &g);
    enum { N = 300, REFUSED = 100 };
    uint64_t tokens[N];
    for (int i = 0; i < N; i++) {
        char payload[16];
        int len = snprintf(payload, sizeof payload, "g%d", i);
        const char *topic = i == REFUSED ? "lain.topik" : "ikn.gather.asn"; /* no right */
        assert_int_equal(spbe_publish_async(pub, topic, payload, (size_t)len, NULL, &tokens[i]),
                         SPBE_OK);
        if (i == 0)
            assert_int_equal(spbe_next_timeout_ms(pub), 0); /* it waits to leave */
    }
    assert_int_equal(spbe_flush(pub, 10000), SPBE_OK);
    assert_int_equal(g.n, N);
    uint64_t next = 1;
    for (int i = 0; i < N; i++) {
        int k = 0;
        while (k < N && g.tokens[k] != tokens[i])
            k++;
        assert_true(k < N);
        if (i == REFUSED) {
            assert_int_equal(g.codes[k], SPBE_FORBIDDEN);
            continue;
        }
        assert_int_equal(g.codes[k], SPBE_OK);
        assert_int_equal(g.sequences[k], next++); /* stored in the order made */
    }
    assert_int_equal(harness_stored(&f->broker, "ikn.gather.asn"), N - 1);
    /* a synchronous publish in between still answers at once */
    spbe_receipt r;
    assert_int_equal(spbe_publish(pub, "ikn.gather.asn", "last", 4, NULL, &r), SPBE_OK);
    assert_int_equal(r.sequence, (uint64_t)N);
    spbe_close(&pub);
}

static void
publish_n(fixture *f, const char *topic, int n)
{
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    assert_non_null(pub);
    for (int i = 1; i <= n; i++) {
        char payload[32];
        int len = snprintf(payload, sizeof payload, "m%d", i);
        assert_int_equal(spbe_publish_async(pub, topic, payload, (size_t)len, NULL, NULL), SPBE_OK);
    }
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    spbe_close(&pub);
}

static void
test_replay_from_first_and_from_a_sequence(void **state)
{
    fixture *f = *state;
    publish_n(f, "ikn.replay.asn", 10);
    spbe_client *sub = harness_connect(&f->broker, f->reader, 0);
    collected all = {0};
    spbe_set_delivery_handler(sub, collect, &all);
    assert_int_equal(spbe_subscribe(sub, "ikn.replay.asn", SPBE_START_FIRST, 0, NULL), SPBE_OK);
    wait_for(sub, &all, 10);
    assert_int_equal(all.n, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(all.sequences[i], (uint64_t)i + 1);
        char want[8];
        snprintf(want, sizeof want, "m%d", i + 1);
        assert_string_equal(all.payloads[i], want);
    }
    spbe_close(&sub);

    sub = harness_connect(&f->broker, f->reader, 0);
    collected from5 = {0};
    spbe_set_delivery_handler(sub, collect, &from5);
    assert_int_equal(spbe_subscribe(sub, "ikn.replay.asn", SPBE_START_SEQUENCE, 5, NULL), SPBE_OK);
    wait_for(sub, &from5, 6);
    assert_int_equal(from5.n, 6);
    assert_int_equal(from5.sequences[0], 5);
    assert_int_equal(from5.sequences[5], 10);
    /* replay joins live without a gap */
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    assert_int_equal(spbe_publish(pub, "ikn.replay.asn", "m11", 3, NULL, NULL), SPBE_OK);
    wait_for(sub, &from5, 7);
    assert_int_equal(from5.n, 7);
    assert_int_equal(from5.sequences[6], 11);
    spbe_close(&pub);
    spbe_close(&sub);

    /* the CLI, as an operator uses it */
    char out[8192], err[1024];
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "$SPBE sub ikn.replay.asn --from 8 --count 4 --json --key %s", f->reader);
    assert_int_equal(rc, 0);
    assert_int_equal(harness_lines(out), 4);
    assert_non_null(strstr(out, "\"sequence\":8"));
    assert_non_null(strstr(out, "\"sequence\":11"));
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "$SPBE sub ikn.replay.asn --from first --idle-ms 700 --key %s", f->reader);
    assert_int_equal(rc, 0);
    assert_int_equal(harness_lines(out), 11);
}

static void
test_wildcards_match_one_token_and_the_rest(void **state)
{
    fixture *f = *state;
    spbe_client *sub = harness_connect(&f->broker, f->reader, 0);
    spbe_client *sub2 = harness_connect(&f->broker, f->reader, 0);
    collected star = {0}, rest = {0};
    spbe_set_delivery_handler(sub, collect, &star);
    spbe_set_delivery_handler(sub2, collect, &rest);
    assert_int_equal(spbe_subscribe(sub, "ikn.wild.*.asn", SPBE_START_NEW, 0, NULL), SPBE_OK);
    assert_int_equal(spbe_subscribe(sub2, "ikn.wild.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    const char *topics[] = {"ikn.wild.a.asn", "ikn.wild.b.asn", "ikn.wild.a.unit",
                            "ikn.wild.a.asn.x", "ikn.other.a.asn"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(spbe_publish(pub, topics[i], "x", 1, NULL, NULL), SPBE_OK);
    wait_for(sub2, &rest, 4);
    wait_for(sub, &star, 2);
    assert_int_equal(spbe_dispatch(sub, 200, NULL), SPBE_OK);
    assert_int_equal(star.n, 2);
    assert_string_equal(star.topics[0], "ikn.wild.a.asn");
    assert_string_equal(star.topics[1], "ikn.wild.b.asn");
    assert_int_equal(rest.n, 4);
    assert_string_equal(rest.topics[3], "ikn.wild.a.asn.x");
    spbe_close(&pub);
    spbe_close(&sub);
    spbe_close(&sub2);
}

static void
test_two_subscribers_on_overlapping_patterns_each_get_theirs_in_order(void **state)
{
    fixture *f = *state;
    spbe_client *wide = harness_connect(&f->broker, f->reader, 0);
    spbe_client *narrow = harness_connect(&f->broker, f->narrow, 0);
    collected w = {0}, n = {0};
    spbe_set_delivery_handler(wide, collect, &w);
    spbe_set_delivery_handler(narrow, collect, &n);
    assert_int_equal(spbe_subscribe(wide, "ikn.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    assert_int_equal(spbe_subscribe(narrow, "ikn.relokasi.*", SPBE_START_NEW, 0, NULL), SPBE_OK);
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    for (int i = 0; i < 20; i++) {
        const char *topic = i % 2 ? "ikn.relokasi.tunjangan" : "ikn.hunian.alokasi";
        char payload[16];
        int len = snprintf(payload, sizeof payload, "%d", i);
        assert_int_equal(spbe_publish_async(pub, topic, payload, (size_t)len, NULL, NULL), SPBE_OK);
    }
    assert_int_equal(spbe_flush(pub, 5000), SPBE_OK);
    wait_for(wide, &w, 20);
    wait_for(narrow, &n, 10);
    assert_int_equal(w.n, 20);
    assert_int_equal(n.n, 10);
    uint64_t last = 0;
    for (int i = 0; i < n.n; i++) {
        assert_string_equal(n.topics[i], "ikn.relokasi.tunjangan");
        assert_true(n.sequences[i] > last);
        last = n.sequences[i];
    }
    spbe_close(&pub);
    spbe_close(&wide);
    spbe_close(&narrow);
}

static void
test_inspection_online_and_offline_agree(void **state)
{
    fixture *f = *state;
    publish_n(f, "ikn.inspect.asn", 3);
    char online[8192], offline[8192], err[1024];
    assert_int_equal(harness_run(online, sizeof online, err, sizeof err,
                                 "$SPBE topic info ikn.inspect.asn --json --key %s",
                                 f->broker.admin_key),
                     0);
    assert_int_equal(harness_run(offline, sizeof offline, err, sizeof err,
                                 "$SPBE topic info ikn.inspect.asn --json --data %s",
                                 f->broker.data),
                     0);
    assert_string_equal(online, offline);
    assert_non_null(strstr(online, "\"messages\":3"));
    assert_int_equal(harness_run(online, sizeof online, err, sizeof err,
                                 "$SPBE msg get ikn.inspect.asn 2 --json --key %s", f->reader),
                     0);
    assert_int_equal(harness_run(offline, sizeof offline, err, sizeof err,
                                 "$SPBE msg get ikn.inspect.asn 2 --json --data %s",
                                 f->broker.data),
                     0);
    assert_string_equal(online, offline);
    assert_non_null(strstr(online, "\"signature\":\"valid\""));
    assert_non_null(strstr(online, "\"payload\":\"m2\""));
    assert_int_equal(harness_run(online, sizeof online, err, sizeof err,
                                 "$SPBE msg get ikn.inspect.asn 99 --data %s", f->broker.data),
                     1);
    assert_non_null(strstr(err, "NOT_FOUND"));
    assert_int_equal(harness_run(online, sizeof online, err, sizeof err,
                                 "$SPBE member ls --data %s", f->broker.data),
                     0);
    assert_non_null(strstr(online, "oikn/hunian"));
    assert_int_equal(
        harness_run(online, sizeof online, err, sizeof err, "$SPBE topic ls --key %s", f->narrow),
        0);
    assert_null(strstr(online, "ikn.inspect.asn")); /* only the topics it may read */
    assert_int_equal(harness_run(offline, sizeof offline, err, sizeof err,
                                 "SPBE_DATA=%s $SPBE topic info ikn.inspect.asn --json --offline",
                                 f->broker.data),
                     0);
    assert_non_null(strstr(offline, "\"messages\":3"));
    assert_int_equal(harness_run(NULL, 0, err, sizeof err, "$SPBE topic"), 2);
    assert_int_equal(harness_run(online, sizeof online, err, sizeof err, "$SPBE pub --help"), 0);
}

/*
 * A subscriber that stops reading: the broker must neither block the publisher nor drop
 * messages. A raw socket with a receive high-water mark of 10 fills the broker's send
 * queue for it; the rest waits in the store and arrives, in order, once it reads again.
 */
static void
test_slow_subscriber_is_caught_up_from_the_store_without_loss(void **state)
{
    fixture *f = *state;
    void *ctx = zmq_ctx_new();
    void *s = harness_raw_connect(&f->broker, ctx, f->reader, 10);
    assert_non_null(s);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);
    Spbe__V1__Subscribe sub = SPBE__V1__SUBSCRIBE__INIT;
    sub.pattern = "ikn.slow.>";
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 2;
    cmd.body_case = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
    cmd.subscribe = &sub;
    uint8_t buf[64];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    zmq_send(s, buf, n, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);

    /* far more than the broker's send high-water mark (20000) while nobody reads */
    const int total = 40000;
    spbe_client *pub = harness_connect(&f->broker, f->publisher, 0);
    char payload[200];
    memset(payload, 'p', sizeof payload);
    Spbe__V1__Ping keep = SPBE__V1__PING__INIT;
    Spbe__V1__Command keepalive = SPBE__V1__COMMAND__INIT;
    keepalive.body_case = SPBE__V1__COMMAND__BODY_PING;
    keepalive.ping = &keep;
    uint8_t ping_buf[16];
    size_t ping_len = spbe__v1__command__pack(&keepalive, ping_buf);
    for (int i = 0; i < total; i++) {
        assert_int_equal(
            spbe_publish_async(pub, "ikn.slow.asn", payload, sizeof payload, NULL, NULL), SPBE_OK);
        if (spbe_in_flight(pub) >= 1000)
            assert_int_equal(spbe_dispatch(pub, 1000, NULL), SPBE_OK);
        if (i % 2000 == 0) /* the reader stays alive, as a client must, without reading */
            zmq_send(s, ping_buf, ping_len, ZMQ_DONTWAIT);
    }
    assert_int_equal(spbe_flush(pub, 30000), SPBE_OK); /* the publisher was never held up */
    spbe_close(&pub);

    uint64_t expect = 1;
    int timeout = 5000;
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    while (expect <= (uint64_t)total) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, s, 0) >= 0);
        Spbe__V1__BrokerFrame *fr =
            spbe__v1__broker_frame__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        while (more) {
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s, 0);
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        assert_non_null(fr);
        if (fr->body_case == SPBE__V1__BROKER_FRAME__BODY_EVENT &&
            fr->event->body_case == SPBE__V1__EVENT__BODY_DELIVERY) {
            assert_int_equal(fr->event->delivery->sequence, expect); /* in order, no gap */
            expect++;
        }
        spbe__v1__broker_frame__free_unpacked(fr, NULL);
        if (expect % 5000 == 0) { /* heartbeat, as a client must */
            Spbe__V1__Ping ping = SPBE__V1__PING__INIT;
            Spbe__V1__Command pc = SPBE__V1__COMMAND__INIT;
            pc.body_case = SPBE__V1__COMMAND__BODY_PING;
            pc.ping = &ping;
            n = spbe__v1__command__pack(&pc, buf);
            zmq_send(s, buf, n, 0);
        }
    }
    assert_int_equal(expect, (uint64_t)total + 1);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_delivers_the_senders_exact_signed_bytes),
        cmocka_unit_test(test_batch_signed_messages_are_stored_and_verified_each),
        cmocka_unit_test(test_publishes_gathered_in_one_frame),
        cmocka_unit_test(test_replay_from_first_and_from_a_sequence),
        cmocka_unit_test(test_wildcards_match_one_token_and_the_rest),
        cmocka_unit_test(test_two_subscribers_on_overlapping_patterns_each_get_theirs_in_order),
        cmocka_unit_test(test_inspection_online_and_offline_agree),
        cmocka_unit_test(test_slow_subscriber_is_caught_up_from_the_store_without_loss),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
