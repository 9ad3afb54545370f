/* test_jsonpb.c - the HTTP bridge's JSON <-> protobuf conversion (adapters/bridge/jsonpb.h):
 * every kind of field both ways, the limits of each number type, and a reason naming the
 * field for everything it refuses. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jsonpb.h"
#include "jsonpb_test.pb-c.h"
#include "schema.h"
#include "spbe/errors.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "spbe/v1/spbe.pb-c.h"

#define D (&spbe__test__semua__descriptor)

static Spbe__Test__Semua *
convert(const char *json)
{
    ProtobufCMessage *m = NULL;
    jsonpb_error e;
    int rc = jsonpb_from_text(D, json, strlen(json), &m, &e);
    if (rc != SPBE_OK)
        fail_msg("'%s' refused: %s", json, e.message);
    return (Spbe__Test__Semua *)m;
}

/* Refused with code, a message containing want, and field (NULL: not checked). */
static void
refused(const ProtobufCMessageDescriptor *d, const char *json, int code, const char *want,
        const char *field)
{
    ProtobufCMessage *m = NULL;
    jsonpb_error e;
    int rc = jsonpb_from_text(d, json, strlen(json), &m, &e);
    if (rc == SPBE_OK)
        fail_msg("'%s' was accepted", json);
    assert_null(m);
    assert_int_equal(rc, code);
    assert_int_equal(e.code, code);
    if (!strstr(e.message, want))
        fail_msg("'%s': reason '%s' lacks '%s'", json, e.message, want);
    if (field)
        assert_string_equal(e.field, field);
}

/* The message packs the same after JSON and back. */
static void
round_trip(const ProtobufCMessage *m)
{
    json_t *j = jsonpb_to_json(m);
    assert_non_null(j);
    ProtobufCMessage *again = NULL;
    jsonpb_error e;
    if (jsonpb_from_json(m->descriptor, j, &again, &e) != SPBE_OK)
        fail_msg("its own JSON refused: %s", e.message);
    size_t n1 = protobuf_c_message_get_packed_size(m),
           n2 = protobuf_c_message_get_packed_size(again);
    uint8_t *b1 = malloc(n1 + 1), *b2 = malloc(n2 + 1);
    protobuf_c_message_pack(m, b1);
    protobuf_c_message_pack(again, b2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
    protobuf_c_message_free_unpacked(again, NULL);
    json_decref(j);
}

static void
test_every_field(void **state)
{
    (void)state;
    Spbe__Test__Semua *m = convert(
        "{\"i32\":-2147483648,\"s32\":-5,\"sf32\":7,\"u32\":4294967295,\"f32\":\"12\","
        "\"i64\":\"-9223372036854775808\",\"s64\":-42,\"sf64\":9007199254740993,"
        "\"u64\":\"18446744073709551615\",\"f64\":1.0e3,\"fl\":1.5,\"db\":\"-Infinity\","
        "\"b\":true,\"teks\":\"Nusantara \u00e9\",\"data\":\"AAEC/w==\",\"warna\":\"PUTIH\","
        "\"dalam\":{\"nama\":\"a\",\"nilai\":1,\"anak\":[{\"nama\":\"b\"}]},"
        "\"daftarI64\":[1,\"2\",-3],\"daftar_teks\":[\"x\",\"\"],\"daftar_warna\":[1,\"MERAH\"],"
        "\"daftar_dalam\":[{\"nama\":\"c\"},{\"nama\":\"d\",\"nilai\":-1}],"
        "\"daftar_data\":[\"_-8\",\"\"],\"daftar_db\":[0.25,\"NaN\"],\"pilih_dalam\":{\"nama\":"
        "\"e\"},\"wajib\":\"ya\",\"dengan_bawaan\":null}");
    assert_int_equal(m->i32, INT32_MIN);
    assert_int_equal(m->s32, -5);
    assert_int_equal(m->sf32, 7);
    assert_int_equal(m->u32, UINT32_MAX);
    assert_int_equal(m->f32, 12);
    assert_true(m->i64 == INT64_MIN);
    assert_true(m->s64 == -42);
    assert_true(m->sf64 == 9007199254740993LL);
    assert_true(m->u64 == UINT64_MAX);
    assert_true(m->f64 == 1000);
    assert_true(m->fl == 1.5f);
    assert_true(isinf(m->db) && m->db < 0);
    assert_true(m->has_b && m->b);
    assert_string_equal(m->teks, "Nusantara \xc3\xa9");
    assert_int_equal(m->data.len, 4);
    assert_memory_equal(m->data.data, "\x00\x01\x02\xff", 4);
    assert_int_equal(m->warna, SPBE__TEST__WARNA__PUTIH);
    assert_string_equal(m->dalam->anak[0]->nama, "b");
    assert_int_equal(m->n_daftar_i64, 3);
    assert_true(m->daftar_i64[1] == 2 && m->daftar_i64[2] == -3);
    assert_string_equal(m->daftar_teks[1], "");
    assert_int_equal(m->daftar_warna[0], SPBE__TEST__WARNA__MERAH);
    assert_int_equal(m->daftar_warna[1], SPBE__TEST__WARNA__MERAH);
    assert_int_equal(m->daftar_dalam[1]->nilai, -1);
    assert_int_equal(m->daftar_data[0].len, 2); /* URL-safe, no padding */
    assert_memory_equal(m->daftar_data[0].data, "\xff\xef", 2);
    assert_int_equal(m->daftar_data[1].len, 0);
    assert_true(isnan(m->daftar_db[1]));
    assert_int_equal(m->pilihan_case, SPBE__TEST__SEMUA__PILIHAN_PILIH_DALAM);
    assert_string_equal(m->pilih_dalam->nama, "e");
    assert_false(m->has_sf32 == 0);
    assert_string_equal(m->dengan_bawaan, "bawaan"); /* null: absent, the default stays */

    json_t *j = jsonpb_to_json(&m->base);
    assert_non_null(j);
    /* 64-bit integers as strings, enums by name, bytes base64, non-finite as names */
    assert_string_equal(json_string_value(json_object_get(j, "i64")), "-9223372036854775808");
    assert_string_equal(json_string_value(json_object_get(j, "u64")), "18446744073709551615");
    assert_int_equal(json_integer_value(json_object_get(j, "u32")), UINT32_MAX);
    assert_string_equal(json_string_value(json_object_get(j, "warna")), "PUTIH");
    assert_string_equal(json_string_value(json_object_get(j, "data")), "AAEC/w==");
    assert_string_equal(json_string_value(json_object_get(j, "db")), "-Infinity");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "daftar_db"), 1)),
                        "NaN");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "pilih_dalam"), "nama")), "e");
    assert_null(json_object_get(j, "pilih_teks"));
    assert_null(json_object_get(j, "dengan_bawaan")); /* not set */
    json_decref(j);
    round_trip(&m->base);
    spbe__test__semua__free_unpacked(m, NULL);

    /* only what is set */
    m = convert("{\"wajib\":\"\"}");
    j = jsonpb_to_json(&m->base);
    assert_int_equal(json_object_size(j), 1);
    json_decref(j);
    round_trip(&m->base);
    spbe__test__semua__free_unpacked(m, NULL);
}

