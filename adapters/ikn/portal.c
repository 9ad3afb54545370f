/* portal.c - the single portal (portal/layanan-asn): follows each ASN's relocation from
 * the events alone (a subscription to ikn.relokasi.> from the first message, so that a
 * portal started again rebuilds the same view), publishes each change of status on
 * ikn.relokasi.status (which the IKN Authority and Kemenkeu follow), sets each ASN's
 * family scenario as the ASN would through it (step 5), and answers portal.status. */
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"

enum { CHECK_NONE, CHECK_OK, CHECK_IKD, CHECK_BKN };

typedef struct view {
    uint8_t seen, family_known, check, housed, allowance, published;
    uint32_t family, kamar;
    uint64_t tunjangan;
    int64_t asn_ns, last_ns,
        ready_ns; /* acceptance of the scenario, the last event, the allowance */
    char menara[32], unit[16], keterangan[96];
} view;

typedef struct portal {
    ikn_ctx *x;
    spbe_client *c;
    view *v; /* by world index */
    uint64_t events, units, families, duplicates, receipts_ok, receipts_dup, receipts_failed;
} portal;

static int
status_of(const view *v)
{
    if (v->allowance)
        return SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH;
    if (v->housed)
        return SPBE__IKN__V1__STATUS_RELOKASI__HUNIAN_DIALOKASIKAN;
    if (v->check == CHECK_IKD)
        return SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_IKD;
    if (v->check == CHECK_BKN)
        return SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_BKN;
    if (v->seen && v->check == CHECK_OK && v->family_known)
        return SPBE__IKN__V1__STATUS_RELOKASI__KOMPETENSI_TERVERIFIKASI;
    if (v->seen)
        return SPBE__IKN__V1__STATUS_RELOKASI__DITETAPKAN;
    return SPBE__IKN__V1__STATUS_RELOKASI__TIDAK_DIKENAL;
}

/* The view of a as a StatusAsn (strings borrowed from a and v). */
static void
status_message(const ikn_asn *a, const view *v, Spbe__Ikn__V1__StatusAsn *m)
{
    spbe__ikn__v1__status_asn__init(m);
    m->nip = (char *)a->nip;
    m->status = (Spbe__Ikn__V1__StatusRelokasi)status_of(v);
    if (!v->seen)
        return;
    m->instansi = (char *)a->agency->kode;
    m->has_fase = 1;
    m->fase = (Spbe__Ikn__V1__Fase)a->fase;
    m->has_anggota_keluarga = v->family_known;
    m->anggota_keluarga = v->family;
    if (v->housed) {
        m->menara = (char *)v->menara;
        m->unit = (char *)v->unit;
    }
    m->has_tunjangan_rupiah = v->allowance;
    m->tunjangan_rupiah = v->tunjangan;
    if (v->keterangan[0])
        m->keterangan = (char *)v->keterangan;
    m->has_diperbarui_ns = 1;
    m->diperbarui_ns = v->last_ns;
}

/* Publishes the status when it changed since the last one published. */
static void
publish_status(portal *p, const ikn_asn *a, view *v)
{
    int st = status_of(v);
    /* nothing said before the facts it rests on are in: an allocation or an allowance seen
     * before the family scenario (a portal started again reads topic by topic) waits */
    int needs_family = st == SPBE__IKN__V1__STATUS_RELOKASI__KOMPETENSI_TERVERIFIKASI ||
                       st == SPBE__IKN__V1__STATUS_RELOKASI__HUNIAN_DIALOKASIKAN ||
                       st == SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH;
    if (st == v->published || !v->seen || (needs_family && !v->family_known))
        return;
    Spbe__Ikn__V1__StatusAsn m;
    status_message(a, v, &m);
    char key[40];
    uint8_t id[16];
    snprintf(key, sizeof key, "%s/%d", a->nip, st);
    ikn_message_id(p->x->seed, "status", key, id);
    uint64_t token;
    if (ikn_publish_async(p->c, "ikn.relokasi.status", &m.base, id, &token) == SPBE_OK)
        v->published = (uint8_t)st;
}

/* Step 5: the ASN sets the family scenario through the portal. */
static void
publish_family(portal *p, const ikn_asn *a)
{
    Spbe__Ikn__V1__AnggotaKeluarga members[IKN_FAMILY_MAX], *ptrs[IKN_FAMILY_MAX];
    Spbe__Ikn__V1__SkenarioKeluarga m = SPBE__IKN__V1__SKENARIO_KELUARGA__INIT;
    m.nip = (char *)a->nip;
    m.ikut_pindah = a->ikut_pindah;
    for (size_t i = 0; a->ikut_pindah && i < a->n_family; i++) {
        spbe__ikn__v1__anggota_keluarga__init(&members[i]);
        members[i].nik = (char *)a->family[i].nik;
        members[i].nama = (char *)a->family[i].nama;
        members[i].hubungan = (Spbe__Ikn__V1__Hubungan)a->family[i].hubungan;
        members[i].has_usia = 1;
        members[i].usia = a->family[i].usia;
        ptrs[i] = &members[i];
        m.n_anggota++;
    }
    m.anggota = ptrs;
    uint8_t id[16];
    uint64_t token;
    ikn_message_id(p->x->seed, "keluarga", a->nip, id);
    ikn_publish_async(p->c, "ikn.relokasi.keluarga", &m.base, id, &token);
}

