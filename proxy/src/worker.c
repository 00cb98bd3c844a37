/*
 * Worker threads: listening sockets, accepting within max_connections, notices from the main
 * thread (reload, drain) and the drain at shutdown. The loop and what it shares are loop.c's; what
 * happens on a connection is conn.c's business.
 */
#define _GNU_SOURCE /* accept4 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "busypoll.h"
#include "conn.h"
#include "exchange.h"
#include "log.h"
#include "upconn.h"
#include "stats.h"
#include "worker.h"

#define ACCEPT_BATCH 64
#define ACCEPT_RETRY_MS 50
/* How long the kernel keeps a connection that has sent nothing before handing it over anyway. */
#define DEFER_ACCEPT_S 1

/* Opens one SO_REUSEPORT listening socket; every worker has its own, and the kernel spreads
 * connections over them, so no accept lock is ever needed. */
static int
listen_socket(const struct config_addr *a, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", a->spec, strerror(errno));
        return -1;
    }
    /*
     * Accepted sockets inherit TCP_NODELAY from the listener: no setsockopt per connection. They
     * inherit delayed ACKs too (TCP_QUICKACK off, which listen() would reset, hence after it): a
     * request's ACK then leaves with its response instead of alone just before it.
     * TCP_DEFER_ACCEPT: the kernel hands a connection over with its first bytes (the request, or
     * the ClientHello) instead of at the handshake's end, so a new connection costs one wake-up
     * of the worker, not two; one that stays silent comes after DEFER_ACCEPT_S all the same, and
     * its client_header or tls_handshake time starts then.
     */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 4096) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &(int){0}, sizeof(int)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &(int){DEFER_ACCEPT_S}, sizeof(int)) < 0) {
        snprintf(err, errlen, "listen %s: %s", a->spec, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * SO_REUSEPORT would let a second portier (or anything else using it) share the address silently,
 * taking part of the traffic. Binding once without it first fails with EADDRINUSE in that case,
 * so the address is known to be ours before the workers' sockets share it among themselves.
 */
static int
listen_probe(const struct config_addr *a, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", a->spec, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        snprintf(err, errlen, "listen %s: %s", a->spec, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void
accept_pause(struct worker *w)
{
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};

    for (size_t i = 0; i < w->nlisteners; i++)
        event_del(w->listeners[i].ev);
    w->accepting = 0;
    evtimer_add(w->accept_retry, &tv);
}

static void
accept_resume(struct worker *w)
{
    if (w->accepting || w->lp.draining)
        return;
    for (size_t i = 0; i < w->nlisteners; i++)
        event_add(w->listeners[i].ev, NULL);
    w->accepting = 1;
}

static void
accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t max = w->lp.snap->rt->cfg->limits.max_connections;

    (void)fd;
    (void)what;
    if (atomic_load_explicit(&w->proxy->nconns, memory_order_relaxed) < max)
        accept_resume(w);
    else
        accept_pause(w);
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct listener *l = arg;
    struct worker *w = l->w;
    uint64_t max = w->lp.snap->rt->cfg->limits.max_connections;

    (void)what;
    w->lp.io_events++;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);

        if (atomic_load_explicit(&w->proxy->nconns, memory_order_relaxed) >= max) {
            /* At the limit new connections wait in the kernel's backlog, not in our memory. */
            accept_pause(w);
            return;
        }
        int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_msg(LOG_WARN, "accept: %s; pausing accept for %dms", strerror(errno),
                        ACCEPT_RETRY_MS);
                accept_pause(w);
            }
            return;
        }
        conn_accept(&w->lp, fd, (struct sockaddr *)&peer, len, l->port, l->tls != 0);
    }
}

