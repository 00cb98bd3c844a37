/*
 * Unit tests for tls.c: certificate name matching; the checks portier -t makes of certificate and
 * key files, with their positions; and the store's contexts in a real handshake over memory BIOs
 * (SNI picks the certificate, RSA or ECDSA by the client's signature algorithms, ALPN http/1.1 or
 * none, tickets that resume across contexts and stores). Certificates are made here, in memory,
 * and written to a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "tls.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define DAY (24L * 60 * 60)

static char dir[64]; /* the temporary directory, made by setup */

/* ---------------------------------------------------------------------------------------------
 * Names
 */

static void
test_name_match(void **state)
{
    static const struct {
        const char *pattern, *host;
        bool want;
    } cases[] = {
        {"app1.com", "app1.com", true},
        {"APP1.com", "app1.COM", true},
        {"app1.com", "app2.com", false},
        {"app1.com", "x.app1.com", false},
        {"*.app1.com", "x.app1.com", true},
        {"*.app1.com", "X.APP1.COM", true},
        {"*.app1.com", "app1.com", false},     /* not the suffix itself */
        {"*.app1.com", "y.x.app1.com", false}, /* one label deep only */
        {"*.app1.com", ".app1.com", false},    /* an empty label is none */
        {"*.app1.com", "xapp1.com", false},    /* on a label boundary */
        {"*.app1.com", "x.app1.com.evil", false},
        {"x.app1.com", "*.app1.com", false}, /* the host is a name, not a pattern */
        {"*", "app1.com", false},
    };

    (void)state;
    for (size_t i = 0; i < N(cases); i++) {
        if (tls_name_match(cases[i].pattern, cases[i].host) != cases[i].want)
            fail_msg("tls_name_match(\"%s\", \"%s\") should be %s", cases[i].pattern, cases[i].host,
                     cases[i].want ? "true" : "false");
    }
}

/* ---------------------------------------------------------------------------------------------
 * Certificates, made here
 */

static EVP_PKEY *
make_key(int rsa)
{
    EVP_PKEY *k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");

    assert_non_null(k);
    return k;
}

/* A certificate of pub for names (comma-separated DNS SANs, or NULL for none and CN "cn.test"),
 * valid from now+from to now+to seconds, signed by issuer/signer (self-signed when NULL). */
static X509 *
make_cert(EVP_PKEY *pub, const char *names, long from, long to, X509 *issuer, EVP_PKEY *signer)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_NAME *subj = X509_NAME_new();
    X509V3_CTX v3;

    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from);
    X509_gmtime_adj(X509_getm_notAfter(x), to);
    X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_ASC,
                               (const unsigned char *)(names != NULL ? "leaf" : "cn.test"), -1, -1,
                               0);
    X509_set_subject_name(x, subj);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : subj);
    X509_set_pubkey(x, pub);
    if (names != NULL) {
        char san[512] = "";
        const char *p = names;
        while (*p != '\0') {
            size_t len = strcspn(p, ",");
            snprintf(san + strlen(san), sizeof(san) - strlen(san), "%sDNS:%.*s", san[0] ? "," : "",
                     (int)len, p);
            p += len + (p[len] == ',');
        }
        X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, signer != NULL ? signer : pub, EVP_sha256()) > 0);
    X509_NAME_free(subj);
    return x;
}

static const char *
path_of(const char *name)
{
    static char bufs[8][384];
    static unsigned next;
    char *p = bufs[next++ % N(bufs)];

    snprintf(p, sizeof(bufs[0]), "%s/%s", dir, name);
    return p;
}

static void
write_cert(const char *name, X509 *x, X509 *chain)
{
    FILE *f = fopen(path_of(name), "w");

    assert_non_null(f);
    assert_true(PEM_write_X509(f, x));
    if (chain != NULL)
        assert_true(PEM_write_X509(f, chain));
    fclose(f);
}

static void
write_key(const char *name, EVP_PKEY *k, const char *pass)
{
    FILE *f = fopen(path_of(name), "w");

    assert_non_null(f);
    if (pass != NULL)
        assert_true(PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(), (const unsigned char *)pass,
                                         (int)strlen(pass), NULL, NULL));
    else
        assert_true(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
}

