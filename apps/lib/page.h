/* Renders the apps' pages (HTML and JSON) into caller-owned buffers; pure, no I/O. */
#ifndef PAGE_H
#define PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"

/* What a page shows. Strings are NUL-terminated and borrowed for the call only; any may hold any
 * bytes. */
struct page_vars {
    const char *pod;   /* pod name */
    const char *ip;    /* pod IP */
    const char *host;  /* the Host header the request carried ("" when it had none) */
    const char *time;  /* when the request was served, ISO 8601 UTC */
    uint64_t requests; /* requests this process has served, this one included */
};

/* The largest body page_html() or page_json() writes for inputs of at most PAGE_MAX_FIELD bytes
 * each. */
#define PAGE_MAX_FIELD 256
#define PAGE_MAX_BODY 8192

/*
 * Renders the HTML page (HTML5, escaped text) into out. Returns its length, or 0 when it does not
 * fit in cap bytes (out then holds garbage). Nothing is NUL-terminated. The page carries its own
 * icon (a data: URL in def's accent), so a browser asks for nothing else, not even /favicon.ico.
 */
size_t page_html(char *out, size_t cap, const struct app_def *def, const struct page_vars *v);

/* Renders the same as a JSON object; same return convention as page_html(). */
size_t page_json(char *out, size_t cap, const struct app_def *def, const struct page_vars *v);

/*
 * Escape s for HTML text and attribute values, and for a JSON string's contents. Bytes of 0x80 and
 * above are taken as Latin-1, so the result is always valid UTF-8 whatever s holds. Both return the
 * length written, or 0 with s non-empty when it did not fit in cap bytes.
 */
size_t page_escape_html(char *out, size_t cap, const char *s);
size_t page_escape_json(char *out, size_t cap, const char *s);

#endif
