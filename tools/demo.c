/* demo.c - spbe demo: the reference process, the relocation of ASN to IKN, end to end on
 * this machine. A broker on a fresh data directory with the process's schemas bound, the
 * members registered with their rights, one spbe-ikn process per agency, progress bars,
 * and a summary held against the generator's ground truth: every ASN's final status,
 * every planted problem where it belongs, every signature and the audit log verified. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "process.h"
#include "spbe/ikn/v1/relokasi.pb-c.h"
#include "wire.h"

static const char demo_usage[] =
    "usage: spbe demo [--asn N] [--seed N] [--dir DIR] [--port PORT] [--workers N]\n"
    "                 [--kill ROLE] [--json]\n"
    "\n"
    "Runs the reference process, the relocation of civil servants (ASN) to IKN, on a\n"
    "fresh broker: each ministry publishes its unit and ASN scenarios, BKN checks every\n"
    "ASN against Dukcapil's IKD and its competency requirements, the single portal sets\n"
    "the family scenarios and follows every status from the events, the IKN Authority\n"
    "allocates housing and Kemenkeu the pioneer allowance. Each agency is its own process\n"
    "(spbe-ikn) and member. The world is generated from the seed with its problems:\n"
    "identities not activated in IKD, failed competency checks, duplicate submissions,\n"
    "malformed records, records BKN does not have. The summary holds the result against\n"
    "that ground truth and verifies the audit log; the data stays in DIR/data.\n"
    "\n"
    "  --asn N       civil servants (default 15000; 118000 and 180000 are the two schemes\n"
    "                of the sources)\n"
    "  --seed N      the world's seed (default 2024)\n"
    "  --dir DIR     where the broker's data, keys and logs go (default ./demo; a\n"
    "                directory an earlier demo made is emptied first)\n"
    "  --port PORT   the bus's port on 127.0.0.1 (default 7400; HTTP on PORT+80)\n"
    "  --workers N   BKN's sessions (default 16)\n"
    "  --kill ROLE   SIGKILL this adapter (kl, dukcapil, bkn, portal, hunian, tunjangan)\n"
    "                once midway and start it again: the result must not change\n"
    "  --json        the summary as one JSON object on stdout (progress on stderr)\n"
    "\n"
    "Exit 0 when everything matches the ground truth and the audit log verifies, 1\n"
    "otherwise.\n";

#define MARKER ".spbe-demo"

typedef struct proc {
    const ikn_member *m;
    char key[600], out[600], log[600];
    pid_t pid;
    int exited, status, killed;
} proc;

typedef struct demo {
    char dir[400], data[420], broker_bin[PATH_MAX], ikn_bin[PATH_MAX], self[PATH_MAX], endpoint[64];
    size_t n_asn;
    uint64_t seed;
    int port, workers, json;
    const char *kill_role;
    ikn_world world;
    ikn_member members[IKN_MEMBERS_MAX];
    char pubs[IKN_MEMBERS_MAX][2][96];
    size_t n_members;
    proc procs[IKN_MEMBERS_MAX];
    size_t n_procs;
    pid_t broker;
    spbe_client *admin, *observer;
    FILE *tty; /* progress goes here */
    int interactive;
    int failed; /* an adapter ended that should not have */
    volatile sig_atomic_t *stop;
} demo;

static volatile sig_atomic_t demo_stop;

static void
on_signal(int sig)
{
    (void)sig;
    demo_stop = 1;
}

static void
sleep_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000}, NULL);
}

/* ------------------------------------------------------------ setting up */

