/* Small pure parsers shared by portier's modules: durations, sizes and counts; no I/O, no state. */
#ifndef UTIL_H
#define UTIL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses a duration, a decimal number followed by exactly one unit: "500ms", "10s", "2m", "1h".
 * A bare number, a sign, a fraction, spaces or an unknown unit are errors, and so is a value that
 * does not fit in 64 bits of milliseconds. Returns 0 with *ms set, or -1 with a message in err
 * that quotes s.
 */
int util_parse_duration(const char *s, uint64_t *ms, char *err, size_t errlen);

/*
 * Parses a size in bytes: a decimal number, optionally followed by k, m or g (powers of 1024,
 * either case): "16384", "16k", "1m", "1g". Overflow of 64 bits is an error. Returns 0 with
 * *bytes set, or -1 with a message in err that quotes s.
 */
int util_parse_size(const char *s, uint64_t *bytes, char *err, size_t errlen);

/*
 * Parses a plain decimal number from 0 to max (digits only, no sign, no suffix). Returns 0 with
 * *v set, or -1 with a message in err that quotes s.
 */
int util_parse_uint(const char *s, uint64_t max, uint64_t *v, char *err, size_t errlen);

#endif
