/*
 * HTTP/1.x heads: the incremental scanner, the strict request and response parsers (the scanner
 * checks the syntax and marks where each part lies, the rules of RFC 9110/9112 are checked here)
 * and the head writers; bodies are in http_body.c. Pure: no I/O, no allocation, no locale.
 */
#include <assert.h>
#include <stddef.h>
#include <string.h>

/* Only for its list of methods (HTTP_METHOD_MAP): heads are parsed here. */
#include <http_parser.h>

#include "http.h"
#include "wbuf.h"

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 */

static inline bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool
is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static inline unsigned char
lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive ASCII comparison of a span with a lowercase NUL-terminated string. */
static bool
span_is(const char *p, size_t len, const char *lc)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (lc[i] == '\0' || lower((unsigned char)p[i]) != (unsigned char)lc[i])
            return false;
    }
    return lc[i] == '\0';
}

static bool
span_eq_ci(struct http_span a, struct http_span b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return false;
    }
    return true;
}

static struct http_span
span_trim(struct http_span s)
{
    while (s.len > 0 && is_ows((unsigned char)s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && is_ows((unsigned char)s.p[s.len - 1]))
        s.len--;
    return s;
}

/*
 * Walks a comma-separated list (RFC 9110 5.6.1: #element, with OWS around commas and empty
 * elements allowed). Returns false at the end; else *elem is the next non-empty element, trimmed.
 */
static bool
list_next(const char **pos, const char *end, struct http_span *elem)
{
    while (*pos < end) {
        const char *start = *pos;
        const char *comma = memchr(start, ',', (size_t)(end - start));
        const char *stop = comma != NULL ? comma : end;

        *pos = comma != NULL ? comma + 1 : end;
        *elem = span_trim((struct http_span){start, (size_t)(stop - start)});
        if (elem->len > 0)
            return true;
    }
    return false;
}

static bool
is_token(struct http_span s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (!http_is_tchar((unsigned char)s.p[i]))
            return false;
    }
    return true;
}

