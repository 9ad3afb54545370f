/* cli.c - shared option parsing, connection and output of the spbe commands. */
#include "cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonpb.h"
#include "schema.h"
#include "wire.h"

enum { OPT_KEY = 1000, OPT_BROKER, OPT_BROKER_KEY, OPT_DATA, OPT_OFFLINE, OPT_JSON, OPT_TIMEOUT };

int
cli_parse(int argc, char **argv, cli_common *common, const void *extra_options,
          const char *extra_short, cli_option_fn on_option, void *ctx, const char *usage)
{
    static const struct option base[] = {
        {"key", required_argument, 0, OPT_KEY},
        {"broker", required_argument, 0, OPT_BROKER},
        {"broker-key", required_argument, 0, OPT_BROKER_KEY},
        {"data", required_argument, 0, OPT_DATA},
        {"offline", no_argument, 0, OPT_OFFLINE},
        {"json", no_argument, 0, OPT_JSON},
        {"timeout-ms", required_argument, 0, OPT_TIMEOUT},
        {"help", no_argument, 0, 'h'},
    };
    const struct option *extra = extra_options;
    size_t n_extra = 0;
    while (extra && extra[n_extra].name)
        n_extra++;
    struct option all[sizeof base / sizeof base[0] + 32];
    memcpy(all, base, sizeof base);
    if (n_extra)
        memcpy(all + sizeof base / sizeof base[0], extra, n_extra * sizeof *extra);
    memset(&all[sizeof base / sizeof base[0] + n_extra], 0, sizeof all[0]);
    char shorts[64];
    snprintf(shorts, sizeof shorts, "h%s", extra_short ? extra_short : "");

    memset(common, 0, sizeof *common);
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, shorts, all, NULL)) != -1) {
        switch (opt) {
        case OPT_KEY:
            common->key = optarg;
            break;
        case OPT_BROKER:
            common->broker = optarg;
            break;
        case OPT_BROKER_KEY:
            common->broker_key = optarg;
            break;
        case OPT_DATA:
            common->data = optarg;
            break;
        case OPT_OFFLINE: /* the broker's data directory: $SPBE_DATA or its default */
            common->data =
                getenv("SPBE_DATA") && *getenv("SPBE_DATA") ? getenv("SPBE_DATA") : "./spbe-data";
            break;
        case OPT_JSON:
            common->json = 1;
            break;
        case OPT_TIMEOUT:
            common->timeout_ms = atoi(optarg);
            if (common->timeout_ms <= 0) {
                fprintf(stderr, "%s: --timeout-ms must be a positive number\n", argv[0]);
                return -1;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return -2;
        case '?':
            fprintf(stderr, "%s: unknown or incomplete option '%s'\n%s", argv[0], argv[optind - 1],
                    usage);
            return -1;
        default:
            if (!on_option || on_option(opt, optarg, ctx) != 0) {
                fputs(usage, stderr);
                return -1;
            }
        }
    }
    return optind;
}

int
cli_fail(const char *command, int code, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    fprintf(stderr, "spbe %s: %s: %s\n", command, spbe_error_name(code), detail);
    return EXIT_ERROR;
}

spbe_client *
cli_connect(const cli_common *common, const char *command)
{
    spbe_options o = {
        .endpoint = common->broker,
        .broker_key_hex = common->broker_key,
        .timeout_ms = common->timeout_ms,
        .client_name = "spbe-cli/0.1.0",
    };
    spbe_client *c;
    int rc = spbe_connect(common->key, &o, &c);
    if (rc != SPBE_OK) {
        cli_fail(command, rc, "%s", spbe_last_error(c));
        spbe_close(&c);
        return NULL;
    }
    return c;
}

store *
cli_open_store(const cli_common *common, const char *command)
{
    store_options so = {.read_only = 1};
    store *s;
    char err[512];
    int rc = store_open(common->data, &so, &s, err, sizeof err);
    if (rc != SPBE_OK) {
        cli_fail(command, rc, "%s", err);
        return NULL;
    }
    return s;
}

int
cli_call(spbe_client *c, Spbe__V1__Command *cmd, Spbe__V1__Reply **reply, uint8_t **body,
         size_t *body_len)
{
    *reply = NULL;
    size_t len = spbe__v1__command__get_packed_size(cmd);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return SPBE_INTERNAL;
    spbe__v1__command__pack(cmd, buf);
    uint8_t *raw;
    size_t raw_len;
    int rc = spbe_call(c, buf, len, NULL, 0, &raw, &raw_len, body, body_len);
    free(buf);
    if (rc != SPBE_OK)
        return rc;
    *reply = spbe__v1__reply__unpack(NULL, raw_len, raw);
    free(raw);
    return *reply ? SPBE_OK : SPBE_BAD_REQUEST;
}

void
cli_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static int
printable(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((d[i] < 0x20 && d[i] != '\n' && d[i] != '\t') || d[i] == 0x7f)
            return 0;
    return 1;
}

void
cli_json_bytes(FILE *f, const uint8_t *data, size_t len)
{
    if (printable(data, len)) {
        char *s = malloc(len + 1);
        if (s) {
            memcpy(s, data, len);
            s[len] = '\0';
            cli_json_string(f, s);
            free(s);
            return;
        }
    }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputs("{\"base64\":\"", f);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0) |
                     (i + 2 < len ? data[i + 2] : 0);
        fputc(b64[v >> 18 & 63], f);
        fputc(b64[v >> 12 & 63], f);
        fputc(i + 1 < len ? b64[v >> 6 & 63] : '=', f);
        fputc(i + 2 < len ? b64[v & 63] : '=', f);
    }
    fputs("\"}", f);
}

void
cli_print_bytes(FILE *f, const uint8_t *data, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    if (printable(data, len)) {
        fwrite(data, 1, n, f);
    } else {
        fputs("0x", f);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%02x", data[i]);
    }
    if (n < len)
        fprintf(f, "... (%zu bytes)", len);
}

void
cli_payload(FILE *f, const char *schema, const uint8_t *data, size_t len, int json, size_t max)
{
    const ProtobufCMessageDescriptor *d = schema && *schema ? schema_find(schema) : NULL;
    ProtobufCMessage *m = d ? protobuf_c_message_unpack(d, NULL, len, data) : NULL;
    json_t *j = m ? jsonpb_to_json(m) : NULL;
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text && (json || strlen(text) <= max)) {
        fputs(text, f);
    } else if (text) {
        fprintf(f, "%.*s... (%zu bytes as JSON)", (int)max, text, strlen(text));
    } else if (json) {
        cli_json_bytes(f, data, len);
    } else {
        cli_print_bytes(f, data, len, max);
    }
    free(text);
    json_decref(j);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

void
cli_time(int64_t ns, char *out, size_t n)
{
    time_t sec = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%06ldZ", base, (long)(ns % 1000000000 / 1000));
}

void
cli_hex(const uint8_t *data, size_t n, char *out)
{
    wire_hex_encode(data, n, out);
}

int
cli_subcommand(int argc, char **argv, const char *usage)
{
    if (argc >= 2 && argv[1][0] != '-')
        return -1;
    int help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
    fputs(usage, help ? stdout : stderr);
    return help ? EXIT_OK : EXIT_USAGE;
}