static view *
find(portal *p, const char *nip, const ikn_asn **a)
{
    *a = ikn_find_nip(&p->x->world, nip);
    if (!*a) {
        ikn_log(p->x, "unknown_nip", "nip=%s", nip);
        return NULL;
    }
    return &p->v[*a - p->x->world.asn];
}

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    portal *p = arg;
    const ikn_asn *a = NULL;
    view *v = NULL;
    p->events++;
    const char *t = d->topic + strlen("ikn.relokasi.");
    if (strncmp(t, "asn.", 4) == 0) {
        Spbe__Ikn__V1__SkenarioAsn *m =
            spbe__ikn__v1__skenario_asn__unpack(NULL, d->payload_len, d->payload);
        if (m && (v = find(p, m->nip, &a)) != NULL) {
            if (v->seen) {
                p->duplicates++;
            } else {
                v->seen = 1;
                v->asn_ns = d->accepted_ns;
                publish_family(p, a);
            }
        }
        spbe__ikn__v1__skenario_asn__free_unpacked(m, NULL);
    } else if (strncmp(t, "unit.", 5) == 0) {
        p->units++;
    } else if (strcmp(t, "keluarga") == 0) {
        Spbe__Ikn__V1__SkenarioKeluarga *m =
            spbe__ikn__v1__skenario_keluarga__unpack(NULL, d->payload_len, d->payload);
        if (m && (v = find(p, m->nip, &a)) != NULL && !v->family_known) {
            v->family_known = 1;
            v->family = m->ikut_pindah ? (uint32_t)m->n_anggota : 0;
            p->families++;
        }
        spbe__ikn__v1__skenario_keluarga__free_unpacked(m, NULL);
    } else if (strcmp(t, "pemeriksaan") == 0) {
        Spbe__Ikn__V1__HasilPemeriksaanBkn *m =
            spbe__ikn__v1__hasil_pemeriksaan_bkn__unpack(NULL, d->payload_len, d->payload);
        if (m && (v = find(p, m->nip, &a)) != NULL && v->check == CHECK_NONE) {
            v->check = m->has_status_ikd && m->status_ikd != SPBE__IKN__V1__STATUS_IKD__IKD_AKTIF
                           ? CHECK_IKD
                       : !m->memenuhi_syarat ? CHECK_BKN
                                             : CHECK_OK;
            snprintf(v->keterangan, sizeof v->keterangan, "%s",
                     v->check != CHECK_OK && m->keterangan ? m->keterangan : "");
        }
        spbe__ikn__v1__hasil_pemeriksaan_bkn__free_unpacked(m, NULL);
    } else if (strcmp(t, "hunian") == 0) {
        Spbe__Ikn__V1__AlokasiHunian *m =
            spbe__ikn__v1__alokasi_hunian__unpack(NULL, d->payload_len, d->payload);
        if (m && (v = find(p, m->nip, &a)) != NULL) {
            v->housed = 1;
            v->kamar = m->kamar;
            snprintf(v->menara, sizeof v->menara, "%s", m->menara);
            snprintf(v->unit, sizeof v->unit, "%s", m->unit);
        }
        spbe__ikn__v1__alokasi_hunian__free_unpacked(m, NULL);
    } else if (strcmp(t, "tunjangan") == 0) {
        Spbe__Ikn__V1__TunjanganPionir *m =
            spbe__ikn__v1__tunjangan_pionir__unpack(NULL, d->payload_len, d->payload);
        if (m && (v = find(p, m->nip, &a)) != NULL) {
            v->allowance = 1;
            v->tunjangan = m->jumlah_rupiah;
            v->ready_ns = d->accepted_ns;
        }
        spbe__ikn__v1__tunjangan_pionir__free_unpacked(m, NULL);
    }
    if (v) {
        if (d->accepted_ns > v->last_ns)
            v->last_ns = d->accepted_ns;
        publish_status(p, a, v);
    }
}

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    portal *p = arg;
    if (r->code == SPBE_OK) {
        p->receipts_ok++;
    } else if (r->code == SPBE_DUPLICATE) {
        p->receipts_dup++;
    } else {
        p->receipts_failed++;
        ikn_log(p->x, "publish_refused", "topic=%s code=%s reason=\"%s\"", r->topic,
                spbe_error_name(r->code), r->error);
    }
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void
summary(const portal *p, Spbe__Ikn__V1__RingkasanPortal *r)
{
    spbe__ikn__v1__ringkasan_portal__init(r);
    size_t n = p->x->world.n_asn, n_lat = 0;
    int64_t *lat = malloc((n ? n : 1) * sizeof *lat);
    for (size_t i = 0; i < n; i++) {
        const view *v = &p->v[i];
        if (!v->seen)
            continue;
        r->asn++;
        switch (status_of(v)) {
        case SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH:
            r->siap_pindah++;
            if (lat && v->asn_ns && v->ready_ns)
                lat[n_lat++] = v->ready_ns - v->asn_ns;
            break;
        case SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_IKD:
            r->ditolak_ikd++;
            break;
        case SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_BKN:
            r->ditolak_bkn++;
            break;
        default:
            r->dalam_proses++;
        }
    }
    r->pengajuan_ganda = p->duplicates;
    r->unit = p->units;
    r->keluarga = p->families;
    r->peristiwa = p->events;
    if (lat && n_lat) {
        qsort(lat, n_lat, sizeof *lat, cmp_i64);
        r->has_latensi_p50_ns = r->has_latensi_p99_ns = r->has_latensi_maks_ns = 1;
        r->latensi_p50_ns = lat[n_lat / 2];
        r->latensi_p99_ns = lat[n_lat * 99 / 100];
        r->latensi_maks_ns = lat[n_lat - 1];
    }
    free(lat);
}

