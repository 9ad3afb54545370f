/*
 * test_disk.c - the disk fails the broker: a small file system that fills up (tmpfs of
 * 8 MiB, mounted by the test; it needs root, as CI has), and write errors injected under
 * the data file (an LD_PRELOAD shim). Either way nothing unsafe is acknowledged, nothing
 * acknowledged is lost, the audit log verifies, and the broker recovers by itself when
 * the disk does.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "wire.h"

static int64_t
ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SIGKILL, restart, and check: every acknowledged message is there, the log verifies. */
static void
kill_restart_verify(test_broker *b, const char *topic, uint64_t acknowledged)
{
    assert_int_equal(harness_broker_signal(b, SIGKILL) & 0x7f, SIGKILL);
    assert_int_equal(harness_broker_restart(b), 0);
    assert_int_equal(harness_stored(b, topic), acknowledged);
    char out[4096], err[4096];
    int rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s", b->data);
    if (rc != 0)
        fail_msg("audit verify: %s%s", out, err);
}

static void
test_a_full_disk_then_room_again(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        printf("# skipped: mounting a small file system needs root (CI runs as root)\n");
        skip();
    }
    char mnt[64], data[96], out[256], err[1024];
    snprintf(mnt, sizeof mnt, "/tmp/spbe-disk-XXXXXX");
    assert_non_null(mkdtemp(mnt));
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err,
                                 "mount -t tmpfs -o size=8m spbe-test %s", mnt),
                     0);
    snprintf(data, sizeof data, "%s/data", mnt);
    test_broker b;
    assert_int_equal(harness_broker_start_in(&b, data, NULL), 0);
    char key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "disk.>", "disk.>", NULL, key), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    assert_non_null(c);
    static char payload[4096];
    memset(payload, 'p', sizeof payload);
    uint64_t ok = 0;
    int code = SPBE_OK;
    spbe_receipt r;
    for (int i = 0; i < 10000 && code == SPBE_OK; i++)
        if ((code = spbe_publish(c, "disk.full", payload, sizeof payload, NULL, &r)) == SPBE_OK)
            ok++;
    printf("# 8 MiB file system: %llu messages of 4 KiB acknowledged, then %s: %s\n",
           (unsigned long long)ok, spbe_error_name(code), r.error);
    assert_int_equal(code, SPBE_STORAGE_FULL);
    assert_true(ok >= 100);
    for (int i = 0; i < 5; i++) /* it stays refused, and says why */
        assert_int_equal(spbe_publish(c, "disk.full", payload, sizeof payload, NULL, &r),
                         SPBE_STORAGE_FULL);
    assert_int_equal(harness_stored(&b, "disk.full"), ok); /* readable, nothing more */

    /* room returns: the file system grows, publishing resumes by itself */
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "mount -o remount,size=64m %s", mnt), 0);
    int64_t end = ms_now() + 10000;
    while ((code = spbe_publish(c, "disk.full", payload, sizeof payload, NULL, &r)) != SPBE_OK &&
           ms_now() < end)
        usleep(100000);
    assert_int_equal(code, SPBE_OK);
    assert_int_equal(r.sequence, ok + 1); /* no sequence was spent on what was refused */
    ok++;
    for (int i = 0; i < 100; i++, ok++)
        assert_int_equal(spbe_publish(c, "disk.full", payload, sizeof payload, NULL, NULL),
                         SPBE_OK);
    spbe_close(&c);
    kill_restart_verify(&b, "disk.full", ok);
    assert_int_equal(harness_broker_stop(&b), 0);
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "umount %s && rmdir %s", mnt, mnt), 0);
}

static void
test_write_errors_then_recovery(void **state)
{
    (void)state;
    char trigger[64];
    snprintf(trigger, sizeof trigger, "/tmp/spbe-fault-%ld", (long)getpid());
    unlink(trigger);
    /* the broker runs with the shim; an ASan build accepts it ahead of its runtime */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved_asan = asan ? strdup(asan) : NULL;
    char asan_options[1024];
    snprintf(asan_options, sizeof asan_options, "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", asan_options, 1);
    setenv("LD_PRELOAD", SPBE_FAILWRITE_LIB, 1);
    setenv("SPBE_FAULT_TRIGGER", trigger, 1);
    test_broker b;
    int started = harness_broker_start(&b, NULL);
    unsetenv("LD_PRELOAD");
    if (saved_asan)
        setenv("ASAN_OPTIONS", saved_asan, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved_asan);
    assert_int_equal(started, 0);
    char key[400];
    assert_int_equal(harness_member(&b, "bkn/siasn", "disk.>", "disk.>", NULL, key), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    assert_non_null(c);
    uint64_t ok = 0;
    spbe_receipt r;
    for (int i = 0; i < 50; i++, ok++)
        assert_int_equal(spbe_publish(c, "disk.eio", "before", 6, NULL, NULL), SPBE_OK);

    /* the disk fails: no receipt says OK, each says why */
    FILE *t = fopen(trigger, "w");
    assert_non_null(t);
    fclose(t);
    int refused = 0;
    for (int i = 0; i < 20; i++) {
        int code = spbe_publish(c, "disk.eio", "during", 6, NULL, &r);
        assert_int_not_equal(code, SPBE_OK);
        assert_int_not_equal(code, SPBE_DUPLICATE);
        if (code == SPBE_INTERNAL)
            refused++;
    }
    printf("# write errors: 20 publishes refused (%d INTERNAL, last: %s)\n", refused, r.error);
    assert_int_equal(refused, 20);
    /* the broker still answers what needs no write */
    char out[4096], err[1024];
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "$SPBE topic ls --key %s", b.admin_key), 0);

    /* the disk is back: publishing resumes where it stopped */
    unlink(trigger);
    int code = SPBE_INTERNAL;
    int64_t end = ms_now() + 10000;
    while ((code = spbe_publish(c, "disk.eio", "after", 5, NULL, &r)) != SPBE_OK && ms_now() < end)
        usleep(100000);
    assert_int_equal(code, SPBE_OK);
    assert_int_equal(r.sequence, ok + 1);
    ok++;
    for (int i = 0; i < 50; i++, ok++)
        assert_int_equal(spbe_publish(c, "disk.eio", "after", 5, NULL, NULL), SPBE_OK);
    spbe_close(&c);
    kill_restart_verify(&b, "disk.eio", ok);
    assert_int_equal(harness_broker_stop(&b), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_full_disk_then_room_again),
        cmocka_unit_test(test_write_errors_then_recovery),
    };
    if (wire_init() != SPBE_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
