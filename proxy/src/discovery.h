/*
 * DNS discovery: keeps the balancer of every `dns:` service of a runtime filled with the A and AAAA
 * records of its name (a headless Service's pods), re-resolved as their TTL runs out. Runs on the
 * main thread's event loop; the workers only see balancer_update()'s lock-free swaps.
 */
#ifndef DISCOVERY_H
#define DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "runtime.h"
#include "stats.h"

/* Re-resolution bounds, whatever the TTL says: often enough to follow pods, rarely enough to be
 * cheap. */
#define DISCOVERY_TTL_MIN_S 1
#define DISCOVERY_TTL_MAX_S 30

struct discovery;

/*
 * Starts resolving every dns: service of rt on base, with rt's resolvers (or the nameservers of
 * $PORTIER_RESOLV_CONF, default /etc/resolv.conf). Names are absolute: never tried with the search
 * list. prev, when not NULL, is the runtime being
 * replaced: each dns service of rt starts with the servers that the same name has there, so a
 * reload never empties a service while the first answer is awaited. Takes a reference to rt.
 * Returns the discovery (NULL-safe to stop), or NULL with a message in err. A runtime without dns
 * services gets a discovery that does nothing.
 */
struct discovery *discovery_start(struct event_base *base, struct runtime *rt,
                                  const struct runtime *prev, char *err, size_t errlen);

/*
 * Runs base until every dns service has had its first answer (or failure), at most timeout_ms, so
 * that portier does not open its listeners with empty services. Call before the workers start.
 */
void discovery_wait_first(struct discovery *d, uint64_t timeout_ms);

/*
 * The last round of service index (of d's runtime): its end as Unix time in *when and how it went
 * in *result. Returns false for a static service or one not answered yet.
 */
bool discovery_last(const struct discovery *d, size_t index, double *when, enum stats_dns *result);

/* Stops resolving (no callback runs afterwards), drops the runtime reference and frees d.
 * discovery_stop(NULL) is a no-op. */
void discovery_stop(struct discovery *d);

#endif
