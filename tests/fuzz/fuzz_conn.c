/*
 * libFuzzer target for the connection layer: the real client connection, exchange and server
 * connection code (conn.c, exchange.c, upconn.c, half.c, loop.c) on an event loop, over socket
 * pairs. The input is a script of what the client sends, what each server answers, half-closes,
 * closes, a client that stops reading, servers that cannot be reached, and timer expiries; the
 * loop runs between steps. Besides crashes, leaks and undefined behaviour (the sanitizers), it
 * checks that a connection never outlives what it waits for: once both sides have closed and
 * every timer has gone off, nothing is left.
 *
 * With FUZZ_TLS defined (fuzz_conn_tls.c), the client connection is TLS: a real handshake with
 * an OpenSSL client first, then the same script, the client's bytes going through its records.
 *
 * Seeds: tests/fuzz/corpus/fuzz_conn (tests/fuzz/make_corpus.py). Build and run with
 * tests/fuzz/run.sh, which links what the fuzz-links lines list:
 *
 * fuzz-links: proxy/src/conn.c proxy/src/exchange.c proxy/src/upconn.c proxy/src/half.c
 * fuzz-links: proxy/src/loop.c proxy/src/iobuf.c proxy/src/http.c proxy/src/http_body.c
 * fuzz-links: proxy/src/config.c proxy/src/router.c proxy/src/balancer.c proxy/src/runtime.c
 * fuzz-links: proxy/src/log.c proxy/src/util.c proxy/src/tls.c proxy/src/stats.c lib/addr.c
 * fuzz-links: lib/wbuf.c
 * fuzz-links: -lhttp_parser -levent -lyaml -lssl -lcrypto -lpthread
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "conn.h"
#include "exchange.h"
#include "log.h"
#include "loop.h"
#include "runtime.h"
#include "upconn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_conn: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Hosts a and b reach services with two servers and one; any other host gets 404. */
static const char config_yaml[] = "listen:\n"
                                  "  - address: \"127.0.0.1:8080\"\n"
                                  "routes:\n"
                                  "  - host: a\n"
                                  "    service: two\n"
                                  "  - host: b\n"
                                  "    path: /x\n"
                                  "    service: one\n"
                                  "services:\n"
                                  "  two:\n"
                                  "    servers: [\"127.0.0.1:1\", \"127.0.0.2:1\"]\n"
                                  "  one:\n"
                                  "    servers: [\"127.0.0.3:1\"]\n"
                                  "timeouts: { client_header: 1s, client_body: 1s, client_idle: "
                                  "1s, upstream_connect: 1s, upstream_response: 1s }\n"
                                  "limits: { max_header_bytes: 2k, max_body_bytes: 64k }\n"
                                  "access_log: off\n";

/* What the script can send without spelling it out byte by byte: the fuzzer reaches deep states
 * sooner from whole messages. */
static const char *const requests[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n",
    /* One request: a chunked body whose trailer tries to smuggle a Host. */
    /* NOLINTNEXTLINE(bugprone-suspicious-missing-comma) */
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n"
    "Host: evil\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly",
    "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
};

