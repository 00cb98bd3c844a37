/*
 * A client connection and the exchange (one request and its response) in progress on it. Requests
 * are handled one at a time, so pipelined requests are answered in order by construction: the next
 * head is only looked at once the current response is complete. Bodies move between evbuffers
 * without copies; the request head is copied once, out of the input buffer, so that it stays put
 * while more bytes arrive and can be sent again on a retry.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "addr.h"
#include "conn.h"
#include "http.h"
#include "iobuf.h"
#include "log.h"
#include "upconn.h"
#include "worker.h"

/* Back-pressure: stop reading one side while the other holds more than this unsent. */
#define HIGH_WATER (256 * 1024)
#define LOW_WATER (64 * 1024)
#define RESPONSE_HEAD_MAX 65536
#define TRAILER_MAX 8192
/* Room to build a forwarded head in: the original plus what portier adds. */
#define HEAD_SLACK 1024
/* Bodies up to this size are copied rather than moved by chains (body_move). */
#define BODY_COPY_MAX 2048

enum conn_state {
    CONN_ST_HEAD,    /* waiting for or reading a request head */
    CONN_ST_CONNECT, /* the request is parsed; a server connection is being set up */
    CONN_ST_PROXY,   /* the request went to the server; the response is awaited or streaming */
    CONN_ST_TUNNEL,  /* after 101 Switching Protocols: bytes both ways, untouched */
    CONN_ST_CLOSING, /* the last response is being flushed; then the connection closes */
};

static const char *const conn_state_names[] = {"head", "connect", "proxy", "tunnel", "closing"};

/* The request in flight and everything it needs until its response is done. */
struct xchg {
    struct xchg *next_free;
    struct wsnap *snap;                   /* the runtime this request started with */
    struct balancer_set *set;             /* ref: the servers it picks from */
    const struct balancer_server *server; /* borrowed from set */
    uint64_t tried;                       /* balancer bits of the servers tried */
    int service;
    struct http_request req; /* spans point into head */
    struct http_response res;
    struct http_body reqbody;
    struct http_body resbody;
    struct http_scan rscan;
    unsigned res_flags; /* HTTP_RES_F_* */
    int status;         /* the status sent to the client */
    int upstream_status;
    uint64_t bytes;         /* response body bytes sent to the client */
    uint64_t start_us;      /* monotonic */
    time_t start;           /* wall clock, for the log */
    unsigned req_done : 1;  /* the whole request went to the server */
    unsigned res_head : 1;  /* the final response head went to the client */
    unsigned retried : 1;   /* a dead pooled connection was already retried once */
    unsigned timed_out : 1; /* the last server failure was a timeout */
    char rid[129];          /* the request id: the client's (up to 128) or ours (32) */
    size_t rid_len;
    char host[ROUTER_HOST_MAX + 1];
    size_t cap;  /* bytes of head */
    char head[]; /* a copy of the request head */
};

struct conn {
    struct worker *w; /* borrowed */
    struct conn *prev, *next;
    struct listener *l; /* borrowed */
    int fd;
    enum conn_state state;
    struct event rev, wev, timer;
    struct evbuffer *in;  /* owned */
    struct evbuffer *out; /* owned */
    struct xchg *x;       /* owned: the exchange in progress, or NULL between requests */
    struct upconn *up;    /* owned while busy: the server connection of x */
    struct http_scan scan;
    uint32_t rsize; /* the next read's size (iobuf_read) */
    unsigned read_paused : 1;
    unsigned draining : 1;
    unsigned in_head : 1; /* bytes of a request head have arrived */
    unsigned in_eof : 1;  /* the client closed its side */
    struct sockaddr_storage peer;
    char ip[48];
};

static void conn_close(struct conn *c, const char *why);
static int conn_next_request(struct conn *c);
static void exchange_finish(struct conn *c, int reuse_server);
static int request_forward_body(struct conn *c);
static void response_pump(struct conn *c);

