/* Unit tests for balancer.c: fair shares, cooldowns, active-check verdicts, retries, set swaps, and
 * threads doing all of it at once. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "balancer.h"

#define T0 1000000 /* an arbitrary "now" in ms */
#define COOLDOWN 5000

/* Fills a[i] with 127.0.0.<first + i>:8080. */
static void
addrs_v4(struct balancer_addr *a, size_t n, int first)
{
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(8080)};
        sin.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(first + (int)i));
        assert_int_equal(balancer_addr_init(&a[i], (struct sockaddr *)&sin, sizeof(sin)), 0);
    }
}

/* Returns the index in s of a server picked from s. */
static size_t
index_of(const struct balancer_set *s, const struct balancer_server *srv)
{
    for (size_t i = 0; i < balancer_set_size(s); i++)
        if (balancer_set_server(s, i) == srv)
            return i;
    fail_msg("server not in set");
    return 0;
}

/* Returns the server of s whose label is label. */
static const struct balancer_server *
by_label(const struct balancer_set *s, const char *label)
{
    for (size_t i = 0; i < balancer_set_size(s); i++)
        if (strcmp(balancer_server_addr(balancer_set_server(s, i))->label, label) == 0)
            return balancer_set_server(s, i);
    fail_msg("no server %s", label);
    return NULL;
}

static void
count_picks(struct balancer_set *s, int64_t now, int picks, int *counts)
{
    for (int k = 0; k < picks; k++) {
        const struct balancer_server *srv = balancer_pick(s, now, NULL);
        assert_non_null(srv);
        counts[index_of(s, srv)]++;
    }
}

