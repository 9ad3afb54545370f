/*
 * writer.h - the one thread that writes topic logs. The I/O thread hands it a group
 * of verified publishes; it appends the group in one LMDB transaction with one
 * durable commit and hands the group back, in submission order. While it waits on
 * the disk the I/O thread receives and verifies the next group, so fsync and
 * signature checks overlap. Between jobs it applies retention (a bounded number of
 * deletions at a time); when idle it also expires old dedup entries.
 */
#ifndef SPBE_WRITER_H
#define SPBE_WRITER_H

#include <errno.h>
#include <zmq.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* zmq_send, again when a signal interrupted it: a blocking send that must not be lost
 * (a job handed over or back, a ZAP reply). */
static inline int
send_uninterrupted(void *socket, const void *buf, size_t len, int flags)
{
    int rc;
    while ((rc = zmq_send(socket, buf, len, flags)) < 0 && errno == EINTR)
        ;
    return rc;
}

typedef struct writer writer;

typedef struct writer_job {
    store_append_item *items; /* borrowed until the job comes back */
    size_t count;
    const store_op *ops; /* consumer bookkeeping in the same commit; borrowed */
    size_t n_ops;
    int rc;             /* the items' result (store_apply) */
    int ops_rc;         /* the ops' result */
    uint64_t commit_ns; /* time the append and commit took */
} writer_job;

/* Starts the thread. zmq_ctx is the broker's ZeroMQ context. rules (borrowed for the
 * writer's life): retention, applied in idle time in small transactions so that it
 * never holds publishes up. NULL on failure. */
writer *writer_new(void *zmq_ctx, store *s, int64_t dedup_window_ns, const store_retention *rules,
                   size_t n_rules);
/* Finishes the jobs already submitted, stops and joins the thread; NULL-safe. */
void writer_destroy(writer **w);
/* The socket to poll (ZMQ_POLLIN) for finished jobs. */
void *writer_socket(writer *w);
/* Hands a job over; it belongs to the writer until writer_take_done returns it. */
int writer_submit(writer *w, writer_job *job);
/* A finished job, or NULL if none is ready (never blocks). */
writer_job *writer_take_done(writer *w);

#endif
