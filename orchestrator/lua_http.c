/*
 * lua_http: the thalamus.http module, HTTP requests from agents over the
 * runtime's event loop (http.h). request{ url, method, headers, body,
 * timeout, max_bytes } waits for the reply without blocking the loop and
 * returns { status, body, content_type, elapsed_ms }; any status is a reply
 * (check status), while a request that gets no reply (connection refused,
 * timeout, too large, TLS) raises an error. get(url [, opts]) is the short
 * form. Only http and https, no redirects, replies capped (8 MiB by
 * default); header values may not hold line breaks. Depends on
 * agent_internal, http, buf, alloc and error.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "http.h"

#define MAX_HEADERS     32
#define DEFAULT_TIMEOUT 60.0
#define DEFAULT_MAX     ((size_t)8 << 20)

struct http_wait {
    struct agent_task *t;
    struct http_request *req; /* NULL once finished */
    long status, elapsed_ms;
    bool failed;
    char *error, *body, *content_type;
    size_t len;
};

static void http_release(struct agent_task *t, void *data)
{
    (void)t;
    struct http_wait *w = data;
    if (w->req)
        http_cancel(w->req);
    free(w->error);
    free(w->body);
    free(w->content_type);
    free(w);
}

static void on_done(struct http_request *req, const struct http_response *resp, void *ud)
{
    struct http_wait *w = ud;
    w->req = NULL;
    w->status = resp->status;
    w->elapsed_ms = resp->elapsed_ms;
    w->failed = resp->failure != HTTP_OK;
    if (w->failed) {
        w->error = xstrdup(resp->error ? resp->error : "the request failed");
    } else {
        w->len = resp->body ? resp->body->len : 0;
        w->body = xstrndup(resp->body ? buf_str(resp->body) : "", w->len);
        w->len = resp->body ? resp->body->len : 0;
        const char *ct = http_header(req, "content-type");
        w->content_type = ct ? xstrdup(ct) : NULL;
    }
    agent_wake(w->t);
}

static int request_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct agent_task *t = agent_task_of(L);
    struct http_wait *w = t->wait.data;
    if (w->failed) {
        lua_pushfstring(L, "thalamus.http: %s", w->error);
        agent_wait_clear(t);
        return lua_error(L);
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, w->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, w->body, w->len);
    lua_setfield(L, -2, "body");
    if (w->content_type) {
        lua_pushstring(L, w->content_type);
        lua_setfield(L, -2, "content_type");
    }
    lua_pushinteger(L, w->elapsed_ms);
    lua_setfield(L, -2, "elapsed_ms");
    agent_wait_clear(t);
    return 1;
}

static bool has_line_break(const char *s)
{
    return strchr(s, '\r') || strchr(s, '\n');
}

/* The options at idx (a table, or nothing) and the URL: starts the request. */
static int start(lua_State *L, const char *url, int opts)
{
    struct agent_task *t = agent_check_current(L, "thalamus.http.request");
    struct agent_runtime *rt = t->rt;
    struct http_options o = {.url = url, .connect_timeout_ms = 10000};
    double timeout = DEFAULT_TIMEOUT;
    size_t max = DEFAULT_MAX;
    const char **headers = lua_newuserdatauv(L, (MAX_HEADERS + 1) * sizeof *headers, 0);
    int nh = 0;
    if (opts) {
        lua_getfield(L, opts, "method");
        if (!lua_isnil(L, -1))
            o.method = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the options table holds the string */
        lua_getfield(L, opts, "body");
        if (!lua_isnil(L, -1)) {
            o.body = luaL_checklstring(L, -1, &o.body_len);
        }
        lua_pop(L, 1);
        lua_getfield(L, opts, "timeout");
        if (!lua_isnil(L, -1)) {
            timeout = luaL_checknumber(L, -1);
            if (!(timeout > 0 && timeout <= 3600))
                return agent_raise(L, "thalamus.http: timeout must be from 0 to 3600 seconds");
        }
        lua_pop(L, 1);
        lua_getfield(L, opts, "max_bytes");
        if (!lua_isnil(L, -1)) {
            lua_Integer m = luaL_checkinteger(L, -1);
            if (m < 1 || m > ((lua_Integer)64 << 20))
                return agent_raise(L, "thalamus.http: max_bytes must be from 1 to 64 MiB");
            max = (size_t)m;
        }
        lua_pop(L, 1);
        lua_getfield(L, opts, "headers");
        if (!lua_isnil(L, -1)) {
            luaL_checktype(L, -1, LUA_TTABLE);
            int h = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, h)) {
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                    return agent_raise(L, "thalamus.http: headers are a table of names to "
                                          "strings, such as { Accept = \"application/json\" }");
                const char *name = lua_tostring(L, -2), *value = lua_tostring(L, -1);
                if (has_line_break(name) || has_line_break(value) || strchr(name, ':'))
                    return agent_raise(L,
                                       "thalamus.http: the header '%s' holds a line break or "
                                       "a colon",
                                       name);
                if (nh == MAX_HEADERS)
                    return agent_raise(L, "thalamus.http: more than %d headers", MAX_HEADERS);
                headers[nh++] = lua_pushfstring(L, "%s: %s", name, value);
                lua_insert(L, h); /* keep the line below the table */
                h++;
                lua_pop(L, 1);
            }
        }
    }
    headers[nh] = NULL;
    o.headers = headers;
    o.timeout_ms = (long)llround(timeout * 1000);
    o.max_body = max;
    if (!rt->http && http_client_new(rt->loop, &rt->http) < 0)
        return agent_raise(L, "thalamus.http: %s", error_message());
    struct http_wait *w = xcalloc(1, sizeof *w);
    w->t = t;
    o.on_done = on_done;
    o.ud = w;
    if (http_start(rt->http, &o, &w->req) < 0) {
        free(w);
        return agent_raise(L, "thalamus.http: %s", error_message());
    }
    return agent_wait(L, t, http_release, w, request_k, 0);
}

/* http.request{ url, method, headers, body, timeout, max_bytes } -> reply */
static int lua_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_getfield(L, 1, "url");
    const char *url = lua_tostring(L, -1);
    if (!url)
        return agent_raise(L, "thalamus.http.request: 'url' is required");
    return start(L, url, 1);
}

/* http.get(url [, opts]) -> reply */
static int lua_get(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    return start(L, lua_tostring(L, 1), lua_isnil(L, 2) ? 0 : 2);
}

int luaopen_thalamus_http(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"request", lua_request},
        {"get", lua_get},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
