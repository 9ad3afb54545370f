/* fuzz_evidence.c - the evidence bundle checker (spbe audit check) on arbitrary files:
 * bundles come from anyone, so every byte is hostile. */
#include <stddef.h>
#include <stdint.h>

#include "evidence.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = wire_init() == 0;
    Spbe__V1__EvidenceBundle *b = spbe__v1__evidence_bundle__unpack(NULL, size, data);
    if (!b)
        return 0;
    char why[300];
    uint8_t last_key[32];
    Spbe__V1__TreeHead *head = NULL;
    evidence_check(b, NULL, why, sizeof why, &head, last_key);
    if (head)
        spbe__v1__tree_head__free_unpacked(head, NULL);
    spbe__v1__evidence_bundle__free_unpacked(b, NULL);
    return 0;
}
