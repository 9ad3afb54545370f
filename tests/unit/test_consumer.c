/* test_consumer.c - durable consumers on a store of their own, without a broker: a send
 * function that records deliveries (or refuses them), commits made as the broker makes
 * them, restarts as a new consumer set loading the store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "consumer.h"
#include "log.h"
#include "identity.h"
#include "spbe/errors.h"
#include "store.h"
#include "wire.h"

#define ACK SPBE__V1__ACK_KIND__ACK
#define NAK SPBE__V1__ACK_KIND__NAK
#define PROGRESS SPBE__V1__ACK_KIND__PROGRESS
#define TERM SPBE__V1__ACK_KIND__TERM
#define HOUR_NS 3600000000000LL

typedef struct delivery {
    void *session;
    uint64_t attachment;
    char consumer[65];
    char topic[256];
    uint64_t sequence;
    uint32_t count;
    size_t len;
} delivery;

typedef struct fx {
    char dir[64];
    store *s;
    identity broker, sender;
    consumer_set *cs;
    delivery got[1024];
    size_t n_got;
    int send_rc;        /* what a send answers (0: taken) */
    void *fail_session; /* the session it answers so for (NULL: any) */
} fx;

static int sess_a, sess_b, sess_c; /* sessions: only their addresses matter */

static int
fake_send(void *ctx, void *session, uint64_t attachment, const char *consumer, const char *topic,
          uint64_t sequence, int64_t accepted_ns, uint32_t count, int64_t deadline_ns,
          const uint8_t *data, size_t len)
{
    (void)accepted_ns;
    (void)deadline_ns;
    (void)data;
    fx *x = ctx;
    if (x->send_rc && (!x->fail_session || x->fail_session == session))
        return x->send_rc;
    assert_true(x->n_got < sizeof x->got / sizeof x->got[0]);
    delivery *d = &x->got[x->n_got++];
    d->session = session;
    d->attachment = attachment;
    snprintf(d->consumer, sizeof d->consumer, "%s", consumer);
    snprintf(d->topic, sizeof d->topic, "%s", topic);
    d->sequence = sequence;
    d->count = count;
    d->len = len;
    return 0;
}

static int
setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    snprintf(x->dir, sizeof x->dir, "/tmp/spbe-consumer-XXXXXX");
    if (!mkdtemp(x->dir))
        return -1;
    char err[256];
    if (store_open(x->dir, NULL, &x->s, err, sizeof err) != SPBE_OK)
        return -1;
    identity_generate("spbe/broker", &x->broker);
    identity_generate("bkn/siasn", &x->sender);
    x->cs = consumer_set_new(x->s, &x->broker, fake_send, x);
    *state = x;
    return x->cs ? 0 : -1;
}

