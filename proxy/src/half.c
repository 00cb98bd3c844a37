/*
 * A half-connection: socket reads and writes between evbuffers and a non-blocking socket, the
 * connect in progress, read pausing and a timer, reported to the owner from the event callbacks
 * only. What the bytes mean, and when to close, is the owner's business.
 *
 * A TLS half is the same half with OpenSSL between the buffers and the socket: the handshake
 * runs from the same events before the first HALF_CONNECTED, and a record layer that needs the
 * other direction (a write that waits for a read, as during a key update, or the reverse) waits
 * on that event instead.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "half.h"
#include "iobuf.h"
#include "loop.h"

const char *
half_event_str(enum half_event ev)
{
    static const char *const names[] = {"read", "drained", "connected", "error", "timeout"};

    return (unsigned)ev < sizeof(names) / sizeof(names[0]) ? names[ev] : "?";
}

/* A TLS write of at most one full record: the size nginx and HAProxy write too. */
#define TLS_RECORD 16384

static void
read_want(struct half *h)
{
    /* A TLS write waiting for a read, or a handshake, reads whatever the owner wants. */
    bool idle = (h->read_paused || h->eof) && !h->wr_wants_read && !h->handshaking;

    if (h->connecting || h->stopped || h->err != 0 || idle)
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

/*
 * After an SSL call returned n <= 0: 0 when it waits for the socket (the wait is armed: a read
 * for WANT_READ, a write for WANT_WRITE, and *wants says which), 1 when the peer closed the TLS
 * session (close_notify, or an EOF), -1 when it failed (the half is failed).
 */
static int
tls_wait(struct half *h, int n, int *wants)
{
    int e = SSL_get_error(h->ssl, n);

    *wants = e;
    switch (e) {
    case SSL_ERROR_WANT_READ:
        event_add(&h->rev, NULL);
        return 0;
    case SSL_ERROR_WANT_WRITE:
        event_add(&h->wev, NULL);
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return 1;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 && ERR_peek_error() == 0)
            return 1;
        h->tls_err = ERR_peek_error();
        fail(h, errno != 0 && h->tls_err == 0 ? errno : EPROTO);
        break;
    default:
        h->tls_err = ERR_peek_error();
        fail(h, EPROTO);
        break;
    }
    ERR_clear_error();
    return -1;
}

/*
 * out is empty. A write that had to wait for the socket owes the owner HALF_DRAINED (the owner may
 * be waiting for room): write_cb reports it, then or on the loop's next pass when the flush that
 * emptied out was the owner's own half_flush(), which never calls back.
 */
static void
written_all(struct half *h)
{
    if (h->write_waited)
        event_active(&h->wev, EV_WRITE, 1);
    else if (event_pending(&h->wev, EV_WRITE, NULL))
        event_del(&h->wev); /* most writes never waited: nothing to delete, and deleting costs */
}

/*
 * The first len bytes of out, contiguous: where they lie when the first chunk holds them all (a
 * bulk body), else copied into the thread's record buffer (a head and a small body), so that no
 * record costs a new chunk. OpenSSL may be given other memory with the same bytes on a retry
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
 */
static const void *
record_bytes(struct evbuffer *out, size_t len)
{
    static _Thread_local unsigned char record[TLS_RECORD];
    struct evbuffer_iovec v;

    if (evbuffer_peek(out, -1, NULL, &v, 1) >= 1 && v.iov_len >= len)
        return v.iov_base;
    (void)evbuffer_copyout(out, record, len); /* len <= what out holds: it copies them all */
    return record;
}

