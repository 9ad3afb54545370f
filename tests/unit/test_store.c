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
#include <sys/wait.h>
#include <unistd.h>

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
    format[0] = 3; /* back to this one */
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

/* ------------------------------------------------------------ damage written behind the
 * store's back: raw LMDB on the same environment, the store closed meanwhile */

static void
raw_open(const char *dir, MDB_env **env, MDB_txn **txn)
{
    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 32);
    mdb_env_set_mapsize(*env, 64u << 20);
    assert_int_equal(mdb_env_open(*env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, txn), 0);
}

static void
raw_close(MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Deletes key from the named database (it must be there). */
static void
raw_del(const char *dir, const char *db, const void *key, size_t key_len)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    raw_open(dir, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {key_len, (void *)key};
    assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    raw_close(env, txn);
}

/* Copies the value of key into out (cap bytes); returns its length. */
static size_t
raw_get(const char *dir, const char *db, const void *key, size_t key_len, void *out, size_t cap)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    raw_open(dir, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {key_len, (void *)key}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_true(v.mv_size <= cap);
    memcpy(out, v.mv_data, v.mv_size);
    raw_close(env, txn);
    return v.mv_size;
}

/* Creates the named databases (empty) of a bare environment. */
static void
raw_create(const char *dir, const char *const *dbs, size_t n)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    raw_open(dir, &env, &txn);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(mdb_dbi_open(txn, dbs[i], MDB_CREATE, &dbi), 0);
    raw_close(env, txn);
}

static void
put_le64_at(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static void
message_key_of(uint8_t key[12], uint32_t topic_id, uint64_t sequence)
{
    for (int i = 3; i >= 0; i--, topic_id >>= 8)
        key[i] = (uint8_t)topic_id;
    for (int i = 11; i >= 4; i--, sequence >>= 8)
        key[i] = (uint8_t)sequence;
}

static void
reopen(fixture *f)
{
    char err[256];
    store_close(&f->s);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
}

/* store_check finds a problem and names it exactly. */
static void
check_says(fixture *f, const char *want)
{
    char err[256] = "";
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_INTERNAL);
    assert_string_equal(err, want);
}

static void
check_clean(fixture *f)
{
    char err[256] = "";
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
}

/* One message read through the store: its length, or -1 with the code in *code. */
static long
message_len(fixture *f, uint32_t topic_id, uint64_t sequence, int *code)
{
    store_reader *r;
    store_message m;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    *code = store_message_get(r, topic_id, sequence, &m);
    long len = *code == SPBE_OK ? (long)m.len : -1;
    store_reader_end(&r);
    return len;
}

/* Each kind of damage to a topic log is found by store_check, named exactly, while the
 * good topic beside it still reads. */
static void
test_check_names_each_damage_to_a_topic_log(void **state)
{
    fixture *f = *state;
    fill(f, "ck.a", 3, 4); /* id 1: sequences 1..3, 12 bytes */
    fill(f, "ck.b", 2, 4); /* id 2 */
    check_clean(f);
    store_close(&f->s);
    uint8_t rec[52], bad[52], msg2[64], key2[12], id1[4] = {0, 0, 0, 1};
    assert_int_equal(raw_get(f->dir, "topics", "ck.a", 4, rec, sizeof rec), 52);
    message_key_of(key2, 1, 2);
    size_t msg2_len = raw_get(f->dir, "messages", key2, 12, msg2, sizeof msg2);
    assert_int_equal(msg2_len, 16 + 4);

    /* the topic record disagrees with its log: count, bytes, last sequence */
    memcpy(bad, rec, 52);
    put_le64_at(bad + 20, 5);
    raw_put(f->dir, "topics", "ck.a", 4, bad, 52);
    reopen(f);
    check_says(f, "topic ck.a: record says 5 messages/12 bytes/last 3, log has 3/12/3");
    store_close(&f->s);
    memcpy(bad, rec, 52);
    put_le64_at(bad + 28, 13);
    raw_put(f->dir, "topics", "ck.a", 4, bad, 52);
    reopen(f);
    check_says(f, "topic ck.a: record says 3 messages/13 bytes/last 3, log has 3/12/3");
    store_close(&f->s);
    memcpy(bad, rec, 52);
    put_le64_at(bad + 12, 4);
    raw_put(f->dir, "topics", "ck.a", 4, bad, 52);
    reopen(f);
    check_says(f, "topic ck.a: record says 3 messages/12 bytes/last 4, log has 3/12/3");
    int code;
    assert_int_equal(message_len(f, 2, 1, &code), 4); /* ck.b reads on */
    store_close(&f->s);
    raw_put(f->dir, "topics", "ck.a", 4, rec, 52);

    /* the id maps to another topic, or to none */
    raw_put(f->dir, "topic_ids", id1, 4, "ck.b", 4);
    reopen(f);
    check_says(f, "topic ck.a: id 1 does not map back");
    store_close(&f->s);
    raw_del(f->dir, "topic_ids", id1, 4);
    reopen(f);
    check_says(f, "topic ck.a: id 1 does not map back");
    store_reader *r;
    store_topic_info t;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_topic_get_by_id(r, 1, &t), SPBE_NOT_FOUND);
    assert_int_equal(store_topic_get(r, "ck.a", &t), SPBE_OK); /* by name it is there */
    assert_int_equal(t.messages, 3);
    store_reader_end(&r);
    store_close(&f->s);
    raw_put(f->dir, "topic_ids", id1, 4, "ck.a", 4);

    /* a gap in the log, then a record too short to be one */
    raw_del(f->dir, "messages", key2, 12);
    reopen(f);
    check_says(f, "topic ck.a: sequence 3 where 2 was expected");
    store_close(&f->s);
    raw_put(f->dir, "messages", key2, 12, msg2, 10);
    reopen(f);
    check_says(f, "topic ck.a: malformed record at sequence 2");
    assert_int_equal(message_len(f, 1, 2, &code), -1);
    assert_int_equal(code, SPBE_INTERNAL);
    assert_int_equal(message_len(f, 1, 3, &code), 4);
    store_close(&f->s);
    raw_put(f->dir, "messages", key2, 12, msg2, msg2_len);
    reopen(f);
    check_clean(f);

    /* a message of a topic no record knows */
    store_close(&f->s);
    uint8_t orphan[12];
    message_key_of(orphan, 77, 1);
    raw_put(f->dir, "messages", orphan, 12, msg2, msg2_len);
    reopen(f);
    check_says(f, "6 messages stored, topic records account for 5");
    store_close(&f->s);
    raw_del(f->dir, "messages", orphan, 12);
    /* a key one byte too long among a topic's messages */
    uint8_t longer[13];
    message_key_of(longer, 1, UINT64_MAX);
    longer[12] = 0;
    raw_put(f->dir, "messages", longer, 13, msg2, msg2_len);
    reopen(f);
    check_says(f, "6 messages stored, topic records account for 5");
    store_close(&f->s);
    raw_del(f->dir, "messages", longer, 13);

    /* a topic record of the wrong size: named, and every read of topics says so */
    raw_put(f->dir, "topics", "ck.b", 4, rec, 51);
    reopen(f);
    check_says(f, "malformed topic record 'ck.b' (51 bytes)");
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_topic_get(r, "ck.b", &t), SPBE_INTERNAL);
    assert_int_equal(store_topic_get_by_id(r, 2, &t), SPBE_INTERNAL);
    assert_int_equal(store_topic_get(r, "ck.a", &t), SPBE_OK);
    store_reader_end(&r);
    assert_int_equal(message_len(f, 1, 3, &code), 4);
    /* appends to it are refused, appends elsewhere go on */
    uint8_t id[16];
    store_append_item it = item("ck.b", "bkn/siasn", id, 4242, "x");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_INTERNAL);
    assert_int_equal(it.code, SPBE_INTERNAL);
    it = item("ck.a", "bkn/siasn", id, 4243, "x");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.sequence, 4);
    store_close(&f->s);
    raw_put(f->dir, "topics", "ck.b", 4, rec, 52); /* ck.a's record under ck.b's name */
    reopen(f);
    check_says(f, "topic ck.b: id 1 does not map back");
}