static int
teardown(void **state)
{
    fx *x = *state;
    consumer_set_destroy(&x->cs);
    store_close(&x->s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
    int rc = system(cmd);
    free(x);
    return rc == 0 ? 0 : -1;
}

/* Signs and stores one message, then tells the consumers: its sequence. */
static uint64_t
publish_timed(fx *x, const char *topic, int64_t not_before_ns, int64_t expires_ns)
{
    uint8_t id[16];
    wire_random_id(id);
    Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
    msg.id.data = id;
    msg.id.len = sizeof id;
    msg.topic = (char *)topic;
    msg.sender = x->sender.member;
    msg.created_ns = wire_now_ns();
    msg.not_before_ns = not_before_ns;
    msg.expires_ns = expires_ns;
    msg.payload.data = (uint8_t *)"isi";
    msg.payload.len = 3;
    uint8_t *bytes;
    size_t len;
    assert_int_equal(wire_message_sign(&msg, x->sender.secret_key, &bytes, &len), SPBE_OK);
    store_append_item it = {
        .topic = topic, .sender = x->sender.member, .id = id, .data = bytes, .len = len};
    assert_int_equal(store_append(x->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.code, SPBE_OK);
    free(bytes);
    if (x->cs)
        consumer_publish(x->cs, it.topic_id, topic, it.sequence);
    return it.sequence;
}

static uint64_t
publish(fx *x, const char *topic)
{
    return publish_timed(x, topic, 0, 0);
}

/* n messages in one commit. */
static void
publish_many(fx *x, const char *topic, size_t n)
{
    store_append_item *items = calloc(n, sizeof *items);
    uint8_t(*ids)[16] = calloc(n, 16);
    uint8_t **bytes = calloc(n, sizeof *bytes);
    for (size_t i = 0; i < n; i++) {
        wire_random_id(ids[i]);
        Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
        msg.id.data = ids[i];
        msg.id.len = 16;
        msg.topic = (char *)topic;
        msg.sender = x->sender.member;
        msg.created_ns = wire_now_ns();
        size_t len;
        assert_int_equal(wire_message_sign(&msg, x->sender.secret_key, &bytes[i], &len), SPBE_OK);
        items[i] = (store_append_item){
            .topic = topic, .sender = x->sender.member, .id = ids[i], .data = bytes[i], .len = len};
    }
    assert_int_equal(store_append(x->s, items, n, 0), SPBE_OK);
    consumer_publish(x->cs, items[n - 1].topic_id, topic, items[n - 1].sequence);
    for (size_t i = 0; i < n; i++)
        free(bytes[i]);
    free(bytes);
    free(ids);
    free(items);
}

/* What the broker does with the consumers' changes: one commit, then done. */
static int
commit(fx *x)
{
    consumer_batch b;
    consumer_take(x->cs, &b);
    int ops_rc = SPBE_INTERNAL;
    store_apply(x->s, b.letters, b.n_letters, b.ops, b.n_ops, 0, &ops_rc);
    consumer_batch_done(x->cs, &b);
    return ops_rc;
}

/* The broker stops (after a last commit) and starts again on the same store. */
static void
restart(fx *x)
{
    assert_int_equal(commit(x), SPBE_OK);
    consumer_set_destroy(&x->cs);
    assert_null(x->cs);
    x->cs = consumer_set_new(x->s, &x->broker, fake_send, x);
    assert_int_equal(consumer_set_load(x->cs), SPBE_OK);
}

static Spbe__V1__ConsumerConfig
config(const char *name, const char *pattern)
{
    Spbe__V1__ConsumerConfig cfg = SPBE__V1__CONSUMER_CONFIG__INIT;
    cfg.name = (char *)name;
    cfg.pattern = (char *)pattern;
    return cfg;
}

static void
create(fx *x, const Spbe__V1__ConsumerConfig *cfg)
{
    assert_int_equal(consumer_create(x->cs, cfg, "bkn/siasn"), SPBE_OK);
}

static uint64_t
attach(fx *x, const char *name, void *session)
{
    uint64_t id = 0;
    assert_int_equal(consumer_attach(x->cs, name, session, &id), SPBE_OK);
    return id;
}

/* Sequences delivered for consumer since the last reset, "t:seq/count ..." */
static const char *
delivered(fx *x, const char *consumer)
{
    static char out[8192];
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < x->n_got && n < sizeof out - 64; i++)
        if (strcmp(x->got[i].consumer, consumer) == 0)
            n += (size_t)snprintf(out + n, sizeof out - n, "%s%s:%llu/%u", n ? " " : "",
                                  x->got[i].topic, (unsigned long long)x->got[i].sequence,
                                  x->got[i].count);
    return out;
}

static Spbe__V1__ConsumerInfo *
info(fx *x, const char *name)
{
    Spbe__V1__ConsumerInfo *i = NULL;
    assert_int_equal(consumer_info(x->cs, name, &i), SPBE_OK);
    return i;
}

typedef struct letter {
    char consumer[65], topic[256], reason[32];
    uint64_t sequence;
    uint32_t deliveries;
    size_t message_len;
} letter;

typedef struct letters {
    letter l[300];
    size_t n;
} letters;

static int
one_letter(const store_message *m, void *arg)
{
    letters *ls = arg;
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    assert_int_equal(wire_envelope_decode(m->data, m->len, &sm, &msg, NULL), SPBE_OK);
    assert_string_equal(msg->sender, "spbe/broker");
    assert_string_equal(msg->schema, "spbe.v1.DeadLetter");
    Spbe__V1__DeadLetter *dl =
        spbe__v1__dead_letter__unpack(NULL, msg->payload.len, msg->payload.data);
    assert_non_null(dl);
    assert_true(ls->n < 300);
    letter *l = &ls->l[ls->n++];
    snprintf(l->consumer, sizeof l->consumer, "%s", dl->consumer);
    snprintf(l->topic, sizeof l->topic, "%s", dl->topic);
    snprintf(l->reason, sizeof l->reason, "%s", dl->reason);
    l->sequence = dl->sequence;
    l->deliveries = dl->deliveries;
    l->message_len = dl->message.len;
    spbe__v1__dead_letter__free_unpacked(dl, NULL);
    wire_envelope_free(&sm, &msg);
    return 0;
}

/* The dead letters committed for consumer. */
static letters *
dead_letters(fx *x, const char *consumer)
{
    static letters ls;
    memset(&ls, 0, sizeof ls);
    char topic[128];
    snprintf(topic, sizeof topic, "$sys.dlq.%s", consumer);
    store_reader *r;
    assert_int_equal(store_reader_begin(x->s, &r), SPBE_OK);
    store_topic_info t;
    if (store_topic_get(r, topic, &t) == SPBE_OK) {
        uint64_t next;
        assert_int_equal(store_read_from(r, t.id, 1, 0, one_letter, &ls, &next), SPBE_OK);
    }
    store_reader_end(&r);
    return &ls;
}

typedef struct pendings {
    uint64_t seqs[16];
    uint32_t flags[16];
    size_t n;
} pendings;

static int
one_pending(const store_pending *p, void *arg)
{
    pendings *ps = arg;
    if (ps->n < 16) {
        ps->flags[ps->n] = p->flags;
        ps->seqs[ps->n++] = p->sequence;
    }
    return 0;
}

static pendings
stored_pending(fx *x, const char *consumer)
{
    pendings ps = {0};
    store_reader *r;
    assert_int_equal(store_reader_begin(x->s, &r), SPBE_OK);
    assert_int_equal(store_pending_each(r, consumer, one_pending, &ps), SPBE_OK);
    store_reader_end(&r);
    return ps;
}

/* ------------------------------------------------------------ tests */

/* Held, nak-ed and scheduled deliveries are stored; after a restart the held and
 * nak-ed ones go out again at once with their counts, the scheduled one waits. */
static void
test_pending_and_scheduled_deliveries_survive_a_restart(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("c1", "ikn.>");
    create(x, &cfg);
    attach(x, "c1", &sess_a);
    publish(x, "ikn.a");
    publish(x, "ikn.a");
    publish(x, "ikn.a");
    publish_timed(x, "ikn.a", wire_now_ns() + HOUR_NS, 0); /* 4: an hour from now */
    publish(x, "ikn.a");
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_string_equal(delivered(x, "c1"), "ikn.a:1/1 ikn.a:2/1 ikn.a:3/1 ikn.a:5/1");
    Spbe__V1__ConsumerInfo *i = info(x, "c1");
    assert_int_equal(i->pending, 4);
    assert_int_equal(i->scheduled, 1);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 1, ACK, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 1, ACK, 0, NULL), SPBE_NOT_FOUND);
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 4, ACK, 0, NULL),
                     SPBE_NOT_FOUND); /* not yet */
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 2, NAK, 60000, NULL), SPBE_OK);

    restart(x);
    pendings ps = stored_pending(x, "c1");
    assert_int_equal(ps.n, 4);
    assert_int_equal(ps.seqs[0], 2);
    assert_int_equal(ps.seqs[2], 4);
    assert_int_equal(ps.flags[2], 1); /* scheduled */
    i = info(x, "c1");
    assert_int_equal(i->pending, 3);
    assert_int_equal(i->scheduled, 1);
    assert_int_equal(i->acked, 1);
    assert_int_equal(i->delivered, 4);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    /* nobody holds them now: no progress to report; an ack settles one for good */
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 3, PROGRESS, 0, NULL), SPBE_NOT_FOUND);
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 5, ACK, 0, NULL), SPBE_OK);
    x->n_got = 0;
    assert_int_equal(consumer_pump(x->cs, 100), 0); /* nobody attached */
    assert_int_equal(x->n_got, 0);
    attach(x, "c1", &sess_b);
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_string_equal(delivered(x, "c1"), "ikn.a:2/2 ikn.a:3/2");
    assert_true(x->got[0].session == &sess_b);
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 2, NAK, 0, NULL), SPBE_OK);
    x->n_got = 0;
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "c1"), "ikn.a:2/3");

    restart(x);
    ps = stored_pending(x, "c1");
    assert_int_equal(ps.n, 3); /* 2, 3 and the scheduled 4: 5 is gone */
    assert_int_equal(ps.seqs[1], 3);
    /* a nak of one nobody holds: out again at once */
    assert_int_equal(consumer_ack(x->cs, "c1", "ikn.a", 3, NAK, 0, NULL), SPBE_OK);
    attach(x, "c1", &sess_c);
    x->n_got = 0;
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "c1"), "ikn.a:2/4 ikn.a:3/3");
    i = info(x, "c1");
    assert_int_equal(i->redelivered, 5);
    assert_int_equal(i->n_topics, 1);
    assert_int_equal(i->topics[0]->ack_floor, 1);
    assert_int_equal(i->topics[0]->next_sequence, 6);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
}

