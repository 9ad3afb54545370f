/**
 * @file spbe.h
 * @brief libspbe - the client library of spbe-bus, for integrators writing adapters.
 *
 * A client is one session of one member with one broker: CurveZMQ with the member's
 * key, then a HELLO. Publishing signs each message with the member's Ed25519 key and
 * returns the broker's signed receipt, either synchronously (spbe_publish) or
 * pipelined (spbe_publish_async, receipts through the receipt handler). Subscribing
 * delivers the sender's exact signed bytes through the delivery handler.
 *
 * Threads: a client belongs to one thread at a time. Handlers run inside
 * spbe_dispatch() or a synchronous call, on the caller's thread.
 *
 * Errors: every fallible call returns a code of enum spbe_error (spbe/errors.h) and
 * leaves a readable detail in spbe_last_error().
 */
#ifndef SPBE_H
#define SPBE_H

#include <stddef.h>
#include <stdint.h>

#include "spbe/errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SPBE_ID_BYTES 16
#define SPBE_KEY_BYTES 32
#define SPBE_HASH_BYTES 32

typedef struct spbe_client spbe_client;

/** Connection options; zero-initialise and set what you need. */
typedef struct spbe_options {
    /** Broker endpoint. NULL: $SPBE_BROKER, else the identity file's "broker",
     *  else tcp://127.0.0.1:7400. */
    const char *endpoint;
    /** The broker's Ed25519 public key in hex. NULL: $SPBE_BROKER_KEY, else the identity
     *  file's "broker_key". Required one way or another: it authenticates the broker. */
    const char *broker_key_hex;
    /** Time limit for connecting and for each synchronous call; 0: 5000 ms. */
    int timeout_ms;
    /** Free text sent in HELLO (e.g. "bkn-adapter/1.2"). */
    const char *client_name;
    /** 0 (default): when the broker restarts or the connection drops, say HELLO again,
     *  resume every subscription where it stopped and resend every publish whose receipt
     *  had not come (the broker's dedup stores it once; such a receipt reads OK with the
     *  original sequence). 1: the session's end is final, reported as SPBE_UNAVAILABLE. */
    int no_reconnect;
    /** 0 or 1 (default): each publish leaves at once, in a frame of its own. N > 1:
     *  publishes gather and leave together, up to N in one frame (at most 256, and what
     *  the broker takes), when N are waiting or at the next spbe_dispatch, spbe_flush or
     *  call, whichever comes first; each still has its own signature and its own receipt.
     *  Fewer frames cost less on both sides (encryption, system calls, parsing): with
     *  many publishes in flight this raises throughput. A publish then waits for the
     *  client's next dispatch or call to leave: spbe_next_timeout_ms() says 0 meanwhile. */
    int publish_batch;
} spbe_options;

/** What one publish carries besides its topic and payload. All optional. */
typedef struct spbe_message_options {
    const uint8_t *id;             /**< 16 bytes; NULL: random */
    const char *schema;            /**< protobuf type name of the payload */
    const uint8_t *correlation_id; /**< with correlation_len */
    size_t correlation_len;
    const char *reply_to;
    int64_t not_before_ns; /**< consumers get it only from then on (0: at once) */
    int64_t expires_ns;    /**< consumers never get it after then (0: never expires) */
} spbe_message_options;

/** The broker's answer to one publish, verified against the broker's key. */
typedef struct spbe_receipt {
    int code;       /**< SPBE_OK, SPBE_DUPLICATE or an error */
    uint64_t token; /**< the token of spbe_publish_async */
    char topic[256];
    uint64_t sequence; /**< for SPBE_DUPLICATE the original's */
    int64_t accepted_ns;
    uint8_t message_id[SPBE_ID_BYTES];
    uint8_t message_hash[SPBE_HASH_BYTES]; /**< SHA-256 of the signed bytes */
    int signed_by_broker;                  /**< 1 if the receipt's signature verified */
    uint64_t leaf_index; /**< SPBE_OK: the message's leaf in the broker's audit log */
    uint64_t tree_size;  /**< SPBE_OK: the log's size once it was committed... */
    uint8_t tree_root[SPBE_HASH_BYTES]; /**< ...and its root (inclusion provable later) */
    char error[256];                    /**< reason when code != SPBE_OK */
} spbe_receipt;

/** One delivered message. Pointers are valid only during the handler call. */
typedef struct spbe_delivery {
    uint64_t subscription_id;
    const char *topic;
    uint64_t sequence;
    int64_t accepted_ns; /**< the broker's acceptance time */
    const char *sender;
    const uint8_t *id;  /**< 16 bytes */
    int64_t created_ns; /**< the sender's clock */
    const char *schema;
    const uint8_t *correlation_id;
    size_t correlation_len;
    const char *reply_to;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *raw; /**< the sender's exact SignedMessage bytes */
    size_t raw_len;
    const char *consumer;    /**< a consumer's delivery: acknowledge it (spbe_ack); else NULL */
    uint32_t delivery_count; /**< 1 the first time, more when delivered again */
    int64_t ack_deadline_ns; /**< delivered again if not acknowledged by then */
    int64_t not_before_ns;
    int64_t expires_ns;
} spbe_delivery;

