/* The admin listener: Prometheus metrics, health, readiness and the status page (docs/admin.md). */
#include "admin.h"
#include "kube.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "balancer.h"
#include "log.h"
#include "loop.h"
#include "stats.h"

#define ADMIN_TIMEOUT_S 10
#define ADMIN_MAX_HEAD 8192

struct admin {
    struct evhttp *http;   /* owned */
    int fd;                /* the listening socket (evhttp closes it) */
    struct event *sampler; /* owned: stats_sample() every STATS_SAMPLE_MS */
    const struct admin_view *view;
};

/* ---------------------------------------------------------------------------------------------
 * Text helpers
 */

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void
put_label(struct evbuffer *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            evbuffer_add_printf(b, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(b, "\\n", 2);
        else
            evbuffer_add(b, s, 1);
    }
}

/* A JSON string, quoted and escaped (control characters as \u00XX). */
static void
put_json(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            evbuffer_add_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            evbuffer_add_printf(b, "\\u%04x", ch);
        else
            evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

/* A JSON number, or null for a negative one (nothing measured). */
static void
put_num_or_null(struct evbuffer *b, double v)
{
    if (v < 0)
        evbuffer_add(b, "null", 4);
    else
        evbuffer_add_printf(b, "%.3f", v);
}

static void
family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---------------------------------------------------------------------------------------------
 * What the metrics and the status page share
 */

static const struct runtime *
rt_of(const struct admin *a)
{
    return *a->view->rt;
}

static bool
server_up(const struct balancer_server *srv, int64_t now_ms)
{
    return balancer_server_up(srv, now_ms) && balancer_server_probe_up(srv);
}

/* Whether some route, or the default, sends requests to service i. */
static bool
service_routed(const struct config *cfg, size_t i)
{
    if (cfg->default_service == (int)i)
        return true;
    for (size_t r = 0; r < cfg->nroutes; r++) {
        if (cfg->routes[r].service == i)
            return true;
    }
    return false;
}

/* The readiness problems, a line each ("" when ready); returns how many. */
static int
problems(const struct admin *a, struct evbuffer *out, bool json)
{
    const struct runtime *rt = rt_of(a);
    int64_t now = loop_mono_ms();
    int n = 0;

    if (a->view->kube != NULL && *a->view->kube != NULL && !kube_synced(*a->view->kube)) {
        static const char line[] = "kubernetes: the API server has not been read yet";
        if (json)
            put_json(out, line);
        else
            evbuffer_add_printf(out, "%s\n", line);
        n++;
    }
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        char line[256];
        const char *name = rt->cfg->services[i].name;
        struct balancer_set *set;
        size_t size, up = 0;

        /* An Ingress's service without endpoints is its app's trouble, not portier's: as other
         * ingress controllers, portier stays ready and answers 503 for it. */
        if (!service_routed(rt->cfg, i) || rt->cfg->services[i].kube)
            continue;
        set = balancer_acquire(rt->balancers[i]);
        size = balancer_set_size(set);
        for (size_t k = 0; k < size; k++)
            up += server_up(balancer_set_server(set, k), now);
        balancer_set_unref(set);
        if (up > 0)
            continue;
        if (size == 0)
            snprintf(line, sizeof(line), "service %s: no servers", name);
        else
            snprintf(line, sizeof(line), "service %s: no server up (%zu server%s)", name, size,
                     size == 1 ? "" : "s");
        if (json) {
            if (n > 0)
                evbuffer_add(out, ",", 1);
            put_json(out, line);
        } else {
            evbuffer_add_printf(out, "%s\n", line);
        }
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * /metrics
 */

static void
hist(struct evbuffer *b, const char *name, const char *svc, const struct stats_hist *h)
{
    uint64_t cum = 0;

    for (size_t i = 0; i <= STATS_BOUNDS; i++) {
        cum += stats_get(&h->bucket[i]);
        evbuffer_add_printf(b, "%s_bucket{service=\"", name);
        put_label(b, svc);
        if (i < STATS_BOUNDS)
            evbuffer_add_printf(b, "\",le=\"%g\"} %llu\n", (double)stats_bounds_us[i] / 1e6,
                                (unsigned long long)cum);
        else
            evbuffer_add_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    evbuffer_add_printf(b, "%s_sum{service=\"", name);
    put_label(b, svc);
    evbuffer_add_printf(b, "\"} %.6f\n", (double)stats_get(&h->sum_us) / 1e6);
    evbuffer_add_printf(b, "%s_count{service=\"", name);
    put_label(b, svc);
    evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)stats_get(&h->count));
}

static void
metrics_services(struct evbuffer *b)
{
    /* One service's sums at a time: struct stats_svc is 4 KiB, too big to keep one per slot. */
    struct stats_svc *sums = malloc(sizeof(*sums));
    int n = stats_nslots(); /* a service a reload dropped keeps its series */

    if (sums == NULL)
        return;
    family(b, "portier_requests_total", "counter",
           "Requests answered, by service and status code.");
    for (int s = 0; s < n; s++) {
        stats_sum_svc(s, sums);
        for (size_t c = 0; c < STATS_CODES; c++) {
            uint64_t v = stats_get(&sums->codes[c]);
            if (v == 0)
                continue;
            evbuffer_add(b, "portier_requests_total{service=\"", 32);
            put_label(b, stats_slot_name(s));
            evbuffer_add_printf(b, "\",code=\"%zu\"} %llu\n", c + STATS_CODE_MIN,
                                (unsigned long long)v);
        }
    }
    family(b, "portier_request_duration_seconds", "histogram",
           "From a request's head to the last byte of its answer queued, by service.");
    for (int s = 0; s < n; s++) {
        stats_sum_svc(s, sums);
        hist(b, "portier_request_duration_seconds", stats_slot_name(s), &sums->duration);
    }
    family(b, "portier_upstream_response_seconds", "histogram",
           "From a request sent to its server to the response head, by service.");
    for (int s = 1; s < n; s++) {
        stats_sum_svc(s, sums);
        hist(b, "portier_upstream_response_seconds", stats_slot_name(s), &sums->upstream);
    }
    family(b, "portier_retries_total", "counter",
           "Requests sent again to another server after a failure, by service.");
    for (int s = 1; s < n; s++) {
        stats_sum_svc(s, sums);
        evbuffer_add(b, "portier_retries_total{service=\"", 31);
        put_label(b, stats_slot_name(s));
        evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)stats_get(&sums->retries));
    }
    free(sums);
}

