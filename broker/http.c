/* http.c - /metrics, /healthz, /readyz and /v1/ JSON over libmicrohttpd. */
#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbe/errors.h"
#include "spbe/v1/spbe.pb-c.h"
#include "wire.h"

#define STALL_NS 5000000000LL /* the I/O loop turns at least every 200 ms */

struct http_server {
    struct MHD_Daemon *daemon;
    metrics *m;
    store *s;
    char version[32];
};

/* ------------------------------------------------------------ text buffer */

typedef struct buf {
    char *data;
    size_t len, cap;
    int failed;
} buf;

static void bprintf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
bprintf(buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->data && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
}

/* A JSON string or a Prometheus label value: quotes, backslashes, control bytes escaped. */
static void
bquote(buf *b, const char *s)
{
    bprintf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '"' || *p == '\\')
            bprintf(b, "\\%c", *p);
        else if (*p == '\n')
            bprintf(b, "\\n");
        else if (*p < 0x20)
            bprintf(b, "\\u%04x", *p);
        else
            bprintf(b, "%c", *p);
    }
    bprintf(b, "\"");
}

static void
btime(buf *b, int64_t ns)
{
    char out[40];
    time_t secs = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    bprintf(b, "\"%s.%06ldZ\"", out, (long)((ns % 1000000000) / 1000));
}

/* ------------------------------------------------------------ /metrics */

static void
counter(buf *b, const char *name, const char *help, uint64_t v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
            (unsigned long long)v);
}

static void
gauge(buf *b, const char *name, const char *help, double v)
{
    bprintf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

typedef struct topic_rows {
    buf *b;
    int field; /* 0 messages, 1 bytes, 2 last sequence */
} topic_rows;

static int
topic_metric(const store_topic_info *t, void *arg)
{
    topic_rows *tr = arg;
    static const char *names[] = {"spbe_topic_messages", "spbe_topic_bytes",
                                  "spbe_topic_last_sequence"};
    uint64_t v = tr->field == 0 ? t->messages : tr->field == 1 ? t->bytes : t->last_sequence;
    bprintf(tr->b, "%s{topic=", names[tr->field]);
    bquote(tr->b, t->name);
    bprintf(tr->b, "} %llu\n", (unsigned long long)v);
    return 0;
}

static void
consumer_metrics(buf *b, const Spbe__V1__Consumers *cs)
{
    static const struct {
        const char *name, *type, *help;
    } rows[] = {
        {"spbe_consumer_pending", "gauge", "Deliveries not acknowledged yet."},
        {"spbe_consumer_lag", "gauge", "Messages not delivered yet."},
        {"spbe_consumer_delivered_total", "counter", "Deliveries, first and again."},
        {"spbe_consumer_redelivered_total", "counter", "Deliveries again."},
        {"spbe_consumer_acked_total", "counter", "Messages acknowledged."},
        {"spbe_consumer_dead_lettered_total", "counter", "Messages moved to the dead letters."},
        {"spbe_consumer_expired_total", "counter", "Messages expired before delivery."},
        {"spbe_consumer_attached", "gauge", "Sessions attached now."},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", rows[r].name, rows[r].help, rows[r].name,
                rows[r].type);
        for (size_t i = 0; cs && i < cs->n_consumers; i++) {
            const Spbe__V1__ConsumerInfo *c = cs->consumers[i];
            uint64_t v = r == 0   ? c->pending
                         : r == 1 ? c->lag
                         : r == 2 ? c->delivered
                         : r == 3 ? c->redelivered
                         : r == 4 ? c->acked
                         : r == 5 ? c->dead_lettered
                         : r == 6 ? c->expired
                                  : c->attached;
            bprintf(b, "%s{consumer=", rows[r].name);
            bquote(b, c->config ? c->config->name : "");
            bprintf(b, "} %llu\n", (unsigned long long)v);
        }
    }
}

static Spbe__V1__Consumers *
consumers_snapshot(http_server *h, char **sessions)
{
    uint8_t *data;
    size_t len;
    metrics_snapshot(h->m, &data, &len, sessions);
    Spbe__V1__Consumers *cs = data ? spbe__v1__consumers__unpack(NULL, len, data) : NULL;
    free(data);
    return cs;
}

