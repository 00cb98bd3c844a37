/* Ingress objects to routes and services: the rules of networking.k8s.io/v1, applied to the
 * objects a provider keeps. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingress.h"

/* An Ingress of our class, with what orders it among the others. */
struct served {
    const char *key;     /* "namespace/name" */
    const char *ns;      /* metadata.namespace, or the key's first part */
    const char *created; /* metadata.creationTimestamp (RFC 3339 sorts as text), or "" */
    const json_t *obj;
};

/* Who claimed a host and path first, so a later claim can be told who won. */
struct claim {
    char *id; /* owned: "host\npath\nexact" */
    const char *owner;
};

/* One translation's working state. */
struct tr {
    const struct ingress_objects *o;
    struct ingress_result *out;
    struct claim *claims;
    size_t nclaims;
    const char *default_owner; /* the Ingress whose defaultBackend is the default, or NULL */
    char **secrets;            /* the Secret keys loaded (or refused) already */
    size_t nsecrets;
    size_t loglen, logcap;
    bool nomem;
};

static void *
grow(struct tr *t, void *arr, size_t n, size_t size)
{
    void *p;

    if (t->nomem)
        return NULL;
    /* Room for 4, then doubled each time n reaches a power of two: 4, 8, 16... */
    if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
        return arr;
    p = realloc(arr, (n == 0 ? 4 : 2 * n) * size);
    if (p == NULL)
        t->nomem = true;
    return p;
}

static char *
sdup(struct tr *t, const char *s)
{
    char *p;

    if (t->nomem)
        return NULL;
    if ((p = strdup(s)) == NULL)
        t->nomem = true;
    return p;
}

/* Appends one line to the log. */
__attribute__((format(printf, 2, 3))) static void
logline(struct tr *t, const char *fmt, ...)
{
    va_list ap;
    char line[1024];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || t->nomem)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    /* Names from the API may hold anything: one problem stays one line. */
    for (int i = 0; i < n; i++) {
        if ((unsigned char)line[i] < ' ' || line[i] == 0x7f)
            line[i] = '?';
    }
    line[n++] = '\n';
    if (t->loglen + (size_t)n + 1 > t->logcap) {
        size_t cap = (t->logcap ? t->logcap : 256);
        while (cap < t->loglen + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(t->out->log, cap);
        if (p == NULL) {
            t->nomem = true;
            return;
        }
        t->out->log = p;
        t->logcap = cap;
    }
    memcpy(t->out->log + t->loglen, line, (size_t)n);
    t->loglen += (size_t)n;
    t->out->log[t->loglen] = '\0';
}

/* JSON helpers: NULL-safe lookups that return NULL for a missing or mistyped member. */

static const json_t *
member(const json_t *obj, const char *name)
{
    return json_is_object(obj) ? json_object_get(obj, name) : NULL;
}

static const char *
str_at(const json_t *obj, const char *name)
{
    return json_string_value(member(obj, name));
}

static const char *
annotation(const json_t *obj, const char *name)
{
    return str_at(member(member(obj, "metadata"), "annotations"), name);
}

static const char *
created(const json_t *obj)
{
    const char *c = str_at(member(obj, "metadata"), "creationTimestamp");

    return c != NULL ? c : "";
}

/* The older of two objects: creationTimestamp, then key. */
static int
older_cmp(const char *ca, const char *ka, const char *cb, const char *kb)
{
    int c = strcmp(ca, cb);

    return c != 0 ? c : strcmp(ka, kb);
}

static int
served_cmp(const void *pa, const void *pb)
{
    const struct served *a = pa, *b = pb;

    return older_cmp(a->created, a->key, b->created, b->key);
}

static int
str_cmp(const void *pa, const void *pb)
{
    return strcmp(*(char *const *)pa, *(char *const *)pb);
}

/* The IngressClass marked default (the oldest of those marked), or NULL. */
static const char *
default_class(const json_t *classes)
{
    const char *key, *best = NULL, *best_created = NULL;
    json_t *obj;

    json_object_foreach ((json_t *)classes, key, obj) {
        const char *mark = annotation(obj, INGRESS_DEFAULT_CLASS_ANNOTATION);
        if (mark == NULL || strcmp(mark, "true") != 0)
            continue;
        if (best == NULL || older_cmp(created(obj), key, best_created, best) < 0) {
            best = key;
            best_created = created(obj);
        }
    }
    return best;
}

