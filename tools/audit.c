/*
 * audit.c - spbe audit verify: the whole data directory checked offline, read-only
 * (also while the broker runs: one LMDB read transaction is one consistent snapshot).
 *
 * Every leaf against its tree node; every tree node against its children; every stored
 * message against its leaf (leaf index, bytes hash, acceptance time) and its sender's
 * signature; every message the log still keeps must be there; every signed tree head
 * against the broker's key and the recomputed root. The first inconsistency is reported
 * exactly (topic, sequence, what failed), exit 1.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "evidence.h"
#include "identity.h"
#include "merkle.h"
#include "wire.h"

static const char audit_usage[] =
    "usage: spbe audit verify --data DIR [--json]\n"
    "       spbe audit prove TOPIC SEQ --data DIR [-o FILE]\n"
    "       spbe audit check FILE [--broker-key HEX] [--json]\n"
    "       spbe audit head --data DIR [-o FILE]\n"
    "       spbe audit consistency OLD_HEAD NEW_HEAD --data DIR\n"
    "\n"
    "verify: re-checks the data directory offline and read-only (also while the broker\n"
    "runs): every stored message's signature against its sender's key, every message\n"
    "against its leaf of the audit log, the Merkle tree node by node, and every signed\n"
    "tree head against the broker's key (DIR/broker.pub) and the tree. Reports the first\n"
    "inconsistency (topic, sequence, what failed) and exits 1; else a summary.\n"
    "prove: writes the evidence bundle of one message (default TOPIC-SEQ.evidence): the\n"
    "sender's signed bytes and key, its leaf, the inclusion proof to the latest signed\n"
    "tree head, the broker's receipt (signed with DIR/broker.key), and the signed\n"
    "delivery receipts of members that confirmed receiving it.\n"
    "check: verifies a bundle with no broker: exit 0 if every part holds, else 1 saying\n"
    "which; --broker-key (or SPBE_BROKER_KEY) pins the broker's key it must be signed by.\n"
    "head: writes the latest signed tree head (default head-SIZE.sth). A head file may\n"
    "also be a message from $sys.audit.head (spbe msg get ... --raw, or a subscriber's).\n"
    "consistency: proves from the log that NEW_HEAD's tree extends\n"
    "OLD_HEAD's (both signed by the broker): the broker never rewrote or dropped history.\n";

/* A member's keys and when each was valid (valid_until 0: still). */
typedef struct member_key {
    char name[WIRE_MEMBER_MAX_BYTES + 1];
    size_t n;
    struct {
        uint8_t key[WIRE_KEY_BYTES];
        int64_t from, until;
    } keys[16];
} member_key;

#define SIG_BATCH 4096
#define SIG_THREADS_MAX 8

/* A stored message whose signature and hash are checked off the walk's thread. */
typedef struct sig_item {
    const uint8_t *data; /* in the read transaction's map */
    size_t len;
    uint64_t sequence, leaf_index;
    int64_t accepted_ns;
    char topic[WIRE_TOPIC_MAX_BYTES + 1];
    uint8_t hash[WIRE_HASH_BYTES]; /* the leaf's */
    int result;                    /* 0 ok, else which check failed */
    char detail[WIRE_MEMBER_MAX_BYTES + 64];
} sig_item;

#define BROKER_KEYS_MAX 64

/* The broker's keys in the order they served, from $sys.audit.broker-key: key i signed
 * everything up to and including leaf last[i] (the rotation that retired it). */
typedef struct broker_keys {
    uint8_t key[BROKER_KEYS_MAX][WIRE_KEY_BYTES];
    uint64_t last[BROKER_KEYS_MAX];
    size_t n;
    Spbe__V1__SignedBrokerKeyRotation *signed_rotations[BROKER_KEYS_MAX];
    char failure[256];
} broker_keys;

static const uint8_t *
broker_key_for_leaf(const broker_keys *bk, uint64_t leaf)
{
    for (size_t i = 0; i + 1 < bk->n; i++)
        if (leaf <= bk->last[i])
            return bk->key[i];
    return bk->key[bk->n - 1];
}

static int
load_rotation(const store_message *m, void *arg)
{
    broker_keys *bk = arg;
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    Spbe__V1__SignedBrokerKeyRotation *sr = NULL;
    Spbe__V1__BrokerKeyRotation *rot = NULL;
    if (wire_envelope_decode(m->data, m->len, &sm, &msg, NULL) == SPBE_OK)
        sr =
            spbe__v1__signed_broker_key_rotation__unpack(NULL, msg->payload.len, msg->payload.data);
    int ok = sr && wire_broker_rotation_verify(sr, &rot) == SPBE_OK &&
             wire_envelope_verify(sm, rot->old_key.data) == SPBE_OK && bk->n < BROKER_KEYS_MAX;
    if (ok && bk->n == 0) { /* the first key is the first rotation's old one */
        memcpy(bk->key[0], rot->old_key.data, WIRE_KEY_BYTES);
        bk->n = 1;
    }
    if (ok && memcmp(bk->key[bk->n - 1], rot->old_key.data, WIRE_KEY_BYTES) != 0)
        ok = 0;
    if (ok) {
        bk->last[bk->n - 1] = m->leaf_index;
        bk->signed_rotations[bk->n - 1] = sr;
        memcpy(bk->key[bk->n], rot->new_key.data, WIRE_KEY_BYTES);
        bk->last[bk->n] = UINT64_MAX;
        bk->n++;
        sr = NULL;
    } else {
        snprintf(bk->failure, sizeof bk->failure,
                 "broker key rotation #%llu does not verify or breaks the chain",
                 (unsigned long long)m->sequence);
    }
    if (rot)
        spbe__v1__broker_key_rotation__free_unpacked(rot, NULL);
    if (sr)
        spbe__v1__signed_broker_key_rotation__free_unpacked(sr, NULL);
    wire_envelope_free(&sm, &msg);
    return !ok;
}

/* Reads the broker's key history; the last key must be current. 0 or -1 (failure set). */
static int
broker_keys_load(store_reader *r, const uint8_t current[WIRE_KEY_BYTES], broker_keys *bk)
{
    memset(bk, 0, sizeof *bk);
    store_topic_info t;
    if (store_topic_get(r, "$sys.audit.broker-key", &t) == SPBE_OK && t.messages) {
        uint64_t next;
        store_read_from(r, t.id, t.first_sequence, 0, load_rotation, bk, &next);
        if (bk->failure[0])
            return -1;
    }
    if (bk->n == 0) {
        memcpy(bk->key[0], current, WIRE_KEY_BYTES);
        bk->last[0] = UINT64_MAX;
        bk->n = 1;
    }
    if (memcmp(bk->key[bk->n - 1], current, WIRE_KEY_BYTES) != 0) {
        snprintf(bk->failure, sizeof bk->failure,
                 "the broker's current key is not the last of its rotations");
        return -1;
    }
    return 0;
}

