/*
 * test_badbroker.c - libspbe against a broker that misbehaves. A fake broker inside the
 * test (a CURVE ROUTER on loopback, run by a thread with a script) answers the real
 * library with what a real broker would not send: refusals, welcomes with the wrong key,
 * frames that do not decode, replies without their body, goodbyes of every kind, stale
 * or broken deliveries, service answers that do not add up, and silence. For each the
 * library must give the documented code and a readable reason, reconnect when it should
 * and stay closed when it must, lose nothing it promised to resend, and never hang.
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
#include <cmocka.h>
#include <zmq.h>

#include "harness.h"
#include "identity.h"
#include "wire.h"

#define WAIT_MS 4000 /* the longest a script waits for the client */

typedef struct fake fake;
typedef void (*script_fn)(fake *f);

struct fake {
    void *ctx, *sock;
    int port;
    char endpoint[64];
    char dir[64];
    char key[128];   /* the member's identity file */
    identity broker; /* the fake broker's keys (its public key is the broker key) */
    identity member;
    char broker_hex[2 * WIRE_KEY_BYTES + 1];
    uint8_t routing[256];
    size_t routing_len;
    pthread_t thread;
    script_fn script;
    uint32_t heartbeat_ms; /* what fake_hello's welcome announces */
    /* what the script saw, read by the test after fake_finish */
    int hellos, pings, seen[64];
    uint64_t last_rid;
    char failed[256]; /* the script's own failure, "" if none */
    /* scratch for scripts */
    uint64_t u[8];
    char s[4][256];
    int go; /* set by the test (atomically) when the script may go on */
};

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void
script_fail(fake *f, const char *fmt, ...)
{
    if (f->failed[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->failed, sizeof f->failed, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fake broker: %s\n", f->failed); /* at once, should the test hang */
}

/* The next command within ms (NULL on timeout); *body gets its body frame if any. Pings
 * are answered (request 0) and counted, not returned, unless want_pings. */
static Spbe__V1__Command *
fake_recv_any(fake *f, int ms, uint8_t **body, size_t *body_len, int want_pings)
{
    if (body) {
        *body = NULL;
        *body_len = 0;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long spent = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (spent >= ms)
            return NULL;
        zmq_pollitem_t item = {f->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, ms - spent) <= 0)
            continue;
        zmq_msg_t parts[4];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, f->sock, 0) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 4)
                parts[n++] = m;
            else
                zmq_msg_close(&m);
        }
        Spbe__V1__Command *cmd = NULL;
        if (n >= 2) {
            f->routing_len = zmq_msg_size(&parts[0]);
            if (f->routing_len > sizeof f->routing)
                f->routing_len = sizeof f->routing;
            memcpy(f->routing, zmq_msg_data(&parts[0]), f->routing_len);
            cmd = spbe__v1__command__unpack(NULL, zmq_msg_size(&parts[1]), zmq_msg_data(&parts[1]));
            if (cmd && n >= 3 && body) {
                *body_len = zmq_msg_size(&parts[2]);
                *body = malloc(*body_len ? *body_len : 1);
                memcpy(*body, zmq_msg_data(&parts[2]), *body_len);
            }
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&parts[i]);
        if (!cmd)
            continue;
        if (cmd->body_case < 64)
            f->seen[cmd->body_case]++;
        f->last_rid = cmd->request_id;
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_HELLO)
            f->hellos++;
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_PING && !want_pings) {
            f->pings++;
            spbe__v1__command__free_unpacked(cmd, NULL);
            Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
            Spbe__V1__BrokerFrame fr = SPBE__V1__BROKER_FRAME__INIT;
            fr.body_case = SPBE__V1__BROKER_FRAME__BODY_REPLY;
            fr.reply = &r;
            uint8_t buf[64];
            size_t len = spbe__v1__broker_frame__pack(&fr, buf);
            zmq_send(f->sock, f->routing, f->routing_len, ZMQ_SNDMORE);
            zmq_send(f->sock, buf, len, 0);
            continue;
        }
        if (body && *body && cmd->body_case == SPBE__V1__COMMAND__BODY_BYE) {
            free(*body);
            *body = NULL;
        }
        return cmd;
    }
}

/* The next command, which must be of kind want (else the script fails); its request id,
 * or 0 when none came. The command itself into *out if out (caller frees). */
static uint64_t
fake_expect(fake *f, int want, Spbe__V1__Command **out, uint8_t **body, size_t *body_len)
{
    Spbe__V1__Command *cmd = fake_recv_any(f, WAIT_MS, body, body_len, 0);
    if (out)
        *out = NULL;
    if (!cmd) {
        script_fail(f, "no command %d from the client", want);
        return 0;
    }
    if ((int)cmd->body_case != want) {
        script_fail(f, "command %d from the client, wanted %d", (int)cmd->body_case, want);
        spbe__v1__command__free_unpacked(cmd, NULL);
        return 0;
    }
    uint64_t rid = cmd->request_id;
    if (out)
        *out = cmd;
    else
        spbe__v1__command__free_unpacked(cmd, NULL);
    return rid;
}

static void
fake_send_raw(fake *f, const void *frame, size_t len, const void *body, size_t body_len, int parts)
{
    zmq_send(f->sock, f->routing, f->routing_len, ZMQ_SNDMORE);
    zmq_send(f->sock, frame, len, parts > 1 ? ZMQ_SNDMORE : 0);
    for (int i = 1; i < parts; i++)
        zmq_send(f->sock, body, body_len, i + 1 < parts ? ZMQ_SNDMORE : 0);
}

static void
fake_send(fake *f, Spbe__V1__BrokerFrame *fr, const uint8_t *body, size_t body_len)
{
    size_t len = spbe__v1__broker_frame__get_packed_size(fr);
    uint8_t *buf = malloc(len ? len : 1);
    spbe__v1__broker_frame__pack(fr, buf);
    fake_send_raw(f, buf, len, body, body_len, body ? 2 : 1);
    free(buf);
}

static void
fake_send_reply(fake *f, Spbe__V1__Reply *r, const uint8_t *body, size_t body_len)
{
    Spbe__V1__BrokerFrame fr = SPBE__V1__BROKER_FRAME__INIT;
    fr.body_case = SPBE__V1__BROKER_FRAME__BODY_REPLY;
    fr.reply = r;
    fake_send(f, &fr, body, body_len);
}

/* A reply without a body. */
static void
fake_reply(fake *f, uint64_t rid, int code, const char *error)
{
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    r.code = (Spbe__V1__ErrorCode)code;
    r.error = (char *)(error ? error : "");
    fake_send_reply(f, &r, NULL, 0);
}

static void
fake_welcome(fake *f, uint64_t rid, const uint8_t *key, size_t key_len, uint32_t heartbeat_ms)
{
    Spbe__V1__Welcome w = SPBE__V1__WELCOME__INIT;
    w.protocol_version = 1;
    w.broker = "fake";
    w.broker_key.data = (uint8_t *)key;
    w.broker_key.len = key_len;
    w.member = f->member.member;
    w.heartbeat_ms = heartbeat_ms;
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    r.body_case = SPBE__V1__REPLY__BODY_WELCOME;
    r.welcome = &w;
    fake_send_reply(f, &r, NULL, 0);
}

/* Expects Hello and welcomes it with the right key. */
static void
fake_hello(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    if (rid)
        fake_welcome(f, rid, f->broker.public_key, WIRE_KEY_BYTES, f->heartbeat_ms);
}

static void
fake_event(fake *f, Spbe__V1__Event *ev, const uint8_t *body, size_t body_len)
{
    Spbe__V1__BrokerFrame fr = SPBE__V1__BROKER_FRAME__INIT;
    fr.body_case = SPBE__V1__BROKER_FRAME__BODY_EVENT;
    fr.event = ev;
    fake_send(f, &fr, body, body_len);
}

static void
fake_goodbye(fake *f, int code, const char *reason)
{
    Spbe__V1__Goodbye g = SPBE__V1__GOODBYE__INIT;
    g.code = (Spbe__V1__ErrorCode)code;
    g.reason = (char *)reason;
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_GOODBYE;
    ev.goodbye = &g;
    fake_event(f, &ev, NULL, 0);
}

static void
fake_subscribed(fake *f, uint64_t rid, uint64_t sub_id)
{
    Spbe__V1__Subscribed s = SPBE__V1__SUBSCRIBED__INIT;
    s.subscription_id = sub_id;
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    r.body_case = SPBE__V1__REPLY__BODY_SUBSCRIBED;
    r.subscribed = &s;
    fake_send_reply(f, &r, NULL, 0);
}

/* The reply carrying a receipt signed by the fake broker's key (hash_len lets it carry a
 * short hash) into *r; *sr holds the signed receipt (free sr->receipt.data). -1 if it
 * cannot be signed. */
static int
fake_receipt_reply(fake *f, uint64_t rid, int code, const char *topic, uint64_t sequence,
                   size_t hash_len, Spbe__V1__Reply *r, Spbe__V1__SignedReceipt *sr)
{
    uint8_t hash[WIRE_HASH_BYTES] = {7}, id[WIRE_ID_BYTES] = {9}; /* packed when signed */
    Spbe__V1__Receipt rc = SPBE__V1__RECEIPT__INIT;
    rc.code = (Spbe__V1__ErrorCode)code;
    rc.topic = (char *)topic;
    rc.sequence = sequence;
    rc.message_hash.data = hash;
    rc.message_hash.len = hash_len;
    rc.message_id.data = id;
    rc.message_id.len = sizeof id;
    rc.broker = "fake";
    if (wire_receipt_sign(&rc, f->broker.secret_key, sr) != SPBE_OK) {
        script_fail(f, "cannot sign a receipt");
        return -1;
    }
    spbe__v1__reply__init(r);
    r->request_id = rid;
    r->code = (Spbe__V1__ErrorCode)code;
    r->body_case = SPBE__V1__REPLY__BODY_RECEIPT;
    r->receipt = sr;
    return 0;
}

