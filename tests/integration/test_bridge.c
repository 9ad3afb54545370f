/* test_bridge.c - spbe-bridge, the HTTP/JSON bridge, as a process against the real broker:
 * JSON publishes become typed, signed, stored messages with the exact values; bad JSON,
 * unknown fields, wrong types and invalid NIPs are refused with a JSON error naming the
 * problem and nothing stored; tokens, rights, duplicates and body limits map to their
 * statuses; a webhook that fails its first attempts (500, a closed connection) still gets
 * every message of its consumer, the decoded payload and the signed bytes that verify, and
 * the consumer ends with nothing pending. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <sodium.h>

#include "harness.h"
#include "identity.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "wire.h"

#define ASN "spbe.ikn.v1.SkenarioAsn"
#define KELUARGA "spbe.ikn.v1.SkenarioKeluarga"
#define TOKEN "uji-token-jembatan-0123456789abcdef"
#define HOOK_FAILS 4  /* the webhook's first answers: 500, closed, 500, closed */
#define HOOK_TYPED 8  /* typed messages published for the webhook */
#define HOOK_OPAQUE 2 /* and opaque ones */
#define HOOK_TOTAL (HOOK_TYPED + HOOK_OPAQUE)

/* What the webhook received. */
typedef struct hook_state {
    pthread_mutex_t mu;
    int attempts; /* every POST */
    int failed;   /* those answered 500 or by closing */
    int n;        /* accepted */
    json_t *bodies[256];
    char topic_header[256][256];
    uint64_t sequence_header[256];
} hook_state;

typedef struct fixture {
    test_broker broker;
    char bridge_key[400], reader_key[400], tokens[400], log[400];
    pid_t bridge;
    int port;
    struct MHD_Daemon *hook;
    int hook_port;
    hook_state hs;
    identity bridge_id;
} fixture;

/* ---- the webhook: libmicrohttpd in a thread ---- */

typedef struct upload {
    char *data;
    size_t len;
} upload;

static enum MHD_Result
on_hook(void *cls, struct MHD_Connection *c, const char *url, const char *method,
        const char *version, const char *data, size_t *data_size, void **con_cls)
{
    (void)url, (void)method, (void)version;
    hook_state *hs = cls;
    upload *u = *con_cls;
    if (!u) {
        *con_cls = calloc(1, sizeof(upload));
        return MHD_YES;
    }
    if (*data_size) {
        u->data = realloc(u->data, u->len + *data_size + 1);
        memcpy(u->data + u->len, data, *data_size);
        u->len += *data_size;
        u->data[u->len] = '\0';
        *data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&hs->mu);
    int attempt = hs->attempts++;
    int fail = attempt < HOOK_FAILS;
    if (fail)
        hs->failed++;
    json_t *body = fail ? NULL : json_loadb(u->data ? u->data : "", u->len, 0, NULL);
    if (body && hs->n < 256) {
        const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Spbe-Topic");
        const char *s = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Spbe-Sequence");
        snprintf(hs->topic_header[hs->n], sizeof hs->topic_header[0], "%s", t ? t : "");
        hs->sequence_header[hs->n] = s ? strtoull(s, NULL, 10) : 0;
        hs->bodies[hs->n++] = body;
    }
    pthread_mutex_unlock(&hs->mu);
    if (fail && attempt % 2 == 1)
        return MHD_NO; /* the connection closes without an answer */
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, fail ? 500 : body ? 204 : 400, r);
    MHD_destroy_response(r);
    return ret;
}

static void
on_hook_done(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    upload *u = *con_cls;
    if (u) {
        free(u->data);
        free(u);
    }
    *con_cls = NULL;
}

/* ---- an HTTP client ---- */

typedef struct answer {
    long status;
    char body[16384];
    size_t len;
    json_t *json;
} answer;

static size_t
collect(char *p, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    size_t k = size * n;
    if (a->len + k < sizeof a->body) {
        memcpy(a->body + a->len, p, k);
        a->len += k;
        a->body[a->len] = '\0';
    }
    return k;
}

/* POSTs body (len, or strlen if (size_t)-1) to path with headers (NULL-terminated, may be
 * NULL); the token unless token is NULL. */
