/*
 * sha256.h - SHA-256 for the hot paths (message hashes, Merkle trees, batch proofs):
 * OpenSSL's implementation, which uses the CPU's SHA extensions where it has them.
 * Signatures stay with libsodium.
 */
#ifndef SPBE_SHA256_H
#define SPBE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32

typedef struct sha256_state {
    uint64_t opaque[16]; /* holds an OpenSSL SHA256_CTX (112 bytes) */
} sha256_state;

void sha256(const uint8_t *data, size_t len, uint8_t out[SHA256_BYTES]);
void sha256_init(sha256_state *st);
void sha256_update(sha256_state *st, const void *data, size_t len);
void sha256_final(sha256_state *st, uint8_t out[SHA256_BYTES]);

#endif