/* The sibling programs: beside spbe (installed) or in the build tree. */
static int
find_program(const demo *d, const char *env, const char *name, const char *build_rel, char *out)
{
    const char *e = getenv(env);
    if (e && *e) {
        snprintf(out, PATH_MAX, "%s", e);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", d->self);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    snprintf(out, PATH_MAX, "%.3000s/%s", dir, name);
    if (access(out, X_OK) == 0)
        return 0;
    snprintf(out, PATH_MAX, "%.3000s/../%s", dir, build_rel);
    return access(out, X_OK) == 0 ? 0 : -1;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* A fresh DIR: made, or emptied when an earlier demo made it; anything else is refused. */
static int
fresh_dir(demo *d)
{
    char marker[512];
    snprintf(marker, sizeof marker, "%s/" MARKER, d->dir);
    struct stat st;
    if (stat(d->dir, &st) == 0) {
        if (access(marker, F_OK) != 0) {
            fprintf(stderr,
                    "spbe demo: %s exists and an earlier demo did not make it; "
                    "give --dir a new directory\n",
                    d->dir);
            return -1;
        }
        if (nftw(d->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
            fprintf(stderr, "spbe demo: cannot empty %s: %s\n", d->dir, strerror(errno));
            return -1;
        }
    }
    char keys[512];
    snprintf(keys, sizeof keys, "%s/keys", d->dir);
    if (mkdir(d->dir, 0700) != 0 || mkdir(keys, 0700) != 0) {
        fprintf(stderr, "spbe demo: cannot make %s: %s\n", d->dir, strerror(errno));
        return -1;
    }
    FILE *f = fopen(marker, "w");
    if (!f)
        return -1;
    fprintf(f, "made by spbe demo; emptied by the next one\n");
    fclose(f);
    return 0;
}

/* Runs a program, its output into log (appended); its exit status, or -1. */
static int
run(const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Starts a program in the background, stdout into out and stderr into log. */
static pid_t
start(const char *out, const char *log, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int e = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (o >= 0)
            dup2(o, 1);
        if (e >= 0)
            dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int
start_broker(demo *d)
{
    char conf[512], log[512];
    snprintf(conf, sizeof conf, "%s/broker.conf", d->dir);
    snprintf(log, sizeof log, "%s/broker.log", d->dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "# the reference process's broker (spbe demo)\n"
            "data = \"%s\";\nlisten = \"%s\";\nhttp = \"127.0.0.1:%d\";\nname = \"spbe-demo\";\n",
            d->data, d->endpoint, d->port + 80);
    ikn_write_bindings(f);
    fclose(f);
    char *argv[] = {d->broker_bin, "--config", conf, NULL};
    d->broker = start(log, log, argv);
    for (int i = 0; i < 400; i++) {
        char text[8192] = "";
        FILE *l = fopen(log, "r");
        if (l) {
            size_t n = fread(text, 1, sizeof text - 1, l);
            text[n] = '\0';
            fclose(l);
        }
        if (strstr(text, "event=started"))
            return 0;
        if (waitpid(d->broker, NULL, WNOHANG) == d->broker) {
            fprintf(stderr, "spbe demo: the broker did not start:\n%s", text);
            d->broker = 0;
            return -1;
        }
        sleep_ms(25);
    }
    fprintf(stderr, "spbe demo: the broker did not say it started (see %s)\n", log);
    return -1;
}

static void
key_path(const demo *d, const char *member, char *out, size_t n)
{
    char name[64];
    snprintf(name, sizeof name, "%s", member);
    for (char *p = name; *p; p++)
        if (*p == '/')
            *p = '_';
    char dir[sizeof d->dir];
    memcpy(dir, d->dir, sizeof dir); /* out may lie in *d */
    snprintf(out, n, "%s/keys/%s.key", dir, name);
}

/* Every member: a key pair made here, registered with exactly its rights. */
static int
register_members(demo *d)
{
    char log[512], pub[512], admin[512];
    snprintf(log, sizeof log, "%s/registry.log", d->dir);
    snprintf(pub, sizeof pub, "%s/broker.pub", d->data);
    snprintf(admin, sizeof admin, "%s/admin.key", d->data);
    setenv("SPBE_BROKER", d->endpoint, 1);
    for (size_t i = 0; i < d->n_members; i++) {
        const ikn_member *m = &d->members[i];
        char key[600], keypub[610];
        key_path(d, m->name, key, sizeof key);
        snprintf(keypub, sizeof keypub, "%s.pub", key);
        char *gen[] = {d->self, "keygen", (char *)m->name, "-o", key, "--broker-pub", pub, NULL};
        char *add[32] = {d->self, "member", "add",        (char *)m->name,
                         "--key", admin,    "--key-file", keypub};
        size_t n = 8;
        for (size_t k = 0; k < 3 && m->pub[k]; k++)
            add[n++] = "--pub", add[n++] = (char *)m->pub[k];
        for (size_t k = 0; k < 2 && m->sub[k]; k++)
            add[n++] = "--sub", add[n++] = (char *)m->sub[k];
        for (size_t k = 0; k < 2 && m->serve[k]; k++)
            add[n++] = "--serve", add[n++] = (char *)m->serve[k];
        for (size_t k = 0; k < 3 && m->call[k]; k++)
            add[n++] = "--call", add[n++] = (char *)m->call[k];
        for (size_t k = 0; k < 2 && m->roles[k]; k++)
            add[n++] = "--role", add[n++] = (char *)m->roles[k];
        add[n] = NULL;
        if (run(log, gen) != 0 || run(log, add) != 0) {
            fprintf(stderr, "spbe demo: cannot register %s (see %s)\n", m->name, log);
            return -1;
        }
    }
    spbe_options o = {.endpoint = d->endpoint, .client_name = "spbe-demo"};
    char observer[600];
    key_path(d, "spbe/pengamat", observer, sizeof observer);
    if (spbe_connect(admin, &o, &d->admin) != SPBE_OK ||
        spbe_connect(observer, &o, &d->observer) != SPBE_OK) {
        fprintf(stderr, "spbe demo: cannot connect: %s\n",
                spbe_last_error(d->admin ? d->observer : d->admin));
        return -1;
    }
    return 0;
}

static void
proc_start(demo *d, proc *p)
{
    char seed[24], asn[24], workers[16];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)d->seed);
    snprintf(asn, sizeof asn, "%zu", d->n_asn);
    snprintf(workers, sizeof workers, "%d", d->workers);
    char *argv[16] = {d->ikn_bin,  (char *)p->m->role, "--key", p->key,  "--broker",
                      d->endpoint, "--seed",           seed,    "--asn", asn};
    size_t n = 10;
    if (p->m->instansi)
        argv[n++] = "--instansi", argv[n++] = (char *)p->m->instansi;
    if (strcmp(p->m->role, "bkn") == 0)
        argv[n++] = "--workers", argv[n++] = workers;
    argv[n] = NULL;
    p->pid = start(p->out, p->log, argv);
    p->exited = 0;
}

static void
start_adapters(demo *d)
{
    /* the services and followers first, then the ministries */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < d->n_members; i++) {
            const ikn_member *m = &d->members[i];
            if (!m->role || (strcmp(m->role, "kl") == 0) != pass)
                continue;
            proc *p = &d->procs[d->n_procs++];
            p->m = m;
            key_path(d, m->name, p->key, sizeof p->key);
            char base[64];
            snprintf(base, sizeof base, "%s", m->name);
            for (char *c = base; *c; c++)
                if (*c == '/')
                    *c = '_';
            char dir[sizeof d->dir];
            memcpy(dir, d->dir, sizeof dir);
            snprintf(p->out, sizeof p->out, "%s/%s.out", dir, base);
            snprintf(p->log, sizeof p->log, "%s/%s.log", dir, base);
            proc_start(d, p);
        }
}

/* ------------------------------------------------------------ watching */

typedef struct counts {
    uint64_t unit, asn, ikd, pemeriksaan, keluarga, hunian, tunjangan, status, dlq, total;
    int have_portal;
    Spbe__Ikn__V1__RingkasanPortal r;
} counts;

static void
topic_counts(demo *d, counts *c)
{
    Spbe__V1__TopicList list = SPBE__V1__TOPIC_LIST__INIT;
    Spbe__V1__Command cmd = SPBE__V1__COMMAND__INIT;
    cmd.body_case = SPBE__V1__COMMAND__BODY_TOPIC_LIST;
    cmd.topic_list = &list;
    Spbe__V1__Reply *reply;
    if (cli_call(d->admin, &cmd, &reply, NULL, NULL) != SPBE_OK)
        return;
    if (reply->body_case == SPBE__V1__REPLY__BODY_TOPICS) {
        c->total = 0;
        for (size_t i = 0; i < reply->topics->n_topics; i++) {
            const Spbe__V1__TopicInfo *t = reply->topics->topics[i];
            const char *n = t->name;
            uint64_t m = t->messages;
            if (strncmp(n, "$sys.audit.", 11) != 0)
                c->total += m;
            if (strncmp(n, "ikn.relokasi.unit.", 18) == 0)
                c->unit += m;
            else if (strncmp(n, "ikn.relokasi.asn.", 17) == 0)
                c->asn += m;
            else if (strcmp(n, "$sys.svc.dukcapil.ikd.verifikasi") == 0)
                c->ikd = m;
            else if (strcmp(n, "ikn.relokasi.pemeriksaan") == 0)
                c->pemeriksaan = m;
            else if (strcmp(n, "ikn.relokasi.keluarga") == 0)
                c->keluarga = m;
            else if (strcmp(n, "ikn.relokasi.hunian") == 0)
                c->hunian = m;
            else if (strcmp(n, "ikn.relokasi.tunjangan") == 0)
                c->tunjangan = m;
            else if (strcmp(n, "ikn.relokasi.status") == 0)
                c->status = m;
            else if (strcmp(n, "$sys.dlq.bkn-pemeriksaan") == 0)
                c->dlq = m;
        }
    }
    spbe__v1__reply__free_unpacked(reply, NULL);
}

/* Asks the portal (nips: up to 1000, or none for the totals only); the answer or NULL. */
static Spbe__Ikn__V1__JawabanStatus *
ask_portal(demo *d, char **nips, size_t n)
{
    Spbe__Ikn__V1__PermintaanStatus q = SPBE__IKN__V1__PERMINTAAN_STATUS__INIT;
    q.nip = nips;
    q.n_nip = n;
    size_t len = spbe__ikn__v1__permintaan_status__get_packed_size(&q);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    spbe__ikn__v1__permintaan_status__pack(&q, buf);
    spbe_message_options o = {.schema = "spbe.ikn.v1.PermintaanStatus"};
    spbe_response resp;
    int rc = spbe_request(d->observer, "portal.status", buf, len, 5000, &o, &resp);
    free(buf);
    Spbe__Ikn__V1__JawabanStatus *j =
        rc == SPBE_OK ? spbe__ikn__v1__jawaban_status__unpack(NULL, resp.payload_len, resp.payload)
                      : NULL;
    if (rc == SPBE_OK)
        spbe_response_free(&resp);
    return j;
}

typedef struct expect {
    uint64_t asn_messages, checked, ikd_calls, families, housed, terminal, stuck, malformed,
        duplicates, no_record, dead_letters; /* one dead letter per submission, twice too */
} expect;

static void
expectations(const demo *d, expect *e)
{
    memset(e, 0, sizeof *e);
    for (size_t i = 0; i < d->world.n_asn; i++) {
        const ikn_asn *a = &d->world.asn[i];
        if (a->problem == IKN_MALFORMED) {
            e->malformed++;
            continue;
        }
        e->asn_messages += 1 + (uint64_t)a->duplicate;
        e->duplicates += (uint64_t)a->duplicate;
        e->families++;
        if (a->problem == IKN_NO_RECORD) {
            e->no_record++;
            e->dead_letters += 1 + (uint64_t)a->duplicate;
            e->stuck++;
            continue;
        }
        e->checked++;
        e->ikd_calls += 1 + (uint64_t)a->duplicate; /* BKN checks each submission */
        e->terminal++;
        e->housed += a->expected == SPBE__IKN__V1__STATUS_RELOKASI__SIAP_PINDAH;
    }
}

static void
bar(demo *d, const char *label, uint64_t done, uint64_t of)
{
    int width = 30, fill = !of || done >= of ? width : (int)((uint64_t)width * done / of);
    char b[64];
    memset(b, '#', (size_t)fill);
    memset(b + fill, '.', (size_t)(width - fill));
    b[width] = '\0';
    fprintf(d->tty, "  %-38s [%s] %8llu / %llu\n", label, b, (unsigned long long)done,
            (unsigned long long)of);
}

static void
draw(demo *d, const counts *c, const expect *e, double secs, int redraw)
{
    if (redraw)
        fprintf(d->tty, "\033[9A");
    uint64_t ready = c->have_portal ? c->r.siap_pindah + c->r.ditolak_ikd + c->r.ditolak_bkn : 0;
    bar(d, "1-2 unit and ASN scenarios (K/L)", c->asn, e->asn_messages);
    bar(d, "3   identity checks (IKD, req/reply)", c->ikd / 2, e->ikd_calls);
    bar(d, "4   BKN checks", c->pemeriksaan, e->checked);
    bar(d, "5   family scenarios (portal)", c->keluarga, e->families);
    bar(d, "6   housing (IKN Authority)", c->hunian, e->housed);
    bar(d, "7   pioneer allowance (Kemenkeu)", c->tunjangan, e->housed);
    bar(d, "8   final statuses (portal)", ready, e->terminal);
    fprintf(d->tty, "  %.1f s, %llu messages stored, %.0f msgs/s%-20s\n", secs,
            (unsigned long long)c->total, secs > 0 ? (double)c->total / secs : 0.0, "");
    fprintf(d->tty, "\n");
    fflush(d->tty);
}

/* Reaps adapters that ended; 1 if one ended that should not have. */
static int
reap(demo *d)
{
    for (size_t i = 0; i < d->n_procs; i++) {
        proc *p = &d->procs[i];
        int status;
        if (p->exited || waitpid(p->pid, &status, WNOHANG) != p->pid)
            continue;
        p->exited = 1;
        p->status = status;
        if (strcmp(p->m->role, "kl") != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "spbe demo: %s ended (status %d); see %s\n", p->m->name, status,
                    p->log);
            d->failed = 1;
        }
    }
    return d->failed;
}

static proc *
proc_of_role(demo *d, const char *role)
{
    reap(d); /* a ministry that has sent everything is done, not midway */
    for (size_t i = 0; i < d->n_procs; i++)
        if (strcmp(d->procs[i].m->role, role) == 0 && !d->procs[i].exited)
            return &d->procs[i];
    return NULL;
}

/* Runs until the portal shows every ASN where the ground truth puts it. */
static int
watch(demo *d, const expect *e, counts *c, double *secs)
{
    int64_t t0 = wire_mono_ns(), deadline = t0 + (int64_t)(120 + d->n_asn / 40) * 1000000000;
    int drawn = 0, killed = 0, every = 0;
    for (;;) {
        memset(c, 0, sizeof *c);
        topic_counts(d, c);
        /* about to kill a ministry: watch closely, a busy portal could answer too late */
        int watching_kl = d->kill_role && !killed && strcmp(d->kill_role, "kl") == 0;
        Spbe__Ikn__V1__JawabanStatus *j = watching_kl ? NULL : ask_portal(d, NULL, 0);
        if (j) {
            c->have_portal = 1;
            c->r = *j->ringkasan;
            spbe__ikn__v1__jawaban_status__free_unpacked(j, NULL);
        }
        *secs = (double)(wire_mono_ns() - t0) / 1e9;
        if (d->interactive) {
            draw(d, c, e, *secs, drawn);
            drawn = 1;
        } else if (every++ % 20 == 0) {
            draw(d, c, e, *secs, 0);
        }
        uint64_t ready =
            c->have_portal ? c->r.siap_pindah + c->r.ditolak_ikd + c->r.ditolak_bkn : 0;
        int midway = strcmp(d->kill_role ? d->kill_role : "", "kl") == 0
                         ? c->asn > 0 /* a ministry is done in moments: one still sending */
                         : ready * 10 >= e->terminal * 3;
        if (d->kill_role && !killed && midway) {
            proc *p = proc_of_role(d, d->kill_role);
            if (!p) {
                fprintf(d->tty, "  no %s adapter was still running to kill\n", d->kill_role);
            } else {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, NULL, 0);
                p->killed++;
                fprintf(d->tty, "  killed %s (SIGKILL) at %.1f s; starting it again\n\n",
                        p->m->name, *secs);
                drawn = 0;
                sleep_ms(300);
                proc_start(d, p);
            }
            killed = 1;
        }
        int kl_done = 1;
        for (size_t i = 0; i < d->n_procs; i++)
            if (strcmp(d->procs[i].m->role, "kl") == 0 && !d->procs[i].exited)
                kl_done = 0;
        if (kl_done && c->have_portal &&
            c->r.siap_pindah + c->r.ditolak_ikd + c->r.ditolak_bkn == e->terminal &&
            c->r.dalam_proses == e->stuck && c->dlq == e->dead_letters &&
            c->r.asn == d->world.n_asn - e->malformed) {
            if (!d->interactive)
                draw(d, c, e, *secs, 0);
            return 0;
        }
        if (reap(d))
            return -1;
        if (*d->stop || wire_mono_ns() > deadline) {
            fprintf(stderr, "spbe demo: %s before the process completed\n",
                    *d->stop ? "stopped" : "timed out");
            return -1;
        }
        sleep_ms(d->kill_role && !killed ? 20 : d->interactive ? 250 : 500);
    }
}

