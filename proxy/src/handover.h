/*
 * Listening sockets handed from a running portier to its successor, so that portier is replaced
 * without a refused or reset connection (portier -x PATH on both; README, "Replacing portier").
 *
 * The sockets themselves move (SCM_RIGHTS over a Unix SOCK_SEQPACKET socket at PATH), as HAProxy's
 * -x and Envoy's hot restart do, rather than the successor binding the same addresses anew: the
 * accept queues go with them, so a connection the kernel took before the switch is accepted by
 * the successor instead of being reset when the old process closes its sockets, without
 * net.ipv4.tcp_migrate_req (a host-wide sysctl that needs root and a 5.14 kernel).
 *
 * The exchange: the successor connects and sends "TAKE"; the running portier sends each listening
 * socket ("L spec" or "A spec" for the admin listener, the descriptor attached), then "END"; the
 * successor starts serving on them and sends "READY"; the running portier stops accepting, closes
 * its end of PATH and answers "DONE", then drains as on SIGTERM; the successor listens on PATH for
 * the next one. Without -x a second portier on the same addresses is still refused at bind.
 */
#ifndef HANDOVER_H
#define HANDOVER_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

/* The spec of a socket: the config's address as written ("0.0.0.0:80"). */
#define HANDOVER_SPEC_MAX 128

enum handover_kind { HANDOVER_LISTENER = 'L', HANDOVER_ADMIN = 'A' };

/* What a successor received: descriptors it owns until taken. */
struct handover;

/*
 * Asks the portier at path for its sockets. Returns 0 with *out set to what came, or to NULL when
 * no portier answers there (no such file, or nobody listening: an ordinary first start); -1 with a
 * message in err when one answered and the exchange failed.
 */
int handover_receive(const char *path, struct handover **out, char *err, size_t errlen);

/* How many sockets of kind came for spec. */
size_t handover_count(const struct handover *h, enum handover_kind kind, const char *spec);

/* Takes one socket of kind for spec (the caller owns it now), or returns -1 when none is left. */
int handover_take(struct handover *h, enum handover_kind kind, const char *spec);

/*
 * Tells the old portier that the successor serves, and waits (at most a few seconds) until it has
 * stopped accepting and let go of path. Returns 0, or -1 with a message in err (the old one may
 * then still accept too, which loses nothing).
 */
int handover_ready(struct handover *h, char *err, size_t errlen);

/* Closes the sockets nobody took (addresses the new config dropped) and frees h (NULL: no-op). */
void handover_free(struct handover *h);

/* One socket a running portier offers. */
struct handover_socket {
    enum handover_kind kind;
    const char *spec;
    int fd; /* stays the caller's */
};

/* The running side: what main.c provides. */
struct handover_ops {
    /* Fills at most max sockets to hand over; returns how many. */
    size_t (*sockets)(void *arg, struct handover_socket *out, size_t max);
    /* The successor serves: stop accepting and drain (the sockets stay open in the successor). */
    void (*done)(void *arg);
    void *arg;
};

struct handover_server;

/*
 * Listens on path (replacing a file left there) for a successor, on base. Returns the server, or
 * NULL with a message in err.
 */
struct handover_server *handover_listen(struct event_base *base, const char *path,
                                        const struct handover_ops *ops, char *err, size_t errlen);

/* Stops listening and frees s (a successor mid-exchange is dropped). NULL: no-op. */
void handover_stop(struct handover_server *s);

#endif
