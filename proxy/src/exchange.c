/*
 * One request and its response, from the parsed head to the access-log line. The exchange moves
 * through phases (pick a server, connect, send, proxy, tunnel, end); exchange_run() takes every
 * step the bytes and events so far allow and returns a verdict, so nothing here ever waits,
 * recurses or calls the client connection back. Bodies move between evbuffers without copies; the
 * request head is copied once, out of the client's buffer, so that it stays put while more bytes
 * arrive and can be sent again on a retry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "balancer.h"
#include "config.h"
#include "exchange.h"
#include "http.h"
#include "iobuf.h"
#include "log.h"
#include "stats.h"
#include "router.h"
#include "runtime.h"
#include "upconn.h"

/* Back-pressure: a side's reads wait while the other side holds more than this unsent. */
#define HIGH_WATER (256 * 1024)
#define RESPONSE_HEAD_MAX 65536
#define TRAILER_MAX 8192
/* Room to build a forwarded head in: the original plus what portier adds. */
#define HEAD_SLACK 1024
/* Bodies up to this size are copied rather than moved by chains (body_move). */
#define BODY_COPY_MAX 2048
/* A request body up to this size is kept until the response begins, so the request can be
 * retried on another server; a larger one makes the request not retryable. */
#define RETRY_BODY_MAX (64 * 1024)
/* Interim (1xx) responses relayed for one request; one more is a broken server (502). */
#define INTERIM_MAX 8

enum xchg_phase {
    PH_PICK,       /* pick a server and get a connection to it */
    PH_CONNECTING, /* the connection is being set up */
    PH_SEND,       /* connected: the request head (and any kept body) goes out */
    PH_PROXY,      /* request body to the server, response back to the client */
    PH_TUNNEL,     /* after 101: bytes both ways, untouched */
    PH_END,        /* over: verdict says what the connection does next */
};

static const char *const phase_names[] = {"pick", "connecting", "send", "proxy", "tunnel", "end"};

/* What one step of exchange_run() did. */
enum step {
    S_NEXT,  /* moved to another phase (or the same one again): step again */
    S_WAIT,  /* nothing more until an event */
    S_ABORT, /* the client connection must close now */
};

struct xchg {
    struct xchg *next_free;
    struct loop *lp;                      /* borrowed */
    const struct xclient *cl;             /* borrowed from the client connection */
    struct loop_snap *snap;               /* the runtime this request started with */
    struct balancer_set *set;             /* ref: the servers it picks from */
    const struct balancer_server *server; /* borrowed from set */
    struct upconn *u;                     /* owned: the server connection, or NULL */
    struct evbuffer *kept;                /* owned: the request body so far, for a retry */
    uint64_t tried;                       /* balancer bits of the servers tried */
    const struct runtime_target *target;  /* borrowed from snap: the route, once routed */
    int service;
    enum xchg_phase phase;
    enum xchg_verdict verdict; /* in PH_END */
    struct http_body reqbody;
    struct http_body resbody;
    struct http_scan rscan;
    unsigned res_flags; /* HTTP_RES_F_* */
    int status;         /* the status sent to the client */
    int upstream_status;
    unsigned ninterim;
    uint64_t bytes;           /* response body bytes queued for the client */
    uint64_t res_start;       /* the client stream's offset where the final response head begins */
    uint64_t srv_mark;        /* the server's bytes read and written when its timer was armed */
    uint64_t start_us;        /* monotonic */
    uint64_t sent_us;         /* monotonic: the request went to the server's buffer */
    unsigned picks;           /* servers picked: more than one is a retry */
    time_t start;             /* wall clock, for the log */
    unsigned req_done : 1;    /* the whole request went to the server's buffer */
    unsigned res_head : 1;    /* the final response head went to the client's buffer */
    unsigned retried : 1;     /* the one retry after a broken server connection was used */
    unsigned timed_out : 1;   /* the last server failure was a timeout */
    unsigned srv_timeout : 1; /* the server connection's timer went off */
    unsigned srv_timer : 1;   /* that timer is armed for the response */
    unsigned continued : 1;   /* 100 Continue went to the client */
    unsigned retryable : 1;   /* idempotent, and the body so far is kept whole */
    unsigned in_trailer : 1;  /* the request body's trailer section is next */
    unsigned logged : 1;      /* the access-log line is written */
    char rid[129];            /* the request id: the client's (up to 128) or ours (32) */
    size_t rid_len;
    char host[ROUTER_HOST_MAX + 1];
    /* Not cleared with the rest (their header arrays alone are 8 KiB): reset, parsed, scanned. */
    struct http_request req; /* spans point into head */
    struct http_response res;
    struct http_marks rmarks; /* where the parts of the response head lie */
    size_t cap;               /* bytes of head */
    char head[];              /* a copy of the request head */
};

