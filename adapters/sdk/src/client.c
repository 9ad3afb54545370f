/* client.c - libspbe: sessions, publishing, subscriptions, dispatch. */
#include "spbe/spbe.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "identity.h"
#include "wire.h"

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:7400"
#define DEFAULT_TIMEOUT_MS 5000
#define FRAME_BATCH 256       /* receipts and deliveries the broker may send in one frame */
#define PUBLISH_BATCH_MAX 256 /* publishes sent in one PublishBatch at most */

/* A frame pair received while a synchronous call waited for its own reply. */
typedef struct queued {
    Spbe__V1__BrokerFrame *frame;
    uint8_t *body;
    size_t body_len;
    struct queued *next;
} queued;

typedef struct sender_key {
    char name[WIRE_MEMBER_MAX_BYTES + 1];
    uint8_t key[WIRE_KEY_BYTES];
    int revoked;
    struct sender_key *next;
} sender_key;

/* An async publish whose receipt has not come: kept (with its bytes) until it does, so
 * that it can be sent again after a reconnect; dedup makes the resend safe. */
typedef struct in_flight {
    uint64_t request_id; /* of the latest send; 0 while not sent */
    uint64_t token;      /* what the caller holds, stable across resends */
    uint8_t *bytes;
    size_t len;
    uint64_t respond_ref; /* a reply to this request (Respond), not a publish */
    int done, resent;
    spbe_receipt *sync_out; /* a synchronous publish waits for this one */
    int *sync_done;
} in_flight;

/* The next sequence a subscription expects in one topic. */
typedef struct position {
    char topic[256];
    uint64_t next;
} position;

typedef struct client_sub {
    int is_consumer;        /* a durable consumer's attachment (named by pattern) */
    uint64_t local_id;      /* what the caller holds */
    uint64_t broker_id;     /* the broker's id in the current session; 0 while pending */
    uint64_t resub_request; /* the Subscribe sent after a reconnect */
    char pattern[256];
    spbe_start start;
    uint64_t start_sequence;
    position *pos;
    size_t n_pos, cap_pos;
    struct client_sub *next;
} client_sub;

struct spbe_client {
    void *ctx, *socket;
    identity id;
    wire_sigcache *sigcache; /* batch roots of receipts (and messages) verified */
    char endpoint[256];
    char client_name[64];
    uint8_t broker_key[WIRE_KEY_BYTES];
    int timeout_ms;
    int heartbeat_ms;
    uint64_t next_request;
    int64_t last_sent_ms, last_received_ms;
    int closed_code; /* non-zero once the session ended for good */
    int wake;        /* set by a handler to end the current dispatch */
    int dispatching; /* inside spbe_dispatch: plain acks wait to go out together */
    char ack_consumer[256];
    struct pending_ack *acks;     /* ACKS_MAX, allocated at the first coalesced ack */
    Spbe__V1__AckItem **ack_ptrs; /* ACKS_MAX, with acks */
    size_t n_acks;
    int connected; /* a session is established */
    int reconnect;
    uint64_t hello_request;
    int64_t next_hello_ms;
    queued *head, *tail;
    sender_key *senders;
    in_flight *flights; /* [head, sent) sent in request order, [sent, count) not yet */
    size_t f_head, f_sent, f_count, f_cap;
    int publish_batch_asked; /* spbe_options.publish_batch */
    int publish_batch;       /* publishes sent in one frame: the asked, within the broker's */
    uint64_t in_flight, next_token;
    client_sub *subs;
    uint64_t next_local_sub;
    struct served *served;
    spbe_receipt_fn on_receipt;
    void *receipt_arg;
    spbe_delivery_fn on_delivery;
    void *delivery_arg;
    char error[512];
};

/* A service this client serves. */
typedef struct served {
    char service[256];
    spbe_request_fn fn;
    void *arg;
    struct served *next;
} served;

static void session_lost(spbe_client *c, const char *why);
static int flights_send(spbe_client *c);
static void welcome_take(spbe_client *c, const Spbe__V1__Welcome *w);

const char *
spbe_version(void)
{
    return "0.1.0";
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
fail(spbe_client *c, int code, const char *fmt, ...)
{
    if (c) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error, sizeof c->error, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *
spbe_last_error(const spbe_client *c)
{
    return c && c->error[0] ? c->error : "no error";
}

const char *
spbe_member(const spbe_client *c)
{
    return c->id.member;
}

const uint8_t *
spbe_broker_key(const spbe_client *c)
{
    return c->broker_key;
}

void
spbe_set_receipt_handler(spbe_client *c, spbe_receipt_fn fn, void *arg)
{
    c->on_receipt = fn;
    c->receipt_arg = arg;
}

void
spbe_set_delivery_handler(spbe_client *c, spbe_delivery_fn fn, void *arg)
{
    c->on_delivery = fn;
    c->delivery_arg = arg;
}

size_t
spbe_in_flight(const spbe_client *c)
{
    return (size_t)c->in_flight;
}

/* ------------------------------------------------------------ frames */

#define ACKS_MAX 512 /* plain acks sent in one Ack command at most */

/* A plain acknowledgement made in a delivery handler, sent with the others of the same
 * dispatch in one Ack command: one frame instead of one each. */
typedef struct pending_ack {
    char topic[256];
    uint64_t sequence;
    Spbe__V1__AckItem item; /* filled when sent: on the heap, no large stack frame */
} pending_ack;

static int send_frame_bytes(spbe_client *c, Spbe__V1__Command *cmd, const uint8_t *body,
                            size_t body_len);

/* Sends the coalesced acks (fire and forget, as each would have gone alone). */
static void
acks_flush(spbe_client *c)
{
    if (c->n_acks == 0)
        return;
    for (size_t i = 0; i < c->n_acks; i++) {
        pending_ack *a = &c->acks[i];
        spbe__v1__ack_item__init(&a->item);
        a->item.topic = a->topic;
        a->item.sequence = a->sequence;
        a->item.kind = SPBE__V1__ACK_KIND__ACK;
        c->ack_ptrs[i] = &a->item;
    }
    Spbe__V1__Ack ack = SPBE__V1__ACK__INIT;
    ack.consumer = c->ack_consumer;
    ack.items = c->ack_ptrs;
    ack.n_items = c->n_acks;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_ACK;
    cmd.ack = &ack;
    cmd.request_id = 0; /* no answer; what is lost is delivered again */
    c->n_acks = 0;
    if (c->connected && !c->closed_code)
        send_frame_bytes(c, &cmd, NULL, 0);
}

/* Sends a command, after the acks made before it. */
static int
send_command(spbe_client *c, Spbe__V1__Command *cmd, const uint8_t *body, size_t body_len)
{
    acks_flush(c);
    return send_frame_bytes(c, cmd, body, body_len);
}

static int
send_frame_bytes(spbe_client *c, Spbe__V1__Command *cmd, const uint8_t *body, size_t body_len)
{
    uint8_t stack[512];
    size_t len = spbe__v1__command__get_packed_size(cmd);
    uint8_t *buf = len <= sizeof stack ? stack : malloc(len);
    if (!buf)
        return fail(c, SPBE_INTERNAL, "out of memory");
    spbe__v1__command__pack(cmd, buf);
    int rc = zmq_send(c->socket, buf, len, body ? ZMQ_SNDMORE : 0);
    if (rc >= 0 && body)
        rc = zmq_send(c->socket, body, body_len, 0);
    if (buf != stack)
        free(buf);
    if (rc < 0)
        return fail(c, SPBE_UNAVAILABLE, "cannot send: %s", zmq_strerror(errno));
    c->last_sent_ms = now_ms();
    return SPBE_OK;
}

/* Waits up to timeout_ms for one broker message; SPBE_OK with *frame, SPBE_TIMEOUT, or
 * SPBE_UNAVAILABLE when the broker has been silent for three heartbeats. */
static int
receive_frame(spbe_client *c, int timeout_ms, Spbe__V1__BrokerFrame **frame, uint8_t **body,
              size_t *body_len)
{
    *frame = NULL;
    *body = NULL;
    *body_len = 0;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
    int polled = 0;
    if (c->connected && c->f_sent < c->f_count) {
        int rc = flights_send(c); /* publishes gathering for a batch go before any wait */
        if (rc != SPBE_OK && !c->reconnect)
            return rc;
    }
    for (;;) {
        int64_t now = now_ms();
        if (c->heartbeat_ms > 0 && c->connected) {
            if (now - c->last_sent_ms >= c->heartbeat_ms) {
                Spbe__V1__Ping ping = SPBE__V1__PING__INIT;
                Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
                cmd.request_id = 0; /* replies to request 0 are heartbeats */
                cmd.body_case = SPBE__V1__COMMAND__BODY_PING;
                cmd.ping = &ping;
                send_command(c, &cmd, NULL, 0);
            }
            if (now - c->last_received_ms > 3LL * c->heartbeat_ms + 1000) {
                if (!c->reconnect)
                    return fail(c, SPBE_UNAVAILABLE, "broker silent for %d ms",
                                3 * c->heartbeat_ms);
                session_lost(c, "broker silent for three heartbeats");
            }
        }
        if (!c->connected && c->reconnect && !c->closed_code && now >= c->next_hello_ms) {
            Spbe__V1__Hello hello = SPBE__V1__HELLO__INIT;
            hello.protocol_version = WIRE_PROTOCOL_VERSION;
            hello.member = c->id.member;
            hello.client = c->client_name;
            hello.batch = FRAME_BATCH;
            Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
            cmd.request_id = c->hello_request = ++c->next_request;
            cmd.body_case = SPBE__V1__COMMAND__BODY_HELLO;
            cmd.hello = &hello;
            send_command(c, &cmd, NULL, 0);
            c->next_hello_ms = now + (c->heartbeat_ms > 1000 ? c->heartbeat_ms : 1000);
        }
        int64_t wait = deadline - now;
        if (wait < 0)
            return SPBE_TIMEOUT;
        if (c->heartbeat_ms > 0 && wait > c->heartbeat_ms / 2)
            wait = c->heartbeat_ms / 2;
        /* a frame already queued is taken without a poll (a system call each) */
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, c->socket, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&msg);
            if (e != EAGAIN && e != EINTR)
                return fail(c, SPBE_UNAVAILABLE, "receive: %s", zmq_strerror(e));
            if (wait == 0 && polled)
                return SPBE_TIMEOUT;
            zmq_pollitem_t item = {c->socket, 0, ZMQ_POLLIN, 0};
            int n = zmq_poll(&item, 1, (long)wait);
            if (n < 0 && errno != EINTR)
                return fail(c, SPBE_UNAVAILABLE, "poll: %s", zmq_strerror(errno));
            polled = 1;
            continue;
        }
        c->last_received_ms = now_ms();
        Spbe__V1__BrokerFrame *f =
            spbe__v1__broker_frame__unpack(NULL, zmq_msg_size(&msg), zmq_msg_data(&msg));
        int more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        while (more) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, c->socket, 0) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            if (!*body && zmq_msg_size(&msg) > 0) {
                *body = malloc(zmq_msg_size(&msg));
                if (*body) {
                    memcpy(*body, zmq_msg_data(&msg), zmq_msg_size(&msg));
                    *body_len = zmq_msg_size(&msg);
                }
            }
            zmq_msg_close(&msg);
        }
        if (!f) {
            free(*body);
            *body = NULL;
            continue; /* not a frame of ours: ignore */
        }
        *frame = f;
        return SPBE_OK;
    }
}

