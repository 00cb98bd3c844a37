/*
 * tls-conns: new TLS connections per second, one HTTP request on each, for bench/run.sh's HTTPS
 * handshake rows. One thread, CONNS connections at a time (epoll, non-blocking), each: connect, TLS
 * handshake (SNI, no ALPN, the certificate not checked, as wrk does), one request with `Connection:
 * close`, its response read to the end of its Content-Length, close_notify sent, closed; then a new
 * one. With -r, each of the CONNS slots keeps the last session the server gave it (TLS 1.3 tickets
 * arrive after the handshake) and offers it on its next connection: resumed handshakes after the
 * first. Without -r, every handshake is a full one; tickets are still accepted (and counted), so
 * the server does the same work as for any new client that could resume.
 *
 * Usage: tls-conns [-r] [-c CONNS] [-d SECONDS] [-n SNI] [-H HOST] [-t TIMEOUT] IPV4 PORT PATH
 * Prints one line: "conns/s p50_ms p99_ms completed errors resumed tickets version cipher group",
 * p50/p99 being the time from connect() to the whole response, errors every connection that failed
 * (refused, handshake, a status other than 200, a timeout), resumed those of the completed
 * connections whose handshake resumed a session, tickets the session tickets (or TLS 1.2 sessions)
 * the completed connections received, and version, cipher and group those of the first handshake.
 * Connections still under way at the end count nowhere. Exits 1 when nothing completed.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { S_CONNECT, S_HANDSHAKE, S_WRITE, S_READ };

struct slot {
    int fd;
    SSL *ssl;
    enum state st;
    unsigned int events; /* what epoll waits for on fd */
    double start;
    SSL_SESSION *sess; /* the last session the server gave this slot (-r) */
    size_t got;        /* bytes of the response so far */
    long need;         /* its whole length, once the head is in; -1 before, or without a length */
    int status;
    int reused;        /* this connection's handshake resumed a session */
    unsigned ntickets; /* the sessions it was given */
    char head[4096];   /* the start of the response, where its head is */
};

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static int ep, resume;
static const char *sni;
static char request[512];
static size_t request_len;
static unsigned long completed, errors, resumed, tickets;
static double *lat; /* ms, one per completed connection */
static size_t nlat, caplat;
static char info[160] = "- - -";
static int have_info;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct slot *s = SSL_get_app_data(ssl);

    if (s != NULL)
        s->ntickets++;
    if (!resume || s == NULL)
        return 0; /* OpenSSL frees it */
    if (s->sess != NULL)
        SSL_SESSION_free(s->sess);
    s->sess = sess;
    return 1;
}

static int
want(struct slot *s, unsigned int events)
{
    struct epoll_event ev = {.events = events, .data.ptr = s};

    if (s->events == events)
        return 0;
    if (epoll_ctl(ep, s->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s->fd, &ev) != 0)
        return -1;
    s->events = events;
    return 0;
}

static void
record(double ms)
{
    if (nlat == caplat) {
        size_t cap = caplat ? caplat * 2 : 65536;
        double *p = realloc(lat, cap * sizeof(*p));

        if (p == NULL)
            return;
        lat = p;
        caplat = cap;
    }
    lat[nlat++] = ms;
}

static int
start(struct slot *s)
{
    int one = 1;

    s->ssl = NULL;
    s->events = 0;
    s->got = 0;
    s->need = -1;
    s->status = 0;
    s->reused = 0;
    s->ntickets = 0;
    s->start = now();
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0)
        return -1;
    (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS)
        return -1;
    s->st = S_CONNECT;
    return want(s, EPOLLOUT);
}

