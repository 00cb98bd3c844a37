/*
 * A client connection: reads request heads, hands each to an exchange (exchange.c) and takes the
 * next once the exchange is over, so pipelined requests are answered in order by construction.
 * One loop, conn_run(), drives it; it is entered only from event callbacks, and what it calls
 * returns verdicts instead of calling back, so its stack depth is the same for one request or
 * 100,000 in a row. Every wait on the client has its timer. A connection that closes is freed at
 * the end of the loop's turn, after every callback that could still hold it has returned.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "addr.h"
#include "config.h"
#include "conn.h"
#include "exchange.h"
#include "half.h"
#include "http.h"
#include "iobuf.h"
#include "log.h"
#include "stats.h"
#include "tls.h"

/* Pipelined answers queued beyond this wait for the client to take them before the next request
 * is read: the client's pace bounds what a connection holds. */
#define HIGH_WATER (256 * 1024)
/* Draining, how long a connection that has sent nothing yet may take to send its request. */
#define DRAIN_FIRST_MS 500
/* How long a TLS connection between requests keeps its record buffers: see conn_cool(). */
#define TLS_WARM_MS 1000

enum conn_state {
    CONN_ST_HEAD,     /* waiting for or reading a request head */
    CONN_ST_EXCHANGE, /* an exchange is answering a request */
    CONN_ST_CLOSING,  /* the last response is being flushed; then the connection closes */
};

static const char *const conn_state_names[] = {"head", "exchange", "closing"};

/* What the client timer is armed for: every wait on the client has one. */
enum conn_wait {
    CONN_W_NONE,      /* the exchange waits for the server, which has its own timer */
    CONN_W_HANDSHAKE, /* the TLS handshake: tls_handshake */
    CONN_W_HEADER,    /* a request head: client_header */
    CONN_W_WARM,      /* between requests over TLS, at first: TLS_WARM_MS, then CONN_W_IDLE */
    CONN_W_IDLE,      /* between requests: client_idle */
    CONN_W_BODY,      /* silence in a request body: client_body */
    CONN_W_SEND,      /* the client to take what is queued for it: client_idle */
    CONN_W_DRAIN,     /* draining, a new connection's first request: DRAIN_FIRST_MS */
};

struct conn {
    struct half h; /* the socket and its buffers */
    struct loop_defer defer;
    struct loop *lp; /* borrowed */
    struct conn *prev, *next;
    struct xclient xc;     /* what exchanges borrow */
    struct xchg *x;        /* owned: the exchange in progress, or NULL between requests */
    struct runtime *hs_rt; /* ref while the TLS handshake runs: its certificates (SNI) */
    struct http_scan scan;
    struct conn_marks *marks; /* owned while a head is scanned: where its parts lie */
    enum conn_state state;
    enum conn_wait wait;
    uint64_t wait_mark;  /* progress when the timer was armed: re-armed when it moves */
    uint64_t nreq;       /* request heads begun */
    uint64_t cooled;     /* nreq when the TLS record buffers were last given back */
    uint64_t counted_in; /* h.nread and h.nwritten as last added to the worker's bytes */
    uint64_t counted_out;
    int gauge;             /* enum stats_conn_state this connection counts in, or -1 */
    unsigned scanning : 1; /* the bytes of a head have begun to arrive */
    unsigned closed : 1;   /* conn_close() ran: freed at the end of the turn */
    struct sockaddr_storage peer;
    char ip[48];
};

/* A head's marks (1.2 KiB) are only needed while it is scanned, so a connection borrows them
 * from its loop for that time rather than holding them between requests. */
struct conn_marks {
    struct conn_marks *next;
    struct http_marks m;
};

static void conn_run(struct conn *c);

static const struct config *
cfg_of(const struct conn *c)
{
    return c->lp->snap->rt->cfg;
}

static void
conn_free_cb(struct loop_defer *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, defer));
    struct loop *lp = c->lp;

    half_fini(&c->h);
    runtime_unref(c->hs_rt);
    free(c->marks);
    free(c);
    loop_conn_closed(lp);
}

