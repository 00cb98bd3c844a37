/* A bounded writer over a caller-owned buffer: appends that stop, and say so, when the buffer is
 * full. */
#ifndef WBUF_H
#define WBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* p is borrowed from the caller; once an append does not fit, full is set and later appends do
 * nothing. */
struct wbuf {
    char *p;
    size_t len;
    size_t cap;
    bool full;
};

/* Starts a writer at p + len of a buffer of cap bytes. */
void wbuf_init(struct wbuf *w, char *p, size_t len, size_t cap);
void wbuf_raw(struct wbuf *w, const void *s, size_t n);
void wbuf_str(struct wbuf *w, const char *s);
void wbuf_u64(struct wbuf *w, uint64_t v);

#endif
