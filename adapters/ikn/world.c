/* world.c - the reference process's synthetic world (world.h). */
#include "world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "spbe/ikn/v1/relokasi.pb-c.h"

static const ikn_agency agencies[] = {
    {"kemenkeu",
     "Kementerian Keuangan",
     {{"setjen", "Sekretariat Jenderal", 1, "Menara Kantor Bersama 1", 0},
      {"djp", "Direktorat Jenderal Pajak", 2, "Menara Kantor Bersama 1", 0},
      {"djpb", "Direktorat Jenderal Perbendaharaan", 1, "Menara Kantor Bersama 2", 0},
      {"bkf", "Badan Kebijakan Fiskal", 3, "Menara Kantor Bersama 2", 0}}},
    {"kemendagri",
     "Kementerian Dalam Negeri",
     {{"setjen", "Sekretariat Jenderal", 1, "Menara Kantor Bersama 3", 0},
      {"dukcapil", "Direktorat Jenderal Kependudukan dan Pencatatan Sipil", 1,
       "Menara Kantor Bersama 3", 0},
      {"otda", "Direktorat Jenderal Otonomi Daerah", 2, "Menara Kantor Bersama 4", 0},
      {"bpsdm", "Badan Pengembangan Sumber Daya Manusia", 3, "Menara Kantor Bersama 4", 0}}},
    {"kemenpanrb",
     "Kementerian Pendayagunaan Aparatur Negara dan Reformasi Birokrasi",
     {{"setmen", "Sekretariat Kementerian", 1, "Menara Kantor Bersama 1", 0},
      {"sdma", "Deputi Bidang SDM Aparatur", 1, "Menara Kantor Bersama 1", 0},
      {"rbkunwas", "Deputi Bidang Reformasi Birokrasi", 2, "Menara Kantor Bersama 5", 0},
      {"pp", "Deputi Bidang Pelayanan Publik", 2, "Menara Kantor Bersama 5", 0}}},
    {"bappenas",
     "Kementerian PPN/Bappenas",
     {{"sesmen", "Sekretariat Kementerian", 1, "Menara Kantor Bersama 2", 0},
      {"polhukam", "Deputi Bidang Politik, Hukum, Pertahanan dan Keamanan", 1,
       "Menara Kantor Bersama 2", 0},
      {"ekonomi", "Deputi Bidang Ekonomi", 2, "Menara Kantor Bersama 6", 0},
      {"sarpras", "Deputi Bidang Sarana dan Prasarana", 3, "Menara Kantor Bersama 6", 0}}},
    {"kemenkes",
     "Kementerian Kesehatan",
     {{"setjen", "Sekretariat Jenderal", 1, "Menara Kantor Bersama 7", 0},
      {"yankes", "Direktorat Jenderal Pelayanan Kesehatan", 2, "Menara Kantor Bersama 7", 0},
      {"p2p", "Direktorat Jenderal Pencegahan dan Pengendalian Penyakit", 2,
       "Menara Kantor Bersama 8", 0},
      {"kesmas", "Direktorat Jenderal Kesehatan Masyarakat", 3, "Menara Kantor Bersama 8", 0}}},
    {"kemensetneg",
     "Kementerian Sekretariat Negara",
     {{"sesmen", "Sekretariat Kementerian", 1, "Menara Kantor Bersama 3", 0},
      {"rumahtangga", "Sekretariat Presiden", 1, "Menara Kantor Bersama 3", 0},
      {"hukum", "Deputi Bidang Perundang-undangan", 2, "Menara Kantor Bersama 9", 0},
      {"sdm", "Biro Sumber Daya Manusia", 3, "Menara Kantor Bersama 9", 0}}},
    {"kemenhub",
     "Kementerian Perhubungan",
     {{"setjen", "Sekretariat Jenderal", 1, "Menara Kantor Bersama 10", 0},
      {"hubud", "Direktorat Jenderal Perhubungan Udara", 2, "Menara Kantor Bersama 10", 0},
      {"hubla", "Direktorat Jenderal Perhubungan Laut", 3, "Menara Kantor Bersama 11", 0},
      {"hubdat", "Direktorat Jenderal Perhubungan Darat", 2, "Menara Kantor Bersama 11", 0}}},
    {"kemenkumham",
     "Kementerian Hukum dan HAM",
     {{"setjen", "Sekretariat Jenderal", 1, "Menara Kantor Bersama 12", 0},
      {"ahu", "Direktorat Jenderal Administrasi Hukum Umum", 2, "Menara Kantor Bersama 12", 0},
      {"pp", "Direktorat Jenderal Peraturan Perundang-undangan", 1, "Menara Kantor Bersama 4", 0},
      {"ki", "Direktorat Jenderal Kekayaan Intelektual", 3, "Menara Kantor Bersama 5", 0}}},
};

