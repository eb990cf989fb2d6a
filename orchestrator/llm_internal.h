/*
 * llm_internal: what the parts of the LLM gateway share and nothing else
 * includes: the provider interface that llm_openai.c and llm_anthropic.c
 * implement (URLs, headers, request bodies, replies, stream events, model
 * lists), the reply being assembled, the store's usage and cache rows, and
 * small pure helpers (UTF-8 checks, redaction, Retry-After, backoff, token
 * estimates, server messages) that the unit tests check one by one.
 * Depends on buf, config, store and cJSON.
 */
#ifndef THALAMUS_LLM_INTERNAL_H
#define THALAMUS_LLM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "config.h"
#include "llm.h"
#include "store.h"

/* A request as sent: owned copies, defaults applied. */
struct llm_params {
    char *model;
    struct llm_message *messages; /* owned role and content strings */
    size_t nmessages;
    bool has_temperature;
    double temperature;
    long max_tokens;
    char **stop;
    size_t nstop;
    bool has_seed;
    long long seed;
    bool json;
    bool stream;
};

/* A reply as it is parsed, whole or from stream events. */
struct llm_reply {
    struct buf text;
    char *model;
    char *finish_reason;
    long prompt_tokens, completion_tokens;
    bool have_usage;
    bool done;          /* stream: its final event arrived */
    char *stream_error; /* stream: an error event's message */
    bool stream_error_retryable;
    bool emitted; /* stream: text went to the token callback */
    llm_token_cb on_token;
    void *token_ud;
};

#define LLM_HEADERS_MAX 8

struct llm_provider {
    const char *name;
    const char *key_var;      /* default variable of the API key */
    const char *base_var;     /* variable that overrides the base URL */
    const char *default_base; /* default base URL */
    bool supports_json, supports_seed;
    char *(*chat_url)(const char *base);
    char *(*models_url)(const char *base);
    /* Adds authentication and version headers ("Name: value") to h; key may
     * be NULL. Returns the new count. */
    int (*headers)(char **h, int n, const char *key, const struct config *cfg);
    /* The JSON body of a chat request (caller frees). */
    char *(*build_body)(const struct llm_params *p);
    /* Parses a whole reply; TH_ERR with a message when its shape is wrong. */
    int (*parse_reply)(const cJSON *root, struct llm_reply *out);
    /* Applies one stream event; TH_ERR with a message when it is malformed.
     * An error event is stored in out->stream_error, not returned. */
    int (*stream_event)(struct llm_reply *out, const char *event, const char *data, size_t len);
    /* The model list as an array of objects with "id" (caller deletes). */
    int (*parse_models)(const cJSON *root, cJSON **out);
};

extern const struct llm_provider llm_provider_openai;
extern const struct llm_provider llm_provider_anthropic;

/* Appends streamed text to the reply and passes it to the token callback. */
int llm_reply_text(struct llm_reply *r, const char *text, size_t len);
void llm_reply_init(struct llm_reply *r, size_t max_text);
void llm_reply_free(struct llm_reply *r);

/* ---- helpers (llm_util.c) ---- */

/* Whether s[0..len) is valid UTF-8 (no overlongs, surrogates or code points
 * past U+10FFFF); *bad receives the offset of the first bad byte. */
bool llm_utf8_valid(const char *s, size_t len, size_t *bad);

/* A copy of text with every occurrence of each non-empty secret (array of n,
 * NULL entries skipped) replaced by "[redacted]". Caller frees. */
char *llm_redact(const char *text, const char *const *secrets, size_t n);

/* Milliseconds to wait as a Retry-After value says (delta seconds, or an
 * HTTP date compared with now); -1 when value is not one. */
long llm_retry_after_ms(const char *value, time_t now);

/* Full-jitter exponential backoff before retry number retry (1, 2, ...):
 * unit (in [0, 1)) times min(cap_ms, base_ms * 2^(retry - 1)). */
uint64_t llm_backoff_ms(int retry, double unit, uint64_t base_ms, uint64_t cap_ms);

/* A conservative token count for bytes of text (bytes / 3, rounded up). */
long llm_estimate_tokens(size_t bytes);

/* What an error reply says, in one short line: the "message" of a JSON error
 * object, an HTML page's title, or the start of the text; *type receives the
 * error's type or code when the JSON names one (else NULL). Caller frees
 * both. */
char *llm_server_message(const char *body, size_t len, char **type);

/* Whether an HTTP status is worth retrying (408, 409, 429, 500, 502, 503,
 * 504, 529). */
bool llm_status_retryable(long status);

/* The price of model: exact name, else the longest configured name that
 * model starts with (so "gpt-4o-mini" prices "gpt-4o-mini-2024-07-18"). */
const struct config_price *llm_price_for(const struct config *cfg, const char *model);

/* ---- the store (llm_store.c) ---- */

struct llm_usage_row {
    const char *provider, *model, *agent, *run, *site;
    long prompt_tokens, completion_tokens;
    bool usage_estimated;
    bool cost_known;
    double cost;
    long latency_ms;
    int attempts;
    const char *outcome; /* ok | cached | error | refused | cancelled */
    const char *error;
};

int llm_store_usage(struct store *store, const struct llm_usage_row *row);

/* Tokens and cost recorded for run (and site, when not NULL). */
int llm_store_spent(struct store *store, const char *run, const char *site, long *tokens,
                    double *cost);

struct llm_cached {
    char *text, *model, *finish_reason;
    long prompt_tokens, completion_tokens;
};

/* 0 and *out filled on a hit, TH_ENOTFOUND on a miss. */
int llm_cache_get(struct store *store, const char *key, struct llm_cached *out);
int llm_cache_put(struct store *store, const char *key, const char *provider,
                  const struct llm_cached *value);
void llm_cached_free(struct llm_cached *c);

#endif
