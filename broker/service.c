/* service.c - serving sessions and pending requests. Linear structures: services and
 * requests in flight number in the hundreds, not millions. */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbe/errors.h"

typedef struct service_entry {
    char name[WIRE_TOPIC_MAX_BYTES + 1];
    void **sessions;
    size_t n, cap, next;
    struct service_entry *link;
} service_entry;

struct service_table {
    service_entry *services;
    pending_request *pending;
    uint64_t next_ref;
};

service_table *
service_table_new(void)
{
    service_table *t = calloc(1, sizeof *t);
    if (t)
        t->next_ref = 1;
    return t;
}

void
service_table_destroy(service_table **tp)
{
    if (!tp || !*tp)
        return;
    service_table *t = *tp;
    while (t->services) {
        service_entry *e = t->services;
        t->services = e->link;
        free(e->sessions);
        free(e);
    }
    while (t->pending) {
        pending_request *p = t->pending;
        t->pending = p->next;
        service_pending_free(p);
    }
    free(t);
    *tp = NULL;
}

static service_entry *
entry_find(service_table *t, const char *name)
{
    for (service_entry *e = t->services; e; e = e->link)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

int
service_serve(service_table *t, const char *service, void *session)
{
    service_entry *e = entry_find(t, service);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e)
            return SPBE_INTERNAL;
        snprintf(e->name, sizeof e->name, "%s", service);
        e->link = t->services;
        t->services = e;
    }
    for (size_t i = 0; i < e->n; i++)
        if (e->sessions[i] == session)
            return SPBE_OK;
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 4;
        void **n = realloc(e->sessions, cap * sizeof *n);
        if (!n)
            return SPBE_INTERNAL;
        e->sessions = n;
        e->cap = cap;
    }
    e->sessions[e->n++] = session;
    return SPBE_OK;
}

static int
entry_remove(service_entry *e, void *session)
{
    for (size_t i = 0; i < e->n; i++)
        if (e->sessions[i] == session) {
            memmove(&e->sessions[i], &e->sessions[i + 1], (e->n - i - 1) * sizeof *e->sessions);
            e->n--;
            return 1;
        }
    return 0;
}

int
service_unserve(service_table *t, const char *service, void *session)
{
    service_entry *e = entry_find(t, service);
    return e && entry_remove(e, session) ? SPBE_OK : SPBE_NOT_FOUND;
}

size_t
service_servers(service_table *t, const char *service)
{
    service_entry *e = entry_find(t, service);
    return e ? e->n : 0;
}

void *
service_pick(service_table *t, const char *service)
{
    service_entry *e = entry_find(t, service);
    if (!e || e->n == 0)
        return NULL;
    void *s = e->sessions[e->next % e->n];
    e->next = (e->next + 1) % e->n;
    return s;
}

void
service_pending_free(pending_request *p)
{
    if (p) {
        free(p->receipt);
        free(p);
    }
}

int
service_pending_add(service_table *t, pending_request *p)
{
    pending_request *copy = malloc(sizeof *copy);
    if (!copy)
        return SPBE_INTERNAL;
    *copy = *p;
    copy->ref = p->ref = t->next_ref++;
    copy->next = t->pending;
    t->pending = copy;
    return SPBE_OK;
}

pending_request *
service_pending_find(service_table *t, uint64_t ref)
{
    for (pending_request *p = t->pending; p; p = p->next)
        if (p->ref == ref)
            return p;
    return NULL;
}

pending_request *
service_pending_take(service_table *t, uint64_t ref)
{
    for (pending_request **pp = &t->pending; *pp; pp = &(*pp)->next)
        if ((*pp)->ref == ref) {
            pending_request *p = *pp;
            *pp = p->next;
            p->next = NULL;
            return p;
        }
    return NULL;
}

pending_request *
service_pending_expired(service_table *t, int64_t now_ns)
{
    for (pending_request **pp = &t->pending; *pp; pp = &(*pp)->next)
        if ((*pp)->deadline_ns <= now_ns) {
            pending_request *p = *pp;
            *pp = p->next;
            p->next = NULL;
            return p;
        }
    return NULL;
}

int64_t
service_next_deadline(const service_table *t)
{
    int64_t next = INT64_MAX;
    for (const pending_request *p = t->pending; p; p = p->next)
        if (p->deadline_ns < next)
            next = p->deadline_ns;
    return next;
}

pending_request *
service_drop_session(service_table *t, void *session)
{
    for (service_entry *e = t->services; e; e = e->link)
        entry_remove(e, session);
    pending_request *orphans = NULL;
    pending_request **pp = &t->pending;
    while (*pp) {
        if ((*pp)->server == session) {
            pending_request *p = *pp;
            *pp = p->next;
            p->next = orphans;
            orphans = p;
        } else {
            pp = &(*pp)->next;
        }
    }
    return orphans;
}
