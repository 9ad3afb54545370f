/*
 * test_library.c - libspbe as an integrator meets it when things are not right: bad
 * identity files, a wrong or missing broker key, no broker, arguments out of the
 * contract, and a session the broker ended. Each gets its code and a readable reason;
 * none crashes or hangs.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "identity.h"
#include "wire.h"

typedef struct fixture {
    test_broker broker;
    char key[400];
} fixture;

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || wire_init() != SPBE_OK || harness_broker_start(&f->broker, NULL) != 0 ||
        harness_member(&f->broker, "bkn/siasn", "lib.>", "lib.>", "serve:lib.>,call:lib.>",
                       f->key) != 0)
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

static void
write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

/* spbe_connect's failure: the code, and a reason that names what is wrong. */
static void
assert_connect_fails(const char *path, const spbe_options *o, int code, const char *says)
{
    spbe_client *c = NULL;
    int rc = spbe_connect(path, o, &c);
    const char *why = c ? spbe_last_error(c) : "(no client)";
    if (rc != code)
        fail_msg("connect %s: %s (%s), wanted %s", path ? path : "(null)", spbe_error_name(rc), why,
                 spbe_error_name(code));
    if (says && c && !strstr(why, says))
        fail_msg("connect %s: the reason '%s' does not say '%s'", path ? path : "(null)", why,
                 says);
    spbe_close(&c);
    assert_null(c);
}

static void
test_identity_and_broker_problems(void **state)
{
    fixture *f = *state;
    char path[512];
    spbe_options quick = {.timeout_ms = 500};
    unsetenv("SPBE_KEY");
    assert_connect_fails(NULL, &quick, SPBE_BAD_REQUEST, "SPBE_KEY");
    assert_connect_fails("", &quick, SPBE_BAD_REQUEST, NULL);
    snprintf(path, sizeof path, "%s/nothing-here.key", f->broker.dir);
    assert_connect_fails(path, &quick, SPBE_NOT_FOUND, NULL);
    snprintf(path, sizeof path, "%s/garbage.key", f->broker.dir);
    write_file(path, "this is not an identity file\n");
    assert_connect_fails(path, &quick, SPBE_BAD_REQUEST, NULL);
    /* the public half only: it cannot sign */
    char pub[512];
    snprintf(pub, sizeof pub, "%s.pub", f->key);
    if (access(pub, R_OK) == 0)
        assert_connect_fails(pub, &quick, SPBE_BAD_REQUEST, "secret");
    /* a broker key that is not hex, and one that is another broker's */
    spbe_options bad_hex = {.timeout_ms = 500, .broker_key_hex = "not-hex"};
    assert_connect_fails(f->key, &bad_hex, SPBE_BAD_REQUEST, "broker key");
    identity another;
    identity_generate("spbe/another-broker", &another);
    char another_hex[2 * WIRE_KEY_BYTES + 1];
    wire_hex_encode(another.public_key, WIRE_KEY_BYTES, another_hex);
    spbe_options other = {.timeout_ms = 500, .broker_key_hex = another_hex};
    assert_connect_fails(f->key, &other, SPBE_UNAVAILABLE, NULL);
    /* nobody listening */
    spbe_options nobody = {.timeout_ms = 300, .endpoint = "tcp://127.0.0.1:1"};
    assert_connect_fails(f->key, &nobody, SPBE_UNAVAILABLE, NULL);
    /* a member the broker does not know */
    char stranger[400];
    assert_int_equal(harness_identity(&f->broker, "rogue/stranger", stranger), 0);
    assert_connect_fails(stranger, &quick, SPBE_UNKNOWN_SENDER, NULL);
    /* and the NULL-safe corners */
    spbe_close(NULL);
    assert_non_null(spbe_last_error(NULL));
    assert_non_null(spbe_version());
}

static void
on_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    (void)c;
    (void)r;
    (void)arg;
}

