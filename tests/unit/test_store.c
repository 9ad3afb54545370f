/* test_store.c - topic logs, dedup, registry, map growth, retention, the storage limit
 * and consumer bookkeeping in LMDB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <lmdb.h>
#include <sys/stat.h>

#include "identity.h"
#include "spbe/errors.h"
#include "store.h"
#include "wire.h"

typedef struct fixture {
    char dir[64];
    store *s;
    uint32_t next_id; /* fill()'s message ids, distinct across topics */
} fixture;

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/spbe-store-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char err[256];
    if (store_open(f->dir, NULL, &f->s, err, sizeof err) != SPBE_OK)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;
    store_close(&f->s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* An item with a distinct id derived from n. */
static store_append_item
item(const char *topic, const char *sender, uint8_t id[16], uint32_t n, const char *data)
{
    memset(id, 0, 16);
    memcpy(id, &n, sizeof n);
    store_append_item it = {.topic = topic,
                            .sender = sender,
                            .id = id,
                            .data = (const uint8_t *)data,
                            .len = strlen(data)};
    return it;
}

static void
test_append_assigns_sequence_one_and_reads_back_exact_bytes(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    store_append_item it = item("ikn.a", "bkn/siasn", id, 1, "hello");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.code, SPBE_OK);
    assert_int_equal(it.sequence, 1);
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "ikn.a", &t), SPBE_OK);
    assert_int_equal(t.first_sequence, 1);
    assert_int_equal(t.last_sequence, 1);
    assert_int_equal(t.messages, 1);
    assert_int_equal(t.bytes, 5);
    assert_int_equal(t.id, it.topic_id);
    store_message m;
    assert_int_equal(store_message_get(r, t.id, 1, &m), SPBE_OK);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.data, "hello", 5);
    assert_int_equal(m.accepted_ns, it.accepted_ns);
    assert_int_equal(store_message_get(r, t.id, 2, &m), SPBE_NOT_FOUND);
    assert_int_equal(store_topic_get(r, "ikn.none", &t), SPBE_NOT_FOUND);
    store_reader_end(&r);
    assert_null(r);
}

static void
test_append_assigns_sequences_without_gaps_per_topic(void **state)
{
    fixture *f = *state;
    const char *topics[] = {"t.one", "t.two", "t.three"};
    store_append_item items[100];
    uint8_t ids[100][16];
    for (uint32_t i = 0; i < 100; i++)
        items[i] = item(topics[i % 3], "bkn/siasn", ids[i], i + 100, "x");
    assert_int_equal(store_append(f->s, items, 100, 0), SPBE_OK);
    uint64_t next[3] = {1, 1, 1};
    int64_t last[3] = {0, 0, 0};
    for (int i = 0; i < 100; i++) {
        assert_int_equal(items[i].code, SPBE_OK);
        assert_int_equal(items[i].sequence, next[i % 3]++);
        assert_true(items[i].accepted_ns >= last[i % 3]);
        last[i % 3] = items[i].accepted_ns;
    }
    char err[256];
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

static void
test_duplicates_are_stored_once_within_and_across_groups(void **state)
{
    fixture *f = *state;
    uint8_t a[16], b[16], c[16];
    store_append_item group[3] = {item("d.t", "bkn/siasn", a, 7, "one"),
                                  item("d.t", "bkn/siasn", b, 7, "one again"),
                                  item("d.t", "oikn/hunian", c, 7, "same id, other sender")};
    assert_int_equal(store_append(f->s, group, 3, 3600LL * 1000000000), SPBE_OK);
    assert_int_equal(group[0].code, SPBE_OK);
    assert_int_equal(group[1].code, SPBE_DUPLICATE);
    assert_int_equal(group[1].sequence, group[0].sequence);
    assert_int_equal(group[1].accepted_ns, group[0].accepted_ns);
    assert_int_equal(group[2].code, SPBE_OK);
    store_append_item later = item("other.topic", "bkn/siasn", a, 7, "later");
    assert_int_equal(store_append(f->s, &later, 1, 3600LL * 1000000000), SPBE_OK);
    assert_int_equal(later.code, SPBE_DUPLICATE);
    assert_int_equal(later.topic_id, group[0].topic_id); /* names the original's topic */
    store_reader *r;
    store_reader_begin(f->s, &r);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "d.t", &t), SPBE_OK);
    assert_int_equal(t.messages, 2);
    assert_int_equal(store_topic_get(r, "other.topic", &t), SPBE_NOT_FOUND);
    store_reader_end(&r);
}

