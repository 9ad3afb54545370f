/* config.c - defaults and flags of spbe-broker. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "log.h"
#include "schema.h"
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
    c->member_max_sessions = 64;
    c->session_max_subscriptions = 1024;
    c->member_max_consumers = 256;
    c->handshake_timeout_ms = 10000;
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
            "      --config FILE          settings from FILE (docs/configuration.md); flags\n"
            "                             given as well override it\n"
            "      --check-config         check the file and the flags, then exit\n"
            "      --log-json             log lines as JSON objects\n"
            "      --member-rate N        signed messages per second per member (0: no\n"
            "                             limit); beyond it RATE_LIMITED\n"
            "      --member-burst N       what a member may send at once (default: the rate)\n"
            "      --max-clock-skew S     refuse messages created more than S seconds from the\n"
            "                             broker's clock (default 0: no bound)\n"
            "      --member-max-sessions N       sessions one member may hold open (default 64;\n"
            "                             0: no limit); beyond it QUOTA_EXCEEDED\n"
            "      --session-max-subscriptions N subscriptions and consumer attachments per\n"
            "                             session (default 1024; 0: no limit)\n"
            "      --member-max-consumers N      durable consumers one member may create\n"
            "                             (default 256; 0: no limit)\n"
            "      --handshake-timeout-ms N      close connections that have not finished the\n"
            "                             CURVE handshake by then (default 10000)\n"
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
            "      --schema PATTERN=TYPE  payloads on matching topics must decode as TYPE\n"
            "                             (strictly; SCHEMA_MISMATCH otherwise), repeatable,\n"
            "                             first match applies, e.g.\n"
            "                             'ikn.relokasi.asn.*=spbe.ikn.v1.SkenarioAsn'\n"
            "      --service-schema SERVICE=REQUEST_TYPE,REPLY_TYPE\n"
            "                             the same for a service's requests and replies\n"
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

/* The known type named by text[0..n) into *out; -1 with the reason otherwise. */
static int
schema_type(const char *text, size_t n, const ProtobufCMessageDescriptor **out, char *err,
            size_t err_len)
{
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), text);
    *out = n < sizeof name ? schema_find(name) : NULL;
    if (!*out) {
        char known[1024];
        size_t used = 0;
        known[0] = '\0';
        for (size_t i = 0; schema_at(i) && used < sizeof known; i++)
            used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                                     schema_at(i)->name);
        snprintf(err, err_len, "unknown schema type '%.*s' (known: %s)", (int)(n > 128 ? 128 : n),
                 text, known);
        return -1;
    }
    return 0;
}

int
config_parse_schema(const char *text, int service, schema_binding *sb, char *err, size_t err_len)
{
    const char *eq = strchr(text, '=');
    memset(sb, 0, sizeof *sb);
    if (!eq || eq == text || (size_t)(eq - text) >= sizeof sb->pattern)
        return snprintf(err, err_len, "schema binding '%s' is not %s", text,
                        service ? "SERVICE=REQUEST_TYPE,REPLY_TYPE" : "PATTERN=TYPE"),
               -1;
    memcpy(sb->pattern, text, (size_t)(eq - text));
    const char *type = eq + 1, *comma = strchr(type, ',');
    if (service) {
        if (!wire_topic_valid(sb->pattern) || strncmp(sb->pattern, "$sys.", 5) == 0)
            return snprintf(err, err_len, "schema binding '%s': invalid service name", text), -1;
        if (!comma)
            return snprintf(err, err_len,
                            "schema binding '%s' is not "
                            "SERVICE=REQUEST_TYPE,REPLY_TYPE",
                            text),
                   -1;
        if (schema_type(type, (size_t)(comma - type), &sb->type, err, err_len) ||
            schema_type(comma + 1, strlen(comma + 1), &sb->reply, err, err_len))
            return -1;
        return 0;
    }
    if (!wire_pattern_valid(sb->pattern) || strncmp(sb->pattern, "$sys.", 5) == 0)
        return snprintf(err, err_len, "schema binding '%s': invalid topic pattern (not $sys.)",
                        text),
               -1;
    return schema_type(type, strlen(type), &sb->type, err, err_len);
}

