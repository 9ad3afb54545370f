/* messaging.c - spbe pub and spbe sub. */
#include <getopt.h>
#include <signal.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "wire.h"

static const char pub_usage[] =
    "usage: spbe pub TOPIC [PAYLOAD | -] [options]\n"
    "\n"
    "Signs PAYLOAD (or standard input with '-') with the member's key, publishes it\n"
    "and prints the broker's signed receipt once the message is durably stored.\n"
    "  --schema TYPE         protobuf type name of the payload\n"
    "  --id HEX              message id (32 hex digits; default random). The same id\n"
    "                        from the same sender within the dedup window is stored once.\n"
    "  --count N             publish N messages (payload suffixed ' #i'), pipelined\n"
    "  --not-before TIME     durable consumers get it only from TIME on (RFC 3339 UTC,\n"
    "                        e.g. 2026-12-24T08:00:00Z); --delay-ms N: N ms from now\n"
    "  --expires TIME        consumers never get it after TIME; --ttl-ms N: N ms from now\n"
    "  --key FILE --broker EP --broker-key HEX --json --timeout-ms N\n";

static const char sub_usage[] =
    "usage: spbe sub PATTERN [options]\n"
    "\n"
    "Subscribes to PATTERN ('*' one token, '>' the rest) and prints each message with\n"
    "its topic, sequence, sender and payload (NDJSON with --json).\n"
    "  --from new|first|SEQ  where to start on each matching topic (default new)\n"
    "  --count N             exit after N messages\n"
    "  --idle-ms N           exit after N ms without a message\n"
    "  --verify              verify each message's signature against the sender's key\n"
    "  --consumer NAME       through the durable consumer NAME (created on PATTERN if it\n"
    "                        does not exist; PATTERN may be '-' to attach to it): the\n"
    "                        broker keeps its position, and clients of one consumer share\n"
    "                        its messages. --from then also takes a time (RFC 3339 UTC,\n"
    "                        e.g. 2026-11-22T08:00:00Z)\n"
    "  --ack | --no-ack      acknowledge each message printed (default), or leave them\n"
    "                        unacknowledged: delivered again after the ack wait\n"
    "  --ack-wait-ms N --max-deliveries N --max-in-flight N --dead-letter-expired\n"
    "                        settings of a consumer created here\n"
    "  --confirm             at the end, sign a delivery receipt per topic up to the last\n"
    "                        sequence received (it says every message up to it arrived:\n"
    "                        read the topic from its start); the broker logs it, and the\n"
    "                        evidence of those messages (spbe audit prove) carries it\n"
    "  --key FILE --broker EP --broker-key HEX --json --timeout-ms N\n";

/* RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.fff]Z" to ns; -1 if it is not one. */
static int64_t
parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return -1;
    int64_t frac = 0, scale = 100000000;
    if (*rest == '.')
        for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10)
            frac += (*rest - '0') * scale;
    if (strcmp(rest, "Z") != 0)
        return -1;
    return (int64_t)timegm(&tm) * 1000000000 + frac;
}

typedef struct pub_args {
    const char *schema, *id_hex;
    long count;
    int64_t not_before_ns, expires_ns;
} pub_args;

static int
pub_option(int opt, const char *arg, void *ctx)
{
    pub_args *a = ctx;
    char *end;
    switch (opt) {
    case 1:
        a->schema = arg;
        return 0;
    case 2:
        a->id_hex = arg;
        return 0;
    case 3:
        a->count = strtol(arg, &end, 10);
        return *end || a->count < 1;
    case 4:
        return (a->not_before_ns = parse_time(arg)) <= 0;
    case 5: {
        long ms = strtol(arg, &end, 10);
        a->not_before_ns = wire_now_ns() + (int64_t)ms * 1000000;
        return *end || ms < 1;
    }
    case 6:
        return (a->expires_ns = parse_time(arg)) <= 0;
    case 7: {
        long ms = strtol(arg, &end, 10);
        a->expires_ns = wire_now_ns() + (int64_t)ms * 1000000;
        return *end || ms < 1;
    }
    }
    return 1;
}

