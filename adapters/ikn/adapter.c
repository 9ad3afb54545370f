/* adapter.c - what the reference process's adapters share (adapter.h). */
#include "adapter.h"

#include "process.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void
ikn_log(const ikn_ctx *x, const char *event, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ikn role=%s%s%s event=%s %s\n", x->role, x->instansi ? " instansi=" : "",
            x->instansi ? x->instansi : "", event, text);
}

void
ikn_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

int
ikn_connect(ikn_ctx *x, spbe_client **c)
{
    spbe_options o = {.endpoint = x->broker, .client_name = x->role, .timeout_ms = 10000};
    for (int attempt = 0; !*x->stop; attempt++) {
        int rc = spbe_connect(x->key, &o, c);
        if (rc == SPBE_OK)
            return SPBE_OK;
        if (attempt % 10 == 0)
            ikn_log(x, "connect_failed", "code=%s reason=\"%s\"", spbe_error_name(rc),
                    *c ? spbe_last_error(*c) : "");
        spbe_close(c);
        if (rc != SPBE_UNAVAILABLE && rc != SPBE_TIMEOUT)
            return rc; /* a refusal (unknown key, revoked) does not go away by trying */
        nanosleep(&(struct timespec){0, 200000000}, NULL);
    }
    return SPBE_UNAVAILABLE;
}

uint8_t *
ikn_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(m, buf);
    return buf;
}

static int
publish(spbe_client *c, const char *topic, const ProtobufCMessage *m, const uint8_t *id,
        spbe_receipt *r, uint64_t *token)
{
    size_t len;
    uint8_t *buf = ikn_pack(m, &len);
    if (!buf)
        return SPBE_INTERNAL;
    spbe_message_options o = {.id = id, .schema = m->descriptor->name};
    int rc = token ? spbe_publish_async(c, topic, buf, len, &o, token)
                   : spbe_publish(c, topic, buf, len, &o, r);
    free(buf);
    return rc;
}

int
ikn_publish(spbe_client *c, const char *topic, const ProtobufCMessage *m, const uint8_t *id,
            spbe_receipt *r)
{
    spbe_receipt local;
    return publish(c, topic, m, id, r ? r : &local, NULL);
}

int
ikn_publish_async(spbe_client *c, const char *topic, const ProtobufCMessage *m, const uint8_t *id,
                  uint64_t *token)
{
    return publish(c, topic, m, id, NULL, token);
}

/* ------------------------------------------------------------ the stage loop */

#define SLOTS 8192 /* > max_in_flight: a token's slot is token % SLOTS */

typedef struct awaiting {
    uint64_t token; /* 0: free */
    char topic[256];
    uint64_t sequence;
} awaiting;

typedef struct stage_run {
    ikn_ctx *x;
    const ikn_stage *stage;
    spbe_client *c;
    ikn_item *queue;
    size_t n_queue, cap_queue;
    awaiting *slots;
    /* acknowledgements decided inside handlers, sent after them */
    struct pending_ack {
        char topic[256];
        uint64_t sequence;
        spbe_ack_kind kind;
    } * acks;
    size_t n_acks, cap_acks;
    ikn_stage_stats *stats;
    int failed;
} stage_run;