static const char *const responses[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "HTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 200 OK\r\n\r\nuntil close",
    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
    "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "garbage\r\n\r\n",
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_SERVERS 16

static struct {
    struct runtime *rt;
    struct loop lp;
    int client; /* our end of the client's socket pair, -1 once closed */
    SSL *tls;   /* the client's TLS session (FUZZ_TLS), or NULL */
    /* cppcheck-suppress unusedStructMember ; used with FUZZ_TLS (fuzz_conn_tls.c) */
    SSL_CTX *tls_ctx;         /* the client's context, made once */
    bool client_reads;        /* the client takes what it is sent */
    int servers[MAX_SERVERS]; /* our ends of the server connections, in the order dialled */
    bool server_reads[MAX_SERVERS];
    unsigned nservers;
    bool refuse;   /* the next dials fail (a server that refuses connections) */
    bool deferred; /* the next dials connect later (EINPROGRESS) */
} h;

static int
dial(const struct balancer_addr *addr, bool *connecting)
{
    int sv[2];

    (void)addr;
    if (h.refuse || h.nservers == MAX_SERVERS) {
        errno = ECONNREFUSED;
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    h.servers[h.nservers] = sv[1];
    h.server_reads[h.nservers] = true;
    h.nservers++;
    *connecting = h.deferred;
    return sv[0];
}

static void
drain_fd(int fd)
{
    char buf[65536];

    while (fd >= 0 && read(fd, buf, sizeof(buf)) > 0)
        ;
}

static void
send_fd(int fd, const void *p, size_t n)
{
    if (fd >= 0 && n > 0)
        (void)send(fd, p, n, MSG_NOSIGNAL); /* a full or closed socket drops the rest: fine */
}

/* The client takes what it is sent: plain bytes, or records (the handshake moves on too). */
static void
client_drain(void)
{
    char buf[16384];

    if (h.tls == NULL) {
        drain_fd(h.client);
        return;
    }
    if (!SSL_is_init_finished(h.tls))
        (void)SSL_do_handshake(h.tls);
    while (SSL_is_init_finished(h.tls) && SSL_read(h.tls, buf, sizeof(buf)) > 0)
        ;
    ERR_clear_error();
}

/* The client sends n bytes: as they are, or in records once the handshake is over. */
static void
client_send(const void *p, size_t n)
{
    if (h.tls == NULL) {
        send_fd(h.client, p, n);
        return;
    }
    if (h.client >= 0 && n > 0 && SSL_is_init_finished(h.tls))
        (void)SSL_write(h.tls, p, (int)n); /* a full socket drops the rest: fine */
    ERR_clear_error();
}

/* Runs the loop until nothing is ready, taking what the peers are sent when they read. */
static void
settle(void)
{
    for (int i = 0; i < 64; i++) {
        if (h.client_reads)
            client_drain();
        for (unsigned s = 0; s < h.nservers; s++)
            if (h.server_reads[s])
                drain_fd(h.servers[s]);
        if (loop_turn(&h.lp, false) < 0)
            break;
        if (event_base_get_num_events(h.lp.base, EVENT_BASE_COUNT_ACTIVE) == 0 && i > 2)
            break;
    }
}

struct timers {
    struct event *ev[256];
    int n;
};

static int
timer_collect(const struct event_base *base, const struct event *ev, void *arg)
{
    struct timers *t = arg;

    (void)base;
    if (t->n < 256 && event_pending(ev, EV_TIMEOUT, NULL))
        t->ev[t->n++] = (struct event *)ev;
    return 0;
}

/* Makes the k-th pending timer go off now, as if its time had come; k < 0: every one. */
static void
fire_timers(int k)
{
    struct timers t = {.n = 0};

    event_base_foreach_event(h.lp.base, timer_collect, &t);
    for (int j = 0; j < t.n; j++)
        if (k < 0 || j == k % t.n)
            event_active(t.ev[j], EV_TIMEOUT, 1);
}

static int
server_fd(uint8_t idx)
{
    return h.nservers > 0 ? h.servers[idx % h.nservers] : -1;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

#ifdef FUZZ_TLS
/* A self-signed ECDSA certificate for "a" in a temporary directory; appends the config's tls
 * section naming it to yaml. */
static void
make_certificate(char *yaml, size_t len)
{
    static char dir[] = "/tmp/fuzz-conn-tls-XXXXXX";
    char crt[64], key[64];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;

    check(k != NULL && x != NULL && mkdtemp(dir) != NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"a", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    check(X509_sign(x, k, EVP_sha256()) > 0);
    snprintf(crt, sizeof(crt), "%s/a.crt", dir);
    snprintf(key, sizeof(key), "%s/a.key", dir);
    check((f = fopen(crt, "w")) != NULL && PEM_write_X509(f, x) == 1 && fclose(f) == 0);
    check((f = fopen(key, "w")) != NULL &&
          PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1 && fclose(f) == 0);
    snprintf(yaml + strlen(yaml), len - strlen(yaml),
             "tls: {certificates: [{cert: %s, key: %s}]}\n", crt, key);
    X509_free(x);
    EVP_PKEY_free(k);
    h.tls_ctx = SSL_CTX_new(TLS_client_method());
    check(h.tls_ctx != NULL);
    SSL_CTX_set_mode(h.tls_ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

/* The client's handshake, the loop turning between its steps. */
static void
client_handshake(void)
{
    h.tls = SSL_new(h.tls_ctx);
    check(h.tls != NULL && SSL_set_fd(h.tls, h.client) == 1);
    SSL_set_connect_state(h.tls);
    SSL_set_tlsext_host_name(h.tls, "a");
    for (int i = 0; i < 16 && !SSL_is_init_finished(h.tls); i++) {
        (void)SSL_do_handshake(h.tls);
        settle();
    }
    check(SSL_is_init_finished(h.tls));
    ERR_clear_error();
}
#endif

static void
client_close(void)
{
    SSL_free(h.tls);
    h.tls = NULL;
    ERR_clear_error();
    close_fd(&h.client);
}

static void
setup_once(void)
{
    char err[1024], yaml[sizeof(config_yaml) + 256];
    struct config *cfg;

    if (h.rt != NULL)
        return;
    /* As portier's main() does: OpenSSL writes to sockets with write(), which a closed peer
     * answers with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    log_set_debug(false);
    snprintf(yaml, sizeof(yaml), "%s", config_yaml);
#ifdef FUZZ_TLS
    make_certificate(yaml, sizeof(yaml));
#endif
    cfg = config_parse("fuzz.yaml", yaml, strlen(yaml), err, sizeof(err));
    check(cfg != NULL);
    h.rt = runtime_new(cfg, err, sizeof(err));
    check(h.rt != NULL);
    config_unref(cfg);
}

/* Which of the script's 14 ops (op % 14, in the switch below) take an argument byte. */
static const bool takes_arg[14] = {true, true, true,  true, false, false, true,
                                   true, true, false, true, false, false, false};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    int sv[2];
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    size_t i = 0;

    setup_once();
    check(loop_init(&h.lp, h.rt, NULL, err, sizeof(err)) == 0);
    h.lp.pool = upconn_pool_new(&h.lp);
    check(h.lp.pool != NULL);
    upconn_pool_set_dial(h.lp.pool, dial);
    h.nservers = 0;
    h.refuse = h.deferred = false;
    h.client_reads = true;
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    h.client = sv[1];
    peer.sin_addr.s_addr = htonl(0x7f000001);
#ifdef FUZZ_TLS
    conn_accept(&h.lp, sv[0], (struct sockaddr *)&peer, sizeof(peer), "8443", true);
    client_handshake();
#else
    conn_accept(&h.lp, sv[0], (struct sockaddr *)&peer, sizeof(peer), "8080", false);
    settle();
#endif

    while (i < size) {
        uint8_t op = data[i++], arg = i < size ? data[i] : 0;
        size_t len;

        /* Ops that take an argument byte skip it; the script ends where an argument is missing. */
        if (takes_arg[op % 14]) {
            if (i >= size)
                break;
            i++;
        }
        switch (op % 14) {
        case 0: /* the client sends the next arg bytes */
            len = arg < size - i ? arg : size - i;
            client_send(data + i, len);
            i += len;
            break;
        case 1: /* server arg sends the next data[i] bytes */
            if (i >= size)
                break;
            len = data[i++];
            len = len < size - i ? len : size - i;
            send_fd(server_fd(arg), data + i, len);
            i += len;
            break;
        case 2:
            client_send(requests[arg % NELEMS(requests)], strlen(requests[arg % NELEMS(requests)]));
            break;
        case 3: /* server arg sends canned response data[i] */
            if (i >= size)
                break;
            send_fd(server_fd(arg), responses[data[i] % NELEMS(responses)],
                    strlen(responses[data[i] % NELEMS(responses)]));
            i++;
            break;
        case 4:
            if (h.tls != NULL && h.client >= 0)
                (void)SSL_shutdown(h.tls); /* close_notify first, as a TLS client would */
            if (h.client >= 0)
                shutdown(h.client, SHUT_WR);
            break;
        case 5:
            client_close();
            break;
        case 6:
            if (h.nservers > 0 && server_fd(arg) >= 0)
                shutdown(server_fd(arg), SHUT_WR);
            break;
        case 7:
            if (h.nservers > 0)
                close_fd(&h.servers[arg % h.nservers]);
            break;
        case 8:
            fire_timers(arg);
            break;
        case 9:
            h.client_reads = !h.client_reads;
            break;
        case 10:
            if (h.nservers > 0)
                h.server_reads[arg % h.nservers] = !h.server_reads[arg % h.nservers];
            break;
        case 11:
            h.refuse = !h.refuse;
            break;
        case 12:
            h.deferred = !h.deferred;
            break;
        case 13:
            conn_drain(&h.lp);
            break;
        }
        settle();
    }

    /* Both sides go away and every timer runs out: nothing may be left waiting. */
    client_close();
    for (unsigned s = 0; s < h.nservers; s++)
        close_fd(&h.servers[s]);
    for (int round = 0; round < 16 && h.lp.nconns > 0; round++) {
        settle();
        fire_timers(-1);
    }
    settle();
    check(h.lp.nconns == 0);

    conn_close_all(&h.lp, NULL);
    upconn_pool_drain(h.lp.pool);
    exchange_cache_free(&h.lp);
    conn_cache_free(&h.lp);
    loop_fini(&h.lp);
    upconn_pool_free(h.lp.pool);
    return 0;
}
