/*
 * Body framing for http.h: a small strict state machine that tells which bytes after a head
 * belong to the message (Content-Length, chunked, until close) and validates chunked framing as
 * RFC 9112 7.1 writes it, without decoding, and the filter that rewrites a request's trailer
 * section; moving the bytes is left to the caller.
 */
#include <assert.h>
#include <string.h>

#include "http.h"

enum body_state {
    B_DONE,
    B_ERROR,
    B_LENGTH,      /* Content-Length bytes left */
    B_CLOSE,       /* everything until EOF */
    B_SIZE0,       /* the first hex digit of a chunk size */
    B_SIZE,        /* more hex digits, or what ends the size */
    B_EXT_WS,      /* BWS before ';' */
    B_EXT_NAME0,   /* BWS after ';', then the extension name */
    B_EXT_NAME,    /* in the name */
    B_EXT_NAME_WS, /* BWS after the name, before '=' or ';' */
    B_EXT_VAL0,    /* BWS after '=', then a token or a quoted-string */
    B_EXT_TOKEN,   /* in a token value */
    B_EXT_QUOTED,  /* in a quoted-string */
    B_EXT_QPAIR,   /* after a backslash in a quoted-string */
    B_EXT_QEND,    /* after the closing quote */
    B_SIZE_LF,     /* LF of the chunk-size line */
    B_DATA,        /* chunk data bytes left */
    B_DATA_CR,     /* CRLF after the chunk data */
    B_DATA_LF,
    B_TRAILER,      /* the start of a trailer line, or the CR of the final empty line */
    B_TRAILER_NAME, /* in a trailer field name */
    B_TRAILER_VALUE,
    B_TRAILER_LF,
    B_END_LF,       /* LF of the final empty line */
    B_TRAILER_STOP, /* HTTP_BODY_F_STOP_TRAILER: the trailer section is the caller's to filter */
};

/* 2^63 - 1: the largest chunk size and the largest body accepted. */
#define SIZE_MAX63 UINT64_C(0x7fffffffffffffff)

int
http_body_init(struct http_body *b, enum http_framing framing, uint64_t length, uint64_t max_size,
               uint32_t max_trailer)
{
    return http_body_init_flags(b, framing, length, max_size, max_trailer, 0);
}

int
http_body_init_flags(struct http_body *b, enum http_framing framing, uint64_t length,
                     uint64_t max_size, uint32_t max_trailer, unsigned flags)
{
    memset(b, 0, sizeof(*b));
    b->max_size = max_size;
    b->max_trailer = max_trailer;
    b->flags = (uint8_t)flags;
    switch (framing) {
    case HTTP_FRAMING_NONE:
        b->state = B_DONE;
        break;
    case HTTP_FRAMING_LENGTH:
        b->left = length;
        b->state = length == 0 ? B_DONE : B_LENGTH;
        if (max_size != 0 && length > max_size) {
            b->state = B_ERROR;
            b->error = 413;
            b->why = "body larger than max_body_bytes";
            return -1;
        }
        break;
    case HTTP_FRAMING_CHUNKED:
        b->state = B_SIZE0;
        break;
    case HTTP_FRAMING_CLOSE:
        b->state = B_CLOSE;
        break;
    }
    return 0;
}

bool
http_body_done(const struct http_body *b)
{
    return b->state == B_DONE;
}

static int
body_fail(struct http_body *b, uint16_t status, const char *why)
{
    b->state = B_ERROR;
    b->error = status;
    b->why = why;
    return -1;
}

/* Counts n payload bytes against max_size. */
static int
body_count(struct http_body *b, uint64_t n)
{
    if (n > SIZE_MAX63 - b->size || (b->max_size != 0 && b->size + n > b->max_size))
        return body_fail(b, 413, "body larger than max_body_bytes");
    b->size += n;
    return 0;
}

/* One byte of a chunk extension (RFC 9112 7.1.1):
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-val = token / quoted-string
 * Returns 0, or -1 on a byte the grammar does not allow here. */