static void
print_receipt(const spbe_receipt *r, int json)
{
    char hash[65], id[33], t[40];
    cli_hex(r->message_hash, 32, hash);
    cli_hex(r->message_id, 16, id);
    cli_time(r->accepted_ns, t, sizeof t);
    if (json) {
        printf("{\"code\":\"%s\",\"topic\":", spbe_error_name(r->code));
        cli_json_string(stdout, r->topic);
        printf(",\"sequence\":%llu,\"accepted\":\"%s\",\"id\":\"%s\",\"hash\":\"%s\","
               "\"signed_by_broker\":%s",
               (unsigned long long)r->sequence, t, id, hash,
               r->signed_by_broker ? "true" : "false");
        if (r->code != SPBE_OK) {
            printf(",\"error\":");
            cli_json_string(stdout, r->error);
        } else if (r->tree_size) {
            char root[65];
            cli_hex(r->tree_root, 32, root);
            printf(",\"leaf_index\":%llu,\"tree_size\":%llu,\"tree_root\":\"%s\"",
                   (unsigned long long)r->leaf_index, (unsigned long long)r->tree_size, root);
        }
        printf("}\n");
    } else {
        printf("%-14s topic=%s seq=%llu accepted=%s id=%s hash=%.16s… %s", spbe_error_name(r->code),
               r->topic, (unsigned long long)r->sequence, r->sequence ? t : "-", id, hash,
               r->signed_by_broker ? "receipt-signature=valid" : "receipt-signature=none");
        if (r->code == SPBE_OK && r->tree_size)
            printf(" leaf=%llu/%llu", (unsigned long long)r->leaf_index,
                   (unsigned long long)r->tree_size);
        printf("\n");
    }
}

typedef struct pub_state {
    int json, failures;
    int last_code;
} pub_state;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    pub_state *ps = arg;
    print_receipt(r, ps->json);
    if (r->code != SPBE_OK) {
        ps->failures++;
        ps->last_code = r->code;
    }
}

static uint8_t *
read_stdin(size_t *len)
{
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
    }
    *len = n;
    return buf;
}

int
cmd_pub(int argc, char **argv)
{
    static const struct option opts[] = {
        {"schema", required_argument, 0, 1},   {"id", required_argument, 0, 2},
        {"count", required_argument, 0, 3},    {"not-before", required_argument, 0, 4},
        {"delay-ms", required_argument, 0, 5}, {"expires", required_argument, 0, 6},
        {"ttl-ms", required_argument, 0, 7},   {0, 0, 0, 0}};
    cli_common common;
    pub_args a = {.count = 1};
    int i = cli_parse(argc, argv, &common, opts, "", pub_option, &a, pub_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - i < 1 || argc - i > 2) {
        fputs(pub_usage, stderr);
        return EXIT_USAGE;
    }
    const char *topic = argv[i];
    uint8_t id[16];
    spbe_message_options mo = {
        .schema = a.schema, .not_before_ns = a.not_before_ns, .expires_ns = a.expires_ns};
    if (a.id_hex) {
        if (wire_hex_decode(a.id_hex, id, sizeof id) != SPBE_OK) {
            fprintf(stderr, "spbe pub: --id takes 32 hex digits\n");
            return EXIT_USAGE;
        }
        if (a.count > 1) {
            fprintf(stderr, "spbe pub: --id and --count > 1 exclude each other\n");
            return EXIT_USAGE;
        }
        mo.id = id;
    }
    uint8_t *payload = NULL;
    size_t len = 0;
    if (argc - i == 2 && strcmp(argv[i + 1], "-") == 0) {
        payload = read_stdin(&len);
        if (!payload)
            return cli_fail("pub", SPBE_INTERNAL, "cannot read standard input");
    } else if (argc - i == 2) {
        len = strlen(argv[i + 1]);
        payload = (uint8_t *)strdup(argv[i + 1]);
    }
    spbe_client *c = cli_connect(&common, "pub");
    if (!c) {
        free(payload);
        return EXIT_ERROR;
    }
    int exit_code = EXIT_OK;
    if (a.count == 1) {
        spbe_receipt r;
        int rc = spbe_publish(c, topic, payload, len, &mo, &r);
        if (r.signed_by_broker || rc == SPBE_OK || r.sequence)
            print_receipt(&r, common.json);
        if (rc != SPBE_OK)
            exit_code = cli_fail("pub", rc, "%s", r.error[0] ? r.error : spbe_last_error(c));
    } else {
        pub_state ps = {common.json, 0, 0};
        spbe_set_receipt_handler(c, on_receipt, &ps);
        size_t cap = len + 32;
        uint8_t *buf = malloc(cap);
        for (long k = 0; buf && k < a.count; k++) {
            int n = snprintf((char *)buf, cap, "%.*s #%ld", (int)len,
                             payload ? (char *)payload : "", k + 1);
            int rc = spbe_publish_async(c, topic, buf, (size_t)n, &mo, NULL);
            if (rc == SPBE_OK && spbe_in_flight(c) >= 1000)
                rc = spbe_dispatch(c, 0, NULL);
            if (rc != SPBE_OK) {
                exit_code = cli_fail("pub", rc, "%s", spbe_last_error(c));
                break;
            }
        }
        free(buf);
        int rc = spbe_flush(c, common.timeout_ms ? common.timeout_ms : 30000);
        if (rc != SPBE_OK && exit_code == EXIT_OK)
            exit_code = cli_fail("pub", rc, "%s", spbe_last_error(c));
        if (ps.failures && exit_code == EXIT_OK)
            exit_code = cli_fail("pub", ps.last_code, "%d of %ld messages not accepted",
                                 ps.failures, a.count);
    }
    free(payload);
    spbe_close(&c);
    return exit_code;
}

