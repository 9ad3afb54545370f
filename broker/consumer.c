/* consumer.c - durable consumers: cursors, pending deliveries, redelivery, dead letters. */
#include "consumer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "spbe/errors.h"
#include "wire.h"

#define DEFAULT_ACK_WAIT_MS 30000
#define DEFAULT_MAX_DELIVERIES 5
#define DEFAULT_MAX_IN_FLIGHT 1000
#define LETTERS_MAX 256              /* dead letters per commit */
#define PENDING_SCHEDULED 1u         /* waits for its not-before time; never delivered yet */
#define SETTLE_EVERY_NS 1000000000LL /* no room: look for what must leave this often */
#define BLOCKED_RETRY_NS 5000000LL   /* a peer at its high-water mark: try again then */

typedef struct attachment {
    void *session;
    uint64_t id;
    uint32_t in_flight;
    int blocked; /* its peer refused a send in this pump */
} attachment;

typedef struct pend {
    uint32_t topic_id;
    uint64_t sequence;
    uint32_t deliveries;
    uint32_t flags;
    int64_t due_ns;     /* ack deadline while held, else when it may go (again) */
    uint64_t holder_id; /* attachment holding it; 0: waiting to be delivered (again) */
    uint64_t op_batch;  /* the batch whose ops hold its latest PUT (0: none yet) */
    uint32_t op_index;  /* that op's index in the batch */
    int stored;         /* a committed or already taken batch has written it */
    struct pend *next;  /* hash chain */
} pend;

typedef struct ctopic {
    uint32_t id;
    char name[WIRE_TOPIC_MAX_BYTES + 1];
    uint64_t next; /* next sequence to deliver; 0 until resolved from the store */
    uint64_t last; /* last stored sequence known */
    int dirty;
} ctopic;

typedef struct consumer {
    Spbe__V1__ConsumerInfo *info; /* config, owner, counters (unpacked or built) */
    ctopic *topics;
    size_t n_topics, cap_topics, rr_topic;
    pend **table;
    size_t table_size, n_pend, n_scheduled;
    attachment *atts;
    size_t n_atts, cap_atts, rr_att;
    int64_t next_due_ns;
    int waiting;            /* something due waits for room (not counted in next_due_ns) */
    int64_t next_settle_ns; /* with no room: when to look again for what must leave */
    int record_dirty;
    struct consumer *link;
} consumer;

struct consumer_set {
    store *store;
    const identity *key;
    consumer_send_fn send;
    void *ctx;
    consumer *consumers; /* in name order */
    uint64_t next_attachment;
    store_op *ops;
    size_t n_ops, cap_ops;
    uint64_t batch; /* number of the batch ops are gathered in; taken batches are older */
    store_append_item *letters;
    size_t n_letters;
    uint32_t default_ack_wait_ms, default_max_deliveries, default_max_in_flight;
};

/* ------------------------------------------------------------ small parts */

int
consumer_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > STORE_CONSUMER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static uint32_t
ack_wait_ms(const consumer *c)
{
    return c->info->config->ack_wait_ms ? c->info->config->ack_wait_ms : DEFAULT_ACK_WAIT_MS;
}

static uint32_t
max_deliveries(const consumer *c)
{
    return c->info->config->max_deliveries ? c->info->config->max_deliveries
                                           : DEFAULT_MAX_DELIVERIES;
}

static uint32_t
max_in_flight(const consumer *c)
{
    return c->info->config->max_in_flight ? c->info->config->max_in_flight : DEFAULT_MAX_IN_FLIGHT;
}

static store_op *
op_add(consumer_set *cs, store_op_kind kind, const consumer *c)
{
    if (cs->n_ops == cs->cap_ops) {
        size_t cap = cs->cap_ops ? 2 * cs->cap_ops : 256;
        store_op *n = realloc(cs->ops, cap * sizeof *n);
        if (!n)
            return NULL;
        cs->ops = n;
        cs->cap_ops = cap;
    }
    store_op *op = &cs->ops[cs->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->consumer, sizeof op->consumer, "%s", c->info->config->name);
    return op;
}

/* The pending entry's state goes into this batch: one op per entry and batch, updated
 * in place, so a message delivered and settled before the next commit costs nothing. */
static void
op_pending(consumer_set *cs, const consumer *c, pend *p)
{
    store_op *op;
    if (p->op_batch == cs->batch) {
        op = &cs->ops[p->op_index];
        op->kind = STORE_OP_PENDING_PUT;
    } else {
        if (p->op_batch)
            p->stored = 1; /* an earlier batch, taken already, writes it first */
        if (!(op = op_add(cs, STORE_OP_PENDING_PUT, c)))
            return;
        p->op_batch = cs->batch;
        p->op_index = (uint32_t)(cs->n_ops - 1);
    }
    op->topic_id = p->topic_id;
    op->sequence = p->sequence;
    op->deliveries = p->deliveries;
    op->flags = p->flags;
    op->due_ns = p->due_ns;
}

/* The pending entry is settled: deleted from the store if it was ever written there. */
static void
op_pending_gone(consumer_set *cs, const consumer *c, const pend *p)
{
    if (p->op_batch == cs->batch) {
        cs->ops[p->op_index].kind = p->stored ? STORE_OP_PENDING_DEL : STORE_OP_NONE;
        return;
    }
    if (!p->op_batch && !p->stored)
        return; /* never written */
    store_op *op = op_add(cs, STORE_OP_PENDING_DEL, c);
    if (op) {
        op->topic_id = p->topic_id;
        op->sequence = p->sequence;
    }
}

