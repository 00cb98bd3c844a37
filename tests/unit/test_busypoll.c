/*
 * Unit tests for busypoll.c: the window's rules on their own, then turns of a real loop with a half
 * on one end of a socketpair (the test holds the other). A poll that catches an event must not
 * sleep (the thread's voluntary context switches say so), a sleep must move the window, a half's
 * callbacks must be what ends a poll, and work must be what pays for polling.
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "busypoll.h"
#include "config.h"
#include "half.h"
#include "loop.h"
#include "runtime.h"

#include "half_pair.h"

/* A safety net for the loop tests: a turn that should end at once must not wait for it. */
#define SAFETY_MS 2000

static void
test_short_sleeps_grow_the_window_to_the_bound(void **state)
{
    struct busypoll bp = {0};

    (void)state;
    busypoll_slept(&bp, 1);
    assert_int_equal(bp.window_us, BUSYPOLL_START_US);
    busypoll_slept(&bp, BUSYPOLL_START_US + 1);
    assert_int_equal(bp.window_us, 2 * BUSYPOLL_START_US);
    for (int i = 0; i < 20; i++)
        busypoll_slept(&bp, BUSYPOLL_MAX_US);
    assert_int_equal(bp.window_us, BUSYPOLL_MAX_US);
}

static void
test_a_sleep_within_the_window_leaves_it(void **state)
{
    struct busypoll bp = {.window_us = 16};

    (void)state;
    busypoll_slept(&bp, 16);
    assert_int_equal(bp.window_us, 16);
    busypoll_slept(&bp, 3);
    assert_int_equal(bp.window_us, 16);
}

static void
test_long_sleeps_halve_the_window_to_nothing(void **state)
{
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};

    (void)state;
    busypoll_slept(&bp, BUSYPOLL_MAX_US + 1);
    assert_int_equal(bp.window_us, BUSYPOLL_MAX_US / 2);
    for (int i = 0; i < 10; i++)
        busypoll_slept(&bp, 1000000);
    assert_int_equal(bp.window_us, 0);
    busypoll_slept(&bp, 1000000);
    assert_int_equal(bp.window_us, 0); /* idle stays idle */
}

static void
test_work_earns_polling_up_to_a_cap(void **state)
{
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};

    (void)state;
    assert_int_equal(busypoll_limit(&bp), 0); /* no work, no polling, whatever the window */
    busypoll_worked(&bp, 30);
    assert_int_equal(bp.credit_us, 30);
    assert_int_equal(busypoll_limit(&bp), 30);
    busypoll_worked(&bp, 1000000);
    assert_int_equal(bp.credit_us, BUSYPOLL_CREDIT_MAX_US);
    assert_int_equal(busypoll_limit(&bp), BUSYPOLL_MAX_US); /* and never past the window */
    bp.window_us = 0;
    assert_int_equal(busypoll_limit(&bp), 0);
}

struct fixture {
    struct half_pair p; /* first: half_pair_setup() */
    unsigned reads, timeouts;
    uint64_t work_us; /* how long each read's callback works */
};

static void
owner_cb(void *owner, enum half_event ev)
{
    struct fixture *f = owner;

    if (ev == HALF_READ) {
        /* As the proxy's callbacks do, reads the turn's clock as its work begins. */
        uint64_t from = loop_now_us(&f->p.lp);

        f->reads++;
        evbuffer_drain(f->p.h.in, evbuffer_get_length(f->p.h.in));
        while (loop_mono_us() - from < f->work_us)
            ;
    }
    if (ev == HALF_TIMEOUT)
        f->timeouts++;
}

static int
setup(void **state)
{
    return half_pair_setup(state, sizeof(struct fixture), owner_cb);
}

static long
sleeps(void)
{
    struct rusage ru;

    assert_int_equal(getrusage(RUSAGE_THREAD, &ru), 0);
    return ru.ru_nvcsw;
}

static void
peer_sends(struct fixture *f)
{
    assert_int_equal(write(f->p.peer, "x", 1), 1);
}

/* A byte waiting: the first poll finds it, the half's callback ends the poll, nobody sleeps. */
static void
test_a_poll_catches_the_event_without_sleeping(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US, .credit_us = BUSYPOLL_CREDIT_MAX_US};
    unsigned long seen = f->p.lp.io_events;
    long before;

    half_timer(&f->p.h, SAFETY_MS);
    peer_sends(f);
    before = sleeps();
    assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0);
    assert_int_equal(sleeps(), before);
    assert_int_equal(f->reads, 1);
    assert_int_equal(f->timeouts, 0);
    assert_true(f->p.lp.io_events > seen);
    assert_int_equal(bp.window_us, BUSYPOLL_MAX_US);
    assert_int_equal(bp.credit_us, BUSYPOLL_CREDIT_MAX_US); /* found at once: nothing spent */
}

/* Nothing comes within the window: the worker sleeps until the next event (a timer 30 ms on), and
 * a wait that long halves the window. */
static void
test_nothing_in_the_window_sleeps_and_halves_it(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US, .credit_us = BUSYPOLL_CREDIT_MAX_US};
    uint64_t t0 = loop_mono_us();
    long before = sleeps();

    half_timer(&f->p.h, 30);
    while (f->timeouts == 0)
        assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0);
    assert_true(loop_mono_us() - t0 >= 30 * 1000);
    assert_true(sleeps() > before);
    assert_int_equal(f->reads, 0);
    assert_true(bp.window_us <= BUSYPOLL_MAX_US / 2); /* halved once per long wait */
    assert_true(bp.credit_us <= BUSYPOLL_CREDIT_MAX_US - BUSYPOLL_MAX_US); /* the poll was paid */
}

