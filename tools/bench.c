/*
 * bench.c - spbe bench pub: signed, durable publish throughput and latency (consume
 * and req are in bench_delivery.c).
 *
 * Each publisher is its own session (thread). Messages are signed before the timed
 * phase, so the figure is the bus's, not the client's signing speed. A subscriber
 * session measures publish-to-delivery latency on the same topic.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "cli.h"
#include "wire.h"

static const char bench_usage[] =
    "usage: spbe bench pub|consume|req [options]   (spbe bench consume --help, ...)\n"
    "       spbe bench pub [options]\n"
    "\n"
    "Measures signed, durable publish (every message verified by the broker, no receipt\n"
    "before its commit is on disk): throughput and publish-to-receipt and\n"
    "publish-to-delivery latency percentiles. The identity needs the right to publish\n"
    "and subscribe to the topic.\n"
    "  --messages N      messages in all (default 100000)\n"
    "  --size BYTES      payload size (default 256)\n"
    "  --publishers N    concurrent publishing sessions (default 1)\n"
    "  --window N        receipts outstanding per publisher (default 1000)\n"
    "  --topic TOPIC     (default bench.pub)\n"
    "  --rate N          send N msgs/s in all, paced (default: as fast as the window allows);\n"
    "                    latency at a fixed load\n"
    "  --no-subscriber   do not measure delivery latency\n"
    "  --batch N         sign N messages at a time with one batch signature (a Merkle\n"
    "                    root; each message carries its proof); default: one each\n"
    "  --publish-batch N send up to N publishes in one frame (1 to 256, default 64;\n"
    "                    1: a frame each); each keeps its signature and its receipt\n"
    "  --key FILE --broker EP --broker-key HEX --json\n";

typedef struct bench_config {
    long messages, size, publishers, window;
    long rate;          /* msgs/s over all publishers, 0: unpaced */
    long batch;         /* messages per batch signature, 0: a signature each */
    long publish_batch; /* publishes in one frame (spbe_options.publish_batch) */
    const char *topic;
    int no_subscriber;
    const cli_common *common;
} bench_config;

typedef struct publisher {
    const bench_config *cfg;
    int index;
    long count;
    uint8_t **signed_messages;
    size_t *lengths;
    int64_t *sent_ns;     /* by message index; read by the subscriber */
    int64_t *receipt_lat; /* ns */
    long receipts, errors;
    int rc;
    char error[256];
    uint64_t first_token;
} publisher;

static void
on_bench_receipt(const spbe_receipt *r, void *arg)
{
    publisher *p = arg;
    long k = (long)(r->token - p->first_token);
    if (k >= 0 && k < p->count)
        p->receipt_lat[k] = wire_mono_ns() - __atomic_load_n(&p->sent_ns[k], __ATOMIC_RELAXED);
    p->receipts++;
    if (r->code != SPBE_OK)
        p->errors++;
}

spbe_client *
bench_client(const cli_common *common, int publish_batch)
{
    spbe_options o = {.endpoint = common->broker,
                      .broker_key_hex = common->broker_key,
                      .timeout_ms = common->timeout_ms ? common->timeout_ms : 10000,
                      .client_name = "spbe-bench",
                      .publish_batch = publish_batch};
    spbe_client *c;
    if (spbe_connect(common->key, &o, &c) != SPBE_OK) {
        fprintf(stderr, "spbe bench: %s\n", spbe_last_error(c));
        spbe_close(&c);
        return NULL;
    }
    return c;
}

static pthread_barrier_t start_barrier;

