/* hunian.c - the IKN Authority (Otorita IKN): follows the portal's status events
 * (durable consumer oikn-hunian) and allocates housing to every ASN whose checks passed
 * (step 6): a unit in a residential tower, bedrooms by the family moving along. */
#include <stdlib.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

typedef struct allocation {
    Spbe__Ikn__V1__AlokasiHunian m;
    char nip[19], menara[48], unit[16];
} allocation;

static void
free_allocation(ProtobufCMessage *m)
{
    free(m);
}

static ikn_verdict
allocate(ikn_ctx *x, spbe_client *c, void *arg, const ikn_item *in, ikn_output *out)
{
    (void)c, (void)arg;
    Spbe__Ikn__V1__StatusAsn *s =
        spbe__ikn__v1__status_asn__unpack(NULL, in->payload_len, in->payload);
    if (!s) {
        snprintf(out->reason, sizeof out->reason, "not a status");
        return IKN_TERM;
    }
    ikn_verdict v = IKN_ACK;
    allocation *al;
    if (s->status == SPBE__IKN__V1__STATUS_RELOKASI__KOMPETENSI_TERVERIFIKASI &&
        (al = calloc(1, sizeof *al)) != NULL) {
        spbe__ikn__v1__alokasi_hunian__init(&al->m);
        snprintf(al->nip, sizeof al->nip, "%s", s->nip);
        ikn_housing(s->nip, s->anggota_keluarga, al->menara, sizeof al->menara, al->unit,
                    sizeof al->unit, &al->m.kamar);
        al->m.nip = al->nip;
        al->m.menara = al->menara;
        al->m.unit = al->unit;
        al->m.fase = s->has_fase ? s->fase : SPBE__IKN__V1__FASE__FASE_1;
        snprintf(out->topic, sizeof out->topic, "ikn.relokasi.hunian");
        out->message = &al->m.base;
        out->free_fn = free_allocation;
        ikn_message_id(x->seed, "hunian", s->nip, out->id);
        v = IKN_PUBLISH;
    } else if (s->status == SPBE__IKN__V1__STATUS_RELOKASI__KOMPETENSI_TERVERIFIKASI) {
        v = IKN_RETRY;
    }
    spbe__ikn__v1__status_asn__free_unpacked(s, NULL);
    return v;
}

int
ikn_hunian(ikn_ctx *x)
{
    return ikn_follow(x, "oikn-hunian", "ikn.relokasi.status", allocate, "allocated");
}
