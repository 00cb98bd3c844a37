/* "host:port" to sockaddr and back; numeric only, so parsing never blocks on DNS. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

/* Splits spec into a host (brackets removed) and a port string; both point into buf. */
static int
split(const char *spec, char *buf, size_t cap, char **host, char **port)
{
    size_t len = strlen(spec);

    if (len >= cap)
        return -1;
    memcpy(buf, spec, len + 1);
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        *close = '\0';
        *host = buf + 1;
        *port = close + 2;
        return 0;
    }
    char *colon = strrchr(buf, ':');
    if (colon == NULL || strchr(buf, ':') != colon)
        return -1;
    *colon = '\0';
    *host = buf;
    *port = colon + 1;
    return 0;
}

static int
parse_port(const char *s)
{
    long v = 0;

    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

int
addr_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
    char buf[64], *host, *port;
    int p;

    memset(ss, 0, sizeof(*ss));
    if (split(spec, buf, sizeof(buf), &host, &port) < 0) {
        snprintf(err, errlen, "\"%s\" is not host:port (IPv6 as [addr]:port)", spec);
        return -1;
    }
    if ((p = parse_port(port)) < 0) {
        snprintf(err, errlen, "\"%s\": port must be a number from 1 to 65535", spec);
        return -1;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (spec[0] != '[' && (*host == '\0' || inet_pton(AF_INET, host, &sin->sin_addr) == 1)) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)p);
        *len = sizeof(*sin);
        return 0;
    }
    if (spec[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)p);
        *len = sizeof(*sin6);
        return 0;
    }
    snprintf(err, errlen, "\"%s\": \"%s\" is not a numeric IP address", spec, host);
    return -1;
}

int
addr_host(const struct sockaddr *sa, char *out, size_t cap)
{
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

    return inet_ntop(sa->sa_family, src, out, (socklen_t)cap) == NULL ? -1 : 0;
}
