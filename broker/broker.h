/* broker.h - the broker: sessions, commands, group commit, fan-out. */
#ifndef SPBE_BROKER_H
#define SPBE_BROKER_H

#include <signal.h>

#include "config.h"

typedef struct broker broker;

/* Opens the store (creating keys and the admin identity on first start) and binds
 * the endpoint. 0 on success; otherwise a reason in err. */
int broker_new(const broker_config *config, broker **out, char *err, size_t err_len);
/* Serves until *stop becomes non-zero; 0 on a clean stop. */
int broker_run(broker *b, volatile sig_atomic_t *stop);
/* One turn of the loop: what is waiting on the sockets (at most max_wait_ms for it, or
 * the loop's own timeouts with -1), commits collected, deliveries pumped, timers run.
 * 0, or -1 when polling fails. broker_run is this until *stop, then the orderly stop. */
int broker_step(broker *b, long max_wait_ms);
/* NULL-safe; nulls *b. */
void broker_destroy(broker **b);

/*
 * Rotates the broker's key in config->data_dir (the broker must be stopped): a new key
 * pair; the rotation, signed by the old key, appended to $sys.audit.broker-key (signed by
 * the old key too) and covered by a last head the old key signs; broker.key/.pub and the
 * admin identity's broker key replaced. 0 with what to tell the operator in said, or -1
 * with the reason in err.
 */
int broker_rotate_key(const broker_config *config, char *said, size_t said_len, char *err,
                      size_t err_len);

#endif
