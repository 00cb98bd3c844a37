/* Bounded appends into a caller's buffer: the apps' pages and responses, portier's heads and logs.
 */
#include <string.h>

#include "wbuf.h"

void
wbuf_init(struct wbuf *w, char *p, size_t len, size_t cap)
{
    w->p = p;
    w->len = len;
    w->cap = cap;
}

bool
wbuf_full(const struct wbuf *w)
{
    return w->len > w->cap;
}

void
wbuf_u64(struct wbuf *w, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    wbuf_raw(w, tmp + i, sizeof(tmp) - i);
}

static const char hex[] = "0123456789abcdef";

void
wbuf_latin1(struct wbuf *w, unsigned char c)
{
    char u[2] = {(char)(0xc0 | (c >> 6)), (char)(0x80 | (c & 0x3f))};

    wbuf_raw(w, u, 2);
}

void
wbuf_json(struct wbuf *w, const char *s, size_t n)
{
    const unsigned char *c = (const unsigned char *)s, *end = c + n;

    for (; c < end; c++) {
        if (*c == '"' || *c == '\\') {
            char e[2] = {'\\', (char)*c};
            wbuf_raw(w, e, 2);
        } else if (*c < 0x20 || *c == 0x7f || *c == '<' || *c == '>' || *c == '&') {
            char e[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 0xf]};
            wbuf_raw(w, e, 6);
        } else if (*c >= 0x80) {
            wbuf_latin1(w, *c);
        } else {
            wbuf_raw(w, c, 1);
        }
    }
}
