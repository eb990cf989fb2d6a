/*
 * http: asynchronous HTTP requests on loop_curl (see http.h).
 *
 * Each request owns a curl easy handle (taken from a pool of reset handles,
 * never larger than the peak number in flight, which saves curl's set-up
 * cost when thousands of requests run),
 * its header list, a copy of its body, and capped buffers for the reply's
 * headers and body. curl's header callback records the status and header
 * lines (restarting at each status line, so 100-continue answers vanish) and
 * starts the idle timer on the first reply byte; the write callback either
 * collects the body or hands it to on_data. A limit breached inside a curl
 * callback is recorded on the request and the callback returns an error, so
 * curl aborts the transfer and the done callback reports the recorded
 * failure instead of curl's generic one. The idle timer lives on the loop:
 * it re-arms itself for the remaining silence instead of being reset on every
 * chunk, and when it expires it cancels the transfer through loop_curl and
 * reports the failure itself. Depends on loop, loop_curl, buf, alloc, error,
 * log and libcurl.
 */
#include "http.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "loop_curl.h"

#define MAX_HEADER_BYTES ((size_t)64 << 10)

struct http_client {
    struct loop *loop;
    struct loop_curl *lc;
    CURL **pool; /* reset easy handles ready for reuse: at most the peak in flight */
    int npool, pool_cap;
    struct http_request *live;
    int running;
};

struct http_request {
    struct http_client *client;
    CURL *easy;
    struct curl_slist *headers;
    char *body_copy;
    char *url;
    char *host;
    struct buf body;
    struct buf resp_headers; /* "name: value\n" lines of the last status line's reply */
    char *header_value;      /* http_header()'s answer */
    long status;
    size_t max_body;
    size_t streamed;
    http_data_cb on_data;
    http_done_cb on_done;
    void *ud;
    long idle_ms, timeout_ms, connect_timeout_ms;
    uint64_t started, last_activity;
    bool replying; /* a reply byte arrived: the idle timer runs */
    struct loop_timer *idle_timer;
    enum http_failure failure; /* recorded inside a curl callback */
    char *error;
    char errbuf[CURL_ERROR_SIZE];
    struct http_request *prev, *next;
};

static bool curl_ready;

int http_client_new(struct loop *loop, struct http_client **out)
{
    *out = NULL;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return error_set("cannot initialise libcurl");
        curl_ready = true;
    }
    struct http_client *c = xcalloc(1, sizeof *c);
    c->loop = loop;
    if (loop_curl_new(loop, &c->lc) < 0) {
        free(c);
        return TH_ERR;
    }
    *out = c;
    return 0;
}

static void release_easy(struct http_client *c, CURL *easy)
{
    if (!easy)
        return;
    if (c->npool == c->pool_cap) {
        c->pool_cap = c->pool_cap ? 2 * c->pool_cap : 16;
        c->pool = xreallocarray(c->pool, (size_t)c->pool_cap, sizeof *c->pool);
    }
    curl_easy_reset(easy);
    c->pool[c->npool++] = easy;
}

