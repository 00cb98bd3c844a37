/*
 * openloop: an open-loop HTTP/1.1 load generator, as wrk2 does it (wrk2 is not in Debian), for the
 * latency-at-a-given-rate rows of bench/run.sh (issue 15); it leaves the choice of rates, and what
 * the figures mean for the proxies, to the bench.
 *
 * Usage: openloop -r RATE -d SECONDS -c CONNS [-H 'Name: value']... [-p PATH] [-w WARMUP] IPV4 PORT
 *
 * Request i (GET PATH, keep-alive) is due at start + i / RATE, whatever the answers. It goes out on
 * an idle one of the CONNS connections (one request in flight per connection, no pipelining); when
 * none is idle it waits in a queue and goes out on the first connection that frees up, and its
 * latency still counts from its due time: a server that stalls is charged for every request that
 * was due during the stall, not only for the CONNS that were in flight ("coordinated omission").
 * The start is when the first connections are up (each connect waits at most 2 s); the requests
 * due in the first WARMUP seconds (default 0) are sent but left out of every figure. The run stops
 * by itself 2 s after the last request was due (at most WARMUP + SECONDS + 4 s in all).
 *
 * Prints one line to stdout, space-separated:
 *   target_rate achieved_rate p50_ms p99_ms p999_ms max_ms requests errors
 * target_rate is RATE; requests the measured requests that got a whole response (any status);
 * achieved_rate those per second, over SECONDS or until the last of them was answered if that was
 * later; p50/p99/p999/max their latency from due time to the response's last byte (a log-linear
 * histogram: 1 µs steps below 1 ms, then steps under 0.8% apart); errors the measured requests
 * answered with a status outside 2xx, plus those that got no whole answer (the connection failed
 * or was closed first, dropped because more than 2 * RATE requests were waiting, or unanswered at
 * the end), plus the connects that failed after the warm-up. Details go to stderr.
 * Exits 0 when the run happened (even with errors), 1 when no connection could be opened at the
 * start (the line is printed all the same, its errors the CONNS failed connects), 2 on bad
 * arguments.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1 /* POSIX (clock_gettime, getopt) and strncasecmp, whatever -D says */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN 8192 /* the longest status, header, chunk-size or trailer line taken */
#define REQUEST_MAX 8192  /* the request, headers included */
#define CONNECT_TIMEOUT_US 2000000 /* a connect that hangs (a full backlog) fails after this */
#define RETRY_DELAY_US 100000      /* after a failed connect: not a busy loop against a dead port */
#define GRACE_US 2000000           /* after the last due time, for the answers still on their way */
#define NS 1000000000ULL

/* ---- The latency histogram: fixed buckets, no allocation per request. ---- */

/* Latencies in µs: one bucket per µs below 1024 µs, then 128 buckets per power of two (so a
 * bucket is less than 0.8% wide) up to 2^26 µs (67 s); longer ones share the last bucket, and the
 * exact maximum is kept aside. */
#define HIST_LINEAR 1024
#define HIST_LINEAR_EXP 10
#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_TOP_EXP 26
#define HIST_BUCKETS (HIST_LINEAR + (HIST_TOP_EXP - HIST_LINEAR_EXP) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_us;
};