/* The servers of the running config: up, and their failed connections. */
static void
metrics_servers(struct evbuffer *b, const struct runtime *rt)
{
    int64_t now = loop_mono_ms();

    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            family(b, "portier_server_up", "gauge",
                   "1 when the server takes requests: not in cooldown, passing its health check.");
        else
            family(b, "portier_upstream_connect_errors_total", "counter",
                   "Connections to the server that failed (refused, reset, timed out).");
        for (size_t i = 0; i < rt->cfg->nservices; i++) {
            struct balancer_set *set = balancer_acquire(rt->balancers[i]);
            for (size_t k = 0; k < balancer_set_size(set); k++) {
                const struct balancer_server *srv = balancer_set_server(set, k);
                evbuffer_add_printf(b, "%s{service=\"",
                                    pass == 0 ? "portier_server_up"
                                              : "portier_upstream_connect_errors_total");
                put_label(b, rt->cfg->services[i].name);
                evbuffer_add(b, "\",server=\"", 10);
                put_label(b, balancer_server_addr(srv)->label);
                if (pass == 0)
                    evbuffer_add_printf(b, "\"} %d\n", server_up(srv, now) ? 1 : 0);
                else
                    evbuffer_add_printf(b, "\"} %llu\n",
                                        (unsigned long long)balancer_server_failures(srv));
            }
            balancer_set_unref(set);
        }
    }
}

static void
metrics_dns(struct evbuffer *b)
{
    static const char *const results[STATS_DNS_RESULTS] = {"success", "empty", "failure"};
    int n = stats_nslots();

    family(b, "portier_dns_resolutions_total", "counter",
           "DNS rounds for dns: services, by service and result.");
    for (int s = 1; s < n; s++) {
        for (int r = 0; r < STATS_DNS_RESULTS; r++) {
            uint64_t v = stats_dns_count(s, (enum stats_dns)r);
            if (v == 0)
                continue;
            evbuffer_add(b, "portier_dns_resolutions_total{service=\"", 39);
            put_label(b, stats_slot_name(s));
            evbuffer_add_printf(b, "\",result=\"%s\"} %llu\n", results[r], (unsigned long long)v);
        }
    }
}

