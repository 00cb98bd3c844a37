/*
 * YAML to struct config: a first pass over libyaml's events bounds the input's shape, libyaml's
 * document API then builds the tree, a key table per mapping hands each value to its parser, and
 * every error is collected with its position, so one run of portier -t shows them all. Nothing here
 * binds, connects or resolves.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <yaml.h>

#include "addr.h"
#include "config.h"
#include "util.h"

#define MAX_ERRORS 1000 /* kept for sorting; more are only counted */
#define MAX_KEYS 16     /* per key table, for duplicate detection */
#define MAX_DEPTH 64    /* nesting of mappings and lists; portier's own keys need 4 */
#define MAX_ANCHORS 100 /* per document: libyaml's loader looks each alias up one by one */
#define MAX_EXPANDED (1024 * 1024) /* nodes, counting each alias as the nodes it repeats */
#define MAX_WORKERS 256
#define MAX_LISTENERS 256 /* every worker binds a socket for each */
#define MAX_RESOLVERS 16  /* glibc reads 3 from resolv.conf; evdns opens a socket for each */
#define MAX_CONNECTIONS 1000000
#define MIN_HEADER_BYTES 1024 /* a request line and a Host header can take this much */
#define MAX_HEADER_BYTES (1024 * 1024)
#define MAX_LOG_PATH 4095 /* log.c holds the access log's path in 4096 bytes */
#define MAX_HOST 253      /* RFC 1035 2.3.4, without the trailing dot */
#define MAX_LABEL 63
#define MAX_HEALTH_PATH 1024
#define MIN_HEALTH_INTERVAL_MS 100
#define DEFAULT_LISTEN "0.0.0.0:80"
#define DEFAULT_HEALTH_INTERVAL_MS 5000
#define DEFAULT_HEALTH_TIMEOUT_MS 2000
#define MSG_MAX 512

/*
 * The refcount lives beside the public struct so readers cannot touch it. cfg is the first
 * member, so a pointer to it converts back to the holder.
 */
struct config_holder {
    struct config cfg;
    atomic_uint refs;
};

struct config_error {
    size_t line; /* 1-based; 0 for an error without a position */
    size_t col;
    size_t seq; /* order of discovery, so sorting by position is stable */
    char *msg;  /* owned */
};

/* A name and where it came from, so names can be sorted and looked up in O(log n). */
struct name_index {
    const char *name; /* borrowed from the config being built */
    size_t index;
};

/* The state of one load; lives on config_parse()'s stack. */
struct loader {
    const char *name;            /* borrowed: FILE in the messages */
    yaml_document_t *doc;        /* borrowed from config_parse() */
    struct config *cfg;          /* being built; freed if any error is found */
    struct config_error *errors; /* owned */
    size_t nerrors;
    size_t dropped;                   /* errors past MAX_ERRORS */
    struct name_index *service_names; /* owned: the named services, sorted by name */
    size_t nservice_names;
    bool oom;
};

struct key {
    const char *name;
    /* Parses val (never a YAML null) into dst = base + offset. Returns 0, or -1 after an error. */
    int (*parse)(struct loader *ld, const char *key, yaml_node_t *val, void *dst);
    size_t offset;
};

static void config_free(struct config *cfg);

/* Errors. */

