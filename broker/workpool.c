/* workpool.c - fork/join over worker threads with an atomic item counter. */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct workpool {
    pthread_t *threads;
    int n_threads;
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    unsigned long generation; /* bumped per run: workers wake once per run */
    int stopping;
    int active; /* workers still inside the current run */
    workpool_fn fn;
    void *ctx;
    size_t count;
    size_t next; /* next item to take (atomic) */
};

static void
take_items(workpool *p)
{
    for (;;) {
        size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->count)
            return;
        p->fn(p->ctx, i);
    }
}

static void *
worker_main(void *arg)
{
    workpool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && p->generation == seen)
            pthread_cond_wait(&p->start, &p->lock);
        if (p->stopping)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        take_items(p);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

workpool *
workpool_new(int threads)
{
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 1 ? (int)cores - 1 : 1;
    }
    workpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->threads = calloc((size_t)threads, sizeof *p->threads);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; p->threads && i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
            break;
        p->n_threads++;
    }
    if (p->n_threads == 0) {
        workpool_destroy(&p);
        return NULL;
    }
    return p;
}

void
workpool_destroy(workpool **pp)
{
    if (!pp || !*pp)
        return;
    workpool *p = *pp;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
    *pp = NULL;
}

void
workpool_run(workpool *p, workpool_fn fn, void *ctx, size_t count, size_t min_parallel)
{
    if (count == 0)
        return;
    if (!p || count < min_parallel) {
        for (size_t i = 0; i < count; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->count = count;
    p->next = 0;
    p->active = p->n_threads;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    take_items(p);
    pthread_mutex_lock(&p->lock);
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

int
workpool_width(const workpool *p)
{
    return p ? p->n_threads + 1 : 1;
}