static const char *const male[] = {"Agus",   "Budi",   "Dedi",      "Eko",    "Fajar",    "Hendra",
                                   "Irfan",  "Joko",   "Kurniawan", "Lukman", "Muhammad", "Nugroho",
                                   "Rizky",  "Slamet", "Teguh",     "Wahyu",  "Yusuf",    "Arif",
                                   "Bayu",   "Dimas",  "Gilang",    "Hadi",   "Rahmat",   "Sigit",
                                   "Taufik", "Andi",   "Made",      "Putu"};
static const char *const female_given[] = {
    "Ayu",   "Dewi",  "Fitri", "Indah", "Kartika", "Lestari", "Maya", "Nur",   "Putri", "Rina",
    "Sari",  "Siti",  "Tri",   "Wulan", "Yuni",    "Ratna",   "Dian", "Intan", "Anisa", "Nadia",
    "Citra", "Endah", "Galuh", "Novi",  "Ketut",   "Nyoman",  "Lina", "Mega"};
static const char *const family_names[] = {
    "Santoso",     "Wijaya",    "Saputra",  "Hidayat",  "Pratama",   "Nasution", "Siregar",
    "Simanjuntak", "Lubis",     "Kusuma",   "Setiawan", "Gunawan",   "Purba",    "Sitompul",
    "Rahman",      "Hakim",     "Halim",    "Susanto",  "Permana",   "Wibowo",   "Harahap",
    "Tanjung",     "Ginting",   "Manurung", "Hutapea",  "Sembiring", "Putra",    "Utami",
    "Maharani",    "Anggraini", "Salim",    "Daulay"};
static const char *const positions[] = {
    "Analis Kebijakan Ahli Muda", "Analis Kebijakan Ahli Madya", "Pranata Komputer Ahli Muda",
    "Auditor Ahli Pertama",       "Perencana Ahli Muda",         "Analis SDM Aparatur Ahli Muda",
    "Arsiparis Terampil",         "Pengelola Keuangan",          "Kepala Subbagian Umum",
    "Kepala Bagian Perencanaan",  "Analis Hukum Ahli Pertama",   "Statistisi Ahli Muda"};
/* regency codes (kode wilayah) of NIKs: Jakarta, Bandung, Surabaya, Medan, Makassar,
 * Balikpapan, Penajam Paser Utara, Samarinda, Yogyakarta, Semarang, Denpasar, Padang */
static const char *const regions[] = {"317101", "327301", "357801", "127101", "737101", "647101",
                                      "640901", "647201", "347101", "337401", "517101", "137101"};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* splitmix64: the world's only source of chance */
static uint64_t
next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t
pick(uint64_t *s, uint32_t n)
{
    return (uint32_t)(next(s) % n);
}

static uint64_t
hash_key(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return h;
}

/* Finds key in table (its keys read through key_of); the slot, empty or holding it. */
typedef const char *(*key_fn)(const ikn_world *w, uint32_t index);

