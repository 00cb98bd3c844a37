/* Handing listening sockets to a successor over a Unix socket (handover.h). */
#include "handover.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* The most sockets one portier hands over: listeners times workers, and the admin listener. */
#define HANDOVER_MAX 1024
/* How long each side waits for the other's next message. */
#define HANDOVER_WAIT_S 10

/* ---------------------------------------------------------------------------------------------
 * Messages
 */

/*
 * The address of path: a file, or with a leading '@' a name in the abstract namespace, which
 * belongs to the network namespace (two pods with the host's network share it, no volume needed).
 * Returns its length, or 0 with a message in err.
 */
static socklen_t
unix_addr(const char *path, struct sockaddr_un *sun, char *err, size_t errlen)
{
    size_t len = strlen(path);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (len < 1 || len >= sizeof(sun->sun_path)) {
        snprintf(err, errlen, "handover %s: not a Unix socket path (1 to %zu bytes)", path,
                 sizeof(sun->sun_path) - 1);
        return 0;
    }
    memcpy(sun->sun_path, path, len + 1);
    if (path[0] != '@')
        return (socklen_t)sizeof(*sun);
    sun->sun_path[0] = '\0';
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

/* Sends one message, with fd attached unless it is -1. */
static int
send_msg(int s, const char *msg, int fd)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct iovec iov = {(void *)msg, strlen(msg)};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        memset(&u, 0, sizeof(u));
        m.msg_control = u.buf;
        m.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(s, &m, MSG_NOSIGNAL) == (ssize_t)iov.iov_len ? 0 : -1;
}

/*
 * Receives one message into buf (NUL-terminated) and the descriptor attached to it, if any, in
 * *fd (else -1). Returns the message's length, 0 at end of stream, -1 on error.
 */
static ssize_t
recv_msg(int s, char *buf, size_t len, int *fd)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct iovec iov = {buf, len - 1};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n = recvmsg(s, &m, MSG_CMSG_CLOEXEC);

    *fd = -1;
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(fd, CMSG_DATA(c), sizeof(int));
    }
    if ((m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        errno = EMSGSIZE;
        return -1;
    }
    buf[n] = '\0';
    return n;
}

/* Whether the peer of s runs as the same user as we do: only it may take or give our sockets. */
static bool
same_user(int s)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    return getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == geteuid();
}

/* ---------------------------------------------------------------------------------------------
 * The successor's side: blocking, before its loop runs
 */

struct received {
    enum handover_kind kind;
    char spec[HANDOVER_SPEC_MAX];
    int fd; /* owned until taken; -1 once taken */
};

struct handover {
    int s; /* the connection to the old portier */
    struct received *socks;
    size_t n;
};

void
handover_free(struct handover *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++) {
        if (h->socks[i].fd >= 0)
            close(h->socks[i].fd);
    }
    if (h->s >= 0)
        close(h->s);
    free(h->socks);
    free(h);
}

/* Reads "L spec"/"A spec" messages with their descriptors until "END". */
static int
receive_sockets(struct handover *h, const char *path, char *err, size_t errlen)
{
    char msg[HANDOVER_SPEC_MAX + 8];
    int fd;

    for (;;) {
        ssize_t n = recv_msg(h->s, msg, sizeof(msg), &fd);
        if (n <= 0) {
            snprintf(err, errlen, "handover %s: %s", path,
                     n == 0 ? "the running portier hung up" : strerror(errno));
            return -1;
        }
        if (strcmp(msg, "END") == 0 && fd < 0)
            return 0;
        if (fd < 0 || n < 3 || (msg[0] != HANDOVER_LISTENER && msg[0] != HANDOVER_ADMIN) ||
            msg[1] != ' ' || (size_t)n - 2 >= HANDOVER_SPEC_MAX || h->n == HANDOVER_MAX) {
            if (fd >= 0)
                close(fd);
            snprintf(err, errlen, "handover %s: an unexpected message", path);
            return -1;
        }
        struct received *r = &h->socks[h->n++];
        r->kind = (enum handover_kind)msg[0];
        memcpy(r->spec, msg + 2, (size_t)n - 1); /* with its NUL */
        r->fd = fd;
    }
}

