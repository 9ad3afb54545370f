/* store.c - topic logs, dedup and registry in LMDB. See store.h for the layout. */
#include "store.h"

#include <errno.h>
#include <sys/statvfs.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <sodium.h>

#include "merkle.h"
#include "spbe/errors.h"
#include "wire.h"

/* 2: the audit log (leaves, tree nodes, heads); 3: its tree nodes keyed by the last leaf
 * they cover, then level, so that the nodes one commit adds lie together (format 2 keyed
 * them by level, then index: a page per level; a writable open converts it) */
#define STORE_FORMAT 3
#define TOPIC_RECORD_BYTES 52
#define MESSAGE_HEADER_BYTES 16
#define DEDUP_VALUE_BYTES 20
#define DEFAULT_MAP_BYTES (64ull << 20)
#define MAX_GROWTH_STEP (4ull << 30)

struct store {
    MDB_env *env;
    int read_only;
    int nodes_by_level; /* a format 2 store read as it is: its tree nodes' old keys */
    uint64_t map_bytes;
    uint64_t max_map_bytes;       /* the map may grow up to this: the limit and a reserve */
    uint64_t limit_bytes;         /* storage limit for appends; 0: none */
    atomic_int over_limit;        /* set by the writer, read by the I/O thread */
    atomic_int disk_full;         /* the last commit of appends found no room on the disk */
    pthread_rwlock_t resize_lock; /* readers: every txn; writer: mdb_env_set_mapsize */
    MDB_dbi meta, topics, topic_ids, messages, dedup, dedup_time, members, member_keys;
    MDB_dbi consumers, consumer_topics, consumer_pending;
    MDB_dbi audit_leaves, audit_nodes, audit_heads, audit_deliveries;
    pthread_mutex_t head_lock; /* the last committed tree: written by the writer */
    uint64_t tree_size;
    uint8_t tree_root[MERKLE_HASH_BYTES];
};

static int tree_load(store *s, char *err, size_t err_len);

struct store_reader {
    store *s;
    MDB_txn *txn;
};

/* ------------------------------------------------------------ byte order */

static void
put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void
put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t
get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t
get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
topic_encode(const store_topic_info *t, uint8_t out[TOPIC_RECORD_BYTES])
{
    put_le32(out, t->id);
    put_le64(out + 4, t->first_sequence);
    put_le64(out + 12, t->last_sequence);
    put_le64(out + 20, t->messages);
    put_le64(out + 28, t->bytes);
    put_le64(out + 36, (uint64_t)t->first_ns);
    put_le64(out + 44, (uint64_t)t->last_ns);
}

static int
topic_decode(const MDB_val *key, const MDB_val *val, store_topic_info *t)
{
    if (val->mv_size != TOPIC_RECORD_BYTES || key->mv_size >= sizeof t->name)
        return SPBE_INTERNAL;
    const uint8_t *p = val->mv_data;
    memcpy(t->name, key->mv_data, key->mv_size);
    t->name[key->mv_size] = '\0';
    t->id = get_le32(p);
    t->first_sequence = get_le64(p + 4);
    t->last_sequence = get_le64(p + 12);
    t->messages = get_le64(p + 20);
    t->bytes = get_le64(p + 28);
    t->first_ns = (int64_t)get_le64(p + 36);
    t->last_ns = (int64_t)get_le64(p + 44);
    return SPBE_OK;
}

static void
message_key(uint8_t key[12], uint32_t topic_id, uint64_t sequence)
{
    put_be32(key, topic_id);
    put_be64(key + 4, sequence);
}

static int
message_decode(const MDB_val *key, const MDB_val *val, store_message *m)
{
    if (key->mv_size != 12 || val->mv_size < MESSAGE_HEADER_BYTES)
        return SPBE_INTERNAL;
    const uint8_t *rec = val->mv_data;
    if (rec[0] != 2)
        return SPBE_INTERNAL;
    m->leaf_index = 0;
    for (int i = 7; i >= 1; i--)
        m->leaf_index = m->leaf_index << 8 | rec[i];
    m->topic_id = get_be32(key->mv_data);
    m->sequence = get_be64((const uint8_t *)key->mv_data + 4);
    m->accepted_ns = (int64_t)get_le64(rec + 8);
    m->data = rec + MESSAGE_HEADER_BYTES;
    m->len = val->mv_size - MESSAGE_HEADER_BYTES;
    return SPBE_OK;
}

/* ------------------------------------------------------------ environment */

static int
map_error(int rc)
{
    switch (rc) {
    case 0:
        return SPBE_OK;
    case MDB_NOTFOUND:
        return SPBE_NOT_FOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
        return SPBE_STORAGE_FULL;
    default:
        return SPBE_INTERNAL;
    }
}

static int
txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
    pthread_rwlock_rdlock(&s->resize_lock);
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        /* another process grew the map: adopt its size */
        pthread_rwlock_unlock(&s->resize_lock);
        pthread_rwlock_wrlock(&s->resize_lock);
        mdb_env_set_mapsize(s->env, 0);
        pthread_rwlock_unlock(&s->resize_lock);
        pthread_rwlock_rdlock(&s->resize_lock);
        rc = mdb_txn_begin(s->env, NULL, flags, txn);
    }
    if (rc != 0)
        pthread_rwlock_unlock(&s->resize_lock);
    return rc;
}

static void
txn_abort(store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->resize_lock);
}

static int
txn_commit(store *s, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    pthread_rwlock_unlock(&s->resize_lock);
    return rc;
}

/* Doubles the map (up to the limit). Call with no transaction open in this thread. */
static int
store_grow(store *s)
{
    uint64_t step = s->map_bytes < MAX_GROWTH_STEP ? s->map_bytes : MAX_GROWTH_STEP;
    uint64_t want = s->map_bytes + step;
    if (s->max_map_bytes && want > s->max_map_bytes)
        want = s->max_map_bytes;
    if (want <= s->map_bytes)
        return SPBE_STORAGE_FULL;
    pthread_rwlock_wrlock(&s->resize_lock);
    int rc = mdb_env_set_mapsize(s->env, want);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc != 0)
        return SPBE_STORAGE_FULL;
    s->map_bytes = want;
    return SPBE_OK;
}

static int nodes_convert(const store *s, MDB_txn *txn, MDB_dbi from, MDB_dbi to);

