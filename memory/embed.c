/*
 * embed: the /embeddings client (see embed.h).
 */
#include "embed.h"

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "utf8.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPLY      ((size_t)64 << 20)
#define MAX_BACKOFF_MS 30000

struct embed_request {
    struct loop *loop;
    struct http_client *http;
    struct http_request *req;
    struct loop_timer *timer;
    char *url;
    char *body;
    char *auth; /* "Authorization: Bearer ..." or NULL */
    size_t n;
    double timeout_seconds;
    long max_retries;
    int attempt;
    embed_done_cb cb;
    void *ud;
};

static const char *env_value(const char *name)
{
    const char *v = name && *name ? getenv(name) : NULL;
    return v && *v ? v : NULL;
}

int embed_options_from_config(struct embed_options *o, const struct config *cfg)
{
    memset(o, 0, sizeof *o);
    if (!cfg->memory_embedding_model || !cfg->memory_embedding_model[0])
        return error_setc(TH_ENOTFOUND,
                          "no embedding model is configured (memory.embedding_model)");
    const char *base = cfg->memory_embedding_base_url && cfg->memory_embedding_base_url[0]
                           ? cfg->memory_embedding_base_url
                           : cfg->llm_base_url;
    const char *var = cfg->memory_embedding_api_key_env && cfg->memory_embedding_api_key_env[0]
                          ? cfg->memory_embedding_api_key_env
                          : cfg->llm_api_key_env;
    if (!base || !base[0])
        return error_setc(TH_ECONFIG, "memory.embedding_model is set but no endpoint is: set "
                                      "memory.embedding_base_url or llm.base_url");
    o->model = xstrdup(cfg->memory_embedding_model);
    o->base_url = xstrdup(base);
    const char *key = env_value(var);
    o->api_key = key ? xstrdup(key) : NULL;
    o->timeout_seconds = cfg->llm_timeout > 0 ? cfg->llm_timeout : 120;
    o->max_retries = cfg->llm_max_retries;
    return 0;
}

void embed_options_clear(struct embed_options *o)
{
    free(o->model);
    free(o->base_url);
    if (o->api_key) { /* do not leave the key in freed memory */
        memset(o->api_key, 0, strlen(o->api_key));
        free(o->api_key);
    }
    memset(o, 0, sizeof *o);
}

static void request_free(struct embed_request *r)
{
    if (r->timer)
        loop_timer_cancel(r->timer);
    if (r->auth) {
        memset(r->auth, 0, strlen(r->auth));
        free(r->auth);
    }
    free(r->url);
    free(r->body);
    free(r);
}

/* Checks the reply and calls back with the vectors in input order. */
static void deliver(struct embed_request *r, const struct buf *body)
{
    cJSON *root = cJSON_ParseWithLength(buf_str(body), body->len);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    float *vecs = NULL;
    int dim = 0, rc = 0;
    bool *seen = xcalloc(r->n ? r->n : 1, sizeof *seen);
    if (!cJSON_IsArray(data) || (size_t)cJSON_GetArraySize(data) != r->n) {
        rc = error_set("the embeddings reply from '%s' does not hold %zu vectors", r->url, r->n);
        goto done;
    }
    const cJSON *item;
    size_t pos = 0;
    cJSON_ArrayForEach(item, data)
    {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(item, "index");
        const cJSON *emb = cJSON_GetObjectItemCaseSensitive(item, "embedding");
        size_t i = cJSON_IsNumber(idx) ? (size_t)idx->valuedouble : pos;
        pos++;
        int d = cJSON_IsArray(emb) ? cJSON_GetArraySize(emb) : 0;
        if (i >= r->n || seen[i] || d <= 0 || d > 65536 || (dim && d != dim)) {
            rc = error_set("the embeddings reply from '%s' is malformed (vector %zu)", r->url, i);
            goto done;
        }
        if (!dim) {
            dim = d;
            vecs = xcalloc(r->n * (size_t)dim, sizeof *vecs);
        }
        seen[i] = true;
        const cJSON *v;
        int k = 0;
        cJSON_ArrayForEach(v, emb)
        {
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
                rc = error_set("the embeddings reply from '%s' holds a value that is not a "
                               "number",
                               r->url);
                goto done;
            }
            vecs[i * (size_t)dim + (size_t)k++] = (float)v->valuedouble;
        }
    }
