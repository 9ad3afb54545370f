/* bkn.c - BKN: for every ASN scenario (durable consumer bkn-pemeriksaan, shared by
 * --workers sessions) it checks the identity against Dukcapil's IKD by request/reply
 * (step 3), then the personnel record in SIASN and the competency requirements (step 4),
 * and publishes the result on ikn.relokasi.pemeriksaan. A scenario whose NIP has no
 * record in SIASN cannot be checked: it goes to the dead letters. It also serves the
 * same check as bkn.siasn.pemeriksaan for any member allowed to call it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

#define BAR IKN_COMPETENCY_BAR

/* The record and competency check of one ASN into h (nip and strings borrowed). */
static void
check_record(const ikn_asn *a, Spbe__Ikn__V1__HasilPemeriksaanBkn *h, char *why, size_t n)
{
    h->nip = (char *)a->nip;
    h->data_valid = 1;
    h->kompetensi_umum = a->kompetensi_umum;
    h->kompetensi_teknis = a->kompetensi_teknis;
    h->literasi_digital = a->literasi_digital;
    h->memenuhi_syarat =
        a->kompetensi_umum >= BAR && a->kompetensi_teknis >= BAR && a->literasi_digital >= BAR;
    if (!h->memenuhi_syarat) {
        snprintf(why, n, "%s %u di bawah batas %d",
                 a->kompetensi_umum < BAR     ? "kompetensi umum"
                 : a->kompetensi_teknis < BAR ? "kompetensi teknis"
                                              : "literasi digital",
                 a->kompetensi_umum < BAR     ? a->kompetensi_umum
                 : a->kompetensi_teknis < BAR ? a->kompetensi_teknis
                                              : a->literasi_digital,
                 BAR);
        h->keterangan = why;
    }
}

typedef struct bkn_result {
    Spbe__Ikn__V1__HasilPemeriksaanBkn h;
    char nip[19], why[160];
} bkn_result;

static void
free_result(ProtobufCMessage *m)
{
    free(m); /* h is the first member of bkn_result */
}

static ikn_verdict
pemeriksaan(ikn_ctx *x, spbe_client *c, void *arg, const ikn_item *in, ikn_output *out)
{
    (void)arg;
    Spbe__Ikn__V1__SkenarioAsn *s =
        spbe__ikn__v1__skenario_asn__unpack(NULL, in->payload_len, in->payload);
    if (!s) {
        snprintf(out->reason, sizeof out->reason, "not an ASN scenario");
        return IKN_TERM;
    }
    const ikn_asn *a = ikn_find_nip(&x->world, s->nip);
    if (!a || a->problem == IKN_NO_RECORD) {
        snprintf(out->reason, sizeof out->reason, "NIP %s has no record in SIASN", s->nip);
        spbe__ikn__v1__skenario_asn__free_unpacked(s, NULL);
        return IKN_TERM;
    }
    /* step 3: the identity, by request/reply to Dukcapil */
    Spbe__Ikn__V1__PermintaanVerifikasiIkd q = SPBE__IKN__V1__PERMINTAAN_VERIFIKASI_IKD__INIT;
    q.nik = s->nik;
    q.nip = s->nip;
    q.nama = s->nama;
    size_t len;
    uint8_t *buf = ikn_pack(&q.base, &len);
    spbe_message_options o = {.schema = q.base.descriptor->name};
    spbe_response resp;
    int rc = buf ? spbe_request(c, "dukcapil.ikd.verifikasi", buf, len, 10000, &o, &resp)
                 : SPBE_INTERNAL;
    free(buf);
    spbe__ikn__v1__skenario_asn__free_unpacked(s, NULL);
    Spbe__Ikn__V1__HasilVerifikasiIkd *ikd =
        rc == SPBE_OK
            ? spbe__ikn__v1__hasil_verifikasi_ikd__unpack(NULL, resp.payload_len, resp.payload)
            : NULL;
    if (rc == SPBE_OK)
        spbe_response_free(&resp);
    if (!ikd) {
        snprintf(out->reason, sizeof out->reason, "IKD did not answer: %s",
                 rc == SPBE_OK ? "malformed answer" : spbe_error_name(rc));
        return IKN_RETRY;
    }
    bkn_result *r = calloc(1, sizeof *r);
    if (!r) {
        spbe__ikn__v1__hasil_verifikasi_ikd__free_unpacked(ikd, NULL);
        return IKN_RETRY;
    }
    spbe__ikn__v1__hasil_pemeriksaan_bkn__init(&r->h);
    check_record(a, &r->h, r->why, sizeof r->why);
    r->h.has_status_ikd = 1;
    r->h.status_ikd = ikd->status;
    if (ikd->status != SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF) {
        r->h.memenuhi_syarat = 0;
        snprintf(r->why, sizeof r->why, "IKD: %s", ikd->keterangan ? ikd->keterangan : "-");
        r->h.keterangan = r->why;
    }
    spbe__ikn__v1__hasil_verifikasi_ikd__free_unpacked(ikd, NULL);
    snprintf(r->nip, sizeof r->nip, "%s", a->nip);
    r->h.nip = r->nip;
    snprintf(out->topic, sizeof out->topic, "ikn.relokasi.pemeriksaan");
    out->message = &r->h.base;
    out->free_fn = free_result;
    ikn_message_id(x->seed, "pemeriksaan", a->nip, out->id);
    return IKN_PUBLISH;
}