static int
open_databases_once(store *s, char *err, size_t err_len)
{
    MDB_txn *txn;
    unsigned flags = s->read_only ? 0 : MDB_CREATE;
    int rc = txn_begin(s, s->read_only ? MDB_RDONLY : 0, &txn);
    if (rc) {
        snprintf(err, err_len, "cannot begin transaction: %s", mdb_strerror(rc));
        return SPBE_INTERNAL;
    }
    int before_consumers = 0; /* and before the audit log: nothing of it to open */
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {{"meta", &s->meta},
               {"topics", &s->topics},
               {"topic_ids", &s->topic_ids},
               {"messages", &s->messages},
               {"dedup", &s->dedup},
               {"dedup_time", &s->dedup_time},
               {"members", &s->members},
               {"member_keys", &s->member_keys},
               {"consumers", &s->consumers},
               {"consumer_topics", &s->consumer_topics},
               {"consumer_pending", &s->consumer_pending},
               {"audit_leaves", &s->audit_leaves},
               {"audit_heads", &s->audit_heads},
               {"audit_deliveries", &s->audit_deliveries}};
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
        if (rc == MDB_NOTFOUND && s->read_only && dbs[i].dbi == &s->consumers) {
            /* written by a broker before consumers existed: none to read */
            s->consumers = s->consumer_topics = s->consumer_pending = 0;
            before_consumers = 1;
            break;
        }
        if (rc) {
            snprintf(err, err_len, "%s: database '%s': %s",
                     rc == MDB_NOTFOUND ? "not an spbe data directory" : "cannot open", dbs[i].name,
                     mdb_strerror(rc));
            txn_abort(s, txn);
            return rc == MDB_NOTFOUND ? SPBE_NOT_FOUND : SPBE_INTERNAL;
        }
    }
    MDB_val key = {6, "format"}, val;
    rc = mdb_get(txn, s->meta, &key, &val);
    unsigned format = rc == 0 && val.mv_size == 4 ? get_le32(val.mv_data) : 0;
    uint8_t v[4];
    put_le32(v, STORE_FORMAT);
    MDB_val current = {4, v};
    if (rc == MDB_NOTFOUND && !s->read_only) {
        format = STORE_FORMAT;
        rc = mdb_put(txn, s->meta, &key, &current, 0);
    } else if (rc == 0 && format != STORE_FORMAT && format != 2) {
        snprintf(err, err_len, "data format %u is not the supported %d", format, STORE_FORMAT);
        txn_abort(s, txn);
        return SPBE_INTERNAL;
    } else if (rc == MDB_NOTFOUND) {
        snprintf(err, err_len, "not an spbe data directory (no format record)");
        txn_abort(s, txn);
        return SPBE_NOT_FOUND;
    }
    if (rc == 0 && before_consumers) {
        s->audit_nodes = 0;
    } else if (rc == 0 && format == 2) { /* nodes by level: read as they are, or converted */
        MDB_dbi old;
        rc = mdb_dbi_open(txn, "audit_nodes", 0, &old);
        if (rc == 0 && s->read_only) {
            s->nodes_by_level = 1;
            s->audit_nodes = old;
        } else if (rc == 0) {
            rc = mdb_dbi_open(txn, "audit_tree", MDB_CREATE, &s->audit_nodes);
            if (rc == 0)
                rc = nodes_convert(s, txn, old, s->audit_nodes);
            if (rc == 0)
                rc = mdb_put(txn, s->meta, &key, &current, 0);
        }
    } else if (rc == 0) {
        rc = mdb_dbi_open(txn, "audit_tree", flags, &s->audit_nodes);
    }
    if (rc == 0)
        rc = txn_commit(s, txn);
    else
        txn_abort(s, txn);
    if (rc) {
        snprintf(err, err_len, "cannot initialise: %s", mdb_strerror(rc));
        return map_error(rc);
    }
    return SPBE_OK;
}

/* Opens the databases; converting a format 2 tree may need a bigger map first. */
static int
open_databases(store *s, char *err, size_t err_len)
{
    int code;
    for (int tries = 0; tries < 16; tries++) {
        code = open_databases_once(s, err, err_len);
        if (code != SPBE_STORAGE_FULL || store_grow(s) != SPBE_OK)
            break;
    }
    return code;
}

int
store_open(const char *dir, const store_options *options, store **out, char *err, size_t err_len)
{
    store_options defaults = {0};
    if (!options)
        options = &defaults;
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return SPBE_INTERNAL;
    }
    s->read_only = options->read_only;
    s->limit_bytes = options->max_map_bytes;
    if (s->limit_bytes) {
        uint64_t reserve = s->limit_bytes / 8 > (2u << 20) ? s->limit_bytes / 8 : (2u << 20);
        s->max_map_bytes = s->limit_bytes + reserve;
    }
    s->map_bytes = options->initial_map_bytes ? options->initial_map_bytes : DEFAULT_MAP_BYTES;
    if (s->max_map_bytes && s->map_bytes > s->max_map_bytes)
        s->map_bytes = s->max_map_bytes;
    pthread_rwlock_init(&s->resize_lock, NULL);
    pthread_mutex_init(&s->head_lock, NULL);

    if (!s->read_only && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "cannot create %s: %s", dir, strerror(errno));
        goto fail;
    }
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, 32);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(s->env, 256);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, s->map_bytes);
    if (rc == 0)
        rc = mdb_env_open(s->env, dir, MDB_NOTLS | (s->read_only ? MDB_RDONLY : 0), 0600);
    if (rc) {
        snprintf(err, err_len, "cannot open store in %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (info.me_mapsize > s->map_bytes)
        s->map_bytes = info.me_mapsize; /* the file was bigger than our first map */
    int code = open_databases(s, err, err_len);
    if (code == SPBE_OK)
        code = tree_load(s, err, err_len);
    if (code != SPBE_OK) {
        mdb_env_close(s->env);
        s->env = NULL;
        pthread_rwlock_destroy(&s->resize_lock);
        free(s);
        return code;
    }
    *out = s;
    return SPBE_OK;
fail:
    if (s->env)
        mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->resize_lock);
    pthread_mutex_destroy(&s->head_lock);
    free(s);
    return SPBE_INTERNAL;
}

void
store_close(store **sp)
{
    if (!sp || !*sp)
        return;
    store *s = *sp;
    mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->resize_lock);
    pthread_mutex_destroy(&s->head_lock);
    free(s);
    *sp = NULL;
}

/* ------------------------------------------------------------ appends */

typedef struct topic_slot {
    store_topic_info info;
    int dirty;
    int created;
} topic_slot;

typedef struct append_state {
    topic_slot *slots;
    size_t count, cap;
    uint32_t next_topic;
    int next_topic_dirty;
    uint64_t tree_size; /* leaves in the tree, with this transaction's */
    int tree_loaded, tree_dirty;
} append_state;

static int
next_topic_id(store *s, MDB_txn *txn, append_state *st, uint32_t *id)
{
    if (st->next_topic == 0) {
        MDB_val key = {10, "next_topic"}, val;
        int rc = mdb_get(txn, s->meta, &key, &val);
        if (rc == MDB_NOTFOUND)
            st->next_topic = 1;
        else if (rc == 0 && val.mv_size == 4)
            st->next_topic = get_le32(val.mv_data);
        else
            return rc ? rc : MDB_CORRUPTED;
    }
    *id = st->next_topic++;
    st->next_topic_dirty = 1;
    return 0;
}

static int
topic_slot_find(store *s, MDB_txn *txn, append_state *st, const char *name, topic_slot **out)
{
    for (size_t i = 0; i < st->count; i++)
        if (strcmp(st->slots[i].info.name, name) == 0) {
            *out = &st->slots[i];
            return 0;
        }
    if (st->count == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 8;
        topic_slot *n = realloc(st->slots, cap * sizeof *n);
        if (!n)
            return ENOMEM;
        st->slots = n;
        st->cap = cap;
    }
    topic_slot *slot = &st->slots[st->count];
    memset(slot, 0, sizeof *slot);
    MDB_val key = {strlen(name), (void *)name}, val;
    int rc = mdb_get(txn, s->topics, &key, &val);
    if (rc == 0) {
        if (topic_decode(&key, &val, &slot->info) != SPBE_OK)
            return MDB_CORRUPTED;
    } else if (rc == MDB_NOTFOUND) {
        snprintf(slot->info.name, sizeof slot->info.name, "%s", name);
        rc = next_topic_id(s, txn, st, &slot->info.id);
        if (rc)
            return rc;
        slot->created = 1;
        slot->dirty = 1;
    } else {
        return rc;
    }
    st->count++;
    *out = slot;
    return 0;
}

/* The dedup index's key: the first 16 bytes of SHA-256(sender), then the id as sent,
 * so that a sender's time-ordered ids append to its part of the index. */
static void
dedup_key(const char *sender, const uint8_t *id, uint8_t key[WIRE_HASH_BYTES])
{
    uint8_t h[WIRE_HASH_BYTES];
    wire_hash((const uint8_t *)sender, strnlen(sender, WIRE_MEMBER_MAX_BYTES), h);
    memcpy(key, h, WIRE_HASH_BYTES - WIRE_ID_BYTES);
    memcpy(key + WIRE_HASH_BYTES - WIRE_ID_BYTES, id, WIRE_ID_BYTES);
}

/* ------------------------------------------------------------ audit log */

static void
node_key(const store *s, uint8_t key[9], unsigned level, uint64_t index)
{
    if (s->nodes_by_level) { /* format 2 */
        key[0] = (uint8_t)level;
        put_be64(key + 1, index);
        return;
    }
    put_be64(key, ((index + 1) << level) - 1); /* the last leaf under the node */
    key[8] = (uint8_t)level;
}

/* The level and index of a node from its key in s's layout. */
static void
node_of_key(const store *s, const uint8_t key[9], unsigned *level, uint64_t *index)
{
    if (s->nodes_by_level) {
        *level = key[0];
        *index = get_be64(key + 1);
        return;
    }
    *level = key[8];
    *index = *level < 64 ? ((get_be64(key) + 1) >> *level) - 1 : 0;
}

