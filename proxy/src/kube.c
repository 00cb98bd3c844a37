/*
 * The Kubernetes provider: one LIST-then-WATCH loop per kind (and namespace), a store of the
 * objects by "namespace/name", and a settle timer that turns the store into a config.
 *
 * Each watch is a small state machine driven by its request's callbacks and its retry timer:
 * LIST -> WATCH -> (the server ends it) WATCH again from the last resourceVersion; a broken
 * watch waits a jittered backoff, then WATCHes again; 410 Gone (the version was compacted away)
 * LISTs again. Nothing here recurses: every next step starts from a callback, and a request's
 * callback never runs from inside kubeapi_start().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "ingress.h"
#include "kube.h"
#include "kubeapi.h"
#include "log.h"
#include "tls.h"

/* Bounds on what the API server sends: a LIST body, one watch event line. */
#define LIST_MAX (256u << 20)
#define EVENT_MAX (16u << 20)
/* A LIST or PUT must answer within this; a watch may be silent for its timeoutSeconds and this. */
#define REQUEST_TIMEOUT_MS 30000
#define WATCH_SECONDS_MIN 240
#define WATCH_SECONDS_SPREAD 120
/* Backoff after failures: from BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS, each jittered by half. */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
/* A status update that failed (not a conflict) is tried again after this. */
#define STATUS_RETRY_MS 5000

enum kind { K_CLASSES, K_INGRESSES, K_SERVICES, K_SLICES, K_SECRETS, K_NKINDS };

static const struct kind_info {
    const char *name;   /* for logs */
    const char *prefix; /* the group's path */
    const char *plural;
    bool namespaced;
    const char *query; /* narrows what is read, or "" */
} kinds[K_NKINDS] = {
    {"ingressclasses", "/apis/networking.k8s.io/v1", "ingressclasses", false, ""},
    {"ingresses", "/apis/networking.k8s.io/v1", "ingresses", true, ""},
    {"services", "/api/v1", "services", true, ""},
    {"endpointslices", "/apis/discovery.k8s.io/v1", "endpointslices", true, ""},
    /* Only the Secrets that can be certificates, not every password of the cluster. */
    {"secrets", "/api/v1", "secrets", true, "fieldSelector=type%3Dkubernetes.io%2Ftls"},
};

enum watch_state { W_WAIT, W_LIST, W_WATCH };

struct kube;

/* One kind in one namespace (or all of them). */
struct watch {
    struct kube *k;
    enum kind kind;
    const char *ns; /* borrowed from k->base's namespaces; NULL: every namespace */
    enum watch_state state;
    struct kubeapi_req *req; /* the LIST or WATCH in flight, or NULL */
    struct evbuffer *buf;    /* owned: the LIST body, or the watch's partial line */
    struct event *retry;     /* owned: the backoff's timer */
    char rv[64];             /* the last resourceVersion seen */
    unsigned failures;       /* in a row, for the backoff */
    bool listed;             /* a LIST succeeded once */
    bool relist;             /* the next start LISTs (410, or never listed) */
    bool failing;            /* the last failure was logged: the recovery is too */
};

struct kube {
    struct loop *lp;     /* borrowed */
    struct config *base; /* ref: the file's config */
    struct kubeapi *api; /* owned */
    kube_apply_fn apply; /* the owner's, upward */
    void *arg;
    struct watch *watches; /* owned */
    size_t nwatches;
    json_t *store[K_NKINDS];  /* owned: "namespace/name" (classes: "name") -> object */
    struct event *settle;     /* owned: makes the config KUBE_SETTLE_MS after a change */
    struct config_extra last; /* owned: what the last applied config added */
    bool applied;             /* last is set */
    bool force;               /* the next settle applies even if nothing changed (base did) */
    char *last_log;           /* owned: the translation's problems, logged when they change */
    /* Status: the node's address, the Ingresses served, and one PUT at a time. */
    const char *node_ip;  /* from the environment, or NULL */
    json_t *served;       /* owned: array of "namespace/name" */
    json_t *status_tried; /* owned: "namespace/name" -> the resourceVersion a PUT was for */
    struct kubeapi_req *status_req;
    char status_key[300];
    struct evbuffer *status_body; /* owned: the PUT's response, for its message */
    struct event *status_retry;   /* owned */
};