static void
test_numbers(void **state)
{
    (void)state;
    refused(D, "{\"wajib\":\"\",\"i32\":2147483648}", SPBE_SCHEMA_MISMATCH,
            "field 'i32' must be an integer from -2147483648 to 2147483647, not 2147483648", "i32");
    refused(D, "{\"wajib\":\"\",\"u32\":-1}", SPBE_SCHEMA_MISMATCH, "not -1", "u32");
    refused(D, "{\"wajib\":\"\",\"s32\":1.5}", SPBE_SCHEMA_MISMATCH, "not 1.5", "s32");
    refused(D, "{\"wajib\":\"\",\"i64\":\"12x\"}", SPBE_SCHEMA_MISMATCH, "64-bit integer", "i64");
    refused(D, "{\"wajib\":\"\",\"i64\":\" 12\"}", SPBE_SCHEMA_MISMATCH, "64-bit integer", "i64");
    refused(D, "{\"wajib\":\"\",\"i64\":\"9223372036854775808\"}", SPBE_SCHEMA_MISMATCH,
            "64-bit integer", "i64");
    refused(D, "{\"wajib\":\"\",\"u64\":\"-1\"}", SPBE_SCHEMA_MISMATCH, "unsigned 64-bit", "u64");
    refused(D, "{\"wajib\":\"\",\"u64\":\"18446744073709551616\"}", SPBE_SCHEMA_MISMATCH,
            "unsigned 64-bit", "u64");
    refused(D, "{\"wajib\":\"\",\"fl\":1e39}", SPBE_SCHEMA_MISMATCH, "float's range", "fl");
    refused(D, "{\"wajib\":\"\",\"db\":\"banyak\"}", SPBE_SCHEMA_MISMATCH, "must be a number",
            "db");
    refused(D, "{\"wajib\":\"\",\"b\":1}", SPBE_SCHEMA_MISMATCH, "must be true or false", "b");
    refused(D, "{\"wajib\":\"\",\"i32\":true}", SPBE_SCHEMA_MISMATCH, "not a boolean", "i32");
    Spbe__Test__Semua *m = convert("{\"wajib\":\"\",\"i32\":3.0,\"u64\":18446744073709551}");
    assert_int_equal(m->i32, 3);
    assert_true(m->u64 == 18446744073709551ULL);
    spbe__test__semua__free_unpacked(m, NULL);
}

