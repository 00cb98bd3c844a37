/*
 * libFuzzer target for http.c and http_body.c. Besides memory safety it checks invariants: the
 * scanner gives the same answer whole and in pieces, the body machine gives the same answer whole
 * and byte by byte, and every head the writers produce parses again to the same facts.
 *
 *   clang -std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iproxy/src \
 *       tests/fuzz/fuzz_http.c proxy/src/http.c proxy/src/http_body.c -lhttp_parser -o fuzz_http
 *   ./fuzz_http -max_total_time=60
 *
 * The first input byte picks the mode (request, response, chunked body) and flags; the rest is the
 * message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define MAX_HEAD 8192

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

static void
fuzz_request(const char *p, size_t n, unsigned flags)
{
    static char out[MAX_HEAD * 2];
    struct http_scan s;
    struct http_request req, again;
    struct http_forward fwd = {"192.0.2.1", "https", "443", "fallback.example", "rid", 3, flags};

    if (scan_both(HTTP_SCAN_REQUEST, p, n, &s) != 1)
        return;
    if (http_request_parse(&req, p, s.len) < 0) {
        check(req.error >= 400 && req.why != NULL);
        return;
    }
    size_t need = http_request_write(NULL, 0, &req, &fwd);
    check(need <= sizeof(out));
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

static void
fuzz_response(const char *p, size_t n, unsigned flags)
{
    static char out[MAX_HEAD * 2];
    struct http_scan s;
    struct http_response res, again;
    unsigned rsp = flags & (HTTP_RSP_F_HEAD | HTTP_RSP_F_UPGRADE);

    if (scan_both(HTTP_SCAN_RESPONSE, p, n, &s) != 1)
        return;
    if (http_response_parse(&res, p, s.len, rsp) < 0) {
        check(res.error == 502 && res.why != NULL);
        return;
    }
    unsigned wf = res.upgrade_websocket ? HTTP_RES_F_UPGRADE : 0;
    size_t need = http_response_write(out, sizeof(out), &res, wf);
    check(need <= sizeof(out));
    if (res.hdrs.n > HTTP_MAX_HEADERS - 4 || need > MAX_HEAD)
        return;
    check(http_response_parse(&again, out, need, rsp) == 0);
    check(again.status == res.status);
    check(again.framing == res.framing);
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
