/* Unit tests for config.c and util.c: YAML snippets x expected errors, snippets x parsed values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static char err[CONFIG_ERR_SIZE];

/* Writes yaml to a fresh temporary file and loads it from there; path receives the file's name. */
static struct config *
load_yaml(const char *yaml, char *path, size_t cap)
{
    struct config *cfg;
    size_t len = strlen(yaml);
    int fd;

    snprintf(path, cap, "/tmp/test_config.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, len), (ssize_t)len);
    close(fd);
    cfg = config_load(path, err, sizeof(err));
    unlink(path);
    return cfg;
}

/* Prefixes every line of lines with name and ':', as config_load() writes FILE. */
static void
prefix_lines(char *out, size_t cap, const char *name, const char *lines)
{
    size_t used = 0;

    out[0] = '\0';
    while (*lines != '\0') {
        const char *nl = strchr(lines, '\n');
        size_t n = nl != NULL ? (size_t)(nl - lines) + 1 : strlen(lines);
        used += (size_t)snprintf(out + used, cap - used, "%s:%.*s", name, (int)n, lines);
        assert_true(used < cap);
        lines += n;
    }
}

/* Errors. Expected text leaves out "FILE:", which the test adds. */

struct error_case {
    const char *yaml;
    const char *errors;
};

static const struct error_case error_cases[] = {
    /* Keys and types. */
    {"listn:\n  - address: \":80\"\n", "1:1: unknown key \"listn\" in config\n"},
    {"listen:\n  - adress: \":80\"\n",
     "2:5: unknown key \"adress\" in listen\n2:5: listen: a listener needs an address\n"},
    {"workers: 2\nworkers: 3\n", "2:1: duplicate key \"workers\" in config\n"},
    {"timeouts:\n  client_idle: 5s\n  client_idle: 6s\n",
     "3:3: duplicate key \"client_idle\" in timeouts\n"},
    {"listen: \":80\"\n", "1:9: listen: expected a list, not a single value\n"},
    {"listen:\n  address: \":80\"\n", "2:3: listen: expected a list, not a mapping\n"},
    {"listen:\n  - \":80\"\n", "2:5: listen: expected a mapping, not a single value\n"},
    {"timeouts: [1s]\n", "1:11: timeouts: expected a mapping, not a list\n"},
    {"workers: {n: 1}\n", "1:10: workers: expected a single value, not a mapping\n"},
    {"admin: [\"127.0.0.1:9180\"]\n", "1:8: admin: expected a single value, not a list\n"},
    {"services: [app1]\n", "1:11: services: expected a mapping, not a list\n"},
    {"? [a, b]\n: c\n", "1:3: a key: expected a single value, not a list\n"},
    {"- listen\n",
     "1:1: the config must be a mapping of keys (listen, routes, services, ...), not a list\n"},
    {"just text\n",
     "1:1: the config must be a mapping of keys (listen, routes, services, ...), not a single "
     "value\n"},
    {"access_log: \"a\\0b\"\n", "1:13: access_log: contains a NUL character\n"},
    {"access_log: \"a\\nb\"\n"
     "listn: 1\n",
     "2:1: unknown key \"listn\" in config\n"},
    {"limits: {max_connections: 1, max_conections: 2}\n",
     "1:30: unknown key \"max_conections\" in limits\n"},

    /* YAML itself. */
    {"listen: [\n", "2:1: YAML: did not find expected node content while parsing a flow node at "
                    "line 2 column 1\n"},
    {"a: b\n c: d\n", "2:3: YAML: mapping values are not allowed in this context\n"},
    {"workers: *n\n", "1:10: YAML: found undefined alias\n"},
    {"workers: 1\naccess_log: \"\xff\"\n", "2:14: YAML: invalid leading UTF-8 octet\n"},
    {"workers: 1\n---\nworkers: 2\n", "3:1: only one YAML document is allowed\n"},

    /* Scalars. */
    {"workers: 0\n", "1:10: workers: must be auto or a number from 1 to 256, not \"0\"\n"},
    {"workers: 257\n", "1:10: workers: must be auto or a number from 1 to 256, not \"257\"\n"},
    {"workers: many\n", "1:10: workers: must be auto or a number from 1 to 256, not \"many\"\n"},
    {"workers: -1\n", "1:10: workers: must be auto or a number from 1 to 256, not \"-1\"\n"},
    {"timeouts: {client_header: 10}\n", "1:27: client_header: \"10\" is not a duration (a whole "
                                        "number followed by ms, s, m, h, d or y)\n"},
    {"timeouts: {client_idle: 1.5s}\n", "1:25: client_idle: \"1.5s\" is not a duration (a whole "
                                        "number followed by ms, s, m, h, d or y)\n"},
    {"timeouts: {upstream_connect: 0s}\n", "1:30: upstream_connect: must be longer than 0\n"},
    {"timeouts: {upstream_response: 18446744073709551616ms}\n",
     "1:31: upstream_response: \"18446744073709551616ms\" is too long a duration\n"},
    {"timeouts: {shutdown_grace: 5124095576030432h}\n",
     "1:28: shutdown_grace: \"5124095576030432h\" is too long a duration\n"},
    {"limits: {max_header_bytes: 16q}\n",
     "1:28: max_header_bytes: \"16q\" is not a size (a whole number of bytes, optionally followed "
     "by k, m or g)\n"},
    {"limits: {max_header_bytes: 0}\n", "1:28: max_header_bytes: must be at least 1k (a request "
                                        "line and a Host header alone can take that)\n"},
    {"limits: {max_header_bytes: 1023}\n", "1:28: max_header_bytes: must be at least 1k (a request "
                                           "line and a Host header alone can take that)\n"},
    {"limits: {max_header_bytes: 1m}\nlimits: {max_header_bytes: 1048577}\n",
     "2:1: duplicate key \"limits\" in config\n"},
    {"limits: {max_header_bytes: 1048577}\n", "1:28: max_header_bytes: must be at most 1m\n"},
    {"timeouts: {client_body: 0s}\n", "1:25: client_body: must be longer than 0\n"},
    {"timeouts: {client_body: 60}\n", "1:25: client_body: \"60\" is not a duration (a whole number "
                                      "followed by ms, s, m, h, d or y)\n"},
    {"timeouts: {client_header: 0ms, client_idle: 0s, upstream_response: 0h}\n",
     "1:27: client_header: must be longer than 0\n1:45: client_idle: must be longer than 0\n"
     "1:68: upstream_response: must be longer than 0\n"},
    {"limits: {max_header_bytes: 2m}\n", "1:28: max_header_bytes: must be at most 1m\n"},
    {"limits: {max_body_bytes: 17179869184g}\n",
     "1:26: max_body_bytes: \"17179869184g\" is too large a size\n"},
    {"limits: {max_connections: 0}\n",
     "1:27: max_connections: must be a number from 1 to 1000000, not \"0\"\n"},
    {"limits: {max_connections: 10k}\n",
     "1:27: max_connections: must be a number from 1 to 1000000, not \"10k\"\n"},
    {"listen:\n  - {address: \":80\", tls: maybe}\n",
     "2:27: tls: \"maybe\" is not true or false\n"},
    {"access_log: \"\"\n", "1:13: access_log: must not be empty\n"},
    {"access_log_format: xml\n", "1:20: access_log_format: \"xml\" is not combined or json\n"},

    /* Addresses. */
    {"listen:\n  - address: 1.2.3.4\n",
     "2:14: address: \"1.2.3.4\" is not host:port (IPv6 as [addr]:port)\n"},
    {"listen:\n  - address: \"::1:80\"\n",
     "2:14: address: \"::1:80\" is not host:port (IPv6 as [addr]:port)\n"},
    {"listen:\n  - address: \"1.2.3.4:70000\"\n",
     "2:14: address: \"1.2.3.4:70000\": port must be a number from 1 to 65535\n"},
    {"listen:\n  - address: \"localhost:80\"\n",
     "2:14: address: \"localhost:80\": \"localhost\" is not a numeric IP address\n"},
    {"listen: []\n", "1:9: listen: needs at least one listener\n"},
    {"listen:\n  - address: \":80\"\n  - address: \"0.0.0.0:80\"\n",
     "3:14: listen: \"0.0.0.0:80\" is already a listener\n"},
    {"admin: \"9180\"\n", "1:8: admin: \"9180\" is not host:port (IPv6 as [addr]:port)\n"},
    {"listen:\n  - address: \"127.0.0.1:8080\"\nadmin: \"127.0.0.1:8080\"\n",
     "3:8: admin: \"127.0.0.1:8080\" is also a listener\n"},
    {"listen:\n  - address: \":8080\"\nadmin: \"127.0.0.1:8080\"\n",
     "3:8: admin: \"127.0.0.1:8080\" overlaps the listener \":8080\": a wildcard address takes its "
     "port on every address ([::] on IPv4 ones too)\n"},

    /* Listeners a start could not bind together. */
    {"listen:\n  - address: \"0.0.0.0:80\"\n  - address: \"127.0.0.1:80\"\n",
     "3:14: listen: \"127.0.0.1:80\" overlaps \"0.0.0.0:80\": a wildcard address takes its port on "
     "every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \"127.0.0.1:80\"\n  - address: \"0.0.0.0:80\"\n",
     "3:14: listen: \"0.0.0.0:80\" overlaps \"127.0.0.1:80\": a wildcard address takes its port on "
     "every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \"[::]:80\"\n  - address: \"0.0.0.0:80\"\n",
     "3:14: listen: \"0.0.0.0:80\" overlaps \"[::]:80\": a wildcard address takes its port on "
     "every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \"10.0.0.1:80\"\n  - address: \"[::]:80\"\n",
     "3:14: listen: \"[::]:80\" overlaps \"10.0.0.1:80\": a wildcard address takes its port on "
     "every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \"[::1]:80\"\n  - address: \"[::]:80\"\n",
     "3:14: listen: \"[::]:80\" overlaps \"[::1]:80\": a wildcard address takes its port on "
     "every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \"127.0.0.1:80\"\n  - address: \"[::ffff:127.0.0.1]:80\"\n",
     "3:14: listen: \"[::ffff:127.0.0.1]:80\" overlaps \"127.0.0.1:80\": a wildcard address takes "
     "its port on every address ([::] on IPv4 ones too)\n"},
    {"listen:\n  - address: \":443\"\n    tls: true\n", "3:10: tls: true needs tls.certificates\n"},
    {"tls:\n  certificates:\n    - cert: a.crt\n",
     "3:7: tls.certificates: an entry needs both cert and key\n"},
    {"tls:\n  certificates: []\nlisten:\n  - {address: \":443\", tls: yes}\n",
     "4:28: tls: true needs tls.certificates\n"},
    {"tls: {certificate: []}\n", "1:7: unknown key \"certificate\" in tls\n"},
    {"services: {s: {servers: [\"127.0.0.1:1\"]}}\n"
     "routes: [{host: a.com, service: s, redirect_https: true}]\n",
     "2:52: redirect_https: true needs a listener with tls: true to send requests to\n"},
    {"services: {s: {servers: [\"127.0.0.1:1\"]}}\n"
     "routes: [{host: a.com, service: s, hsts: soon, redirect_https: 1}]\n",
     "2:42: hsts: \"soon\" is not a duration (a whole number followed by ms, s, m, h, d or y)\n"
     "2:64: redirect_https: \"1\" is not true or false\n"},
    {"timeouts: {tls_handshake: 0s}\n", "1:27: tls_handshake: must be longer than 0\n"},
    {"resolvers: [\"127.0.0.53\", \"127.0.0.53:53\", \"[::1]:53\", \"::1\"]\n",
     "1:27: resolver: \"127.0.0.53:53\" is already in the list (as \"127.0.0.53:53\")\n"
     "1:56: resolver: \"::1\" is already in the list (as \"[::1]:53\")\n"},
    {"resolvers: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4, 10.0.0.5, 10.0.0.6, 10.0.0.7, 10.0.0.8, "
     "10.0.0.9, 10.0.0.10, 10.0.0.11, 10.0.0.12, 10.0.0.13, 10.0.0.14, 10.0.0.15, 10.0.0.16, "
     "10.0.0.17]\n",
     "1:180: resolvers: more than 16 resolvers\n"},
    {"resolvers: [\"10.0.0.1:53\", \":53\", \"dns.google\", \"1.2.3.4:0\"]\n",
     "1:28: resolver: \":53\" is not ip[:port]\n"
     "1:35: resolver: \"dns.google\" is not ip[:port]\n"
     "1:49: resolver: \"1.2.3.4:0\" is not ip[:port]\n"},
    {"trusted_proxies: [10.0.0.0/33, \"::1/129\", 10.0.0.300, 10.0.0.0/, 10.0.0.0/x, "
     "\"fe80::1/64/1\"]\n",
     "1:19: trusted_proxies: \"10.0.0.0/33\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, "
     "128 for IPv6)\n"
     "1:32: trusted_proxies: \"::1/129\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, 128 "
     "for IPv6)\n"
     "1:43: trusted_proxies: \"10.0.0.300\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, "
     "128 for IPv6)\n"
     "1:55: trusted_proxies: \"10.0.0.0/\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, "
     "128 for IPv6)\n"
     "1:66: trusted_proxies: \"10.0.0.0/x\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, "
     "128 for IPv6)\n"
     "1:78: trusted_proxies: \"fe80::1/64/1\" is not a CIDR (ip/prefix, a prefix up to 32 for "
     "IPv4, "
     "128 for IPv6)\n"},

    /* Services. */
    {"services:\n  s1: {servers: []}\n",
     "2:17: service \"s1\": servers is empty and there is no dns\n"},
    {"services:\n  s1:\n", "2:3: service \"s1\": has no servers and no dns\n"},
    {"services:\n  s1: {health_check: {path: /}}\n",
     "2:3: service \"s1\": has no servers and no dns\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n    dns: \"s1.local:80\"\n",
     "4:10: service \"s1\": has both servers and dns; give one\n"},
    {"services:\n  s1: {dns: \"s1.local\"}\n", "2:13: dns: \"s1.local\" is not name:port\n"},
    {"services:\n  s1: {dns: \"s1.local:0\"}\n",
     "2:13: dns: \"s1.local:0\": port must be a number from 1 to 65535\n"},
    {"services:\n  s1: {dns: \"s_1.local:80\"}\n",
     "2:13: dns: \"s_1.local:80\" is not name:port (\"s_1.local\" is not a host name (letters, "
     "digits, '-' and '.'))\n"},
    {"services:\n  s1: {dns: \"10.0.0.1\"}\n", "2:13: dns: \"10.0.0.1\" is not name:port\n"},
    {"services:\n  s1: {servers: \"10.0.0.1:80\"}\n",
     "2:17: servers: expected a list, not a single value\n"},
    {"services:\n  s1: {servers: [\"10.0.0.1:80\", \":80\", \"10.0.0.1:80\", \"x\"]}\n",
     "2:33: server: \":80\" needs a host\n"
     "2:40: server: \"10.0.0.1:80\" is already in the list\n"
     "2:55: server: \"x\" is not host:port (IPv6 as [addr]:port)\n"},
    {"services:\n  s1: {servers: [\"10.0.0.1:80\"], weight: 2}\n",
     "2:34: unknown key \"weight\" in service \"s1\"\n"},
    {"services:\n  s1: {servers: [\"10.0.0.1:80\"]}\n  s1: {servers: [\"10.0.0.2:80\"]}\n",
     "3:3: duplicate service \"s1\"\n"},
    {"services:\n  \"s 1\": {servers: [\"10.0.0.1:80\"]}\n",
     "2:3: service name \"s 1\" may hold only letters, digits, '.', '_', '-'\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n    health_check: {interval: 5s}\n",
     "4:19: health_check: needs a path\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: healthz, interval: 0s}\n",
     "4:26: path: \"healthz\" must start with \"/\"\n4:45: interval: must be longer than 0\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: /h, interval: 99ms}\n",
     "4:40: interval: must be at least 100ms\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: /h, interval: 1s, timeout: 1001ms}\n",
     "4:53: timeout: \"1001ms\" is longer than the interval (1s)\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: /h, timeout: 6s}\n",
     "4:39: timeout: \"6s\" is longer than the interval (5s by default)\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: /h, timeout: 0s, interval: 50ms}\n",
     "4:39: timeout: must be longer than 0\n4:53: interval: must be at least 100ms\n"},
    {"services:\n  s1:\n    servers: [\"10.0.0.1:80\"]\n"
     "    health_check: {path: /h, timeout: 2s, interval: soon}\n",
     "4:53: interval: \"soon\" is not a duration (a whole number followed by ms, s, m, h, d or "
     "y)\n"},
    {"services:\n"
     "  a: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/a b\"}}\n"
     "  b: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/h?full=1\"}}\n"
     "  c: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/a\\\"b\"}}\n"
     "  d: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/%zz\"}}\n"
     "  e: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/\\u00e9\"}}\n"
     "  f: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/{x}#y\"}}\n",
     "2:54: path: \"/a b\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX escapes "
     "(no query)\n"
     "3:54: path: \"/h?full=1\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX "
     "escapes (no query)\n"
     "4:54: path: \"/a\"b\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX escapes "
     "(no query)\n"
     "5:54: path: \"/%zz\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX escapes "
     "(no query)\n"
     "6:54: path: \"/\xc3\xa9\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX "
     "escapes "
     "(no query)\n"
     "7:54: path: \"/{x}#y\" may hold only letters, digits, \"-._~!$&'()*+,;=:@/\" and %XX "
     "escapes (no query)\n"},
    {"services:\n  s1: {servers: [\"10.0.0.1:80\"]}\n  s2: {servers: [\"10.0.0.2:80\"]}\n"
     "  s1: {servers: []}\n  s1: {servers: [x]}\n  s2: {dns: \"a:1\"}\n",
     "4:3: duplicate service \"s1\"\n5:3: duplicate service \"s1\"\n"
     "6:3: duplicate service \"s2\"\n"},

    /* Routes. */
    {"routes:\n  - host: app1.com\n    service: app1\n",
     "3:14: service: no service is called \"app1\"\n"},
    {"default_service: app3\n", "1:18: default_service: no service is called \"app3\"\n"},
    {"routes:\n  - host: app1.com\n  - service: s1\nservices: {s1: {servers: [\"10.0.0.1:80\"]}}\n",
     "2:5: routes: a route needs a service\n3:5: routes: a route needs a host\n"},
    {"routes:\n  - {host: app1.com, service: s1}\n  - {host: APP1.com., path: /, service: s1}\n"
     "services: {s1: {servers: [\"10.0.0.1:80\"]}}\n",
     "3:12: routes: host \"app1.com\" with path \"/\" is already routed\n"},
    {"routes:\n  - {host: app_1.com, service: s1}\n  - {host: \"*.\", service: s1}\n"
     "  - {host: a..b, service: s1}\n  - {host: \"*foo.com\", service: s1}\n"
     "  - {host: \"app1.com:80\", service: s1}\n  - {host: \"\", service: s1}\n"
     "  - {host: \"a.*.com\", service: s1}\n"
     "services: {s1: {servers: [\"10.0.0.1:80\"]}}\n",
     "2:12: host: \"app_1.com\" is not a host name (letters, digits, '-' and '.', optionally after "
     "\"*.\")\n"
     "3:12: host: \"*.\" is not a host name (letters, digits, '-' and '.', optionally after "
     "\"*.\")\n"
     "4:12: host: \"a..b\" is not a host name (letters, digits, '-' and '.', optionally after "
     "\"*.\")\n"
     "5:12: host: \"*foo.com\" is not a host name (letters, digits, '-' and '.', optionally after "
     "\"*.\")\n"
     "6:12: host: \"app1.com:80\" is not a host name (letters, digits, '-' and '.', optionally "
     "after \"*.\")\n"
     "7:12: host: \"\" is not a host name (empty or longer than 253)\n"
     "8:12: host: \"a.*.com\" is not a host name (letters, digits, '-' and '.', optionally after "
     "\"*.\")\n"},
    {"routes:\n  - {host: a.com, path: api, service: s1}\n  - {host: a.com, path: \"/a b\", "
     "service: s1}\n  - {host: a.com, path: \"/a?b\", service: s1}\n"
     "services: {s1: {servers: [\"10.0.0.1:80\"]}}\n",
     "2:25: path: \"api\" must start with \"/\"\n"
     "3:25: path: \"/a b\" may hold only visible ASCII, without '?' or '#' (percent-encode the "
     "rest)\n"
     "4:25: path: \"/a?b\" may hold only visible ASCII, without '?' or '#' (percent-encode the "
     "rest)\n"},
    {"routes:\n  - {host: a.com, service: \"\"}\n", "2:28: service: must not be empty\n"},
    {"routes:\n  - {host: a.com, path: /api, service: s1}\n  - {host: b.com, path: /api/, "
     "service: s1}\n  - {host: a.com, path: /api/, service: s1}\n"
     "  - {host: a.com, path: //, service: s1}\n  - {host: A.com., service: s1}\n"
     "  - {host: a.com, path: /api//, service: s1}\n"
     "services: {s1: {servers: [\"10.0.0.1:80\"]}}\n",
     "4:12: routes: host \"a.com\" with path \"/api/\" is already routed (as \"/api\": a trailing "
     "'/' makes no difference)\n"
     "6:12: routes: host \"a.com\" with path \"/\" is already routed (as \"//\": a trailing '/' "
     "makes no difference)\n"
     "7:12: routes: host \"a.com\" with path \"/api//\" is already routed (as \"/api\": a "
     "trailing '/' makes no difference)\n"},

    /* kubernetes. */
    {"kubernetes: [portier]\n", "1:13: kubernetes: expected a mapping, not a list\n"},
    {"kubernetes: on\n", "1:13: kubernetes: expected a mapping, not a single value\n"},
    {"kubernetes:\n  ingress_clas: portier\n  namespace: [apps]\n",
     "2:3: unknown key \"ingress_clas\" in kubernetes\n"
     "3:3: unknown key \"namespace\" in kubernetes\n"},
    {"kubernetes:\n  ca_file: /a\n  ca_file: /b\n",
     "3:3: duplicate key \"ca_file\" in kubernetes\n"},
    {"kubernetes:\n  ingress_class: Portier\n",
     "2:18: kubernetes.ingress_class: \"Portier\" is not a DNS-1123 subdomain (at most 253 "
     "lowercase letters, digits, '-' and '.', each label starting and ending with a letter or "
     "digit)\n"},
    {"kubernetes: {ingress_class: \"\"}\nx: [{kubernetes: {ingress_class: -a}}]\n",
     "1:29: kubernetes.ingress_class: \"\" is not a DNS-1123 subdomain (at most 253 lowercase "
     "letters, digits, '-' and '.', each label starting and ending with a letter or digit)\n"
     "2:1: unknown key \"x\" in config\n"},
    {"kubernetes: {ingress_class: a.}\n",
     "1:29: kubernetes.ingress_class: \"a.\" is not a DNS-1123 subdomain (at most 253 lowercase "
     "letters, digits, '-' and '.', each label starting and ending with a letter or digit)\n"},
    {"kubernetes: {ingress_class: a..b}\n",
     "1:29: kubernetes.ingress_class: \"a..b\" is not a DNS-1123 subdomain (at most 253 "
     "lowercase letters, digits, '-' and '.', each label starting and ending with a letter or "
     "digit)\n"},
    {"kubernetes: {ingress_class: a-.b}\n",
     "1:29: kubernetes.ingress_class: \"a-.b\" is not a DNS-1123 subdomain (at most 253 "
     "lowercase letters, digits, '-' and '.', each label starting and ending with a letter or "
     "digit)\n"},
    {"kubernetes: {ingress_class: [a]}\n",
     "1:29: kubernetes.ingress_class: expected a single value, not a list\n"},
    {"kubernetes: {namespaces: apps}\n",
     "1:26: kubernetes.namespaces: expected a list, not a single value\n"},
    {"kubernetes:\n  namespaces: [apps, web, apps, \"\", Apps, a.b, -a, a-, a_b, [x]]\n",
     "2:27: kubernetes.namespaces: \"apps\" is already in the list\n"
     "2:33: kubernetes.namespaces: \"\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:37: kubernetes.namespaces: \"Apps\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:43: kubernetes.namespaces: \"a.b\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:48: kubernetes.namespaces: \"-a\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:52: kubernetes.namespaces: \"a-\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:56: kubernetes.namespaces: \"a_b\" is not a DNS-1123 label (1 to 63 lowercase letters, "
     "digits and '-', starting and ending with a letter or digit)\n"
     "2:61: kubernetes.namespaces: expected a single value, not a list\n"},
    {"kubernetes:\n"
     "  server: \"http://10.0.0.1:6443\"\n"
     "k2: {server: \"https://kubernetes.default.svc:443\"}\n",
     "2:11: kubernetes.server: \"http://10.0.0.1:6443\" must be https://IP:PORT\n"
     "3:1: unknown key \"k2\" in config\n"},
    {"kubernetes: {server: \"https://kubernetes.default.svc:443\"}\n",
     "1:22: kubernetes.server: \"https://kubernetes.default.svc:443\" must be https://IP:PORT "
     "(\"kubernetes.default.svc\" is not an IP address; host names are not looked up)\n"},
    {"kubernetes: {server: \"https://10.0.0.1\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1\" must be https://IP:PORT (no port)\n"},
    {"kubernetes: {server: \"https://[fd00::1]\"}\n",
     "1:22: kubernetes.server: \"https://[fd00::1]\" must be https://IP:PORT (no port)\n"},
    {"kubernetes: {server: \"https://10.0.0.1:6443/\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1:6443/\" must be https://IP:PORT (nothing may "
     "follow the port)\n"},
    {"kubernetes: {server: \"https://10.0.0.1:6443/api?x#y\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1:6443/api?x#y\" must be https://IP:PORT "
     "(nothing may follow the port)\n"},
    {"kubernetes: {server: \"https://fd00::1:6443\"}\n",
     "1:22: kubernetes.server: \"https://fd00::1:6443\" must be https://IP:PORT (IPv6 as "
     "[IP]:PORT)\n"},
    {"kubernetes: {server: \"https://[fd00::1:6443\"}\n",
     "1:22: kubernetes.server: \"https://[fd00::1:6443\" must be https://IP:PORT (IPv6 as "
     "[IP]:PORT)\n"},
    {"kubernetes: {server: \"https://[10.0.0.1]:6443\"}\n",
     "1:22: kubernetes.server: \"https://[10.0.0.1]:6443\" must be https://IP:PORT "
     "(\"10.0.0.1\" is not an IP address; host names are not looked up)\n"},
    {"kubernetes: {server: \"https://:6443\"}\n",
     "1:22: kubernetes.server: \"https://:6443\" must be https://IP:PORT (no IP)\n"},
    {"kubernetes: {server: \"https://\"}\n",
     "1:22: kubernetes.server: \"https://\" must be https://IP:PORT (no IP)\n"},
    {"kubernetes: {server: \"https://10.0.0.1:0\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1:0\" must be https://IP:PORT (a port from 1 to "
     "65535)\n"},
    {"kubernetes: {server: \"https://10.0.0.1:65536\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1:65536\" must be https://IP:PORT (a port from 1 "
     "to 65535)\n"},
    {"kubernetes: {server: \"https://10.0.0.1:\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.1:\" must be https://IP:PORT (a port from 1 to "
     "65535)\n"},
    {"kubernetes: {server: \"HTTPS://10.0.0.1:6443\"}\n",
     "1:22: kubernetes.server: \"HTTPS://10.0.0.1:6443\" must be https://IP:PORT\n"},
    {"kubernetes: {server: \"https://10.0.0.256:6443\"}\n",
     "1:22: kubernetes.server: \"https://10.0.0.256:6443\" must be https://IP:PORT "
     "(\"10.0.0.256\" is not an IP address; host names are not looked up)\n"},
    {"kubernetes: {token_file: \"\", ca_file: \"\"}\n",
     "1:26: kubernetes.token_file: must not be empty\n"
     "1:39: kubernetes.ca_file: must not be empty\n"},
    {"kubernetes: {token_file: [a], ca_file: {a: b}}\n",
     "1:26: kubernetes.token_file: expected a single value, not a list\n"
     "1:40: kubernetes.ca_file: expected a single value, not a mapping\n"},

    /* Several at once, reported in file order whichever check found them. */
    {"routes:\n  - host: app1.com\n    service: nope\ndefault_service: gone\nlistn: 1\n"
     "services:\n  s1: {servers: []}\nworkers: 0\n",
     "3:14: service: no service is called \"nope\"\n"
     "4:18: default_service: no service is called \"gone\"\n"
     "5:1: unknown key \"listn\" in config\n"
     "7:17: service \"s1\": servers is empty and there is no dns\n"
     "8:10: workers: must be auto or a number from 1 to 256, not \"0\"\n"},
};

static void
test_errors(void **state)
{
    char path[64], want[4 * CONFIG_ERR_SIZE];
    int failed = 0;

    (void)state;
    for (size_t i = 0; i < N(error_cases); i++) {
        const struct error_case *c = &error_cases[i];
        struct config *cfg = load_yaml(c->yaml, path, sizeof(path));

        prefix_lines(want, sizeof(want), path, c->errors);
        if (cfg != NULL || strcmp(err, want) != 0) {
            print_error("error case %zu:\n%s\nwant:\n%sgot:\n%s\n", i, c->yaml, want, err);
            failed++;
            config_unref(cfg);
            continue;
        }

        cfg = config_parse("t.yaml", c->yaml, strlen(c->yaml), err, sizeof(err));
        prefix_lines(want, sizeof(want), "t.yaml", c->errors);
        assert_null(cfg);
        assert_string_equal(err, want);
    }
    assert_int_equal(failed, 0);
}

/* Values: a config is dumped one fact per line, and each case lists lines the dump must hold. */

static void
dump_addr(char *out, size_t cap, const char *what, const struct config_addr *a, const char *tail)
{
    char host[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    unsigned port;

    if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        assert_int_equal(a->len, sizeof(struct sockaddr_in6));
    } else {
        assert_int_equal(sa->sa_family, AF_INET);
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        assert_int_equal(a->len, sizeof(struct sockaddr_in));
    }
    snprintf(out + strlen(out), cap - strlen(out), "%s %s = %s %u%s\n", what, a->spec, host, port,
             tail);
}

#define OUT out + strlen(out), cap - strlen(out)

static void
dump_kubernetes(const struct config_kubernetes *k, char *out, size_t cap)
{
    if (!k->enabled) {
        assert_null(k->ingress_class);
        snprintf(OUT, "kubernetes off\n");
        return;
    }
    snprintf(OUT, "kubernetes %s at %u:%u\n", k->ingress_class, k->line, k->col);
    snprintf(OUT, "  namespaces");
    for (size_t i = 0; i < k->nnamespaces; i++)
        snprintf(OUT, " %s", k->namespaces[i]);
    snprintf(OUT, "\n  server %s\n  token_file %s\n  ca_file %s\n",
             k->server != NULL ? k->server : "-", k->token_file != NULL ? k->token_file : "-",
             k->ca_file != NULL ? k->ca_file : "-");
}

static void
dump(const struct config *cfg, char *out, size_t cap)
{
    static const char *const logs[] = {"stdout", "off", "file"};
    static const char *const formats[] = {"combined", "json"};
    const struct config_timeouts *t = &cfg->timeouts;
    const struct config_limits *l = &cfg->limits;

    out[0] = '\0';
    snprintf(OUT, "\n");
    for (size_t i = 0; i < cfg->nlisteners; i++)
        dump_addr(out, cap, "listen", &cfg->listeners[i].addr, cfg->listeners[i].tls ? " tls" : "");
    if (cfg->admin != NULL)
        dump_addr(out, cap, "admin", cfg->admin, "");
    snprintf(OUT, "workers %u\n", cfg->workers);
    for (size_t i = 0; i < cfg->ncerts; i++) {
        const struct config_cert *c = &cfg->certs[i];
        snprintf(OUT, "cert %s %s", c->cert, c->key);
        if (c->cert_pem != NULL || c->key_pem != NULL)
            snprintf(OUT, " pem %s %s", c->cert_pem != NULL ? c->cert_pem : "-",
                     c->key_pem != NULL ? c->key_pem : "-");
        snprintf(OUT, "\n");
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        snprintf(OUT, "route %s %s -> %zu %s%s%s%s%s", r->host != NULL ? r->host : "(any)", r->path,
                 r->service, r->service_name, r->wildcard ? " wildcard" : "",
                 r->one_label ? " one_label" : "", r->exact ? " exact" : "",
                 r->redirect_https ? " redirect_https" : "");
        if (r->hsts_ms > 0)
            snprintf(OUT, " hsts=%llu", (unsigned long long)r->hsts_ms);
        snprintf(OUT, "\n");
        assert_string_equal(r->service_name, cfg->services[r->service].name);
    }
    snprintf(OUT, "default_service %d\n", cfg->default_service);
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *s = &cfg->services[i];
        snprintf(OUT, "service %s%s\n", s->name, s->kube ? " kube" : "");
        for (size_t j = 0; j < s->nservers; j++)
            dump_addr(out, cap, "  server", &s->servers[j], "");
        if (s->dns != NULL)
            snprintf(OUT, "  dns %s = %s %u\n", s->dns, s->dns_name, s->dns_port);
        if (s->health.path != NULL)
            snprintf(OUT, "  health %s %llu %llu\n", s->health.path,
                     (unsigned long long)s->health.interval_ms,
                     (unsigned long long)s->health.timeout_ms);
        assert_true(s->kube ? s->dns == NULL : (s->nservers > 0) != (s->dns != NULL));
        assert_true((s->nservers > 0) == (s->servers != NULL));
    }
    for (size_t i = 0; i < cfg->nresolvers; i++)
        dump_addr(out, cap, "resolver", &cfg->resolvers[i], "");
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++) {
        const struct config_cidr *c = &cfg->trusted_proxies[i];
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(c->family, c->addr, ip, sizeof(ip));
        snprintf(OUT, "trusted %s = %s/%u\n", c->spec, ip, c->prefix);
    }
    snprintf(OUT, "timeouts %llu %llu %llu %llu %llu %llu\n",
             (unsigned long long)t->client_header_ms, (unsigned long long)t->client_body_ms,
             (unsigned long long)t->client_idle_ms, (unsigned long long)t->upstream_connect_ms,
             (unsigned long long)t->upstream_response_ms, (unsigned long long)t->shutdown_grace_ms);
    snprintf(OUT, "tls_handshake %llu\n", (unsigned long long)t->tls_handshake_ms);
    snprintf(OUT, "limits %llu %llu %llu\n", (unsigned long long)l->max_header_bytes,
             (unsigned long long)l->max_body_bytes, (unsigned long long)l->max_connections);
    snprintf(OUT, "access_log %s %s\n", logs[cfg->access_log],
             cfg->access_log_path != NULL ? cfg->access_log_path : "-");
    snprintf(OUT, "access_log_format %s\n", formats[cfg->access_log_format]);
    dump_kubernetes(&cfg->kubernetes, out, cap);
    assert_true(strlen(out) + 1 < cap);
}

