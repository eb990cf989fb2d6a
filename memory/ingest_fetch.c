/*
 * ingest_fetch: papers from the OpenAlex and arXiv APIs into memory (see
 * ingest.h), on the event loop through http.h.
 *
 * A fetch walks the pages of one search (OpenAlex's cursor paging, arXiv's
 * start/max_results) until the limit is reached or a page comes back short,
 * storing each page's records as it arrives. It is polite: requests go one
 * at a time, at least the configured delay apart (measured from the end of
 * the previous reply, so the spacing holds whatever the network does),
 * with a User-Agent that names thalamus and, when configured, a contact
 * address (OpenAlex's polite pool). Failures that may pass (no connection,
 * timeouts, 429, 5xx) are retried with exponential back-off, honouring
 * Retry-After; others end the fetch with the API's message. Replies are
 * cached by URL under the given directory and reused while fresh, so a
 * repeated search costs the API nothing. Depends on ingest, http, loop,
 * fsutil, buf, alloc, error and log.
 */
#include "ingest.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define OPENALEX_PAGE   200 /* the API's largest page */
#define ARXIV_PAGE      100
#define MAX_REPLY       ((size_t)32 << 20)
#define MAX_BACKOFF_MS  60000
#define CONNECT_TIMEOUT 15000

struct ingest_fetch {
    struct loop *loop;
    struct http_client *http;
    struct ingest_session *session;
    struct ingest_fetch_options o; /* strings copied */
    ingest_fetch_done_cb done;
    void *ud;
    struct http_request *req;
    struct loop_timer *timer;
    char *cursor; /* OpenAlex: the next page's cursor */
    long offset;  /* arXiv: the next page's start */
    long remaining;
    long page_size; /* records asked for on the current page */
    long page_records;
    char *url;
    int attempt;
    uint64_t last_end_ms; /* when the previous reply ended, 0: none yet */
    struct ingest_fetch_stats stats;
    struct ingest_sink sink; /* counts, then forwards to the session */
    bool finished;
};

/* ---- URLs and the cache ------------------------------------------------------- */

static void url_encode(struct buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || strchr("-._~", *p))
            buf_putc(b, (char)*p);
        else
            buf_printf(b, "%%%02X", *p);
    }
}

/* arXiv's search_query: the user's own syntax when it names a field
 * ("ti:", "au:"...), else every word must appear anywhere ("all:"). */
static void arxiv_query(struct buf *b, const char *q)
{
    static const char *const fields[] = {
        "ti:", "au:", "abs:", "co:", "jr:", "cat:", "rn:", "id:", "all:", NULL};
    for (const char *const *f = fields; *f; f++)
        if (strstr(q, *f)) {
            url_encode(b, q);
            return;
        }
    struct buf words;
    buf_init(&words, 0);
    const char *p = q;
    while (*p) {
        while (*p && (isspace((unsigned char)*p) || *p == '"'))
            p++;
        const char *start = p;
        while (*p && !isspace((unsigned char)*p) && *p != '"')
            p++;
        if (p > start)
            buf_printf(&words, "%sall:%.*s", words.len ? " AND " : "", (int)(p - start), start);
    }
    url_encode(b, buf_str(&words));
    buf_free(&words);
}