static void
render_metrics(http_server *h, buf *b)
{
    metrics *m = h->m;
    counter(b, "spbe_messages_accepted_total", "Messages accepted: stored, then acknowledged.",
            metrics_get(&m->accepted));
    counter(b, "spbe_messages_duplicate_total", "Messages answered DUPLICATE (stored once before).",
            metrics_get(&m->duplicates));
    bprintf(b, "# HELP spbe_messages_rejected_total Messages and commands refused, by code.\n"
               "# TYPE spbe_messages_rejected_total counter\n");
    for (int code = 1; code < METRICS_CODES - 1; code++) /* the last counts unknown codes */
        bprintf(b, "spbe_messages_rejected_total{code=\"%s\"} %llu\n", spbe_error_name(code),
                (unsigned long long)metrics_get(&m->rejected[code]));
    counter(b, "spbe_accepted_bytes_total", "Bytes of the messages accepted (signed envelopes).",
            metrics_get(&m->bytes_accepted));
    counter(b, "spbe_messages_delivered_total", "Deliveries to subscriptions and consumers.",
            metrics_get(&m->delivered));
    counter(b, "spbe_delivery_frames_total",
            "Frames that carried deliveries: one each, or a FrameBatch of several.",
            metrics_get(&m->delivery_frames));
    counter(b, "spbe_commits_total", "Durable commit groups.", metrics_get(&m->commits));
    counter(b, "spbe_requests_total", "Service requests passed on.", metrics_get(&m->requests));
    counter(b, "spbe_responses_total", "Service replies passed back.", metrics_get(&m->responses));
    counter(b, "spbe_request_timeouts_total", "Service requests that timed out.",
            metrics_get(&m->request_timeouts));
    bprintf(b, "# HELP spbe_commit_duration_seconds Time of one durable commit group.\n"
               "# TYPE spbe_commit_duration_seconds histogram\n");
    uint64_t cumulative = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cumulative += metrics_get(&m->commit_buckets[i]);
        bprintf(b, "spbe_commit_duration_seconds_bucket{le=\"%g\"} %llu\n",
                metrics_bucket_seconds[i], (unsigned long long)cumulative);
    }
    uint64_t count = metrics_get(&m->commit_count);
    bprintf(b, "spbe_commit_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
            (unsigned long long)count);
    bprintf(b, "spbe_commit_duration_seconds_sum %.9f\n",
            (double)metrics_get(&m->commit_sum_ns) / 1e9);
    bprintf(b, "spbe_commit_duration_seconds_count %llu\n", (unsigned long long)count);
    uint64_t used, limit, size;
    uint8_t root[32];
    store_usage(h->s, &used, &limit);
    store_tree_head(h->s, &size, root);
    gauge(b, "spbe_storage_used_bytes", "Bytes of the data file in use.", (double)used);
    gauge(b, "spbe_storage_limit_bytes", "The storage limit (0: none).", (double)limit);
    gauge(b, "spbe_storage_full", "1 while publishes are refused with STORAGE_FULL.",
          store_full(h->s) ? 1 : 0);
    gauge(b, "spbe_audit_log_entries", "Leaves of the audit log's Merkle tree.", (double)size);
    gauge(b, "spbe_sessions", "Sessions established now.", (double)metrics_get(&m->sessions));
    gauge(b, "spbe_uptime_seconds", "Seconds since the broker started.",
          (double)(wire_now_ns() - m->started_ns) / 1e9);
    bprintf(b,
            "# HELP spbe_build_info The broker's version and protocol.\n"
            "# TYPE spbe_build_info gauge\nspbe_build_info{version=\"%s\",protocol=\"1\"} 1\n",
            h->version);
    store_reader *r;
    if (store_reader_begin(h->s, &r) == SPBE_OK) {
        static const char *help[] = {"Messages stored in a topic.", "Bytes stored in a topic.",
                                     "The last sequence of a topic."};
        static const char *names[] = {"spbe_topic_messages", "spbe_topic_bytes",
                                      "spbe_topic_last_sequence"};
        for (int f = 0; f < 3; f++) {
            bprintf(b, "# HELP %s %s\n# TYPE %s gauge\n", names[f], help[f], names[f]);
            topic_rows tr = {b, f};
            store_topic_each(r, topic_metric, &tr);
        }
        store_reader_end(&r);
    }
    char *sessions = NULL;
    Spbe__V1__Consumers *cs = consumers_snapshot(h, &sessions);
    consumer_metrics(b, cs);
    if (cs)
        spbe__v1__consumers__free_unpacked(cs, NULL);
    free(sessions);
}

/* ------------------------------------------------------------ /v1/ */

static int
topic_json(const store_topic_info *t, void *arg)
{
    buf *b = arg;
    bprintf(b, "%s{\"name\":", b->len > 1 ? "," : "");
    bquote(b, t->name);
    bprintf(b,
            ",\"first_sequence\":%llu,\"last_sequence\":%llu,\"messages\":%llu,\"bytes\":%llu,"
            "\"last_accepted\":",
            (unsigned long long)t->first_sequence, (unsigned long long)t->last_sequence,
            (unsigned long long)t->messages, (unsigned long long)t->bytes);
    if (t->messages)
        btime(b, t->last_ns);
    else
        bprintf(b, "null");
    bprintf(b, "}");
    return 0;
}

static int
member_json(const Spbe__V1__Member *m, void *arg)
{
    buf *b = arg;
    char key[65] = "";
    if (m->public_key.len == 32)
        for (int i = 0; i < 32; i++)
            snprintf(key + 2 * i, 3, "%02x", m->public_key.data[i]);
    bprintf(b, "%s{\"name\":", b->len > 1 ? "," : "");
    bquote(b, m->name);
    bprintf(b, ",\"public_key\":\"%s\",\"status\":\"%s\",\"created\":", key,
            m->revoked ? "revoked" : "active");
    btime(b, m->created_ns);
    bprintf(b, "}");
    return 0;
}