/* 1 if key is a node's key in s's layout (each node has exactly one). */
static int
node_key_valid(const store *s, const uint8_t key[9])
{
    if (s->nodes_by_level)
        return key[0] < 64;
    uint64_t last = get_be64(key);
    return key[8] < 64 && last != UINT64_MAX && ((last + 1) & ((1ull << key[8]) - 1)) == 0;
}

/* Converts a format 2 tree (nodes keyed by level, then index) into the format 3 database
 * `to`, in the caller's transaction, and drops the old one. */
static int
nodes_convert(const store *s, MDB_txn *txn, MDB_dbi from, MDB_dbi to)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, from, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *old = k.mv_data;
        if (k.mv_size != 9 || old[0] >= 64) {
            rc = MDB_CORRUPTED;
            break;
        }
        uint8_t nk[9];
        node_key(s, nk, old[0], get_be64(old + 1));
        MDB_val key = {sizeof nk, nk};
        if ((rc = mdb_put(txn, to, &key, &v, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? mdb_drop(txn, from, 1) : rc;
}

typedef struct tree_txn {
    store *s;
    MDB_txn *txn;
    int rc; /* LMDB's code when a read or write failed */
} tree_txn;

static int
tree_get(void *ctx, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_BYTES])
{
    tree_txn *tt = ctx;
    uint8_t k[9];
    node_key(tt->s, k, level, index);
    MDB_val key = {sizeof k, k}, val;
    int rc = mdb_get(tt->txn, tt->s->audit_nodes, &key, &val);
    if (rc != 0 || val.mv_size != MERKLE_HASH_BYTES) {
        tt->rc = rc ? rc : MDB_CORRUPTED;
        return -1;
    }
    memcpy(out, val.mv_data, MERKLE_HASH_BYTES);
    return 0;
}

static int
tree_put(void *ctx, unsigned level, uint64_t index, const uint8_t hash[MERKLE_HASH_BYTES])
{
    tree_txn *tt = ctx;
    uint8_t k[9];
    node_key(tt->s, k, level, index);
    MDB_val key = {sizeof k, k}, val = {MERKLE_HASH_BYTES, (void *)hash};
    tt->rc = mdb_put(tt->txn, tt->s->audit_nodes, &key, &val, 0);
    return tt->rc ? -1 : 0;
}

static int
meta_tree_size(store *s, MDB_txn *txn, uint64_t *size)
{
    MDB_val key = {10, "audit_size"}, val;
    int rc = mdb_get(txn, s->meta, &key, &val);
    *size = rc == 0 && val.mv_size == 8 ? get_le64(val.mv_data) : 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The number of leaves, this transaction's included. */
static int
tree_size(store *s, MDB_txn *txn, append_state *st, uint64_t *size)
{
    if (!st->tree_loaded) {
        int rc = meta_tree_size(s, txn, &st->tree_size);
        if (rc)
            return rc;
        st->tree_loaded = 1;
    }
    *size = st->tree_size;
    return 0;
}

/* Appends one leaf: its bytes, and the perfect subtrees it completes. */
static int
leaf_append(store *s, MDB_txn *txn, append_state *st, const Spbe__V1__AuditLeaf *leaf)
{
    uint64_t index;
    int rc = tree_size(s, txn, st, &index);
    if (rc)
        return rc;
    uint8_t buf[512];
    size_t len = spbe__v1__audit_leaf__get_packed_size(leaf);
    if (len > sizeof buf)
        return MDB_BAD_VALSIZE;
    spbe__v1__audit_leaf__pack(leaf, buf);
    uint8_t k[8];
    put_be64(k, index);
    MDB_val key = {sizeof k, k}, val = {len, buf};
    if ((rc = mdb_put(txn, s->audit_leaves, &key, &val, MDB_APPEND)) != 0)
        return rc;
    uint8_t h[MERKLE_HASH_BYTES];
    merkle_leaf_hash(buf, len, h);
    tree_txn tt = {s, txn, 0};
    if (merkle_append(tree_get, &tt, index, h, tree_put) != 0)
        return tt.rc ? tt.rc : MDB_CORRUPTED;
    st->tree_size = index + 1;
    st->tree_dirty = 1;
    return 0;
}

/* Computes the root of the tree as this transaction leaves it, to publish on commit. */
static int
tree_head_of(store *s, MDB_txn *txn, append_state *st, uint64_t *size,
             uint8_t root[MERKLE_HASH_BYTES])
{
    int rc = tree_size(s, txn, st, size);
    if (rc)
        return rc;
    tree_txn tt = {s, txn, 0};
    if (merkle_root(tree_get, &tt, *size, root) != 0)
        return tt.rc ? tt.rc : MDB_CORRUPTED;
    return 0;
}

static void
tree_publish(store *s, uint64_t size, const uint8_t root[MERKLE_HASH_BYTES])
{
    pthread_mutex_lock(&s->head_lock);
    s->tree_size = size;
    memcpy(s->tree_root, root, MERKLE_HASH_BYTES);
    pthread_mutex_unlock(&s->head_lock);
}

static int
tree_load(store *s, char *err, size_t err_len)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc) {
        snprintf(err, err_len, "cannot begin transaction: %s", mdb_strerror(rc));
        return SPBE_INTERNAL;
    }
    append_state st = {0};
    uint64_t size;
    uint8_t root[MERKLE_HASH_BYTES];
    rc = tree_head_of(s, txn, &st, &size, root);
    txn_abort(s, txn);
    if (rc) {
        snprintf(err, err_len, "the audit log's tree cannot be read: %s", mdb_strerror(rc));
        return SPBE_INTERNAL;
    }
    tree_publish(s, size, root);
    return SPBE_OK;
}

void
store_tree_head(store *s, uint64_t *size, uint8_t root[MERKLE_HASH_BYTES])
{
    pthread_mutex_lock(&s->head_lock);
    *size = s->tree_size;
    memcpy(root, s->tree_root, MERKLE_HASH_BYTES);
    pthread_mutex_unlock(&s->head_lock);
}

static int
append_one(store *s, MDB_txn *txn, append_state *st, store_append_item *it, int64_t now,
           int64_t window_ns)
{
    uint8_t dkey[WIRE_HASH_BYTES];
    dedup_key(it->sender, it->id, dkey);
    MDB_val key = {sizeof dkey, dkey}, val;
    int rc = it->no_dedup ? MDB_NOTFOUND : mdb_get(txn, s->dedup, &key, &val);
    if (rc == 0 && val.mv_size == DEDUP_VALUE_BYTES) {
        const uint8_t *p = val.mv_data;
        int64_t when = (int64_t)get_le64(p + 12);
        if (window_ns <= 0 || now - when < window_ns) {
            it->code = SPBE_DUPLICATE;
            it->topic_id = get_le32(p);
            it->sequence = get_le64(p + 4);
            it->accepted_ns = when;
            return 0;
        }
    } else if (rc != MDB_NOTFOUND && rc != 0) {
        return rc;
    }

    topic_slot *slot;
    rc = topic_slot_find(s, txn, st, it->topic, &slot);
    if (rc)
        return rc;
    store_topic_info *t = &slot->info;
    uint64_t seq = t->last_sequence + 1;
    int64_t accepted = now > t->last_ns ? now : t->last_ns;

    uint8_t mkey[12];
    message_key(mkey, t->id, seq);
    MDB_val k = {sizeof mkey, mkey}, v = {MESSAGE_HEADER_BYTES + it->len, NULL};
    rc = mdb_put(txn, s->messages, &k, &v, MDB_RESERVE);
    if (rc)
        return rc;
    uint8_t *rec = v.mv_data;
    memset(rec, 0, MESSAGE_HEADER_BYTES);
    uint64_t leaf;
    rc = tree_size(s, txn, st, &leaf);
    if (rc)
        return rc;
    rec[0] = 2; /* record version: 1 byte, leaf index: 7 bytes LE, accepted_ns: 8 bytes LE */
    for (int i = 1; i <= 7; i++)
        rec[i] = (uint8_t)(leaf >> (8 * (i - 1)));
    put_le64(rec + 8, (uint64_t)accepted);
    memcpy(rec + MESSAGE_HEADER_BYTES, it->data, it->len);
    Spbe__V1__AuditLeaf al = SPBE__V1__AUDIT_LEAF__INIT;
    uint8_t hash[WIRE_HASH_BYTES];
    if (it->hash)
        memcpy(hash, it->hash, sizeof hash);
    else
        wire_hash(it->data, it->len, hash);
    al.kind = SPBE__V1__LEAF_KIND__LEAF_MESSAGE;
    al.topic = (char *)it->topic;
    al.sequence = seq;
    al.accepted_ns = accepted;
    al.message_hash.data = hash;
    al.message_hash.len = sizeof hash;
    if ((rc = leaf_append(s, txn, st, &al)) != 0)
        return rc;
    it->leaf_index = leaf;

    if (it->no_dedup)
        goto counted;
    uint8_t dval[DEDUP_VALUE_BYTES];
    put_le32(dval, t->id);
    put_le64(dval + 4, seq);
    put_le64(dval + 12, (uint64_t)accepted);
    MDB_val dv = {sizeof dval, dval};
    rc = mdb_put(txn, s->dedup, &key, &dv, 0);
    if (rc)
        return rc;
    uint8_t tkey[8 + WIRE_HASH_BYTES];
    put_be64(tkey, (uint64_t)accepted);
    memcpy(tkey + 8, dkey, sizeof dkey);
    MDB_val tk = {sizeof tkey, tkey}, tv = {0, ""};
    rc = mdb_put(txn, s->dedup_time, &tk, &tv, 0);
    if (rc)
        return rc;
counted:
    if (t->messages == 0) {
        t->first_sequence = seq;
        t->first_ns = accepted;
    }
    t->last_sequence = seq;
    t->last_ns = accepted;
    t->messages++;
    t->bytes += it->len;
    slot->dirty = 1;

    it->code = SPBE_OK;
    it->topic_id = t->id;
    it->sequence = seq;
    it->accepted_ns = accepted;
    return 0;
}