static void
test_dedup_window_and_expiry(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    store_append_item it = item("w.t", "bkn/siasn", id, 9, "x");
    assert_int_equal(store_append(f->s, &it, 1, 1), SPBE_OK);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    it = item("w.t", "bkn/siasn", id, 9, "x");
    assert_int_equal(store_append(f->s, &it, 1, 1), SPBE_OK); /* 1 ns window: past it */
    assert_int_equal(it.code, SPBE_OK);
    assert_int_equal(it.sequence, 2);
    size_t removed = 0;
    assert_int_equal(store_dedup_expire(f->s, wire_now_ns() + 1, 100, &removed), SPBE_OK);
    assert_true(removed >= 1);
    it = item("w.t", "bkn/siasn", id, 9, "x");
    assert_int_equal(store_append(f->s, &it, 1, 3600LL * 1000000000), SPBE_OK);
    assert_int_equal(it.code, SPBE_OK); /* the entry is gone, so it is new again */
}

typedef struct seen {
    uint64_t seqs[64];
    size_t n;
} seen;

static int
collect(const store_message *m, void *arg)
{
    seen *s = arg;
    s->seqs[s->n++] = m->sequence;
    return 0;
}

static void
test_read_from_a_sequence_with_a_limit(void **state)
{
    fixture *f = *state;
    store_append_item items[20];
    uint8_t ids[20][16];
    for (uint32_t i = 0; i < 20; i++)
        items[i] = item("r.t", "bkn/siasn", ids[i], i + 1000, "payload");
    assert_int_equal(store_append(f->s, items, 20, 0), SPBE_OK);
    uint8_t other_id[16];
    store_append_item other = item("r.u", "bkn/siasn", other_id, 5000, "other");
    assert_int_equal(store_append(f->s, &other, 1, 0), SPBE_OK);
    store_reader *r;
    store_reader_begin(f->s, &r);
    store_topic_info t;
    store_topic_get(r, "r.t", &t);
    seen s = {0};
    uint64_t next;
    assert_int_equal(store_read_from(r, t.id, 1, 0, collect, &s, &next), SPBE_OK);
    assert_int_equal(s.n, 20); /* stops at the topic's end, not the next topic */
    assert_int_equal(next, 21);
    s.n = 0;
    assert_int_equal(store_read_from(r, t.id, 15, 3, collect, &s, &next), SPBE_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.seqs[0], 15);
    assert_int_equal(s.seqs[2], 17);
    assert_int_equal(next, 18);
    s.n = 0;
    assert_int_equal(store_read_from(r, t.id, 99, 0, collect, &s, &next), SPBE_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(next, 99);
    store_topic_info by_id;
    assert_int_equal(store_topic_get_by_id(r, t.id, &by_id), SPBE_OK);
    assert_string_equal(by_id.name, "r.t");
    assert_int_equal(store_topic_get_by_id(r, 999999, &by_id), SPBE_NOT_FOUND);
    store_reader_end(&r);
}

static int
count_member(const Spbe__V1__Member *m, void *arg)
{
    (void)m;
    (*(int *)arg)++;
    return 0;
}

static void
test_members_by_name_and_by_curve_key(void **state)
{
    fixture *f = *state;
    identity id;
    identity_generate("bkn/siasn", &id);
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = id.member;
    m.public_key.data = id.public_key;
    m.public_key.len = 32;
    assert_int_equal(store_member_put(f->s, &m), SPBE_OK);
    m.public_key.len = 31;
    assert_int_equal(store_member_put(f->s, &m), SPBE_BAD_REQUEST);
    store_reader *r;
    store_reader_begin(f->s, &r);
    Spbe__V1__Member *back;
    assert_int_equal(store_member_get(r, "bkn/siasn", &back), SPBE_OK);
    assert_memory_equal(back->public_key.data, id.public_key, 32);
    spbe__v1__member__free_unpacked(back, NULL);
    assert_int_equal(store_member_get(r, "bkn/none", &back), SPBE_NOT_FOUND);
    uint8_t curve[32];
    wire_curve_public(id.public_key, curve);
    char name[65];
    assert_int_equal(store_member_by_curve_key(r, curve, name, sizeof name), SPBE_OK);
    assert_string_equal(name, "bkn/siasn");
    curve[0] ^= 1;
    assert_int_equal(store_member_by_curve_key(r, curve, name, sizeof name), SPBE_NOT_FOUND);
    int n = 0;
    assert_int_equal(store_member_each(r, count_member, &n), SPBE_OK);
    assert_int_equal(n, 1);
    store_reader_end(&r);
}

static void
test_reopen_and_read_only_open(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    store_append_item it = item("p.t", "bkn/siasn", id, 1, "kept");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    store_close(&f->s);
    char err[256];
    store_options ro = {.read_only = 1};
    store *s;
    assert_int_equal(store_open(f->dir, &ro, &s, err, sizeof err), SPBE_OK);
    store_reader *r;
    store_reader_begin(s, &r);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "p.t", &t), SPBE_OK);
    assert_int_equal(t.messages, 1);
    store_reader_end(&r);
    assert_int_equal(store_append(s, &it, 1, 0), SPBE_INTERNAL); /* read-only writes nothing */
    store_close(&s);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    char empty[96];
    snprintf(empty, sizeof empty, "%s/empty", f->dir);
    assert_int_not_equal(store_open(empty, &ro, &s, err, sizeof err), SPBE_OK);
}

