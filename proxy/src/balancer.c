/*
 * Round-robin and passive health over immutable, refcounted server sets, swapped by an atomic
 * pointer exchange that waits out readers caught between loading the pointer and taking their
 * reference, so that no set is freed under a reader and no lock is taken.
 *
 * Why the wait: a reader loads b->set, then increments the set's refcount. An update that exchanged
 * the pointer and dropped the balancer's reference in between would free the set before that
 * increment. So readers announce themselves in b->entering[] around those two steps, and an update
 * waits, after the exchange, until the readers that may have loaded the old pointer have taken
 * their reference. Two slots, chosen by the parity of b->epoch, keep that wait bounded under a
 * steady stream of readers: the update flips the epoch and waits only for the old slot, which new
 * readers no longer enter.
 *
 * The argument, with every access to b->set, b->epoch and b->entering[] sequentially consistent
 * (one total order S over them): a reader reads the epoch (E1), increments entering[e] (I), reads
 * the epoch again and retries unless it is still e (E2), loads the set (P), takes its reference,
 * decrements entering[e] (D). An update exchanges the set (X), flips the epoch from f to f^1 (F),
 * then loads entering[f] until it reads 0 (L), then drops the old set. Take a reader whose P
 * returned the old set, so P <S X.
 *   - If e == f: E2 read f, so E2 <S F, and I <S E2 <S F <S L. The count L reads includes I, so it
 *     can only be 0 once D is in too; L then reads from D's release sequence (every write to
 *     entering[] is a read-modify-write), D synchronises with L, and the reader's reference
 *     happens before the update's unref.
 *   - If e == f^1: E2 read f^1, either written by F (then X <S F <S E2 <S P, so P saw the new set,
 *     a contradiction) or from before the previous update's flip, in which case that update waited
 *     for this reader in the same way before it returned, and updates do not overlap.
 * Reference counts themselves follow the usual pattern: increments relaxed (the caller already
 * holds a reference or is covered by the argument above), decrements acq_rel so that the last one
 * sees every other thread's use of the set before freeing it.
 *
 * Health (cooldown-until, failures, the probe's verdict) is advisory: relaxed atomics, no data
 * published through it.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"

/* A server's mutable state, shared by every set that has its address. */
struct balancer_health {
    _Atomic int64_t down_until; /* ms: in cooldown while now < down_until; 0 when up */
    _Atomic uint64_t failures;
    atomic_bool probe_down; /* the active health check's verdict (health.c); false when none */
    atomic_uint refs;       /* one per set entry pointing here */
};

struct balancer_server {
    struct balancer_addr addr;
    struct balancer_health *health; /* ref */
    int64_t cooldown_ms;
};

struct balancer_set {
    atomic_uint refs;
    _Atomic uint64_t next; /* round-robin position: the next draw */
    size_t n;
    struct balancer_server servers[]; /* n of them, each owning a health ref */
};

struct balancer {
    _Atomic(struct balancer_set *) set; /* ref */
    atomic_uint epoch;                  /* its parity is the entering[] slot new readers use */
    atomic_uint entering[2];            /* readers between loading set and taking their ref */
    atomic_bool updating;               /* catches overlapping updates in debug builds */
    int64_t cooldown_ms;
};

static uint64_t
bit(size_t i)
{
    return (uint64_t)1 << i;
}

int
balancer_addr_init(struct balancer_addr *a, const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    const void *ip;
    unsigned port;

    memset(a, 0, sizeof(*a));
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        ip = &sin->sin_addr;
        port = ntohs(sin->sin_port);
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        ip = &sin6->sin6_addr;
        port = ntohs(sin6->sin6_port);
    } else {
        return -1;
    }
    if (len > (socklen_t)sizeof(a->addr) ||
        inet_ntop(sa->sa_family, ip, host, sizeof(host)) == NULL)
        return -1;
    memcpy(&a->addr, sa, len);
    a->addrlen = len;
    snprintf(a->label, sizeof(a->label), sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
             port);
    return 0;
}

bool
balancer_addr_equal(const struct balancer_addr *a, const struct balancer_addr *b)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->addr;
    const struct sockaddr *sb = (const struct sockaddr *)&b->addr;

    if (sa->sa_family != sb->sa_family)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)sa;
        const struct sockaddr_in *y = (const struct sockaddr_in *)sb;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)sa;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)sb;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

static void
health_unref(struct balancer_health *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        free(h);
}

