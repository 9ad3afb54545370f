/* member.c - spbe member add|ls|show|revoke|rotate. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "identity.h"

static const char usage_text[] =
    "usage: spbe member add NAME (--key-file FILE.pub | --public-key HEX)\n"
    "                       [--pub PATTERN]... [--sub PATTERN]... [--role admin|ops]...\n"
    "                       [--serve SERVICE]... [--call SERVICE]...\n"
    "       spbe member ls [--json] [--data DIR]\n"
    "       spbe member show NAME [--json] [--data DIR]\n"
    "       spbe member revoke NAME [--reason TEXT]\n"
    "       spbe member rotate NAME (--key-file FILE | --public-key HEX) [--reason TEXT]\n"
    "\n"
    "The registry of members (agency applications), their keys and rights. Changes\n"
    "need an identity with the admin role; ls and show work offline with --data.\n"
    "Nothing is allowed that is not granted: --pub and --sub take topic patterns\n"
    "('*' one token, '>' the rest); --serve and --call service name patterns.\n"
    "rotate gives a member a new key (spbe keygen makes one): the old key ends now,\n"
    "messages signed with it before still verify, after are refused. A member may rotate\n"
    "its own key with its current identity (--key) when FILE holds the new secret key\n"
    "(it signs the proof of possession); an admin may rotate any member's, also from a\n"
    ".pub file.\n";

#define MAX_RIGHTS 32

typedef struct member_args {
    const char *key_file, *public_key, *reason;
    char *pub[MAX_RIGHTS], *sub[MAX_RIGHTS], *roles[MAX_RIGHTS], *serve[MAX_RIGHTS],
        *call[MAX_RIGHTS];
    size_t n_pub, n_sub, n_roles, n_serve, n_call;
} member_args;

static int
member_option(int opt, const char *arg, void *ctx)
{
    member_args *a = ctx;
    switch (opt) {
    case 1:
        a->key_file = arg;
        return 0;
    case 2:
        a->public_key = arg;
        return 0;
    case 3:
        if (a->n_pub == MAX_RIGHTS)
            return 1;
        a->pub[a->n_pub++] = (char *)arg;
        return 0;
    case 4:
        if (a->n_sub == MAX_RIGHTS)
            return 1;
        a->sub[a->n_sub++] = (char *)arg;
        return 0;
    case 5:
        if (a->n_roles == MAX_RIGHTS)
            return 1;
        a->roles[a->n_roles++] = (char *)arg;
        return 0;
    case 6:
        a->reason = arg;
        return 0;
    case 7:
        if (a->n_serve == MAX_RIGHTS)
            return 1;
        a->serve[a->n_serve++] = (char *)arg;
        return 0;
    case 8:
        if (a->n_call == MAX_RIGHTS)
            return 1;
        a->call[a->n_call++] = (char *)arg;
        return 0;
    }
    return 1;
}

static void
print_list_json(FILE *f, char **items, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        cli_json_string(f, items[i]);
    }
    fputc(']', f);
}

static void
print_list(FILE *f, char **items, size_t n)
{
    if (n == 0)
        fputs("-", f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", i ? "," : "", items[i]);
}

static void
member_json(const Spbe__V1__Member *m)
{
    char hex[65] = "";
    if (m->public_key.len == 32)
        cli_hex(m->public_key.data, 32, hex);
    printf("{\"name\":");
    cli_json_string(stdout, m->name);
    printf(",\"public_key\":\"%s\",\"revoked\":%s", hex, m->revoked ? "true" : "false");
    if (m->revoked) {
        printf(",\"revoke_reason\":");
        cli_json_string(stdout, m->revoke_reason);
    }
    if (m->rights) {
        printf(",\"publish\":");
        print_list_json(stdout, m->rights->publish, m->rights->n_publish);
        printf(",\"subscribe\":");
        print_list_json(stdout, m->rights->subscribe, m->rights->n_subscribe);
        printf(",\"roles\":");
        print_list_json(stdout, m->rights->roles, m->rights->n_roles);
        printf(",\"serve\":");
        print_list_json(stdout, m->rights->serve, m->rights->n_serve);
        printf(",\"call\":");
        print_list_json(stdout, m->rights->call, m->rights->n_call);
    }
    char t[40];
    cli_time(m->created_ns, t, sizeof t);
    printf(",\"created\":\"%s\",\"keys\":[", t);
    for (size_t i = 0; i < m->n_keys; i++) {
        const Spbe__V1__MemberKey *k = m->keys[i];
        char key[65] = "", from[40], until[40] = "";
        if (k->public_key.len == 32)
            cli_hex(k->public_key.data, 32, key);
        cli_time(k->valid_from_ns, from, sizeof from);
        if (k->valid_until_ns)
            cli_time(k->valid_until_ns, until, sizeof until);
        printf(
            "%s{\"public_key\":\"%s\",\"from\":\"%s\",\"until\":%s%s%s,\"reason\":", i ? "," : "",
            key, from, until[0] ? "\"" : "", until[0] ? until : "null", until[0] ? "\"" : "");
        cli_json_string(stdout, k->reason);
        printf("}");
    }
    printf("]}\n");
}

static void
member_show(const Spbe__V1__Member *m, int json)
{
    if (json) {
        member_json(m);
        return;
    }
    char hex[65] = "", t[40];
    if (m->public_key.len == 32)
        cli_hex(m->public_key.data, 32, hex);
    cli_time(m->created_ns, t, sizeof t);
    printf("name        %s\npublic key  %s\nstatus      %s%s%s\ncreated     %s\n", m->name, hex,
           m->revoked ? "revoked (" : "active", m->revoked ? m->revoke_reason : "",
           m->revoked ? ")" : "", t);
    if (m->rights) {
        printf("publish     ");
        print_list(stdout, m->rights->publish, m->rights->n_publish);
        printf("\nsubscribe   ");
        print_list(stdout, m->rights->subscribe, m->rights->n_subscribe);
        printf("\nserve       ");
        print_list(stdout, m->rights->serve, m->rights->n_serve);
        printf("\ncall        ");
        print_list(stdout, m->rights->call, m->rights->n_call);
        printf("\nroles       ");
        print_list(stdout, m->rights->roles, m->rights->n_roles);
        printf("\n");
    }
    for (size_t i = 0; i < m->n_keys; i++) { /* the history after rotations */
        const Spbe__V1__MemberKey *k = m->keys[i];
        char key[65] = "", from[40], until[40] = "now";
        if (k->public_key.len == 32)
            cli_hex(k->public_key.data, 32, key);
        cli_time(k->valid_from_ns, from, sizeof from);
        if (k->valid_until_ns)
            cli_time(k->valid_until_ns, until, sizeof until);
        printf("key %-7zu %.16s… %s .. %s%s%s\n", i + 1, key, i ? from : "creation", until,
               k->reason && k->reason[0] ? " " : "", k->reason ? k->reason : "");
    }
}