static void
broker_keys_free(broker_keys *bk)
{
    for (size_t i = 0; i < bk->n; i++)
        if (bk->signed_rotations[i])
            spbe__v1__signed_broker_key_rotation__free_unpacked(bk->signed_rotations[i], NULL);
}

typedef struct verify {
    store_reader *r;
    uint64_t size; /* leaves */
    uint64_t leaves, messages, retained_out, member_changes, deliveries, nodes, heads, topics;
    int64_t first_ns, last_ns;
    member_key *keys;
    size_t n_keys;
    uint8_t broker_key[WIRE_KEY_BYTES];
    char broker_name[WIRE_MEMBER_MAX_BYTES + 1];
    broker_keys bk;
    char failure[512];
    sig_item *batch;
    size_t n_batch;
    int threads;
    int progress; /* stderr is a terminal */
    int64_t started_ns, last_draw_ns;
} verify;

static int fail_at(verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail_at(verify *v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->failure, sizeof v->failure, fmt, ap);
    va_end(ap);
    return 1; /* stops the walk */
}

static void
draw(verify *v, const char *stage, uint64_t done, uint64_t total, int last)
{
    if (!v->progress)
        return;
    int64_t now = wire_mono_ns();
    if (!last && now - v->last_draw_ns < 100000000)
        return;
    v->last_draw_ns = now;
    int width = 30, filled = total ? (int)((double)done / (double)total * width) : width;
    fprintf(stderr, "\r%-8s [", stage);
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %llu/%llu%s", (unsigned long long)done, (unsigned long long)total,
            last ? "\n" : "");
}

/* The sender's key valid at t (the key history of rotations), or NULL. */
static const uint8_t *
sender_key(const verify *v, const char *name, int64_t t)
{
    for (size_t i = 0; i < v->n_keys; i++) {
        const member_key *mk = &v->keys[i];
        if (strcmp(mk->name, name) != 0)
            continue;
        for (size_t k = 0; k < mk->n; k++)
            if (t >= mk->keys[k].from && (mk->keys[k].until == 0 || t < mk->keys[k].until))
                return mk->keys[k].key;
        return NULL;
    }
    return NULL;
}

static int
collect_key(const Spbe__V1__Member *m, void *arg)
{
    verify *v = arg;
    if (m->public_key.len != WIRE_KEY_BYTES)
        return 0;
    member_key *grown = realloc(v->keys, (v->n_keys + 1) * sizeof *grown);
    if (!grown)
        return 1;
    v->keys = grown;
    member_key *mk = &grown[v->n_keys++];
    memset(mk, 0, sizeof *mk);
    snprintf(mk->name, sizeof mk->name, "%s", m->name);
    if (m->n_keys == 0) { /* never rotated: one key, always */
        memcpy(mk->keys[0].key, m->public_key.data, WIRE_KEY_BYTES);
        mk->keys[0].from = INT64_MIN;
        mk->n = 1;
    }
    for (size_t i = 0; i < m->n_keys && mk->n < sizeof mk->keys / sizeof mk->keys[0]; i++) {
        if (m->keys[i]->public_key.len != WIRE_KEY_BYTES)
            continue;
        memcpy(mk->keys[mk->n].key, m->keys[i]->public_key.data, WIRE_KEY_BYTES);
        mk->keys[mk->n].from = i == 0 ? INT64_MIN : m->keys[i]->valid_from_ns;
        mk->keys[mk->n].until = m->keys[i]->valid_until_ns;
        mk->n++;
    }
    return 0;
}

typedef struct sig_slice {
    verify *v;
    size_t from, to;
} sig_slice;

static void
sig_check(const verify *v, sig_item *it)
{
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    const char *why = NULL;
    it->result = 0;
    if (wire_envelope_decode(it->data, it->len, &sm, &msg, &why) != SPBE_OK) {
        it->result = 1;
        snprintf(it->detail, sizeof it->detail, "%s", why ? why : "malformed");
    } else {
        const uint8_t *key = strcmp(msg->sender, v->broker_name) == 0
                                 ? broker_key_for_leaf(&v->bk, it->leaf_index)
                                 : sender_key(v, msg->sender, it->accepted_ns);
        snprintf(it->detail, sizeof it->detail, "%s", msg->sender);
        it->result = !key                                       ? 2
                     : wire_envelope_verify(sm, key) != SPBE_OK ? 3
                     : strcmp(msg->topic, it->topic) != 0       ? 4
                                                                : 0;
    }
    wire_envelope_free(&sm, &msg);
    if (!it->result) {
        uint8_t hash[WIRE_HASH_BYTES];
        crypto_hash_sha256(hash, it->data, it->len);
        if (memcmp(hash, it->hash, sizeof hash) != 0)
            it->result = 5;
    }
}

static void *
sig_run(void *arg)
{
    sig_slice *sl = arg;
    for (size_t i = sl->from; i < sl->to; i++)
        sig_check(sl->v, &sl->v->batch[i]);
    return NULL;
}

/* Checks the batch on all cores; the first failure in log order stops the walk. */
static int
sig_flush(verify *v)
{
    size_t n = v->n_batch;
    v->n_batch = 0;
    if (!n)
        return 0;
    int threads = v->threads > 1 && n >= 64 ? v->threads : 1;
    pthread_t th[SIG_THREADS_MAX];
    sig_slice sl[SIG_THREADS_MAX];
    for (int t = 0; t < threads; t++) {
        sl[t] =
            (sig_slice){v, n * (size_t)t / (size_t)threads, n * (size_t)(t + 1) / (size_t)threads};
        if (t > 0)
            pthread_create(&th[t], NULL, sig_run, &sl[t]);
    }
    sig_run(&sl[0]);
    for (int t = 1; t < threads; t++)
        pthread_join(th[t], NULL);
    for (size_t i = 0; i < n; i++) {
        sig_item *it = &v->batch[i];
        unsigned long long seq = (unsigned long long)it->sequence;
        switch (it->result) {
        case 0:
            v->messages++;
            continue;
        case 1:
            return fail_at(v, "%s #%llu: the stored message does not decode (%s)", it->topic, seq,
                           it->detail);
        case 2:
            return fail_at(v, "%s #%llu: sender %s had no valid key then", it->topic, seq,
                           it->detail);
        case 3:
            return fail_at(v, "%s #%llu: the signature of %s does not verify", it->topic, seq,
                           it->detail);
        case 4:
            return fail_at(v, "%s #%llu: the signed topic is another", it->topic, seq);
        default:
            return fail_at(v, "%s #%llu: its bytes do not match the hash in leaf %llu", it->topic,
                           seq, (unsigned long long)it->leaf_index);
        }
    }
    return 0;
}

