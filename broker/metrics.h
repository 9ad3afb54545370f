/*
 * metrics.h - the broker's counters and the snapshots its HTTP endpoint serves.
 *
 * Counters are atomics the I/O thread adds to and any thread reads, so /metrics is exact
 * at any moment. What lives in the I/O thread's own structures (consumers, sessions) is
 * published as a snapshot every few hundred milliseconds, under a lock.
 */
#ifndef SPBE_METRICS_H
#define SPBE_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_CODES 18   /* error codes 0..16, and one for any other */
#define METRICS_BUCKETS 12 /* commit latency histogram */

extern const double metrics_bucket_seconds[METRICS_BUCKETS];

typedef struct metrics {
    _Atomic uint64_t accepted, duplicates, bytes_accepted, delivered, delivery_frames, commits;
    _Atomic uint64_t requests, responses, request_timeouts;
    _Atomic uint64_t rejected[METRICS_CODES];
    _Atomic uint64_t commit_buckets[METRICS_BUCKETS]; /* cumulative counts are computed */
    _Atomic uint64_t commit_count, commit_sum_ns;
    _Atomic uint64_t sessions;
    _Atomic int64_t loop_ns; /* the I/O loop's last turn (wall clock) */
    int64_t started_ns;
    pthread_mutex_t lock; /* guards the snapshot below */
    uint8_t *consumers;   /* encoded spbe.v1.Consumers */
    size_t consumers_len;
    char *sessions_json; /* a JSON array */
} metrics;

void metrics_init(metrics *m);
void metrics_destroy(metrics *m);

static inline void
metrics_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

static inline uint64_t
metrics_get(_Atomic uint64_t *counter)
{
    return atomic_load_explicit(counter, memory_order_relaxed);
}

void metrics_rejected(metrics *m, int code);
void metrics_commit(metrics *m, uint64_t ns);

/* Replaces the snapshot (the metrics take both buffers, malloc'ed). */
void metrics_publish(metrics *m, uint8_t *consumers, size_t consumers_len, char *sessions_json);
/* Copies of the snapshot (caller frees); NULL/0 if none yet. */
void metrics_snapshot(metrics *m, uint8_t **consumers, size_t *consumers_len, char **sessions_json);

#endif
