/*
 * The apps' web server: one libevent loop, plain read()/write() on non-blocking sockets,
 * http-parser for requests, keep-alive and pipelining, and a drain on SIGTERM. Pages themselves
 * come from page.c.
 *
 * It is written for speed because the apps sit behind the proxy in every benchmark: no allocation
 * per request, one read and one write per batch of requests, no timer re-armed per request (a
 * once-a-second sweep enforces the idle timeout instead).
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

#include "addr.h"
#include "app.h"
#include "page.h"
#include "wbuf.h"

#define DEFAULT_LISTEN "0.0.0.0:8080"
#define CONN_IN_CAP 8192
#define CONN_OUT_CAP 32768
/* Room a response needs in the output buffer: the largest body plus its head. */
#define RESPONSE_RESERVE (PAGE_MAX_BODY + 512)
/* Longer than any sensible client's keep-alive (the proxy's pool uses less), like nginx's 75s. */
#define IDLE_TIMEOUT_S 75
#define DRAIN_TIMEOUT_S 20
#define URL_CAP 2048

struct server;

/* One client connection. Owned by the server's list; freed only by conn_close(). */
struct conn {
    int fd;
    struct server *srv; /* borrowed */
    struct event rev;   /* EV_READ|EV_PERSIST, added while the connection may read */
    struct event wev;   /* EV_WRITE|EV_PERSIST, added only while output is blocked */
    http_parser parser;
    struct conn *prev, *next;
    time_t last_active;
    unsigned in_message : 1;  /* a request has begun and not yet been answered */
    unsigned close_after : 1; /* close once the output is flushed and no request is pending */
    unsigned field_is_host : 1;
    unsigned in_value : 1;  /* the last header callback was a value (the next field is a new one) */
    unsigned url_long : 1;  /* the URL did not fit in url[] */
    unsigned url_query : 1; /* the '?' was seen: the rest of the URL is not kept */
    unsigned saw_host : 1;  /* a Host header was seen in this request */
    size_t url_len, host_len, field_len;
    size_t in_off, in_len;   /* in[in_off..in_len) is read but not yet parsed (parser paused) */
    size_t out_off, out_len; /* out[out_off..out_len) is waiting to be written */
    char field[8];           /* enough of a header name to tell "host" from the rest */
    char url[URL_CAP];
    char host[PAGE_MAX_FIELD + 1];
    char in[CONN_IN_CAP];
    char out[CONN_OUT_CAP];
};

struct server {
    const struct app_def *def; /* borrowed, static */
    struct event_base *base;
    int lfd;
    struct event *accept_ev;
    struct event *accept_resume; /* re-enables accept after running out of descriptors */
    struct event *sweep;
    struct event *sig_term, *sig_int;
    struct conn *conns;
    unsigned nconns;
    int draining;
    time_t drain_deadline;
    uint64_t served;
    time_t clock;  /* the second that the two strings below show */
    char iso[32];  /* "2026-11-26T00:40:12Z" */
    char http[40]; /* "Thu, 26 Nov 2026 00:40:12 GMT" */
    char pod[PAGE_MAX_FIELD + 1];
    char ip[64];
    char body[PAGE_MAX_BODY]; /* scratch for the page being rendered: one loop, one response at a
                                 time */
    http_parser_settings settings;
};

static void conn_close(struct conn *c, const char *why);
static int conn_flush(struct conn *c);

/* The current second from libevent's cached loop time; formats the two date strings when it
 * changes. */