/* One message leaf against the stored message it names. */
static int
check_message(verify *v, uint64_t index, const Spbe__V1__AuditLeaf *leaf)
{
    store_topic_info t;
    if (store_topic_get(v->r, leaf->topic, &t) != SPBE_OK)
        return fail_at(v, "leaf %llu names topic %s, which does not exist",
                       (unsigned long long)index, leaf->topic);
    store_message m;
    if (store_message_get(v->r, t.id, leaf->sequence, &m) != SPBE_OK) {
        if (t.messages == 0 || leaf->sequence < t.first_sequence) {
            v->retained_out++; /* deleted by retention: the leaf stays */
            return 0;
        }
        return fail_at(v, "%s #%llu (leaf %llu) is missing from the store", leaf->topic,
                       (unsigned long long)leaf->sequence, (unsigned long long)index);
    }
    if (m.leaf_index != index)
        return fail_at(v, "%s #%llu points to leaf %llu, but leaf %llu names it", leaf->topic,
                       (unsigned long long)leaf->sequence, (unsigned long long)m.leaf_index,
                       (unsigned long long)index);
    if (m.accepted_ns != leaf->accepted_ns)
        return fail_at(v, "%s #%llu: acceptance time differs from its leaf %llu", leaf->topic,
                       (unsigned long long)leaf->sequence, (unsigned long long)index);
    if (leaf->message_hash.len != WIRE_HASH_BYTES)
        return fail_at(v, "leaf %llu carries no message hash", (unsigned long long)index);
    /* decoding, the signature and the hash: in parallel, a batch at a time */
    sig_item *it = &v->batch[v->n_batch++];
    it->data = m.data;
    it->len = m.len;
    it->sequence = leaf->sequence;
    it->accepted_ns = m.accepted_ns;
    it->leaf_index = index;
    snprintf(it->topic, sizeof it->topic, "%s", leaf->topic);
    memcpy(it->hash, leaf->message_hash.data, WIRE_HASH_BYTES);
    if (v->n_batch == SIG_BATCH)
        return sig_flush(v);
    return 0; /* counted when its batch passes */
}

typedef struct find_delivery {
    const char *member;
    uint64_t up_to;
    store_delivery found;
    int ok;
} find_delivery;

static int
found_delivery(const store_delivery *d, void *arg)
{
    find_delivery *fd = arg;
    if (d->up_to != fd->up_to)
        return 1;
    if (strcmp(d->member, fd->member) == 0) {
        fd->found = *d;
        fd->ok = 1;
        return 1;
    }
    return 0;
}

/* A delivery leaf against the signed receipt kept with it. */
static int
check_delivery(verify *v, uint64_t index, const Spbe__V1__AuditLeaf *leaf)
{
    store_topic_info t;
    find_delivery fd = {leaf->name, leaf->sequence, {{0}}, 0};
    if (store_topic_get(v->r, leaf->topic, &t) == SPBE_OK)
        store_delivery_each(v->r, t.id, leaf->sequence, found_delivery, &fd);
    if (!fd.ok || fd.found.leaf_index != index)
        return fail_at(v, "delivery receipt of %s for %s up to #%llu (leaf %llu) is missing",
                       leaf->name, leaf->topic, (unsigned long long)leaf->sequence,
                       (unsigned long long)index);
    uint8_t hash[WIRE_HASH_BYTES];
    crypto_hash_sha256(hash, fd.found.data, fd.found.len);
    if (leaf->record_hash.len != sizeof hash || memcmp(hash, leaf->record_hash.data, sizeof hash))
        return fail_at(v,
                       "delivery receipt of %s for %s up to #%llu: its bytes do not match "
                       "leaf %llu",
                       leaf->name, leaf->topic, (unsigned long long)leaf->sequence,
                       (unsigned long long)index);
    Spbe__V1__SignedDeliveryReceipt *sdr =
        spbe__v1__signed_delivery_receipt__unpack(NULL, fd.found.len, fd.found.data);
    Spbe__V1__DeliveryReceipt *dr = NULL;
    Spbe__V1__DeliveryReceipt *peek =
        sdr ? spbe__v1__delivery_receipt__unpack(NULL, sdr->receipt.len, sdr->receipt.data) : NULL;
    const uint8_t *key = peek ? sender_key(v, leaf->name, peek->signed_ns) : NULL;
    int ok = key && wire_delivery_verify(sdr, key, &dr) == SPBE_OK &&
             strcmp(dr->member, leaf->name) == 0 && strcmp(dr->topic, leaf->topic) == 0 &&
             dr->up_to == leaf->sequence;
    if (dr)
        spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
    if (peek)
        spbe__v1__delivery_receipt__free_unpacked(peek, NULL);
    if (sdr)
        spbe__v1__signed_delivery_receipt__free_unpacked(sdr, NULL);
    if (!ok)
        return fail_at(v,
                       "delivery receipt of %s for %s up to #%llu: the signature does not "
                       "verify",
                       leaf->name, leaf->topic, (unsigned long long)leaf->sequence);
    v->deliveries++;
    return 0;
}

static int
check_leaf(uint64_t index, const uint8_t *data, size_t len, void *arg)
{
    verify *v = arg;
    if (index != v->leaves)
        return fail_at(v, "leaf %llu is missing", (unsigned long long)v->leaves);
    if (index >= v->size)
        return fail_at(v, "leaf %llu is beyond the log's size %llu", (unsigned long long)index,
                       (unsigned long long)v->size);
    uint8_t h[MERKLE_HASH_BYTES], node[MERKLE_HASH_BYTES];
    merkle_leaf_hash(data, len, h);
    if (store_subtree(v->r, 0, index, node) != 0)
        return fail_at(v, "tree node (0, %llu) of leaf %llu is missing", (unsigned long long)index,
                       (unsigned long long)index);
    if (memcmp(h, node, sizeof h) != 0)
        return fail_at(v, "leaf %llu does not match its tree node (0, %llu)",
                       (unsigned long long)index, (unsigned long long)index);
    Spbe__V1__AuditLeaf *leaf = spbe__v1__audit_leaf__unpack(NULL, len, data);
    if (!leaf)
        return fail_at(v, "leaf %llu does not decode", (unsigned long long)index);
    int stop = 0;
    if (leaf->kind == SPBE__V1__LEAF_KIND__LEAF_MESSAGE)
        stop = check_message(v, index, leaf);
    else if (leaf->kind == SPBE__V1__LEAF_KIND__LEAF_DELIVERY)
        stop = check_delivery(v, index, leaf);
    else
        v->member_changes++;
    if (!stop) {
        if (!v->first_ns || leaf->accepted_ns < v->first_ns)
            v->first_ns = leaf->accepted_ns;
        if (leaf->accepted_ns > v->last_ns)
            v->last_ns = leaf->accepted_ns;
    }
    spbe__v1__audit_leaf__free_unpacked(leaf, NULL);
    v->leaves++;
    draw(v, "leaves", v->leaves, v->size, 0);
    return stop;
}

