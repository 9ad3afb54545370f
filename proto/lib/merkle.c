/* merkle.c - RFC 9162 Merkle trees over a source of perfect subtrees. */
#include "merkle.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "sha256.h"

void
merkle_leaf_hash(const uint8_t *leaf, size_t len, uint8_t out[MERKLE_HASH_BYTES])
{
    static const uint8_t prefix = 0x00;
    sha256_state st;
    sha256_init(&st);
    sha256_update(&st, &prefix, 1);
    sha256_update(&st, leaf, len);
    sha256_final(&st, out);
}

void
merkle_node_hash(const uint8_t left[MERKLE_HASH_BYTES], const uint8_t right[MERKLE_HASH_BYTES],
                 uint8_t out[MERKLE_HASH_BYTES])
{
    uint8_t buf[1 + 2 * MERKLE_HASH_BYTES];
    buf[0] = 0x01;
    memcpy(buf + 1, left, MERKLE_HASH_BYTES);
    memcpy(buf + 1 + MERKLE_HASH_BYTES, right, MERKLE_HASH_BYTES);
    sha256(buf, sizeof buf, out);
}

/* The largest power of two below n (n >= 2). */
static uint64_t
split(uint64_t n)
{
    uint64_t k = 1;
    while (k < n - k) /* k * 2 < n without overflow */
        k <<= 1;
    return k;
}

/* MTH(D[start:start+n]), n >= 1: perfect aligned parts come from fn. */
static int
range_hash(merkle_subtree_fn fn, void *ctx, uint64_t start, uint64_t n,
           uint8_t out[MERKLE_HASH_BYTES])
{
    if ((n & (n - 1)) == 0 && start % n == 0) {
        unsigned level = (unsigned)__builtin_ctzll(n);
        return fn(ctx, level, start >> level, out);
    }
    uint64_t k = split(n);
    uint8_t left[MERKLE_HASH_BYTES], right[MERKLE_HASH_BYTES];
    if (range_hash(fn, ctx, start, k, left) || range_hash(fn, ctx, start + k, n - k, right))
        return -1;
    merkle_node_hash(left, right, out);
    return 0;
}

int
merkle_root(merkle_subtree_fn fn, void *ctx, uint64_t size, uint8_t root[MERKLE_HASH_BYTES])
{
    if (size == 0) {
        sha256((const uint8_t *)"", 0, root);
        return 0;
    }
    return range_hash(fn, ctx, 0, size, root);
}

static int
path_push(merkle_subtree_fn fn, void *ctx, uint64_t start, uint64_t n,
          uint8_t path[][MERKLE_HASH_BYTES], size_t *len)
{
    if (*len >= MERKLE_PATH_MAX)
        return -1;
    return range_hash(fn, ctx, start, n, path[(*len)++]);
}

/* PATH(m, D[start:start+n]) appended to path. */
static int
inclusion(merkle_subtree_fn fn, void *ctx, uint64_t m, uint64_t start, uint64_t n,
          uint8_t path[][MERKLE_HASH_BYTES], size_t *len)
{
    if (n == 1)
        return 0;
    uint64_t k = split(n);
    if (m < k)
        return inclusion(fn, ctx, m, start, k, path, len) ||
               path_push(fn, ctx, start + k, n - k, path, len);
    return inclusion(fn, ctx, m - k, start + k, n - k, path, len) ||
           path_push(fn, ctx, start, k, path, len);
}

int
merkle_inclusion_proof(merkle_subtree_fn fn, void *ctx, uint64_t index, uint64_t size,
                       uint8_t path[][MERKLE_HASH_BYTES], size_t *n)
{
    *n = 0;
    if (index >= size)
        return -1;
    return inclusion(fn, ctx, index, 0, size, path, n) ? -1 : 0;
}

/* SUBPROOF(m, D[start:start+n], whole) appended to path. */
static int
subproof(merkle_subtree_fn fn, void *ctx, uint64_t m, uint64_t start, uint64_t n, int whole,
         uint8_t path[][MERKLE_HASH_BYTES], size_t *len)
{
    if (m == n)
        return whole ? 0 : path_push(fn, ctx, start, n, path, len);
    uint64_t k = split(n);
    if (m <= k)
        return subproof(fn, ctx, m, start, k, whole, path, len) ||
               path_push(fn, ctx, start + k, n - k, path, len);
    return subproof(fn, ctx, m - k, start + k, n - k, 0, path, len) ||
           path_push(fn, ctx, start, k, path, len);
}

int
merkle_consistency_proof(merkle_subtree_fn fn, void *ctx, uint64_t old_size, uint64_t new_size,
                         uint8_t path[][MERKLE_HASH_BYTES], size_t *n)
{
    *n = 0;
    if (old_size == 0 || old_size > new_size)
        return -1;
    return subproof(fn, ctx, old_size, 0, new_size, 1, path, n) ? -1 : 0;
}

