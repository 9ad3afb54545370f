/* http.c - the bridge's HTTP server: bearer tokens, POST /v1/publish/<topic>, GET /v1/health. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <sodium.h>

#include "bridge.h"
#include "jsonpb.h"
#include "schema.h"
#include "wire.h"

#define PUBLISH_PREFIX "/v1/publish/"
#define MIN_TOKEN 16

int
bridge_tokens_load(const char *path, bridge_tokens *t, char *err, size_t err_len)
{
    memset(t, 0, sizeof *t);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, err_len, "cannot read the token file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        snprintf(err, err_len,
                 "the token file %s must be a regular file readable by its owner only (mode "
                 "%04o; chmod 600 %s)",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return snprintf(err, err_len, "cannot read %s", path), -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line, *e = line + strlen(line);
        while (*s && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s || *s == '#')
            continue;
        size_t n = (size_t)(e - s);
        int printable = 1;
        for (char *c = s; c < e; c++)
            printable &= *c > 0x20 && *c < 0x7f;
        if (n < MIN_TOKEN || !printable) {
            snprintf(err, err_len,
                     "%s line %d: a token is at least %d printable characters without spaces", path,
                     lineno, MIN_TOKEN);
            rc = -1;
            break;
        }
        if (t->n == BRIDGE_MAX_TOKENS) {
            snprintf(err, err_len, "%s: at most %d tokens", path, BRIDGE_MAX_TOKENS);
            rc = -1;
            break;
        }
        crypto_hash_sha256(t->hash[t->n++], (const unsigned char *)s, n);
    }
    sodium_memzero(line, sizeof line);
    fclose(f);
    if (rc == 0 && t->n == 0) {
        snprintf(err, err_len, "the token file %s holds no token", path);
        rc = -1;
    }
    return rc;
}

int
bridge_token_ok(const bridge_tokens *t, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return 0;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    size_t n = strlen(token);
    while (n && token[n - 1] == ' ')
        n--;
    if (n < MIN_TOKEN)
        return 0;
    uint8_t h[32];
    crypto_hash_sha256(h, (const unsigned char *)token, n);
    int ok = 0;
    for (size_t i = 0; i < t->n; i++) /* every one, whatever matched */
        ok |= sodium_memcmp(h, t->hash[i], sizeof h) == 0;
    return ok;
}

const char *
bridge_schema_for(const bridge_config *cfg, const char *topic)
{
    for (size_t i = 0; i < cfg->n_schemas; i++)
        if (wire_pattern_match(cfg->schemas[i].pattern, topic))
            return cfg->schemas[i].type;
    return NULL;
}

/* One request's state across libmicrohttpd's calls. */
typedef struct request {
    char *body;
    size_t len, cap;
    int too_large;
} request;

static enum MHD_Result
send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"spbe-bridge\"");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* {"error":{"code":..,"status":..,"message":..[,"field":..]}} plus extra members. */
static json_t *error_body(unsigned status, const char *code, const char *field, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));

static json_t *
error_body(unsigned status, const char *code, const char *field, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_t *e =
        json_pack("{s:s, s:i, s:s}", "code", code, "status", (int)status, "message", message);
    if (e && field && *field)
        json_object_set_new(e, "field", json_string(field));
    return json_pack("{s:o}", "error", e);
}

static enum MHD_Result
send_error(struct MHD_Connection *c, unsigned status, const char *code, const char *message)
{
    return send_json(c, status, error_body(status, code, NULL, "%s", message));
}

