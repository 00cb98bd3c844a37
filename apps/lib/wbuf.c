/* Bounded appends into a caller's buffer, shared by the page renderer and the response writer. */
#include <string.h>

#include "wbuf.h"

void
wbuf_init(struct wbuf *w, char *p, size_t len, size_t cap)
{
    w->p = p;
    w->len = len;
    w->cap = cap;
    w->full = len > cap;
}

void
wbuf_raw(struct wbuf *w, const void *s, size_t n)
{
    if (w->full || n > w->cap - w->len) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

void
wbuf_str(struct wbuf *w, const char *s)
{
    wbuf_raw(w, s, strlen(s));
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
