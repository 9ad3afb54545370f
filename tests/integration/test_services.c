/* test_services.c - request/reply between members through the real broker: round
 * trip, UNAVAILABLE, TIMEOUT, spreading over two servers, forged replies refused,
 * serving and consuming right after a broker restart. */
#include <poll.h>
#include <pthread.h>
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
#include <zmq.h>

#include "harness.h"
#include "spbe/v1/spbe.pb-c.h"
#include "wire.h"

typedef struct fixture {
    test_broker broker;
    char server[400], server2[400], caller[400], outsider[400], adapter[400];
} fixture;

/* A server on its own thread: dispatches until told to stop. */
typedef struct server {
    spbe_client *client;
    pthread_t thread;
    volatile int stop;
    int answer; /* 0: never answers */
    int served;
    int forge; /* first tries a reply with a broken signature, and another session tries too */
    int forged_code, outsider_code;
    spbe_client *outsider;
} server;

static void
on_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    server *sv = arg;
    sv->served++;
    if (!sv->answer)
        return;
    char out[256];
    size_t n = r->payload_len < 200 ? r->payload_len : 200;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)(r->payload[i] >= 'a' && r->payload[i] <= 'z' ? r->payload[i] - 32
                                                                     : r->payload[i]);
    if (sv->forge) {
        char topic[300];
        snprintf(topic, sizeof topic, "$sys.svc.%s", r->service);
        spbe_message_options o = {.correlation_id = r->id, .correlation_len = 16};
        uint8_t *bytes;
        size_t len;
        assert_int_equal(spbe_sign(c, topic, "forged", 6, &o, &bytes, &len), SPBE_OK);
        Spbe__V1__Respond respond = SPBE__V1__RESPOND__INIT;
        respond.request_ref = r->ref;
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        cmd.body_case = SPBE__V1__COMMAND__BODY_RESPOND;
        cmd.respond = &respond;
        uint8_t packed[64];
        size_t plen = spbe__v1__command__pack(&cmd, packed);
        /* the same reply from a session the request did not go to */
        uint8_t *reply, *body;
        size_t reply_len, body_len;
        assert_int_equal(
            spbe_call(sv->outsider, packed, plen, bytes, len, &reply, &reply_len, &body, &body_len),
            SPBE_OK);
        Spbe__V1__Reply *rp = spbe__v1__reply__unpack(NULL, reply_len, reply);
        sv->outsider_code = (int)rp->code;
        spbe__v1__reply__free_unpacked(rp, NULL);
        free(reply);
        free(body);
        /* and from the right session with a broken signature */
        bytes[len - 3] ^= 0x20;
        assert_int_equal(
            spbe_call(c, packed, plen, bytes, len, &reply, &reply_len, &body, &body_len), SPBE_OK);
        rp = spbe__v1__reply__unpack(NULL, reply_len, reply);
        sv->forged_code = (int)rp->code;
        spbe__v1__reply__free_unpacked(rp, NULL);
        free(reply);
        free(body);
        free(bytes);
    }
    assert_int_equal(spbe_respond(c, r->service, r->ref, r->id, out, n, NULL, NULL), SPBE_OK);
}

static void *
server_main(void *arg)
{
    server *sv = arg;
    while (!sv->stop)
        spbe_dispatch(sv->client, 50, NULL);
    spbe_flush(sv->client, 2000);
    return NULL;
}

static void
server_start(fixture *f, server *sv, const char *key, const char *service)
{
    sv->client = harness_connect(&f->broker, key, 0);
    assert_non_null(sv->client);
    assert_int_equal(spbe_serve(sv->client, service, on_request, sv), SPBE_OK);
    assert_int_equal(pthread_create(&sv->thread, NULL, server_main, sv), 0);
}

static void
server_stop(server *sv)
{
    sv->stop = 1;
    pthread_join(sv->thread, NULL);
    spbe_close(&sv->client);
}

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (harness_broker_start(&f->broker, NULL) != 0)
        return -1;
    if (harness_member(&f->broker, "bkn/layanan", NULL, NULL, "serve:svc.>", f->server) ||
        harness_member(&f->broker, "bkn/layanan2", NULL, NULL, "serve:svc.>", f->server2) ||
        harness_member(&f->broker, "kemenpan/app", NULL, NULL, "call:svc.>", f->caller) ||
        harness_member(&f->broker, "other/app", NULL, NULL, "call:svc.>", f->outsider) ||
        harness_member(&f->broker, "bkn/adapter", "ikn.loop.>", "ikn.loop.>", "serve:svc.loop",
                       f->adapter))
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
    return rc;
}

