/*
 * test_errors.c - one test per error code of the foundation: each asserts the code,
 * that nothing was stored, and that the broker still serves the next good request.
 */
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
#include "identity.h"
#include "wire.h"

typedef struct fixture {
    test_broker broker;
    char member[400], other[400], victim[400];
} fixture;

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || wire_init() != SPBE_OK || harness_broker_start(&f->broker, NULL) != 0)
        return -1;
    if (harness_member(&f->broker, "bkn/siasn", "err.>", "err.>", NULL, f->member) ||
        harness_member(&f->broker, "dukcapil/ikd", "err.ikd.>", NULL, NULL, f->other) ||
        harness_member(&f->broker, "oikn/hunian", "err.>", "err.>", NULL, f->victim))
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
    return rc == 0 ? 0 : -1;
}

/* The next good request is served: a publish by another member gets OK. */
static void
assert_still_serving(fixture *f)
{
    spbe_client *c = harness_connect(&f->broker, f->member, 0);
    assert_non_null(c);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "err.good", "ok", 2, NULL, &r), SPBE_OK);
    assert_true(r.signed_by_broker);
    spbe_close(&c);
}

/* Publishes raw signed bytes through a session and returns the receipt's code. */
static int
publish_raw(spbe_client *c, const uint8_t *bytes, size_t len, spbe_receipt *out)
{
    int code = -1;
    spbe_receipt local;
    if (!out)
        out = &local;
    memset(out, 0, sizeof *out);
    void handler(const spbe_receipt *r, void *arg);
    spbe_set_receipt_handler(c, handler, out);
    if (spbe_publish_signed(c, bytes, len, NULL) != SPBE_OK)
        return -1;
    if (spbe_flush(c, 5000) != SPBE_OK)
        return -2;
    code = out->code;
    return code;
}

void
handler(const spbe_receipt *r, void *arg)
{
    *(spbe_receipt *)arg = *r;
}

static void
test_publish_rejects_flipped_byte_with_bad_signature(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->member, 0);
    uint8_t *bytes;
    size_t len;
    assert_int_equal(spbe_sign(c, "err.badsig", "payload-that-matters", 21, NULL, &bytes, &len),
                     SPBE_OK);
    /* a byte of the payload, inside the signed message: still decodes, no longer verifies */
    uint8_t *hit = memmem(bytes, len, "payload-that-matters", 21);
    assert_non_null(hit);
    hit[3] ^= 0x01;
    spbe_receipt r;
    assert_int_equal(publish_raw(c, bytes, len, &r), SPBE_BAD_SIGNATURE);
    assert_true(r.signed_by_broker);
    hit[3] ^= 0x01;
    bytes[len - 1] ^= 0x80; /* a byte of the signature itself */
    assert_int_equal(publish_raw(c, bytes, len, NULL), SPBE_BAD_SIGNATURE);
    free(bytes);
    spbe_close(&c);
    assert_int_equal(harness_stored(&f->broker, "err.badsig"), 0);
    assert_still_serving(f);
}

static void
test_unknown_key_is_refused_at_connect_and_unknown_sender_at_publish(void **state)
{
    fixture *f = *state;
    /* a key the registry has never seen */
    identity stranger;
    identity_generate("asing/app", &stranger);
    memcpy(stranger.broker_key, stranger.public_key, 0);
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/stranger.key", f->broker.dir);
    identity broker_pub;
    assert_int_equal(identity_load(f->broker.broker_pub, &broker_pub, err, sizeof err), SPBE_OK);
    memcpy(stranger.broker_key, broker_pub.public_key, 32);
    stranger.has_broker_key = 1;
    assert_int_equal(identity_save(&stranger, path, 1, err, sizeof err), SPBE_OK);
    spbe_options o = {.endpoint = f->broker.endpoint, .timeout_ms = 3000};
    spbe_client *c;
    assert_int_equal(spbe_connect(path, &o, &c), SPBE_UNKNOWN_SENDER);
    spbe_close(&c);
    char out[1024];
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "$SPBE pub err.x hi --key %s", path), 1);
    assert_non_null(strstr(err, "UNKNOWN_SENDER"));

    /* a registered session relaying a message signed in the name of an unknown member */
    c = harness_connect(&f->broker, f->member, 0);
    uint8_t id[16] = {1};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = 16;
    m.topic = "err.unknown";
    m.sender = "asing/app";
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&m, stranger.secret_key, &bytes, &len), SPBE_OK);
    assert_int_equal(publish_raw(c, bytes, len, NULL), SPBE_UNKNOWN_SENDER);
    free(bytes);
    spbe_close(&c);
    assert_int_equal(harness_stored(&f->broker, "err.unknown"), 0);
    assert_still_serving(f);
}