static void verror(struct loader *ld, size_t line, size_t col, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
verror(struct loader *ld, size_t line, size_t col, const char *fmt, va_list ap)
{
    char msg[MSG_MAX];

    if (ld->nerrors == MAX_ERRORS) {
        ld->dropped++;
        return;
    }
    if (ld->errors == NULL) {
        ld->errors = calloc(MAX_ERRORS, sizeof(*ld->errors));
        if (ld->errors == NULL) {
            ld->oom = true;
            return;
        }
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* Values are quoted into messages; a control character must not break one-error-per-line. */
    for (char *p = msg; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    struct config_error *e = &ld->errors[ld->nerrors];
    if ((e->msg = strdup(msg)) == NULL) {
        ld->oom = true;
        return;
    }
    e->line = line;
    e->col = col;
    e->seq = ld->nerrors++;
}

static void node_error(struct loader *ld, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records an error at n's first character. */
static void
node_error(struct loader *ld, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(ld, n->start_mark.line + 1, n->start_mark.column + 1, fmt, ap);
    va_end(ap);
}

static void mark_error(struct loader *ld, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
mark_error(struct loader *ld, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(ld, line, col, fmt, ap);
    va_end(ap);
}

static int
error_cmp(const void *a, const void *b)
{
    const struct config_error *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Writes the errors in file order into err, keeping room for a last "... and N more errors" line
 * when they do not all fit.
 */
static void
errors_format(struct loader *ld, char *err, size_t errlen)
{
    const size_t reserve = sizeof("... and 18446744073709551615 more errors\n");
    size_t used = 0, i;

    if (errlen == 0)
        return;
    err[0] = '\0';
    if (ld->oom)
        mark_error(ld, 0, 0, "out of memory");
    if (ld->errors == NULL) {
        snprintf(err, errlen, "%s: out of memory\n", ld->name);
        return;
    }
    qsort(ld->errors, ld->nerrors, sizeof(*ld->errors), error_cmp);
    for (i = 0; i < ld->nerrors; i++) {
        const struct config_error *e = &ld->errors[i];
        bool last = i + 1 == ld->nerrors && ld->dropped == 0;
        size_t room = errlen - used - 1;
        int n;

        if (!last)
            room = room > reserve ? room - reserve : 0;
        if (e->line == 0)
            n = snprintf(NULL, 0, "%s: %s\n", ld->name, e->msg);
        else
            n = snprintf(NULL, 0, "%s:%zu:%zu: %s\n", ld->name, e->line, e->col, e->msg);
        if (n < 0 || (size_t)n > room)
            break;
        if (e->line == 0)
            snprintf(err + used, errlen - used, "%s: %s\n", ld->name, e->msg);
        else
            snprintf(err + used, errlen - used, "%s:%zu:%zu: %s\n", ld->name, e->line, e->col,
                     e->msg);
        used += (size_t)n;
    }
    if (i < ld->nerrors || ld->dropped > 0)
        snprintf(err + used, errlen - used, "... and %zu more errors\n",
                 ld->nerrors - i + ld->dropped);
}

/* Allocation that records running out of memory as an error of the load. */

static void *
ld_calloc(struct loader *ld, size_t n, size_t size)
{
    void *p = calloc(n, size);

    if (p == NULL)
        ld->oom = true;
    return p;
}

static char *
ld_strdup(struct loader *ld, const char *s)
{
    char *p = strdup(s);

    if (p == NULL)
        ld->oom = true;
    return p;
}

/* Whether a and b are the same string, or both NULL. */
static bool
str_equal(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Nodes. */

static const char *
kind_str(yaml_node_type_t type)
{
    switch (type) {
    case YAML_SCALAR_NODE:
        return "a single value";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

/* YAML's null: an empty plain value, "~" or "null". A key set to null keeps its default. */
static bool
is_null(const yaml_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};

    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
        if (strcmp((const char *)n->data.scalar.value, nulls[i]) == 0)
            return true;
    return false;
}

static bool
expect(struct loader *ld, const yaml_node_t *n, yaml_node_type_t type, const char *what)
{
    if (n->type == type)
        return true;
    node_error(ld, n, "%s: expected %s, not %s", what, kind_str(type), kind_str(n->type));
    return false;
}

/* Returns n's text, or NULL after an error if n is not a scalar or holds a NUL byte. */
static const char *
scalar(struct loader *ld, const yaml_node_t *n, const char *what)
{
    const char *s;

    if (!expect(ld, n, YAML_SCALAR_NODE, what))
        return NULL;
    s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        node_error(ld, n, "%s: contains a NUL character", what);
        return NULL;
    }
    return s;
}

static size_t
seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *
seq_item(struct loader *ld, const yaml_node_t *n, size_t i)
{
    return yaml_document_get_node(ld->doc, n->data.sequence.items.start[i]);
}

/* Returns the value of the first key called name in mapping n, or NULL if absent or null. */
static yaml_node_t *
mapping_get(struct loader *ld, const yaml_node_t *n, const char *name)
{
    if (n == NULL || n->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(ld->doc, p->value);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, name) == 0)
            return is_null(v) ? NULL : v;
    }
    return NULL;
}

/*
 * Parses mapping n: each known key's value goes to its parser with base + offset; unknown and
 * repeated keys are errors; a null value keeps the default. Returns 0, or -1 after any error.
 */
static int
parse_mapping(struct loader *ld, yaml_node_t *n, const struct key *keys, void *base,
              const char *where)
{
    bool seen[MAX_KEYS] = {false};
    int rc = 0;

    if (!expect(ld, n, YAML_MAPPING_NODE, where))
        return -1;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(ld->doc, p->value);
        const char *name = scalar(ld, k, "a key");
        const struct key *key;

        if (name == NULL) {
            rc = -1;
            continue;
        }
        for (key = keys; key->name != NULL && strcmp(key->name, name) != 0; key++)
            ;
        if (key->name == NULL) {
            node_error(ld, k, "unknown key \"%s\" in %s", name, where);
            rc = -1;
            continue;
        }
        if (seen[key - keys]) {
            node_error(ld, k, "duplicate key \"%s\" in %s", name, where);
            rc = -1;
            continue;
        }
        assert(key - keys < MAX_KEYS);
        seen[key - keys] = true;
        if (!is_null(v) && key->parse(ld, key->name, v, (char *)base + key->offset) < 0)
            rc = -1;
    }
    return rc;
}

/*
 * Checks that n is a list and allocates one zeroed item of size bytes per entry, so items keep
 * their index even when some fail to parse. Returns the array (NULL for an empty list), with the
 * count in *count; on error, NULL with *count 0 and ld->oom or an error recorded.
 */
static void *
list_alloc(struct loader *ld, yaml_node_t *n, const char *what, size_t size, size_t *count)
{
    void *items;

    *count = 0;
    if (!expect(ld, n, YAML_SEQUENCE_NODE, what) || seq_len(n) == 0)
        return NULL;
    if ((items = ld_calloc(ld, seq_len(n), size)) != NULL)
        *count = seq_len(n);
    return items;
}

/* Scalar values. */

static int
parse_string(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, key);
    char **out = dst;

    if (s == NULL)
        return -1;
    if (*s == '\0') {
        node_error(ld, n, "%s: must not be empty", key);
        return -1;
    }
    return (*out = ld_strdup(ld, s)) == NULL ? -1 : 0;
}

static int
parse_bool(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    const char *s = scalar(ld, n, key);
    bool *out = dst;

    if (s == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return 0;
        }
    }
    node_error(ld, n, "%s: \"%s\" is not true or false", key, s);
    return -1;
}

static int
duration_value(struct loader *ld, const char *key, yaml_node_t *n, uint64_t *out, bool zero_ok)
{
    const char *s = scalar(ld, n, key);
    char msg[MSG_MAX];

    if (s == NULL)
        return -1;
    if (util_parse_duration(s, out, msg, sizeof(msg)) < 0) {
        node_error(ld, n, "%s: %s", key, msg);
        return -1;
    }
    if (*out == 0 && !zero_ok) {
        node_error(ld, n, "%s: must be longer than 0", key);
        return -1;
    }
    return 0;
}

static int
parse_duration(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return duration_value(ld, key, n, dst, false);
}

static int
parse_duration_or_zero(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return duration_value(ld, key, n, dst, true);
}

static int
size_value(struct loader *ld, const char *key, yaml_node_t *n, uint64_t *out, bool zero_ok)
{
    const char *s = scalar(ld, n, key);
    char msg[MSG_MAX];

    if (s == NULL)
        return -1;
    if (util_parse_size(s, out, msg, sizeof(msg)) < 0) {
        node_error(ld, n, "%s: %s", key, msg);
        return -1;
    }
    if (*out == 0 && !zero_ok) {
        node_error(ld, n, "%s: must be at least 1 byte", key);
        return -1;
    }
    return 0;
}

static int
parse_size_or_zero(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return size_value(ld, key, n, dst, true);
}

/*
 * A head is held whole in memory while its request is in flight, so its size is bounded; below
 * 1k a request line with a Host header alone may not fit, so every request would get 431.
 */
static int
parse_header_size(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    uint64_t *out = dst;

    if (size_value(ld, key, n, dst, true) < 0)
        return -1;
    if (*out < MIN_HEADER_BYTES) {
        node_error(ld, n,
                   "%s: must be at least 1k (a request line and a Host header alone can take "
                   "that)",
                   key);
        return -1;
    }
    if (*out > MAX_HEADER_BYTES) {
        node_error(ld, n, "%s: must be at most 1m", key);
        return -1;
    }
    return 0;
}

static int
parse_connections(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, key);
    char msg[MSG_MAX];
    uint64_t *out = dst;

    if (s == NULL)
        return -1;
    if (util_parse_uint(s, MAX_CONNECTIONS, out, msg, sizeof(msg)) < 0 || *out == 0) {
        node_error(ld, n, "%s: must be a number from 1 to %d, not \"%s\"", key, MAX_CONNECTIONS, s);
        return -1;
    }
    return 0;
}

static int
parse_workers(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, key);
    char msg[MSG_MAX];
    unsigned *out = dst;
    uint64_t v;

    if (s == NULL)
        return -1;
    if (strcmp(s, "auto") == 0) {
        *out = 0;
        return 0;
    }
    if (util_parse_uint(s, MAX_WORKERS, &v, msg, sizeof(msg)) < 0 || v == 0) {
        node_error(ld, n, "%s: must be auto or a number from 1 to %d, not \"%s\"", key, MAX_WORKERS,
                   s);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

/* Addresses. */

/* Parses n as a numeric "host:port" into a; an empty host (":80") only if any_ok. */
static int
addr_value(struct loader *ld, const char *what, yaml_node_t *n, struct config_addr *a, bool any_ok)
{
    const char *s = scalar(ld, n, what);
    char msg[MSG_MAX];

    if (s == NULL)
        return -1;
    if (addr_parse(s, &a->ss, &a->len, msg, sizeof(msg)) < 0) {
        node_error(ld, n, "%s: %s", what, msg);
        return -1;
    }
    if (!any_ok && s[0] == ':') {
        node_error(ld, n, "%s: \"%s\" needs a host", what, s);
        return -1;
    }
    a->line = (unsigned)n->start_mark.line + 1;
    a->col = (unsigned)n->start_mark.column + 1;
    return (a->spec = ld_strdup(ld, s)) == NULL ? -1 : 0;
}

static bool
addr_equal(const struct config_addr *a, const struct config_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/*
 * The family, port and address bytes of a as a socket binds them: an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is the IPv4 address it maps.
 */
static int
addr_bound(const struct config_addr *a, uint16_t *port, const uint8_t **ip)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&a->ss;
        *port = sin->sin_port;
        *ip = (const uint8_t *)&sin->sin_addr;
        return AF_INET;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)&a->ss;
    *port = sin6->sin6_port;
    *ip = sin6->sin6_addr.s6_addr;
    if (memcmp(*ip, mapped, sizeof(mapped)) == 0) {
        *ip += sizeof(mapped);
        return AF_INET;
    }
    return AF_INET6;
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/*
 * Returns whether a and b cannot both be bound: the same port on the same address, or on a
 * wildcard address that covers the other one. 0.0.0.0 covers every IPv4 address and [::] every
 * address, IPv4 ones too, since portier leaves IPV6_V6ONLY off (Linux's default: dual-stack).
 */
static bool
addr_overlap(const struct config_addr *a, const struct config_addr *b)
{
    const uint8_t *ipa, *ipb;
    uint16_t pa, pb;
    int fa = addr_bound(a, &pa, &ipa), fb = addr_bound(b, &pb, &ipb);
    size_t la = fa == AF_INET ? 4 : 16, lb = fb == AF_INET ? 4 : 16;

    if (pa != pb)
        return false;
    if (fa == fb && memcmp(ipa, ipb, la) == 0)
        return true;
    /* A wildcard covers its own family, and [::] IPv4 as well. */
    return (all_zero(ipa, la) && (fa == fb || fa == AF_INET6)) ||
           (all_zero(ipb, lb) && (fa == fb || fb == AF_INET6));
}

static int
parse_listen_address(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return addr_value(ld, key, n, dst, true);
}

static int
parse_admin(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config_addr **out = dst;

    if ((*out = ld_calloc(ld, 1, sizeof(**out))) == NULL)
        return -1;
    return addr_value(ld, key, n, *out, true);
}

static const struct key listener_keys[] = {
    {"address", parse_listen_address, offsetof(struct config_listener, addr)},
    {"tls", parse_bool, offsetof(struct config_listener, tls)},
    {NULL, NULL, 0},
};

/*
 * Checks listener i against those before it: the same address twice, or two that a start could
 * not both bind (see addr_overlap()). Returns 0, or -1 after an error at n, i's address.
 */
static int
listener_overlaps(struct loader *ld, const struct config *cfg, size_t i, yaml_node_t *n,
                  const char *key)
{
    const struct config_addr *a = &cfg->listeners[i].addr;

    for (size_t j = 0; j < i; j++) {
        const struct config_addr *b = &cfg->listeners[j].addr;
        if (b->spec == NULL || !addr_overlap(a, b))
            continue;
        if (addr_equal(a, b))
            node_error(ld, n, "%s: \"%s\" is already a listener", key, a->spec);
        else
            node_error(ld, n,
                       "%s: \"%s\" overlaps \"%s\": a wildcard address takes its port on every "
                       "address ([::] on IPv4 ones too)",
                       key, a->spec, b->spec);
        return -1;
    }
    return 0;
}

/* listen: the list of listeners; the default listener is added by check_listen(). */
static int
parse_listen(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    int rc = 0;

    if (n->type == YAML_SEQUENCE_NODE && seq_len(n) > MAX_LISTENERS) {
        node_error(ld, seq_item(ld, n, MAX_LISTENERS), "%s: more than %d listeners", key,
                   MAX_LISTENERS);
        return -1;
    }
    cfg->listeners = list_alloc(ld, n, key, sizeof(*cfg->listeners), &cfg->nlisteners);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    if (seq_len(n) == 0) {
        node_error(ld, n, "%s: needs at least one listener", key);
        return -1;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct config_listener *l = &cfg->listeners[i];
        yaml_node_t *item = seq_item(ld, n, i), *tls;

        if (parse_mapping(ld, item, listener_keys, l, key) < 0)
            rc = -1;
        if (item->type != YAML_MAPPING_NODE)
            continue;
        if ((tls = mapping_get(ld, item, "tls")) != NULL) {
            l->tls_line = (unsigned)tls->start_mark.line + 1;
            l->tls_col = (unsigned)tls->start_mark.column + 1;
        }
        if (mapping_get(ld, item, "address") == NULL) {
            node_error(ld, item, "%s: a listener needs an address", key);
            rc = -1;
        }
        if (l->addr.spec != NULL &&
            listener_overlaps(ld, cfg, i, mapping_get(ld, item, "address"), key) < 0)
            rc = -1;
    }
    return rc;
}

/* tls. */

static const struct key cert_keys[] = {
    {"cert", parse_string, offsetof(struct config_cert, cert)},
    {"key", parse_string, offsetof(struct config_cert, key)},
    {NULL, NULL, 0},
};

static int
parse_certificates(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    int rc = 0;

    cfg->certs = list_alloc(ld, n, key, sizeof(*cfg->certs), &cfg->ncerts);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < cfg->ncerts; i++) {
        struct config_cert *c = &cfg->certs[i];
        yaml_node_t *item = seq_item(ld, n, i);

        if (parse_mapping(ld, item, cert_keys, c, "tls.certificates") < 0)
            rc = -1;
        if (item->type != YAML_MAPPING_NODE)
            continue;
        yaml_node_t *cert = mapping_get(ld, item, "cert"), *keyn = mapping_get(ld, item, "key");
        if (cert == NULL || keyn == NULL) {
            node_error(ld, item, "tls.certificates: an entry needs both cert and key");
            rc = -1;
            continue;
        }
        c->cert_line = (unsigned)cert->start_mark.line + 1;
        c->cert_col = (unsigned)cert->start_mark.column + 1;
        c->key_line = (unsigned)keyn->start_mark.line + 1;
        c->key_col = (unsigned)keyn->start_mark.column + 1;
    }
    return rc;
}

static const struct key tls_keys[] = {
    {"certificates", parse_certificates, 0},
    {NULL, NULL, 0},
};

static int
parse_tls(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return parse_mapping(ld, n, tls_keys, dst, key);
}

/* Routes. */

/*
 * Lowercases s into out (cap bytes) without a trailing dot, and checks it is a host name:
 * labels of letters, digits and '-', optionally under a leading "*." wildcard. Returns 0, or -1
 * with a reason in err.
 */
static int
host_normalise(const char *s, bool wildcard_ok, char *out, size_t cap, char *err, size_t errlen)
{
    size_t len = strlen(s), label = 0;
    const char *p = s;

    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > MAX_HOST || len >= cap) {
        snprintf(err, errlen, "\"%s\" is not a host name (empty or longer than %d)", s, MAX_HOST);
        return -1;
    }
    if (wildcard_ok && len > 2 && p[0] == '*' && p[1] == '.')
        p += 2;
    for (; p < s + len; p++) {
        if (*p == '.') {
            if (label == 0)
                goto bad;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '-') {
            if (++label > MAX_LABEL)
                goto bad;
        } else {
            goto bad;
        }
    }
    if (label == 0)
        goto bad;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
    out[len] = '\0';
    return 0;
bad:
    snprintf(err, errlen,
             wildcard_ok ? "\"%s\" is not a host name (letters, digits, '-' and '.', optionally "
                           "after \"*.\")"
                         : "\"%s\" is not a host name (letters, digits, '-' and '.')",
             s);
    return -1;
}