const char *
exchange_verdict_str(enum xchg_verdict v)
{
    static const char *const names[] = {"wait", "done", "close", "abort"};

    return (unsigned)v < sizeof(names) / sizeof(names[0]) ? names[v] : "?";
}

static const struct config *
cfg_of(const struct xchg *x)
{
    return x->snap->rt->cfg;
}

static const char *
server_label(const struct xchg *x)
{
    return x->server != NULL ? balancer_server_addr(x->server)->label : "-";
}

/* ---------------------------------------------------------------------------------------------
 * Life cycle and the log
 */

struct xchg *
exchange_new(struct loop *lp, const struct xclient *cl)
{
    size_t cap = (size_t)lp->snap->rt->cfg->limits.max_header_bytes;
    struct xchg *x = lp->free_x;
    struct timeval tv;

    if (x != NULL && x->cap >= cap) {
        lp->free_x = x->next_free;
    } else {
        if (x != NULL) {
            /* The limit grew on reload: the cached exchanges are too small; drop one. */
            lp->free_x = x->next_free;
            free(x);
        }
        x = malloc(sizeof(*x) + cap);
        if (x == NULL)
            return NULL;
        x->cap = cap;
    }
    memset(x, 0, offsetof(struct xchg, req));
    http_request_reset(&x->req);
    http_response_reset(&x->res);
    x->lp = lp;
    x->cl = cl;
    x->snap = loop_snap_take(lp);
    x->service = -1;
    /* Every exchange has an id from the start, so that even a refusal's page and log line name
     * one; a valid X-Request-Id from the client replaces it once the head is parsed. */
    loop_request_id(lp, x->rid);
    x->rid_len = 32;
    x->start_us = loop_now_us(lp);
    event_base_gettimeofday_cached(lp->base, &tv);
    x->start = tv.tv_sec;
    return x;
}

void
exchange_free(struct xchg *x)
{
    upconn_close(x->u, "the exchange is over");
    x->u = NULL;
    if (x->kept != NULL)
        evbuffer_free(x->kept);
    balancer_set_unref(x->set);
    loop_snap_drop(x->snap);
    x->next_free = x->lp->free_x;
    x->lp->free_x = x;
}

void
exchange_cache_free(struct loop *lp)
{
    while (lp->free_x != NULL) {
        struct xchg *x = lp->free_x;
        lp->free_x = x->next_free;
        free(x);
    }
}

/* The access-log line of the exchange, once. */
static void
exchange_log(struct xchg *x)
{
    char line[4096];
    const struct http_span *ref, *ua;
    size_t n;

    if (x->logged)
        return;
    x->logged = 1;
    uint64_t duration_us = loop_now_us(x->lp) - x->start_us;
    stats_request(x->lp->stats, x->service >= 0 ? x->snap->rt->slots[x->service] : STATS_NO_SERVICE,
                  x->status, duration_us);
    if (!log_access_enabled())
        return; /* nothing of the line is worked out when nobody reads it */
    ref = http_header_find(&x->req.hdrs, "referer");
    ua = http_header_find(&x->req.hdrs, "user-agent");
    struct log_access_rec r = {
        .client = x->cl->ip,
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
        .upstream = x->server != NULL ? server_label(x) : NULL,
        .upstream_status = x->upstream_status,
        .duration_us = duration_us,
        .request_id = x->rid,
    };
    enum log_format fmt = (enum log_format)cfg_of(x)->access_log_format;

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
        loop_log(x->lp, line, n);
}

static void
server_close(struct xchg *x, const char *why)
{
    upconn_close(x->u, why);
    x->u = NULL;
    x->srv_timer = 0;
}

/* Ends the exchange with verdict v. */
static enum step
end(struct xchg *x, enum xchg_verdict v)
{
    exchange_log(x);
    x->phase = PH_END;
    x->verdict = v;
    return S_NEXT;
}

/* Ends the exchange with the client connection to close now: a response cut short, a client
 * that left. */
static enum step
abort_now(struct xchg *x)
{
    server_close(x, "the exchange was cut short");
    end(x, XCHG_ABORT);
    return S_ABORT;
}

