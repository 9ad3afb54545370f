/*
 * service.h - request/reply between members: which sessions serve which service, and
 * the requests on their way to an answer. A request goes to one of the serving
 * sessions in turn (round robin); it waits for the answer until its deadline.
 * Owned by the broker's I/O thread; not thread-safe. Sessions are opaque pointers.
 */
#ifndef SPBE_SERVICE_H
#define SPBE_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

typedef struct service_table service_table;

typedef struct pending_request {
    uint64_t ref;        /* the broker's handle, quoted by the server's Respond */
    uint8_t caller[256]; /* routing id of the caller's connection */
    size_t caller_len;
    uint64_t caller_request; /* the caller's request id */
    void *server;            /* the session the request went to */
    char service[WIRE_TOPIC_MAX_BYTES + 1];
    int64_t deadline_ns;
    uint64_t request_sequence;
    uint8_t message_id[WIRE_ID_BYTES]; /* the reply's correlation_id must be this */
    uint8_t *receipt; /* the request's packed SignedReceipt (malloc'ed, freed with it) */
    size_t receipt_len;
    struct pending_request *next;
} pending_request;

service_table *service_table_new(void);
void service_table_destroy(service_table **t);

/* session serves service from now on (again: no change). SPBE_OK or SPBE_INTERNAL. */
int service_serve(service_table *t, const char *service, void *session);
/* SPBE_OK or SPBE_NOT_FOUND. */
int service_unserve(service_table *t, const char *service, void *session);
/* How many sessions serve service now (the turn does not move). */
size_t service_servers(service_table *t, const char *service);
/* The next serving session of service in turn, or NULL if none serves it. */
void *service_pick(service_table *t, const char *service);

/* Frees a request taken out of the table (and its receipt). */
void service_pending_free(pending_request *p);

/* Records a request sent to p->server; the table takes a copy (and p->receipt) and
 * sets p->ref. */
int service_pending_add(service_table *t, pending_request *p);
/* The pending request with ref, or NULL. Borrowed until the next change of the table. */
pending_request *service_pending_find(service_table *t, uint64_t ref);
/* Removes and returns the request with ref (caller frees), or NULL. */
pending_request *service_pending_take(service_table *t, uint64_t ref);
/* Removes and returns one request whose deadline is before now_ns (caller frees), or NULL. */
pending_request *service_pending_expired(service_table *t, int64_t now_ns);
/* The earliest deadline of a pending request, or INT64_MAX. */
int64_t service_next_deadline(const service_table *t);

/* The session is gone: it serves nothing any more. Removes and returns, as a list the
 * caller frees, the requests that were waiting for its answer. */
pending_request *service_drop_session(service_table *t, void *session);

#endif
