/*
 * Server connections and the idle pool. A pooled connection keeps a read event so that a server
 * closing it (or sending bytes nobody asked for) is noticed and the connection dropped at once.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "iobuf.h"
#include "upconn.h"
#include "worker.h"

/* Shorter than the apps' 75 s (and nginx's default), so the pool closes first, not the server. */
#define POOL_IDLE_MS 30000
#define POOL_MAX 256

static void
pool_unlink(struct upconn *u)
{
    struct worker *w = u->w;

    if (u->prev != NULL)
        u->prev->next = u->next;
    else
        w->idle = u->next;
    if (u->next != NULL)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    w->nidle--;
}

void
upconn_close(struct upconn *u)
{
    if (u == NULL)
        return;
    if (u->owner == NULL && (u->prev != NULL || u->w->idle == u))
        pool_unlink(u);
    event_del(&u->rev);
    event_del(&u->wev);
    event_del(&u->timer);
    close(u->fd);
    evbuffer_free(u->in);
    evbuffer_free(u->out);
    free(u);
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *u = arg;
    int n;

    (void)fd;
    (void)what;
    u->w->turn_events++;
    n = iobuf_read(u->in, u->fd, &u->rsize);
    if (u->owner == NULL) {
        /* Pooled: a close (or anything else) from the server ends this connection. */
        upconn_close(u);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        if (evbuffer_get_length(u->in) == 0) {
            conn_upstream_failed(u, 0, strerror(errno));
            return;
        }
        n = 0; /* what arrived before the reset is still delivered, then the end */
    }
    if (n == 0) {
        u->eof = 1;
        event_del(&u->rev);
    }
    conn_upstream_read(u, n == 0);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *u = arg;

    (void)fd;
    (void)what;
    if (u->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            conn_upstream_failed(u, 0, strerror(err));
            return;
        }
        u->connecting = 0;
        event_del(&u->timer);
        event_add(&u->rev, NULL);
        if (evbuffer_get_length(u->out) == 0)
            event_del(&u->wev);
        conn_upstream_ready(u);
        return;
    }
    if (upconn_flush(u) < 0) {
        conn_upstream_failed(u, 0, strerror(errno));
        return;
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *u = arg;

    (void)fd;
    (void)what;
    if (u->owner == NULL) {
        upconn_close(u); /* idle in the pool for too long */
        return;
    }
    conn_upstream_failed(u, 1, u->connecting ? "connect timeout" : "response timeout");
}

int
upconn_flush(struct upconn *u)
{
    if (u->connecting)
        return 0;
    while (evbuffer_get_length(u->out) > 0) {
        int n = iobuf_write(u->out, u->fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                event_add(&u->wev, NULL);
                return 0;
            }
            return -1;
        }
    }
    event_del(&u->wev);
    conn_upstream_drained(u);
    return 0;
}

void
upconn_timeout(struct upconn *u, uint64_t ms)
{
    struct timeval tv;

    if (ms == 0)
        event_del(&u->timer);
    else
        evtimer_add(&u->timer, worker_timeout(u->w, ms, &tv));
}

void
upconn_pause_read(struct upconn *u, int pause)
{
    if ((unsigned)pause == u->read_paused || u->eof)
        return;
    u->read_paused = pause != 0;
    if (pause)
        event_del(&u->rev);
    else
        event_add(&u->rev, NULL);
}

static struct upconn *
pool_take(struct worker *w, const struct balancer_addr *addr, uint64_t now_ms)
{
    struct upconn *u, *next;

    for (u = w->idle; u != NULL; u = next) {
        next = u->next;
        if (now_ms - u->idle_since_ms >= POOL_IDLE_MS) {
            upconn_close(u);
            continue;
        }
        if (u->addr.addrlen == addr->addrlen &&
            memcmp(&u->addr.addr, &addr->addr, addr->addrlen) == 0) {
            pool_unlink(u);
            return u;
        }
    }
    return NULL;
}

static uint64_t
now_ms(struct worker *w)
{
    struct timeval tv;

    event_base_gettimeofday_cached(w->base, &tv);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

struct upconn *
upconn_get(struct worker *w, struct conn *owner, const struct balancer_addr *addr,
           uint64_t connect_timeout_ms)
{
    struct upconn *u = pool_take(w, addr, now_ms(w));
    int one = 1, saved;

    if (u != NULL) {
        u->owner = owner;
        u->reused = 1;
        event_del(&u->timer);
        return u;
    }
    if ((u = calloc(1, sizeof(*u))) == NULL)
        return NULL;
    u->w = w;
    u->owner = owner;
    u->addr = *addr;
    u->in = evbuffer_new();
    u->out = evbuffer_new();
    u->fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->in == NULL || u->out == NULL || u->fd < 0 ||
        setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        goto fail;
    event_assign(&u->rev, w->base, u->fd, EV_READ | EV_PERSIST, read_cb, u);
    event_assign(&u->wev, w->base, u->fd, EV_WRITE | EV_PERSIST, write_cb, u);
    evtimer_assign(&u->timer, w->base, timer_cb, u);
    if (connect(u->fd, (const struct sockaddr *)&addr->addr, addr->addrlen) == 0) {
        event_add(&u->rev, NULL);
        return u;
    }
    if (errno != EINPROGRESS)
        goto fail;
    u->connecting = 1;
    event_add(&u->wev, NULL);
    upconn_timeout(u, connect_timeout_ms);
    return u;

fail:
    saved = errno;
    if (u->fd >= 0)
        close(u->fd);
    if (u->in != NULL)
        evbuffer_free(u->in);
    if (u->out != NULL)
        evbuffer_free(u->out);
    free(u);
    errno = saved;
    return NULL;
}

void
upconn_release(struct upconn *u)
{
    struct worker *w = u->w;
    struct timeval tv;

    if (w->draining || w->nidle >= POOL_MAX || u->eof || evbuffer_get_length(u->in) > 0 ||
        evbuffer_get_length(u->out) > 0) {
        upconn_close(u);
        return;
    }
    u->owner = NULL;
    u->read_paused = 0;
    u->idle_since_ms = now_ms(w);
    event_del(&u->wev);
    event_add(&u->rev, NULL);
    evtimer_add(&u->timer, worker_timeout(w, POOL_IDLE_MS, &tv));
    u->prev = NULL;
    u->next = w->idle;
    if (w->idle != NULL)
        w->idle->prev = u;
    w->idle = u;
    w->nidle++;
}

void
upconn_close_idle(struct worker *w)
{
    struct upconn *u, *next;

    for (u = w->idle; u != NULL; u = next) {
        next = u->next;
        upconn_close(u);
    }
}