/* The HTTP status of a broker's refusal. */
static unsigned
status_of(int code)
{
    switch (code) {
    case SPBE_OK:
        return MHD_HTTP_OK;
    case SPBE_BAD_REQUEST:
    case SPBE_INVALID_TOPIC:
    case SPBE_SCHEMA_MISMATCH:
        return MHD_HTTP_BAD_REQUEST;
    case SPBE_FORBIDDEN:
        return MHD_HTTP_FORBIDDEN;
    case SPBE_NOT_FOUND:
        return MHD_HTTP_NOT_FOUND;
    case SPBE_DUPLICATE:
        return MHD_HTTP_CONFLICT;
    case SPBE_TOO_LARGE:
        return MHD_HTTP_CONTENT_TOO_LARGE;
    case SPBE_RATE_LIMITED:
    case SPBE_QUOTA_EXCEEDED:
        return MHD_HTTP_TOO_MANY_REQUESTS;
    case SPBE_TIMEOUT:
        return MHD_HTTP_GATEWAY_TIMEOUT;
    case SPBE_STORAGE_FULL:
    case SPBE_UNAVAILABLE:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    case SPBE_BAD_SIGNATURE:
    case SPBE_UNKNOWN_SENDER:
    case SPBE_REVOKED:
        return MHD_HTTP_BAD_GATEWAY; /* the bridge's own identity is the problem */
    default:
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* The field a reason of schema_check names ("field 'a.b' must ..."), into out. */
static void
field_of(const char *why, char *out, size_t n)
{
    out[0] = '\0';
    const char *p = strstr(why, "field '");
    if (!p)
        return;
    p += 7;
    const char *e = strchr(p, '\'');
    if (e)
        snprintf(out, n, "%.*s", (int)(e - p), p);
}

static json_t *
receipt_json(const spbe_receipt *r, const char *schema)
{
    char id[2 * SPBE_ID_BYTES + 1], hash[2 * SPBE_HASH_BYTES + 1], root[2 * SPBE_HASH_BYTES + 1],
        ns[24], when[48];
    wire_hex_encode(r->message_id, SPBE_ID_BYTES, id);
    wire_hex_encode(r->message_hash, SPBE_HASH_BYTES, hash);
    wire_hex_encode(r->tree_root, SPBE_HASH_BYTES, root);
    snprintf(ns, sizeof ns, "%lld", (long long)r->accepted_ns);
    bridge_time(r->accepted_ns, when, sizeof when);
    json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:b}", "topic", r->topic,
                          "sequence", (json_int_t)r->sequence, "accepted_ns", ns, "accepted", when,
                          "message_id", id, "message_hash", hash, "leaf_index",
                          (json_int_t)r->leaf_index, "tree_size", (json_int_t)r->tree_size,
                          "tree_root", root, "signed_by_broker", r->signed_by_broker);
    if (j)
        json_object_set_new(j, "schema", schema ? json_string(schema) : json_null());
    return j;
}

/* The message id: Spbe-Message-Id (32 hex digits), else derived from Idempotency-Key,
 * else random. 0, or -1 for a malformed header. */
static int
message_id(struct MHD_Connection *c, uint8_t id[SPBE_ID_BYTES])
{
    const char *hex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Spbe-Message-Id");
    const char *key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (hex)
        return strlen(hex) == 2 * SPBE_ID_BYTES && wire_hex_decode(hex, id, SPBE_ID_BYTES) == 0
                   ? 0
                   : -1;
    if (key) {
        if (!*key || strlen(key) > 255)
            return -1;
        uint8_t h[32];
        crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key),
                           (const unsigned char *)"spbe-bridge idempotency", 23);
        memcpy(id, h, SPBE_ID_BYTES);
        return 0;
    }
    randombytes_buf(id, SPBE_ID_BYTES);
    return 0;
}

static int
is_json_type(const char *type)
{
    if (!type || !*type)
        return 1; /* JSON unless said otherwise */
    return strncasecmp(type, "application/json", 16) == 0 ||
           (strstr(type, "+json") != NULL && strncasecmp(type, "application/", 12) == 0);
}

static int
is_binary_type(const char *type)
{
    return type && (strncasecmp(type, "application/octet-stream", 24) == 0 ||
                    strncasecmp(type, "application/x-protobuf", 22) == 0 ||
                    strncasecmp(type, "application/protobuf", 20) == 0);
}

