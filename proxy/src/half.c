/*
 * A half-connection: socket reads and writes between evbuffers and a non-blocking socket, the
 * connect in progress, read pausing and a timer, reported to the owner from the event callbacks
 * only. What the bytes mean, and when to close, is the owner's business.
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "half.h"
#include "iobuf.h"
#include "loop.h"

const char *
half_event_str(enum half_event ev)
{
    static const char *const names[] = {"read", "drained", "connected", "error", "timeout"};

    return (unsigned)ev < sizeof(names) / sizeof(names[0]) ? names[ev] : "?";
}

static void
read_want(struct half *h)
{
    if (h->read_paused || h->eof || h->connecting || h->stopped)
        event_del(&h->rev);
    else
        event_add(&h->rev, NULL);
}

/* Marks the half failed with errno e: nothing more will be read or written. */
static void
fail(struct half *h, int e)
{
    h->err = e;
    h->eof = 1;
    event_del(&h->rev);
    event_del(&h->wev);
}

/* Writes until out is empty or the socket is full. Returns 0, or -1 on a failed write. */
static int
write_now(struct half *h)
{
    while (evbuffer_get_length(h->out) > 0) {
        int n = iobuf_write(h->out, h->fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                event_add(&h->wev, NULL);
                return 0;
            }
            fail(h, errno);
            return -1;
        }
        h->nwritten += (uint64_t)n;
    }
    event_del(&h->wev);
    return 0;
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct half *h = arg;
    int n;

    (void)what;
    h->lp->turn_events++;
    n = iobuf_read(h->in, fd, &h->rsize);
    if (n > 0) {
        h->nread += (uint64_t)n;
        h->cb(h->owner, HALF_READ);
        return;
    }
    if (n == 0) {
        h->eof = 1;
        event_del(&h->rev);
        h->cb(h->owner, HALF_READ);
        return;
    }
    if (errno == EAGAIN || errno == EINTR)
        return;
    fail(h, errno);
    h->cb(h->owner, HALF_ERROR);
}

static void
connected(struct half *h)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    h->connecting = 0;
    if (err != 0) {
        fail(h, err);
        h->cb(h->owner, HALF_ERROR);
        return;
    }
    if (evbuffer_get_length(h->out) == 0)
        event_del(&h->wev);
    read_want(h);
    h->cb(h->owner, HALF_CONNECTED);
}

static void
write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct half *h = arg;

    (void)fd;
    (void)what;
    if (h->connecting) {
        connected(h);
        return;
    }
    if (write_now(h) < 0) {
        h->cb(h->owner, HALF_ERROR);
        return;
    }
    if (evbuffer_get_length(h->out) == 0)
        h->cb(h->owner, HALF_DRAINED);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct half *h = arg;

    (void)fd;
    (void)what;
    h->cb(h->owner, HALF_TIMEOUT);
}

int
half_init(struct half *h, struct loop *lp, int fd, bool connecting, half_cb cb, void *owner)
{
    h->fd = fd;
    h->lp = lp;
    h->cb = cb;
    h->owner = owner;
    h->nread = h->nwritten = 0;
    h->err = 0;
    h->rsize = 0;
    h->connecting = connecting;
    h->read_paused = h->eof = h->wr_shut = h->stopped = 0;
    h->in = evbuffer_new();
    h->out = evbuffer_new();
    if (h->in == NULL || h->out == NULL) {
        if (h->in != NULL)
            evbuffer_free(h->in);
        if (h->out != NULL)
            evbuffer_free(h->out);
        h->in = h->out = NULL;
        h->fd = -1;
        return -1;
    }
    event_assign(&h->rev, lp->base, fd, EV_READ | EV_PERSIST, read_cb, h);
    event_assign(&h->wev, lp->base, fd, EV_WRITE | EV_PERSIST, write_cb, h);
    evtimer_assign(&h->timer, lp->base, timer_cb, h);
    if (connecting)
        event_add(&h->wev, NULL);
    else
        event_add(&h->rev, NULL);
    return 0;
}

void
half_set_owner(struct half *h, half_cb cb, void *owner)
{
    h->cb = cb;
    h->owner = owner;
}

int
half_flush(struct half *h)
{
    if (h->connecting || h->stopped)
        return 0;
    if (h->err != 0)
        return -1;
    return write_now(h);
}

void
half_pause_read(struct half *h, bool pause)
{
    if ((unsigned)pause == h->read_paused)
        return;
    h->read_paused = pause;
    read_want(h);
}

void
half_shutdown_write(struct half *h)
{
    if (h->wr_shut || h->err != 0 || evbuffer_get_length(h->out) > 0)
        return;
    h->wr_shut = 1;
    (void)shutdown(h->fd, SHUT_WR); /* fails only on a connection already gone: eof shows that */
}

void
half_timer(struct half *h, uint64_t ms)
{
    struct timeval tv;

    if (ms == 0 || h->stopped)
        event_del(&h->timer);
    else
        event_add(&h->timer, loop_timeout(h->lp, ms, &tv));
}

void
half_stop(struct half *h)
{
    h->stopped = 1;
    event_del(&h->rev);
    event_del(&h->wev);
    event_del(&h->timer);
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
}

void
half_fini(struct half *h)
{
    half_stop(h);
    if (h->in != NULL)
        evbuffer_free(h->in);
    if (h->out != NULL)
        evbuffer_free(h->out);
    h->in = h->out = NULL;
}