/* ------------------------------------------------------------ checking */

typedef struct verdict {
    uint64_t by_status[8][2]; /* [StatusRelokasi][0 expected, 1 the portal's] */
    uint64_t matched, mismatched;
    char first_mismatch[5][160];
    uint64_t dlq, dlq_planted;
    char dlq_reason[256];
    uint64_t refused, kl_ok, kl_dup;
    uint64_t bkn_asked, bkn_right; /* bkn.siasn.pemeriksaan called directly */
    char refused_reason[400];
    uint64_t receipt_p50_us, receipt_p99_us;
    int audit_rc;
    char audit_line[400];
} verdict;

static const char *
status_name(int s)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&spbe__ikn__v1__status_relokasi__descriptor, s);
    return v ? v->name : "?";
}

/* Every ASN's status at the portal against the ground truth. */
static int
check_statuses(demo *d, verdict *v)
{
    char *nips[1000];
    for (size_t i = 0; i < d->world.n_asn; i += 1000) {
        size_t n = d->world.n_asn - i < 1000 ? d->world.n_asn - i : 1000;
        for (size_t k = 0; k < n; k++)
            nips[k] = d->world.asn[i + k].nip;
        Spbe__Ikn__V1__JawabanStatus *j = ask_portal(d, nips, n);
        if (!j || j->n_status != n) {
            fprintf(stderr, "spbe demo: the portal did not answer a status query: %s\n",
                    spbe_last_error(d->observer));
            if (j)
                spbe__ikn__v1__jawaban_status__free_unpacked(j, NULL);
            return -1;
        }
        for (size_t k = 0; k < n; k++) {
            const ikn_asn *a = &d->world.asn[i + k];
            int got = (int)j->status[k]->status;
            v->by_status[a->expected & 7][0]++;
            v->by_status[got & 7][1]++;
            if (got == a->expected && strcmp(j->status[k]->nip, a->nip) == 0) {
                v->matched++;
            } else {
                if (v->mismatched < 5)
                    snprintf(v->first_mismatch[v->mismatched], sizeof v->first_mismatch[0],
                             "NIP %s (%s): %s, expected %s", a->nip, ikn_problem_name(a->problem),
                             status_name(got), status_name(a->expected));
                v->mismatched++;
            }
        }
        spbe__ikn__v1__jawaban_status__free_unpacked(j, NULL);
    }
    return 0;
}