static int
check_node(unsigned level, uint64_t index, const uint8_t *hash, size_t len, void *arg)
{
    verify *v = arg;
    v->nodes++;
    if (len != MERKLE_HASH_BYTES)
        return fail_at(v, "tree node (%u, %llu) is not a hash", level, (unsigned long long)index);
    if (level >= 64 || ((index + 1) << level) > v->size ||
        (index + 1) << level >> level != index + 1)
        return fail_at(v, "tree node (%u, %llu) lies beyond the log's size %llu", level,
                       (unsigned long long)index, (unsigned long long)v->size);
    if (level == 0)
        return 0; /* checked against its leaf */
    uint8_t l[MERKLE_HASH_BYTES], r[MERKLE_HASH_BYTES], want[MERKLE_HASH_BYTES];
    if (store_subtree(v->r, level - 1, 2 * index, l) ||
        store_subtree(v->r, level - 1, 2 * index + 1, r))
        return fail_at(v, "tree node (%u, %llu) has a child missing", level,
                       (unsigned long long)index);
    merkle_node_hash(l, r, want);
    if (memcmp(want, hash, sizeof want) != 0)
        return fail_at(v, "tree node (%u, %llu) does not match its children", level,
                       (unsigned long long)index);
    return 0;
}

static int
check_head(uint64_t size, const uint8_t *data, size_t len, void *arg)
{
    verify *v = arg;
    Spbe__V1__SignedTreeHead *sth = spbe__v1__signed_tree_head__unpack(NULL, len, data);
    Spbe__V1__TreeHead *th = NULL;
    int rc = sth && size ? wire_tree_head_verify(sth, broker_key_for_leaf(&v->bk, size - 1), &th)
                         : SPBE_BAD_REQUEST;
    if (sth)
        spbe__v1__signed_tree_head__free_unpacked(sth, NULL);
    if (rc != SPBE_OK)
        return fail_at(v, "tree head %llu: %s", (unsigned long long)size,
                       rc == SPBE_BAD_SIGNATURE ? "the broker's signature does not verify"
                                                : "does not decode");
    int stop = 0;
    uint8_t root[MERKLE_HASH_BYTES];
    if (th->size != size)
        stop = fail_at(v, "tree head stored as %llu says size %llu", (unsigned long long)size,
                       (unsigned long long)th->size);
    else if (size > v->size)
        stop = fail_at(v, "tree head %llu is beyond the log's size %llu", (unsigned long long)size,
                       (unsigned long long)v->size);
    else if (merkle_root(store_subtree, v->r, size, root) != 0 ||
             memcmp(root, th->root.data, sizeof root) != 0)
        stop = fail_at(v, "tree head %llu: its root is not the tree's root at that size",
                       (unsigned long long)size);
    spbe__v1__tree_head__free_unpacked(th, NULL);
    v->heads++;
    return stop;
}

/* Every stored message has a leaf that names it (what a leaf walk cannot see). */
typedef struct topic_walk {
    verify *v;
    const char *topic;
} topic_walk;

static int
check_backlink(const store_message *m, void *arg)
{
    topic_walk *tw = arg;
    verify *v = tw->v;
    const uint8_t *data;
    size_t len;
    if (m->leaf_index >= v->size || store_leaf_get(v->r, m->leaf_index, &data, &len) != SPBE_OK)
        return fail_at(v, "%s #%llu has no leaf in the log", tw->topic,
                       (unsigned long long)m->sequence);
    Spbe__V1__AuditLeaf *leaf = spbe__v1__audit_leaf__unpack(NULL, len, data);
    int ok = leaf && leaf->kind == SPBE__V1__LEAF_KIND__LEAF_MESSAGE &&
             strcmp(leaf->topic, tw->topic) == 0 && leaf->sequence == m->sequence;
    if (leaf)
        spbe__v1__audit_leaf__free_unpacked(leaf, NULL);
    return ok ? 0
              : fail_at(v, "%s #%llu: its leaf %llu names another message", tw->topic,
                        (unsigned long long)m->sequence, (unsigned long long)m->leaf_index);
}

static int
check_topic(const store_topic_info *t, void *arg)
{
    verify *v = arg;
    v->topics++;
    if (!t->messages)
        return 0;
    topic_walk tw = {v, t->name};
    uint64_t next;
    store_read_from(v->r, t->id, t->first_sequence, 0, check_backlink, &tw, &next);
    return v->failure[0] != '\0';
}