static void
write_text(const char *name, const char *text)
{
    FILE *f = fopen(path_of(name), "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Every file the tests use: made once. */
static int
setup(void **state)
{
    EVP_PKEY *authority = make_key(0), *ec = make_key(0), *rsa = make_key(1), *wild = make_key(0),
             *other = make_key(0), *def = make_key(0);
    X509 *ca = make_cert(authority, "ca.test", -DAY, 30 * DAY, NULL, NULL);

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/portier-test-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_cert("ca.crt", ca, NULL);
    X509 *x = make_cert(def, "default.test", -DAY, 30 * DAY, ca, authority);
    write_cert("default.crt", x, ca);
    write_key("default.key", def, NULL);
    X509_free(x);
    x = make_cert(ec, "a.test,b.test", -DAY, 30 * DAY, ca, authority);
    write_cert("ec.crt", x, ca);
    write_key("ec.key", ec, NULL);
    write_key("ec-encrypted.key", ec, "secret");
    X509_free(x);
    /* RSA for one of the ECDSA certificate's names: SNI must still pair them for a.test. */
    x = make_cert(rsa, "a.test", -DAY, 30 * DAY, ca, authority);
    write_cert("rsa.crt", x, ca);
    write_key("rsa.key", rsa, NULL);
    X509_free(x);
    x = make_cert(wild, "*.w.test", -DAY, 30 * DAY, ca, authority);
    write_cert("wild.crt", x, ca);
    write_key("wild.key", wild, NULL);
    X509_free(x);
    x = make_cert(other, "old.test", -30 * DAY, -DAY, ca, authority);
    write_cert("expired.crt", x, NULL);
    write_key("expired.key", other, NULL);
    X509_free(x);
    x = make_cert(other, "new.test", 10 * DAY, 30 * DAY, ca, authority);
    write_cert("future.crt", x, NULL);
    X509_free(x);
    x = make_cert(other, NULL, -DAY, 30 * DAY, ca, authority);
    write_cert("cn.crt", x, NULL);
    X509_free(x);
    write_text("garbage.pem", "not a certificate\n");
    X509_free(ca);
    EVP_PKEY_free(authority);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(wild);
    EVP_PKEY_free(other);
    EVP_PKEY_free(def);
    return 0;
}

static int
teardown(void **state)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    (void)state;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            unlink(path_of(e->d_name));
    }
    closedir(d);
    return rmdir(dir);
}

/* ---------------------------------------------------------------------------------------------
 * portier -t
 */