int
config_set(broker_config *c, const char *key, const char *value, char *err, size_t err_len)
{
    uint64_t v = 0;
    static const uint64_t size_mult[] = {1024ull, 1048576ull, 1073741824ull};
    int num = parse_u64(value, &v) == 0;
    if (strcmp(key, "data") == 0) {
        if (!*value || strlen(value) >= sizeof c->data_dir)
            return snprintf(err, err_len, "data: a directory path"), -1;
        snprintf(c->data_dir, sizeof c->data_dir, "%s", value);
    } else if (strcmp(key, "listen") == 0) {
        if (strncmp(value, "tcp://", 6) != 0 || strlen(value) >= sizeof c->endpoint)
            return snprintf(err, err_len, "listen: a ZeroMQ endpoint tcp://HOST:PORT"), -1;
        snprintf(c->endpoint, sizeof c->endpoint, "%s", value);
    } else if (strcmp(key, "http") == 0) {
        if (strcmp(value, "off") != 0 && (!strchr(value, ':') || strlen(value) >= sizeof c->http))
            return snprintf(err, err_len, "http: HOST:PORT or off"), -1;
        snprintf(c->http, sizeof c->http, "%s", strcmp(value, "off") == 0 ? "" : value);
    } else if (strcmp(key, "name") == 0) {
        if (!*value || strlen(value) >= sizeof c->name)
            return snprintf(err, err_len, "name: 1 to %zu characters", sizeof c->name - 1), -1;
        snprintf(c->name, sizeof c->name, "%s", value);
    } else if (strcmp(key, "max_message_bytes") == 0) {
        if (parse_scaled(value, strlen(value), "kMG", size_mult, &v) || v < 256 || v > (256u << 20))
            return snprintf(err, err_len, "max_message_bytes: 256..268435456"), -1;
        c->max_message_bytes = v;
    } else if (strcmp(key, "dedup_window_s") == 0) {
        if (!num || v > 365ull * 86400)
            return snprintf(err, err_len, "dedup_window_s: 0..31536000 seconds"), -1;
        c->dedup_window_ns = (int64_t)v * 1000000000;
    } else if (strcmp(key, "heartbeat_ms") == 0) {
        if (!num || v < 100 || v > 600000)
            return snprintf(err, err_len, "heartbeat_ms: 100..600000"), -1;
        c->heartbeat_ms = (int)v;
    } else if (strcmp(key, "tree_head_ms") == 0) {
        if (!num || v < 100 || v > 86400000)
            return snprintf(err, err_len, "tree_head_ms: 100..86400000"), -1;
        c->tree_head_ms = (int)v;
    } else if (strcmp(key, "max_store_bytes") == 0) {
        if (parse_scaled(value, strlen(value), "kMG", size_mult, &v) || (v && v < (1u << 20)))
            return snprintf(err, err_len, "max_store_bytes: 0 (no limit) or at least 1048576"), -1;
        c->max_store_bytes = v;
    } else if (strcmp(key, "retain") == 0) {
        if (c->n_retention == CONFIG_RETENTION_MAX)
            return snprintf(err, err_len, "at most %d retention rules", CONFIG_RETENTION_MAX), -1;
        if (config_parse_retention(value, &c->retention[c->n_retention], err, err_len))
            return -1;
        c->n_retention++;
    } else if (strcmp(key, "schema") == 0 || strcmp(key, "service_schema") == 0) {
        if (c->n_schemas == CONFIG_SCHEMA_MAX)
            return snprintf(err, err_len, "at most %d schema bindings", CONFIG_SCHEMA_MAX), -1;
        if (config_parse_schema(value, key[1] == 'e', &c->schemas[c->n_schemas], err, err_len))
            return -1;
        c->n_schemas++;
    } else if (strcmp(key, "consumer_ack_wait_ms") == 0) {
        if (!num || v < 100 || v > 86400000)
            return snprintf(err, err_len, "ack_wait_ms: 100..86400000"), -1;
        c->consumer_ack_wait_ms = (uint32_t)v;
    } else if (strcmp(key, "consumer_max_deliveries") == 0) {
        if (!num || v < 1 || v > 10000)
            return snprintf(err, err_len, "max_deliveries: 1..10000"), -1;
        c->consumer_max_deliveries = (uint32_t)v;
    } else if (strcmp(key, "consumer_max_in_flight") == 0) {
        if (!num || v < 1 || v > 100000)
            return snprintf(err, err_len, "max_in_flight: 1..100000"), -1;
        c->consumer_max_in_flight = (uint32_t)v;
    } else if (strcmp(key, "max_clock_skew_s") == 0) {
        if (!num || v > 31536000)
            return snprintf(err, err_len, "max_clock_skew_s: 0 (no bound)..31536000"), -1;
        c->max_clock_skew_s = (uint32_t)v;
    } else if (strcmp(key, "member_max_sessions") == 0 ||
               strcmp(key, "session_max_subscriptions") == 0 ||
               strcmp(key, "member_max_consumers") == 0) {
        if (!num || v > 1000000)
            return snprintf(err, err_len, "%s: 0 (no limit)..1000000", key), -1;
        *(key[0] == 's'              ? &c->session_max_subscriptions
          : strstr(key, "consumers") ? &c->member_max_consumers
                                     : &c->member_max_sessions) = (uint32_t)v;
    } else if (strcmp(key, "handshake_timeout_ms") == 0) {
        if (!num || v < 100 || v > 600000)
            return snprintf(err, err_len, "handshake_timeout_ms: 100..600000"), -1;
        c->handshake_timeout_ms = (int)v;
    } else if (strcmp(key, "member_rate") == 0) {
        if (!num || v > 10000000)
            return snprintf(err, err_len, "member_rate: 0 (no limit)..10000000 per second"), -1;
        c->member_rate = (uint32_t)v;
    } else if (strcmp(key, "member_burst") == 0) {
        if (!num || v > 10000000)
            return snprintf(err, err_len, "member_burst: 0 (the rate)..10000000"), -1;
        c->member_burst = (uint32_t)v;
    } else if (strcmp(key, "log_level") == 0) {
        static const char *levels[] = {"debug", "info", "warn", "error"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(value, levels[i]) == 0)
                found = i;
        if (found < 0)
            return snprintf(err, err_len, "log level: debug, info, warn or error"), -1;
        c->log_level = found;
    } else if (strcmp(key, "log_format") == 0) {
        if (strcmp(value, "text") && strcmp(value, "json"))
            return snprintf(err, err_len, "log format: text or json"), -1;
        c->log_json = strcmp(value, "json") == 0;
    } else {
        return snprintf(err, err_len, "unknown key '%s'", key), -1;
    }
    return 0;
}

