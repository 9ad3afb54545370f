/* inspect.c - spbe topic ls|info and spbe msg get, online or offline (--data). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "identity.h"
#include "wire.h"

static const char topic_usage[] =
    "usage: spbe topic ls [--json] [--data DIR]\n"
    "       spbe topic info TOPIC [--json] [--data DIR]\n"
    "\n"
    "Lists topics with their sequences, message counts and sizes. Online through the\n"
    "broker (a member sees the topics it may subscribe to; ops and admin see all), or\n"
    "offline and read-only from the data directory with --data (also while a broker runs).\n";

static const char msg_usage[] =
    "usage: spbe msg get TOPIC SEQ [--json] [--raw] [--data DIR]\n"
    "\n"
    "Shows one stored message: header, payload and whether the sender's signature\n"
    "verifies. --raw writes the sender's exact signed bytes to standard output.\n";

static void
topic_row(const Spbe__V1__TopicInfo *t, int json, int *count)
{
    char first[40] = "-", last[40] = "-";
    if (t->messages) {
        cli_time(t->first_ns, first, sizeof first);
        cli_time(t->last_ns, last, sizeof last);
    }
    if (json) {
        printf("{\"topic\":");
        cli_json_string(stdout, t->name);
        printf(",\"first_sequence\":%llu,\"last_sequence\":%llu,\"messages\":%llu,\"bytes\":%llu,"
               "\"first\":\"%s\",\"last\":\"%s\"}\n",
               (unsigned long long)t->first_sequence, (unsigned long long)t->last_sequence,
               (unsigned long long)t->messages, (unsigned long long)t->bytes, first, last);
        return;
    }
    if ((*count)++ == 0)
        printf("%-40s %10s %10s %10s %12s  %s\n", "TOPIC", "FIRST", "LAST", "MESSAGES", "BYTES",
               "LAST ACCEPTED");
    printf("%-40s %10llu %10llu %10llu %12llu  %s\n", t->name,
           (unsigned long long)t->first_sequence, (unsigned long long)t->last_sequence,
           (unsigned long long)t->messages, (unsigned long long)t->bytes, last);
}

static void
topic_from_store(const store_topic_info *s, Spbe__V1__TopicInfo *t)
{
    spbe__v1__topic_info__init(t);
    t->name = (char *)s->name;
    t->first_sequence = s->first_sequence;
    t->last_sequence = s->last_sequence;
    t->messages = s->messages;
    t->bytes = s->bytes;
    t->first_ns = s->first_ns;
    t->last_ns = s->last_ns;
}

typedef struct row_state {
    int json, count;
} row_state;

static int
offline_row(const store_topic_info *s, void *arg)
{
    row_state *rs = arg;
    Spbe__V1__TopicInfo t;
    topic_from_store(s, &t);
    topic_row(&t, rs->json, &rs->count);
    return 0;
}

static int
offline_topic(const cli_common *common, const char *name)
{
    store *s = cli_open_store(common, "topic");
    if (!s)
        return EXIT_ERROR;
    store_reader *r;
    row_state rs = {common->json, 0};
    int rc = store_reader_begin(s, &r);
    if (rc == SPBE_OK && !name) {
        rc = store_topic_each(r, offline_row, &rs);
    } else if (rc == SPBE_OK) {
        store_topic_info info;
        rc = store_topic_get(r, name, &info);
        if (rc == SPBE_OK)
            offline_row(&info, &rs);
    }
    store_reader_end(&r);
    store_close(&s);
    if (rc != SPBE_OK)
        return cli_fail("topic", rc, rc == SPBE_NOT_FOUND ? "no topic %s" : "cannot read %s",
                        name ? name : common->data);
    return EXIT_OK;
}

int
cmd_topic(int argc, char **argv)
{
    int early = cli_subcommand(argc, argv, topic_usage);
    if (early >= 0)
        return early;
    const char *what = argv[1];
    cli_common common;
    int i = cli_parse(argc - 1, argv + 1, &common, NULL, NULL, NULL, NULL, topic_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    int npos = argc - 1 - i;
    int info = strcmp(what, "info") == 0;
    if ((!info && strcmp(what, "ls") != 0) || npos != info) {
        fputs(topic_usage, stderr);
        return EXIT_USAGE;
    }
    const char *name = info ? argv[1 + i] : NULL;
    if (name && !wire_topic_valid(name))
        return cli_fail("topic", SPBE_INVALID_TOPIC, "'%s' is not a valid topic", name);
    if (common.data)
        return offline_topic(&common, name);

    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    Spbe__V1__TopicList list = SPBE__V1__TOPIC_LIST__INIT;
    Spbe__V1__TopicGet get = SPBE__V1__TOPIC_GET__INIT;
    if (name) {
        get.topic = (char *)name;
        cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_GET;
        cmd.topic_get = &get;
    } else {
        cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST;
        cmd.topic_list = &list;
    }
    spbe_client *c = cli_connect(&common, "topic");
    if (!c)
        return EXIT_ERROR;
    Spbe__V1__Reply *reply;
    int rc = cli_call(c, &cmd, &reply, NULL, NULL), exit_code = EXIT_OK, count = 0;
    if (rc != SPBE_OK)
        exit_code = cli_fail("topic", rc, "%s", spbe_last_error(c));
    else if (reply->code != SPBE__V1__ERROR_CODE__OK)
        exit_code = cli_fail("topic", (int)reply->code, "%s", reply->error);
    else if (reply->body_case == SPBE__V1__REPLY__BODY_TOPICS)
        for (size_t k = 0; k < reply->topics->n_topics; k++)
            topic_row(reply->topics->topics[k], common.json, &count);
    else if (reply->body_case == SPBE__V1__REPLY__BODY_TOPIC)
        topic_row(reply->topic, common.json, &count);
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}

/* ------------------------------------------------------------ msg get */

