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

/* n messages of one sender signed as one batch. */
static uint8_t **
batch_sample(const identity *id, size_t n, size_t **lens)
{
    Spbe__V1__Message *msgs = calloc(n, sizeof *msgs);
    const Spbe__V1__Message **ptrs = calloc(n, sizeof *ptrs);
    uint8_t(*ids)[WIRE_ID_BYTES] = calloc(n, WIRE_ID_BYTES);
    for (size_t i = 0; i < n; i++) {
        spbe__v1__message__init(&msgs[i]);
        wire_random_id(ids[i]);
        msgs[i].id.data = ids[i];
        msgs[i].id.len = WIRE_ID_BYTES;
        msgs[i].topic = "ikn.relokasi.asn";
        msgs[i].sender = (char *)id->member;
        msgs[i].payload.data = ids[i]; /* lives until the batch is signed */
        msgs[i].payload.len = WIRE_ID_BYTES;
        ptrs[i] = &msgs[i];
    }
    uint8_t **out = calloc(n, sizeof *out);
    *lens = calloc(n, sizeof **lens);
    assert_int_equal(wire_message_sign_batch(ptrs, n, id->secret_key, out, *lens), SPBE_OK);
    free(msgs);
    free(ptrs);
    free(ids);
    return out;
}

static void
test_batch_signed_messages_verify_each_on_its_own(void **state)
{
    (void)state;
    identity id, other;
    identity_generate("bkn/siasn", &id);
    identity_generate("bkn/other", &other);
    static const size_t sizes[] = {1, 2, 3, 7, 8, 100, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s], *lens;
        uint8_t **out = batch_sample(&id, n, &lens);
        wire_sigcache *cache = wire_sigcache_new();
        for (size_t i = 0; i < n; i++) {
            Spbe__V1__SignedMessage *sm;
            Spbe__V1__Message *m;
            assert_int_equal(wire_envelope_decode(out[i], lens[i], &sm, &m, NULL), SPBE_OK);
            assert_non_null(sm->batch);
            assert_int_equal(sm->batch->index, i);
            assert_int_equal(sm->batch->size, n);
            assert_int_equal(wire_envelope_verify(sm, id.public_key), SPBE_OK);
            assert_int_equal(wire_envelope_verify_cached(sm, id.public_key, cache), SPBE_OK);
            assert_int_equal(wire_envelope_verify_cached(sm, other.public_key, cache),
                             SPBE_BAD_SIGNATURE);
            wire_envelope_free(&sm, &m);
            free(out[i]);
        }
        wire_sigcache_free(&cache);
        assert_null(cache);
        free(out);
        free(lens);
    }
}

static void
test_batch_proofs_do_not_transfer(void **state)
{
    (void)state;
    identity id;
    identity_generate("bkn/siasn", &id);
    size_t n = 5, *lens;
    uint8_t **out = batch_sample(&id, n, &lens);
    wire_sigcache *cache = wire_sigcache_new();
    Spbe__V1__SignedMessage *a, *b;
    Spbe__V1__Message *ma, *mb;
    assert_int_equal(wire_envelope_decode(out[1], lens[1], &a, &ma, NULL), SPBE_OK);
    assert_int_equal(wire_envelope_decode(out[2], lens[2], &b, &mb, NULL), SPBE_OK);
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_OK);
    /* another leaf's proof, another index, a changed path entry: none verifies, cached
     * root or not */
    Spbe__V1__BatchProof *keep = a->batch;
    a->batch = b->batch;
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_BAD_SIGNATURE);
    a->batch = keep;
    a->batch->index = 3;
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_BAD_SIGNATURE);
    a->batch->index = 1;
    a->batch->path[0].data[5] ^= 1;
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_BAD_SIGNATURE);
    a->batch->path[0].data[5] ^= 1;
    a->batch->size = 6; /* another tree shape: the root's signature covers the size */
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_BAD_SIGNATURE);
    a->batch->size = 5;
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_OK);
    /* without its proof, the batch signature is no signature of the message */
    a->batch = NULL;
    assert_int_equal(wire_envelope_verify(a, id.public_key), SPBE_BAD_SIGNATURE);
    a->batch = keep;
    /* a changed message under an intact proof */
    ma->payload.data[0] ^= 1;
    a->message.data[a->message.len - 1] ^= 1;
    assert_int_equal(wire_envelope_verify_cached(a, id.public_key, cache), SPBE_BAD_SIGNATURE);
    wire_envelope_free(&a, &ma);
    wire_envelope_free(&b, &mb);
    wire_sigcache_free(&cache);
    for (size_t i = 0; i < n; i++)
        free(out[i]);
    free(out);
    free(lens);
}

