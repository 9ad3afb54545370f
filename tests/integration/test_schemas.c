/* test_schemas.c - topics and services bound to payload schemas: the real broker refuses
 * a payload that does not decode as its binding's type with SCHEMA_MISMATCH and a reason
 * that names the field, stores nothing of it, and leaves unbound topics alone. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

#define ASN "spbe.ikn.v1.SkenarioAsn"
#define KELUARGA "spbe.ikn.v1.SkenarioKeluarga"
#define IKD_REQ "spbe.ikn.v1.PermintaanVerifikasiIkd"
#define IKD_REP "spbe.ikn.v1.HasilVerifikasiIkd"

typedef struct fixture {
    test_broker broker;
    char kl[400], ikd[400];
    spbe_client *c;
} fixture;

static int
setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (harness_broker_start(&f->broker, "--schema 'ikn.relokasi.asn.*=" ASN "' "
                                         "--schema 'ikn.relokasi.keluarga=" KELUARGA "' "
                                         "--service-schema 'dukcapil.ikd.verifikasi=" IKD_REQ
                                         "," IKD_REP "'") != 0 ||
        harness_member(&f->broker, "kemenkeu/simpeg", "ikn.>", "ikn.>",
                       "call:dukcapil.ikd.verifikasi", f->kl) != 0 ||
        harness_member(&f->broker, "dukcapil/ikd", NULL, NULL, "serve:dukcapil.ikd.verifikasi",
                       f->ikd) != 0 ||
        !(f->c = harness_connect(&f->broker, f->kl, 0)))
        return -1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fixture *f = *state;
    spbe_close(&f->c);
    harness_broker_stop(&f->broker);
    free(f);
    return 0;
}

/* A valid ASN scenario, packed into buf (its length returned). */
static size_t
asn_pack(Spbe__Ikn__V1__SkenarioAsn *a, uint8_t *buf)
{
    return spbe__ikn__v1__skenario_asn__pack(a, buf);
}

static void
asn_init(Spbe__Ikn__V1__SkenarioAsn *a)
{
    spbe__ikn__v1__skenario_asn__init(a);
    a->nip = "199003152015031002";
    a->nik = "6472011503900002";
    a->nama = "Rina Kartikasari";
    a->instansi = "kemenkeu";
    a->kode_unit = "djp-01";
    a->prioritas = SPBE__IKN__V1__PRIORITAS__PRIORITAS_1;
    a->fase = SPBE__IKN__V1__FASE__FASE_1;
}

/* Publishes payload as schema on topic; the receipt's code, its reason into why. */
static int
publish(fixture *f, const char *topic, const char *schema, const void *payload, size_t len,
        char *why, size_t why_len)
{
    spbe_message_options o = {.schema = schema};
    spbe_receipt r;
    int rc = spbe_publish(f->c, topic, payload, len, &o, &r);
    snprintf(why, why_len, "%s", r.error);
    return rc == SPBE_OK ? r.code : rc;
}

static void
refused(fixture *f, const char *topic, const char *schema, const void *payload, size_t len,
        const char *reason)
{
    char why[256];
    assert_int_equal(publish(f, topic, schema, payload, len, why, sizeof why),
                     SPBE_SCHEMA_MISMATCH);
    if (!strstr(why, reason))
        fail_msg("reason '%s' lacks '%s'", why, reason);
}