static uint64_t
now_us(struct worker *w)
{
    struct timeval tv;

    event_base_gettimeofday_cached(w->base, &tv);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

/* Monotonic microseconds: durations and cooldowns must not follow wall-clock steps. */
static uint64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int64_t
mono_ms(void)
{
    return (int64_t)(mono_us() / 1000);
}

static const struct config *
cfg_of(struct conn *c)
{
    return c->x != NULL ? c->x->snap->rt->cfg : c->w->snap->rt->cfg;
}

static void
timer_set(struct conn *c, uint64_t ms)
{
    struct timeval tv;

    evtimer_add(&c->timer, worker_timeout(c->w, ms, &tv));
}

static void
read_pause(struct conn *c, int pause)
{
    if ((unsigned)pause == c->read_paused || c->in_eof)
        return;
    c->read_paused = pause != 0;
    if (pause)
        event_del(&c->rev);
    else
        event_add(&c->rev, NULL);
}

/*
 * Writes what is buffered for the client. Returns -1 if the connection was closed (c is gone), 0
 * otherwise. Writing at once rather than on the next EV_WRITE saves a loop turn per response.
 */
static int
conn_flush(struct conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        int n = iobuf_write(c->out, c->fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                event_add(&c->wev, NULL);
                return 0;
            }
            conn_close(c, NULL);
            return -1;
        }
    }
    event_del(&c->wev);
    if (c->state == CONN_ST_CLOSING) {
        conn_close(c, NULL);
        return -1;
    }
    return 0;
}

/*
 * The last response is queued: stop reading, flush, close once it is out. A client that does not
 * take it within client_idle is closed anyway. Returns -1 if the connection is already closed.
 */
static int
conn_closing(struct conn *c)
{
    c->state = CONN_ST_CLOSING;
    read_pause(c, 1);
    timer_set(c, cfg_of(c)->timeouts.client_idle_ms);
    return conn_flush(c);
}

/* An access-log line for the exchange that ends now. */
static void
exchange_log(struct conn *c, struct xchg *x)
{
    char line[4096];
    const struct http_span *ref, *ua;
    size_t n;

    if (!log_access_enabled())
        return; /* nothing of the line is worked out when nobody reads it */
    ref = http_header_find(&x->req.hdrs, "referer");
    ua = http_header_find(&x->req.hdrs, "user-agent");
    struct log_access_rec r = {
        .client = c->ip,
        .when = x->start,
        .method = x->req.method.p,
        .method_len = x->req.method.len,
        .target = x->req.target.p,
        .target_len = x->req.target.len,
        .http_minor = x->req.version == 10 ? 0 : 1,
        .status = x->status,
        .bytes = x->bytes,
        .referer = ref != NULL ? ref->p : NULL,
        .referer_len = ref != NULL ? ref->len : 0,
        .user_agent = ua != NULL ? ua->p : NULL,
        .user_agent_len = ua != NULL ? ua->len : 0,
        .host = x->req.host.p,
        .host_len = x->req.host.len,
        .upstream = x->server != NULL ? balancer_server_addr(x->server)->label : NULL,
        .upstream_status = x->upstream_status,
        .duration_us = mono_us() - x->start_us,
        .request_id = x->rid,
    };
    enum log_format fmt = (enum log_format)x->snap->rt->cfg->access_log_format;

    n = log_access_format(line, sizeof(line), fmt, &r);
    if (n == 0) {
        /* Escaping can grow a long target or header fourfold: shorten them rather than lose the
         * line. */
        r.target_len = r.target_len < 512 ? r.target_len : 512;
        r.referer_len = r.referer_len < 256 ? r.referer_len : 256;
        r.user_agent_len = r.user_agent_len < 256 ? r.user_agent_len : 256;
        r.host_len = r.host_len < 256 ? r.host_len : 256;
        n = log_access_format(line, sizeof(line), fmt, &r);
    }
    if (n > 0)
        worker_log(c->w, line, n);
}

/* Takes an exchange from the worker's free list (or the heap) sized for the current config. */
static struct xchg *
exchange_new(struct conn *c)
{
    struct worker *w = c->w;
    size_t cap = (size_t)w->snap->rt->cfg->limits.max_header_bytes;
    struct xchg *x = w->free_x;

    if (x != NULL && x->cap >= cap) {
        w->free_x = x->next_free;
    } else {
        if (x != NULL) {
            /* The limit grew on reload: the cached exchanges are too small; drop one. */
            w->free_x = x->next_free;
            free(x);
        }
        x = malloc(sizeof(*x) + cap);
        if (x == NULL)
            return NULL;
        x->cap = cap;
    }
    memset(x, 0, offsetof(struct xchg, cap));
    x->snap = worker_snap_take(w);
    x->service = -1;
    /* Every exchange has an id from the start, so that even a refusal's page and log line name
     * one; a valid X-Request-Id from the client replaces it once the head is parsed. */
    worker_request_id(w, x->rid);
    x->rid_len = 32;
    x->start_us = mono_us();
    x->start = (time_t)(now_us(w) / 1000000);
    return x;
}

static void
exchange_free(struct conn *c)
{
    struct xchg *x = c->x;

    if (x == NULL)
        return;
    c->x = NULL;
    balancer_set_unref(x->set);
    worker_snap_drop(x->snap);
    x->next_free = c->w->free_x;
    c->w->free_x = x;
}

