/* Unit tests for ingress.c: Kubernetes objects, as the API server sends them, x expected routes,
 * services, servers, certificates, served Ingresses and log lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <jansson.h>

#include "ingress.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
/* Ends the lists of expect_servers(), expect_served() and assert_log(). */
#define END ((const char *)NULL)

/* Oldest first. */
#define T1 "2020-01-01T00:00:00Z"
#define T2 "2021-06-15T12:00:00Z"
#define T3 "2022-03-04T05:06:07Z"
#define T4 "2023-11-30T23:59:59Z"

/*
 * JSON fragments, written with ' for " (parse() swaps them) so that they read as kubectl prints
 * them. Commas between fragments go inside the strings: RULE(..) "," RULE(..).
 */
#define CLS "'ingressClassName':'portier'"
#define RULES(r) ",'rules':[" r "]"
#define RULE(host, paths) "{'host':'" host "','http':{'paths':[" paths "]}}"
#define RULE_ANY(paths) "{'http':{'paths':[" paths "]}}"
#define PATH(type, p, backend) "{'path':'" p "','pathType':'" type "','backend':" backend "}"
#define BNUM(svc, num) "{'service':{'name':'" svc "','port':{'number':" #num "}}}"
#define BNAME(svc, port) "{'service':{'name':'" svc "','port':{'name':'" port "'}}}"
#define DEFAULT(backend) ",'defaultBackend':" backend
#define TLS(secret) "{'hosts':['web.example.com'],'secretName':'" secret "'}"
#define SPORT(name, port, target)                                                                  \
    "{'name':'" name "','protocol':'TCP','port':" #port ",'targetPort':" #target "}"
#define SPORT_UNNAMED(port, target) "{'protocol':'TCP','port':" #port ",'targetPort':" #target "}"
#define EPORT(name, port) "{'name':'" name "','protocol':'TCP','port':" #port "}"
#define EPORT_UNNAMED(port) "{'protocol':'TCP','port':" #port "}"
#define EP(addr)                                                                                   \
    "{'addresses':['" addr "'],'conditions':{'ready':true,'serving':true,'terminating':false},"    \
    "'nodeName':'node-1','targetRef':{'kind':'Pod','namespace':'apps','name':'web-1'}}"
#define EP_NOTREADY(addr)                                                                          \
    "{'addresses':['" addr "'],'conditions':{'ready':false,'serving':true,'terminating':true}}"
#define ANN_CLASS(c) "'kubernetes.io/ingress.class':'" c "'"

#define CRT "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZmFrZQ==\n-----END CERTIFICATE-----\n"
#define KEY "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n"

/* The objects of one test, each kind NULL until something is put in it, and the last result. */
struct fixture {
    json_t *classes, *ingresses, *services, *slices, *secrets;
    struct ingress_result r;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    *state = f;
    return 0;
}

static void
fixture_clear(struct fixture *f)
{
    ingress_result_free(&f->r);
    json_decref(f->classes);
    json_decref(f->ingresses);
    json_decref(f->services);
    json_decref(f->slices);
    json_decref(f->secrets);
    memset(f, 0, sizeof(*f));
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    fixture_clear(f);
    free(f);
    return 0;
}

/* Parses text with ' for " (any JSON value); fails the test on a typo in it. */
static json_t *
parse(const char *text)
{
    char *s = strdup(text);
    json_error_t e;
    json_t *v;

    assert_non_null(s);
    for (char *p = s; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    v = json_loads(s, JSON_DECODE_ANY, &e);
    if (v == NULL)
        fail_msg("test JSON: %s at %d in %s", e.text, e.position, s);
    free(s);
    return v;
}

/* The key an object is kept under: "namespace/name", or "name" for a cluster-wide one. */
static void
object_key(const json_t *obj, char *key, size_t cap)
{
    const char *ns =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
    const char *name = json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));

    assert_non_null(name);
    if (ns != NULL)
        snprintf(key, cap, "%s/%s", ns, name);
    else
        snprintf(key, cap, "%s", name);
}

/* Adds the object printed from fmt to *set (made if NULL) under key, or its own key if NULL. */
static void __attribute__((format(printf, 3, 4)))
put(json_t **set, const char *key, const char *fmt, ...)
{
    va_list ap;
    char *text, own[512];
    int n;
    json_t *obj;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    text = malloc((size_t)n + 1);
    assert_non_null(text);
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    obj = parse(text);
    free(text);
    if (key == NULL) {
        object_key(obj, own, sizeof(own));
        key = own;
    }
    if (*set == NULL)
        *set = json_object();
    assert_non_null(*set);
    assert_int_equal(json_object_set_new(*set, key, obj), 0);
}

/* An Ingress ns/name created at ts, with annotations (JSON members, or NULL) and spec (members;
 * a leading comma, as RULES() without CLS before it leaves, is dropped). */
static void
ingress(struct fixture *f, const char *ns, const char *name, const char *ts,
        const char *annotations, const char *spec)
{
    put(&f->ingresses, NULL,
        "{'apiVersion':'networking.k8s.io/v1','kind':'Ingress','metadata':{'name':'%s',"
        "'namespace':'%s','uid':'0f1e2d3c-%s','resourceVersion':'4711','generation':1,"
        "'creationTimestamp':'%s','annotations':{%s}},'spec':{%s},"
        "'status':{'loadBalancer':{}}}",
        name, ns, name, ts, annotations != NULL ? annotations : "", spec + (spec[0] == ','));
}

/* An IngressClass; is_default is the default-class annotation's value, or NULL for none. */
static void
ingress_class(struct fixture *f, const char *name, const char *ts, const char *is_default)
{
    char ann[128] = "";

    if (is_default != NULL)
        snprintf(ann, sizeof(ann), "'%s':'%s'", INGRESS_DEFAULT_CLASS_ANNOTATION, is_default);
    put(&f->classes, NULL,
        "{'apiVersion':'networking.k8s.io/v1','kind':'IngressClass','metadata':{'name':'%s',"
        "'creationTimestamp':'%s','annotations':{%s}},'spec':{'controller':'example.com/%s'}}",
        name, ts, ann, name);
}

/* A ClusterIP Service ns/name with ports (array members). */
static void
service(struct fixture *f, const char *ns, const char *name, const char *ports)
{
    put(&f->services, NULL,
        "{'apiVersion':'v1','kind':'Service','metadata':{'name':'%s','namespace':'%s',"
        "'creationTimestamp':'" T1 "'},'spec':{'type':'ClusterIP','clusterIP':'10.43.7.7',"
        "'clusterIPs':['10.43.7.7'],'ports':[%s],'selector':{'app':'%s'}},"
        "'status':{'loadBalancer':{}}}",
        name, ns, ports, name);
}

/* An EndpointSlice ns/name of Service ns/svc (NULL: no label), of type (IPv4, IPv6, FQDN). */
static void
slice(struct fixture *f, const char *ns, const char *name, const char *svc, const char *type,
      const char *ports, const char *endpoints)
{
    char label[128] = "";

    if (svc != NULL)
        snprintf(label, sizeof(label), "'%s':'%s',", INGRESS_SLICE_SERVICE_LABEL, svc);
    put(&f->slices, NULL,
        "{'apiVersion':'discovery.k8s.io/v1','kind':'EndpointSlice','metadata':{'name':'%s',"
        "'namespace':'%s','labels':{%s'endpointslice.kubernetes.io/managed-by':"
        "'endpointslice-controller.k8s.io'}},'addressType':'%s','ports':[%s],'endpoints':[%s]}",
        name, ns, label, type, ports, endpoints);
}

/* Standard base64 with padding, as the API server writes a Secret's data; the caller frees. */
static char *
b64(const char *s)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), o = 0;
    char *out = malloc(4 * ((n + 2) / 3) + 1);

    assert_non_null(out);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(uint8_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint8_t)s[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = (char)(i + 1 < n ? tab[v >> 6 & 63] : '=');
        out[o++] = (char)(i + 2 < n ? tab[v & 63] : '=');
    }
    out[o] = '\0';
    return out;
}

/* A Secret ns/name of type with tls.crt and tls.key holding crt and key (NULL: left out). */
static void
secret(struct fixture *f, const char *ns, const char *name, const char *type, const char *crt,
       const char *key)
{
    char *c = crt != NULL ? b64(crt) : NULL, *k = key != NULL ? b64(key) : NULL;

    put(&f->secrets, NULL,
        "{'apiVersion':'v1','kind':'Secret','metadata':{'name':'%s','namespace':'%s'},"
        "'type':'%s','data':{'ca.crt':'',%s%s%s%s%s%s%s}}",
        name, ns, type, c != NULL ? "'tls.crt':'" : "", c != NULL ? c : "", c != NULL ? "'" : "",
        c != NULL && k != NULL ? "," : "", k != NULL ? "'tls.key':'" : "", k != NULL ? k : "",
        k != NULL ? "'" : "");
    free(c);
    free(k);
}

/* Checks. */

/* addr as "ip:port" or "[ip6]:port", checking that its length fits its family. */
static void
addr_text(const struct config_addr *a, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];

    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        assert_int_equal(a->len, sizeof(*sin));
        assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)));
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
        assert_int_equal(a->len, sizeof(*sin6));
        assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)));
        snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
    } else {
        snprintf(out, cap, "(family %d)", a->ss.ss_family);
    }
}

static bool
str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A prefix route's path as the router compares it: one trailing '/' ignored. */
static size_t
route_path_len(const struct config_route *rt)
{
    size_t n = strlen(rt->path);

    return !rt->exact && n > 1 && rt->path[n - 1] == '/' ? n - 1 : n;
}

