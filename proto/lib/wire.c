/* wire.c - names, topics, keys, envelopes and receipts of protocol 1. */
#include "wire.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sha256.h"

int
wire_init(void)
{
    return sodium_init() < 0 ? SPBE_INTERNAL : SPBE_OK;
}

static int
token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int
wire_member_valid(const char *name)
{
    size_t len = strlen(name);
    if (len < 3 || len > WIRE_MEMBER_MAX_BYTES)
        return 0;
    const char *slash = strchr(name, '/');
    if (!slash || slash == name || slash[1] == '\0' || strchr(slash + 1, '/'))
        return 0;
    for (const char *p = name; *p; p++)
        if (*p != '/' && !token_char(*p))
            return 0;
    return 1;
}

/* Shared by topics and patterns: wildcards allowed only in patterns. */
static int
topic_check(const char *s, int pattern)
{
    size_t len = strlen(s);
    if (len == 0 || len > WIRE_TOPIC_MAX_BYTES)
        return 0;
    int tokens = 0;
    const char *p = s;
    while (1) {
        const char *end = strchr(p, '.');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0)
            return 0;
        tokens++;
        if (pattern && n == 1 && (*p == '*' || *p == '>')) {
            if (*p == '>' && end)
                return 0; /* '>' only as the last token */
        } else {
            for (size_t i = 0; i < n; i++) {
                /* '$' allowed only as the first char of the first token ("$sys") */
                if (p[i] == '$' && tokens == 1 && i == 0)
                    continue;
                if (!token_char(p[i]))
                    return 0;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    if (s[0] == '$' && strncmp(s, "$sys.", 5) != 0)
        return 0;
    return tokens <= WIRE_TOPIC_MAX_TOKENS;
}

int
wire_topic_valid(const char *topic)
{
    return topic_check(topic, 0);
}

int
wire_pattern_valid(const char *pattern)
{
    return topic_check(pattern, 1);
}

int
wire_pattern_match(const char *pattern, const char *topic)
{
    if (topic[0] == '$' && pattern[0] != '$')
        return 0;
    const char *p = pattern, *t = topic;
    while (1) {
        const char *pe = strchr(p, '.');
        const char *te = strchr(t, '.');
        size_t pn = pe ? (size_t)(pe - p) : strlen(p);
        size_t tn = te ? (size_t)(te - t) : strlen(t);
        if (pn == 1 && *p == '>')
            return 1; /* one or more remaining tokens: t is non-empty here */
        if (!(pn == 1 && *p == '*') && (pn != tn || memcmp(p, t, pn) != 0))
            return 0;
        if (!pe || !te)
            return !pe && !te;
        p = pe + 1;
        t = te + 1;
    }
}

void
wire_hex_encode(const uint8_t *in, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}

int
wire_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    size_t got = 0;
    const char *end = NULL;
    if (strlen(hex) != 2 * n)
        return SPBE_BAD_REQUEST;
    if (sodium_hex2bin(out, n, hex, 2 * n, NULL, &got, &end) != 0 || got != n)
        return SPBE_BAD_REQUEST;
    return SPBE_OK;
}

void
wire_hash(const uint8_t *data, size_t len, uint8_t out[WIRE_HASH_BYTES])
{
    sha256(data, len, out);
}

int64_t
wire_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
wire_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
wire_random_id(uint8_t id[WIRE_ID_BYTES])
{
    /* as UUIDv7: 48 bits of Unix milliseconds, then 80 random bits; ids that grow
     * with time keep the broker's dedup index appending instead of scattering */
    uint64_t ms = (uint64_t)(wire_now_ns() / 1000000);
    for (int i = 0; i < 6; i++)
        id[i] = (uint8_t)(ms >> (40 - 8 * i));
    randombytes_buf(id + 6, WIRE_ID_BYTES - 6);
}

int
wire_curve_public(const uint8_t ed_public[WIRE_KEY_BYTES], uint8_t curve_public[32])
{
    return crypto_sign_ed25519_pk_to_curve25519(curve_public, ed_public);
}

int
wire_curve_secret(const uint8_t ed_secret[WIRE_SECRET_BYTES], uint8_t curve_secret[32])
{
    return crypto_sign_ed25519_sk_to_curve25519(curve_secret, ed_secret);
}

/*
 * Ed25519 over context || 0 || data, without copying data: the state of an
 * incremental SHA-512 cannot be handed to plain Ed25519, so the prefix and the data
 * are joined in one buffer (small objects) - the cost is one memcpy of the message.
 */
static uint8_t *
contexted(const char *context, const uint8_t *data, size_t len, size_t *total)
{
    size_t clen = strlen(context) + 1;
    uint8_t *buf = malloc(clen + len + 1);
    if (!buf)
        return NULL;
    memcpy(buf, context, clen);
    if (len)
        memcpy(buf + clen, data, len);
    *total = clen + len;
    return buf;
}

void
wire_sign_detached(const char *context, const uint8_t *data, size_t len,
                   const uint8_t secret[WIRE_SECRET_BYTES], uint8_t signature[WIRE_SIGNATURE_BYTES])
{
    size_t total;
    uint8_t *buf = contexted(context, data, len, &total);
    if (!buf) {
        memset(signature, 0, WIRE_SIGNATURE_BYTES); /* verifies as nothing */
        return;
    }
    crypto_sign_detached(signature, NULL, buf, total, secret);
    free(buf);
}

int
wire_verify_detached(const char *context, const uint8_t *data, size_t len, const uint8_t *signature,
                     size_t signature_len, const uint8_t public_key[WIRE_KEY_BYTES])
{
    if (signature_len != WIRE_SIGNATURE_BYTES)
        return SPBE_BAD_SIGNATURE;
    size_t total;
    uint8_t *buf = contexted(context, data, len, &total);
    if (!buf)
        return SPBE_INTERNAL;
    int rc = crypto_sign_verify_detached(signature, buf, total, public_key);
    free(buf);
    return rc == 0 ? SPBE_OK : SPBE_BAD_SIGNATURE;
}

/* Packs a SignedMessage (message, signature, batch) into a malloc'ed buffer. */
static uint8_t *
signed_pack(const uint8_t *message, size_t mlen, const uint8_t *signature,
            Spbe__V1__BatchProof *batch, size_t *out_len)
{
    Spbe__V1__SignedMessage sm = SPBE__V1__SIGNED_MESSAGE__INIT;
    sm.message.data = (uint8_t *)message;
    sm.message.len = mlen;
    sm.signature.data = (uint8_t *)signature;
    sm.signature.len = WIRE_SIGNATURE_BYTES;
    sm.batch = batch;
    size_t slen = spbe__v1__signed_message__get_packed_size(&sm);
    uint8_t *sbuf = malloc(slen);
    if (sbuf)
        spbe__v1__signed_message__pack(&sm, sbuf);
    *out_len = slen;
    return sbuf;
}

int
wire_message_sign(const Spbe__V1__Message *message, const uint8_t secret[WIRE_SECRET_BYTES],
                  uint8_t **out, size_t *out_len)
{
    size_t mlen = spbe__v1__message__get_packed_size(message);
    uint8_t *mbuf = malloc(mlen ? mlen : 1);
    if (!mbuf)
        return SPBE_INTERNAL;
    spbe__v1__message__pack(message, mbuf);

    uint8_t sig[WIRE_SIGNATURE_BYTES];
    wire_sign_detached(WIRE_CONTEXT_MESSAGE, mbuf, mlen, secret, sig);

    *out = signed_pack(mbuf, mlen, sig, NULL, out_len);
    free(mbuf);
    return *out ? SPBE_OK : SPBE_INTERNAL;
}

int
wire_message_sign_batch(const Spbe__V1__Message *const *messages, size_t n,
                        const uint8_t secret[WIRE_SECRET_BYTES], uint8_t **out, size_t *out_len)
{
    if (n == 0 || n > WIRE_BATCH_MAX)
        return SPBE_BAD_REQUEST;
    uint8_t **encoded = calloc(n, sizeof *encoded);
    size_t *lens = calloc(n, sizeof *lens);
    uint8_t(*leaves)[WIRE_HASH_BYTES] = malloc(n * WIRE_HASH_BYTES);
    int rc = encoded && lens && leaves ? SPBE_OK : SPBE_INTERNAL;
    for (size_t i = 0; i < n && rc == SPBE_OK; i++) {
        lens[i] = spbe__v1__message__get_packed_size(messages[i]);
        encoded[i] = malloc(lens[i] ? lens[i] : 1);
        if (!encoded[i]) {
            rc = SPBE_INTERNAL;
            break;
        }
        spbe__v1__message__pack(messages[i], encoded[i]);
        wire_batch_leaf(WIRE_CONTEXT_MESSAGE, encoded[i], lens[i], leaves[i]);
    }
    wire_batch b;
    memset(&b, 0, sizeof b);
    if (rc == SPBE_OK)
        rc = wire_batch_sign(&b, (const uint8_t(*)[WIRE_HASH_BYTES])leaves, n, secret);
    size_t done = 0;
    for (; done < n && rc == SPBE_OK; done++) {
        uint8_t path[MERKLE_PATH_MAX][MERKLE_HASH_BYTES];
        ProtobufCBinaryData items[MERKLE_PATH_MAX];
        size_t np;
        if (wire_batch_path(&b, done, path, &np)) {
            rc = SPBE_INTERNAL;
            break;
        }
        for (size_t k = 0; k < np; k++) {
            items[k].data = path[k];
            items[k].len = MERKLE_HASH_BYTES;
        }
        Spbe__V1__BatchProof proof = SPBE__V1__BATCH_PROOF__INIT;
        proof.index = done;
        proof.size = n;
        proof.n_path = np;
        proof.path = items;
        out[done] = signed_pack(encoded[done], lens[done], b.signature, &proof, &out_len[done]);
        if (!out[done])
            rc = SPBE_INTERNAL;
    }
    if (rc != SPBE_OK)
        while (done > 0) {
            done--;
            free(out[done]);
            out[done] = NULL;
        }
    wire_batch_free(&b);
    for (size_t i = 0; encoded && i < n; i++)
        free(encoded[i]);
    free(encoded);
    free(lens);
    free(leaves);
    return rc;
}

int
wire_envelope_decode(const uint8_t *data, size_t len, Spbe__V1__SignedMessage **signed_out,
                     Spbe__V1__Message **message_out, const char **reason)
{
    const char *dummy;
    if (!reason)
        reason = &dummy;
    *signed_out = NULL;
    *message_out = NULL;
    Spbe__V1__SignedMessage *sm = spbe__v1__signed_message__unpack(NULL, len, data);
    if (!sm) {
        *reason = "body is not a SignedMessage";
        return SPBE_BAD_REQUEST;
    }
    Spbe__V1__Message *m = spbe__v1__message__unpack(NULL, sm->message.len, sm->message.data);
    if (!m) {
        spbe__v1__signed_message__free_unpacked(sm, NULL);
        *reason = "signed bytes are not a Message";
        return SPBE_BAD_REQUEST;
    }
    *signed_out = sm;
    *message_out = m;
    if (sm->signature.len != WIRE_SIGNATURE_BYTES) {
        *reason = "signature must be 64 bytes";
        return SPBE_BAD_REQUEST;
    }
    if (sm->batch && (*reason = wire_batch_proof_problem(sm->batch)) != NULL)
        return SPBE_BAD_REQUEST;
    if (m->id.len != WIRE_ID_BYTES) {
        *reason = "message id must be 16 bytes";
        return SPBE_BAD_REQUEST;
    }
    if (!wire_member_valid(m->sender)) {
        *reason = "sender is not a member name (agency/app)";
        return SPBE_BAD_REQUEST;
    }
    if (!wire_topic_valid(m->topic)) {
        *reason = "topic is not valid";
        return SPBE_INVALID_TOPIC;
    }
    return SPBE_OK;
}

void
wire_envelope_free(Spbe__V1__SignedMessage **signed_message, Spbe__V1__Message **message)
{
    if (signed_message && *signed_message) {
        spbe__v1__signed_message__free_unpacked(*signed_message, NULL);
        *signed_message = NULL;
    }
    if (message && *message) {
        spbe__v1__message__free_unpacked(*message, NULL);
        *message = NULL;
    }
}

int
wire_envelope_verify_cached(const Spbe__V1__SignedMessage *signed_message,
                            const uint8_t public_key[WIRE_KEY_BYTES], wire_sigcache *cache)
{
    return wire_signed_verify(WIRE_CONTEXT_MESSAGE, signed_message->message.data,
                              signed_message->message.len, signed_message->signature.data,
                              signed_message->signature.len, signed_message->batch, public_key,
                              cache);
}

int
wire_envelope_verify(const Spbe__V1__SignedMessage *signed_message,
                     const uint8_t public_key[WIRE_KEY_BYTES])
{
    return wire_envelope_verify_cached(signed_message, public_key, NULL);
}

/* ------------------------------------------------------------ batch signatures */

void
wire_batch_leaf(const char *context, const uint8_t *data, size_t len, uint8_t out[WIRE_HASH_BYTES])
{
    static const uint8_t prefix = 0x00; /* RFC 9162 leaf */
    sha256_state st;
    sha256_init(&st);
    sha256_update(&st, &prefix, 1);
    sha256_update(&st, context, strlen(context) + 1);
    sha256_update(&st, data, len);
    sha256_final(&st, out);
}

/* What the batch signature covers: size (8 bytes, big-endian) || root. */
static void
batch_signed_bytes(uint64_t size, const uint8_t root[WIRE_HASH_BYTES], uint8_t out[40])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(size >> (56 - 8 * i));
    memcpy(out + 8, root, WIRE_HASH_BYTES);
}

