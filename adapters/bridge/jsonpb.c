/* jsonpb.c - JSON <-> protobuf from protobuf-c descriptors (jsonpb.h). */
#include "jsonpb.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "schema.h"
#include "spbe/errors.h"

static int fail(jsonpb_error *err, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(jsonpb_error *err, int code, const char *path, const char *fmt, ...)
{
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", path ? path : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

static const char *
json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* What v is, for a reason: the number itself, or its kind. */
static const char *
describe(const json_t *v, char *buf, size_t n)
{
    if (json_is_integer(v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, n, "%.17g", json_real_value(v));
    else if (json_is_string(v))
        snprintf(buf, n, "\"%.40s\"", json_string_value(v));
    else
        snprintf(buf, n, "%s", json_kind(v));
    return buf;
}

/* 1 if key names f: its .proto name or the lowerCamelCase form of it. */
static int
names_field(const char *key, const char *name)
{
    if (strcmp(key, name) == 0)
        return 1;
    const char *k = key;
    for (const char *p = name; *p; p++) {
        if (*p == '_' && p[1] >= 'a' && p[1] <= 'z') {
            if (*k++ != p[1] - 'a' + 'A')
                return 0;
            p++;
        } else if (*k++ != *p) {
            return 0;
        }
    }
    return *k == '\0';
}

/* A whole JSON value as a signed integer in [min, max]; 0 on success. */
static int
get_signed(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < min || x > max)
            return -1;
        *out = x;
        return 0;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (x != floor(x) || x < (double)min || x >= -(double)INT64_MIN || x > (double)max)
            return -1;
        *out = (int64_t)x;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
            return -1;
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno || *end || x < min || x > max)
            return -1;
        *out = x;
        return 0;
    }
    return -1;
}

static int
get_unsigned(const json_t *v, uint64_t max, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || (uint64_t)x > max)
            return -1;
        *out = (uint64_t)x;
        return 0;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (x != floor(x) || x < 0 || x >= 18446744073709551616.0 || x > (double)max)
            return -1;
        *out = (uint64_t)x;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!(*s >= '0' && *s <= '9'))
            return -1;
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || *end || x > max)
            return -1;
        *out = x;
        return 0;
    }
    return -1;
}

static int
get_double(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    if (strcmp(s, "NaN") == 0)
        *out = NAN;
    else if (strcmp(s, "Infinity") == 0)
        *out = INFINITY;
    else if (strcmp(s, "-Infinity") == 0)
        *out = -INFINITY;
    else {
        if (!((*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
            return -1;
        char *end;
        errno = 0;
        *out = strtod(s, &end);
        if (errno || *end || !isfinite(*out))
            return -1;
    }
    return 0;
}

static int
get_bytes(const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return -1;
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        size_t len;
        const char *end;
        if (sodium_base642bin(buf, n / 4 * 3 + 3, s, n, NULL, &len, &end, variants[i]) == 0 &&
            end == s + n) {
            out->data = buf;
            out->len = len;
            return 0;
        }
    }
    free(buf);
    return -1;
}

static int from_object(const ProtobufCMessageDescriptor *d, const json_t *j, const char *path,
                       ProtobufCMessage **out, jsonpb_error *err);

/* One value of field f from v into p (a field of a message or an element of an array). */
static int
set_value(const ProtobufCFieldDescriptor *f, const json_t *v, void *p, const char *path,
          jsonpb_error *err)
{
    int64_t s;
    uint64_t u;
    double x;
    char shown[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_signed(v, INT32_MIN, INT32_MAX, &s))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be an integer from %d to %d, not %s", path, INT32_MIN,
                        INT32_MAX, describe(v, shown, sizeof shown));
        *(int32_t *)p = (int32_t)s;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_unsigned(v, UINT32_MAX, &u))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be an integer from 0 to %u, not %s", path, UINT32_MAX,
                        describe(v, shown, sizeof shown));
        *(uint32_t *)p = (uint32_t)u;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_signed(v, INT64_MIN, INT64_MAX, &s))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be a 64-bit integer (a number or a string of digits), "
                        "not %s",
                        path, describe(v, shown, sizeof shown));
        *(int64_t *)p = s;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (get_unsigned(v, UINT64_MAX, &u))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be an unsigned 64-bit integer (a number or a string of "
                        "digits), not %s",
                        path, describe(v, shown, sizeof shown));
        *(uint64_t *)p = u;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_FLOAT:
        if (get_double(v, &x) || (isfinite(x) && fabs(x) > FLT_MAX))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be a number within float's range, not %s", path,
                        describe(v, shown, sizeof shown));
        *(float *)p = (float)x;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (get_double(v, &x))
            return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' must be a number, not %s",
                        path, describe(v, shown, sizeof shown));
        *(double *)p = x;
        return SPBE_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' must be true or false, not %s",
                        path, json_kind(v));
        *(protobuf_c_boolean *)p = json_is_true(v);
        return SPBE_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v))
            ev = protobuf_c_enum_descriptor_get_value_by_name(e, json_string_value(v));
        else if (get_signed(v, INT32_MIN, INT32_MAX, &s) == 0)
            ev = protobuf_c_enum_descriptor_get_value(e, (int)s);
        if (!ev) {
            describe(v, shown, sizeof shown);
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' has %s, not a value of %s (a name such as \"%s\" or its "
                        "number)",
                        path, shown, e->name, e->n_values ? e->values[e->n_values - 1].name : "");
        }
        *(int *)p = ev->value;
        return SPBE_OK;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v))
            return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' must be a string, not %s",
                        path, json_kind(v));
        char *str = strdup(json_string_value(v));
        if (!str)
            return fail(err, SPBE_INTERNAL, path, "out of memory");
        *(char **)p = str;
        return SPBE_OK;
    }
    case PROTOBUF_C_TYPE_BYTES:
        if (get_bytes(v, p))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be a base64 string, not %s", path,
                        json_is_string(v) ? "something else" : json_kind(v));
        return SPBE_OK;
    case PROTOBUF_C_TYPE_MESSAGE:
        if (!json_is_object(v))
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "field '%s' must be an object (%s), not %s", path,
                        ((const ProtobufCMessageDescriptor *)f->descriptor)->name, json_kind(v));
        return from_object(f->descriptor, v, path, (ProtobufCMessage **)p, err);
    }
    return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' has a type this bridge cannot fill",
                path);
}

