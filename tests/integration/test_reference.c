/* test_reference.c - the reference process end to end, as a user runs it: `spbe demo`
 * with every agency adapter a process of its own, then the bus's own record of it read
 * offline and held against the generator's ground truth independently of the demo's
 * checks: the portal's last published status of every ASN, each housing allocation and
 * allowance stored exactly once, the dead letters and the refused records. The same
 * again with an adapter killed (SIGKILL) midway and started again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "store.h"
#include "wire.h"
#include "world.h"

#define SEED 1946

static size_t
n_asn(void)
{
    const char *e = getenv("SPBE_REFERENCE_ASN");
    return e && atoi(e) > 0 ? (size_t)atoi(e) : 2500;
}

static uint64_t
json_u64(const char *json, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(json, k);
    if (!p)
        fail_msg("the summary has no %s: %s", key, json);
    return strtoull(p + strlen(k), NULL, 10);
}

/* Counts of what one topic holds, read offline; fn sees every message's envelope. */
typedef void (*message_fn)(const Spbe__V1__Message *m, void *arg);

static uint64_t
read_topic(store_reader *rd, const char *topic, message_fn fn, void *arg)
{
    store_topic_info t;
    if (store_topic_get(rd, topic, &t) != SPBE_OK)
        return 0;
    uint64_t n = 0;
    for (uint64_t seq = t.first_sequence; seq && seq <= t.last_sequence; seq++) {
        store_message m;
        Spbe__V1__SignedMessage *sm;
        Spbe__V1__Message *msg;
        assert_int_equal(store_message_get(rd, t.id, seq, &m), SPBE_OK);
        assert_int_equal(wire_envelope_decode(m.data, m.len, &sm, &msg, NULL), SPBE_OK);
        if (fn)
            fn(msg, arg);
        wire_envelope_free(&sm, &msg);
        n++;
    }
    return n;
}

typedef struct truth {
    const ikn_world *w;
    int *last_status; /* by ASN index, 0 none */
    uint32_t *housed, *allowance;
} truth;

static void
on_status(const Spbe__V1__Message *m, void *arg)
{
    truth *t = arg;
    assert_string_equal(m->sender, "portal/layanan-asn");
    assert_string_equal(m->schema, "spbe.ikn.v1.StatusAsn");
    Spbe__Ikn__V1__StatusAsn *s =
        spbe__ikn__v1__status_asn__unpack(NULL, m->payload.len, m->payload.data);
    assert_non_null(s);
    const ikn_asn *a = ikn_find_nip(t->w, s->nip);
    assert_non_null(a);
    t->last_status[a - t->w->asn] = (int)s->status; /* in order: the last one stays */
    spbe__ikn__v1__status_asn__free_unpacked(s, NULL);
}

static void
on_housing(const Spbe__V1__Message *m, void *arg)
{
    truth *t = arg;
    assert_string_equal(m->sender, "oikn/hunian");
    Spbe__Ikn__V1__AlokasiHunian *h =
        spbe__ikn__v1__alokasi_hunian__unpack(NULL, m->payload.len, m->payload.data);
    assert_non_null(h);
    const ikn_asn *a = ikn_find_nip(t->w, h->nip);
    assert_non_null(a);
    t->housed[a - t->w->asn]++;
    uint32_t family = a->ikut_pindah ? (uint32_t)a->n_family : 0;
    assert_int_equal(h->kamar, family == 0 ? 1 : family <= 2 ? 2 : 3);
    spbe__ikn__v1__alokasi_hunian__free_unpacked(h, NULL);
}

static void
on_allowance(const Spbe__V1__Message *m, void *arg)
{
    truth *t = arg;
    assert_string_equal(m->sender, "kemenkeu/tunjangan");
    Spbe__Ikn__V1__TunjanganPionir *p =
        spbe__ikn__v1__tunjangan_pionir__unpack(NULL, m->payload.len, m->payload.data);
    assert_non_null(p);
    const ikn_asn *a = ikn_find_nip(t->w, p->nip);
    assert_non_null(a);
    t->allowance[a - t->w->asn]++;
    assert_int_equal(p->jumlah_rupiah,
                     5000000 + 750000 * (uint64_t)(a->ikut_pindah ? a->n_family : 0));
    spbe__ikn__v1__tunjangan_pionir__free_unpacked(p, NULL);
}

static void
on_dead_letter(const Spbe__V1__Message *m, void *arg)
{
    truth *t = arg;
    Spbe__V1__DeadLetter *dl = spbe__v1__dead_letter__unpack(NULL, m->payload.len, m->payload.data);
    assert_non_null(dl);
    assert_non_null(strstr(dl->reason, "has no record in SIASN"));
    Spbe__V1__SignedMessage *sm;
    Spbe__V1__Message *orig;
    assert_int_equal(wire_envelope_decode(dl->message.data, dl->message.len, &sm, &orig, NULL),
                     SPBE_OK);
    Spbe__Ikn__V1__SkenarioAsn *s =
        spbe__ikn__v1__skenario_asn__unpack(NULL, orig->payload.len, orig->payload.data);
    assert_non_null(s);
    const ikn_asn *a = ikn_find_nip(t->w, s->nip);
    assert_non_null(a);
    assert_int_equal(a->problem, IKN_NO_RECORD);
    spbe__ikn__v1__skenario_asn__free_unpacked(s, NULL);
    wire_envelope_free(&sm, &orig);
    spbe__v1__dead_letter__free_unpacked(dl, NULL);
}

