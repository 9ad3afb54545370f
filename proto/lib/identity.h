/*
 * identity.h - member identity files: the member's name, Ed25519 key pair and,
 * optionally, the broker to reach and its public key. Text, one "key = value" a line.
 * Secret files are written mode 0600 and refused when readable by others.
 */
#ifndef SPBE_IDENTITY_H
#define SPBE_IDENTITY_H

#include <stdint.h>

#include "wire.h"

typedef struct identity {
    char member[WIRE_MEMBER_MAX_BYTES + 1];
    uint8_t public_key[WIRE_KEY_BYTES];
    uint8_t secret_key[WIRE_SECRET_BYTES]; /* all zero in a public file */
    int has_secret;
    char broker[256]; /* "" if not set */
    uint8_t broker_key[WIRE_KEY_BYTES];
    int has_broker_key;
} identity;

/* Fills id with a fresh key pair for member. SPBE_OK or SPBE_BAD_REQUEST (bad name). */
int identity_generate(const char *member, identity *id);

/* Writes the secret identity file (0600, refusing to overwrite unless overwrite). */
int identity_save(const identity *id, const char *path, int overwrite, char *err, size_t err_len);
/* Writes the public part (member, public_key) to path, mode 0644. */
int identity_save_public(const identity *id, const char *path, int overwrite, char *err,
                         size_t err_len);
/*
 * Reads an identity or public file. SPBE_OK; SPBE_NOT_FOUND (no file); SPBE_BAD_REQUEST
 * (malformed, keys that do not belong together, or a secret file readable by group/others).
 */
int identity_load(const char *path, identity *id, char *err, size_t err_len);

#endif