/* BKN's check called directly (request/reply, as any member with the call right may) for
 * a spread of ASN: its answer must agree with the ground truth. */
static void
check_bkn_service(demo *d, verdict *v)
{
    size_t step = d->world.n_asn / 50 ? d->world.n_asn / 50 : 1;
    for (size_t i = 0; i < d->world.n_asn; i += step) {
        const ikn_asn *a = &d->world.asn[i];
        Spbe__Ikn__V1__PermintaanPemeriksaanBkn q = SPBE__IKN__V1__PERMINTAAN_PEMERIKSAAN_BKN__INIT;
        q.nip = (char *)a->nip;
        q.instansi = (char *)a->agency->kode;
        uint8_t buf[128];
        size_t len = spbe__ikn__v1__permintaan_pemeriksaan_bkn__pack(&q, buf);
        spbe_message_options o = {.schema = "spbe.ikn.v1.PermintaanPemeriksaanBkn"};
        spbe_response resp;
        v->bkn_asked++;
        if (spbe_request(d->observer, "bkn.siasn.pemeriksaan", buf, len, 5000, &o, &resp) !=
            SPBE_OK)
            continue;
        Spbe__Ikn__V1__HasilPemeriksaanBkn *h =
            spbe__ikn__v1__hasil_pemeriksaan_bkn__unpack(NULL, resp.payload_len, resp.payload);
        spbe_response_free(&resp);
        if (!h)
            continue;
        int qualifies = a->problem != IKN_COMPETENCY_FAIL && a->problem != IKN_NO_RECORD;
        v->bkn_right += !h->memenuhi_syarat == !qualifies && strcmp(h->nip, a->nip) == 0 &&
                        h->data_valid == (a->problem != IKN_NO_RECORD);
        spbe__ikn__v1__hasil_pemeriksaan_bkn__free_unpacked(h, NULL);
    }
}

