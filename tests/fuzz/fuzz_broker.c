/*
 * fuzz_broker.c - arbitrary messages to a whole broker in this process: its store on a
 * temporary directory, its writer and workers, CURVE over an ipc endpoint. Two sessions
 * send them: the admin's and a member's that may publish, subscribe, serve and call
 * "fuzz.>" (its key is fixed, so the seed corpus can carry messages it signed).
 *
 * An input is up to eight messages, each a header byte (bit 0: the admin's session;
 * bits 1-2: frames - 1, where four frames is one too many) and its frames, each a
 * little-endian 16-bit length and as many bytes (cut short where the input ends).
 * Every input runs between a hello and a bye on both sessions; the broker must answer
 * each with frames that decode, and keep serving: a ping after the input is answered.
 *
 * SPBE_FUZZ_SEEDS=DIR ./fuzz_broker writes the seed corpus to DIR and exits.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "broker.h"
#include "config.h"
#include "identity.h"
#include "log.h"
#include "store.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEMBER "fuzz/member"
#define PING_ID UINT64_MAX

typedef struct fuzz_world {
    char dir[96];
    broker *b;
    void *ctx;
    void *session[2]; /* the member's, the admin's */
} fuzz_world;

static fuzz_world world; /* libFuzzer calls in with no context of its own */

static void
member_identity(identity *id)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, 0x42, sizeof seed);
    memset(id, 0, sizeof *id);
    snprintf(id->member, sizeof id->member, "%s", MEMBER);
    crypto_sign_seed_keypair(id->public_key, id->secret_key, seed);
    id->has_secret = 1;
}

static size_t
pack_command(Spbe__V1__Command *cmd, uint8_t *buf, size_t cap)
{
    size_t n = spbe__v1__command__get_packed_size(cmd);
    if (n > cap)
        abort();
    return spbe__v1__command__pack(cmd, buf);
}

static void
send_hello(void *s, const char *member)
{
    Spbe__V1__Hello hello = SPBE__V1__HELLO__INIT;
    hello.protocol_version = WIRE_PROTOCOL_VERSION;
    hello.member = (char *)member;
    hello.client = "fuzz";
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = 1;
    cmd.body_case = SPBE__V1__COMMAND__BODY_HELLO;
    cmd.hello = &hello;
    uint8_t buf[256];
    zmq_send(s, buf, pack_command(&cmd, buf, sizeof buf), 0);
}

static void
send_simple(void *s, uint64_t request_id, int bye)
{
    Spbe__V1__Ping ping = SPBE__V1__PING__INIT;
    Spbe__V1__Bye by = SPBE__V1__BYE__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.request_id = request_id;
    if (bye) {
        cmd.body_case = SPBE__V1__COMMAND__BODY_BYE;
        cmd.bye = &by;
    } else {
        cmd.body_case = SPBE__V1__COMMAND__BODY_PING;
        cmd.ping = &ping;
    }
    uint8_t buf[64];
    zmq_send(s, buf, pack_command(&cmd, buf, sizeof buf), 0);
}

static void *
session_open(const fuzz_world *w, const identity *id, const identity *broker_id,
             const char *endpoint)
{
    uint8_t server[32], pub[32], sec[32];
    wire_curve_public(broker_id->public_key, server);
    wire_curve_public(id->public_key, pub);
    wire_curve_secret(id->secret_key, sec);
    void *s = zmq_socket(w->ctx, ZMQ_DEALER);
    int linger = 0;
    if (!s || zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32) ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(s, endpoint))
        abort();
    return s;
}

/* Reads what the broker sent on one session; each message's first frame must decode.
 * Returns 1 once the ping's answer was among them. */
static int
drain(void *s)
{
    int pinged = 0;
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return pinged;
        }
        int more = zmq_msg_more(&m);
        Spbe__V1__BrokerFrame *f =
            spbe__v1__broker_frame__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        if (!f)
            __builtin_trap(); /* the broker sent something that is not a frame */
        if (f->body_case == SPBE__V1__BROKER_FRAME__BODY_REPLY && f->reply->request_id == PING_ID)
            pinged = 1;
        spbe__v1__broker_frame__free_unpacked(f, NULL);
        zmq_msg_close(&m);
        while (more) { /* the body frame of a delivery or a reply */
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, s, 0) < 0)
                __builtin_trap();
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
    }
}

/* Turns the broker until both sessions' pings are answered and the writer has handed
 * back what it held (a quiet moment after), or gives up: a broker that stops answering
 * is a finding too. */