static void
set_free(struct balancer_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        health_unref(s->servers[i].health);
    free(s);
}

/* Returns the server of s at addr, or NULL. */
static const struct balancer_server *
set_find(const struct balancer_set *s, const struct balancer_addr *addr)
{
    for (size_t i = 0; i < s->n; i++)
        if (balancer_addr_equal(&s->servers[i].addr, addr))
            return &s->servers[i];
    return NULL;
}

/* Returns whether s has exactly the servers of addrs, in any order. */
static bool
set_same(const struct balancer_set *s, const struct balancer_addr *addrs, size_t n)
{
    uint64_t used = 0;

    if (s->n != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < n && ((used & bit(j)) || !balancer_addr_equal(&s->servers[j].addr, &addrs[i])))
            j++;
        if (j == n)
            return false;
        used |= bit(j);
    }
    return true;
}

/*
 * Builds a set of the n servers of addrs with one reference, owned by the caller. A server also in
 * prev (may be NULL) shares its health; the round-robin position carries on from prev's.
 */
static struct balancer_set *
set_new(const struct balancer_addr *addrs, size_t n, const struct balancer_set *prev,
        int64_t cooldown_ms)
{
    struct balancer_set *s;

    if (n > BALANCER_MAX_SERVERS || (s = malloc(sizeof(*s) + n * sizeof(s->servers[0]))) == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    atomic_init(&s->next, prev ? atomic_load_explicit(&prev->next, memory_order_relaxed) : 0);
    s->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct balancer_server *srv = &s->servers[i];
        const struct balancer_server *old = prev ? set_find(prev, &addrs[i]) : NULL;
        srv->addr = addrs[i];
        srv->cooldown_ms = cooldown_ms;
        if (old != NULL) {
            srv->health = old->health;
            atomic_fetch_add_explicit(&srv->health->refs, 1, memory_order_relaxed);
        } else if ((srv->health = malloc(sizeof(*srv->health))) != NULL) {
            atomic_init(&srv->health->down_until, 0);
            atomic_init(&srv->health->failures, 0);
            atomic_init(&srv->health->probe_down, false);
            atomic_init(&srv->health->refs, 1);
        } else {
            set_free(s);
            return NULL;
        }
        s->n++;
    }
    return s;
}

struct balancer *
balancer_new(const struct balancer_addr *addrs, size_t n, int64_t cooldown_ms)
{
    struct balancer *b;
    struct balancer_set *s;

    if ((b = malloc(sizeof(*b))) == NULL)
        return NULL;
    if ((s = set_new(addrs, n, NULL, cooldown_ms)) == NULL) {
        free(b);
        return NULL;
    }
    atomic_init(&b->set, s);
    atomic_init(&b->epoch, 0);
    atomic_init(&b->entering[0], 0);
    atomic_init(&b->entering[1], 0);
    atomic_init(&b->updating, false);
    b->cooldown_ms = cooldown_ms;
    return b;
}

void
balancer_free(struct balancer *b)
{
    if (b == NULL)
        return;
    balancer_set_unref(atomic_load(&b->set));
    free(b);
}

/* Flips the epoch, then waits until no reader is left in the old slot (see the top of the file). */
static void
wait_readers(struct balancer *b)
{
    unsigned e = atomic_load(&b->epoch);

    atomic_store(&b->epoch, e + 1);
    /* A reader in the window is a few instructions from leaving it, unless it was preempted. */
    for (unsigned spins = 0; atomic_load(&b->entering[e & 1]) != 0; spins++)
        if (spins >= 64)
            sched_yield();
}

int
balancer_update(struct balancer *b, const struct balancer_addr *addrs, size_t n)
{
    bool busy = atomic_exchange(&b->updating, true);
    /* Only updates replace b->set, and they do not overlap: cur is ours to read without a ref. */
    struct balancer_set *cur = atomic_load(&b->set), *s;
    int rc = 0;

    assert(!busy);
    (void)busy;
    if (!set_same(cur, addrs, n)) {
        if ((s = set_new(addrs, n, cur, b->cooldown_ms)) == NULL) {
            rc = -1;
        } else {
            atomic_exchange(&b->set, s);
            wait_readers(b);
            balancer_set_unref(cur);
        }
    }
    atomic_store(&b->updating, false);
    return rc;
}

