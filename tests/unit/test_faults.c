/*
 * test_faults.c - a broker and two clients in this process go through a scenario
 * (publish, subscribe, a durable consumer with ack, nak and term, request/reply, the
 * HTTP endpoint; the admin's commands on members, topics, messages, consumers, sessions
 * and dead letters; then, the broker stopped, a rotation of its key) while one fallible
 * call fails: the Nth allocation (malloc, calloc, realloc, strdup) or LMDB operation
 * (begin, commit, get, put, del, cursor), counted across the broker and the client
 * library. For each N the broker and the clients must not crash or hang, and afterwards
 * the data directory opens, passes its consistency check, and a broker starts on it.
 *
 * ZeroMQ calls that can fail for want of resources fail too (socket, options, bind,
 * connect, poll, the first frame of a send or a receive: a multipart message is whole
 * or absent in ZeroMQ, so its later frames do not fail here).
 *
 * The allocator, LMDB and ZeroMQ are wrapped at link time (-Wl,--wrap). SPBE_FAULT_STEP sets
 * which N are tried (every STEP-th of the calls the scenario makes; default: about 120
 * runs); tests/coverage/run uses 1. SPBE_FAULT_ONLY=N runs only N.
 */
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include <cmocka.h>

#include "broker.h"
#include "harness.h"
#include "config.h"
#include "identity.h"
#include "log.h"
#include "spbe/spbe.h"
#include "store.h"
#include "wire.h"

/* ------------------------------------------------------------ the faults */

/* The countdown is the only state the wrappers have: they are called from every thread
 * with no context to pass. <= 0: no fault armed. */
static atomic_long countdown;
static atomic_long calls;
static long armed_at; /* the N of the run under way, for the watchdog's message */

static int
fault(void)
{
    atomic_fetch_add(&calls, 1);
    return atomic_fetch_sub(&countdown, 1) == 1;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
int __real_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn);
int __real_mdb_txn_commit(MDB_txn *txn);
int __real_mdb_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int __real_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned int flags);
int __real_mdb_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int __real_mdb_cursor_open(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **cursor);
int __real_mdb_cursor_get(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
int __wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn);
int __wrap_mdb_txn_commit(MDB_txn *txn);
int __wrap_mdb_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int __wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned int flags);
int __wrap_mdb_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data);
int __wrap_mdb_cursor_open(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **cursor);
int __wrap_mdb_cursor_get(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op);

void *
__wrap_malloc(size_t n)
{
    return fault() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t size)
{
    return fault() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t n)
{
    return fault() ? NULL : __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
    return fault() ? NULL : __real_strdup(s);
}

int
__wrap_mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn)
{
    return fault() ? ENOMEM : __real_mdb_txn_begin(env, parent, flags, txn);
}

int
__wrap_mdb_txn_commit(MDB_txn *txn)
{
    if (fault()) { /* as a commit that failed to write: the transaction is gone */
        mdb_txn_abort(txn);
        return EIO;
    }
    return __real_mdb_txn_commit(txn);
}

int
__wrap_mdb_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data)
{
    return fault() ? EIO : __real_mdb_get(txn, dbi, key, data);
}

int
__wrap_mdb_put(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned int flags)
{
    return fault() ? EIO : __real_mdb_put(txn, dbi, key, data, flags);
}

int
__wrap_mdb_del(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data)
{
    return fault() ? EIO : __real_mdb_del(txn, dbi, key, data);
}

int
__wrap_mdb_cursor_open(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **cursor)
{
    return fault() ? ENOMEM : __real_mdb_cursor_open(txn, dbi, cursor);
}

int
__wrap_mdb_cursor_get(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op)
{
    return fault() ? EIO : __real_mdb_cursor_get(cursor, key, data, op);
}

void *__real_zmq_socket(void *ctx, int type);
int __real_zmq_setsockopt(void *s, int option, const void *value, size_t len);
int __real_zmq_bind(void *s, const char *endpoint);
int __real_zmq_connect(void *s, const char *endpoint);
int __real_zmq_poll(zmq_pollitem_t *items, int n, long timeout);
int __real_zmq_send(void *s, const void *buf, size_t len, int flags);
int __real_zmq_msg_recv(zmq_msg_t *msg, void *s, int flags);
void *__wrap_zmq_socket(void *ctx, int type);
int __wrap_zmq_setsockopt(void *s, int option, const void *value, size_t len);
int __wrap_zmq_bind(void *s, const char *endpoint);
int __wrap_zmq_connect(void *s, const char *endpoint);
int __wrap_zmq_poll(zmq_pollitem_t *items, int n, long timeout);
int __wrap_zmq_send(void *s, const void *buf, size_t len, int flags);
int __wrap_zmq_msg_recv(zmq_msg_t *msg, void *s, int flags);