/* ------------------------------------------------------------ the file */

/* A setting's value as text (strings as they are, numbers in decimal); NULL if neither. */
static const char *
setting_text(const config_setting_t *st, char *buf, size_t len)
{
    switch (config_setting_type(st)) {
    case CONFIG_TYPE_STRING:
        return config_setting_get_string(st);
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        snprintf(buf, len, "%lld", config_setting_get_int64(st));
        return buf;
    default:
        return NULL;
    }
}

static int
file_error(const char *path, const config_setting_t *st, char *err, size_t err_len,
           const char *what)
{
    char copy[1400];
    snprintf(copy, sizeof copy, "%s", what);
    snprintf(err, err_len, "%s:%d: %s", path, st ? config_setting_source_line(st) : 0, copy);
    return -1;
}

/* One scalar key: key as written, name as config_set knows it. */
static int
file_scalar(broker_config *c, const char *path, const config_setting_t *st, const char *name,
            char *err, size_t err_len)
{
    char buf[64], why[1200];
    const char *text = setting_text(st, buf, sizeof buf);
    if (!text) {
        snprintf(why, sizeof why, "%s takes a string or a number",
                 config_setting_name(st) ? config_setting_name(st) : name);
        return file_error(path, st, err, err_len, why);
    }
    if (config_set(c, name, text, why, sizeof why) != 0)
        return file_error(path, st, err, err_len, why);
    return 0;
}

/* A retention rule: { pattern = "ikn.>"; max_age = "30d"; max_messages = 1000; max_bytes = "2G"; }
 */