/* Answers the current request with an error page of ours and, unless keep says so, closes. */
static void
respond_error(struct conn *c, int status, int keep)
{
    struct xchg *x = c->x;
    char page[HTTP_ERROR_MAX];
    unsigned flags = HTTP_ERR_F_HTML;
    const char *rid = NULL;
    size_t rid_len = 0, n;

    if (x != NULL) {
        rid = x->rid;
        rid_len = x->rid_len;
    }
    if (x != NULL && x->req.is_head)
        flags |= HTTP_ERR_F_HEAD;
    if (!keep || c->draining)
        flags |= HTTP_ERR_F_CLOSE;
    n = http_error_write(page, sizeof(page), status, rid, rid_len, flags);
    evbuffer_add(c->out, page, n);
    if (x != NULL) {
        x->status = status;
        if (!(flags & HTTP_ERR_F_HEAD))
            x->bytes = http_error_body(NULL, 0, status, rid, rid_len, true);
        exchange_log(c, x);
    }
    if (c->up != NULL) {
        upconn_close(c->up);
        c->up = NULL;
    }
    exchange_free(c);
    if (flags & HTTP_ERR_F_CLOSE) {
        conn_closing(c);
        return;
    }
    c->state = CONN_ST_HEAD;
    if (conn_flush(c) == 0)
        conn_next_request(c);
}

/* Picks a server and gets a connection to it; on failure tries the next, then answers. */
static void
exchange_connect(struct conn *c)
{
    struct xchg *x = c->x;
    const struct config *cfg = x->snap->rt->cfg;

    for (;;) {
        const struct balancer_server *s = balancer_pick(x->set, mono_ms(), &x->tried);
        if (s == NULL) {
            /* Every server was tried: 504 if the last one timed out, else 502. */
            respond_error(c, x->timed_out ? 504 : 502, 0);
            return;
        }
        x->server = s;
        c->up = upconn_get(c->w, c, balancer_server_addr(s), cfg->timeouts.upstream_connect_ms);
        if (c->up == NULL) {
            log_msg(LOG_WARN, "connect to %s: %s", balancer_server_addr(s)->label, strerror(errno));
            balancer_mark_failed(s, mono_ms());
            x->timed_out = 0;
            continue;
        }
        c->state = CONN_ST_CONNECT;
        if (!c->up->connecting)
            conn_upstream_ready(c->up);
        return;
    }
}

/* Routes the parsed request and starts its exchange. */
static void
exchange_start(struct conn *c)
{
    struct xchg *x = c->x;
    const struct config *cfg = x->snap->rt->cfg;
    size_t hlen = 0;

    if (x->req.has_host) {
        hlen = router_normalize_host(x->host, sizeof(x->host), x->req.host.p, x->req.host.len);
        if (hlen == 0) {
            respond_error(c, 400, 0);
            return;
        }
    }
    /* An HTTP/1.0 request without Host has no host to match: it goes to the default service. */
    x->service = router_lookup(x->snap->rt->router, x->host, hlen, x->req.path.p, x->req.path.len);
    if (x->service < 0) {
        respond_error(c, 404, x->req.framing == HTTP_FRAMING_NONE);
        return;
    }
    if (http_body_init(&x->reqbody, x->req.framing, x->req.content_length,
                       cfg->limits.max_body_bytes, TRAILER_MAX) < 0) {
        respond_error(c, x->reqbody.error, 0);
        return;
    }
    x->set = balancer_acquire(x->snap->rt->balancers[x->service]);
    if (balancer_set_size(x->set) == 0) {
        respond_error(c, 503, x->req.framing == HTTP_FRAMING_NONE);
        return;
    }
    exchange_connect(c);
}

/* A parser fed the bytes of an evbuffer piece by piece: returns like http_body_feed(). */
typedef int (*feed_fn)(void *ctx, const char *p, size_t n, size_t *used);

/*
 * Feeds buf's bytes from offset skip on to fn, chain by chain and without copying, until fn returns
 * non-zero or the bytes run out. Returns fn's last answer (0 when it took everything); *took counts
 * the bytes it consumed.
 */
static int
feed_chains(struct evbuffer *buf, size_t skip, feed_fn fn, void *ctx, size_t *took)
{
    size_t len = evbuffer_get_length(buf);
    int rc = 0;

    *took = 0;
    while (rc == 0 && skip < len) {
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v[4];
        if (evbuffer_ptr_set(buf, &pos, skip, EVBUFFER_PTR_SET) < 0)
            break;
        int n = evbuffer_peek(buf, -1, &pos, v, 4);
        for (int i = 0; i < n && i < 4 && rc == 0; i++) {
            size_t used = 0;
            rc = fn(ctx, v[i].iov_base, v[i].iov_len, &used);
            skip += used;
            *took += used;
        }
    }
    return rc;
}