/* Answers with an error page of ours; the connection stays open after it only when keep. */
static enum step
respond_error(struct xchg *x, int status, bool keep)
{
    struct half *ch = x->cl->h;
    char page[HTTP_ERROR_MAX];
    unsigned flags = HTTP_ERR_F_HTML;
    size_t n;

    server_close(x, "the client gets an error page instead");
    if (x->req.is_head)
        flags |= HTTP_ERR_F_HEAD;
    if (!keep || x->cl->draining)
        flags |= HTTP_ERR_F_CLOSE;
    n = http_error_write(page, sizeof(page), status, x->rid, x->rid_len, flags);
    evbuffer_add(ch->out, page, n);
    x->status = status;
    if (!(flags & HTTP_ERR_F_HEAD))
        x->bytes = http_error_body(NULL, 0, status, x->rid, x->rid_len, true);
    return end(x, (flags & HTTP_ERR_F_CLOSE) ? XCHG_CLOSE : XCHG_DONE);
}

/* redirect_https: a plain-HTTP request is sent to the same URL over HTTPS. Its body, if any, is
 * not read: the connection closes after the answer unless there is none. */
static enum step
respond_redirect(struct xchg *x)
{
    struct half *ch = x->cl->h;
    bool keep = x->req.framing == HTTP_FRAMING_NONE && !x->cl->draining;
    unsigned flags = keep ? 0 : HTTP_ERR_F_CLOSE;
    size_t cap = x->req.head_len + HEAD_SLACK, n;
    struct evbuffer_iovec v;

    for (;;) {
        if (evbuffer_reserve_space(ch->out, (ev_ssize_t)cap, &v, 1) < 1)
            return abort_now(x);
        n = http_redirect_write(v.iov_base, v.iov_len, x->host, x->snap->rt->https_port, &x->req,
                                x->rid, x->rid_len, flags);
        if (n <= v.iov_len)
            break;
        cap = n;
    }
    v.iov_len = n;
    evbuffer_commit_space(ch->out, &v, 1);
    x->status = 308;
    return end(x, keep ? XCHG_DONE : XCHG_CLOSE);
}

/* Drops the last bytes of buf, keeping its first keep. */
static void
evbuffer_cut(struct evbuffer *buf, size_t keep)
{
    struct evbuffer *rest = evbuffer_new();

    if (rest == NULL) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return;
    }
    evbuffer_remove_buffer(buf, rest, keep);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    evbuffer_add_buffer(buf, rest);
    evbuffer_free(rest);
}

/*
 * The server failed the exchange (status 502 or 504). Before any byte of the final response left
 * for the client, what was queued of it is taken back and the client gets an error page; after,
 * the response can only be cut short: the client connection closes, and the log says so.
 */
static enum step
respond_fail(struct xchg *x, int status, const char *why)
{
    struct half *ch = x->cl->h;

    if (x->res_head) {
        if (ch->nwritten > x->res_start) {
            server_close(x, why);
            log_msg(LOG_WARN, "request %s from %s: response truncated after %llu bytes: %s", x->rid,
                    x->cl->ip, (unsigned long long)(ch->nwritten - x->res_start), why);
            return abort_now(x);
        }
        evbuffer_cut(ch->out, (size_t)(x->res_start - ch->nwritten));
        x->res_head = 0;
        x->bytes = 0;
    }
    return respond_error(x, status, false);
}

/* ---------------------------------------------------------------------------------------------
 * Moving bytes
 */

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

