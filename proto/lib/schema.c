/* schema.c - known payload schemas and their strict check (schema.h). */
#include "schema.h"

#include <stdio.h>
#include <string.h>

#include "spbe/errors.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "spbe/v1/spbe.pb-c.h"

static const ProtobufCMessageDescriptor *const known[] = {
    &spbe__ikn__v1__skenario_unit__descriptor,
    &spbe__ikn__v1__skenario_asn__descriptor,
    &spbe__ikn__v1__permintaan_verifikasi_ikd__descriptor,
    &spbe__ikn__v1__hasil_verifikasi_ikd__descriptor,
    &spbe__ikn__v1__permintaan_pemeriksaan_bkn__descriptor,
    &spbe__ikn__v1__hasil_pemeriksaan_bkn__descriptor,
    &spbe__ikn__v1__anggota_keluarga__descriptor,
    &spbe__ikn__v1__skenario_keluarga__descriptor,
    &spbe__ikn__v1__alokasi_hunian__descriptor,
    &spbe__ikn__v1__tunjangan_pionir__descriptor,
    &spbe__ikn__v1__permintaan_status__descriptor,
    &spbe__ikn__v1__status_asn__descriptor,
    &spbe__ikn__v1__ringkasan_portal__descriptor,
    &spbe__ikn__v1__jawaban_status__descriptor,
    &spbe__v1__dead_letter__descriptor,
    &spbe__v1__signed_tree_head__descriptor,
    &spbe__v1__signed_broker_key_rotation__descriptor,
};

const ProtobufCMessageDescriptor *
schema_find(const char *type)
{
    for (size_t i = 0; type && i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i]->name, type) == 0)
            return known[i];
    return NULL;
}

const ProtobufCMessageDescriptor *
schema_at(size_t i)
{
    return i < sizeof known / sizeof known[0] ? known[i] : NULL;
}

int
schema_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t more;
        unsigned min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            more = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= more)
            return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += more + 1;
    }
    return 1;
}

static int
digits(const char *s, size_t want)
{
    size_t n = strlen(s);
    if (n != want)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int
mismatch(char *why, size_t why_len, const char *path, const char *what)
{
    snprintf(why, why_len, "field '%s' %s", path, what);
    return SPBE_SCHEMA_MISMATCH;
}

static int check_message(const ProtobufCMessage *m, const char *prefix, char *why, size_t why_len);

/* One value of field f (element of a repeated one or the single value) at p. */
static int
check_value(const ProtobufCFieldDescriptor *f, const void *p, const char *path, char *why,
            size_t why_len)
{
    char what[96];
    switch (f->type) {
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        /* zero is "unspecified" in the domain's (proto2) enums; proto3 fields default to it */
        if ((v == 0 && f->label != PROTOBUF_C_LABEL_NONE) ||
            !protobuf_c_enum_descriptor_get_value(f->descriptor, v)) {
            snprintf(what, sizeof what, "has %d, not a value of %s", v,
                     ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
            return mismatch(why, why_len, path, what);
        }
        return SPBE_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        if (!s)
            return SPBE_OK;
        if (!schema_utf8_valid((const uint8_t *)s, strlen(s)))
            return mismatch(why, why_len, path, "is not valid UTF-8");
        size_t want = strcmp(f->name, "nip") == 0 ? 18 : strcmp(f->name, "nik") == 0 ? 16 : 0;
        if (want && !digits(s, want)) {
            snprintf(what, sizeof what, "must be %zu digits, not \"%.24s\"", want, s);
            return mismatch(why, why_len, path, what);
        }
        return SPBE_OK;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return check_message(*(const ProtobufCMessage *const *)p, path, why, why_len);
    default:
        return SPBE_OK;
    }
}

size_t
schema_value_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    default:
        return sizeof(uint32_t);
    }
}

static int
check_message(const ProtobufCMessage *m, const char *prefix, char *why, size_t why_len)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (m->n_unknown_fields) {
        snprintf(why, why_len, "%s%sfield number %u is not in %s", prefix, *prefix ? ": " : "",
                 m->unknown_fields[0].tag, d->name);
        return SPBE_SCHEMA_MISMATCH;
    }
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char path[160];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", f->name);
        const void *value = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(const char *const *)value;
            for (size_t k = 0; k < n; k++) {
                char item[184];
                snprintf(item, sizeof item, "%s[%zu]", path, k);
                int rc = check_value(f, arr + k * schema_value_size(f), item, why, why_len);
                if (rc != SPBE_OK)
                    return rc;
            }
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of its oneof */
        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && f->label == PROTOBUF_C_LABEL_OPTIONAL &&
            f->quantifier_offset && !*(const protobuf_c_boolean *)(base + f->quantifier_offset))
            continue; /* absent scalar */
        if ((f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING) &&
            !*(const void *const *)value)
            continue; /* absent optional message or string */
        int rc = check_value(f, value, path, why, why_len);
        if (rc != SPBE_OK)
            return rc;
    }
    return SPBE_OK;
}

int
schema_check_message(const ProtobufCMessage *m, char *why, size_t why_len)
{
    if (!protobuf_c_message_check(m)) {
        snprintf(why, why_len, "a required field of %s is missing", m->descriptor->name);
        return SPBE_SCHEMA_MISMATCH;
    }
    return check_message(m, "", why, why_len);
}

/* Reads a varint at *p (< end); 0 on success. */
static int
varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* Why data did not unpack as d: the first required field it lacks at the top level, or
 * "malformed" when its wire format itself is broken. */
static void
explain_failure(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *why,
                size_t why_len)
{
    const uint8_t *p = data, *end = data + len;
    uint32_t seen[64] = {0}; /* field numbers 1..2047 */
    while (p < end) {
        uint64_t key, n;
        if (varint(&p, end, &key) || (key >> 3) == 0)
            goto malformed;
        uint64_t num = key >> 3;
        if (num < 2048)
            seen[num / 32] |= 1u << (num % 32);
        switch (key & 7) {
        case 0:
            if (varint(&p, end, &n))
                goto malformed;
            break;
        case 1:
            if (end - p < 8)
                goto malformed;
            p += 8;
            break;
        case 2:
            if (varint(&p, end, &n) || n > (uint64_t)(end - p))
                goto malformed;
            p += n;
            break;
        case 5:
            if (end - p < 4)
                goto malformed;
            p += 4;
            break;
        default:
            goto malformed;
        }
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REQUIRED && f->id < 2048 &&
            !(seen[f->id / 32] & (1u << (f->id % 32)))) {
            snprintf(why, why_len, "required field '%s' of %s is missing", f->name, d->name);
            return;
        }
    }
    snprintf(why, why_len,
             "does not decode as %s (a field of the wrong type or a nested "
             "message that does not decode)",
             d->name);
    return;
malformed:
    snprintf(why, why_len, "is not a protobuf message (malformed at byte %zu of %zu)",
             (size_t)(p - data), len);
}

int
schema_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *why,
             size_t why_len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, data);
    if (!m) {
        explain_failure(d, data, len, why, why_len);
        return SPBE_SCHEMA_MISMATCH;
    }
    int rc = check_message(m, "", why, why_len);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}