/* inside a multipart message on this thread: its later frames never fail */
static _Thread_local int sending_more, receiving_more;

void *
__wrap_zmq_socket(void *ctx, int type)
{
    if (fault()) {
        errno = EMFILE;
        return NULL;
    }
    return __real_zmq_socket(ctx, type);
}

int
__wrap_zmq_setsockopt(void *s, int option, const void *value, size_t len)
{
    return fault() ? (errno = EINVAL, -1) : __real_zmq_setsockopt(s, option, value, len);
}

int
__wrap_zmq_bind(void *s, const char *endpoint)
{
    return fault() ? (errno = EADDRINUSE, -1) : __real_zmq_bind(s, endpoint);
}

int
__wrap_zmq_connect(void *s, const char *endpoint)
{
    return fault() ? (errno = ENOMEM, -1) : __real_zmq_connect(s, endpoint);
}

int
__wrap_zmq_poll(zmq_pollitem_t *items, int n, long timeout)
{
    return fault() ? (errno = EINTR, -1) : __real_zmq_poll(items, n, timeout);
}

int
__wrap_zmq_send(void *s, const void *buf, size_t len, int flags)
{
    if (!sending_more && fault()) /* would block, or a signal came */
        return errno = flags & ZMQ_DONTWAIT ? EAGAIN : EINTR, -1;
    int rc = __real_zmq_send(s, buf, len, flags);
    sending_more = rc >= 0 && (flags & ZMQ_SNDMORE);
    return rc;
}

int
__wrap_zmq_msg_recv(zmq_msg_t *msg, void *s, int flags)
{
    if (!receiving_more && fault())
        return errno = flags & ZMQ_DONTWAIT ? EAGAIN : EINTR, -1;
    int rc = __real_zmq_msg_recv(msg, s, flags);
    receiving_more = rc >= 0 && zmq_msg_more(msg);
    return rc;
}

/* ------------------------------------------------------------ the scenario */

typedef struct world {
    char template_dir[128]; /* a data directory with its keys and the member */
    char member_key[160];
    int port, http_port;
} world;

static void
config_for(const world *w, const char *dir, broker_config *c)
{
    config_defaults(c);
    snprintf(c->data_dir, sizeof c->data_dir, "%s", dir);
    snprintf(c->endpoint, sizeof c->endpoint, "tcp://127.0.0.1:%d", w->port);
    snprintf(c->http, sizeof c->http, "127.0.0.1:%d", w->http_port);
    c->heartbeat_ms = 200;
    c->tree_head_ms = 100;
    c->consumer_ack_wait_ms = 100;
    char err[256];
    config_set(c, "retain", "f.unit.>:max-messages=4", err, sizeof err); /* the writer retains */
}

typedef struct running {
    broker *b;
    volatile sig_atomic_t stop;
    pthread_t thread;
} running;

static void *
broker_thread(void *arg)
{
    running *r = arg;
    broker_run(r->b, &r->stop);
    return NULL;
}

typedef struct server {
    const world *w;
    volatile int stop;
    pthread_t thread;
} server;

static void
echo(spbe_client *c, const spbe_service_request *r, void *arg)
{
    (void)arg;
    spbe_respond(c, r->service, r->ref, r->id, r->payload, r->payload_len, NULL, NULL);
}

static spbe_client *
connect_member(const world *w)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", w->port);
    spbe_options o = {.endpoint = endpoint, .timeout_ms = 400, .client_name = "faults"};
    spbe_client *c = NULL;
    if (spbe_connect(w->member_key, &o, &c) != SPBE_OK)
        spbe_close(&c);
    return c;
}