static void
server_clock(struct server *s)
{
    struct timeval tv;
    struct tm tm;

    event_base_gettimeofday_cached(s->base, &tv);
    if (tv.tv_sec == s->clock)
        return;
    s->clock = tv.tv_sec;
    gmtime_r(&s->clock, &tm);
    strftime(s->iso, sizeof(s->iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
    strftime(s->http, sizeof(s->http), "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Appends a string to a bounded buffer of the connection, keeping only what fits and noting
 * overflow. */
static void
append(char *dst, size_t cap, size_t *len, const char *s, size_t n, unsigned *overflow)
{
    if (n > cap - *len) {
        n = cap - *len;
        if (overflow != NULL)
            *overflow = 1;
    }
    memcpy(dst + *len, s, n);
    *len += n;
}

static int
on_message_begin(http_parser *p)
{
    struct conn *c = p->data;

    c->in_message = 1;
    c->url_len = c->host_len = c->field_len = 0;
    c->url_long = c->url_query = c->field_is_host = c->in_value = c->saw_host = 0;
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    unsigned long_url = c->url_long;

    /* The query never matters for routing, so only what precedes it is kept: a long query is fine.
     */
    if (c->url_query)
        return 0;
    const char *q = memchr(at, '?', n);
    if (q != NULL) {
        n = (size_t)(q - at);
        c->url_query = 1;
    }
    append(c->url, sizeof(c->url) - 1, &c->url_len, at, n, &long_url);
    c->url_long = long_url;
    return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;

    if (c->in_value) {
        c->in_value = 0;
        c->field_len = 0;
    }
    append(c->field, sizeof(c->field), &c->field_len, at, n, NULL);
    /* A name longer than the buffer is cut; "host" needs exactly four bytes, so compare the length.
     */
    c->field_is_host = c->field_len == 4 && strncasecmp(c->field, "host", 4) == 0;
    return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;

    if (!c->in_value) {
        c->in_value = 1;
        /* Only the first Host header counts; the parts of one value may come in several calls. */
        if (c->field_is_host && c->saw_host)
            c->field_is_host = 0;
        if (c->field_is_host)
            c->saw_host = 1;
    }
    if (c->field_is_host)
        append(c->host, sizeof(c->host) - 1, &c->host_len, at, n, NULL);
    return 0;
}

enum route { ROUTE_PAGE, ROUTE_INFO, ROUTE_HEALTH, ROUTE_NONE };

/* The path of the request target: origin-form up to '?', or the path part of an absolute-form URI.
 */
static enum route
route_of(struct conn *c)
{
    const char *path = c->url;
    size_t len = c->url_len;

    if (c->url_long)
        return ROUTE_NONE;
    c->url[c->url_len] = '\0';
    if (path[0] != '/') {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(c->url, c->url_len, 0, &u) != 0)
            return ROUTE_NONE;
        if (!(u.field_set & (1 << UF_PATH)))
            return ROUTE_PAGE;
        path = c->url + u.field_data[UF_PATH].off;
        len = u.field_data[UF_PATH].len;
    }
    const char *q = memchr(path, '?', len);
    if (q != NULL)
        len = (size_t)(q - path);
    if (len == 1 && path[0] == '/')
        return ROUTE_PAGE;
    if (len == 9 && memcmp(path, "/api/info", 9) == 0)
        return ROUTE_INFO;
    if (len == 8 && memcmp(path, "/healthz", 8) == 0)
        return ROUTE_HEALTH;
    return ROUTE_NONE;
}

/*
 * Appends one whole response to the connection's output. body may be NULL for HEAD, where len is
 * still the length a GET would get. Returns 0, or -1 if it does not fit (the caller reserved room,
 * so it does).
 */
static int
respond(struct conn *c, const char *status, const char *type, const char *extra, const char *body,
        size_t len)
{
    struct server *s = c->srv;
    struct wbuf w;

    server_clock(s);
    wbuf_init(&w, c->out, c->out_len, sizeof(c->out));
    wbuf_str(&w, "HTTP/1.1 ");
    wbuf_str(&w, status);
    wbuf_str(&w, "\r\nServer: ");
    wbuf_str(&w, s->def->name);
    wbuf_str(&w, "\r\nDate: ");
    wbuf_str(&w, s->http);
    wbuf_str(&w, "\r\nContent-Type: ");
    wbuf_str(&w, type);
    wbuf_str(&w, "\r\nContent-Length: ");
    wbuf_u64(&w, len);
    wbuf_str(&w, "\r\nCache-Control: no-store\r\n");
    wbuf_str(&w, extra);
    if (c->close_after)
        wbuf_str(&w, "Connection: close\r\n");
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        wbuf_str(&w, "Connection: keep-alive\r\n");
    wbuf_str(&w, "\r\n");
    if (body != NULL)
        wbuf_raw(&w, body, len);
    if (wbuf_full(&w))
        return -1;
    c->out_len = w.len;
    return 0;
}

static const char not_found[] = "404 Not Found\n";
static const char not_allowed[] = "405 Method Not Allowed: use GET or HEAD\n";
static const char bad_request[] = "400 Bad Request\n";
static const char health_ok[] = "ok\n";

static int
on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct server *s = c->srv;
    int head = p->method == HTTP_HEAD;
    enum route r = route_of(c);

    c->in_message = 0;
    if (!http_should_keep_alive(p) || s->draining)
        c->close_after = 1;

    int rc;
    if (r == ROUTE_NONE) {
        rc = respond(c, "404 Not Found", "text/plain; charset=utf-8", "", head ? NULL : not_found,
                     sizeof(not_found) - 1);
    } else if (p->method != HTTP_GET && !head) {
        rc = respond(c, "405 Method Not Allowed", "text/plain; charset=utf-8",
                     "Allow: GET, HEAD\r\n", not_allowed, sizeof(not_allowed) - 1);
    } else if (r == ROUTE_HEALTH) {
        rc = respond(c, "200 OK", "text/plain; charset=utf-8", "", head ? NULL : health_ok,
                     sizeof(health_ok) - 1);
    } else {
        /* Health probes are not visitors; only pages count as served requests. */
        s->served++;
        server_clock(s);
        c->host[c->host_len] = '\0';
        struct page_vars v = {s->pod, s->ip, c->host, s->iso, s->served};
        size_t len = r == ROUTE_PAGE ? page_html(s->body, sizeof(s->body), s->def, &v)
                                     : page_json(s->body, sizeof(s->body), s->def, &v);
        const char *type = r == ROUTE_PAGE ? "text/html; charset=utf-8" : "application/json";
        rc = respond(c, "200 OK", type, "", head ? NULL : s->body, len);
    }
    if (rc < 0 || c->close_after || sizeof(c->out) - c->out_len < RESPONSE_RESERVE) {
        /* Stop parsing until the output drains (or for good, when closing): bounded memory per
         * client. */
        http_parser_pause(p, 1);
    }
    return 0;
}

/*
 * Parses what is buffered and answers every complete request, then writes. Returns -1 if the
 * connection was closed (c is gone), 0 otherwise.
 */
static int
conn_process(struct conn *c)
{
    while (c->in_off < c->in_len && !(c->close_after && !c->in_message)) {
        size_t n = http_parser_execute(&c->parser, &c->srv->settings, c->in + c->in_off,
                                       c->in_len - c->in_off);
        c->in_off += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            if (sizeof(c->out) - c->out_len < RESPONSE_RESERVE)
                break; /* resumed by conn_flush() once written */
            continue;
        }
        if (e != HPE_OK) {
            c->in_message = 0;
            c->close_after = 1;
            respond(c, "400 Bad Request", "text/plain; charset=utf-8", "", bad_request,
                    sizeof(bad_request) - 1);
            break;
        }
        if (c->parser.upgrade) {
            /* What follows is another protocol that these apps do not speak; answer and close. */
            c->close_after = 1;
            break;
        }
    }
    if (c->close_after && !c->in_message)
        c->in_off = c->in_len; /* whatever follows a last response is never read */
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    return conn_flush(c);
}

/* Writes what it can. Returns -1 if the connection was closed, 0 otherwise. */
static int
conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* Back-pressure: stop reading until the client takes what it asked for. */
                event_del(&c->rev);
                event_add(&c->wev, NULL);
                return 0;
            }
            conn_close(c, "write failed");
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    if (c->close_after && !c->in_message) {
        conn_close(c, NULL);
        return -1;
    }
    if (c->in_off < c->in_len)
        return conn_process(c); /* requests pipelined behind the ones just written */
    return 0;
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    c->last_active = c->srv->clock;
    event_del(&c->wev);
    if (conn_flush(c) == 0 && c->out_len == 0)
        event_add(&c->rev, NULL);
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;

    (void)what;
    if (c->in_off > 0) {
        /* Keep unparsed bytes at the front so that the whole buffer is free for the next read. */
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_len == sizeof(c->in))
        return; /* parsing is paused on a full buffer; conn_flush() resumes it */
    do {
        n = read(fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_close(c, NULL);
        return;
    }
    server_clock(c->srv);
    c->last_active = c->srv->clock;
    if (n == 0) {
        /* End of input: a request cut short is dropped; answers already queued are still sent. */
        c->in_message = 0;
        c->close_after = 1;
        conn_flush(c);
        return;
    }
    c->in_len += (size_t)n;
    conn_process(c);
}