static enum MHD_Result
publish(bridge *b, struct MHD_Connection *c, const char *topic, request *rq)
{
    if (!wire_topic_valid(topic) || strncmp(topic, "$sys", 4) == 0)
        return send_json(c, MHD_HTTP_BAD_REQUEST,
                         error_body(MHD_HTTP_BAD_REQUEST, "INVALID_TOPIC", NULL,
                                    "'%.255s' is not a topic one may publish to", topic));
    const char *bound = bridge_schema_for(&b->cfg, topic);
    const char *named = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Spbe-Schema");
    if (named && !*named)
        named = NULL;
    if (bound && named && strcmp(bound, named) != 0)
        return send_json(c, MHD_HTTP_BAD_REQUEST,
                         error_body(MHD_HTTP_BAD_REQUEST, "SCHEMA_MISMATCH", NULL,
                                    "payloads on %s are %s, the Spbe-Schema header names %.255s",
                                    topic, bound, named));
    const char *type = bound ? bound : named;
    const ProtobufCMessageDescriptor *d = type ? schema_find(type) : NULL;
    if (type && !d)
        return send_json(c, MHD_HTTP_BAD_REQUEST,
                         error_body(MHD_HTTP_BAD_REQUEST, "SCHEMA_MISMATCH", NULL,
                                    "unknown schema type '%.255s'", type));
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

    pub_job job = {.topic = topic, .schema = type};
    if (message_id(c, job.id) != 0)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "BAD_REQUEST",
                          "Spbe-Message-Id must be 32 hex digits (Idempotency-Key at most 255 "
                          "characters)");
    uint8_t *packed = NULL;
    if (d && is_json_type(ctype)) {
        ProtobufCMessage *m;
        jsonpb_error e;
        int rc = jsonpb_from_text(d, rq->body ? rq->body : "", rq->len, &m, &e);
        if (rc == SPBE_OK) {
            char why[320] = "";
            if (schema_check_message(m, why, sizeof why) != SPBE_OK) {
                rc = e.code = SPBE_SCHEMA_MISMATCH;
                snprintf(e.message, sizeof e.message, "%s", why);
                field_of(why, e.field, sizeof e.field);
            } else {
                size_t n = protobuf_c_message_get_packed_size(m);
                packed = malloc(n ? n : 1);
                if (packed) {
                    protobuf_c_message_pack(m, packed);
                    job.payload = packed;
                    job.len = n;
                }
            }
            protobuf_c_message_free_unpacked(m, NULL);
        }
        if (rc != SPBE_OK)
            return send_json(c, MHD_HTTP_BAD_REQUEST,
                             error_body(MHD_HTTP_BAD_REQUEST, spbe_error_name(e.code), e.field,
                                        "payloads on %s are %s: %s", topic, d->name, e.message));
        if (!packed)
            return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "INTERNAL", "out of memory");
    } else if (d && is_binary_type(ctype)) {
        char why[320] = "";
        if (schema_check(d, (const uint8_t *)rq->body, rq->len, why, sizeof why) != SPBE_OK) {
            char field[160];
            field_of(why, field, sizeof field);
            return send_json(c, MHD_HTTP_BAD_REQUEST,
                             error_body(MHD_HTTP_BAD_REQUEST, "SCHEMA_MISMATCH", field,
                                        "payloads on %s are %s: %s", topic, d->name, why));
        }
        job.payload = (const uint8_t *)rq->body;
        job.len = rq->len;
    } else if (d) {
        return send_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST",
                          "a typed payload is application/json (or application/x-protobuf)");
    } else {
        job.payload = (const uint8_t *)(rq->body ? rq->body : "");
        job.len = rq->len;
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    job.deadline_ns =
        (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (int64_t)b->cfg.publish_timeout_ms * 1000000;
    int rc = publisher_submit(&b->pub, &job);
    free(packed);
    if (rc == SPBE_OK)
        return send_json(c, MHD_HTTP_OK, receipt_json(&job.receipt, type));

    char id[2 * SPBE_ID_BYTES + 1];
    wire_hex_encode(job.id, SPBE_ID_BYTES, id);
    unsigned status = status_of(rc);
    char field[160];
    field_of(job.error, field, sizeof field);
    json_t *body =
        error_body(status, spbe_error_name(rc), rc == SPBE_SCHEMA_MISMATCH ? field : NULL, "%s",
                   job.error[0] ? job.error : spbe_strerror(rc));
    json_t *e = json_object_get(body, "error");
    json_object_set_new(e, "message_id", json_string(id));
    json_object_set_new(
        e, "source",
        json_string(rc == SPBE_TIMEOUT || rc == SPBE_UNAVAILABLE ? "bridge" : "broker"));
    if (rc == SPBE_DUPLICATE) {
        char ns[24], when[48];
        snprintf(ns, sizeof ns, "%lld", (long long)job.receipt.accepted_ns);
        bridge_time(job.receipt.accepted_ns, when, sizeof when);
        json_object_set_new(e, "topic", json_string(job.receipt.topic));
        json_object_set_new(e, "sequence", json_integer((json_int_t)job.receipt.sequence));
        json_object_set_new(e, "accepted_ns", json_string(ns));
        json_object_set_new(e, "accepted", json_string(when));
    }
    bridge_log(rc == SPBE_DUPLICATE ? "info" : "warn", "publish_refused",
               "topic=%s code=%s status=%u", topic, spbe_error_name(rc), status);
    return send_json(c, status, body);
}

static enum MHD_Result
health(bridge *b, struct MHD_Connection *c)
{
    pthread_mutex_lock(&b->pub.mu);
    int connected = b->pub.connected && b->pub.running;
    pthread_mutex_unlock(&b->pub.mu);
    return send_json(c, connected ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                     json_pack("{s:s, s:b, s:s}", "status", connected ? "ok" : "unavailable",
                               "connected", connected, "version", BRIDGE_VERSION));
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    bridge *b = cls;
    request *rq = *con_cls;
    if (!rq) {
        /* before the body: refuse what needs no body to refuse */
        if (!bridge_token_ok(&b->tokens,
                             MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization")))
            return send_error(c, MHD_HTTP_UNAUTHORIZED, "UNAUTHORIZED",
                              "an 'Authorization: Bearer TOKEN' header with a valid token is "
                              "required");
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (length && strtoull(length, NULL, 10) > b->cfg.max_body) {
            char msg[128];
            snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", b->cfg.max_body);
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "TOO_LARGE", msg);
        }
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        atomic_fetch_add(&b->requests, 1);
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (rq->too_large || rq->len + n > b->cfg.max_body) {
            rq->too_large = 1;
            return MHD_YES;
        }
        if (rq->len + n + 1 > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 4096;
            while (cap < rq->len + n + 1)
                cap *= 2;
            char *p = realloc(rq->body, cap);
            if (!p)
                return MHD_NO;
            rq->body = p;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, upload_data, n);
        rq->len += n;
        rq->body[rq->len] = '\0';
        return MHD_YES;
    }
    if (rq->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", b->cfg.max_body);
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "TOO_LARGE", msg);
    }
    if (strncmp(url, PUBLISH_PREFIX, strlen(PUBLISH_PREFIX)) == 0) {
        if (strcmp(method, "POST") != 0)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "BAD_REQUEST", "publish with POST");
        return publish(b, c, url + strlen(PUBLISH_PREFIX), rq);
    }
    if (strcmp(url, "/v1/health") == 0) {
        if (strcmp(method, "GET") != 0)
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "BAD_REQUEST", "GET /v1/health");
        return health(b, c);
    }
    return send_error(c, MHD_HTTP_NOT_FOUND, "NOT_FOUND",
                      "no such endpoint: POST /v1/publish/<topic>, GET /v1/health");
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    (void)c, (void)toe;
    bridge *b = cls;
    request *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
        atomic_fetch_sub(&b->requests, 1);
    }
}