static int
audit_verify(const cli_common *common)
{
    if (!common->data) {
        fputs(audit_usage, stderr);
        return EXIT_USAGE;
    }
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/broker.pub", common->data);
    identity broker_id;
    if (identity_load(path, &broker_id, err, sizeof err) != SPBE_OK)
        return cli_fail("audit", SPBE_NOT_FOUND, "the broker's key: %s", err);
    store *s = cli_open_store(common, "audit");
    if (!s)
        return EXIT_ERROR;
    /* the consistency of the topic records and layout first */
    if (store_check(s, err, sizeof err) != SPBE_OK) {
        store_close(&s);
        return cli_fail("audit", SPBE_INTERNAL, "%s", err);
    }
    verify v = {0};
    memcpy(v.broker_key, broker_id.public_key, sizeof v.broker_key);
    snprintf(v.broker_name, sizeof v.broker_name, "%s", broker_id.member);
    v.progress = isatty(2) && !common->json;
    v.started_ns = wire_mono_ns();
    if (store_reader_begin(s, &v.r) != SPBE_OK) {
        store_close(&s);
        return cli_fail("audit", SPBE_INTERNAL, "cannot read %s", common->data);
    }
    store_audit_size(v.r, &v.size);
    if (broker_keys_load(v.r, v.broker_key, &v.bk) != 0)
        fail_at(&v, "%s", v.bk.failure);
    /* the broker signs what it appends itself (dead letters, tree heads) */
    Spbe__V1__Member self = SPBE__V1__MEMBER__INIT;
    self.name = broker_id.member;
    self.public_key.data = broker_id.public_key;
    self.public_key.len = WIRE_KEY_BYTES;
    collect_key(&self, &v);
    store_member_each(v.r, collect_key, &v);
    v.batch = malloc(SIG_BATCH * sizeof *v.batch);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    v.threads = cores < 1 ? 1 : cores > SIG_THREADS_MAX ? SIG_THREADS_MAX : (int)cores;
    if (!v.batch) {
        store_reader_end(&v.r);
        store_close(&s);
        return cli_fail("audit", SPBE_INTERNAL, "out of memory");
    }
    if (!v.failure[0])
        store_leaf_each(v.r, check_leaf, &v);
    if (v.n_batch) { /* the batch holds earlier leaves: its failure comes first */
        char walk_failure[sizeof v.failure];
        memcpy(walk_failure, v.failure, sizeof walk_failure);
        v.failure[0] = '\0';
        sig_flush(&v);
        if (!v.failure[0])
            memcpy(v.failure, walk_failure, sizeof walk_failure);
    }
    if (!v.failure[0] && v.leaves != v.size)
        fail_at(&v, "the log has %llu leaves, its size says %llu", (unsigned long long)v.leaves,
                (unsigned long long)v.size);
    draw(&v, "leaves", v.leaves, v.size, 1);
    if (!v.failure[0])
        store_node_each(v.r, check_node, &v);
    if (!v.failure[0])
        store_topic_each(v.r, check_topic, &v);
    if (!v.failure[0])
        store_head_each(v.r, check_head, &v);
    uint8_t root[MERKLE_HASH_BYTES];
    int root_ok = merkle_root(store_subtree, v.r, v.size, root) == 0;
    if (!v.failure[0] && !root_ok)
        fail_at(&v, "the tree's root cannot be computed (nodes missing)");
    store_reader_end(&v.r);
    store_close(&s);
    free(v.keys);
    free(v.batch);
    broker_keys_free(&v.bk);
    double secs = (double)(wire_mono_ns() - v.started_ns) / 1e9;
    if (v.failure[0]) {
        if (common->json) {
            printf("{\"ok\":false,\"failure\":");
            cli_json_string(stdout, v.failure);
            printf("}\n");
        }
        return cli_fail("audit", SPBE_BAD_SIGNATURE, "%s", v.failure);
    }
    char root_hex[65], first[40], last[40];
    cli_hex(root, sizeof root, root_hex);
    cli_time(v.first_ns, first, sizeof first);
    cli_time(v.last_ns, last, sizeof last);
    double rate = secs > 0 ? (double)v.leaves / secs : 0;
    if (common->json) {
        printf("{\"ok\":true,\"entries\":%llu,\"messages_verified\":%llu,\"retained_out\":%llu,"
               "\"registry_changes\":%llu,\"delivery_receipts\":%llu,\"topics\":%llu,"
               "\"tree_nodes\":%llu,"
               "\"tree_heads\":%llu,\"root\":\"%s\","
               "\"first\":\"%s\",\"last\":\"%s\",\"seconds\":%.3f,\"entries_per_s\":%.0f}\n",
               (unsigned long long)v.leaves, (unsigned long long)v.messages,
               (unsigned long long)v.retained_out, (unsigned long long)v.member_changes,
               (unsigned long long)v.deliveries, (unsigned long long)v.topics,
               (unsigned long long)v.nodes, (unsigned long long)v.heads, root_hex, first, last,
               secs, rate);
    } else {
        printf("audit log verified: %llu entries (%llu messages with their signatures, %llu "
               "deleted by retention, %llu registry changes)\n",
               (unsigned long long)v.leaves, (unsigned long long)v.messages,
               (unsigned long long)v.retained_out, (unsigned long long)v.member_changes);
        printf("  topics   %llu\n", (unsigned long long)v.topics);
        printf("  delivery %llu signed delivery receipts\n", (unsigned long long)v.deliveries);
        printf("  tree     %llu nodes, root %s\n", (unsigned long long)v.nodes, root_hex);
        printf("  heads    %llu signed tree heads checked against the broker's key\n",
               (unsigned long long)v.heads);
        printf("  span     %s .. %s\n", v.leaves ? first : "-", v.leaves ? last : "-");
        printf("  speed    %.0f entries/s (%.2f s)\n", rate, secs);
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------ evidence */

static uint8_t *
read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *grown = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(fp);
    *len = n;
    return buf;
}

static int
write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = fwrite(data, 1, len, fp) == len;
    return fclose(fp) == 0 && ok ? 0 : -1;
}

typedef struct audit_args {
    const char *out;
} audit_args;

static int
audit_option(int opt, const char *arg, void *ctx)
{
    audit_args *a = ctx;
    if (opt == 'o') {
        a->out = arg;
        return 0;
    }
    return 1;
}

/* The member's key valid at t (its history of rotations). */
static int
member_key_of(store_reader *r, const char *name, int64_t t, uint8_t key[WIRE_KEY_BYTES])
{
    Spbe__V1__Member *m;
    if (store_member_get(r, name, &m) != SPBE_OK)
        return -1;
    const uint8_t *k = wire_member_key_at(m, t);
    int ok = k != NULL;
    if (ok)
        memcpy(key, k, WIRE_KEY_BYTES);
    spbe__v1__member__free_unpacked(m, NULL);
    return ok ? 0 : -1;
}

#define DELIVERIES_MAX 16

/* The delivery receipts covering a message: per member the first (lowest up_to). */
typedef struct collect_deliveries {
    store_reader *r;
    uint64_t head_size;
    Spbe__V1__DeliveryEvidence ev[DELIVERIES_MAX];
    Spbe__V1__DeliveryEvidence *ptrs[DELIVERIES_MAX];
    Spbe__V1__SignedDeliveryReceipt *signed_receipts[DELIVERIES_MAX];
    uint8_t keys[DELIVERIES_MAX][WIRE_KEY_BYTES];
    uint8_t paths[DELIVERIES_MAX][MERKLE_PATH_MAX][MERKLE_HASH_BYTES];
    ProtobufCBinaryData incl[DELIVERIES_MAX][MERKLE_PATH_MAX];
    char members[DELIVERIES_MAX][WIRE_MEMBER_MAX_BYTES + 1];
    size_t n;
} collect_deliveries;

static int
collect_delivery(const store_delivery *d, void *arg)
{
    collect_deliveries *cd = arg;
    for (size_t i = 0; i < cd->n; i++)
        if (strcmp(cd->members[i], d->member) == 0)
            return 0; /* this member's first covering receipt is in */
    Spbe__V1__SignedDeliveryReceipt *sdr =
        spbe__v1__signed_delivery_receipt__unpack(NULL, d->len, d->data);
    Spbe__V1__DeliveryReceipt *dr =
        sdr ? spbe__v1__delivery_receipt__unpack(NULL, sdr->receipt.len, sdr->receipt.data) : NULL;
    const uint8_t *leaf;
    size_t leaf_len;
    size_t i = cd->n;
    if (!dr || member_key_of(cd->r, d->member, dr->signed_ns, cd->keys[i]) != 0 ||
        store_leaf_get(cd->r, d->leaf_index, &leaf, &leaf_len) != SPBE_OK) {
        if (dr)
            spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
        if (sdr)
            spbe__v1__signed_delivery_receipt__free_unpacked(sdr, NULL);
        return 0;
    }
    spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
    Spbe__V1__DeliveryEvidence *e = &cd->ev[i];
    spbe__v1__delivery_evidence__init(e);
    e->receipt = sdr;
    e->member_key.data = cd->keys[i];
    e->member_key.len = WIRE_KEY_BYTES;
    e->leaf.data = (uint8_t *)leaf;
    e->leaf.len = leaf_len;
    e->leaf_index = d->leaf_index;
    size_t n = 0;
    if (d->leaf_index < cd->head_size &&
        merkle_inclusion_proof(store_subtree, cd->r, d->leaf_index, cd->head_size, cd->paths[i],
                               &n) == 0) {
        for (size_t k = 0; k < n; k++) {
            cd->incl[i][k].data = cd->paths[i][k];
            cd->incl[i][k].len = MERKLE_HASH_BYTES;
        }
        e->n_inclusion = n;
        e->inclusion = cd->incl[i];
    }
    cd->signed_receipts[i] = sdr;
    cd->ptrs[i] = e;
    snprintf(cd->members[i], sizeof cd->members[i], "%s", d->member);
    cd->n++;
    return cd->n == DELIVERIES_MAX;
}

