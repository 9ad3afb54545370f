/*
 * bridge.h - spbe-bridge: the HTTP/JSON bridge. One member of the bus with its own
 * identity; HTTP publishes go through one publishing session (publisher.c, a thread that
 * owns the client and pipelines the publishes of every HTTP connection), durable consumers
 * are delivered to webhooks (webhook.c, one thread and one session per consumer), the HTTP
 * server is libmicrohttpd (http.c).
 */
#ifndef SPBE_BRIDGE_H
#define SPBE_BRIDGE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "spbe/spbe.h"

#define BRIDGE_VERSION "0.1.0"
#define BRIDGE_MAX_SCHEMAS 64
#define BRIDGE_MAX_HOOKS 32
#define BRIDGE_MAX_TOKENS 256

typedef struct bridge_schema {
    char pattern[256];
    char type[256];
} bridge_schema;

typedef struct bridge_hook {
    const char *consumer;
    const char *pattern;
    const char *url;
} bridge_hook;

typedef struct bridge_config {
    const char *key;        /* --key, else $SPBE_KEY */
    const char *broker;     /* --broker, else $SPBE_BROKER */
    const char *broker_key; /* --broker-key, else $SPBE_BROKER_KEY */
    const char *listen;     /* --listen HOST:PORT */
    const char *tokens;     /* --tokens FILE */
    bridge_schema schemas[BRIDGE_MAX_SCHEMAS];
    size_t n_schemas;
    bridge_hook hooks[BRIDGE_MAX_HOOKS];
    size_t n_hooks;
    size_t max_body;            /* --max-body BYTES */
    int max_connections;        /* --max-connections */
    int publish_timeout_ms;     /* --publish-timeout-ms: the wait for the broker's receipt */
    int timeout_ms;             /* --timeout-ms: connecting and synchronous calls */
    int hook_concurrency;       /* --webhook-concurrency: transfers per consumer at a time */
    int hook_timeout_ms;        /* --webhook-timeout-ms: one POST */
    int retry_min_ms;           /* --retry-min-ms: the first retry's delay */
    int retry_max_ms;           /* --retry-max-ms: the longest delay between retries */
    spbe_consumer_options copt; /* --from, --ack-wait-ms, --max-deliveries */
} bridge_config;

/* The SHA-256 digests of the accepted bearer tokens. */
typedef struct bridge_tokens {
    uint8_t hash[BRIDGE_MAX_TOKENS][32];
    size_t n;
} bridge_tokens;

/* One HTTP publish waiting for its receipt. */
typedef struct pub_job {
    const char *topic;
    const uint8_t *payload;
    size_t len;
    const char *schema;
    uint8_t id[SPBE_ID_BYTES];
    int64_t deadline_ns;
    uint64_t token;
    int done;
    int rc;
    spbe_receipt receipt;
    char error[256];
    struct pub_job *next;
} pub_job;

typedef struct publisher {
    spbe_client *client;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int wake[2];
    pub_job *queue, *queue_tail, *inflight;
    int stop;
    int running;
    int connected;
    int timeout_ms;
    volatile sig_atomic_t *fatal;
} publisher;

typedef struct webhook webhook;

typedef struct bridge {
    bridge_config cfg;
    bridge_tokens tokens;
    publisher pub;
    webhook *hooks[BRIDGE_MAX_HOOKS];
    size_t n_hooks;
    struct MHD_Daemon *http;
    atomic_int requests;         /* HTTP requests begun and not yet answered */
    volatile sig_atomic_t fatal; /* a thread hit an end it cannot recover from */
} bridge;

/* Logs one line "ts=... level=L event=E ..." to stderr. */
void bridge_log(const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Asks the main thread to stop with status 1. */
void bridge_fatal(volatile sig_atomic_t *fatal);
/* RFC 3339 UTC time with nanoseconds of ns into out (40 bytes). */
void bridge_time(int64_t ns, char *out, size_t n);

/* tokens.c / http.c */
int bridge_tokens_load(const char *path, bridge_tokens *t, char *err, size_t err_len);
int bridge_token_ok(const bridge_tokens *t, const char *authorization);
int bridge_http_start(bridge *b, char *err, size_t err_len);
void bridge_http_stop(bridge *b);
/* The payload type bound to topic by --schema, or NULL. */
const char *bridge_schema_for(const bridge_config *cfg, const char *topic);

/* publisher.c: starts the thread that owns client. */
int publisher_start(publisher *p, spbe_client *client, volatile sig_atomic_t *fatal);
/* Queues job and waits for its end: its rc and receipt are then set. */
int publisher_submit(publisher *p, pub_job *job);
void publisher_stop(publisher *p);

/* webhook.c: attaches a session to the consumer of hook (at start, so that errors are
 * reported before the bridge serves), then delivers in a thread. */
int webhook_start(const bridge_config *cfg, const bridge_hook *hook, volatile sig_atomic_t *fatal,
                  webhook **out, char *err, size_t err_len);
void webhook_stop(webhook **w);

#endif