static void
metrics_process_totals(struct evbuffer *b, const struct admin *a)
{
    static const char *const conn_states[STATS_CONN_STATES] = {"handshake", "active", "idle"};
    static const char *const tls_results[STATS_TLS_RESULTS] = {"full", "resumed", "failed"};
    const struct stats_main *m = stats_main();
    struct stats *sum = malloc(sizeof(*sum));

    if (sum == NULL)
        return;
    stats_sum(sum);
    family(b, "portier_connections", "gauge", "Client connections open, by state.");
    for (int i = 0; i < STATS_CONN_STATES; i++)
        evbuffer_add_printf(b, "portier_connections{state=\"%s\"} %lld\n", conn_states[i],
                            (long long)stats_get(&sum->conns[i]));
    family(b, "portier_bytes_total", "counter", "Bytes received from and sent to clients.");
    evbuffer_add_printf(b, "portier_bytes_total{direction=\"in\"} %llu\n",
                        (unsigned long long)stats_get(&sum->bytes_in));
    evbuffer_add_printf(b, "portier_bytes_total{direction=\"out\"} %llu\n",
                        (unsigned long long)stats_get(&sum->bytes_out));
    family(b, "portier_tls_handshakes_total", "counter", "TLS handshakes with clients, by result.");
    for (int i = 0; i < STATS_TLS_RESULTS; i++)
        evbuffer_add_printf(b, "portier_tls_handshakes_total{result=\"%s\"} %llu\n", tls_results[i],
                            (unsigned long long)stats_get(&sum->tls[i]));
    free(sum);
    family(b, "portier_config_reloads_total", "counter", "SIGHUP reloads, by result.");
    evbuffer_add_printf(b, "portier_config_reloads_total{result=\"success\"} %llu\n",
                        (unsigned long long)m->reloads_ok);
    evbuffer_add_printf(b, "portier_config_reloads_total{result=\"failure\"} %llu\n",
                        (unsigned long long)m->reloads_failed);
    family(b, "portier_config_last_reload_success_timestamp_seconds", "gauge",
           "When the running config was loaded (the start counts).");
    evbuffer_add_printf(b, "portier_config_last_reload_success_timestamp_seconds %.3f\n",
                        m->last_reload_success);
    family(b, "portier_build_info", "gauge", "portier's version.");
    evbuffer_add(b, "portier_build_info{version=\"", 28);
    put_label(b, a->view->version);
    evbuffer_add(b, "\"} 1\n", 5);
}

/* Open descriptors: the entries of /proc/self/fd, less the one opendir() holds. */
static long
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = -1;

    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 2; /* "." and ".." */
}

static void
metrics_process(struct evbuffer *b)
{
    char buf[1024];
    unsigned long utime = 0, stime = 0, vsize = 0;
    long rss = 0, ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    struct rlimit rl;
    FILE *f = fopen("/proc/self/stat", "r");
    char *p = NULL;

    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    }
    /* Fields 3 on (state ppid ...), space-separated: utime is 14, stime 15, vsize 23, rss 24. */
    for (int field = 3; p != NULL && field <= 24; field++) {
        char *end;
        p = strchr(p, ' ');
        if (p == NULL)
            break;
        p++;
        unsigned long v = strtoul(p, &end, 10);
        if (field == 14)
            utime = v;
        else if (field == 15)
            stime = v;
        else if (field == 23)
            vsize = v;
        else if (field == 24)
            rss = (long)v;
        if (field == 24 && end == p)
            p = NULL; /* not a number: the format is not what this reads */
    }
    if (p == NULL)
        return;
    family(b, "process_cpu_seconds_total", "counter",
           "User and system CPU time spent, in seconds.");
    evbuffer_add_printf(b, "process_cpu_seconds_total %.2f\n",
                        (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100));
    family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    evbuffer_add_printf(b, "process_resident_memory_bytes %lld\n", (long long)rss * page);
    family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    evbuffer_add_printf(b, "process_virtual_memory_bytes %lu\n", vsize);
    family(b, "process_open_fds", "gauge", "Open file descriptors.");
    evbuffer_add_printf(b, "process_open_fds %ld\n", open_fds());
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        family(b, "process_max_fds", "gauge", "The most file descriptors the process may open.");
        evbuffer_add_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    family(b, "process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.");
    evbuffer_add_printf(b, "process_start_time_seconds %.3f\n", stats_main()->started);
}

