/*
 * Server connections and the idle pool. A pooled connection keeps reading, so that a server
 * closing it (or sending bytes nobody asked for) is noticed and the connection dropped at once.
 */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "upconn.h"

/* Shorter than the apps' 75 s (and most servers' keep-alive), so the pool closes first. */
#define POOL_IDLE_MS 30000
#define POOL_MAX 256

struct upconn_pool {
    struct loop *lp;     /* borrowed */
    struct upconn *idle; /* most recently used first */
    unsigned nidle;
    int draining;
    upconn_dial_fn dial;
};

int
upconn_dial_tcp(const struct balancer_addr *addr, bool *connecting)
{
    int one = 1, saved;
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    /* Every dial has a request waiting (an exchange's or a probe's), so the handshake's last ACK
     * can wait a moment and leave with it: one segment less per new connection. After that the
     * kernel's own rule decides: a reply's ACK rides on the next request, or goes when the
     * delayed-ACK timer fires, as on any connection that has seen a request and its answer.
     * The receive buffer is fixed (no autotuning), so a server on the same node cannot push a
     * large response into it from its own CPU at once: the rest leaves as the worker reads, and
     * the TCP work of that part is done on the worker's CPU, not on the pods', which are the
     * scarcer when they share a node. The price: some 64-100 KiB in flight per connection, about
     * 0.5 Gbit/s at a 1 ms round trip, 5 at a cluster's usual 0.1 ms. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &(int){0}, sizeof(int)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &(int){UPCONN_RCVBUF}, sizeof(int)) < 0)
        goto fail;
    *connecting = false;
    if (connect(fd, (const struct sockaddr *)&addr->addr, addr->addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto fail;
    *connecting = true;
    return fd;

fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

struct upconn_pool *
upconn_pool_new(struct loop *lp)
{
    struct upconn_pool *p = calloc(1, sizeof(*p));

    if (p != NULL) {
        p->lp = lp;
        p->dial = upconn_dial_tcp;
    }
    return p;
}

void
upconn_pool_set_dial(struct upconn_pool *p, upconn_dial_fn dial)
{
    p->dial = dial;
}

unsigned
upconn_pool_idle(const struct upconn_pool *p)
{
    return p->nidle;
}

static void
pool_unlink(struct upconn *u)
{
    struct upconn_pool *p = u->pool;

    assert(p != NULL); /* only a connection with a pool is ever idle in one */
    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        p->idle = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    u->idle = 0;
    p->nidle--;
}

static void
upconn_free_cb(struct loop_defer *d)
{
    struct upconn *u = (struct upconn *)((char *)d - offsetof(struct upconn, defer));

    half_fini(&u->h);
    free(u);
}

void
upconn_close(struct upconn *u, const char *why)
{
    if (u == NULL || u->closed)
        return;
    u->closed = 1;
    log_msg(LOG_DEBUG, "server %s: connection closed%s: %s", u->addr.label,
            u->idle ? " in the pool" : "", why);
    if (u->idle)
        pool_unlink(u);
    half_stop(&u->h);
    loop_defer(u->h.lp, &u->defer, upconn_free_cb);
}

void
upconn_pool_drain(struct upconn_pool *p)
{
    if (p == NULL)
        return;
    p->draining = 1;
    while (p->idle != NULL)
        upconn_close(p->idle, "shutdown");
}

void
upconn_pool_free(struct upconn_pool *p)
{
    if (p == NULL)
        return;
    upconn_pool_drain(p);
    free(p);
}

/* While idle, whatever the server does ends the connection: a close, bytes nobody asked for, the
 * pool's idle timeout. */
static void
pool_cb(void *owner, enum half_event ev)
{
    struct upconn *u = owner;

    upconn_close(u, ev == HALF_TIMEOUT ? "idle for the pool's limit"
                    : u->h.err != 0    ? strerror(u->h.err)
                    : u->h.eof         ? "the server closed it"
                                       : "the server sent bytes nobody asked for");
}

static struct upconn *
pool_take(struct upconn_pool *p, const struct balancer_addr *addr, int64_t now_ms)
{
    struct upconn *u, *next;

    for (u = p->idle; u != NULL; u = next) {
        next = u->next;
        if (now_ms - u->idle_since_ms >= POOL_IDLE_MS) {
            upconn_close(u, "idle for the pool's limit");
            continue;
        }
        if (balancer_addr_equal(&u->addr, addr)) {
            pool_unlink(u);
            return u;
        }
    }
    return NULL;
}

struct upconn *
upconn_get(struct loop *lp, struct upconn_pool *pool, const struct balancer_addr *addr,
           uint64_t connect_timeout_ms, half_cb cb, void *owner)
{
    struct upconn *u = pool != NULL ? pool_take(pool, addr, loop_now_ms(lp)) : NULL;
    bool connecting = false;
    int fd, saved;

    if (u != NULL) {
        u->reused = 1;
        half_set_owner(&u->h, cb, owner);
        half_timer(&u->h, 0);
        return u;
    }
    fd = (pool != NULL ? pool->dial : upconn_dial_tcp)(addr, &connecting);
    if (fd < 0)
        return NULL;
    if ((u = calloc(1, sizeof(*u))) == NULL ||
        half_init(&u->h, lp, fd, connecting, cb, owner) < 0) {
        saved = u == NULL ? errno : ENOMEM;
        free(u);
        close(fd);
        errno = saved;
        return NULL;
    }
    u->pool = pool;
    u->addr = *addr;
    if (connecting)
        half_timer(&u->h, connect_timeout_ms);
    return u;
}

void
upconn_release(struct upconn *u)
{
    struct upconn_pool *p = u->pool;

    if (p == NULL || p->draining || p->nidle >= POOL_MAX || u->h.eof || u->h.err != 0 ||
        evbuffer_get_length(u->h.in) > 0 || evbuffer_get_length(u->h.out) > 0) {
        upconn_close(u, p == NULL              ? "not pooled"
                        : p->draining          ? "shutdown"
                        : p->nidle >= POOL_MAX ? "the pool is full"
                                               : "not reusable");
        return;
    }
    half_set_owner(&u->h, pool_cb, u);
    half_pause_read(&u->h, false);
    half_timer(&u->h, POOL_IDLE_MS);
    u->idle_since_ms = loop_now_ms(p->lp);
    u->idle = 1;
    u->prev = NULL;
    u->next = p->idle;
    if (p->idle != NULL)
        p->idle->prev = u;
    p->idle = u;
    p->nidle++;
}
