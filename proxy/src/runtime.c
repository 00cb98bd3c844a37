/* Turns a config into the router and balancers that serve it, and counts who still uses them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime.h"
#include "stats.h"

/* config_parse() refuses a service with more static servers than a balancer holds, with its
 * position, so building a runtime never has to. */
_Static_assert(CONFIG_MAX_SERVERS <= BALANCER_MAX_SERVERS, "a config's servers fit a balancer");

/* The balancer of one service from its static list; a dns service starts empty (503). */
static struct balancer *
service_balancer(const struct config_service *svc)
{
    struct balancer_addr addrs[BALANCER_MAX_SERVERS];
    size_t n = 0;

    /* A dns service starts empty; discovery fills it (and seeds it across reloads). */
    for (size_t i = 0; i < svc->nservers && n < BALANCER_MAX_SERVERS; i++) {
        const struct config_addr *a = &svc->servers[i];
        if (balancer_addr_init(&addrs[n], (const struct sockaddr *)&a->ss, a->len) == 0)
            n++;
    }
    return balancer_new(addrs, n, BALANCER_COOLDOWN_MS);
}

struct runtime *
runtime_new(struct config *cfg, char *err, size_t errlen)
{
    struct runtime *rt = calloc(1, sizeof(*rt));
    struct router_route *routes = NULL;

    if (rt == NULL)
        goto nomem;
    atomic_init(&rt->refs, 1);
    rt->cfg = config_ref(cfg);
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sized by its element */
    rt->balancers = calloc(cfg->nservices ? cfg->nservices : 1, sizeof(*rt->balancers));
    rt->slots = calloc(cfg->nservices ? cfg->nservices : 1, sizeof(*rt->slots));
    routes = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof(*routes));
    rt->targets = calloc(cfg->nroutes + 1, sizeof(*rt->targets));
    if (rt->balancers == NULL || rt->slots == NULL || routes == NULL || rt->targets == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->nservices; i++) {
        if ((rt->balancers[i] = service_balancer(&cfg->services[i])) == NULL)
            goto nomem;
        rt->slots[i] = stats_slot(cfg->services[i].name);
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        routes[i] = (struct router_route){r->host, r->path, (int)i, r->exact, r->one_label};
        rt->targets[i] = (struct runtime_target){(int)r->service, r->redirect_https, r->hsts_ms};
    }
    rt->targets[cfg->nroutes] = (struct runtime_target){cfg->default_service, false, 0};
    rt->router = router_new(routes, cfg->nroutes,
                            cfg->default_service >= 0 ? (int)cfg->nroutes : -1, err, errlen);
    if (rt->router == NULL)
        goto fail;
    rt->tls = tls_store_new(cfg, err, errlen);
    if (rt->tls == NULL && cfg->ncerts > 0)
        goto fail;
    for (size_t i = 0; i < cfg->nlisteners && rt->https_port == NULL; i++) {
        if (cfg->listeners[i].tls)
            rt->https_port = strrchr(cfg->listeners[i].addr.spec, ':') + 1;
    }
    free(routes);
    return rt;

nomem:
    snprintf(err, errlen, "out of memory");
fail:
    free(routes);
    runtime_unref(rt);
    return NULL;
}

struct runtime *
runtime_ref(struct runtime *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    return rt;
}

void
runtime_unref(struct runtime *rt)
{
    if (rt == NULL || atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
        return;
    router_free(rt->router);
    tls_store_free(rt->tls);
    free(rt->targets);
    free(rt->slots);
    if (rt->balancers != NULL) {
        for (size_t i = 0; i < rt->cfg->nservices; i++)
            balancer_free(rt->balancers[i]);
        free(rt->balancers);
    }
    config_unref(rt->cfg);
    free(rt);
}
