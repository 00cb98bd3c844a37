/*
 * A worker: one event-loop thread with its own listening sockets (SO_REUSEPORT), its client
 * connections and its pool of idle server connections. Workers share nothing on the request path
 * but the balancers' atomics and the connection count; the main thread talks to them only through
 * worker_notify().
 */
#ifndef WORKER_H
#define WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "runtime.h"

struct conn;
struct upconn;
struct worker;
struct xchg;

/* Process-wide state the main thread owns and workers read. */
struct proxy {
    pthread_mutex_t lock; /* guards rt; taken on reload only, never per request */
    struct runtime *rt;   /* ref: the runtime new requests start with */
    atomic_uint nconns;   /* client connections across all workers (max_connections) */
    struct worker **workers;
    size_t nworkers;
};

/* A worker's hold on a runtime: counted without atomics, since only its worker touches it. */
struct wsnap {
    struct runtime *rt; /* ref */
    unsigned users;     /* the worker itself while current, plus every request that took it */
};

/* One listening socket of a worker. */
struct listener {
    int fd;
    struct event *ev; /* owned */
    int tls;
    char port[8]; /* for X-Forwarded-Port */
    struct worker *w;
};

enum worker_notice {
    WORKER_RELOAD = 1, /* take the proxy's current runtime for new requests */
    WORKER_DRAIN = 2,  /* stop accepting, finish what is in flight, then leave the loop */
};

/* Distinct timeout durations a worker arms in O(1) (worker_timeout); more use the timer heap. */
#define WORKER_TIMEOUTS 16

/* The state a worker's connections share. Only the worker's own thread touches it. */
/* NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding): one per thread; fields go by use */
struct worker {
    int id;
    struct proxy *proxy; /* borrowed */
    pthread_t thread;
    int started;                /* thread is running and must be joined */
    struct event_base *base;    /* owned */
    struct listener *listeners; /* owned, nlisteners */
    size_t nlisteners;
    int notify_fd; /* eventfd: worker_notify() writes, notify_ev reads */
    struct event *notify_ev;
    atomic_uint notices;        /* enum worker_notice bits not yet handled */
    struct event *accept_retry; /* resumes accepting after the connection limit or EMFILE */
    struct event *grace_ev;     /* ends a drain that took longer than shutdown_grace */
    struct event *log_ev;       /* flushes logbuf a moment after the first line lands */
    int accepting;
    int draining;
    unsigned turn_events; /* reads and accepts in this turn of the loop */
    struct wsnap *snap;   /* owned: the runtime for requests that start now */
    struct conn *conns;   /* client connections, linked through conn->next/prev */
    unsigned nconns;
    struct upconn *idle; /* idle server connections, most recently used first */
    unsigned nidle;
    struct xchg *free_x; /* exchanges ready for reuse: no allocation per request */
    struct {
        uint64_t ms;
        const struct timeval *tv; /* libevent's, for its common-timeout queue of ms */
    } timeouts[WORKER_TIMEOUTS];
    unsigned ntimeouts;
    uint64_t rng[2]; /* xorshift128+ state for request ids */
    size_t loglen;
    char logbuf[32768];
};

/*
 * Creates worker id: its event loop and a listening socket for every listener of rt's config.
 * Returns it, or NULL with a message in err (an address that cannot be bound, for instance). The
 * caller owns it; nothing runs until worker_start().
 */
struct worker *worker_new(int id, struct proxy *p, struct runtime *rt, char *err, size_t errlen);

/* Starts the worker's thread. Returns 0, or -1 with a message in err. */
int worker_start(struct worker *w, char *err, size_t errlen);

/* From the main thread: asks the worker to act on notice (enum worker_notice bits). */
void worker_notify(struct worker *w, unsigned notice);

/* Waits for the worker's thread to end (after WORKER_DRAIN), then frees the worker. */
void worker_join_free(struct worker *w);

/* For conn.c: takes the worker's current runtime for a request; drop it with worker_snap_drop(). */
struct wsnap *worker_snap_take(struct worker *w);
void worker_snap_drop(struct wsnap *s);

/*
 * ms as the timeval to pass to event_add() on w's base. Every connection arms the same few
 * durations (a config's timeouts) once or twice per request: as one of libevent's common timeouts,
 * arming is a queue append instead of a heap operation. tv is filled either way, and returned once
 * WORKER_TIMEOUTS durations are taken (after many reloads with new timeouts).
 */
const struct timeval *worker_timeout(struct worker *w, uint64_t ms, struct timeval *tv);

/* For conn.c: a client connection ended; keeps the counts and may resume accepting or end a drain.
 */
void worker_conn_closed(struct worker *w);

/* For conn.c: appends an access-log line; lines are written in batches, soon after they land. */
void worker_log(struct worker *w, const char *line, size_t n);

/* For conn.c: 32 lowercase hex digits and a NUL, a fresh request id. */
void worker_request_id(struct worker *w, char out[33]);

#endif
