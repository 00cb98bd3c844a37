/* Socket reads and writes of evbuffers, without libevent's 4 KiB read cap and FIONREAD ioctl, and
 * parsers fed from evbuffers without copies. */
#ifndef IOBUF_H
#define IOBUF_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

/* Read sizes adapt between these: small for requests and pages, large for bulk bodies. */
#define IOBUF_READ_MIN (16 * 1024)
#define IOBUF_READ_MAX (256 * 1024)

/*
 * Reads what fd has, up to *size bytes, straight into buf's free space (one readv). *size is the
 * connection's current read size: doubled (up to IOBUF_READ_MAX) when a read fills it, so bulk
 * transfers take few syscalls, and back to IOBUF_READ_MIN when a read is small. Returns the bytes
 * read, 0 at end of stream, or -1 with errno set (EAGAIN: nothing to read now).
 */
int iobuf_read(struct evbuffer *buf, int fd, uint32_t *size);

/* The most buffer chains one write takes: 256 KiB of 16 KiB reads, and the head before them. */
#define IOBUF_WRITE_VECS 32

/*
 * Writes what buf holds to fd, as much as the socket takes in one call, and drains it from buf.
 * Returns the bytes written (0 if buf was empty), or -1 with errno set (EAGAIN: try when writable).
 */
int iobuf_write(struct evbuffer *buf, int fd);

/* A parser fed the bytes of an evbuffer piece by piece: returns like http_body_feed(), with 0 for
 * "took all n bytes, wants more". */
typedef int (*iobuf_feed_fn)(void *ctx, const char *p, size_t n, size_t *used);

/*
 * Feeds buf's bytes from offset skip on to fn, chain by chain and without copying, until fn returns
 * non-zero or the bytes run out. Returns fn's last answer (0 when it took everything); *took counts
 * the bytes it consumed.
 */
int iobuf_feed(struct evbuffer *buf, size_t skip, iobuf_feed_fn fn, void *ctx, size_t *took);

#endif