static void
enqueue(spbe_client *c, Spbe__V1__BrokerFrame *f, uint8_t *body, size_t body_len)
{
    queued *q = malloc(sizeof *q);
    if (!q) {
        spbe__v1__broker_frame__free_unpacked(f, NULL);
        free(body);
        return;
    }
    q->frame = f;
    q->body = body;
    q->body_len = body_len;
    q->next = NULL;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
}

/* A batch that holds the reply to request_id (a Publish sent through spbe_call): that
 * reply comes out as a frame of its own, returned, and the rest of the batch is queued
 * for the next dispatch. Any other frame is returned as it is. */
static Spbe__V1__BrokerFrame *
batch_take_reply(spbe_client *c, Spbe__V1__BrokerFrame *f, uint64_t request_id)
{
    if (f->body_case != SPBE__V1__BROKER_FRAME__BODY_BATCH)
        return f;
    Spbe__V1__FrameBatch *fb = f->batch;
    for (size_t i = 0; i < fb->n_replies; i++) {
        if (fb->replies[i]->request_id != request_id)
            continue;
        Spbe__V1__BrokerFrame *own = malloc(sizeof *own);
        if (!own)
            return f;
        spbe__v1__broker_frame__init(own);
        own->body_case = SPBE__V1__BROKER_FRAME__BODY_REPLY;
        own->reply = fb->replies[i];
        memmove(&fb->replies[i], &fb->replies[i + 1],
                (fb->n_replies - i - 1) * sizeof *fb->replies);
        fb->n_replies--;
        enqueue(c, f, NULL, 0);
        return own;
    }
    return f;
}

/* The broker ends the session: UNAVAILABLE with reconnect on means a new one is sought,
 * anything else ends this client for good. Returns the goodbye's code. */
static int
goodbye_take(spbe_client *c, const Spbe__V1__Goodbye *gb)
{
    int code = gb->code ? (int)gb->code : SPBE_UNAVAILABLE;
    if (code == SPBE_UNAVAILABLE && c->reconnect)
        session_lost(c, gb->reason);
    else
        c->closed_code = code;
    return code;
}

/* Whether cmd may be sent again in a new session when the one it was sent in is lost
 * before its reply: what the session serves, subscribes to or is attached to (state
 * of the session, which ended with it), and questions that change nothing. Anything
 * else may have taken effect and is not repeated. */
static int
resendable(const Spbe__V1__Command *cmd)
{
    switch (cmd->body_case) {
    case SPBE__V1__COMMAND__BODY_SUBSCRIBE:
    case SPBE__V1__COMMAND__BODY_SERVE:
    case SPBE__V1__COMMAND__BODY_CONSUME:
    case SPBE__V1__COMMAND__BODY_PING:
    case SPBE__V1__COMMAND__BODY_CONSUMER_GET:
    case SPBE__V1__COMMAND__BODY_CONSUMER_LIST:
    case SPBE__V1__COMMAND__BODY_MEMBER_GET:
    case SPBE__V1__COMMAND__BODY_MEMBER_LIST:
    case SPBE__V1__COMMAND__BODY_SESSION_LIST:
    case SPBE__V1__COMMAND__BODY_TOPIC_LIST:
    case SPBE__V1__COMMAND__BODY_TOPIC_GET:
    case SPBE__V1__COMMAND__BODY_MESSAGE_GET:
        return 1;
    default:
        return 0;
    }
}

/* A broker's answer that it has no session for this client: the command it answers
 * was not carried out. */
static int
says_no_session(const Spbe__V1__Reply *r)
{
    return (int)r->code == SPBE_UNAVAILABLE && strncmp(r->error, "no session", 10) == 0;
}

/* Sends cmd and waits up to timeout_ms for the reply with its request id, queueing
 * other frames. A session lost on the way (the broker restarted, or said goodbye) is
 * waited out while the time lasts, and the command sent again in the new session when
 * it was not carried out or is resendable(). */
static int
request_within(spbe_client *c, int timeout_ms, Spbe__V1__Command *cmd, const uint8_t *body,
               size_t body_len, Spbe__V1__Reply **reply, uint8_t **reply_body,
               size_t *reply_body_len, Spbe__V1__BrokerFrame **owner)
{
    *owner = NULL;
    int64_t deadline = now_ms() + timeout_ms;
    int is_hello = cmd->body_case == SPBE__V1__COMMAND__BODY_HELLO;
    for (;;) {
        if (c->closed_code)
            return fail(c, c->closed_code, "session closed by the broker");
        /* reconnecting: the call waits for the session (within its time), as a publish
         * queues */
        while (!c->connected && !is_hello && c->reconnect && !c->closed_code &&
               now_ms() < deadline) {
            int64_t left = deadline - now_ms();
            int rc = spbe_dispatch(c, left < 50 ? (int)left : 50, NULL);
            if (rc != SPBE_OK)
                return rc;
        }
        if (c->closed_code)
            return fail(c, c->closed_code, "session closed by the broker");
        if (!c->connected && !is_hello)
            return fail(c, SPBE_UNAVAILABLE, "not connected to the broker (reconnecting)");
        int rc = is_hello ? SPBE_OK : flights_send(c); /* publishes made before it go first */
        if (rc != SPBE_OK && !c->reconnect)
            return rc;
        cmd->request_id = ++c->next_request;
        rc = send_command(c, cmd, body, body_len);
        if (rc != SPBE_OK)
            return rc;
        int again = 0;
        while (!again) {
            int64_t left = deadline - now_ms();
            if (left < 0)
                return fail(c, SPBE_TIMEOUT, "no reply from the broker within %d ms", timeout_ms);
            Spbe__V1__BrokerFrame *f;
            uint8_t *b;
            size_t blen;
            rc = receive_frame(c, (int)left, &f, &b, &blen);
            if (rc != SPBE_OK && rc != SPBE_TIMEOUT)
                return rc;
            if (rc == SPBE_OK) {
                f = batch_take_reply(c, f, cmd->request_id);
                if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_REPLY &&
                    f->reply->request_id == cmd->request_id) {
                    if ((int)f->reply->code == SPBE_UNAVAILABLE && c->connected &&
                        (cmd->body_case != SPBE__V1__COMMAND__BODY_REQUEST ||
                         says_no_session(f->reply))) {
                        int not_run = says_no_session(f->reply);
                        session_lost(c, f->reply->error);
                        spbe__v1__broker_frame__free_unpacked(f, NULL);
                        free(b);
                        if (c->reconnect && (not_run || resendable(cmd)))
                            break; /* again, in the new session */
                        return fail(c, SPBE_UNAVAILABLE, "the broker lost the session%s",
                                    c->reconnect ? " (reconnecting)" : "");
                    }
                    *owner = f;
                    *reply = f->reply;
                    if (reply_body) {
                        *reply_body = b;
                        *reply_body_len = blen;
                    } else {
                        free(b);
                    }
                    return SPBE_OK;
                }
                if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_EVENT &&
                    f->event->body_case == SPBE__V1__EVENT__BODY_GOODBYE) {
                    int code = goodbye_take(c, f->event->goodbye);
                    fail(c, code, "broker closed the session: %s", f->event->goodbye->reason);
                    spbe__v1__broker_frame__free_unpacked(f, NULL);
                    free(b);
                    if (code == SPBE_UNAVAILABLE && c->reconnect && resendable(cmd))
                        break;
                    return code;
                }
                /* a heartbeat's answer that the session is gone: the reply will not come */
                if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_REPLY &&
                    f->reply->request_id == 0 && (int)f->reply->code == SPBE_UNAVAILABLE &&
                    c->reconnect)
                    session_lost(c, f->reply->error);
                enqueue(c, f, b, blen);
            }
            /* the session was lost while waiting (the broker fell silent or has no
             * session for this client): a resendable command goes again in the next */
            again = !c->connected && !is_hello && c->reconnect && resendable(cmd);
        }
    }
}

