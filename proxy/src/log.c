/*
 * Logging: errors to stderr with a level, and the access log, whose file descriptor never changes
 * number: a reopen dup2()s the new file onto it, so workers write without locks while it rotates.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "wbuf.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Read by every thread on each LOG_DEBUG call; relaxed is enough for an on/off switch. */
static atomic_bool debug_on;

/* The access log: fd is -1 when off, STDOUT_FILENO for stdout, else a dup of the file's descriptor.
 */
static struct {
    atomic_int fd; /* read by every worker, written under lock by the main thread */
    char path[4096];
    pthread_mutex_t lock; /* only for open/reopen, never on the request path */
} access_log = {STDOUT_FILENO, "", PTHREAD_MUTEX_INITIALIZER};

void
log_set_debug(bool on)
{
    atomic_store_explicit(&debug_on, on, memory_order_relaxed);
}

bool
log_debug_enabled(void)
{
    return atomic_load_explicit(&debug_on, memory_order_relaxed);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    char line[1024];
    struct tm tm;
    time_t now;
    size_t n;
    va_list ap;

    if (level == LOG_DEBUG && !log_debug_enabled())
        return;
    now = time(NULL);
    gmtime_r(&now, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ portier ", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", level_names[level]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    n = m < 0 ? n : n + (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* A failed write to stderr has nowhere to be reported. */
    ssize_t rc = write(STDERR_FILENO, line, n);
    (void)rc;
}

/* Appends a span in the combined format's quoting: '"', '\' and non-printable bytes as \xHH. */
static void
w_clf(struct wbuf *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    if (s == NULL || n == 0) {
        wbuf_raw(w, "-", 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 0xf]};
            wbuf_raw(w, e, 4);
        } else {
            wbuf_raw(w, &s[i], 1);
        }
    }
}

/* A JSON string value, or null for an absent one. */
static void
w_jstr(struct wbuf *w, const char *key, const char *s, size_t n)
{
    wbuf_str(w, ",\"");
    wbuf_str(w, key);
    if (s == NULL) {
        wbuf_str(w, "\":null");
        return;
    }
    wbuf_str(w, "\":\"");
    wbuf_json(w, s, n);
    wbuf_raw(w, "\"", 1);
}

static void
w_jnum(struct wbuf *w, const char *key, uint64_t v)
{
    wbuf_str(w, ",\"");
    wbuf_str(w, key);
    wbuf_str(w, "\":");
    wbuf_u64(w, v);
}

/* Milliseconds with three decimals, from microseconds, without floating point. */
static void
w_ms(struct wbuf *w, uint64_t us)
{
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10), (char)('0' + us % 10)};

    wbuf_u64(w, us / 1000);
    wbuf_raw(w, ".", 1);
    wbuf_raw(w, frac, 3);
}

/* The formatted times of the last second this thread logged, so a second is formatted once. */
static _Thread_local struct {
    time_t when;
    char clf[32];
    char iso[32];
} clock_cache = {-1, "", ""};

