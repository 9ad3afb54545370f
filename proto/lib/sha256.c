/* sha256.c - SHA-256 over OpenSSL's low-level interface (no allocation per call). */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co. stay in OpenSSL 3 */
#include "sha256.h"

#include <openssl/sha.h>

_Static_assert(sizeof(SHA256_CTX) <= sizeof(sha256_state), "sha256_state holds a SHA256_CTX");

void
sha256(const uint8_t *data, size_t len, uint8_t out[SHA256_BYTES])
{
    SHA256_CTX c; /* not SHA256(): in OpenSSL 3 that goes through EVP, with locks */
    SHA256_Init(&c);
    SHA256_Update(&c, data, len);
    SHA256_Final(out, &c);
}

void
sha256_init(sha256_state *st)
{
    SHA256_Init((SHA256_CTX *)st);
}

void
sha256_update(sha256_state *st, const void *data, size_t len)
{
    SHA256_Update((SHA256_CTX *)st, data, len);
}

void
sha256_final(sha256_state *st, uint8_t out[SHA256_BYTES])
{
    SHA256_Final(out, (SHA256_CTX *)st);
}
