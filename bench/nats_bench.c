/*
 * nats_bench.c - spbe-nats-bench: the workloads of `spbe bench pub` and `spbe bench consume`
 * run against NATS JetStream, with the same options and the same JSON keys, so that
 * bench/run can set both systems side by side.
 *
 * pub: each publisher is its own connection and thread; its messages are built before the
 * timed phase (as spbe bench signs them beforehand) and sent with js_PublishMsgAsync, at most
 * --window without their PubAck. The publish-to-PubAck latency is taken in the ack handler,
 * the publish-to-delivery latency by an ordered push consumer on the stream, that is after
 * JetStream stored the message. The stream (file storage, default limits) is made fresh by
 * the tool and deleted afterwards.
 *
 * consume: the stream is filled first (not timed), then a durable pull consumer with explicit
 * acks is shared by the members, each its own connection and thread, fetching batches of
 * 1000 and acking every message (fire and forget); timed until the server counts every
 * message acknowledged.
 */
#include <getopt.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: spbe-nats-bench pub|consume [options]\n"
    "\n"
    "The workloads of `spbe bench pub` and `spbe bench consume` against NATS JetStream\n"
    "(a stream with file storage and default limits, made fresh and deleted afterwards).\n"
    "\n"
    "spbe-nats-bench pub: async publish with PubAcks; throughput, publish-to-PubAck and\n"
    "publish-to-delivery latency (an ordered consumer on the stream).\n"
    "  --messages N      messages in all (default 100000)\n"
    "  --size BYTES      payload size, at least 8 (default 256)\n"
    "  --publishers N    publishers, each its own connection (default 1)\n"
    "  --window N        PubAcks outstanding per publisher (default 1000)\n"
    "  --rate N          send N msgs/s in all, paced (default: as fast as the window allows)\n"
    "  --no-subscriber   do not measure delivery latency\n"
    "\n"
    "spbe-nats-bench consume: fills the stream, then a durable pull consumer (explicit\n"
    "acks) shared by the members fetches batches of 1000 and acks every message.\n"
    "  --messages N      messages (default 100000)\n"
    "  --size BYTES      payload size (default 256)\n"
    "  --members N       members, each its own connection (default 1)\n"
    "\n"
    "Both:\n"
    "  --url URL         the NATS server (default nats://127.0.0.1:4222)\n"
    "  --json            one JSON line instead of text\n";

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

/* Long enough for any PubAck or fetch of a healthy server; past it the run has failed. */
enum { WAIT_MS = 60000, FETCH_BATCH = 1000, FETCH_WAIT_MS = 1000 };

