/* test_broker_parts.c - the broker's service table (round robin, pending requests,
 * deadlines, sessions going away) and its retention and storage-limit settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "service.h"
#include "spbe/errors.h"

static void
test_requests_go_round_robin_and_the_count_does_not_move_the_turn(void **state)
{
    (void)state;
    service_table *t = service_table_new();
    int a, b; /* two sessions: only their addresses matter */
    assert_null(service_pick(t, "svc.x"));
    assert_int_equal(service_servers(t, "svc.x"), 0);
    assert_int_equal(service_serve(t, "svc.x", &a), SPBE_OK);
    assert_int_equal(service_serve(t, "svc.x", &b), SPBE_OK);
    assert_int_equal(service_serve(t, "svc.x", &a), SPBE_OK); /* again: no change */
    assert_int_equal(service_servers(t, "svc.x"), 2);
    void *first = service_pick(t, "svc.x");
    assert_int_equal(service_servers(t, "svc.x"), 2);
    void *second = service_pick(t, "svc.x");
    assert_true(first != second);
    assert_ptr_equal(service_pick(t, "svc.x"), first);
    assert_null(service_pick(t, "svc.y"));
    assert_int_equal(service_unserve(t, "svc.x", &a), SPBE_OK);
    assert_int_equal(service_unserve(t, "svc.x", &a), SPBE_NOT_FOUND);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(service_pick(t, "svc.x"), &b);
    service_table_destroy(&t);
    assert_null(t);
}

static pending_request
request(void *server, int64_t deadline_ns)
{
    pending_request p;
    memset(&p, 0, sizeof p);
    p.server = server;
    p.deadline_ns = deadline_ns;
    snprintf(p.service, sizeof p.service, "svc.x");
    p.receipt = malloc(8);
    p.receipt_len = 8;
    return p;
}

static void
test_pending_requests_by_ref_deadline_and_server(void **state)
{
    (void)state;
    service_table *t = service_table_new();
    int a, b;
    assert_int_equal(service_next_deadline(t), INT64_MAX);
    pending_request r1 = request(&a, 300), r2 = request(&b, 100), r3 = request(&a, 200);
    assert_int_equal(service_pending_add(t, &r1), SPBE_OK);
    assert_int_equal(service_pending_add(t, &r2), SPBE_OK);
    assert_int_equal(service_pending_add(t, &r3), SPBE_OK);
    assert_true(r1.ref && r2.ref && r3.ref && r1.ref != r2.ref && r2.ref != r3.ref);
    assert_int_equal(service_next_deadline(t), 100);
    assert_ptr_equal(service_pending_find(t, r2.ref)->server, &b);
    assert_null(service_pending_find(t, 9999));
    /* nothing is late at 50; at 150 the one due at 100 is */
    assert_null(service_pending_expired(t, 50));
    pending_request *late = service_pending_expired(t, 150);
    assert_non_null(late);
    assert_int_equal(late->ref, r2.ref);
    service_pending_free(late);
    assert_null(service_pending_find(t, r2.ref));
    assert_null(service_pending_expired(t, 150));
    /* server a goes away: both of its requests come back to be failed */
    pending_request *orphans = service_drop_session(t, &a);
    int n = 0;
    while (orphans) {
        pending_request *next = orphans->next;
        assert_ptr_equal(orphans->server, &a);
        service_pending_free(orphans);
        orphans = next;
        n++;
    }
    assert_int_equal(n, 2);
    assert_int_equal(service_next_deadline(t), INT64_MAX);
    /* an answer takes its request out */
    pending_request r4 = request(&b, 500);
    assert_int_equal(service_pending_add(t, &r4), SPBE_OK);
    pending_request *taken = service_pending_take(t, r4.ref);
    assert_non_null(taken);
    service_pending_free(taken);
    assert_null(service_pending_take(t, r4.ref));
    service_table_destroy(&t);
}