/* A receipt signed by the fake broker's key; hash_len lets it carry a short hash. */
static void
fake_receipt(fake *f, uint64_t rid, int code, const char *topic, uint64_t sequence, size_t hash_len)
{
    Spbe__V1__Reply r;
    Spbe__V1__SignedReceipt sr;
    if (fake_receipt_reply(f, rid, code, topic, sequence, hash_len, &r, &sr) != 0)
        return;
    fake_send_reply(f, &r, NULL, 0);
    free(sr.receipt.data);
}

/* A message signed by who into *out (malloc'ed). */
static void
sign_message(const identity *who, const char *topic, const char *payload, uint8_t **out,
             size_t *len)
{
    uint8_t id[WIRE_ID_BYTES];
    wire_random_id(id);
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = sizeof id;
    m.topic = (char *)topic;
    m.sender = (char *)who->member;
    m.created_ns = wire_now_ns();
    m.payload.data = (uint8_t *)payload;
    m.payload.len = payload ? strlen(payload) : 0;
    *out = NULL;
    wire_message_sign(&m, who->secret_key, out, len);
}

static void
fake_delivery(fake *f, uint64_t sub_id, const char *topic, uint64_t sequence, const uint8_t *body,
              size_t body_len)
{
    Spbe__V1__Delivery d = SPBE__V1__DELIVERY__INIT;
    d.subscription_id = sub_id;
    d.topic = (char *)topic;
    d.sequence = sequence;
    d.delivery_count = 1;
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_DELIVERY;
    ev.delivery = &d;
    fake_event(f, &ev, body, body_len);
}

static void
fake_request_event(fake *f, const char *service, uint64_t ref, const uint8_t *body, size_t len)
{
    Spbe__V1__RequestEvent re = SPBE__V1__REQUEST_EVENT__INIT;
    re.service = (char *)service;
    re.request_ref = ref;
    re.sequence = ref;
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_REQUEST;
    ev.request = &re;
    fake_event(f, &ev, body, len);
}

/* Waits until the client has been quiet for ms, counting what came meanwhile. */
static void
fake_drain(fake *f, int ms)
{
    Spbe__V1__Command *cmd;
    while ((cmd = fake_recv_any(f, ms, NULL, NULL, 0)) != NULL)
        spbe__v1__command__free_unpacked(cmd, NULL);
}

static void *
fake_main(void *arg)
{
    fake *f = arg;
    f->script(f);
    return NULL;
}

/* A fake broker with fresh keys on a free port and an identity for the client that knows
 * its key; curve 0 makes it speak without CURVE. The script runs in its own thread with
 * the parameters in f->u (set by the caller before). */
static void
fake_start_with(fake *f, script_fn script, int curve)
{
    uint64_t params[8]; /* the script's parameters, set before the start */
    memcpy(params, f->u, sizeof params);
    memset(f, 0, sizeof *f);
    memcpy(f->u, params, sizeof params);
    assert_int_equal(wire_init(), SPBE_OK);
    snprintf(f->dir, sizeof f->dir, "/tmp/spbe-badbroker-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(identity_generate("fake/broker", &f->broker), SPBE_OK);
    assert_int_equal(identity_generate("bad/client", &f->member), SPBE_OK);
    wire_hex_encode(f->broker.public_key, WIRE_KEY_BYTES, f->broker_hex);
    char err[256];
    snprintf(f->key, sizeof f->key, "%s/client.key", f->dir);
    assert_int_equal(identity_save(&f->member, f->key, 1, err, sizeof err), SPBE_OK);
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_non_null(f->sock);
    int one = 1, zero = 0;
    uint8_t secret[32];
    assert_int_equal(wire_curve_secret(f->broker.secret_key, secret), 0);
    if (curve) {
        assert_int_equal(zmq_setsockopt(f->sock, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
        assert_int_equal(zmq_setsockopt(f->sock, ZMQ_CURVE_SECRETKEY, secret, 32), 0);
    }
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero), 0);
    f->port = harness_free_port();
    assert_true(f->port > 0);
    snprintf(f->endpoint, sizeof f->endpoint, "tcp://127.0.0.1:%d", f->port);
    assert_int_equal(zmq_bind(f->sock, f->endpoint), 0);
    f->script = script;
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void
fake_start(fake *f, script_fn script)
{
    fake_start_with(f, script, 1);
}

/* Waits for the script to end; its own failure fails the test. */
static void
fake_finish(fake *f)
{
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    char path[160];
    snprintf(path, sizeof path, "%s/client.key", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/other.key", f->dir);
    unlink(path);
    rmdir(f->dir);
    if (f->failed[0])
        fail_msg("fake broker: %s", f->failed);
}

static spbe_options
opts(fake *f, int timeout_ms, int no_reconnect)
{
    spbe_options o = {.endpoint = f->endpoint,
                      .broker_key_hex = f->broker_hex,
                      .timeout_ms = timeout_ms,
                      .no_reconnect = no_reconnect};
    return o;
}

/* Connects to the fake; the connect must succeed. */
static spbe_client *
connect_ok(fake *f, int timeout_ms, int no_reconnect)
{
    spbe_options o = opts(f, timeout_ms, no_reconnect);
    spbe_client *c = NULL;
    int rc = spbe_connect(f->key, &o, &c);
    if (rc != SPBE_OK)
        fail_msg("connect: %s (%s)", spbe_error_name(rc), c ? spbe_last_error(c) : "");
    return c;
}

static void
assert_says(spbe_client *c, const char *says)
{
    if (!strstr(spbe_last_error(c), says))
        fail_msg("the reason '%s' does not say '%s'", spbe_last_error(c), says);
}

/* spbe_connect to the fake fails with code and a reason saying says. */
static void
connect_fails(fake *f, const spbe_options *o, int code, const char *says)
{
    spbe_client *c = NULL;
    int rc = spbe_connect(f->key, o, &c);
    if (rc != code)
        fail_msg("connect: %s (%s), wanted %s", spbe_error_name(rc), c ? spbe_last_error(c) : "",
                 spbe_error_name(code));
    assert_non_null(c);
    assert_says(c, says);
    assert_false(spbe_connected(c));
    spbe_close(&c);
}

/* Dispatches until the client's state is connected == want (or ms pass). */
static int
dispatch_until_connected(spbe_client *c, int want, int ms)
{
    for (int i = 0; i < ms / 50; i++) {
        if (!!spbe_connected(c) == want)
            return 1;
        spbe_dispatch(c, 50, NULL);
    }
    return !!spbe_connected(c) == want;
}

/* ------------------------------------------------------------ the handshake */

static void
script_hello_refused(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_UNAVAILABLE, "busy, come back later");
}

static void
script_hello_not_welcome(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    fake_subscribed(f, rid, 1); /* OK, but not a welcome */
}

static void
script_welcome_short_key(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    fake_welcome(f, rid, f->broker.public_key, 16, 0);
}

static void
script_welcome_other_key(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    identity other;
    identity_generate("other/broker", &other);
    fake_welcome(f, rid, other.public_key, WIRE_KEY_BYTES, 0);
}

static void
script_hello_goodbye(fake *f)
{
    fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    fake_goodbye(f, (int)f->u[0], "revoked by spbe/admin");
}

/* A welcome comes only after noise: bytes that are no BrokerFrame, an empty frame,
 * a reply to another request with an empty and an extra body part, and an event. */
static void
script_noise_then_welcome(fake *f)
{
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    fake_send_raw(f, garbage, sizeof garbage, "body", 4, 2); /* not a frame: dropped */
    Spbe__V1__BrokerFrame empty = SPBE__V1__BROKER_FRAME__INIT;
    fake_send(f, &empty, NULL, 0); /* neither reply nor event */
    Spbe__V1__Reply other = SPBE__V1__REPLY__INIT;
    other.request_id = rid + 1000;
    Spbe__V1__BrokerFrame fr = SPBE__V1__BROKER_FRAME__INIT;
    fr.body_case = SPBE__V1__BROKER_FRAME__BODY_REPLY;
    fr.reply = &other;
    uint8_t buf[64];
    size_t len = spbe__v1__broker_frame__pack(&fr, buf);
    fake_send_raw(f, buf, len, "", 0, 3); /* an empty body and another part */
    zmq_send(f->sock, f->routing, f->routing_len, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, len, ZMQ_SNDMORE);
    zmq_send(f->sock, "first", 5, ZMQ_SNDMORE);
    zmq_send(f->sock, "second", 6, 0); /* only the first body counts */
    fake_delivery(f, 77, "no.such.sub", 1, (const uint8_t *)"x", 1);
    fake_welcome(f, rid, f->broker.public_key, WIRE_KEY_BYTES, 0);
    fake_drain(f, 300);
}

static void
test_handshake_refusals(void **state)
{
    (void)state;
    unsetenv("SPBE_BROKER");
    unsetenv("SPBE_BROKER_KEY");
    unsetenv("SPBE_KEY");
    fake f = {0};
    spbe_options o;

    fake_start(&f, script_hello_refused);
    o = opts(&f, 2000, 0);
    connect_fails(&f, &o, SPBE_UNAVAILABLE, "broker refused the session: busy, come back later");
    fake_finish(&f);

    fake_start(&f, script_hello_not_welcome);
    o = opts(&f, 2000, 0);
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "welcome does not carry the expected key");
    fake_finish(&f);

    fake_start(&f, script_welcome_short_key);
    o = opts(&f, 2000, 0);
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "welcome does not carry the expected key");
    fake_finish(&f);

    fake_start(&f, script_welcome_other_key);
    o = opts(&f, 2000, 0);
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "welcome does not carry the expected key");
    fake_finish(&f);

    /* a goodbye instead of a welcome: final, whatever no_reconnect says */
    int codes[] = {SPBE_REVOKED, SPBE_UNKNOWN_SENDER, SPBE_FORBIDDEN};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        memset(&f, 0, sizeof f);
        f.u[0] = (uint64_t)codes[i];
        fake_start(&f, script_hello_goodbye);
        o = opts(&f, 2000, 0);
        connect_fails(&f, &o, codes[i], "broker closed the session: revoked by spbe/admin");
        fake_finish(&f);
    }
    /* a goodbye without a code reads UNAVAILABLE, with or without reconnecting */
    for (int no_reconnect = 0; no_reconnect <= 1; no_reconnect++) {
        memset(&f, 0, sizeof f);
        f.u[0] = 0;
        fake_start(&f, script_hello_goodbye);
        o = opts(&f, 2000, no_reconnect);
        connect_fails(&f, &o, SPBE_UNAVAILABLE, "broker closed the session");
        fake_finish(&f);
    }

    /* noise before the welcome is ignored or queued; the session comes up */
    fake_start(&f, script_noise_then_welcome);
    spbe_client *c = connect_ok(&f, 2000, 0);
    assert_true(spbe_connected(c));
    assert_string_equal(spbe_last_error(c), "no error");
    assert_int_equal(spbe_next_timeout_ms(c), 0); /* the queued frames are ready */
    int events = -1;
    assert_int_equal(spbe_dispatch(c, 0, &events), SPBE_OK);
    assert_int_equal(events, 0);                     /* none of it was for the user */
    assert_int_equal(spbe_next_timeout_ms(c), 1000); /* no heartbeat: a second */
    fake_finish(&f);
    spbe_close(&c);
}

