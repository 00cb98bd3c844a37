/* Unit tests for the shared address parser: LISTEN, listen[].address and servers entries. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "addr.h"

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

static void
test_addr_host_reports_a_buffer_too_small(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[160], host[8];

    (void)state;
    assert_int_equal(addr_parse("[2001:db8::1]:80", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(addr_host((struct sockaddr *)&ss, host, sizeof(host)), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_table),
        cmocka_unit_test(test_addr_host_reports_a_buffer_too_small),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
