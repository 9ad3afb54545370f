/*
 * broker.c - the broker's I/O thread: ZAP authentication, sessions, the command
 * handlers, group commit of publishes and fan-out.
 *
 * One loop owns the ROUTER socket, the ZAP socket, the registry and the router.
 * Publishes that arrive together are checked, verified and appended in one LMDB
 * transaction with one durable commit; receipts go out only after that commit
 * returns, so a positive receipt always means the message is on disk.
 */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "consumer.h"
#include "identity.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "router.h"
#include "schema.h"
#include "service.h"
#include "workpool.h"
#include "writer.h"
#include "spbe/errors.h"
#include "store.h"
#include "wire.h"

#define DRAIN_MAX 1024        /* messages read per loop turn (one commit group at most) */
#define PUBLISH_BATCH_MAX 256 /* messages in one PublishBatch; a group keeps room for one */
#define GROUPS 3         /* commit groups: one with the writer, one filling, one sending receipts */
#define PUMP_BUDGET 2048 /* catch-up deliveries per loop turn */
#define ROUTING_MAX 256
#define BATCH_BYTES 65536 /* a FrameBatch holds about this much; a bigger message alone */
#define BATCH_HEAD 16     /* room before a batch's fields for the frame's header */
#define LETTERS_MAX 256   /* dead letters committed with one group (consumer.c's bound) */
#define REQUEST_TIMEOUT_DEFAULT_MS 30000
#define REQUEST_TIMEOUT_MAX_MS 300000
#define RECEIPT_PATH_MAX 12 /* a group's receipt tree has at most 2^11 leaves */

typedef struct session {
    uint8_t routing[ROUTING_MAX];
    size_t routing_len;
    char member[WIRE_MEMBER_MAX_BYTES + 1];
    int revoked;
    int64_t last_seen_ms;
    int64_t opened_ns;
    uint64_t received, delivered; /* signed messages from it, deliveries to it */
    uint32_t batch_max;           /* receipts and deliveries per FrameBatch (Hello; <2: none) */
    uint8_t *batch;               /* the open batch: its fields from BATCH_HEAD on */
    size_t batch_len, batch_cap;  /* batch_len: the fields' bytes */
    uint32_t batch_n, batch_deliveries; /* entries in it, and how many are deliveries */
    int batch_queued;                   /* on the broker's list of open batches */
    int gone;                           /* ZeroMQ no longer reaches it: deliveries fail at once */
    struct session *batch_next;
} session;

/* What a signed message arriving from a client is: a publish, a request to a service,
 * or a server's reply to one. All three are checked, stored and receipted alike. */
enum signed_kind { KIND_PUBLISH, KIND_REQUEST, KIND_RESPOND };

typedef struct pending_publish {
    uint8_t routing[ROUTING_MAX];
    size_t routing_len;
    uint64_t request_id;
    enum signed_kind kind;
    uint64_t ref;        /* KIND_RESPOND: the request it answers */
    uint32_t timeout_ms; /* KIND_REQUEST */
    char service[WIRE_TOPIC_MAX_BYTES + 1];
    char member[WIRE_MEMBER_MAX_BYTES + 1]; /* the session's */
    zmq_msg_t body;
    Spbe__V1__SignedMessage *signed_message;
    Spbe__V1__Message *message;
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t sender_key[WIRE_KEY_BYTES];
    int code;          /* after verification, then after the commit */
    const char *topic; /* for the receipt: the original's on DUPLICATE */
    char original_topic[WIRE_TOPIC_MAX_BYTES + 1];
    store_append_item *item;         /* NULL when refused before the commit */
    Spbe__V1__SignedReceipt receipt; /* signed by a worker; receipt.data freed after send */
    /* the receipt's proof when the group's receipts are signed as one batch */
    Spbe__V1__BatchProof receipt_proof;
    ProtobufCBinaryData receipt_path_items[RECEIPT_PATH_MAX];
    uint8_t receipt_path[RECEIPT_PATH_MAX][WIRE_HASH_BYTES];
} pending_publish;

/* Publishes that share one durable commit. */
typedef struct group {
    pending_publish batch[DRAIN_MAX];
    store_append_item items[DRAIN_MAX + LETTERS_MAX];
    size_t n_batch;
    size_t n_items;           /* items[0, n_items) publishes, then the dead letters */
    consumer_batch consumers; /* consumer bookkeeping committed with the group */
    writer_job job;
    uint64_t tree_size; /* the audit log's tree once the group is committed */
    uint8_t tree_root[WIRE_HASH_BYTES];
    uint8_t receipt_leaves[DRAIN_MAX][WIRE_HASH_BYTES]; /* with batch-signed receipts */
    size_t n_verified; /* batch[0, n_verified) have had their signatures checked */
    uint64_t check_ns, verify_ns;
    struct group *next; /* in the free list */
} group;

/* Time spent per stage of the publish path, for the stop log and benchmarks. */
typedef struct stage_clock {
    uint64_t messages, groups;
    uint64_t check_ns, verify_ns, commit_ns, receipt_ns, fanout_ns;
} stage_clock;

struct broker {
    broker_config config;
    store *store;
    registry *registry;
    router *router;
    identity key;      /* the broker's own */
    uint64_t head_end; /* the tree's size after the last signed head (and its own leaf) */
    void *ctx, *socket, *zap;
    session **sessions; /* in no order; removal moves the last into the gap */
    size_t n_sessions, cap_sessions;
    session *batched;      /* sessions with an open batch (receipts, deliveries): sent each turn */
    session **by_routing;  /* the same sessions by routing id: open addressing */
    size_t cap_by_routing; /* a power of two, at least twice n_sessions (0: none yet) */
    group *groups;         /* GROUPS of them */
    group *free_groups;
    group *filling; /* receives publishes until the writer is free to take it */
    int in_writer;  /* groups handed to the writer */
    writer *writer;
    metrics m;                   /* counters, also read by the HTTP thread */
    log_limit reject_log;        /* rejections are logged, at most so many a second */
    char schema_why[400];        /* the reason of the last SCHEMA_MISMATCH */
    struct rate_bucket *buckets; /* per member, with --member-rate */
    size_t n_buckets, cap_buckets;
    http_server *http; /* NULL with --http off */
    int64_t next_snapshot_ms;
    int64_t next_expire_ms, next_head_ms; /* session expiry and signed heads are due */
    int pump;                             /* last turn's fan-out: 1 more now, 2 soon, 0 done */
    workpool *workers;
    wire_sigcache *sigcache; /* batch roots verified (publishers' batch signatures) */
    stage_clock clock;
    consumer_set *consumers;
    service_table *services;
    uint64_t requests, responses, request_timeouts;
};

static void requests_fail(broker *b, pending_request *list, int code, const char *reason);

/* ------------------------------------------------------------ helpers */

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ sessions by routing id
 *
 * Every frame a client sends is matched to its session by ZeroMQ's routing id, so the
 * lookup stays O(1) however many sessions are open: linear probing in a table at most
 * half full, removal by moving the entries after the gap back (no tombstones). */

static size_t
routing_slot(const broker *b, const uint8_t *routing, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ routing[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29)) & (b->cap_by_routing - 1);
}

static session *
session_find(broker *b, const uint8_t *routing, size_t len)
{
    if (!b->cap_by_routing)
        return NULL;
    for (size_t i = routing_slot(b, routing, len);; i = (i + 1) & (b->cap_by_routing - 1)) {
        session *s = b->by_routing[i];
        if (!s)
            return NULL;
        if (s->routing_len == len && memcmp(s->routing, routing, len) == 0)
            return s;
    }
}

static void
routing_insert(broker *b, session *s)
{
    size_t i = routing_slot(b, s->routing, s->routing_len);
    while (b->by_routing[i])
        i = (i + 1) & (b->cap_by_routing - 1);
    b->by_routing[i] = s;
}

/* Makes room in the index for one more session: -1 when out of memory. */
static int
routing_reserve(broker *b)
{
    if (2 * (b->n_sessions + 1) <= b->cap_by_routing)
        return 0;
    size_t cap = b->cap_by_routing ? 2 * b->cap_by_routing : 64;
    session **table = calloc(cap, sizeof *table);
    if (!table)
        return -1;
    free(b->by_routing);
    b->by_routing = table;
    b->cap_by_routing = cap;
    for (size_t i = 0; i < b->n_sessions; i++)
        routing_insert(b, b->sessions[i]);
    return 0;
}

static void
routing_remove(broker *b, const session *s)
{
    if (!b->cap_by_routing)
        return;
    size_t mask = b->cap_by_routing - 1, i = routing_slot(b, s->routing, s->routing_len);
    while (b->by_routing[i] != s) {
        if (!b->by_routing[i])
            return;
        i = (i + 1) & mask;
    }
    b->by_routing[i] = NULL;
    /* the entries after the gap that would not be found past it move back into it */
    for (size_t j = (i + 1) & mask; b->by_routing[j]; j = (j + 1) & mask) {
        size_t home = routing_slot(b, b->by_routing[j]->routing, b->by_routing[j]->routing_len);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            b->by_routing[i] = b->by_routing[j];
            b->by_routing[j] = NULL;
            i = j;
        }
    }
}

static void
session_close(broker *b, session *s)
{
    router_drop_owner(b->router, s);
    if (b->consumers)
        consumer_detach_session(b->consumers, s);
    if (b->services)
        requests_fail(b, service_drop_session(b->services, s), SPBE_UNAVAILABLE,
                      "the serving member went away before answering");
    routing_remove(b, s);
    for (session **pp = &b->batched; *pp; pp = &(*pp)->batch_next)
        if (*pp == s) {
            *pp = s->batch_next;
            break;
        }
    free(s->batch);
    for (size_t i = 0; i < b->n_sessions; i++)
        if (b->sessions[i] == s) {
            b->sessions[i] = b->sessions[--b->n_sessions];
            break;
        }
    free(s);
}