static void
on_request(spbe_client *c, const spbe_service_request *rq, void *arg)
{
    portal *p = arg;
    Spbe__Ikn__V1__PermintaanStatus *q =
        spbe__ikn__v1__permintaan_status__unpack(NULL, rq->payload_len, rq->payload);
    if (!q)
        return;
    size_t n = q->n_nip < 1000 ? q->n_nip : 1000;
    Spbe__Ikn__V1__StatusAsn *st = calloc(n ? n : 1, sizeof *st);
    Spbe__Ikn__V1__StatusAsn **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Spbe__Ikn__V1__RingkasanPortal r;
    summary(p, &r);
    Spbe__Ikn__V1__JawabanStatus j = SPBE__IKN__V1__JAWABAN_STATUS__INIT;
    j.ringkasan = &r;
    view unknown = {0};
    ikn_asn nobody;
    for (size_t i = 0; st && ptrs && i < n; i++) {
        const ikn_asn *a = ikn_find_nip(&p->x->world, q->nip[i]);
        if (!a) {
            memset(&nobody, 0, sizeof nobody);
            snprintf(nobody.nip, sizeof nobody.nip, "%s", q->nip[i]);
        }
        status_message(a ? a : &nobody, a ? &p->v[a - p->x->world.asn] : &unknown, &st[i]);
        if (!a)
            st[i].nip = q->nip[i];
        ptrs[i] = &st[i];
        j.n_status++;
    }
    j.status = ptrs;
    size_t len;
    uint8_t *buf = ikn_pack(&j.base, &len);
    spbe_message_options o = {.schema = j.base.descriptor->name};
    if (buf)
        spbe_respond(c, rq->service, rq->ref, rq->id, buf, len, &o, NULL);
    free(buf);
    free(st);
    free(ptrs);
    spbe__ikn__v1__permintaan_status__free_unpacked(q, NULL);
}

int
ikn_portal(ikn_ctx *x)
{
    portal p = {.x = x};
    p.v = calloc(x->world.n_asn ? x->world.n_asn : 1, sizeof *p.v);
    int rc = p.v ? ikn_connect(x, &p.c) : SPBE_INTERNAL;
    uint64_t id;
    if (rc == SPBE_OK) {
        spbe_set_delivery_handler(p.c, on_delivery, &p);
        spbe_set_receipt_handler(p.c, on_receipt, &p);
        rc = spbe_serve(p.c, "portal.status", on_request, &p);
    }
    if (rc == SPBE_OK)
        rc = spbe_subscribe(p.c, "ikn.relokasi.>", SPBE_START_FIRST, 0, &id);
    while (rc == SPBE_OK && !*x->stop)
        rc = spbe_dispatch(p.c, 200, NULL);
    if (p.c && rc == SPBE_OK)
        spbe_flush(p.c, 5000);
    Spbe__Ikn__V1__RingkasanPortal r;
    summary(&p, &r);
    printf("{\"role\":\"portal\",\"events\":%llu,\"asn\":%llu,\"siap_pindah\":%llu,"
           "\"ditolak_ikd\":%llu,\"ditolak_bkn\":%llu,\"dalam_proses\":%llu,"
           "\"pengajuan_ganda\":%llu,\"published\":%llu,\"duplicates\":%llu,\"refused\":%llu,"
           "\"code\":\"%s\"}\n",
           (unsigned long long)p.events, (unsigned long long)r.asn,
           (unsigned long long)r.siap_pindah, (unsigned long long)r.ditolak_ikd,
           (unsigned long long)r.ditolak_bkn, (unsigned long long)r.dalam_proses,
           (unsigned long long)r.pengajuan_ganda, (unsigned long long)p.receipts_ok,
           (unsigned long long)p.receipts_dup, (unsigned long long)p.receipts_failed,
           spbe_error_name(rc));
    if (rc != SPBE_OK)
        ikn_log(x, "failed", "code=%s reason=\"%s\"", spbe_error_name(rc),
                p.c ? spbe_last_error(p.c) : "");
    spbe_close(&p.c);
    free(p.v);
    return rc == SPBE_OK ? 0 : 1;
}
