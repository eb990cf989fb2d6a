/*
 * llm: the LLM gateway's request life cycle (see llm.h).
 *
 * A call moves through states on the event loop: START (a 0 ms timer, so
 * that results never arrive from inside llm_chat), then for each logical
 * request the cache look-up and the budget check, QUEUED in its provider's
 * FIFO queue until a concurrency slot is free, SENDING over http.h, and on a
 * retryable failure BACKOFF on a loop timer before queueing again at the
 * front (it was admitted before the calls behind it). A success records
 * usage and cost, fills the cache and, for structured requests, extracts and
 * validates the object; an invalid one appends the reply and the validation
 * error to the conversation and starts a new logical request, until the
 * repair attempts run out. Streams are parsed by sse.c into provider events
 * (llm_openai.c, llm_anthropic.c); a stream that the server answers with a
 * plain JSON body is accepted as a whole reply. Budget checks count what the
 * store (or, without one, this process) has recorded for the run plus the
 * estimates reserved by calls in flight, so concurrent calls cannot overrun
 * a budget together. Every message that may carry server text passes
 * through redaction of the API keys. Depends on http, sse, sha256, llm_json,
 * llm_store, llm_util, the providers, loop, config, buf, alloc, error, log
 * and cJSON.
 */
#include "llm.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "http.h"
#include "llm_internal.h"
#include "log.h"
#include "sha256.h"
#include "sse.h"

#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS  30000
#define NPROVIDERS      3

enum call_state { ST_START, ST_QUEUED, ST_SENDING, ST_BACKOFF };
enum call_kind { KIND_CHAT, KIND_MODELS };

struct endpoint {
    const char *name;
    const struct llm_provider *prov; /* NULL: offline */
    char *base, *key_var, *key;
    int active;
    struct llm_call *qhead, *qtail;
};

/* Spending of this process, for budgets when there is no store. */
struct ledger {
    char *run, *site;
    long tokens;
    double cost;
    struct ledger *next;
};

struct llm {
    struct loop *loop;
    const struct config *cfg;
    struct store *store;
    struct http_client *http;
    struct endpoint ep[NPROVIDERS];
    const char *secrets[NPROVIDERS];
    struct llm_call *calls;
    int ncalls;
    uint64_t rng;
    struct ledger *ledger;
    bool closing; /* llm_free() runs: start nothing new */
};

struct llm_call {
    struct llm *gw;
    enum call_kind kind;
    enum call_state state;
    struct endpoint *ep;
    struct llm_params p;
    char *agent, *run, *site;
    cJSON *schema;
    int repairs_left, repairs;
    llm_done_cb cb;
    void *ud;
    llm_token_cb on_token;
    void *token_ud;

    /* the current logical request */
    char *url, *body;
    char cache_key[SHA256_HEX_SIZE];
    long est_tokens;
    double est_cost;
    bool reserved;
    int attempts;
    uint64_t first_sent, deadline;
    struct http_request *http;
    struct loop_timer *timer;
    struct sse_parser sse;
    bool sse_on;
    bool plain_stream; /* asked for a stream, got a whole JSON body */
    struct buf plain;
    struct llm_reply reply;

    /* over all logical requests */
    long sum_prompt, sum_completion;
    double sum_cost;
    bool cost_unknown, estimated;
    cJSON *json_out;
    bool cached;
    bool delivering;       /* its done callback runs */
    bool emitting;         /* its token callback runs */
    bool cancel_requested; /* llm_cancel() from the token callback: finish it afterwards */

    struct llm_call *qprev, *qnext;
    struct llm_call *prev, *next;
};

/* ---- small helpers ----------------------------------------------------- */

static double unit_random(struct llm *gw)
{
    uint64_t x = gw->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    gw->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static char *redact(struct llm *gw, const char *text)
{
    return llm_redact(text, gw->secrets, NPROVIDERS);
}

static bool streq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* The token callback of every call: passes text on to the caller's, and
 * notes that the caller runs, so that llm_cancel() from there is deferred
 * until the gateway is out of curl's callbacks and its own loops. */
static void emit_token(const char *text, size_t len, void *ud)
{
    struct llm_call *c = ud;
    if (c->cancel_requested)
        return;
    c->emitting = true;
    c->on_token(text, len, c->token_ud);
    c->emitting = false;
}

void llm_reply_init(struct llm_reply *r, size_t max_text)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->text, max_text);
}

void llm_reply_free(struct llm_reply *r)
{
    buf_free(&r->text);
    free(r->model);
    free(r->finish_reason);
    free(r->stream_error);
    r->model = r->finish_reason = r->stream_error = NULL;
}

int llm_reply_text(struct llm_reply *r, const char *text, size_t len)
{
    if (buf_append(&r->text, text, len) < 0)
        return error_set("the reply exceeds the limit of %zu bytes (llm.max_response_bytes)",
                         r->text.max);
    if (r->on_token) {
        r->emitted = true;
        r->on_token(text, len, r->token_ud);
    }
    return 0;
}

/* ---- endpoints ---------------------------------------------------------- */

static const char *const provider_names[NPROVIDERS] = {"offline", "openai", "anthropic"};

static void endpoint_init(struct llm *gw, int i)
{
    struct endpoint *ep = &gw->ep[i];
    const struct config *cfg = gw->cfg;
    ep->name = provider_names[i];
    ep->prov = i == 1 ? &llm_provider_openai : i == 2 ? &llm_provider_anthropic : NULL;
    if (!ep->prov)
        return;
    const char *base, *var;
    if (!strcmp(cfg->llm_provider, ep->name)) {
        base = cfg->llm_base_url;
        var = cfg->llm_api_key_env;
    } else {
        base = getenv(ep->prov->base_var);
        if (!base || !*base)
            base = ep->prov->default_base;
        var = ep->prov->key_var;
    }
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    ep->base = xstrndup(base, n);
    ep->key_var = xstrdup(var);
    const char *key = getenv(var);
    ep->key = key && *key ? xstrdup(key) : NULL;
    gw->secrets[i] = ep->key;
}

