/* fuzz_command.c - the decoders of both directions' control frames and of receipts,
 * plus the topic and pattern rules on whatever strings come out of them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_strings(const char *topic)
{
    if (!topic)
        return;
    int valid = wire_topic_valid(topic), pattern = wire_pattern_valid(topic);
    if (valid && !pattern)
        __builtin_trap(); /* every topic is also a pattern matching itself */
    if (valid && !wire_pattern_match(topic, topic))
        __builtin_trap();
    if (pattern && !wire_pattern_covers(topic, topic))
        __builtin_trap();
    if (pattern && !wire_pattern_covers(">", topic) && topic[0] != '$')
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Spbe__V1__Command *cmd = spbe__v1__command__unpack(NULL, size, data);
    if (cmd) {
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_SUBSCRIBE)
            check_strings(cmd->subscribe->pattern);
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_TOPIC_GET)
            check_strings(cmd->topic_get->topic);
        if (cmd->body_case == SPBE__V1__COMMAND__BODY_MEMBER_ADD)
            (void)wire_member_valid(cmd->member_add->name);
        spbe__v1__command__free_unpacked(cmd, NULL);
    }
    Spbe__V1__BrokerFrame *f = spbe__v1__broker_frame__unpack(NULL, size, data);
    if (f)
        spbe__v1__broker_frame__free_unpacked(f, NULL);
    Spbe__V1__SignedReceipt sr = SPBE__V1__SIGNED_RECEIPT__INIT;
    sr.receipt.data = (uint8_t *)data;
    sr.receipt.len = size;
    uint8_t zero[64] = {0}, key[32] = {0};
    sr.signature.data = zero;
    sr.signature.len = sizeof zero;
    Spbe__V1__Receipt *r;
    if (wire_receipt_verify(&sr, key, &r) == SPBE_OK)
        __builtin_trap();
    /* arbitrary bytes as a NUL-terminated string for the name rules */
    char s[300];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    check_strings(s);
    (void)wire_member_valid(s);
    return 0;
}
