/* Durations, sizes and counts from configuration text; strict, so a typo is an error, never a
 * silently different value. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/*
 * Reads the decimal digits at the start of s into *v and points *end past all of them. Returns
 * the number of digits (0 when s does not start with one), or -1 when the value overflows 64 bits.
 */
static int
digits(const char *s, uint64_t *v, const char **end)
{
    int n = 0, overflow = 0;

    *v = 0;
    for (; *s >= '0' && *s <= '9'; s++, n++) {
        unsigned d = (unsigned)(*s - '0');
        if (*v > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            *v = *v * 10 + d;
    }
    *end = s;
    return overflow ? -1 : n;
}

int
util_parse_duration(const char *s, uint64_t *ms, char *err, size_t errlen)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1},
                 {"s", 1000},
                 {"m", 60 * 1000},
                 {"h", 60 * 60 * 1000},
                 {"d", 24 * 60 * 60 * 1000},
                 {"y", 365ULL * 24 * 60 * 60 * 1000}};
    const char *end;
    uint64_t v;
    int n = digits(s, &v, &end);

    if (n == 0)
        goto bad;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        if (n < 0 || v > UINT64_MAX / units[i].ms) {
            snprintf(err, errlen, "\"%s\" is too long a duration", s);
            return -1;
        }
        *ms = v * units[i].ms;
        return 0;
    }
bad:
    snprintf(err, errlen,
             "\"%s\" is not a duration (a whole number followed by ms, s, m, h, d or y)", s);
    return -1;
}

int
util_parse_size(const char *s, uint64_t *bytes, char *err, size_t errlen)
{
    const char *end;
    unsigned shift = 0;
    uint64_t v;
    int n = digits(s, &v, &end);

    if (n == 0)
        goto bad;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        goto bad;
    }
    if (shift != 0 && end[1] != '\0')
        goto bad;
    if (n < 0 || v > (UINT64_MAX >> shift)) {
        snprintf(err, errlen, "\"%s\" is too large a size", s);
        return -1;
    }
    *bytes = v << shift;
    return 0;
bad:
    snprintf(err, errlen,
             "\"%s\" is not a size (a whole number of bytes, optionally followed by k, m or g)", s);
    return -1;
}

int
util_parse_uint(const char *s, uint64_t max, uint64_t *v, char *err, size_t errlen)
{
    const char *end;
    int n = digits(s, v, &end);

    if (n == 0 || *end != '\0') {
        snprintf(err, errlen, "\"%s\" is not a whole number", s);
        return -1;
    }
    if (n < 0 || *v > max) {
        snprintf(err, errlen, "\"%s\" is larger than %" PRIu64, s, max);
        return -1;
    }
    return 0;
}