static void
test_arguments_out_of_the_contract(void **state)
{
    fixture *f = *state;
    spbe_client *c = harness_connect(&f->broker, f->key, 0);
    assert_non_null(c);
    assert_string_equal(spbe_member(c), "bkn/siasn");
    assert_non_null(spbe_broker_key(c));
    assert_true(spbe_fd(c) >= 0);
    assert_true(spbe_next_timeout_ms(c) >= 0);
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, NULL, "x", 1, NULL, &r), SPBE_INVALID_TOPIC);
    assert_int_equal(spbe_publish(c, "Lib.Upper", "x", 1, NULL, &r), SPBE_INVALID_TOPIC);
    assert_non_null(strstr(spbe_last_error(c), "invalid topic"));
    assert_int_equal(spbe_publish_async(c, "lib..empty", "x", 1, NULL, NULL), SPBE_INVALID_TOPIC);
    uint8_t *bytes;
    size_t len;
    assert_int_equal(spbe_sign(c, "lib.*", "x", 1, NULL, &bytes, &len), SPBE_INVALID_TOPIC);
    /* a publish with every option */
    uint8_t id[16] = {1, 2, 3}, corr[16] = {4};
    spbe_message_options o = {.id = id,
                              .schema = "spbe.domain.v1.AsnScenario",
                              .correlation_id = corr,
                              .correlation_len = sizeof corr,
                              .reply_to = "lib.replies",
                              .not_before_ns = 0,
                              .expires_ns = wire_now_ns() + 3600LL * 1000000000};
    assert_int_equal(spbe_publish(c, "lib.opts", NULL, 0, &o, &r), SPBE_OK);
    assert_int_equal(spbe_publish(c, "lib.opts", NULL, 0, &o, &r), SPBE_DUPLICATE);
    /* subscriptions and consumers */
    assert_int_equal(spbe_subscribe(c, "lib.>.bad", SPBE_START_NEW, 0, NULL), SPBE_INVALID_TOPIC);
    assert_int_equal(spbe_subscribe(c, "other.>", SPBE_START_NEW, 0, NULL), SPBE_FORBIDDEN);
    assert_int_equal(spbe_unsubscribe(c, 987654), SPBE_NOT_FOUND);
    assert_int_equal(spbe_consume(c, "Bad Name!", "lib.>", NULL, NULL), SPBE_BAD_REQUEST);
    /* attaching to a consumer that does not exist: a new one would need a pattern */
    assert_int_equal(spbe_consume(c, "no-such-consumer", NULL, NULL, NULL), SPBE_INVALID_TOPIC);
    assert_int_equal(spbe_ack(c, "no-such-consumer", "lib.x", 1, SPBE_ACK, 0, 1), SPBE_NOT_FOUND);
    assert_int_equal(spbe_confirm_delivery(c, NULL, 1, NULL, NULL), SPBE_BAD_REQUEST);
    assert_int_equal(spbe_confirm_delivery(c, "lib.opts", 0, NULL, NULL), SPBE_BAD_REQUEST);
    /* services */
    assert_int_equal(spbe_serve(c, NULL, on_request, NULL), SPBE_BAD_REQUEST);
    assert_int_equal(spbe_serve(c, "lib.svc", NULL, NULL), SPBE_BAD_REQUEST);
    assert_int_equal(spbe_serve(c, "other.svc", on_request, NULL), SPBE_FORBIDDEN);
    assert_int_equal(spbe_unserve(c, "lib.never-served"), SPBE_NOT_FOUND);
    spbe_response resp;
    assert_int_equal(spbe_request(c, "$sys.x", "x", 1, 300, NULL, &resp), SPBE_INVALID_TOPIC);
    spbe_response_free(&resp);
    assert_int_equal(spbe_request(c, "lib.nobody", "x", 1, 300, NULL, &resp), SPBE_UNAVAILABLE);
    assert_non_null(strstr(resp.error, "serves"));
    spbe_response_free(&resp);
    assert_int_equal(spbe_respond(c, "lib.svc", 424242, id, "x", 1, NULL, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(c, 2000), SPBE_OK); /* its receipt: NOT_FOUND, no reply waits */
    spbe_close(&c);
}