/* Where consumers start: by time, new only, first, a sequence; and in a topic that
 * appears after them. */
static void
test_start_positions_and_topics_that_appear_later(void **state)
{
    fx *x = *state;
    publish(x, "ikn.s");
    publish(x, "ikn.s");
    publish(x, "ikn.s");
    store_reader *r;
    store_topic_info t;
    store_message m;
    assert_int_equal(store_reader_begin(x->s, &r), SPBE_OK);
    assert_int_equal(store_topic_get(r, "ikn.s", &t), SPBE_OK);
    assert_int_equal(store_message_get(r, t.id, 2, &m), SPBE_OK);
    int64_t second = m.accepted_ns;
    store_reader_end(&r);

    Spbe__V1__ConsumerConfig cfg = config("by-time", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_TIME;
    cfg.start_time_ns = second;
    create(x, &cfg);
    cfg = config("by-new", "ikn.>");
    create(x, &cfg);
    cfg = config("by-first", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    cfg = config("by-seq", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_SEQUENCE;
    cfg.start_sequence = 3;
    create(x, &cfg);
    attach(x, "by-time", &sess_a);
    attach(x, "by-new", &sess_a);
    attach(x, "by-first", &sess_a);
    attach(x, "by-seq", &sess_a);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "by-time"), "ikn.s:2/1 ikn.s:3/1");
    assert_string_equal(delivered(x, "by-new"), "");
    assert_string_equal(delivered(x, "by-first"), "ikn.s:1/1 ikn.s:2/1 ikn.s:3/1");
    assert_string_equal(delivered(x, "by-seq"), "ikn.s:3/1");
    x->n_got = 0;
    publish(x, "ikn.s");
    publish(x, "ikn.late"); /* a topic newer than every consumer: read from its start */
    publish(x, "ikn.late");
    consumer_pump(x->cs, 100);
    const char *names[] = {"by-time", "by-new", "by-first", "by-seq"};
    for (int k = 0; k < 4; k++)
        assert_string_equal(delivered(x, names[k]), "ikn.s:4/1 ikn.late:1/1 ikn.late:2/1");
    /* the same holds for a consumer loaded after a restart */
    x->n_got = 0;
    restart(x);
    publish(x, "ikn.later");
    attach(x, "by-new", &sess_b);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "by-new"),
                        "ikn.s:4/2 ikn.late:1/2 ikn.late:2/2 ikn.later:1/1");
}