static int
audit_prove(const cli_common *common, const char *topic, const char *seq_text, const char *out)
{
    char *end;
    unsigned long long seq = strtoull(seq_text, &end, 10);
    if (!common->data || *end || seq == 0) {
        fputs(audit_usage, stderr);
        return EXIT_USAGE;
    }
    char path[1200], err[512];
    identity broker_id;
    snprintf(path, sizeof path, "%s/broker.key", common->data);
    int can_sign =
        identity_load(path, &broker_id, err, sizeof err) == SPBE_OK && broker_id.has_secret;
    if (!can_sign) {
        snprintf(path, sizeof path, "%s/broker.pub", common->data);
        if (identity_load(path, &broker_id, err, sizeof err) != SPBE_OK)
            return cli_fail("audit", SPBE_NOT_FOUND, "the broker's key: %s", err);
    }
    store *s = cli_open_store(common, "audit");
    if (!s)
        return EXIT_ERROR;
    store_reader *r;
    if (store_reader_begin(s, &r) != SPBE_OK) {
        store_close(&s);
        return cli_fail("audit", SPBE_INTERNAL, "cannot read %s", common->data);
    }
    broker_keys *bk = calloc(1, sizeof *bk);
    if (!bk || broker_keys_load(r, broker_id.public_key, bk) != 0) {
        const char *why_keys = bk ? bk->failure : "out of memory";
        int rc_fail = cli_fail("audit", SPBE_BAD_SIGNATURE, "%s", why_keys);
        free(bk);
        store_reader_end(&r);
        store_close(&s);
        return rc_fail;
    }
    int code = SPBE_OK;
    char why[300] = "";
    store_topic_info t;
    store_message m;
    const uint8_t *leaf = NULL, *head_bytes = NULL;
    size_t leaf_len = 0, head_len = 0;
    uint64_t head_size = 0;
    Spbe__V1__SignedMessage *sm = NULL;
    Spbe__V1__Message *msg = NULL;
    Spbe__V1__SignedTreeHead *sth = NULL;
    Spbe__V1__TreeHead *th = NULL;
    uint8_t sender_key[WIRE_KEY_BYTES], path_hashes[MERKLE_PATH_MAX][MERKLE_HASH_BYTES];
    size_t n_path = 0;
    if (store_topic_get(r, topic, &t) != SPBE_OK ||
        store_message_get(r, t.id, seq, &m) != SPBE_OK) {
        code = SPBE_NOT_FOUND;
        snprintf(why, sizeof why, "%s #%llu is not stored (never, or deleted by retention)", topic,
                 seq);
    } else if (store_leaf_get(r, m.leaf_index, &leaf, &leaf_len) != SPBE_OK ||
               wire_envelope_decode(m.data, m.len, &sm, &msg, NULL) != SPBE_OK) {
        code = SPBE_INTERNAL;
        snprintf(why, sizeof why,
                 "%s #%llu: its leaf or its bytes cannot be read (run spbe "
                 "audit verify)",
                 topic, seq);
    } else if (member_key_of(r, msg->sender, m.accepted_ns, sender_key) != 0 &&
               strcmp(msg->sender, broker_id.member) != 0) {
        code = SPBE_UNKNOWN_SENDER;
        snprintf(why, sizeof why, "sender %s is not in the registry", msg->sender);
    } else if (store_head_latest(r, &head_size, &head_bytes, &head_len) != SPBE_OK ||
               head_size <= m.leaf_index) { /* the latest head: it covers delivery receipts too */
        code = SPBE_NOT_FOUND;
        snprintf(why, sizeof why,
                 "no signed tree head covers leaf %llu yet: the broker signs "
                 "one every --tree-head-ms and at stop",
                 (unsigned long long)m.leaf_index);
    } else if (!(sth = spbe__v1__signed_tree_head__unpack(NULL, head_len, head_bytes)) ||
               wire_tree_head_verify(sth, broker_key_for_leaf(bk, head_size - 1), &th) != SPBE_OK ||
               merkle_inclusion_proof(store_subtree, r, m.leaf_index, head_size, path_hashes,
                                      &n_path) != 0) {
        code = SPBE_INTERNAL;
        snprintf(why, sizeof why, "tree head %llu does not verify (run spbe audit verify)",
                 (unsigned long long)head_size);
    }
    if (code == SPBE_OK && strcmp(msg->sender, broker_id.member) == 0)
        memcpy(sender_key, broker_id.public_key, sizeof sender_key);
    uint8_t *packed = NULL;
    size_t packed_len = 0;
    collect_deliveries *cd = NULL;
    Spbe__V1__SignedReceipt receipt = SPBE__V1__SIGNED_RECEIPT__INIT;
    if (code == SPBE_OK) {
        uint8_t hash[WIRE_HASH_BYTES];
        crypto_hash_sha256(hash, m.data, m.len);
        if (can_sign) {
            Spbe__V1__Receipt rc = SPBE__V1__RECEIPT__INIT;
            rc.code = SPBE__V1__ERROR_CODE__OK;
            rc.topic = (char *)topic;
            rc.sequence = seq;
            rc.accepted_ns = m.accepted_ns;
            rc.message_hash.data = hash;
            rc.message_hash.len = sizeof hash;
            rc.message_id = msg->id;
            rc.sender = msg->sender;
            rc.broker = broker_id.broker[0] ? broker_id.broker : broker_id.member;
            rc.issued_ns = wire_now_ns();
            rc.leaf_index = m.leaf_index;
            rc.tree_size = head_size;
            rc.tree_root = th->root;
            if (wire_receipt_sign(&rc, broker_id.secret_key, &receipt) != SPBE_OK)
                receipt.receipt.data = NULL;
        }
        Spbe__V1__EvidenceBundle b = SPBE__V1__EVIDENCE_BUNDLE__INIT;
        ProtobufCBinaryData inclusion[MERKLE_PATH_MAX];
        for (size_t i = 0; i < n_path; i++) {
            inclusion[i].data = path_hashes[i];
            inclusion[i].len = MERKLE_HASH_BYTES;
        }
        b.version = 1;
        b.message.data = (uint8_t *)m.data;
        b.message.len = m.len;
        b.topic = (char *)topic;
        b.sequence = seq;
        b.accepted_ns = m.accepted_ns;
        b.sender = msg->sender;
        b.sender_key.data = sender_key;
        b.sender_key.len = sizeof sender_key;
        b.leaf.data = (uint8_t *)leaf;
        b.leaf.len = leaf_len;
        b.leaf_index = m.leaf_index;
        b.head = sth;
        b.n_inclusion = n_path;
        b.inclusion = inclusion;
        /* the key that signed the head, and the rotations from it to the current key */
        b.broker_key.data = (uint8_t *)broker_key_for_leaf(bk, head_size - 1);
        b.broker_key.len = WIRE_KEY_BYTES;
        b.n_broker_rotations = bk->n - 1;
        b.broker_rotations = bk->signed_rotations;
        if (receipt.receipt.data)
            b.receipt = &receipt;
        cd = calloc(1, sizeof *cd);
        if (cd) {
            cd->r = r;
            cd->head_size = head_size;
            store_delivery_each(r, t.id, seq, collect_delivery, cd);
            b.n_deliveries = cd->n;
            b.deliveries = cd->ptrs;
        }
        packed_len = spbe__v1__evidence_bundle__get_packed_size(&b);
        packed = malloc(packed_len);
        if (packed)
            spbe__v1__evidence_bundle__pack(&b, packed);
    }
    char name[600];
    if (code == SPBE_OK) {
        if (!out) {
            snprintf(name, sizeof name, "%s-%llu.evidence", topic, seq);
            out = name;
        }
        if (!packed || write_file(out, packed, packed_len) != 0) {
            code = SPBE_INTERNAL;
            snprintf(why, sizeof why, "cannot write %.250s", out);
        }
    }
    if (code == SPBE_OK) {
        if (common->json) {
            printf("{\"bundle\":");
            cli_json_string(stdout, out);
            printf(",\"leaf_index\":%llu,\"tree_size\":%llu,\"receipt\":%s}\n",
                   (unsigned long long)m.leaf_index, (unsigned long long)head_size,
                   receipt.receipt.data ? "true" : "false");
        } else {
            printf("evidence for %s #%llu written to %s: leaf %llu of the tree of %llu signed "
                   "by the broker%s, %zu delivery receipt(s)\n",
                   topic, seq, out, (unsigned long long)m.leaf_index, (unsigned long long)head_size,
                   receipt.receipt.data ? ", with a receipt"
                                        : " (no receipt: broker.key unreadable)",
                   cd ? cd->n : 0);
        }
    }
    free(packed);
    free(receipt.receipt.data);
    for (size_t i = 0; cd && i < cd->n; i++)
        spbe__v1__signed_delivery_receipt__free_unpacked(cd->signed_receipts[i], NULL);
    free(cd);
    broker_keys_free(bk);
    free(bk);
    if (th)
        spbe__v1__tree_head__free_unpacked(th, NULL);
    if (sth)
        spbe__v1__signed_tree_head__free_unpacked(sth, NULL);
    wire_envelope_free(&sm, &msg);
    store_reader_end(&r);
    store_close(&s);
    sodium_memzero(&broker_id, sizeof broker_id);
    return code == SPBE_OK ? EXIT_OK : cli_fail("audit", code, "%s", why);
}