/* The dead letters, read offline: each must be a planted record BKN does not have. */
static void
check_dead_letters(demo *d, verdict *v)
{
    store_options so = {.read_only = 1};
    store *s;
    char err[512];
    store_reader *rd = NULL;
    store_topic_info t;
    if (store_open(d->data, &so, &s, err, sizeof err) != SPBE_OK)
        return;
    if (store_reader_begin(s, &rd) == SPBE_OK &&
        store_topic_get(rd, "$sys.dlq.bkn-pemeriksaan", &t) == SPBE_OK) {
        for (uint64_t seq = t.first_sequence; seq && seq <= t.last_sequence; seq++) {
            store_message m;
            Spbe__V1__SignedMessage *sm, *osm;
            Spbe__V1__Message *msg, *orig;
            if (store_message_get(rd, t.id, seq, &m) != SPBE_OK ||
                wire_envelope_decode(m.data, m.len, &sm, &msg, NULL) != SPBE_OK)
                continue;
            Spbe__V1__DeadLetter *dl =
                spbe__v1__dead_letter__unpack(NULL, msg->payload.len, msg->payload.data);
            if (dl && wire_envelope_decode(dl->message.data, dl->message.len, &osm, &orig, NULL) ==
                          SPBE_OK) {
                Spbe__Ikn__V1__SkenarioAsn *a = spbe__ikn__v1__skenario_asn__unpack(
                    NULL, orig->payload.len, orig->payload.data);
                const ikn_asn *w = a ? ikn_find_nip(&d->world, a->nip) : NULL;
                v->dlq++;
                v->dlq_planted += w && w->problem == IKN_NO_RECORD;
                if (!v->dlq_reason[0])
                    snprintf(v->dlq_reason, sizeof v->dlq_reason, "%s", dl->reason);
                if (a)
                    spbe__ikn__v1__skenario_asn__free_unpacked(a, NULL);
                wire_envelope_free(&osm, &orig);
            }
            if (dl)
                spbe__v1__dead_letter__free_unpacked(dl, NULL);
            wire_envelope_free(&sm, &msg);
        }
    }
    store_reader_end(&rd);
    store_close(&s);
}

/* A number from an adapter's JSON report line ("key":N), or 0. */
static uint64_t
report_u64(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(line, k);
    return p ? strtoull(p + strlen(k), NULL, 10) : 0;
}

/* The last line of an adapter's report file into line. */
static void
last_report(const proc *p, char *line, size_t n)
{
    line[0] = '\0';
    FILE *f = fopen(p->out, "r");
    char buf[2048];
    while (f && fgets(buf, sizeof buf, f))
        if (buf[0] == '{')
            snprintf(line, n, "%s", buf);
    if (f)
        fclose(f);
}

static void
stop_adapters(demo *d)
{
    for (size_t i = 0; i < d->n_procs; i++)
        if (!d->procs[i].exited)
            kill(d->procs[i].pid, SIGTERM);
    for (size_t i = 0; i < d->n_procs; i++) {
        proc *p = &d->procs[i];
        for (int t = 0; !p->exited && t < 200; t++) {
            if (waitpid(p->pid, &p->status, WNOHANG) == p->pid)
                p->exited = 1;
            else
                sleep_ms(50);
        }
        if (!p->exited) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
            p->exited = 1;
        }
    }
}

