/*
 * The admin listener (docs/admin.md): /metrics, /healthz, /readyz, the status page and its JSON,
 * served by libevent's HTTP server on the main thread's loop, never by the workers, so a scrape
 * costs the request path nothing but the counters it reads.
 */
#ifndef ADMIN_H
#define ADMIN_H

#include <stddef.h>

#include <event2/event.h>

#include "config.h"
#include "discovery.h"
#include "runtime.h"

/* What the admin reads of the main thread's state, through pointers the main thread keeps
 * current (it swaps the runtime and the discovery on reload). */
struct admin_view {
    const char *version;
    const char *config_path;
    unsigned workers;
    struct runtime *const *rt;
    struct discovery *const *disc;
    struct kube *const *kube; /* the Kubernetes provider, or NULL */
};

struct admin;

/*
 * Serves the admin listener for addr on base with view (borrowed: it must outlive the admin): on
 * fd, a listening socket a predecessor handed over (taken), or on a socket bound now when fd is
 * -1. Returns it, or NULL with a message in err (an address that cannot be bound).
 */
struct admin *admin_start(struct event_base *base, const struct config_addr *addr, int fd,
                          const struct admin_view *view, char *err, size_t errlen);

/* The listening socket, for a successor (handover.h). */
int admin_fd(const struct admin *a);

/* Closes the listener and every admin connection, and frees a. admin_stop(NULL) is a no-op. */
void admin_stop(struct admin *a);

/* The status page (proxy/admin/status.html), built in by scripts/embed.sh. */
extern const char admin_status_html[];
extern const size_t admin_status_html_len;

#endif