/* What holds for every result, whatever the objects. */
static void
check_result(const struct ingress_result *r)
{
    const struct config_extra *x = &r->extra;

    assert_non_null(r->log);
    for (const char *l = r->log; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        if (nl == NULL) {
            fail_msg("log line without '\\n': \"%s\"", l);
            return;
        }
        if (nl == l)
            fail_msg("an empty log line");
        l = nl + 1;
    }
    for (size_t i = 0; i < x->nservices; i++) {
        const struct config_service *s = &x->services[i];
        assert_non_null(s->name);
        assert_true(s->kube);
        assert_null(s->dns);
        if (s->nservers > 0)
            assert_non_null(s->servers);
        for (size_t j = 0; j < s->nservers; j++)
            assert_non_null(s->servers[j].spec);
        for (size_t j = 0; j < i; j++)
            if (strcmp(x->services[j].name, s->name) == 0)
                fail_msg("service %s twice", s->name);
    }
    for (size_t i = 0; i < x->nroutes; i++) {
        const struct config_route *rt = &x->routes[i];
        assert_non_null(rt->path);
        assert_true(rt->path[0] == '/');
        assert_true(rt->service < x->nservices);
        assert_non_null(rt->service_name);
        assert_string_equal(rt->service_name, x->services[rt->service].name);
        if (rt->host != NULL) {
            for (const char *p = rt->host; *p != '\0'; p++)
                if (*p >= 'A' && *p <= 'Z')
                    fail_msg("route host %s not lowercase", rt->host);
            assert_int_equal(rt->wildcard, strncmp(rt->host, "*.", 2) == 0);
        } else {
            assert_false(rt->wildcard);
        }
        if (rt->one_label)
            assert_true(rt->wildcard);
        for (size_t j = 0; j < i; j++) {
            const struct config_route *o = &x->routes[j];
            size_t n = route_path_len(rt);
            if (str_eq(o->host, rt->host) && o->exact == rt->exact && route_path_len(o) == n &&
                strncmp(o->path, rt->path, n) == 0)
                fail_msg("two routes for %s %s", rt->host ? rt->host : "(any host)", rt->path);
        }
    }
    for (size_t i = 0; i < x->ncerts; i++) {
        assert_non_null(x->certs[i].cert);
        assert_non_null(x->certs[i].key);
        assert_non_null(x->certs[i].cert_pem);
        assert_non_null(x->certs[i].key_pem);
    }
    assert_true(x->default_service >= -1 && x->default_service < (int)x->nservices);
    for (size_t i = 0; i < r->nserved; i++) {
        assert_non_null(r->served[i]);
        if (i > 0 && strcmp(r->served[i - 1], r->served[i]) >= 0)
            fail_msg("served not sorted: %s before %s", r->served[i - 1], r->served[i]);
    }
}

/* Whether a and b are the same translation, field by field. */
static void
check_same(const struct ingress_result *a, const struct ingress_result *b)
{
    assert_string_equal(a->log, b->log);
    assert_int_equal(a->nserved, b->nserved);
    for (size_t i = 0; i < a->nserved; i++)
        assert_string_equal(a->served[i], b->served[i]);
    assert_int_equal(a->extra.default_service, b->extra.default_service);
    assert_int_equal(a->extra.nroutes, b->extra.nroutes);
    for (size_t i = 0; i < a->extra.nroutes; i++) {
        const struct config_route *p = &a->extra.routes[i], *q = &b->extra.routes[i];
        assert_true(str_eq(p->host, q->host));
        assert_string_equal(p->path, q->path);
        assert_int_equal(p->exact, q->exact);
        assert_int_equal(p->service, q->service);
    }
    assert_int_equal(a->extra.nservices, b->extra.nservices);
    for (size_t i = 0; i < a->extra.nservices; i++) {
        const struct config_service *p = &a->extra.services[i], *q = &b->extra.services[i];
        assert_string_equal(p->name, q->name);
        assert_int_equal(p->nservers, q->nservers);
        for (size_t j = 0; j < p->nservers; j++)
            assert_string_equal(p->servers[j].spec, q->servers[j].spec);
    }
    assert_int_equal(a->extra.ncerts, b->extra.ncerts);
    for (size_t i = 0; i < a->extra.ncerts; i++) {
        assert_string_equal(a->extra.certs[i].cert, b->extra.certs[i].cert);
        assert_string_equal(a->extra.certs[i].cert_pem, b->extra.certs[i].cert_pem);
    }
}

/*
 * Translates f's objects for class "portier" into f->r (freeing the last result), into a result
 * full of garbage (the contract zeroes it), twice (pure: the same both times), checking that the
 * objects are left as they were and what holds for every result.
 */
static void
translate(struct fixture *f)
{
    json_t **sets[] = {&f->classes, &f->ingresses, &f->services, &f->slices, &f->secrets};
    json_t *before[N(sets)];
    struct ingress_objects o = {f->classes, f->ingresses, f->services, f->slices, f->secrets};
    struct ingress_result again;

    for (size_t i = 0; i < N(sets); i++)
        before[i] = *sets[i] != NULL ? json_deep_copy(*sets[i]) : NULL;
    ingress_result_free(&f->r);
    memset(&f->r, 0xa5, sizeof(f->r));
    assert_int_equal(ingress_translate(&o, "portier", &f->r), 0);
    check_result(&f->r);
    memset(&again, 0x5a, sizeof(again));
    assert_int_equal(ingress_translate(&o, "portier", &again), 0);
    check_same(&f->r, &again);
    ingress_result_free(&again);
    for (size_t i = 0; i < N(sets); i++) {
        if (before[i] == NULL)
            continue;
        if (!json_equal(before[i], *sets[i]))
            fail_msg("ingress_translate() changed its input");
        json_decref(before[i]);
    }
}

/* The index of the route for host (NULL: any host), path and exactness, or -1. */
static int
find_route(const struct ingress_result *r, const char *host, const char *path, bool exact)
{
    for (size_t i = 0; i < r->extra.nroutes; i++) {
        const struct config_route *rt = &r->extra.routes[i];
        if (str_eq(rt->host, host) && strcmp(rt->path, path) == 0 && rt->exact == exact)
            return (int)i;
    }
    return -1;
}

static const struct config_route *
route(const struct ingress_result *r, const char *host, const char *path, bool exact)
{
    int i = find_route(r, host, path, exact);

    if (i < 0)
        fail_msg("no route %s %.80s%s; log:\n%s", host != NULL ? host : "(any host)", path,
                 exact ? " (exact)" : "", r->log);
    return &r->extra.routes[i];
}

/* The service route (host, path, exact) goes to; fails if there is no such route. */
static const struct config_service *
route_service(const struct ingress_result *r, const char *host, const char *path, bool exact)
{
    return &r->extra.services[route(r, host, path, exact)->service];
}

static const struct config_service *
find_service(const struct ingress_result *r, const char *name)
{
    for (size_t i = 0; i < r->extra.nservices; i++)
        if (strcmp(r->extra.services[i].name, name) == 0)
            return &r->extra.services[i];
    return NULL;
}

static const struct config_cert *
find_cert(const struct ingress_result *r, const char *name)
{
    for (size_t i = 0; i < r->extra.ncerts; i++)
        if (strcmp(r->extra.certs[i].cert, name) == 0)
            return &r->extra.certs[i];
    return NULL;
}

/* s's servers are exactly the "ip:port" / "[ip6]:port" that follow, in order, then NULL. */
static void
expect_servers(const struct config_service *s, ...)
{
    va_list ap;
    const char *want;
    size_t n = 0;
    char got[INET6_ADDRSTRLEN + 16];

    assert_non_null(s);
    va_start(ap, s);
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (n >= s->nservers)
            fail_msg("%s: %zu servers, want more (%s)", s->name, s->nservers, want);
        addr_text(&s->servers[n], got, sizeof(got));
        if (strcmp(got, want) != 0)
            fail_msg("%s: server %zu is %s, want %s", s->name, n, got, want);
        assert_string_equal(s->servers[n].spec, want);
        n++;
    }
    va_end(ap);
    if (n != s->nservers) {
        addr_text(&s->servers[n], got, sizeof(got));
        fail_msg("%s: %zu servers, want %zu (extra: %s)", s->name, s->nservers, n, got);
    }
}

/* Whether one line of log holds each of the n strings in want. */
static bool
log_has(const char *log, const char *const *want, size_t n)
{
    for (const char *l = log; *l != '\0';) {
        const char *nl = strchr(l, '\n');
        size_t len = nl != NULL ? (size_t)(nl - l) : strlen(l);
        size_t k = 0;

        for (; k < n; k++) {
            size_t sl = strlen(want[k]);
            bool found = false;
            for (size_t i = 0; !found && i + sl <= len; i++)
                found = memcmp(l + i, want[k], sl) == 0;
            if (!found)
                break;
        }
        if (k == n)
            return true;
        l += nl != NULL ? len + 1 : len;
    }
    return false;
}

/* One line of r's log holds each of the strings that follow (then NULL, at most 8). */
static void
assert_log(const struct ingress_result *r, ...)
{
    const char *want[8];
    size_t n = 0;
    va_list ap;

    va_start(ap, r);
    while (n < N(want) && (want[n] = va_arg(ap, const char *)) != NULL)
        n++;
    va_end(ap);
    assert_true(n > 0);
    if (!log_has(r->log, want, n))
        fail_msg("no log line with \"%s\"%s%s; log:\n%s", want[0], n > 1 ? " and \"" : "",
                 n > 1 ? want[1] : "", r->log);
}

static void
assert_no_log(const struct ingress_result *r, const char *s)
{
    if (strstr(r->log, s) != NULL)
        fail_msg("log mentions \"%s\":\n%s", s, r->log);
}

static void
assert_log_empty(const struct ingress_result *r)
{
    if (r->log[0] != '\0')
        fail_msg("want no log; got:\n%s", r->log);
}

/* r served exactly the "namespace/name"s that follow (then NULL), in this order. */
static void
expect_served(const struct ingress_result *r, ...)
{
    va_list ap;
    const char *want;
    size_t n = 0;

    va_start(ap, r);
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (n >= r->nserved)
            fail_msg("served %zu, want %s too", r->nserved, want);
        if (strcmp(r->served[n], want) != 0)
            fail_msg("served[%zu] is %s, want %s", n, r->served[n], want);
        n++;
    }
    va_end(ap);
    if (n != r->nserved)
        fail_msg("served %zu, want %zu (extra: %s)", r->nserved, n, r->served[n]);
}

/* The usual backend: Service apps/web port 80 ("http") -> pods on 8080. */
static void
web_backend(struct fixture *f)
{
    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-x7k2p", "web", "IPv4", EPORT("http", 8080), EP("10.42.0.11"));
}

#define WEB_RULE RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80)))

/* Empty input and freeing. */