/* Adds what moved through the socket since the last call to the worker's byte counts. */
static void
conn_count_bytes(struct conn *c)
{
    struct stats *st = c->lp->stats;

    stats_add(&st->bytes_in, c->h.nread - c->counted_in);
    stats_add(&st->bytes_out, c->h.nwritten - c->counted_out);
    c->counted_in = c->h.nread;
    c->counted_out = c->h.nwritten;
}

/* The one teardown: every close says why (at debug level), and the memory waits for the end of
 * the turn. */
static void
conn_close(struct conn *c, const char *why)
{
    struct loop *lp = c->lp;

    if (c->closed)
        return;
    c->closed = 1;
    log_msg(LOG_DEBUG, "client %s: closed in state %s: %s", c->ip, conn_state_names[c->state], why);
    conn_count_bytes(c);
    stats_conn_move(lp->stats, c->gauge, -1);
    /* A connection that closed before sending a byte tried no handshake (a port probe). */
    if (c->h.ssl != NULL && c->h.handshaking && BIO_number_read(SSL_get_rbio(c->h.ssl)) > 0)
        stats_add(&lp->stats->tls[STATS_TLS_FAILED], 1);
    if (c->x != NULL) {
        exchange_abort(c->x, NULL);
        exchange_free(c->x);
        c->x = NULL;
    }
    half_stop(&c->h);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    loop_defer(lp, &c->defer, conn_free_cb);
}

/* Acts on an exchange's verdict. */
static void
conn_verdict(struct conn *c, enum xchg_verdict v)
{
    switch (v) {
    case XCHG_WAIT:
        return;
    case XCHG_DONE:
    case XCHG_CLOSE:
        exchange_free(c->x);
        c->x = NULL;
        c->state = v == XCHG_DONE ? CONN_ST_HEAD : CONN_ST_CLOSING;
        return;
    case XCHG_ABORT:
        conn_close(c, "the exchange was cut short");
        return;
    }
}

/* A client that spoke plain HTTP to a TLS listener: told so in plain text, as nginx does, and
 * closed (what it sent is not a request portier can route: it came to the wrong port). */
static void
conn_plain_http(struct conn *c)
{
    static const char body[] = "400 Bad Request: the plain HTTP request was sent to HTTPS port. "
                               "Use https://.\n";
    char head[160];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     sizeof(body) - 1);

    log_msg(LOG_DEBUG, "client %s: plain HTTP on a TLS listener (port %s)", c->ip, c->xc.port);
    if (evbuffer_add(c->h.out, head, (size_t)n) < 0 ||
        evbuffer_add(c->h.out, body, sizeof(body) - 1) < 0) {
        conn_close(c, "out of memory");
        return;
    }
    c->state = CONN_ST_CLOSING;
}

/* Marks for the next head: from the loop's cache, or new. NULL when memory runs out. */
static struct conn_marks *
marks_take(struct loop *lp)
{
    struct conn_marks *cm = lp->free_marks;

    if (cm == NULL)
        return malloc(sizeof(*cm));
    lp->free_marks = cm->next;
    return cm;
}

void
conn_cache_free(struct loop *lp)
{
    while (lp->free_marks != NULL) {
        struct conn_marks *cm = lp->free_marks;

        lp->free_marks = cm->next;
        free(cm);
    }
}

/* Starts an exchange for the head the scanner finished (rc 1) or refused (rc -1), or answers a
 * head that did not come in time (rc 0: 408). */
static void
conn_exchange(struct conn *c, int rc)
{
    size_t len = c->scanning ? c->scan.len : 0;
    enum xchg_verdict v;

    c->scanning = 0;
    c->x = exchange_new(c->lp, &c->xc);
    if (c->x == NULL) {
        conn_close(c, "out of memory for an exchange");
        return;
    }
    c->state = CONN_ST_EXCHANGE;
    if (rc > 0)
        v = exchange_start(c->x, len, &c->marks->m);
    else
        v = exchange_refuse(c->x, rc < 0 ? c->scan.error : 408, len);
    if (c->marks != NULL) {
        c->marks->next = c->lp->free_marks;
        c->lp->free_marks = c->marks;
        c->marks = NULL;
    }
    conn_verdict(c, v);
}

static int
scan_fn(void *ctx, const char *p, size_t n, size_t *used)
{
    return http_scan_feed(ctx, p, n, used);
}

