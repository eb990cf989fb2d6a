/*
 * llm: the gateway through which all model traffic of thalamus goes.
 *
 * A struct llm serves chat requests asynchronously on the event loop, for
 * three providers: `openai` (the chat-completions API at any base URL, so
 * vLLM, llama.cpp, Ollama, LM Studio and OpenRouter work too), `anthropic`
 * (the Messages API) and `offline` (no network; every request fails at once
 * with a message that says how to configure a model). For each request it:
 * looks the reply up in the response cache (llm.cache); checks the run's and
 * the call site's token and money budgets (llm.budget) against a
 * conservative estimate, refusing before anything is sent; waits for a slot
 * of the provider's concurrency limit (llm.max_concurrency, FIFO); sends the
 * request over http.h, streaming tokens to a callback when asked; retries
 * connection errors, timeouts and 408 / 409 / 429 / 5xx / 529 with
 * exponential backoff and full jitter on loop timers, honouring Retry-After,
 * within llm.max_retries and llm.retry_max_seconds; and records the call's
 * usage, cost (llm.prices) and outcome in the workspace's store. Structured
 * requests (a schema) ask for a JSON object, extract it even from prose or a
 * fenced block, validate it, and ask again with the validation error when it
 * is not right (llm.json_repairs). API keys are read from the environment
 * when the gateway is created and never appear in logs, errors or the store:
 * any echo of a key in a server's message is replaced by "[redacted]".
 * Depends on http, sse, sha256, store, config, loop, buf, alloc, error, log
 * and cJSON.
 */
#ifndef THALAMUS_LLM_H
#define THALAMUS_LLM_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "loop.h"
#include "store.h"

struct llm;
struct llm_call;

struct llm_message {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
};

/* Receives streamed text as it arrives (not NUL-terminated). */
typedef void (*llm_token_cb)(const char *text, size_t len, void *ud);

struct llm_request {
    const char *provider; /* NULL: llm.provider */
    const char *model;    /* NULL or "": llm.model */
    const struct llm_message *messages;
    size_t nmessages;
    bool has_temperature; /* false: llm.temperature (or the provider's default) */
    double temperature;
    long max_tokens; /* 0: llm.max_tokens */
    const char *const *stop;
    size_t nstop;
    bool has_seed; /* sent where the provider supports it (openai) */
    long long seed;
    bool json;             /* ask for a JSON object (response_format where supported) */
    const cJSON *schema;   /* structured request: see llm_json_validate(); implies json */
    int repairs;           /* structured: repair attempts; 0: llm.json_repairs, < 0: none */
    llm_token_cb on_token; /* non-NULL: stream the reply (not with a schema) */
    void *token_ud;
    const char *agent; /* caller, for usage records (NULL: none) */
    const char *run;   /* run the call belongs to: budgets apply per run */
    const char *site;  /* call site for site budgets; NULL: agent */
};

enum llm_failure {
    LLM_OK = 0,
    LLM_FAIL_USAGE,      /* the request itself is malformed */
    LLM_FAIL_OFFLINE,    /* provider offline */
    LLM_FAIL_BUDGET,     /* refused before sending: a budget would be exceeded */
    LLM_FAIL_CACHE_MISS, /* llm.cache is replay and the request is not cached */
    LLM_FAIL_NETWORK,    /* connection, timeout, TLS */
    LLM_FAIL_HTTP,       /* the server answered with an error status */
    LLM_FAIL_REPLY,      /* the reply is unusable: not JSON, invalid UTF-8, cut off, too large */
    LLM_FAIL_SCHEMA,     /* structured: no valid object after the repair attempts */
};

/* The outcome of a call, valid only while the done callback runs. */
struct llm_result {
    int rc;                   /* 0, or a negative TH_E* code */
    enum llm_failure failure; /* LLM_OK when rc is 0 */
    const char *error;        /* what failed and what to do, when rc < 0 */
    const char *text;         /* the reply ("" on failure) */
    const cJSON *json;        /* structured: the validated object; models: the list */
    const char *provider;
    const char *model;         /* as the server named it, else as requested */
    const char *finish_reason; /* "stop", "length", "end_turn"...; "" when unknown */
    long prompt_tokens;        /* summed over repair attempts */
    long completion_tokens;
    bool usage_estimated; /* the server reported no usage: tokens are estimates */
    double cost;          /* in the currency of llm.prices */
    bool cost_known;      /* false when the model has no price */
    long latency_ms;
    int attempts; /* HTTP attempts of the last request (1 without retries) */
    int repairs;  /* structured: repair requests made */
    bool cached;  /* answered from the response cache */
};

