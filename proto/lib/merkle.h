/*
 * merkle.h - the audit log's Merkle tree as RFC 9162 (Certificate Transparency 2.0)
 * defines it: leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left ||
 * right), a tree of n leaves split at the largest power of two below n, inclusion
 * and consistency proofs, and their verification.
 *
 * Trees are read through a source of perfect subtrees: the hash of the 2^level
 * leaves starting at index << level. Every subtree a root or proof needs is such a
 * perfect one, so a store keeps those (each written once, when it completes) and any
 * root or proof costs O(log n) reads.
 */
#ifndef SPBE_MERKLE_H
#define SPBE_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#define MERKLE_HASH_BYTES 32
#define MERKLE_PATH_MAX 64 /* proof entries for trees of up to 2^64 leaves */

/* The hash of the perfect subtree (level, index) into out; 0, or -1 if unavailable. */
typedef int (*merkle_subtree_fn)(void *ctx, unsigned level, uint64_t index,
                                 uint8_t out[MERKLE_HASH_BYTES]);

void merkle_leaf_hash(const uint8_t *leaf, size_t len, uint8_t out[MERKLE_HASH_BYTES]);
void merkle_node_hash(const uint8_t left[MERKLE_HASH_BYTES], const uint8_t right[MERKLE_HASH_BYTES],
                      uint8_t out[MERKLE_HASH_BYTES]);

/* The root of the first size leaves (the hash of the empty string for 0). 0 or -1. */
int merkle_root(merkle_subtree_fn fn, void *ctx, uint64_t size, uint8_t root[MERKLE_HASH_BYTES]);

/* PATH(index, D[size]): *n entries into path (MERKLE_PATH_MAX room). 0, or -1 if
 * index >= size or a subtree is unavailable. */
int merkle_inclusion_proof(merkle_subtree_fn fn, void *ctx, uint64_t index, uint64_t size,
                           uint8_t path[][MERKLE_HASH_BYTES], size_t *n);

/* PROOF(old_size, D[new_size]): 0 < old_size <= new_size. 0 or -1. */
int merkle_consistency_proof(merkle_subtree_fn fn, void *ctx, uint64_t old_size, uint64_t new_size,
                             uint8_t path[][MERKLE_HASH_BYTES], size_t *n);

/* 1 if leaf_hash is leaf index of the tree of size leaves with root, by path. */
int merkle_verify_inclusion(const uint8_t leaf_hash[MERKLE_HASH_BYTES], uint64_t index,
                            uint64_t size, const uint8_t path[][MERKLE_HASH_BYTES], size_t n,
                            const uint8_t root[MERKLE_HASH_BYTES]);

/* The root that path proves leaf_hash (leaf index of size leaves) to be under: 1, or 0
 * if the path does not fit the tree's shape. */
int merkle_root_from_path(const uint8_t leaf_hash[MERKLE_HASH_BYTES], uint64_t index, uint64_t size,
                          const uint8_t path[][MERKLE_HASH_BYTES], size_t n,
                          uint8_t root[MERKLE_HASH_BYTES]);

/* 1 if the tree (new_size, new_root) extends (old_size, old_root), by path. */
int merkle_verify_consistency(uint64_t old_size, uint64_t new_size,
                              const uint8_t old_root[MERKLE_HASH_BYTES],
                              const uint8_t new_root[MERKLE_HASH_BYTES],
                              const uint8_t path[][MERKLE_HASH_BYTES], size_t n);

/*
 * Appending leaf number index (the tree had index leaves): calls put for each perfect
 * subtree the leaf completes, level 0 (the leaf hash itself) first, reading the left
 * siblings it needs through fn. 0, or -1 if fn or put fails.
 */
int merkle_append(merkle_subtree_fn fn, void *ctx, uint64_t index,
                  const uint8_t leaf_hash[MERKLE_HASH_BYTES],
                  int (*put)(void *ctx, unsigned level, uint64_t index,
                             const uint8_t hash[MERKLE_HASH_BYTES]));

/*
 * A whole tree in memory, every perfect subtree kept (2n hashes at most): a source
 * for merkle_root() and merkle_inclusion_proof() at O(log n) each, for batches signed
 * once. Level l's subtrees are hash[offset[l] ...].
 */
typedef struct merkle_mem {
    uint8_t (*hash)[MERKLE_HASH_BYTES];
    uint64_t n;
    uint64_t offset[MERKLE_PATH_MAX];
} merkle_mem;

/* Copies n >= 1 leaf hashes and hashes the perfect subtrees above them. 0 or -1. */
int merkle_mem_init(merkle_mem *t, const uint8_t (*leaves)[MERKLE_HASH_BYTES], uint64_t n);
int merkle_mem_subtree(void *ctx, unsigned level, uint64_t index, uint8_t out[MERKLE_HASH_BYTES]);
void merkle_mem_free(merkle_mem *t);

#endif