static void
test_no_objects(void **state)
{
    struct fixture *f = *state;

    translate(f);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_int_equal(f->r.extra.nservices, 0);
    assert_int_equal(f->r.extra.ncerts, 0);
    assert_int_equal(f->r.extra.default_service, -1);
    assert_int_equal(f->r.nserved, 0);
    assert_log_empty(&f->r);

    /* Empty sets are the same as none. */
    f->classes = json_object();
    f->ingresses = json_object();
    f->services = json_object();
    f->slices = json_object();
    f->secrets = json_object();
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_int_equal(f->r.extra.default_service, -1);
    assert_int_equal(f->r.nserved, 0);
    assert_log_empty(&f->r);
}

static void
test_result_free(void **state)
{
    struct fixture *f = *state;
    struct ingress_result zero;

    memset(&zero, 0, sizeof(zero));
    ingress_result_free(&zero);
    ingress_result_free(&zero);
    ingress_result_free(NULL);

    web_backend(f);
    secret(f, "apps", "web-tls", "kubernetes.io/tls", CRT, KEY);
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80))) "," RULE(
                "bad host", PATH("Prefix", "/", BNUM("web", 80))))
                DEFAULT(BNUM("web", 80)) ",'tls':[" TLS("web-tls") "]");
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 1);
    assert_int_equal(f->r.extra.ncerts, 1);
    assert_int_equal(f->r.nserved, 1);
    assert_true(f->r.log[0] != '\0');
    ingress_result_free(&f->r);
    /* Zeroed: a second free, and the teardown's, do nothing. */
    assert_null(f->r.extra.routes);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_null(f->r.served);
    assert_int_equal(f->r.nserved, 0);
    assert_null(f->r.log);
    ingress_result_free(&f->r);
}

/* Class selection. */

