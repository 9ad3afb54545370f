/* webhook.c - one durable consumer delivered to one webhook: each delivery is POSTed as
 * JSON; a 2xx answer acknowledges it, anything else is retried with backoff while the
 * message is held (its ack wait renewed with PROGRESS), so that nothing is lost and nothing
 * goes to the dead letters because a receiver was down. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "bridge.h"
#include "jsonpb.h"
#include "schema.h"
#include "wire.h"

/* One delivery held until the webhook took it. */
typedef struct held {
    char topic[256];
    uint64_t sequence;
    uint32_t delivery_count;
    char *body;
    size_t body_len;
    char header[6][320];
    int attempts;
    int64_t next_ns;     /* the next attempt, not before */
    int64_t progress_ns; /* renew the ack wait then */
    int64_t ack_wait_ns;
    CURL *easy;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
    struct held *next;
} held;

struct webhook {
    const bridge_config *cfg;
    const bridge_hook *hook;
    spbe_client *client;
    CURLM *multi;
    pthread_t thread;
    held *list;
    int active;
    int stop; /* under mu */
    pthread_mutex_t mu;
    volatile sig_atomic_t *fatal;
    uint64_t delivered, retries;
};

static json_t *
ns_string(int64_t ns)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, ns);
    return json_string(s);
}

/* The JSON the webhook gets for delivery d. */
static char *
delivery_json(webhook *w, const spbe_delivery *d)
{
    char id[2 * SPBE_ID_BYTES + 1], created[48], accepted[48];
    wire_hex_encode(d->id, SPBE_ID_BYTES, id);
    bridge_time(d->created_ns, created, sizeof created);
    bridge_time(d->accepted_ns, accepted, sizeof accepted);
    json_t *j = json_object();
    json_object_set_new(j, "consumer", json_string(w->hook->consumer));
    json_object_set_new(j, "topic", json_string(d->topic));
    json_object_set_new(j, "sequence", json_integer((json_int_t)d->sequence));
    json_object_set_new(j, "delivery_count", json_integer(d->delivery_count));
    json_object_set_new(j, "sender", json_string(d->sender));
    json_object_set_new(j, "message_id", json_string(id));
    json_object_set_new(j, "created_ns", ns_string(d->created_ns));
    json_object_set_new(j, "created", json_string(created));
    json_object_set_new(j, "accepted_ns", ns_string(d->accepted_ns));
    json_object_set_new(j, "accepted", json_string(accepted));
    json_object_set_new(j, "schema",
                        d->schema && *d->schema ? json_string(d->schema) : json_null());
    if (d->correlation_len)
        json_object_set_new(j, "correlation_id",
                            jsonpb_base64(d->correlation_id, d->correlation_len));
    if (d->reply_to && *d->reply_to)
        json_object_set_new(j, "reply_to", json_string(d->reply_to));
    if (d->not_before_ns)
        json_object_set_new(j, "not_before_ns", ns_string(d->not_before_ns));
    if (d->expires_ns)
        json_object_set_new(j, "expires_ns", ns_string(d->expires_ns));
    json_t *payload = json_null();
    const ProtobufCMessageDescriptor *desc =
        d->schema && *d->schema ? schema_find(d->schema) : NULL;
    if (desc) {
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, d->payload_len, d->payload);
        json_t *p = m ? jsonpb_to_json(m) : NULL;
        if (p) {
            json_decref(payload);
            payload = p;
        } else {
            json_object_set_new(j, "payload_error",
                                json_string("the payload does not decode as its schema"));
        }
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }
    json_object_set_new(j, "payload", payload);
    json_object_set_new(j, "payload_base64", jsonpb_base64(d->payload, d->payload_len));
    json_object_set_new(j, "signed_message_base64", jsonpb_base64(d->raw, d->raw_len));
    json_object_set_new(j, "signature_verified",
                        json_boolean(spbe_verify(w->client, d) == SPBE_OK));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