static void
test_map_grows_as_needed(void **state)
{
    fixture *f = *state;
    store_close(&f->s);
    char err[256];
    store_options small = {.initial_map_bytes = 1 << 20};
    assert_int_equal(store_open(f->dir, &small, &f->s, err, sizeof err), SPBE_OK);
    char *big = malloc(10240 + 1);
    memset(big, 'g', 10240);
    big[10240] = '\0';
    for (uint32_t g = 0; g < 50; g++) {
        store_append_item items[10];
        uint8_t ids[10][16];
        for (uint32_t i = 0; i < 10; i++)
            items[i] = item("grow.t", "bkn/siasn", ids[i], g * 10 + i, big);
        assert_int_equal(store_append(f->s, items, 10, 0), SPBE_OK);
    }
    free(big);
    store_close(&f->s);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    store_reader *r;
    store_reader_begin(f->s, &r);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "grow.t", &t), SPBE_OK);
    assert_int_equal(t.messages, 500);
    store_reader_end(&r);
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

static void
test_storage_limit_refuses_with_storage_full_and_keeps_data(void **state)
{
    fixture *f = *state;
    store_close(&f->s);
    char err[256];
    store_options limited = {.initial_map_bytes = 1 << 20, .max_map_bytes = 2 << 20};
    assert_int_equal(store_open(f->dir, &limited, &f->s, err, sizeof err), SPBE_OK);
    char *big = malloc(65536 + 1);
    memset(big, 'f', 65536);
    big[65536] = '\0';
    uint32_t stored = 0;
    int rc = SPBE_OK;
    for (uint32_t i = 0; i < 160 && rc == SPBE_OK; i++) {
        uint8_t id[16];
        store_append_item it = item("full.t", "bkn/siasn", id, i, big);
        rc = store_append(f->s, &it, 1, 0);
        if (rc == SPBE_OK)
            stored++;
        else
            assert_int_equal(it.code, SPBE_STORAGE_FULL);
    }
    free(big);
    assert_int_equal(rc, SPBE_STORAGE_FULL);
    assert_true(stored > 0 && stored < 160);
    store_reader *r;
    store_reader_begin(f->s, &r);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "full.t", &t), SPBE_OK);
    assert_int_equal(t.messages, stored);
    store_message m;
    assert_int_equal(store_message_get(r, t.id, stored, &m), SPBE_OK);
    assert_int_equal(m.len, 65536);
    store_reader_end(&r);
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

/* Appends n messages of len bytes to topic, one group each ten. */
static void
fill(fixture *f, const char *topic, uint32_t n, size_t len)
{
    char *data = malloc(len + 1);
    memset(data, 'r', len);
    data[len] = '\0';
    for (uint32_t i = 0; i < n; i += 10) {
        uint8_t ids[10][16];
        store_append_item items[10];
        uint32_t k = 0;
        for (; k < 10 && i + k < n; k++)
            items[k] = item(topic, "bkn/siasn", ids[k], 1000000 + f->next_id++, data);
        assert_int_equal(store_append(f->s, items, k, 0), SPBE_OK);
    }
    free(data);
}