static int
parse_route_host(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, key);
    char host[MAX_HOST + 2], msg[MSG_MAX];
    char **out = dst;

    if (s == NULL)
        return -1;
    if (host_normalise(s, true, host, sizeof(host), msg, sizeof(msg)) < 0) {
        node_error(ld, n, "%s: %s", key, msg);
        return -1;
    }
    return (*out = ld_strdup(ld, host)) == NULL ? -1 : 0;
}

/* A path for routes and health checks: "/" then visible ASCII, no query or fragment. */
static int
parse_path(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, key);

    if (s == NULL)
        return -1;
    if (s[0] != '/') {
        node_error(ld, n, "%s: \"%s\" must start with \"/\"", key, s);
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '?' || *p == '#') {
            node_error(ld, n,
                       "%s: \"%s\" may hold only visible ASCII, without '?' or '#' "
                       "(percent-encode the rest)",
                       key, s);
            return -1;
        }
    }
    return parse_string(ld, key, n, dst);
}

/*
 * A route as the router compares it: the host (NULL for any host), whether the path is exact, and
 * the path, a prefix without its trailing '/'s.
 */
struct route_key {
    const char *host; /* borrowed from the route */
    const char *path; /* borrowed from the route */
    size_t plen;
    bool exact;
    size_t index; /* in config.routes (config_extend(): base's routes, then x's) */
};

static struct route_key
route_key_of(const struct config_route *r, size_t index)
{
    size_t plen;

    assert(r->path != NULL); /* a route without one has been refused or left out */
    plen = strlen(r->path);
    while (!r->exact && plen > 0 && r->path[plen - 1] == '/')
        plen--;
    return (struct route_key){r->host, r->path, plen, r->exact, index};
}

/* Orders route keys by host (any host first), exactness, path, then index. */
static int
route_key_cmp(const void *a, const void *b)
{
    const struct route_key *x = a, *y = b;
    int c;

    if (x->host == NULL || y->host == NULL)
        c = (x->host != NULL) - (y->host != NULL);
    else
        c = strcmp(x->host, y->host);
    if (c != 0)
        return c;
    if (x->exact != y->exact)
        return x->exact ? 1 : -1;
    if ((c = memcmp(x->path, y->path, x->plen < y->plen ? x->plen : y->plen)) != 0)
        return c;
    if (x->plen != y->plen)
        return x->plen < y->plen ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static bool
route_key_same(const struct route_key *x, const struct route_key *y)
{
    return str_equal(x->host, y->host) && x->exact == y->exact && x->plen == y->plen &&
           memcmp(x->path, y->path, x->plen) == 0;
}

/*
 * Refuses a host and path routed twice, as the router would at start: "/api" and "/api/" are the
 * same prefix to it. Sorting keeps this O(n log n) for configs of many routes. n is the routes
 * list. Returns 0, or -1 after an error at each later duplicate's host.
 */
static int
routes_unique(struct loader *ld, yaml_node_t *n, const char *key)
{
    struct config *cfg = ld->cfg;
    struct route_key *keys;
    size_t m = 0;
    int rc = 0;

    if (cfg->nroutes < 2)
        return 0;
    if ((keys = ld_calloc(ld, cfg->nroutes, sizeof(*keys))) == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];

        /* A route with an error (no host, a bad path) has been reported already. */
        if (r->host != NULL && r->path != NULL)
            keys[m++] = route_key_of(r, i);
    }
    qsort(keys, m, sizeof(*keys), route_key_cmp);
    for (size_t i = 1, first = 0; i < m; i++) {
        const struct route_key *k = &keys[i], *o = &keys[first];
        yaml_node_t *host;

        if (!route_key_same(k, o)) {
            first = i;
            continue;
        }
        host = mapping_get(ld, seq_item(ld, n, k->index), "host");
        if (strcmp(k->path, o->path) == 0)
            node_error(ld, host, "%s: host \"%s\" with path \"%s\" is already routed", key, k->host,
                       k->path);
        else
            node_error(ld, host,
                       "%s: host \"%s\" with path \"%s\" is already routed (as \"%s\": a "
                       "trailing '/' makes no difference)",
                       key, k->host, k->path, o->path);
        rc = -1;
    }
    free(keys);
    return rc;
}

static const struct key route_keys[] = {
    {"host", parse_route_host, offsetof(struct config_route, host)},
    {"path", parse_path, offsetof(struct config_route, path)},
    {"service", parse_string, offsetof(struct config_route, service_name)},
    {"redirect_https", parse_bool, offsetof(struct config_route, redirect_https)},
    {"hsts", parse_duration_or_zero, offsetof(struct config_route, hsts_ms)},
    {NULL, NULL, 0},
};

/* routes: services are looked up later, in check_routes(), since they may come after. */
static int
parse_routes(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    int rc = 0;

    cfg->routes = list_alloc(ld, n, key, sizeof(*cfg->routes), &cfg->nroutes);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        yaml_node_t *item = seq_item(ld, n, i);

        if (parse_mapping(ld, item, route_keys, r, key) < 0)
            rc = -1;
        if (item->type != YAML_MAPPING_NODE)
            continue;
        if (mapping_get(ld, item, "path") == NULL && (r->path = ld_strdup(ld, "/")) == NULL)
            return -1;
        if (mapping_get(ld, item, "host") == NULL) {
            node_error(ld, item, "%s: a route needs a host", key);
            rc = -1;
        }
        if (mapping_get(ld, item, "service") == NULL) {
            node_error(ld, item, "%s: a route needs a service", key);
            rc = -1;
        }
        if (r->host != NULL)
            r->wildcard = r->host[0] == '*';
        /* A file's paths are prefixes, and its wildcards match any depth below the suffix. */
        r->exact = false;
        r->one_label = false;
    }
    if (routes_unique(ld, n, key) < 0)
        rc = -1;
    return rc;
}

/* Services. */

static int
parse_servers(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config_service *svc = dst;
    int rc = 0;

    /* A balancer holds no more; a start would refuse the service (and the check below is n^2). */
    if (n->type == YAML_SEQUENCE_NODE && seq_len(n) > CONFIG_MAX_SERVERS) {
        node_error(ld, seq_item(ld, n, CONFIG_MAX_SERVERS),
                   "%s: more than %d servers in one service", key, CONFIG_MAX_SERVERS);
        return -1;
    }
    svc->servers = list_alloc(ld, n, key, sizeof(*svc->servers), &svc->nservers);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < svc->nservers; i++) {
        yaml_node_t *item = seq_item(ld, n, i);

        if (addr_value(ld, "server", item, &svc->servers[i], false) < 0) {
            rc = -1;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (svc->servers[j].spec != NULL && addr_equal(&svc->servers[i], &svc->servers[j])) {
                node_error(ld, item, "server: \"%s\" is already in the list", svc->servers[i].spec);
                rc = -1;
                break;
            }
        }
    }
    return rc;
}

/* dns: "name:port", the name left for discovery to resolve. */
static int
parse_dns(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config_service *svc = dst;
    const char *s = scalar(ld, n, key), *colon;
    char host[MAX_HOST + 2], scratch[MAX_HOST + 2], msg[MSG_MAX];
    uint64_t port;

    if (s == NULL)
        return -1;
    colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host)) {
        node_error(ld, n, "%s: \"%s\" is not name:port", key, s);
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    if (host_normalise(host, false, scratch, sizeof(scratch), msg, sizeof(msg)) < 0) {
        node_error(ld, n, "%s: \"%s\" is not name:port (%s)", key, s, msg);
        return -1;
    }
    if (util_parse_uint(colon + 1, 65535, &port, msg, sizeof(msg)) < 0 || port == 0) {
        node_error(ld, n, "%s: \"%s\": port must be a number from 1 to 65535", key, s);
        return -1;
    }
    svc->dns_port = (uint16_t)port;
    if ((svc->dns = ld_strdup(ld, s)) == NULL || (svc->dns_name = ld_strdup(ld, host)) == NULL)
        return -1;
    return 0;
}

static bool
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * A health check's path goes on the wire as the request-target of its probes: RFC 9112 3.2.1's
 * origin-form without a query, that is '/' and RFC 3986 3.3 pchars (unreserved, sub-delims, ':',
 * '@' and %XX), of a length any server takes.
 */
static int
parse_health_path(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    static const char extra[] = "-._~!$&'()*+,;=:@/";
    const char *s = scalar(ld, n, key);

    if (s == NULL)
        return -1;
    if (s[0] != '/') {
        node_error(ld, n, "%s: \"%s\" must start with \"/\"", key, s);
        return -1;
    }
    if (strlen(s) > MAX_HEALTH_PATH) {
        node_error(ld, n, "%s: longer than %d bytes", key, MAX_HEALTH_PATH);
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || strchr(extra, *p) != NULL;
        if (*p == '%' && is_hex(p[1]) && is_hex(p[2])) {
            p += 2;
            continue;
        }
        if (!ok) {
            node_error(ld, n,
                       "%s: \"%s\" may hold only letters, digits, \"%s\" and %%XX escapes (no "
                       "query)",
                       key, s, extra);
            return -1;
        }
    }
    return parse_string(ld, key, n, dst);
}

/* Probes more often than this would be a load test of the servers, not a health check. */
static int
parse_health_interval(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    uint64_t *out = dst;

    if (duration_value(ld, key, n, out, false) < 0)
        return -1;
    if (*out < MIN_HEALTH_INTERVAL_MS) {
        node_error(ld, n, "%s: must be at least %dms", key, MIN_HEALTH_INTERVAL_MS);
        return -1;
    }
    return 0;
}