/* A config with one certificate entry (cert at 6:13, key at 7:12) and the routes given. */
static struct config *
config_with(const char *cert, const char *key, const char *routes)
{
    char yaml[2048], err[CONFIG_ERR_SIZE];
    struct config *cfg;

    snprintf(yaml, sizeof(yaml),
             "listen:\n"
             "  - address: \"127.0.0.1:8443\"\n"
             "    tls: true\n"
             "tls:\n"
             "  certificates:\n"
             "    - cert: %s\n"
             "      key: %s\n"
             "services:\n"
             "  s: { servers: [\"127.0.0.1:1\"] }\n"
             "%s",
             path_of(cert), path_of(key), routes);
    cfg = config_parse("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL)
        fail_msg("config: %s", err);
    return cfg;
}

#define ROUTED "routes: [{host: a.test, service: s}]\n"

/* want with every "%s" replaced by the temporary directory. */
static void
expand(const char *want, char *out, size_t len)
{
    size_t n = 0;

    for (const char *p = want; *p != '\0' && n + 1 < len; p++) {
        if (p[0] == '%' && p[1] == 's') {
            n += (size_t)snprintf(out + n, len - n, "%s", dir);
            p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n < len ? n : len - 1] = '\0';
}

/* tls_check()'s errors (a count) and its text, which must hold want (or be empty when want is "").
 */
static void
check(const char *cert, const char *key, const char *routes, int errors, const char *want)
{
    struct config *cfg = config_with(cert, key, routes);
    char err[CONFIG_ERR_SIZE], line[512];
    int n = tls_check(cfg, err, sizeof(err));

    if (n != errors)
        fail_msg("%s + %s: %d errors, want %d: %s", cert, key, n, errors, err);
    if (want[0] == '\0' && err[0] != '\0')
        fail_msg("%s + %s: want no output, got: %s", cert, key, err);
    expand(want, line, sizeof(line));
    if (strstr(err, line) == NULL)
        fail_msg("%s + %s: want \"%s\" in:\n%s", cert, key, line, err);
    config_unref(cfg);
}

static void
test_check_good(void **state)
{
    (void)state;
    check("ec.crt", "ec.key", ROUTED, 0, "");
    check("rsa.crt", "rsa.key", ROUTED, 0, "");
    /* The subject's CN counts as a name when there is no SAN. */
    check("cn.crt", "expired.key", "routes: [{host: cn.test, service: s}]\n", 0, "");
    /* A wildcard certificate for a wildcard route, or for a name below it. */
    check("wild.crt", "wild.key", "routes: [{host: \"*.w.test\", service: s}]\n", 0, "");
    check("wild.crt", "wild.key", "routes: [{host: x.w.test, service: s}]\n", 0, "");
    /* With a default_service, every name is served. */
    check("ec.crt", "ec.key", "default_service: s\n", 0, "");
}

static void
test_check_errors(void **state)
{
    (void)state;
    check("missing.crt", "ec.key", ROUTED, 1,
          "t.yaml:6:13: tls.certificates[0].cert: cannot read %s/missing.crt: No such file or "
          "directory\n");
    check("ec.crt", "missing.key", ROUTED, 1,
          "t.yaml:7:12: tls.certificates[0].key: cannot read %s/missing.key: No such file");
    check("garbage.pem", "ec.key", ROUTED, 1,
          "t.yaml:6:13: tls.certificates[0].cert: %s/garbage.pem holds no PEM certificate");
    /* A key given as the certificate: a PEM, but not a certificate. */
    check("ec.key", "ec.key", ROUTED, 1,
          "t.yaml:6:13: tls.certificates[0].cert: %s/ec.key holds no PEM certificate");
    check("ec.crt", "garbage.pem", ROUTED, 1,
          "t.yaml:7:12: tls.certificates[0].key: %s/garbage.pem holds no PEM private key");
    check("ec.crt", "ec.crt", ROUTED, 1,
          "t.yaml:7:12: tls.certificates[0].key: %s/ec.crt holds no PEM private key");
    check("ec.crt", "ec-encrypted.key", ROUTED, 1,
          "t.yaml:7:12: tls.certificates[0].key: %s/ec-encrypted.key is encrypted");
    check("ec.crt", "rsa.key", ROUTED, 1,
          "t.yaml:7:12: tls.certificates[0].key: %s/rsa.key does not match the certificate in "
          "%s/ec.crt");
    /* Both files wrong: both said. */
    check("missing.crt", "garbage.pem", ROUTED, 2, "t.yaml:7:12: tls.certificates[0].key");
}

static void
test_check_warnings(void **state)
{
    (void)state;
    check("expired.crt", "expired.key", "routes: [{host: old.test, service: s}]\n", 0,
          "t.yaml:6:13: warning: tls.certificates[0].cert: %s/expired.crt expired on ");
    check("future.crt", "expired.key", "routes: [{host: new.test, service: s}]\n", 0,
          "t.yaml:6:13: warning: tls.certificates[0].cert: %s/future.crt is not valid before ");
    check("ec.crt", "ec.key", "routes: [{host: c.test, service: s}]\n", 0,
          "t.yaml:6:13: warning: tls.certificates[0].cert: none of the names of %s/ec.crt "
          "(a.test, ...) is routed, and there is no default_service\n");
    check("wild.crt", "wild.key", "routes: [{host: w.test, service: s}]\n", 0,
          "none of the names of %s/wild.crt (*.w.test) is routed");
}

/* ---------------------------------------------------------------------------------------------
 * Handshakes in memory
 */

static struct config *
store_config(void)
{
    char yaml[4096], err[CONFIG_ERR_SIZE];
    struct config *cfg;

    snprintf(yaml, sizeof(yaml),
             "listen: [{address: \"127.0.0.1:8443\", tls: true}]\n"
             "tls:\n"
             "  certificates:\n"
             "    - {cert: %s/default.crt, key: %s/default.key}\n"
             "    - {cert: %s/ec.crt, key: %s/ec.key}\n"
             "    - {cert: %s/rsa.crt, key: %s/rsa.key}\n"
             "    - {cert: %s/wild.crt, key: %s/wild.key}\n"
             "services:\n"
             "  s: { servers: [\"127.0.0.1:1\"] }\n"
             "default_service: s\n",
             dir, dir, dir, dir, dir, dir, dir, dir);
    cfg = config_parse("t.yaml", yaml, strlen(yaml), err, sizeof(err));
    if (cfg == NULL)
        fail_msg("config: %s", err);
    return cfg;
}

struct client_opts {
    const char *sni;           /* NULL: none */
    const char *sigalgs;       /* NULL: OpenSSL's */
    const unsigned char *alpn; /* wire format, or NULL */
    size_t alpn_len;
    int version;         /* 0: any */
    SSL_SESSION *resume; /* borrowed, or NULL */
    bool no_ticket;      /* a client that takes no tickets: session ids */
};

struct result {
    char subject_san[64]; /* the leaf's first DNS name */
    int key_type;
    char alpn[16];
    bool reused;
    int tickets;          /* sessions the server sent (tickets, or a TLS 1.2 session) */
    SSL_SESSION *session; /* owned by the caller */
};

static int tickets_seen;

static int
count_ticket(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    (void)sess;
    tickets_seen++;
    return 0; /* not kept: SSL_get1_session() gives the test the one it uses */
}

static void
first_san(X509 *x, char *out, size_t len)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);

    out[0] = '\0';
    if (sans != NULL && sk_GENERAL_NAME_num(sans) > 0) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, 0);
        snprintf(out, len, "%.*s", ASN1_STRING_length(g->d.dNSName),
                 (const char *)ASN1_STRING_get0_data(g->d.dNSName));
    }
    GENERAL_NAMES_free(sans);
}