static bool
ours(const json_t *ing, const char *ingress_class, const char *dflt)
{
    const char *cls = str_at(member(ing, "spec"), "ingressClassName");

    if (cls == NULL)
        cls = annotation(ing, "kubernetes.io/ingress.class");
    if (cls == NULL)
        cls = dflt;
    return cls != NULL && strcmp(cls, ingress_class) == 0;
}

/*
 * Names and paths
 */

/* A rule's host: a DNS name, or "*." and one; lowercased into out. Returns false if invalid. */
static bool
host_ok(const char *host, char *out, size_t cap)
{
    size_t len = strlen(host), i = 0;

    if (len == 0 || len > 253 || len >= cap)
        return false;
    if (len > 2 && host[0] == '*' && host[1] == '.')
        i = 2;
    for (size_t j = 0; j < len; j++) {
        char c = host[j];
        if (j >= i && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
        out[j] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    return out[i] != '.' && out[len - 1] != '.' && strstr(out, "..") == NULL;
}

/* What the router refuses in a path: it must start with '/', without spaces, controls, ? or #. */
static bool
path_ok(const char *path)
{
    if (path[0] != '/')
        return false;
    for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#')
            return false;
    }
    return true;
}

/* Records who claims host + path; returns the older claimant when it is taken already. */
static const char *
claim(struct tr *t, const char *host, const char *path, bool exact, const char *owner)
{
    size_t plen = strlen(path), hlen = host != NULL ? strlen(host) : 0;
    char *id;

    /* Prefix paths compare as the router does: a trailing '/' ignored. */
    while (!exact && plen > 1 && path[plen - 1] == '/')
        plen--;
    if (t->nomem || (id = malloc(hlen + plen + 4)) == NULL) {
        t->nomem = true;
        return NULL;
    }
    snprintf(id, hlen + plen + 4, "%s\n%.*s\n%d", host != NULL ? host : "", (int)plen, path, exact);
    for (size_t i = 0; i < t->nclaims; i++) {
        if (strcmp(t->claims[i].id, id) == 0) {
            free(id);
            return t->claims[i].owner;
        }
    }
    struct claim *c = grow(t, t->claims, t->nclaims, sizeof(*t->claims));
    if (c == NULL) {
        free(id);
        return NULL;
    }
    t->claims = c;
    c[t->nclaims].id = id;
    c[t->nclaims++].owner = owner;
    return NULL;
}

/*
 * Backends: Service -> EndpointSlices -> servers
 */

/* A backend's port name, or NULL when it names its port by number (an empty name is none). */
static const char *
port_name_of(const json_t *port)
{
    const char *name = str_at(port, "name");

    return name != NULL && name[0] != '\0' ? name : NULL;
}

/* The Service port a backend names: its name ("" when unnamed) through *port_name. */
static bool
service_port(const json_t *svc, const json_t *port, const char **port_name)
{
    const json_t *ports = member(member(svc, "spec"), "ports"), *p;
    const char *want = port_name_of(port);
    json_int_t num = json_integer_value(member(port, "number"));
    size_t i;

    json_array_foreach ((json_t *)ports, i, p) {
        const char *name = str_at(p, "name");
        if ((want != NULL && name != NULL && strcmp(name, want) == 0) ||
            (want == NULL && json_integer_value(member(p, "port")) == num)) {
            *port_name = name != NULL ? name : "";
            return true;
        }
    }
    return false;
}

static void
add_server(struct tr *t, struct config_service *s, const char *ip, json_int_t port)
{
    struct config_addr a = {0};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    char spec[80];

    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a.len = sizeof(*v4);
        snprintf(spec, sizeof(spec), "%s:%d", ip, (int)port);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a.len = sizeof(*v6);
        snprintf(spec, sizeof(spec), "[%s]:%d", ip, (int)port);
    } else {
        logline(t, "service %s: endpoint address \"%s\" is not an IP address", s->name, ip);
        return;
    }
    for (size_t i = 0; i < s->nservers; i++) {
        if (s->servers[i].len == a.len && memcmp(&s->servers[i].ss, &a.ss, a.len) == 0)
            return;
    }
    if (s->nservers == CONFIG_MAX_SERVERS) {
        logline(t, "service %s: more than %d ready endpoints, the rest left out", s->name,
                CONFIG_MAX_SERVERS);
        return;
    }
    struct config_addr *arr = grow(t, s->servers, s->nservers, sizeof(*arr));
    if (arr == NULL)
        return;
    s->servers = arr;
    if ((a.spec = sdup(t, spec)) != NULL)
        s->servers[s->nservers++] = a;
}