typedef struct worker {
    ikn_ctx *x;
    pthread_t thread;
    ikn_stage_stats stats;
    int rc;
} worker;

static void *
worker_main(void *arg)
{
    worker *w = arg;
    ikn_stage st = {.consumer = "bkn-pemeriksaan",
                    .pattern = "ikn.relokasi.asn.*",
                    .max_in_flight = 64,
                    .transform = pemeriksaan};
    w->rc = ikn_stage_run(w->x, &st, &w->stats);
    return NULL;
}

/* bkn.siasn.pemeriksaan: the record and competency check on request */
typedef struct serve_run {
    ikn_ctx *x;
    uint64_t answered;
} serve_run;

static void
on_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    serve_run *sv = arg;
    Spbe__Ikn__V1__PermintaanPemeriksaanBkn *q =
        spbe__ikn__v1__permintaan_pemeriksaan_bkn__unpack(NULL, r->payload_len, r->payload);
    if (!q)
        return;
    const ikn_asn *a = ikn_find_nip(&sv->x->world, q->nip);
    Spbe__Ikn__V1__HasilPemeriksaanBkn h = SPBE__IKN__V1__HASIL_PEMERIKSAAN_BKN__INIT;
    char why[160];
    if (a && a->problem != IKN_NO_RECORD) {
        check_record(a, &h, why, sizeof why);
    } else {
        h.nip = q->nip;
        h.keterangan = "tidak ada data dalam SIASN";
    }
    size_t len;
    uint8_t *buf = ikn_pack(&h.base, &len);
    spbe_message_options o = {.schema = h.base.descriptor->name};
    if (buf && spbe_respond(c, r->service, r->ref, r->id, buf, len, &o, NULL) == SPBE_OK)
        sv->answered++;
    free(buf);
    spbe__ikn__v1__permintaan_pemeriksaan_bkn__free_unpacked(q, NULL);
}

int
ikn_bkn(ikn_ctx *x)
{
    int n = x->workers > 0 ? x->workers : 16;
    worker *ws = calloc((size_t)n, sizeof *ws);
    if (!ws)
        return 1;
    for (int i = 0; i < n; i++) {
        ws[i].x = x;
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            n = i;
            break;
        }
    }
    serve_run sv = {.x = x};
    spbe_client *c = NULL;
    int rc = ikn_connect(x, &c);
    if (rc == SPBE_OK)
        rc = spbe_serve(c, "bkn.siasn.pemeriksaan", on_request, &sv);
    while (rc == SPBE_OK && !*x->stop)
        rc = spbe_dispatch(c, 200, NULL);
    if (rc != SPBE_OK)
        ikn_log(x, "failed", "code=%s reason=\"%s\"", spbe_error_name(rc),
                c ? spbe_last_error(c) : "");
    *x->stop = 1;
    ikn_stage_stats all = {0};
    int worst = rc;
    for (int i = 0; i < n; i++) {
        pthread_join(ws[i].thread, NULL);
        all.consumed += ws[i].stats.consumed;
        all.published += ws[i].stats.published;
        all.retried += ws[i].stats.retried;
        all.terminated += ws[i].stats.terminated;
        all.duplicates += ws[i].stats.duplicates;
        all.refused += ws[i].stats.refused;
        if (ws[i].rc != SPBE_OK)
            worst = ws[i].rc;
    }
    printf("{\"role\":\"bkn\",\"workers\":%d,\"consumed\":%llu,\"published\":%llu,"
           "\"retried\":%llu,\"dead_letters\":%llu,\"duplicates\":%llu,\"refused\":%llu,"
           "\"served\":%llu,\"code\":\"%s\"}\n",
           n, (unsigned long long)all.consumed, (unsigned long long)all.published,
           (unsigned long long)all.retried, (unsigned long long)all.terminated,
           (unsigned long long)all.duplicates, (unsigned long long)all.refused,
           (unsigned long long)sv.answered, spbe_error_name(worst));
    spbe_close(&c);
    free(ws);
    return worst == SPBE_OK ? 0 : 1;
}
