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
} store_message;

/* One publish of a group commit. Inputs are borrowed for the call. */
typedef struct store_append_item {
    const char *topic;
    const char *sender;
    const uint8_t *id; /* 16 bytes */
    const uint8_t *data;
    size_t len;
    /* outputs */
    int code; /* SPBE_OK, SPBE_DUPLICATE or SPBE_STORAGE_FULL/INTERNAL */
    uint32_t topic_id;
    uint64_t sequence;   /* for SPBE_DUPLICATE, the original's */
    int64_t accepted_ns; /* for SPBE_DUPLICATE, the original's */
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

/* Puts (adds or replaces) a member with a durable commit. */
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

/*
 * Walks every database and checks the invariants of the layout: topic records match
 * their messages (count, bytes, first/last, no gaps), ids map both ways, records are
 * well formed. SPBE_OK, or SPBE_INTERNAL with the first problem in err.
 */
int store_check(store *s, char *err, size_t err_len);

#endif
