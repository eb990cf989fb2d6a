/*
 * lua_llm: the thalamus.llm module, the agents' side of the model gateway
 * (llm.h). chat(request) returns the reply's text and a table of usage;
 * chat_json(request, schema) asks for a JSON object with the keys and types
 * of schema (checked and repaired by the gateway) and returns it as a table;
 * stream(request, on_token) calls on_token with each piece of text as it
 * arrives, in the agent's coroutine, and returns like chat. Every call waits
 * without blocking the loop, is recorded with the calling agent as its
 * caller and call site and ctx.run as its run (so budgets apply), and
 * raises an error when the gateway reports one (offline, budget, network,
 * schema): wrap it in pcall to handle it. The reply is data: nothing here
 * ever runs it. Depends on agent_internal, llm, buf, alloc and error.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "error.h"
#include "llm.h"

#define MAX_MESSAGES 1000
#define MAX_STOP     8

struct llm_wait {
    struct agent_task *t;
    struct llm_call *call; /* NULL once finished */
    bool done, streaming;
    struct buf pending; /* streamed text not yet given to on_token */
    int rc;
    char *error, *text, *provider, *model, *finish_reason;
    cJSON *json;
    long prompt_tokens, completion_tokens, latency_ms;
    double cost;
    bool cost_known, cached, estimated;
    int attempts, repairs;
};

static void llm_release(struct agent_task *t, void *data)
{
    (void)t;
    struct llm_wait *w = data;
    if (w->call)
        llm_cancel(w->call);
    buf_free(&w->pending);
    free(w->error);
    free(w->text);
    free(w->provider);
    free(w->model);
    free(w->finish_reason);
    cJSON_Delete(w->json);
    free(w);
}

static void on_done(struct llm_call *call, const struct llm_result *res, void *ud)
{
    (void)call;
    struct llm_wait *w = ud;
    w->call = NULL;
    w->done = true;
    w->rc = res->rc;
    w->error = res->rc < 0 ? xstrdup(res->error ? res->error : "the model call failed") : NULL;
    w->text = xstrdup(res->text ? res->text : "");
    w->json = res->json ? cJSON_Duplicate(res->json, 1) : NULL;
    w->provider = xstrdup(res->provider ? res->provider : "");
    w->model = xstrdup(res->model ? res->model : "");
    w->finish_reason = xstrdup(res->finish_reason ? res->finish_reason : "");
    w->prompt_tokens = res->prompt_tokens;
    w->completion_tokens = res->completion_tokens;
    w->latency_ms = res->latency_ms;
    w->cost = res->cost;
    w->cost_known = res->cost_known;
    w->cached = res->cached;
    w->estimated = res->usage_estimated;
    w->attempts = res->attempts;
    w->repairs = res->repairs;
    agent_wake(w->t);
}

static void on_token(const char *text, size_t len, void *ud)
{
    struct llm_wait *w = ud;
    if (buf_append(&w->pending, text, len) == 0)
        agent_wake_later(w->t, false);
}

static void push_info(lua_State *L, struct llm_wait *w)
{
    lua_createtable(L, 0, 12);
    lua_pushstring(L, w->provider);
    lua_setfield(L, -2, "provider");
    lua_pushstring(L, w->model);
    lua_setfield(L, -2, "model");
    lua_pushstring(L, w->finish_reason);
    lua_setfield(L, -2, "finish_reason");
    lua_pushinteger(L, w->prompt_tokens);
    lua_setfield(L, -2, "prompt_tokens");
    lua_pushinteger(L, w->completion_tokens);
    lua_setfield(L, -2, "completion_tokens");
    if (w->cost_known) {
        lua_pushnumber(L, w->cost);
        lua_setfield(L, -2, "cost");
    }
    lua_pushboolean(L, w->cached);
    lua_setfield(L, -2, "cached");
    lua_pushboolean(L, w->estimated);
    lua_setfield(L, -2, "estimated");
    lua_pushinteger(L, w->latency_ms);
    lua_setfield(L, -2, "latency_ms");
    lua_pushinteger(L, w->attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushinteger(L, w->repairs);
    lua_setfield(L, -2, "repairs");
}

/* Returns the outcome to Lua (text or object, info), or raises its error. */
static int finish(lua_State *L, struct agent_task *t, struct llm_wait *w, const char *fn)
{
    if (w->rc < 0) {
        lua_pushfstring(L, "thalamus.llm.%s: %s", fn, w->error);
        agent_wait_clear(t);
        return lua_error(L);
    }
    if (w->json)
        agent_push_json(L, w->json, true);
    else
        lua_pushstring(L, w->text);
    push_info(L, w);
    agent_wait_clear(t);
    return 2;
}

static int chat_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct agent_task *t = agent_task_of(L);
    return finish(L, t, t->wait.data, ctx ? "chat_json" : "chat");
}

