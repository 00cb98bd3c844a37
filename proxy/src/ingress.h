/*
 * Kubernetes objects to routes: turns the Ingresses of one ingress class, with the Services,
 * EndpointSlices and TLS Secrets they name, into what a provider adds to the file's config
 * (config_extra). Pure: no I/O, no clock, no global state; the provider (kube.c) keeps the objects
 * and calls this after every change.
 *
 * The rules are the Kubernetes API's (networking.k8s.io/v1):
 * - An Ingress is served when its class is ours: spec.ingressClassName, else the annotation
 *   kubernetes.io/ingress.class, else the IngressClass annotated
 *   ingressclass.kubernetes.io/is-default-class: "true" (the oldest, if several are).
 * - rules[].host: exact, or "*.a.com" matching one label below a.com; a rule without host matches
 *   every host. paths[]: pathType Prefix (element-wise, a trailing '/' ignored), Exact (the path
 *   as written), ImplementationSpecific (as Prefix; an empty path is "/").
 * - A backend is service.name with port.number (the Service port of that number) or port.name;
 *   its servers are the ready endpoints (conditions.ready not false) of the EndpointSlices labelled
 *   kubernetes.io/service-name with that Service, at the slice port named as the Service port.
 *   A backend whose Service or endpoints are missing still routes: to an empty service (503).
 * - spec.defaultBackend: the default service. tls[].secretName: a kubernetes.io/tls Secret in the
 *   Ingress's namespace, loaded as a certificate (chosen by SNI from its names).
 * - Two Ingresses claiming the same host, path and pathType (or both a default backend): the
 *   older wins (creationTimestamp, then namespace/name), as ingress-nginx does; log names both.
 */
#ifndef INGRESS_H
#define INGRESS_H

#include <stddef.h>

#include <jansson.h>

#include "config.h"

/* The label that ties an EndpointSlice to its Service. */
#define INGRESS_SLICE_SERVICE_LABEL "kubernetes.io/service-name"
/* The annotation that marks the default IngressClass. */
#define INGRESS_DEFAULT_CLASS_ANNOTATION "ingressclass.kubernetes.io/is-default-class"

/*
 * The objects a provider keeps: each a JSON object whose keys are "namespace/name" (IngressClasses,
 * cluster-wide: "name") and whose values are the objects as the API server sent them. Borrowed; any
 * may be NULL (none of that kind).
 */
struct ingress_objects {
    const json_t *classes;
    const json_t *ingresses;
    const json_t *services;
    const json_t *slices;
    const json_t *secrets;
};

/* What ingress_translate() made; owned by the caller, freed with ingress_result_free(). */
struct ingress_result {
    /* Routes (host NULL: any host), services named "namespace/service:port" (the port as the
     * backend wrote it, number or name) with kube set and their servers in slice order, certs
     * with PEM text named "secret namespace/name", each Secret once. Routes in the order of the
     * Ingresses (oldest first), then of their rules and paths. */
    struct config_extra extra;
    char **served; /* "namespace/name" of every Ingress served, sorted */
    size_t nserved;
    char *log; /* one line per problem, each ending in '\n' ("ingress apps/web: ..."); "" if none */
};

/*
 * Translates o for ingress_class into out (zeroed first). Objects that cannot serve (a bad host or
 * path, a backend without a service, a Secret that is not kubernetes.io/tls or lacks tls.crt or
 * tls.key) are left out with a line in out->log; nothing in o fails the whole translation.
 * Returns 0, or -1 when memory ran out (out then freed).
 */
int ingress_translate(const struct ingress_objects *o, const char *ingress_class,
                      struct ingress_result *out);

/* Frees what r holds and zeroes it. NULL is a no-op. */
void ingress_result_free(struct ingress_result *r);

#endif
