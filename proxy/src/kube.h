/*
 * The Kubernetes provider: follows the API server's IngressClasses, Ingresses, Services,
 * EndpointSlices and TLS Secrets (LIST, then WATCH from the list's resourceVersion, resumed when it
 * ends or breaks, re-listed on 410 Gone, retried with jittered backoff), turns them into routes,
 * services and certificates (ingress.c) on top of the file's config, and hands each new config up
 * to its owner (main.c), which swaps the runtime in as a reload does. Writes the node's address
 * into the status of each Ingress it serves. Runs on the main thread's loop.
 */
#ifndef KUBE_H
#define KUBE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"

/* How long after an API event a new config is made: events that come together apply together. */
#define KUBE_SETTLE_MS 50

/*
 * The owner's callback with a new config to serve: base extended with what the API server holds
 * (or base alone while nothing was read yet). It takes over the reference to cfg.
 */
typedef void (*kube_apply_fn)(void *arg, struct config *cfg);

struct kube;

/*
 * Starts following the API server that base->kubernetes names, on lp's loop (the main thread's).
 * Takes a reference to base. The node's address for Ingress status comes from $PORTIER_NODE_IP
 * (none: status is left alone). Returns the provider (kube_stop), or NULL with a message in err
 * (the CA cannot be loaded, no server is known).
 */
struct kube *kube_start(struct loop *lp, struct config *base, kube_apply_fn apply, void *arg,
                        char *err, size_t errlen);

/*
 * Runs lp's loop until every kind is listed, at most timeout_ms, then applies what was read (so
 * that portier opens its listeners with the cluster's routes); logs when the time ran out.
 */
void kube_wait_first(struct kube *k, uint64_t timeout_ms);

/* A reload: base replaces the file's config (its ingress_class applies; the API server and the
 * namespaces followed stay until a restart), and a new config is applied at once. */
void kube_set_base(struct kube *k, struct config *base);

/* Whether every kind was listed once (the routes reflect the cluster). */
bool kube_synced(const struct kube *k);

/* Stops every request (no callback runs afterwards), drops base and frees k. NULL: no-op. */
void kube_stop(struct kube *k);

#endif
