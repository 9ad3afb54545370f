/* config.c - defaults and flags of spbe-broker. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wire.h"

void
config_defaults(broker_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "./spbe-data");
    snprintf(c->endpoint, sizeof c->endpoint, "tcp://127.0.0.1:7400");
    snprintf(c->name, sizeof c->name, "spbe-broker");
    c->max_message_bytes = 1 << 20;
    c->dedup_window_ns = 24LL * 3600 * 1000000000;
    c->heartbeat_ms = 5000;
    c->tree_head_ms = 10000;
    snprintf(c->http, sizeof c->http, "127.0.0.1:7480");
    c->log_level = LOG_INFO;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: spbe-broker [options]\n"
            "\n"
            "Runs the spbe-bus broker. With no options: data in ./spbe-data, the bus on\n"
            "tcp://127.0.0.1:7400. The first start on an empty data directory creates the\n"
            "broker's key pair and an admin identity file (mode 0600) and says where.\n"
            "\n"
            "options:\n"
            "  -d, --data DIR             data directory (env SPBE_DATA; default ./spbe-data)\n"
            "  -l, --listen ENDPOINT      ZeroMQ endpoint to bind (default tcp://127.0.0.1:7400)\n"
            "      --http HOST:PORT|off   metrics, health and JSON (default 127.0.0.1:7480)\n"
            "      --name NAME            broker name in receipts (default spbe-broker)\n"
            "      --max-message-bytes N  largest signed message accepted (default 1048576)\n"
            "      --dedup-window SECONDS dedup window by sender and message id (default 86400)\n"
            "      --heartbeat-ms N       client heartbeat interval (default 5000)\n"
            "      --max-store-bytes N    storage limit; publishes then get STORAGE_FULL\n"
            "      --tree-head-ms N       sign the audit log's tree head this often when it\n"
            "                             grew (default 10000), and at every stop\n"
            "      --rotate-key           give the broker a new key (the broker stopped): the\n"
            "                             old key signs the new one into the audit log;\n"
            "                             members then need the new broker.pub\n"
            "      --retain RULE          retention for matching topics, repeatable, first\n"
            "                             match applies; unlimited by default. RULE is\n"
            "                             PATTERN:max-age=DURATION,max-messages=N,max-bytes=SIZE\n"
            "                             (any of the three), e.g. 'ikn.>:max-age=30d'.\n"
            "                             DURATION: N[s|m|h|d]; SIZE: N[k|M|G]\n"
            "  -v, --verbose              log debug events\n"
            "  -q, --quiet                log warnings and errors only\n"
            "  -h, --help                 this help\n"
            "      --version              print the version\n");
}

static int
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0' || *s == '-')
        return -1;
    *out = v;
    return 0;
}

/* N with an optional unit from units ("s m h d" or "k M G") and its multipliers. */
static int
parse_scaled(const char *s, size_t len, const char *units, const uint64_t *mult, uint64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    uint64_t m = 1;
    const char *u = strchr(units, buf[len - 1]);
    if (u && buf[len - 1] != '\0') {
        m = mult[u - units];
        buf[len - 1] = '\0';
    }
    uint64_t v;
    if (parse_u64(buf, &v) || (m && v > UINT64_MAX / m))
        return -1;
    *out = v * m;
    return 0;
}

int
config_parse_retention(const char *text, store_retention *r, char *err, size_t err_len)
{
    memset(r, 0, sizeof *r);
    const char *colon = strchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof r->pattern) {
        snprintf(err, err_len, "retention rule '%s' is not PATTERN:LIMITS", text);
        return -1;
    }
    memcpy(r->pattern, text, (size_t)(colon - text));
    r->pattern[colon - text] = '\0';
    if (!wire_pattern_valid(r->pattern)) {
        snprintf(err, err_len, "retention rule '%s': invalid topic pattern", text);
        return -1;
    }
    static const uint64_t time_mult[] = {1000000000ull, 60000000000ull, 3600000000000ull,
                                         86400000000000ull};
    static const uint64_t size_mult[] = {1024ull, 1048576ull, 1073741824ull};
    const char *p = colon + 1;
    int any = 0;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        uint64_t v = 0;
        int bad = !eq || (end && end[1] == '\0'); /* nothing after a comma */
        if (!bad && strncmp(p, "max-age=", 8) == 0)
            bad = parse_scaled(eq + 1, len - 8, "smhd", time_mult, &v) ||
                  (r->max_age_ns = (int64_t)v) <= 0;
        else if (!bad && strncmp(p, "max-messages=", 13) == 0)
            bad =
                parse_scaled(eq + 1, len - 13, "", NULL, &r->max_messages) || r->max_messages == 0;
        else if (!bad && strncmp(p, "max-bytes=", 10) == 0)
            bad = parse_scaled(eq + 1, len - 10, "kMG", size_mult, &r->max_bytes) ||
                  r->max_bytes == 0;
        else
            bad = 1;
        if (bad) {
            snprintf(err, err_len,
                     "retention rule '%s': limits are max-age=N[s|m|h|d], max-messages=N, "
                     "max-bytes=N[k|M|G], each above 0",
                     text);
            return -1;
        }
        any = 1;
        p += len + (end ? 1 : 0);
    }
    if (!any) {
        snprintf(err, err_len, "retention rule '%s' sets no limit", text);
        return -1;
    }
    return 0;
}

