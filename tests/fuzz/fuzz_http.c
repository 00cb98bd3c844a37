/*
 * libFuzzer target for http.c and http_body.c. Besides memory safety it checks invariants: the
 * scanner gives the same answer whole and in pieces, the body machine gives the same answer whole
 * and byte by byte, and every head the writers produce parses again to the same facts.
 *
 * The first input byte picks the mode (request, response, chunked body) and flags; the rest is the
 * message. For responses, flag bits 0-1 say what the request was (HEAD, websocket upgrade), bits
 * 2-3 which client it goes back to and bit 4 that portier wants to close that connection. Seeds:
 * tests/fuzz/corpus/fuzz_http (tests/fuzz/make_corpus.py). Build and run with tests/fuzz/run.sh,
 * which links what the next line lists:
 *
 * fuzz-links: proxy/src/http.c proxy/src/http_body.c lib/wbuf.c -lhttp_parser
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define MAX_HEAD 8192
/* What the writers add to a head besides what it holds, at most: Connection, Upgrade, the
 * X-Forwarded-* fields and X-Real-IP with their values, an X-Request-Id of up to 128 characters. */
#define WRITE_SLACK 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Scans whole and in two non-contiguous pieces; both must agree. Returns the scan result. */
static int
scan_both(enum http_scan_kind kind, const char *p, size_t n, struct http_scan *s)
{
    struct http_scan t;
    size_t half = n / 2, used = 0;
    int rc, rc2;

    http_scan_init(s, kind, MAX_HEAD);
    rc = http_scan_head(s, p, n);
    http_scan_init(&t, kind, MAX_HEAD);
    rc2 = http_scan_feed(&t, p, half, &used);
    if (rc2 == 0)
        rc2 = http_scan_feed(&t, p + half, n - half, &used);
    check(rc == rc2);
    check(rc != 1 || s->len == t.len);
    check(rc != -1 || s->error == t.error);
    return rc;
}

/* An error page, whatever its status and request id, is a response we would accept ourselves, of
 * the length its head says, and never longer than HTTP_ERROR_MAX. */
static void
check_error_page(int status, const char *id, size_t id_len, bool head)
{
    static char page[HTTP_ERROR_MAX + 1];
    unsigned ef = head ? HTTP_ERR_F_HEAD : HTTP_ERR_F_HTML | HTTP_ERR_F_CLOSE;
    size_t len = http_error_write(page, sizeof(page), status, id, id_len, ef);
    struct http_scan s;
    struct http_response res;

    check(len <= HTTP_ERROR_MAX);
    http_scan_init(&s, HTTP_SCAN_RESPONSE, MAX_HEAD);
    check(http_scan_head(&s, page, len) == 1);
    check(http_response_parse(&res, page, s.len, head ? HTTP_RSP_F_HEAD : 0) == 0);
    check(res.status == status && res.has_content_length);
    check(head ? s.len == len : res.content_length == len - s.len);
}

static void
fuzz_request(const char *p, size_t n, unsigned flags)
{
    static char out[MAX_HEAD * 2 + WRITE_SLACK];
    struct http_scan s;
    struct http_request req, again;
    struct http_forward fwd = {"192.0.2.1", "https", "443", "fallback.example", "rid", 3, flags};

    if (scan_both(HTTP_SCAN_REQUEST, p, n, &s) != 1)
        return;
    if (http_request_parse(&req, p, s.len) < 0) {
        check(req.error >= 400 && req.why != NULL);
        check_error_page(req.error, NULL, 0, false);
        return;
    }
    check_error_page(502, req.request_id.p, req.request_id.len, req.is_head);
    /* Each byte of the head is written at most twice (the host goes to Host and to
     * X-Forwarded-Host); conn.c grows its buffer to what this returns. */
    size_t need = http_request_write(NULL, 0, &req, &fwd);
    check(need <= 2 * s.len + WRITE_SLACK);
    check(http_request_write(out, sizeof(out), &req, &fwd) == need);
    /* What we send must be a request we would accept ourselves, saying the same thing. */
    if (req.hdrs.n > HTTP_MAX_HEADERS - 12 || need > MAX_HEAD)
        return;
    check(http_request_parse(&again, out, need) == 0);
    check(again.version == 11);
    check(again.framing == req.framing);
    check(again.content_length == req.content_length);
    check(again.upgrade_websocket == req.upgrade_websocket);
    check(again.method.len == req.method.len &&
          memcmp(again.method.p, req.method.p, req.method.len) == 0);
    check(again.query.len == req.query.len);
    check(again.keep_alive);
}