static void
test_revocation_takes_effect_on_open_sessions_and_new_ones(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->victim, 0);
    assert_non_null(c);
    assert_int_equal(spbe_publish(c, "err.revoke", "before", 6, NULL, NULL), SPBE_OK);
    char out[2048], err[1024];
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "$SPBE member revoke oikn/hunian --reason 'key leaked' --key %s",
                                 f->broker.admin_key),
                     0);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "err.revoke", "after", 5, NULL, &r), SPBE_REVOKED);
    spbe_close(&c);
    spbe_options o = {.endpoint = f->broker.endpoint};
    assert_int_equal(spbe_connect(f->victim, &o, &c), SPBE_REVOKED);
    spbe_close(&c);
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "$SPBE pub err.revoke x --key %s", f->victim),
        1);
    assert_non_null(strstr(err, "REVOKED"));
    assert_int_equal(harness_stored(&f->broker, "err.revoke"), 1);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "$SPBE member show oikn/hunian --data %s", f->broker.data),
                     0);
    assert_non_null(strstr(out, "revoked (key leaked)"));
    assert_still_serving(f);
}

static void
test_forbidden_topic_subscription_and_registry_change(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->other, 0);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "err.forbidden", "x", 1, NULL, &r), SPBE_FORBIDDEN);
    assert_true(r.signed_by_broker);
    assert_int_equal(spbe_subscribe(c, "err.>", SPBE_START_NEW, 0, NULL), SPBE_FORBIDDEN);
    spbe_close(&c);
    c = harness_connect(&f->broker, f->member, 0);
    assert_int_equal(spbe_subscribe(c, ">", SPBE_START_NEW, 0, NULL), SPBE_FORBIDDEN);
    /* a member may not sign in another member's name, even with a valid signature */
    identity other;
    char err[256], out[1024];
    assert_int_equal(identity_load(f->other, &other, err, sizeof err), SPBE_OK);
    uint8_t id[16] = {2};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = 16;
    m.topic = "err.ikd.check";
    m.sender = other.member;
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&m, other.secret_key, &bytes, &len), SPBE_OK);
    assert_int_equal(publish_raw(c, bytes, len, NULL), SPBE_FORBIDDEN);
    free(bytes);
    spbe_close(&c);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "$SPBE member revoke dukcapil/ikd --key %s", f->member),
                     1);
    assert_non_null(strstr(err, "FORBIDDEN"));
    assert_int_equal(harness_stored(&f->broker, "err.forbidden"), 0);
    assert_int_equal(harness_stored(&f->broker, "err.ikd.check"), 0);
    assert_still_serving(f);
}

