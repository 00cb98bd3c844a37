/*
 * TLS with OpenSSL. What is here so far is the check `portier -t` and startup make of the files a
 * config names, so a wrong path or a key that belongs to another certificate fails before serving.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

static void tls_error(char *err, size_t errlen, const struct config *cfg, unsigned line,
                      unsigned col, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Appends one error line at line:col of cfg's file, with OpenSSL's reason when it has one. */
static void
tls_error(char *err, size_t errlen, const struct config *cfg, unsigned line, unsigned col,
          const char *fmt, ...)
{
    size_t used = strlen(err);
    char reason[256] = "";
    unsigned long e = ERR_get_error();
    va_list ap;

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    if (used + 1 >= errlen)
        return;
    used += (size_t)snprintf(err + used, errlen - used, "%s:%u:%u: ", cfg->path, line, col);
    if (used + 1 >= errlen)
        return;
    va_start(ap, fmt);
    used += (size_t)vsnprintf(err + used, errlen - used, fmt, ap);
    va_end(ap);
    if (used + 1 >= errlen)
        return;
    snprintf(err + used, errlen - used, "%s%s\n", reason[0] ? ": " : "", reason);
}

int
tls_check(const struct config *cfg, char *err, size_t errlen)
{
    int rc = 0;

    if (errlen > 0)
        err[0] = '\0';
    for (size_t i = 0; i < cfg->ncerts; i++) {
        const struct config_cert *c = &cfg->certs[i];
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

        if (ctx == NULL) {
            tls_error(err, errlen, cfg, c->cert_line, c->cert_col, "cannot set up OpenSSL");
            return -1;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
            tls_error(err, errlen, cfg, c->cert_line, c->cert_col,
                      "tls.certificates[%zu].cert: cannot load %s", i, c->cert);
            rc = -1;
        } else if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
            tls_error(err, errlen, cfg, c->key_line, c->key_col,
                      "tls.certificates[%zu].key: cannot load %s", i, c->key);
            rc = -1;
        } else if (SSL_CTX_check_private_key(ctx) != 1) {
            tls_error(err, errlen, cfg, c->key_line, c->key_col,
                      "tls.certificates[%zu].key: %s does not match the certificate %s", i, c->key,
                      c->cert);
            rc = -1;
        }
        SSL_CTX_free(ctx);
    }
    return rc;
}
