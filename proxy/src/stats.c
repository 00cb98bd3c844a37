/* Counters per worker, summed on the main thread; service slots by name; the status window. */
#include "stats.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

const uint64_t stats_bounds_us[STATS_BOUNDS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* One sample of a service's totals, for the window. */
struct sample {
    uint64_t requests, errors;
    uint64_t bucket[STATS_BOUNDS + 1];
};

/* A slot's main-thread side: its name, DNS answers and window samples. */
struct slot {
    char *name; /* owned */
    uint64_t dns[STATS_DNS_RESULTS];
    struct sample samples[STATS_WINDOW_SAMPLES];
};

/* The process's registry: the main thread writes it, workers only read their own struct stats. */
static struct {
    struct stats **workers; /* owned, n */
    size_t n;
    struct slot *slots[STATS_SLOTS]; /* owned; [0] is "" */
    int nslots;
    bool full_logged;
    struct stats_main main;
    double sample_at[STATS_WINDOW_SAMPLES];
    unsigned nsamples, next_sample;
} reg;

double
stats_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
stats_observe(struct stats_hist *h, uint64_t us)
{
    size_t i = 0;

    while (i < STATS_BOUNDS && us > stats_bounds_us[i])
        i++;
    stats_add(&h->bucket[i], 1);
    stats_add(&h->count, 1);
    stats_add(&h->sum_us, us);
}

void
stats_request(struct stats *st, int slot, int code, uint64_t us)
{
    struct stats_svc *s = stats_svc(st, slot);

    if (s == NULL)
        return;
    if (code < STATS_CODE_MIN || code >= STATS_CODE_MIN + STATS_CODES - 1)
        code = STATS_CODE_MIN + STATS_CODES - 1;
    stats_add(&s->codes[code - STATS_CODE_MIN], 1);
    stats_observe(&s->duration, us);
}

/* Gives slot i (its struct slot made) its counts in every worker. */
static int
slot_fill(int i)
{
    for (size_t w = 0; w < reg.n; w++) {
        struct stats_svc *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        atomic_store_explicit(&reg.workers[w]->svc[i], s, memory_order_release);
    }
    return 0;
}

static int
slot_add(const char *name)
{
    struct slot *sl;

    if (reg.nslots == STATS_SLOTS)
        return -1;
    sl = calloc(1, sizeof(*sl));
    if (sl == NULL || (sl->name = strdup(name)) == NULL) {
        free(sl);
        return -1;
    }
    reg.slots[reg.nslots] = sl;
    if (slot_fill(reg.nslots) < 0)
        return -1; /* the slot stays, half filled: stats_fini() frees it; never given out */
    return reg.nslots++;
}

int
stats_init(size_t n)
{
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers, sized by its element */
    reg.workers = calloc(n, sizeof(*reg.workers));
    if (reg.workers == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        reg.workers[i] = calloc(1, sizeof(*reg.workers[i]));
        if (reg.workers[i] == NULL)
            return -1;
        reg.n++;
    }
    return slot_add("") == STATS_NO_SERVICE ? 0 : -1;
}

void
stats_fini(void)
{
    for (int i = 0; i < STATS_SLOTS && reg.slots[i] != NULL; i++) {
        for (size_t w = 0; w < reg.n; w++)
            free(atomic_load_explicit(&reg.workers[w]->svc[i], memory_order_relaxed));
        free(reg.slots[i]->name);
        free(reg.slots[i]);
    }
    for (size_t w = 0; w < reg.n; w++)
        free(reg.workers[w]);
    free(reg.workers);
    memset(&reg, 0, sizeof(reg));
}

struct stats *
stats_worker(size_t i)
{
    return i < reg.n ? reg.workers[i] : NULL;
}

size_t
stats_nworkers(void)
{
    return reg.n;
}

int
stats_slot(const char *name)
{
    int i;

    if (reg.n == 0)
        return STATS_NO_SERVICE;
    for (i = 1; i < reg.nslots; i++) {
        if (strcmp(reg.slots[i]->name, name) == 0)
            return i;
    }
    i = slot_add(name);
    if (i < 0) {
        if (!reg.full_logged)
            log_msg(LOG_WARN,
                    "metrics: no room to count service %s by itself (%d names "
                    "counted); it counts under service=\"\"",
                    name, STATS_SLOTS);
        reg.full_logged = true;
        return STATS_NO_SERVICE;
    }
    return i;
}

int
stats_nslots(void)
{
    return reg.nslots;
}

const char *
stats_slot_name(int slot)
{
    return slot >= 0 && slot < reg.nslots ? reg.slots[slot]->name : "";
}

static void
hist_sum(struct stats_hist *out, const struct stats_hist *h)
{
    for (size_t b = 0; b <= STATS_BOUNDS; b++)
        stats_add(&out->bucket[b], stats_get(&h->bucket[b]));
    stats_add(&out->count, stats_get(&h->count));
    stats_add(&out->sum_us, stats_get(&h->sum_us));
}

void
stats_sum_svc(int slot, struct stats_svc *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t w = 0; w < reg.n; w++) {
        const struct stats_svc *s = stats_svc(reg.workers[w], slot);
        if (s == NULL)
            continue;
        for (size_t c = 0; c < STATS_CODES; c++)
            stats_add(&out->codes[c], stats_get(&s->codes[c]));
        stats_add(&out->retries, stats_get(&s->retries));
        hist_sum(&out->duration, &s->duration);
        hist_sum(&out->upstream, &s->upstream);
    }
}