/* A consumer over more topics than its first table holds, a topic announced but not
 * stored, an announcement of an older sequence, a pattern that matches nothing. */
static void
test_many_topics_unknown_topics_and_no_topics(void **state)
{
    fx *x = *state;
    char topic[32];
    for (int i = 0; i < 9; i++) {
        snprintf(topic, sizeof topic, "ikn.t%d", i);
        publish(x, topic);
    }
    Spbe__V1__ConsumerConfig cfg = config("wide", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    cfg = config("none", "nothing.>");
    create(x, &cfg);
    attach(x, "wide", &sess_a);
    attach(x, "none", &sess_a);
    consumer_publish(x->cs, 999, "ikn.ghost", 5); /* never stored */
    consumer_publish(x->cs, 1, "ikn.t0", 0);      /* older than what is known */
    consumer_pump(x->cs, 100);
    assert_int_equal(x->n_got, 9);
    assert_string_equal(delivered(x, "none"), "");
    Spbe__V1__ConsumerInfo *i = info(x, "wide");
    assert_int_equal(i->n_topics, 10);
    assert_int_equal(i->pending, 9);
    assert_int_equal(i->lag, 0);
    int ghost = 0;
    for (size_t k = 0; k < i->n_topics; k++)
        if (strcmp(i->topics[k]->topic, "ikn.ghost") == 0) {
            ghost = 1;
            assert_int_equal(i->topics[k]->next_sequence, 0); /* not resolved */
            assert_int_equal(i->topics[k]->lag, 0);
            assert_int_equal(i->topics[k]->ack_floor, 0);
        }
    assert_true(ghost);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    i = info(x, "none");
    assert_int_equal(i->n_topics, 0);
    assert_int_equal(i->attached, 1);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
}

/* Expired messages: skipped when first read, settled when they expire while pending;
 * counted either way, dead-lettered with dead_letter_expired only. */
static void
test_expired_messages_with_and_without_dead_letters(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("exp-dl", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.dead_letter_expired = 1;
    create(x, &cfg);
    cfg = config("exp-plain", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    attach(x, "exp-dl", &sess_a);
    attach(x, "exp-plain", &sess_b);
    int64_t past = wire_now_ns() - 1000000000LL;
    publish_timed(x, "ikn.e", 0, past); /* 1: expired before anyone read it */
    publish(x, "ikn.e");                /* 2 */
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "exp-dl"), "ikn.e:2/1");
    assert_string_equal(delivered(x, "exp-plain"), "ikn.e:2/1");
    assert_int_equal(commit(x), SPBE_OK);
    letters *ls = dead_letters(x, "exp-dl");
    assert_int_equal(ls->n, 1);
    assert_string_equal(ls->l[0].reason, "expired");
    assert_string_equal(ls->l[0].topic, "ikn.e");
    assert_int_equal(ls->l[0].sequence, 1);
    assert_int_equal(ls->l[0].deliveries, 0);
    assert_int_equal(dead_letters(x, "exp-plain")->n, 0);

    /* 3 is delivered once and held by both when the broker stops; by the time it
     * starts again, 3 has expired (written here as the stopped broker left it) */
    assert_int_equal(commit(x), SPBE_OK);
    consumer_set_destroy(&x->cs);
    assert_int_equal(publish_timed(x, "ikn.e", 0, past), 3);
    store_op held[4];
    memset(held, 0, sizeof held);
    const char *names[2] = {"exp-dl", "exp-plain"};
    for (int k = 0; k < 2; k++) {
        store_op *p = &held[2 * k], *c = &held[2 * k + 1];
        p->kind = STORE_OP_PENDING_PUT;
        c->kind = STORE_OP_CURSOR_PUT;
        snprintf(p->consumer, sizeof p->consumer, "%s", names[k]);
        snprintf(c->consumer, sizeof c->consumer, "%s", names[k]);
        p->topic_id = c->topic_id = 1;
        p->sequence = 3;
        p->deliveries = 1;
        p->due_ns = wire_now_ns() + HOUR_NS;
        c->sequence = 4;
    }
    int ops_rc;
    assert_int_equal(store_apply(x->s, NULL, 0, held, 4, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    x->cs = consumer_set_new(x->s, &x->broker, fake_send, x);
    assert_int_equal(consumer_set_load(x->cs), SPBE_OK);
    x->n_got = 0;
    Spbe__V1__ConsumerInfo *i = info(x, "exp-plain");
    assert_int_equal(i->pending, 2); /* 2 and 3 */
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    /* nobody attached yet: what expired leaves all the same, the rest waits */
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_int_equal(x->n_got, 0);
    i = info(x, "exp-plain");
    assert_int_equal(i->pending, 1);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    attach(x, "exp-dl", &sess_a);
    attach(x, "exp-plain", &sess_b);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "exp-dl"), "ikn.e:2/2");
    assert_string_equal(delivered(x, "exp-plain"), "ikn.e:2/2");
    i = info(x, "exp-plain");
    assert_int_equal(i->pending, 1);
    assert_int_equal(i->expired, 2);
    assert_int_equal(i->dead_lettered, 0);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    i = info(x, "exp-dl");
    assert_int_equal(i->expired, 2);
    assert_int_equal(i->dead_lettered, 2);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_int_equal(commit(x), SPBE_OK);
    ls = dead_letters(x, "exp-dl");
    assert_int_equal(ls->n, 2);
    assert_int_equal(ls->l[1].sequence, 3);
    assert_int_equal(ls->l[1].deliveries, 1);
    assert_string_equal(ls->l[1].reason, "expired");
    assert_int_equal(dead_letters(x, "exp-plain")->n, 0);
    assert_int_equal(stored_pending(x, "exp-plain").n, 1);
}

/* max_deliveries reached, then TERM: each message leaves with its dead letter, which
 * carries the reason, the count and the original bytes. */
static void
test_max_deliveries_and_term_make_dead_letters(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("md", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.max_deliveries = 2;
    create(x, &cfg);
    attach(x, "md", &sess_a);
    publish_timed(x, "ikn.m", 0, wire_now_ns() + HOUR_NS); /* expires, but not yet */
    publish(x, "ikn.m");
    consumer_pump(x->cs, 100);
    assert_int_equal(consumer_ack(x->cs, "md", "ikn.m", 1, NAK, 0, NULL), SPBE_OK);
    consumer_pump(x->cs, 100);
    assert_int_equal(consumer_ack(x->cs, "md", "ikn.m", 1, NAK, 0, NULL), SPBE_OK);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "md"), "ikn.m:1/1 ikn.m:2/1 ikn.m:1/2");
    assert_int_equal(consumer_ack(x->cs, "md", "ikn.m", 1, ACK, 0, NULL),
                     SPBE_NOT_FOUND); /* gone */
    assert_int_equal(consumer_ack(x->cs, "md", "ikn.m", 2, TERM, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "md", "ikn.m", 2, TERM, 0, NULL), SPBE_NOT_FOUND);
    Spbe__V1__ConsumerInfo *i = info(x, "md");
    assert_int_equal(i->dead_lettered, 2);
    assert_int_equal(i->redelivered, 1);
    assert_int_equal(i->pending, 0);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_int_equal(commit(x), SPBE_OK);
    letters *ls = dead_letters(x, "md");
    assert_int_equal(ls->n, 2);
    assert_string_equal(ls->l[0].consumer, "md");
    assert_string_equal(ls->l[0].reason, "max deliveries");
    assert_int_equal(ls->l[0].sequence, 1);
    assert_int_equal(ls->l[0].deliveries, 2); /* not "expired": it had not */
    assert_true(ls->l[0].message_len > 64);
    assert_string_equal(ls->l[1].reason, "terminated");
    assert_int_equal(ls->l[1].sequence, 2);
    assert_int_equal(ls->l[1].deliveries, 1);
    assert_int_equal(stored_pending(x, "md").n, 0);
}