static int
scan_fn(void *ctx, const char *p, size_t n, size_t *used)
{
    return http_scan_feed(ctx, p, n, used);
}

static int
body_fn(void *ctx, const char *p, size_t n, size_t *used)
{
    return http_body_feed(ctx, p, n, used);
}

/* For an HTTP/1.0 client of a chunked response: only the payload goes on, the framing is dropped.
 */
struct dechunk {
    struct http_body *body;
    struct evbuffer *out;
    uint64_t *bytes;
};

static int
dechunk_fn(void *ctx, const char *p, size_t n, size_t *used)
{
    struct dechunk *d = ctx;
    int rc = 0;

    *used = 0;
    while (*used < n && rc == 0) {
        size_t step, off, dlen;
        rc = http_body_next(d->body, p + *used, n - *used, &step, &off, &dlen);
        if (rc < 0)
            return rc;
        if (dlen > 0) {
            evbuffer_add(d->out, p + *used + off, dlen);
            *d->bytes += dlen;
        }
        *used += step;
    }
    return rc;
}

/* For the log of a refused request: its method and target as sent, if the request line has them. */
static void
log_refused_head(struct xchg *x, size_t len)
{
    const char *sp1 = memchr(x->head, ' ', len < 32 ? len : 32);

    if (x->req.method.len > 0 || sp1 == NULL)
        return;
    x->req.method = (struct http_span){x->head, (size_t)(sp1 - x->head)};
    if (x->req.target.len == 0) {
        const char *start = sp1 + 1, *end = x->head + len;
        const char *sp2 = memchr(start, ' ', (size_t)(end - start));
        const char *cr = memchr(start, '\r', (size_t)(end - start));
        if (sp2 == NULL || (cr != NULL && cr < sp2))
            sp2 = cr;
        if (sp2 != NULL)
            x->req.target = (struct http_span){start, (size_t)(sp2 - start)};
    }
}

/* Looks for a complete request head in c->in; parses it and starts its exchange. */
static int
conn_read_head(struct conn *c)
{
    size_t took;
    int rc;

    if (evbuffer_get_length(c->in) == 0)
        return 0;
    if (!c->in_head) {
        c->in_head = 1;
        http_scan_init(&c->scan, HTTP_SCAN_REQUEST, cfg_of(c)->limits.max_header_bytes);
        timer_set(c, cfg_of(c)->timeouts.client_header_ms);
    }
    /* Only the bytes not scanned yet are looked at: a slow head costs no rescans. */
    rc = feed_chains(c->in, c->scan.len, scan_fn, &c->scan, &took);
    if (rc == 0)
        return 0;
    c->in_head = 0;
    event_del(&c->timer);
    c->x = exchange_new(c);
    if (c->x == NULL) {
        conn_close(c, "out of memory");
        return -1;
    }
    if (rc < 0) {
        respond_error(c, c->scan.error, 0);
        return -1;
    }
    struct xchg *x = c->x;
    size_t len = c->scan.len;
    if (len > x->cap) {
        respond_error(c, 431, 0);
        return -1;
    }
    evbuffer_remove(c->in, x->head, len);
    if (http_request_parse(&x->req, x->head, len) < 0) {
        log_refused_head(x, len);
        respond_error(c, x->req.error, 0);
        return -1;
    }
    if (http_request_id_valid(x->req.request_id.p, x->req.request_id.len)) {
        x->rid_len = x->req.request_id.len;
        memcpy(x->rid, x->req.request_id.p, x->rid_len);
        x->rid[x->rid_len] = '\0';
    }
    exchange_start(c);
    return 1;
}

/*
 * Between requests: parses the next pipelined head if one is buffered, else waits for one with the
 * idle timeout. Returns -1 if the connection was closed.
 */
static int
conn_next_request(struct conn *c)
{
    if (c->draining)
        return conn_closing(c);
    c->state = CONN_ST_HEAD;
    read_pause(c, 0);
    if (evbuffer_get_length(c->in) > 0)
        return conn_read_head(c) < 0 ? -1 : 0;
    if (c->in_eof)
        return conn_closing(c);
    timer_set(c, cfg_of(c)->timeouts.client_idle_ms);
    return 0;
}