static struct endpoint *find_endpoint(struct llm *gw, const char *name)
{
    if (!name)
        name = gw->cfg->llm_provider;
    for (int i = 0; i < NPROVIDERS; i++)
        if (!strcmp(gw->ep[i].name, name))
            return &gw->ep[i];
    return NULL;
}

int llm_new(struct llm **out, struct loop *loop, const struct config *cfg, struct store *store)
{
    *out = NULL;
    struct llm *gw = xcalloc(1, sizeof *gw);
    gw->loop = loop;
    gw->cfg = cfg;
    gw->store = store;
    if (http_client_new(loop, &gw->http) < 0) {
        free(gw);
        return TH_ERR;
    }
    for (int i = 0; i < NPROVIDERS; i++)
        endpoint_init(gw, i);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    gw->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
              (uint64_t)(uintptr_t)gw;
    if (!gw->rng)
        gw->rng = 88172645463325252ULL;
    *out = gw;
    return 0;
}

int llm_pending(const struct llm *gw)
{
    return gw->ncalls;
}

/* ---- call bookkeeping --------------------------------------------------- */

static void params_free(struct llm_params *p)
{
    free(p->model);
    for (size_t i = 0; i < p->nmessages; i++) {
        free((char *)p->messages[i].role);
        free((char *)p->messages[i].content);
    }
    free(p->messages);
    for (size_t i = 0; i < p->nstop; i++)
        free(p->stop[i]);
    free(p->stop);
    memset(p, 0, sizeof *p);
}

static void add_message(struct llm_params *p, const char *role, const char *content)
{
    p->messages = xreallocarray(p->messages, p->nmessages + 1, sizeof *p->messages);
    p->messages[p->nmessages].role = xstrdup(role);
    p->messages[p->nmessages].content = xstrdup(content);
    p->nmessages++;
}

static void queue_remove(struct llm_call *c)
{
    struct endpoint *ep = c->ep;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        ep->qhead = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        ep->qtail = c->qprev;
    c->qprev = c->qnext = NULL;
}

static void call_unlink(struct llm_call *c)
{
    struct llm *gw = c->gw;
    if (c->prev)
        c->prev->next = c->next;
    else
        gw->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    gw->ncalls--;
}

static void call_destroy(struct llm_call *c)
{
    loop_timer_cancel(c->timer);
    params_free(&c->p);
    free(c->agent);
    free(c->run);
    free(c->site);
    cJSON_Delete(c->schema);
    cJSON_Delete(c->json_out);
    free(c->url);
    free(c->body);
    if (c->sse_on)
        sse_free(&c->sse);
    buf_free(&c->plain);
    llm_reply_free(&c->reply);
    free(c);
}

/* ---- usage, cost and budgets -------------------------------------------- */

static long prompt_bytes(const struct llm_params *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nmessages; i++)
        n += strlen(p->messages[i].content) + 8;
    return (long)n;
}

static void ledger_add(struct llm *gw, const char *run, const char *site, long tokens, double cost)
{
    if (!run)
        return;
    struct ledger *l;
    for (l = gw->ledger; l; l = l->next)
        if (!strcmp(l->run, run) && streq(l->site, site))
            break;
    if (!l) {
        l = xcalloc(1, sizeof *l);
        l->run = xstrdup(run);
        l->site = dup_or_null(site);
        l->next = gw->ledger;
        gw->ledger = l;
    }
    l->tokens += tokens;
    l->cost += cost;
}

static int spent(struct llm *gw, const char *run, const char *site, long *tokens, double *cost)
{
    *tokens = 0;
    *cost = 0;
    if (gw->store)
        return llm_store_spent(gw->store, run, site, tokens, cost);
    for (struct ledger *l = gw->ledger; l; l = l->next) {
        if (strcmp(l->run, run) || (site && !streq(l->site, site)))
            continue;
        *tokens += l->tokens;
        *cost += l->cost;
    }
    return 0;
}

static void record(struct llm_call *c, const char *outcome, const char *error, long pt, long ct,
                   bool estimated, bool cost_known, double cost)
{
    struct llm *gw = c->gw;
    if (c->kind != KIND_CHAT)
        return;
    uint64_t now = loop_now(gw->loop);
    struct llm_usage_row row = {
        .provider = c->ep->name,
        .model = c->reply.model ? c->reply.model : c->p.model,
        .agent = c->agent,
        .run = c->run,
        .site = c->site,
        .prompt_tokens = pt,
        .completion_tokens = ct,
        .usage_estimated = estimated,
        .cost_known = cost_known,
        .cost = cost,
        .latency_ms = c->first_sent ? (long)(now - c->first_sent) : 0,
        .attempts = c->attempts,
        .outcome = outcome,
        .error = error,
    };
    if (gw->store) {
        if (llm_store_usage(gw->store, &row) < 0)
            log_warn("llm: %s", error_message());
    } else {
        ledger_add(gw, c->run, c->site, pt + ct, cost_known ? cost : 0);
    }
}

static const struct config_limit *site_limit(const struct config *cfg, const char *site)
{
    for (size_t i = 0; site && i < cfg->llm_budget.sites_len; i++)
        if (!strcmp(cfg->llm_budget.sites[i].site, site))
            return &cfg->llm_budget.sites[i].limit;
    return NULL;
}

static void reserved(struct llm *gw, const char *run, const char *site, long *tokens, double *cost)
{
    *tokens = 0;
    *cost = 0;
    for (struct llm_call *c = gw->calls; c; c = c->next) {
        if (!c->reserved || !streq(c->run, run) || (site && !streq(c->site, site)))
            continue;
        *tokens += c->est_tokens;
        *cost += c->est_cost;
    }
}

