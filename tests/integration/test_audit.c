/*
 * test_audit.c - the audit log end to end: receipts carry the leaf and the tree, the
 * broker signs tree heads (stored, and published on $sys.audit.head), and
 * `spbe audit verify` passes on an intact data directory and fails, naming the place,
 * after each kind of tampering done directly in the LMDB files: one byte of a stored
 * message, of its signature, of a tree node, of a leaf, of a signed head; a deleted
 * message; two messages swapped.
 */
#include <lmdb.h>
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
#include "spbe/errors.h"
#include "spbe/v1/spbe.pb-c.h"
#include "wire.h"

typedef struct fixture {
    test_broker broker;
    char publisher[400], reader[400];
    char pristine[400]; /* a copy of the data directory after a clean stop */
    int copies;
} fixture;

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (harness_broker_start(&f->broker, "--tree-head-ms 200") != 0)
        return -1;
    if (harness_member(&f->broker, "bkn/siasn", "ikn.audit.>", NULL, NULL, f->publisher) ||
        harness_member(&f->broker, "oikn/hunian", NULL, "ikn.audit.>,$sys.audit.head", NULL,
                       f->reader))
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

static void
on_head(const spbe_delivery *d, void *arg)
{
    int *heads = arg;
    if (strcmp(d->topic, "$sys.audit.head") == 0 &&
        strcmp(d->schema, "spbe.v1.SignedTreeHead") == 0)
        (*heads)++;
}

/* Receipts name the leaf and a tree that contains it; heads come on $sys.audit.head. */
static void
test_receipts_and_heads(void **state)
{
    fixture *f = *state;
    spbe_client *reader = harness_connect(&f->broker, f->reader, 0);
    int heads = 0;
    spbe_set_delivery_handler(reader, on_head, &heads);
    assert_int_equal(spbe_subscribe(reader, "$sys.audit.head", SPBE_START_FIRST, 0, NULL), SPBE_OK);
    spbe_client *c = harness_connect(&f->broker, f->publisher, 0);
    uint64_t last_leaf = 0;
    for (int i = 0; i < 20; i++) {
        spbe_receipt r;
        char payload[32];
        snprintf(payload, sizeof payload, "pesan %d", i);
        assert_int_equal(spbe_publish(c, i % 3 ? "ikn.audit.a" : "ikn.audit.b", payload,
                                      strlen(payload), NULL, &r),
                         SPBE_OK);
        assert_true(r.signed_by_broker);
        assert_true(r.tree_size > r.leaf_index);
        if (i)
            assert_true(r.leaf_index > last_leaf);
        last_leaf = r.leaf_index;
    }
    for (int i = 0; i < 40 && heads == 0; i++)
        spbe_dispatch(reader, 50, NULL);
    assert_true(heads >= 1);
    spbe_close(&c);
    spbe_close(&reader);
    /* a clean stop signs the last head; the directory verifies */
    assert_int_equal(harness_broker_signal(&f->broker, SIGTERM), 0);
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s",
                         f->broker.data);
    if (rc != 0)
        fail_msg("verify failed: %s", err);
    assert_non_null(strstr(out, "audit log verified"));
    snprintf(f->pristine, sizeof f->pristine, "%s/pristine", f->broker.dir);
    assert_int_equal(harness_run(NULL, 0, NULL, 0, "cp -a %s %s", f->broker.data, f->pristine), 0);
    assert_int_equal(harness_broker_restart(&f->broker), 0);
}

/* ------------------------------------------------------------ tampering */

typedef struct lmdb {
    MDB_env *env;
    MDB_txn *txn;
    char dir[512];
} lmdb;

