/*
 * portier's HTTP/1.x wire rules: finds, checks and parses request and response heads, frames
 * bodies, and rebuilds heads for the other side; pure (no libevent, no sockets, no allocation), it
 * works on byte buffers the caller owns and leaves reading, writing, timeouts and answering to
 * conn.c.
 *
 * The life of a request, as the connection code drives it:
 *   1. http_scan_init_marks(), then http_scan_head() (or http_scan_feed()) on every read until it
 *      returns 1 (the head is the first scan.len bytes) or -1 (answer scan.error and close).
 *   2. http_request_parse_marks() on exactly those bytes and the marks the scan left (-1: answer
 *      req.error and close): the head is read once, by the scanner.
 *   3. http_body_init() from req.framing / req.content_length, then http_body_feed() on the bytes
 *      after the head: it says how many belong to this request (forward exactly those, unchanged).
 *      With http_body_init_flags(HTTP_BODY_F_STOP_TRAILER) a chunked body stops before its
 *      trailer section, which http_body_filter_trailer() then rewrites without the fields a
 *      request trailer must not carry to the server.
 *   4. http_request_write() builds the head to send to the server.
 *   5. From the server: http_scan_*() and http_response_parse_marks() (any -1: answer 502), then
 *      http_response_flags() and http_response_write() build the head for the client, and
 *      http_body_feed() frames the body (http_body_next() with HTTP_RES_F_DECHUNK). After an
 *      interim (1xx) head, which has no body, the next response head follows: scan again.
 *
 * Every struct http_span below points into the buffer the caller passed in and is valid only as
 * long as those bytes stay where they are. Errors carry the HTTP status to answer with (error) and
 * a static string for the log (why); the caller logs, once.
 */
#ifndef HTTP_H
#define HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Header lines a head may have; one more is refused with 431. */
#define HTTP_MAX_HEADERS 100
/* Options one message's Connection header fields may list together; more are refused (400). */
#define HTTP_MAX_CONN_TOKENS 16
/* The longest chunk extension (everything between the chunk size and its CRLF) accepted. */
#define HTTP_CHUNK_EXT_MAX 1024
/* Room that http_error_write() never exceeds, whatever its arguments. */
#define HTTP_ERROR_MAX 1024

/* A run of bytes inside a buffer someone else owns; not NUL-terminated. len 0: absent or empty. */
struct http_span {
    const char *p; /* borrowed */
    size_t len;
};

/* One header field line: name as sent (case kept), value with the OWS around it trimmed. */
struct http_header {
    struct http_span name;
    struct http_span value;
    uint8_t id; /* private: which of the fields this module knows it is */
};

/* The field lines of one head, in order, and the options its Connection fields list. */
struct http_headers {
    struct http_header h[HTTP_MAX_HEADERS];
    unsigned n;
    struct http_span conn[HTTP_MAX_CONN_TOKENS]; /* "close", "keep-alive", "upgrade", names... */
    unsigned nconn;
};

/* How a message body is delimited (RFC 9112 6.3). */
enum http_framing {
    HTTP_FRAMING_NONE,    /* no body: the message ends with its head */
    HTTP_FRAMING_LENGTH,  /* exactly content_length bytes */
    HTTP_FRAMING_CHUNKED, /* Transfer-Encoding: chunked */
    HTTP_FRAMING_CLOSE,   /* responses only: everything until the server closes */
};

/* "none", "length", "chunked", "close": for logs. */
const char *http_framing_str(enum http_framing f);

/*
 * Head scanner: finds the end of a head as bytes arrive and refuses garbage on the byte where it
 * shows, so that a bad client is answered at once rather than at the header timeout. It checks
 * the syntax of the whole head, not its meaning: request line "METHOD SP target SP HTTP/d.d CRLF"
 * (method a token of at most 16 characters, target visible ASCII without '#'), or status line
 * "HTTP/d.d SP ddd [SP reason] CRLF"; then field lines "token:value CRLF" and an empty line. Bare
 * CR, bare LF, NUL and other controls (HTAB is allowed in values), obs-fold, whitespace or nothing
 * before a colon, and more than HTTP_MAX_HEADERS lines are refused. Empty lines before a request
 * line are skipped and counted in the head (RFC 9112 2.2). HTTP_SCAN_TRAILER scans a trailer
 * section (RFC 9112 7.1.2): the same field lines and empty line, without a start line.
 *
 * Private fields: use the functions. Readable: error and why after a refusal.
 */
