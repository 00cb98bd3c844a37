/* A service's servers: round-robin picks, passive health and the active check's verdicts shared by
 * every worker thread through C11 atomics alone, with server sets swapped in whole by discovery;
 * connecting, probing, timing and logging are left to the caller. */
#ifndef BALANCER_H
#define BALANCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The most servers in one set: a request's tried servers are the bits of one uint64_t. */
#define BALANCER_MAX_SERVERS 64
/* The cooldown after a failure that balancer_new() callers use unless configured otherwise. */
#define BALANCER_COOLDOWN_MS 5000
#define BALANCER_LABEL_MAX 64

/* One server as the config or discovery names it: plain data, copied into each set. */
struct balancer_addr {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char label[BALANCER_LABEL_MAX]; /* "127.0.0.22:8080", "[::1]:8080": for logs and metrics */
};

/* A service: its current set, replaced whole by balancer_update(). */
struct balancer;
/* An immutable, refcounted array of servers, plus the service's round-robin position. */
struct balancer_set;
/* One server of a set. Its health (cooldown, failure count, probe verdict) is shared with every set
 * that has the same address, so marks made through an old set still count after a swap. */
struct balancer_server;

/*
 * Fills *a with a copy of the AF_INET or AF_INET6 address sa (len bytes) and its label. Returns 0,
 * or -1 for another family or a len that does not fit.
 */
int balancer_addr_init(struct balancer_addr *a, const struct sockaddr *sa, socklen_t len);

/* Returns whether a and b are the same server: family, address and port (and IPv6 scope), not the
 * padding around them. The same test decides which servers share health across a set swap. */
bool balancer_addr_equal(const struct balancer_addr *a, const struct balancer_addr *b);

/*
 * Creates a service with the n servers of addrs (copied; n may be 0: no servers, 503) and the
 * cooldown in milliseconds that balancer_mark_failed() starts (BALANCER_COOLDOWN_MS is the usual
 * value; 0 turns passive health off). Returns NULL if n > BALANCER_MAX_SERVERS or memory runs out.
 * The caller owns the balancer until balancer_free().
 */
struct balancer *balancer_new(const struct balancer_addr *addrs, size_t n, int64_t cooldown_ms);

/*
 * Drops the balancer and its reference to the current set; balancer_free(NULL) is a no-op. No
 * balancer_acquire() or balancer_update() may run on it any more, but sets that requests still
 * hold stay valid until their last balancer_set_unref().
 */
void balancer_free(struct balancer *b);

/*
 * Replaces the servers with the n of addrs (copied; 0 empties the service). Servers whose address
 * was already there keep their health (a server in cooldown stays in it); the round-robin position
 * carries on. The same addresses in any order keep the current set untouched. Requests holding the
 * old set go on with it; it is freed by whoever drops the last reference. May wait (spinning, then
 * yielding) for balancer_acquire() calls that are between loading the old set and taking their
 * reference, a window of a few instructions.
 *
 * Returns 0, or -1 (the current set stays) if n > BALANCER_MAX_SERVERS or memory runs out. Calls
 * for one balancer must not overlap (discovery updates each service from one thread); they may
 * run while any number of threads acquire and pick.
 */
int balancer_update(struct balancer *b, const struct balancer_addr *addrs, size_t n);

/*
 * Returns a reference to the current set, which the caller drops with balancer_set_unref() once
 * the request is done with its servers. Lock-free; safe from any thread.
 */
struct balancer_set *balancer_acquire(struct balancer *b);

/* Takes another reference to a set the caller already holds one on; returns s. */
struct balancer_set *balancer_set_ref(struct balancer_set *s);

/* Drops a reference; the last one frees the set and its servers. balancer_set_unref(NULL) is a
 * no-op. */
void balancer_set_unref(struct balancer_set *s);

/* Returns the number of servers in s (0: the service has none, the caller answers 503). */
size_t balancer_set_size(const struct balancer_set *s);

/* Returns server i < balancer_set_size(s), valid while the caller holds s (for metrics). */
const struct balancer_server *balancer_set_server(const struct balancer_set *s, size_t i);

/*
 * Picks the next server of s for a request, or returns NULL when s is empty or every server is in
 * *tried. now_ms here and below is one monotonic clock in milliseconds, the same for every call.
 * Round-robin over one counter per set shared by all threads: with every server up, N picks over k
 * servers give each exactly N/k whatever the threads.
 *
 * A server that is down (in cooldown at now_ms, or marked down by the active check through
 * balancer_mark_probe()) is skipped while a server that is neither is left; when all that are left
 * are down, they are tried anyway, in round-robin order, never skipped. tried, if
 * not NULL, holds bit i for server i already tried by this request: those are never picked again,
 * and the pick's bit is set, so a retry after a refused connection is another balancer_pick() with
 * the same tried (start it at 0). The server is valid while the caller holds s.
 */
const struct balancer_server *balancer_pick(struct balancer_set *s, int64_t now_ms,
                                            uint64_t *tried);

/*
 * Puts srv in cooldown until now_ms plus the balancer's cooldown and counts a failure (call it when
 * a connection is refused, reset or times out). Any thread, lock-free.
 */
void balancer_mark_failed(const struct balancer_server *srv, int64_t now_ms);

/* Ends srv's cooldown (call it when a connection succeeded). Writes shared memory only if srv was
 * in cooldown, so calling it on every success is cheap. */
void balancer_mark_ok(const struct balancer_server *srv);

/* Returns whether srv is out of cooldown at now_ms. The probe's verdict is not part of it: a server
 * that picks prefer (portier_server_up) is balancer_server_up() && balancer_server_probe_up(). */
bool balancer_server_up(const struct balancer_server *srv, int64_t now_ms);

/*
 * Records the active health check's verdict on srv: up (true) or down (false). A probe-down server
 * is skipped by balancer_pick() like one in cooldown, until marked up again; cooldowns and probe
 * verdicts are independent (marking up does not end a cooldown, balancer_mark_ok() does not undo a
 * probe's down). Every server starts up, and so does an address new to its balancer. Writes shared
 * memory only when the verdict changes. Any thread, lock-free; health.c is the one caller.
 */
void balancer_mark_probe(const struct balancer_server *srv, bool up);

/* Returns the active check's last verdict on srv: true (up) unless balancer_mark_probe() said
 * down. */
bool balancer_server_probe_up(const struct balancer_server *srv);

/* Returns how many times srv was marked failed, counted across set swaps while it stays. */
uint64_t balancer_server_failures(const struct balancer_server *srv);

/* Returns srv's address and label, valid while the caller holds its set. */
const struct balancer_addr *balancer_server_addr(const struct balancer_server *srv);

#endif
