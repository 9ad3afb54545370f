/* process.c - the reference process's bindings and members (process.h). */
#include "process.h"

#include <string.h>

const char *const ikn_topic_schemas[] = {
    "ikn.relokasi.unit.*=spbe.ikn.v1.SkenarioUnit",
    "ikn.relokasi.asn.*=spbe.ikn.v1.SkenarioAsn",
    "ikn.relokasi.pemeriksaan=spbe.ikn.v1.HasilPemeriksaanBkn",
    "ikn.relokasi.keluarga=spbe.ikn.v1.SkenarioKeluarga",
    "ikn.relokasi.hunian=spbe.ikn.v1.AlokasiHunian",
    "ikn.relokasi.tunjangan=spbe.ikn.v1.TunjanganPionir",
    "ikn.relokasi.status=spbe.ikn.v1.StatusAsn",
};
const size_t ikn_n_topic_schemas = sizeof ikn_topic_schemas / sizeof ikn_topic_schemas[0];

const char *const ikn_service_schemas[] = {
    "dukcapil.ikd.verifikasi=spbe.ikn.v1.PermintaanVerifikasiIkd,spbe.ikn.v1.HasilVerifikasiIkd",
    "bkn.siasn.pemeriksaan=spbe.ikn.v1.PermintaanPemeriksaanBkn,spbe.ikn.v1.HasilPemeriksaanBkn",
    "portal.status=spbe.ikn.v1.PermintaanStatus,spbe.ikn.v1.JawabanStatus",
};
const size_t ikn_n_service_schemas = sizeof ikn_service_schemas / sizeof ikn_service_schemas[0];

size_t
ikn_members(const ikn_world *w, ikn_member *out, char (*pubs)[2][96])
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_agencies && n < IKN_MEMBERS_MAX - 6; i++) {
        ikn_member *m = &out[n++];
        memset(m, 0, sizeof *m);
        snprintf(m->name, sizeof m->name, "%s/simpeg", w->agencies[i].kode);
        m->role = "kl";
        m->instansi = w->agencies[i].kode;
        snprintf(pubs[i][0], sizeof pubs[i][0], "ikn.relokasi.unit.%s", w->agencies[i].kode);
        snprintf(pubs[i][1], sizeof pubs[i][1], "ikn.relokasi.asn.%s", w->agencies[i].kode);
        m->pub[0] = pubs[i][0];
        m->pub[1] = pubs[i][1];
    }
    static const ikn_member fixed[] = {
        {"dukcapil/ikd", "dukcapil", NULL, {0}, {0}, {"dukcapil.ikd.verifikasi"}, {0}, {0}},
        {"bkn/siasn",
         "bkn",
         NULL,
         {"ikn.relokasi.pemeriksaan"},
         {"ikn.relokasi.asn.*"},
         {"bkn.siasn.pemeriksaan"},
         {"dukcapil.ikd.verifikasi"},
         {0}},
        {"portal/layanan-asn",
         "portal",
         NULL,
         {"ikn.relokasi.keluarga", "ikn.relokasi.status"},
         {"ikn.relokasi.>"},
         {"portal.status"},
         {0},
         {0}},
        {"oikn/hunian",
         "hunian",
         NULL,
         {"ikn.relokasi.hunian"},
         {"ikn.relokasi.status"},
         {0},
         {0},
         {0}},
        {"kemenkeu/tunjangan",
         "tunjangan",
         NULL,
         {"ikn.relokasi.tunjangan"},
         {"ikn.relokasi.status"},
         {0},
         {0},
         {0}},
        {"spbe/pengamat",
         NULL,
         NULL,
         {0},
         {0},
         {0},
         {"portal.status", "bkn.siasn.pemeriksaan"},
         {"ops"}},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        out[n++] = fixed[i];
    return n;
}

void
ikn_write_bindings(FILE *f)
{
    fprintf(f, "schema = [\n");
    for (size_t i = 0; i < ikn_n_topic_schemas; i++)
        fprintf(f, "  \"%s\"%s\n", ikn_topic_schemas[i], i + 1 < ikn_n_topic_schemas ? "," : "");
    fprintf(f, "];\nservice_schema = [\n");
    for (size_t i = 0; i < ikn_n_service_schemas; i++)
        fprintf(f, "  \"%s\"%s\n", ikn_service_schemas[i],
                i + 1 < ikn_n_service_schemas ? "," : "");
    fprintf(f, "];\n");
}
