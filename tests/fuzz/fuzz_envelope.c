/* fuzz_envelope.c - the envelope decoder and verifier on arbitrary bytes: what the
 * broker does to every publish body before anything else. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static uint8_t key[WIRE_KEY_BYTES];
    if (!ready) {
        wire_init();
        ready = 1;
    }
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *m;
    const char *reason = NULL;
    int rc = wire_envelope_decode(data, size, &sm, &m, &reason);
    if (rc == SPBE_OK) {
        /* whatever decoded must be well formed, and must not verify under a zero key */
        if (m->id.len != WIRE_ID_BYTES || !wire_topic_valid(m->topic) ||
            !wire_member_valid(m->sender) || wire_envelope_verify(sm, key) == SPBE_OK)
            __builtin_trap();
    } else if (!reason) {
        __builtin_trap(); /* every refusal says why */
    }
    wire_envelope_free(&sm, &m);
    return 0;
}