/*
 * Between requests: looks for the next head. Returns true when the connection moved on (an
 * exchange began, it closes), false when it waits for the client.
 */
static bool
conn_head(struct conn *c)
{
    size_t took;
    int rc;

    if (c->h.handshaking) {
        if (!c->h.eof)
            return false;
        conn_close(c, "the client left during the TLS handshake");
        return true;
    }
    if (c->h.plain_http) {
        conn_plain_http(c);
        return true;
    }
    if (evbuffer_get_length(c->h.out) > HIGH_WATER) {
        if (half_flush(&c->h) < 0) {
            conn_close(c, "write failed");
            return true;
        }
        if (evbuffer_get_length(c->h.out) > HIGH_WATER)
            return false; /* the client is behind: the next request waits for it */
    }
    if (evbuffer_get_length(c->h.in) == 0) {
        /* Draining, a connection that has had its answers ends; a new one gets its first (the
         * client connected before the listeners closed, or a successor took them over). */
        if (!c->h.eof && (!c->xc.draining || c->nreq == 0))
            return false;
        /* Every request received is answered: now the connection ends. */
        c->state = CONN_ST_CLOSING;
        return true;
    }
    if (!c->scanning) {
        if (c->marks == NULL && (c->marks = marks_take(c->lp)) == NULL) {
            conn_close(c, "out of memory for a request head");
            return true;
        }
        c->scanning = 1;
        c->nreq++;
        http_scan_init_marks(&c->scan, HTTP_SCAN_REQUEST, cfg_of(c)->limits.max_header_bytes,
                             &c->marks->m);
    }
    /* Only the bytes not scanned yet are looked at: a slow head costs no rescans. */
    rc = iobuf_feed(c->h.in, c->scan.len, scan_fn, &c->scan, &took);
    if (rc == 0) {
        if (c->h.eof) {
            conn_close(c, "the client closed in the middle of a request head");
            return true;
        }
        return false;
    }
    conn_exchange(c, rc);
    return true;
}

/* Counts the connection in the portier_connections state that its wait belongs to. */
static void
conn_gauge(struct conn *c, enum conn_wait w)
{
    int g = w == CONN_W_HANDSHAKE                  ? STATS_CONN_HANDSHAKE
            : w == CONN_W_WARM || w == CONN_W_IDLE ? STATS_CONN_IDLE
                                                   : STATS_CONN_ACTIVE;

    if (g != c->gauge) {
        stats_conn_move(c->lp->stats, c->gauge, g);
        c->gauge = g;
    }
}

/* The client timer, for what the connection waits for now; re-armed when that wait begins or,
 * for a body or a send, whenever the client moves. */
static void
conn_timer(struct conn *c)
{
    const struct config *cfg = cfg_of(c);
    bool sending = evbuffer_get_length(c->h.out) > 0; /* after a flush: the client is behind */
    enum conn_wait want = CONN_W_NONE;
    uint64_t mark = c->nreq, ms = 0;

    switch (c->state) {
    case CONN_ST_HEAD:
        if (c->h.handshaking)
            want = CONN_W_HANDSHAKE;
        else if (sending)
            want = CONN_W_SEND;
        else if (c->scanning || evbuffer_get_length(c->h.in) > 0 || c->nreq == 0)
            want = CONN_W_HEADER; /* the first head, like any other, within client_header */
        else if (c->h.ssl != NULL && c->cooled != c->nreq)
            want = CONN_W_WARM;
        else
            want = CONN_W_IDLE;
        break;
    case CONN_ST_EXCHANGE:
        if (exchange_wants_body(c->x))
            want = CONN_W_BODY;
        else if (sending)
            want = CONN_W_SEND;
        break;
    case CONN_ST_CLOSING:
        want = CONN_W_SEND;
        break;
    }
    if (want == CONN_W_BODY)
        mark = c->h.nread;
    else if (want == CONN_W_SEND)
        mark = c->h.nwritten;
    if (want == c->wait && mark == c->wait_mark)
        return;
    c->wait = want;
    c->wait_mark = mark;
    conn_gauge(c, want);
    switch (want) {
    case CONN_W_NONE:
        break;
    case CONN_W_HANDSHAKE:
        ms = cfg->timeouts.tls_handshake_ms;
        break;
    case CONN_W_HEADER:
        ms = cfg->timeouts.client_header_ms;
        break;
    case CONN_W_BODY:
        ms = cfg->timeouts.client_body_ms;
        break;
    case CONN_W_WARM:
        ms =
            cfg->timeouts.client_idle_ms < TLS_WARM_MS ? cfg->timeouts.client_idle_ms : TLS_WARM_MS;
        break;
    case CONN_W_IDLE:
    case CONN_W_SEND:
        ms = cfg->timeouts.client_idle_ms;
        break;
    case CONN_W_DRAIN: /* set by conn_drain() alone */
        ms = DRAIN_FIRST_MS;
        break;
    }
    half_timer(&c->h, ms);
}