static int
append_flush(store *s, MDB_txn *txn, append_state *st)
{
    for (size_t i = 0; i < st->count; i++) {
        topic_slot *slot = &st->slots[i];
        if (!slot->dirty)
            continue;
        uint8_t rec[TOPIC_RECORD_BYTES];
        topic_encode(&slot->info, rec);
        MDB_val key = {strlen(slot->info.name), slot->info.name}, val = {sizeof rec, rec};
        int rc = mdb_put(txn, s->topics, &key, &val, 0);
        if (rc)
            return rc;
        if (slot->created) {
            uint8_t id[4];
            put_be32(id, slot->info.id);
            MDB_val ik = {4, id}, iv = {strlen(slot->info.name), slot->info.name};
            rc = mdb_put(txn, s->topic_ids, &ik, &iv, 0);
            if (rc)
                return rc;
        }
    }
    if (st->tree_dirty) {
        uint8_t v[8];
        put_le64(v, st->tree_size);
        MDB_val key = {10, "audit_size"}, val = {8, v};
        int rc = mdb_put(txn, s->meta, &key, &val, 0);
        if (rc)
            return rc;
    }
    if (st->next_topic_dirty) {
        uint8_t v[4];
        put_le32(v, st->next_topic);
        MDB_val key = {10, "next_topic"}, val = {4, v};
        return mdb_put(txn, s->meta, &key, &val, 0);
    }
    return 0;
}

/* Deletes the oldest messages of a topic (in the append state) up to sequence. */
static int
trim_topic(store *s, MDB_txn *txn, topic_slot *slot, uint64_t upto, size_t limit, size_t *removed)
{
    store_topic_info *t = &slot->info;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->messages, &cur);
    if (rc)
        return rc;
    uint8_t k[12];
    while (*removed < limit) {
        message_key(k, t->id, t->first_sequence);
        MDB_val key = {12, k}, val;
        if ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE)) != 0)
            break;
        store_message m;
        if (key.mv_size != 12 || get_be32(key.mv_data) != t->id ||
            message_decode(&key, &val, &m) != SPBE_OK || m.sequence > upto)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc)
            break;
        (*removed)++;
        t->messages--;
        t->bytes -= m.len;
        t->first_sequence = m.sequence + 1;
        slot->dirty = 1;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND || rc == 0)
        rc = 0;
    if (t->messages == 0) {
        t->first_sequence = 0;
        t->first_ns = 0;
    } else if (slot->dirty) {
        store_message m;
        message_key(k, t->id, t->first_sequence);
        MDB_val fk = {12, k}, fv;
        if (mdb_get(txn, s->messages, &fk, &fv) == 0 && message_decode(&fk, &fv, &m) == SPBE_OK)
            t->first_ns = m.accepted_ns;
    }
    return rc;
}

static size_t
consumer_key(uint8_t *key, const char *consumer, uint32_t topic_id, int with_topic,
             uint64_t sequence, int with_sequence)
{
    size_t n = strnlen(consumer, STORE_CONSUMER_NAME_MAX);
    memcpy(key, consumer, n);
    key[n++] = 0;
    if (with_topic) {
        put_be32(key + n, topic_id);
        n += 4;
    }
    if (with_sequence) {
        put_be64(key + n, sequence);
        n += 8;
    }
    return n;
}

/* Deletes every key of db that begins with prefix. */
static int
delete_prefix(MDB_txn *txn, MDB_dbi db, const uint8_t *prefix, size_t len)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, db, &cur);
    if (rc)
        return rc;
    for (;;) {
        MDB_val key = {len, (void *)prefix}, val;
        if ((rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE)) != 0)
            break;
        if (key.mv_size < len || memcmp(key.mv_data, prefix, len) != 0)
            break;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int