/* Sends [routing][frame][body?] without blocking. Returns 0, EAGAIN or another errno. */
static int
send_frame(broker *b, const uint8_t *routing, size_t routing_len, const Spbe__V1__BrokerFrame *f,
           const uint8_t *body, size_t body_len)
{
    uint8_t stack[1024];
    size_t len = spbe__v1__broker_frame__get_packed_size(f);
    uint8_t *buf = len <= sizeof stack ? stack : malloc(len);
    if (!buf)
        return ENOMEM;
    spbe__v1__broker_frame__pack(f, buf);
    int rc = 0;
    if (zmq_send(b->socket, routing, routing_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        rc = errno;
    else if (zmq_send(b->socket, buf, len, (body ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
        rc = errno;
    else if (body && zmq_send(b->socket, body, body_len, ZMQ_DONTWAIT) < 0)
        rc = errno;
    if (buf != stack)
        free(buf);
    return rc;
}

static void
send_reply(broker *b, const uint8_t *routing, size_t routing_len, Spbe__V1__Reply *reply,
           const uint8_t *body, size_t body_len)
{
    Spbe__V1__BrokerFrame f = SPBE__V1__BROKER_FRAME__INIT;
    f.body_case = SPBE__V1__BROKER_FRAME__BODY_REPLY;
    f.reply = reply;
    int rc = send_frame(b, routing, routing_len, &f, body, body_len);
    if (rc)
        log_event(LOG_WARN, "reply_dropped", "request=%llu reason=\"%s\"",
                  (unsigned long long)reply->request_id, zmq_strerror(rc));
}

static void
send_error(broker *b, const uint8_t *routing, size_t routing_len, uint64_t request_id, int code,
           const char *reason)
{
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.code = (Spbe__V1__ErrorCode)code;
    reply.error = (char *)(reason ? reason : spbe_strerror(code));
    send_reply(b, routing, routing_len, &reply, NULL, 0);
}

static int batch_flush(broker *b, session *s);

static void
send_goodbye(broker *b, session *s, int code, const char *reason)
{
    batch_flush(b, s); /* what was gathered for it goes first */
    Spbe__V1__Goodbye bye = SPBE__V1__GOODBYE__INIT;
    bye.code = (Spbe__V1__ErrorCode)code;
    bye.reason = (char *)reason;
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_GOODBYE;
    ev.goodbye = &bye;
    Spbe__V1__BrokerFrame f = SPBE__V1__BROKER_FRAME__INIT;
    f.body_case = SPBE__V1__BROKER_FRAME__BODY_EVENT;
    f.event = &ev;
    send_frame(b, s->routing, s->routing_len, &f, NULL, 0);
}

static size_t
varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t
varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Sends a session's open batch as one frame, BrokerFrame{batch: FrameBatch}, its header
 * written in the room before the fields. 0 (sent, or nothing to send), EAGAIN (its queue
 * is full: the batch stays for a later turn) or another errno (the peer is gone: the
 * batch is dropped, as ZeroMQ drops what it queued for it). */
static int
batch_flush(broker *b, session *s)
{
    if (!s->batch_n)
        return 0;
    size_t head = 1 + varint_len(s->batch_len);
    uint8_t *start = s->batch + BATCH_HEAD - head;
    start[0] = 0x1a; /* BrokerFrame.batch: field 3, length-delimited */
    varint_put(start + 1, s->batch_len);
    int rc = 0;
    if (zmq_send(b->socket, s->routing, s->routing_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(b->socket, start, head + s->batch_len, ZMQ_DONTWAIT) < 0)
        rc = errno;
    if (rc == EAGAIN)
        return rc;
    if (rc) {
        s->gone = 1;
        log_event(LOG_INFO, "session_gone", "member=%s dropped=%u", s->member, s->batch_n);
    } else if (s->batch_deliveries) {
        metrics_add(&b->m.delivery_frames, 1);
    }
    s->batch_len = 0;
    s->batch_n = s->batch_deliveries = 0;
    if (s->batch_cap > BATCH_BYTES) { /* grown for one big message: not kept */
        free(s->batch);
        s->batch = NULL;
        s->batch_cap = 0;
    }
    return rc;
}

/* Sends every open batch; those that cannot go yet stay on the list. */
static void
batches_flush(broker *b)
{
    session **pp = &b->batched;
    while (*pp) {
        session *s = *pp;
        if (batch_flush(b, s) == EAGAIN) {
            pp = &s->batch_next;
            continue;
        }
        *pp = s->batch_next;
        s->batch_queued = 0;
    }
}

/* Room for need more bytes in the session's open batch: the batch goes first when full.
 * A pointer to write them at, or NULL with *rc EAGAIN (the batch cannot go yet; out of
 * memory) or EHOSTUNREACH. */
static uint8_t *
batch_room(broker *b, session *s, size_t need, int *rc)
{
    *rc = s->gone ? EHOSTUNREACH : 0;
    if (!*rc && s->batch_n &&
        (s->batch_n >= s->batch_max || BATCH_HEAD + s->batch_len + need > BATCH_BYTES))
        *rc = batch_flush(b, s);
    if (*rc)
        return NULL;
    if (BATCH_HEAD + s->batch_len + need > s->batch_cap) {
        /* doubling from 4 KiB: a session that gets little keeps a small buffer */
        size_t cap = s->batch_cap ? 2 * s->batch_cap : 4096;
        if (cap > BATCH_BYTES)
            cap = BATCH_BYTES;
        if (cap < BATCH_HEAD + s->batch_len + need)
            cap = BATCH_HEAD + s->batch_len + need;
        uint8_t *grown = realloc(s->batch, cap);
        if (!grown) {
            *rc = EAGAIN;
            return NULL;
        }
        s->batch = grown;
        s->batch_cap = cap;
    }
    if (!s->batch_queued) {
        s->batch_next = b->batched;
        b->batched = s;
        s->batch_queued = 1;
    }
    return s->batch + BATCH_HEAD + s->batch_len;
}

/* Adds a delivery to the session's open batch (sent at the end of the loop turn, or when
 * full): FrameBatch fields 2 (the Delivery) and 3 (the stored bytes), copied, so that
 * the store's pages are not held. 0, EAGAIN or EHOSTUNREACH, like a send. */
static int
batch_add_delivery(broker *b, session *s, const Spbe__V1__Delivery *d, const uint8_t *data,
                   size_t len)
{
    size_t dlen = spbe__v1__delivery__get_packed_size(d);
    size_t need = 1 + varint_len(dlen) + dlen + 1 + varint_len(len) + len;
    int rc;
    uint8_t *p = batch_room(b, s, need, &rc);
    if (!p)
        return rc;
    *p++ = 0x12; /* FrameBatch.deliveries */
    p += varint_put(p, dlen);
    p += spbe__v1__delivery__pack(d, p);
    *p++ = 0x1a; /* FrameBatch.messages */
    p += varint_put(p, len);
    memcpy(p, data, len);
    s->batch_len += need;
    s->batch_n++;
    s->batch_deliveries++;
    metrics_add(&b->m.delivered, 1);
    s->delivered++;
    return 0;
}

/* Adds a reply (a publish's receipt) to the session's open batch: FrameBatch field 1. */
static int
batch_add_reply(broker *b, session *s, const Spbe__V1__Reply *reply)
{
    size_t rlen = spbe__v1__reply__get_packed_size(reply);
    size_t need = 1 + varint_len(rlen) + rlen;
    int rc;
    uint8_t *p = batch_room(b, s, need, &rc);
    if (!p)
        return rc;
    *p++ = 0x0a; /* FrameBatch.replies */
    p += varint_put(p, rlen);
    spbe__v1__reply__pack(reply, p);
    s->batch_len += need;
    s->batch_n++;
    return 0;
}

/* One delivery to a session: into its open batch if it asked for batches, otherwise a
 * Delivery event with the stored bytes as its body frame; logs a vanished peer. */
static int
send_delivery_event(broker *b, session *s, Spbe__V1__Delivery *d, const uint8_t *data, size_t len)
{
    if (s->batch_max > 1)
        return batch_add_delivery(b, s, d, data, len);
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_DELIVERY;
    ev.delivery = d;
    Spbe__V1__BrokerFrame f = SPBE__V1__BROKER_FRAME__INIT;
    f.body_case = SPBE__V1__BROKER_FRAME__BODY_EVENT;
    f.event = &ev;
    int rc = send_frame(b, s->routing, s->routing_len, &f, data, len);
    if (rc == 0) {
        metrics_add(&b->m.delivered, 1);
        metrics_add(&b->m.delivery_frames, 1);
        s->delivered++;
    }
    if (rc == EHOSTUNREACH) /* the router or the consumer lets go; the idle timer the session */
        log_event(LOG_INFO, "session_gone", "member=%s consumer=%s", s->member,
                  d->consumer[0] ? d->consumer : "-");
    return rc;
}

static int
send_delivery(void *ctx, void *owner, uint64_t subscription_id, const char *topic,
              uint64_t sequence, int64_t accepted_ns, const uint8_t *data, size_t len)
{
    Spbe__V1__Delivery d = SPBE__V1__DELIVERY__INIT;
    d.subscription_id = subscription_id;
    d.topic = (char *)topic;
    d.sequence = sequence;
    d.accepted_ns = accepted_ns;
    return send_delivery_event(ctx, owner, &d, data, len);
}

/* The consumers' way out: a Delivery that names the consumer, to acknowledge. */
static int
send_consumer_delivery(void *ctx, void *owner, uint64_t attachment, const char *consumer,
                       const char *topic, uint64_t sequence, int64_t accepted_ns,
                       uint32_t delivery_count, int64_t ack_deadline_ns, const uint8_t *data,
                       size_t len)
{
    Spbe__V1__Delivery d = SPBE__V1__DELIVERY__INIT;
    d.subscription_id = attachment;
    d.topic = (char *)topic;
    d.sequence = sequence;
    d.accepted_ns = accepted_ns;
    d.consumer = (char *)consumer;
    d.delivery_count = delivery_count;
    d.ack_deadline_ns = ack_deadline_ns;
    return send_delivery_event(ctx, owner, &d, data, len);
}

/* ------------------------------------------------------------ first start */

static int
join_path(char *out, size_t n, const char *dir, const char *file)
{
    return snprintf(out, n, "%s/%s", dir, file) >= (int)n ? -1 : 0;
}

static int
broker_keys(broker *b, char *err, size_t err_len)
{
    char path[1200];
    join_path(path, sizeof path, b->config.data_dir, "broker.key");
    int rc = identity_load(path, &b->key, err, err_len);
    if (rc == SPBE_OK)
        return 0;
    if (rc != SPBE_NOT_FOUND)
        return -1;

    /* first start: the broker's key pair and an admin identity */
    identity_generate("spbe/broker", &b->key);
    if (identity_save(&b->key, path, 0, err, err_len) != SPBE_OK)
        return -1;
    join_path(path, sizeof path, b->config.data_dir, "broker.pub");
    identity_save_public(&b->key, path, 1, err, err_len);

    identity admin;
    identity_generate("spbe/admin", &admin);
    snprintf(admin.broker, sizeof admin.broker, "%s", b->config.endpoint);
    char *wild = strstr(admin.broker, "://*:");
    if (!wild)
        wild = strstr(admin.broker, "://0.0.0.0:");
    if (wild) {
        const char *port = strrchr(b->config.endpoint, ':');
        snprintf(wild, sizeof admin.broker - (size_t)(wild - admin.broker), "://127.0.0.1%s", port);
    }
    memcpy(admin.broker_key, b->key.public_key, WIRE_KEY_BYTES);
    admin.has_broker_key = 1;

    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    char *roles[] = {"admin", "ops"};
    rights.roles = roles;
    rights.n_roles = 2;
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = admin.member;
    m.public_key.data = admin.public_key;
    m.public_key.len = WIRE_KEY_BYTES;
    m.rights = &rights;
    m.created_ns = wire_now_ns();
    if (store_member_put(b->store, &m) != SPBE_OK) {
        snprintf(err, err_len, "cannot register the admin member");
        return -1;
    }
    join_path(path, sizeof path, b->config.data_dir, "admin.key");
    if (identity_save(&admin, path, 1, err, err_len) != SPBE_OK)
        return -1;
    log_event(LOG_INFO, "first_start", "admin_identity=%s broker_key=%s/broker.pub", path,
              b->config.data_dir);
    return 0;
}

/* ------------------------------------------------------------ setup */

static void metrics_snapshot_publish(broker *b);

int
broker_new(const broker_config *config, broker **out, char *err, size_t err_len)
{
    *out = NULL;
    if (wire_init() != SPBE_OK) {
        snprintf(err, err_len, "libsodium failed to initialise");
        return -1;
    }
    broker *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    metrics_init(&b->m);
    b->reject_log = (log_limit){.event = "rejections", .per_second = 50};
    b->config = *config;
    b->groups = calloc(GROUPS, sizeof *b->groups);
    for (int i = 0; b->groups && i < GROUPS; i++) {
        b->groups[i].next = b->free_groups;
        b->free_groups = &b->groups[i];
    }
    store_options so = {.max_map_bytes = config->max_store_bytes};
    if (!b->groups || store_open(config->data_dir, &so, &b->store, err, err_len) != SPBE_OK)
        goto fail;
    if (broker_keys(b, err, err_len) != 0)
        goto fail;
    if (registry_load(b->store, &b->registry) != SPBE_OK) {
        snprintf(err, err_len, "cannot load the member registry");
        goto fail;
    }
    b->router = router_new(b->store, send_delivery, b);
    b->consumers = consumer_set_new(b->store, &b->key, send_consumer_delivery, b);
    if (b->consumers)
        consumer_set_defaults(b->consumers, config->consumer_ack_wait_ms,
                              config->consumer_max_deliveries, config->consumer_max_in_flight);
    b->services = service_table_new();
    b->workers = workpool_new(0);
    b->sigcache = wire_sigcache_new();
    b->ctx = zmq_ctx_new();
    if (!b->router || !b->ctx || !b->consumers || !b->services || !b->sigcache)
        goto fail_msg;
    if (consumer_set_load(b->consumers) != SPBE_OK) {
        snprintf(err, err_len, "cannot load the consumers");
        goto fail;
    }
    { /* the last signed head and its own leaf: no new head until the tree grows */
        store_reader *rd;
        uint64_t head = 0, size = 0;
        const uint8_t *data;
        size_t len;
        uint8_t root[WIRE_HASH_BYTES];
        store_tree_head(b->store, &size, root);
        if (store_reader_begin(b->store, &rd) == SPBE_OK) {
            /* covered by the last head, or all but that head's own message (or, after a key
             * rotation, the rotation's head itself): never sign a size twice */
            if (store_head_latest(rd, &head, &data, &len) == SPBE_OK &&
                (size == head || size == head + 1))
                b->head_end = size;
            store_reader_end(&rd);
        }
    }
    b->writer = writer_new(b->ctx, b->store, config->dedup_window_ns, b->config.retention,
                           b->config.n_retention);
    if (!b->writer)
        goto fail_msg;

    /* ZAP first: the ROUTER's handshakes ask it */
    b->zap = zmq_socket(b->ctx, ZMQ_REP);
    if (!b->zap || zmq_bind(b->zap, "inproc://zeromq.zap.01") != 0)
        goto fail_msg;

    uint8_t curve_secret[32];
    wire_curve_secret(b->key.secret_key, curve_secret);
    int one = 1, zero = 0, hwm = 20000;
    int maxmsg = (int)(config->max_message_bytes * 2 + (1 << 20));
    b->socket = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (!b->socket || zmq_setsockopt(b->socket, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(b->socket, ZMQ_CURVE_SECRETKEY, curve_secret, 32) ||
        zmq_setsockopt(b->socket, ZMQ_ZAP_DOMAIN, "spbe", 4) ||
        zmq_setsockopt(b->socket, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(b->socket, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(b->socket, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(b->socket, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(b->socket, ZMQ_HANDSHAKE_IVL, &config->handshake_timeout_ms,
                       sizeof config->handshake_timeout_ms))
        goto fail_msg;
    int64_t maxmsg64 = maxmsg;
    zmq_setsockopt(b->socket, ZMQ_MAXMSGSIZE, &maxmsg64, sizeof maxmsg64);
    memset(curve_secret, 0, sizeof curve_secret);
    if (zmq_bind(b->socket, config->endpoint) != 0) {
        snprintf(err, err_len, "cannot bind %s: %s", config->endpoint, zmq_strerror(errno));
        goto fail;
    }
    if (config->http[0]) {
        b->http = http_start(config->http, &b->m, b->store, SPBE_VERSION, err, err_len);
        if (!b->http)
            goto fail;
        metrics_snapshot_publish(b);
    }
    char pk[2 * WIRE_KEY_BYTES + 1];
    wire_hex_encode(b->key.public_key, WIRE_KEY_BYTES, pk);
    b->next_expire_ms = now_ms() + b->config.heartbeat_ms;
    b->next_head_ms = now_ms() + b->config.tree_head_ms;
    log_event(LOG_INFO, "started", "endpoint=%s http=%s data=%s broker_key=%s version=%s pid=%ld",
              config->endpoint, config->http[0] ? config->http : "off", config->data_dir, pk,
              SPBE_VERSION, (long)getpid());
    *out = b;
    return 0;
fail_msg:
    snprintf(err, err_len, "cannot set up sockets: %s", zmq_strerror(errno));
fail:
    broker_destroy(&b);
    return -1;
}

void
broker_destroy(broker **bp)
{
    if (!bp || !*bp)
        return;
    broker *b = *bp;
    http_stop(&b->http); /* it reads the store and the counters: first to go */
    while (b->n_sessions)
        session_close(b, b->sessions[0]);
    free(b->sessions);
    free(b->by_routing);
    router_destroy(&b->router);
    writer_destroy(&b->writer);
    consumer_set_destroy(&b->consumers);
    service_table_destroy(&b->services);
    workpool_destroy(&b->workers);
    wire_sigcache_free(&b->sigcache);
    if (b->socket)
        zmq_close(b->socket);
    if (b->zap)
        zmq_close(b->zap);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    registry_destroy(&b->registry);
    store_close(&b->store);
    free(b->groups);
    free(b->buckets);
    metrics_destroy(&b->m);
    memset(&b->key, 0, sizeof b->key);
    free(b);
    *bp = NULL;
}

/* ------------------------------------------------------------ ZAP */

/* Admits registered keys (revoked ones too: HELLO then answers REVOKED, which tells
 * the client why, where a refused handshake would only say "no"). */
static void
zap_handle(broker *b)
{
    zmq_msg_t frames[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&frames[n]);
        if (zmq_msg_recv(&frames[n], b->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frames[n]);
            return;
        }
        more = zmq_msg_more(&frames[n]);
        n++;
    }
    const char *status = "400", *text = "unknown key", *user = "";
    char address[64] = "";
    if (n >= 7 && zmq_msg_size(&frames[5]) == 5 &&
        memcmp(zmq_msg_data(&frames[5]), "CURVE", 5) == 0 && zmq_msg_size(&frames[6]) == 32) {
        const Spbe__V1__Member *m =
            registry_find_by_curve_key(b->registry, zmq_msg_data(&frames[6]));
        if (m) {
            status = "200";
            text = "OK";
            user = m->name;
        }
    }
    if (n >= 4) {
        size_t len = zmq_msg_size(&frames[3]) < sizeof address - 1 ? zmq_msg_size(&frames[3])
                                                                   : sizeof address - 1;
        memcpy(address, zmq_msg_data(&frames[3]), len);
        address[len] = '\0';
    }
    if (status[0] != '2') {
        metrics_rejected(&b->m, SPBE_UNKNOWN_SENDER);
        if (log_allow(&b->reject_log))
            log_event(LOG_WARN, "handshake_refused", "address=%s code=UNKNOWN_SENDER reason=\"%s\"",
                      address, text);
    }
    const char *version = "1.0";
    send_uninterrupted(b->zap, version, 3, ZMQ_SNDMORE);
    send_uninterrupted(b->zap, n >= 2 ? zmq_msg_data(&frames[1]) : "",
                       n >= 2 ? zmq_msg_size(&frames[1]) : 0, ZMQ_SNDMORE);
    send_uninterrupted(b->zap, status, 3, ZMQ_SNDMORE);
    send_uninterrupted(b->zap, text, strlen(text), ZMQ_SNDMORE);
    send_uninterrupted(b->zap, user, strlen(user), ZMQ_SNDMORE);
    send_uninterrupted(b->zap, "", 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

/* ------------------------------------------------------------ publish */

/* Where an accepted message stands in the audit log, for its receipt. */
typedef struct receipt_audit {
    uint64_t leaf_index, tree_size;
    const uint8_t *tree_root;
} receipt_audit;

/* Builds the receipt of one publish into *out, signed with the broker's key, or (sign 0)
 * encoded with room after it for its batch's signature (out->receipt.data is NULL if
 * that failed; the caller frees it). audit may be NULL. Thread-safe. */
static void
receipt_make(const broker *b, int code, const char *topic, uint64_t sequence, int64_t accepted_ns,
             const uint8_t *hash, const Spbe__V1__Message *m, const receipt_audit *audit, int sign,
             Spbe__V1__SignedReceipt *out)
{
    Spbe__V1__Receipt r = SPBE__V1__RECEIPT__INIT;
    r.code = (Spbe__V1__ErrorCode)code;
    r.topic = (char *)(topic ? topic : m && m->topic ? m->topic : "");
    r.sequence = sequence;
    r.accepted_ns = accepted_ns;
    if (hash) {
        r.message_hash.data = (uint8_t *)hash;
        r.message_hash.len = WIRE_HASH_BYTES;
    }
    if (m) {
        r.message_id = m->id;
        r.sender = m->sender;
    }
    r.broker = (char *)b->config.name;
    r.issued_ns = wire_now_ns();
    if (audit) {
        r.leaf_index = audit->leaf_index;
        r.tree_size = audit->tree_size;
        r.tree_root.data = (uint8_t *)audit->tree_root;
        r.tree_root.len = WIRE_HASH_BYTES;
    }
    int rc = sign ? wire_receipt_sign(&r, b->key.secret_key, out) : wire_receipt_encode(&r, out);
    if (rc != SPBE_OK)
        out->receipt.data = NULL;
}

/* Sends a publish's reply carrying its signed receipt, and frees the receipt. With
 * batch, into the session's open batch if it takes batches (a commit group's receipts:
 * they go together at the end of the group), otherwise in a frame of its own. */
static void
receipt_reply(broker *b, const uint8_t *routing, size_t routing_len, uint64_t request_id, int code,
              const char *reason, Spbe__V1__SignedReceipt *receipt, int batch)
{
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.code = (Spbe__V1__ErrorCode)code;
    reply.error = (char *)(code == SPBE_OK ? "" : reason ? reason : spbe_strerror(code));
    if (receipt->receipt.data) {
        reply.body_case = SPBE__V1__REPLY__BODY_RECEIPT;
        reply.receipt = receipt;
    }
    session *s = batch ? session_find(b, routing, routing_len) : NULL;
    if (s && s->batch_max > 1) {
        int rc = batch_add_reply(b, s, &reply);
        if (rc)
            log_event(LOG_WARN, "reply_dropped", "request=%llu reason=\"%s\"",
                      (unsigned long long)request_id, zmq_strerror(rc));
    } else {
        send_reply(b, routing, routing_len, &reply, NULL, 0);
    }
    free(receipt->receipt.data);
    receipt->receipt.data = NULL;
}

static void
receipt_send(broker *b, const uint8_t *routing, size_t routing_len, uint64_t request_id, int code,
             const char *reason, Spbe__V1__SignedReceipt *receipt)
{
    receipt_reply(b, routing, routing_len, request_id, code, reason, receipt, 0);
}

static void
reject_publish(broker *b, session *s, uint64_t request_id, int code, const char *reason,
               const Spbe__V1__Message *m, const uint8_t *hash)
{
    metrics_rejected(&b->m, code);
    char topic[WIRE_TOPIC_MAX_BYTES + 1]; /* the topic may be the invalid one refused */
    if (log_allow(&b->reject_log))
        log_event(LOG_INFO, "publish_rejected", "member=%s topic=%s code=%s reason=\"%s\"",
                  s->member, log_clean(m && m->topic ? m->topic : "-", 0, topic, sizeof topic),
                  spbe_error_name(code), reason);
    Spbe__V1__SignedReceipt receipt;
    receipt_make(b, code, NULL, 0, 0, hash, m, NULL, 1, &receipt);
    receipt_send(b, s->routing, s->routing_len, request_id, code, reason, &receipt);
}

/* What the command says besides the signed message: kind-specific checks. */
typedef struct admission {
    enum signed_kind kind;
    const char *service; /* KIND_REQUEST */
    uint32_t timeout_ms; /* KIND_REQUEST */
    uint64_t ref;        /* KIND_RESPOND */
} admission;

/* The type bound to a topic (service NULL) or to a service's requests (reply 0) or
 * replies (reply 1); NULL when none is. */
static const ProtobufCMessageDescriptor *
schema_bound(const broker *b, const char *topic, const char *service, int reply)
{
    for (size_t i = 0; i < b->config.n_schemas; i++) {
        const schema_binding *sb = &b->config.schemas[i];
        if (service ? sb->reply && strcmp(sb->pattern, service) == 0
                    : !sb->reply && wire_pattern_match(sb->pattern, topic))
            return reply ? sb->reply : sb->type;
    }
    return NULL;
}

/* The message's schema and payload against the type bound to them (none: SPBE_OK). */
static int
schema_admit(broker *b, const ProtobufCMessageDescriptor *type, const Spbe__V1__Message *m,
             const char **reason)
{
    if (!type)
        return SPBE_OK;
    char why[320];
    if (strcmp(m->schema, type->name) != 0)
        snprintf(why, sizeof why, "the message names its schema '%.128s'", m->schema);
    else if (schema_check(type, m->payload.data, m->payload.len, why, sizeof why) == SPBE_OK)
        return SPBE_OK;
    snprintf(b->schema_why, sizeof b->schema_why, "payloads here are %s: %s", type->name, why);
    *reason = b->schema_why;
    return SPBE_SCHEMA_MISMATCH;
}

/* The kind-specific checks of a decoded message from a registered, live sender:
 * SPBE_OK or a code with *reason. */
static int
admit_kind(broker *b, session *s, const admission *a, const Spbe__V1__Member *sender,
           const Spbe__V1__Message *m, const char **reason)
{
    char expect[WIRE_TOPIC_MAX_BYTES + 16];
    switch (a->kind) {
    case KIND_PUBLISH:
        if (strncmp(m->topic, "$sys.", 5) == 0) {
            *reason = "topics beginning $sys. are the broker's own";
            return SPBE_FORBIDDEN;
        }
        if (!registry_may_publish(sender, m->topic)) {
            *reason = "no right to publish to this topic";
            return SPBE_FORBIDDEN;
        }
        return schema_admit(b, schema_bound(b, m->topic, NULL, 0), m, reason);
    case KIND_REQUEST:
        if (!a->service || !wire_topic_valid(a->service) || strncmp(a->service, "$sys.", 5) == 0) {
            *reason = "service name is not valid (topic syntax, not $sys.)";
            return SPBE_INVALID_TOPIC;
        }
        snprintf(expect, sizeof expect, "$sys.svc.%s", a->service);
        if (strcmp(m->topic, expect) != 0) {
            *reason = "a request's topic must be $sys.svc.<service>";
            return SPBE_BAD_REQUEST;
        }
        if (!registry_may_call(sender, a->service)) {
            *reason = "no right to call this service";
            return SPBE_FORBIDDEN;
        }
        if (a->timeout_ms > REQUEST_TIMEOUT_MAX_MS) {
            *reason = "timeout is at most 300000 ms";
            return SPBE_BAD_REQUEST;
        }
        if (schema_admit(b, schema_bound(b, NULL, a->service, 0), m, reason) != SPBE_OK)
            return SPBE_SCHEMA_MISMATCH;
        if (service_servers(b->services, a->service) == 0) {
            *reason = "no member serves this service now";
            return SPBE_UNAVAILABLE;
        }
        return SPBE_OK;
    case KIND_RESPOND: {
        pending_request *pr = service_pending_find(b->services, a->ref);
        if (!pr) {
            *reason = "no request with this reference is waiting (answered or timed out)";
            return SPBE_NOT_FOUND;
        }
        if (pr->server != s) {
            *reason = "the request was sent to another session";
            return SPBE_FORBIDDEN;
        }
        snprintf(expect, sizeof expect, "$sys.svc.%s", pr->service);
        if (strcmp(m->topic, expect) != 0) {
            *reason = "a reply's topic must be the request's $sys.svc.<service>";
            return SPBE_BAD_REQUEST;
        }
        if (m->correlation_id.len != WIRE_ID_BYTES ||
            memcmp(m->correlation_id.data, pr->message_id, WIRE_ID_BYTES) != 0) {
            *reason = "a reply's correlation id must be the request's message id";
            return SPBE_BAD_REQUEST;
        }
        return schema_admit(b, schema_bound(b, NULL, pr->service, 1), m, reason);
    }
    }
    return SPBE_INTERNAL;
}

/* Checks a signed message (publish, request or reply) in the order cheapest first; one
 * that passes joins the commit group (taking the body frame), where its signature is
 * verified on the workers. */
/* A member's budget of signed messages: member_rate a second, member_burst at once. */
typedef struct rate_bucket {
    char member[WIRE_MEMBER_MAX_BYTES + 1];
    double tokens;
    int64_t last_ns;
} rate_bucket;

/* 1 if the member may send one more signed message now. */
static int
rate_take(broker *b, const char *member)
{
    if (!b->config.member_rate)
        return 1;
    double rate = b->config.member_rate;
    double burst = b->config.member_burst ? b->config.member_burst : rate;
    int64_t now = mono_ns();
    rate_bucket *k = NULL;
    for (size_t i = 0; i < b->n_buckets && !k; i++)
        if (strcmp(b->buckets[i].member, member) == 0)
            k = &b->buckets[i];
    if (!k) {
        if (b->n_buckets == b->cap_buckets) {
            size_t cap = b->cap_buckets ? 2 * b->cap_buckets : 32;
            rate_bucket *grown = realloc(b->buckets, cap * sizeof *grown);
            if (!grown)
                return 1; /* no memory for a bucket: do not refuse for that */
            b->buckets = grown;
            b->cap_buckets = cap;
        }
        k = &b->buckets[b->n_buckets++];
        snprintf(k->member, sizeof k->member, "%s", member);
        k->tokens = burst;
        k->last_ns = now;
    }
    k->tokens += (double)(now - k->last_ns) * rate / 1e9;
    if (k->tokens > burst)
        k->tokens = burst;
    k->last_ns = now;
    if (k->tokens < 1)
        return 0;
    k->tokens -= 1;
    return 1;
}

static void
admit(broker *b, session *s, uint64_t request_id, zmq_msg_t *body, const admission *a)
{
    if (!body) {
        reject_publish(b, s, request_id, SPBE_BAD_REQUEST, "this command needs a body frame", NULL,
                       NULL);
        return;
    }
    s->received++;
    size_t len = zmq_msg_size(body);
    const uint8_t *data = zmq_msg_data(body);
    uint8_t hash[WIRE_HASH_BYTES];
    wire_hash(data, len, hash);
    if (!rate_take(b, s->member)) { /* before any costly check */
        char reason[96];
        snprintf(reason, sizeof reason, "over %u signed messages a second for this member",
                 b->config.member_rate);
        reject_publish(b, s, request_id, SPBE_RATE_LIMITED, reason, NULL, hash);
        return;
    }
    if (len > b->config.max_message_bytes) {
        char reason[96];
        snprintf(reason, sizeof reason, "message of %zu bytes exceeds the limit of %llu", len,
                 (unsigned long long)b->config.max_message_bytes);
        reject_publish(b, s, request_id, SPBE_TOO_LARGE, reason, NULL, hash);
        return;
    }
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    const char *reason = NULL;
    int code = wire_envelope_decode(data, len, &sm, &m, &reason);
    char skew_reason[128];
    if (code == SPBE_OK && b->config.max_clock_skew_s) {
        int64_t skew = m->created_ns - wire_now_ns();
        int64_t bound = (int64_t)b->config.max_clock_skew_s * 1000000000;
        if (skew > bound || skew < -bound) {
            code = SPBE_BAD_REQUEST;
            snprintf(skew_reason, sizeof skew_reason,
                     "created %lld s from the broker's clock (the bound is %u s)",
                     (long long)(skew / 1000000000), b->config.max_clock_skew_s);
            reason = skew_reason;
        }
    }
    const Spbe__V1__Member *sender = NULL;
    if (code == SPBE_OK) {
        sender = registry_find_member(b->registry, m->sender);
        if (!sender) {
            code = SPBE_UNKNOWN_SENDER;
            reason = "sender is not a registered member";
        } else if (sender->revoked) {
            code = SPBE_REVOKED;
            reason = "sender has been revoked";
        } else if (strcmp(m->sender, s->member) != 0) {
            code = SPBE_FORBIDDEN;
            reason = "sender differs from the session's member";
        } else {
            code = admit_kind(b, s, a, sender, m, &reason);
        }
    }
    if (code != SPBE_OK) {
        reject_publish(b, s, request_id, code, reason, m, hash);
        wire_envelope_free(&sm, &m);
        return;
    }
    group *g = b->filling;
    pending_publish *p = &g->batch[g->n_batch++];
    memcpy(p->routing, s->routing, s->routing_len);
    p->routing_len = s->routing_len;
    p->request_id = request_id;
    p->kind = a->kind;
    p->ref = a->ref;
    p->timeout_ms = a->timeout_ms ? a->timeout_ms : REQUEST_TIMEOUT_DEFAULT_MS;
    snprintf(p->service, sizeof p->service, "%s", a->kind == KIND_REQUEST ? a->service : "");
    snprintf(p->member, sizeof p->member, "%s", s->member);
    zmq_msg_init(&p->body);
    zmq_msg_move(&p->body, body);
    p->signed_message = sm;
    p->message = m;
    memcpy(p->hash, hash, sizeof hash);
    memcpy(p->sender_key, sender->public_key.data, WIRE_KEY_BYTES);
    p->code = SPBE_OK;
    p->item = NULL;
    p->receipt.receipt.data = NULL;
}

typedef struct group_work {
    const broker *b;
    group *g;
    int batched;   /* receipts: encoded and hashed as leaves, signed as one batch after */
    size_t offset; /* verification: the first message of the range */
} group_work;

/* Verifies one signature of the group (runs on the workers); a batch's root signature
 * is checked once, its other messages hit the cache. */
static void
verify_one(void *ctx, size_t i)
{
    group_work *w = ctx;
    pending_publish *p = &w->g->batch[w->offset + i];
    if (wire_envelope_verify_cached(p->signed_message, p->sender_key, w->b->sigcache) != SPBE_OK)
        p->code = SPBE_BAD_SIGNATURE;
}

/* Builds one receipt of the group into its slot, signed, or as a leaf of the group's
 * batch (runs on the workers). */
static void
receipt_one(void *ctx, size_t i)
{
    group_work *w = ctx;
    pending_publish *p = &w->g->batch[i];
    int stored = p->item && (p->code == SPBE_OK || p->code == SPBE_DUPLICATE);
    receipt_audit audit = {0, w->g->tree_size, w->g->tree_root};
    if (p->code == SPBE_OK && p->item)
        audit.leaf_index = p->item->leaf_index;
    receipt_make(w->b, p->code, p->topic, stored ? p->item->sequence : 0,
                 stored ? p->item->accepted_ns : 0, p->hash, p->message,
                 p->code == SPBE_OK && p->item ? &audit : NULL, !w->batched, &p->receipt);
    if (w->batched && p->receipt.receipt.data)
        wire_batch_leaf(WIRE_CONTEXT_RECEIPT, p->receipt.receipt.data, p->receipt.receipt.len,
                        w->g->receipt_leaves[i]);
}

/* Gives each receipt of the group the one batch signature and its inclusion proof. */
static int
receipts_batch_sign(const broker *b, group *g)
{
    for (size_t i = 0; i < g->n_batch; i++)
        if (!g->batch[i].receipt.receipt.data)
            return -1;
    wire_batch wb;
    if (wire_batch_sign(&wb, (const uint8_t(*)[WIRE_HASH_BYTES])g->receipt_leaves, g->n_batch,
                        b->key.secret_key) != SPBE_OK)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < g->n_batch && rc == 0; i++) {
        pending_publish *p = &g->batch[i];
        uint8_t path[MERKLE_PATH_MAX][WIRE_HASH_BYTES];
        size_t n;
        if (wire_batch_path(&wb, i, path, &n) || n > RECEIPT_PATH_MAX) {
            rc = -1;
            break;
        }
        spbe__v1__batch_proof__init(&p->receipt_proof);
        p->receipt_proof.index = i;
        p->receipt_proof.size = g->n_batch;
        p->receipt_proof.n_path = n;
        p->receipt_proof.path = p->receipt_path_items;
        for (size_t k = 0; k < n; k++) {
            memcpy(p->receipt_path[k], path[k], WIRE_HASH_BYTES);
            p->receipt_path_items[k].data = p->receipt_path[k];
            p->receipt_path_items[k].len = WIRE_HASH_BYTES;
        }
        p->receipt.batch = &p->receipt_proof;
        memcpy(p->receipt.signature.data, wb.signature, WIRE_SIGNATURE_BYTES);
    }
    wire_batch_free(&wb);
    return rc;
}

static const char *
publish_reason(int code)
{
    switch (code) {
    case SPBE_OK:
        return "";
    case SPBE_BAD_SIGNATURE:
        return "signature does not verify with the sender's key";
    case SPBE_DUPLICATE:
        return "message id already accepted from this sender";
    case SPBE_STORAGE_FULL:
        return "no room to store it (the storage limit or the disk); nothing was stored";
    case SPBE_INTERNAL:
        return "the broker could not write it to disk; nothing was stored";
    default:
        return spbe_strerror(code);
    }
}

/* ------------------------------------------------------------ services */

static void
requests_fail(broker *b, pending_request *list, int code, const char *reason)
{
    while (list) {
        pending_request *pr = list;
        list = pr->next;
        send_error(b, pr->caller, pr->caller_len, pr->caller_request, code, reason);
        log_event(LOG_INFO, "request_failed", "service=%s sequence=%llu code=%s", pr->service,
                  (unsigned long long)pr->request_sequence, spbe_error_name(code));
        service_pending_free(pr);
    }
}

/* A stored request goes to one serving session, which answers with Respond. A server
 * ZeroMQ no longer reaches (killed: its heartbeats have not timed out yet) is closed, and
 * the next one gets the request. */
static void
request_forward(broker *b, pending_publish *p)
{
    if (!service_servers(b->services, p->service)) {
        receipt_send(b, p->routing, p->routing_len, p->request_id, SPBE_UNAVAILABLE,
                     "no member serves this service now", &p->receipt);
        return;
    }
    pending_request pr;
    memset(&pr, 0, sizeof pr);
    memcpy(pr.caller, p->routing, p->routing_len);
    pr.caller_len = p->routing_len;
    pr.caller_request = p->request_id;
    snprintf(pr.service, sizeof pr.service, "%s", p->service);
    pr.deadline_ns = wire_now_ns() + (int64_t)p->timeout_ms * 1000000;
    pr.request_sequence = p->item->sequence;
    memcpy(pr.message_id, p->message->id.data, WIRE_ID_BYTES);
    if (p->receipt.receipt.data) {
        pr.receipt_len = spbe__v1__signed_receipt__get_packed_size(&p->receipt);
        pr.receipt = malloc(pr.receipt_len);
        if (pr.receipt)
            spbe__v1__signed_receipt__pack(&p->receipt, pr.receipt);
    }
    free(p->receipt.receipt.data);
    p->receipt.receipt.data = NULL;
    if (service_pending_add(b->services, &pr) != SPBE_OK) {
        free(pr.receipt);
        send_error(b, p->routing, p->routing_len, p->request_id, SPBE_INTERNAL, "out of memory");
        return;
    }
    Spbe__V1__RequestEvent re = SPBE__V1__REQUEST_EVENT__INIT;
    re.service = p->service;
    re.request_ref = pr.ref;
    re.sequence = pr.request_sequence;
    re.deadline_ns = pr.deadline_ns;
    Spbe__V1__Event ev = SPBE__V1__EVENT__INIT;
    ev.body_case = SPBE__V1__EVENT__BODY_REQUEST;
    ev.request = &re;
    Spbe__V1__BrokerFrame f = SPBE__V1__BROKER_FRAME__INIT;
    f.body_case = SPBE__V1__BROKER_FRAME__BODY_EVENT;
    f.event = &ev;
    int rc = EHOSTUNREACH;
    session *server;
    for (int tries = 0; rc && tries < 16 && (server = service_pick(b->services, p->service));
         tries++) {
        rc = send_frame(b, server->routing, server->routing_len, &f, p->item->data, p->item->len);
        if (rc == 0) {
            pending_request *pending = service_pending_find(b->services, pr.ref);
            if (pending)
                pending->server = server;
        } else if (rc == EHOSTUNREACH) {
            log_event(LOG_INFO, "session_gone", "member=%s reason=\"unreachable serving %s\"",
                      server->member, p->service);
            session_close(b, server);
        }
    }
    if (rc) {
        requests_fail(b, service_pending_take(b->services, pr.ref), SPBE_UNAVAILABLE,
                      "no serving member can take the request now");
        return;
    }
    metrics_add(&b->m.requests, 1);
}

/* A stored reply goes to the caller waiting for it, with both receipts. */
static void
response_forward(broker *b, pending_publish *p)
{
    pending_request *pr = service_pending_take(b->services, p->ref);
    if (!pr)
        return; /* timed out while the reply was being stored: logged all the same */
    Spbe__V1__SignedReceipt *request_receipt =
        pr->receipt ? spbe__v1__signed_receipt__unpack(NULL, pr->receipt_len, pr->receipt) : NULL;
    Spbe__V1__Response resp = SPBE__V1__RESPONSE__INIT;
    resp.service = pr->service;
    resp.request_sequence = pr->request_sequence;
    resp.reply_sequence = p->item->sequence;
    resp.server = p->member;
    resp.request_receipt = request_receipt;
    resp.reply_receipt = p->receipt.receipt.data ? &p->receipt : NULL;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = pr->caller_request;
    reply.body_case = SPBE__V1__REPLY__BODY_RESPONSE;
    reply.response = &resp;
    send_reply(b, pr->caller, pr->caller_len, &reply, p->item->data, p->item->len);
    if (request_receipt)
        spbe__v1__signed_receipt__free_unpacked(request_receipt, NULL);
    service_pending_free(pr);
    metrics_add(&b->m.responses, 1);
}

/* After the commit (or without one, if nothing in the group passed): receipts signed in
 * parallel and sent in arrival order, then fan-out to subscribers. */
static void
group_finish(broker *b, group *g)
{
    uint64_t t0 = mono_ns();
    store_reader *rd = NULL;
    for (size_t i = 0; i < g->n_batch; i++) {
        pending_publish *p = &g->batch[i];
        if (p->item)
            p->code = p->item->code;
        if (p->code == SPBE_OK) {
            metrics_add(&b->m.accepted, 1);
            metrics_add(&b->m.bytes_accepted, p->item->len);
        } else if (p->code == SPBE_DUPLICATE) {
            metrics_add(&b->m.duplicates, 1);
            store_topic_info original;
            if ((rd || store_reader_begin(b->store, &rd) == SPBE_OK) &&
                store_topic_get_by_id(rd, p->item->topic_id, &original) == SPBE_OK) {
                memcpy(p->original_topic, original.name, sizeof p->original_topic);
                p->topic = p->original_topic;
            }
        } else {
            metrics_rejected(&b->m, p->code);
            if (log_allow(&b->reject_log))
                log_event(LOG_INFO, "publish_rejected", "member=%s topic=%s code=%s",
                          p->message->sender, p->message->topic, spbe_error_name(p->code));
        }
    }
    store_reader_end(&rd);
    store_tree_head(b->store, &g->tree_size, g->tree_root);
    /* one signature for the group's receipts, each with its proof (one alone: signed) */
    group_work w = {b, g, g->n_batch > 1, 0};
    workpool_run(b->workers, receipt_one, &w, g->n_batch, 4);
    if (w.batched && receipts_batch_sign(b, g) != 0) {
        for (size_t i = 0; i < g->n_batch; i++) {
            free(g->batch[i].receipt.receipt.data);
            g->batch[i].receipt.receipt.data = NULL;
        }
        w.batched = 0;
        workpool_run(b->workers, receipt_one, &w, g->n_batch, 4);
    }
    for (size_t i = 0; i < g->n_batch; i++) {
        pending_publish *p = &g->batch[i];
        if (p->kind == KIND_REQUEST && p->code == SPBE_OK) {
            request_forward(b, p);
            continue;
        }
        if (p->kind == KIND_RESPOND && p->code == SPBE_OK)
            response_forward(b, p);
        receipt_reply(b, p->routing, p->routing_len, p->request_id, p->code,
                      publish_reason(p->code), &p->receipt, 1);
    }
    uint64_t t1 = mono_ns();
    for (size_t i = 0; i < g->n_batch; i++) {
        pending_publish *p = &g->batch[i];
        if (p->code == SPBE_OK) {
            router_publish(b->router, p->item->topic_id, p->message->topic, p->item->sequence,
                           p->item->accepted_ns, p->item->data, p->item->len);
            consumer_publish(b->consumers, p->item->topic_id, p->message->topic, p->item->sequence);
        }
        zmq_msg_close(&p->body);
        wire_envelope_free(&p->signed_message, &p->message);
    }
    /* the dead letters committed with the group */
    consumer_batch *cb = &g->consumers;
    for (size_t i = 0; i < cb->n_letters; i++) {
        store_append_item *it = &g->items[g->n_items + i];
        cb->letters[i].code = it->code;
        cb->letters[i].topic_id = it->topic_id;
        cb->letters[i].sequence = it->sequence;
        if (it->code == SPBE_OK)
            router_publish(b->router, it->topic_id, it->topic, it->sequence, it->accepted_ns,
                           it->data, it->len);
    }
    if ((cb->n_ops || cb->n_letters) && g->job.ops_rc != SPBE_OK)
        log_event(LOG_ERROR, "consumer_state_not_stored", "ops=%zu code=%s", cb->n_ops,
                  spbe_error_name(g->job.ops_rc));
    consumer_batch_done(b->consumers, cb);
    uint64_t t2 = mono_ns();
    b->clock.messages += g->n_batch;
    b->clock.groups++;
    b->clock.check_ns += g->check_ns;
    b->clock.verify_ns += g->verify_ns;
    b->clock.commit_ns += g->job.count ? g->job.commit_ns : 0;
    if (g->job.count)
        metrics_commit(&b->m, g->job.commit_ns);
    b->clock.receipt_ns += t1 - t0;
    b->clock.fanout_ns += t2 - t1;
    g->n_batch = 0;
    g->next = b->free_groups;
    b->free_groups = g;
}

/* Checks the signatures of the filling group's messages not checked yet, in parallel:
 * while the writer commits the group before, so that this one is ready when it is done. */
static void
group_verify(broker *b, group *g)
{
    if (g->n_verified == g->n_batch)
        return;
    uint64_t t0 = mono_ns();
    group_work vw = {b, g, 0, g->n_verified};
    workpool_run(b->workers, verify_one, &vw, g->n_batch - g->n_verified, 4);
    g->n_verified = g->n_batch;
    g->verify_ns += mono_ns() - t0;
}

/*
 * The filling group goes to the writer (free now) for one durable commit: the messages
 * whose signatures verified, and the consumers' bookkeeping. No receipt leaves before
 * the writer hands the group back. One group at a time is committed while the next
 * fills, so commits grow with the load (group commit) and stay one message long when
 * it is light.
 */
static void
group_submit(broker *b)
{
    group *g = b->filling;
    b->filling = NULL;
    group_verify(b, g);
    size_t n_items = 0;
    for (size_t i = 0; i < g->n_batch; i++) {
        pending_publish *p = &g->batch[i];
        p->topic = p->message->topic;
        if (p->code != SPBE_OK)
            continue;
        store_append_item *it = &g->items[n_items++];
        memset(it, 0, sizeof *it);
        it->topic = p->message->topic;
        it->sender = p->message->sender;
        it->id = p->message->id.data;
        it->data = zmq_msg_data(&p->body);
        it->len = zmq_msg_size(&p->body);
        it->hash = p->hash;
        p->item = it;
    }
    g->n_items = n_items;
    memset(&g->consumers, 0, sizeof g->consumers);
    if (consumer_dirty(b->consumers))
        consumer_take(b->consumers, &g->consumers);
    for (size_t i = 0; i < g->consumers.n_letters && i < LETTERS_MAX; i++)
        g->items[n_items + i] = g->consumers.letters[i];
    g->job.items = g->items;
    g->job.count = n_items + g->consumers.n_letters;
    g->job.ops = g->consumers.ops;
    g->job.n_ops = g->consumers.n_ops;
    g->job.rc = g->job.ops_rc = SPBE_OK;
    if ((g->job.count == 0 && g->job.n_ops == 0) || writer_submit(b->writer, &g->job) != SPBE_OK) {
        for (size_t i = 0; i < g->job.count; i++)
            g->items[i].code = SPBE_INTERNAL;
        if (g->job.count || g->job.n_ops)
            g->job.rc = g->job.ops_rc = SPBE_INTERNAL;
        group_finish(b, g);
        return;
    }
    metrics_add(&b->m.commits, 1);
    b->in_writer++;
}

/* Whether a group can take one more frame from a client: room for a whole PublishBatch. */
static int
group_has_room(const group *g)
{
    return g->n_batch + PUBLISH_BATCH_MAX <= DRAIN_MAX;
}

/* The filling group goes to the writer if the writer is free and there is something to
 * commit. */
static void
group_submit_ready(broker *b)
{
    if (b->in_writer == 0 && b->filling && (b->filling->n_batch || consumer_dirty(b->consumers)))
        group_submit(b);
}

/* Takes the groups the writer has committed, hands it the next one at once (with
 * submit; not while the filling group is still being filled), then sends the committed
 * groups' receipts, in the order they were submitted. */
static void
groups_collect(broker *b, int submit)
{
    group *done[GROUPS];
    size_t n = 0;
    writer_job *job;
    while (n < GROUPS && (job = writer_take_done(b->writer)) != NULL) {
        done[n++] = (group *)((char *)job - offsetof(group, job));
        b->in_writer--;
    }
    if (submit)
        group_submit_ready(b);
    for (size_t i = 0; i < n; i++)
        group_finish(b, done[i]);
    if (n)
        batches_flush(b); /* the receipts and deliveries of the groups, at once */
}

/* ------------------------------------------------------------ other commands */

static int
may_read_topic(const broker *b, const session *s, const char *topic)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (!m)
        return 0;
    if (registry_has_role(m, "ops") || registry_has_role(m, "admin"))
        return 1;
    if (strncmp(topic, "$sys.dlq.", 9) == 0) { /* a consumer's owner reads its dead letters */
        const Spbe__V1__ConsumerConfig *cfg = consumer_config(b->consumers, topic + 9);
        Spbe__V1__ConsumerInfo *info = NULL;
        int own = cfg && consumer_info(b->consumers, topic + 9, &info) == SPBE_OK &&
                  strcmp(info->owner, s->member) == 0;
        if (info)
            spbe__v1__consumer_info__free_unpacked(info, NULL);
        if (own)
            return 1;
    }
    return registry_may_subscribe(m, topic);
}

/* 1 if topic is valid and the session may read it; otherwise answers the error, 0. */
static int
topic_readable(broker *b, session *s, uint64_t request_id, const char *topic)
{
    if (!wire_topic_valid(topic)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INVALID_TOPIC,
                   "topic is not valid");
        return 0;
    }
    if (!may_read_topic(b, s, topic)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "no right to read this topic");
        return 0;
    }
    return 1;
}

static void
quota_refuse(broker *b, const uint8_t *routing, size_t routing_len, uint64_t request_id,
             const char *member, const char *reason)
{
    metrics_rejected(&b->m, SPBE_QUOTA_EXCEEDED);
    if (log_allow(&b->reject_log))
        log_event(LOG_WARN, "quota_exceeded", "member=%s reason=\"%s\"", member, reason);
    send_error(b, routing, routing_len, request_id, SPBE_QUOTA_EXCEEDED, reason);
}

static void
handle_hello(broker *b, const uint8_t *routing, size_t routing_len, uint64_t request_id,
             const Spbe__V1__Hello *hello, const char *user_id)
{
    if (hello->protocol_version != WIRE_PROTOCOL_VERSION) {
        char reason[96];
        snprintf(reason, sizeof reason, "protocol version %u not supported; this broker speaks %d",
                 hello->protocol_version, WIRE_PROTOCOL_VERSION);
        send_error(b, routing, routing_len, request_id, SPBE_BAD_REQUEST, reason);
        return;
    }
    const Spbe__V1__Member *m = user_id ? registry_find_member(b->registry, user_id) : NULL;
    if (!m) {
        send_error(b, routing, routing_len, request_id, SPBE_UNKNOWN_SENDER,
                   "connection key belongs to no member");
        return;
    }
    if (strcmp(hello->member, m->name) != 0) {
        send_error(b, routing, routing_len, request_id, SPBE_FORBIDDEN,
                   "hello names another member than the connection key's");
        return;
    }
    if (m->revoked) {
        metrics_rejected(&b->m, SPBE_REVOKED);
        if (log_allow(&b->reject_log))
            log_event(LOG_WARN, "hello_rejected", "member=%s code=REVOKED", m->name);
        send_error(b, routing, routing_len, request_id, SPBE_REVOKED, "member has been revoked");
        return;
    }
    session *s = session_find(b, routing, routing_len);
    if (!s && b->config.member_max_sessions) {
        uint32_t held = 0;
        for (size_t i = 0; i < b->n_sessions; i++)
            held += strcmp(b->sessions[i]->member, m->name) == 0;
        if (held >= b->config.member_max_sessions) {
            char reason[128];
            snprintf(reason, sizeof reason,
                     "the member holds %u sessions, its most (member_max_sessions)", held);
            quota_refuse(b, routing, routing_len, request_id, m->name, reason);
            return;
        }
    }
    if (!s) {
        if (b->n_sessions == b->cap_sessions) {
            size_t cap = b->cap_sessions ? 2 * b->cap_sessions : 16;
            session **n = realloc(b->sessions, cap * sizeof *n);
            if (!n) {
                send_error(b, routing, routing_len, request_id, SPBE_INTERNAL, "out of memory");
                return;
            }
            b->sessions = n;
            b->cap_sessions = cap;
        }
        s = calloc(1, sizeof *s);
        if (!s || routing_reserve(b) != 0) {
            free(s);
            send_error(b, routing, routing_len, request_id, SPBE_INTERNAL, "out of memory");
            return;
        }
        memcpy(s->routing, routing, routing_len);
        s->routing_len = routing_len;
        b->sessions[b->n_sessions++] = s;
        routing_insert(b, s);
    }
    snprintf(s->member, sizeof s->member, "%s", m->name);
    s->batch_max = hello->batch;
    s->gone = 0; /* it said hello: reachable again (a client may keep its routing id) */
    s->last_seen_ms = now_ms();
    s->opened_ns = wire_now_ns();
    char client[256];
    log_event(LOG_INFO, "session_opened", "member=%s client=\"%s\" sessions=%zu", m->name,
              log_clean(hello->client, 1, client, sizeof client), b->n_sessions);

    Spbe__V1__Welcome w = SPBE__V1__WELCOME__INIT;
    w.protocol_version = WIRE_PROTOCOL_VERSION;
    w.broker = b->config.name;
    w.broker_key.data = b->key.public_key;
    w.broker_key.len = WIRE_KEY_BYTES;
    w.max_message_bytes = b->config.max_message_bytes;
    w.member = m->name;
    w.rights = m->rights;
    w.heartbeat_ms = (uint32_t)b->config.heartbeat_ms;
    w.publish_batch = PUBLISH_BATCH_MAX;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_WELCOME;
    reply.welcome = &w;
    send_reply(b, routing, routing_len, &reply, NULL, 0);
}

/* 1 when the session may take one more subscription or attachment; else refused. */
static int
subscription_room(broker *b, session *s, uint64_t request_id)
{
    if (!b->config.session_max_subscriptions)
        return 1;
    /* counted where they live: a consumer deleted or a subscription dropped frees its room */
    size_t held = router_count_owned(b->router, s) + consumer_count_attached(b->consumers, s);
    if (held < b->config.session_max_subscriptions)
        return 1;
    char reason[128];
    snprintf(reason, sizeof reason,
             "the session holds %zu subscriptions, its most (session_max_subscriptions)", held);
    quota_refuse(b, s->routing, s->routing_len, request_id, s->member, reason);
    return 0;
}

static void
handle_subscribe(broker *b, session *s, uint64_t request_id, const Spbe__V1__Subscribe *sub)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (!wire_pattern_valid(sub->pattern)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INVALID_TOPIC,
                   "pattern is not valid");
        return;
    }
    if (!m || !registry_may_subscribe(m, sub->pattern)) {
        metrics_rejected(&b->m, SPBE_FORBIDDEN);
        if (log_allow(&b->reject_log))
            log_event(LOG_INFO, "subscribe_rejected", "member=%s pattern=%s code=FORBIDDEN",
                      s->member, sub->pattern);
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "no right to subscribe to this pattern");
        return;
    }
    enum router_start start =
        sub->start == SPBE__V1__START_POSITION__START_FIRST      ? ROUTER_START_FIRST
        : sub->start == SPBE__V1__START_POSITION__START_SEQUENCE ? ROUTER_START_SEQUENCE
                                                                 : ROUTER_START_NEW;
    router_position resume[ROUTER_RESUME_MAX];
    size_t n_resume = 0;
    for (size_t i = 0; i < sub->n_resume; i++) {
        const Spbe__V1__TopicPosition *tp = sub->resume[i];
        if (n_resume == ROUTER_RESUME_MAX || !wire_topic_valid(tp->topic) ||
            !wire_pattern_match(sub->pattern, tp->topic)) {
            send_error(b, s->routing, s->routing_len, request_id, SPBE_BAD_REQUEST,
                       "resume positions must name topics the pattern matches (at most 1024)");
            return;
        }
        resume[n_resume].topic = tp->topic;
        resume[n_resume].next_sequence = tp->next_sequence;
        n_resume++;
    }
    if (!subscription_room(b, s, request_id))
        return;
    uint64_t id;
    int rc = router_subscribe(b->router, s, sub->pattern, start, sub->start_sequence, resume,
                              n_resume, &id);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc, "cannot subscribe");
        return;
    }
    Spbe__V1__Subscribed ok = SPBE__V1__SUBSCRIBED__INIT;
    ok.subscription_id = id;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_SUBSCRIBED;
    reply.subscribed = &ok;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
}

static int
valid_patterns(char **patterns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!wire_pattern_valid(patterns[i]))
            return 0;
    return 1;
}

/* Replies with one member's record. */
static void
send_member(broker *b, session *s, uint64_t request_id, const Spbe__V1__Member *m)
{
    Spbe__V1__MemberInfo info = SPBE__V1__MEMBER_INFO__INIT;
    info.member = (Spbe__V1__Member *)m;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_MEMBER;
    reply.member = &info;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
}

static void
handle_member_add(broker *b, session *s, uint64_t request_id, const Spbe__V1__MemberAdd *add)
{
    uint8_t curve[32];
    const char *bad = NULL;
    if (!wire_member_valid(add->name))
        bad = "member name must be agency/app in lower case";
    else if (add->public_key.len != WIRE_KEY_BYTES ||
             wire_curve_public(add->public_key.data, curve))
        bad = "public key must be a valid Ed25519 key of 32 bytes";
    else if (add->rights && (!valid_patterns(add->rights->publish, add->rights->n_publish) ||
                             !valid_patterns(add->rights->subscribe, add->rights->n_subscribe) ||
                             !valid_patterns(add->rights->serve, add->rights->n_serve) ||
                             !valid_patterns(add->rights->call, add->rights->n_call)))
        bad = "rights contain an invalid topic pattern";
    else if (registry_find_member(b->registry, add->name))
        bad = "member already exists";
    else if (registry_find_by_curve_key(b->registry, curve))
        bad = "public key already belongs to another member";
    for (size_t i = 0; !bad && add->rights && i < add->rights->n_roles; i++)
        if (strcmp(add->rights->roles[i], "admin") && strcmp(add->rights->roles[i], "ops"))
            bad = "roles are admin and ops";
    if (bad) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_BAD_REQUEST, bad);
        return;
    }
    Spbe__V1__MemberRights none = SPBE__V1__MEMBER_RIGHTS__INIT;
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = add->name;
    m.public_key = add->public_key;
    m.rights = add->rights ? add->rights : &none;
    m.created_ns = wire_now_ns();
    int rc = store_member_put(b->store, &m);
    if (rc == SPBE_OK)
        rc = registry_put(b->registry, &m);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc, "cannot store the member");
        return;
    }
    log_event(LOG_INFO, "member_added", "member=%s by=%s", add->name, s->member);
    send_member(b, s, request_id, registry_find_member(b->registry, add->name));
}

