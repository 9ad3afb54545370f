/* evidence.c - checking an evidence bundle with nothing but itself. */
#include "evidence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "merkle.h"
#include "spbe/errors.h"
#include "wire.h"

int
evidence_check(const Spbe__V1__EvidenceBundle *b, const uint8_t *pinned_key, char *why,
               size_t why_len, Spbe__V1__TreeHead **th_out, uint8_t last_key[WIRE_KEY_BYTES])
{
    *th_out = NULL;
    if (b->version != 1)
        return snprintf(why, why_len, "unknown bundle version %u", b->version), -1;
    if (b->broker_key.len != WIRE_KEY_BYTES || b->sender_key.len != WIRE_KEY_BYTES || !b->head)
        return snprintf(why, why_len, "the bundle is incomplete"), -1;
    /* from the key that signed the head through the broker's rotations to its last key,
     * each rotation signed by the key before */
    memcpy(last_key, b->broker_key.data, WIRE_KEY_BYTES);
    for (size_t i = 0; i < b->n_broker_rotations; i++) {
        Spbe__V1__BrokerKeyRotation *rot;
        if (wire_broker_rotation_verify(b->broker_rotations[i], &rot) != SPBE_OK)
            return snprintf(why, why_len, "broker key rotation %zu does not verify", i + 1), -1;
        if (memcmp(rot->old_key.data, last_key, WIRE_KEY_BYTES) == 0)
            memcpy(last_key, rot->new_key.data, WIRE_KEY_BYTES);
        spbe__v1__broker_key_rotation__free_unpacked(rot, NULL);
    }
    if (pinned_key && memcmp(pinned_key, last_key, WIRE_KEY_BYTES) != 0)
        return snprintf(why, why_len, "it is not signed by the expected broker key"), -1;
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *msg;
    if (wire_envelope_decode(b->message.data, b->message.len, &sm, &msg, NULL) != SPBE_OK) {
        wire_envelope_free(&sm, &msg); /* a shape error leaves both decoded */
        return snprintf(why, why_len, "the message does not decode"), -1;
    }
    int bad = wire_envelope_verify(sm, b->sender_key.data) != SPBE_OK ? 1
              : strcmp(msg->topic, b->topic) != 0                     ? 2
              : strcmp(msg->sender, b->sender) != 0                   ? 3
                                                                      : 0;
    wire_envelope_free(&sm, &msg);
    if (bad == 1)
        return snprintf(why, why_len,
                        "the message's signature does not verify with the "
                        "sender's key"),
               -1;
    if (bad)
        return snprintf(why, why_len, "the message's %s is not the bundle's",
                        bad == 2 ? "topic" : "sender"),
               -1;
    uint8_t hash[WIRE_HASH_BYTES];
    crypto_hash_sha256(hash, b->message.data, b->message.len);
    Spbe__V1__AuditLeaf *leaf = spbe__v1__audit_leaf__unpack(NULL, b->leaf.len, b->leaf.data);
    bad = !leaf ? 1
          : leaf->kind != SPBE__V1__LEAF_KIND__LEAF_MESSAGE || strcmp(leaf->topic, b->topic) != 0 ||
                  leaf->sequence != b->sequence || leaf->accepted_ns != b->accepted_ns
              ? 2
          : leaf->message_hash.len != sizeof hash ||
                  memcmp(leaf->message_hash.data, hash, sizeof hash) != 0
              ? 3
              : 0;
    if (leaf)
        spbe__v1__audit_leaf__free_unpacked(leaf, NULL);
    if (bad)
        return snprintf(why, why_len, "%s",
                        bad == 1   ? "the leaf does not decode"
                        : bad == 2 ? "the leaf names another message"
                                   : "the leaf's hash is not the message's"),
               -1;
    if (wire_tree_head_verify(b->head, b->broker_key.data, th_out) != SPBE_OK)
        return snprintf(why, why_len,
                        "the tree head's signature does not verify with the "
                        "broker's key"),
               -1;
    uint8_t path[MERKLE_PATH_MAX][MERKLE_HASH_BYTES], leaf_hash[MERKLE_HASH_BYTES];
    if (b->n_inclusion > MERKLE_PATH_MAX)
        return snprintf(why, why_len, "the inclusion proof is too long"), -1;
    for (size_t i = 0; i < b->n_inclusion; i++) {
        if (b->inclusion[i].len != MERKLE_HASH_BYTES)
            return snprintf(why, why_len, "the inclusion proof is malformed"), -1;
        memcpy(path[i], b->inclusion[i].data, MERKLE_HASH_BYTES);
    }
    merkle_leaf_hash(b->leaf.data, b->leaf.len, leaf_hash);
    if (!merkle_verify_inclusion(leaf_hash, b->leaf_index, (*th_out)->size,
                                 (const uint8_t(*)[MERKLE_HASH_BYTES])path, b->n_inclusion,
                                 (*th_out)->root.data))
        return snprintf(why, why_len, "the inclusion proof does not lead to the head's root"), -1;
    if (b->receipt) {
        Spbe__V1__Receipt *r;
        if (wire_receipt_verify(b->receipt, last_key, &r) != SPBE_OK)
            return snprintf(why, why_len, "the receipt's signature does not verify"), -1;
        bad = r->code != SPBE__V1__ERROR_CODE__OK || strcmp(r->topic, b->topic) != 0 ||
              r->sequence != b->sequence || r->message_hash.len != sizeof hash ||
              memcmp(r->message_hash.data, hash, sizeof hash) != 0 ||
              r->leaf_index != b->leaf_index;
        spbe__v1__receipt__free_unpacked(r, NULL);
        if (bad)
            return snprintf(why, why_len, "the receipt is for another message"), -1;
    }
    for (size_t i = 0; i < b->n_deliveries; i++) {
        const Spbe__V1__DeliveryEvidence *e = b->deliveries[i];
        Spbe__V1__DeliveryReceipt *dr = NULL;
        if (!e->receipt || e->member_key.len != WIRE_KEY_BYTES ||
            wire_delivery_verify(e->receipt, e->member_key.data, &dr) != SPBE_OK)
            return snprintf(why, why_len, "delivery receipt %zu does not verify", i + 1), -1;
        bad = strcmp(dr->topic, b->topic) != 0 || dr->up_to < b->sequence;
        size_t plen = spbe__v1__signed_delivery_receipt__get_packed_size(e->receipt);
        uint8_t *pk = malloc(plen ? plen : 1), rh[WIRE_HASH_BYTES];
        if (pk) {
            spbe__v1__signed_delivery_receipt__pack(e->receipt, pk);
            crypto_hash_sha256(rh, pk, plen);
            free(pk);
        }
        Spbe__V1__AuditLeaf *dl = spbe__v1__audit_leaf__unpack(NULL, e->leaf.len, e->leaf.data);
        if (!bad)
            bad = !pk || !dl || dl->kind != SPBE__V1__LEAF_KIND__LEAF_DELIVERY ||
                  strcmp(dl->name, dr->member) != 0 || strcmp(dl->topic, dr->topic) != 0 ||
                  dl->sequence != dr->up_to || dl->record_hash.len != sizeof rh ||
                  memcmp(dl->record_hash.data, rh, sizeof rh) != 0;
        if (dl)
            spbe__v1__audit_leaf__free_unpacked(dl, NULL);
        spbe__v1__delivery_receipt__free_unpacked(dr, NULL);
        if (bad)
            return snprintf(why, why_len,
                            "delivery receipt %zu does not cover this message or "
                            "its leaf",
                            i + 1),
                   -1;
        if (e->n_inclusion) {
            if (e->n_inclusion > MERKLE_PATH_MAX)
                return snprintf(why, why_len, "delivery receipt %zu: proof too long", i + 1), -1;
            for (size_t k = 0; k < e->n_inclusion; k++) {
                if (e->inclusion[k].len != MERKLE_HASH_BYTES)
                    return snprintf(why, why_len, "delivery receipt %zu: proof malformed", i + 1),
                           -1;
                memcpy(path[k], e->inclusion[k].data, MERKLE_HASH_BYTES);
            }
            merkle_leaf_hash(e->leaf.data, e->leaf.len, leaf_hash);
            if (!merkle_verify_inclusion(leaf_hash, e->leaf_index, (*th_out)->size,
                                         (const uint8_t(*)[MERKLE_HASH_BYTES])path, e->n_inclusion,
                                         (*th_out)->root.data))
                return snprintf(why, why_len, "delivery receipt %zu is not in the signed tree",
                                i + 1),
                       -1;
        }
    }
    return 0;
}
