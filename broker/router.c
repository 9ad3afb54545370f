/* router.c - subscriptions, live fan-out and catch-up from the store. */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbe/errors.h"
#include "wire.h"

typedef struct cursor {
    uint32_t topic_id;
    uint64_t next; /* next sequence to deliver */
    int behind;    /* messages from next on must come from the store */
    char topic[WIRE_TOPIC_MAX_BYTES + 1];
} cursor;

typedef struct subscription {
    uint64_t id;
    void *owner;
    char pattern[WIRE_TOPIC_MAX_BYTES + 1];
    enum router_start start;
    uint64_t start_sequence;
    cursor *cursors;
    size_t n_cursors, cap_cursors;
    int behind;  /* some cursor is behind */
    int blocked; /* the peer refused the last send; retry in the next pump */
    struct subscription *next;
} subscription;

struct router {
    store *store;
    router_send_fn send;
    void *ctx;
    subscription *subs;
    uint64_t next_id;
    uint64_t delivered, deferred, caught_up;
};

router *
router_new(store *s, router_send_fn send, void *ctx)
{
    router *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->store = s;
    r->send = send;
    r->ctx = ctx;
    r->next_id = 1;
    return r;
}

static void
subscription_free(subscription *s)
{
    free(s->cursors);
    free(s);
}

void
router_destroy(router **rp)
{
    if (!rp || !*rp)
        return;
    subscription *s = (*rp)->subs;
    while (s) {
        subscription *n = s->next;
        subscription_free(s);
        s = n;
    }
    free(*rp);
    *rp = NULL;
}

static cursor *
cursor_find(subscription *s, uint32_t topic_id)
{
    for (size_t i = 0; i < s->n_cursors; i++)
        if (s->cursors[i].topic_id == topic_id)
            return &s->cursors[i];
    return NULL;
}

static cursor *
cursor_add(subscription *s, uint32_t topic_id, const char *topic, uint64_t next)
{
    if (s->n_cursors == s->cap_cursors) {
        size_t cap = s->cap_cursors ? 2 * s->cap_cursors : 4;
        cursor *n = realloc(s->cursors, cap * sizeof *n);
        if (!n)
            return NULL;
        s->cursors = n;
        s->cap_cursors = cap;
    }
    cursor *c = &s->cursors[s->n_cursors++];
    c->topic_id = topic_id;
    c->next = next;
    c->behind = 0;
    snprintf(c->topic, sizeof c->topic, "%s", topic);
    return c;
}

typedef struct start_state {
    subscription *sub;
    const router_position *resume;
    size_t n_resume;
    int failed;
} start_state;

/* Sets a cursor for every existing topic the pattern matches. */
static int
start_topic(const store_topic_info *t, void *arg)
{
    start_state *st = arg;
    subscription *s = st->sub;
    if (!wire_pattern_match(s->pattern, t->name))
        return 0;
    uint64_t next = t->last_sequence + 1;
    if (s->start == ROUTER_START_FIRST)
        next = t->first_sequence ? t->first_sequence : 1;
    else if (s->start == ROUTER_START_SEQUENCE)
        next = s->start_sequence;
    for (size_t i = 0; i < st->n_resume; i++)
        if (strcmp(st->resume[i].topic, t->name) == 0)
            next = st->resume[i].next_sequence ? st->resume[i].next_sequence : 1;
    if (t->first_sequence && next < t->first_sequence)
        next = t->first_sequence;
    cursor *c = cursor_add(s, t->id, t->name, next);
    if (!c) {
        st->failed = 1;
        return 1;
    }
    if (next <= t->last_sequence) {
        c->behind = 1;
        s->behind = 1;
    }
    return 0;
}

int
router_subscribe(router *r, void *owner, const char *pattern, enum router_start start,
                 uint64_t start_sequence, const router_position *resume, size_t n_resume,
                 uint64_t *id)
{
    subscription *s = calloc(1, sizeof *s);
    if (!s)
        return SPBE_INTERNAL;
    s->owner = owner;
    s->start = start;
    s->start_sequence = start_sequence ? start_sequence : 1;
    snprintf(s->pattern, sizeof s->pattern, "%s", pattern);
    store_reader *rd;
    int rc = store_reader_begin(r->store, &rd);
    if (rc != SPBE_OK) {
        subscription_free(s);
        return rc;
    }
    start_state st = {s, resume, n_resume, 0};
    rc = store_topic_each(rd, start_topic, &st);
    store_reader_end(&rd);
    if (rc != SPBE_OK || st.failed) {
        subscription_free(s);
        return SPBE_INTERNAL;
    }
    s->id = r->next_id++;
    s->next = r->subs;
    r->subs = s;
    *id = s->id;
    return SPBE_OK;
}

int
router_unsubscribe(router *r, void *owner, uint64_t id)
{
    for (subscription **pp = &r->subs; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id && (*pp)->owner == owner) {
            subscription *s = *pp;
            *pp = s->next;
            subscription_free(s);
            return SPBE_OK;
        }
    return SPBE_NOT_FOUND;
}

