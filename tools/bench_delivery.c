/*
 * bench_delivery.c - spbe bench consume and spbe bench req: durable consumer
 * throughput (deliver + ack) with one or several attached members, and request/reply
 * round trips per second with latency percentiles.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "wire.h"

static const char consume_usage[] =
    "usage: spbe bench consume [options]\n"
    "\n"
    "Fills a topic with signed messages, then measures a durable consumer: every message\n"
    "delivered from LMDB and acknowledged, shared by the attached members, until the\n"
    "broker counts no pending delivery. The identity needs the right to publish and\n"
    "subscribe to the topic. The consumer is deleted afterwards.\n"
    "  --messages N       messages (default 100000)\n"
    "  --size BYTES       payload size (default 256)\n"
    "  --members N        attached sessions sharing the consumer (default 1)\n"
    "  --max-in-flight N  unacknowledged deliveries per member (default 1000)\n"
    "  --topic TOPIC      (default bench.consume)\n"
    "  --key FILE --broker EP --broker-key HEX --json\n";

static const char req_usage[] =
    "usage: spbe bench req [options]\n"
    "\n"
    "Measures request/reply: servers answer at once with the request's payload, callers\n"
    "send signed requests one after another and wait for each signed reply (both\n"
    "logged by the broker). The identity needs the rights to serve and call the service.\n"
    "  --requests N  requests in all (default 20000)\n"
    "  --size BYTES  payload size (default 256)\n"
    "  --servers N   serving sessions (default 1)\n"
    "  --callers N   calling sessions (default 1)\n"
    "  --service S   (default bench.echo)\n"
    "  --key FILE --broker EP --broker-key HEX --json\n";

typedef struct delivery_config {
    long messages, size, members, max_in_flight, servers, callers;
    const char *topic;
    const cli_common *common;
} delivery_config;

static int
delivery_option(int opt, const char *arg, void *ctx)
{
    delivery_config *b = ctx;
    if (opt == 7) {
        b->topic = arg;
        return 0;
    }
    char *end;
    long v = strtol(arg, &end, 10);
    if (*end || v < 1)
        return 1;
    switch (opt) {
    case 1:
        b->messages = v;
        return 0;
    case 2:
        b->size = v;
        return 0;
    case 3:
        b->members = v;
        return 0;
    case 4:
        b->max_in_flight = v;
        return 0;
    case 5:
        b->servers = v;
        return 0;
    case 6:
        b->callers = v;
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ consume */

typedef struct member {
    const delivery_config *cfg;
    const char *consumer;
    spbe_client *c;
    volatile long *received; /* all members together */
    long mine;
    volatile int *stop;
    int rc;
    char error[256];
} member;

static void
on_member_delivery(const spbe_delivery *d, void *arg)
{
    member *m = arg;
    m->mine++;
    __atomic_add_fetch(m->received, 1, __ATOMIC_RELAXED);
    spbe_ack(m->c, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 0);
}

static void *
member_run(void *arg)
{
    member *m = arg;
    spbe_set_delivery_handler(m->c, on_member_delivery, m);
    m->rc = spbe_consume(m->c, m->consumer, NULL, NULL, NULL);
    if (m->rc != SPBE_OK) {
        snprintf(m->error, sizeof m->error, "%s", spbe_last_error(m->c));
        return NULL;
    }
    while (!*m->stop) {
        int rc = spbe_dispatch(m->c, 20, NULL);
        if (rc != SPBE_OK) {
            m->rc = rc;
            snprintf(m->error, sizeof m->error, "%s", spbe_last_error(m->c));
            break;
        }
    }
    spbe_flush(m->c, 5000);
    return NULL;
}

/* The consumer's pending count and acknowledged total, from the broker. */
static int
consumer_counts(spbe_client *c, const char *name, uint64_t *pending, uint64_t *acked)
{
    Spbe__V1__ConsumerGet get = SPBE__V1__CONSUMER_GET__INIT;
    get.name = (char *)name;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_GET;
    cmd.consumer_get = &get;
    Spbe__V1__Reply *reply;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL);
    if (rc != SPBE_OK)
        return rc;
    rc = (int)reply->code;
    if (rc == SPBE_OK && reply->body_case == SPBE__V1__REPLY__BODY_CONSUMER) {
        *pending = reply->consumer->pending + reply->consumer->lag;
        *acked = reply->consumer->acked;
    } else if (rc == SPBE_OK) {
        rc = SPBE_BAD_REQUEST;
    }
    spbe__v1__reply__free_unpacked(reply, NULL);
    return rc;
}

