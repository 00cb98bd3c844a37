/* Error log (stderr, with a level) and access log (one line per request, combined or JSON). */
#ifndef LOG_H
#define LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* LOG_DEBUG is written only after log_set_debug(true) (portier -d). */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Writes "TIME portier LEVEL: message" to stderr in one write(), so lines of threads never mix. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Turns LOG_DEBUG lines on or off (off by default). Any thread; takes effect at once. */
void log_set_debug(bool on);

/* Returns whether LOG_DEBUG lines are written, so a caller can skip preparing one. */
bool log_debug_enabled(void);

enum log_format { LOG_FMT_COMBINED, LOG_FMT_JSON };

/* What one access-log line tells. Spans are borrowed for the call; any may be NULL/0 for "-". */
struct log_access_rec {
    const char *client; /* the peer's IP */
    time_t when;        /* when the request started */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int http_minor;
    int status;
    uint64_t bytes; /* response body bytes sent */
    const char *referer;
    size_t referer_len;
    const char *user_agent;
    size_t user_agent_len;
    const char *host;
    size_t host_len;
    const char *upstream; /* "127.0.0.22:8080", or NULL when no server was reached */
    int upstream_status;  /* 0 when no response came from a server */
    uint64_t duration_us;
    const char *request_id;
};

/*
 * Formats one line, newline included, into out. Combined is nginx's combined format followed by
 * upstream=, upstream_status=, duration_ms= and request_id=. Returns the length, or 0 if it does
 * not fit. Pure; keeps a per-thread cache of the formatted time.
 */
size_t log_access_format(char *out, size_t cap, enum log_format fmt,
                         const struct log_access_rec *r);

/*
 * Points the access log at dest: "stdout", "off", or a file path opened for appending. Call from
 * the main thread before workers start, or on reload. Returns 0, or -1 with a message in err (the
 * old destination is kept).
 */
int log_access_open(const char *dest, char *err, size_t errlen);

/* SIGUSR1: reopens the file the access log points at (after rotation). Returns 0 or -1 (logged). */
int log_access_reopen(void);

/* 1 when access logging is on. */
int log_access_enabled(void);

/* Appends whole lines to the access log; any thread may call it, one write() per call. */
void log_access_write(const char *p, size_t n);

#endif
