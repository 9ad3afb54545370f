/* keyrotate.c - spbe-broker --rotate-key: the broker's own key, replaced with the old key
 * signing the new one into the audit log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "broker.h"
#include "identity.h"
#include "log.h"
#include "spbe/errors.h"
#include "store.h"
#include "wire.h"

#define ROTATION_TOPIC "$sys.audit.broker-key"

static int
path_in(char *out, size_t n, const char *dir, const char *file)
{
    return snprintf(out, n, "%s/%s", dir, file) >= (int)n ? -1 : 0;
}

/* Appends the rotation as a message signed by the old key; *leaf gets its leaf. */
static int
append_rotation(store *s, const identity *old, const Spbe__V1__SignedBrokerKeyRotation *sr,
                uint64_t *leaf)
{
    size_t plen = spbe__v1__signed_broker_key_rotation__get_packed_size(sr);
    uint8_t *payload = malloc(plen ? plen : 1), *bytes = NULL;
    size_t len = 0;
    uint8_t id[WIRE_ID_BYTES];
    wire_random_id(id);
    if (!payload)
        return SPBE_INTERNAL;
    spbe__v1__signed_broker_key_rotation__pack(sr, payload);
    Spbe__V1__Message msg = SPBE__V1__MESSAGE__INIT;
    msg.id.data = id;
    msg.id.len = sizeof id;
    msg.topic = ROTATION_TOPIC;
    msg.sender = (char *)old->member;
    msg.created_ns = wire_now_ns();
    msg.schema = "spbe.v1.SignedBrokerKeyRotation";
    msg.payload.data = payload;
    msg.payload.len = plen;
    int rc = wire_message_sign(&msg, old->secret_key, &bytes, &len);
    free(payload);
    if (rc != SPBE_OK)
        return rc;
    store_append_item it = {
        .topic = ROTATION_TOPIC, .sender = old->member, .id = id, .data = bytes, .len = len};
    rc = store_append(s, &it, 1, 0);
    free(bytes);
    *leaf = it.leaf_index;
    return rc;
}

/* The head of the whole tree, signed by key, stored. */
static int
store_head(store *s, const identity *key, const char *broker_name)
{
    uint64_t size;
    uint8_t root[WIRE_HASH_BYTES];
    store_tree_head(s, &size, root);
    uint8_t *buf;
    size_t len;
    if (wire_tree_head_encode(size, root, broker_name, key->secret_key, &buf, &len) != SPBE_OK)
        return SPBE_INTERNAL;
    store_op op = {.kind = STORE_OP_HEAD_PUT, .sequence = size, .record = buf, .record_len = len};
    int ops_rc = SPBE_INTERNAL;
    store_apply(s, NULL, 0, &op, 1, 0, &ops_rc);
    free(buf);
    return ops_rc;
}

int
broker_rotate_key(const broker_config *config, char *said, size_t said_len, char *err,
                  size_t err_len)
{
    char key_path[1200], pub_path[1200], admin_path[1200], retired[1300];
    if (path_in(key_path, sizeof key_path, config->data_dir, "broker.key") ||
        path_in(pub_path, sizeof pub_path, config->data_dir, "broker.pub") ||
        path_in(admin_path, sizeof admin_path, config->data_dir, "admin.key")) {
        snprintf(err, err_len, "data directory path too long");
        return -1;
    }
    identity old, fresh;
    /* identity_load clears old when it fails: its own error stands then */
    int loaded = identity_load(key_path, &old, err, err_len);
    if (loaded != SPBE_OK || !old.has_secret) {
        if (loaded == SPBE_OK)
            snprintf(err, err_len, "%s holds no secret key", key_path);
        return -1;
    }
    store *s;
    if (store_open(config->data_dir, NULL, &s, err, err_len) != SPBE_OK)
        return -1;
    identity_generate(old.member, &fresh);
    Spbe__V1__BrokerKeyRotation rot = SPBE__V1__BROKER_KEY_ROTATION__INIT;
    rot.old_key.data = old.public_key;
    rot.old_key.len = WIRE_KEY_BYTES;
    rot.new_key.data = fresh.public_key;
    rot.new_key.len = WIRE_KEY_BYTES;
    rot.at_ns = wire_now_ns();
    rot.reason = "rotated";
    Spbe__V1__SignedBrokerKeyRotation sr;
    uint64_t leaf = 0;
    int rc = wire_broker_rotation_sign(&rot, old.secret_key, &sr);
    if (rc == SPBE_OK) {
        rc = append_rotation(s, &old, &sr, &leaf);
        free(sr.rotation.data);
    }
    /* the old key's last word: the head covering the rotation */
    if (rc == SPBE_OK)
        rc = store_head(s, &old, config->name);
    store_close(&s);
    if (rc != SPBE_OK) {
        snprintf(err, err_len, "cannot log the rotation: %s", spbe_error_name(rc));
        sodium_memzero(&old, sizeof old);
        sodium_memzero(&fresh, sizeof fresh);
        return -1;
    }
    /* the new key takes over; the old public key stays beside it, the secret is gone */
    char hex[2 * WIRE_KEY_BYTES + 1];
    wire_hex_encode(old.public_key, WIRE_KEY_BYTES, hex);
    snprintf(retired, sizeof retired, "%s.%.16s", pub_path, hex);
    identity_save_public(&old, retired, 1, err, err_len);
    if (identity_save(&fresh, key_path, 1, err, err_len) != SPBE_OK ||
        identity_save_public(&fresh, pub_path, 1, err, err_len) != SPBE_OK) {
        sodium_memzero(&old, sizeof old);
        sodium_memzero(&fresh, sizeof fresh);
        return -1;
    }
    identity admin;
    char ignored[256];
    if (identity_load(admin_path, &admin, ignored, sizeof ignored) == SPBE_OK) {
        memcpy(admin.broker_key, fresh.public_key, WIRE_KEY_BYTES);
        admin.has_broker_key = 1;
        identity_save(&admin, admin_path, 1, ignored, sizeof ignored);
        sodium_memzero(&admin, sizeof admin);
    }
    wire_hex_encode(fresh.public_key, WIRE_KEY_BYTES, hex);
    snprintf(said, said_len,
             "broker key rotated at leaf %llu: the new key is %s (in %s). Members connect with it "
             "from now on (spbe keygen --broker-pub %s, or SPBE_BROKER_KEY).",
             (unsigned long long)leaf, hex, pub_path, pub_path);
    log_event(LOG_WARN, "broker_key_rotated", "leaf=%llu new_key=%s", (unsigned long long)leaf,
              hex);
    sodium_memzero(&old, sizeof old);
    sodium_memzero(&fresh, sizeof fresh);
    return 0;
}
