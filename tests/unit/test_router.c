/* Unit tests for router.c: Host normalisation, then hosts x paths x expected service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

#define NOHOST ((const char *)NULL)

struct host_case {
    const char *in;
    size_t len;       /* 0: strlen(in) */
    const char *want; /* NULL: invalid */
};

static void
test_normalize_host(void **state)
{
    static char long_name[ROUTER_HOST_MAX + 2], longest[ROUTER_HOST_MAX + 1],
        longest_port[ROUTER_HOST_MAX + 8];
    const struct host_case cases[] = {
        {"app1.com", 0, "app1.com"},
        {"App1.COM", 0, "app1.com"},
        {"app1.com:8080", 0, "app1.com"},
        {"app1.com:", 0, "app1.com"}, /* RFC 3986 3.2.3: port = *DIGIT */
        {"app1.com:0080", 0, "app1.com"},
        {"app1.com:65535", 0, "app1.com"},
        {"app1.com.", 0, "app1.com"},
        {"APP1.com.:80", 0, "app1.com"},
        {"app1.com..", 0, "app1.com."}, /* only one dot is dropped */
        {"127.0.0.1:8080", 0, "127.0.0.1"},
        {"[::1]", 0, "[::1]"},
        {"[::1]:80", 0, "[::1]"},
        {"[2001:DB8::A]:443", 0, "[2001:db8::a]"},
        {"[::ffff:127.0.0.1]", 0, "[::ffff:127.0.0.1]"},
        {"[v1.fe:x]", 0, "[v1.fe:x]"},
        {"a_b-c~d.example", 0, "a_b-c~d.example"},
        {"!$&'()*+,;=", 0, "!$&'()*+,;="},
        {"caf%C3%A9.com", 0, "caf%c3%a9.com"},
        {"x", 0, "x"},
        {"", 0, NULL},
        {".", 0, NULL},
        {":80", 0, NULL},
        {" app1.com", 0, NULL},
        {"app1.com ", 0, NULL},
        {"app 1.com", 0, NULL},
        {"app1.com\t", 0, NULL},
        {"app1\x01.com", 0, NULL},
        {"app1\x7f.com", 0, NULL},
        {"app1.com\0evil", 13, NULL},
        {"caf\xc3\xa9.com", 0, NULL},
        {"a/b", 0, NULL},
        {"a\\b", 0, NULL},
        {"user@app1.com", 0, NULL},
        {"a\"b", 0, NULL},
        {"a<b>", 0, NULL},
        {"a%4", 0, NULL},
        {"a%zz", 0, NULL},
        {"a%", 0, NULL},
        {"app1.com:80x", 0, NULL},
        {"app1.com:-1", 0, NULL},
        {"app1.com:65536", 0, NULL},
        {"app1.com:123456", 0, NULL},
        {"app1.com:80:80", 0, NULL},
        {"::1", 0, NULL},
        {"[::1", 0, NULL},
        {"[::1]x", 0, NULL},
        {"[::1]:8x", 0, NULL},
        {"[]", 0, NULL},
        {"[zz::1]", 0, NULL},
        {"[127.0.0.1]", 0, NULL},
        {"[fe80::1%25eth0]", 0, NULL}, /* RFC 6874 zones are not for Host headers */
        {"[v1]", 0, NULL},
        {"[v.x]", 0, NULL},
        {"[v1.]", 0, NULL},
        {long_name, 0, NULL},
        {longest, 0, longest},
        {longest_port, 0, longest},
    };
    char out[ROUTER_HOST_MAX + 1];

    (void)state;
    memset(long_name, 'a', ROUTER_HOST_MAX + 1);
    memset(longest, 'b', ROUTER_HOST_MAX);
    snprintf(longest_port, sizeof(longest_port), "%s.:8080", longest);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct host_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        size_t n = router_normalize_host(out, sizeof(out), c->in, len);
        if (c->want == NULL) {
            if (n != 0)
                fail_msg("\"%s\": want invalid, got \"%s\"", c->in, out);
            continue;
        }
        if (n != strlen(c->want) || strcmp(out, c->want) != 0)
            fail_msg("\"%s\": want \"%s\", got %zu", c->in, c->want, n);
    }
}