/* Environments that are not a store of this version, or that cannot be one, are refused
 * with a reason; a store from before consumers opens read-only. */
static void
test_open_refuses_what_is_not_a_store_of_this_format(void **state)
{
    fixture *f = *state;
    char err[256], dir[128], want[256];
    store *s = NULL;
    store_options ro = {.read_only = 1};

    /* a name the store needs is taken by a plain record */
    snprintf(dir, sizeof dir, "%s/taken", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    raw_put(dir, NULL, "topics", 6, "x", 1);
    assert_int_equal(store_open(dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    assert_null(s);
    assert_non_null(strstr(err, "cannot open: database 'topics': MDB_INCOMPATIBLE"));

    /* a format record of the wrong size */
    uint8_t three[3] = {3, 0, 0};
    fill(f, "fmt.t", 2, 3);
    store_close(&f->s);
    raw_put(f->dir, "meta", "format", 6, three, 3);
    assert_int_equal(store_open(f->dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    assert_string_equal(err, "data format 0 is not the supported 3");
    /* no format record: not a store to read; a read-write open makes it one again */
    raw_del(f->dir, "meta", "format", 6);
    assert_int_equal(store_open(f->dir, &ro, &s, err, sizeof err), SPBE_NOT_FOUND);
    assert_string_equal(err, "not an spbe data directory (no format record)");
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    assert_int_equal(topic_info(f, "fmt.t").messages, 2);
    check_clean(f);

    /* written before consumers existed: opens read-only, with no consumers to read */
    snprintf(dir, sizeof dir, "%s/old", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    const char *old_dbs[] = {"meta",  "topics",     "topic_ids", "messages",
                             "dedup", "dedup_time", "members",   "member_keys"};
    raw_create(dir, old_dbs, 8);
    uint8_t format[4] = {2, 0, 0, 0};
    raw_put(dir, "meta", "format", 6, format, 4);
    assert_int_equal(store_open(dir, &ro, &s, err, sizeof err), SPBE_OK);
    store_reader *r;
    assert_int_equal(store_reader_begin(s, &r), SPBE_OK);
    books b = {0};
    assert_int_equal(store_consumer_each(r, seen_consumer, &b), SPBE_OK);
    assert_int_equal(store_cursor_each(r, "portal", seen_cursor, &b), SPBE_OK);
    assert_int_equal(store_pending_each(r, "portal", seen_pending, &b), SPBE_OK);
    assert_int_equal(b.consumers + b.cursors + b.pending, 0);
    store_topic_info t;
    assert_int_equal(store_topic_get(r, "fmt.t", &t), SPBE_NOT_FOUND);
    store_reader_end(&r);
    store_close(&s);
    /* with consumers but before the audit log: not a store of this format */
    const char *consumer_dbs[] = {"consumers", "consumer_topics", "consumer_pending"};
    raw_create(dir, consumer_dbs, 3);
    assert_int_equal(store_open(dir, &ro, &s, err, sizeof err), SPBE_NOT_FOUND);
    assert_non_null(strstr(err, "not an spbe data directory: database 'audit_leaves'"));
    assert_null(s);

    /* the directory cannot be made, or is a file */
    snprintf(dir, sizeof dir, "%s/no/such", f->dir);
    assert_int_equal(store_open(dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    snprintf(want, sizeof want, "cannot create %s: No such file or directory", dir);
    assert_string_equal(err, want);
    snprintf(dir, sizeof dir, "%s/file", f->dir);
    FILE *fp = fopen(dir, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(store_open(dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    snprintf(want, sizeof want, "cannot open store in %s: Not a directory", dir);
    assert_string_equal(err, want);
    assert_null(s);
}

/* The audit log's tree is read when the store opens: a damaged or missing node stops
 * the open with the reason. */
static void
test_open_refuses_a_damaged_audit_tree(void **state)
{
    fixture *f = *state;
    char err[256];
    store *s = NULL;
    fill(f, "tree.t", 1, 5); /* one leaf: the root is node (0, 0) */
    uint64_t size;
    uint8_t root[32], node[32], node_key[9] = {0};
    store_tree_head(f->s, &size, root);
    assert_int_equal(size, 1);
    store_close(&f->s);
    assert_int_equal(raw_get(f->dir, "audit_tree", node_key, 9, node, sizeof node), 32);
    assert_memory_equal(node, root, 32);
    raw_put(f->dir, "audit_tree", node_key, 9, node, 31);
    assert_int_equal(store_open(f->dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    assert_string_equal(err, "the audit log's tree cannot be read: MDB_CORRUPTED: Located page was "
                             "wrong type");
    raw_del(f->dir, "audit_tree", node_key, 9);
    assert_int_equal(store_open(f->dir, NULL, &s, err, sizeof err), SPBE_INTERNAL);
    assert_string_equal(err, "the audit log's tree cannot be read: MDB_NOTFOUND: No matching "
                             "key/data pair found");
    assert_null(s);
    raw_put(f->dir, "audit_tree", node_key, 9, node, 32);
    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK);
    store_tree_head(f->s, &size, node);
    assert_int_equal(size, 1);
    assert_memory_equal(node, root, 32);
}

static int count_node(unsigned level, uint64_t index, const uint8_t *v, size_t len, void *arg);

/* A store of format 2 (the tree's nodes keyed by level, then index) is read as it is by a
 * read-only open and converted by a writable one: the same root either way, appends go on,
 * and the old database is gone. */
static void
test_a_format_2_tree_is_read_and_converted(void **state)
{
    fixture *f = *state;
    char err[256];
    fill(f, "conv.t", 37, 5);
    uint64_t size, size2;
    uint8_t root[32], root2[32];
    store_tree_head(f->s, &size, root);
    assert_int_equal(size, 37);
    store_close(&f->s);
    /* rewrite the tree as format 2 kept it */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi tree, nodes, meta;
    raw_open(f->dir, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, "audit_tree", 0, &tree), 0);
    assert_int_equal(mdb_dbi_open(txn, "audit_nodes", MDB_CREATE, &nodes), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_cursor *cur;
    assert_int_equal(mdb_cursor_open(txn, tree, &cur), 0);
    MDB_val k, v;
    int n = 0;
    while (mdb_cursor_get(cur, &k, &v, n ? MDB_NEXT : MDB_FIRST) == 0) {
        const uint8_t *nk = k.mv_data;
        uint64_t last = 0;
        for (int i = 0; i < 8; i++)
            last = last << 8 | nk[i];
        unsigned level = nk[8];
        uint64_t index = ((last + 1) >> level) - 1;
        uint8_t ok[9] = {(uint8_t)level};
        for (int i = 0; i < 8; i++)
            ok[1 + i] = (uint8_t)(index >> (56 - 8 * i));
        MDB_val okv = {sizeof ok, ok};
        assert_int_equal(mdb_put(txn, nodes, &okv, &v, 0), 0);
        n++;
    }
    mdb_cursor_close(cur);
    assert_int_equal(n, 37 + 34); /* one a leaf, one a perfect subtree: 37 - popcount(37) */
    assert_int_equal(mdb_drop(txn, tree, 1), 0);
    uint8_t two[4] = {2, 0, 0, 0};
    MDB_val fk = {6, "format"}, fv = {4, two};
    assert_int_equal(mdb_put(txn, meta, &fk, &fv, 0), 0);
    raw_close(env, txn);

    store_options ro = {.read_only = 1};
    store *s = NULL;
    assert_int_equal(store_open(f->dir, &ro, &s, err, sizeof err), SPBE_OK);
    store_tree_head(s, &size2, root2);
    assert_int_equal(size2, 37);
    assert_memory_equal(root2, root, 32);
    store_reader *r;
    assert_int_equal(store_reader_begin(s, &r), SPBE_OK);
    int count = 0;
    assert_int_equal(store_node_each(r, count_node, &count), SPBE_OK);
    assert_int_equal(count, 71);
    store_reader_end(&r);
    store_close(&s);

    assert_int_equal(store_open(f->dir, NULL, &f->s, err, sizeof err), SPBE_OK); /* converts */
    store_tree_head(f->s, &size2, root2);
    assert_memory_equal(root2, root, 32);
    fill(f, "conv.t", 3, 5);
    reopen(f);
    store_tree_head(f->s, &size2, root2);
    assert_int_equal(size2, 40);
    uint8_t format[4];
    assert_int_equal(raw_get(f->dir, "meta", "format", 6, format, sizeof format), 4);
    assert_int_equal(format[0], 3);
    raw_open(f->dir, &env, &txn);
    assert_int_equal(mdb_dbi_open(txn, "audit_nodes", 0, &nodes), MDB_NOTFOUND);
    raw_close(env, txn);
}

static int
stop_at_first_consumer(const Spbe__V1__ConsumerInfo *c, void *arg)
{
    (void)c;
    (*(int *)arg)++;
    return 1;
}

static int
stop_at_first_cursor(uint32_t topic_id, uint64_t next, void *arg)
{
    (void)topic_id;
    (void)next;
    (*(int *)arg)++;
    return 1;
}

static int
count_consumers(const Spbe__V1__ConsumerInfo *c, void *arg)
{
    (void)c;
    (*(int *)arg)++;
    return 0;
}

static size_t
consumer_record(const char *name, const char *owner, int with_config, uint8_t *out)
{
    Spbe__V1__ConsumerConfig cfg = SPBE__V1__CONSUMER_CONFIG__INIT;
    cfg.name = (char *)name;
    cfg.pattern = "ikn.>";
    Spbe__V1__ConsumerInfo info = SPBE__V1__CONSUMER_INFO__INIT;
    info.config = with_config ? &cfg : NULL;
    info.owner = (char *)owner;
    return spbe__v1__consumer_info__pack(&info, out);
}

/* Damaged consumer records and cursors: every read of them says INTERNAL, the records
 * before the damage are passed on first, other consumers' entries are left alone. */
static void
test_damaged_consumer_records_read_as_internal(void **state)
{
    fixture *f = *state;
    uint8_t alpha[128], beta[128], bare[128];
    size_t alpha_len = consumer_record("alpha", "bkn/siasn", 1, alpha);
    size_t beta_len = consumer_record("beta", "bkn/siasn", 1, beta);
    size_t bare_len = consumer_record("gamma", "bkn/siasn", 0, bare);
    store_op ops[] = {
        {.kind = STORE_OP_CONSUMER_PUT,
         .consumer = "alpha",
         .record = alpha,
         .record_len = alpha_len},
        {.kind = STORE_OP_CONSUMER_PUT, .consumer = "beta", .record = beta, .record_len = beta_len},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "portal", .topic_id = 1, .sequence = 4},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "portal", .topic_id = 2, .sequence = 9},
        {.kind = STORE_OP_CURSOR_PUT, .consumer = "portalx", .topic_id = 1, .sequence = 7},
        {.kind = STORE_OP_PENDING_PUT, .consumer = "portalx", .topic_id = 1, .sequence = 6},
        {.kind = STORE_OP_CONSUMER_DEL, .consumer = "nobody"}, /* none to delete: fine */
    };
    int ops_rc = SPBE_INTERNAL;
    assert_int_equal(store_apply(f->s, NULL, 0, ops, 7, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    int n = 0;
    assert_int_equal(store_consumer_each(r, stop_at_first_consumer, &n), SPBE_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(store_cursor_each(r, "portal", stop_at_first_cursor, &n), SPBE_OK);
    assert_int_equal(n, 1);
    books b = {0};
    assert_int_equal(store_cursor_each(r, "portal", seen_cursor, &b), SPBE_OK);
    assert_int_equal(b.cursors, 2); /* not portalx's */
    assert_int_equal(b.last_cursor, 9);
    store_reader_end(&r);

    /* deleting portal leaves portalx's cursor and pending entry */
    store_op del = {.kind = STORE_OP_CONSUMER_DEL, .consumer = "portal"};
    assert_int_equal(store_apply(f->s, NULL, 0, &del, 1, 0, &ops_rc), SPBE_OK);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    memset(&b, 0, sizeof b);
    assert_int_equal(store_cursor_each(r, "portal", seen_cursor, &b), SPBE_OK);
    assert_int_equal(b.cursors, 0);
    assert_int_equal(store_cursor_each(r, "portalx", seen_cursor, &b), SPBE_OK);
    assert_int_equal(store_pending_each(r, "portalx", seen_pending, &b), SPBE_OK);
    assert_int_equal(b.cursors, 1);
    assert_int_equal(b.last_cursor, 7);
    assert_int_equal(b.pending, 1);
    store_reader_end(&r);

    /* a cursor value of the wrong size, a key that is no cursor at all */
    store_close(&f->s);
    uint8_t ck[12] = {'p', 'o', 'r', 't', 'a', 'l', 'x', 0, 0, 0, 0, 2};
    raw_put(f->dir, "consumer_topics", ck, 12, "1234567", 7);
    raw_put(f->dir, "consumer_topics", "q", 1, "12345678", 8);
    /* a pending key of the wrong length after a good one */
    uint8_t pk[19] = {'p', 'o', 'r', 't', 'a', 'l', 'x', 0, 0, 0, 0, 1};
    memset(pk + 12, 0xff, 7);
    uint8_t pv[16] = {0};
    raw_put(f->dir, "consumer_pending", pk, 19, pv, 16);
    /* a record without its config, one that does not decode */
    raw_put(f->dir, "consumers", "gamma", 5, bare, bare_len);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    memset(&b, 0, sizeof b);
    assert_int_equal(store_cursor_each(r, "portalx", seen_cursor, &b), SPBE_INTERNAL);
    assert_int_equal(b.cursors, 1); /* the good one before it */
    assert_int_equal(store_cursor_each(r, "pz", seen_cursor, &b), SPBE_OK);
    assert_int_equal(b.cursors, 1);
    assert_int_equal(store_pending_each(r, "portalx", seen_pending, &b), SPBE_INTERNAL);
    assert_int_equal(b.pending, 1);
    assert_int_equal(b.p.sequence, 6);
    n = 0;
    assert_int_equal(store_consumer_each(r, count_consumers, &n), SPBE_INTERNAL);
    assert_int_equal(n, 2); /* alpha and beta */
    store_reader_end(&r);
    store_close(&f->s);
    uint8_t garbage[2] = {0x0a, 0x50}; /* a field of 80 bytes, none there */
    raw_put(f->dir, "consumers", "gamma", 5, garbage, 2);
    raw_put(f->dir, "consumers", "aaa", 3, garbage, 2);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    n = 0;
    assert_int_equal(store_consumer_each(r, count_consumers, &n), SPBE_INTERNAL);
    assert_int_equal(n, 0);
    store_reader_end(&r);
}

/* Members: keys that cannot be one, records that do not decode, keys replaced. */
static void
test_members_damaged_replaced_and_refused(void **state)
{
    fixture *f = *state;
    identity a, a2;
    identity_generate("bkn/siasn", &a);
    identity_generate("bkn/siasn", &a2);
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = "bkn/siasn";
    uint8_t zero[32] = {0}; /* a point of small order: no X25519 key */
    m.public_key.data = zero;
    m.public_key.len = 32;
    assert_int_equal(store_member_put(f->s, &m), SPBE_BAD_REQUEST);
    m.public_key.data = a.public_key;
    assert_int_equal(store_member_put(f->s, &m), SPBE_OK);
    assert_int_equal(store_member_put(f->s, &m), SPBE_OK); /* the same key again */
    uint8_t curve_a[32], curve_a2[32];
    wire_curve_public(a.public_key, curve_a);
    wire_curve_public(a2.public_key, curve_a2);
    store_reader *r;
    char name[65];
    Spbe__V1__Member *back;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_member_by_curve_key(r, curve_a, name, sizeof name), SPBE_OK);
    assert_int_equal(store_member_by_curve_key(r, curve_a, name, 4), SPBE_INTERNAL); /* no room */
    assert_int_equal(store_member_get(r, "", &back), SPBE_NOT_FOUND);
    assert_null(back);
    store_reader_end(&r);
    /* a new key: the old one names nobody any more */
    m.public_key.data = a2.public_key;
    assert_int_equal(store_member_put(f->s, &m), SPBE_OK);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_member_by_curve_key(r, curve_a, name, sizeof name), SPBE_NOT_FOUND);
    assert_int_equal(store_member_by_curve_key(r, curve_a2, name, sizeof name), SPBE_OK);
    assert_string_equal(name, "bkn/siasn");
    store_reader_end(&r);

    /* a record that does not decode */
    store_close(&f->s);
    uint8_t garbage[2] = {0x0a, 0x50};
    raw_put(f->dir, "members", "bkn/siasn", 9, garbage, 2);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_member_get(r, "bkn/siasn", &back), SPBE_INTERNAL);
    assert_null(back);
    int n = 0;
    assert_int_equal(store_member_each(r, count_member, &n), SPBE_INTERNAL);
    assert_int_equal(n, 0);
    store_reader_end(&r);
    /* a put over it repairs it */
    m.public_key.data = a.public_key;
    assert_int_equal(store_member_put(f->s, &m), SPBE_OK);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_member_get(r, "bkn/siasn", &back), SPBE_OK);
    assert_memory_equal(back->public_key.data, a.public_key, 32);
    spbe__v1__member__free_unpacked(back, NULL);
    store_reader_end(&r);

    /* a name too long for its audit leaf: nothing of it is stored */
    char long_name[481];
    memset(long_name, 'n', 480);
    long_name[480] = '\0';
    m.name = long_name;
    uint64_t before, after;
    uint8_t root[32];
    store_tree_head(f->s, &before, root);
    assert_int_equal(store_member_put(f->s, &m), SPBE_INTERNAL);
    store_tree_head(f->s, &after, root);
    assert_int_equal(after, before);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_member_get(r, long_name, &back), SPBE_NOT_FOUND);
    store_reader_end(&r);
}

static int
count_u64(uint64_t k, const uint8_t *v, size_t len, void *arg)
{
    (void)k;
    (void)v;
    (void)len;
    (*(int *)arg)++;
    return 0;
}

static int
count_node(unsigned level, uint64_t index, const uint8_t *v, size_t len, void *arg)
{
    (void)level;
    (void)index;
    (void)v;
    (void)len;
    (*(int *)arg)++;
    return 0;
}

typedef struct receipts {
    int n;
    store_delivery last;
} receipts;

static int
seen_delivery(const store_delivery *d, void *arg)
{
    receipts *rc = arg;
    rc->n++;
    rc->last = *d;
    return 0;
}

/* The audit log read back with keys of the wrong size, delivery receipts with a member
 * name too long or a value too short, heads missing. */
static void
test_damaged_audit_records_read_as_internal(void **state)
{
    fixture *f = *state;
    fill(f, "aud.t", 2, 3); /* topic 1, leaves 0 and 1 */
    store_reader *r;
    uint64_t size;
    const uint8_t *data;
    size_t len;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_head_latest(r, &size, &data, &len), SPBE_NOT_FOUND);
    store_reader_end(&r);
    uint8_t receipt[5] = {1, 2, 3, 4, 5};
    store_op ops[] = {
        {.kind = STORE_OP_HEAD_PUT, .sequence = 2, .record = receipt, .record_len = 3},
        {.kind = STORE_OP_DELIVERY_PUT,
         .consumer = "portal/status",
         .topic_id = 1,
         .sequence = 2,
         .record = receipt,
         .record_len = 5},
    };
    int ops_rc = SPBE_INTERNAL;
    assert_int_equal(store_apply(f->s, NULL, 0, ops, 2, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    /* a receipt of a topic that does not exist is refused */
    store_op lost = ops[1];
    lost.topic_id = 42;
    assert_int_equal(store_apply(f->s, NULL, 0, &lost, 1, 0, &ops_rc), SPBE_NOT_FOUND);
    assert_int_equal(ops_rc, SPBE_NOT_FOUND);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_head_latest(r, &size, &data, &len), SPBE_OK);
    assert_int_equal(size, 2);
    assert_int_equal(len, 3);
    receipts got = {0};
    assert_int_equal(store_delivery_each(r, 1, 0, seen_delivery, &got), SPBE_OK);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.last.member, "portal/status");
    assert_int_equal(got.last.up_to, 2);
    assert_int_equal(got.last.leaf_index, 2); /* after the two messages' leaves */
    assert_int_equal(got.last.len, 5);
    assert_int_equal(store_audit_size(r, &size), SPBE_OK);
    assert_int_equal(size, 3);
    store_reader_end(&r);

    /* keys of the wrong size in each part of the log */
    store_close(&f->s);
    uint8_t k7[7] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint8_t k8[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    raw_put(f->dir, "audit_leaves", k7, 7, "leaf", 4);
    raw_put(f->dir, "audit_tree", k8, 8, k8, 8);
    raw_put(f->dir, "audit_heads", k7, 1, "head", 4);
    /* a receipt under a member name longer than any, one whose value is short */
    uint8_t dk[12 + 70];
    memset(dk, 'm', sizeof dk);
    message_key_of(dk, 1, 5);
    raw_put(f->dir, "audit_deliveries", dk, sizeof dk, "12345678", 8);
    message_key_of(dk, 1, 9);
    raw_put(f->dir, "audit_deliveries", dk, 12 + 6, "1234567", 7);
    uint8_t tail[6] = {0, 0, 0, 1, 0xff, 0xff}; /* topic 1, no room for more */
    raw_put(f->dir, "audit_deliveries", tail, 6, "12345678", 8);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    int n = 0;
    assert_int_equal(store_leaf_each(r, count_u64, &n), SPBE_INTERNAL);
    assert_int_equal(n, 3); /* the good leaves first */
    n = 0;
    assert_int_equal(store_node_each(r, count_node, &n), SPBE_INTERNAL);
    assert_int_equal(n, 4); /* levels 0 (three) and 1 (one) */
    n = 0;
    assert_int_equal(store_head_each(r, count_u64, &n), SPBE_INTERNAL);
    assert_int_equal(n, 1);
    assert_int_equal(store_head_latest(r, &size, &data, &len), SPBE_INTERNAL);
    memset(&got, 0, sizeof got);
    assert_int_equal(store_delivery_each(r, 1, 0, seen_delivery, &got), SPBE_INTERNAL);
    assert_int_equal(got.n, 1); /* the good one at up_to 2 */
    memset(&got, 0, sizeof got);
    assert_int_equal(store_delivery_each(r, 1, 6, seen_delivery, &got), SPBE_INTERNAL);
    assert_int_equal(got.n, 0);
    memset(&got, 0, sizeof got);
    assert_int_equal(store_delivery_each(r, 1, 10, seen_delivery, &got), SPBE_OK);
    assert_int_equal(got.n, 0); /* the short key ends the topic */
    store_reader_end(&r);
    check_clean(f); /* the topic logs are sound */
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    memset(&got, 0, sizeof got);
    assert_int_equal(store_delivery_each(r, 0, 0, seen_delivery, &got), SPBE_OK);
    assert_int_equal(got.n, 0); /* topic 0 has none: the first key is topic 1's */
    store_reader_end(&r);

    /* the recorded size of the log is damaged: it reads as empty, and appends fail
     * rather than write over its leaves */
    store_close(&f->s);
    raw_put(f->dir, "meta", "audit_size", 10, "\3\0\0", 3);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_audit_size(r, &size), SPBE_OK);
    assert_int_equal(size, 0);
    store_reader_end(&r);
    uint8_t id[16];
    store_append_item it = item("aud.t", "bkn/siasn", id, 99, "x");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_INTERNAL);
    assert_int_equal(topic_info(f, "aud.t").messages, 2);
}

/* Reading a topic log past damage: a key of the wrong size ends it, a short record
 * stops the read with INTERNAL after the good messages; time lookups over gaps, empty
 * and unknown topics. */
static void
test_reads_over_damaged_and_trimmed_logs(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 5; i++)
        fill(f, "rd.a", 1, 4); /* id 1, one commit each: five acceptance times */
    fill(f, "rd.b", 3, 4);     /* id 2 */
    store_reader *r;
    store_topic_info t;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    store_message m4;
    assert_int_equal(store_message_get(r, 1, 4, &m4), SPBE_OK);
    int64_t at4 = m4.accepted_ns;
    uint64_t seq;
    assert_int_equal(store_sequence_at(r, 99, 0, &seq), SPBE_NOT_FOUND);
    store_reader_end(&r);

    store_close(&f->s);
    uint8_t key[13], rec[64];
    message_key_of(key, 1, 3);
    size_t rec_len = raw_get(f->dir, "messages", key, 12, rec, sizeof rec);
    raw_del(f->dir, "messages", key, 12);
    message_key_of(key, 2, UINT64_MAX);
    key[12] = 0; /* topic 2, after its every sequence, one byte too long */
    raw_put(f->dir, "messages", key, 13, rec, rec_len);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    /* a gap is taken as at or after any time: a start by time never skips past it */
    assert_int_equal(store_sequence_at(r, 1, at4, &seq), SPBE_OK);
    assert_int_equal(seq, 3);
    seen s = {0};
    uint64_t next;
    assert_int_equal(store_read_from(r, 2, 1, 0, collect, &s, &next), SPBE_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(next, 4);
    store_reader_end(&r);
    check_says(f, "topic rd.a: sequence 4 where 3 was expected");
    store_close(&f->s);
    message_key_of(key, 1, 3);
    raw_put(f->dir, "messages", key, 12, rec, 15); /* a header cut short */
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    memset(&s, 0, sizeof s);
    assert_int_equal(store_read_from(r, 1, 1, 0, collect, &s, &next), SPBE_INTERNAL);
    assert_int_equal(s.n, 2);
    assert_int_equal(next, 3);
    store_reader_end(&r);

    /* trimming stops at the damaged record; what is before it goes */
    store_op trim = {.kind = STORE_OP_TRIM, .topic_id = 1, .sequence = 5};
    int ops_rc = SPBE_INTERNAL;
    assert_int_equal(store_apply(f->s, NULL, 0, &trim, 1, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    t = topic_info(f, "rd.a");
    assert_int_equal(t.first_sequence, 3);
    assert_int_equal(t.messages, 3);
    store_close(&f->s);
    raw_put(f->dir, "messages", key, 12, rec, rec_len); /* repaired */
    message_key_of(key, 2, UINT64_MAX);
    raw_del(f->dir, "messages", key, 13);
    reopen(f);
    check_clean(f);

    /* trimming past the end empties the topic and stops at the next one */
    trim.sequence = 1000;
    assert_int_equal(store_apply(f->s, NULL, 0, &trim, 1, 0, &ops_rc), SPBE_OK);
    t = topic_info(f, "rd.a");
    assert_int_equal(t.messages, 0);
    assert_int_equal(t.first_sequence, 0);
    assert_int_equal(t.first_ns, 0);
    assert_int_equal(t.last_sequence, 5);
    assert_int_equal(topic_info(f, "rd.b").messages, 3);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_sequence_at(r, 1, 0, &seq), SPBE_OK);
    assert_int_equal(seq, 6); /* empty: the next one to come */
    store_reader_end(&r);
    /* a trim of a topic nobody knows does nothing */
    trim.topic_id = 77;
    assert_int_equal(store_apply(f->s, NULL, 0, &trim, 1, 0, &ops_rc), SPBE_OK);
    assert_int_equal(ops_rc, SPBE_OK);
    check_clean(f);
    fill(f, "rd.a", 1, 4);
    t = topic_info(f, "rd.a");
    assert_int_equal(t.first_sequence, 6);
    assert_int_equal(t.messages, 1);
}

/* Topic names and ids that cannot be: lookups say NOT_FOUND or INTERNAL, ops on them
 * fail whole. */
static void
test_names_and_ids_out_of_bounds(void **state)
{
    fixture *f = *state;
    fill(f, "nm.a", 2, 4); /* id 1 */
    store_reader *r;
    store_topic_info t;
    char long_name[300];
    memset(long_name, 'x', 299);
    long_name[299] = '\0';
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_topic_get(r, "", &t), SPBE_NOT_FOUND);
    assert_int_equal(store_topic_get(r, long_name, &t), SPBE_NOT_FOUND);
    store_reader_end(&r);

    /* an id that maps to a name longer than a topic's */
    store_close(&f->s);
    uint8_t id9[4] = {0, 0, 0, 9};
    raw_put(f->dir, "topic_ids", id9, 4, long_name, 256);
    reopen(f);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    assert_int_equal(store_topic_get_by_id(r, 9, &t), SPBE_INTERNAL);
    store_reader_end(&r);
    uint8_t receipt[4] = {1, 2, 3, 4};
    store_op ops[] = {
        {.kind = STORE_OP_TRIM, .topic_id = 9, .sequence = 1},
        {.kind = STORE_OP_DELIVERY_PUT,
         .consumer = "portal/status",
         .topic_id = 9,
         .sequence = 1,
         .record = receipt,
         .record_len = 4},
        {.kind = (store_op_kind)99},
    };
    for (int i = 0; i < 3; i++) {
        int ops_rc = SPBE_OK;
        uint8_t id[16];
        store_append_item it = item("nm.a", "bkn/siasn", id, 500 + i, "x");
        assert_int_equal(store_apply(f->s, &it, 1, &ops[i], 1, 0, &ops_rc), SPBE_INTERNAL);
        assert_int_equal(ops_rc, SPBE_INTERNAL);
        assert_int_equal(it.code, SPBE_INTERNAL); /* nothing of the group stays */
    }
    assert_int_equal(topic_info(f, "nm.a").messages, 2);

    /* a topic record too short behind an id: its trim is refused */
    store_close(&f->s);
    raw_put(f->dir, "topic_ids", id9, 4, "nm.z", 4);
    raw_put(f->dir, "topics", "nm.z", 4, "short", 5);
    /* a topic record whose name is longer than a topic's */
    uint8_t rec[52] = {0};
    raw_put(f->dir, "topics", long_name, 256, rec, 52);
    reopen(f);
    int ops_rc = SPBE_OK;
    assert_int_equal(store_apply(f->s, NULL, 0, &ops[0], 1, 0, &ops_rc), SPBE_INTERNAL);
    assert_int_equal(ops_rc, SPBE_INTERNAL);
    check_says(f, "malformed topic record 'nm.z' (5 bytes)");
    store_close(&f->s);
    raw_del(f->dir, "topics", "nm.z", 4);
    reopen(f);
    char want[128];
    snprintf(want, sizeof want, "malformed topic record '%.64s...' (52 bytes)", long_name);
    check_says(f, want);
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    int n = 0;
    assert_int_equal(store_topic_each(r, count_topic, &n), SPBE_INTERNAL);
    assert_int_equal(n, 1); /* nm.a, then it */
    store_reader_end(&r);
}

static void
dedup_key_of(const char *sender, const uint8_t id[16], uint8_t key[32])
{
    uint8_t h[32]; /* store.c's layout: SHA-256(sender)[0..16) || id */
    wire_hash((const uint8_t *)sender, strlen(sender), h);
    memcpy(key, h, 16);
    memcpy(key + 16, id, 16);
}

/* Dedup with no window, a damaged dedup record, a sender longer than a member name, a
 * damaged topic counter. */
static void
test_dedup_records_and_the_topic_counter_damaged(void **state)
{
    fixture *f = *state;
    uint8_t id[16], dk[32];
    store_append_item it = item("dd.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.sequence, 1);
    it = item("dd.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK); /* no window: seen is seen */
    assert_int_equal(it.code, SPBE_DUPLICATE);
    assert_int_equal(it.sequence, 1);

    store_close(&f->s);
    dedup_key_of("bkn/siasn", id, dk);
    raw_put(f->dir, "dedup", dk, 32, "short", 5);
    reopen(f);
    it = item("dd.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 3600000000000LL), SPBE_OK);
    assert_int_equal(it.code, SPBE_OK); /* an unreadable record proves nothing */
    assert_int_equal(it.sequence, 2);
    it = item("dd.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 3600000000000LL), SPBE_OK);
    assert_int_equal(it.code, SPBE_DUPLICATE); /* the record is whole again */
    assert_int_equal(it.sequence, 2);

    char sender[71];
    memset(sender, 's', 70);
    sender[70] = '\0';
    it = item("dd.t", sender, id, 2, "b");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.code, SPBE_OK);
    it = item("dd.t", sender, id, 2, "b");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.code, SPBE_DUPLICATE);
    assert_int_equal(it.sequence, 3);

    /* the counter of topic ids is damaged: no new topic, the old ones go on */
    store_close(&f->s);
    raw_put(f->dir, "meta", "next_topic", 10, "\1\0\0", 3);
    reopen(f);
    it = item("dd.new", "bkn/siasn", id, 3, "c");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_INTERNAL);
    assert_int_equal(it.code, SPBE_INTERNAL);
    it = item("dd.t", "bkn/siasn", id, 4, "d");
    assert_int_equal(store_append(f->s, &it, 1, 0), SPBE_OK);
    assert_int_equal(it.sequence, 4);
    check_clean(f);
}

/* Dedup expiry: in bounded steps, an entry seen again keeps its newer time, time
 * entries without a dedup entry go too, a key of the wrong size stops it. */
static void
test_dedup_expiry_keeps_what_was_seen_again(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    store_append_item it = item("ex.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 1), SPBE_OK);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    it = item("ex.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 1), SPBE_OK); /* past its 1 ns window */
    assert_int_equal(it.code, SPBE_OK);
    assert_int_equal(it.sequence, 2);
    int64_t second = it.accepted_ns;

    store_close(&f->s);
    uint8_t dangling[40];
    memset(dangling, 0x11, sizeof dangling);
    memset(dangling, 0, 7);
    dangling[7] = 1; /* accepted at 1 ns, no dedup entry of its own */
    raw_put(f->dir, "dedup_time", dangling, 40, "", 0);
    reopen(f);
    size_t removed = 0;
    assert_int_equal(store_dedup_expire(f->s, second, 1, &removed), SPBE_OK);
    assert_int_equal(removed, 1); /* at most one */
    assert_int_equal(store_dedup_expire(f->s, second, 100, &removed), SPBE_OK);
    assert_int_equal(removed, 1); /* the first time of the id */
    assert_int_equal(store_dedup_expire(f->s, second, 100, &removed), SPBE_OK);
    assert_int_equal(removed, 0);
    /* the id was seen again later: still a duplicate of its second copy */
    it = item("ex.t", "bkn/siasn", id, 1, "a");
    assert_int_equal(store_append(f->s, &it, 1, 3600000000000LL), SPBE_OK);
    assert_int_equal(it.code, SPBE_DUPLICATE);
    assert_int_equal(it.sequence, 2);

    /* a time key of the wrong size sorts first and ends the pass */
    store_close(&f->s);
    raw_put(f->dir, "dedup_time", "\0", 1, "", 0);
    reopen(f);
    assert_int_equal(store_dedup_expire(f->s, wire_now_ns() + 3600000000000LL, 100, &removed),
                     SPBE_OK);
    assert_int_equal(removed, 0);
}

/* Retention over many topics in bounded steps, with both a count and a byte rule, an
 * age rule over a whole topic, a damaged record, and nothing to do. */
static void
test_retention_bounded_across_topics_and_stopped_by_damage(void **state)
{
    fixture *f = *state;
    char name[32];
    for (int i = 0; i < 17; i++) {
        snprintf(name, sizeof name, "many.%02d", i);
        fill(f, name, 3, 4);
    }
    fill(f, "both.t", 10, 10);
    fill(f, "age.a", 3, 4);
    fill(f, "age.b", 2, 4);
    store_retention rules[] = {{.pattern = "many.>", .max_messages = 1},
                               {.pattern = "both.t", .max_messages = 4, .max_bytes = 35},
                               {.pattern = "age.a", .max_age_ns = 1}};
    size_t removed;
    assert_int_equal(store_retain(f->s, rules, 1, wire_now_ns(), 5, &removed), SPBE_OK);
    assert_int_equal(removed, 5);
    size_t total = 5;
    do {
        assert_int_equal(store_retain(f->s, rules, 1, wire_now_ns(), 5, &removed), SPBE_OK);
        total += removed;
    } while (removed);
    assert_int_equal(total, 34);
    for (int i = 0; i < 17; i++) {
        snprintf(name, sizeof name, "many.%02d", i);
        store_topic_info t = topic_info(f, name);
        assert_int_equal(t.messages, 1);
        assert_int_equal(t.first_sequence, 3);
    }
    /* nothing more to do: nothing changes */
    assert_int_equal(store_retain(f->s, rules, 1, wire_now_ns(), 100, &removed), SPBE_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(store_retain(f->s, rules, 0, wire_now_ns(), 100, &removed), SPBE_OK);
    assert_int_equal(removed, 0);
    /* the count rule says 6, the byte rule 7: the larger wins */
    assert_int_equal(store_retain(f->s, rules + 1, 1, wire_now_ns(), 100, &removed), SPBE_OK);
    assert_int_equal(removed, 7);
    assert_int_equal(topic_info(f, "both.t").first_sequence, 8);
    /* an age rule takes its whole topic and stops at the next one */
    assert_int_equal(store_retain(f->s, rules + 2, 1, wire_now_ns() + 1000, 100, &removed),
                     SPBE_OK);
    assert_int_equal(removed, 3);
    assert_int_equal(topic_info(f, "age.a").messages, 0);
    assert_int_equal(topic_info(f, "age.b").messages, 2);
    check_clean(f);

    /* a damaged record: deleted up to it, never past it */
    fill(f, "age.a", 3, 4); /* sequences 4..6 */
    uint32_t age_a = topic_info(f, "age.a").id;
    store_close(&f->s);
    uint8_t key[12];
    message_key_of(key, age_a, 5);
    raw_put(f->dir, "messages", key, 12, "short", 5);
    reopen(f);
    assert_int_equal(store_retain(f->s, rules + 2, 1, wire_now_ns() + 1000, 100, &removed),
                     SPBE_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(store_retain(f->s, rules + 2, 1, wire_now_ns() + 1000, 100, &removed),
                     SPBE_OK);
    assert_int_equal(removed, 0);
    store_topic_info t = topic_info(f, "age.a");
    assert_int_equal(t.first_sequence, 5);
    assert_int_equal(t.messages, 2);

    /* read-only: retention deletes nothing */
    store_close(&f->s);
    store_options ro = {.read_only = 1};
    char err[256];
    assert_int_equal(store_open(f->dir, &ro, &f->s, err, sizeof err), SPBE_OK);
    assert_int_equal(store_retain(f->s, rules, 3, wire_now_ns() + 1000, 100, &removed), SPBE_OK);
    assert_int_equal(removed, 0);
}

/* Backups: into a new directory, a readable consistent copy; an existing one is
 * refused as a bad request, an impossible one as internal. */
static void
test_backup_into_new_existing_and_impossible_dirs(void **state)
{
    fixture *f = *state;
    fill(f, "bk.t", 3, 4);
    char err[256], dir[128], want[256];
    assert_int_equal(store_backup(f->s, f->dir, err, sizeof err), SPBE_BAD_REQUEST);
    snprintf(want, sizeof want, "cannot create %s: File exists", f->dir);
    assert_string_equal(err, want);
    snprintf(dir, sizeof dir, "%s/no/such", f->dir);
    assert_int_equal(store_backup(f->s, dir, err, sizeof err), SPBE_INTERNAL);
    snprintf(want, sizeof want, "cannot create %s: No such file or directory", dir);
    assert_string_equal(err, want);
    snprintf(dir, sizeof dir, "%s/copy", f->dir);
    assert_int_equal(store_backup(f->s, dir, err, sizeof err), SPBE_OK);
    store_options ro = {.read_only = 1};
    store *copy;
    assert_int_equal(store_open(dir, &ro, &copy, err, sizeof err), SPBE_OK);
    store_reader *r;
    store_topic_info t;
    assert_int_equal(store_reader_begin(copy, &r), SPBE_OK);
    assert_int_equal(store_topic_get(r, "bk.t", &t), SPBE_OK);
    assert_int_equal(t.messages, 3);
    store_reader_end(&r);
    assert_int_equal(store_check(copy, err, sizeof err), SPBE_OK);
    store_close(&copy);
    store_close(&copy); /* NULL-safe */
    store_close(NULL);
    store_reader_end(NULL);
    char path[160];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

/* Another process grows the map past this one's: the next transaction adopts the
 * new size and reads what it wrote; a later open with a smaller map takes the file's. */
static void
test_a_map_grown_by_another_process_is_adopted(void **state)
{
    fixture *f = *state;
    char err[256];
    store_close(&f->s);
    store_options small = {.initial_map_bytes = 1 << 20};
    assert_int_equal(store_open(f->dir, &small, &f->s, err, sizeof err), SPBE_OK);
    fill(f, "rs.t", 1, 10);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store *c;
        if (store_open(f->dir, &small, &c, err, sizeof err) != SPBE_OK)
            _exit(2);
        /* no cmocka here: a failure must end this process, not run tests in it */
        static char big[10241];
        memset(big, 'c', 10240);
        int bad = 0;
        for (uint32_t i = 0; i < 300 && !bad; i++) { /* about 3 MiB: past the first map */
            uint8_t cid[16];
            store_append_item ci = item("rs.t", "bkn/siasn", cid, 5000 + i, big);
            bad = store_append(c, &ci, 1, 0) != SPBE_OK;
        }
        store_close(&c);
        _exit(bad);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    store_topic_info t = topic_info(f, "rs.t");
    assert_int_equal(t.messages, 301);
    int code;
    assert_int_equal(message_len(f, t.id, 301, &code), 10240);
    fill(f, "rs.t", 1, 10);
    assert_int_equal(topic_info(f, "rs.t").last_sequence, 302);
    check_clean(f);
    /* reopened with a map smaller than the file: the file's size is taken */
    store_close(&f->s);
    assert_int_equal(store_open(f->dir, &small, &f->s, err, sizeof err), SPBE_OK);
    fill(f, "rs.t", 20, 10240);
    assert_int_equal(topic_info(f, "rs.t").messages, 322);
    /* a limit large enough for a reserve of an eighth */
    store_close(&f->s);
    store_options limited = {.max_map_bytes = 64u << 20};
    assert_int_equal(store_open(f->dir, &limited, &f->s, err, sizeof err), SPBE_OK);
    uint64_t used, limit;
    store_usage(f->s, &used, &limit);
    assert_int_equal(limit, 64u << 20);
    assert_true(used > 3u << 20 && used < limit);
    assert_false(store_full(f->s));
}

/* At the top of its map (the limit and its reserve), ops alone and member puts are
 * refused with STORAGE_FULL; what was committed before stays. */
static void
test_ops_and_members_past_the_whole_map_are_storage_full(void **state)
{
    fixture *f = *state;
    store_close(&f->s);
    char err[256];
    store_options limited = {.initial_map_bytes = 1 << 20, .max_map_bytes = 2 << 20};
    assert_int_equal(store_open(f->dir, &limited, &f->s, err, sizeof err), SPBE_OK);
    char *owner = malloc(256 << 10);
    memset(owner, 'o', (256 << 10) - 1);
    owner[(256 << 10) - 1] = '\0';
    uint8_t *record = malloc(300 << 10);
    int rc = SPBE_OK, ops_rc = SPBE_OK, stored = 0;
    for (int i = 0; i < 40 && rc == SPBE_OK; i++) {
        char name[16];
        snprintf(name, sizeof name, "big%02d", i);
        store_op op = {.kind = STORE_OP_CONSUMER_PUT, .record = record};
        snprintf(op.consumer, sizeof op.consumer, "%s", name);
        op.record_len = consumer_record(name, owner, 1, record);
        rc = store_apply(f->s, NULL, 0, &op, 1, 0, &ops_rc);
        assert_int_equal(rc, ops_rc);
        stored += rc == SPBE_OK;
    }
    assert_int_equal(rc, SPBE_STORAGE_FULL);
    assert_true(stored >= 4 && stored < 40);
    identity id;
    identity_generate("bkn/siasn", &id);
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = "bkn/siasn";
    m.public_key.data = id.public_key;
    m.public_key.len = 32;
    int member_rc = SPBE_OK;
    for (int i = 0; i < 2000 && member_rc == SPBE_OK; i++)
        member_rc = store_member_put(f->s, &m); /* leaves of the audit log add up */
    assert_int_equal(member_rc, SPBE_STORAGE_FULL);
    store_reader *r;
    assert_int_equal(store_reader_begin(f->s, &r), SPBE_OK);
    int n = 0;
    assert_int_equal(store_consumer_each(r, count_consumers, &n), SPBE_OK);
    assert_int_equal(n, stored);
    store_reader_end(&r);
    free(owner);
    free(record);
    assert_int_equal(store_check(f->s, err, sizeof err), SPBE_OK);
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
        cmocka_unit_test_setup_teardown(test_check_names_each_damage_to_a_topic_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_what_is_not_a_store_of_this_format, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_refuses_a_damaged_audit_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_format_2_tree_is_read_and_converted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_consumer_records_read_as_internal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_members_damaged_replaced_and_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_audit_records_read_as_internal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reads_over_damaged_and_trimmed_logs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_and_ids_out_of_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_records_and_the_topic_counter_damaged, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dedup_expiry_keeps_what_was_seen_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_retention_bounded_across_topics_and_stopped_by_damage,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_backup_into_new_existing_and_impossible_dirs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_map_grown_by_another_process_is_adopted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_ops_and_members_past_the_whole_map_are_storage_full,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
