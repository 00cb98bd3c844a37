/*
 * DNS discovery with libevent's evdns: for each dns service, an A and an AAAA lookup per round;
 * when both have answered, their records become the service's servers and the next round is timed
 * by the smallest TTL. A failed round keeps the last set (logged when it starts failing and when it
 * recovers, not every round); an authoritative "no such name" or an empty answer empties it, as a
 * Service scaled to zero should (503).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "discovery.h"
#include "log.h"
#include "loop.h"
#include "stats.h"

/* A failed round is retried soon, but not in a tight loop. */
#define RETRY_S 2

struct dns_svc {
    struct discovery *d; /* borrowed: the owner */
    size_t index;        /* in the runtime's services */
    struct event *timer; /* owned: starts the next round */
    int pending;         /* lookups of this round still out */
    int failed;          /* a lookup of this round failed (not "no such name") */
    int failing;         /* the last round failed: logged once, until one succeeds */
    int answered;        /* at least one round has finished */
    uint32_t ttl;        /* the smallest TTL of this round's records */
    double last_time;    /* Unix time of the last round's end, for the status page */
    enum stats_dns last; /* how it ended */
    size_t n;
    struct balancer_addr addrs[BALANCER_MAX_SERVERS];
};

struct discovery {
    struct event_base *base; /* borrowed: the main thread's */
    struct evdns_base *dns;  /* owned */
    struct runtime *rt;      /* ref */
    struct dns_svc *svcs;    /* owned, nsvcs */
    size_t nsvcs;
};

static const struct config_service *
svc_config(const struct dns_svc *s)
{
    return &s->d->rt->cfg->services[s->index];
}

static void
add_addr(struct dns_svc *s, const struct sockaddr *sa, socklen_t len)
{
    if (s->n == BALANCER_MAX_SERVERS)
        return; /* the rest are dropped; round end logs it */
    if (balancer_addr_init(&s->addrs[s->n], sa, len) == 0)
        s->n++;
}

static void
round_schedule(struct dns_svc *s, uint32_t seconds)
{
    struct timeval tv = {(time_t)seconds, 0};

    evtimer_add(s->timer, &tv);
}

static void
round_counted(struct dns_svc *s, enum stats_dns result)
{
    s->last = result;
    stats_dns(s->d->rt->slots[s->index], result);
}

/* Both lookups of a round are in: swap the servers in, or keep them, and time the next round. */
static void
round_end(struct dns_svc *s)
{
    const struct config_service *c = svc_config(s);
    struct balancer *b = s->d->rt->balancers[s->index];

    s->answered = 1;
    s->last_time = stats_now();
    /* One family failing while the other brought records is a success with those records (some
     * servers refuse AAAA); both failing, or one failing and the other empty, keeps the last set.
     */
    if (s->failed == 2 || (s->failed == 1 && s->n == 0)) {
        if (!s->failing)
            log_msg(LOG_WARN, "service %s: cannot resolve %s; keeping its last servers", c->name,
                    c->dns_name);
        s->failing = 1;
        round_counted(s, STATS_DNS_FAILURE);
        round_schedule(s, RETRY_S);
        return;
    }
    round_counted(s, s->n == 0 ? STATS_DNS_EMPTY : STATS_DNS_SUCCESS);
    if (s->failing)
        log_msg(LOG_INFO, "service %s: %s resolves again", c->name, c->dns_name);
    s->failing = 0;
    if (s->n == BALANCER_MAX_SERVERS)
        log_msg(LOG_WARN, "service %s: %s has more than %d records; using %d", c->name, c->dns_name,
                BALANCER_MAX_SERVERS, BALANCER_MAX_SERVERS);
    if (balancer_update(b, s->addrs, s->n) < 0)
        log_msg(LOG_ERROR, "service %s: cannot update its servers", c->name);
    /* An empty answer has no TTL of its own: look again soon, pods may be on their way. */
    uint32_t ttl = s->n == 0 ? RETRY_S : s->ttl;
    if (ttl < DISCOVERY_TTL_MIN_S)
        ttl = DISCOVERY_TTL_MIN_S;
    if (ttl > DISCOVERY_TTL_MAX_S)
        ttl = DISCOVERY_TTL_MAX_S;
    round_schedule(s, ttl);
}