int
wire_batch_sign(wire_batch *b, const uint8_t (*leaf_hashes)[WIRE_HASH_BYTES], size_t n,
                const uint8_t secret[WIRE_SECRET_BYTES])
{
    memset(b, 0, sizeof *b);
    if (n == 0 || n > WIRE_BATCH_MAX)
        return SPBE_BAD_REQUEST;
    if (merkle_mem_init(&b->tree, leaf_hashes, n) ||
        merkle_root(merkle_mem_subtree, &b->tree, n, b->root)) {
        merkle_mem_free(&b->tree);
        return SPBE_INTERNAL;
    }
    uint8_t covered[40];
    batch_signed_bytes(n, b->root, covered);
    wire_sign_detached(WIRE_CONTEXT_BATCH, covered, sizeof covered, secret, b->signature);
    return SPBE_OK;
}

int
wire_batch_path(const wire_batch *b, uint64_t index, uint8_t path[][WIRE_HASH_BYTES], size_t *n)
{
    return merkle_inclusion_proof(merkle_mem_subtree, (void *)&b->tree, index, b->tree.n, path, n);
}

void
wire_batch_free(wire_batch *b)
{
    merkle_mem_free(&b->tree);
}

#define SIGCACHE_SETS 64
#define SIGCACHE_WAYS 4 /* batches in flight at once from publishers whose roots collide */