static void
ack_later(stage_run *s, const char *topic, uint64_t sequence, spbe_ack_kind kind)
{
    if (s->n_acks == s->cap_acks) {
        size_t cap = s->cap_acks ? 2 * s->cap_acks : 256;
        struct pending_ack *n = realloc(s->acks, cap * sizeof *n);
        if (!n) {
            s->failed = 1; /* not acknowledged: delivered again after the ack wait */
            return;
        }
        s->acks = n;
        s->cap_acks = cap;
    }
    struct pending_ack *a = &s->acks[s->n_acks++];
    snprintf(a->topic, sizeof a->topic, "%s", topic);
    a->sequence = sequence;
    a->kind = kind;
}

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    stage_run *s = arg;
    if (!d->consumer)
        return;
    if (s->n_queue == s->cap_queue) {
        size_t cap = s->cap_queue ? 2 * s->cap_queue : 256;
        ikn_item *n = realloc(s->queue, cap * sizeof *n);
        if (!n)
            return; /* delivered again after the ack wait */
        s->queue = n;
        s->cap_queue = cap;
    }
    ikn_item *it = &s->queue[s->n_queue];
    it->payload = malloc(d->payload_len ? d->payload_len : 1);
    if (!it->payload)
        return;
    if (d->payload_len)
        memcpy(it->payload, d->payload, d->payload_len);
    it->payload_len = d->payload_len;
    snprintf(it->topic, sizeof it->topic, "%s", d->topic);
    it->sequence = d->sequence;
    it->accepted_ns = d->accepted_ns;
    it->delivery_count = d->delivery_count;
    s->n_queue++;
    s->stats->consumed++;
}

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    stage_run *s = arg;
    awaiting *w = &s->slots[r->token % SLOTS];
    if (w->token != r->token)
        return;
    if (r->code == SPBE_OK || r->code == SPBE_DUPLICATE) {
        s->stats->duplicates += r->code == SPBE_DUPLICATE;
        s->stats->acked++;
        ack_later(s, w->topic, w->sequence, SPBE_ACK);
    } else {
        /* refused: its cause cannot be processed as it is; the dead letters keep it */
        ikn_log(s->x, "publish_refused", "topic=%s code=%s reason=\"%s\" cause=%s/%llu", r->topic,
                spbe_error_name(r->code), r->error, w->topic, (unsigned long long)w->sequence);
        s->stats->refused++;
        ack_later(s, w->topic, w->sequence, SPBE_TERM);
    }
    w->token = 0;
}

static void
process(stage_run *s, ikn_item *it)
{
    ikn_output out;
    memset(&out, 0, sizeof out);
    ikn_verdict v = s->stage->transform(s->x, s->c, s->stage->arg, it, &out);
    const char *consumer = s->stage->consumer;
    switch (v) {
    case IKN_ACK:
        spbe_ack(s->c, consumer, it->topic, it->sequence, SPBE_ACK, 0, 0);
        s->stats->acked++;
        break;
    case IKN_RETRY:
        if (s->x->verbose)
            ikn_log(s->x, "retry", "topic=%s sequence=%llu reason=\"%s\"", it->topic,
                    (unsigned long long)it->sequence, out.reason);
        spbe_ack(s->c, consumer, it->topic, it->sequence, SPBE_NAK, 1000, 0);
        s->stats->retried++;
        break;
    case IKN_TERM:
        ikn_log(s->x, "dead_letter", "topic=%s sequence=%llu reason=\"%s\"", it->topic,
                (unsigned long long)it->sequence, out.reason);
        spbe_term(s->c, consumer, it->topic, it->sequence, out.reason, 0);
        s->stats->terminated++;
        break;
    case IKN_PUBLISH: {
        uint64_t token = 0;
        int rc = ikn_publish_async(s->c, out.topic, out.message, out.id, &token);
        if (rc == SPBE_OK && s->slots[token % SLOTS].token == 0) {
            awaiting *w = &s->slots[token % SLOTS];
            w->token = token;
            snprintf(w->topic, sizeof w->topic, "%s", it->topic);
            w->sequence = it->sequence;
            s->stats->published++;
        } else {
            /* not sent, or no slot to follow it by: the message comes again */
            spbe_ack(s->c, consumer, it->topic, it->sequence, SPBE_NAK, 1000, 0);
            s->stats->retried++;
        }
        break;
    }
    }
    if (out.message) {
        if (out.free_fn)
            out.free_fn(out.message);
        else
            protobuf_c_message_free_unpacked(out.message, NULL);
    }
}

