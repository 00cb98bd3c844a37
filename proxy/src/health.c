/*
 * The prober: one timer per checked service starts a round, a round sends one probe to each server
 * of the balancer's current set over a fresh server connection, and each probe ends in a verdict
 * counted per server. Connections are upconn's; what a verdict means for picks is the balancer's.
 *
 * A server's probe state lives in a fixed slot of its service, found by address, so a round
 * allocates nothing but the connections themselves, and a probe still in flight when the next
 * round comes is simply skipped. Every probe has one timer armed from its start (half_timer), which
 * covers the connect and the response head; its body is never read.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "http.h"
#include "log.h"
#include "upconn.h"

struct health_svc;

/* One server of a service, kept across rounds while the server stays in the set. */
struct health_probe {
    struct health_svc *svc;            /* borrowed: the service it belongs to */
    struct balancer_addr addr;         /* the server, by which the slot is found */
    struct upconn *u;                  /* owned while a probe is in flight, else NULL */
    struct balancer_set *set;          /* ref while in flight: keeps srv valid */
    const struct balancer_server *srv; /* borrowed from set: where the verdict goes */
    struct http_scan scan;             /* the response head, as it arrives */
    unsigned fails;                    /* failures in a row while up */
    unsigned oks;                      /* successes in a row while down */
    bool used;                         /* the slot holds a server */
    bool seen;                         /* the server is in this round's set */
    bool connected;                    /* the connect of the probe in flight is over */
    bool down;                         /* the verdict */
};

/* A service with a health_check. */
struct health_svc {
    struct health *h;                 /* borrowed: the prober */
    const struct config_service *cfg; /* borrowed from h->rt->cfg */
    struct balancer *b;               /* borrowed from h->rt */
    uint64_t timeout_ms;              /* a probe's connect and response head together */
    struct event timer;               /* the next round */
    struct health_probe probes[BALANCER_MAX_SERVERS]; /* slots, not in set order */
};

struct health {
    struct loop *lp;         /* borrowed */
    struct runtime *rt;      /* ref */
    struct health_svc *svcs; /* owned, nsvcs of them */
    size_t nsvcs;
    struct loop_defer defer; /* health_stop()'s free */
};

static void probe_cb(void *owner, enum half_event ev);

/* ---------------------------------------------------------------------------------------------
 * Verdicts
 */

/* Counts one probe's outcome towards the server's verdict, logs a change, tells the balancer. */
static void
probe_verdict(struct health_probe *p, bool ok, const char *why)
{
    const char *name = p->svc->cfg->name;

    if (ok) {
        p->fails = 0;
        if (p->down && ++p->oks >= HEALTH_RISE) {
            p->down = false;
            p->oks = 0;
            log_msg(LOG_INFO, "health: service %s: server %s is up again", name, p->addr.label);
        }
    } else {
        p->oks = 0;
        if (!p->down && ++p->fails >= HEALTH_FALL) {
            p->down = true;
            p->fails = 0;
            log_msg(LOG_WARN, "health: service %s: server %s is down: %s", name, p->addr.label,
                    why);
        }
    }
    /* Every time, not only on a change: a server that left the set and came back between two
     * rounds has fresh health in the balancer. Only a change writes shared memory. */
    balancer_mark_probe(p->srv, !p->down);
}

/* Ends the probe in flight (if any) without a verdict: the connection closed, the set dropped. */
static void
probe_abort(struct health_probe *p)
{
    upconn_close(p->u, "the probe is over");
    p->u = NULL;
    balancer_set_unref(p->set);
    p->set = NULL;
    p->srv = NULL;
}

/* Ends the probe in flight with its outcome. */
static void
probe_end(struct health_probe *p, bool ok, const char *why)
{
    probe_verdict(p, ok, why);
    probe_abort(p);
}

/* ---------------------------------------------------------------------------------------------
 * One probe: connect, send, read the response head
 */

/* Writes the request into out. Returns 0, or -1 when memory ran out. */
static int
probe_request(struct health_probe *p, struct evbuffer *out)
{
    int n;

    /* HTTP/1.1 needs Host (RFC 9112 3.2); the server's own address is all a probe knows. */
    n = evbuffer_add_printf(out,
                            "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: portier-health-check\r\n"
                            "Connection: close\r\n\r\n",
                            p->svc->cfg->health.path, p->addr.label);
    return n < 0 ? -1 : 0;
}

/* Sends a probe to srv of set (which the caller holds) from slot p, which has none in flight. */
static void
probe_start(struct health_probe *p, struct balancer_set *set, const struct balancer_server *srv)
{
    struct health_svc *svc = p->svc;
    char why[128];

    p->set = balancer_set_ref(set);
    p->srv = srv;
    p->u = upconn_get(svc->h->lp, NULL, &p->addr, svc->timeout_ms, probe_cb, p);
    if (p->u == NULL) {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        probe_end(p, false, why);
        return;
    }
    p->connected = !p->u->h.connecting;
    http_scan_init(&p->scan, HTTP_SCAN_RESPONSE, HEALTH_HEAD_MAX);
    if (probe_request(p, p->u->h.out) < 0) {
        probe_end(p, false, "out of memory");
        return;
    }
    /* One timer for the connect and the head; upconn_get() armed it for a connect in progress. */
    half_timer(&p->u->h, svc->timeout_ms);
    if (p->connected && half_flush(&p->u->h) < 0) {
        snprintf(why, sizeof(why), "send: %s", strerror(p->u->h.err));
        probe_end(p, false, why);
    }
}