static void
test_a_session_the_broker_ends(void **state)
{
    fixture *f = *state;
    spbe_options o = {.timeout_ms = 2000, .no_reconnect = 1};
    spbe_client *c = NULL;
    assert_int_equal(spbe_connect(f->key, &o, &c), SPBE_OK);
    assert_true(spbe_connected(c));
    assert_int_equal(harness_broker_signal(&f->broker, SIGTERM) & 0x7f, 0);
    int rc = SPBE_OK;
    for (int i = 0; i < 50 && rc == SPBE_OK; i++)
        rc = spbe_dispatch(c, 100, NULL);
    assert_int_equal(rc, SPBE_UNAVAILABLE); /* the goodbye, final without reconnect */
    assert_false(spbe_connected(c));
    spbe_receipt r;
    assert_int_not_equal(spbe_publish(c, "lib.after", "x", 1, NULL, &r), SPBE_OK);
    assert_int_not_equal(spbe_subscribe(c, "lib.>", SPBE_START_NEW, 0, NULL), SPBE_OK);
    spbe_close(&c);
    assert_int_equal(harness_broker_restart(&f->broker), 0);
}

/* A command through spbe_call; the reply's code, and its reason into why. */
static int
call(spbe_client *c, Spbe__V1__Command *cmd, char *why, size_t why_len)
{
    uint8_t buf[4096];
    size_t n = spbe__v1__command__pack(cmd, buf);
    uint8_t *reply = NULL, *body = NULL;
    size_t reply_len = 0, body_len = 0;
    int rc = spbe_call(c, buf, n, NULL, 0, &reply, &reply_len, &body, &body_len);
    if (rc != SPBE_OK) {
        snprintf(why, why_len, "%s", spbe_last_error(c));
        return rc;
    }
    Spbe__V1__Reply *r = spbe__v1__reply__unpack(NULL, reply_len, reply);
    assert_non_null(r);
    int code = (int)r->code;
    snprintf(why, why_len, "%s", r->error ? r->error : "");
    spbe__v1__reply__free_unpacked(r, NULL);
    free(reply);
    free(body);
    return code;
}

static int
member_add(spbe_client *c, const char *name, const uint8_t *key, size_t key_len,
           Spbe__V1__MemberRights *rights, char *why)
{
    Spbe__V1__MemberAdd add = SPBE__V1__MEMBER_ADD__INIT;
    add.name = (char *)name;
    add.public_key.data = (uint8_t *)key;
    add.public_key.len = key_len;
    add.rights = rights;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_ADD;
    cmd.member_add = &add;
    return call(c, &cmd, why, 256);
}

/* The registry's commands refuse what is not a valid member, key, right or role, say
 * why, and change nothing; a plain member may not use them. */