/* One commit carries at most 256 dead letters: TERM beyond them is UNAVAILABLE, a
 * message due for its dead letter waits, an expired one is not passed; after the
 * commit they all go. */
static void
test_dead_letters_wait_when_a_commit_has_no_room_for_more(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("full", "ikn.f");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.max_deliveries = 1;
    create(x, &cfg);
    cfg = config("fexp", "ikn.fe");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.dead_letter_expired = 1;
    create(x, &cfg);
    attach(x, "full", &sess_a);
    attach(x, "fexp", &sess_b);
    publish_many(x, "ikn.f", 260);
    consumer_pump(x->cs, 1000);
    assert_int_equal(x->n_got, 260);
    for (uint64_t s = 1; s <= 256; s++)
        assert_int_equal(consumer_ack(x->cs, "full", "ikn.f", s, TERM, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "full", "ikn.f", 257, TERM, 0, NULL), SPBE_UNAVAILABLE);
    assert_int_equal(consumer_ack(x->cs, "full", "ikn.f", 258, NAK, 0, NULL), SPBE_OK);
    publish_timed(x, "ikn.fe", 0, wire_now_ns() - 1000000000LL);
    x->n_got = 0;
    assert_int_equal(consumer_pump(x->cs, 1000), 1); /* more once the letters are out */
    assert_int_equal(x->n_got, 0);
    Spbe__V1__ConsumerInfo *i = info(x, "full");
    assert_int_equal(i->pending, 4); /* 257..260 */
    assert_int_equal(i->dead_lettered, 256);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    i = info(x, "fexp");
    assert_int_equal(i->expired, 0);
    assert_int_equal(i->topics[0]->lag, 1);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_true(consumer_next_due_ms(x->cs) == 0); /* something waits: now */

    assert_int_equal(commit(x), SPBE_OK);
    assert_int_equal(dead_letters(x, "full")->n, 256);
    consumer_pump(x->cs, 1000);
    assert_int_equal(consumer_ack(x->cs, "full", "ikn.f", 257, TERM, 0, NULL), SPBE_OK);
    assert_int_equal(commit(x), SPBE_OK);
    letters *ls = dead_letters(x, "full");
    assert_int_equal(ls->n, 258);
    assert_string_equal(ls->l[256].reason, "max deliveries");
    assert_int_equal(ls->l[256].sequence, 258);
    assert_string_equal(ls->l[257].reason, "terminated");
    assert_int_equal(ls->l[257].sequence, 257);
    ls = dead_letters(x, "fexp");
    assert_int_equal(ls->n, 1);
    assert_string_equal(ls->l[0].reason, "expired");
    assert_int_equal(x->n_got, 0);
}

/* A consumer deleted while attached and with changes not yet committed: its changes
 * are cancelled, nothing of it is stored, others stay. */