/* A turn's work (a callback busy for longer than the credit's cap) pays for the next turn's poll,
 * which then catches its event without sleeping. */
static void
test_work_pays_for_the_next_poll(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};
    long before;

    half_timer(&f->p.h, SAFETY_MS);
    f->work_us = 2 * BUSYPOLL_CREDIT_MAX_US;
    peer_sends(f);
    assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0); /* no credit: straight to sleep */
    assert_int_equal(f->reads, 1);
    assert_int_equal(bp.credit_us, 0);
    assert_true(bp.window_us > 0); /* halved by the long turn, not closed */
    f->work_us = 0;
    peer_sends(f);
    before = sleeps();
    assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0);
    assert_int_equal(sleeps(), before);
    assert_int_equal(bp.credit_us, BUSYPOLL_CREDIT_MAX_US);
}

static uint64_t
thread_cpu_us(void)
{
    struct timespec ts;

    assert_int_equal(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts), 0);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The CPU one turn takes that waits 2 ms for its timer, polling first as bp allows. */
static uint64_t
waiting_turn_cpu_us(struct fixture *f, struct busypoll *bp)
{
    unsigned timeouts = f->timeouts;
    uint64_t cpu = thread_cpu_us();

    half_timer(&f->p.h, 2);
    while (f->timeouts == timeouts)
        assert_int_equal(busypoll_turn(bp, &f->p.lp, true), 0);
    return thread_cpu_us() - cpu;
}

/* With the window open but no credit, the turn does not poll: it takes less CPU than the same turn
 * polling its window. */
static void
test_no_credit_no_poll(void **state)
{
    struct fixture *f = *state;
    bool shown = false;

    /* Tries a few times: a poll preempted by the host uses less CPU than it waited. */
    for (int i = 0; i < 5 && !shown; i++) {
        struct busypoll paid = {.window_us = BUSYPOLL_MAX_US, .credit_us = BUSYPOLL_CREDIT_MAX_US};
        struct busypoll unpaid = {.window_us = BUSYPOLL_MAX_US};
        uint64_t with = waiting_turn_cpu_us(f, &paid);
        uint64_t without = waiting_turn_cpu_us(f, &unpaid);

        assert_int_equal(unpaid.credit_us, 0);
        shown = with > without + BUSYPOLL_MAX_US / 2;
    }
    assert_true(shown);
}

/* With no window the turn sleeps at once; an event already there ends that wait at once, which
 * says events come soon: the window opens. */
static void
test_an_event_soon_after_idle_opens_the_window(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {0};

    half_timer(&f->p.h, SAFETY_MS);
    /* Tries a few times: a turn preempted for longer than the bound counts as a long sleep. */
    for (unsigned i = 1; i <= 20 && bp.window_us == 0; i++) {
        peer_sends(f);
        assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0);
        assert_int_equal(f->reads, i);
    }
    assert_int_equal(f->timeouts, 0);
    assert_int_equal(bp.window_us, BUSYPOLL_START_US);
}

/* busy_poll: false: no polling, and the window is gone (it starts again from nothing). */
static void
test_off_sleeps_at_once_and_drops_the_window(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};

    half_timer(&f->p.h, SAFETY_MS);
    peer_sends(f);
    assert_int_equal(busypoll_turn(&bp, &f->p.lp, false), 0);
    assert_int_equal(f->reads, 1);
    assert_int_equal(bp.window_us, 0);
    peer_sends(f);
    assert_int_equal(busypoll_turn(&bp, &f->p.lp, false), 0);
    assert_int_equal(f->reads, 2);
    assert_int_equal(bp.window_us, 0);
}

/* The config key: on by default, off when the config says false, and only a boolean. */
static void
test_the_config_turns_it_off(void **state)
{
    static const char none[] = "services:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    static const char off[] = "busy_poll: false\nservices:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    static const char bad[] = "busy_poll: 50us\nservices:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    char err[CONFIG_ERR_SIZE] = "";
    struct config *cfg = config_parse("t.yaml", off, sizeof(off) - 1, err, sizeof(err));

    (void)state;
    assert_non_null(cfg);
    assert_false(cfg->busy_poll);
    config_unref(cfg);
    cfg = config_parse("t.yaml", none, sizeof(none) - 1, err, sizeof(err));
    assert_non_null(cfg);
    assert_true(cfg->busy_poll);
    config_unref(cfg);
    assert_null(config_parse("t.yaml", bad, sizeof(bad) - 1, err, sizeof(err)));
    assert_string_equal(err, "t.yaml:1:12: busy_poll: \"50us\" is not true or false\n");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_sleeps_grow_the_window_to_the_bound),
        cmocka_unit_test(test_a_sleep_within_the_window_leaves_it),
        cmocka_unit_test(test_long_sleeps_halve_the_window_to_nothing),
        cmocka_unit_test(test_work_earns_polling_up_to_a_cap),
        cmocka_unit_test_setup_teardown(test_a_poll_catches_the_event_without_sleeping, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_in_the_window_sleeps_and_halves_it, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_an_event_soon_after_idle_opens_the_window, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_off_sleeps_at_once_and_drops_the_window, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_work_pays_for_the_next_poll, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_no_credit_no_poll, setup, half_pair_teardown),
        cmocka_unit_test(test_the_config_turns_it_off),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
