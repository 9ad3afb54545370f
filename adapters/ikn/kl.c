/* kl.c - a ministry (K/L): publishes its unit scenarios and its ASN scenarios (steps 1
 * and 2), pipelined, and reports what the broker answered. The malformed records planted
 * in its data are refused with SCHEMA_MISMATCH; a submission made twice is stored twice
 * (the portal counts it once). Started again, it sends the same messages with the same
 * ids, which the broker's dedup answers with the original receipts. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "wire.h"

#define WINDOW 1000

typedef struct kl_run {
    ikn_ctx *x;
    int64_t *sent_ns; /* by token - first_token */
    uint64_t first_token, n_tokens;
    uint64_t ok, duplicate, refused, other;
    uint64_t *latency_us;
    size_t n_latency;
    char first_reason[256];
} kl_run;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    kl_run *k = arg;
    if (r->token >= k->first_token && r->token - k->first_token < k->n_tokens) {
        int64_t sent = k->sent_ns[r->token - k->first_token];
        if (sent)
            k->latency_us[k->n_latency++] = (uint64_t)(wire_mono_ns() - sent) / 1000;
    }
    if (r->code == SPBE_OK)
        k->ok++;
    else if (r->code == SPBE_DUPLICATE)
        k->duplicate++;
    else if (r->code == SPBE_SCHEMA_MISMATCH) {
        if (!k->refused++)
            snprintf(k->first_reason, sizeof k->first_reason, "%s", r->error);
        ikn_log(k->x, "refused", "topic=%s code=SCHEMA_MISMATCH reason=\"%s\"", r->topic, r->error);
    } else {
        k->other++;
        ikn_log(k->x, "refused", "topic=%s code=%s reason=\"%s\"", r->topic,
                spbe_error_name(r->code), r->error);
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sends one message, keeping at most WINDOW without a receipt. */
static int
send_one(kl_run *k, spbe_client *c, const char *topic, const ProtobufCMessage *m,
         const uint8_t id[16])
{
    while (spbe_in_flight(c) >= WINDOW && !*k->x->stop) {
        int rc = spbe_dispatch(c, 100, NULL);
        if (rc != SPBE_OK)
            return rc;
    }
    uint64_t token;
    int rc = ikn_publish_async(c, topic, m, id, &token);
    if (rc != SPBE_OK)
        return rc;
    if (!k->first_token)
        k->first_token = token;
    if (token - k->first_token < k->n_tokens)
        k->sent_ns[token - k->first_token] = wire_mono_ns();
    return SPBE_OK;
}

int
ikn_kl(ikn_ctx *x)
{
    const ikn_agency *ag = x->instansi ? ikn_agency_find(&x->world, x->instansi) : NULL;
    if (!ag) {
        fprintf(stderr, "spbe-ikn kl: --instansi is one of the ministries:");
        for (size_t i = 0; i < x->world.n_agencies; i++)
            fprintf(stderr, " %s", x->world.agencies[i].kode);
        fprintf(stderr, "\n");
        return 2;
    }
    size_t mine = 0;
    uint32_t per_unit[4] = {0};
    for (size_t i = 0; i < x->world.n_asn; i++)
        if (x->world.asn[i].agency == ag) {
            mine += 1 + (size_t)x->world.asn[i].duplicate;
            per_unit[x->world.asn[i].unit - ag->units]++;
        }
    kl_run k = {.x = x, .n_tokens = mine + 8};
    k.sent_ns = calloc(k.n_tokens, sizeof *k.sent_ns);
    k.latency_us = calloc(k.n_tokens, sizeof *k.latency_us);
    spbe_client *c = NULL;
    int rc = k.sent_ns && k.latency_us ? ikn_connect(x, &c) : SPBE_INTERNAL;
    if (rc == SPBE_OK)
        spbe_set_receipt_handler(c, on_receipt, &k);
    int64_t t0 = wire_mono_ns();
    char topic[256], key[128];
    uint8_t id[16];
    /* step 1: the unit scenario */
    snprintf(topic, sizeof topic, "ikn.relokasi.unit.%s", ag->kode);
    for (int u = 0; u < 4 && rc == SPBE_OK; u++) {
        Spbe__Ikn__V1__SkenarioUnit m = SPBE__IKN__V1__SKENARIO_UNIT__INIT;
        m.instansi = (char *)ag->kode;
        m.kode_unit = (char *)ag->units[u].kode;
        m.nama_unit = (char *)ag->units[u].nama;
        m.fase = (Spbe__Ikn__V1__Fase)ag->units[u].fase;
        m.jumlah_asn = per_unit[u];
        m.menara = (char *)ag->units[u].menara;
        snprintf(key, sizeof key, "%s/%s", ag->kode, ag->units[u].kode);
        ikn_message_id(x->seed, "unit", key, id);
        rc = send_one(&k, c, topic, &m.base, id);
    }
    /* step 2: the ASN scenario, one message per civil servant */
    snprintf(topic, sizeof topic, "ikn.relokasi.asn.%s", ag->kode);
    for (size_t i = 0; i < x->world.n_asn && rc == SPBE_OK && !*x->stop; i++) {
        const ikn_asn *a = &x->world.asn[i];
        if (a->agency != ag)
            continue;
        char nip[19];
        snprintf(nip, sizeof nip, "%s", a->nip);
        if (a->problem == IKN_MALFORMED)
            nip[17] = '\0'; /* a digit lost on the way into the ministry's system */
        Spbe__Ikn__V1__SkenarioAsn m = SPBE__IKN__V1__SKENARIO_ASN__INIT;
        m.nip = nip;
        m.nik = (char *)a->nik;
        m.nama = (char *)a->nama;
        m.instansi = (char *)ag->kode;
        m.kode_unit = (char *)a->unit->kode;
        m.prioritas = (Spbe__Ikn__V1__Prioritas)a->prioritas;
        m.fase = (Spbe__Ikn__V1__Fase)a->fase;
        m.jabatan = (char *)a->jabatan;
        m.golongan = (char *)a->golongan;
        m.has_tanggungan = 1;
        m.tanggungan = a->ikut_pindah ? (uint32_t)a->n_family : 0;
        ikn_message_id(x->seed, "asn", a->nip, id);
        rc = send_one(&k, c, topic, &m.base, id);
        if (rc == SPBE_OK && a->duplicate) { /* submitted again, as a new message */
            ikn_message_id(x->seed, "asn-ulang", a->nip, id);
            rc = send_one(&k, c, topic, &m.base, id);
        }
    }
    if (rc == SPBE_OK)
        rc = spbe_flush(c, 60000);
    double secs = (double)(wire_mono_ns() - t0) / 1e9;
    qsort(k.latency_us, k.n_latency, sizeof *k.latency_us, cmp_u64);
    uint64_t p50 = k.n_latency ? k.latency_us[k.n_latency / 2] : 0,
             p99 = k.n_latency ? k.latency_us[k.n_latency * 99 / 100] : 0;
    /* the report: one JSON line on stdout */
    printf("{\"role\":\"kl\",\"instansi\":\"%s\",\"sent\":%zu,\"ok\":%llu,\"duplicate\":%llu,"
           "\"schema_mismatch\":%llu,\"other\":%llu,\"seconds\":%.3f,\"receipt_p50_us\":%llu,"
           "\"receipt_p99_us\":%llu,\"code\":\"%s\",\"reason\":",
           ag->kode, mine + 4, (unsigned long long)k.ok, (unsigned long long)k.duplicate,
           (unsigned long long)k.refused, (unsigned long long)k.other, secs,
           (unsigned long long)p50, (unsigned long long)p99, spbe_error_name(rc));
    ikn_json_string(stdout, k.first_reason);
    printf("}\n");
    fflush(stdout);
    if (rc != SPBE_OK)
        ikn_log(x, "failed", "code=%s reason=\"%s\"", spbe_error_name(rc),
                c ? spbe_last_error(c) : "");
    spbe_close(&c);
    free(k.sent_ns);
    free(k.latency_us);
    return rc == SPBE_OK ? 0 : 1;
}