enum http_scan_kind { HTTP_SCAN_REQUEST, HTTP_SCAN_RESPONSE, HTTP_SCAN_TRAILER };

/*
 * Where the parts of a head lie, as offsets from its first byte, for the parse to take without
 * reading the head again; the scanner records them when it is given a struct http_marks.
 * Private: filled by the scanner, read by http_request_parse_marks() and
 * http_response_parse_marks().
 */
struct http_marks {
    uint32_t len;      /* the head's length, set when the scan completes */
    uint32_t line;     /* the start line's first byte (a request's follows any empty lines) */
    uint32_t sp1, sp2; /* request: the SP after the method, the SP after the target; response:
                          the SP after the version, the SP after the code (0: none) */
    uint32_t line_end; /* the CR that ends the start line */
    unsigned nfields;
    struct {
        uint32_t name, colon, end; /* a field line's first byte, its colon, its CR */
    } f[HTTP_MAX_HEADERS];
};

struct http_scan {
    struct http_marks *marks; /* borrowed, or NULL: where to record the head's parts */
    size_t len;               /* bytes scanned so far, all of them part of the head */
    size_t max;               /* the longest head allowed, its final empty line included */
    unsigned nfields;         /* field lines so far */
    uint8_t kind;             /* enum http_scan_kind */
    uint8_t state;
    uint8_t idx;     /* position inside a fixed part (method, version, status code) */
    uint16_t error;  /* after -1: 400, 414, 431 or 501 for requests, always 502 for responses,
                        400 or 431 for trailers */
    const char *why; /* after -1: static, for the log */
};

/*
 * Starts a scan. max is the longest head accepted (the request or status line, every field line
 * and the final CRLF, as max_header_bytes counts them).
 */
void http_scan_init(struct http_scan *s, enum http_scan_kind kind, size_t max);

/*
 * http_scan_init() for a request or response head whose parts are to be recorded in marks, which
 * the caller keeps (unchanged) until it has parsed the head with http_*_parse_marks(). max must
 * be below 4 GiB.
 */
void http_scan_init_marks(struct http_scan *s, enum http_scan_kind kind, size_t max,
                          struct http_marks *marks);

/*
 * Scans the head that starts at buf and whose first len bytes have arrived, resuming after the
 * s->len bytes scanned by earlier calls (buf[0..s->len) is not read again, but must still be the
 * same head). Returns 1 when the head is complete: its length, final CRLF included, is s->len, and
 * the bytes after it are a body or the next message; 0 when it needs more bytes; -1 when the head
 * is refused, with s->error and s->why set. Calls after 1 or -1 return the same again.
 *
 * For requests error is 400 for bad syntax, 414 when the request line alone passes max, 431 when
 * the head does or when it has too many field lines, 501 for a method longer than any known one.
 */
int http_scan_head(struct http_scan *s, const char *buf, size_t len);

/*
 * The same for a head that arrives in pieces that are not contiguous (evbuffer chains): scans the
 * n bytes at p, which follow the s->len bytes seen so far. Returns like http_scan_head(); on 1,
 * *used says how many of these n bytes end the head (s->len counts every piece), else *used = n.
 */
int http_scan_feed(struct http_scan *s, const char *p, size_t n, size_t *used);

/*
 * A request head, parsed. All spans point into the head buffer passed to http_request_parse().
 *
 * Target forms (RFC 9112 3.2): origin-form "/p?q" gives path "/p" and query "?q"; absolute-form
 * "http://h:1/p?q" (http or https only, no userinfo) gives the same plus host = "h:1" taken from
 * the target, which then overrides the Host header (RFC 9112 3.2.2; path may be empty, meaning
 * "/"); asterisk-form "*" only with OPTIONS, path = "*". Authority-form (CONNECT only) is refused.
 */