static void
script_idle(fake *f)
{
    fake_drain(f, 200);
}

/* Welcomes every hello until the clients have been quiet for a second. */
static void
script_welcome_all(fake *f)
{
    Spbe__V1__Command *cmd;
    while ((cmd = fake_recv_any(f, 1000, NULL, NULL, 0)) != NULL) {
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_HELLO)
            fake_welcome(f, cmd->request_id, f->broker.public_key, WIRE_KEY_BYTES, 0);
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
}

/* Where the endpoint and the broker key come from, and keys and endpoints that cannot
 * work. */
static void
test_endpoint_and_key_resolution(void **state)
{
    (void)state;
    unsetenv("SPBE_BROKER");
    unsetenv("SPBE_BROKER_KEY");
    unsetenv("SPBE_KEY");
    fake f = {0};
    char err[256];
    fake_start(&f, script_welcome_all);
    /* the identity file names the broker and its key; no options at all */
    identity with = f.member;
    snprintf(with.broker, sizeof with.broker, "%s", f.endpoint);
    memcpy(with.broker_key, f.broker.public_key, WIRE_KEY_BYTES);
    with.has_broker_key = 1;
    assert_int_equal(identity_save(&with, f.key, 1, err, sizeof err), SPBE_OK);
    spbe_client *c = NULL;
    setenv("SPBE_BROKER", "", 1); /* empty: not set */
    setenv("SPBE_BROKER_KEY", "", 1);
    assert_int_equal(spbe_connect(f.key, NULL, &c), SPBE_OK);
    assert_memory_equal(spbe_broker_key(c), f.broker.public_key, WIRE_KEY_BYTES);
    spbe_close(&c);
    /* the same through the environment: SPBE_KEY, SPBE_BROKER, SPBE_BROKER_KEY */
    assert_int_equal(identity_save(&f.member, f.key, 1, err, sizeof err), SPBE_OK);
    setenv("SPBE_KEY", f.key, 1);
    setenv("SPBE_BROKER", f.endpoint, 1);
    setenv("SPBE_BROKER_KEY", f.broker_hex, 1);
    spbe_options empty = {.timeout_ms = 2000, .endpoint = "", .broker_key_hex = ""};
    assert_int_equal(spbe_connect(NULL, &empty, &c), SPBE_OK);
    assert_string_equal(spbe_member(c), "bad/client");
    spbe_close(&c);
    unsetenv("SPBE_KEY");
    unsetenv("SPBE_BROKER");
    unsetenv("SPBE_BROKER_KEY");
    fake_finish(&f);

    fake_start(&f, script_idle);
    /* no broker key anywhere (and no endpoint: the default is never tried) */
    connect_fails(&f, NULL, SPBE_BAD_REQUEST, "no broker key");
    /* a broker key that is no curve point */
    spbe_options o = opts(&f, 500, 0);
    o.broker_key_hex = "0000000000000000000000000000000000000000000000000000000000000000";
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "cannot be converted for CurveZMQ");
    /* a member key that is no curve point (a file that claims it) */
    identity broken = f.member;
    memset(broken.public_key, 0, WIRE_KEY_BYTES);
    memset(broken.secret_key + 32, 0, WIRE_KEY_BYTES);
    assert_int_equal(identity_save(&broken, f.key, 1, err, sizeof err), SPBE_OK);
    o = opts(&f, 500, 0);
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "cannot be converted for CurveZMQ");
    assert_int_equal(identity_save(&f.member, f.key, 1, err, sizeof err), SPBE_OK);
    /* an endpoint ZeroMQ cannot parse */
    o = opts(&f, 500, 0);
    o.endpoint = "no-such-transport://x";
    connect_fails(&f, &o, SPBE_BAD_REQUEST, "cannot connect to no-such-transport://x");
    fake_finish(&f);

    /* a server that does not speak CURVE: the handshake fails at once */
    fake_start_with(&f, script_idle, 0);
    o = opts(&f, 2000, 0);
    connect_fails(&f, &o, SPBE_UNAVAILABLE, "handshake with");
    fake_finish(&f);
}

/* ------------------------------------------------------------ goodbyes */

static void
script_goodbye_later(fake *f)
{
    fake_hello(f);
    sleep_ms(100);
    fake_goodbye(f, (int)f->u[0], "you are out");
    fake_drain(f, 400); /* a closed client says nothing more, no hello */
}

static void
on_request_ignore(spbe_client *c, const spbe_service_request *r, void *arg)
{
    (void)c;
    (void)r;
    (void)arg;
}

/* A goodbye the client must not reconnect after: every later call says so. */
static void
test_final_goodbyes(void **state)
{
    (void)state;
    int codes[] = {SPBE_REVOKED, SPBE_UNKNOWN_SENDER, SPBE_FORBIDDEN, SPBE_UNAVAILABLE, 0};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        int code = codes[i] ? codes[i] : SPBE_UNAVAILABLE;
        int no_reconnect = codes[i] == SPBE_UNAVAILABLE || codes[i] == 0;
        fake f = {0};
        memset(&f, 0, sizeof f);
        f.u[0] = (uint64_t)codes[i];
        fake_start(&f, script_goodbye_later);
        spbe_client *c = connect_ok(&f, 1000, no_reconnect);
        int events = -1;
        /* forever, until the goodbye ends it */
        assert_int_equal(spbe_dispatch(c, -1, &events), code);
        assert_int_equal(events, 0);
        assert_says(c, "broker closed the session: you are out");
        assert_false(spbe_connected(c));
        assert_int_equal(spbe_dispatch(c, 10, NULL), code);
        spbe_receipt r;
        assert_int_equal(spbe_publish(c, "t.a", "x", 1, NULL, &r), code);
        assert_int_equal(r.code, code);
        assert_int_equal(spbe_publish_async(c, "t.a", "x", 1, NULL, NULL), code);
        assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, NULL), code);
        assert_says(c, "session closed by the broker");
        uint8_t id[16] = {1};
        assert_int_equal(spbe_respond(c, "svc", 1, id, "x", 1, NULL, NULL), code);
        assert_int_equal(spbe_ack(c, "cons", "t.a", 1, SPBE_ACK, 0, 0), SPBE_UNAVAILABLE);
        assert_says(c, "not connected");
        assert_int_equal(spbe_serve(c, "svc", on_request_ignore, NULL), code);
        spbe_response resp;
        assert_int_equal(spbe_request(c, "svc", "x", 1, 500, NULL, &resp), code);
        assert_int_equal(resp.code, code);
        spbe_response_free(&resp);
        fake_finish(&f);
        if (f.hellos != 1)
            fail_msg("case %zu: %d hellos", i, f.hellos); /* never said hello again */
        spbe_close(&c);
    }
}

static void
script_goodbye_during_call(fake *f)
{
    fake_hello(f);
    fake_expect(f, (int)f->u[1], NULL, NULL, NULL);
    fake_goodbye(f, (int)f->u[0], "shutting down");
    if (f->u[2]) { /* the client comes back */
        fake_hello(f);
        if (f->u[3]) { /* and sends the command again in the new session */
            uint64_t rid = fake_expect(f, (int)f->u[1], NULL, NULL, NULL);
            fake_reply(f, rid, SPBE_OK, "");
        }
        fake_drain(f, 300);
    }
}

