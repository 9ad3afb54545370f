/*
 * http.h - the broker's HTTP endpoint (libmicrohttpd, its own thread): /metrics in the
 * Prometheus text format, /healthz and /readyz, and JSON under /v1/ (topics, consumers,
 * members' public data, sessions). Read-only: it reads the counters, the last snapshot
 * and the store (LMDB read transactions), never the I/O thread's structures.
 */
#ifndef SPBE_HTTP_H
#define SPBE_HTTP_H

#include "metrics.h"
#include "store.h"

typedef struct http_server http_server;

/* Listens on listen ("HOST:PORT", IPv4). NULL with the reason in err on failure. */
http_server *http_start(const char *listen, metrics *m, store *s, const char *version, char *err,
                        size_t err_len);
void http_stop(http_server **h);

#endif