static void
tamper_open(fixture *f, lmdb *db)
{
    snprintf(db->dir, sizeof db->dir, "%s/tampered%d", f->broker.dir, ++f->copies);
    assert_int_equal(harness_run(NULL, 0, NULL, 0, "cp -a %s %s", f->pristine, db->dir), 0);
    assert_int_equal(mdb_env_create(&db->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(db->env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(db->env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(db->env, db->dir, MDB_NOTLS, 0600), 0);
    assert_int_equal(mdb_txn_begin(db->env, NULL, 0, &db->txn), 0);
}

static MDB_dbi
dbi(lmdb *db, const char *name)
{
    MDB_dbi d;
    assert_int_equal(mdb_dbi_open(db->txn, name, 0, &d), 0);
    return d;
}

/* The key of message seq of topic in the messages database. */
static void
message_key(lmdb *db, const char *topic, uint64_t seq, uint8_t key[12])
{
    MDB_val k = {strlen(topic), (void *)topic}, v;
    assert_int_equal(mdb_get(db->txn, dbi(db, "topics"), &k, &v), 0);
    const uint8_t *rec = v.mv_data;
    uint32_t id =
        (uint32_t)rec[0] | (uint32_t)rec[1] << 8 | (uint32_t)rec[2] << 16 | (uint32_t)rec[3] << 24;
    for (int i = 0; i < 4; i++)
        key[i] = (uint8_t)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        key[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

/* Flips one byte (at offset, or from the end when offset < 0) of a value. */
static void
flip(lmdb *db, MDB_dbi d, const void *key, size_t key_len, long offset)
{
    MDB_val k = {key_len, (void *)key}, v;
    assert_int_equal(mdb_get(db->txn, d, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    size_t at = offset < 0 ? v.mv_size - (size_t)(-offset) : (size_t)offset;
    assert_true(at < v.mv_size);
    copy[at] ^= 0x01;
    MDB_val nv = {v.mv_size, copy};
    assert_int_equal(mdb_put(db->txn, d, &k, &nv, 0), 0);
    free(copy);
}

/* Commits, closes, runs verify on the copy: it must fail and name want. */
static void
tamper_check(lmdb *db, const char *want)
{
    assert_int_equal(mdb_txn_commit(db->txn), 0);
    mdb_env_close(db->env);
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s", db->dir);
    if (rc != 1 || !strstr(err, want))
        fail_msg("verify after tampering: exit %d, wanted '%s' in: %s%s", rc, want, err, out);
}

static void
test_a_changed_message_byte(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    uint8_t key[12];
    message_key(&db, "ikn.audit.a", 5, key);
    flip(&db, dbi(&db, "messages"), key, sizeof key, 16 + 40); /* inside the signed message */
    tamper_check(&db, "ikn.audit.a #5");
}

static void
test_a_changed_signature_byte(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    uint8_t key[12];
    message_key(&db, "ikn.audit.b", 3, key);
    flip(&db, dbi(&db, "messages"), key, sizeof key, -1); /* the signature ends the record */
    tamper_check(&db, "ikn.audit.b #3: the signature");
}

static void
test_a_changed_tree_node(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    uint8_t key[9] = {0, 0, 0, 0, 0, 0, 0, 5, 1}; /* level 1, index 2: leaves 4-5, last 5 */
    flip(&db, dbi(&db, "audit_tree"), key, sizeof key, 7);
    tamper_check(&db, "tree node (1, 2)");
}

static void
test_a_changed_leaf(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 9};
    flip(&db, dbi(&db, "audit_leaves"), key, sizeof key, -1);
    tamper_check(&db, "leaf 9");
}

static void
test_a_changed_tree_head(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    MDB_dbi heads = dbi(&db, "audit_heads");
    MDB_cursor *cur;
    assert_int_equal(mdb_cursor_open(db.txn, heads, &cur), 0);
    MDB_val k, v;
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_LAST), 0);
    uint8_t key[8];
    memcpy(key, k.mv_data, sizeof key);
    mdb_cursor_close(cur);
    flip(&db, heads, key, sizeof key, -1);
    tamper_check(&db, "tree head");
}

static void
test_a_deleted_message(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    uint8_t key[12];
    message_key(&db, "ikn.audit.a", 7, key);
    MDB_val k = {sizeof key, key};
    assert_int_equal(mdb_del(db.txn, dbi(&db, "messages"), &k, NULL), 0);
    tamper_check(&db, "ikn.audit.a");
}

static void
test_two_messages_swapped(void **state)
{
    fixture *f = *state;
    lmdb db;
    tamper_open(f, &db);
    MDB_dbi messages = dbi(&db, "messages");
    uint8_t k3[12], k4[12];
    message_key(&db, "ikn.audit.a", 3, k3);
    message_key(&db, "ikn.audit.a", 4, k4);
    MDB_val a = {12, k3}, b = {12, k4}, va, vb;
    assert_int_equal(mdb_get(db.txn, messages, &a, &va), 0);
    assert_int_equal(mdb_get(db.txn, messages, &b, &vb), 0);
    uint8_t *ca = malloc(va.mv_size), *cb = malloc(vb.mv_size);
    memcpy(ca, va.mv_data, va.mv_size);
    memcpy(cb, vb.mv_data, vb.mv_size);
    MDB_val na = {vb.mv_size, cb}, nb = {va.mv_size, ca};
    assert_int_equal(mdb_put(db.txn, messages, &a, &na, 0), 0);
    assert_int_equal(mdb_put(db.txn, messages, &b, &nb, 0), 0);
    free(ca);
    free(cb);
    tamper_check(&db, "ikn.audit.a #3");
}

/* An evidence bundle checks with no broker, anywhere, and fails after any byte changes. */
static void
test_evidence_bundle_alone_and_every_byte_changed(void **state)
{
    fixture *f = *state;
    char out[4096], err[4096], bundle[600], copy[600];
    snprintf(bundle, sizeof bundle, "%s/evidence/ikn.audit.a-4.evidence", f->broker.dir);
    /* proved from the data directory while the broker runs */
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "mkdir -p %s/evidence && $SPBE audit prove ikn.audit.a 4 --data %s -o %s",
                         f->broker.dir, f->broker.data, bundle);
    if (rc != 0)
        fail_msg("prove: %s", err);
    assert_non_null(strstr(out, "with a receipt"));
    /* checked in a fresh directory, with no broker and no data directory */
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "cd %s/evidence && env -u SPBE_BROKER -u SPBE_DATA $SPBE audit check "
                     "ikn.audit.a-4.evidence --json",
                     f->broker.dir);
    if (rc != 0)
        fail_msg("check: %s %s", out, err);
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_non_null(strstr(out, "\"sequence\":4"));
    FILE *fp = fopen(bundle, "rb");
    assert_non_null(fp);
    static uint8_t data[1 << 16];
    size_t len = fread(data, 1, sizeof data, fp);
    fclose(fp);
    assert_true(len > 200);
    snprintf(copy, sizeof copy, "%s/evidence/changed", f->broker.dir);
    for (size_t i = 0; i < len; i++) {
        data[i] ^= 0x01;
        fp = fopen(copy, "wb");
        assert_int_equal(fwrite(data, 1, len, fp), len);
        fclose(fp);
        data[i] ^= 0x01;
        rc = harness_run(NULL, 0, NULL, 0, "$SPBE audit check %s 2>/dev/null", copy);
        if (rc != 1)
            fail_msg("bundle with byte %zu of %zu changed: exit %d", i, len, rc);
    }
}

/* Two heads: the newer extends the older; after a change to history it does not. */
static void
test_consistency_of_two_heads(void **state)
{
    fixture *f = *state;
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "cd %s && $SPBE msg get '$sys.audit.head' 1 --data %s --raw > old.sth && "
                         "$SPBE audit head --data %s -o new.sth && "
                         "$SPBE audit consistency old.sth new.sth --data %s",
                         f->broker.dir, f->pristine, f->pristine, f->pristine);
    if (rc != 0)
        fail_msg("consistency: %s %s", out, err);
    assert_non_null(strstr(out, "consistent"));
    /* a head the broker's key signed over another history (a broker rewriting its past) */
    char path[600], ierr[256];
    identity broker;
    snprintf(path, sizeof path, "%s/broker.key", f->broker.data);
    assert_int_equal(identity_load(path, &broker, ierr, sizeof ierr), SPBE_OK);
    Spbe__V1__TreeHead th = SPBE__V1__TREE_HEAD__INIT;
    uint8_t root[32];
    memset(root, 0x5a, sizeof root);
    th.size = 30;
    th.root.data = root;
    th.root.len = sizeof root;
    th.timestamp_ns = 1;
    th.broker = "spbe-broker";
    Spbe__V1__SignedTreeHead sth;
    assert_int_equal(wire_tree_head_sign(&th, broker.secret_key, &sth), SPBE_OK);
    uint8_t packed[512];
    size_t len = spbe__v1__signed_tree_head__pack(&sth, packed);
    free(sth.head.data);
    snprintf(path, sizeof path, "%s/forged.sth", f->broker.dir);
    FILE *fp = fopen(path, "wb");
    assert_int_equal(fwrite(packed, 1, len, fp), len);
    fclose(fp);
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "cd %s && $SPBE audit consistency old.sth forged.sth --data %s", f->broker.dir,
                     f->pristine);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "history was changed"));
}