static held *
find(webhook *w, const char *topic, uint64_t sequence)
{
    for (held *h = w->list; h; h = h->next)
        if (h->sequence == sequence && strcmp(h->topic, topic) == 0)
            return h;
    return NULL;
}

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    webhook *w = arg;
    if (!d->consumer)
        return;
    int64_t now = wire_now_ns();
    int64_t wait = d->ack_deadline_ns > now ? d->ack_deadline_ns - now : 30000000000LL;
    held *h = find(w, d->topic, d->sequence);
    if (h) { /* delivered again (a reconnect, or the ack wait passed): still ours */
        h->delivery_count = d->delivery_count;
        h->ack_wait_ns = wait;
        h->progress_ns = now + wait / 2;
        return;
    }
    h = calloc(1, sizeof *h);
    char *body = h ? delivery_json(w, d) : NULL;
    if (!body) {
        free(h);
        bridge_log("error", "webhook_out_of_memory", "consumer=%s topic=%s sequence=%" PRIu64,
                   w->hook->consumer, d->topic, d->sequence);
        return; /* not acknowledged: delivered again after the ack wait */
    }
    snprintf(h->topic, sizeof h->topic, "%s", d->topic);
    h->sequence = d->sequence;
    h->delivery_count = d->delivery_count;
    h->body = body;
    h->body_len = strlen(body);
    char id[2 * SPBE_ID_BYTES + 1];
    wire_hex_encode(d->id, SPBE_ID_BYTES, id);
    snprintf(h->header[0], sizeof h->header[0], "Spbe-Topic: %s", d->topic);
    snprintf(h->header[1], sizeof h->header[1], "Spbe-Sequence: %" PRIu64, d->sequence);
    snprintf(h->header[2], sizeof h->header[2], "Spbe-Consumer: %s", w->hook->consumer);
    snprintf(h->header[3], sizeof h->header[3], "Spbe-Message-Id: %s", id);
    snprintf(h->header[4], sizeof h->header[4], "Spbe-Sender: %s", d->sender);
    snprintf(h->header[5], sizeof h->header[5], "Idempotency-Key: %s/%s", d->sender, id);
    h->ack_wait_ns = wait;
    h->progress_ns = now + wait / 2;
    h->next_ns = now;
    h->next = w->list;
    w->list = h;
}

static size_t
discard(char *ptr, size_t size, size_t n, void *arg)
{
    (void)ptr, (void)arg;
    return size * n;
}

static int
start_transfer(webhook *w, held *h)
{
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    char line[96];
    struct curl_slist *hd = NULL;
    hd = curl_slist_append(hd, "Content-Type: application/json");
    hd = curl_slist_append(hd, "Expect:");
    for (int i = 0; i < 6; i++)
        hd = curl_slist_append(hd, h->header[i]);
    snprintf(line, sizeof line, "Spbe-Delivery-Count: %u", h->delivery_count);
    hd = curl_slist_append(hd, line);
    snprintf(line, sizeof line, "Spbe-Attempt: %d", h->attempts + 1);
    hd = curl_slist_append(hd, line);
    h->headers = hd;
    h->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, w->hook->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "spbe-bridge/" BRIDGE_VERSION);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)w->cfg->hook_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)w->cfg->hook_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, h);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        curl_slist_free_all(hd);
        h->headers = NULL;
        return -1;
    }
    h->easy = e;
    w->active++;
    return 0;
}

static void
end_transfer(webhook *w, held *h)
{
    curl_multi_remove_handle(w->multi, h->easy);
    curl_easy_cleanup(h->easy);
    curl_slist_free_all(h->headers);
    h->easy = NULL;
    h->headers = NULL;
    w->active--;
}