static int
ext_byte(struct http_body *b, unsigned char c)
{
    bool ws = c == ' ' || c == '\t';

    if (++b->ext_len > HTTP_CHUNK_EXT_MAX)
        return body_fail(b, 400, "chunk extension too long");
    switch (b->state) {
    case B_EXT_WS:
        if (c == ';')
            b->state = B_EXT_NAME0;
        else if (!ws)
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_NAME0:
        if (http_is_tchar(c))
            b->state = B_EXT_NAME;
        else if (!ws)
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_NAME:
    case B_EXT_TOKEN:
        if (http_is_tchar(c))
            return 0;
        if (c == '=' && b->state == B_EXT_NAME)
            b->state = B_EXT_VAL0;
        else if (c == ';')
            b->state = B_EXT_NAME0;
        else if (ws)
            b->state = b->state == B_EXT_NAME ? B_EXT_NAME_WS : B_EXT_WS;
        else if (c == '\r')
            b->state = B_SIZE_LF;
        else
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_NAME_WS:
        if (c == '=')
            b->state = B_EXT_VAL0;
        else if (c == ';')
            b->state = B_EXT_NAME0;
        else if (!ws)
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_VAL0:
        if (c == '"')
            b->state = B_EXT_QUOTED;
        else if (http_is_tchar(c))
            b->state = B_EXT_TOKEN;
        else if (!ws)
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_QUOTED:
        /* RFC 9110 5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text. */
        if (c == '"')
            b->state = B_EXT_QEND;
        else if (c == '\\')
            b->state = B_EXT_QPAIR;
        else if (!http_is_field_char(c))
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    case B_EXT_QPAIR:
        if (!http_is_field_char(c))
            return body_fail(b, 400, "bad chunk extension");
        b->state = B_EXT_QUOTED;
        return 0;
    case B_EXT_QEND:
        if (c == ';')
            b->state = B_EXT_NAME0;
        else if (ws)
            b->state = B_EXT_WS;
        else if (c == '\r')
            b->state = B_SIZE_LF;
        else
            return body_fail(b, 400, "bad chunk extension");
        return 0;
    default:
        return body_fail(b, 400, "bad chunk extension");
    }
}

/* One byte of the trailer section (RFC 9112 7.1.2): field lines as in a head, then CRLF. */
static int
trailer_byte(struct http_body *b, unsigned char c)
{
    /* The final empty line is not a field and is not counted: max_trailer 0 allows none. */
    bool final_line = b->state == B_END_LF || (b->state == B_TRAILER && c == '\r');
    if (!final_line && ++b->trailer_len > b->max_trailer)
        return body_fail(b, 431, "trailer section too large");
    switch (b->state) {
    case B_TRAILER:
        if (c == '\r')
            b->state = B_END_LF;
        else if (http_is_tchar(c))
            b->state = B_TRAILER_NAME;
        else
            return body_fail(b, 400, "bad trailer field");
        return 0;
    case B_TRAILER_NAME:
        if (c == ':')
            b->state = B_TRAILER_VALUE;
        else if (!http_is_tchar(c))
            return body_fail(b, 400, "bad trailer field");
        return 0;
    case B_TRAILER_VALUE:
        if (c == '\r')
            b->state = B_TRAILER_LF;
        else if (!http_is_field_char(c))
            return body_fail(b, 400, "bad trailer field");
        return 0;
    case B_TRAILER_LF:
        if (c != '\n')
            return body_fail(b, 400, "bare CR in trailer");
        b->state = B_TRAILER;
        return 0;
    default:
        if (c != '\n')
            return body_fail(b, 400, "bare CR in trailer");
        b->state = B_DONE;
        return 0;
    }
}

/*
 * The machine. Consumes bytes of p until len, the end of the message, an error, or (with
 * one_run) the end of the first run of payload bytes. Reports the payload run it consumed last
 * in *data_off / *data_len (all of it when !one_run and the framing is not chunked).
 */
