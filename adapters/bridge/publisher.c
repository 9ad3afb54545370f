/* publisher.c - the thread that owns the publishing session: HTTP connections queue their
 * publishes here and wait; they are sent pipelined and each is answered when the broker's
 * receipt (sent only after the durable commit) arrives, or when its wait ends. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "wire.h"

/* Ends job (under p->mu). */
static void
finish(publisher *p, pub_job *job, int rc, const char *error)
{
    job->rc = rc;
    if (error)
        snprintf(job->error, sizeof job->error, "%s", error);
    job->done = 1;
    pthread_cond_broadcast(&p->cond);
}

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    publisher *p = arg;
    pthread_mutex_lock(&p->mu);
    for (pub_job **j = &p->inflight; *j; j = &(*j)->next)
        if ((*j)->token == r->token) {
            pub_job *job = *j;
            *j = job->next;
            job->receipt = *r;
            finish(p, job, r->code, r->code == SPBE_OK ? NULL : r->error);
            break;
        }
    pthread_mutex_unlock(&p->mu);
}

/* Sends what is queued. */
static void
send_queued(publisher *p)
{
    pthread_mutex_lock(&p->mu);
    pub_job *list = p->queue;
    p->queue = p->queue_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        pub_job *job = list;
        list = job->next;
        spbe_message_options o = {.id = job->id, .schema = job->schema};
        int rc = spbe_publish_async(p->client, job->topic, job->payload, job->len, &o, &job->token);
        pthread_mutex_lock(&p->mu);
        if (rc == SPBE_OK) {
            job->next = p->inflight;
            p->inflight = job;
        } else {
            finish(p, job, rc, spbe_last_error(p->client));
        }
        pthread_mutex_unlock(&p->mu);
    }
}

/* Ends the jobs whose wait is over (all of them with all set), with rc. */
static void
expire(publisher *p, int all, int rc, const char *why)
{
    int64_t now = wire_now_ns();
    pthread_mutex_lock(&p->mu);
    for (pub_job **j = &p->inflight; *j;) {
        if (all || (*j)->deadline_ns <= now) {
            pub_job *job = *j;
            *j = job->next;
            finish(p, job, rc, why);
        } else {
            j = &(*j)->next;
        }
    }
    if (all)
        while (p->queue) {
            pub_job *job = p->queue;
            p->queue = job->next;
            finish(p, job, rc, why);
        }
    pthread_mutex_unlock(&p->mu);
}

static void *
run(void *arg)
{
    publisher *p = arg;
    int stopping = 0, final = 0;
    while (!stopping) {
        pthread_mutex_lock(&p->mu);
        stopping = p->stop;
        pthread_mutex_unlock(&p->mu);
        send_queued(p);
        int rc = spbe_dispatch(p->client, 0, NULL);
        if (rc != SPBE_OK) {
            bridge_log("error", "publisher_ended", "code=%s detail=\"%s\"", spbe_error_name(rc),
                       spbe_last_error(p->client));
            final = 1;
            bridge_fatal(p->fatal);
            break;
        }
        pthread_mutex_lock(&p->mu);
        p->connected = spbe_connected(p->client);
        pthread_mutex_unlock(&p->mu);
        expire(p, 0, SPBE_TIMEOUT,
               "no receipt from the broker in time: the outcome is unknown; repeat the request "
               "with the same Spbe-Message-Id (a stored one is answered DUPLICATE)");
        int timeout = spbe_next_timeout_ms(p->client);
        if (timeout < 0 || timeout > 100)
            timeout = 100;
        struct pollfd fds[2] = {{.fd = p->wake[0], .events = POLLIN},
                                {.fd = spbe_fd(p->client), .events = POLLIN}};
        if (poll(fds, fds[1].fd >= 0 ? 2 : 1, timeout) > 0 && (fds[0].revents & POLLIN)) {
            char drain[64];
            while (read(p->wake[0], drain, sizeof drain) > 0) {
            }
        }
    }
    if (!final) {
        send_queued(p);
        spbe_flush(p->client, 2000); /* receipts of what was sent, if they come */
    }
    pthread_mutex_lock(&p->mu);
    p->running = 0; /* nothing is queued from now on */
    pthread_mutex_unlock(&p->mu);
    expire(p, 1, SPBE_UNAVAILABLE, "the bridge is stopping");
    return NULL;
}

int
publisher_start(publisher *p, spbe_client *client, volatile sig_atomic_t *fatal)
{
    memset(p, 0, sizeof *p);
    p->client = client;
    p->fatal = fatal;
    p->connected = 1;
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    spbe_set_receipt_handler(client, on_receipt, p);
    p->running = 1;
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        close(p->wake[0]);
        close(p->wake[1]);
        return -1;
    }
    return 0;
}

int
publisher_submit(publisher *p, pub_job *job)
{
    job->done = 0;
    job->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (!p->running || p->stop) {
        pthread_mutex_unlock(&p->mu);
        job->rc = SPBE_UNAVAILABLE;
        snprintf(job->error, sizeof job->error, "the bridge is stopping");
        return job->rc;
    }
    if (p->queue_tail)
        p->queue_tail->next = job;
    else
        p->queue = job;
    p->queue_tail = job;
    pthread_mutex_unlock(&p->mu);
    ssize_t w = write(p->wake[1], "x", 1);
    (void)w; /* a full pipe already wakes it */
    pthread_mutex_lock(&p->mu);
    while (!job->done)
        pthread_cond_wait(&p->cond, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return job->rc;
}

void
publisher_stop(publisher *p)
{
    if (!p->client)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_mutex_unlock(&p->mu);
    ssize_t w = write(p->wake[1], "x", 1);
    (void)w;
    pthread_join(p->thread, NULL);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    spbe_close(&p->client);
}
