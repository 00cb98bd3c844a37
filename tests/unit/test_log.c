/* Unit tests for access-log formatting: combined and JSON, quoting, and absent fields. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "log.h"

#define SPAN(s) s, sizeof(s) - 1

static char line[2048];

static const char *
format(enum log_format fmt, const struct log_access_rec *r)
{
    size_t n = log_access_format(line, sizeof(line) - 1, fmt, r);

    assert_true(n > 0);
    line[n] = '\0';
    return line;
}

static const struct log_access_rec full = {
    .client = "127.0.0.1",
    .when = 1795652412, /* 2026-11-26T00:20:12Z */
    .method = SPAN("GET"),
    .target = SPAN("/a?b=\"c\""),
    .http_minor = 1,
    .status = 200,
    .bytes = 1517,
    .referer = SPAN("http://x/"),
    .user_agent = SPAN("curl/7.88\x01"),
    .host = SPAN("app2.com"),
    .upstream = "127.0.0.22:8080",
    .upstream_status = 200,
    .duration_us = 1234,
    .request_id = "0123456789abcdef0123456789abcdef",
};

static void
test_combined(void **state)
{
    (void)state;
    assert_string_equal(format(LOG_FMT_COMBINED, &full),
                        "127.0.0.1 - - [26/Nov/2026:00:20:12 +0000] \"GET /a?b=\\x22c\\x22 "
                        "HTTP/1.1\" 200 1517 \"http://x/\" \"curl/7.88\\x01\" "
                        "upstream=127.0.0.22:8080 upstream_status=200 duration_ms=1.234 "
                        "request_id=0123456789abcdef0123456789abcdef\n");
}

static void
test_combined_without_upstream(void **state)
{
    struct log_access_rec r = {.client = "::1",
                               .when = 1795652412,
                               .method = SPAN("POST"),
                               .target = SPAN("/"),
                               .http_minor = 0,
                               .status = 502,
                               .duration_us = 7,
                               .request_id = "r1"};

    (void)state;
    assert_string_equal(format(LOG_FMT_COMBINED, &r),
                        "::1 - - [26/Nov/2026:00:20:12 +0000] \"POST / HTTP/1.0\" 502 0 \"-\" "
                        "\"-\" upstream=- upstream_status=- duration_ms=0.007 request_id=r1\n");
}

static void
test_json(void **state)
{
    (void)state;
    assert_string_equal(
        format(LOG_FMT_JSON, &full),
        "{\"time\":\"2026-11-26T00:20:12Z\",\"client\":\"127.0.0.1\",\"method\":\"GET\","
        "\"target\":\"/a?b=\\\"c\\\"\",\"protocol\":\"HTTP/1.1\",\"host\":\"app2.com\","
        "\"status\":200,\"bytes\":1517,\"referer\":\"http://x/\",\"user_agent\":\"curl/"
        "7.88\\u0001\","
        "\"upstream\":\"127.0.0.22:8080\",\"upstream_status\":200,\"duration_ms\":1.234,"
        "\"request_id\":\"0123456789abcdef0123456789abcdef\"}\n");
}

static void
test_json_absent_fields_are_null(void **state)
{
    struct log_access_rec r = {.client = "1.2.3.4", .when = 1795652412, .status = 400};

    (void)state;
    assert_string_equal(format(LOG_FMT_JSON, &r),
                        "{\"time\":\"2026-11-26T00:20:12Z\",\"client\":\"1.2.3.4\",\"method\":null,"
                        "\"target\":null,\"protocol\":\"HTTP/1.0\",\"host\":null,\"status\":400,"
                        "\"bytes\":0,\"referer\":null,\"user_agent\":null,\"upstream\":null,"
                        "\"upstream_status\":null,\"duration_ms\":0.000,\"request_id\":null}\n");
}

static void
test_too_small_buffer(void **state)
{
    (void)state;
    assert_int_equal(log_access_format(line, 40, LOG_FMT_COMBINED, &full), 0);
    assert_int_equal(log_access_format(line, 40, LOG_FMT_JSON, &full), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combined),
        cmocka_unit_test(test_combined_without_upstream),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_absent_fields_are_null),
        cmocka_unit_test(test_too_small_buffer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