static void
http(fixture *f, const char *method, const char *path, const char *token, const char *type,
     const char *body, size_t len, const char *const *headers, answer *a)
{
    memset(a, 0, sizeof *a);
    CURL *e = curl_easy_init();
    char url[512], auth[256], ctype[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->port, path);
    struct curl_slist *hd = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        hd = curl_slist_append(hd, auth);
    }
    if (type) {
        snprintf(ctype, sizeof ctype, "Content-Type: %s", type);
        hd = curl_slist_append(hd, ctype);
    }
    for (size_t i = 0; headers && headers[i]; i++)
        hd = curl_slist_append(hd, headers[i]);
    hd = curl_slist_append(hd, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(len == (size_t)-1 ? strlen(body) : len));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hd);
    a->json = json_loadb(a->body, a->len, 0, NULL);
}

static void
answer_free(answer *a)
{
    json_decref(a->json);
    a->json = NULL;
}

static void
publish_json(fixture *f, const char *topic, const char *json, const char *const *headers, answer *a)
{
    char path[300];
    snprintf(path, sizeof path, "/v1/publish/%s", topic);
    http(f, "POST", path, TOKEN, "application/json", json, (size_t)-1, headers, a);
}

/* The error body's code, and its message containing want. */
static void
assert_error(answer *a, long status, const char *code, const char *want, const char *field)
{
    if (a->status != status)
        fail_msg("status %ld, not %ld: %s", a->status, status, a->body);
    json_t *e = json_object_get(a->json, "error");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    assert_int_equal(json_integer_value(json_object_get(e, "status")), status);
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(msg);
    if (want && !strstr(msg, want))
        fail_msg("message '%s' lacks '%s'", msg, want);
    if (field)
        assert_string_equal(json_string_value(json_object_get(e, "field")), field);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Starts spbe-bridge with args; waits until it answers. */
static pid_t
bridge_start(fixture *f, const char *args)
{
    pid_t pid = harness_spawn(f->log, "exec %s --key %s --tokens %s --listen 127.0.0.1:%d %s",
                              SPBE_BRIDGE_BIN, f->bridge_key, f->tokens, f->port, args);
    if (pid < 0)
        return -1;
    for (int i = 0; i < 2000; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "spbe-bridge exited at start (status %d), see %s\n", status, f->log);
            return -1;
        }
        answer a;
        http(f, "GET", "/v1/health", TOKEN, NULL, NULL, 0, NULL, &a);
        answer_free(&a);
        if (a.status == 200)
            return pid;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->hs.mu, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (harness_broker_start(&f->broker, "--schema 'ikn.relokasi.asn.*=" ASN "' "
                                         "--schema 'ikn.relokasi.keluarga=" KELUARGA "' "
                                         "--schema 'ikn.relokasi.hook.asn=" ASN "'") != 0 ||
        harness_member(&f->broker, "portal/jembatan", "ikn.relokasi.>", "ikn.relokasi.hook.>", NULL,
                       f->bridge_key) != 0 ||
        harness_member(&f->broker, "bkn/pembaca", NULL, "ikn.>", NULL, f->reader_key) != 0)
        return -1;
    char err[256];
    if (identity_load(f->bridge_key, &f->bridge_id, err, sizeof err) != SPBE_OK)
        return -1;
    snprintf(f->tokens, sizeof f->tokens, "%s/tokens", f->broker.dir);
    snprintf(f->log, sizeof f->log, "%s/bridge.log", f->broker.dir);
    FILE *t = fopen(f->tokens, "w");
    fprintf(t, "# the portal's token\n%s\n", TOKEN);
    fclose(t);
    chmod(f->tokens, 0600);

    f->hook_port = harness_free_port();
    f->hook = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                               (uint16_t)f->hook_port, NULL, NULL, on_hook, &f->hs,
                               MHD_OPTION_NOTIFY_COMPLETED, on_hook_done, NULL, MHD_OPTION_END);
    do
        f->port = harness_free_port();
    while (f->port == f->hook_port);
    char args[2048];
    snprintf(args, sizeof args,
             "--schema 'ikn.relokasi.asn.*=" ASN "' --schema 'ikn.relokasi.keluarga=" KELUARGA
             "' --schema 'ikn.relokasi.hook.asn=" ASN "' --max-body 65536 "
             "--consumer webhook-uji --pattern 'ikn.relokasi.hook.>' "
             "--webhook http://127.0.0.1:%d/terima --retry-min-ms 20 --retry-max-ms 200 "
             "--webhook-concurrency 3",
             f->hook_port);
    if (!f->hook || (f->bridge = bridge_start(f, args)) <= 0)
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;
    int status = -1;
    if (f->bridge > 0) {
        kill(f->bridge, SIGTERM);
        waitpid(f->bridge, &status, 0);
    }
    if (f->hook)
        MHD_stop_daemon(f->hook);
    for (int i = 0; i < f->hs.n; i++)
        json_decref(f->hs.bodies[i]);
    harness_broker_stop(&f->broker);
    curl_global_cleanup();
    free(f);
    /* SIGTERM stops it cleanly */
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