/* A connection that could not even start: counted, and tried again by the main loop's next scan. */
static void
unstarted(struct slot *s)
{
    errors++;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* Ends the slot's connection, counts it, and (unless the run is over) starts the next one. */
static void
finish(struct slot *s, int ok, int again)
{
    if (ok) {
        completed++;
        resumed += (unsigned long)s->reused;
        tickets += s->ntickets;
        record((now() - s->start) * 1e3);
    } else {
        errors++;
    }
    if (s->ssl != NULL) {
        if (ok)
            (void)SSL_shutdown(s->ssl); /* close_notify, not waiting for the server's */
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (again && start(s) != 0)
        unstarted(s);
}

/* Takes in n bytes of the response; returns 1 once it is whole. */
static int
take(struct slot *s, const char *buf, size_t n)
{
    if (s->need < 0 && s->status == 0) {
        size_t room = sizeof(s->head) - 1 - s->got, k = n < room ? n : room;
        char *end, *cl;

        memcpy(s->head + s->got, buf, k);
        s->head[s->got + k] = '\0';
        s->got += n;
        end = strstr(s->head, "\r\n\r\n");
        if (end == NULL) {
            if (s->got >= sizeof(s->head) - 1)
                s->status = -1; /* a head this long is no answer of ours: read to the end */
            return 0;
        }
        if (strncmp(s->head, "HTTP/1.", 7) != 0 || strlen(s->head) < 12)
            s->status = -1;
        else
            s->status = (int)strtol(s->head + 9, NULL, 10);
        *end = '\0';
        cl = strcasestr(s->head, "\r\nContent-Length:");
        if (cl != NULL)
            s->need = (long)(end - s->head) + 4 + strtol(cl + 17, NULL, 10);
    } else {
        s->got += n;
    }
    return s->need >= 0 && (long)s->got >= s->need;
}

static void
handshake_done(struct slot *s)
{
    s->reused = SSL_session_reused(s->ssl);
    if (!have_info) {
        int nid = SSL_get_negotiated_group(s->ssl);
        const char *group = SSL_group_to_name(s->ssl, nid);

        snprintf(info, sizeof(info), "%s %s %s", SSL_get_version(s->ssl),
                 SSL_get_cipher_name(s->ssl), group != NULL ? group : "-");
        have_info = 1;
    }
}

/* What a step of a connection came to. */
enum step { WAIT, NEXT, DONE, FAIL };

/* Waits for what OpenSSL asked for after a call that returned r; FAIL when it asked for nothing
 * that can be waited for (an error, or the end of the stream). */
static enum step
wait_ssl(struct slot *s, int r)
{
    int e = SSL_get_error(s->ssl, r);

    if (e == SSL_ERROR_WANT_READ)
        return want(s, EPOLLIN) == 0 ? WAIT : FAIL;
    if (e == SSL_ERROR_WANT_WRITE)
        return want(s, EPOLLOUT) == 0 ? WAIT : FAIL;
    return FAIL;
}

static enum step
on_connect(struct slot *s)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);

    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0)
        return FAIL;
    s->ssl = SSL_new(ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1)
        return FAIL;
    SSL_set_app_data(s->ssl, s);
    if (sni != NULL)
        (void)SSL_set_tlsext_host_name(s->ssl, sni);
    if (resume && s->sess != NULL)
        (void)SSL_set_session(s->ssl, s->sess);
    s->st = S_HANDSHAKE;
    return NEXT;
}

static enum step
on_handshake(struct slot *s)
{
    int r = SSL_connect(s->ssl);

    if (r != 1)
        return wait_ssl(s, r);
    handshake_done(s);
    s->st = S_WRITE;
    return NEXT;
}

static enum step
on_write(struct slot *s)
{
    int r = SSL_write(s->ssl, request, (int)request_len);

    if (r <= 0)
        return wait_ssl(s, r);
    s->st = S_READ;
    return want(s, EPOLLIN) == 0 ? WAIT : FAIL;
}

static enum step
on_read(struct slot *s)
{
    char buf[16384];
    int r;

    while ((r = SSL_read(s->ssl, buf, (int)sizeof(buf))) > 0)
        if (take(s, buf, (size_t)r))
            return s->status == 200 ? DONE : FAIL;
    /* The end of the stream: the response is whole only if it had no length. */
    if (SSL_get_error(s->ssl, r) == SSL_ERROR_ZERO_RETURN)
        return s->need < 0 && s->status == 200 ? DONE : FAIL;
    return wait_ssl(s, r);
}