/* Checks one limit; fills msg (of size n) when the request could exceed it. */
static int check_limit(struct llm_call *c, const struct config_limit *lim, const char *site,
                       const char *what, char *msg, size_t n)
{
    long used_tokens, held_tokens;
    double used_cost, held_cost;
    if (spent(c->gw, c->run, site, &used_tokens, &used_cost) < 0)
        return TH_ERR;
    reserved(c->gw, c->run, site, &held_tokens, &held_cost);
    long tokens = used_tokens + held_tokens;
    double cost = used_cost + held_cost;
    if (lim->tokens > 0 && tokens + c->est_tokens > lim->tokens) {
        snprintf(msg, n,
                 "refused before sending: %s has used %ld of its %ld tokens%s, and this request "
                 "could use up to %ld more; raise llm.budget%s or shorten the request",
                 what, used_tokens, lim->tokens, held_tokens ? " (counting calls in flight)" : "",
                 c->est_tokens, site ? ".sites" : ".tokens");
        return 1;
    }
    if (lim->cost >= 0 && cost + c->est_cost > lim->cost) {
        snprintf(msg, n,
                 "refused before sending: %s has spent %.4f of its budget of %.4f%s, and this "
                 "request could cost up to %.4f more; raise llm.budget%s",
                 what, used_cost, lim->cost, held_cost > 0 ? " (counting calls in flight)" : "",
                 c->est_cost, site ? ".sites" : ".cost");
        return 1;
    }
    return 0;
}

/* 0 when the request fits its budgets (and reserves its estimate), 1 with
 * msg filled when it does not, TH_ERR when spending cannot be read. */
static int check_budget(struct llm_call *c, char *msg, size_t n)
{
    const struct config *cfg = c->gw->cfg;
    const struct config_limit *run_lim = &cfg->llm_budget.run;
    const struct config_limit *slim = site_limit(cfg, c->site);
    bool run_set = run_lim->tokens > 0 || run_lim->cost >= 0;
    if (!c->run || (!run_set && !slim))
        return 0;
    const struct config_price *price = llm_price_for(cfg, c->p.model);
    long prompt = llm_estimate_tokens((size_t)prompt_bytes(&c->p));
    c->est_tokens = prompt + c->p.max_tokens;
    c->est_cost =
        price ? ((double)prompt * price->input + (double)c->p.max_tokens * price->output) / 1e6 : 0;
    if (!price && (run_lim->cost >= 0 || (slim && slim->cost >= 0))) {
        snprintf(msg, n,
                 "refused before sending: run '%s' has a money budget, but llm.prices has no "
                 "price for model '%s'; add one, e.g. [\"%s\"] = { input = 0.15, output = 0.6 }",
                 c->run, c->p.model, c->p.model);
        return 1;
    }
    char what[256];
    int rc = 0;
    if (run_set) {
        snprintf(what, sizeof what, "run '%s'", c->run);
        rc = check_limit(c, run_lim, NULL, what, msg, n);
    }
    if (rc == 0 && slim) {
        snprintf(what, sizeof what, "call site '%s' of run '%s'", c->site, c->run);
        rc = check_limit(c, slim, c->site, what, msg, n);
    }
    if (rc == 0)
        c->reserved = true;
    return rc;
}

/* ---- finishing ---------------------------------------------------------- */

static void deliver(struct llm_call *c, int rc, enum llm_failure failure, const char *msg)
{
    struct llm *gw = c->gw;
    struct llm_result res = {
        .rc = rc,
        .failure = failure,
        .error = rc < 0 ? msg : NULL,
        .text = rc < 0 ? "" : buf_str(&c->reply.text),
        .json = c->json_out,
        .provider = c->ep->name,
        .model = c->reply.model ? c->reply.model
                 : c->p.model   ? c->p.model
                                : "",
        .finish_reason = c->reply.finish_reason ? c->reply.finish_reason : "",
        .prompt_tokens = c->sum_prompt,
        .completion_tokens = c->sum_completion,
        .usage_estimated = c->estimated,
        .cost = c->sum_cost,
        .cost_known = !c->cost_unknown,
        .latency_ms = c->first_sent ? (long)(loop_now(gw->loop) - c->first_sent) : 0,
        .attempts = c->attempts,
        .repairs = c->repairs,
        .cached = c->cached,
    };
    if (rc < 0)
        error_setc(rc, "%s", msg);
    else
        error_clear();
    /* unlinked first: the callback may start calls and count the pending ones */
    c->reserved = false;
    c->delivering = true;
    call_unlink(c);
    c->cb(c, &res, c->ud);
    call_destroy(c);
}

