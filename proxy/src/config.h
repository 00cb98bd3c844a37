/*
 * Loads portier's YAML configuration into an immutable, reference-counted struct config; opening
 * the files it names, binding its addresses and resolving its DNS names are left to the modules
 * that use them.
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An error buffer of this size holds a screenful of errors; a smaller one works, with fewer. */
#define CONFIG_ERR_SIZE 8192
/* The most static servers of one service: a balancer's set holds no more (BALANCER_MAX_SERVERS). */
#define CONFIG_MAX_SERVERS 64
/* The largest config file config_load() reads: a Kubernetes ConfigMap holds no more. */
#define CONFIG_MAX_FILE_BYTES (1024 * 1024)

enum config_access_log {
    CONFIG_ACCESS_LOG_STDOUT,
    CONFIG_ACCESS_LOG_OFF,
    CONFIG_ACCESS_LOG_FILE,
};

enum config_log_format {
    CONFIG_LOG_COMBINED,
    CONFIG_LOG_JSON,
};

/* A numeric socket address and the text it was parsed from, for logs and metric labels. */
struct config_addr {
    char *spec; /* owned: as written ("127.0.0.1:8080"), or with the default port appended */
    struct sockaddr_storage ss;
    socklen_t len;
    unsigned line, col; /* where spec was written (1-based); 0 for a default address */
};

struct config_listener {
    struct config_addr addr;
    bool tls;
    unsigned tls_line, tls_col; /* where tls was set (1-based); 0 when it was not */
};

/* Paths, or PEM text a provider got (a Kubernetes Secret): nothing here opens the paths; tls.c
 * (and portier -t) do. */
struct config_cert {
    char *cert;     /* owned: a path, or with cert_pem set a name for messages ("secret ns/x") */
    char *key;      /* owned: a path, or with key_pem set a name for messages */
    char *cert_pem; /* owned: the certificate chain's PEM text, or NULL to read the cert file */
    char *key_pem;  /* owned: the key's PEM text, or NULL to read the key file */
    /* Where each path was written (1-based), so checks of the files can point at it. */
    unsigned cert_line, cert_col, key_line, key_col;
};

struct config_route {
    char *host;          /* owned: lowercase, trailing dot removed; "*.example.com" if wildcard;
                          * NULL for a route that matches any host (only a provider makes one) */
    bool wildcard;       /* host starts with "*.": matches names below the suffix, not the suffix */
    bool one_label;      /* a wildcard that matches one label only, as Kubernetes' "*.a.com" */
    char *path;          /* owned: a prefix starting with "/", as written; "/" by default */
    bool exact;          /* path must equal the request's path (Kubernetes' pathType Exact) */
    size_t service;      /* index into config.services */
    char *service_name;  /* owned: the same name as config.services[service].name */
    bool redirect_https; /* plain-HTTP requests get 308 to the https:// URL */
    uint64_t hsts_ms;    /* > 0: Strict-Transport-Security max-age on HTTPS responses */
};

/* Each server probed with "GET path" every interval; a probe without an answer within timeout
 * fails. */
struct config_health_check {
    char *path;           /* owned; NULL when the service has no active check. An origin-form
                           * path: '/' then RFC 3986 pchars and '/', at most 1024 bytes */
    uint64_t interval_ms; /* 5s unless set; at least 100ms */
    uint64_t timeout_ms;  /* min(2s, interval) unless set; never more than interval_ms */
};

/* Exactly one of servers (a non-empty static list) and dns is set; a provider's service (kube)
 * has neither or servers only: its list is what the provider saw and may be empty (503). */
struct config_service {
    char *name;                  /* owned: [A-Za-z0-9._-]+ */
    struct config_addr *servers; /* owned array of nservers; NULL for a dns service */
    size_t nservers;
    char *dns;         /* owned: "name:port" as written; NULL for a static service */
    char *dns_name;    /* owned: the name part of dns, as written (case and trailing dot kept) */
    uint16_t dns_port; /* the port part of dns; 0 for a static service */
    struct config_health_check health;
    bool kube; /* made by the Kubernetes provider (name "namespace/service:port") */
};

/* A trusted proxy network; a bare address is a /32 or /128. */
struct config_cidr {
    char *spec;       /* owned: as written */
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network address with the host bits cleared; IPv4 uses the first 4 */
    unsigned prefix;  /* 0-32 for IPv4, 0-128 for IPv6 */
};

/* The Kubernetes provider's settings (`kubernetes:`); present when enabled is true. In a pod,
 * server, token_file and ca_file default to the service account's (KUBERNETES_SERVICE_HOST and
 * _PORT, /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}). */
struct config_kubernetes {
    bool enabled;
    char *ingress_class; /* owned: "portier" unless set */
    char **namespaces;   /* owned, distinct; none = every namespace */
    size_t nnamespaces;
    char *server;       /* owned: "https://IP:PORT" as written, or NULL (from the environment) */
    char *token_file;   /* owned: or NULL (the service account's) */
    char *ca_file;      /* owned: or NULL (the service account's) */
    unsigned line, col; /* where `kubernetes:` was written, for messages */
};

/* All in milliseconds. Every one but shutdown_grace is at least 1. */
struct config_timeouts {
    uint64_t client_header_ms;     /* 10s: the request head must arrive within this */
    uint64_t client_body_ms;       /* 60s: the longest silence between reads of a request body */
    uint64_t client_idle_ms;       /* 60s: a keep-alive connection may wait this long */
    uint64_t tls_handshake_ms;     /* 10s: a TLS handshake must be over within this */
    uint64_t upstream_connect_ms;  /* 2s */
    uint64_t upstream_response_ms; /* 60s: to the response head, then between body reads */
    uint64_t shutdown_grace_ms;    /* 10s; 0 closes everything at once */
};

