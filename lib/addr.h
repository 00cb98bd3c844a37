/* Parses and formats "host:port" socket addresses; pure, no name lookups. */
#ifndef ADDR_H
#define ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * Parses spec as "IPv4:port", "[IPv6]:port" or ":port" (all IPv4 interfaces) into *ss and *len. The
 * host must be numeric and the port 1-65535 in decimal. Returns 0, or -1 with a message in err.
 */
int addr_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *err,
               size_t errlen);

/* Writes the address without its port ("127.0.0.1", "::1") into out. Returns 0, or -1 if it does
 * not fit. */
int addr_host(const struct sockaddr *sa, char *out, size_t cap);

#endif
