/*
 * http: asynchronous HTTP requests on the event loop.
 *
 * A struct http_client owns a libcurl multi handle driven by the loop (see
 * loop_curl.h), so any number of requests progress at once on the loop's one
 * thread and share curl's connection and DNS caches. A request is a method,
 * a URL, header lines and a body; its reply is either collected into a
 * capped buffer or, for streams, handed to an on_data callback chunk by
 * chunk as it arrives (only for 2xx replies: error replies are always
 * collected, so that their message can be shown). Every request is bounded:
 * a connect timeout, a total timeout, an idle timeout (the longest silence
 * once the reply has started, measured on the loop) and a cap on the reply's
 * size, whose breach aborts the transfer with a clear error. TLS peers are
 * verified, only http and https are spoken, redirects are not followed, and
 * the proxy variables (http_proxy, https_proxy, no_proxy...) work as they do
 * for curl. Failures are classified (connection, timeout, idle, too large,
 * TLS...) so that callers can decide what to retry. The module never logs
 * header values, so credentials sent in headers stay out of traces.
 * Depends on loop, loop_curl, buf, alloc, error, log and libcurl.
 */
#ifndef THALAMUS_HTTP_H
#define THALAMUS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "loop.h"

struct http_client;
struct http_request;

enum http_failure {
    HTTP_OK = 0,         /* a reply arrived (whatever its status) */
    HTTP_FAIL_CONNECT,   /* could not resolve or connect */
    HTTP_FAIL_TIMEOUT,   /* connect or total timeout */
    HTTP_FAIL_IDLE,      /* no data for idle_timeout_ms once the reply had started */
    HTTP_FAIL_NETWORK,   /* the connection broke mid-way (reset, closed early) */
    HTTP_FAIL_TLS,       /* TLS handshake or certificate verification failed */
    HTTP_FAIL_TOO_LARGE, /* the reply exceeded max_body */
    HTTP_FAIL_CALLBACK,  /* on_data refused the data */
    HTTP_FAIL_OTHER,
};

struct http_response {
    long status;               /* 0 when no reply arrived */
    enum http_failure failure; /* HTTP_OK when a reply arrived */
    const char *error;         /* what failed, NULL when failure is HTTP_OK */
    const struct buf *body;    /* the collected body; empty for a streamed 2xx reply */
    long elapsed_ms;
};

/* Receives a chunk of a 2xx reply when the request streams. Returns 0, or a
 * negative code with error_set() to abort the transfer (the done callback
 * then reports HTTP_FAIL_CALLBACK with that message). Must not cancel or free
 * anything of the http client. */
typedef int (*http_data_cb)(struct http_request *req, const char *data, size_t len, void *ud);

/* Called once when the request ends, from the loop. resp and the request
 * are valid until it returns; the request is freed afterwards. It may start
 * new requests. */
typedef void (*http_done_cb)(struct http_request *req, const struct http_response *resp, void *ud);

struct http_options {
    const char *method;         /* "GET", "POST"...; NULL: GET, or POST with a body */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* "Name: value" lines, NULL-terminated, or NULL */
    const char *body;           /* copied; NULL for none */
    size_t body_len;            /* bytes of body */
    long connect_timeout_ms;    /* 0: curl's default (300 s) */
    long timeout_ms;            /* 0: none */
    long idle_timeout_ms;       /* 0: none */
    size_t max_body;            /* cap on the reply's body (streamed or not); 0: 64 MiB */
    http_data_cb on_data;       /* NULL: collect the body */
    http_done_cb on_done;       /* required */
    void *ud;
};

/* Creates a client on loop. Fails (TH_ERR) only if curl cannot be
 * initialised. Free with http_client_free(). */
int http_client_new(struct loop *loop, struct http_client **out);

/* Cancels every request in flight (their callbacks are not called) and frees
 * the client. Must be called before loop_free(); not from a callback of one
 * of its requests. */
void http_client_free(struct http_client *client);

/* Starts a request; its result arrives through o->on_done, never from inside
 * this call. *out (may be NULL) receives the request, for http_cancel().
 * Fails (TH_EUSAGE) for a malformed or non-HTTP URL and (TH_ERR) when curl
 * refuses the transfer. */
int http_start(struct http_client *client, const struct http_options *o, struct http_request **out);

/* Cancels a request in flight and frees it; its done callback is not called.
 * Not to be called from its own callbacks (return an error from on_data
 * instead). */
void http_cancel(struct http_request *req);

/* The status of the reply (0 before its status line arrived). */
long http_status(const struct http_request *req);

/* The value of the reply's header name (case-insensitive; the last one when
 * repeated), or NULL. Valid until the next call or the end of the done
 * callback. */
const char *http_header(struct http_request *req, const char *name);

/* "host" or "host:port" of the request's URL, for messages. */
const char *http_host(const struct http_request *req);

/* Requests in flight. */
int http_running(const struct http_client *client);

#endif