#define VALID_ASN                                                                                  \
    "{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\",\"nama\":\"Rina "                \
    "Kartikasari\",\"instansi\":\"kemenkeu\",\"kode_unit\":\"djp-01\",\"prioritas\":"              \
    "\"PRIORITAS_1\",\"fase\":2,\"jabatan\":\"Analis Kebijakan Ahli Muda\",\"tanggungan\":\"3\"}"

/* Reads message sequence of topic as the reader member: its delivery, verified. */
typedef struct got {
    int done;
    char schema[128];
    uint8_t payload[4096];
    size_t len;
    int verified;
    char sender[80];
} got;

static void
on_read(const spbe_delivery *d, void *arg)
{
    got *g = arg;
    if (g->done)
        return;
    snprintf(g->schema, sizeof g->schema, "%s", d->schema ? d->schema : "");
    snprintf(g->sender, sizeof g->sender, "%s", d->sender);
    g->len = d->payload_len < sizeof g->payload ? d->payload_len : 0;
    memcpy(g->payload, d->payload, g->len);
    g->done = 1;
}

static void
read_message(fixture *f, const char *topic, uint64_t sequence, got *g)
{
    memset(g, 0, sizeof *g);
    spbe_client *c = harness_connect(&f->broker, f->reader_key, 0);
    assert_non_null(c);
    spbe_set_delivery_handler(c, on_read, g);
    assert_int_equal(spbe_subscribe(c, topic, SPBE_START_SEQUENCE, sequence, NULL), SPBE_OK);
    for (int i = 0; i < 500 && !g->done; i++)
        spbe_dispatch(c, 20, NULL);
    assert_true(g->done);
    spbe_close(&c);
}

static void
test_tokens(void **state)
{
    fixture *f = *state;
    answer a;
    http(f, "POST", "/v1/publish/ikn.relokasi.catatan", NULL, "application/octet-stream", "x", 1,
         NULL, &a);
    assert_error(&a, 401, "UNAUTHORIZED", "Bearer", NULL);
    answer_free(&a);
    http(f, "POST", "/v1/publish/ikn.relokasi.catatan", "uji-token-jembatan-0123456789abcdeX",
         "application/octet-stream", "x", 1, NULL, &a);
    assert_error(&a, 401, "UNAUTHORIZED", NULL, NULL);
    answer_free(&a);
    const char *basic[] = {"Authorization: Basic dWppOnVqaQ==", NULL};
    http(f, "GET", "/v1/health", NULL, NULL, NULL, 0, basic, &a);
    assert_error(&a, 401, "UNAUTHORIZED", NULL, NULL);
    answer_free(&a);
    http(f, "GET", "/v1/nowhere", NULL, NULL, NULL, 0, NULL, &a); /* not even a 404 */
    assert_error(&a, 401, "UNAUTHORIZED", NULL, NULL);
    answer_free(&a);
    assert_int_equal(harness_stored(&f->broker, "ikn.relokasi.catatan"), 0);

    /* a token file others may read, or none: the bridge does not start */
    char out[512], err[2048];
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "chmod 640 %s && %s --key %s --tokens %s --listen 127.0.0.1:%d; "
                                 "rc=$?; chmod 600 %s; exit $rc",
                                 f->tokens, SPBE_BRIDGE_BIN, f->bridge_key, f->tokens,
                                 harness_free_port(), f->tokens),
                     1);
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s --key %s", SPBE_BRIDGE_BIN,
                                 f->bridge_key),
                     2);
    assert_non_null(strstr(err, "--tokens"));
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s --help", SPBE_BRIDGE_BIN),
                     0);
    assert_non_null(strstr(out, "POST /v1/publish/<topic>"));
}