static void watch_start(struct watch *w);
static void status_next(struct kube *k);

static uint64_t
jitter(uint64_t ms)
{
    /* Half to all of ms: watches that failed together do not retry together. */
    double half = (double)ms / 2.0;

    return (uint64_t)(half + half * ((double)random() / (double)RAND_MAX));
}

static void
timer_in(struct event *ev, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000)};

    event_add(ev, &tv);
}

static void
schedule_settle(struct kube *k)
{
    if (!event_pending(k->settle, EV_TIMEOUT, NULL))
        timer_in(k->settle, KUBE_SETTLE_MS);
}

/* ---------------------------------------------------------------------------------------------
 * The store
 */

/* "namespace/name" of obj ("name" for a cluster-wide kind) into key; false if it has no name. */
static bool
object_key(const json_t *obj, bool namespaced, char *key, size_t cap)
{
    const json_t *meta = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(meta, "name"));
    const char *ns = json_string_value(json_object_get(meta, "namespace"));

    if (name == NULL || (namespaced && ns == NULL))
        return false;
    if (namespaced)
        return (size_t)snprintf(key, cap, "%s/%s", ns, name) < cap;
    return (size_t)snprintf(key, cap, "%s", name) < cap;
}

static void
store_rv(struct watch *w, const json_t *obj)
{
    const char *rv =
        json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));

    if (rv != NULL && strlen(rv) < sizeof(w->rv))
        snprintf(w->rv, sizeof(w->rv), "%s", rv);
}

/* Whether key (of the store of w's kind) is in w's namespace. */
static bool
in_scope(const struct watch *w, const char *key)
{
    size_t n;

    if (w->ns == NULL)
        return true;
    n = strlen(w->ns);
    return strncmp(key, w->ns, n) == 0 && key[n] == '/';
}

