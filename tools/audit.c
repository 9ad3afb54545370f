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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "identity.h"
#include "merkle.h"
#include "wire.h"

static const char audit_usage[] =
    "usage: spbe audit verify --data DIR [--json]\n"
    "\n"
    "verify: re-checks the data directory offline and read-only (also while the broker\n"
    "runs): every stored message's signature against its sender's key, every message\n"
    "against its leaf of the audit log, the Merkle tree node by node, and every signed\n"
    "tree head against the broker's key (DIR/broker.pub) and the tree. Reports the first\n"
    "inconsistency (topic, sequence, what failed) and exits 1; else a summary.\n";

typedef struct member_key {
    char name[WIRE_MEMBER_MAX_BYTES + 1];
    uint8_t key[WIRE_KEY_BYTES];
} member_key;

typedef struct verify {
    store_reader *r;
    uint64_t size; /* leaves */
    uint64_t leaves, messages, retained_out, member_changes, nodes, heads;
    int64_t first_ns, last_ns;
    member_key *keys;
    size_t n_keys;
    uint8_t broker_key[WIRE_KEY_BYTES];
    char failure[512];
    int progress; /* stderr is a terminal */
    int64_t started_ns, last_draw_ns;
} verify;

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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
    int64_t now = mono_ns();
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

static const uint8_t *
sender_key(verify *v, const char *name)
{
    for (size_t i = 0; i < v->n_keys; i++)
        if (strcmp(v->keys[i].name, name) == 0)
            return v->keys[i].key;
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
    snprintf(grown[v->n_keys].name, sizeof grown[v->n_keys].name, "%s", m->name);
    memcpy(grown[v->n_keys].key, m->public_key.data, WIRE_KEY_BYTES);
    v->n_keys++;
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
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    const char *why = NULL;
    if (wire_envelope_decode(m.data, m.len, &sm, &msg, &why) != SPBE_OK)
        return fail_at(v, "%s #%llu: the stored message does not decode (%s)", leaf->topic,
                       (unsigned long long)leaf->sequence, why ? why : "malformed");
    const uint8_t *key = sender_key(v, msg->sender);
    int bad = !key ? 1 : wire_envelope_verify(sm, key) != SPBE_OK ? 2 : 0;
    if (!bad && strcmp(msg->topic, leaf->topic) != 0)
        bad = 3;
    char sender[WIRE_MEMBER_MAX_BYTES + 1];
    snprintf(sender, sizeof sender, "%s", msg->sender);
    wire_envelope_free(&sm, &msg);
    if (bad == 1)
        return fail_at(v, "%s #%llu: sender %s is not in the registry", leaf->topic,
                       (unsigned long long)leaf->sequence, sender);
    if (bad == 2)
        return fail_at(v, "%s #%llu: the signature of %s does not verify", leaf->topic,
                       (unsigned long long)leaf->sequence, sender);
    if (bad == 3)
        return fail_at(v, "%s #%llu: the signed topic is another", leaf->topic,
                       (unsigned long long)leaf->sequence);
    uint8_t hash[WIRE_HASH_BYTES];
    crypto_hash_sha256(hash, m.data, m.len);
    if (leaf->message_hash.len != sizeof hash ||
        memcmp(hash, leaf->message_hash.data, sizeof hash) != 0)
        return fail_at(v, "%s #%llu: its bytes do not match the hash in leaf %llu", leaf->topic,
                       (unsigned long long)leaf->sequence, (unsigned long long)index);
    v->messages++;
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
    int rc = sth ? wire_tree_head_verify(sth, v->broker_key, &th) : SPBE_BAD_REQUEST;
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
    v.progress = isatty(2) && !common->json;
    v.started_ns = mono_ns();
    if (store_reader_begin(s, &v.r) != SPBE_OK) {
        store_close(&s);
        return cli_fail("audit", SPBE_INTERNAL, "cannot read %s", common->data);
    }
    store_audit_size(v.r, &v.size);
    /* the broker signs what it appends itself (dead letters, tree heads) */
    Spbe__V1__Member self = SPBE__V1__MEMBER__INIT;
    self.name = broker_id.member;
    self.public_key.data = broker_id.public_key;
    self.public_key.len = WIRE_KEY_BYTES;
    collect_key(&self, &v);
    store_member_each(v.r, collect_key, &v);
    store_leaf_each(v.r, check_leaf, &v);
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
    double secs = (double)(mono_ns() - v.started_ns) / 1e9;
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
               "\"registry_changes\":%llu,\"tree_nodes\":%llu,\"tree_heads\":%llu,\"root\":\"%s\","
               "\"first\":\"%s\",\"last\":\"%s\",\"seconds\":%.3f,\"entries_per_s\":%.0f}\n",
               (unsigned long long)v.leaves, (unsigned long long)v.messages,
               (unsigned long long)v.retained_out, (unsigned long long)v.member_changes,
               (unsigned long long)v.nodes, (unsigned long long)v.heads, root_hex, first, last,
               secs, rate);
    } else {
        printf("audit log verified: %llu entries (%llu messages with their signatures, %llu "
               "deleted by retention, %llu registry changes)\n",
               (unsigned long long)v.leaves, (unsigned long long)v.messages,
               (unsigned long long)v.retained_out, (unsigned long long)v.member_changes);
        printf("  tree     %llu nodes, root %s\n", (unsigned long long)v.nodes, root_hex);
        printf("  heads    %llu signed tree heads checked against the broker's key\n",
               (unsigned long long)v.heads);
        printf("  span     %s .. %s\n", v.leaves ? first : "-", v.leaves ? last : "-");
        printf("  speed    %.0f entries/s (%.2f s)\n", rate, secs);
    }
    return EXIT_OK;
}

int
cmd_audit(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, audit_usage);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    int i = cli_parse(argc - 1, argv + 1, &common, NULL, "", NULL, NULL, audit_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (strcmp(what, "verify") == 0 && argc - 1 == i)
        return audit_verify(&common);
    fputs(audit_usage, stderr);
    return EXIT_USAGE;
}