static int
print_message(const char *topic, uint64_t seq, int64_t accepted_ns, const uint8_t *raw,
              size_t raw_len, const char *verdict, int json, int as_raw)
{
    if (as_raw) {
        fwrite(raw, 1, raw_len, stdout);
        return EXIT_OK;
    }
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    if (wire_envelope_decode(raw, raw_len, &sm, &m, NULL) != SPBE_OK) {
        wire_envelope_free(&sm, &m);
        return cli_fail("msg", SPBE_INTERNAL, "stored bytes do not decode");
    }
    char accepted[40], created[40], id[33], hash[65];
    uint8_t h[32];
    wire_hash(raw, raw_len, h);
    cli_hex(h, 32, hash);
    cli_time(accepted_ns, accepted, sizeof accepted);
    cli_time(m->created_ns, created, sizeof created);
    cli_hex(m->id.data, 16, id);
    if (json) {
        printf("{\"topic\":");
        cli_json_string(stdout, topic);
        printf(",\"sequence\":%llu,\"accepted\":\"%s\",\"sender\":", (unsigned long long)seq,
               accepted);
        cli_json_string(stdout, m->sender);
        printf(",\"id\":\"%s\",\"created\":\"%s\",\"schema\":", id, created);
        cli_json_string(stdout, m->schema);
        printf(",\"hash\":\"%s\",\"bytes\":%zu,\"signature\":\"%s\",\"payload\":", hash, raw_len,
               verdict);
        cli_payload(stdout, m->schema, m->payload.data, m->payload.len, 1, 0);
        printf("}\n");
    } else {
        printf("topic       %s\nsequence    %llu\naccepted    %s\nsender      %s\nid          %s\n"
               "created     %s\nschema      %s\nhash        %s\nsize        %zu bytes\n"
               "signature   %s\npayload     ",
               topic, (unsigned long long)seq, accepted, m->sender, id, created,
               m->schema[0] ? m->schema : "-", hash, raw_len, verdict);
        cli_payload(stdout, m->schema, m->payload.data, m->payload.len, 0, 4096);
        printf("\n");
    }
    wire_envelope_free(&sm, &m);
    return EXIT_OK;
}

static const char *
verdict_with_key(const uint8_t *raw, size_t len, const uint8_t *key)
{
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    int rc = wire_envelope_decode(raw, len, &sm, &m, NULL);
    if (rc == SPBE_OK)
        rc = wire_envelope_verify(sm, key);
    wire_envelope_free(&sm, &m);
    return rc == SPBE_OK ? "valid" : "INVALID";
}

static const char *
sender_of(const uint8_t *raw, size_t len, char *out, size_t n)
{
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    out[0] = '\0';
    if (wire_envelope_decode(raw, len, &sm, &m, NULL) == SPBE_OK)
        snprintf(out, n, "%s", m->sender);
    wire_envelope_free(&sm, &m);
    return out;
}

static int
msg_option(int opt, const char *arg, void *ctx)
{
    (void)arg;
    if (opt != 1)
        return 1;
    *(int *)ctx = 1;
    return 0;
}