static void
serve_metrics(struct admin *a, struct evbuffer *b)
{
    metrics_services(b);
    metrics_servers(b, rt_of(a));
    metrics_dns(b);
    metrics_process_totals(b, a);
    metrics_process(b);
}

/* ---------------------------------------------------------------------------------------------
 * /api/status
 */

static void
status_routes(struct evbuffer *b, const struct config *cfg)
{
    evbuffer_add(b, "\"routes\":[", 10);
    for (size_t r = 0; r < cfg->nroutes; r++) {
        const struct config_route *rt = &cfg->routes[r];
        evbuffer_add(b, r > 0 ? ",{\"host\":" : "{\"host\":", r > 0 ? 9 : 8);
        /* A provider's route may match any host. */
        if (rt->host != NULL)
            put_json(b, rt->host);
        else
            evbuffer_add(b, "null", 4);
        evbuffer_add(b, ",\"path\":", 8);
        put_json(b, rt->path);
        evbuffer_add_printf(b, ",\"exact\":%s", rt->exact ? "true" : "false");
        evbuffer_add(b, ",\"service\":", 11);
        put_json(b, rt->service_name);
        evbuffer_add_printf(b, ",\"redirect_https\":%s}", rt->redirect_https ? "true" : "false");
    }
    evbuffer_add(b, "],\"default_service\":", 20);
    if (cfg->default_service >= 0)
        put_json(b, cfg->services[cfg->default_service].name);
    else
        evbuffer_add(b, "null", 4);
}

static void
status_source(struct evbuffer *b, const struct admin *a, size_t i)
{
    static const char *const results[STATS_DNS_RESULTS] = {"success", "empty", "failure"};
    const struct config_service *svc = &rt_of(a)->cfg->services[i];
    enum stats_dns last;
    double when;

    evbuffer_add_printf(b, "\"source\":\"%s\",\"dns\":",
                        svc->dns != NULL ? "dns"
                        : svc->kube      ? "kubernetes"
                                         : "static");
    if (svc->dns != NULL)
        put_json(b, svc->dns);
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add(b, ",\"resolution\":", 14);
    if (discovery_last(*a->view->disc, i, &when, &last))
        evbuffer_add_printf(b, "{\"time\":%.3f,\"result\":\"%s\"}", when, results[last]);
    else
        evbuffer_add(b, "null", 4);
    evbuffer_add(b, ",\"health_check\":", 16);
    if (svc->health.path != NULL) {
        evbuffer_add(b, "{\"path\":", 8);
        put_json(b, svc->health.path);
        evbuffer_add_printf(b, ",\"interval_s\":%.3f}", (double)svc->health.interval_ms / 1000);
    } else {
        evbuffer_add(b, "null", 4);
    }
}

static void
status_servers(struct evbuffer *b, const struct runtime *rt, size_t i)
{
    struct balancer_set *set = balancer_acquire(rt->balancers[i]);
    int64_t now = loop_mono_ms();

    evbuffer_add(b, ",\"servers\":[", 12);
    for (size_t k = 0; k < balancer_set_size(set); k++) {
        const struct balancer_server *srv = balancer_set_server(set, k);
        evbuffer_add(b, k > 0 ? ",{\"address\":" : "{\"address\":", k > 0 ? 12 : 11);
        put_json(b, balancer_server_addr(srv)->label);
        evbuffer_add_printf(b, ",\"up\":%s,\"connect_errors\":%llu}",
                            server_up(srv, now) ? "true" : "false",
                            (unsigned long long)balancer_server_failures(srv));
    }
    evbuffer_add(b, "]", 1);
    balancer_set_unref(set);
}

