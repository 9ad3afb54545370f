/* fuzz_schema.c - the strict payload check the broker applies on topics bound to a schema
 * (schema_check) on arbitrary bytes: the first byte picks the type, the rest is the
 * payload. Every refusal says why; whatever passes packs again into bytes that pass. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"
#include "spbe/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n_types = 0;
    while (schema_at(n_types))
        n_types++;
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = schema_at(data[0] % n_types);
    char why[320] = "";
    int rc = schema_check(d, data + 1, size - 1, why, sizeof why);
    if (rc != SPBE_OK && (rc != SPBE_SCHEMA_MISMATCH || !why[0]))
        __builtin_trap();
    if (rc == SPBE_OK) {
        ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
        if (!m || schema_check_message(m, why, sizeof why) != SPBE_OK)
            __builtin_trap();
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *again = malloc(len ? len : 1);
        protobuf_c_message_pack(m, again);
        if (schema_check(d, again, len, why, sizeof why) != SPBE_OK)
            __builtin_trap();
        free(again);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
