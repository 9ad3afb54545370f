/* fuzz_jsonpb.c - the HTTP bridge's JSON -> protobuf conversion (adapters/bridge/jsonpb.h)
 * on arbitrary text: the first byte picks the type (the bus's schemas and a test type with
 * every kind of field), the rest is the request body. Every refusal is BAD_REQUEST or
 * SCHEMA_MISMATCH with a reason; whatever converts goes to JSON and back to the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jsonpb.h"
#include "jsonpb_test.pb-c.h"
#include "schema.h"
#include "spbe/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *
pick(uint8_t b)
{
    size_t n = 0;
    while (schema_at(n))
        n++;
    size_t i = b % (n + 2);
    return i < n    ? schema_at(i)
           : i == n ? &spbe__test__semua__descriptor
                    : &spbe__test__dalam__descriptor;
}

static uint8_t *
packed(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    protobuf_c_message_pack(m, buf);
    return buf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = pick(data[0]);
    ProtobufCMessage *m = NULL;
    jsonpb_error e;
    int rc = jsonpb_from_text(d, (const char *)data + 1, size - 1, &m, &e);
    if (rc != SPBE_OK) {
        if (m || !e.message[0] || (rc != SPBE_BAD_REQUEST && rc != SPBE_SCHEMA_MISMATCH))
            __builtin_trap();
        return 0;
    }
    if (!protobuf_c_message_check(m))
        __builtin_trap(); /* required fields are all there */
    char why[320];
    (void)schema_check_message(m, why, sizeof why);
    json_t *j = jsonpb_to_json(m);
    if (!j)
        __builtin_trap();
    ProtobufCMessage *again = NULL;
    if (jsonpb_from_json(d, j, &again, &e) != SPBE_OK)
        __builtin_trap();
    size_t n1, n2;
    uint8_t *b1 = packed(m, &n1), *b2 = packed(again, &n2);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0)
        __builtin_trap();
    /* and the bytes decode as the type again */
    ProtobufCMessage *u = protobuf_c_message_unpack(d, NULL, n1, b1);
    if (!u)
        __builtin_trap();
    protobuf_c_message_free_unpacked(u, NULL);
    free(b1);
    free(b2);
    protobuf_c_message_free_unpacked(again, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
    return 0;
}
