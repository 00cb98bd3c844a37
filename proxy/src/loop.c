/*
 * A thread's event loop: turns that end with the deferred frees, common timeouts, the runtime
 * snapshot, batched access-log lines and request ids. What runs on the loop is its users'
 * business.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "stats.h"

#define LOG_FLUSH_MS 100

static void
log_flush(struct loop *lp)
{
    log_access_write(lp->logbuf, lp->loglen);
    lp->loglen = 0;
}

static void
log_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    log_flush(arg);
}

int
loop_init(struct loop *lp, struct runtime *rt, atomic_uint *shared_nconns, char *err, size_t errlen)
{
    struct event_config *ecfg;

    memset(lp, 0, sizeof(*lp));
    lp->shared_nconns = shared_nconns;
    if (getrandom(lp->rng, sizeof(lp->rng), 0) != sizeof(lp->rng) ||
        (lp->rng[0] | lp->rng[1]) == 0) {
        lp->rng[0] = (uint64_t)getpid() << 32 | (uint64_t)(uintptr_t)lp;
        lp->rng[1] = (uint64_t)time(NULL) | 1;
    }
    /* Only the loop's own thread touches its base (notices come through an eventfd): no locks. */
    if ((ecfg = event_config_new()) != NULL) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
        lp->base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    if (lp->base == NULL || (lp->snap = malloc(sizeof(*lp->snap))) == NULL ||
        (lp->own_stats = calloc(1, sizeof(*lp->own_stats))) == NULL ||
        (lp->log_ev = evtimer_new(lp->base, log_cb, lp)) == NULL) {
        snprintf(err, errlen, "out of memory");
        free(lp->snap);
        lp->snap = NULL;
        free(lp->own_stats);
        lp->own_stats = NULL;
        if (lp->base != NULL)
            event_base_free(lp->base);
        lp->base = NULL;
        return -1;
    }
    lp->snap->rt = runtime_ref(rt);
    lp->snap->users = 1;
    lp->stats = lp->own_stats;
    return 0;
}

static void
reap(struct loop *lp)
{
    /* A free may queue another (a connection freeing its server connection): until none is left. */
    while (lp->defer != NULL) {
        struct loop_defer *d = lp->defer;

        lp->defer = d->next;
        d->next = NULL;
        d->fn(d);
    }
}

void
loop_fini(struct loop *lp)
{
    if (lp->base == NULL)
        return;
    reap(lp);
    log_flush(lp);
    event_free(lp->log_ev);
    event_base_free(lp->base);
    lp->base = NULL;
    loop_snap_drop(lp->snap);
    lp->snap = NULL;
    free(lp->own_stats);
    lp->own_stats = lp->stats = NULL;
}

int
loop_turn(struct loop *lp, bool wait)
{
    int rc;

    /* Frees queued outside any callback (between turns, at start-up) must not wait for an event
     * that may never come. */
    reap(lp);
    /* EVLOOP_ONCE: one poll and the callbacks of what it found. 1: nothing left to wait for. */
    lp->now_us = 0;
    lp->in_turn = true;
    rc = event_base_loop(lp->base, wait ? EVLOOP_ONCE : EVLOOP_ONCE | EVLOOP_NONBLOCK);
    lp->in_turn = false;
    reap(lp);
    if (rc != 0)
        return rc;
    return event_base_got_exit(lp->base) || event_base_got_break(lp->base) ? 1 : 0;
}

void
loop_exit(struct loop *lp)
{
    event_base_loopexit(lp->base, NULL);
}

void
loop_set_runtime(struct loop *lp, struct runtime *rt)
{
    struct loop_snap *s = malloc(sizeof(*s));

    if (s == NULL) {
        log_msg(LOG_ERROR, "out of memory taking the new config");
        return;
    }
    s->rt = runtime_ref(rt);
    s->users = 1;
    loop_snap_drop(lp->snap);
    lp->snap = s;
}

struct loop_snap *
loop_snap_take(struct loop *lp)
{
    lp->snap->users++;
    return lp->snap;
}

void
loop_snap_drop(struct loop_snap *s)
{
    if (s != NULL && --s->users == 0) {
        runtime_unref(s->rt);
        free(s);
    }
}

void
loop_defer(struct loop *lp, struct loop_defer *d, void (*fn)(struct loop_defer *d))
{
    d->fn = fn;
    d->next = lp->defer;
    lp->defer = d;
}

const struct timeval *
loop_timeout(struct loop *lp, uint64_t ms, struct timeval *tv)
{
    const struct timeval *common;

    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)(ms % 1000 * 1000);
    for (unsigned i = 0; i < lp->ntimeouts; i++)
        if (lp->timeouts[i].ms == ms)
            return lp->timeouts[i].tv;
    if (lp->ntimeouts == LOOP_TIMEOUTS ||
        (common = event_base_init_common_timeout(lp->base, tv)) == NULL)
        return tv;
    lp->timeouts[lp->ntimeouts].ms = ms;
    lp->timeouts[lp->ntimeouts].tv = common;
    lp->ntimeouts++;
    return common;
}

void
loop_conn_opened(struct loop *lp)
{
    if (lp->shared_nconns != NULL)
        atomic_fetch_add_explicit(lp->shared_nconns, 1, memory_order_relaxed);
    lp->nconns++;
}

void
loop_conn_closed(struct loop *lp)
{
    if (lp->shared_nconns != NULL)
        atomic_fetch_sub_explicit(lp->shared_nconns, 1, memory_order_relaxed);
    lp->nconns--;
    if (lp->draining && lp->nconns == 0)
        loop_exit(lp);
}

void
loop_log(struct loop *lp, const char *line, size_t n)
{
    if (n > sizeof(lp->logbuf) - lp->loglen)
        log_flush(lp);
    if (n > sizeof(lp->logbuf)) {
        log_access_write(line, n);
        return;
    }
    if (lp->loglen == 0) {
        struct timeval tv = {0, LOG_FLUSH_MS * 1000};
        evtimer_add(lp->log_ev, &tv);
    }
    memcpy(lp->logbuf + lp->loglen, line, n);
    lp->loglen += n;
}

void
loop_request_id(struct loop *lp, char out[33])
{
    static const char hex[] = "0123456789abcdef";

    for (int half = 0; half < 2; half++) {
        /* xorshift128+: fast and plenty for ids that only need to be unique, not secret. */
        uint64_t s1 = lp->rng[0], s0 = lp->rng[1];
        lp->rng[0] = s0;
        s1 ^= s1 << 23;
        lp->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        uint64_t v = lp->rng[1] + s0;
        for (int i = 0; i < 16; i++, v >>= 4)
            out[half * 16 + i] = hex[v & 0xf];
    }
    out[32] = '\0';
}

uint64_t
loop_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int64_t
loop_mono_ms(void)
{
    return (int64_t)(loop_mono_us() / 1000);
}

uint64_t
loop_now_us(struct loop *lp)
{
    if (!lp->in_turn)
        return loop_mono_us();
    if (lp->now_us == 0)
        lp->now_us = loop_mono_us();
    return lp->now_us;
}

int64_t
loop_now_ms(struct loop *lp)
{
    return (int64_t)(loop_now_us(lp) / 1000);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

bool
loop_run_until(struct event_base *base, bool (*done)(const void *arg), const void *arg,
               uint64_t timeout_ms)
{
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000 * 1000)};
    bool expired = false;
    struct event *deadline = evtimer_new(base, deadline_cb, &expired);

    if (deadline == NULL)
        return done(arg);
    evtimer_add(deadline, &tv);
    while (!done(arg) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(deadline);
    return done(arg);
}
