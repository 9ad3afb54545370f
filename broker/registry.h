/*
 * registry.h - the broker's in-memory view of members and their rights, loaded from
 * the store at start and updated after each durable registry change. Owned by the
 * broker's I/O thread; not thread-safe.
 */
#ifndef SPBE_REGISTRY_H
#define SPBE_REGISTRY_H

#include <stdint.h>

#include "spbe/v1/spbe.pb-c.h"
#include "store.h"

typedef struct registry registry;

/* Loads every member from the store. */
int registry_load(store *s, registry **out);
void registry_destroy(registry **r);

/* The member by name, or NULL. Borrowed: valid until the next registry_put. */
const Spbe__V1__Member *registry_find_member(const registry *r, const char *name);
/* The member whose X25519 key this is (ZAP), or NULL. */
const Spbe__V1__Member *registry_find_by_curve_key(const registry *r, const uint8_t key[32]);
/* Replaces or adds a member (deep copy). SPBE_OK or SPBE_INTERNAL. */
int registry_put(registry *r, const Spbe__V1__Member *member);

/* A deep copy of a member (free with spbe__v1__member__free_unpacked), or NULL. */
Spbe__V1__Member *registry_member_copy(const Spbe__V1__Member *m);

/* 1 if the member has the role ("admin", "ops"). */
int registry_has_role(const Spbe__V1__Member *m, const char *role);
/* 1 if the member may publish to topic. "$sys." topics are the broker's only. */
int registry_may_publish(const Spbe__V1__Member *m, const char *topic);
/* 1 if every topic pattern matches is covered by one of the member's subscribe rights. */
int registry_may_subscribe(const Spbe__V1__Member *m, const char *pattern);

/* 1 if the member may serve service (a name with topic syntax, not "$sys."). */
int registry_may_serve(const Spbe__V1__Member *m, const char *service);
/* 1 if the member may call service. */
int registry_may_call(const Spbe__V1__Member *m, const char *service);

#endif
