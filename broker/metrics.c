/* metrics.c - counters and snapshots for the HTTP endpoint. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"

const double metrics_bucket_seconds[METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0};

void
metrics_init(metrics *m)
{
    memset(m, 0, sizeof *m);
    m->started_ns = wire_now_ns();
    atomic_store(&m->loop_ns, m->started_ns);
    pthread_mutex_init(&m->lock, NULL);
}

void
metrics_destroy(metrics *m)
{
    pthread_mutex_destroy(&m->lock);
    free(m->consumers);
    free(m->sessions_json);
    m->consumers = NULL;
    m->sessions_json = NULL;
}

void
metrics_rejected(metrics *m, int code)
{
    metrics_add(&m->rejected[code >= 0 && code < METRICS_CODES ? code : METRICS_CODES - 1], 1);
}

void
metrics_commit(metrics *m, uint64_t ns)
{
    double s = (double)ns / 1e9;
    for (int i = 0; i < METRICS_BUCKETS; i++)
        if (s <= metrics_bucket_seconds[i]) {
            metrics_add(&m->commit_buckets[i], 1);
            break;
        }
    metrics_add(&m->commit_count, 1);
    metrics_add(&m->commit_sum_ns, ns);
}

void
metrics_publish(metrics *m, uint8_t *consumers, size_t consumers_len, char *sessions_json)
{
    pthread_mutex_lock(&m->lock);
    free(m->consumers);
    free(m->sessions_json);
    m->consumers = consumers;
    m->consumers_len = consumers_len;
    m->sessions_json = sessions_json;
    pthread_mutex_unlock(&m->lock);
}

void
metrics_snapshot(metrics *m, uint8_t **consumers, size_t *consumers_len, char **sessions_json)
{
    pthread_mutex_lock(&m->lock);
    *consumers = NULL;
    *consumers_len = 0;
    if (m->consumers && (*consumers = malloc(m->consumers_len ? m->consumers_len : 1)) != NULL) {
        memcpy(*consumers, m->consumers, m->consumers_len);
        *consumers_len = m->consumers_len;
    }
    *sessions_json = m->sessions_json ? strdup(m->sessions_json) : NULL;
    pthread_mutex_unlock(&m->lock);
}