static void
lookup_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct dns_svc *s = arg;
    uint16_t port = htons(svc_config(s)->dns_port);

    if (result == DNS_ERR_NONE) {
        for (int i = 0; i < count; i++) {
            if (type == DNS_IPv4_A) {
                struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = port};
                memcpy(&sin.sin_addr, (const char *)addresses + 4 * i, 4);
                add_addr(s, (struct sockaddr *)&sin, sizeof(sin));
            } else if (type == DNS_IPv6_AAAA) {
                struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = port};
                memcpy(&sin6.sin6_addr, (const char *)addresses + 16 * i, 16);
                add_addr(s, (struct sockaddr *)&sin6, sizeof(sin6));
            }
        }
        if (count > 0 && ttl >= 0 && (uint32_t)ttl < s->ttl)
            s->ttl = (uint32_t)ttl;
    } else if (result != DNS_ERR_NOTEXIST && result != DNS_ERR_NODATA) {
        /* A server failure or timeout says nothing about the pods of this family. */
        s->failed++;
    }
    if (--s->pending == 0)
        round_end(s);
}

static void
round_start(evutil_socket_t fd, short what, void *arg)
{
    struct dns_svc *s = arg;
    const char *name = svc_config(s)->dns_name;

    (void)fd;
    (void)what;
    s->n = 0;
    s->failed = 0;
    s->ttl = DISCOVERY_TTL_MAX_S;
    s->pending = 2;
    /* Each call may answer at once (from a cache, or failing): count both before either runs.
     * A dns: name is absolute, whatever its dots: through a pod's search list (ndots:5) a dead or
     * wildcard search domain would answer first, or fail the round before the name is asked. */
    if (evdns_base_resolve_ipv4(s->d->dns, name, DNS_QUERY_NO_SEARCH, lookup_cb, s) == NULL) {
        s->failed++;
        s->pending--;
    }
    if (evdns_base_resolve_ipv6(s->d->dns, name, DNS_QUERY_NO_SEARCH, lookup_cb, s) == NULL) {
        s->failed++;
        s->pending--;
    }
    if (s->pending == 0)
        round_end(s);
}

/* Carries the current servers of the same dns name in prev over to s's new balancer. */
static void
seed_from(struct dns_svc *s, const struct runtime *prev)
{
    const struct config_service *c = svc_config(s);

    for (size_t i = 0; prev != NULL && i < prev->cfg->nservices; i++) {
        const struct config_service *p = &prev->cfg->services[i];
        if (p->dns == NULL || strcmp(p->dns, c->dns) != 0)
            continue;
        struct balancer_set *set = balancer_acquire(prev->balancers[i]);
        struct balancer_addr addrs[BALANCER_MAX_SERVERS];
        size_t n = balancer_set_size(set);
        for (size_t j = 0; j < n; j++)
            addrs[j] = *balancer_server_addr(balancer_set_server(set, j));
        balancer_set_unref(set);
        balancer_update(s->d->rt->balancers[s->index], addrs, n);
        return;
    }
}

