/*
 * A worker: one event-loop thread (loop.h) with its own listening sockets (SO_REUSEPORT), its
 * client connections and its pool of idle server connections. Workers share nothing on the request
 * path but the balancers' atomics and the connection count; the main thread talks to them only
 * through worker_notify().
 */
#ifndef WORKER_H
#define WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "handover.h"
#include "loop.h"
#include "runtime.h"

/* Process-wide state the main thread owns and workers read. */
struct proxy {
    pthread_mutex_t lock; /* guards rt; taken on reload only, never per request */
    struct runtime *rt;   /* ref: the runtime new requests start with */
    atomic_uint nconns;   /* client connections across all workers (max_connections) */
    struct worker **workers;
    size_t nworkers;
};

struct worker;

/* One listening socket of a worker. */
struct listener {
    int fd;
    struct event *ev; /* owned */
    int tls;
    char port[8];                 /* for X-Forwarded-Port */
    char spec[HANDOVER_SPEC_MAX]; /* the config's address, for a handover */
    struct worker *w;
};

enum worker_notice {
    WORKER_RELOAD = 1, /* take the proxy's current runtime for new requests */
    WORKER_DRAIN = 2,  /* stop accepting, finish what is in flight, then leave the loop */
};

/* A worker thread: its loop (connections, pool, timers) and what only a worker has. */
/* NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding): one per thread; fields go by use */
struct worker {
    int id;
    struct proxy *proxy; /* borrowed */
    pthread_t thread;
    int started;                /* thread is running and must be joined */
    struct loop lp;             /* the thread's loop, and everything on it */
    struct listener *listeners; /* owned, nlisteners */
    size_t nlisteners;
    int notify_fd; /* eventfd: worker_notify() writes, notify_ev reads */
    struct event *notify_ev;
    atomic_uint notices;        /* enum worker_notice bits not yet handled */
    struct event *accept_retry; /* resumes accepting after the connection limit or EMFILE */
    struct event *grace_ev;     /* ends a drain that took longer than shutdown_grace */
    int accepting;
};

/*
 * Creates worker id of nworkers: its event loop and a listening socket for every listener of rt's
 * config, or its share of those ho (NULL: none) holds for the same address. Returns it, or NULL
 * with a message in err (an address that cannot be bound, for instance). The caller owns it;
 * nothing runs until worker_start().
 */
struct worker *worker_new(int id, unsigned nworkers, struct proxy *p, struct runtime *rt,
                          struct handover *ho, char *err, size_t errlen);

/* The worker's listening sockets, for a successor (at most max; main thread, before a drain). */
size_t worker_sockets(const struct worker *w, struct handover_socket *out, size_t max);

/* Starts the worker's thread. Returns 0, or -1 with a message in err. */
int worker_start(struct worker *w, char *err, size_t errlen);

/* From the main thread: asks the worker to act on notice (enum worker_notice bits). */
void worker_notify(struct worker *w, unsigned notice);

/* Waits for the worker's thread to end (after WORKER_DRAIN), then frees the worker. */
void worker_join_free(struct worker *w);

#endif