static void
test_refusals(void **state)
{
    (void)state;
    refused(D, "{\"wajib\":\"\",", SPBE_BAD_REQUEST, "not valid JSON", "");
    refused(D, "{\"wajib\":\"\",\"wajib\":\"\"}", SPBE_BAD_REQUEST, "duplicate", "");
    refused(D, "[]", SPBE_SCHEMA_MISMATCH, "must be a JSON object (spbe.test.Semua), not an array",
            "");
    refused(D, "{\"wajib\":\"\",\"lain\":1}", SPBE_SCHEMA_MISMATCH,
            "unknown field 'lain' (spbe.test.Semua has no such field)", "lain");
    refused(D, "{\"i32\":1}", SPBE_SCHEMA_MISMATCH, "required field 'wajib' of spbe.test.Semua",
            "wajib");
    refused(D, "{\"wajib\":null}", SPBE_SCHEMA_MISMATCH, "required field 'wajib'", "wajib");
    refused(D, "{\"wajib\":\"\",\"dalam\":{\"nama\":\"a\",\"anak\":[{\"nama\":\"b\"},{}]}}",
            SPBE_SCHEMA_MISMATCH, "required field 'dalam.anak[1].nama' of spbe.test.Dalam",
            "dalam.anak[1].nama");
    refused(D, "{\"wajib\":\"\",\"daftar_dalam\":[{\"nama\":\"a\",\"x\":1}]}", SPBE_SCHEMA_MISMATCH,
            "unknown field 'daftar_dalam[0].x'", "daftar_dalam[0].x");
    refused(D, "{\"wajib\":\"\",\"teks\":5}", SPBE_SCHEMA_MISMATCH,
            "field 'teks' must be a string, not a number", "teks");
    refused(D, "{\"wajib\":\"\",\"data\":\"***\"}", SPBE_SCHEMA_MISMATCH, "base64", "data");
    refused(D, "{\"wajib\":\"\",\"warna\":\"HIJAU\"}", SPBE_SCHEMA_MISMATCH,
            "field 'warna' has \"HIJAU\", not a value of spbe.test.Warna", "warna");
    refused(D, "{\"wajib\":\"\",\"warna\":7}", SPBE_SCHEMA_MISMATCH, "has 7", "warna");
    refused(D, "{\"wajib\":\"\",\"dalam\":[]}", SPBE_SCHEMA_MISMATCH,
            "field 'dalam' must be an object (spbe.test.Dalam), not an array", "dalam");
    refused(D, "{\"wajib\":\"\",\"daftar_teks\":\"x\"}", SPBE_SCHEMA_MISMATCH, "must be an array",
            "daftar_teks");
    refused(D, "{\"wajib\":\"\",\"daftar_teks\":[\"x\",1]}", SPBE_SCHEMA_MISMATCH,
            "field 'daftar_teks[1]' must be a string", "daftar_teks[1]");
    refused(D, "{\"wajib\":\"\",\"pilih_teks\":\"a\",\"pilih_angka\":1}", SPBE_SCHEMA_MISMATCH,
            "members of one oneof", "pilih_angka");
    refused(D, "{\"wajib\":\"\",\"daftar_teks\":[],\"daftarTeks\":[]}", SPBE_SCHEMA_MISMATCH,
            "given twice", "daftar_teks");
}

static void
test_domain(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = schema_find("spbe.ikn.v1.SkenarioKeluarga");
    const char *json = "{\"nip\":\"199003152015031002\",\"ikut_pindah\":false,\"anggota\":["
                       "{\"nik\":\"6472014101920003\",\"nama\":\"Dewi\",\"hubungan\":\"ANAK\"}]}";
    ProtobufCMessage *m;
    jsonpb_error e;
    assert_int_equal(jsonpb_from_text(d, json, strlen(json), &m, &e), SPBE_OK);
    char why[256];
    assert_int_equal(schema_check_message(m, why, sizeof why), SPBE_OK);
    json_t *j = jsonpb_to_json(m);
    char *text = json_dumps(j, JSON_COMPACT);
    assert_string_equal(text, json); /* in field order, the .proto names */
    free(text);
    json_decref(j);
    round_trip(m);
    protobuf_c_message_free_unpacked(m, NULL);
    /* converted, but not a valid NIK: the strict check says so */
    json = "{\"nip\":\"199003152015031002\",\"ikut_pindah\":true,\"anggota\":["
           "{\"nik\":\"64720141\",\"nama\":\"Dewi\",\"hubungan\":\"ANAK\"}]}";
    assert_int_equal(jsonpb_from_text(d, json, strlen(json), &m, &e), SPBE_OK);
    assert_int_equal(schema_check_message(m, why, sizeof why), SPBE_SCHEMA_MISMATCH);
    assert_non_null(strstr(why, "field 'anggota[0].nik' must be 16 digits"));
    protobuf_c_message_free_unpacked(m, NULL);

    /* proto3: zero values are left out, 64-bit fields are strings */
    Spbe__V1__DeadLetter dl = SPBE__V1__DEAD_LETTER__INIT;
    dl.consumer = "portal";
    dl.topic = "ikn.relokasi.asn.bkn";
    dl.sequence = 12;
    dl.message.data = (uint8_t *)"\x01\x02";
    dl.message.len = 2;
    j = jsonpb_to_json(&dl.base);
    assert_string_equal(json_string_value(json_object_get(j, "sequence")), "12");
    assert_string_equal(json_string_value(json_object_get(j, "message")), "AQI=");
    assert_null(json_object_get(j, "reason"));
    assert_null(json_object_get(j, "accepted_ns"));
    json_decref(j);
    round_trip(&dl.base);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_field),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