apply_op(store *s, MDB_txn *txn, append_state *st, const store_op *op)
{
    uint8_t key[STORE_CONSUMER_NAME_MAX + 1 + 12];
    int rc;
    switch (op->kind) {
    case STORE_OP_NONE:
        return 0;
    case STORE_OP_DELIVERY_PUT: {
        /* key: topic id, up_to, member; value: leaf index, the signed receipt */
        uint8_t ik[4], dk[12 + STORE_CONSUMER_NAME_MAX];
        put_be32(ik, op->topic_id);
        MDB_val idk = {4, ik}, name;
        if ((rc = mdb_get(txn, s->topic_ids, &idk, &name)) != 0)
            return rc;
        char topic[WIRE_TOPIC_MAX_BYTES + 1];
        if (name.mv_size > WIRE_TOPIC_MAX_BYTES)
            return MDB_CORRUPTED;
        memcpy(topic, name.mv_data, name.mv_size);
        topic[name.mv_size] = '\0';
        uint64_t leaf;
        if ((rc = tree_size(s, txn, st, &leaf)) != 0)
            return rc;
        uint8_t hash[WIRE_HASH_BYTES];
        crypto_hash_sha256(hash, op->record, op->record_len);
        Spbe__V1__AuditLeaf al = SPBE__V1__AUDIT_LEAF__INIT;
        al.kind = SPBE__V1__LEAF_KIND__LEAF_DELIVERY;
        al.topic = topic;
        al.sequence = op->sequence;
        al.accepted_ns = wire_now_ns();
        al.name = (char *)op->consumer;
        al.record_hash.data = hash;
        al.record_hash.len = sizeof hash;
        if ((rc = leaf_append(s, txn, st, &al)) != 0)
            return rc;
        size_t n = strnlen(op->consumer, STORE_CONSUMER_NAME_MAX);
        put_be32(dk, op->topic_id);
        put_be64(dk + 4, op->sequence);
        memcpy(dk + 12, op->consumer, n);
        MDB_val dkey = {12 + n, dk}, dval = {8 + op->record_len, NULL};
        if ((rc = mdb_put(txn, s->audit_deliveries, &dkey, &dval, MDB_RESERVE)) != 0)
            return rc;
        put_le64(dval.mv_data, leaf);
        memcpy((uint8_t *)dval.mv_data + 8, op->record, op->record_len);
        return 0;
    }
    case STORE_OP_HEAD_PUT: {
        uint8_t hk[8];
        put_be64(hk, op->sequence);
        MDB_val head_key = {8, hk}, head_val = {op->record_len, op->record};
        return mdb_put(txn, s->audit_heads, &head_key, &head_val, 0);
    }
    case STORE_OP_CONSUMER_PUT: {
        MDB_val k = {strnlen(op->consumer, STORE_CONSUMER_NAME_MAX), (void *)op->consumer};
        MDB_val v = {op->record_len, op->record};
        return mdb_put(txn, s->consumers, &k, &v, 0);
    }
    case STORE_OP_CONSUMER_DEL: {
        MDB_val k = {strnlen(op->consumer, STORE_CONSUMER_NAME_MAX), (void *)op->consumer};
        rc = mdb_del(txn, s->consumers, &k, NULL);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
        size_t n = consumer_key(key, op->consumer, 0, 0, 0, 0);
        rc = delete_prefix(txn, s->consumer_topics, key, n);
        return rc ? rc : delete_prefix(txn, s->consumer_pending, key, n);
    }
    case STORE_OP_CURSOR_PUT: {
        uint8_t v8[8];
        put_le64(v8, op->sequence);
        MDB_val k = {consumer_key(key, op->consumer, op->topic_id, 1, 0, 0), key};
        MDB_val v = {8, v8};
        return mdb_put(txn, s->consumer_topics, &k, &v, 0);
    }
    case STORE_OP_PENDING_PUT: {
        uint8_t v16[16];
        put_le32(v16, op->deliveries);
        put_le32(v16 + 4, op->flags);
        put_le64(v16 + 8, (uint64_t)op->due_ns);
        MDB_val k = {consumer_key(key, op->consumer, op->topic_id, 1, op->sequence, 1), key};
        MDB_val v = {16, v16};
        return mdb_put(txn, s->consumer_pending, &k, &v, 0);
    }
    case STORE_OP_PENDING_DEL: {
        MDB_val k = {consumer_key(key, op->consumer, op->topic_id, 1, op->sequence, 1), key};
        rc = mdb_del(txn, s->consumer_pending, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    case STORE_OP_TRIM: {
        uint8_t id[4];
        put_be32(id, op->topic_id);
        MDB_val ik = {4, id}, iv;
        rc = mdb_get(txn, s->topic_ids, &ik, &iv);
        if (rc == MDB_NOTFOUND)
            return 0;
        char name[256];
        if (rc || iv.mv_size >= sizeof name)
            return rc ? rc : MDB_CORRUPTED;
        memcpy(name, iv.mv_data, iv.mv_size);
        name[iv.mv_size] = '\0';
        topic_slot *slot;
        if ((rc = topic_slot_find(s, txn, st, name, &slot)) != 0)
            return rc;
        size_t removed = 0;
        return trim_topic(s, txn, slot, op->sequence, SIZE_MAX, &removed);
    }
    }
    return EINVAL;
}

/* Recomputes whether the pages in use reach the storage limit (after a commit). */
static void
usage_update(store *s)
{
    if (!s->limit_bytes)
        return;
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    if (((uint64_t)info.me_last_pgno + 1) * st.ms_psize < s->limit_bytes) {
        atomic_store(&s->over_limit, 0); /* below the limit even without free pages */
        return;
    }
    uint64_t used;
    store_usage(s, &used, NULL);
    atomic_store(&s->over_limit, used >= s->limit_bytes);
}

/* 1 when a failed commit means the file system is full: ENOSPC, or the EIO LMDB makes of
 * a short write when the space left is less than a commit may need. */
static int
out_of_disk(store *s, int rc)
{
    if (rc == ENOSPC || rc == EDQUOT)
        return 1;
    int fd;
    struct statvfs vfs;
    return rc == EIO && mdb_env_get_fd(s->env, &fd) == 0 && fstatvfs(fd, &vfs) == 0 &&
           (uint64_t)vfs.f_bavail * vfs.f_frsize < (4u << 20);
}

int
store_apply(store *s, store_append_item *items, size_t count, const store_op *ops, size_t n_ops,
            int64_t window_ns, int *ops_rc)
{
    if (ops_rc)
        *ops_rc = SPBE_INTERNAL;
    if (s->read_only)
        return SPBE_INTERNAL;
    int refuse = atomic_load(&s->over_limit);
    for (int attempt = 0;; attempt++) {
        append_state st = {0};
        MDB_txn *txn;
        int rc = txn_begin(s, 0, &txn);
        if (rc) {
            for (size_t i = 0; i < count; i++)
                items[i].code = map_error(rc);
            if (ops_rc)
                *ops_rc = map_error(rc);
            return map_error(rc);
        }
        int64_t now = wire_now_ns();
        for (size_t i = 0; i < count && rc == 0; i++) {
            if (refuse)
                items[i].code = SPBE_STORAGE_FULL;
            else
                rc = append_one(s, txn, &st, &items[i], now, window_ns);
        }
        for (size_t i = 0; i < n_ops && rc == 0; i++)
            rc = apply_op(s, txn, &st, &ops[i]);
        if (rc == 0)
            rc = append_flush(s, txn, &st);
        free(st.slots);
        uint64_t size = 0;
        uint8_t root[MERKLE_HASH_BYTES];
        if (rc == 0 && st.tree_dirty)
            rc = tree_head_of(s, txn, &st, &size, root);
        if (rc == 0) {
            rc = txn_commit(s, txn);
            if (rc == 0 && st.tree_dirty)
                tree_publish(s, size, root);
        } else {
            txn_abort(s, txn);
        }
        if (rc == MDB_MAP_FULL && store_grow(s) == SPBE_OK)
            continue;
        if (rc == MDB_MAP_FULL && !refuse && count > 0) {
            refuse = 1; /* the items do not fit: the ops alone may */
            continue;
        }
        int no_room = rc && out_of_disk(s, rc);
        if (no_room) {
            atomic_store(&s->disk_full, 1);
            if (!refuse && count > 0) {
                refuse = 1; /* as with the map: the ops alone may fit */
                continue;
            }
        }
        if (rc) {
            int code = no_room ? SPBE_STORAGE_FULL : map_error(rc);
            for (size_t i = 0; i < count; i++)
                items[i].code = code;
            if (ops_rc)
                *ops_rc = code;
            return code;
        }
        if (ops_rc)
            *ops_rc = SPBE_OK;
        if (count && !refuse)
            atomic_store(&s->disk_full, 0); /* appends fit again */
        usage_update(s);
        return refuse && count ? SPBE_STORAGE_FULL : SPBE_OK;
    }
}

int
store_append(store *s, store_append_item *items, size_t count, int64_t window_ns)
{
    return store_apply(s, items, count, NULL, 0, window_ns, NULL);
}

int
store_full(store *s)
{
    return atomic_load(&s->over_limit) || atomic_load(&s->disk_full);
}

void
store_usage(store *s, uint64_t *used, uint64_t *limit)
{
    if (limit)
        *limit = s->limit_bytes;
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    uint64_t pages = (uint64_t)info.me_last_pgno + 1, free_pages = 0;
    MDB_txn *txn;
    if (txn_begin(s, MDB_RDONLY, &txn) == 0) {
        MDB_cursor *cur;
        if (mdb_cursor_open(txn, 0 /* the free list */, &cur) == 0) {
            MDB_val key, val;
            for (int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
                 rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT))
                if (val.mv_size >= sizeof(size_t))
                    free_pages += *(const size_t *)val.mv_data; /* count, then page numbers */
            mdb_cursor_close(cur);
        }
        txn_abort(s, txn);
    }
    *used = (pages > free_pages ? pages - free_pages : 0) * st.ms_psize;
}

static const store_retention *
retention_rule(const store_retention *rules, size_t n, const char *topic)
{
    for (size_t i = 0; i < n; i++)
        if (wire_pattern_match(rules[i].pattern, topic))
            return &rules[i];
    return NULL;
}

typedef struct retain_scan {
    const store_retention *rules;
    size_t n_rules;
    char (*names)[256];
    size_t n, cap;
} retain_scan;

static int
retain_collect(const store_topic_info *t, void *arg)
{
    retain_scan *rs = arg;
    if (t->messages == 0 || !retention_rule(rs->rules, rs->n_rules, t->name))
        return 0;
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? 2 * rs->cap : 16;
        char(*n)[256] = realloc(rs->names, cap * sizeof *n);
        if (!n)
            return 1;
        rs->names = n;
        rs->cap = cap;
    }
    memcpy(rs->names[rs->n++], t->name, 256);
    return 0;
}

