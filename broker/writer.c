/* writer.c - group commits on a thread of their own, jobs passed as pointers over an
 * inproc PAIR socket (ZeroMQ gives the ordering and the wake-ups). */
#include "writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zmq.h>

#include "log.h"
#include "spbe/errors.h"
#include "wire.h"

#define EXPIRE_IDLE_MS 2000 /* expire dedup entries after this long without work */
#define EXPIRE_BATCH 10000
#define RETAIN_BATCH 2000         /* deletions per transaction: short, publishes go between */
#define RETAIN_EVERY_NS 250000000 /* look for work at most this often while busy */

struct writer {
    void *ctx;
    void *io_side;     /* the I/O thread's end */
    void *thread_side; /* the writer thread's end */
    store *store;
    int64_t window_ns;
    const store_retention *rules;
    size_t n_rules;
    pthread_t thread;
    int started;
    char endpoint[64];
};

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Retention: one bounded transaction; returns 1 if there may be more to delete. */
static int
retain_some(writer *w)
{
    if (!w->n_rules)
        return 0;
    size_t removed = 0;
    store_retain(w->store, w->rules, w->n_rules, wire_now_ns(), RETAIN_BATCH, &removed);
    if (removed)
        log_event(LOG_DEBUG, "retention", "deleted=%zu", removed);
    return removed == RETAIN_BATCH;
}

static void *
writer_main(void *arg)
{
    writer *w = arg;
    uint64_t next_retain = 0;
    int retain_more = 0;
    for (;;) {
        uint64_t now = mono_ns();
        if (w->n_rules && (retain_more || now >= next_retain)) {
            retain_more = retain_some(w);
            next_retain = now + RETAIN_EVERY_NS;
        }
        zmq_pollitem_t item = {w->thread_side, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, retain_more ? 0 : w->n_rules ? 250 : EXPIRE_IDLE_MS);
        if (n == 0 && retain_more)
            continue;
        if (n == 0) {
            if (w->window_ns > 0) {
                size_t removed = 0;
                store_dedup_expire(w->store, wire_now_ns() - w->window_ns, EXPIRE_BATCH, &removed);
                if (removed)
                    log_event(LOG_DEBUG, "dedup_expired", "entries=%zu", removed);
            }
            continue;
        }
        writer_job *job = NULL;
        if (n < 0 || zmq_recv(w->thread_side, &job, sizeof job, 0) != sizeof job)
            continue;
        if (!job)
            break; /* stop */
        uint64_t t0 = mono_ns();
        job->rc = store_apply(w->store, job->items, job->count, job->ops, job->n_ops, w->window_ns,
                              &job->ops_rc);
        job->commit_ns = mono_ns() - t0;
        if (job->rc != SPBE_OK)
            log_event(job->rc == SPBE_STORAGE_FULL ? LOG_WARN : LOG_ERROR, "commit_failed",
                      "messages=%zu code=%s", job->count, spbe_error_name(job->rc));
        send_uninterrupted(w->thread_side, &job, sizeof job, 0);
    }
    return NULL;
}

writer *
writer_new(void *zmq_ctx, store *s, int64_t dedup_window_ns, const store_retention *rules,
           size_t n_rules)
{
    writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->rules = rules;
    w->n_rules = n_rules;
    w->ctx = zmq_ctx;
    w->store = s;
    w->window_ns = dedup_window_ns;
    snprintf(w->endpoint, sizeof w->endpoint, "inproc://spbe-writer-%p", (void *)w);
    w->io_side = zmq_socket(zmq_ctx, ZMQ_PAIR);
    w->thread_side = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int hwm = 0; /* jobs are few and bounded by the caller: never drop one */
    if (!w->io_side || !w->thread_side ||
        zmq_setsockopt(w->io_side, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(w->thread_side, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_bind(w->io_side, w->endpoint) || zmq_connect(w->thread_side, w->endpoint) ||
        pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        writer_destroy(&w);
        return NULL;
    }
    w->started = 1;
    return w;
}

void
writer_destroy(writer **wp)
{
    if (!wp || !*wp)
        return;
    writer *w = *wp;
    if (w->started) {
        writer_job *stop = NULL;
        send_uninterrupted(w->io_side, &stop, sizeof stop, 0);
        pthread_join(w->thread, NULL);
    }
    int zero = 0;
    if (w->io_side) {
        zmq_setsockopt(w->io_side, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->io_side);
    }
    if (w->thread_side) {
        zmq_setsockopt(w->thread_side, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->thread_side);
    }
    free(w);
    *wp = NULL;
}

void *
writer_socket(writer *w)
{
    return w->io_side;
}

int
writer_submit(writer *w, writer_job *job)
{
    return send_uninterrupted(w->io_side, &job, sizeof job, 0) == sizeof job ? SPBE_OK
                                                                             : SPBE_INTERNAL;
}

writer_job *
writer_take_done(writer *w)
{
    writer_job *job = NULL;
    if (zmq_recv(w->io_side, &job, sizeof job, ZMQ_DONTWAIT) != sizeof job)
        return NULL;
    return job;
}
