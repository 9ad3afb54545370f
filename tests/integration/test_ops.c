/*
 * test_ops.c - operations: a backup taken while publishers run opens cleanly, passes
 * spbe audit verify, and a broker started on it serves every message acknowledged
 * before the backup began.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

#define MAX_ACKED 200000

typedef struct publisher {
    test_broker *broker;
    const char *key;
    volatile int stop;
    volatile long acked; /* receipts so far: sequences 1..acked of backup.t */
    int ok;
} publisher;

static void
on_receipt(const spbe_receipt *r, void *arg)
{
    publisher *p = arg;
    if (r->code == SPBE_OK)
        __atomic_add_fetch(&p->acked, 1, __ATOMIC_RELEASE);
}

static void *
publish_run(void *arg)
{
    publisher *p = arg;
    spbe_client *c = harness_connect(p->broker, p->key, 0);
    if (!c)
        return NULL;
    spbe_set_receipt_handler(c, on_receipt, p);
    int ok = 1;
    while (ok && !p->stop) {
        if (spbe_in_flight(c) < 100)
            ok = spbe_publish_async(c, "backup.t", "data", 4, NULL, NULL) == SPBE_OK;
        ok = ok && spbe_dispatch(c, spbe_in_flight(c) < 100 ? 0 : 50, NULL) == SPBE_OK;
    }
    p->ok = ok && spbe_flush(c, 10000) == SPBE_OK;
    spbe_close(&c);
    return NULL;
}

typedef struct seen {
    uint64_t next;
    int gaps;
} seen;

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    seen *s = arg;
    if (d->sequence != s->next)
        s->gaps++;
    s->next = d->sequence + 1;
}

static void
test_backup_while_publishing(void **state)
{
    (void)state;
    test_broker b;
    assert_int_equal(harness_broker_start(&b, NULL), 0);
    char key[400], backup[600], out[4096], err[4096];
    assert_int_equal(harness_member(&b, "bkn/siasn", "backup.>", "backup.>", NULL, key), 0);
    publisher p = {.broker = &b, .key = key};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publish_run, &p), 0);
    while (__atomic_load_n(&p.acked, __ATOMIC_ACQUIRE) < 2000)
        usleep(10000);
    long before = __atomic_load_n(&p.acked, __ATOMIC_ACQUIRE);
    snprintf(backup, sizeof backup, "%s/backup", b.dir);
    int rc =
        harness_run(out, sizeof out, err, sizeof err, "$SPBE backup --data %s %s", b.data, backup);
    long after = __atomic_load_n(&p.acked, __ATOMIC_ACQUIRE);
    usleep(200000); /* publishing went on during the copy */
    p.stop = 1;
    pthread_join(th, NULL);
    if (rc != 0)
        fail_msg("backup: %s", err);
    assert_true(p.ok);
    printf("# backup taken with %ld acknowledged before it, %ld by its end, %ld in all\n", before,
           after, p.acked);
    assert_true(p.acked > after); /* it did not stop the publisher */
    /* the copy opens cleanly and verifies */
    rc = harness_run(out, sizeof out, err, sizeof err, "$SPBE audit verify --data %s", backup);
    if (rc != 0)
        fail_msg("verify of the backup: %s", err);
    /* a broker on the backup serves every message acknowledged before it began */
    assert_int_equal(harness_broker_signal(&b, SIGTERM), 0);
    assert_int_equal(harness_run(NULL, 0, NULL, 0, "rm -rf %s && mv %s %s", b.data, backup, b.data),
                     0);
    assert_int_equal(harness_broker_restart(&b), 0);
    spbe_client *c = harness_connect(&b, key, 0);
    seen s = {.next = 1};
    spbe_set_delivery_handler(c, on_delivery, &s);
    assert_int_equal(spbe_subscribe(c, "backup.t", SPBE_START_FIRST, 0, NULL), SPBE_OK);
    for (int i = 0; i < 200 && s.next <= (uint64_t)before; i++)
        assert_int_equal(spbe_dispatch(c, 50, NULL), SPBE_OK);
    assert_true(s.next > (uint64_t)before);
    assert_int_equal(s.gaps, 0);
    /* and it takes new messages after them */
    spbe_receipt r;
    assert_int_equal(spbe_publish(c, "backup.t", "restored", 8, NULL, &r), SPBE_OK);
    assert_true(r.sequence >= (uint64_t)before + 1);
    spbe_close(&c);
    assert_int_equal(harness_broker_stop(&b), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backup_while_publishing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
