/* HTTPS requests to the Kubernetes API server on our own server connections. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "addr.h"
#include "kubeapi.h"
#include "log.h"
#include "upconn.h"

#define PORTIER_UA "portier/0.1.0"

struct kubeapi {
    char server[96];   /* "https://IP:PORT" */
    char hostport[96]; /* "IP:PORT" or "[IPv6]:PORT": the Host header */
    char ip[64];       /* what the server's certificate must name */
    struct balancer_addr addr;
    SSL_CTX *ctx;
    char *token_file; /* owned */
};

struct kubeapi_req {
    struct kubeapi *a; /* borrowed */
    struct loop *lp;   /* borrowed */
    struct upconn *u;  /* owned while the request runs */
    kubeapi_cb cb;
    void *owner;
    struct evbuffer *pending; /* owned: the request, until the handshake is over */
    http_parser parser;
    uint64_t timeout_ms;
    int status;
    char err[256];
    struct loop_defer defer;
    unsigned tls_started : 1;
    unsigned over : 1;      /* KUBEAPI_DONE or KUBEAPI_FAIL was reported */
    unsigned cancelled : 1; /* the owner is done with it: nothing more is reported */
};

/* ---------------------------------------------------------------------------------------------
 * The client
 */

/* Splits "https://IP:PORT" into a's address, Host and IP. Returns 0, or -1 with err. */
static int
parse_server(struct kubeapi *a, const char *server, char *err, size_t errlen)
{
    const char *hp;
    char msg[128] = "not an IP address and port";
    struct sockaddr_storage ss;
    socklen_t len;

    if (strncmp(server, "https://", 8) != 0 || strlen(server) >= sizeof(a->server)) {
        snprintf(err, errlen, "kubernetes: server \"%s\" is not https://IP:PORT", server);
        return -1;
    }
    hp = server + 8;
    if (addr_parse(hp, &ss, &len, msg, sizeof(msg)) < 0 ||
        balancer_addr_init(&a->addr, (const struct sockaddr *)&ss, len) < 0 ||
        addr_host((const struct sockaddr *)&ss, a->ip, sizeof(a->ip)) < 0) {
        snprintf(err, errlen, "kubernetes: server \"%s\": %s", server, msg);
        return -1;
    }
    /* Both fit: server was measured above, and hp is its tail. */
    memcpy(a->server, server, strlen(server) + 1);
    memcpy(a->hostport, hp, strlen(hp) + 1);
    return 0;
}

/* The server a pod is given: $KUBERNETES_SERVICE_HOST and _PORT, as "https://IP:PORT". */
static int
server_from_env(char *out, size_t cap, char *err, size_t errlen)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");

    if (host == NULL || port == NULL || host[0] == '\0' || port[0] == '\0') {
        snprintf(err, errlen,
                 "kubernetes: no server set, and KUBERNETES_SERVICE_HOST and _PORT are not "
                 "either (not in a pod?)");
        return -1;
    }
    snprintf(out, cap, strchr(host, ':') != NULL ? "https://[%s]:%s" : "https://%s:%s", host, port);
    return 0;
}

