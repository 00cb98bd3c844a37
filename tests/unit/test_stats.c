/* Unit tests for stats.c: histogram buckets, status codes, service slots that outlive reloads,
 * sums over workers (also while worker threads count), the status window and its quantiles. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "stats.h"

static int
setup(void **state)
{
    (void)state;
    return stats_init(3);
}

static int
teardown(void **state)
{
    (void)state;
    stats_fini();
    return 0;
}

static void
test_buckets(void **state)
{
    struct stats_hist h = {0};

    (void)state;
    stats_observe(&h, 0);        /* <= 0.1 ms */
    stats_observe(&h, 100);      /* a bound belongs to its own bucket (le) */
    stats_observe(&h, 101);      /* <= 0.25 ms */
    stats_observe(&h, 10000000); /* <= 10 s */
    stats_observe(&h, 10000001); /* +Inf */
    assert_int_equal(stats_bounds_us[0], 100);
    assert_int_equal(stats_bounds_us[STATS_BOUNDS - 1], 10000000);
    assert_int_equal(stats_get(&h.bucket[0]), 2);
    assert_int_equal(stats_get(&h.bucket[1]), 1);
    assert_int_equal(stats_get(&h.bucket[STATS_BOUNDS - 1]), 1);
    assert_int_equal(stats_get(&h.bucket[STATS_BOUNDS]), 1);
    assert_int_equal(stats_get(&h.count), 5);
    assert_int_equal(stats_get(&h.sum_us), 0 + 100 + 101 + 10000000 + 10000001);
}

static void
test_slots_by_name(void **state)
{
    (void)state;
    assert_string_equal(stats_slot_name(STATS_NO_SERVICE), "");
    int a = stats_slot("app1"), b = stats_slot("app2");
    assert_true(a > 0 && b > 0 && a != b);
    /* A reload naming the same services gets the same slots: counts carry on. */
    assert_int_equal(stats_slot("app2"), b);
    assert_int_equal(stats_slot("app1"), a);
    assert_string_equal(stats_slot_name(b), "app2");
    assert_int_equal(stats_nslots(), 3);
    for (size_t w = 0; w < stats_nworkers(); w++)
        assert_non_null(stats_svc(stats_worker(w), b));
    assert_null(stats_worker(stats_nworkers()));
}

static void
test_requests_summed_over_workers(void **state)
{
    struct stats_svc sum;
    int s = stats_slot("app2");

    (void)state;
    stats_request(stats_worker(0), s, 200, 100);
    stats_request(stats_worker(1), s, 200, 2000);
    stats_request(stats_worker(2), s, 502, 90);
    stats_request(stats_worker(2), s, 0, 80);   /* not a status code: "other" */
    stats_request(stats_worker(2), s, 999, 70); /* the same */
    stats_sum_svc(s, &sum);
    assert_int_equal(stats_get(&sum.codes[200 - STATS_CODE_MIN]), 2);
    assert_int_equal(stats_get(&sum.codes[502 - STATS_CODE_MIN]), 1);
    assert_int_equal(stats_get(&sum.codes[STATS_CODES - 1]), 2);
    assert_int_equal(stats_get(&sum.duration.count), 5);
    assert_int_equal(stats_get(&sum.duration.bucket[0]), 4); /* <= 0.1 ms */
    assert_int_equal(stats_get(&sum.duration.bucket[4]), 1); /* <= 2.5 ms */
    /* Another service's counts are its own. */
    stats_sum_svc(stats_slot("app1"), &sum);
    assert_int_equal(stats_get(&sum.duration.count), 0);
}

static void
test_connection_gauges(void **state)
{
    struct stats sum;

    (void)state;
    stats_conn_move(stats_worker(0), -1, STATS_CONN_HANDSHAKE);
    stats_conn_move(stats_worker(0), STATS_CONN_HANDSHAKE, STATS_CONN_ACTIVE);
    stats_conn_move(stats_worker(1), -1, STATS_CONN_ACTIVE);
    stats_conn_move(stats_worker(1), STATS_CONN_ACTIVE, STATS_CONN_IDLE);
    stats_conn_move(stats_worker(2), -1, STATS_CONN_IDLE);
    stats_conn_move(stats_worker(2), STATS_CONN_IDLE, -1);
    stats_sum(&sum);
    assert_int_equal(stats_get(&sum.conns[STATS_CONN_HANDSHAKE]), 0);
    assert_int_equal(stats_get(&sum.conns[STATS_CONN_ACTIVE]), 1);
    assert_int_equal(stats_get(&sum.conns[STATS_CONN_IDLE]), 1);
}

#define THREAD_REQUESTS 200000

static void *
count_requests(void *arg)
{
    struct stats *st = arg;
    int s = stats_slot_name(1)[0] != '\0' ? 1 : 0;

    for (int i = 0; i < THREAD_REQUESTS; i++)
        stats_request(st, s, 200, (uint64_t)i % 3000);
    return NULL;
}

/* Each worker writes only its own counters; sums taken meanwhile never exceed what was counted,
 * and the last one is exact. */
static void
test_sums_while_workers_count(void **state)
{
    pthread_t t[3];
    struct stats_svc *sum = malloc(sizeof(*sum));
    int s = stats_slot("busy");
    uint64_t last = 0;

    (void)state;
    assert_int_equal(s, 1);
    assert_non_null(sum);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, count_requests, stats_worker((size_t)i)), 0);
    for (int k = 0; k < 50; k++) {
        stats_sum_svc(s, sum);
        uint64_t n = stats_get(&sum->codes[200 - STATS_CODE_MIN]);
        assert_true(n >= last && n <= 3 * THREAD_REQUESTS);
        last = n;
    }
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    stats_sum_svc(s, sum);
    assert_int_equal(stats_get(&sum->codes[200 - STATS_CODE_MIN]), 3 * THREAD_REQUESTS);
    assert_int_equal(stats_get(&sum->duration.count), 3 * THREAD_REQUESTS);
    free(sum);
}

static void
test_window_and_quantiles(void **state)
{
    struct stats_window w;
    int s = stats_slot("app2");

    (void)state;
    stats_window(s, 100, &w);
    assert_true(w.seconds == 0 && w.requests == 0); /* no sample yet */
    stats_sample(100);
    for (int i = 0; i < 90; i++)
        stats_request(stats_worker(0), s, 200, 700); /* the 0.5-1 ms bucket */
    for (int i = 0; i < 10; i++)
        stats_request(stats_worker(1), s, 503, 20000); /* the 10-25 ms bucket */
    stats_window(s, 130, &w);
    assert_true(w.seconds == 30);
    assert_int_equal(w.requests, 100);
    assert_int_equal(w.errors, 10);
    double p50 = stats_quantile(&w, 0.5), p99 = stats_quantile(&w, 0.99);
    assert_true(p50 > 0.0005 && p50 <= 0.001);
    assert_true(p99 > 0.010 && p99 <= 0.025);
    /* After a minute of samples the oldest ones leave the window. */
    for (int k = 1; k <= STATS_WINDOW_SAMPLES; k++)
        stats_sample(100 + 5 * k);
    stats_window(s, 100 + 5 * STATS_WINDOW_SAMPLES, &w);
    assert_int_equal(w.requests, 0);
    assert_true(stats_quantile(&w, 0.5) < 0);
    assert_true(w.seconds == 5 * (STATS_WINDOW_SAMPLES - 1));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test_setup_teardown(test_slots_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requests_summed_over_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_gauges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sums_while_workers_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_and_quantiles, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