static void
test_retention_rules_parse_with_units_and_refuse_what_is_not_one(void **state)
{
    (void)state;
    store_retention r;
    char err[256];
    assert_int_equal(config_parse_retention("ikn.>:max-age=30d,max-messages=1000,max-bytes=2G", &r,
                                            err, sizeof err),
                     0);
    assert_string_equal(r.pattern, "ikn.>");
    assert_int_equal(r.max_age_ns, 30LL * 86400 * 1000000000);
    assert_int_equal(r.max_messages, 1000);
    assert_int_equal(r.max_bytes, 2ull << 30);
    assert_int_equal(config_parse_retention("a.*:max-age=90s", &r, err, sizeof err), 0);
    assert_int_equal(r.max_age_ns, 90LL * 1000000000);
    assert_int_equal(r.max_messages, 0);
    assert_int_equal(config_parse_retention("a:max-bytes=512k", &r, err, sizeof err), 0);
    assert_int_equal(r.max_bytes, 512 * 1024);
    static const char *bad[] = {"ikn.>",           "ikn.>:",          "IKN:max-age=1d",
                                "a:max-age=1y",    "a:max-age=-1s",   "a:max-messages=0",
                                "a:max-bytes=1T",  "a:max-size=1",    "a:max-age=1d,",
                                "a:max-messages=", "a:max-age=1d,,x", ":max-age=1d"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        if (config_parse_retention(bad[i], &r, err, sizeof err) == 0)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(err, "retention rule"));
    }
}

static void
test_broker_flags_for_retention_and_the_storage_limit(void **state)
{
    (void)state;
    broker_config c;
    config_defaults(&c);
    assert_int_equal(c.max_store_bytes, 0); /* unlimited by default */
    assert_int_equal(c.n_retention, 0);
    char *ok[] = {"spbe-broker", "--retain",         "ikn.a.>:max-messages=5",
                  "--retain",    "ikn.>:max-age=7d", "--max-store-bytes",
                  "10485760"};
    assert_int_equal(config_parse_args(&c, 7, ok), 0);
    assert_int_equal(c.n_retention, 2);
    assert_string_equal(c.retention[0].pattern, "ikn.a.>");
    assert_int_equal(c.max_store_bytes, 10485760);
    char *small[] = {"spbe-broker", "--max-store-bytes", "1000"};
    config_defaults(&c);
    assert_int_equal(config_parse_args(&c, 3, small), 2);
    char *bad[] = {"spbe-broker", "--retain", "ikn.>:max-age=soon"};
    config_defaults(&c);
    assert_int_equal(config_parse_args(&c, 3, bad), 2);
}

