/* portier: argv, config check and load, workers, and the signals that reload, reopen and stop. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <http_parser.h>
#include <openssl/crypto.h>
#include <yaml.h>

#include "admin.h"
#include "bufpool.h"
#include "config.h"
#include "discovery.h"
#include "handover.h"
#include "health.h"
#include "kube.h"
#include "log.h"
#include "loop.h"
#include "runtime.h"
#include "stats.h"
#include "tls.h"
#include "worker.h"

#define PORTIER_VERSION "0.1.0"

static void
usage(FILE *f)
{
    fprintf(
        f,
        "usage: portier [-d] [-x PATH] -c FILE  run with the config in FILE\n"
        "       portier [-d] -t -c FILE   check FILE and exit (0: good, 1: errors on stderr)\n"
        "       portier -v                print the version and the linked libraries'\n"
        "  -d  debug: also log at the debug level (why each connection closed)\n"
        "  -x  take over the listening sockets of the portier running with -x PATH, if any,\n"
        "      and hand them to the next one started so (replacing portier loses no connection)\n");
}

static void
version(void)
{
    unsigned long hp = http_parser_version();

    printf("portier %s\nlibevent %s\n%s\nlibyaml %s\nhttp-parser %lu.%lu.%lu\n", PORTIER_VERSION,
           event_get_version(), OpenSSL_version(OPENSSL_VERSION), yaml_get_version_string(),
           (hp >> 16) & 255, (hp >> 8) & 255, hp & 255);
}

/* libevent's own warnings and errors go to our log; its chatter (nameserver up/down) does not,
 * since discovery logs what matters once. */
static void
libevent_log_cb(int severity, const char *msg)
{
    if (severity >= EVENT_LOG_WARN)
        log_msg(severity == EVENT_LOG_WARN ? LOG_WARN : LOG_ERROR, "libevent: %s", msg);
}

/* The main thread's state: what signals act on. */
struct main_ctx {
    const char *path;
    struct proxy proxy;
    struct loop lp;               /* the main thread's loop: signals, discovery, health checks */
    struct discovery *disc;       /* owned: feeds the current runtime's dns services */
    struct health *health;        /* owned: probes the current runtime's servers, or NULL */
    struct kube *kube;            /* owned: the Kubernetes provider, or NULL */
    struct admin *admin;          /* owned: the admin listener, or NULL */
    const char *handover;         /* -x PATH, or NULL */
    const char *admin_spec;       /* the admin address served (a reload cannot change it) */
    struct handover_server *hsrv; /* owned: waits for a successor on handover, or NULL */
    struct admin_view view;       /* what the admin reads: points into this struct */
};

static int
access_log_apply(const struct config *cfg, char *err, size_t errlen)
{
    switch (cfg->access_log) {
    case CONFIG_ACCESS_LOG_OFF:
        return log_access_open("off", err, errlen);
    case CONFIG_ACCESS_LOG_FILE:
        return log_access_open(cfg->access_log_path, err, errlen);
    case CONFIG_ACCESS_LOG_STDOUT:
        break;
    }
    return log_access_open("stdout", err, errlen);
}

/* Logs each line of a multi-line error text at level. */
static void
log_lines(enum log_level level, const char *text)
{
    const char *p = text;

    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        int n = nl != NULL ? (int)(nl - p) : (int)strlen(p);
        if (n > 0)
            log_msg(level, "%.*s", n, p);
        p += n + (nl != NULL);
    }
}

/* Counts a reload's result for the metrics and the status page. */
static void
reload_counted(bool ok)
{
    struct stats_main *sm = stats_main();

    sm->last_reload = stats_now();
    sm->last_reload_ok = ok;
    if (ok) {
        sm->reloads_ok++;
        sm->last_reload_success = sm->last_reload;
    } else {
        sm->reloads_failed++;
    }
}

/*
 * Serves cfg to every request that starts from now on (requests in flight finish on the runtime
 * they began with): a reload's config, or one the Kubernetes provider extended. Returns false,
 * with the running config kept, when cfg cannot be served.
 */
