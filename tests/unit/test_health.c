/*
 * Unit tests for health.c on a real loop: tiny origins on 127.0.0.7x (ephemeral ports) that answer
 * 200, 500, garbage or nothing, a runtime from a YAML string, and loop_turn() until the verdicts
 * land in the balancer. The log goes to a file while a test runs, so that it can be checked too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "health.h"
#include "loop.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define ORIGINS 6
#define ORIGIN_CONNS 8
#define DEADLINE_MS 5000
#define TICK_MS 20
#define PLAIN_SERVER "127.0.0.70:1" /* nothing listens: a probe would mark it down */

enum origin_mode {
    ORIGIN_OK,      /* 200 */
    ORIGIN_FAIL,    /* 500 */
    ORIGIN_REDIR,   /* 302: still up */
    ORIGIN_GARBAGE, /* not HTTP */
    ORIGIN_SILENT,  /* accepts, reads, never answers */
    ORIGIN_REFUSED, /* nothing listens */
};

struct origin;

struct origin_conn {
    struct origin *o; /* borrowed */
    int fd;           /* owned; -1 when the slot is free */
    struct event ev;
    size_t len;
    char buf[1024];
};

/* A fake server on lp's base: one listening socket, its connections, and what it saw. */
struct origin {
    int fd; /* owned: the listening socket; -1 for ORIGIN_REFUSED */
    struct event ev;
    struct sockaddr_in sin;
    char label[32]; /* "127.0.0.71:40000" */
    enum origin_mode mode;
    int accepted;     /* connections so far */
    int requests;     /* complete request heads so far */
    int open;         /* connections open now */
    char first[1024]; /* the first request head */
    struct origin_conn conns[ORIGIN_CONNS];
};

struct fixture {
    struct loop lp;
    struct event tick; /* so that no turn waits longer than TICK_MS, whatever is armed */
    struct origin o[ORIGINS];
    size_t n;
    struct runtime *rt;
    struct health *h;
    int saved_stderr;
    char logpath[64];
};

/* ---------------------------------------------------------------------------------------------
 * Origins
 */

static void
conn_drop(struct origin_conn *c)
{
    event_del(&c->ev);
    close(c->fd);
    c->fd = -1;
    c->o->open--;
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    static const char *const answers[] = {
        [ORIGIN_OK] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        [ORIGIN_FAIL] = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        /* An interim head, then the final one. */
        [ORIGIN_REDIR] = ("HTTP/1.1 100 Continue\r\n\r\n"
                          "HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n"),
        [ORIGIN_GARBAGE] = "SSH-2.0-OpenSSH_9.2\r\n\r\n",
    };
    struct origin_conn *c = arg;
    ssize_t n;

    (void)what;
    n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            conn_drop(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") == NULL)
        return;
    c->o->requests++;
    if (c->o->first[0] == '\0')
        snprintf(c->o->first, sizeof(c->o->first), "%s", c->buf);
    c->len = 0;
    if (c->o->mode == ORIGIN_SILENT)
        return; /* keeps reading, to see the prober close */
    assert_int_equal(write(fd, answers[c->o->mode], strlen(answers[c->o->mode])),
                     (ssize_t)strlen(answers[c->o->mode]));
    conn_drop(c);
}

static void
accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct origin *o = arg;
    int cfd = accept(fd, NULL, NULL);

    (void)what;
    if (cfd < 0)
        return;
    assert_int_equal(fcntl(cfd, F_SETFL, O_NONBLOCK), 0);
    for (size_t i = 0; i < ORIGIN_CONNS; i++) {
        struct origin_conn *c = &o->conns[i];
        if (c->fd >= 0)
            continue;
        c->fd = cfd;
        c->len = 0;
        o->accepted++;
        o->open++;
        event_assign(&c->ev, event_get_base(&o->ev), cfd, EV_READ | EV_PERSIST, conn_read_cb, c);
        event_add(&c->ev, NULL);
        return;
    }
    fail_msg("%s: more than %d connections at once", o->label, ORIGIN_CONNS);
}

