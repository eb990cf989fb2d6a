/*
 * llm_anthropic: Anthropic's Messages API for the LLM gateway (see
 * llm_internal.h). Requests are POST {base}/v1/messages with the x-api-key
 * and anthropic-version headers; system messages are joined into the
 * top-level "system" field, as the API wants; max_tokens is always sent (the
 * API requires it); seed and a JSON response format do not exist there and
 * are left out (structured requests rely on the instruction that the gateway
 * adds). Streams are typed events: message_start (model, input tokens),
 * content_block_delta (text), message_delta (stop reason, output tokens),
 * message_stop, ping, and error events. Models come from GET
 * {base}/v1/models. Depends on buf, alloc, error and cJSON.
 */
#include "llm_internal.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

/* The base without a trailing /v1, which the paths add. */
static char *api_url(const char *base, const char *path)
{
    size_t n = strlen(base);
    if (n >= 3 && !strcmp(base + n - 3, "/v1"))
        n -= 3;
    return xasprintf("%.*s/v1/%s", (int)n, base, path);
}

static char *chat_url(const char *base)
{
    return api_url(base, "messages");
}

static char *models_url(const char *base)
{
    return api_url(base, "models?limit=1000");
}

static int headers(char **h, int n, const char *key, const struct config *cfg)
{
    if (key)
        h[n++] = xasprintf("x-api-key: %s", key);
    h[n++] = xasprintf("anthropic-version: %s", cfg->llm_anthropic_version);
    h[n++] = xstrdup("Content-Type: application/json");
    return n;
}

