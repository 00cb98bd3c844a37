/*
 * Requests to the Kubernetes API server: HTTPS on upconn's server connections (half.c's client
 * TLS), verified against the cluster's CA, a bearer token read from its file for every request
 * (the kubelet rotates it), the response parsed by http-parser and its body handed to the owner
 * as it arrives (a watch is one response that never ends until the server ends it). One request
 * per connection: LISTs and WATCHes are few and long, nothing to pool.
 */
#ifndef KUBEAPI_H
#define KUBEAPI_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

/* Where a pod finds the API server's credentials. */
#define KUBEAPI_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
/* The largest token file read. */
#define KUBEAPI_TOKEN_MAX 16384
/* Seconds of silence on an API connection before TCP keepalive probes it (3 probes, a third of this
 * apart). */
#define KUBEAPI_KEEPALIVE_S 30

/* How to reach one API server: its address, TLS context and token file. */
struct kubeapi;

/*
 * From server ("https://IP:PORT"; NULL: $KUBERNETES_SERVICE_HOST and _PORT, as in a pod),
 * ca_file and token_file (NULL: the service account's). The CA is loaded now; the token is read
 * for each request. Returns the client, owned by the caller (kubeapi_free), or NULL with a
 * message in err.
 */
struct kubeapi *kubeapi_new(const char *server, const char *ca_file, const char *token_file,
                            char *err, size_t errlen);

/* Frees a; its requests must be over. NULL is a no-op. */
void kubeapi_free(struct kubeapi *a);

/* "https://10.43.0.1:443": for logs. */
const char *kubeapi_server(const struct kubeapi *a);

enum kubeapi_event {
    KUBEAPI_HEAD, /* the response head came: kubeapi_status() */
    KUBEAPI_DATA, /* body bytes (chunked coding removed) */
    KUBEAPI_DONE, /* the response is complete */
    KUBEAPI_FAIL, /* the request failed before its end: kubeapi_error() */
};

/* The owner's callback; it may cancel the request from inside (nothing follows). */
typedef void (*kubeapi_cb)(void *owner, enum kubeapi_event ev, const char *data, size_t len);

struct kubeapi_req;

/*
 * Starts method path (an origin-form target: "/api/v1/services?watch=1") with body (NULL: none;
 * sent as application/json) on lp's loop. timeout_ms bounds the connect, the handshake and every
 * silence after (a watch's server sends at least every timeoutSeconds it was given). The request
 * reports only from the loop, never from inside this call; after KUBEAPI_DONE or KUBEAPI_FAIL
 * nothing more comes, and the owner must call kubeapi_cancel() to free it (also from the
 * callback). Returns the request, or NULL with a message in err (nothing to cancel).
 */
struct kubeapi_req *kubeapi_start(struct kubeapi *a, struct loop *lp, const char *method,
                                  const char *path, const char *body, uint64_t timeout_ms,
                                  kubeapi_cb cb, void *owner, char *err, size_t errlen);

/* The response's status code; 0 before KUBEAPI_HEAD. */
int kubeapi_status(const struct kubeapi_req *r);

/* Why the request failed ("connect: Connection refused", "TLS: certificate verify failed"...). */
const char *kubeapi_error(const struct kubeapi_req *r);

/* Ends r: no more callbacks; its memory goes at the end of the loop's turn. NULL is a no-op. */
void kubeapi_cancel(struct kubeapi_req *r);

#endif