static void request_free(struct http_request *r)
{
    struct http_client *c = r->client;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->running--;
    loop_timer_cancel(r->idle_timer);
    release_easy(c, r->easy);
    curl_slist_free_all(r->headers);
    free(r->body_copy);
    free(r->url);
    free(r->host);
    free(r->header_value);
    free(r->error);
    buf_free(&r->body);
    buf_free(&r->resp_headers);
    free(r);
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    while (c->live) {
        struct http_request *r = c->live;
        loop_curl_cancel(c->lc, r->easy);
        request_free(r);
    }
    loop_curl_free(c->lc);
    for (int i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    free(c->pool);
    free(c);
}

int http_running(const struct http_client *c)
{
    return c->running;
}

long http_status(const struct http_request *r)
{
    return r->status;
}

const char *http_host(const struct http_request *r)
{
    return r->host;
}

const char *http_header(struct http_request *r, const char *name)
{
    size_t nlen = strlen(name);
    const char *found = NULL;
    size_t found_len = 0;
    for (const char *line = buf_str(&r->resp_headers); *line;) {
        size_t len = strcspn(line, "\n");
        if (len > nlen && line[nlen] == ':' && !strncasecmp(line, name, nlen)) {
            found = line + nlen + 1;
            found_len = len - nlen - 1;
        }
        line += len + (line[len] == '\n');
    }
    if (!found)
        return NULL;
    while (found_len && (*found == ' ' || *found == '\t')) {
        found++;
        found_len--;
    }
    while (found_len && (found[found_len - 1] == ' ' || found[found_len - 1] == '\t' ||
                         found[found_len - 1] == '\r'))
        found_len--;
    free(r->header_value);
    r->header_value = xstrndup(found, found_len);
    return r->header_value;
}

/* Records the first failure of a request; later ones are consequences. */
static void fail(struct http_request *r, enum http_failure failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct http_request *r, enum http_failure failure, const char *fmt, ...)
{
    if (r->failure != HTTP_OK)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->failure = failure;
    r->error = xstrdup(msg);
}

static double seconds(long ms)
{
    return (double)ms / 1000.0;
}

/* Classifies curl's result when no callback recorded a failure first. */
static void classify(struct http_request *r, CURLcode code)
{
    const char *detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
    switch (code) {
    case CURLE_OK:
        return;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        fail(r, HTTP_FAIL_CONNECT, "cannot resolve the host of %s: %s", r->host, detail);
        return;
    case CURLE_COULDNT_CONNECT: {
        long os_errno = 0;
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
        fail(r, HTTP_FAIL_CONNECT, "cannot connect to %s: %s", r->host,
             os_errno ? strerror((int)os_errno) : detail);
        return;
    }
    case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connected = 0;
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0 && r->connect_timeout_ms)
            fail(r, HTTP_FAIL_TIMEOUT, "cannot connect to %s within %g s", r->host,
                 seconds(r->connect_timeout_ms));
        else
            fail(r, HTTP_FAIL_TIMEOUT, "no complete reply from %s within %g s", r->host,
                 seconds(r->timeout_ms));
        return;
    }
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        fail(r, HTTP_FAIL_TLS, "TLS with %s failed: %s", r->host, detail);
        return;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        fail(r, HTTP_FAIL_NETWORK, "the connection to %s broke: %s", r->host, detail);
        return;
    case CURLE_FILESIZE_EXCEEDED:
        fail(r, HTTP_FAIL_TOO_LARGE, "the reply from %s exceeds the limit of %zu bytes", r->host,
             r->max_body);
        return;
    default:
        fail(r, HTTP_FAIL_OTHER, "request to %s failed: %s", r->host, detail);
        return;
    }
}

static void finish(struct http_request *r, CURLcode code)
{
    struct http_client *c = r->client;
    if (r->status == 0)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    classify(r, code);
    if (r->failure == HTTP_OK && (r->status < 100 || r->status > 599))
        fail(r, HTTP_FAIL_OTHER, "no valid HTTP reply from %s", r->host);
    struct http_response resp = {
        .status = r->status,
        .failure = r->failure,
        .error = r->error,
        .body = &r->body,
        .elapsed_ms = (long)(loop_now(c->loop) - r->started),
    };
    log_debug("http: %s -> %ld (%s) in %ld ms", r->url, r->status,
              r->failure == HTTP_OK ? "ok" : r->error, resp.elapsed_ms);
    loop_timer_cancel(r->idle_timer);
    r->idle_timer = NULL;
    r->on_done(r, &resp, r->ud);
    request_free(r);
}

static void on_curl_done(CURL *easy, CURLcode result, void *ud)
{
    struct http_request *r = ud;
    (void)easy;
    finish(r, result);
}

static void on_idle(struct loop_timer *timer, void *ud)
{
    struct http_request *r = ud;
    (void)timer;
    r->idle_timer = NULL;
    uint64_t silent = loop_now(r->client->loop) - r->last_activity;
    if (silent < (uint64_t)r->idle_ms) {
        r->idle_timer = loop_timer_add(r->client->loop, (uint64_t)r->idle_ms - silent, on_idle, r);
        return;
    }
    loop_curl_cancel(r->client->lc, r->easy);
    fail(r, HTTP_FAIL_IDLE, "no data from %s for %g s", r->host, seconds(r->idle_ms));
    finish(r, CURLE_OPERATION_TIMEDOUT);
}

