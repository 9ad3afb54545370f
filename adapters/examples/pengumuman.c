/* pengumuman.c - a complete adapter: a regional government's notice board that receives
 * the ministries' announcements (durable consumer: none is missed while it is down),
 * checks each sender's signature end to end, shows it, and acknowledges it. */
#include <signal.h>
#include <stdio.h>

#include <spbe/spbe.h>

static volatile sig_atomic_t stop;
static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void
on_delivery(const spbe_delivery *d, void *arg)
{
    spbe_client *c = arg;
    if (spbe_verify(c, d) != SPBE_OK) { /* not signed by its sender: never shown */
        spbe_term(c, d->consumer, d->topic, d->sequence, "signature does not verify", 0);
        return;
    }
    printf("%s #%llu from %s: %.*s\n", d->topic, (unsigned long long)d->sequence, d->sender,
           (int)d->payload_len, (const char *)d->payload);
    fflush(stdout);
    spbe_ack(c, d->consumer, d->topic, d->sequence, SPBE_ACK, 0, 0);
}

int
main(void)
{
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    spbe_client *c;
    int rc = spbe_connect(NULL, NULL, &c); /* $SPBE_KEY, $SPBE_BROKER */
    if (rc == SPBE_OK) {
        spbe_set_delivery_handler(c, on_delivery, c);
        spbe_consumer_options o = {.start = SPBE_START_FIRST};
        rc = spbe_consume(c, "papan-pengumuman", "ikn.pengumuman.>", &o, NULL);
    }
    while (rc == SPBE_OK && !stop)
        rc = spbe_dispatch(c, 500, NULL); /* reconnects by itself when the broker restarts */
    if (rc != SPBE_OK)
        fprintf(stderr, "pengumuman: %s: %s\n", spbe_error_name(rc), spbe_last_error(c));
    spbe_close(&c);
    return rc == SPBE_OK ? 0 : 1;
}
