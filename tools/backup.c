/*
 * backup.c - spbe backup: a consistent, compacted copy of a data directory, taken while
 * the broker runs (one LMDB read transaction), with the keys beside it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char backup_usage[] =
    "usage: spbe backup --data DIR OUT\n"
    "\n"
    "Copies the data directory DIR into OUT (a new directory): the LMDB environment as one\n"
    "consistent snapshot, compacted (free pages left out), taken while the broker runs and\n"
    "publishers go on; and the key files (broker.key, broker.pub, admin.key, retired broker\n"
    "keys) with their permissions. Every message acknowledged before the backup began is in\n"
    "it. Restore: stop the broker, move OUT into place, start spbe-broker --data OUT.\n";

/* Copies one file, keeping its permission bits. 0, or -1 (missing files are skipped: 1). */
static int
copy_file(const char *from, const char *to)
{
    struct stat st;
    if (stat(from, &st) != 0)
        return errno == ENOENT ? 1 : -1;
    int in = open(from, O_RDONLY);
    int out = in >= 0 ? open(to, O_WRONLY | O_CREAT | O_EXCL, st.st_mode & 0777) : -1;
    int ok = in >= 0 && out >= 0;
    char buf[8192];
    ssize_t n;
    while (ok && (n = read(in, buf, sizeof buf)) > 0)
        ok = write(out, buf, (size_t)n) == n;
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

static int
is_key_file(const char *name)
{
    return strcmp(name, "broker.key") == 0 || strcmp(name, "admin.key") == 0 ||
           strncmp(name, "broker.pub", 10) == 0;
}

int
cmd_backup(int argc, char **argv)
{
    cli_common common;
    int i = cli_parse(argc, argv, &common, NULL, "", NULL, NULL, backup_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (!common.data || argc - i != 1) {
        fputs(backup_usage, stderr);
        return EXIT_USAGE;
    }
    const char *out = argv[i];
    store *s = cli_open_store(&common, "backup");
    if (!s)
        return EXIT_ERROR;
    char err[512];
    int rc = store_backup(s, out, err, sizeof err);
    store_close(&s);
    if (rc != SPBE_OK)
        return cli_fail("backup", rc, "%s", err);
    DIR *d = opendir(common.data);
    struct dirent *e;
    int keys = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (!is_key_file(e->d_name))
            continue;
        char from[1200], to[1200];
        snprintf(from, sizeof from, "%s/%s", common.data, e->d_name);
        snprintf(to, sizeof to, "%s/%s", out, e->d_name);
        if (copy_file(from, to) < 0) {
            closedir(d);
            return cli_fail("backup", SPBE_INTERNAL, "cannot copy %s: %s", from, strerror(errno));
        }
        keys++;
    }
    if (d)
        closedir(d);
    /* the copy opens and reads: what the broker would load */
    cli_common copy = common;
    copy.data = out;
    s = cli_open_store(&copy, "backup");
    if (!s)
        return EXIT_ERROR;
    rc = store_check(s, err, sizeof err);
    store_reader *r;
    uint64_t entries = 0;
    if (rc == SPBE_OK && store_reader_begin(s, &r) == SPBE_OK) {
        store_audit_size(r, &entries);
        store_reader_end(&r);
    }
    store_close(&s);
    if (rc != SPBE_OK)
        return cli_fail("backup", rc, "the copy does not check: %s", err);
    char path[1200];
    snprintf(path, sizeof path, "%s/data.mdb", out);
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : 0;
    if (common.json) {
        printf("{\"out\":");
        cli_json_string(stdout, out);
        printf(",\"bytes\":%lld,\"entries\":%llu,\"key_files\":%d}\n", bytes,
               (unsigned long long)entries, keys);
    } else {
        printf("backup of %s in %s: %lld bytes, %llu audit log entries, %d key files\n",
               common.data, out, bytes, (unsigned long long)entries, keys);
    }
    return EXIT_OK;
}