/* A LIST's items replace what the store held in w's scope. Returns 0, or -1 if body is no list. */
static int
store_list(struct watch *w, const json_t *list)
{
    json_t *store = w->k->store[w->kind], *items = json_object_get(list, "items"), *item, *tmp;
    const char *key;
    char k[320];
    size_t i;

    if (!json_is_array(items) && !json_is_null(items))
        return -1;
    json_object_foreach_safe (store, tmp, key, item) {
        if (in_scope(w, key))
            json_object_del(store, key);
    }
    json_array_foreach (items, i, item) {
        if (object_key(item, kinds[w->kind].namespaced, k, sizeof(k)))
            json_object_set(store, k, item);
    }
    store_rv(w, list);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * LIST and WATCH
 */

static void
watch_log_failure(struct watch *w, const char *what)
{
    /* Once per streak at WARN: a server down for an hour logs one line per watch, not 120. */
    log_msg(w->failing ? LOG_DEBUG : LOG_WARN, "kubernetes: %s%s%s: %s", kinds[w->kind].name,
            w->ns != NULL ? " in " : "", w->ns != NULL ? w->ns : "", what);
    w->failing = true;
}

/* Ends w's request and starts again after the backoff. */
static void
watch_retry(struct watch *w, const char *why)
{
    uint64_t ms = BACKOFF_MIN_MS;

    watch_log_failure(w, why);
    kubeapi_cancel(w->req);
    w->req = NULL;
    w->state = W_WAIT;
    for (unsigned i = 0; i < w->failures && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    w->failures++;
    timer_in(w->retry, jitter(ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS));
}

static void
watch_ok(struct watch *w)
{
    if (w->failing)
        log_msg(LOG_INFO, "kubernetes: %s%s%s: reading again", kinds[w->kind].name,
                w->ns != NULL ? " in " : "", w->ns != NULL ? w->ns : "");
    w->failing = false;
    w->failures = 0;
}

/* The message of a Status object the server answered with, or what there is of the body. */
static void
status_message(struct evbuffer *body, char *out, size_t cap)
{
    size_t len = evbuffer_get_length(body);
    json_t *st = json_loadb((const char *)evbuffer_pullup(body, (ev_ssize_t)len), len, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));

    snprintf(out, cap, "%s", msg != NULL ? msg : "no message");
    json_decref(st);
}

static void
list_done(struct watch *w)
{
    size_t len = evbuffer_get_length(w->buf);
    json_error_t jerr;
    json_t *list;
    char why[400];

    if (kubeapi_status(w->req) != 200) {
        status_message(w->buf, why, sizeof(why) - 40);
        char line[480];
        snprintf(line, sizeof(line), "LIST answered %d: %s", kubeapi_status(w->req), why);
        watch_retry(w, line);
        return;
    }
    list = json_loadb((const char *)evbuffer_pullup(w->buf, (ev_ssize_t)len), len, 0, &jerr);
    if (list == NULL || store_list(w, list) < 0) {
        snprintf(why, sizeof(why), "LIST answered no list: %s", list == NULL ? jerr.text : "items");
        json_decref(list);
        watch_retry(w, why);
        return;
    }
    json_decref(list);
    kubeapi_cancel(w->req);
    w->req = NULL;
    w->listed = true;
    w->relist = false;
    watch_ok(w);
    schedule_settle(w->k);
    w->state = W_WATCH;
    watch_start(w);
}

/* One line of a watch: an event. Returns false when the watch must end (it was cancelled). */
static bool
watch_event(struct watch *w, const char *line, size_t len)
{
    json_t *ev = json_loadb(line, len, 0, NULL), *item = json_object_get(ev, "object");
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *store = w->k->store[w->kind];
    char key[320];

    if (type == NULL || !json_is_object(item)) {
        json_decref(ev);
        watch_retry(w, "a watch event that is not one");
        return false;
    }
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(item, "code"));
        char why[400];
        snprintf(why, sizeof(why), "watch ended with an error %d: %s", (int)code,
                 json_string_value(json_object_get(item, "message")) != NULL
                     ? json_string_value(json_object_get(item, "message"))
                     : "no message");
        json_decref(ev);
        if (code == 410) {
            /* The version is compacted away: read everything again, at once. */
            log_msg(LOG_INFO, "kubernetes: %s: %s; listing again", kinds[w->kind].name, why);
            kubeapi_cancel(w->req);
            w->req = NULL;
            w->relist = true;
            watch_start(w);
        } else {
            w->relist = true;
            watch_retry(w, why);
        }
        return false;
    }
    store_rv(w, item);
    if (strcmp(type, "BOOKMARK") != 0 &&
        object_key(item, kinds[w->kind].namespaced, key, sizeof(key))) {
        if (strcmp(type, "DELETED") == 0)
            json_object_del(store, key);
        else
            json_object_set(store, key, item);
        schedule_settle(w->k);
    }
    json_decref(ev);
    return true;
}

static void
watch_data(struct watch *w, const char *data, size_t len)
{
    struct evbuffer_ptr nl;

    if (evbuffer_add(w->buf, data, len) < 0) {
        watch_retry(w, "out of memory");
        return;
    }
    for (;;) {
        nl = evbuffer_search(w->buf, "\n", 1, NULL);
        if (nl.pos < 0)
            break;
        const char *line = (const char *)evbuffer_pullup(w->buf, nl.pos + 1);
        bool go_on = nl.pos == 0 || watch_event(w, line, (size_t)nl.pos);
        if (!go_on)
            return;
        evbuffer_drain(w->buf, (size_t)nl.pos + 1);
    }
    if (evbuffer_get_length(w->buf) > EVENT_MAX)
        watch_retry(w, "a watch event larger than 16 MiB");
}

