/*
 * llm_openai: the OpenAI chat-completions protocol for the LLM gateway (see
 * llm_internal.h). Any server that speaks it works: OpenAI, vLLM, llama.cpp's
 * server, Ollama's /v1, LM Studio, OpenRouter. Requests are POST
 * {base}/chat/completions with a bearer key (none when no key is set, for
 * local servers); streams are `data:` events of chunks ending with
 * `data: [DONE]`, with usage in a final chunk because the request sets
 * stream_options.include_usage. Models come from GET {base}/models.
 * Depends on buf, alloc, error and cJSON.
 */
#include "llm_internal.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static char *chat_url(const char *base)
{
    return xasprintf("%s/chat/completions", base);
}

static char *models_url(const char *base)
{
    return xasprintf("%s/models", base);
}

static int headers(char **h, int n, const char *key, const struct config *cfg)
{
    (void)cfg;
    if (key)
        h[n++] = xasprintf("Authorization: Bearer %s", key);
    h[n++] = xstrdup("Content-Type: application/json");
    return n;
}

static char *build_body(const struct llm_params *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", p->model);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    for (size_t i = 0; i < p->nmessages; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", p->messages[i].role);
        cJSON_AddStringToObject(m, "content", p->messages[i].content);
        cJSON_AddItemToArray(msgs, m);
    }
    if (p->has_temperature)
        cJSON_AddNumberToObject(o, "temperature", p->temperature);
    cJSON_AddNumberToObject(o, "max_tokens", (double)p->max_tokens);
    if (p->nstop) {
        cJSON *stop = cJSON_AddArrayToObject(o, "stop");
        for (size_t i = 0; i < p->nstop; i++)
            cJSON_AddItemToArray(stop, cJSON_CreateString(p->stop[i]));
    }
    if (p->has_seed)
        cJSON_AddNumberToObject(o, "seed", (double)p->seed);
    if (p->json) {
        cJSON *rf = cJSON_AddObjectToObject(o, "response_format");
        cJSON_AddStringToObject(rf, "type", "json_object");
    }
    if (p->stream) {
        cJSON_AddTrueToObject(o, "stream");
        cJSON *so = cJSON_AddObjectToObject(o, "stream_options");
        cJSON_AddTrueToObject(so, "include_usage");
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void take_usage(const cJSON *usage, struct llm_reply *out)
{
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if (cJSON_IsNumber(pt) && cJSON_IsNumber(ct) && pt->valuedouble >= 0 && ct->valuedouble >= 0) {
        out->prompt_tokens = (long)pt->valuedouble;
        out->completion_tokens = (long)ct->valuedouble;
        out->have_usage = true;
    }
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
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    if (!cJSON_IsObject(msg))
        return error_set("the reply has no choices[0].message");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (!cJSON_IsString(content) && !cJSON_IsNull(content) && content)
        return error_set("choices[0].message.content of the reply is not a string");
    if (cJSON_IsString(content) && buf_puts(&out->text, content->valuestring) < 0)
        return TH_ERR;
    take_string(&out->finish_reason, cJSON_GetObjectItemCaseSensitive(c0, "finish_reason"));
    take_string(&out->model, cJSON_GetObjectItemCaseSensitive(root, "model"));
    take_usage(cJSON_GetObjectItemCaseSensitive(root, "usage"), out);
    return 0;
}

static int stream_event(struct llm_reply *out, const char *event, const char *data, size_t len)
{
    (void)event;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        out->done = true;
        return 0;
    }
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return error_set("a stream event is not a JSON object: '%.60s'", data);
    }
    int rc = 0;
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        free(out->stream_error);
        out->stream_error = xstrdup(cJSON_IsString(msg)   ? msg->valuestring
                                    : cJSON_IsString(err) ? err->valuestring
                                                          : "an error event");
        goto cleanup;
    }
    take_string(&out->model, cJSON_GetObjectItemCaseSensitive(root, "model"));
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    if (c0) {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content) && content->valuestring[0])
            rc = llm_reply_text(out, content->valuestring, strlen(content->valuestring));
        take_string(&out->finish_reason, cJSON_GetObjectItemCaseSensitive(c0, "finish_reason"));
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (cJSON_IsObject(usage))
        take_usage(usage, out);
cleanup:
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
        const cJSON *owner = cJSON_GetObjectItemCaseSensitive(m, "owned_by");
        if (cJSON_IsString(owner))
            cJSON_AddStringToObject(o, "owned_by", owner->valuestring);
        const cJSON *created = cJSON_GetObjectItemCaseSensitive(m, "created");
        if (cJSON_IsNumber(created))
            cJSON_AddNumberToObject(o, "created", created->valuedouble);
        cJSON_AddItemToArray(list, o);
    }
    *out = list;
    return 0;
}

const struct llm_provider llm_provider_openai = {
    .name = "openai",
    .key_var = "OPENAI_API_KEY",
    .base_var = "OPENAI_BASE_URL",
    .default_base = "https://api.openai.com/v1",
    .supports_json = true,
    .supports_seed = true,
    .chat_url = chat_url,
    .models_url = models_url,
    .headers = headers,
    .build_body = build_body,
    .parse_reply = parse_reply,
    .stream_event = stream_event,
    .parse_models = parse_models,
};