/* The server connection is up: send the head, then whatever body has arrived. */
void
conn_upstream_ready(struct upconn *u)
{
    struct conn *c = u->owner;
    struct xchg *x = c->x;
    const struct config *cfg = x->snap->rt->cfg;
    struct http_forward fwd = {
        .client_ip = c->ip,
        .proto = c->l->tls ? "https" : "http",
        .port = c->l->port,
        .host = NULL,
        .request_id = x->rid,
        .request_id_len = x->rid_len,
        .flags = 0,
    };
    struct evbuffer_iovec v;
    size_t cap = x->req.head_len + HEAD_SLACK, n;

    if (config_trusted_proxy(cfg, (const struct sockaddr *)&c->peer))
        fwd.flags |= HTTP_FWD_F_TRUSTED;
    if (x->req.expect_continue)
        fwd.flags |= HTTP_FWD_F_DROP_EXPECT;
    for (;;) {
        if (evbuffer_reserve_space(u->out, (ev_ssize_t)cap, &v, 1) < 1) {
            conn_close(c, "out of memory");
            return;
        }
        n = http_request_write(v.iov_base, v.iov_len, &x->req, &fwd);
        if (n <= v.iov_len)
            break;
        cap = n;
    }
    v.iov_len = n;
    evbuffer_commit_space(u->out, &v, 1);
    c->state = CONN_ST_PROXY;
    x->rscan.len = 0;
    http_scan_init(&x->rscan, HTTP_SCAN_RESPONSE, RESPONSE_HEAD_MAX);
    if (x->req.expect_continue && x->req.framing != HTTP_FRAMING_NONE &&
        evbuffer_get_length(c->in) == 0) {
        /* The client waits for this before it sends the body (RFC 9110 10.1.1). */
        evbuffer_add(c->out, HTTP_CONTINUE, sizeof(HTTP_CONTINUE) - 1);
        if (conn_flush(c) < 0)
            return;
    }
    if (request_forward_body(c) < 0)
        return;
    if (upconn_flush(c->up) < 0)
        conn_upstream_failed(c->up, 0, strerror(errno));
}

/* Moves the request body bytes that have arrived to the server. Returns -1 if c was closed. */
static int
request_forward_body(struct conn *c)
{
    struct xchg *x = c->x;
    size_t take = 0;
    int rc;

    if (x->req_done)
        return 0;
    if (x->req.framing == HTTP_FRAMING_NONE) {
        x->req_done = 1;
        upconn_timeout(c->up, x->snap->rt->cfg->timeouts.upstream_response_ms);
        return 0;
    }
    /* A body already complete (Content-Length: 0) needs no bytes to say so. */
    rc = http_body_done(&x->reqbody) ? 1 : feed_chains(c->in, 0, body_fn, &x->reqbody, &take);
    if (rc < 0) {
        if (!x->res_head) {
            respond_error(c, x->reqbody.error, 0);
        } else {
            conn_close(c, x->reqbody.why);
        }
        return -1;
    }
    if (take > 0)
        evbuffer_remove_buffer(c->in, c->up->out, take);
    if (rc == 1) {
        x->req_done = 1;
        upconn_timeout(c->up, x->snap->rt->cfg->timeouts.upstream_response_ms);
    }
    /* A slow server: stop reading the client until the server catches up. */
    read_pause(c, evbuffer_get_length(c->up->out) > HIGH_WATER);
    return 0;
}

/* The server took its buffered bytes: resume reading the client if it was paused. */
void
conn_upstream_drained(struct upconn *u)
{
    struct conn *c = u->owner;

    if ((c->state == CONN_ST_PROXY && c->x != NULL && !c->x->req_done) ||
        c->state == CONN_ST_TUNNEL)
        read_pause(c, 0);
}

static int
idempotent(const struct http_request *req)
{
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (req->method.len == strlen(methods[i]) &&
            memcmp(req->method.p, methods[i], req->method.len) == 0)
            return 1;
    }
    return 0;
}

void
conn_upstream_failed(struct upconn *u, int timeout, const char *why)
{
    struct conn *c = u->owner;
    struct xchg *x = c->x;
    int began = x->upstream_status != 0 || evbuffer_get_length(u->in) > 0 || x->rscan.len > 0;

    c->up = NULL;
    if (u->connecting) {
        /* Nothing was sent: the next server is safe for any request. */
        log_msg(LOG_WARN, "connect to %s: %s", u->addr.label, why);
        balancer_mark_failed(x->server, mono_ms());
        upconn_close(u);
        x->timed_out = timeout != 0;
        exchange_connect(c);
        return;
    }
    if (u->reused && !began && !timeout && !x->retried && idempotent(&x->req) &&
        x->req.framing == HTTP_FRAMING_NONE) {
        /* The server closed a pooled connection just as it was reused: try once more, fresh. */
        upconn_close(u);
        x->retried = 1;
        x->tried = 0;
        exchange_connect(c);
        return;
    }
    upconn_close(u);
    log_msg(LOG_WARN, "server %s: %s",
            x->server != NULL ? balancer_server_addr(x->server)->label : "-", why);
    if (!x->res_head) {
        respond_error(c, timeout ? 504 : 502, 0);
        return;
    }
    conn_close(c, why);
}

