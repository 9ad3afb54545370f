/* config.h - the broker's settings: embedded defaults, overridden by flags. */
#ifndef SPBE_CONFIG_H
#define SPBE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "store.h"

#define CONFIG_RETENTION_MAX 64
#define CONFIG_SCHEMA_MAX 128

/* A payload schema bound to topics (schema = "PATTERN=TYPE") or to a service's requests and
 * replies (service_schema = "SERVICE=REQUEST_TYPE,REPLY_TYPE"); the types are resolved to
 * their descriptors (schema_find) when the setting is read. */
typedef struct schema_binding {
    char pattern[256];                       /* topic pattern, or the service's name */
    const ProtobufCMessageDescriptor *type;  /* the topic's type, or the service's requests' */
    const ProtobufCMessageDescriptor *reply; /* the service's replies'; NULL for a topic */
} schema_binding;

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
    schema_binding schemas[CONFIG_SCHEMA_MAX]; /* first match applies; topics and services */
    size_t n_schemas;
    int log_level;
    int rotate_key; /* --rotate-key: rotate the broker's key in data_dir, then exit */
    char http[64];  /* HOST:PORT of the HTTP endpoint, "" for none */
    uint32_t consumer_ack_wait_ms, consumer_max_deliveries,
        consumer_max_in_flight;         /* 0: 30000, 5, 1000 */
    int log_json;                       /* log lines as JSON */
    uint32_t member_rate, member_burst; /* signed messages per second per member; 0: no limit */
    uint32_t max_clock_skew_s; /* created_ns this far from the broker's clock is refused; 0: any */
    uint32_t member_max_sessions;       /* open sessions per member; 0: no limit */
    uint32_t session_max_subscriptions; /* subscriptions and attachments per session; 0: none */
    uint32_t member_max_consumers;      /* durable consumers a member creates; 0: no limit */
    int handshake_timeout_ms; /* a connection that has not finished CURVE by then is closed */
    int check_only;           /* --check-config */
} broker_config;

/* Fills c with the embedded defaults of the product brief. */
void config_defaults(broker_config *c);

/*
 * Applies --config FILE, SPBE_DATA, then the flags. Returns 0 to run, 1 when --help,
 * --version or --check-config (valid) was
 * printed (exit 0), 2 on bad usage (message printed to stderr).
 */
int config_parse_args(broker_config *c, int argc, char **argv);

/* Sets one setting by its key in the configuration file (docs/configuration.md), from
 * text; flags and the file both come here. 0, or -1 with the reason in err. */
int config_set(broker_config *c, const char *key, const char *value, char *err, size_t err_len);
/* Applies a configuration file (libconfig syntax). 0, or -1 with "FILE:LINE: reason". */
int config_load_file(broker_config *c, const char *path, char *err, size_t err_len);

/* Parses one binding, "PATTERN=TYPE" (service 0) or "SERVICE=REQUEST_TYPE,REPLY_TYPE"
 * (service 1), into sb. 0 on success; -1 with a reason in err. */
int config_parse_schema(const char *text, int service, schema_binding *sb, char *err,
                        size_t err_len);

/* Parses one retention rule "PATTERN:max-age=30d,max-messages=N,max-bytes=SIZE" into r.
 * 0 on success; -1 with a reason in err. */
int config_parse_retention(const char *text, store_retention *r, char *err, size_t err_len);

#endif