struct http_request {
    struct http_span method; /* "GET" */
    struct http_span target; /* the request-target as received, for the access log */
    struct http_span path;   /* see above; what the router matches */
    struct http_span query;  /* "?a=b", or empty */
    /* A valid RFC 3986 host[:port]: the Host value, or the authority of an absolute-form target. */
    struct http_span host;
    struct http_span request_id; /* the X-Request-Id value when exactly one was sent, else empty */
    uint64_t content_length;     /* when has_content_length */
    enum http_framing framing;   /* NONE, LENGTH or CHUNKED (never CLOSE) */
    size_t head_len;             /* bytes of the head, as parsed */
    int version;                 /* 10 or 11 */
    bool has_host;               /* a Host header (maybe empty) or an absolute-form target: else the
                                    caller picks the route for an HTTP/1.0 request without one */
    bool absolute_form;
    bool is_head; /* method HEAD: the response has no body (RFC 9112 6.3) */
    bool has_content_length;
    bool keep_alive;      /* what the client asks for: 1.1 unless "close", 1.0 only with
                             "keep-alive" (RFC 9112 9.3) */
    bool expect_continue; /* HTTP/1.1 with Expect: 100-continue (ignored for 1.0, RFC 9110
                             10.1.1): answer 100 or forward Expect before reading the body */
    /* GET, HTTP/1.1, Upgrade lists websocket and Connection lists upgrade (RFC 9110 7.8). */
    bool upgrade_websocket;
    /* An Upgrade that is not forwarded (h2c, or websocket without the conditions above): the
     * request is served as plain HTTP/1.1, as RFC 9110 7.8 lets a server do. */
    bool upgrade_dropped;
    uint16_t error;           /* after -1: the status to answer with */
    const char *why;          /* after -1: static, for the log */
    struct http_headers hdrs; /* last: http_request_reset() leaves its array alone */
};

/*
 * Empties req as a failed parse would leave it, without the cost of clearing its header array
 * (hdrs.n is 0): what a caller does before it may log a request it never parsed.
 */
void http_request_reset(struct http_request *req);

/*
 * Parses a complete request head: head[0..len) must be exactly what http_scan_head() returned
 * (it is scanned again here, so the parse is safe on any bytes). No copies: the spans in req point
 * into head, which the caller keeps unchanged while it uses req. Returns 0, or -1 with req->error
 * and req->why set; the caller answers req->error and closes the connection, never forwards.
 *
 * Refused with 400: bad syntax (see struct http_scan); Content-Length with Transfer-Encoding; two
 * Content-Length fields (even equal) or a list, an empty, signed, non-decimal or spaced value, or
 * one above 2^63-1; two Transfer-Encoding fields, an empty one, or one whose final coding is not
 * chunked ("identity", "chunked, identity", "xchunked": RFC 9112 6.3 item 4); Transfer-Encoding in
 * HTTP/1.0 (RFC 9112 6.1); no Host in HTTP/1.1, two Host fields or an invalid one (RFC 9112 3.2);
 * a '#' in the target, a target that is neither origin- nor absolute-form (or "*" with OPTIONS);
 * more than HTTP_MAX_CONN_TOKENS Connection options or one that is not a token.
 * Refused with 501: a coding other than chunked before the final chunked ("gzip, chunked",
 * "chunked, chunked": RFC 9112 6.1, we do not forward codings we cannot check); a method
 * http-parser does not know, and CONNECT (a reverse proxy does not tunnel).
 * Refused with 505: a version other than HTTP/1.0 and HTTP/1.1 (RFC 9110 15.6.6).
 * Refused with 417: an Expect other than 100-continue in HTTP/1.1 (RFC 9110 10.1.1).
 * Refused with 431: more than HTTP_MAX_HEADERS fields.
 */
int http_request_parse(struct http_request *req, const char *head, size_t len);

/*
 * http_request_parse() without the scan: head[0..len) is the head that a scan with these marks
 * (http_scan_init_marks()) completed, byte for byte, and it is not read again but where the
 * rules need values. A len other than the scanned one is refused (400), so that stale marks
 * never point outside head.
 */
int http_request_parse_marks(struct http_request *req, const char *head, size_t len,
                             const struct http_marks *marks);

/*
 * For the log of a refused request: fills req->method and req->target, where the parse (or the
 * scan that refused the head before any parse) left them empty, from the request line as sent,
 * head[0..len): the method is up to the first space within the first 32 bytes, the target up to
 * the next space or CR. What the line does not have stays empty. Spans point into head.
 */
void http_request_salvage(struct http_request *req, const char *head, size_t len);

