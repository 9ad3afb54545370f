/* config.h - the broker's settings: embedded defaults, overridden by flags. */
#ifndef SPBE_CONFIG_H
#define SPBE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define CONFIG_RETENTION_MAX 64

typedef struct broker_config {
    char data_dir[1024];
    char endpoint[256];         /* ZeroMQ endpoint to bind */
    char name[64];              /* the broker's name in receipts */
    uint64_t max_message_bytes; /* largest SignedMessage accepted */
    int64_t dedup_window_ns;
    int heartbeat_ms;         /* sessions silent for 3 heartbeats are closed */
    int tree_head_ms;         /* the audit log's head is signed this often (and at stop) */
    uint64_t max_store_bytes; /* 0: unlimited */
    store_retention retention[CONFIG_RETENTION_MAX]; /* first match applies */
    size_t n_retention;
    int log_level;
    int rotate_key; /* --rotate-key: rotate the broker's key in data_dir, then exit */
    char http[64];  /* HOST:PORT of the HTTP endpoint, "" for none */
} broker_config;

/* Fills c with the embedded defaults of the product brief. */
void config_defaults(broker_config *c);

/*
 * Applies command-line flags. Returns 0 to run, 1 when --help or --version was
 * printed (exit 0), 2 on bad usage (message printed to stderr).
 */
int config_parse_args(broker_config *c, int argc, char **argv);

/* Parses one retention rule "PATTERN:max-age=30d,max-messages=N,max-bytes=SIZE" into r.
 * 0 on success; -1 with a reason in err. */
int config_parse_retention(const char *text, store_retention *r, char *err, size_t err_len);

#endif