static void
test_class_name(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "apps", "ours", T1, NULL,
            CLS RULES(RULE("ours.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "apps", "theirs", T1, NULL,
            "'ingressClassName':'nginx'" RULES(
                RULE("theirs.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "apps", "upper", T1, NULL,
            "'ingressClassName':'Portier'" RULES(
                RULE("upper.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, "apps/ours", END);
    assert_int_equal(f->r.extra.nroutes, 1);
    expect_servers(route_service(&f->r, "ours.example.com", "/", false), "10.42.0.11:8080", END);
    /* Another controller's Ingress is not a problem of ours. */
    assert_log_empty(&f->r);
}

static void
test_class_annotation(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "apps", "ann-ours", T1, ANN_CLASS("portier"),
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "apps", "ann-theirs", T1, ANN_CLASS("nginx"),
            RULES(RULE("b.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    /* spec.ingressClassName comes first, the annotation only without it. */
    ingress(f, "apps", "name-ours-ann-theirs", T1, ANN_CLASS("nginx"),
            CLS RULES(RULE("c.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "apps", "name-theirs-ann-ours", T1, ANN_CLASS("portier"),
            "'ingressClassName':'nginx'" RULES(
                RULE("d.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, "apps/ann-ours", "apps/name-ours-ann-theirs", END);
    assert_int_equal(f->r.extra.nroutes, 2);
    route(&f->r, "a.example.com", "/", false);
    route(&f->r, "c.example.com", "/", false);
    assert_log_empty(&f->r);
}

static void
test_class_default_ours(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress_class(f, "portier", T1, "true");
    ingress_class(f, "nginx", T1, NULL);
    ingress(f, "apps", "classless", T2, NULL,
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    /* A class named, by field or annotation, is not the default's to take. */
    ingress(f, "apps", "nginx", T2, NULL,
            "'ingressClassName':'nginx'" RULES(
                RULE("b.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "apps", "nginx-ann", T2, ANN_CLASS("nginx"),
            RULES(RULE("c.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, "apps/classless", END);
    assert_int_equal(f->r.extra.nroutes, 1);
    route(&f->r, "a.example.com", "/", false);
    assert_log_empty(&f->r);
}

static void
test_class_default_theirs(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress_class(f, "portier", T1, NULL);
    ingress_class(f, "nginx", T1, "true");
    ingress(f, "apps", "classless", T2, NULL,
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, END);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_int_equal(f->r.extra.default_service, -1);
}

static void
test_class_no_default(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "apps", "classless", T2, NULL,
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80))))
                DEFAULT(BNUM("web", 80)));
    /* No IngressClass at all. */
    translate(f);
    expect_served(&f->r, END);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_int_equal(f->r.extra.default_service, -1);
    /* Ours, but not the default; "false" is not "true". */
    ingress_class(f, "portier", T1, "false");
    ingress_class(f, "nginx", T1, NULL);
    translate(f);
    expect_served(&f->r, END);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_int_equal(f->r.extra.default_service, -1);
}

static void
test_class_default_oldest(void **state)
{
    struct fixture *f = *state;

    /* Two defaults: the oldest is the default, here ours. */
    web_backend(f);
    ingress_class(f, "nginx", T2, "true");
    ingress_class(f, "portier", T1, "true");
    ingress(f, "apps", "classless", T3, NULL,
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, "apps/classless", END);
    route(&f->r, "a.example.com", "/", false);

    /* Here theirs. */
    fixture_clear(f);
    web_backend(f);
    ingress_class(f, "portier", T2, "true");
    ingress_class(f, "nginx", T1, "true");
    ingress(f, "apps", "classless", T3, NULL,
            RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, END);
    assert_int_equal(f->r.extra.nroutes, 0);
}

/* Hosts. */

static void
test_hosts(void **state)
{
    struct fixture *f = *state;
    const struct config_route *rt;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("App.Example.COM", PATH("Prefix", "/", BNUM("web", 80))) ","
                      RULE("*.a.com", PATH("Prefix", "/", BNUM("web", 80))) ","
                      RULE("*.B.Example.com", PATH("Prefix", "/w", BNUM("web", 80))) ","
                      RULE_ANY(PATH("Prefix", "/any", BNUM("web", 80)))));
    /* clang-format on */
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 4);
    assert_log_empty(&f->r);

    rt = route(&f->r, "app.example.com", "/", false);
    assert_false(rt->wildcard);
    assert_false(rt->one_label);
    rt = route(&f->r, "*.a.com", "/", false);
    assert_true(rt->wildcard);
    assert_true(rt->one_label);
    rt = route(&f->r, "*.b.example.com", "/w", false);
    assert_true(rt->wildcard);
    assert_true(rt->one_label);
    rt = route(&f->r, NULL, "/any", false);
    assert_false(rt->wildcard);
    assert_false(rt->one_label);
    /* Rules in order. */
    assert_string_equal(f->r.extra.routes[0].host, "app.example.com");
    assert_string_equal(f->r.extra.routes[1].host, "*.a.com");
    assert_null(f->r.extra.routes[3].host);
}

/* The API server omits an empty host; one sent as "" is the same: any host. */
static void
test_host_empty(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "apps", "web", T1, NULL, CLS RULES(RULE("", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 1);
    route(&f->r, NULL, "/", false);
}

static void
test_hosts_invalid(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "bad host.example.com", /* a space */
        "a/b.example.com",      /* a slash */
        "foo.*.example.com",    /* '*' only as the whole first label */
        "*",                    /* a wildcard needs a suffix */
        "*a.example.com",
        "**.example.com",
        "web.example.com:8080", /* a host, not an authority */
        "caf\xc3\xa9.example",  /* not ASCII */
    };
    char rules[4096], spec[4096 + 512], longhost[300];
    size_t used = 0;

    memset(longhost, 'a', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = '\0';
    for (size_t i = 0; i < 8; i++)
        longhost[i * 30 + 20] = '.';
    web_backend(f);
    for (size_t i = 0; i <= N(bad); i++) {
        used += (size_t)snprintf(
            rules + used, sizeof(rules) - used,
            "{'host':'%s','http':{'paths':[" PATH("Prefix", "/bad", BNUM("web", 80)) "]}},",
            i < N(bad) ? bad[i] : longhost);
        assert_true(used < sizeof(rules));
    }
    snprintf(spec, sizeof(spec),
             CLS ",'rules':[%s" RULE("good.example.com", PATH("Prefix", "/", BNUM("web", 80))) "]",
             rules);
    ingress(f, "apps", "web", T1, NULL, spec);
    translate(f);
    /* Each bad rule left out with its line; the good rule and the Ingress stay. */
    assert_int_equal(f->r.extra.nroutes, 1);
    route(&f->r, "good.example.com", "/", false);
    expect_served(&f->r, "apps/web", END);
    /* One line each, naming the host (but the non-ASCII one, which a log may escape). */
    {
        size_t lines = 0;
        for (const char *p = f->r.log; *p != '\0'; p++)
            lines += *p == '\n';
        assert_int_equal(lines, N(bad) + 1);
    }
    for (size_t i = 0; i < N(bad) - 1; i++)
        assert_log(&f->r, "ingress apps/web", bad[i], END);
    assert_log(&f->r, "ingress apps/web", "aaaaaaaaaaaaaaaaaaaa.aaaa", END);
}

/* Paths. */

static void
test_path_types(void **state)
{
    struct fixture *f = *state;
    const struct config_route *rt;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("p.example.com",
                           PATH("Prefix", "/api", BNUM("web", 80)) ","
                           PATH("Prefix", "/static/", BNUM("web", 80)) ","
                           PATH("Exact", "/login/", BNUM("web", 80)) ","
                           PATH("Exact", "/logout", BNUM("web", 80)) ","
                           PATH("ImplementationSpecific", "/impl", BNUM("web", 80))) ","
                      RULE("empty.example.com",
                           PATH("ImplementationSpecific", "", BNUM("web", 80))) ","
                      RULE("nopath.example.com",
                           "{'pathType':'ImplementationSpecific','backend':" BNUM("web", 80) "}")));
    /* clang-format on */
    translate(f);
    assert_log_empty(&f->r);
    assert_int_equal(f->r.extra.nroutes, 7);
    route(&f->r, "p.example.com", "/api", false);
    route(&f->r, "p.example.com", "/static/", false);
    route(&f->r, "p.example.com", "/login/", true);
    route(&f->r, "p.example.com", "/logout", true);
    route(&f->r, "p.example.com", "/impl", false);
    route(&f->r, "empty.example.com", "/", false);
    route(&f->r, "nopath.example.com", "/", false);
    /* Paths in order. */
    rt = f->r.extra.routes;
    assert_string_equal(rt[0].path, "/api");
    assert_string_equal(rt[1].path, "/static/");
    assert_string_equal(rt[2].path, "/login/");
    assert_string_equal(rt[3].path, "/logout");
    assert_string_equal(rt[4].path, "/impl");
}

static void
test_paths_invalid(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("p.example.com",
                           PATH("Prefix", "api", BNUM("web", 80)) ","
                           PATH("Exact", "login", BNUM("web", 80)) ","
                           PATH("ImplementationSpecific", "impl", BNUM("web", 80)) ","
                           PATH("Prefix", "", BNUM("web", 80)) ","
                           PATH("Regex", "/re.*", BNUM("web", 80)) ","
                           PATH("Prefix", "/good", BNUM("web", 80)))));
    /* clang-format on */
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 1);
    route(&f->r, "p.example.com", "/good", false);
    assert_log(&f->r, "ingress apps/web", "api", END);
    assert_log(&f->r, "ingress apps/web", "login", END);
    assert_log(&f->r, "ingress apps/web", "impl", END);
    assert_log(&f->r, "ingress apps/web", "Regex", END);
    /* Five lines: a Prefix path must be absolute too, even empty. */
    {
        size_t lines = 0;
        for (const char *p = f->r.log; *p != '\0'; p++)
            lines += *p == '\n';
        assert_int_equal(lines, 5);
    }
}

/* Backends. */

static void
test_backend_port_number(void **state)
{
    struct fixture *f = *state;
    const struct config_service *s;

    /* Port 80 is named "http" in the Service, so the slice's "http" port is the pods'. */
    service(f, "apps", "web", SPORT("metrics", 9090, 9090) "," SPORT("http", 80, 'web'));
    slice(f, "apps", "web-x7k2p", "web", "IPv4", EPORT("metrics", 9090) "," EPORT("http", 8080),
          EP("10.42.0.11") "," EP("10.42.1.12"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Prefix", "/metrics", BNUM("web", 9090)))));
    /* clang-format on */
    translate(f);
    assert_log_empty(&f->r);
    s = route_service(&f->r, "web.example.com", "/", false);
    assert_string_equal(s->name, "apps/web:80");
    assert_true(s->kube);
    expect_servers(s, "10.42.0.11:8080", "10.42.1.12:8080", END);
    s = route_service(&f->r, "web.example.com", "/metrics", false);
    assert_string_equal(s->name, "apps/web:9090");
    expect_servers(s, "10.42.0.11:9090", "10.42.1.12:9090", END);
    assert_int_equal(f->r.extra.nservices, 2);
}

static void
test_backend_port_name(void **state)
{
    struct fixture *f = *state;
    const struct config_service *s;

    service(f, "apps", "web", SPORT("metrics", 9090, 9090) "," SPORT("http", 80, 8080));
    slice(f, "apps", "web-x7k2p", "web", "IPv4", EPORT("http", 8080) "," EPORT("metrics", 9091),
          EP("10.42.0.11"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/", BNAME("web", "http")) ","
                           PATH("Prefix", "/metrics", BNAME("web", "metrics")))));
    /* clang-format on */
    translate(f);
    assert_log_empty(&f->r);
    s = route_service(&f->r, "web.example.com", "/", false);
    assert_string_equal(s->name, "apps/web:http");
    expect_servers(s, "10.42.0.11:8080", END);
    s = route_service(&f->r, "web.example.com", "/metrics", false);
    assert_string_equal(s->name, "apps/web:metrics");
    expect_servers(s, "10.42.0.11:9091", END);
}

/* A Service's only port may be unnamed: the API server omits the name, the slice has "". */
static void
test_backend_unnamed_port(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "one", SPORT_UNNAMED(80, 8080));
    slice(f, "apps", "one-abcde", "one", "IPv4", EPORT("", 8080), EP("10.42.0.21"));
    service(f, "apps", "two", SPORT("", 80, 8081));
    slice(f, "apps", "two-abcde", "two", "IPv4", EPORT("", 8081), EP("10.42.0.22"));
    service(f, "apps", "three", SPORT("", 80, 8082));
    slice(f, "apps", "three-abcde", "three", "IPv4", EPORT_UNNAMED(8082), EP("10.42.0.23"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/one", BNUM("one", 80)) ","
                           PATH("Prefix", "/two", BNUM("two", 80)) ","
                           PATH("Prefix", "/three", BNUM("three", 80)))));
    /* clang-format on */
    translate(f);
    assert_log_empty(&f->r);
    expect_servers(route_service(&f->r, "web.example.com", "/one", false), "10.42.0.21:8080", END);
    expect_servers(route_service(&f->r, "web.example.com", "/two", false), "10.42.0.22:8081", END);
    expect_servers(route_service(&f->r, "web.example.com", "/three", false), "10.42.0.23:8082",
                   END);
}

static void
test_backend_ready(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "web", SPORT("http", 80, 8080));
    /* clang-format off */
    slice(f, "apps", "web-x7k2p", "web", "IPv4", EPORT("http", 8080),
          EP("10.42.0.1") ","
          EP_NOTREADY("10.42.0.2") ","
          "{'addresses':['10.42.0.3']},"
          "{'addresses':['10.42.0.4'],'conditions':{}},"
          "{'addresses':['10.42.0.5'],'conditions':{'ready':null}},"
          "{'addresses':['10.42.0.6'],'conditions':{'serving':false,'terminating':true}},"
          "{'addresses':['10.42.0.7'],'conditions':{'ready':false}},"
          EP("10.42.0.8"));
    /* clang-format on */
    ingress(f, "apps", "web", T1, NULL, CLS RULES(RULE_ANY(PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_servers(route_service(&f->r, NULL, "/", false), "10.42.0.1:8080", "10.42.0.3:8080",
                   "10.42.0.4:8080", "10.42.0.5:8080", "10.42.0.6:8080", "10.42.0.8:8080", END);
}

static void
test_backend_slices_merged(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "web", SPORT("http", 80, 8080));
    service(f, "apps", "api", SPORT("http", 80, 8080));
    /* Put in the sets out of key order: servers come in slice-key order. */
    slice(f, "apps", "web-zzzzz", "web", "IPv4", EPORT("http", 8080),
          EP("10.42.3.1") "," EP("10.42.3.2"));
    slice(f, "apps", "web-mmmmm", "web", "IPv4", EPORT("http", 8080), EP("10.42.2.1"));
    slice(f, "apps", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), EP("10.42.1.1"));
    /* Not web's: another Service, web in another namespace, no label, a manual one for "web2". */
    slice(f, "apps", "api-aaaaa", "api", "IPv4", EPORT("http", 8080), EP("10.42.9.1"));
    slice(f, "other", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), EP("10.42.9.2"));
    slice(f, "apps", "web-nolabel", NULL, "IPv4", EPORT("http", 8080), EP("10.42.9.3"));
    slice(f, "apps", "web2-aaaaa", "web2", "IPv4", EPORT("http", 8080), EP("10.42.9.4"));
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    assert_log_empty(&f->r);
    expect_servers(route_service(&f->r, "web.example.com", "/", false), "10.42.1.1:8080",
                   "10.42.2.1:8080", "10.42.3.1:8080", "10.42.3.2:8080", END);
}

static void
test_backend_ipv6(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-v6", "web", "IPv6", EPORT("http", 8080),
          EP("fd00:10:42::11") "," EP("fd00:10:42::12"));
    service(f, "apps", "dual", SPORT("http", 80, 8080));
    slice(f, "apps", "dual-a4", "dual", "IPv4", EPORT("http", 8080), EP("10.42.0.31"));
    slice(f, "apps", "dual-b6", "dual", "IPv6", EPORT("http", 8080), EP("fd00:10:42::31"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Prefix", "/dual", BNUM("dual", 80)))));
    /* clang-format on */
    translate(f);
    expect_servers(route_service(&f->r, "web.example.com", "/", false), "[fd00:10:42::11]:8080",
                   "[fd00:10:42::12]:8080", END);
    expect_servers(route_service(&f->r, "web.example.com", "/dual", false), "10.42.0.31:8080",
                   "[fd00:10:42::31]:8080", END);
}

static void
test_backend_fqdn_ignored(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-aaaaa", "web", "FQDN", EPORT("http", 8080), EP("web-1.example.com"));
    slice(f, "apps", "web-bbbbb", "web", "IPv4", EPORT("http", 8080), EP("10.42.0.41"));
    service(f, "apps", "ext", SPORT("http", 80, 8080));
    slice(f, "apps", "ext-aaaaa", "ext", "FQDN", EPORT("http", 8080), EP("ext.example.com"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Prefix", "/ext", BNUM("ext", 80)))));
    /* clang-format on */
    translate(f);
    expect_servers(route_service(&f->r, "web.example.com", "/", false), "10.42.0.41:8080", END);
    expect_servers(route_service(&f->r, "web.example.com", "/ext", false), END);
}

/* A Service, its endpoints or its port missing: the route stays, to an empty service (503). */
static void
test_backend_missing(void **state)
{
    struct fixture *f = *state;
    const struct config_service *s;

    service(f, "apps", "noslices", SPORT("http", 80, 8080));
    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), EP("10.42.0.51"));
    service(f, "apps", "allsick", SPORT("http", 80, 8080));
    slice(f, "apps", "allsick-a", "allsick", "IPv4", EPORT("http", 8080),
          EP_NOTREADY("10.42.0.52"));
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/gone", BNUM("gone", 80)) ","
                           PATH("Prefix", "/noslices", BNUM("noslices", 80)) ","
                           PATH("Prefix", "/port81", BNUM("web", 81)) ","
                           PATH("Prefix", "/noname", BNAME("web", "grpc")) ","
                           PATH("Prefix", "/allsick", BNUM("allsick", 80)) ","
                           PATH("Prefix", "/ok", BNUM("web", 80)))));
    /* clang-format on */
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 6);
    expect_served(&f->r, "apps/web", END);
    s = route_service(&f->r, "web.example.com", "/gone", false);
    assert_string_equal(s->name, "apps/gone:80");
    assert_true(s->kube);
    expect_servers(s, END);
    s = route_service(&f->r, "web.example.com", "/noslices", false);
    assert_string_equal(s->name, "apps/noslices:80");
    expect_servers(s, END);
    s = route_service(&f->r, "web.example.com", "/port81", false);
    assert_string_equal(s->name, "apps/web:81");
    expect_servers(s, END);
    s = route_service(&f->r, "web.example.com", "/noname", false);
    assert_string_equal(s->name, "apps/web:grpc");
    expect_servers(s, END);
    s = route_service(&f->r, "web.example.com", "/allsick", false);
    expect_servers(s, END);
    expect_servers(route_service(&f->r, "web.example.com", "/ok", false), "10.42.0.51:8080", END);
}

static void
test_backend_shared(void **state)
{
    struct fixture *f = *state;
    const struct config_route *a, *b, *c;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "one", T1, NULL,
            CLS RULES(RULE("one.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Exact", "/x", BNUM("web", 80))))
            DEFAULT(BNUM("web", 80)));
    ingress(f, "apps", "two", T2, NULL,
            CLS RULES(RULE("two.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Prefix", "/named", BNAME("web", "http")))));
    /* clang-format on */
    translate(f);
    assert_log_empty(&f->r);
    a = route(&f->r, "one.example.com", "/", false);
    b = route(&f->r, "one.example.com", "/x", true);
    c = route(&f->r, "two.example.com", "/", false);
    assert_int_equal(a->service, b->service);
    assert_int_equal(a->service, c->service);
    assert_int_equal(f->r.extra.default_service, (int)a->service);
    /* The port as written names the service: 80 and "http" are two, with the same servers. */
    assert_int_equal(f->r.extra.nservices, 2);
    expect_servers(find_service(&f->r, "apps/web:80"), "10.42.0.11:8080", END);
    expect_servers(find_service(&f->r, "apps/web:http"), "10.42.0.11:8080", END);
}

