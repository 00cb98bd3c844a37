/*
 * Server connections: a half-connection to one server address, set up with a non-blocking connect,
 * and a loop's pool of idle keep-alive ones. While in use, a connection reports to whoever took it
 * through the half_cb that owner gave (callbacks upward); what the bytes mean is the owner's
 * business. Nothing here knows the client side.
 */
#ifndef UPCONN_H
#define UPCONN_H

#include <stdbool.h>
#include <stdint.h>

#include "balancer.h"
#include "half.h"
#include "loop.h"

/* A loop's idle server connections, most recently used first. */
struct upconn_pool;

/* One connection to a server. Owned by its taker while in use, by the pool while idle. */
struct upconn {
    struct half h; /* the socket and its buffers */
    struct loop_defer defer;
    struct upconn_pool *pool;   /* borrowed: where upconn_release() returns it; NULL: nowhere */
    struct upconn *next, *prev; /* in the pool while idle */
    struct balancer_addr addr;
    int64_t idle_since_ms;
    unsigned reused : 1; /* taken from the pool: the server may have closed it meanwhile */
    unsigned idle : 1;   /* in the pool */
    unsigned closed : 1; /* upconn_close() was called: freed at the end of the loop's turn */
};

/*
 * Makes a connection with fd for a server at addr; *connecting as with connect(2) (true: the
 * result comes later). Returns the fd, or -1 with errno set. Replaceable for tests and fuzzing.
 */
typedef int (*upconn_dial_fn)(const struct balancer_addr *addr, bool *connecting);

/* What the default dial asks for SO_RCVBUF (the kernel doubles it: 128 KiB, autotuning's usual
 * starting size, but fixed). */
#define UPCONN_RCVBUF (64 * 1024)

/* The default dial: a non-blocking TCP socket to addr, with TCP_NODELAY, the handshake's last ACK
 * left to go with the request, and a receive buffer of UPCONN_RCVBUF. The caller owns the fd. */
int upconn_dial_tcp(const struct balancer_addr *addr, bool *connecting);

/* A new pool for lp's server connections; NULL when memory runs out. The caller owns it. */
struct upconn_pool *upconn_pool_new(struct loop *lp);

/* Closes the idle connections and frees the pool; those in use must be gone. NULL: no-op. */
void upconn_pool_free(struct upconn_pool *p);

/* Shutdown: closes the idle connections now; those in use are closed, not kept, when released. */
void upconn_pool_drain(struct upconn_pool *p);

/* Replaces how new connections are made (the default connects a TCP socket). */
void upconn_pool_set_dial(struct upconn_pool *p, upconn_dial_fn dial);

/* Idle connections in the pool. */
unsigned upconn_pool_idle(const struct upconn_pool *p);

/*
 * Returns a connection to addr for the owner's callback: an idle one from pool (reused set, ready
 * at once) or a new one (pool may be NULL: probes never pool). A new one may still be connecting
 * (h.connecting): then HALF_CONNECTED or HALF_ERROR follows, or HALF_TIMEOUT after
 * connect_timeout_ms, and in the meantime writes wait in h.out. Returns NULL with errno set when
 * it failed at once (refused, no socket): nothing to close. Never calls the owner back itself.
 */
struct upconn *upconn_get(struct loop *lp, struct upconn_pool *pool,
                          const struct balancer_addr *addr, uint64_t connect_timeout_ms, half_cb cb,
                          void *owner);

/*
 * The owner is done with u after a complete response, with nothing buffered either way: it goes
 * back to its pool for the next request (or is closed when it has no pool, the pool is full or
 * draining, or the server closed it).
 */
void upconn_release(struct upconn *u);

/* Closes u (why is logged at debug level); its memory is freed at the end of the loop's turn.
 * NULL: no-op. */
void upconn_close(struct upconn *u, const char *why);

#endif