typedef struct list_state {
    int json, count;
} list_state;

static int
member_row(const Spbe__V1__Member *m, void *arg)
{
    list_state *ls = arg;
    if (ls->json) {
        member_json(m);
        return 0;
    }
    if (ls->count++ == 0)
        printf("%-32s %-8s %-24s %-24s %s\n", "MEMBER", "STATUS", "PUBLISH", "SUBSCRIBE", "ROLES");
    printf("%-32s %-8s ", m->name, m->revoked ? "revoked" : "active");
    char buf[4096];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    if (m->rights && f) {
        print_list(f, m->rights->publish, m->rights->n_publish);
        fputc('\0', f);
        fflush(f);
        printf("%-24s ", buf);
        rewind(f);
        print_list(f, m->rights->subscribe, m->rights->n_subscribe);
        fputc('\0', f);
        fflush(f);
        printf("%-24s ", buf);
        rewind(f);
        print_list(f, m->rights->roles, m->rights->n_roles);
        fputc('\0', f);
        fflush(f);
        printf("%s", buf);
    }
    if (f)
        fclose(f);
    printf("\n");
    return 0;
}

static int
member_offline(const cli_common *common, const char *what, const char *name)
{
    store *s = cli_open_store(common, "member");
    if (!s)
        return EXIT_ERROR;
    store_reader *r;
    int rc = store_reader_begin(s, &r), exit_code = EXIT_OK;
    if (rc == SPBE_OK && strcmp(what, "ls") == 0) {
        list_state ls = {common->json, 0};
        rc = store_member_each(r, member_row, &ls);
    } else if (rc == SPBE_OK) {
        Spbe__V1__Member *m;
        rc = store_member_get(r, name, &m);
        if (rc == SPBE_OK) {
            member_show(m, common->json);
            spbe__v1__member__free_unpacked(m, NULL);
        }
    }
    if (rc != SPBE_OK)
        exit_code = cli_fail("member", rc, rc == SPBE_NOT_FOUND ? "no member %s" : "cannot read %s",
                             name ? name : common->data);
    store_reader_end(&r);
    store_close(&s);
    return exit_code;
}

