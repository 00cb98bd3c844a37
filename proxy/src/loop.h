/*
 * A thread's event loop and what every connection on it shares: the runtime that new requests
 * start with, cheap timeouts, frees deferred to the end of the loop's turn, batched access-log
 * writes, request ids and the connection count. Threads (workers, the main thread) each own one;
 * the modules above (conn, exchange, upconn, health) only use it, and never call each other
 * through it.
 */
#ifndef LOOP_H
#define LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "runtime.h"

/* Distinct timeout durations a loop arms in O(1) (loop_timeout); more use the timer heap. */
#define LOOP_TIMEOUTS 16

/* A loop's hold on a runtime: counted without atomics, since only its thread touches it. */
struct loop_snap {
    struct runtime *rt; /* ref */
    unsigned users;     /* the loop itself while current, plus every request that took it */
};

/* Embedded in an object whose free must wait until the loop's turn is over (loop_defer). */
struct loop_defer {
    struct loop_defer *next;
    void (*fn)(struct loop_defer *d);
};

struct conn;
struct conn_marks;
struct xchg;
struct upconn_pool;

/* One thread's loop. Only that thread touches it, but for shared_nconns. */
struct loop {
    struct event_base *base;  /* owned */
    struct loop_snap *snap;   /* owned: the runtime for requests that start now */
    struct loop_defer *defer; /* frees waiting for the end of the turn */
    struct {
        uint64_t ms;
        const struct timeval *tv; /* libevent's, for its common-timeout queue of ms */
    } timeouts[LOOP_TIMEOUTS];
    unsigned ntimeouts;
    atomic_uint *shared_nconns; /* borrowed: client connections across all loops, or NULL */
    unsigned nconns;            /* client connections of this loop */
    int draining;               /* no new connections; leave the loop once nconns is 0 */
    uint64_t rng[2];            /* xorshift128+ state for request ids */
    uint64_t now_us;            /* loop_now_us() of this turn; 0: not read yet */
    bool in_turn;               /* loop_turn() is running callbacks: now_us may be kept */
    unsigned long io_events;    /* socket callbacks run so far (busypoll.c stops polling at one) */
    struct event *log_ev;       /* flushes logbuf a moment after the first line lands */
    size_t loglen;
    char logbuf[32768];
    /* Each of these belongs to the module named: only it reads or changes them. */
    struct conn *conns;            /* conn.c: client connections */
    struct conn_marks *free_marks; /* conn.c: head marks ready for reuse */
    struct xchg *free_x;           /* exchange.c: exchanges ready for reuse */
    struct upconn_pool *pool;      /* upconn.c: idle server connections */
    struct stats *stats;           /* stats.h: this loop's counters (own_stats unless a worker's) */
    struct stats *own_stats;       /* owned: zeroed counters for a loop that is not a worker's */
};

/*
 * Sets up lp with a new lock-free event base (only lp's thread may use it) and a reference to rt.
 * shared_nconns, if not NULL, is the process-wide connection count that loop_conn_closed() lowers.
 * Returns 0, or -1 with a message in err.
 */
int loop_init(struct loop *lp, struct runtime *rt, atomic_uint *shared_nconns, char *err,
              size_t errlen);

/* Frees what loop_init() made, after flushing the access log and running deferred frees. The
 * modules' own state (conns, pool, free_x, free_marks) must be gone by then. */
void loop_fini(struct loop *lp);

/*
 * One turn: waits for events (unless wait is false: then only what is ready now), runs their
 * callbacks, then the deferred frees. Returns 0 to go on, 1 when the loop should end (loop_exit(),
 * nothing left to wait for), -1 when libevent failed.
 */
int loop_turn(struct loop *lp, bool wait);

/* Ends the loop after the current turn. */
void loop_exit(struct loop *lp);

/* Makes rt the runtime for requests that start from now on. */
void loop_set_runtime(struct loop *lp, struct runtime *rt);

/* Takes the current runtime for a request; drop it with loop_snap_drop(). */
struct loop_snap *loop_snap_take(struct loop *lp);
void loop_snap_drop(struct loop_snap *s);

/*
 * Queues d so that fn(d) runs once the callbacks of this turn have returned: the object holding d
 * is freed there, where no caller can still hold it. Queuing a d twice is a bug.
 */
void loop_defer(struct loop *lp, struct loop_defer *d, void (*fn)(struct loop_defer *d));

/*
 * Runs base's callbacks until done(arg) holds, at most timeout_ms: the start-up waits (the first
 * DNS answers, the first read of the API server) before the workers run. Returns done(arg).
 */
bool loop_run_until(struct event_base *base, bool (*done)(const void *arg), const void *arg,
                    uint64_t timeout_ms);

/*
 * ms as the timeval to pass to event_add() on lp's base. Connections arm the same few durations
 * (a config's timeouts) again and again: as one of libevent's common timeouts, arming is a queue
 * append instead of a heap operation. tv is filled either way, and returned once LOOP_TIMEOUTS
 * durations are taken (after many reloads with new timeouts).
 */
const struct timeval *loop_timeout(struct loop *lp, uint64_t ms, struct timeval *tv);

/* A client connection was accepted (counted) / has ended; the last to end a drain ends the loop.
 */
void loop_conn_opened(struct loop *lp);
void loop_conn_closed(struct loop *lp);

/* Appends an access-log line; lines are written in batches, soon after they land. */
void loop_log(struct loop *lp, const char *line, size_t n);

/* 32 lowercase hex digits and a NUL: a fresh request id. */
void loop_request_id(struct loop *lp, char out[33]);

/* Milliseconds and microseconds of a monotonic clock: durations, cooldowns and probes must not
 * follow wall-clock steps. */
int64_t loop_mono_ms(void);
uint64_t loop_mono_us(void);

/*
 * loop_mono_us() and loop_mono_ms() read once per turn of lp (loop_turn()): every event a turn
 * handles had happened when its poll returned, and requests took several clock reads each. Outside
 * a turn, each call reads the clock.
 */
uint64_t loop_now_us(struct loop *lp);
int64_t loop_now_ms(struct loop *lp);

#endif
