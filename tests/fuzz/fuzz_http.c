/*
 * libFuzzer target for http.c and http_body.c. Besides memory safety it checks invariants: the
 * scanner gives the same answer whole and in pieces, the body machine gives the same answer whole
 * and byte by byte, every head the writers produce parses again to the same facts, and a request
 * trailer section filtered by http_body_filter_trailer() keeps what it should, drops what it
 * should, and ends where the framer that relays trailers whole says it ends.
 *
 * The parse from the marks the pieces' scan left agrees with the parse of the bytes alone.
 *
 * The first input byte picks the mode (request, response, chunked body) and flags; the rest is the
 * message. For responses, flag bits 0-1 say what the request was (HEAD, websocket upgrade), bits
 * 2-3 which client it goes back to and bit 4 that portier wants to close that connection. For
 * bodies, bit 0 sets a body limit, bit 1 gives the trailer filter a request head whose Connection
 * lists "a" and "x-b", and bit 2 raises the trailer limit so that the field count can run out.
 * Seeds: tests/fuzz/corpus/fuzz_http (tests/fuzz/make_corpus.py). Build and run with
 * tests/fuzz/run.sh, which links what the next line lists:
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

/* Scans whole and in two pieces, the second recording marks; both must agree. Returns the scan
 * result. */
static int
scan_both(enum http_scan_kind kind, const char *p, size_t n, struct http_scan *s,
          struct http_marks *marks)
{
    struct http_scan t;
    size_t half = n / 2, used = 0;
    int rc, rc2;

