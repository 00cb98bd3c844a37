/* Renders the apps' HTML and JSON pages with a bounded writer; escaping is the only subtle part. */
#include <string.h>

#include "page.h"
#include "wbuf.h"

static void
w_html(struct wbuf *w, const char *s)
{
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        switch (*c) {
        case '&':
            wbuf_str(w, "&amp;");
            break;
        case '<':
            wbuf_str(w, "&lt;");
            break;
        case '>':
            wbuf_str(w, "&gt;");
            break;
        case '"':
            wbuf_str(w, "&quot;");
            break;
        case '\'':
            wbuf_str(w, "&#39;");
            break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                /* Control characters are not allowed in HTML text; show them as U+FFFD. */
                wbuf_str(w, "\xef\xbf\xbd");
            } else if (*c >= 0x80) {
                wbuf_latin1(w, *c);
            } else {
                wbuf_raw(w, c, 1);
            }
        }
    }
}

static void
w_json(struct wbuf *w, const char *s)
{
    wbuf_json(w, s, strlen(s));
}

static size_t
w_done(const struct wbuf *w)
{
    return wbuf_full(w) ? 0 : w->len;
}

size_t
page_escape_html(char *out, size_t cap, const char *s)
{
    struct wbuf w;

    wbuf_init(&w, out, 0, cap);

    w_html(&w, s);
    return w_done(&w);
}

size_t
page_escape_json(char *out, size_t cap, const char *s)
{
    struct wbuf w;

    wbuf_init(&w, out, 0, cap);

    w_json(&w, s);
    return w_done(&w);
}

/*
 * One byte of the accent inside the icon, escaped twice: for the SVG (an XML attribute, fill='...')
 * and then for the data: URL that carries the SVG in an HTML attribute. Letters, digits and
 * "(),.-_" pass as they are; XML's specials and bytes of 0x80 and above (Latin-1, as in w_html)
 * become character references, control bytes U+FFFD; everything else, and the "&#" and ";" of a
 * reference, is percent-encoded (RFC 3986 2.1; a bare '#' would end the data at a fragment). So
 * the URL holds nothing but those characters and %XX, whatever the accent.
 */
static void
w_icon_byte(struct wbuf *w, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '(' ||
        c == ')' || c == ',' || c == '.' || c == '-' || c == '_') {
        wbuf_raw(w, &c, 1);
    } else if (c < 0x20 || c == 0x7f || c >= 0x80 || c == '&' || c == '<' || c == '>' || c == '"' ||
               c == '\'') {
        wbuf_str(w, "%26%23"); /* "&#" */
        wbuf_u64(w, c < 0x20 || c == 0x7f ? 0xfffd : c);
        wbuf_str(w, "%3B"); /* ";" */
    } else {
        char e[3] = {'%', hex[c >> 4], hex[c & 0xf]};
        wbuf_raw(w, e, 3);
    }
}

/*
 * The page's icon, inline: a rounded square in the app's accent colour. Without one, a browser asks
 * for /favicon.ico after each page, and behind a round-robin that request takes the next replica's
 * turn, so reloading would skip replicas. The fixed parts are percent-encoded already.
 */
static void
w_icon(struct wbuf *w, const char *accent)
{
    wbuf_str(w, "<link rel=\"icon\" type=\"image/svg+xml\" href=\"data:image/svg+xml,"
                "%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20viewBox='0%200%2016%2016'%3E"
                "%3Crect%20width='16'%20height='16'%20rx='4'%20fill='");
    for (const unsigned char *c = (const unsigned char *)accent; *c != '\0'; c++)
        w_icon_byte(w, *c);
    wbuf_str(w, "'/%3E%3C/svg%3E\">\n");
}

/* One row of the page's table: a label and an escaped value. */
static void
w_row(struct wbuf *w, const char *label, const char *value)
{
    wbuf_str(w, "<tr><th>");
    wbuf_str(w, label);
    wbuf_str(w, "</th><td>");
    w_html(w, value);
    wbuf_str(w, "</td></tr>\n");
}

size_t
page_html(char *out, size_t cap, const struct app_def *def, const struct page_vars *v)
{
    struct wbuf w;

    wbuf_init(&w, out, 0, cap);

    wbuf_str(&w,
             "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    w_html(&w, def->name);
    wbuf_str(&w, " \xe2\x80\x94 ");
    w_html(&w, v->pod);
    wbuf_str(&w, "</title>\n");
    w_icon(&w, def->accent);
    wbuf_str(&w, "<style>\n:root{--accent:");
    wbuf_str(&w, def->accent);
    wbuf_str(&w, "}\n*{box-sizing:border-box}\nbody{margin:0;min-height:100vh;display:flex;"
                 "align-items:center;justify-content:center;padding:1rem;background:");
    wbuf_str(&w, def->background);
    wbuf_str(
        &w, ";font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1d1d1f}\n"
            "main{width:100%;max-width:32rem;background:#fff;border-radius:1rem;padding:1.5rem;"
            "border-top:.5rem solid var(--accent);box-shadow:0 .5rem 2rem rgba(0,0,0,.15)}\n"
            "h1{margin:0;color:var(--accent);font-size:2rem}\np{margin:.25rem 0 1rem;color:#555}\n"
            "table{width:100%;border-collapse:collapse}\nth,td{text-align:left;padding:.4rem 0;"
            "border-bottom:1px solid #eee;vertical-align:top}\nth{width:35%;color:#666;"
            "font-weight:500}\ntd{font-family:ui-monospace,Menlo,Consolas,monospace;"
            "word-break:break-all}\nfooter{margin-top:1rem;font-size:.875rem;color:#777}\n"
            "a{color:var(--accent)}\n</style>\n</head>\n<body>\n<main>\n<h1>");
    w_html(&w, def->title);
    wbuf_str(&w, "</h1>\n<p>");
    w_html(&w, def->tagline);
    wbuf_str(&w, "</p>\n<table>\n");
    w_row(&w, "App", def->name);
    w_row(&w, "Pod", v->pod);
    w_row(&w, "Pod IP", v->ip);
    wbuf_str(&w, "<tr><th>Requests served</th><td>");
    wbuf_u64(&w, v->requests);
    wbuf_str(&w, "</td></tr>\n");
    w_row(&w, "Host", v->host);
    w_row(&w, "Time", v->time);
    wbuf_str(&w,
             "</table>\n<footer>The same as JSON: <a href=\"/api/info\">/api/info</a></footer>\n"
             "</main>\n</body>\n</html>\n");
    return w_done(&w);
}

/* One "key": "value" member of the JSON object, with the comma that precedes all but the first. */
static void
w_member(struct wbuf *w, const char *key, const char *value)
{
    wbuf_str(w, ",\"");
    wbuf_str(w, key);
    wbuf_str(w, "\":\"");
    w_json(w, value);
    wbuf_str(w, "\"");
}

size_t
page_json(char *out, size_t cap, const struct app_def *def, const struct page_vars *v)
{
    struct wbuf w;

    wbuf_init(&w, out, 0, cap);

    wbuf_str(&w, "{\"app\":\"");
    w_json(&w, def->name);
    wbuf_str(&w, "\"");
    w_member(&w, "pod", v->pod);
    w_member(&w, "ip", v->ip);
    wbuf_str(&w, ",\"requests\":");
    wbuf_u64(&w, v->requests);
    w_member(&w, "host", v->host);
    w_member(&w, "time", v->time);
    wbuf_str(&w, "}\n");
    return w_done(&w);
}