static void
watch_cb(void *owner, enum kubeapi_event ev, const char *data, size_t len)
{
    struct watch *w = owner;
    int status = kubeapi_status(w->req);
    char why[320];

    switch (ev) {
    case KUBEAPI_HEAD:
        evbuffer_drain(w->buf, evbuffer_get_length(w->buf));
        if (w->state == W_WATCH && status == 410) {
            kubeapi_cancel(w->req);
            w->req = NULL;
            w->relist = true;
            watch_start(w);
        } else if (w->state == W_WATCH && status == 200) {
            watch_ok(w);
        }
        return;
    case KUBEAPI_DATA:
        if (w->state == W_LIST || status != 200) {
            if (evbuffer_get_length(w->buf) + len > LIST_MAX || evbuffer_add(w->buf, data, len) < 0)
                watch_retry(w, "a LIST larger than 256 MiB");
            return;
        }
        watch_data(w, data, len);
        return;
    case KUBEAPI_DONE:
        if (w->state == W_LIST) {
            list_done(w);
        } else if (status != 200) {
            status_message(w->buf, why, sizeof(why) - 40);
            char line[400];
            snprintf(line, sizeof(line), "WATCH answered %d: %s", status, why);
            watch_retry(w, line);
        } else {
            /* The server ended the watch (its timeoutSeconds): go on from where it stopped. */
            kubeapi_cancel(w->req);
            w->req = NULL;
            watch_start(w);
        }
        return;
    case KUBEAPI_FAIL:
        snprintf(why, sizeof(why), "%s %s", w->state == W_LIST ? "LIST" : "WATCH",
                 kubeapi_error(w->req));
        watch_retry(w, why);
        return;
    }
}

/* The path of w's kind in its namespace, with the kind's query and query ("" for none). */
static void
watch_path(const struct watch *w, char *out, size_t cap, const char *query)
{
    const struct kind_info *ki = &kinds[w->kind];
    const char *sep = ki->query[0] != '\0' && query[0] != '\0' ? "&" : "";
    const char *q = ki->query[0] != '\0' || query[0] != '\0' ? "?" : "";

    if (w->ns != NULL)
        snprintf(out, cap, "%s/namespaces/%s/%s%s%s%s%s", ki->prefix, w->ns, ki->plural, q,
                 ki->query, sep, query);
    else
        snprintf(out, cap, "%s/%s%s%s%s%s", ki->prefix, ki->plural, q, ki->query, sep, query);
}

/* LISTs (when never listed, or after 410) or WATCHes from the last version. */
static void
watch_start(struct watch *w)
{
    char path[600], query[200], err[256];
    uint64_t timeout = REQUEST_TIMEOUT_MS;

    evbuffer_drain(w->buf, evbuffer_get_length(w->buf));
    if (!w->listed || w->relist) {
        w->state = W_LIST;
        watch_path(w, path, sizeof(path), "");
    } else {
        unsigned secs = WATCH_SECONDS_MIN + (unsigned)(random() % WATCH_SECONDS_SPREAD);
        w->state = W_WATCH;
        snprintf(query, sizeof(query),
                 "watch=1&resourceVersion=%s&allowWatchBookmarks=true&timeoutSeconds=%u", w->rv,
                 secs);
        watch_path(w, path, sizeof(path), query);
        timeout += (uint64_t)secs * 1000;
    }
    w->req = kubeapi_start(w->k->api, w->k->lp, "GET", path, NULL, timeout, watch_cb, w, err,
                           sizeof(err));
    if (w->req == NULL)
        watch_retry(w, err);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    watch_start(arg);
}

/* ---------------------------------------------------------------------------------------------
 * Configs
 */

/* Drops the certificates that would not load (a Secret with a broken PEM), each logged. */
static void
drop_bad_certs(struct config_extra *x)
{
    char err[512];
    size_t kept = 0;

    for (size_t i = 0; i < x->ncerts; i++) {
        struct config_cert *c = &x->certs[i];
        if (tls_cert_check(c, err, sizeof(err)) == 0) {
            x->certs[kept++] = *c;
            continue;
        }
        size_t n = strcspn(err, "\n");
        log_msg(LOG_WARN, "kubernetes: %s left out: %.*s", c->cert, (int)n, err);
        free(c->cert);
        free(c->key);
        free(c->cert_pem);
        free(c->key_pem);
    }
    x->ncerts = kept;
}

