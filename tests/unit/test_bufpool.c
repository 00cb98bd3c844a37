/*
 * Unit tests for bufpool.c: the per-thread cache of libevent's chain blocks hands a freed block
 * out again, keeps only chain sizes and only BUFPOOL_KEEP of each, moves contents on realloc,
 * aligns as malloc does, and lets nothing outlive its thread (LeakSanitizer, in the ASan run, says
 * so if a thread's blocks were left behind).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdalign.h>
#include <string.h>

#include <event2/buffer.h>

#include "bufpool.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

static int
flush(void **state)
{
    (void)state;
    bufpool_flush();
    return 0;
}

static void
test_a_freed_chain_block_is_handed_out_again(void **state)
{
    char *p = bufpool_malloc(32768), *q;

    (void)state;
    assert_non_null(p);
    memset(p, 'x', 32768);
    bufpool_free(p);
    assert_int_equal(bufpool_cached(32768), 1);
    q = bufpool_malloc(32768);
    assert_ptr_equal(q, p); /* the last freed, still warm */
    assert_int_equal(bufpool_cached(32768), 0);
    q[32767] = 'y'; /* all of it is the caller's again */
    bufpool_free(q);
}

static void
test_only_chain_sizes_are_kept(void **state)
{
    static const size_t other[] = {1, 100, 1000, 1023, 1025, 3000, 49152, 131072};
    static const size_t kept[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536};

    (void)state;
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        void *p = bufpool_malloc(other[i]);
        assert_non_null(p);
        memset(p, 0, other[i]);
        bufpool_free(p);
        assert_int_equal(bufpool_cached(other[i]), 0);
    }
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        bufpool_free(bufpool_malloc(kept[i]));
        assert_int_equal(bufpool_cached(kept[i]), 1);
    }
}

static void
test_a_thread_keeps_a_bounded_number(void **state)
{
    void *p[BUFPOOL_KEEP + 5];

    (void)state;
    for (size_t i = 0; i < BUFPOOL_KEEP + 5; i++)
        assert_non_null(p[i] = bufpool_malloc(4096));
    for (size_t i = 0; i < BUFPOOL_KEEP + 5; i++)
        bufpool_free(p[i]);
    assert_int_equal(bufpool_cached(4096), BUFPOOL_KEEP);
    bufpool_flush();
    assert_int_equal(bufpool_cached(4096), 0);
}

static void
test_blocks_are_aligned_as_malloc_aligns(void **state)
{
    static const size_t sizes[] = {1, 24, 1024, 5000, 32768};

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = bufpool_malloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
        bufpool_free(p);
        p = bufpool_malloc(sizes[i]); /* from the cache, when kept */
        assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
        bufpool_free(p);
    }
}

static void
test_realloc_moves_the_contents(void **state)
{
    char *p = bufpool_realloc(NULL, 1024);

    (void)state;
    assert_non_null(p);
    for (int i = 0; i < 1024; i++)
        p[i] = (char)i;
    p = bufpool_realloc(p, 65536);
    assert_non_null(p);
    for (int i = 0; i < 1024; i++)
        assert_int_equal(p[i], (char)i);
    memset(p + 1024, 'z', 65536 - 1024);
    p = bufpool_realloc(p, 2048);
    assert_non_null(p);
    for (int i = 0; i < 1024; i++)
        assert_int_equal(p[i], (char)i);
    assert_int_equal(p[2047], 'z');
    bufpool_free(p);
    assert_int_equal(bufpool_cached(2048), 1); /* the size it had last */
    bufpool_free(NULL);
}

#ifdef TEST_ASAN
/* A kept block is out of bounds for everyone until it is handed out again. */
static void
test_a_kept_block_is_poisoned(void **state)
{
    char *p = bufpool_malloc(8192);

    (void)state;
    assert_int_equal(__asan_address_is_poisoned(p + 100), 0);
    bufpool_free(p);
    assert_int_equal(__asan_address_is_poisoned(p + 100), 1);
    assert_ptr_equal(bufpool_malloc(8192), p);
    assert_int_equal(__asan_address_is_poisoned(p + 100), 0);
    bufpool_free(p);
}
#endif

static void *
thread_main(void *arg)
{
    void *p[4];

    for (int i = 0; i < 4; i++)
        p[i] = bufpool_malloc(16384);
    for (int i = 0; i < 4; i++)
        bufpool_free(p[i]);
    *(unsigned *)arg = bufpool_cached(16384);
    return NULL; /* its cache is flushed on the way out */
}

static void
test_each_thread_has_its_own_cache_which_ends_with_it(void **state)
{
    pthread_t t;
    unsigned seen = 0;

    (void)state;
    assert_int_equal(pthread_create(&t, NULL, thread_main, &seen), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(seen, 4);
    assert_int_equal(bufpool_cached(16384), 0); /* not this thread's */
}

/* Installed, it serves libevent: an emptied buffer's chain waits in the cache for the next read. */
static void
test_libevent_buffers_go_through_it(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct evbuffer_iovec v;

    (void)state;
    assert_non_null(b);
    assert_int_equal(evbuffer_reserve_space(b, 16384, &v, 1), 1);
    memset(v.iov_base, 'a', 100);
    v.iov_len = 100;
    assert_int_equal(evbuffer_commit_space(b, &v, 1), 0);
    assert_int_equal(evbuffer_drain(b, 100), 0);
    assert_int_equal(bufpool_cached(32768), 1); /* 16 KiB asked, 32 KiB with libevent's header */
    assert_int_equal(evbuffer_reserve_space(b, 16384, &v, 1), 1);
    assert_int_equal(bufpool_cached(32768), 0);
    evbuffer_free(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_a_freed_chain_block_is_handed_out_again, flush),
        cmocka_unit_test_teardown(test_only_chain_sizes_are_kept, flush),
        cmocka_unit_test_teardown(test_a_thread_keeps_a_bounded_number, flush),
        cmocka_unit_test_teardown(test_blocks_are_aligned_as_malloc_aligns, flush),
        cmocka_unit_test_teardown(test_realloc_moves_the_contents, flush),
#ifdef TEST_ASAN
        cmocka_unit_test_teardown(test_a_kept_block_is_poisoned, flush),
#endif
        cmocka_unit_test_teardown(test_each_thread_has_its_own_cache_which_ends_with_it, flush),
        cmocka_unit_test_teardown(test_libevent_buffers_go_through_it, flush),
    };

    /* Before anything of libevent's, as portier's main() does. */
    if (bufpool_install() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
