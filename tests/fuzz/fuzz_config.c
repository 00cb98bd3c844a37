/*
 * libFuzzer target for config.c (and the libyaml under it): the whole input is a config file, as
 * an operator hands it to portier -t. Besides crashes, leaks and undefined behaviour it checks
 * what the loader promises: a config or errors, never both; every error on a line of its own, as
 * "FILE:LINE:COL: message" with LINE and COL 1-based or "FILE: message", the last maybe "... and
 * N more errors", also in a buffer too small for them all; and a loaded config that agrees with
 * itself (routes point at services, names find their service, each trusted network trusts its own
 * address, a config needs no restart to become itself).
 *
 * Seeds: tests/fuzz/corpus/fuzz_config (tests/fuzz/make_corpus.py). Build and run with
 * tests/fuzz/run.sh, which links what the next line lists:
 *
 * fuzz-links: proxy/src/config.c proxy/src/util.c lib/addr.c -lyaml
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"

#define NAME "fuzz.yaml"
/* Room for a line or two and the "... and N more errors" line config.c keeps room for. */
#define SMALL_ERR 100

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Reads the decimal number at *p, which must be at least 1 and end in ':'; moves *p past it. */
static void
check_position(const char **p)
{
    const char *s = *p;
    unsigned long n = 0;

    check(*s >= '0' && *s <= '9');
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (unsigned long)(*s++ - '0');
    check(n >= 1 && *s == ':');
    *p = s + 1;
}

/* err as config_parse() leaves it after a failure, with a buffer of cap bytes. */
static void
check_errors(const char *err, size_t cap)
{
    size_t len = strlen(err);
    const char *p = err;

    check(len < cap);
    check(len > 0 && err[len - 1] == '\n');
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');

        if (strncmp(p, "... and ", 8) == 0) {
            check(nl[1] == '\0');
            break;
        }
        check(strncmp(p, NAME ":", sizeof(NAME)) == 0);
        p += sizeof(NAME);
        if (*p != ' ') {
            check_position(&p);
            check_position(&p);
        }
        check(*p == ' ' && p + 1 < nl);
        p = nl + 1;
    }
}

static void
check_trusted(const struct config *cfg)
{
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++) {
        const struct config_cidr *c = &cfg->trusted_proxies[i];
        struct sockaddr_storage ss = {0};
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        check(c->family == AF_INET ? c->prefix <= 32 : c->family == AF_INET6 && c->prefix <= 128);
        /* The network address (host bits cleared) is inside its own network... */
        if (c->family == AF_INET) {
            sin->sin_family = AF_INET;
            memcpy(&sin->sin_addr, c->addr, 4);
            check(config_trusted_proxy(cfg, (struct sockaddr *)&ss));
            /* ...and so is its IPv4-mapped IPv6 form, as a dual-stack listener reports it. */
            memset(&ss, 0, sizeof(ss));
            sin6->sin6_family = AF_INET6;
            sin6->sin6_addr.s6_addr[10] = 0xff;
            sin6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&sin6->sin6_addr.s6_addr[12], c->addr, 4);
        } else {
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, c->addr, 16);
        }
        check(config_trusted_proxy(cfg, (struct sockaddr *)&ss));
    }
}

static void
check_config(struct config *cfg, const struct config *defaults)
{
    char what[64], back[64];
    int rc;

    check(strcmp(cfg->path, NAME) == 0);
    check(cfg->nlisteners >= 1 && cfg->workers <= 256);
    check(cfg->default_service >= -1 && cfg->default_service < (int)cfg->nservices);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        size_t n = strlen(r->host);

        check(r->service < cfg->nservices);
        check(strcmp(r->service_name, cfg->services[r->service].name) == 0);
        check(r->path[0] == '/');
        check(n > 0 && r->host[n - 1] != '.');
        check(r->wildcard == (strncmp(r->host, "*.", 2) == 0));
        for (const char *h = r->host; *h != '\0'; h++)
            check(*h < 'A' || *h > 'Z');
    }
    for (size_t i = 0; i < cfg->nservices; i++) {
        const struct config_service *s = &cfg->services[i];

        check(config_service_index(cfg, s->name) == (int)i);
        check((s->nservers > 0) != (s->dns != NULL));
        check(s->dns == NULL || (s->dns_name != NULL && s->dns_port > 0));
    }
    check_trusted(cfg);
    check(cfg->timeouts.client_header_ms >= 1 && cfg->timeouts.client_idle_ms >= 1);
    check(cfg->timeouts.upstream_connect_ms >= 1 && cfg->timeouts.upstream_response_ms >= 1);
    check(cfg->limits.max_header_bytes >= 1);
    check(cfg->limits.max_connections >= 1 && cfg->limits.max_connections <= 1000000);
    check((cfg->access_log == CONFIG_ACCESS_LOG_FILE) == (cfg->access_log_path != NULL));

    check(config_needs_restart(cfg, cfg, what, sizeof(what)) == 0 && what[0] == '\0');
    rc = config_needs_restart(defaults, cfg, what, sizeof(what));
    check(rc == config_needs_restart(cfg, defaults, back, sizeof(back)));
    check(strcmp(what, back) == 0 && (rc == 1) == (what[0] != '\0'));
    check(config_ref(cfg) == cfg);
    config_unref(cfg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config *defaults;
    static char err[CONFIG_ERR_SIZE];
    const char *buf = (const char *)data;
    struct config *cfg;

    if (defaults == NULL) {
        defaults = config_parse("defaults", "", 0, err, sizeof(err));
        check(defaults != NULL);
    }
    cfg = config_parse(NAME, buf, size, err, sizeof(err));
    check((cfg == NULL) == (err[0] != '\0'));
    if (cfg != NULL) {
        check_config(cfg, defaults);
        config_unref(cfg);
        return 0;
    }
    check_errors(err, sizeof(err));
    /* Fewer errors fit: whole lines and a count of the rest, never a cut line. */
    check(config_parse(NAME, buf, size, err, SMALL_ERR) == NULL);
    check_errors(err, SMALL_ERR);
    return 0;
}