/* Starts an origin on 127.0.0.<octet>, on an ephemeral port (or, refused, on port's). */
static void
origin_start(struct fixture *f, int octet, enum origin_mode mode, unsigned port)
{
    struct origin *o = &f->o[f->n++];
    socklen_t len = sizeof(o->sin);

    memset(o, 0, sizeof(*o));
    o->fd = -1;
    o->mode = mode;
    for (size_t i = 0; i < ORIGIN_CONNS; i++) {
        o->conns[i].fd = -1;
        o->conns[i].o = o;
    }
    o->sin.sin_family = AF_INET;
    o->sin.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)octet);
    o->sin.sin_port = htons((uint16_t)port);
    if (mode != ORIGIN_REFUSED) {
        o->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(o->fd >= 0);
        assert_int_equal(bind(o->fd, (struct sockaddr *)&o->sin, sizeof(o->sin)), 0);
        assert_int_equal(listen(o->fd, 16), 0);
        assert_int_equal(getsockname(o->fd, (struct sockaddr *)&o->sin, &len), 0);
        event_assign(&o->ev, f->lp.base, o->fd, EV_READ | EV_PERSIST, accept_cb, o);
        event_add(&o->ev, NULL);
    }
    snprintf(o->label, sizeof(o->label), "127.0.0.%d:%u", octet, ntohs(o->sin.sin_port));
}

static void
origin_stop(struct origin *o)
{
    for (size_t i = 0; i < ORIGIN_CONNS; i++)
        if (o->conns[i].fd >= 0)
            conn_drop(&o->conns[i]);
    if (o->fd >= 0) {
        event_del(&o->ev);
        close(o->fd);
        o->fd = -1;
    }
}

/* ---------------------------------------------------------------------------------------------
 * The runtime, the loop, the log
 */

/* A runtime whose service "app" has the first n origins of f and a check every 100 ms, and whose
 * service "plain" has none; with timeout_ms not 0, that replaces the check's timeout (see
 * test_no_double_probe). */
static struct runtime *
runtime_for(struct fixture *f, size_t n, uint64_t timeout_ms)
{
    char yaml[2048], err[CONFIG_ERR_SIZE];
    size_t used;
    struct config *cfg;
    struct runtime *rt;

    used = (size_t)snprintf(yaml, sizeof(yaml),
                            "services:\n  plain:\n    servers: [\"%s\"]\n"
                            "  app:\n    servers: [",
                            PLAIN_SERVER);
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(yaml + used, sizeof(yaml) - used, "%s\"%s\"", i ? ", " : "",
                                 f->o[i].label);
    used += (size_t)snprintf(yaml + used, sizeof(yaml) - used,
                             "]\n    health_check: {path: /healthz, interval: 100ms}\n");
    assert_true(used < sizeof(yaml));
    cfg = config_parse("t.yaml", yaml, used, err, sizeof(err));
    assert_string_equal(err, ""); /* the errors, if any */
    assert_non_null(cfg);
    if (timeout_ms != 0)
        cfg->services[1].health.timeout_ms = timeout_ms;
    rt = runtime_new(cfg, err, sizeof(err));
    assert_string_equal(err, "");
    assert_non_null(rt);
    config_unref(cfg);
    return rt;
}

static struct balancer *
app_balancer(const struct runtime *rt)
{
    return rt->balancers[1];
}

/* Returns whether the probe's verdict on label in rt's app is up. */
static bool
probe_up(const struct runtime *rt, const char *label)
{
    struct balancer_set *s = balancer_acquire(app_balancer(rt));
    bool up = false, found = false;

    for (size_t i = 0; i < balancer_set_size(s); i++) {
        const struct balancer_server *srv = balancer_set_server(s, i);
        if (strcmp(balancer_server_addr(srv)->label, label) == 0) {
            up = balancer_server_probe_up(srv);
            found = true;
        }
    }
    balancer_set_unref(s);
    if (!found)
        fail_msg("no server %s", label);
    return up;
}

/* Turns the loop until done(f) or DEADLINE_MS; returns whether done. */
static bool
run_until(struct fixture *f, bool (*done)(struct fixture *f))
{
    int64_t end = loop_mono_ms() + DEADLINE_MS;

    while (!done(f)) {
        if (loop_mono_ms() > end)
            return false;
        assert_int_equal(loop_turn(&f->lp, true), 0);
    }
    return true;
}

