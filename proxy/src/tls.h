/*
 * TLS termination with OpenSSL: the server contexts a config's certificates make (chosen by SNI,
 * RSA and ECDSA side by side, ALPN http/1.1, the Mozilla "intermediate" profile), session
 * resumption by tickets whose keys every worker shares, and the checks `portier -t` makes of the
 * files. The bytes of a connection go through half.c.
 */
#ifndef TLS_H
#define TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

/* A config's certificates, loaded: read-only once built, shared by every worker. */
struct tls_store;

/*
 * Checks every certificate and key a config names, as a start would load them. Writes one
 * "FILE:LINE:COL: message" line per problem into err (FILE is cfg->path, the position that of the
 * offending cert or key path; warnings read "FILE:LINE:COL: warning: message"): a file that cannot
 * be read, holds no certificate or no key, an encrypted key, a key that does not match its
 * certificate are errors; a certificate outside its validity period and one whose names match no
 * route (when there is no default_service) are warnings. Returns the number of errors.
 */
int tls_check(const struct config *cfg, char *err, size_t errlen);

/*
 * Checks one certificate as tls_store_new() would load it (a provider's PEM text, before it goes
 * into a config): returns 0, or -1 with one line saying what is wrong in err.
 */
int tls_cert_check(const struct config_cert *c, char *err, size_t errlen);

/*
 * Loads cfg's certificates into server contexts. Returns the store, owned by the caller until
 * tls_store_free(), or NULL with the first problem in err. A config without certificates gives
 * NULL with err "".
 */
struct tls_store *tls_store_new(const struct config *cfg, char *err, size_t errlen);

/* Frees the store; its contexts live on in the connections that still use them. NULL is a no-op. */
void tls_store_free(struct tls_store *st);

/*
 * A server-side SSL for a connection accepted now, owned by the caller (SSL_free). Its handshake
 * looks the client's server name up in st: st must outlive the handshake. NULL when memory ran out.
 */
SSL *tls_store_accept(const struct tls_store *st);

/*
 * Whether a certificate name (a DNS SAN, lowercase or not) covers host: the same name ignoring
 * case, or "*.suffix" for a host one label deep below suffix ("*.a.com" covers "x.a.com", not
 * "a.com" nor "y.x.a.com"). host has no trailing dot. Pure.
 */
bool tls_name_match(const char *pattern, const char *host);

#endif
