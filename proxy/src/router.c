/* Host + path -> target index: routes are grouped by host once, at build time, so a lookup is a
 * binary search over exact hosts, a short scan of wildcard suffixes and of each host's prefixes. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

enum router_kind {
    ROUTER_K_EXACT,
    ROUTER_K_WILD, /* name is the suffix with its dot: ".example.com" for "*.example.com" */
    ROUTER_K_ANY,  /* routes without a host */
};

/* One path prefix of a host; prefix is owned and has no trailing '/' (len 0 is "/"). */
struct router_path {
    char *prefix;
    size_t len;
    int target;
    bool exact; /* prefix is the whole path (kept with any trailing '/') */
};

/* The routes of one host: paths points into router.paths, longest prefix first. */
struct router_host {
    char *name; /* owned; NULL for the host-less group */
    size_t len;
    bool one_label;                  /* a wildcard matching names one label below it only */
    const struct router_path *paths; /* borrowed from router.paths */
    size_t npaths;
};

struct router {
    struct router_path *paths; /* owned: every route's prefix, grouped by host */
    size_t npaths;
    struct router_host *exact; /* owned: sorted by length, then bytes, for the binary search */
    size_t nexact;
    struct router_host *wild; /* owned: longest suffix first */
    size_t nwild;
    struct router_host any; /* the host-less routes; npaths 0 when there are none */
    int default_target;
};

/* A route on its way into the router: normalised, then sorted into groups. */
struct router_entry {
    enum router_kind kind;
    char name[ROUTER_HOST_MAX + 2]; /* room for the wildcard's leading dot */
    size_t nlen;
    char *prefix; /* owned until moved into router.paths */
    size_t plen;
    int target;
    bool exact, one_label;
    size_t index; /* in the caller's array, for messages */
};

/*
 * RFC 3986 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ), which also covers IPv4
 * addresses. '%' is checked apart, as it must start a pct-encoded triplet.
 */
static bool
reg_name_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=", c) != NULL;
}