static void
conn_close(struct conn *c, const char *why)
{
    struct server *s = c->srv;

    if (why != NULL)
        fprintf(stderr, "%s: closing a connection: %s\n", s->def->name, why);
    event_del(&c->rev);
    event_del(&c->wev);
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
    free(c);
    if (s->draining && s->nconns == 0)
        event_base_loopbreak(s->base);
}

static void
conn_new(struct server *s, int fd)
{
    struct conn *c = malloc(sizeof(*c));
    int one = 1;

    if (c == NULL) {
        fprintf(stderr, "%s: out of memory for a connection\n", s->def->name);
        close(fd);
        return;
    }
    /* The buffers are left uninitialised: only their counted prefixes are ever read. */
    memset(c, 0, offsetof(struct conn, url));
    c->fd = fd;
    c->srv = s;
    c->last_active = s->clock;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    event_assign(&c->rev, s->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    event_assign(&c->wev, s->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    event_add(&c->rev, NULL);
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct server *s = arg;

    (void)what;
    server_clock(s);
    for (int i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(s, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            /* Out of descriptors: stop accepting for a moment rather than spin on the listener. */
            struct timeval one_second = {1, 0};
            fprintf(stderr, "%s: out of file descriptors, pausing accept for 1s\n", s->def->name);
            event_del(s->accept_ev);
            evtimer_add(s->accept_resume, &one_second);
        }
        return;
    }
}

static void
accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;

    (void)fd;
    (void)what;
    if (!s->draining)
        event_add(s->accept_ev, NULL);
}

/* Once a second: idle connections past the timeout are closed, and a drain past its deadline ends.
 */
static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct conn *c, *next;

    (void)fd;
    (void)what;
    server_clock(s);
    if (s->draining && s->clock >= s->drain_deadline) {
        fprintf(stderr, "%s: drain timed out with %u connection(s) open\n", s->def->name,
                s->nconns);
        event_base_loopbreak(s->base);
        return;
    }
    for (c = s->conns; c != NULL; c = next) {
        next = c->next;
        if (s->clock - c->last_active >= IDLE_TIMEOUT_S)
            conn_close(c, NULL);
    }
}