static void
test_topic_binding(void **state)
{
    fixture *f = *state;
    const char *topic = "ikn.relokasi.asn.kemenkeu";
    uint8_t buf[1024];
    char why[256];
    Spbe__Ikn__V1__SkenarioAsn a;
    asn_init(&a);
    size_t n = asn_pack(&a, buf);
    assert_int_equal(publish(f, topic, ASN, buf, n, why, sizeof why), SPBE_OK);
    /* shown decoded: field names and values, enums by name */
    char out[4096], err[1024];
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "$SPBE msg get %s 1 --json --key %s", topic, f->kl),
                     0);
    if (!strstr(out, "\"payload\":{\"nip\":\"199003152015031002\",\"nik\":\"6472011503900002\","
                     "\"nama\":\"Rina Kartikasari\"") ||
        !strstr(out, "\"prioritas\":\"PRIORITAS_1\",\"fase\":\"FASE_1\"}"))
        fail_msg("not decoded: %s", out);
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "$SPBE msg get %s 1 --key %s", topic, f->kl),
        0);
    assert_non_null(strstr(out, "payload     {\"nip\":\"199003152015031002\""));

    /* the envelope names another type, or none */
    refused(f, topic, IKD_REQ, buf, n, "the message names its schema '" IKD_REQ "'");
    refused(f, topic, NULL, buf, n, "the message names its schema ''");
    /* a NIP of 17 digits, a NIK with a letter */
    a.nip = "19900315201503100";
    n = asn_pack(&a, buf);
    refused(f, topic, ASN, buf, n, "field 'nip' must be 18 digits");
    a.nip = "199003152015031002";
    a.nik = "647201150390000X";
    n = asn_pack(&a, buf);
    refused(f, topic, ASN, buf, n, "field 'nik' must be 16 digits");
    a.nik = "6472011503900002";
    /* an enum value not declared; priority 0 ("unspecified") */
    a.fase = (Spbe__Ikn__V1__Fase)9;
    n = asn_pack(&a, buf);
    refused(f, topic, ASN, buf, n, "field 'fase' has 9, not a value of spbe.ikn.v1.Fase");
    a.fase = SPBE__IKN__V1__FASE__FASE_2;
    a.prioritas = (Spbe__Ikn__V1__Prioritas)0;
    n = asn_pack(&a, buf);
    refused(f, topic, ASN, buf, n, "field 'prioritas' has 0");
    a.prioritas = SPBE__IKN__V1__PRIORITAS__PRIORITAS_3;
    /* a name that is not UTF-8 */
    a.nama = "Rina \xc3\x28";
    n = asn_pack(&a, buf);
    refused(f, topic, ASN, buf, n, "field 'nama' is not valid UTF-8");
    a.nama = "Rina Kartikasari";
    /* a required field missing: pack without nama */
    a.nama = NULL;
    Spbe__Ikn__V1__SkenarioAsn partial = a;
    partial.nama = "";
    n = asn_pack(&partial, buf);
    /* drop the nama field (tag 3, empty string: bytes 0x1a 0x00) from the packed form */
    uint8_t cut[1024];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && buf[i] == 0x1a && buf[i + 1] == 0x00) {
            i++;
            continue;
        }
        cut[m++] = buf[i];
    }
    assert_int_equal(m, n - 2);
    refused(f, topic, ASN, cut, m, "required field 'nama' of " ASN " is missing");
    /* another type's payload: an IKD answer has fields an ASN scenario does not */
    Spbe__Ikn__V1__HasilVerifikasiIkd h = SPBE__IKN__V1__HASIL_VERIFIKASI_IKD__INIT;
    h.nik = "6472011503900002";
    h.status = SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF;
    n = spbe__ikn__v1__hasil_verifikasi_ikd__pack(&h, buf);
    refused(f, topic, ASN, buf, n, "payloads here are " ASN);
    /* not protobuf at all; a field number the type does not have */
    refused(f, topic, ASN, "{\"nip\":1}", 9, "is not a protobuf message");
    asn_init(&a);
    n = asn_pack(&a, buf);
    buf[n++] = 0xf8; /* field 15, varint 1 */
    buf[n++] = 0x00;
    buf[n++] = 0x01;
    refused(f, topic, ASN, buf, n, "field number 15 is not in " ASN);

    /* nothing refused was stored; an unbound topic takes any payload */
    assert_int_equal(harness_stored(&f->broker, topic), 1);
    assert_int_equal(publish(f, "ikn.relokasi.catatan", NULL, "bebas", 5, why, sizeof why),
                     SPBE_OK);
    assert_int_equal(
        harness_broker_metric(&f->broker, "spbe_messages_rejected_total{code=\"SCHEMA_MISMATCH\"}"),
        11); /* the eleven refusals above */
}