static int
hist_index(uint64_t us)
{
    int e;

    if (us < HIST_LINEAR)
        return (int)us;
    e = 63 - __builtin_clzll(us); /* floor(log2(us)), at least HIST_LINEAR_EXP */
    if (e >= HIST_TOP_EXP)
        return HIST_BUCKETS - 1;
    return HIST_LINEAR + (e - HIST_LINEAR_EXP) * HIST_SUB +
           (int)((us >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The highest value bucket i holds: percentiles err on the high side, as HdrHistogram's do. */
static uint64_t
hist_value(int i)
{
    int e, sub;

    if (i < HIST_LINEAR)
        return (uint64_t)i;
    e = HIST_LINEAR_EXP + (i - HIST_LINEAR) / HIST_SUB;
    sub = (i - HIST_LINEAR) % HIST_SUB;
    return ((uint64_t)(HIST_SUB + sub + 1) << (e - HIST_SUB_BITS)) - 1;
}

static void
hist_record(struct hist *h, uint64_t us)
{
    h->counts[hist_index(us)]++;
    h->total++;
    if (us > h->max_us)
        h->max_us = us;
}

/* The latency (µs) that a fraction p of the recorded ones do not exceed; 0 when none was. */
static uint64_t
hist_percentile(const struct hist *h, double p)
{
    double exact = p * (double)h->total;
    uint64_t want = (uint64_t)exact, seen = 0;

    if ((double)want < exact)
        want++;
    if (want == 0)
        want = 1;
    for (int i = 0; i < HIST_BUCKETS && h->total > 0; i++) {
        seen += h->counts[i];
        if (seen >= want)
            return hist_value(i) < h->max_us ? hist_value(i) : h->max_us;
    }
    return h->max_us;
}

/* ---- The response parser: just enough HTTP/1.1 to find where a response ends. ---- */

enum resp_state {
    RESP_STATUS,     /* the status line */
    RESP_HEADER,     /* header lines, up to the empty one */
    RESP_BODY,       /* left bytes of a Content-Length body */
    RESP_CHUNK_SIZE, /* a chunk-size line */
    RESP_CHUNK_DATA, /* left bytes of a chunk */
    RESP_CHUNK_END,  /* the CRLF after a chunk's data */
    RESP_TRAILER,    /* trailer lines after the last chunk, up to the empty one */
    RESP_TO_EOF,     /* no length: the body ends when the server closes (RFC 9112 6.3, last rule) */
};

struct resp {
    enum resp_state st;
    int status;
    int http10;     /* an HTTP/1.0 response: the server closes unless it says keep-alive */
    int close;      /* the server closes the connection after this response */
    int keep_alive; /* "Connection: keep-alive" was seen */
    int chunked;    /* the last transfer coding is chunked */
    int has_length; /* a Content-Length was seen */
    uint64_t left;  /* body or chunk bytes still to come */
    size_t len;     /* bytes in line so far */
    char line[LINE_MAX_LEN];
};

static void
resp_init(struct resp *r)
{
    r->st = RESP_STATUS;
    r->status = 0;
    r->http10 = r->close = r->keep_alive = r->chunked = r->has_length = 0;
    r->left = 0;
    r->len = 0;
}

/* Takes bytes into r->line up to a LF; 1 when a whole line is there (NUL-terminated, without its
 * CRLF), 0 when more is needed, -1 when the line is too long. *used: the bytes taken. */
static int
resp_line(struct resp *r, const char *p, size_t n, size_t *used)
{
    const char *lf = memchr(p, '\n', n);
    size_t k = lf != NULL ? (size_t)(lf - p) + 1 : n;

    *used = k;
    if (r->len + k >= sizeof(r->line))
        return -1;
    memcpy(r->line + r->len, p, k);
    r->len += k;
    if (lf == NULL)
        return 0;
    r->len--; /* the LF */
    if (r->len > 0 && r->line[r->len - 1] == '\r')
        r->len--;
    r->line[r->len] = '\0';
    r->len = 0; /* the next line starts afresh; this one stays readable until then */
    return 1;
}

/* Whether value holds word, case-insensitively (enough for "close" and "chunked"). */
static int
has_word(const char *value, const char *word)
{
    size_t n = strlen(word);

    for (; *value != '\0'; value++)
        if (strncasecmp(value, word, n) == 0)
            return 1;
    return 0;
}

static int
resp_status_line(struct resp *r, const char *line)
{
    char *end;
    long status;

    if (strncmp(line, "HTTP/1.", 7) != 0 || line[7] == '\0' || line[8] != ' ')
        return -1;
    status = strtol(line + 9, &end, 10);
    if (end != line + 12 || status < 100 || status > 999)
        return -1;
    r->status = (int)status;
    r->http10 = line[7] == '0';
    r->st = RESP_HEADER;
    return 0;
}

static int
resp_header_line(struct resp *r, const char *line)
{
    const char *colon = strchr(line, ':'), *v;
    size_t name_len;
    char *end;

    if (colon == NULL || colon == line)
        return -1;
    name_len = (size_t)(colon - line);
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
        errno = 0;
        r->left = strtoull(v, &end, 10);
        if (errno != 0 || end == v || *v == '-')
            return -1;
        r->has_length = 1;
    } else if (name_len == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
        r->chunked = has_word(v, "chunked"); /* XXX: "chunked" not last is taken as chunked */
    } else if (name_len == 10 && strncasecmp(line, "Connection", 10) == 0) {
        r->close |= has_word(v, "close");
        r->keep_alive |= has_word(v, "keep-alive");
    }
    return 0;
}

/* The empty line after the headers: where the body goes (RFC 9112 6.3). 1 when the response ends
 * here, 0 when a body follows, -1 on what we cannot follow. */
static int
resp_head_end(struct resp *r)
{
    if (r->status == 101)
        return -1; /* we asked for no upgrade */
    if (r->status < 200) {
        resp_init(r); /* an interim response (100, 103): the final one follows */
        return 0;
    }
    if (r->http10 && !r->keep_alive)
        r->close = 1;
    if (r->status == 204 || r->status == 304)
        return 1;
    if (r->chunked) {
        r->st = RESP_CHUNK_SIZE;
        return 0;
    }
    if (r->has_length) {
        r->st = RESP_BODY;
        return r->left == 0;
    }
    r->st = RESP_TO_EOF;
    r->close = 1;
    return 0;
}

static int
resp_chunk_size(struct resp *r, const char *line)
{
    char *end;

    errno = 0;
    r->left = strtoull(line, &end, 16);
    if (errno != 0 || end == line || (*end != '\0' && *end != ';' && *end != ' ' && *end != '\t'))
        return -1;
    r->st = r->left == 0 ? RESP_TRAILER : RESP_CHUNK_DATA;
    return 0;
}

/* A whole line in the state r is in: 1 when the response ends with it, 0 or -1. */
static int
resp_on_line(struct resp *r, const char *line)
{
    switch (r->st) {
    case RESP_STATUS:
        return resp_status_line(r, line);
    case RESP_HEADER:
        return line[0] == '\0' ? resp_head_end(r) : resp_header_line(r, line);
    case RESP_CHUNK_SIZE:
        return resp_chunk_size(r, line);
    case RESP_CHUNK_END:
        r->st = RESP_CHUNK_SIZE;
        return line[0] == '\0' ? 0 : -1;
    case RESP_TRAILER:
        return line[0] == '\0';
    default:
        return -1;
    }
}

/* Takes data bytes of a body or a chunk; 1 when a Content-Length body is complete. */
static int
resp_on_data(struct resp *r, size_t n, size_t *used)
{
    *used = n;
    if (r->st == RESP_TO_EOF)
        return 0;
    if ((uint64_t)n > r->left)
        *used = (size_t)r->left;
    r->left -= *used;
    if (r->left > 0)
        return 0;
    if (r->st == RESP_CHUNK_DATA) {
        r->st = RESP_CHUNK_END;
        return 0;
    }
    return 1;
}

/* Feeds n bytes of the response. Returns 1 when the response is complete (*used: the bytes that
 * belong to it), 0 when it needs more (all n were taken), -1 when it cannot be parsed. */
static int
resp_feed(struct resp *r, const char *buf, size_t n, size_t *used)
{
    size_t i = 0, k;
    int rc = 0;

    while (rc == 0 && i < n) {
        if (r->st == RESP_BODY || r->st == RESP_CHUNK_DATA || r->st == RESP_TO_EOF) {
            rc = resp_on_data(r, n - i, &k);
        } else {
            rc = resp_line(r, buf + i, n - i, &k);
            if (rc == 1)
                rc = resp_on_line(r, r->line);
        }
        i += k;
    }
    *used = i;
    return rc;
}

/* The server closed the connection: whether that ends the response (a body without a length). */
static int
resp_eof(const struct resp *r)
{
    return r->st == RESP_TO_EOF;
}

/* ---- The connections and the schedule. ---- */

enum conn_state {
    CONN_ST_DOWN,       /* no socket; the retry timer reopens it */
    CONN_ST_CONNECTING, /* connect() under way; wev waits for it */
    CONN_ST_IDLE,       /* open, free for the next request */
    CONN_ST_BUSY,       /* a request in flight: being written, or its response being read */
};

/* The connections live in one array for the whole run and are never freed before the end, so a
 * callback may close one and still look at it afterwards. */
struct conn {
    int fd;
    enum conn_state st;
    struct event *rev;   /* owned: readable; persistent while the socket is open */
    struct event *wev;   /* owned: writable: the connect done, or room for the rest of a request */
    struct event *retry; /* owned: the timer that reopens the connection */
    int listed;          /* on the idle stack (maybe no longer idle: idle_pop skips those) */
    uint64_t req;        /* the request in flight (CONN_ST_BUSY), its index in the schedule */
    size_t sent;         /* bytes of it written */
    struct resp resp;    /* its response so far */
};

enum phase {
    PH_CONNECT, /* the first connects; the schedule starts when none is under way */
    PH_RUN,     /* requests falling due */
    PH_DRAIN,   /* all due; waiting for the answers, at most GRACE_US */
    PH_DONE,
};

struct stats {
    struct hist hist;     /* latencies of the measured requests answered */
    uint64_t answered;    /* measured requests answered, any status */
    uint64_t non2xx;      /* ... of which with a status outside 2xx */
    uint64_t lost;        /* measured requests whose connection failed or closed first */
    uint64_t dropped;     /* measured requests dropped from a full queue */
    uint64_t unanswered;  /* measured requests queued or in flight when the run ended */
    uint64_t conn_fails;  /* connects that failed after the warm-up */
    uint64_t opened;      /* connections opened, all along */
    uint64_t last_ns;     /* when the last measured request was answered */
    const char *last_err; /* why a connection last failed, for stderr */
};

/* What to send where, from the arguments. */
static struct sockaddr_in addr;
static char request[REQUEST_MAX];
static size_t request_len;
static double rate, seconds, warmup;
static int nconns;

static struct event_base *base;
static struct conn *conns; /* owned: nconns */
static struct conn **idle; /* owned: a stack of nconns slots */
static int nidle;
static struct event *tick;  /* owned: the schedule's one timer, re-armed to the next due time */
static struct event *grace; /* owned: the end of PH_DRAIN */
static enum phase phase;
static int busy; /* connections with a request in flight */

/* The schedule: request i is due at t0 + i / rate. Requests [next_unsent, next_due) are due and
 * wait for a connection, in order; a queue that is only two numbers needs no memory. */
static uint64_t t0, t_measure;
static uint64_t first_measured, total; /* the first request after the warm-up; all of them */
static uint64_t next_due, next_unsent, queue_max;
static struct stats st;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint64_t
due_ns(uint64_t i)
{
    return t0 + (uint64_t)((double)i * 1e9 / rate);
}

/* The requests due in the first s seconds: those with i / rate < s. */
static uint64_t
count_within(double s)
{
    double exact = s * rate;
    uint64_t n = (uint64_t)exact;

    return (double)n < exact ? n + 1 : n;
}

static struct timeval
tv_us(uint64_t us)
{
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};

    return tv;
}

static void
timer_in(struct event *ev, uint64_t us)
{
    struct timeval tv = tv_us(us);

    event_add(ev, &tv);
}

static int
measured(uint64_t i)
{
    return i >= first_measured;
}

static int
after_warmup(void)
{
    return phase != PH_CONNECT && now_ns() >= t_measure;
}

static void conn_send(struct conn *c, uint64_t i);
static void finish(void);

static void
idle_push(struct conn *c)
{
    if (!c->listed) {
        c->listed = 1;
        idle[nidle++] = c;
    }
}

static struct conn *
idle_pop(void)
{
    while (nidle > 0) {
        struct conn *c = idle[--nidle];

        c->listed = 0;
        if (c->st == CONN_ST_IDLE)
            return c;
    }
    return NULL;
}

static int
queued(void)
{
    return next_unsent < next_due;
}

/* Sends what is due on the idle connections, oldest first. */
static void
dispatch(void)
{
    struct conn *c;

    while (queued() && (c = idle_pop()) != NULL)
        conn_send(c, next_unsent++);
}

/* PH_DRAIN ends early once nothing is left to wait for. */
static void
check_drained(void)
{
    if (phase == PH_DRAIN && busy == 0 && !queued())
        finish();
}

/* The single teardown of a connection. A request in flight on it is lost. Unless the run is over,
 * the connection is reopened after delay_us (0: at once, from the loop, not from this callback). */
static void
conn_close(struct conn *c, const char *why, uint64_t delay_us)
{
    if (c->st == CONN_ST_BUSY) {
        busy--;
        if (measured(c->req))
            st.lost++;
        st.last_err = why;
    }
    if (c->fd >= 0) {
        event_del(c->rev);
        event_del(c->wev);
        close(c->fd);
        c->fd = -1;
    }
    c->st = CONN_ST_DOWN;
    if (phase == PH_RUN || phase == PH_DRAIN)
        timer_in(c->retry, delay_us);
    check_drained();
}

static void
conn_connect_failed(struct conn *c, const char *why)
{
    if (after_warmup())
        st.conn_fails++;
    st.last_err = why;
    conn_close(c, why, RETRY_DELAY_US);
}

/* A connection is free: it takes the oldest waiting request, or waits on the idle stack. */
static void
conn_ready(struct conn *c)
{
    c->st = CONN_ST_IDLE;
    if (phase != PH_RUN && phase != PH_DRAIN) {
        idle_push(c);
        return;
    }
    if (queued())
        conn_send(c, next_unsent++);
    else
        idle_push(c);
    check_drained();
}

/* Writes what is left of the request; waits for room when the socket is full. */
static void
conn_write(struct conn *c)
{
    ssize_t n = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(c->wev, NULL);
        return;
    }
    if (n < 0) {
        conn_close(c, "send failed", 0);
        return;
    }
    c->sent += (size_t)n;
    if (c->sent < request_len)
        event_add(c->wev, NULL);
}