static void
drop(webhook *w, held *h)
{
    for (held **p = &w->list; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    if (h->easy)
        end_transfer(w, h);
    free(h->body);
    free(h);
}

/* A transfer ended: acknowledged on 2xx, else tried again later. */
static void
transfer_done(webhook *w, held *h, CURLcode result)
{
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    end_transfer(w, h);
    if (result == CURLE_OK && status >= 200 && status < 300) {
        spbe_ack(w->client, w->hook->consumer, h->topic, h->sequence, SPBE_ACK, 0, 0);
        w->delivered++;
        drop(w, h);
        return;
    }
    h->attempts++;
    w->retries++;
    int64_t delay = (int64_t)w->cfg->retry_min_ms;
    for (int i = 1; i < h->attempts && delay < w->cfg->retry_max_ms; i++)
        delay *= 2;
    if (delay > w->cfg->retry_max_ms)
        delay = w->cfg->retry_max_ms;
    delay += randombytes_uniform((uint32_t)(delay / 4 + 1)); /* spread the retries */
    h->next_ns = wire_now_ns() + delay * 1000000;
    if (result == CURLE_OK)
        bridge_log("warn", "webhook_retry",
                   "consumer=%s topic=%s sequence=%" PRIu64 " attempt=%d status=%ld delay_ms=%lld",
                   w->hook->consumer, h->topic, h->sequence, h->attempts, status, (long long)delay);
    else
        bridge_log("warn", "webhook_retry",
                   "consumer=%s topic=%s sequence=%" PRIu64
                   " attempt=%d error=\"%s\" delay_ms=%lld",
                   w->hook->consumer, h->topic, h->sequence, h->attempts,
                   h->errbuf[0] ? h->errbuf : curl_easy_strerror(result), (long long)delay);
}

static int
stopping(webhook *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void *
run(void *arg)
{
    webhook *w = arg;
    while (!stopping(w)) {
        int rc = spbe_dispatch(w->client, 0, NULL);
        if (rc != SPBE_OK) {
            bridge_log("error", "webhook_ended", "consumer=%s code=%s detail=\"%s\"",
                       w->hook->consumer, spbe_error_name(rc), spbe_last_error(w->client));
            bridge_fatal(w->fatal);
            break;
        }
        int64_t now = wire_now_ns(), next = now + 200000000;
        for (held *h = w->list; h; h = h->next) {
            if (now >= h->progress_ns) { /* still trying: keep it ours */
                spbe_ack(w->client, w->hook->consumer, h->topic, h->sequence, SPBE_PROGRESS, 0, 0);
                h->progress_ns = now + h->ack_wait_ns / 2;
            }
            if (!h->easy && h->next_ns <= now && w->active < w->cfg->hook_concurrency &&
                start_transfer(w, h) != 0)
                h->next_ns = now + 1000000000;
            if (!h->easy && h->next_ns < next)
                next = h->next_ns;
        }
        int running;
        curl_multi_perform(w->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(w->multi, &left)))
            if (msg->msg == CURLMSG_DONE) {
                held *h;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
                transfer_done(w, h, msg->data.result);
            }
        spbe_dispatch(w->client, 0, NULL); /* the fd is edge-triggered: after every call */
        int timeout = (int)((next - wire_now_ns()) / 1000000);
        int lib = spbe_next_timeout_ms(w->client);
        if (lib >= 0 && lib < timeout)
            timeout = lib;
        if (timeout < 0)
            timeout = 0;
        if (w->list && !w->active && timeout > 50)
            timeout = 50;
        struct curl_waitfd extra = {.fd = spbe_fd(w->client), .events = CURL_WAIT_POLLIN};
        curl_multi_poll(w->multi, &extra, extra.fd >= 0 ? 1 : 0, timeout, NULL);
    }
    while (w->list) /* unacknowledged: the broker delivers them again */
        drop(w, w->list);
    return NULL;
}

int
webhook_start(const bridge_config *cfg, const bridge_hook *hook, volatile sig_atomic_t *fatal,
              webhook **out, char *err, size_t err_len)
{
    *out = NULL;
    webhook *w = calloc(1, sizeof *w);
    if (!w)
        return snprintf(err, err_len, "out of memory"), -1;
    w->cfg = cfg;
    w->hook = hook;
    w->fatal = fatal;
    pthread_mutex_init(&w->mu, NULL);
    spbe_options o = {.endpoint = cfg->broker,
                      .broker_key_hex = cfg->broker_key,
                      .timeout_ms = cfg->timeout_ms,
                      .client_name = "spbe-bridge/" BRIDGE_VERSION " webhook"};
    int rc = spbe_connect(cfg->key, &o, &w->client);
    if (rc == SPBE_OK) {
        spbe_set_delivery_handler(w->client, on_delivery, w);
        spbe_consumer_options copt = cfg->copt;
        copt.max_in_flight = (uint32_t)cfg->hook_concurrency;
        rc = spbe_consume(w->client, hook->consumer, hook->pattern, &copt, NULL);
    }
    if (rc != SPBE_OK) {
        snprintf(err, err_len, "consumer %s: %s: %s", hook->consumer, spbe_error_name(rc),
                 spbe_last_error(w->client));
        spbe_close(&w->client);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return -1;
    }
    w->multi = curl_multi_init();
    if (!w->multi || pthread_create(&w->thread, NULL, run, w) != 0) {
        snprintf(err, err_len, "consumer %s: cannot start its thread", hook->consumer);
        if (w->multi)
            curl_multi_cleanup(w->multi);
        spbe_close(&w->client);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return -1;
    }
    *out = w;
    return 0;
}

void
webhook_stop(webhook **wp)
{
    webhook *w = *wp;
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    bridge_log("info", "webhook_stopped", "consumer=%s delivered=%" PRIu64 " retries=%" PRIu64,
               w->hook->consumer, w->delivered, w->retries);
    curl_multi_cleanup(w->multi);
    spbe_close(&w->client);
    pthread_mutex_destroy(&w->mu);
    free(w);
    *wp = NULL;
}