const char *
http_framing_str(enum http_framing f)
{
    switch (f) {
    case HTTP_FRAMING_NONE:
        return "none";
    case HTTP_FRAMING_LENGTH:
        return "length";
    case HTTP_FRAMING_CHUNKED:
        return "chunked";
    case HTTP_FRAMING_CLOSE:
        return "close";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------------------
 * The head scanner: one byte at a time, resumable, with fast loops over targets and values.
 */

enum scan_state {
    SC_REQ_START, /* before the request line: an empty line or a method */
    SC_REQ_START_LF,
    SC_METHOD,
    SC_TARGET0,
    SC_TARGET,
    SC_REQ_VERSION, /* "HTTP/d.d" then CR */
    SC_RES_VERSION, /* "HTTP/d.d" then SP */
    SC_CODE,
    SC_CODE_END,
    SC_REASON,
    SC_LINE_LF,
    SC_FIELD0, /* the start of a field line, or the CR of the empty line */
    SC_NAME,
    SC_VALUE,
    SC_FIELD_LF,
    SC_END_LF,
    SC_DONE,
    SC_ERROR,
};

/* A method longer than this is none that http-parser knows (the longest has 11 characters). */
#define METHOD_MAX 16

static const char version_pattern[] = "HTTP/#.#"; /* '#': a DIGIT (RFC 9112 2.3) */

void
http_scan_init(struct http_scan *s, enum http_scan_kind kind, size_t max)
{
    http_scan_init_marks(s, kind, max, NULL);
}

void
http_scan_init_marks(struct http_scan *s, enum http_scan_kind kind, size_t max,
                     struct http_marks *marks)
{
    assert(marks == NULL || (kind != HTTP_SCAN_TRAILER && max < UINT32_MAX));
    memset(s, 0, sizeof(*s));
    s->marks = marks;
    if (marks != NULL) {
        /* len stays 0 until the head is complete: a parse of an unfinished scan is refused. */
        marks->len = 0;
        marks->sp2 = 0;
        marks->nfields = 0;
    }
    s->kind = (uint8_t)kind;
    s->max = max;
    switch (kind) {
    case HTTP_SCAN_REQUEST:
        s->state = SC_REQ_START;
        break;
    case HTTP_SCAN_RESPONSE:
        s->state = SC_RES_VERSION;
        break;
    case HTTP_SCAN_TRAILER:
        /* RFC 9112 7.1.2: a trailer section is field lines and an empty line, nothing before. */
        s->state = SC_FIELD0;
        break;
    }
}

/* The log says "trailer" where a refusal inside a trailer section would say "head". */
static const char *
scan_trailer_why(const char *why)
{
    static const char *const map[][2] = {
        {"bare LF in head", "bare LF in trailer"},
        {"bare CR in head", "bare CR in trailer"},
        {"NUL in head", "NUL in trailer"},
        {"control character in head", "control character in trailer"},
        {"head too large", "trailer section too large"},
        {"too many header fields", "too many trailer fields"},
        {"obs-fold in header", "obs-fold in trailer"},
        {"empty header name", "empty trailer field name"},
        {"bad header name", "bad trailer field name"},
        {"header without colon", "trailer field without colon"},
        {"bad header value", "bad trailer field value"},
        {"whitespace before colon", "whitespace before colon in trailer"},
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(why, map[i][0]) == 0)
            return map[i][1];
    }
    return why;
}

static int
scan_fail(struct http_scan *s, uint16_t status, const char *why)
{
    s->state = SC_ERROR;
    s->error = s->kind == HTTP_SCAN_RESPONSE ? 502 : status;
    s->why = s->kind == HTTP_SCAN_TRAILER ? scan_trailer_why(why) : why;
    return -1;
}

/* Names the offending byte when it is one of the classics, else uses why (a CR here ends a line
 * too early: the states that expect the LF of a CRLF say "bare CR" themselves). */
static int
scan_bad_byte(struct http_scan *s, unsigned char c, const char *why)
{
    if (c == '\n')
        return scan_fail(s, 400, "bare LF in head");
    if (c == 0)
        return scan_fail(s, 400, "NUL in head");
    if (c < 0x20 && c != '\t' && c != '\r')
        return scan_fail(s, 400, "control character in head");
    return scan_fail(s, 400, why);
}

static bool
scan_in_start_line(const struct http_scan *s)
{
    return s->state < SC_LINE_LF;
}

/* "HTTP/d.d" whole at p (8 bytes readable). */
static inline bool
version_whole(const unsigned char *p)
{
    return memcmp(p, "HTTP/", 5) == 0 && is_digit(p[5]) && p[6] == '.' && is_digit(p[7]);
}

/* Matches one byte of "HTTP/d.d". */
static bool
scan_version_byte(struct http_scan *s, unsigned char c)
{
    char want = version_pattern[s->idx];

    if (want == '#' ? !is_digit(c) : c != (unsigned char)want)
        return false;
    s->idx++;
    return true;
}

/* Records where a part of the head lies (at p[i], or p[at] for MARK_AT), when the caller asked
 * for marks. */
#define MARK_AT(field, at)                                                                         \
    do {                                                                                           \
        if (m != NULL)                                                                             \
            m->field = (uint32_t)(s->len + (at));                                                  \
    } while (0)
#define MARK(field) MARK_AT(field, i)

/* Where the run of bytes at p[i..n) that pass the test ends. */
static inline size_t
tchar_run_end(const unsigned char *p, size_t i, size_t n)
{
    while (i < n && http_is_tchar(p[i]))
        i++;
    return i;
}

/* Field values are the longest runs of a head: they are taken 8 bytes at a time while a word has
 * no control byte and no DEL (a word with a tab, which is allowed, goes bytewise like the end). */
static inline size_t
field_run_end(const unsigned char *p, size_t i, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;

    while (n - i >= 8) {
        uint64_t x, d;

        memcpy(&x, p + i, 8);
        d = x ^ (ones * 0x7f);
        /* Some byte below 0x20 (bytes of 0x80 and above never count), or some byte 0x7f: the
         * borrow tricks are exact as to whether there is one. */
        if (((x - ones * 0x20) & ~x & highs) | ((d - ones) & ~d & highs))
            break;
        i += 8;
    }
    while (i < n && http_is_field_char(p[i]))
        i++;
    return i;
}

/*
 * Field lines while each is whole in p[i..n): name, colon, value, CRLF, without going back to the
 * state machine between them (a head is mostly field lines). Returns the index where it stopped,
 * with s->state set for the byte there: the empty line's CR, a line cut by the end of p, or a
 * byte the state machine then refuses with its own words.
 */
static size_t
scan_fields(struct http_scan *s, const unsigned char *p, size_t i, size_t n)
{
    struct http_marks *m = s->marks;

    while (i < n && http_is_tchar(p[i])) {
        size_t colon, end;

        if (s->nfields == HTTP_MAX_HEADERS)
            return i; /* SC_FIELD0 refuses it */
        s->nfields++;
        MARK_AT(f[s->nfields - 1].name, i);
        colon = tchar_run_end(p, i + 1, n);
        s->state = SC_NAME;
        if (colon == n || p[colon] != ':')
            return colon;
        MARK_AT(f[s->nfields - 1].colon, colon);
        end = field_run_end(p, colon + 1, n);
        s->state = SC_VALUE;
        if (end == n || p[end] != '\r')
            return end;
        MARK_AT(f[s->nfields - 1].end, end);
        s->state = SC_FIELD_LF;
        if (end + 1 == n || p[end + 1] != '\n')
            return end + 1;
        i = end + 2;
        s->state = SC_FIELD0;
    }
    return i;
}

/*
 * The state machine over n bytes (the caller has already cut n to the size limit). Returns 1 with
 * *used bytes consumed when the head ends, 0 when all n were consumed, -1 on refusal.
 */
static int
scan_run(struct http_scan *s, const unsigned char *p, size_t n, size_t *used)
{
    struct http_marks *m = s->marks;
    size_t i = 0;

    while (i < n) {
        unsigned char c = p[i];

        switch (s->state) {
        case SC_REQ_START:
            /* RFC 9112 2.2: a server SHOULD ignore at least one empty line before the
             * request-line. */
            if (c == '\r') {
                s->state = SC_REQ_START_LF;
            } else if (http_is_tchar(c)) {
                s->state = SC_METHOD;
                s->idx = 1;
                MARK(line);
            } else {
                return scan_bad_byte(s, c, "bad request line");
            }
            break;
        case SC_REQ_START_LF:
            if (c != '\n')
                return scan_bad_byte(s, c, "bare CR in head");
            s->state = SC_REQ_START;
            break;
        case SC_METHOD: {
            size_t start = i;

            i = tchar_run_end(p, i, n);
            if (i - start + s->idx > METHOD_MAX)
                return scan_fail(s, 501, "unknown method");
            s->idx = (uint8_t)(s->idx + (i - start));
            if (i == n)
                continue;
            c = p[i];
            if (c == ' ') {
                s->state = SC_TARGET0;
                MARK(sp1);
            } else {
                return scan_bad_byte(s, c, "bad request line");
            }
            break;
        }
        case SC_TARGET0:
        case SC_TARGET: {
            /* RFC 9112 3.2: the target has no whitespace; RFC 3986 has no controls or non-ASCII
             * in URIs; a fragment is never sent (RFC 9110 7.1). */
            size_t start = i;
            while (i < n && p[i] > 0x20 && p[i] < 0x7f && p[i] != '#')
                i++;
            if (i > start)
                s->state = SC_TARGET;
            if (i == n)
                continue;
            c = p[i];
            if (c == ' ' && s->state == SC_TARGET) {
                s->state = SC_REQ_VERSION;
                s->idx = 0;
                MARK(sp2);
            } else if (c == '#') {
                return scan_fail(s, 400, "fragment in request target");
            } else {
                return scan_bad_byte(s, c, "bad request target");
            }
            break;
        }
        case SC_REQ_VERSION:
            if (s->idx == 0 && n - i > 8 && version_whole(p + i)) {
                i += 7; /* the last digit, then the byte after it, below */
                s->idx = 7;
                c = p[i];
            }
            if (s->idx < sizeof(version_pattern) - 1) {
                if (!scan_version_byte(s, c))
                    return scan_bad_byte(s, c, "bad HTTP version");
            } else if (c == '\r') {
                s->state = SC_LINE_LF;
                MARK(line_end);
            } else {
                return scan_bad_byte(s, c, "bad request line");
            }
            break;
        case SC_RES_VERSION:
            if (s->idx == 0 && n - i > 8 && version_whole(p + i)) {
                i += 7;
                s->idx = 7;
                c = p[i];
            }
            if (s->idx < sizeof(version_pattern) - 1) {
                if (!scan_version_byte(s, c))
                    return scan_bad_byte(s, c, "bad HTTP version");
            } else if (c == ' ') {
                s->state = SC_CODE;
                s->idx = 0;
                MARK(sp1);
            } else {
                return scan_bad_byte(s, c, "bad status line");
            }
            break;
        case SC_CODE:
            if (!is_digit(c))
                return scan_bad_byte(s, c, "bad status code");
            if (++s->idx == 3)
                s->state = SC_CODE_END;
            break;
        case SC_CODE_END:
            /* RFC 9112 4 wants "SP [reason]"; servers that end the line after the code are
             * common enough to accept, as every client does. */
            if (c == ' ') {
                s->state = SC_REASON;
                MARK(sp2);
            } else if (c == '\r') {
                s->state = SC_LINE_LF;
                MARK(line_end);
            } else {
                return scan_bad_byte(s, c, "bad status line");
            }
            break;
        case SC_REASON:
            i = field_run_end(p, i, n);
            if (i == n)
                continue;
            c = p[i];
            if (c != '\r')
                return scan_bad_byte(s, c, "bad reason phrase");
            s->state = SC_LINE_LF;
            MARK(line_end);
            break;
        case SC_LINE_LF:
        case SC_FIELD_LF:
            if (c != '\n')
                return scan_bad_byte(s, c, "bare CR in head");
            s->state = SC_FIELD0;
            break;
        case SC_FIELD0:
            if (http_is_tchar(c) && s->nfields < HTTP_MAX_HEADERS) {
                i = scan_fields(s, p, i, n);
                continue;
            }
            if (c == '\r') {
                s->state = SC_END_LF;
            } else if (http_is_tchar(c)) {
                if (++s->nfields > HTTP_MAX_HEADERS)
                    return scan_fail(s, 431, "too many header fields");
                s->state = SC_NAME;
                MARK(f[s->nfields - 1].name);
            } else if (is_ows(c)) {
                /* RFC 9112 5.2: obs-fold is refused rather than unfolded. */
                return scan_fail(s, 400, "obs-fold in header");
            } else if (c == ':') {
                return scan_fail(s, 400, "empty header name");
            } else {
                return scan_bad_byte(s, c, "bad header name");
            }
            break;
        case SC_NAME:
            i = tchar_run_end(p, i, n);
            if (i == n)
                continue;
            c = p[i];
            if (c == ':') {
                s->state = SC_VALUE;
                MARK(f[s->nfields - 1].colon);
            } else if (is_ows(c)) {
                /* RFC 9112 5.1: no whitespace between the field name and the colon, ever. */
                return scan_fail(s, 400, "whitespace before colon");
            } else {
                return scan_bad_byte(s, c, c == '\r' ? "header without colon" : "bad header name");
            }
            break;
        case SC_VALUE:
            i = field_run_end(p, i, n);
            if (i == n)
                continue;
            c = p[i];
            if (c != '\r')
                return scan_bad_byte(s, c, "bad header value");
            s->state = SC_FIELD_LF;
            MARK(f[s->nfields - 1].end);
            break;
        case SC_END_LF:
            if (c != '\n')
                return scan_bad_byte(s, c, "bare CR in head");
            s->state = SC_DONE;
            *used = i + 1;
            if (m != NULL) {
                m->len = (uint32_t)(s->len + i + 1);
                m->nfields = s->nfields;
            }
            return 1;
        default:
            assert(0);
            return -1;
        }
        i++;
    }
    *used = n;
    return 0;
}

#undef MARK
#undef MARK_AT

int
http_scan_feed(struct http_scan *s, const char *p, size_t n, size_t *used)
{
    size_t room, take, got = 0;
    int rc;

    *used = 0;
    if (s->state == SC_DONE)
        return 1;
    if (s->state == SC_ERROR)
        return -1;
    room = s->max > s->len ? s->max - s->len : 0;
    take = n < room ? n : room;
    rc = scan_run(s, (const unsigned char *)p, take, &got);
    if (rc < 0) {
        *used = n;
        return -1;
    }
    s->len += got;
    *used = got;
    if (rc > 0)
        return 1;
    if (n > room) {
        *used = n;
        if (s->kind == HTTP_SCAN_REQUEST && scan_in_start_line(s))
            return scan_fail(s, 414, "request line too long");
        return scan_fail(s, 431, "head too large");
    }
    return 0;
}

int
http_scan_head(struct http_scan *s, const char *buf, size_t len)
{
    size_t used;

    assert(len >= s->len);
    if (len < s->len)
        return scan_fail(s, 400, "head shrank");
    return http_scan_feed(s, buf + s->len, len - s->len, &used);
}

/* ---------------------------------------------------------------------------------------------
 * Known field names: looked up once per field at parse time, kept in http_header.id.
 */

enum field_id {
    FLD_OTHER,
    FLD_CONNECTION,
    FLD_CONTENT_LENGTH,
    FLD_EXPECT,
    FLD_FORWARDED,
    FLD_HOST,
    FLD_HTTP2_SETTINGS,
    FLD_KEEP_ALIVE,
    FLD_PROXY_CONNECTION,
    FLD_TE,
    FLD_TRAILER,
    FLD_TRANSFER_ENCODING,
    FLD_UPGRADE,
    FLD_X_FORWARDED_FOR,
    FLD_X_FORWARDED_HOST,
    FLD_X_FORWARDED_PORT,
    FLD_X_FORWARDED_PROTO,
    FLD_X_REAL_IP,
    FLD_X_REQUEST_ID,
};

#define FIELD(id, lc) [id] = {lc, sizeof(lc) - 1}
static const struct {
    const char *name; /* lowercase */
    size_t len;
} fields[] = {
    FIELD(FLD_CONNECTION, "connection"),
    FIELD(FLD_CONTENT_LENGTH, "content-length"),
    FIELD(FLD_EXPECT, "expect"),
    FIELD(FLD_FORWARDED, "forwarded"),
    FIELD(FLD_HOST, "host"),
    FIELD(FLD_HTTP2_SETTINGS, "http2-settings"),
    FIELD(FLD_KEEP_ALIVE, "keep-alive"),
    FIELD(FLD_PROXY_CONNECTION, "proxy-connection"),
    FIELD(FLD_TE, "te"),
    FIELD(FLD_TRAILER, "trailer"),
    FIELD(FLD_TRANSFER_ENCODING, "transfer-encoding"),
    FIELD(FLD_UPGRADE, "upgrade"),
    FIELD(FLD_X_FORWARDED_FOR, "x-forwarded-for"),
    FIELD(FLD_X_FORWARDED_HOST, "x-forwarded-host"),
    FIELD(FLD_X_FORWARDED_PORT, "x-forwarded-port"),
    FIELD(FLD_X_FORWARDED_PROTO, "x-forwarded-proto"),
    FIELD(FLD_X_REAL_IP, "x-real-ip"),
    FIELD(FLD_X_REQUEST_ID, "x-request-id"),
};
#undef FIELD

/* The known names of each length (FLD_OTHER ends a list), so that a name is compared with one or
 * two of them, not looked for among all. */
static const uint8_t fields_of_len[][3] = {
    [2] = {FLD_TE},
    [4] = {FLD_HOST},
    [6] = {FLD_EXPECT},
    [7] = {FLD_TRAILER, FLD_UPGRADE},
    [9] = {FLD_FORWARDED, FLD_X_REAL_IP},
    [10] = {FLD_CONNECTION, FLD_KEEP_ALIVE},
    [12] = {FLD_X_REQUEST_ID},
    [14] = {FLD_CONTENT_LENGTH, FLD_HTTP2_SETTINGS},
    [15] = {FLD_X_FORWARDED_FOR},
    [16] = {FLD_PROXY_CONNECTION, FLD_X_FORWARDED_HOST, FLD_X_FORWARDED_PORT},
    [17] = {FLD_TRANSFER_ENCODING, FLD_X_FORWARDED_PROTO},
};

/* Every field of every head comes through here. */
static uint8_t
field_id(struct http_span name)
{
    if (name.len >= sizeof(fields_of_len) / sizeof(fields_of_len[0]))
        return FLD_OTHER;
    for (size_t i = 0; i < 3 && fields_of_len[name.len][i] != FLD_OTHER; i++) {
        uint8_t id = fields_of_len[name.len][i];

        assert(fields[id].len == name.len);
        if (span_is(name.p, name.len, fields[id].name))
            return id;
    }
    return FLD_OTHER;
}

const struct http_span *
http_header_find(const struct http_headers *hs, const char *name)
{
    for (unsigned i = 0; i < hs->n; i++) {
        if (span_is(hs->h[i].name.p, hs->h[i].name.len, name))
            return &hs->h[i].value;
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * From marks to spans: the scanner has checked the syntax and said where each part lies.
 */

/*
 * Scans a whole head that no scan has marked yet (a caller that holds the bytes only). Returns 0,
 * or -1 with *error and *why set.
 */
static int
head_scan(enum http_scan_kind kind, const char *head, size_t len, struct http_marks *m,
          uint16_t *error, const char **why)
{
    struct http_scan scan;

    http_scan_init_marks(&scan, kind, len < UINT32_MAX ? len : UINT32_MAX - 1, m);
    switch (http_scan_head(&scan, head, len)) {
    case -1:
        *error = scan.error;
        *why = scan.why;
        return -1;
    case 0:
        *error = 400;
        *why = "incomplete head";
        return -1;
    default:
        if (scan.len != len) {
            *error = 400;
            *why = "bytes after the head";
            return -1;
        }
        return 0;
    }
}

/* The field lines the scanner marked, as spans into head: names as sent, values trimmed. */
static void
head_fields(struct http_headers *hs, const char *head, const struct http_marks *m)
{
    hs->n = m->nfields;
    for (unsigned i = 0; i < m->nfields; i++) {
        struct http_header *h = &hs->h[i];
        uint32_t colon = m->f[i].colon;

        h->name = (struct http_span){head + m->f[i].name, colon - m->f[i].name};
        h->value = span_trim((struct http_span){head + colon + 1, m->f[i].end - colon - 1});
        h->id = field_id(h->name);
    }
}

/* The version in "HTTP/d.d" at p, which the scanner checked: 10, 11, or -1 for any other. */
static int
head_version(const char *p)
{
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return -1;
    return 10 + (p[7] - '0');
}

/* The methods http-parser knows, as its enum numbers them: the methods portier forwards. */
static const struct {
    const char *name; /* NULL: a number http-parser does not use */
    size_t len;
} methods[] = {
#define XX(num, name, string) [num] = {#string, sizeof(#string) - 1},
    HTTP_METHOD_MAP(XX)
#undef XX
};

/* The method's number (enum http_method), or -1 when it is none that http-parser knows. */
static int
method_lookup(struct http_span m)
{
    if (m.len == 3 && memcmp(m.p, "GET", 3) == 0)
        return HTTP_GET;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (methods[i].len == m.len && memcmp(methods[i].name, m.p, m.len) == 0)
            return (int)i;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Field rules shared by requests and responses.
 */

/* What the fields of a head say, before the request or response rules are applied. */
struct facts {
    unsigned ncl, nte, nhost, nrid;
    const struct http_span *cl, *te, *host, *rid;
    bool conn_close, conn_keep_alive, conn_upgrade;
    bool upgrade, upgrade_websocket;
    bool expect_other, expect_continue;
};

/* RFC 9110 8.6: Content-Length = 1*DIGIT. One value, no sign, no list, no spaces, below 2^63. */
static int
parse_content_length(struct http_span v, uint64_t *out)
{
    uint64_t n = 0;

    if (v.len == 0)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];

        if (!is_digit(c))
            return -1;
        if (n > (UINT64_C(0x7fffffffffffffff) - (c - '0')) / 10)
            return -1;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return 0;
}

/* Records the options of one Connection field (RFC 9110 7.6.1: a list of tokens). */
static int
connection_options(struct http_headers *hs, struct http_span v, struct facts *f, const char **why)
{
    const char *pos = v.p, *end = v.p + v.len;
    struct http_span opt;

    while (list_next(&pos, end, &opt)) {
        if (!is_token(opt)) {
            *why = "bad Connection option";
            return -1;
        }
        if (hs->nconn == HTTP_MAX_CONN_TOKENS) {
            *why = "too many Connection options";
            return -1;
        }
        hs->conn[hs->nconn++] = opt;
        if (span_is(opt.p, opt.len, "close"))
            f->conn_close = true;
        else if (span_is(opt.p, opt.len, "keep-alive"))
            f->conn_keep_alive = true;
        else if (span_is(opt.p, opt.len, "upgrade"))
            f->conn_upgrade = true;
    }
    return 0;
}

/* RFC 9110 7.8: Upgrade lists protocols; only websocket (RFC 6455 4.1) is ever tunnelled. */
static void
upgrade_protocols(struct http_span v, struct facts *f)
{
    const char *pos = v.p, *end = v.p + v.len;
    struct http_span proto;

    f->upgrade = true;
    while (list_next(&pos, end, &proto)) {
        if (span_is(proto.p, proto.len, "websocket"))
            f->upgrade_websocket = true;
    }
}

/* RFC 9110 10.1.1: 100-continue is the only expectation defined. */
static void
expectations(struct http_span v, struct facts *f)
{
    const char *pos = v.p, *end = v.p + v.len;
    struct http_span e;

    while (list_next(&pos, end, &e)) {
        if (span_is(e.p, e.len, "100-continue"))
            f->expect_continue = true;
        else
            f->expect_other = true;
    }
}

static int
facts_collect(struct http_headers *hs, struct facts *f, const char **why)
{
    memset(f, 0, sizeof(*f));
    hs->nconn = 0;
    for (unsigned i = 0; i < hs->n; i++) {
        const struct http_header *h = &hs->h[i];

        switch (h->id) {
        case FLD_CONTENT_LENGTH:
            f->cl = f->ncl++ == 0 ? &h->value : f->cl;
            break;
        case FLD_TRANSFER_ENCODING:
            f->te = f->nte++ == 0 ? &h->value : f->te;
            break;
        case FLD_HOST:
            f->host = f->nhost++ == 0 ? &h->value : f->host;
            break;
        case FLD_X_REQUEST_ID:
            f->rid = f->nrid++ == 0 ? &h->value : f->rid;
            break;
        case FLD_CONNECTION:
            if (connection_options(hs, h->value, f, why) < 0)
                return -1;
            break;
        case FLD_UPGRADE:
            upgrade_protocols(h->value, f);
            break;
        case FLD_EXPECT:
            expectations(h->value, f);
            break;
        default:
            break;
        }
    }
    return 0;
}

/*
 * The framing fields both ways: at most one Content-Length, valid; at most one Transfer-Encoding
 * and never with Content-Length (RFC 9112 6.3 item 3: "ought to be handled as an error"); no
 * Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1). Returns 0, or -1 with *why set.
 */
static int
framing_common(const struct facts *f, int version, uint64_t *cl, const char **why)
{
    if (f->ncl > 1) {
        *why = "two Content-Length fields";
        return -1;
    }
    if (f->ncl == 1 && parse_content_length(*f->cl, cl) < 0) {
        *why = "invalid Content-Length";
        return -1;
    }
    if (f->nte > 1) {
        *why = "two Transfer-Encoding fields";
        return -1;
    }
    if (f->nte == 1 && f->ncl == 1) {
        *why = "Content-Length with Transfer-Encoding";
        return -1;
    }
    if (f->nte == 1 && version == 10) {
        *why = "Transfer-Encoding in HTTP/1.0";
        return -1;
    }
    return 0;
}

/*
 * Transfer-Encoding of a request (RFC 9112 6.1, 6.3 item 4): the final coding must be chunked,
 * else the length cannot be known (400); codings before it are ones we would forward unchecked,
 * so they are refused as not implemented (501). Returns 0, or the status with *why set.
 */
static uint16_t
request_transfer_coding(struct http_span v, const char **why)
{
    const char *pos = v.p, *end = v.p + v.len;
    struct http_span coding, last = {NULL, 0};
    unsigned n = 0;

    while (list_next(&pos, end, &coding)) {
        last = coding;
        n++;
    }
    if (n == 0) {
        *why = "empty Transfer-Encoding";
        return 400;
    }
    if (!span_is(last.p, last.len, "chunked")) {
        *why = "final transfer coding is not chunked";
        return 400;
    }
    if (n > 1) {
        *why = "transfer coding other than chunked";
        return 501;
    }
    return 0;
}

/* RFC 9110 4.2.4 / RFC 3986 3.2.2: reg-name characters (unreserved, pct-encoded, sub-delims). */
static bool
is_reg_name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
           (c != 0 && strchr("-._~!$&'()*+,;=%", c) != NULL);
}

/*
 * RFC 9110 7.2 / RFC 3986 3.2.2-3.2.3: Host = uri-host [ ":" port ]. uri-host is a reg-name
 * (percent-encodings checked) or an IPv4 address (a reg-name by syntax) or "[" IPv6 "]"; port
 * is up to five digits, at most 65535, and may be empty. An empty Host is valid only where allowed.
 */
static bool
host_valid(struct http_span h, bool allow_empty)
{
    size_t i = 0;

    if (h.len == 0)
        return allow_empty;
    if (h.p[0] == '[') {
        for (i = 1; i < h.len && h.p[i] != ']'; i++) {
            unsigned char c = (unsigned char)h.p[i];

            if (http_hex_value(c) < 0 && c != ':' && c != '.')
                return false;
        }
        if (i == h.len || i < 3)
            return false;
        i++;
    } else {
        for (; i < h.len && h.p[i] != ':'; i++) {
            unsigned char c = (unsigned char)h.p[i];

            if (!is_reg_name_char(c))
                return false;
            if (c == '%' && (i + 2 >= h.len || http_hex_value((unsigned char)h.p[i + 1]) < 0 ||
                             http_hex_value((unsigned char)h.p[i + 2]) < 0))
                return false;
        }
        if (i == 0)
            return false;
    }
    if (i == h.len)
        return true;
    if (h.p[i] != ':' || h.len - i - 1 > 5)
        return false;
    unsigned long port = 0;
    for (i++; i < h.len; i++) {
        if (!is_digit((unsigned char)h.p[i]))
            return false;
        port = port * 10 + (unsigned long)(h.p[i] - '0');
    }
    return port <= 65535;
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static int
req_fail(struct http_request *req, uint16_t status, const char *why)
{
    req->error = status;
    req->why = why;
    return -1;
}

/* Splits "path?query" into the two spans. */
static void
split_query(struct http_request *req, const char *p, size_t len)
{
    const char *q = memchr(p, '?', len);
    size_t plen = q != NULL ? (size_t)(q - p) : len;

    req->path = (struct http_span){p, plen};
    req->query = (struct http_span){p + plen, len - plen};
}

/*
 * RFC 9112 3.2: origin-form for every method, absolute-form (http/https) for proxies and for
 * servers alike (3.2.2), asterisk-form for OPTIONS only (3.2.4); authority-form is CONNECT's, and
 * CONNECT is refused before this.
 */
static int
request_target(struct http_request *req, enum http_method method)
{
    struct http_span t = req->target;
    size_t skip;

    if (t.p[0] == '/') {
        split_query(req, t.p, t.len);
        return 0;
    }
    if (t.len == 1 && t.p[0] == '*') {
        if (method != HTTP_OPTIONS)
            return req_fail(req, 400, "asterisk-form without OPTIONS");
        req->path = t;
        req->query = (struct http_span){t.p + 1, 0};
        return 0;
    }
    if (t.len > 7 && span_is(t.p, 7, "http://"))
        skip = 7;
    else if (t.len > 8 && span_is(t.p, 8, "https://"))
        skip = 8;
    else
        return req_fail(req, 400, "request target not in origin or absolute form");

    const char *auth = t.p + skip, *end = t.p + t.len, *stop = auth;
    while (stop < end && *stop != '/' && *stop != '?')
        stop++;
    struct http_span authority = {auth, (size_t)(stop - auth)};
    /* RFC 9110 4.2.4: userinfo in an http(s) URI is to be treated as an error. */
    if (memchr(authority.p, '@', authority.len) != NULL)
        return req_fail(req, 400, "userinfo in request target");
    /* RFC 9110 4.2.1: an http URI with an empty host is invalid. */
    if (!host_valid(authority, false))
        return req_fail(req, 400, "invalid host in request target");
    req->absolute_form = true;
    req->host = authority;
    split_query(req, stop, (size_t)(end - stop));
    return 0;
}

/* Host (RFC 9112 3.2): required in 1.1, never twice, always valid; an absolute-form target's
 * authority overrides it. */
static int
request_host(struct http_request *req, const struct facts *f)
{
    if (f->nhost > 1)
        return req_fail(req, 400, "two Host fields");
    if (f->nhost == 1 && !host_valid(*f->host, true))
        return req_fail(req, 400, "invalid Host");
    /* Even with an absolute-form target, whose authority then wins (RFC 9112 3.2.2). */
    if (f->nhost == 0 && req->version == 11)
        return req_fail(req, 400, "no Host in HTTP/1.1 request");
    if (!req->absolute_form && f->nhost == 1) {
        req->host = *f->host;
        req->has_host = true;
    }
    if (req->absolute_form)
        req->has_host = true;
    return 0;
}

static int
request_framing(struct http_request *req, const struct facts *f)
{
    const char *why = NULL;
    uint16_t status;

    if (framing_common(f, req->version, &req->content_length, &why) < 0)
        return req_fail(req, 400, why);
    if (f->nte == 1) {
        status = request_transfer_coding(*f->te, &why);
        if (status != 0)
            return req_fail(req, status, why);
        req->framing = HTTP_FRAMING_CHUNKED;
    } else if (f->ncl == 1) {
        req->has_content_length = true;
        req->framing = HTTP_FRAMING_LENGTH;
    } else {
        /* RFC 9112 6.3 item 7: a request without either has no body. */
        req->framing = HTTP_FRAMING_NONE;
    }
    return 0;
}

void
http_request_reset(struct http_request *req)
{
    memset(req, 0, offsetof(struct http_request, hdrs));
    req->hdrs.n = 0;
    req->hdrs.nconn = 0;
}

int
http_request_parse(struct http_request *req, const char *head, size_t len)
{
    struct http_marks m;
    uint16_t status = 0;
    const char *why = NULL;

    if (head_scan(HTTP_SCAN_REQUEST, head, len, &m, &status, &why) < 0) {
        http_request_reset(req);
        req->head_len = len;
        return req_fail(req, status, why);
    }
    return http_request_parse_marks(req, head, len, &m);
}

int
http_request_parse_marks(struct http_request *req, const char *head, size_t len,
                         const struct http_marks *m)
{
    struct facts f;
    const char *why = NULL;
    int method;

    http_request_reset(req);
    req->head_len = len;
    if (m->len != len || len == 0)
        return req_fail(req, 400, "head does not match its scan");
    req->method = (struct http_span){head + m->line, m->sp1 - m->line};
    req->target = (struct http_span){head + m->sp1 + 1, m->sp2 - m->sp1 - 1};
    method = method_lookup(req->method);
    if (method < 0)
        return req_fail(req, 501, "invalid HTTP method");
    /* RFC 9110 2.5 / 15.6.6: we speak 1.0 and 1.1; the scanner already checked the syntax. */
    req->version = head_version(head + m->sp2 + 1);
    if (req->version < 0)
        return req_fail(req, 505, "unsupported HTTP version");
    if (method == HTTP_CONNECT)
        return req_fail(req, 501, "CONNECT not supported");
    req->is_head = method == HTTP_HEAD;
    /* The scanner refuses an empty target and a '#' in one. */
    if (request_target(req, (enum http_method)method) < 0)
        return -1;

    head_fields(&req->hdrs, head, m);
    if (facts_collect(&req->hdrs, &f, &why) < 0)
        return req_fail(req, 400, why);
    if (request_host(req, &f) < 0 || request_framing(req, &f) < 0)
        return -1;
    if (req->version == 11 && f.expect_other)
        return req_fail(req, 417, "unsupported expectation");

    req->expect_continue = req->version == 11 && f.expect_continue;
    /* RFC 9112 9.3: 1.1 persists unless "close"; 1.0 only with "keep-alive". */
    req->keep_alive = !f.conn_close && (req->version == 11 || f.conn_keep_alive);
    /* RFC 9110 7.8 (Upgrade only with Connection: upgrade, ignored in 1.0), RFC 6455 4.1 (GET). */
    req->upgrade_websocket =
        f.upgrade_websocket && f.conn_upgrade && req->version == 11 && method == HTTP_GET;
    req->upgrade_dropped = f.upgrade && !req->upgrade_websocket;
    if (f.nrid == 1)
        req->request_id = *f.rid;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Responses
 */

void
http_request_salvage(struct http_request *req, const char *head, size_t len)
{
    const char *sp1 = memchr(head, ' ', len < 32 ? len : 32), *start, *end, *sp2, *cr;

    if (req->method.len > 0 || sp1 == NULL)
        return;
    req->method = (struct http_span){head, (size_t)(sp1 - head)};
    if (req->target.len > 0)
        return;
    start = sp1 + 1;
    end = head + len;
    sp2 = memchr(start, ' ', (size_t)(end - start));
    cr = memchr(start, '\r', (size_t)(end - start));
    if (sp2 == NULL || (cr != NULL && cr < sp2))
        sp2 = cr;
    if (sp2 != NULL)
        req->target = (struct http_span){start, (size_t)(sp2 - start)};
}

static int
res_fail(struct http_response *res, const char *why)
{
    res->error = 502;
    res->why = why;
    return -1;
}

void
http_response_reset(struct http_response *res)
{
    memset(res, 0, offsetof(struct http_response, hdrs));
    res->hdrs.n = 0;
    res->hdrs.nconn = 0;
}

int
http_response_parse(struct http_response *res, const char *head, size_t len, unsigned flags)
{
    struct http_marks m;
    uint16_t status = 0;
    const char *why = NULL;

    if (head_scan(HTTP_SCAN_RESPONSE, head, len, &m, &status, &why) < 0) {
        http_response_reset(res);
        res->head_len = len;
        return res_fail(res, why);
    }
    return http_response_parse_marks(res, head, len, flags, &m);
}

int
http_response_parse_marks(struct http_response *res, const char *head, size_t len, unsigned flags,
                          const struct http_marks *m)
{
    struct facts f;
    const char *why = NULL;

    http_response_reset(res);
    res->head_len = len;
    if (m->len != len || len == 0)
        return res_fail(res, "head does not match its scan");
    res->version = head_version(head);
    if (res->version < 0)
        return res_fail(res, "unsupported HTTP version");
    res->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
    /* RFC 9110 15: the first digit is the class, 1 to 5. */
    if (res->status < 100 || res->status > 599)
        return res_fail(res, "bad status code");
    if (m->sp2 != 0)
        res->reason = (struct http_span){head + m->sp2 + 1, m->line_end - m->sp2 - 1};
    else
        res->reason = (struct http_span){head + m->line_end, 0};

    head_fields(&res->hdrs, head, m);
    if (facts_collect(&res->hdrs, &f, &why) < 0)
        return res_fail(res, why);
    if (framing_common(&f, res->version, &res->content_length, &why) < 0)
        return res_fail(res, why);
    if (f.nte == 1) {
        /* Codings other than a lone chunked are not forwarded: refused rather than read until
         * close as RFC 9112 6.3 item 4 would allow. */
        const char *pos = f.te->p;
        struct http_span coding;
        if (!list_next(&pos, f.te->p + f.te->len, &coding) ||
            !span_is(coding.p, coding.len, "chunked") ||
            list_next(&pos, f.te->p + f.te->len, &coding))
            return res_fail(res, "transfer coding other than chunked");
        res->chunked = true;
    }
    res->has_content_length = f.ncl == 1;

    if (res->status == 101) {
        if (!(flags & HTTP_RSP_F_UPGRADE) || !f.upgrade_websocket || !f.conn_upgrade)
            return res_fail(res, "unexpected 101 response");
        res->upgrade_websocket = true;
    }
    res->interim = res->status < 200 && res->status != 101;

    /* RFC 9112 6.3, in its order. */
    if ((flags & HTTP_RSP_F_HEAD) || res->status < 200 || res->status == 204 || res->status == 304)
        res->framing = HTTP_FRAMING_NONE;
    else if (res->chunked)
        res->framing = HTTP_FRAMING_CHUNKED;
    else if (res->has_content_length)
        res->framing = HTTP_FRAMING_LENGTH;
    else
        res->framing = HTTP_FRAMING_CLOSE;

    res->keep_alive = !f.conn_close && (res->version == 11 || f.conn_keep_alive) &&
                      res->framing != HTTP_FRAMING_CLOSE && res->status != 101;
    return 0;
}

unsigned
http_response_flags(const struct http_request *req, const struct http_response *res,
                    bool keep_alive)
{
    bool ka = keep_alive && req->keep_alive && res->framing != HTTP_FRAMING_CLOSE;
    unsigned flags = 0;

    if (res->interim) /* RFC 9110 15.2: no 1xx to an HTTP/1.0 client. */
        return req->version == 10 ? HTTP_RES_F_SKIP : 0;
    if (res->upgrade_websocket)
        return HTTP_RES_F_UPGRADE;
    if (req->version == 10) {
        /* RFC 9112 6.1: no Transfer-Encoding to a 1.0 client; a chunked body goes out decoded
         * and delimited by closing the connection. */
        if (res->chunked)
            flags |= HTTP_RES_F_DECHUNK;
        if (res->framing == HTTP_FRAMING_CHUNKED)
            ka = false;
        return flags | (ka ? HTTP_RES_F_KEEPALIVE : HTTP_RES_F_CLOSE);
    }
    return ka ? 0 : HTTP_RES_F_CLOSE;
}

/* ---------------------------------------------------------------------------------------------
 * Writers: into a bounded buffer (wbuf), counting what would have been written.
 */

static void
put_span(struct wbuf *o, struct http_span s)
{
    wbuf_raw(o, s.p, s.len);
}

static void
put_field(struct wbuf *o, struct http_span name, struct http_span value)
{
    put_span(o, name);
    wbuf_raw(o, ": ", 2);
    put_span(o, value);
    wbuf_raw(o, "\r\n", 2);
}

/*
 * Field lines passed on from a parsed head. Most arrive as put_field() would write them, "Name:
 * value\r\n", one after the other: such lines are gathered into a run of the head's own bytes and
 * copied in one piece, the run ending at the first line that is rewritten or left out.
 */
struct field_run {
    const char *p; /* borrowed: inside the head */
    size_t len;
};

static void
run_flush(struct wbuf *o, struct field_run *r)
{
    wbuf_raw(o, r->p, r->len);
    r->len = 0;
}

static void
run_field(struct wbuf *o, struct field_run *r, const struct http_header *h)
{
    const char *line = h->name.p;
    size_t n = h->name.len;

    /* The scanner ended the name at the colon and the line at its CR: one SP before the value and
     * nothing after it is the form put_field() writes. */
    if (h->value.len == 0 || h->value.p != line + n + 2 || line[n + 1] != ' ' ||
        h->value.p[h->value.len] != '\r') {
        run_flush(o, r);
        put_field(o, h->name, h->value);
        return;
    }
    if (r->len > 0 && r->p + r->len != line)
        run_flush(o, r);
    if (r->len == 0)
        r->p = line;
    r->len += n + 2 + h->value.len + 2;
}

/* A field portier writes itself: "Name: value\r\n" from a C string. */
static void
put_own(struct wbuf *o, const char *name, struct http_span value)
{
    wbuf_str(o, name);
    put_span(o, value);
    wbuf_raw(o, "\r\n", 2);
}

static struct http_span
cspan(const char *s)
{
    return (struct http_span){s != NULL ? s : "", s != NULL ? strlen(s) : 0};
}

/* true when name is one of the options of the message's Connection fields (RFC 9110 7.6.1). */
static bool
listed_in_connection(const struct http_headers *hs, struct http_span name)
{
    for (unsigned i = 0; i < hs->nconn; i++) {
        if (span_eq_ci(hs->conn[i], name))
            return true;
    }
    return false;
}

/* Hop-by-hop fields both ways (RFC 9110 7.6.1, 7.8, 10.1.4; RFC 7540 3.2.1 for HTTP2-Settings;
 * Trailer, which RFC 2616 13.5.1 listed and the project drops too, since trailers are only
 * forwarded inside chunked framing that portier may rewrite), and the framing fields, which the
 * writers rebuild from parsed facts. */
static bool
is_hop_or_framing(uint8_t id)
{
    switch (id) {
    case FLD_CONNECTION:
    case FLD_KEEP_ALIVE:
    case FLD_PROXY_CONNECTION:
    case FLD_TE:
    case FLD_TRAILER:
    case FLD_UPGRADE:
    case FLD_HTTP2_SETTINGS:
    case FLD_CONTENT_LENGTH:
    case FLD_TRANSFER_ENCODING:
        return true;
    default:
        return false;
    }
}

/* Host and the forwarding fields portier writes itself to the server (put_forwarded()). */
static bool
is_set_by_portier(uint8_t id)
{
    switch (id) {
    case FLD_HOST:
    case FLD_X_FORWARDED_FOR:
    case FLD_X_FORWARDED_HOST:
    case FLD_X_FORWARDED_PORT:
    case FLD_X_FORWARDED_PROTO:
    case FLD_X_REAL_IP:
    case FLD_X_REQUEST_ID:
        return true;
    default:
        return false;
    }
}

/* The first non-empty value of a field a trusted peer sent, for the X-Forwarded-* it keeps. */
static const struct http_span *
first_value(const struct http_headers *hs, uint8_t id)
{
    for (unsigned i = 0; i < hs->n; i++) {
        if (hs->h[i].id == id && hs->h[i].value.len > 0)
            return &hs->h[i].value;
    }
    return NULL;
}

/*
 * portier's own fields, after the client's. RFC 7239 Forwarded is not among them: a trusted peer's
 * goes on as sent, anyone else's is dropped (http_request_write()), and portier adds none.
 */
static void
put_forwarded(struct wbuf *o, const struct http_request *req, const struct http_forward *fwd,
              struct http_span host)
{
    bool trusted = fwd->flags & HTTP_FWD_F_TRUSTED;
    const struct http_span *kept;
    struct http_span ip = cspan(fwd->client_ip);

    /* X-Forwarded-For: a trusted peer's list (all its fields, in order) gets the peer appended;
     * from anyone else it is replaced. */
    wbuf_str(o, "X-Forwarded-For: ");
    if (trusted) {
        for (unsigned i = 0; i < req->hdrs.n; i++) {
            const struct http_header *h = &req->hdrs.h[i];
            if (h->id == FLD_X_FORWARDED_FOR && h->value.len > 0) {
                put_span(o, h->value);
                wbuf_raw(o, ", ", 2);
            }
        }
    }
    put_span(o, ip);
    wbuf_raw(o, "\r\n", 2);

    kept = trusted ? first_value(&req->hdrs, FLD_X_FORWARDED_PROTO) : NULL;
    if (kept != NULL || fwd->proto != NULL)
        put_own(o, "X-Forwarded-Proto: ", kept != NULL ? *kept : cspan(fwd->proto));
    kept = trusted ? first_value(&req->hdrs, FLD_X_FORWARDED_HOST) : NULL;
    if (kept != NULL || host.len > 0)
        put_own(o, "X-Forwarded-Host: ", kept != NULL ? *kept : host);
    kept = trusted ? first_value(&req->hdrs, FLD_X_FORWARDED_PORT) : NULL;
    if (kept != NULL || fwd->port != NULL)
        put_own(o, "X-Forwarded-Port: ", kept != NULL ? *kept : cspan(fwd->port));
    kept = trusted ? first_value(&req->hdrs, FLD_X_REAL_IP) : NULL;
    put_own(o, "X-Real-IP: ", kept != NULL ? *kept : ip);
    if (fwd->request_id_len > 0)
        put_own(o, "X-Request-Id: ", (struct http_span){fwd->request_id, fwd->request_id_len});
}

size_t
http_request_write(char *out, size_t cap, const struct http_request *req,
                   const struct http_forward *fwd)
{
    struct wbuf o;
    struct field_run run = {NULL, 0};
    bool drop_expect = req->version == 10 || (fwd->flags & HTTP_FWD_F_DROP_EXPECT);
    struct http_span host = req->has_host ? req->host : cspan(fwd->host);

    wbuf_init(&o, out, 0, cap);
    /* RFC 9112 3.1 and 3.2.1: origin-form to the server, "/" for an empty path. */
    put_span(&o, req->method);
    wbuf_raw(&o, " ", 1);
    if (req->path.len == 0)
        wbuf_raw(&o, "/", 1);
    put_span(&o, req->path);
    put_span(&o, req->query);
    wbuf_raw(&o, " HTTP/1.1\r\n", 11);
    /* RFC 9112 3.2: Host first; for absolute-form the authority of the target (3.2.2). */
    put_own(&o, "Host: ", host);

    for (unsigned i = 0; i < req->hdrs.n; i++) {
        const struct http_header *h = &req->hdrs.h[i];

        if (is_set_by_portier(h->id))
            continue;
        switch (h->id) {
        case FLD_EXPECT:
            if (drop_expect)
                continue;
            break;
        case FLD_FORWARDED:
            /* RFC 7239 4: only a proxy we trust may say who the client was; from anyone else it
             * is removed, as X-Forwarded-* are replaced (RFC 7239 8.1). */
            if (!(fwd->flags & HTTP_FWD_F_TRUSTED))
                continue;
            break;
        default:
            if (is_hop_or_framing(h->id))
                continue;
            break;
        }
        if (listed_in_connection(&req->hdrs, h->name))
            continue;
        run_field(&o, &run, h);
    }
    run_flush(&o, &run);

    if (req->framing == HTTP_FRAMING_LENGTH) {
        wbuf_str(&o, "Content-Length: ");
        wbuf_u64(&o, req->content_length);
        wbuf_raw(&o, "\r\n", 2);
    } else if (req->framing == HTTP_FRAMING_CHUNKED) {
        wbuf_str(&o, "Transfer-Encoding: chunked\r\n");
    }
    if (req->upgrade_websocket)
        wbuf_str(&o, "Connection: Upgrade\r\nUpgrade: websocket\r\n");
    else
        wbuf_str(&o, "Connection: keep-alive\r\n");
    put_forwarded(&o, req, fwd, host);
    wbuf_raw(&o, "\r\n", 2);
    return o.len;
}

/* ---------------------------------------------------------------------------------------------
 * Request trailers
 */

/*
 * RFC 9110 6.5.1: "Many fields cannot be processed outside the header section because their
 * evaluation is necessary prior to receiving the content, such as those that describe message
 * framing, routing, authentication, request modifiers, response controls, or content format."
 * RFC 9110 6.5.2 forbids merging a trailer field into the header section unless its definition
 * allows it, but a server that does so anyway would take these from the client after portier
 * has checked (or set) the head's. Besides the known fields below: authentication (RFC 9110
 * 11.6.2 Authorization, RFC 6265 5.4 Cookie), request modifiers (RFC 9110 10.1.1 Expect, 7.6.2
 * Max-Forwards, 14.2 Range, 13.1 the conditionals, RFC 9111 5.2 Cache-Control and 5.4 Pragma),
 * content format (RFC 9110 8.3 Content-Type, 8.4 Content-Encoding, 14.4 Content-Range) and
 * forwarding (RFC 9110 7.6.3 Via). Integrity fields (Content-Digest...) and the like, which is
 * what request trailers are for, pass.
 */
static const char *const trailer_forbidden_names[] = {
    "authorization",       "cache-control", "content-encoding",
    "content-range",       "content-type",  "cookie",
    "max-forwards",        "pragma",        "proxy-authenticate",
    "proxy-authorization", "range",         "via",
};

bool
http_trailer_forbidden(const struct http_headers *req, struct http_span name)
{
    uint8_t id = field_id(name);

    /* Hop-by-hop (RFC 9110 7.6.1) and framing (6.5.1); routing, and what portier sets or checks
     * in the head; Expect, a request modifier (10.1.1). */
    if (is_hop_or_framing(id) || is_set_by_portier(id) || id == FLD_FORWARDED || id == FLD_EXPECT)
        return true;
    for (size_t i = 0; i < sizeof(trailer_forbidden_names) / sizeof(trailer_forbidden_names[0]);
         i++) {
        if (span_is(name.p, name.len, trailer_forbidden_names[i]))
            return true;
    }
    /* RFC 9110 13.1: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range;
     * any other If- field is taken for a conditional too. */
    if (name.len >= 3 && span_is(name.p, 3, "if-"))
        return true;
    /* RFC 9110 7.6.1: what the request's Connection lists is hop-by-hop, in trailers too. */
    return req != NULL && listed_in_connection(req, name);
}

/* Writes the three digits of a status code (100-999; anything else as 500). */
static void
put_status(struct wbuf *o, int status)
{
    char d[3];

    if (status < 100 || status > 999)
        status = 500;
    d[0] = (char)('0' + status / 100);
    d[1] = (char)('0' + status / 10 % 10);
    d[2] = (char)('0' + status % 10);
    wbuf_raw(o, d, 3);
}

size_t
http_response_write(char *out, size_t cap, const struct http_response *res, unsigned flags)
{
    struct wbuf o;
    struct field_run run = {NULL, 0};
    bool dechunk = flags & HTTP_RES_F_DECHUNK;
    bool sts = res->hsts_max_age == 0;

    wbuf_init(&o, out, 0, cap);
    wbuf_raw(&o, "HTTP/1.1 ", 9);
    put_status(&o, res->status);
    wbuf_raw(&o, " ", 1);
    if (res->reason.len > 0)
        put_span(&o, res->reason);
    else
        wbuf_str(&o, http_reason(res->status));
    wbuf_raw(&o, "\r\n", 2);

    for (unsigned i = 0; i < res->hdrs.n; i++) {
        const struct http_header *h = &res->hdrs.h[i];

        if (is_hop_or_framing(h->id))
            continue;
        if (listed_in_connection(&res->hdrs, h->name))
            continue;
        sts = sts || span_eq_ci(h->name, cspan("Strict-Transport-Security"));
        run_field(&o, &run, h);
    }
    run_flush(&o, &run);
    if (!sts) {
        wbuf_str(&o, "Strict-Transport-Security: max-age=");
        wbuf_u64(&o, res->hsts_max_age);
        wbuf_raw(&o, "\r\n", 2);
    }

    /* RFC 9110 8.6, RFC 9112 6.1: no Content-Length or Transfer-Encoding in 1xx and 204; HEAD
     * and 304 keep them, describing the body a GET would get. */
    if (res->status >= 200 && res->status != 204) {
        if (res->has_content_length) {
            wbuf_str(&o, "Content-Length: ");
            wbuf_u64(&o, res->content_length);
            wbuf_raw(&o, "\r\n", 2);
        } else if (res->chunked && !dechunk) {
            wbuf_str(&o, "Transfer-Encoding: chunked\r\n");
        }
    }
    if (flags & HTTP_RES_F_UPGRADE)
        wbuf_str(&o, "Connection: Upgrade\r\nUpgrade: websocket\r\n");
    else if (flags & HTTP_RES_F_CLOSE)
        wbuf_str(&o, "Connection: close\r\n");
    else if (flags & HTTP_RES_F_KEEPALIVE)
        wbuf_str(&o, "Connection: keep-alive\r\n");
    wbuf_raw(&o, "\r\n", 2);
    return o.len;
}

/* ---------------------------------------------------------------------------------------------
 * Helpers for the connection code
 */

bool
http_request_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* RFC 9110 15 (and RFC 8297 for 103, RFC 6585 for 428/429/431/511, RFC 7725 for 451). */
#define HTTP_REASONS(XX)                                                                           \
    XX(100, "Continue")                                                                            \
    XX(101, "Switching Protocols")                                                                 \
    XX(103, "Early Hints")                                                                         \
    XX(200, "OK")                                                                                  \
    XX(201, "Created")                                                                             \
    XX(202, "Accepted")                                                                            \
    XX(203, "Non-Authoritative Information")                                                       \
    XX(204, "No Content")                                                                          \
    XX(205, "Reset Content")                                                                       \
    XX(206, "Partial Content")                                                                     \
    XX(300, "Multiple Choices")                                                                    \
    XX(301, "Moved Permanently")                                                                   \
    XX(302, "Found")                                                                               \
    XX(303, "See Other")                                                                           \
    XX(304, "Not Modified")                                                                        \
    XX(305, "Use Proxy")                                                                           \
    XX(307, "Temporary Redirect")                                                                  \
    XX(308, "Permanent Redirect")                                                                  \
    XX(400, "Bad Request")                                                                         \
    XX(401, "Unauthorized")                                                                        \
    XX(402, "Payment Required")                                                                    \
    XX(403, "Forbidden")                                                                           \
    XX(404, "Not Found")                                                                           \
    XX(405, "Method Not Allowed")                                                                  \
    XX(406, "Not Acceptable")                                                                      \
    XX(407, "Proxy Authentication Required")                                                       \
    XX(408, "Request Timeout")                                                                     \
    XX(409, "Conflict")                                                                            \
    XX(410, "Gone")                                                                                \
    XX(411, "Length Required")                                                                     \
    XX(412, "Precondition Failed")                                                                 \
    XX(413, "Content Too Large")                                                                   \
    XX(414, "URI Too Long")                                                                        \
    XX(415, "Unsupported Media Type")                                                              \
    XX(416, "Range Not Satisfiable")                                                               \
    XX(417, "Expectation Failed")                                                                  \
    XX(421, "Misdirected Request")                                                                 \
    XX(422, "Unprocessable Content")                                                               \
    XX(426, "Upgrade Required")                                                                    \
    XX(428, "Precondition Required")                                                               \
    XX(429, "Too Many Requests")                                                                   \
    XX(431, "Request Header Fields Too Large")                                                     \
    XX(451, "Unavailable For Legal Reasons")                                                       \
    XX(500, "Internal Server Error")                                                               \
    XX(501, "Not Implemented")                                                                     \
    XX(502, "Bad Gateway")                                                                         \
    XX(503, "Service Unavailable")                                                                 \
    XX(504, "Gateway Timeout")                                                                     \
    XX(505, "HTTP Version Not Supported")                                                          \
    XX(511, "Network Authentication Required")

const char *
http_reason(int status)
{
    switch (status) {
#define XX(code, text)                                                                             \
    case code:                                                                                     \
        return text;
        HTTP_REASONS(XX)
#undef XX
    default:
        return "Unknown";
    }
}

static void
put_status_text(struct wbuf *o, int status)
{
    put_status(o, status);
    wbuf_raw(o, " ", 1);
    wbuf_str(o, http_reason(status));
}

/* The error page's body, plain text or HTML, naming the status and a valid request id. */
static void
put_error_body(struct wbuf *o, int status, const char *id, size_t id_len, bool html)
{
    bool with_id = http_request_id_valid(id, id_len);

    if (!html) {
        put_status_text(o, status);
        if (with_id) {
            wbuf_str(o, ", request id ");
            wbuf_raw(o, id, id_len);
        }
        wbuf_raw(o, "\n", 1);
        return;
    }
    wbuf_str(o, "<!DOCTYPE html>\n<html><head><title>");
    put_status_text(o, status);
    wbuf_str(o, "</title></head><body><h1>");
    put_status_text(o, status);
    wbuf_str(o, "</h1>");
    if (with_id) {
        wbuf_str(o, "<p>request id ");
        wbuf_raw(o, id, id_len);
        wbuf_str(o, "</p>");
    }
    wbuf_str(o, "</body></html>\n");
}

size_t
http_error_body(char *out, size_t cap, int status, const char *id, size_t id_len, bool html)
{
    struct wbuf o;

    wbuf_init(&o, out, 0, cap);
    put_error_body(&o, status, id, id_len, html);
    return o.len;
}

/* The end of a head of portier's own: X-Request-Id when valid, Connection: close with
 * HTTP_ERR_F_CLOSE, the empty line. */
static void
put_answer_end(struct wbuf *o, const char *id, size_t id_len, unsigned flags)
{
    if (http_request_id_valid(id, id_len)) {
        wbuf_str(o, "X-Request-Id: ");
        wbuf_raw(o, id, id_len);
        wbuf_raw(o, "\r\n", 2);
    }
    if (flags & HTTP_ERR_F_CLOSE)
        wbuf_str(o, "Connection: close\r\n");
    wbuf_raw(o, "\r\n", 2);
}

size_t
http_error_write(char *out, size_t cap, int status, const char *id, size_t id_len, unsigned flags)
{
    struct wbuf o;
    bool html = flags & HTTP_ERR_F_HTML;

    wbuf_init(&o, out, 0, cap);
    wbuf_raw(&o, "HTTP/1.1 ", 9);
    put_status_text(&o, status);
    wbuf_str(&o, html ? "\r\nContent-Type: text/html; charset=utf-8\r\n"
                      : "\r\nContent-Type: text/plain; charset=utf-8\r\n");
    wbuf_str(&o, "Content-Length: ");
    wbuf_u64(&o, http_error_body(NULL, 0, status, id, id_len, html));
    wbuf_str(&o, "\r\nCache-Control: no-store\r\n");
    put_answer_end(&o, id, id_len, flags);
    if (!(flags & HTTP_ERR_F_HEAD))
        put_error_body(&o, status, id, id_len, html);
    return o.len;
}

size_t
http_redirect_write(char *out, size_t cap, const char *host, const char *port,
                    const struct http_request *req, const char *id, size_t id_len, unsigned flags)
{
    struct wbuf o;

    wbuf_init(&o, out, 0, cap);
    wbuf_raw(&o, "HTTP/1.1 ", 9);
    put_status_text(&o, 308);
    wbuf_str(&o, "\r\nLocation: https://");
    wbuf_str(&o, host);
    if (port != NULL && strcmp(port, "443") != 0) {
        wbuf_raw(&o, ":", 1);
        wbuf_str(&o, port);
    }
    if (req->path.len > 0 && req->path.p[0] == '/') {
        put_span(&o, req->path);
        put_span(&o, req->query);
    } else {
        wbuf_raw(&o, "/", 1);
    }
    wbuf_str(&o, "\r\nContent-Length: 0\r\n");
    put_answer_end(&o, id, id_len, flags);
    return o.len;
}
