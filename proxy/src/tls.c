/*
 * TLS with OpenSSL: certificates loaded and checked, the server contexts they make, SNI, ALPN and
 * session tickets. The connection side (handshake, records) is in half.c.
 *
 * SNI picks, for the name a client asks for, one certificate of each key type: the first in the
 * config that has the name itself, else the first whose wildcard covers it. The certificates so
 * picked share one context, so OpenSSL chooses between RSA and ECDSA by the client's signature
 * algorithms; names that pick the same certificates share the context. The first certificate's
 * context is the default, and the one every connection starts with: its session cache is the one
 * OpenSSL uses for all.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tls.h"

/* Mozilla's "intermediate" profile (v5.7): TLS 1.2 ciphers with forward secrecy and AEAD only;
 * TLS 1.3's suites are OpenSSL's defaults, which are the same three. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

/* A session lives a day, as in Mozilla's profile; ticket keys are replaced every TICKET_PERIOD
 * and the old ones kept long enough to honour every ticket still within that day. */
#define SESSION_TIMEOUT_S (24 * 60 * 60)
#define TICKET_PERIOD_S (6 * 60 * 60)
#define TICKET_KEYS (SESSION_TIMEOUT_S / TICKET_PERIOD_S + 1)

/* The most names of one certificate that SNI looks at; a certificate with more is cut short. */
#define MAX_NAMES 100

/* One certificate entry of the config, loaded. */
struct loaded {
    X509 *leaf;
    STACK_OF(X509) * chain; /* the intermediates after the leaf, possibly empty */
    EVP_PKEY *key;
};

/* The most key types one context holds: RSA, ECDSA, Ed25519, Ed448. */
#define KEY_TYPES 4

/* What SNI picks: for each key type, the index of a config entry, or -1. */
struct pick {
    int entry[KEY_TYPES];
};

/* A context and the certificates in it. */
struct tls_ctx {
    SSL_CTX *ctx;
    struct pick pick;
};

/* A name a certificate has ("app1.com", "*.app1.com", lowercase) and the context it picks. */
struct tls_name {
    char *name;
    size_t ctx;
};

struct tls_store {
    struct tls_ctx *ctxs; /* the first is the default */
    size_t nctxs;
    struct tls_name *names;
    size_t nnames;
};

/* ---------------------------------------------------------------------------------------------
 * Errors, as config.c writes them
 */

static void tls_error(char *err, size_t errlen, const struct config *cfg, unsigned line,
                      unsigned col, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Appends one line at line:col of cfg's file, with OpenSSL's reason when it has one. */
static void
tls_error(char *err, size_t errlen, const struct config *cfg, unsigned line, unsigned col,
          const char *fmt, ...)
{
    size_t used = strnlen(err, errlen);
    char reason[256] = "";
    unsigned long e = ERR_peek_last_error();
    va_list ap;

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (used + 1 >= errlen)
        return;
    /* A provider's certificate (line 0) was written in no file. */
    if (line > 0)
        used += (size_t)snprintf(err + used, errlen - used, "%s:%u:%u: ", cfg->path, line, col);
    if (used + 1 >= errlen)
        return;
    va_start(ap, fmt);
    used += (size_t)vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
    if (used + 1 >= errlen)
        return;
    if (reason[0] != '\0')
        snprintf(err + used, errlen - used, " (%s)\n", reason);
    else
        snprintf(err + used, errlen - used, "\n");
}

/* ---------------------------------------------------------------------------------------------
 * Loading a certificate entry
 */

/* Opens path for reading, or the PEM text a provider gave, saying why not in err. */
static BIO *
open_pem(const struct config *cfg, unsigned line, unsigned col, const char *what, size_t i,
         const char *path, const char *pem, char *err, size_t errlen)
{
    FILE *f;
    BIO *bio;

    if (pem != NULL) {
        if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
            tls_error(err, errlen, cfg, line, col, "tls.certificates[%zu].%s: out of memory", i,
                      what);
        return bio;
    }
    if ((f = fopen(path, "r")) == NULL) {
        int e = errno;
        ERR_clear_error();
        tls_error(err, errlen, cfg, line, col, "tls.certificates[%zu].%s: cannot read %s: %s", i,
                  what, path, strerror(e));
        return NULL;
    }
    bio = BIO_new_fp(f, BIO_CLOSE);
    if (bio == NULL) {
        fclose(f);
        tls_error(err, errlen, cfg, line, col, "tls.certificates[%zu].%s: out of memory", i, what);
    }
    return bio;
}

/* A passphrase callback that refuses, and notes that one was asked for: an encrypted key never
 * waits for a terminal. */
static int
no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    if (size > 0)
        buf[0] = '\0';
    *(int *)u = 1;
    return -1;
}