static void
test_invalid_topic_in_message_and_pattern(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->member, 0);
    identity me;
    char err[256];
    assert_int_equal(identity_load(f->member, &me, err, sizeof err), SPBE_OK);
    const char *bad[] = {"err..double", "Err.upper", "err.*", "err.sp ace", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t id[16] = {3, (uint8_t)i};
        Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
        m.id.data = id;
        m.id.len = 16;
        m.topic = (char *)bad[i];
        m.sender = me.member;
        uint8_t *bytes;
        size_t len;
        assert_int_equal(wire_message_sign(&m, me.secret_key, &bytes, &len), SPBE_OK);
        assert_int_equal(publish_raw(c, bytes, len, NULL), SPBE_INVALID_TOPIC);
        free(bytes);
    }
    assert_int_equal(spbe_subscribe(c, "err.>.x", SPBE_START_NEW, 0, NULL), SPBE_INVALID_TOPIC);
    spbe_close(&c);
    assert_still_serving(f);
}

static void
test_too_large_message_is_refused(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->member, 0);
    size_t n = (1 << 20) + 1;
    uint8_t *big = calloc(1, n);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "err.large", big, n, NULL, &r), SPBE_TOO_LARGE);
    assert_true(r.signed_by_broker);
    /* just under the limit passes (envelope overhead included) */
    assert_int_equal(spbe_publish(c, "err.large", big, n - 1024, NULL, &r), SPBE_OK);
    free(big);
    spbe_close(&c);
    assert_int_equal(harness_stored(&f->broker, "err.large"), 1);
    assert_still_serving(f);
}

static void
test_duplicate_id_is_stored_once_and_answers_the_original_sequence(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->member, 0);
    uint8_t id[16] = {0xd, 0x0, 0x0, 0xb};
    spbe_message_options mo = {.id = id};
    spbe_receipt first, again;
    assert_int_equal(spbe_publish(c, "err.dup", "a", 1, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_publish(c, "err.dup", "b", 1, &mo, &first), SPBE_OK);
    assert_int_equal(spbe_publish(c, "err.dup", "b", 1, &mo, &again), SPBE_DUPLICATE);
    assert_int_equal(again.sequence, first.sequence);
    assert_int_equal(again.accepted_ns, first.accepted_ns);
    assert_true(again.signed_by_broker);
    /* the same id from another member is its own message */
    spbe_client *v = harness_connect(&f->broker, f->member, 0);
    spbe_close(&v);
    spbe_close(&c);
    char out[1024], err[1024];
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err,
                    "$SPBE pub err.dup b --id 0d00000b000000000000000000000000 --key %s",
                    f->member),
        1);
    assert_non_null(strstr(err, "DUPLICATE"));
    assert_int_equal(harness_stored(&f->broker, "err.dup"), 2);
    assert_still_serving(f);
}

