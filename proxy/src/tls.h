/* TLS: for now, checking that the certificates a config names can be used; termination comes next.
 */
#ifndef TLS_H
#define TLS_H

#include <stddef.h>

#include "config.h"

/*
 * Loads every certificate chain and key of cfg->certs and checks that each key matches its
 * certificate. Returns 0, or -1 with one "FILE:LINE:COL: message" line per problem in err (FILE is
 * cfg->path, the position that of the offending path), as config_load() reports its own errors.
 */
int tls_check(const struct config *cfg, char *err, size_t errlen);

#endif