/*
 * Scans what arrived for the response head. Returns 1 when the probe is over (*ok and why set),
 * 0 to wait for more bytes.
 */
static int
probe_read_head(struct health_probe *p, bool *ok, char *why, size_t whylen)
{
    struct half *h = &p->u->h;
    struct http_response res;
    const char *buf;
    size_t len;
    int rc;

    *ok = false;
    /* A loop, not a recursion: each interim (1xx) head is dropped and the next one scanned. */
    for (;;) {
        len = evbuffer_get_length(h->in);
        buf = len > 0 ? (const char *)evbuffer_pullup(h->in, (ev_ssize_t)len) : NULL;
        rc = buf != NULL ? http_scan_head(&p->scan, buf, len) : 0;
        if (rc == 0 && !h->eof)
            return 0;
        if (rc == 0) {
            snprintf(why, whylen, "%s before a complete response head",
                     h->err != 0 ? strerror(h->err) : "closed");
            return 1;
        }
        if (rc < 0) {
            snprintf(why, whylen, "bad response head: %s", p->scan.why);
            return 1;
        }
        if (http_response_parse(&res, buf, p->scan.len, 0) < 0) {
            snprintf(why, whylen, "bad response head: %s", res.why);
            return 1;
        }
        if (!res.interim)
            break;
        evbuffer_drain(h->in, p->scan.len);
        http_scan_init(&p->scan, HTTP_SCAN_RESPONSE, HEALTH_HEAD_MAX);
    }
    *ok = res.status >= 200 && res.status <= 399;
    snprintf(why, whylen, "status %d", res.status);
    return 1;
}