static char *page_url(struct ingest_fetch *f)
{
    struct buf b;
    buf_init(&b, 0);
    const char *base = f->o.base_url;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    if (f->o.source == INGEST_SOURCE_OPENALEX) {
        buf_printf(&b, "%.*s/works?search=", (int)n, base);
        url_encode(&b, f->o.query);
        buf_printf(&b, "&per_page=%ld&cursor=", f->page_size);
        url_encode(&b, f->cursor ? f->cursor : "*");
        buf_puts(&b, "&select=id,doi,title,display_name,publication_year,authorships,"
                     "abstract_inverted_index,primary_location,locations,referenced_works");
        if (f->o.mailto && f->o.mailto[0]) {
            buf_puts(&b, "&mailto=");
            url_encode(&b, f->o.mailto);
        }
    } else {
        buf_printf(&b, "%.*s?search_query=", (int)n, base);
        arxiv_query(&b, f->o.query);
        buf_printf(&b, "&start=%ld&max_results=%ld&sortBy=relevance", f->offset, f->page_size);
    }
    return buf_detach(&b, NULL);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static char *cache_path(struct ingest_fetch *f, const char *url)
{
    if (!f->o.cache_dir || f->o.cache_days <= 0)
        return NULL;
    char name[64];
    snprintf(name, sizeof name, "%016llx.cache", (unsigned long long)fnv1a(url));
    return fs_join(f->o.cache_dir, name);
}

/* A fresh cached reply for url into body; false when there is none. Cache
 * files hold the URL on their first line, so a hash collision is a miss. */
static bool cache_get(struct ingest_fetch *f, const char *url, struct buf *body)
{
    char *path = cache_path(f, url);
    struct stat sb;
    bool hit = false;
    if (!path || f->o.refresh || stat(path, &sb) < 0 ||
        difftime(time(NULL), sb.st_mtime) > f->o.cache_days * 86400.0)
        goto done;
    struct buf all;
    buf_init(&all, MAX_REPLY + 8192);
    if (buf_read_file(&all, path) == 0) {
        const char *nl = memchr(all.data ? all.data : "", '\n', all.len);
        size_t ulen = strlen(url);
        if (nl && (size_t)(nl - all.data) == ulen && !memcmp(all.data, url, ulen)) {
            buf_append(body, nl + 1, all.len - ulen - 1);
            hit = true;
        }
    }
    error_clear();
    buf_free(&all);
done:
    free(path);
    return hit;
}

static void cache_put(struct ingest_fetch *f, const char *url, const struct buf *body)
{
    char *path = cache_path(f, url);
    if (!path)
        return;
    struct buf all;
    buf_init(&all, MAX_REPLY + 8192);
    if (fs_mkdir_p(f->o.cache_dir, 0755) < 0 || buf_printf(&all, "%s\n", url) < 0 ||
        buf_append(&all, buf_str(body), body->len) < 0 ||
        fs_write_atomic(path, all.data, all.len, 0644) < 0) {
        log_warn("cannot cache a reply: %s", error_message());
        error_clear();
    }
    buf_free(&all);
    free(path);
}

/* ---- the page loop ------------------------------------------------------------- */

static const char *source_name(const struct ingest_fetch *f)
{
    return f->o.source == INGEST_SOURCE_OPENALEX ? "OpenAlex" : "arXiv";
}

static void finish(struct ingest_fetch *f, int rc)
{
    if (f->finished)
        return;
    f->finished = true;
    if (f->timer) {
        loop_timer_cancel(f->timer);
        f->timer = NULL;
    }
    f->done(f, rc, &f->stats, f->ud);
}

static int counting_record(struct ingest_sink *sink, struct ingest_record *r)
{
    struct ingest_fetch *f =
        (struct ingest_fetch *)((char *)sink - offsetof(struct ingest_fetch, sink));
    f->page_records++;
    f->stats.records++;
    return ingest_session_sink(f->session)->record(ingest_session_sink(f->session), r);
}

static void counting_malformed(struct ingest_sink *sink, const char *where, const char *why)
{
    struct ingest_fetch *f =
        (struct ingest_fetch *)((char *)sink - offsetof(struct ingest_fetch, sink));
    f->page_records++;
    char *w = xasprintf("%s page %ld, %s", source_name(f), f->stats.pages, where);
    ingest_session_sink(f->session)->malformed(ingest_session_sink(f->session), w, why);
    free(w);
}

static void next_page(struct ingest_fetch *f);

/* Reads one page's body; decides whether another page follows. */
static void handle_page(struct ingest_fetch *f, const struct buf *body, bool from_cache)
{
    f->stats.pages++;
    f->page_records = 0;
    char *cursor = NULL;
    long total = -1;
    int rc;
    if (f->o.source == INGEST_SOURCE_OPENALEX)
        rc = ingest_read_openalex(buf_str(body), body->len, &f->sink, &cursor);
    else
        rc = ingest_read_atom(buf_str(body), body->len, &f->sink, &total);
    if (rc == 0)
        rc = ingest_session_flush(f->session);
    if (rc < 0) {
        free(cursor);
        error_prefix("%s", source_name(f));
        finish(f, rc);
        return;
    }
    if (!from_cache)
        cache_put(f, f->url, body);
    f->remaining -= f->page_records;
    free(f->cursor);
    f->cursor = cursor;
    f->offset += f->page_records;
    /* OpenAlex pages go on while it hands out a cursor (it may send fewer
     * results than asked for); arXiv's while its totalResults says so */
    bool more = f->remaining > 0 && f->page_records > 0;
    if (f->o.source == INGEST_SOURCE_OPENALEX)
        more = more && f->cursor;
    else
        more = more && (total >= 0 ? f->offset < total : f->page_records >= f->page_size);
    if (more)
        next_page(f);
    else
        finish(f, 0);
}

static long retry_after_ms(struct http_request *req)
{
    const char *v = http_header(req, "Retry-After");
    if (!v)
        return -1;
    char *end;
    double s = strtod(v, &end);
    if (end == v || !(s >= 0))
        return -1;
    return s * 1000 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : (long)(s * 1000);
}

static void send_request(struct ingest_fetch *f);

static void on_timer(struct loop_timer *t, void *ud)
{
    (void)t;
    struct ingest_fetch *f = ud;
    f->timer = NULL;
    send_request(f);
}

/* Sends the request at least wait_ms from now and the polite delay after
 * the previous reply. */
static void schedule(struct ingest_fetch *f, long wait_ms)
{
    uint64_t now = loop_now(f->loop);
    uint64_t delay = (uint64_t)(f->o.delay_seconds * 1000.0 + 0.5);
    uint64_t at = now + (uint64_t)(wait_ms > 0 ? wait_ms : 0);
    if (f->last_end_ms && f->last_end_ms + delay > at)
        at = f->last_end_ms + delay;
    if (at > now)
        log_debug("waiting %.3f s before the next request to %s", (double)(at - now) / 1000.0,
                  source_name(f));
    f->timer = loop_timer_add(f->loop, at - now, on_timer, f);
}

static void on_reply(struct http_request *req, const struct http_response *resp, void *ud)
{
    struct ingest_fetch *f = ud;
    f->req = NULL;
    f->last_end_ms = loop_now(f->loop);
    f->stats.requests++;
    if (resp->failure == HTTP_OK && resp->status == 200) {
        f->attempt = 0;
        handle_page(f, resp->body, false);
        return;
    }
    bool transient = resp->failure == HTTP_FAIL_CONNECT || resp->failure == HTTP_FAIL_TIMEOUT ||
                     resp->failure == HTTP_FAIL_IDLE || resp->failure == HTTP_FAIL_NETWORK ||
                     (resp->failure == HTTP_OK && (resp->status == 429 || resp->status >= 500));
    char what[256];
    if (resp->failure != HTTP_OK)
        snprintf(what, sizeof what, "%s", resp->error ? resp->error : "the request failed");
    else
        snprintf(what, sizeof what, "HTTP %ld", resp->status);
    if (transient && f->attempt < f->o.max_retries) {
        long wait = retry_after_ms(req);
        if (wait < 0) {
            double base = f->o.delay_seconds > 1 ? f->o.delay_seconds : 1.0;
            wait = (long)(base * 1000.0 * pow(2, f->attempt));
            if (wait > MAX_BACKOFF_MS)
                wait = MAX_BACKOFF_MS;
        }
        f->attempt++;
        f->stats.retries++;
        log_warn("%s: %s; retrying in %.1f s (%d of %ld)", source_name(f), what, wait / 1000.0,
                 f->attempt, f->o.max_retries);
        schedule(f, wait);
        return;
    }
    struct buf snippet;
    buf_init(&snippet, 0);
    if (resp->body && resp->body->len) {
        size_t n = resp->body->len < 300 ? resp->body->len : 300;
        for (size_t i = 0; i < n; i++) {
            char c = resp->body->data[i];
            buf_putc(&snippet, c == '\n' || c == '\r' || c == '\t' ? ' ' : c);
        }
    }
    int rc =
        error_set("%s: %s%s%s%s%s", source_name(f), what, f->attempt ? " after retries" : "",
                  snippet.len ? ": " : "", buf_str(&snippet), transient ? "" : " (not retried)");
    buf_free(&snippet);
    finish(f, rc);
}

static void send_request(struct ingest_fetch *f)
{
    const char *accept = f->o.source == INGEST_SOURCE_OPENALEX ? "Accept: application/json"
                                                               : "Accept: application/atom+xml";
    char agent[320];
    if (f->o.mailto && f->o.mailto[0])
        snprintf(agent, sizeof agent, "User-Agent: thalamus/%s (mailto:%s)", THALAMUS_VERSION,
                 f->o.mailto);
    else
        snprintf(agent, sizeof agent, "User-Agent: thalamus/%s", THALAMUS_VERSION);
    const char *headers[] = {agent, accept, NULL};
    struct http_options h = {
        .method = "GET",
        .url = f->url,
        .headers = headers,
        .connect_timeout_ms = CONNECT_TIMEOUT,
        .timeout_ms = (long)(f->o.timeout_seconds * 1000),
        .max_body = MAX_REPLY,
        .on_done = on_reply,
        .ud = f,
    };
    log_debug("GET %s", f->url);
    int rc = http_start(f->http, &h, &f->req);
    if (rc < 0)
        finish(f, error_prefix("%s", source_name(f)));
}

static void next_page(struct ingest_fetch *f)
{
    if (f->timer) { /* never two pages in flight */
        loop_timer_cancel(f->timer);
        f->timer = NULL;
    }
    long cap = f->o.source == INGEST_SOURCE_OPENALEX ? OPENALEX_PAGE : ARXIV_PAGE;
    f->page_size = f->remaining < cap ? f->remaining : cap;
    free(f->url);
    f->url = page_url(f);
    struct buf cached;
    buf_init(&cached, MAX_REPLY);
    if (cache_get(f, f->url, &cached)) {
        log_debug("cached: %s", f->url);
        f->stats.cache_hits++;
        handle_page(f, &cached, true);
        buf_free(&cached);
        return;
    }
    buf_free(&cached);
    schedule(f, 0);
}

/* ---- public ---------------------------------------------------------------------- */

static void on_start(struct loop_timer *t, void *ud)
{
    (void)t;
    struct ingest_fetch *f = ud;
    f->timer = NULL;
    next_page(f);
}

int ingest_fetch_start(struct ingest_fetch **out, struct loop *loop, struct http_client *http,
                       struct ingest_session *session, const struct ingest_fetch_options *o,
                       ingest_fetch_done_cb done, void *ud)
{
    if (!o->query || !o->query[0])
        return error_setc(TH_EUSAGE, "the search needs a query");
    if (o->limit < 1)
        return error_setc(TH_EUSAGE, "the limit must be a positive number");
    if (!o->base_url || (strncmp(o->base_url, "http://", 7) && strncmp(o->base_url, "https://", 8)))
        return error_setc(TH_ECONFIG, "the %s URL '%s' must start with http:// or https://",
                          o->source == INGEST_SOURCE_OPENALEX ? "OpenAlex" : "arXiv",
                          o->base_url ? o->base_url : "");
    struct ingest_fetch *f = xcalloc(1, sizeof *f);
    f->loop = loop;
    f->http = http;
    f->session = session;
    f->o = *o;
    f->o.query = xstrdup(o->query);
    f->o.base_url = xstrdup(o->base_url);
    f->o.mailto = o->mailto ? xstrdup(o->mailto) : NULL;
    f->o.cache_dir = o->cache_dir ? xstrdup(o->cache_dir) : NULL;
    f->done = done;
    f->ud = ud;
    f->remaining = o->limit;
    f->sink.record = counting_record;
    f->sink.malformed = counting_malformed;
    *out = f;
    f->timer = loop_timer_add(loop, 0, on_start, f); /* results never arrive inside this call */
    return 0;
}

void ingest_fetch_free(struct ingest_fetch *f)
{
    if (!f)
        return;
    if (f->req)
        http_cancel(f->req);
    if (f->timer)
        loop_timer_cancel(f->timer);
    free((char *)f->o.query);
    free((char *)f->o.base_url);
    free((char *)f->o.mailto);
    free((char *)f->o.cache_dir);
    free(f->cursor);
    free(f->url);
    free(f);
}