typedef void (*spbe_receipt_fn)(const spbe_receipt *receipt, void *arg);
typedef void (*spbe_delivery_fn)(const spbe_delivery *delivery, void *arg);

typedef enum spbe_start {
    SPBE_START_NEW = 0,      /**< messages accepted from now on */
    SPBE_START_FIRST = 1,    /**< from the first stored message of each matching topic */
    SPBE_START_SEQUENCE = 2, /**< from a sequence on each matching topic */
    SPBE_START_TIME = 3,     /**< consumers: from the first message accepted at a time */
} spbe_start;

/** A request to a service this client serves. Pointers are valid during the handler;
 *  to answer later keep service, ref and id (spbe_respond takes them). */
typedef struct spbe_request {
    const char *service;
    uint64_t ref;        /**< the broker's reference, quoted by spbe_respond */
    uint64_t sequence;   /**< the request's sequence in $sys.svc.<service> */
    int64_t deadline_ns; /**< the caller stops waiting then */
    const char *sender;  /**< the calling member (signature verified by the broker) */
    const uint8_t *id;   /**< 16 bytes, the request message's id */
    const char *schema;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *raw; /**< the caller's exact SignedMessage bytes */
    size_t raw_len;
} spbe_service_request;

typedef void (*spbe_request_fn)(spbe_client *client, const spbe_service_request *request,
                                void *arg);

/** The answer to spbe_request(); free with spbe_response_free(). */
typedef struct spbe_response {
    int code; /**< SPBE_OK, or why there is no answer (TIMEOUT, UNAVAILABLE, FORBIDDEN...) */
    char error[256];
    char server[65];                           /**< the member that answered */
    uint64_t request_sequence, reply_sequence; /**< both logged in $sys.svc.<service> */
    char schema[256];
    uint8_t *payload; /**< malloc'ed */
    size_t payload_len;
    uint8_t *raw; /**< the server's exact SignedMessage bytes (malloc'ed) */
    size_t raw_len;
    int receipts_verified; /**< 1 if the broker's receipts for both verified */
} spbe_response;

/** Durable consumer settings; zero-initialise: start new, ack wait 30 s, 5 deliveries,
 *  1000 in flight per attached client. */
typedef struct spbe_consumer_options {
    spbe_start start;
    uint64_t start_sequence;
    int64_t start_time_ns;
    uint32_t ack_wait_ms;
    uint32_t max_deliveries;
    uint32_t max_in_flight;
    int dead_letter_expired; /**< expired messages go to $sys.dlq.<consumer> too */
} spbe_consumer_options;

typedef enum spbe_ack_kind {
    SPBE_ACK = 0,      /**< done */
    SPBE_NAK = 1,      /**< deliver again after delay_ms */
    SPBE_PROGRESS = 2, /**< still working: the ack wait starts again */
    SPBE_TERM = 3,     /**< never again: to the dead letters */
} spbe_ack_kind;

/**
 * Connects with the identity file at identity_path (NULL: $SPBE_KEY).
 * On SPBE_OK *out is a client to spbe_close(). Errors: SPBE_NOT_FOUND / SPBE_BAD_REQUEST
 * (identity file), SPBE_UNKNOWN_SENDER (the broker refused the key), SPBE_REVOKED,
 * SPBE_UNAVAILABLE (no broker answered in time, or a wrong broker key).
 * On error *out is still set when it can carry the detail (read spbe_last_error, then
 * spbe_close), or NULL.
 */
int spbe_connect(const char *identity_path, const spbe_options *options, spbe_client **out);

/** Says goodbye, closes; NULL-safe; nulls *client. Unacknowledged async publishes are abandoned. */
void spbe_close(spbe_client **client);

/** Readable detail of the last error (never NULL). Valid until the next call. */
const char *spbe_last_error(const spbe_client *client);

/** The member this client speaks for. */
const char *spbe_member(const spbe_client *client);

/** The broker's receipt-signing public key (32 bytes), as learnt in the handshake. */
const uint8_t *spbe_broker_key(const spbe_client *client);

void spbe_set_receipt_handler(spbe_client *client, spbe_receipt_fn fn, void *arg);
void spbe_set_delivery_handler(spbe_client *client, spbe_delivery_fn fn, void *arg);