static void
op_record(consumer_set *cs, consumer *c)
{
    Spbe__V1__ConsumerInfo *info = c->info;
    /* stored without the live parts */
    size_t n_topics = info->n_topics;
    info->n_topics = 0;
    size_t len = spbe__v1__consumer_info__get_packed_size(info);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        spbe__v1__consumer_info__pack(info, buf);
    info->n_topics = n_topics;
    store_op *op = buf ? op_add(cs, STORE_OP_CONSUMER_PUT, c) : NULL;
    if (!op) {
        free(buf);
        return;
    }
    op->record = buf;
    op->record_len = len;
    c->record_dirty = 0;
}

/* ------------------------------------------------------------ pending table */

static size_t
pend_slot(const consumer *c, uint32_t topic_id, uint64_t sequence)
{
    uint64_t h = (sequence * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)topic_id * 0xC2B2AE3D27D4EB4Full);
    return (size_t)(h >> 17) & (c->table_size - 1);
}

static pend *
pend_find(const consumer *c, uint32_t topic_id, uint64_t sequence)
{
    if (!c->table_size)
        return NULL;
    for (pend *p = c->table[pend_slot(c, topic_id, sequence)]; p; p = p->next)
        if (p->topic_id == topic_id && p->sequence == sequence)
            return p;
    return NULL;
}

static int
table_grow(consumer *c)
{
    size_t size = c->table_size ? 2 * c->table_size : 1024;
    pend **t = calloc(size, sizeof *t);
    if (!t)
        return -1;
    pend **old = c->table;
    size_t old_size = c->table_size;
    c->table = t;
    c->table_size = size;
    for (size_t i = 0; i < old_size; i++)
        for (pend *p = old[i], *n; p; p = n) {
            n = p->next;
            size_t k = pend_slot(c, p->topic_id, p->sequence);
            p->next = t[k];
            t[k] = p;
        }
    free(old);
    return 0;
}

static pend *
pend_add(consumer *c, uint32_t topic_id, uint64_t sequence)
{
    if (c->n_pend + 1 > c->table_size / 2 && table_grow(c) != 0)
        return NULL;
    pend *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->topic_id = topic_id;
    p->sequence = sequence;
    size_t k = pend_slot(c, topic_id, sequence);
    p->next = c->table[k];
    c->table[k] = p;
    c->n_pend++;
    return p;
}

static void
pend_remove(consumer *c, pend *p)
{
    pend **pp = &c->table[pend_slot(c, p->topic_id, p->sequence)];
    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    if (p->flags & PENDING_SCHEDULED)
        c->n_scheduled--;
    c->n_pend--;
    free(p);
}

static attachment *
holder_of(consumer *c, const pend *p)
{
    if (!p->holder_id)
        return NULL;
    for (size_t i = 0; i < c->n_atts; i++)
        if (c->atts[i].id == p->holder_id)
            return &c->atts[i];
    return NULL;
}

static void
release(consumer *c, pend *p)
{
    attachment *a = holder_of(c, p);
    if (a && a->in_flight)
        a->in_flight--;
    p->holder_id = 0;
}

/* ------------------------------------------------------------ set */

void
consumer_set_defaults(consumer_set *cs, uint32_t ack_wait_ms, uint32_t max_deliveries,
                      uint32_t max_in_flight)
{
    cs->default_ack_wait_ms = ack_wait_ms;
    cs->default_max_deliveries = max_deliveries;
    cs->default_max_in_flight = max_in_flight;
}

consumer_set *
consumer_set_new(store *s, const identity *key, consumer_send_fn send, void *ctx)
{
    consumer_set *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    cs->store = s;
    cs->key = key;
    cs->send = send;
    cs->ctx = ctx;
    cs->next_attachment = 1u << 30; /* apart from subscription ids, for readable logs */
    cs->batch = 1;                  /* 0 marks entries no batch has written */
    return cs;
}

static void
consumer_free(consumer *c)
{
    for (size_t i = 0; i < c->table_size; i++)
        for (pend *p = c->table[i], *n; p; p = n) {
            n = p->next;
            free(p);
        }
    free(c->table);
    free(c->topics);
    free(c->atts);
    if (c->info)
        spbe__v1__consumer_info__free_unpacked(c->info, NULL);
    free(c);
}

static void
letters_free(store_append_item *letters, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((void *)letters[i].data);
        free((void *)letters[i].topic);
        free((void *)letters[i].id);
    }
    free(letters);
}

void
consumer_set_destroy(consumer_set **csp)
{
    if (!csp || !*csp)
        return;
    consumer_set *cs = *csp;
    while (cs->consumers) {
        consumer *c = cs->consumers;
        cs->consumers = c->link;
        consumer_free(c);
    }
    for (size_t i = 0; i < cs->n_ops; i++)
        free(cs->ops[i].record);
    free(cs->ops);
    letters_free(cs->letters, cs->n_letters);
    free(cs);
    *csp = NULL;
}

static consumer *
find(consumer_set *cs, const char *name)
{
    for (consumer *c = cs->consumers; c; c = c->link)
        if (strcmp(c->info->config->name, name) == 0)
            return c;
    return NULL;
}

const Spbe__V1__ConsumerConfig *
consumer_config(consumer_set *cs, const char *name)
{
    consumer *c = find(cs, name);
    return c ? c->info->config : NULL;
}

static void
insert_sorted(consumer_set *cs, consumer *c)
{
    consumer **pp = &cs->consumers;
    while (*pp && strcmp((*pp)->info->config->name, c->info->config->name) < 0)
        pp = &(*pp)->link;
    c->link = *pp;
    *pp = c;
}

static ctopic *
topic_find(consumer *c, uint32_t id)
{
    for (size_t i = 0; i < c->n_topics; i++)
        if (c->topics[i].id == id)
            return &c->topics[i];
    return NULL;
}