/* Turns the loop for ms milliseconds. */
static void
run_for(struct fixture *f, int64_t ms)
{
    int64_t end = loop_mono_ms() + ms;

    while (loop_mono_ms() < end)
        assert_int_equal(loop_turn(&f->lp, true), 0);
}

/* Reads the log written since the test started. */
static void
log_read(struct fixture *f, char *out, size_t cap)
{
    int fd = open(f->logpath, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    assert_true(fd >= 0);
    n = read(fd, out, cap - 1);
    close(fd);
    assert_true(n >= 0);
    out[n] = '\0';
}

/* Returns how many times needle occurs in haystack. */
static int
count_of(const char *haystack, const char *needle)
{
    int n = 0;

    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* The loop needs a runtime of its own; the origins are on its base; stderr goes to a file. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static int
setup(void **state)
{
    struct timeval tick = {0, TICK_MS * 1000};
    static const char yaml[] = "services:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    char err[CONFIG_ERR_SIZE];
    struct fixture *f = calloc(1, sizeof(*f));
    struct config *cfg = config_parse("t.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err));
    struct runtime *rt;
    int fd;

    assert_non_null(f);
    assert_string_equal(err, "");
    assert_non_null(cfg);
    rt = runtime_new(cfg, err, sizeof(err));
    config_unref(cfg);
    assert_string_equal(err, "");
    assert_non_null(rt);
    assert_int_equal(loop_init(&f->lp, rt, NULL, err, sizeof(err)), 0);
    runtime_unref(rt);
    event_assign(&f->tick, f->lp.base, -1, EV_PERSIST, tick_cb, NULL);
    event_add(&f->tick, &tick);
    snprintf(f->logpath, sizeof(f->logpath), "/tmp/test_health.XXXXXX");
    fd = mkstemp(f->logpath);
    assert_true(fd >= 0);
    fflush(stderr);
    f->saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    health_stop(f->h);
    for (size_t i = 0; i < f->n; i++)
        origin_stop(&f->o[i]);
    event_del(&f->tick);
    loop_fini(&f->lp);
    runtime_unref(f->rt);
    fflush(stderr);
    dup2(f->saved_stderr, STDERR_FILENO);
    close(f->saved_stderr);
    unlink(f->logpath);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

static void
test_nothing_to_probe(void **state)
{
    struct fixture *f = *state;

    /* The loop's own runtime has no health_check. */
    assert_null(health_start(&f->lp, f->lp.snap->rt, NULL));
    health_stop(NULL);
}

/* What each kind of server ends as, and what the log says once. */
struct verdict_case {
    enum origin_mode mode;
    bool up;
    const char *why; /* in the "is down" line */
};

static const struct verdict_case verdict_cases[] = {
    {ORIGIN_OK, true, NULL},
    {ORIGIN_REDIR, true, NULL}, /* 302 after an interim 100 */
    {ORIGIN_FAIL, false, "is down: status 500"},
    {ORIGIN_GARBAGE, false, "is down: bad response head"},
    {ORIGIN_SILENT, false, "is down: no response head within 100 ms"},
    {ORIGIN_REFUSED, false, "is down: connect: Connection refused"},
};

static bool
verdicts_done(struct fixture *f)
{
    for (size_t i = 0; i < N(verdict_cases); i++)
        if (probe_up(f->rt, f->o[i].label) != verdict_cases[i].up)
            return false;
    return true;
}

static void
test_verdicts(void **state)
{
    struct fixture *f = *state;
    char log[16384], want[256];

    for (size_t i = 0; i < N(verdict_cases); i++)
        origin_start(f, 71 + (int)i, verdict_cases[i].mode, ntohs(f->o[0].sin.sin_port));
    f->rt = runtime_for(f, N(verdict_cases), 0);
    f->h = health_start(&f->lp, f->rt, NULL);
    assert_non_null(f->h);
    /* Every server starts up; the first round is on the next turn, not inside health_start(). */
    for (size_t i = 0; i < N(verdict_cases); i++)
        assert_true(probe_up(f->rt, f->o[i].label));
    assert_int_equal(f->o[0].accepted, 0);

    assert_true(run_until(f, verdicts_done));
    /* Three failures each, in three rounds: at least 200 ms after the first. */
    for (size_t i = 0; i < N(verdict_cases); i++)
        if (verdict_cases[i].mode != ORIGIN_REFUSED &&
            f->o[i].requests < (verdict_cases[i].up ? 1 : 3))
            fail_msg("%s: %d requests", f->o[i].label, f->o[i].requests);

    /* The request, byte for byte. */
    snprintf(want, sizeof(want),
             "GET /healthz HTTP/1.1\r\nHost: %s\r\nUser-Agent: portier-health-check\r\n"
             "Connection: close\r\n\r\n",
             f->o[0].label);
    assert_string_equal(f->o[0].first, want);

    /* Picks skip the servers that are down. */
    struct balancer_set *s = balancer_acquire(app_balancer(f->rt));
    for (int k = 0; k < 20; k++) {
        const char *label = balancer_server_addr(balancer_pick(s, loop_mono_ms(), NULL))->label;
        if (strcmp(label, f->o[0].label) != 0 && strcmp(label, f->o[1].label) != 0)
            fail_msg("picked %s, which is down", label);
    }
    balancer_set_unref(s);

    /* Stays so, and each change is logged once with its reason. */
    run_for(f, 300);
    assert_true(verdicts_done(f));
    log_read(f, log, sizeof(log));
    for (size_t i = 0; i < N(verdict_cases); i++) {
        snprintf(want, sizeof(want), "health: service app: server %s is down", f->o[i].label);
        if (count_of(log, want) != (verdict_cases[i].up ? 0 : 1))
            fail_msg("want \"%s\" %s in:\n%s", want, verdict_cases[i].up ? "never" : "once", log);
        if (verdict_cases[i].why != NULL) {
            snprintf(want, sizeof(want), "server %s %s", f->o[i].label, verdict_cases[i].why);
            if (count_of(log, want) != 1)
                fail_msg("want \"%s\" in:\n%s", want, log);
        }
    }
    /* The service without a check is never probed. */
    s = balancer_acquire(f->rt->balancers[0]);
    assert_string_equal(balancer_server_addr(balancer_set_server(s, 0))->label, PLAIN_SERVER);
    assert_true(balancer_server_probe_up(balancer_set_server(s, 0)));
    balancer_set_unref(s);
}

static bool
down_done(struct fixture *f)
{
    return !probe_up(f->rt, f->o[1].label);
}

static bool
up_done(struct fixture *f)
{
    return probe_up(f->rt, f->o[1].label);
}

/* Down after 3 failures in a row, up after 2 successes, logged once each way. */
static void
test_down_then_up(void **state)
{
    struct fixture *f = *state;
    char log[8192], want[256];
    int before;

    origin_start(f, 71, ORIGIN_OK, 0);
    origin_start(f, 72, ORIGIN_FAIL, 0);
    f->rt = runtime_for(f, 2, 0);
    f->h = health_start(&f->lp, f->rt, NULL);
    assert_true(run_until(f, down_done));
    assert_int_equal(f->o[1].requests, 3);

    f->o[1].mode = ORIGIN_OK;
    before = f->o[1].requests;
    assert_true(run_until(f, up_done));
    assert_int_equal(f->o[1].requests - before, 2);
    assert_true(probe_up(f->rt, f->o[0].label));

    log_read(f, log, sizeof(log));
    snprintf(want, sizeof(want), "health: service app: server %s is down: status 500",
             f->o[1].label);
    assert_int_equal(count_of(log, want), 1);
    snprintf(want, sizeof(want), "health: service app: server %s is up again", f->o[1].label);
    assert_int_equal(count_of(log, want), 1);
    assert_int_equal(count_of(log, "health:"), 2);
}

static bool
two_rounds_on_new(struct fixture *f)
{
    return f->o[2].requests >= 2;
}

/* A set swap (DNS): a new server is probed from the next round, one that left no more; a verdict
 * stays with an address that stays. */
static void
test_set_changes(void **state)
{
    struct fixture *f = *state;
    struct balancer_addr a[2];
    int before;

    origin_start(f, 71, ORIGIN_OK, 0);
    origin_start(f, 72, ORIGIN_FAIL, 0);
    origin_start(f, 73, ORIGIN_OK, 0);
    f->rt = runtime_for(f, 2, 0);
    f->h = health_start(&f->lp, f->rt, NULL);
    assert_true(run_until(f, down_done));

    /* .72 stays (down), .71 goes, .73 comes. */
    assert_int_equal(
        balancer_addr_init(&a[0], (struct sockaddr *)&f->o[1].sin, sizeof(f->o[1].sin)), 0);
    assert_int_equal(
        balancer_addr_init(&a[1], (struct sockaddr *)&f->o[2].sin, sizeof(f->o[2].sin)), 0);
    assert_int_equal(balancer_update(app_balancer(f->rt), a, 2), 0);
    assert_false(probe_up(f->rt, f->o[1].label));
    assert_true(probe_up(f->rt, f->o[2].label));
    before = f->o[0].requests;
    assert_true(run_until(f, two_rounds_on_new));
    /* .71 may have had one probe in flight when the set changed; no new one after that. */
    assert_true(f->o[0].requests <= before + 1);
    assert_false(probe_up(f->rt, f->o[1].label));
}

static bool
silent_accepted(struct fixture *f)
{
    return f->o[0].requests >= 1;
}

/* A probe still in flight when the next round comes is not doubled. The config caps the timeout at
 * the interval, so the test widens it by hand to make the overlap certain. */
static void
test_no_double_probe(void **state)
{
    struct fixture *f = *state;

    origin_start(f, 74, ORIGIN_SILENT, 0);
    f->rt = runtime_for(f, 1, 1000);
    f->h = health_start(&f->lp, f->rt, NULL);
    assert_true(run_until(f, silent_accepted));
    run_for(f, 550); /* five more rounds */
    assert_int_equal(f->o[0].accepted, 1);
    assert_int_equal(f->o[0].open, 1);
}

static bool
silent_closed(struct fixture *f)
{
    return f->o[0].open == 0;
}

/* Stopping with probes in flight: their connections close, no callback reaches the freed prober
 * (ASan), no round starts afterwards. */
static void
test_stop_in_flight(void **state)
{
    struct fixture *f = *state;
    struct health *h;

    origin_start(f, 74, ORIGIN_SILENT, 0);
    origin_start(f, 73, ORIGIN_REFUSED, ntohs(f->o[0].sin.sin_port));
    f->rt = runtime_for(f, 2, 1000);
    h = health_start(&f->lp, f->rt, NULL);
    assert_true(run_until(f, silent_accepted));
    health_stop(h);
    assert_true(run_until(f, silent_closed));
    run_for(f, 300);
    assert_int_equal(f->o[0].accepted, 1);

    /* Stopped before its first round: nothing is ever sent. */
    h = health_start(&f->lp, f->rt, NULL);
    health_stop(h);
    run_for(f, 200);
    assert_int_equal(f->o[0].accepted, 1);
}

/* A reload: the new prober takes the old one's verdicts for the same service, path and address,
 * and marks them in the new runtime's balancer before any probe. */
static void
test_reload_keeps_verdicts(void **state)
{
    struct fixture *f = *state;
    struct runtime *rt2;
    struct health *h2;
    int before;

    origin_start(f, 71, ORIGIN_OK, 0);
    origin_start(f, 72, ORIGIN_FAIL, 0);
    f->rt = runtime_for(f, 2, 0);
    f->h = health_start(&f->lp, f->rt, NULL);
    assert_true(run_until(f, down_done));

    rt2 = runtime_for(f, 2, 0);
    assert_true(probe_up(rt2, f->o[1].label));
    h2 = health_start(&f->lp, rt2, f->h);
    health_stop(f->h);
    f->h = h2;
    assert_false(probe_up(rt2, f->o[1].label));
    assert_true(probe_up(rt2, f->o[0].label));
    /* The old runtime keeps its verdicts for the requests still on it. */
    assert_false(probe_up(f->rt, f->o[1].label));
    runtime_unref(f->rt);
    f->rt = rt2;

    /* Recovers after two successes, as the old prober would have. */
    f->o[1].mode = ORIGIN_OK;
    before = f->o[1].requests;
    assert_true(run_until(f, up_done));
    assert_int_equal(f->o[1].requests - before, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nothing_to_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_double_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_verdicts, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