/* Writes out through TLS, a record at a time. */
static int
tls_write(struct half *h)
{
    size_t left;

    while ((left = evbuffer_get_length(h->out)) > 0) {
        size_t len = left < TLS_RECORD ? left : TLS_RECORD;
        const void *p = record_bytes(h->out, len);
        int n, wants, rc;

        ERR_clear_error();
        errno = 0;
        n = SSL_write(h->ssl, p, (int)len);
        if (n > 0) {
            evbuffer_drain(h->out, (size_t)n);
            h->nwritten += (uint64_t)n;
            continue;
        }
        rc = tls_wait(h, n, &wants);
        if (rc == 0) {
            h->wr_wants_read = wants == SSL_ERROR_WANT_READ;
            h->write_waited = 1;
            if (h->wr_wants_read)
                event_del(&h->wev); /* a writable socket would call us back for nothing */
            return 0;
        }
        if (rc > 0)
            fail(h, EPIPE); /* the session is closed: nothing more can be sent */
        return -1;
    }
    written_all(h);
    return 0;
}

/* Writes until out is empty or the socket is full. Returns 0, or -1 on a failed write. */
static int
write_now(struct half *h)
{
    if (h->ssl != NULL)
        return tls_write(h);
    while (evbuffer_get_length(h->out) > 0) {
        int n = iobuf_write(h->out, h->fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                h->write_waited = 1;
                event_add(&h->wev, NULL);
                return 0;
            }
            fail(h, errno);
            return -1;
        }
        h->nwritten += (uint64_t)n;
    }
    written_all(h);
    return 0;
}

/* Reads what the socket has into in: n bytes > 0, 0 at the end of the stream, -1 to wait (EAGAIN)
 * or on a failure (the half failed). */
static int
plain_read(struct half *h)
{
    int n = iobuf_read(h->in, h->fd, &h->rsize);

    if (n > 0) {
        h->nread += (uint64_t)n;
        return n;
    }
    if (n == 0) {
        h->eof = 1;
        event_del(&h->rev);
        return 0;
    }
    if (errno != EAGAIN && errno != EINTR)
        fail(h, errno);
    return -1;
}

/* Reads records into in, up to IOBUF_READ_MAX bytes a turn so one client cannot hold the loop.
 * Returns as plain_read(). */
static int
tls_read(struct half *h)
{
    size_t total = 0;

    while (total < IOBUF_READ_MAX) {
        struct evbuffer_iovec v;
        int n, wants, rc;

        if (evbuffer_reserve_space(h->in, TLS_RECORD, &v, 1) < 1) {
            fail(h, ENOMEM);
            return -1;
        }
        ERR_clear_error();
        errno = 0;
        n = SSL_read(h->ssl, v.iov_base, (int)(v.iov_len < INT32_MAX ? v.iov_len : INT32_MAX));
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(h->in, &v, 1);
            total += (size_t)n;
            h->nread += (uint64_t)n;
            /* A short record (a request, not a bulk body) is most likely all there is: another
             * SSL_read would cost a read() that finds nothing. The socket's readiness says if
             * more came. */
            if ((size_t)n < TLS_RECORD && !SSL_has_pending(h->ssl))
                break;
            continue;
        }
        evbuffer_commit_space(h->in, &v, 0);
        rc = tls_wait(h, n, &wants);
        if (rc == 0) {
            h->rd_wants_write = wants == SSL_ERROR_WANT_WRITE;
            break;
        }
        if (rc > 0) {
            h->eof = 1;
            event_del(&h->rev);
            break;
        }
        return -1;
    }
    /* What OpenSSL holds decrypted is not the socket's to signal: come back for it. */
    if (total >= IOBUF_READ_MAX && SSL_has_pending(h->ssl))
        half_read_soon(h);
    return total > 0 ? (int)(total < INT32_MAX ? total : INT32_MAX) : h->eof ? 0 : -1;
}

/*
 * Before the handshake: whether the client speaks TLS at all. A TLS connection begins with a
 * handshake record (0x16); an ASCII capital is a request line, plain HTTP sent to the TLS port.
 * Returns 1 when it is settled (sniffed set), 0 to wait for a byte, -1 on a failure.
 */
static int
sniff(struct half *h)
{
    unsigned char b;
    ssize_t n = recv(h->fd, &b, 1, MSG_PEEK);

    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        fail(h, errno);
        return -1;
    }
    h->sniffed = 1;
    if (n == 1 && b >= 'A' && b <= 'Z') {
        SSL_free(h->ssl);
        h->ssl = NULL;
        h->handshaking = 0;
        h->plain_http = 1;
    }
    return 1;
}