static int
audit_check(const cli_common *common, const char *file)
{
    size_t len;
    uint8_t *data = read_file(file, &len);
    if (!data)
        return cli_fail("audit", SPBE_NOT_FOUND, "cannot read %s", file);
    Spbe__V1__EvidenceBundle *b = spbe__v1__evidence_bundle__unpack(NULL, len, data);
    free(data);
    char why[300];
    Spbe__V1__TreeHead *th = NULL;
    uint8_t last_key[WIRE_KEY_BYTES], pinned[WIRE_KEY_BYTES];
    if (common->broker_key &&
        wire_hex_decode(common->broker_key, pinned, sizeof pinned) != SPBE_OK) {
        if (b)
            spbe__v1__evidence_bundle__free_unpacked(b, NULL);
        return cli_fail("audit", SPBE_BAD_REQUEST, "--broker-key takes 64 hex digits");
    }
    int ok = b && evidence_check(b, common->broker_key ? pinned : NULL, why, sizeof why, &th,
                                 last_key) == 0;
    if (!b)
        snprintf(why, sizeof why, "%s is not an evidence bundle", file);
    if (ok) {
        char accepted[40], signed_at[40], key[65];
        cli_time(b->accepted_ns, accepted, sizeof accepted);
        cli_time(th->timestamp_ns, signed_at, sizeof signed_at);
        cli_hex(last_key, WIRE_KEY_BYTES, key);
        if (common->json) {
            printf("{\"ok\":true,\"topic\":");
            cli_json_string(stdout, b->topic);
            printf(",\"sequence\":%llu,\"sender\":", (unsigned long long)b->sequence);
            cli_json_string(stdout, b->sender);
            printf(",\"accepted\":\"%s\",\"leaf_index\":%llu,\"tree_size\":%llu,"
                   "\"head_signed\":\"%s\",\"broker_key\":\"%s\",\"receipt\":%s,"
                   "\"delivery_receipts\":%zu}\n",
                   accepted, (unsigned long long)b->leaf_index, (unsigned long long)th->size,
                   signed_at, key, b->receipt ? "true" : "false", b->n_deliveries);
        } else {
            printf("evidence holds: %s #%llu from %s, accepted %s\n", b->topic,
                   (unsigned long long)b->sequence, b->sender, accepted);
            printf("  signature  the sender's, over the exact bytes\n");
            printf("  log        leaf %llu of the tree of %llu, head signed %s\n",
                   (unsigned long long)b->leaf_index, (unsigned long long)th->size, signed_at);
            printf("  receipt    %s\n", b->receipt ? "the broker's, for this message" : "none");
            for (size_t i = 0; i < b->n_deliveries; i++) {
                Spbe__V1__DeliveryReceipt *dr =
                    spbe__v1__delivery_receipt__unpack(NULL, b->deliveries[i]->receipt->receipt.len,
                                                       b->deliveries[i]->receipt->receipt.data);
                if (dr) {
                    printf("  delivered  to %s (signed receipt up to #%llu%s)\n", dr->member,
                           (unsigned long long)dr->up_to,
                           b->deliveries[i]->n_inclusion ? ", in the signed tree"
                                                         : ", logged after this head");
                    spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
                }
            }
            printf("  broker key %s%s\n", key,
                   common->broker_key ? " (as expected)" : " (pin it with --broker-key)");
        }
    } else if (common->json) {
        printf("{\"ok\":false,\"failure\":");
        cli_json_string(stdout, why);
        printf("}\n");
    }
    if (th)
        spbe__v1__tree_head__free_unpacked(th, NULL);
    if (b)
        spbe__v1__evidence_bundle__free_unpacked(b, NULL);
    return ok ? EXIT_OK : cli_fail("audit", SPBE_BAD_SIGNATURE, "%s", why);
}