static void fail(struct llm_call *c, enum llm_failure failure, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct llm_call *c, enum llm_failure failure, const char *fmt, ...)
{
    char raw[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    char *msg = redact(c->gw, raw);
    c->reserved = false;
    record(c, failure == LLM_FAIL_BUDGET ? "refused" : "error", msg, 0, 0, false, true, 0);
    deliver(c, failure == LLM_FAIL_USAGE ? TH_EUSAGE : TH_ERR, failure, msg);
    free(msg);
}

static void begin(struct llm_call *c);

/* Asks again after an invalid structured reply. */
static void repair(struct llm_call *c, const char *why)
{
    char *instruction = llm_json_instruction(c->schema);
    char *ask = xasprintf("Your previous reply could not be used: %s. %s", why, instruction);
    add_message(&c->p, "assistant", buf_str(&c->reply.text));
    add_message(&c->p, "user", ask);
    free(ask);
    free(instruction);
    c->repairs_left--;
    c->repairs++;
    log_debug("llm: invalid structured reply (%s); asking again (repair %d)", why, c->repairs);
    begin(c);
}

static void succeed(struct llm_call *c, bool cached)
{
    struct llm *gw = c->gw;
    const struct config *cfg = gw->cfg;
    struct llm_reply *r = &c->reply;
    if (c->kind == KIND_MODELS) {
        deliver(c, 0, LLM_OK, NULL);
        return;
    }
    long pt = r->prompt_tokens, ct = r->completion_tokens;
    bool estimated = !r->have_usage;
    if (estimated) {
        pt = llm_estimate_tokens((size_t)prompt_bytes(&c->p));
        ct = llm_estimate_tokens(r->text.len);
    }
    const struct config_price *price = llm_price_for(cfg, c->p.model);
    if (!price && r->model)
        price = llm_price_for(cfg, r->model);
    bool cost_known = cached || price;
    c->cached = cached;
    double cost =
        cached || !price ? 0 : ((double)pt * price->input + (double)ct * price->output) / 1e6;
    c->reserved = false;
    record(c, cached ? "cached" : "ok", NULL, pt, ct, estimated, cost_known, cost);
    if (!cached && gw->store && !strcmp(cfg->llm_cache, "read-write")) {
        struct llm_cached v = {(char *)buf_str(&r->text), r->model ? r->model : c->p.model,
                               r->finish_reason, pt, ct};
        if (llm_cache_put(gw->store, c->cache_key, c->ep->name, &v) < 0)
            log_warn("llm: %s", error_message());
    }
    c->sum_prompt += pt;
    c->sum_completion += ct;
    c->sum_cost += cost;
    c->cost_unknown |= !cost_known;
    c->estimated |= estimated;
    if (c->schema) {
        cJSON *obj = NULL;
        if (llm_json_extract(buf_str(&r->text), c->schema, &obj) == 0) {
            c->json_out = obj;
        } else if (c->repairs_left > 0) {
            char *why = xstrdup(error_message());
            repair(c, why);
            free(why);
            return;
        } else {
            char why[1024];
            snprintf(why, sizeof why, "%s", error_message());
            fail(c, LLM_FAIL_SCHEMA, "no valid JSON object from %s after %d repair attempt%s: %s",
                 c->ep->name, c->repairs, c->repairs == 1 ? "" : "s", why);
            return;
        }
    }
    deliver(c, 0, LLM_OK, NULL);
}

/* Ends a call whose token callback asked to cancel it; true when it did
 * (c is freed). Its HTTP request, if any, is already over. */
static bool finish_cancel(struct llm_call *c)
{
    if (!c->cancel_requested)
        return false;
    c->reserved = false;
    record(c, "cancelled", "cancelled", 0, 0, false, true, 0);
    call_unlink(c);
    call_destroy(c);
    return true;
}

/* ---- sending ------------------------------------------------------------ */

static void send_request(struct llm_call *c);

static void pump(struct endpoint *ep, struct llm *gw)
{
    while (!gw->closing && ep->qhead && ep->active < gw->cfg->llm_max_concurrency) {
        struct llm_call *c = ep->qhead;
        queue_remove(c);
        send_request(c);
    }
}

static void enqueue(struct llm_call *c, bool front)
{
    struct endpoint *ep = c->ep;
    c->state = ST_QUEUED;
    if (front) {
        c->qnext = ep->qhead;
        if (ep->qhead)
            ep->qhead->qprev = c;
        else
            ep->qtail = c;
        ep->qhead = c;
    } else {
        c->qprev = ep->qtail;
        if (ep->qtail)
            ep->qtail->qnext = c;
        else
            ep->qhead = c;
        ep->qtail = c;
    }
}

static int on_event(const char *event, const char *data, size_t len, void *ud)
{
    struct llm_call *c = ud;
    size_t bad;
    if (!llm_utf8_valid(data, len, &bad))
        return error_set("the stream holds invalid UTF-8 (an event's byte %zu)", bad);
    if (c->ep->prov->stream_event(&c->reply, event, data, len) < 0)
        return TH_ERR;
    if (c->reply.stream_error)
        return error_set("the stream reported an error");
    return 0;
}

static int on_data(struct http_request *req, const char *data, size_t len, void *ud)
{
    struct llm_call *c = ud;
    if (!c->sse_on && !c->plain_stream) {
        const char *type = http_header(req, "content-type");
        if (type && !strncasecmp(type, "application/json", 16)) {
            c->plain_stream = true;
            buf_init(&c->plain, (size_t)c->gw->cfg->llm_max_response_bytes);
        } else {
            sse_init(&c->sse, (size_t)c->gw->cfg->llm_max_response_bytes, on_event, c);
            c->sse_on = true;
        }
    }
    if (c->plain_stream)
        return buf_append(&c->plain, data, len);
    int rc = sse_feed(&c->sse, data, len);
    if (rc == 0 && c->cancel_requested)
        rc = error_set("cancelled");
    return rc;
}

static void on_retry(struct loop_timer *timer, void *ud)
{
    struct llm_call *c = ud;
    (void)timer;
    c->timer = NULL;
    enqueue(c, true);
    pump(c->ep, c->gw);
}

/* Retries c if attempts and time allow; otherwise fails with msg and hint
 * (what to do, appended to the final message only). */
static void retry_or_fail(struct llm_call *c, struct http_request *req, enum llm_failure failure,
                          const char *msg, const char *hint)
{
    struct llm *gw = c->gw;
    const struct config *cfg = gw->cfg;
    long wait = -1;
    if (req) {
        const char *ms = http_header(req, "retry-after-ms");
        char *end = NULL;
        double v = ms ? strtod(ms, &end) : -1;
        if (ms && end != ms && !*end && v >= 0 && v < 86400e3)
            wait = (long)v;
        if (wait < 0)
            wait = llm_retry_after_ms(http_header(req, "retry-after"), time(NULL));
    }
    bool honoured = wait >= 0;
    if (!honoured)
        wait = (long)llm_backoff_ms(c->attempts, unit_random(gw), BACKOFF_BASE_MS, BACKOFF_CAP_MS);
    uint64_t now = loop_now(gw->loop);
    if (c->attempts > cfg->llm_max_retries) {
        if (c->attempts > 1)
            fail(c, failure, "%s (gave up after %d attempts; llm.max_retries is %ld)%s", msg,
                 c->attempts, cfg->llm_max_retries, hint);
        else
            fail(c, failure, "%s%s", msg, hint);
        return;
    }
    if (now + (uint64_t)wait > c->deadline) {
        if (honoured)
            fail(c, failure,
                 "%s (the server asked to wait %.1f s, past llm.retry_max_seconds = %g)%s", msg,
                 (double)wait / 1000, cfg->llm_retry_max_seconds, hint);
        else
            fail(c, failure, "%s (gave up after %d attempts within llm.retry_max_seconds = %g)%s",
                 msg, c->attempts, cfg->llm_retry_max_seconds, hint);
        return;
    }
    char *shown = redact(gw, msg);
    log_info("llm: %s; retrying in %.1f s (attempt %d of %ld)", shown, (double)wait / 1000,
             c->attempts + 1, cfg->llm_max_retries + 1);
    free(shown);
    c->state = ST_BACKOFF;
    c->timer = loop_timer_add(gw->loop, (uint64_t)wait, on_retry, c);
}

struct status_text {
    const char *what, *hint;
};

static struct status_text describe_status(struct llm_call *c, long status, const char *type,
                                          char *hint, size_t n)
{
    const char *model = c->p.model ? c->p.model : "";
    switch (status) {
    case 400:
        return (struct status_text){"bad request", "check the model name and the parameters"};
    case 401:
        snprintf(hint, n, "set %s", c->ep->key_var);
        return (struct status_text){c->ep->key ? "invalid API key" : "no API key", hint};
    case 403:
        snprintf(hint, n, "check that the key in %s may use model '%s'", c->ep->key_var, model);
        return (struct status_text){"access denied", hint};
    case 404:
        snprintf(hint, n, "check llm.model ('%s') and llm.base_url ('%s')", model, c->ep->base);
        return (struct status_text){"not found", hint};
    case 413:
        return (struct status_text){"request too large", "shorten the prompt"};
    case 429:
        if (type && (strstr(type, "insufficient_quota") || strstr(type, "billing")))
            return (struct status_text){"quota exceeded", "check the account's plan and billing"};
        return (struct status_text){"rate limited",
                                    "wait and try again, or lower llm.max_concurrency"};
    case 529:
        return (struct status_text){"overloaded", "try again later"};
    default:
        if (status >= 500)
            return (struct status_text){"server error", "try again later"};
        return (struct status_text){"request refused", "check the request"};
    }
}

static void http_failed(struct llm_call *c, struct http_request *req,
                        const struct http_response *resp)
{
    const char *host = http_host(req);
    switch (resp->failure) {
    case HTTP_FAIL_CALLBACK:
        if (c->reply.stream_error) {
            char msg[1024];
            snprintf(msg, sizeof msg, "the stream from %s reported an error: %s", host,
                     c->reply.stream_error);
            if (c->reply.stream_error_retryable && !c->reply.emitted)
                retry_or_fail(c, NULL, LLM_FAIL_HTTP, msg, "");
            else
                fail(c, LLM_FAIL_HTTP, "%s", msg);
        } else {
            fail(c, LLM_FAIL_REPLY, "unusable stream from %s: %s", host, resp->error);
        }
        return;
    case HTTP_FAIL_TOO_LARGE:
        fail(c, LLM_FAIL_REPLY, "%s; raise llm.max_response_bytes (%ld) if that is expected",
             resp->error, c->gw->cfg->llm_max_response_bytes);
        return;
    case HTTP_FAIL_TIMEOUT:
    case HTTP_FAIL_IDLE:
    case HTTP_FAIL_CONNECT:
    case HTTP_FAIL_NETWORK: {
        const char *what = resp->failure == HTTP_FAIL_IDLE      ? " (llm.idle_timeout)"
                           : resp->failure == HTTP_FAIL_TIMEOUT ? " (llm.timeout)"
                                                                : "";
        const char *hint = resp->failure == HTTP_FAIL_CONNECT ? "; check llm.base_url" : "";
        char msg[1024];
        snprintf(msg, sizeof msg, "%s%s", resp->error, what);
        if (c->reply.emitted)
            fail(c, LLM_FAIL_NETWORK, "%s, after part of the reply was streamed", msg);
        else
            retry_or_fail(c, NULL, LLM_FAIL_NETWORK, msg, hint);
        return;
    }
    default:
        fail(c, LLM_FAIL_NETWORK, "%s", resp->error);
        return;
    }
}

static void status_failed(struct llm_call *c, struct http_request *req,
                          const struct http_response *resp)
{
    long status = resp->status;
    const char *host = http_host(req);
    if (status >= 300 && status < 400) {
        const char *loc = http_header(req, "location");
        fail(c, LLM_FAIL_HTTP, "%ld from %s: unexpected redirect to '%s'; check llm.base_url",
             status, host, loc ? loc : "?");
        return;
    }
    char *type = NULL;
    char *said =
        llm_server_message(resp->body->data ? resp->body->data : "", resp->body->len, &type);
    char hint[512];
    struct status_text st = describe_status(c, status, type, hint, sizeof hint);
    char msg[1536], hint_text[600];
    if (said[0])
        snprintf(msg, sizeof msg, "%ld from %s: %s (the server said: \"%s\")", status, host,
                 st.what, said);
    else
        snprintf(msg, sizeof msg, "%ld from %s: %s", status, host, st.what);
    snprintf(hint_text, sizeof hint_text, "; %s", st.hint);
    bool quota = status == 429 && !strcmp(st.what, "quota exceeded");
    if (llm_status_retryable(status) && !quota)
        retry_or_fail(c, req, LLM_FAIL_HTTP, msg, hint_text);
    else
        fail(c, LLM_FAIL_HTTP, "%s%s", msg, hint_text);
    free(said);
    free(type);
}

static int compare_ids(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(cJSON_GetObjectItemCaseSensitive(x, "id")->valuestring,
                  cJSON_GetObjectItemCaseSensitive(y, "id")->valuestring);
}

/* Sorts a model list (objects with a string "id") by id. */
static cJSON *sort_models(cJSON *list)
{
    int n = cJSON_GetArraySize(list);
    if (n < 2)
        return list;
    cJSON **items = xcalloc((size_t)n, sizeof *items);
    for (int i = 0; i < n; i++)
        items[i] = cJSON_DetachItemFromArray(list, 0);
    qsort(items, (size_t)n, sizeof *items, compare_ids);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(list, items[i]);
    free(items);
    return list;
}

/* Parses a whole JSON reply body into c->reply (or the model list). */
static void whole_reply(struct llm_call *c, struct http_request *req, const struct buf *body)
{
    const char *host = http_host(req);
    size_t bad;
    if (!llm_utf8_valid(buf_str(body), body->len, &bad)) {
        fail(c, LLM_FAIL_REPLY, "the reply from %s is not valid UTF-8 (byte %zu)", host, bad);
        return;
    }
    cJSON *root = cJSON_ParseWithLength(buf_str(body), body->len);
    if (!cJSON_IsObject(root)) {
        const char *type = http_header(req, "content-type");
        char *kind = NULL;
        char *said = llm_server_message(buf_str(body), body->len, &kind);
        fail(c, LLM_FAIL_REPLY,
             "the reply from %s is not a JSON object (Content-Type %s%s%s%s); is llm.base_url "
             "('%s') an API endpoint?",
             host, type ? type : "not given", said[0] ? ": \"" : "", said, said[0] ? "\"" : "",
             c->ep->base);
        free(said);
        free(kind);
        cJSON_Delete(root);
        return;
    }
    int rc;
    if (c->kind == KIND_MODELS) {
        cJSON *list = NULL;
        rc = c->ep->prov->parse_models(root, &list);
        c->json_out = rc == 0 ? sort_models(list) : NULL;
    } else {
        rc = c->ep->prov->parse_reply(root, &c->reply);
        if (rc == 0 && c->reply.on_token && c->reply.text.len) {
            c->reply.emitted = true;
            c->reply.on_token(c->reply.text.data, c->reply.text.len, c->reply.token_ud);
        }
    }
    cJSON_Delete(root);
    if (finish_cancel(c))
        return;
    if (rc < 0) {
        fail(c, LLM_FAIL_REPLY, "unexpected reply from %s: %s", host, error_message());
        return;
    }
    succeed(c, false);
}

static void on_http_done(struct http_request *req, const struct http_response *resp, void *ud)
{
    struct llm_call *c = ud;
    struct llm *gw = c->gw;
    struct endpoint *ep = c->ep;
    c->http = NULL;
    ep->active--;
    if (finish_cancel(c)) {
        /* cancelled from its token callback */
    } else if (resp->failure != HTTP_OK) {
        http_failed(c, req, resp);
    } else if (resp->status < 200 || resp->status >= 300) {
        status_failed(c, req, resp);
    } else if (!c->p.stream || c->kind == KIND_MODELS) {
        whole_reply(c, req, resp->body);
    } else if (c->plain_stream) {
        whole_reply(c, req, &c->plain);
    } else if (!c->reply.done) {
        const char *last = ep->prov == &llm_provider_openai ? "data: [DONE]" : "message_stop";
        char msg[512];
        snprintf(msg, sizeof msg, "the stream from %s ended before its last event (%s)",
                 http_host(req), last);
        if (c->reply.emitted)
            fail(c, LLM_FAIL_REPLY, "%s: the reply is incomplete", msg);
        else
            retry_or_fail(c, NULL, LLM_FAIL_REPLY, msg, "");
    } else {
        succeed(c, false);
    }
    pump(ep, gw);
}

static void send_request(struct llm_call *c)
{
    struct llm *gw = c->gw;
    const struct config *cfg = gw->cfg;
    char *headers[LLM_HEADERS_MAX + 1];
    int n = c->ep->prov->headers(headers, 0, c->ep->key, cfg);
    headers[n] = NULL;

    c->state = ST_SENDING;
    c->attempts++;
    c->ep->active++;
    uint64_t now = loop_now(gw->loop);
    if (!c->first_sent) {
        c->first_sent = now;
        c->deadline = now + (uint64_t)(cfg->llm_retry_max_seconds * 1000);
    }
    if (c->sse_on)
        sse_free(&c->sse);
    c->sse_on = false;
    c->plain_stream = false;
    buf_free(&c->plain);
    llm_token_cb on_token = c->reply.on_token;
    void *token_ud = c->reply.token_ud;
    llm_reply_free(&c->reply);
    llm_reply_init(&c->reply, (size_t)cfg->llm_max_response_bytes);
    c->reply.on_token = on_token;
    c->reply.token_ud = token_ud;

    struct http_options o = {
        .method = c->kind == KIND_MODELS ? "GET" : "POST",
        .url = c->url,
        .headers = (const char *const *)headers,
        .body = c->kind == KIND_MODELS ? NULL : c->body,
        .body_len = c->body ? strlen(c->body) : 0,
        .connect_timeout_ms = (long)(cfg->llm_connect_timeout * 1000),
        .timeout_ms = (long)(cfg->llm_timeout * 1000),
        .idle_timeout_ms = (long)(cfg->llm_idle_timeout * 1000),
        .max_body = (size_t)cfg->llm_max_response_bytes,
        .on_data = c->p.stream && c->kind == KIND_CHAT ? on_data : NULL,
        .on_done = on_http_done,
        .ud = c,
    };
    log_debug("llm: %s %s (model '%s', attempt %d)", c->ep->name, c->url,
              c->p.model ? c->p.model : "", c->attempts);
    int rc = http_start(gw->http, &o, &c->http);
    for (int i = 0; i < n; i++)
        free(headers[i]);
    if (rc < 0) {
        c->ep->active--;
        char what[1024];
        snprintf(what, sizeof what, "%s", error_message());
        fail(c, LLM_FAIL_USAGE, "cannot send to %s: %s; check llm.base_url", c->ep->name, what);
    }
}

/* ---- starting a logical request ------------------------------------------ */

static void cache_key(struct llm_call *c)
{
    const struct llm_params *p = &c->p;
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(k, "provider", c->ep->name);
    cJSON_AddStringToObject(k, "model", p->model);
    cJSON *msgs = cJSON_AddArrayToObject(k, "messages");
    for (size_t i = 0; i < p->nmessages; i++) {
        cJSON *m = cJSON_CreateArray();
        cJSON_AddItemToArray(m, cJSON_CreateString(p->messages[i].role));
        cJSON_AddItemToArray(m, cJSON_CreateString(p->messages[i].content));
        cJSON_AddItemToArray(msgs, m);
    }
    if (p->has_temperature)
        cJSON_AddNumberToObject(k, "temperature", p->temperature);
    else
        cJSON_AddNullToObject(k, "temperature");
    cJSON_AddNumberToObject(k, "max_tokens", (double)p->max_tokens);
    cJSON *stop = cJSON_AddArrayToObject(k, "stop");
    for (size_t i = 0; i < p->nstop; i++)
        cJSON_AddItemToArray(stop, cJSON_CreateString(p->stop[i]));
    if (p->has_seed)
        cJSON_AddNumberToObject(k, "seed", (double)p->seed);
    else
        cJSON_AddNullToObject(k, "seed");
    cJSON_AddBoolToObject(k, "json", p->json);
    char *text = cJSON_PrintUnformatted(k);
    sha256_hex(text, strlen(text), c->cache_key);
    free(text);
    cJSON_Delete(k);
}

/* Answers c from the cache: 1 when it did (or failed), 0 to go on. */
static int from_cache(struct llm_call *c)
{
    struct llm *gw = c->gw;
    const char *mode = gw->cfg->llm_cache;
    if (!strcmp(mode, "off"))
        return 0;
    bool replay = !strcmp(mode, "replay");
    if (!gw->store) {
        if (replay) {
            fail(c, LLM_FAIL_CACHE_MISS,
                 "llm.cache is \"replay\" but there is no workspace database to replay from; "
                 "run inside the workspace");
            return 1;
        }
        log_debug("llm: no workspace database, so the response cache is not used");
        return 0;
    }
    struct llm_cached hit;
    int rc = llm_cache_get(gw->store, c->cache_key, &hit);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        if (!replay)
            return 0;
        fail(c, LLM_FAIL_CACHE_MISS,
             "no cached reply for this request to %s model '%s' (llm.cache is \"replay\"); "
             "record it first with llm.cache = \"read-write\"",
             c->ep->name, c->p.model);
        return 1;
    }
    if (rc < 0) {
        log_warn("llm: %s; the response cache is skipped", error_message());
        if (!replay)
            return 0;
        fail(c, LLM_FAIL_CACHE_MISS, "cannot replay: %s", error_message());
        return 1;
    }
    log_debug("llm: answered from the response cache (%.12s)", c->cache_key);
    struct llm_reply *r = &c->reply;
    buf_reset(&r->text);
    buf_puts(&r->text, hit.text);
    free(r->model);
    r->model = hit.model[0] ? xstrdup(hit.model) : NULL;
    free(r->finish_reason);
    r->finish_reason = hit.finish_reason[0] ? xstrdup(hit.finish_reason) : NULL;
    r->prompt_tokens = hit.prompt_tokens;
    r->completion_tokens = hit.completion_tokens;
    r->have_usage = true;
    llm_cached_free(&hit);
    if (r->on_token && r->text.len) {
        r->emitted = true;
        r->on_token(r->text.data, r->text.len, r->token_ud);
        if (finish_cancel(c))
            return 1;
    }
    succeed(c, true);
    return 1;
}