int
handover_receive(const char *path, struct handover **out, char *err, size_t errlen)
{
    struct timeval wait = {HANDOVER_WAIT_S, 0};
    struct sockaddr_un sun;
    socklen_t sunlen;
    struct handover *h;

    *out = NULL;
    if ((sunlen = unix_addr(path, &sun, err, errlen)) == 0)
        return -1;
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->socks = calloc(HANDOVER_MAX, sizeof(*h->socks))) == NULL) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (h->s < 0) {
        snprintf(err, errlen, "handover %s: socket: %s", path, strerror(errno));
        goto fail;
    }
    if (connect(h->s, (struct sockaddr *)&sun, sunlen) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) {
            handover_free(h); /* nobody there: a first start */
            return 0;
        }
        snprintf(err, errlen, "handover %s: connect: %s", path, strerror(errno));
        goto fail;
    }
    if (!same_user(h->s)) {
        snprintf(err, errlen, "handover %s: the portier there runs as another user", path);
        goto fail;
    }
    if (setsockopt(h->s, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait)) < 0 ||
        send_msg(h->s, "TAKE", -1) < 0) {
        snprintf(err, errlen, "handover %s: %s", path, strerror(errno));
        goto fail;
    }
    if (receive_sockets(h, path, err, errlen) < 0)
        goto fail;
    *out = h;
    return 0;

fail:
    handover_free(h);
    return -1;
}

size_t
handover_count(const struct handover *h, enum handover_kind kind, const char *spec)
{
    size_t n = 0;

    for (size_t i = 0; h != NULL && i < h->n; i++)
        n += h->socks[i].kind == kind && h->socks[i].fd >= 0 && strcmp(h->socks[i].spec, spec) == 0;
    return n;
}

int
handover_take(struct handover *h, enum handover_kind kind, const char *spec)
{
    for (size_t i = 0; h != NULL && i < h->n; i++) {
        struct received *r = &h->socks[i];
        if (r->kind == kind && r->fd >= 0 && strcmp(r->spec, spec) == 0) {
            int fd = r->fd;
            r->fd = -1;
            return fd;
        }
    }
    return -1;
}

int
handover_ready(struct handover *h, char *err, size_t errlen)
{
    char msg[16];
    int fd;
    ssize_t n;

    if (send_msg(h->s, "READY", -1) < 0) {
        snprintf(err, errlen, "handover: READY: %s", strerror(errno));
        return -1;
    }
    n = recv_msg(h->s, msg, sizeof(msg), &fd);
    if (fd >= 0)
        close(fd);
    if (n <= 0 || strcmp(msg, "DONE") != 0) {
        snprintf(err, errlen, "handover: no DONE from the old portier (%s)",
                 n < 0 ? strerror(errno) : "it hung up");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The running side: on the main thread's loop
 */

struct handover_server {
    struct handover_ops ops;
    struct event_base *base;
    int lfd;
    struct event *accept_ev; /* owned */
    int s;                   /* the successor's connection, or -1 */
    struct event *conn_ev;   /* owned, on s */
    bool sent;               /* the sockets went: READY is next */
};

static void
session_end(struct handover_server *sv, const char *why)
{
    if (why != NULL)
        log_msg(LOG_WARN, "handover: %s; serving on", why);
    if (sv->conn_ev != NULL)
        event_free(sv->conn_ev);
    sv->conn_ev = NULL;
    if (sv->s >= 0)
        close(sv->s);
    sv->s = -1;
    sv->sent = false;
}

static int
send_sockets(struct handover_server *sv)
{
    struct handover_socket *socks = calloc(HANDOVER_MAX, sizeof(*socks));
    char msg[HANDOVER_SPEC_MAX + 8];
    size_t n;
    int rc = 0;

    if (socks == NULL)
        return -1;
    n = sv->ops.sockets(sv->ops.arg, socks, HANDOVER_MAX);
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(msg, sizeof(msg), "%c %s", (char)socks[i].kind, socks[i].spec);
        rc = send_msg(sv->s, msg, socks[i].fd);
    }
    free(socks);
    return rc == 0 ? send_msg(sv->s, "END", -1) : -1;
}

static void
conn_cb(evutil_socket_t fd, short what, void *arg)
{
    struct handover_server *sv = arg;
    char msg[16];
    int extra;
    ssize_t n;

    if (what & EV_TIMEOUT) {
        session_end(sv, "the successor went quiet");
        return;
    }
    n = recv_msg(fd, msg, sizeof(msg), &extra);
    if (extra >= 0)
        close(extra);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        session_end(sv, sv->sent ? "the successor hung up before it served" : NULL);
        return;
    }
    if (!sv->sent && strcmp(msg, "TAKE") == 0) {
        if (send_sockets(sv) < 0) {
            session_end(sv, "cannot send the listening sockets");
            return;
        }
        sv->sent = true;
        log_msg(LOG_INFO, "handover: sockets sent to a successor; waiting for it to serve");
        return;
    }
    if (sv->sent && strcmp(msg, "READY") == 0) {
        /* No third portier may come in between: the successor listens on path next. */
        event_del(sv->accept_ev);
        close(sv->lfd);
        sv->lfd = -1;
        if (send_msg(fd, "DONE", -1) < 0)
            log_msg(LOG_WARN, "handover: DONE: %s", strerror(errno));
        session_end(sv, NULL);
        log_msg(LOG_INFO, "handover: the successor serves; draining");
        sv->ops.done(sv->ops.arg); /* may stop the loop; sv stays until handover_stop() */
        return;
    }
    session_end(sv, "an unexpected message from the successor");
}

