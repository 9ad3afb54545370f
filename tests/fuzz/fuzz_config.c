/* fuzz_config.c - the broker's configuration file reader on arbitrary file contents. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/spbe-fuzz-config-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    broker_config c;
    config_defaults(&c);
    char err[600];
    config_load_file(&c, path, err, sizeof err);
    return 0;
}