/* The ready endpoints of one EndpointSlice at the port named port_name. */
static void
slice_servers(struct tr *t, struct config_service *s, const json_t *slice, const char *port_name)
{
    const char *type = str_at(slice, "addressType");
    const json_t *p, *ep, *addr;
    json_int_t port = -1;
    size_t i, j;

    if (type == NULL || (strcmp(type, "IPv4") != 0 && strcmp(type, "IPv6") != 0))
        return; /* FQDN slices name hosts, not addresses */
    json_array_foreach (member(slice, "ports"), i, p) {
        const char *name = str_at(p, "name");
        if (strcmp(name != NULL ? name : "", port_name) == 0)
            port = json_integer_value(member(p, "port"));
    }
    if (port < 1 || port > 65535)
        return;
    json_array_foreach (member(slice, "endpoints"), i, ep) {
        /* The API: a missing ready condition means ready. */
        if (json_is_false(member(member(ep, "conditions"), "ready")))
            continue;
        json_array_foreach (member(ep, "addresses"), j, addr) {
            if (json_is_string(addr))
                add_server(t, s, json_string_value(addr), port);
        }
    }
}

/* Fills s with the ready endpoints of Service ns/name's port port_name, slices in key order. */
static void
service_servers(struct tr *t, struct config_service *s, const char *ns, const char *name,
                const char *port_name)
{
    const char *key, **keys = NULL;
    size_t n = 0;
    json_t *slice;

    json_object_foreach ((json_t *)t->o->slices, key, slice) {
        const json_t *meta = member(slice, "metadata");
        const char *sns = str_at(meta, "namespace");
        const char *svc = str_at(member(meta, "labels"), INGRESS_SLICE_SERVICE_LABEL);
        if (svc == NULL || strcmp(svc, name) != 0 || sns == NULL || strcmp(sns, ns) != 0)
            continue;
        const char **k = grow(t, keys, n, sizeof(*keys));
        if (k == NULL)
            break;
        keys = k;
        keys[n++] = key;
    }
    if (n > 0)
        qsort(keys, n, sizeof(*keys), str_cmp);
    for (size_t i = 0; i < n; i++)
        slice_servers(t, s, json_object_get(t->o->slices, keys[i]), port_name);
    free(keys);
}

/* Whether a backend names a service and its port, logged when not: checked before its route
 * claims a path, so a route left out never keeps a younger Ingress from a path. */
static bool
backend_ok(struct tr *t, const char *ing, const json_t *backend)
{
    const json_t *svc = member(backend, "service"), *port = member(svc, "port");
    const char *name = str_at(svc, "name");
    json_int_t pnum = json_integer_value(member(port, "number"));

    if (name == NULL || name[0] == '\0') {
        logline(t,
                "ingress %s: a backend without service.name (resource backends are not "
                "supported), left out",
                ing);
        return false;
    }
    if (port_name_of(port) == NULL &&
        (!json_is_integer(member(port, "number")) || pnum < 1 || pnum > 65535)) {
        logline(t, "ingress %s: backend service %s has neither port.number nor port.name, left out",
                ing, name);
        return false;
    }
    return true;
}

