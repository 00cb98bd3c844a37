/* Unit tests for the shared bounded writer: what fits, what is counted, escaping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "wbuf.h"

static void
test_appends_that_fit_are_stored_and_counted(void **state)
{
    char buf[32];
    struct wbuf w;

    (void)state;
    wbuf_init(&w, buf, 0, sizeof(buf));
    wbuf_str(&w, "len=");
    wbuf_u64(&w, 0);
    wbuf_raw(&w, ",", 1);
    wbuf_u64(&w, UINT64_MAX);
    assert_false(wbuf_full(&w));
    assert_int_equal(w.len, 26);
    assert_memory_equal(buf, "len=0,18446744073709551615", 26);
}

static void
test_an_overflow_keeps_the_prefix_and_counts_the_rest(void **state)
{
    char buf[8];
    struct wbuf w;

    (void)state;
    memset(buf, '.', sizeof(buf));
    wbuf_init(&w, buf, 0, 5);
    wbuf_str(&w, "abc");
    assert_false(wbuf_full(&w));
    wbuf_str(&w, "defg");
    assert_true(wbuf_full(&w));
    wbuf_str(&w, "hi");
    /* The stored bytes are the output's true prefix; nothing past cap is touched. */
    assert_int_equal(w.len, 9);
    assert_memory_equal(buf, "abcde...", 8);
}

static void
test_a_null_buffer_measures_the_output(void **state)
{
    struct wbuf w;

    (void)state;
    wbuf_init(&w, NULL, 0, 0);
    wbuf_str(&w, "hello, ");
    wbuf_u64(&w, 1234);
    wbuf_json(&w, "\"<\"", 3);
    assert_true(wbuf_full(&w));
    assert_int_equal(w.len, 7 + 4 + 2 + 6 + 2);
}

static void
test_starting_at_an_offset_appends_behind_it(void **state)
{
    char buf[8] = "ab";
    struct wbuf w;

    (void)state;
    wbuf_init(&w, buf, 2, sizeof(buf));
    wbuf_str(&w, "cd");
    assert_int_equal(w.len, 4);
    assert_memory_equal(buf, "abcd", 4);

    wbuf_init(&w, buf, 9, sizeof(buf)); /* past the end: full from the start, nothing written */
    wbuf_str(&w, "x");
    assert_true(wbuf_full(&w));
    assert_memory_equal(buf, "abcd", 4);
}

static void
test_json_escapes_quotes_controls_markup_and_latin1(void **state)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"a\"b\\c", 5, "a\\\"b\\\\c"},
        {"\n\x01\x7f", 3, "\\u000a\\u0001\\u007f"},
        {"</script>&", 10, "\\u003c/script\\u003e\\u0026"},
        {"\xe9\xff", 2, "\xc3\xa9\xc3\xbf"},
        {"a\0b", 3, "a\\u0000b"},
    };
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wbuf w;

        wbuf_init(&w, buf, 0, sizeof(buf));
        wbuf_json(&w, cases[i].in, cases[i].n);
        assert_false(wbuf_full(&w));
        assert_int_equal(w.len, strlen(cases[i].out));
        assert_memory_equal(buf, cases[i].out, w.len);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_that_fit_are_stored_and_counted),
        cmocka_unit_test(test_an_overflow_keeps_the_prefix_and_counts_the_rest),
        cmocka_unit_test(test_a_null_buffer_measures_the_output),
        cmocka_unit_test(test_starting_at_an_offset_appends_behind_it),
        cmocka_unit_test(test_json_escapes_quotes_controls_markup_and_latin1),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