static void
conn_send(struct conn *c, uint64_t i)
{
    c->st = CONN_ST_BUSY;
    c->req = i;
    c->sent = 0;
    resp_init(&c->resp);
    busy++;
    conn_write(c);
}

/* The response to c's request is whole: its latency counts from the request's due time. */
static void
conn_answered(struct conn *c)
{
    uint64_t t = now_ns(), due = due_ns(c->req);

    busy--;
    c->st = CONN_ST_IDLE;
    if (!measured(c->req))
        return;
    st.answered++;
    if (c->resp.status < 200 || c->resp.status > 299)
        st.non2xx++;
    hist_record(&st.hist, t > due ? (t - due) / 1000 : 0);
    st.last_ns = t;
}

/* n bytes from the server: the response's, or a reason to close. */
static void
conn_take(struct conn *c, const char *buf, size_t n)
{
    size_t used;
    int rc;

    if (c->st != CONN_ST_BUSY) {
        conn_close(c, "bytes from the server with no request in flight", 0);
        return;
    }
    rc = resp_feed(&c->resp, buf, n, &used);
    if (rc < 0) {
        conn_close(c, "a response we cannot parse", 0);
        return;
    }
    if (rc == 0)
        return;
    conn_answered(c);
    if (used < n)
        conn_close(c, "bytes after the response", 0); /* no pipelining: nothing may follow */
    else if (c->resp.close)
        conn_close(c, "closed by the server after a response", 0);
    else
        conn_ready(c);
}