/* A member's new key: the old one ends now, its sessions end, the registry keeps both
 * with their validity so what was signed before still verifies. */
static void
handle_member_rotate(broker *b, session *s, uint64_t request_id, const Spbe__V1__MemberRotate *mr)
{
    const Spbe__V1__Member *cur = registry_find_member(b->registry, mr->name);
    const Spbe__V1__Member *me = registry_find_member(b->registry, s->member);
    int self = strcmp(mr->name, s->member) == 0;
    uint8_t curve[32];
    const char *bad = NULL;
    int code = SPBE_BAD_REQUEST;
    if (!cur)
        code = SPBE_NOT_FOUND, bad = "no such member";
    else if (!self && !(me && registry_has_role(me, "admin")))
        code = SPBE_FORBIDDEN, bad = "only the member itself or an admin may rotate its key";
    else if (cur->revoked)
        code = SPBE_REVOKED, bad = "the member is revoked";
    else if (mr->public_key.len != WIRE_KEY_BYTES ||
             wire_curve_public(mr->public_key.data, curve) != 0)
        bad = "the new key must be an Ed25519 public key (32 bytes)";
    else if (registry_find_by_curve_key(b->registry, curve))
        bad = "the new key is registered already";
    else if ((self || mr->proof.len) &&
             wire_rotation_verify(mr->name, mr->public_key.data, mr->proof.data, mr->proof.len) !=
                 SPBE_OK)
        code = SPBE_BAD_SIGNATURE, bad = "the proof does not verify with the new key";
    if (bad) {
        send_error(b, s->routing, s->routing_len, request_id, code, bad);
        return;
    }
    int64_t now = wire_now_ns();
    const char *reason = mr->reason && mr->reason[0] ? mr->reason : "rotated";
    /* the history: the keys so far (the first one since the member's creation), the new */
    size_t n = cur->n_keys ? cur->n_keys : 1;
    Spbe__V1__MemberKey *keys = calloc(n + 1, sizeof *keys);
    Spbe__V1__MemberKey **ptrs = calloc(n + 1, sizeof *ptrs);
    if (!keys || !ptrs) {
        free(keys);
        free(ptrs);
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        spbe__v1__member_key__init(&keys[i]);
        if (cur->n_keys) {
            keys[i] = *cur->keys[i];
        } else {
            keys[i].public_key = cur->public_key;
            keys[i].valid_from_ns = cur->created_ns;
        }
        ptrs[i] = &keys[i];
    }
    keys[n - 1].valid_until_ns = now;
    keys[n - 1].reason = (char *)reason;
    spbe__v1__member_key__init(&keys[n]);
    keys[n].public_key = mr->public_key;
    keys[n].valid_from_ns = now;
    ptrs[n] = &keys[n];
    Spbe__V1__Member m = *cur;
    m.public_key = mr->public_key;
    m.n_keys = n + 1;
    m.keys = ptrs;
    int rc = store_member_put(b->store, &m);
    if (rc == SPBE_OK)
        rc = registry_put(b->registry, &m);
    free(keys);
    free(ptrs);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc, "cannot store the new key");
        return;
    }
    char why[256];
    log_event(LOG_WARN, "member_key_rotated", "member=%s by=%s reason=\"%s\"", mr->name, s->member,
              log_clean(reason, 1, why, sizeof why));
    send_member(b, s, request_id, registry_find_member(b->registry, mr->name));
    /* the old key's sessions end: they reconnect with the new key */
    for (size_t i = b->n_sessions; i-- > 0;) {
        session *t = b->sessions[i];
        if (strcmp(t->member, mr->name) == 0) {
            send_goodbye(b, t, SPBE_UNAVAILABLE, "key rotated: connect with the new key");
            session_close(b, t);
        }
    }
}