static void
loaded_free(struct loaded *l)
{
    X509_free(l->leaf);
    sk_X509_pop_free(l->chain, X509_free);
    EVP_PKEY_free(l->key);
    memset(l, 0, sizeof(*l));
}

static int
load_cert(const struct config *cfg, size_t i, struct loaded *l, char *err, size_t errlen)
{
    const struct config_cert *c = &cfg->certs[i];
    BIO *bio =
        open_pem(cfg, c->cert_line, c->cert_col, "cert", i, c->cert, c->cert_pem, err, errlen);
    X509 *x;

    if (bio == NULL)
        return -1;
    l->leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (l->leaf == NULL) {
        BIO_free(bio);
        ERR_clear_error(); /* "no start line" or a decoder's: the message says it better */
        tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                  "tls.certificates[%zu].cert: %s holds no PEM certificate", i, c->cert);
        return -1;
    }
    l->chain = sk_X509_new_null();
    while (l->chain != NULL && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(l->chain, x) <= 0) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    BIO_free(bio);
    if (l->chain == NULL) {
        tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                  "tls.certificates[%zu].cert: out of memory", i);
        return -1;
    }
    return 0;
}

static int
load_key(const struct config *cfg, size_t i, struct loaded *l, char *err, size_t errlen)
{
    const struct config_cert *c = &cfg->certs[i];
    BIO *bio = open_pem(cfg, c->key_line, c->key_col, "key", i, c->key, c->key_pem, err, errlen);
    int encrypted = 0;

    if (bio == NULL)
        return -1;
    l->key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &encrypted);
    BIO_free(bio);
    if (l->key == NULL && encrypted) {
        ERR_clear_error();
        tls_error(err, errlen, cfg, c->key_line, c->key_col,
                  "tls.certificates[%zu].key: %s is encrypted: portier needs the key "
                  "unencrypted (openssl pkey -in KEY -out PLAIN)",
                  i, c->key);
        return -1;
    }
    if (l->key == NULL) {
        ERR_clear_error();
        tls_error(err, errlen, cfg, c->key_line, c->key_col,
                  "tls.certificates[%zu].key: %s holds no PEM private key", i, c->key);
        return -1;
    }
    return 0;
}

/* Loads entry i: the certificate, its chain and its key, and checks they belong together.
 * Returns 0, or the number of errors written to err (l is then empty). */
static int
load_entry(const struct config *cfg, size_t i, struct loaded *l, char *err, size_t errlen)
{
    const struct config_cert *c = &cfg->certs[i];
    int errors = 0;

    memset(l, 0, sizeof(*l));
    if (load_cert(cfg, i, l, err, errlen) < 0)
        errors++;
    if (load_key(cfg, i, l, err, errlen) < 0)
        errors++;
    if (errors == 0 && X509_check_private_key(l->leaf, l->key) != 1) {
        ERR_clear_error();
        tls_error(err, errlen, cfg, c->key_line, c->key_col,
                  "tls.certificates[%zu].key: %s does not match the certificate in %s", i, c->key,
                  c->cert);
        errors++;
    }
    if (errors > 0)
        loaded_free(l);
    return errors;
}

/* ---------------------------------------------------------------------------------------------
 * Names
 */