static void
render_consumers(http_server *h, buf *b)
{
    char *sessions = NULL;
    Spbe__V1__Consumers *cs = consumers_snapshot(h, &sessions);
    free(sessions);
    bprintf(b, "[");
    for (size_t i = 0; cs && i < cs->n_consumers; i++) {
        const Spbe__V1__ConsumerInfo *c = cs->consumers[i];
        bprintf(b, "%s{\"name\":", i ? "," : "");
        bquote(b, c->config ? c->config->name : "");
        bprintf(b, ",\"pattern\":");
        bquote(b, c->config ? c->config->pattern : "");
        bprintf(b, ",\"owner\":");
        bquote(b, c->owner);
        bprintf(b,
                ",\"pending\":%llu,\"lag\":%llu,\"delivered\":%llu,\"redelivered\":%llu,"
                "\"acked\":%llu,\"dead_lettered\":%llu,\"expired\":%llu,\"attached\":%u}",
                (unsigned long long)c->pending, (unsigned long long)c->lag,
                (unsigned long long)c->delivered, (unsigned long long)c->redelivered,
                (unsigned long long)c->acked, (unsigned long long)c->dead_lettered,
                (unsigned long long)c->expired, c->attached);
    }
    bprintf(b, "]\n");
    if (cs)
        spbe__v1__consumers__free_unpacked(cs, NULL);
}

/* ------------------------------------------------------------ dispatch */

static enum MHD_Result
respond(struct MHD_Connection *c, unsigned status, const char *type, buf *b)
{
    if (b->failed) {
        free(b->data);
        b->data = NULL;
        b->len = 0;
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(b->len, b->data ? b->data : (char *)"",
                                        b->data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(b->data);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)state;
    http_server *h = cls;
    buf b = {0};
    const char *json = "application/json", *text = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        bprintf(&b, "only GET\n");
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, &b);
    }
    int64_t now = wire_now_ns();
    int alive = now - atomic_load(&h->m->loop_ns) < STALL_NS;
    if (strcmp(url, "/metrics") == 0) {
        render_metrics(h, &b);
        return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    if (strcmp(url, "/healthz") == 0) {
        bprintf(&b, alive ? "ok\n" : "the broker's loop has stalled\n");
        return respond(c, alive ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, &b);
    }
    if (strcmp(url, "/readyz") == 0) {
        int full = store_full(h->s);
        bprintf(&b, !alive ? "the broker's loop has stalled\n"
                    : full ? "storage limit reached: publishes get STORAGE_FULL\n"
                           : "ready\n");
        return respond(c, alive && !full ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, &b);
    }
    if (strcmp(url, "/v1/topics") == 0 || strcmp(url, "/v1/members") == 0) {
        store_reader *r;
        if (store_reader_begin(h->s, &r) != SPBE_OK) {
            bprintf(&b, "{\"error\":\"cannot read the store\"}\n");
            return respond(c, MHD_HTTP_INTERNAL_SERVER_ERROR, json, &b);
        }
        bprintf(&b, "[");
        if (url[4] == 't')
            store_topic_each(r, topic_json, &b);
        else
            store_member_each(r, member_json, &b);
        bprintf(&b, "]\n");
        store_reader_end(&r);
        return respond(c, MHD_HTTP_OK, json, &b);
    }
    if (strcmp(url, "/v1/consumers") == 0) {
        render_consumers(h, &b);
        return respond(c, MHD_HTTP_OK, json, &b);
    }
    if (strcmp(url, "/v1/sessions") == 0) {
        uint8_t *data;
        size_t len;
        char *sessions;
        metrics_snapshot(h->m, &data, &len, &sessions);
        free(data);
        bprintf(&b, "%s\n", sessions ? sessions : "[]");
        free(sessions);
        return respond(c, MHD_HTTP_OK, json, &b);
    }
    bprintf(&b, "not found: /metrics /healthz /readyz /v1/topics /v1/consumers /v1/members "
                "/v1/sessions\n");
    return respond(c, MHD_HTTP_NOT_FOUND, text, &b);
}

http_server *
http_start(const char *listen, metrics *m, store *s, const char *version, char *err, size_t err_len)
{
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    if (!colon || (size_t)(colon - listen) >= sizeof host || *end || port < 0 || port > 65535) {
        snprintf(err, err_len, "--http takes HOST:PORT, not '%s'", listen);
        return NULL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, err_len, "--http: '%s' is not an IPv4 address", host);
        return NULL;
    }
    addr.sin_port = htons((uint16_t)port);
    http_server *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    h->m = m;
    h->s = s;
    snprintf(h->version, sizeof h->version, "%s", version);
    h->daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         on_request, h, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->daemon) {
        snprintf(err, err_len, "cannot listen for HTTP on %s", listen);
        free(h);
        return NULL;
    }
    return h;
}

void
http_stop(http_server **hp)
{
    if (!hp || !*hp)
        return;
    MHD_stop_daemon((*hp)->daemon);
    free(*hp);
    *hp = NULL;
}