static void
test_batch_proof_shape_errors(void **state)
{
    (void)state;
    identity id;
    identity_generate("bkn/siasn", &id);
    size_t *lens;
    uint8_t **out = batch_sample(&id, 4, &lens);
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    assert_int_equal(wire_envelope_decode(out[0], lens[0], &sm, &m, NULL), SPBE_OK);
    struct {
        uint64_t index, size;
        size_t path_len;
        const char *reason;
    } cases[] = {
        {0, 0, 32, "batch size must be 1 to 1048576"},
        {0, 1048577, 32, "batch size must be 1 to 1048576"},
        {4, 4, 32, "batch index must be below the batch size"},
        {0, 4, 31, "batch path entries must be 32 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Spbe__V1__BatchProof proof = *sm->batch;
        proof.index = cases[i].index;
        proof.size = cases[i].size;
        ProtobufCBinaryData path[2] = {sm->batch->path[0], sm->batch->path[1]};
        path[1].len = cases[i].path_len;
        proof.path = path;
        Spbe__V1__SignedMessage copy = *sm;
        copy.batch = &proof;
        size_t len = spbe__v1__signed_message__get_packed_size(&copy);
        uint8_t *buf = malloc(len);
        spbe__v1__signed_message__pack(&copy, buf);
        Spbe__V1__SignedMessage *back;
        Spbe__V1__Message *mb;
        const char *reason = NULL;
        assert_int_equal(wire_envelope_decode(buf, len, &back, &mb, &reason), SPBE_BAD_REQUEST);
        assert_string_equal(reason, cases[i].reason);
        assert_int_equal(wire_envelope_verify(back, id.public_key), SPBE_BAD_SIGNATURE);
        wire_envelope_free(&back, &mb);
        free(buf);
    }
    wire_envelope_free(&sm, &m);
    for (size_t i = 0; i < 4; i++)
        free(out[i]);
    free(out);
    free(lens);
    uint8_t *none[1];
    size_t none_len[1];
    assert_int_equal(wire_message_sign_batch(NULL, 0, id.secret_key, none, none_len),
                     SPBE_BAD_REQUEST);
}

static void
test_batch_receipts_verify_through_the_root(void **state)
{
    (void)state;
    identity broker;
    identity_generate("spbe/broker", &broker);
    enum { N = 9 };
    uint8_t enc[N][64], leaves[N][WIRE_HASH_BYTES];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        Spbe__V1__Receipt r = SPBE__V1__RECEIPT__INIT;
        r.topic = "ikn.a";
        r.sequence = (uint64_t)i + 1;
        lens[i] = spbe__v1__receipt__pack(&r, enc[i]);
        wire_batch_leaf(WIRE_CONTEXT_RECEIPT, enc[i], lens[i], leaves[i]);
    }
    wire_batch b;
    assert_int_equal(
        wire_batch_sign(&b, (const uint8_t(*)[WIRE_HASH_BYTES])leaves, N, broker.secret_key),
        SPBE_OK);
    wire_sigcache *cache = wire_sigcache_new();
    for (int i = 0; i < N; i++) {
        uint8_t path[MERKLE_PATH_MAX][WIRE_HASH_BYTES];
        ProtobufCBinaryData items[MERKLE_PATH_MAX];
        size_t np;
        assert_int_equal(wire_batch_path(&b, (uint64_t)i, path, &np), 0);
        for (size_t k = 0; k < np; k++)
            items[k] = (ProtobufCBinaryData){WIRE_HASH_BYTES, path[k]};
        Spbe__V1__BatchProof proof = SPBE__V1__BATCH_PROOF__INIT;
        proof.index = (uint64_t)i;
        proof.size = N;
        proof.n_path = np;
        proof.path = items;
        Spbe__V1__SignedReceipt sr = SPBE__V1__SIGNED_RECEIPT__INIT;
        sr.receipt = (ProtobufCBinaryData){lens[i], enc[i]};
        sr.signature = (ProtobufCBinaryData){WIRE_SIGNATURE_BYTES, b.signature};
        sr.batch = &proof;
        Spbe__V1__Receipt *back;
        assert_int_equal(wire_receipt_verify_cached(&sr, broker.public_key, cache, &back), SPBE_OK);
        assert_int_equal(back->sequence, (uint64_t)i + 1);
        spbe__v1__receipt__free_unpacked(back, NULL);
        /* a receipt leaf's proof never makes a message verify (contexts differ) */
        Spbe__V1__SignedMessage sm = SPBE__V1__SIGNED_MESSAGE__INIT;
        sm.message = sr.receipt;
        sm.signature = sr.signature;
        sm.batch = &proof;
        assert_int_equal(wire_envelope_verify_cached(&sm, broker.public_key, cache),
                         SPBE_BAD_SIGNATURE);
    }
    wire_sigcache_free(&cache);
    wire_batch_free(&b);
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
        cmocka_unit_test(test_batch_signed_messages_verify_each_on_its_own),
        cmocka_unit_test(test_batch_proofs_do_not_transfer),
        cmocka_unit_test(test_batch_proof_shape_errors),
        cmocka_unit_test(test_batch_receipts_verify_through_the_root),
        cmocka_unit_test(test_identity_files_round_trip_with_mode_0600),
        cmocka_unit_test(test_identity_refusals),
        cmocka_unit_test(test_curve_keys_derive_from_the_member_key),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