static void
test_normalize_host_cap(void **state)
{
    char out[9];

    (void)state;
    assert_int_equal(router_normalize_host(out, sizeof(out), "app1.com:80", 11), 8);
    assert_string_equal(out, "app1.com");
    assert_int_equal(router_normalize_host(out, 8, "app1.com", 8), 0);
    assert_int_equal(router_normalize_host(out, 0, "a", 1), 0);
}

struct lookup_case {
    const char *host; /* a raw Host header value; NOHOST for none */
    const char *path;
    int want;
};

/* Feeds each case through router_normalize_host() then router_lookup(), as the proxy does. */
static void
run_lookups(const struct router *r, const struct lookup_case *cases, size_t n)
{
    char host[ROUTER_HOST_MAX + 1];

    for (size_t i = 0; i < n; i++) {
        const struct lookup_case *c = &cases[i];
        size_t hlen = 0;
        if (c->host != NULL) {
            hlen = router_normalize_host(host, sizeof(host), c->host, strlen(c->host));
            if (hlen == 0)
                fail_msg("host \"%s\" did not normalise", c->host);
        }
        int got = router_lookup(r, c->host ? host : NULL, hlen, c->path, strlen(c->path));
        if (got != c->want)
            fail_msg("%s %s: want %d, got %d", c->host ? c->host : "(no host)", c->path, c->want,
                     got);
    }
}

/* Builds a router from routes (and default_target) and runs the cases through it. */
static void
check_lookups(const struct router_route *routes, size_t n, int default_target,
              const struct lookup_case *cases, size_t ncases)
{
    char err[256] = "";
    struct router *r = router_new(routes, n, default_target, err, sizeof(err));

    if (r == NULL)
        fail_msg("router_new: %s", err);
    run_lookups(r, cases, ncases);
    router_free(r);
}

static const struct router_route routes[] = {
    {"app1.com", NULL, 1, false, false},
    {"app2.com", "/", 2, false, false},
    {"app2.com", "/api", 20, false, false},
    {"app2.com", "/api/v2/", 21, false, false},
    {"app2.com", "/API/static", 22, false, false},
    {"*.example.com", "/", 30, false, false},
    {"*.b.example.com", "/", 31, false, false},
    {"*.b.example.com", "/admin", 32, false, false},
    {"exact.example.com", "/only", 33, false, false},
    {"*.c.example.com", "/only", 34, false, false},
    {"Upper.ORG.", "/", 40, false, false},
    {"[::1]", "/", 41, false, false},
    {"127.0.0.1", "/", 42, false, false},
    {"deep.org", "/a/b/c", 43, false, false},
    {"deep.org", "/a", 44, false, false},
};