/* A reader's signed delivery receipt goes into the evidence of what it covers. */
static void
test_delivery_receipts_in_the_evidence(void **state)
{
    fixture *f = *state;
    spbe_client *reader = harness_connect(&f->broker, f->reader, 0);
    uint64_t leaf = 0;
    assert_int_equal(spbe_confirm_delivery(reader, "ikn.audit.a", 10, NULL, &leaf), SPBE_OK);
    assert_true(leaf > 0);
    assert_int_equal(spbe_confirm_delivery(reader, "ikn.audit.a", 0, NULL, NULL), SPBE_BAD_REQUEST);
    assert_int_equal(spbe_confirm_delivery(reader, "ikn.audit.a", 1000000, NULL, NULL),
                     SPBE_BAD_REQUEST);
    assert_int_equal(spbe_confirm_delivery(reader, "ikn.audit.none", 1, NULL, NULL),
                     SPBE_NOT_FOUND);
    spbe_close(&reader);
    spbe_client *writer = harness_connect(&f->broker, f->publisher, 0);
    assert_int_equal(spbe_confirm_delivery(writer, "ikn.audit.a", 3, NULL, NULL), SPBE_FORBIDDEN);
    spbe_close(&writer);
    usleep(600000); /* a head (every 200 ms here) covers the receipt */
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "cd %s && $SPBE audit prove ikn.audit.a 4 --data %s -o delivered.evidence "
                         ">/dev/null && $SPBE audit check delivered.evidence",
                         f->broker.dir, f->broker.data);
    if (rc != 0)
        fail_msg("prove/check: %s %s", out, err);
    assert_non_null(strstr(out, "delivered  to oikn/hunian (signed receipt up to #10, in the "
                                "signed tree)"));
    /* a message after the receipt's reach carries none */
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "cd %s && $SPBE audit prove ikn.audit.a 12 --data %s -o later.evidence "
                     ">/dev/null && $SPBE audit check later.evidence --json",
                     f->broker.dir, f->broker.data);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"delivery_receipts\":0"));
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s --json",
                     f->broker.data);
    if (rc != 0)
        fail_msg("verify: %s", err);
    assert_non_null(strstr(out, "\"delivery_receipts\":1"));
    /* every entry counted once: messages, deleted ones, registry changes, receipts */
    long long parts = 0;
    const char *fields[] = {"\"messages_verified\":", "\"retained_out\":", "\"registry_changes\":",
                            "\"delivery_receipts\":"};
    for (size_t i = 0; i < 4; i++)
        parts += atoll(strstr(out, fields[i]) + strlen(fields[i]));
    assert_int_equal(parts, atoll(strstr(out, "\"entries\":") + 10));
}