static void
test_backend_namespaces(void **state)
{
    struct fixture *f = *state;

    service(f, "team-a", "web", SPORT("http", 80, 8080));
    slice(f, "team-a", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), EP("10.42.10.1"));
    service(f, "team-b", "web", SPORT("http", 80, 9000));
    slice(f, "team-b", "web-aaaaa", "web", "IPv4", EPORT("http", 9000), EP("10.42.20.1"));
    ingress(f, "team-a", "web", T1, NULL,
            CLS RULES(RULE("a.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "team-b", "web", T1, NULL,
            CLS RULES(RULE("b.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    ingress(f, "team-c", "web", T1, NULL,
            CLS RULES(RULE("c.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    expect_served(&f->r, "team-a/web", "team-b/web", "team-c/web", END);
    expect_servers(route_service(&f->r, "a.example.com", "/", false), "10.42.10.1:8080", END);
    expect_servers(route_service(&f->r, "b.example.com", "/", false), "10.42.20.1:9000", END);
    assert_string_equal(route_service(&f->r, "a.example.com", "/", false)->name, "team-a/web:80");
    assert_string_equal(route_service(&f->r, "b.example.com", "/", false)->name, "team-b/web:80");
    /* team-c has no Service web: not team-a's or team-b's. */
    assert_string_equal(route_service(&f->r, "c.example.com", "/", false)->name, "team-c/web:80");
    expect_servers(route_service(&f->r, "c.example.com", "/", false), END);
}

/* A resource backend (spec.rules[].http.paths[].backend.resource) is not for a proxy. */
static void
test_backend_resource(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(
        f, "apps", "web", T1, NULL,
        CLS RULES(RULE("web.example.com",
                       PATH("Prefix", "/icons",
                            "{'resource':{'apiGroup':'k8s.example.com','kind':'StorageBucket',"
                            "'name':'icon-assets'}}") "," PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 1);
    route(&f->r, "web.example.com", "/", false);
    assert_log(&f->r, "ingress apps/web", END);
    expect_served(&f->r, "apps/web", END);
}

/* Default backends. */

static void
test_default_backend(void **state)
{
    struct fixture *f = *state;
    const struct config_service *s;

    web_backend(f);
    ingress(f, "apps", "fallback", T1, NULL, CLS DEFAULT(BNUM("web", 80)));
    translate(f);
    assert_log_empty(&f->r);
    expect_served(&f->r, "apps/fallback", END);
    assert_int_equal(f->r.extra.nroutes, 0);
    assert_true(f->r.extra.default_service >= 0);
    s = &f->r.extra.services[f->r.extra.default_service];
    assert_string_equal(s->name, "apps/web:80");
    expect_servers(s, "10.42.0.11:8080", END);

    /* A default backend whose Service is missing is still the default: 503, not 404. */
    fixture_clear(f);
    ingress(f, "apps", "fallback", T1, NULL, CLS DEFAULT(BNAME("gone", "http")));
    translate(f);
    assert_true(f->r.extra.default_service >= 0);
    s = &f->r.extra.services[f->r.extra.default_service];
    assert_string_equal(s->name, "apps/gone:http");
    expect_servers(s, END);
}

static void
test_default_backend_conflict(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "old", SPORT("http", 80, 8080));
    service(f, "apps", "new", SPORT("http", 80, 8080));
    /* The newer first in key order: age decides, not keys. */
    ingress(f, "apps", "a-newer", T2, NULL, CLS DEFAULT(BNUM("new", 80)));
    ingress(f, "apps", "z-older", T1, NULL, CLS DEFAULT(BNUM("old", 80)));
    /* Not ours: its default backend is nobody's concern here. */
    ingress(f, "apps", "ancient", "2000-01-01T00:00:00Z", NULL,
            "'ingressClassName':'nginx'" DEFAULT(BNUM("new", 80)));
    translate(f);
    assert_true(f->r.extra.default_service >= 0);
    assert_string_equal(f->r.extra.services[f->r.extra.default_service].name, "apps/old:80");
    assert_log(&f->r, "apps/a-newer", "apps/z-older", END);
    assert_no_log(&f->r, "ancient");
    expect_served(&f->r, "apps/a-newer", "apps/z-older", END);

    /* Same age: namespace/name decides. */
    fixture_clear(f);
    service(f, "beta", "web", SPORT("http", 80, 8080));
    service(f, "alpha", "web", SPORT("http", 80, 8080));
    ingress(f, "beta", "a", T1, NULL, CLS DEFAULT(BNUM("web", 80)));
    ingress(f, "alpha", "z", T1, NULL, CLS DEFAULT(BNUM("web", 80)));
    translate(f);
    assert_true(f->r.extra.default_service >= 0);
    assert_string_equal(f->r.extra.services[f->r.extra.default_service].name, "alpha/web:80");
    assert_log(&f->r, "alpha/z", "beta/a", END);
}

/* Conflicts between Ingresses. */

static void
test_conflict_older_wins(void **state)
{
    struct fixture *f = *state;
    const struct config_service *s;

    service(f, "apps", "old", SPORT("http", 80, 8080));
    slice(f, "apps", "old-aaaaa", "old", "IPv4", EPORT("http", 8080), EP("10.42.0.61"));
    service(f, "apps", "new", SPORT("http", 80, 8080));
    slice(f, "apps", "new-aaaaa", "new", "IPv4", EPORT("http", 8080), EP("10.42.0.62"));
    /* clang-format off */
    ingress(f, "apps", "a-newer", T3, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/api", BNUM("new", 80)) ","
                           PATH("Prefix", "/new-only", BNUM("new", 80)))));
    /* clang-format on */
    ingress(f, "apps", "z-older", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/api", BNUM("old", 80)))));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 2);
    s = route_service(&f->r, "web.example.com", "/api", false);
    assert_string_equal(s->name, "apps/old:80");
    expect_servers(s, "10.42.0.61:8080", END);
    /* The loser keeps its other paths and is still served. */
    assert_string_equal(route_service(&f->r, "web.example.com", "/new-only", false)->name,
                        "apps/new:80");
    expect_served(&f->r, "apps/a-newer", "apps/z-older", END);
    assert_log(&f->r, "apps/a-newer", "apps/z-older", END);
    /* Oldest Ingress's routes first. */
    assert_string_equal(f->r.extra.routes[0].path, "/api");
    assert_string_equal(f->r.extra.routes[0].service_name, "apps/old:80");
    assert_string_equal(f->r.extra.routes[1].path, "/new-only");
}

static void
test_conflict_same_age(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    service(f, "beta", "web", SPORT("http", 80, 8080));
    service(f, "alpha", "web", SPORT("http", 80, 8080));
    ingress(f, "beta", "a", T2, NULL,
            CLS RULES(RULE("web.example.com", PATH("Exact", "/x", BNUM("web", 80)))));
    ingress(f, "alpha", "z", T2, NULL,
            CLS RULES(RULE("web.example.com", PATH("Exact", "/x", BNUM("web", 80)))));
    ingress(f, "apps", "b", T2, NULL,
            CLS RULES(RULE_ANY(PATH("Prefix", "/", BNAME("web", "http")))));
    ingress(f, "apps", "a", T2, NULL, CLS RULES(RULE_ANY(PATH("Prefix", "/", BNUM("web", 80)))));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 2);
    assert_string_equal(route(&f->r, "web.example.com", "/x", true)->service_name, "alpha/web:80");
    assert_log(&f->r, "alpha/z", "beta/a", END);
    /* Two "any host" rules conflict too. */
    assert_string_equal(route(&f->r, NULL, "/", false)->service_name, "apps/web:80");
    assert_log(&f->r, "apps/a", "apps/b", END);
}

static void
test_conflict_kinds(void **state)
{
    struct fixture *f = *state;

    service(f, "apps", "old", SPORT("http", 80, 8080));
    service(f, "apps", "new", SPORT("http", 80, 8080));
    /* clang-format off */
    ingress(f, "apps", "old", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/api", BNUM("old", 80)) ","
                           PATH("Prefix", "/docs", BNUM("old", 80)) ","
                           PATH("Prefix", "/img", BNUM("old", 80)))));
    /* clang-format on */
    /* clang-format off */
    ingress(f, "apps", "new", T2, NULL,
            CLS RULES(RULE("web.example.com",
                           /* Exact and Prefix on one path are two routes. */
                           PATH("Exact", "/api", BNUM("new", 80)) ","
                           /* "/docs/" is "/docs" as Prefix (element-wise): taken. */
                           PATH("Prefix", "/docs/", BNUM("new", 80)) ","
                           PATH("ImplementationSpecific", "/img", BNUM("new", 80))) ","
                      RULE("*.example.com", PATH("Prefix", "/api", BNUM("new", 80))) ","
                      RULE("other.example.com", PATH("Prefix", "/api", BNUM("new", 80)))));
    /* clang-format on */
    translate(f);
    assert_string_equal(route(&f->r, "web.example.com", "/api", false)->service_name,
                        "apps/old:80");
    assert_string_equal(route(&f->r, "web.example.com", "/api", true)->service_name, "apps/new:80");
    assert_string_equal(route(&f->r, "web.example.com", "/docs", false)->service_name,
                        "apps/old:80");
    assert_int_equal(find_route(&f->r, "web.example.com", "/docs/", false), -1);
    /* ImplementationSpecific is Prefix here: the same route, taken. */
    assert_string_equal(route(&f->r, "web.example.com", "/img", false)->service_name,
                        "apps/old:80");
    /* Other hosts, a wildcard over the same suffix included, are no conflict. */
    assert_string_equal(route(&f->r, "*.example.com", "/api", false)->service_name, "apps/new:80");
    assert_string_equal(route(&f->r, "other.example.com", "/api", false)->service_name,
                        "apps/new:80");
    assert_int_equal(f->r.extra.nroutes, 6);
    assert_log(&f->r, "apps/new", "apps/old", "/docs", END);
    assert_log(&f->r, "apps/new", "apps/old", "/img", END);
}

/* A path left out claims nothing: the newer Ingress's good one is served, not neither. A path to a
 * missing Service is not left out (it routes, to 503): it still wins. */
static void
test_conflict_left_out_claims_nothing(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "old", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/icons", "{'resource':{'apiGroup':'k8s.example.com',"
                                                    "'kind':'Bucket','name':'icons'}}") ","
                           PATH("Prefix", "/noport", "{'service':{'name':'web','port':{}}}") ","
                           PATH("Prefix", "/gone", BNUM("gone", 80)))));
    ingress(f, "apps", "new", T2, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/icons", BNUM("web", 80)) ","
                           PATH("Prefix", "/noport", BNUM("web", 80)) ","
                           PATH("Prefix", "/gone", BNUM("web", 80)))));
    /* clang-format on */
    translate(f);
    assert_string_equal(route(&f->r, "web.example.com", "/icons", false)->service_name,
                        "apps/web:80");
    assert_string_equal(route(&f->r, "web.example.com", "/noport", false)->service_name,
                        "apps/web:80");
    assert_string_equal(route(&f->r, "web.example.com", "/gone", false)->service_name,
                        "apps/gone:80");
    assert_int_equal(f->r.extra.nroutes, 3);
}