static void
test_addr_init(void **state)
{
    struct balancer_addr a;
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(8080)};
    struct sockaddr sa = {.sa_family = AF_UNIX};

    (void)state;
    addrs_v4(&a, 1, 22);
    assert_string_equal(a.label, "127.0.0.22:8080");
    assert_int_equal(a.addrlen, sizeof(struct sockaddr_in));
    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    assert_int_equal(balancer_addr_init(&a, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
    assert_string_equal(a.label, "[2001:db8::1]:443");
    assert_int_equal(((struct sockaddr *)&a.addr)->sa_family, AF_INET6);
    assert_int_equal(balancer_addr_init(&a, (struct sockaddr *)&sin, sizeof(sin) - 1), -1);
    assert_int_equal(balancer_addr_init(&a, &sa, sizeof(sa)), -1);
}

static void
test_fair_shares(void **state)
{
    struct balancer_addr a[3];
    int counts[3] = {0};

    (void)state;
    addrs_v4(a, 3, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    assert_non_null(b);
    struct balancer_set *s = balancer_acquire(b);
    assert_int_equal(balancer_set_size(s), 3);
    /* Consecutive picks go round in order. */
    size_t first = index_of(s, balancer_pick(s, T0, NULL));
    assert_int_equal(index_of(s, balancer_pick(s, T0, NULL)), (first + 1) % 3);
    assert_int_equal(index_of(s, balancer_pick(s, T0, NULL)), (first + 2) % 3);
    count_picks(s, T0, 300, counts);
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 100);
    balancer_set_unref(s);
    balancer_free(b);
}

#define THREADS 4
#define THREAD_PICKS 750

struct picker {
    struct balancer *b;
    pthread_barrier_t *start;
    int counts[3];
};

static void *
picker_main(void *arg)
{
    struct picker *p = arg;

    pthread_barrier_wait(p->start);
    for (int k = 0; k < THREAD_PICKS; k++) {
        struct balancer_set *s = balancer_acquire(p->b);
        const struct balancer_server *srv = balancer_pick(s, T0, NULL);
        for (size_t i = 0; i < balancer_set_size(s); i++)
            if (balancer_set_server(s, i) == srv)
                p->counts[i]++;
        balancer_set_unref(s);
    }
    return NULL;
}

static void
test_fair_shares_threads(void **state)
{
    struct balancer_addr a[3];
    struct picker p[THREADS];
    pthread_t t[THREADS];
    pthread_barrier_t start;
    int total[3] = {0};

    (void)state;
    addrs_v4(a, 3, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    assert_non_null(b);
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct picker){.b = b, .start = &start};
        assert_int_equal(pthread_create(&t[i], NULL, picker_main, &p[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        for (int j = 0; j < 3; j++)
            total[j] += p[i].counts[j];
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(total[0], 1000);
    assert_int_equal(total[1], 1000);
    assert_int_equal(total[2], 1000);
    balancer_free(b);
}

static void
test_cooldown(void **state)
{
    struct balancer_addr a[3];
    int counts[3] = {0};

    (void)state;
    addrs_v4(a, 3, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    struct balancer_set *s = balancer_acquire(b);
    const struct balancer_server *down = balancer_set_server(s, 1);

    assert_true(balancer_server_up(down, T0));
    balancer_mark_failed(down, T0);
    assert_false(balancer_server_up(down, T0));
    assert_int_equal(balancer_server_failures(down), 1);

    /* Skipped while in cooldown, and its share is split evenly, not given to its neighbour. */
    count_picks(s, T0 + COOLDOWN - 1, 300, counts);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[0], 150);
    assert_int_equal(counts[2], 150);
    assert_false(balancer_server_up(down, T0 + COOLDOWN - 1));

    /* Back once the cooldown is over. */
    assert_true(balancer_server_up(down, T0 + COOLDOWN));
    memset(counts, 0, sizeof(counts));
    count_picks(s, T0 + COOLDOWN, 300, counts);
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 100);

    /* A second failure restarts the cooldown from its own time; mark_ok ends it early. */
    balancer_mark_failed(down, T0 + 10000);
    assert_false(balancer_server_up(down, T0 + 10000 + COOLDOWN - 1));
    assert_int_equal(balancer_server_failures(down), 2);
    balancer_mark_ok(down);
    assert_true(balancer_server_up(down, T0 + 10000));
    balancer_mark_ok(down);
    assert_true(balancer_server_up(down, T0 + 10000));
    assert_int_equal(balancer_server_failures(down), 2);

    balancer_set_unref(s);
    balancer_free(b);
}

/* A cooldown of 0 turns passive health off: a failure is counted, the server stays up. */
static void
test_cooldown_off(void **state)
{
    struct balancer_addr a[2];

    (void)state;
    addrs_v4(a, 2, 22);
    struct balancer *b = balancer_new(a, 2, 0);
    struct balancer_set *s = balancer_acquire(b);
    balancer_mark_failed(balancer_set_server(s, 0), T0);
    assert_true(balancer_server_up(balancer_set_server(s, 0), T0));
    assert_int_equal(balancer_server_failures(balancer_set_server(s, 0)), 1);
    balancer_set_unref(s);
    balancer_free(b);
}

static void
test_all_down_still_picks(void **state)
{
    struct balancer_addr a[3];
    int counts[3] = {0};

    (void)state;
    addrs_v4(a, 3, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    struct balancer_set *s = balancer_acquire(b);
    for (size_t i = 0; i < 3; i++)
        balancer_mark_failed(balancer_set_server(s, i), T0);
    /* Still round-robin among them. */
    size_t first = index_of(s, balancer_pick(s, T0, NULL));
    assert_int_equal(index_of(s, balancer_pick(s, T0, NULL)), (first + 1) % 3);
    assert_int_equal(index_of(s, balancer_pick(s, T0, NULL)), (first + 2) % 3);
    count_picks(s, T0, 300, counts);
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 100);
    assert_int_equal(counts[2], 100);
    balancer_set_unref(s);
    balancer_free(b);
}

/*
 * Active-check verdicts, alone and with cooldowns: which servers get picks. Marks are applied in
 * the order of the fields: cooldown, probe down, probe up again, then mark_ok.
 */
struct probe_case {
    const char *name;
    uint64_t cooldown; /* servers marked failed at T0 */
    uint64_t down;     /* servers marked down by the probe */
    uint64_t up;       /* servers marked up by the probe afterwards */
    uint64_t ok;       /* servers given balancer_mark_ok() afterwards */
    int counts[3];     /* picks of each server out of 300 at T0 */
};

static const struct probe_case probe_cases[] = {
    {"all up", 0, 0, 0, 0, {100, 100, 100}},
    {"probe-down skipped, share split evenly", 0, 0x2, 0, 0, {150, 0, 150}},
    {"two probe-down: the last one takes all", 0, 0x5, 0, 0, {0, 300, 0}},
    {"up again: picked again", 0, 0x2, 0x2, 0, {100, 100, 100}},
    {"up again while others stay down", 0, 0x7, 0x1, 0, {300, 0, 0}},
    {"all probe-down: still picked, round-robin", 0, 0x7, 0, 0, {100, 100, 100}},
    {"probe-down and cooldown together skip both", 0x1, 0x2, 0, 0, {0, 0, 300}},
    {"down by either way on all: still picked", 0x3, 0x4, 0, 0, {100, 100, 100}},
    {"cooldown and probe-down on one server", 0x2, 0x2, 0, 0, {150, 0, 150}},
    {"mark_ok does not undo a probe's down", 0, 0x2, 0, 0x2, {150, 0, 150}},
    {"probe up does not end a cooldown", 0x2, 0x2, 0x2, 0, {150, 0, 150}},
    {"mark_ok then probe up: both over", 0x2, 0x2, 0x2, 0x2, {100, 100, 100}},
};

static void
test_probe_verdicts(void **state)
{
    struct balancer_addr a[3];

    (void)state;
    addrs_v4(a, 3, 22);
    for (size_t c = 0; c < sizeof(probe_cases) / sizeof(probe_cases[0]); c++) {
        const struct probe_case *pc = &probe_cases[c];
        struct balancer *b = balancer_new(a, 3, COOLDOWN);
        struct balancer_set *s = balancer_acquire(b);
        int counts[3] = {0};
        uint64_t usable = 0, tried = 0;
        int nusable = 0;

        for (size_t i = 0; i < 3; i++) {
            const struct balancer_server *srv = balancer_set_server(s, i);
            assert_true(balancer_server_probe_up(srv)); /* every server starts up */
            if (pc->cooldown & ((uint64_t)1 << i))
                balancer_mark_failed(srv, T0);
            if (pc->down & ((uint64_t)1 << i))
                balancer_mark_probe(srv, false);
            if (pc->up & ((uint64_t)1 << i))
                balancer_mark_probe(srv, true);
            if (pc->ok & ((uint64_t)1 << i))
                balancer_mark_ok(srv);
            assert_int_equal(balancer_server_probe_up(srv),
                             !(pc->down & ~pc->up & ((uint64_t)1 << i)));
            if (balancer_server_up(srv, T0) && balancer_server_probe_up(srv)) {
                usable |= (uint64_t)1 << i;
                nusable++;
            }
        }
        count_picks(s, T0, 300, counts);
        for (size_t i = 0; i < 3; i++)
            if (counts[i] != pc->counts[i])
                fail_msg("%s: server %zu got %d picks, want %d", pc->name, i, counts[i],
                         pc->counts[i]);
        /* One request's retries: the usable servers first, then the down ones, each once. */
        for (int k = 0; k < 3; k++) {
            size_t i = index_of(s, balancer_pick(s, T0, &tried));
            if ((int)((usable >> i) & 1) != (k < nusable))
                fail_msg("%s: retry %d picked server %zu out of order", pc->name, k, i);
        }
        assert_int_equal(tried, 0x7);
        assert_null(balancer_pick(s, T0, &tried));
        balancer_set_unref(s);
        balancer_free(b);
    }
}

/* A probe's verdict follows the address across swaps; a new address, or one that left and came
 * back, starts up. */
static void
test_probe_swap(void **state)
{
    struct balancer_addr a[4]; /* .22 .23 .24 .25 */

    (void)state;
    addrs_v4(a, 4, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN); /* .22 .23 .24 */
    struct balancer_set *old = balancer_acquire(b);
    balancer_mark_probe(by_label(old, "127.0.0.23:8080"), false);

    /* .22 goes, .25 comes; .23 and .24 stay, in another order. */
    struct balancer_addr next[3] = {a[3], a[2], a[1]};
    assert_int_equal(balancer_update(b, next, 3), 0);
    struct balancer_set *cur = balancer_acquire(b);
    assert_ptr_not_equal(cur, old);
    assert_false(balancer_server_probe_up(by_label(cur, "127.0.0.23:8080")));
    assert_true(balancer_server_probe_up(by_label(cur, "127.0.0.24:8080")));
    assert_true(balancer_server_probe_up(by_label(cur, "127.0.0.25:8080")));
    for (int k = 0; k < 6; k++)
        assert_ptr_not_equal(balancer_pick(cur, T0, NULL), by_label(cur, "127.0.0.23:8080"));

    /* Marks through the old set reach the new one, both ways. */
    balancer_mark_probe(by_label(old, "127.0.0.23:8080"), true);
    assert_true(balancer_server_probe_up(by_label(cur, "127.0.0.23:8080")));
    balancer_mark_probe(by_label(old, "127.0.0.24:8080"), false);
    assert_false(balancer_server_probe_up(by_label(cur, "127.0.0.24:8080")));
    balancer_set_unref(old);

    /* .24 leaves and comes back: it starts up. */
    balancer_set_unref(cur);
    assert_int_equal(balancer_update(b, a, 2), 0); /* .22 .23 */
    assert_int_equal(balancer_update(b, a, 3), 0); /* .22 .23 .24 */
    cur = balancer_acquire(b);
    assert_true(balancer_server_probe_up(by_label(cur, "127.0.0.24:8080")));
    balancer_set_unref(cur);
    balancer_free(b);
}

/* One request's retries: every server once, those in cooldown last, then nothing. */
static void
test_retries_exclude_tried(void **state)
{
    struct balancer_addr a[4];

    (void)state;
    addrs_v4(a, 4, 22);
    struct balancer *b = balancer_new(a, 4, COOLDOWN);
    struct balancer_set *s = balancer_acquire(b);
    balancer_mark_failed(balancer_set_server(s, 1), T0);
    balancer_mark_failed(balancer_set_server(s, 2), T0);
    /* Whatever the round-robin position, as other requests move it. */
    for (int round = 0; round < 12; round++) {
        uint64_t tried = 0;
        size_t order[4];
        for (int k = 0; k < 4; k++) {
            const struct balancer_server *srv = balancer_pick(s, T0, &tried);
            assert_non_null(srv);
            order[k] = index_of(s, srv);
            assert_true(tried & ((uint64_t)1 << order[k]));
            for (int m = 0; m < round % 3; m++)
                balancer_pick(s, T0, NULL); /* another request's pick in between */
        }
        assert_int_equal(tried, 0xf);
        assert_true(balancer_server_up(balancer_set_server(s, order[0]), T0));
        assert_true(balancer_server_up(balancer_set_server(s, order[1]), T0));
        assert_false(balancer_server_up(balancer_set_server(s, order[2]), T0));
        assert_false(balancer_server_up(balancer_set_server(s, order[3]), T0));
        assert_int_not_equal(order[0], order[1]);
        assert_int_not_equal(order[2], order[3]);
        assert_null(balancer_pick(s, T0, &tried));
    }
    /* Servers the caller already tried are never picked again, even if only servers in
     * cooldown are left. */
    uint64_t tried = 1u << 0 | 1u << 3;
    size_t i = index_of(s, balancer_pick(s, T0, &tried));
    assert_true(i == 1 || i == 2);
    assert_int_equal(index_of(s, balancer_pick(s, T0, &tried)), 3 - i);
    assert_null(balancer_pick(s, T0, &tried));
    balancer_set_unref(s);
    balancer_free(b);
}

/* Bits beyond the set's size are ignored, and a 64-server set uses every bit. */
static void
test_retries_limits(void **state)
{
    struct balancer_addr a[BALANCER_MAX_SERVERS + 1];
    uint64_t tried = ~(uint64_t)0 << 2;

    (void)state;
    addrs_v4(a, BALANCER_MAX_SERVERS + 1, 1);
    assert_null(balancer_new(a, BALANCER_MAX_SERVERS + 1, COOLDOWN));
    struct balancer *b = balancer_new(a, 2, COOLDOWN);
    struct balancer_set *s = balancer_acquire(b);
    assert_non_null(balancer_pick(s, T0, &tried));
    assert_non_null(balancer_pick(s, T0, &tried));
    assert_null(balancer_pick(s, T0, &tried));
    balancer_set_unref(s);
    assert_int_equal(balancer_update(b, a, BALANCER_MAX_SERVERS + 1), -1);
    assert_int_equal(balancer_update(b, a, BALANCER_MAX_SERVERS), 0);
    s = balancer_acquire(b);
    assert_int_equal(balancer_set_size(s), BALANCER_MAX_SERVERS);
    tried = 0;
    for (int k = 0; k < BALANCER_MAX_SERVERS; k++)
        assert_non_null(balancer_pick(s, T0, &tried));
    assert_int_equal(tried, ~(uint64_t)0);
    assert_null(balancer_pick(s, T0, &tried));
    balancer_set_unref(s);
    balancer_free(b);
}

static void
test_empty_set(void **state)
{
    struct balancer_addr a[1];
    uint64_t tried = 0;

    (void)state;
    struct balancer *b = balancer_new(NULL, 0, COOLDOWN);
    assert_non_null(b);
    struct balancer_set *s = balancer_acquire(b);
    assert_int_equal(balancer_set_size(s), 0);
    assert_null(balancer_pick(s, T0, NULL));
    assert_null(balancer_pick(s, T0, &tried));
    assert_int_equal(tried, 0);
    balancer_set_unref(s);

    /* Scaled up from zero, then back to zero. */
    addrs_v4(a, 1, 25);
    assert_int_equal(balancer_update(b, a, 1), 0);
    s = balancer_acquire(b);
    assert_string_equal(balancer_server_addr(balancer_pick(s, T0, NULL))->label, "127.0.0.25:8080");
    balancer_set_unref(s);
    assert_int_equal(balancer_update(b, NULL, 0), 0);
    s = balancer_acquire(b);
    assert_null(balancer_pick(s, T0, NULL));
    balancer_set_unref(s);
    balancer_free(b);
    balancer_free(NULL);
    balancer_set_unref(NULL);
}

static void
test_swap_keeps_health(void **state)
{
    struct balancer_addr a[4]; /* .22 .23 .24 .25 */

    (void)state;
    addrs_v4(a, 4, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN); /* .22 .23 .24 */
    struct balancer_set *old = balancer_acquire(b);
    balancer_mark_failed(by_label(old, "127.0.0.23:8080"), T0);

    /* .22 goes, .25 comes; .23 and .24 stay, in another order. */
    struct balancer_addr next[3] = {a[3], a[2], a[1]};
    assert_int_equal(balancer_update(b, next, 3), 0);
    struct balancer_set *cur = balancer_acquire(b);
    assert_ptr_not_equal(cur, old);
    assert_int_equal(balancer_set_size(cur), 3);
    assert_false(balancer_server_up(by_label(cur, "127.0.0.23:8080"), T0));
    assert_int_equal(balancer_server_failures(by_label(cur, "127.0.0.23:8080")), 1);
    assert_true(balancer_server_up(by_label(cur, "127.0.0.24:8080"), T0));
    assert_true(balancer_server_up(by_label(cur, "127.0.0.25:8080"), T0));

    /* The reference held across the swap still works, and its marks reach the new set. */
    assert_int_equal(balancer_set_size(old), 3);
    assert_string_equal(balancer_server_addr(balancer_set_server(old, 0))->label,
                        "127.0.0.22:8080");
    for (int k = 0; k < 6; k++)
        assert_ptr_not_equal(balancer_pick(old, T0, NULL), by_label(old, "127.0.0.23:8080"));
    balancer_mark_failed(by_label(old, "127.0.0.24:8080"), T0);
    assert_false(balancer_server_up(by_label(cur, "127.0.0.24:8080"), T0));
    balancer_mark_ok(by_label(old, "127.0.0.23:8080"));
    assert_true(balancer_server_up(by_label(cur, "127.0.0.23:8080"), T0));
    balancer_set_unref(old); /* the last reference: ASan checks it is freed once */

    /* A server that leaves and comes back starts afresh. */
    balancer_mark_failed(by_label(cur, "127.0.0.25:8080"), T0);
    balancer_set_unref(cur);
    assert_int_equal(balancer_update(b, a, 2), 0);
    assert_int_equal(balancer_update(b, &a[3], 1), 0);
    cur = balancer_acquire(b);
    assert_true(balancer_server_up(balancer_set_server(cur, 0), T0));
    assert_int_equal(balancer_server_failures(balancer_set_server(cur, 0)), 0);
    balancer_set_unref(cur);
    balancer_free(b);
}

/* The same servers in another order (DNS answers rotate) keep the set and its position. */
static void
test_swap_same_servers(void **state)
{
    struct balancer_addr a[3], rev[3];

    (void)state;
    addrs_v4(a, 3, 22);
    rev[0] = a[2], rev[1] = a[1], rev[2] = a[0];
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    struct balancer_set *before = balancer_acquire(b);
    assert_int_equal(balancer_update(b, rev, 3), 0);
    struct balancer_set *after = balancer_acquire(b);
    assert_ptr_equal(before, after);
    balancer_set_unref(before);
    balancer_set_unref(after);
    /* Same size, one different address: a new set. */
    rev[1] = a[0];
    assert_int_equal(balancer_update(b, rev, 3), 0);
    after = balancer_acquire(b);
    assert_int_equal(balancer_set_size(after), 3);
    assert_string_equal(balancer_server_addr(balancer_set_server(after, 0))->label,
                        "127.0.0.24:8080");
    assert_string_equal(balancer_server_addr(balancer_set_server(after, 1))->label,
                        "127.0.0.22:8080");
    balancer_set_unref(after);
    balancer_free(b);
}

/* The round-robin position carries on across a swap, so a swap does not restart at server 0. */
static void
test_swap_keeps_position(void **state)
{
    struct balancer_addr a[4];

    (void)state;
    addrs_v4(a, 4, 22);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    struct balancer_set *s = balancer_acquire(b);
    balancer_pick(s, T0, NULL);
    balancer_set_unref(s);
    assert_int_equal(balancer_update(b, a, 4), 0);
    s = balancer_acquire(b);
    assert_int_equal(index_of(s, balancer_pick(s, T0, NULL)), 1);
    balancer_set_unref(s);
    balancer_free(b);
}

#define SWAPS 2000
#define SWAP_ACQUIRES 20000

struct swapper {
    struct balancer *b;
    atomic_bool *stop;
    atomic_long *acquires;
};

/* Acquires, picks, marks and drops sets as fast as it can while the main thread swaps them. */
static void *
swap_reader_main(void *arg)
{
    struct swapper *w = arg;

    while (!atomic_load(w->stop)) {
        struct balancer_set *s = balancer_acquire(w->b);
        uint64_t tried = 0;
        const struct balancer_server *srv;
        while ((srv = balancer_pick(s, T0, &tried)) != NULL) {
            if (balancer_server_addr(srv)->addrlen != sizeof(struct sockaddr_in))
                fail_msg("bad server");
            if (tried & 1)
                balancer_mark_failed(srv, T0);
            else
                balancer_mark_ok(srv);
        }
        balancer_set_unref(s);
        atomic_fetch_add_explicit(w->acquires, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Readers race swaps; ASan or TSan reports a set freed under a reader. */
static void
test_swap_under_load(void **state)
{
    struct balancer_addr a[8];
    struct swapper w[THREADS];
    pthread_t t[THREADS];
    atomic_bool stop = false;
    atomic_long acquires = 0;
    long swaps = 0;

    (void)state;
    addrs_v4(a, 8, 30);
    struct balancer *b = balancer_new(a, 3, COOLDOWN);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct swapper){.b = b, .stop = &stop, .acquires = &acquires};
        assert_int_equal(pthread_create(&t[i], NULL, swap_reader_main, &w[i]), 0);
    }
    /* Keep swapping until the readers have done their share too, however they are scheduled. */
    for (; swaps < SWAPS || atomic_load(&acquires) < SWAP_ACQUIRES; swaps++)
        assert_int_equal(balancer_update(b, &a[swaps % 5], (size_t)(swaps % 4)), 0);
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    balancer_free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_init),
        cmocka_unit_test(test_fair_shares),
        cmocka_unit_test(test_fair_shares_threads),
        cmocka_unit_test(test_cooldown),
        cmocka_unit_test(test_cooldown_off),
        cmocka_unit_test(test_all_down_still_picks),
        cmocka_unit_test(test_probe_verdicts),
        cmocka_unit_test(test_probe_swap),
        cmocka_unit_test(test_retries_exclude_tried),
        cmocka_unit_test(test_retries_limits),
        cmocka_unit_test(test_empty_set),
        cmocka_unit_test(test_swap_keeps_health),
        cmocka_unit_test(test_swap_same_servers),
        cmocka_unit_test(test_swap_keeps_position),
        cmocka_unit_test(test_swap_under_load),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