static void
join(char *out, size_t n, const char *prefix, const char *name)
{
    snprintf(out, n, "%s%s%s", prefix, *prefix ? "." : "", name);
}

static int
fill(const ProtobufCMessageDescriptor *d, const json_t *j, const char *prefix, ProtobufCMessage *m,
     jsonpb_error *err)
{
    char *base = (char *)m;
    unsigned char seen[512] = {0};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v)
    {
        const ProtobufCFieldDescriptor *f = NULL;
        unsigned i;
        for (i = 0; i < d->n_fields && i < sizeof seen; i++)
            if (names_field(key, d->fields[i].name)) {
                f = &d->fields[i];
                break;
            }
        char path[160];
        join(path, sizeof path, prefix, key);
        if (!f)
            return fail(err, SPBE_SCHEMA_MISMATCH, path,
                        "unknown field '%s' (%s has no such field)", path, d->name);
        join(path, sizeof path, prefix, f->name);
        if (seen[i])
            return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' is given twice", path);
        if (json_is_null(v))
            continue; /* absent */
        seen[i] = 1;
        void *p = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(v))
                return fail(err, SPBE_SCHEMA_MISMATCH, path, "field '%s' must be an array, not %s",
                            path, json_kind(v));
            size_t n = json_array_size(v);
            if (!n)
                continue;
            void *arr = calloc(n, schema_value_size(f));
            if (!arr)
                return fail(err, SPBE_INTERNAL, path, "out of memory");
            *(void **)p = arr;
            *(size_t *)(base + f->quantifier_offset) = n;
            for (size_t k = 0; k < n; k++) {
                char item[184];
                snprintf(item, sizeof item, "%s[%zu]", path, k);
                int rc = set_value(f, json_array_get(v, k), (char *)arr + k * schema_value_size(f),
                                   item, err);
                if (rc != SPBE_OK)
                    return rc;
            }
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which && *which != f->id) {
                const ProtobufCFieldDescriptor *other =
                    protobuf_c_message_descriptor_get_field(d, *which);
                return fail(err, SPBE_SCHEMA_MISMATCH, path,
                            "fields '%s' and '%s' are members of one oneof: give one", path,
                            other ? other->name : "?");
            }
            *which = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
            *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
        /* a default string or message left by init is not ours to free: replace it */
        if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)
            *(void **)p = NULL;
        if (f->type == PROTOBUF_C_TYPE_BYTES)
            *(ProtobufCBinaryData *)p = (ProtobufCBinaryData){0, NULL};
        int rc = set_value(f, v, p, path, err);
        if (rc != SPBE_OK)
            return rc;
    }
    for (unsigned i = 0; i < d->n_fields && i < sizeof seen; i++)
        if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
            char path[160];
            join(path, sizeof path, prefix, d->fields[i].name);
            return fail(err, SPBE_SCHEMA_MISMATCH, path, "required field '%s' of %s is missing",
                        path, d->name);
        }
    return SPBE_OK;
}