static int last_code;

static void
remember(const spbe_receipt *r, void *arg)
{
    (void)arg;
    last_code = r->code;
}

/* Keys rotate: what was signed before still verifies, the old key is refused after. */
static void
test_key_rotation_and_revocation(void **state)
{
    fixture *f = *state;
    char k1[400], k2[512], k3[512], k4[512], out[4096], err[4096];
    assert_int_equal(
        harness_member(&f->broker, "kemenkeu/tunjangan", "ikn.audit.>", NULL, NULL, k1), 0);
    spbe_client *c = harness_connect(&f->broker, k1, 0);
    spbe_receipt r1;
    assert_int_equal(spbe_publish(c, "ikn.audit.rot", "kunci satu", 10, NULL, &r1), SPBE_OK);
    spbe_close(&c);
    /* the member rotates its own key, proving it holds the new one */
    snprintf(k2, sizeof k2, "%s/tunjangan2.key", f->broker.dir);
    snprintf(k3, sizeof k3, "%s/tunjangan3.key", f->broker.dir);
    snprintf(k4, sizeof k4, "%s/tunjangan4.key", f->broker.dir);
    int rc = harness_run(out, sizeof out, err, sizeof err,
                         "$SPBE keygen kemenkeu/tunjangan -o %s --broker-pub %s >/dev/null && "
                         "$SPBE keygen kemenkeu/tunjangan -o %s --broker-pub %s >/dev/null && "
                         "$SPBE keygen kemenkeu/tunjangan -o %s --broker-pub %s >/dev/null && "
                         "$SPBE member rotate kemenkeu/tunjangan --key-file %s --key %s "
                         "--reason 'jadwal rotasi'",
                         k2, f->broker.broker_pub, k3, f->broker.broker_pub, k4,
                         f->broker.broker_pub, k2, k1);
    if (rc != 0)
        fail_msg("rotate: %s", err);
    /* the old key is refused at the door, the new one publishes */
    spbe_options o = {.endpoint = f->broker.endpoint, .timeout_ms = 3000};
    assert_int_equal(spbe_connect(k1, &o, &c), SPBE_UNKNOWN_SENDER);
    spbe_close(&c);
    c = harness_connect(&f->broker, k2, 0);
    assert_non_null(c);
    spbe_receipt r2;
    assert_int_equal(spbe_publish(c, "ikn.audit.rot", "kunci dua", 9, NULL, &r2), SPBE_OK);
    /* a message signed with the superseded key is refused at publish time */
    identity old;
    assert_int_equal(identity_load(k1, &old, err, sizeof err), SPBE_OK);
    uint8_t id[16] = {7};
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = 16;
    m.topic = "ikn.audit.rot";
    m.sender = "kemenkeu/tunjangan";
    m.created_ns = wire_now_ns();
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&m, old.secret_key, &bytes, &len), SPBE_OK);
    spbe_set_receipt_handler(c, remember, NULL);
    last_code = -1;
    assert_int_equal(spbe_publish_signed(c, bytes, len, NULL), SPBE_OK);
    assert_int_equal(spbe_flush(c, 5000), SPBE_OK);
    assert_int_equal(last_code, SPBE_BAD_SIGNATURE);
    free(bytes);
    spbe_close(&c);
    /* rotating oneself needs the new secret (the proof); an admin may use a .pub */
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "$SPBE member rotate kemenkeu/tunjangan --public-key $(sed -n "
                     "'s/^public_key *= *//p' %s.pub) --key %s",
                     k3, k2);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "proof"));
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "$SPBE member rotate kemenkeu/tunjangan --key-file %s.pub --key %s "
                     "--reason kompromi",
                     k3, f->broker.admin_key);
    if (rc != 0)
        fail_msg("admin rotate: %s", err);
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "$SPBE member show kemenkeu/tunjangan --key %s", f->broker.admin_key);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "jadwal rotasi"));
    assert_non_null(strstr(out, "kompromi"));
    /* revoked with a reason: refused, and history still verifies */
    c = harness_connect(&f->broker, k3, 0);
    assert_int_equal(spbe_publish(c, "ikn.audit.rot", "kunci tiga", 10, NULL, NULL), SPBE_OK);
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "$SPBE member revoke kemenkeu/tunjangan --reason 'pindah tugas' --key %s",
                     f->broker.admin_key);
    assert_int_equal(rc, 0);
    spbe_receipt r3;
    int code = spbe_publish(c, "ikn.audit.rot", "sesudah", 7, NULL, &r3);
    assert_true(code == SPBE_REVOKED || code == SPBE_UNAVAILABLE);
    spbe_close(&c);
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s",
                     f->broker.data);
    if (rc != 0)
        fail_msg("verify after rotations: %s", err);
    /* the first message's evidence carries the key valid then */
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "cd %s && $SPBE audit prove ikn.audit.rot 1 --data %s -o rot1.evidence "
                     ">/dev/null && $SPBE audit check rot1.evidence --json",
                     f->broker.dir, f->broker.data);
    if (rc != 0)
        fail_msg("prove/check: %s %s", out, err);
    (void)r1;
    (void)r2;
}