static int
audit_head(const cli_common *common, const char *out)
{
    if (!common->data) {
        fputs(audit_usage, stderr);
        return EXIT_USAGE;
    }
    store *s = cli_open_store(common, "audit");
    if (!s)
        return EXIT_ERROR;
    store_reader *r;
    uint64_t size = 0;
    const uint8_t *data;
    size_t len = 0;
    int rc = store_reader_begin(s, &r);
    if (rc == SPBE_OK) {
        rc = store_head_latest(r, &size, &data, &len);
        char name[64];
        if (rc == SPBE_OK && !out) {
            snprintf(name, sizeof name, "head-%llu.sth", (unsigned long long)size);
            out = name;
        }
        if (rc == SPBE_OK && write_file(out, data, len) != 0)
            rc = SPBE_INTERNAL;
        if (rc == SPBE_OK)
            printf("tree head %llu written to %s\n", (unsigned long long)size, out);
        store_reader_end(&r);
    }
    store_close(&s);
    return rc == SPBE_OK
               ? EXIT_OK
               : cli_fail("audit", rc, "%s",
                          rc == SPBE_NOT_FOUND ? "no signed head yet" : "cannot write it");
}

static Spbe__V1__TreeHead *
load_head(const char *file, const broker_keys *bk, char *why, size_t why_len)
{
    size_t len;
    uint8_t *data = read_file(file, &len);
    if (!data) {
        snprintf(why, why_len, "cannot read %s", file);
        return NULL;
    }
    /* a head as stored, or the message that carried it on $sys.audit.head */
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    Spbe__V1__SignedTreeHead *sth = NULL;
    if (wire_envelope_decode(data, len, &sm, &msg, NULL) == SPBE_OK) {
        if (strcmp(msg->schema, "spbe.v1.SignedTreeHead") == 0)
            sth = spbe__v1__signed_tree_head__unpack(NULL, msg->payload.len, msg->payload.data);
        wire_envelope_free(&sm, &msg);
    } else {
        wire_envelope_free(&sm, &msg);
        sth = spbe__v1__signed_tree_head__unpack(NULL, len, data);
    }
    free(data);
    Spbe__V1__TreeHead *th = NULL;
    /* signed by one of the broker's keys: the one it had at that size is checked below */
    for (size_t i = 0; sth && !th && i < bk->n; i++)
        if (wire_tree_head_verify(sth, bk->key[i], &th) == SPBE_OK && th->size &&
            memcmp(broker_key_for_leaf(bk, th->size - 1), bk->key[i], WIRE_KEY_BYTES) != 0) {
            spbe__v1__tree_head__free_unpacked(th, NULL);
            th = NULL;
        }
    if (!th)
        snprintf(why, why_len, "%s is not a tree head signed by this broker", file);
    if (sth)
        spbe__v1__signed_tree_head__free_unpacked(sth, NULL);
    return th;
}

static int
audit_consistency(const cli_common *common, const char *old_file, const char *new_file)
{
    if (!common->data) {
        fputs(audit_usage, stderr);
        return EXIT_USAGE;
    }
    char path[1200], why[600] = "";
    identity broker_id;
    snprintf(path, sizeof path, "%s/broker.pub", common->data);
    if (identity_load(path, &broker_id, why, sizeof why) != SPBE_OK)
        return cli_fail("audit", SPBE_NOT_FOUND, "the broker's key: %s", why);
    store *s = cli_open_store(common, "audit");
    store_reader *r = NULL;
    broker_keys *bk = calloc(1, sizeof *bk);
    if (!s || !bk || store_reader_begin(s, &r) != SPBE_OK ||
        broker_keys_load(r, broker_id.public_key, bk) != 0) {
        snprintf(why, sizeof why, "%s", bk && bk->failure[0] ? bk->failure : "cannot read the log");
        store_reader_end(&r);
        store_close(&s);
        if (bk)
            broker_keys_free(bk);
        free(bk);
        return cli_fail("audit", SPBE_INTERNAL, "%s", why);
    }
    Spbe__V1__TreeHead *a = load_head(old_file, bk, why, sizeof why);
    Spbe__V1__TreeHead *b = a ? load_head(new_file, bk, why, sizeof why) : NULL;
    int ok = 0;
    if (a && b) {
        if (a->size > b->size) {
            Spbe__V1__TreeHead *t = a;
            a = b;
            b = t;
        }
        uint8_t proof[MERKLE_PATH_MAX][MERKLE_HASH_BYTES];
        size_t n = 0;
        if (a->size == 0 ||
            merkle_consistency_proof(store_subtree, r, a->size, b->size, proof, &n) == 0)
            ok = merkle_verify_consistency(a->size, b->size, a->root.data, b->root.data,
                                           (const uint8_t(*)[MERKLE_HASH_BYTES])proof, n);
        if (!ok)
            snprintf(why, sizeof why,
                     "the tree of %llu does not extend the tree of %llu: history was changed",
                     (unsigned long long)b->size, (unsigned long long)a->size);
        if (ok)
            printf("consistent: the tree of %llu extends the tree of %llu (proof of %zu "
                   "hashes)\n",
                   (unsigned long long)b->size, (unsigned long long)a->size, n);
    }
    store_reader_end(&r);
    store_close(&s);
    broker_keys_free(bk);
    free(bk);
    if (a)
        spbe__v1__tree_head__free_unpacked(a, NULL);
    if (b)
        spbe__v1__tree_head__free_unpacked(b, NULL);
    return ok ? EXIT_OK : cli_fail("audit", SPBE_BAD_SIGNATURE, "%s", why);
}

int
cmd_audit(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, audit_usage);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    static const struct option opts[] = {{"out", required_argument, 0, 'o'}, {0, 0, 0, 0}};
    audit_args a = {0};
    int i = cli_parse(argc - 1, argv + 1, &common, opts, "o:", audit_option, &a, audit_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    int npos = argc - 1 - i;
    char **pos = argv + 1 + i;
    if (strcmp(what, "verify") == 0 && npos == 0)
        return audit_verify(&common);
    if (strcmp(what, "prove") == 0 && npos == 2)
        return audit_prove(&common, pos[0], pos[1], a.out);
    if (strcmp(what, "check") == 0 && npos == 1)
        return audit_check(&common, pos[0]);
    if (strcmp(what, "head") == 0 && npos == 0)
        return audit_head(&common, a.out);
    if (strcmp(what, "consistency") == 0 && npos == 2)
        return audit_consistency(&common, pos[0], pos[1]);
    fputs(audit_usage, stderr);
    return EXIT_USAGE;
}