/* Moves the bytes one BIO pair side wrote to the other. */
static void
pump(BIO *from, BIO *to)
{
    char buf[16384];
    int n;

    while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(to, buf, n), n);
}

/* A full handshake between a client made from o and a server SSL from st, in memory; then one
 * byte each way so that TLS 1.3 tickets arrive. */
static struct result
handshake(const struct tls_store *st, const struct client_opts *o)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c, *s = tls_store_accept(st);
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    struct result r;
    char b;

    memset(&r, 0, sizeof(r));
    assert_non_null(cctx);
    assert_non_null(s);
    if (o->version != 0) {
        SSL_CTX_set_min_proto_version(cctx, o->version);
        SSL_CTX_set_max_proto_version(cctx, o->version);
    }
    if (o->sigalgs != NULL)
        assert_int_equal(SSL_CTX_set1_sigalgs_list(cctx, o->sigalgs), 1);
    if (o->no_ticket)
        SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(cctx, count_ticket);
    tickets_seen = 0;
    c = SSL_new(cctx);
    SSL_set_connect_state(c);
    if (o->sni != NULL)
        SSL_set_tlsext_host_name(c, o->sni);
    if (o->alpn != NULL)
        assert_int_equal(SSL_set_alpn_protos(c, o->alpn, (unsigned)o->alpn_len), 0);
    if (o->resume != NULL)
        SSL_set_session(c, o->resume);
    SSL_set_bio(c, c_in, c_out);
    SSL_set_bio(s, s_in, s_out);
    for (int i = 0; i < 20 && !(SSL_is_init_finished(c) && SSL_is_init_finished(s)); i++) {
        SSL_do_handshake(c);
        pump(c_out, s_in);
        SSL_do_handshake(s);
        pump(s_out, c_in);
    }
    if (!SSL_is_init_finished(c) || !SSL_is_init_finished(s)) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof(e));
        fail_msg("no handshake: %s", e);
    }
    assert_int_equal(SSL_write(s, "x", 1), 1);
    pump(s_out, c_in);
    assert_int_equal(SSL_read(c, &b, 1), 1);
    X509 *leaf = SSL_get1_peer_certificate(c);
    assert_non_null(leaf);
    first_san(leaf, r.subject_san, sizeof(r.subject_san));
    r.key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(leaf));
    X509_free(leaf);
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(c, &alpn, &alpn_len);
    snprintf(r.alpn, sizeof(r.alpn), "%.*s", (int)alpn_len, (const char *)alpn);
    r.reused = SSL_session_reused(c);
    r.tickets = tickets_seen;
    r.session = SSL_get1_session(c);
    /* Closed as a client should: a session whose connection just dropped is not resumable. */
    SSL_shutdown(c);
    SSL_shutdown(s);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    return r;
}