static int
request(spbe_client *c, Spbe__V1__Command *cmd, const uint8_t *body, size_t body_len,
        Spbe__V1__Reply **reply, uint8_t **reply_body, size_t *reply_body_len,
        Spbe__V1__BrokerFrame **owner)
{
    return request_within(c, c->timeout_ms, cmd, body, body_len, reply, reply_body, reply_body_len,
                          owner);
}

/* ------------------------------------------------------------ connect */

static int
wait_handshake(spbe_client *c, void *monitor)
{
    int64_t deadline = now_ms() + c->timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return fail(
                c, SPBE_UNAVAILABLE,
                "no handshake with %s within %d ms (broker not running, or wrong broker key)",
                c->endpoint, c->timeout_ms);
        zmq_pollitem_t item = {monitor, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)left) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, monitor, 0) < 0) {
            zmq_msg_close(&m);
            continue;
        }
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&m) >= 6) {
            memcpy(&event, zmq_msg_data(&m), 2);
            memcpy(&value, (uint8_t *)zmq_msg_data(&m) + 2, 4);
        }
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        while (more) { /* the address frame */
            zmq_msg_init(&m);
            zmq_msg_recv(&m, monitor, 0);
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            return SPBE_OK;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            return fail(c, SPBE_UNKNOWN_SENDER,
                        "the broker refused the key of %s (not a registered member)", c->id.member);
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            return fail(c, SPBE_UNAVAILABLE, "handshake with %s failed (wrong broker key?)",
                        c->endpoint);
    }
}

static int
resolve(spbe_client *c, const char *identity_path, const spbe_options *o)
{
    char err[512];
    if (!identity_path || !*identity_path)
        identity_path = getenv("SPBE_KEY");
    if (!identity_path || !*identity_path)
        return fail(c, SPBE_BAD_REQUEST, "no identity: give a key file or set SPBE_KEY");
    int rc = identity_load(identity_path, &c->id, err, sizeof err);
    if (rc != SPBE_OK)
        return fail(c, rc, "%s", err);
    if (!c->id.has_secret)
        return fail(c, SPBE_BAD_REQUEST, "%s holds no secret key", identity_path);

    const char *ep = o->endpoint;
    if (!ep || !*ep)
        ep = getenv("SPBE_BROKER");
    if (!ep || !*ep)
        ep = c->id.broker[0] ? c->id.broker : DEFAULT_ENDPOINT;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", ep);

    const char *bk = o->broker_key_hex;
    if (!bk || !*bk)
        bk = getenv("SPBE_BROKER_KEY");
    if (bk && *bk) {
        if (wire_hex_decode(bk, c->broker_key, WIRE_KEY_BYTES) != SPBE_OK)
            return fail(c, SPBE_BAD_REQUEST, "broker key must be 64 hex digits");
    } else if (c->id.has_broker_key) {
        memcpy(c->broker_key, c->id.broker_key, WIRE_KEY_BYTES);
    } else {
        return fail(c, SPBE_BAD_REQUEST,
                    "no broker key: set SPBE_BROKER_KEY, --broker-key, or broker_key in %s",
                    identity_path);
    }
    return SPBE_OK;
}