static const struct key health_keys[] = {
    {"path", parse_health_path, offsetof(struct config_health_check, path)},
    {"interval", parse_health_interval, offsetof(struct config_health_check, interval_ms)},
    {"timeout", parse_duration, offsetof(struct config_health_check, timeout_ms)},
    {NULL, NULL, 0},
};

/* health_check: the timeout defaults to 2s or the interval, whichever is shorter. */
static int
parse_health(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config_health_check *h = dst;
    yaml_node_t *interval, *timeout;
    int rc;

    /* 0 after parsing: not set, or refused (already reported). */
    h->interval_ms = 0;
    h->timeout_ms = 0;
    rc = parse_mapping(ld, n, health_keys, h, key);
    if (n->type != YAML_MAPPING_NODE)
        return rc;
    interval = mapping_get(ld, n, "interval");
    timeout = mapping_get(ld, n, "timeout");
    if (interval == NULL)
        h->interval_ms = DEFAULT_HEALTH_INTERVAL_MS;
    if (mapping_get(ld, n, "path") == NULL) {
        node_error(ld, n, "%s: needs a path", key);
        return -1;
    }
    if (h->timeout_ms == 0) {
        h->timeout_ms =
            h->interval_ms < DEFAULT_HEALTH_TIMEOUT_MS ? h->interval_ms : DEFAULT_HEALTH_TIMEOUT_MS;
    } else if (h->interval_ms >= MIN_HEALTH_INTERVAL_MS && h->timeout_ms > h->interval_ms) {
        /* A probe still out when the next is due would pile probes up on a slow server. */
        node_error(ld, timeout, "timeout: \"%s\" is longer than the interval (%s)",
                   (const char *)timeout->data.scalar.value,
                   interval != NULL && interval->type == YAML_SCALAR_NODE
                       ? (const char *)interval->data.scalar.value
                       : "5s by default");
        return -1;
    }
    return rc;
}

static const struct key service_keys[] = {
    {"servers", parse_servers, 0},
    {"dns", parse_dns, 0},
    {"health_check", parse_health, offsetof(struct config_service, health)},
    {NULL, NULL, 0},
};

/* Parses one service's body n (NULL when it was null); k is its name, for errors. */
static int
parse_service(struct loader *ld, yaml_node_t *k, yaml_node_t *n, struct config_service *svc)
{
    char where[MSG_MAX];
    yaml_node_t *servers = mapping_get(ld, n, "servers"), *dns = mapping_get(ld, n, "dns");
    int rc = 0;

    svc->health.interval_ms = DEFAULT_HEALTH_INTERVAL_MS;
    svc->health.timeout_ms = DEFAULT_HEALTH_TIMEOUT_MS;
    snprintf(where, sizeof(where), "service \"%s\"", (const char *)k->data.scalar.value);
    if (n != NULL && parse_mapping(ld, n, service_keys, svc, where) < 0)
        rc = -1;
    if (n != NULL && n->type != YAML_MAPPING_NODE)
        return -1;
    if (servers != NULL && dns != NULL) {
        node_error(ld, dns, "%s: has both servers and dns; give one", where);
        return -1;
    }
    if (dns == NULL && servers == NULL) {
        node_error(ld, k, "%s: has no servers and no dns", where);
        return -1;
    }
    if (servers != NULL && servers->type == YAML_SEQUENCE_NODE && seq_len(servers) == 0) {
        node_error(ld, servers, "%s: servers is empty and there is no dns", where);
        return -1;
    }
    return rc;
}

static bool
service_name_valid(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static int
name_index_cmp(const void *a, const void *b)
{
    const struct name_index *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c != 0)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Sorts the named services into ld->service_names and refuses every later one of a name already
 * taken (its name is dropped, so its body is not parsed). Sorting keeps duplicates and the
 * lookups of routes O(log n) each for configs of many services. Returns 0, or -1 after an error.
 */
static int
services_index(struct loader *ld, yaml_node_t *n)
{
    struct config *cfg = ld->cfg;
    struct name_index *names;
    size_t m = 0, kept = 0;
    int rc = 0;

    if ((names = ld_calloc(ld, cfg->nservices, sizeof(*names))) == NULL)
        return -1;
    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].name != NULL)
            names[m++] = (struct name_index){cfg->services[i].name, i};
    qsort(names, m, sizeof(*names), name_index_cmp);
    for (size_t i = 0; i < m; i++) {
        struct config_service *svc = &cfg->services[names[i].index];
        if (kept > 0 && strcmp(names[i].name, names[kept - 1].name) == 0) {
            yaml_node_pair_t *p = &n->data.mapping.pairs.start[names[i].index];
            node_error(ld, yaml_document_get_node(ld->doc, p->key), "duplicate service \"%s\"",
                       svc->name);
            free(svc->name);
            svc->name = NULL;
            rc = -1;
            continue;
        }
        names[kept++] = names[i];
    }
    ld->service_names = names;
    ld->nservice_names = kept;
    return rc;
}

/* Returns the index in cfg->services of the service called name, or -1; O(log n). */
static int
service_lookup(const struct loader *ld, const char *name)
{
    size_t lo = 0, hi = ld->nservice_names;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, ld->service_names[mid].name);
        if (c == 0)
            return (int)ld->service_names[mid].index;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* services: a mapping of name to body, kept in file order. */
static int
parse_services(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    size_t count;
    int rc = 0;

    if (!expect(ld, n, YAML_MAPPING_NODE, key))
        return -1;
    count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0)
        return 0;
    if ((cfg->services = ld_calloc(ld, count, sizeof(*cfg->services))) == NULL)
        return -1;
    cfg->nservices = count;
    for (size_t i = 0; i < count; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
        const char *name = scalar(ld, k, "a service name");

        if (name == NULL) {
            rc = -1;
            continue;
        }
        if (!service_name_valid(name)) {
            node_error(ld, k, "service name \"%s\" may hold only letters, digits, '.', '_', '-'",
                       name);
            rc = -1;
            continue;
        }
        if ((cfg->services[i].name = ld_strdup(ld, name)) == NULL)
            return -1;
    }
    if (services_index(ld, n) < 0)
        rc = -1;
    for (size_t i = 0; i < count && !ld->oom; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(ld->doc, p->value);

        if (cfg->services[i].name == NULL)
            continue;
        if (parse_service(ld, k, is_null(v) ? NULL : v, &cfg->services[i]) < 0)
            rc = -1;
    }
    return rc;
}

/* Resolvers and trusted proxies. */

/* resolvers: "ip[:port]"; a bare IPv6 address may go without brackets when it has no port. */
static int
parse_resolvers(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    int rc = 0;

    if (n->type == YAML_SEQUENCE_NODE && seq_len(n) > MAX_RESOLVERS) {
        node_error(ld, seq_item(ld, n, MAX_RESOLVERS), "%s: more than %d resolvers", key,
                   MAX_RESOLVERS);
        return -1;
    }
    cfg->resolvers = list_alloc(ld, n, key, sizeof(*cfg->resolvers), &cfg->nresolvers);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < cfg->nresolvers; i++) {
        struct config_addr *a = &cfg->resolvers[i];
        yaml_node_t *item = seq_item(ld, n, i);
        const char *s = scalar(ld, item, "resolver"), *colon;
        char spec[MSG_MAX], msg[MSG_MAX];

        if (s == NULL) {
            rc = -1;
            continue;
        }
        colon = strchr(s, ':');
        /* "[v6]" and "v4" without a port take DNS's 53; a bare v6 address takes brackets too. */
        if ((s[0] == '[' && strstr(s, "]:") == NULL) || (s[0] != '[' && colon == NULL))
            snprintf(spec, sizeof(spec), "%s:53", s);
        else if (s[0] != '[' && strchr(colon + 1, ':') != NULL)
            snprintf(spec, sizeof(spec), "[%s]:53", s);
        else
            snprintf(spec, sizeof(spec), "%s", s);
        if (spec[0] == ':' || addr_parse(spec, &a->ss, &a->len, msg, sizeof(msg)) < 0) {
            node_error(ld, item, "resolver: \"%s\" is not ip[:port]", s);
            rc = -1;
            continue;
        }
        /* evdns refuses a nameserver it already has, and discovery would fail at start. */
        size_t j = 0;
        while (j < i && (cfg->resolvers[j].spec == NULL || !addr_equal(a, &cfg->resolvers[j])))
            j++;
        if (j < i) {
            node_error(ld, item, "resolver: \"%s\" is already in the list (as \"%s\")", s,
                       cfg->resolvers[j].spec);
            rc = -1;
            continue;
        }
        a->line = (unsigned)item->start_mark.line + 1;
        a->col = (unsigned)item->start_mark.column + 1;
        if ((a->spec = ld_strdup(ld, spec)) == NULL)
            return -1;
    }
    return rc;
}