/* After the loop: write what is queued, pause reading when enough is buffered, arm the timer. */
static void
conn_settle(struct conn *c)
{
    if (half_flush(&c->h) < 0) {
        conn_close(c, "write failed");
        return;
    }
    if (c->state == CONN_ST_CLOSING) {
        /* What the client sends now is not read: taking it keeps the kernel from answering the
         * close with a reset that could destroy the last response. */
        evbuffer_drain(c->h.in, evbuffer_get_length(c->h.in));
        if (evbuffer_get_length(c->h.out) == 0) {
            conn_close(c, "done");
            return;
        }
    }
    half_pause_read(&c->h, evbuffer_get_length(c->h.in) > HIGH_WATER);
    conn_count_bytes(c);
    conn_timer(c);
}

static void
conn_run(struct conn *c)
{
    while (!c->closed) {
        switch (c->state) {
        case CONN_ST_HEAD:
            if (!conn_head(c))
                goto settle;
            continue;
        case CONN_ST_EXCHANGE: {
            enum xchg_verdict v = exchange_run(c->x);
            if (v == XCHG_WAIT)
                goto settle;
            conn_verdict(c, v);
            continue;
        }
        case CONN_ST_CLOSING:
            goto settle;
        }
    }
    return;
settle:
    if (!c->closed)
        conn_settle(c);
}

/* A TLS connection idle for TLS_WARM_MS gives its record buffers back (34 KiB, allocated again by
 * its next request) and waits out the rest of client_idle. Keeping them while requests come
 * spares a keep-alive request two allocations; giving them back soon keeps idle connections
 * small. */
static void
conn_cool(struct conn *c)
{
    uint64_t idle = cfg_of(c)->timeouts.client_idle_ms;

    if (idle <= TLS_WARM_MS) {
        conn_close(c, "idle for client_idle");
        return;
    }
    half_release_buffers(&c->h);
    c->cooled = c->nreq;
    c->wait = CONN_W_IDLE;
    half_timer(&c->h, idle - TLS_WARM_MS);
}

static void
conn_timeout(struct conn *c)
{
    switch (c->wait) {
    case CONN_W_HANDSHAKE:
        conn_close(c, "the TLS handshake took longer than tls_handshake");
        return;
    case CONN_W_HEADER:
        /* A head that did not arrive in time: slowloris, or a client that stalled (408). */
        conn_exchange(c, 0);
        break;
    case CONN_W_BODY:
        conn_verdict(c, exchange_body_timeout(c->x));
        break;
    case CONN_W_SEND:
        log_msg(LOG_INFO, "client %s: stalled: took nothing of what was sent to it for %llu ms",
                c->ip, (unsigned long long)cfg_of(c)->timeouts.client_idle_ms);
        conn_close(c, "the client stopped reading");
        return;
    case CONN_W_WARM:
        conn_cool(c);
        return;
    case CONN_W_IDLE:
        conn_close(c, "idle for client_idle");
        return;
    case CONN_W_DRAIN:
        conn_close(c, "draining: no request came");
        return;
    case CONN_W_NONE:
        conn_close(c, "a timer went off with nothing to wait for");
        return;
    }
    c->wait = CONN_W_NONE;
    conn_run(c);
}

