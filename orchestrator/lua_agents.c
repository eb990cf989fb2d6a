/*
 * lua_agents: the thalamus.agents module. call(name, input) runs another
 * agent and returns its checked output (raising its error, with its
 * traceback, when it fails); parallel{...} runs agents ({ name, input }) and
 * functions at once, each in a coroutine of its own, and returns when all
 * have finished: a list of outputs and a list of errors, by position.
 * Inputs and outputs cross as JSON data, so agents share no tables. The
 * calling agent waits without blocking the loop. Depends on agent_internal,
 * alloc and error.
 */
#include "agent_internal.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static void children_release(struct agent_task *t, void *data)
{
    (void)t;
    struct agent_children *ch = data;
    for (int i = 0; i < ch->n; i++) {
        struct agent_task *kid = ch->kids[i];
        if (!kid)
            continue;
        ch->kids[i] = NULL;
        if (kid->state == TASK_DONE)
            agent_child_free(kid);
        else
            agent_task_cancel(kid);
    }
    free(ch->kids);
    free(ch);
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

/* Pushes "agent 'x' failed: message" and the traceback of a failed child. */
static void push_child_error(lua_State *L, struct agent_task *kid)
{
    const char *what = kid->kind == TASK_AGENT ? "agent '" : "a function of agent '";
    lua_pushfstring(L, "%s%s' failed: %s%s%s", what, kid->def->name,
                    kid->error ? kid->error : "unknown error", kid->traceback ? "\n" : "",
                    kid->traceback ? kid->traceback : "");
}

static int call_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct agent_task *t = agent_task_of(L);
    struct agent_children *ch = t->wait.data;
    struct agent_task *kid = ch->kids[0];
    if (kid->rc < 0) {
        push_child_error(L, kid);
        agent_wait_clear(t);
        return lua_error(L);
    }
    agent_push_json(L, kid->output, true);
    agent_wait_clear(t);
    return 1;
}

/* agents.call(name [, input]) -> output */
static int agents_call(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct agent_task *t = agent_check_current(L, "thalamus.agents.call");
    cJSON *input = NULL;
    if (!lua_isnil(L, 2) && agent_to_json(L, 2, "input", &input) < 0)
        return agent_raise(L, "thalamus.agents.call('%s'): %s", name, error_message());
    if (input && !cJSON_IsObject(input)) {
        cJSON_Delete(input);
        return agent_raise(L,
                           "thalamus.agents.call('%s'): the input must be a table of named "
                           "fields, not a list",
                           name);
    }
    agent_box(L, input, 0, free_cjson);
    struct agent_children *ch = xcalloc(1, sizeof *ch);
    ch->kids = xcalloc(1, sizeof *ch->kids);
    agent_wait_set(t, children_release, ch);
    ch->kids[0] = agent_spawn_child(L, t, name, input, 0);
    ch->n = 1;
    ch->pending = 1;
    agent_unbox_free(L, 3);
    return agent_yield(L, t, call_k, 0);
}

static int parallel_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct agent_task *t = agent_task_of(L);
    struct agent_children *ch = t->wait.data;
    lua_createtable(L, ch->n, 1);
    int outs = lua_gettop(L);
    lua_newtable(L);
    int errs = outs + 1;
    int failed = 0;
    for (int i = 0; i < ch->n; i++) {
        struct agent_task *kid = ch->kids[i];
        if (kid->rc < 0) {
            push_child_error(L, kid);
            lua_rawseti(L, errs, i + 1);
            failed++;
        } else if (kid->kind == TASK_AGENT) {
            agent_push_json(L, kid->output, true);
            lua_rawseti(L, outs, i + 1);
        } else if (kid->nresults > 0 && kid->co) {
            int n = kid->nresults;
            luaL_checkstack(L, n, "results");
            lua_xmove(kid->co, L, n);
            kid->nresults = 0;
            lua_pop(L, n - 1);
            lua_rawseti(L, outs, i + 1);
        }
    }
    lua_pushinteger(L, ch->n);
    lua_setfield(L, outs, "n");
    agent_wait_clear(t);
    lua_pushinteger(L, failed);
    return 3;
}

/* agents.parallel{ {name, input} | {agent = name, input = t} | function, ... }
 * -> outputs, errors, number of failures */
static int agents_parallel(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct agent_task *t = agent_check_current(L, "thalamus.agents.parallel");
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    if (n > AGENT_MAX_PARALLEL)
        return agent_raise(L, "thalamus.agents.parallel: at most %d at once, got %lld",
                           AGENT_MAX_PARALLEL, (long long)n);
    if (n == 0) {
        lua_newtable(L);
        lua_newtable(L);
        lua_pushinteger(L, 0);
        return 3;
    }
    struct agent_children *ch = xcalloc(1, sizeof *ch);
    ch->kids = xcalloc((size_t)n, sizeof *ch->kids);
    agent_wait_set(t, children_release, ch); /* released if an entry raises */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int entry = lua_gettop(L);
        struct agent_task *kid = NULL;
        if (lua_type(L, entry) == LUA_TFUNCTION) {
            kid = agent_spawn_child(L, t, NULL, NULL, entry);
        } else if (lua_type(L, entry) == LUA_TTABLE) {
            lua_rawgeti(L, entry, 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_getfield(L, entry, "agent");
            }
            lua_rawgeti(L, entry, 2);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_getfield(L, entry, "input");
            }
            const char *name = lua_tostring(L, -2);
            if (!name || lua_type(L, -2) != LUA_TSTRING)
                return agent_raise(L,
                                   "thalamus.agents.parallel: entry %d needs the agent's name "
                                   "({ \"critic\", input } or { agent = \"critic\" })",
                                   (int)i);
            cJSON *input = NULL;
            if (!lua_isnil(L, -1) && agent_to_json(L, -1, "input", &input) < 0)
                return agent_raise(L, "thalamus.agents.parallel: entry %d: %s", (int)i,
                                   error_message());
            if (input && !cJSON_IsObject(input)) {
                cJSON_Delete(input);
                return agent_raise(L,
                                   "thalamus.agents.parallel: entry %d: the input must be a "
                                   "table of named fields",
                                   (int)i);
            }
            agent_box(L, input, 0, free_cjson);
            kid = agent_spawn_child(L, t, name, input, 0);
            agent_unbox_free(L, -1);
        } else {
            return agent_raise(L,
                               "thalamus.agents.parallel: entry %d must be a function or "
                               "{ name, input }, not a %s",
                               (int)i, luaL_typename(L, entry));
        }
        ch->kids[ch->n++] = kid;
        ch->pending++;
        lua_settop(L, 1);
    }
    return agent_yield(L, t, parallel_k, 0);
}

int luaopen_thalamus_agents(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"call", agents_call},
        {"parallel", agents_parallel},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