/* Parses response heads (interim ones are relayed) until the final one is sent to the client. */
static int
response_head(struct conn *c)
{
    struct xchg *x = c->x;
    struct upconn *u = c->up;

    for (;;) {
        size_t len = evbuffer_get_length(u->in);
        if (len == 0)
            return 0;
        const char *p = (const char *)evbuffer_pullup(
            u->in, (ev_ssize_t)(len < RESPONSE_HEAD_MAX ? len : RESPONSE_HEAD_MAX));
        int rc = http_scan_head(&x->rscan, p, len < RESPONSE_HEAD_MAX ? len : RESPONSE_HEAD_MAX);
        if (rc > 0)
            rc = (int)x->rscan.len;
        if (rc == 0)
            return 0;
        if (rc < 0 ||
            http_response_parse(&x->res, p, (size_t)rc,
                                (x->req.is_head ? HTTP_RSP_F_HEAD : 0) |
                                    (x->req.upgrade_websocket ? HTTP_RSP_F_UPGRADE : 0)) < 0) {
            log_msg(LOG_WARN, "server %s: bad response: %s", u->addr.label,
                    rc < 0 ? x->rscan.why : x->res.why);
            c->up = NULL;
            upconn_close(u);
            respond_error(c, 502, 0);
            return -1;
        }
        x->upstream_status = x->res.status;
        /* A response that came before the whole request did leaves the client stream unframed. */
        int keep = !c->draining && !c->in_eof && x->req_done;
        x->res_flags = http_response_flags(&x->req, &x->res, keep);
        if (!(x->res_flags & HTTP_RES_F_SKIP)) {
            struct evbuffer_iovec v;
            size_t cap = (size_t)rc + HEAD_SLACK, n;
            for (;;) {
                if (evbuffer_reserve_space(c->out, (ev_ssize_t)cap, &v, 1) < 1) {
                    conn_close(c, "out of memory");
                    return -1;
                }
                n = http_response_write(v.iov_base, v.iov_len, &x->res, x->res_flags);
                if (n <= v.iov_len)
                    break;
                cap = n;
            }
            v.iov_len = n;
            evbuffer_commit_space(c->out, &v, 1);
        }
        evbuffer_drain(u->in, (size_t)rc);
        if (x->res.interim) {
            http_scan_init(&x->rscan, HTTP_SCAN_RESPONSE, RESPONSE_HEAD_MAX);
            continue;
        }
        x->res_head = 1;
        x->status = x->res.status;
        if (x->res.upgrade_websocket) {
            c->state = CONN_ST_TUNNEL;
            upconn_timeout(u, 0);
            return 1;
        }
        if (http_body_init(&x->resbody, x->res.framing, x->res.content_length, 0, TRAILER_MAX) <
            0) {
            conn_close(c, "bad response body framing");
            return -1;
        }
        return 1;
    }
}

/*
 * Moves n bytes from the front of src to dst. A small body is copied after the head, into the
 * head's chain when it has room, so that the response usually goes out as one buffer in one send;
 * a large one moves by chains, without copies.
 */
static void
body_move(struct evbuffer *src, struct evbuffer *dst, size_t n)
{
    struct evbuffer_iovec v;

    if (n > BODY_COPY_MAX || evbuffer_reserve_space(dst, (ev_ssize_t)n, &v, 1) != 1) {
        evbuffer_remove_buffer(src, dst, n);
        return;
    }
    evbuffer_copyout(src, v.iov_base, n);
    v.iov_len = n;
    evbuffer_commit_space(dst, &v, 1);
    evbuffer_drain(src, n);
}