/* The key of --key-file or --public-key for member name (one of them); with proof not
 * NULL and a file holding the secret, also the proof of possession for a rotation. */
static int
member_key(const member_args *a, const char *name, const char *verb, uint8_t key[32],
           uint8_t proof[64], int *proved)
{
    if (!!a->key_file == !!a->public_key) {
        fprintf(stderr, "spbe member %s: give exactly one of --key-file and --public-key\n", verb);
        return EXIT_USAGE;
    }
    if (!a->key_file) {
        if (wire_hex_decode(a->public_key, key, 32) == SPBE_OK)
            return EXIT_OK;
        fprintf(stderr, "spbe member %s: --public-key takes 64 hex digits\n", verb);
        return EXIT_USAGE;
    }
    identity id;
    char err[512];
    if (identity_load(a->key_file, &id, err, sizeof err) != SPBE_OK)
        return cli_fail("member", SPBE_BAD_REQUEST, "%s", err);
    if (strcmp(id.member, name) != 0)
        return cli_fail("member", SPBE_BAD_REQUEST, "%s is the key of %s, not %s", a->key_file,
                        id.member, name);
    memcpy(key, id.public_key, 32);
    if (proof && id.has_secret) { /* proof that the new key is held */
        wire_rotation_sign(name, key, id.secret_key, proof);
        *proved = 1;
    }
    memset(&id, 0, sizeof id);
    return EXIT_OK;
}