typedef struct bench_config {
    const char *url;
    long messages, size, publishers, window, rate, members;
    int no_subscriber, json;
} bench_config;

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
sleep_until_ns(int64_t due)
{
    struct timespec ts = {(time_t)(due / 1000000000LL), (long)(due % 1000000000LL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
        ;
}

/* Prints what failed with the library's own words; returns EXIT_ERROR. */
static int
nats_fail(const char *what, natsStatus s, jsErrCode code)
{
    const char *detail = nats_GetLastError(NULL);
    fprintf(stderr, "spbe-nats-bench: %s: %s", what, natsStatus_GetText(s));
    if (code)
        fprintf(stderr, " (JetStream error %d)", (int)code);
    if (detail && *detail && !strstr(detail, natsStatus_GetText(s)))
        fprintf(stderr, ": %s", detail);
    fputc('\n', stderr);
    return EXIT_ERROR;
}

/* Formats a failure for a thread to report after it joined. */
static void
error_text(char *buf, size_t len, const char *what, natsStatus s)
{
    const char *detail = nats_GetLastError(NULL);
    int more = detail && *detail && !strstr(detail, natsStatus_GetText(s));
    snprintf(buf, len, "%s: %s%s%s", what, natsStatus_GetText(s), more ? ": " : "",
             more ? detail : "");
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q quantile (0..1) of sorted nanoseconds, in microseconds: the same nearest rank as
 * spbe bench. */
static double
percentile_us(const int64_t *sorted, long n, double q)
{
    if (n == 0)
        return 0;
    long i = (long)(q * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1e3;
}

/* A connection and its JetStream context; opts may be NULL. */
static int
connect_js(const bench_config *cfg, jsOptions *opts, natsConnection **nc, jsCtx **js)
{
    natsStatus s = natsConnection_ConnectTo(nc, cfg->url);
    if (s != NATS_OK)
        return nats_fail(cfg->url, s, 0);
    s = natsConnection_JetStream(js, *nc, opts);
    if (s != NATS_OK)
        return nats_fail("JetStream context", s, 0);
    return EXIT_OK;
}

static void
disconnect_js(natsConnection **nc, jsCtx **js)
{
    jsCtx_Destroy(*js);
    *js = NULL;
    natsConnection_Destroy(*nc);
    *nc = NULL;
}

/* Makes the stream anew: one left by an earlier run that failed is deleted first. */
static int
stream_create(jsCtx *js, const char *name, const char *subject)
{
    jsErrCode code = 0;
    natsStatus s = js_DeleteStream(js, name, NULL, &code);
    if (s != NATS_OK && code != JSStreamNotFoundErr)
        return nats_fail("deleting an old stream", s, code);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    code = 0;
    s = js_AddStream(&si, js, &sc, NULL, &code);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        return nats_fail("creating the stream", s, code);
    return EXIT_OK;
}

static int
stream_delete(jsCtx *js, const char *name)
{
    jsErrCode code = 0;
    natsStatus s = js_DeleteStream(js, name, NULL, &code);
    return s == NATS_OK ? EXIT_OK : nats_fail("deleting the stream", s, code);
}

/* ------------------------------------------------------------ pub */

static const char pub_stream[] = "BENCH_PUB", pub_subject[] = "bench.pub";

typedef struct publisher {
    const bench_config *cfg;
    pthread_barrier_t *start;
    int index;
    long count;
    natsConnection *nc;
    jsCtx *js;
    natsMsg **msgs;        /* built beforehand; the library owns each once sent */
    int64_t *sent_ns;      /* by message index; read by the ack handler and the subscriber */
    int64_t *receipt_lat;  /* ns, in the order PubAcks came; written by the ack handler only */
    long receipts, errors; /* by the ack handler; read once js_PublishAsyncComplete returned */
    char ack_error[256];
    int failed;
    char error[512];
} publisher;

/* The payload starts with the publisher's index and the message's, as spbe bench's. */
static void
payload_indices(const natsMsg *msg, uint32_t *publisher_index, uint32_t *message_index)
{
    const char *data = natsMsg_GetData(msg);
    memcpy(publisher_index, data, 4);
    memcpy(message_index, data + 4, 4);
}

static void
on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pa;
    publisher *p = closure;
    int64_t now = mono_ns();
    uint32_t pi, k;
    payload_indices(msg, &pi, &k);
    if (pae) {
        if (!p->errors++)
            snprintf(p->ack_error, sizeof p->ack_error, "%s (JetStream error %d): %s",
                     natsStatus_GetText(pae->Err), (int)pae->ErrCode,
                     pae->ErrText ? pae->ErrText : "");
    } else if (k < (uint32_t)p->count) {
        p->receipt_lat[p->receipts - p->errors] =
            now - __atomic_load_n(&p->sent_ns[k], __ATOMIC_RELAXED);
    }
    p->receipts++;
    natsMsg_Destroy(msg);
}

static void *
publisher_run(void *arg)
{
    publisher *p = arg;
    const bench_config *cfg = p->cfg;
    double interval_ns = cfg->rate ? 1e9 * (double)cfg->publishers / (double)cfg->rate : 0;
    double phase = (double)p->index / (double)cfg->publishers; /* publishers take turns */
    pthread_barrier_wait(p->start);
    int64_t t0 = mono_ns();
    for (long k = 0; k < p->count; k++) {
        if (interval_ns > 0) {
            int64_t due = t0 + (int64_t)(interval_ns * ((double)k + phase));
            if (mono_ns() < due)
                sleep_until_ns(due);
        }
        __atomic_store_n(&p->sent_ns[k], mono_ns(), __ATOMIC_RELAXED);
        natsStatus s = js_PublishMsgAsync(p->js, &p->msgs[k], NULL);
        if (s != NATS_OK) {
            error_text(p->error, sizeof p->error, "publish", s);
            p->failed = 1;
            break;
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = WAIT_MS;
    natsStatus s = js_PublishAsyncComplete(p->js, &po);
    if (s != NATS_OK && !p->failed) {
        error_text(p->error, sizeof p->error, "waiting for PubAcks", s);
        p->failed = 1;
    }
    return NULL;
}

typedef struct subscriber {
    publisher *pubs;
    long publishers, expected;
    long received; /* atomic */
    int64_t *lat;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
} subscriber;

static void
on_delivery(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    subscriber *s = closure;
    int64_t now = mono_ns();
    uint32_t pi, k;
    if (natsMsg_GetDataLength(msg) >= 8) {
        payload_indices(msg, &pi, &k);
        long n = __atomic_load_n(&s->received, __ATOMIC_RELAXED);
        if (pi < (uint32_t)s->publishers && k < (uint32_t)s->pubs[pi].count && n < s->expected)
            s->lat[n] = now - __atomic_load_n(&s->pubs[pi].sent_ns[k], __ATOMIC_RELAXED);
        __atomic_store_n(&s->received, n + 1, __ATOMIC_RELEASE);
    }
    natsMsg_Destroy(msg);
}

/* A publisher's connection, context and messages, before the timed phase. */
static int
publisher_prepare(publisher *p, const bench_config *cfg, int index, pthread_barrier_t *start)
{
    p->cfg = cfg;
    p->start = start;
    p->index = index;
    p->count = cfg->messages / cfg->publishers + (index < cfg->messages % cfg->publishers);
    p->msgs = calloc((size_t)p->count, sizeof *p->msgs);
    p->sent_ns = calloc((size_t)p->count, sizeof *p->sent_ns);
    p->receipt_lat = calloc((size_t)p->count, sizeof *p->receipt_lat);
    char *payload = calloc(1, (size_t)cfg->size);
    if (!p->msgs || !p->sent_ns || !p->receipt_lat || !payload) {
        free(payload);
        fprintf(stderr, "spbe-nats-bench: out of memory\n");
        return EXIT_ERROR;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = cfg->window;
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = p;
    jo.PublishAsync.StallWait = WAIT_MS; /* a full window waits for PubAcks, not fails */
    int rc = connect_js(cfg, &jo, &p->nc, &p->js);
    for (long k = 0; k < p->count && rc == EXIT_OK; k++) {
        uint32_t pi = (uint32_t)index, ki = (uint32_t)k;
        memcpy(payload, &pi, 4);
        memcpy(payload + 4, &ki, 4);
        natsStatus s = natsMsg_Create(&p->msgs[k], pub_subject, NULL, payload, (int)cfg->size);
        if (s != NATS_OK)
            rc = nats_fail("building a message", s, 0);
    }
    free(payload);
    return rc;
}

static void
publisher_release(publisher *p)
{
    for (long k = 0; p->msgs && k < p->count; k++)
        natsMsg_Destroy(p->msgs[k]); /* those never sent */
    free(p->msgs);
    free(p->sent_ns);
    free(p->receipt_lat);
    disconnect_js(&p->nc, &p->js);
}

/* The ordered consumer that measures delivery, on the stream made for the run. */
static int
subscriber_start(subscriber *s, const bench_config *cfg)
{
    s->lat = calloc((size_t)cfg->messages, sizeof *s->lat);
    if (!s->lat) {
        fprintf(stderr, "spbe-nats-bench: out of memory\n");
        return EXIT_ERROR;
    }
    int rc = connect_js(cfg, NULL, &s->nc, &s->js);
    if (rc != EXIT_OK)
        return rc;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = pub_stream;
    so.Ordered = true;
    jsErrCode code = 0;
    natsStatus st = js_Subscribe(&s->sub, s->js, pub_subject, on_delivery, s, NULL, &so, &code);
    if (st != NATS_OK)
        return nats_fail("subscribing", st, code);
    /* no message dropped as a slow consumer: the figure is for deliveries */
    st = natsSubscription_SetPendingLimits(s->sub, -1, -1);
    if (st != NATS_OK)
        return nats_fail("subscription limits", st, 0);
    return EXIT_OK;
}

static void
subscriber_stop(subscriber *s)
{
    natsSubscription_Destroy(s->sub);
    s->sub = NULL;
    disconnect_js(&s->nc, &s->js);
    free(s->lat);
    s->lat = NULL;
}

static void
print_pub(const bench_config *cfg, long total, long errors, double secs, const int64_t *lat,
          long delivered, const int64_t *delivery_lat)
{
    double rate = secs > 0 ? (double)total / secs : 0;
    if (cfg->json) {
        printf("{\"messages\":%ld,\"size\":%ld,\"publishers\":%ld,\"window\":%ld,\"rate\":%ld,"
               "\"seconds\":%.3f,\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"errors\":%ld,"
               "\"receipt_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f,\"max\":%.0f},"
               "\"delivered\":%ld,"
               "\"delivery_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f}}\n",
               total, cfg->size, cfg->publishers, cfg->window, cfg->rate, secs, rate,
               rate * (double)cfg->size / 1e6, errors, percentile_us(lat, total - errors, .5),
               percentile_us(lat, total - errors, .9), percentile_us(lat, total - errors, .99),
               percentile_us(lat, total - errors, .999), percentile_us(lat, total - errors, 1),
               delivered, percentile_us(delivery_lat, delivered, .5),
               percentile_us(delivery_lat, delivered, .9),
               percentile_us(delivery_lat, delivered, .99),
               percentile_us(delivery_lat, delivered, 1));
        return;
    }
    printf("JetStream publish (file storage): %ld messages of %ld bytes, %ld publisher(s), "
           "window %ld",
           total, cfg->size, cfg->publishers, cfg->window);
    if (cfg->rate)
        printf(", paced at %ld msgs/s", cfg->rate);
    printf("\n  throughput        %.0f msgs/s  (%.2f MB/s payload) in %.2f s, %ld errors\n", rate,
           rate * (double)cfg->size / 1e6, secs, errors);
    printf(
        "  publish->PubAck   p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
        percentile_us(lat, total - errors, .5), percentile_us(lat, total - errors, .9),
        percentile_us(lat, total - errors, .99), percentile_us(lat, total - errors, .999),
        percentile_us(lat, total - errors, 1));
    if (!cfg->no_subscriber)
        printf("  publish->delivery p50 %.0f us  p90 %.0f us  p99 %.0f us  max %.0f us  (%ld "
               "delivered)\n",
               percentile_us(delivery_lat, delivered, .5),
               percentile_us(delivery_lat, delivered, .9),
               percentile_us(delivery_lat, delivered, .99),
               percentile_us(delivery_lat, delivered, 1), delivered);
}

/* Starts n threads fn(args + i * size), then releases them all at once through the
 * barrier (sized n + 1). A thread that cannot start ends the program before the
 * barrier, which would otherwise wait for it forever. Returns n. */
static long
threads_start(pthread_t *threads, long n, void *(*fn)(void *), void *args, size_t size,
              const char *what, pthread_barrier_t *start)
{
    for (long i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, fn, (char *)args + (size_t)i * size) != 0) {
            fprintf(stderr, "spbe-nats-bench: cannot start %s %ld\n", what, i);
            exit(EXIT_ERROR);
        }
    pthread_barrier_wait(start);
    return n;
}
static int
bench_pub(const bench_config *cfg)
{
    natsConnection *control = NULL;
    jsCtx *control_js = NULL;
    int rc = connect_js(cfg, NULL, &control, &control_js);
    if (rc == EXIT_OK)
        rc = stream_create(control_js, pub_stream, pub_subject);
    if (rc != EXIT_OK) {
        disconnect_js(&control, &control_js);
        return rc;
    }

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)cfg->publishers + 1);
    publisher *pubs = calloc((size_t)cfg->publishers, sizeof *pubs);
    pthread_t *threads = calloc((size_t)cfg->publishers, sizeof *threads);
    subscriber sub = {.pubs = pubs, .publishers = cfg->publishers, .expected = cfg->messages};
    if (!pubs || !threads) {
        fprintf(stderr, "spbe-nats-bench: out of memory\n");
        rc = EXIT_ERROR;
    }
    for (long p = 0; p < cfg->publishers && rc == EXIT_OK; p++)
        rc = publisher_prepare(&pubs[p], cfg, (int)p, &start);
    if (rc == EXIT_OK && !cfg->no_subscriber)
        rc = subscriber_start(&sub, cfg);

    long started = 0;
    int64_t t0 = 0, t1 = 0;
    if (rc == EXIT_OK) {
        started = threads_start(threads, cfg->publishers, publisher_run, pubs, sizeof *pubs,
                                "publisher", &start);
        t0 = mono_ns();
        for (long p = 0; p < started; p++)
            pthread_join(threads[p], NULL);
        t1 = mono_ns();
    }

    long total = 0, errors = 0;
    int64_t *lat = calloc((size_t)cfg->messages + 1, sizeof *lat);
    for (long p = 0; p < started; p++) {
        if (pubs[p].failed) {
            fprintf(stderr, "spbe-nats-bench: publisher %ld: %s\n", p, pubs[p].error);
            rc = EXIT_ERROR;
        }
        if (pubs[p].errors)
            fprintf(stderr, "spbe-nats-bench: publisher %ld: %ld PubAck errors, first: %s\n", p,
                    pubs[p].errors, pubs[p].ack_error);
        long ok = pubs[p].receipts - pubs[p].errors;
        memcpy(lat + total - errors, pubs[p].receipt_lat, (size_t)ok * sizeof *lat);
        total += pubs[p].receipts;
        errors += pubs[p].errors;
    }
    if (rc == EXIT_OK && !cfg->no_subscriber) {
        /* deliveries trail the last PubAck: wait a while for them */
        int64_t give_up = mono_ns() + 10000000000LL;
        while (__atomic_load_n(&sub.received, __ATOMIC_ACQUIRE) < total - errors &&
               mono_ns() < give_up)
            sleep_until_ns(mono_ns() + 1000000);
    }
    if (sub.sub) { /* no callback runs once the drain completed: the arrays can go */
        natsStatus s = natsSubscription_Drain(sub.sub);
        if (s == NATS_OK)
            s = natsSubscription_WaitForDrainCompletion(sub.sub, WAIT_MS);
        if (s != NATS_OK)
            rc = nats_fail("draining the subscription", s, 0);
    }
    long delivered = __atomic_load_n(&sub.received, __ATOMIC_ACQUIRE);
    if (delivered > cfg->messages)
        delivered = cfg->messages;

    if (rc == EXIT_OK) {
        qsort(lat, (size_t)(total - errors), sizeof *lat, cmp_i64);
        if (sub.lat)
            qsort(sub.lat, (size_t)delivered, sizeof *sub.lat, cmp_i64);
        print_pub(cfg, total, errors, (double)(t1 - t0) / 1e9, lat, delivered, sub.lat);
        if (errors)
            rc = EXIT_ERROR;
        if (!cfg->no_subscriber && delivered < total - errors) {
            fprintf(stderr, "spbe-nats-bench: %ld of %ld messages delivered\n", delivered,
                    total - errors);
            rc = EXIT_ERROR;
        }
    }
    subscriber_stop(&sub);
    for (long p = 0; pubs && p < cfg->publishers; p++)
        publisher_release(&pubs[p]);
    if (stream_delete(control_js, pub_stream) != EXIT_OK)
        rc = EXIT_ERROR;
    disconnect_js(&control, &control_js);
    pthread_barrier_destroy(&start);
    free(lat);
    free(pubs);
    free(threads);
    return rc;
}

/* ------------------------------------------------------------ consume */

static const char consume_stream[] = "BENCH_CONSUME", consume_subject[] = "bench.consume",
                  consume_durable[] = "bench-consume";

typedef struct fill {
    long acks, errors;
    char error[256];
} fill;

static void
on_fill_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pa;
    fill *f = closure;
    if (pae && !f->errors++)
        snprintf(f->error, sizeof f->error, "%s (JetStream error %d): %s",
                 natsStatus_GetText(pae->Err), (int)pae->ErrCode, pae->ErrText ? pae->ErrText : "");
    f->acks++;
    natsMsg_Destroy(msg);
}

/* Publishes n messages to the consume stream, window 1000, and waits for every PubAck;
 * *rate gets the messages per second. */
static int
stream_fill(const bench_config *cfg, double *rate)
{
    fill f = {0};
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 1000;
    jo.PublishAsync.AckHandler = on_fill_ack;
    jo.PublishAsync.AckHandlerClosure = &f;
    jo.PublishAsync.StallWait = WAIT_MS;
    char *payload = calloc(1, (size_t)cfg->size);
    if (!payload) {
        fprintf(stderr, "spbe-nats-bench: out of memory\n");
        return EXIT_ERROR;
    }
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    int rc = connect_js(cfg, &jo, &nc, &js);
    int64_t t0 = mono_ns();
    for (long k = 0; k < cfg->messages && rc == EXIT_OK; k++) {
        uint32_t ki = (uint32_t)k;
        memcpy(payload, &ki, cfg->size < 4 ? (size_t)cfg->size : 4);
        natsStatus s = js_PublishAsync(js, consume_subject, payload, (int)cfg->size, NULL);
        if (s != NATS_OK)
            rc = nats_fail("filling the stream", s, 0);
    }
    if (rc == EXIT_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = WAIT_MS;
        natsStatus s = js_PublishAsyncComplete(js, &po);
        if (s != NATS_OK)
            rc = nats_fail("waiting for the fill's PubAcks", s, 0);
    }
    *rate = (double)cfg->messages / ((double)(mono_ns() - t0) / 1e9);
    if (rc == EXIT_OK && f.errors) {
        fprintf(stderr, "spbe-nats-bench: %ld publishes refused, first: %s\n", f.errors, f.error);
        rc = EXIT_ERROR;
    }
    free(payload);
    disconnect_js(&nc, &js);
    return rc;
}

typedef struct member {
    const bench_config *cfg;
    pthread_barrier_t *start;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    long *acked_all; /* atomic, all members together */
    int *stop;       /* atomic */
    long mine;
    int failed;
    char error[512];
} member;

static void *
member_run(void *arg)
{
    member *m = arg;
    pthread_barrier_wait(m->start);
    while (__atomic_load_n(m->acked_all, __ATOMIC_ACQUIRE) < m->cfg->messages &&
           !__atomic_load_n(m->stop, __ATOMIC_ACQUIRE)) {
        natsMsgList list = {0};
        jsErrCode code = 0;
        natsStatus s = natsSubscription_Fetch(&list, m->sub, FETCH_BATCH, FETCH_WAIT_MS, &code);
        if (s == NATS_TIMEOUT)
            continue; /* the others hold what is left: look again */
        if (s != NATS_OK) {
            error_text(m->error, sizeof m->error, "fetch", s);
            __atomic_store_n(&m->failed, 1, __ATOMIC_RELEASE);
            break;
        }
        int i = 0;
        for (; i < list.Count; i++) {
            s = natsMsg_Ack(list.Msgs[i], NULL);
            if (s != NATS_OK) {
                error_text(m->error, sizeof m->error, "ack", s);
                __atomic_store_n(&m->failed, 1, __ATOMIC_RELEASE);
                break;
            }
        }
        m->mine += i;
        __atomic_add_fetch(m->acked_all, (long)i, __ATOMIC_RELEASE);
        natsMsgList_Destroy(&list);
        if (m->failed)
            break;
    }
    return NULL;
}

/* The members' connections, contexts and pull subscriptions bound to the durable. */
static int
member_prepare(member *m, const bench_config *cfg)
{
    int rc = connect_js(cfg, NULL, &m->nc, &m->js);
    if (rc != EXIT_OK)
        return rc;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = consume_stream;
    so.Consumer = consume_durable;
    jsErrCode code = 0;
    natsStatus s =
        js_PullSubscribe(&m->sub, m->js, consume_subject, consume_durable, NULL, &so, &code);
    return s == NATS_OK ? EXIT_OK : nats_fail("pull subscription", s, code);
}

/* The server's count of acknowledged messages (the ack floor in a stream that holds only
 * this run's), and of those delivered or to deliver still waiting for their ack. */
static int
consumer_counts(jsCtx *js, uint64_t *acked, uint64_t *outstanding)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetConsumerInfo(&ci, js, consume_stream, consume_durable, NULL, &code);
    if (s != NATS_OK)
        return nats_fail("consumer info", s, code);
    *acked = ci->AckFloor.Stream;
    *outstanding = (uint64_t)ci->NumAckPending + ci->NumPending;
    jsConsumerInfo_Destroy(ci);
    return EXIT_OK;
}

static int
bench_consume(const bench_config *cfg)
{
    natsConnection *control = NULL;
    jsCtx *control_js = NULL;
    double fill_rate = 0;
    int rc = connect_js(cfg, NULL, &control, &control_js);
    if (rc == EXIT_OK)
        rc = stream_create(control_js, consume_stream, consume_subject);
    if (rc == EXIT_OK)
        rc = stream_fill(cfg, &fill_rate);
    if (rc == EXIT_OK) {
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = consume_durable;
        cc.AckPolicy = js_AckExplicit;
        cc.DeliverPolicy = js_DeliverAll;
        /* a full batch outstanding per member, as spbe bench consume's 1000 in flight each */
        cc.MaxAckPending = cfg->members * FETCH_BATCH;
        jsConsumerInfo *ci = NULL;
        jsErrCode code = 0;
        natsStatus s = js_AddConsumer(&ci, control_js, consume_stream, &cc, NULL, &code);
        jsConsumerInfo_Destroy(ci);
        if (s != NATS_OK)
            rc = nats_fail("creating the durable consumer", s, code);
    }
    if (rc != EXIT_OK) {
        disconnect_js(&control, &control_js);
        return rc;
    }

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)cfg->members + 1);
    member *members = calloc((size_t)cfg->members, sizeof *members);
    pthread_t *threads = calloc((size_t)cfg->members, sizeof *threads);
    long acked_all = 0;
    int stop = 0;
    if (!members || !threads) {
        fprintf(stderr, "spbe-nats-bench: out of memory\n");
        rc = EXIT_ERROR;
    }
    for (long i = 0; i < cfg->members && rc == EXIT_OK; i++) {
        members[i] = (member){.cfg = cfg, .start = &start, .acked_all = &acked_all, .stop = &stop};
        rc = member_prepare(&members[i], cfg);
    }

    long started = 0;
    uint64_t acked = 0, outstanding = 1;
    int64_t t0 = 0, t1 = 0;
    if (rc == EXIT_OK) {
        started = threads_start(threads, cfg->members, member_run, members, sizeof *members,
                                "member", &start);
        t0 = mono_ns();
        /* every message acked by a member, then its ack on the server: flushed, counted */
        int64_t give_up = t0 + (int64_t)WAIT_MS * 1000000LL;
        while (__atomic_load_n(&acked_all, __ATOMIC_ACQUIRE) < cfg->messages &&
               mono_ns() < give_up) {
            int dead = 0;
            for (long i = 0; i < cfg->members; i++)
                dead += __atomic_load_n(&members[i].failed, __ATOMIC_RELAXED);
            if (dead == cfg->members)
                break;
            sleep_until_ns(mono_ns() + 1000000);
        }
        for (long i = 0; i < cfg->members && rc == EXIT_OK; i++) {
            natsStatus s = natsConnection_FlushTimeout(members[i].nc, WAIT_MS);
            if (s != NATS_OK)
                rc = nats_fail("flushing acks", s, 0);
        }
        while (rc == EXIT_OK && outstanding && mono_ns() < give_up) {
            rc = consumer_counts(control_js, &acked, &outstanding);
            if (rc == EXIT_OK && outstanding)
                sleep_until_ns(mono_ns() + 1000000);
        }
        t1 = mono_ns();
        __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
        for (long i = 0; i < started; i++)
            pthread_join(threads[i], NULL);
    }
    for (long i = 0; i < started; i++)
        if (members[i].failed) {
            fprintf(stderr, "spbe-nats-bench: member %ld: %s\n", i, members[i].error);
            rc = EXIT_ERROR;
        }
    if (rc == EXIT_OK && (outstanding || acked < (uint64_t)cfg->messages)) {
        fprintf(stderr, "spbe-nats-bench: %llu of %ld acknowledged\n", (unsigned long long)acked,
                cfg->messages);
        rc = EXIT_ERROR;
    }

    double secs = (double)(t1 - t0) / 1e9, rate = secs > 0 ? (double)acked / secs : 0;
    if (rc == EXIT_OK && cfg->json) {
        printf("{\"messages\":%ld,\"size\":%ld,\"members\":%ld,\"acked\":%llu,\"seconds\":%.3f,"
               "\"msgs_per_s\":%.0f,\"fill_msgs_per_s\":%.0f}\n",
               cfg->messages, cfg->size, cfg->members, (unsigned long long)acked, secs, rate,
               fill_rate);
    } else if (rc == EXIT_OK) {
        printf("JetStream durable pull consumer: %ld messages of %ld bytes, %ld member(s), "
               "batches of %d\n",
               cfg->messages, cfg->size, cfg->members, FETCH_BATCH);
        printf("  fetch + ack       %.0f msgs/s  (%llu acknowledged in %.2f s)\n", rate,
               (unsigned long long)acked, secs);
        printf("  shares           ");
        for (long i = 0; i < cfg->members; i++)
            printf(" %ld", members[i].mine);
        printf("\n  (filled beforehand at %.0f msgs/s)\n", fill_rate);
    }
    for (long i = 0; members && i < cfg->members; i++) {
        natsSubscription_Destroy(members[i].sub);
        disconnect_js(&members[i].nc, &members[i].js);
    }
    if (stream_delete(control_js, consume_stream) != EXIT_OK)
        rc = EXIT_ERROR;
    disconnect_js(&control, &control_js);
    pthread_barrier_destroy(&start);
    free(members);
    free(threads);
    return rc;
}