/* The admin's commands, each through spbe_call; what they answer does not matter here. */
static void
admin_round(const world *w, const char *dir)
{
    char endpoint[64], key[200];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", w->port);
    snprintf(key, sizeof key, "%s/admin.key", dir);
    spbe_options o = {.endpoint = endpoint, .timeout_ms = 400, .client_name = "faults-admin"};
    spbe_client *a = NULL;
    if (spbe_connect(key, &o, &a) != SPBE_OK) {
        spbe_close(&a);
        return;
    }
    identity other;
    identity_generate("kemenkeu/tunjangan", &other);
    char *pats[] = {"f.tunjangan.>"};
    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    rights.publish = pats;
    rights.n_publish = 1;
    Spbe__V1__MemberAdd add = SPBE__V1__MEMBER_ADD__INIT;
    add.name = other.member;
    add.public_key.data = other.public_key;
    add.public_key.len = WIRE_KEY_BYTES;
    add.rights = &rights;
    Spbe__V1__MemberList ml = SPBE__V1__MEMBER_LIST__INIT;
    Spbe__V1__MemberGet mg = SPBE__V1__MEMBER_GET__INIT;
    mg.name = "bkn/siasn";
    Spbe__V1__TopicList tl = SPBE__V1__TOPIC_LIST__INIT;
    Spbe__V1__TopicGet tg = SPBE__V1__TOPIC_GET__INIT;
    tg.topic = "f.asn.pindah";
    Spbe__V1__MessageGet get = SPBE__V1__MESSAGE_GET__INIT;
    get.topic = "f.asn.pindah";
    get.sequence = 1;
    Spbe__V1__ConsumerList cl = SPBE__V1__CONSUMER_LIST__INIT;
    Spbe__V1__ConsumerGet cg = SPBE__V1__CONSUMER_GET__INIT;
    cg.name = "fc";
    Spbe__V1__SessionList sl = SPBE__V1__SESSION_LIST__INIT;
    Spbe__V1__DlqReplay dr = SPBE__V1__DLQ_REPLAY__INIT;
    dr.consumer = "fc";
    dr.count = 2;
    Spbe__V1__DlqPurge dp = SPBE__V1__DLQ_PURGE__INIT;
    dp.consumer = "fc";
    Spbe__V1__ConsumerDelete cd = SPBE__V1__CONSUMER_DELETE__INIT;
    cd.name = "fc";
    Spbe__V1__MemberRevoke rv = SPBE__V1__MEMBER_REVOKE__INIT;
    rv.name = other.member;
    Spbe__V1__Command cmds[12];
    for (int i = 0; i < 12; i++)
        spbe__v1__command__init(&cmds[i]);
    cmds[0].body_case = SPBE__V1__COMMAND__BODY_MEMBER_ADD, cmds[0].member_add = &add;
    cmds[1].body_case = SPBE__V1__COMMAND__BODY_MEMBER_LIST, cmds[1].member_list = &ml;
    cmds[2].body_case = SPBE__V1__COMMAND__BODY_MEMBER_GET, cmds[2].member_get = &mg;
    cmds[3].body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST, cmds[3].topic_list = &tl;
    cmds[4].body_case = SPBE__V1__COMMAND__BODY_TOPIC_GET, cmds[4].topic_get = &tg;
    cmds[5].body_case = SPBE__V1__COMMAND__BODY_MESSAGE_GET, cmds[5].message_get = &get;
    cmds[6].body_case = SPBE__V1__COMMAND__BODY_CONSUMER_LIST, cmds[6].consumer_list = &cl;
    cmds[7].body_case = SPBE__V1__COMMAND__BODY_CONSUMER_GET, cmds[7].consumer_get = &cg;
    cmds[8].body_case = SPBE__V1__COMMAND__BODY_SESSION_LIST, cmds[8].session_list = &sl;
    cmds[9].body_case = SPBE__V1__COMMAND__BODY_DLQ_REPLAY, cmds[9].dlq_replay = &dr;
    cmds[10].body_case = SPBE__V1__COMMAND__BODY_DLQ_PURGE, cmds[10].dlq_purge = &dp;
    cmds[11].body_case = SPBE__V1__COMMAND__BODY_CONSUMER_DELETE, cmds[11].consumer_delete = &cd;
    for (int i = 0; i < 13; i++) {
        Spbe__V1__Command *cmd = &cmds[i < 12 ? i : 0];
        Spbe__V1__Command revoke = SPBE__V1__COMMAND__INIT;
        if (i == 12) { /* last: the member added first */
            revoke.body_case = SPBE__V1__COMMAND__BODY_MEMBER_REVOKE;
            revoke.member_revoke = &rv;
            cmd = &revoke;
        }
        uint8_t buf[512];
        size_t n = spbe__v1__command__pack(cmd, buf);
        uint8_t *reply = NULL, *body = NULL;
        size_t reply_len = 0, body_len = 0;
        spbe_call(a, buf, n, NULL, 0, &reply, &reply_len, &body, &body_len);
        free(reply);
        free(body);
    }
    spbe_close(&a);
}