int
store_retain(store *s, const store_retention *rules, size_t n_rules, int64_t now_ns, size_t limit,
             size_t *removed)
{
    *removed = 0;
    if (!n_rules || s->read_only)
        return SPBE_OK;
    retain_scan rs = {.rules = rules, .n_rules = n_rules};
    store_reader *r;
    int code = store_reader_begin(s, &r);
    if (code != SPBE_OK)
        return code;
    store_topic_each(r, retain_collect, &rs);
    store_reader_end(&r);
    for (int attempt = 0; rs.n; attempt++) {
        MDB_txn *txn;
        int rc = txn_begin(s, 0, &txn);
        if (rc)
            break;
        append_state st = {0};
        *removed = 0;
        for (size_t i = 0; i < rs.n && rc == 0 && *removed < limit; i++) {
            topic_slot *slot;
            if ((rc = topic_slot_find(s, txn, &st, rs.names[i], &slot)) != 0)
                break;
            const store_retention *rule = retention_rule(rules, n_rules, rs.names[i]);
            store_topic_info *t = &slot->info;
            uint64_t upto = 0; /* delete up to and including this sequence */
            if (rule->max_messages && t->messages > rule->max_messages)
                upto = t->first_sequence + (t->messages - rule->max_messages) - 1;
            if (rule->max_age_ns || (rule->max_bytes && t->bytes > rule->max_bytes)) {
                /* walk from the oldest while too old or too many bytes */
                MDB_cursor *cur;
                if ((rc = mdb_cursor_open(txn, s->messages, &cur)) != 0)
                    break;
                uint8_t k[12];
                message_key(k, t->id, t->first_sequence);
                MDB_val key = {12, k}, val;
                uint64_t bytes = t->bytes;
                size_t walked = 0;
                for (int c = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
                     c == 0 && walked < limit; c = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
                    store_message m;
                    if (key.mv_size != 12 || get_be32(key.mv_data) != t->id ||
                        message_decode(&key, &val, &m) != SPBE_OK)
                        break;
                    int old = rule->max_age_ns && now_ns - m.accepted_ns > rule->max_age_ns;
                    int big = rule->max_bytes && bytes > rule->max_bytes;
                    if (!old && !big)
                        break;
                    if (m.sequence > upto)
                        upto = m.sequence;
                    bytes -= m.len;
                    walked++;
                }
                mdb_cursor_close(cur);
            }
            if (upto >= t->first_sequence)
                rc = trim_topic(s, txn, slot, upto, limit, removed);
        }
        if (rc == 0)
            rc = append_flush(s, txn, &st);
        free(st.slots);
        if (rc == 0 && *removed == 0) {
            txn_abort(s, txn);
            break;
        }
        if (rc == 0)
            rc = txn_commit(s, txn);
        else
            txn_abort(s, txn);
        if (rc == MDB_MAP_FULL && attempt == 0 && store_grow(s) == SPBE_OK)
            continue;
        if (rc) {
            *removed = 0;
            code = map_error(rc);
        }
        break;
    }
    free(rs.names);
    usage_update(s);
    return code;
}

int
store_dedup_expire(store *s, int64_t cutoff_ns, size_t limit, size_t *removed)
{
    *removed = 0;
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc)
        return map_error(rc);
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, s->dedup_time, &cur);
    MDB_val key, val;
    while (rc == 0 && *removed < limit && (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST)) == 0) {
        if (key.mv_size != 8 + WIRE_HASH_BYTES || (int64_t)get_be64(key.mv_data) >= cutoff_ns)
            break;
        MDB_val dk = {WIRE_HASH_BYTES, (uint8_t *)key.mv_data + 8}, dv;
        /* remove the dedup entry only if it still belongs to this time */
        if (mdb_get(txn, s->dedup, &dk, &dv) == 0 && dv.mv_size == DEDUP_VALUE_BYTES &&
            get_le64((uint8_t *)dv.mv_data + 12) == get_be64(key.mv_data))
            mdb_del(txn, s->dedup, &dk, NULL);
        rc = mdb_cursor_del(cur, 0);
        if (rc == 0)
            (*removed)++;
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    if (rc) {
        txn_abort(s, txn);
        return map_error(rc);
    }
    rc = txn_commit(s, txn);
    if (rc == MDB_MAP_FULL)
        store_grow(s);
    return map_error(rc);
}

/* ------------------------------------------------------------ registry */

int
store_member_put(store *s, const Spbe__V1__Member *member)
{
    size_t len = spbe__v1__member__get_packed_size(member);
    uint8_t *buf = malloc(len ? len : 1);
    uint8_t curve[32];
    if (!buf)
        return SPBE_INTERNAL;
    if (member->public_key.len != WIRE_KEY_BYTES ||
        wire_curve_public(member->public_key.data, curve) != 0) {
        free(buf);
        return SPBE_BAD_REQUEST;
    }
    spbe__v1__member__pack(member, buf);
    for (;;) {
        MDB_txn *txn;
        int rc = txn_begin(s, 0, &txn);
        if (rc) {
            free(buf);
            return map_error(rc);
        }
        MDB_val key = {strlen(member->name), member->name}, val = {len, buf}, prev;
        /* a new key: the old one no longer names the member */
        if (mdb_get(txn, s->members, &key, &prev) == 0) {
            Spbe__V1__Member *old = spbe__v1__member__unpack(NULL, prev.mv_size, prev.mv_data);
            uint8_t old_curve[32];
            if (old && old->public_key.len == WIRE_KEY_BYTES &&
                memcmp(old->public_key.data, member->public_key.data, WIRE_KEY_BYTES) != 0 &&
                wire_curve_public(old->public_key.data, old_curve) == 0) {
                MDB_val ok = {32, old_curve};
                mdb_del(txn, s->member_keys, &ok, NULL);
            }
            if (old)
                spbe__v1__member__free_unpacked(old, NULL);
        }
        rc = mdb_put(txn, s->members, &key, &val, 0);
        if (rc == 0) {
            MDB_val ck = {32, curve};
            rc = mdb_put(txn, s->member_keys, &ck, &key, 0);
        }
        /* a registry change is a leaf of the audit log too */
        append_state st = {0};
        uint8_t hash[WIRE_HASH_BYTES], root[MERKLE_HASH_BYTES];
        uint64_t size = 0;
        crypto_hash_sha256(hash, buf, len);
        Spbe__V1__AuditLeaf al = SPBE__V1__AUDIT_LEAF__INIT;
        al.kind = SPBE__V1__LEAF_KIND__LEAF_MEMBER;
        al.name = member->name;
        al.accepted_ns = wire_now_ns();
        al.record_hash.data = hash;
        al.record_hash.len = sizeof hash;
        if (rc == 0)
            rc = leaf_append(s, txn, &st, &al);
        if (rc == 0)
            rc = append_flush(s, txn, &st);
        if (rc == 0)
            rc = tree_head_of(s, txn, &st, &size, root);
        if (rc == 0) {
            rc = txn_commit(s, txn);
            if (rc == 0)
                tree_publish(s, size, root);
        } else {
            txn_abort(s, txn);
        }
        if (rc == MDB_MAP_FULL && store_grow(s) == SPBE_OK)
            continue;
        free(buf);
        return map_error(rc);
    }
}

/* ------------------------------------------------------------ reading */

int
store_reader_begin(store *s, store_reader **out)
{
    *out = NULL;
    store_reader *r = malloc(sizeof *r);
    if (!r)
        return SPBE_INTERNAL;
    r->s = s;
    int rc = txn_begin(s, MDB_RDONLY, &r->txn);
    if (rc) {
        free(r);
        return map_error(rc);
    }
    *out = r;
    return SPBE_OK;
}

void
store_reader_end(store_reader **rp)
{
    if (!rp || !*rp)
        return;
    txn_abort((*rp)->s, (*rp)->txn);
    free(*rp);
    *rp = NULL;
}

