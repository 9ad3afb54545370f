/*
 * stats.c - spbe stats: rates per topic and consumer from two samples a moment apart
 * (--watch: again and again, like top); spbe session ls: who is connected.
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "wire.h"

static const char stats_usage[] =
    "usage: spbe stats [--watch] [--interval-ms N] [--json]\n"
    "\n"
    "Rates per topic (messages accepted per second) and per consumer (deliveries and\n"
    "acknowledgements per second, pending, lag), from two samples --interval-ms apart\n"
    "(default 1000). --watch refreshes until Ctrl-C. A member sees the topics and\n"
    "consumers it may read; ops and admin see all.\n"
    "  --key FILE --broker EP --broker-key HEX\n";

static const char session_usage[] =
    "usage: spbe session ls [--json]\n"
    "\n"
    "The sessions established now: member, since when, signed messages received from it,\n"
    "deliveries sent to it, subscriptions. Needs the ops or admin role.\n"
    "  --key FILE --broker EP --broker-key HEX\n";

typedef struct sample {
    Spbe__V1__Reply *topics, *consumers;
    int64_t at_ns;
} sample;

static void
sample_free(sample *s)
{
    if (s->topics)
        spbe__v1__reply__free_unpacked(s->topics, NULL);
    if (s->consumers)
        spbe__v1__reply__free_unpacked(s->consumers, NULL);
    s->topics = s->consumers = NULL;
}

static int
sample_take(spbe_client *c, sample *s)
{
    Spbe__V1__TopicList tl = SPBE__V1__TOPIC_LIST__INIT;
    Spbe__V1__ConsumerList cl = SPBE__V1__CONSUMER_LIST__INIT;
    Spbe__V1__Command a = SPBE__V1__COMMAND__INIT, b = SPBE__V1__COMMAND__INIT;
    a.body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST;
    a.topic_list = &tl;
    b.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_LIST;
    b.consumer_list = &cl;
    s->at_ns = wire_mono_ns();
    int rc = cli_call(c, &a, &s->topics, NULL, NULL);
    if (rc == SPBE_OK)
        rc = cli_call(c, &b, &s->consumers, NULL, NULL);
    if (rc == SPBE_OK && (s->topics->body_case != SPBE__V1__REPLY__BODY_TOPICS ||
                          s->consumers->body_case != SPBE__V1__REPLY__BODY_CONSUMERS))
        rc = SPBE_BAD_REQUEST;
    return rc;
}

static const Spbe__V1__TopicInfo *
topic_in(const sample *s, const char *name)
{
    for (size_t i = 0; i < s->topics->topics->n_topics; i++)
        if (strcmp(s->topics->topics->topics[i]->name, name) == 0)
            return s->topics->topics->topics[i];
    return NULL;
}

static const Spbe__V1__ConsumerInfo *
consumer_in(const sample *s, const char *name)
{
    for (size_t i = 0; i < s->consumers->consumers->n_consumers; i++)
        if (strcmp(s->consumers->consumers->consumers[i]->config->name, name) == 0)
            return s->consumers->consumers->consumers[i];
    return NULL;
}

static double
rate(uint64_t before, uint64_t after, double secs)
{
    return after > before && secs > 0 ? (double)(after - before) / secs : 0;
}

static void
print_rates(const sample *a, const sample *b, int json)
{
    double secs = (double)(b->at_ns - a->at_ns) / 1e9;
    const Spbe__V1__Topics *tb = b->topics->topics;
    const Spbe__V1__Consumers *cb = b->consumers->consumers;
    if (json) {
        printf("{\"seconds\":%.3f,\"topics\":[", secs);
        for (size_t i = 0; i < tb->n_topics; i++) {
            const Spbe__V1__TopicInfo *t = tb->topics[i], *o = topic_in(a, t->name);
            printf("%s{\"topic\":", i ? "," : "");
            cli_json_string(stdout, t->name);
            printf(",\"msgs_per_s\":%.1f,\"last_sequence\":%llu,\"messages\":%llu,\"bytes\":%llu}",
                   rate(o ? o->last_sequence : t->last_sequence, t->last_sequence, secs),
                   (unsigned long long)t->last_sequence, (unsigned long long)t->messages,
                   (unsigned long long)t->bytes);
        }
        printf("],\"consumers\":[");
        for (size_t i = 0; i < cb->n_consumers; i++) {
            const Spbe__V1__ConsumerInfo *c = cb->consumers[i];
            const Spbe__V1__ConsumerInfo *o = consumer_in(a, c->config->name);
            printf("%s{\"consumer\":", i ? "," : "");
            cli_json_string(stdout, c->config->name);
            printf(",\"delivered_per_s\":%.1f,\"acked_per_s\":%.1f,\"pending\":%llu,\"lag\":%llu,"
                   "\"attached\":%u}",
                   rate(o ? o->delivered : c->delivered, c->delivered, secs),
                   rate(o ? o->acked : c->acked, c->acked, secs), (unsigned long long)c->pending,
                   (unsigned long long)c->lag, c->attached);
        }
        printf("]}\n");
        fflush(stdout);
        return;
    }
    printf("%-44s %12s %12s %14s\n", "TOPIC", "MSGS/S", "LAST SEQ", "BYTES");
    for (size_t i = 0; i < tb->n_topics; i++) {
        const Spbe__V1__TopicInfo *t = tb->topics[i], *o = topic_in(a, t->name);
        printf("%-44s %12.1f %12llu %14llu\n", t->name,
               rate(o ? o->last_sequence : t->last_sequence, t->last_sequence, secs),
               (unsigned long long)t->last_sequence, (unsigned long long)t->bytes);
    }
    if (cb->n_consumers)
        printf("\n%-30s %12s %12s %10s %10s %8s\n", "CONSUMER", "DELIVERED/S", "ACKED/S", "PENDING",
               "LAG", "ATTACHED");
    for (size_t i = 0; i < cb->n_consumers; i++) {
        const Spbe__V1__ConsumerInfo *c = cb->consumers[i];
        const Spbe__V1__ConsumerInfo *o = consumer_in(a, c->config->name);
        printf("%-30s %12.1f %12.1f %10llu %10llu %8u\n", c->config->name,
               rate(o ? o->delivered : c->delivered, c->delivered, secs),
               rate(o ? o->acked : c->acked, c->acked, secs), (unsigned long long)c->pending,
               (unsigned long long)c->lag, c->attached);
    }
    fflush(stdout);
}

static volatile sig_atomic_t stats_stop;

static void
on_stats_signal(int sig)
{
    (void)sig;
    stats_stop = 1;
}

typedef struct stats_args {
    int watch;
    long interval_ms;
} stats_args;

static int
stats_option(int opt, const char *arg, void *ctx)
{
    stats_args *a = ctx;
    char *end;
    if (opt == 1) {
        a->watch = 1;
        return 0;
    }
    a->interval_ms = strtol(arg, &end, 10);
    return *end || a->interval_ms < 100 || a->interval_ms > 3600000;
}

int
cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"watch", no_argument, 0, 1}, {"interval-ms", required_argument, 0, 2}, {0, 0, 0, 0}};
    cli_common common;
    stats_args a = {0, 1000};
    int i = cli_parse(argc, argv, &common, opts, "", stats_option, &a, stats_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc != i) {
        fputs(stats_usage, stderr);
        return EXIT_USAGE;
    }
    spbe_client *c = cli_connect(&common, "stats");
    if (!c)
        return EXIT_ERROR;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stats_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sample prev = {0}, cur = {0};
    int rc = sample_take(c, &prev), exit_code = EXIT_OK;
    while (rc == SPBE_OK && !stats_stop) {
        struct timespec ts = {a.interval_ms / 1000, (a.interval_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        if (stats_stop)
            break;
        rc = sample_take(c, &cur);
        if (rc != SPBE_OK)
            break;
        if (a.watch && !common.json)
            printf("\033[H\033[2J");
        print_rates(&prev, &cur, common.json);
        sample_free(&prev);
        prev = cur;
        memset(&cur, 0, sizeof cur);
        if (!a.watch)
            break;
    }
    if (rc != SPBE_OK)
        exit_code = cli_fail("stats", rc, "%s", spbe_last_error(c));
    sample_free(&prev);
    sample_free(&cur);
    spbe_close(&c);
    return exit_code;
}

int
cmd_session(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, session_usage);
    if (early >= 0)
        return early;
    cli_common common;
    int i = cli_parse(argc - 1, argv + 1, &common, NULL, "", NULL, NULL, session_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (strcmp(argv[1], "ls") != 0 || argc - 1 != i) {
        fputs(session_usage, stderr);
        return EXIT_USAGE;
    }
    spbe_client *c = cli_connect(&common, "session");
    if (!c)
        return EXIT_ERROR;
    Spbe__V1__SessionList sl = SPBE__V1__SESSION_LIST__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_SESSION_LIST;
    cmd.session_list = &sl;
    Spbe__V1__Reply *reply = NULL;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL), exit_code = EXIT_OK;
    if (rc != SPBE_OK)
        exit_code = cli_fail("session", rc, "%s", spbe_last_error(c));
    else if (reply->code != SPBE__V1__ERROR_CODE__OK)
        exit_code = cli_fail("session", (int)reply->code, "%s", reply->error);
    else if (reply->body_case == SPBE__V1__REPLY__BODY_SESSIONS) {
        const Spbe__V1__Sessions *ss = reply->sessions;
        if (!common.json)
            printf("%-32s %-27s %10s %10s %5s\n", "MEMBER", "SINCE", "RECEIVED", "DELIVERED",
                   "SUBS");
        for (size_t k = 0; k < ss->n_sessions; k++) {
            const Spbe__V1__SessionInfo *s = ss->sessions[k];
            char since[40];
            cli_time(s->since_ns, since, sizeof since);
            if (common.json) {
                printf("{\"member\":");
                cli_json_string(stdout, s->member);
                printf(",\"since\":\"%s\",\"received\":%llu,\"delivered\":%llu,"
                       "\"subscriptions\":%u}\n",
                       since, (unsigned long long)s->received, (unsigned long long)s->delivered,
                       s->subscriptions);
            } else {
                printf("%-32s %-27s %10llu %10llu %5u\n", s->member, since,
                       (unsigned long long)s->received, (unsigned long long)s->delivered,
                       s->subscriptions);
            }
        }
    }
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}