/* Every line of want must be a whole line of the dump. */
static void
assert_dump_has(const struct config *cfg, const char *want, size_t index)
{
    char got[8192], line[512];

    dump(cfg, got, sizeof(got));
    while (*want != '\0') {
        const char *nl = strchr(want, '\n');
        size_t n = nl != NULL ? (size_t)(nl - want) + 1 : strlen(want);
        snprintf(line, sizeof(line), "\n%.*s%s", (int)n, want, nl != NULL ? "" : "\n");
        if (strstr(got, line) == NULL) {
            print_error("value case %zu: no line %sin%s", index, line + 1, got);
            fail();
        }
        want += n;
    }
}

struct value_case {
    const char *yaml;
    const char *want;
};

static const char defaults[] = "listen 0.0.0.0:80 = 0.0.0.0 80\n"
                               "workers 0\n"
                               "default_service -1\n"
                               "timeouts 10000 60000 60000 2000 60000 10000\n"
                               "limits 16384 0 10000\n"
                               "access_log stdout -\n"
                               "access_log_format combined\n"
                               "kubernetes off\n";

static const struct value_case value_cases[] = {
    /* Empty, or as good as: every default. */
    {"", defaults},
    {"# nothing but a comment\n", defaults},
    {"---\n", defaults},
    {"{}\n", defaults},
    {"listen:\nadmin: ~\nroutes: null\nservices:\ntimeouts:\n", defaults},
    {"workers: 1\n---\n", "workers 1\n"},

    /* The example from DESIGN.md. */
    {"listen:\n"
     "  - address: \"0.0.0.0:80\"\n"
     "  - address: \"0.0.0.0:443\"\n"
     "    tls: true\n"
     "admin: \"127.0.0.1:9180\"\n"
     "workers: auto\n"
     "tls:\n"
     "  certificates:\n"
     "    - cert: /etc/portier/tls/tls.crt\n"
     "      key: /etc/portier/tls/tls.key\n"
     "routes:\n"
     "  - host: app1.com\n"
     "    service: app1\n"
     "  - host: app2.com\n"
     "    path: /\n"
     "    service: app2\n"
     "default_service: app3\n"
     "services:\n"
     "  app1:\n"
     "    servers: [\"127.0.0.21:8080\"]\n"
     "  app2:\n"
     "    dns: \"app2.apps.svc.cluster.local:8080\"\n"
     "  app3:\n"
     "    servers: [\"127.0.0.25:8080\"]\n"
     "    health_check: { path: /healthz, interval: 5s }\n"
     "resolvers: []\n"
     "trusted_proxies: []\n"
     "timeouts: { client_header: 10s, client_idle: 60s, upstream_connect: 2s, "
     "upstream_response: 60s, shutdown_grace: 10s }\n"
     "limits: { max_header_bytes: 16384, max_body_bytes: 0, max_connections: 10000 }\n"
     "access_log: stdout\n"
     "access_log_format: combined\n",
     "listen 0.0.0.0:80 = 0.0.0.0 80\n"
     "listen 0.0.0.0:443 = 0.0.0.0 443 tls\n"
     "admin 127.0.0.1:9180 = 127.0.0.1 9180\n"
     "workers 0\n"
     "cert /etc/portier/tls/tls.crt /etc/portier/tls/tls.key\n"
     "route app1.com / -> 0 app1\n"
     "route app2.com / -> 1 app2\n"
     "default_service 2\n"
     "service app1\n"
     "  server 127.0.0.21:8080 = 127.0.0.21 8080\n"
     "service app2\n"
     "  dns app2.apps.svc.cluster.local:8080 = app2.apps.svc.cluster.local 8080\n"
     "service app3\n"
     "  server 127.0.0.25:8080 = 127.0.0.25 8080\n"
     "  health /healthz 5000 2000\n"
     "timeouts 10000 60000 60000 2000 60000 10000\n"
     "limits 16384 0 10000\n"
     "access_log stdout -\n"
     "access_log_format combined\n"},

    /* Scalars quoted or not, and every unit. */
    {"workers: \"8\"\ntimeouts: {client_header: 500ms, client_idle: '2m', upstream_connect: 1s, "
     "upstream_response: 1h, shutdown_grace: 0s, client_body: \"90s\"}\n"
     "limits: {max_header_bytes: 16k, max_body_bytes: \"1m\", max_connections: 1000000}\n",
     "workers 8\ntimeouts 500 90000 120000 1000 3600000 0\nlimits 16384 1048576 1000000\n"},
    {"timeouts: {client_body: 1ms}\n", "timeouts 10000 1 60000 2000 60000 10000\n"},
    {"workers: 1\n", "tls_handshake 10000\n"},
    {"timeouts: {tls_handshake: 3s}\n", "tls_handshake 3000\n"},

    /* Per-route TLS settings; days and years for hsts. */
    {"listen: [{address: \":80\"}, {address: \":443\", tls: true}]\n"
     "tls: {certificates: [{cert: a.crt, key: a.key}]}\n"
     "services: {s: {servers: [\"127.0.0.1:1\"]}}\n"
     "routes:\n"
     "  - {host: a.com, service: s, redirect_https: true, hsts: 1y}\n"
     "  - {host: b.com, service: s, hsts: 2d}\n"
     "  - {host: c.com, service: s, redirect_https: false, hsts: 0s}\n",
     "route a.com / -> 0 s redirect_https hsts=31536000000\n"
     "route b.com / -> 0 s hsts=172800000\n"
     "route c.com / -> 0 s\n"},
    {"workers: 256\nlimits: {max_body_bytes: 1g, max_header_bytes: 1k}\n",
     "workers 256\nlimits 1024 1073741824 10000\n"},
    {"limits: {max_header_bytes: 1m}\n", "limits 1048576 0 10000\n"},
    {"access_log: off\naccess_log_format: json\n", "access_log off -\naccess_log_format json\n"},
    {"access_log: /var/log/portier/access.log\n", "access_log file /var/log/portier/access.log\n"},
    {"access_log: \"stdout\"\n", "access_log stdout -\n"},

    /* Listeners. */
    {"listen:\n  - address: \"[::]:443\"\n    tls: yes\n  - {address: \":80\", tls: False}\n"
     "tls: {certificates: [{cert: a.crt, key: a.key}, {cert: b.crt, key: b.key}]}\n",
     "listen [::]:443 = :: 443 tls\nlisten :80 = 0.0.0.0 80\ncert a.crt a.key\n"
     "cert b.crt b.key\n"},
    {"listen:\n  - address: \"[::1]:8080\"\nadmin: \"[::1]:9180\"\n",
     "listen [::1]:8080 = ::1 8080\nadmin [::1]:9180 = ::1 9180\n"},

    /* Routes: hosts normalised, services by index, paths as written. */
    {"routes:\n"
     "  - {host: App1.COM., service: b}\n"
     "  - {host: \"*.Example.com\", service: a}\n"
     "  - {host: app1.com, path: /api, service: a}\n"
     "  - {host: 10.0.0.1, path: \"/api/v1/\", service: b}\n"
     "services:\n  a: {servers: [\"10.0.0.1:80\"]}\n  b: {servers: [\"10.0.0.2:80\"]}\n"
     "default_service: b\n",
     "route app1.com / -> 1 b\n"
     "route *.example.com / -> 0 a wildcard\n"
     "route app1.com /api -> 0 a\n"
     "route 10.0.0.1 /api/v1/ -> 1 b\n"
     "default_service 1\n"},

    /* Services. */
    {"services:\n"
     "  web.v2_x-1:\n"
     "    servers:\n      - \"10.0.0.1:80\"\n      - \"[fd00::1]:8080\"\n"
     "    health_check: {path: /healthz}\n"
     "  dns1: {dns: \"App2.apps.svc.cluster.local.:8080\", health_check: {path: /h, interval: "
     "2m}}\n",
     "service web.v2_x-1\n"
     "  server 10.0.0.1:80 = 10.0.0.1 80\n"
     "  server [fd00::1]:8080 = fd00::1 8080\n"
     "  health /healthz 5000 2000\n"
     "service dns1\n"
     "  dns App2.apps.svc.cluster.local.:8080 = App2.apps.svc.cluster.local. 8080\n"
     "  health /h 120000 2000\n"},

    /* Health checks: the timeout is 2s or the interval, whichever is shorter, unless set. */
    {"services:\n"
     "  a: {servers: [\"10.0.0.1:80\"], health_check: {path: /, interval: 100ms}}\n"
     "  b: {servers: [\"10.0.0.1:80\"], health_check: {path: /h, interval: 1s, timeout: 1s}}\n"
     "  c: {servers: [\"10.0.0.1:80\"], health_check: {path: /h, timeout: 150ms}}\n"
     "  d: {servers: [\"10.0.0.1:80\"], health_check: {path: /h, interval: 10s, timeout: 5s}}\n"
     "  e: {servers: [\"10.0.0.1:80\"], health_check: {path: \"/a-b_c.d~e/%2Fx:y@z!$&'()*+,;=\"}}\n"
     "  f: {servers: [\"10.0.0.1:80\"], health_check: {path: /h, timeout: ~}}\n",
     "service a\n  server 10.0.0.1:80 = 10.0.0.1 80\n  health / 100 100\n"
     "service b\n  server 10.0.0.1:80 = 10.0.0.1 80\n  health /h 1000 1000\n"
     "service c\n  server 10.0.0.1:80 = 10.0.0.1 80\n  health /h 5000 150\n"
     "service d\n  server 10.0.0.1:80 = 10.0.0.1 80\n  health /h 10000 5000\n"
     "  health /a-b_c.d~e/%2Fx:y@z!$&'()*+,;= 5000 2000\n"
     "  health /h 5000 2000\n"},

    /* Limits reached, not passed: 64 servers. */
    {"services:\n  s: {servers: [\"10.0.0.1:1\", \"10.0.0.1:2\", \"10.0.0.1:3\", \"10.0.0.1:4\", "
     "\"10.0.0.1:5\", \"10.0.0.1:6\", \"10.0.0.1:7\", \"10.0.0.1:8\", \"10.0.0.1:9\", "
     "\"10.0.0.1:10\", \"10.0.0.1:11\", \"10.0.0.1:12\", \"10.0.0.1:13\", \"10.0.0.1:14\", "
     "\"10.0.0.1:15\", \"10.0.0.1:16\", \"10.0.0.1:17\", \"10.0.0.1:18\", \"10.0.0.1:19\", "
     "\"10.0.0.1:20\", \"10.0.0.1:21\", \"10.0.0.1:22\", \"10.0.0.1:23\", \"10.0.0.1:24\", "
     "\"10.0.0.1:25\", \"10.0.0.1:26\", \"10.0.0.1:27\", \"10.0.0.1:28\", \"10.0.0.1:29\", "
     "\"10.0.0.1:30\", \"10.0.0.1:31\", \"10.0.0.1:32\", \"10.0.0.1:33\", \"10.0.0.1:34\", "
     "\"10.0.0.1:35\", \"10.0.0.1:36\", \"10.0.0.1:37\", \"10.0.0.1:38\", \"10.0.0.1:39\", "
     "\"10.0.0.1:40\", \"10.0.0.1:41\", \"10.0.0.1:42\", \"10.0.0.1:43\", \"10.0.0.1:44\", "
     "\"10.0.0.1:45\", \"10.0.0.1:46\", \"10.0.0.1:47\", \"10.0.0.1:48\", \"10.0.0.1:49\", "
     "\"10.0.0.1:50\", \"10.0.0.1:51\", \"10.0.0.1:52\", \"10.0.0.1:53\", \"10.0.0.1:54\", "
     "\"10.0.0.1:55\", \"10.0.0.1:56\", \"10.0.0.1:57\", \"10.0.0.1:58\", \"10.0.0.1:59\", "
     "\"10.0.0.1:60\", \"10.0.0.1:61\", \"10.0.0.1:62\", \"10.0.0.1:63\", \"10.0.0.1:64\"]}\n",
     "  server 10.0.0.1:1 = 10.0.0.1 1\n  server 10.0.0.1:64 = 10.0.0.1 64\n"},

    /* Resolvers get port 53 unless they say otherwise. */
    {"resolvers: [10.43.0.10, \"10.43.0.11:5353\", \"::1\", \"[fd00::10]\", \"[fd00::11]:54\"]\n",
     "resolver 10.43.0.10:53 = 10.43.0.10 53\n"
     "resolver 10.43.0.11:5353 = 10.43.0.11 5353\n"
     "resolver [::1]:53 = ::1 53\n"
     "resolver [fd00::10]:53 = fd00::10 53\n"
     "resolver [fd00::11]:54 = fd00::11 54\n"},

    /* CIDRs: bare addresses are hosts, host bits are cleared. */
    {"trusted_proxies: [10.0.0.0/8, 192.168.1.77/24, 127.0.0.1, \"::1\", \"fd00::/8\", "
     "\"2001:db8::1/33\", 0.0.0.0/0]\n",
     "trusted 10.0.0.0/8 = 10.0.0.0/8\n"
     "trusted 192.168.1.77/24 = 192.168.1.0/24\n"
     "trusted 127.0.0.1 = 127.0.0.1/32\n"
     "trusted ::1 = ::1/128\n"
     "trusted fd00::/8 = fd00::/8\n"
     "trusted 2001:db8::1/33 = 2001:db8::/33\n"
     "trusted 0.0.0.0/0 = 0.0.0.0/0\n"},

    /* kubernetes: on when the key is there, even with every key inside commented out. */
    {"kubernetes: {}\n", "kubernetes portier at 1:1\n  namespaces\n  server -\n  token_file -\n"
                         "  ca_file -\n"},
    {"workers: 2\nkubernetes:\n", "kubernetes portier at 2:1\n  namespaces\n  server -\n"},
    {"workers: 2\nkubernetes:\n#  ingress_class: nginx\n", "kubernetes portier at 2:1\n"},
    {"kubernetes: {ingress_class: ~, namespaces: [], server: null}\n",
     "kubernetes portier at 1:1\n  namespaces\n  server -\n"},
    {"workers: 1\n"
     "kubernetes:\n"
     "  ingress_class: nginx.example-1.com\n"
     "  namespaces: [apps, web-1, \"0\"]\n"
     "  server: \"https://10.96.0.1:443\"\n"
     "  token_file: /var/run/token\n"
     "  ca_file: ca.crt\n",
     "kubernetes nginx.example-1.com at 2:1\n"
     "  namespaces apps web-1 0\n"
     "  server https://10.96.0.1:443\n"
     "  token_file /var/run/token\n"
     "  ca_file ca.crt\n"},
    {"kubernetes: {server: \"https://[fd00::1]:6443\", ingress_class: a}\n",
     "kubernetes a at 1:1\n  namespaces\n  server https://[fd00::1]:6443\n"},
    {"kubernetes: {server: \"https://[::ffff:10.0.0.1]:1\"}\n",
     "  server https://[::ffff:10.0.0.1]:1\n"},
    /* A TLS listener's certificates may all come from Ingresses' Secrets. */
    {"listen: [{address: \":443\", tls: true}]\nkubernetes: {}\n"
     "services: {s: {servers: [\"127.0.0.1:1\"]}}\n"
     "routes: [{host: a.com, path: /a/, service: s, redirect_https: true}]\n",
     "listen :443 = 0.0.0.0 443 tls\nroute a.com /a/ -> 0 s redirect_https\n"
     "kubernetes portier at 2:1\n"},

    /* YAML's own features work as YAML says. */
    {"services:\n  a: {servers: &s [\"10.0.0.9:80\"]}\n  b: {servers: *s}\n",
     "service a\n  server 10.0.0.9:80 = 10.0.0.9 80\nservice b\n"
     "  server 10.0.0.9:80 = 10.0.0.9 80\n"},
    {"\xef\xbb\xbfworkers: 3 # a BOM and a comment\n", "workers 3\n"},
};

