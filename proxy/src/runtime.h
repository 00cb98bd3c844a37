/* A runtime: one loaded config with what serving it needs (router, a balancer per service), swapped
 * whole on reload; building it is the only place that turns a config into live objects. */
#ifndef RUNTIME_H
#define RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>

#include "balancer.h"
#include "config.h"
#include "router.h"
#include "tls.h"

/* Where the router sends a request: a route's service and settings, or the default service's. */
struct runtime_target {
    int service;         /* index into cfg->services */
    bool redirect_https; /* plain-HTTP requests get 308 to https:// (https_port) */
    uint64_t hsts_ms;    /* > 0: Strict-Transport-Security on HTTPS responses */
};

/* Read-only once built; any thread may read it while it holds a reference. */
struct runtime {
    atomic_uint refs;
    struct config *cfg;             /* ref */
    struct router *router;          /* owned */
    struct balancer **balancers;    /* owned, one per cfg->services[i] */
    int *slots;                     /* owned: each service's stats slot (stats.h), by name */
    struct runtime_target *targets; /* owned: one per cfg->routes[i], then the default's */
    struct tls_store *tls;          /* owned: the certificates, or NULL without any */
    const char *https_port;         /* the first TLS listener's port (redirects), or NULL */
};

/*
 * Builds a runtime for cfg, taking a reference to cfg: router, balancers and the certificates
 * loaded. Returns it holding one reference, or NULL with a message in err.
 */
struct runtime *runtime_new(struct config *cfg, char *err, size_t errlen);

/* Takes one more reference, from any thread. Returns rt. */
struct runtime *runtime_ref(struct runtime *rt);

/* Drops one reference; the last frees the runtime. runtime_unref(NULL) is a no-op. */
void runtime_unref(struct runtime *rt);

#endif