/* Moves the handshake on; reports HALF_CONNECTED when it is over, HALF_ERROR when it failed. */
static void
handshake(struct half *h)
{
    int n, wants;

    if (!h->sniffed) {
        int rc = sniff(h);
        if (rc < 0) {
            h->cb(h->owner, HALF_ERROR);
            return;
        }
        if (rc == 0)
            return;
        if (h->plain_http) {
            /* Not TLS: the owner reads the request and answers it in plain text. */
            if (plain_read(h) < 0 && h->err != 0)
                h->cb(h->owner, HALF_ERROR);
            else
                h->cb(h->owner, HALF_READ);
            return;
        }
    }
    ERR_clear_error();
    errno = 0;
    n = SSL_do_handshake(h->ssl);
    if (n == 1) {
        h->handshaking = 0;
        if (evbuffer_get_length(h->out) == 0)
            event_del(&h->wev);
        read_want(h);
        /* The first request may have come with the client's last handshake message, and be
         * read already: the socket will not say so again. */
        if (SSL_has_pending(h->ssl))
            half_read_soon(h);
        h->cb(h->owner, HALF_CONNECTED);
        return;
    }
    switch (tls_wait(h, n, &wants)) {
    case 0:
        if (wants == SSL_ERROR_WANT_READ)
            event_del(&h->wev);
        return;
    case 1:
        /* The client left in the middle of the handshake. */
        h->eof = 1;
        event_del(&h->rev);
        event_del(&h->wev);
        h->cb(h->owner, HALF_READ);
        return;
    default:
        h->cb(h->owner, HALF_ERROR);
        return;
    }
}

/* Tells the owner what a read (plain_read() or tls_read()'s n) came to; nothing when it waits. */
static void
report_read(struct half *h, int n)
{
    if (n >= 0)
        h->cb(h->owner, HALF_READ);
    else if (h->err != 0)
        h->cb(h->owner, HALF_ERROR);
}

static void
read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct half *h = arg;

    (void)fd;
    (void)what;
    h->lp->io_events++;
    if (h->handshaking) {
        handshake(h);
        return;
    }
    if (h->wr_wants_read) {
        /* A TLS write was waiting for this: let it go on first. */
        h->wr_wants_read = 0;
        if (write_now(h) < 0) {
            h->cb(h->owner, HALF_ERROR);
            return;
        }
        read_want(h);
        if (evbuffer_get_length(h->out) == 0) {
            h->write_waited = 0;
            event_del(&h->wev);
            h->cb(h->owner, HALF_DRAINED);
            return;
        }
        if (h->read_paused || h->eof)
            return;
    }
    report_read(h, h->ssl != NULL ? tls_read(h) : plain_read(h));
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
    h->lp->io_events++;
    if (h->connecting) {
        connected(h);
        return;
    }
    if (h->handshaking) {
        handshake(h);
        return;
    }
    if (h->rd_wants_write) {
        /* A TLS read was waiting for this: it goes on now. */
        h->rd_wants_write = 0;
        if (evbuffer_get_length(h->out) == 0 && !h->write_waited)
            event_del(&h->wev);
        report_read(h, tls_read(h));
        return;
    }
    if (write_now(h) < 0) {
        h->cb(h->owner, HALF_ERROR);
        return;
    }
    if (evbuffer_get_length(h->out) == 0) {
        h->write_waited = 0;
        event_del(&h->wev);
        h->cb(h->owner, HALF_DRAINED);
    }
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct half *h = arg;
    uint64_t now = loop_now_us(h->lp);

    (void)fd;
    (void)what;
    h->armed_us = 0;
    if (h->due_us == 0)
        return; /* disarmed since it was set */
    if (now < h->due_us) {
        /* Re-armed for later since it was set: wait for the rest. */
        uint64_t left = h->due_us - now;
        struct timeval tv = {.tv_sec = (time_t)(left / 1000000),
                             .tv_usec = (suseconds_t)(left % 1000000)};

        event_add(&h->timer, &tv);
        h->armed_us = h->due_us;
        return;
    }
    h->due_us = 0;
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
    h->tls_err = 0;
    h->rsize = 0;
    h->ssl = NULL;
    h->connecting = connecting;
    h->read_paused = h->eof = h->wr_shut = h->stopped = 0;
    h->handshaking = h->sniffed = h->plain_http = h->wr_wants_read = h->rd_wants_write = 0;
    h->write_waited = 0;
    h->due_us = h->armed_us = 0;
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