static void begin(struct llm_call *c)
{
    struct llm *gw = c->gw;
    c->attempts = 0;
    c->first_sent = 0;
    c->reply.emitted = false;
    if (!c->ep->prov) {
        fail(c, LLM_FAIL_OFFLINE,
             "no model is configured: llm.provider is \"offline\"; set OPENAI_API_KEY (with "
             "OPENAI_BASE_URL for a local server such as vLLM, llama.cpp or Ollama) or "
             "ANTHROPIC_API_KEY, or set llm.provider in thalamus.lua (see docs/llm.md)");
        return;
    }
    free(c->url);
    free(c->body);
    c->body = NULL;
    if (c->kind == KIND_MODELS) {
        c->url = c->ep->prov->models_url(c->ep->base);
    } else {
        c->url = c->ep->prov->chat_url(c->ep->base);
        c->body = c->ep->prov->build_body(&c->p);
        if (strcmp(gw->cfg->llm_cache, "off")) {
            cache_key(c);
            if (from_cache(c))
                return;
        }
        char msg[1024];
        int rc = check_budget(c, msg, sizeof msg);
        if (rc < 0) {
            fail(c, LLM_FAIL_BUDGET, "cannot check the budget: %s", error_message());
            return;
        }
        if (rc > 0) {
            fail(c, LLM_FAIL_BUDGET, "%s", msg);
            return;
        }
    }
    enqueue(c, false);
    pump(c->ep, gw);
}

