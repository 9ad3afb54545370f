/* test_broker_parts.c - the broker's service table (round robin, pending requests,
 * deadlines, sessions going away), its settings from flags, file and environment with
 * every refusal's reason, its log lines (JSON escaping, peers' text made safe) and the
 * rights of a member that has none. */
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
#include "log.h"
#include "registry.h"
#include "router.h"
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

/* Runs a settings file through config_load_file; the error it gives, "" if it took it. */
static const char *
load_text(const char *text, char *err, size_t err_len)
{
    char path[] = "/tmp/spbe-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    broker_config c;
    config_defaults(&c);
    err[0] = '\0';
    char got[900] = "";
    if (config_load_file(&c, path, got, sizeof got) != 0) {
        /* the path varies: the reason from its ':' on */
        const char *at = strncmp(got, path, strlen(path)) == 0 ? got + strlen(path) : got;
        snprintf(err, err_len, "%s", at);
    }
    unlink(path);
    return err;
}

static void
test_settings_too_long_or_out_of_range_say_which(void **state)
{
    (void)state;
    char long_text[1200], value[1300], err[600];
    broker_config c;
    config_defaults(&c);
    memset(long_text, '1', 40);
    long_text[40] = '\0';
    assert_int_equal(config_set(&c, "max_message_bytes", long_text, err, sizeof err), -1);
    assert_string_equal(err, "max_message_bytes: 256..268435456");
    memset(long_text, 'a', 1100);
    long_text[1100] = '\0';
    assert_int_equal(config_set(&c, "data", long_text, err, sizeof err), -1);
    assert_string_equal(err, "data: a directory path");
    snprintf(value, sizeof value, "tcp://%.300s:1", long_text);
    assert_int_equal(config_set(&c, "listen", value, err, sizeof err), -1);
    assert_string_equal(err, "listen: a ZeroMQ endpoint tcp://HOST:PORT");
    snprintf(value, sizeof value, "%.60s:8080", long_text);
    assert_int_equal(config_set(&c, "http", value, err, sizeof err), -1);
    assert_string_equal(err, "http: HOST:PORT or off");
    snprintf(value, sizeof value, "%.64s", long_text);
    assert_int_equal(config_set(&c, "name", value, err, sizeof err), -1);
    assert_string_equal(err, "name: 1 to 63 characters");
    /* nothing refused changed the settings */
    broker_config d;
    config_defaults(&d);
    assert_string_equal(c.data_dir, d.data_dir);
    assert_string_equal(c.endpoint, d.endpoint);
    assert_string_equal(c.name, d.name);
    assert_int_equal(c.max_message_bytes, d.max_message_bytes);
    assert_int_equal(config_set(&c, "log_format", "json", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "log_format", "text", err, sizeof err), 0);
    assert_int_equal(c.log_json, 0);

    static const char *limits = "limits are max-age=N[s|m|h|d], max-messages=N, "
                                "max-bytes=N[k|M|G], each above 0";
    static const char *bad[] = {"a.>:max-bytes=18446744073709551G", "a.>:max-age=0s",
                                "a.>:max-bytes=0", "a.>:max-age=123456789012345678901234567890s"};
    store_retention r;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(config_parse_retention(bad[i], &r, err, sizeof err), -1);
        snprintf(value, sizeof value, "retention rule '%s': %s", bad[i], limits);
        assert_string_equal(err, value);
    }
    snprintf(value, sizeof value, "%.300s:max-messages=1", long_text);
    assert_int_equal(config_parse_retention(value, &r, err, sizeof err), -1);
    char want[1400];
    snprintf(want, sizeof want, "retention rule '%s' is not PATTERN:LIMITS", value);
    assert_string_equal(err, want);
}