static bool
runtime_apply(struct main_ctx *m, struct config *cfg, const char *who)
{
    char err[CONFIG_ERR_SIZE];
    struct runtime *rt = runtime_new(cfg, err, sizeof(err));

    if (rt == NULL) {
        log_msg(LOG_ERROR, "%s: %s, keeping the running config", who, err);
        return false;
    }
    struct discovery *disc = discovery_start(m->lp.base, rt, m->proxy.rt, err, sizeof(err));
    if (disc == NULL) {
        log_msg(LOG_ERROR, "%s: %s, keeping the running config", who, err);
        runtime_unref(rt);
        return false;
    }
    discovery_stop(m->disc);
    m->disc = disc;
    /* The new prober starts from the old one's verdicts, so a server known to be down stays out
     * of rotation across the reload. */
    struct health *health = health_start(&m->lp, rt, m->health);
    health_stop(m->health);
    m->health = health;
    loop_set_runtime(&m->lp, rt);
    pthread_mutex_lock(&m->proxy.lock);
    struct runtime *old = m->proxy.rt;
    m->proxy.rt = rt;
    pthread_mutex_unlock(&m->proxy.lock);
    runtime_unref(old);
    for (size_t i = 0; i < m->proxy.nworkers; i++)
        worker_notify(m->proxy.workers[i], WORKER_RELOAD);
    return true;
}

/* The Kubernetes provider's new config (upward from kube.c). */
static void
kube_apply(void *arg, struct config *cfg)
{
    runtime_apply(arg, cfg, "kubernetes");
    config_unref(cfg);
}

/* SIGHUP: a new config applies to new requests; a bad one is logged and the old one kept. */
static bool
reload_apply(struct main_ctx *m)
{
    char err[CONFIG_ERR_SIZE], what[128];
    struct config *cfg = config_load(m->path, err, sizeof(err));

    if (cfg == NULL) {
        log_msg(LOG_ERROR, "reload: %s has errors, keeping the running config:", m->path);
        log_lines(LOG_ERROR, err);
        return false;
    }
    if (tls_check(cfg, err, sizeof(err)) > 0) {
        log_msg(LOG_ERROR, "reload: %s has errors, keeping the running config:", m->path);
        log_lines(LOG_ERROR, err);
        config_unref(cfg);
        return false;
    }
    log_lines(LOG_WARN, err); /* the warnings, if any */
    bool restart = config_needs_restart(m->proxy.rt->cfg, cfg, what, sizeof(what));
    /* With the provider, the file is its base: it serves the file extended with the cluster's. */
    if (m->kube != NULL) {
        kube_set_base(m->kube, cfg);
    } else if (!runtime_apply(m, cfg, "reload")) {
        config_unref(cfg);
        return false;
    }
    if (restart)
        log_msg(LOG_WARN, "reload: a change of %s needs a restart; the rest applies now", what);
    if (access_log_apply(cfg, err, sizeof(err)) < 0)
        log_msg(LOG_ERROR, "reload: %s; the access log is unchanged", err);
    config_unref(cfg);
    log_msg(LOG_INFO, "reload: %s applied", m->path);
    return true;
}

/* Stops accepting (the public listeners and admin close) and lets the workers drain, then ends
 * the main loop: SIGTERM, SIGINT, and a successor that took over. */
static void
drain(struct main_ctx *m)
{
    for (size_t i = 0; i < m->proxy.nworkers; i++)
        worker_notify(m->proxy.workers[i], WORKER_DRAIN);
    admin_stop(m->admin);
    m->admin = NULL;
    loop_exit(&m->lp);
}

/* The sockets a successor takes: every worker's, and the admin listener's. */
static size_t
handover_sockets(void *arg, struct handover_socket *out, size_t max)
{
    struct main_ctx *m = arg;
    size_t n = 0;

    for (size_t i = 0; i < m->proxy.nworkers; i++)
        n += worker_sockets(m->proxy.workers[i], out + n, max - n);
    if (m->admin != NULL && n < max)
        out[n++] = (struct handover_socket){HANDOVER_ADMIN, m->admin_spec, admin_fd(m->admin)};
    return n;
}