static void
test_values(void **state)
{
    char path[64];

    (void)state;
    for (size_t i = 0; i < N(value_cases); i++) {
        const struct value_case *c = &value_cases[i];
        struct config *cfg = load_yaml(c->yaml, path, sizeof(path));

        if (cfg == NULL) {
            print_error("value case %zu:\n%s\n%s", i, c->yaml, err);
            fail();
            return;
        }
        assert_string_equal(err, "");
        assert_string_equal(cfg->path, path);
        assert_dump_has(cfg, c->want, i);
        config_unref(cfg);

        cfg = config_parse("t.yaml", c->yaml, strlen(c->yaml), err, sizeof(err));
        assert_non_null(cfg);
        assert_string_equal(cfg->path, "t.yaml");
        assert_dump_has(cfg, c->want, i);
        config_unref(cfg);
    }
}

static void
test_local_yaml_loads(void **state)
{
    struct config *cfg;

    (void)state;
    cfg = config_load("config/local.yaml", err, sizeof(err));
    if (cfg == NULL) {
        print_error("%s", err);
        fail();
        return;
    }
    assert_dump_has(cfg,
                    "listen 127.0.0.1:8080 = 127.0.0.1 8080\n"
                    "listen 127.0.0.1:8443 = 127.0.0.1 8443 tls\n"
                    "cert build/certs/server.crt build/certs/server.key\n"
                    "route app1.com / -> 0 app1\n"
                    "route app2.com / -> 1 app2\n"
                    "default_service 2\n"
                    "service app1\n"
                    "  server 127.0.0.21:8080 = 127.0.0.21 8080\n"
                    "service app2\n"
                    "  server 127.0.0.22:8080 = 127.0.0.22 8080\n"
                    "  server 127.0.0.23:8080 = 127.0.0.23 8080\n"
                    "  server 127.0.0.24:8080 = 127.0.0.24 8080\n"
                    "service app3\n"
                    "  server 127.0.0.25:8080 = 127.0.0.25 8080\n"
                    "access_log stdout -\n",
                    0);
    assert_int_equal(cfg->nlisteners, 2);
    assert_int_equal(cfg->nservices, 3);
    assert_non_null(cfg->admin); /* make run serves the status page there */
    assert_string_equal(cfg->admin->spec, "127.0.0.1:9180");
    config_unref(cfg);
}