static void
want_cert(const struct tls_store *st, const char *sni, const char *sigalgs, const char *san,
          int key_type)
{
    struct client_opts o = {.sni = sni, .sigalgs = sigalgs};
    struct result r = handshake(st, &o);

    if (strcmp(r.subject_san, san) != 0 || r.key_type != key_type)
        fail_msg("SNI %s, sigalgs %s: got %s (key %d), want %s (key %d)", sni ? sni : "(none)",
                 sigalgs ? sigalgs : "(any)", r.subject_san, r.key_type, san, key_type);
    SSL_SESSION_free(r.session);
}

static void
test_store_sni(void **state)
{
    char err[CONFIG_ERR_SIZE];
    struct config *cfg = store_config();
    struct tls_store *st = tls_store_new(cfg, err, sizeof(err));

    (void)state;
    if (st == NULL)
        fail_msg("tls_store_new: %s", err);
    want_cert(st, NULL, NULL, "default.test", EVP_PKEY_EC);
    want_cert(st, "unknown.test", NULL, "default.test", EVP_PKEY_EC);
    want_cert(st, "default.test", NULL, "default.test", EVP_PKEY_EC);
    want_cert(st, "A.TEST", "ECDSA+SHA256", "a.test", EVP_PKEY_EC);
    want_cert(st, "b.test.", "ECDSA+SHA256", "a.test", EVP_PKEY_EC); /* a trailing dot */
    /* Both keys for a.test: the client's signature algorithms choose. */
    want_cert(st, "a.test", "RSA-PSS+SHA256:RSA+SHA256", "a.test", EVP_PKEY_RSA);
    want_cert(st, "a.test", "ECDSA+SHA256:RSA-PSS+SHA256", "a.test", EVP_PKEY_EC);
    want_cert(st, "x.w.test", NULL, "*.w.test", EVP_PKEY_EC);
    want_cert(st, "w.test", NULL, "default.test", EVP_PKEY_EC);
    want_cert(st, "y.x.w.test", NULL, "default.test", EVP_PKEY_EC);
    tls_store_free(st);
    config_unref(cfg);
}

static void
test_store_alpn(void **state)
{
    static const unsigned char h11[] = "\x08http/1.1", both[] = "\x02h2\x08http/1.1",
                               h2[] = "\x02h2";
    const struct {
        const unsigned char *wire;
        size_t len;
        const char *want;
    } cases[] = {
        {h11, sizeof(h11) - 1, "http/1.1"},
        {both, sizeof(both) - 1, "http/1.1"},
        {h2, sizeof(h2) - 1, ""}, /* no ALPN, and still a handshake */
        {NULL, 0, ""},
    };
    char err[CONFIG_ERR_SIZE];
    struct config *cfg = store_config();
    struct tls_store *st = tls_store_new(cfg, err, sizeof(err));

    (void)state;
    assert_non_null(st);
    for (size_t i = 0; i < N(cases); i++) {
        struct client_opts o = {.sni = "a.test", .alpn = cases[i].wire, .alpn_len = cases[i].len};
        struct result r = handshake(st, &o);
        assert_string_equal(r.alpn, cases[i].want);
        SSL_SESSION_free(r.session);
    }
    tls_store_free(st);
    config_unref(cfg);
}

/* A session from one store resumes on another (another worker, or after a reload: the ticket keys
 * are the process's), with TLS 1.2 and 1.3, also after SNI switched contexts. */