static void
test_lookup(void **state)
{
    const struct lookup_case cases[] = {
        /* exact hosts, any case, port or trailing dot */
        {"app1.com", "/", 1},
        {"APP1.Com", "/anything/at/all", 1},
        {"app1.com:8080", "/", 1},
        {"app1.com.", "/x", 1},
        {"app1.com.:80", "/x", 1},
        {"upper.org", "/", 40},
        {"[::1]:8080", "/", 41},
        {"127.0.0.1", "/", 42},
        /* longest prefix on segment boundaries, case-sensitive */
        {"app2.com", "/", 2},
        {"app2.com", "/index.html", 2},
        {"app2.com", "/api", 20},
        {"app2.com", "/api/", 20},
        {"app2.com", "/api/x", 20},
        {"app2.com", "/apiary", 2},
        {"app2.com", "/API", 2},
        {"app2.com", "/api/v2", 21},
        {"app2.com", "/api/v2/", 21},
        {"app2.com", "/api/v2/users", 21},
        {"app2.com", "/api/v2x", 20},
        {"app2.com", "/api/v1", 20},
        {"app2.com", "/API/static/x", 22},
        {"app2.com", "/api/static/x", 20},
        {"deep.org", "/a/b/c/d", 43},
        {"deep.org", "/a/b/cd", 44},
        {"deep.org", "/a/b", 44},
        {"deep.org", "/ab", 99},
        /* query strings are ignored, and so is what looks like a path inside them */
        {"app2.com", "/api?x=1", 20},
        {"app2.com", "/apiary?/api", 2},
        {"app2.com", "/api/v2?", 21},
        {"app2.com", "?x", 2},
        {"app2.com", "", 2},
        {"app2.com", "*", 2},
        {"deep.org", "/a?b/c", 44},
        {"deep.org", "?/a", 99},
        /* wildcards: names below the domain, longest suffix first, never the domain itself */
        {"a.example.com", "/", 30},
        {"a.b.c.example.com", "/", 30},
        {"A.Example.COM:443", "/", 30},
        {"example.com", "/", 99},
        {"xexample.com", "/", 99},
        {"b.example.com", "/", 30},
        {"x.b.example.com", "/", 31},
        {"x.y.b.example.com", "/admin/users", 32},
        {"x.b.example.com", "/administrator", 31},
        {"exact.example.com", "/only/x", 33},
        /* a host with no matching path falls through: to wildcards, then the default */
        {"exact.example.com", "/", 30},
        {"exact.example.com", "/onlyx", 30},
        {"x.c.example.com", "/only", 34},
        {"x.c.example.com", "/other", 30},
        {"deep.org", "/", 99},
        /* unknown host or no host at all */
        {"unknown.net", "/", 99},
        {"app1.co", "/", 99},
        {"pp1.com", "/", 99},
        {"[::2]", "/", 99},
        {NOHOST, "/", 99},
        {NOHOST, "/api", 99},
    };
    (void)state;
    check_lookups(routes, sizeof(routes) / sizeof(routes[0]), 99, cases,
                  sizeof(cases) / sizeof(cases[0]));
}

static void
test_lookup_no_default(void **state)
{
    const struct lookup_case cases[] = {
        {"app1.com", "/", 1},      {"app2.com", "/api", 20}, {"exact.example.com", "/", 30},
        {"deep.org", "/", -1},     {"deep.org", "/a", 44},   {"example.com", "/", -1},
        {"unknown.net", "/x", -1}, {NOHOST, "/", -1},        {"x.c.example.com", "/", 30},
    };
    (void)state;
    check_lookups(routes, sizeof(routes) / sizeof(routes[0]), -1, cases,
                  sizeof(cases) / sizeof(cases[0]));
}

/* Routes without a host come after exact hosts and wildcards, before the default. */
static void
test_lookup_hostless(void **state)
{
    const struct router_route rs[] = {
        {"app1.com", "/app", 1, false, false},
        {"*.example.com", "/", 2, false, false},
        {NULL, "/static", 3, false, false},
        {"", "/static/big", 4, false, false},
    };
    const struct lookup_case cases[] = {
        {"app1.com", "/app/x", 1},
        {"app1.com", "/static/x", 3},
        {"app1.com", "/", 9},
        {"a.example.com", "/static", 2},
        {"other.org", "/static/big/x", 4},
        {"other.org", "/staticx", 9},
        {NOHOST, "/static?x", 3},
        {NOHOST, "/", 9},
    };
    (void)state;
    check_lookups(rs, sizeof(rs) / sizeof(rs[0]), 9, cases, sizeof(cases) / sizeof(cases[0]));
}

/* Kubernetes' rules: Exact paths (a trailing '/' significant, before a Prefix of the same length)
 * and wildcards one label deep, beside the config's any-depth ones. */