static void
test_missing_file(void **state)
{
    (void)state;
    assert_null(config_load("/nonexistent/portier.yaml", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/portier.yaml: cannot open: No such file or directory\n");
}

/* More errors than fit: whole lines only, then a count of the rest. */
static void
test_error_overflow(void **state)
{
    static const size_t errlens[] = {CONFIG_ERR_SIZE, 200, 64, 1};
    static const size_t counts[] = {3, 300, 1500};
    char small[CONFIG_ERR_SIZE];
    size_t cap = 1500 * 16, len;
    char *yaml = malloc(cap);

    (void)state;
    assert_non_null(yaml);
    for (size_t c = 0; c < N(counts); c++) {
        len = 0;
        for (size_t i = 0; i < counts[c]; i++)
            len += (size_t)snprintf(yaml + len, cap - len, "k%zu: 1\n", i);
        for (size_t s = 0; s < N(errlens); s++) {
            size_t lines = 0, more = 0;
            const char *p;

            memset(small, 'x', sizeof(small));
            assert_null(config_parse("t.yaml", yaml, len, small, errlens[s]));
            assert_int_equal(small[strlen(small)], '\0');
            assert_true(strlen(small) < errlens[s]);
            if (errlens[s] < 64)
                continue;
            for (p = small; (p = strstr(p, "unknown key")) != NULL; p++)
                lines++;
            if ((p = strstr(small, "... and ")) != NULL) {
                more = strtoul(p + 8, NULL, 10);
                assert_string_equal(strstr(p, " more errors\n"), " more errors\n");
            }
            assert_int_equal(lines + more, counts[c]);
            assert_true(small[strlen(small) - 1] == '\n');
        }
    }
    free(yaml);
}

/* A growing text buffer for the generated configs below. */
struct text {
    char *p;
    size_t len, cap;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
text_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        assert_non_null(t->p);
    }
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void
text_repeat(struct text *t, const char *s, size_t times)
{
    for (size_t i = 0; i < times; i++)
        text_add(t, "%s", s);
}

/* Parses t as "t.yaml" and checks the errors are exactly want (without "t.yaml:"). */
static void
assert_parse_errors(const struct text *t, const char *want)
{
    char full[4 * CONFIG_ERR_SIZE];
    struct config *cfg = config_parse("t.yaml", t->p, t->len, err, sizeof(err));

    prefix_lines(full, sizeof(full), "t.yaml", want);
    if (cfg != NULL || strcmp(err, full) != 0) {
        print_error("want:\n%sgot:\n%s\n", full, err);
        config_unref(cfg);
        fail();
    }
}

/*
 * Regression: 4 MB of '[' kept portier -t busy for minutes (libyaml's scanner slows down with
 * every open level). The 65th level is refused at once, before a tree is built, wherever it is.
 */
static void
test_nesting_limit(void **state)
{
    struct text t = {0};

    (void)state;
    text_repeat(&t, "[", 4 * 1024 * 1024);
    assert_parse_errors(&t, "1:65: YAML: nested deeper than 64 levels\n");
    t.len = 0;
    text_repeat(&t, "{a: ", 1024 * 1024);
    assert_parse_errors(&t, "1:257: YAML: nested deeper than 64 levels\n");
    t.len = 0;
    for (int i = 0; i < 3000; i++)
        text_add(&t, "%*sa:\n", i, "");
    assert_parse_errors(&t, "65:65: YAML: nested deeper than 64 levels\n");
    t.len = 0;
    for (int i = 0; i < 100; i++)
        text_add(&t, "%*s-\n", i, "");
    assert_parse_errors(&t, "65:65: YAML: nested deeper than 64 levels\n");
    t.len = 0;
    text_add(&t, "services:\n  s:\n    servers: [{a: ");
    text_repeat(&t, "[", 100);
    assert_parse_errors(&t, "3:78: YAML: nested deeper than 64 levels\n");
    /* 64 levels are fine as far as depth goes. */
    t.len = 0;
    text_repeat(&t, "[", 64);
    text_repeat(&t, "]", 64);
    assert_parse_errors(&t, "1:1: the config must be a mapping of keys (listen, routes, services, "
                            "...), not a list\n");
    /* Past the limit in a second document is refused too: the first pass reads them all. */
    t.len = 0;
    text_add(&t, "workers: 1\n---\n");
    text_repeat(&t, "[", 65);
    assert_parse_errors(&t, "3:65: YAML: nested deeper than 64 levels\n");
    free(t.p);
}

/* Anchors are counted and aliases weighed before libyaml's loader (anchors x aliases) runs. */
static void
test_anchor_limits(void **state)
{
    struct text t = {0};
    struct config *cfg;

    (void)state;
    text_add(&t, "x:\n");
    for (int i = 0; i < 100; i++)
        text_add(&t, "  - &a%d 1\n", i);
    text_add(&t, "y: [*a0, *a99]\n");
    assert_parse_errors(&t, "1:1: unknown key \"x\" in config\n102:1: unknown key \"y\" in "
                            "config\n");
    t.len = 0;
    text_add(&t, "x:\n");
    for (int i = 0; i < 40000; i++)
        text_add(&t, "  - &a%d 1\n", i);
    for (int i = 0; i < 40000; i++)
        text_add(&t, "  - *a%d\n", i);
    assert_parse_errors(&t, "102:5: YAML: more than 100 anchors (&name)\n");
    /* Anchors count per document. */
    t.len = 0;
    for (int d = 0; d < 3; d++) {
        text_add(&t, "---\nx:\n");
        for (int i = 0; i < 60; i++)
            text_add(&t, "  - &a%d 1\n", i);
    }
    assert_parse_errors(&t, "2:1: unknown key \"x\" in config\n64:1: only one YAML document is "
                            "allowed\n");
    /* Billion laughs: nine levels of ten aliases each. Before line 6 come 123,470 nodes, and
     * each alias of a4 repeats 111,111: a5's 9th passes 1,048,576. */
    t.len = 0;
    text_add(&t, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++) {
        text_add(&t, "a%d: &a%d [", i, i);
        for (int j = 0; j < 10; j++)
            text_add(&t, "%s*a%d", j > 0 ? ", " : "", i - 1);
        text_add(&t, "]\n");
    }
    assert_parse_errors(&t, "6:50: YAML: aliases expand the document past 1048576 nodes\n");
    /* Aliases that repeat a little are YAML as usual. */
    t.len = 0;
    text_add(&t, "services:\n  a: {servers: [\"10.0.0.1:80\"], health_check: &h {path: /h}}\n"
                 "  b: {dns: \"b.local:80\", health_check: *h}\n"
                 "routes: [{host: a.com, service: a}, &r {host: b.com, service: b}]\n"
                 "x: [*r, *r]\n");
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_null(cfg);
    assert_string_equal(err, "t.yaml:5:1: unknown key \"x\" in config\n");
    t.len -= strlen("x: [*r, *r]\n");
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_string_equal(cfg->services[1].health.path, "/h");
    config_unref(cfg);
    free(t.p);
}

/* Files are read up to 1 MiB, a ConfigMap's size; past that nothing is parsed. */
static void
test_file_size_limit(void **state)
{
    char path[] = "/tmp/test_config.XXXXXX", want[256];
    struct text t = {0};
    struct config *cfg;
    int fd;

    (void)state;
    text_add(&t, "workers: 3\n");
    while (t.len < CONFIG_MAX_FILE_BYTES - 1)
        text_add(&t, "#");
    text_add(&t, "\n");
    assert_int_equal(t.len, CONFIG_MAX_FILE_BYTES);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t.p, t.len), (ssize_t)t.len);
    cfg = config_load(path, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->workers, 3);
    config_unref(cfg);
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    assert_null(config_load(path, err, sizeof(err)));
    snprintf(want, sizeof(want),
             "%s: larger than 1 MiB (1048576 bytes), the most a config may be\n", path);
    assert_string_equal(err, want);
    unlink(path);
    free(t.p);
}

