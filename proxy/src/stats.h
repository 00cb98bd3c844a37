/*
 * What the admin listener reports: counters and histograms each worker keeps for itself (one
 * writer, relaxed atomics, no locks on the request path), summed by the main thread on a scrape;
 * and the main thread's own counts (reloads, DNS answers) and samples for the status page.
 *
 * Services are counted by name in slots that outlive a runtime, so a SIGHUP reload never resets a
 * service's counters: stats_slot() gives a name its slot once, on the main thread, before any
 * runtime naming it is published to the workers.
 */
#ifndef STATS_H
#define STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most service names one process counts over its life; more are counted in slot 0 (""). */
#define STATS_SLOTS 1024
/* Slot 0: requests answered before they had a service (malformed, no route). */
#define STATS_NO_SERVICE 0
/* Status codes 100..599 are counted one by one; anything else is counted as 599+1 ("other"). */
#define STATS_CODE_MIN 100
#define STATS_CODES 501
/* Histogram buckets: STATS_BOUNDS finite upper bounds, then +Inf. */
#define STATS_BOUNDS 16

typedef atomic_uint_fast64_t stats_ctr;

/* Upper bounds of the histogram buckets, in microseconds. */
extern const uint64_t stats_bounds_us[STATS_BOUNDS];

struct stats_hist {
    stats_ctr
        bucket[STATS_BOUNDS + 1]; /* not cumulative: bucket i counts bounds[i-1] < v <= bounds[i] */
    stats_ctr count;
    stats_ctr sum_us;
};

/* One service's counts in one worker. */
struct stats_svc {
    stats_ctr codes[STATS_CODES];
    stats_ctr retries;
    struct stats_hist duration; /* request: first byte to answer queued */
    struct stats_hist upstream; /* request sent to response head */
};

enum stats_conn_state {
    STATS_CONN_HANDSHAKE,
    STATS_CONN_ACTIVE,
    STATS_CONN_IDLE,
    STATS_CONN_STATES
};
enum stats_tls { STATS_TLS_FULL, STATS_TLS_RESUMED, STATS_TLS_FAILED, STATS_TLS_RESULTS };

/* One worker's counters: only its thread writes them (stats_add), the main thread reads. */
struct stats {
    _Atomic(struct stats_svc *) svc[STATS_SLOTS]; /* set by stats_slot() on the main thread */
    stats_ctr conns[STATS_CONN_STATES];           /* gauges: + and - by the one writer */
    stats_ctr bytes_in, bytes_out;
    stats_ctr tls[STATS_TLS_RESULTS];
};

/* Adds n to a counter only this thread writes: a plain load and store, no locked instruction. */
static inline void
stats_add(stats_ctr *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t
stats_get(const stats_ctr *c)
{
    return atomic_load_explicit((stats_ctr *)c, memory_order_relaxed);
}

/* Moves a connection from one state's gauge to another's (-1: none, when it opens or closes). */
static inline void
stats_conn_move(struct stats *st, int from, int to)
{
    if (from >= 0)
        stats_add(&st->conns[from], (uint64_t)-1);
    if (to >= 0)
        stats_add(&st->conns[to], 1);
}

/* The service counts of slot in st (never NULL for a slot a runtime uses). */
static inline struct stats_svc *
stats_svc(struct stats *st, int slot)
{
    return atomic_load_explicit(&st->svc[slot], memory_order_relaxed);
}

/* The wall clock, as Unix time in seconds. */
double stats_now(void);

/* Records one observation of us microseconds. */
void stats_observe(struct stats_hist *h, uint64_t us);

/* Records a request's answer: its status code and duration. */
void stats_request(struct stats *st, int slot, int code, uint64_t us);

/*
 * Process-wide setup, on the main thread before any runtime: n worker stats (zeroed, owned by
 * this module until stats_fini()) and slot 0. Returns 0, or -1 when memory runs out.
 */
int stats_init(size_t n);

/* Frees what stats_init() and stats_slot() made, after the workers are gone. */
void stats_fini(void);

/* Worker i's stats (i < the n of stats_init()). */
struct stats *stats_worker(size_t i);

/* How many worker stats there are. */
size_t stats_nworkers(void);

/*
 * The slot of service name, given on first sight (main thread only): its counts are allocated in
 * every worker's stats before this returns. Returns STATS_NO_SERVICE when all slots are taken or
 * memory runs out (logged once). Without stats_init() (unit tests): always STATS_NO_SERVICE.
 */
int stats_slot(const char *name);

/* How many slots are given (slot 0 included). */
int stats_nslots(void);

/* The name of a slot given by stats_slot() ("" for slot 0). */
const char *stats_slot_name(int slot);

/* The sum over workers of one service's counts (main thread). */
void stats_sum_svc(int slot, struct stats_svc *out);

/* The sum over workers of the rest (main thread). */
void stats_sum(struct stats *out);

/* Main-thread counts: written and read on the main thread only. */
struct stats_main {
    uint64_t reloads_ok, reloads_failed;
    double last_reload;         /* Unix time of the last attempt (the start counts) */
    double last_reload_success; /* Unix time of the last successful load */
    bool last_reload_ok;
    double started; /* Unix time */
};

/* The process's main-thread counts. */
struct stats_main *stats_main(void);

/* DNS answers per service slot: main thread only. */
enum stats_dns { STATS_DNS_SUCCESS, STATS_DNS_EMPTY, STATS_DNS_FAILURE, STATS_DNS_RESULTS };
void stats_dns(int slot, enum stats_dns result);
uint64_t stats_dns_count(int slot, enum stats_dns result);

/*
 * The status page's window: stats_sample() (every STATS_SAMPLE_MS on the main thread) keeps the
 * last minute of per-service totals; stats_window() gives, for slot, what happened since the
 * oldest sample: requests, 5xx answers, duration bucket deltas, and the seconds covered (0: no
 * sample yet).
 */
#define STATS_SAMPLE_MS 5000
#define STATS_WINDOW_SAMPLES 13
void stats_sample(double now);
struct stats_window {
    double seconds;
    uint64_t requests, errors;
    uint64_t bucket[STATS_BOUNDS + 1];
};
void stats_window(int slot, double now, struct stats_window *w);

/* The q-quantile (0..1) in seconds of a window's buckets, interpolated within the bucket as
 * Prometheus' histogram_quantile(); negative when the window holds no request. */
double stats_quantile(const struct stats_window *w, double q);

#endif