static int64_t
ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
test_round_trip_signed_and_logged(void **state)
{
    fixture *f = *state;
    server sv = {.answer = 1};
    server_start(f, &sv, f->server, "svc.echo");
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    spbe_response r;
    assert_int_equal(spbe_request(c, "svc.echo", "halo", 4, 5000, NULL, &r), SPBE_OK);
    assert_int_equal(r.payload_len, 4);
    assert_memory_equal(r.payload, "HALO", 4);
    assert_string_equal(r.server, "bkn/layanan");
    assert_true(r.receipts_verified);
    assert_true(r.reply_sequence > r.request_sequence);
    /* the reply is the server's signed bytes: it verifies end to end */
    spbe_delivery d = {.sender = r.server, .raw = r.raw, .raw_len = r.raw_len};
    assert_int_equal(spbe_verify(c, &d), SPBE_OK);
    spbe_response_free(&r);
    /* both are in the log, provable later */
    assert_int_equal(harness_stored(&f->broker, "$sys.svc.svc.echo"), 2);
    /* the caller may not serve, the server may not call */
    assert_int_equal(spbe_serve(c, "svc.echo", on_request, NULL), SPBE_FORBIDDEN);
    spbe_client *as_server = harness_connect(&f->broker, f->server, 0);
    assert_int_equal(spbe_request(as_server, "svc.echo", "x", 1, 1000, NULL, &r), SPBE_FORBIDDEN);
    spbe_response_free(&r);
    spbe_close(&as_server);
    spbe_close(&c);
    server_stop(&sv);
}

static void
test_no_server_is_unavailable_at_once(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    spbe_response r;
    int64_t t0 = ms_now();
    assert_int_equal(spbe_request(c, "svc.nobody", "x", 1, 10000, NULL, &r), SPBE_UNAVAILABLE);
    assert_true(ms_now() - t0 < 2000);
    assert_non_null(strstr(r.error, "serves"));
    spbe_response_free(&r);
    assert_int_equal(harness_stored(&f->broker, "$sys.svc.svc.nobody"), 0);
    /* the session is fine afterwards */
    assert_int_equal(spbe_request(c, "svc.nobody", "x", 1, 1000, NULL, &r), SPBE_UNAVAILABLE);
    spbe_response_free(&r);
    spbe_close(&c);
}

static void
test_no_reply_in_time_is_timeout(void **state)
{
    fixture *f = *state;
    server sv = {.answer = 0};
    server_start(f, &sv, f->server, "svc.silent");
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    spbe_response r;
    int64_t t0 = ms_now();
    assert_int_equal(spbe_request(c, "svc.silent", "x", 1, 300, NULL, &r), SPBE_TIMEOUT);
    int64_t took = ms_now() - t0;
    assert_true(took >= 250 && took < 2500);
    spbe_response_free(&r);
    assert_int_equal(sv.served, 1);
    assert_int_equal(harness_stored(&f->broker, "$sys.svc.svc.silent"), 1); /* logged */
    spbe_close(&c);
    server_stop(&sv);
}

static void
test_load_spreads_over_two_servers(void **state)
{
    fixture *f = *state;
    server a = {.answer = 1}, b = {.answer = 1};
    server_start(f, &a, f->server, "svc.spread");
    server_start(f, &b, f->server2, "svc.spread");
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    int by_a = 0, by_b = 0;
    for (int i = 0; i < 20; i++) {
        spbe_response r;
        assert_int_equal(spbe_request(c, "svc.spread", "q", 1, 5000, NULL, &r), SPBE_OK);
        if (strcmp(r.server, "bkn/layanan") == 0)
            by_a++;
        else if (strcmp(r.server, "bkn/layanan2") == 0)
            by_b++;
        spbe_response_free(&r);
    }
    assert_int_equal(by_a + by_b, 20);
    if (by_a < 5 || by_b < 5)
        fail_msg("uneven spread: %d by the first server, %d by the second", by_a, by_b);
    /* one server goes: the other takes everything */
    server_stop(&a);
    for (int i = 0; i < 5; i++) {
        spbe_response r;
        assert_int_equal(spbe_request(c, "svc.spread", "q", 1, 5000, NULL, &r), SPBE_OK);
        assert_string_equal(r.server, "bkn/layanan2");
        spbe_response_free(&r);
    }
    spbe_close(&c);
    server_stop(&b);
}

/* A server that vanished without a goodbye (killed: its heartbeats have not timed out
 * yet) is passed over: every request reaches the live one, none gets UNAVAILABLE. */
