/* test_threads.c - the broker's helper threads: the writer (group commits, retention in
 * bounded steps, dedup expiry when idle) and the work pool (fork/join over workers). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <zmq.h>

#include "log.h"
#include "spbe/errors.h"
#include "store.h"
#include "wire.h"
#include "workpool.h"
#include "writer.h"

typedef struct fx {
    char dir[64];
    char log_path[96];
    store *s;
    void *ctx;
    uint32_t next_id;
    int saved_stderr;
} fx;

static int
setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    snprintf(x->dir, sizeof x->dir, "/tmp/spbe-threads-XXXXXX");
    if (!mkdtemp(x->dir))
        return -1;
    char err[256];
    if (store_open(x->dir, NULL, &x->s, err, sizeof err) != SPBE_OK)
        return -1;
    x->ctx = zmq_ctx_new();
    x->saved_stderr = -1;
    *state = x;
    return x->ctx ? 0 : -1;
}

/* The log lines from now on go to a file of the fixture's (restored in teardown). */
static void
capture_log(fx *x)
{
    snprintf(x->log_path, sizeof x->log_path, "%s/log", x->dir);
    fflush(stderr);
    x->saved_stderr = dup(2);
    assert_true(freopen(x->log_path, "w", stderr) != NULL);
    setvbuf(stderr, NULL, _IONBF, 0);
}