int
spbe_connect(const char *identity_path, const spbe_options *options, spbe_client **out)
{
    static const spbe_options defaults = {0};
    const spbe_options *o = options ? options : &defaults;
    *out = NULL;
    if (wire_init() != SPBE_OK)
        return SPBE_INTERNAL;
    spbe_client *c = calloc(1, sizeof *c);
    if (!c)
        return SPBE_INTERNAL;
    *out = c;
    c->sigcache = wire_sigcache_new();
    if (!c->sigcache)
        return fail(c, SPBE_INTERNAL, "out of memory");
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->publish_batch_asked = o->publish_batch;
    int rc = resolve(c, identity_path, o);
    if (rc != SPBE_OK)
        return rc;

    uint8_t server[32], pub[32], sec[32];
    if (wire_curve_public(c->broker_key, server) || wire_curve_public(c->id.public_key, pub) ||
        wire_curve_secret(c->id.secret_key, sec))
        return fail(c, SPBE_BAD_REQUEST, "keys cannot be converted for CurveZMQ");
    c->ctx = zmq_ctx_new();
    c->socket = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    int linger = 200, hwm = 100000;
    if (!c->socket || zmq_setsockopt(c->socket, ZMQ_CURVE_SERVERKEY, server, 32) ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_PUBLICKEY, pub, 32) ||
        zmq_setsockopt(c->socket, ZMQ_CURVE_SECRETKEY, sec, 32) ||
        zmq_setsockopt(c->socket, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(c->socket, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(c->socket, ZMQ_RCVHWM, &hwm, sizeof hwm)) {
        memset(sec, 0, sizeof sec);
        return fail(c, SPBE_INTERNAL, "cannot create socket: %s", zmq_strerror(errno));
    }
    memset(sec, 0, sizeof sec);
    char monitor_ep[64];
    snprintf(monitor_ep, sizeof monitor_ep, "inproc://spbe-monitor-%p", (void *)c);
    /* the handshake's outcome comes through a monitor; without a reader its events would
     * block ZeroMQ for good, so a monitor that cannot be read is not started at all */
    void *monitor = NULL;
    if (zmq_socket_monitor(c->socket, monitor_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
        return fail(c, SPBE_INTERNAL, "cannot watch the handshake: %s", zmq_strerror(errno));
    monitor = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!monitor || zmq_connect(monitor, monitor_ep) != 0) {
        int e = errno;
        zmq_socket_monitor(c->socket, NULL, 0); /* nothing connected yet: no event waits */
        if (monitor)
            zmq_close(monitor);
        return fail(c, SPBE_INTERNAL, "cannot watch the handshake: %s", zmq_strerror(e));
    }
    if (zmq_connect(c->socket, c->endpoint) != 0) {
        zmq_socket_monitor(c->socket, NULL, 0);
        zmq_close(monitor);
        return fail(c, SPBE_BAD_REQUEST, "cannot connect to %s: %s", c->endpoint,
                    zmq_strerror(errno));
    }
    rc = wait_handshake(c, monitor);
    zmq_socket_monitor(c->socket, NULL, 0);
    zmq_close(monitor);
    if (rc != SPBE_OK)
        return rc;

    snprintf(c->client_name, sizeof c->client_name, "%s",
             o->client_name ? o->client_name : "libspbe/0.1.0");
    c->reconnect = !o->no_reconnect;
    Spbe__V1__Hello hello = SPBE__V1__HELLO__INIT;
    hello.protocol_version = WIRE_PROTOCOL_VERSION;
    hello.member = c->id.member;
    hello.client = c->client_name;
    hello.batch = FRAME_BATCH;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_HELLO;
    cmd.hello = &hello;
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    c->last_received_ms = now_ms();
    /* this Hello is being sent: the reconnect logic says it again only if no answer
     * comes within a second (not at once, which would open the session twice) */
    c->next_hello_ms = c->last_received_ms + 1000;
    rc = request(c, &cmd, NULL, 0, &reply, NULL, NULL, &owner);
    if (rc != SPBE_OK)
        return rc;
    rc = (int)reply->code;
    if (rc != SPBE_OK) {
        fail(c, rc, "broker refused the session: %s", reply->error);
    } else if (reply->body_case != SPBE__V1__REPLY__BODY_WELCOME ||
               reply->welcome->broker_key.len != WIRE_KEY_BYTES ||
               memcmp(reply->welcome->broker_key.data, c->broker_key, WIRE_KEY_BYTES) != 0) {
        rc = fail(c, SPBE_BAD_REQUEST, "broker's welcome does not carry the expected key");
    } else {
        welcome_take(c, reply->welcome);
        c->connected = 1;
    }
    spbe__v1__broker_frame__free_unpacked(owner, NULL);
    if (rc == SPBE_OK)
        c->error[0] = '\0';
    return rc;
}

void
spbe_close(spbe_client **cp)
{
    if (!cp || !*cp)
        return;
    spbe_client *c = *cp;
    if (c->socket && c->connected && !c->closed_code) {
        flights_send(c); /* publishes still gathering for a batch */
        Spbe__V1__Bye bye = SPBE__V1__BYE__INIT;
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        cmd.body_case = SPBE__V1__COMMAND__BODY_BYE;
        cmd.bye = &bye;
        cmd.request_id = ++c->next_request;
        send_command(c, &cmd, NULL, 0);
    }
    while (c->head) {
        queued *q = c->head;
        c->head = q->next;
        spbe__v1__broker_frame__free_unpacked(q->frame, NULL);
        free(q->body);
        free(q);
    }
    while (c->senders) {
        sender_key *s = c->senders;
        c->senders = s->next;
        free(s);
    }
    wire_sigcache_free(&c->sigcache);
    free(c->acks);
    free(c->ack_ptrs);
    for (size_t i = c->f_head; i < c->f_count; i++)
        free(c->flights[i].bytes);
    free(c->flights);
    while (c->subs) {
        client_sub *sub = c->subs;
        c->subs = sub->next;
        free(sub->pos);
        free(sub);
    }
    while (c->served) {
        served *sv = c->served;
        c->served = sv->next;
        free(sv);
    }
    if (c->socket)
        zmq_close(c->socket);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    memset(&c->id, 0, sizeof c->id);
    free(c);
    *cp = NULL;
}

/* ------------------------------------------------------------ publishing */

/* The Message a publish signs (id points into id_buf); SPBE_OK or an error set on c. */
static int
message_build(spbe_client *c, const char *topic, const void *payload, size_t len,
              const spbe_message_options *o, uint8_t id_buf[WIRE_ID_BYTES], Spbe__V1__Message *m)
{
    static const spbe_message_options none = {0};
    if (!o)
        o = &none;
    if (!topic || !wire_topic_valid(topic))
        return fail(c, SPBE_INVALID_TOPIC, "invalid topic '%s'", topic ? topic : "");
    if (o->id)
        memcpy(id_buf, o->id, WIRE_ID_BYTES);
    else
        wire_random_id(id_buf);
    spbe__v1__message__init(m);
    m->id.data = id_buf;
    m->id.len = WIRE_ID_BYTES;
    m->topic = (char *)topic;
    m->sender = c->id.member;
    m->created_ns = wire_now_ns();
    m->schema = (char *)(o->schema ? o->schema : "");
    m->correlation_id.data = (uint8_t *)o->correlation_id;
    m->correlation_id.len = o->correlation_id ? o->correlation_len : 0;
    m->reply_to = (char *)(o->reply_to ? o->reply_to : "");
    m->not_before_ns = o->not_before_ns;
    m->expires_ns = o->expires_ns;
    m->payload.data = (uint8_t *)payload;
    m->payload.len = payload ? len : 0;
    return SPBE_OK;
}

int
spbe_sign(spbe_client *c, const char *topic, const void *payload, size_t len,
          const spbe_message_options *o, uint8_t **out, size_t *out_len)
{
    uint8_t id[WIRE_ID_BYTES];
    Spbe__V1__Message m;
    int rc = message_build(c, topic, payload, len, o, id, &m);
    if (rc != SPBE_OK)
        return rc;
    rc = wire_message_sign(&m, c->id.secret_key, out, out_len);
    return rc == SPBE_OK ? rc : fail(c, rc, "cannot sign");
}

int
spbe_sign_batch(spbe_client *c, const spbe_batch_item *items, size_t n, uint8_t **out,
                size_t *out_len)
{
    if (n == 0 || n > WIRE_BATCH_MAX)
        return fail(c, SPBE_BAD_REQUEST, "a batch holds 1 to %d messages", WIRE_BATCH_MAX);
    Spbe__V1__Message *msgs = calloc(n, sizeof *msgs);
    Spbe__V1__Message **ptrs = calloc(n, sizeof *ptrs);
    uint8_t(*ids)[WIRE_ID_BYTES] = malloc(n * WIRE_ID_BYTES);
    int rc = msgs && ptrs && ids ? SPBE_OK : fail(c, SPBE_INTERNAL, "out of memory");
    for (size_t i = 0; i < n && rc == SPBE_OK; i++) {
        rc = message_build(c, items[i].topic, items[i].payload, items[i].len, items[i].options,
                           ids[i], &msgs[i]);
        ptrs[i] = &msgs[i];
    }
    if (rc == SPBE_OK) {
        rc = wire_message_sign_batch((const Spbe__V1__Message *const *)ptrs, n, c->id.secret_key,
                                     out, out_len);
        if (rc != SPBE_OK)
            fail(c, rc, "cannot sign the batch");
    }
    free(msgs);
    free(ptrs);
    free(ids);
    return rc;
}

/* ------------------------------------------------------------ in-flight publishes */

static in_flight *
flight_append(spbe_client *c, const uint8_t *bytes, size_t len)
{
    if (c->f_head > 0 && c->f_head == c->f_count) {
        c->f_head = c->f_sent = c->f_count = 0; /* all done: start over */
    } else if (c->f_head > 4096 && c->f_head * 2 > c->f_count) {
        memmove(c->flights, c->flights + c->f_head, (c->f_count - c->f_head) * sizeof *c->flights);
        c->f_sent -= c->f_head;
        c->f_count -= c->f_head;
        c->f_head = 0;
    }
    if (c->f_count == c->f_cap) {
        size_t cap = c->f_cap ? 2 * c->f_cap : 1024;
        in_flight *n = realloc(c->flights, cap * sizeof *n);
        if (!n)
            return NULL;
        c->flights = n;
        c->f_cap = cap;
    }
    in_flight *e = &c->flights[c->f_count];
    memset(e, 0, sizeof *e);
    e->bytes = malloc(len ? len : 1);
    if (!e->bytes)
        return NULL;
    memcpy(e->bytes, bytes, len);
    e->len = len;
    e->token = ++c->next_token;
    c->f_count++;
    c->in_flight++;
    return e;
}

/* The sent entry with this request id (binary search: sent ids increase), or NULL. */
static in_flight *
flight_find(spbe_client *c, uint64_t request_id)
{
    size_t lo = c->f_head, hi = c->f_sent;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->flights[mid].request_id < request_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < c->f_sent && c->flights[lo].request_id == request_id && !c->flights[lo].done)
        return &c->flights[lo];
    return NULL;
}

static void
flight_done(spbe_client *c, in_flight *e)
{
    free(e->bytes);
    e->bytes = NULL;
    e->done = 1;
    c->in_flight--;
    while (c->f_head < c->f_sent && c->flights[c->f_head].done)
        c->f_head++;
}

/* Sends every entry not yet sent, in order; stops at the first failure. Consecutive
 * publishes go as one PublishBatch of up to publish_batch, with consecutive request
 * ids, when the client asked for it and the broker takes it. */
static int
flights_send(spbe_client *c)
{
    while (c->connected && c->f_sent < c->f_count) {
        in_flight *e = &c->flights[c->f_sent];
        if (e->done) {
            /* answered before a reconnect: its old id would break the order of sent ids
             * that flight_find's binary search relies on */
            e->request_id = c->next_request;
            c->f_sent++;
            continue;
        }
        size_t run = 0; /* publishes from here that can go in one batch */
        while (c->publish_batch > 1 && run < (size_t)c->publish_batch &&
               c->f_sent + run < c->f_count && !c->flights[c->f_sent + run].done &&
               !c->flights[c->f_sent + run].respond_ref)
            run++;
        if (run > 1) {
            ProtobufCBinaryData messages[PUBLISH_BATCH_MAX];
            for (size_t i = 0; i < run; i++) {
                messages[i].data = c->flights[c->f_sent + i].bytes;
                messages[i].len = c->flights[c->f_sent + i].len;
            }
            Spbe__V1__PublishBatch pb = SPBE__V1__PUBLISH_BATCH__INIT;
            pb.messages = messages;
            pb.n_messages = run;
            Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
            cmd.body_case = SPBE__V1__COMMAND__BODY_PUBLISH_BATCH;
            cmd.publish_batch = &pb;
            cmd.request_id = c->next_request + 1;
            int rc = send_command(c, &cmd, NULL, 0);
            if (rc != SPBE_OK)
                return rc;
            for (size_t i = 0; i < run; i++)
                c->flights[c->f_sent + i].request_id = ++c->next_request;
            c->f_sent += run;
            continue;
        }
        Spbe__V1__Publish pub = SPBE__V1__PUBLISH__INIT;
        Spbe__V1__Respond respond = SPBE__V1__RESPOND__INIT;
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        if (e->respond_ref) {
            respond.request_ref = e->respond_ref;
            cmd.body_case = SPBE__V1__COMMAND__BODY_RESPOND;
            cmd.respond = &respond;
        } else {
            cmd.body_case = SPBE__V1__COMMAND__BODY_PUBLISH;
            cmd.publish = &pub;
        }
        cmd.request_id = ++c->next_request;
        int rc = send_command(c, &cmd, e->bytes, e->len);
        if (rc != SPBE_OK)
            return rc;
        e->request_id = cmd.request_id;
        c->f_sent++;
    }
    return SPBE_OK;
}

/* What a Welcome says that the client keeps. */
static void
welcome_take(spbe_client *c, const Spbe__V1__Welcome *w)
{
    c->heartbeat_ms = (int)w->heartbeat_ms;
    int most = w->publish_batch < PUBLISH_BATCH_MAX ? (int)w->publish_batch : PUBLISH_BATCH_MAX;
    c->publish_batch = c->publish_batch_asked < most ? c->publish_batch_asked : most;
}

/* The session is gone but the client will reconnect: everything in flight is sent
 * again after the next welcome, and subscriptions resume where they stopped. */
static void
session_lost(spbe_client *c, const char *why)
{
    if (!c->connected)
        return;
    if (!c->reconnect) { /* no_reconnect: the session's end is final */
        c->closed_code = SPBE_UNAVAILABLE;
        fail(c, SPBE_UNAVAILABLE, "session lost (%s)", why ? why : "");
        return;
    }
    c->connected = 0;
    c->next_hello_ms = 0;
    for (size_t i = c->f_head; i < c->f_sent; i++)
        if (!c->flights[i].done)
            c->flights[i].resent = 1;
    c->f_sent = c->f_head;
    for (client_sub *sub = c->subs; sub; sub = sub->next)
        sub->broker_id = 0;
    fail(c, SPBE_UNAVAILABLE, "session lost (%s); reconnecting", why ? why : "");
}

/* A welcome after a reconnect: subscribe again from the positions reached, resend. */
static void
session_resume(spbe_client *c)
{
    c->connected = 1;
    c->last_received_ms = now_ms();
    for (served *sv = c->served; sv; sv = sv->next) {
        Spbe__V1__Serve serve = SPBE__V1__SERVE__INIT;
        serve.service = sv->service;
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        cmd.request_id = ++c->next_request;
        cmd.body_case = SPBE__V1__COMMAND__BODY_SERVE;
        cmd.serve = &serve;
        send_command(c, &cmd, NULL, 0);
    }
    for (client_sub *sub = c->subs; sub; sub = sub->next) {
        if (sub->is_consumer) { /* attach again; what was held comes again */
            Spbe__V1__ConsumerConfig cfg = SPBE__V1__CONSUMER_CONFIG__INIT;
            cfg.name = sub->pattern;
            Spbe__V1__Consume consume = SPBE__V1__CONSUME__INIT;
            consume.config = &cfg;
            Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
            cmd.request_id = sub->resub_request = ++c->next_request;
            cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUME;
            cmd.consume = &consume;
            send_command(c, &cmd, NULL, 0);
            continue;
        }
        Spbe__V1__Subscribe msg = SPBE__V1__SUBSCRIBE__INIT;
        msg.pattern = sub->pattern;
        msg.start = (Spbe__V1__StartPosition)sub->start;
        msg.start_sequence = sub->start_sequence;
        Spbe__V1__TopicPosition *tps = calloc(sub->n_pos ? sub->n_pos : 1, sizeof *tps);
        Spbe__V1__TopicPosition **ptrs = calloc(sub->n_pos ? sub->n_pos : 1, sizeof *ptrs);
        if (tps && ptrs) {
            size_t n = 0;
            for (size_t i = 0; i < sub->n_pos; i++) {
                /* a topic nothing was delivered from (its only delivery did not decode)
                 * is no position: the broker reads next_sequence 0 as "from the first" */
                if (!sub->pos[i].next)
                    continue;
                spbe__v1__topic_position__init(&tps[n]);
                tps[n].topic = sub->pos[i].topic;
                tps[n].next_sequence = sub->pos[i].next;
                ptrs[n] = &tps[n];
                n++;
            }
            msg.resume = ptrs;
            msg.n_resume = n;
        }
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        cmd.request_id = sub->resub_request = ++c->next_request;
        cmd.body_case = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
        cmd.subscribe = &msg;
        send_command(c, &cmd, NULL, 0);
        free(tps);
        free(ptrs);
    }
    flights_send(c);
}

int
spbe_publish_signed(spbe_client *c, const uint8_t *signed_message, size_t len, uint64_t *token)
{
    if (c->closed_code)
        return fail(c, c->closed_code, "session closed by the broker");
    in_flight *e = flight_append(c, signed_message, len);
    if (!e)
        return fail(c, SPBE_INTERNAL, "out of memory");
    if (token)
        *token = e->token;
    /* batching: it waits for more, up to a full batch or the next dispatch or call */
    if (c->publish_batch > 1 && c->f_count - c->f_sent < (size_t)c->publish_batch)
        return SPBE_OK;
    int rc = flights_send(c);
    return rc == SPBE_OK || c->reconnect ? SPBE_OK : rc;
}

int
spbe_publish_async(spbe_client *c, const char *topic, const void *payload, size_t len,
                   const spbe_message_options *o, uint64_t *token)
{
    uint8_t *buf;
    size_t n;
    int rc = spbe_sign(c, topic, payload, len, o, &buf, &n);
    if (rc != SPBE_OK)
        return rc;
    rc = spbe_publish_signed(c, buf, n, token);
    free(buf);
    return rc;
}

/* Turns a publish reply into a receipt, verifying the broker's signature. */
static void
receipt_from_reply(spbe_client *c, const Spbe__V1__Reply *reply, spbe_receipt *r)
{
    memset(r, 0, sizeof *r);
    r->token = reply->request_id;
    r->code = (int)reply->code;
    snprintf(r->error, sizeof r->error, "%s", reply->error ? reply->error : "");
    if (reply->body_case != SPBE__V1__REPLY__BODY_RECEIPT)
        return;
    Spbe__V1__Receipt *rc;
    if (wire_receipt_verify_cached(reply->receipt, c->broker_key, c->sigcache, &rc) != SPBE_OK) {
        r->code = SPBE_BAD_SIGNATURE;
        snprintf(r->error, sizeof r->error, "receipt not signed by the broker's key");
        return;
    }
    r->signed_by_broker = 1;
    r->code = (int)rc->code;
    snprintf(r->topic, sizeof r->topic, "%s", rc->topic);
    r->sequence = rc->sequence;
    r->accepted_ns = rc->accepted_ns;
    if (rc->message_id.len == SPBE_ID_BYTES)
        memcpy(r->message_id, rc->message_id.data, SPBE_ID_BYTES);
    if (rc->message_hash.len == SPBE_HASH_BYTES)
        memcpy(r->message_hash, rc->message_hash.data, SPBE_HASH_BYTES);
    r->leaf_index = rc->leaf_index;
    r->tree_size = rc->tree_size;
    if (rc->tree_root.len == SPBE_HASH_BYTES)
        memcpy(r->tree_root, rc->tree_root.data, SPBE_HASH_BYTES);
    spbe__v1__receipt__free_unpacked(rc, NULL);
}

int
spbe_publish(spbe_client *c, const char *topic, const void *payload, size_t len,
             const spbe_message_options *o, spbe_receipt *receipt)
{
    spbe_receipt local;
    if (!receipt)
        receipt = &local;
    memset(receipt, 0, sizeof *receipt);
    uint64_t token;
    int rc = spbe_publish_async(c, topic, payload, len, o, &token);
    if (rc != SPBE_OK) {
        receipt->code = rc;
        snprintf(receipt->error, sizeof receipt->error, "%.255s", c->error);
        return rc;
    }
    int done = 0;
    in_flight *e = &c->flights[c->f_count - 1];
    e->sync_out = receipt;
    e->sync_done = &done;
    int64_t deadline = now_ms() + c->timeout_ms;
    while (!done) {
        int64_t left = deadline - now_ms();
        rc = left > 0 ? spbe_dispatch(c, (int)left, NULL) : SPBE_TIMEOUT;
        if (done)
            break;
        if (rc != SPBE_OK || left <= 0) {
            /* give up waiting; a late receipt goes to the receipt handler */
            for (size_t i = c->f_head; i < c->f_count; i++)
                if (c->flights[i].token == token) {
                    c->flights[i].sync_out = NULL;
                    c->flights[i].sync_done = NULL;
                }
            if (rc == SPBE_OK || rc == SPBE_TIMEOUT)
                rc = fail(c, SPBE_TIMEOUT, "no receipt within %d ms", c->timeout_ms);
            receipt->code = rc;
            snprintf(receipt->error, sizeof receipt->error, "%.255s", c->error);
            return rc;
        }
    }
    if (receipt->code != SPBE_OK)
        fail(c, receipt->code, "%s", receipt->error);
    return receipt->code;
}

/* ------------------------------------------------------------ dispatch */

static client_sub *
sub_by_broker_id(spbe_client *c, uint64_t id)
{
    for (client_sub *sub = c->subs; sub; sub = sub->next)
        if (sub->broker_id == id && id != 0)
            return sub;
    return NULL;
}

static position *
sub_position(client_sub *sub, const char *topic)
{
    for (size_t i = 0; i < sub->n_pos; i++)
        if (strcmp(sub->pos[i].topic, topic) == 0)
            return &sub->pos[i];
    if (sub->n_pos == sub->cap_pos) {
        size_t cap = sub->cap_pos ? 2 * sub->cap_pos : 4;
        position *n = realloc(sub->pos, cap * sizeof *n);
        if (!n)
            return NULL;
        sub->pos = n;
        sub->cap_pos = cap;
    }
    position *p = &sub->pos[sub->n_pos++];
    snprintf(p->topic, sizeof p->topic, "%s", topic);
    p->next = 0;
    return p;
}

/* A reply that is not the one a synchronous call waits for. */
static int
handle_reply(spbe_client *c, Spbe__V1__Reply *reply)
{
    int code = (int)reply->code;
    if (reply->request_id == 0) { /* heartbeat */
        /* the broker lost the session (restart, idle expiry): reconnect, or end for good */
        if (code == SPBE_UNAVAILABLE)
            session_lost(c, reply->error);
        return 0;
    }
    if (reply->request_id == c->hello_request && !c->connected) {
        if (code == SPBE_OK && reply->body_case == SPBE__V1__REPLY__BODY_WELCOME &&
            reply->welcome->broker_key.len == WIRE_KEY_BYTES &&
            memcmp(reply->welcome->broker_key.data, c->broker_key, WIRE_KEY_BYTES) == 0) {
            welcome_take(c, reply->welcome);
            session_resume(c);
        } else if (code == SPBE_REVOKED || code == SPBE_UNKNOWN_SENDER || code == SPBE_FORBIDDEN ||
                   code == SPBE_OK) {
            c->closed_code = code == SPBE_OK ? SPBE_BAD_REQUEST : code;
            fail(c, c->closed_code, "broker refused the session again: %s", reply->error);
        }
        return 0;
    }
    for (client_sub *sub = c->subs; sub; sub = sub->next)
        if (sub->resub_request == reply->request_id) {
            sub->resub_request = 0;
            if (code == SPBE_OK && reply->body_case == SPBE__V1__REPLY__BODY_SUBSCRIBED)
                sub->broker_id = reply->subscribed->subscription_id;
            else
                fail(c, code, "subscription %s not resumed: %s", sub->pattern, reply->error);
            return 0;
        }
    if (code == SPBE_UNAVAILABLE && reply->body_case != SPBE__V1__REPLY__BODY_RECEIPT &&
        c->reconnect) {
        session_lost(c, reply->error); /* whatever it answered is resent after the welcome */
        return 0;
    }
    in_flight *e = flight_find(c, reply->request_id);
    if (!e)
        return 0; /* a late reply to a call that timed out, or to an earlier session */
    spbe_receipt r;
    receipt_from_reply(c, reply, &r);
    r.token = e->token;
    if (e->resent && r.code == SPBE_DUPLICATE && r.signed_by_broker) {
        /* stored by the attempt before the reconnect: exactly once, at this sequence */
        r.code = SPBE_OK;
        r.error[0] = '\0';
    }
    spbe_receipt *out = e->sync_out;
    int *done = e->sync_done;
    flight_done(c, e);
    if (out) {
        *out = r;
        *done = 1;
        c->wake = 1; /* the synchronous publish waiting in dispatch may return */
        return 0;
    }
    if (c->on_receipt)
        c->on_receipt(&r, c->receipt_arg);
    return 1;
}

/* A request for a service this client serves. */
static int
handle_request_event(spbe_client *c, const Spbe__V1__RequestEvent *re, const uint8_t *body,
                     size_t body_len)
{
    served *sv = c->served;
    while (sv && strcmp(sv->service, re->service) != 0)
        sv = sv->next;
    if (!sv)
        return 0; /* stopped serving meanwhile: the caller times out */
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    if (wire_envelope_decode(body, body_len, &sm, &m, NULL) != SPBE_OK) {
        wire_envelope_free(&sm, &m);
        return 0;
    }
    spbe_service_request r = {
        .service = re->service,
        .ref = re->request_ref,
        .sequence = re->sequence,
        .deadline_ns = re->deadline_ns,
        .sender = m->sender,
        .id = m->id.data,
        .schema = m->schema,
        .payload = m->payload.data,
        .payload_len = m->payload.len,
        .raw = body,
        .raw_len = body_len,
    };
    sv->fn(c, &r, sv->arg);
    wire_envelope_free(&sm, &m);
    return 1;
}

/* One delivery (of a Delivery event, or of a FrameBatch) to the user's handler; 1 if
 * it went to it. */
static int
handle_delivery(spbe_client *c, const Spbe__V1__Delivery *dv, const uint8_t *body, size_t body_len)
{
    client_sub *sub = sub_by_broker_id(c, dv->subscription_id);
    if (!sub)
        return 0; /* of a subscription ended or from a session before a reconnect */
    position *pos = sub->is_consumer ? NULL : sub_position(sub, dv->topic);
    if (pos && pos->next && dv->sequence < pos->next)
        return 0; /* already delivered before a reconnect */
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    if (wire_envelope_decode(body, body_len, &sm, &m, NULL) != SPBE_OK) {
        wire_envelope_free(&sm, &m);
        return 0;
    }
    if (pos)
        pos->next = dv->sequence + 1;
    spbe_delivery d = {
        .subscription_id = sub->local_id,
        .topic = dv->topic,
        .sequence = dv->sequence,
        .accepted_ns = dv->accepted_ns,
        .sender = m->sender,
        .id = m->id.data,
        .created_ns = m->created_ns,
        .schema = m->schema,
        .correlation_id = m->correlation_id.data,
        .correlation_len = m->correlation_id.len,
        .reply_to = m->reply_to,
        .payload = m->payload.data,
        .payload_len = m->payload.len,
        .raw = body,
        .raw_len = body_len,
        .consumer = sub->is_consumer ? sub->pattern : NULL,
        .delivery_count = dv->delivery_count,
        .ack_deadline_ns = dv->ack_deadline_ns,
        .not_before_ns = m->not_before_ns,
        .expires_ns = m->expires_ns,
    };
    if (c->on_delivery)
        c->on_delivery(&d, c->delivery_arg);
    wire_envelope_free(&sm, &m);
    return 1;
}

/* Runs the handler of one frame; returns 1 if it was an event for the user. */
static int
handle_frame(spbe_client *c, Spbe__V1__BrokerFrame *f, const uint8_t *body, size_t body_len)
{
    if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_REPLY)
        return handle_reply(c, f->reply);
    if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_BATCH) { /* receipts, then deliveries */
        const Spbe__V1__FrameBatch *fb = f->batch;
        int handled = 0;
        for (size_t i = 0; i < fb->n_replies; i++)
            handled += handle_reply(c, fb->replies[i]);
        for (size_t i = 0; i < fb->n_deliveries && i < fb->n_messages; i++)
            handled +=
                handle_delivery(c, fb->deliveries[i], fb->messages[i].data, fb->messages[i].len);
        return handled;
    }
    if (f->body_case != SPBE__V1__BROKER_FRAME__BODY_EVENT)
        return 0;
    Spbe__V1__Event *ev = f->event;
    if (ev->body_case == SPBE__V1__EVENT__BODY_GOODBYE) {
        if (goodbye_take(c, ev->goodbye) != SPBE_UNAVAILABLE || !c->reconnect)
            fail(c, c->closed_code, "broker closed the session: %s", ev->goodbye->reason);
        return 0;
    }
    if (ev->body_case == SPBE__V1__EVENT__BODY_REQUEST && body)
        return handle_request_event(c, ev->request, body, body_len);
    if (ev->body_case != SPBE__V1__EVENT__BODY_DELIVERY || !body)
        return 0;
    return handle_delivery(c, ev->delivery, body, body_len);
}

