/* test_merkle.c - RFC 9162 trees: the RFC 6962/9162 test vectors (eight leaves), then
 * properties over random sizes: roots from stored perfect subtrees equal a plain
 * recursive computation; every inclusion and consistency proof verifies, and any change
 * to a proof, index, size or root makes it fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sodium.h>

#include "merkle.h"

#define H MERKLE_HASH_BYTES

static void
hex(const char *s, uint8_t out[H])
{
    for (int i = 0; i < H; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* A tree kept as its perfect subtrees, written by merkle_append. */
typedef struct tree {
    uint64_t size;
    uint8_t (*nodes[64])[H]; /* nodes[level][index] */
    size_t cap[64];
} tree;

static int
tree_get(void *ctx, unsigned level, uint64_t index, uint8_t out[H])
{
    tree *t = ctx;
    if (level >= 64 || index >= t->cap[level] || !t->nodes[level])
        return -1;
    memcpy(out, t->nodes[level][index], H);
    return 0;
}

static int
tree_put(void *ctx, unsigned level, uint64_t index, const uint8_t hash[H])
{
    tree *t = ctx;
    if (index >= t->cap[level]) {
        size_t cap = t->cap[level] ? t->cap[level] * 2 : 16;
        while (cap <= index)
            cap *= 2;
        t->nodes[level] = realloc(t->nodes[level], cap * H);
        t->cap[level] = cap;
    }
    memcpy(t->nodes[level][index], hash, H);
    return 0;
}

static void
tree_add(tree *t, const uint8_t *leaf, size_t len)
{
    uint8_t h[H];
    merkle_leaf_hash(leaf, len, h);
    assert_int_equal(merkle_append(tree_get, t, t->size, h, tree_put), 0);
    t->size++;
}

static void
tree_free(tree *t)
{
    for (int i = 0; i < 64; i++)
        free(t->nodes[i]);
}

/* The RFC's definition, recursively over leaf hashes: the reference. */
static void
mth(uint8_t (*leaves)[H], uint64_t n, uint8_t out[H])
{
    if (n == 0) {
        crypto_hash_sha256(out, (const uint8_t *)"", 0);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[0], H);
        return;
    }
    uint64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    uint8_t l[H], r[H];
    mth(leaves, k, l);
    mth(leaves + k, n - k, r);
    merkle_node_hash(l, r, out);
}

static const uint8_t *vector_leaf[8];
static size_t vector_len[8];

static void
vector_tree(tree *t)
{
    static const uint8_t l1[] = {0x00}, l2[] = {0x10}, l3[] = {0x20, 0x21}, l4[] = {0x30, 0x31},
                         l5[] = {0x40, 0x41, 0x42, 0x43},
                         l6[] = {0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57},
                         l7[] = {0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
                                 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f};
    const uint8_t *leaves[8] = {(const uint8_t *)"", l1, l2, l3, l4, l5, l6, l7};
    size_t lens[8] = {0, 1, 1, 2, 2, 4, 8, 16};
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 8; i++) {
        vector_leaf[i] = leaves[i];
        vector_len[i] = lens[i];
        tree_add(t, leaves[i], lens[i]);
    }
}