/* A goodbye instead of the reply a call waits for. */
static void
test_goodbye_instead_of_a_reply(void **state)
{
    (void)state;
    fake f = {0};
    /* UNAVAILABLE: the session is lost, the client says hello again; a subscribe is
     * the session's own state, so it goes again in the new session and succeeds */
    memset(&f, 0, sizeof f);
    f.u[0] = SPBE_UNAVAILABLE;
    f.u[1] = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
    f.u[2] = 1;
    f.u[3] = 1;
    fake_start(&f, script_goodbye_during_call);
    spbe_client *c = connect_ok(&f, 2000, 0);
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    assert_true(spbe_connected(c));
    fake_finish(&f);
    assert_int_equal(f.hellos, 2);
    spbe_close(&c);

    /* a request may have reached its server: not repeated, UNAVAILABLE, reconnecting */
    memset(&f, 0, sizeof f);
    f.u[0] = SPBE_UNAVAILABLE;
    f.u[1] = SPBE__V1__COMMAND__BODY_REQUEST;
    f.u[2] = 1;
    fake_start(&f, script_goodbye_during_call);
    c = connect_ok(&f, 2000, 0);
    spbe_response resp;
    assert_int_equal(spbe_request(c, "svc", "x", 1, 1000, NULL, &resp), SPBE_UNAVAILABLE);
    spbe_response_free(&resp);
    assert_says(c, "broker closed the session: shutting down");
    assert_false(spbe_connected(c));
    assert_int_equal(spbe_next_timeout_ms(c), 250); /* reconnecting */
    assert_true(dispatch_until_connected(c, 1, 2000));
    fake_finish(&f);
    assert_int_equal(f.hellos, 2);
    spbe_close(&c);

    /* REVOKED while looking up a sender's key: final */
    memset(&f, 0, sizeof f);
    f.u[0] = SPBE_REVOKED;
    f.u[1] = SPBE__V1__COMMAND__BODY_MEMBER_GET;
    fake_start(&f, script_goodbye_during_call);
    c = connect_ok(&f, 2000, 1);
    spbe_delivery d = {.sender = "some/one", .raw = (const uint8_t *)"x", .raw_len = 1};
    assert_int_equal(spbe_verify(c, &d), SPBE_REVOKED);
    assert_says(c, "broker closed the session: shutting down");
    assert_int_equal(spbe_dispatch(c, 0, NULL), SPBE_REVOKED);
    fake_finish(&f);
    spbe_close(&c);

    /* no code reads UNAVAILABLE; with no_reconnect the end is final */
    memset(&f, 0, sizeof f);
    f.u[0] = 0;
    f.u[1] = SPBE__V1__COMMAND__BODY_SERVE;
    fake_start(&f, script_goodbye_during_call);
    c = connect_ok(&f, 2000, 1);
    assert_int_equal(spbe_serve(c, "svc", on_request_ignore, NULL), SPBE_UNAVAILABLE);
    assert_says(c, "broker closed the session: shutting down");
    assert_int_equal(spbe_dispatch(c, 0, NULL), SPBE_UNAVAILABLE);
    assert_false(spbe_connected(c));
    fake_finish(&f);
    assert_int_equal(f.hellos, 1);
    spbe_close(&c);

    /* a synchronous publish whose receipt never comes because the member was revoked */
    memset(&f, 0, sizeof f);
    f.u[0] = SPBE_REVOKED;
    f.u[1] = SPBE__V1__COMMAND__BODY_PUBLISH;
    fake_start(&f, script_goodbye_during_call);
    c = connect_ok(&f, 2000, 0);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "t.a", "x", 1, NULL, &r), SPBE_REVOKED);
    assert_int_equal(r.code, SPBE_REVOKED);
    assert_non_null(strstr(r.error, "broker closed the session: shutting down"));
    assert_int_equal(spbe_flush(c, 500), SPBE_REVOKED); /* its receipt never comes */
    assert_int_equal(spbe_in_flight(c), 1);
    fake_finish(&f);
    spbe_close(&c);
}

/* ------------------------------------------------------------ reconnecting */

static void
script_reconnect(fake *f)
{
    fake_hello(f);
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL);
    fake_subscribed(f, rid, 7);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL); /* u.> */
    fake_subscribed(f, rid, 8);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL); /* v.> */
    fake_subscribed(f, rid, 10);
    for (int i = 0; i < 3; i++) { /* svc, svc again, svc2 */
        rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SERVE, NULL, NULL, NULL);
        fake_reply(f, rid, SPBE_OK, NULL);
    }
    uint8_t *msg;
    size_t len;
    sign_message(&f->broker, "t.a", "hello", &msg, &len);
    fake_delivery(f, 7, "t.a", 1, msg, len);
    fake_delivery(f, 7, "t.a", 2, msg, len);
    const char *topics[] = {"t.b", "t.c", "t.d", "t.e"};
    for (int i = 0; i < 4; i++)
        fake_delivery(f, 7, topics[i], 1, msg, len);
    fake_delivery(f, 7, "t.a", 1, msg, len);  /* already delivered */
    fake_delivery(f, 7, "t.f", 1, NULL, 0);   /* no body */
    fake_delivery(f, 7, "t.f", 1, msg, 3);    /* a body that does not decode */
    fake_delivery(f, 99, "t.a", 3, msg, len); /* no such subscription */
    fake_delivery(f, 0, "t.a", 3, msg, len);
    free(msg);
    uint64_t pub[3];
    for (int i = 0; i < 3; i++)
        pub[i] = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    fake_receipt(f, pub[1], SPBE_OK, "t.p", 2, WIRE_HASH_BYTES);
    fake_goodbye(f, SPBE_UNAVAILABLE, "restarting");
    fake_hello(f);
    /* the client serves again, subscribes from where it was, and resends the rest */
    Spbe__V1__Command *cmd;
    for (int i = 0; i < 2; i++) {
        fake_expect(f, SPBE__V1__COMMAND__BODY_SERVE, &cmd, NULL, NULL);
        if (cmd) {
            snprintf(f->s[i], sizeof f->s[i], "%s", cmd->serve->service);
            fake_reply(f, cmd->request_id, SPBE_OK, NULL);
            spbe__v1__command__free_unpacked(cmd, NULL);
        }
    }
    fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, &cmd, NULL, NULL); /* v.> */
    if (cmd) {
        fake_reply(f, cmd->request_id, SPBE_OK, NULL); /* OK, but no subscription id */
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, &cmd, NULL, NULL); /* u.> */
    if (cmd) {
        if (strcmp(cmd->subscribe->pattern, "u.>") != 0 || cmd->subscribe->n_resume != 0)
            script_fail(f, "u.> not resumed as it was");
        fake_subscribed(f, cmd->request_id, 9);
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, &cmd, NULL, NULL);
    if (cmd) {
        f->u[0] = cmd->subscribe->n_resume;
        for (size_t i = 0; i < cmd->subscribe->n_resume; i++) {
            if (strcmp(cmd->subscribe->resume[i]->topic, "t.a") == 0)
                f->u[1] = cmd->subscribe->resume[i]->next_sequence;
            if (strcmp(cmd->subscribe->resume[i]->topic, "t.e") == 0)
                f->u[2] = cmd->subscribe->resume[i]->next_sequence;
            if (strcmp(cmd->subscribe->resume[i]->topic, "t.f") == 0)
                script_fail(f, "t.f resumed though nothing of it was delivered");
        }
        fake_reply(f, cmd->request_id, SPBE_FORBIDDEN, "no longer allowed");
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    uint64_t again[2];
    for (int i = 0; i < 2; i++)
        again[i] = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    /* the first had been stored before the restart; the other one now, short hash */
    fake_receipt(f, again[0], SPBE_DUPLICATE, "t.p", 1, WIRE_HASH_BYTES);
    fake_receipt(f, again[1], SPBE_OK, "t.p", 3, 16);
    fake_receipt(f, pub[0], SPBE_OK, "t.p", 1, WIRE_HASH_BYTES); /* late: of the old session */
    sign_message(&f->broker, "u.x", "after", &msg, &len);
    fake_delivery(f, 8, "u.x", 1, msg, len); /* the id of the session before */
    fake_delivery(f, 9, "u.x", 1, msg, len);
    free(msg);
    fake_drain(f, 400);
}

typedef struct seen {
    int deliveries, receipts;
    char topics[16][16];
    uint64_t seqs[16], subs[16];
    spbe_receipt r[8];
} seen;

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    seen *s = arg;
    if (s->deliveries < 16) {
        snprintf(s->topics[s->deliveries], sizeof s->topics[0], "%s", d->topic);
        s->seqs[s->deliveries] = d->sequence;
        s->subs[s->deliveries] = d->subscription_id;
    }
    s->deliveries++;
}

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    seen *s = arg;
    if (s->receipts < 8)
        s->r[s->receipts] = *r;
    s->receipts++;
}

static const spbe_receipt *
receipt_of(seen *s, uint64_t token)
{
    for (int i = 0; i < s->receipts && i < 8; i++)
        if (s->r[i].token == token)
            return &s->r[i];
    fail_msg("no receipt for token %llu", (unsigned long long)token);
    return NULL;
}

/* A broker restart announced by a goodbye: the client says hello again, serves and
 * subscribes again from where it was, resends what had no receipt, and each publish
 * gets exactly one receipt (a resend the broker had stored reads OK). Deliveries it
 * already had, or that do not decode, never reach the handler. */