static int
consumer_remove(spbe_client *c, const char *name)
{
    Spbe__V1__ConsumerDelete del = SPBE__V1__CONSUMER_DELETE__INIT;
    del.name = (char *)name;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_DELETE;
    cmd.consumer_delete = &del;
    Spbe__V1__Reply *reply;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL);
    if (rc == SPBE_OK) {
        rc = (int)reply->code;
        spbe__v1__reply__free_unpacked(reply, NULL);
    }
    return rc;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int
bench_consume(const delivery_config *cfg)
{
    spbe_client *ctl = bench_client(cfg->common, 0);
    if (!ctl)
        return EXIT_ERROR;
    /* fill the topic; the consumer starts at this run's first message */
    uint64_t first = 0;
    double fill_rate = 0;
    int rc = bench_fill(ctl, cfg->topic, cfg->messages, cfg->size, &first, &fill_rate);
    if (rc != SPBE_OK) {
        spbe_close(&ctl);
        return cli_fail("bench", rc, "filling %s: %s", cfg->topic, spbe_last_error(ctl));
    }
    char name[64];
    snprintf(name, sizeof name, "bench-%ld-%ld", (long)getpid(), (long)time(NULL));
    spbe_consumer_options o = {.start = SPBE_START_SEQUENCE,
                               .start_sequence = first,
                               .max_in_flight = (uint32_t)cfg->max_in_flight};
    if (spbe_consume(ctl, name, cfg->topic, &o, NULL) != SPBE_OK) {
        rc = cli_fail("bench", SPBE_FORBIDDEN, "cannot create consumer: %s", spbe_last_error(ctl));
        spbe_close(&ctl);
        return rc;
    }
    /* the control session created it and holds nothing: detach by closing it */
    spbe_close(&ctl);
    ctl = bench_client(cfg->common, 0);

    member *members = calloc((size_t)cfg->members, sizeof *members);
    pthread_t *threads = calloc((size_t)cfg->members, sizeof *threads);
    volatile long received = 0;
    volatile int stop = 0;
    for (long i = 0; i < cfg->members; i++) {
        members[i] = (member){.cfg = cfg, .consumer = name, .received = &received, .stop = &stop};
        members[i].c = bench_client(cfg->common, 0);
        if (!members[i].c)
            return EXIT_ERROR;
    }
    int64_t t0 = wire_mono_ns();
    for (long i = 0; i < cfg->members; i++)
        pthread_create(&threads[i], NULL, member_run, &members[i]);
    while (__atomic_load_n(&received, __ATOMIC_RELAXED) < cfg->messages) {
        sleep_ms(2);
        int dead = 0;
        for (long i = 0; i < cfg->members; i++)
            dead += members[i].rc != SPBE_OK;
        if (dead == cfg->members)
            break;
    }
    int64_t t_delivered = wire_mono_ns();
    uint64_t pending = 1, acked = 0;
    int64_t give_up = t_delivered + 30000000000LL;
    while (pending && wire_mono_ns() < give_up) {
        if (consumer_counts(ctl, name, &pending, &acked) != SPBE_OK)
            break;
        if (pending)
            sleep_ms(1);
    }
    int64_t t1 = wire_mono_ns();
    stop = 1;
    int failed = pending != 0;
    for (long i = 0; i < cfg->members; i++) {
        pthread_join(threads[i], NULL);
        if (members[i].rc != SPBE_OK) {
            fprintf(stderr, "spbe bench: member %ld: %s: %s\n", i, spbe_error_name(members[i].rc),
                    members[i].error);
            failed = 1;
        }
        spbe_close(&members[i].c);
    }
    consumer_remove(ctl, name);
    spbe_close(&ctl);
    double secs = (double)(t1 - t0) / 1e9, deliver_s = (double)(t_delivered - t0) / 1e9;
    double rate = (double)acked / secs;
    if (cfg->common->json) {
        printf("{\"messages\":%ld,\"size\":%ld,\"members\":%ld,\"max_in_flight\":%ld,"
               "\"acked\":%llu,\"seconds\":%.3f,\"msgs_per_s\":%.0f,\"delivered_per_s\":%.0f,"
               "\"fill_msgs_per_s\":%.0f,\"per_member\":[",
               cfg->messages, cfg->size, cfg->members, cfg->max_in_flight,
               (unsigned long long)acked, secs, rate, (double)received / deliver_s, fill_rate);
        for (long i = 0; i < cfg->members; i++)
            printf("%s%ld", i ? "," : "", members[i].mine);
        printf("]}\n");
    } else {
        printf("durable consumer: %ld messages of %ld bytes, %ld member(s), %ld in flight each\n",
               cfg->messages, cfg->size, cfg->members, cfg->max_in_flight);
        printf("  deliver + ack     %.0f msgs/s  (%llu acknowledged in %.2f s; all delivered "
               "after %.2f s)\n",
               rate, (unsigned long long)acked, secs, deliver_s);
        printf("  shares           ");
        for (long i = 0; i < cfg->members; i++)
            printf(" %ld", members[i].mine);
        printf("\n  (filled beforehand at %.0f msgs/s)\n", fill_rate);
    }
    free(members);
    free(threads);
    if (failed)
        return cli_fail("bench", SPBE_INTERNAL, "%llu of %ld acknowledged",
                        (unsigned long long)acked, cfg->messages);
    return EXIT_OK;
}