/* A response head, parsed. Spans point into the head passed to http_response_parse(). */
struct http_response {
    struct http_span reason; /* as sent, maybe empty */
    uint64_t content_length; /* when has_content_length */
    enum http_framing framing;
    size_t head_len;
    int status;  /* 100-599 */
    int version; /* 10 or 11 */
    bool has_content_length;
    bool chunked;           /* Transfer-Encoding: chunked was sent (even where there is no body) */
    bool keep_alive;        /* the server connection may carry another request after this one */
    bool interim;           /* 1xx other than 101: another response head follows */
    bool upgrade_websocket; /* 101 to a websocket upgrade: the connection becomes a tunnel */
    uint16_t error;         /* after -1: always 502 */
    const char *why;
    /* The caller's, 0 after a parse: > 0 makes http_response_write() add
     * "Strict-Transport-Security: max-age=N" unless the server sent that field itself. */
    uint64_t hsts_max_age;
    struct http_headers hdrs; /* last: http_response_reset() leaves its array alone */
};

/* Empties res as http_request_reset() does a request. */
void http_response_reset(struct http_response *res);

/* What http_response_parse() needs to know of the request it answers. */
#define HTTP_RSP_F_HEAD 0x1    /* the request was HEAD: no body, whatever the head says */
#define HTTP_RSP_F_UPGRADE 0x2 /* the request asked for a websocket upgrade: 101 is allowed */

/*
 * Parses a complete response head from a server, as http_scan_head(HTTP_SCAN_RESPONSE) returned it.
 * flags: HTTP_RSP_F_*. Returns 0, or -1 with res->why set (the caller answers 502 and closes the
 * server connection).
 *
 * Framing per RFC 9112 6.3: responses to HEAD, 1xx, 204 and 304 have no body; then chunked; then
 * Content-Length; else the body runs until the server closes. The rules for Content-Length are the
 * request's; Transfer-Encoding must be exactly one "chunked" (other codings are refused rather than
 * read until close), and neither may come with the other, even on 204/304. Also refused: 101
 * unless flags has HTTP_RSP_F_UPGRADE and the response upgrades to websocket with Connection:
 * upgrade; a status outside 100-599; a version other than 1.0 and 1.1; Transfer-Encoding in 1.0.
 */
int http_response_parse(struct http_response *res, const char *head, size_t len, unsigned flags);

/* http_response_parse() without the scan, as http_request_parse_marks() is for requests. */
int http_response_parse_marks(struct http_response *res, const char *head, size_t len,
                              unsigned flags, const struct http_marks *marks);

/* The first field called name (case-insensitive), or NULL. For the access log (Referer...). */
const struct http_span *http_header_find(const struct http_headers *hs, const char *name);

/*
 * Body framing, strict and streaming (RFC 9112 6 and 7.1); http-parser's own is lenient, so it is
 * not used. It never decodes in place: it counts and validates, and the caller forwards the raw
 * bytes it says belong to the message. Chunked framing refuses (400): a chunk size that is not 1-16
 * hex digits or is above 2^63-1, whitespace not followed by ';', a chunk extension that is not
 * RFC 9112 7.1.1 syntax or is longer than HTTP_CHUNK_EXT_MAX, a line ending that is not CRLF, chunk
 * data not followed by CRLF, and trailer fields that are not "token:value" lines (no obs-fold);
 * trailers above max_trailer bytes are refused with 431, a body above max_size with 413.
 * http_body_filter_trailer() is stricter still: it applies the head scanner's rules to the
 * trailer section (struct http_scan), its limit on the number of fields included.
 *
 * Private fields; readable: size (payload bytes so far, decoded), error and why after -1.
 */
struct http_body {
    uint64_t left;        /* bytes left in this chunk's data or in the Content-Length body */
    uint64_t chunk;       /* the chunk size being read */
    uint64_t size;        /* payload bytes so far, chunk framing not counted */
    uint64_t max_size;    /* 0: no limit */
    uint32_t ext_len;     /* bytes after the current chunk size */
    uint32_t trailer_len; /* bytes of the trailer section so far */
    uint32_t max_trailer;
    uint8_t state;
    uint8_t digits;  /* hex digits of the chunk size so far */
    uint8_t flags;   /* HTTP_BODY_F_* */
    uint16_t error;  /* after -1: 400, 413 or 431; 500 when a caller breaks a contract below */
    const char *why; /* after -1: static, for the log */
    struct http_scan trailer; /* the trailer section, after HTTP_BODY_TRAILER */
};

