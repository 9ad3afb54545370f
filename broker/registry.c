/* registry.c - members and rights in memory. Linear in members: registries are small
 * (hundreds of agency applications) and lookups happen once per session or command. */
#include "registry.h"

#include <stdlib.h>
#include <string.h>

#include "spbe/errors.h"
#include "wire.h"

typedef struct entry {
    Spbe__V1__Member *member;
    uint8_t curve[32];
} entry;

struct registry {
    entry *entries;
    size_t count, cap;
};

Spbe__V1__Member *
registry_member_copy(const Spbe__V1__Member *m)
{
    size_t len = spbe__v1__member__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    spbe__v1__member__pack(m, buf);
    Spbe__V1__Member *copy = spbe__v1__member__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

int
registry_put(registry *r, const Spbe__V1__Member *member)
{
    Spbe__V1__Member *copy = registry_member_copy(member);
    if (!copy)
        return SPBE_INTERNAL;
    uint8_t curve[32] = {0};
    if (copy->public_key.len == WIRE_KEY_BYTES)
        wire_curve_public(copy->public_key.data, curve);
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->entries[i].member->name, copy->name) == 0) {
            spbe__v1__member__free_unpacked(r->entries[i].member, NULL);
            r->entries[i].member = copy;
            memcpy(r->entries[i].curve, curve, 32);
            return SPBE_OK;
        }
    if (r->count == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        entry *n = realloc(r->entries, cap * sizeof *n);
        if (!n) {
            spbe__v1__member__free_unpacked(copy, NULL);
            return SPBE_INTERNAL;
        }
        r->entries = n;
        r->cap = cap;
    }
    r->entries[r->count].member = copy;
    memcpy(r->entries[r->count].curve, curve, 32);
    r->count++;
    return SPBE_OK;
}

static int
load_one(const Spbe__V1__Member *m, void *arg)
{
    return registry_put(arg, m) != SPBE_OK;
}

int
registry_load(store *s, registry **out)
{
    registry *r = calloc(1, sizeof *r);
    store_reader *rd;
    if (!r)
        return SPBE_INTERNAL;
    int rc = store_reader_begin(s, &rd);
    if (rc == SPBE_OK) {
        rc = store_member_each(rd, load_one, r);
        store_reader_end(&rd);
    }
    if (rc != SPBE_OK) {
        registry_destroy(&r);
        return rc;
    }
    *out = r;
    return SPBE_OK;
}

void
registry_destroy(registry **rp)
{
    if (!rp || !*rp)
        return;
    for (size_t i = 0; i < (*rp)->count; i++)
        spbe__v1__member__free_unpacked((*rp)->entries[i].member, NULL);
    free((*rp)->entries);
    free(*rp);
    *rp = NULL;
}

const Spbe__V1__Member *
registry_find_member(const registry *r, const char *name)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->entries[i].member->name, name) == 0)
            return r->entries[i].member;
    return NULL;
}

const Spbe__V1__Member *
registry_find_by_curve_key(const registry *r, const uint8_t key[32])
{
    for (size_t i = 0; i < r->count; i++)
        if (memcmp(r->entries[i].curve, key, 32) == 0)
            return r->entries[i].member;
    return NULL;
}

int
registry_has_role(const Spbe__V1__Member *m, const char *role)
{
    if (!m->rights)
        return 0;
    for (size_t i = 0; i < m->rights->n_roles; i++)
        if (strcmp(m->rights->roles[i], role) == 0)
            return 1;
    return 0;
}

int
registry_may_publish(const Spbe__V1__Member *m, const char *topic)
{
    if (!m->rights || strncmp(topic, "$sys.", 5) == 0)
        return 0;
    for (size_t i = 0; i < m->rights->n_publish; i++)
        if (wire_pattern_match(m->rights->publish[i], topic))
            return 1;
    return 0;
}

int
registry_may_subscribe(const Spbe__V1__Member *m, const char *pattern)
{
    if (!m->rights)
        return 0;
    for (size_t i = 0; i < m->rights->n_subscribe; i++)
        if (wire_pattern_covers(m->rights->subscribe[i], pattern))
            return 1;
    return 0;
}

static int
matches_any(char **patterns, size_t n, const char *name)
{
    if (strncmp(name, "$sys.", 5) == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (wire_pattern_match(patterns[i], name))
            return 1;
    return 0;
}

int
registry_may_serve(const Spbe__V1__Member *m, const char *service)
{
    return m->rights && matches_any(m->rights->serve, m->rights->n_serve, service);
}

int
registry_may_call(const Spbe__V1__Member *m, const char *service)
{
    return m->rights && matches_any(m->rights->call, m->rights->n_call, service);
}