/* SIGTERM/SIGINT: stop listening, close idle connections, let the others finish their request. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    struct conn *c, *next;

    (void)what;
    if (s->draining)
        return;
    fprintf(stderr, "%s: %s, draining %u connection(s)\n", s->def->name,
            sig == SIGTERM ? "SIGTERM" : "SIGINT", s->nconns);
    s->draining = 1;
    server_clock(s);
    s->drain_deadline = s->clock + DRAIN_TIMEOUT_S;
    event_del(s->accept_ev);
    event_del(s->accept_resume);
    close(s->lfd);
    s->lfd = -1;
    for (c = s->conns; c != NULL; c = next) {
        next = c->next;
        c->close_after = 1;
        if (!c->in_message && c->out_len == 0)
            conn_close(c, NULL);
    }
    if (s->nconns == 0)
        event_base_loopbreak(s->base);
}

/* Opens the listening socket. Returns the descriptor, or -1 with the reason printed. */
static int
server_listen(const char *name, const char *spec, char *ip, size_t ipcap)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[160];
    int fd, one = 1;

    if (addr_parse(spec, &ss, &len, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: bad LISTEN: %s\n", name, err);
        return -1;
    }
    addr_host((struct sockaddr *)&ss, ip, ipcap);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", name, strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 1024) < 0) {
        fprintf(stderr, "%s: cannot listen on %s: %s\n", name, spec, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Fills pod and ip from the environment, falling back to the hostname and the listening address. */
static void
server_identity(struct server *s)
{
    const char *pod = getenv("POD_NAME"), *ip = getenv("POD_IP");

    if (pod != NULL && *pod != '\0')
        snprintf(s->pod, sizeof(s->pod), "%s", pod);
    else if (gethostname(s->pod, sizeof(s->pod)) != 0)
        snprintf(s->pod, sizeof(s->pod), "%s", "unknown");
    s->pod[sizeof(s->pod) - 1] = '\0';
    if (ip != NULL && *ip != '\0')
        snprintf(s->ip, sizeof(s->ip), "%s", ip);
}

static void
server_free(struct server *s)
{
    struct conn *c, *next;

    for (c = s->conns; c != NULL; c = next) {
        next = c->next;
        conn_close(c, NULL);
    }
    if (s->lfd >= 0)
        close(s->lfd);
    event_free(s->accept_ev);
    event_free(s->accept_resume);
    event_free(s->sweep);
    event_free(s->sig_term);
    event_free(s->sig_int);
    event_base_free(s->base);
    free(s);
}

int
app_main(const struct app_def *def)
{
    const char *spec = getenv("LISTEN");
    struct timeval one_second = {1, 0};
    struct server *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return 1;
    if (spec == NULL || *spec == '\0')
        spec = DEFAULT_LISTEN;
    s->def = def;
    s->lfd = server_listen(def->name, spec, s->ip, sizeof(s->ip));
    if (s->lfd < 0) {
        free(s);
        return 1;
    }
    server_identity(s);
    signal(SIGPIPE, SIG_IGN);
    s->base = event_base_new();
    if (s->base == NULL) {
        fprintf(stderr, "%s: cannot create the event loop\n", def->name);
        close(s->lfd);
        free(s);
        return 1;
    }
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_message_complete = on_message_complete;
    s->accept_ev = event_new(s->base, s->lfd, EV_READ | EV_PERSIST, accept_cb, s);
    s->accept_resume = evtimer_new(s->base, accept_resume_cb, s);
    s->sweep = event_new(s->base, -1, EV_PERSIST, sweep_cb, s);
    s->sig_term = evsignal_new(s->base, SIGTERM, signal_cb, s);
    s->sig_int = evsignal_new(s->base, SIGINT, signal_cb, s);
    if (s->accept_ev == NULL || s->accept_resume == NULL || s->sweep == NULL ||
        s->sig_term == NULL || s->sig_int == NULL) {
        fprintf(stderr, "%s: cannot set up events\n", def->name);
        server_free(s);
        return 1;
    }
    event_add(s->accept_ev, NULL);
    event_add(s->sweep, &one_second);
    evsignal_add(s->sig_term, NULL);
    evsignal_add(s->sig_int, NULL);
    fprintf(stderr, "%s: listening on %s (pod %s, ip %s)\n", def->name, spec, s->pod, s->ip);
    event_base_dispatch(s->base);
    /* Freeing the signal events restores the default action; a late second SIGTERM must not kill
     * a process that is exiting cleanly. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    fprintf(stderr, "%s: stopped after %llu request(s)\n", def->name,
            (unsigned long long)s->served);
    server_free(s);
    return 0;
}
