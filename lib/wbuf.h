/* A bounded writer over a caller-owned buffer, shared by the apps and portier: appends store what
 * fits and count what would have been written, so a caller learns both that the output did not fit
 * and how much room it needs. */
#ifndef WBUF_H
#define WBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * p is borrowed from the caller. len counts every byte appended so far, stored or not: the first
 * min(len, cap) bytes at p are always the output's true prefix, and len > cap means it did not fit
 * (wbuf_full). p may be NULL when cap is 0, to measure an output without writing it.
 */
struct wbuf {
    char *p;
    size_t len;
    size_t cap;
};

/* Starts a writer at p + len of a buffer of cap bytes. */
void wbuf_init(struct wbuf *w, char *p, size_t len, size_t cap);

/* true once the output has outgrown the buffer. */
bool wbuf_full(const struct wbuf *w);

/* Inline: portier's head writers append a few dozen pieces per request, most of them literals,
 * whose copies then compile to a store or two. */
static inline void
wbuf_raw(struct wbuf *w, const void *s, size_t n)
{
    if (n > 0 && w->len < w->cap) {
        size_t room = w->cap - w->len;

        if (n <= room)
            memcpy(w->p + w->len, s, n); /* apart, so that a constant n stays constant */
        else
            memcpy(w->p + w->len, s, room);
    }
    w->len += n;
}

/* Inline too, so that the length of a literal is known when compiling. */
static inline void
wbuf_str(struct wbuf *w, const char *s)
{
    wbuf_raw(w, s, strlen(s));
}

void wbuf_u64(struct wbuf *w, uint64_t v);

/*
 * Appends n bytes of s escaped for the inside of a JSON string: quote, backslash and control bytes
 * as escapes, '<', '>' and '&' as \u00XX (safe inside <script>), bytes of 0x80 and above taken as
 * Latin-1, so the result is valid UTF-8 JSON whatever s holds.
 */
void wbuf_json(struct wbuf *w, const char *s, size_t n);

/* Appends a byte of 0x80 or above, read as Latin-1, as its two-byte UTF-8 sequence. */
void wbuf_latin1(struct wbuf *w, unsigned char c);

#endif