bool
tls_name_match(const char *pattern, const char *host)
{
    const char *dot;

    if (pattern[0] == '*' && pattern[1] == '.') {
        /* One label, not empty, then exactly the suffix. */
        dot = strchr(host, '.');
        return dot != NULL && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static void
names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free((void *)names);
}

/* Adds a copy of the n bytes at p, lowercased, unless it holds a NUL or is empty. */
static int
names_add(char **names, size_t *n, const unsigned char *p, int len)
{
    char *s;

    if (len <= 0 || *n >= MAX_NAMES || memchr(p, '\0', (size_t)len) != NULL)
        return 0;
    s = malloc((size_t)len + 1);
    if (s == NULL)
        return -1;
    for (int k = 0; k < len; k++)
        s[k] = (char)tolower(p[k]);
    s[len] = '\0';
    names[(*n)++] = s;
    return 0;
}

/*
 * The DNS names a certificate answers for: its DNS SANs, or its subject's common name when it has
 * none (as OpenSSL's own host check does). Returns an array of *n owned strings (names_free), or
 * NULL with *n 0 when it has none or memory ran out.
 */
static char **
cert_names(X509 *x, size_t *n)
{
    char **names = calloc(MAX_NAMES, sizeof(*names));
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = 0;

    *n = 0;
    if (names == NULL) {
        GENERAL_NAMES_free(sans);
        return NULL;
    }
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS)
            rc = names_add(names, n, ASN1_STRING_get0_data(g->d.dNSName),
                           ASN1_STRING_length(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
    if (rc == 0 && *n == 0) {
        const X509_NAME *subj = X509_get_subject_name(x);
        int at = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
        if (at >= 0) {
            const ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, at));
            rc = names_add(names, n, ASN1_STRING_get0_data(cn), ASN1_STRING_length(cn));
        }
    }
    ERR_clear_error();
    if (rc < 0 || *n == 0) {
        names_free(names, *n);
        *n = 0;
        return NULL;
    }
    return names;
}

/* Whether a certificate name serves some route: the route's host is covered by it, or, for a
 * wildcard route, is the same wildcard or covers it. */
static bool
name_routed(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        if (r->host == NULL)
            continue;
        if (r->wildcard ? strcasecmp(name, r->host) == 0 || tls_name_match(r->host, name)
                        : tls_name_match(name, r->host))
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------------------------------------
 * portier -t
 */

static void
asn1_time_str(const ASN1_TIME *t, char *buf, size_t len)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1 || strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, len, "?");
}

/* The warnings about a certificate that loads: outside its validity, or serving no route. */
static void
warn_entry(const struct config *cfg, size_t i, const struct loaded *l, char *err, size_t errlen)
{
    const struct config_cert *c = &cfg->certs[i];
    const ASN1_TIME *nb = X509_get0_notBefore(l->leaf), *na = X509_get0_notAfter(l->leaf);
    char when[64];
    size_t n = 0;
    char **names;
    bool routed = false;

    if (X509_cmp_current_time(na) < 0) {
        asn1_time_str(na, when, sizeof(when));
        tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                  "warning: tls.certificates[%zu].cert: %s expired on %s", i, c->cert, when);
    } else if (X509_cmp_current_time(nb) > 0) {
        asn1_time_str(nb, when, sizeof(when));
        tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                  "warning: tls.certificates[%zu].cert: %s is not valid before %s", i, c->cert,
                  when);
    }
    if (cfg->default_service >= 0)
        return; /* every name is served */
    names = cert_names(l->leaf, &n);
    for (size_t k = 0; k < n && !routed; k++)
        routed = name_routed(cfg, names[k]);
    if (!routed)
        tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                  "warning: tls.certificates[%zu].cert: none of the names of %s (%s%s) is "
                  "routed, and there is no default_service",
                  i, c->cert, n > 0 ? names[0] : "it has none", n > 1 ? ", ..." : "");
    names_free(names, n);
}

int
tls_cert_check(const struct config_cert *c, char *err, size_t errlen)
{
    /* load_entry() reads the certificate from a config; this one holds c alone. */
    const struct config one = {.path = "", .certs = (struct config_cert *)c, .ncerts = 1};
    struct loaded l;

    if (errlen > 0)
        err[0] = '\0';
    if (load_entry(&one, 0, &l, err, errlen) > 0)
        return -1;
    loaded_free(&l);
    return 0;
}

int
tls_check(const struct config *cfg, char *err, size_t errlen)
{
    int errors = 0;

    if (errlen > 0)
        err[0] = '\0';
    for (size_t i = 0; i < cfg->ncerts; i++) {
        struct loaded l;
        int n = load_entry(cfg, i, &l, err, errlen);
        if (n > 0) {
            errors += n;
            continue;
        }
        warn_entry(cfg, i, &l, err, errlen);
        loaded_free(&l);
    }
    return errors;
}