static void
test_publish_json(void **state)
{
    fixture *f = *state;
    const char *topic = "ikn.relokasi.asn.kemenkeu";
    answer a;
    publish_json(f, topic, VALID_ASN, NULL, &a);
    if (a.status != 200)
        fail_msg("status %ld: %s", a.status, a.body);
    assert_string_equal(json_string_value(json_object_get(a.json, "topic")), topic);
    uint64_t seq = (uint64_t)json_integer_value(json_object_get(a.json, "sequence"));
    assert_int_equal(seq, 1);
    assert_int_equal(strlen(json_string_value(json_object_get(a.json, "message_id"))), 32);
    assert_true(json_is_integer(json_object_get(a.json, "leaf_index")));
    assert_non_null(json_string_value(json_object_get(a.json, "accepted_ns")));
    assert_true(json_is_true(json_object_get(a.json, "signed_by_broker")));
    assert_string_equal(json_string_value(json_object_get(a.json, "schema")), ASN);
    answer_free(&a);
    /* durable: stored when the receipt came; the exact values, typed */
    assert_int_equal(harness_stored(&f->broker, topic), 1);
    got g;
    read_message(f, topic, 1, &g);
    assert_string_equal(g.schema, ASN);
    assert_string_equal(g.sender, "portal/jembatan");
    Spbe__Ikn__V1__SkenarioAsn *m = spbe__ikn__v1__skenario_asn__unpack(NULL, g.len, g.payload);
    assert_non_null(m);
    assert_string_equal(m->nip, "199003152015031002");
    assert_string_equal(m->nik, "6472011503900002");
    assert_string_equal(m->nama, "Rina Kartikasari");
    assert_string_equal(m->kode_unit, "djp-01");
    assert_int_equal(m->prioritas, SPBE__IKN__V1__PRIORITAS__PRIORITAS_1);
    assert_int_equal(m->fase, SPBE__IKN__V1__FASE__FASE_2);
    assert_string_equal(m->jabatan, "Analis Kebijakan Ahli Muda");
    assert_null(m->golongan);
    assert_true(m->has_tanggungan);
    assert_int_equal(m->tanggungan, 3);
    spbe__ikn__v1__skenario_asn__free_unpacked(m, NULL);

    /* nested and repeated, lowerCamelCase names */
    publish_json(f, "ikn.relokasi.keluarga",
                 "{\"nip\":\"199003152015031002\",\"ikutPindah\":true,\"anggota\":["
                 "{\"nik\":\"6472014101920003\",\"nama\":\"Dewi\",\"hubungan\":\"PASANGAN\","
                 "\"usia\":33},{\"nik\":\"6472010107150001\",\"nama\":\"Bima\",\"hubungan\":2}]}",
                 NULL, &a);
    if (a.status != 200)
        fail_msg("status %ld: %s", a.status, a.body);
    answer_free(&a);
    read_message(f, "ikn.relokasi.keluarga", 1, &g);
    Spbe__Ikn__V1__SkenarioKeluarga *k =
        spbe__ikn__v1__skenario_keluarga__unpack(NULL, g.len, g.payload);
    assert_non_null(k);
    assert_true(k->ikut_pindah);
    assert_int_equal(k->n_anggota, 2);
    assert_string_equal(k->anggota[0]->nama, "Dewi");
    assert_int_equal(k->anggota[0]->hubungan, SPBE__IKN__V1__HUBUNGAN__PASANGAN);
    assert_true(k->anggota[0]->has_usia);
    assert_int_equal(k->anggota[0]->usia, 33);
    assert_string_equal(k->anggota[1]->nik, "6472010107150001");
    assert_int_equal(k->anggota[1]->hubungan, SPBE__IKN__V1__HUBUNGAN__ANAK);
    assert_false(k->anggota[1]->has_usia);
    spbe__ikn__v1__skenario_keluarga__free_unpacked(k, NULL);

    /* an opaque topic takes the bytes as they are */
    const uint8_t bytes[] = {0, 1, 2, 0xff, 'x'};
    http(f, "POST", "/v1/publish/ikn.relokasi.catatan", TOKEN, "application/octet-stream",
         (const char *)bytes, sizeof bytes, NULL, &a);
    assert_int_equal(a.status, 200);
    assert_true(json_is_null(json_object_get(a.json, "schema")));
    answer_free(&a);
    read_message(f, "ikn.relokasi.catatan", 1, &g);
    assert_string_equal(g.schema, "");
    assert_int_equal(g.len, sizeof bytes);
    assert_memory_equal(g.payload, bytes, sizeof bytes);

    /* the type by header on a topic the bridge has no binding for */
    const char *typed[] = {"Spbe-Schema: spbe.ikn.v1.TunjanganPionir", NULL};
    publish_json(f, "ikn.relokasi.tunjangan",
                 "{\"nip\":\"199003152015031002\",\"jumlah_rupiah\":\"18446744073709551615\","
                 "\"mulai\":202701,\"lama_bulan\":12}",
                 typed, &a);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    read_message(f, "ikn.relokasi.tunjangan", 1, &g);
    assert_string_equal(g.schema, "spbe.ikn.v1.TunjanganPionir");
    Spbe__Ikn__V1__TunjanganPionir *tp =
        spbe__ikn__v1__tunjangan_pionir__unpack(NULL, g.len, g.payload);
    assert_non_null(tp);
    assert_true(tp->jumlah_rupiah == UINT64_MAX);
    spbe__ikn__v1__tunjangan_pionir__free_unpacked(tp, NULL);
}