static int
file_rule(broker_config *c, const char *path, const config_setting_t *rule, char *err,
          size_t err_len)
{
    if (!config_setting_is_group(rule))
        return file_error(path, rule, err, err_len,
                          "a retention rule is a group: { pattern = ...; max_age = ...; }");
    char text[1024], why[400], pattern[300] = "";
    size_t used = 0;
    for (int i = 0; i < config_setting_length(rule); i++) {
        const config_setting_t *f = config_setting_get_elem(rule, (unsigned)i);
        const char *name = config_setting_name(f);
        char buf[64];
        const char *value = setting_text(f, buf, sizeof buf);
        if (strcmp(name, "pattern") == 0) {
            if (config_setting_type(f) != CONFIG_TYPE_STRING || strlen(value) >= sizeof pattern)
                return file_error(path, f, err, err_len, "pattern is a topic pattern in quotes");
            snprintf(pattern, sizeof pattern, "%s", value); /* value may live in buf */
            continue;
        }
        const char *limit = strcmp(name, "max_age") == 0        ? "max-age"
                            : strcmp(name, "max_messages") == 0 ? "max-messages"
                            : strcmp(name, "max_bytes") == 0    ? "max-bytes"
                                                                : NULL;
        if (!limit || !value) {
            snprintf(why, sizeof why,
                     "retention rules know pattern, max_age, max_messages, "
                     "max_bytes, not '%s'",
                     name);
            return file_error(path, f, err, err_len, why);
        }
        int n = snprintf(text + used, sizeof text - used, "%s%s=%s", used ? "," : "", limit, value);
        if (n < 0 || (size_t)n >= sizeof text - used)
            return file_error(path, f, err, err_len, "the retention rule is too long");
        used += (size_t)n;
    }
    if (!pattern[0])
        return file_error(path, rule, err, err_len, "a retention rule needs a pattern");
    char rule_text[1400];
    snprintf(rule_text, sizeof rule_text, "%s:%s", pattern, used ? text : "");
    if (config_set(c, "retain", rule_text, why, sizeof why) != 0)
        return file_error(path, rule, err, err_len, why);
    return 0;
}

int
config_load_file(broker_config *c, const char *path, char *err, size_t err_len)
{
    config_t cf;
    config_init(&cf);
    if (config_read_file(&cf, path) != CONFIG_TRUE) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            snprintf(err, err_len, "%s: cannot read the file", path);
        else
            snprintf(err, err_len, "%s:%d: %s",
                     config_error_file(&cf) ? config_error_file(&cf) : path, config_error_line(&cf),
                     config_error_text(&cf));
        config_destroy(&cf);
        return -1;
    }
    const config_setting_t *root = config_root_setting(&cf);
    int rc = 0;
    for (int i = 0; rc == 0 && i < config_setting_length(root); i++) {
        const config_setting_t *st = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(st);
        if (strcmp(name, "retention") == 0) {
            if (!config_setting_is_list(st))
                rc = file_error(path, st, err, err_len,
                                "retention is a list of rules: ( { ... }, { ... } )");
            for (int k = 0; rc == 0 && k < config_setting_length(st); k++)
                rc = file_rule(c, path, config_setting_get_elem(st, (unsigned)k), err, err_len);
        } else if (strcmp(name, "schema") == 0 || strcmp(name, "service_schema") == 0) {
            if (!config_setting_is_aggregate(st) || config_setting_is_group(st))
                rc = file_error(path, st, err, err_len,
                                "a list of bindings: [ \"PATTERN=TYPE\", ... ]");
            for (int k = 0; rc == 0 && k < config_setting_length(st); k++)
                rc = file_scalar(c, path, config_setting_get_elem(st, (unsigned)k), name, err,
                                 err_len);
        } else if (strcmp(name, "consumer_defaults") == 0 || strcmp(name, "log") == 0) {
            if (!config_setting_is_group(st)) {
                rc = file_error(path, st, err, err_len, "a group: { key = value; ... }");
                break;
            }
            const char *prefix = name[0] == 'c' ? "consumer_" : "log_";
            for (int k = 0; rc == 0 && k < config_setting_length(st); k++) {
                const config_setting_t *f = config_setting_get_elem(st, (unsigned)k);
                char key[96], why[200];
                snprintf(key, sizeof key, "%s%s", prefix, config_setting_name(f));
                if (name[0] == 'c' && strcmp(key, "consumer_ack_wait_ms") &&
                    strcmp(key, "consumer_max_deliveries") &&
                    strcmp(key, "consumer_max_in_flight")) {
                    snprintf(why, sizeof why,
                             "consumer_defaults knows ack_wait_ms, max_deliveries, "
                             "max_in_flight, not '%s'",
                             config_setting_name(f));
                    rc = file_error(path, f, err, err_len, why);
                } else if (name[0] == 'l' && strcmp(key, "log_level") &&
                           strcmp(key, "log_format")) {
                    snprintf(why, sizeof why, "log knows level and format, not '%s'",
                             config_setting_name(f));
                    rc = file_error(path, f, err, err_len, why);
                } else {
                    rc = file_scalar(c, path, f, key, err, err_len);
                }
            }
        } else if (strcmp(name, "retain") == 0 || strncmp(name, "consumer_", 9) == 0 ||
                   strncmp(name, "log_", 4) == 0 || config_setting_is_aggregate(st)) {
            char why[200];
            snprintf(why, sizeof why, "unknown key '%s'", name);
            rc = file_error(path, st, err, err_len, why);
        } else {
            rc = file_scalar(c, path, st, name, err, err_len);
        }
    }
    config_destroy(&cf);
    return rc;
}