/* ------------------------------------------------------------ req */

typedef struct echo_server {
    const delivery_config *cfg;
    const char *service;
    spbe_client *c;
    volatile int *stop;
    long served;
    int rc;
} echo_server;

static void
on_echo(spbe_client *c, const spbe_service_request *r, void *arg)
{
    echo_server *s = arg;
    s->served++;
    spbe_respond(c, r->service, r->ref, r->id, r->payload, r->payload_len, NULL, NULL);
}

static void *
echo_run(void *arg)
{
    echo_server *s = arg;
    while (!*s->stop) {
        int rc = spbe_dispatch(s->c, 20, NULL);
        if (rc != SPBE_OK) {
            s->rc = rc;
            break;
        }
    }
    return NULL;
}

typedef struct caller {
    const delivery_config *cfg;
    const char *service;
    spbe_client *c;
    long count;
    int64_t *lat;
    long done, errors;
    char error[256];
} caller;

static pthread_barrier_t callers_ready;

static void *
caller_run(void *arg)
{
    caller *k = arg;
    uint8_t *payload = calloc(1, (size_t)k->cfg->size);
    pthread_barrier_wait(&callers_ready);
    for (long i = 0; i < k->count; i++) {
        spbe_response r;
        int64_t t = wire_mono_ns();
        int rc = spbe_request(k->c, k->service, payload, (size_t)k->cfg->size, 10000, NULL, &r);
        if (rc == SPBE_OK && r.receipts_verified && r.payload_len == (size_t)k->cfg->size) {
            k->lat[k->done++] = wire_mono_ns() - t;
        } else {
            if (!k->errors)
                snprintf(k->error, sizeof k->error, "%s: %.200s", spbe_error_name(rc), r.error);
            k->errors++;
        }
        spbe_response_free(&r);
    }
    free(payload);
    return NULL;
}