static void
handle_member_revoke(broker *b, session *s, uint64_t request_id, const Spbe__V1__MemberRevoke *rv)
{
    const Spbe__V1__Member *cur = registry_find_member(b->registry, rv->name);
    if (!cur) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_NOT_FOUND, "no such member");
        return;
    }
    if (strcmp(rv->name, s->member) == 0) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_BAD_REQUEST,
                   "a member cannot revoke itself");
        return;
    }
    Spbe__V1__Member m = *cur;
    m.revoked = 1;
    m.revoke_reason = rv->reason && rv->reason[0] ? rv->reason : "revoked";
    m.revoked_ns = wire_now_ns();
    int rc = store_member_put(b->store, &m);
    if (rc == SPBE_OK)
        rc = registry_put(b->registry, &m);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc, "cannot store the revocation");
        return;
    }
    /* takes effect on live sessions at once */
    for (size_t i = 0; i < b->n_sessions; i++) {
        session *t = b->sessions[i];
        if (strcmp(t->member, rv->name) == 0 && !t->revoked) {
            t->revoked = 1;
            router_drop_owner(b->router, t);
            consumer_detach_session(b->consumers, t);
            requests_fail(b, service_drop_session(b->services, t), SPBE_UNAVAILABLE,
                          "the serving member has been revoked");
            send_goodbye(b, t, SPBE_REVOKED, "member has been revoked");
        }
    }
    char why[256];
    log_event(LOG_WARN, "member_revoked", "member=%s by=%s reason=\"%s\"", rv->name, s->member,
              log_clean(m.revoke_reason, 1, why, sizeof why));
    send_member(b, s, request_id, registry_find_member(b->registry, rv->name));
}