static void
test_reconnect_resumes_everything(void **state)
{
    (void)state;
    fake f = {0};
    seen s = {0};
    fake_start(&f, script_reconnect);
    spbe_client *c = connect_ok(&f, 3000, 0);
    spbe_set_delivery_handler(c, on_delivery, &s);
    spbe_set_receipt_handler(c, on_receipt, &s);
    uint64_t sub, usub;
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, &sub), SPBE_OK);
    assert_int_equal(spbe_subscribe(c, "u.>", SPBE_START_NEW, 0, &usub), SPBE_OK);
    assert_int_equal(spbe_subscribe(c, "v.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    assert_int_equal(spbe_serve(c, "svc", on_request_ignore, NULL), SPBE_OK);
    assert_int_equal(spbe_serve(c, "svc", on_request_ignore, &s), SPBE_OK); /* once */
    assert_int_equal(spbe_serve(c, "svc2", on_request_ignore, NULL), SPBE_OK);
    for (int i = 0; i < 40 && s.deliveries < 6; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_int_equal(spbe_dispatch(c, 200, NULL), SPBE_OK); /* nothing else comes */
    assert_int_equal(s.deliveries, 6);
    assert_string_equal(s.topics[0], "t.a");
    assert_int_equal(s.seqs[1], 2);
    assert_string_equal(s.topics[5], "t.e");
    uint64_t tok[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(spbe_publish_async(c, "t.p", "m", 1, NULL, &tok[i]), SPBE_OK);
    assert_int_equal(spbe_flush(c, 5000), SPBE_OK);
    assert_int_equal(spbe_in_flight(c), 0);
    assert_true(spbe_connected(c));
    assert_says(c, "subscription t.> not resumed: no longer allowed");
    for (int i = 0; i < 40 && s.deliveries < 7; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    fake_finish(&f);
    assert_int_equal(spbe_dispatch(c, 0, NULL), SPBE_OK);
    assert_int_equal(s.deliveries, 7); /* u.> goes on under its new id, once */
    assert_string_equal(s.topics[6], "u.x");
    assert_int_equal(s.subs[6], usub);
    assert_int_equal(f.hellos, 2);
    assert_string_equal(f.s[0], "svc2");
    assert_string_equal(f.s[1], "svc");
    assert_int_equal(f.u[0], 5); /* t.a to t.e */
    assert_int_equal(f.u[1], 3);
    assert_int_equal(f.u[2], 2);
    assert_int_equal(s.receipts, 3); /* the late one of the old session is dropped */
    const spbe_receipt *r = receipt_of(&s, tok[0]);
    assert_int_equal(r->code, SPBE_OK); /* DUPLICATE of its own first attempt */
    assert_int_equal(r->sequence, 1);
    assert_true(r->signed_by_broker);
    assert_string_equal(r->error, "");
    r = receipt_of(&s, tok[1]);
    assert_int_equal(r->code, SPBE_OK);
    assert_int_equal(r->sequence, 2);
    assert_int_equal(r->message_hash[0], 7);
    r = receipt_of(&s, tok[2]);
    assert_int_equal(r->code, SPBE_OK);
    assert_int_equal(r->sequence, 3);
    static const uint8_t zero[SPBE_HASH_BYTES];
    assert_memory_equal(r->message_hash, zero, SPBE_HASH_BYTES); /* a short hash is no hash */
    /* the subscription the broker refused to resume: ended here, nothing to tell it */
    assert_int_equal(spbe_unsubscribe(c, sub), SPBE_OK);
    assert_int_equal(f.seen[SPBE__V1__COMMAND__BODY_UNSUBSCRIBE], 0);
    spbe_close(&c);
}

static void
script_rehello(fake *f)
{
    fake_hello(f);
    fake_goodbye(f, SPBE_UNAVAILABLE, "restarting");
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    if (f->u[0] == SPBE_INTERNAL) { /* transient: the client tries again */
        fake_reply(f, rid, SPBE_INTERNAL, "try later");
        rid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
        fake_reply(f, rid, SPBE_REVOKED, "revoked meanwhile");
    } else if (f->u[1] == 1) {
        fake_subscribed(f, rid, 1);
    } else if (f->u[1] == 2) {
        identity other;
        identity_generate("other/broker", &other);
        fake_welcome(f, rid, other.public_key, WIRE_KEY_BYTES, 0);
    } else {
        fake_reply(f, rid, (int)f->u[0], "refused");
    }
    fake_drain(f, 300);
}

/* The broker refuses the session when the client comes back: final for a refusal of
 * the member or a welcome that is not right, another try for a transient error. */
static void
test_refused_when_coming_back(void **state)
{
    (void)state;
    struct {
        int code, kind, want;
        const char *says;
    } cases[] = {
        {SPBE_REVOKED, 0, SPBE_REVOKED, "broker refused the session again: refused"},
        {SPBE_UNKNOWN_SENDER, 0, SPBE_UNKNOWN_SENDER, "refused the session again"},
        {SPBE_FORBIDDEN, 0, SPBE_FORBIDDEN, "refused the session again"},
        {SPBE_OK, 1, SPBE_BAD_REQUEST, "refused the session again"},
        {SPBE_OK, 2, SPBE_BAD_REQUEST, "refused the session again"},
        {SPBE_INTERNAL, 0, SPBE_REVOKED, "refused the session again: revoked meanwhile"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fake f = {0};
        memset(&f, 0, sizeof f);
        f.u[0] = (uint64_t)cases[i].code;
        f.u[1] = (uint64_t)cases[i].kind;
        fake_start(&f, script_rehello);
        spbe_client *c = connect_ok(&f, 2000, 0);
        int rc = SPBE_OK;
        for (int n = 0; n < 100 && rc == SPBE_OK; n++)
            rc = spbe_dispatch(c, 50, NULL);
        assert_int_equal(rc, cases[i].want);
        assert_says(c, cases[i].says);
        assert_false(spbe_connected(c));
        assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, NULL), cases[i].want);
        fake_finish(&f);
        assert_int_equal(f.hellos, cases[i].code == SPBE_INTERNAL ? 3 : 2);
        spbe_close(&c);
    }
}

static void
script_no_answer_to_hello(fake *f)
{
    fake_hello(f);
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SERVE, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_OK, NULL);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL);
    fake_subscribed(f, rid, 5);
    fake_goodbye(f, SPBE_UNAVAILABLE, "restarting");
    /* hellos go unanswered until the test says go; the next one is refused */
    Spbe__V1__Command *cmd;
    while (!__atomic_load_n(&f->go, __ATOMIC_SEQ_CST)) {
        cmd = fake_recv_any(f, 100, NULL, NULL, 0);
        if (cmd && cmd->body_case != SPBE__V1__COMMAND__BODY_HELLO)
            script_fail(f, "command %d while the session was lost", (int)cmd->body_case);
        if (cmd)
            spbe__v1__command__free_unpacked(cmd, NULL);
    }
    uint64_t hid = fake_expect(f, SPBE__V1__COMMAND__BODY_HELLO, NULL, NULL, NULL);
    fake_reply(f, hid, SPBE_REVOKED, "revoked meanwhile");
    fake_drain(f, 300);
}

/* Calls made while the client has no session: those that need the broker wait for it
 * up to their timeout, those that need not are done at once. */
static void
test_calls_while_reconnecting(void **state)
{
    (void)state;
    fake f = {0};
    fake_start(&f, script_no_answer_to_hello);
    spbe_client *c = connect_ok(&f, 400, 0);
    uint64_t sub;
    assert_int_equal(spbe_serve(c, "svc", on_request_ignore, NULL), SPBE_OK);
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_FIRST, 0, &sub), SPBE_OK);
    assert_true(dispatch_until_connected(c, 0, 2000));
    assert_says(c, "session lost (restarting); reconnecting");
    assert_int_equal(spbe_next_timeout_ms(c), 250);
    assert_int_equal(spbe_subscribe(c, "t.x", SPBE_START_NEW, 0, NULL), SPBE_UNAVAILABLE);
    assert_says(c, "not connected to the broker (reconnecting)");
    assert_int_equal(spbe_ack(c, "cons", "t.a", 1, SPBE_ACK, 0, 0), SPBE_UNAVAILABLE);
    assert_says(c, "not connected: the message will come again");
    uint64_t tok = 0;
    assert_int_equal(spbe_publish_async(c, "t.a", "x", 1, NULL, &tok), SPBE_OK); /* queued */
    assert_int_equal(spbe_in_flight(c), 1);
    assert_int_equal(spbe_unserve(c, "svc"), SPBE_OK);   /* nothing to tell the broker */
    assert_int_equal(spbe_unsubscribe(c, sub), SPBE_OK); /* likewise */
    assert_int_equal(spbe_unserve(c, "svc"), SPBE_NOT_FOUND);
    __atomic_store_n(&f.go, 1, __ATOMIC_SEQ_CST);
    /* a call waiting for the session learns that it will not come back */
    int rc = SPBE_UNAVAILABLE;
    for (int i = 0; i < 20 && rc == SPBE_UNAVAILABLE; i++)
        rc = spbe_subscribe(c, "t.y", SPBE_START_NEW, 0, NULL);
    assert_int_equal(rc, SPBE_REVOKED);
    assert_says(c, "refused the session again: revoked meanwhile");
    fake_finish(&f);
    assert_int_equal(f.seen[SPBE__V1__COMMAND__BODY_UNSERVE], 0);
    assert_int_equal(f.seen[SPBE__V1__COMMAND__BODY_UNSUBSCRIBE], 0);
    assert_int_equal(f.seen[SPBE__V1__COMMAND__BODY_PUBLISH], 0);
    spbe_close(&c);
}

static void
script_unavailable_replies(fake *f)
{
    fake_hello(f);
    fake_reply(f, 0, SPBE_UNAVAILABLE, "no session: send hello first"); /* to a heartbeat */
    fake_hello(f);
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_UNAVAILABLE, "no session: send hello first");
    fake_hello(f);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL); /* resent */
    fake_reply(f, rid, SPBE_DUPLICATE, "already stored"); /* without a signed receipt */
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_UNAVAILABLE, "nobody serves svc");
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_UNAVAILABLE, "no session: send hello first");
    fake_hello(f);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL); /* resent */
    fake_reply(f, rid, SPBE_UNAVAILABLE, "nobody serves svc");
    fake_drain(f, 300);
}

/* UNAVAILABLE replies that mean the broker lost the session: the client says hello
 * again and resends (a call too, which the broker did not carry out); one that means
 * nobody serves a service is only that. */