struct balancer_set *
balancer_acquire(struct balancer *b)
{
    struct balancer_set *s;
    unsigned e;

    for (;;) {
        e = atomic_load(&b->epoch) & 1;
        atomic_fetch_add(&b->entering[e], 1);
        if ((atomic_load(&b->epoch) & 1) == e)
            break;
        /* An update flipped the epoch meanwhile and may not wait for this slot: go again. */
        atomic_fetch_sub(&b->entering[e], 1);
    }
    s = atomic_load(&b->set);
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    atomic_fetch_sub(&b->entering[e], 1);
    return s;
}

struct balancer_set *
balancer_set_ref(struct balancer_set *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void
balancer_set_unref(struct balancer_set *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        set_free(s);
}

size_t
balancer_set_size(const struct balancer_set *s)
{
    return s->n;
}

const struct balancer_server *
balancer_set_server(const struct balancer_set *s, size_t i)
{
    assert(i < s->n);
    return &s->servers[i];
}

bool
balancer_server_up(const struct balancer_server *srv, int64_t now_ms)
{
    return atomic_load_explicit(&srv->health->down_until, memory_order_relaxed) <= now_ms;
}

bool
balancer_server_probe_up(const struct balancer_server *srv)
{
    return !atomic_load_explicit(&srv->health->probe_down, memory_order_relaxed);
}

/* What a pick prefers: out of cooldown and not down by the active check. */
static bool
usable(const struct balancer_server *srv, int64_t now_ms)
{
    return balancer_server_up(srv, now_ms) && balancer_server_probe_up(srv);
}

/* The next round-robin position: relaxed is enough, as each draw only needs its own value. */
static size_t
draw(struct balancer_set *s)
{
    return (size_t)(atomic_fetch_add_explicit(&s->next, 1, memory_order_relaxed) % s->n);
}

/* Returns the first server of mask (not empty) at or after i, wrapping around. */
static size_t
next_in(uint64_t mask, size_t i, size_t n)
{
    while (!(mask & bit(i)))
        i = (i + 1) % n;
    return i;
}

const struct balancer_server *
balancer_pick(struct balancer_set *s, int64_t now_ms, uint64_t *tried)
{
    uint64_t left, up = 0;
    size_t i;

    if (s->n == 0)
        return NULL;
    left = (s->n == 64 ? ~(uint64_t)0 : bit(s->n) - 1) & ~(tried ? *tried : 0);
    if (left == 0)
        return NULL;
    i = draw(s);
    if ((left & bit(i)) && usable(&s->servers[i], now_ms))
        goto found;
    for (size_t j = 0; j < s->n; j++)
        if ((left & bit(j)) && usable(&s->servers[j], now_ms))
            up |= bit(j);
    if (up == 0) {
        /* Only servers down (cooldown or probe) are left: try them anyway, in round-robin order. */
        i = next_in(left, i, s->n);
        goto found;
    }
    /*
     * Draw again rather than take the next server up after i: that one would also get the share
     * of every server down before it. Other threads' draws may interleave, so stop after n
     * and take the next one up.
     */
    for (size_t k = 1; k < s->n && !(up & bit(i)); k++)
        i = draw(s);
    i = next_in(up, i, s->n);
found:
    if (tried != NULL)
        *tried |= bit(i);
    return &s->servers[i];
}

void
balancer_mark_failed(const struct balancer_server *srv, int64_t now_ms)
{
    atomic_store_explicit(&srv->health->down_until, now_ms + srv->cooldown_ms,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->health->failures, 1, memory_order_relaxed);
}

void
balancer_mark_ok(const struct balancer_server *srv)
{
    /* Read first: a store on every success would bounce the line between every worker. */
    if (atomic_load_explicit(&srv->health->down_until, memory_order_relaxed) != 0)
        atomic_store_explicit(&srv->health->down_until, 0, memory_order_relaxed);
}

void
balancer_mark_probe(const struct balancer_server *srv, bool up)
{
    /* Read first, as in balancer_mark_ok(): the prober confirms the same verdict every round. */
    if (atomic_load_explicit(&srv->health->probe_down, memory_order_relaxed) == up)
        atomic_store_explicit(&srv->health->probe_down, !up, memory_order_relaxed);
}

uint64_t
balancer_server_failures(const struct balancer_server *srv)
{
    return atomic_load_explicit(&srv->health->failures, memory_order_relaxed);
}

const struct balancer_addr *
balancer_server_addr(const struct balancer_server *srv)
{
    return &srv->addr;
}