struct kubeapi *
kubeapi_new(const char *server, const char *ca_file, const char *token_file, char *err,
            size_t errlen)
{
    struct kubeapi *a = calloc(1, sizeof(*a));
    char env_server[128];

    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (server == NULL && server_from_env(env_server, sizeof(env_server), err, errlen) < 0)
        goto fail;
    if (parse_server(a, server != NULL ? server : env_server, err, errlen) < 0)
        goto fail;
    if (ca_file == NULL)
        ca_file = KUBEAPI_SA_DIR "/ca.crt";
    a->token_file = strdup(token_file != NULL ? token_file : KUBEAPI_SA_DIR "/token");
    a->ctx = SSL_CTX_new(TLS_client_method());
    if (a->token_file == NULL || a->ctx == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(a->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(a->ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(a->ctx, ca_file, NULL) != 1) {
        unsigned long e = ERR_peek_last_error();
        snprintf(err, errlen, "kubernetes: cannot load the CA %s: %s", ca_file,
                 e != 0 ? ERR_reason_error_string(e) : "no certificate");
        ERR_clear_error();
        goto fail;
    }
    return a;
fail:
    kubeapi_free(a);
    return NULL;
}

void
kubeapi_free(struct kubeapi *a)
{
    if (a == NULL)
        return;
    SSL_CTX_free(a->ctx);
    free(a->token_file);
    free(a);
}

const char *
kubeapi_server(const struct kubeapi *a)
{
    return a->server;
}

/* Reads the bearer token into out (whitespace around it dropped). Returns 0, or -1 with err. */
static int
read_token(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    size_t len = 0, start = 0;

    if (fd < 0) {
        snprintf(err, errlen, "cannot read the token %s: %s", path, strerror(errno));
        return -1;
    }
    while (len < cap - 1 && (n = read(fd, out + len, cap - 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read the token %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        len += (size_t)n;
    }
    close(fd);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' '))
        len--;
    while (start < len && (out[start] == ' ' || out[start] == '\n'))
        start++;
    out[len] = '\0';
    memmove(out, out + start, len - start + 1);
    len -= start;
    /* A token is header-safe text (RFC 6750's b64token and then some): never a line break. */
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)out[i] <= ' ' || (unsigned char)out[i] >= 0x7f) {
            snprintf(err, errlen, "the token in %s is not one line of printable text", path);
            return -1;
        }
    }
    if (len == 0) {
        snprintf(err, errlen, "the token file %s is empty", path);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * A request
 */

/* TCP keepalive on an API connection: a watch waits minutes for its next event, and an API server
 * that vanished without a word (its node gone) is noticed after KUBEAPI_KEEPALIVE_S + 3 probes
 * KUBEAPI_KEEPALIVE_S / 3 apart, not at the end of the watch's own timeout. Best effort: a socket
 * that refuses still has that timeout. */
static void
keepalive(int fd)
{
    int on = 1, idle = KUBEAPI_KEEPALIVE_S, intvl = KUBEAPI_KEEPALIVE_S / 3, cnt = 3;

    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
        log_msg(LOG_DEBUG, "kubernetes: no TCP keepalive on an API connection: %s",
                strerror(errno));
}

static void req_cb(void *owner, enum half_event ev);

/* Reports ev to the owner; returns false when the owner cancelled meanwhile. */
static bool
report(struct kubeapi_req *r, enum kubeapi_event ev, const char *data, size_t len)
{
    if (r->cancelled)
        return false;
    if (ev == KUBEAPI_DONE || ev == KUBEAPI_FAIL)
        r->over = 1;
    r->cb(r->owner, ev, data, len);
    return !r->cancelled;
}

__attribute__((format(printf, 2, 3))) static void
req_fail(struct kubeapi_req *r, const char *fmt, ...)
{
    va_list ap;

    if (r->over || r->cancelled)
        return;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    upconn_close(r->u, r->err);
    r->u = NULL;
    report(r, KUBEAPI_FAIL, NULL, 0);
}

static int
on_headers_complete(http_parser *p)
{
    struct kubeapi_req *r = p->data;

    r->status = (int)p->status_code;
    return report(r, KUBEAPI_HEAD, NULL, 0) ? 0 : -1;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    return report(p->data, KUBEAPI_DATA, at, len) ? 0 : -1;
}

static int
on_message_complete(http_parser *p)
{
    struct kubeapi_req *r = p->data;

    upconn_close(r->u, "the response is complete");
    r->u = NULL;
    report(r, KUBEAPI_DONE, NULL, 0);
    return -1; /* nothing after it is read: the connection is closed */
}

static const http_parser_settings parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds what arrived to the parser, then the end when the server closed. */
static void
req_read(struct kubeapi_req *r)
{
    struct half *h = &r->u->h;
    size_t len = evbuffer_get_length(h->in);
    bool eof = h->eof;

    half_timer(h, r->timeout_ms);
    if (len > 0) {
        const char *buf = (const char *)evbuffer_pullup(h->in, (ev_ssize_t)len);
        size_t used = http_parser_execute(&r->parser, &parser_settings, buf, len);
        if (r->cancelled || r->over)
            return;
        if (HTTP_PARSER_ERRNO(&r->parser) != HPE_OK) {
            req_fail(r, "bad response: %s", http_errno_description(HTTP_PARSER_ERRNO(&r->parser)));
            return;
        }
        evbuffer_drain(h->in, used);
    }
    if (!eof)
        return;
    /* A body that runs to the close ends here; anything else is cut short. */
    http_parser_execute(&r->parser, &parser_settings, NULL, 0);
    if (!r->cancelled && !r->over)
        req_fail(r, "%s before the end of the response",
                 h->err != 0 ? half_error_str(h) : "closed");
}

/* The connect is over: TLS as the client, the server's certificate checked for its IP. Returns
 * 0, or -1 when it cannot start (out of memory). */
static int
req_tls(struct kubeapi_req *r)
{
    SSL *ssl = SSL_new(r->a->ctx);

    r->tls_started = 1;
    if (ssl == NULL)
        return -1;
    SSL_set_connect_state(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), r->a->ip) != 1 ||
        half_start_tls(&r->u->h, ssl) < 0) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