int
bridge_http_start(bridge *b, char *err, size_t err_len)
{
    char host[256];
    const char *listen = b->cfg.listen, *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1])
        return snprintf(err, err_len, "--listen '%s' is not HOST:PORT", listen), -1;
    size_t hn = (size_t)(colon - listen);
    if (listen[0] == '[' && hn >= 2 && listen[hn - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(hn - 2), listen + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)hn, listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai != 0)
        return snprintf(err, err_len, "--listen '%s': %s", listen, gai_strerror(gai)), -1;
    struct sockaddr_storage addr;
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    b->http = MHD_start_daemon(flags, 0, NULL, NULL, on_request, b, MHD_OPTION_SOCK_ADDR, &addr,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)b->cfg.max_connections,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, b, MHD_OPTION_END);
    if (!b->http)
        return snprintf(err, err_len, "cannot listen on %s (in use, or not an address here)",
                        listen),
               -1;
    return 0;
}

void
bridge_http_stop(bridge *b)
{
    if (!b->http)
        return;
    /* no new connections; the requests in progress get their answers (their publishes end
     * with a receipt or their timeout), then the rest is closed */
    MHD_socket listener = MHD_quiesce_daemon(b->http);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    struct timespec pause = {0, 10000000};
    for (long waited = 0;
         atomic_load(&b->requests) > 0 && waited < (long)b->cfg.publish_timeout_ms + 2000;
         waited += 10)
        nanosleep(&pause, NULL);
    MHD_stop_daemon(b->http);
    b->http = NULL;
}