int
half_init_tls(struct half *h, struct loop *lp, int fd, SSL *ssl, half_cb cb, void *owner)
{
    if (SSL_set_fd(ssl, fd) != 1 || half_init(h, lp, fd, false, cb, owner) < 0) {
        ERR_clear_error();
        return -1;
    }
    h->ssl = ssl;
    h->handshaking = 1;
    return 0;
}

int
half_start_tls(struct half *h, SSL *ssl)
{
    if (SSL_set_fd(ssl, h->fd) != 1) {
        ERR_clear_error();
        return -1;
    }
    h->ssl = ssl;
    h->handshaking = 1;
    h->sniffed = 1; /* the client speaks first: nothing to look at */
    /* The socket is writable: the ClientHello goes from write_cb, never from inside this call. */
    event_add(&h->wev, NULL);
    return 0;
}

const char *
half_error_str(const struct half *h)
{
    const char *reason = h->tls_err != 0 ? ERR_reason_error_string(h->tls_err) : NULL;

    if (reason != NULL)
        return reason;
    return h->err != 0 ? strerror(h->err) : "no error";
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
half_read_soon(struct half *h)
{
    event_active(&h->rev, EV_READ, 1);
}

void
half_pause_read(struct half *h, bool pause)
{
    if ((unsigned)pause == h->read_paused)
        return;
    h->read_paused = pause;
    read_want(h);
    /* Records OpenSSL already holds decrypted would wait for bytes the socket may never get. */
    if (!pause && h->ssl != NULL && !h->handshaking && !h->eof && SSL_has_pending(h->ssl))
        half_read_soon(h);
}

void
half_shutdown_write(struct half *h)
{
    if (h->wr_shut || h->err != 0 || evbuffer_get_length(h->out) > 0)
        return;
    h->wr_shut = 1;
    if (h->ssl != NULL && !h->handshaking) {
        /* close_notify, if the socket takes it now: a peer that needs it sees an end it can
         * trust; one that does not lose nothing when it is dropped. */
        ERR_clear_error();
        (void)SSL_shutdown(h->ssl);
        ERR_clear_error();
    }
    (void)shutdown(h->fd, SHUT_WR); /* fails only on a connection already gone: eof shows that */
}

void
half_release_buffers(struct half *h)
{
    /* 0 means bytes are still in them (a request read ahead): then they are kept, rightly. */
    if (h->ssl != NULL && !h->handshaking)
        (void)SSL_free_buffers(h->ssl);
}

void
half_timer(struct half *h, uint64_t ms)
{
    struct timeval tv;
    uint64_t due;

    if (ms == 0 || h->stopped) {
        h->due_us = 0;
        return;
    }
    due = loop_now_us(h->lp) + ms * 1000;
    h->due_us = due;
    if (h->armed_us != 0 && h->armed_us <= due)
        return; /* the pending event goes off first and then waits for the rest */
    event_add(&h->timer, loop_timeout(h->lp, ms, &tv));
    h->armed_us = due;
}

void
half_stop(struct half *h)
{
    h->stopped = 1;
    event_del(&h->rev);
    event_del(&h->wev);
    event_del(&h->timer);
    h->due_us = h->armed_us = 0;
    if (h->ssl != NULL) {
        if (!h->handshaking && h->err == 0 && !h->wr_shut) {
            ERR_clear_error();
            (void)SSL_shutdown(h->ssl); /* close_notify, as half_shutdown_write() */
        }
        ERR_clear_error();
        SSL_free(h->ssl);
        h->ssl = NULL;
    }
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