/* Paths are compared whole, however long: two that differ only past 600 bytes are two routes. */
static void
test_long_paths(void **state)
{
    struct fixture *f = *state;
    char a[1100], b[1100], spec[3000];

    memset(a, 'x', sizeof(a) - 1);
    a[0] = '/';
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(b));
    a[sizeof(a) - 2] = 'a';
    b[sizeof(b) - 2] = 'b';
    web_backend(f);
    snprintf(spec, sizeof(spec),
             CLS ",'rules':[{'host':'web.example.com','http':{'paths':["
                 "{'path':'%s','pathType':'Prefix','backend':" BNUM("web", 80) "}]}}]",
             a);
    ingress(f, "apps", "a", T1, NULL, spec);
    snprintf(spec, sizeof(spec),
             CLS ",'rules':[{'host':'web.example.com','http':{'paths':["
                 "{'path':'%s','pathType':'Prefix','backend':" BNUM("web", 80) "}]}}]",
             b);
    ingress(f, "apps", "b", T2, NULL, spec);
    translate(f);
    route(&f->r, "web.example.com", a, false);
    route(&f->r, "web.example.com", b, false);
    assert_int_equal(f->r.extra.nroutes, 2);
    assert_log_empty(&f->r);
}

static void
test_route_order(void **state)
{
    struct fixture *f = *state;
    static const char *const want[][2] = {
        {"first.example.com", "/1"},  {"first.example.com", "/2"}, {"first2.example.com", "/3"},
        {"second.example.com", "/4"}, {"third.example.com", "/5"},
    };

    web_backend(f);
    ingress(f, "apps", "a-third", T3, NULL,
            CLS RULES(RULE("third.example.com", PATH("Prefix", "/5", BNUM("web", 80)))));
    /* clang-format off */
    ingress(f, "apps", "b-first", T1, NULL,
            CLS RULES(RULE("first.example.com",
                           PATH("Prefix", "/1", BNUM("web", 80)) ","
                           PATH("Prefix", "/2", BNUM("web", 80))) ","
                      RULE("first2.example.com", PATH("Prefix", "/3", BNUM("web", 80)))));
    /* clang-format on */
    ingress(f, "apps", "c-second", T2, NULL,
            CLS RULES(RULE("second.example.com", PATH("Prefix", "/4", BNUM("web", 80)))));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, N(want));
    for (size_t i = 0; i < N(want); i++) {
        assert_string_equal(f->r.extra.routes[i].host, want[i][0]);
        assert_string_equal(f->r.extra.routes[i].path, want[i][1]);
    }
    expect_served(&f->r, "apps/a-third", "apps/b-first", "apps/c-second", END);
}

/* TLS. */

static void
test_tls(void **state)
{
    struct fixture *f = *state;
    const struct config_cert *c;

    web_backend(f);
    secret(f, "apps", "web-tls", "kubernetes.io/tls", CRT, KEY);
    /* Same name, other namespace, and one nobody names: not loaded. */
    secret(f, "other", "web-tls", "kubernetes.io/tls", "other crt", "other key");
    secret(f, "apps", "unused-tls", "kubernetes.io/tls", "unused crt", "unused key");
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80)))) ",'tls':[" TLS(
                "web-tls") "]");
    translate(f);
    assert_log_empty(&f->r);
    assert_int_equal(f->r.extra.ncerts, 1);
    c = find_cert(&f->r, "secret apps/web-tls");
    assert_non_null(c);
    assert_string_equal(c->cert_pem, CRT);
    assert_string_equal(c->key_pem, KEY);
    route(&f->r, "web.example.com", "/", false);
}

/* Decoding: every padding, and bytes PEM does not hold. */
static void
test_tls_base64(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    secret(f, "apps", "pad2", "kubernetes.io/tls", "a", "ab");
    secret(f, "apps", "pad0", "kubernetes.io/tls", "abc", "\x01\xff\x80?>~");
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80)))) ",'tls':[" TLS(
                "pad2") "," TLS("pad0") "]");
    translate(f);
    assert_log_empty(&f->r);
    assert_int_equal(f->r.extra.ncerts, 2);
    assert_string_equal(find_cert(&f->r, "secret apps/pad2")->cert_pem, "a");
    assert_string_equal(find_cert(&f->r, "secret apps/pad2")->key_pem, "ab");
    assert_string_equal(find_cert(&f->r, "secret apps/pad0")->cert_pem, "abc");
    assert_string_equal(find_cert(&f->r, "secret apps/pad0")->key_pem, "\x01\xff\x80?>~");
}

static void
test_tls_shared_secret(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    service(f, "team-b", "web", SPORT("http", 80, 8080));
    slice(f, "team-b", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), EP("10.42.20.1"));
    secret(f, "apps", "wild-tls", "kubernetes.io/tls", CRT, KEY);
    secret(f, "team-b", "wild-tls", "kubernetes.io/tls", "team-b crt", "team-b key");
    ingress(f, "apps", "one", T1, NULL,
            CLS RULES(RULE("one.example.com", PATH("Prefix", "/", BNUM("web", 80)))) ",'tls':[" TLS(
                "wild-tls") "," TLS("wild-tls") "]");
    ingress(f, "apps", "two", T2, NULL,
            CLS RULES(RULE("two.example.com", PATH("Prefix", "/", BNUM("web", 80)))) ",'tls':[" TLS(
                "wild-tls") "]");
    ingress(f, "team-b", "three", T2, NULL,
            CLS RULES(RULE("three.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)))) ",'tls':[" TLS("wild-tls") "]");
    translate(f);
    assert_log_empty(&f->r);
    assert_int_equal(f->r.extra.ncerts, 2);
    assert_string_equal(find_cert(&f->r, "secret apps/wild-tls")->cert_pem, CRT);
    assert_string_equal(find_cert(&f->r, "secret team-b/wild-tls")->cert_pem, "team-b crt");
}

static void
test_tls_bad(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {"gone-tls",  "opaque-tls",    "nokey-tls",
                                      "nocrt-tls", "badb64-tls",    "nodata-tls",
                                      "types-tls", "elsewhere-tls", "datastr-tls"};

    web_backend(f);
    secret(f, "apps", "good-tls", "kubernetes.io/tls", CRT, KEY);
    secret(f, "apps", "opaque-tls", "Opaque", CRT, KEY);
    secret(f, "apps", "nokey-tls", "kubernetes.io/tls", CRT, NULL);
    secret(f, "apps", "nocrt-tls", "kubernetes.io/tls", NULL, KEY);
    put(&f->secrets, NULL,
        "{'apiVersion':'v1','kind':'Secret','metadata':{'name':'badb64-tls','namespace':'apps'},"
        "'type':'kubernetes.io/tls','data':{'tls.crt':'not base64!','tls.key':'KioqKg=='}}");
    put(&f->secrets, NULL,
        "{'apiVersion':'v1','kind':'Secret','metadata':{'name':'nodata-tls','namespace':'apps'},"
        "'type':'kubernetes.io/tls'}");
    put(&f->secrets, NULL,
        "{'apiVersion':'v1','kind':'Secret','metadata':{'name':'types-tls','namespace':'apps'},"
        "'type':'kubernetes.io/tls','data':{'tls.crt':1,'tls.key':null}}");
    put(&f->secrets, NULL,
        "{'apiVersion':'v1','kind':'Secret','metadata':{'name':'datastr-tls','namespace':'apps'},"
        "'type':'kubernetes.io/tls','data':'tls.crt'}");
    secret(f, "other", "elsewhere-tls", "kubernetes.io/tls", CRT, KEY);
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com", PATH("Prefix", "/", BNUM("web", 80))))
            ",'tls':[" TLS("gone-tls") "," TLS("opaque-tls") "," TLS("nokey-tls") ","
                       TLS("nocrt-tls") "," TLS("badb64-tls") "," TLS("nodata-tls") ","
                       TLS("types-tls") "," TLS("elsewhere-tls") "," TLS("datastr-tls") ","
                       TLS("good-tls") "]");
    /* clang-format on */
    translate(f);
    assert_int_equal(f->r.extra.ncerts, 1);
    assert_non_null(find_cert(&f->r, "secret apps/good-tls"));
    route(&f->r, "web.example.com", "/", false);
    expect_served(&f->r, "apps/web", END);
    for (size_t i = 0; i < N(bad); i++)
        assert_log(&f->r, "ingress apps/web", bad[i], END);
}

/* Served. */

static void
test_served_sorted(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "zeta", "web", T1, NULL, CLS RULES(WEB_RULE));
    ingress(f, "apps", "web", T2, NULL, CLS DEFAULT(BNUM("web", 80)));
    ingress(f, "apps", "api", T3, ANN_CLASS("portier"), RULES(WEB_RULE));
    ingress(f, "apps", "nginx", T1, NULL, "'ingressClassName':'nginx'" RULES(WEB_RULE));
    ingress(f, "apps-2", "a", T4, NULL, CLS RULES(WEB_RULE));
    translate(f);
    expect_served(&f->r, "apps-2/a", "apps/api", "apps/web", "zeta/web", END);
}