/* ------------------------------------------------------------ sub */

#define CONFIRM_TOPICS 256

typedef struct sub_state {
    spbe_client *client;
    int json, verify;
    long count, seen;
    int bad;
    int no_ack;
    int confirm; /* sign a delivery receipt per topic at the end */
    struct {
        char topic[WIRE_TOPIC_MAX_BYTES + 1];
        uint64_t last;
    } got[CONFIRM_TOPICS];
    size_t n_got;
} sub_state;

/* The highest sequence received per topic, for --confirm. */
static void
note_received(sub_state *st, const char *topic, uint64_t sequence)
{
    for (size_t i = 0; i < st->n_got; i++)
        if (strcmp(st->got[i].topic, topic) == 0) {
            if (sequence > st->got[i].last)
                st->got[i].last = sequence;
            return;
        }
    if (st->n_got < CONFIRM_TOPICS) {
        snprintf(st->got[st->n_got].topic, sizeof st->got[0].topic, "%s", topic);
        st->got[st->n_got++].last = sequence;
    }
}

static volatile sig_atomic_t sub_stop;

static void
on_sub_signal(int sig)
{
    (void)sig;
    sub_stop = 1;
}

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    sub_state *st = arg;
    if (st->count && st->seen >= st->count)
        return; /* a consumer's: delivered again once this client has gone */
    st->seen++;
    const char *verdict = "unchecked";
    if (st->verify) {
        int rc = spbe_verify(st->client, d);
        verdict = rc == SPBE_OK ? "valid" : spbe_error_name(rc);
        if (rc != SPBE_OK)
            st->bad++;
    }
    char t[40], id[33];
    cli_time(d->accepted_ns, t, sizeof t);
    cli_hex(d->id, 16, id);
    if (st->json) {
        printf("{\"topic\":");
        cli_json_string(stdout, d->topic);
        printf(",\"sequence\":%llu,\"accepted\":\"%s\",\"sender\":",
               (unsigned long long)d->sequence, t);
        cli_json_string(stdout, d->sender);
        printf(",\"id\":\"%s\",\"schema\":", id);
        cli_json_string(stdout, d->schema);
        printf(",\"signature\":\"%s\",\"payload\":", verdict);
        cli_payload(stdout, d->schema, d->payload, d->payload_len, 1, 0);
        if (d->consumer)
            printf(",\"consumer\":\"%s\",\"delivery_count\":%u", d->consumer, d->delivery_count);
        printf("}\n");
    } else {
        printf("%s #%llu %s from %s: ", d->topic, (unsigned long long)d->sequence, t, d->sender);
        if (d->consumer && d->delivery_count > 1)
            printf("(delivery %u) ", d->delivery_count);
        cli_payload(stdout, d->schema, d->payload, d->payload_len, 0, 200);
        if (st->verify)
            printf("  [signature %s]", verdict);
        printf("\n");
    }
    fflush(stdout);
    if (st->confirm)
        note_received(st, d->topic, d->sequence);
    if (d->consumer && !st->no_ack)
        spbe_ack(st->client, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 0);
}

typedef struct sub_args {
    const char *from, *consumer;
    long count, idle_ms;
    int verify, no_ack, confirm;
    spbe_consumer_options copt;
} sub_args;

static int
parse_u32(const char *arg, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);
    if (*end || arg[0] == '-' || v == 0 || v > UINT32_MAX)
        return 1;
    *out = (uint32_t)v;
    return 0;
}