static void activity(struct http_request *r)
{
    r->last_activity = loop_now(r->client->loop);
    if (!r->replying) {
        r->replying = true;
        if (r->idle_ms > 0)
            r->idle_timer = loop_timer_add(r->client->loop, (uint64_t)r->idle_ms, on_idle, r);
    }
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct http_request *r = ud;
    size_t n = size * nmemb;
    activity(r);
    if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
        buf_reset(&r->resp_headers);
        long status = 0;
        const char *sp = memchr(data, ' ', n);
        if (sp)
            status = strtol(sp + 1, NULL, 10);
        r->status = status;
        return n;
    }
    size_t len = n;
    while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len == 0 || !memchr(data, ':', len))
        return n;
    if (buf_append(&r->resp_headers, data, len) < 0 || buf_putc(&r->resp_headers, '\n') < 0) {
        fail(r, HTTP_FAIL_TOO_LARGE, "the reply headers from %s exceed %zu bytes", r->host,
             MAX_HEADER_BYTES);
        return 0;
    }
    return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct http_request *r = ud;
    size_t n = size * nmemb;
    activity(r);
    if (r->on_data && r->status >= 200 && r->status < 300) {
        if (n > r->max_body - r->streamed) {
            fail(r, HTTP_FAIL_TOO_LARGE, "the reply from %s exceeds the limit of %zu bytes",
                 r->host, r->max_body);
            return CURL_WRITEFUNC_ERROR;
        }
        r->streamed += n;
        if (r->on_data(r, data, n, r->ud) < 0) {
            fail(r, HTTP_FAIL_CALLBACK, "%s", error_message());
            return CURL_WRITEFUNC_ERROR;
        }
        return n;
    }
    if (buf_append(&r->body, data, n) < 0) {
        fail(r, HTTP_FAIL_TOO_LARGE, "the reply from %s exceeds the limit of %zu bytes", r->host,
             r->max_body);
        return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

/* "host[:port]" of url, or NULL when url is not http(s). */
static char *url_host(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        (!strcmp(scheme, "http") || !strcmp(scheme, "https")) &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
            out = xasprintf("%s:%s", host, port);
        else
            out = xstrdup(host);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return out;
}

int http_start(struct http_client *c, const struct http_options *o, struct http_request **out)
{
    if (out)
        *out = NULL;
    char *host = url_host(o->url);
    if (!host)
        return error_setc(TH_EUSAGE, "'%s' is not an http:// or https:// URL", o->url);
    struct http_request *r = xcalloc(1, sizeof *r);
    r->client = c;
    r->host = host;
    r->url = xstrdup(o->url);
    r->max_body = o->max_body ? o->max_body : BUF_DEFAULT_MAX;
    buf_init(&r->body, r->max_body);
    buf_init(&r->resp_headers, MAX_HEADER_BYTES);
    r->on_data = o->on_data;
    r->on_done = o->on_done;
    r->ud = o->ud;
    r->idle_ms = o->idle_timeout_ms;
    r->timeout_ms = o->timeout_ms;
    r->connect_timeout_ms = o->connect_timeout_ms;
    r->started = loop_now(c->loop);
    r->easy = c->npool ? c->pool[--c->npool] : curl_easy_init();
    if (!r->easy) {
        free(r->host);
        free(r->url);
        free(r);
        return error_set("cannot create a curl handle");
    }

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "thalamus/" THALAMUS_VERSION);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);
    if (o->connect_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    if (o->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    for (const char *const *h = o->headers; h && *h; h++)
        r->headers = curl_slist_append(r->headers, *h);
    if (o->body) {
        /* curl adds "Expect: 100-continue" to large bodies; the round trip
         * only slows API calls down */
        r->headers = curl_slist_append(r->headers, "Expect:");
        r->body_copy = xmalloc(o->body_len + 1);
        memcpy(r->body_copy, o->body, o->body_len);
        r->body_copy[o->body_len] = '\0';
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body_copy);
    }
    if (o->method && strcmp(o->method, o->body ? "POST" : "GET"))
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    if (r->headers)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);

    r->next = c->live;
    if (c->live)
        c->live->prev = r;
    c->live = r;
    c->running++;
    if (loop_curl_add(c->lc, e, on_curl_done, r) < 0) {
        request_free(r);
        return TH_ERR;
    }
    log_debug("http: %s %s", o->method ? o->method : o->body ? "POST" : "GET", r->url);
    if (out)
        *out = r;
    return 0;
}

void http_cancel(struct http_request *r)
{
    if (!r)
        return;
    loop_curl_cancel(r->client->lc, r->easy);
    request_free(r);
}
