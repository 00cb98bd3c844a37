/* Maps a request's Host and path to a target, the caller's index (the runtime's routes, each with
 * its service and per-route settings); pure (no I/O, no locks, no allocation after
 * router_new()), so one router per config is shared read-only by every worker, and answering
 * 400 or 404 is left to the caller. */
#ifndef ROUTER_H
#define ROUTER_H

#include <stdbool.h>
#include <stddef.h>

/* The longest host router_normalize_host() accepts, port and NUL not counted (RFC 1035 2.3.4). */
#define ROUTER_HOST_MAX 255

/*
 * One route as the config gives it. router_new() copies the strings, so they are borrowed only for
 * that call. host is "app1.com" (exact), "*.example.com" (any name below example.com, not
 * example.com itself), or NULL / "" for a route that matches any host after the exact and wildcard
 * ones; it is normalised like a Host header (lowercase, one trailing dot dropped) and must have no
 * port. path is a prefix starting with '/' (NULL means "/"); a trailing '/' is ignored, as in
 * Kubernetes' Prefix, so "/api/" and "/api" are the same route.
 */
struct router_route {
    const char *host;
    const char *path;
    int target;     /* >= 0: an index into the caller's targets */
    bool exact;     /* path must equal the request's path, byte for byte (a trailing '/' too) */
    bool one_label; /* a wildcard host matches names one label below its suffix only
                     * ("*.a.com": "x.a.com", not "y.x.a.com"), as Kubernetes' do */
};

struct router;

/*
 * Builds a router from n routes and the target for everything else (default_target, or -1 for
 * none: the caller answers 404). Returns the router, owned by the caller until router_free(), or
 * NULL with a message in err ("routes[2]: host \"a b\" is not a valid host name") when a route is
 * invalid, two routes have the same host and path, or memory runs out.
 */
struct router *router_new(const struct router_route *routes, size_t n, int default_target,
                          char *err, size_t errlen);

/* Frees the router and its copies of the routes; router_free(NULL) is a no-op. No lookup may be
 * running on it. */
void router_free(struct router *r);

/*
 * Returns the target for a request, or -1 (the caller answers 404). host is the output of
 * router_normalize_host() (not NUL-terminated here; host_len 0 or host NULL means the request had
 * no host); path is the request-target's path, with or without its "?query", which is ignored.
 * Paths are compared byte for byte, case-sensitively, without percent-decoding or removing dot
 * segments.
 *
 * The order, first match wins:
 *   1. the exact host, its longest path prefix that matches on a segment boundary ("/api" matches
 *      "/api", "/api/" and "/api/x", not "/apiary"; "/" matches every path); an exact path of the
 *      same length goes before a prefix;
 *   2. the wildcard hosts that match, longest suffix first (one-label ones before the others of
 *      the same suffix), each with its longest matching prefix;
 *   3. the routes without a host, longest matching prefix;
 *   4. the default target.
 * A host whose routes have no matching path falls through to the next step rather than answering
 * 404, as nginx and Kubernetes ingresses send such requests to the default backend.
 *
 * Safe to call from any number of threads at once; allocates nothing.
 */
int router_lookup(const struct router *r, const char *host, size_t host_len, const char *path,
                  size_t path_len);

/*
 * Normalises a Host header value (or the authority of an absolute-form request-target) for
 * router_lookup(): the port is dropped ("app1.com:8080" -> "app1.com", "[::1]:80" -> "[::1]"),
 * letters are lowercased and one trailing dot is removed. Writes the result and a NUL into out and
 * returns its length, or returns 0 when the host is invalid (the caller answers 400): empty, longer
 * than ROUTER_HOST_MAX, not an RFC 3986 3.2.2 reg-name, IPv4 address or IP-literal (so no spaces,
 * controls or non-ASCII bytes), a port with anything but up to five digits or over 65535 (an empty
 * port, "app1.com:", is allowed by RFC 3986 3.2.3), or a result that does not fit in cap bytes
 * (ROUTER_HOST_MAX + 1 always fits). IP-literals are compared as text afterwards: "[::1]" and
 * "[0::1]" are different hosts.
 */
size_t router_normalize_host(char *out, size_t cap, const char *host, size_t len);

#endif