static void
test_unavailable_replies(void **state)
{
    (void)state;
    fake f = {0};
    fake_start(&f, script_unavailable_replies);
    spbe_client *c = connect_ok(&f, 3000, 0);
    assert_int_equal(spbe_dispatch(c, 300, NULL), SPBE_OK);
    assert_true(dispatch_until_connected(c, 1, 3000));
    spbe_receipt r;
    /* a DUPLICATE the broker did not sign is not taken for the earlier attempt's */
    assert_int_equal(spbe_publish(c, "t.a", "x", 1, NULL, &r), SPBE_DUPLICATE);
    assert_false(r.signed_by_broker);
    assert_string_equal(r.error, "already stored");
    spbe_response resp;
    assert_int_equal(spbe_request(c, "svc", "x", 1, 1000, NULL, &resp), SPBE_UNAVAILABLE);
    assert_string_equal(resp.error, "nobody serves svc");
    assert_true(spbe_connected(c));
    spbe_response_free(&resp);
    /* "no session": the request was not carried out, so it goes again after the hello */
    assert_int_equal(spbe_request(c, "svc", "x", 1, 1000, NULL, &resp), SPBE_UNAVAILABLE);
    assert_string_equal(resp.error, "nobody serves svc");
    assert_true(spbe_connected(c));
    spbe_response_free(&resp);
    fake_finish(&f);
    assert_int_equal(f.hellos, 4);
    spbe_close(&c);
}

static void
script_heartbeat_no_session(fake *f)
{
    fake_hello(f);
    fake_reply(f, 0, SPBE_UNAVAILABLE, "no session: send hello first");
    fake_drain(f, 400);
}

/* Without reconnecting, a broker that lost the session (a restart without goodbye)
 * ends the client's session for good: dispatch says so, and calls do not wait. */
static void
test_lost_session_without_reconnect(void **state)
{
    (void)state;
    fake f = {0};
    fake_start(&f, script_heartbeat_no_session);
    spbe_client *c = connect_ok(&f, 1000, 1);
    int rc = SPBE_OK;
    for (int i = 0; i < 20 && rc == SPBE_OK; i++)
        rc = spbe_dispatch(c, 50, NULL);
    assert_int_equal(rc, SPBE_UNAVAILABLE);
    assert_says(c, "session lost (no session: send hello first)");
    assert_false(spbe_connected(c));
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, NULL), SPBE_UNAVAILABLE);
    fake_finish(&f);
    assert_int_equal(f.hellos, 1);
    spbe_close(&c);
}

static void
script_unavailable_receipts(fake *f)
{
    fake_hello(f);
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    fake_receipt(f, rid, SPBE_UNAVAILABLE, "t.a", 0, WIRE_HASH_BYTES);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_UNAVAILABLE, "storage busy");
    fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL); /* never answered */
    uint64_t sync = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, NULL, NULL);
    while (!__atomic_load_n(&f->go, __ATOMIC_SEQ_CST))
        fake_drain(f, 20);
    fake_receipt(f, sync, SPBE_OK, "t.a", 9, WIRE_HASH_BYTES); /* after the caller gave up */
    fake_drain(f, 300);
}

/* Publishes the broker refuses UNAVAILABLE without losing the session: each gets its
 * receipt and the session stays. A synchronous publish that times out leaves its late
 * receipt to the receipt handler. */
static void
test_unavailable_receipts(void **state)
{
    (void)state;
    fake f = {0};
    seen s = {0};
    fake_start(&f, script_unavailable_receipts);
    spbe_client *c = connect_ok(&f, 1000, 1);
    spbe_set_receipt_handler(c, on_receipt, &s);
    uint64_t t1, t2, t3;
    assert_int_equal(spbe_publish_async(c, "t.a", "1", 1, NULL, &t1), SPBE_OK);
    assert_int_equal(spbe_publish_async(c, "t.a", "2", 1, NULL, &t2), SPBE_OK);
    assert_int_equal(spbe_flush(c, 2000), SPBE_OK);
    assert_int_equal(s.receipts, 2);
    const spbe_receipt *r = receipt_of(&s, t1);
    assert_int_equal(r->code, SPBE_UNAVAILABLE);
    assert_true(r->signed_by_broker);
    r = receipt_of(&s, t2);
    assert_int_equal(r->code, SPBE_UNAVAILABLE);
    assert_false(r->signed_by_broker);
    assert_string_equal(r->error, "storage busy");
    assert_true(spbe_connected(c));
    assert_int_equal(spbe_publish_async(c, "t.a", "3", 1, NULL, &t3), SPBE_OK);
    spbe_receipt sync;
    assert_int_equal(spbe_publish(c, "t.a", "4", 1, NULL, &sync), SPBE_TIMEOUT);
    assert_int_equal(sync.code, SPBE_TIMEOUT);
    assert_string_equal(sync.error, "no receipt within 1000 ms");
    assert_int_equal(spbe_in_flight(c), 2);
    __atomic_store_n(&f.go, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 40 && s.receipts < 3; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_int_equal(s.receipts, 3);
    assert_int_equal(s.r[2].code, SPBE_OK);
    assert_int_equal(s.r[2].sequence, 9);
    assert_int_not_equal(s.r[2].token, t3);
    assert_int_equal(spbe_in_flight(c), 1); /* the third still waits */
    fake_finish(&f);
    spbe_close(&c);
}

static void
script_silent(fake *f)
{
    f->heartbeat_ms = 100;
    fake_hello(f);
    /* read everything, answer nothing, until a hello comes again (or time is up) */
    for (;;) {
        Spbe__V1__Command *cmd = fake_recv_any(f, 5000, NULL, NULL, 1);
        if (!cmd)
            break;
        int hello = cmd->body_case == SPBE__V1__COMMAND__BODY_HELLO;
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_PING)
            f->pings++;
        uint64_t rid = cmd->request_id;
        spbe__v1__command__free_unpacked(cmd, NULL);
        if (hello) {
            fake_welcome(f, rid, f->broker.public_key, WIRE_KEY_BYTES, 0);
            break;
        }
    }
    fake_drain(f, 300);
}

/* A broker that goes silent: after three heartbeats the client gives up (no_reconnect)
 * or says hello again. */
static void
test_silent_broker(void **state)
{
    (void)state;
    fake f = {0};
    fake_start(&f, script_silent);
    spbe_client *c = connect_ok(&f, 1000, 1);
    int t = spbe_next_timeout_ms(c);
    assert_true(t >= 0 && t <= 100);
    sleep_ms(150);
    assert_int_equal(spbe_next_timeout_ms(c), 0); /* a heartbeat is due */
    assert_true(spbe_fd(c) >= 0);
    int rc = SPBE_OK, events = -1;
    for (int i = 0; i < 100 && rc == SPBE_OK; i++)
        rc = spbe_dispatch(c, 100, &events);
    assert_int_equal(rc, SPBE_UNAVAILABLE);
    assert_int_equal(events, 0);
    assert_says(c, "broker silent for 300 ms");
    assert_int_equal(spbe_dispatch(c, 100, NULL), SPBE_UNAVAILABLE); /* still silent */
    spbe_close(&c);
    fake_finish(&f);
    assert_true(f.pings > 0);

    fake_start(&f, script_silent);
    c = connect_ok(&f, 1000, 0);
    for (int i = 0; i < 100 && !strstr(spbe_last_error(c), "silent"); i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_says(c, "session lost (broker silent for three heartbeats); reconnecting");
    assert_true(dispatch_until_connected(c, 1, 3000));
    fake_finish(&f);
    assert_int_equal(f.hellos, 2);
    spbe_close(&c);
}

/* ------------------------------------------------------------ services */

static void
reply_response(fake *f, uint64_t rid, const char *server, const uint8_t *body, size_t len,
               int with_body_case, int receipts)
{
    Spbe__V1__Response resp = SPBE__V1__RESPONSE__INIT;
    resp.service = "svc";
    resp.server = (char *)server;
    resp.request_sequence = 1;
    resp.reply_sequence = 2;
    Spbe__V1__SignedReceipt a = SPBE__V1__SIGNED_RECEIPT__INIT, b = a;
    if (receipts) {
        Spbe__V1__Receipt rc = SPBE__V1__RECEIPT__INIT;
        rc.topic = "$sys.svc.svc";
        rc.sequence = 1;
        wire_receipt_sign(&rc, f->broker.secret_key, &a);
        rc.sequence = 2;
        wire_receipt_sign(&rc, f->broker.secret_key, &b);
        resp.request_receipt = &a;
        resp.reply_receipt = &b;
    }
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    if (with_body_case) {
        r.body_case = SPBE__V1__REPLY__BODY_RESPONSE;
        r.response = &resp;
    }
    fake_send_reply(f, &r, body, len);
    if (receipts) {
        free(a.receipt.data);
        free(b.receipt.data);
    }
}

static void
reply_member(fake *f, uint64_t rid, const char *name, const uint8_t *key, size_t key_len)
{
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = (char *)name;
    m.public_key.data = (uint8_t *)key;
    m.public_key.len = key_len;
    Spbe__V1__MemberInfo mi = SPBE__V1__MEMBER_INFO__INIT;
    mi.member = &m;
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    r.body_case = SPBE__V1__REPLY__BODY_MEMBER;
    r.member = &mi;
    fake_send_reply(f, &r, NULL, 0);
}

static void
script_bad_answers(fake *f)
{
    identity one, two, three, forger;
    identity_generate("srv/one", &one);
    identity_generate("srv/two", &two);
    identity_generate("srv/three", &three);
    identity_generate("srv/one", &forger);
    fake_hello(f);
    uint8_t *msg;
    size_t len;
    /* 1: OK without the reply */
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/one", NULL, 0, 1, 0);
    /* 2: a Response whose body is no reply */
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/one", (const uint8_t *)"garbage", 7, 1, 0);
    /* 3: a body, but no Response */
    sign_message(&one, "$sys.svc.svc", "pong", &msg, &len);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/one", msg, len, 0, 0);
    /* 4: signed by srv/one, said to be from srv/two */
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/two", msg, len, 1, 0);
    /* 5: right, with receipts; the client fetches srv/one's key */
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/one", msg, len, 1, 1);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_MEMBER_GET, NULL, NULL, NULL);
    reply_member(f, rid, "srv/one", one.public_key, WIRE_KEY_BYTES);
    free(msg);
    /* 6: srv/one again (key known), an empty payload signed by someone else */
    sign_message(&forger, "$sys.svc.svc", NULL, &msg, &len);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/one", msg, len, 1, 0);
    free(msg);
    /* 7: srv/two, whose key the broker sends short */
    sign_message(&two, "$sys.svc.svc", "pong", &msg, &len);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/two", msg, len, 1, 0);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_MEMBER_GET, NULL, NULL, NULL);
    reply_member(f, rid, "srv/two", two.public_key, 16);
    free(msg);
    /* 8: srv/three, which the broker answers without a member, then does not know */
    sign_message(&three, "$sys.svc.svc", "pong", &msg, &len);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_REQUEST, NULL, NULL, NULL);
    reply_response(f, rid, "srv/three", msg, len, 1, 0);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_MEMBER_GET, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_OK, NULL);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_MEMBER_GET, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_NOT_FOUND, "no such member");
    free(msg);
    fake_drain(f, 300);
}