static int
bench_req(const delivery_config *cfg)
{
    const char *service = cfg->topic;
    volatile int stop = 0;
    echo_server *servers = calloc((size_t)cfg->servers, sizeof *servers);
    pthread_t *server_threads = calloc((size_t)cfg->servers, sizeof *server_threads);
    caller *callers = calloc((size_t)cfg->callers, sizeof *callers);
    pthread_t *caller_threads = calloc((size_t)cfg->callers, sizeof *caller_threads);
    int exit_code = EXIT_OK;
    for (long i = 0; i < cfg->servers; i++) {
        echo_server *s = &servers[i];
        *s = (echo_server){.cfg = cfg, .service = service, .stop = &stop};
        s->c = bench_client(cfg->common, 0);
        if (!s->c)
            return EXIT_ERROR;
        if (spbe_serve(s->c, service, on_echo, s) != SPBE_OK)
            return cli_fail("bench", SPBE_FORBIDDEN, "cannot serve %s: %s", service,
                            spbe_last_error(s->c));
        pthread_create(&server_threads[i], NULL, echo_run, s);
    }
    int64_t *lat = calloc((size_t)cfg->messages, sizeof *lat);
    long offset = 0;
    pthread_barrier_init(&callers_ready, NULL, (unsigned)cfg->callers + 1);
    for (long i = 0; i < cfg->callers; i++) {
        caller *k = &callers[i];
        *k = (caller){.cfg = cfg, .service = service};
        k->count = cfg->messages / cfg->callers + (i < cfg->messages % cfg->callers);
        k->lat = lat + offset;
        offset += k->count;
        k->c = bench_client(cfg->common, 0);
        if (!k->c)
            return EXIT_ERROR;
        pthread_create(&caller_threads[i], NULL, caller_run, k);
    }
    pthread_barrier_wait(&callers_ready);
    int64_t t0 = wire_mono_ns();
    long done = 0, errors = 0;
    for (long i = 0; i < cfg->callers; i++)
        pthread_join(caller_threads[i], NULL);
    int64_t t1 = wire_mono_ns();
    stop = 1;
    for (long i = 0; i < cfg->servers; i++) {
        pthread_join(server_threads[i], NULL);
        spbe_close(&servers[i].c);
    }
    /* the latencies of all callers, packed */
    int64_t *all = calloc((size_t)cfg->messages + 1, sizeof *all);
    for (long i = 0; i < cfg->callers; i++) {
        memcpy(all + done, callers[i].lat, (size_t)callers[i].done * sizeof *all);
        done += callers[i].done;
        errors += callers[i].errors;
        if (callers[i].errors)
            fprintf(stderr, "spbe bench: caller %ld: %ld errors, first: %s\n", i, callers[i].errors,
                    callers[i].error);
        spbe_close(&callers[i].c);
    }
    qsort(all, (size_t)done, sizeof *all, bench_cmp_i64);
    double secs = (double)(t1 - t0) / 1e9, rate = (double)done / secs;
    if (cfg->common->json) {
        printf("{\"requests\":%ld,\"size\":%ld,\"servers\":%ld,\"callers\":%ld,\"seconds\":%.3f,"
               "\"round_trips_per_s\":%.0f,\"errors\":%ld,"
               "\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f,"
               "\"max\":%.0f},\"per_server\":[",
               done, cfg->size, cfg->servers, cfg->callers, secs, rate, errors,
               bench_pct(all, done, .5), bench_pct(all, done, .9), bench_pct(all, done, .99),
               bench_pct(all, done, .999), bench_pct(all, done, 1));
        for (long i = 0; i < cfg->servers; i++)
            printf("%s%ld", i ? "," : "", servers[i].served);
        printf("]}\n");
    } else {
        printf("request/reply: %ld signed round trips of %ld bytes, %ld caller(s), %ld "
               "server(s)\n",
               done, cfg->size, cfg->callers, cfg->servers);
        printf("  throughput  %.0f round trips/s in %.2f s, %ld errors\n", rate, secs, errors);
        printf("  latency     p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
               bench_pct(all, done, .5), bench_pct(all, done, .9), bench_pct(all, done, .99),
               bench_pct(all, done, .999), bench_pct(all, done, 1));
        printf("  served     ");
        for (long i = 0; i < cfg->servers; i++)
            printf(" %ld", servers[i].served);
        printf("\n");
    }
    if (errors)
        exit_code =
            cli_fail("bench", SPBE_INTERNAL, "%ld of %ld requests failed", errors, cfg->messages);
    pthread_barrier_destroy(&callers_ready);
    free(all);
    free(lat);
    free(servers);
    free(server_threads);
    free(callers);
    free(caller_threads);
    return exit_code;
}

int
bench_delivery(const char *what, int argc, char **argv)
{
    static const struct option consume_opts[] = {
        {"messages", required_argument, 0, 1}, {"size", required_argument, 0, 2},
        {"members", required_argument, 0, 3},  {"max-in-flight", required_argument, 0, 4},
        {"topic", required_argument, 0, 7},    {0, 0, 0, 0}};
    static const struct option req_opts[] = {
        {"requests", required_argument, 0, 1}, {"size", required_argument, 0, 2},
        {"servers", required_argument, 0, 5},  {"callers", required_argument, 0, 6},
        {"service", required_argument, 0, 7},  {0, 0, 0, 0}};
    int consume = strcmp(what, "consume") == 0;
    const char *usage = consume ? consume_usage : req_usage;
    cli_common common;
    delivery_config cfg = {.messages = consume ? 100000 : 20000,
                           .size = 256,
                           .members = 1,
                           .max_in_flight = 1000,
                           .servers = 1,
                           .callers = 1,
                           .topic = consume ? "bench.consume" : "bench.echo",
                           .common = &common};
    int i = cli_parse(argc, argv, &common, consume ? consume_opts : req_opts, "", delivery_option,
                      &cfg, usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc != i || cfg.members > 64 || cfg.servers > 64 || cfg.callers > 256 ||
        cfg.size > 1 << 20) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    return consume ? bench_consume(&cfg) : bench_req(&cfg);
}