/* Moves the slot's connection on after an event: to its next wait, or to finish(). */
static void
step(struct slot *s, int again)
{
    enum step r = FAIL;

    do {
        switch (s->st) {
        case S_CONNECT:
            r = on_connect(s);
            break;
        case S_HANDSHAKE:
            r = on_handshake(s);
            break;
        case S_WRITE:
            r = on_write(s);
            break;
        case S_READ:
            r = on_read(s);
            break;
        }
    } while (r == NEXT);
    if (r == WAIT)
        return;
    if (r == FAIL)
        ERR_clear_error();
    finish(s, r == DONE, again);
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double
pct(double p)
{
    size_t i;

    if (nlat == 0)
        return 0;
    i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[i];
}

_Noreturn static void usage(void);

/* A whole number from lo to hi, or usage(). */
static long
number(const char *arg, long lo, long hi)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < lo || v > hi)
        usage();
    return v;
}

_Noreturn static void
usage(void)
{
    fprintf(stderr, "usage: tls-conns [-r] [-c CONNS] [-d SECONDS] [-n SNI] [-H HOST] [-t TIMEOUT] "
                    "IPV4 PORT PATH\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    int conns = 64, opt, n, broken = 0;
    double seconds = 5, timeout = 5, t0, end, last_scan;
    const char *host = NULL;
    struct slot *slots;
    struct epoll_event evs[256];

    while ((opt = getopt(argc, argv, "rc:d:n:H:t:")) != -1) {
        switch (opt) {
        case 'r':
            resume = 1;
            break;
        case 'c':
            conns = (int)number(optarg, 1, 100000);
            break;
        case 'd':
            seconds = strtod(optarg, NULL);
            break;
        case 'n':
            sni = optarg;
            break;
        case 'H':
            host = optarg;
            break;
        case 't':
            timeout = strtod(optarg, NULL);
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 3 || conns < 1 || seconds <= 0 || timeout <= 0)
        usage();
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)number(argv[optind + 1], 1, 65535));
    if (inet_pton(AF_INET, argv[optind], &addr.sin_addr) != 1)
        usage();
    if (host == NULL)
        host = sni != NULL ? sni : argv[optind];
    n = snprintf(request, sizeof(request),
                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[optind + 2],
                 host);
    if (n < 0 || (size_t)n >= sizeof(request))
        usage();
    request_len = (size_t)n;
    signal(SIGPIPE, SIG_IGN);

    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* The sessions go to new_session(), never into a cache of the context's. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);

    ep = epoll_create1(EPOLL_CLOEXEC);
    slots = calloc((size_t)conns, sizeof(*slots));
    if (ep < 0 || slots == NULL) {
        perror("tls-conns");
        free(slots);
        return 1;
    }
    t0 = now();
    end = t0 + seconds;
    last_scan = t0;
    for (int i = 0; i < conns; i++) {
        slots[i].fd = -1;
        if (start(&slots[i]) != 0)
            unstarted(&slots[i]);
    }
    for (;;) {
        double t = now();
        int k;

        if (t >= end)
            break;
        k = epoll_wait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 50);
        if (k < 0 && errno != EINTR) {
            perror("tls-conns: epoll_wait");
            broken = 1;
            break;
        }
        for (int i = 0; i < k; i++)
            step(evs[i].data.ptr, 1);
        t = now();
        if (t - last_scan >= 0.1) {
            last_scan = t;
            for (int i = 0; i < conns; i++) {
                if (slots[i].fd >= 0 && t - slots[i].start > timeout)
                    finish(&slots[i], 0, 1);
                else if (slots[i].fd < 0 && start(&slots[i]) != 0)
                    unstarted(&slots[i]);
            }
        }
    }
    end = now();
    /* Connections still under way are neither completed nor failed. */
    for (int i = 0; i < conns; i++) {
        if (slots[i].ssl != NULL)
            SSL_free(slots[i].ssl);
        if (slots[i].fd >= 0)
            close(slots[i].fd);
        if (slots[i].sess != NULL)
            SSL_SESSION_free(slots[i].sess);
    }
    if (nlat > 0)
        qsort(lat, nlat, sizeof(*lat), cmp);
    printf("%.0f %.3f %.3f %lu %lu %lu %lu %s\n", (double)completed / (end - t0), pct(0.5),
           pct(0.99), completed, errors, resumed, tickets, info);
    free(lat);
    free(slots);
    SSL_CTX_free(ctx);
    close(ep);
    return completed > 0 && !broken ? 0 : 1;
}