/* 63 bytes: the longest DNS label. */
#define LABEL_63 "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz"

/* Lists past what a start could use, and strings past what their consumers hold. */
static void
test_count_and_length_limits(void **state)
{
    char want[512];
    struct text t = {0};
    struct config *cfg;

    (void)state;
    /* Regression: 65 servers passed portier -t, and a start failed without FILE:LINE. */
    text_add(&t, "services:\n  s:\n    servers:\n");
    for (int i = 1; i <= 65; i++)
        text_add(&t, "      - \"10.0.0.1:%d\"\n", i);
    assert_parse_errors(&t, "68:9: servers: more than 64 servers in one service\n");
    t.len = 0;
    text_add(&t, "listen:\n");
    for (int i = 1; i <= 257; i++)
        text_add(&t, "  - address: \"127.0.0.1:%d\"\n", i);
    assert_parse_errors(&t, "258:5: listen: more than 256 listeners\n");
    t.len -= strlen("  - address: \"127.0.0.1:257\"\n");
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->nlisteners, 256);
    config_unref(cfg);

    /* log.c holds the access log's path in 4096 bytes. */
    t.len = 0;
    text_add(&t, "access_log: /");
    text_repeat(&t, "a", 4094);
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(strlen(cfg->access_log_path), 4095);
    config_unref(cfg);
    text_add(&t, "a");
    assert_parse_errors(&t, "1:13: access_log: longer than 4095 bytes\n");

    t.len = 0;
    text_add(&t, "services:\n  s:\n    servers: [\"10.0.0.1:80\"]\n    health_check:\n"
                 "      path: /");
    text_repeat(&t, "h", 1023);
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(strlen(cfg->services[0].health.path), 1024);
    config_unref(cfg);
    text_add(&t, "h");
    assert_parse_errors(&t, "5:13: path: longer than 1024 bytes\n");

    /* An object's name is at most 253 bytes, a namespace's 63. */
    t.len = 0;
    text_add(&t, "kubernetes:\n  namespaces: [%s]\n  ingress_class: ", LABEL_63);
    for (int i = 0; i < 4; i++)
        text_add(&t, "%s%.*s", i > 0 ? "." : "", i < 3 ? 63 : 61, LABEL_63);
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(strlen(cfg->kubernetes.namespaces[0]), 63);
    assert_int_equal(strlen(cfg->kubernetes.ingress_class), 253);
    config_unref(cfg);
    text_add(&t, "c");
    snprintf(want, sizeof(want),
             "3:18: kubernetes.ingress_class: \"%s\" is not a DNS-1123 subdomain (at most 253 "
             "lowercase letters, digits, '-' and '.', each label starting and ending with a letter "
             "or digit)\n",
             t.p + t.len - 254);
    assert_parse_errors(&t, want);
    t.len = 0;
    text_add(&t, "kubernetes:\n  namespaces: [%sx]\n", LABEL_63);
    assert_parse_errors(&t, "2:16: kubernetes.namespaces: \"" LABEL_63
                            "x\" is not a DNS-1123 label (1 to 63 lowercase letters, digits and "
                            "'-', starting and ending with a letter or digit)\n");
    free(t.p);
}