static void
run_process(const char *kill)
{
    size_t n = n_asn();
    char dir[] = "/tmp/spbe-reference-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int port = harness_free_port();
    static char out[65536], err[65536];
    int rc =
        harness_run(out, sizeof out, err, sizeof err,
                    "SPBE_DEMO_PLAIN=1 %s demo --asn %zu --seed %d --dir %s/demo --port %d "
                    "--json%s%s",
                    SPBE_CLI_BIN, n, SEED, dir, port, kill ? " --kill " : "", kill ? kill : "");
    if (rc != 0)
        fail_msg("spbe demo exited %d:\n%s\n%s", rc, out, err);
    /* the demo's own verdict */
    assert_non_null(strstr(out, "\"ok\":true"));
    assert_non_null(strstr(out, "\"audit_verified\":true"));
    assert_int_equal(json_u64(out, "matched"), n);
    assert_int_equal(json_u64(out, "mismatched"), 0);
    /* BKN's service, called directly, agrees with the ground truth */
    assert_true(json_u64(out, "bkn_asked") >= 50);
    assert_int_equal(json_u64(out, "bkn_right"), json_u64(out, "bkn_asked"));
    if (kill)
        assert_non_null(strstr(err, "killed "));

    /* and the bus's record of it, read here */
    ikn_world w;
    assert_int_equal(ikn_world_build(&w, SEED, n), 0);
    truth t = {&w, calloc(n, sizeof(int)), calloc(n, sizeof(uint32_t)),
               calloc(n, sizeof(uint32_t))};
    char data[600];
    snprintf(data, sizeof data, "%s/demo/data", dir);
    store_options so = {.read_only = 1};
    store *s;
    char why[512];
    assert_int_equal(store_open(data, &so, &s, why, sizeof why), SPBE_OK);
    store_reader *rd;
    assert_int_equal(store_reader_begin(s, &rd), SPBE_OK);
    read_topic(rd, "ikn.relokasi.status", on_status, &t);
    uint64_t housed = read_topic(rd, "ikn.relokasi.hunian", on_housing, &t);
    uint64_t allowances = read_topic(rd, "ikn.relokasi.tunjangan", on_allowance, &t);
    uint64_t letters = read_topic(rd, "$sys.dlq.bkn-pemeriksaan", on_dead_letter, &t);
    uint64_t scenarios = 0, expect_scenarios = 0, ready = 0, expect_letters = 0;
    for (size_t i = 0; i < w.n_agencies; i++) {
        char topic[128];
        snprintf(topic, sizeof topic, "ikn.relokasi.asn.%s", w.agencies[i].kode);
        scenarios += read_topic(rd, topic, NULL, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        const ikn_asn *a = &w.asn[i];
        int want = a->expected == SPBE__IKN__V1__STATUS_RELOKASI__TIDAK_DIKENAL ? 0 : a->expected;
        if (t.last_status[i] != want)
            fail_msg("NIP %s (%s): last status %d, expected %d", a->nip,
                     ikn_problem_name(a->problem), t.last_status[i], want);
        int ok = a->expected == SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH;
        ready += (uint64_t)ok;
        /* exactly once, whatever was killed and redelivered */
        assert_int_equal(t.housed[i], ok);
        assert_int_equal(t.allowance[i], ok);
        expect_scenarios += a->problem == IKN_MALFORMED ? 0 : 1 + (uint64_t)a->duplicate;
        expect_letters += a->problem == IKN_NO_RECORD ? 1 + (uint64_t)a->duplicate : 0;
    }
    assert_int_equal(housed, ready);
    assert_int_equal(allowances, ready);
    assert_int_equal(letters, expect_letters);     /* a scenario submitted twice: two letters */
    assert_int_equal(scenarios, expect_scenarios); /* the malformed ones nowhere */
    if (!kill || strcmp(kill, "kl") != 0)
        assert_int_equal(json_u64(out, "schema_mismatch"), w.planted[IKN_MALFORMED]);
    assert_int_equal(json_u64(out, "duplicates_seen"), w.duplicates);
    store_reader_end(&rd);
    store_close(&s);
    free(t.last_status);
    free(t.housed);
    free(t.allowance);
    ikn_world_free(&w);
    harness_run(NULL, 0, NULL, 0, "rm -rf %s", dir);
}

static void
test_process(void **state)
{
    (void)state;
    run_process(NULL);
}

static void
test_process_bkn_killed(void **state)
{
    (void)state;
    run_process("bkn");
}

static void
test_process_portal_killed(void **state)
{
    (void)state;
    run_process("portal");
}

static void
test_process_ministry_killed(void **state)
{
    (void)state;
    run_process("kl");
}

/* What spbe demo refuses, and that it never empties a directory it did not make. */
static void
test_demo_refusals(void **state)
{
    (void)state;
    char out[4096], err[4096];
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s demo --asn 0", SPBE_CLI_BIN),
                     2);
    assert_non_null(strstr(err, "--asn takes 1..2000000"));
    assert_int_equal(
        harness_run(out, sizeof out, err, sizeof err, "%s demo --kill nobody", SPBE_CLI_BIN), 2);
    assert_non_null(strstr(err, "--kill takes kl, dukcapil, bkn, portal, hunian or tunjangan"));
    char dir[] = "/tmp/spbe-reference-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char keep[600];
    snprintf(keep, sizeof keep, "%s/precious", dir);
    FILE *f = fopen(keep, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(harness_run(out, sizeof out, err, sizeof err, "%s demo --asn 10 --dir %s",
                                 SPBE_CLI_BIN, dir),
                     1);
    assert_non_null(strstr(err, "an earlier demo did not make it"));
    assert_int_equal(access(keep, F_OK), 0);
    harness_run(NULL, 0, NULL, 0, "rm -rf %s", dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_refusals),
        cmocka_unit_test(test_process),
        cmocka_unit_test(test_process_bkn_killed),
        cmocka_unit_test(test_process_portal_killed),
        cmocka_unit_test(test_process_ministry_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