done:
    free(seen);
    cJSON_Delete(root);
    embed_done_cb cb = r->cb;
    void *ud = r->ud;
    size_t n = r->n;
    request_free(r);
    cb(rc, rc == 0 ? vecs : NULL, n, dim, ud);
    free(vecs);
}

static void send_request(struct embed_request *r);

static void on_retry(struct loop_timer *t, void *ud)
{
    (void)t;
    struct embed_request *r = ud;
    r->timer = NULL;
    send_request(r);
}

static void on_reply(struct http_request *req, const struct http_response *resp, void *ud)
{
    struct embed_request *r = ud;
    r->req = NULL;
    if (resp->failure == HTTP_OK && resp->status == 200) {
        deliver(r, resp->body);
        return;
    }
    bool transient = resp->failure == HTTP_FAIL_CONNECT || resp->failure == HTTP_FAIL_TIMEOUT ||
                     resp->failure == HTTP_FAIL_IDLE || resp->failure == HTTP_FAIL_NETWORK ||
                     (resp->failure == HTTP_OK && (resp->status == 429 || resp->status >= 500));
    if (transient && r->attempt < r->max_retries) {
        long wait = (long)(1000 * pow(2, r->attempt));
        const char *after = http_header(req, "Retry-After");
        if (after && atof(after) >= 0 && atof(after) * 1000 < MAX_BACKOFF_MS)
            wait = (long)(atof(after) * 1000);
        if (wait > MAX_BACKOFF_MS)
            wait = MAX_BACKOFF_MS;
        r->attempt++;
        log_warn("embeddings: %s; retrying in %.1f s", resp->error ? resp->error : "server error",
                 wait / 1000.0);
        r->timer = loop_timer_add(r->loop, (uint64_t)wait, on_retry, r);
        return;
    }
    char snippet[240] = "";
    if (resp->body && resp->body->len) {
        size_t n = resp->body->len < sizeof snippet - 1 ? resp->body->len : sizeof snippet - 1;
        n = utf8_truncate(resp->body->data, n, n);
        memcpy(snippet, resp->body->data, n);
        snippet[n] = '\0';
        for (char *p = snippet; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    int rc = resp->failure != HTTP_OK ? error_set("embeddings from '%s': %s", r->url,
                                                  resp->error ? resp->error : "the request failed")
                                      : error_set("embeddings from '%s': HTTP %ld%s%s", r->url,
                                                  resp->status, snippet[0] ? ": " : "", snippet);
    embed_done_cb cb = r->cb;
    void *cbud = r->ud;
    size_t n = r->n;
    request_free(r);
    cb(rc, NULL, n, 0, cbud);
}

static void send_request(struct embed_request *r)
{
    const char *headers[] = {"Content-Type: application/json", r->auth, NULL};
    struct http_options h = {
        .method = "POST",
        .url = r->url,
        .headers = headers,
        .body = r->body,
        .body_len = strlen(r->body),
        .connect_timeout_ms = 15000,
        .timeout_ms = (long)(r->timeout_seconds * 1000),
        .max_body = MAX_REPLY,
        .on_done = on_reply,
        .ud = r,
    };
    if (http_start(r->http, &h, &r->req) < 0) {
        int rc = error_prefix("embeddings");
        embed_done_cb cb = r->cb;
        void *ud = r->ud;
        size_t n = r->n;
        request_free(r);
        cb(rc, NULL, n, 0, ud);
    }
}

static void on_start(struct loop_timer *t, void *ud)
{
    (void)t;
    struct embed_request *r = ud;
    r->timer = NULL;
    send_request(r);
}

int embed_start(struct embed_request **out, struct loop *loop, struct http_client *http,
                const struct embed_options *o, const char *const *texts, size_t n, embed_done_cb cb,
                void *ud)
{
    if (!o->model || !o->model[0])
        return error_setc(TH_ENOTFOUND, "no embedding model is configured");
    if (n == 0 || n > EMBED_BATCH)
        return error_setc(TH_EUSAGE, "embed 1 to %d texts per request, not %zu", EMBED_BATCH, n);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", o->model);
    cJSON *input = cJSON_AddArrayToObject(req, "input");
    struct buf clean;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(texts[i]);
        len = utf8_truncate(texts[i], len, EMBED_MAX_INPUT_BYTES);
        buf_init(&clean, 0);
        utf8_repair(&clean, texts[i], len, NULL);
        /* an empty input is refused by some servers */
        cJSON_AddItemToArray(input, cJSON_CreateString(clean.len ? clean.data : " "));
        buf_free(&clean);
    }
    struct embed_request *r = xcalloc(1, sizeof *r);
    r->loop = loop;
    r->http = http;
    size_t blen = strlen(o->base_url);
    while (blen && o->base_url[blen - 1] == '/')
        blen--;
    r->url = xasprintf("%.*s/embeddings", (int)blen, o->base_url);
    r->body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    r->auth = o->api_key ? xasprintf("Authorization: Bearer %s", o->api_key) : NULL;
    r->n = n;
    r->timeout_seconds = o->timeout_seconds;
    r->max_retries = o->max_retries;
    r->cb = cb;
    r->ud = ud;
    r->timer = loop_timer_add(loop, 0, on_start, r);
    if (out)
        *out = r;
    return 0;
}

void embed_cancel(struct embed_request *r)
{
    if (!r)
        return;
    if (r->req)
        http_cancel(r->req);
    request_free(r);
}

/* ---- the synchronous form ------------------------------------------------------ */

struct sync_state {
    int rc;
    float *out;
    int dim;
    size_t offset;
    bool done;
};

static void on_batch(int rc, const float *vectors, size_t n, int dim, void *ud)
{
    struct sync_state *s = ud;
    s->done = true;
    if (rc < 0) {
        s->rc = rc;
        return;
    }
    if (s->dim && dim != s->dim) {
        s->rc = error_set("the embedding model changed dimension (%d, then %d)", s->dim, dim);
        return;
    }
    s->dim = dim;
    s->out = xreallocarray(s->out, (s->offset + n) * (size_t)dim, sizeof *s->out);
    memcpy(s->out + s->offset * (size_t)dim, vectors, n * (size_t)dim * sizeof *vectors);
    s->offset += n;
}

int embed_texts(const struct embed_options *o, const char *const *texts, size_t n, float **out,
                int *dim)
{
    struct loop *loop = NULL;
    struct http_client *http = NULL;
    struct sync_state s = {0};
    int rc = loop_new(&loop);
    if (rc == 0)
        rc = http_client_new(loop, &http);
    for (size_t i = 0; rc == 0 && i < n; i += EMBED_BATCH) {
        size_t batch = n - i < EMBED_BATCH ? n - i : EMBED_BATCH;
        s.done = false;
        if ((rc = embed_start(NULL, loop, http, o, texts + i, batch, on_batch, &s)) < 0)
            break;
        while (!s.done && rc == 0)
            rc = loop_run(loop);
        if (rc == 0 && !s.done)
            rc = error_set("embeddings: the request never finished");
        if (rc == 0)
            rc = s.rc;
    }
    http_client_free(http);
    loop_free(loop);
    if (rc < 0) {
        free(s.out);
        return rc;
    }
    *out = s.out;
    *dim = s.dim;
    return 0;
}