typedef struct collect {
    void **items;
    size_t n, cap;
    const broker *b;
    const session *s;
} collect;

static int
collect_push(collect *c, void *item)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        void **n = realloc(c->items, cap * sizeof *n);
        if (!n)
            return 1;
        c->items = n;
        c->cap = cap;
    }
    c->items[c->n++] = item;
    return 0;
}

static Spbe__V1__TopicInfo *
topic_info_new(const store_topic_info *t)
{
    Spbe__V1__TopicInfo *ti = malloc(sizeof *ti);
    if (!ti)
        return NULL;
    spbe__v1__topic_info__init(ti);
    ti->name = strdup(t->name);
    ti->first_sequence = t->first_sequence;
    ti->last_sequence = t->last_sequence;
    ti->messages = t->messages;
    ti->bytes = t->bytes;
    ti->first_ns = t->first_ns;
    ti->last_ns = t->last_ns;
    return ti;
}

static int
collect_topic(const store_topic_info *t, void *arg)
{
    collect *c = arg;
    if (!may_read_topic(c->b, c->s, t->name))
        return 0;
    Spbe__V1__TopicInfo *ti = topic_info_new(t);
    if (ti && collect_push(c, ti)) {
        free(ti->name); /* no room to list it: not leaked */
        free(ti);
        return 1;
    }
    return !ti;
}