/* An Ingress of our class is served even when none of its rules could be. */
static void
test_served_all_rules_bad(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    ingress(f, "apps", "good", T1, NULL, CLS RULES(WEB_RULE));
    ingress(f, "apps", "bad", T2, NULL,
            CLS RULES(RULE("bad host", PATH("Prefix", "/", BNUM("web", 80))) "," RULE(
                "web.example.com", PATH("Prefix", "nope", BNUM("web", 80)))));
    ingress(f, "apps", "loser", T3, NULL, CLS RULES(WEB_RULE));
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 1);
    expect_served(&f->r, "apps/bad", "apps/good", "apps/loser", END);
}

/* Robustness: whatever the objects hold, no crash, and what cannot serve is left out. */

struct bad_case {
    const char *json; /* an Ingress's spec members, or with full the whole object */
    bool full;
    signed char route; /* the route bad.example.com /bad: 1 kept, 0 left out, -1 either */
    bool logged;       /* a line names apps/bad */
};

#define BAD_PATH PATH("Prefix", "/bad", BNUM("web", 80))
#define BADP(p) CLS RULES(RULE("bad.example.com", p))
#define BADB(b) BADP(PATH("Prefix", "/bad", b))
#define BADPORT(port) BADB("{'service':{'name':'web','port':" port "}}")
#define GOOD_RULES RULES(RULE("bad.example.com", PATH("Prefix", "/bad", BNUM("web", 80))))

static const struct bad_case bad_cases[] = {
    /* The object itself. */
    {"null", true, 0, false},
    {"[]", true, 0, false},
    {"'apps/bad'", true, 0, false},
    {"42", true, 0, false},
    {"{}", true, 0, false},
    {"{'metadata':'x','spec':{" CLS GOOD_RULES "}}", true, -1, false},
    {"{'metadata':{'name':1,'namespace':[]},'spec':{" CLS GOOD_RULES "}}", true, -1, false},
    {"{'spec':{" CLS GOOD_RULES "}}", true, -1, false},
    {"{'metadata':{'namespace':'apps','name':'bad','annotations':{" ANN_CLASS("portier") "}}}",
     true, 0, false},
    {"{'metadata':{'namespace':'apps','name':'bad','annotations':'x'},'spec':{" CLS GOOD_RULES "}}",
     true, 1, false},
    {"{'metadata':{'namespace':'apps','name':'bad','annotations':{'kubernetes.io/ingress.class':"
     "1}},'spec':{'rules':[]}}",
     true, 0, false},
    {"{'metadata':{'namespace':'apps','name':'bad','creationTimestamp':1},'spec':{" CLS GOOD_RULES
     "}}",
     true, 1, false},
    {"{'metadata':{'namespace':'apps','name':'bad','creationTimestamp':'yesterday'},'spec':{" CLS
         GOOD_RULES "}}",
     true, 1, false},
    {"{'metadata':{'namespace':'apps','name':'bad'},'spec':'x'}", true, 0, false},
    {"{'metadata':{'namespace':'apps','name':'bad'},'spec':null}", true, 0, false},
    /* spec */
    {"'ingressClassName':1" GOOD_RULES, false, -1, false},
    {"'ingressClassName':null" GOOD_RULES, false, 0, false},
    {CLS ",'rules':null", false, 0, false},
    {CLS ",'rules':{}", false, 0, true},
    {CLS ",'rules':'x'", false, 0, true},
    {CLS ",'rules':[null,1,'x',[]]", false, 0, true},
    {CLS ",'rules':[{'host':'bad.example.com'}]", false, 0, false},
    {CLS ",'rules':[{'host':'bad.example.com','http':null}]", false, 0, false},
    {CLS ",'rules':[{'host':'bad.example.com','http':[]}]", false, 0, true},
    {CLS ",'rules':[{'host':'bad.example.com','http':'x'}]", false, 0, true},
    {CLS ",'rules':[{'host':'bad.example.com','http':{}}]", false, 0, false},
    {CLS ",'rules':[{'host':'bad.example.com','http':{'paths':'x'}}]", false, 0, true},
    {CLS ",'rules':[{'host':'bad.example.com','http':{'paths':{}}}]", false, 0, true},
    {CLS ",'rules':[{'host':'bad.example.com','http':{'paths':1}}]", false, 0, true},
    {BADP("null,1,'x'"), false, 0, true},
    {CLS ",'rules':[{'host':1,'http':{'paths':[" BAD_PATH "]}}]", false, 0, true},
    {CLS ",'rules':[{'host':['bad.example.com'],'http':{'paths':[" BAD_PATH "]}}]", false, 0, true},
    /* paths */
    {BADP("{'path':1,'pathType':'Prefix','backend':" BNUM("web", 80) "}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':1,'backend':" BNUM("web", 80) "}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':'prefix','backend':" BNUM("web", 80) "}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':'Prefix'}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':'Prefix','backend':null}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':'Prefix','backend':'web'}"), false, 0, true},
    {BADP("{'path':'/bad','pathType':'Prefix','backend':{}}"), false, 0, true},
    {BADP("{'path':'/bad','backend':" BNUM("web", 80) "}"), false, -1, false},
    /* backends */
    {BADB("{'service':'web'}"), false, 0, true},
    {BADB("{'service':null}"), false, 0, true},
    {BADB("{'service':{'port':{'number':80}}}"), false, 0, true},
    {BADB("{'service':{'name':1,'port':{'number':80}}}"), false, 0, true},
    {BADB("{'service':{'name':'','port':{'number':80}}}"), false, 0, true},
    {BADB("{'service':{'name':'web'}}"), false, 0, true},
    {BADPORT("{}"), false, 0, true},
    {BADPORT("null"), false, 0, true},
    {BADPORT("80"), false, 0, true},
    {BADPORT("'http'"), false, 0, true},
    {BADPORT("{'number':'80'}"), false, 0, true},
    {BADPORT("{'number':80.5}"), false, 0, true},
    {BADPORT("{'number':1e300}"), false, 0, true},
    {BADPORT("{'number':0}"), false, 0, true},
    {BADPORT("{'number':-1}"), false, 0, true},
    {BADPORT("{'number':65536}"), false, 0, true},
    {BADPORT("{'number':4294967376}"), false, 0, true}, /* 2^32 + 80 */
    {BADPORT("{'number':true}"), false, 0, true},
    {BADPORT("{'name':1}"), false, 0, true},
    {BADPORT("{'name':''}"), false, 0, true},
    {BADPORT("{'name':null,'number':null}"), false, 0, true},
    /* tls and the default backend: the rules stay */
    {CLS GOOD_RULES ",'tls':'x'", false, 1, true},
    {CLS GOOD_RULES ",'tls':[1,null]", false, 1, true},
    {CLS GOOD_RULES ",'tls':[{'secretName':1}]", false, 1, true},
    {CLS GOOD_RULES ",'tls':[{'hosts':['bad.example.com']}]", false, 1, false},
    {CLS GOOD_RULES ",'tls':[{'secretName':''}]", false, 1, false},
    {CLS GOOD_RULES ",'defaultBackend':'x'", false, 1, true},
    {CLS GOOD_RULES ",'defaultBackend':{}", false, 1, true},
    {CLS GOOD_RULES ",'defaultBackend':{'service':{'name':'web','port':{}}}", false, 1, true},
    {CLS GOOD_RULES ",'defaultBackend':{'service':{'name':'web','port':{'number':'80'}}}", false, 1,
     true},
};

static void
test_robust_ingresses(void **state)
{
    struct fixture *f = *state;
    size_t failed = 0;

    for (size_t i = 0; i < N(bad_cases); i++) {
        const struct bad_case *c = &bad_cases[i];
        const char *why = NULL;
        int got;

        fixture_clear(f);
        web_backend(f);
        secret(f, "apps", "web-tls", "kubernetes.io/tls", CRT, KEY);
        ingress(f, "apps", "good", T1, NULL,
                CLS RULES(RULE("good.example.com", PATH("Prefix", "/", BNUM("web", 80)))));
        if (c->full)
            put(&f->ingresses, "apps/bad", "%s", c->json);
        else
            ingress(f, "apps", "bad", T2, NULL, c->json);
        translate(f);
        got = find_route(&f->r, "bad.example.com", "/bad", false) >= 0;
        if (find_route(&f->r, "good.example.com", "/", false) < 0)
            why = "the good route is gone";
        else if (c->route == 0 && find_route(&f->r, NULL, "/bad", false) >= 0)
            why = "the rule became one for any host";
        else if (c->route >= 0 && got != c->route)
            why = got ? "route kept" : "route left out";
        else if (c->logged && strstr(f->r.log, "ingress apps/bad") == NULL)
            why = "no log line for apps/bad";
        else if (!c->logged && c->route == 0 && f->r.extra.default_service >= 0)
            why = "a default service from nowhere";
        if (why == NULL && c->route == 1)
            expect_servers(route_service(&f->r, "bad.example.com", "/bad", false),
                           "10.42.0.11:8080", END);
        if (why != NULL) {
            print_error("case %zu (%s): %s; log:\n%s", i, c->json, why, f->r.log);
            failed++;
        }
    }
    if (failed > 0)
        fail_msg("%zu of %zu cases failed", failed, N(bad_cases));
}

