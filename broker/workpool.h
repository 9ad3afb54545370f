/*
 * workpool.h - a fixed set of worker threads for data-parallel steps of the publish
 * path (signature verification, receipt signing). The caller hands over a count of
 * independent items and a function; the workers and the caller take items until none
 * is left, and the call returns when all are done. Items keep their order because
 * each writes only its own slot.
 */
#ifndef SPBE_WORKPOOL_H
#define SPBE_WORKPOOL_H

#include <stddef.h>

typedef struct workpool workpool;
typedef void (*workpool_fn)(void *ctx, size_t index);

/* Starts threads workers (0: one fewer than the online cores, at least 1). NULL on failure. */
workpool *workpool_new(int threads);
/* Stops and joins the workers; NULL-safe; nulls *p. */
void workpool_destroy(workpool **p);
/* Runs fn(ctx, i) for every i < count on the workers and the calling thread. Items
 * below min_parallel run on the caller alone (a hand-off costs more than it saves). */
void workpool_run(workpool *p, workpool_fn fn, void *ctx, size_t count, size_t min_parallel);
/* Number of threads taking part in a run, the caller included. */
int workpool_width(const workpool *p);

#endif