void
stats_sum(struct stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t w = 0; w < reg.n; w++) {
        const struct stats *s = reg.workers[w];
        for (size_t i = 0; i < STATS_CONN_STATES; i++)
            stats_add(&out->conns[i], stats_get(&s->conns[i]));
        for (size_t i = 0; i < STATS_TLS_RESULTS; i++)
            stats_add(&out->tls[i], stats_get(&s->tls[i]));
        stats_add(&out->bytes_in, stats_get(&s->bytes_in));
        stats_add(&out->bytes_out, stats_get(&s->bytes_out));
    }
}

struct stats_main *
stats_main(void)
{
    return &reg.main;
}

void
stats_dns(int slot, enum stats_dns result)
{
    if (slot >= 0 && slot < reg.nslots)
        reg.slots[slot]->dns[result]++;
}

uint64_t
stats_dns_count(int slot, enum stats_dns result)
{
    return slot >= 0 && slot < reg.nslots ? reg.slots[slot]->dns[result] : 0;
}

/* A service's totals now, summed over the workers. */
static void
totals(int slot, struct sample *out)
{
    struct stats_svc sum;

    stats_sum_svc(slot, &sum);
    memset(out, 0, sizeof(*out));
    for (size_t c = 0; c < STATS_CODES; c++) {
        uint64_t n = stats_get(&sum.codes[c]);
        out->requests += n;
        if (c + STATS_CODE_MIN >= 500 && c + STATS_CODE_MIN < 600)
            out->errors += n;
    }
    for (size_t b = 0; b <= STATS_BOUNDS; b++)
        out->bucket[b] = stats_get(&sum.duration.bucket[b]);
}

void
stats_sample(double now)
{
    unsigned k = reg.next_sample;

    for (int i = 0; i < reg.nslots; i++)
        totals(i, &reg.slots[i]->samples[k]);
    reg.sample_at[k] = now;
    reg.next_sample = (k + 1) % STATS_WINDOW_SAMPLES;
    if (reg.nsamples < STATS_WINDOW_SAMPLES)
        reg.nsamples++;
}

void
stats_window(int slot, double now, struct stats_window *w)
{
    struct sample cur;
    const struct sample *old;
    unsigned k;

    memset(w, 0, sizeof(*w));
    if (reg.nsamples == 0 || slot < 0 || slot >= reg.nslots)
        return;
    /* The oldest sample kept: the ring's next slot once it is full, else the first. */
    k = reg.nsamples < STATS_WINDOW_SAMPLES ? 0 : reg.next_sample;
    old = &reg.slots[slot]->samples[k];
    totals(slot, &cur);
    w->seconds = now - reg.sample_at[k];
    /* A slot made after that sample was taken starts from zeros, as its counts did. */
    w->requests = cur.requests - old->requests;
    w->errors = cur.errors - old->errors;
    for (size_t b = 0; b <= STATS_BOUNDS; b++)
        w->bucket[b] = cur.bucket[b] - old->bucket[b];
}

double
stats_quantile(const struct stats_window *w, double q)
{
    uint64_t total = 0, seen = 0;
    double rank;

    for (size_t b = 0; b <= STATS_BOUNDS; b++)
        total += w->bucket[b];
    if (total == 0)
        return -1;
    rank = q * (double)total;
    for (size_t b = 0; b <= STATS_BOUNDS; b++) {
        if ((double)(seen + w->bucket[b]) >= rank && w->bucket[b] > 0) {
            double lo = b == 0 ? 0 : (double)stats_bounds_us[b - 1];
            if (b == STATS_BOUNDS)
                return lo / 1e6; /* the +Inf bucket: its lower bound, as Prometheus does */
            double hi = (double)stats_bounds_us[b];
            return (lo + (hi - lo) * (rank - (double)seen) / (double)w->bucket[b]) / 1e6;
        }
        seen += w->bucket[b];
    }
    return (double)stats_bounds_us[STATS_BOUNDS - 1] / 1e6;
}
