/*
 * store.h - durable storage of topic logs, dedup entries and the member registry
 * in one LMDB environment. The only module that touches LMDB; the broker opens it
 * read-write, offline tools read-only (also while a broker runs).
 *
 * Threads: one thread at a time writes (the broker's writer thread); any number
 * read, each through its own store_reader. Values returned through a reader point
 * into the memory map and are valid only until store_reader_end().
 *
 * Layout (named databases):
 *   meta        "format" -> u32 (1), "next_topic" -> u32
 *   topics      topic name -> topic record (fixed 52 bytes, little-endian)
 *   topic_ids   u32 id (big-endian) -> topic name
 *   messages    u32 topic id BE || u64 sequence BE -> record header (16 bytes) || SignedMessage
 *   dedup       SHA-256(sender "\0" id) -> u32 topic id, u64 sequence, i64 accepted_ns
 *   dedup_time  i64 accepted_ns BE || dedup key -> empty (for expiry)
 *   members     name -> encoded spbe.v1.Member
 *   member_keys X25519 public key (32 bytes) -> name
 *   consumers   name -> encoded spbe.v1.ConsumerInfo (config, owner, counters)
 *   consumer_topics  name "\0" u32 topic id BE -> u64 next sequence LE
 *   consumer_pending name "\0" u32 topic id BE || u64 sequence BE
 *                    -> u32 deliveries, u32 flags, i64 due_ns (LE)
 *
 * Storage limit: with max_map_bytes set, appends are refused (STORAGE_FULL) while the
 * pages in use reach it; the map itself may grow by a reserve above the limit so that
 * deleting (retention, purge) and consumer bookkeeping still work when it is reached.
 */
#ifndef SPBE_STORE_H
#define SPBE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "spbe/v1/spbe.pb-c.h"

typedef struct store store;
typedef struct store_reader store_reader;

typedef struct store_topic_info {
    uint32_t id;
    char name[256];
    uint64_t first_sequence; /* 0 while empty */
    uint64_t last_sequence;
    uint64_t messages;
    uint64_t bytes;
    int64_t first_ns;
    int64_t last_ns;
} store_topic_info;

/* A stored message as read; data points into the map (valid until reader end). */
typedef struct store_message {
    uint32_t topic_id;
    uint64_t sequence;
    int64_t accepted_ns;
    const uint8_t *data; /* the sender's SignedMessage bytes */
    size_t len;
    uint64_t leaf_index; /* its leaf in the audit log */
} store_message;

/* One publish of a group commit. Inputs are borrowed for the call. */
typedef struct store_append_item {
    const char *topic;
    const char *sender;
    const uint8_t *id; /* 16 bytes */
    const uint8_t *data;
    size_t len;
    const uint8_t *hash; /* SHA-256 of data if the caller has it, else NULL */
    int no_dedup;        /* a replay: appended again even if (sender, id) was seen */
    /* outputs */
    int code; /* SPBE_OK, SPBE_DUPLICATE or SPBE_STORAGE_FULL/INTERNAL */
    uint32_t topic_id;
    uint64_t sequence;   /* for SPBE_DUPLICATE, the original's */
    int64_t accepted_ns; /* for SPBE_DUPLICATE, the original's */
    uint64_t leaf_index; /* SPBE_OK: its leaf in the audit log */
} store_append_item;

typedef struct store_options {
    int read_only;
    uint64_t initial_map_bytes; /* 0: 64 MiB */
    uint64_t max_map_bytes;     /* 0: no limit but the address space */
} store_options;

/*
 * Opens (creating if needed, unless read_only) the environment in directory dir.
 * On failure returns an error code and writes a readable reason into err.
 * Read-write opens check the environment (format version).
 */
int store_open(const char *dir, const store_options *options, store **out, char *err,
               size_t err_len);
/* Closes the store; NULL-safe; nulls *s. No reader may be open. */
void store_close(store **s);

/*
 * Appends a group of messages in one transaction and one durable commit: dedup
 * within window_ns (by sender and id), per-topic sequence from 1 without gaps,
 * acceptance time non-decreasing per topic. Each item's outputs are set. Returns
 * SPBE_OK when the commit is durable (individual items may be DUPLICATE); on any
 * other return nothing of the group is stored and every item carries that code.
 */
