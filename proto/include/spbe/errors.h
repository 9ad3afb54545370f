/*
 * spbe/errors.h - the protocol's error codes, shared by the client library, the
 * broker and the tools. Values equal the wire enum spbe.v1.ErrorCode.
 */
#ifndef SPBE_ERRORS_H
#define SPBE_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

enum spbe_error {
    SPBE_OK = 0,
    SPBE_BAD_REQUEST = 1,
    SPBE_BAD_SIGNATURE = 2,
    SPBE_UNKNOWN_SENDER = 3,
    SPBE_REVOKED = 4,
    SPBE_FORBIDDEN = 5,
    SPBE_INVALID_TOPIC = 6,
    SPBE_SCHEMA_MISMATCH = 7,
    SPBE_TOO_LARGE = 8,
    SPBE_DUPLICATE = 9,
    SPBE_NOT_FOUND = 10,
    SPBE_TIMEOUT = 11,
    SPBE_STORAGE_FULL = 12,
    SPBE_UNAVAILABLE = 13,
    SPBE_INTERNAL = 14,
    SPBE_RATE_LIMITED = 15,
    SPBE_QUOTA_EXCEEDED = 16,
};

#define SPBE_ERROR_COUNT 17

/** The code's name as the CLI prints it ("BAD_SIGNATURE"); "UNKNOWN_CODE" if out of range. */
const char *spbe_error_name(int code);

/** A one-line English description of the code. Never NULL. */
const char *spbe_strerror(int code);

/** The code of a name (case-sensitive), or -1. */
int spbe_error_from_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
