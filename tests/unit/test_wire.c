/* test_wire.c - the protocol library: error codes, names, topics, envelopes,
 * receipts, identity files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <sodium.h>

#include "identity.h"
#include "spbe/errors.h"
#include "wire.h"

static void
test_error_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < SPBE_ERROR_COUNT; i++) {
        assert_int_equal(spbe_error_from_name(spbe_error_name(i)), i);
        assert_true(strlen(spbe_strerror(i)) > 0);
    }
    assert_string_equal(spbe_error_name(SPBE_BAD_SIGNATURE), "BAD_SIGNATURE");
    assert_string_equal(spbe_error_name(SPBE_ERROR_COUNT), "UNKNOWN_CODE");
    assert_string_equal(spbe_error_name(-1), "UNKNOWN_CODE");
    assert_int_equal(spbe_error_from_name("NOPE"), -1);
    /* the C enum and the wire enum agree */
    assert_int_equal(SPBE_INTERNAL, SPBE__V1__ERROR_CODE__INTERNAL);
    assert_int_equal(SPBE_DUPLICATE, SPBE__V1__ERROR_CODE__DUPLICATE);
}

static void
test_member_names_are_agency_slash_app(void **state)
{
    (void)state;
    assert_true(wire_member_valid("bkn/siasn"));
    assert_true(wire_member_valid("kemenpanrb/e-formasi"));
    assert_true(wire_member_valid("portal/layanan_asn2"));
    const char *bad[] = {"BKN/siasn", "bknsiasn", "a/b/c", "/siasn",    "bkn/",
                         "bkn /x",    "",         "a/",    "bkn/si.asn"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(wire_member_valid(bad[i]));
    char longname[80];
    memset(longname, 'a', sizeof longname);
    longname[10] = '/';
    longname[65] = '\0';
    assert_false(wire_member_valid(longname));
    longname[64] = '\0';
    assert_true(wire_member_valid(longname));
}

static void
test_topics_follow_the_token_rules(void **state)
{
    (void)state;
    assert_true(wire_topic_valid("ikn.relokasi.asn.ditetapkan"));
    assert_true(wire_topic_valid("$sys.dlq.portal"));
    assert_true(wire_topic_valid("a"));
    const char *bad[] = {"",      ".a",  "a.",     "a..b", "Ikn.x",   "ikn.*",
                         "ikn.>", "a b", "$foo.x", "$sys", "ikn.$sys"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(wire_topic_valid(bad[i]));
    char t[300] = "";
    for (int i = 0; i < 16; i++)
        strcat(t, i ? ".t" : "t");
    assert_true(wire_topic_valid(t)); /* 16 tokens */
    strcat(t, ".t");
    assert_false(wire_topic_valid(t)); /* 17 */
    memset(t, 'a', 255);
    t[255] = '\0';
    assert_true(wire_topic_valid(t));
    t[255] = 'a';
    t[256] = '\0';
    assert_false(wire_topic_valid(t));
}

static void
test_patterns_take_star_and_trailing_gt(void **state)
{
    (void)state;
    const char *good[] = {"*", ">", "a.*.c", "a.>", "*.*", "$sys.>"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(wire_pattern_valid(good[i]));
    const char *bad[] = {"", "a.>.b", "a*", "a.b*", ">.a", "a..*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(wire_pattern_valid(bad[i]));
}

static void
test_pattern_matching(void **state)
{
    (void)state;
    assert_true(wire_pattern_match("ikn.*.asn", "ikn.relokasi.asn"));
    assert_false(wire_pattern_match("ikn.*.asn", "ikn.relokasi.x.asn"));
    assert_true(wire_pattern_match("ikn.>", "ikn.a"));
    assert_true(wire_pattern_match("ikn.>", "ikn.a.b.c"));
    assert_false(wire_pattern_match("ikn.>", "ikn"));
    assert_false(wire_pattern_match("ikn.*", "ikn"));
    assert_false(wire_pattern_match("ikn.a", "ikn.a.b"));
    assert_false(wire_pattern_match("ikn.a.b", "ikn.a"));
    assert_true(wire_pattern_match("a.b", "a.b"));
    assert_false(wire_pattern_match(">", "$sys.audit.head"));
    assert_false(wire_pattern_match("*.audit.head", "$sys.audit.head"));
    assert_true(wire_pattern_match("$sys.>", "$sys.audit.head"));
}

static void
test_pattern_coverage_for_rights(void **state)
{
    (void)state;
    assert_true(wire_pattern_covers("ikn.>", "ikn.relokasi.*"));
    assert_true(wire_pattern_covers("ikn.>", "ikn.a.>"));
    assert_true(wire_pattern_covers("ikn.>", "ikn.a"));
    assert_false(wire_pattern_covers("ikn.*", "ikn.>"));
    assert_true(wire_pattern_covers("ikn.*", "ikn.*"));
    assert_true(wire_pattern_covers("*.b", "a.b"));
    assert_false(wire_pattern_covers("a.b", "a.*"));
    assert_false(wire_pattern_covers("ikn.>", "ikn"));
    assert_false(wire_pattern_covers("ikn.>", ">"));
    assert_true(wire_pattern_covers(">", "a.>"));
    assert_false(wire_pattern_covers(">", "$sys.>"));
}

static void
test_hex_round_trip_and_refusals(void **state)
{
    (void)state;
    uint8_t in[4] = {0x00, 0xab, 0x10, 0xff}, out[4];
    char hex[9];
    wire_hex_encode(in, 4, hex);
    assert_string_equal(hex, "00ab10ff");
    assert_int_equal(wire_hex_decode(hex, out, 4), SPBE_OK);
    assert_memory_equal(in, out, 4);
    assert_int_equal(wire_hex_decode("00ab10f", out, 4), SPBE_BAD_REQUEST);
    assert_int_equal(wire_hex_decode("00ab10fff0", out, 4), SPBE_BAD_REQUEST);
    assert_int_equal(wire_hex_decode("00ab10fg", out, 4), SPBE_BAD_REQUEST);
}

static uint8_t *
signed_sample(const identity *id, const char *topic, size_t *len)
{
    uint8_t msg_id[16] = {1, 2, 3};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = msg_id;
    m.id.len = 16;
    m.topic = (char *)topic;
    m.sender = (char *)id->member;
    m.created_ns = 1700000000000000000;
    m.schema = "spbe.domain.v1.AsnScenario";
    m.payload.data = (uint8_t *)"NIP 199001012020121001";
    m.payload.len = 22;
    uint8_t *out;
    assert_int_equal(wire_message_sign(&m, id->secret_key, &out, len), SPBE_OK);
    return out;
}

static void
test_envelope_signs_and_verifies(void **state)
{
    (void)state;
    identity id;
    assert_int_equal(identity_generate("bkn/siasn", &id), SPBE_OK);
    size_t len;
    uint8_t *bytes = signed_sample(&id, "ikn.relokasi.asn", &len);
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    assert_int_equal(wire_envelope_decode(bytes, len, &sm, &m, NULL), SPBE_OK);
    assert_string_equal(m->topic, "ikn.relokasi.asn");
    assert_string_equal(m->sender, "bkn/siasn");
    assert_int_equal(m->payload.len, 22);
    assert_int_equal(wire_envelope_verify(sm, id.public_key), SPBE_OK);
    identity other;
    identity_generate("bkn/other", &other);
    assert_int_equal(wire_envelope_verify(sm, other.public_key), SPBE_BAD_SIGNATURE);
    wire_envelope_free(&sm, &m);
    assert_null(sm);
    assert_null(m);
    free(bytes);
}

static void
test_envelope_rejects_every_single_flipped_byte(void **state)
{
    (void)state;
    identity id;
    identity_generate("bkn/siasn", &id);
    size_t len;
    uint8_t *bytes = signed_sample(&id, "ikn.relokasi.asn", &len);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            bytes[i] ^= (uint8_t)(1u << bit);
            Spbe__V1__SignedMessage *sm;
            Spbe__V1__Message *m;
            int rc = wire_envelope_decode(bytes, len, &sm, &m, NULL);
            if (rc == SPBE_OK)
                rc = wire_envelope_verify(sm, id.public_key);
            assert_int_not_equal(rc, SPBE_OK);
            wire_envelope_free(&sm, &m);
            bytes[i] ^= (uint8_t)(1u << bit);
        }
    }
    free(bytes);
}

static void
test_envelope_shape_errors(void **state)
{
    (void)state;
    identity id;
    identity_generate("bkn/siasn", &id);
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    const char *reason = NULL;
    assert_int_equal(wire_envelope_decode((const uint8_t *)"\xff\xff\xff", 3, &sm, &m, &reason),
                     SPBE_BAD_REQUEST);
    assert_non_null(reason);
    size_t len;
    uint8_t *bytes = signed_sample(&id, "Bad..Topic", &len);
    assert_int_equal(wire_envelope_decode(bytes, len, &sm, &m, NULL), SPBE_INVALID_TOPIC);
    wire_envelope_free(&sm, &m);
    assert_int_equal(wire_envelope_decode(bytes, len / 2, &sm, &m, NULL), SPBE_BAD_REQUEST);
    wire_envelope_free(&sm, &m);
    free(bytes);

    uint8_t short_id[3] = {1, 2, 3};
    Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
    msg.id.data = short_id;
    msg.id.len = 3;
    msg.topic = "ikn.a";
    msg.sender = id.member;
    assert_int_equal(wire_message_sign(&msg, id.secret_key, &bytes, &len), SPBE_OK);
    assert_int_equal(wire_envelope_decode(bytes, len, &sm, &m, &reason), SPBE_BAD_REQUEST);
    assert_string_equal(reason, "message id must be 16 bytes");
    wire_envelope_free(&sm, &m);
    free(bytes);
}

static void
test_receipt_and_message_signatures_do_not_cross(void **state)
{
    (void)state;
    identity broker;
    identity_generate("spbe/broker", &broker);
    Spbe__V1__Receipt r = SPBE__V1__RECEIPT__INIT;
    r.code = SPBE__V1__ERROR_CODE__OK;
    r.topic = "ikn.a";
    r.sequence = 7;
    Spbe__V1__SignedReceipt sr;
    assert_int_equal(wire_receipt_sign(&r, broker.secret_key, &sr), SPBE_OK);
    Spbe__V1__Receipt *back;
    assert_int_equal(wire_receipt_verify(&sr, broker.public_key, &back), SPBE_OK);
    assert_int_equal(back->sequence, 7);
    spbe__v1__receipt__free_unpacked(back, NULL);
    /* the same bytes and signature presented as a message do not verify */
    assert_int_equal(wire_verify_detached(WIRE_CONTEXT_MESSAGE, sr.receipt.data, sr.receipt.len,
                                          sr.signature.data, sr.signature.len, broker.public_key),
                     SPBE_BAD_SIGNATURE);
    sr.receipt.data[0] ^= 1;
    assert_int_equal(wire_receipt_verify(&sr, broker.public_key, &back), SPBE_BAD_SIGNATURE);
    assert_null(back);
    free(sr.receipt.data);
}

static char tmpdir[64];

static int
make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/spbe-unit-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int
remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
test_identity_files_round_trip_with_mode_0600(void **state)
{
    (void)state;
    identity id, back;
    char path[128], err[256];
    assert_int_equal(identity_generate("dukcapil/ikd", &id), SPBE_OK);
    snprintf(id.broker, sizeof id.broker, "tcp://127.0.0.1:7400");
    snprintf(path, sizeof path, "%s/ikd.key", tmpdir);
    assert_int_equal(identity_save(&id, path, 0, err, sizeof err), SPBE_OK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(identity_load(path, &back, err, sizeof err), SPBE_OK);
    assert_string_equal(back.member, "dukcapil/ikd");
    assert_memory_equal(back.secret_key, id.secret_key, 64);
    assert_string_equal(back.broker, "tcp://127.0.0.1:7400");
    assert_true(back.has_secret);
    /* no overwrite unless asked */
    assert_int_not_equal(identity_save(&id, path, 0, err, sizeof err), SPBE_OK);
    /* a secret readable by others is refused */
    chmod(path, 0644);
    assert_int_equal(identity_load(path, &back, err, sizeof err), SPBE_BAD_REQUEST);
    assert_non_null(strstr(err, "chmod 600"));
    /* the public part */
    char pub[140];
    snprintf(pub, sizeof pub, "%s.pub", path);
    assert_int_equal(identity_save_public(&id, pub, 0, err, sizeof err), SPBE_OK);
    assert_int_equal(identity_load(pub, &back, err, sizeof err), SPBE_OK);
    assert_false(back.has_secret);
    assert_memory_equal(back.public_key, id.public_key, 32);
}

static void
test_identity_refusals(void **state)
{
    (void)state;
    identity id;
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/missing.key", tmpdir);
    assert_int_equal(identity_load(path, &id, err, sizeof err), SPBE_NOT_FOUND);
    snprintf(path, sizeof path, "%s/bad.key", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("member = bkn/siasn\nthis line has no equals sign\n", f);
    fclose(f);
    chmod(path, 0600);
    assert_int_equal(identity_load(path, &id, err, sizeof err), SPBE_BAD_REQUEST);
    assert_non_null(strstr(err, ":2:"));
    /* keys that do not belong together */
    identity a, b;
    identity_generate("bkn/a", &a);
    identity_generate("bkn/b", &b);
    memcpy(a.public_key, b.public_key, 32);
    snprintf(path, sizeof path, "%s/mixed.key", tmpdir);
    assert_int_equal(identity_save(&a, path, 1, err, sizeof err), SPBE_OK);
    assert_int_equal(identity_load(path, &id, err, sizeof err), SPBE_BAD_REQUEST);
    assert_int_equal(identity_generate("Not A Name", &id), SPBE_BAD_REQUEST);
}

static void
test_curve_keys_derive_from_the_member_key(void **state)
{
    (void)state;
    identity id;
    identity_generate("bkn/siasn", &id);
    uint8_t pub[32], sec[32], derived[32];
    assert_int_equal(wire_curve_public(id.public_key, pub), 0);
    assert_int_equal(wire_curve_secret(id.secret_key, sec), 0);
    /* X25519 public from the converted secret equals the converted public */
    crypto_scalarmult_base(derived, sec);
    assert_memory_equal(derived, pub, 32);
}

int
main(void)
{
    if (wire_init() != SPBE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names_round_trip),
        cmocka_unit_test(test_member_names_are_agency_slash_app),
        cmocka_unit_test(test_topics_follow_the_token_rules),
        cmocka_unit_test(test_patterns_take_star_and_trailing_gt),
        cmocka_unit_test(test_pattern_matching),
        cmocka_unit_test(test_pattern_coverage_for_rights),
        cmocka_unit_test(test_hex_round_trip_and_refusals),
        cmocka_unit_test(test_envelope_signs_and_verifies),
        cmocka_unit_test(test_envelope_rejects_every_single_flipped_byte),
        cmocka_unit_test(test_envelope_shape_errors),
        cmocka_unit_test(test_receipt_and_message_signatures_do_not_cross),
        cmocka_unit_test(test_identity_files_round_trip_with_mode_0600),
        cmocka_unit_test(test_identity_refusals),
        cmocka_unit_test(test_curve_keys_derive_from_the_member_key),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