static void
conn_eof(struct conn *c)
{
    if (c->st == CONN_ST_BUSY && resp_eof(&c->resp))
        conn_answered(c); /* a body without a length ends here */
    conn_close(c,
               c->st == CONN_ST_BUSY ? "closed by the server before the whole response"
                                     : "closed by the server while idle",
               0);
}

/* One read per callback: the event is level-triggered, so what is left comes in the next one, and
 * no loop here has to notice that the connection was closed under it. */
static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf));

    (void)what;
    if (n > 0)
        conn_take(c, buf, (size_t)n);
    else if (n == 0)
        conn_eof(c);
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        conn_close(c, "read failed", 0);
}

static void phase_connect_check(void);

static void
conn_connected(struct conn *c)
{
    st.opened++;
    event_add(c->rev, NULL);
    conn_ready(c);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    int err = 0;
    socklen_t len = sizeof(err);

    if (c->st == CONN_ST_BUSY) {
        conn_write(c);
        return;
    }
    if (what & EV_TIMEOUT)
        conn_connect_failed(c, "connect timed out");
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
        conn_connect_failed(c, "connect failed");
    else
        conn_connected(c);
    if (phase == PH_CONNECT)
        phase_connect_check();
}

/* Starts a connect; a failure is counted and retried like any other. */
static void
conn_open(struct conn *c)
{
    int one = 1;
    struct timeval tv = tv_us(CONNECT_TIMEOUT_US);

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_connect_failed(c, "socket failed");
        return;
    }
    /* Requests are small and each waits for its answer: Nagle would only delay them. */
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    event_assign(c->rev, base, c->fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    event_assign(c->wev, base, c->fd, EV_WRITE, conn_write_cb, c);
    c->st = CONN_ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        conn_connect_failed(c, "connect failed");
        return;
    }
    event_add(c->wev, &tv);
}