static int stream_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    struct agent_task *t = agent_task_of(L);
    struct llm_wait *w = t->wait.data;
    if (w->pending.len) {
        lua_pushvalue(L, 2); /* on_token */
        lua_pushlstring(L, w->pending.data, w->pending.len);
        buf_reset(&w->pending);
        lua_call(L, 1, 0); /* on_token cannot wait: it runs inside this call */
    }
    if (!w->done)
        return agent_yield(L, t, stream_k, ctx);
    return finish(L, t, w, "stream");
}

/* ---- the request --------------------------------------------------------- */

static const char *opt_string(lua_State *L, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            agent_raise(L, "the request's '%s' must be a string, not a %s", field,
                        luaL_typename(L, -1));
        s = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the request table holds the string */
    return s;
}

/* Fills req from the table at idx. The strings stay owned by the table and
 * the arrays live in userdata left on the stack, until llm_chat copies them. */
static void read_request(lua_State *L, int idx, struct llm_request *req)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(req, 0, sizeof *req);
    lua_getfield(L, idx, "messages");
    int nmsg = 0;
    struct llm_message *msgs = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TTABLE)
            agent_raise(L, "the request's 'messages' must be a list of { role = ..., content = "
                           "... }");
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (n < 1 || n > MAX_MESSAGES)
            agent_raise(L, "the request needs 1 to %d messages, got %d", MAX_MESSAGES, (int)n);
        msgs = lua_newuserdatauv(L, (size_t)n * sizeof *msgs, 0);
        lua_insert(L, -2); /* keep the userdata below the list */
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TTABLE)
                agent_raise(L, "message %d must be a table { role = ..., content = ... }", (int)i);
            lua_getfield(L, -1, "role");
            lua_getfield(L, -2, "content");
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                agent_raise(L, "message %d needs a role and a content, both strings", (int)i);
            msgs[i - 1].role = lua_tostring(L, -2);
            msgs[i - 1].content = lua_tostring(L, -1);
            lua_pop(L, 3);
        }
        nmsg = (int)n;
        lua_pop(L, 1); /* the list stays referenced by the request */
    } else {
        lua_pop(L, 1);
        const char *system = opt_string(L, idx, "system");
        const char *prompt = opt_string(L, idx, "prompt");
        if (!prompt)
            agent_raise(L, "the request needs 'prompt' (and optionally 'system') or 'messages'");
        msgs = lua_newuserdatauv(L, 2 * sizeof *msgs, 0);
        if (system)
            msgs[nmsg++] = (struct llm_message){"system", system};
        msgs[nmsg++] = (struct llm_message){"user", prompt};
    }
    req->messages = msgs;
    req->nmessages = (size_t)nmsg;
    req->provider = opt_string(L, idx, "provider");
    req->model = opt_string(L, idx, "model");
    req->site = opt_string(L, idx, "site");
    lua_getfield(L, idx, "temperature");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            agent_raise(L, "the request's 'temperature' must be a number");
        req->has_temperature = true;
        req->temperature = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "max_tokens");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0)
            agent_raise(L, "the request's 'max_tokens' must be a positive integer");
        req->max_tokens = (long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "seed");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1))
            agent_raise(L, "the request's 'seed' must be an integer");
        req->has_seed = true;
        req->seed = (long long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "json");
    req->json = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "stop");
    if (!lua_isnil(L, -1)) {
        const char **stop = lua_newuserdatauv(L, MAX_STOP * sizeof *stop, 0);
        lua_insert(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            stop[0] = lua_tostring(L, -1);
            req->nstop = 1;
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            if (n > MAX_STOP)
                agent_raise(L, "the request has more than %d stop sequences", MAX_STOP);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                if (lua_type(L, -1) != LUA_TSTRING)
                    agent_raise(L, "stop sequence %d must be a string", (int)i);
                stop[i - 1] = lua_tostring(L, -1);
                lua_pop(L, 1);
            }
            req->nstop = (size_t)n;
        } else {
            agent_raise(L, "the request's 'stop' must be a string or a list of strings");
        }
        req->stop = stop;
    }
    lua_pop(L, 1);
}