static void
test_delete_while_attached_cancels_its_changes(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("del-a", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    cfg = config("del-b", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    uint64_t att = attach(x, "del-b", &sess_a);
    attach(x, "del-a", &sess_b);
    publish(x, "ikn.d");
    publish(x, "ikn.d");
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "del-b"), "ikn.d:1/1 ikn.d:2/1");
    assert_int_equal(consumer_count_attached(x->cs, &sess_a), 1);
    assert_int_equal(consumer_delete(x->cs, "del-b"), SPBE_OK);
    assert_int_equal(consumer_delete(x->cs, "del-b"), SPBE_NOT_FOUND);
    assert_null(consumer_config(x->cs, "del-b"));
    assert_int_equal(consumer_ack(x->cs, "del-b", "ikn.d", 1, ACK, 0, NULL), SPBE_NOT_FOUND);
    assert_int_equal(consumer_detach(x->cs, &sess_a, att), SPBE_NOT_FOUND);
    assert_int_equal(consumer_count_attached(x->cs, &sess_a), 0);
    assert_int_equal(consumer_count_owned(x->cs, "bkn/siasn"), 1);
    restart(x);
    assert_null(consumer_config(x->cs, "del-b"));
    assert_non_null(consumer_config(x->cs, "del-a"));
    assert_int_equal(stored_pending(x, "del-b").n, 0);
    assert_int_equal(stored_pending(x, "del-a").n, 2);
}

/* max_in_flight holds an attachment back until acks free room; a peer that cannot
 * take more is tried again soon; a peer whose send fails is detached. */
static void
test_flow_control_blocked_peers_and_failed_sends(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("flow", "ikn.w");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.max_in_flight = 2;
    create(x, &cfg);
    attach(x, "flow", &sess_a);
    for (int k = 0; k < 5; k++)
        publish(x, "ikn.w");
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_string_equal(delivered(x, "flow"), "ikn.w:1/1 ikn.w:2/1");
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_int_equal(x->n_got, 2); /* the window is full */
    assert_int_equal(consumer_ack(x->cs, "flow", "ikn.w", 1, ACK, 0, NULL), SPBE_OK);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "flow"), "ikn.w:1/1 ikn.w:2/1 ikn.w:3/1");

    /* the peer cannot take more now: what is due waits, and is tried again shortly */
    x->send_rc = EAGAIN;
    assert_int_equal(consumer_ack(x->cs, "flow", "ikn.w", 2, ACK, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "flow", "ikn.w", 3, NAK, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_int_equal(x->n_got, 3);
    long due = consumer_next_due_ms(x->cs);
    assert_true(due >= 0 && due <= 5);
    x->send_rc = 0;
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "flow"), "ikn.w:1/1 ikn.w:2/1 ikn.w:3/1 ikn.w:3/2 ikn.w:4/1");

    /* two peers, one window each: the second's send fails, it is detached */
    cfg = config("flow2", "ikn.v");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    cfg.max_in_flight = 1;
    create(x, &cfg);
    attach(x, "flow2", &sess_b);
    attach(x, "flow2", &sess_c);
    publish(x, "ikn.v");
    x->n_got = 0;
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "flow2"), "ikn.v:1/1");
    assert_true(x->got[0].session == &sess_b);
    x->send_rc = ENOTCONN;
    x->fail_session = &sess_c;
    publish(x, "ikn.v");
    consumer_pump(x->cs, 100);
    assert_int_equal(consumer_count_attached(x->cs, &sess_c), 0);
    assert_int_equal(consumer_count_attached(x->cs, &sess_b), 1);
    x->send_rc = 0;
    assert_int_equal(consumer_ack(x->cs, "flow2", "ikn.v", 1, ACK, 0, NULL), SPBE_OK);
    consumer_pump(x->cs, 100);
    assert_string_equal(delivered(x, "flow2"), "ikn.v:1/1 ikn.v:2/1");
    assert_true(x->got[x->n_got - 1].session == &sess_b);
}

/* Hundreds of deliveries in flight at once, several peers, one of them detached: what
 * it held goes to the others at once; every ack settles its own. */
