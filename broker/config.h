/* config.h - the broker's settings: embedded defaults, overridden by flags. */
#ifndef SPBE_CONFIG_H
#define SPBE_CONFIG_H

#include <stdint.h>

typedef struct broker_config {
    char data_dir[1024];
    char endpoint[256];         /* ZeroMQ endpoint to bind */
    char name[64];              /* the broker's name in receipts */
    uint64_t max_message_bytes; /* largest SignedMessage accepted */
    int64_t dedup_window_ns;
    int heartbeat_ms;         /* sessions silent for 3 heartbeats are closed */
    uint64_t max_store_bytes; /* 0: unlimited */
    int log_level;
} broker_config;

/* Fills c with the embedded defaults of the product brief. */
void config_defaults(broker_config *c);

/*
 * Applies command-line flags. Returns 0 to run, 1 when --help or --version was
 * printed (exit 0), 2 on bad usage (message printed to stderr).
 */
int config_parse_args(broker_config *c, int argc, char **argv);

#endif
