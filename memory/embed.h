/*
 * embed: a client for OpenAI-compatible embedding endpoints (POST
 * {base_url}/embeddings with {"model", "input": [texts]}), used by recall
 * to fuse vector similarity with BM25.
 *
 * Requests run on the event loop through http.h. Failures that may pass
 * (no connection, timeouts, 429, 5xx) are retried with exponential back-off
 * that honours Retry-After; the reply is checked (one vector per input, all
 * of the same dimension, finite numbers) before it is handed over. The API
 * key is read from the environment variable the configuration names, sent
 * only in the Authorization header, and never logged. embed_texts() is the
 * synchronous form for commands: it runs a loop of its own. Depends on
 * http, loop, config, buf, alloc, error, log and cJSON.
 */
#ifndef THALAMUS_EMBED_H
#define THALAMUS_EMBED_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct loop;
struct http_client;
struct embed_request;

#define EMBED_MAX_INPUT_BYTES 16384 /* each text is cut (at a UTF-8 boundary) to this */
#define EMBED_BATCH           64    /* texts per request */

struct embed_options {
    char *model;    /* "" or NULL: embeddings are off */
    char *base_url; /* the part before /embeddings */
    char *api_key;  /* the key itself, or NULL */
    double timeout_seconds;
    long max_retries;
};

/* Fills o from cfg: memory.embedding_model, memory.embedding_base_url (or
 * llm.base_url), the key from memory.embedding_api_key_env (or
 * llm.api_key_env). TH_ENOTFOUND when no embedding model is configured.
 * Free with embed_options_clear(). */
int embed_options_from_config(struct embed_options *o, const struct config *cfg);
void embed_options_clear(struct embed_options *o);

/* Called once with rc 0 and n * dim floats (the callee keeps ownership;
 * copy what you need), or rc < 0 with error_set(). */
typedef void (*embed_done_cb)(int rc, const float *vectors, size_t n, int dim, void *ud);

/* Starts embedding texts[0..n) (n <= EMBED_BATCH). */
int embed_start(struct embed_request **out, struct loop *loop, struct http_client *http,
                const struct embed_options *o, const char *const *texts, size_t n, embed_done_cb cb,
                void *ud);
/* Cancels a request in flight; its callback is not called. */
void embed_cancel(struct embed_request *r);

/* Embeds texts[0..n) (any n, in batches) and waits: *out gets n * dim floats
 * (free it), *dim the dimension. */
int embed_texts(const struct embed_options *o, const char *const *texts, size_t n, float **out,
                int *dim);

#endif
