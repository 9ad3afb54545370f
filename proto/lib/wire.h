/*
 * wire.h - the protocol's small library: error codes, names, topics, keys,
 * envelope signing and verification, receipts.
 *
 * Everything that speaks the protocol (broker, client library, tools) links this
 * one library; it depends on libsodium and protobuf-c only.
 */
#ifndef SPBE_WIRE_H
#define SPBE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "merkle.h"
#include "spbe/v1/spbe.pb-c.h"
#include "spbe/errors.h"

#define WIRE_PROTOCOL_VERSION 1
#define WIRE_ID_BYTES 16
#define WIRE_KEY_BYTES 32    /* Ed25519 public key */
#define WIRE_SECRET_BYTES 64 /* Ed25519 secret key (seed || public) */
#define WIRE_SIGNATURE_BYTES 64
#define WIRE_HASH_BYTES 32 /* SHA-256 */
#define WIRE_TOPIC_MAX_BYTES 255
#define WIRE_TOPIC_MAX_TOKENS 16
#define WIRE_MEMBER_MAX_BYTES 64

/* Signing contexts: a signature over one kind of object never verifies as another. */
#define WIRE_CONTEXT_MESSAGE "spbe.v1.message"
#define WIRE_CONTEXT_RECEIPT "spbe.v1.receipt"
#define WIRE_CONTEXT_TREE_HEAD "spbe.v1.treehead"
#define WIRE_CONTEXT_KEY_ROTATION "spbe.v1.keyrotation"
#define WIRE_CONTEXT_DELIVERY "spbe.v1.delivery"
#define WIRE_CONTEXT_BROKER_KEY "spbe.v1.brokerkey"
#define WIRE_CONTEXT_BATCH "spbe.v1.batch" /* the root of a batch (spbe.proto, BatchProof) */

#define WIRE_BATCH_MAX 1048576 /* leaves in one signed batch */

/* Initialise libsodium; returns SPBE_OK or SPBE_INTERNAL. Safe to call repeatedly. */
int wire_init(void);

/* 1 if name is "agency/app": two parts of [a-z0-9_-]+ (1..64 bytes in all), else 0. */
int wire_member_valid(const char *name);
/* 1 if topic is a valid concrete topic (no wildcards), else 0. Topics starting "$sys."
 * are valid syntax; who may use them is a matter of rights. */
int wire_topic_valid(const char *topic);
/* 1 if pattern is a valid subscription pattern ('*' a whole token, '>' the last token). */
int wire_pattern_valid(const char *pattern);
/* 1 if topic matches pattern, else 0. Both must be valid. A pattern whose first
 * token is not "$sys" never matches a topic of "$sys." (as NATS does with "$"). */
int wire_pattern_match(const char *pattern, const char *topic);

/* 1 if every topic that pattern matches is also matched by granted (both valid). */
int wire_pattern_covers(const char *granted, const char *pattern);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void wire_hex_encode(const uint8_t *in, size_t n, char *out);
/* Parses exactly n bytes of hex; returns SPBE_OK or SPBE_BAD_REQUEST. */
int wire_hex_decode(const char *hex, uint8_t *out, size_t n);

/* SHA-256 of data. */
void wire_hash(const uint8_t *data, size_t len, uint8_t out[WIRE_HASH_BYTES]);

/* Unix time now in nanoseconds (CLOCK_REALTIME). */
int64_t wire_now_ns(void);
/* A clock for durations, in nanoseconds (CLOCK_MONOTONIC: never steps back). */
int64_t wire_mono_ns(void);

/* Random message id. */
void wire_random_id(uint8_t id[WIRE_ID_BYTES]);

/* CURVE (X25519) keys derived from a member's Ed25519 keys; 0 on success. */
int wire_curve_public(const uint8_t ed_public[WIRE_KEY_BYTES], uint8_t curve_public[32]);
int wire_curve_secret(const uint8_t ed_secret[WIRE_SECRET_BYTES], uint8_t curve_secret[32]);

/*
 * Encodes message, signs it with secret and encodes the SignedMessage.
 * On SPBE_OK *out is a malloc'ed buffer of *out_len bytes the caller frees.
 */
int wire_message_sign(const Spbe__V1__Message *message, const uint8_t secret[WIRE_SECRET_BYTES],
                      uint8_t **out, size_t *out_len);