static void *
publisher_run(void *arg)
{
    publisher *p = arg;
    spbe_client *c = bench_client(p->cfg->common, (int)p->cfg->publish_batch);
    pthread_barrier_wait(&start_barrier);
    if (!c) {
        p->rc = SPBE_UNAVAILABLE;
        return NULL;
    }
    spbe_set_receipt_handler(c, on_bench_receipt, p);
    int64_t t0 = wire_mono_ns();
    double interval_ns = p->cfg->rate ? 1e9 * (double)p->cfg->publishers / (double)p->cfg->rate : 0;
    /* publishers take turns: each starts its own fraction of an interval later, so that
     * many paced publishers make an even load, not a burst every interval */
    double phase = (double)p->index / (double)p->cfg->publishers;
    for (long k = 0; k < p->count; k++) {
        for (;;) { /* paced: wait for this message's moment, taking receipts meanwhile */
            int64_t due = t0 + (int64_t)(interval_ns * ((double)k + phase)), now = wire_mono_ns();
            if (now >= due)
                break;
            /* rounded up: waiting in 0 ms polls would spin a core the broker needs */
            int rc = spbe_dispatch(c, (int)((due - now + 999999) / 1000000), NULL);
            if (rc != SPBE_OK && rc != SPBE_TIMEOUT) {
                p->rc = rc;
                snprintf(p->error, sizeof p->error, "%s", spbe_last_error(c));
                spbe_close(&c);
                return NULL;
            }
        }
        while ((long)spbe_in_flight(c) >= p->cfg->window) {
            int rc = spbe_dispatch(c, 1000, NULL);
            if (rc != SPBE_OK) {
                p->rc = rc;
                snprintf(p->error, sizeof p->error, "%s", spbe_last_error(c));
                spbe_close(&c);
                return NULL;
            }
        }
        __atomic_store_n(&p->sent_ns[k], wire_mono_ns(), __ATOMIC_RELAXED);
        uint64_t token;
        int rc = spbe_publish_signed(c, p->signed_messages[k], p->lengths[k], &token);
        if (k == 0)
            p->first_token = token;
        if (rc != SPBE_OK) {
            p->rc = rc;
            break;
        }
    }
    int rc = spbe_flush(c, 60000);
    if (rc != SPBE_OK && !p->rc) {
        p->rc = rc;
        snprintf(p->error, sizeof p->error, "%s", spbe_last_error(c));
    }
    spbe_close(&c);
    return NULL;
}

typedef struct subscriber {
    publisher *pubs;
    long expected, received;
    int64_t *lat;
    int64_t last_ns;
    volatile int ready, done;
    spbe_client *client;
} subscriber;

static void
on_bench_delivery(const spbe_delivery *d, void *arg)
{
    subscriber *s = arg;
    if (d->payload_len < 8)
        return;
    uint32_t pi, k;
    memcpy(&pi, d->payload, 4);
    memcpy(&k, d->payload + 4, 4);
    int64_t now = wire_mono_ns();
    if (s->received < s->expected)
        s->lat[s->received] = now - __atomic_load_n(&s->pubs[pi].sent_ns[k], __ATOMIC_RELAXED);
    s->received++;
    s->last_ns = now;
}

static void *
subscriber_run(void *arg)
{
    subscriber *s = arg;
    while (s->received < s->expected && !s->done)
        if (spbe_dispatch(s->client, 200, NULL) != SPBE_OK)
            break;
    return NULL;
}

int
bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