static struct llm *gateway(lua_State *L, const char *fn)
{
    struct agent_runtime *rt = agent_runtime_of(L);
    if (!rt->llm)
        agent_raise(L,
                    "thalamus.llm.%s: no model gateway in this runtime; configure a model "
                    "(llm.provider, llm.model) and use the llm strategy",
                    fn);
    return rt->llm;
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

static int start(lua_State *L, const char *fn, bool json, bool stream)
{
    struct agent_task *t = agent_check_current(L, fn);
    struct llm *gw = gateway(L, fn + strlen("thalamus.llm."));
    int base = lua_gettop(L);
    struct llm_request req;
    read_request(L, 1, &req);
    cJSON *schema = NULL;
    if (json) {
        if (lua_isnoneornil(L, 2)) {
            schema = cJSON_CreateObject();
        } else {
            luaL_checktype(L, 2, LUA_TTABLE);
            if (agent_to_json(L, 2, "schema", &schema) < 0 || !cJSON_IsObject(schema)) {
                cJSON_Delete(schema);
                return agent_raise(L,
                                   "%s: the schema must be a table of field names to types, "
                                   "such as { title = \"string\", score = \"number\" }",
                                   fn);
            }
        }
        agent_box(L, schema, 0, free_cjson);
    }
    if (stream)
        luaL_checktype(L, 2, LUA_TFUNCTION);
    req.agent = t->def->name;
    req.run = t->run;
    struct llm_wait *w = xcalloc(1, sizeof *w);
    w->t = t;
    w->streaming = stream;
    buf_init(&w->pending, 0);
    if (stream) {
        req.on_token = on_token;
        req.token_ud = w;
    }
    int rc = json ? llm_chat_json(gw, &req, schema, on_done, w, &w->call)
                  : llm_chat(gw, &req, on_done, w, &w->call);
    if (rc < 0) {
        buf_free(&w->pending);
        free(w);
        return agent_raise(L, "%s: %s", fn, error_message());
    }
    if (json)
        agent_unbox_free(L, -1);
    lua_settop(L, base);
    agent_wait_set(t, llm_release, w);
    return agent_yield(L, t, stream ? stream_k : chat_k, json ? 1 : 0);
}

/* llm.chat{ prompt = ..., system = ... | messages = {...}, model, temperature,
 * max_tokens, stop, seed, json, site } -> text, info */
static int lua_chat(lua_State *L)
{
    return start(L, "thalamus.llm.chat", false, false);
}

/* llm.chat_json(request, schema) -> object, info */
static int lua_chat_json(lua_State *L)
{
    return start(L, "thalamus.llm.chat_json", true, false);
}

/* llm.stream(request, on_token) -> text, info */
static int lua_stream(lua_State *L)
{
    return start(L, "thalamus.llm.stream", false, true);
}

/* llm.available() -> whether a model is configured and the runtime uses it */
static int lua_available(lua_State *L)
{
    struct agent_runtime *rt = agent_runtime_of(L);
    lua_pushboolean(L, rt->llm && strcmp(rt->cfg->llm_provider, "offline") &&
                           strcmp(rt->strategy, "offline"));
    return 1;
}

int luaopen_thalamus_llm(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"chat", lua_chat},     {"chat_json", lua_chat_json},
        {"stream", lua_stream}, {"available", lua_available},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