static void *
server_thread(void *arg)
{
    server *s = arg;
    spbe_client *c = connect_member(s->w);
    if (!c)
        return NULL;
    spbe_serve(c, "f.echo", echo, NULL);
    while (!s->stop)
        spbe_dispatch(c, 20, NULL);
    spbe_close(&c);
    return NULL;
}

typedef struct taken {
    spbe_client *c;
    int n;
} taken;

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    taken *t = arg;
    t->n++;
    if (d->consumer) /* ack, nak and term in turn */
        spbe_ack(t->c, d->consumer, d->topic, d->sequence,
                 t->n % 3 == 0   ? SPBE_ACK
                 : t->n % 3 == 1 ? SPBE_NAK
                                 : SPBE_TERM,
                 0, t->n % 2);
}

/* The scenario; everything may fail, nothing may crash or hang. */
static void
scenario(const world *w, const char *dir)
{
    broker_config config;
    config_for(w, dir, &config);
    running r = {.stop = 0};
    char err[512];
    if (broker_new(&config, &r.b, err, sizeof err) != 0)
        return;
    pthread_create(&r.thread, NULL, broker_thread, &r);
    server s = {.w = w, .stop = 0};
    pthread_create(&s.thread, NULL, server_thread, &s);
    spbe_client *c = connect_member(w);
    if (c) {
        for (int i = 0; i < 3; i++)
            spbe_publish(c, "f.asn.pindah", "NIP 199001012015031001", 22, NULL, NULL);
        for (int i = 0; i < 20; i++)
            spbe_publish_async(c, i % 2 ? "f.asn.pindah" : "f.unit.tahap", "x", 1, NULL, NULL);
        spbe_flush(c, 500);
        taken t = {.c = c, .n = 0};
        spbe_set_delivery_handler(c, on_delivery, &t);
        uint64_t sub = 0;
        spbe_subscribe(c, "f.>", SPBE_START_FIRST, 0, &sub);
        spbe_consumer_options o = {
            .start = SPBE_START_FIRST, .ack_wait_ms = 100, .max_deliveries = 2};
        spbe_consume(c, "fc", "f.asn.>", &o, NULL);
        for (int i = 0; i < 10 && t.n < 40; i++)
            spbe_dispatch(c, 20, NULL);
        spbe_response resp;
        for (int i = 0; i < 2; i++) {
            spbe_request(c, "f.echo", "NIK 3171000000000001", 20, 400, NULL, &resp);
            spbe_response_free(&resp);
        }
        static const char *paths[] = {"/metrics", "/v1/topics", "/v1/consumers"};
        char body[4096];
        for (int i = 0; i < 3; i++)
            harness_http_get(w->http_port, paths[i], body, sizeof body);
        spbe_unsubscribe(c, sub);
        spbe_close(&c);
    }
    admin_round(w, dir);
    s.stop = 1;
    pthread_join(s.thread, NULL);
    r.stop = 1;
    pthread_join(r.thread, NULL);
    broker_destroy(&r.b);
    char said[1024];
    broker_rotate_key(&config, said, sizeof said, err, sizeof err); /* stopped: a new key */
}

static void
on_alarm(int sig)
{
    (void)sig;
    char msg[96];
    int n =
        snprintf(msg, sizeof msg, "test_faults: the run failing call %ld hung (30 s)\n", armed_at);
    if (write(2, msg, (size_t)n) < 0)
        _exit(3);
    if (getenv("SPBE_FAULT_GDB")) { /* where it hangs, for whoever looks into it */
        char cmd[128];
        snprintf(cmd, sizeof cmd, "gdb -p %ld -batch -ex 'thread apply all bt 12' >&2",
                 (long)getpid());
        if (system(cmd) != 0)
            _exit(4);
    }
    _exit(2);
}