/* The index in out's services of the backend's service (backend_ok), made on first use. */
static int
backend_service(struct tr *t, const char *ing, const char *ns, const json_t *backend)
{
    const json_t *svc = member(backend, "service"), *port = member(svc, "port");
    const char *name = str_at(svc, "name"), *pname = port_name_of(port);
    json_int_t pnum = json_integer_value(member(port, "number"));
    struct config_extra *x = &t->out->extra;
    char sname[600], pstr[32], key[400];

    if (pname != NULL)
        snprintf(pstr, sizeof(pstr), "%.31s", pname);
    else
        snprintf(pstr, sizeof(pstr), "%d", (int)pnum);
    snprintf(sname, sizeof(sname), "%s/%s:%s", ns, name, pstr);
    for (size_t i = 0; i < x->nservices; i++) {
        if (strcmp(x->services[i].name, sname) == 0)
            return (int)i;
    }
    struct config_service *arr = grow(t, x->services, x->nservices, sizeof(*arr));
    if (arr == NULL)
        return -1;
    x->services = arr;
    struct config_service *s = &x->services[x->nservices];
    memset(s, 0, sizeof(*s));
    s->kube = true;
    if ((s->name = sdup(t, sname)) == NULL)
        return -1;
    x->nservices++;

    snprintf(key, sizeof(key), "%s/%s", ns, name);
    const json_t *sobj = json_object_get(t->o->services, key);
    const char *type = str_at(member(sobj, "spec"), "type"), *port_name;
    if (sobj == NULL)
        logline(t, "ingress %s: service %s not found (503 until it exists)", ing, key);
    else if (type != NULL && strcmp(type, "ExternalName") == 0)
        logline(t, "ingress %s: service %s is an ExternalName service, not supported", ing, key);
    else if (!service_port(sobj, port, &port_name))
        logline(t, "ingress %s: service %s has no port %s (503 until it has)", ing, key, pstr);
    else
        service_servers(t, s, ns, name, port_name);
    return (int)(x->nservices - 1);
}

/*
 * Routes
 */

static void
add_route(struct tr *t, const char *host, const char *path, bool exact, int service)
{
    struct config_extra *x = &t->out->extra;
    struct config_route *arr = grow(t, x->routes, x->nroutes, sizeof(*arr));

    if (arr == NULL)
        return;
    x->routes = arr;
    struct config_route *r = &x->routes[x->nroutes];
    memset(r, 0, sizeof(*r));
    r->wildcard = r->one_label = host != NULL && host[0] == '*';
    r->exact = exact;
    r->service = (size_t)service;
    r->host = host != NULL ? sdup(t, host) : NULL;
    r->path = sdup(t, path);
    r->service_name = sdup(t, x->services[service].name);
    if (t->nomem) {
        free(r->host);
        free(r->path);
        free(r->service_name);
        return;
    }
    x->nroutes++;
}

/* One entry of a rule's http.paths. */
static void
path_entry(struct tr *t, const struct served *ing, const char *host, const json_t *p)
{
    const char *type = str_at(p, "pathType"), *path = str_at(p, "path"), *winner;
    bool exact = false;

    if (!json_is_object(p) || (member(p, "pathType") != NULL && type == NULL) ||
        (member(p, "path") != NULL && path == NULL)) {
        logline(t, "ingress %s: a path entry with a path or pathType that is not text, left out",
                ing->key);
        return;
    }
    if (type == NULL || strcmp(type, "ImplementationSpecific") == 0) {
        if (path == NULL || path[0] == '\0')
            path = "/";
    } else if (strcmp(type, "Exact") == 0) {
        exact = true;
    } else if (strcmp(type, "Prefix") != 0) {
        logline(t,
                "ingress %s: pathType \"%s\" is not Exact, Prefix or ImplementationSpecific, "
                "left out",
                ing->key, type);
        return;
    }
    if (path == NULL || !path_ok(path)) {
        logline(t,
                "ingress %s: path \"%s\" must start with '/' and hold no spaces, controls, '?' "
                "or '#', left out",
                ing->key, path != NULL ? path : "");
        return;
    }
    if (!backend_ok(t, ing->key, member(p, "backend")))
        return;
    if ((winner = claim(t, host, path, exact, ing->key)) != NULL) {
        if (strcmp(winner, ing->key) != 0)
            logline(t,
                    "ingress %s: host %s path %s (%s) is also claimed by ingress %s, which is "
                    "older and wins",
                    ing->key, host != NULL ? host : "*", path, exact ? "Exact" : "Prefix", winner);
        return;
    }
    int service = backend_service(t, ing->key, ing->ns, member(p, "backend"));
    if (service >= 0)
        add_route(t, host, path, exact, service);
}