int
cmd_member(int argc, char **argv)
{
    static const struct option opts[] = {{"key-file", required_argument, 0, 1},
                                         {"public-key", required_argument, 0, 2},
                                         {"pub", required_argument, 0, 3},
                                         {"sub", required_argument, 0, 4},
                                         {"role", required_argument, 0, 5},
                                         {"reason", required_argument, 0, 6},
                                         {"serve", required_argument, 0, 7},
                                         {"call", required_argument, 0, 8},
                                         {0, 0, 0, 0}};
    int early = cli_subcommand(argc, argv, usage_text);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    member_args a = {0};
    int i = cli_parse(argc - 1, argv + 1, &common, opts, "", member_option, &a, usage_text);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    char **pos = argv + 1 + i;
    int npos = argc - 1 - i;
    int needs_name = strcmp(what, "ls") != 0;
    if (strcmp(what, "ls") && strcmp(what, "show") && strcmp(what, "add") &&
        strcmp(what, "revoke") && strcmp(what, "rotate")) {
        fprintf(stderr, "spbe member: unknown subcommand '%s'\n%s", what, usage_text);
        return EXIT_USAGE;
    }
    if (npos != needs_name) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *name = needs_name ? pos[0] : NULL;
    if (common.data) {
        if (strcmp(what, "ls") && strcmp(what, "show")) {
            fprintf(stderr,
                    "spbe member: %s works online only (registry changes go through the broker)\n",
                    what);
            return EXIT_USAGE;
        }
        return member_offline(&common, what, name);
    }

    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    Spbe__V1__MemberAdd add = SPBE__V1__MEMBER_ADD__INIT;
    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    Spbe__V1__MemberRevoke revoke = SPBE__V1__MEMBER_REVOKE__INIT;
    Spbe__V1__MemberGet get = SPBE__V1__MEMBER_GET__INIT;
    Spbe__V1__MemberList list = SPBE__V1__MEMBER_LIST__INIT;
    Spbe__V1__MemberRotate rotate = SPBE__V1__MEMBER_ROTATE__INIT;
    uint8_t key[32], proof[64];
    if (strcmp(what, "rotate") == 0) {
        int proved = 0;
        int rc = member_key(&a, name, "rotate", key, proof, &proved);
        if (rc != EXIT_OK)
            return rc;
        if (proved) {
            rotate.proof.data = proof;
            rotate.proof.len = sizeof proof;
        }
        rotate.name = (char *)name;
        rotate.public_key.data = key;
        rotate.public_key.len = 32;
        rotate.reason = (char *)(a.reason ? a.reason : "");
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_ROTATE;
        cmd.member_rotate = &rotate;
    } else if (strcmp(what, "add") == 0) {
        int rc = member_key(&a, name, "add", key, NULL, NULL);
        if (rc != EXIT_OK)
            return rc;
        add.name = (char *)name;
        add.public_key.data = key;
        add.public_key.len = 32;
        rights.publish = a.pub;
        rights.n_publish = a.n_pub;
        rights.subscribe = a.sub;
        rights.n_subscribe = a.n_sub;
        rights.roles = a.roles;
        rights.n_roles = a.n_roles;
        rights.serve = a.serve;
        rights.n_serve = a.n_serve;
        rights.call = a.call;
        rights.n_call = a.n_call;
        add.rights = &rights;
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_ADD;
        cmd.member_add = &add;
    } else if (strcmp(what, "revoke") == 0) {
        revoke.name = (char *)name;
        revoke.reason = (char *)(a.reason ? a.reason : "");
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_REVOKE;
        cmd.member_revoke = &revoke;
    } else if (strcmp(what, "show") == 0) {
        get.name = (char *)name;
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET;
        cmd.member_get = &get;
    } else {
        cmd.body_case = SPBE__V1__COMMAND__BODY_MEMBER_LIST;
        cmd.member_list = &list;
    }
    spbe_client *c = cli_connect(&common, "member");
    if (!c)
        return EXIT_ERROR;
    Spbe__V1__Reply *reply;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL), exit_code = EXIT_OK;
    if (rc != SPBE_OK) {
        exit_code = cli_fail("member", rc, "%s", spbe_last_error(c));
    } else if (reply->code != SPBE__V1__ERROR_CODE__OK) {
        exit_code = cli_fail("member", (int)reply->code, "%s", reply->error);
    } else if (reply->body_case == SPBE__V1__REPLY__BODY_MEMBERS) {
        list_state ls = {common.json, 0};
        for (size_t k = 0; k < reply->members->n_members; k++)
            member_row(reply->members->members[k], &ls);
    } else if (reply->body_case == SPBE__V1__REPLY__BODY_MEMBER) {
        member_show(reply->member->member, common.json);
        if (strcmp(what, "add") == 0 && !common.json) {
            char hex[65];
            cli_hex(spbe_broker_key(c), 32, hex);
            printf("\nthe member connects with broker_key = %s\n", hex);
        }
    }
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}