static void
status_counts(struct evbuffer *b, int slot, double now, struct stats_svc *sums)
{
    struct stats_window w;
    uint64_t total = 0;
    bool first = true;

    stats_sum_svc(slot, sums);
    evbuffer_add(b, ",\"codes\":{", 10);
    for (size_t c = 0; c < STATS_CODES; c++) {
        uint64_t v = stats_get(&sums->codes[c]);
        if (v == 0)
            continue;
        total += v;
        evbuffer_add_printf(b, "%s\"%zu\":%llu", first ? "" : ",", c + STATS_CODE_MIN,
                            (unsigned long long)v);
        first = false;
    }
    stats_window(slot, now, &w);
    evbuffer_add_printf(b, "},\"requests\":%llu,\"rps\":", (unsigned long long)total);
    put_num_or_null(b, w.seconds > 0 ? (double)w.requests / w.seconds : -1);
    evbuffer_add(b, ",\"error_rate\":", 14);
    put_num_or_null(b, w.requests > 0 ? (double)w.errors / (double)w.requests : -1);
    evbuffer_add(b, ",\"p50_ms\":", 10);
    double q = stats_quantile(&w, 0.5);
    put_num_or_null(b, q < 0 ? q : q * 1000);
    evbuffer_add(b, ",\"p99_ms\":", 10);
    q = stats_quantile(&w, 0.99);
    put_num_or_null(b, q < 0 ? q : q * 1000);
}

static void
serve_status(struct admin *a, struct evbuffer *b)
{
    const struct runtime *rt = rt_of(a);
    const struct stats_main *m = stats_main();
    struct stats *sum = malloc(sizeof(*sum));
    struct stats_svc *sums = malloc(sizeof(*sums));
    double now = stats_now();
    struct stats_window w0;
    int np;

    if (sum == NULL || sums == NULL) {
        free(sum);
        free(sums);
        return;
    }
    stats_sum(sum);
    evbuffer_add(b, "{\"version\":", 11);
    put_json(b, a->view->version);
    evbuffer_add_printf(b, ",\"now\":%.3f,\"started\":%.3f,\"workers\":%u,\"config\":", now,
                        m->started, a->view->workers);
    put_json(b, a->view->config_path);
    evbuffer_add(b, ",\"problems\":[", 13);
    np = problems(a, b, true);
    evbuffer_add_printf(b, "],\"ready\":%s", np == 0 ? "true" : "false");
    evbuffer_add_printf(b,
                        ",\"connections\":{\"handshake\":%lld,\"active\":%lld,\"idle\":%lld}"
                        ",\"bytes\":{\"in\":%llu,\"out\":%llu}",
                        (long long)stats_get(&sum->conns[STATS_CONN_HANDSHAKE]),
                        (long long)stats_get(&sum->conns[STATS_CONN_ACTIVE]),
                        (long long)stats_get(&sum->conns[STATS_CONN_IDLE]),
                        (unsigned long long)stats_get(&sum->bytes_in),
                        (unsigned long long)stats_get(&sum->bytes_out));
    evbuffer_add_printf(b,
                        ",\"reload\":{\"last\":%.3f,\"result\":\"%s\",\"success\":%llu,"
                        "\"failure\":%llu}",
                        m->last_reload, m->last_reload_ok ? "success" : "failure",
                        (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
    stats_window(STATS_NO_SERVICE, now, &w0);
    evbuffer_add_printf(b, ",\"window_s\":%.1f,", w0.seconds);
    status_routes(b, rt->cfg);
    evbuffer_add(b, ",\"services\":[", 13);
    for (size_t i = 0; i < rt->cfg->nservices; i++) {
        evbuffer_add(b, i > 0 ? ",{\"name\":" : "{\"name\":", i > 0 ? 9 : 8);
        put_json(b, rt->cfg->services[i].name);
        evbuffer_add(b, ",", 1);
        status_source(b, a, i);
        status_servers(b, rt, i);
        status_counts(b, rt->slots[i], now, sums);
        evbuffer_add(b, "}", 1);
    }
    evbuffer_add(b, "]}\n", 3);
    free(sum);
    free(sums);
}

/* ---------------------------------------------------------------------------------------------
 * Requests
 */

static void
reply(struct evhttp_request *req, int code, const char *reason, const char *type,
      struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    /* HEAD: the length GET would have, and no body (evhttp would send it). */
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char len[24];
        snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
        evhttp_add_header(h, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_send_reply(req, code, reason, body);
}

static void
request_cb(struct evhttp_request *req, void *arg)
{
    static const char text[] = "text/plain; charset=utf-8";
    struct admin *a = arg;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    if (path == NULL || path[0] == '\0')
        path = "/";
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        evbuffer_add_printf(b, "method not allowed: GET or HEAD\n");
        reply(req, 405, "Method Not Allowed", text, b);
    } else if (strcmp(path, "/metrics") == 0) {
        serve_metrics(a, b);
        reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
    } else if (strcmp(path, "/healthz") == 0) {
        evbuffer_add(b, "ok\n", 3);
        reply(req, HTTP_OK, "OK", text, b);
    } else if (strcmp(path, "/readyz") == 0) {
        struct evbuffer *lines = evbuffer_new();
        int n = lines != NULL ? problems(a, lines, false) : 0;
        evbuffer_add_printf(b, "%s\n", n == 0 ? "ready" : "not ready");
        if (lines != NULL) {
            evbuffer_add_buffer(b, lines);
            evbuffer_free(lines);
        }
        reply(req, n == 0 ? HTTP_OK : 503, n == 0 ? "OK" : "Service Unavailable", text, b);
    } else if (strcmp(path, "/api/status") == 0) {
        serve_status(a, b);
        reply(req, HTTP_OK, "OK", "application/json", b);
    } else if (strcmp(path, "/") == 0) {
        evbuffer_add_reference(b, admin_status_html, admin_status_html_len, NULL, NULL);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; style-src "
                          "'unsafe-inline'; img-src data:; connect-src 'self'");
        reply(req, HTTP_OK, "OK", "text/html; charset=utf-8", b);
    } else {
        evbuffer_add_printf(b, "not found: the admin listener serves /, /metrics, /healthz, "
                               "/readyz and /api/status\n");
        reply(req, HTTP_NOTFOUND, "Not Found", text, b);
    }
    evbuffer_free(b);
}

static void
sample_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    stats_sample(stats_now());
}