/* The clients a response may go back to, as http_response_flags() tells them apart. */
static const char *const clients[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
};

static void
fuzz_response(const char *p, size_t n, unsigned flags)
{
    static char out[MAX_HEAD * 2];
    struct http_scan s;
    struct http_request req;
    struct http_response res, again;
    unsigned rsp = flags & (HTTP_RSP_F_HEAD | HTTP_RSP_F_UPGRADE);
    const char *client = clients[(flags >> 2) & 3];

    if (scan_both(HTTP_SCAN_RESPONSE, p, n, &s) != 1)
        return;
    if (http_response_parse(&res, p, s.len, rsp) < 0) {
        check(res.error == 502 && res.why != NULL);
        return;
    }
    check(http_request_parse(&req, client, strlen(client)) == 0);
    unsigned wf = http_response_flags(&req, &res, !(flags & 16));
    if (wf & HTTP_RES_F_SKIP) {
        check(res.interim && req.version == 10);
        return;
    }
    check(!(wf & HTTP_RES_F_UPGRADE) == !res.upgrade_websocket);
    size_t need = http_response_write(out, sizeof(out), &res, wf);
    check(need <= sizeof(out));
    if (res.hdrs.n > HTTP_MAX_HEADERS - 4 || need > MAX_HEAD)
        return;
    check(http_response_parse(&again, out, need, rsp) == 0);
    check(again.status == res.status);
    /* An HTTP/1.0 client gets a chunked body decoded, delimited by the close. */
    bool dechunked = (wf & HTTP_RES_F_DECHUNK) && res.framing == HTTP_FRAMING_CHUNKED;
    check(again.framing == (dechunked ? HTTP_FRAMING_CLOSE : res.framing));
    check(!(wf & HTTP_RES_F_DECHUNK) || !again.chunked);
    /* A body that ends with the close, or a close we want, is never sent on a kept connection. */
    check(again.framing != HTTP_FRAMING_CLOSE || (wf & HTTP_RES_F_CLOSE));
    check(!(flags & 16) || res.interim || (wf & (HTTP_RES_F_CLOSE | HTTP_RES_F_UPGRADE)));
    check(!(wf & HTTP_RES_F_CLOSE) || !again.keep_alive);
    check(again.upgrade_websocket == res.upgrade_websocket);
    if (res.status >= 200 && res.status != 204)
        check(again.content_length == res.content_length);
}

static void
fuzz_body(const char *p, size_t n, unsigned flags)
{
    struct http_body a, b;
    size_t used_a = 0, used_b = 0, used;
    int rc_a, rc_b = 0;
    uint64_t max = (flags & 1) ? 64 : 0;

    http_body_init(&a, HTTP_FRAMING_CHUNKED, 0, max, 32);
    rc_a = http_body_feed(&a, p, n, &used_a);
    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, max, 32);
    for (size_t i = 0; i < n; i++) {
        rc_b = http_body_feed(&b, p + i, 1, &used);
        used_b += used;
        if (rc_b != 0)
            break;
    }
    check(rc_a == rc_b);
    check(a.size == b.size);
    if (rc_a < 0) {
        check(a.error == b.error);
        return;
    }
    check(used_a == used_b);

    /* Decoding: payload bytes add up to the size, the framing to the rest. */
    struct http_body d;
    size_t off = 0, payload = 0;
    int rc = 0;
    http_body_init(&d, HTTP_FRAMING_CHUNKED, 0, max, 32);
    while (off < n && rc == 0) {
        size_t doff, dlen;
        rc = http_body_next(&d, p + off, n - off, &used, &doff, &dlen);
        check(rc >= 0);
        check(doff + dlen <= used);
        payload += dlen;
        off += used;
    }
    check(rc == rc_a);
    check(off == used_a);
    check(payload == a.size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 3, flags = data[0] / 3;
    const char *p = (const char *)data + 1;

    switch (mode) {
    case 0:
        fuzz_request(p, size - 1, flags & (HTTP_FWD_F_TRUSTED | HTTP_FWD_F_DROP_EXPECT));
        break;
    case 1:
        fuzz_response(p, size - 1, flags);
        break;
    default:
        fuzz_body(p, size - 1, flags);
        break;
    }
    return 0;
}