int
cmd_msg(int argc, char **argv)
{
    static const struct option opts[] = {{"raw", no_argument, 0, 1}, {0, 0, 0, 0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(msg_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    int raw = 0;
    cli_common common;
    int i = cli_parse(argc - 1, argv + 1, &common, opts, "", msg_option, &raw, msg_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (strcmp(argv[1], "get") != 0 || argc - 1 - i != 2) {
        fputs(msg_usage, stderr);
        return EXIT_USAGE;
    }
    const char *topic = argv[1 + i];
    char *end;
    uint64_t seq = strtoull(argv[2 + i], &end, 10);
    if (*end || seq == 0) {
        fprintf(stderr, "spbe msg get: SEQ must be a sequence number (1 or more)\n");
        return EXIT_USAGE;
    }
    if (!wire_topic_valid(topic))
        return cli_fail("msg", SPBE_INVALID_TOPIC, "'%s' is not a valid topic", topic);
    char sender[80];
    if (common.data) {
        store *s = cli_open_store(&common, "msg");
        if (!s)
            return EXIT_ERROR;
        store_reader *r;
        store_topic_info t;
        store_message m;
        int rc = store_reader_begin(s, &r), exit_code;
        if (rc == SPBE_OK)
            rc = store_topic_get(r, topic, &t);
        if (rc == SPBE_OK)
            rc = store_message_get(r, t.id, seq, &m);
        if (rc == SPBE_OK) {
            Spbe__V1__Member *member = NULL;
            const char *verdict = "UNKNOWN_SENDER";
            char pub[1100], why[256];
            identity broker_id;
            snprintf(pub, sizeof pub, "%s/broker.pub", common.data);
            if (strcmp(sender_of(m.data, m.len, sender, sizeof sender), "spbe/broker") == 0) {
                /* the broker's own (dead letters, tree heads): its key in the directory */
                if (identity_load(pub, &broker_id, why, sizeof why) == SPBE_OK)
                    verdict = verdict_with_key(m.data, m.len, broker_id.public_key);
            } else if (store_member_get(r, sender, &member) == SPBE_OK &&
                       member->public_key.len == 32) {
                verdict = verdict_with_key(m.data, m.len, member->public_key.data);
            }
            if (member)
                spbe__v1__member__free_unpacked(member, NULL);
            exit_code = print_message(topic, m.sequence, m.accepted_ns, m.data, m.len, verdict,
                                      common.json, raw);
        } else {
            exit_code = cli_fail(
                "msg", rc, rc == SPBE_NOT_FOUND ? "no message %s #%llu" : "cannot read %s #%llu",
                topic, (unsigned long long)seq);
        }
        store_reader_end(&r);
        store_close(&s);
        return exit_code;
    }
    spbe_client *c = cli_connect(&common, "msg");
    if (!c)
        return EXIT_ERROR;
    Spbe__V1__MessageGet get = SPBE__V1__MESSAGE_GET__INIT;
    get.topic = (char *)topic;
    get.sequence = seq;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_MESSAGE_GET;
    cmd.message_get = &get;
    Spbe__V1__Reply *reply;
    uint8_t *body = NULL;
    size_t body_len = 0;
    int rc = cli_call(c, &cmd, &reply, &body, &body_len), exit_code = EXIT_OK;
    if (rc != SPBE_OK) {
        exit_code = cli_fail("msg", rc, "%s", spbe_last_error(c));
    } else if (reply->code != SPBE__V1__ERROR_CODE__OK) {
        exit_code = cli_fail("msg", (int)reply->code, "%s", reply->error);
    } else if (reply->body_case != SPBE__V1__REPLY__BODY_MESSAGE || !body) {
        exit_code = cli_fail("msg", SPBE_BAD_REQUEST, "broker sent no message");
    } else {
        /* end to end: check the sender's signature with the key the registry holds */
        Spbe__V1__MemberGet mg = SPBE__V1__MEMBER_GET__INIT;
        mg.name = (char *)sender_of(body, body_len, sender, sizeof sender);
        Spbe__V1__Command c2 = SPBE__V1__COMMAND__INIT;
        c2.body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET;
        c2.member_get = &mg;
        Spbe__V1__Reply *mr = NULL;
        const char *verdict = "UNKNOWN_SENDER";
        if (strcmp(mg.name, "spbe/broker") == 0) /* the broker's own: the key it proved */
            verdict = verdict_with_key(body, body_len, spbe_broker_key(c));
        else if (cli_call(c, &c2, &mr, NULL, NULL) == SPBE_OK &&
                 mr->code == SPBE__V1__ERROR_CODE__OK &&
                 mr->body_case == SPBE__V1__REPLY__BODY_MEMBER &&
                 mr->member->member->public_key.len == 32)
            verdict = verdict_with_key(body, body_len, mr->member->member->public_key.data);
        if (mr)
            spbe__v1__reply__free_unpacked(mr, NULL);
        exit_code = print_message(topic, reply->message->sequence, reply->message->accepted_ns,
                                  body, body_len, verdict, common.json, raw);
    }
    free(body);
    if (reply)
        spbe__v1__reply__free_unpacked(reply, NULL);
    spbe_close(&c);
    return exit_code;
}