static void
handle_session_list(broker *b, session *s, uint64_t request_id)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (!m || (!registry_has_role(m, "ops") && !registry_has_role(m, "admin"))) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "listing sessions needs the ops or admin role");
        return;
    }
    Spbe__V1__SessionInfo *infos = calloc(b->n_sessions + 1, sizeof *infos);
    Spbe__V1__SessionInfo **ptrs = calloc(b->n_sessions + 1, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < b->n_sessions; i++) {
        const session *t = b->sessions[i];
        spbe__v1__session_info__init(&infos[i]);
        infos[i].member = (char *)t->member;
        infos[i].since_ns = t->opened_ns;
        infos[i].received = t->received;
        infos[i].delivered = t->delivered;
        infos[i].subscriptions = (uint32_t)router_count_owner(b->router, (void *)t);
        ptrs[i] = &infos[i];
    }
    Spbe__V1__Sessions list = SPBE__V1__SESSIONS__INIT;
    list.sessions = ptrs;
    list.n_sessions = b->n_sessions;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_SESSIONS;
    reply.sessions = &list;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
    free(infos);
    free(ptrs);
}

static void
handle_topic_list(broker *b, session *s, uint64_t request_id)
{
    collect c = {.b = b, .s = s};
    store_reader *rd;
    int rc = store_reader_begin(b->store, &rd);
    if (rc == SPBE_OK) {
        rc = store_topic_each(rd, collect_topic, &c);
        store_reader_end(&rd);
    }
    Spbe__V1__Topics topics = SPBE__V1__TOPICS__INIT;
    topics.topics = (Spbe__V1__TopicInfo **)c.items;
    topics.n_topics = c.n;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.code = (Spbe__V1__ErrorCode)rc;
    reply.body_case = SPBE__V1__REPLY__BODY_TOPICS;
    reply.topics = &topics;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
    for (size_t i = 0; i < c.n; i++) {
        Spbe__V1__TopicInfo *ti = c.items[i];
        free(ti->name);
        free(ti);
    }
    free(c.items);
}

static void
handle_topic_get(broker *b, session *s, uint64_t request_id, const char *topic)
{
    if (!topic_readable(b, s, request_id, topic))
        return;
    store_reader *rd;
    store_topic_info t;
    int rc = store_reader_begin(b->store, &rd);
    if (rc == SPBE_OK) {
        rc = store_topic_get(rd, topic, &t);
        store_reader_end(&rd);
    }
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc,
                   rc == SPBE_NOT_FOUND ? "no such topic" : NULL);
        return;
    }
    Spbe__V1__TopicInfo *ti = topic_info_new(&t);
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_TOPIC;
    reply.topic = ti;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
    if (ti) {
        free(ti->name);
        free(ti);
    }
}

static void
handle_message_get(broker *b, session *s, uint64_t request_id, const Spbe__V1__MessageGet *get)
{
    if (!topic_readable(b, s, request_id, get->topic))
        return;
    store_reader *rd;
    store_topic_info t;
    store_message msg;
    int rc = store_reader_begin(b->store, &rd);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc, NULL);
        return;
    }
    rc = store_topic_get(rd, get->topic, &t);
    if (rc == SPBE_OK)
        rc = store_message_get(rd, t.id, get->sequence, &msg);
    if (rc != SPBE_OK) {
        store_reader_end(&rd);
        send_error(b, s->routing, s->routing_len, request_id, rc,
                   rc == SPBE_NOT_FOUND ? "no such message" : NULL);
        return;
    }
    Spbe__V1__Delivery d = SPBE__V1__DELIVERY__INIT;
    d.topic = get->topic;
    d.sequence = msg.sequence;
    d.accepted_ns = msg.accepted_ns;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_MESSAGE;
    reply.message = &d;
    send_reply(b, s->routing, s->routing_len, &reply, msg.data, msg.len);
    store_reader_end(&rd);
}

static int
collect_member(const Spbe__V1__Member *m, void *arg)
{
    Spbe__V1__Member *copy = registry_member_copy(m);
    if (copy && collect_push(arg, copy)) {
        spbe__v1__member__free_unpacked(copy, NULL); /* no room to list it: not leaked */
        return 1;
    }
    return !copy;
}

static int
may_inspect_members(const broker *b, const session *s)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    return m && (registry_has_role(m, "admin") || registry_has_role(m, "ops"));
}

static void
handle_member_list(broker *b, session *s, uint64_t request_id)
{
    if (!may_inspect_members(b, s)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "listing members needs the ops or admin role");
        return;
    }
    collect c = {0};
    store_reader *rd;
    int rc = store_reader_begin(b->store, &rd);
    if (rc == SPBE_OK) {
        rc = store_member_each(rd, collect_member, &c);
        store_reader_end(&rd);
    }
    Spbe__V1__Members ms = SPBE__V1__MEMBERS__INIT;
    ms.members = (Spbe__V1__Member **)c.items;
    ms.n_members = c.n;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.code = (Spbe__V1__ErrorCode)rc;
    reply.body_case = SPBE__V1__REPLY__BODY_MEMBERS;
    reply.members = &ms;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
    for (size_t i = 0; i < c.n; i++)
        spbe__v1__member__free_unpacked(c.items[i], NULL);
    free(c.items);
}

static void
handle_member_get(broker *b, session *s, uint64_t request_id, const char *name)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, name);
    if (!m) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_NOT_FOUND, "no such member");
        return;
    }
    /* name, key and status are public (subscribers verify senders with them); rights
     * only for the member itself and for ops/admin */
    Spbe__V1__Member public_part = *m;
    public_part.rights = NULL;
    send_member(b, s, request_id,
                strcmp(name, s->member) == 0 || may_inspect_members(b, s) ? m : &public_part);
}

static int
require_admin(broker *b, session *s, uint64_t request_id)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (m && registry_has_role(m, "admin"))
        return 1;
    metrics_rejected(&b->m, SPBE_FORBIDDEN);
    if (log_allow(&b->reject_log))
        log_event(LOG_WARN, "registry_change_rejected", "member=%s code=FORBIDDEN", s->member);
    send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
               "registry changes need the admin role");
    return 0;
}

/* ------------------------------------------------------------ services, consumers */

/* Waits until the writer has handed back every group: for the rare changes the I/O
 * thread commits itself (consumers created or deleted, dead letters moved), so that
 * they land after everything submitted before them. */
static void
writer_drain(broker *b)
{
    while (b->in_writer > 0) {
        zmq_pollitem_t item = {writer_socket(b->writer), 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1000);
        groups_collect(b, 0); /* called while the filling group fills */
    }
}

/*
 * Signs the audit log's tree head if the tree grew since the last one, stores it, and
 * appends it to $sys.audit.head (as a message signed by the broker) for members to keep
 * as witnesses. Committed from the I/O thread after the writer's groups: every few
 * seconds and at stop. The head's own message is a leaf too; the next head covers it.
 */
static void
tree_head_commit(broker *b)
{
    writer_drain(b);
    uint64_t size;
    uint8_t root[WIRE_HASH_BYTES];
    store_tree_head(b->store, &size, root);
    if (size == 0 || size == b->head_end)
        return;
    uint8_t *payload = NULL, *bytes = NULL;
    size_t plen = 0, len = 0;
    uint8_t id[WIRE_ID_BYTES];
    wire_random_id(id);
    if (wire_tree_head_encode(size, root, b->config.name, b->key.secret_key, &payload, &plen) ==
        SPBE_OK) {
        Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
        msg.id.data = id;
        msg.id.len = sizeof id;
        msg.topic = "$sys.audit.head";
        msg.sender = b->key.member;
        msg.created_ns = wire_now_ns();
        msg.schema = "spbe.v1.SignedTreeHead";
        msg.payload.data = payload;
        msg.payload.len = plen;
        wire_message_sign(&msg, b->key.secret_key, &bytes, &len);
    }
    if (!bytes) {
        free(payload);
        log_event(LOG_ERROR, "tree_head_failed", "size=%llu", (unsigned long long)size);
        return;
    }
    store_op op = {
        .kind = STORE_OP_HEAD_PUT, .sequence = size, .record = payload, .record_len = plen};
    store_append_item it = {
        .topic = "$sys.audit.head", .sender = b->key.member, .id = id, .data = bytes, .len = len};
    int ops_rc = SPBE_INTERNAL;
    int rc = store_apply(b->store, &it, 1, &op, 1, b->config.dedup_window_ns, &ops_rc);
    if (ops_rc == SPBE_OK) {
        b->head_end = rc == SPBE_OK ? size + 1 : size;
        log_event(LOG_DEBUG, "tree_head", "size=%llu", (unsigned long long)size);
    } else {
        log_event(LOG_ERROR, "tree_head_not_stored", "size=%llu code=%s", (unsigned long long)size,
                  spbe_error_name(ops_rc));
    }
    if (rc == SPBE_OK) {
        router_publish(b->router, it.topic_id, it.topic, it.sequence, it.accepted_ns, it.data,
                       it.len);
        consumer_publish(b->consumers, it.topic_id, it.topic, it.sequence);
    }
    free(payload);
    free(bytes);
}

static void
send_ok(broker *b, session *s, uint64_t request_id)
{
    Spbe__V1__Reply ok = SPBE__V1__REPLY__INIT;
    ok.request_id = request_id;
    send_reply(b, s->routing, s->routing_len, &ok, NULL, 0);
}

static void
handle_serve(broker *b, session *s, uint64_t request_id, const char *service, int serve)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (!wire_topic_valid(service) || strncmp(service, "$sys.", 5) == 0) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INVALID_TOPIC,
                   "service name is not valid (topic syntax, not $sys.)");
        return;
    }
    if (!serve) {
        if (service_unserve(b->services, service, s) == SPBE_OK)
            send_ok(b, s, request_id);
        else
            send_error(b, s->routing, s->routing_len, request_id, SPBE_NOT_FOUND,
                       "this session does not serve the service");
        return;
    }
    if (!m || !registry_may_serve(m, service)) {
        metrics_rejected(&b->m, SPBE_FORBIDDEN);
        if (log_allow(&b->reject_log))
            log_event(LOG_INFO, "serve_rejected", "member=%s service=%s code=FORBIDDEN", s->member,
                      service);
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "no right to serve this service");
        return;
    }
    if (service_serve(b->services, service, s) != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INTERNAL, "out of memory");
        return;
    }
    log_event(LOG_INFO, "serving", "member=%s service=%s", s->member, service);
    send_ok(b, s, request_id);
}

/* The owner of a consumer, admins, and members who may subscribe to its pattern see it. */
static int
may_see_consumer(broker *b, session *s, const Spbe__V1__ConsumerInfo *info)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    return m && (registry_has_role(m, "ops") || registry_has_role(m, "admin") ||
                 strcmp(info->owner, s->member) == 0 ||
                 registry_may_subscribe(m, info->config->pattern));
}

/* Changing a consumer (delete, dead letters) is for its owner and admins. */
static int
may_change_consumer(broker *b, session *s, const char *name)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    if (m && registry_has_role(m, "admin"))
        return 1;
    Spbe__V1__ConsumerInfo *info = NULL;
    int own =
        consumer_info(b->consumers, name, &info) == SPBE_OK && strcmp(info->owner, s->member) == 0;
    if (info)
        spbe__v1__consumer_info__free_unpacked(info, NULL);
    return own;
}

static void
handle_consume(broker *b, session *s, uint64_t request_id, const Spbe__V1__Consume *consume)
{
    const Spbe__V1__ConsumerConfig *cfg = consume->config;
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    const char *bad = NULL;
    int code = SPBE_BAD_REQUEST;
    if (!cfg || !consumer_name_valid(cfg->name))
        bad = "consumer name must be 1 to 64 of [a-z0-9_-]";
    const Spbe__V1__ConsumerConfig *existing =
        bad ? NULL : consumer_config(b->consumers, cfg->name);
    if (bad) {
    } else if (existing) {
        if (cfg->pattern[0] && strcmp(cfg->pattern, existing->pattern) != 0)
            bad = "the consumer exists with another pattern";
        else if (!m || !registry_may_subscribe(m, existing->pattern))
            code = SPBE_FORBIDDEN, bad = "no right to subscribe to the consumer's pattern";
    } else if (!wire_pattern_valid(cfg->pattern)) {
        code = SPBE_INVALID_TOPIC, bad = "a new consumer needs a valid topic pattern";
    } else if (!m || !registry_may_subscribe(m, cfg->pattern)) {
        code = SPBE_FORBIDDEN, bad = "no right to subscribe to this pattern";
    } else if (cfg->start == SPBE__V1__START_POSITION__START_TIME && cfg->start_time_ns <= 0) {
        bad = "start at a time needs start_time_ns";
    } else if (cfg->ack_wait_ms && (cfg->ack_wait_ms < 100 || cfg->ack_wait_ms > 86400000)) {
        bad = "ack wait must be 100 ms to 1 day";
    } else if (cfg->max_deliveries > 10000 || cfg->max_in_flight > 100000) {
        bad = "max deliveries is at most 10000, max in flight at most 100000";
    } else if (b->config.member_max_consumers &&
               consumer_count_owned(b->consumers, s->member) >= b->config.member_max_consumers) {
        code = SPBE_QUOTA_EXCEEDED,
        bad = "the member created as many consumers as it may (member_max_consumers)";
    } else if (!subscription_room(b, s, request_id)) {
        return;
    } else {
        writer_drain(b);
        int rc = consumer_create(b->consumers, cfg, s->member);
        if (rc != SPBE_OK) {
            send_error(b, s->routing, s->routing_len, request_id, rc, "cannot create the consumer");
            return;
        }
    }
    if (bad) {
        metrics_rejected(&b->m, code);
        char name[80]; /* the name may be the invalid one refused */
        if (log_allow(&b->reject_log))
            log_event(LOG_INFO, "consume_rejected", "member=%s consumer=%s code=%s reason=\"%s\"",
                      s->member,
                      log_clean(cfg && cfg->name ? cfg->name : "-", 0, name, sizeof name),
                      spbe_error_name(code), bad);
        send_error(b, s->routing, s->routing_len, request_id, code, bad);
        return;
    }
    if (existing && !subscription_room(b, s, request_id))
        return;
    uint64_t id;
    if (consumer_attach(b->consumers, cfg->name, s, &id) != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_INTERNAL, "cannot attach");
        return;
    }
    log_event(LOG_INFO, "consumer_attached", "member=%s consumer=%s attachment=%llu", s->member,
              cfg->name, (unsigned long long)id);
    Spbe__V1__Subscribed ok = SPBE__V1__SUBSCRIBED__INIT;
    ok.subscription_id = id;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_SUBSCRIBED;
    reply.subscribed = &ok;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
}

static void
handle_ack(broker *b, session *s, uint64_t request_id, const Spbe__V1__Ack *ack)
{
    const Spbe__V1__ConsumerConfig *cfg = consumer_config(b->consumers, ack->consumer);
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    int code = SPBE_OK;
    const char *reason = NULL;
    if (!cfg) {
        code = SPBE_NOT_FOUND, reason = "no such consumer";
    } else if (!m || !registry_may_subscribe(m, cfg->pattern)) {
        code = SPBE_FORBIDDEN, reason = "no right to the consumer's pattern";
    } else {
        for (size_t i = 0; i < ack->n_items; i++) {
            const Spbe__V1__AckItem *it = ack->items[i];
            if (strlen(it->reason) > 200 ||
                !schema_utf8_valid((const uint8_t *)it->reason, strlen(it->reason))) {
                if (code == SPBE_OK)
                    code = SPBE_BAD_REQUEST,
                    reason = "a TERM's reason is UTF-8 of at most 200 bytes";
                continue;
            }
            int rc = consumer_ack(b->consumers, ack->consumer, it->topic, it->sequence,
                                  (int)it->kind, it->delay_ms, it->reason);
            if (rc != SPBE_OK && code == SPBE_OK) {
                code = rc;
                reason = "the message is not pending for this consumer (acknowledged already?)";
            }
        }
    }
    if (request_id == 0)
        return; /* fire and forget */
    if (code == SPBE_OK)
        send_ok(b, s, request_id);
    else
        send_error(b, s->routing, s->routing_len, request_id, code, reason);
}