int
store_topic_get(store_reader *r, const char *name, store_topic_info *info)
{
    size_t n = strlen(name);
    if (n == 0 || n > WIRE_TOPIC_MAX_BYTES)
        return SPBE_NOT_FOUND;
    MDB_val key = {n, (void *)name}, val;
    int rc = mdb_get(r->txn, r->s->topics, &key, &val);
    if (rc)
        return map_error(rc);
    return topic_decode(&key, &val, info);
}

int
store_topic_get_by_id(store_reader *r, uint32_t id, store_topic_info *info)
{
    uint8_t k[4];
    put_be32(k, id);
    MDB_val key = {4, k}, val;
    int rc = mdb_get(r->txn, r->s->topic_ids, &key, &val);
    if (rc)
        return map_error(rc);
    char name[256];
    if (val.mv_size >= sizeof name)
        return SPBE_INTERNAL;
    memcpy(name, val.mv_data, val.mv_size);
    name[val.mv_size] = '\0';
    return store_topic_get(r, name, info);
}

int
store_topic_each(store_reader *r, int (*fn)(const store_topic_info *, void *), void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->topics, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        store_topic_info info;
        if ((code = topic_decode(&key, &val, &info)) != SPBE_OK || fn(&info, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_message_get(store_reader *r, uint32_t topic_id, uint64_t sequence, store_message *out)
{
    uint8_t k[12];
    message_key(k, topic_id, sequence);
    MDB_val key = {12, k}, val;
    int rc = mdb_get(r->txn, r->s->messages, &key, &val);
    if (rc)
        return map_error(rc);
    return message_decode(&key, &val, out);
}

int
store_read_from(store_reader *r, uint32_t topic_id, uint64_t from, size_t limit,
                int (*fn)(const store_message *, void *), void *arg, uint64_t *next)
{
    *next = from;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->messages, &cur);
    if (rc)
        return map_error(rc);
    uint8_t k[12];
    message_key(k, topic_id, from);
    MDB_val key = {12, k}, val;
    size_t n = 0;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0 && (!limit || n < limit);
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        store_message m;
        if (key.mv_size != 12 || get_be32(key.mv_data) != topic_id)
            break;
        if ((code = message_decode(&key, &val, &m)) != SPBE_OK)
            break;
        n++;
        *next = m.sequence + 1;
        if (fn(&m, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_member_get(store_reader *r, const char *name, Spbe__V1__Member **out)
{
    *out = NULL;
    MDB_val key = {strlen(name), (void *)name}, val;
    if (key.mv_size == 0)
        return SPBE_NOT_FOUND;
    int rc = mdb_get(r->txn, r->s->members, &key, &val);
    if (rc)
        return map_error(rc);
    *out = spbe__v1__member__unpack(NULL, val.mv_size, val.mv_data);
    return *out ? SPBE_OK : SPBE_INTERNAL;
}

int
store_member_by_curve_key(store_reader *r, const uint8_t curve_key[32], char *name, size_t name_len)
{
    MDB_val key = {32, (void *)curve_key}, val;
    int rc = mdb_get(r->txn, r->s->member_keys, &key, &val);
    if (rc)
        return map_error(rc);
    if (val.mv_size >= name_len)
        return SPBE_INTERNAL;
    memcpy(name, val.mv_data, val.mv_size);
    name[val.mv_size] = '\0';
    return SPBE_OK;
}

int
store_member_each(store_reader *r, int (*fn)(const Spbe__V1__Member *, void *), void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->members, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        Spbe__V1__Member *m = spbe__v1__member__unpack(NULL, val.mv_size, val.mv_data);
        if (!m) {
            code = SPBE_INTERNAL;
            break;
        }
        int stop = fn(m, arg);
        spbe__v1__member__free_unpacked(m, NULL);
        if (stop)
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_sequence_at(store_reader *r, uint32_t topic_id, int64_t t_ns, uint64_t *sequence)
{
    store_topic_info t;
    int rc = store_topic_get_by_id(r, topic_id, &t);
    if (rc != SPBE_OK)
        return rc;
    /* acceptance times do not decrease within a topic: binary search */
    uint64_t lo = t.first_sequence ? t.first_sequence : t.last_sequence + 1;
    uint64_t hi = t.last_sequence + 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        store_message m;
        if (store_message_get(r, topic_id, mid, &m) != SPBE_OK || m.accepted_ns >= t_ns)
            hi = mid;
        else
            lo = mid + 1;
    }
    *sequence = lo;
    return SPBE_OK;
}

int
store_consumer_each(store_reader *r, int (*fn)(const Spbe__V1__ConsumerInfo *, void *), void *arg)
{
    if (!r->s->consumers)
        return SPBE_OK;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->consumers, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        Spbe__V1__ConsumerInfo *c = spbe__v1__consumer_info__unpack(NULL, val.mv_size, val.mv_data);
        if (!c || !c->config) {
            if (c)
                spbe__v1__consumer_info__free_unpacked(c, NULL);
            code = SPBE_INTERNAL;
            break;
        }
        int stop = fn(c, arg);
        spbe__v1__consumer_info__free_unpacked(c, NULL);
        if (stop)
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

/* Calls fn(key suffix, value) for the keys of db under consumer's prefix. */
static int
consumer_scan(store_reader *r, MDB_dbi db, const char *consumer, size_t suffix, size_t value,
              int (*fn)(const uint8_t *, const uint8_t *, void *), void *arg)
{
    if (!db)
        return SPBE_OK;
    uint8_t prefix[STORE_CONSUMER_NAME_MAX + 1];
    size_t n = consumer_key(prefix, consumer, 0, 0, 0, 0);
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, db, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key = {n, prefix}, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size < n || memcmp(key.mv_data, prefix, n) != 0)
            break;
        if (key.mv_size != n + suffix || val.mv_size != value) {
            code = SPBE_INTERNAL;
            break;
        }
        if (fn((const uint8_t *)key.mv_data + n, val.mv_data, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

typedef struct cursor_cb {
    int (*fn)(uint32_t, uint64_t, void *);
    int (*pfn)(const store_pending *, void *);
    void *arg;
} cursor_cb;

static int
cursor_one(const uint8_t *k, const uint8_t *v, void *arg)
{
    cursor_cb *cb = arg;
    return cb->fn(get_be32(k), get_le64(v), cb->arg);
}

static int
pending_one(const uint8_t *k, const uint8_t *v, void *arg)
{
    cursor_cb *cb = arg;
    store_pending p = {get_be32(k), get_be64(k + 4), get_le32(v), get_le32(v + 4),
                       (int64_t)get_le64(v + 8)};
    return cb->pfn(&p, cb->arg);
}

int
store_cursor_each(store_reader *r, const char *consumer, int (*fn)(uint32_t, uint64_t, void *),
                  void *arg)
{
    cursor_cb cb = {.fn = fn, .arg = arg};
    return consumer_scan(r, r->s->consumer_topics, consumer, 4, 8, cursor_one, &cb);
}

int
store_pending_each(store_reader *r, const char *consumer, int (*fn)(const store_pending *, void *),
                   void *arg)
{
    cursor_cb cb = {.pfn = fn, .arg = arg};
    return consumer_scan(r, r->s->consumer_pending, consumer, 12, 16, pending_one, &cb);
}

/* ------------------------------------------------------------ checking */

typedef struct check_state {
    store_reader *r;
    char *err;
    size_t err_len;
    int code;
    uint64_t topics;
} check_state;

static int
check_topic(const store_topic_info *t, void *arg)
{
    check_state *cs = arg;
    cs->topics++;
    store_topic_info by_id;
    if (store_topic_get_by_id(cs->r, t->id, &by_id) != SPBE_OK || strcmp(by_id.name, t->name)) {
        snprintf(cs->err, cs->err_len, "topic %s: id %u does not map back", t->name, t->id);
        cs->code = SPBE_INTERNAL;
        return 1;
    }
    MDB_cursor *cur;
    if (mdb_cursor_open(cs->r->txn, cs->r->s->messages, &cur)) {
        cs->code = SPBE_INTERNAL;
        return 1;
    }
    uint8_t k[12];
    message_key(k, t->id, 0);
    MDB_val key = {12, k}, val;
    uint64_t expect = t->first_sequence, count = 0, bytes = 0;
    int rc;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        store_message m;
        if (key.mv_size != 12 || get_be32(key.mv_data) != t->id)
            break;
        if (message_decode(&key, &val, &m) != SPBE_OK) {
            snprintf(cs->err, cs->err_len, "topic %s: malformed record at sequence %llu", t->name,
                     (unsigned long long)get_be64((uint8_t *)key.mv_data + 4));
            cs->code = SPBE_INTERNAL;
            break;
        }
        if (m.sequence != expect) {
            snprintf(cs->err, cs->err_len, "topic %s: sequence %llu where %llu was expected",
                     t->name, (unsigned long long)m.sequence, (unsigned long long)expect);
            cs->code = SPBE_INTERNAL;
            break;
        }
        expect++;
        count++;
        bytes += m.len;
    }
    mdb_cursor_close(cur);
    if (cs->code == SPBE_OK &&
        (count != t->messages || bytes != t->bytes || (count && expect - 1 != t->last_sequence))) {
        snprintf(cs->err, cs->err_len,
                 "topic %s: record says %llu messages/%llu bytes/last %llu, log has "
                 "%llu/%llu/%llu",
                 t->name, (unsigned long long)t->messages, (unsigned long long)t->bytes,
                 (unsigned long long)t->last_sequence, (unsigned long long)count,
                 (unsigned long long)bytes, (unsigned long long)(expect - 1));
        cs->code = SPBE_INTERNAL;
    }
    return cs->code != SPBE_OK;
}

/* Names the first topic record that does not decode: store_topic_each stops there
 * without a word, and the caller is owed the problem. */
static void
name_malformed_topic(store_reader *r, char *err, size_t err_len)
{
    snprintf(err, err_len, "malformed topic record");
    MDB_cursor *cur;
    if (mdb_cursor_open(r->txn, r->s->topics, &cur))
        return;
    MDB_val key, val;
    for (int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        store_topic_info t;
        if (topic_decode(&key, &val, &t) != SPBE_OK) {
            int n = key.mv_size < 64 ? (int)key.mv_size : 64;
            snprintf(err, err_len, "malformed topic record '%.*s%s' (%zu bytes)", n,
                     (const char *)key.mv_data, key.mv_size > 64 ? "..." : "", val.mv_size);
            break;
        }
    }
    mdb_cursor_close(cur);
}

int
store_check(store *s, char *err, size_t err_len)
{
    check_state cs = {.err = err, .err_len = err_len, .code = SPBE_OK};
    int code = store_reader_begin(s, &cs.r);
    if (code != SPBE_OK) {
        snprintf(err, err_len, "cannot read");
        return code;
    }
    code = store_topic_each(cs.r, check_topic, &cs);
    if (code != SPBE_OK)
        name_malformed_topic(cs.r, err, err_len);
    else
        code = cs.code;
    if (code == SPBE_OK) {
        /* every message belongs to a known topic */
        MDB_stat st;
        uint64_t total = 0;
        mdb_stat(cs.r->txn, s->messages, &st);
        MDB_cursor *cur;
        mdb_cursor_open(cs.r->txn, s->topics, &cur);
        MDB_val key, val;
        for (int rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
            store_topic_info t;
            if (topic_decode(&key, &val, &t) == SPBE_OK)
                total += t.messages;
        }
        mdb_cursor_close(cur);
        if (total != st.ms_entries) {
            snprintf(err, err_len, "%llu messages stored, topic records account for %llu",
                     (unsigned long long)st.ms_entries, (unsigned long long)total);
            code = SPBE_INTERNAL;
        }
    }
    store_reader_end(&cs.r);
    return code;
}

/* ------------------------------------------------------------ audit log (reading) */

int
store_audit_size(store_reader *r, uint64_t *size)
{
    return map_error(meta_tree_size(r->s, r->txn, size));
}

int
store_leaf_get(store_reader *r, uint64_t index, const uint8_t **data, size_t *len)
{
    uint8_t k[8];
    put_be64(k, index);
    MDB_val key = {8, k}, val;
    int rc = mdb_get(r->txn, r->s->audit_leaves, &key, &val);
    if (rc)
        return map_error(rc);
    *data = val.mv_data;
    *len = val.mv_size;
    return SPBE_OK;
}

int
store_subtree(void *reader, unsigned level, uint64_t index, uint8_t out[32])
{
    store_reader *r = reader;
    tree_txn tt = {r->s, r->txn, 0};
    return tree_get(&tt, level, index, out);
}

/* Calls fn(key as a big-endian u64, value) over a database of 8-byte keys, in key order. */
static int
each_u64_key(store_reader *r, MDB_dbi dbi, int (*fn)(uint64_t, const uint8_t *, size_t, void *),
             void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, dbi, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size != 8) {
            code = SPBE_INTERNAL;
            break;
        }
        if (fn(get_be64(key.mv_data), val.mv_data, val.mv_size, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_leaf_each(store_reader *r, int (*fn)(uint64_t, const uint8_t *, size_t, void *), void *arg)
{
    return each_u64_key(r, r->s->audit_leaves, fn, arg);
}

int
store_node_each(store_reader *r, int (*fn)(unsigned, uint64_t, const uint8_t *, size_t, void *),
                void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->audit_nodes, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        if (key.mv_size != 9 || !node_key_valid(r->s, key.mv_data)) {
            code = SPBE_INTERNAL;
            break;
        }
        unsigned level;
        uint64_t index;
        node_of_key(r->s, key.mv_data, &level, &index);
        if (fn(level, index, val.mv_data, val.mv_size, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_head_each(store_reader *r, int (*fn)(uint64_t, const uint8_t *, size_t, void *), void *arg)
{
    return each_u64_key(r, r->s->audit_heads, fn, arg);
}

int
store_head_latest(store_reader *r, uint64_t *size, const uint8_t **data, size_t *len)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->audit_heads, &cur);
    if (rc)
        return map_error(rc);
    MDB_val key, val;
    rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
    if (rc == 0 && key.mv_size == 8) {
        *size = get_be64(key.mv_data);
        *data = val.mv_data;
        *len = val.mv_size;
    }
    mdb_cursor_close(cur);
    return rc == 0 && key.mv_size != 8 ? SPBE_INTERNAL : map_error(rc);
}

int
store_delivery_each(store_reader *r, uint32_t topic_id, uint64_t from,
                    int (*fn)(const store_delivery *, void *), void *arg)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(r->txn, r->s->audit_deliveries, &cur);
    if (rc)
        return map_error(rc);
    uint8_t k[12];
    put_be32(k, topic_id);
    put_be64(k + 4, from);
    MDB_val key = {12, k}, val;
    int code = SPBE_OK;
    for (rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT)) {
        const uint8_t *kp = key.mv_data;
        if (key.mv_size < 12 || get_be32(kp) != topic_id)
            break;
        if (key.mv_size - 12 > STORE_CONSUMER_NAME_MAX || val.mv_size < 8) {
            code = SPBE_INTERNAL;
            break;
        }
        store_delivery d;
        memcpy(d.member, kp + 12, key.mv_size - 12);
        d.member[key.mv_size - 12] = '\0';
        d.topic_id = topic_id;
        d.up_to = get_be64(kp + 4);
        d.leaf_index = get_le64(val.mv_data);
        d.data = (const uint8_t *)val.mv_data + 8;
        d.len = val.mv_size - 8;
        if (fn(&d, arg))
            break;
    }
    mdb_cursor_close(cur);
    return code;
}

int
store_backup(store *s, const char *dir, char *err, size_t err_len)
{
    if (mkdir(dir, 0700) != 0) {
        snprintf(err, err_len, "cannot create %s: %s", dir, strerror(errno));
        return errno == EEXIST ? SPBE_BAD_REQUEST : SPBE_INTERNAL;
    }
    /* one read transaction: a consistent snapshot, free pages left out */
    pthread_rwlock_rdlock(&s->resize_lock);
    int rc = mdb_env_copy2(s->env, dir, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->resize_lock);
    if (rc) {
        snprintf(err, err_len, "cannot copy to %s: %s", dir, mdb_strerror(rc));
        return map_error(rc);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    chmod(path, 0600); /* the messages are no one else's, as in the data directory */
    return SPBE_OK;
}