int store_append(store *s, store_append_item *items, size_t count, int64_t window_ns);

#define STORE_CONSUMER_NAME_MAX 64

/* Consumer bookkeeping and log trimming, applied in the transaction of a group. */
typedef enum store_op_kind {
    STORE_OP_CONSUMER_PUT, /* record: encoded spbe.v1.ConsumerInfo */
    STORE_OP_CONSUMER_DEL, /* the consumer with its cursors and pending entries */
    STORE_OP_CURSOR_PUT,   /* topic_id, sequence = next sequence to deliver */
    STORE_OP_PENDING_PUT,  /* topic_id, sequence, deliveries, flags, due_ns */
    STORE_OP_PENDING_DEL,  /* topic_id, sequence */
    STORE_OP_TRIM,         /* deletes messages of topic_id up to sequence (inclusive) */
    STORE_OP_NONE,         /* nothing: an op cancelled before its commit */
    STORE_OP_HEAD_PUT,     /* sequence = tree size, record: encoded SignedTreeHead */
    STORE_OP_DELIVERY_PUT, /* consumer = member, topic_id, sequence = up_to, record: encoded
                            * SignedDeliveryReceipt; appends its leaf to the audit log */
} store_op_kind;

typedef struct store_op {
    store_op_kind kind;
    char consumer[STORE_CONSUMER_NAME_MAX + 1];
    uint32_t topic_id;
    uint64_t sequence;
    uint32_t deliveries;
    uint32_t flags;
    int64_t due_ns;
    uint8_t *record; /* CONSUMER_PUT; owned by whoever built the op */
    size_t record_len;
} store_op;

/*
 * store_append plus ops in the same transaction and durable commit (ops after the
 * items). Returns the items' code as store_append does; *ops_rc (may be NULL) gets
 * SPBE_OK when the ops are durable. Past the storage limit the items are refused
 * with STORAGE_FULL while the ops still apply.
 */
int store_apply(store *s, store_append_item *items, size_t count, const store_op *ops, size_t n_ops,
                int64_t window_ns, int *ops_rc);

/* A retention rule: topics matching pattern keep at most this much (0: no limit). */
typedef struct store_retention {
    char pattern[256];
    int64_t max_age_ns;
    uint64_t max_messages;
    uint64_t max_bytes;
} store_retention;

/* Deletes the oldest messages of topics beyond their rule (the first matching rule
 * applies), at most limit messages in one transaction. *removed gets the count. */
int store_retain(store *s, const store_retention *rules, size_t n_rules, int64_t now_ns,
                 size_t limit, size_t *removed);

/* 1 while appends are refused for the storage limit, or the disk had no room for the last. */
int store_full(store *s);
/* Bytes of the data file in use (pages not on the free list), and the limit (0: none). */
void store_usage(store *s, uint64_t *used, uint64_t *limit);

/* The audit log's last committed tree: its size (leaves) and root. */
void store_tree_head(store *s, uint64_t *size, uint8_t root[32]);

/* The audit log, read in a transaction: its size (leaves); leaf bytes by index (valid
 * until the reader ends); perfect subtrees as a merkle_subtree_fn (ctx: the reader);
 * leaves, tree nodes (level, index, hash) and signed heads (tree size, encoded
 * SignedTreeHead) in key order until fn returns non-zero; the latest head. SPBE_OK or
 * SPBE_NOT_FOUND. */
int store_audit_size(store_reader *r, uint64_t *size);
int store_leaf_get(store_reader *r, uint64_t index, const uint8_t **data, size_t *len);
int store_subtree(void *reader, unsigned level, uint64_t index, uint8_t out[32]);
int store_leaf_each(store_reader *r, int (*fn)(uint64_t, const uint8_t *, size_t, void *),
                    void *arg);
int store_node_each(store_reader *r, int (*fn)(unsigned, uint64_t, const uint8_t *, size_t, void *),
                    void *arg);
int store_head_each(store_reader *r, int (*fn)(uint64_t, const uint8_t *, size_t, void *),
                    void *arg);
int store_head_latest(store_reader *r, uint64_t *size, const uint8_t **data, size_t *len);