static store_topic_info
topic_info(fixture *f, const char *topic)
{
    store_reader *r;
    store_topic_info t = {0};
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_topic_get(r, topic, &t);
    store_reader_end(&r);
    return t;
}

static void
test_retention_by_count_bytes_and_age_in_bounded_steps(void **state)
{
    fixture *f = *state;
    fill(f, "keep.count", 50, 10);
    fill(f, "keep.bytes", 50, 100);
    fill(f, "keep.age", 20, 10);
    fill(f, "other.t", 30, 10);
    store_retention rules[3] = {{.pattern = "keep.count", .max_messages = 10},
                                {.pattern = "keep.bytes", .max_bytes = 1000},
                                {.pattern = "keep.>", .max_age_ns = 3600000000000LL}};
    /* at most 25 deletions per call: several calls, each a short transaction */
    size_t removed, total = 0;
    int calls = 0;
    do {
        assert_int_equal(store_retain(f->s, rules, 3, wire_now_ns(), 25, &removed), SPBE_OK);
        assert_true(removed <= 25);
        total += removed;
        calls++;
    } while (removed == 25 && calls < 100);
    assert_true(calls >= 4);
    store_topic_info t = topic_info(f, "keep.count");
    assert_int_equal(t.messages, 10);
    assert_int_equal(t.first_sequence, 41);
    assert_int_equal(t.last_sequence, 50);
    t = topic_info(f, "keep.bytes");
    assert_true(t.bytes <= 1000 && t.messages >= 9);
    assert_int_equal(t.last_sequence, 50);
    assert_int_equal(topic_info(f, "keep.age").messages, 20); /* young: kept */
    assert_int_equal(topic_info(f, "other.t").messages, 30);  /* no rule: kept whole */
    assert_int_equal(total, 40 + (50 - topic_info(f, "keep.bytes").messages));
    /* an hour and a bit later the age rule takes the rest of keep.age */
    assert_int_equal(store_retain(f->s, rules, 3, wire_now_ns() + 3700000000000LL, 1000, &removed),
                     SPBE_OK);
    assert_int_equal(topic_info(f, "keep.age").messages, 0);
    /* sequences go on after trimming */
    fill(f, "keep.count", 1, 10);
    t = topic_info(f, "keep.count");
    assert_int_equal(t.last_sequence, 51);
    char err[256];
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

static void
test_sequence_at_a_time(void **state)
{
    fixture *f = *state;
    fill(f, "time.t", 5, 10);
    int64_t between = wire_now_ns();
    fill(f, "time.t", 5, 10);
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "time.t", &t), SPBE_OK);
    uint64_t seq;
    assert_int_equal(store_sequence_at(r, t.id, between, &seq), SPBE_OK);
    assert_int_equal(seq, 6);
    assert_int_equal(store_sequence_at(r, t.id, 0, &seq), SPBE_OK);
    assert_int_equal(seq, 1);
    store_sequence_at(r, t.id, wire_now_ns() + 1000000000, &seq);
    assert_int_equal(seq, 11);
    store_reader_end(&r);
}

typedef struct books {
    int consumers, cursors, pending;
    uint64_t last_cursor;
    store_pending p;
} books;

static int
seen_consumer(const Spbe__V1__ConsumerInfo *c, void *arg)
{
    books *s = arg;
    assert_string_equal(c->config->name, "portal");
    s->consumers++;
    return 0;
}

static int
seen_cursor(uint32_t topic_id, uint64_t next, void *arg)
{
    (void)topic_id;
    books *s = arg;
    s->cursors++;
    s->last_cursor = next;
    return 0;
}

static int
seen_pending(const store_pending *p, void *arg)
{
    books *s = arg;
    s->pending++;
    s->p = *p;
    return 0;
}

static books
look(fixture *f, const char *consumer)
{
    books s = {0};
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_consumer_each(r, seen_consumer, &s), SPBE_OK);
    assert_int_equal(store_cursor_each(r, consumer, seen_cursor, &s), SPBE_OK);
    assert_int_equal(store_pending_each(r, consumer, seen_pending, &s), SPBE_OK);
    store_reader_end(&r);
    return s;
}