static void
release_log(fx *x)
{
    if (x->saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(x->saved_stderr, 2);
    close(x->saved_stderr);
    x->saved_stderr = -1;
}

/* 1 if the captured log has a line containing text. */
static int
logged(fx *x, const char *text)
{
    FILE *f = fopen(x->log_path, "r");
    if (!f)
        return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

static int
teardown(void **state)
{
    fx *x = *state;
    release_log(x);
    log_set_level(LOG_INFO);
    store_close(&x->s);
    zmq_ctx_term(x->ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", x->dir);
    int rc = system(cmd);
    free(x);
    return rc == 0 ? 0 : -1;
}

/* n messages (bytes that need no signature here) to topic, in commits of 100. */
static void
fill(fx *x, const char *topic, uint32_t n)
{
    for (uint32_t i = 0; i < n; i += 100) {
        store_append_item items[100];
        uint8_t ids[100][16];
        uint32_t k = 0;
        for (; k < 100 && i + k < n; k++) {
            memset(ids[k], 0, 16);
            uint32_t id = ++x->next_id;
            memcpy(ids[k], &id, sizeof id);
            items[k] = (store_append_item){.topic = topic,
                                           .sender = "bkn/siasn",
                                           .id = ids[k],
                                           .data = (const uint8_t *)"m",
                                           .len = 1};
        }
        assert_int_equal(store_append(x->s, items, k, 0), SPBE_OK);
    }
}

static uint64_t
messages_of(fx *x, const char *topic)
{
    store_reader *r;
    store_topic_info t = {0};
    assert_int_equal(store_reader_begin(x->s, &r), SPBE_OK);
    store_topic_get(r, topic, &t);
    store_reader_end(&r);
    return t.messages;
}

static void
pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (at most 20 s) for the writer to hand a job back. */
static writer_job *
wait_done(writer *w)
{
    zmq_pollitem_t item = {writer_socket(w), 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 20000), 1);
    return writer_take_done(w);
}

/* Retention deletes in steps of 2000, one right after the other while there is more;
 * jobs go through between; when idle, dedup entries past the window expire. */
static void
test_writer_retains_in_steps_and_expires_dedup_when_idle(void **state)
{
    fx *x = *state;
    fill(x, "ret.t", 2100);
    fill(x, "keep.t", 5);
    store_retention rule = {.pattern = "ret.>", .max_messages = 10};
    capture_log(x);
    log_set_level(LOG_DEBUG);
    writer *w = writer_new(x->ctx, x->s, 50000000 /* 50 ms */, &rule, 1);
    assert_non_null(w);
    assert_null(writer_take_done(w)); /* nothing submitted */

    uint8_t id[16] = {0xaa};
    store_append_item it = {.topic = "job.t",
                            .sender = "bkn/siasn",
                            .id = id,
                            .data = (const uint8_t *)"job",
                            .len = 3,
                            .no_dedup = 1};
    writer_job job = {.items = &it, .count = 1};
    assert_int_equal(writer_submit(w, &job), SPBE_OK);
    assert_ptr_equal(wait_done(w), &job);
    assert_int_equal(job.rc, SPBE_OK);
    assert_int_equal(job.ops_rc, SPBE_OK);
    assert_int_equal(it.code, SPBE_OK);
    assert_int_equal(it.sequence, 1);

    /* a job whose ops cannot apply comes back with the reason, nothing of it stored */
    store_op bad = {.kind = (store_op_kind)99};
    it.id = (const uint8_t *)"another id 16 b";
    writer_job failing = {.items = &it, .count = 1, .ops = &bad, .n_ops = 1};
    assert_int_equal(writer_submit(w, &failing), SPBE_OK);
    assert_ptr_equal(wait_done(w), &failing);
    assert_int_equal(failing.rc, SPBE_INTERNAL);
    assert_int_equal(failing.ops_rc, SPBE_INTERNAL);

    for (int i = 0; i < 400 && !(messages_of(x, "ret.t") == 10 && logged(x, "dedup_expired")); i++)
        pause_ms(50);
    writer_destroy(&w);
    assert_null(w);
    writer_destroy(&w);
    writer_destroy(NULL);
    assert_int_equal(messages_of(x, "ret.t"), 10);
    assert_int_equal(messages_of(x, "keep.t"), 5);
    assert_int_equal(messages_of(x, "job.t"), 1);
    assert_true(logged(x, "event=retention deleted=2000"));
    assert_true(logged(x, "event=retention deleted=90"));
    assert_true(logged(x, "event=dedup_expired entries=2105"));
    assert_true(logged(x, "event=commit_failed messages=1 code=INTERNAL"));
    release_log(x);
    size_t removed = 99;
    assert_int_equal(store_dedup_expire(x->s, wire_now_ns(), 100000, &removed), SPBE_OK);
    assert_int_equal(removed, 0); /* the writer took them all */
    char err[256];
    assert_int_equal(store_check(x->s, err, sizeof err), SPBE_OK);
}

/* Without a dedup window the idle writer keeps the dedup entries. */
static void
test_writer_without_a_window_keeps_dedup_entries(void **state)
{
    fx *x = *state;
    fill(x, "win.t", 30);
    store_retention rule = {.pattern = "other.>", .max_messages = 1};
    writer *w = writer_new(x->ctx, x->s, 0, &rule, 1);
    assert_non_null(w);
    pause_ms(600); /* idle past its 250 ms wake-ups twice */
    writer_destroy(&w);
    size_t removed = 0;
    assert_int_equal(store_dedup_expire(x->s, wire_now_ns(), 100000, &removed), SPBE_OK);
    assert_int_equal(removed, 30);
    assert_int_equal(messages_of(x, "win.t"), 30);
}

/* A writer that cannot get its sockets is not made. */
static void
test_writer_without_sockets_is_not_made(void **state)
{
    fx *x = *state;
    void *one = zmq_ctx_new();
    assert_int_equal(zmq_ctx_set(one, ZMQ_MAX_SOCKETS, 1), 0);
    assert_null(writer_new(one, x->s, 0, NULL, 0)); /* room for one end, not both */
    zmq_ctx_term(one);
    void *closed = zmq_ctx_new();
    assert_int_equal(zmq_ctx_shutdown(closed), 0);
    assert_null(writer_new(closed, x->s, 0, NULL, 0)); /* no socket at all */
    zmq_ctx_term(closed);
}

typedef struct pool_run {
    int slots[1000];
    pthread_t who[1000];
} pool_run;

static void
square(void *ctx, size_t i)
{
    pool_run *r = ctx;
    r->slots[i] = (int)(i * i);
    r->who[i] = pthread_self();
}

/* Items run on the workers and the caller, each exactly once; small runs and runs
 * without a pool stay on the caller. */
static void
test_workpool_runs_every_item_once(void **state)
{
    (void)state;
    workpool *p = workpool_new(3);
    assert_non_null(p);
    assert_int_equal(workpool_width(p), 4);
    assert_int_equal(workpool_width(NULL), 1);
    static pool_run r;
    for (int round = 0; round < 20; round++) {
        memset(&r, 0xff, sizeof r.slots);
        workpool_run(p, square, &r, 1000, 4);
        for (int i = 0; i < 1000; i++)
            assert_int_equal(r.slots[i], i * i);
    }
    memset(&r, 0xff, sizeof r.slots);
    workpool_run(p, square, &r, 3, 4); /* below min_parallel: on the caller */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.slots[i], i * i);
        assert_true(pthread_equal(r.who[i], pthread_self()));
    }
    assert_int_equal(r.slots[3], -1);
    workpool_run(NULL, square, &r, 5, 1);
    assert_true(pthread_equal(r.who[4], pthread_self()));
    r.slots[0] = -1;
    workpool_run(p, square, &r, 0, 0); /* nothing */
    assert_int_equal(r.slots[0], -1);
    workpool_destroy(&p);
    assert_null(p);
    workpool_destroy(&p);
    workpool_destroy(NULL);
    p = workpool_new(0); /* one fewer than the cores, at least one */
    assert_non_null(p);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(workpool_width(p), cores > 1 ? cores : 2);
    workpool_destroy(&p);
}

int
main(void)
{
    if (wire_init() != SPBE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_writer_retains_in_steps_and_expires_dedup_when_idle,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_without_a_window_keeps_dedup_entries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_writer_without_sockets_is_not_made, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workpool_runs_every_item_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