static void
test_file_errors_name_the_line_and_the_setting(void **state)
{
    (void)state;
    char long_pattern[400], big[1400], text[1600], err[900];
    memset(long_pattern, 'a', 350);
    long_pattern[350] = '\0';
    memset(big, '1', 1100);
    big[1100] = '\0';
    static const struct {
        const char *text, *says;
    } cases[] = {
        {"heartbeat_ms = 1.5;\n", ":1: heartbeat_ms takes a string or a number"},
        {"name = true;\n", ":1: name takes a string or a number"},
        {"retention = ( \"a.>\" );\n",
         ":1: a retention rule is a group: { pattern = ...; max_age = ...; }"},
        {"retention = ( { pattern = \"a.>\";\n max_age = 1.5; } );\n",
         ":2: retention rules know pattern, max_age, max_messages, max_bytes, not 'max_age'"},
        {"retention = ( { max_age = \"1d\"; } );\n", ":1: a retention rule needs a pattern"},
        {"consumer_defaults = 5;\n", ":1: a group: { key = value; ... }"},
        {"log = {\n color = \"red\"; };\n", ":2: log knows level and format, not 'color'"},
        {"retain = \"a.>:max-age=1d\";\n", ":1: unknown key 'retain'"},
        {"consumer_ack_wait_ms = 500;\n", ":1: unknown key 'consumer_ack_wait_ms'"},
        {"log_level = \"info\";\n", ":1: unknown key 'log_level'"},
        {"log = { format = \"yaml\"; };\n", ":1: log format: text or json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (strcmp(load_text(cases[i].text, err, sizeof err), cases[i].says) != 0)
            fail_msg("file '%s' says '%s', not '%s'", cases[i].text, err, cases[i].says);
    snprintf(text, sizeof text, "retention = ( { pattern = \"%s\"; } );\n", long_pattern);
    assert_string_equal(load_text(text, err, sizeof err),
                        ":1: pattern is a topic pattern in quotes");
    snprintf(text, sizeof text, "retention = ( { pattern = \"a.>\"; max_bytes = \"%s\"; } );\n",
             big);
    assert_string_equal(load_text(text, err, sizeof err), ":1: the retention rule is too long");
}

/* Runs config_parse_args with stdout in a file; its return, and the output in out. */
static int
parse_args_output(broker_config *c, int argc, char **argv, char *out, size_t out_len)
{
    char path[] = "/tmp/spbe-stdout-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = config_parse_args(c, argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ssize_t n = pread(fd, out, out_len - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void
test_flags_the_environment_and_checks(void **state)
{
    (void)state;
    broker_config c;
    char out[4096];
    config_defaults(&c);
    setenv("SPBE_DATA", "/srv/spbe-from-env", 1);
    char *none[] = {"spbe-broker"};
    assert_int_equal(config_parse_args(&c, 1, none), 0);
    assert_string_equal(c.data_dir, "/srv/spbe-from-env");
    config_defaults(&c);
    char *flag[] = {"spbe-broker", "--data", "/srv/from-flag"};
    assert_int_equal(config_parse_args(&c, 3, flag), 0);
    assert_string_equal(c.data_dir, "/srv/from-flag"); /* the flag wins */
    setenv("SPBE_DATA", "", 1);
    broker_config d;
    config_defaults(&c);
    config_defaults(&d);
    assert_int_equal(config_parse_args(&c, 1, none), 0);
    assert_string_equal(c.data_dir, d.data_dir); /* empty: as if unset */
    unsetenv("SPBE_DATA");

    config_defaults(&c);
    char *json[] = {"spbe-broker", "--log-json", "-v"};
    assert_int_equal(config_parse_args(&c, 3, json), 0);
    assert_int_equal(c.log_json, 1);
    assert_int_equal(c.log_level, LOG_DEBUG);
    config_defaults(&c);
    char *help[] = {"spbe-broker", "-h"};
    assert_int_equal(parse_args_output(&c, 2, help, out, sizeof out), 1);
    assert_true(strncmp(out, "usage: spbe-broker [options]\n", 29) == 0);
    config_defaults(&c);
    char *check[] = {"spbe-broker", "--heartbeat-ms", "1000", "--check-config"};
    assert_int_equal(parse_args_output(&c, 4, check, out, sizeof out), 1);
    assert_string_equal(out, "flags: the configuration is valid\n");
}

/* Runs log_event with stderr in a file; what it wrote. */
static void
log_output(char *out, size_t out_len, enum log_level level, const char *pairs)
{
    char path[] = "/tmp/spbe-stderr-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    log_event(level, "uji", "%s", pairs);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, out, out_len - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

/* The members after "event":"uji" of a JSON line, without the closing brace and newline. */
static const char *
json_members(char *line)
{
    char *at = strstr(line, "\"event\":\"uji\"");
    assert_non_null(at);
    size_t n = strlen(line);
    assert_true(n >= 2 && line[n - 1] == '\n' && line[n - 2] == '}');
    line[n - 2] = '\0';
    return at + strlen("\"event\":\"uji\"");
}

static void
test_json_log_lines_escape_what_the_values_hold(void **state)
{
    (void)state;
    char out[4096];
    log_set_level(LOG_INFO);
    log_set_json(1);
    static const struct {
        const char *pairs, *members;
    } cases[] = {
        {"a=1   ", ",\"a\":\"1\""},
        {"a=1 lone word", ",\"a\":\"1\""},
        {"k=\"x\\\"y\\\\z\" n=2", ",\"k\":\"x\\\"y\\\\z\",\"n\":\"2\""},
        {"bare=q\"r\\s", ",\"bare\":\"q\\\"r\\\\s\""},
        {"open=\"not closed", ",\"open\":\"not closed\""},
        {"end=\"ab\\", ",\"end\":\"ab\\\\\""},
        {"c=x\001y\nz", ",\"c\":\"xyz\""},
        {"q\"k\\\001=v", ",\"q\\\"k\\\\\":\"v\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        log_output(out, sizeof out, LOG_WARN, cases[i].pairs);
        const char *members = json_members(out);
        if (strcmp(members, cases[i].members) != 0)
            fail_msg("'%s' gave '%s', not '%s'", cases[i].pairs, members, cases[i].members);
    }
    /* more than the line holds (empty values grow the most): cut at the buffer, the
     * object still closed */
    char pairs[1024];
    size_t n = 0;
    for (int i = 0; i < 255; i++)
        n += (size_t)snprintf(pairs + n, sizeof pairs - n, " k=");
    for (int i = 0; i < 32; i++)
        n += (size_t)snprintf(pairs + n, sizeof pairs - n, " b=\"\\\"c\"");
    assert_int_equal(n, 1021);
    log_output(out, sizeof out, LOG_WARN, pairs);
    const char *members = json_members(out);
    assert_int_equal(strlen(members), 2047);
    assert_true(strncmp(members, ",\"k\":\"\",\"k\":\"\"", 14) == 0);
    assert_non_null(strstr(members, ",\"b\":\"\\\"c\",\"b\""));
    log_set_json(0);
    log_output(out, sizeof out, LOG_WARN, "k=v");
    assert_non_null(strstr(out, " level=warn event=uji k=v\n"));
    log_output(out, sizeof out, LOG_DEBUG, "k=v");
    assert_string_equal(out, ""); /* under the threshold */
}

static void
test_log_clean_keeps_peers_text_inside_its_value(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(log_clean("a \"b\" \\c\nd", 1, out, sizeof out), "a \\\"b\\\" \\\\c?d");
    assert_string_equal(log_clean("a b=\"c\\\td\x7f", 0, out, sizeof out), "a?b??c??d?");
    assert_string_equal(log_clean(NULL, 1, out, sizeof out), "");
    assert_string_equal(log_clean("abcdefgh", 0, out, 5), "abc");    /* cut, still ended */
    assert_string_equal(log_clean("\"\"\"", 1, out, 6), "\\\"\\\""); /* never half an escape */
    char keep[4] = "abc";
    assert_ptr_equal(log_clean("x", 0, keep, 0), keep);
    assert_string_equal(keep, "abc"); /* no room: nothing written */
}

static void
test_a_member_without_rights_may_nothing(void **state)
{
    (void)state;
    Spbe__V1__Member m = SPBE__V1__MEMBER__INIT;
    m.name = "uji/tanpa";
    assert_false(registry_has_role(&m, "admin"));
    assert_false(registry_may_publish(&m, "ikn.a"));
    assert_false(registry_may_subscribe(&m, "ikn.>"));
    assert_false(registry_may_serve(&m, "hitung"));
    assert_false(registry_may_call(&m, "hitung"));
    char *all[] = {">"};
    Spbe__V1__MemberRights rights = SPBE__V1__MEMBER_RIGHTS__INIT;
    rights.serve = all;
    rights.n_serve = 1;
    rights.call = all;
    rights.n_call = 1;
    m.rights = &rights;
    assert_true(registry_may_serve(&m, "hitung"));
    assert_true(registry_may_call(&m, "hitung"));
    assert_false(registry_may_serve(&m, "$sys.svc")); /* > never covers the broker's own */
    assert_false(registry_may_call(&m, "$sys.svc"));
    /* destroying nothing is nothing */
    registry *none = NULL;
    registry_destroy(&none);
    registry_destroy(NULL);
    service_table *no_table = NULL;
    service_table_destroy(&no_table);
    service_table_destroy(NULL);
    router *no_router = NULL;
    router_destroy(&no_router);
    router_destroy(NULL);
    assert_null(none);
    assert_null(no_table);
    assert_null(no_router);
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
        cmocka_unit_test(test_settings_too_long_or_out_of_range_say_which),
        cmocka_unit_test(test_file_errors_name_the_line_and_the_setting),
        cmocka_unit_test(test_flags_the_environment_and_checks),
        cmocka_unit_test(test_json_log_lines_escape_what_the_values_hold),
        cmocka_unit_test(test_log_clean_keeps_peers_text_inside_its_value),
        cmocka_unit_test(test_a_member_without_rights_may_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