static ctopic *
topic_add(consumer *c, uint32_t id, const char *name)
{
    if (c->n_topics == c->cap_topics) {
        size_t cap = c->cap_topics ? 2 * c->cap_topics : 8;
        ctopic *n = realloc(c->topics, cap * sizeof *n);
        if (!n)
            return NULL;
        c->topics = n;
        c->cap_topics = cap;
    }
    ctopic *t = &c->topics[c->n_topics++];
    memset(t, 0, sizeof *t);
    t->id = id;
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* Where a consumer starts in a topic it has no cursor for: by its start position, and
 * for "new" the first message accepted since the consumer was created. */
static uint64_t
initial_cursor(const consumer *c, store_reader *rd, const store_topic_info *t)
{
    const Spbe__V1__ConsumerConfig *cfg = c->info->config;
    uint64_t first = t->first_sequence ? t->first_sequence : t->last_sequence + 1, seq = first;
    switch (cfg->start) {
    case SPBE__V1__START_POSITION__START_FIRST:
        break;
    case SPBE__V1__START_POSITION__START_SEQUENCE: {
        /* from that sequence on, and whatever the topic got since the consumer was
         * created: a topic that appears later is read from its start */
        uint64_t since;
        if (store_sequence_at(rd, t->id, c->info->created_ns, &since) != SPBE_OK)
            since = t->last_sequence + 1;
        seq = cfg->start_sequence > first ? cfg->start_sequence : first;
        if (since < seq)
            seq = since;
        break;
    }
    case SPBE__V1__START_POSITION__START_TIME:
        if (store_sequence_at(rd, t->id, cfg->start_time_ns, &seq) != SPBE_OK)
            seq = first;
        break;
    default:
        if (store_sequence_at(rd, t->id, c->info->created_ns, &seq) != SPBE_OK)
            seq = t->last_sequence + 1;
        break;
    }
    return seq ? seq : 1;
}

typedef struct load_ctx {
    consumer_set *cs;
    consumer *c;
    store_reader *rd;
    int64_t now;
    int code;
} load_ctx;

static int
load_cursor(uint32_t topic_id, uint64_t next, void *arg)
{
    load_ctx *lc = arg;
    store_topic_info t;
    if (store_topic_get_by_id(lc->rd, topic_id, &t) != SPBE_OK)
        return 0;
    ctopic *ct = topic_add(lc->c, topic_id, t.name);
    if (ct) {
        ct->next = next;
        ct->last = t.last_sequence;
    }
    return 0;
}

static int
load_pending(const store_pending *sp, void *arg)
{
    load_ctx *lc = arg;
    pend *p = pend_add(lc->c, sp->topic_id, sp->sequence);
    if (!p)
        return 0;
    p->deliveries = sp->deliveries;
    p->flags = sp->flags;
    p->stored = 1;
    /* what was held before the restart goes out again as soon as someone attaches */
    p->due_ns = (sp->flags & PENDING_SCHEDULED) ? sp->due_ns : lc->now;
    if (p->flags & PENDING_SCHEDULED)
        lc->c->n_scheduled++;
    if (p->due_ns < lc->c->next_due_ns)
        lc->c->next_due_ns = p->due_ns;
    return 0;
}

/* Adds cursors for the stored topics the pattern matches that have none yet. */
static int
add_topic_cursor(const store_topic_info *t, void *arg)
{
    load_ctx *lc = arg;
    if (!wire_pattern_match(lc->c->info->config->pattern, t->name) || topic_find(lc->c, t->id))
        return 0;
    ctopic *ct = topic_add(lc->c, t->id, t->name);
    if (ct) {
        ct->next = initial_cursor(lc->c, lc->rd, t);
        ct->last = t->last_sequence;
        ct->dirty = 1;
    }
    return 0;
}

static int
load_one(const Spbe__V1__ConsumerInfo *info, void *arg)
{
    load_ctx *lc = arg;
    consumer *c = calloc(1, sizeof *c);
    size_t len = spbe__v1__consumer_info__get_packed_size(info);
    uint8_t *buf = malloc(len ? len : 1);
    if (!c || !buf) {
        free(c);
        free(buf);
        lc->code = SPBE_INTERNAL;
        return 1;
    }
    spbe__v1__consumer_info__pack(info, buf);
    c->info = spbe__v1__consumer_info__unpack(NULL, len, buf);
    free(buf);
    if (!c->info) {
        free(c);
        lc->code = SPBE_INTERNAL;
        return 1;
    }
    c->next_due_ns = INT64_MAX;
    lc->c = c;
    store_cursor_each(lc->rd, info->config->name, load_cursor, lc);
    store_pending_each(lc->rd, info->config->name, load_pending, lc);
    store_topic_each(lc->rd, add_topic_cursor, lc);
    insert_sorted(lc->cs, c);
    return 0;
}

int
consumer_set_load(consumer_set *cs)
{
    load_ctx lc = {.cs = cs, .now = wire_now_ns(), .code = SPBE_OK};
    int rc = store_reader_begin(cs->store, &lc.rd);
    if (rc != SPBE_OK)
        return rc;
    rc = store_consumer_each(lc.rd, load_one, &lc);
    store_reader_end(&lc.rd);
    size_t n = 0;
    for (consumer *c = cs->consumers; c; c = c->link)
        n++;
    if (n)
        log_event(LOG_INFO, "consumers_loaded", "consumers=%zu", n);
    return rc != SPBE_OK ? rc : lc.code;
}

/* Commits the ops gathered so far (and nothing else) from this thread. */
static int
commit_now(consumer_set *cs)
{
    int ops_rc = SPBE_INTERNAL;
    store_apply(cs->store, NULL, 0, cs->ops, cs->n_ops, 0, &ops_rc);
    for (size_t i = 0; i < cs->n_ops; i++)
        free(cs->ops[i].record);
    cs->n_ops = 0;
    cs->batch++; /* what the ops wrote counts as stored from now on */
    return ops_rc;
}

int
consumer_create(consumer_set *cs, const Spbe__V1__ConsumerConfig *config, const char *owner)
{
    consumer *c = calloc(1, sizeof *c);
    Spbe__V1__ConsumerInfo *info = calloc(1, sizeof *info);
    Spbe__V1__ConsumerConfig *cfg = calloc(1, sizeof *cfg);
    if (!c || !info || !cfg) {
        free(c);
        free(info);
        free(cfg);
        return SPBE_INTERNAL;
    }
    spbe__v1__consumer_info__init(info);
    *cfg = *config;
    cfg->base.unknown_fields = NULL;
    cfg->base.n_unknown_fields = 0;
    cfg->name = strdup(config->name);
    cfg->pattern = strdup(config->pattern);
    /* what the creator left open takes the broker's defaults, kept with the consumer */
    if (!cfg->ack_wait_ms)
        cfg->ack_wait_ms = cs->default_ack_wait_ms;
    if (!cfg->max_deliveries)
        cfg->max_deliveries = cs->default_max_deliveries;
    if (!cfg->max_in_flight)
        cfg->max_in_flight = cs->default_max_in_flight;
    info->config = cfg;
    info->owner = strdup(owner);
    info->created_ns = wire_now_ns();
    c->info = info;
    c->next_due_ns = INT64_MAX;
    if (!cfg->name || !cfg->pattern || !info->owner) {
        consumer_free(c);
        return SPBE_INTERNAL;
    }
    /* commit what is pending for other consumers first: ops stay in order */
    load_ctx lc = {.cs = cs, .c = c, .now = info->created_ns};
    int rc = store_reader_begin(cs->store, &lc.rd);
    if (rc != SPBE_OK) {
        consumer_free(c);
        return rc;
    }
    store_topic_each(lc.rd, add_topic_cursor, &lc);
    store_reader_end(&lc.rd);
    op_record(cs, c);
    for (size_t i = 0; i < c->n_topics; i++) {
        store_op *op = op_add(cs, STORE_OP_CURSOR_PUT, c);
        if (op) {
            op->topic_id = c->topics[i].id;
            op->sequence = c->topics[i].next;
        }
        c->topics[i].dirty = 0;
    }
    rc = commit_now(cs);
    if (rc != SPBE_OK) {
        consumer_free(c);
        return rc;
    }
    insert_sorted(cs, c);
    log_event(LOG_INFO, "consumer_created", "consumer=%s pattern=%s owner=%s topics=%zu", cfg->name,
              cfg->pattern, owner, c->n_topics);
    return SPBE_OK;
}

int
consumer_delete(consumer_set *cs, const char *name)
{
    consumer **pp = &cs->consumers;
    while (*pp && strcmp((*pp)->info->config->name, name) != 0)
        pp = &(*pp)->link;
    if (!*pp)
        return SPBE_NOT_FOUND;
    consumer *c = *pp;
    /* its waiting ops would bring it back: cancel them (in place: the other entries
     * know their ops by index) */
    for (size_t i = 0; i < cs->n_ops; i++)
        if (strcmp(cs->ops[i].consumer, name) == 0) {
            free(cs->ops[i].record);
            cs->ops[i].record = NULL;
            cs->ops[i].kind = STORE_OP_NONE;
        }
    store_op *op = op_add(cs, STORE_OP_CONSUMER_DEL, c);
    (void)op;
    int rc = commit_now(cs);
    if (rc != SPBE_OK)
        return rc;
    *pp = c->link;
    log_event(LOG_INFO, "consumer_deleted", "consumer=%s", name);
    consumer_free(c);
    return SPBE_OK;
}

/* ------------------------------------------------------------ attachments */

int
consumer_attach(consumer_set *cs, const char *name, void *session, uint64_t *attachment_id)
{
    consumer *c = find(cs, name);
    if (!c)
        return SPBE_NOT_FOUND;
    if (c->n_atts == c->cap_atts) {
        size_t cap = c->cap_atts ? 2 * c->cap_atts : 4;
        attachment *n = realloc(c->atts, cap * sizeof *n);
        if (!n)
            return SPBE_INTERNAL;
        c->atts = n;
        c->cap_atts = cap;
    }
    attachment *a = &c->atts[c->n_atts++];
    memset(a, 0, sizeof *a);
    a->session = session;
    a->id = cs->next_attachment++;
    *attachment_id = a->id;
    return SPBE_OK;
}

static void
detach_at(consumer *c, size_t i, int64_t now)
{
    uint64_t id = c->atts[i].id;
    for (size_t k = 0; k < c->table_size; k++)
        for (pend *p = c->table[k]; p; p = p->next)
            if (p->holder_id == id) {
                p->holder_id = 0;
                p->due_ns = now; /* its session is gone: to someone else at once */
                c->next_due_ns = now;
            }
    c->atts[i] = c->atts[--c->n_atts];
}

void
consumer_detach_session(consumer_set *cs, void *session)
{
    int64_t now = wire_now_ns();
    for (consumer *c = cs->consumers; c; c = c->link)
        for (size_t i = 0; i < c->n_atts;)
            if (c->atts[i].session == session)
                detach_at(c, i, now);
            else
                i++;
}

int
consumer_detach(consumer_set *cs, void *session, uint64_t attachment_id)
{
    for (consumer *c = cs->consumers; c; c = c->link)
        for (size_t i = 0; i < c->n_atts; i++)
            if (c->atts[i].session == session && c->atts[i].id == attachment_id) {
                detach_at(c, i, wire_now_ns());
                return SPBE_OK;
            }
    return SPBE_NOT_FOUND;
}

/* ------------------------------------------------------------ dead letters */

/* Puts a message into the consumer's dead letters (signed by the broker) and forgets it. */
static void
dead_letter(consumer_set *cs, consumer *c, const char *topic, const store_message *m,
            uint32_t deliveries, const char *reason)
{
    if (cs->n_letters >= LETTERS_MAX) {
        log_event(LOG_WARN, "dead_letter_deferred", "consumer=%s topic=%s sequence=%llu",
                  c->info->config->name, topic, (unsigned long long)m->sequence);
        return;
    }
    if (cs->n_letters == 0 && !cs->letters) {
        cs->letters = calloc(LETTERS_MAX, sizeof *cs->letters);
        if (!cs->letters)
            return;
    }
    Spbe__V1__DeadLetter dl = SPBE__V1__DEAD_LETTER__INIT;
    dl.consumer = c->info->config->name;
    dl.topic = (char *)topic;
    dl.sequence = m->sequence;
    dl.reason = (char *)reason;
    dl.deliveries = deliveries;
    dl.accepted_ns = m->accepted_ns;
    dl.message.data = (uint8_t *)m->data;
    dl.message.len = m->len;
    size_t plen = spbe__v1__dead_letter__get_packed_size(&dl);
    uint8_t *payload = malloc(plen ? plen : 1);
    char *dlq_topic = malloc(WIRE_TOPIC_MAX_BYTES + 1);
    uint8_t *id = malloc(WIRE_ID_BYTES);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (payload && dlq_topic && id) {
        spbe__v1__dead_letter__pack(&dl, payload);
        snprintf(dlq_topic, WIRE_TOPIC_MAX_BYTES + 1, "$sys.dlq.%s", c->info->config->name);
        wire_random_id(id);
        Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
        msg.id.data = id;
        msg.id.len = WIRE_ID_BYTES;
        msg.topic = dlq_topic;
        msg.sender = (char *)cs->key->member;
        msg.created_ns = wire_now_ns();
        msg.schema = "spbe.v1.DeadLetter";
        msg.payload.data = payload;
        msg.payload.len = plen;
        if (wire_message_sign(&msg, cs->key->secret_key, &bytes, &len) != SPBE_OK)
            bytes = NULL;
    }
    free(payload);
    if (!bytes) {
        free(dlq_topic);
        free(id);
        log_event(LOG_ERROR, "dead_letter_failed", "consumer=%s topic=%s sequence=%llu",
                  c->info->config->name, topic, (unsigned long long)m->sequence);
        return;
    }
    store_append_item *it = &cs->letters[cs->n_letters++];
    memset(it, 0, sizeof *it);
    it->topic = dlq_topic;
    it->sender = cs->key->member;
    it->id = id;
    it->data = bytes;
    it->len = len;
    c->info->dead_lettered++;
    c->record_dirty = 1;
    log_event(LOG_INFO, "dead_lettered",
              "consumer=%s topic=%s sequence=%llu deliveries=%u reason=\"%s\"",
              c->info->config->name, topic, (unsigned long long)m->sequence, deliveries, reason);
}

/* ------------------------------------------------------------ acks */

int
consumer_ack(consumer_set *cs, const char *name, const char *topic, uint64_t sequence, int kind,
             uint32_t delay_ms, const char *reason)
{
    consumer *c = find(cs, name);
    if (!c)
        return SPBE_NOT_FOUND;
    ctopic *t = NULL;
    for (size_t i = 0; i < c->n_topics && !t; i++)
        if (strcmp(c->topics[i].name, topic) == 0)
            t = &c->topics[i];
    pend *p = t ? pend_find(c, t->id, sequence) : NULL;
    if (!p || (p->flags & PENDING_SCHEDULED))
        return SPBE_NOT_FOUND;
    int64_t now = wire_now_ns();
    switch (kind) {
    case SPBE__V1__ACK_KIND__PROGRESS:
        if (!p->holder_id)
            return SPBE_NOT_FOUND; /* already given up on: it goes out again */
        p->due_ns = now + (int64_t)ack_wait_ms(c) * 1000000;
        op_pending(cs, c, p);
        return SPBE_OK;
    case SPBE__V1__ACK_KIND__NAK:
        release(c, p);
        p->due_ns = now + (int64_t)delay_ms * 1000000;
        if (p->due_ns < c->next_due_ns)
            c->next_due_ns = p->due_ns;
        op_pending(cs, c, p);
        return SPBE_OK;
    case SPBE__V1__ACK_KIND__TERM: {
        /* into the dead letters, or it stays pending: never out of both */
        if (store_full(cs->store))
            return SPBE_STORAGE_FULL;
        if (cs->n_letters >= LETTERS_MAX)
            return SPBE_UNAVAILABLE; /* this commit's dead letters are full: again shortly */
        store_reader *rd;
        store_message m;
        if (store_reader_begin(cs->store, &rd) != SPBE_OK)
            return SPBE_INTERNAL;
        if (store_message_get(rd, t->id, sequence, &m) == SPBE_OK) /* else gone by retention */
            dead_letter(cs, c, t->name, &m, p->deliveries,
                        reason && *reason ? reason : "terminated");
        store_reader_end(&rd);
        break;
    }
    default:
        c->info->acked++;
        c->record_dirty = 1;
        break;
    }
    release(c, p);
    op_pending_gone(cs, c, p);
    pend_remove(c, p);
    return SPBE_OK;
}

/* ------------------------------------------------------------ delivery */

void
consumer_publish(consumer_set *cs, uint32_t topic_id, const char *topic, uint64_t sequence)
{
    for (consumer *c = cs->consumers; c; c = c->link) {
        ctopic *t = topic_find(c, topic_id);
        if (!t) {
            if (!wire_pattern_match(c->info->config->pattern, topic))
                continue;
            t = topic_add(c, topic_id, topic); /* cursor resolved from the store in the pump */
            if (!t)
                continue;
        }
        if (sequence > t->last)
            t->last = sequence;
    }
}

/* The attachment with room for one more delivery, in turn; NULL if none. */
static attachment *
pick(consumer *c)
{
    uint32_t max = max_in_flight(c);
    for (size_t k = 0; k < c->n_atts; k++) {
        attachment *a = &c->atts[(c->rr_att + k) % c->n_atts];
        if (!a->blocked && a->in_flight < max) {
            c->rr_att = (c->rr_att + k + 1) % c->n_atts;
            return a;
        }
    }
    return NULL;
}

static int
has_room(const consumer *c)
{
    for (size_t i = 0; i < c->n_atts; i++)
        if (!c->atts[i].blocked && c->atts[i].in_flight < max_in_flight(c))
            return 1;
    return 0;
}

typedef struct msg_times {
    int64_t not_before_ns, expires_ns;
} msg_times;

static int
times_of(const store_message *m, msg_times *t)
{
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    t->not_before_ns = t->expires_ns = 0;
    if (wire_envelope_decode(m->data, m->len, &sm, &msg, NULL) != SPBE_OK) {
        wire_envelope_free(&sm, &msg);
        return -1;
    }
    t->not_before_ns = msg->not_before_ns;
    t->expires_ns = msg->expires_ns;
    wire_envelope_free(&sm, &msg);
    return 0;
}

/* Sends p (message m) to a; 0 when sent. */
static int
send_to(consumer_set *cs, consumer *c, attachment *a, pend *p, const ctopic *t,
        const store_message *m, int64_t now)
{
    int64_t deadline = now + (int64_t)ack_wait_ms(c) * 1000000;
    int rc = cs->send(cs->ctx, a->session, a->id, c->info->config->name, t->name, m->sequence,
                      m->accepted_ns, p->deliveries + 1, deadline, m->data, m->len);
    if (rc == EAGAIN) {
        a->blocked = 1;
        return -1;
    }
    if (rc != 0) {
        for (size_t i = 0; i < c->n_atts; i++)
            if (&c->atts[i] == a) {
                detach_at(c, i, now);
                break;
            }
        return -1;
    }
    if (p->deliveries > 0)
        c->info->redelivered++;
    p->deliveries++;
    if (p->flags & PENDING_SCHEDULED) {
        p->flags &= ~PENDING_SCHEDULED;
        c->n_scheduled--;
    }
    p->due_ns = deadline;
    p->holder_id = a->id;
    a->in_flight++;
    c->info->delivered++;
    c->record_dirty = 1;
    if (deadline < c->next_due_ns)
        c->next_due_ns = deadline;
    op_pending(cs, c, p);
    return 0;
}

/* Expired, or delivered max times: out of the consumer (to the dead letters if asked). */
static int
settle_if_done(consumer_set *cs, consumer *c, pend *p, const ctopic *t, const store_message *m,
               const msg_times *tm, int64_t now)
{
    if (tm->expires_ns && now >= tm->expires_ns) {
        c->info->expired++;
        c->record_dirty = 1;
        if (c->info->config->dead_letter_expired)
            dead_letter(cs, c, t->name, m, p->deliveries, "expired");
    } else if (p->deliveries >= max_deliveries(c)) {
        dead_letter(cs, c, t->name, m, p->deliveries, "max deliveries");
    } else {
        return 0;
    }
    op_pending_gone(cs, c, p);
    pend_remove(c, p);
    return 1;
}

/* Redeliveries and scheduled deliveries that are due. */
static int
pend_order(const void *a, const void *b)
{
    const pend *x = *(pend *const *)a, *y = *(pend *const *)b;
    if (x->topic_id != y->topic_id)
        return x->topic_id < y->topic_id ? -1 : 1;
    return x->sequence < y->sequence ? -1 : x->sequence > y->sequence;
}

/* Delivers again what is due, in sequence order per topic. */
static size_t
pump_due(consumer_set *cs, consumer *c, store_reader *rd, int64_t now, size_t budget)
{
    if (now < c->next_due_ns && !c->waiting)
        return 0;
    int64_t next = INT64_MAX;
    c->waiting = 0;
    size_t n_due = 0, cap = 0;
    pend **due = NULL;
    for (size_t k = 0; k < c->table_size; k++)
        for (pend *p = c->table[k]; p; p = p->next) {
            if (p->due_ns > now) {
                if (p->due_ns < next)
                    next = p->due_ns;
                continue;
            }
            if (n_due == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                pend **grown = realloc(due, ncap * sizeof *due);
                if (!grown) {
                    c->waiting = 1; /* try again next time */
                    goto process;
                }
                due = grown;
                cap = ncap;
            }
            due[n_due++] = p;
        }
process:
    if (n_due > 1)
        qsort(due, n_due, sizeof *due, pend_order);
    size_t sent = 0;
    for (size_t i = 0; i < n_due; i++) {
        pend *p = due[i];
        if (p->holder_id) /* its ack wait ran out */
            release(c, p);
        const ctopic *t = topic_find(c, p->topic_id);
        store_message m;
        if (!t || store_message_get(rd, p->topic_id, p->sequence, &m) != SPBE_OK) {
            op_pending_gone(cs, c, p); /* gone by retention */
            pend_remove(c, p);
            continue;
        }
        msg_times tm;
        times_of(&m, &tm);
        int done = (tm.expires_ns && now >= tm.expires_ns) || p->deliveries >= max_deliveries(c);
        if (done && cs->n_letters >= LETTERS_MAX) {
            c->waiting = 1; /* the dead letters of this commit are full: next time */
            continue;
        }
        if (done && store_full(cs->store)) { /* no room for its dead letter: it stays pending */
            p->due_ns = now + 1000000000LL;
            if (p->due_ns < next)
                next = p->due_ns;
            continue;
        }
        if (done && settle_if_done(cs, c, p, t, &m, &tm, now))
            continue;
        attachment *a = sent < budget ? pick(c) : NULL;
        if (!a || send_to(cs, c, a, p, t, &m, now) != 0) {
            c->waiting = 1; /* due, waiting for room */
            continue;
        }
        sent++;
        if (p->due_ns < next)
            next = p->due_ns;
    }
    free(due);
    c->next_due_ns = next;
    return sent;
}

typedef struct read_one {
    store_message m;
    int found;
} read_one;

static int
got_one(const store_message *m, void *arg)
{
    read_one *r = arg;
    r->m = *m;
    r->found = 1;
    return 1;
}

/* New messages, topic by topic in turn, each topic in sequence order. */
static size_t
pump_new(consumer_set *cs, consumer *c, store_reader *rd, int64_t now, size_t budget, int *more)
{
    size_t sent = 0;
    for (size_t k = 0; k < c->n_topics && sent < budget; k++) {
        ctopic *t = &c->topics[(c->rr_topic + k) % c->n_topics];
        if (t->next == 0) { /* a topic that appeared since: where does the consumer start */
            store_topic_info info;
            if (store_topic_get_by_id(rd, t->id, &info) != SPBE_OK)
                continue;
            t->next = initial_cursor(c, rd, &info);
            t->dirty = 1;
        }
        while (t->next <= t->last && sent < budget) {
            read_one r = {.found = 0};
            uint64_t after;
            store_read_from(rd, t->id, t->next, 1, got_one, &r, &after);
            if (!r.found) { /* deleted by retention up to the end */
                t->next = t->last + 1;
                t->dirty = 1;
                break;
            }
            msg_times tm;
            times_of(&r.m, &tm);
            if (tm.expires_ns && now >= tm.expires_ns) {
                if (c->info->config->dead_letter_expired && cs->n_letters >= LETTERS_MAX) {
                    *more = 1;
                    break;
                }
                c->info->expired++;
                c->record_dirty = 1;
                if (c->info->config->dead_letter_expired)
                    dead_letter(cs, c, t->name, &r.m, 0, "expired");
                t->next = r.m.sequence + 1;
                t->dirty = 1;
                continue;
            }
            if (tm.not_before_ns > now) { /* scheduled: out of line until its time */
                pend *p = pend_add(c, t->id, r.m.sequence);
                if (!p)
                    break;
                p->flags = PENDING_SCHEDULED;
                p->due_ns = tm.not_before_ns;
                c->n_scheduled++;
                if (p->due_ns < c->next_due_ns)
                    c->next_due_ns = p->due_ns;
                op_pending(cs, c, p);
                t->next = r.m.sequence + 1;
                t->dirty = 1;
                continue;
            }
            attachment *a = pick(c);
            if (!a)
                break;
            pend *p = pend_add(c, t->id, r.m.sequence);
            if (!p)
                break;
            if (send_to(cs, c, a, p, t, &r.m, now) != 0) {
                pend_remove(c, p);
                break;
            }
            t->next = r.m.sequence + 1;
            t->dirty = 1;
            sent++;
        }
        if (t->next <= t->last && has_room(c))
            *more = 1;
    }
    if (c->n_topics)
        c->rr_topic = (c->rr_topic + 1) % c->n_topics;
    return sent;
}

int
consumer_pump(consumer_set *cs, size_t budget)
{
    int64_t now = wire_now_ns();
    int more = 0;
    store_reader *rd = NULL;
    for (consumer *c = cs->consumers; c && budget; c = c->link) {
        for (size_t i = 0; i < c->n_atts; i++)
            c->atts[i].blocked = 0;
        if (!has_room(c)) {
            /* nobody attached, or every window full: nothing can be delivered, but ack
             * waits run out on time (freeing room) and what has had its last delivery
             * or expired leaves for the dead letters */
            if (now >= c->next_due_ns || (c->waiting && now >= c->next_settle_ns)) {
                if (!rd && store_reader_begin(cs->store, &rd) != SPBE_OK)
                    break;
                pump_due(cs, c, rd, now, 0);
                c->next_settle_ns = now + SETTLE_EVERY_NS;
            }
            continue;
        }
        int behind = 0;
        for (size_t i = 0; i < c->n_topics && !behind; i++)
            behind = c->topics[i].next == 0 || c->topics[i].next <= c->topics[i].last;
        if (!behind && !c->waiting && now < c->next_due_ns)
            continue;
        if (!rd && store_reader_begin(cs->store, &rd) != SPBE_OK)
            break;
        size_t sent = pump_due(cs, c, rd, now, budget);
        budget -= sent < budget ? sent : budget;
        if (budget)
            sent = pump_new(cs, c, rd, now, budget, &more);
        budget -= sent < budget ? sent : budget;
        if (!budget)
            more = 1;
    }
    store_reader_end(&rd);
    return more;
}

long
consumer_next_due_ms(consumer_set *cs)
{
    int64_t next = INT64_MAX, now = wire_now_ns();
    for (consumer *c = cs->consumers; c; c = c->link) {
        int64_t t = c->next_due_ns;
        if (c->waiting) {
            /* what waits for room goes when there is room; a peer that could not take
             * more is tried again soon; with every window full an ack wakes the loop,
             * and what must leave is looked for now and then */
            int blocked = 0;
            for (size_t i = 0; i < c->n_atts; i++)
                blocked |= c->atts[i].blocked && c->atts[i].in_flight < max_in_flight(c);
            int64_t w = blocked ? now + BLOCKED_RETRY_NS : has_room(c) ? now : c->next_settle_ns;
            if (w < t)
                t = w;
        }
        if (t < next)
            next = t;
    }
    if (next == INT64_MAX)
        return -1;
    int64_t ms = (next - now) / 1000000;
    return ms < 0 ? 0 : (long)ms;
}

/* ------------------------------------------------------------ commits */

int
consumer_dirty(const consumer_set *cs)
{
    if (cs->n_ops || cs->n_letters)
        return 1;
    for (const consumer *c = cs->consumers; c; c = c->link) {
        if (c->record_dirty)
            return 1;
        for (size_t i = 0; i < c->n_topics; i++)
            if (c->topics[i].dirty)
                return 1;
    }
    return 0;
}

void
consumer_take(consumer_set *cs, consumer_batch *batch)
{
    for (consumer *c = cs->consumers; c; c = c->link) {
        for (size_t i = 0; i < c->n_topics; i++) {
            ctopic *t = &c->topics[i];
            if (!t->dirty)
                continue;
            store_op *op = op_add(cs, STORE_OP_CURSOR_PUT, c);
            if (!op)
                break;
            op->topic_id = t->id;
            op->sequence = t->next;
            t->dirty = 0;
        }
        if (c->record_dirty)
            op_record(cs, c);
    }
    batch->ops = cs->ops;
    batch->n_ops = cs->n_ops;
    batch->letters = cs->letters;
    batch->n_letters = cs->n_letters;
    cs->ops = NULL;
    cs->n_ops = cs->cap_ops = 0;
    cs->batch++;
    cs->letters = NULL;
    cs->n_letters = 0;
}

void
consumer_batch_done(consumer_set *cs, consumer_batch *batch)
{
    for (size_t i = 0; i < batch->n_letters; i++) {
        store_append_item *it = &batch->letters[i];
        if (it->code == SPBE_OK)
            consumer_publish(cs, it->topic_id, it->topic, it->sequence);
        else
            log_event(LOG_ERROR, "dead_letter_lost", "topic=%s code=%s", it->topic,
                      spbe_error_name(it->code));
    }
    for (size_t i = 0; i < batch->n_ops; i++)
        free(batch->ops[i].record);
    free(batch->ops);
    letters_free(batch->letters, batch->n_letters);
    memset(batch, 0, sizeof *batch);
}

/* ------------------------------------------------------------ inspection */

static Spbe__V1__ConsumerInfo *
info_build(consumer *c)
{
    Spbe__V1__ConsumerInfo *src = c->info;
    size_t n_topics = src->n_topics;
    src->n_topics = 0;
    size_t len = spbe__v1__consumer_info__get_packed_size(src);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    spbe__v1__consumer_info__pack(src, buf);
    src->n_topics = n_topics;
    /* the copy's own topics are appended as a packed repeated field */
    Spbe__V1__ConsumerTopic *tops = calloc(c->n_topics ? c->n_topics : 1, sizeof *tops);
    uint64_t *pending = calloc(c->n_topics ? c->n_topics : 1, sizeof *pending);
    uint64_t *floor = calloc(c->n_topics ? c->n_topics : 1, sizeof *floor);
    Spbe__V1__ConsumerInfo *out = NULL;
    if (tops && pending && floor) {
        for (size_t i = 0; i < c->n_topics; i++)
            floor[i] = c->topics[i].next ? c->topics[i].next - 1 : 0;
        for (size_t k = 0; k < c->table_size; k++)
            for (pend *p = c->table[k]; p; p = p->next)
                for (size_t i = 0; i < c->n_topics; i++)
                    if (c->topics[i].id == p->topic_id) {
                        pending[i]++;
                        if (p->sequence <= floor[i])
                            floor[i] = p->sequence - 1;
                    }
        Spbe__V1__ConsumerInfo tmp = SPBE__V1__CONSUMER_INFO__INIT;
        Spbe__V1__ConsumerTopic **ptrs = calloc(c->n_topics ? c->n_topics : 1, sizeof *ptrs);
        uint64_t lag = 0;
        for (size_t i = 0; ptrs && i < c->n_topics; i++) {
            ctopic *t = &c->topics[i];
            spbe__v1__consumer_topic__init(&tops[i]);
            tops[i].topic = t->name;
            tops[i].next_sequence = t->next;
            tops[i].ack_floor = floor[i];
            tops[i].pending = pending[i];
            tops[i].lag = t->next && t->last >= t->next ? t->last - t->next + 1 : 0;
            lag += tops[i].lag;
            ptrs[i] = &tops[i];
        }
        if (ptrs) {
            tmp.topics = ptrs;
            tmp.n_topics = c->n_topics;
            tmp.pending = c->n_pend - c->n_scheduled;
            tmp.scheduled = c->n_scheduled;
            tmp.lag = lag;
            tmp.attached = (uint32_t)c->n_atts;
            size_t tlen = spbe__v1__consumer_info__get_packed_size(&tmp);
            uint8_t *all = realloc(buf, len + tlen);
            if (all) {
                buf = all;
                spbe__v1__consumer_info__pack(&tmp, buf + len);
                out = spbe__v1__consumer_info__unpack(NULL, len + tlen, buf);
            }
            free(ptrs);
        }
    }
    free(tops);
    free(pending);
    free(floor);
    free(buf);
    return out;
}

int
consumer_info(consumer_set *cs, const char *name, Spbe__V1__ConsumerInfo **out)
{
    consumer *c = find(cs, name);
    if (!c)
        return SPBE_NOT_FOUND;
    *out = info_build(c);
    return *out ? SPBE_OK : SPBE_INTERNAL;
}

size_t
consumer_count_attached(const consumer_set *cs, const void *session)
{
    size_t n = 0;
    for (const consumer *c = cs->consumers; c; c = c->link)
        for (size_t i = 0; i < c->n_atts; i++)
            n += c->atts[i].session == session;
    return n;
}

size_t
consumer_count_owned(const consumer_set *cs, const char *owner)
{
    size_t n = 0;
    for (const consumer *c = cs->consumers; c; c = c->link)
        n += strcmp(c->info->owner, owner) == 0;
    return n;
}

void
consumer_each(consumer_set *cs, void (*fn)(Spbe__V1__ConsumerInfo *, void *), void *arg)
{
    for (consumer *c = cs->consumers; c; c = c->link) {
        Spbe__V1__ConsumerInfo *info = info_build(c);
        if (info)
            fn(info, arg);
    }
}