static void
handover_done(void *arg)
{
    drain(arg);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct main_ctx *m = arg;

    (void)what;
    switch (sig) {
    case SIGHUP:
        reload_counted(reload_apply(m));
        break;
    case SIGUSR1:
        if (log_access_reopen() == 0)
            log_msg(LOG_INFO, "access log reopened");
        break;
    default:
        log_msg(LOG_INFO, "%s: draining connections", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        drain(m);
        break;
    }
}

static unsigned
worker_count(const struct config *cfg)
{
    long n = cfg->workers != 0 ? (long)cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : (unsigned)n;
}

static int
serve(struct main_ctx *m, struct config *cfg)
{
    char err[CONFIG_ERR_SIZE];
    static const int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1};
    struct event *sev[4] = {NULL, NULL, NULL, NULL};
    unsigned n = worker_count(cfg);
    struct handover *ho = NULL; /* what a predecessor handed over, until the workers took it */
    int rc = 1;

    /* The listeners accept (in the kernel) before the signal handlers are in place: a SIGTERM or
     * SIGHUP in between waits, blocked, rather than killing portier with the default action. */
    sigset_t stop, unblocked;
    sigemptyset(&stop);
    for (size_t i = 0; i < 4; i++)
        sigaddset(&stop, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &stop, &unblocked);
    if (access_log_apply(cfg, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "%s", err);
        pthread_sigmask(SIG_SETMASK, &unblocked, NULL);
        return 1;
    }
    /* The counters exist before the first runtime: it gives its services their slots. */
    if (stats_init(n) < 0) {
        log_msg(LOG_ERROR, "out of memory");
        stats_fini();
        return 1;
    }
    stats_main()->started = stats_now();
    reload_counted(true); /* the first load counts as the last successful one */
    stats_main()->reloads_ok = 0;
    m->proxy.rt = runtime_new(cfg, err, sizeof(err));
    if (m->proxy.rt == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        stats_fini();
        return 1;
    }
    if (loop_init(&m->lp, m->proxy.rt, NULL, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "%s", err);
        runtime_unref(m->proxy.rt);
        return 1;
    }
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sized by its element */
    m->proxy.workers = calloc(n, sizeof(*m->proxy.workers));
    if (m->proxy.workers == NULL) {
        log_msg(LOG_ERROR, "out of memory");
        goto out;
    }
    m->disc = discovery_start(m->lp.base, m->proxy.rt, NULL, err, sizeof(err));
    if (m->disc == NULL) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    /* Listeners open only once dns services have servers, or a short while has passed. */
    discovery_wait_first(m->disc, 3000);
    m->health = health_start(&m->lp, m->proxy.rt, NULL);
    if (cfg->kubernetes.enabled) {
        m->kube = kube_start(&m->lp, cfg, kube_apply, m, err, sizeof(err));
        if (m->kube == NULL) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        /* Listeners open with the cluster's routes, or the file's alone after a while. */
        kube_wait_first(m->kube, 5000);
    }
    if (m->handover != NULL && handover_receive(m->handover, &ho, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "%s", err);
        goto out;
    }
    if (ho != NULL)
        log_msg(LOG_INFO, "handover: took the listening sockets of the portier at %s", m->handover);
    for (unsigned i = 0; i < n; i++) {
        m->proxy.workers[i] = worker_new((int)i, n, &m->proxy, m->proxy.rt, ho, err, sizeof(err));
        if (m->proxy.workers[i] == NULL) {
            log_msg(LOG_ERROR, "%s", err);
            goto out;
        }
        m->proxy.nworkers++;
    }
    for (size_t i = 0; i < 4; i++) {
        sev[i] = evsignal_new(m->lp.base, sigs[i], signal_cb, m);
        if (sev[i] == NULL || evsignal_add(sev[i], NULL) < 0) {
            log_msg(LOG_ERROR, "cannot handle signal %d", sigs[i]);
            goto out;
        }
    }
    /* Handled from here on: one that came meanwhile is delivered now, to the loop. */
    pthread_sigmask(SIG_SETMASK, &unblocked, NULL);
    for (size_t i = 0; i < m->proxy.nworkers; i++) {
        if (worker_start(m->proxy.workers[i], err, sizeof(err)) < 0) {
            log_msg(LOG_ERROR, "%s", err);
            for (size_t j = 0; j < i; j++)
                worker_notify(m->proxy.workers[j], WORKER_DRAIN);
            goto out;
        }
    }
    if (cfg->admin != NULL) {
        m->view =
            (struct admin_view){PORTIER_VERSION, m->path, n, &m->proxy.rt, &m->disc, &m->kube};
        m->admin_spec = cfg->admin->spec; /* cfg outlives serve() */
        m->admin =
            admin_start(m->lp.base, cfg->admin, handover_take(ho, HANDOVER_ADMIN, cfg->admin->spec),
                        &m->view, err, sizeof(err));
        if (m->admin == NULL) {
            log_msg(LOG_ERROR, "%s", err);
            for (size_t i = 0; i < m->proxy.nworkers; i++)
                worker_notify(m->proxy.workers[i], WORKER_DRAIN);
            goto out;
        }
    }
    for (size_t i = 0; i < cfg->nlisteners; i++)
        log_msg(LOG_INFO, "listening on %s (%u worker%s)", cfg->listeners[i].addr.spec, n,
                n == 1 ? "" : "s");
    if (cfg->admin != NULL)
        log_msg(LOG_INFO, "admin on http://%s/ (metrics, health, status page)", cfg->admin->spec);
    if (ho != NULL) {
        /* Serving now: the old portier may stop accepting; what it queued is ours to accept. */
        if (handover_ready(ho, err, sizeof(err)) < 0)
            log_msg(LOG_WARN, "%s", err);
        handover_free(ho);
        ho = NULL;
    }
    if (m->handover != NULL) {
        const struct handover_ops ops = {handover_sockets, handover_done, m};
        m->hsrv = handover_listen(m->lp.base, m->handover, &ops, err, sizeof(err));
        if (m->hsrv == NULL)
            log_msg(LOG_ERROR, "%s; the next portier cannot take over from this one", err);
        else
            log_msg(LOG_INFO, "handover: a successor started with -x %s takes over from here",
                    m->handover);
    }
    while ((rc = loop_turn(&m->lp, true)) == 0)
        ;
    if (rc < 0)
        log_msg(LOG_ERROR, "the main event loop failed");
    rc = 0;
out:
    pthread_sigmask(SIG_SETMASK, &unblocked, NULL);
    for (size_t i = 0; m->proxy.workers != NULL && i < m->proxy.nworkers; i++)
        worker_join_free(m->proxy.workers[i]);
    for (size_t i = 0; i < 4; i++) {
        if (sev[i] != NULL)
            event_free(sev[i]);
    }
    free(m->proxy.workers);
    handover_free(ho);
    handover_stop(m->hsrv);
    admin_stop(m->admin);
    kube_stop(m->kube);
    health_stop(m->health);
    discovery_stop(m->disc);
    loop_fini(&m->lp);
    runtime_unref(m->proxy.rt);
    stats_fini(); /* after the workers and the runtimes that count into it */
    if (rc == 0)
        log_msg(LOG_INFO, "stopped");
    return rc;
}

