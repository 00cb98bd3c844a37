/* Unit tests for the apps' pure pieces: escaping, page rendering and LISTEN address parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "addr.h"
#include "page.h"

static const struct app_def def = {"app9", "Hello from app9", "tag <line>", "#123456", "#fff"};

/* Renders into a NUL-terminated buffer so the tests can use string functions. */
static char out[PAGE_MAX_BODY + 1];

static const char *
render(size_t (*fn)(char *, size_t, const struct app_def *, const struct page_vars *),
       const struct page_vars *v)
{
    size_t n = fn(out, PAGE_MAX_BODY, &def, v);

    assert_true(n > 0);
    out[n] = '\0';
    return out;
}

struct escape_case {
    const char *in;
    const char *html;
    const char *json;
};

static const struct escape_case escapes[] = {
    {"plain.example", "plain.example", "plain.example"},
    {"<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;",
     "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e"},
    {"a\"b'c&d", "a&quot;b&#39;c&amp;d", "a\\\"b'c\\u0026d"},
    {"back\\slash", "back\\slash", "back\\\\slash"},
    {"tab\there\x01", "tab\xef\xbf\xbdhere\xef\xbf\xbd", "tab\\u0009here\\u0001"},
    {"caf\xe9", "caf\xc3\xa9", "caf\xc3\xa9"},
    {"\x7f", "\xef\xbf\xbd", "\\u007f"},
    {"", "", ""},
};

static void
test_escape_table(void **state)
{
    char buf[256];

    (void)state;
    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        size_t n = page_escape_html(buf, sizeof(buf), escapes[i].in);
        assert_int_equal(n, strlen(escapes[i].html));
        assert_memory_equal(buf, escapes[i].html, n);
        n = page_escape_json(buf, sizeof(buf), escapes[i].in);
        assert_int_equal(n, strlen(escapes[i].json));
        assert_memory_equal(buf, escapes[i].json, n);
    }
}

static void
test_escape_does_not_overflow(void **state)
{
    char buf[8];

    (void)state;
    assert_int_equal(page_escape_html(buf, sizeof(buf), "<<<"), 0);
    assert_int_equal(page_escape_json(buf, 5, "\"\"\""), 0);
    assert_int_equal(page_escape_html(buf, 3, "abc"), 3);
}

static void
test_html_page_has_everything_escaped(void **state)
{
    struct page_vars v = {"pod-7", "10.42.0.7", "<script>x</script>", "2026-11-26T00:00:00Z", 42};
    const char *html = render(page_html, &v);

    (void)state;
    assert_true(strncmp(html, "<!DOCTYPE html>\n<html lang=\"en\">", 31) == 0);
    assert_non_null(strstr(html, "<meta name=\"viewport\" content=\"width=device-width"));
    assert_non_null(strstr(html, "<title>app9 \xe2\x80\x94 pod-7</title>"));
    assert_non_null(strstr(html, "<h1>Hello from app9</h1>"));
    assert_non_null(strstr(html, "<p>tag &lt;line&gt;</p>"));
    assert_non_null(strstr(html, "--accent:#123456"));
    assert_non_null(strstr(html, "<td>pod-7</td>"));
    assert_non_null(strstr(html, "<td>10.42.0.7</td>"));
    assert_non_null(strstr(html, "<td>42</td>"));
    assert_non_null(strstr(html, "<td>&lt;script&gt;x&lt;/script&gt;</td>"));
    assert_null(strstr(html, "<script>"));
    assert_non_null(strstr(html, "<td>2026-11-26T00:00:00Z</td>"));
    assert_non_null(strstr(html, "</html>\n"));
}

static void
test_json_is_exact(void **state)
{
    struct page_vars v = {"p\"1", "::1", "h\\<", "t", 18446744073709551615ULL};
    const char *json = render(page_json, &v);

    (void)state;
    assert_string_equal(json, "{\"app\":\"app9\",\"pod\":\"p\\\"1\",\"ip\":\"::1\","
                              "\"requests\":18446744073709551615,\"host\":\"h\\\\\\u003c\","
                              "\"time\":\"t\"}\n");
}

/* The worst case the server can hand the renderer must fit in PAGE_MAX_BODY. */
static void
test_largest_fields_fit(void **state)
{
    char big[PAGE_MAX_FIELD + 1];
    struct page_vars v = {big, big, big, "2026-11-26T00:00:00Z", UINT64_MAX};

    (void)state;
    memset(big, '\x01', PAGE_MAX_FIELD); /* the widest escape in both formats */
    big[PAGE_MAX_FIELD] = '\0';
    assert_true(page_html(out, PAGE_MAX_BODY, &def, &v) > 0);
    assert_true(page_json(out, PAGE_MAX_BODY, &def, &v) > 0);
    assert_int_equal(page_html(out, 100, &def, &v), 0);
}

struct addr_case {
    const char *spec;
    int ok;
    int family;
    const char *host;
    int port;
};

static const struct addr_case addrs[] = {
    {"127.0.0.21:8080", 1, AF_INET, "127.0.0.21", 8080},
    {"0.0.0.0:80", 1, AF_INET, "0.0.0.0", 80},
    {":8080", 1, AF_INET, "0.0.0.0", 8080},
    {"[::1]:443", 1, AF_INET6, "::1", 443},
    {"[::]:65535", 1, AF_INET6, "::", 65535},
    {"127.0.0.1:0", 0, 0, NULL, 0},
    {"127.0.0.1:65536", 0, 0, NULL, 0},
    {"127.0.0.1:", 0, 0, NULL, 0},
    {"127.0.0.1:+80", 0, 0, NULL, 0},
    {"127.0.0.1:0x50", 0, 0, NULL, 0},
    {"127.0.0.1", 0, 0, NULL, 0},
    {"nonsense", 0, 0, NULL, 0},
    {"localhost:80", 0, 0, NULL, 0},
    {"1.2.3.4.5:80", 0, 0, NULL, 0},
    {"::1:80", 0, 0, NULL, 0},
    {"[::1]80", 0, 0, NULL, 0},
    {"[127.0.0.1]:80", 0, 0, NULL, 0},
    {"", 0, 0, NULL, 0},
};

static void
test_addr_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        const struct addr_case *t = &addrs[i];
        struct sockaddr_storage ss;
        socklen_t len;
        char err[160] = "", host[64];
        int rc = addr_parse(t->spec, &ss, &len, err, sizeof(err));

        if (!t->ok) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err, t->spec));
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(ss.ss_family, t->family);
        assert_int_equal(addr_host((struct sockaddr *)&ss, host, sizeof(host)), 0);
        assert_string_equal(host, t->host);
        int port = ntohs(t->family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
        assert_int_equal(port, t->port);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_table),
        cmocka_unit_test(test_escape_does_not_overflow),
        cmocka_unit_test(test_html_page_has_everything_escaped),
        cmocka_unit_test(test_json_is_exact),
        cmocka_unit_test(test_largest_fields_fit),
        cmocka_unit_test(test_addr_table),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