static void on_start(struct loop_timer *timer, void *ud)
{
    struct llm_call *c = ud;
    (void)timer;
    c->timer = NULL;
    begin(c);
}

/* ---- public ------------------------------------------------------------- */

static struct llm_call *call_new(struct llm *gw, struct endpoint *ep, enum call_kind kind,
                                 llm_done_cb cb, void *ud)
{
    struct llm_call *c = xcalloc(1, sizeof *c);
    c->gw = gw;
    c->ep = ep;
    c->kind = kind;
    c->cb = cb;
    c->ud = ud;
    llm_reply_init(&c->reply, (size_t)gw->cfg->llm_max_response_bytes);
    buf_init(&c->plain, 1);
    c->next = gw->calls;
    if (gw->calls)
        gw->calls->prev = c;
    gw->calls = c;
    gw->ncalls++;
    c->state = ST_START;
    c->timer = loop_timer_add(gw->loop, 0, on_start, c);
    return c;
}

static int unknown_provider(const char *name)
{
    return error_setc(TH_EUSAGE, "unknown provider '%s'; use openai, anthropic or offline", name);
}

int llm_chat(struct llm *gw, const struct llm_request *req, llm_done_cb cb, void *ud,
             struct llm_call **out)
{
    if (out)
        *out = NULL;
    struct endpoint *ep = find_endpoint(gw, req->provider);
    if (!ep)
        return unknown_provider(req->provider);
    if (req->nmessages == 0)
        return error_setc(TH_EUSAGE, "a chat request needs at least one message");
    for (size_t i = 0; i < req->nmessages; i++) {
        const struct llm_message *m = &req->messages[i];
        if (!m->role ||
            (strcmp(m->role, "system") && strcmp(m->role, "user") && strcmp(m->role, "assistant")))
            return error_setc(TH_EUSAGE,
                              "message %zu has the role '%s'; use system, user or assistant", i + 1,
                              m->role ? m->role : "(none)");
        if (!m->content)
            return error_setc(TH_EUSAGE, "message %zu has no content", i + 1);
    }
    if (req->schema && llm_schema_check(req->schema) < 0)
        return TH_EUSAGE;
    if (req->schema && req->on_token)
        return error_setc(TH_EUSAGE, "a structured (schema) request cannot stream");
    if (req->has_temperature && !(req->temperature >= 0 && req->temperature <= 2))
        return error_setc(TH_EUSAGE, "the temperature must be from 0 to 2, got %g",
                          req->temperature);
    const char *model = req->model && *req->model ? req->model : gw->cfg->llm_model;
    if (ep->prov && (!model || !*model))
        return error_setc(TH_EUSAGE,
                          "no model is set for %s; set llm.model in thalamus.lua or "
                          "THALAMUS_MODEL, or pass --model",
                          ep->name);