static void
test_store_resume(void **state)
{
    static const int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    static const char *const names[] = {"default.test", "x.w.test", "a.test"};
    char err[CONFIG_ERR_SIZE];
    struct config *cfg = store_config();
    struct tls_store *st1 = tls_store_new(cfg, err, sizeof(err));
    struct tls_store *st2 = tls_store_new(cfg, err, sizeof(err));

    (void)state;
    assert_non_null(st1);
    assert_non_null(st2);
    for (size_t v = 0; v < N(versions); v++) {
        for (size_t n = 0; n < N(names); n++) {
            struct client_opts o = {.sni = names[n], .version = versions[v]};
            struct result first = handshake(st1, &o);
            assert_false(first.reused);
            assert_non_null(first.session);
            o.resume = first.session;
            struct result again = handshake(st2, &o);
            if (!again.reused)
                fail_msg("%s, version %x: not resumed", names[n], versions[v]);
            /* A TLS 1.3 resumption gets a fresh ticket, so that a client using each ticket once
             * (as browsers do) resumes every time. (A TLS 1.2 client keeps its ticket.) */
            if (versions[v] == TLS1_3_VERSION && again.tickets < 1)
                fail_msg("%s, version %x: no new ticket after a resumption", names[n], versions[v]);
            o.resume = again.session;
            struct result third = handshake(st1, &o);
            if (!third.reused)
                fail_msg("%s, version %x: the ticket of a resumption does not resume", names[n],
                         versions[v]);
            SSL_SESSION_free(third.session);
            SSL_SESSION_free(again.session);
            SSL_SESSION_free(first.session);
        }
    }
    /* Without tickets, TLS 1.2 resumes by session id on the store that made the session. */
    for (size_t n = 0; n < N(names); n++) {
        struct client_opts o = {.sni = names[n], .version = TLS1_2_VERSION, .no_ticket = true};
        struct result first = handshake(st1, &o);
        o.resume = first.session;
        struct result again = handshake(st1, &o);
        if (!again.reused)
            fail_msg("%s, no tickets: not resumed by session id", names[n]);
        SSL_SESSION_free(again.session);
        SSL_SESSION_free(first.session);
    }
    tls_store_free(st1);
    tls_store_free(st2);
    config_unref(cfg);
}

/* Old protocol versions get no handshake. */
static void
test_store_versions(void **state)
{
    static const int old[] = {TLS1_VERSION, TLS1_1_VERSION};
    char err[CONFIG_ERR_SIZE];
    struct config *cfg = store_config();
    struct tls_store *st = tls_store_new(cfg, err, sizeof(err));

    (void)state;
    assert_non_null(st);
    for (size_t i = 0; i < N(old); i++) {
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        SSL *c, *s = tls_store_accept(st);
        BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
        BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());

        SSL_CTX_set_security_level(cctx, 0);
        SSL_CTX_set_min_proto_version(cctx, old[i]);
        SSL_CTX_set_max_proto_version(cctx, old[i]);
        SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0");
        c = SSL_new(cctx);
        SSL_set_connect_state(c);
        SSL_set_bio(c, c_in, c_out);
        SSL_set_bio(s, s_in, s_out);
        for (int k = 0; k < 10; k++) {
            SSL_do_handshake(c);
            pump(c_out, s_in);
            SSL_do_handshake(s);
            pump(s_out, c_in);
        }
        assert_false(SSL_is_init_finished(s));
        assert_false(SSL_is_init_finished(c));
        ERR_clear_error();
        SSL_free(c);
        SSL_free(s);
        SSL_CTX_free(cctx);
    }
    tls_store_free(st);
    config_unref(cfg);
}

static void
test_store_refuses_bad_files(void **state)
{
    char err[CONFIG_ERR_SIZE];
    struct config *cfg = config_with("ec.crt", "rsa.key", ROUTED);

    (void)state;
    assert_null(tls_store_new(cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:7:12: tls.certificates[0].key:"));
    config_unref(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_match),
        cmocka_unit_test(test_check_good),
        cmocka_unit_test(test_check_errors),
        cmocka_unit_test(test_check_warnings),
        cmocka_unit_test(test_store_sni),
        cmocka_unit_test(test_store_alpn),
        cmocka_unit_test(test_store_resume),
        cmocka_unit_test(test_store_versions),
        cmocka_unit_test(test_store_refuses_bad_files),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