static void
test_registry_commands_refuse_bad_input(void **state)
{
    fixture *f = *state;
    spbe_client *admin = harness_connect(&f->broker, f->broker.admin_key, 0);
    spbe_client *plain = harness_connect(&f->broker, f->key, 0);
    assert_non_null(admin);
    assert_non_null(plain);
    identity fresh, mine;
    char why[256], err[256];
    identity_generate("kemenkeu/tunjangan", &fresh);
    assert_int_equal(identity_load(f->key, &mine, err, sizeof err), SPBE_OK);
    char *bad_pattern[] = {"a..b"}, *bad_role[] = {"root"}, *good[] = {"lib.>"};
    Spbe__V1__MemberRights pats = SPBE__V1__MEMBER_RIGHTS__INIT, roles = pats, fine = pats;
    pats.publish = bad_pattern;
    pats.n_publish = 1;
    roles.roles = bad_role;
    roles.n_roles = 1;
    fine.subscribe = good;
    fine.n_subscribe = 1;
    assert_int_equal(member_add(admin, "No Slash", fresh.public_key, 32, &fine, why),
                     SPBE_BAD_REQUEST);
    assert_int_equal(member_add(admin, "kemenkeu/tunjangan", fresh.public_key, 31, &fine, why),
                     SPBE_BAD_REQUEST);
    assert_int_equal(member_add(admin, "kemenkeu/tunjangan", fresh.public_key, 32, &pats, why),
                     SPBE_BAD_REQUEST);
    assert_int_equal(member_add(admin, "kemenkeu/tunjangan", fresh.public_key, 32, &roles, why),
                     SPBE_BAD_REQUEST);
    assert_int_equal(member_add(admin, "bkn/siasn", fresh.public_key, 32, &fine, why),
                     SPBE_BAD_REQUEST); /* the name is taken */
    assert_int_equal(member_add(admin, "kemenkeu/tunjangan", mine.public_key, 32, &fine, why),
                     SPBE_BAD_REQUEST); /* the key is another member's */
    assert_int_equal(member_add(plain, "kemenkeu/tunjangan", fresh.public_key, 32, &fine, why),
                     SPBE_FORBIDDEN);
    assert_int_equal(member_add(admin, "kemenkeu/tunjangan", fresh.public_key, 32, NULL, why),
                     SPBE_OK); /* no rights at all: allowed, and useless */

    Spbe__V1__MemberRevoke rv = SPBE__V1__MEMBER_REVOKE__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_REVOKE;
    cmd.member_revoke = &rv;
    rv.name = "no/such-member";
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_NOT_FOUND);
    rv.name = "spbe/admin";
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_BAD_REQUEST); /* not oneself */
    rv.name = "kemenkeu/tunjangan";
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_FORBIDDEN);
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_OK);

    Spbe__V1__MemberRotate mr = SPBE__V1__MEMBER_ROTATE__INIT;
    cmd = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_ROTATE;
    cmd.member_rotate = &mr;
    identity next;
    identity_generate("bkn/siasn", &next);
    mr.name = "no/such-member";
    mr.public_key.data = next.public_key;
    mr.public_key.len = 32;
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_NOT_FOUND);
    mr.name = "kemenkeu/tunjangan"; /* revoked */
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_REVOKED);
    mr.name = "spbe/admin"; /* another member's key, by a plain member */
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_FORBIDDEN);
    mr.name = "bkn/siasn";
    mr.public_key.len = 16;
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_BAD_REQUEST);
    mr.public_key.data = mine.public_key; /* a key in use */
    mr.public_key.len = 32;
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_BAD_REQUEST);
    mr.public_key.data = next.public_key; /* oneself, without proof of the new key */
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_BAD_SIGNATURE);

    /* looking up what is not there */
    Spbe__V1__MemberGet mg = SPBE__V1__MEMBER_GET__INIT;
    mg.name = "no/such-member";
    cmd = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET;
    cmd.member_get = &mg;
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_NOT_FOUND);
    Spbe__V1__TopicGet tg = SPBE__V1__TOPIC_GET__INIT;
    tg.topic = "Not A Topic";
    cmd = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_GET;
    cmd.topic_get = &tg;
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_INVALID_TOPIC);
    tg.topic = "lib.never";
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_NOT_FOUND);
    Spbe__V1__MessageGet get = SPBE__V1__MESSAGE_GET__INIT;
    get.topic = "lib.never";
    get.sequence = 1;
    cmd = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MESSAGE_GET;
    cmd.message_get = &get;
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_NOT_FOUND);
    get.topic = "$sys.audit.head"; /* not the member's to read */
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_FORBIDDEN);
    Spbe__V1__SessionList sl = SPBE__V1__SESSION_LIST__INIT;
    cmd = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_SESSION_LIST;
    cmd.session_list = &sl;
    assert_int_equal(call(plain, &cmd, why, sizeof why), SPBE_FORBIDDEN);
    assert_int_equal(call(admin, &cmd, why, sizeof why), SPBE_OK);
    spbe_close(&plain);
    spbe_close(&admin);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_and_broker_problems),
        cmocka_unit_test(test_arguments_out_of_the_contract),
        cmocka_unit_test(test_registry_commands_refuse_bad_input),
        cmocka_unit_test(test_a_session_the_broker_ends),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