/* Parses "ip[/prefix]" into c; the host bits below the prefix are cleared. Returns 0 or -1. */
static int
cidr_parse(const char *s, struct config_cidr *c)
{
    char ip[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t iplen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    unsigned max;
    uint64_t prefix;
    char msg[MSG_MAX];

    if (iplen >= sizeof(ip))
        return -1;
    memcpy(ip, s, iplen);
    ip[iplen] = '\0';
    if (inet_pton(AF_INET, ip, c->addr) == 1) {
        c->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, ip, c->addr) == 1) {
        c->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    prefix = max;
    if (slash != NULL && util_parse_uint(slash + 1, max, &prefix, msg, sizeof(msg)) < 0)
        return -1;
    c->prefix = (unsigned)prefix;
    for (unsigned bit = c->prefix; bit < max; bit++)
        c->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

static int
parse_trusted_proxies(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    int rc = 0;

    cfg->trusted_proxies =
        list_alloc(ld, n, key, sizeof(*cfg->trusted_proxies), &cfg->ntrusted_proxies);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++) {
        struct config_cidr *c = &cfg->trusted_proxies[i];
        yaml_node_t *item = seq_item(ld, n, i);
        const char *s = scalar(ld, item, key);

        if (s == NULL) {
            rc = -1;
            continue;
        }
        if (cidr_parse(s, c) < 0) {
            node_error(ld, item,
                       "%s: \"%s\" is not a CIDR (ip/prefix, a prefix up to 32 for IPv4, 128 "
                       "for IPv6)",
                       key, s);
            rc = -1;
            continue;
        }
        if ((c->spec = ld_strdup(ld, s)) == NULL)
            return -1;
    }
    return rc;
}

/* Timeouts, limits, logs. */

static const struct key timeout_keys[] = {
    {"client_header", parse_duration, offsetof(struct config_timeouts, client_header_ms)},
    {"client_body", parse_duration, offsetof(struct config_timeouts, client_body_ms)},
    {"client_idle", parse_duration, offsetof(struct config_timeouts, client_idle_ms)},
    {"tls_handshake", parse_duration, offsetof(struct config_timeouts, tls_handshake_ms)},
    {"upstream_connect", parse_duration, offsetof(struct config_timeouts, upstream_connect_ms)},
    {"upstream_response", parse_duration, offsetof(struct config_timeouts, upstream_response_ms)},
    {"shutdown_grace", parse_duration_or_zero, offsetof(struct config_timeouts, shutdown_grace_ms)},
    {NULL, NULL, 0},
};

static int
parse_timeouts(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return parse_mapping(ld, n, timeout_keys, dst, key);
}

static const struct key limit_keys[] = {
    {"max_header_bytes", parse_header_size, offsetof(struct config_limits, max_header_bytes)},
    {"max_body_bytes", parse_size_or_zero, offsetof(struct config_limits, max_body_bytes)},
    {"max_connections", parse_connections, offsetof(struct config_limits, max_connections)},
    {NULL, NULL, 0},
};

static int
parse_limits(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return parse_mapping(ld, n, limit_keys, dst, key);
}

static int
parse_access_log(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config *cfg = dst;
    const char *s = scalar(ld, n, key);

    if (s == NULL)
        return -1;
    if (strcmp(s, "stdout") == 0) {
        cfg->access_log = CONFIG_ACCESS_LOG_STDOUT;
        return 0;
    }
    if (strcmp(s, "off") == 0) {
        cfg->access_log = CONFIG_ACCESS_LOG_OFF;
        return 0;
    }
    if (strlen(s) > MAX_LOG_PATH) {
        node_error(ld, n, "%s: longer than %d bytes", key, MAX_LOG_PATH);
        return -1;
    }
    cfg->access_log = CONFIG_ACCESS_LOG_FILE;
    return parse_string(ld, key, n, &cfg->access_log_path);
}

static int
parse_log_format(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    enum config_log_format *out = dst;
    const char *s = scalar(ld, n, key);

    if (s == NULL)
        return -1;
    if (strcmp(s, "combined") == 0)
        *out = CONFIG_LOG_COMBINED;
    else if (strcmp(s, "json") == 0)
        *out = CONFIG_LOG_JSON;
    else {
        node_error(ld, n, "%s: \"%s\" is not combined or json", key, s);
        return -1;
    }
    return 0;
}

/* kubernetes. */

static bool
is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* RFC 1123 labels as Kubernetes names them: lowercase letters, digits and '-', 1 to 63 of them,
 * starting and ending with a letter or digit. */
static bool
dns_label_valid(const char *s, size_t len)
{
    if (len == 0 || len > MAX_LABEL || !is_lower_alnum(s[0]) || !is_lower_alnum(s[len - 1]))
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_lower_alnum(s[i]) && s[i] != '-')
            return false;
    return true;
}

/* A DNS-1123 subdomain: such labels joined by '.', at most 253 bytes (an object's name). */
static bool
dns_subdomain_valid(const char *s)
{
    const char *dot;

    if (strlen(s) > MAX_HOST)
        return false;
    for (; (dot = strchr(s, '.')) != NULL; s = dot + 1)
        if (!dns_label_valid(s, (size_t)(dot - s)))
            return false;
    return dns_label_valid(s, strlen(s));
}

/* An IngressClass is an object, so the class an Ingress names is an object's name. */
static int
parse_ingress_class(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, "kubernetes.ingress_class");

    (void)key;
    if (s == NULL)
        return -1;
    if (!dns_subdomain_valid(s)) {
        node_error(ld, n,
                   "kubernetes.ingress_class: \"%s\" is not a DNS-1123 subdomain (at most 253 "
                   "lowercase letters, digits, '-' and '.', each label starting and ending with a "
                   "letter or digit)",
                   s);
        return -1;
    }
    return parse_string(ld, "kubernetes.ingress_class", n, dst);
}

static int
parse_namespaces(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    struct config_kubernetes *k = dst;
    int rc = 0;

    (void)key;
    k->namespaces =
        list_alloc(ld, n, "kubernetes.namespaces", sizeof(*k->namespaces), &k->nnamespaces);
    if (n->type != YAML_SEQUENCE_NODE || ld->oom)
        return -1;
    for (size_t i = 0; i < k->nnamespaces; i++) {
        yaml_node_t *item = seq_item(ld, n, i);
        const char *s = scalar(ld, item, "kubernetes.namespaces");
        size_t j = 0;

        if (s == NULL) {
            rc = -1;
            continue;
        }
        if (!dns_label_valid(s, strlen(s))) {
            node_error(ld, item,
                       "kubernetes.namespaces: \"%s\" is not a DNS-1123 label (1 to 63 lowercase "
                       "letters, digits and '-', starting and ending with a letter or digit)",
                       s);
            rc = -1;
            continue;
        }
        while (j < i && (k->namespaces[j] == NULL || strcmp(k->namespaces[j], s) != 0))
            j++;
        if (j < i) {
            node_error(ld, item, "kubernetes.namespaces: \"%s\" is already in the list", s);
            rc = -1;
            continue;
        }
        if ((k->namespaces[i] = ld_strdup(ld, s)) == NULL)
            return -1;
    }
    return rc;
}

/*
 * Why s is not "https://IP:PORT" (IPv6 in brackets, nothing after the port), or NULL when it is.
 * The provider connects to the address as written: a host name would need a lookup at start and
 * a certificate checked against that name, which in-cluster configs never need.
 */
static const char *
kube_server_problem(const char *s, char *buf, size_t cap)
{
    const char *rest = s + strlen("https://"), *colon, *host_end;
    char host[INET6_ADDRSTRLEN], msg[MSG_MAX];
    struct sockaddr_storage ss;
    socklen_t len;
    uint8_t ip[16];
    int family;

    if (strncmp(s, "https://", strlen("https://")) != 0)
        return "";
    if (rest[strcspn(rest, "/?#")] != '\0')
        return " (nothing may follow the port)";
    if (rest[0] == '[') {
        host_end = strchr(rest, ']');
        if (host_end == NULL)
            return " (IPv6 as [IP]:PORT)";
        colon = host_end[1] == ':' ? host_end + 1 : NULL;
        if (colon == NULL && host_end[1] != '\0')
            return " (IPv6 as [IP]:PORT)";
        rest++;
        family = AF_INET6;
    } else {
        colon = strrchr(rest, ':');
        if (colon != NULL && memchr(rest, ':', (size_t)(colon - rest)) != NULL)
            return " (IPv6 as [IP]:PORT)";
        host_end = colon != NULL ? colon : rest + strlen(rest);
        family = AF_INET;
    }
    if (host_end == rest)
        return " (no IP)";
    if ((size_t)(host_end - rest) >= sizeof(host)) {
        snprintf(buf, cap, " (not an IP address; host names are not looked up)");
        return buf;
    }
    memcpy(host, rest, (size_t)(host_end - rest));
    host[host_end - rest] = '\0';
    if (inet_pton(family, host, ip) != 1) {
        snprintf(buf, cap, " (\"%s\" is not an IP address; host names are not looked up)", host);
        return buf;
    }
    if (colon == NULL)
        return " (no port)";
    if (addr_parse(s + strlen("https://"), &ss, &len, msg, sizeof(msg)) < 0)
        return " (a port from 1 to 65535)";
    return NULL;
}

static int
parse_kube_server(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    const char *s = scalar(ld, n, "kubernetes.server"), *why;
    char buf[MSG_MAX];

    (void)key;
    if (s == NULL)
        return -1;
    if ((why = kube_server_problem(s, buf, sizeof(buf))) != NULL) {
        node_error(ld, n, "kubernetes.server: \"%s\" must be https://IP:PORT%s", s, why);
        return -1;
    }
    return parse_string(ld, "kubernetes.server", n, dst);
}

/* token_file, ca_file: paths, opened by the provider (the token again for each request). */
static int
parse_kube_path(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    char what[64];

    snprintf(what, sizeof(what), "kubernetes.%s", key);
    return parse_string(ld, what, n, dst);
}

static const struct key kubernetes_keys[] = {
    {"ingress_class", parse_ingress_class, offsetof(struct config_kubernetes, ingress_class)},
    {"namespaces", parse_namespaces, 0},
    {"server", parse_kube_server, offsetof(struct config_kubernetes, server)},
    {"token_file", parse_kube_path, offsetof(struct config_kubernetes, token_file)},
    {"ca_file", parse_kube_path, offsetof(struct config_kubernetes, ca_file)},
    {NULL, NULL, 0},
};

/* kubernetes: the provider is on when the key is there; check_kubernetes() fills the defaults. */
static int
parse_kubernetes(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    return parse_mapping(ld, n, kubernetes_keys, dst, key);
}

/* default_service: only recorded; check_default_service() finds it among the services. */
static int
parse_default_service(struct loader *ld, const char *key, yaml_node_t *n, void *dst)
{
    (void)dst;
    return scalar(ld, n, key) == NULL ? -1 : 0;
}

static const struct key top_keys[] = {
    {"listen", parse_listen, 0},
    {"admin", parse_admin, offsetof(struct config, admin)},
    {"workers", parse_workers, offsetof(struct config, workers)},
    {"busy_poll", parse_bool, offsetof(struct config, busy_poll)},
    {"tls", parse_tls, 0},
    {"routes", parse_routes, 0},
    {"default_service", parse_default_service, 0},
    {"services", parse_services, 0},
    {"resolvers", parse_resolvers, 0},
    {"trusted_proxies", parse_trusted_proxies, 0},
    {"timeouts", parse_timeouts, offsetof(struct config, timeouts)},
    {"limits", parse_limits, offsetof(struct config, limits)},
    {"access_log", parse_access_log, 0},
    {"access_log_format", parse_log_format, offsetof(struct config, access_log_format)},
    {"kubernetes", parse_kubernetes, offsetof(struct config, kubernetes)},
    {NULL, NULL, 0},
};

/* Cross-checks, once the whole file is parsed; root is the top-level mapping or NULL. */

/*
 * `kubernetes:` turns the provider on even when null (every key inside commented out): a provider
 * that silently stayed off would serve none of the Ingresses.
 */