static char *build_body(const struct llm_params *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", p->model);
    cJSON_AddNumberToObject(o, "max_tokens", (double)p->max_tokens);
    struct buf system;
    buf_init(&system, 0);
    for (size_t i = 0; i < p->nmessages; i++) {
        if (strcmp(p->messages[i].role, "system"))
            continue;
        if (system.len)
            buf_puts(&system, "\n\n");
        buf_puts(&system, p->messages[i].content);
    }
    if (system.len)
        cJSON_AddStringToObject(o, "system", buf_str(&system));
    buf_free(&system);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    for (size_t i = 0; i < p->nmessages; i++) {
        if (!strcmp(p->messages[i].role, "system"))
            continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", p->messages[i].role);
        cJSON_AddStringToObject(m, "content", p->messages[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    if (p->has_temperature)
        cJSON_AddNumberToObject(o, "temperature", p->temperature > 1 ? 1 : p->temperature);
    if (p->nstop) {
        cJSON *stop = cJSON_AddArrayToObject(o, "stop_sequences");
        for (size_t i = 0; i < p->nstop; i++)
            cJSON_AddItemToArray(stop, cJSON_CreateString(p->stop[i]));
    }
    if (p->stream)
        cJSON_AddTrueToObject(o, "stream");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static long count(const cJSON *usage, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(usage, name);
    return cJSON_IsNumber(n) && n->valuedouble > 0 ? (long)n->valuedouble : 0;
}

/* Input tokens as billed: fresh ones plus those written to or read from the
 * prompt cache. */
static long input_tokens(const cJSON *usage)
{
    return count(usage, "input_tokens") + count(usage, "cache_creation_input_tokens") +
           count(usage, "cache_read_input_tokens");
}

static void take_string(char **slot, const cJSON *item)
{
    if (cJSON_IsString(item) && item->valuestring[0]) {
        free(*slot);
        *slot = xstrdup(item->valuestring);
    }
}

static int parse_reply(const cJSON *root, struct llm_reply *out)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!cJSON_IsArray(content))
        return error_set("the reply has no \"content\" array");
    const cJSON *block;
    cJSON_ArrayForEach(block, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(block, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(block, "text");
        if (cJSON_IsString(type) && !strcmp(type->valuestring, "text") && cJSON_IsString(text) &&
            buf_puts(&out->text, text->valuestring) < 0)
            return TH_ERR;
    }
    take_string(&out->finish_reason, cJSON_GetObjectItemCaseSensitive(root, "stop_reason"));
    take_string(&out->model, cJSON_GetObjectItemCaseSensitive(root, "model"));
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (cJSON_IsObject(usage) && cJSON_GetObjectItemCaseSensitive(usage, "output_tokens")) {
        out->prompt_tokens = input_tokens(usage);
        out->completion_tokens = count(usage, "output_tokens");
        out->have_usage = true;
    }
    return 0;
}

static bool retryable_error(const char *type)
{
    return type && (!strcmp(type, "overloaded_error") || !strcmp(type, "api_error") ||
                    !strcmp(type, "rate_limit_error"));
}

static int stream_event(struct llm_reply *out, const char *event, const char *data, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return error_set("a stream event is not a JSON object: '%.60s'", data);
    }
    int rc = 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : event;
    if (!strcmp(type, "message_start")) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        take_string(&out->model, cJSON_GetObjectItemCaseSensitive(msg, "model"));
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(msg, "usage");
        out->prompt_tokens = input_tokens(usage);
        out->completion_tokens = count(usage, "output_tokens");
    } else if (!strcmp(type, "content_block_delta")) {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(root, "delta");
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(delta, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(delta, "text");
        if (cJSON_IsString(dt) && !strcmp(dt->valuestring, "text_delta") && cJSON_IsString(text) &&
            text->valuestring[0])
            rc = llm_reply_text(out, text->valuestring, strlen(text->valuestring));
    } else if (!strcmp(type, "message_delta")) {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(root, "delta");
        take_string(&out->finish_reason, cJSON_GetObjectItemCaseSensitive(delta, "stop_reason"));
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
        if (cJSON_GetObjectItemCaseSensitive(usage, "output_tokens")) {
            out->completion_tokens = count(usage, "output_tokens");
            if (cJSON_GetObjectItemCaseSensitive(usage, "input_tokens"))
                out->prompt_tokens = input_tokens(usage);
            out->have_usage = true;
        }
    } else if (!strcmp(type, "message_stop")) {
        out->done = true;
    } else if (!strcmp(type, "error")) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        const cJSON *et = cJSON_GetObjectItemCaseSensitive(err, "type");
        free(out->stream_error);
        out->stream_error = xstrdup(cJSON_IsString(msg) ? msg->valuestring : "an error event");
        out->stream_error_retryable = retryable_error(cJSON_IsString(et) ? et->valuestring : NULL);
    }
    /* ping, content_block_start and content_block_stop carry nothing we need */
    cJSON_Delete(root);
    return rc;
}

static int parse_models(const cJSON *root, cJSON **out)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (!cJSON_IsArray(data))
        return error_set("the model list has no \"data\" array");
    cJSON *list = cJSON_CreateArray();
    const cJSON *m;
    cJSON_ArrayForEach(m, data)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
        if (!cJSON_IsString(id))
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id->valuestring);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "display_name");
        if (cJSON_IsString(name))
            cJSON_AddStringToObject(o, "display_name", name->valuestring);
        const cJSON *created = cJSON_GetObjectItemCaseSensitive(m, "created_at");
        if (cJSON_IsString(created))
            cJSON_AddStringToObject(o, "created_at", created->valuestring);
        cJSON_AddItemToArray(list, o);
    }
    *out = list;
    return 0;
}

const struct llm_provider llm_provider_anthropic = {
    .name = "anthropic",
    .key_var = "ANTHROPIC_API_KEY",
    .base_var = "ANTHROPIC_BASE_URL",
    .default_base = "https://api.anthropic.com",
    .supports_json = false,
    .supports_seed = false,
    .chat_url = chat_url,
    .models_url = models_url,
    .headers = headers,
    .build_body = build_body,
    .parse_reply = parse_reply,
    .stream_event = stream_event,
    .parse_models = parse_models,
};
