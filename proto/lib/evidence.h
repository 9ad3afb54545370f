/*
 * evidence.h - an evidence bundle (spbe.v1.EvidenceBundle) checked with nothing but
 * itself: the sender's signature over the exact bytes, the leaf naming the message and its
 * hash, the broker's chain of key rotations, the head's signature, the inclusion path to
 * the head's root, the receipt, and every delivery receipt with its own path.
 */
#ifndef SPBE_EVIDENCE_H
#define SPBE_EVIDENCE_H

#include <stddef.h>
#include <stdint.h>

#include "spbe/v1/spbe.pb-c.h"

/*
 * 0 if every part holds; -1 with the first part that does not in why. pinned_key (32
 * bytes, may be NULL) is the broker key the chain must end at. On 0, *head (freed with
 * spbe__v1__tree_head__free_unpacked) is the verified head and last_key the broker's
 * current key per the bundle; on -1 *head may still be set.
 */
int evidence_check(const Spbe__V1__EvidenceBundle *bundle, const uint8_t *pinned_key, char *why,
                   size_t why_len, Spbe__V1__TreeHead **head, uint8_t last_key[32]);

#endif