static void
test_lookup_exact_and_one_label(void **state)
{
    const struct router_route rs[] = {
        {"k.com", "/foo", 1, true, false},   {"k.com", "/foo", 2, false, false},
        {"k.com", "/foo/", 3, true, false},  {"k.com", "/", 4, true, false},
        {"k.com", "/bar", 5, false, false},  {"*.one.com", "/", 6, false, true},
        {"*.one.com", "/", 7, false, false}, {"*.deep.com", "/", 8, false, true},
    };
    const struct lookup_case cases[] = {
        {"k.com", "/foo", 1},     {"k.com", "/foo?q", 1}, {"k.com", "/foo/", 3},
        {"k.com", "/foo/x", 2},   {"k.com", "/foox", 9},  {"k.com", "/", 4},
        {"k.com", "/bar/", 5},    {"k.com", "/baz", 9},   {"a.one.com", "/x", 6},
        {"b.a.one.com", "/x", 7}, {"one.com", "/", 9},    {"a.deep.com", "/", 8},
        {"b.a.deep.com", "/", 9},
    };
    (void)state;
    check_lookups(rs, sizeof(rs) / sizeof(rs[0]), 9, cases, sizeof(cases) / sizeof(cases[0]));
    /* The same path twice is a duplicate only with the same exactness. */
    char err[256] = "";
    const struct router_route dup[] = {{"a.com", "/x", 0, true, false},
                                       {"a.com", "/x", 1, true, false}};
    assert_null(router_new(dup, 2, -1, err, sizeof(err)));
    assert_string_equal(err, "routes[1]: same host and path as routes[0]");
}

/* No routes at all: everything goes to the default service, or nowhere. */
static void
test_lookup_empty(void **state)
{
    char err[256] = "";
    struct router *r = router_new(NULL, 0, 5, err, sizeof(err));
    struct router *none = router_new(NULL, 0, -1, err, sizeof(err));

    (void)state;
    assert_non_null(r);
    assert_non_null(none);
    assert_int_equal(router_lookup(r, "app1.com", 8, "/", 1), 5);
    assert_int_equal(router_lookup(r, NULL, 0, NULL, 0), 5);
    assert_int_equal(router_lookup(none, "app1.com", 8, "/", 1), -1);
    router_free(r);
    router_free(none);
    router_free(NULL);
}

/* Many exact hosts, so the binary search is exercised across lengths and bytes. */
static void
test_lookup_many_hosts(void **state)
{
    enum { N = 200 };
    static char names[N][32];
    struct router_route rs[N];
    char err[256] = "";

    (void)state;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "host%d.%s", i * 7919 % 1000, i % 2 ? "com" : "io");
        rs[i] = (struct router_route){names[i], NULL, i, false, false};
    }
    struct router *r = router_new(rs, N, -1, err, sizeof(err));
    if (r == NULL)
        fail_msg("router_new: %s", err);
    for (int i = 0; i < N; i++)
        assert_int_equal(router_lookup(r, names[i], strlen(names[i]), "/", 1), i);
    assert_int_equal(router_lookup(r, "host1.co", 8, "/", 1), -1);
    assert_int_equal(router_lookup(r, "host9999.com", 12, "/", 1), -1);
    router_free(r);
}

struct bad_case {
    struct router_route route;
    const char *want; /* the start of the message */
};

