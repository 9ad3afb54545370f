/*
 * consumer.h - durable consumers: named subscriptions whose cursors, pending deliveries
 * and delivery counts are kept in the store. Sessions attached to a consumer share its
 * messages (a queue group), each holding at most max_in_flight unacknowledged ones.
 * Messages are read from the store when they are delivered, never queued in memory:
 * what memory holds per consumer is its cursors and its pending deliveries.
 *
 * Every change is recorded as store operations that the broker commits with its next
 * group (consumer_take); a crash loses at most the changes of groups not yet
 * committed, which means deliveries made again (at least once), never a message
 * skipped: a cursor moves on disk only together with the pending entry it creates.
 *
 * Owned by the broker's I/O thread; not thread-safe. Sessions are opaque pointers.
 */
#ifndef SPBE_CONSUMER_H
#define SPBE_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "identity.h"
#include "store.h"

typedef struct consumer_set consumer_set;

/* Sends one delivery to a session. 0 when sent, EAGAIN when the session cannot take
 * it now (tried again later), another errno to detach the session. */
typedef int (*consumer_send_fn)(void *ctx, void *session, uint64_t attachment, const char *consumer,
                                const char *topic, uint64_t sequence, int64_t accepted_ns,
                                uint32_t delivery_count, int64_t ack_deadline_ns,
                                const uint8_t *data, size_t len);

/* What the broker commits for the consumers: store ops and dead letters to append. */
typedef struct consumer_batch {
    store_op *ops;
    size_t n_ops;
    store_append_item *letters; /* topic $sys.dlq.<consumer>, signed by the broker */
    size_t n_letters;
} consumer_batch;

/* key: the broker's identity (signs dead letters); borrowed for the set's life. */
consumer_set *consumer_set_new(store *s, const identity *key, consumer_send_fn send, void *ctx);
void consumer_set_destroy(consumer_set **cs);
/* Loads the consumers kept in the store. */
int consumer_set_load(consumer_set *cs);

/* 1 if name is a valid consumer name ([a-z0-9_-]{1,64}). */
int consumer_name_valid(const char *name);
/* The consumer's stored config, or NULL. */
const Spbe__V1__ConsumerConfig *consumer_config(consumer_set *cs, const char *name);

/* Creates a consumer (config checked by the caller: name, pattern, rights) with a
 * durable commit. SPBE_OK, or a store error. */
int consumer_create(consumer_set *cs, const Spbe__V1__ConsumerConfig *config, const char *owner);
/* Deletes it with a durable commit; attached sessions stop receiving. SPBE_NOT_FOUND. */
int consumer_delete(consumer_set *cs, const char *name);

/* Attaches session to an existing consumer; *attachment gets the id its deliveries carry. */
int consumer_attach(consumer_set *cs, const char *name, void *session, uint64_t *attachment);
/* Detaches session from every consumer; what it held is delivered again at once. */
void consumer_detach_session(consumer_set *cs, void *session);
/* Detaches one attachment of session: SPBE_OK or SPBE_NOT_FOUND. */
int consumer_detach(consumer_set *cs, void *session, uint64_t attachment);

/* Acknowledges one delivery (kind: spbe.v1.AckKind; reason: a TERM's, into its dead
 * letter, NULL or "" for "terminated"). SPBE_OK, SPBE_NOT_FOUND (no such consumer, or the
 * message is not pending: already acknowledged). */
int consumer_ack(consumer_set *cs, const char *name, const char *topic, uint64_t sequence, int kind,
                 uint32_t delay_ms, const char *reason);

/* A message was committed in topic. */
void consumer_publish(consumer_set *cs, uint32_t topic_id, const char *topic, uint64_t sequence);

/* Delivers due redeliveries and new messages, moves what exceeded max deliveries or
 * expired to the dead letters; at most budget deliveries. Returns 1 if more could be
 * delivered now, 0 otherwise. */
int consumer_pump(consumer_set *cs, size_t budget);
/* Milliseconds until the next redelivery or scheduled delivery falls due (-1: none). */
long consumer_next_due_ms(consumer_set *cs);

/* 1 if changes wait to be committed. */
int consumer_dirty(const consumer_set *cs);
/* Moves the waiting changes into *batch (the caller commits them, then calls
 * consumer_batch_done). */
void consumer_take(consumer_set *cs, consumer_batch *batch);
/* After the commit: dead letters stored (letters[i].code) are announced to the set;
 * frees the batch. */
void consumer_batch_done(consumer_set *cs, consumer_batch *batch);

/* Settings a new consumer takes when its creator leaves them 0 (0 here: 30000 ms, 5
 * deliveries, 1000 in flight). */
void consumer_set_defaults(consumer_set *cs, uint32_t ack_wait_ms, uint32_t max_deliveries,
                           uint32_t max_in_flight);

/* Info of one consumer (*out freed with spbe__v1__consumer_info__free_unpacked), or
 * SPBE_NOT_FOUND. */
int consumer_info(consumer_set *cs, const char *name, Spbe__V1__ConsumerInfo **out);
/* Calls fn with the info of every consumer, in name order. */
/* How many attachments session holds, over every consumer. */
size_t consumer_count_attached(const consumer_set *cs, const void *session);
/* How many consumers owner created. */
size_t consumer_count_owned(const consumer_set *cs, const char *owner);
void consumer_each(consumer_set *cs, void (*fn)(Spbe__V1__ConsumerInfo *, void *), void *arg);

#endif
