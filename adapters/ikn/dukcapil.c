/* dukcapil.c - Dukcapil's IKD: serves dukcapil.ikd.verifikasi (step 3). A NIK it does not
 * know is IKD_TIDAK_DITEMUKAN, one whose IKD is not activated IKD_BELUM_AKTIVASI, one
 * registered under another name IKD_DATA_BERBEDA. */
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

typedef struct ikd_run {
    ikn_ctx *x;
    uint64_t answered, active, refused, malformed;
} ikd_run;

static void
on_request(spbe_client *c, const spbe_service_request *r, void *arg)
{
    ikd_run *k = arg;
    Spbe__Ikn__V1__PermintaanVerifikasiIkd *q =
        spbe__ikn__v1__permintaan_verifikasi_ikd__unpack(NULL, r->payload_len, r->payload);
    if (!q) { /* the broker checks the schema; nothing to answer to this */
        k->malformed++;
        return;
    }
    const ikn_asn *a = ikn_find_nik(&k->x->world, q->nik);
    Spbe__Ikn__V1__HasilVerifikasiIkd h = SPBE__IKN__V1__HASIL_VERIFIKASI_IKD__INIT;
    h.nik = q->nik;
    if (!a || a->problem == IKN_IKD_NOT_FOUND) {
        h.status = SPBE__IKN__V1__STATUS_IKD__IKD_TIDAK_DITEMUKAN;
        h.keterangan = "NIK tidak terdaftar dalam IKD";
    } else if (a->problem == IKN_IKD_INACTIVE) {
        h.status = SPBE__IKN__V1__STATUS_IKD__IKD_BELUM_AKTIVASI;
        h.keterangan = "IKD belum diaktivasi";
    } else if (strcmp(a->nama, q->nama) != 0) {
        h.status = SPBE__IKN__V1__STATUS_IKD__IKD_DATA_BERBEDA;
        h.keterangan = "nama tidak sesuai dengan data kependudukan";
    } else {
        h.status = SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF;
    }
    k->active += h.status == SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF;
    k->refused += h.status != SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF;
    size_t len;
    uint8_t *buf = ikn_pack(&h.base, &len);
    spbe_message_options o = {.schema = h.base.descriptor->name};
    if (buf && spbe_respond(c, r->service, r->ref, r->id, buf, len, &o, NULL) == SPBE_OK)
        k->answered++;
    free(buf);
    spbe__ikn__v1__permintaan_verifikasi_ikd__free_unpacked(q, NULL);
}

int
ikn_dukcapil(ikn_ctx *x)
{
    ikd_run k = {.x = x};
    spbe_client *c = NULL;
    int rc = ikn_connect(x, &c);
    if (rc == SPBE_OK)
        rc = spbe_serve(c, "dukcapil.ikd.verifikasi", on_request, &k);
    while (rc == SPBE_OK && !*x->stop)
        rc = spbe_dispatch(c, 200, NULL);
    if (c && rc == SPBE_OK)
        spbe_flush(c, 5000);
    printf("{\"role\":\"dukcapil\",\"answered\":%llu,\"active\":%llu,\"refused\":%llu,"
           "\"code\":\"%s\"}\n",
           (unsigned long long)k.answered, (unsigned long long)k.active,
           (unsigned long long)k.refused, spbe_error_name(rc));
    if (rc != SPBE_OK)
        ikn_log(x, "failed", "code=%s reason=\"%s\"", spbe_error_name(rc),
                c ? spbe_last_error(c) : "");
    spbe_close(&c);
    return rc == SPBE_OK ? 0 : 1;
}