int
ikn_stage_run(ikn_ctx *x, const ikn_stage *stage, ikn_stage_stats *stats)
{
    stage_run s = {.x = x, .stage = stage, .stats = stats};
    s.slots = calloc(SLOTS, sizeof *s.slots);
    if (!s.slots)
        return SPBE_INTERNAL;
    int rc = ikn_connect(x, &s.c);
    if (rc == SPBE_OK) {
        spbe_set_delivery_handler(s.c, on_delivery, &s);
        spbe_set_receipt_handler(s.c, on_receipt, &s);
        spbe_consumer_options co = {.start = SPBE_START_FIRST,
                                    .ack_wait_ms = 30000,
                                    .max_deliveries = 5,
                                    .max_in_flight = stage->max_in_flight};
        uint64_t id;
        rc = spbe_consume(s.c, stage->consumer, stage->pattern, &co, &id);
        if (rc != SPBE_OK)
            ikn_log(x, "consume_failed", "consumer=%s code=%s reason=\"%s\"", stage->consumer,
                    spbe_error_name(rc), spbe_last_error(s.c));
    }
    while (rc == SPBE_OK && !*x->stop) {
        rc = spbe_dispatch(s.c, s.n_queue ? 0 : 100, NULL);
        for (size_t i = 0; i < s.n_acks; i++)
            spbe_ack(s.c, stage->consumer, s.acks[i].topic, s.acks[i].sequence, s.acks[i].kind, 0,
                     0);
        s.n_acks = 0;
        size_t n = s.n_queue;
        for (size_t i = 0; i < n && !*x->stop; i++) {
            ikn_item it = s.queue[i]; /* a handler may grow the queue meanwhile */
            process(&s, &it);
        }
        for (size_t i = 0; i < n; i++)
            free(s.queue[i].payload);
        /* what arrived while processing (inside spbe_request) stays for the next round */
        if (n) {
            memmove(s.queue, s.queue + n, (s.n_queue - n) * sizeof *s.queue);
            s.n_queue -= n;
        }
    }
    if (s.c && rc == SPBE_OK)
        spbe_flush(s.c, 5000);
    for (size_t i = 0; i < s.n_acks; i++)
        spbe_ack(s.c, stage->consumer, s.acks[i].topic, s.acks[i].sequence, s.acks[i].kind, 0, 0);
    for (size_t i = 0; i < s.n_queue; i++)
        free(s.queue[i].payload);
    free(s.queue);
    free(s.acks);
    free(s.slots);
    spbe_close(&s.c);
    return rc == SPBE_OK ? SPBE_OK : rc;
}

int
ikn_follow(ikn_ctx *x, const char *consumer, const char *pattern,
           ikn_verdict (*transform)(ikn_ctx *, spbe_client *, void *, const ikn_item *,
                                    ikn_output *),
           const char *published_as)
{
    ikn_stage st = {
        .consumer = consumer, .pattern = pattern, .max_in_flight = 1000, .transform = transform};
    ikn_stage_stats stats = {0};
    int rc = ikn_stage_run(x, &st, &stats);
    printf("{\"role\":\"%s\",\"consumed\":%llu,\"%s\":%llu,\"duplicates\":%llu,"
           "\"refused\":%llu,\"code\":\"%s\"}\n",
           x->role, (unsigned long long)stats.consumed, published_as,
           (unsigned long long)stats.published, (unsigned long long)stats.duplicates,
           (unsigned long long)stats.refused, spbe_error_name(rc));
    return rc == SPBE_OK ? 0 : 1;
}

int
ikn_print_bindings(ikn_ctx *x)
{
    (void)x;
    ikn_write_bindings(stdout);
    return 0;
}

int
ikn_print_members(ikn_ctx *x)
{
    ikn_member m[IKN_MEMBERS_MAX];
    char pubs[IKN_MEMBERS_MAX][2][96];
    size_t n = ikn_members(&x->world, m, pubs);
    for (size_t i = 0; i < n; i++) {
        printf("%s %s %s", m[i].name, m[i].role ? m[i].role : "-",
               m[i].instansi ? m[i].instansi : "-");
        static const char *const flag[] = {"--pub", "--sub", "--serve", "--call", "--role"};
        const char *const *lists[] = {m[i].pub, m[i].sub, m[i].serve, m[i].call, m[i].roles};
        const size_t caps[] = {3, 2, 2, 3, 2};
        for (size_t l = 0; l < 5; l++)
            for (size_t k = 0; k < caps[l] && lists[l][k]; k++)
                printf(" %s %s", flag[l], lists[l][k]);
        printf("\n");
    }
    return 0;
}