static void
req_cb(void *owner, enum half_event ev)
{
    struct kubeapi_req *r = owner;
    struct half *h = &r->u->h;

    switch (ev) {
    case HALF_CONNECTED:
        half_timer(h, r->timeout_ms);
        if (!r->tls_started) {
            if (req_tls(r) < 0)
                req_fail(r, "%s", "cannot set up TLS");
            return;
        }
        if (evbuffer_add_buffer(h->out, r->pending) < 0 || half_flush(h) < 0)
            req_fail(r, "send: %s", h->err != 0 ? strerror(h->err) : "out of memory");
        return;
    case HALF_DRAINED:
        return;
    case HALF_READ:
        req_read(r);
        return;
    case HALF_ERROR:
        req_fail(r, "%s: %s", r->tls_started ? "TLS" : "connect", half_error_str(h));
        return;
    case HALF_TIMEOUT:
        req_fail(r, "%s", r->status == 0 ? "no answer in time" : "silent for too long");
        return;
    }
}

static void
req_free(struct loop_defer *d)
{
    struct kubeapi_req *r = (struct kubeapi_req *)((char *)d - offsetof(struct kubeapi_req, defer));

    if (r->pending != NULL)
        evbuffer_free(r->pending);
    free(r);
}

struct kubeapi_req *
kubeapi_start(struct kubeapi *a, struct loop *lp, const char *method, const char *path,
              const char *body, uint64_t timeout_ms, kubeapi_cb cb, void *owner, char *err,
              size_t errlen)
{
    struct kubeapi_req *r = calloc(1, sizeof(*r));
    char token[KUBEAPI_TOKEN_MAX];
    int n;

    if (r == NULL || (r->pending = evbuffer_new()) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (read_token(a->token_file, token, sizeof(token), err, errlen) < 0)
        goto fail;
    n = evbuffer_add_printf(r->pending,
                            "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                            "Accept: application/json\r\nUser-Agent: " PORTIER_UA "\r\n"
                            "Connection: close\r\n",
                            method, path, a->hostport, token);
    if (n >= 0 && body != NULL)
        n = evbuffer_add_printf(r->pending,
                                "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                                strlen(body), body);
    else if (n >= 0)
        n = evbuffer_add(r->pending, "\r\n", 2);
    OPENSSL_cleanse(token, sizeof(token));
    if (n < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    r->a = a;
    r->lp = lp;
    r->cb = cb;
    r->owner = owner;
    r->timeout_ms = timeout_ms;
    http_parser_init(&r->parser, HTTP_RESPONSE);
    r->parser.data = r;
    r->u = upconn_get(lp, NULL, &a->addr, timeout_ms, req_cb, r);
    if (r->u == NULL) {
        snprintf(err, errlen, "connect to %s: %s", a->server, strerror(errno));
        goto fail;
    }
    keepalive(r->u->h.fd);
    half_timer(&r->u->h, timeout_ms);
    if (!r->u->h.connecting && req_tls(r) < 0) {
        snprintf(err, errlen, "cannot set up TLS");
        upconn_close(r->u, err);
        goto fail;
    }
    return r;
fail:
    if (r != NULL && r->pending != NULL)
        evbuffer_free(r->pending);
    free(r);
    return NULL;
}

int
kubeapi_status(const struct kubeapi_req *r)
{
    return r->status;
}

const char *
kubeapi_error(const struct kubeapi_req *r)
{
    return r->err[0] != '\0' ? r->err : "no error";
}

void
kubeapi_cancel(struct kubeapi_req *r)
{
    if (r == NULL || r->cancelled)
        return;
    r->cancelled = 1;
    upconn_close(r->u, "cancelled");
    r->u = NULL;
    loop_defer(r->lp, &r->defer, req_free);
}