/* ------------------------------------------------------------ flags */

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
        OPT_CONFIG,
        OPT_CHECK,
        OPT_LOG_JSON,
        OPT_RATE,
        OPT_BURST,
        OPT_SKEW,
        OPT_MAX_SESSIONS,
        OPT_MAX_SUBS,
        OPT_MAX_CONSUMERS,
        OPT_HANDSHAKE,
        OPT_SCHEMA,
        OPT_SERVICE_SCHEMA,
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
        {"config", required_argument, 0, OPT_CONFIG},
        {"check-config", no_argument, 0, OPT_CHECK},
        {"log-json", no_argument, 0, OPT_LOG_JSON},
        {"member-rate", required_argument, 0, OPT_RATE},
        {"member-burst", required_argument, 0, OPT_BURST},
        {"max-clock-skew", required_argument, 0, OPT_SKEW},
        {"member-max-sessions", required_argument, 0, OPT_MAX_SESSIONS},
        {"session-max-subscriptions", required_argument, 0, OPT_MAX_SUBS},
        {"member-max-consumers", required_argument, 0, OPT_MAX_CONSUMERS},
        {"handshake-timeout-ms", required_argument, 0, OPT_HANDSHAKE},
        {"schema", required_argument, 0, OPT_SCHEMA},
        {"service-schema", required_argument, 0, OPT_SERVICE_SCHEMA},
        {0, 0, 0, 0},
    };
    static const struct {
        int opt;
        const char *key;
    } keys[] = {{'d', "data"},
                {'l', "listen"},
                {OPT_NAME, "name"},
                {OPT_MAX, "max_message_bytes"},
                {OPT_DEDUP, "dedup_window_s"},
                {OPT_HEARTBEAT, "heartbeat_ms"},
                {OPT_STORE, "max_store_bytes"},
                {OPT_RETAIN, "retain"},
                {OPT_HEAD, "tree_head_ms"},
                {OPT_HTTP, "http"},
                {OPT_RATE, "member_rate"},
                {OPT_BURST, "member_burst"},
                {OPT_SKEW, "max_clock_skew_s"},
                {OPT_MAX_SESSIONS, "member_max_sessions"},
                {OPT_MAX_SUBS, "session_max_subscriptions"},
                {OPT_MAX_CONSUMERS, "member_max_consumers"},
                {OPT_HANDSHAKE, "handshake_timeout_ms"},
                {OPT_SCHEMA, "schema"},
                {OPT_SERVICE_SCHEMA, "service_schema"}};
    /* the file first (SPBE_DATA and flags override it) */
    const char *file = NULL;
    int opt;
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "d:l:vqh", options, NULL)) != -1)
        if (opt == OPT_CONFIG)
            file = optarg;
    opterr = 1;
    char err[1600];
    if (file && config_load_file(c, file, err, sizeof err) != 0) {
        fprintf(stderr, "spbe-broker: %s\n", err);
        return 2;
    }
    const char *env = getenv("SPBE_DATA");
    if (env && *env)
        snprintf(c->data_dir, sizeof c->data_dir, "%s", env);
    optind = 0;
    while ((opt = getopt_long(argc, argv, "d:l:vqh", options, NULL)) != -1) {
        const char *key = NULL;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (keys[i].opt == opt)
                key = keys[i].key;
        if (key) {
            if (config_set(c, key, optarg, err, sizeof err) != 0) {
                fprintf(stderr, "spbe-broker: %s\n", err);
                return 2;
            }
            continue;
        }
        switch (opt) {
        case OPT_CONFIG:
            break;
        case OPT_CHECK:
            c->check_only = 1;
            break;
        case OPT_ROTATE:
            c->rotate_key = 1;
            break;
        case OPT_LOG_JSON:
            c->log_json = 1;
            break;
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
    if (c->check_only) {
        printf("%s: the configuration is valid\n", file ? file : "flags");
        return 1;
    }
    return 0;
}
