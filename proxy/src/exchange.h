/*
 * An exchange: one request and its response. It routes the request, picks a server and gets a
 * connection to it (upconn.h), forwards the head and body, relays interim responses, the final
 * head and the body back, retries what is safe to retry, tunnels after 101, and writes the access
 * log line. The client connection (conn.c) owns it and drives it: every function here returns a
 * verdict and never calls back into the connection; events from the server reach it through the
 * connection, which passed its own callback down for them.
 */
#ifndef EXCHANGE_H
#define EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "half.h"
#include "loop.h"

struct http_marks;

struct xchg;

/* What an exchange borrows from the client connection it serves, for as long as it lives. */
struct xclient {
    struct half *h;              /* the client's socket and buffers */
    const struct sockaddr *peer; /* trusted_proxies are matched against it */
    const char *ip;              /* for the log and X-Forwarded-For */
    const char *port;            /* the listener's port, for X-Forwarded-Port */
    bool tls;                    /* the listener terminates TLS (X-Forwarded-Proto) */
    bool draining;               /* shutting down: every response closes its connection */
    half_cb server_cb;           /* what server connections report to, and its argument */
    void *owner;
};

enum xchg_verdict {
    XCHG_WAIT,  /* waiting: for bytes, a connect, a server, or the client to take what is queued */
    XCHG_DONE,  /* the response is queued whole; the connection may take its next request */
    XCHG_CLOSE, /* the response is queued whole; the connection closes once it is out */
    XCHG_ABORT, /* the connection must close now: a response cut short, a client that left */
};

/* "wait", "done"...: for logs. */
const char *exchange_verdict_str(enum xchg_verdict v);

/*
 * An exchange for the next request on cl, taken from lp's cache (no allocation per request) and
 * sized for the current config. It borrows cl until exchange_free(). NULL when memory runs out.
 */
struct xchg *exchange_new(struct loop *lp, const struct xclient *cl);

/*
 * Starts the exchange with the request head that is the first len bytes of cl->h->in (a complete
 * head, as the scanner found it and marked it in marks, borrowed for the call): takes them out of
 * the buffer, parses and routes them. Then, or at once when the head is refused, returns
 * exchange_run()'s verdict.
 */
enum xchg_verdict exchange_start(struct xchg *x, size_t len, const struct http_marks *marks);

/*
 * Answers with an error page of status (a head the scanner refused: 400, 414, 431, 501; a head
 * that did not come in time: 408), logs it, and returns XCHG_CLOSE. The bytes of the refused head
 * stay in cl->h->in; up to len of them are read for the log's method and target.
 */
enum xchg_verdict exchange_refuse(struct xchg *x, int status, size_t len);

/* Moves the exchange on as far as the bytes and events so far allow. */
enum xchg_verdict exchange_run(struct xchg *x);

/* For the connection's server callback: records what the server connection reported. Call
 * exchange_run() next. */
void exchange_server_event(struct xchg *x, enum half_event ev);

/* true while the request body is still coming from the client (the client_body timer's wait). */
bool exchange_wants_body(const struct xchg *x);

/*
 * The client sent nothing of the body it owes for client_body: answers 408 if nothing of the
 * response has reached the client (XCHG_CLOSE), else XCHG_ABORT. Closes the server connection.
 */
enum xchg_verdict exchange_body_timeout(struct xchg *x);

/*
 * The connection closes before the exchange is over (the client left, stalled, or shutdown ran
 * out of time): logs the exchange (499 when nothing was answered) with why, if not NULL, in the
 * error log, and closes its server connection. Call exchange_free() next.
 */
void exchange_abort(struct xchg *x, const char *why);

/* Returns x to its loop's cache; x must be over (a verdict other than XCHG_WAIT, or aborted). */
void exchange_free(struct xchg *x);

/* Frees the cached exchanges of lp; call once its connections are gone. */
void exchange_cache_free(struct loop *lp);

#endif