/*
 * Signs n messages (1 .. WIRE_BATCH_MAX) as one batch: out[i] (malloc'ed, caller frees
 * each) is message i's SignedMessage with the batch signature and its inclusion
 * proof. SPBE_OK, SPBE_BAD_REQUEST (n) or SPBE_INTERNAL (nothing left allocated).
 */
int wire_message_sign_batch(const Spbe__V1__Message *const *messages, size_t n,
                            const uint8_t secret[WIRE_SECRET_BYTES], uint8_t **out,
                            size_t *out_len);

/*
 * Decodes a SignedMessage and the Message inside it, and checks the envelope's shape
 * (id of 16 bytes, signature of 64 bytes, valid topic and sender). It does not verify
 * the signature. The caller frees both with wire_envelope_free() whatever it returns (a
 * shape error leaves both decoded, to name the topic or sender in a refusal).
 * Errors: SPBE_BAD_REQUEST (undecodable or malformed), SPBE_INVALID_TOPIC.
 * *reason (if not NULL) receives a static string saying what is wrong.
 */
int wire_envelope_decode(const uint8_t *data, size_t len, Spbe__V1__SignedMessage **signed_out,
                         Spbe__V1__Message **message_out, const char **reason);
void wire_envelope_free(Spbe__V1__SignedMessage **signed_message, Spbe__V1__Message **message);

/*
 * Batch signatures (spbe.proto, BatchProof): one Ed25519 signature over the RFC 9162
 * root of many objects' leaves, leaf = context "\0" || encoded object.
 */
typedef struct wire_batch {
    merkle_mem tree;
    uint8_t root[WIRE_HASH_BYTES];
    uint8_t signature[WIRE_SIGNATURE_BYTES];
} wire_batch;

/* The leaf hash of an encoded object signed under context as part of a batch. */
void wire_batch_leaf(const char *context, const uint8_t *data, size_t len,
                     uint8_t out[WIRE_HASH_BYTES]);
/* Builds the tree over n (1 .. WIRE_BATCH_MAX) leaf hashes and signs its root. SPBE_OK,
 * SPBE_BAD_REQUEST (n out of range) or SPBE_INTERNAL; free with wire_batch_free(). */
int wire_batch_sign(wire_batch *b, const uint8_t (*leaf_hashes)[WIRE_HASH_BYTES], size_t n,
                    const uint8_t secret[WIRE_SECRET_BYTES]);
/* Leaf index's inclusion proof into path (MERKLE_PATH_MAX room), *n entries. 0 or -1. */
int wire_batch_path(const wire_batch *b, uint64_t index, uint8_t path[][WIRE_HASH_BYTES],
                    size_t *n);
void wire_batch_free(wire_batch *b);

/*
 * Batch roots already verified, so that a batch's signature is checked once however
 * many of its objects arrive (256 entries, thread-safe). The key, size, root and
 * signature must all match for a hit.
 */
typedef struct wire_sigcache wire_sigcache;
wire_sigcache *wire_sigcache_new(void);
void wire_sigcache_free(wire_sigcache **cache);

/* NULL if a batch proof has the shape this protocol allows, else what is wrong. */
const char *wire_batch_proof_problem(const Spbe__V1__BatchProof *batch);

/* Verifies data signed under context: a single signature when batch is NULL, else the
 * batch's root signature through the leaf's proof (cache may be NULL). SPBE_OK or
 * SPBE_BAD_SIGNATURE (also for a malformed proof). */
int wire_signed_verify(const char *context, const uint8_t *data, size_t len,
                       const uint8_t *signature, size_t signature_len,
                       const Spbe__V1__BatchProof *batch, const uint8_t key[WIRE_KEY_BYTES],
                       wire_sigcache *cache);

/* Verifies a decoded envelope against the sender's key, singly or batch-signed:
 * SPBE_OK or SPBE_BAD_SIGNATURE. */
int wire_envelope_verify(const Spbe__V1__SignedMessage *signed_message,
                         const uint8_t public_key[WIRE_KEY_BYTES]);
int wire_envelope_verify_cached(const Spbe__V1__SignedMessage *signed_message,
                                const uint8_t public_key[WIRE_KEY_BYTES], wire_sigcache *cache);

/* Signs an encoded object under a context: sig = Ed25519(secret, context "\0" data). */
void wire_sign_detached(const char *context, const uint8_t *data, size_t len,
                        const uint8_t secret[WIRE_SECRET_BYTES],
                        uint8_t signature[WIRE_SIGNATURE_BYTES]);