size_t
router_count_owned(const router *r, const void *owner)
{
    size_t n = 0;
    for (const subscription *s = r->subs; s; s = s->next)
        n += s->owner == owner;
    return n;
}

void
router_drop_owner(router *r, void *owner)
{
    subscription **pp = &r->subs;
    while (*pp) {
        if ((*pp)->owner == owner) {
            subscription *s = *pp;
            *pp = s->next;
            subscription_free(s);
        } else {
            pp = &(*pp)->next;
        }
    }
}

size_t
router_count_owner(const router *r, void *owner)
{
    size_t n = 0;
    for (const subscription *s = r->subs; s; s = s->next)
        n += s->owner == owner;
    return n;
}

/* Sends one message through a cursor; returns 0, EAGAIN, or another errno (drop). */
static int
deliver(router *r, subscription *s, cursor *c, uint64_t sequence, int64_t accepted_ns,
        const uint8_t *data, size_t len)
{
    int rc = r->send(r->ctx, s->owner, s->id, c->topic, sequence, accepted_ns, data, len);
    if (rc == 0) {
        c->next = sequence + 1;
        r->delivered++;
    } else if (rc == EAGAIN) {
        r->deferred++;
        c->behind = 1;
        s->behind = 1;
        s->blocked = 1;
    }
    return rc;
}

void
router_publish(router *r, uint32_t topic_id, const char *topic, uint64_t sequence,
               int64_t accepted_ns, const uint8_t *data, size_t len)
{
    subscription **pp = &r->subs;
    while (*pp) {
        subscription *s = *pp;
        if (!wire_pattern_match(s->pattern, topic)) {
            pp = &s->next;
            continue;
        }
        cursor *c = cursor_find(s, topic_id);
        if (!c) {
            /* a topic created after the subscription: all of it is new */
            uint64_t next = s->start == ROUTER_START_SEQUENCE ? s->start_sequence : 1;
            c = cursor_add(s, topic_id, topic, next);
            if (!c) {
                pp = &s->next;
                continue;
            }
        }
        int rc = 0;
        if (sequence > c->next || (c->behind && sequence >= c->next)) {
            c->behind = 1;
            s->behind = 1;
        } else if (sequence == c->next && !s->blocked) {
            rc = deliver(r, s, c, sequence, accepted_ns, data, len);
        } else if (sequence == c->next) {
            c->behind = 1;
            s->behind = 1;
        }
        if (rc != 0 && rc != EAGAIN) {
            *pp = s->next;
            subscription_free(s);
            continue;
        }
        pp = &s->next;
    }
}

typedef struct pump_state {
    router *r;
    subscription *s;
    cursor *c;
    size_t sent;
    int rc;
} pump_state;

static int
pump_one(const store_message *m, void *arg)
{
    pump_state *ps = arg;
    ps->rc = deliver(ps->r, ps->s, ps->c, m->sequence, m->accepted_ns, m->data, m->len);
    if (ps->rc != 0)
        return 1;
    ps->sent++;
    ps->r->caught_up++;
    return 0;
}

int
router_pump(router *r, size_t budget)
{
    int pending = 0, blocked = 0;
    store_reader *rd = NULL;
    subscription **pp = &r->subs;
    while (*pp && budget > 0) {
        subscription *s = *pp;
        s->blocked = 0;
        if (!s->behind) {
            pp = &s->next;
            continue;
        }
        if (!rd && store_reader_begin(r->store, &rd) != SPBE_OK)
            return 1;
        int still_behind = 0, drop = 0;
        for (size_t i = 0; i < s->n_cursors && budget > 0; i++) {
            cursor *c = &s->cursors[i];
            if (!c->behind)
                continue;
            pump_state ps = {r, s, c, 0, 0};
            uint64_t next;
            size_t want = budget < 256 ? budget : 256;
            store_read_from(rd, c->topic_id, c->next, want, pump_one, &ps, &next);
            budget -= ps.sent < budget ? ps.sent : budget;
            if (ps.rc == EAGAIN) {
                still_behind = 1;
                break;
            }
            if (ps.rc != 0) {
                drop = 1;
                break;
            }
            if (ps.sent == want)
                still_behind = 1; /* more may follow */
            else
                c->behind = 0; /* reached the end of what is stored */
        }
        for (size_t i = 0; i < s->n_cursors; i++)
            still_behind |= s->cursors[i].behind;
        s->behind = still_behind;
        if (drop) {
            *pp = s->next;
            subscription_free(s);
            continue;
        }
        if (still_behind && !s->blocked)
            pending = 1;
        if (still_behind && s->blocked)
            blocked = 1;
        pp = &s->next;
    }
    if (*pp)
        pending = 1;
    store_reader_end(&rd);
    return pending ? 1 : blocked ? 2 : 0;
}

void
router_stats(const router *r, uint64_t *delivered, uint64_t *deferred, uint64_t *caught_up)
{
    *delivered = r->delivered;
    *deferred = r->deferred;
    *caught_up = r->caught_up;
}