int
config_parse_args(broker_config *c, int argc, char **argv)
{
    enum {
        OPT_NAME = 256,
        OPT_MAX,
        OPT_DEDUP,
        OPT_HEARTBEAT,
        OPT_STORE,
        OPT_RETAIN,
        OPT_HEAD,
        OPT_ROTATE,
        OPT_HTTP,
        OPT_VERSION
    };
    static const struct option options[] = {
        {"data", required_argument, 0, 'd'},
        {"listen", required_argument, 0, 'l'},
        {"name", required_argument, 0, OPT_NAME},
        {"max-message-bytes", required_argument, 0, OPT_MAX},
        {"dedup-window", required_argument, 0, OPT_DEDUP},
        {"heartbeat-ms", required_argument, 0, OPT_HEARTBEAT},
        {"max-store-bytes", required_argument, 0, OPT_STORE},
        {"retain", required_argument, 0, OPT_RETAIN},
        {"tree-head-ms", required_argument, 0, OPT_HEAD},
        {"verbose", no_argument, 0, 'v'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, OPT_VERSION},
        {"rotate-key", no_argument, 0, OPT_ROTATE},
        {"http", required_argument, 0, OPT_HTTP},
        {0, 0, 0, 0},
    };
    const char *env = getenv("SPBE_DATA");
    if (env && *env)
        snprintf(c->data_dir, sizeof c->data_dir, "%s", env);
    int opt;
    uint64_t v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "d:l:vqh", options, NULL)) != -1) {
        switch (opt) {
        case 'd':
            snprintf(c->data_dir, sizeof c->data_dir, "%s", optarg);
            break;
        case 'l':
            snprintf(c->endpoint, sizeof c->endpoint, "%s", optarg);
            break;
        case OPT_NAME:
            snprintf(c->name, sizeof c->name, "%s", optarg);
            break;
        case OPT_MAX:
            if (parse_u64(optarg, &v) || v < 256 || v > (256u << 20)) {
                fprintf(stderr, "spbe-broker: --max-message-bytes must be 256..268435456\n");
                return 2;
            }
            c->max_message_bytes = v;
            break;
        case OPT_DEDUP:
            if (parse_u64(optarg, &v) || v > 365ull * 86400) {
                fprintf(stderr, "spbe-broker: --dedup-window must be 0..31536000 seconds\n");
                return 2;
            }
            c->dedup_window_ns = (int64_t)v * 1000000000;
            break;
        case OPT_HEARTBEAT:
            if (parse_u64(optarg, &v) || v < 100 || v > 600000) {
                fprintf(stderr, "spbe-broker: --heartbeat-ms must be 100..600000\n");
                return 2;
            }
            c->heartbeat_ms = (int)v;
            break;
        case OPT_HTTP:
            if (strlen(optarg) >= sizeof c->http) {
                fprintf(stderr, "spbe-broker: --http takes HOST:PORT or off\n");
                return 2;
            }
            snprintf(c->http, sizeof c->http, "%s", strcmp(optarg, "off") == 0 ? "" : optarg);
            break;
        case OPT_ROTATE:
            c->rotate_key = 1;
            break;
        case OPT_HEAD:
            if (parse_u64(optarg, &v) || v < 100 || v > 86400000) {
                fprintf(stderr, "spbe-broker: --tree-head-ms must be 100..86400000\n");
                return 2;
            }
            c->tree_head_ms = (int)v;
            break;
        case OPT_STORE:
            if (parse_u64(optarg, &v) || v < (1u << 20)) {
                fprintf(stderr, "spbe-broker: --max-store-bytes must be at least 1048576\n");
                return 2;
            }
            c->max_store_bytes = v;
            break;
        case OPT_RETAIN: {
            char err[256];
            if (c->n_retention == CONFIG_RETENTION_MAX) {
                fprintf(stderr, "spbe-broker: at most %d retention rules\n", CONFIG_RETENTION_MAX);
                return 2;
            }
            if (config_parse_retention(optarg, &c->retention[c->n_retention], err, sizeof err)) {
                fprintf(stderr, "spbe-broker: %s\n", err);
                return 2;
            }
            c->n_retention++;
            break;
        }
        case 'v':
            c->log_level = LOG_DEBUG;
            break;
        case 'q':
            c->log_level = LOG_WARN;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("spbe-broker %s (protocol 1)\n", SPBE_VERSION);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spbe-broker: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return 0;
}