static void
test_nested(void **state)
{
    fixture *f = *state;
    Spbe__Ikn__V1__AnggotaKeluarga k1 = SPBE__IKN__V1__ANGGOTA_KELUARGA__INIT,
                                   k2 = SPBE__IKN__V1__ANGGOTA_KELUARGA__INIT;
    k1.nik = "6472014101920003";
    k1.nama = "Dewi";
    k1.hubungan = SPBE__IKN__V1__HUBUNGAN__PASANGAN;
    k2.nik = "6472010107150001";
    k2.nama = "Bima";
    k2.hubungan = SPBE__IKN__V1__HUBUNGAN__ANAK;
    Spbe__Ikn__V1__AnggotaKeluarga *members[] = {&k1, &k2};
    Spbe__Ikn__V1__SkenarioKeluarga s = SPBE__IKN__V1__SKENARIO_KELUARGA__INIT;
    s.nip = "199003152015031002";
    s.ikut_pindah = 1;
    s.n_anggota = 2;
    s.anggota = members;
    uint8_t buf[1024];
    char why[256];
    size_t n = spbe__ikn__v1__skenario_keluarga__pack(&s, buf);
    assert_int_equal(publish(f, "ikn.relokasi.keluarga", KELUARGA, buf, n, why, sizeof why),
                     SPBE_OK);
    k2.nik = "64720101071500";
    n = spbe__ikn__v1__skenario_keluarga__pack(&s, buf);
    refused(f, "ikn.relokasi.keluarga", KELUARGA, buf, n,
            "field 'anggota[1].nik' must be 16 digits, not \"64720101071500\"");
    k2.nik = "6472010107150001";
    k2.hubungan = (Spbe__Ikn__V1__Hubungan)7;
    n = spbe__ikn__v1__skenario_keluarga__pack(&s, buf);
    refused(f, "ikn.relokasi.keluarga", KELUARGA, buf, n, "field 'anggota[1].hubungan' has 7");
    assert_int_equal(harness_stored(&f->broker, "ikn.relokasi.keluarga"), 1);
}

/* Dukcapil answers each request: a valid answer, or a broken one when the NIK ends in 9. */
typedef struct server {
    spbe_client *c;
    pthread_t thread;
    volatile int stop;
    int reply_codes[8], n_replies;
} server;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    server *sv = arg;
    if (sv->n_replies < 8)
        sv->reply_codes[sv->n_replies++] = r->code;
}

static void
on_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    (void)arg;
    Spbe__Ikn__V1__PermintaanVerifikasiIkd *q =
        spbe__ikn__v1__permintaan_verifikasi_ikd__unpack(NULL, r->payload_len, r->payload);
    assert_non_null(q);
    Spbe__Ikn__V1__HasilVerifikasiIkd h = SPBE__IKN__V1__HASIL_VERIFIKASI_IKD__INIT;
    h.nik = q->nik;
    h.status = SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF;
    if (q->nik[15] == '9')
        h.status = (Spbe__Ikn__V1__StatusIkd)0;
    uint8_t buf[256];
    size_t n = spbe__ikn__v1__hasil_verifikasi_ikd__pack(&h, buf);
    spbe_message_options o = {.schema = IKD_REP};
    assert_int_equal(spbe_respond(c, r->service, r->ref, r->id, buf, n, &o, NULL), SPBE_OK);
    spbe__ikn__v1__permintaan_verifikasi_ikd__free_unpacked(q, NULL);
}

static void *
serve_main(void *arg)
{
    server *sv = arg;
    while (!sv->stop)
        spbe_dispatch(sv->c, 50, NULL);
    return NULL;
}

static int
call(fixture *f, const char *nik, const char *schema, char *why, size_t why_len,
     Spbe__Ikn__V1__StatusIkd *status)
{
    Spbe__Ikn__V1__PermintaanVerifikasiIkd q = SPBE__IKN__V1__PERMINTAAN_VERIFIKASI_IKD__INIT;
    q.nik = (char *)nik;
    q.nip = "199003152015031002";
    q.nama = "Rina Kartikasari";
    uint8_t buf[256];
    size_t n = spbe__ikn__v1__permintaan_verifikasi_ikd__pack(&q, buf);
    spbe_message_options o = {.schema = schema};
    spbe_response resp;
    int rc = spbe_request(f->c, "dukcapil.ikd.verifikasi", buf, n, 3000, &o, &resp);
    snprintf(why, why_len, "%s", resp.error);
    if (rc == SPBE_OK) {
        Spbe__Ikn__V1__HasilVerifikasiIkd *h =
            spbe__ikn__v1__hasil_verifikasi_ikd__unpack(NULL, resp.payload_len, resp.payload);
        assert_non_null(h);
        *status = h->status;
        spbe__ikn__v1__hasil_verifikasi_ikd__free_unpacked(h, NULL);
    }
    spbe_response_free(&resp);
    return rc;
}