/* Services, slices, classes and sets that are not what the API server sends. */
static void
test_robust_other_objects(void **state)
{
    struct fixture *f = *state;
    static const char *const sets[] = {"null", "[]", "'x'", "1"};

    /* What cannot be a server is left out; the rest of the slice stays. */
    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-1", "web", "IPv4", EPORT("http", 8080), EP("10.42.0.1"));
    put(&f->slices, NULL,
        "{'metadata':{'name':'web-2','namespace':'apps','labels':{'%s':'web'}},"
        "'addressType':'IPv4','ports':[" EPORT("http", 8080) "],'endpoints':'x'}",
        INGRESS_SLICE_SERVICE_LABEL);
    slice(f, "apps", "web-3", "web", "IPv4", EPORT("http", 8080),
          "null,1,{},{'addresses':'x'},{'addresses':[1]},{'addresses':['not-an-ip']},"
          "{'addresses':['10.42.0.256']},{'addresses':[]},{'addresses':null}," EP("10.42.0.4"));
    put(&f->slices, NULL,
        "{'metadata':{'name':'web-4','namespace':'apps','labels':{'%s':'web'}},"
        "'addressType':'IPv4','ports':'x','endpoints':[" EP("10.42.0.5") "]}",
        INGRESS_SLICE_SERVICE_LABEL);
    slice(f, "apps", "web-5", "web", "IPv4", "{'name':'http','port':'8080'}", EP("10.42.0.6"));
    slice(f, "apps", "web-6", "web", "IPv4", EPORT("http", 0), EP("10.42.0.7"));
    slice(f, "apps", "web-7", "web", "IPv4", EPORT("http", 70000), EP("10.42.0.8"));
    slice(f, "apps", "web-8", "web", "IPv4", "null,1," EPORT("http", 8080), EP("10.42.0.9"));
    put(&f->slices, NULL,
        "{'metadata':{'name':'web-9','namespace':'apps','labels':'x'},'addressType':'IPv4',"
        "'ports':[" EPORT("http", 8080) "],'endpoints':[" EP("10.42.0.10") "]}");
    put(&f->slices, "apps/web-91", "[]");
    put(&f->slices, "apps/web-92", "{'metadata':{'labels':{'%s':'web'}}}",
        INGRESS_SLICE_SERVICE_LABEL);
    /* Services whose ports cannot be read: no servers. */
    put(&f->services, NULL, "{'metadata':{'name':'s1','namespace':'apps'},'spec':'x'}");
    put(&f->services, NULL, "{'metadata':{'name':'s2','namespace':'apps'},'spec':{'ports':'x'}}");
    put(&f->services, NULL,
        "{'metadata':{'name':'s3','namespace':'apps'},'spec':{'ports':[null,{'name':'http',"
        "'port':'80'}]}}");
    put(&f->services, NULL, "{'metadata':{'name':'s4','namespace':'apps'}}");
    put(&f->services, "apps/s5", "'x'");
    for (int i = 1; i <= 5; i++) {
        char sname[16];
        snprintf(sname, sizeof(sname), "s%d", i);
        slice(f, "apps", sname, sname, "IPv4", EPORT("http", 8080), EP("10.42.9.9"));
    }
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("web.example.com",
                           PATH("Prefix", "/", BNUM("web", 80)) ","
                           PATH("Prefix", "/s1", BNUM("s1", 80)) ","
                           PATH("Prefix", "/s2", BNUM("s2", 80)) ","
                           PATH("Prefix", "/s3", BNUM("s3", 80)) ","
                           PATH("Prefix", "/s4", BNUM("s4", 80)) ","
                           PATH("Prefix", "/s5", BNUM("s5", 80)))));
    /* clang-format on */
    translate(f);
    expect_servers(route_service(&f->r, "web.example.com", "/", false), "10.42.0.1:8080",
                   "10.42.0.4:8080", "10.42.0.9:8080", END);
    for (int i = 1; i <= 5; i++) {
        char path[16];
        snprintf(path, sizeof(path), "/s%d", i);
        expect_servers(route_service(&f->r, "web.example.com", path, false), END);
    }

    /* Broken IngressClasses make no default. */
    fixture_clear(f);
    web_backend(f);
    put(&f->classes, "portier", "'x'");
    put(&f->classes, "a", "{'metadata':{'name':'a','annotations':'x'}}");
    put(&f->classes, "b", "{'metadata':{'name':'b','annotations':{'%s':true}}}",
        INGRESS_DEFAULT_CLASS_ANNOTATION);
    put(&f->classes, "c", "{'metadata':'c'}");
    put(&f->classes, "d", "[]");
    ingress(f, "apps", "classless", T1, NULL, RULES(WEB_RULE));
    translate(f);
    expect_served(&f->r, END);

    /* Mixed-up types in the slice: an IPv6 address in an IPv4 slice and back. */
    fixture_clear(f);
    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-1", "web", "IPv4", EPORT("http", 8080), EP("fd00::1") "," EP("10.0.0.1"));
    slice(f, "apps", "web-2", "web", "IPv6", EPORT("http", 8080), EP("10.0.0.2") "," EP("fd00::2"));
    put(&f->slices, NULL,
        "{'metadata':{'name':'web-3','namespace':'apps','labels':{'%s':'web'}},"
        "'ports':[" EPORT("http", 8080) "],'endpoints':[" EP("10.0.0.3") "]}",
        INGRESS_SLICE_SERVICE_LABEL);
    ingress(f, "apps", "web", T1, NULL, CLS RULES(WEB_RULE));
    translate(f);
    route(&f->r, "web.example.com", "/", false);

    /* Sets that are not objects: nothing of that kind. */
    for (size_t i = 0; i < N(sets); i++) {
        struct ingress_objects o;
        struct ingress_result r;
        json_t *bad = parse(sets[i]);

        fixture_clear(f);
        web_backend(f);
        ingress(f, "apps", "web", T1, NULL, CLS RULES(WEB_RULE));
        o = (struct ingress_objects){bad, f->ingresses, bad, bad, bad};
        assert_int_equal(ingress_translate(&o, "portier", &r), 0);
        check_result(&r);
        expect_servers(route_service(&r, "web.example.com", "/", false), END);
        ingress_result_free(&r);
        o = (struct ingress_objects){NULL, bad, f->services, f->slices, NULL};
        assert_int_equal(ingress_translate(&o, "portier", &r), 0);
        check_result(&r);
        assert_int_equal(r.extra.nroutes, 0);
        ingress_result_free(&r);
        json_decref(bad);
    }
}

/* Text from the objects cannot forge log lines: one problem, one line. */
static void
test_log_injection(void **state)
{
    struct fixture *f = *state;

    web_backend(f);
    /* clang-format off */
    ingress(f, "apps", "web", T1, NULL,
            CLS RULES(RULE("x\\ningress apps/forged: host ok\\r",
                           PATH("Prefix", "/", BNUM("web", 80))) ","
                      RULE("web.example.com",
                           PATH("Prefix", "a\\ningress apps/forged: path", BNUM("web", 80))))
            ",'tls':[" TLS("a\\ningress apps/forged: secret") "]");
    /* clang-format on */
    translate(f);
    assert_int_equal(f->r.extra.nroutes, 0);
    /* check_result() saw that every line ends in '\n'. */
    for (const char *l = f->r.log, *nl; (nl = strchr(l, '\n')) != NULL; l = nl + 1) {
        if (strncmp(l, "ingress apps/forged", 19) == 0)
            fail_msg("a forged log line; log:\n%s", f->r.log);
        if (memchr(l, '\r', (size_t)(nl - l)) != NULL)
            fail_msg("a CR in the log:\n%s", f->r.log);
    }
    assert_log(&f->r, "ingress apps/web", END);
}

/* Many Ingresses and endpoints: the sizes a cluster has, under ASan. */
static void
test_many(void **state)
{
    struct fixture *f = *state;
    char eps[64 * 200], spec[512], name[32];
    size_t used = 0;

    for (int i = 0; i < 64; i++) {
        used += (size_t)snprintf(eps + used, sizeof(eps) - used, "%s" EP("10.42.%d.%d"),
                                 i ? "," : "", i / 8, i % 8 + 1);
        assert_true(used < sizeof(eps));
    }
    service(f, "apps", "web", SPORT("http", 80, 8080));
    slice(f, "apps", "web-aaaaa", "web", "IPv4", EPORT("http", 8080), eps);
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "web-%03d", i);
        snprintf(
            spec, sizeof(spec),
            CLS ",'rules':[{'host':'h%d.example.com','http':{'paths':[" PATH(
                "Prefix", "/", BNUM("web", 80)) "," PATH("Exact", "/x", BNUM("web", 80)) "]}}]",
            i % 200);
        ingress(f, i % 2 ? "apps" : "more", name, T1, NULL, spec);
    }
    translate(f);
    assert_int_equal(f->r.nserved, 300);
    assert_int_equal(f->r.extra.nroutes, 400);
    assert_int_equal(f->r.extra.nservices, 2); /* apps/web:80, more/web:80 */
    assert_int_equal(route_service(&f->r, "h7.example.com", "/", false)->nservers, 64);
}

int
main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_no_objects),
        T(test_result_free),
        T(test_class_name),
        T(test_class_annotation),
        T(test_class_default_ours),
        T(test_class_default_theirs),
        T(test_class_no_default),
        T(test_class_default_oldest),
        T(test_hosts),
        T(test_host_empty),
        T(test_hosts_invalid),
        T(test_path_types),
        T(test_paths_invalid),
        T(test_backend_port_number),
        T(test_backend_port_name),
        T(test_backend_unnamed_port),
        T(test_backend_ready),
        T(test_backend_slices_merged),
        T(test_backend_ipv6),
        T(test_backend_fqdn_ignored),
        T(test_backend_missing),
        T(test_backend_shared),
        T(test_backend_namespaces),
        T(test_backend_resource),
        T(test_default_backend),
        T(test_default_backend_conflict),
        T(test_conflict_older_wins),
        T(test_conflict_same_age),
        T(test_conflict_kinds),
        T(test_conflict_left_out_claims_nothing),
        T(test_long_paths),
        T(test_route_order),
        T(test_tls),
        T(test_tls_base64),
        T(test_tls_shared_secret),
        T(test_tls_bad),
        T(test_served_sorted),
        T(test_served_all_rules_bad),
        T(test_robust_ingresses),
        T(test_robust_other_objects),
        T(test_log_injection),
        T(test_many),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