static void
conn_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (phase == PH_RUN || phase == PH_DRAIN)
        conn_open(arg);
}

/* Drops the oldest waiting requests beyond queue_max: a server that cannot keep up would
 * otherwise make the queue, and the wait of every later request, grow without bound. */
static void
queue_trim(void)
{
    while (next_due - next_unsent > queue_max) {
        if (measured(next_unsent))
            st.dropped++;
        next_unsent++;
    }
}

/* The schedule's timer: every request due by now joins the queue (several when the timer fired
 * late, or the rate is above the timer's resolution), the queue goes out on the idle connections,
 * and the timer is re-armed to the next due time. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t t = now_ns();

    (void)fd;
    (void)what;
    (void)arg;
    while (next_due < total && due_ns(next_due) <= t)
        next_due++;
    queue_trim();
    dispatch();
    if (next_due < total) {
        timer_in(tick, (due_ns(next_due) - t + 999) / 1000); /* rounded up: never early */
        return;
    }
    phase = PH_DRAIN;
    timer_in(grace, GRACE_US);
    check_drained();
}

/* The end of the run: what is still queued or in flight was not answered in time. */
static void
finish(void)
{
    if (phase == PH_DONE)
        return;
    phase = PH_DONE;
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == CONN_ST_BUSY && measured(conns[i].req))
            st.unanswered++;
    for (uint64_t i = next_unsent; i < next_due; i++)
        st.unanswered += (uint64_t)measured(i);
    event_base_loopbreak(base);
}