static void
check_kubernetes(struct loader *ld, yaml_node_t *root)
{
    struct config_kubernetes *k = &ld->cfg->kubernetes;

    for (yaml_node_pair_t *p = root != NULL ? root->data.mapping.pairs.start : NULL;
         p != NULL && p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *key = yaml_document_get_node(ld->doc, p->key);
        if (key->type != YAML_SCALAR_NODE ||
            strcmp((const char *)key->data.scalar.value, "kubernetes") != 0)
            continue;
        k->enabled = true;
        k->line = (unsigned)key->start_mark.line + 1;
        k->col = (unsigned)key->start_mark.column + 1;
        if (k->ingress_class == NULL)
            k->ingress_class = ld_strdup(ld, "portier");
        return;
    }
}

static void
check_listen(struct loader *ld, yaml_node_t *root)
{
    struct config *cfg = ld->cfg;
    yaml_node_t *listen = mapping_get(ld, root, "listen"), *admin = mapping_get(ld, root, "admin");
    char msg[MSG_MAX];
    int rc;

    if (listen == NULL) {
        if ((cfg->listeners = ld_calloc(ld, 1, sizeof(*cfg->listeners))) == NULL ||
            (cfg->listeners[0].addr.spec = ld_strdup(ld, DEFAULT_LISTEN)) == NULL)
            return;
        cfg->nlisteners = 1;
        rc = addr_parse(DEFAULT_LISTEN, &cfg->listeners[0].addr.ss, &cfg->listeners[0].addr.len,
                        msg, sizeof(msg));
        assert(rc == 0); /* a constant that addr_parse() accepts */
        (void)rc;
    }
    for (size_t i = 0; listen != NULL && i < cfg->nlisteners; i++) {
        yaml_node_t *tls = mapping_get(ld, seq_item(ld, listen, i), "tls");
        /* The provider's certificates come from Ingresses' Secrets, maybe none at start. */
        if (cfg->listeners[i].tls && cfg->ncerts == 0 && !cfg->kubernetes.enabled)
            node_error(ld, tls, "tls: true needs tls.certificates");
    }
    for (size_t i = 0; cfg->admin != NULL && cfg->admin->spec != NULL && i < cfg->nlisteners; i++) {
        const struct config_addr *l = &cfg->listeners[i].addr;
        if (l->spec == NULL || !addr_overlap(cfg->admin, l))
            continue;
        if (addr_equal(cfg->admin, l))
            node_error(ld, admin, "admin: \"%s\" is also a listener", cfg->admin->spec);
        else
            node_error(ld, admin,
                       "admin: \"%s\" overlaps the listener \"%s\": a wildcard address takes its "
                       "port on every address ([::] on IPv4 ones too)",
                       cfg->admin->spec, l->spec);
        break;
    }
}

static void
check_routes(struct loader *ld, yaml_node_t *root)
{
    struct config *cfg = ld->cfg;
    yaml_node_t *routes = mapping_get(ld, root, "routes"), *def;
    const char *name;
    bool tls = false;
    int idx;

    for (size_t i = 0; i < cfg->nlisteners; i++)
        tls = tls || cfg->listeners[i].tls;
    for (size_t i = 0; routes != NULL && i < cfg->nroutes; i++) {
        struct config_route *r = &cfg->routes[i];
        if (r->redirect_https && !tls)
            node_error(ld, mapping_get(ld, seq_item(ld, routes, i), "redirect_https"),
                       "redirect_https: true needs a listener with tls: true to send requests to");
        if (r->service_name == NULL)
            continue;
        if ((idx = service_lookup(ld, r->service_name)) < 0)
            node_error(ld, mapping_get(ld, seq_item(ld, routes, i), "service"),
                       "service: no service is called \"%s\"", r->service_name);
        else
            r->service = (size_t)idx;
    }
    def = mapping_get(ld, root, "default_service");
    if (def == NULL || def->type != YAML_SCALAR_NODE)
        return;
    name = (const char *)def->data.scalar.value;
    if ((cfg->default_service = service_lookup(ld, name)) < 0)
        node_error(ld, def, "default_service: no service is called \"%s\"", name);
}

/* Loading. */

/* Reports a libyaml failure; a reader error (bad encoding) has an offset instead of a mark. */
static void
yaml_error(struct loader *ld, const yaml_parser_t *p, const char *buf)
{
    size_t line = p->problem_mark.line + 1, col = p->problem_mark.column + 1;
    const char *problem = p->problem != NULL ? p->problem : "cannot parse";

    if (p->error == YAML_MEMORY_ERROR) {
        ld->oom = true;
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        line = 1;
        col = 1;
        for (size_t i = 0; i < p->problem_offset; i++, col++)
            if (buf[i] == '\n') {
                line++;
                col = 0;
            }
        mark_error(ld, line, col, "YAML: %s", problem);
        return;
    }
    if (p->context != NULL)
        mark_error(ld, line, col, "YAML: %s %s at line %zu column %zu", problem, p->context,
                   p->context_mark.line + 1, p->context_mark.column + 1);
    else
        mark_error(ld, line, col, "YAML: %s", problem);
}

/* The first pass's state: the open collections and the anchors of the current document. */
struct shape {
    struct {
        int anchor;     /* index in anchors, or -1 */
        uint64_t start; /* nodes counted when it opened, itself included */
    } open[MAX_DEPTH];
    size_t depth;
    struct {
        char *name;    /* owned */
        uint64_t size; /* nodes it repeats where aliased; 1 while it is still open */
    } anchors[MAX_ANCHORS];
    size_t nanchors;
    uint64_t nodes; /* so far, each alias counted as the nodes it repeats */
};

static void
shape_forget_anchors(struct shape *sh)
{
    for (size_t i = 0; i < sh->nanchors; i++)
        free(sh->anchors[i].name);
    sh->nanchors = 0;
}

/* Records the node at ev (one more node) and its anchor, if any. Returns 0, or -1 after an error.
 */
static int
shape_node(struct loader *ld, struct shape *sh, const yaml_event_t *ev, const yaml_char_t *anchor,
           bool collection)
{
    const yaml_mark_t *m = &ev->start_mark;
    int idx = -1;

    if (collection && sh->depth == MAX_DEPTH) {
        mark_error(ld, m->line + 1, m->column + 1, "YAML: nested deeper than %d levels", MAX_DEPTH);
        return -1;
    }
    sh->nodes++;
    if (anchor != NULL) {
        if (sh->nanchors == MAX_ANCHORS) {
            mark_error(ld, m->line + 1, m->column + 1, "YAML: more than %d anchors (&name)",
                       MAX_ANCHORS);
            return -1;
        }
        idx = (int)sh->nanchors;
        sh->anchors[idx].size = 1;
        if ((sh->anchors[idx].name = ld_strdup(ld, (const char *)anchor)) == NULL)
            return -1;
        sh->nanchors++;
    }
    if (collection) {
        sh->open[sh->depth].anchor = idx;
        sh->open[sh->depth].start = sh->nodes;
        sh->depth++;
    }
    return 0;
}

/* An alias counts as the nodes of the latest anchor of its name (libyaml reports unknown ones). */
static int
shape_alias(struct loader *ld, struct shape *sh, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    size_t i = sh->nanchors;

    while (i > 0 && strcmp(sh->anchors[i - 1].name, name) != 0)
        i--;
    sh->nodes += i > 0 ? sh->anchors[i - 1].size : 1;
    if (sh->nodes > MAX_EXPANDED) {
        mark_error(ld, ev->start_mark.line + 1, ev->start_mark.column + 1,
                   "YAML: aliases expand the document past %d nodes", MAX_EXPANDED);
        return -1;
    }
    return 0;
}

/*
 * The first pass, over libyaml's events, before any tree is built: it stops at the first YAML
 * error, or at the first node that goes past a limit: nested deeper than MAX_DEPTH (libyaml's
 * scanner slows down with each open level: a few MB of '[' took minutes), more than MAX_ANCHORS
 * anchors in a document (libyaml's loader looks each alias up among them one by one), or aliases
 * that repeat more than MAX_EXPANDED nodes (the checks walk an aliased node once per alias).
 * Returns 0, or -1 after recording the error.
 */
static int
yaml_shape_check(struct loader *ld, const char *buf, size_t len)
{
    struct shape *sh = ld_calloc(ld, 1, sizeof(*sh));
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = -1;

    if (sh == NULL)
        return -1;
    if (!yaml_parser_initialize(&parser)) {
        ld->oom = true;
        free(sh);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    for (bool done = false; !done;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_error(ld, &parser, buf);
            break;
        }
        int bad = 0;
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
            bad = shape_node(ld, sh, &ev, ev.data.scalar.anchor, false);
            break;
        case YAML_SEQUENCE_START_EVENT:
            bad = shape_node(ld, sh, &ev, ev.data.sequence_start.anchor, true);
            break;
        case YAML_MAPPING_START_EVENT:
            bad = shape_node(ld, sh, &ev, ev.data.mapping_start.anchor, true);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            /* libyaml pairs every end with a start, so depth > 0 here. */
            sh->depth--;
            if (sh->open[sh->depth].anchor >= 0)
                sh->anchors[sh->open[sh->depth].anchor].size =
                    sh->nodes - sh->open[sh->depth].start + 1;
            break;
        case YAML_ALIAS_EVENT:
            bad = shape_alias(ld, sh, &ev);
            break;
        case YAML_DOCUMENT_END_EVENT:
            shape_forget_anchors(sh); /* anchors are per document */
            break;
        case YAML_STREAM_END_EVENT:
            rc = 0;
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
        if (bad < 0)
            break;
    }
    shape_forget_anchors(sh);
    free(sh);
    yaml_parser_delete(&parser);
    return rc;
}

static void
config_defaults(struct config *cfg)
{
    cfg->default_service = -1;
    cfg->busy_poll = true;
    cfg->timeouts = (struct config_timeouts){
        .client_header_ms = 10 * 1000,
        .client_body_ms = 60 * 1000,
        .client_idle_ms = 60 * 1000,
        .tls_handshake_ms = 10 * 1000,
        .upstream_connect_ms = 2 * 1000,
        .upstream_response_ms = 60 * 1000,
        .shutdown_grace_ms = 10 * 1000,
    };
    cfg->limits = (struct config_limits){
        .max_header_bytes = 16384,
        .max_body_bytes = 0,
        .max_connections = 10000,
    };
    cfg->access_log = CONFIG_ACCESS_LOG_STDOUT;
    cfg->access_log_format = CONFIG_LOG_COMBINED;
}