static void
test_publish_refused(void **state)
{
    fixture *f = *state;
    const char *topic = "ikn.relokasi.asn.bkn";
    answer a;
    static const struct {
        const char *body;
        const char *code, *want, *field;
    } cases[] = {
        {"{\"nip\":\"199003152015031002\",", "BAD_REQUEST", "not valid JSON", NULL},
        {"{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\",\"nama\":\"R\","
         "\"instansi\":\"bkn\",\"kode_unit\":\"u\",\"prioritas\":1,\"fase\":1,\"gaji\":5}",
         "SCHEMA_MISMATCH", "unknown field 'gaji'", "gaji"},
        {"{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\",\"nama\":\"R\","
         "\"instansi\":\"bkn\",\"kode_unit\":\"u\",\"prioritas\":1,\"fase\":1,\"tanggungan\":"
         "\"dua\"}",
         "SCHEMA_MISMATCH", "field 'tanggungan' must be an integer", "tanggungan"},
        {"{\"nip\":199003152015031002,\"nik\":\"6472011503900002\",\"nama\":\"R\","
         "\"instansi\":\"bkn\",\"kode_unit\":\"u\",\"prioritas\":1,\"fase\":1}",
         "SCHEMA_MISMATCH", "field 'nip' must be a string, not a number", "nip"},
        {"{\"nip\":\"19900315201503100\",\"nik\":\"6472011503900002\",\"nama\":\"R\","
         "\"instansi\":\"bkn\",\"kode_unit\":\"u\",\"prioritas\":1,\"fase\":1}",
         "SCHEMA_MISMATCH", "field 'nip' must be 18 digits", "nip"},
        {"{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\",\"nama\":\"R\","
         "\"instansi\":\"bkn\",\"kode_unit\":\"u\",\"prioritas\":\"PRIORITAS_7\",\"fase\":1}",
         "SCHEMA_MISMATCH", "not a value of spbe.ikn.v1.Prioritas", "prioritas"},
        {"{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\",\"instansi\":\"bkn\","
         "\"kode_unit\":\"u\",\"prioritas\":1,\"fase\":1}",
         "SCHEMA_MISMATCH", "required field 'nama' of " ASN " is missing", "nama"},
        {"[]", "SCHEMA_MISMATCH", "must be a JSON object", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        publish_json(f, topic, cases[i].body, NULL, &a);
        assert_error(&a, 400, cases[i].code, cases[i].want, cases[i].field);
        answer_free(&a);
    }
    /* nested: the path names the member */
    publish_json(f, "ikn.relokasi.keluarga",
                 "{\"nip\":\"199003152015031002\",\"ikut_pindah\":true,\"anggota\":["
                 "{\"nik\":\"6472014101920003\",\"nama\":\"Dewi\",\"hubungan\":\"PASANGAN\"},"
                 "{\"nik\":\"647201010715\",\"nama\":\"Bima\",\"hubungan\":\"ANAK\"}]}",
                 NULL, &a);
    assert_error(&a, 400, "SCHEMA_MISMATCH", "field 'anggota[1].nik' must be 16 digits",
                 "anggota[1].nik");
    answer_free(&a);
    /* a header naming another type than the binding */
    const char *other[] = {"Spbe-Schema: spbe.ikn.v1.TunjanganPionir", NULL};
    publish_json(f, topic, VALID_ASN, other, &a);
    assert_error(&a, 400, "SCHEMA_MISMATCH",
                 "payloads on "
                 "ikn.relokasi.asn.bkn are " ASN,
                 NULL);
    answer_free(&a);
    /* protobuf bytes that are not the type */
    http(f, "POST", "/v1/publish/ikn.relokasi.asn.bkn", TOKEN, "application/x-protobuf", "\x08\x01",
         2, NULL, &a);
    assert_error(&a, 400, "SCHEMA_MISMATCH", NULL, NULL);
    answer_free(&a);
    assert_int_equal(harness_stored(&f->broker, topic), 0);
}

static void
test_refusals_mapped(void **state)
{
    fixture *f = *state;
    answer a;
    /* no right to publish there */
    http(f, "POST", "/v1/publish/ikn.anggaran.pagu", TOKEN, "application/octet-stream", "x", 1,
         NULL, &a);
    assert_error(&a, 403, "FORBIDDEN", NULL, NULL);
    answer_free(&a);
    http(f, "POST", "/v1/publish/Bukan..Topik", TOKEN, "application/octet-stream", "x", 1, NULL,
         &a);
    assert_error(&a, 400, "INVALID_TOPIC", NULL, NULL);
    answer_free(&a);
    /* a repeat with the same message id: 409 with the original's sequence */
    const char *id[] = {"Spbe-Message-Id: 0123456789abcdef0123456789abcdef", NULL};
    http(f, "POST", "/v1/publish/ikn.relokasi.dup", TOKEN, "application/octet-stream", "satu", 4,
         id, &a);
    assert_int_equal(a.status, 200);
    uint64_t seq = (uint64_t)json_integer_value(json_object_get(a.json, "sequence"));
    answer_free(&a);
    http(f, "POST", "/v1/publish/ikn.relokasi.dup", TOKEN, "application/octet-stream", "dua", 3,
         NULL, &a);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    http(f, "POST", "/v1/publish/ikn.relokasi.dup", TOKEN, "application/octet-stream", "satu", 4,
         id, &a);
    assert_error(&a, 409, "DUPLICATE", NULL, NULL);
    json_t *e = json_object_get(a.json, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "sequence")), seq);
    assert_string_equal(json_string_value(json_object_get(e, "message_id")),
                        "0123456789abcdef0123456789abcdef");
    answer_free(&a);
    /* Idempotency-Key: the same key, the same message */
    const char *key[] = {"Idempotency-Key: permohonan-2027-000123", NULL};
    http(f, "POST", "/v1/publish/ikn.relokasi.dup", TOKEN, "application/octet-stream", "tiga", 4,
         key, &a);
    assert_int_equal(a.status, 200);
    answer_free(&a);
    http(f, "POST", "/v1/publish/ikn.relokasi.dup", TOKEN, "application/octet-stream", "tiga", 4,
         key, &a);
    assert_error(&a, 409, "DUPLICATE", NULL, NULL);
    answer_free(&a);
    assert_int_equal(harness_stored(&f->broker, "ikn.relokasi.dup"), 3);
    /* a body over --max-body */
    char *big = malloc(70000);
    memset(big, 'a', 70000);
    http(f, "POST", "/v1/publish/ikn.relokasi.besar", TOKEN, "application/octet-stream", big, 70000,
         NULL, &a);
    assert_error(&a, 413, "TOO_LARGE", "65536", NULL);
    answer_free(&a);
    free(big);
    assert_int_equal(harness_stored(&f->broker, "ikn.relokasi.besar"), 0);
}

