/* cli.h - what the spbe subcommands share: options, connecting, output. */
#ifndef SPBE_CLI_H
#define SPBE_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "spbe/spbe.h"
#include "spbe/v1/spbe.pb-c.h"
#include "store.h"

/* Exit statuses of every command. */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2 };

/* Options every command accepts. */
typedef struct cli_common {
    const char *key;        /* --key, else $SPBE_KEY */
    const char *broker;     /* --broker, else $SPBE_BROKER */
    const char *broker_key; /* --broker-key, else $SPBE_BROKER_KEY */
    const char *data;       /* --data: offline, read-only from the LMDB files */
    int json;               /* --json */
    int timeout_ms;         /* --timeout-ms */
} cli_common;

/*
 * Parses argv with getopt_long: the common options plus the command's own (extra,
 * extra_short; NULL if none), calling on_option for the command's. Returns the
 * index of the first positional argument, or -1 after printing usage (exit 2), or
 * -2 after --help (exit 0).
 */
typedef int (*cli_option_fn)(int opt, const char *arg, void *ctx);
int cli_parse(int argc, char **argv, cli_common *common, const void *extra_options,
              const char *extra_short, cli_option_fn on_option, void *ctx, const char *usage);

/* For command groups (spbe topic ls, ...): when argv[1] is no subcommand, prints usage
 * (to stdout for --help/-h) and returns the exit status; else returns -1. */
int cli_subcommand(int argc, char **argv, const char *usage);

/* Connects with the common options; prints the error and returns NULL on failure. */
spbe_client *cli_connect(const cli_common *common, const char *command);
/* Opens the store of --data read-only; prints the error and returns NULL on failure. */
store *cli_open_store(const cli_common *common, const char *command);

/* Prints "spbe CMD: CODE_NAME: detail" to stderr and returns EXIT_ERROR. */
int cli_fail(const char *command, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends one command through the library and decodes the reply. On SPBE_OK *reply
 * (free with spbe__v1__reply__free_unpacked) and, if body is not NULL, its body frame. */
int cli_call(spbe_client *c, Spbe__V1__Command *cmd, Spbe__V1__Reply **reply, uint8_t **body,
             size_t *body_len);

/* JSON string with escapes, quoted. */
void cli_json_string(FILE *f, const char *s);
/* Prints bytes as JSON: a string if valid printable UTF-8-ish text, else {"base64": ...}. */
void cli_json_bytes(FILE *f, const uint8_t *data, size_t len);
/* Prints bytes for a human: text if printable, else hex (at most max bytes shown). */
void cli_print_bytes(FILE *f, const uint8_t *data, size_t len, size_t max);
/* A payload: decoded to JSON (field names and values) when its schema is a known type and
 * it decodes, else as cli_json_bytes (json) or cli_print_bytes (at most max bytes shown). */
void cli_payload(FILE *f, const char *schema, const uint8_t *data, size_t len, int json,
                 size_t max);
/* RFC 3339 UTC time of ns into out (40 bytes). */
void cli_time(int64_t ns, char *out, size_t n);
/* Hex into out (2n+1). */
void cli_hex(const uint8_t *data, size_t n, char *out);

/* The commands. */
int cmd_keygen(int argc, char **argv);
int cmd_member(int argc, char **argv);
int cmd_pub(int argc, char **argv);
int cmd_sub(int argc, char **argv);
int cmd_topic(int argc, char **argv);
int cmd_msg(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_req(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_consumer(int argc, char **argv);
int cmd_dlq(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_session(int argc, char **argv);

#endif