int
main(int argc, char **argv)
{
    struct main_ctx m = {.path = NULL, .proxy = {.lock = PTHREAD_MUTEX_INITIALIZER}};
    char err[CONFIG_ERR_SIZE];
    int check = 0, opt, rc;

    while ((opt = getopt(argc, argv, "c:dtvhx:")) != -1) {
        switch (opt) {
        case 'c':
            m.path = optarg;
            break;
        case 'd':
            log_set_debug(true);
            break;
        case 't':
            check = 1;
            break;
        case 'x':
            m.handover = optarg;
            break;
        case 'v':
            version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (m.path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct config *cfg = config_load(m.path, err, sizeof(err));
    if (cfg == NULL) {
        fputs(err, stderr);
        return 1;
    }
    rc = tls_check(cfg, err, sizeof(err));
    fputs(err, stderr);
    if (rc > 0) {
        config_unref(cfg);
        return 1;
    }
    if (check) {
        config_unref(cfg);
        fprintf(stderr, "%s: ok\n", m.path);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    /* First: libevent must free every block with the functions that allocated it. */
    if (bufpool_install() < 0)
        log_msg(LOG_WARN, "no buffer cache: libevent allocates through malloc");
    event_set_log_callback(libevent_log_cb);
    /* http-parser now reads only the API server's responses (kubeapi.c), whose heads it streams
     * through callbacks and nothing keeps; its built-in 80 KiB limit stays lifted there, as when
     * it also read our clients' heads (which portier's own scanner bounds). */
    http_parser_set_max_header_size(UINT32_MAX);
    if (evthread_use_pthreads() < 0) {
        log_msg(LOG_ERROR, "libevent without thread support");
        config_unref(cfg);
        return 1;
    }
    rc = serve(&m, cfg);
    config_unref(cfg);
    return rc;
}