/* Keeps a copy of the first n bytes of src for a retry, while the body stays small enough. */
static void
body_keep(struct xchg *x, struct evbuffer *src, size_t n)
{
    struct evbuffer_iovec v[8];
    struct evbuffer_ptr pos;
    size_t off = 0;

    if (!x->retryable || n == 0)
        return;
    if (x->kept == NULL)
        x->kept = evbuffer_new();
    if (x->kept == NULL || evbuffer_get_length(x->kept) + n > RETRY_BODY_MAX) {
        x->retryable = 0; /* too big to keep: this request is not retried */
        if (x->kept != NULL)
            evbuffer_free(x->kept);
        x->kept = NULL;
        return;
    }
    while (off < n && evbuffer_ptr_set(src, &pos, off, EVBUFFER_PTR_SET) == 0) {
        int nv = evbuffer_peek(src, (ev_ssize_t)(n - off), &pos, v, 8);
        for (int i = 0; i < nv && i < 8 && off < n; i++) {
            size_t len = v[i].iov_len < n - off ? v[i].iov_len : n - off;
            evbuffer_add(x->kept, v[i].iov_base, len);
            off += len;
        }
        if (nv <= 0)
            break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Starting: the head, the route
 */

enum xchg_verdict
exchange_refuse(struct xchg *x, int status, size_t len)
{
    len = len < x->cap ? len : x->cap;
    len = (size_t)evbuffer_copyout(x->cl->h->in, x->head, len);
    http_request_salvage(&x->req, x->head, len);
    respond_error(x, status, false);
    return x->verdict;
}

static bool
idempotent(const struct http_request *req)
{
    /* RFC 9110 9.2.2; TRACE is left out, as portier does not forward what it cannot retry. */
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"};

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (req->method.len == strlen(methods[i]) &&
            memcmp(req->method.p, methods[i], req->method.len) == 0)
            return true;
    }
    return false;
}

enum xchg_verdict
exchange_start(struct xchg *x, size_t len, const struct http_marks *marks)
{
    const struct config *cfg = cfg_of(x);
    size_t hlen = 0;

    if (len > x->cap)
        return exchange_refuse(x, 431, len);
    evbuffer_remove(x->cl->h->in, x->head, len);
    if (http_request_parse_marks(&x->req, x->head, len, marks) < 0) {
        http_request_salvage(&x->req, x->head, len);
        respond_error(x, x->req.error, false);
        return x->verdict;
    }
    if (http_request_id_valid(x->req.request_id.p, x->req.request_id.len)) {
        x->rid_len = x->req.request_id.len;
        memcpy(x->rid, x->req.request_id.p, x->rid_len);
        x->rid[x->rid_len] = '\0';
    }
    if (x->req.has_host) {
        hlen = router_normalize_host(x->host, sizeof(x->host), x->req.host.p, x->req.host.len);
        if (hlen == 0) {
            respond_error(x, 400, false);
            return x->verdict;
        }
    }
    /* An HTTP/1.0 request without Host has no host to match: it goes to the default service. */
    int t = router_lookup(x->snap->rt->router, x->host, hlen, x->req.path.p, x->req.path.len);
    if (t < 0) {
        respond_error(x, 404, x->req.framing == HTTP_FRAMING_NONE);
        return x->verdict;
    }
    x->target = &x->snap->rt->targets[t];
    x->service = x->target->service;
    if (x->target->redirect_https && !x->cl->tls && hlen > 0 && x->snap->rt->https_port != NULL) {
        respond_redirect(x);
        return x->verdict;
    }
    if (http_body_init_flags(&x->reqbody, x->req.framing, x->req.content_length,
                             cfg->limits.max_body_bytes, TRAILER_MAX,
                             HTTP_BODY_F_STOP_TRAILER) < 0) {
        respond_error(x, x->reqbody.error, false);
        return x->verdict;
    }
    x->set = balancer_acquire(x->snap->rt->balancers[x->service]);
    if (balancer_set_size(x->set) == 0) {
        respond_error(x, 503, x->req.framing == HTTP_FRAMING_NONE);
        return x->verdict;
    }
    x->req_done = x->req.framing == HTTP_FRAMING_NONE;
    x->retryable = idempotent(&x->req);
    x->phase = PH_PICK;
    return exchange_run(x);
}

/* ---------------------------------------------------------------------------------------------
 * The server connection: pick, connect, send
 */

static enum step
server_pick(struct xchg *x)
{
    const struct config *cfg = cfg_of(x);
    const struct balancer_server *s = balancer_pick(x->set, loop_now_ms(x->lp), &x->tried);

    if (s == NULL)
        return respond_fail(x, x->timed_out ? 504 : 502, "every server failed");
    if (x->picks++ > 0) {
        struct stats_svc *st = stats_svc(x->lp->stats, x->snap->rt->slots[x->service]);
        if (st != NULL)
            stats_add(&st->retries, 1);
    }
    x->server = s;
    x->srv_timeout = 0;
    /* After a broken connection, the retry takes a fresh one: the pool may hold more like it. */
    x->u = upconn_get(x->lp, x->retried ? NULL : x->lp->pool, balancer_server_addr(s),
                      cfg->timeouts.upstream_connect_ms, x->cl->server_cb, x->cl->owner);
    if (x->u == NULL) {
        int e = errno;

        log_msg(LOG_WARN, "connect to %s: %s", server_label(x), strerror(e));
        /* Out of descriptors or memory here says nothing of the server's health. */
        if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
            balancer_mark_failed(s, loop_now_ms(x->lp));
        x->timed_out = 0;
        return S_NEXT;
    }
    x->phase = x->u->h.connecting ? PH_CONNECTING : PH_SEND;
    return S_NEXT;
}

static enum step
server_connecting(struct xchg *x)
{
    struct half *sh = &x->u->h;

    if (!x->srv_timeout && sh->err == 0) {
        if (sh->connecting)
            return S_WAIT;
        x->phase = PH_SEND;
        return S_NEXT;
    }
    /* Nothing was sent: the next server is safe for any request. */
    log_msg(LOG_WARN, "connect to %s: %s", server_label(x),
            x->srv_timeout ? "connect timeout" : strerror(sh->err));
    balancer_mark_failed(x->server, loop_now_ms(x->lp));
    x->timed_out = x->srv_timeout;
    server_close(x, "the connect failed");
    x->phase = PH_PICK;
    return S_NEXT;
}

static enum step
request_send(struct xchg *x)
{
    const struct config *cfg = cfg_of(x);
    const struct xclient *cl = x->cl;
    struct half *sh = &x->u->h;
    struct http_forward fwd = {
        .client_ip = cl->ip,
        .proto = cl->tls ? "https" : "http",
        .port = cl->port,
        .host = NULL,
        .request_id = x->rid,
        .request_id_len = x->rid_len,
        .flags = 0,
    };
    struct evbuffer_iovec v;
    size_t cap = x->req.head_len + HEAD_SLACK, n;

    half_timer(sh, 0);
    if (config_trusted_proxy(cfg, cl->peer))
        fwd.flags |= HTTP_FWD_F_TRUSTED;
    if (x->req.expect_continue)
        fwd.flags |= HTTP_FWD_F_DROP_EXPECT;
    for (;;) {
        if (evbuffer_reserve_space(sh->out, (ev_ssize_t)cap, &v, 1) < 1)
            return respond_fail(x, 502, "out of memory");
        n = http_request_write(v.iov_base, v.iov_len, &x->req, &fwd);
        if (n <= v.iov_len)
            break;
        cap = n;
    }
    v.iov_len = n;
    evbuffer_commit_space(sh->out, &v, 1);
    /* A retry sends again what the first server was sent of the body. */
    if (x->kept != NULL)
        evbuffer_add_buffer(sh->out, x->kept);
    http_scan_init_marks(&x->rscan, HTTP_SCAN_RESPONSE, RESPONSE_HEAD_MAX, &x->rmarks);
    if (x->req.expect_continue && !x->req_done && !x->continued &&
        evbuffer_get_length(cl->h->in) == 0) {
        /* The client waits for this before it sends the body (RFC 9110 10.1.1). */
        evbuffer_add(cl->h->out, HTTP_CONTINUE, sizeof(HTTP_CONTINUE) - 1);
        x->continued = 1;
    }
    x->sent_us = loop_now_us(x->lp);
    x->phase = PH_PROXY;
    return S_NEXT;
}

/*
 * The server connection broke before a byte of the response came. A request that can be sent
 * again (idempotent, its body kept whole) goes to another server once; the rest get 502 or 504.
 */
static enum step
server_broken(struct xchg *x, const char *why)
{
    struct upconn *u = x->u;
    bool reused = u->reused;

    if (x->retryable && !x->retried && !x->srv_timeout) {
        log_msg(LOG_INFO, "server %s: %s; request %s goes to another server", server_label(x), why,
                x->rid);
        /* A pooled connection the server had closed says nothing of the server's health. */
        if (!reused)
            balancer_mark_failed(x->server, loop_now_ms(x->lp));
        server_close(x, why);
        x->retried = 1;
        x->retryable = 0;
        x->phase = PH_PICK;
        if (balancer_set_size(x->set) == 1 && reused)
            x->tried = 0; /* the only server: a fresh connection to it */
        return S_NEXT;
    }
    log_msg(LOG_WARN, "server %s: %s", server_label(x), why);
    return respond_fail(x, x->srv_timeout ? 504 : 502, why);
}

/* ---------------------------------------------------------------------------------------------
 * Proxying: the request body out, the response back
 */

/*
 * true while h can take more: it holds less than HIGH_WATER unsent, if need be once what it holds
 * has been written. Writing first keeps a peer that keeps up from ever seeing the other side
 * paused (a pause waits for HALF_DRAINED, which comes a turn of the loop later).
 */
static bool
has_room(struct half *h)
{
    if (evbuffer_get_length(h->out) < HIGH_WATER)
        return true;
    (void)half_flush(h); /* a failure shows as h->err to whoever looks next */
    return evbuffer_get_length(h->out) < HIGH_WATER;
}

/* Moves the request body bytes that have arrived to the server, while it takes them. */
static enum step
request_body(struct xchg *x)
{
    struct half *ch = x->cl->h, *sh = &x->u->h;

    while (!x->req_done && evbuffer_get_length(ch->in) > 0 && has_room(sh)) {
        size_t take = 0, used = 0, written = 0;
        int rc;

        if (x->in_trailer) {
            char out[TRAILER_MAX + 2];
            size_t len = evbuffer_get_length(ch->in);
            const char *p;

            len = len < sizeof(out) ? len : sizeof(out);
            p = (const char *)evbuffer_pullup(ch->in, (ev_ssize_t)len);
            rc = http_body_filter_trailer(&x->reqbody, p, len, &x->req.hdrs, out, sizeof(out),
                                          &used, &written);
            if (rc == 0)
                break;
            if (rc > 0) {
                evbuffer_drain(ch->in, used);
                evbuffer_add(sh->out, out, written);
                if (x->retryable && x->kept != NULL)
                    evbuffer_add(x->kept, out, written);
                x->req_done = 1;
                break;
            }
        } else {
            rc = iobuf_feed(ch->in, 0, body_fn, &x->reqbody, &take);
            if (rc >= 0) {
                body_keep(x, ch->in, take);
                evbuffer_remove_buffer(ch->in, sh->out, take);
            }
            if (rc == 0)
                break;
            if (rc == 1)
                x->req_done = 1;
            if (rc == HTTP_BODY_TRAILER)
                x->in_trailer = 1;
            if (rc > 0)
                continue;
        }
        log_msg(LOG_INFO, "client %s: bad request body: %s", x->cl->ip, x->reqbody.why);
        if (!x->res_head)
            return respond_error(x, x->reqbody.error, false);
        return abort_now(x);
    }
    if (!x->req_done && ch->eof && evbuffer_get_length(ch->in) == 0) {
        log_msg(LOG_INFO, "request %s from %s: the client closed before its body was complete",
                x->rid, x->cl->ip);
        if (x->status == 0)
            x->status = 499; /* nginx's "client closed request", for the log */
        return abort_now(x);
    }
    return S_WAIT;
}

/* Parses response heads (interim ones are relayed) until the final one goes to the client. */
static enum step
response_head(struct xchg *x)
{
    const struct xclient *cl = x->cl;
    struct half *ch = cl->h, *sh = &x->u->h;

    for (;;) {
        size_t len = evbuffer_get_length(sh->in), max;
        const char *p;
        int rc;

        max = len < RESPONSE_HEAD_MAX ? len : RESPONSE_HEAD_MAX;
        if (len == 0)
            break;
        p = (const char *)evbuffer_pullup(sh->in, (ev_ssize_t)max);
        rc = http_scan_head(&x->rscan, p, max);
        if (rc == 0 && max == RESPONSE_HEAD_MAX) {
            log_msg(LOG_WARN, "server %s: response head over %d bytes", server_label(x),
                    RESPONSE_HEAD_MAX);
            return respond_fail(x, 502, "response head too large");
        }
        if (rc == 0)
            break;
        if (rc < 0 ||
            http_response_parse_marks(&x->res, p, x->rscan.len,
                                      (x->req.is_head ? HTTP_RSP_F_HEAD : 0) |
                                          (x->req.upgrade_websocket ? HTTP_RSP_F_UPGRADE : 0),
                                      &x->rmarks) < 0) {
            const char *why = rc < 0 ? x->rscan.why : x->res.why;

            log_msg(LOG_WARN, "server %s: bad response: %s", server_label(x), why);
            return respond_fail(x, 502, why);
        }
        x->upstream_status = x->res.status;
        if (!x->res.interim) {
            struct stats_svc *st = stats_svc(x->lp->stats, x->snap->rt->slots[x->service]);
            if (st != NULL)
                stats_observe(&st->upstream, loop_now_us(x->lp) - x->sent_us);
        }
        if (x->res.interim && ++x->ninterim > INTERIM_MAX) {
            log_msg(LOG_WARN, "server %s: more than %d interim responses", server_label(x),
                    INTERIM_MAX);
            return respond_fail(x, 502, "too many interim responses");
        }
        /* A response that came before the whole request did leaves the client stream unframed;
         * a client that has closed its side and sent nothing more gets its last answer. */
        bool keep = !cl->draining && x->req_done && !(ch->eof && evbuffer_get_length(ch->in) == 0);
        x->res_flags = http_response_flags(&x->req, &x->res, keep);
        if (cl->tls && !x->res.interim)
            x->res.hsts_max_age = x->target->hsts_ms / 1000;
        if (!x->res.interim)
            x->res_start = ch->nwritten + evbuffer_get_length(ch->out);
        if (!(x->res_flags & HTTP_RES_F_SKIP)) {
            struct evbuffer_iovec v;
            size_t cap = x->rscan.len + HEAD_SLACK, n;
            for (;;) {
                if (evbuffer_reserve_space(ch->out, (ev_ssize_t)cap, &v, 1) < 1)
                    return respond_fail(x, 502, "out of memory");
                n = http_response_write(v.iov_base, v.iov_len, &x->res, x->res_flags);
                if (n <= v.iov_len)
                    break;
                cap = n;
            }
            v.iov_len = n;
            evbuffer_commit_space(ch->out, &v, 1);
        }
        evbuffer_drain(sh->in, x->rscan.len);
        if (x->res.interim) {
            http_scan_init_marks(&x->rscan, HTTP_SCAN_RESPONSE, RESPONSE_HEAD_MAX, &x->rmarks);
            continue;
        }
        x->res_head = 1;
        x->status = x->res.status;
        if (x->res.upgrade_websocket) {
            x->phase = PH_TUNNEL;
            return S_NEXT;
        }
        if (http_body_init(&x->resbody, x->res.framing, x->res.content_length, 0, TRAILER_MAX) < 0)
            return respond_fail(x, 502, "bad response body framing");
        return S_NEXT;
    }
    /* No complete head yet. */
    if (sh->err != 0 || sh->eof) {
        if (x->rscan.len > 0 || evbuffer_get_length(sh->in) > 0 || x->ninterim > 0) {
            log_msg(LOG_WARN, "server %s: closed in the middle of a response head",
                    server_label(x));
            return respond_fail(x, 502, "server closed mid-head");
        }
        return server_broken(x, sh->err != 0 ? strerror(sh->err) : "server closed the connection");
    }
    if (x->srv_timeout) {
        log_msg(LOG_WARN, "server %s: response timeout", server_label(x));
        return respond_fail(x, 504, "response timeout");
    }
    return S_WAIT;
}

/* The response is complete: the server connection goes back to the pool if it can. */
static enum step
finish(struct xchg *x, bool reuse)
{
    struct upconn *u = x->u;
    bool close_client = (x->res_flags & HTTP_RES_F_CLOSE) || !x->req_done;

    x->u = NULL;
    if (reuse && x->req_done && x->res.keep_alive) {
        half_timer(&u->h, 0);
        balancer_mark_ok(x->server);
        upconn_release(u);
    } else {
        upconn_close(u, "not reusable after this response");
    }
    return end(x, close_client ? XCHG_CLOSE : XCHG_DONE);
}

/* Moves response body bytes to the client; finishes the exchange at the end of the body. */
static enum step
response_body(struct xchg *x)
{
    struct half *ch = x->cl->h, *sh = &x->u->h;
    struct dechunk d = {&x->resbody, ch->out, &x->bytes};
    size_t take = 0;
    int rc;

    if (http_body_done(&x->resbody))
        rc = 1; /* HEAD, 204, 304, Content-Length: 0: the head was the whole response */
    else if (x->res_flags & HTTP_RES_F_DECHUNK)
        rc = iobuf_feed(sh->in, 0, dechunk_fn, &d, &take);
    else
        rc = iobuf_feed(sh->in, 0, body_fn, &x->resbody, &take);
    if (rc < 0) {
        log_msg(LOG_WARN, "server %s: bad response body: %s", server_label(x), x->resbody.why);
        return respond_fail(x, 502, x->resbody.why);
    }
    if (x->res_flags & HTTP_RES_F_DECHUNK) {
        evbuffer_drain(sh->in, take);
    } else if (take > 0) {
        body_move(sh->in, ch->out, take);
        x->bytes += take;
    }
    if (rc == 1)
        return finish(x, !sh->eof && evbuffer_get_length(sh->in) == 0);
    if (sh->eof || sh->err != 0) {
        if (sh->err == 0 && http_body_eof(&x->resbody) == 0)
            return finish(x, false); /* a body delimited by the close */
        log_msg(LOG_WARN, "server %s: closed in the middle of a response body", server_label(x));
        return respond_fail(x, 502, "server closed mid-body");
    }
    if (x->srv_timeout) {
        log_msg(LOG_WARN, "server %s: response timeout in the middle of the body", server_label(x));
        return respond_fail(x, 504, "response timeout");
    }
    return S_WAIT;
}

/*
 * The server connection's timer: upstream_response while portier waits for the server (the
 * request is out, or the server is not taking it), re-armed whenever the server moves; off while
 * it waits for the client (a body still coming, a response the client is slow to take).
 */
static void
server_timer(struct xchg *x)
{
    struct half *sh = &x->u->h, *ch = x->cl->h;
    uint64_t mark = sh->nread + sh->nwritten;
    bool waiting =
        !sh->read_paused && (x->req_done || evbuffer_get_length(sh->out) > 0 || x->res_head);

    (void)ch;
    if (!waiting) {
        if (x->srv_timer)
            half_timer(sh, 0);
        x->srv_timer = 0;
        return;
    }
    if (x->srv_timer && mark == x->srv_mark)
        return;
    half_timer(sh, cfg_of(x)->timeouts.upstream_response_ms);
    x->srv_timer = 1;
    x->srv_mark = mark;
}

/*
 * A slow client: reading the server waits while the client has more than HIGH_WATER unsent. The
 * client is written to first, so that one that keeps up never sees the server paused; one that
 * does not resumes it once its buffer drains (HALF_DRAINED runs the exchange again).
 */
static void
server_pace(struct xchg *x)
{
    half_pause_read(&x->u->h, !has_room(x->cl->h));
}

static enum step
proxy(struct xchg *x)
{
    struct half *sh;
    enum step s;

    if (!x->req_done && (s = request_body(x)) != S_WAIT)
        return s;
    sh = &x->u->h;
    if (half_flush(sh) < 0 && !x->res_head && sh->nread == 0)
        return server_broken(x, strerror(sh->err));
    if (!x->res_head) {
        s = response_head(x);
        if (s != S_WAIT || x->phase != PH_PROXY)
            return s;
        if (!x->res_head)
            goto wait;
    }
    s = response_body(x);
    if (s != S_WAIT)
        return s;
wait:
    server_pace(x);
    server_timer(x);
    return S_WAIT;
}

/* ---------------------------------------------------------------------------------------------
 * After 101 Switching Protocols: bytes both ways until both sides are done
 */

static enum step
tunnel(struct xchg *x)
{
    struct half *ch = x->cl->h, *sh = &x->u->h;
    uint64_t mark;

    if (x->srv_timeout) {
        log_msg(LOG_INFO, "tunnel %s <-> %s: idle for upstream_response; closed", x->cl->ip,
                server_label(x));
        server_close(x, "the tunnel was idle");
        return end(x, XCHG_CLOSE);
    }
    /* What the client sent behind its upgrade request, and all it sends after, to the server. */
    if (evbuffer_get_length(ch->in) > 0 && has_room(sh))
        evbuffer_add_buffer(sh->out, ch->in);
    if (half_flush(sh) < 0 || (sh->eof && evbuffer_get_length(sh->in) == 0)) {
        /* The server is done: the client gets what is queued, then the close. */
        server_close(x, "the tunnel is over");
        return end(x, XCHG_CLOSE);
    }
    if (ch->eof && evbuffer_get_length(ch->in) == 0)
        half_shutdown_write(sh);
    if (evbuffer_get_length(sh->in) > 0) {
        x->bytes += evbuffer_get_length(sh->in);
        evbuffer_add_buffer(ch->out, sh->in);
    }
    server_pace(x);
    /* Every wait has a timer: an idle tunnel is closed after upstream_response. */
    mark = sh->nread + sh->nwritten + ch->nread + ch->nwritten;
    if (!x->srv_timer || mark != x->srv_mark) {
        half_timer(sh, cfg_of(x)->timeouts.upstream_response_ms);
        x->srv_timer = 1;
        x->srv_mark = mark;
    }
    return S_WAIT;
}

/* ---------------------------------------------------------------------------------------------
 * Driving
 */

enum xchg_verdict
exchange_run(struct xchg *x)
{
    for (;;) {
        enum step s;

        switch (x->phase) {
        case PH_PICK:
            s = server_pick(x);
            break;
        case PH_CONNECTING:
            s = server_connecting(x);
            break;
        case PH_SEND:
            s = request_send(x);
            break;
        case PH_PROXY:
            s = proxy(x);
            break;
        case PH_TUNNEL:
            s = tunnel(x);
            break;
        case PH_END:
        default:
            return x->verdict;
        }
        if (s == S_WAIT)
            return XCHG_WAIT;
        if (s == S_ABORT)
            return XCHG_ABORT;
    }
}

void
exchange_server_event(struct xchg *x, enum half_event ev)
{
    if (ev == HALF_TIMEOUT)
        x->srv_timeout = 1;
}

bool
exchange_wants_body(const struct xchg *x)
{
    /* While the server holds a backlog of the body, the wait is for the server, not the client. */
    return x->phase != PH_END && x->phase != PH_TUNNEL && !x->req_done &&
           (x->u == NULL || evbuffer_get_length(x->u->h.out) < HIGH_WATER);
}

enum xchg_verdict
exchange_body_timeout(struct xchg *x)
{
    log_msg(LOG_INFO, "client %s: no request body for client_body; request %s ends", x->cl->ip,
            x->rid);
    if (respond_fail(x, 408, "client body timeout") == S_ABORT)
        return XCHG_ABORT;
    return x->verdict;
}

void
exchange_abort(struct xchg *x, const char *why)
{
    if (x->phase == PH_END) {
        server_close(x, "the client connection closed"); /* over already, and logged */
        return;
    }
    if (why != NULL)
        log_msg(LOG_INFO, "request %s from %s: %s (while in %s)", x->rid, x->cl->ip, why,
                phase_names[x->phase]);
    server_close(x, "the client connection closed first");
    if (x->status == 0)
        x->status = 499; /* nginx's "client closed request", for the log */
    exchange_log(x);
    x->phase = PH_END;
    x->verdict = XCHG_ABORT;
}