/* Moves response body bytes to the client; finishes the exchange at the end of the body. */
static void
response_body(struct conn *c)
{
    struct xchg *x = c->x;
    struct upconn *u = c->up;
    struct dechunk d = {&x->resbody, c->out, &x->bytes};
    size_t take;
    int rc;

    take = 0;
    if (http_body_done(&x->resbody))
        rc = 1; /* HEAD, 204, 304, Content-Length: 0: the head was the whole response */
    else if (x->res_flags & HTTP_RES_F_DECHUNK)
        rc = feed_chains(u->in, 0, dechunk_fn, &d, &take);
    else
        rc = feed_chains(u->in, 0, body_fn, &x->resbody, &take);
    if (rc < 0) {
        log_msg(LOG_WARN, "server %s: bad response body: %s", u->addr.label, x->resbody.why);
        conn_close(c, x->resbody.why);
        return;
    }
    if (x->res_flags & HTTP_RES_F_DECHUNK) {
        evbuffer_drain(u->in, take);
    } else if (take > 0) {
        body_move(u->in, c->out, take);
        x->bytes += take;
    }
    if (rc == 1 || (u->eof && http_body_eof(&x->resbody) == 0 && evbuffer_get_length(u->in) == 0)) {
        exchange_finish(c, rc == 1 && !u->eof && evbuffer_get_length(u->in) == 0);
        return;
    }
    if (u->eof) {
        conn_close(c, "server closed mid-response");
        return;
    }
    if (x->res.framing != HTTP_FRAMING_NONE)
        upconn_timeout(u, x->snap->rt->cfg->timeouts.upstream_response_ms);
    if (conn_flush(c) < 0)
        return;
    /* A slow client: stop reading the server until the client catches up. */
    upconn_pause_read(u, evbuffer_get_length(c->out) > HIGH_WATER);
}

/* The response is complete: the server connection goes back to the pool if it can. */
static void
exchange_finish(struct conn *c, int reuse_server)
{
    struct xchg *x = c->x;
    struct upconn *u = c->up;
    int close_client = (x->res_flags & HTTP_RES_F_CLOSE) || !x->req_done;

    c->up = NULL;
    if (reuse_server && x->req_done && x->res.keep_alive) {
        upconn_timeout(u, 0);
        balancer_mark_ok(x->server);
        upconn_release(u);
    } else {
        upconn_close(u);
    }
    exchange_log(c, x);
    exchange_free(c);
    if (close_client) {
        conn_closing(c);
        return;
    }
    if (conn_flush(c) < 0)
        return;
    conn_next_request(c);
}

static void
tunnel_pump(struct conn *c)
{
    struct upconn *u = c->up;

    if (evbuffer_get_length(u->in) > 0)
        evbuffer_add_buffer(c->out, u->in);
    if (u->eof) {
        c->state = CONN_ST_CLOSING;
        conn_flush(c);
        return;
    }
    if (conn_flush(c) < 0)
        return;
    upconn_pause_read(u, evbuffer_get_length(c->out) > HIGH_WATER);
}

static void
response_pump(struct conn *c)
{
    if (c->state == CONN_ST_TUNNEL) {
        tunnel_pump(c);
        return;
    }
    if (!c->x->res_head) {
        int rc = response_head(c);
        if (rc < 0)
            return;
        if (rc == 0) {
            if (c->up->eof) {
                struct upconn *u = c->up;
                conn_upstream_failed(u, 0, "server closed before responding");
            }
            return;
        }
        if (c->state == CONN_ST_TUNNEL) {
            tunnel_pump(c);
            return;
        }
    }
    response_body(c);
}