/* Main thread -> worker: runs in the worker's thread after worker_notify(). */
static void
notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t count;
    unsigned notices;

    (void)what;
    /* Reset the eventfd before taking the bits: a notice sent meanwhile leaves it readable. */
    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_msg(LOG_ERROR, "worker %d: notice: %s", w->id, strerror(errno));
    notices = atomic_exchange(&w->notices, 0);
    if (notices & WORKER_RELOAD) {
        pthread_mutex_lock(&w->proxy->lock);
        struct runtime *rt = runtime_ref(w->proxy->rt);
        pthread_mutex_unlock(&w->proxy->lock);
        loop_set_runtime(&w->lp, rt);
        runtime_unref(rt);
    }
    if ((notices & WORKER_DRAIN) && !w->lp.draining) {
        struct timeval grace;
        uint64_t ms = w->lp.snap->rt->cfg->timeouts.shutdown_grace_ms;

        accept_pause(w);
        w->lp.draining = 1;
        event_del(w->accept_retry);
        for (size_t i = 0; i < w->nlisteners; i++) {
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
        upconn_pool_drain(w->lp.pool);
        conn_drain(&w->lp);
        if (w->lp.nconns == 0) {
            loop_exit(&w->lp);
            return;
        }
        grace.tv_sec = (time_t)(ms / 1000);
        grace.tv_usec = (suseconds_t)(ms % 1000 * 1000);
        evtimer_add(w->grace_ev, &grace);
    }
}

static void
grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    log_msg(LOG_WARN, "worker %d: shutdown_grace is over, closing %u connection(s)", w->id,
            w->lp.nconns);
    conn_close_all(&w->lp, "shutdown_grace is over");
    loop_exit(&w->lp);
}