struct config_limits {
    uint64_t max_header_bytes; /* 16384, 1k to 1m: request line and header lines together */
    uint64_t max_body_bytes;   /* 0 = unlimited */
    uint64_t max_connections;  /* 10000, 1 to 1000000: client connections across all workers */
};

/*
 * A loaded configuration, read-only once config_load() returns it, so any thread may read it while
 * it holds a reference. Every pointer in it, and in the structs it points to, is owned by the
 * config and freed by the last config_unref(); borrow them no longer than a reference is held.
 * Arrays come with their count and are in file order.
 */
struct config {
    char *path; /* owned: the name the config was loaded under */

    struct config_listener *listeners; /* owned, 1 to 256 (default 0.0.0.0:80), none overlapping */
    size_t nlisteners;
    struct config_addr *admin; /* owned; NULL when there is no admin listener */
    unsigned workers;          /* 1-256, or 0 for auto (one per CPU) */
    bool busy_poll;            /* true: workers poll a moment before they sleep (busypoll.h) */

    struct config_cert *certs; /* owned; the first is the default certificate */
    size_t ncerts;

    struct config_route *routes; /* owned; no two with the same host, path (trailing '/' ignored
                                  * for prefixes, as the router compares them) and exactness */
    size_t nroutes;
    int default_service; /* index into services, or -1 (unknown hosts get 404) */

    struct config_service *services; /* owned; names unique */
    size_t nservices;

    struct config_addr *resolvers; /* owned, at most 16, distinct; port 53 unless given; none =
                                    * /etc/resolv.conf */
    size_t nresolvers;
    struct config_cidr *trusted_proxies; /* owned */
    size_t ntrusted_proxies;

    struct config_timeouts timeouts;
    struct config_limits limits;

    enum config_access_log access_log; /* CONFIG_ACCESS_LOG_STDOUT by default */
    char *access_log_path; /* owned; set only for CONFIG_ACCESS_LOG_FILE; < 4096 bytes */
    enum config_log_format access_log_format;

    struct config_kubernetes kubernetes;
};

/*
 * What a provider adds to a file's config: its routes (service an index into services here), its
 * services (kube set) and its certificates (PEM), and the default service when the file names none
 * (index into services, or -1). The owner frees it with config_extra_free().
 */
struct config_extra {
    struct config_route *routes;
    size_t nroutes;
    struct config_service *services;
    size_t nservices;
    struct config_cert *certs;
    size_t ncerts;
    int default_service;
};

/* Frees what x holds (each array and every string in it) and zeroes it; x itself is the caller's.
 */
void config_extra_free(struct config_extra *x);

/* Whether a and b would make the same config (same routes, services, servers in order, certs). */
bool config_extra_equal(const struct config_extra *a, const struct config_extra *b);

/*
 * A new config: a deep copy of base with x's routes, services and certificates after base's own
 * (x's route and default indexes moved past base's services). A route of x with the same host,
 * path and exactness as one of base's is left out (the file wins), with a line for it in err.
 * base's default_service, when set, wins over x's. Returns the config holding one reference, or
 * NULL when memory ran out. Neither base nor x is changed.
 */
struct config *config_extend(const struct config *base, const struct config_extra *x, char *err,
                             size_t errlen);

/*
 * Reads and checks the YAML file at path. Returns a config holding one reference, or NULL with
 * every error found in err (as many as fit): one per line, each ending in '\n', as
 * "FILE:LINE:COL: message" with FILE as path and LINE and COL 1-based at the offending value (or
 * key), in file order; a file that cannot be read, or is larger than CONFIG_MAX_FILE_BYTES, gives
 * "FILE: message". When errors do not fit, the last line is "... and N more errors". The caller
 * prints err as it is (portier -t to stderr, a reload to the log). On success err holds "". Pure
 * apart from reading path; keeps no global state.
 *
 * Everything a start would refuse the config for is checked here, except what depends on the
 * machine (an address in use, a port that needs privileges, a file that cannot be opened) and what
 * this build does not serve yet (main.c). Before a tree is built, YAML nested deeper than 64
 * levels, with more than 100 anchors in a document or whose aliases expand it past 1M nodes is
 * refused at the first node past the limit, so no input keeps a load busy for long.
 */
struct config *config_load(const char *path, char *err, size_t errlen);

/* As config_load(), from len bytes at buf, with name as FILE in errors and as config.path; len is
 * the caller's to bound (CONFIG_MAX_FILE_BYTES is not applied here). */
struct config *config_parse(const char *name, const char *buf, size_t len, char *err,
                            size_t errlen);

/* Takes one more reference to cfg, from any thread. Returns cfg. */
struct config *config_ref(struct config *cfg);

/* Drops one reference; the last one frees cfg and all it owns. config_unref(NULL) is a no-op. */
void config_unref(struct config *cfg);

/* Returns the index in cfg->services of the service called name (case-sensitive), or -1. */
int config_service_index(const struct config *cfg, const char *name);

/*
 * Returns true if sa (AF_INET or AF_INET6) falls in one of cfg->trusted_proxies. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d, as a dual-stack listener reports IPv4 peers) is matched as IPv4.
 */
bool config_trusted_proxy(const struct config *cfg, const struct sockaddr *sa);

/*
 * Compares the parts a reload cannot change: listen (the set of addresses and their tls flags),
 * workers, admin and kubernetes (but its ingress_class). Returns 1 if they differ and writes the
 * differing keys ("listen, workers") into what, or 0 if a reload can apply new in place of old
 * (what then holds "").
 */
int config_needs_restart(const struct config *old, const struct config *new, char *what,
                         size_t len);

#endif