/* The published message ids of the webhook test, and what the webhook got. */
static void
test_webhook(void **state)
{
    fixture *f = *state;
    char ids[HOOK_TOTAL][33];
    uint64_t seqs[HOOK_TOTAL];
    answer a;
    for (int i = 0; i < HOOK_TOTAL; i++) {
        char body[512];
        if (i < HOOK_TYPED) {
            snprintf(body, sizeof body,
                     "{\"nip\":\"1990031520150310%02d\",\"nik\":\"64720115039000%02d\","
                     "\"nama\":\"ASN %d\",\"instansi\":\"kemenkeu\",\"kode_unit\":\"djp-01\","
                     "\"prioritas\":\"PRIORITAS_2\",\"fase\":\"FASE_1\"}",
                     i, i, i);
            publish_json(f, "ikn.relokasi.hook.asn", body, NULL, &a);
        } else {
            snprintf(body, sizeof body, "catatan %d", i);
            http(f, "POST", "/v1/publish/ikn.relokasi.hook.catatan", TOKEN, "text/plain", body,
                 (size_t)-1, NULL, &a);
        }
        if (a.status != 200)
            fail_msg("publish %d: %ld %s", i, a.status, a.body);
        snprintf(ids[i], sizeof ids[i], "%s",
                 json_string_value(json_object_get(a.json, "message_id")));
        seqs[i] = (uint64_t)json_integer_value(json_object_get(a.json, "sequence"));
        answer_free(&a);
    }
    /* every message reaches the webhook, whatever its first answers were */
    int have = 0;
    for (int round = 0; round < 3000 && have < HOOK_TOTAL; round++) {
        have = 0;
        pthread_mutex_lock(&f->hs.mu);
        for (int i = 0; i < HOOK_TOTAL; i++)
            for (int k = 0; k < f->hs.n; k++)
                if (strcmp(json_string_value(json_object_get(f->hs.bodies[k], "message_id")),
                           ids[i]) == 0) {
                    have++;
                    break;
                }
        pthread_mutex_unlock(&f->hs.mu);
        if (have < HOOK_TOTAL)
            sleep_ms(10);
    }
    assert_int_equal(have, HOOK_TOTAL);
    /* the consumer settles: nothing pending, nothing left */
    json_t *info = NULL;
    for (int round = 0; round < 1000; round++) {
        char out[8192], err[1024];
        json_decref(info);
        info = NULL;
        if (harness_run(out, sizeof out, err, sizeof err,
                        "$SPBE consumer info webhook-uji --json "
                        "--key %s",
                        f->bridge_key) == 0)
            info = json_loads(out, 0, NULL);
        if (info && json_integer_value(json_object_get(info, "pending")) == 0 &&
            json_integer_value(json_object_get(info, "lag")) == 0 &&
            json_integer_value(json_object_get(info, "scheduled")) == 0)
            break;
        sleep_ms(20);
    }
    assert_non_null(info);
    assert_int_equal(json_integer_value(json_object_get(info, "pending")), 0);
    assert_int_equal(json_integer_value(json_object_get(info, "lag")), 0);
    assert_int_equal(json_integer_value(json_object_get(info, "dead_lettered")), 0);
    assert_true(json_integer_value(json_object_get(info, "acked")) >= HOOK_TOTAL);
    json_decref(info);

    pthread_mutex_lock(&f->hs.mu);
    assert_int_equal(f->hs.failed, HOOK_FAILS);
    assert_true(f->hs.attempts >= HOOK_TOTAL + HOOK_FAILS);
    /* the set received is exactly the set published (at least once each) */
    for (int k = 0; k < f->hs.n; k++) {
        json_t *b = f->hs.bodies[k];
        const char *id = json_string_value(json_object_get(b, "message_id"));
        int i = 0;
        while (i < HOOK_TOTAL && strcmp(ids[i], id) != 0)
            i++;
        if (i == HOOK_TOTAL)
            fail_msg("the webhook got a message not published here: %s", id);
        const char *topic = json_string_value(json_object_get(b, "topic"));
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(b, "sequence"));
        assert_int_equal(seq, seqs[i]);
        assert_string_equal(f->hs.topic_header[k], topic);
        assert_int_equal(f->hs.sequence_header[k], seq);
        assert_string_equal(json_string_value(json_object_get(b, "consumer")), "webhook-uji");
        assert_string_equal(json_string_value(json_object_get(b, "sender")), "portal/jembatan");
        assert_true(json_is_true(json_object_get(b, "signature_verified")));
        assert_true(json_integer_value(json_object_get(b, "delivery_count")) >= 1);
        assert_non_null(json_string_value(json_object_get(b, "accepted_ns")));

        /* the payload, decoded and as bytes */
        size_t max = 4096, plen, slen;
        uint8_t *payload = malloc(max), *signed_bytes = malloc(max);
        const char *b64 = json_string_value(json_object_get(b, "payload_base64"));
        assert_int_equal(sodium_base642bin(payload, max, b64, strlen(b64), NULL, &plen, NULL,
                                           sodium_base64_VARIANT_ORIGINAL),
                         0);
        json_t *p = json_object_get(b, "payload");
        if (i < HOOK_TYPED) {
            char nip[19];
            snprintf(nip, sizeof nip, "1990031520150310%02d", i);
            assert_string_equal(json_string_value(json_object_get(b, "schema")), ASN);
            assert_string_equal(json_string_value(json_object_get(p, "nip")), nip);
            assert_string_equal(json_string_value(json_object_get(p, "prioritas")), "PRIORITAS_2");
            assert_string_equal(json_string_value(json_object_get(p, "fase")), "FASE_1");
            Spbe__Ikn__V1__SkenarioAsn *m =
                spbe__ikn__v1__skenario_asn__unpack(NULL, plen, payload);
            assert_non_null(m);
            assert_string_equal(m->nip, nip);
            spbe__ikn__v1__skenario_asn__free_unpacked(m, NULL);
        } else {
            char want[32];
            snprintf(want, sizeof want, "catatan %d", i);
            assert_true(json_is_null(p));
            assert_int_equal(plen, strlen(want));
            assert_memory_equal(payload, want, plen);
        }
        /* the signed bytes verify end to end with the sender's key and carry that payload */
        b64 = json_string_value(json_object_get(b, "signed_message_base64"));
        assert_int_equal(sodium_base642bin(signed_bytes, max, b64, strlen(b64), NULL, &slen, NULL,
                                           sodium_base64_VARIANT_ORIGINAL),
                         0);
        Spbe__V1__SignedMessage *sm = NULL;
        Spbe__V1__Message *msg = NULL;
        assert_int_equal(wire_envelope_decode(signed_bytes, slen, &sm, &msg, NULL), SPBE_OK);
        assert_int_equal(wire_envelope_verify(sm, f->bridge_id.public_key), SPBE_OK);
        assert_string_equal(msg->topic, topic);
        assert_int_equal(msg->payload.len, plen);
        assert_memory_equal(msg->payload.data, payload, plen);
        char hex[33];
        wire_hex_encode(msg->id.data, 16, hex);
        assert_string_equal(hex, id);
        /* one flipped bit and it does not */
        sm->signature.data[0] ^= 1;
        assert_int_not_equal(wire_envelope_verify(sm, f->bridge_id.public_key), SPBE_OK);
        wire_envelope_free(&sm, &msg);
        free(payload);
        free(signed_bytes);
    }
    pthread_mutex_unlock(&f->hs.mu);
}