static int
sub_option(int opt, const char *arg, void *ctx)
{
    sub_args *a = ctx;
    char *end;
    switch (opt) {
    case 1:
        a->from = arg;
        return 0;
    case 2:
        a->count = strtol(arg, &end, 10);
        return *end || a->count < 1;
    case 3:
        a->idle_ms = strtol(arg, &end, 10);
        return *end || a->idle_ms < 1;
    case 4:
        a->verify = 1;
        return 0;
    case 5:
        a->consumer = arg;
        return 0;
    case 6:
        a->no_ack = 0;
        return 0;
    case 7:
        a->no_ack = 1;
        return 0;
    case 8:
        return parse_u32(arg, &a->copt.ack_wait_ms);
    case 9:
        return parse_u32(arg, &a->copt.max_deliveries);
    case 10:
        return parse_u32(arg, &a->copt.max_in_flight);
    case 11:
        a->copt.dead_letter_expired = 1;
        return 0;
    case 12:
        a->confirm = 1;
        return 0;
    }
    return 1;
}

int
cmd_sub(int argc, char **argv)
{
    static const struct option opts[] = {{"from", required_argument, 0, 1},
                                         {"count", required_argument, 0, 2},
                                         {"idle-ms", required_argument, 0, 3},
                                         {"verify", no_argument, 0, 4},
                                         {"consumer", required_argument, 0, 5},
                                         {"ack", no_argument, 0, 6},
                                         {"no-ack", no_argument, 0, 7},
                                         {"ack-wait-ms", required_argument, 0, 8},
                                         {"max-deliveries", required_argument, 0, 9},
                                         {"max-in-flight", required_argument, 0, 10},
                                         {"dead-letter-expired", no_argument, 0, 11},
                                         {"confirm", no_argument, 0, 12},
                                         {0, 0, 0, 0}};
    cli_common common;
    sub_args a = {0};
    int i = cli_parse(argc, argv, &common, opts, "", sub_option, &a, sub_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - i != 1) {
        fputs(sub_usage, stderr);
        return EXIT_USAGE;
    }
    spbe_start start = SPBE_START_NEW;
    uint64_t seq = 0;
    int64_t start_time = 0;
    if (a.from && strcmp(a.from, "first") == 0) {
        start = SPBE_START_FIRST;
    } else if (a.from && a.consumer && (start_time = parse_time(a.from)) > 0) {
        start = SPBE_START_TIME;
    } else if (a.from && strcmp(a.from, "new") != 0) {
        char *end;
        seq = strtoull(a.from, &end, 10);
        if (*end || seq == 0 || a.from[0] == '-') {
            fprintf(stderr, "spbe sub: --from takes new, first, a sequence (1 or more) or, with "
                            "--consumer, a time (2026-11-22T08:00:00Z)\n");
            return EXIT_USAGE;
        }
        start = SPBE_START_SEQUENCE;
    }
    spbe_client *c = cli_connect(&common, "sub");
    if (!c)
        return EXIT_ERROR;
    sub_state st = {c, common.json, a.verify, a.count, 0, 0, a.no_ack, a.confirm};
    spbe_set_delivery_handler(c, on_delivery, &st);
    int rc;
    if (a.consumer) {
        a.copt.start = start;
        a.copt.start_sequence = seq;
        a.copt.start_time_ns = start_time;
        rc = spbe_consume(c, a.consumer, strcmp(argv[i], "-") ? argv[i] : NULL, &a.copt, NULL);
    } else {
        rc = spbe_subscribe(c, argv[i], start, seq, NULL);
    }
    if (rc != SPBE_OK) {
        int e = cli_fail("sub", rc, "%s", spbe_last_error(c));
        spbe_close(&c);
        return e;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sub_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int exit_code = EXIT_OK;
    while (!sub_stop && (!a.count || st.seen < a.count)) {
        int events;
        rc = spbe_dispatch(c, a.idle_ms ? (int)a.idle_ms : 500, &events);
        if (rc != SPBE_OK) {
            exit_code = cli_fail("sub", rc, "%s", spbe_last_error(c));
            break;
        }
        if (a.idle_ms && events == 0)
            break;
    }
    if (exit_code == EXIT_OK && st.bad)
        exit_code = cli_fail("sub", SPBE_BAD_SIGNATURE, "%d messages failed verification", st.bad);
    /* signed delivery receipts, cumulative: up to the last sequence of each topic */
    for (size_t k = 0; exit_code == EXIT_OK && k < st.n_got; k++) {
        uint64_t leaf;
        rc = spbe_confirm_delivery(c, st.got[k].topic, st.got[k].last, a.consumer, &leaf);
        if (rc != SPBE_OK)
            exit_code = cli_fail("sub", rc, "delivery receipt for %s: %s", st.got[k].topic,
                                 spbe_last_error(c));
        else
            fprintf(stderr, "spbe sub: signed delivery receipt for %s up to #%llu (leaf %llu)\n",
                    st.got[k].topic, (unsigned long long)st.got[k].last, (unsigned long long)leaf);
    }
    spbe_close(&c);
    return exit_code;
}
