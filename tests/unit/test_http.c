/* Unit tests for http.c and http_body.c: refusals byte for byte, valid heads, body framing fed
 * whole and one byte at a time, and the exact bytes the head writers produce. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_HEAD 16384

/* A raw message with an explicit length, so that rows may hold NUL bytes. */
#define RAW(s) s, sizeof(s) - 1

/* Two parses of one head agree: the same outcome, the same spans (pointers and lengths) and the
 * same facts. */
static void
assert_spans_same(struct http_span a, struct http_span b, const char *what)
{
    if (a.len != b.len || (a.len > 0 && a.p != b.p))
        fail_msg("%s: \"%.*s\" and \"%.*s\" differ", what, (int)a.len, a.p, (int)b.len, b.p);
}

static void
assert_headers_same(const struct http_headers *a, const struct http_headers *b)
{
    assert_int_equal(a->n, b->n);
    for (unsigned i = 0; i < a->n; i++) {
        assert_spans_same(a->h[i].name, b->h[i].name, "field name");
        assert_spans_same(a->h[i].value, b->h[i].value, "field value");
    }
    assert_int_equal(a->nconn, b->nconn);
}

static void
assert_requests_same(const struct http_request *a, const struct http_request *b)
{
    assert_int_equal(a->error, b->error);
    if (a->error != 0) {
        assert_string_equal(a->why, b->why);
        return;
    }
    assert_spans_same(a->method, b->method, "method");
    assert_spans_same(a->target, b->target, "target");
    assert_spans_same(a->path, b->path, "path");
    assert_spans_same(a->query, b->query, "query");
    assert_spans_same(a->host, b->host, "host");
    assert_spans_same(a->request_id, b->request_id, "request id");
    assert_headers_same(&a->hdrs, &b->hdrs);
    assert_true(a->content_length == b->content_length && a->framing == b->framing &&
                a->head_len == b->head_len && a->version == b->version &&
                a->has_host == b->has_host && a->absolute_form == b->absolute_form &&
                a->is_head == b->is_head && a->has_content_length == b->has_content_length &&
                a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue &&
                a->upgrade_websocket == b->upgrade_websocket &&
                a->upgrade_dropped == b->upgrade_dropped);
}

/* Scans raw whole and one byte at a time (both must agree), then parses the head: from the bytes
 * alone, and from the marks the bytewise scan left (both must agree too). Returns 0 or the
 * refusal status; *head_len gets the head length. */
static int
request_status(const char *raw, size_t len, size_t max, struct http_request *req, size_t *head_len)
{
    static struct http_request marked;
    struct http_scan whole, bytes;
    struct http_marks marks;
    int rc, rc1 = 0;

    memset(req, 0, sizeof(*req));
    http_scan_init(&whole, HTTP_SCAN_REQUEST, max);
    rc = http_scan_head(&whole, raw, len);
    http_scan_init_marks(&bytes, HTTP_SCAN_REQUEST, max, &marks);
    for (size_t i = 1; i <= len; i++) {
        rc1 = http_scan_head(&bytes, raw, i);
        if (rc1 != 0)
            break;
    }
    assert_int_equal(rc, rc1);
    if (rc < 0) {
        assert_int_equal(whole.error, bytes.error);
        assert_string_equal(whole.why, bytes.why);
        return whole.error;
    }
    assert_int_equal(whole.len, bytes.len);
    if (rc == 0)
        return -1; /* incomplete */
    *head_len = whole.len;
    rc = http_request_parse(req, raw, whole.len);
    assert_int_equal(http_request_parse_marks(&marked, raw, whole.len, &marks), rc);
    assert_requests_same(req, &marked);
    if (rc < 0) {
        assert_non_null(req->why);
        return req->error;
    }
    return 0;
}

struct refusal {
    const char *name;
    const char *raw;
    size_t len;
    int status;
};

#define H11 "GET / HTTP/1.1\r\nHost: a.com\r\n"
#define P11 "POST / HTTP/1.1\r\nHost: a.com\r\n"