static int
from_object(const ProtobufCMessageDescriptor *d, const json_t *j, const char *path,
            ProtobufCMessage **out, jsonpb_error *err)
{
    *out = NULL;
    if (d->n_fields > 512)
        return fail(err, SPBE_SCHEMA_MISMATCH, path, "%s has too many fields", d->name);
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (!m)
        return fail(err, SPBE_INTERNAL, path, "out of memory");
    protobuf_c_message_init(d, m);
    int rc = fill(d, j, path, m, err);
    if (rc != SPBE_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return SPBE_OK;
}

int
jsonpb_from_json(const ProtobufCMessageDescriptor *d, const json_t *j, ProtobufCMessage **out,
                 jsonpb_error *err)
{
    memset(err, 0, sizeof *err);
    *out = NULL;
    if (!json_is_object(j))
        return fail(err, SPBE_SCHEMA_MISMATCH, "", "the payload must be a JSON object (%s), not %s",
                    d->name, json_kind(j));
    return from_object(d, j, "", out, err);
}

int
jsonpb_from_text(const ProtobufCMessageDescriptor *d, const char *text, size_t len,
                 ProtobufCMessage **out, jsonpb_error *err)
{
    memset(err, 0, sizeof *err);
    *out = NULL;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return fail(err, SPBE_BAD_REQUEST, "", "not valid JSON: %s (line %d, column %d)", je.text,
                    je.line, je.column);
    int rc = jsonpb_from_json(d, j, out, err);
    json_decref(j);
    return rc;
}

json_t *
jsonpb_base64(const void *data, size_t len)
{
    size_t n = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(n);
    if (!s)
        return NULL;
    sodium_bin2base64(s, n, data, len, sodium_base64_VARIANT_ORIGINAL);
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *
float_json(double x)
{
    if (isnan(x))
        return json_string("NaN");
    if (isinf(x))
        return json_string(x > 0 ? "Infinity" : "-Infinity");
    return json_real(x);
}

static json_t *
value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char num[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)p);
        return json_string(num);
    case PROTOBUF_C_TYPE_FLOAT:
        return float_json(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return float_json(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        return json_string(s ? s : ""); /* NULL if not UTF-8 */
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return jsonpb_base64(b->data ? b->data : (const uint8_t *)"", b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
        return sub ? jsonpb_to_json(sub) : json_object();
    }
    }
    return NULL;
}

/* 1 if a proto3 (no presence) field holds its zero value, which JSON leaves out. */
static int
is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (schema_value_size(f)) {
    case 1:
        return *(const uint8_t *)p == 0;
    case 4:
        return *(const uint32_t *)p == 0;
    case 8:
        if (f->type == PROTOBUF_C_TYPE_STRING)
            return !*(const char *const *)p || !**(const char *const *)p;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            return !*(const void *const *)p;
        return *(const uint64_t *)p == 0;
    default:
        if (f->type == PROTOBUF_C_TYPE_BYTES)
            return ((const ProtobufCBinaryData *)p)->len == 0;
        return 0;
    }
}

json_t *
jsonpb_to_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        json_t *v;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (!n)
                continue;
            v = json_array();
            const char *arr = *(const char *const *)p;
            for (size_t k = 0; v && k < n; k++)
                if (json_array_append_new(v, value_json(f, arr + k * schema_value_size(f)))) {
                    json_decref(v);
                    v = NULL;
                }
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                    continue;
            } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
                if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                    continue;
            } else if (f->label == PROTOBUF_C_LABEL_NONE) {
                if (is_zero(f, p))
                    continue;
            } else if ((f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
                       (!*(const void *const *)p ||
                        (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
                         *(const void *const *)p == f->default_value))) {
                continue; /* absent; an optional string left at its default is not sent either */
            }
            v = value_json(f, p);
        }
        if (!v || json_object_set_new(o, f->name, v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}