/* The broker restarts under the bridge: its sessions come back by themselves, publishing
 * and the webhook go on. */
static void
test_broker_restart(void **state)
{
    fixture *f = *state;
    assert_true(WIFEXITED(harness_broker_signal(&f->broker, SIGTERM)));
    assert_int_equal(harness_broker_restart(&f->broker), 0);
    answer a;
    int status = 0;
    for (int i = 0; i < 100 && status != 200; i++) { /* 503 until the session is back */
        publish_json(f, "ikn.relokasi.hook.asn",
                     "{\"nip\":\"199003152015031099\",\"nik\":\"6472011503900099\","
                     "\"nama\":\"Sesudah\",\"instansi\":\"bkn\",\"kode_unit\":\"u\","
                     "\"prioritas\":1,\"fase\":1}",
                     (const char *[]){"Idempotency-Key: sesudah-restart", NULL}, &a);
        status = (int)a.status;
        if (status != 200 && status != 503)
            fail_msg("status %d: %s", status, a.body);
        answer_free(&a);
        if (status != 200)
            sleep_ms(100);
    }
    assert_int_equal(status, 200);
    int seen = 0;
    for (int round = 0; round < 3000 && !seen; round++) {
        pthread_mutex_lock(&f->hs.mu);
        for (int k = 0; k < f->hs.n && !seen; k++) {
            const char *nama = json_string_value(
                json_object_get(json_object_get(f->hs.bodies[k], "payload"), "nama"));
            seen = nama && strcmp(nama, "Sesudah") == 0;
        }
        pthread_mutex_unlock(&f->hs.mu);
        if (!seen)
            sleep_ms(10);
    }
    assert_true(seen);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),          cmocka_unit_test(test_publish_json),
        cmocka_unit_test(test_publish_refused), cmocka_unit_test(test_refusals_mapped),
        cmocka_unit_test(test_webhook),         cmocka_unit_test(test_broker_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