/**
 * Signs and publishes one message and waits for its receipt. Returns the receipt's
 * code (or SPBE_TIMEOUT / SPBE_UNAVAILABLE); *receipt (may be NULL) gets the receipt.
 */
int spbe_publish(spbe_client *client, const char *topic, const void *payload, size_t len,
                 const spbe_message_options *options, spbe_receipt *receipt);

/**
 * Signs and sends one message without waiting. The receipt comes later through the
 * receipt handler during spbe_dispatch() / spbe_flush(), carrying *token.
 * SPBE_OK when sent.
 */
int spbe_publish_async(spbe_client *client, const char *topic, const void *payload, size_t len,
                       const spbe_message_options *options, uint64_t *token);

/**
 * Builds and signs a message without sending it: *out (malloc'ed, caller frees) is the
 * SignedMessage to pass to spbe_publish_signed(), e.g. to sign ahead of a timed run.
 */
int spbe_sign(spbe_client *client, const char *topic, const void *payload, size_t len,
              const spbe_message_options *options, uint8_t **out, size_t *out_len);

/** One message of a batch for spbe_sign_batch(). */
typedef struct spbe_batch_item {
    const char *topic;
    const void *payload;
    size_t len;
    const spbe_message_options *options; /**< may be NULL */
} spbe_batch_item;

/**
 * Signs n messages (1 to 1048576) with one signature over their Merkle root (batch
 * signatures, docs/protocol.md): out[i] (malloc'ed, caller frees each) is message i's
 * SignedMessage with the batch's signature and its own inclusion proof, so it stays
 * verifiable on its own. Pass each to spbe_publish_signed(); the broker then checks one
 * signature per batch instead of one per message.
 */
int spbe_sign_batch(spbe_client *client, const spbe_batch_item *items, size_t n, uint8_t **out,
                    size_t *out_len);

/** Sends already signed bytes (as spbe_publish_async). The bytes are copied. */
int spbe_publish_signed(spbe_client *client, const uint8_t *signed_message, size_t len,
                        uint64_t *token);

/** 1 while a session with the broker is established (0 while reconnecting or closed). */
int spbe_connected(const spbe_client *client);

/** Number of async publishes whose receipts have not arrived. */
size_t spbe_in_flight(const spbe_client *client);

/** Dispatches until no publish is in flight or timeout_ms passes (SPBE_TIMEOUT). */
int spbe_flush(spbe_client *client, int timeout_ms);

/**
 * Subscribes to a pattern. Deliveries come through the delivery handler. *id (may be
 * NULL) gets the subscription id. After a reconnect the subscription goes on from the
 * next sequence of each topic it had received from; topics it had received nothing from
 * follow start again (with SPBE_START_NEW, what they got meanwhile is not replayed —
 * durable consumers give that guarantee). Errors: SPBE_INVALID_TOPIC, SPBE_FORBIDDEN,
 * SPBE_UNAVAILABLE when no session came back within the timeout (calls made while the
 * client reconnects wait for the session, up to their timeout). A session lost before
 * the reply (the broker restarted) is waited out the same way and the subscription
 * asked for again in the new session; so are spbe_serve, spbe_consume and questions
 * that change nothing. Calls that may have taken effect (a request, an administrative
 * change) are not repeated: SPBE_UNAVAILABLE or SPBE_TIMEOUT, and the caller decides.
 */
int spbe_subscribe(spbe_client *client, const char *pattern, spbe_start start,
                   uint64_t start_sequence, uint64_t *id);
int spbe_unsubscribe(spbe_client *client, uint64_t id);

/**
 * Waits up to timeout_ms (0: only what is ready, -1: forever) for events and runs
 * their handlers; keeps the session alive with heartbeats and, unless no_reconnect,
 * re-establishes it after a broker restart (publishes queue meanwhile). *events (may be
 * NULL) gets the number handled. SPBE_OK, or the session's final end: SPBE_REVOKED,
 * SPBE_UNAVAILABLE (broker gone or shutting down, with no_reconnect).
 */
int spbe_dispatch(spbe_client *client, int timeout_ms, int *events);

/**
 * Creates the durable consumer name on pattern if it does not exist (with options, NULL
 * for defaults) and attaches this client to it; pattern NULL attaches to an existing
 * one. Deliveries come through the delivery handler with d->consumer set; acknowledge
 * each with spbe_ack(). Clients attached to one consumer share its messages. After a
 * reconnect the client attaches again; what it held unacknowledged is delivered again.
 * Errors: SPBE_BAD_REQUEST (name, or another pattern), SPBE_INVALID_TOPIC, SPBE_FORBIDDEN.
 */
int spbe_consume(spbe_client *client, const char *name, const char *pattern,
                 const spbe_consumer_options *options, uint64_t *id);