/* For http_body_init_flags(): http_body_feed() and http_body_next() stop a chunked body right
 * before its trailer section and return HTTP_BODY_TRAILER (ignored for other framings). */
#define HTTP_BODY_F_STOP_TRAILER 0x1

/* What http_body_feed() and http_body_next() return, with HTTP_BODY_F_STOP_TRAILER, once the
 * last-chunk line ("0[;ext]\r\n") has been consumed: the trailer section comes next. */
#define HTTP_BODY_TRAILER 2

/*
 * Starts framing a body. length is the content length for HTTP_FRAMING_LENGTH (ignored otherwise),
 * max_size the most payload bytes allowed (0: no limit), max_trailer the most bytes of trailer
 * field lines (the final CRLF not counted; 0: no trailer fields allowed). Returns 0, or -1 (error
 * 413) when a Content-Length is already above max_size: check that before sending 100 Continue or
 * connecting, so the client is answered before it sends the body.
 */
int http_body_init(struct http_body *b, enum http_framing framing, uint64_t length,
                   uint64_t max_size, uint32_t max_trailer);

/* http_body_init() with flags (HTTP_BODY_F_*); http_body_init() is this with flags 0. */
int http_body_init_flags(struct http_body *b, enum http_framing framing, uint64_t length,
                         uint64_t max_size, uint32_t max_trailer, unsigned flags);

/*
 * Feeds the len bytes at p that follow what was fed before. Returns 1 when the message ended: its
 * last byte is p[*used - 1] and the bytes after it are the next message's (or, from a server, a
 * protocol error); 0 when all len bytes belong to the message and it goes on (*used == len); -1 on
 * a framing error or a limit, with b->error and b->why set (the caller closes: the stream cannot
 * be resynchronised). After 1, every call returns 1 with *used = 0; after -1, -1.
 *
 * With HTTP_BODY_F_STOP_TRAILER, a chunked body returns HTTP_BODY_TRAILER (2) instead of going
 * into its trailer section: p[*used - 1] is the LF of the last-chunk line "0[;ext]\r\n", every
 * byte up to it is to be forwarded unchanged, and the bytes after it start the trailer section,
 * which is left to http_body_filter_trailer(). Until that ends the message, every call returns 2
 * with *used = 0, and http_body_done() is false.
 */
int http_body_feed(struct http_body *b, const char *p, size_t len, size_t *used);

/*
 * Like http_body_feed(), but stops after at most one run of payload bytes so that the caller can
 * decode: of the *used bytes consumed, p[*data_off .. *data_off + *data_len) are payload, the rest
 * is chunk framing. Returns 1 when the message ended within the *used bytes, 0 when it goes on
 * (call again with p + *used when *used < len), -1 on error; HTTP_BODY_TRAILER as
 * http_body_feed() does.
 */
int http_body_next(struct http_body *b, const char *p, size_t len, size_t *used, size_t *data_off,
                   size_t *data_len);

/*
 * After http_body_feed() returned HTTP_BODY_TRAILER: finds the end of the trailer section, checks
 * it and writes it to out without the fields a request trailer must not carry to the server
 * (http_trailer_forbidden(); req is the request head's fields, borrowed for the call, or NULL to
 * ignore its Connection options). p[0..len) holds the bytes that follow the last-chunk line,
 * contiguous; on every call the same bytes as before and maybe more (the scan resumes where the
 * previous call stopped), possibly followed by the next message's. out has room for cap bytes:
 * the output is never longer than the section, so cap >= len, or cap >= max_trailer + 2, is
 * always enough.
 *
 * Returns 1 when the section is complete: it is p[0..*used), its CRLF-terminated empty line
 * included; out[0..*written) holds its field lines that are kept, unchanged and in order, then
 * the final CRLF ("\r\n" alone when none is kept); the message has ended (http_body_done()), and
 * p[*used..len) is the next message's. Returns 0 when the section needs more bytes (*used =
 * *written = 0): call again with more. Returns -1 with b->error and b->why set when it is
 * refused: 400 for a line the head scanner refuses (bare CR or LF, NUL, obs-fold, whitespace
 * before a colon...), 431 for more than HTTP_MAX_HEADERS fields or a section whose field lines
 * pass max_trailer bytes (as soon as max_trailer + 2 bytes have come without its end, so a caller
 * never needs to offer more than that), 500 when called in any other state or when out is too
 * small. After 1, every call returns 1 with *used = *written = 0; after -1, -1.
 */