static void
request_fails(spbe_client *c, int timeout_ms, int code, const char *says)
{
    spbe_response resp;
    int rc = spbe_request(c, "svc", "ping", 4, timeout_ms, NULL, &resp);
    if (rc != code || resp.code != code || !strstr(resp.error, says))
        fail_msg("request: %s (%s), wanted %s (%s)", spbe_error_name(rc), resp.error,
                 spbe_error_name(code), says);
    if (code == SPBE_BAD_REQUEST)
        assert_null(resp.payload);
    assert_says(c, says);
    spbe_response_free(&resp);
}

/* A service's answer that does not add up is never taken for the server's reply. */
static void
test_service_answers_that_do_not_add_up(void **state)
{
    (void)state;
    fake f = {0};
    fake_start(&f, script_bad_answers);
    spbe_client *c = connect_ok(&f, 2000, 0);
    request_fails(c, 1000, SPBE_BAD_REQUEST, "the broker's answer carries no reply");
    request_fails(c, 1000, SPBE_BAD_REQUEST, "the reply is malformed");
    request_fails(c, 1000, SPBE_BAD_REQUEST, "the broker's answer carries no reply");
    request_fails(c, 1000, SPBE_BAD_REQUEST, "the reply is malformed");
    spbe_response resp;
    assert_int_equal(spbe_request(c, "svc", "ping", 4, 0, NULL, &resp), SPBE_OK);
    assert_string_equal(resp.server, "srv/one");
    assert_int_equal(resp.payload_len, 4);
    assert_memory_equal(resp.payload, "pong", 4);
    assert_int_equal(resp.reply_sequence, 2);
    assert_true(resp.receipts_verified);
    /* the raw reply, checked again, with another sender's name or broken */
    spbe_delivery d = {.sender = "srv/one", .raw = resp.raw, .raw_len = resp.raw_len};
    assert_int_equal(spbe_verify(c, &d), SPBE_OK);
    d.raw = (const uint8_t *)"junk";
    d.raw_len = 4;
    assert_int_equal(spbe_verify(c, &d), SPBE_BAD_REQUEST);
    assert_says(c, "signature of srv/one does not verify");
    identity two;
    identity_generate("srv/two", &two);
    uint8_t *other;
    size_t other_len;
    sign_message(&two, "t.a", "x", &other, &other_len);
    d.raw = other; /* well signed, by another member than it claims */
    d.raw_len = other_len;
    assert_int_equal(spbe_verify(c, &d), SPBE_BAD_SIGNATURE);
    free(other);
    spbe_response_free(&resp);
    spbe_response_free(NULL);
    request_fails(c, 1000, SPBE_BAD_SIGNATURE, "the reply's signature does not verify");
    request_fails(c, 1000, SPBE_BAD_SIGNATURE, "the reply's signature does not verify");
    request_fails(c, 1000, SPBE_BAD_SIGNATURE, "the reply's signature does not verify");
    d.sender = "srv/three";
    d.raw = (const uint8_t *)"junk";
    assert_int_equal(spbe_verify(c, &d), SPBE_UNKNOWN_SENDER);
    assert_says(c, "sender srv/three is not registered");
    fake_finish(&f);
    spbe_close(&c);
}

typedef struct served_log {
    int calls;
    uint64_t ref, token;
    int rc;
} served_log;

static void
on_request_respond(spbe_client *c, const spbe_service_request *r, void *arg)
{
    served_log *log = arg;
    log->calls++;
    log->ref = r->ref;
    spbe_message_options o = {.schema = "test.Pong"};
    log->rc = spbe_respond(c, r->service, r->ref, r->id, "pong", 4, &o, &log->token);
}

static void
script_request_events(fake *f)
{
    fake_hello(f);
    for (int i = 0; i < 2; i++) {
        uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SERVE, NULL, NULL, NULL);
        fake_reply(f, rid, SPBE_OK, NULL);
    }
    uint8_t *msg;
    size_t len;
    sign_message(&f->broker, "$sys.svc.svc", "ping", &msg, &len);
    fake_request_event(f, "not-served", 40, msg, len);
    fake_request_event(f, "svc", 41, (const uint8_t *)"junk", 4);
    fake_request_event(f, "svc", 43, NULL, 0);
    fake_request_event(f, "svc", 42, msg, len);
    free(msg);
    Spbe__V1__Command *cmd;
    uint8_t *body;
    size_t body_len;
    fake_expect(f, SPBE__V1__COMMAND__BODY_RESPOND, &cmd, &body, &body_len);
    if (cmd) {
        f->u[0] = cmd->respond->request_ref;
        Spbe__V1__SignedMessage *sm;
        Spbe__V1__Message *m;
        if (!body || wire_envelope_decode(body, body_len, &sm, &m, NULL) != SPBE_OK ||
            strcmp(m->schema, "test.Pong") != 0 || strcmp(m->topic, "$sys.svc.svc") != 0)
            script_fail(f, "the reply is not the handler's");
        if (body)
            wire_envelope_free(&sm, &m);
        fake_receipt(f, cmd->request_id, SPBE_OK, "$sys.svc.svc", 2, WIRE_HASH_BYTES);
        spbe__v1__command__free_unpacked(cmd, NULL);
        free(body);
    }
    fake_expect(f, SPBE__V1__COMMAND__BODY_UNSERVE, &cmd, NULL, NULL);
    if (cmd) {
        snprintf(f->s[0], sizeof f->s[0], "%s", cmd->unserve->service);
        fake_reply(f, cmd->request_id, SPBE_OK, NULL);
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    fake_drain(f, 300);
}

/* Requests for services: only a decodable one for a service served reaches its handler,
 * whose reply goes to the broker. */
static void
test_service_requests_from_the_broker(void **state)
{
    (void)state;
    fake f = {0};
    served_log log = {0};
    fake_start(&f, script_request_events);
    spbe_client *c = connect_ok(&f, 2000, 0);
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(spbe_serve(c, long_name, on_request_respond, &log), SPBE_BAD_REQUEST);
    assert_says(c, "needs a service name and a handler");
    assert_int_equal(spbe_serve(c, "svc", on_request_respond, &log), SPBE_OK);
    assert_int_equal(spbe_serve(c, "svc2", on_request_respond, &log), SPBE_OK);
    int events = 0;
    for (int i = 0; i < 40 && log.calls == 0; i++)
        assert_int_equal(spbe_dispatch(c, 50, &events), SPBE_OK);
    assert_int_equal(spbe_dispatch(c, 200, NULL), SPBE_OK);
    assert_int_equal(log.calls, 1);
    assert_int_equal(log.ref, 42);
    assert_int_equal(log.rc, SPBE_OK);
    assert_true(log.token > 0);
    assert_int_equal(spbe_flush(c, 2000), SPBE_OK);
    assert_int_equal(spbe_unserve(c, "svc"), SPBE_OK); /* not the first in the list */
    assert_int_equal(spbe_unserve(c, "svc"), SPBE_NOT_FOUND);
    assert_says(c, "not serving svc");
    uint8_t id[16] = {0};
    assert_int_equal(spbe_respond(c, "$sys.svc.x", 1, id, "x", 1, NULL, NULL), SPBE_INVALID_TOPIC);
    spbe_response resp;
    assert_int_equal(spbe_request(c, NULL, "x", 1, 100, NULL, &resp), SPBE_INVALID_TOPIC);
    assert_string_equal(resp.error, "invalid service name ''");
    assert_int_equal(spbe_request(c, "Bad Name", "x", 1, 100, NULL, &resp), SPBE_INVALID_TOPIC);
    assert_string_equal(resp.error, "invalid service name 'Bad Name'");
    fake_finish(&f);
    assert_int_equal(f.u[0], 42);
    assert_string_equal(f.s[0], "svc");
    spbe_close(&c);
}

/* ------------------------------------------------------------ other replies */

