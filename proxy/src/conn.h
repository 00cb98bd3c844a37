/*
 * Client connections: the socket, the request heads read from it, the exchanges (exchange.h) that
 * answer them one after the other, keep-alive, the timers of every wait on the client, and the
 * teardown. Each connection is driven by one loop (conn_run) entered from event callbacks only;
 * a connection that closes is freed at the end of the loop's turn.
 */
#ifndef CONN_H
#define CONN_H

#include <stdbool.h>
#include <sys/socket.h>

#include "loop.h"

/*
 * Takes over fd, a client connection accepted on a listener whose port is port (for
 * X-Forwarded-Port; borrowed for the connection's life) and that terminates TLS when tls, and
 * starts reading its first request. The loop counts it (loop_conn_opened) whether this succeeds
 * or not; on failure it is closed at once.
 */
void conn_accept(struct loop *lp, int fd, const struct sockaddr *peer, socklen_t len,
                 const char *port, bool tls);

/* Shutdown: closes idle client connections now; the others close after their current response. */
void conn_drain(struct loop *lp);

/* Closes every client connection of lp (why is logged once for all, or NULL for silence). */
void conn_close_all(struct loop *lp, const char *why);

/* Frees the head marks lp keeps for reuse; after the last connection is gone. */
void conn_cache_free(struct loop *lp);

#endif