static void
rules(struct tr *t, const struct served *ing)
{
    const json_t *rule, *p;
    size_t i, j;
    char host[256];

    const json_t *all = member(member(ing->obj, "spec"), "rules");

    if (all != NULL && !json_is_array(all) && !json_is_null(all))
        logline(t, "ingress %s: spec.rules is not a list, left out", ing->key);
    json_array_foreach (all, i, rule) {
        const char *h = str_at(rule, "host");
        const json_t *http = member(rule, "http"), *paths = member(http, "paths");
        if (!json_is_object(rule) ||
            (member(rule, "host") != NULL && h == NULL && !json_is_null(member(rule, "host")))) {
            logline(t, "ingress %s: rules[%zu] is not a rule with a text host, left out", ing->key,
                    i);
            continue;
        }
        if (h != NULL && h[0] != '\0' && !host_ok(h, host, sizeof(host))) {
            logline(t, "ingress %s: host \"%s\" is not a DNS name or \"*.\" and one, left out",
                    ing->key, h);
            continue;
        }
        if ((http != NULL && !json_is_object(http) && !json_is_null(http)) ||
            (paths != NULL && !json_is_array(paths) && !json_is_null(paths))) {
            logline(t, "ingress %s: rules[%zu].http.paths is not a list, left out", ing->key, i);
            continue;
        }
        json_array_foreach (paths, j, p)
            path_entry(t, ing, h != NULL && h[0] != '\0' ? host : NULL, p);
    }
}

static void
default_backend(struct tr *t, const struct served *ing)
{
    const json_t *b = member(member(ing->obj, "spec"), "defaultBackend");

    if (b == NULL)
        return;
    if (!backend_ok(t, ing->key, b))
        return;
    if (t->default_owner != NULL) {
        logline(t, "ingress %s: defaultBackend also set by ingress %s, which is older and wins",
                ing->key, t->default_owner);
        return;
    }
    int service = backend_service(t, ing->key, ing->ns, b);
    if (service >= 0) {
        t->out->extra.default_service = service;
        t->default_owner = ing->key;
    }
}

/*
 * TLS Secrets
 */

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes standard base64 (padding optional) into a new NUL-terminated string; NULL when in is
 * not base64 or memory ran out (*nomem then set). */