/* A signed delivery receipt as stored, in key order (topic, up_to, member). */
typedef struct store_delivery {
    char member[STORE_CONSUMER_NAME_MAX + 1];
    uint32_t topic_id;
    uint64_t up_to;
    uint64_t leaf_index;
    const uint8_t *data; /* encoded SignedDeliveryReceipt */
    size_t len;
} store_delivery;
/* Calls fn for the delivery receipts of a topic with up_to >= from until it returns
 * non-zero. */
int store_delivery_each(store_reader *r, uint32_t topic_id, uint64_t from,
                        int (*fn)(const store_delivery *, void *), void *arg);

/* Writes a consistent, compacted copy of the environment into dir (created, 0700; it
 * must not exist), while writers go on. SPBE_OK, SPBE_BAD_REQUEST (dir exists) or an error
 * with the reason in err. */
int store_backup(store *s, const char *dir, char *err, size_t err_len);

/* Puts (adds or replaces) a member with a durable commit; the change is a leaf of the
 * audit log. */
int store_member_put(store *s, const Spbe__V1__Member *member);

/* Deletes dedup entries older than cutoff_ns, at most limit of them. *removed gets the count. */
int store_dedup_expire(store *s, int64_t cutoff_ns, size_t limit, size_t *removed);

/* Begins a read transaction. */
int store_reader_begin(store *s, store_reader **out);
/* Ends it; NULL-safe; nulls *r. */
void store_reader_end(store_reader **r);

/* Topic by name: SPBE_OK or SPBE_NOT_FOUND. */
int store_topic_get(store_reader *r, const char *name, store_topic_info *info);
/* Topic by id: SPBE_OK or SPBE_NOT_FOUND. */
int store_topic_get_by_id(store_reader *r, uint32_t id, store_topic_info *info);
/* Calls fn for every topic in name order until it returns non-zero. */
int store_topic_each(store_reader *r, int (*fn)(const store_topic_info *, void *), void *arg);

/* One message: SPBE_OK or SPBE_NOT_FOUND. */
int store_message_get(store_reader *r, uint32_t topic_id, uint64_t sequence, store_message *out);
/*
 * Calls fn for messages of a topic from sequence on, in order, at most limit of them
 * (0: no limit), until fn returns non-zero. *next gets the sequence after the last
 * one passed to fn (or from if none).
 */
int store_read_from(store_reader *r, uint32_t topic_id, uint64_t from, size_t limit,
                    int (*fn)(const store_message *, void *), void *arg, uint64_t *next);

/* Member by name; *out freed with spbe__v1__member__free_unpacked. SPBE_NOT_FOUND if none. */
int store_member_get(store_reader *r, const char *name, Spbe__V1__Member **out);
/* Member name by X25519 key into name (65 bytes). SPBE_OK or SPBE_NOT_FOUND. */
int store_member_by_curve_key(store_reader *r, const uint8_t curve_key[32], char *name,
                              size_t name_len);
/* Calls fn for every member in name order (member freed after fn returns). */
int store_member_each(store_reader *r, int (*fn)(const Spbe__V1__Member *, void *), void *arg);

/* The first sequence of a topic accepted at or after t_ns (last + 1 if none). */
int store_sequence_at(store_reader *r, uint32_t topic_id, int64_t t_ns, uint64_t *sequence);

/* Calls fn for every stored consumer (record freed after fn returns). */
int store_consumer_each(store_reader *r, int (*fn)(const Spbe__V1__ConsumerInfo *, void *),
                        void *arg);
/* Cursors of one consumer: fn(topic_id, next_sequence). */
int store_cursor_each(store_reader *r, const char *consumer, int (*fn)(uint32_t, uint64_t, void *),
                      void *arg);
/* Pending deliveries of one consumer. */
typedef struct store_pending {
    uint32_t topic_id;
    uint64_t sequence;
    uint32_t deliveries;
    uint32_t flags;
    int64_t due_ns;
} store_pending;
int store_pending_each(store_reader *r, const char *consumer,
                       int (*fn)(const store_pending *, void *), void *arg);

/*
 * Walks every database and checks the invariants of the layout: topic records match
 * their messages (count, bytes, first/last, no gaps), ids map both ways, records are
 * well formed. SPBE_OK, or SPBE_INTERNAL with the first problem in err.
 */
int store_check(store *s, char *err, size_t err_len);

#endif