int http_body_filter_trailer(struct http_body *b, const char *p, size_t len,
                             const struct http_headers *req, char *out, size_t cap, size_t *used,
                             size_t *written);

/*
 * true when a trailer field called name must not be forwarded in a request (RFC 9110 6.5.1: no
 * framing, routing, authentication, request modifiers or content format after the content),
 * compared case-insensitively: Content-Length, Transfer-Encoding, TE, Trailer; Host, Forwarded,
 * Via, X-Forwarded-For/-Host/-Port/-Proto, X-Real-IP, X-Request-Id, Max-Forwards; Connection,
 * Keep-Alive, Proxy-Connection, Upgrade, HTTP2-Settings, Proxy-Authenticate, Proxy-Authorization;
 * Authorization, Cookie; Expect, Range, If-* (every conditional), Cache-Control, Pragma;
 * Content-Type, Content-Encoding, Content-Range; and any option of req's Connection fields (req
 * may be NULL).
 */
bool http_trailer_forbidden(const struct http_headers *req, struct http_span name);

/*
 * The peer closed the connection. Returns 0 when that ends the message properly
 * (HTTP_FRAMING_CLOSE, or a message already complete), -1 when the body was cut short (b->why says
 * so).
 */
int http_body_eof(struct http_body *b);

/* true once the message has ended. */
bool http_body_done(const struct http_body *b);

/* What http_request_write() adds to a request. The strings are borrowed for the call. */
struct http_forward {
    const char *client_ip;  /* the peer's address, "192.0.2.7" or "2001:db8::7" */
    const char *proto;      /* "http" or "https" */
    const char *port;       /* the port the client connected to, "443" */
    const char *host;       /* Host to send when the request has none (HTTP/1.0), or NULL: empty */
    const char *request_id; /* the X-Request-Id to send: req->request_id when
                               http_request_id_valid(), else a new one; not NUL-terminated */
    size_t request_id_len;
    unsigned flags; /* HTTP_FWD_F_* */
};

/* The peer is in trusted_proxies: its X-Forwarded-For is appended to, and its X-Forwarded-Proto,
 * -Host, -Port and X-Real-IP are kept (each set by portier when absent), and so are its RFC 7239
 * Forwarded fields. Otherwise all replaced, and every Forwarded field dropped (portier writes
 * none of its own). */
#define HTTP_FWD_F_TRUSTED 0x1
/* portier answers "100 Continue" itself: Expect is not forwarded. */
#define HTTP_FWD_F_DROP_EXPECT 0x2

/*
 * Writes the request head to send to a server into out, rebuilt from req, never copied raw:
 *   METHOD SP path[query] SP "HTTP/1.1"   (origin-form: the absolute-form authority goes to Host)
 *   Host: req->host (or fwd->host)
 *   every field but the hop-by-hop ones (RFC 9110 7.6.1: Connection and the names it lists,
 *     Keep-Alive, Proxy-Connection, TE, Upgrade, HTTP2-Settings), but Host, Content-Length and
 *     Transfer-Encoding (rewritten below), but the X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP
 *     and X-Request-Id that portier sets, but Forwarded unless HTTP_FWD_F_TRUSTED, and but
 *     Expect for HTTP/1.0 or HTTP_FWD_F_DROP_EXPECT
 *   Content-Length: N or Transfer-Encoding: chunked, from the parsed framing
 *   Connection: keep-alive, or Connection: Upgrade and Upgrade: websocket
 *   X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host (when there is a host), X-Forwarded-Port,
 *     X-Real-IP, X-Request-Id
 * Connection options never remove what portier writes itself (Host, framing, X-Forwarded-*...), so
 * "Connection: close, X-Forwarded-For" cannot strip them. Values are written trimmed, names as
 * sent. Returns the length of the head; it was written whole iff that is <= cap (otherwise out
 * holds a prefix: call again with a bigger buffer). No allocation, no printf.
 */
size_t http_request_write(char *out, size_t cap, const struct http_request *req,
                          const struct http_forward *fwd);

