/*
 * jsonpb.h - JSON <-> protobuf, generically from a protobuf-c descriptor, for the HTTP
 * bridge (and anything else that meets JSON): the mapping of protobuf's JSON format with
 * the .proto field names.
 *
 *   scalars      numbers; 64-bit integers as strings or numbers (written as strings);
 *                floats also "NaN", "Infinity", "-Infinity"; bools true/false
 *   enums        by name ("FASE_1") or by number (1); written by name
 *   bytes        base64 (standard or URL-safe, padding optional); written standard
 *   messages     objects; repeated fields arrays; null is an absent field
 *   names        the .proto name ("kode_unit") or its lowerCamelCase form ("kodeUnit")
 *
 * Strict: a key the type does not declare, a value of the wrong type or out of range, an
 * undeclared enum name or number, a missing required field, two members of one oneof are
 * refused with a reason naming the field by its path ("anggota[1].nik").
 */
#ifndef SPBE_JSONPB_H
#define SPBE_JSONPB_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

/* Why a conversion failed. */
typedef struct jsonpb_error {
    int code;          /* SPBE_BAD_REQUEST (not JSON) or SPBE_SCHEMA_MISMATCH */
    char field[160];   /* the field's path, "" when not about one field */
    char message[320]; /* "field 'nip' must be a string, not a number" */
} jsonpb_error;

/*
 * Converts the JSON object j to a message of type d. SPBE_OK with *out (free with
 * protobuf_c_message_free_unpacked(*out, NULL)), or an error described in *err.
 */
int jsonpb_from_json(const ProtobufCMessageDescriptor *d, const json_t *j, ProtobufCMessage **out,
                     jsonpb_error *err);

/* The same from JSON text (UTF-8, len bytes; duplicate keys refused). */
int jsonpb_from_text(const ProtobufCMessageDescriptor *d, const char *text, size_t len,
                     ProtobufCMessage **out, jsonpb_error *err);

/* The message as a new JSON object (every field that is set), or NULL without memory. */
json_t *jsonpb_to_json(const ProtobufCMessage *m);

/* base64 (standard alphabet, padded) of data as a new JSON string, or NULL. */
json_t *jsonpb_base64(const void *data, size_t len);

#endif
