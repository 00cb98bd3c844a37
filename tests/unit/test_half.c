/*
 * Unit tests for half.c on a real loop: one end of a socketpair is the half, the test holds the
 * other. The timer is the subject: owners re-arm it on every request, so re-arming for later only
 * moves the due time and the pending event waits again for the rest when it goes off; what the
 * owner sees must still be one HALF_TIMEOUT, never before the time it last asked for, never after
 * it disarmed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "config.h"
#include "half.h"
#include "loop.h"
#include "runtime.h"

#include "half_pair.h"

struct fixture {
    struct half_pair p; /* first: half_pair_setup() */
    unsigned timeouts, reads;
    uint64_t fired_us; /* loop_mono_us() at the first HALF_TIMEOUT */
    uint64_t rearm_ms; /* when not 0: the owner arms the timer again on HALF_TIMEOUT, once */
};

static void
owner_cb(void *owner, enum half_event ev)
{
    struct fixture *f = owner;

    if (ev == HALF_READ)
        f->reads++;
    if (ev != HALF_TIMEOUT)
        return;
    if (f->timeouts++ == 0)
        f->fired_us = loop_mono_us();
    if (f->rearm_ms != 0) {
        half_timer(&f->p.h, f->rearm_ms);
        f->rearm_ms = 0;
    }
}

static int
setup(void **state)
{
    return half_pair_setup(state, sizeof(struct fixture), owner_cb);
}

static bool
timed_out(const void *arg)
{
    return ((const struct fixture *)arg)->timeouts > 0;
}

/* Runs the loop until the half reports a timeout or max_ms pass; returns the ms waited. */
static uint64_t
wait_timeout(struct fixture *f, uint64_t max_ms)
{
    uint64_t t0 = loop_mono_us();

    (void)loop_run_until(f->p.lp.base, timed_out, f, max_ms);
    return (loop_mono_us() - t0) / 1000;
}

static bool
never_done(const void *arg)
{
    (void)arg;
    return false;
}

/* Runs the loop for ms, whatever happens. */
static void
run_for(struct fixture *f, uint64_t ms)
{
    (void)loop_run_until(f->p.lp.base, never_done, NULL, ms);
}

static void
test_the_timer_goes_off_once_and_not_early(void **state)
{
    struct fixture *f = *state;
    uint64_t t0 = loop_mono_us();

    half_timer(&f->p.h, 30);
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
    assert_true(f->fired_us - t0 >= 30 * 1000);
    run_for(f, 60);
    assert_int_equal(f->timeouts, 1); /* not again: it was not re-armed */
}

/* Re-armed for later while pending: the event goes off at the first time, finds the owner's time
 * not yet come, and waits for the rest; the owner hears of it once, at its own time. */
static void
test_rearmed_for_later_it_waits_for_the_new_time(void **state)
{
    struct fixture *f = *state;
    uint64_t t0 = loop_mono_us(), armed;

    half_timer(&f->p.h, 20);
    armed = f->p.h.armed_us;
    half_timer(&f->p.h, 120);
    assert_int_equal(f->p.h.armed_us, armed); /* no new event: the pending one serves */
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
    assert_true(f->fired_us - t0 >= 120 * 1000);
}

/* Many re-arms, as a keep-alive connection makes, each later than the one before. */
static void
test_rearmed_again_and_again_it_goes_off_after_the_last(void **state)
{
    struct fixture *f = *state;
    uint64_t last = 0;

    for (int i = 0; i < 8; i++) {
        half_timer(&f->p.h, 200);
        last = loop_mono_us();
        run_for(f, 10); /* far less than the timeout: it must not go off */
        assert_int_equal(f->timeouts, 0);
    }
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
    assert_true(f->fired_us - last >= 200 * 1000);
}

/* Re-armed for sooner: the pending event is moved forward, not waited for. */
static void
test_rearmed_for_sooner_it_goes_off_at_the_sooner_time(void **state)
{
    struct fixture *f = *state;
    uint64_t waited;

    half_timer(&f->p.h, 60000);
    half_timer(&f->p.h, 20);
    waited = wait_timeout(f, 30000);
    assert_int_equal(f->timeouts, 1);
    assert_true(waited < 30000);
}

/* Disarmed while pending: the event still goes off, and finds nothing due. */
static void
test_a_disarmed_timer_says_nothing(void **state)
{
    struct fixture *f = *state;

    half_timer(&f->p.h, 20);
    half_timer(&f->p.h, 0);
    run_for(f, 80);
    assert_int_equal(f->timeouts, 0);
    assert_int_equal(f->p.h.armed_us, 0); /* it went off, unseen */
    /* Armed again after that, it works as new. */
    half_timer(&f->p.h, 10);
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
}

/* Disarmed, then armed again before the pending event went off: the new time holds. */
static void
test_disarmed_then_rearmed_it_goes_off_at_the_new_time(void **state)
{
    struct fixture *f = *state;
    uint64_t t0 = loop_mono_us();

    half_timer(&f->p.h, 20);
    half_timer(&f->p.h, 0);
    half_timer(&f->p.h, 100);
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
    assert_true(f->fired_us - t0 >= 100 * 1000);
}

/* The owner arms it again from its HALF_TIMEOUT: a second timeout follows, at its time. */
static void
test_rearmed_from_its_own_report_it_goes_off_again(void **state)
{
    struct fixture *f = *state;
    uint64_t first;

    f->rearm_ms = 30;
    half_timer(&f->p.h, 10);
    (void)wait_timeout(f, 5000);
    assert_int_equal(f->timeouts, 1);
    first = f->fired_us;
    for (int i = 0; i < 500 && f->timeouts < 2; i++)
        run_for(f, 10);
    assert_int_equal(f->timeouts, 2);
    assert_true(loop_mono_us() - first >= 30 * 1000);
}

/* A stopped half arms nothing: no report reaches an owner that is closing it. */
static void
test_a_stopped_half_has_no_timer(void **state)
{
    struct fixture *f = *state;

    half_timer(&f->p.h, 10);
    half_stop(&f->p.h);
    half_timer(&f->p.h, 10);
    run_for(f, 60);
    assert_int_equal(f->timeouts, 0);
}

/* The timer does not get in the way of reading: bytes come in while it is pending. */
static void
test_reads_go_on_while_the_timer_waits(void **state)
{
    struct fixture *f = *state;

    half_timer(&f->p.h, 5000);
    assert_int_equal(write(f->p.peer, "hello", 5), 5);
    for (int i = 0; i < 100 && evbuffer_get_length(f->p.h.in) < 5; i++)
        assert_true(loop_turn(&f->p.lp, true) >= 0);
    assert_int_equal(evbuffer_get_length(f->p.h.in), 5);
    assert_true(f->reads >= 1);
    assert_int_equal(f->timeouts, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_the_timer_goes_off_once_and_not_early, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_rearmed_for_later_it_waits_for_the_new_time, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_rearmed_again_and_again_it_goes_off_after_the_last,
                                        setup, half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_rearmed_for_sooner_it_goes_off_at_the_sooner_time,
                                        setup, half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_a_disarmed_timer_says_nothing, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_disarmed_then_rearmed_it_goes_off_at_the_new_time,
                                        setup, half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_rearmed_from_its_own_report_it_goes_off_again, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_a_stopped_half_has_no_timer, setup,
                                        half_pair_teardown),
        cmocka_unit_test_setup_teardown(test_reads_go_on_while_the_timer_waits, setup,
                                        half_pair_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