static int dispatch_frames(spbe_client *c, int timeout_ms, int *events);

int
spbe_dispatch(spbe_client *c, int timeout_ms, int *events)
{
    c->dispatching++;
    int rc = dispatch_frames(c, timeout_ms, events);
    if (--c->dispatching == 0)
        acks_flush(c); /* the plain acks of this dispatch, in one command */
    if (c->f_sent < c->f_count) {
        int sent = flights_send(c); /* publishes made by the handlers */
        if (rc == SPBE_OK && sent != SPBE_OK && !c->reconnect)
            rc = sent;
    }
    return rc;
}

static int
dispatch_frames(spbe_client *c, int timeout_ms, int *events)
{
    int handled = 0;
    c->wake = 0;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
    for (;;) {
        while (c->head) { /* frames queued while a synchronous call waited */
            queued *q = c->head;
            c->head = q->next;
            if (!c->head)
                c->tail = NULL;
            handled += handle_frame(c, q->frame, q->body, q->body_len);
            spbe__v1__broker_frame__free_unpacked(q->frame, NULL);
            free(q->body);
            free(q);
        }
        if (c->closed_code || c->wake)
            break;
        int64_t left = deadline - now_ms();
        if (left < 0 || (handled > 0 && timeout_ms != 0))
            left = 0; /* after the first events, take only what is ready */
        Spbe__V1__BrokerFrame *f;
        uint8_t *b;
        size_t blen;
        int rc = receive_frame(c, (int)(left > INT32_MAX ? INT32_MAX : left), &f, &b, &blen);
        if (rc == SPBE_TIMEOUT)
            break;
        if (rc != SPBE_OK) {
            if (events)
                *events = handled;
            return rc;
        }
        handled += handle_frame(c, f, b, blen);
        spbe__v1__broker_frame__free_unpacked(f, NULL);
        free(b);
    }
    if (events)
        *events = handled;
    return c->closed_code ? c->closed_code : SPBE_OK;
}