/* Logs the translation's problems when they differ from the last ones. */
static void
log_problems(struct kube *k, const char *text)
{
    if (k->last_log != NULL && strcmp(k->last_log, text) == 0)
        return;
    for (const char *p = text; *p != '\0';) {
        size_t n = strcspn(p, "\n");
        log_msg(LOG_WARN, "kubernetes: %.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
    free(k->last_log);
    k->last_log = strdup(text);
}

static bool
all_listed(const struct kube *k)
{
    for (size_t i = 0; i < k->nwatches; i++) {
        if (!k->watches[i].listed)
            return false;
    }
    return true;
}

/* The store to a config, applied when it differs from the last one (or base changed). */
static void
settle(struct kube *k)
{
    const struct ingress_objects o = {k->store[K_CLASSES], k->store[K_INGRESSES],
                                      k->store[K_SERVICES], k->store[K_SLICES],
                                      k->store[K_SECRETS]};
    struct ingress_result res;
    char err[CONFIG_ERR_SIZE] = "";

    if (!all_listed(k))
        return; /* half the cluster is no cluster: wait for the rest */
    if (ingress_translate(&o, k->base->kubernetes.ingress_class, &res) < 0) {
        log_msg(LOG_ERROR, "kubernetes: out of memory making the routes");
        return;
    }
    drop_bad_certs(&res.extra);
    log_problems(k, res.log);
    json_array_clear(k->served);
    for (size_t i = 0; i < res.nserved; i++)
        json_array_append_new(k->served, json_string(res.served[i]));
    if (k->applied && !k->force && config_extra_equal(&k->last, &res.extra)) {
        ingress_result_free(&res);
        status_next(k);
        return;
    }
    struct config *cfg = config_extend(k->base, &res.extra, err, sizeof(err));
    if (cfg == NULL) {
        log_msg(LOG_ERROR, "kubernetes: %s", err);
        ingress_result_free(&res);
        return;
    }
    for (const char *p = err; *p != '\0';) {
        size_t n = strcspn(p, "\n");
        log_msg(LOG_WARN, "%.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
    config_extra_free(&k->last);
    k->last = res.extra; /* moved */
    memset(&res.extra, 0, sizeof(res.extra));
    ingress_result_free(&res);
    k->applied = true;
    k->force = false;
    log_msg(LOG_INFO, "kubernetes: %zu routes, %zu services, %zu certificates from %zu ingresses",
            k->last.nroutes, k->last.nservices, k->last.ncerts, json_array_size(k->served));
    k->apply(k->arg, cfg);
    status_next(k);
}

static void
settle_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    settle(arg);
}

/* ---------------------------------------------------------------------------------------------
 * Ingress status: status.loadBalancer.ingress = [{ip: node}] on each Ingress served
 */

/* The Ingress's status.loadBalancer.ingress list (borrowed), or NULL. */
static json_t *
status_list(const json_t *ing)
{
    return json_object_get(json_object_get(json_object_get(ing, "status"), "loadBalancer"),
                           "ingress");
}

/* Whether the node's address is in the Ingress's status already. Every portier (one per node)
 * adds its own and keeps the others', so pods on several nodes never undo each other's write. */
static bool
status_current(const json_t *ing, const char *ip)
{
    const json_t *entries = status_list(ing), *e;
    size_t i;

    json_array_foreach (entries, i, e) {
        const char *have = json_string_value(json_object_get(e, "ip"));
        if (have != NULL && strcmp(have, ip) == 0)
            return true;
    }
    return false;
}

/* The Ingress as a PUT of its status subresource takes it: with the node's address added. */
static char *
status_body(const json_t *ing, const char *ip)
{
    json_t *put = json_deep_copy(ing), *entries = status_list(put);
    char *body = NULL;

    if (put == NULL)
        return NULL;
    if (!json_is_array(entries)) {
        entries = json_array();
        json_t *lb = json_pack("{s:{s:o}}", "loadBalancer", "ingress", entries);
        if (lb == NULL || json_object_set_new(put, "status", lb) < 0)
            entries = NULL;
    }
    if (entries != NULL && json_array_append_new(entries, json_pack("{s:s}", "ip", ip)) == 0 &&
        json_object_set_new(put, "apiVersion", json_string("networking.k8s.io/v1")) == 0 &&
        json_object_set_new(put, "kind", json_string("Ingress")) == 0)
        body = json_dumps(put, JSON_COMPACT);
    json_decref(put);
    return body;
}

static void
status_cb(void *owner, enum kubeapi_event ev, const char *data, size_t len)
{
    struct kube *k = owner;
    int status = kubeapi_status(k->status_req);
    char msg[300];

    if (ev == KUBEAPI_HEAD)
        return;
    if (ev == KUBEAPI_DATA) {
        if (evbuffer_get_length(k->status_body) < 65536)
            evbuffer_add(k->status_body, data, len);
        return;
    }
    if (ev == KUBEAPI_FAIL || (status != 200 && status != 409)) {
        if (ev == KUBEAPI_FAIL)
            snprintf(msg, sizeof(msg), "%s", kubeapi_error(k->status_req));
        else
            status_message(k->status_body, msg, sizeof(msg));
        log_msg(LOG_WARN, "kubernetes: cannot set the status of ingress %s (%d): %s", k->status_key,
                status, msg);
        /* Tried again later: the version it was for no longer counts as tried. */
        json_object_del(k->status_tried, k->status_key);
        timer_in(k->status_retry, STATUS_RETRY_MS);
    } else if (status == 200) {
        log_msg(LOG_INFO, "kubernetes: ingress %s: status.loadBalancer.ingress set to %s",
                k->status_key, k->node_ip);
    }
    /* 409: the Ingress changed meanwhile; its watch brings the new version, tried then. */
    kubeapi_cancel(k->status_req);
    k->status_req = NULL;
    status_next(k);
}

/* Starts the PUT of the next served Ingress whose status is not the node's address yet. */
static void
status_next(struct kube *k)
{
    const json_t *key_json;
    size_t i;
    char path[700], err[256];

    if (k->node_ip == NULL || k->status_req != NULL ||
        event_pending(k->status_retry, EV_TIMEOUT, NULL))
        return;
    json_array_foreach (k->served, i, key_json) {
        const char *key = json_string_value(key_json);
        const json_t *ing = json_object_get(k->store[K_INGRESSES], key);
        const json_t *meta = json_object_get(ing, "metadata");
        const char *rv = json_string_value(json_object_get(meta, "resourceVersion"));
        const char *tried = json_string_value(json_object_get(k->status_tried, key));
        if (ing == NULL || rv == NULL || status_current(ing, k->node_ip) ||
            (tried != NULL && strcmp(tried, rv) == 0))
            continue;
        char *body = status_body(ing, k->node_ip);
        snprintf(path, sizeof(path), "/apis/networking.k8s.io/v1/namespaces/%s/ingresses/%s/status",
                 json_string_value(json_object_get(meta, "namespace")),
                 json_string_value(json_object_get(meta, "name")));
        json_object_set_new(k->status_tried, key, json_string(rv));
        snprintf(k->status_key, sizeof(k->status_key), "%s", key);
        evbuffer_drain(k->status_body, evbuffer_get_length(k->status_body));
        if (body != NULL)
            k->status_req = kubeapi_start(k->api, k->lp, "PUT", path, body, REQUEST_TIMEOUT_MS,
                                          status_cb, k, err, sizeof(err));
        else
            snprintf(err, sizeof(err), "out of memory");
        free(body);
        if (k->status_req == NULL) {
            log_msg(LOG_WARN, "kubernetes: cannot set the status of ingress %s: %s", key, err);
            json_object_del(k->status_tried, key);
            timer_in(k->status_retry, STATUS_RETRY_MS);
        }
        return;
    }
}

static void
status_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    status_next(arg);
}

/* ---------------------------------------------------------------------------------------------
 * Start and stop
 */

static int
watches_new(struct kube *k)
{
    const struct config_kubernetes *kc = &k->base->kubernetes;
    size_t per_kind = kc->nnamespaces > 0 ? kc->nnamespaces : 1;

    k->watches = calloc(1 + (K_NKINDS - 1) * per_kind, sizeof(*k->watches));
    if (k->watches == NULL)
        return -1;
    for (int kind = 0; kind < K_NKINDS; kind++) {
        size_t n = kinds[kind].namespaced ? per_kind : 1;
        for (size_t i = 0; i < n; i++) {
            struct watch *w = &k->watches[k->nwatches++];
            w->k = k;
            w->kind = (enum kind)kind;
            w->ns = kinds[kind].namespaced && kc->nnamespaces > 0 ? kc->namespaces[i] : NULL;
            w->buf = evbuffer_new();
            w->retry = evtimer_new(k->lp->base, retry_cb, w);
            if (w->buf == NULL || w->retry == NULL)
                return -1;
        }
    }
    return 0;
}

struct kube *
kube_start(struct loop *lp, struct config *base, kube_apply_fn apply, void *arg, char *err,
           size_t errlen)
{
    const struct config_kubernetes *kc = &base->kubernetes;
    struct kube *k = calloc(1, sizeof(*k));
    const char *ip = getenv("PORTIER_NODE_IP");

    if (k == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->lp = lp;
    k->base = config_ref(base);
    k->apply = apply;
    k->arg = arg;
    k->node_ip = ip != NULL && ip[0] != '\0' ? ip : NULL;
    k->last.default_service = -1;
    if ((k->api = kubeapi_new(kc->server, kc->ca_file, kc->token_file, err, errlen)) == NULL)
        goto fail;
    for (int i = 0; i < K_NKINDS; i++) {
        if ((k->store[i] = json_object()) == NULL)
            goto nomem;
    }
    k->served = json_array();
    k->status_tried = json_object();
    k->status_body = evbuffer_new();
    k->settle = evtimer_new(lp->base, settle_cb, k);
    k->status_retry = evtimer_new(lp->base, status_retry_cb, k);
    if (k->served == NULL || k->status_tried == NULL || k->status_body == NULL ||
        k->settle == NULL || k->status_retry == NULL || watches_new(k) < 0)
        goto nomem;
    log_msg(LOG_INFO, "kubernetes: reading ingresses of class %s from %s%s", kc->ingress_class,
            kubeapi_server(k->api),
            k->node_ip == NULL ? " (PORTIER_NODE_IP unset: no status)" : "");
    for (size_t i = 0; i < k->nwatches; i++)
        watch_start(&k->watches[i]);
    return k;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    kube_stop(k);
    return NULL;
}

static bool
listed_cb(const void *arg)
{
    return all_listed(arg);
}

void
kube_wait_first(struct kube *k, uint64_t timeout_ms)
{
    if (!loop_run_until(k->lp->base, listed_cb, k, timeout_ms)) {
        log_msg(LOG_WARN,
                "kubernetes: the API server did not answer within %llu ms; serving the file's "
                "routes until it does",
                (unsigned long long)timeout_ms);
        return;
    }
    event_del(k->settle);
    settle(k);
}

void
kube_set_base(struct kube *k, struct config *base)
{
    config_unref(k->base);
    k->base = config_ref(base);
    if (!all_listed(k)) {
        k->apply(k->arg, config_ref(base));
        return;
    }
    k->force = true;
    event_del(k->settle);
    settle(k);
}

bool
kube_synced(const struct kube *k)
{
    return all_listed(k);
}

void
kube_stop(struct kube *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->nwatches; i++) {
        struct watch *w = &k->watches[i];
        kubeapi_cancel(w->req);
        if (w->buf != NULL)
            evbuffer_free(w->buf);
        if (w->retry != NULL)
            event_free(w->retry);
    }
    free(k->watches);
    kubeapi_cancel(k->status_req);
    if (k->settle != NULL)
        event_free(k->settle);
    if (k->status_retry != NULL)
        event_free(k->status_retry);
    if (k->status_body != NULL)
        evbuffer_free(k->status_body);
    for (int i = 0; i < K_NKINDS; i++)
        json_decref(k->store[i]);
    json_decref(k->served);
    json_decref(k->status_tried);
    config_extra_free(&k->last);
    free(k->last_log);
    kubeapi_free(k->api);
    config_unref(k->base);
    free(k);
}
