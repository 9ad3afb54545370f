/*
 * schema.h - the payload schemas the bus knows by name, and the strict check the broker
 * applies to a payload on a topic bound to one (SCHEMA_MISMATCH otherwise).
 *
 * Known are the domain schemas (package spbe.ikn.v1, proto/spbe/ikn/v1/relokasi.proto)
 * and the wire protocol's own payload types (spbe.v1.DeadLetter, spbe.v1.SignedTreeHead,
 * spbe.v1.SignedBrokerKeyRotation).
 */
#ifndef SPBE_SCHEMA_H
#define SPBE_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* The descriptor of a known type by its full name ("spbe.ikn.v1.SkenarioAsn"), or NULL. */
const ProtobufCMessageDescriptor *schema_find(const char *type);
/* The known types, i from 0 while it returns non-NULL. */
const ProtobufCMessageDescriptor *schema_at(size_t i);

/*
 * Checks that data decodes as d, strictly: every required field present, no unknown
 * field, enum values declared and not the zero "unspecified" value, strings valid UTF-8,
 * fields named nip 18 digits and nik 16 digits, at any depth. SPBE_OK, or
 * SPBE_SCHEMA_MISMATCH with the first reason found in why ("field 'nip' must be 18
 * digits, not 17 characters").
 */
int schema_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *why,
                 size_t why_len);

/* The size of one value of field f in a protobuf-c message struct or repeated array. */
size_t schema_value_size(const ProtobufCFieldDescriptor *f);

/* 1 if s[0..n) is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
int schema_utf8_valid(const uint8_t *s, size_t n);

/* The same check on a decoded message (for payloads made in the process, e.g. from JSON). */
int schema_check_message(const ProtobufCMessage *m, char *why, size_t why_len);

#endif