static void
test_service_binding(void **state)
{
    fixture *f = *state;
    server sv = {0};
    sv.c = harness_connect(&f->broker, f->ikd, 0);
    assert_non_null(sv.c);
    spbe_set_receipt_handler(sv.c, on_receipt, &sv);
    assert_int_equal(spbe_serve(sv.c, "dukcapil.ikd.verifikasi", on_request, &sv), SPBE_OK);
    assert_int_equal(pthread_create(&sv.thread, NULL, serve_main, &sv), 0);

    char why[256];
    Spbe__Ikn__V1__StatusIkd status = 0;
    assert_int_equal(call(f, "6472011503900002", IKD_REQ, why, sizeof why, &status), SPBE_OK);
    assert_int_equal(status, SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF);
    /* a request of the wrong type never reaches the server */
    assert_int_equal(call(f, "6472011503900002", ASN, why, sizeof why, &status),
                     SPBE_SCHEMA_MISMATCH);
    assert_non_null(strstr(why, "payloads here are " IKD_REQ));
    assert_int_equal(call(f, "64720115039", IKD_REQ, why, sizeof why, &status),
                     SPBE_SCHEMA_MISMATCH);
    assert_non_null(strstr(why, "field 'nik' must be 16 digits"));
    /* a broken answer is refused to the server; the caller gets no answer in time */
    assert_int_equal(call(f, "6472011503900009", IKD_REQ, why, sizeof why, &status), SPBE_TIMEOUT);
    sv.stop = 1;
    pthread_join(sv.thread, NULL);
    assert_int_equal(sv.n_replies, 2);
    assert_int_equal(sv.reply_codes[0], SPBE_OK);
    assert_int_equal(sv.reply_codes[1], SPBE_SCHEMA_MISMATCH);
    spbe_close(&sv.c);
}

/* Bindings the broker refuses to start with, each with its reason. */
static void
test_bad_bindings(void **state)
{
    (void)state;
    static const struct {
        const char *flags, *reason;
    } cases[] = {
        {"--schema ikn.relokasi.asn.*", "is not PATTERN=TYPE"},
        {"--schema '=" ASN "'", "is not PATTERN=TYPE"},
        {"--schema 'ikn..asn=" ASN "'", "invalid topic pattern"},
        {"--schema '$sys.audit.head=" ASN "'", "invalid topic pattern (not $sys.)"},
        {"--schema 'ikn.>=spbe.ikn.v1.Tidak'",
         "unknown schema type 'spbe.ikn.v1.Tidak' (known: spbe.ikn.v1.SkenarioUnit"},
        {"--service-schema 'dukcapil.ikd=" IKD_REQ "'", "is not SERVICE=REQUEST_TYPE,REPLY_TYPE"},
        {"--service-schema 'dukcapil.ikd=" IKD_REQ ",x.Y'", "unknown schema type 'x.Y'"},
        {"--service-schema 'Dukcapil=" IKD_REQ "," IKD_REP "'", "invalid service name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[2048], err[2048];
        int rc = harness_run(out, sizeof out, err, sizeof err, "%s --check-config %s",
                             SPBE_BROKER_BIN, cases[i].flags);
        assert_int_equal(rc, 2);
        if (!strstr(err, cases[i].reason))
            fail_msg("%s: '%s' lacks '%s'", cases[i].flags, err, cases[i].reason);
    }
    /* the file form: lists of bindings */
    char path[] = "/tmp/spbe-schemas-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    dprintf(fd,
            "schema = [ \"ikn.relokasi.asn.*=%s\" ];\n"
            "service_schema = ( \"dukcapil.ikd.verifikasi=%s,%s\" );\n",
            ASN, IKD_REQ, IKD_REP);
    close(fd);
    char out[512], err[2048];
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s --config %s --check-config",
                                 SPBE_BROKER_BIN, path),
                     0);
    fd = open(path, O_WRONLY | O_TRUNC);
    dprintf(fd, "schema = { a = \"ikn.>=%s\"; };\n", ASN);
    close(fd);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s --config %s --check-config",
                                 SPBE_BROKER_BIN, path),
                     2);
    assert_non_null(strstr(err, ":1: a list of bindings"));
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_binding),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_service_binding),
    };
    const struct CMUnitTest offline[] = {
        cmocka_unit_test(test_bad_bindings),
    };
    return cmocka_run_group_tests(tests, setup, teardown) |
           cmocka_run_group_tests(offline, NULL, NULL);
}