/* One run with the Nth call failing (0: none). Returns the calls the scenario made. */
static long
run_with_fault(const world *w, long n)
{
    char dir[160], cmd[600];
    snprintf(dir, sizeof dir, "%s.run", w->template_dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", dir, w->template_dir, dir);
    assert_int_equal(system(cmd), 0);
    armed_at = n;
    alarm(30);
    atomic_store(&calls, 0);
    atomic_store(&countdown, n);
    scenario(w, dir);
    atomic_store(&countdown, 0);
    alarm(0);
    long made = atomic_load(&calls);
    /* whatever failed, the data directory is whole and a broker starts on it */
    store_options so = {.read_only = 1};
    store *st;
    char err[512];
    if (store_open(dir, &so, &st, err, sizeof err) != SPBE_OK)
        fail_msg("fault at call %ld: the store does not open: %s", n, err);
    if (store_check(st, err, sizeof err) != SPBE_OK)
        fail_msg("fault at call %ld: the store is inconsistent: %s", n, err);
    store_close(&st);
    broker_config config;
    config_for(w, dir, &config);
    broker *b;
    if (broker_new(&config, &b, err, sizeof err) != 0)
        fail_msg("fault at call %ld: no broker starts afterwards: %s", n, err);
    broker_destroy(&b);
    return made;
}

static void
test_one_failing_call_at_a_time(void **state)
{
    world *w = *state;
    const char *only = getenv("SPBE_FAULT_ONLY"); /* one N, to look into */
    if (only) {
        run_with_fault(w, atol(only));
        return;
    }
    long total = run_with_fault(w, 0); /* the calls of a run without faults */
    const char *step_env = getenv("SPBE_FAULT_STEP");
    long step = step_env ? atol(step_env) : total / 120 + 1;
    if (step < 1)
        step = 1;
    long runs = 0;
    for (long n = 1; n <= total; n += step, runs++)
        run_with_fault(w, n);
    printf("# %ld runs, one failing call each (every %ld of the %ld calls a run makes)\n", runs,
           step, total);
    assert_true(runs > 0);
}

static int
setup(void **state)
{
    world *wp = calloc(1, sizeof *wp);
    if (!wp || wire_init() != SPBE_OK)
        return -1;
    world w = {.port = 0};
    log_set_level(LOG_ERROR + 1); /* quiet: failures are expected here */
    snprintf(w.template_dir, sizeof w.template_dir, "%s/spbe-faults-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(w.template_dir))
        return -1;
    w.port = harness_free_port();
    w.http_port = harness_free_port();
    broker_config config;
    config_for(&w, w.template_dir, &config);
    broker *b;
    char err[512];
    if (broker_new(&config, &b, err, sizeof err) != 0)
        return -1;
    broker_destroy(&b);
    identity me, broker_id;
    identity_generate("bkn/siasn", &me);
    char path[200];
    snprintf(path, sizeof path, "%s/broker.pub", w.template_dir);
    if (identity_load(path, &broker_id, err, sizeof err) != SPBE_OK)
        return -1;
    memcpy(me.broker_key, broker_id.public_key, WIRE_KEY_BYTES);
    me.has_broker_key = 1;
    snprintf(me.broker, sizeof me.broker, "tcp://127.0.0.1:%d", w.port);
    snprintf(w.member_key, sizeof w.member_key, "%s.key", w.template_dir);
    if (identity_save(&me, w.member_key, 1, err, sizeof err) != SPBE_OK)
        return -1;
    char *all[] = {"f.>"};
    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    rights.publish = rights.subscribe = rights.serve = rights.call = all;
    rights.n_publish = rights.n_subscribe = rights.n_serve = rights.n_call = 1;
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = me.member;
    m.public_key.data = me.public_key;
    m.public_key.len = WIRE_KEY_BYTES;
    m.rights = &rights;
    store *st;
    if (store_open(w.template_dir, NULL, &st, err, sizeof err) != SPBE_OK ||
        store_member_put(st, &m) != SPBE_OK)
        return -1;
    store_close(&st);
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    *wp = w;
    *state = wp;
    return 0;
}

static int
teardown(void **state)
{
    world *w = *state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.run' '%s'", w->template_dir, w->template_dir,
             w->member_key);
    int rc = system(cmd);
    free(w);
    return rc == 0 ? 0 : -1;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_failing_call_at_a_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
