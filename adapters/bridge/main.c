/* main.c - spbe-bridge: options, start, stop on SIGINT/SIGTERM. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "bridge.h"
#include "schema.h"
#include "wire.h"

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

static const char usage[] =
    "usage: spbe-bridge --tokens FILE [options]\n"
    "\n"
    "The HTTP/JSON bridge of spbe-bus: a member of the bus with its own identity that\n"
    "publishes what applications POST and delivers durable consumers to webhooks.\n"
    "\n"
    "  POST /v1/publish/<topic>   JSON (typed topics) or bytes (opaque topics); answers\n"
    "                             the broker's receipt once the message is on disk\n"
    "  GET  /v1/health            the bridge's session with the broker\n"
    "  Every request needs 'Authorization: Bearer TOKEN'. See docs/bridge.md.\n"
    "\n"
    "Bus:\n"
    "      --key FILE             identity file (default $SPBE_KEY)\n"
    "      --broker ENDPOINT      broker (default $SPBE_BROKER, the identity file's, or\n"
    "                             tcp://127.0.0.1:7400)\n"
    "      --broker-key HEX       the broker's public key (default $SPBE_BROKER_KEY or the\n"
    "                             identity file's)\n"
    "      --timeout-ms N         connecting and each call to the broker (default 5000)\n"
    "HTTP:\n"
    "      --listen HOST:PORT     address (default 127.0.0.1:7490; no TLS: keep it on\n"
    "                             loopback or behind a TLS proxy)\n"
    "      --tokens FILE          bearer tokens, one a line (16+ characters; '#' comments);\n"
    "                             the file must be mode 0600 or stricter (default\n"
    "                             $SPBE_BRIDGE_TOKENS)\n"
    "      --schema PATTERN=TYPE  payloads on matching topics are TYPE (repeatable, the first\n"
    "                             match applies; as the broker's --schema)\n"
    "      --max-body BYTES       largest request body (default 1048576)\n"
    "      --max-connections N    HTTP connections at a time (default 64)\n"
    "      --publish-timeout-ms N the wait for a receipt (default 10000; then 504)\n"
    "Webhooks (repeat the triple for more):\n"
    "      --consumer NAME        a durable consumer (created if new)...\n"
    "      --pattern PATTERN      ...on this pattern...\n"
    "      --webhook URL          ...whose deliveries are POSTed to URL\n"
    "      --from new|first       where a new consumer starts (default new)\n"
    "      --ack-wait-ms N        a new consumer's ack wait (default 30000)\n"
    "      --max-deliveries N     a new consumer's deliveries before the dead letters\n"
    "                             (default 5; the bridge's own retries do not count)\n"
    "      --webhook-concurrency N  POSTs in flight per consumer (default 4)\n"
    "      --webhook-timeout-ms N one POST (default 10000)\n"
    "      --retry-min-ms N       first retry after a failed POST (default 500)\n"
    "      --retry-max-ms N       longest wait between retries (default 60000)\n"
    "  -h, --help\n"
    "\n"
    "Exit status: 0 stopped cleanly, 1 an error, 2 bad usage.\n";

enum {
    OPT_KEY = 1000,
    OPT_BROKER,
    OPT_BROKER_KEY,
    OPT_TIMEOUT,
    OPT_LISTEN,
    OPT_TOKENS,
    OPT_SCHEMA,
    OPT_MAX_BODY,
    OPT_MAX_CONN,
    OPT_PUB_TIMEOUT,
    OPT_CONSUMER,
    OPT_PATTERN,
    OPT_WEBHOOK,
    OPT_FROM,
    OPT_ACK_WAIT,
    OPT_MAX_DELIVERIES,
    OPT_CONCURRENCY,
    OPT_HOOK_TIMEOUT,
    OPT_RETRY_MIN,
    OPT_RETRY_MAX,
};

void
bridge_log(const char *level, const char *event, const char *fmt, ...)
{
    char when[48], rest[1024] = "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    bridge_time((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, when, sizeof when);
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rest, sizeof rest, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "ts=%s level=%s event=%s%s%s\n", when, level, event, *rest ? " " : "", rest);
}

void
bridge_fatal(volatile sig_atomic_t *fatal)
{
    *fatal = 1;
    kill(getpid(), SIGTERM);
}

void
bridge_time(int64_t ns, char *out, size_t n)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%09lldZ", date, (long long)(ns % 1000000000));
}

static int
usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("spbe-bridge: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(spbe-bridge --help for the options)\n", stderr);
    return EXIT_USAGE;
}

static int
positive(const char *arg, long max, long *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg < '0' || *arg > '9' || *end || v <= 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parses argv into cfg: EXIT_OK, EXIT_USAGE, or -1 after --help. */
static int
parse(int argc, char **argv, bridge_config *cfg)
{
    static const struct option options[] = {
        {"key", required_argument, 0, OPT_KEY},
        {"broker", required_argument, 0, OPT_BROKER},
        {"broker-key", required_argument, 0, OPT_BROKER_KEY},
        {"timeout-ms", required_argument, 0, OPT_TIMEOUT},
        {"listen", required_argument, 0, OPT_LISTEN},
        {"tokens", required_argument, 0, OPT_TOKENS},
        {"schema", required_argument, 0, OPT_SCHEMA},
        {"max-body", required_argument, 0, OPT_MAX_BODY},
        {"max-connections", required_argument, 0, OPT_MAX_CONN},
        {"publish-timeout-ms", required_argument, 0, OPT_PUB_TIMEOUT},
        {"consumer", required_argument, 0, OPT_CONSUMER},
        {"pattern", required_argument, 0, OPT_PATTERN},
        {"webhook", required_argument, 0, OPT_WEBHOOK},
        {"from", required_argument, 0, OPT_FROM},
        {"ack-wait-ms", required_argument, 0, OPT_ACK_WAIT},
        {"max-deliveries", required_argument, 0, OPT_MAX_DELIVERIES},
        {"webhook-concurrency", required_argument, 0, OPT_CONCURRENCY},
        {"webhook-timeout-ms", required_argument, 0, OPT_HOOK_TIMEOUT},
        {"retry-min-ms", required_argument, 0, OPT_RETRY_MIN},
        {"retry-max-ms", required_argument, 0, OPT_RETRY_MAX},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    cfg->listen = "127.0.0.1:7490";
    cfg->tokens = getenv("SPBE_BRIDGE_TOKENS");
    cfg->max_body = 1 << 20;
    cfg->max_connections = 64;
    cfg->publish_timeout_ms = 10000;
    cfg->hook_concurrency = 4;
    cfg->hook_timeout_ms = 10000;
    cfg->retry_min_ms = 500;
    cfg->retry_max_ms = 60000;
    cfg->copt.start = SPBE_START_NEW;
    opterr = 0;
    int opt;
    long v;
    bridge_hook *hook = NULL;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case OPT_KEY:
            cfg->key = optarg;
            break;
        case OPT_BROKER:
            cfg->broker = optarg;
            break;
        case OPT_BROKER_KEY:
            cfg->broker_key = optarg;
            break;
        case OPT_LISTEN:
            cfg->listen = optarg;
            break;
        case OPT_TOKENS:
            cfg->tokens = optarg;
            break;
        case OPT_SCHEMA: {
            const char *eq = strchr(optarg, '=');
            if (cfg->n_schemas == BRIDGE_MAX_SCHEMAS)
                return usage_error("at most %d --schema bindings", BRIDGE_MAX_SCHEMAS);
            bridge_schema *s = &cfg->schemas[cfg->n_schemas];
            if (!eq || (size_t)(eq - optarg) >= sizeof s->pattern ||
                strlen(eq + 1) >= sizeof s->type)
                return usage_error("--schema '%s' is not PATTERN=TYPE", optarg);
            snprintf(s->pattern, sizeof s->pattern, "%.*s", (int)(eq - optarg), optarg);
            snprintf(s->type, sizeof s->type, "%s", eq + 1);
            if (!wire_pattern_valid(s->pattern) || strncmp(s->pattern, "$sys", 4) == 0)
                return usage_error("--schema '%s': invalid topic pattern (not $sys.)", optarg);
            if (!schema_find(s->type)) {
                char known[2048] = "";
                size_t used = 0;
                for (size_t i = 0; schema_at(i) && used < sizeof known; i++)
                    used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                                             i ? ", " : "", schema_at(i)->name);
                return usage_error("--schema '%s': unknown schema type '%s' (known: %s)", optarg,
                                   s->type, known);
            }
            cfg->n_schemas++;
            break;
        }
        case OPT_CONSUMER:
            if (cfg->n_hooks == BRIDGE_MAX_HOOKS)
                return usage_error("at most %d --consumer", BRIDGE_MAX_HOOKS);
            hook = &cfg->hooks[cfg->n_hooks++];
            hook->consumer = optarg;
            break;
        case OPT_PATTERN:
        case OPT_WEBHOOK:
            if (!hook)
                return usage_error("--%s belongs after a --consumer NAME",
                                   opt == OPT_PATTERN ? "pattern" : "webhook");
            if (opt == OPT_PATTERN) {
                if (hook->pattern)
                    return usage_error("consumer %s: one --pattern", hook->consumer);
                hook->pattern = optarg;
            } else {
                if (hook->url)
                    return usage_error("consumer %s: one --webhook", hook->consumer);
                hook->url = optarg;
            }
            break;
        case OPT_FROM:
            if (strcmp(optarg, "new") == 0)
                cfg->copt.start = SPBE_START_NEW;
            else if (strcmp(optarg, "first") == 0)
                cfg->copt.start = SPBE_START_FIRST;
            else
                return usage_error("--from is new or first, not '%s'", optarg);
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        case '?':
            return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
        default: {
            static const struct {
                int opt;
                const char *name;
                long max;
            } nums[] = {{OPT_TIMEOUT, "timeout-ms", 3600000},
                        {OPT_MAX_BODY, "max-body", 64L << 20},
                        {OPT_MAX_CONN, "max-connections", 10000},
                        {OPT_PUB_TIMEOUT, "publish-timeout-ms", 3600000},
                        {OPT_ACK_WAIT, "ack-wait-ms", 86400000},
                        {OPT_MAX_DELIVERIES, "max-deliveries", 1000000},
                        {OPT_CONCURRENCY, "webhook-concurrency", 1000},
                        {OPT_HOOK_TIMEOUT, "webhook-timeout-ms", 3600000},
                        {OPT_RETRY_MIN, "retry-min-ms", 3600000},
                        {OPT_RETRY_MAX, "retry-max-ms", 86400000}};
            size_t i = 0;
            while (i < sizeof nums / sizeof nums[0] && nums[i].opt != opt)
                i++;
            if (i == sizeof nums / sizeof nums[0])
                return usage_error("unknown option");
            if (positive(optarg, nums[i].max, &v))
                return usage_error("--%s must be a number from 1 to %ld, not '%s'", nums[i].name,
                                   nums[i].max, optarg);
            switch (opt) {
            case OPT_TIMEOUT:
                cfg->timeout_ms = (int)v;
                break;
            case OPT_MAX_BODY:
                cfg->max_body = (size_t)v;
                break;
            case OPT_MAX_CONN:
                cfg->max_connections = (int)v;
                break;
            case OPT_PUB_TIMEOUT:
                cfg->publish_timeout_ms = (int)v;
                break;
            case OPT_ACK_WAIT:
                cfg->copt.ack_wait_ms = (uint32_t)v;
                break;
            case OPT_MAX_DELIVERIES:
                cfg->copt.max_deliveries = (uint32_t)v;
                break;
            case OPT_CONCURRENCY:
                cfg->hook_concurrency = (int)v;
                break;
            case OPT_HOOK_TIMEOUT:
                cfg->hook_timeout_ms = (int)v;
                break;
            case OPT_RETRY_MIN:
                cfg->retry_min_ms = (int)v;
                break;
            case OPT_RETRY_MAX:
                cfg->retry_max_ms = (int)v;
                break;
            }
        }
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!cfg->tokens || !*cfg->tokens)
        return usage_error("--tokens FILE is required: nothing is served without a token");
    for (size_t i = 0; i < cfg->n_hooks; i++) {
        bridge_hook *h = &cfg->hooks[i];
        if (!h->pattern || !h->url)
            return usage_error("consumer %s needs --pattern and --webhook", h->consumer);
        if (strncmp(h->url, "http://", 7) != 0 && strncmp(h->url, "https://", 8) != 0)
            return usage_error("--webhook '%s' is not an http:// or https:// URL", h->url);
        for (size_t k = 0; k < i; k++)
            if (strcmp(cfg->hooks[k].consumer, h->consumer) == 0)
                return usage_error("consumer %s is given twice", h->consumer);
    }
    if (cfg->retry_max_ms < cfg->retry_min_ms)
        cfg->retry_max_ms = cfg->retry_min_ms;
    return EXIT_OK;
}