/* Parses the document's root into ld->cfg and cross-checks it. */
static void
load_document(struct loader *ld)
{
    yaml_node_t *root = yaml_document_get_root_node(ld->doc);

    if (root != NULL && is_null(root))
        root = NULL;
    if (root != NULL && root->type != YAML_MAPPING_NODE) {
        node_error(ld, root,
                   "the config must be a mapping of keys (listen, routes, services, ...), "
                   "not %s",
                   kind_str(root->type));
        return;
    }
    if (root != NULL)
        parse_mapping(ld, root, top_keys, ld->cfg, "config");
    if (ld->oom)
        return;
    check_kubernetes(ld, root);
    check_listen(ld, root);
    check_routes(ld, root);
}

struct config *
config_parse(const char *name, const char *buf, size_t len, char *err, size_t errlen)
{
    struct loader ld = {.name = name};
    struct config_holder *h;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool parsed = false;

    if (errlen > 0)
        err[0] = '\0';
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "%s: out of memory\n", name);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if ((h = ld_calloc(&ld, 1, sizeof(*h))) == NULL)
        goto fail;
    atomic_init(&h->refs, 1);
    ld.cfg = &h->cfg;
    config_defaults(ld.cfg);
    if ((ld.cfg->path = ld_strdup(&ld, name)) == NULL)
        goto fail;
    if (yaml_shape_check(&ld, buf, len) < 0)
        goto fail;
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(&ld, &parser, buf);
        goto fail;
    }
    parsed = true;
    ld.doc = &doc;
    load_document(&ld);
    /* A second document would be silently ignored; say so instead. */
    if (!yaml_parser_load(&parser, &extra)) {
        yaml_error(&ld, &parser, buf);
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&extra);
        if (root != NULL && !is_null(root))
            node_error(&ld, root, "only one YAML document is allowed");
        yaml_document_delete(&extra);
    }
fail:
    if (parsed)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (ld.nerrors == 0 && ld.dropped == 0 && !ld.oom) {
        free(ld.service_names);
        return &h->cfg;
    }
    free(ld.service_names);
    errors_format(&ld, err, errlen);
    for (size_t i = 0; i < ld.nerrors; i++)
        free(ld.errors[i].msg);
    free(ld.errors);
    if (h != NULL)
        config_free(&h->cfg);
    return NULL;
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
    struct config *cfg = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if ((f = fopen(path, "rb")) == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    if ((buf = malloc(CONFIG_MAX_FILE_BYTES + 1)) == NULL) {
        snprintf(err, errlen, "%s: out of memory\n", path);
        goto out;
    }
    len = fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s\n", path, strerror(errno));
        goto out;
    }
    if (len > CONFIG_MAX_FILE_BYTES) {
        snprintf(err, errlen, "%s: larger than 1 MiB (%d bytes), the most a config may be\n", path,
                 CONFIG_MAX_FILE_BYTES);
        goto out;
    }
    cfg = config_parse(path, buf, len, err, errlen);
out:
    free(buf);
    fclose(f);
    return cfg;
}

/* Freeing. */

static void
addr_fini(struct config_addr *a)
{
    free(a->spec);
}

static void
cert_fini(struct config_cert *c)
{
    free(c->cert);
    free(c->key);
    free(c->cert_pem);
    free(c->key_pem);
}

static void
route_fini(struct config_route *r)
{
    free(r->host);
    free(r->path);
    free(r->service_name);
}

/* Also a provider's service, whose servers may be NULL with nservers 0. */
static void
service_fini(struct config_service *svc)
{
    for (size_t j = 0; j < svc->nservers; j++)
        addr_fini(&svc->servers[j]);
    free(svc->servers);
    free(svc->name);
    free(svc->dns);
    free(svc->dns_name);
    free(svc->health.path);
}

static void
kubernetes_fini(struct config_kubernetes *k)
{
    free(k->ingress_class);
    for (size_t i = 0; i < k->nnamespaces; i++)
        free(k->namespaces[i]);
    free(k->namespaces);
    free(k->server);
    free(k->token_file);
    free(k->ca_file);
}

/* Frees cfg, complete or not: every array is as long as its count, or zeroed past what is set. */
static void
config_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        addr_fini(&cfg->listeners[i].addr);
    free(cfg->listeners);
    if (cfg->admin != NULL)
        addr_fini(cfg->admin);
    free(cfg->admin);
    for (size_t i = 0; i < cfg->ncerts; i++)
        cert_fini(&cfg->certs[i]);
    free(cfg->certs);
    for (size_t i = 0; i < cfg->nroutes; i++)
        route_fini(&cfg->routes[i]);
    free(cfg->routes);
    for (size_t i = 0; i < cfg->nservices; i++)
        service_fini(&cfg->services[i]);
    free(cfg->services);
    for (size_t i = 0; i < cfg->nresolvers; i++)
        addr_fini(&cfg->resolvers[i]);
    free(cfg->resolvers);
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        free(cfg->trusted_proxies[i].spec);
    free(cfg->trusted_proxies);
    free(cfg->access_log_path);
    kubernetes_fini(&cfg->kubernetes);
    free(cfg->path);
    free((struct config_holder *)cfg);
}

void
config_extra_free(struct config_extra *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->nroutes; i++)
        route_fini(&x->routes[i]);
    free(x->routes);
    for (size_t i = 0; i < x->nservices; i++)
        service_fini(&x->services[i]);
    free(x->services);
    for (size_t i = 0; i < x->ncerts; i++)
        cert_fini(&x->certs[i]);
    free(x->certs);
    memset(x, 0, sizeof(*x));
}

/* References. */

struct config *
config_ref(struct config *cfg)
{
    struct config_holder *h = (struct config_holder *)cfg;

    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return cfg;
}

