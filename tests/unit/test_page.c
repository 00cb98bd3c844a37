/* Unit tests for the apps' pure pieces: escaping and page rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

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

/* The worst case the server can hand the renderer must fit in PAGE_MAX_BODY: every field at
 * PAGE_MAX_FIELD bytes of the widest escape ('"' is "&quot;" in HTML, 0x01 is "\u0001" in JSON),
 * and an app_def wordier than any real app's (app3's tagline, the longest, is 76 bytes). */
static void
test_largest_fields_fit(void **state)
{
    static const struct app_def wordy = {
        "app-wordy-name",
        "Hello from an app with a rather long headline",
        "A tagline of 128 bytes, longer than any real app's, so that this test "
        "keeps a margin for the taglines that grow a bit over time.",
        "rgb(255, 255, 255)",
        "linear-gradient(135deg,#ffe3f1 0%,#f5a3cf 50%,#dcf7e3 75%,#92dba8)",
    };
    char big[PAGE_MAX_FIELD + 1];
    struct page_vars v = {big, big, big, "2026-11-26T00:00:00Z", UINT64_MAX};

    (void)state;
    big[PAGE_MAX_FIELD] = '\0';
    memset(big, '"', PAGE_MAX_FIELD);
    assert_true(page_html(out, PAGE_MAX_BODY, &def, &v) > 0);
    assert_true(page_html(out, PAGE_MAX_BODY, &wordy, &v) > 0);
    memset(big, '\x01', PAGE_MAX_FIELD);
    assert_true(page_json(out, PAGE_MAX_BODY, &def, &v) > 0);
    assert_true(page_json(out, PAGE_MAX_BODY, &wordy, &v) > 0);
    assert_int_equal(page_html(out, 100, &def, &v), 0);
}

/* The icon's link, whole, for def's accent "#123456": '#' is %23 in a data: URL (it would start a
 * fragment), and the rest of the SVG is percent-encoded too. */
#define ICON_LINK_123456                                                                           \
    "<link rel=\"icon\" type=\"image/svg+xml\" href=\"data:image/svg+xml,"                         \
    "%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20viewBox='0%200%2016%2016'%3E"                   \
    "%3Crect%20width='16'%20height='16'%20rx='4'%20fill='%23123456'/%3E%3C/svg%3E\">\n"
#define ICON_HREF_PREFIX "<link rel=\"icon\" type=\"image/svg+xml\" href=\""
#define ICON_SVG_HEAD                                                                              \
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"                                 \
    "<rect width='16' height='16' rx='4' fill='"
#define ICON_SVG_TAIL "'/></svg>"

static void
test_html_page_declares_its_icon_inline(void **state)
{
    struct page_vars v = {"pod-7", "10.42.0.7", "h", "t", 1};
    const char *html = render(page_html, &v);
    const char *link = strstr(html, ICON_LINK_123456);

    (void)state;
    /* One icon, in the head: a browser that finds none asks the server for /favicon.ico. */
    assert_non_null(link);
    assert_true(link < strstr(html, "</head>"));
    assert_ptr_equal(strstr(html, "rel=\"icon\""), strstr(link, "rel=\"icon\""));
    assert_null(strstr(link + strlen(ICON_LINK_123456), "rel=\"icon\""));
}

/* Copies the icon link's href value (up to the '"' that closes the attribute) into href. */
static void
icon_href(const char *html, char *href, size_t cap)
{
    const char *start = strstr(html, ICON_HREF_PREFIX);
    const char *end;

    assert_non_null(start);
    start += strlen(ICON_HREF_PREFIX);
    end = strchr(start, '"');
    assert_non_null(end);
    assert_true(strncmp(end, "\">\n", 3) == 0); /* the attribute ends where the tag does */
    assert_true((size_t)(end - start) < cap);
    memcpy(href, start, (size_t)(end - start));
    href[end - start] = '\0';
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * Checks that url is a valid data: URL to put in an HTML attribute (RFC 3986 characters only: no
 * '"', '<', '&', '#' or space; every '%' starts an escape), and percent-decodes it into dec, NUL-
 * terminated.
 */
static void
data_url_decode(const char *url, char *dec, size_t cap)
{
    static const char prefix[] = "data:image/svg+xml,";
    size_t n = 0;

    assert_true(strncmp(url, prefix, sizeof(prefix) - 1) == 0);
    for (const char *c = url + sizeof(prefix) - 1; *c != '\0'; c++) {
        assert_true(n + 1 < cap);
        if (*c == '%') {
            int hi = hexval(c[1]), lo = hi < 0 ? -1 : hexval(c[2]);

            assert_true(hi >= 0 && lo >= 0);
            dec[n++] = (char)(hi * 16 + lo);
            c += 2;
        } else {
            assert_non_null(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                   "-._~!$'()*+,;=:@/",
                                   *c));
            dec[n++] = *c;
        }
    }
    dec[n] = '\0';
}

struct accent_case {
    const char *accent;
    const char *url; /* the fill value as the data: URL has it */
    const char *svg; /* the same once percent-decoded: what the SVG parser reads */
};

/* Real colours, then accents that would break out of the SVG attribute, the URL or the HTML
 * attribute if they were not escaped. */
static const struct accent_case accents[] = {
    {"#1a7f37", "%231a7f37", "#1a7f37"},
    {"rgb(26, 127, 55)", "rgb(26,%20127,%2055)", "rgb(26, 127, 55)"},
    {"hsl(140 66% 30% / .5)", "hsl(140%2066%25%2030%25%20%2F%20.5)", "hsl(140 66% 30% / .5)"},
    {"red'/><script>", "red%26%2339%3B%2F%26%2362%3B%26%2360%3Bscript%26%2362%3B",
     "red&#39;/&#62;&#60;script&#62;"},
    {"\"><b>&amp;#x", "%26%2334%3B%26%2362%3B%26%2360%3Bb%26%2362%3B%26%2338%3Bamp%3B%23x",
     "&#34;&#62;&#60;b&#62;&#38;amp;#x"},
    {"caf\xe9\x01\x7f", "caf%26%23233%3B%26%2365533%3B%26%2365533%3B", "caf&#233;&#65533;&#65533;"},
    {"%2522", "%252522", "%2522"},
    {"", "", ""},
};

static void
test_icon_accent_is_escaped_for_svg_url_and_html(void **state)
{
    char href[1024], svg[1024], want[1024];

    (void)state;
    for (size_t i = 0; i < sizeof(accents) / sizeof(accents[0]); i++) {
        struct app_def d = def;
        struct page_vars v = {"p", "i", "h", "t", 1};
        size_t n;

        d.accent = accents[i].accent;
        n = page_html(out, PAGE_MAX_BODY, &d, &v);
        assert_true(n > 0);
        out[n] = '\0';
        icon_href(out, href, sizeof(href));
        snprintf(want, sizeof(want), "fill='%s'/%%3E", accents[i].url);
        assert_non_null(strstr(href, want));
        data_url_decode(href, svg, sizeof(svg));
        snprintf(want, sizeof(want), "%s%s%s", ICON_SVG_HEAD, accents[i].svg, ICON_SVG_TAIL);
        assert_string_equal(svg, want);
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
        cmocka_unit_test(test_html_page_declares_its_icon_inline),
        cmocka_unit_test(test_icon_accent_is_escaped_for_svg_url_and_html),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
