/* Socket reads and writes of evbuffers, without libevent's 4 KiB read cap and FIONREAD ioctl. */
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

#endif