static void
grace_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    finish();
}

static void
signal_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    fprintf(stderr, "openloop: interrupted; the figures cover the run so far\n");
    finish();
}

static void
schedule_start(void)
{
    phase = PH_RUN;
    t0 = now_ns();
    t_measure = t0 + (uint64_t)(warmup * 1e9);
    first_measured = count_within(warmup);
    total = first_measured + count_within(seconds);
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == CONN_ST_DOWN)
            timer_in(conns[i].retry, RETRY_DELAY_US);
    tick_cb(-1, 0, NULL);
}

/* In PH_CONNECT, once no connect is under way: start, or give up when none succeeded. */
static void
phase_connect_check(void)
{
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == CONN_ST_CONNECTING)
            return;
    if (st.opened > 0) {
        schedule_start();
        return;
    }
    st.conn_fails = (uint64_t)nconns; /* the line's errors must not read 0 */
    fprintf(stderr, "openloop: no connection could be opened (%s)\n",
            st.last_err ? st.last_err : "?");
    phase = PH_DONE;
    event_base_loopbreak(base);
}

/* ---- Arguments, setup, report. ---- */

_Noreturn static void
usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "openloop: %s\n", why);
    fprintf(stderr, "usage: openloop -r RATE -d SECONDS -c CONNS [-H 'Name: value']... [-p PATH] "
                    "[-w WARMUP_SECONDS] IPV4 PORT\n");
    exit(2);
}