static bool
hex_digit(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool
valid_reg_name(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len || !hex_digit((unsigned char)s[i + 1]) ||
                !hex_digit((unsigned char)s[i + 2]))
                return false;
            i += 2;
        } else if (!reg_name_char((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* RFC 3986 3.2.2: IP-literal = "[" ( IPv6address / IPvFuture ) "]"; s is what lies between. */
static bool
valid_ip_literal(const char *s, size_t len)
{
    char buf[64];
    unsigned char tmp[16];
    size_t i = 1;

    if (len > 0 && (s[0] == 'v' || s[0] == 'V')) {
        /* IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
        while (i < len && hex_digit((unsigned char)s[i]))
            i++;
        if (i == 1 || i >= len - 1 || s[i] != '.')
            return false;
        for (i++; i < len; i++)
            if (s[i] == '%' || (s[i] != ':' && !reg_name_char((unsigned char)s[i])))
                return false;
        return true;
    }
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, tmp) == 1;
}

/* RFC 3986 3.2.3: port = *DIGIT; an empty port is allowed, a value over 65535 is not. */
static bool
valid_port(const char *s, size_t len)
{
    unsigned long v = 0;

    if (len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v <= 65535;
}

/* Splits host[0, len) into the host proper, validated, and a port, validated then dropped. Returns
 * the host's length with any trailing dot kept, or 0 when invalid. */
static size_t
split_host(const char *host, size_t len, bool *has_port)
{
    size_t hlen;

    if (len == 0)
        return 0;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', len);
        if (close == NULL || !valid_ip_literal(host + 1, (size_t)(close - host) - 1))
            return 0;
        hlen = (size_t)(close - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        hlen = colon != NULL ? (size_t)(colon - host) : len;
        if (!valid_reg_name(host, hlen))
            return 0;
    }
    *has_port = hlen < len;
    if (hlen < len && (host[hlen] != ':' || !valid_port(host + hlen + 1, len - hlen - 1)))
        return 0;
    return hlen;
}

static size_t
normalize_host(char *out, size_t cap, const char *host, size_t len, bool *has_port)
{
    size_t hlen = split_host(host, len, has_port);

    if (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    if (hlen == 0 || hlen > ROUTER_HOST_MAX || hlen >= cap)
        return 0;
    for (size_t i = 0; i < hlen; i++) {
        char c = host[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[hlen] = '\0';
    return hlen;
}

size_t
router_normalize_host(char *out, size_t cap, const char *host, size_t len)
{
    bool has_port;

    return normalize_host(out, cap, host, len, &has_port);
}

/* Fills e's kind and name from a route's host. Returns 0, or -1 with a message in err. */
static int
entry_host(struct router_entry *e, const char *host, char *err, size_t errlen)
{
    size_t len = host != NULL ? strlen(host) : 0;
    size_t skip = 0;
    bool has_port = false;

    if (len == 0) {
        e->kind = ROUTER_K_ANY;
        return 0;
    }
    e->kind = ROUTER_K_EXACT;
    if (len > 2 && host[0] == '*' && host[1] == '.') {
        /* Keep the dot: ".example.com" is a suffix only names below example.com end with. */
        e->kind = ROUTER_K_WILD;
        e->name[0] = '.';
        skip = 1;
    }
    e->nlen = normalize_host(e->name + skip, sizeof(e->name) - skip, host + 2 * skip,
                             len - 2 * skip, &has_port);
    if (e->nlen == 0) {
        snprintf(err, errlen, "routes[%zu]: host \"%s\" is not a valid host name", e->index, host);
        return -1;
    }
    if (has_port) {
        snprintf(err, errlen, "routes[%zu]: host \"%s\" must not have a port", e->index, host);
        return -1;
    }
    if (memchr(e->name + skip, '*', e->nlen) != NULL || (skip && e->name[1] == '[')) {
        snprintf(err, errlen,
                 "routes[%zu]: host \"%s\": a wildcard is only allowed as a first label "
                 "\"*.\" before a domain name",
                 e->index, host);
        return -1;
    }
    e->nlen += skip;
    return 0;
}

/* Fills e's prefix from a route's path, without its trailing '/'. Returns 0, or -1 with a message
 * in err. */
static int
entry_path(struct router_entry *e, const char *path, char *err, size_t errlen)
{
    size_t len;

    if (path == NULL)
        path = "/";
    if (path[0] != '/') {
        snprintf(err, errlen, "routes[%zu]: path \"%s\" must start with '/'", e->index, path);
        return -1;
    }
    /* Query, fragment, spaces and controls never reach a lookup, so a prefix with them could
     * never match. */
    for (len = 0; path[len] != '\0'; len++) {
        unsigned char c = (unsigned char)path[len];
        if (c <= ' ' || c == 0x7f || c == '?' || c == '#') {
            snprintf(err, errlen,
                     "routes[%zu]: path \"%s\" may not contain spaces, controls, '?' or '#'",
                     e->index, path);
            return -1;
        }
    }
    while (!e->exact && len > 0 && path[len - 1] == '/')
        len--;
    if ((e->prefix = malloc(len + 1)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(e->prefix, path, len);
    e->prefix[len] = '\0';
    e->plen = len;
    return 0;
}

static int
cmp_len_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return alen < blen ? -1 : 1;
    return memcmp(a, b, alen);
}

/* Groups entries by kind then host (exact hosts shortest first for the binary search, wildcards
 * longest first), then puts each host's longest prefix first. */
static int
entry_cmp(const void *pa, const void *pb)
{
    const struct router_entry *a = pa, *b = pb;
    int c;

    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->kind == ROUTER_K_EXACT && (c = cmp_len_bytes(a->name, a->nlen, b->name, b->nlen)) != 0)
        return c;
    if (a->kind == ROUTER_K_WILD && (c = cmp_len_bytes(b->name, b->nlen, a->name, a->nlen)) != 0)
        return c;
    if (a->kind == ROUTER_K_WILD && a->one_label != b->one_label)
        return a->one_label ? -1 : 1;
    if ((c = cmp_len_bytes(b->prefix, b->plen, a->prefix, a->plen)) != 0)
        return c;
    if (a->exact != b->exact)
        return a->exact ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static bool
same_host(const struct router_entry *a, const struct router_entry *b)
{
    return a->kind == b->kind && a->one_label == b->one_label &&
           cmp_len_bytes(a->name, a->nlen, b->name, b->nlen) == 0;
}

/* Turns the sorted entries into r's groups, moving each prefix into r->paths. */
static int
build_groups(struct router *r, struct router_entry *ents, size_t n)
{
    struct router_host *h = NULL;

    for (size_t i = 0; i < n; i++) {
        struct router_entry *e = &ents[i];
        r->paths[i] = (struct router_path){e->prefix, e->plen, e->target, e->exact};
        e->prefix = NULL;
        r->npaths++;
        if (i > 0 && same_host(e, &ents[i - 1])) {
            h->npaths++;
            continue;
        }
        if (e->kind == ROUTER_K_ANY) {
            h = &r->any;
        } else {
            h = e->kind == ROUTER_K_EXACT ? &r->exact[r->nexact++] : &r->wild[r->nwild++];
            if ((h->name = malloc(e->nlen + 1)) == NULL)
                return -1;
            memcpy(h->name, e->name, e->nlen + 1);
            h->len = e->nlen;
            h->one_label = e->one_label;
        }
        h->paths = &r->paths[i];
        h->npaths = 1;
    }
    return 0;
}

static void
free_entries(struct router_entry *ents, size_t n)
{
    for (size_t i = 0; ents != NULL && i < n; i++)
        free(ents[i].prefix);
    free(ents);
}

struct router *
router_new(const struct router_route *routes, size_t n, int default_target, char *err,
           size_t errlen)
{
    struct router *r = NULL;
    struct router_entry *ents = NULL;

    if (default_target < -1) {
        snprintf(err, errlen, "default target %d is not a target index", default_target);
        return NULL;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL || (n > 0 && (ents = calloc(n, sizeof(*ents))) == NULL))
        goto fail_oom;
    r->default_target = default_target;
    for (size_t i = 0; i < n; i++) {
        ents[i].index = i;
        ents[i].target = routes[i].target;
        ents[i].exact = routes[i].exact;
        if (routes[i].target < 0) {
            snprintf(err, errlen, "routes[%zu]: target %d is not a target index", i,
                     routes[i].target);
            goto fail;
        }
        if (entry_host(&ents[i], routes[i].host, err, errlen) < 0 ||
            entry_path(&ents[i], routes[i].path, err, errlen) < 0)
            goto fail;
        /* Only a wildcard has labels to count. */
        ents[i].one_label = routes[i].one_label && ents[i].kind == ROUTER_K_WILD;
    }
    if (n > 0)
        qsort(ents, n, sizeof(*ents), entry_cmp);
    for (size_t i = 1; i < n; i++) {
        if (same_host(&ents[i], &ents[i - 1]) && ents[i].exact == ents[i - 1].exact &&
            cmp_len_bytes(ents[i].prefix, ents[i].plen, ents[i - 1].prefix, ents[i - 1].plen) ==
                0) {
            snprintf(err, errlen, "routes[%zu]: same host and path as routes[%zu]", ents[i].index,
                     ents[i - 1].index);
            goto fail;
        }
    }
    if (n > 0 && ((r->paths = calloc(n, sizeof(*r->paths))) == NULL ||
                  (r->exact = calloc(n, sizeof(*r->exact))) == NULL ||
                  (r->wild = calloc(n, sizeof(*r->wild))) == NULL))
        goto fail_oom;
    if (build_groups(r, ents, n) < 0)
        goto fail_oom;
    free_entries(ents, n);
    return r;

fail_oom:
    snprintf(err, errlen, "out of memory");
fail:
    free_entries(ents, n);
    router_free(r);
    return NULL;
}

void
router_free(struct router *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->npaths; i++)
        free(r->paths[i].prefix);
    for (size_t i = 0; i < r->nexact; i++)
        free(r->exact[i].name);
    for (size_t i = 0; i < r->nwild; i++)
        free(r->wild[i].name);
    free(r->paths);
    free(r->exact);
    free(r->wild);
    free(r);
}

/* Returns the target of h's longest prefix that path starts with on a segment boundary, or -1. */
static int
match_path(const struct router_host *h, const char *path, size_t len)
{
    for (size_t i = 0; i < h->npaths; i++) {
        const struct router_path *p = &h->paths[i];
        if (p->exact) {
            if (p->len == len && len > 0 && memcmp(p->prefix, path, len) == 0)
                return p->target;
            continue;
        }
        if (p->len == 0)
            return p->target; /* "/" matches every path, even "*" or an empty one */
        if (p->len <= len && memcmp(p->prefix, path, p->len) == 0 &&
            (p->len == len || path[p->len] == '/'))
            return p->target;
    }
    return -1;
}

static const struct router_host *
find_exact(const struct router *r, const char *host, size_t len)
{
    size_t lo = 0, hi = r->nexact;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_len_bytes(r->exact[mid].name, r->exact[mid].len, host, len);
        if (c == 0)
            return &r->exact[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int
router_lookup(const struct router *r, const char *host, size_t host_len, const char *path,
              size_t path_len)
{
    const struct router_host *h;
    const char *q;
    int s;

    if (path == NULL)
        path_len = 0;
    else if ((q = memchr(path, '?', path_len)) != NULL)
        path_len = (size_t)(q - path);
    if (host != NULL && host_len > 0) {
        if ((h = find_exact(r, host, host_len)) != NULL && (s = match_path(h, path, path_len)) >= 0)
            return s;
        for (size_t i = 0; i < r->nwild; i++) {
            h = &r->wild[i];
            /* The suffix starts with its dot, so "example.com" itself is not below it. */
            if (host_len > h->len && memcmp(host + host_len - h->len, h->name, h->len) == 0 &&
                (!h->one_label || memchr(host, '.', host_len - h->len) == NULL) &&
                (s = match_path(h, path, path_len)) >= 0)
                return s;
        }
    }
    if ((s = match_path(&r->any, path, path_len)) >= 0)
        return s;
    return r->default_target;
}