/* The client socket's events. */
static void
client_cb(void *owner, enum half_event ev)
{
    struct conn *c = owner;

    switch (ev) {
    case HALF_TIMEOUT:
        conn_timeout(c);
        return;
    case HALF_ERROR:
        conn_close(c, half_error_str(&c->h));
        return;
    case HALF_CONNECTED:
        /* The handshake is over: SNI has picked the certificates. */
        stats_add(
            &c->lp->stats->tls[SSL_session_reused(c->h.ssl) ? STATS_TLS_RESUMED : STATS_TLS_FULL],
            1);
        runtime_unref(c->hs_rt);
        c->hs_rt = NULL;
        conn_run(c);
        return;
    case HALF_READ:
    case HALF_DRAINED:
        conn_run(c);
        return;
    }
}

/* The server connection's events, passed down to the exchange as its callback. */
static void
server_cb(void *owner, enum half_event ev)
{
    struct conn *c = owner;

    if (c->x == NULL)
        return;
    exchange_server_event(c->x, ev);
    conn_run(c);
}

/* Sets up c's half on fd: plain, or TLS with the current certificates. */
static int
conn_half(struct conn *c, struct loop *lp, int fd, bool tls)
{
    const struct tls_store *st = lp->snap->rt->tls;
    SSL *ssl;

    if (!tls)
        return half_init(&c->h, lp, fd, false, client_cb, c);
    if (st == NULL) {
        /* A reload dropped every certificate; the listener stays until a restart. */
        log_msg(LOG_ERROR, "a TLS connection, and no certificate to answer it with");
        return -1;
    }
    ssl = tls_store_accept(st);
    if (ssl == NULL || half_init_tls(&c->h, lp, fd, ssl, client_cb, c) < 0) {
        log_msg(LOG_ERROR, "out of memory for a new TLS connection");
        SSL_free(ssl);
        return -1;
    }
    c->hs_rt = runtime_ref(lp->snap->rt);
    return 0;
}

void
conn_accept(struct loop *lp, int fd, const struct sockaddr *peer, socklen_t len, const char *port,
            bool tls)
{
    struct conn *c = calloc(1, sizeof(*c));

    loop_conn_opened(lp);
    if (c == NULL || conn_half(c, lp, fd, tls) < 0) {
        if (c == NULL)
            log_msg(LOG_ERROR, "out of memory for a new connection");
        free(c);
        close(fd);
        loop_conn_closed(lp);
        return;
    }
    c->lp = lp;
    c->gauge = -1;
    memcpy(&c->peer, peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
    if (addr_host(peer, c->ip, sizeof(c->ip)) < 0)
        memcpy(c->ip, "-", 2);
    c->xc = (struct xclient){
        .h = &c->h,
        .peer = (const struct sockaddr *)&c->peer,
        .ip = c->ip,
        .port = port,
        .tls = tls,
        .draining = lp->draining != 0,
        .server_cb = server_cb,
        .owner = c,
    };
    c->next = lp->conns;
    if (lp->conns != NULL)
        lp->conns->prev = c;
    lp->conns = c;
    conn_timer(c);
    /* The listeners defer accept (TCP_DEFER_ACCEPT): the request, or the ClientHello, came with
     * the connection, so it is read in this turn rather than after another poll. */
    half_read_soon(&c->h);
}

void
conn_drain(struct loop *lp)
{
    struct conn *c, *next;

    for (c = lp->conns; c != NULL; c = next) {
        next = c->next;
        c->xc.draining = true;
        if (c->state != CONN_ST_HEAD || c->scanning || evbuffer_get_length(c->h.in) > 0 ||
            evbuffer_get_length(c->h.out) > 0)
            continue; /* a request in flight: it finishes */
        if (c->nreq > 0) {
            conn_close(c, "shutdown");
        } else if (!c->h.handshaking) {
            /* Accepted just before the listeners closed (or a successor took them): its request
             * may be on its way. */
            c->wait = CONN_W_DRAIN;
            half_timer(&c->h, DRAIN_FIRST_MS);
        }
    }
}

void
conn_close_all(struct loop *lp, const char *why)
{
    struct conn *c, *next;

    if (why != NULL && lp->conns != NULL)
        log_msg(LOG_WARN, "closing %u connection(s): %s", lp->nconns, why);
    for (c = lp->conns; c != NULL; c = next) {
        next = c->next;
        conn_close(c, why != NULL ? why : "shutdown");
    }
}