static void
test_vanished_server_is_passed_over(void **state)
{
    fixture *f = *state;
    void *ctx = zmq_ctx_new();
    void *raw = harness_raw_connect(&f->broker, ctx, f->server, 0);
    assert_non_null(raw);
    assert_int_equal(harness_raw_reply(raw, NULL), SPBE_OK); /* welcome */
    Spbe__V1__Serve sv_cmd = SPBE__V1__SERVE__INIT;
    sv_cmd.service = "svc.vanish";
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 2;
    cmd.body_case = SPBE__V1__COMMAND__BODY_SERVE;
    cmd.serve = &sv_cmd;
    uint8_t buf[128];
    size_t n = spbe__v1__command__pack(&cmd, buf);
    assert_int_equal(zmq_send(raw, buf, n, 0), (int)n);
    assert_int_equal(harness_raw_reply(raw, NULL), SPBE_OK);
    server live = {.answer = 1};
    server_start(f, &live, f->server2, "svc.vanish");
    zmq_close(raw); /* gone, no goodbye */
    zmq_ctx_term(ctx);
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    for (int i = 0; i < 6; i++) {
        spbe_response r;
        int rc = spbe_request(c, "svc.vanish", "q", 1, 5000, NULL, &r);
        if (rc != SPBE_OK)
            fail_msg("request %d: %s: %s", i, spbe_error_name(rc), r.error);
        assert_string_equal(r.server, "bkn/layanan2");
        spbe_response_free(&r);
    }
    spbe_close(&c);
    server_stop(&live);
}

static void
test_forged_replies_are_refused(void **state)
{
    fixture *f = *state;
    server sv = {.answer = 1, .forge = 1};
    sv.outsider = harness_connect(&f->broker, f->outsider, 0);
    server_start(f, &sv, f->server, "svc.forge");
    spbe_client *c = harness_connect(&f->broker, f->caller, 0);
    spbe_response r;
    assert_int_equal(spbe_request(c, "svc.forge", "genuine", 7, 5000, NULL, &r), SPBE_OK);
    assert_memory_equal(r.payload, "GENUINE", 7); /* the real answer, not the forgeries */
    spbe_response_free(&r);
    assert_int_equal(sv.outsider_code, SPBE_FORBIDDEN);
    assert_int_equal(sv.forged_code, SPBE_BAD_SIGNATURE);
    assert_int_equal(harness_stored(&f->broker, "$sys.svc.svc.forge"), 2); /* no forgery stored */
    spbe_close(&c);
    server_stop(&sv);
    spbe_close(&sv.outsider);
}

/* An adapter in one thread: it consumes, serves and publishes from one poll() loop. */
typedef struct loop_state {
    spbe_client *c;
    int delivered, served, receipts;
} loop_state;

static void
loop_delivery(const spbe_delivery *d, void *arg)
{
    loop_state *st = arg;
    st->delivered++;
    assert_int_equal(spbe_ack(st->c, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 0), SPBE_OK);
}

static void
loop_receipt(const spbe_receipt *r, void *arg)
{
    loop_state *st = arg;
    assert_int_equal(r->code, SPBE_OK);
    st->receipts++;
}

static void
loop_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    loop_state *st = arg;
    st->served++;
    char answer[64];
    int n = snprintf(answer, sizeof answer, "delivered %d", st->delivered);
    assert_int_equal(spbe_respond(c, r->service, r->ref, r->id, answer, (size_t)n, NULL, NULL),
                     SPBE_OK);
}

typedef struct loop_caller {
    test_broker *broker;
    const char *key;
    int ok;
} loop_caller;

static void *
loop_call(void *arg)
{
    loop_caller *lc = arg;
    spbe_client *c = harness_connect(lc->broker, lc->key, 0);
    for (int i = 0; c && i < 5; i++) {
        spbe_response r;
        if (spbe_request(c, "svc.loop", "?", 1, 5000, NULL, &r) == SPBE_OK &&
            strncmp((const char *)r.payload, "delivered", 9) == 0)
            lc->ok++;
        spbe_response_free(&r);
    }
    spbe_close(&c);
    return NULL;
}