/* A listening socket of our own (the admin is one socket, not one per worker). */
static int
admin_socket(const struct config_addr *addr, char *err, size_t errlen)
{
    int one = 1;
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        snprintf(err, errlen, "admin %s: socket: %s", addr->spec, strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 128) < 0) {
        snprintf(err, errlen, "admin %s: %s", addr->spec, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct admin *
admin_start(struct event_base *base, const struct config_addr *addr, int fd,
            const struct admin_view *view, char *err, size_t errlen)
{
    static const struct timeval every = {STATS_SAMPLE_MS / 1000, (STATS_SAMPLE_MS % 1000) * 1000};
    struct admin *a = calloc(1, sizeof(*a));

    if (a == NULL || (a->http = evhttp_new(base)) == NULL ||
        (a->sampler = event_new(base, -1, EV_PERSIST, sample_cb, a)) == NULL) {
        snprintf(err, errlen, "out of memory");
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    a->view = view;
    if (fd < 0 && (fd = admin_socket(addr, err, errlen)) < 0)
        goto fail;
    a->fd = fd;
    if (evhttp_accept_socket(a->http, fd) < 0) {
        snprintf(err, errlen, "admin %s: cannot serve it", addr->spec);
        close(fd);
        goto fail;
    }
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEAD);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_HEAD);
    /* Every method reaches request_cb, which answers 405 itself (libevent would say 501). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, request_cb, a);
    stats_sample(stats_now());
    event_add(a->sampler, &every);
    return a;

fail:
    admin_stop(a);
    return NULL;
}

int
admin_fd(const struct admin *a)
{
    return a->fd;
}

void
admin_stop(struct admin *a)
{
    if (a == NULL)
        return;
    if (a->sampler != NULL)
        event_free(a->sampler);
    if (a->http != NULL)
        evhttp_free(a->http); /* closes the listener and the connections */
    free(a);
}