int
spbe_flush(spbe_client *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (c->in_flight > 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return fail(c, SPBE_TIMEOUT, "%llu receipts outstanding",
                        (unsigned long long)c->in_flight);
        int rc = spbe_dispatch(c, (int)left, NULL);
        if (rc != SPBE_OK)
            return rc;
    }
    return SPBE_OK;
}

/* ------------------------------------------------------------ subscriptions */

static int
simple_call(spbe_client *c, Spbe__V1__Command *cmd, Spbe__V1__Reply **reply,
            Spbe__V1__BrokerFrame **owner)
{
    int rc = request(c, cmd, NULL, 0, reply, NULL, NULL, owner);
    if (rc != SPBE_OK)
        return rc;
    rc = (int)(*reply)->code;
    if (rc != SPBE_OK) {
        fail(c, rc, "%s", (*reply)->error);
        spbe__v1__broker_frame__free_unpacked(*owner, NULL);
        *owner = NULL;
    }
    return rc;
}

/* A call whose reply says only whether it worked. */
static int
call_ok(spbe_client *c, Spbe__V1__Command *cmd)
{
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    int rc = simple_call(c, cmd, &reply, &owner);
    if (rc == SPBE_OK)
        spbe__v1__broker_frame__free_unpacked(owner, NULL);
    return rc;
}

/* Sends a Subscribe or Consume and remembers the subscription it opened (to resume it
 * after a reconnect); *out is the new entry, first in c->subs. */
static int
sub_call(spbe_client *c, Spbe__V1__Command *cmd, const char *pattern, int is_consumer,
         client_sub **out)
{
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    int rc = simple_call(c, cmd, &reply, &owner);
    if (rc != SPBE_OK)
        return rc;
    client_sub *sub = calloc(1, sizeof *sub);
    if (!sub) {
        spbe__v1__broker_frame__free_unpacked(owner, NULL);
        return fail(c, SPBE_INTERNAL, "out of memory");
    }
    sub->is_consumer = is_consumer;
    sub->local_id = ++c->next_local_sub;
    sub->broker_id = reply->body_case == SPBE__V1__REPLY__BODY_SUBSCRIBED
                         ? reply->subscribed->subscription_id
                         : 0;
    snprintf(sub->pattern, sizeof sub->pattern, "%s", pattern);
    sub->next = c->subs;
    c->subs = sub;
    spbe__v1__broker_frame__free_unpacked(owner, NULL);
    *out = sub;
    return SPBE_OK;
}

int
spbe_subscribe(spbe_client *c, const char *pattern, spbe_start start, uint64_t start_sequence,
               uint64_t *id)
{
    Spbe__V1__Subscribe msg = SPBE__V1__SUBSCRIBE__INIT;
    msg.pattern = (char *)pattern;
    msg.start = (Spbe__V1__StartPosition)start;
    msg.start_sequence = start_sequence;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
    cmd.subscribe = &msg;
    client_sub *sub;
    int rc = sub_call(c, &cmd, pattern, 0, &sub);
    if (rc != SPBE_OK)
        return rc;
    sub->start = start;
    sub->start_sequence = start_sequence;
    if (id)
        *id = sub->local_id;
    return SPBE_OK;
}