static void
test_one_thread_consumes_serves_and_publishes(void **state)
{
    fixture *f = *state;
    loop_state st = {0};
    st.c = harness_connect(&f->broker, f->adapter, 0);
    spbe_set_delivery_handler(st.c, loop_delivery, &st);
    spbe_set_receipt_handler(st.c, loop_receipt, &st);
    assert_int_equal(spbe_consume(st.c, "putaran", "ikn.loop.>", NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_serve(st.c, "svc.loop", loop_request, &st), SPBE_OK);
    loop_caller lc = {&f->broker, f->caller, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, loop_call, &lc), 0);
    int published = 0;
    int64_t end = ms_now() + 20000;
    while ((st.delivered < 50 || st.receipts < 55 || st.served < 5) && ms_now() < end) {
        if (published < 50) {
            assert_int_equal(spbe_publish_async(st.c, "ikn.loop.a", "x", 1, NULL, NULL), SPBE_OK);
            published++;
        }
        assert_int_equal(spbe_dispatch(st.c, 0, NULL), SPBE_OK); /* what the calls left */
        struct pollfd p = {.fd = spbe_fd(st.c), .events = POLLIN};
        assert_true(p.fd >= 0);
        int timeout = spbe_next_timeout_ms(st.c);
        assert_true(poll(&p, 1, published < 50 ? 0 : timeout > 100 ? 100 : timeout) >= 0);
        assert_int_equal(spbe_dispatch(st.c, 0, NULL), SPBE_OK);
    }
    pthread_join(th, NULL);
    assert_int_equal(st.delivered, 50);
    assert_int_equal(st.receipts, 55); /* 50 publishes and 5 replies */
    assert_int_equal(st.served, 5);
    assert_int_equal(lc.ok, 5);
    spbe_close(&st.c);
}

/* The CLI, as a script uses it: serve answers with a command's output. */
static void
test_cli_serve_and_req(void **state)
{
    fixture *f = *state;
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "$SPBE serve svc.cli --count 1 --key %s -- tr a-z A-Z & "
                         "for i in 1 2 3 4 5 6 7 8 9 10; do "
                         "  $SPBE req svc.cli 'halo ikn' --timeout-ms 3000 --key %s && break; "
                         "  sleep 0.3; "
                         "done; wait",
                         f->server, f->caller);
    if (rc != 0 || strcmp(out, "HALO IKN") != 0)
        fail_msg("exit %d, out '%s', err '%s'", rc, out, err);
    /* nobody serves it now: UNAVAILABLE, exit 1 */
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE req svc.cli x --key %s", f->caller);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "UNAVAILABLE"));
}

/* The broker restarts between a client's connect and its serve or consume: the new
 * broker answers that it has no session, the client says hello again, and the command
 * goes once more in the new session instead of failing (an adapter that serves stays
 * up through the restart). Last in the group: it restarts the broker. */
static void
test_serve_and_consume_right_after_a_broker_restart(void **state)
{
    fixture *f = *state;
    server sv = {.answer = 1};
    loop_state st = {0};
    assert_non_null(sv.client = harness_connect(&f->broker, f->server, 0));
    assert_non_null(st.c = harness_connect(&f->broker, f->adapter, 0));
    spbe_set_delivery_handler(st.c, loop_delivery, &st);
    harness_broker_signal(&f->broker, SIGKILL);
    assert_int_equal(harness_broker_restart(&f->broker), 0);

    int rc = spbe_serve(sv.client, "svc.again", on_request, &sv);
    if (rc != SPBE_OK)
        fail_msg("serve after the restart: %s", spbe_last_error(sv.client));
    rc = spbe_consume(st.c, "lagi", "ikn.loop.again", NULL, NULL);
    if (rc != SPBE_OK)
        fail_msg("consume after the restart: %s", spbe_last_error(st.c));
    assert_int_equal(pthread_create(&sv.thread, NULL, server_main, &sv), 0);
    spbe_client *caller = harness_connect(&f->broker, f->caller, 0);
    assert_non_null(caller);
    spbe_response r;
    assert_int_equal(spbe_request(caller, "svc.again", "halo", 4, 5000, NULL, &r), SPBE_OK);
    assert_int_equal(r.payload_len, 4);
    assert_memory_equal(r.payload, "HALO", 4);
    spbe_response_free(&r);
    spbe_close(&caller);
    server_stop(&sv);

    spbe_receipt receipt;
    assert_int_equal(spbe_publish(st.c, "ikn.loop.again", "y", 1, NULL, &receipt), SPBE_OK);
    assert_int_equal(receipt.code, SPBE_OK);
    for (int64_t end = ms_now() + 10000; st.delivered < 1 && ms_now() < end;)
        assert_int_equal(spbe_dispatch(st.c, 100, NULL), SPBE_OK);
    assert_int_equal(st.delivered, 1);
    spbe_close(&st.c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_signed_and_logged),
        cmocka_unit_test(test_no_server_is_unavailable_at_once),
        cmocka_unit_test(test_no_reply_in_time_is_timeout),
        cmocka_unit_test(test_load_spreads_over_two_servers),
        cmocka_unit_test(test_vanished_server_is_passed_over),
        cmocka_unit_test(test_forged_replies_are_refused),
        cmocka_unit_test(test_one_thread_consumes_serves_and_publishes),
        cmocka_unit_test(test_cli_serve_and_req),
        cmocka_unit_test(test_serve_and_consume_right_after_a_broker_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