int
main(int argc, char **argv)
{
    bridge *b = calloc(1, sizeof *b);
    if (!b)
        return EXIT_ERROR;
    int rc = parse(argc, argv, &b->cfg);
    if (rc != EXIT_OK) {
        free(b);
        return rc < 0 ? EXIT_OK : rc;
    }
    char err[1024];
    if (sodium_init() < 0 || wire_init() != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "spbe-bridge: cannot initialise its libraries\n");
        free(b);
        return EXIT_ERROR;
    }
    if (bridge_tokens_load(b->cfg.tokens, &b->tokens, err, sizeof err) != 0) {
        fprintf(stderr, "spbe-bridge: %s\n", err);
        curl_global_cleanup();
        free(b);
        return EXIT_ERROR;
    }

    /* SIGINT and SIGTERM go to sigwait below: block them before any thread starts */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    spbe_options o = {.endpoint = b->cfg.broker,
                      .broker_key_hex = b->cfg.broker_key,
                      .timeout_ms = b->cfg.timeout_ms,
                      .client_name = "spbe-bridge/" BRIDGE_VERSION};
    spbe_client *c = NULL;
    rc = spbe_connect(b->cfg.key, &o, &c);
    if (rc != SPBE_OK) {
        fprintf(stderr, "spbe-bridge: %s: %s\n", spbe_error_name(rc), spbe_last_error(c));
        spbe_close(&c);
        curl_global_cleanup();
        free(b);
        return EXIT_ERROR;
    }
    char member[128];
    snprintf(member, sizeof member, "%s", spbe_member(c));
    int status = EXIT_OK;
    for (size_t i = 0; i < b->cfg.n_hooks; i++) {
        if (webhook_start(&b->cfg, &b->cfg.hooks[i], &b->fatal, &b->hooks[i], err, sizeof err)) {
            fprintf(stderr, "spbe-bridge: %s\n", err);
            status = EXIT_ERROR;
            break;
        }
        b->n_hooks++;
    }
    if (status == EXIT_OK && publisher_start(&b->pub, c, &b->fatal) != 0) {
        fprintf(stderr, "spbe-bridge: cannot start the publishing thread\n");
        status = EXIT_ERROR;
    }
    if (status != EXIT_OK)
        spbe_close(&c);
    if (status == EXIT_OK && bridge_http_start(b, err, sizeof err) != 0) {
        fprintf(stderr, "spbe-bridge: %s\n", err);
        status = EXIT_ERROR;
    }
    if (status == EXIT_OK) {
        bridge_log("info", "started", "member=%s listen=%s schemas=%zu webhooks=%zu version=%s",
                   member, b->cfg.listen, b->cfg.n_schemas, b->n_hooks, BRIDGE_VERSION);
        int sig = 0;
        sigwait(&stop_signals, &sig);
        if (b->fatal)
            status = EXIT_ERROR;
        bridge_log("info", "stopping", "signal=%s", b->fatal ? "fatal" : strsignal(sig));
    }
    bridge_http_stop(b); /* answers what is in progress first */
    publisher_stop(&b->pub);
    for (size_t i = 0; i < b->n_hooks; i++)
        webhook_stop(&b->hooks[i]);
    if (status == EXIT_OK)
        bridge_log("info", "stopped", NULL);
    sodium_memzero(&b->tokens, sizeof b->tokens);
    curl_global_cleanup();
    free(b);
    return status;
}