/* A number from lo to hi, or usage(). */
static double
number(const char *arg, double lo, double hi, const char *what)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno != 0 || end == arg || *end != '\0' || !(v >= lo && v <= hi))
        usage(what);
    return v;
}

static void
request_add(const char *text)
{
    size_t n = strlen(text);

    if (request_len + n >= sizeof(request))
        usage("the request is too long");
    memcpy(request + request_len, text, n + 1); /* with its NUL, though the length is what counts */
    request_len += n;
}

/* A header of -H: "Name: value" on one line. */
static void
request_header(const char *h)
{
    const char *colon = strchr(h, ':');

    if (colon == NULL || colon == h || strpbrk(h, "\r\n") != NULL)
        usage("a header is 'Name: value'");
    request_add(h);
    request_add("\r\n");
}

static void
parse_args(int argc, char **argv)
{
    const char *path = "/", *headers[64];
    int opt, nheaders = 0, has_host = 0;
    char host[64];

    rate = seconds = -1;
    nconns = -1;
    while ((opt = getopt(argc, argv, "r:d:c:H:p:w:")) != -1) {
        switch (opt) {
        case 'r':
            rate = number(optarg, 1e-3, 1e7, "RATE: requests per second, above 0");
            break;
        case 'd':
            seconds = number(optarg, 1e-3, 86400, "SECONDS: above 0");
            break;
        case 'c':
            nconns = (int)number(optarg, 1, 100000, "CONNS: a whole number from 1");
            if ((double)nconns != strtod(optarg, NULL))
                usage("CONNS: a whole number from 1");
            break;
        case 'w':
            warmup = number(optarg, 0, 86400, "WARMUP_SECONDS: 0 or more");
            break;
        case 'p':
            path = optarg;
            break;
        case 'H':
            if (nheaders == (int)(sizeof(headers) / sizeof(headers[0])))
                usage("too many headers");
            has_host |= strncasecmp(optarg, "Host:", 5) == 0;
            headers[nheaders++] = optarg;
            break;
        default:
            usage(NULL);
        }
    }
    if (rate < 0 || seconds < 0 || nconns < 0)
        usage("-r, -d and -c are required");
    if (argc - optind != 2)
        usage("IPV4 and PORT are required");
    if (path[0] != '/' || strpbrk(path, " \r\n") != NULL)
        usage("PATH starts with / and holds no space");
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)number(argv[optind + 1], 1, 65535, "PORT: 1 to 65535"));
    if (inet_pton(AF_INET, argv[optind], &addr.sin_addr) != 1)
        usage("IPV4: an IPv4 address");
    request_add("GET ");
    request_add(path);
    request_add(" HTTP/1.1\r\n");
    if (!has_host) {
        snprintf(host, sizeof(host), "Host: %s:%s", argv[optind], argv[optind + 1]);
        request_header(host);
    }
    for (int i = 0; i < nheaders; i++)
        request_header(headers[i]);
    request_add("\r\n");
    /* A queue of 2 s of requests is as much as a stalled server can be charged for. */
    queue_max = (uint64_t)(2 * rate) > 0 ? (uint64_t)(2 * rate) : 1;
}