static void
worker_loop(struct worker *w)
{
    struct busypoll bp = {0};
    int rc;

    /* The config is read each turn: a reload that turns polling off applies at once. */
    while ((rc = busypoll_turn(&bp, &w->lp, w->lp.snap->rt->cfg->busy_poll)) == 0)
        ;
    if (rc < 0)
        log_msg(LOG_ERROR, "worker %d: the event loop failed", w->id);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    sigset_t all;

    /* Signals are the main thread's. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    worker_loop(w);
    conn_close_all(&w->lp, NULL);
    upconn_pool_drain(w->lp.pool);
    return NULL;
}

/* Serves config listener cl on fd, which the worker owns from now on, even on failure. */
static int
listener_add(struct worker *w, const struct config_listener *cl, int fd, char *err, size_t errlen)
{
    struct listener *l = &w->listeners[w->nlisteners++];
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&cl->addr.ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&cl->addr.ss;

    l->w = w;
    l->fd = fd;
    l->tls = cl->tls;
    snprintf(l->spec, sizeof(l->spec), "%s", cl->addr.spec);
    snprintf(l->port, sizeof(l->port), "%u",
             ntohs(cl->addr.ss.ss_family == AF_INET6 ? sin6->sin6_port : sin->sin_port));
    l->ev = event_new(w->lp.base, l->fd, EV_READ | EV_PERSIST, accept_cb, l);
    if (l->ev == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    event_add(l->ev, NULL);
    return 0;
}

/*
 * The sockets worker id of n serves for cl: its share of those a predecessor handed over (all of
 * them are served, or the connections queued on one would wait forever), or a new one.
 */
static int
listeners_for(struct worker *w, unsigned n, const struct config_listener *cl, struct handover *ho,
              char *err, size_t errlen)
{
    size_t left = handover_count(ho, HANDOVER_LISTENER, cl->addr.spec);
    size_t share = (left + (n - (unsigned)w->id) - 1) / (n - (unsigned)w->id);
    int fd;

    for (size_t k = 0; k < share; k++) {
        fd = handover_take(ho, HANDOVER_LISTENER, cl->addr.spec);
        if (listener_add(w, cl, fd, err, errlen) < 0)
            return -1;
    }
    if (share > 0)
        return 0;
    /* Binding where a predecessor's sockets are is joining their SO_REUSEPORT group: no probe. */
    if (w->id == 0 && left == 0 && listen_probe(&cl->addr, err, errlen) < 0)
        return -1;
    if ((fd = listen_socket(&cl->addr, err, errlen)) < 0)
        return -1;
    return listener_add(w, cl, fd, err, errlen);
}

size_t
worker_sockets(const struct worker *w, struct handover_socket *out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < w->nlisteners && n < max; i++) {
        if (w->listeners[i].fd >= 0)
            out[n++] = (struct handover_socket){HANDOVER_LISTENER, w->listeners[i].spec,
                                                w->listeners[i].fd};
    }
    return n;
}

struct worker *
worker_new(int id, unsigned nworkers, struct proxy *p, struct runtime *rt, struct handover *ho,
           char *err, size_t errlen)
{
    const struct config *cfg = rt->cfg;
    struct worker *w = calloc(1, sizeof(*w));

    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->id = id;
    w->notify_fd = -1;
    w->proxy = p;
    if (loop_init(&w->lp, rt, &p->nconns, err, errlen) < 0) {
        free(w);
        return NULL;
    }
    if (stats_worker((size_t)id) != NULL)
        w->lp.stats = stats_worker((size_t)id); /* the counters the admin listener sums */
    if ((w->lp.pool = upconn_pool_new(&w->lp)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->notify_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    /* One socket per listener, or more: its share of a predecessor's (handover.h). */
    size_t cap = cfg->nlisteners; /* at least one: the config has a default listener */
    for (size_t i = 0; i < cfg->nlisteners; i++)
        cap += handover_count(ho, HANDOVER_LISTENER, cfg->listeners[i].addr.spec);
    w->listeners = calloc(cap > 0 ? cap : 1, sizeof(*w->listeners));
    if (w->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (listeners_for(w, nworkers, &cfg->listeners[i], ho, err, errlen) < 0)
            goto fail;
    }
    w->accepting = 1;
    w->notify_ev = event_new(w->lp.base, w->notify_fd, EV_READ | EV_PERSIST, notify_cb, w);
    w->accept_retry = evtimer_new(w->lp.base, accept_retry_cb, w);
    w->grace_ev = evtimer_new(w->lp.base, grace_cb, w);
    if (w->notify_ev == NULL || w->accept_retry == NULL || w->grace_ev == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    event_add(w->notify_ev, NULL);
    return w;

fail:
    worker_join_free(w);
    return NULL;
}

int
worker_start(struct worker *w, char *err, size_t errlen)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    if (rc != 0) {
        snprintf(err, errlen, "worker %d: %s", w->id, strerror(rc));
        return -1;
    }
    w->started = 1;
    return 0;
}

void
worker_notify(struct worker *w, unsigned notice)
{
    uint64_t one = 1;

    atomic_fetch_or(&w->notices, notice);
    /* Only fails if the counter would overflow: the worker has a notice to read either way. */
    if (write(w->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_msg(LOG_ERROR, "worker %d: notice: %s", w->id, strerror(errno));
}

void
worker_join_free(struct worker *w)
{
    if (w == NULL)
        return;
    if (w->started)
        pthread_join(w->thread, NULL);
    /* nlisteners counts the listeners set up so far, none before the array is allocated. */
    assert(w->listeners != NULL || w->nlisteners == 0);
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].ev != NULL)
            event_free(w->listeners[i].ev); /* NULL-safe: a listener_add() that failed */
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    }
    free(w->listeners);
    if (w->notify_ev != NULL)
        event_free(w->notify_ev);
    if (w->accept_retry != NULL)
        event_free(w->accept_retry);
    if (w->grace_ev != NULL)
        event_free(w->grace_ev);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    /* The connections are gone (worker_main); their frees run in loop_fini's last turn. */
    upconn_pool_drain(w->lp.pool);
    exchange_cache_free(&w->lp);
    conn_cache_free(&w->lp);
    loop_fini(&w->lp);
    upconn_pool_free(w->lp.pool);
    free(w);
}
