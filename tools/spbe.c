/* spbe.c - the spbe command: subcommands in the way of git. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "wire.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} commands[] = {
    {"keygen", cmd_keygen, "create a member identity (Ed25519 key pair)"},
    {"member", cmd_member, "the registry: member add|ls|show|revoke"},
    {"pub", cmd_pub, "sign and publish a message, print the broker's receipt"},
    {"sub", cmd_sub, "subscribe to a topic pattern, live or from a sequence"},
    {"topic", cmd_topic, "topics: topic ls|info"},
    {"msg", cmd_msg, "stored messages: msg get TOPIC SEQ"},
    {"req", cmd_req, "call a service with a signed request, print the signed reply"},
    {"serve", cmd_serve, "serve a service with a command: serve SERVICE -- COMMAND"},
    {"consumer", cmd_consumer, "durable consumers: consumer ls|info|rm"},
    {"dlq", cmd_dlq, "dead letters of a consumer: dlq ls|replay|purge"},
    {"audit", cmd_audit, "proof: audit verify|prove|check|head|consistency"},
    {"backup", cmd_backup, "ops: a consistent copy of a data directory, while it runs"},
    {"stats", cmd_stats, "ops: rates per topic and consumer (--watch)"},
    {"session", cmd_session, "ops: session ls"},
    {"bench", cmd_bench, "load: bench pub|consume|req"},
    {"demo", cmd_demo, "the reference process: the relocation of ASN to IKN, end to end"},
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: spbe <command> [options] [args]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nEvery command takes --help. Common options: --key FILE (env SPBE_KEY),\n"
               "--broker ENDPOINT (env SPBE_BROKER), --broker-key HEX (env SPBE_BROKER_KEY),\n"
               "--data DIR (offline, read-only inspection of a data directory; --offline: the\n"
               "one in SPBE_DATA, default ./spbe-data), --json, --timeout-ms N.\n"
               "Exit status: 0 success, 1 an error (its code's name on stderr), 2 bad usage.\n");
}

int
main(int argc, char **argv)
{
    if (wire_init() != SPBE_OK) {
        fprintf(stderr, "spbe: INTERNAL: libsodium failed to initialise\n");
        return EXIT_ERROR;
    }
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("spbe %s (protocol %d)\n", spbe_version(), WIRE_PROTOCOL_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "spbe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