    struct llm_call *c = call_new(gw, ep, KIND_CHAT, cb, ud);
    struct llm_params *p = &c->p;
    const struct config *cfg = gw->cfg;
    p->model = xstrdup(model ? model : "");
    bool structured = req->schema || req->json;
    char *instruction = structured ? llm_json_instruction(req->schema) : NULL;
    bool placed = false;
    for (size_t i = 0; i < req->nmessages; i++) {
        const struct llm_message *m = &req->messages[i];
        if (instruction && !placed && !strcmp(m->role, "system")) {
            char *s = xasprintf("%s\n\n%s", m->content, instruction);
            add_message(p, "system", s);
            free(s);
            placed = true;
        } else {
            if (instruction && !placed) {
                add_message(p, "system", instruction);
                placed = true;
            }
            add_message(p, m->role, m->content);
        }
    }
    free(instruction);
    p->has_temperature = req->has_temperature || !isnan(cfg->llm_temperature);
    p->temperature = req->has_temperature ? req->temperature : cfg->llm_temperature;
    p->max_tokens = req->max_tokens > 0 ? req->max_tokens : cfg->llm_max_tokens;
    if (req->nstop) {
        p->stop = xcalloc(req->nstop, sizeof *p->stop);
        for (size_t i = 0; i < req->nstop; i++)
            p->stop[i] = xstrdup(req->stop[i]);
        p->nstop = req->nstop;
    }
    p->has_seed = req->has_seed && ep->prov && ep->prov->supports_seed;
    p->seed = req->seed;
    p->json = structured && ep->prov && ep->prov->supports_json;
    p->stream = req->on_token != NULL;
    c->on_token = req->on_token;
    c->token_ud = req->token_ud;
    c->reply.on_token = req->on_token ? emit_token : NULL;
    c->reply.token_ud = c;
    c->agent = dup_or_null(req->agent);
    c->run = dup_or_null(req->run);
    c->site = dup_or_null(req->site ? req->site : req->agent);
    if (req->schema) {
        c->schema = cJSON_Duplicate(req->schema, 1);
        c->repairs_left = req->repairs > 0   ? req->repairs
                          : req->repairs < 0 ? 0
                                             : (int)cfg->llm_json_repairs;
    }
    if (out)
        *out = c;
    return 0;
}

