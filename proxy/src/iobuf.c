/*
 * Reads and writes for both sides of the proxy. evbuffer_read() asks the kernel how much is waiting
 * (an ioctl) and then reads at most 4 KiB, which turns a 256 KiB body into 64 reads and 64 writes;
 * reserving space ourselves and reading it in one call does the same work in one or two. Both
 * directions use the socket calls (recv, send, sendmsg) rather than readv/writev: these skip the
 * file layer.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "iobuf.h"

int
iobuf_read(struct evbuffer *buf, int fd, uint32_t *size)
{
    struct evbuffer_iovec vec[2];
    struct iovec iov[2];
    ssize_t n;
    int nvec;

    if (*size < IOBUF_READ_MIN)
        *size = IOBUF_READ_MIN;
    nvec = evbuffer_reserve_space(buf, (ev_ssize_t)*size, vec, 2);
    if (nvec < 1) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    do {
        n = nvec == 1 ? recv(fd, iov[0].iov_base, iov[0].iov_len, 0) : readv(fd, iov, nvec);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        evbuffer_commit_space(buf, vec, 0);
        return (int)n;
    }
    /* Commit what arrived: the first vector fills before the second is touched. */
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        if (vec[i].iov_len > left)
            vec[i].iov_len = left;
        left -= vec[i].iov_len;
    }
    evbuffer_commit_space(buf, vec, nvec);
    if ((size_t)n >= *size && *size < IOBUF_READ_MAX)
        *size *= 2;
    else if ((size_t)n < *size / 4)
        *size = IOBUF_READ_MIN;
    return (int)n;
}

int
iobuf_write(struct evbuffer *buf, int fd)
{
    struct evbuffer_iovec vec[IOBUF_WRITE_VECS];
    struct iovec iov[IOBUF_WRITE_VECS];
    struct msghdr msg = {.msg_iov = iov};
    ssize_t n;
    int nvec = evbuffer_peek(buf, -1, NULL, vec, IOBUF_WRITE_VECS);

    if (nvec <= 0)
        return 0;
    if (nvec > IOBUF_WRITE_VECS)
        nvec = IOBUF_WRITE_VECS; /* the rest goes in the next call */
    if (nvec == 1) {
        n = send(fd, vec[0].iov_base, vec[0].iov_len, MSG_NOSIGNAL);
    } else {
        for (int i = 0; i < nvec; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        msg.msg_iovlen = (size_t)nvec;
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    }
    if (n > 0)
        evbuffer_drain(buf, (size_t)n);
    return (int)n;
}

int
iobuf_feed(struct evbuffer *buf, size_t skip, iobuf_feed_fn fn, void *ctx, size_t *took)
{
    size_t len = evbuffer_get_length(buf);
    int rc = 0;

    *took = 0;
    while (rc == 0 && skip < len) {
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v[4];
        if (evbuffer_ptr_set(buf, &pos, skip, EVBUFFER_PTR_SET) < 0)
            break;
        int n = evbuffer_peek(buf, -1, &pos, v, 4);
        for (int i = 0; i < n && i < 4 && rc == 0; i++) {
            size_t used = 0;
            rc = fn(ctx, v[i].iov_base, v[i].iov_len, &used);
            skip += used;
            *took += used;
        }
    }
    return rc;
}