/* The broker's key rotates: the old key signs the new one into the log; everything
 * before verifies with the old key, everything after with the new one. */
static void
test_broker_key_rotation(void **state)
{
    fixture *f = *state;
    char out[4096], err[4096], key[400];
    assert_int_equal(harness_broker_signal(&f->broker, SIGTERM), 0);
    int rc = harness_run(out, sizeof out, err, sizeof err, "%s --rotate-key --data %s",
                         SPBE_BROKER_BIN, f->broker.data);
    if (rc != 0)
        fail_msg("rotate-key: %s", err);
    assert_non_null(strstr(out, "broker key rotated"));
    assert_int_equal(harness_broker_restart(&f->broker), 0);
    usleep(500000); /* heads are due (every 200 ms): the rotation's head is not signed again */
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s",
                     f->broker.data);
    if (rc != 0)
        fail_msg("verify after the restart on the new key: %s", err);
    /* identities made with the old broker key no longer reach it; new ones do */
    spbe_options o = {.endpoint = f->broker.endpoint, .timeout_ms = 2000, .no_reconnect = 1};
    spbe_client *c = NULL;
    assert_int_not_equal(spbe_connect(f->publisher, &o, &c), SPBE_OK);
    spbe_close(&c);
    assert_int_equal(harness_member(&f->broker, "kemenag/haji", "ikn.audit.>", NULL, NULL, key), 0);
    c = harness_connect(&f->broker, key, 0);
    assert_non_null(c);
    assert_int_equal(spbe_publish(c, "ikn.audit.a", "sesudah rotasi", 14, NULL, NULL), SPBE_OK);
    spbe_close(&c);
    usleep(600000); /* a head signed with the new key */
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s",
                     f->broker.data);
    if (rc != 0)
        fail_msg("verify after the broker's rotation: %s", err);
    /* evidence of a message from before, checked against the new key */
    rc = harness_run(out, sizeof out, err, sizeof err,
                     "cd %s && $SPBE audit prove ikn.audit.a 2 --data %s -o before.evidence "
                     ">/dev/null && $SPBE audit check before.evidence --broker-key $(sed -n "
                     "'s/^public_key *= *//p' %s)",
                     f->broker.dir, f->broker.data, f->broker.broker_pub);
    if (rc != 0)
        fail_msg("evidence after the broker's rotation: %s %s", out, err);
    assert_non_null(strstr(out, "(as expected)"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_receipts_and_heads),
        cmocka_unit_test(test_a_changed_message_byte),
        cmocka_unit_test(test_a_changed_signature_byte),
        cmocka_unit_test(test_a_changed_tree_node),
        cmocka_unit_test(test_a_changed_leaf),
        cmocka_unit_test(test_a_changed_tree_head),
        cmocka_unit_test(test_a_deleted_message),
        cmocka_unit_test(test_two_messages_swapped),
        cmocka_unit_test(test_evidence_bundle_alone_and_every_byte_changed),
        cmocka_unit_test(test_consistency_of_two_heads),
        cmocka_unit_test(test_delivery_receipts_in_the_evidence),
        cmocka_unit_test(test_key_rotation_and_revocation),
        cmocka_unit_test(test_broker_key_rotation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