/**
 * Acknowledges a consumer's delivery (of consumer, topic, sequence: as in the delivery).
 * wait 0 sends and returns (the broker does not answer; what is lost is delivered
 * again); wait 1 waits for the broker: SPBE_NOT_FOUND if the message is not pending.
 */
int spbe_ack(spbe_client *client, const char *consumer, const char *topic, uint64_t sequence,
             spbe_ack_kind kind, uint32_t delay_ms, int wait);

/**
 * Terminates a consumer's delivery (SPBE_TERM) with the reason (UTF-8, at most 200
 * bytes; NULL: "terminated") that its dead letter in $sys.dlq.<consumer> keeps, so whoever
 * looks at the dead letters sees why. wait as for spbe_ack.
 */
int spbe_term(spbe_client *client, const char *consumer, const char *topic, uint64_t sequence,
              const char *reason, int wait);

/**
 * Signs and sends a delivery receipt: "this member received every message of topic up to
 * up_to" (through consumer, may be NULL). The broker logs it as a leaf of its audit log
 * and puts it into the evidence of the messages it covers, so their senders can prove
 * delivery. *leaf_index (may be NULL) gets its leaf. Errors: SPBE_FORBIDDEN (no right to
 * read topic), SPBE_NOT_FOUND (no such topic), SPBE_BAD_REQUEST (up_to beyond the topic).
 */
int spbe_confirm_delivery(spbe_client *client, const char *topic, uint64_t up_to,
                          const char *consumer, uint64_t *leaf_index);

/**
 * Serves a service: requests come to fn during spbe_dispatch(); answer each with
 * spbe_respond() (in the handler or later). Errors: SPBE_INVALID_TOPIC, SPBE_FORBIDDEN.
 * Served again after a reconnect, and asked again when the broker restarts before it
 * answers (see spbe_subscribe).
 */
int spbe_serve(spbe_client *client, const char *service, spbe_request_fn fn, void *arg);
int spbe_unserve(spbe_client *client, const char *service);

/**
 * Answers request ref of service (request_id: the request's 16-byte id) with a signed
 * reply. Does not wait: the broker's receipt comes through the receipt handler with
 * *token (may be NULL), like spbe_publish_async.
 */
int spbe_respond(spbe_client *client, const char *service, uint64_t ref,
                 const uint8_t request_id[SPBE_ID_BYTES], const void *payload, size_t len,
                 const spbe_message_options *options, uint64_t *token);

/**
 * Calls service with a signed request and waits up to timeout_ms (0: 30000) for the
 * signed reply, which *response gets (free it with spbe_response_free). Returns
 * response->code: SPBE_OK, SPBE_UNAVAILABLE (nobody serves it), SPBE_TIMEOUT (no reply
 * in time), SPBE_FORBIDDEN (no right to call it), or another error.
 */
int spbe_request(spbe_client *client, const char *service, const void *payload, size_t len,
                 int timeout_ms, const spbe_message_options *options, spbe_response *response);
void spbe_response_free(spbe_response *response);

/**
 * Event loop integration: a file descriptor that becomes readable when the broker has
 * sent something. Poll it (with spbe_next_timeout_ms() as the timeout, for heartbeats),
 * then call spbe_dispatch(client, 0, NULL), which handles everything ready. The
 * descriptor is edge-triggered (ZeroMQ's ZMQ_FD): call spbe_dispatch(client, 0, NULL)
 * also after every other call into the library before polling again. The descriptor
 * changes when the library reconnects: ask for it before each poll (it is cheap).
 * -1 on error.
 */
int spbe_fd(spbe_client *client);
/** Milliseconds until the client needs spbe_dispatch for heartbeats or reconnecting. */
int spbe_next_timeout_ms(spbe_client *client);

/**
 * Verifies a delivery's signature end to end against the sender's registered key
 * (fetched from the broker once per sender). SPBE_OK, SPBE_BAD_SIGNATURE,
 * SPBE_UNKNOWN_SENDER.
 */
int spbe_verify(spbe_client *client, const spbe_delivery *delivery);

/**
 * Low-level call for tools: sends an encoded spbe.v1.Command (its request_id is set
 * by the library) with an optional body frame, and waits for the matching
 * spbe.v1.Reply. *reply (malloc'ed, caller frees) gets the encoded reply; *body
 * (caller frees, may be NULL) its body frame if any. Returns SPBE_OK when a reply
 * arrived (its own code is inside), or SPBE_TIMEOUT / SPBE_UNAVAILABLE / SPBE_BAD_REQUEST.
 */
int spbe_call(spbe_client *client, const uint8_t *command, size_t command_len, const uint8_t *body,
              size_t body_len, uint8_t **reply, size_t *reply_len, uint8_t **reply_body,
              size_t *reply_body_len);

/** The library's version string. */
const char *spbe_version(void);

#ifdef __cplusplus
}
#endif
#endif
