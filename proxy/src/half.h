/*
 * One side of a proxied connection, client or server: a non-blocking socket, its input and output
 * buffers, reads paused for back-pressure, a connect in progress, and one timer. It reports to its
 * owner through one callback, and only from its own event callbacks: no function below ever calls
 * the owner back, so the owner can call them from anywhere, its own callback included.
 */
#ifndef HALF_H
#define HALF_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>

struct loop;

enum half_event {
    HALF_READ,      /* bytes arrived in in, or the peer closed its side (eof) */
    HALF_DRAINED,   /* out was written whole after a wait for the socket (whoever flushed it) */
    HALF_CONNECTED, /* the connect in progress, or the TLS handshake, succeeded */
    HALF_ERROR,     /* the connect, a read or a write failed: err says why (eof is set too) */
    HALF_TIMEOUT,   /* the timer went off */
};

/* "read", "drained"...: for logs. */
const char *half_event_str(enum half_event ev);

/* The owner's callback. It may do anything with the half, including stop it. */
typedef void (*half_cb)(void *owner, enum half_event ev);

struct half {
    int fd;                /* owned; -1 once closed */
    struct evbuffer *in;   /* owned: bytes read and not yet taken by the owner */
    struct evbuffer *out;  /* owned: bytes for the socket */
    struct loop *lp;       /* borrowed */
    half_cb cb;            /* the owner's, and its argument */
    void *owner;           /* borrowed */
    uint64_t nread;        /* bytes read from the socket so far */
    uint64_t nwritten;     /* bytes written to the socket so far */
    int err;               /* errno of the failure (EPROTO for TLS), 0 if none */
    unsigned long tls_err; /* OpenSSL's error code of a TLS failure, 0 if none */
    uint32_t rsize;        /* the next read's size (iobuf_read) */
    SSL *ssl;              /* owned: the TLS session, or NULL for plain bytes */
    unsigned connecting : 1;
    unsigned read_paused : 1;    /* the owner asked not to read (back-pressure) */
    unsigned eof : 1;            /* the peer will send nothing more (closed, reset or failed) */
    unsigned wr_shut : 1;        /* our side was shut down for writing */
    unsigned stopped : 1;        /* no more events: the owner is closing it */
    unsigned handshaking : 1;    /* the TLS handshake is not over */
    unsigned sniffed : 1;        /* the first byte was looked at (TLS or not) */
    unsigned plain_http : 1;     /* a TLS half whose client spoke plain HTTP: TLS is off */
    unsigned wr_wants_read : 1;  /* a TLS write waits for the socket to be readable */
    unsigned rd_wants_write : 1; /* a TLS read waits for the socket to be writable */
    unsigned write_waited : 1;   /* a write met a full socket: HALF_DRAINED is owed */
    uint64_t due_us;             /* when the timeout is due (loop_now_us), 0: none */
    uint64_t armed_us;           /* when the timer event goes off, 0: not pending */
    struct event rev, wev, timer;
};

/*
 * Sets up h on fd (non-blocking) in lp's loop with the owner's callback, and starts reading
 * unless connecting. A connecting half (connect() returned EINPROGRESS) reports HALF_CONNECTED
 * or HALF_ERROR once the connect is over, then reads. Returns 0, or -1 when memory ran out (fd
 * then still belongs to the caller).
 */
int half_init(struct half *h, struct loop *lp, int fd, bool connecting, half_cb cb, void *owner);

/*
 * As half_init() for an accepted socket that speaks TLS, taking ssl (in the accept state; freed
 * with the half). The handshake comes first and HALF_CONNECTED says when it is over; then in and
 * out carry the bytes inside the records. A client whose first byte is an ASCII capital (plain
 * HTTP where a TLS record must begin) gets no handshake: TLS is dropped, plain_http set, and its
 * bytes come in as on a plain half, for the owner to answer. Returns 0, or -1 when memory ran out
 * (fd and ssl then still belong to the caller).
 */
int half_init_tls(struct half *h, struct loop *lp, int fd, SSL *ssl, half_cb cb, void *owner);

/*
 * Starts TLS as the client on h, connected and plain with nothing buffered, taking ssl (in the
 * connect state, its server name and checks set; freed with the half). HALF_CONNECTED says when
 * the handshake is over (HALF_ERROR when it failed); write only after that. Returns 0, or -1 (ssl
 * then still belongs to the caller).
 */
int half_start_tls(struct half *h, SSL *ssl);

/* Why h failed: the TLS reason or the errno text. */
const char *half_error_str(const struct half *h);

/* Hands h to another owner (a pooled server connection changes hands). */
void half_set_owner(struct half *h, half_cb cb, void *owner);

/*
 * Writes what out holds, as much as the socket takes now; the rest goes when it is writable, and
 * HALF_DRAINED says when it all went (also when a later half_flush() wrote the rest after a wait:
 * the report then comes from the loop, never from inside the call). Returns 0, or -1 when the write
 * failed (err set, eof set; nothing is reported through the callback).
 */
int half_flush(struct half *h);

/* Stops (true) or resumes (false) reading from the socket. */
void half_pause_read(struct half *h, bool pause);

/* Reads in this turn of the loop, after the callback that calls it, as if the socket had polled
 * readable: for bytes known to be there already. Nothing is read if they are not. */
void half_read_soon(struct half *h);

/* Once out is empty: tells the peer that nothing more will come (TLS close_notify, then
 * shutdown SHUT_WR). */
void half_shutdown_write(struct half *h);

/* Over TLS, gives back OpenSSL's record buffers while nothing is in them (OpenSSL allocates them
 * again for the next record); plain halves hold none. */
void half_release_buffers(struct half *h);

/*
 * Arms the timer for ms milliseconds from now (replacing any armed), or disarms it with 0. Owners
 * re-arm on every request, so this is cheap: a due time later than the pending event's only moves
 * the due time, and the event, when it goes off early, waits again for the rest; disarming leaves
 * the event to find nothing due. HALF_TIMEOUT never comes before the due time.
 */
void half_timer(struct half *h, uint64_t ms);

/*
 * No more events or callbacks for h, and its socket is closed now (after a TLS close_notify when
 * the session is sound), so that a connection that ends
 * gives its descriptor back at once: its memory (and what is buffered) stays valid until
 * half_fini(), for an owner that frees it later.
 */
void half_stop(struct half *h);

/* Closes the socket and frees the buffers; h must not be used again but for half_init(). */
void half_fini(struct half *h);

#endif