/* How the response goes to the client; from http_response_flags(). */
#define HTTP_RES_F_CLOSE 0x1     /* send "Connection: close" and close after this response */
#define HTTP_RES_F_KEEPALIVE 0x2 /* send "Connection: keep-alive" (an HTTP/1.0 client keeps it) */
/* An HTTP/1.0 client and a response that says chunked: drop Transfer-Encoding and Trailer; when
 * the body is chunked, forward only its payload (http_body_next()) and close after it. */
#define HTTP_RES_F_DECHUNK 0x4
#define HTTP_RES_F_UPGRADE 0x8 /* 101 websocket: send Connection: Upgrade, Upgrade: websocket */
/* Do not forward this head at all: a 1xx to an HTTP/1.0 client (RFC 9110 15.2); it has no body. */
#define HTTP_RES_F_SKIP 0x10

/*
 * Decides how res goes back to the client that sent req. keep_alive is the caller's own wish to
 * keep the client connection (false when draining, after a body it did not read...). The result
 * has HTTP_RES_F_CLOSE whenever the client connection must close after this response: the client
 * or the caller asked, or the body runs until close.
 */
unsigned http_response_flags(const struct http_request *req, const struct http_response *res,
                             bool keep_alive);

/*
 * Writes the response head to send to the client into out: "HTTP/1.1" SP status SP reason (the
 * server's, or ours when it sent none), every field but the hop-by-hop ones (as for requests, and
 * Trailer with HTTP_RES_F_DECHUNK), Content-Length and Transfer-Encoding from the parsed facts
 * (none for 1xx and 204, RFC 9110 8.6 / RFC 9112 6.1; kept for HEAD and 304), then Connection as
 * flags (HTTP_RES_F_*) say. Returns like http_request_write().
 */
size_t http_response_write(char *out, size_t cap, const struct http_response *res, unsigned flags);

/* true when id is 1-128 characters of [A-Za-z0-9._-]: an X-Request-Id portier keeps. */
bool http_request_id_valid(const char *id, size_t len);

/* The reason phrase of RFC 9110 for status ("Not Found"), or "Unknown"; never NULL. */
const char *http_reason(int status);

/* Flags for http_error_write(). */
#define HTTP_ERR_F_HTML 0x1  /* a minimal HTML page rather than text/plain */
#define HTTP_ERR_F_HEAD 0x2  /* the request was HEAD: head only, Content-Length as for GET */
#define HTTP_ERR_F_CLOSE 0x4 /* send "Connection: close" */

/*
 * Writes the body of an error page, "502 Bad Gateway, request id abc\n" or its minimal HTML form,
 * into out. The id is left out unless http_request_id_valid() (so it needs no escaping). Returns
 * the length; written whole iff <= cap.
 */
size_t http_error_body(char *out, size_t cap, int status, const char *id, size_t id_len, bool html);

/*
 * Writes a whole error response (head and body): status line, Content-Type, Content-Length,
 * X-Request-Id (when valid), Cache-Control: no-store, Connection: close with HTTP_ERR_F_CLOSE.
 * Never longer than HTTP_ERROR_MAX. Returns the length; written whole iff <= cap.
 */
size_t http_error_write(char *out, size_t cap, int status, const char *id, size_t id_len,
                        unsigned flags);

/*
 * Writes a whole 308 response sending a plain-HTTP request to https://host[:port] with its path
 * and query (a target without a path, as "*", goes to "/"): port NULL or "443" is left out. host
 * is router_normalize_host()'s output. No body; X-Request-Id when valid; flags HTTP_ERR_F_CLOSE.
 * Returns the length; written whole iff <= cap.
 */
size_t http_redirect_write(char *out, size_t cap, const char *host, const char *port,
                           const struct http_request *req, const char *id, size_t id_len,
                           unsigned flags);

/* The interim response a client waiting on Expect: 100-continue needs. */
#define HTTP_CONTINUE "HTTP/1.1 100 Continue\r\n\r\n"

/* Character classes, shared by http.c and http_body.c. RFC 9110 5.6.2: tchar = "!" / "#" / "$" /
 * "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
static inline bool
http_is_tchar(unsigned char c)
{
    static const uint32_t map[8] = {0, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};

    return (map[c >> 5] >> (c & 31)) & 1;
}

/* RFC 9110 5.5: field-vchar (VCHAR / obs-text), SP and HTAB: what a field value may hold. */
static inline bool
http_is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* RFC 5234 B.1: HEXDIG (either case); returns its value, or -1. */
static inline int
http_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

#endif