static void
consumer_reply(broker *b, session *s, uint64_t request_id, Spbe__V1__ConsumerInfo *info)
{
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_CONSUMER;
    reply.consumer = info;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
}

static void
handle_consumer_get(broker *b, session *s, uint64_t request_id, const char *name)
{
    Spbe__V1__ConsumerInfo *info = NULL;
    int rc = consumer_info(b->consumers, name, &info);
    if (rc == SPBE_OK && !may_see_consumer(b, s, info))
        rc = SPBE_FORBIDDEN;
    if (rc == SPBE_OK)
        consumer_reply(b, s, request_id, info);
    else
        send_error(b, s->routing, s->routing_len, request_id, rc,
                   rc == SPBE_NOT_FOUND   ? "no such consumer"
                   : rc == SPBE_FORBIDDEN ? "no right to see this consumer"
                                          : NULL);
    if (info)
        spbe__v1__consumer_info__free_unpacked(info, NULL);
}

typedef struct consumer_collect {
    broker *b;
    session *s;
    collect c;
} consumer_collect;

static void
collect_consumer(Spbe__V1__ConsumerInfo *info, void *arg)
{
    consumer_collect *cc = arg;
    if (!may_see_consumer(cc->b, cc->s, info) || collect_push(&cc->c, info))
        spbe__v1__consumer_info__free_unpacked(info, NULL);
}

static void
handle_consumer_list(broker *b, session *s, uint64_t request_id)
{
    consumer_collect cc = {.b = b, .s = s};
    consumer_each(b->consumers, collect_consumer, &cc);
    Spbe__V1__Consumers list = SPBE__V1__CONSUMERS__INIT;
    list.consumers = (Spbe__V1__ConsumerInfo **)cc.c.items;
    list.n_consumers = cc.c.n;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_CONSUMERS;
    reply.consumers = &list;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
    for (size_t i = 0; i < cc.c.n; i++)
        spbe__v1__consumer_info__free_unpacked(cc.c.items[i], NULL);
    free(cc.c.items);
}

static void
send_count(broker *b, session *s, uint64_t request_id, uint64_t n)
{
    Spbe__V1__Count count = SPBE__V1__COUNT__INIT;
    count.count = n;
    Spbe__V1__Reply reply = SPBE__V1__REPLY__INIT;
    reply.request_id = request_id;
    reply.body_case = SPBE__V1__REPLY__BODY_COUNT;
    reply.count = &count;
    send_reply(b, s->routing, s->routing_len, &reply, NULL, 0);
}

/* A member's signed statement that it received a topic up to a sequence: checked,
 * logged as a leaf with the receipt kept for evidence. Committed at once (after the
 * writer's groups): delivery receipts are cumulative and few. */
static void
handle_delivery_ack(broker *b, session *s, uint64_t request_id, const Spbe__V1__DeliveryAck *da)
{
    const Spbe__V1__Member *m = registry_find_member(b->registry, s->member);
    Spbe__V1__DeliveryReceipt *dr = NULL;
    const char *bad = NULL;
    int code = SPBE_BAD_REQUEST;
    store_reader *rd = NULL;
    store_topic_info t;
    if (!da->receipt || !m || m->public_key.len != WIRE_KEY_BYTES)
        bad = "a delivery receipt is required";
    else if (wire_delivery_verify(da->receipt, m->public_key.data, &dr) != SPBE_OK)
        code = SPBE_BAD_SIGNATURE, bad = "the receipt's signature does not verify with your key";
    else if (strcmp(dr->member, s->member) != 0)
        code = SPBE_FORBIDDEN, bad = "a receipt speaks for the session's own member";
    else if (!wire_topic_valid(dr->topic))
        code = SPBE_INVALID_TOPIC, bad = "invalid topic";
    else if (!may_read_topic(b, s, dr->topic))
        code = SPBE_FORBIDDEN, bad = "no right to read this topic";
    else if (store_reader_begin(b->store, &rd) != SPBE_OK ||
             store_topic_get(rd, dr->topic, &t) != SPBE_OK)
        code = SPBE_NOT_FOUND, bad = "no such topic";
    else if (dr->up_to == 0 || dr->up_to > t.last_sequence)
        bad = "up_to must be a sequence the topic has";
    store_reader_end(&rd);
    if (bad) {
        if (dr)
            spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
        send_error(b, s->routing, s->routing_len, request_id, code, bad);
        return;
    }
    size_t len = spbe__v1__signed_delivery_receipt__get_packed_size(da->receipt);
    uint8_t *bytes = malloc(len ? len : 1);
    if (bytes)
        spbe__v1__signed_delivery_receipt__pack(da->receipt, bytes);
    writer_drain(b);
    uint64_t leaf;
    uint8_t root[WIRE_HASH_BYTES];
    store_tree_head(b->store, &leaf, root); /* the leaf it gets: nothing else commits now */
    store_op op = {.kind = STORE_OP_DELIVERY_PUT,
                   .topic_id = t.id,
                   .sequence = dr->up_to,
                   .record = bytes,
                   .record_len = len};
    snprintf(op.consumer, sizeof op.consumer, "%s", s->member);
    int ops_rc = SPBE_INTERNAL;
    if (bytes)
        store_apply(b->store, NULL, 0, &op, 1, 0, &ops_rc);
    free(bytes);
    if (ops_rc == SPBE_OK) {
        log_event(LOG_INFO, "delivery_receipt", "member=%s topic=%s up_to=%llu leaf=%llu",
                  s->member, dr->topic, (unsigned long long)dr->up_to, (unsigned long long)leaf);
        send_count(b, s, request_id, leaf);
    } else {
        send_error(b, s->routing, s->routing_len, request_id, ops_rc, "cannot store the receipt");
    }
    spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
}

static void
handle_consumer_delete(broker *b, session *s, uint64_t request_id, const char *name)
{
    if (!consumer_config(b->consumers, name)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_NOT_FOUND, "no such consumer");
        return;
    }
    if (!may_change_consumer(b, s, name)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "only the consumer's owner or an admin may delete it");
        return;
    }
    writer_drain(b);
    int rc = consumer_delete(b->consumers, name);
    if (rc == SPBE_OK)
        send_ok(b, s, request_id);
    else
        send_error(b, s->routing, s->routing_len, request_id, rc, "cannot delete the consumer");
}

typedef struct dlq_scan {
    uint64_t want, last;
    store_append_item *items;
    size_t n;
    int code;
} dlq_scan;

/* Copies one dead letter's original message out of the map, as an item to append again. */
static int
dlq_take(const store_message *m, void *arg)
{
    dlq_scan *d = arg;
    Spbe__V1__SignedMessage *sm = NULL, *osm = NULL;
    Spbe__V1__Message *msg = NULL, *orig = NULL;
    Spbe__V1__DeadLetter *dl = NULL;
    d->last = m->sequence;
    if (wire_envelope_decode(m->data, m->len, &sm, &msg, NULL) == SPBE_OK &&
        (dl = spbe__v1__dead_letter__unpack(NULL, msg->payload.len, msg->payload.data)) != NULL &&
        wire_envelope_decode(dl->message.data, dl->message.len, &osm, &orig, NULL) == SPBE_OK) {
        store_append_item *it = &d->items[d->n];
        memset(it, 0, sizeof *it);
        it->topic = strdup(orig->topic);
        it->sender = strdup(orig->sender);
        uint8_t *id = malloc(WIRE_ID_BYTES), *data = malloc(dl->message.len ? dl->message.len : 1);
        if (id && data && it->topic && it->sender) {
            memcpy(id, orig->id.data, WIRE_ID_BYTES);
            memcpy(data, dl->message.data, dl->message.len);
            it->id = id;
            it->data = data;
            it->len = dl->message.len;
            it->no_dedup = 1;
            d->n++;
        } else {
            free(id);
            free(data);
            free((void *)it->topic);
            free((void *)it->sender);
            d->code = SPBE_INTERNAL;
        }
    } /* a dead letter that does not decode is dropped with the others: it cannot go back */
    if (dl)
        spbe__v1__dead_letter__free_unpacked(dl, NULL);
    wire_envelope_free(&osm, &orig);
    wire_envelope_free(&sm, &msg);
    return d->code != SPBE_OK || d->n >= d->want;
}

#define DLQ_REPLAY_MAX 10000

/* Moves dead letters (replay: back into their topics) or drops them (purge), oldest first. */
static void
handle_dlq(broker *b, session *s, uint64_t request_id, const char *consumer, uint64_t count,
           int replay)
{
    if (!consumer_name_valid(consumer)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_BAD_REQUEST,
                   "consumer name must be 1 to 64 of [a-z0-9_-]");
        return;
    }
    if (!may_change_consumer(b, s, consumer)) {
        send_error(b, s->routing, s->routing_len, request_id, SPBE_FORBIDDEN,
                   "only the consumer's owner or an admin may change its dead letters");
        return;
    }
    char topic[WIRE_TOPIC_MAX_BYTES + 16];
    snprintf(topic, sizeof topic, "$sys.dlq.%s", consumer);
    writer_drain(b);
    store_reader *rd;
    store_topic_info t;
    int rc = store_reader_begin(b->store, &rd);
    if (rc == SPBE_OK && store_topic_get(rd, topic, &t) != SPBE_OK) {
        store_reader_end(&rd);
        send_count(b, s, request_id, 0); /* no dead letters */
        return;
    }
    dlq_scan d = {.want = count && count < DLQ_REPLAY_MAX ? count : DLQ_REPLAY_MAX,
                  .code = SPBE_OK};
    uint64_t n_messages = t.messages;
    if (rc == SPBE_OK && replay) {
        d.items = calloc(d.want, sizeof *d.items);
        uint64_t next;
        if (!d.items)
            d.code = SPBE_INTERNAL;
        else
            store_read_from(rd, t.id, t.first_sequence, (size_t)d.want, dlq_take, &d, &next);
    } else if (rc == SPBE_OK) {
        d.last = count && t.first_sequence + count - 1 < t.last_sequence
                     ? t.first_sequence + count - 1
                     : t.last_sequence;
        n_messages = t.messages ? d.last - t.first_sequence + 1 : 0;
    }
    store_reader_end(&rd);
    if (rc == SPBE_OK)
        rc = d.code;
    if (rc == SPBE_OK && d.last) {
        store_op trim;
        memset(&trim, 0, sizeof trim);
        trim.kind = STORE_OP_TRIM;
        trim.topic_id = t.id;
        trim.sequence = d.last;
        int ops_rc = SPBE_INTERNAL;
        int items_rc = store_apply(b->store, d.items, d.n, &trim, 1, 0, &ops_rc);
        rc = items_rc != SPBE_OK ? items_rc : ops_rc;
    }
    uint64_t moved = replay ? d.n : n_messages;
    for (size_t i = 0; i < d.n; i++) {
        store_append_item *it = &d.items[i];
        if (rc == SPBE_OK) {
            router_publish(b->router, it->topic_id, it->topic, it->sequence, it->accepted_ns,
                           it->data, it->len);
            consumer_publish(b->consumers, it->topic_id, it->topic, it->sequence);
        }
        free((void *)it->topic);
        free((void *)it->sender);
        free((void *)it->id);
        free((void *)it->data);
    }
    free(d.items);
    if (rc != SPBE_OK) {
        send_error(b, s->routing, s->routing_len, request_id, rc,
                   rc == SPBE_STORAGE_FULL ? "no room to replay the dead letters"
                                           : "cannot change the dead letters");
        return;
    }
    log_event(LOG_INFO, replay ? "dead_letters_replayed" : "dead_letters_purged",
              "consumer=%s messages=%llu by=%s", consumer, (unsigned long long)moved, s->member);
    send_count(b, s, request_id, moved);
}

/* ------------------------------------------------------------ dispatch */

/* A PublishBatch: each message admitted as a publish of its own, with request id
 * rid + i, from a copy of its bytes (the group keeps them until the commit). The loop
 * reads a frame only while the filling group has room for a whole batch. */
static void
publish_batch(broker *b, session *s, uint64_t rid, const Spbe__V1__PublishBatch *pb)
{
    if (pb->n_messages == 0 || pb->n_messages > PUBLISH_BATCH_MAX) {
        char reason[96];
        snprintf(reason, sizeof reason, "a publish batch holds 1 to %d messages, not %zu",
                 PUBLISH_BATCH_MAX, pb->n_messages);
        metrics_rejected(&b->m, SPBE_BAD_REQUEST);
        send_error(b, s->routing, s->routing_len, rid, SPBE_BAD_REQUEST, reason);
        return;
    }
    admission adm = {.kind = KIND_PUBLISH};
    for (size_t i = 0; i < pb->n_messages; i++) {
        zmq_msg_t body;
        if (zmq_msg_init_size(&body, pb->messages[i].len) != 0) {
            reject_publish(b, s, rid + i, SPBE_INTERNAL, "out of memory", NULL, NULL);
            continue;
        }
        if (pb->messages[i].len)
            memcpy(zmq_msg_data(&body), pb->messages[i].data, pb->messages[i].len);
        admit(b, s, rid + i, &body, &adm);
        zmq_msg_close(&body);
    }
}

