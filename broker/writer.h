/*
 * writer.h - the one thread that writes topic logs. The I/O thread hands it a group
 * of verified publishes; it appends the group in one LMDB transaction with one
 * durable commit and hands the group back, in submission order. While it waits on
 * the disk the I/O thread receives and verifies the next group, so fsync and
 * signature checks overlap. When idle it expires old dedup entries.
 */
#ifndef SPBE_WRITER_H
#define SPBE_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct writer writer;

typedef struct writer_job {
    store_append_item *items; /* borrowed until the job comes back */
    size_t count;
    int rc;             /* store_append's result */
    uint64_t commit_ns; /* time the append and commit took */
} writer_job;

/* Starts the thread. zmq_ctx is the broker's ZeroMQ context. NULL on failure. */
writer *writer_new(void *zmq_ctx, store *s, int64_t dedup_window_ns);
/* Finishes the jobs already submitted, stops and joins the thread; NULL-safe. */
void writer_destroy(writer **w);
/* The socket to poll (ZMQ_POLLIN) for finished jobs. */
void *writer_socket(writer *w);
/* Hands a job over; it belongs to the writer until writer_take_done returns it. */
int writer_submit(writer *w, writer_job *job);
/* A finished job, or NULL if none is ready (never blocks). */
writer_job *writer_take_done(writer *w);

#endif