static void
accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct handover_server *sv = arg;
    struct timeval wait = {HANDOVER_WAIT_S * 3, 0}; /* its start may wait for DNS */
    int s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    (void)what;
    if (s < 0)
        return;
    if (sv->s >= 0 || !same_user(s)) {
        log_msg(LOG_WARN, "handover: %s",
                sv->s >= 0 ? "a second successor at once: refused"
                           : "a process of another user: refused");
        close(s);
        return;
    }
    sv->s = s;
    sv->conn_ev = event_new(sv->base, s, EV_READ | EV_PERSIST, conn_cb, sv);
    if (sv->conn_ev == NULL || event_add(sv->conn_ev, &wait) < 0)
        session_end(sv, "out of memory");
}

struct handover_server *
handover_listen(struct event_base *base, const char *path, const struct handover_ops *ops,
                char *err, size_t errlen)
{
    struct handover_server *sv = calloc(1, sizeof(*sv));
    struct sockaddr_un sun;
    socklen_t sunlen;

    if (sv == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sv->ops = *ops;
    sv->base = base;
    sv->s = -1;
    sv->lfd = -1;
    if ((sunlen = unix_addr(path, &sun, err, errlen)) == 0)
        goto fail;
    sv->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* A file left by a portier that is gone (or that just handed over to us); an abstract name
     * goes with the socket that had it. */
    if (path[0] != '@' && unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "handover %s: %s", path, strerror(errno));
        goto fail;
    }
    mode_t old = umask(0077); /* only our user may connect */
    int rc = sv->lfd < 0 ? -1 : bind(sv->lfd, (struct sockaddr *)&sun, sunlen);
    umask(old);
    if (rc < 0 || listen(sv->lfd, 4) < 0) {
        snprintf(err, errlen, "handover %s: %s", path, strerror(errno));
        goto fail;
    }
    sv->accept_ev = event_new(base, sv->lfd, EV_READ | EV_PERSIST, accept_cb, sv);
    if (sv->accept_ev == NULL || event_add(sv->accept_ev, NULL) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return sv;

fail:
    handover_stop(sv);
    return NULL;
}

void
handover_stop(struct handover_server *sv)
{
    if (sv == NULL)
        return;
    session_end(sv, NULL);
    if (sv->accept_ev != NULL)
        event_free(sv->accept_ev);
    if (sv->lfd >= 0)
        close(sv->lfd);
    free(sv);
}
