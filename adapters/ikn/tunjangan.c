/* tunjangan.c - Kemenkeu: follows the portal's status events (durable consumer
 * kemenkeu-tunjangan) and sets the pioneer allowance (tunjangan pionir) of every ASN who
 * has housing (step 7). */
#include <stdlib.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

typedef struct allowance {
    Spbe__Ikn__V1__TunjanganPionir m;
    char nip[19];
} allowance;

static void
free_allowance(ProtobufCMessage *m)
{
    free(m);
}

static ikn_verdict
set_allowance(ikn_ctx *x, spbe_client *c, void *arg, const ikn_item *in, ikn_output *out)
{
    (void)c, (void)arg;
    Spbe__Ikn__V1__StatusAsn *s =
        spbe__ikn__v1__status_asn__unpack(NULL, in->payload_len, in->payload);
    if (!s) {
        snprintf(out->reason, sizeof out->reason, "not a status");
        return IKN_TERM;
    }
    ikn_verdict v = IKN_ACK;
    if (s->status == SPBE__IKN__V1__STATUS_RELOKASI__HUNIAN_DIALOKASIKAN) {
        allowance *al = calloc(1, sizeof *al);
        if (!al) {
            v = IKN_RETRY;
        } else {
            spbe__ikn__v1__tunjangan_pionir__init(&al->m);
            snprintf(al->nip, sizeof al->nip, "%s", s->nip);
            al->m.nip = al->nip;
            al->m.jumlah_rupiah =
                ikn_allowance(s->has_fase ? (int)s->fase : 1, s->anggota_keluarga, &al->m.mulai);
            al->m.lama_bulan = 12;
            snprintf(out->topic, sizeof out->topic, "ikn.relokasi.tunjangan");
            out->message = &al->m.base;
            out->free_fn = free_allowance;
            ikn_message_id(x->seed, "tunjangan", s->nip, out->id);
            v = IKN_PUBLISH;
        }
    }
    spbe__ikn__v1__status_asn__free_unpacked(s, NULL);
    return v;
}

int
ikn_tunjangan(ikn_ctx *x)
{
    return ikn_follow(x, "kemenkeu-tunjangan", "ikn.relokasi.status", set_allowance, "set");
}