static void
clock_update(time_t when)
{
    struct tm tm;

    if (when == clock_cache.when)
        return;
    clock_cache.when = when;
    gmtime_r(&when, &tm);
    strftime(clock_cache.clf, sizeof(clock_cache.clf), "%d/%b/%Y:%H:%M:%S +0000", &tm);
    strftime(clock_cache.iso, sizeof(clock_cache.iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
format_combined(struct wbuf *w, const struct log_access_rec *r)
{
    wbuf_str(w, r->client);
    wbuf_str(w, " - - [");
    wbuf_str(w, clock_cache.clf);
    wbuf_str(w, "] \"");
    w_clf(w, r->method, r->method_len);
    wbuf_raw(w, " ", 1);
    w_clf(w, r->target, r->target_len);
    wbuf_str(w, r->http_minor == 0 ? " HTTP/1.0\" " : " HTTP/1.1\" ");
    wbuf_u64(w, (uint64_t)r->status);
    wbuf_raw(w, " ", 1);
    wbuf_u64(w, r->bytes);
    wbuf_str(w, " \"");
    w_clf(w, r->referer, r->referer_len);
    wbuf_str(w, "\" \"");
    w_clf(w, r->user_agent, r->user_agent_len);
    wbuf_str(w, "\" upstream=");
    wbuf_str(w, r->upstream != NULL ? r->upstream : "-");
    wbuf_str(w, " upstream_status=");
    if (r->upstream_status > 0)
        wbuf_u64(w, (uint64_t)r->upstream_status);
    else
        wbuf_raw(w, "-", 1);
    wbuf_str(w, " duration_ms=");
    w_ms(w, r->duration_us);
    wbuf_str(w, " request_id=");
    wbuf_str(w, r->request_id != NULL ? r->request_id : "-");
    wbuf_raw(w, "\n", 1);
}

static void
format_json(struct wbuf *w, const struct log_access_rec *r)
{
    wbuf_str(w, "{\"time\":\"");
    wbuf_str(w, clock_cache.iso);
    wbuf_raw(w, "\"", 1);
    w_jstr(w, "client", r->client, strlen(r->client));
    w_jstr(w, "method", r->method, r->method_len);
    w_jstr(w, "target", r->target, r->target_len);
    w_jstr(w, "protocol", r->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1", 8);
    w_jstr(w, "host", r->host, r->host_len);
    w_jnum(w, "status", (uint64_t)r->status);
    w_jnum(w, "bytes", r->bytes);
    w_jstr(w, "referer", r->referer, r->referer_len);
    w_jstr(w, "user_agent", r->user_agent, r->user_agent_len);
    w_jstr(w, "upstream", r->upstream, r->upstream != NULL ? strlen(r->upstream) : 0);
    if (r->upstream_status > 0)
        w_jnum(w, "upstream_status", (uint64_t)r->upstream_status);
    else
        wbuf_str(w, ",\"upstream_status\":null");
    wbuf_str(w, ",\"duration_ms\":");
    w_ms(w, r->duration_us);
    w_jstr(w, "request_id", r->request_id, r->request_id != NULL ? strlen(r->request_id) : 0);
    wbuf_str(w, "}\n");
}

size_t
log_access_format(char *out, size_t cap, enum log_format fmt, const struct log_access_rec *r)
{
    struct wbuf w;

    clock_update(r->when);
    wbuf_init(&w, out, 0, cap);
    if (fmt == LOG_FMT_JSON)
        format_json(&w, r);
    else
        format_combined(&w, r);
    return wbuf_full(&w) ? 0 : w.len;
}

/* Opens path for appending and puts it on target (or returns the new fd when target is -1). */
static int
open_onto(const char *path, int target)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0 || target < 0)
        return fd;
    if (dup2(fd, target) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return target;
}

int
log_access_open(const char *dest, char *err, size_t errlen)
{
    int rc = 0;

    pthread_mutex_lock(&access_log.lock);
    if (strcmp(dest, "off") == 0 || strcmp(dest, "stdout") == 0) {
        int fd = dest[1] == 'f' ? -1 : STDOUT_FILENO;
        /* A file descriptor of ours is left open: a worker may be writing to it right now. */
        access_log.fd = fd;
        access_log.path[0] = '\0';
    } else if (strlen(dest) >= sizeof(access_log.path)) {
        snprintf(err, errlen, "access_log: path too long");
        rc = -1;
    } else {
        int own = access_log.path[0] != '\0' ? access_log.fd : -1;
        int fd = open_onto(dest, own);
        if (fd < 0) {
            snprintf(err, errlen, "access_log: cannot open %s: %s", dest, strerror(errno));
            rc = -1;
        } else {
            access_log.fd = fd;
            snprintf(access_log.path, sizeof(access_log.path), "%s", dest);
        }
    }
    pthread_mutex_unlock(&access_log.lock);
    return rc;
}

int
log_access_reopen(void)
{
    int rc = 0;

    pthread_mutex_lock(&access_log.lock);
    if (access_log.path[0] != '\0' && open_onto(access_log.path, access_log.fd) < 0) {
        log_msg(LOG_ERROR, "access_log: cannot reopen %s: %s", access_log.path, strerror(errno));
        rc = -1;
    }
    pthread_mutex_unlock(&access_log.lock);
    return rc;
}

int
log_access_enabled(void)
{
    return access_log.fd >= 0;
}

void
log_access_write(const char *p, size_t n)
{
    int fd = access_log.fd;

    while (fd >= 0 && n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a full disk must not stop the proxy; the lines are lost */
        }
        p += w;
        n -= (size_t)w;
    }
}