/* SPBE_OK or SPBE_BAD_SIGNATURE. */
int wire_verify_detached(const char *context, const uint8_t *data, size_t len,
                         const uint8_t *signature, size_t signature_len,
                         const uint8_t public_key[WIRE_KEY_BYTES]);

/*
 * Encodes receipt and signs it with the broker's key into *out (fields point into a
 * malloc'ed buffer the caller frees with free(out->receipt.data)).
 */
int wire_receipt_sign(const Spbe__V1__Receipt *receipt, const uint8_t secret[WIRE_SECRET_BYTES],
                      Spbe__V1__SignedReceipt *out);
/* The same layout with the signature's 64 bytes left for a batch signature. */
int wire_receipt_encode(const Spbe__V1__Receipt *receipt, Spbe__V1__SignedReceipt *out);
/* The key valid at t_ns among a member's keys (its history, else its current key), or
 * NULL if none was. */
const uint8_t *wire_member_key_at(const Spbe__V1__Member *m, int64_t t_ns);
/* The proof of a key rotation: what the new key signs (name || key) into proof. */
void wire_rotation_sign(const char *name, const uint8_t key[WIRE_KEY_BYTES],
                        const uint8_t secret[WIRE_SECRET_BYTES],
                        uint8_t proof[WIRE_SIGNATURE_BYTES]);
int wire_rotation_verify(const char *name, const uint8_t key[WIRE_KEY_BYTES], const uint8_t *proof,
                         size_t proof_len);

/* Encodes a tree head and signs it like a receipt (same ownership as wire_receipt_sign:
 * free(out->head.data)). */
int wire_tree_head_sign(const Spbe__V1__TreeHead *head, const uint8_t secret[WIRE_SECRET_BYTES],
                        Spbe__V1__SignedTreeHead *out);
/* Signs the head of a tree (size, root, now, broker) and encodes the SignedTreeHead into
 * *out (malloc'ed, caller frees). SPBE_OK or SPBE_INTERNAL. */
int wire_tree_head_encode(uint64_t size, const uint8_t root[WIRE_HASH_BYTES], const char *broker,
                          const uint8_t secret[WIRE_SECRET_BYTES], uint8_t **out, size_t *len);
/* Verifies and decodes a signed tree head (root must be 32 bytes); *head_out freed with
 * spbe__v1__tree_head__free_unpacked(). SPBE_OK, SPBE_BAD_SIGNATURE or SPBE_BAD_REQUEST. */
int wire_tree_head_verify(const Spbe__V1__SignedTreeHead *signed_head,
                          const uint8_t broker_key[WIRE_KEY_BYTES], Spbe__V1__TreeHead **head_out);

/* A member's delivery receipt, signed with its key, and its verification (same
 * ownership and results as the broker's receipts). */
int wire_delivery_sign(const Spbe__V1__DeliveryReceipt *receipt,
                       const uint8_t secret[WIRE_SECRET_BYTES],
                       Spbe__V1__SignedDeliveryReceipt *out);
int wire_delivery_verify(const Spbe__V1__SignedDeliveryReceipt *signed_receipt,
                         const uint8_t key[WIRE_KEY_BYTES],
                         Spbe__V1__DeliveryReceipt **receipt_out);

/* A rotation of the broker's key, signed by the old key; verification checks the old
 * key's signature (against the rotation's own old_key, which the caller must trust). */
int wire_broker_rotation_sign(const Spbe__V1__BrokerKeyRotation *rotation,
                              const uint8_t old_secret[WIRE_SECRET_BYTES],
                              Spbe__V1__SignedBrokerKeyRotation *out);
int wire_broker_rotation_verify(const Spbe__V1__SignedBrokerKeyRotation *signed_rotation,
                                Spbe__V1__BrokerKeyRotation **rotation_out);

/* Verifies and decodes a signed receipt; *receipt_out freed with
 * spbe__v1__receipt__free_unpacked(). SPBE_OK, SPBE_BAD_SIGNATURE or SPBE_BAD_REQUEST. */
int wire_receipt_verify(const Spbe__V1__SignedReceipt *signed_receipt,
                        const uint8_t broker_key[WIRE_KEY_BYTES], Spbe__V1__Receipt **receipt_out);
/* The same, checking a batch root's signature once per cache (may be NULL). */
int wire_receipt_verify_cached(const Spbe__V1__SignedReceipt *signed_receipt,
                               const uint8_t broker_key[WIRE_KEY_BYTES], wire_sigcache *cache,
                               Spbe__V1__Receipt **receipt_out);

#endif
