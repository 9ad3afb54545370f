/*
 * world.h - the synthetic but realistic world of the reference process, generated
 * deterministically from a seed: ministries (K/L) and their units, civil servants (ASN)
 * with NIP and NIK, families, IKD activation, BKN records and competency scores, and
 * the problems planted among them. Every adapter builds the same world from the same
 * seed and plays its agency's part of it; the tests and the demo hold the result
 * against the ground truth (ikn_asn.expected).
 */
#ifndef SPBE_IKN_WORLD_H
#define SPBE_IKN_WORLD_H

#include <stddef.h>
#include <stdint.h>

#define IKN_FAMILY_MAX 5

typedef struct ikn_unit {
    const char *kode, *nama;
    int fase;            /* 1..3 */
    const char *menara;  /* the shared office tower it moves into */
    uint32_t jumlah_asn; /* filled in by the generator */
} ikn_unit;

typedef struct ikn_agency {
    const char *kode, *nama; /* "kemenkeu", "Kementerian Keuangan" */
    ikn_unit units[4];
} ikn_agency;

/* What was planted in one ASN's record; at most one of these per ASN, and where it ends. */
typedef enum ikn_problem {
    IKN_OK = 0,
    IKN_MALFORMED,       /* the ministry's record has a 17-digit NIP: SCHEMA_MISMATCH */
    IKN_NO_RECORD,       /* BKN has no record (SIASN): BKN dead-letters the scenario */
    IKN_IKD_INACTIVE,    /* IKD not activated: DITOLAK_IKD */
    IKN_IKD_NOT_FOUND,   /* no such NIK in IKD: DITOLAK_IKD */
    IKN_COMPETENCY_FAIL, /* a competency score under the bar: DITOLAK_BKN */
} ikn_problem;

typedef struct ikn_family_member {
    char nik[17], nama[48];
    int hubungan; /* 1 spouse, 2 child, 3 parent (spbe.ikn.v1.Hubungan) */
    uint32_t usia;
} ikn_family_member;

typedef struct ikn_asn {
    char nip[19], nik[17], nama[48], jabatan[48], golongan[8];
    const ikn_agency *agency;
    const ikn_unit *unit;
    int prioritas, fase;
    ikn_problem problem;
    int duplicate; /* the ministry submits the scenario a second time, as a new message */
    uint32_t kompetensi_umum, kompetensi_teknis, literasi_digital;
    int ikut_pindah; /* the family moves along */
    size_t n_family;
    ikn_family_member family[IKN_FAMILY_MAX];
    int expected; /* the final spbe.ikn.v1.StatusRelokasi (TIDAK_DIKENAL if malformed) */
} ikn_asn;

typedef struct ikn_world {
    uint64_t seed;
    size_t n_asn;
    ikn_asn *asn;
    const ikn_agency *agencies;
    size_t n_agencies;
    /* open addressing, n_slots a power of two: index + 1, 0 for empty */
    uint32_t *by_nip, *by_nik, *by_family_nik;
    size_t n_slots;
    size_t planted[IKN_COMPETENCY_FAIL + 1], duplicates;
} ikn_world;

/* Builds the world of n ASN from seed. 0, or -1 when out of memory. */
int ikn_world_build(ikn_world *w, uint64_t seed, size_t n);
void ikn_world_free(ikn_world *w);

/* The ASN by NIP or NIK, or NULL. ikn_find_family finds a family member's ASN by NIK. */
const ikn_asn *ikn_find_nip(const ikn_world *w, const char *nip);
const ikn_asn *ikn_find_nik(const ikn_world *w, const char *nik);

/* An agency by its code ("kemenkeu"), or NULL. */
const ikn_agency *ikn_agency_find(const ikn_world *w, const char *kode);

/* The competency bar: each score at least this. */
#define IKN_COMPETENCY_BAR 60

/* A message id derived from the seed, a kind and a key (NIP, unit code...), so that an
 * adapter started again sends the same messages and the broker's dedup stores each once. */
void ikn_message_id(uint64_t seed, const char *kind, const char *key, uint8_t id[16]);

/* The housing the IKN Authority allocates to nip with family members moving along. */
void ikn_housing(const char *nip, uint32_t family, char *menara, size_t menara_len, char *unit,
                 size_t unit_len, uint32_t *kamar);
/* The pioneer allowance Kemenkeu sets, per month, and its first month (YYYYMM). */
uint64_t ikn_allowance(int fase, uint32_t family, uint32_t *mulai);

/* The name of a problem, for summaries. */
const char *ikn_problem_name(ikn_problem p);

#endif