static char *
b64_decode(const char *in, bool *nomem)
{
    size_t len = strlen(in), n = 0;
    unsigned acc = 0, bits = 0;
    char *out;

    while (len > 0 && in[len - 1] == '=')
        len--;
    if ((out = malloc(len * 3 / 4 + 1)) == NULL) {
        *nomem = true;
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (bits >= 6 || memchr(out, '\0', n) != NULL) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    return out;
}

/* Loads Secret ns/name as a certificate, once for all Ingresses that name it. */
static void
secret_cert(struct tr *t, const char *ing, const char *ns, const char *name)
{
    struct config_extra *x = &t->out->extra;
    char key[400];

    snprintf(key, sizeof(key), "%s/%s", ns, name);
    for (size_t i = 0; i < t->nsecrets; i++) {
        if (strcmp(t->secrets[i], key) == 0)
            return;
    }
    char **s = grow(t, t->secrets, t->nsecrets, sizeof(*s));
    if (s == NULL)
        return;
    t->secrets = s;
    if ((t->secrets[t->nsecrets] = sdup(t, key)) == NULL)
        return;
    t->nsecrets++;

    const json_t *sec = json_object_get(t->o->secrets, key), *data = member(sec, "data");
    const char *type = str_at(sec, "type");
    const char *crt = str_at(data, "tls.crt"), *k = str_at(data, "tls.key");
    if (sec == NULL) {
        logline(t, "ingress %s: TLS secret %s not found", ing, key);
        return;
    }
    if (type == NULL || strcmp(type, "kubernetes.io/tls") != 0 || crt == NULL || k == NULL) {
        logline(t,
                "ingress %s: secret %s is not a kubernetes.io/tls secret with tls.crt and "
                "tls.key",
                ing, key);
        return;
    }
    char *cert_pem = b64_decode(crt, &t->nomem), *key_pem = b64_decode(k, &t->nomem);
    struct config_cert *arr = NULL;
    if (cert_pem == NULL || key_pem == NULL) {
        if (!t->nomem)
            logline(t, "ingress %s: secret %s: tls.crt or tls.key is not base64", ing, key);
    } else if ((arr = grow(t, x->certs, x->ncerts, sizeof(*arr))) != NULL) {
        char label[420];
        x->certs = arr;
        snprintf(label, sizeof(label), "secret %s", key);
        struct config_cert *c = &x->certs[x->ncerts];
        memset(c, 0, sizeof(*c));
        c->cert = sdup(t, label);
        c->key = sdup(t, label);
        c->cert_pem = cert_pem;
        c->key_pem = key_pem;
        x->ncerts++;
        return;
    }
    free(cert_pem);
    free(key_pem);
}

static void
tls(struct tr *t, const struct served *ing)
{
    const json_t *entry;
    size_t i;

    const json_t *all = member(member(ing->obj, "spec"), "tls");

    if (all != NULL && !json_is_array(all) && !json_is_null(all))
        logline(t, "ingress %s: spec.tls is not a list, left out", ing->key);
    json_array_foreach (all, i, entry) {
        const json_t *sn = member(entry, "secretName");
        const char *name = json_string_value(sn);
        if (!json_is_object(entry) || (sn != NULL && name == NULL && !json_is_null(sn)))
            logline(t, "ingress %s: tls[%zu] is not an entry with a text secretName, left out",
                    ing->key, i);
        else if (name != NULL && name[0] != '\0')
            secret_cert(t, ing->key, ing->ns, name);
    }
}

/*
 * The translation
 */

/* The Ingresses of our class, oldest first. Returns how many, or -1 when memory ran out. */
static long
served_list(struct tr *t, const char *ingress_class, struct served **out)
{
    const char *dflt = default_class(t->o->classes), *key;
    struct served *list = NULL;
    size_t n = 0;
    json_t *obj;

    json_object_foreach ((json_t *)t->o->ingresses, key, obj) {
        if (!ours(obj, ingress_class, dflt))
            continue;
        struct served *l = grow(t, list, n, sizeof(*list));
        if (l == NULL)
            break;
        list = l;
        const char *ns = str_at(member(obj, "metadata"), "namespace");
        list[n++] = (struct served){key, ns != NULL ? ns : "default", created(obj), obj};
    }
    if (t->nomem) {
        free(list);
        return -1;
    }
    if (n > 0)
        qsort(list, n, sizeof(*list), served_cmp);
    *out = list;
    return (long)n;
}

int
ingress_translate(const struct ingress_objects *o, const char *ingress_class,
                  struct ingress_result *out)
{
    struct tr t = {.o = o, .out = out};
    struct served *list = NULL;
    long n;

    memset(out, 0, sizeof(*out));
    out->extra.default_service = -1;
    /* The log is never NULL: "" when nothing went wrong. */
    if ((out->log = calloc(1, t.logcap = 256)) == NULL)
        return -1;
    if ((n = served_list(&t, ingress_class, &list)) < 0)
        goto nomem;
    for (long i = 0; i < n && !t.nomem; i++) {
        default_backend(&t, &list[i]);
        rules(&t, &list[i]);
        tls(&t, &list[i]);
    }
    if (n > 0 && !t.nomem && (out->served = calloc((size_t)n, sizeof(*out->served))) != NULL) {
        for (long i = 0; i < n; i++) {
            if ((out->served[i] = sdup(&t, list[i].key)) == NULL)
                break;
            out->nserved++;
        }
        qsort(out->served, out->nserved, sizeof(*out->served), str_cmp);
    } else if (n > 0) {
        t.nomem = true;
    }
nomem:
    free(list);
    for (size_t i = 0; i < t.nclaims; i++)
        free(t.claims[i].id);
    free(t.claims);
    for (size_t i = 0; i < t.nsecrets; i++)
        free(t.secrets[i]);
    free(t.secrets);
    if (t.nomem || out->log == NULL) {
        ingress_result_free(out);
        return -1;
    }
    return 0;
}

void
ingress_result_free(struct ingress_result *r)
{
    if (r == NULL)
        return;
    config_extra_free(&r->extra);
    for (size_t i = 0; i < r->nserved; i++)
        free(r->served[i]);
    free(r->served);
    free(r->log);
    memset(r, 0, sizeof(*r));
}
