/*
 * router.h - subscriptions and delivery. A subscription is a pattern with a cursor
 * per matching topic (the next sequence to deliver). Live messages go out as they
 * are committed when the cursor is at them; a subscription that starts in the past,
 * or whose peer cannot take more (ZeroMQ high-water mark), falls behind and is
 * caught up from the store by router_pump(), in sequence order, without loss. So a
 * slow subscriber never holds messages in broker memory and never misses one.
 * Owned by the broker's I/O thread; not thread-safe.
 */
#ifndef SPBE_ROUTER_H
#define SPBE_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* How a delivery reaches a peer. Returns 0 when sent, EAGAIN when the peer cannot
 * take it now (the router retries later from the store), any other value to drop
 * the subscription. data is the sender's SignedMessage; valid only for the call. */
typedef int (*router_send_fn)(void *ctx, void *owner, uint64_t subscription_id, const char *topic,
                              uint64_t sequence, int64_t accepted_ns, const uint8_t *data,
                              size_t len);

typedef struct router router;

enum router_start { ROUTER_START_NEW, ROUTER_START_FIRST, ROUTER_START_SEQUENCE };

router *router_new(store *s, router_send_fn send, void *ctx);
void router_destroy(router **r);

#define ROUTER_RESUME_MAX 1024

/* Where a resumed subscription goes on in one topic (borrowed for the call). */
typedef struct router_position {
    const char *topic;
    uint64_t next_sequence;
} router_position;

/* Adds a subscription of owner (a session). The caller has checked the pattern, the
 * rights and that resume names topics the pattern matches; resume overrides start for
 * its topics (a topic not yet stored starts there when it appears). SPBE_OK with *id,
 * or SPBE_INTERNAL. */
int router_subscribe(router *r, void *owner, const char *pattern, enum router_start start,
                     uint64_t start_sequence, const router_position *resume, size_t n_resume,
                     uint64_t *id);
/* SPBE_OK or SPBE_NOT_FOUND (no such subscription of owner). */
int router_unsubscribe(router *r, void *owner, uint64_t id);
/* Drops every subscription of owner. */
void router_drop_owner(router *r, void *owner);
/* How many subscriptions owner holds. */
size_t router_count_owned(const router *r, const void *owner);
/* Number of subscriptions of owner. */
size_t router_count_owner(const router *r, void *owner);

/* A message was committed: deliver it to subscriptions whose cursor is at it. */
void router_publish(router *r, uint32_t topic_id, const char *topic, uint64_t sequence,
                    int64_t accepted_ns, const uint8_t *data, size_t len);

/* Catches up subscriptions that are behind, sending at most budget messages.
 * Returns 1 if some could progress now, 2 if the only ones behind wait for a peer
 * that refused a send (retry soon), 0 if none is behind. */
int router_pump(router *r, size_t budget);

/* Counters: deliveries sent, sends a peer refused (deferred to the store), deliveries
 * sent from the store (replay and catch-up). */
void router_stats(const router *r, uint64_t *delivered, uint64_t *deferred, uint64_t *caught_up);

#endif