double
bench_pct(const int64_t *sorted, long n, double q)
{
    if (n == 0)
        return 0;
    long i = (long)(q * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1e3; /* microseconds */
}

typedef struct fill {
    uint64_t first;
    long receipts, errors;
    char error[256];
} fill;

static void
on_fill_receipt(const spbe_receipt *r, void *arg)
{
    fill *f = arg;
    if (r->code == SPBE_OK && (f->first == 0 || r->sequence < f->first))
        f->first = r->sequence;
    if (r->code != SPBE_OK && !f->errors++)
        snprintf(f->error, sizeof f->error, "%s: %.200s", spbe_error_name(r->code), r->error);
    f->receipts++;
}

int
bench_fill(spbe_client *c, const char *topic, long n, long size, uint64_t *first, double *rate)
{
    uint8_t *payload = calloc(1, (size_t)size);
    uint8_t **msgs = calloc((size_t)n, sizeof *msgs);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    int rc = payload && msgs && lens ? SPBE_OK : SPBE_INTERNAL;
    for (long k = 0; k < n && rc == SPBE_OK; k++) {
        uint32_t ki = (uint32_t)k;
        memcpy(payload, &ki, size < 4 ? (size_t)size : 4);
        rc = spbe_sign(c, topic, payload, (size_t)size, NULL, &msgs[k], &lens[k]);
    }
    fill f = {0};
    spbe_set_receipt_handler(c, on_fill_receipt, &f);
    int64_t t0 = wire_mono_ns();
    for (long k = 0; k < n && rc == SPBE_OK; k++) {
        while (rc == SPBE_OK && spbe_in_flight(c) >= 1000)
            rc = spbe_dispatch(c, 1000, NULL);
        if (rc == SPBE_OK)
            rc = spbe_publish_signed(c, msgs[k], lens[k], NULL);
    }
    if (rc == SPBE_OK)
        rc = spbe_flush(c, 60000);
    *rate = (double)n / ((double)(wire_mono_ns() - t0) / 1e9);
    spbe_set_receipt_handler(c, NULL, NULL);
    if (rc == SPBE_OK && f.errors) {
        fprintf(stderr, "spbe bench: %ld publishes refused, first: %s\n", f.errors, f.error);
        rc = SPBE_INTERNAL;
    }
    *first = f.first;
    for (long k = 0; msgs && k < n; k++)
        free(msgs[k]);
    free(msgs);
    free(lens);
    free(payload);
    return rc;
}

static int
bench_option(int opt, const char *arg, void *ctx)
{
    bench_config *b = ctx;
    char *end;
    long v = arg ? strtol(arg, &end, 10) : 0;
    if (arg && opt != 5 && (*end || v < 1))
        return 1;
    switch (opt) {
    case 1:
        b->messages = v;
        return 0;
    case 2:
        b->size = v;
        return 0;
    case 3:
        b->publishers = v;
        return 0;
    case 4:
        b->window = v;
        return 0;
    case 5:
        b->topic = arg;
        return 0;
    case 6:
        b->no_subscriber = 1;
        return 0;
    case 7:
        b->rate = v;
        return 0;
    case 8:
        b->batch = v;
        return 0;
    case 9:
        b->publish_batch = v;
        return 0;
    }
    return 1;
}

/* Signs a publisher's messages (payload: its index and the message's, then zeros), one
 * signature each or cfg->batch at a time. */
static int
bench_sign(spbe_client *signer, const bench_config *cfg, publisher *pb, uint8_t *payload)
{
    long per = cfg->batch ? cfg->batch : 1;
    size_t size = (size_t)cfg->size;
    uint8_t *payloads = per > 1 ? calloc((size_t)per, size) : payload;
    spbe_batch_item *items = calloc((size_t)per, sizeof *items);
    int rc = payloads && items ? SPBE_OK : SPBE_INTERNAL;
    for (long k = 0; k < pb->count && rc == SPBE_OK; k += per) {
        long n = pb->count - k < per ? pb->count - k : per;
        for (long j = 0; j < n; j++) {
            uint32_t pi = (uint32_t)pb->index, ki = (uint32_t)(k + j);
            uint8_t *pl = per > 1 ? payloads + (size_t)j * size : payload;
            memcpy(pl, &pi, 4);
            memcpy(pl + 4, &ki, 4);
            items[j] = (spbe_batch_item){cfg->topic, pl, size, NULL};
        }
        rc = per > 1 ? spbe_sign_batch(signer, items, (size_t)n, &pb->signed_messages[k],
                                       &pb->lengths[k])
                     : spbe_sign(signer, cfg->topic, payload, size, NULL, &pb->signed_messages[k],
                                 &pb->lengths[k]);
    }
    if (payloads != payload)
        free(payloads);
    free(items);
    return rc;
}

int
cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"messages", required_argument, 0, 1},      {"size", required_argument, 0, 2},
        {"publishers", required_argument, 0, 3},    {"window", required_argument, 0, 4},
        {"topic", required_argument, 0, 5},         {"no-subscriber", no_argument, 0, 6},
        {"rate", required_argument, 0, 7},          {"batch", required_argument, 0, 8},
        {"publish-batch", required_argument, 0, 9}, {0, 0, 0, 0}};
    if (argc >= 2 && (strcmp(argv[1], "consume") == 0 || strcmp(argv[1], "req") == 0))
        return bench_delivery(argv[1], argc - 1, argv + 1);
    int early = cli_subcommand(argc, argv, bench_usage);
    if (early >= 0)
        return early;
    if (strcmp(argv[1], "pub") != 0) {
        fputs(bench_usage, stderr);
        return EXIT_USAGE;
    }
    cli_common common;
    bench_config cfg = {100000, 256, 1, 1000, 0, 0, 64, "bench.pub", 0, &common};
    int i = cli_parse(argc - 1, argv + 1, &common, opts, "", bench_option, &cfg, bench_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - 1 != i || cfg.size < 8 || cfg.publishers > 4096 || cfg.batch > 1048576 ||
        cfg.publish_batch > 256) {
        fputs(bench_usage, stderr);
        return EXIT_USAGE;
    }
    cfg.common = &common;

    /* sign everything before the timed phase */
    spbe_client *signer = bench_client(&common, 0);
    if (!signer)
        return EXIT_ERROR;
    publisher *pubs = calloc((size_t)cfg.publishers, sizeof *pubs);
    uint8_t *payload = calloc(1, (size_t)cfg.size);
    int64_t t_sign = wire_mono_ns();
    for (int p = 0; p < cfg.publishers; p++) {
        publisher *pb = &pubs[p];
        pb->cfg = &cfg;
        pb->index = p;
        pb->count = cfg.messages / cfg.publishers + (p < cfg.messages % cfg.publishers);
        pb->signed_messages = calloc((size_t)pb->count, sizeof *pb->signed_messages);
        pb->lengths = calloc((size_t)pb->count, sizeof *pb->lengths);
        pb->sent_ns = calloc((size_t)pb->count, sizeof *pb->sent_ns);
        pb->receipt_lat = calloc((size_t)pb->count, sizeof *pb->receipt_lat);
        if (bench_sign(signer, &cfg, pb, payload) != SPBE_OK)
            return cli_fail("bench", SPBE_INVALID_TOPIC, "%s", spbe_last_error(signer));
    }
    double sign_s = (double)(wire_mono_ns() - t_sign) / 1e9;

    subscriber sub = {.pubs = pubs, .expected = cfg.messages};
    pthread_t sub_thread;
    if (!cfg.no_subscriber) {
        sub.lat = calloc((size_t)cfg.messages, sizeof *sub.lat);
        sub.client = signer;
        spbe_set_delivery_handler(signer, on_bench_delivery, &sub);
        if (spbe_subscribe(signer, cfg.topic, SPBE_START_NEW, 0, NULL) != SPBE_OK)
            return cli_fail("bench", SPBE_FORBIDDEN, "cannot subscribe: %s",
                            spbe_last_error(signer));
    }
    pthread_barrier_init(&start_barrier, NULL, (unsigned)cfg.publishers + 1);
    pthread_t *threads = calloc((size_t)cfg.publishers, sizeof *threads);
    for (int p = 0; p < cfg.publishers; p++)
        pthread_create(&threads[p], NULL, publisher_run, &pubs[p]);
    pthread_barrier_wait(&start_barrier);
    int64_t t0 = wire_mono_ns();
    if (!cfg.no_subscriber)
        pthread_create(&sub_thread, NULL, subscriber_run, &sub);
    for (int p = 0; p < cfg.publishers; p++)
        pthread_join(threads[p], NULL);
    int64_t t1 = wire_mono_ns();
    if (!cfg.no_subscriber) {
        int64_t wait_until = wire_mono_ns() + 10000000000LL;
        while (sub.received < sub.expected && wire_mono_ns() < wait_until) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        sub.done = 1;
        pthread_join(sub_thread, NULL);
    }

    long total = 0, errors = 0;
    int failed = 0;
    int64_t *lat = calloc((size_t)cfg.messages, sizeof *lat);
    for (int p = 0; p < cfg.publishers; p++) {
        if (pubs[p].rc) {
            fprintf(stderr, "spbe bench: publisher %d: %s: %s\n", p, spbe_error_name(pubs[p].rc),
                    pubs[p].error);
            failed = 1;
        }
        for (long k = 0; k < pubs[p].receipts && k < pubs[p].count; k++)
            lat[total + k] = pubs[p].receipt_lat[k];
        total += pubs[p].receipts < pubs[p].count ? pubs[p].receipts : pubs[p].count;
        errors += pubs[p].errors;
    }
    qsort(lat, (size_t)total, sizeof *lat, bench_cmp_i64);
    double secs = (double)(t1 - t0) / 1e9;
    double rate = (double)total / secs;
    long delivered = sub.received < sub.expected ? sub.received : sub.expected;
    if (sub.lat)
        qsort(sub.lat, (size_t)delivered, sizeof *sub.lat, bench_cmp_i64);
    if (common.json) {
        printf("{\"messages\":%ld,\"size\":%ld,\"publishers\":%ld,\"window\":%ld,\"rate\":%ld,"
               "\"batch\":%ld,\"publish_batch\":%ld,"
               "\"seconds\":%.3f,"
               "\"msgs_per_s\":%.0f,\"mb_per_s\":%.2f,\"errors\":%ld,"
               "\"receipt_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f,\"max\":%.0f},"
               "\"delivered\":%ld,\"delivery_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%"
               ".0f},"
               "\"client_sign_per_s\":%.0f}\n",
               total, cfg.size, cfg.publishers, cfg.window, cfg.rate, cfg.batch, cfg.publish_batch,
               secs, rate, rate * (double)cfg.size / 1e6, errors, bench_pct(lat, total, .5),
               bench_pct(lat, total, .9), bench_pct(lat, total, .99), bench_pct(lat, total, .999),
               bench_pct(lat, total, 1), delivered, bench_pct(sub.lat, delivered, .5),
               bench_pct(sub.lat, delivered, .9), bench_pct(sub.lat, delivered, .99),
               bench_pct(sub.lat, delivered, 1), (double)cfg.messages / sign_s);
    } else {
        printf("signed durable publish: %ld messages of %ld bytes, %ld publisher(s), window %ld",
               total, cfg.size, cfg.publishers, cfg.window);
        if (cfg.rate)
            printf(", paced at %ld msgs/s", cfg.rate);
        if (cfg.batch)
            printf(", signed in batches of %ld", cfg.batch);
        printf(", up to %ld publishes a frame\n", cfg.publish_batch);
        printf("  throughput        %.0f msgs/s  (%.2f MB/s payload) in %.2f s, %ld errors\n", rate,
               rate * (double)cfg.size / 1e6, secs, errors);
        printf("  publish->receipt  p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f "
               "us\n",
               bench_pct(lat, total, .5), bench_pct(lat, total, .9), bench_pct(lat, total, .99),
               bench_pct(lat, total, .999), bench_pct(lat, total, 1));
        if (!cfg.no_subscriber)
            printf("  publish->delivery p50 %.0f us  p90 %.0f us  p99 %.0f us  max %.0f us  (%ld "
                   "delivered)\n",
                   bench_pct(sub.lat, delivered, .5), bench_pct(sub.lat, delivered, .9),
                   bench_pct(sub.lat, delivered, .99), bench_pct(sub.lat, delivered, 1), delivered);
        printf("  (client signing before the run: %.0f msgs/s on one core)\n",
               (double)cfg.messages / sign_s);
    }
    spbe_close(&signer);
    for (int p = 0; p < cfg.publishers; p++) {
        for (long k = 0; k < pubs[p].count; k++)
            free(pubs[p].signed_messages[k]);
        free(pubs[p].signed_messages);
        free(pubs[p].lengths);
        free(pubs[p].sent_ns);
        free(pubs[p].receipt_lat);
    }
    free(pubs);
    free(threads);
    free(lat);
    free(sub.lat);
    free(payload);
    pthread_barrier_destroy(&start_barrier);
    if (failed || errors)
        return cli_fail("bench", SPBE_INTERNAL, "%ld errors", errors);
    return EXIT_OK;
}