typedef struct sigcache_entry {
    int used;
    uint64_t size;
    uint8_t key[WIRE_KEY_BYTES];
    uint8_t root[WIRE_HASH_BYTES];
    uint8_t signature[WIRE_SIGNATURE_BYTES];
} sigcache_entry;

struct wire_sigcache {
    pthread_mutex_t lock;
    sigcache_entry slot[SIGCACHE_SETS][SIGCACHE_WAYS];
    unsigned next[SIGCACHE_SETS]; /* the way to replace next, round robin */
};

wire_sigcache *
wire_sigcache_new(void)
{
    wire_sigcache *c = calloc(1, sizeof *c);
    if (c && pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void
wire_sigcache_free(wire_sigcache **cache)
{
    if (!*cache)
        return;
    pthread_mutex_destroy(&(*cache)->lock);
    free(*cache);
    *cache = NULL;
}

/* 1 if the cache holds this very (key, size, root, signature) as verified; remember
 * stores it. */
static int
sigcache_probe(wire_sigcache *c, const uint8_t key[WIRE_KEY_BYTES], uint64_t size,
               const uint8_t root[WIRE_HASH_BYTES], const uint8_t *signature, int remember)
{
    if (!c)
        return 0;
    unsigned set = (root[0] ^ signature[0]) % SIGCACHE_SETS;
    int hit = 0;
    pthread_mutex_lock(&c->lock);
    if (remember) {
        sigcache_entry *e = &c->slot[set][c->next[set]++ % SIGCACHE_WAYS];
        e->used = 1;
        e->size = size;
        memcpy(e->key, key, WIRE_KEY_BYTES);
        memcpy(e->root, root, WIRE_HASH_BYTES);
        memcpy(e->signature, signature, WIRE_SIGNATURE_BYTES);
    } else {
        for (int w = 0; w < SIGCACHE_WAYS && !hit; w++) {
            const sigcache_entry *e = &c->slot[set][w];
            hit = e->used && e->size == size && memcmp(e->key, key, WIRE_KEY_BYTES) == 0 &&
                  memcmp(e->root, root, WIRE_HASH_BYTES) == 0 &&
                  memcmp(e->signature, signature, WIRE_SIGNATURE_BYTES) == 0;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

const char *
wire_batch_proof_problem(const Spbe__V1__BatchProof *batch)
{
    if (batch->size == 0 || batch->size > WIRE_BATCH_MAX)
        return "batch size must be 1 to 1048576";
    if (batch->index >= batch->size)
        return "batch index must be below the batch size";
    if (batch->n_path > MERKLE_PATH_MAX)
        return "batch path is too long";
    for (size_t i = 0; i < batch->n_path; i++)
        if (batch->path[i].len != WIRE_HASH_BYTES)
            return "batch path entries must be 32 bytes";
    return NULL;
}

int
wire_signed_verify(const char *context, const uint8_t *data, size_t len, const uint8_t *signature,
                   size_t signature_len, const Spbe__V1__BatchProof *batch,
                   const uint8_t key[WIRE_KEY_BYTES], wire_sigcache *cache)
{
    if (!batch)
        return wire_verify_detached(context, data, len, signature, signature_len, key);
    if (signature_len != WIRE_SIGNATURE_BYTES || wire_batch_proof_problem(batch))
        return SPBE_BAD_SIGNATURE;
    uint8_t path[MERKLE_PATH_MAX][MERKLE_HASH_BYTES], leaf[WIRE_HASH_BYTES], root[WIRE_HASH_BYTES];
    for (size_t i = 0; i < batch->n_path; i++)
        memcpy(path[i], batch->path[i].data, WIRE_HASH_BYTES);
    wire_batch_leaf(context, data, len, leaf);
    if (!merkle_root_from_path(leaf, batch->index, batch->size, (const uint8_t(*)[32])path,
                               batch->n_path, root))
        return SPBE_BAD_SIGNATURE;
    if (sigcache_probe(cache, key, batch->size, root, signature, 0))
        return SPBE_OK;
    uint8_t covered[40];
    batch_signed_bytes(batch->size, root, covered);
    int rc = wire_verify_detached(WIRE_CONTEXT_BATCH, covered, sizeof covered, signature,
                                  signature_len, key);
    if (rc == SPBE_OK)
        sigcache_probe(cache, key, batch->size, root, signature, 1);
    return rc;
}

/* Encodes m and signs it under context into one buffer: data, then the signature
 * (free(data->data) frees both). Without secret the signature's room is left zeroed, for
 * a batch signature set later. */
static int
sign_encoded(const char *context, const ProtobufCMessage *m,
             const uint8_t secret[WIRE_SECRET_BYTES], ProtobufCBinaryData *data,
             ProtobufCBinaryData *signature)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + WIRE_SIGNATURE_BYTES);
    if (!buf)
        return SPBE_INTERNAL;
    protobuf_c_message_pack(m, buf);
    if (secret)
        wire_sign_detached(context, buf, len, secret, buf + len);
    else
        memset(buf + len, 0, WIRE_SIGNATURE_BYTES);
    data->data = buf;
    data->len = len;
    signature->data = buf + len;
    signature->len = WIRE_SIGNATURE_BYTES;
    return SPBE_OK;
}

/* Verifies signed data under context with key (singly or through a batch proof), then
 * decodes it as descriptor's type. */
static int
verify_batched(const char *context, const ProtobufCBinaryData *data,
               const ProtobufCBinaryData *signature, const Spbe__V1__BatchProof *batch,
               const uint8_t key[WIRE_KEY_BYTES], wire_sigcache *cache,
               const ProtobufCMessageDescriptor *descriptor, ProtobufCMessage **out)
{
    *out = NULL;
    int rc = wire_signed_verify(context, data->data, data->len, signature->data, signature->len,
                                batch, key, cache);
    if (rc != SPBE_OK)
        return rc;
    *out = protobuf_c_message_unpack(descriptor, NULL, data->len, data->data);
    return *out ? SPBE_OK : SPBE_BAD_REQUEST;
}

static int
verify_encoded(const char *context, const ProtobufCBinaryData *data,
               const ProtobufCBinaryData *signature, const uint8_t key[WIRE_KEY_BYTES],
               const ProtobufCMessageDescriptor *descriptor, ProtobufCMessage **out)
{
    return verify_batched(context, data, signature, NULL, key, NULL, descriptor, out);
}

int
wire_receipt_sign(const Spbe__V1__Receipt *receipt, const uint8_t secret[WIRE_SECRET_BYTES],
                  Spbe__V1__SignedReceipt *out)
{
    spbe__v1__signed_receipt__init(out);
    return sign_encoded(WIRE_CONTEXT_RECEIPT, &receipt->base, secret, &out->receipt,
                        &out->signature);
}

int
wire_receipt_encode(const Spbe__V1__Receipt *receipt, Spbe__V1__SignedReceipt *out)
{
    spbe__v1__signed_receipt__init(out);
    return sign_encoded(WIRE_CONTEXT_RECEIPT, &receipt->base, NULL, &out->receipt, &out->signature);
}

int
wire_receipt_verify_cached(const Spbe__V1__SignedReceipt *signed_receipt,
                           const uint8_t broker_key[WIRE_KEY_BYTES], wire_sigcache *cache,
                           Spbe__V1__Receipt **receipt_out)
{
    return verify_batched(WIRE_CONTEXT_RECEIPT, &signed_receipt->receipt,
                          &signed_receipt->signature, signed_receipt->batch, broker_key, cache,
                          &spbe__v1__receipt__descriptor, (ProtobufCMessage **)receipt_out);
}

int
wire_receipt_verify(const Spbe__V1__SignedReceipt *signed_receipt,
                    const uint8_t broker_key[WIRE_KEY_BYTES], Spbe__V1__Receipt **receipt_out)
{
    return wire_receipt_verify_cached(signed_receipt, broker_key, NULL, receipt_out);
}

const uint8_t *
wire_member_key_at(const Spbe__V1__Member *m, int64_t t_ns)
{
    if (m->n_keys == 0)
        return m->public_key.len == WIRE_KEY_BYTES ? m->public_key.data : NULL;
    for (size_t i = 0; i < m->n_keys; i++) {
        const Spbe__V1__MemberKey *k = m->keys[i];
        if (k->public_key.len == WIRE_KEY_BYTES && (i == 0 || t_ns >= k->valid_from_ns) &&
            (k->valid_until_ns == 0 || t_ns < k->valid_until_ns))
            return k->public_key.data;
    }
    return NULL;
}

static size_t
rotation_bytes(const char *name, const uint8_t key[WIRE_KEY_BYTES], uint8_t *out)
{
    size_t n = strlen(name);
    memcpy(out, name, n);
    memcpy(out + n, key, WIRE_KEY_BYTES);
    return n + WIRE_KEY_BYTES;
}

void
wire_rotation_sign(const char *name, const uint8_t key[WIRE_KEY_BYTES],
                   const uint8_t secret[WIRE_SECRET_BYTES], uint8_t proof[WIRE_SIGNATURE_BYTES])
{
    uint8_t buf[WIRE_MEMBER_MAX_BYTES + 1 + WIRE_KEY_BYTES];
    size_t len = rotation_bytes(name, key, buf);
    wire_sign_detached(WIRE_CONTEXT_KEY_ROTATION, buf, len, secret, proof);
}

int
wire_rotation_verify(const char *name, const uint8_t key[WIRE_KEY_BYTES], const uint8_t *proof,
                     size_t proof_len)
{
    uint8_t buf[WIRE_MEMBER_MAX_BYTES + 1 + WIRE_KEY_BYTES];
    if (strlen(name) > WIRE_MEMBER_MAX_BYTES)
        return SPBE_BAD_REQUEST;
    size_t len = rotation_bytes(name, key, buf);
    return wire_verify_detached(WIRE_CONTEXT_KEY_ROTATION, buf, len, proof, proof_len, key);
}

int
wire_delivery_sign(const Spbe__V1__DeliveryReceipt *receipt,
                   const uint8_t secret[WIRE_SECRET_BYTES], Spbe__V1__SignedDeliveryReceipt *out)
{
    spbe__v1__signed_delivery_receipt__init(out);
    return sign_encoded(WIRE_CONTEXT_DELIVERY, &receipt->base, secret, &out->receipt,
                        &out->signature);
}

int
wire_delivery_verify(const Spbe__V1__SignedDeliveryReceipt *signed_receipt,
                     const uint8_t key[WIRE_KEY_BYTES], Spbe__V1__DeliveryReceipt **receipt_out)
{
    return verify_encoded(WIRE_CONTEXT_DELIVERY, &signed_receipt->receipt,
                          &signed_receipt->signature, key, &spbe__v1__delivery_receipt__descriptor,
                          (ProtobufCMessage **)receipt_out);
}

int
wire_broker_rotation_sign(const Spbe__V1__BrokerKeyRotation *rotation,
                          const uint8_t old_secret[WIRE_SECRET_BYTES],
                          Spbe__V1__SignedBrokerKeyRotation *out)
{
    spbe__v1__signed_broker_key_rotation__init(out);
    return sign_encoded(WIRE_CONTEXT_BROKER_KEY, &rotation->base, old_secret, &out->rotation,
                        &out->signature);
}

int
wire_broker_rotation_verify(const Spbe__V1__SignedBrokerKeyRotation *signed_rotation,
                            Spbe__V1__BrokerKeyRotation **rotation_out)
{
    *rotation_out = spbe__v1__broker_key_rotation__unpack(NULL, signed_rotation->rotation.len,
                                                          signed_rotation->rotation.data);
    Spbe__V1__BrokerKeyRotation *r = *rotation_out;
    if (!r || r->old_key.len != WIRE_KEY_BYTES || r->new_key.len != WIRE_KEY_BYTES) {
        if (r)
            spbe__v1__broker_key_rotation__free_unpacked(r, NULL);
        *rotation_out = NULL;
        return SPBE_BAD_REQUEST;
    }
    int rc = wire_verify_detached(WIRE_CONTEXT_BROKER_KEY, signed_rotation->rotation.data,
                                  signed_rotation->rotation.len, signed_rotation->signature.data,
                                  signed_rotation->signature.len, r->old_key.data);
    if (rc != SPBE_OK) {
        spbe__v1__broker_key_rotation__free_unpacked(r, NULL);
        *rotation_out = NULL;
    }
    return rc;
}

int
wire_tree_head_sign(const Spbe__V1__TreeHead *head, const uint8_t secret[WIRE_SECRET_BYTES],
                    Spbe__V1__SignedTreeHead *out)
{
    spbe__v1__signed_tree_head__init(out);
    return sign_encoded(WIRE_CONTEXT_TREE_HEAD, &head->base, secret, &out->head, &out->signature);
}

int
wire_tree_head_encode(uint64_t size, const uint8_t root[WIRE_HASH_BYTES], const char *broker,
                      const uint8_t secret[WIRE_SECRET_BYTES], uint8_t **out, size_t *len)
{
    Spbe__V1__TreeHead th = SPBE__V1__TREE_HEAD__INIT;
    th.size = size;
    th.root.data = (uint8_t *)root;
    th.root.len = WIRE_HASH_BYTES;
    th.timestamp_ns = wire_now_ns();
    th.broker = (char *)broker;
    Spbe__V1__SignedTreeHead sth;
    *out = NULL;
    if (wire_tree_head_sign(&th, secret, &sth) != SPBE_OK)
        return SPBE_INTERNAL;
    *len = spbe__v1__signed_tree_head__get_packed_size(&sth);
    *out = malloc(*len ? *len : 1);
    if (*out)
        spbe__v1__signed_tree_head__pack(&sth, *out);
    free(sth.head.data);
    return *out ? SPBE_OK : SPBE_INTERNAL;
}

int
wire_tree_head_verify(const Spbe__V1__SignedTreeHead *signed_head,
                      const uint8_t broker_key[WIRE_KEY_BYTES], Spbe__V1__TreeHead **head_out)
{
    int rc =
        verify_encoded(WIRE_CONTEXT_TREE_HEAD, &signed_head->head, &signed_head->signature,
                       broker_key, &spbe__v1__tree_head__descriptor, (ProtobufCMessage **)head_out);
    if (rc == SPBE_OK && (*head_out)->root.len != WIRE_HASH_BYTES) {
        spbe__v1__tree_head__free_unpacked(*head_out, NULL);
        *head_out = NULL;
        rc = SPBE_BAD_REQUEST;
    }
    return rc;
}

int
wire_pattern_covers(const char *granted, const char *pattern)
{
    if (pattern[0] == '$' && granted[0] != '$')
        return 0;
    const char *g = granted, *p = pattern;
    while (1) {
        const char *ge = strchr(g, '.');
        const char *pe = strchr(p, '.');
        size_t gn = ge ? (size_t)(ge - g) : strlen(g);
        size_t pn = pe ? (size_t)(pe - p) : strlen(p);
        if (gn == 1 && *g == '>')
            return 1; /* covers one or more tokens, whatever they are */
        if (pn == 1 && *p == '>')
            return 0; /* the pattern reaches further than a single granted token */
        if (gn == 1 && *g == '*') {
            /* covers any single token, wildcard or not */
        } else if ((pn == 1 && *p == '*') || gn != pn || memcmp(g, p, gn) != 0) {
            return 0;
        }
        if (!ge || !pe)
            return !ge && !pe;
        g = ge + 1;
        p = pe + 1;
    }
}
