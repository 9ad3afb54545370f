/* main.c - spbe-broker: flags, signals, run. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "broker.h"
#include "config.h"
#include "log.h"

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int
main(int argc, char **argv)
{
    broker_config config;
    config_defaults(&config);
    int rc = config_parse_args(&config, argc, argv);
    if (rc)
        return rc == 1 ? 0 : 2;
    log_set_level(config.log_level);
    log_set_json(config.log_json);
    if (config.rotate_key) {
        char why[512], said[1024];
        if (broker_rotate_key(&config, said, sizeof said, why, sizeof why) != 0) {
            fprintf(stderr, "spbe-broker: %s\n", why);
            return 1;
        }
        puts(said);
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* every connection is a descriptor: take what the system allows, not the shell's 1024 */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    broker *b = NULL;
    char err[512];
    if (broker_new(&config, &b, err, sizeof err) != 0) {
        log_event(LOG_ERROR, "start_failed", "reason=\"%s\"", err);
        fprintf(stderr, "spbe-broker: %s\n", err);
        return 1;
    }
    rc = broker_run(b, &stop_requested);
    broker_destroy(&b);
    return rc == 0 ? 0 : 1;
}