static void
settle(fuzz_world *w)
{
    int pinged[2] = {0, 0}, quiet = 0;
    for (int turn = 0; turn < 20000; turn++) {
        if (broker_step(w->b, 1) != 0)
            __builtin_trap();
        for (int i = 0; i < 2; i++)
            pinged[i] |= drain(w->session[i]);
        if (pinged[0] && pinged[1] && ++quiet > 3)
            return;
    }
    __builtin_trap(); /* no answer to a ping in 20000 turns */
}

static void
cleanup(void)
{
    for (int i = 0; i < 2; i++)
        if (world.session[i])
            zmq_close(world.session[i]);
    if (world.ctx)
        zmq_ctx_term(world.ctx);
    broker_destroy(&world.b);
    if (world.dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", world.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz_broker: could not remove %s\n", world.dir);
    }
}

static void write_seeds(const char *dir);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (wire_init() != SPBE_OK)
        abort();
    const char *seeds = getenv("SPBE_FUZZ_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    log_set_level(LOG_ERROR);
    fuzz_world *w = &world;
    /* in memory where there is a tmpfs: a commit's fsync is not what is being tested */
    snprintf(w->dir, sizeof w->dir, "%s/spbe-fuzz-broker-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(w->dir))
        abort();
    atexit(cleanup);

    broker_config config;
    config_defaults(&config);
    snprintf(config.data_dir, sizeof config.data_dir, "%s", w->dir);
    snprintf(config.endpoint, sizeof config.endpoint, "ipc://%s/broker.sock", w->dir);
    config.http[0] = '\0';
    config.heartbeat_ms = 3600 * 1000; /* sessions end with the input's bye, not by idling */
    config.max_store_bytes = 64u << 20;
    char err[512];
    /* bounded logs: replayed dead letters can multiply, and every catch-up reads them */
    if (config_set(&config, "retain", "fuzz.>:max-messages=2000", err, sizeof err) != 0 ||
        config_set(&config, "retain", "$sys.>:max-messages=2000", err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_broker: %s\n", err);
        abort();
    }
    /* first start makes the keys and the admin; the member goes into the registry
     * before the second */
    if (broker_new(&config, &w->b, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_broker: %s\n", err);
        abort();
    }
    broker_destroy(&w->b);
    identity me;
    member_identity(&me);
    char *fuzz[] = {"fuzz.>"};
    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    rights.publish = rights.subscribe = rights.serve = rights.call = fuzz;
    rights.n_publish = rights.n_subscribe = rights.n_serve = rights.n_call = 1;
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = me.member;
    m.public_key.data = me.public_key;
    m.public_key.len = WIRE_KEY_BYTES;
    m.rights = &rights;
    store *st;
    if (store_open(w->dir, NULL, &st, err, sizeof err) != SPBE_OK ||
        store_member_put(st, &m) != SPBE_OK)
        abort();
    store_close(&st);
    if (broker_new(&config, &w->b, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_broker: %s\n", err);
        abort();
    }

    identity admin, broker_id;
    char path[160];
    snprintf(path, sizeof path, "%s/admin.key", w->dir);
    if (identity_load(path, &admin, err, sizeof err) != SPBE_OK)
        abort();
    snprintf(path, sizeof path, "%s/broker.pub", w->dir);
    if (identity_load(path, &broker_id, err, sizeof err) != SPBE_OK)
        abort();
    w->ctx = zmq_ctx_new();
    w->session[0] = session_open(w, &me, &broker_id, config.endpoint);
    w->session[1] = session_open(w, &admin, &broker_id, config.endpoint);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_world *w = &world;
    send_hello(w->session[0], MEMBER);
    send_hello(w->session[1], "spbe/admin");
    size_t at = 0;
    for (int message = 0; message < 8 && at < size; message++) {
        uint8_t header = data[at++];
        void *s = w->session[header & 1];
        int frames = ((header >> 1) & 3) + 1;
        for (int i = 0; i < frames; i++) {
            size_t len = 0;
            if (at + 2 <= size) {
                len = (size_t)data[at] | (size_t)data[at + 1] << 8;
                at += 2;
            } else {
                at = size;
            }
            if (len > size - at)
                len = size - at;
            zmq_send(s, data + at, len, i + 1 < frames ? ZMQ_SNDMORE : 0);
            at += len;
        }
    }
    send_simple(w->session[0], PING_ID, 0);
    send_simple(w->session[1], PING_ID, 0);
    settle(w);
    send_simple(w->session[0], 2, 1);
    send_simple(w->session[1], 2, 1);
    return 0;
}

/* ------------------------------------------------------------ the seed corpus */

typedef struct seed {
    uint8_t data[8192];
    size_t len;
} seed;

static void
seed_frame(seed *sd, const void *bytes, size_t len)
{
    if (sd->len + 2 + len > sizeof sd->data)
        abort();
    sd->data[sd->len++] = (uint8_t)(len & 0xff);
    sd->data[sd->len++] = (uint8_t)(len >> 8);
    memcpy(sd->data + sd->len, bytes, len);
    sd->len += len;
}

/* One message of the seed: the command, and the body if there is one. */
static void
seed_message(seed *sd, int admin, Spbe__V1__Command *cmd, const uint8_t *body, size_t body_len)
{
    uint8_t buf[1024];
    size_t n = pack_command(cmd, buf, sizeof buf);
    sd->data[sd->len++] = (uint8_t)((admin ? 1 : 0) | (body ? 1 : 0) << 1);
    seed_frame(sd, buf, n);
    if (body)
        seed_frame(sd, body, body_len);
}

static void
seed_write(const char *dir, const char *name, const seed *sd)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(sd->data, 1, sd->len, f) != sd->len || fclose(f) != 0)
        abort();
}

static void
signed_message(const identity *me, const char *topic, int n, uint8_t **bytes, size_t *len)
{
    uint8_t id[16] = {0};
    id[0] = (uint8_t)n;
    id[1] = 0x5e;
    Spbe__V1__Message m = SPBE__V1__MESSAGE__INIT;
    m.id.data = id;
    m.id.len = sizeof id;
    m.topic = (char *)topic;
    m.sender = (char *)me->member;
    m.created_ns = 1764547200000000000LL;
    m.payload.data = (uint8_t *)"{\"nip\":\"199001012015031001\"}";
    m.payload.len = 29;
    if (wire_message_sign(&m, me->secret_key, bytes, len) != SPBE_OK)
        abort();
}

static void
write_seeds(const char *dir)
{
    identity me;
    member_identity(&me);
    mkdir(dir, 0755);
    seed sd;
    uint8_t *bytes;
    size_t len;

    /* subscribe, publish, unsubscribe */
    memset(&sd, 0, sizeof sd);
    Spbe__V1__Subscribe sub = SPBE__V1__SUBSCRIBE__INIT;
    sub.pattern = "fuzz.>";
    Spbe__V1__Command c = SPBE__V1__COMMAND__INIT;
    c.request_id = 10;
    c.body_case = SPBE__V1__COMMAND__BODY_SUBSCRIBE;
    c.subscribe = &sub;
    seed_message(&sd, 0, &c, NULL, 0);
    Spbe__V1__Publish pub = SPBE__V1__PUBLISH__INIT;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 11;
    c.body_case = SPBE__V1__COMMAND__BODY_PUBLISH;
    c.publish = &pub;
    signed_message(&me, "fuzz.asn.pindah", 1, &bytes, &len);
    seed_message(&sd, 0, &c, bytes, len);
    free(bytes);
    Spbe__V1__Unsubscribe unsub = SPBE__V1__UNSUBSCRIBE__INIT;
    unsub.subscription_id = 1;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 12;
    c.body_case = SPBE__V1__COMMAND__BODY_UNSUBSCRIBE;
    c.unsubscribe = &unsub;
    seed_message(&sd, 0, &c, NULL, 0);
    seed_write(dir, "subscribe-publish", &sd);

    /* a durable consumer: consume, ack, info, list, delete */
    memset(&sd, 0, sizeof sd);
    Spbe__V1__ConsumerConfig cc = SPBE__V1__CONSUMER_CONFIG__INIT;
    cc.name = "fuzz-portal";
    cc.pattern = "fuzz.>";
    cc.start = SPBE__V1__START_POSITION__START_FIRST;
    cc.ack_wait_ms = 5;
    cc.max_deliveries = 2;
    Spbe__V1__Consume cons = SPBE__V1__CONSUME__INIT;
    cons.config = &cc;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 20;
    c.body_case = SPBE__V1__COMMAND__BODY_CONSUME;
    c.consume = &cons;
    seed_message(&sd, 0, &c, NULL, 0);
    Spbe__V1__AckItem item = SPBE__V1__ACK_ITEM__INIT;
    item.topic = "fuzz.asn.pindah";
    item.sequence = 1;
    item.kind = SPBE__V1__ACK_KIND__NAK;
    Spbe__V1__AckItem *items[] = {&item};
    Spbe__V1__Ack ack = SPBE__V1__ACK__INIT;
    ack.consumer = "fuzz-portal";
    ack.items = items;
    ack.n_items = 1;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 21;
    c.body_case = SPBE__V1__COMMAND__BODY_ACK;
    c.ack = &ack;
    seed_message(&sd, 0, &c, NULL, 0);
    Spbe__V1__ConsumerGet cg = SPBE__V1__CONSUMER_GET__INIT;
    cg.name = "fuzz-portal";
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 22;
    c.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_GET;
    c.consumer_get = &cg;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__ConsumerList cl = SPBE__V1__CONSUMER_LIST__INIT;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 23;
    c.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_LIST;
    c.consumer_list = &cl;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__DlqReplay dr = SPBE__V1__DLQ_REPLAY__INIT;
    dr.consumer = "fuzz-portal";
    dr.count = 3;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 24;
    c.body_case = SPBE__V1__COMMAND__BODY_DLQ_REPLAY;
    c.dlq_replay = &dr;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__ConsumerDelete cd = SPBE__V1__CONSUMER_DELETE__INIT;
    cd.name = "fuzz-portal";
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 25;
    c.body_case = SPBE__V1__COMMAND__BODY_CONSUMER_DELETE;
    c.consumer_delete = &cd;
    seed_message(&sd, 1, &c, NULL, 0);
    seed_write(dir, "consumer", &sd);

    /* a service: serve, a request to itself, unserve */
    memset(&sd, 0, sizeof sd);
    Spbe__V1__Serve sv = SPBE__V1__SERVE__INIT;
    sv.service = "fuzz.ikd.verify";
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 30;
    c.body_case = SPBE__V1__COMMAND__BODY_SERVE;
    c.serve = &sv;
    seed_message(&sd, 0, &c, NULL, 0);
    Spbe__V1__Request rq = SPBE__V1__REQUEST__INIT;
    rq.service = "fuzz.ikd.verify";
    rq.timeout_ms = 5;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 31;
    c.body_case = SPBE__V1__COMMAND__BODY_REQUEST;
    c.request = &rq;
    signed_message(&me, "$sys.svc.fuzz.ikd.verify", 2, &bytes, &len);
    seed_message(&sd, 0, &c, bytes, len);
    free(bytes);
    Spbe__V1__Unserve us = SPBE__V1__UNSERVE__INIT;
    us.service = "fuzz.ikd.verify";
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 32;
    c.body_case = SPBE__V1__COMMAND__BODY_UNSERVE;
    c.unserve = &us;
    seed_message(&sd, 0, &c, NULL, 0);
    seed_write(dir, "service", &sd);

    /* the admin's look around: members, topics, sessions, a message */
    memset(&sd, 0, sizeof sd);
    Spbe__V1__MemberList ml = SPBE__V1__MEMBER_LIST__INIT;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 40;
    c.body_case = SPBE__V1__COMMAND__BODY_MEMBER_LIST;
    c.member_list = &ml;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__TopicList tl = SPBE__V1__TOPIC_LIST__INIT;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 41;
    c.body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST;
    c.topic_list = &tl;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__SessionList sl = SPBE__V1__SESSION_LIST__INIT;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 42;
    c.body_case = SPBE__V1__COMMAND__BODY_SESSION_LIST;
    c.session_list = &sl;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__MessageGet mg = SPBE__V1__MESSAGE_GET__INIT;
    mg.topic = "fuzz.asn.pindah";
    mg.sequence = 1;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 43;
    c.body_case = SPBE__V1__COMMAND__BODY_MESSAGE_GET;
    c.message_get = &mg;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__MemberGet mgt = SPBE__V1__MEMBER_GET__INIT;
    mgt.name = MEMBER;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 44;
    c.body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET;
    c.member_get = &mgt;
    seed_message(&sd, 1, &c, NULL, 0);
    seed_write(dir, "admin-inspects", &sd);

    /* the admin adds a member and revokes it */
    memset(&sd, 0, sizeof sd);
    identity other;
    identity_generate("fuzz/other", &other);
    char *pats[] = {"fuzz.other.>"};
    Spbe__V1__MemberRights r = SPBE__V1__MEMBER_RIGHTS__INIT;
    r.publish = pats;
    r.n_publish = 1;
    Spbe__V1__MemberAdd ma = SPBE__V1__MEMBER_ADD__INIT;
    ma.name = other.member;
    ma.public_key.data = other.public_key;
    ma.public_key.len = WIRE_KEY_BYTES;
    ma.rights = &r;
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 50;
    c.body_case = SPBE__V1__COMMAND__BODY_MEMBER_ADD;
    c.member_add = &ma;
    seed_message(&sd, 1, &c, NULL, 0);
    Spbe__V1__MemberRevoke mr = SPBE__V1__MEMBER_REVOKE__INIT;
    mr.name = other.member;
    mr.reason = "fuzz";
    c = (Spbe__V1__Command)SPBE__V1__COMMAND__INIT;
    c.request_id = 51;
    c.body_case = SPBE__V1__COMMAND__BODY_MEMBER_REVOKE;
    c.member_revoke = &mr;
    seed_message(&sd, 1, &c, NULL, 0);
    seed_write(dir, "admin-members", &sd);
}