int
spbe_unsubscribe(spbe_client *c, uint64_t id)
{
    client_sub **pp = &c->subs;
    while (*pp && (*pp)->local_id != id)
        pp = &(*pp)->next;
    if (!*pp)
        return fail(c, SPBE_NOT_FOUND, "no subscription %llu", (unsigned long long)id);
    client_sub *sub = *pp;
    *pp = sub->next;
    uint64_t broker_id = sub->broker_id;
    free(sub->pos);
    free(sub);
    if (!broker_id || !c->connected)
        return SPBE_OK; /* nothing to end at the broker */
    Spbe__V1__Unsubscribe u = SPBE__V1__UNSUBSCRIBE__INIT;
    u.subscription_id = broker_id;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_UNSUBSCRIBE;
    cmd.unsubscribe = &u;
    return call_ok(c, &cmd);
}

/* 1 while a session with the broker is established. */
int
spbe_connected(const spbe_client *c)
{
    return c->connected && !c->closed_code;
}

/* Verifies raw (a SignedMessage) against the registered key of sender. */
static int
verify_signed(spbe_client *c, const char *sender, const uint8_t *raw, size_t raw_len)
{
    spbe_delivery one = {.sender = sender, .raw = raw, .raw_len = raw_len};
    return spbe_verify(c, &one);
}

int
spbe_verify(spbe_client *c, const spbe_delivery *d)
{
    sender_key *k = c->senders;
    while (k && strcmp(k->name, d->sender) != 0)
        k = k->next;
    if (!k) {
        Spbe__V1__MemberGet get = SPBE__V1__MEMBER_GET__INIT;
        get.name = (char *)d->sender;
        Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET;
        cmd.member_get = &get;
        Spbe__V1__Reply *reply;
        Spbe__V1__BrokerFrame *owner;
        int rc = simple_call(c, &cmd, &reply, &owner);
        if (rc == SPBE_NOT_FOUND)
            return fail(c, SPBE_UNKNOWN_SENDER, "sender %s is not registered", d->sender);
        if (rc != SPBE_OK)
            return rc;
        if (reply->body_case != SPBE__V1__REPLY__BODY_MEMBER ||
            reply->member->member->public_key.len != WIRE_KEY_BYTES) {
            spbe__v1__broker_frame__free_unpacked(owner, NULL);
            return fail(c, SPBE_BAD_REQUEST, "broker sent no key for %s", d->sender);
        }
        k = calloc(1, sizeof *k);
        if (!k) {
            spbe__v1__broker_frame__free_unpacked(owner, NULL);
            return fail(c, SPBE_INTERNAL, "out of memory");
        }
        snprintf(k->name, sizeof k->name, "%s", d->sender);
        memcpy(k->key, reply->member->member->public_key.data, WIRE_KEY_BYTES);
        k->next = c->senders;
        c->senders = k;
        spbe__v1__broker_frame__free_unpacked(owner, NULL);
    }
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    int rc = wire_envelope_decode(d->raw, d->raw_len, &sm, &m, NULL);
    if (rc == SPBE_OK)
        rc = strcmp(m->sender, k->name) == 0 ? wire_envelope_verify_cached(sm, k->key, c->sigcache)
                                             : SPBE_BAD_SIGNATURE;
    wire_envelope_free(&sm, &m);
    return rc == SPBE_OK ? rc : fail(c, rc, "signature of %s does not verify", d->sender);
}

int
spbe_call(spbe_client *c, const uint8_t *command, size_t command_len, const uint8_t *body,
          size_t body_len, uint8_t **reply_out, size_t *reply_len, uint8_t **reply_body,
          size_t *reply_body_len)
{
    *reply_out = NULL;
    *reply_len = 0;
    Spbe__V1__Command *cmd = spbe__v1__command__unpack(NULL, command_len, command);
    if (!cmd)
        return fail(c, SPBE_BAD_REQUEST, "not an encoded Command");
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    uint8_t *b = NULL;
    size_t blen = 0;
    int rc = request(c, cmd, body, body_len, &reply, &b, &blen, &owner);
    spbe__v1__command__free_unpacked(cmd, NULL);
    if (rc != SPBE_OK)
        return rc;
    size_t n = spbe__v1__reply__get_packed_size(reply);
    *reply_out = malloc(n ? n : 1);
    if (*reply_out) {
        spbe__v1__reply__pack(reply, *reply_out);
        *reply_len = n;
    }
    spbe__v1__broker_frame__free_unpacked(owner, NULL);
    if (reply_body) {
        *reply_body = b;
        *reply_body_len = blen;
    } else {
        free(b);
    }
    return *reply_out ? SPBE_OK : fail(c, SPBE_INTERNAL, "out of memory");
}

/* ------------------------------------------------------------ delivery receipts */

int
spbe_confirm_delivery(spbe_client *c, const char *topic, uint64_t up_to, const char *consumer,
                      uint64_t *leaf_index)
{
    if (!topic || up_to == 0)
        return fail(c, SPBE_BAD_REQUEST, "a delivery receipt needs a topic and a sequence");
    Spbe__V1__DeliveryReceipt dr = SPBE__V1__DELIVERY_RECEIPT__INIT;
    dr.member = c->id.member;
    dr.topic = (char *)topic;
    dr.up_to = up_to;
    dr.consumer = (char *)(consumer ? consumer : "");
    dr.signed_ns = wire_now_ns();
    Spbe__V1__SignedDeliveryReceipt signed_receipt;
    if (wire_delivery_sign(&dr, c->id.secret_key, &signed_receipt) != SPBE_OK)
        return fail(c, SPBE_INTERNAL, "out of memory");
    Spbe__V1__DeliveryAck ack = SPBE__V1__DELIVERY_ACK__INIT;
    ack.receipt = &signed_receipt;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_DELIVERY_ACK;
    cmd.delivery_ack = &ack;
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    int rc = simple_call(c, &cmd, &reply, &owner);
    free(signed_receipt.receipt.data);
    if (rc != SPBE_OK)
        return rc;
    if (leaf_index)
        *leaf_index = reply->body_case == SPBE__V1__REPLY__BODY_COUNT ? reply->count->count : 0;
    spbe__v1__broker_frame__free_unpacked(owner, NULL);
    return SPBE_OK;
}

/* ------------------------------------------------------------ consumers */

int
spbe_consume(spbe_client *c, const char *name, const char *pattern, const spbe_consumer_options *o,
             uint64_t *id)
{
    static const spbe_consumer_options none = {0};
    if (!o)
        o = &none;
    if (!name || strlen(name) > 64)
        return fail(c, SPBE_BAD_REQUEST, "consumer name must be 1 to 64 of [a-z0-9_-]");
    Spbe__V1__ConsumerConfig cfg = SPBE__V1__CONSUMER_CONFIG__INIT;
    cfg.name = (char *)name;
    cfg.pattern = (char *)(pattern ? pattern : "");
    cfg.start = (Spbe__V1__StartPosition)o->start;
    cfg.start_sequence = o->start_sequence;
    cfg.start_time_ns = o->start_time_ns;
    cfg.ack_wait_ms = o->ack_wait_ms;
    cfg.max_deliveries = o->max_deliveries;
    cfg.max_in_flight = o->max_in_flight;
    cfg.dead_letter_expired = o->dead_letter_expired != 0;
    Spbe__V1__Consume consume = SPBE__V1__CONSUME__INIT;
    consume.config = &cfg;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUME;
    cmd.consume = &consume;
    client_sub *sub;
    int rc = sub_call(c, &cmd, name, 1, &sub); /* a consumer is known by its name */
    if (rc == SPBE_OK && id)
        *id = sub->local_id;
    return rc;
}

static int
ack_one(spbe_client *c, const char *consumer, const char *topic, uint64_t sequence,
        spbe_ack_kind kind, uint32_t delay_ms, const char *reason, int wait)
{
    Spbe__V1__AckItem item = SPBE__V1__ACK_ITEM__INIT;
    item.topic = (char *)topic;
    item.sequence = sequence;
    item.kind = (Spbe__V1__AckKind)kind;
    item.delay_ms = delay_ms;
    item.reason = (char *)(reason ? reason : "");
    Spbe__V1__AckItem *items[] = {&item};
    Spbe__V1__Ack ack = SPBE__V1__ACK__INIT;
    ack.consumer = (char *)consumer;
    ack.items = items;
    ack.n_items = 1;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_ACK;
    cmd.ack = &ack;
    if (!wait) {
        if (!c->connected || c->closed_code)
            return fail(c, SPBE_UNAVAILABLE, "not connected: the message will come again");
        if (c->dispatching && kind == SPBE_ACK && strlen(topic) < sizeof c->acks->topic &&
            strlen(consumer) < sizeof c->ack_consumer) {
            if (!c->acks) {
                c->acks = malloc(ACKS_MAX * sizeof *c->acks);
                c->ack_ptrs = malloc(ACKS_MAX * sizeof *c->ack_ptrs);
                if (!c->acks || !c->ack_ptrs) {
                    free(c->acks);
                    free(c->ack_ptrs);
                    c->acks = NULL;
                    c->ack_ptrs = NULL;
                    return fail(c, SPBE_INTERNAL, "out of memory");
                }
            }
            if (c->n_acks && strcmp(c->ack_consumer, consumer) != 0)
                acks_flush(c);
            memcpy(c->ack_consumer, consumer, strlen(consumer) + 1);
            pending_ack *a = &c->acks[c->n_acks++];
            memcpy(a->topic, topic, strlen(topic) + 1);
            a->sequence = sequence;
            if (c->n_acks == ACKS_MAX)
                acks_flush(c);
            return SPBE_OK;
        }
        cmd.request_id = 0; /* no answer */
        return send_command(c, &cmd, NULL, 0);
    }
    return call_ok(c, &cmd);
}