static void
reports(demo *d, verdict *v)
{
    for (size_t i = 0; i < d->n_procs; i++) {
        char line[2048];
        if (strcmp(d->procs[i].m->role, "kl") != 0)
            continue;
        last_report(&d->procs[i], line, sizeof line);
        v->refused += report_u64(line, "schema_mismatch");
        v->kl_ok += report_u64(line, "ok");
        v->kl_dup += report_u64(line, "duplicate");
        uint64_t p50 = report_u64(line, "receipt_p50_us"), p99 = report_u64(line, "receipt_p99_us");
        v->receipt_p50_us = p50 > v->receipt_p50_us ? p50 : v->receipt_p50_us;
        v->receipt_p99_us = p99 > v->receipt_p99_us ? p99 : v->receipt_p99_us;
        const char *r = strstr(line, "\"reason\":\"");
        if (r && r[10] != '"' && !v->refused_reason[0]) {
            snprintf(v->refused_reason, sizeof v->refused_reason, "%s", r + 10);
            char *end = strstr(v->refused_reason, "\"}");
            if (end)
                *end = '\0';
            for (char *q = v->refused_reason; *q; q++) /* the JSON escapes, for reading */
                if (*q == '\\')
                    memmove(q, q + 1, strlen(q));
        }
    }
}

static void
audit(demo *d, verdict *v)
{
    char log[512];
    snprintf(log, sizeof log, "%s/audit.log", d->dir);
    char *argv[] = {d->self, "audit", "verify", "--data", d->data, NULL};
    v->audit_rc = run(log, argv);
    FILE *f = fopen(log, "r");
    char buf[400];
    while (f && fgets(buf, sizeof buf, f) && !v->audit_line[0]) /* its verdict comes first */
        if (buf[0] != '\n')
            snprintf(v->audit_line, sizeof v->audit_line, "%s", buf);
    if (f)
        fclose(f);
    v->audit_line[strcspn(v->audit_line, "\n")] = '\0';
}

/* ------------------------------------------------------------ the summary */