    http_scan_init(s, kind, MAX_HEAD);
    rc = http_scan_head(s, p, n);
    http_scan_init_marks(&t, kind, MAX_HEAD, marks);
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

static bool
spans_same(struct http_span a, struct http_span b)
{
    return a.len == b.len && (a.len == 0 || a.p == b.p);
}

static bool
headers_same(const struct http_headers *a, const struct http_headers *b)
{
    if (a->n != b->n || a->nconn != b->nconn)
        return false;
    for (unsigned i = 0; i < a->n; i++) {
        if (!spans_same(a->h[i].name, b->h[i].name) || !spans_same(a->h[i].value, b->h[i].value))
            return false;
    }
    return true;
}

static void
check_requests_same(const struct http_request *a, const struct http_request *b)
{
    check(a->error == b->error);
    if (a->error != 0) {
        check(strcmp(a->why, b->why) == 0);
        return;
    }
    check(spans_same(a->method, b->method) && spans_same(a->target, b->target) &&
          spans_same(a->path, b->path) && spans_same(a->query, b->query) &&
          spans_same(a->host, b->host) && spans_same(a->request_id, b->request_id));
    check(headers_same(&a->hdrs, &b->hdrs));
    check(a->content_length == b->content_length && a->framing == b->framing &&
          a->version == b->version && a->has_host == b->has_host && a->is_head == b->is_head &&
          a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue &&
          a->upgrade_websocket == b->upgrade_websocket);
}

static void
fuzz_request(const char *p, size_t n, unsigned flags)
{
    static char out[MAX_HEAD * 2 + WRITE_SLACK];
    static struct http_marks marks;
    struct http_scan s;
    struct http_request req, again, marked;
    struct http_forward fwd = {"192.0.2.1", "https", "443", "fallback.example", "rid", 3, flags};

    if (scan_both(HTTP_SCAN_REQUEST, p, n, &s, &marks) != 1)
        return;
    http_request_parse_marks(&marked, p, s.len, &marks);
    http_request_parse(&req, p, s.len);
    check_requests_same(&req, &marked);
    if (req.error != 0) {
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
    static struct http_marks marks;
    struct http_scan s;
    struct http_request req;
    struct http_response res, again, marked;
    unsigned rsp = flags & (HTTP_RSP_F_HEAD | HTTP_RSP_F_UPGRADE);
    const char *client = clients[(flags >> 2) & 3];

    if (scan_both(HTTP_SCAN_RESPONSE, p, n, &s, &marks) != 1)
        return;
    http_response_parse_marks(&marked, p, s.len, rsp, &marks);
    http_response_parse(&res, p, s.len, rsp);
    check(res.error == marked.error && res.status == marked.status &&
          res.framing == marked.framing && res.keep_alive == marked.keep_alive &&
          spans_same(res.reason, marked.reason) && headers_same(&res.hdrs, &marked.hdrs));
    if (res.error != 0) {
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

/* Names no filtered request trailer may hold, written out here rather than taken from http.c. */
static const char *const never_in_trailer[] = {
    "content-length", "transfer-encoding", "te",      "trailer",       "host",
    "connection",     "keep-alive",        "upgrade", "forwarded",     "x-forwarded-for",
    "x-real-ip",      "x-request-id",      "expect",  "authorization", "cookie",
    "range",          "if-match",          "a",       "x-b",
};

static bool
name_is(const char *p, size_t len, const char *lc)
{
    if (strlen(lc) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c | 0x20);
        if (c != (unsigned char)lc[i])
            return false;
    }
    return true;
}

/* The length of the field line at p, of at most n bytes (CRLF included), and of its name. */
static size_t
field_line(const char *p, size_t n, size_t *name_len)
{
    const char *cr = memchr(p, '\r', n);
    const char *colon = cr != NULL ? memchr(p, ':', (size_t)(cr - p)) : NULL;

    check(cr != NULL && colon != NULL && (size_t)(cr - p) + 2 <= n);
    *name_len = (size_t)(colon - p);
    return (size_t)(cr - p) + 2;
}

/*
 * Checks a filtered section out[0..w) against the section in[0..u) it came from: the kept lines
 * are exactly the input's lines that http_trailer_forbidden() lets through, byte for byte and in
 * order, none named as never_in_trailer says (the head's Connection options included when it is
 * given), then the final CRLF; and the output is itself a valid trailer section.
 */
static void
check_filtered(const char *in, size_t u, const char *out, size_t w, const struct http_headers *req)
{
    size_t i = 0, o = 0, name_len, len;
    struct http_scan s;

    check(w <= u && w >= 2 && memcmp(out + w - 2, "\r\n", 2) == 0);
    check(u >= 2 && memcmp(in + u - 2, "\r\n", 2) == 0);
    while (i < u - 2) {
        len = field_line(in + i, u - 2 - i, &name_len);
        if (!http_trailer_forbidden(req, (struct http_span){in + i, name_len})) {
            check(o + len <= w - 2 && memcmp(out + o, in + i, len) == 0);
            o += len;
        }
        i += len;
    }
    check(o == w - 2);
    for (o = 0; o < w - 2; o += len) {
        len = field_line(out + o, w - 2 - o, &name_len);
        for (size_t k = 0; k < sizeof(never_in_trailer) / sizeof(never_in_trailer[0]); k++) {
            if (req == NULL && k >= sizeof(never_in_trailer) / sizeof(never_in_trailer[0]) - 2)
                break; /* "a" and "x-b" are only forbidden by the head's Connection */
            check(!name_is(out + o, name_len, never_in_trailer[k]));
        }
    }
    http_scan_init(&s, HTTP_SCAN_TRAILER, w);
    check(http_scan_head(&s, out, w) == 1 && s.len == w);
}

/*
 * The body again, framed with HTTP_BODY_F_STOP_TRAILER and its trailer section filtered. a is the
 * framer that relays the section whole, rc_a and used_a its answer for all n bytes. The stop comes
 * at the same byte whole and byte by byte, right after a last-chunk line; the filter gives the
 * same answer whole and in two pieces, with either size of output buffer its contract allows; it
 * ends where a ends, refuses what a refuses, and refuses more only for the field count.
 */
static void
fuzz_trailer(const char *p, size_t n, uint64_t max, uint32_t tmax, const struct http_headers *req,
             const struct http_body *a, int rc_a, size_t used_a)
{
    static char out[2][MAX_HEAD + 2];
    struct http_body s, t, f[2];
    size_t off = 0, off_t = 0, used, u[2], w[2];
    int rc, rc_t = 0, rc_f[2];

    http_body_init_flags(&s, HTTP_FRAMING_CHUNKED, 0, max, tmax, HTTP_BODY_F_STOP_TRAILER);
    rc = http_body_feed(&s, p, n, &off);
    http_body_init_flags(&t, HTTP_FRAMING_CHUNKED, 0, max, tmax, HTTP_BODY_F_STOP_TRAILER);
    for (size_t i = 0; i < n; i++) {
        rc_t = http_body_feed(&t, p + i, 1, &used);
        off_t += used;
        if (rc_t != 0)
            break;
    }
    check(rc == rc_t && s.size == t.size && s.size == a->size);
    if (rc != HTTP_BODY_TRAILER) {
        /* Before the trailer section both framers are one. */
        check(rc == rc_a && rc != 1);
        check(rc == 0 || s.error == a->error);
        return;
    }
    check(off == off_t && off >= 3 && p[off - 1] == '\n' && p[off - 2] == '\r');
    check(rc_a != -1 || used_a >= off);
    check(!http_body_done(&s) && http_body_feed(&s, p + off, n - off, &used) == 2 && used == 0);

    /* The section as it grows: half of it first (need more, or the same answer), then all. The
     * contract allows either cap: len (here at most the buffer, which is above tmax + 2 anyway),
     * or tmax + 2. */
    size_t len = n - off, caps[2] = {len < sizeof(out[0]) ? len : sizeof(out[0]), (size_t)tmax + 2};
    for (int k = 0; k < 2; k++) {
        f[k] = s;
        rc_f[k] =
            http_body_filter_trailer(&f[k], p + off, len / 2, req, out[k], caps[k], &u[k], &w[k]);
        if (rc_f[k] == 0)
            rc_f[k] =
                http_body_filter_trailer(&f[k], p + off, len, req, out[k], caps[k], &u[k], &w[k]);
    }
    t = s;
    rc = http_body_filter_trailer(&t, p + off, len, req, out[1], caps[0], &used, &w[1]);
    check(rc == rc_f[0] && rc == rc_f[1]);
    if (rc < 0) {
        check(f[0].error == t.error && f[1].error == t.error);
        check(t.error == 400 || t.error == 431);
        /* Stricter than the relaying framer only in counting fields, as heads do. */
        check(rc_a != 1 || (t.error == 431 && strcmp(t.why, "too many trailer fields") == 0));
        return;
    }
    if (rc == 0) {
        check(used == 0 && w[1] == 0 && rc_a != 1 && !http_body_done(&t));
        return;
    }
    check(rc_a == 1 && off + used == used_a && http_body_done(&t));
    check(u[0] == used && u[1] == used && w[0] == w[1] && memcmp(out[0], out[1], w[0]) == 0);
    check_filtered(p + off, used, out[0], w[0], req);

    /* Filtering what was filtered changes nothing. */
    http_body_init_flags(&t, HTTP_FRAMING_CHUNKED, 0, 0, tmax, HTTP_BODY_F_STOP_TRAILER);
    check(http_body_feed(&t, "0\r\n", 3, &used) == HTTP_BODY_TRAILER);
    check(http_body_filter_trailer(&t, out[0], w[0], req, out[1], w[0], &used, &w[1]) == 1);
    check(used == w[0] && w[1] == w[0] && memcmp(out[0], out[1], w[0]) == 0);
}

static void
fuzz_body(const char *p, size_t n, unsigned flags)
{
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               "Connection: a, x-b, keep-alive\r\n\r\n";
    static struct http_request req;
    struct http_body a, b;
    size_t used_a = 0, used_b = 0, used;
    int rc_a, rc_b = 0;
    uint64_t max = (flags & 1) ? 64 : 0;
    uint32_t tmax = (flags & 4) ? 4096 : 32;

    if (req.hdrs.n == 0)
        check(http_request_parse(&req, head, sizeof(head) - 1) == 0);
    http_body_init(&a, HTTP_FRAMING_CHUNKED, 0, max, tmax);
    rc_a = http_body_feed(&a, p, n, &used_a);
    fuzz_trailer(p, n, max, tmax, (flags & 2) ? &req.hdrs : NULL, &a, rc_a, used_a);
    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, max, tmax);
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
    http_body_init(&d, HTTP_FRAMING_CHUNKED, 0, max, tmax);
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