static size_t
slot_of(const ikn_world *w, const uint32_t *table, key_fn key_of, const char *key)
{
    size_t mask = w->n_slots - 1, i = hash_key(key) & mask;
    while (table[i] && strcmp(key_of(w, table[i] - 1), key) != 0)
        i = (i + 1) & mask;
    return i;
}

static const char *
nip_of(const ikn_world *w, uint32_t i)
{
    return w->asn[i].nip;
}

static const char *
nik_of(const ikn_world *w, uint32_t i)
{
    return w->asn[i].nik;
}

/* family NIKs are keyed by ASN index * IKN_FAMILY_MAX + member */
static const char *
family_nik_of(const ikn_world *w, uint32_t i)
{
    return w->asn[i / IKN_FAMILY_MAX].family[i % IKN_FAMILY_MAX].nik;
}

/* 1 if a NIK is taken by an ASN or a family member already */
static int
nik_taken(const ikn_world *w, const char *nik)
{
    return w->by_nik[slot_of(w, w->by_nik, nik_of, nik)] ||
           w->by_family_nik[slot_of(w, w->by_family_nik, family_nik_of, nik)];
}

/* A NIK: region, birth date (day + 40 for women), a serial; unique in the world. */
static void
make_nik(ikn_world *w, uint64_t *s, int year, int month, int day, int female, char nik[17])
{
    const char *region = regions[pick(s, N(regions))];
    for (uint32_t serial = 1 + pick(s, 9000);; serial = serial % 9999 + 1) {
        char text[64]; /* the fields are in range: 16 digits */
        snprintf(text, sizeof text, "%s%02d%02d%02d%04u", region, day + (female ? 40 : 0), month,
                 year % 100, serial);
        snprintf(nik, 17, "%.16s", text);
        if (!nik_taken(w, nik))
            return;
    }
}

static void
make_name(uint64_t *s, int woman, const char *surname, char *out, size_t n)
{
    const char *given = woman ? female_given[pick(s, N(female_given))] : male[pick(s, N(male))];
    snprintf(out, n, "%s %s", given, surname ? surname : family_names[pick(s, N(family_names))]);
}

static void
index_nip(ikn_world *w, uint32_t i)
{
    w->by_nip[slot_of(w, w->by_nip, nip_of, w->asn[i].nip)] = i + 1;
}

