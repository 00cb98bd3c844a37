/*
 * Client connections and the exchanges on them: reading request heads, routing, forwarding to a
 * server connection (upconn.h) and back, keep-alive, pipelining, tunnels and timeouts. Every
 * connection is torn down in one place, conn_close().
 */
#ifndef CONN_H
#define CONN_H

#include <sys/socket.h>

struct worker;
struct listener;
struct upconn;

/*
 * Takes over fd, a client connection accepted on l (already counted by the worker), and starts
 * reading its first request. On failure the connection is closed and the count dropped.
 */
void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t len,
                 struct listener *l);

/* Shutdown: closes idle client connections now; the others close after their current response. */
void conn_drain(struct worker *w);

/* Closes every client connection of w (why is logged once for all, or NULL for silence). */
void conn_close_all(struct worker *w, const char *why);

/* Frees the exchanges w keeps for reuse; call once its connections are gone. */
void conn_free_cache(struct worker *w);

/*
 * For upconn.c, each called at most once per event, from the server connection's callbacks.
 * conn_upstream_ready: the connection to the server is up (or was taken from the pool).
 * conn_upstream_failed: it could not be set up or broke before the response began (errno-like
 * reason, timeout set for a connect timeout). conn_upstream_read: response bytes arrived or the
 * server closed (eof). conn_upstream_drained: the server took what was buffered for it.
 */
void conn_upstream_ready(struct upconn *u);
void conn_upstream_failed(struct upconn *u, int timeout, const char *why);
void conn_upstream_read(struct upconn *u, int eof);
void conn_upstream_drained(struct upconn *u);

/* Close every idle pooled server connection of w (shutdown). */
void upconn_close_idle(struct worker *w);

#endif