int
merkle_root_from_path(const uint8_t leaf_hash[MERKLE_HASH_BYTES], uint64_t index, uint64_t size,
                      const uint8_t path[][MERKLE_HASH_BYTES], size_t n,
                      uint8_t root[MERKLE_HASH_BYTES])
{
    if (index >= size)
        return 0;
    uint64_t fn = index, sn = size - 1;
    uint8_t r[MERKLE_HASH_BYTES];
    memcpy(r, leaf_hash, sizeof r);
    for (size_t i = 0; i < n; i++) {
        if (sn == 0)
            return 0;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(path[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            merkle_node_hash(r, path[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0)
        return 0;
    memcpy(root, r, sizeof r);
    return 1;
}

int
merkle_verify_inclusion(const uint8_t leaf_hash[MERKLE_HASH_BYTES], uint64_t index, uint64_t size,
                        const uint8_t path[][MERKLE_HASH_BYTES], size_t n,
                        const uint8_t root[MERKLE_HASH_BYTES])
{
    uint8_t r[MERKLE_HASH_BYTES];
    return merkle_root_from_path(leaf_hash, index, size, path, n, r) &&
           sodium_memcmp(r, root, sizeof r) == 0;
}

int
merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                          const uint8_t old_root[MERKLE_HASH_BYTES],
                          const uint8_t new_root[MERKLE_HASH_BYTES],
                          const uint8_t path[][MERKLE_HASH_BYTES], size_t n)
{
    if (old_size > new_size)
        return 0;
    if (old_size == new_size)
        return n == 0 && sodium_memcmp(old_root, new_root, MERKLE_HASH_BYTES) == 0;
    if (old_size == 0)
        return n == 0; /* every tree extends the empty one */
    if (n == 0)
        return 0;
    /* with old_size a power of two the proof leaves out the old root: it starts there */
    size_t i = 0;
    const uint8_t *first = path[0];
    if ((old_size & (old_size - 1)) == 0)
        first = old_root;
    else
        i = 1;
    uint64_t fn = old_size - 1, sn = new_size - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[MERKLE_HASH_BYTES], sr[MERKLE_HASH_BYTES];
    memcpy(fr, first, sizeof fr);
    memcpy(sr, first, sizeof sr);
    for (; i < n; i++) {
        if (sn == 0)
            return 0;
        if ((fn & 1) || fn == sn) {
            merkle_node_hash(path[i], fr, fr);
            merkle_node_hash(path[i], sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            merkle_node_hash(sr, path[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && sodium_memcmp(fr, old_root, sizeof fr) == 0 &&
           sodium_memcmp(sr, new_root, sizeof sr) == 0;
}

int
merkle_append(merkle_subtree_fn fn, void *ctx, uint64_t index,
              const uint8_t leaf_hash[MERKLE_HASH_BYTES],
              int (*put)(void *ctx, unsigned level, uint64_t index,
                         const uint8_t hash[MERKLE_HASH_BYTES]))
{
    uint8_t h[MERKLE_HASH_BYTES], left[MERKLE_HASH_BYTES];
    memcpy(h, leaf_hash, sizeof h);
    if (put(ctx, 0, index, h))
        return -1;
    unsigned level = 0;
    for (uint64_t i = index; i & 1; i >>= 1) {
        if (fn(ctx, level, i - 1, left))
            return -1;
        merkle_node_hash(left, h, h);
        level++;
        if (put(ctx, level, i >> 1, h))
            return -1;
    }
    return 0;
}

int
merkle_mem_init(merkle_mem *t, const uint8_t (*leaves)[MERKLE_HASH_BYTES], uint64_t n)
{
    memset(t, 0, sizeof *t);
    if (n == 0)
        return -1;
    uint64_t total = 0;
    for (uint64_t k = n; k; k >>= 1)
        total += k;
    t->hash = malloc(total * MERKLE_HASH_BYTES);
    if (!t->hash)
        return -1;
    t->n = n;
    memcpy(t->hash, leaves, n * MERKLE_HASH_BYTES);
    uint64_t at = 0;
    for (unsigned level = 0; (n >> level) > 1; level++) {
        uint64_t count = n >> level, above = at + count;
        t->offset[level + 1] = above;
        for (uint64_t i = 0; i < count / 2; i++)
            merkle_node_hash(t->hash[at + 2 * i], t->hash[at + 2 * i + 1], t->hash[above + i]);
        at = above;
    }
    return 0;
}

int
merkle_mem_subtree(void *ctx, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_BYTES])
{
    const merkle_mem *t = ctx;
    if (level >= 64 || (t->n >> level) <= index)
        return -1;
    memcpy(out, t->hash[t->offset[level] + index], MERKLE_HASH_BYTES);
    return 0;
}

void
merkle_mem_free(merkle_mem *t)
{
    free(t->hash);
    memset(t, 0, sizeof *t);
}