void
config_unref(struct config *cfg)
{
    struct config_holder *h = (struct config_holder *)cfg;

    /* acq_rel: every reader's last access happens before the free. */
    if (cfg != NULL && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

/* Queries. */

int
config_service_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nservices; i++)
        if (cfg->services[i].name != NULL && strcmp(cfg->services[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool
cidr_match(const struct config_cidr *c, int family, const uint8_t *a)
{
    unsigned full = c->prefix / 8, rest = c->prefix % 8;

    if (c->family != family)
        return false;
    if (memcmp(c->addr, a, full) != 0)
        return false;
    return rest == 0 || ((c->addr[full] ^ a[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

bool
config_trusted_proxy(const struct config *cfg, const struct sockaddr *sa)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    int family = sa->sa_family;
    const uint8_t *a;

    if (family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (family == AF_INET6) {
        a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, mapped, sizeof(mapped)) == 0) {
            family = AF_INET;
            a += sizeof(mapped);
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++)
        if (cidr_match(&cfg->trusted_proxies[i], family, a))
            return true;
    return false;
}

static bool
listener_in(const struct config_listener *l, const struct config *cfg)
{
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (addr_equal(&l->addr, &cfg->listeners[i].addr) && l->tls == cfg->listeners[i].tls)
            return true;
    return false;
}

static bool
listen_equal(const struct config *a, const struct config *b)
{
    if (a->nlisteners != b->nlisteners)
        return false;
    for (size_t i = 0; i < a->nlisteners; i++)
        if (!listener_in(&a->listeners[i], b))
            return false;
    return true;
}

static bool
namespaces_equal(const struct config_kubernetes *a, const struct config_kubernetes *b)
{
    if (a->nnamespaces != b->nnamespaces)
        return false;
    /* Each list is distinct, so the same count and every one of a in b is the same set. */
    for (size_t i = 0; i < a->nnamespaces; i++) {
        size_t j = 0;
        while (j < b->nnamespaces && strcmp(a->namespaces[i], b->namespaces[j]) != 0)
            j++;
        if (j == b->nnamespaces)
            return false;
    }
    return true;
}

/* The provider's watches are opened once, at start; its ingress_class applies to each change. */
static bool
kubernetes_restart_equal(const struct config_kubernetes *a, const struct config_kubernetes *b)
{
    return a->enabled == b->enabled && str_equal(a->server, b->server) &&
           str_equal(a->token_file, b->token_file) && str_equal(a->ca_file, b->ca_file) &&
           namespaces_equal(a, b);
}

int
config_needs_restart(const struct config *old, const struct config *new, char *what, size_t len)
{
    const char *keys[4];
    size_t n = 0, used = 0;

    if (!listen_equal(old, new))
        keys[n++] = "listen";
    if (old->workers != new->workers)
        keys[n++] = "workers";
    if ((old->admin == NULL) != (new->admin == NULL) ||
        (old->admin != NULL && !addr_equal(old->admin, new->admin)))
        keys[n++] = "admin";
    if (!kubernetes_restart_equal(&old->kubernetes, &new->kubernetes))
        keys[n++] = "kubernetes";
    if (len > 0)
        what[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++) {
        snprintf(what + used, len - used, "%s%s", i > 0 ? ", " : "", keys[i]);
        used += strlen(what + used);
    }
    return n > 0;
}

/* Providers' additions. */

static bool
cert_equal(const struct config_cert *a, const struct config_cert *b)
{
    return str_equal(a->cert, b->cert) && str_equal(a->key, b->key) &&
           str_equal(a->cert_pem, b->cert_pem) && str_equal(a->key_pem, b->key_pem);
}

static bool
route_equal(const struct config_route *a, const struct config_route *b)
{
    return str_equal(a->host, b->host) && a->wildcard == b->wildcard &&
           a->one_label == b->one_label && str_equal(a->path, b->path) && a->exact == b->exact &&
           a->service == b->service && str_equal(a->service_name, b->service_name) &&
           a->redirect_https == b->redirect_https && a->hsts_ms == b->hsts_ms;
}

static bool
service_equal(const struct config_service *a, const struct config_service *b)
{
    if (!str_equal(a->name, b->name) || a->kube != b->kube || a->nservers != b->nservers ||
        !str_equal(a->dns, b->dns) || !str_equal(a->health.path, b->health.path) ||
        a->health.interval_ms != b->health.interval_ms ||
        a->health.timeout_ms != b->health.timeout_ms)
        return false;
    for (size_t i = 0; i < a->nservers; i++)
        if (!addr_equal(&a->servers[i], &b->servers[i]))
            return false;
    return true;
}

bool
config_extra_equal(const struct config_extra *a, const struct config_extra *b)
{
    if (a->nroutes != b->nroutes || a->nservices != b->nservices || a->ncerts != b->ncerts ||
        a->default_service != b->default_service)
        return false;
    for (size_t i = 0; i < a->nroutes; i++)
        if (!route_equal(&a->routes[i], &b->routes[i]))
            return false;
    for (size_t i = 0; i < a->nservices; i++)
        if (!service_equal(&a->services[i], &b->services[i]))
            return false;
    for (size_t i = 0; i < a->ncerts; i++)
        if (!cert_equal(&a->certs[i], &b->certs[i]))
            return false;
    return true;
}

/*
 * Copies. Each takes src's values, then gives every pointer its own copy, clearing them all
 * before the first allocation: a copy that memory cut short holds only what it owns, and the
 * usual _fini() frees it.
 */

static int
str_copy(char **dst, const char *src)
{
    *dst = NULL;
    return src != NULL && (*dst = strdup(src)) == NULL ? -1 : 0;
}

static int
addr_copy(struct config_addr *dst, const struct config_addr *src)
{
    *dst = *src;
    return str_copy(&dst->spec, src->spec);
}

static int
cert_copy(struct config_cert *dst, const struct config_cert *src)
{
    *dst = *src;
    dst->key = dst->cert_pem = dst->key_pem = NULL;
    return str_copy(&dst->cert, src->cert) < 0 || str_copy(&dst->key, src->key) < 0 ||
                   str_copy(&dst->cert_pem, src->cert_pem) < 0 ||
                   str_copy(&dst->key_pem, src->key_pem) < 0
               ? -1
               : 0;
}

/* shift: how many services come before those src's index counts. */
static int
route_copy(struct config_route *dst, const struct config_route *src, size_t shift)
{
    *dst = *src;
    dst->path = dst->service_name = NULL;
    dst->service += shift;
    return str_copy(&dst->host, src->host) < 0 || str_copy(&dst->path, src->path) < 0 ||
                   str_copy(&dst->service_name, src->service_name) < 0
               ? -1
               : 0;
}

static int
service_copy(struct config_service *dst, const struct config_service *src)
{
    *dst = *src;
    dst->servers = NULL;
    dst->nservers = 0;
    dst->dns = dst->dns_name = dst->health.path = NULL;
    if (str_copy(&dst->name, src->name) < 0 || str_copy(&dst->dns, src->dns) < 0 ||
        str_copy(&dst->dns_name, src->dns_name) < 0 ||
        str_copy(&dst->health.path, src->health.path) < 0)
        return -1;
    if (src->nservers > 0 && (dst->servers = calloc(src->nservers, sizeof(*dst->servers))) == NULL)
        return -1;
    for (size_t i = 0; i < src->nservers; i++)
        if (addr_copy(&dst->servers[dst->nservers++], &src->servers[i]) < 0)
            return -1;
    return 0;
}

static int
kubernetes_copy(struct config_kubernetes *dst, const struct config_kubernetes *src)
{
    *dst = *src;
    dst->namespaces = NULL;
    dst->nnamespaces = 0;
    dst->server = dst->token_file = dst->ca_file = NULL;
    if (str_copy(&dst->ingress_class, src->ingress_class) < 0 ||
        str_copy(&dst->server, src->server) < 0 ||
        str_copy(&dst->token_file, src->token_file) < 0 ||
        str_copy(&dst->ca_file, src->ca_file) < 0)
        return -1;
    if (src->nnamespaces > 0 &&
        (dst->namespaces = calloc(src->nnamespaces, sizeof(*dst->namespaces))) == NULL)
        return -1;
    for (size_t i = 0; i < src->nnamespaces; i++)
        if (str_copy(&dst->namespaces[dst->nnamespaces++], src->namespaces[i]) < 0)
            return -1;
    return 0;
}

/* calloc() for an array that may be empty (NULL then); running out of memory sets *oom. */
static void *
items_new(size_t n, size_t size, bool *oom)
{
    void *p = n > 0 ? calloc(n, size) : NULL;

    if (n > 0 && p == NULL)
        *oom = true;
    return p;
}

/*
 * Copies base into cfg, but for its routes, services and certificates, which config_extend()
 * copies with x's. cfg holds base's values and no pointer of base's (all are NULL), so a copy cut
 * short frees as usual.
 */
static int
config_copy_settings(struct config *cfg, const struct config *base)
{
    bool oom = false;

    if (str_copy(&cfg->path, base->path) < 0 ||
        str_copy(&cfg->access_log_path, base->access_log_path) < 0 ||
        kubernetes_copy(&cfg->kubernetes, &base->kubernetes) < 0)
        return -1;
    cfg->listeners = items_new(base->nlisteners, sizeof(*cfg->listeners), &oom);
    for (size_t i = 0; !oom && i < base->nlisteners; i++) {
        struct config_listener *l = &cfg->listeners[cfg->nlisteners++];
        *l = base->listeners[i];
        oom = addr_copy(&l->addr, &base->listeners[i].addr) < 0;
    }
    if (!oom && base->admin != NULL)
        oom = (cfg->admin = calloc(1, sizeof(*cfg->admin))) == NULL ||
              addr_copy(cfg->admin, base->admin) < 0;
    if (!oom)
        cfg->resolvers = items_new(base->nresolvers, sizeof(*cfg->resolvers), &oom);
    for (size_t i = 0; !oom && i < base->nresolvers; i++)
        oom = addr_copy(&cfg->resolvers[cfg->nresolvers++], &base->resolvers[i]) < 0;
    if (!oom)
        cfg->trusted_proxies =
            items_new(base->ntrusted_proxies, sizeof(*cfg->trusted_proxies), &oom);
    for (size_t i = 0; !oom && i < base->ntrusted_proxies; i++) {
        struct config_cidr *c = &cfg->trusted_proxies[cfg->ntrusted_proxies++];
        *c = base->trusted_proxies[i];
        oom = str_copy(&c->spec, base->trusted_proxies[i].spec) < 0;
    }
    return oom ? -1 : 0;
}

static void err_append(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends to the text in err, as much as fits. */
static void
err_append(char *err, size_t errlen, const char *fmt, ...)
{
    size_t used = errlen > 0 ? strlen(err) : 0;
    va_list ap;

    if (used + 1 >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
}

/*
 * Sets drop[i] for each route i of x that the router would take for one before it: one of base's
 * (the file's wins) or an earlier one of x's, with a line in err for each. Sorting keeps this
 * O(n log n) for many routes. Returns 0, or -1 when memory ran out.
 */
static int
extra_routes_drop(const struct config *base, const struct config_extra *x, bool *drop, char *err,
                  size_t errlen)
{
    size_t nb = base->nroutes, n = nb + x->nroutes;
    struct route_key *keys;

    if (x->nroutes == 0)
        return 0;
    if ((keys = calloc(n, sizeof(*keys))) == NULL)
        return -1;
    for (size_t i = 0; i < nb; i++)
        keys[i] = route_key_of(&base->routes[i], i);
    for (size_t i = 0; i < x->nroutes; i++)
        keys[nb + i] = route_key_of(&x->routes[i], nb + i);
    qsort(keys, n, sizeof(*keys), route_key_cmp);
    for (size_t i = 1, first = 0; i < n; i++) {
        const struct route_key *k = &keys[i];

        if (!route_key_same(k, &keys[first])) {
            first = i;
            continue;
        }
        /* Within a group, lower indexes sort first; base's routes are distinct already. */
        assert(k->index >= nb);
        drop[k->index - nb] = true;
        err_append(err, errlen,
                   keys[first].index < nb
                       ? "%s: kubernetes route %s %s is also in the file; the file's wins\n"
                       : "%s: kubernetes route %s %s is there twice; the first wins\n",
                   base->path, k->host != NULL ? k->host : "(any host)", k->path);
    }
    free(keys);
    return 0;
}

struct config *
config_extend(const struct config *base, const struct config_extra *x, char *err, size_t errlen)
{
    struct config_holder *h = calloc(1, sizeof(*h));
    struct config *cfg = h != NULL ? &h->cfg : NULL;
    size_t nb = base->nservices;
    bool *drop = NULL, oom = false;

    if (errlen > 0)
        err[0] = '\0';
    if (h == NULL)
        goto fail;
    atomic_init(&h->refs, 1);
    /* base's values, then every pointer cleared before anything is copied (config_free()). */
    *cfg = *base;
    cfg->path = cfg->access_log_path = NULL;
    cfg->listeners = NULL;
    cfg->admin = NULL;
    cfg->certs = NULL;
    cfg->routes = NULL;
    cfg->services = NULL;
    cfg->resolvers = NULL;
    cfg->trusted_proxies = NULL;
    cfg->nlisteners = cfg->ncerts = cfg->nroutes = cfg->nservices = cfg->nresolvers =
        cfg->ntrusted_proxies = 0;
    memset(&cfg->kubernetes, 0, sizeof(cfg->kubernetes));
    assert(x->default_service < (int)x->nservices);
    if (cfg->default_service < 0 && x->default_service >= 0)
        cfg->default_service = x->default_service + (int)nb;
    if (config_copy_settings(cfg, base) < 0)
        goto fail;

    cfg->certs = items_new(base->ncerts + x->ncerts, sizeof(*cfg->certs), &oom);
    for (size_t i = 0; !oom && i < base->ncerts + x->ncerts; i++) {
        const struct config_cert *c =
            i < base->ncerts ? &base->certs[i] : &x->certs[i - base->ncerts];
        oom = cert_copy(&cfg->certs[cfg->ncerts++], c) < 0;
    }
    if (!oom)
        cfg->services = items_new(nb + x->nservices, sizeof(*cfg->services), &oom);
    for (size_t i = 0; !oom && i < nb + x->nservices; i++) {
        const struct config_service *s = i < nb ? &base->services[i] : &x->services[i - nb];
        oom = service_copy(&cfg->services[cfg->nservices++], s) < 0;
    }
    if (!oom)
        drop = items_new(x->nroutes, sizeof(*drop), &oom);
    if (!oom)
        oom = extra_routes_drop(base, x, drop, err, errlen) < 0;
    if (!oom)
        cfg->routes = items_new(base->nroutes + x->nroutes, sizeof(*cfg->routes), &oom);
    for (size_t i = 0; !oom && i < base->nroutes; i++)
        oom = route_copy(&cfg->routes[cfg->nroutes++], &base->routes[i], 0) < 0;
    for (size_t i = 0; !oom && i < x->nroutes; i++) {
        assert(x->routes[i].service < x->nservices);
        if (!drop[i])
            oom = route_copy(&cfg->routes[cfg->nroutes++], &x->routes[i], nb) < 0;
    }
    free(drop);
    if (!oom)
        return cfg;
fail:
    if (cfg != NULL)
        config_free(cfg);
    snprintf(err, errlen, "out of memory");
    return NULL;
}