void
conn_upstream_read(struct upconn *u, int eof)
{
    struct conn *c = u->owner;

    (void)eof;
    if (!c->x->res_head && c->state != CONN_ST_TUNNEL && evbuffer_get_length(u->in) == 0 &&
        u->eof) {
        conn_upstream_failed(u, 0, "server closed the connection");
        return;
    }
    response_pump(c);
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    int n;

    (void)what;
    c->w->turn_events++;
    n = iobuf_read(c->in, fd, &c->rsize);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        conn_close(c, NULL);
        return;
    }
    if (n == 0) {
        c->in_eof = 1;
        event_del(&c->rev);
        if (c->state == CONN_ST_HEAD || c->state == CONN_ST_CLOSING) {
            /* Between requests (or in the middle of a head): nothing to answer. */
            if ((c->state == CONN_ST_HEAD && c->in_head) || evbuffer_get_length(c->out) == 0)
                conn_close(c, NULL);
            else
                c->state = CONN_ST_CLOSING;
            return;
        }
        if (c->state == CONN_ST_TUNNEL) {
            c->state = CONN_ST_CLOSING;
            if (upconn_flush(c->up) == 0)
                conn_flush(c);
            return;
        }
        if (c->x != NULL && !c->x->req_done) {
            conn_close(c, NULL); /* the client gave up before its request was complete */
            return;
        }
        return; /* the response still goes out; the connection closes after it */
    }
    switch (c->state) {
    case CONN_ST_HEAD:
        conn_read_head(c);
        break;
    case CONN_ST_PROXY:
        if (c->x->req_done) {
            /* Pipelined bytes wait for the current response; bound how many may wait. */
            read_pause(c, evbuffer_get_length(c->in) > HIGH_WATER);
            break;
        }
        if (request_forward_body(c) == 0 && upconn_flush(c->up) < 0)
            conn_upstream_failed(c->up, 0, strerror(errno));
        break;
    case CONN_ST_TUNNEL:
        evbuffer_add_buffer(c->up->out, c->in);
        if (upconn_flush(c->up) < 0) {
            conn_close(c, NULL);
            return;
        }
        read_pause(c, evbuffer_get_length(c->up->out) > HIGH_WATER);
        break;
    case CONN_ST_CONNECT:
        /* Body bytes wait in c->in until the server connection is up; bound what may wait. */
        read_pause(c, evbuffer_get_length(c->in) > HIGH_WATER);
        break;
    case CONN_ST_CLOSING:
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        break;
    }
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (conn_flush(c) < 0)
        return;
    if (c->up != NULL && c->up->read_paused && evbuffer_get_length(c->out) < LOW_WATER) {
        upconn_pause_read(c->up, 0);
        /* Bytes may have waited in the server buffer while reading was paused. */
        if (evbuffer_get_length(c->up->in) > 0)
            response_pump(c);
    }
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CONN_ST_HEAD && c->in_head) {
        /* A head that did not arrive in time: slowloris, or a client that stalled (408). */
        c->in_head = 0;
        c->x = exchange_new(c);
        if (c->x == NULL) {
            conn_close(c, "out of memory");
            return;
        }
        respond_error(c, 408, 0);
        return;
    }
    conn_close(c, NULL);
}

static void
conn_close(struct conn *c, const char *why)
{
    struct worker *w = c->w;

    if (why != NULL)
        log_msg(LOG_INFO, "client %s: closing in state %s: %s", c->ip, conn_state_names[c->state],
                why);
    if (c->up != NULL) {
        upconn_close(c->up);
        c->up = NULL;
    }
    if (c->x != NULL) {
        if (c->x->status == 0)
            c->x->status = 499; /* nginx's "client closed request", for the log */
        exchange_log(c, c->x);
        exchange_free(c);
    }
    event_del(&c->rev);
    event_del(&c->wev);
    event_del(&c->timer);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c);
    worker_conn_closed(w);
}

void
conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len,
            struct listener *l)
{
    struct conn *c = calloc(1, sizeof(*c));

    (void)len;
    if (c == NULL || (c->in = evbuffer_new()) == NULL || (c->out = evbuffer_new()) == NULL) {
        log_msg(LOG_ERROR, "out of memory for a new connection");
        if (c != NULL && c->in != NULL)
            evbuffer_free(c->in);
        free(c);
        close(fd);
        worker_conn_closed(w);
        return;
    }
    c->w = w;
    c->fd = fd;
    c->l = l;
    memcpy(&c->peer, peer, len < sizeof(c->peer) ? len : sizeof(c->peer));
    if (addr_host(peer, c->ip, sizeof(c->ip)) < 0)
        strcpy(c->ip, "-");
    event_assign(&c->rev, w->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    event_assign(&c->wev, w->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    evtimer_assign(&c->timer, w->base, conn_timer_cb, c);
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    event_add(&c->rev, NULL);
    /* The first request head must come within client_header, like any other. */
    c->in_head = 1;
    http_scan_init(&c->scan, HTTP_SCAN_REQUEST, w->snap->rt->cfg->limits.max_header_bytes);
    timer_set(c, w->snap->rt->cfg->timeouts.client_header_ms);
}

void
conn_drain(struct worker *w)
{
    struct conn *c, *next;

    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        c->draining = 1;
        if (c->state == CONN_ST_HEAD && evbuffer_get_length(c->in) == 0 &&
            evbuffer_get_length(c->out) == 0 && c->x == NULL)
            conn_close(c, NULL);
    }
}

void
conn_close_all(struct worker *w, const char *why)
{
    struct conn *c, *next;

    if (why != NULL && w->conns != NULL)
        log_msg(LOG_WARN, "closing %u connection(s): %s", w->nconns, why);
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_close(c, NULL);
    }
}

void
conn_free_cache(struct worker *w)
{
    while (w->free_x != NULL) {
        struct xchg *x = w->free_x;
        w->free_x = x->next_free;
        free(x);
    }
}