int
spbe_ack(spbe_client *c, const char *consumer, const char *topic, uint64_t sequence,
         spbe_ack_kind kind, uint32_t delay_ms, int wait)
{
    return ack_one(c, consumer, topic, sequence, kind, delay_ms, NULL, wait);
}

int
spbe_term(spbe_client *c, const char *consumer, const char *topic, uint64_t sequence,
          const char *reason, int wait)
{
    if (reason && strlen(reason) > 200)
        return fail(c, SPBE_BAD_REQUEST, "a reason is at most 200 bytes");
    return ack_one(c, consumer, topic, sequence, SPBE_TERM, 0, reason, wait);
}

/* ------------------------------------------------------------ services */

static int
serve_command(spbe_client *c, const char *service, int serve)
{
    Spbe__V1__Serve sv = SPBE__V1__SERVE__INIT;
    Spbe__V1__Unserve un = SPBE__V1__UNSERVE__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    if (serve) {
        sv.service = (char *)service;
        cmd.body_case = SPBE__V1__COMMAND__BODY_SERVE;
        cmd.serve = &sv;
    } else {
        un.service = (char *)service;
        cmd.body_case = SPBE__V1__COMMAND__BODY_UNSERVE;
        cmd.unserve = &un;
    }
    return call_ok(c, &cmd);
}

int
spbe_serve(spbe_client *c, const char *service, spbe_request_fn fn, void *arg)
{
    if (!service || !fn || strlen(service) > 255)
        return fail(c, SPBE_BAD_REQUEST, "spbe_serve needs a service name and a handler");
    int rc = serve_command(c, service, 1);
    if (rc != SPBE_OK)
        return rc;
    served *sv = c->served;
    while (sv && strcmp(sv->service, service) != 0)
        sv = sv->next;
    if (!sv) {
        sv = calloc(1, sizeof *sv);
        if (!sv)
            return fail(c, SPBE_INTERNAL, "out of memory");
        snprintf(sv->service, sizeof sv->service, "%s", service);
        sv->next = c->served;
        c->served = sv;
    }
    sv->fn = fn;
    sv->arg = arg;
    return SPBE_OK;
}

int
spbe_unserve(spbe_client *c, const char *service)
{
    served **pp = &c->served;
    while (*pp && strcmp((*pp)->service, service) != 0)
        pp = &(*pp)->next;
    if (!*pp)
        return fail(c, SPBE_NOT_FOUND, "not serving %s", service);
    served *sv = *pp;
    *pp = sv->next;
    free(sv);
    return c->connected ? serve_command(c, service, 0) : SPBE_OK;
}

static int
service_topic(spbe_client *c, const char *service, char *topic, size_t n)
{
    if (!service || !wire_topic_valid(service) || strncmp(service, "$sys.", 5) == 0 ||
        snprintf(topic, n, "$sys.svc.%s", service) >= (int)n)
        return fail(c, SPBE_INVALID_TOPIC, "invalid service name '%s'", service ? service : "");
    return SPBE_OK;
}

int
spbe_respond(spbe_client *c, const char *service, uint64_t ref,
             const uint8_t request_id[SPBE_ID_BYTES], const void *payload, size_t len,
             const spbe_message_options *o, uint64_t *token)
{
    char topic[WIRE_TOPIC_MAX_BYTES + 16];
    int rc = service_topic(c, service, topic, sizeof topic);
    if (rc != SPBE_OK)
        return rc;
    spbe_message_options opt = o ? *o : (spbe_message_options){0};
    opt.correlation_id = request_id;
    opt.correlation_len = SPBE_ID_BYTES;
    uint8_t *bytes;
    size_t blen;
    if ((rc = spbe_sign(c, topic, payload, len, &opt, &bytes, &blen)) != SPBE_OK)
        return rc;
    if (c->closed_code) {
        free(bytes);
        return fail(c, c->closed_code, "session closed by the broker");
    }
    in_flight *e = flight_append(c, bytes, blen);
    free(bytes);
    if (!e)
        return fail(c, SPBE_INTERNAL, "out of memory");
    e->respond_ref = ref;
    if (token)
        *token = e->token;
    return flights_send(c);
}

void
spbe_response_free(spbe_response *r)
{
    if (!r)
        return;
    free(r->payload);
    free(r->raw);
    r->payload = r->raw = NULL;
    r->payload_len = r->raw_len = 0;
}

static int
receipt_ok(spbe_client *c, const Spbe__V1__SignedReceipt *sr)
{
    Spbe__V1__Receipt *r;
    if (!sr || wire_receipt_verify_cached(sr, c->broker_key, c->sigcache, &r) != SPBE_OK)
        return 0;
    int ok = r->code == SPBE__V1__ERROR_CODE__OK;
    spbe__v1__receipt__free_unpacked(r, NULL);
    return ok;
}

int
spbe_request(spbe_client *c, const char *service, const void *payload, size_t len, int timeout_ms,
             const spbe_message_options *o, spbe_response *out)
{
    memset(out, 0, sizeof *out);
    if (timeout_ms <= 0)
        timeout_ms = 30000;
    char topic[WIRE_TOPIC_MAX_BYTES + 16];
    int rc = service_topic(c, service, topic, sizeof topic);
    uint8_t *bytes = NULL;
    size_t blen = 0;
    if (rc == SPBE_OK)
        rc = spbe_sign(c, topic, payload, len, o, &bytes, &blen);
    if (rc != SPBE_OK) {
        out->code = rc;
        snprintf(out->error, sizeof out->error, "%.255s", c->error);
        return rc;
    }
    Spbe__V1__Request req = SPBE__V1__REQUEST__INIT;
    req.service = (char *)service;
    req.timeout_ms = (uint32_t)timeout_ms;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_REQUEST;
    cmd.request = &req;
    Spbe__V1__Reply *reply;
    Spbe__V1__BrokerFrame *owner;
    uint8_t *body = NULL;
    size_t body_len = 0;
    /* the broker answers TIMEOUT at the deadline; wait a little longer for that */
    rc = request_within(c, timeout_ms + 2000, &cmd, bytes, blen, &reply, &body, &body_len, &owner);
    free(bytes);
    if (rc != SPBE_OK) {
        out->code = rc;
        snprintf(out->error, sizeof out->error, "%.255s", c->error);
        return rc;
    }
    out->code = (int)reply->code;
    snprintf(out->error, sizeof out->error, "%s", reply->error ? reply->error : "");
    if (out->code == SPBE_OK && (reply->body_case != SPBE__V1__REPLY__BODY_RESPONSE || !body)) {
        out->code = SPBE_BAD_REQUEST;
        snprintf(out->error, sizeof out->error, "the broker's answer carries no reply");
    }
    if (out->code == SPBE_OK) {
        Spbe__V1__Response *resp = reply->response;
        Spbe__V1__SignedMessage *sm;
        Spbe__V1__Message *m;
        if (wire_envelope_decode(body, body_len, &sm, &m, NULL) != SPBE_OK ||
            strcmp(m->sender, resp->server) != 0) {
            out->code = SPBE_BAD_REQUEST;
            snprintf(out->error, sizeof out->error, "the reply is malformed");
        } else {
            snprintf(out->server, sizeof out->server, "%s", m->sender);
            snprintf(out->schema, sizeof out->schema, "%s", m->schema);
            out->request_sequence = resp->request_sequence;
            out->reply_sequence = resp->reply_sequence;
            out->payload = malloc(m->payload.len ? m->payload.len : 1);
            if (out->payload) {
                if (m->payload.len) /* an empty payload has no data pointer */
                    memcpy(out->payload, m->payload.data, m->payload.len);
                out->payload_len = m->payload.len;
            }
            out->raw = body;
            out->raw_len = body_len;
            body = NULL;
            out->receipts_verified =
                receipt_ok(c, resp->request_receipt) && receipt_ok(c, resp->reply_receipt);
        }
        wire_envelope_free(&sm, &m);
    }
    free(body);
    spbe__v1__broker_frame__free_unpacked(owner, NULL);
    if (out->code == SPBE_OK && verify_signed(c, out->server, out->raw, out->raw_len) != SPBE_OK) {
        out->code = SPBE_BAD_SIGNATURE;
        snprintf(out->error, sizeof out->error, "the reply's signature does not verify");
    }
    if (out->code != SPBE_OK)
        fail(c, out->code, "%s", out->error);
    return out->code;
}

/* ------------------------------------------------------------ event loops */

int
spbe_fd(spbe_client *c)
{
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(c->socket, ZMQ_FD, &fd, &len) != 0)
        return fail(c, SPBE_INTERNAL, "no descriptor: %s", zmq_strerror(errno)), -1;
    return fd;
}

int
spbe_next_timeout_ms(spbe_client *c)
{
    if (c->head || (c->connected && c->f_sent < c->f_count))
        return 0; /* frames to handle, or publishes to send */
    if (!c->connected)
        return 250; /* reconnecting: say hello again soon */
    int64_t idle = now_ms() - c->last_sent_ms;
    int64_t left = c->heartbeat_ms > 0 ? c->heartbeat_ms - idle : 1000;
    return left < 0 ? 0 : (int)(left > 1000 ? 1000 : left);
}