/* Points evdns at the configured resolvers, or at resolv.conf's. */
static int
dns_setup(struct discovery *d, char *err, size_t errlen)
{
    const struct config *cfg = d->rt->cfg;
    /* Names are looked up as written (round_start), so the search list and ndots do not matter. */
    int opts = DNS_OPTION_MISC;
    const char *path = getenv("PORTIER_RESOLV_CONF");

    /* systemd-resolved hosts keep the real nameservers in /run/systemd/resolve/resolv.conf. */
    if (path == NULL || path[0] == '\0')
        path = "/etc/resolv.conf";
    if (cfg->nresolvers == 0)
        opts |= DNS_OPTION_NAMESERVERS;
    /* A missing resolv.conf is not fatal with explicit resolvers; evdns then keeps its defaults. */
    int rc = evdns_base_resolv_conf_parse(d->dns, opts, path);
    if (rc != 0 && cfg->nresolvers == 0) {
        snprintf(err, errlen, "dns: cannot read nameservers from %s (error %d)", path, rc);
        return -1;
    }
    for (size_t i = 0; i < cfg->nresolvers; i++) {
        const struct config_addr *a = &cfg->resolvers[i];
        if (evdns_base_nameserver_sockaddr_add(d->dns, (const struct sockaddr *)&a->ss, a->len,
                                               0) != 0) {
            snprintf(err, errlen, "dns: cannot use resolver %s", a->spec);
            return -1;
        }
    }
    return 0;
}

struct discovery *
discovery_start(struct event_base *base, struct runtime *rt, const struct runtime *prev, char *err,
                size_t errlen)
{
    const struct config *cfg = rt->cfg;
    struct discovery *d = calloc(1, sizeof(*d));
    size_t n = 0;

    if (d == NULL)
        goto nomem;
    d->base = base;
    d->rt = runtime_ref(rt);
    for (size_t i = 0; i < cfg->nservices; i++)
        n += cfg->services[i].dns != NULL;
    if (n == 0)
        return d;
    d->svcs = calloc(n, sizeof(*d->svcs));
    d->dns = evdns_base_new(base, 0);
    if (d->svcs == NULL || d->dns == NULL)
        goto nomem;
    if (dns_setup(d, err, errlen) < 0)
        goto fail;
    /* Fail fast and retry on our own schedule rather than evdns's 5 s x 3 attempts. */
    evdns_base_set_option(d->dns, "timeout:", "2");
    evdns_base_set_option(d->dns, "attempts:", "2");
    for (size_t i = 0; i < cfg->nservices; i++) {
        if (cfg->services[i].dns == NULL)
            continue;
        struct dns_svc *s = &d->svcs[d->nsvcs++];
        s->d = d;
        s->index = i;
        s->timer = evtimer_new(base, round_start, s);
        if (s->timer == NULL)
            goto nomem;
        seed_from(s, prev);
        event_active(s->timer, EV_TIMEOUT, 0);
    }
    return d;

nomem:
    snprintf(err, errlen, "out of memory");
fail:
    discovery_stop(d);
    return NULL;
}

static bool
all_answered(const void *arg)
{
    const struct discovery *d = arg;

    for (size_t i = 0; i < d->nsvcs; i++) {
        if (!d->svcs[i].answered)
            return false;
    }
    return true;
}

void
discovery_wait_first(struct discovery *d, uint64_t timeout_ms)
{
    if (d->nsvcs > 0 && !loop_run_until(d->base, all_answered, d, timeout_ms))
        log_msg(LOG_WARN, "dns: not every service answered within %llums; starting anyway",
                (unsigned long long)timeout_ms);
}

void
discovery_stop(struct discovery *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nsvcs; i++) {
        if (d->svcs[i].timer != NULL)
            event_free(d->svcs[i].timer);
    }
    /* 0: pending lookups are dropped without their callbacks, which would find s freed. */
    if (d->dns != NULL)
        evdns_base_free(d->dns, 0);
    free(d->svcs);
    runtime_unref(d->rt);
    free(d);
}

bool
discovery_last(const struct discovery *d, size_t index, double *when, enum stats_dns *result)
{
    for (size_t i = 0; d != NULL && i < d->nsvcs; i++) {
        const struct dns_svc *s = &d->svcs[i];
        if (s->index == index && s->answered) {
            *when = s->last_time;
            *result = s->last;
            return true;
        }
    }
    return false;
}
