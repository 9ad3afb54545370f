/* main.c - spbe-ikn: the agency adapters of the reference process (relocation of ASN to
 * IKN), one role per process. docs/reference-process.md describes the process. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: spbe-ikn ROLE [options]\n"
               "\n"
               "The agency adapters of the reference process, each a member of the bus:\n"
               "  kl --instansi KODE  a ministry (K/L): its unit and ASN scenarios (steps 1, 2)\n"
               "  dukcapil            Dukcapil's IKD: serves dukcapil.ikd.verifikasi (step 3)\n"
               "  bkn                 BKN: checks each ASN with IKD, its record and competency,\n"
               "                      publishes the result; serves bkn.siasn.pemeriksaan (3, 4)\n"
               "  portal              the single portal: family scenarios (5), each ASN's status\n"
               "                      from the events (8); serves portal.status\n"
               "  hunian              the IKN Authority: housing (6)\n"
               "  tunjangan           Kemenkeu: the pioneer allowance (7)\n"
               "  bindings            print the broker settings that bind the process's topics\n"
               "                      and services to their schemas (for --config)\n"
               "  members             print each member: NAME ROLE INSTANSI|- and its rights as\n"
               "                      spbe member add options (docker/ikn-setup reads it)\n"
               "\n"
               "options:\n"
               "  -k, --key FILE      the member's identity file (default $SPBE_KEY)\n"
               "  -b, --broker EP     the broker (default $SPBE_BROKER, the identity's broker)\n"
               "      --seed N        the world's seed (default 2024); every adapter the same\n"
               "      --asn N         the world's number of ASN (default 12000); the same\n"
               "      --instansi KODE the ministry of role kl\n"
               "      --workers N     bkn: sessions sharing its consumer (default 16)\n"
               "  -v, --verbose       log retries\n"
               "  -h, --help          this help\n"
               "\n"
               "Runs until SIGINT/SIGTERM (kl: until its scenarios have their receipts), then\n"
               "prints one JSON line of what it did. Exit 0, 1 on an error, 2 on bad usage.\n");
}

int
main(int argc, char **argv)
{
    ikn_ctx x = {.seed = 2024, .n_asn = 12000, .workers = 16, .stop = &stop_requested};
    static const struct option options[] = {
        {"key", required_argument, 0, 'k'},
        {"broker", required_argument, 0, 'b'},
        {"seed", required_argument, 0, 1},
        {"asn", required_argument, 0, 2},
        {"instansi", required_argument, 0, 3},
        {"workers", required_argument, 0, 4},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int opt;
    char *end;
    while ((opt = getopt_long(argc, argv, "k:b:vh", options, NULL)) != -1) {
        switch (opt) {
        case 'k':
            x.key = optarg;
            break;
        case 'b':
            x.broker = optarg;
            break;
        case 1:
            x.seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg)
                return fprintf(stderr, "spbe-ikn: --seed takes a number\n"), 2;
            break;
        case 2:
            x.n_asn = strtoull(optarg, &end, 10);
            if (*end || !*optarg || x.n_asn < 1 || x.n_asn > 2000000)
                return fprintf(stderr, "spbe-ikn: --asn takes 1..2000000\n"), 2;
            break;
        case 3:
            x.instansi = optarg;
            break;
        case 4:
            x.workers = (int)strtol(optarg, &end, 10);
            if (*end || x.workers < 1 || x.workers > 60)
                return fprintf(stderr, "spbe-ikn: --workers takes 1..60\n"), 2;
            break;
        case 'v':
            x.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    x.role = argv[optind];
    static const struct {
        const char *name;
        int (*run)(ikn_ctx *);
    } roles[] = {{"kl", ikn_kl},
                 {"dukcapil", ikn_dukcapil},
                 {"bkn", ikn_bkn},
                 {"portal", ikn_portal},
                 {"hunian", ikn_hunian},
                 {"tunjangan", ikn_tunjangan},
                 {"bindings", ikn_print_bindings},
                 {"members", ikn_print_members}};
    int (*run)(ikn_ctx *) = NULL;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strcmp(roles[i].name, x.role) == 0)
            run = roles[i].run;
    if (!run) {
        fprintf(stderr, "spbe-ikn: unknown role '%s'\n", x.role);
        usage(stderr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (ikn_world_build(&x.world, x.seed, x.n_asn) != 0) {
        fprintf(stderr, "spbe-ikn: out of memory for %zu ASN\n", x.n_asn);
        return 1;
    }
    int rc = run(&x);
    ikn_world_free(&x.world);
    return rc;
}