/* ------------------------------------------------------------ main */

static int
parse_count(const char *arg, long *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end || v < 1)
        return -1;
    *out = v;
    return 0;
}

int
main(int argc, char **argv)
{
    enum { URL = 1, MESSAGES, SIZE, PUBLISHERS, WINDOW, RATE, NO_SUBSCRIBER, MEMBERS, JSON };
    static const struct option options[] = {{"url", required_argument, 0, URL},
                                            {"messages", required_argument, 0, MESSAGES},
                                            {"size", required_argument, 0, SIZE},
                                            {"publishers", required_argument, 0, PUBLISHERS},
                                            {"window", required_argument, 0, WINDOW},
                                            {"rate", required_argument, 0, RATE},
                                            {"no-subscriber", no_argument, 0, NO_SUBSCRIBER},
                                            {"members", required_argument, 0, MEMBERS},
                                            {"json", no_argument, 0, JSON},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (argc < 2 || (strcmp(argv[1], "pub") != 0 && strcmp(argv[1], "consume") != 0)) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    int consume = strcmp(argv[1], "consume") == 0;
    bench_config cfg = {.url = "nats://127.0.0.1:4222",
                        .messages = 100000,
                        .size = 256,
                        .publishers = 1,
                        .window = 1000,
                        .members = 1};
    opterr = 0;
    optind = 2;
    int opt, bad = 0, index = -1;
    while (!bad && (index = -1, opt = getopt_long(argc, argv, "h", options, &index)) != -1) {
        switch (opt) {
        case URL:
            cfg.url = optarg;
            break;
        case MESSAGES:
            bad = parse_count(optarg, &cfg.messages);
            break;
        case SIZE:
            bad = parse_count(optarg, &cfg.size);
            break;
        case PUBLISHERS:
            bad = consume || parse_count(optarg, &cfg.publishers);
            break;
        case WINDOW:
            bad = consume || parse_count(optarg, &cfg.window);
            break;
        case RATE:
            bad = consume || parse_count(optarg, &cfg.rate);
            break;
        case NO_SUBSCRIBER:
            bad = consume;
            cfg.no_subscriber = 1;
            break;
        case MEMBERS:
            bad = !consume || parse_count(optarg, &cfg.members);
            break;
        case JSON:
            cfg.json = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return EXIT_OK;
        default:
            bad = 1;
        }
    }
    if (bad) {
        fprintf(stderr, "spbe-nats-bench %s: %s%s: unknown, not for this command or not a number\n",
                argv[1], index >= 0 ? "--" : "",
                index >= 0 ? options[index].name : argv[optind - 1]);
        return EXIT_USAGE;
    }
    if (optind != argc || cfg.size < (consume ? 1 : 8) || cfg.size > 64L << 20 ||
        cfg.publishers > 4096 || cfg.members > 64 || cfg.messages > UINT32_MAX) {
        fprintf(stderr, "spbe-nats-bench %s: %s\n%s", argv[1],
                optind != argc ? "unexpected arguments"
                               : "out of range (pub --size: at least 8, the message's indices)",
                usage_text);
        return EXIT_USAGE;
    }
    natsStatus s = nats_Open(-1);
    if (s != NATS_OK)
        return nats_fail("starting the NATS library", s, 0);
    int rc = consume ? bench_consume(&cfg) : bench_pub(&cfg);
    /* the library's threads gone before exit, so a leak checker sees only real leaks */
    nats_CloseAndWait(0);
    return rc;
}