static void
test_rfc_vectors_roots(void **state)
{
    (void)state;
    static const char *roots[9] = {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
    tree t;
    vector_tree(&t);
    for (uint64_t n = 0; n <= 8; n++) {
        uint8_t want[H], got[H];
        hex(roots[n], want);
        assert_int_equal(merkle_root(tree_get, &t, n, got), 0);
        assert_memory_equal(got, want, H);
    }
    tree_free(&t);
}

typedef struct proof_vector {
    uint64_t a, b; /* inclusion: index, size; consistency: old, new */
    size_t n;
    const char *path[3];
} proof_vector;

static void
test_rfc_vectors_proofs(void **state)
{
    (void)state;
    static const char h96[] = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                      h5f[] = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                      h6b[] = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                      hbc[] = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                      hca[] = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                      hd3[] = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                      h0e[] = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                      hfa[] = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125";
    static const proof_vector inclusion[] = {
        {0, 1, 0, {0}}, {0, 8, 3, {h96, h5f, h6b}}, {5, 8, 3, {hbc, hca, hd3}}, {2, 3, 1, {hfa, 0}},
        {1, 5, 3, {0}},
    };
    static const proof_vector consistency[] = {
        {1, 1, 0, {0}},
        {1, 8, 3, {h96, h5f, h6b}},
        {6, 8, 3, {h0e, hca, hd3}},
        {2, 5, 2, {h5f, hbc}},
    };
    tree t;
    vector_tree(&t);
    uint8_t path[MERKLE_PATH_MAX][H], want[H];
    size_t n;
    for (size_t i = 0; i < sizeof inclusion / sizeof *inclusion; i++) {
        const proof_vector *v = &inclusion[i];
        assert_int_equal(merkle_inclusion_proof(tree_get, &t, v->a, v->b, path, &n), 0);
        assert_int_equal(n, v->n);
        for (size_t k = 0; k < n && v->path[k]; k++) {
            hex(v->path[k], want);
            assert_memory_equal(path[k], want, H);
        }
        uint8_t leaf[H], root[H];
        merkle_leaf_hash(vector_leaf[v->a], vector_len[v->a], leaf);
        merkle_root(tree_get, &t, v->b, root);
        assert_true(merkle_verify_inclusion(leaf, v->a, v->b, (const uint8_t(*)[H])path, n, root));
    }
    for (size_t i = 0; i < sizeof consistency / sizeof *consistency; i++) {
        const proof_vector *v = &consistency[i];
        assert_int_equal(merkle_consistency_proof(tree_get, &t, v->a, v->b, path, &n), 0);
        assert_int_equal(n, v->n);
        for (size_t k = 0; k < n; k++) {
            hex(v->path[k], want);
            assert_memory_equal(path[k], want, H);
        }
        uint8_t r1[H], r2[H];
        merkle_root(tree_get, &t, v->a, r1);
        merkle_root(tree_get, &t, v->b, r2);
        assert_true(merkle_verify_consistency(v->a, v->b, r1, r2, (const uint8_t(*)[H])path, n));
    }
    assert_int_equal(merkle_inclusion_proof(tree_get, &t, 8, 8, path, &n), -1);
    assert_int_equal(merkle_consistency_proof(tree_get, &t, 0, 8, path, &n), -1);
    assert_int_equal(merkle_consistency_proof(tree_get, &t, 5, 4, path, &n), -1);
    tree_free(&t);
}

static void
test_random_sizes_roots_and_proofs(void **state)
{
    (void)state;
    unsigned seed = 20261201;
    srand(seed);
    enum { MAX = 1100 };
    static uint8_t leaves[MAX][H];
    tree t;
    memset(&t, 0, sizeof t);
    for (uint64_t i = 0; i < MAX; i++) {
        uint8_t data[8];
        memcpy(data, &i, sizeof data);
        tree_add(&t, data, sizeof data);
        merkle_leaf_hash(data, sizeof data, leaves[i]);
    }
    uint8_t path[MERKLE_PATH_MAX][H];
    size_t n;
    for (int round = 0; round < 300; round++) {
        uint64_t size = 1 + (uint64_t)rand() % MAX;
        uint8_t root[H], ref[H];
        assert_int_equal(merkle_root(tree_get, &t, size, root), 0);
        mth(leaves, size, ref);
        assert_memory_equal(root, ref, H);
        /* inclusion of a random leaf, and its mutations */
        uint64_t index = (uint64_t)rand() % size;
        assert_int_equal(merkle_inclusion_proof(tree_get, &t, index, size, path, &n), 0);
        const uint8_t(*p)[H] = (const uint8_t(*)[H])path;
        assert_true(merkle_verify_inclusion(leaves[index], index, size, p, n, root));
        if (size > 1) {
            assert_false(
                merkle_verify_inclusion(leaves[index], (index + 1) % size, size, p, n, root));
            assert_false(
                merkle_verify_inclusion(leaves[(index + 1) % size], index, size, p, n, root));
            path[rand() % (int)n][rand() % H] ^= 0x01;
            assert_false(merkle_verify_inclusion(leaves[index], index, size, p, n, root));
        }
        assert_false(merkle_verify_inclusion(leaves[index], index, size + 1, p, n, root));
        /* consistency with a random older size, and its mutations */
        uint64_t old = 1 + (uint64_t)rand() % size;
        uint8_t old_root[H];
        mth(leaves, old, old_root);
        assert_int_equal(merkle_consistency_proof(tree_get, &t, old, size, path, &n), 0);
        assert_true(merkle_verify_consistency(old, size, old_root, root, p, n));
        if (old < size) {
            uint8_t wrong[H];
            memcpy(wrong, old_root, H);
            wrong[0] ^= 1;
            assert_false(merkle_verify_consistency(old, size, wrong, root, p, n));
            assert_false(merkle_verify_consistency(old, size, old_root, wrong, p, n));
            path[rand() % (int)n][rand() % H] ^= 0x80;
            assert_false(merkle_verify_consistency(old, size, old_root, root, p, n));
        }
    }
    tree_free(&t);
}

/* In-memory trees (batches): the same roots and proofs as the reference, and
 * merkle_root_from_path gives back the root a proof leads to. */
static void
test_in_memory_trees_match_the_reference(void **state)
{
    (void)state;
    enum { MAX = 300 };
    static uint8_t leaves[MAX][H];
    for (uint64_t i = 0; i < MAX; i++)
        merkle_leaf_hash((const uint8_t *)&i, sizeof i, leaves[i]);
    uint8_t path[MERKLE_PATH_MAX][H];
    for (uint64_t size = 1; size <= MAX; size += size < 40 ? 1 : 37) {
        merkle_mem t;
        assert_int_equal(merkle_mem_init(&t, (const uint8_t(*)[H])leaves, size), 0);
        uint8_t root[H], ref[H], back[H];
        assert_int_equal(merkle_root(merkle_mem_subtree, &t, size, root), 0);
        mth(leaves, size, ref);
        assert_memory_equal(root, ref, H);
        for (uint64_t i = 0; i < size; i++) {
            size_t n;
            assert_int_equal(merkle_inclusion_proof(merkle_mem_subtree, &t, i, size, path, &n), 0);
            const uint8_t(*p)[H] = (const uint8_t(*)[H])path;
            assert_true(merkle_root_from_path(leaves[i], i, size, p, n, back));
            assert_memory_equal(back, root, H);
            assert_true(merkle_verify_inclusion(leaves[i], i, size, p, n, root));
            if (n > 0) /* a path of the wrong length fits no tree of this size */
                assert_false(merkle_root_from_path(leaves[i], i, size, p, n - 1, back));
        }
        assert_int_equal(merkle_mem_subtree(&t, 0, size, back), -1);
        merkle_mem_free(&t);
    }
    merkle_mem t;
    assert_int_equal(merkle_mem_init(&t, (const uint8_t(*)[H])leaves, 0), -1);
}

int
main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors_roots),
        cmocka_unit_test(test_rfc_vectors_proofs),
        cmocka_unit_test(test_random_sizes_roots_and_proofs),
        cmocka_unit_test(test_in_memory_trees_match_the_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