static void
script_other_replies(fake *f)
{
    f->heartbeat_ms = 5000;
    fake_hello(f);
    Spbe__V1__Command *cmd;
    fake_expect(f, SPBE__V1__COMMAND__BODY_DELIVERY_ACK, &cmd, NULL, NULL);
    if (cmd) {
        snprintf(f->s[0], sizeof f->s[0], "%s", cmd->delivery_ack->receipt ? "signed" : "");
        fake_reply(f, cmd->request_id, SPBE_OK, NULL); /* no count */
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_DELIVERY_ACK, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_OK, NULL);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_DELIVERY_ACK, NULL, NULL, NULL);
    Spbe__V1__Count n = SPBE__V1__COUNT__INIT;
    n.count = 5;
    Spbe__V1__Reply r = SPBE__V1__REPLY__INIT;
    r.request_id = rid;
    r.body_case = SPBE__V1__REPLY__BODY_COUNT;
    r.count = &n;
    fake_send_reply(f, &r, NULL, 0);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_CONSUME, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_OK, NULL); /* attached, without a subscription id */
    /* a delivery for the subscription being made comes before its reply */
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL);
    uint8_t *msg;
    size_t len;
    sign_message(&f->broker, "t.a", "early", &msg, &len);
    fake_delivery(f, 0, "t.a", 1, msg, len); /* no subscription has id 0 */
    fake_delivery(f, 3, "t.a", 1, msg, len);
    fake_subscribed(f, rid, 3);
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_TOPIC_LIST, NULL, NULL, NULL);
    fake_reply(f, rid, SPBE_OK, NULL);
    fake_delivery(f, 3, "t.a", 2, msg, len); /* to a client without a delivery handler */
    free(msg);
    fake_drain(f, 300);
}

static void
test_other_replies(void **state)
{
    (void)state;
    fake f = {0};
    seen s = {0};
    fake_start(&f, script_other_replies);
    spbe_client *c = connect_ok(&f, 2000, 0);
    assert_int_equal(spbe_next_timeout_ms(c), 1000); /* heartbeats of 5 s: at most a second */
    spbe_set_delivery_handler(c, on_delivery, &s);
    assert_int_equal(spbe_confirm_delivery(c, "t.a", 1, "cons", NULL), SPBE_OK);
    uint64_t leaf = 99;
    assert_int_equal(spbe_confirm_delivery(c, "t.a", 1, NULL, &leaf), SPBE_OK);
    assert_int_equal(leaf, 0); /* the broker named no leaf */
    assert_int_equal(spbe_confirm_delivery(c, "t.a", 2, NULL, &leaf), SPBE_OK);
    assert_int_equal(leaf, 5);
    char long_name[80];
    memset(long_name, 'c', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(spbe_consume(c, NULL, "t.>", NULL, NULL), SPBE_BAD_REQUEST);
    assert_int_equal(spbe_consume(c, long_name, "t.>", NULL, NULL), SPBE_BAD_REQUEST);
    assert_says(c, "consumer name must be 1 to 64");
    uint64_t cid = 0;
    assert_int_equal(spbe_consume(c, "cons", "t.>", NULL, &cid), SPBE_OK);
    assert_true(cid > 0);
    uint64_t sub;
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, &sub), SPBE_OK);
    assert_int_equal(spbe_next_timeout_ms(c), 0); /* the early delivery waits */
    int events = 0;
    assert_int_equal(spbe_dispatch(c, 0, &events), SPBE_OK);
    assert_int_equal(events, 1);
    assert_int_equal(s.deliveries, 1);
    assert_string_equal(s.topics[0], "t.a");
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    assert_int_equal(spbe_call(c, junk, sizeof junk, NULL, 0, &reply, &reply_len, NULL, NULL),
                     SPBE_BAD_REQUEST);
    assert_says(c, "not an encoded Command");
    assert_null(reply);
    spbe_set_delivery_handler(c, NULL, NULL);
    Spbe__V1__TopicList tl = SPBE__V1__TOPIC_LIST__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST;
    cmd.topic_list = &tl;
    uint8_t buf[64];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    assert_int_equal(spbe_call(c, buf, n, NULL, 0, &reply, &reply_len, NULL, NULL), SPBE_OK);
    assert_non_null(reply);
    Spbe__V1__Reply *r = spbe__v1__reply__unpack(NULL, reply_len, reply);
    assert_non_null(r);
    assert_int_equal(r->code, SPBE_OK);
    spbe__v1__reply__free_unpacked(r, NULL);
    free(reply);
    events = 0;
    assert_int_equal(spbe_dispatch(c, 2000, &events), SPBE_OK);
    assert_int_equal(events, 1);
    assert_int_equal(s.deliveries, 1); /* handled, but there was no handler to call */
    fake_finish(&f);
    assert_string_equal(f.s[0], "signed");
    spbe_close(&c);
}

/* A FrameBatch from the fake: replies, deliveries and their messages as given. */
static void
fake_batch(fake *f, Spbe__V1__Reply **replies, size_t n_replies, Spbe__V1__Delivery **deliveries,
           size_t n_deliveries, ProtobufCBinaryData *messages, size_t n_messages)
{
    Spbe__V1__FrameBatch fb = SPBE__V1__FRAME_BATCH__INIT;
    fb.replies = replies;
    fb.n_replies = n_replies;
    fb.deliveries = deliveries;
    fb.n_deliveries = n_deliveries;
    fb.messages = messages;
    fb.n_messages = n_messages;
    Spbe__V1__BrokerFrame fr = SPBE__V1__BROKER_FRAME__INIT;
    fr.body_case = SPBE__V1__BROKER_FRAME__BODY_BATCH;
    fr.batch = &fb;
    fake_send(f, &fr, NULL, 0);
}

/* Batches a broker would not send: the answer to a synchronous call inside one, with a
 * stray reply and deliveries behind it (one whose message does not decode, one for no
 * subscription, one with no message at all); then a receipt in a batch. */
static void
script_batches(fake *f)
{
    fake_hello(f);
    uint64_t rid = fake_expect(f, SPBE__V1__COMMAND__BODY_SUBSCRIBE, NULL, NULL, NULL);
    uint8_t *msg;
    size_t len;
    sign_message(&f->broker, "t.a", "hello", &msg, &len);
    Spbe__V1__Subscribed sd = SPBE__V1__SUBSCRIBED__INIT;
    sd.subscription_id = 7;
    Spbe__V1__Reply subscribed = SPBE__V1__REPLY__INIT, stray = SPBE__V1__REPLY__INIT;
    subscribed.request_id = rid;
    subscribed.body_case = SPBE__V1__REPLY__BODY_SUBSCRIBED;
    subscribed.subscribed = &sd;
    stray.request_id = 999999;
    Spbe__V1__Reply *replies[] = {&stray, &subscribed};
    Spbe__V1__Delivery d[5];
    Spbe__V1__Delivery *dp[5];
    const uint64_t subs[] = {7, 7, 99, 7, 7}, seqs[] = {1, 2, 3, 4, 5};
    for (int i = 0; i < 5; i++) {
        spbe__v1__delivery__init(&d[i]);
        d[i].subscription_id = subs[i];
        d[i].topic = "t.a";
        d[i].sequence = seqs[i];
        dp[i] = &d[i];
    }
    ProtobufCBinaryData m[] = {{len, msg}, {3, (uint8_t *)"xyz"}, {len, msg}};
    fake_batch(f, replies, 2, dp, 4, m, 3); /* seq 4 has no message */

    uint8_t *body;
    size_t body_len;
    rid = fake_expect(f, SPBE__V1__COMMAND__BODY_PUBLISH, NULL, &body, &body_len);
    free(body);
    Spbe__V1__Reply receipt;
    Spbe__V1__SignedReceipt sr;
    if (fake_receipt_reply(f, rid, SPBE_OK, "t.a", 9, WIRE_HASH_BYTES, &receipt, &sr) != 0) {
        free(msg);
        return;
    }
    Spbe__V1__Reply *r2[] = {&receipt};
    fake_batch(f, r2, 1, &dp[4], 1, m, 1);
    free(sr.receipt.data);
    free(msg);
    fake_drain(f, 300);
}

static void
test_batches_that_do_not_add_up(void **state)
{
    (void)state;
    fake f = {0};
    seen s = {0};
    fake_start(&f, script_batches);
    spbe_client *c = connect_ok(&f, 2000, 1);
    spbe_set_delivery_handler(c, on_delivery, &s);
    spbe_set_receipt_handler(c, on_receipt, &s);
    assert_int_equal(spbe_subscribe(c, "t.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    uint64_t t;
    assert_int_equal(spbe_publish_async(c, "t.a", "1", 1, NULL, &t), SPBE_OK);
    assert_int_equal(spbe_flush(c, 2000), SPBE_OK);
    for (int i = 0; i < 20 && s.deliveries < 2; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_int_equal(s.deliveries, 2); /* the two whole ones, in order */
    assert_int_equal(s.seqs[0], 1);
    assert_int_equal(s.seqs[1], 5);
    assert_int_equal(s.receipts, 1);
    const spbe_receipt *r = receipt_of(&s, t);
    assert_non_null(r);
    assert_int_equal(r->code, SPBE_OK);
    assert_int_equal(r->sequence, 9);
    assert_true(r->signed_by_broker);
    assert_true(spbe_connected(c));
    fake_finish(&f);
    spbe_close(&c);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_refusals),
        cmocka_unit_test(test_endpoint_and_key_resolution),
        cmocka_unit_test(test_final_goodbyes),
        cmocka_unit_test(test_goodbye_instead_of_a_reply),
        cmocka_unit_test(test_reconnect_resumes_everything),
        cmocka_unit_test(test_refused_when_coming_back),
        cmocka_unit_test(test_calls_while_reconnecting),
        cmocka_unit_test(test_unavailable_replies),
        cmocka_unit_test(test_lost_session_without_reconnect),
        cmocka_unit_test(test_unavailable_receipts),
        cmocka_unit_test(test_silent_broker),
        cmocka_unit_test(test_service_answers_that_do_not_add_up),
        cmocka_unit_test(test_service_requests_from_the_broker),
        cmocka_unit_test(test_other_replies),
        cmocka_unit_test(test_batches_that_do_not_add_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