/* ---------------------------------------------------------------------------------------------
 * Session tickets: one ring of keys for the process, so a ticket made by one worker (or before a
 * reload) is taken by every other. A new key every TICKET_PERIOD_S, made by whichever handshake
 * first finds the current one too old; the older ones still decrypt until they leave the ring.
 */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t made;
};

static struct {
    pthread_rwlock_t lock;
    struct ticket_key keys[TICKET_KEYS]; /* keys[0] is the current one */
    unsigned n;
} ring = {.lock = PTHREAD_RWLOCK_INITIALIZER};

/* Under the write lock: pushes a new key in front. */
static int
ring_rotate(time_t now)
{
    struct ticket_key k;

    if (RAND_bytes(k.name, sizeof(k.name)) != 1 || RAND_bytes(k.aes, sizeof(k.aes)) != 1 ||
        RAND_bytes(k.hmac, sizeof(k.hmac)) != 1)
        return -1;
    k.made = now;
    memmove(&ring.keys[1], &ring.keys[0], sizeof(ring.keys[0]) * (TICKET_KEYS - 1));
    ring.keys[0] = k;
    if (ring.n < TICKET_KEYS)
        ring.n++;
    return 0;
}

/* Copies the current key, making a new one first when it is due. */
static int
ring_current(struct ticket_key *out)
{
    time_t now = time(NULL);
    int rc = 0;

    pthread_rwlock_rdlock(&ring.lock);
    if (ring.n > 0 && now - ring.keys[0].made < TICKET_PERIOD_S) {
        *out = ring.keys[0];
        pthread_rwlock_unlock(&ring.lock);
        return 0;
    }
    pthread_rwlock_unlock(&ring.lock);
    pthread_rwlock_wrlock(&ring.lock);
    if (ring.n == 0 || now - ring.keys[0].made >= TICKET_PERIOD_S)
        rc = ring_rotate(now);
    if (rc == 0)
        *out = ring.keys[0];
    pthread_rwlock_unlock(&ring.lock);
    return rc;
}

/* Copies the key called name: returns 1 when there is one, 0 when there is none. */
static int
ring_find(const unsigned char *name, struct ticket_key *out)
{
    int found = 0;

    pthread_rwlock_rdlock(&ring.lock);
    for (unsigned i = 0; i < ring.n && found == 0; i++) {
        if (CRYPTO_memcmp(ring.keys[i].name, name, sizeof(ring.keys[i].name)) == 0) {
            *out = ring.keys[i];
            found = 1;
        }
    }
    pthread_rwlock_unlock(&ring.lock);
    return found;
}

static int
ticket_mac(EVP_MAC_CTX *hctx, unsigned char *key, size_t len)
{
    OSSL_PARAM params[3];

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, len);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket key callback: 1 to go on, 2 to take the ticket and issue a fresh one, 0 to
 * ignore the ticket (a full handshake), -1 to fail. Every ticket taken is renewed: clients use a
 * TLS 1.3 ticket once (RFC 8446 C.4), and without a new one every other connection would be a
 * full handshake; a fresh ticket is also made with the current key. */
static int
ticket_cb(SSL *ssl, unsigned char *key_name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
          EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_key k;
    int found;

    (void)ssl;
    if (enc) {
        if (ring_current(&k) < 0 ||
            RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
            return -1;
        memcpy(key_name, k.name, sizeof(k.name));
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
            ticket_mac(hctx, k.hmac, sizeof(k.hmac)) < 0)
            return -1;
        OPENSSL_cleanse(&k, sizeof(k));
        return 1;
    }
    found = ring_find(key_name, &k);
    if (found == 0)
        return 0;
    found = 2;
    if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 ||
        ticket_mac(hctx, k.hmac, sizeof(k.hmac)) < 0)
        found = -1;
    OPENSSL_cleanse(&k, sizeof(k));
    return found;
}

/* ---------------------------------------------------------------------------------------------
 * Contexts
 */

/* ALPN: http/1.1 when the client offers it, else no ALPN at all (never a failed handshake: a
 * client that offers only h2 may still speak HTTP/1.1). */
