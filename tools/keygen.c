/* keygen.c - spbe keygen: a member identity file and its public part. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "identity.h"

static const char usage_text[] =
    "usage: spbe keygen NAME [-o FILE] [--endpoint ENDPOINT] [--broker-pub FILE] [--force]\n"
    "\n"
    "Creates an Ed25519 identity for member NAME (agency/app) in FILE (default\n"
    "NAME with '/' as '_' plus .key), mode 0600, and its public part in FILE.pub for\n"
    "the broker's admin ('spbe member add NAME --key-file FILE.pub').\n"
    "  -o, --output FILE      where to write the identity\n"
    "      --endpoint EP      broker endpoint to record in the identity\n"
    "      --broker-pub FILE  the broker's public key file (broker.pub) to record\n"
    "      --force            overwrite an existing file\n";

typedef struct keygen_args {
    const char *output, *endpoint, *broker_pub;
    int force;
} keygen_args;

static int
keygen_option(int opt, const char *arg, void *ctx)
{
    keygen_args *a = ctx;
    switch (opt) {
    case 'o':
        a->output = arg;
        return 0;
    case 1:
        a->endpoint = arg;
        return 0;
    case 2:
        a->broker_pub = arg;
        return 0;
    case 3:
        a->force = 1;
        return 0;
    }
    return 1;
}

int
cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"endpoint", required_argument, 0, 1},
                                         {"broker-pub", required_argument, 0, 2},
                                         {"force", no_argument, 0, 3},
                                         {0, 0, 0, 0}};
    cli_common common;
    keygen_args a = {0};
    int i = cli_parse(argc, argv, &common, opts, "o:", keygen_option, &a, usage_text);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (argc - i != 1) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    identity id;
    if (identity_generate(argv[i], &id) != SPBE_OK) {
        fprintf(stderr, "spbe keygen: '%s' is not a member name (agency/app, lower case)\n",
                argv[i]);
        return EXIT_USAGE;
    }
    char err[512], path[1024], pub[1040];
    if (a.output) {
        snprintf(path, sizeof path, "%s", a.output);
    } else {
        snprintf(path, sizeof path, "%s.key", argv[i]);
        *strchr(path, '/') = '_';
    }
    if (a.endpoint)
        snprintf(id.broker, sizeof id.broker, "%s", a.endpoint);
    if (a.broker_pub) {
        identity broker;
        if (identity_load(a.broker_pub, &broker, err, sizeof err) != SPBE_OK)
            return cli_fail("keygen", SPBE_BAD_REQUEST, "%s", err);
        memcpy(id.broker_key, broker.public_key, sizeof id.broker_key);
        id.has_broker_key = 1;
    }
    int rc = identity_save(&id, path, a.force, err, sizeof err);
    if (rc == SPBE_OK) {
        snprintf(pub, sizeof pub, "%s.pub", path);
        rc = identity_save_public(&id, pub, a.force, err, sizeof err);
    }
    if (rc != SPBE_OK)
        return cli_fail("keygen", rc, "%s", err);
    char hex[65];
    cli_hex(id.public_key, 32, hex);
    if (common.json) {
        printf("{\"member\":");
        cli_json_string(stdout, id.member);
        printf(",\"public_key\":\"%s\",\"identity\":", hex);
        cli_json_string(stdout, path);
        printf(",\"public\":");
        cli_json_string(stdout, pub);
        printf("}\n");
    } else {
        printf(
            "member      %s\npublic key  %s\nidentity    %s (secret, mode 0600)\npublic      %s\n",
            id.member, hex, path, pub);
    }
    return EXIT_OK;
}