/* The event base, its timers, the connections and their events; exits 1 when one fails. */
static void
setup(void)
{
    struct event_config *cfg = event_config_new();

    /* A timerfd: a schedule to the microsecond, not to epoll_wait's millisecond. */
    if (cfg != NULL)
        event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    base = cfg != NULL ? event_base_new_with_config(cfg) : NULL;
    event_config_free(cfg);
    conns = calloc((size_t)nconns, sizeof(*conns));
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sized by its element */
    idle = calloc((size_t)nconns, sizeof(*idle));
    if (base == NULL || conns == NULL || idle == NULL)
        goto fail;
    tick = evtimer_new(base, tick_cb, NULL);
    grace = evtimer_new(base, grace_cb, NULL);
    if (tick == NULL || grace == NULL)
        goto fail;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];

        c->fd = -1;
        c->rev = event_new(base, -1, 0, conn_read_cb, c);
        c->wev = event_new(base, -1, 0, conn_write_cb, c);
        c->retry = evtimer_new(base, conn_retry_cb, c);
        if (c->rev == NULL || c->wev == NULL || c->retry == NULL)
            goto fail;
    }
    return;
fail:
    fprintf(stderr, "openloop: out of memory, or no event base\n");
    exit(1);
}

static void
teardown(void)
{
    for (int i = 0; i < nconns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        event_free(conns[i].rev);
        event_free(conns[i].wev);
        event_free(conns[i].retry);
    }
    event_free(tick);
    event_free(grace);
    event_base_free(base);
    free(conns);
    free(idle);
}

static double
ms(uint64_t us)
{
    return (double)us / 1e3;
}

static void
report(void)
{
    const struct hist *h = &st.hist;
    double span = seconds,
           last = st.last_ns > t_measure ? (double)(st.last_ns - t_measure) / 1e9 : 0;
    uint64_t errors = st.non2xx + st.lost + st.dropped + st.unanswered + st.conn_fails;

    if (last > span)
        span = last; /* a server that lagged: the answers took longer than the schedule */
    printf("%g %.1f %.3f %.3f %.3f %.3f %" PRIu64 " %" PRIu64 "\n", rate,
           (double)st.answered / span, ms(hist_percentile(h, 0.5)), ms(hist_percentile(h, 0.99)),
           ms(hist_percentile(h, 0.999)), ms(h->max_us), st.answered, errors);
    fprintf(stderr,
            "openloop: %" PRIu64 " measured requests due, %" PRIu64 " answered (%" PRIu64
            " not 2xx); no answer: %" PRIu64 " lost with their connection, %" PRIu64
            " dropped (more than %" PRIu64 " waiting), %" PRIu64 " unanswered at the end; %" PRIu64
            " failed connects after the warm-up; %" PRIu64 " connections opened%s%s\n",
            total - first_measured, st.answered, st.non2xx, st.lost, st.dropped, queue_max,
            st.unanswered, st.conn_fails, st.opened, st.last_err ? "; last failure: " : "",
            st.last_err ? st.last_err : "");
}

int
main(int argc, char **argv)
{
    struct event *sigint, *sigterm;

    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    setup();
    sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
    sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
    if (sigint != NULL)
        event_add(sigint, NULL);
    if (sigterm != NULL)
        event_add(sigterm, NULL);
    phase = PH_CONNECT;
    for (int i = 0; i < nconns; i++)
        conn_open(&conns[i]);
    if (phase == PH_CONNECT)
        phase_connect_check(); /* every connect may have failed at once */
    if (phase != PH_DONE)
        event_base_dispatch(base);
    report();
    if (sigint != NULL)
        event_free(sigint);
    if (sigterm != NULL)
        event_free(sigterm);
    teardown();
    return st.opened > 0 ? 0 : 1;
}