typedef void (*llm_done_cb)(struct llm_call *call, const struct llm_result *res, void *ud);

/* Creates a gateway on loop for cfg (which must outlive it). store may be
 * NULL: then nothing is recorded, the cache is unavailable (replay fails)
 * and budgets count only this process's calls. Reads the API keys from the
 * environment now. Free with llm_free(). */
int llm_new(struct llm **out, struct loop *loop, const struct config *cfg, struct store *store);

/* Cancels every call in flight (no callbacks) and frees the gateway. Not from
 * one of its callbacks. */
void llm_free(struct llm *gw);

/* Starts a chat request. Its result arrives through cb, from the loop, never
 * from inside this call. A malformed request (no messages, an unknown role
 * or provider, a bad schema) fails at once with TH_EUSAGE and no callback.
 * The request's strings are copied. *out (may be NULL) receives the call,
 * for llm_cancel(). */
int llm_chat(struct llm *gw, const struct llm_request *req, llm_done_cb cb, void *ud,
             struct llm_call **out);

/* chat_json: llm_chat() of req asking for a JSON object that satisfies
 * schema (see llm_schema_check(); an empty object accepts any object), with
 * up to llm.json_repairs repair requests. res->json holds the object. */
int llm_chat_json(struct llm *gw, const struct llm_request *req, const cJSON *schema,
                  llm_done_cb cb, void *ud, struct llm_call **out);

/* Lists the models of provider (NULL: llm.provider). res->json is an array of
 * objects with at least "id", sorted by id. */
int llm_models(struct llm *gw, const char *provider, llm_done_cb cb, void *ud,
               struct llm_call **out);

/* Cancels a call: no callback follows; a call in flight is recorded with the
 * outcome "cancelled". Allowed from any callback, the call's own token
 * callback included (then no more tokens arrive and the call ends as soon
 * as the gateway returns to the loop); from its done callback it does
 * nothing. */
void llm_cancel(struct llm_call *call);

/* Calls not yet finished. */
int llm_pending(const struct llm *gw);

/* ---- structured replies (llm_json.c) ---- */

/* Checks that schema is a JSON object mapping keys to type names: "string",
 * "number", "integer", "boolean", "object", "array", "null" or "any", or
 * several joined by '|'; a trailing '?' makes the key optional. TH_EUSAGE
 * with a message naming the key otherwise. */
int llm_schema_check(const cJSON *schema);

/* Checks obj against schema (NULL: any object). 0, or TH_ERR with a message
 * such as `"score" must be a number, not a string`. */
int llm_json_validate(const cJSON *obj, const cJSON *schema);

/* Finds the first JSON object in text that satisfies schema: the whole text,
 * then fenced code blocks, then balanced {...} spans (a scan that knows
 * strings and escapes). Sets *out to a new object (the caller deletes it), or
 * fails (TH_ERR) saying why: no object, or the first object's validation
 * error. */
int llm_json_extract(const char *text, const cJSON *schema, cJSON **out);

/* The instruction added to a structured request, e.g. `Reply with only one
 * JSON object ... with these keys: "title" (string), ...`. Caller frees. */
char *llm_json_instruction(const cJSON *schema);

/* ---- the store (llm_store.c) ---- */

/* Registers the "llm" tables (usage, cache) with the store; call before
 * store_open(). */
void llm_register_migrations(void);

/* Usage in the store, optionally of one run: {"total": {...}, "by_model":
 * [...], "by_caller": [...]}, each entry with calls, prompt_tokens,
 * completion_tokens, cost (null when some call had no price) and, for
 * groups, model or agent / site. The caller deletes *out. */
int llm_usage_report(struct store *store, const char *run, cJSON **out);

#endif