static void
test_consumer_state_commits_with_messages_and_goes_with_its_consumer(void **state)
{
    fixture *f = *state;
    Spbe__V1__ConsumerConfig cfg = SPBE__V1__CONSUMER_CONFIG__INIT;
    cfg.name = "portal";
    cfg.pattern = "ikn.>";
    Spbe__V1__ConsumerInfo info = SPBE__V1__CONSUMER_INFO__INIT;
    info.config = &cfg;
    info.owner = "portal/status";
    uint8_t record[256];
    size_t record_len = spbe__v1__consumer_info__pack(&info, record);
    store_op ops[4] = {
        {.kind = STORE_OP_CONSUMER_PUT,
         .consumer = "portal",
         .record = record,
         .record_len = record_len},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "portal", .topic_id = 1, .sequence = 8},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "portal",
         .topic_id = 1,
         .sequence = 6,
         .deliveries = 2,
         .flags = 0,
         .due_ns = 12345},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "portal",
         .topic_id = 1,
         .sequence = 7,
         .deliveries = 1},
    };
    /* ops ride with a group of messages: one transaction, one commit */
    uint8_t id[16];
    store_append_item it = item("ikn.a", "bkn/siasn", id, 1, "m");
    int ops_rc = SPBE_INTERNAL;
    assert_int_equal(store_apply(f->s, &it, 1, ops, 4, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    assert_int_equal(it.sequence, 1);
    books s = look(f, "portal");
    assert_int_equal(s.consumers, 1);
    assert_int_equal(s.cursors, 1);
    assert_int_equal(s.last_cursor, 8);
    assert_int_equal(s.pending, 2);
    assert_int_equal(s.p.sequence, 7);

    /* an ack deletes one pending entry; a put replaces */
    store_op more[2] = {
        {.kind = STORE_OP_PENDING_DEL, .consumer = "portal", .topic_id = 1, .sequence = 7},
        {.kind = STORE_OP_PENDING_PUT,
         .consumer = "portal",
         .topic_id = 1,
         .sequence = 6,
         .deliveries = 3,
         .due_ns = 999},
    };
    assert_int_equal(store_apply(f->s, NULL, 0, more, 2, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    s = look(f, "portal");
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.p.sequence, 6);
    assert_int_equal(s.p.deliveries, 3);
    assert_int_equal(s.p.due_ns, 999);
    /* state survives a reopen */
    store_close(&f->s);
    char err[256];
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    assert_int_equal(look(f, "portal").pending, 1);

    /* deleting the consumer takes its cursors and pending entries along */
    store_op del = {.kind = STORE_OP_CONSUMER_DEL, .consumer = "portal"};
    assert_int_equal(store_apply(f->s, NULL, 0, &del, 1, 0, &ops_rc), SPBE_OK);
    s = look(f, "portal");
    assert_int_equal(s.consumers + s.cursors + s.pending, 0);
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

static void
test_storage_limit_lifts_when_retention_frees_room(void **state)
{
    fixture *f = *state;
    store_close(&f->s);
    char err[256];
    store_options limited = {.initial_map_bytes = 1 << 20, .max_map_bytes = 2 << 20};
    assert_int_equal(store_open(f->dir, &limited, &f->s, err, sizeof err), SPBE_OK);
    char *big = malloc(16384 + 1);
    memset(big, 'l', 16384);
    big[16384] = '\0';
    int rc = SPBE_OK;
    uint32_t i = 0;
    for (; i < 1000 && rc == SPBE_OK; i++) {
        uint8_t id[16];
        store_append_item it = item("lift.t", "bkn/siasn", id, i, big);
        rc = store_append(f->s, &it, 1, 0);
    }
    assert_int_equal(rc, SPBE_STORAGE_FULL);
    assert_true(store_full(f->s));
    uint64_t used, limit;
    store_usage(f->s, &used, &limit);
    assert_int_equal(limit, 2 << 20);
    assert_true(used >= limit);
    /* consumer bookkeeping still commits while appends are refused */
    store_op op = {.kind = STORE_OP_CURSOR_PUT, .consumer = "c", .topic_id = 1, .sequence = 2};
    int ops_rc = SPBE_INTERNAL;
    uint8_t id[16];
    store_append_item it = item("lift.t", "bkn/siasn", id, 5000, "x");
    assert_int_equal(store_apply(f->s, &it, 1, &op, 1, 0, &ops_rc), SPBE_STORAGE_FULL);
    assert_int_equal(ops_rc, SPBE_OK);
    /* retention frees room: appends go on by themselves */
    store_retention keep = {.pattern = "lift.>", .max_messages = 10};
    size_t removed;
    assert_int_equal(store_retain(f->s, &keep, 1, wire_now_ns(), 100000, &removed), SPBE_OK);
    assert_true(removed > 0);
    assert_false(store_full(f->s));
    it = item("lift.t", "bkn/siasn", id, 5001, big);
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.sequence, i); /* the next after the last stored */
    free(big);
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

/* Writes key -> value into the named database of the LMDB environment in dir, behind
 * the store's back (the store closed). */
static void
raw_put(const char *dir, const char *db, const void *key, size_t key_len, const void *val,
        size_t val_len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 32);
    mdb_env_set_mapsize(env, 64u << 20);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
    MDB_val k = {key_len, (void *)key}, v = {val_len, (void *)val};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static int
count_topic(const store_topic_info *t, void *arg)
{
    (void)t;
    (*(int *)arg)++;
    return 0;
}

/* Data that is not the store's, or damaged, is refused with a reason and nothing worse. */
static void
test_foreign_or_damaged_data_is_refused_with_a_reason(void **state)
{
    fixture *f = *state;
    char err[256], dir[96];
    store *s = NULL;
    store_options ro = {.read_only = 1};

    /* an LMDB environment that is not a store */
    snprintf(dir, sizeof dir, "%s/foreign", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    raw_put(dir, "something", "k", 1, "v", 1);
    assert_int_not_equal(store_open(dir, &ro, &s, err, sizeof err), SPBE_OK);
    assert_non_null(strstr(err, "not an spbe data directory"));
    assert_null(s);
    /* nothing at all, read-only */
    snprintf(dir, sizeof dir, "%s/absent", f->dir);
    assert_int_not_equal(store_open(dir, &ro, &s, err, sizeof err), SPBE_OK);

    /* a store of another data format */
    uint8_t id[16];
    store_append_item it = item("ikn.a", "bkn/siasn", id, 1, "pesan");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    store_close(&f->s);
    uint8_t format[4] = {99, 0, 0, 0};
    raw_put(f->dir, "meta", "format", 6, format, sizeof format);
    assert_int_not_equal(store_open(f->dir, NULL, &s, err, sizeof err), SPBE_OK);
    assert_non_null(strstr(err, "data format 99"));
    format[0] = 2; /* back to this one */
    raw_put(f->dir, "meta", "format", 6, format, sizeof format);

    /* a damaged message record and a damaged topic record */
    uint8_t key[12] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}; /* topic 1, sequence 1 */
    uint8_t rec[24] = {7};                                  /* an unknown record version */
    raw_put(f->dir, "messages", key, sizeof key, rec, sizeof rec);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_message m;
    assert_int_not_equal(store_message_get(r, 1, 1, &m), SPBE_OK);
    store_reader_end(&r);
    assert_int_not_equal(store_check(f->s, err, sizeof err), SPBE_OK);
    store_close(&f->s);
    raw_put(f->dir, "topics", "ikn.a", 5, "short", 5);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_topic_info t;
    assert_int_not_equal(store_topic_get(r, "ikn.a", &t), SPBE_OK);
    int n = 0;
    assert_int_not_equal(store_topic_each(r, count_topic, &n), SPBE_OK);
    store_reader_end(&r);
    assert_int_not_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

int
main(void)
{
    if (wire_init() != SPBE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_assigns_sequence_one_and_reads_back_exact_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_assigns_sequences_without_gaps_per_topic, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_are_stored_once_within_and_across_groups,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_window_and_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_from_a_sequence_with_a_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_members_by_name_and_by_curve_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_and_read_only_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_grows_as_needed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_by_count_bytes_and_age_in_bounded_steps,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_or_damaged_data_is_refused_with_a_reason,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_consumer_state_commits_with_messages_and_goes_with_its_consumer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_limit_lifts_when_retention_frees_room, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_storage_limit_refuses_with_storage_full_and_keeps_data,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