static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
        unsigned int inlen, void *arg)
{
    static const char h11[] = "http/1.1";

    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned len = in[i];
        if (i + 1 + len > inlen)
            break;
        if (len == sizeof(h11) - 1 && memcmp(in + i + 1, h11, len) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)len;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* The context for host: its exact name, else the wildcard one label up; NULL for none. */
static const struct tls_ctx *
store_find(const struct tls_store *st, const char *host)
{
    const char *dot = strchr(host, '.');

    for (size_t i = 0; i < st->nnames; i++) {
        if (strcasecmp(st->names[i].name, host) == 0)
            return &st->ctxs[st->names[i].ctx];
    }
    if (dot == NULL || dot == host)
        return NULL;
    for (size_t i = 0; i < st->nnames; i++) {
        const char *n = st->names[i].name;
        if (n[0] == '*' && n[1] == '.' && strcasecmp(n + 2, dot + 1) == 0)
            return &st->ctxs[st->names[i].ctx];
    }
    return NULL;
}

/* SNI: switches the connection to the certificates for the name it asked for. */
static int
sni_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_store *st = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    char host[256];
    size_t len;
    const struct tls_ctx *c;

    if (name == NULL)
        return SSL_TLSEXT_ERR_OK;
    len = strnlen(name, sizeof(host));
    if (len == 0 || len >= sizeof(host))
        return SSL_TLSEXT_ERR_OK;
    memcpy(host, name, len + 1);
    if (host[len - 1] == '.')
        host[len - 1] = '\0';
    c = store_find(st, host);
    if (c != NULL && c != &st->ctxs[0] && SSL_set_SSL_CTX(ssl, c->ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* A server context with the profile and callbacks every one of the store's shares. */
static SSL_CTX *
ctx_new(struct tls_store *st)
{
    static const unsigned char sid_ctx[] = "portier";
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* No renegotiation (a client could make the server work for free); an EOF without
     * close_notify is an ordinary end of stream, as most clients send none. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    /* Partial writes from buffers that move: half.c writes evbuffer chunks as they are. No
     * SSL_MODE_RELEASE_BUFFERS: it frees and allocates the record buffers around every request;
     * conn.c gives them back once a connection has been idle a moment (half_release_buffers). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read what the socket has, not a record's header and then its body: one read() for a
     * request instead of two. half.c reads on while OpenSSL holds bytes (SSL_has_pending). */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_timeout(ctx, SESSION_TIMEOUT_S);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, st);
    return ctx;
}

/* Puts a loaded certificate, its chain and key into ctx (next to one of another key type). */
static int
ctx_add(SSL_CTX *ctx, const struct loaded *l)
{
    if (SSL_CTX_use_certificate(ctx, l->leaf) != 1)
        return -1;
    for (int i = 0; i < sk_X509_num(l->chain); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(l->chain, i)) != 1)
            return -1;
    }
    if (SSL_CTX_use_PrivateKey(ctx, l->key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        return -1;
    return 0;
}

/* One config entry, loaded, with its names and key type. */
struct entry {
    struct loaded l;
    char **names;
    size_t nnames;
    int type; /* EVP_PKEY_RSA, EVP_PKEY_EC... */
};

static bool
entry_has(const struct entry *e, const char *name)
{
    for (size_t k = 0; k < e->nnames; k++) {
        if (strcmp(e->names[k], name) == 0)
            return true;
    }
    return false;
}

static bool
entry_covers(const struct entry *e, const char *host)
{
    for (size_t k = 0; k < e->nnames; k++) {
        if (e->names[k][0] == '*' && tls_name_match(e->names[k], host))
            return true;
    }
    return false;
}

/* Puts e into the pick: into the slot of its key type, unless a certificate of that type is
 * there already (the earlier one wins), or every slot is taken. */
static void
pick_add(struct pick *p, int *types, const struct entry *entries, int e)
{
    for (int k = 0; k < KEY_TYPES; k++) {
        if (p->entry[k] < 0) {
            p->entry[k] = e;
            types[k] = entries[e].type;
            return;
        }
        if (types[k] == entries[e].type)
            return;
    }
}

/* What SNI picks for name (a certificate's name, maybe a wildcard): of each key type, the first
 * entry with the name itself, else, for a plain name, the first whose wildcard covers it. */
static struct pick
pick_for(const struct entry *entries, size_t n, const char *name)
{
    struct pick p;
    int types[KEY_TYPES] = {0};

    for (int k = 0; k < KEY_TYPES; k++)
        p.entry[k] = -1;
    for (size_t i = 0; i < n; i++) {
        if (entry_has(&entries[i], name))
            pick_add(&p, types, entries, (int)i);
    }
    for (size_t i = 0; name[0] != '*' && i < n; i++) {
        if (entry_covers(&entries[i], name))
            pick_add(&p, types, entries, (int)i);
    }
    return p;
}

/* The store's context for p, made when it has none yet. Returns its index, or -1. */
static int
store_ctx(struct tls_store *st, const struct entry *entries, const struct pick *p, size_t max)
{
    struct tls_ctx *c;

    for (size_t i = 0; i < st->nctxs; i++) {
        if (memcmp(&st->ctxs[i].pick, p, sizeof(*p)) == 0)
            return (int)i;
    }
    if (st->nctxs == max)
        return -1;
    c = &st->ctxs[st->nctxs];
    c->pick = *p;
    if ((c->ctx = ctx_new(st)) == NULL)
        return -1;
    st->nctxs++;
    for (int k = 0; k < KEY_TYPES; k++) {
        if (p->entry[k] >= 0 && ctx_add(c->ctx, &entries[p->entry[k]].l) < 0)
            return -1;
    }
    return (int)st->nctxs - 1;
}

/* Builds the contexts and the name table from the loaded entries. */
static int
store_build(struct tls_store *st, const struct entry *entries, size_t n)
{
    size_t total = 0;
    struct pick p;
    int c;

    for (size_t i = 0; i < n; i++)
        total += entries[i].nnames;
    /* Every name may pick other certificates, and the default comes first. */
    st->ctxs = calloc(total + 1, sizeof(*st->ctxs));
    st->names = calloc(total + 1, sizeof(*st->names));
    if (st->ctxs == NULL || st->names == NULL)
        return -1;
    p = entries[0].nnames > 0 ? pick_for(entries, n, entries[0].names[0])
                              : (struct pick){{0, -1, -1, -1}};
    if (store_ctx(st, entries, &p, total + 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < entries[i].nnames; k++) {
            const char *name = entries[i].names[k];
            bool seen = false;
            for (size_t j = 0; j < st->nnames && !seen; j++)
                seen = strcmp(st->names[j].name, name) == 0;
            if (seen)
                continue;
            p = pick_for(entries, n, name);
            if ((c = store_ctx(st, entries, &p, total + 1)) < 0 ||
                (st->names[st->nnames].name = strdup(name)) == NULL)
                return -1;
            st->names[st->nnames++].ctx = (size_t)c;
        }
    }
    return 0;
}

static void
entries_free(struct entry *entries, size_t n)
{
    for (size_t i = 0; entries != NULL && i < n; i++) {
        loaded_free(&entries[i].l);
        names_free(entries[i].names, entries[i].nnames);
    }
    free(entries);
}

struct tls_store *
tls_store_new(const struct config *cfg, char *err, size_t errlen)
{
    struct tls_store *st;
    struct entry *entries;
    size_t n = 0;

    if (errlen > 0)
        err[0] = '\0';
    if (cfg->ncerts == 0)
        return NULL;
    st = calloc(1, sizeof(*st));
    entries = calloc(cfg->ncerts, sizeof(*entries));
    if (st == NULL || entries == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (; n < cfg->ncerts; n++) {
        struct entry *e = &entries[n];
        if (load_entry(cfg, n, &e->l, err, errlen) > 0)
            goto fail;
        e->names = cert_names(e->l.leaf, &e->nnames);
        e->type = EVP_PKEY_get_base_id(e->l.key);
    }
    if (store_build(st, entries, n) < 0) {
        tls_error(err, errlen, cfg, cfg->certs[0].cert_line, cfg->certs[0].cert_col,
                  "tls.certificates: cannot set up the certificates");
        goto fail;
    }
    entries_free(entries, n);
    return st;
fail:
    entries_free(entries, n);
    tls_store_free(st);
    return NULL;
}

void
tls_store_free(struct tls_store *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; st->ctxs != NULL && i < st->nctxs; i++)
        SSL_CTX_free(st->ctxs[i].ctx);
    for (size_t i = 0; st->names != NULL && i < st->nnames; i++)
        free(st->names[i].name);
    free(st->ctxs);
    free(st->names);
    free(st);
}

SSL *
tls_store_accept(const struct tls_store *st)
{
    SSL *ssl = SSL_new(st->ctxs[0].ctx);

    if (ssl != NULL)
        SSL_set_accept_state(ssl);
    return ssl;
}