static void
test_bad_request_for_garbage_frame_count_and_truncation(void **state)
{
    fixture *f = *state;
    void *ctx = zmq_ctx_new();
    void *s = harness_raw_connect(&f->broker, ctx, f->member, 0);
    uint64_t rid;
    assert_int_equal(harness_raw_reply(s, &rid), SPBE_OK); /* welcome */

    /* garbage control frame */
    const char garbage[] = "\xff\xff\xff\xff garbage";
    zmq_send(s, garbage, sizeof garbage, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_BAD_REQUEST);

    /* a publish command with a good body, but four frames */
    Spbe__V1__Publish p = SPBE__V1__PUBLISH__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 7;
    cmd.body_case = SPBE__V1__COMMAND__BODY_PUBLISH;
    cmd.publish = &p;
    uint8_t cbuf[64];
    size_t clen = spbe__v1__command__pack(&cmd, cbuf);
    identity me;
    char err[256];
    assert_int_equal(identity_load(f->member, &me, err, sizeof err), SPBE_OK);
    uint8_t id[16] = {9};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = 16;
    m.topic = "err.frames";
    m.sender = me.member;
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&m, me.secret_key, &bytes, &len), SPBE_OK);
    zmq_send(s, cbuf, clen, ZMQ_SNDMORE);
    zmq_send(s, bytes, len, ZMQ_SNDMORE);
    zmq_send(s, "x", 1, ZMQ_SNDMORE);
    zmq_send(s, "y", 1, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_BAD_REQUEST);

    /* publish without a body */
    zmq_send(s, cbuf, clen, 0);
    assert_int_equal(harness_raw_reply(s, &rid), SPBE_BAD_REQUEST);
    assert_int_equal(rid, 7);

    /* truncated command protobuf: a command with a long string cut short */
    Spbe__V1__Subscribe sub = SPBE__V1__SUBSCRIBE__INIT;
    sub.pattern = "err.truncated.pattern.that.is.long";
    Spbe__V1__Command sc = SPBE__V1__COMMAND__INIT;
    sc.request_id = 8;
    sc.body_case = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
    sc.subscribe = &sub;
    uint8_t sbuf[128];
    size_t slen = spbe__v1__command__pack(&sc, sbuf);
    zmq_send(s, sbuf, slen - 10, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_BAD_REQUEST);

    /* a body frame on a command that takes none */
    Spbe__V1__Ping ping = SPBE__V1__PING__INIT;
    Spbe__V1__Command pc = SPBE__V1__COMMAND__INIT;
    pc.request_id = 9;
    pc.body_case = SPBE__V1__COMMAND__BODY_PING;
    pc.ping = &ping;
    uint8_t pbuf[32];
    size_t plen = spbe__v1__command__pack(&pc, pbuf);
    zmq_send(s, pbuf, plen, ZMQ_SNDMORE);
    zmq_send(s, bytes, len, 0);
    assert_int_equal(harness_raw_reply(s, &rid), SPBE_BAD_REQUEST);
    assert_int_equal(rid, 9);

    /* truncated signed message in the body */
    zmq_send(s, cbuf, clen, ZMQ_SNDMORE);
    zmq_send(s, bytes, len / 2, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_BAD_REQUEST);

    /* and after all that, the same connection still publishes */
    zmq_send(s, cbuf, clen, ZMQ_SNDMORE);
    zmq_send(s, bytes, len, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);
    free(bytes);
    zmq_close(s);
    zmq_ctx_term(ctx);
    assert_int_equal(harness_stored(&f->broker, "err.frames"), 1);
    assert_still_serving(f);
}

static void
test_command_before_hello_is_refused(void **state)
{
    fixture *f = *state;
    void *ctx = zmq_ctx_new();
    void *s = harness_raw_connect(&f->broker, ctx, f->member, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);
    zmq_close(s);
    /* a second connection that skips hello: raw_connect always says hello, so send a
     * hello for a member whose key this connection does not hold */
    s = harness_raw_connect(&f->broker, ctx, f->member, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_OK);
    Spbe__V1__Hello hello = SPBE__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.member = "dukcapil/ikd";
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 2;
    cmd.body_case = SPBE__V1__COMMAND__BODY_HELLO;
    cmd.hello = &hello;
    uint8_t buf[128];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    zmq_send(s, buf, n, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_FORBIDDEN);
    hello.member = "bkn/siasn";
    hello.protocol_version = 99;
    n = spbe__v1__command__pack(&cmd, buf);
    zmq_send(s, buf, n, 0);
    assert_int_equal(harness_raw_reply(s, NULL), SPBE_BAD_REQUEST);
    zmq_close(s);
    zmq_ctx_term(ctx);
    assert_still_serving(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_rejects_flipped_byte_with_bad_signature),
        cmocka_unit_test(test_unknown_key_is_refused_at_connect_and_unknown_sender_at_publish),
        cmocka_unit_test(test_forbidden_topic_subscription_and_registry_change),
        cmocka_unit_test(test_invalid_topic_in_message_and_pattern),
        cmocka_unit_test(test_too_large_message_is_refused),
        cmocka_unit_test(test_duplicate_id_is_stored_once_and_answers_the_original_sequence),
        cmocka_unit_test(test_bad_request_for_garbage_frame_count_and_truncation),
        cmocka_unit_test(test_command_before_hello_is_refused),
        cmocka_unit_test(test_revocation_takes_effect_on_open_sessions_and_new_ones),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
