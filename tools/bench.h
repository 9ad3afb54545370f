/*
 * bench.h - what the benchmarks of spbe bench share: sessions, clocks, percentiles.
 */
#ifndef SPBE_TOOLS_BENCH_H
#define SPBE_TOOLS_BENCH_H

#include <stdint.h>

#include "cli.h"

/* Monotonic clock, nanoseconds. */
/* A session with the common options (publish_batch: spbe_options.publish_batch), or
 * NULL after printing why. */
spbe_client *bench_client(const cli_common *common, int publish_batch);
/* qsort comparison of int64_t. */
int bench_cmp_i64(const void *a, const void *b);
/* The q quantile (0..1) of sorted nanoseconds, in microseconds. */
double bench_pct(const int64_t *sorted, long n, double q);
/* Publishes n signed messages of size bytes on topic (window 1000) and waits for every
 * receipt; *first gets the first one's sequence, *rate the messages per second. */
int bench_fill(spbe_client *c, const char *topic, long n, long size, uint64_t *first, double *rate);
/* spbe bench consume | req, with the arguments after the word. */
int bench_delivery(const char *what, int argc, char **argv);

#endif
