/*
 * Unit tests for busypoll.c: the window's rules on their own, then turns of a real loop with a half
 * on one end of a socketpair (the test holds the other). A poll that catches an event must not
 * sleep (the thread's voluntary context switches say so), a sleep must move the window, and a
 * half's callbacks must be what ends a poll.
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

struct fixture {
    struct half_pair p; /* first: half_pair_setup() */
    unsigned reads, timeouts;
};

static void
owner_cb(void *owner, enum half_event ev)
{
    struct fixture *f = owner;

    if (ev == HALF_READ) {
        f->reads++;
        evbuffer_drain(f->p.h.in, evbuffer_get_length(f->p.h.in));
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
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};
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
}

/* Nothing comes within the window: the worker sleeps until the next event (a timer 30 ms on), and
 * a wait that long halves the window. */
static void
test_nothing_in_the_window_sleeps_and_halves_it(void **state)
{
    struct fixture *f = *state;
    struct busypoll bp = {.window_us = BUSYPOLL_MAX_US};
    uint64_t t0 = loop_mono_us();
    long before = sleeps();

    half_timer(&f->p.h, 30);
    while (f->timeouts == 0)
        assert_int_equal(busypoll_turn(&bp, &f->p.lp, true), 0);
    assert_true(loop_mono_us() - t0 >= 30 * 1000);
    assert_true(sleeps() > before);
    assert_int_equal(f->reads, 0);
    assert_true(bp.window_us <= BUSYPOLL_MAX_US / 2); /* halved once per long wait */
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
        cmocka_unit_test_setup_teardown(test_a_poll_catches_the_event_without_sleeping, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_nothing_in_the_window_sleeps_and_halves_it, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_an_event_soon_after_idle_opens_the_window, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_off_sleeps_at_once_and_drops_the_window, setup,
                                        half_pair_teardown),
        cmocka_unit_test(test_the_config_turns_it_off),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