static int
body_run(struct http_body *b, const char *p, size_t len, size_t *used, size_t *data_off,
         size_t *data_len, bool one_run)
{
    size_t i = 0;

    *data_off = *data_len = 0;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];
        size_t take;
        int v;

        switch (b->state) {
        case B_DONE:
            *used = i;
            return 1;
        case B_ERROR:
            *used = i;
            return -1;
        case B_TRAILER_STOP:
            *used = i;
            return HTTP_BODY_TRAILER;
        case B_LENGTH:
        case B_DATA:
            take = len - i < b->left ? len - i : (size_t)b->left;
            if (body_count(b, take) < 0)
                goto fail;
            b->left -= take;
            *data_off = i;
            *data_len = take;
            i += take;
            if (b->left == 0)
                b->state = b->state == B_LENGTH ? B_DONE : B_DATA_CR;
            if (b->state == B_DONE) {
                *used = i;
                return 1;
            }
            if (one_run) {
                *used = i;
                return 0;
            }
            continue;
        case B_CLOSE:
            take = len - i;
            if (body_count(b, take) < 0)
                goto fail;
            *data_off = i;
            *data_len = take;
            *used = len;
            return 0;
        case B_SIZE0:
        case B_SIZE:
            v = http_hex_value(c);
            if (v >= 0) {
                /* RFC 9112 7.1: 1*HEXDIG; we stop at 16 digits and 2^63 - 1. */
                if (++b->digits > 16 || b->chunk > (SIZE_MAX63 - (uint64_t)v) / 16) {
                    body_fail(b, 400, "chunk size too large");
                    goto fail;
                }
                b->chunk = b->chunk * 16 + (uint64_t)v;
                b->state = B_SIZE;
            } else if (b->state == B_SIZE0) {
                body_fail(b, 400, "bad chunk size");
                goto fail;
            } else if (c == '\r') {
                b->state = B_SIZE_LF;
            } else if (c == ';' || c == ' ' || c == '\t') {
                b->ext_len = 0;
                b->state = c == ';' ? B_EXT_NAME0 : B_EXT_WS;
                if (++b->ext_len > HTTP_CHUNK_EXT_MAX) {
                    body_fail(b, 400, "chunk extension too long");
                    goto fail;
                }
            } else {
                body_fail(b, 400, c == '\n' ? "bare LF in chunk size line" : "bad chunk size");
                goto fail;
            }
            break;
        case B_EXT_WS:
        case B_EXT_NAME0:
        case B_EXT_NAME:
        case B_EXT_NAME_WS:
        case B_EXT_VAL0:
        case B_EXT_TOKEN:
        case B_EXT_QUOTED:
        case B_EXT_QPAIR:
        case B_EXT_QEND:
            if (ext_byte(b, c) < 0)
                goto fail;
            break;
        case B_SIZE_LF:
            if (c != '\n') {
                body_fail(b, 400, "bare CR in chunk size line");
                goto fail;
            }
            if (b->chunk == 0 && (b->flags & HTTP_BODY_F_STOP_TRAILER)) {
                /* The last-chunk line is the caller's to forward; the trailer section is not.
                 * The final CRLF counts in the scan's limit, not in max_trailer. */
                b->state = B_TRAILER_STOP;
                b->digits = 0;
                http_scan_init(&b->trailer, HTTP_SCAN_TRAILER, (size_t)b->max_trailer + 2);
                *used = i + 1;
                return HTTP_BODY_TRAILER;
            }
            if (b->chunk == 0) {
                b->state = B_TRAILER;
            } else if (b->max_size != 0 && b->chunk > b->max_size - b->size) {
                /* Refused on the size line, before the data arrives. */
                body_fail(b, 413, "body larger than max_body_bytes");
                goto fail;
            } else {
                b->left = b->chunk;
                b->state = B_DATA;
            }
            b->chunk = 0;
            b->digits = 0;
            break;
        case B_DATA_CR:
            if (c != '\r') {
                body_fail(b, 400, "no CRLF after chunk data");
                goto fail;
            }
            b->state = B_DATA_LF;
            break;
        case B_DATA_LF:
            if (c != '\n') {
                body_fail(b, 400, "no CRLF after chunk data");
                goto fail;
            }
            b->state = B_SIZE0;
            break;
        case B_TRAILER:
        case B_TRAILER_NAME:
        case B_TRAILER_VALUE:
        case B_TRAILER_LF:
        case B_END_LF:
            if (trailer_byte(b, c) < 0)
                goto fail;
            if (b->state == B_DONE) {
                *used = i + 1;
                return 1;
            }
            break;
        }
        i++;
    }
    *used = len;
    if (b->state == B_DONE)
        return 1;
    if (b->state == B_TRAILER_STOP) /* len 0 */
        return HTTP_BODY_TRAILER;
    return b->state == B_ERROR ? -1 : 0;