/* The probe's connection reports. */
static void
probe_cb(void *owner, enum half_event ev)
{
    struct health_probe *p = owner;
    struct half *h;
    char why[160];
    bool ok;

    assert(p->u != NULL); /* a closed connection reports nothing */
    h = &p->u->h;
    switch (ev) {
    case HALF_CONNECTED:
        p->connected = true;
        if (half_flush(h) < 0) {
            snprintf(why, sizeof(why), "send: %s", strerror(h->err));
            probe_end(p, false, why);
        }
        return;
    case HALF_DRAINED:
        return; /* the request went; the timer still runs for the head */
    case HALF_READ:
        if (probe_read_head(p, &ok, why, sizeof(why)) > 0)
            probe_end(p, ok, why);
        return;
    case HALF_ERROR:
        snprintf(why, sizeof(why), "%s%s", p->connected ? "" : "connect: ", strerror(h->err));
        probe_end(p, false, why);
        return;
    case HALF_TIMEOUT:
        snprintf(why, sizeof(why), "%s within %llu ms",
                 p->connected ? "no response head" : "no connection",
                 (unsigned long long)p->svc->timeout_ms);
        probe_end(p, false, why);
        return;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Rounds
 */

/* Returns the index of the slot of svc that holds addr, or -1. */
static int
svc_slot(const struct health_svc *svc, const struct balancer_addr *addr)
{
    for (int i = 0; i < BALANCER_MAX_SERVERS; i++)
        if (svc->probes[i].used && balancer_addr_equal(&svc->probes[i].addr, addr))
            return i;
    return -1;
}

/* Returns the slot of svc that holds addr, or NULL. */
static struct health_probe *
svc_find(struct health_svc *svc, const struct balancer_addr *addr)
{
    int i = svc_slot(svc, addr);

    return i >= 0 ? &svc->probes[i] : NULL;
}

/* Takes a free slot of svc for addr, up until probed otherwise; NULL when every slot is taken. */
static struct health_probe *
svc_add(struct health_svc *svc, const struct balancer_addr *addr)
{
    for (size_t i = 0; i < BALANCER_MAX_SERVERS; i++) {
        struct health_probe *p = &svc->probes[i];
        if (!p->used) {
            memset(p, 0, sizeof(*p));
            p->svc = svc;
            p->addr = *addr;
            p->used = true;
            return p;
        }
    }
    return NULL;
}

/* Probes every server of the balancer's current set, and forgets those no longer in it. */
static void
svc_round(struct health_svc *svc)
{
    struct balancer_set *set = balancer_acquire(svc->b);
    size_t n = balancer_set_size(set);

    for (size_t i = 0; i < BALANCER_MAX_SERVERS; i++)
        svc->probes[i].seen = false;
    for (size_t i = 0; i < n; i++) {
        struct health_probe *p = svc_find(svc, balancer_server_addr(balancer_set_server(set, i)));
        if (p != NULL)
            p->seen = true;
    }
    /* Forget first, so that a set of BALANCER_MAX_SERVERS new servers finds its slots free. */
    for (size_t i = 0; i < BALANCER_MAX_SERVERS; i++) {
        struct health_probe *p = &svc->probes[i];
        if (p->used && !p->seen) {
            probe_abort(p);
            p->used = false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct balancer_server *srv = balancer_set_server(set, i);
        struct health_probe *p = svc_find(svc, balancer_server_addr(srv));
        if (p == NULL)
            p = svc_add(svc, balancer_server_addr(srv));
        /* A set holds at most BALANCER_MAX_SERVERS, and every other slot was just freed. */
        if (p != NULL && p->u == NULL)
            probe_start(p, set, srv);
        /* else: still in flight from the last round, under its own timer; not doubled */
    }
    balancer_set_unref(set);
}

static void
round_cb(evutil_socket_t fd, short what, void *arg)
{
    struct health_svc *svc = arg;
    struct timeval tv;

    (void)fd;
    (void)what;
    svc_round(svc);
    tv.tv_sec = (time_t)(svc->cfg->health.interval_ms / 1000);
    tv.tv_usec = (suseconds_t)(svc->cfg->health.interval_ms % 1000 * 1000);
    evtimer_add(&svc->timer, &tv);
}

/* ---------------------------------------------------------------------------------------------
 * Start and stop
 */

/* Returns prev's service called name probing the same path, or NULL. */
static const struct health_svc *
prev_svc(const struct health *prev, const struct config_service *cs)
{
    for (size_t i = 0; prev != NULL && i < prev->nsvcs; i++) {
        const struct config_service *old = prev->svcs[i].cfg;
        if (strcmp(old->name, cs->name) == 0 && strcmp(old->health.path, cs->health.path) == 0)
            return &prev->svcs[i];
    }
    return NULL;
}

/* Seeds svc, still empty, with what old knew of the servers in the balancer's current set. */
static void
svc_seed(struct health_svc *svc, const struct health_svc *old)
{
    struct balancer_set *set = balancer_acquire(svc->b);

    for (size_t i = 0; i < balancer_set_size(set); i++) {
        const struct balancer_server *srv = balancer_set_server(set, i);
        int j = svc_slot(old, balancer_server_addr(srv));
        struct health_probe *p;
        if (j < 0 || (p = svc_add(svc, balancer_server_addr(srv))) == NULL)
            continue;
        p->fails = old->probes[j].fails;
        p->oks = old->probes[j].oks;
        p->down = old->probes[j].down;
        balancer_mark_probe(srv, !p->down);
    }
    balancer_set_unref(set);
}

static void
health_free_cb(struct loop_defer *d)
{
    struct health *h = (struct health *)((char *)d - offsetof(struct health, defer));

    runtime_unref(h->rt);
    free(h->svcs);
    free(h);
}

struct health *
health_start(struct loop *lp, struct runtime *rt, const struct health *prev)
{
    const struct config *cfg = rt->cfg;
    struct health *h = NULL;
    size_t n = 0;
    struct timeval now = {0, 0};

    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].health.path != NULL)
            n++;
    if (n == 0)
        return NULL;
    if ((h = calloc(1, sizeof(*h))) == NULL || (h->svcs = calloc(n, sizeof(*h->svcs))) == NULL)
        goto fail;
    h->lp = lp;
    h->rt = runtime_ref(rt);
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *cs = &cfg->services[i];
        struct health_svc *svc = &h->svcs[h->nsvcs];
        const struct health_svc *old;
        if (cs->health.path == NULL)
            continue;
        svc->h = h;
        svc->cfg = cs;
        svc->b = rt->balancers[i];
        svc->timeout_ms = cs->health.timeout_ms;
        assert(svc->timeout_ms > 0); /* config.c's default; 0 would leave a probe without a timer */
        for (size_t j = 0; j < BALANCER_MAX_SERVERS; j++)
            svc->probes[j].svc = svc;
        if ((old = prev_svc(prev, cs)) != NULL)
            svc_seed(svc, old);
        evtimer_assign(&svc->timer, lp->base, round_cb, svc);
        evtimer_add(&svc->timer, &now); /* the first round on the loop's next turn */
        h->nsvcs++;
    }
    return h;

fail:
    log_msg(LOG_ERROR, "health: out of memory; serving without active health checks");
    if (h != NULL)
        free(h->svcs);
    free(h);
    return NULL;
}

void
health_stop(struct health *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nsvcs; i++) {
        struct health_svc *svc = &h->svcs[i];
        event_del(&svc->timer);
        for (size_t j = 0; j < BALANCER_MAX_SERVERS; j++)
            probe_abort(&svc->probes[j]);
    }
    /* Deferred: a caller up the stack (a probe's or a round's callback) may still hold h. */
    loop_defer(h->lp, &h->defer, health_free_cb);
}
