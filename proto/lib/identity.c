/* identity.c - reading and writing identity files. */
#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
identity_generate(const char *member, identity *id)
{
    memset(id, 0, sizeof *id);
    if (!wire_member_valid(member))
        return SPBE_BAD_REQUEST;
    snprintf(id->member, sizeof id->member, "%s", member);
    crypto_sign_keypair(id->public_key, id->secret_key);
    id->has_secret = 1;
    return SPBE_OK;
}

static int
write_file(const char *path, const char *text, mode_t mode, int overwrite, char *err,
           size_t err_len)
{
    int fd = open(path, O_WRONLY | O_CREAT | (overwrite ? O_TRUNC : O_EXCL), mode);
    if (fd < 0) {
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
        return errno == EEXIST ? SPBE_BAD_REQUEST : SPBE_INTERNAL;
    }
    fchmod(fd, mode);
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int ok = n == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (!ok) {
        snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
        return SPBE_INTERNAL;
    }
    return SPBE_OK;
}

int
identity_save(const identity *id, const char *path, int overwrite, char *err, size_t err_len)
{
    char pk[2 * WIRE_KEY_BYTES + 1], sk[2 * WIRE_SECRET_BYTES + 1], bk[2 * WIRE_KEY_BYTES + 1];
    char text[1024];
    wire_hex_encode(id->public_key, WIRE_KEY_BYTES, pk);
    wire_hex_encode(id->secret_key, WIRE_SECRET_BYTES, sk);
    int n = snprintf(text, sizeof text,
                     "# spbe identity of %s: secret, keep it mode 0600 on the member's machine\n"
                     "member = %s\npublic_key = %s\nsecret_key = %s\n",
                     id->member, id->member, pk, sk);
    if (id->broker[0])
        n += snprintf(text + n, sizeof text - n, "broker = %s\n", id->broker);
    if (id->has_broker_key) {
        wire_hex_encode(id->broker_key, WIRE_KEY_BYTES, bk);
        snprintf(text + n, sizeof text - n, "broker_key = %s\n", bk);
    }
    int rc = write_file(path, text, 0600, overwrite, err, err_len);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(text, sizeof text);
    return rc;
}

int
identity_save_public(const identity *id, const char *path, int overwrite, char *err, size_t err_len)
{
    char pk[2 * WIRE_KEY_BYTES + 1], text[512];
    wire_hex_encode(id->public_key, WIRE_KEY_BYTES, pk);
    snprintf(text, sizeof text, "# spbe public key of %s\nmember = %s\npublic_key = %s\n",
             id->member, id->member, pk);
    return write_file(path, text, 0644, overwrite, err, err_len);
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int
identity_load(const char *path, identity *id, char *err, size_t err_len)
{
    memset(id, 0, sizeof *id);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
        return errno == ENOENT ? SPBE_NOT_FOUND : SPBE_INTERNAL;
    }
    struct stat st;
    int has_public = 0, line_no = 0, rc = SPBE_OK;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line_no++;
        char *s = trim(line);
        if (*s == '#' || *s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, err_len, "%s:%d: expected 'key = value'", path, line_no);
            rc = SPBE_BAD_REQUEST;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (strcmp(key, "member") == 0 && wire_member_valid(value)) {
            snprintf(id->member, sizeof id->member, "%s", value);
        } else if (strcmp(key, "public_key") == 0 &&
                   wire_hex_decode(value, id->public_key, WIRE_KEY_BYTES) == SPBE_OK) {
            has_public = 1;
        } else if (strcmp(key, "secret_key") == 0 &&
                   wire_hex_decode(value, id->secret_key, WIRE_SECRET_BYTES) == SPBE_OK) {
            id->has_secret = 1;
        } else if (strcmp(key, "broker") == 0 && strlen(value) < sizeof id->broker) {
            snprintf(id->broker, sizeof id->broker, "%s", value);
        } else if (strcmp(key, "broker_key") == 0 &&
                   wire_hex_decode(value, id->broker_key, WIRE_KEY_BYTES) == SPBE_OK) {
            id->has_broker_key = 1;
        } else {
            snprintf(err, err_len, "%s:%d: bad or unknown '%s'", path, line_no, key);
            rc = SPBE_BAD_REQUEST;
            break;
        }
    }
    sodium_memzero(line, sizeof line);
    if (rc == SPBE_OK && (!id->member[0] || !has_public)) {
        snprintf(err, err_len, "%s: needs member and public_key", path);
        rc = SPBE_BAD_REQUEST;
    }
    if (rc == SPBE_OK && id->has_secret) {
        if (memcmp(id->secret_key + 32, id->public_key, WIRE_KEY_BYTES) != 0) {
            snprintf(err, err_len, "%s: secret_key does not belong to public_key", path);
            rc = SPBE_BAD_REQUEST;
        } else if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077)) {
            snprintf(err, err_len, "%s: secret identity readable by others (mode %o); chmod 600",
                     path, (unsigned)(st.st_mode & 0777));
            rc = SPBE_BAD_REQUEST;
        }
    }
    fclose(f);
    if (rc != SPBE_OK)
        sodium_memzero(id, sizeof *id);
    return rc;
}