static void
thousands(uint64_t v, char *out, size_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

static void
row(const char *step, uint64_t n, const char *note)
{
    char t[32];
    thousands(n, t, sizeof t);
    printf("  %-40s %10s  %s\n", step, t, note ? note : "");
}

static int
summary(demo *d, const expect *e, const counts *c, const verdict *v, double secs, int ok)
{
    const Spbe__Ikn__V1__RingkasanPortal *r = &c->r;
    double p50 = (double)r->latensi_p50_ns / 1e9, p99 = (double)r->latensi_p99_ns / 1e9,
           pmax = (double)r->latensi_maks_ns / 1e9;
    if (d->json) {
        printf("{\"asn\":%zu,\"seed\":%llu,\"seconds\":%.3f,\"messages\":%llu,"
               "\"msgs_per_s\":%.0f,\"asn_per_s\":%.0f,",
               d->n_asn, (unsigned long long)d->seed, secs, (unsigned long long)c->total,
               (double)c->total / secs, (double)d->n_asn / secs);
        printf("\"steps\":{\"unit\":%llu,\"asn\":%llu,\"ikd\":%llu,\"pemeriksaan\":%llu,"
               "\"keluarga\":%llu,\"hunian\":%llu,\"tunjangan\":%llu,\"status\":%llu},",
               (unsigned long long)c->unit, (unsigned long long)c->asn, (unsigned long long)c->ikd,
               (unsigned long long)c->pemeriksaan, (unsigned long long)c->keluarga,
               (unsigned long long)c->hunian, (unsigned long long)c->tunjangan,
               (unsigned long long)c->status);
        printf("\"final\":{");
        for (int s = 1; s < 8; s++)
            printf("%s\"%s\":[%llu,%llu]", s > 1 ? "," : "", status_name(s),
                   (unsigned long long)v->by_status[s][0], (unsigned long long)v->by_status[s][1]);
        printf("},\"matched\":%llu,\"mismatched\":%llu,\"schema_mismatch\":%llu,"
               "\"planted_malformed\":%llu,\"dead_letters\":%llu,\"dead_letters_planted\":%llu,"
               "\"planted_no_record\":%llu,\"planted_dead_letters\":%llu,\"duplicates_seen\":%llu,"
               "\"planted_duplicates\":%llu,"
               "\"bkn_asked\":%llu,\"bkn_right\":%llu,"
               "\"receipt_p50_us\":%llu,\"receipt_p99_us\":%llu,\"asn_to_ready_p50_ns\":%lld,"
               "\"asn_to_ready_p99_ns\":%lld,\"asn_to_ready_max_ns\":%lld,\"audit_verified\":%s,"
               "\"killed\":",
               (unsigned long long)v->matched, (unsigned long long)v->mismatched,
               (unsigned long long)v->refused, (unsigned long long)e->malformed,
               (unsigned long long)v->dlq, (unsigned long long)v->dlq_planted,
               (unsigned long long)e->no_record, (unsigned long long)e->dead_letters,
               (unsigned long long)r->pengajuan_ganda, (unsigned long long)e->duplicates,
               (unsigned long long)v->bkn_asked, (unsigned long long)v->bkn_right,
               (unsigned long long)v->receipt_p50_us, (unsigned long long)v->receipt_p99_us,
               (long long)r->latensi_p50_ns, (long long)r->latensi_p99_ns,
               (long long)r->latensi_maks_ns, v->audit_rc == 0 ? "true" : "false");
        cli_json_string(stdout, d->kill_role ? d->kill_role : "");
        printf(",\"ok\":%s}\n", ok ? "true" : "false");
        return ok ? EXIT_OK : EXIT_ERROR;
    }
    char a[32], b[32], note[600];
    printf("\n\033[1m== the relocation of %zu ASN to IKN: %s\033[0m\n", d->n_asn,
           ok ? "everything where it belongs" : "NOT as expected");
    thousands(c->total, a, sizeof a);
    printf("  %zu ministries and %zu adapter processes, seed %llu; %.1f s: %.0f ASN/s, %s "
           "signed messages stored, %.0f msgs/s\n\n",
           d->world.n_agencies, d->n_procs, (unsigned long long)d->seed, secs,
           (double)d->n_asn / secs, a, (double)c->total / secs);
    printf("  %-40s %10s\n", "step", "messages");
    row("1 unit scenarios (K/L)", c->unit, NULL);
    snprintf(note, sizeof note, "%llu submitted twice; %llu refused SCHEMA_MISMATCH",
             (unsigned long long)e->duplicates, (unsigned long long)v->refused);
    row("2 ASN scenarios (K/L)", c->asn, note);
    row("3 identity checks, IKD (request + reply)", c->ikd, NULL);
    snprintf(note, sizeof note, "%llu scenarios dead-lettered", (unsigned long long)v->dlq);
    row("4 BKN results", c->pemeriksaan, note);
    row("5 family scenarios (portal)", c->keluarga, NULL);
    row("6 housing (IKN Authority)", c->hunian, NULL);
    row("7 pioneer allowance (Kemenkeu)", c->tunjangan, NULL);
    row("8 status changes (portal)", c->status, NULL);
    printf(
        "\n  latency  publish -> signed receipt (K/L, 1000 in flight, after fsync)  p50 %.1f ms  "
        "p99 %.1f ms\n",
        (double)v->receipt_p50_us / 1000, (double)v->receipt_p99_us / 1000);
    printf("           ASN scenario -> SIAP_PINDAH (through 5 agencies)         p50 %.2f s   "
           "p99 %.2f s  "
           "max %.2f s\n\n",
           p50, p99, pmax);
    printf("  %-34s %10s %10s\n", "final status", "expected", "portal");
    for (int s = 1; s < 8; s++) {
        if (!v->by_status[s][0] && !v->by_status[s][1])
            continue;
        thousands(v->by_status[s][0], a, sizeof a);
        thousands(v->by_status[s][1], b, sizeof b);
        const char *why = s == SPBE__IKN__V1__STATUS_RELOKASI__DITETAPKAN      ? " (no BKN record)"
                          : s == SPBE__IKN__V1__STATUS_RELOKASI__TIDAK_DIKENAL ? " (record refused)"
                                                                               : "";
        char label[64];
        snprintf(label, sizeof label, "%s%s", status_name(s), why);
        printf("  %-34s %10s %10s\n", label, a, b);
    }
    printf("  every ASN in its expected status: %s (%llu of %zu)\n", v->mismatched ? "NO" : "yes",
           (unsigned long long)v->matched, d->n_asn);
    for (uint64_t i = 0; i < v->mismatched && i < 5; i++)
        printf("    %s\n", v->first_mismatch[i]);
    printf("\n  refused       %llu SCHEMA_MISMATCH (planted malformed records: %llu), e.g.\n"
           "                %s\n",
           (unsigned long long)v->refused, (unsigned long long)e->malformed,
           v->refused_reason[0] ? v->refused_reason : "-");
    printf("  dead letters  %llu in $sys.dlq.bkn-pemeriksaan, each a planted scenario BKN has no "
           "record for: %llu\n                (%llu ASN, some submitted twice), e.g. %s\n",
           (unsigned long long)v->dlq, (unsigned long long)v->dlq_planted,
           (unsigned long long)e->no_record, v->dlq_reason[0] ? v->dlq_reason : "-");
    printf("  duplicates    %llu scenarios submitted again, seen by the portal: %llu\n",
           (unsigned long long)e->duplicates, (unsigned long long)r->pengajuan_ganda);
    printf("  BKN service   bkn.siasn.pemeriksaan asked directly for %llu ASN: %llu answers as "
           "the ground truth\n",
           (unsigned long long)v->bkn_asked, (unsigned long long)v->bkn_right);
    if (d->kill_role)
        printf("  killed        %s once with SIGKILL midway, started again\n", d->kill_role);
    printf("  audit         %s\n", v->audit_line[0] ? v->audit_line : "(no output)");
    printf("\n  the data stays: spbe topic ls --data %s\n", d->data);
    return ok ? EXIT_OK : EXIT_ERROR;
}

/* ------------------------------------------------------------ main */

static int
demo_option(int opt, const char *arg, void *ctx)
{
    demo *d = ctx;
    char *end;
    unsigned long long v = strtoull(arg ? arg : "", &end, 10);
    int num = arg && *arg && !*end;
    switch (opt) {
    case 1:
        if (!num || v < 1 || v > 2000000)
            return fprintf(stderr, "spbe demo: --asn takes 1..2000000\n"), -1;
        d->n_asn = v;
        return 0;
    case 2:
        if (!num)
            return fprintf(stderr, "spbe demo: --seed takes a number\n"), -1;
        d->seed = v;
        return 0;
    case 3:
        if (strlen(arg) >= sizeof d->dir)
            return fprintf(stderr, "spbe demo: --dir: a path of at most 399 bytes\n"), -1;
        snprintf(d->dir, sizeof d->dir, "%s", arg);
        return 0;
    case 4:
        if (!num || v < 1 || v > 65000)
            return fprintf(stderr, "spbe demo: --port takes 1..65000\n"), -1;
        d->port = (int)v;
        return 0;
    case 5:
        if (!num || v < 1 || v > 60)
            return fprintf(stderr, "spbe demo: --workers takes 1..60\n"), -1;
        d->workers = (int)v;
        return 0;
    case 6:
        d->kill_role = arg;
        return 0;
    }
    return -1;
}

static int
demo_main(demo *d, int argc, char **argv)
{
    d->n_asn = 15000;
    d->seed = 2024;
    d->port = 7400;
    d->workers = 16;
    d->stop = &demo_stop;
    snprintf(d->dir, sizeof d->dir, "./demo");
    static const struct option options[] = {
        {"asn", required_argument, 0, 1},
        {"seed", required_argument, 0, 2},
        {"dir", required_argument, 0, 3},
        {"port", required_argument, 0, 4},
        {"workers", required_argument, 0, 5},
        {"kill", required_argument, 0, 6},
        {0, 0, 0, 0},
    };
    cli_common common;
    int i = cli_parse(argc, argv, &common, options, "", demo_option, d, demo_usage);
    if (i < 0)
        return i == -2 ? EXIT_OK : EXIT_USAGE;
    if (i != argc) {
        fputs(demo_usage, stderr);
        return EXIT_USAGE;
    }
    d->json = common.json;
    static const char *const roles[] = {"kl", "dukcapil", "bkn", "portal", "hunian", "tunjangan"};
    int known = !d->kill_role;
    for (size_t k = 0; k < 6 && !known; k++)
        known = strcmp(d->kill_role, roles[k]) == 0;
    if (!known) {
        fprintf(stderr, "spbe demo: --kill takes kl, dukcapil, bkn, portal, hunian or tunjangan\n");
        return EXIT_USAGE;
    }
    ssize_t n = readlink("/proc/self/exe", d->self, sizeof d->self - 1);
    if (n <= 0)
        return cli_fail("demo", SPBE_INTERNAL, "cannot find this program");
    d->self[n] = '\0';
    if (find_program(d, "SPBE_BROKER_BIN", "spbe-broker", "broker/spbe-broker", d->broker_bin) ||
        find_program(d, "SPBE_IKN_BIN", "spbe-ikn", "adapters/ikn/spbe-ikn", d->ikn_bin))
        return cli_fail("demo", SPBE_NOT_FOUND,
                        "spbe-broker and spbe-ikn are neither beside spbe nor in its build tree "
                        "(SPBE_BROKER_BIN, SPBE_IKN_BIN name them)");
    char real[PATH_MAX];
    if (fresh_dir(d) != 0 || !realpath(d->dir, real))
        return EXIT_ERROR;
    if (strlen(real) >= sizeof d->dir)
        return cli_fail("demo", SPBE_BAD_REQUEST, "the directory's path is too long");
    snprintf(d->dir, sizeof d->dir, "%.399s", real);
    snprintf(d->data, sizeof d->data, "%.399s/data", d->dir);
    snprintf(d->endpoint, sizeof d->endpoint, "tcp://127.0.0.1:%d", d->port);
    d->interactive = isatty(2) && !getenv("SPBE_DEMO_PLAIN");
    d->tty = stderr;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (ikn_world_build(&d->world, d->seed, d->n_asn) != 0)
        return cli_fail("demo", SPBE_INTERNAL, "out of memory for %zu ASN", d->n_asn);
    d->n_members = ikn_members(&d->world, d->members, d->pubs);
    expect e;
    expectations(d, &e);
    fprintf(d->tty,
            "\033[1m== spbe demo: the relocation of %zu ASN to IKN\033[0m (seed %llu; in %s)\n"
            "  planted: %zu malformed records, %zu without a BKN record, %zu IKD not activated, "
            "%zu NIK not in IKD,\n  %zu below the competency bar, %zu submitted twice\n\n",
            d->n_asn, (unsigned long long)d->seed, d->dir, d->world.planted[IKN_MALFORMED],
            d->world.planted[IKN_NO_RECORD], d->world.planted[IKN_IKD_INACTIVE],
            d->world.planted[IKN_IKD_NOT_FOUND], d->world.planted[IKN_COMPETENCY_FAIL],
            d->world.duplicates);
    int rc = EXIT_ERROR;
    counts c = {0};
    verdict v;
    memset(&v, 0, sizeof v);
    double secs = 0;
    if (start_broker(d) == 0 && register_members(d) == 0) {
        fprintf(d->tty, "  broker on %s (HTTP 127.0.0.1:%d), %zu members registered\n\n",
                d->endpoint, d->port + 80, d->n_members);
        start_adapters(d);
        int done = watch(d, &e, &c, &secs) == 0;
        if (done && check_statuses(d, &v) != 0)
            done = 0;
        if (done)
            check_bkn_service(d, &v);
        stop_adapters(d);
        spbe_close(&d->observer);
        spbe_close(&d->admin);
        kill(d->broker, SIGTERM);
        waitpid(d->broker, NULL, 0);
        d->broker = 0;
        if (done) {
            reports(d, &v);
            check_dead_letters(d, &v);
            audit(d, &v);
            int ok = v.mismatched == 0 && v.matched == d->n_asn && v.audit_rc == 0 &&
                     v.dlq == e.dead_letters && v.dlq_planted == e.dead_letters &&
                     v.refused >= e.malformed && (v.refused == e.malformed || d->kill_role) &&
                     c.r.pengajuan_ganda == e.duplicates && v.bkn_right == v.bkn_asked;
            rc = summary(d, &e, &c, &v, secs, ok);
        }
    }
    if (d->n_procs && rc == EXIT_ERROR && !v.matched)
        stop_adapters(d);
    spbe_close(&d->observer);
    spbe_close(&d->admin);
    if (d->broker) {
        kill(d->broker, SIGTERM);
        waitpid(d->broker, NULL, 0);
    }
    ikn_world_free(&d->world);
    return rc;
}

int
cmd_demo(int argc, char **argv)
{
    demo *d = calloc(1, sizeof *d); /* large for a stack */
    if (!d)
        return cli_fail("demo", SPBE_INTERNAL, "out of memory");
    int rc = demo_main(d, argc, argv);
    free(d);
    return rc;
}