static void
test_new_errors(void **state)
{
    const struct bad_case cases[] = {
        {{"app 1.com", "/", 0, false, false},
         "routes[1]: host \"app 1.com\" is not a valid host name"},
        {{"app1.com:8080", "/", 0, false, false},
         "routes[1]: host \"app1.com:8080\" must not have a port"},
        {{"*.example.com:80", "/", 0, false, false},
         "routes[1]: host \"*.example.com:80\" must not have a port"},
        {{"*", "/", 0, false, false},
         "routes[1]: host \"*\": a wildcard is only allowed as a first label"},
        {{"*.", "/", 0, false, false}, "routes[1]: host \"*.\": a wildcard is only allowed"},
        {{"a.*.com", "/", 0, false, false},
         "routes[1]: host \"a.*.com\": a wildcard is only allowed"},
        {{"*example.com", "/", 0, false, false}, "routes[1]: host \"*example.com\": a wildcard"},
        {{"*.*.com", "/", 0, false, false}, "routes[1]: host \"*.*.com\": a wildcard"},
        {{"*.[::1]", "/", 0, false, false}, "routes[1]: host \"*.[::1]\": a wildcard"},
        {{".", "/", 0, false, false}, "routes[1]: host \".\" is not a valid host name"},
        {{"app1.com", "api", 0, false, false}, "routes[1]: path \"api\" must start with '/'"},
        {{"app1.com", "", 0, false, false}, "routes[1]: path \"\" must start with '/'"},
        {{"app1.com", "/a?b", 0, false, false}, "routes[1]: path \"/a?b\" may not contain"},
        {{"app1.com", "/a#b", 0, false, false}, "routes[1]: path \"/a#b\" may not contain"},
        {{"app1.com", "/a b", 0, false, false}, "routes[1]: path \"/a b\" may not contain"},
        {{"app1.com", "/a\x01", 0, false, false}, "routes[1]: path"},
        {{"app1.com", "/", -1, false, false}, "routes[1]: target -1 is not a target index"},
        {{"ok.com", "/", 1, false, false}, "routes[1]: same host and path as routes[0]"},
        {{"OK.com.", NULL, 1, false, false}, "routes[1]: same host and path as routes[0]"},
        {{"ok.com", "/x", 1, false, false}, NULL},
        {{"*.ok.com", "/", 1, false, false}, NULL},
        {{NULL, "/", 1, false, false}, NULL},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct router_route rs[] = {{"ok.com", "/", 0, false, false}, cases[i].route};
        err[0] = '\0';
        struct router *r = router_new(rs, 2, -1, err, sizeof(err));
        if (cases[i].want == NULL) {
            if (r == NULL)
                fail_msg("case %zu: unexpected error: %s", i, err);
            router_free(r);
            continue;
        }
        if (r != NULL)
            fail_msg("case %zu: want error \"%s\", got a router", i, cases[i].want);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: want \"%s\", got \"%s\"", i, cases[i].want, err);
    }
    /* Trailing slashes are ignored, so these two are the same route. */
    const struct router_route dup[] = {{"a.com", "/api", 0, false, false},
                                       {"a.com", "/api//", 1, false, false}};
    assert_null(router_new(dup, 2, -1, err, sizeof(err)));
    assert_string_equal(err, "routes[1]: same host and path as routes[0]");
    assert_null(router_new(NULL, 0, -2, err, sizeof(err)));
    assert_string_equal(err, "default target -2 is not a target index");
}

/* The router copies what it is given: the caller's strings may change or go away. */
static void
test_new_copies(void **state)
{
    char host[] = "app1.com", path[] = "/api";
    struct router_route rs[] = {{host, path, 1, false, false}};
    char err[256];

    (void)state;
    struct router *r = router_new(rs, 1, -1, err, sizeof(err));
    assert_non_null(r);
    memset(host, 'x', sizeof(host) - 1);
    memset(path, 'y', sizeof(path) - 1);
    /* cppcheck-suppress unreadVariable ; unread is the point: the router keeps its own copy */
    rs[0].target = 7;
    assert_int_equal(router_lookup(r, "app1.com", 8, "/api/x", 6), 1);
    router_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_host),  cmocka_unit_test(test_normalize_host_cap),
        cmocka_unit_test(test_lookup),          cmocka_unit_test(test_lookup_no_default),
        cmocka_unit_test(test_lookup_hostless), cmocka_unit_test(test_lookup_exact_and_one_label),
        cmocka_unit_test(test_lookup_empty),    cmocka_unit_test(test_lookup_many_hosts),
        cmocka_unit_test(test_new_errors),      cmocka_unit_test(test_new_copies),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