static const struct refusal refusals[] = {
    /* Framing ambiguity. */
    {"CL with TE", RAW(P11 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"TE with CL", RAW(P11 "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400},
    {"two equal CL", RAW(P11 "Content-Length: 3\r\nContent-Length: 3\r\n\r\n"), 400},
    {"two different CL", RAW(P11 "Content-Length: 3\r\nContent-Length: 4\r\n\r\n"), 400},
    {"CL list", RAW(P11 "Content-Length: 3, 3\r\n\r\n"), 400},
    {"CL empty", RAW(P11 "Content-Length: \r\n\r\n"), 400},
    {"CL plus sign", RAW(P11 "Content-Length: +3\r\n\r\n"), 400},
    {"CL minus sign", RAW(P11 "Content-Length: -3\r\n\r\n"), 400},
    {"CL hex", RAW(P11 "Content-Length: 0x10\r\n\r\n"), 400},
    {"CL space inside", RAW(P11 "Content-Length: 1 2\r\n\r\n"), 400},
    {"CL 2^63", RAW(P11 "Content-Length: 9223372036854775808\r\n\r\n"), 400},
    {"CL overflow", RAW(P11 "Content-Length: 99999999999999999999999\r\n\r\n"), 400},
    {"TE xchunked", RAW(P11 "Transfer-Encoding: xchunked\r\n\r\n"), 400},
    {"TE chunked, identity", RAW(P11 "Transfer-Encoding: chunked, identity\r\n\r\n"), 400},
    {"TE identity", RAW(P11 "Transfer-Encoding: identity\r\n\r\n"), 400},
    {"TE gzip", RAW(P11 "Transfer-Encoding: gzip\r\n\r\n"), 400},
    {"TE empty", RAW(P11 "Transfer-Encoding: \r\n\r\n"), 400},
    {"TE chunked with params", RAW(P11 "Transfer-Encoding: chunked;q=1\r\n\r\n"), 400},
    {"TE gzip, chunked", RAW(P11 "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501},
    {"TE chunked, chunked", RAW(P11 "Transfer-Encoding: chunked, chunked\r\n\r\n"), 501},
    {"two TE fields", RAW(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     400},
    {"TE in HTTP/1.0", RAW("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"TE with leading garbage",
     RAW(P11 "Transfer-Encoding: \x0b"
             "chunked\r\n\r\n"),
     400},
    /* Field syntax. */
    {"obs-fold", RAW(H11 "X-A: 1\r\n 2\r\n\r\n"), 400},
    {"obs-fold with tab", RAW(H11 "X-A: 1\r\n\t2\r\n\r\n"), 400},
    {"space before colon", RAW("GET / HTTP/1.1\r\nHost : a.com\r\n\r\n"), 400},
    {"tab before colon", RAW(H11 "Content-Length\t: 0\r\n\r\n"), 400},
    {"empty header name", RAW(H11 ": x\r\n\r\n"), 400},
    {"bad name char", RAW(H11 "X(A): 1\r\n\r\n"), 400},
    {"non-ASCII name", RAW(H11 "X-\xc3\xa9: 1\r\n\r\n"), 400},
    {"header without colon", RAW(H11 "X-A\r\n\r\n"), 400},
    {"leading space in first field", RAW("GET / HTTP/1.1\r\n Host: a.com\r\n\r\n"), 400},
    /* Bytes. */
    {"bare LF after request line", RAW("GET / HTTP/1.1\nHost: a.com\r\n\r\n"), 400},
    {"bare LF after field", RAW(H11 "X-A: 1\n\r\n"), 400},
    {"LF-only head", RAW("GET / HTTP/1.1\nHost: a.com\n\n"), 400},
    {"bare CR in value", RAW(H11 "X-A: 1\r2\r\n\r\n"), 400},
    {"bare CR at end", RAW(H11 "\rX"), 400},
    {"NUL in value", RAW(H11 "X-A: a\0b\r\n\r\n"), 400},
    {"NUL in target", RAW("GET /a\0b HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"control in value",
     RAW(H11 "X-A: a\x01"
             "b\r\n\r\n"),
     400},
    {"DEL in value", RAW(H11 "X-A: a\x7f\r\n\r\n"), 400},
    {"ESC in target", RAW("GET /\x1b HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"non-ASCII target", RAW("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"TLS ClientHello", RAW("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400},
    {"leading space", RAW(" GET / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"lone LF first", RAW("\nGET / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    /* Request line. */
    {"two spaces", RAW("GET  / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"space in target", RAW("GET /a b HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"HTTP/0.9 line", RAW("GET /\r\n\r\n"), 400},
    {"no version", RAW("GET / \r\n\r\n"), 400},
    {"lowercase http", RAW("GET / http/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"two-digit minor", RAW("GET / HTTP/1.10\r\nHost: a.com\r\n\r\n"), 400},
    {"version without minor", RAW("GET / HTTP/2\r\nHost: a.com\r\n\r\n"), 400},
    {"trailing space after version", RAW("GET / HTTP/1.1 \r\nHost: a.com\r\n\r\n"), 400},
    {"HTTP/2.0", RAW("GET / HTTP/2.0\r\nHost: a.com\r\n\r\n"), 505},
    {"HTTP/0.9", RAW("GET / HTTP/0.9\r\nHost: a.com\r\n\r\n"), 505},
    {"HTTP/1.2", RAW("GET / HTTP/1.2\r\nHost: a.com\r\n\r\n"), 505},
    {"fragment", RAW("GET /a#b HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"CONNECT", RAW("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n"), 501},
    {"unknown method", RAW("FOO / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 501},
    {"lowercase method", RAW("get / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 501},
    {"very long method", RAW("ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n\r\n"), 501},
    {"bad method char", RAW("GE(T / HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"authority-form GET", RAW("GET a.com:80 HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"asterisk with GET", RAW("GET * HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"relative target", RAW("GET a/b HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"ftp absolute-form", RAW("GET ftp://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"userinfo", RAW("GET http://u:p@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"empty URI host", RAW("GET http:///x HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"bad URI port", RAW("GET http://a.com:99999/ HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400},
    {"absolute-form, no Host in 1.1", RAW("GET http://a.com/ HTTP/1.1\r\n\r\n"), 400},
    /* Host. */
    {"no Host in 1.1", RAW("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400},
    {"two Host", RAW("GET / HTTP/1.1\r\nHost: a.com\r\nHost: a.com\r\n\r\n"), 400},
    {"two Host, absolute-form", RAW("GET http://a.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
     400},
    {"Host with space", RAW("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400},
    {"Host with userinfo", RAW("GET / HTTP/1.1\r\nHost: u@a.com\r\n\r\n"), 400},
    {"Host with path", RAW("GET / HTTP/1.1\r\nHost: a.com/x\r\n\r\n"), 400},
    {"Host port too big", RAW("GET / HTTP/1.1\r\nHost: a.com:65536\r\n\r\n"), 400},
    {"Host port not digits", RAW("GET / HTTP/1.1\r\nHost: a.com:8x\r\n\r\n"), 400},
    {"Host unclosed IPv6", RAW("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400},
    {"Host bad percent", RAW("GET / HTTP/1.1\r\nHost: a%zz.com\r\n\r\n"), 400},
    {"Host only port", RAW("GET / HTTP/1.1\r\nHost: :80\r\n\r\n"), 400},
    /* Other fields. */
    {"Expect other", RAW(P11 "Content-Length: 1\r\nExpect: 200-ok\r\n\r\n"), 417},
    {"bad Connection option", RAW(H11 "Connection: keep alive\r\n\r\n"), 400},
    {"17 Connection options", RAW(H11 "Connection: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\r\n\r\n"),
     400},
};

static void
test_request_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(refusals); i++) {
        struct http_request req;
        size_t head_len = 0;
        int st = request_status(refusals[i].raw, refusals[i].len, MAX_HEAD, &req, &head_len);

        if (st != refusals[i].status)
            fail_msg("%s: got %d, want %d", refusals[i].name, st, refusals[i].status);
    }
}

/* Builds "GET / HTTP/1.1\r\nHost: a.com\r\n" + n fields + "\r\n" into buf. */
static size_t
many_fields(char *buf, size_t cap, unsigned n)
{
    size_t len = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: a.com\r\n");

    for (unsigned i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "X-F%u: v\r\n", i);
    len += (size_t)snprintf(buf + len, cap - len, "\r\n");
    return len;
}

static void
test_request_limits(void **state)
{
    static char buf[40000];
    struct http_request req;
    size_t len, head_len;

    (void)state;
    /* 99 fields + Host = 100: accepted; one more: 431. */
    len = many_fields(buf, sizeof(buf), HTTP_MAX_HEADERS - 1);
    assert_int_equal(request_status(buf, len, MAX_HEAD, &req, &head_len), 0);
    assert_int_equal(req.hdrs.n, HTTP_MAX_HEADERS);
    len = many_fields(buf, sizeof(buf), HTTP_MAX_HEADERS);
    assert_int_equal(request_status(buf, len, MAX_HEAD, &req, &head_len), 431);

    /* A head of exactly max bytes is accepted, one byte more is 431. */
    len = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a.com\r\nX: %s\r\n\r\n", "");
    assert_int_equal(request_status(buf, len, len, &req, &head_len), 0);
    assert_int_equal(head_len, len);
    assert_int_equal(request_status(buf, len, len - 1, &req, &head_len), 431);

    /* A request line longer than max: 414, refused before its end arrives. */
    /* NOLINTNEXTLINE(bugprone-not-null-terminated-result): bytes with a length, not a string */
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', 20000);
    assert_int_equal(request_status(buf, 20005, MAX_HEAD, &req, &head_len), 414);

    /* A long field value: 431, also before the head ends. */
    len = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a.com\r\nX: ");
    memset(buf + len, 'v', 20000);
    assert_int_equal(request_status(buf, len + 20000, MAX_HEAD, &req, &head_len), 431);

    /* Garbage is refused on its first byte, not at the timeout. */
    struct http_scan s;
    http_scan_init(&s, HTTP_SCAN_REQUEST, MAX_HEAD);
    assert_int_equal(http_scan_head(&s, "\x16", 1), -1);
    assert_int_equal(s.error, 400);
    http_scan_init(&s, HTTP_SCAN_REQUEST, MAX_HEAD);
    assert_int_equal(http_scan_head(&s, "GET / HTTP/1.1\n", 15), -1);
    assert_string_equal(s.why, "bare LF in head");
}

static void
test_scan_feed_pieces(void **state)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a.com\r\n\r\nNEXT";
    struct http_scan s;
    size_t used, total = 0;

    (void)state;
    /* Non-contiguous pieces of 3 bytes: the head ends in the piece that holds its last LF. */
    http_scan_init(&s, HTTP_SCAN_REQUEST, MAX_HEAD);
    for (size_t off = 0; off < sizeof(raw) - 1; off += 3) {
        char piece[3];
        size_t n = sizeof(raw) - 1 - off < 3 ? sizeof(raw) - 1 - off : 3;

        memcpy(piece, raw + off, n);
        int rc = http_scan_feed(&s, piece, n, &used);
        total += used;
        if (rc == 1)
            break;
        assert_int_equal(rc, 0);
        assert_int_equal(used, n);
    }
    assert_int_equal(s.len, sizeof(raw) - 1 - 4);
    assert_int_equal(total, s.len);
    /* Sticky afterwards. */
    assert_int_equal(http_scan_feed(&s, "x", 1, &used), 1);
    assert_int_equal(used, 0);
}

static bool
span_equals(struct http_span s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

#define assert_span(s, want)                                                                       \
    do {                                                                                           \
        if (!span_equals((s), (want)))                                                             \
            fail_msg("%s: got \"%.*s\", want \"%s\"", #s, (int)(s).len, (s).p, (want));            \
    } while (0)

static void
parse_ok(const char *raw, struct http_request *req)
{
    size_t head_len = 0;
    int st = request_status(raw, strlen(raw), MAX_HEAD, req, &head_len);

    if (st != 0)
        fail_msg("refused with %d (%s): %s", st, req->why ? req->why : "scan", raw);
}

/* The marks of a head that came in non-contiguous pieces (as from an evbuffer's chain) serve the
 * contiguous copy the exchange parses, and stale marks are refused rather than trusted. */
static void
test_marks_from_pieces(void **state)
{
    static const char raw[] = "\r\nPOST /a?b HTTP/1.1\r\nHost: a.com:8080\r\nX-Empty:\r\n"
                              "Content-Length: 5\r\nConnection: keep-alive, x-hop\r\n"
                              "X-Request-Id:  abc\t \r\n\r\nhello";
    static struct http_request a, b;
    struct http_scan s;
    struct http_marks marks;
    size_t used = 0, head = sizeof(raw) - 1 - 5;

    (void)state;
    http_scan_init_marks(&s, HTTP_SCAN_REQUEST, MAX_HEAD, &marks);
    for (size_t off = 0; off < sizeof(raw) - 1; off += 3) {
        char piece[3];
        size_t n = sizeof(raw) - 1 - off < 3 ? sizeof(raw) - 1 - off : 3;

        memcpy(piece, raw + off, n);
        if (http_scan_feed(&s, piece, n, &used) == 1)
            break;
    }
    assert_int_equal(s.len, head);
    assert_int_equal(http_request_parse(&a, raw, head), 0);
    assert_int_equal(http_request_parse_marks(&b, raw, head, &marks), 0);
    assert_requests_same(&a, &b);
    assert_int_equal(b.hdrs.n, 5);
    assert_int_equal(b.hdrs.h[1].value.len, 0);
    assert_int_equal(b.request_id.len, 3);
    assert_memory_equal(b.request_id.p, "abc", 3);
    assert_int_equal(b.content_length, 5);
    assert_int_equal(b.hdrs.nconn, 2);

    /* Marks of another length, and of a scan that has not finished, are not used. */
    assert_int_equal(http_request_parse_marks(&b, raw, head - 2, &marks), -1);
    assert_int_equal(b.error, 400);
    assert_string_equal(b.why, "head does not match its scan");
    http_scan_init_marks(&s, HTTP_SCAN_REQUEST, MAX_HEAD, &marks);
    assert_int_equal(http_scan_head(&s, raw, 10), 0);
    assert_int_equal(http_request_parse_marks(&b, raw, head, &marks), -1);
    assert_string_equal(b.why, "head does not match its scan");
}

/* Every method http-parser knows is forwarded (portier's list is its list), exactly as spelled. */
static void
test_request_methods(void **state)
{
    static const char *const known[] = {
        "DELETE",   "GET",        "HEAD",     "POST",   "PUT",       "OPTIONS",     "TRACE",
        "COPY",     "LOCK",       "MKCOL",    "MOVE",   "PROPFIND",  "PROPPATCH",   "SEARCH",
        "UNLOCK",   "BIND",       "REBIND",   "UNBIND", "ACL",       "REPORT",      "MKACTIVITY",
        "CHECKOUT", "MERGE",      "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH",
        "PURGE",    "MKCALENDAR", "LINK",     "UNLINK", "SOURCE"};
    static const char *const unknown[] = {"GE", "GETT", "Get", "PURGEX", "M_SEARCH", "BREW"};
    static struct http_request req;
    char raw[128];

    (void)state;
    for (size_t i = 0; i < N(known); i++) {
        snprintf(raw, sizeof(raw), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", known[i]);
        parse_ok(raw, &req);
        assert_span(req.method, known[i]);
        assert_int_equal(req.is_head, strcmp(known[i], "HEAD") == 0);
    }
    for (size_t i = 0; i < N(unknown); i++) {
        size_t head_len = 0;

        snprintf(raw, sizeof(raw), "%s / HTTP/1.1\r\nHost: a\r\n\r\n", unknown[i]);
        if (request_status(raw, strlen(raw), MAX_HEAD, &req, &head_len) != 501)
            fail_msg("%s: not refused with 501", unknown[i]);
    }
}

static void
test_request_get(void **state)
{
    struct http_request r;

    (void)state;
    parse_ok("GET /a/b?x=1&y HTTP/1.1\r\nHost: App1.com:8080\r\nUser-Agent: curl\r\n"
             "X-A: \t v  w \t\r\nX-Empty:\r\n\r\n",
             &r);
    assert_span(r.method, "GET");
    assert_span(r.target, "/a/b?x=1&y");
    assert_span(r.path, "/a/b");
    assert_span(r.query, "?x=1&y");
    assert_span(r.host, "App1.com:8080");
    assert_true(r.has_host);
    assert_false(r.absolute_form);
    assert_int_equal(r.version, 11);
    assert_true(r.keep_alive);
    assert_int_equal(r.framing, HTTP_FRAMING_NONE);
    assert_false(r.expect_continue);
    assert_false(r.upgrade_websocket);
    assert_int_equal(r.hdrs.n, 4);
    assert_span(r.hdrs.h[2].name, "X-A");
    assert_span(r.hdrs.h[2].value, "v  w");
    assert_span(r.hdrs.h[3].value, "");
    assert_non_null(http_header_find(&r.hdrs, "user-agent"));
    assert_span(*http_header_find(&r.hdrs, "user-agent"), "curl");
    assert_null(http_header_find(&r.hdrs, "referer"));
}

static void
test_request_bodies(void **state)
{
    struct http_request r;

    (void)state;
    parse_ok("POST /up HTTP/1.1\r\nHost: a.com\r\nContent-Length: 005\r\n\r\n", &r);
    assert_int_equal(r.framing, HTTP_FRAMING_LENGTH);
    assert_true(r.has_content_length);
    assert_int_equal(r.content_length, 5);

    parse_ok("POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 9223372036854775807\r\n\r\n", &r);
    assert_int_equal(r.content_length, UINT64_C(9223372036854775807));

    parse_ok("POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding:  Chunked \r\n\r\n", &r);
    assert_int_equal(r.framing, HTTP_FRAMING_CHUNKED);
    assert_false(r.has_content_length);

    parse_ok("PUT / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.framing, HTTP_FRAMING_LENGTH);
    assert_int_equal(r.content_length, 0);

    parse_ok("POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 10\r\n"
             "Expect: 100-Continue\r\n\r\n",
             &r);
    assert_true(r.expect_continue);
    /* RFC 9110 10.1.1: ignored in 1.0, and no 417 for unknown ones there. */
    parse_ok("POST / HTTP/1.0\r\nContent-Length: 10\r\nExpect: 100-continue, x\r\n\r\n", &r);
    assert_false(r.expect_continue);
}

static void
test_request_forms(void **state)
{
    struct http_request r;

    (void)state;
    /* Absolute-form: the target's authority overrides Host (RFC 9112 3.2.2). */
    parse_ok("GET http://App2.com:8080/x/y?q HTTP/1.1\r\nHost: other.com\r\n\r\n", &r);
    assert_true(r.absolute_form);
    assert_true(r.has_host);
    assert_span(r.host, "App2.com:8080");
    assert_span(r.path, "/x/y");
    assert_span(r.query, "?q");

    parse_ok("GET HTTPS://a.com HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_span(r.host, "a.com");
    assert_span(r.path, "");
    assert_span(r.query, "");

    parse_ok("GET http://[::1]:80?x HTTP/1.0\r\n\r\n", &r);
    assert_true(r.has_host);
    assert_span(r.host, "[::1]:80");
    assert_span(r.path, "");
    assert_span(r.query, "?x");

    parse_ok("OPTIONS * HTTP/1.1\r\nHost: a.com\r\n\r\n", &r);
    assert_span(r.path, "*");

    /* RFC 9112 2.2: empty lines before the request line are skipped. */
    parse_ok("\r\n\r\nGET / HTTP/1.1\r\nHost: a.com\r\n\r\n", &r);
    assert_span(r.method, "GET");
    assert_int_equal(r.head_len, 4 + 31);

    /* An empty Host is valid (RFC 9112 3.2); the router decides. */
    parse_ok("GET / HTTP/1.1\r\nHost:\r\n\r\n", &r);
    assert_true(r.has_host);
    assert_span(r.host, "");

    parse_ok("GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n", &r);
    parse_ok("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example.:80\r\n\r\n", &r);
    parse_ok("GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", &r);
    parse_ok("HEAD / HTTP/1.1\r\nHost: a.com\r\n\r\n", &r);
    assert_true(r.is_head);
    parse_ok("DELETE /x HTTP/1.1\r\nHost: a.com\r\n\r\n", &r);
    assert_false(r.is_head);
}

static void
test_request_connection(void **state)
{
    struct http_request r;

    (void)state;
    parse_ok("GET / HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.version, 10);
    assert_false(r.has_host);
    assert_false(r.keep_alive);

    parse_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a.com\r\n\r\n", &r);
    assert_true(r.keep_alive);

    parse_ok("GET / HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n", &r);
    assert_false(r.keep_alive);

    parse_ok("GET / HTTP/1.1\r\nHost: a.com\r\nConnection: , TE ,,close\r\n"
             "Connection: X-Foo\r\n\r\n",
             &r);
    assert_false(r.keep_alive);
    assert_int_equal(r.hdrs.nconn, 3);
    assert_span(r.hdrs.conn[0], "TE");
    assert_span(r.hdrs.conn[2], "X-Foo");

    parse_ok("GET /chat HTTP/1.1\r\nHost: a.com\r\nUpgrade: websocket\r\n"
             "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n",
             &r);
    assert_true(r.upgrade_websocket);
    assert_false(r.upgrade_dropped);

    /* h2c is never forwarded: served as HTTP/1.1. */
    parse_ok("GET / HTTP/1.1\r\nHost: a.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"
             "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
             &r);
    assert_false(r.upgrade_websocket);
    assert_true(r.upgrade_dropped);

    /* websocket without Connection: upgrade, in 1.0, or with POST: not an upgrade. */
    parse_ok("GET / HTTP/1.1\r\nHost: a.com\r\nUpgrade: websocket\r\n\r\n", &r);
    assert_false(r.upgrade_websocket);
    assert_true(r.upgrade_dropped);
    parse_ok("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", &r);
    assert_false(r.upgrade_websocket);
    parse_ok("POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", &r);
    assert_false(r.upgrade_websocket);
}

static void
test_request_id(void **state)
{
    struct http_request r;
    static const struct {
        const char *id;
        bool valid;
    } ids[] = {
        {"abc", true},   {"A-z_0.9", true},      {"0123456789abcdef0123456789abcdef", true},
        {"", false},     {"a b", false},         {"a/b", false},
        {"a\"b", false}, {"caf\xc3\xa9", false},
    };
    char longid[130];

    (void)state;
    for (size_t i = 0; i < N(ids); i++)
        assert_int_equal(http_request_id_valid(ids[i].id, strlen(ids[i].id)), ids[i].valid);
    memset(longid, 'x', sizeof(longid));
    assert_true(http_request_id_valid(longid, 128));
    assert_false(http_request_id_valid(longid, 129));
    assert_false(http_request_id_valid(NULL, 0));

    parse_ok("GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID:  r-1 \r\n\r\n", &r);
    assert_span(r.request_id, "r-1");
    /* Two of them: neither is trusted. */
    parse_ok("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n", &r);
    assert_int_equal(r.request_id.len, 0);
}

/* Every valid row scanned one byte at a time gives the head length the whole scan gives. */
static void
test_scan_bytewise_valid(void **state)
{
    static const char *const heads[] = {
        "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "\r\nPOST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
        "GET /"
        "\t"
        "x HTTP/1.1\r\n\r\n", /* refused: a tab in the target */
    };
    struct http_request r;
    size_t hl = 0;

    (void)state;
    assert_int_equal(request_status(heads[0], strlen(heads[0]), MAX_HEAD, &r, &hl), 0);
    assert_int_equal(hl, strlen(heads[0]));
    assert_int_equal(request_status(heads[1], strlen(heads[1]), MAX_HEAD, &r, &hl), 0);
    assert_int_equal(hl, strlen(heads[1]) - 3);
    assert_int_equal(request_status(heads[2], strlen(heads[2]), MAX_HEAD, &r, &hl), 400);
}

/* ------------------------------------------------------------------------------------------- */

static void
assert_responses_same(const struct http_response *a, const struct http_response *b)
{
    assert_int_equal(a->error, b->error);
    if (a->error != 0) {
        assert_string_equal(a->why, b->why);
        return;
    }
    assert_int_equal(a->reason.len, b->reason.len);
    assert_memory_equal(a->reason.p, b->reason.p, a->reason.len);
    assert_headers_same(&a->hdrs, &b->hdrs);
    assert_true(a->content_length == b->content_length && a->framing == b->framing &&
                a->head_len == b->head_len && a->status == b->status && a->version == b->version &&
                a->has_content_length == b->has_content_length && a->chunked == b->chunked &&
                a->keep_alive == b->keep_alive && a->interim == b->interim &&
                a->upgrade_websocket == b->upgrade_websocket);
}

static int
response_status(const char *raw, unsigned flags, struct http_response *res)
{
    static struct http_response marked;
    struct http_scan s;
    struct http_marks marks;
    size_t len = strlen(raw);
    int rc;

    /* One byte at a time, recording marks; an incomplete head goes to the parses, which refuse
     * it. The parse from the bytes alone and the one from the marks must agree. */
    http_scan_init_marks(&s, HTTP_SCAN_RESPONSE, MAX_HEAD, &marks);
    for (size_t i = 1; i <= len; i++) {
        rc = http_scan_head(&s, raw, i);
        if (rc < 0) {
            assert_int_equal(s.error, 502);
            return 502;
        }
        if (rc == 1)
            break;
    }
    rc = http_response_parse(res, raw, s.len, flags);
    assert_int_equal(http_response_parse_marks(&marked, raw, s.len, flags, &marks), rc);
    assert_responses_same(res, &marked);
    if (rc < 0) {
        assert_int_equal(res->error, 502);
        return 502;
    }
    return 0;
}

struct response_case {
    const char *name;
    const char *raw;
    unsigned flags;
    int result; /* 0 or 502 */
    int status;
    enum http_framing framing;
    uint64_t length;
    bool keep_alive;
};

static const struct response_case responses[] = {
    {"200 CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0, 0, 200, HTTP_FRAMING_LENGTH, 5,
     true},
    {"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 200,
     HTTP_FRAMING_CHUNKED, 0, true},
    {"200 until close", "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", 0, 0, 200, HTTP_FRAMING_CLOSE, 0,
     false},
    {"204 with CL", "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 0, 0, 204,
     HTTP_FRAMING_NONE, 0, true},
    {"304 with CL", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 0, 0, 304,
     HTTP_FRAMING_NONE, 99, true},
    {"100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", 0, 0, 100, HTTP_FRAMING_NONE, 0, true},
    {"103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 0, 0, 103,
     HTTP_FRAMING_NONE, 0, true},
    {"HEAD with CL", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", HTTP_RSP_F_HEAD, 0, 200,
     HTTP_FRAMING_NONE, 10, true},
    {"HEAD with chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_RSP_F_HEAD,
     0, 200, HTTP_FRAMING_NONE, 0, true},
    {"HEAD without framing", "HTTP/1.1 200 OK\r\n\r\n", HTTP_RSP_F_HEAD, 0, 200, HTTP_FRAMING_NONE,
     0, true},
    {"close", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", 0, 0, 200,
     HTTP_FRAMING_LENGTH, 1, false},
    {"1.0 plain", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0, 0, 200, HTTP_FRAMING_LENGTH, 1,
     false},
    {"1.0 keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", 0,
     0, 200, HTTP_FRAMING_LENGTH, 1, true},
    {"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", 0, 0, 404, HTTP_FRAMING_LENGTH, 0,
     true},
    {"empty reason", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", 0, 0, 404, HTTP_FRAMING_LENGTH,
     0, true},
    {"101 websocket",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
     HTTP_RSP_F_UPGRADE, 0, 101, HTTP_FRAMING_NONE, 0, false},
    {"101 not asked",
     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0,
     502, 0, 0, 0, false},
    {"101 h2c", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
     HTTP_RSP_F_UPGRADE, 502, 0, 0, 0, false},
    {"101 without Connection", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
     HTTP_RSP_F_UPGRADE, 502, 0, 0, 0, false},
    {"CL with TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
     502, 0, 0, 0, false},
    {"CL with TE on 304",
     "HTTP/1.1 304 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 502, 0, 0, 0,
     false},
    {"two CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, 502, 0, 0, 0,
     false},
    {"bad CL", "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 502, 0,
     0, 0, false},
    {"TE in 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"status 600", "HTTP/1.1 600 Odd\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"status 099", "HTTP/1.1 099 Odd\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"garbage", "<html>\r\n\r\n", 0, 502, 0, 0, 0, false},
    {"leading CRLF", "\r\nHTTP/1.1 200 OK\r\n\r\n", 0, 502, 0, 0, 0, false},
};

static void
test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(responses); i++) {
        const struct response_case *c = &responses[i];
        struct http_response res;
        int st = response_status(c->raw, c->flags, &res);

        if (st != c->result)
            fail_msg("%s: got %d, want %d", c->name, st, c->result);
        if (st != 0)
            continue;
        if (res.status != c->status || res.framing != c->framing ||
            res.keep_alive != c->keep_alive ||
            (res.has_content_length && res.content_length != c->length))
            fail_msg("%s: status %d framing %s keep_alive %d length %llu", c->name, res.status,
                     http_framing_str(res.framing), res.keep_alive,
                     (unsigned long long)res.content_length);
    }
}

static void
test_response_facts(void **state)
{
    struct http_response res;

    (void)state;
    assert_int_equal(response_status("HTTP/1.1 100 Continue\r\n\r\n", 0, &res), 0);
    assert_true(res.interim);
    assert_int_equal(response_status("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                     "Connection: upgrade\r\n\r\n",
                                     HTTP_RSP_F_UPGRADE, &res),
                     0);
    assert_true(res.upgrade_websocket);
    assert_false(res.interim);
    assert_int_equal(response_status("HTTP/1.1 200 Fine Thanks\r\nTransfer-Encoding: chunked\r\n"
                                     "Trailer: X-Sum\r\n\r\n",
                                     0, &res),
                     0);
    assert_true(res.chunked);
    assert_span(res.reason, "Fine Thanks");
    assert_int_equal(res.version, 11);
}

/* ------------------------------------------------------------------------------------------- */

struct body_case {
    const char *name;
    enum http_framing framing;
    uint64_t length;
    uint64_t max_size;
    const char *in;
    int rc;        /* the last return: 1 ended, 0 more needed, -1 error */
    int error;     /* with rc -1 */
    size_t used;   /* bytes of the message (rc 1), or all of them (rc 0) */
    uint64_t size; /* payload bytes */
    size_t len;    /* of in, when it holds a NUL; else 0 */
};

#define TRAILER_MAX 64

static const struct body_case bodies[] = {
    {"none", HTTP_FRAMING_NONE, 0, 0, "GET / ...", 1, 0, 0, 0, 0},
    {"length", HTTP_FRAMING_LENGTH, 5, 0, "helloGET /", 1, 0, 5, 5, 0},
    {"length partial", HTTP_FRAMING_LENGTH, 10, 0, "hello", 0, 0, 5, 5, 0},
    {"length zero", HTTP_FRAMING_LENGTH, 0, 0, "GET", 1, 0, 0, 0, 0},
    {"close", HTTP_FRAMING_CLOSE, 0, 0, "everything until EOF", 0, 0, 20, 20, 0},
    {"chunked", HTTP_FRAMING_CHUNKED, 0, 0, "5\r\nhello\r\n0\r\n\r\nGET", 1, 0, 15, 5, 0},
    {"chunked two", HTTP_FRAMING_CHUNKED, 0, 0, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1, 0, 26,
     11, 0},
    {"chunked hex", HTTP_FRAMING_CHUNKED, 0, 0, "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
     1, 0, 35, 20, 0},
    {"leading zeros", HTTP_FRAMING_CHUNKED, 0, 0, "0005\r\nhello\r\n000\r\n\r\n", 1, 0, 20, 5, 0},
    {"partial", HTTP_FRAMING_CHUNKED, 0, 0, "5\r\nhel", 0, 0, 6, 3, 0},
    {"ext", HTTP_FRAMING_CHUNKED, 0, 0, "5;a=b\r\nhello\r\n0;last\r\n\r\n", 1, 0, 24, 5, 0},
    {"ext quoted", HTTP_FRAMING_CHUNKED, 0, 0, "1;a=\"x \\\" ;y\"\r\nh\r\n0\r\n\r\n", 1, 0, 23, 1,
     0},
    {"ext BWS", HTTP_FRAMING_CHUNKED, 0, 0, "1 ; a = b ; c\r\nh\r\n0\r\n\r\n", 1, 0, 23, 1, 0},
    {"ext two", HTTP_FRAMING_CHUNKED, 0, 0, "1;a;b=c\r\nh\r\n0\r\n\r\n", 1, 0, 17, 1, 0},
    {"trailers", HTTP_FRAMING_CHUNKED, 0, 0, "1\r\nh\r\n0\r\nX-Sum: 1\r\nX-B:\t2 \r\n\r\nGET", 1, 0,
     30, 1, 0},
    /* Refusals. */
    {"empty size", HTTP_FRAMING_CHUNKED, 0, 0, "\r\n", -1, 400, 0, 0, 0},
    {"bad hex", HTTP_FRAMING_CHUNKED, 0, 0, "g\r\n", -1, 400, 0, 0, 0},
    {"0x prefix", HTTP_FRAMING_CHUNKED, 0, 0, "0x5\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"negative", HTTP_FRAMING_CHUNKED, 0, 0, "-1\r\n", -1, 400, 0, 0, 0},
    {"leading space", HTTP_FRAMING_CHUNKED, 0, 0, " 5\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"trailing space", HTTP_FRAMING_CHUNKED, 0, 0, "5 \r\nhello\r\n", -1, 400, 0, 0, 0},
    {"2^63", HTTP_FRAMING_CHUNKED, 0, 0, "8000000000000000\r\n", -1, 400, 0, 0, 0},
    {"2^64", HTTP_FRAMING_CHUNKED, 0, 0, "10000000000000000\r\n", -1, 400, 0, 0, 0},
    {"17 digits", HTTP_FRAMING_CHUNKED, 0, 0, "00000000000000001\r\n", -1, 400, 0, 0, 0},
    {"2^63-1", HTTP_FRAMING_CHUNKED, 0, 0, "7fffffffffffffff\r\nab", 0, 0, 20, 2, 0},
    {"LF-only size", HTTP_FRAMING_CHUNKED, 0, 0, "5\nhello\n0\n\n", -1, 400, 0, 0, 0},
    {"bare CR size", HTTP_FRAMING_CHUNKED, 0, 0, "5\rhello", -1, 400, 0, 0, 0},
    {"LF-only after data", HTTP_FRAMING_CHUNKED, 0, 0, "5\r\nhello\n0\r\n\r\n", -1, 400, 0, 0, 0},
    {"no CRLF after data", HTTP_FRAMING_CHUNKED, 0, 0, "5\r\nhelloX\r\n", -1, 400, 0, 0, 0},
    {"data too long", HTTP_FRAMING_CHUNKED, 0, 0, "3\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"LF-only last", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\n\n", -1, 400, 0, 0, 0},
    {"empty ext name", HTTP_FRAMING_CHUNKED, 0, 0, "5;\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"empty ext value", HTTP_FRAMING_CHUNKED, 0, 0, "5;a=\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"ext trailing space", HTTP_FRAMING_CHUNKED, 0, 0, "5;a \r\nhello\r\n", -1, 400, 0, 0, 0},
    {"ext control", HTTP_FRAMING_CHUNKED, 0, 0, "5;a\x01\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"ext unclosed quote", HTTP_FRAMING_CHUNKED, 0, 0, "5;a=\"x\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"ext bad token", HTTP_FRAMING_CHUNKED, 0, 0, "5;a=b@c\r\nhello\r\n", -1, 400, 0, 0, 0},
    {"trailer no colon", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\nX-T v\r\n\r\n", -1, 400, 0, 0, 0},
    {"trailer space before colon", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\nX-T : v\r\n\r\n", -1, 400, 0,
     0, 0},
    {"trailer obs-fold", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\nX: a\r\n b\r\n\r\n", -1, 400, 0, 0, 0},
    {"trailer empty name", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\n: v\r\n\r\n", -1, 400, 0, 0, 0},
    {"trailer bare LF", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\nX: v\n\r\n", -1, 400, 0, 0, 0},
    {"trailer NUL", HTTP_FRAMING_CHUNKED, 0, 0, "0\r\nX: \x00\r\n\r\n", -1, 400, 0, 0, 11},
    {"trailer too large", HTTP_FRAMING_CHUNKED, 0, 0,
     "0\r\nX-Long: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
     -1, 431, 0, 0, 0},
    {"chunked over max", HTTP_FRAMING_CHUNKED, 0, 4, "5\r\nhello\r\n0\r\n\r\n", -1, 413, 0, 0, 0},
    {"chunked sum over max", HTTP_FRAMING_CHUNKED, 0, 8, "5\r\nhello\r\n5\r\nworld\r\n", -1, 413, 0,
     0, 0},
    {"chunked at max", HTTP_FRAMING_CHUNKED, 0, 5, "5\r\nhello\r\n0\r\n\r\n", 1, 0, 15, 5, 0},
    {"close over max", HTTP_FRAMING_CLOSE, 0, 4, "hello", -1, 413, 0, 0, 0},
};

/* Feeds in at once, then one byte at a time; both must agree on everything. */
static void
run_body(const struct body_case *c, size_t in_len, size_t step)
{
    struct http_body b;
    size_t total = 0, used = 0;
    int rc = 0;

    assert_int_equal(http_body_init(&b, c->framing, c->length, c->max_size, TRAILER_MAX), 0);
    for (size_t off = 0; off < in_len || off == 0; off += step) {
        size_t n = in_len - off < step ? in_len - off : step;

        rc = http_body_feed(&b, c->in + off, n, &used);
        total += used;
        if (rc != 0)
            break;
        assert_int_equal(used, n);
        if (in_len == 0)
            break;
    }
    if (rc != c->rc)
        fail_msg("%s (step %zu): rc %d, want %d (%s)", c->name, step, rc, c->rc,
                 b.why ? b.why : "");
    if (rc < 0) {
        if (b.error != c->error)
            fail_msg("%s (step %zu): error %d, want %d", c->name, step, b.error, c->error);
        return;
    }
    if (total != c->used || b.size != c->size)
        fail_msg("%s (step %zu): used %zu size %llu, want %zu %llu", c->name, step, total,
                 (unsigned long long)b.size, c->used, (unsigned long long)c->size);
    assert_int_equal(http_body_done(&b), rc == 1);
}

static void
test_body_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(bodies); i++) {
        size_t len = bodies[i].len != 0 ? bodies[i].len : strlen(bodies[i].in);

        run_body(&bodies[i], len, len > 0 ? len : 1);
        run_body(&bodies[i], len, 1);
        run_body(&bodies[i], len, 3);
    }
}

static void
test_body_ext_too_long(void **state)
{
    static char in[HTTP_CHUNK_EXT_MAX + 64];
    struct http_body b;
    size_t used, n;

    (void)state;
    /* "1;" + name up to exactly the limit: accepted; one byte more: refused. */
    for (int extra = 0; extra < 2; extra++) {
        n = 0;
        in[n++] = '1';
        in[n++] = ';';
        memset(in + n, 'e', HTTP_CHUNK_EXT_MAX - 2 + (size_t)extra);
        n += HTTP_CHUNK_EXT_MAX - 2 + (size_t)extra;
        /* NOLINTNEXTLINE(bugprone-not-null-terminated-result): bytes with a length, not a string */
        memcpy(in + n, "\r\nx\r\n0\r\n\r\n", 10);
        n += 10;
        http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, 0);
        int rc = http_body_feed(&b, in, n, &used);
        assert_int_equal(rc, extra ? -1 : 1);
        if (extra)
            assert_string_equal(b.why, "chunk extension too long");
    }
}

static void
test_body_eof_and_sticky(void **state)
{
    struct http_body b;
    size_t used;

    (void)state;
    http_body_init(&b, HTTP_FRAMING_CLOSE, 0, 0, 0);
    assert_int_equal(http_body_feed(&b, "abc", 3, &used), 0);
    assert_int_equal(http_body_eof(&b), 0);

    http_body_init(&b, HTTP_FRAMING_LENGTH, 5, 0, 0);
    assert_int_equal(http_body_feed(&b, "abc", 3, &used), 0);
    assert_int_equal(http_body_eof(&b), -1);
    assert_int_equal(b.error, 400);

    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, 0);
    assert_int_equal(http_body_feed(&b, "0\r\n\r\n", 5, &used), 1);
    assert_int_equal(http_body_eof(&b), 0);
    assert_int_equal(http_body_feed(&b, "more", 4, &used), 1);
    assert_int_equal(used, 0);

    /* No trailers allowed with max_trailer 0, but the final CRLF is fine. */
    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, 0);
    assert_int_equal(http_body_feed(&b, "0\r\nX: y\r\n\r\n", 11, &used), -1);
    assert_int_equal(b.error, 431);
    assert_int_equal(http_body_feed(&b, "0\r\n\r\n", 5, &used), -1);

    /* Content-Length over the limit is refused before any body byte. */
    assert_int_equal(http_body_init(&b, HTTP_FRAMING_LENGTH, 11, 10, 0), -1);
    assert_int_equal(b.error, 413);
    assert_int_equal(http_body_init(&b, HTTP_FRAMING_LENGTH, 10, 10, 0), 0);
}

/* Decoding with http_body_next(): the payload alone, however the input is cut. */
static void
test_body_decode(void **state)
{
    static const char in[] = "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nNEXT";
    (void)state;
    for (size_t step = 1; step <= sizeof(in) - 1; step++) {
        struct http_body b;
        char out[64];
        size_t out_len = 0, off = 0;
        int rc = 0;

        http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, TRAILER_MAX);
        while (off < sizeof(in) - 1 && rc == 0) {
            size_t n = sizeof(in) - 1 - off < step ? sizeof(in) - 1 - off : step;
            size_t pos = 0;

            while (pos < n && rc == 0) {
                size_t used, doff, dlen;
                rc = http_body_next(&b, in + off + pos, n - pos, &used, &doff, &dlen);
                assert_true(rc >= 0);
                memcpy(out + out_len, in + off + pos + doff, dlen);
                out_len += dlen;
                pos += used;
            }
            off += pos;
        }
        assert_int_equal(rc, 1);
        assert_int_equal(off, sizeof(in) - 1 - 4);
        assert_int_equal(out_len, 11);
        assert_memory_equal(out, "hello world", 11);
    }
}

/* ------------------------------------------------------------------------------------------- */

/* A request head for the trailer filter: its Connection options are hop-by-hop in trailers too. */
#define TRAILER_HEAD                                                                               \
    "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n"                             \
    "Connection: keep-alive, X-Hop\r\n\r\n"

struct trailer_case {
    const char *name;
    const char *in;   /* a chunked body, its trailer section and maybe what follows */
    size_t stop;      /* bytes up to and including the last-chunk line */
    int rc;           /* of http_body_filter_trailer(): 1, 0 or -1 */
    int error;        /* with rc -1 */
    const char *why;  /* with rc -1 */
    size_t used;      /* with rc 1: bytes of the trailer section */
    const char *want; /* with rc 1: the filtered section */
    size_t len;       /* of in, when it holds a NUL; else 0 */
};

static const struct trailer_case trailer_cases[] = {
    {"empty section", "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 13, 1, 0, NULL, 2, "\r\n", 0},
    {"empty section, no body", "0\r\n\r\n", 3, 1, 0, NULL, 2, "\r\n", 0},
    {"allowed fields kept in order, as sent",
     "1\r\nx\r\n0\r\nX-Sum: 1\r\nDigest:sha=2\r\n"
     "Content-Digest:\tsha-256=:x=: \r\nZ: \r\n\r\nNEXT",
     9, 1, 0, NULL, 62, "X-Sum: 1\r\nDigest:sha=2\r\nContent-Digest:\tsha-256=:x=: \r\nZ: \r\n\r\n",
     0},
    {"forbidden dropped, allowed kept around them",
     "0\r\nA:1\r\nHost:e\r\nB:2\r\ncontent-length:5\r\nTRANSFER-ENCODING:x\r\nC:3\r\n\r\n", 3, 1, 0,
     NULL, 64, "A:1\r\nB:2\r\nC:3\r\n\r\n", 0},
    {"every field dropped", "0\r\nConnection: close\r\nX-Hop: 1\r\nforwarded: for=x\r\n\r\n", 3, 1,
     0, NULL, 49, "\r\n", 0},
    {"Connection option of the head dropped", "0\r\nx-hop: 1\r\nX-Hopper: 2\r\n\r\n", 3, 1, 0, NULL,
     25, "X-Hopper: 2\r\n\r\n", 0},
    {"lookalike names kept", "0\r\nHosts: 1\r\nIf: 2\r\nX-Host: 3\r\nRange-X: 4\r\n\r\n", 3, 1, 0,
     NULL, 42, "Hosts: 1\r\nIf: 2\r\nX-Host: 3\r\nRange-X: 4\r\n\r\n", 0},
    {"extension on the last chunk", "5\r\nhello\r\n0;a=b;c\r\nHost: x\r\nY: 1\r\n\r\n", 19, 1, 0,
     NULL, 17, "Y: 1\r\n\r\n", 0},
    {"quoted extension on the last chunk", "0 ; n=\"q;\\\"\";m\r\nY: 1\r\n\r\n", 16, 1, 0, NULL, 8,
     "Y: 1\r\n\r\n", 0},
    {"next message left alone", "0\r\nY: 1\r\n\r\nHost: x\r\n\r\n", 3, 1, 0, NULL, 8,
     "Y: 1\r\n\r\n", 0},
    {"at the limit", "0\r\nX-Long: 012345678901234567890123456789012345678901234567890123\r\n\r\n",
     3, 1, 0, NULL, 66, "X-Long: 012345678901234567890123456789012345678901234567890123\r\n\r\n",
     0},
    /* Incomplete: more is needed. */
    {"no final CRLF yet", "0\r\nY: 1\r\n", 3, 0, 0, NULL, 0, NULL, 0},
    {"nothing yet", "0\r\n", 3, 0, 0, NULL, 0, NULL, 0},
    {"final CR only", "0\r\nY: 1\r\n\r", 3, 0, 0, NULL, 0, NULL, 0},
    /* Refusals, as a head's. */
    {"bare LF", "0\r\nY: 1\nZ: 2\r\n\r\n", 3, -1, 400, "bare LF in trailer", 0, NULL, 0},
    {"bare LF final line", "0\r\nY: 1\r\n\n", 3, -1, 400, "bare LF in trailer", 0, NULL, 0},
    {"bare CR", "0\r\nY: 1\rZ: 2\r\n\r\n", 3, -1, 400, "bare CR in trailer", 0, NULL, 0},
    {"NUL in value", "0\r\nY: \0\r\n\r\n", 3, -1, 400, "NUL in trailer", 0, NULL, 10},
    {"control in value", "0\r\nY: \x01\r\n\r\n", 3, -1, 400, "control character in trailer", 0,
     NULL, 0},
    {"obs-fold", "0\r\nY: 1\r\n 2\r\n\r\n", 3, -1, 400, "obs-fold in trailer", 0, NULL, 0},
    {"obs-fold first", "0\r\n\tY: 1\r\n\r\n", 3, -1, 400, "obs-fold in trailer", 0, NULL, 0},
    {"whitespace before colon", "0\r\nHost : x\r\n\r\n", 3, -1, 400,
     "whitespace before colon in trailer", 0, NULL, 0},
    {"no colon", "0\r\nHost\r\n\r\n", 3, -1, 400, "trailer field without colon", 0, NULL, 0},
    {"empty name", "0\r\n: x\r\n\r\n", 3, -1, 400, "empty trailer field name", 0, NULL, 0},
    {"bad name", "0\r\nX@Y: 1\r\n\r\n", 3, -1, 400, "bad trailer field name", 0, NULL, 0},
    {"DEL in value", "0\r\nY: \x7f\r\n\r\n", 3, -1, 400, "bad trailer field value", 0, NULL, 0},
    {"too large", "0\r\nX-Long: 0123456789012345678901234567890123456789012345678901234\r\n\r\n", 3,
     -1, 431, "trailer section too large", 0, NULL, 0},
    {"too large while incomplete",
     "0\r\nX-Long: 0123456789012345678901234567890123456789012345678901234567890123456789", 3, -1,
     431, "trailer section too large", 0, NULL, 0},
};

static char tout[256];

/* Frames c->in with the stop flag, step bytes at a time, then filters the trailer section as it
 * grows by step bytes per call; everything must be the same whatever step. */
static void
run_trailer(const struct trailer_case *c, const struct http_headers *req, size_t step)
{
    size_t in_len = c->len != 0 ? c->len : strlen(c->in);
    size_t off = 0, used = 0, written = 0, avail = 0;
    struct http_body b;
    int rc = 0;

    assert_int_equal(
        http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, TRAILER_MAX, HTTP_BODY_F_STOP_TRAILER),
        0);
    while (off < in_len) {
        size_t n = in_len - off < step ? in_len - off : step;

        rc = http_body_feed(&b, c->in + off, n, &used);
        off += used;
        if (rc != 0)
            break;
    }
    if (rc != HTTP_BODY_TRAILER || off != c->stop)
        fail_msg("%s (step %zu): framer rc %d stopped at %zu, want 2 at %zu", c->name, step, rc,
                 off, c->stop);
    /* Stopped: it stays so, and the message has not ended. */
    assert_int_equal(http_body_feed(&b, c->in + off, in_len - off, &used), HTTP_BODY_TRAILER);
    assert_int_equal(used, 0);
    assert_false(http_body_done(&b));

    do {
        avail = in_len - off - avail < step ? in_len - off : avail + step;
        memset(tout, '#', sizeof(tout));
        rc = http_body_filter_trailer(&b, c->in + off, avail, req, tout, sizeof(tout), &used,
                                      &written);
        if (rc == 0 && (used != 0 || written != 0))
            fail_msg("%s (step %zu): need more with used %zu written %zu", c->name, step, used,
                     written);
    } while (rc == 0 && avail < in_len - off);

    if (rc != c->rc)
        fail_msg("%s (step %zu): rc %d, want %d (%s)", c->name, step, rc, c->rc,
                 b.why != NULL ? b.why : "");
    if (rc < 0) {
        if (b.error != c->error || strcmp(b.why, c->why) != 0)
            fail_msg("%s (step %zu): %d %s, want %d %s", c->name, step, b.error, b.why, c->error,
                     c->why);
        assert_int_equal(http_body_filter_trailer(&b, c->in + off, in_len - off, req, tout,
                                                  sizeof(tout), &used, &written),
                         -1);
        return;
    }
    if (rc == 0) {
        assert_false(http_body_done(&b));
        assert_int_equal(http_body_eof(&b), -1);
        return;
    }
    if (used != c->used || written != strlen(c->want) || memcmp(tout, c->want, written) != 0)
        fail_msg("%s (step %zu): used %zu, got \"%.*s\", want %zu \"%s\"", c->name, step, used,
                 (int)written, tout, c->used, c->want);
    assert_true(written <= used);
    /* The message has ended: the rest is the next one's. */
    assert_true(http_body_done(&b));
    assert_int_equal(http_body_eof(&b), 0);
    assert_int_equal(http_body_feed(&b, c->in + off + used, in_len - off - used, &used), 1);
    assert_int_equal(used, 0);
    assert_int_equal(http_body_filter_trailer(&b, c->in + off, in_len - off, req, tout,
                                              sizeof(tout), &used, &written),
                     1);
    assert_int_equal(used + written, 0);
}

static void
test_trailer_filter_table(void **state)
{
    struct http_request r;

    (void)state;
    parse_ok(TRAILER_HEAD, &r);
    for (size_t i = 0; i < N(trailer_cases); i++) {
        size_t len = trailer_cases[i].len != 0 ? trailer_cases[i].len : strlen(trailer_cases[i].in);

        for (size_t step = 1; step <= len; step++)
            run_trailer(&trailer_cases[i], &r.hdrs, step);
    }
}

/* Every field a request trailer must not carry, in any case of its name, is dropped. */
static const char *const trailer_forbidden[] = {
    "Content-Length",
    "Transfer-Encoding",
    "TE",
    "Trailer",
    "Host",
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "X-Request-Id",
    "Via",
    "Max-Forwards",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Upgrade",
    "HTTP2-Settings",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Authorization",
    "Cookie",
    "Expect",
    "Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "If-Schedule-Tag-Match",
    "Cache-Control",
    "Pragma",
    "Content-Type",
    "Content-Encoding",
    "Content-Range",
};

/* And these pass: what trailers are for, and names that only look like forbidden ones. */
static const char *const trailer_allowed[] = {
    "Content-Digest",  "Repr-Digest", "Digest",          "Content-MD5",
    "Server-Timing",   "X-Checksum",  "grpc-status",     "X-Forwarded",
    "Forwarded-For",   "Hostname",    "Content-Lengths", "If",
    "Iff-Match",       "X-Range",     "Connections",     "Set-Cookie2",
    "Authorization-X",
};

/* "name" upper-cased, lower-cased or as written. */
static void
cased(char *out, size_t cap, const char *name, int how)
{
    size_t i;

    for (i = 0; name[i] != '\0' && i + 1 < cap; i++) {
        char c = name[i];
        if (how == 1 && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (how == 2 && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        out[i] = c;
    }
    out[i] = '\0';
}

/* Filters "0\r\nA: 1\r\n<name>: v\r\nZ: 2\r\n\r\n"; returns the output, NUL-terminated. */
static const char *
filter_one(const char *name, const struct http_headers *req)
{
    char in[128];
    struct http_body b;
    size_t used, written;
    int n = snprintf(in, sizeof(in), "0\r\nA: 1\r\n%s: v\r\nZ: 2\r\n\r\n", name);

    assert_true(n > 0 && (size_t)n < sizeof(in));
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, TRAILER_MAX, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, in, (size_t)n, &used), HTTP_BODY_TRAILER);
    assert_int_equal(used, 3);
    assert_int_equal(http_body_filter_trailer(&b, in + 3, (size_t)n - 3, req, tout,
                                              sizeof(tout) - 1, &used, &written),
                     1);
    assert_int_equal(used, (size_t)n - 3);
    tout[written] = '\0';
    return tout;
}

static void
test_trailer_forbidden_fields(void **state)
{
    struct http_request r;
    char name[64], want[128];

    (void)state;
    parse_ok(TRAILER_HEAD, &r);
    for (size_t i = 0; i < N(trailer_forbidden); i++) {
        for (int how = 0; how < 3; how++) {
            cased(name, sizeof(name), trailer_forbidden[i], how);
            assert_true(http_trailer_forbidden(NULL, (struct http_span){name, strlen(name)}));
            const char *got = filter_one(name, &r.hdrs);
            if (strcmp(got, "A: 1\r\nZ: 2\r\n\r\n") != 0)
                fail_msg("%s not dropped: \"%s\"", name, got);
        }
    }
    for (size_t i = 0; i < N(trailer_allowed); i++) {
        cased(name, sizeof(name), trailer_allowed[i], 0);
        assert_false(http_trailer_forbidden(&r.hdrs, (struct http_span){name, strlen(name)}));
        snprintf(want, sizeof(want), "A: 1\r\n%s: v\r\nZ: 2\r\n\r\n", name);
        const char *got = filter_one(name, &r.hdrs);
        if (strcmp(got, want) != 0)
            fail_msg("%s not kept: \"%s\"", name, got);
    }
    /* A Connection option only counts when the caller passes the head. */
    assert_string_equal(filter_one("X-HOP", &r.hdrs), "A: 1\r\nZ: 2\r\n\r\n");
    assert_string_equal(filter_one("X-HOP", NULL), "A: 1\r\nX-HOP: v\r\nZ: 2\r\n\r\n");
}

/*
 * The stop and the filter are never laxer than the framer that relays a trailer section whole:
 * every chunked row of the body table, framed both ways, ends at the same byte or is refused with
 * the same status.
 */
static void
test_trailer_matches_framer(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(bodies); i++) {
        const struct body_case *c = &bodies[i];
        size_t len = c->len != 0 ? c->len : strlen(c->in);
        struct http_body whole, stop;
        size_t used_whole = 0, used = 0, written = 0, off = 0;
        int rc_whole, rc;

        if (c->framing != HTTP_FRAMING_CHUNKED)
            continue;
        http_body_init(&whole, c->framing, 0, c->max_size, TRAILER_MAX);
        rc_whole = http_body_feed(&whole, c->in, len, &used_whole);
        http_body_init_flags(&stop, c->framing, 0, c->max_size, TRAILER_MAX,
                             HTTP_BODY_F_STOP_TRAILER);
        rc = http_body_feed(&stop, c->in, len, &off);
        if (rc == HTTP_BODY_TRAILER) {
            rc = http_body_filter_trailer(&stop, c->in + off, len - off, NULL, tout, sizeof(tout),
                                          &used, &written);
            off += used;
        }
        if (rc != rc_whole || (rc < 0 && stop.error != whole.error) ||
            (rc == 1 && off != used_whole))
            fail_msg("%s: rc %d error %d end %zu, framer %d %d %zu", c->name, rc, stop.error, off,
                     rc_whole, whole.error, used_whole);
        assert_int_equal(stop.size, whole.size);
    }
}

static void
test_trailer_limits_and_misuse(void **state)
{
    static char in[8 + (HTTP_MAX_HEADERS + 1) * 6];
    struct http_body b;
    size_t n = 0, used, written, doff, dlen;

    (void)state;
    /* HTTP_MAX_HEADERS trailer fields pass; one more is refused, as in a head. */
    for (int extra = 0; extra < 2; extra++) {
        n = 0;
        for (int i = 0; i < HTTP_MAX_HEADERS + extra; i++)
            n += (size_t)snprintf(in + n, sizeof(in) - n, "a: 1\r\n");
        n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\n");
        http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 4096, HTTP_BODY_F_STOP_TRAILER);
        assert_int_equal(http_body_feed(&b, "0\r\n", 3, &used), HTTP_BODY_TRAILER);
        int rc = http_body_filter_trailer(&b, in, n, NULL, in, sizeof(in), &used, &written);
        assert_int_equal(rc, extra ? -1 : 1);
        if (extra) {
            assert_int_equal(b.error, 431);
            assert_string_equal(b.why, "too many trailer fields");
        } else {
            assert_int_equal(used, n); /* filtered in place: written never passes what was read */
            assert_int_equal(written, n);
        }
    }

    /* max_trailer 0: only the empty section. */
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 0, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "0\r\n", 3, &used), HTTP_BODY_TRAILER);
    assert_int_equal(http_body_filter_trailer(&b, "\r\n", 2, NULL, tout, 2, &used, &written), 1);
    assert_int_equal(written, 2);
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 0, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "0\r\n", 3, &used), HTTP_BODY_TRAILER);
    assert_int_equal(http_body_filter_trailer(&b, "X:\r\n\r\n", 6, NULL, tout, 6, &used, &written),
                     -1);
    assert_int_equal(b.error, 431);

    /* A section still open after max_trailer + 2 bytes is refused then, not at the next byte: a
     * caller that pulls up no more than that has no next byte to give. */
    n = (size_t)snprintf(in, sizeof(in), "X: %063d", 0);
    assert_int_equal(n, 66);
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "0\r\n", 3, &used), HTTP_BODY_TRAILER);
    assert_int_equal(http_body_filter_trailer(&b, in, n - 1, NULL, tout, 66, &used, &written), 0);
    assert_int_equal(http_body_filter_trailer(&b, in, n, NULL, tout, 66, &used, &written), -1);
    assert_int_equal(b.error, 431);
    assert_string_equal(b.why, "trailer section too large");

    /* An output buffer too small is the caller's error. */
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "0\r\n", 3, &used), HTTP_BODY_TRAILER);
    assert_int_equal(
        http_body_filter_trailer(&b, "X: 1\r\n\r\n", 8, NULL, tout, 7, &used, &written), -1);
    assert_int_equal(b.error, 500);

    /* The filter only after HTTP_BODY_TRAILER; without the flag there is no stop. */
    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64);
    assert_int_equal(http_body_filter_trailer(&b, "\r\n", 2, NULL, tout, 2, &used, &written), -1);
    assert_int_equal(b.error, 500);
    http_body_init(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64);
    assert_int_equal(http_body_feed(&b, "0\r\nHost: x\r\n\r\n", 14, &used), 1);
    assert_int_equal(used, 14);

    /* The flag means nothing to other framings; an empty feed while stopped says stopped. */
    http_body_init_flags(&b, HTTP_FRAMING_LENGTH, 3, 0, 64, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "0\r\n\r\n", 5, &used), 1);
    assert_int_equal(used, 3);
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_feed(&b, "1\r\nx\r\n0\r\n", 9, &used), HTTP_BODY_TRAILER);
    assert_int_equal(http_body_feed(&b, "", 0, &used), HTTP_BODY_TRAILER);
    assert_int_equal(http_body_eof(&b), -1); /* cut short in the trailer section */

    /* http_body_next() stops too, after the payload. */
    static const char two[] = "2\r\nhi\r\n0\r\nX: 1\r\n\r\n";
    http_body_init_flags(&b, HTTP_FRAMING_CHUNKED, 0, 0, 64, HTTP_BODY_F_STOP_TRAILER);
    assert_int_equal(http_body_next(&b, two, sizeof(two) - 1, &used, &doff, &dlen), 0);
    assert_int_equal(dlen, 2);
    n = used;
    assert_int_equal(http_body_next(&b, &two[n], sizeof(two) - 1 - n, &used, &doff, &dlen),
                     HTTP_BODY_TRAILER);
    assert_int_equal(n + used, 10);
    assert_int_equal(dlen, 0);
}

/* ------------------------------------------------------------------------------------------- */

static char wbuf[8192];

static const char *
write_request(const char *raw, const struct http_forward *fwd)
{
    struct http_request r;
    size_t n;

    parse_ok(raw, &r);
    n = http_request_write(wbuf, sizeof(wbuf) - 1, &r, fwd);
    assert_true(n < sizeof(wbuf));
    wbuf[n] = '\0';
    return wbuf;
}

static const struct http_forward fwd_plain = {"10.0.0.1", "http", "80", NULL, "rid-1", 5, 0};
static const struct http_forward fwd_trusted = {"10.0.0.1", "https",           "443", NULL, "rid-1",
                                                5,          HTTP_FWD_F_TRUSTED};

#define PORTIER_TAIL(xff, proto, host, port, realip)                                               \
    "X-Forwarded-For: " xff "\r\nX-Forwarded-Proto: " proto "\r\nX-Forwarded-Host: " host          \
    "\r\nX-Forwarded-Port: " port "\r\nX-Real-IP: " realip "\r\nX-Request-Id: rid-1\r\n\r\n"

struct write_case {
    const char *name;
    const char *raw;
    const struct http_forward *fwd;
    const char *want;
};

static const struct http_forward fwd_fallback = {"192.0.2.9", "http", "8080", "default.local",
                                                 "rid-1",     5,      0};
static const struct http_forward fwd_drop_expect = {
    "10.0.0.1", "http", "80", NULL, "rid-1", 5, HTTP_FWD_F_DROP_EXPECT};

static const struct write_case writes[] = {
    {"hop-by-hop dropped, portier's own added",
     "GET /p?q HTTP/1.1\r\nHost: app1.com\r\nUser-Agent: t\r\nConnection: close, X-Foo\r\n"
     "X-Foo: secret\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
     "Upgrade: h2c\r\nHTTP2-Settings: x\r\nAccept:   */*  \r\n\r\n",
     &fwd_plain,
     "GET /p?q HTTP/1.1\r\nHost: app1.com\r\nUser-Agent: t\r\nAccept: */*\r\n"
     "Connection: keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "app1.com", "80", "10.0.0.1")},
    {"Connection: close, X-Forwarded-For cannot strip portier's",
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: close, X-Forwarded-For, X-Real-IP, "
     "X-Request-Id, Host, Content-Length, X-Forwarded-Proto\r\nX-Forwarded-For: 6.6.6.6\r\n"
     "Content-Length: 2\r\n\r\n",
     &fwd_plain,
     "GET / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 2\r\nConnection: "
     "keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"untrusted: X-Forwarded-* and X-Real-IP replaced",
     "GET / HTTP/1.1\r\nHost: a.com\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
     "X-Forwarded-Host: evil\r\nX-Forwarded-Port: 1\r\nX-Real-IP: 6.6.6.6\r\n"
     "X-Request-Id: theirs\r\n\r\n",
     &fwd_plain,
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"trusted: XFF appended (all fields), others kept",
     "GET / HTTP/1.1\r\nHost: a.com\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-For: 3.3.3.3\r\nX-Real-IP: 1.1.1.1\r\n"
     "Connection: close, X-Forwarded-For\r\n\r\n",
     &fwd_trusted,
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1", "http", "a.com", "443", "1.1.1.1")},
    {"untrusted: every Forwarded dropped, whatever the case of its name",
     "GET / HTTP/1.1\r\nHost: a.com\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\n"
     "FORWARDED: for=7.7.7.7;proto=https\r\nX-Forwarded: a\r\nforwarded: by=x\r\n"
     "Forwarded-By: b\r\nfOrWaRdEd: host=evil\r\n\r\n",
     &fwd_plain,
     "GET / HTTP/1.1\r\nHost: a.com\r\nAccept: */*\r\nX-Forwarded: a\r\nForwarded-By: b\r\n"
     "Connection: keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"trusted: every Forwarded kept as sent, in order",
     "GET / HTTP/1.1\r\nHost: a.com\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\n"
     "FORWARDED: for=7.7.7.7;proto=https\r\nforwarded:   by=x  \r\n\r\n",
     &fwd_trusted,
     "GET / HTTP/1.1\r\nHost: a.com\r\nForwarded: for=6.6.6.6\r\nAccept: */*\r\n"
     "FORWARDED: for=7.7.7.7;proto=https\r\nforwarded: by=x\r\nConnection: "
     "keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "https", "a.com", "443", "10.0.0.1")},
    {"untrusted without Forwarded: none added", "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n", &fwd_plain,
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"trusted without XFF: set", "GET / HTTP/1.1\r\nHost: a.com\r\n\r\n", &fwd_trusted,
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "https", "a.com", "443", "10.0.0.1")},
    {"Content-Length normalised",
     "POST /up HTTP/1.1\r\nHost: a.com\r\nContent-Length: 007\r\nContent-Type: text/plain\r\n\r\n",
     &fwd_plain,
     "POST /up HTTP/1.1\r\nHost: a.com\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n"
     "Connection: keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"chunked, Trailer dropped as hop-by-hop",
     "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: Chunked\r\nTrailer: X-Sum\r\n\r\n",
     &fwd_plain,
     "POST / HTTP/1.1\r\nHost: a.com\r\nTransfer-Encoding: chunked\r\n"
     "Connection: keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"absolute-form to origin-form, Host from the target",
     "GET http://App2.com:8080/x?y HTTP/1.1\r\nHost: other.com\r\n\r\n", &fwd_plain,
     "GET /x?y HTTP/1.1\r\nHost: App2.com:8080\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "App2.com:8080", "80", "10.0.0.1")},
    {"absolute-form without path", "GET http://a.com?q HTTP/1.1\r\nHost: a.com\r\n\r\n", &fwd_plain,
     "GET /?q HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"websocket",
     "GET /ws HTTP/1.1\r\nHost: a.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     &fwd_plain,
     "GET /ws HTTP/1.1\r\nHost: a.com\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"h2c dropped",
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
     "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
     &fwd_plain,
     "GET / HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"HTTP/1.0 without Host, Expect dropped",
     "POST /f HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", &fwd_fallback,
     "POST /f HTTP/1.1\r\nHost: default.local\r\nContent-Length: 1\r\nConnection: keep-alive\r\n"
     "X-Forwarded-For: 192.0.2.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: default.local\r\n"
     "X-Forwarded-Port: 8080\r\nX-Real-IP: 192.0.2.9\r\nX-Request-Id: rid-1\r\n\r\n"},
    {"Expect kept",
     "POST / HTTP/1.1\r\nHost: a.com\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
     &fwd_plain,
     "POST / HTTP/1.1\r\nHost: a.com\r\nExpect: 100-continue\r\nContent-Length: 1\r\n"
     "Connection: keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"Expect dropped on request",
     "POST / HTTP/1.1\r\nHost: a.com\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
     &fwd_drop_expect,
     "POST / HTTP/1.1\r\nHost: a.com\r\nContent-Length: 1\r\nConnection: "
     "keep-alive\r\n" PORTIER_TAIL("10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
    {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a.com\r\n\r\n", &fwd_plain,
     "OPTIONS * HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\n" PORTIER_TAIL(
         "10.0.0.1", "http", "a.com", "80", "10.0.0.1")},
};

static void
test_request_write_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(writes); i++) {
        const char *got = write_request(writes[i].raw, writes[i].fwd);

        if (strcmp(got, writes[i].want) != 0)
            fail_msg("%s:\ngot:\n%s\nwant:\n%s", writes[i].name, got, writes[i].want);
    }
}

static void
test_request_write_small_buffer(void **state)
{
    struct http_request r;
    char small[64];
    size_t need, n;

    (void)state;
    parse_ok("GET /long/path HTTP/1.1\r\nHost: a.com\r\nAccept: */*\r\n\r\n", &r);
    need = http_request_write(NULL, 0, &r, &fwd_plain);
    assert_true(need > sizeof(small));
    n = http_request_write(small, sizeof(small), &r, &fwd_plain);
    assert_int_equal(n, need);
    n = http_request_write(wbuf, need, &r, &fwd_plain);
    assert_int_equal(n, need);
    assert_memory_equal(small, wbuf, sizeof(small));
}

static const char *
write_response(const char *raw, unsigned rsp_flags, unsigned res_flags)
{
    struct http_response res;
    size_t n;

    assert_int_equal(response_status(raw, rsp_flags, &res), 0);
    n = http_response_write(wbuf, sizeof(wbuf) - 1, &res, res_flags);
    assert_true(n < sizeof(wbuf));
    wbuf[n] = '\0';
    return wbuf;
}

static void
test_response_write(void **state)
{
    (void)state;
    /* Lines passed on as they came, or rewritten as "Name: value" (one SP, no trailing OWS),
     * in order, whatever mix of the two a head has. */
    assert_string_equal(
        write_response("HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC:\t3\r\nD: 4 \r\nE: 5\r\nF:\r\n"
                       "G: 7\r\nH: 8\r\nContent-Length: 0\r\nI: 9\r\nJ:  10\r\n\r\n",
                       0, 0),
        "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: \r\nG: 7\r\nH: 8\r\n"
        "I: 9\r\nJ: 10\r\nContent-Length: 0\r\n\r\n");
    assert_string_equal(
        write_response(
            "HTTP/1.1 200 OK\r\nContent-Length: 05\r\nConnection: close, X-Secret\r\n"
            "X-Secret: s\r\nKeep-Alive: timeout=5\r\nServer: s\r\nProxy-Connection: x\r\n"
            "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
            0, 0),
        "HTTP/1.1 200 OK\r\nServer: s\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        "Content-Length: 5\r\n\r\n");
    /* "Connection: Content-Length" does not remove the framing. */
    assert_string_equal(write_response("HTTP/1.1 200 OK\r\nConnection: Content-Length, "
                                       "Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
                                       0, 0),
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_string_equal(write_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                       "Trailer: X-Sum\r\n\r\n",
                                       0, HTTP_RES_F_DECHUNK | HTTP_RES_F_CLOSE),
                        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    assert_string_equal(write_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                       "Trailer: X-Sum\r\n\r\n",
                                       0, 0),
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_string_equal(
        write_response("HTTP/1.0 200\r\nContent-Length: 1\r\n\r\n", 0, HTTP_RES_F_KEEPALIVE),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
    assert_string_equal(
        write_response("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 0, 0),
        "HTTP/1.1 204 No Content\r\n\r\n");
    assert_string_equal(write_response("HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n"
                                       "ETag: \"x\"\r\n\r\n",
                                       0, 0),
                        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 3\r\n\r\n");
    assert_string_equal(
        write_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", HTTP_RSP_F_HEAD, 0),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
    assert_string_equal(
        write_response(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            "\r\n",
            HTTP_RSP_F_UPGRADE, HTTP_RES_F_UPGRADE),
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_string_equal(write_response("HTTP/1.1 100 Continue\r\n\r\n", 0, 0),
                        "HTTP/1.1 100 Continue\r\n\r\n");
}

struct flags_case {
    const char *name;
    const char *req;
    const char *res;
    bool keep_alive;
    unsigned want;
};

static const struct flags_case flag_cases[] = {
    {"1.1 keep", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true, 0},
    {"1.1 caller closes", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", false, HTTP_RES_F_CLOSE},
    {"1.1 client closes", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true, HTTP_RES_F_CLOSE},
    {"1.1 until close", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", true,
     HTTP_RES_F_CLOSE},
    {"1.1 server close does not close client", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", true, 0},
    {"1.1 chunked", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 0},
    {"1.0 plain", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true,
     HTTP_RES_F_CLOSE},
    {"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", true, HTTP_RES_F_KEEPALIVE},
    {"1.0 chunked", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true,
     HTTP_RES_F_DECHUNK | HTTP_RES_F_CLOSE},
    {"1.0 interim skipped", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\n", true,
     HTTP_RES_F_SKIP},
    {"1.1 interim", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 103 Early Hints\r\n\r\n", true,
     0},
};

static void
test_response_flags(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(flag_cases); i++) {
        struct http_request r;
        struct http_response res;
        unsigned f;

        parse_ok(flag_cases[i].req, &r);
        assert_int_equal(response_status(flag_cases[i].res, r.is_head ? HTTP_RSP_F_HEAD : 0, &res),
                         0);
        f = http_response_flags(&r, &res, flag_cases[i].keep_alive);
        if (f != flag_cases[i].want)
            fail_msg("%s: flags %#x, want %#x", flag_cases[i].name, f, flag_cases[i].want);
    }
    /* A websocket upgrade accepted by the server. */
    struct http_request r;
    struct http_response res;
    parse_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", &r);
    assert_int_equal(response_status("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                                     "Upgrade: websocket\r\n\r\n",
                                     HTTP_RSP_F_UPGRADE, &res),
                     0);
    assert_int_equal(http_response_flags(&r, &res, true), HTTP_RES_F_UPGRADE);
}

/* ------------------------------------------------------------------------------------------- */

static void
test_reasons_and_errors(void **state)
{
    char buf[HTTP_ERROR_MAX + 1];
    char id[129];
    size_t n;

    (void)state;
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(413), "Content Too Large");
    assert_string_equal(http_reason(299), "Unknown");

    n = http_error_body(buf, sizeof(buf), 502, "abc", 3, false);
    assert_int_equal(n, strlen("502 Bad Gateway, request id abc\n"));
    assert_memory_equal(buf, "502 Bad Gateway, request id abc\n", n);
    n = http_error_body(buf, sizeof(buf), 400, "a b", 3, false);
    assert_memory_equal(buf, "400 Bad Request\n", n);
    n = http_error_body(buf, sizeof(buf), 404, "x1", 2, true);
    buf[n] = '\0';
    assert_string_equal(buf, "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                             "<body><h1>404 Not Found</h1><p>request id x1</p></body></html>\n");

    n = http_error_write(buf, sizeof(buf), 503, "r9", 2, HTTP_ERR_F_CLOSE);
    buf[n] = '\0';
    assert_string_equal(buf, "HTTP/1.1 503 Service Unavailable\r\n"
                             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n"
                             "Cache-Control: no-store\r\nX-Request-Id: r9\r\nConnection: close\r\n"
                             "\r\n503 Service Unavailable, request id r9\n");
    n = http_error_write(buf, sizeof(buf), 400, NULL, 0, HTTP_ERR_F_HEAD);
    buf[n] = '\0';
    assert_string_equal(buf, "HTTP/1.1 400 Bad Request\r\n"
                             "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n"
                             "Cache-Control: no-store\r\n\r\n");

    /* The worst case fits in HTTP_ERROR_MAX; a small buffer gets a prefix and the full length. */
    memset(id, 'i', 128);
    n = http_error_write(buf, sizeof(buf), 431, id, 128, HTTP_ERR_F_HTML | HTTP_ERR_F_CLOSE);
    assert_true(n <= HTTP_ERROR_MAX);
    char small[10];
    assert_int_equal(
        http_error_write(small, sizeof(small), 431, id, 128, HTTP_ERR_F_HTML | HTTP_ERR_F_CLOSE),
        n);
    assert_memory_equal(small, buf, sizeof(small));
}

static const char *
write_hsts(const char *raw, uint64_t max_age)
{
    struct http_response res;
    size_t n;

    memset(&res, 0xff, sizeof(res)); /* so that the parse must clear hsts_max_age itself */
    assert_int_equal(response_status(raw, 0, &res), 0);
    assert_int_equal(res.hsts_max_age, 0);
    res.hsts_max_age = max_age;
    n = http_response_write(wbuf, sizeof(wbuf) - 1, &res, 0);
    assert_true(n < sizeof(wbuf));
    wbuf[n] = '\0';
    return wbuf;
}

/* hsts: added to a response over HTTPS, unless the server set its own. */
static void
test_response_hsts(void **state)
{
    (void)state;
    assert_string_equal(write_hsts("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 31536000),
                        "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=31536000\r\n"
                        "Content-Length: 0\r\n\r\n");
    assert_string_equal(write_hsts("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_string_equal(write_hsts("HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=5\r\n"
                                   "Content-Length: 0\r\n\r\n",
                                   100),
                        "HTTP/1.1 200 OK\r\nstrict-transport-security: max-age=5\r\n"
                        "Content-Length: 0\r\n\r\n");
}

/* redirect_https: the same URL over HTTPS, the port said unless it is 443. */
static void
test_redirect_write(void **state)
{
    static const struct {
        const char *raw, *host, *port, *id;
        unsigned flags;
        const char *want;
    } cases[] = {
        {"GET /p/q?x=1&y HTTP/1.1\r\nHost: A.test:8080\r\n\r\n", "a.test", "8443", "r1", 0,
         "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://a.test:8443/p/q?x=1&y\r\n"
         "Content-Length: 0\r\nX-Request-Id: r1\r\n\r\n"},
        {"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", "443", "", HTTP_ERR_F_CLOSE,
         "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://a.test/\r\n"
         "Content-Length: 0\r\nConnection: close\r\n\r\n"},
        {"GET http://a.test/abs?q HTTP/1.1\r\nHost: a.test\r\n\r\n", "a.test", NULL, "", 0,
         "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://a.test/abs?q\r\n"
         "Content-Length: 0\r\n\r\n"},
        {"OPTIONS * HTTP/1.1\r\nHost: [::1]\r\n\r\n", "[::1]", "8443", "", 0,
         "HTTP/1.1 308 Permanent Redirect\r\nLocation: https://[::1]:8443/\r\n"
         "Content-Length: 0\r\n\r\n"},
    };
    char buf[512], small[16];
    struct http_request r;

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        parse_ok(cases[i].raw, &r);
        size_t n = http_redirect_write(buf, sizeof(buf) - 1, cases[i].host, cases[i].port, &r,
                                       cases[i].id, strlen(cases[i].id), cases[i].flags);
        assert_true(n < sizeof(buf));
        buf[n] = '\0';
        assert_string_equal(buf, cases[i].want);
        /* Too small a buffer: a prefix, and the length it needs. */
        assert_int_equal(http_redirect_write(small, sizeof(small), cases[i].host, cases[i].port, &r,
                                             cases[i].id, strlen(cases[i].id), cases[i].flags),
                         n);
        assert_memory_equal(small, buf, sizeof(small));
    }
}

static void
test_char_classes(void **state)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";

    (void)state;
    for (int c = 0; c < 256; c++) {
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c != 0 && strchr(tchars, c) != NULL);
        if (http_is_tchar((unsigned char)c) != want)
            fail_msg("tchar %#x", c);
        assert_int_equal(http_is_field_char((unsigned char)c),
                         c == '\t' || (c >= 0x20 && c != 0x7f));
    }
    assert_int_equal(http_hex_value('F'), 15);
    assert_int_equal(http_hex_value('g'), -1);
    assert_string_equal(http_framing_str(HTTP_FRAMING_CHUNKED), "chunked");
}

/* Every byte at every place of a field value long enough for the scanner's word-at-a-time path
 * (and its bytewise tail): allowed exactly when it is a field-vchar, SP or HTAB, the head scanned
 * whole agreeing with the head fed byte by byte (request_status()). */
static void
test_every_byte_in_a_long_value(void **state)
{
    char raw[64];
    struct http_request r;
    size_t head_len;

    (void)state;
    for (int c = 0; c < 256; c++) {
        for (size_t at = 0; at < 24; at++) {
            int n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX: %s\r\n\r\n",
                             "abcdefghijklmnopqrstuvwx");
            assert_true(n > 0 && (size_t)n < sizeof(raw));
            raw[strlen("GET / HTTP/1.1\r\nHost: a\r\nX: ") + at] = (char)c;
            int got = request_status(raw, (size_t)n, MAX_HEAD, &r, &head_len);
            int want = http_is_field_char((unsigned char)c) ? 0 : 400;
            if (got != want)
                fail_msg("byte %#x at %zu: %d, not %d", c, at, got, want);
        }
    }
}

/* A refused head still names its method and target in the log, as far as its request line goes. */
static void
test_request_salvage(void **state)
{
    static const struct {
        const char *head, *method, *target;
    } cases[] = {
        {"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n", "GET", "/a?b"},
        {"POST /x\r\n\r\n", "POST", "/x"},
        {"GET /no-version", "GET", ""},
        {"NOSPACEATALL\r\n\r\n", "", ""},
        {"AVERYLONGMETHODNAMETHATGOESONANDON /x HTTP/1.1\r\n", "", ""},
        {"GET ", "GET", ""},
        {"", "", ""},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_request req;
        const char *h = cases[i].head;

        memset(&req, 0, sizeof(req));
        http_request_salvage(&req, h, strlen(h));
        assert_int_equal(req.method.len, strlen(cases[i].method));
        assert_memory_equal(req.method.p != NULL ? req.method.p : "", cases[i].method,
                            req.method.len);
        assert_int_equal(req.target.len, strlen(cases[i].target));
        if (req.target.len > 0)
            assert_memory_equal(req.target.p, cases[i].target, req.target.len);
    }

    /* What the parse found is kept. */
    struct http_request req;
    memset(&req, 0, sizeof(req));
    req.method = (struct http_span){"PUT", 3};
    http_request_salvage(&req, "GET /x HTTP/1.1\r\n", 17);
    assert_int_equal(req.method.len, 3);
    assert_int_equal(req.target.len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_scan_feed_pieces),
        cmocka_unit_test(test_marks_from_pieces),
        cmocka_unit_test(test_request_methods),
        cmocka_unit_test(test_request_get),
        cmocka_unit_test(test_request_bodies),
        cmocka_unit_test(test_request_forms),
        cmocka_unit_test(test_request_connection),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_scan_bytewise_valid),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_response_facts),
        cmocka_unit_test(test_body_table),
        cmocka_unit_test(test_body_ext_too_long),
        cmocka_unit_test(test_body_eof_and_sticky),
        cmocka_unit_test(test_body_decode),
        cmocka_unit_test(test_trailer_filter_table),
        cmocka_unit_test(test_trailer_forbidden_fields),
        cmocka_unit_test(test_trailer_matches_framer),
        cmocka_unit_test(test_trailer_limits_and_misuse),
        cmocka_unit_test(test_request_write_table),
        cmocka_unit_test(test_request_write_small_buffer),
        cmocka_unit_test(test_response_write),
        cmocka_unit_test(test_response_hsts),
        cmocka_unit_test(test_redirect_write),
        cmocka_unit_test(test_response_flags),
        cmocka_unit_test(test_reasons_and_errors),
        cmocka_unit_test(test_char_classes),
        cmocka_unit_test(test_every_byte_in_a_long_value),
        cmocka_unit_test(test_request_salvage),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