static void
test_one_setter_for_flags_and_file(void **state)
{
    (void)state;
    broker_config c;
    config_defaults(&c);
    char err[256];
    assert_int_equal(config_set(&c, "max_store_bytes", "2G", err, sizeof err), 0);
    assert_int_equal(c.max_store_bytes, 2ull << 30);
    assert_int_equal(config_set(&c, "max_store_bytes", "0", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "http", "off", err, sizeof err), 0);
    assert_string_equal(c.http, "");
    assert_int_equal(config_set(&c, "log_format", "json", err, sizeof err), 0);
    assert_int_equal(c.log_json, 1);
    assert_int_equal(config_set(&c, "consumer_max_in_flight", "0", err, sizeof err), -1);
    assert_non_null(strstr(err, "max_in_flight"));
    assert_int_equal(config_set(&c, "listen", "udp://x", err, sizeof err), -1);
    assert_int_equal(config_set(&c, "nonsense", "1", err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown key 'nonsense'"));
}

/* Every setting: a value in range is taken, each kind of bad value is refused with the
 * setting's name in the reason, and the setting keeps what it had. */
static void
test_every_setting_takes_its_range_and_refuses_the_rest(void **state)
{
    (void)state;
    static const struct {
        const char *key, *good, *bad[4];
    } cases[] = {
        {"data", "/var/lib/spbe", {""}},
        {"listen", "tcp://0.0.0.0:7400", {"ipc:///tmp/x", "7400"}},
        {"http", "127.0.0.1:7480", {"localhost", "7480"}},
        {"name", "broker-ikn-1", {""}},
        {"max_message_bytes", "64k", {"100", "1G", "lots", ""}},
        {"dedup_window_s", "3600", {"-1", "99999999999", "1h"}},
        {"heartbeat_ms", "1000", {"99", "600001", "x"}},
        {"tree_head_ms", "500", {"99", "86400001", ""}},
        {"max_store_bytes", "10M", {"1000", "10X", "-5"}},
        {"consumer_ack_wait_ms", "5000", {"99", "86400001", "soon"}},
        {"consumer_max_deliveries", "3", {"0", "10001", "x"}},
        {"consumer_max_in_flight", "10", {"0", "100001", "x"}},
        {"max_clock_skew_s", "60", {"31536001", "x"}},
        {"member_max_sessions", "8", {"1000001", "x"}},
        {"session_max_subscriptions", "16", {"1000001", "-1"}},
        {"member_max_consumers", "4", {"1000001", "many"}},
        {"handshake_timeout_ms", "2000", {"99", "600001", "x"}},
        {"member_rate", "100", {"10000001", "fast"}},
        {"member_burst", "200", {"10000001", "x"}},
        {"log_level", "debug", {"loud", ""}},
        {"log_format", "json", {"xml", ""}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        broker_config c, before;
        config_defaults(&c);
        char err[256] = "";
        if (config_set(&c, cases[i].key, cases[i].good, err, sizeof err) != 0)
            fail_msg("%s = %s refused: %s", cases[i].key, cases[i].good, err);
        before = c;
        for (size_t k = 0; k < 4 && cases[i].bad[k]; k++) {
            err[0] = '\0';
            if (config_set(&c, cases[i].key, cases[i].bad[k], err, sizeof err) == 0)
                fail_msg("%s = '%s' was taken", cases[i].key, cases[i].bad[k]);
            assert_true(err[0] != '\0');
            assert_memory_equal(&c, &before, sizeof c); /* nothing half set */
        }
    }
    /* at most CONFIG_RETENTION_MAX rules */
    broker_config c;
    config_defaults(&c);
    char err[256];
    for (int i = 0; i < CONFIG_RETENTION_MAX; i++)
        assert_int_equal(config_set(&c, "retain", "a.>:max-messages=1", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "retain", "a.>:max-messages=1", err, sizeof err), -1);
    assert_non_null(strstr(err, "at most"));
}

/* The file: its errors name the file and the line; flags given as well win. */
static void
test_the_file_and_the_flags(void **state)
{
    (void)state;
    char path[] = "/tmp/spbe-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    static const struct {
        const char *text, *says;
    } bad[] = {
        {"heartbeat_ms = ;\n", "syntax"},
        {"no_such_key = 1;\n", "no_such_key"},
        {"\nheartbeat_ms = 5;\n", ":2:"},
        {"retention = 5;\n", "retention"},
        {"retention = ( { pattern = \"a.>\"; } );\n", "retention"},
        {"log = { level = \"loud\"; };\n", "log"},
        {"consumer_defaults = { max_deliveries = 0; };\n", "max_deliveries"},
        {"heartbeat_ms = [1, 2];\n", "heartbeat_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(bad[i].text, f);
        fclose(f);
        broker_config c;
        config_defaults(&c);
        char err[600] = "";
        if (config_load_file(&c, path, err, sizeof err) == 0)
            fail_msg("file '%s' was taken", bad[i].text);
        if (!strstr(err, bad[i].says))
            fail_msg("file '%s': the reason '%s' does not say '%s'", bad[i].text, err, bad[i].says);
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("heartbeat_ms = 1000;\nname = \"from-file\";\n"
          "retention = ( { pattern = \"a.>\"; max_age = \"1d\"; max_bytes = \"1G\"; } );\n"
          "log = { level = \"warn\"; format = \"json\"; };\n",
          f);
    fclose(f);
    broker_config c;
    config_defaults(&c);
    char *args[] = {"spbe-broker", "--config", path, "--name", "from-flag", "-q"};
    assert_int_equal(config_parse_args(&c, 6, args), 0);
    assert_int_equal(c.heartbeat_ms, 1000);
    assert_string_equal(c.name, "from-flag");
    assert_int_equal(c.n_retention, 1);
    assert_int_equal(c.log_json, 1);
    config_defaults(&c);
    char *missing[] = {"spbe-broker", "--config", "/nonexistent/broker.conf"};
    assert_int_equal(config_parse_args(&c, 3, missing), 2);
    config_defaults(&c);
    char *unknown[] = {"spbe-broker", "--no-such-flag"};
    assert_int_equal(config_parse_args(&c, 2, unknown), 2);
    config_defaults(&c);
    char *stray[] = {"spbe-broker", "stray-argument"};
    assert_int_equal(config_parse_args(&c, 2, stray), 2);
    config_defaults(&c);
    char *check[] = {"spbe-broker", "--config", path, "--check-config"};
    assert_int_equal(config_parse_args(&c, 4, check), 1);
    config_defaults(&c);
    char *version[] = {"spbe-broker", "--version"};
    assert_int_equal(config_parse_args(&c, 2, version), 1);
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_go_round_robin_and_the_count_does_not_move_the_turn),
        cmocka_unit_test(test_pending_requests_by_ref_deadline_and_server),
        cmocka_unit_test(test_retention_rules_parse_with_units_and_refuse_what_is_not_one),
        cmocka_unit_test(test_broker_flags_for_retention_and_the_storage_limit),
        cmocka_unit_test(test_one_setter_for_flags_and_file),
        cmocka_unit_test(test_every_setting_takes_its_range_and_refuses_the_rest),
        cmocka_unit_test(test_the_file_and_the_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