/* One ASN, index i: identity, position, family, and what is planted in its record. */
static void
make_asn(ikn_world *w, uint32_t i)
{
    ikn_asn *a = &w->asn[i];
    uint64_t s = w->seed ^ (0x5bd1e995ull * (i + 1));
    a->agency = &agencies[i % N(agencies)];
    a->unit = &a->agency->units[pick(&s, 4)];
    int woman = (int)pick(&s, 2);
    int year = 1965 + (int)pick(&s, 36), month = 1 + (int)pick(&s, 12), day = 1 + (int)pick(&s, 28);
    int hired = year + 22 + (int)pick(&s, 9);
    if (hired > 2024)
        hired = 2024;
    int hired_month = 1 + (int)pick(&s, 12);
    /* NIP: birth date, appointment (year, month), sex (1 man, 2 woman), a serial */
    for (uint32_t serial = 1 + pick(&s, 900);; serial = serial % 999 + 1) {
        char nip[64]; /* the fields are in range: 18 digits */
        snprintf(nip, sizeof nip, "%04d%02d%02d%04d%02d%d%03u", year, month, day, hired,
                 hired_month, woman ? 2 : 1, serial);
        snprintf(a->nip, sizeof a->nip, "%.18s", nip);
        if (!w->by_nip[slot_of(w, w->by_nip, nip_of, a->nip)])
            break;
    }
    index_nip(w, i);
    make_nik(w, &s, year, month, day, woman, a->nik);
    w->by_nik[slot_of(w, w->by_nik, nik_of, a->nik)] = i + 1;
    const char *surname = family_names[pick(&s, N(family_names))];
    make_name(&s, woman, surname, a->nama, sizeof a->nama);
    snprintf(a->jabatan, sizeof a->jabatan, "%s", positions[pick(&s, N(positions))]);
    int years = 2024 - hired;
    snprintf(a->golongan, sizeof a->golongan, "%s/%c",
             years < 4    ? "III"
             : years < 16 ? "III"
                          : "IV",
             "abcd"[years < 4 ? pick(&s, 2) : pick(&s, 4)]);
    a->fase = a->unit->fase;
    a->prioritas = pick(&s, 10) < 8 ? a->fase : 1 + (int)pick(&s, 3);
    /* the family: a spouse for most, up to three children, now and then a parent */
    a->ikut_pindah = pick(&s, 10) < 7;
    a->n_family = 0;
    if (a->ikut_pindah) {
        int spouse = 2024 - year > 26 && pick(&s, 4) != 0;
        size_t children = spouse ? pick(&s, 4) : 0, parent = pick(&s, 12) == 0;
        for (size_t k = 0; k < (size_t)spouse + children + parent && k < IKN_FAMILY_MAX; k++) {
            ikn_family_member *m = &a->family[a->n_family];
            int rel = k < (size_t)spouse ? 1 : k < (size_t)spouse + children ? 2 : 3;
            int fem = rel == 1 ? !woman : (int)pick(&s, 2);
            int by =
                rel == 1 ? year - 3 + (int)pick(&s, 7)
                : rel == 2
                    ? (year + 25 + (int)pick(&s, 12) > 2023 ? 2023 : year + 25 + (int)pick(&s, 12))
                    : year - 22 - (int)pick(&s, 10);
            m->hubungan = rel;
            m->usia = (uint32_t)(2024 - by);
            make_nik(w, &s, by, 1 + (int)pick(&s, 12), 1 + (int)pick(&s, 28), fem, m->nik);
            w->by_family_nik[slot_of(w, w->by_family_nik, family_nik_of, m->nik)] =
                i * IKN_FAMILY_MAX + (uint32_t)a->n_family + 1;
            make_name(&s, fem, rel == 3 ? NULL : surname, m->nama, sizeof m->nama);
            a->n_family++;
        }
    }
    /* competency: most clear the bar comfortably */
    a->kompetensi_umum = IKN_COMPETENCY_BAR + pick(&s, 39);
    a->kompetensi_teknis = IKN_COMPETENCY_BAR + pick(&s, 39);
    a->literasi_digital = IKN_COMPETENCY_BAR + pick(&s, 39);
    /* what is planted: at most one problem, in realistic shares */
    uint32_t r = pick(&s, 10000);
    a->problem = r < 20    ? IKN_MALFORMED
                 : r < 50  ? IKN_NO_RECORD
                 : r < 350 ? IKN_IKD_INACTIVE
                 : r < 400 ? IKN_IKD_NOT_FOUND
                 : r < 800 ? IKN_COMPETENCY_FAIL
                           : IKN_OK;
    if (a->problem == IKN_COMPETENCY_FAIL) {
        uint32_t low = 35 + pick(&s, IKN_COMPETENCY_BAR - 35);
        switch (pick(&s, 3)) {
        case 0:
            a->kompetensi_umum = low;
            break;
        case 1:
            a->kompetensi_teknis = low;
            break;
        default:
            a->literasi_digital = low;
        }
    }
    a->duplicate = a->problem != IKN_MALFORMED && pick(&s, 100) == 0;
    w->planted[a->problem]++;
    w->duplicates += (size_t)a->duplicate;
    switch (a->problem) {
    case IKN_MALFORMED:
        a->expected = SPBE__IKN__V1__STATUS_RELOKASI__TIDAK_DIKENAL;
        break;
    case IKN_NO_RECORD:
        a->expected = SPBE__IKN__V1__STATUS_RELOKASI__DITETAPKAN;
        break;
    case IKN_IKD_INACTIVE:
    case IKN_IKD_NOT_FOUND:
        a->expected = SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_IKD;
        break;
    case IKN_COMPETENCY_FAIL:
        a->expected = SPBE__IKN__V1__STATUS_RELOKASI__DITOLAK_BKN;
        break;
    default:
        a->expected = SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH;
    }
}