int llm_chat_json(struct llm *gw, const struct llm_request *req, const cJSON *schema,
                  llm_done_cb cb, void *ud, struct llm_call **out)
{
    struct llm_request r = *req;
    r.schema = schema;
    r.json = true;
    return llm_chat(gw, &r, cb, ud, out);
}

int llm_models(struct llm *gw, const char *provider, llm_done_cb cb, void *ud,
               struct llm_call **out)
{
    if (out)
        *out = NULL;
    struct endpoint *ep = find_endpoint(gw, provider);
    if (!ep)
        return unknown_provider(provider);
    struct llm_call *c = call_new(gw, ep, KIND_MODELS, cb, ud);
    if (out)
        *out = c;
    return 0;
}

void llm_cancel(struct llm_call *c)
{
    if (!c || c->delivering)
        return;
    if (c->emitting) {
        c->cancel_requested = true; /* finished by finish_cancel() */
        return;
    }
    struct endpoint *ep = c->ep;
    struct llm *gw = c->gw;
    bool sending = c->state == ST_SENDING;
    switch (c->state) {
    case ST_START:
    case ST_BACKOFF:
        loop_timer_cancel(c->timer);
        c->timer = NULL;
        break;
    case ST_QUEUED:
        queue_remove(c);
        break;
    case ST_SENDING:
        http_cancel(c->http);
        c->http = NULL;
        ep->active--;
        break;
    }
    if (sending || c->state == ST_BACKOFF) {
        c->reserved = false;
        record(c, "cancelled", "cancelled", 0, 0, false, true, 0);
    }
    call_unlink(c);
    call_destroy(c);
    if (sending)
        pump(ep, gw);
}

void llm_free(struct llm *gw)
{
    if (!gw)
        return;
    gw->closing = true;
    while (gw->calls)
        llm_cancel(gw->calls);
    http_client_free(gw->http);
    for (int i = 0; i < NPROVIDERS; i++) {
        free(gw->ep[i].base);
        free(gw->ep[i].key_var);
        free(gw->ep[i].key);
    }
    while (gw->ledger) {
        struct ledger *l = gw->ledger;
        gw->ledger = l->next;
        free(l->run);
        free(l->site);
        free(l);
    }
    free(gw);
}
