/*
 * adapter.h - what every agency adapter of the reference process shares: its options,
 * connecting as its member, publishing protobuf payloads, and the consume -> transform
 * -> publish -> acknowledge loop that makes an adapter safe to kill at any moment
 * (a message is acknowledged only after what it caused has its receipt, and what it
 * causes has a message id derived from it, so a redelivery is stored once).
 */
#ifndef SPBE_IKN_ADAPTER_H
#define SPBE_IKN_ADAPTER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "spbe/spbe.h"
#include "world.h"

typedef struct ikn_ctx {
    const char *role, *key, *broker, *instansi;
    uint64_t seed;
    size_t n_asn;
    int workers;
    int verbose;
    ikn_world world;
    volatile sig_atomic_t *stop;
} ikn_ctx;

/* Connects as the member of ctx->key; tries again until connected or stopped. */
int ikn_connect(ikn_ctx *x, spbe_client **c);

/* Packs m into a fresh buffer (*len bytes); NULL when out of memory. */
uint8_t *ikn_pack(const ProtobufCMessage *m, size_t *len);

/* Publishes m (its type as the schema) on topic with the 16-byte id; sync: the receipt's
 * code (r may be NULL); async: SPBE_OK when sent, the receipt later with *token. */
int ikn_publish(spbe_client *c, const char *topic, const ProtobufCMessage *m, const uint8_t *id,
                spbe_receipt *r);
int ikn_publish_async(spbe_client *c, const char *topic, const ProtobufCMessage *m,
                      const uint8_t *id, uint64_t *token);

/* One consumed message, as the transform sees it. */
typedef struct ikn_item {
    char topic[256];
    uint64_t sequence;
    int64_t accepted_ns;
    uint32_t delivery_count;
    uint8_t *payload;
    size_t payload_len;
} ikn_item;

/* What the transform decides for one item. */
typedef enum ikn_verdict {
    IKN_ACK,     /* nothing to publish: acknowledge */
    IKN_PUBLISH, /* publish out (topic, message, id), acknowledge after its receipt */
    IKN_RETRY,   /* deliver it again later */
    IKN_TERM,    /* cannot be processed: to the dead letters */
} ikn_verdict;

typedef struct ikn_output {
    char topic[256];
    ProtobufCMessage *message; /* freed with protobuf_c_message_free_unpacked if unpacked,
                                  else by free_fn */
    void (*free_fn)(ProtobufCMessage *m);
    uint8_t id[16];
    char reason[160]; /* IKN_TERM / IKN_RETRY: why, for the log */
} ikn_output;

typedef struct ikn_stage {
    const char *consumer, *pattern;
    uint32_t max_in_flight;
    /* runs outside the library's handlers: may call spbe_request on c */
    ikn_verdict (*transform)(ikn_ctx *x, spbe_client *c, void *arg, const ikn_item *in,
                             ikn_output *out);
    void *arg;
} ikn_stage;

typedef struct ikn_stage_stats {
    uint64_t consumed, published, acked, retried, terminated, duplicates, refused;
} ikn_stage_stats;

/* Runs stage on one client until ctx->stop; adds what it did to *stats. */
int ikn_stage_run(ikn_ctx *x, const ikn_stage *stage, ikn_stage_stats *stats);

/* Runs a stage of one session on consumer (pattern, 1000 in flight) until stopped, then
 * prints its JSON report, published messages counted under published_as. Exit status. */
int ikn_follow(ikn_ctx *x, const char *consumer, const char *pattern,
               ikn_verdict (*transform)(ikn_ctx *, spbe_client *, void *, const ikn_item *,
                                        ikn_output *),
               const char *published_as);

/* Logs one line to stderr: "ikn role=... event=... " fmt. */
void ikn_log(const ikn_ctx *x, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes s as a JSON string. */
void ikn_json_string(FILE *f, const char *s);

/* The roles, each its own process. */
int ikn_kl(ikn_ctx *x);
int ikn_dukcapil(ikn_ctx *x);
int ikn_bkn(ikn_ctx *x);
int ikn_hunian(ikn_ctx *x);
int ikn_tunjangan(ikn_ctx *x);
int ikn_portal(ikn_ctx *x);
int ikn_print_bindings(ikn_ctx *x);
int ikn_print_members(ikn_ctx *x);

#endif
