/* Socket reads into evbuffers without libevent's 4 KiB cap and its FIONREAD ioctl per read. */
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

#endif
