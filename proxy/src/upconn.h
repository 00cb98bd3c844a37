/*
 * Server connections: non-blocking connect with a timeout, reads and writes between evbuffers and
 * the socket, and the worker's pool of idle keep-alive connections. What the bytes mean is conn.c's
 * business; this module only moves them and reports events through conn.h's conn_upstream_*().
 */
#ifndef UPCONN_H
#define UPCONN_H

#include <stdint.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#include "balancer.h"

struct worker;
struct conn;

/* One connection to a server. Owned by the worker: by its pool while idle, else by owner. */
struct upconn {
    struct worker *w;    /* borrowed */
    struct conn *owner;  /* borrowed: the client connection using it; NULL while pooled */
    struct upconn *next; /* in the worker's idle pool */
    struct upconn *prev;
    int fd;
    struct event rev;
    struct event wev;
    struct event timer;
    struct evbuffer *in;  /* owned: bytes from the server */
    struct evbuffer *out; /* owned: bytes for the server */
    struct balancer_addr addr;
    uint64_t idle_since_ms;
    uint32_t rsize; /* the next read's size (iobuf_read) */
    unsigned connecting : 1;
    unsigned reused : 1;      /* taken from the pool: the server may have closed it meanwhile */
    unsigned read_paused : 1; /* back-pressure: the client is slow */
    unsigned eof : 1;
};

/*
 * Returns a connection to addr for owner: an idle pooled one (reused set) or a new one. When
 * connecting is not set it is ready at once and the caller goes on by itself; otherwise the result
 * comes through conn_upstream_ready() or conn_upstream_failed(). Returns NULL with errno set when
 * the connection failed at once (refused, no socket...): nothing to close.
 */
struct upconn *upconn_get(struct worker *w, struct conn *owner, const struct balancer_addr *addr,
                          uint64_t connect_timeout_ms);

/* Starts writing what is in u->out, now or when the socket takes it. Returns 0, or -1 if the
 * connection broke (the caller still owns u and closes it). */
int upconn_flush(struct upconn *u);

/* Arms (ms > 0) or disarms (0) the response timeout; expiry calls conn_upstream_failed(u, 1). */
void upconn_timeout(struct upconn *u, uint64_t ms);

/* Stops or resumes reading from the server (back-pressure from a slow client). */
void upconn_pause_read(struct upconn *u, int pause);

/* Returns u to the worker's idle pool (it must have nothing buffered either way), or closes it
 * when the pool is full or the worker drains. */
void upconn_release(struct upconn *u);

/* Closes u and frees it. */
void upconn_close(struct upconn *u);

#endif