/* Handles one message from a peer: frames[0] routing id, [1] control, [2] body. */
static void
handle_message(broker *b, zmq_msg_t *frames, int n, int too_many)
{
    const uint8_t *routing = zmq_msg_data(&frames[0]);
    size_t routing_len = zmq_msg_size(&frames[0]);
    if (routing_len > ROUTING_MAX)
        return;
    if (n < 2 || too_many) {
        metrics_rejected(&b->m, SPBE_BAD_REQUEST);
        send_error(b, routing, routing_len, 0, SPBE_BAD_REQUEST,
                   n < 2 ? "a message needs a control frame"
                         : "too many frames: a message is a control frame and at most one body");
        return;
    }
    Spbe__V1__Command *cmd =
        spbe__v1__command__unpack(NULL, zmq_msg_size(&frames[1]), zmq_msg_data(&frames[1]));
    if (!cmd || cmd->body_case == SPBE__V1__COMMAND__BODY__NOT_SET) {
        metrics_rejected(&b->m, SPBE_BAD_REQUEST);
        if (log_allow(&b->reject_log))
            log_event(LOG_INFO, "bad_frame",
                      "code=BAD_REQUEST reason=\"control frame is not a Command\"");
        send_error(b, routing, routing_len, cmd ? cmd->request_id : 0, SPBE_BAD_REQUEST,
                   cmd ? "command has no body" : "control frame is not a Command");
        if (cmd)
            spbe__v1__command__free_unpacked(cmd, NULL);
        return;
    }
    zmq_msg_t *body = n >= 3 ? &frames[2] : NULL;
    const char *user_id = zmq_msg_gets(&frames[1], "User-Id");
    uint64_t rid = cmd->request_id;

    if (cmd->body_case == SPBE__V1__COMMAND__BODY_HELLO) {
        handle_hello(b, routing, routing_len, rid, cmd->hello, user_id);
        spbe__v1__command__free_unpacked(cmd, NULL);
        return;
    }
    session *s = session_find(b, routing, routing_len);
    if (!s || !user_id || strcmp(user_id, s->member) != 0) {
        /* UNAVAILABLE, not BAD_REQUEST: a client whose session the broker lost (restart,
         * idle expiry) learns it must say hello again */
        send_error(b, routing, routing_len, rid, SPBE_UNAVAILABLE, "no session: send hello first");
        spbe__v1__command__free_unpacked(cmd, NULL);
        return;
    }
    s->last_seen_ms = now_ms();
    if (s->revoked) {
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_PUBLISH)
            reject_publish(b, s, rid, SPBE_REVOKED, "member has been revoked", NULL, NULL);
        else if (cmd->body_case == SPBE__V1__COMMAND__BODY_PUBLISH_BATCH &&
                 cmd->publish_batch->n_messages <= PUBLISH_BATCH_MAX)
            for (size_t i = 0; i < cmd->publish_batch->n_messages; i++)
                reject_publish(b, s, rid + i, SPBE_REVOKED, "member has been revoked", NULL, NULL);
        else
            send_error(b, routing, routing_len, rid, SPBE_REVOKED, "member has been revoked");
        spbe__v1__command__free_unpacked(cmd, NULL);
        return;
    }
    if (body && cmd->body_case != SPBE__V1__COMMAND__BODY_PUBLISH &&
        cmd->body_case != SPBE__V1__COMMAND__BODY_REQUEST &&
        cmd->body_case != SPBE__V1__COMMAND__BODY_RESPOND) {
        send_error(b, routing, routing_len, rid, SPBE_BAD_REQUEST,
                   "only publish, request and respond carry a body frame");
        spbe__v1__command__free_unpacked(cmd, NULL);
        return;
    }
    Spbe__V1__Reply ok = SPBE__V1__REPLY__INIT;
    ok.request_id = rid;
    admission adm = {.kind = KIND_PUBLISH};
    switch (cmd->body_case) {
    case SPBE__V1__COMMAND__BODY_PUBLISH:
        admit(b, s, rid, body, &adm);
        break;
    case SPBE__V1__COMMAND__BODY_PUBLISH_BATCH:
        publish_batch(b, s, rid, cmd->publish_batch);
        break;
    case SPBE__V1__COMMAND__BODY_REQUEST:
        adm.kind = KIND_REQUEST;
        adm.service = cmd->request->service;
        adm.timeout_ms = cmd->request->timeout_ms;
        admit(b, s, rid, body, &adm);
        break;
    case SPBE__V1__COMMAND__BODY_RESPOND:
        adm.kind = KIND_RESPOND;
        adm.ref = cmd->respond->request_ref;
        admit(b, s, rid, body, &adm);
        break;
    case SPBE__V1__COMMAND__BODY_SERVE:
        handle_serve(b, s, rid, cmd->serve->service, 1);
        break;
    case SPBE__V1__COMMAND__BODY_UNSERVE:
        handle_serve(b, s, rid, cmd->unserve->service, 0);
        break;
    case SPBE__V1__COMMAND__BODY_CONSUME:
        handle_consume(b, s, rid, cmd->consume);
        break;
    case SPBE__V1__COMMAND__BODY_ACK:
        handle_ack(b, s, rid, cmd->ack);
        break;
    case SPBE__V1__COMMAND__BODY_CONSUMER_GET:
        handle_consumer_get(b, s, rid, cmd->consumer_get->name);
        break;
    case SPBE__V1__COMMAND__BODY_CONSUMER_LIST:
        handle_consumer_list(b, s, rid);
        break;
    case SPBE__V1__COMMAND__BODY_CONSUMER_DELETE:
        handle_consumer_delete(b, s, rid, cmd->consumer_delete->name);
        break;
    case SPBE__V1__COMMAND__BODY_DLQ_REPLAY:
        handle_dlq(b, s, rid, cmd->dlq_replay->consumer, cmd->dlq_replay->count, 1);
        break;
    case SPBE__V1__COMMAND__BODY_DLQ_PURGE:
        handle_dlq(b, s, rid, cmd->dlq_purge->consumer, 0, 0);
        break;
    case SPBE__V1__COMMAND__BODY_SUBSCRIBE:
        handle_subscribe(b, s, rid, cmd->subscribe);
        break;
    case SPBE__V1__COMMAND__BODY_UNSUBSCRIBE:
        if (router_unsubscribe(b->router, s, cmd->unsubscribe->subscription_id) == SPBE_OK ||
            consumer_detach(b->consumers, s, cmd->unsubscribe->subscription_id) == SPBE_OK)
            send_reply(b, routing, routing_len, &ok, NULL, 0);
        else
            send_error(b, routing, routing_len, rid, SPBE_NOT_FOUND, "no such subscription");
        break;
    case SPBE__V1__COMMAND__BODY_PING:
        send_reply(b, routing, routing_len, &ok, NULL, 0);
        break;
    case SPBE__V1__COMMAND__BODY_BYE: /* no reply: the client closes right after */
        log_event(LOG_INFO, "session_closed", "member=%s reason=bye", s->member);
        session_close(b, s);
        break;
    case SPBE__V1__COMMAND__BODY_MEMBER_ADD:
        if (require_admin(b, s, rid))
            handle_member_add(b, s, rid, cmd->member_add);
        break;
    case SPBE__V1__COMMAND__BODY_MEMBER_REVOKE:
        if (require_admin(b, s, rid))
            handle_member_revoke(b, s, rid, cmd->member_revoke);
        break;
    case SPBE__V1__COMMAND__BODY_SESSION_LIST:
        handle_session_list(b, s, rid);
        break;
    case SPBE__V1__COMMAND__BODY_DELIVERY_ACK:
        handle_delivery_ack(b, s, rid, cmd->delivery_ack);
        break;
    case SPBE__V1__COMMAND__BODY_MEMBER_ROTATE: /* oneself, or an admin */
        handle_member_rotate(b, s, rid, cmd->member_rotate);
        break;
    case SPBE__V1__COMMAND__BODY_MEMBER_GET:
        handle_member_get(b, s, rid, cmd->member_get->name);
        break;
    case SPBE__V1__COMMAND__BODY_MEMBER_LIST:
        handle_member_list(b, s, rid);
        break;
    case SPBE__V1__COMMAND__BODY_TOPIC_LIST:
        handle_topic_list(b, s, rid);
        break;
    case SPBE__V1__COMMAND__BODY_TOPIC_GET:
        handle_topic_get(b, s, rid, cmd->topic_get->topic);
        break;
    case SPBE__V1__COMMAND__BODY_MESSAGE_GET:
        handle_message_get(b, s, rid, cmd->message_get);
        break;
    default:
        send_error(b, routing, routing_len, rid, SPBE_BAD_REQUEST, "unknown command");
        break;
    }
    spbe__v1__command__free_unpacked(cmd, NULL);
}

/* Reads one whole message from the ROUTER. Returns frames read (0: none waiting). */
static int
receive_message(broker *b, zmq_msg_t frames[3], int *too_many)
{
    int n = 0, more = 1;
    *too_many = 0;
    while (more) {
        zmq_msg_t scratch, *f = n < 3 ? &frames[n] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, b->socket, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(f);
            return n;
        }
        more = zmq_msg_more(f);
        if (n >= 3) {
            *too_many = 1;
            zmq_msg_close(f);
        } else {
            n++;
        }
    }
    return n;
}

static void
expire_sessions(broker *b, int64_t now)
{
    int64_t limit = 3LL * b->config.heartbeat_ms;
    for (size_t i = 0; i < b->n_sessions;) {
        session *s = b->sessions[i];
        if (now - s->last_seen_ms > limit) {
            log_event(LOG_INFO, "session_closed", "member=%s reason=idle", s->member);
            session_close(b, s);
        } else {
            i++;
        }
    }
}

static void
snapshot_consumer(Spbe__V1__ConsumerInfo *info, void *arg)
{
    if (collect_push(arg, info))
        spbe__v1__consumer_info__free_unpacked(info, NULL);
}

/* What the HTTP thread shows of the I/O thread's own state: consumers and sessions. */
static void
metrics_snapshot_publish(broker *b)
{
    collect c = {0};
    consumer_each(b->consumers, snapshot_consumer, &c);
    Spbe__V1__Consumers list = SPBE__V1__CONSUMERS__INIT;
    list.consumers = (Spbe__V1__ConsumerInfo **)c.items;
    list.n_consumers = c.n;
    size_t len = spbe__v1__consumers__get_packed_size(&list);
    uint8_t *packed = malloc(len ? len : 1);
    if (packed)
        spbe__v1__consumers__pack(&list, packed);
    for (size_t i = 0; i < c.n; i++)
        spbe__v1__consumer_info__free_unpacked(c.items[i], NULL);
    free(c.items);
    size_t cap = 64 + b->n_sessions * 160, used = 0;
    char *json = malloc(cap);
    if (json) {
        used += (size_t)snprintf(json, cap, "[");
        for (size_t i = 0; i < b->n_sessions && used < cap; i++) {
            const session *t = b->sessions[i];
            time_t secs = (time_t)(t->opened_ns / 1000000000);
            struct tm tm;
            char since[32];
            gmtime_r(&secs, &tm);
            strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
            used += (size_t)snprintf(json + used, cap - used,
                                     "%s{\"member\":\"%s\",\"since\":\"%s\",\"revoked\":%s}",
                                     i ? "," : "", t->member, since, t->revoked ? "true" : "false");
        }
        if (used < cap)
            snprintf(json + used, cap - used, "]");
    }
    metrics_publish(&b->m, packed, packed ? len : 0, json);
}

int
broker_step(broker *b, long max_wait_ms)
{
    group_submit_ready(b); /* a group left waiting by a commit of the I/O thread's own */
    /* with every group busy or full, leave new messages queued in ZeroMQ (back-pressure) */
    int can_receive = b->filling ? group_has_room(b->filling) : b->free_groups != NULL;
    zmq_pollitem_t items[] = {{b->socket, 0, can_receive ? ZMQ_POLLIN : 0, 0},
                              {b->zap, 0, ZMQ_POLLIN, 0},
                              {writer_socket(b->writer), 0, ZMQ_POLLIN, 0}};
    long timeout = b->pump == 1 ? 0 : b->pump == 2 ? 5 : 200;
    if (max_wait_ms >= 0 && max_wait_ms < timeout)
        timeout = max_wait_ms;
    long due = consumer_next_due_ms(b->consumers);
    if (due >= 0 && due < timeout)
        timeout = due;
    int64_t deadline = service_next_deadline(b->services);
    if (deadline != INT64_MAX) {
        int64_t left = (deadline - wire_now_ns()) / 1000000 + 1;
        if (left < timeout)
            timeout = left < 0 ? 0 : (long)left;
    }
    if (b->batched && timeout > 1)
        timeout = 1; /* a batch waits for room in its session's queue */
    if (b->free_groups && consumer_dirty(b->consumers) && timeout > 1)
        timeout = 1; /* let acks gather for a moment, then commit them */
    if (zmq_poll(items, 3, timeout) < 0) {
        if (errno == EINTR)
            return 0;
        log_event(LOG_ERROR, "poll_failed", "reason=\"%s\"", zmq_strerror(errno));
        return -1;
    }
    while (zmq_poll(&items[1], 1, 0) > 0 && (items[1].revents & ZMQ_POLLIN))
        zap_handle(b);
    groups_collect(b, 1);
    if (!b->filling && b->free_groups) {
        b->filling = b->free_groups;
        b->free_groups = b->filling->next;
        b->filling->n_batch = b->filling->n_verified = 0;
        b->filling->check_ns = b->filling->verify_ns = 0;
    }
    if (b->filling) {
        uint64_t t_check = mono_ns();
        for (int i = 0; i < DRAIN_MAX && group_has_room(b->filling); i++) {
            zmq_msg_t frames[3];
            int too_many;
            int n = receive_message(b, frames, &too_many);
            if (n == 0)
                break;
            handle_message(b, frames, n, too_many);
            for (int k = 0; k < n; k++)
                zmq_msg_close(&frames[k]);
        }
        b->filling->check_ns += mono_ns() - t_check;
        group_verify(b, b->filling);
        group_submit_ready(b);
        if (b->filling && !b->filling->n_batch) {
            b->filling->next = b->free_groups;
            b->free_groups = b->filling;
            b->filling = NULL;
        }
    }
    b->pump = router_pump(b->router, PUMP_BUDGET);
    if (consumer_pump(b->consumers, PUMP_BUDGET))
        b->pump = 1;
    batches_flush(b); /* the deliveries of this turn, a frame per session */
    pending_request *late;
    while ((late = service_pending_expired(b->services, wire_now_ns())) != NULL) {
        metrics_add(&b->m.request_timeouts, 1);
        late->next = NULL;
        requests_fail(b, late, SPBE_TIMEOUT, "no reply from the serving member in time");
    }
    int64_t now = now_ms();
    atomic_store(&b->m.loop_ns, wire_now_ns());
    log_limit_flush(&b->reject_log);
    atomic_store(&b->m.sessions, b->n_sessions);
    if (b->http && now >= b->next_snapshot_ms) {
        metrics_snapshot_publish(b);
        b->next_snapshot_ms = now + 250;
    }
    if (now >= b->next_head_ms) {
        tree_head_commit(b);
        b->next_head_ms = now + b->config.tree_head_ms;
    }
    if (now >= b->next_expire_ms) {
        expire_sessions(b, now);
        b->next_expire_ms = now + b->config.heartbeat_ms;
    }
    return 0;
}

int
broker_run(broker *b, volatile sig_atomic_t *stop)
{
    while (!*stop)
        if (broker_step(b, -1) != 0)
            return -1;
    /* what the writer holds, and what was waiting for it, is committed: its publishers
     * get their receipts */
    while (b->in_writer > 0 || (b->filling && b->filling->n_batch)) {
        group_submit_ready(b);
        zmq_pollitem_t item = {writer_socket(b->writer), 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 1000);
        groups_collect(b, 1);
    }
    if (consumer_dirty(b->consumers)) { /* the last acknowledgements and positions */
        consumer_batch cb;
        consumer_take(b->consumers, &cb);
        for (size_t i = 0; i < cb.n_letters; i++)
            cb.letters[i].code = SPBE_UNAVAILABLE;
        int ops_rc = SPBE_OK;
        store_apply(b->store, cb.letters, cb.n_letters, cb.ops, cb.n_ops, b->config.dedup_window_ns,
                    &ops_rc);
        consumer_batch_done(b->consumers, &cb);
    }
    tree_head_commit(b); /* the last head covers everything accepted */
    batches_flush(b);
    for (size_t i = 0; i < b->n_sessions; i++)
        send_goodbye(b, b->sessions[i], SPBE_UNAVAILABLE, "broker shutting down");
    uint64_t delivered, deferred, caught_up;
    router_stats(b->router, &delivered, &deferred, &caught_up);
    log_event(LOG_INFO, "delivery_totals", "delivered=%llu deferred=%llu from_store=%llu",
              (unsigned long long)delivered, (unsigned long long)deferred,
              (unsigned long long)caught_up);
    log_event(LOG_INFO, "service_totals", "requests=%llu responses=%llu timeouts=%llu",
              (unsigned long long)metrics_get(&b->m.requests),
              (unsigned long long)metrics_get(&b->m.responses),
              (unsigned long long)metrics_get(&b->m.request_timeouts));
    uint64_t rejected = 0;
    for (int code = 0; code < METRICS_CODES; code++)
        rejected += metrics_get(&b->m.rejected[code]);
    stage_clock *c = &b->clock;
    double per = c->messages ? 1e3 * (double)c->messages : 1;
    log_event(LOG_INFO, "stopped",
              "accepted=%llu rejected=%llu duplicates=%llu commits=%llu messages_per_commit=%.1f "
              "us_per_message: receive_check=%.2f verify=%.2f commit=%.2f receipt=%.2f fanout=%.2f",
              (unsigned long long)metrics_get(&b->m.accepted), (unsigned long long)rejected,
              (unsigned long long)metrics_get(&b->m.duplicates),
              (unsigned long long)metrics_get(&b->m.commits),
              c->groups ? (double)c->messages / (double)c->groups : 0.0, (double)c->check_ns / per,
              (double)c->verify_ns / per, (double)c->commit_ns / per, (double)c->receipt_ns / per,
              (double)c->fanout_ns / per);
    return 0;
}
