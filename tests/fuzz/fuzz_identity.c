/* fuzz_identity.c - the identity file parser on arbitrary file contents. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) {
        wire_init();
        snprintf(path, sizeof path, "/tmp/spbe-fuzz-identity-%d", (int)getpid());
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    chmod(path, 0600);
    identity id;
    char err[512];
    if (identity_load(path, &id, err, sizeof err) == SPBE_OK) {
        if (!wire_member_valid(id.member))
            __builtin_trap();
        if (id.has_secret && memcmp(id.secret_key + 32, id.public_key, 32) != 0)
            __builtin_trap();
    }
    unlink(path);
    return 0;
}