static void
test_many_in_flight_and_a_peer_detached(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("big", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    int peers[6];
    uint64_t atts[6];
    for (int k = 0; k < 6; k++)
        atts[k] = attach(x, "big", &peers[k]);
    publish_many(x, "ikn.b", 600);
    assert_int_equal(consumer_pump(x->cs, 1000), 0);
    assert_int_equal(x->n_got, 600);
    size_t held_by_0 = 0;
    for (size_t k = 0; k < x->n_got; k++)
        held_by_0 += x->got[k].session == &peers[0];
    assert_int_equal(held_by_0, 100);
    assert_int_equal(consumer_detach(x->cs, &peers[0], atts[0]), SPBE_OK);
    assert_int_equal(consumer_detach(x->cs, &peers[0], atts[0]), SPBE_NOT_FOUND);
    assert_int_equal(consumer_detach(x->cs, &peers[1], atts[2]), SPBE_NOT_FOUND); /* not its */
    x->n_got = 0;
    consumer_pump(x->cs, 1000);
    assert_int_equal(x->n_got, 100);
    for (size_t k = 0; k < x->n_got; k++) {
        assert_true(x->got[k].session != &peers[0]);
        assert_int_equal(x->got[k].count, 2);
    }
    for (uint64_t s = 600; s >= 1; s--)
        assert_int_equal(consumer_ack(x->cs, "big", "ikn.b", s, ACK, 0, NULL), SPBE_OK);
    Spbe__V1__ConsumerInfo *i = info(x, "big");
    assert_int_equal(i->pending, 0);
    assert_int_equal(i->acked, 600);
    assert_int_equal(i->attached, 5);
    assert_int_equal(i->topics[0]->ack_floor, 600);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_int_equal(commit(x), SPBE_OK);
    assert_int_equal(stored_pending(x, "big").n, 0);
}

/* A budget shared by consumers: a pump delivers at most that many and says if more
 * is waiting. */
static void
test_a_pump_keeps_to_its_budget(void **state)
{
    fx *x = *state;
    Spbe__V1__ConsumerConfig cfg = config("b1", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    cfg.name = "b2";
    create(x, &cfg);
    attach(x, "b1", &sess_a);
    attach(x, "b2", &sess_b);
    for (int k = 0; k < 3; k++) {
        publish(x, "ikn.p");
        publish(x, "ikn.q");
    }
    int rounds = 0;
    while (consumer_pump(x->cs, 1)) {
        assert_int_equal(x->n_got, (size_t)rounds + 1);
        rounds++;
        assert_true(rounds < 20);
    }
    assert_int_equal(x->n_got, 12);
    assert_int_equal(strlen(delivered(x, "b1")), strlen("ikn.p:1/1 ") * 6 - 1);
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_int_equal(x->n_got, 12);
    /* redeliveries due take the budget first; new ones wait for the next pump */
    assert_int_equal(consumer_ack(x->cs, "b1", "ikn.p", 1, NAK, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "b1", "ikn.q", 1, NAK, 0, NULL), SPBE_OK);
    publish(x, "ikn.p");
    x->n_got = 0;
    assert_int_equal(consumer_pump(x->cs, 2), 1);
    assert_string_equal(delivered(x, "b1"), "ikn.p:1/2 ikn.q:1/2");
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_string_equal(delivered(x, "b1"), "ikn.p:1/2 ikn.q:1/2 ikn.p:4/1");
    assert_string_equal(delivered(x, "b2"), "ikn.p:4/1");
}

/* Names, acks of what is not there, a set with changes never taken. */
static void
test_names_and_acks_of_what_is_not_there(void **state)
{
    fx *x = *state;
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    assert_false(consumer_name_valid(""));
    assert_false(consumer_name_valid(long_name));
    long_name[64] = '\0';
    assert_true(consumer_name_valid(long_name));
    assert_true(consumer_name_valid("ok_name-9"));
    assert_false(consumer_name_valid("Upper"));
    assert_false(consumer_name_valid("a.b"));
    assert_false(consumer_name_valid("a/b"));
    assert_false(consumer_name_valid("a~b"));
    assert_int_equal(consumer_next_due_ms(x->cs), -1);
    uint64_t id;
    assert_int_equal(consumer_attach(x->cs, "nobody", &sess_a, &id), SPBE_NOT_FOUND);
    assert_int_equal(consumer_ack(x->cs, "nobody", "ikn.a", 1, ACK, 0, NULL), SPBE_NOT_FOUND);
    assert_int_equal(consumer_delete(x->cs, "nobody"), SPBE_NOT_FOUND);
    Spbe__V1__ConsumerInfo *i = NULL;
    assert_int_equal(consumer_info(x->cs, "nobody", &i), SPBE_NOT_FOUND);
    publish(x, "ikn.n");
    Spbe__V1__ConsumerConfig cfg = config("quiet", "ikn.>");
    create(x, &cfg);
    assert_int_equal(consumer_ack(x->cs, "quiet", "ikn.n", 1, ACK, 0, NULL), SPBE_NOT_FOUND);
    assert_int_equal(consumer_ack(x->cs, "quiet", "ikn.other", 1, ACK, 0, NULL), SPBE_NOT_FOUND);
    cfg = config("eager", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    attach(x, "eager", &sess_a);
    consumer_pump(x->cs, 10);
    assert_string_equal(delivered(x, "eager"), "ikn.n:1/1");
    assert_true(consumer_dirty(x->cs));
    consumer_set_destroy(&x->cs); /* with its changes never taken */
    consumer_set_destroy(&x->cs);
    consumer_set_destroy(NULL);
    x->cs = consumer_set_new(x->s, &x->broker, fake_send, x);
    assert_int_equal(consumer_set_load(x->cs), SPBE_OK);
    assert_int_equal(stored_pending(x, "eager").n, 0); /* never committed */
    attach(x, "eager", &sess_b);
    x->n_got = 0;
    consumer_pump(x->cs, 10);
    assert_string_equal(delivered(x, "eager"), "ikn.n:1/1"); /* its cursor was not moved */
}

/* What a stopped broker left may no longer fit when it starts: a scheduled delivery
 * whose message retention removed, a pending one of a topic the pattern does not
 * match, a cursor of a topic that is gone. They are dropped, the rest is kept. */
static void
test_a_restart_drops_state_that_no_longer_fits(void **state)
{
    fx *x = *state;
    publish(x, "ikn.r");
    publish(x, "ikn.r");
    publish(x, "ikn.r");   /* ikn.r: id 1, sequences 1..3 */
    publish(x, "other.x"); /* id 2 */
    Spbe__V1__ConsumerConfig cfg = config("fit", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    cfg = config("lonely", "zzz.>");
    create(x, &cfg);
    assert_int_equal(commit(x), SPBE_OK);
    consumer_set_destroy(&x->cs);
    int64_t now = wire_now_ns();
    store_op ops[] = {
        {.kind = STORE_OP_TRIM, .topic_id = 1, .sequence = 2},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "fit",
         .topic_id = 1,
         .sequence = 1,
         .deliveries = 0,
         .flags = 1,
         .due_ns = now - 1},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "fit",
         .topic_id = 1,
         .sequence = 3,
         .deliveries = 0,
         .flags = 1,
         .due_ns = now + HOUR_NS},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "fit",
         .topic_id = 2,
         .sequence = 1,
         .deliveries = 1},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "lonely",
         .topic_id = 2,
         .sequence = 1,
         .deliveries = 1},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "fit", .topic_id = 99, .sequence = 5},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "fit", .topic_id = 1, .sequence = 4},
    };
    int ops_rc;
    assert_int_equal(store_apply(x->s, NULL, 0, ops, 7, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    x->cs = consumer_set_new(x->s, &x->broker, fake_send, x);
    assert_int_equal(consumer_set_load(x->cs), SPBE_OK);
    Spbe__V1__ConsumerInfo *i = info(x, "fit");
    assert_int_equal(i->n_topics, 1); /* not the one that is gone */
    assert_string_equal(i->topics[0]->topic, "ikn.r");
    assert_int_equal(i->topics[0]->next_sequence, 4);
    assert_int_equal(i->scheduled, 2);
    assert_int_equal(i->pending, 1);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    attach(x, "fit", &sess_a);
    attach(x, "lonely", &sess_b);
    assert_int_equal(consumer_pump(x->cs, 100), 0);
    assert_int_equal(x->n_got, 0);
    i = info(x, "fit");
    assert_int_equal(i->scheduled, 1);
    assert_int_equal(i->pending, 0);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    i = info(x, "lonely");
    assert_int_equal(i->n_topics, 0);
    assert_int_equal(i->pending, 0);
    spbe__v1__consumer_info__free_unpacked(i, NULL);
    assert_int_equal(commit(x), SPBE_OK);
    pendings ps = stored_pending(x, "fit");
    assert_int_equal(ps.n, 1);
    assert_int_equal(ps.seqs[0], 3);
    assert_int_equal(stored_pending(x, "lonely").n, 0);
}

/* A topic emptied by retention before the consumer: it starts after the last; a
 * stored record that is no signed message has no times and is delivered as stored. */
static void
test_emptied_topics_and_records_without_times(void **state)
{
    fx *x = *state;
    publish(x, "ikn.gone");
    publish(x, "ikn.gone");
    store_op trim = {.kind = STORE_OP_TRIM, .topic_id = 1, .sequence = 2};
    int ops_rc;
    assert_int_equal(store_apply(x->s, NULL, 0, &trim, 1, 0, &ops_rc), SPBE_OK);
    Spbe__V1__ConsumerConfig cfg = config("empty", "ikn.>");
    cfg.start = SPBE__V1__START_POSITION__START_FIRST;
    create(x, &cfg);
    attach(x, "empty", &sess_a);
    consumer_pump(x->cs, 10);
    assert_int_equal(x->n_got, 0);
    publish(x, "ikn.gone");
    uint8_t id[16] = {7};
    store_append_item raw = {.topic = "ikn.raw",
                             .sender = "bkn/siasn",
                             .id = id,
                             .data = (const uint8_t *)"not a signed message",
                             .len = 20};
    assert_int_equal(store_append(x->s, &raw, 1, 0), SPBE_OK);
    consumer_publish(x->cs, raw.topic_id, "ikn.raw", raw.sequence);
    consumer_pump(x->cs, 10);
    assert_string_equal(delivered(x, "empty"), "ikn.gone:3/1 ikn.raw:1/1");
    assert_int_equal(x->got[1].len, 20);
    /* a nak with a delay: while nobody is attached, the next look is at its time */
    assert_int_equal(consumer_ack(x->cs, "empty", "ikn.gone", 3, NAK, 0, NULL), SPBE_OK);
    assert_int_equal(consumer_ack(x->cs, "empty", "ikn.raw", 1, NAK, 500, NULL), SPBE_OK);
    consumer_detach_session(x->cs, &sess_a);
    assert_int_equal(consumer_pump(x->cs, 10), 0);
    long due = consumer_next_due_ms(x->cs);
    assert_true(due >= 0 && due <= 500);
}

int
main(void)
{
    if (wire_init() != SPBE_OK)
        return 1;
    log_set_level(LOG_ERROR); /* the consumers' info lines are not what is tested */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pending_and_scheduled_deliveries_survive_a_restart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_positions_and_topics_that_appear_later, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_topics_unknown_topics_and_no_topics, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_messages_with_and_without_dead_letters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_max_deliveries_and_term_make_dead_letters, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters_wait_when_a_commit_has_no_room_for_more,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_while_attached_cancels_its_changes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_flow_control_blocked_peers_and_failed_sends, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_in_flight_and_a_peer_detached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_pump_keeps_to_its_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_acks_of_what_is_not_there, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_restart_drops_state_that_no_longer_fits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_emptied_topics_and_records_without_times, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
