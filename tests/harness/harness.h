/*
 * harness.h - what integration tests need: a real spbe-broker on a free loopback
 * port with a temporary data directory, members with real keys, the real CLI.
 * Brokers are started by the test and stopped by PID.
 */
#ifndef SPBE_HARNESS_H
#define SPBE_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "spbe/spbe.h"

typedef struct test_broker {
    pid_t pid;
    int port;
    int http_port;  /* its HTTP endpoint on 127.0.0.1 */
    char dir[256];  /* temporary directory holding everything below */
    char data[320]; /* the broker's data directory */
    char endpoint[64];
    char admin_key[400]; /* identity file of spbe/admin */
    char broker_pub[400];
    char log[400];   /* the broker's stderr */
    char extra[512]; /* extra flags for every start */
} test_broker;

/* Starts a shell command line as a process of its own, its stdout and stderr appended
 * to log (NULL: /dev/null). It dies with the test process: a test that fails half-way
 * leaves no server behind, nor the test runner's output pipe open. The pid, or -1. */
pid_t harness_spawn(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts a broker in a fresh temporary directory (extra flags may be NULL) and waits
 * until it listens. Also sets SPBE_BROKER for CLI children. 0 on success. */
int harness_broker_start(test_broker *b, const char *extra_flags);
/* The same with the data directory elsewhere (e.g. on a file system made for the test);
 * stop removes the test directory, not data_dir. */
int harness_broker_start_in(test_broker *b, const char *data_dir, const char *extra_flags);
/* Starts again on the same directory and port (after a stop or kill). */
int harness_broker_restart(test_broker *b);
/* Sends sig and reaps the process. Returns its wait status. */
int harness_broker_signal(test_broker *b, int sig);
/* SIGTERM, reap, and remove the directory. Returns the exit status (0 clean). */
int harness_broker_stop(test_broker *b);

/* Creates an identity for name in the test directory, set for this broker but not
 * registered (a member the broker does not know); its path into key_path (400 bytes). */
int harness_identity(test_broker *b, const char *name, char *key_path);

/* Creates an identity for name in the test directory and registers it with rights
 * (comma-separated patterns, NULL for none; roles likewise: "admin", "ops", and
 * service rights as "serve:PATTERN" and "call:PATTERN"). Writes the identity
 * path into key_path (400 bytes). 0 on success. */
int harness_member(test_broker *b, const char *name, const char *publish, const char *subscribe,
                   const char *roles, char *key_path);

/* Connects a library client with an identity file (timeout_ms 0: default). */
spbe_client *harness_connect(test_broker *b, const char *key_path, int timeout_ms);

/* Runs a shell command line (the CLI is $SPBE as an environment variable); captures
 * stdout into out (may be NULL) and stderr into err (may be NULL). Returns the exit
 * status, or -1 if it could not run. */
int harness_run(char *out, size_t out_len, char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Messages stored in a topic, read offline from the data directory (0 if none). */
uint64_t harness_stored(test_broker *b, const char *topic);

/* A raw CURVE DEALER in ctx speaking as the member of key_path, to send what no library
 * would; it has sent Hello (request id 1). rcvhwm > 0 sets ZMQ_RCVHWM. NULL on failure. */
void *harness_raw_connect(test_broker *b, void *ctx, const char *key_path, int rcvhwm);
/* Receives one broker message on a raw socket and returns its reply's code (and request
 * id); -1 on timeout, -2 if it was an event, -3 if its receipt disagrees with it. */
int harness_raw_reply(void *socket, uint64_t *request_id);

/* GET path from 127.0.0.1:port: the status, and the body into out. -1 if no answer.
 * Not for concurrent use (one static buffer). */
int harness_http_get(int port, const char *path, char *out, size_t out_len);
/* The value of a metric line of text that starts with prefix (name and labels), or -1. */
long long harness_metric(const char *text, const char *prefix);
/* The same, read from the broker's /metrics now. */
long long harness_broker_metric(test_broker *b, const char *prefix);
/* Open file descriptors of a process (from /proc), or -1. */
int harness_fds(pid_t pid);

/* A TCP port on 127.0.0.1 free at the moment, or -1. */
int harness_free_port(void);

/* Counts lines of text. */
int harness_lines(const char *text);

#endif