/*
 * Regression: duplicates were found by comparing each route or service with every one before it,
 * and routes looked their service up one by one (44,000 services: 14 s). Sorted now.
 */
static void
test_many_routes_and_services(void **state)
{
    struct text t = {0};
    struct config *cfg;

    (void)state;
    text_add(&t, "services:\n");
    for (int i = 0; i < 40000; i++)
        text_add(&t, "  s%d: {dns: \"s%d.local:80\"}\n", i, i);
    text_add(&t, "routes:\n");
    for (int i = 0; i < 30000; i++)
        text_add(&t, "  - {host: h%d.com, path: /%d, service: s%d}\n", i % 100, i, 39999 - i);
    cfg = config_parse("t.yaml", t.p, t.len, err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(cfg->nroutes, 30000);
    assert_int_equal(cfg->routes[29999].service, 10000);
    assert_string_equal(cfg->services[cfg->routes[0].service].name, "s39999");
    config_unref(cfg);

    /* The same with duplicates: each later one is named, in file order. */
    t.len = 0;
    text_add(&t, "services:\n");
    for (int i = 0; i < 40000; i++)
        text_add(&t, "  s%d: {dns: \"s.local:80\"}\n", i % 39999);
    text_add(&t, "routes:\n");
    for (int i = 0; i < 30000; i++)
        text_add(&t, "  - {host: h.com, path: /%d%s, service: s1}\n", i % 29999,
                 i < 29999 ? "" : "/");
    assert_parse_errors(&t, "40001:3: duplicate service \"s0\"\n"
                            "70002:12: routes: host \"h.com\" with path \"/0/\" is already "
                            "routed (as \"/0\": a trailing '/' makes no difference)\n");
    free(t.p);
}

static void
test_refcount(void **state)
{
    struct config *cfg;

    (void)state;
    cfg = config_parse("t.yaml", "workers: 2\n", 11, err, sizeof(err));
    assert_non_null(cfg);
    assert_ptr_equal(config_ref(cfg), cfg);
    config_ref(cfg);
    config_unref(cfg);
    config_unref(cfg);
    assert_int_equal(cfg->workers, 2); /* still held once; ASan would catch a use after free */
    config_unref(cfg);
    config_unref(NULL);
}

static void
test_service_index(void **state)
{
    static const char yaml[] =
        "services: {a: {servers: [\"10.0.0.1:80\"]}, B: {dns: \"b.local:80\"}}\n";
    struct config *cfg;

    (void)state;
    cfg = config_parse("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    assert_non_null(cfg);
    assert_int_equal(config_service_index(cfg, "a"), 0);
    assert_int_equal(config_service_index(cfg, "B"), 1);
    assert_int_equal(config_service_index(cfg, "b"), -1);
    assert_int_equal(config_service_index(cfg, ""), -1);
    config_unref(cfg);
}

struct restart_case {
    const char *old, *new;
    int want;
    const char *what;
};

static const struct restart_case restart_cases[] = {
    {"", "", 0, ""},
    {"", "listen: [{address: \"0.0.0.0:80\"}]\nroutes: []\ntimeouts: {client_idle: 1s}\n", 0, ""},
    {"listen: [{address: \":80\"}, {address: \":81\"}]\n",
     "listen: [{address: \":81\"}, {address: \"0.0.0.0:80\"}]\n", 0, ""},
    {"workers: auto\n", "workers: 4\n", 1, "workers"},
    {"", "admin: \"127.0.0.1:9180\"\n", 1, "admin"},
    {"admin: \"127.0.0.1:9180\"\n", "admin: \"127.0.0.1:9181\"\n", 1, "admin"},
    {"admin: \"127.0.0.1:9180\"\n", "admin: \"127.0.0.1:9180\"\nworkers: 2\n", 1, "workers"},
    {"", "listen: [{address: \":8080\"}]\n", 1, "listen"},
    {"listen: [{address: \":80\"}]\n", "listen: [{address: \":80\"}, {address: \":81\"}]\n", 1,
     "listen"},
    {"listen: [{address: \":443\"}]\n",
     "listen: [{address: \":443\", tls: true}]\ntls: {certificates: [{cert: c, key: k}]}\n", 1,
     "listen"},
    {"", "listen: [{address: \":81\"}]\nworkers: 3\nadmin: \"127.0.0.1:1\"\n", 1,
     "listen, workers, admin"},
    {"", "listen: [{address: \":81\"}]\nadmin: \"127.0.0.1:1\"\n", 1, "listen, admin"},
    /* The provider's watches are opened at start; its ingress class applies to the next change. */
    {"", "kubernetes: {}\n", 1, "kubernetes"},
    {"", "kubernetes:\n", 1, "kubernetes"},
    {"kubernetes: {}\n", "kubernetes: {ingress_class: nginx}\n", 0, ""},
    {"kubernetes: {}\n", "kubernetes: {namespaces: []}\n", 0, ""},
    {"kubernetes: {namespaces: [a, b]}\n", "kubernetes: {namespaces: [b, a]}\n", 0, ""},
    {"kubernetes: {namespaces: [a, b]}\n", "kubernetes: {namespaces: [a]}\n", 1, "kubernetes"},
    {"kubernetes: {namespaces: [a, b]}\n", "kubernetes: {namespaces: [a, c]}\n", 1, "kubernetes"},
    {"kubernetes: {}\n", "kubernetes: {namespaces: [a]}\n", 1, "kubernetes"},
    {"kubernetes: {server: \"https://10.0.0.1:443\"}\n",
     "kubernetes: {server: \"https://10.0.0.1:443\", ingress_class: b}\n", 0, ""},
    {"kubernetes: {}\n", "kubernetes: {server: \"https://10.0.0.1:443\"}\n", 1, "kubernetes"},
    {"kubernetes: {server: \"https://10.0.0.1:443\"}\n",
     "kubernetes: {server: \"https://10.0.0.2:443\"}\n", 1, "kubernetes"},
    {"kubernetes: {}\n", "kubernetes: {token_file: /t}\n", 1, "kubernetes"},
    {"kubernetes: {token_file: /t}\n", "kubernetes: {token_file: /u}\n", 1, "kubernetes"},
    {"kubernetes: {}\n", "kubernetes: {ca_file: /c}\n", 1, "kubernetes"},
    {"kubernetes: {ca_file: /c}\n", "kubernetes: {ca_file: /d}\n", 1, "kubernetes"},
    {"workers: 2\nkubernetes: {}\n", "", 1, "workers, kubernetes"},
    {"", "listen: [{address: \":81\"}]\nworkers: 3\nadmin: \"127.0.0.1:1\"\nkubernetes: {}\n", 1,
     "listen, workers, admin, kubernetes"},
};

static void
test_needs_restart(void **state)
{
    char what[64];

    (void)state;
    for (size_t i = 0; i < N(restart_cases); i++) {
        const struct restart_case *c = &restart_cases[i];
        struct config *a = config_parse("old", c->old, strlen(c->old), err, sizeof(err));
        struct config *b = config_parse("new", c->new, strlen(c->new), err, sizeof(err));

        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(config_needs_restart(a, b, what, sizeof(what)), c->want);
        assert_string_equal(what, c->what);
        assert_int_equal(config_needs_restart(b, a, what, sizeof(what)), c->want);
        assert_string_equal(what, c->what);
        /* A short buffer holds what fits. */
        assert_int_equal(config_needs_restart(a, b, what, 9), c->want);
        assert_true(strlen(what) < 9 && strncmp(what, c->what, strlen(what)) == 0);
        config_unref(a);
        config_unref(b);
    }
}

/* Providers' additions: a config_extra built as a provider builds one, every string owned. */

static char *
xstrdup(const char *s)
{
    char *p;

    if (s == NULL)
        return NULL;
    p = strdup(s);
    assert_non_null(p);
    return p;
}

/* Makes room for one more zeroed item at the end of the array p of n. */
static void *
grow(void *p, size_t n, size_t size)
{
    p = realloc(p, (n + 1) * size);
    assert_non_null(p);
    memset((char *)p + n * size, 0, size);
    return p;
}

/* Adds a provider's service; servers is a space-separated list of addresses, maybe empty. */
static size_t
extra_service(struct config_extra *x, const char *name, const char *servers)
{
    struct config_service *svc;
    char list[256], msg[256], *save = NULL;

    x->services = grow(x->services, x->nservices, sizeof(*x->services));
    svc = &x->services[x->nservices];
    svc->name = xstrdup(name);
    svc->kube = true;
    snprintf(list, sizeof(list), "%s", servers);
    for (char *t = strtok_r(list, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
        struct config_addr *a;
        svc->servers = grow(svc->servers, svc->nservers, sizeof(*svc->servers));
        a = &svc->servers[svc->nservers++];
        assert_int_equal(addr_parse(t, &a->ss, &a->len, msg, sizeof(msg)), 0);
        a->spec = xstrdup(t);
    }
    return x->nservices++;
}

/* Adds a route; host NULL matches any host, and a wildcard matches one label (Kubernetes'). */
static void
extra_route(struct config_extra *x, const char *host, const char *path, bool exact, size_t service)
{
    struct config_route *r;

    x->routes = grow(x->routes, x->nroutes, sizeof(*x->routes));
    r = &x->routes[x->nroutes++];
    r->host = xstrdup(host);
    r->wildcard = r->one_label = host != NULL && host[0] == '*';
    r->path = xstrdup(path);
    r->exact = exact;
    r->service = service;
    r->service_name = xstrdup(x->services[service].name);
}

static void
extra_cert(struct config_extra *x, const char *name, const char *cert_pem, const char *key_pem)
{
    struct config_cert *c;

    x->certs = grow(x->certs, x->ncerts, sizeof(*x->certs));
    c = &x->certs[x->ncerts++];
    c->cert = xstrdup(name);
    c->key = xstrdup(name);
    c->cert_pem = xstrdup(cert_pem);
    c->key_pem = xstrdup(key_pem);
}

static void
assert_dump_contains(const struct config *cfg, const char *block)
{
    char got[8192];

    dump(cfg, got, sizeof(got));
    if (strstr(got, block) == NULL) {
        print_error("no\n%sin%s", block, got);
        fail();
    }
}

/* A file's config using every key, to be copied. */
static const char extend_base[] =
    "listen: [{address: \":80\"}, {address: \"[::]:443\", tls: true}]\n"
    "admin: \"127.0.0.1:9180\"\n"
    "workers: 3\n"
    "tls: {certificates: [{cert: a.crt, key: a.key}]}\n"
    "routes:\n"
    "  - {host: a.com, path: /api, service: s1}\n"
    "  - {host: \"*.b.com\", service: s2, redirect_https: true, hsts: 1d}\n"
    "services:\n"
    "  s1: {servers: [\"10.0.0.1:80\", \"[fd00::1]:8080\"]}\n"
    "  s2: {dns: \"s2.local:80\", health_check: {path: /h, interval: 1s}}\n"
    "resolvers: [10.0.0.53]\n"
    "trusted_proxies: [10.0.0.0/8]\n"
    "timeouts: {client_idle: 5s, tls_handshake: 3s, shutdown_grace: 0s}\n"
    "limits: {max_body_bytes: 1m, max_connections: 50}\n"
    "access_log: /var/log/a.log\n"
    "access_log_format: json\n"
    "kubernetes:\n"
    "  ingress_class: web\n"
    "  namespaces: [apps, web]\n"
    "  server: \"https://10.96.0.1:443\"\n"
    "  token_file: /t\n"
    "  ca_file: /c\n";

/* With nothing to add, the copy is base, and outlives it. */
static void
test_extend_copies_base(void **state)
{
    struct config_extra none = {.default_service = -1};
    struct config *base, *ext;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    char want[8192], got[8192], what[64];

    (void)state;
    base = config_parse("t.yaml", extend_base, strlen(extend_base), err, sizeof(err));
    assert_non_null(base);
    strcpy(err, "x");
    ext = config_extend(base, &none, err, sizeof(err));
    assert_non_null(ext);
    assert_string_equal(err, "");
    dump(base, want, sizeof(want));
    assert_true(strstr(want, "kubernetes web at 17:1\n  namespaces apps web\n") != NULL);
    assert_ptr_not_equal(ext->routes, base->routes);
    assert_ptr_not_equal(ext->services[0].servers, base->services[0].servers);
    assert_ptr_not_equal(ext->kubernetes.namespaces, base->kubernetes.namespaces);
    assert_int_equal(ext->listeners[1].tls_line, base->listeners[1].tls_line);
    assert_int_equal(ext->certs[0].key_col, base->certs[0].key_col);
    assert_int_equal(config_needs_restart(base, ext, what, sizeof(what)), 0);
    config_unref(base);
    /* Read after base is gone: ASan finds anything still shared. */
    dump(ext, got, sizeof(got));
    assert_string_equal(got, want);
    assert_string_equal(ext->path, "t.yaml");
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    assert_true(config_trusted_proxy(ext, (const struct sockaddr *)&sin));
    assert_int_equal(config_service_index(ext, "s2"), 1);
    assert_int_equal(ext->services[1].dns_port, 80);
    assert_string_equal(ext->services[1].dns_name, "s2.local");
    assert_int_equal(ext->listeners[1].addr.len, sizeof(struct sockaddr_in6));
    config_ref(ext);
    config_unref(ext);
    config_unref(ext);

    /* A config with nothing optional: NULL arrays copy as NULL. */
    base = config_parse("u.yaml", "", 0, err, sizeof(err));
    assert_non_null(base);
    ext = config_extend(base, &none, err, sizeof(err));
    assert_non_null(ext);
    dump(base, want, sizeof(want));
    config_unref(base);
    dump(ext, got, sizeof(got));
    assert_string_equal(got, want);
    assert_null(ext->admin);
    assert_null(ext->routes);
    assert_null(ext->kubernetes.ingress_class);
    config_unref(ext);
}

/* x's after base's, x's indexes moved; a route the file has already is the file's. */
static void
test_extend_adds(void **state)
{
    struct config_extra x = {.default_service = -1};
    struct config *base, *ext;
    size_t web, api;

    (void)state;
    web = extra_service(&x, "apps/web:80", "10.1.0.1:8080 [fd00::2]:8080");
    api = extra_service(&x, "apps/api:http", "");
    extra_route(&x, "a.com", "/api/", false, api); /* the file's /api */
    extra_route(&x, "a.com", "/api", true, web);   /* Exact: not the file's prefix */
    extra_route(&x, NULL, "/", false, api);
    extra_route(&x, "*.b.com", "/", false, web); /* the file's, one label or not */
    extra_route(&x, "*.b.com", "/x", false, web);
    extra_route(&x, NULL, "/", false, web);     /* twice in x: the first wins */
    extra_route(&x, "c.com", "/x/", true, web); /* Exact paths as written */
    extra_route(&x, "c.com", "/x", true, api);
    extra_route(&x, "c.com", "/x//", false, web);
    extra_route(&x, "c.com", "/x", false, api); /* twice in x, as the router compares prefixes */
    extra_cert(&x, "secret apps/tls", "CERT", "KEY");
    x.default_service = (int)api;

    base = config_parse("t.yaml", extend_base, strlen(extend_base), err, sizeof(err));
    assert_non_null(base);
    ext = config_extend(base, &x, err, sizeof(err));
    config_unref(base);
    config_extra_free(&x);
    assert_non_null(ext);
    assert_string_equal(err,
                        "t.yaml: kubernetes route (any host) / is there twice; the first wins\n"
                        "t.yaml: kubernetes route *.b.com / is also in the file; the file's wins\n"
                        "t.yaml: kubernetes route a.com /api/ is also in the file; the file's "
                        "wins\n"
                        "t.yaml: kubernetes route c.com /x is there twice; the first wins\n");
    assert_int_equal(ext->nroutes, 8);
    assert_int_equal(ext->nservices, 4);
    assert_int_equal(ext->ncerts, 2);
    assert_dump_contains(ext, "cert a.crt a.key\ncert secret apps/tls secret apps/tls pem CERT "
                              "KEY\n");
    assert_dump_contains(ext, "route a.com /api -> 0 s1\n"
                              "route *.b.com / -> 1 s2 wildcard redirect_https hsts=86400000\n"
                              "route a.com /api -> 2 apps/web:80 exact\n"
                              "route (any) / -> 3 apps/api:http\n"
                              "route *.b.com /x -> 2 apps/web:80 wildcard one_label\n"
                              "route c.com /x/ -> 2 apps/web:80 exact\n"
                              "route c.com /x -> 3 apps/api:http exact\n"
                              "route c.com /x// -> 2 apps/web:80\n"
                              "default_service 3\n"
                              "service s1\n");
    assert_dump_contains(ext, "service apps/web:80 kube\n"
                              "  server 10.1.0.1:8080 = 10.1.0.1 8080\n"
                              "  server [fd00::2]:8080 = fd00::2 8080\n"
                              "service apps/api:http kube\n"
                              "resolver ");
    assert_null(ext->services[3].servers);
    assert_int_equal(config_service_index(ext, "apps/api:http"), 3);
    config_unref(ext);
}

static void
test_extend_default_service(void **state)
{
    static const char with[] = "services: {a: {servers: [\"10.0.0.1:80\"]}, "
                               "b: {servers: [\"10.0.0.2:80\"]}}\ndefault_service: b\n";
    static const char without[] = "services: {a: {servers: [\"10.0.0.1:80\"]}}\n";
    struct config_extra x = {.default_service = -1};
    struct config *base, *ext;

    (void)state;
    extra_service(&x, "ns/s:80", "10.1.0.1:80");
    extra_service(&x, "ns/t:80", "");

    /* The file's default_service wins over an Ingress's defaultBackend. */
    x.default_service = 0;
    base = config_parse("t.yaml", with, strlen(with), err, sizeof(err));
    assert_non_null(base);
    ext = config_extend(base, &x, err, sizeof(err));
    assert_non_null(ext);
    assert_int_equal(ext->default_service, 1);
    config_unref(ext);
    config_unref(base);

    /* Without one, x's, past the file's services. */
    x.default_service = 1;
    base = config_parse("t.yaml", without, strlen(without), err, sizeof(err));
    assert_non_null(base);
    ext = config_extend(base, &x, err, sizeof(err));
    assert_non_null(ext);
    assert_int_equal(ext->default_service, 2);
    assert_string_equal(ext->services[ext->default_service].name, "ns/t:80");
    config_unref(ext);

    /* Neither: none. */
    x.default_service = -1;
    ext = config_extend(base, &x, err, sizeof(err));
    assert_non_null(ext);
    assert_int_equal(ext->default_service, -1);
    assert_int_equal(ext->nservices, 3);
    assert_int_equal(ext->nroutes, 0);
    config_unref(ext);
    config_unref(base);
    config_extra_free(&x);
}

/* Every field config_extra_equal() compares, changed one at a time, and put back. */
#define DIFFERS(change, restore)                                                                   \
    do {                                                                                           \
        change;                                                                                    \
        assert_false(config_extra_equal(&a, &b));                                                  \
        assert_false(config_extra_equal(&b, &a));                                                  \
        restore;                                                                                   \
        assert_true(config_extra_equal(&a, &b));                                                   \
    } while (0)
#define DIFFERS_STR(field, value)                                                                  \
    do {                                                                                           \
        char *saved_ = (field);                                                                    \
        DIFFERS((field) = (char *)(value), (field) = saved_);                                      \
    } while (0)

static void
extra_sample(struct config_extra *x)
{
    size_t s0, s1;

    memset(x, 0, sizeof(*x));
    s0 = extra_service(x, "ns/a:80", "10.0.0.1:80 [fd00::1]:80");
    s1 = extra_service(x, "ns/b:http", "");
    extra_route(x, "a.com", "/", false, s0);
    extra_route(x, NULL, "/x", true, s1);
    extra_route(x, "*.a.com", "/", false, s1);
    extra_cert(x, "secret ns/t", "CERT", "KEY");
    extra_cert(x, "secret ns/u", NULL, NULL);
    x->default_service = 1;
}

static void
test_extra_equal(void **state)
{
    struct config_extra a, b, zero = {0}, zero2 = {0};
    struct sockaddr_in *sin;

    (void)state;
    assert_true(config_extra_equal(&zero, &zero2));
    extra_sample(&a);
    extra_sample(&b);
    assert_true(config_extra_equal(&a, &b));
    assert_false(config_extra_equal(&a, &zero));

    DIFFERS(b.nroutes--, b.nroutes++);
    DIFFERS(b.nservices--, b.nservices++);
    DIFFERS(b.ncerts--, b.ncerts++);
    DIFFERS(b.default_service = -1, b.default_service = 1);

    DIFFERS_STR(b.routes[0].host, "b.com");
    DIFFERS_STR(b.routes[0].host, NULL);
    DIFFERS_STR(b.routes[1].host, "a.com");
    DIFFERS(b.routes[2].wildcard = false, b.routes[2].wildcard = true);
    DIFFERS(b.routes[2].one_label = false, b.routes[2].one_label = true);
    DIFFERS_STR(b.routes[0].path, "/a");
    DIFFERS(b.routes[1].exact = false, b.routes[1].exact = true);
    DIFFERS(b.routes[0].service = 1, b.routes[0].service = 0);
    DIFFERS(b.routes[0].redirect_https = true, b.routes[0].redirect_https = false);
    DIFFERS(b.routes[0].hsts_ms = 1, b.routes[0].hsts_ms = 0);

    DIFFERS_STR(b.services[0].name, "ns/c:80");
    DIFFERS(b.services[1].kube = false, b.services[1].kube = true);
    DIFFERS(b.services[0].nservers--, b.services[0].nservers++);
    sin = (struct sockaddr_in *)&b.services[0].servers[0].ss;
    DIFFERS(sin->sin_port ^= 1, sin->sin_port ^= 1);
    DIFFERS(sin->sin_addr.s_addr ^= 1, sin->sin_addr.s_addr ^= 1);
    DIFFERS(b.services[0].servers[1].ss.ss_family = AF_INET,
            b.services[0].servers[1].ss.ss_family = AF_INET6);
    DIFFERS(b.services[0].servers[0].len--, b.services[0].servers[0].len++);
    DIFFERS_STR(b.services[1].dns, "b.local:80");
    DIFFERS_STR(b.services[1].health.path, "/h");

    DIFFERS_STR(b.certs[0].cert, "secret ns/v");
    DIFFERS_STR(b.certs[0].key, "secret ns/v");
    DIFFERS_STR(b.certs[0].cert_pem, "CERT2");
    DIFFERS_STR(b.certs[0].key_pem, NULL);
    DIFFERS_STR(b.certs[1].cert_pem, "CERT");
    DIFFERS_STR(b.certs[1].key_pem, "KEY");

    config_extra_free(&a);
    config_extra_free(&b);
    assert_true(config_extra_equal(&a, &zero));
    assert_int_equal(b.default_service, 0);
    assert_null(b.routes);
    /* A zeroed one, and NULL, free as nothing. */
    config_extra_free(&zero);
    config_extra_free(NULL);
}

struct trust_case {
    const char *ip;
    bool want;
};

static const struct trust_case trust_cases[] = {
    {"10.1.2.3", true},
    {"11.0.0.1", false},
    {"192.168.1.200", true},
    {"192.168.2.1", false},
    {"127.0.0.1", true},
    {"127.0.0.2", false},
    {"::1", true},
    {"::2", false},
    {"fd00::1234", true},
    {"fe00::1", false},
    {"::ffff:10.9.9.9", true},
    {"::ffff:11.0.0.1", false},
    {"2001:db8:7fff::1", true},
    {"2001:db8:8000::1", false},
};

static void
test_trusted_proxy(void **state)
{
    static const char yaml[] = "trusted_proxies: [10.0.0.0/8, 192.168.1.0/24, 127.0.0.1, "
                               "\"::1\", \"fd00::/8\", \"2001:db8::/33\"]\n";
    struct config *cfg, *none;

    (void)state;
    cfg = config_parse("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    none = config_parse("t.yaml", "", 0, err, sizeof(err));
    assert_non_null(cfg);
    assert_non_null(none);
    for (size_t i = 0; i < N(trust_cases); i++) {
        struct sockaddr_storage ss = {0};
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        if (inet_pton(AF_INET, trust_cases[i].ip, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
        } else {
            assert_int_equal(inet_pton(AF_INET6, trust_cases[i].ip, &sin6->sin6_addr), 1);
            sin6->sin6_family = AF_INET6;
        }
        if (config_trusted_proxy(cfg, (struct sockaddr *)&ss) != trust_cases[i].want)
            print_error("trust case %s\n", trust_cases[i].ip);
        assert_int_equal(config_trusted_proxy(cfg, (struct sockaddr *)&ss), trust_cases[i].want);
        assert_false(config_trusted_proxy(none, (struct sockaddr *)&ss));
    }
    config_unref(cfg);
    config_unref(none);
}

/* util.c */

struct parse_case {
    const char *in;
    int rc;
    uint64_t want;
    const char *err;
};

static const struct parse_case durations[] = {
    {"500ms", 0, 500, NULL},
    {"10s", 0, 10000, NULL},
    {"2m", 0, 120000, NULL},
    {"1h", 0, 3600000, NULL},
    {"0s", 0, 0, NULL},
    {"007s", 0, 7000, NULL},
    {"18446744073709551615ms", 0, UINT64_MAX, NULL},
    {"18446744073709551616ms", -1, 0, "\"18446744073709551616ms\" is too long a duration"},
    {"18446744073709552s", -1, 0, "\"18446744073709552s\" is too long a duration"},
    {"5124095576030432h", -1, 0, "\"5124095576030432h\" is too long a duration"},
    {"10", -1, 0, "\"10\" is not a duration (a whole number followed by ms, s, m, h, d or y)"},
    {"", -1, 0, "\"\" is not a duration (a whole number followed by ms, s, m, h, d or y)"},
    {"s", -1, 0, "\"s\" is not a duration (a whole number followed by ms, s, m, h, d or y)"},
    {"1.5s", -1, 0, NULL},
    {"-1s", -1, 0, NULL},
    {"+1s", -1, 0, NULL},
    {" 1s", -1, 0, NULL},
    {"1s ", -1, 0, NULL},
    {"1 s", -1, 0, NULL},
    {"1S", -1, 0, NULL},
    {"2d", 0, 172800000, NULL},
    {"1y", 0, 31536000000, NULL},
    {"584942418y", -1, 0, "\"584942418y\" is too long a duration"},
    {"1w", -1, 0, NULL},
    {"1us", -1, 0, NULL},
    {"1m30s", -1, 0, NULL},
    {"99999999999999999999999x", -1, 0, NULL},
};

static const struct parse_case sizes[] = {
    {"16384", 0, 16384, NULL},
    {"0", 0, 0, NULL},
    {"16k", 0, 16384, NULL},
    {"16K", 0, 16384, NULL},
    {"1m", 0, 1048576, NULL},
    {"1G", 0, 1073741824, NULL},
    {"18446744073709551615", 0, UINT64_MAX, NULL},
    {"17179869183g", 0, 17179869183ull << 30, NULL},
    {"18446744073709551616", -1, 0, "\"18446744073709551616\" is too large a size"},
    {"17179869184g", -1, 0, "\"17179869184g\" is too large a size"},
    {"18014398509481984k", -1, 0, "\"18014398509481984k\" is too large a size"},
    {"", -1, 0, "\"\" is not a size (a whole number of bytes, optionally followed by k, m or g)"},
    {"k", -1, 0, NULL},
    {"16kb", -1, 0, NULL},
    {"16t", -1, 0, NULL},
    {"1.5m", -1, 0, NULL},
    {"-1", -1, 0, NULL},
    {"16 k", -1, 0, NULL},
};

static const struct parse_case uints[] = {
    {"0", 0, 0, NULL},
    {"256", 0, 256, NULL},
    {"257", -1, 0, "\"257\" is larger than 256"},
    {"99999999999999999999", -1, 0, "\"99999999999999999999\" is larger than 256"},
    {"", -1, 0, "\"\" is not a whole number"},
    {"1k", -1, 0, "\"1k\" is not a whole number"},
    {"-1", -1, 0, NULL},
};

static void
check_parse(const struct parse_case *cases, size_t n,
            int (*fn)(const char *, uint64_t *, char *, size_t), const char *what)
{
    char msg[256];

    for (size_t i = 0; i < n; i++) {
        uint64_t v = 12345;
        int rc = fn(cases[i].in, &v, msg, sizeof(msg));

        if (rc != cases[i].rc)
            print_error("%s \"%s\": rc %d\n", what, cases[i].in, rc);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0)
            assert_true(v == cases[i].want);
        else if (cases[i].err != NULL)
            assert_string_equal(msg, cases[i].err);
    }
}

static int
uint_max_256(const char *s, uint64_t *v, char *msg, size_t len)
{
    return util_parse_uint(s, 256, v, msg, len);
}

static void
test_util_durations(void **state)
{
    (void)state;
    check_parse(durations, N(durations), util_parse_duration, "duration");
}

static void
test_util_sizes(void **state)
{
    (void)state;
    check_parse(sizes, N(sizes), util_parse_size, "size");
}

static void
test_util_uints(void **state)
{
    (void)state;
    check_parse(uints, N(uints), uint_max_256, "uint");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_local_yaml_loads),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_error_overflow),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_service_index),
        cmocka_unit_test(test_needs_restart),
        cmocka_unit_test(test_extend_copies_base),
        cmocka_unit_test(test_extend_adds),
        cmocka_unit_test(test_extend_default_service),
        cmocka_unit_test(test_extra_equal),
        cmocka_unit_test(test_trusted_proxy),
        cmocka_unit_test(test_util_durations),
        cmocka_unit_test(test_util_sizes),
        cmocka_unit_test(test_util_uints),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_anchor_limits),
        cmocka_unit_test(test_file_size_limit),
        cmocka_unit_test(test_count_and_length_limits),
        cmocka_unit_test(test_many_routes_and_services),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