int
ikn_world_build(ikn_world *w, uint64_t seed, size_t n)
{
    memset(w, 0, sizeof *w);
    w->seed = seed;
    w->n_asn = n;
    w->agencies = agencies;
    w->n_agencies = N(agencies);
    w->n_slots = 16;
    while (w->n_slots < 2 * n * IKN_FAMILY_MAX)
        w->n_slots *= 2;
    w->asn = calloc(n ? n : 1, sizeof *w->asn);
    w->by_nip = calloc(w->n_slots, sizeof *w->by_nip);
    w->by_nik = calloc(w->n_slots, sizeof *w->by_nik);
    w->by_family_nik = calloc(w->n_slots, sizeof *w->by_family_nik);
    if (!w->asn || !w->by_nip || !w->by_nik || !w->by_family_nik) {
        ikn_world_free(w);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        make_asn(w, (uint32_t)i);
    return 0;
}

void
ikn_world_free(ikn_world *w)
{
    free(w->asn);
    free(w->by_nip);
    free(w->by_nik);
    free(w->by_family_nik);
    memset(w, 0, sizeof *w);
}

const ikn_asn *
ikn_find_nip(const ikn_world *w, const char *nip)
{
    uint32_t i = w->n_slots ? w->by_nip[slot_of(w, w->by_nip, nip_of, nip)] : 0;
    return i ? &w->asn[i - 1] : NULL;
}

const ikn_asn *
ikn_find_nik(const ikn_world *w, const char *nik)
{
    uint32_t i = w->n_slots ? w->by_nik[slot_of(w, w->by_nik, nik_of, nik)] : 0;
    return i ? &w->asn[i - 1] : NULL;
}

const ikn_agency *
ikn_agency_find(const ikn_world *w, const char *kode)
{
    for (size_t i = 0; i < w->n_agencies; i++)
        if (strcmp(w->agencies[i].kode, kode) == 0)
            return &w->agencies[i];
    return NULL;
}

void
ikn_message_id(uint64_t seed, const char *kind, const char *key, uint8_t id[16])
{
    crypto_generichash_state st;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(seed >> (8 * i));
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, le, sizeof le);
    crypto_generichash_update(&st, (const uint8_t *)kind, strlen(kind) + 1);
    crypto_generichash_update(&st, (const uint8_t *)key, strlen(key) + 1);
    crypto_generichash_final(&st, id, 16);
}

void
ikn_housing(const char *nip, uint32_t family, char *menara, size_t menara_len, char *unit,
            size_t unit_len, uint32_t *kamar)
{
    uint64_t h = hash_key(nip);
    unsigned tower = 1 + (unsigned)(h % 48), floor = 2 + (unsigned)(h / 48 % 23),
             room = 1 + (unsigned)(h / 48 / 23 % 12);
    snprintf(menara, menara_len, "Menara Hunian ASN %02u", tower);
    snprintf(unit, unit_len, "%02u-%02u%02u", tower, floor, room);
    *kamar = family == 0 ? 1 : family <= 2 ? 2 : 3;
}

uint64_t
ikn_allowance(int fase, uint32_t family, uint32_t *mulai)
{
    *mulai = fase <= 1 ? 202409 : fase == 2 ? 202507 : 202601;
    return 5000000ull + 750000ull * family;
}

const char *
ikn_problem_name(ikn_problem p)
{
    static const char *const names[] = {"none",           "malformed record",
                                        "no BKN record",  "IKD not activated",
                                        "NIK not in IKD", "competency below the bar"};
    return p <= IKN_COMPETENCY_FAIL ? names[p] : "?";
}