fail:
    *used = i;
    return -1;
}

int
http_body_feed(struct http_body *b, const char *p, size_t len, size_t *used)
{
    size_t off, n;

    return body_run(b, p, len, used, &off, &n, false);
}

int
http_body_next(struct http_body *b, const char *p, size_t len, size_t *used, size_t *data_off,
               size_t *data_len)
{
    return body_run(b, p, len, used, data_off, data_len, true);
}

int
http_body_eof(struct http_body *b)
{
    if (b->state == B_DONE || b->state == B_CLOSE)
        return 0;
    if (b->state != B_ERROR)
        body_fail(b, 400, "body cut short");
    return -1;
}

/* Copies n bytes to out at *w, when they fit in cap. */
static bool
put_bytes(char *out, size_t cap, size_t *w, const char *p, size_t n)
{
    if (n > cap - *w)
        return false;
    memcpy(out + *w, p, n);
    *w += n;
    return true;
}

int
http_body_filter_trailer(struct http_body *b, const char *p, size_t len,
                         const struct http_headers *req, char *out, size_t cap, size_t *used,
                         size_t *written)
{
    size_t pos = 0, w = 0, end;

    *used = *written = 0;
    if (b->state == B_DONE)
        return 1;
    if (b->state == B_ERROR)
        return -1;
    if (b->state != B_TRAILER_STOP)
        return body_fail(b, 500, "no trailer section to filter");
    /* The head scanner's rules, resumed where the last call stopped. */
    switch (http_scan_head(&b->trailer, p, len)) {
    case 0:
        /* The scanner refuses on the first byte past its limit; a caller that pulls up at most
         * max_trailer + 2 bytes has none to give, and a section still open at the limit can only
         * be too large. */
        if (b->trailer.len >= b->trailer.max)
            return body_fail(b, 431, "trailer section too large");
        return 0;
    case 1:
        break;
    default:
        return body_fail(b, b->trailer.error, b->trailer.why);
    }

    /* Every line is now known to be "name:value CRLF" with no CR inside (the scanner says so),
     * and the section ends with its empty line. Kept lines are copied as they came. */
    end = b->trailer.len - 2;
    while (pos < end) {
        const char *line = p + pos;
        const char *cr = memchr(line, '\r', end - pos);
        const char *colon = memchr(line, ':', end - pos);
        size_t n;
        struct http_span name;

        assert(cr != NULL && colon != NULL && colon < cr);
        n = (size_t)(cr - line) + 2;
        name = (struct http_span){line, (size_t)(colon - line)};

        if (!http_trailer_forbidden(req, name) && !put_bytes(out, cap, &w, line, n))
            return body_fail(b, 500, "trailer buffer too small");
        pos += n;
    }
    if (!put_bytes(out, cap, &w, "\r\n", 2))
        return body_fail(b, 500, "trailer buffer too small");
    b->state = B_DONE;
    *used = b->trailer.len;
    *written = w;
    return 1;
}
