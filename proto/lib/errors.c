/* errors.c - names and descriptions of the protocol's error codes. */
#include <string.h>

#include "spbe/errors.h"

static const struct {
    const char *name;
    const char *text;
} error_table[SPBE_ERROR_COUNT] = {
    [SPBE_OK] = {"OK", "success"},
    [SPBE_BAD_REQUEST] = {"BAD_REQUEST", "malformed request"},
    [SPBE_BAD_SIGNATURE] = {"BAD_SIGNATURE", "signature does not verify"},
    [SPBE_UNKNOWN_SENDER] = {"UNKNOWN_SENDER", "sender is not a registered member"},
    [SPBE_REVOKED] = {"REVOKED", "member has been revoked"},
    [SPBE_FORBIDDEN] = {"FORBIDDEN", "not permitted by the member's rights"},
    [SPBE_INVALID_TOPIC] = {"INVALID_TOPIC", "invalid topic or pattern"},
    [SPBE_SCHEMA_MISMATCH] = {"SCHEMA_MISMATCH", "payload does not match the topic's schema"},
    [SPBE_TOO_LARGE] = {"TOO_LARGE", "message exceeds the size limit"},
    [SPBE_DUPLICATE] = {"DUPLICATE", "message id already accepted from this sender"},
    [SPBE_NOT_FOUND] = {"NOT_FOUND", "no such object"},
    [SPBE_TIMEOUT] = {"TIMEOUT", "timed out"},
    [SPBE_STORAGE_FULL] = {"STORAGE_FULL", "broker storage is full"},
    [SPBE_UNAVAILABLE] = {"UNAVAILABLE", "broker or service unavailable"},
    [SPBE_INTERNAL] = {"INTERNAL", "internal error"},
    [SPBE_RATE_LIMITED] = {"RATE_LIMITED", "the member sends faster than its rate limit"},
    [SPBE_QUOTA_EXCEEDED] =
        {"QUOTA_EXCEEDED",
         "the member holds as many sessions, subscriptions or consumers as it may"},
};

const char *
spbe_error_name(int code)
{
    if (code < 0 || code >= SPBE_ERROR_COUNT)
        return "UNKNOWN_CODE";
    return error_table[code].name;
}

const char *
spbe_strerror(int code)
{
    if (code < 0 || code >= SPBE_ERROR_COUNT)
        return "unknown error code";
    return error_table[code].text;
}

int
spbe_error_from_name(const char *name)
{
    for (int i = 0; i < SPBE_ERROR_COUNT; i++)
        if (strcmp(error_table[i].name, name) == 0)
            return i;
    return -1;
}
