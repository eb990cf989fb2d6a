/*
 * agent: the Lua agent runtime's core (see agent.h): the Lua state with its
 * counting allocator and instruction hook, the sandboxed environments of
 * agent and library files, loading agent definitions, and the life of a
 * task (one invocation in one coroutine): started from a ready queue on the
 * loop, suspended while it waits (agent_wait), resumed by the callback that
 * completes the wait (agent_wake), and finished with a checked output or an
 * error and its traceback, delivered to a C callback or to the agent that
 * called it (agents.call / parallel).
 *
 * Every entry from C into Lua that may allocate runs in protected mode
 * (protect(), or lua_resume of a task), so running out of the Lua heap is
 * an error of one task or one call, never a panic. When the task that fails
 * is the one that filled the heap, the traceback is built within a small
 * reserve above the cap, then the task's coroutine is released and a full
 * collection gives the memory back. Depends on agent_internal, confine,
 * fsutil, http, llm, loop, config, buf, alloc, error, log, Lua and cJSON.
 */
#include "agent_internal.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "confine.h"
#include "error.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "loop.h"

const char *const agent_roles[] = {"planner", "retriever", "coder", "critic", "tool", NULL};
const char *const agent_stages[] = {"retrieve", "ideate", "review", "implement", "analyse", NULL};

static const char proto_key = 0; /* registry: the prototype of an environment */

static void task_resume(struct agent_task *t, int nargs);
static void task_deliver(struct agent_task *t);
static void task_free(struct agent_task *t);

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- memory and instructions ------------------------------------------- */

int agent_raise(lua_State *L, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    luaL_where(L, 1);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct agent_runtime *rt = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        rt->mem_used -= old;
        return NULL;
    }
    size_t limit = rt->mem_limit + (rt->reserve ? AGENT_MEMORY_RESERVE : 0);
    size_t used = rt->mem_used < limit ? rt->mem_used : limit;
    if (nsize > old && nsize - old > limit - used)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p) {
        rt->mem_used = rt->mem_used - old + nsize;
        if (rt->mem_used > rt->mem_peak)
            rt->mem_peak = rt->mem_used;
    }
    return p;
}

struct agent_runtime *agent_runtime_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

struct agent_task *agent_task_of(lua_State *L)
{
    return *(struct agent_task **)lua_getextraspace(L);
}

static void hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct agent_runtime *rt = agent_runtime_of(L);
    if (!rt->doomed) {
        rt->slice_used += rt->hook_step;
        if (rt->slice_used <= rt->cpu_slice)
            return;
        rt->doomed = true;
    }
    /* From now on every instruction of this thread raises the error again,
     * so that pcall loops cannot swallow it. */
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    struct agent_task *t = rt->current;
    agent_raise(L,
                "%s%s%s ran more than %ld instructions without waiting (agents.cpu_slice); "
                "an endless loop?",
                t ? "agent '" : "Lua code", t ? t->def->name : "", t ? "'" : "", rt->cpu_slice);
}

/* Runs f on the main thread in protected mode with ud as its argument;
 * records a Lua error with error_set(). Restores the stack. */
static int protect(struct agent_runtime *rt, lua_CFunction f, void *ud)
{
    lua_State *L = rt->L;
    int top = lua_gettop(L);
    bool reserve = rt->reserve;
    long used = rt->slice_used;
    bool doomed = rt->doomed;
    rt->reserve = true;
    rt->slice_used = 0;
    rt->doomed = false;
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, ud);
    int st = lua_pcall(L, 1, 0, 0);
    int rc = 0;
    if (st == LUA_ERRMEM)
        rc = error_set("out of Lua memory (agents.memory_mb is %zu MiB)", rt->mem_limit >> 20);
    else if (st != LUA_OK)
        rc = error_set("%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "Lua error");
    lua_settop(L, top);
    lua_sethook(L, hook, LUA_MASKCOUNT, rt->hook_step); /* undo a doomed hook */
    rt->reserve = reserve;
    rt->slice_used = used;
    rt->doomed = doomed;
    return rc;
}

/* ---- the sandboxed environment ---------------------------------------- */

static int lua_collectgarbage_limited(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count"))
        return agent_raise(L,
                           "collectgarbage('%s') is not available to agents; only "
                           "collectgarbage('count') is",
                           opt);
    lua_pushnumber(L, (lua_Number)agent_runtime_of(L)->mem_used / 1024.0);
    return 1;
}

/* load(chunk [, chunkname [, mode [, env]]]): text chunks given as strings
 * only; the default environment is the caller's file's (upvalue 1). */
static int lua_load_text(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    if (!s)
        return agent_raise(L, "load: only a chunk given as a string is allowed");
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 'b') && !strchr(mode, 't'))
        return agent_raise(L, "load: binary chunks are not allowed");
    int has_env = lua_gettop(L) >= 4;
    if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env)
        lua_pushvalue(L, 4);
    else
        lua_pushvalue(L, lua_upvalueindex(1));
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

static bool is_task_thread(lua_State *co)
{
    return co && agent_task_of(co) != NULL;
}

/* coroutine.resume and coroutine.close, refusing the coroutines of tasks,
 * which only the runtime resumes. upvalue 1: the original. */
static int lua_coroutine_guard(lua_State *L)
{
    if (is_task_thread(lua_tothread(L, 1)))
        return agent_raise(L, "an agent's own coroutine is resumed by thalamus only");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static bool module_name_ok(const char *name)
{
    if (!*name || strlen(name) > 128)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              (*p == '.' && p != name && p[1] && p[1] != '.')))
            return false;
    return true;
}

static void free_text(void *p, size_t n)
{
    (void)n;
    free(p);
}

/* require(name): "thalamus" and "thalamus.X" give the modules; other names
 * load agents/NAME.lua ('.' for '/') from the workspace, else the built-in
 * directory, in a fresh environment, once per requiring file.
 * upvalue 1: the cache, upvalue 2: the requiring environment. */
static int lua_require(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    if (lua_getfield(L, lua_upvalueindex(1), name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (!strcmp(name, "thalamus") || !strncmp(name, "thalamus.", 9)) {
        lua_getfield(L, lua_upvalueindex(2), "thalamus");
        if (name[8] && lua_type(L, -1) == LUA_TTABLE)
            lua_getfield(L, -1, name + 9);
        if (lua_isnil(L, -1))
            return agent_raise(L, "require: there is no module '%s'", name);
        return 1;
    }
    if (!module_name_ok(name))
        return agent_raise(L,
                           "require: '%s' is not a module name (lowercase words separated by "
                           "dots, such as 'lib.space')",
                           name);
    struct agent_runtime *rt = agent_runtime_of(L);
    char *rel = xasprintf("%s.lua", name);
    for (char *p = rel; *p; p++)
        if (*p == '.' && strcmp(p, ".lua"))
            *p = '/';
    char *text = NULL, *where = NULL;
    size_t len = 0;
    int rc = agent_read_data(rt, rel, &text, &len, &where);
    free(rel);
    if (rc < 0) {
        free(where);
        return agent_raise(L, "require: module '%s' not found: %s", name, error_message());
    }
    agent_box(L, text, len, free_text);
    char *chunkname = xasprintf("@%s", where);
    free(where);
    agent_box(L, chunkname, 0, free_text);
    int st = luaL_loadbufferx(L, text, len, chunkname, "t");
    agent_unbox_free(L, 2);
    agent_unbox_free(L, 3);
    if (st != LUA_OK)
        return lua_error(L);
    agent_push_env(L);
    lua_setupvalue(L, -2, 1);
    lua_pushstring(L, name);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(1), name);
    return 1;
}

static void copy_table(lua_State *L, int idx, int levels)
{
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 16);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (levels > 1 && lua_type(L, -1) == LUA_TTABLE) {
            copy_table(L, -1, levels - 1);
            lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

void agent_push_env(lua_State *L)
{
    luaL_checkstack(L, 8, "environment");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &proto_key);
    int proto = lua_gettop(L);
    lua_createtable(L, 0, 40);
    int env = proto + 1;
    lua_pushnil(L);
    while (lua_next(L, proto)) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            bool two = lua_type(L, -2) == LUA_TSTRING && !strcmp(lua_tostring(L, -2), "thalamus");
            copy_table(L, -1, two ? 2 : 1);
            lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_newtable(L); /* require's cache */
    lua_pushvalue(L, env);
    lua_pushcclosure(L, lua_require, 2);
    lua_setfield(L, env, "require");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, lua_load_text, 1);
    lua_setfield(L, env, "load");
    lua_remove(L, proto);
}

struct module {
    const char *name;
    lua_CFunction open;
};

static const struct module modules[] = {
    {"json", luaopen_thalamus_json},         {"log", luaopen_thalamus_log},
    {"llm", luaopen_thalamus_llm},           {"memory", luaopen_thalamus_memory},
    {"sandbox", luaopen_thalamus_sandbox},   {"agents", luaopen_thalamus_agents},
    {"http", luaopen_thalamus_http},         {"workspace", luaopen_thalamus_workspace},
    {"template", luaopen_thalamus_template}, {"mcts", luaopen_thalamus_mcts},
    {NULL, NULL},
};

/* Builds the prototype environment: the safe parts of the base library,
 * the libraries, and the thalamus modules. */
static int init_state(lua_State *L)
{
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8},
                                    {LUA_COLIBNAME, luaopen_coroutine},
                                    {NULL, NULL}};
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    /* the real globals keep nothing that reaches files or loads code */
    static const char *const removed[] = {"dofile", "loadfile",       "load", "require",
                                          "warn",   "collectgarbage", NULL};
    for (const char *const *r = removed; *r; r++) {
        lua_pushnil(L);
        lua_setglobal(L, *r);
    }
    /* strings' metatable stays out of reach (it is shared by all agents) */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    lua_createtable(L, 0, 40);
    int proto = lua_gettop(L);
    static const char *const base[] = {
        "assert",       "error",    "ipairs",   "next",   "pairs",  "pcall",
        "rawequal",     "rawget",   "rawlen",   "rawset", "select", "setmetatable",
        "getmetatable", "tonumber", "tostring", "type",   "xpcall", "_VERSION",
        "string",       "table",    "math",     "utf8",   NULL};
    for (const char *const *b = base; *b; b++) {
        lua_getglobal(L, *b);
        lua_setfield(L, proto, *b);
    }
    lua_pushcfunction(L, agent_lua_print);
    lua_setfield(L, proto, "print");
    lua_pushcfunction(L, lua_collectgarbage_limited);
    lua_setfield(L, proto, "collectgarbage");
    /* coroutine, with the guards */
    lua_getglobal(L, "coroutine");
    copy_table(L, -1, 1);
    for (const char *const *f = (const char *const[]){"resume", "close", NULL}; *f; f++) {
        lua_getfield(L, -1, *f);
        lua_pushcclosure(L, lua_coroutine_guard, 1);
        lua_setfield(L, -2, *f);
    }
    lua_setfield(L, proto, "coroutine");
    lua_pop(L, 1);
    /* thalamus */
    lua_createtable(L, 0, 12);
    for (const struct module *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_call(L, 0, 1);
        lua_setfield(L, -2, m->name);
    }
    luaopen_thalamus_sleep(L); /* sets sleep and now on the table */
    lua_setfield(L, proto, "thalamus");
    lua_pushvalue(L, proto);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &proto_key);
    return 0;
}

static int init_state_protected(lua_State *L)
{
    (void)lua_touserdata(L, 1);
    lua_settop(L, 0);
    return init_state(L);
}

/* ---- data files --------------------------------------------------------- */

int agent_read_data(struct agent_runtime *rt, const char *rel, char **text, size_t *len,
                    char **where)
{
    *text = NULL;
    *where = NULL;
    int rc = confine_check(rel);
    if (rc < 0)
        return rc;
    const char *dirs[2] = {rt->ws_agents_dir, rt->builtin_dir};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i])
            continue;
        char *path = fs_join(dirs[i], rel);
        struct buf b;
        buf_init(&b, AGENT_MAX_FILE);
        rc = buf_read_file(&b, path);
        free(path);
        if (rc == TH_ENOTFOUND) {
            buf_free(&b);
            error_clear();
            continue;
        }
        if (rc < 0) {
            buf_free(&b);
            return rc;
        }
        *text = buf_detach(&b, len);
        *where = i == 0 ? xasprintf("agents/%s", rel) : xasprintf("[built-in]/%s", rel);
        return 0;
    }
    return error_setc(TH_ENOTFOUND, "no '%s' in %s%s%s", rel,
                      rt->ws_agents_dir ? "the workspace's agents/ or " : "",
                      "the built-in agents at ", rt->builtin_dir);
}

/* ---- agent definitions --------------------------------------------------- */

int agent_check_name(const char *name)
{
    size_t n = strlen(name);
    bool ok = n > 0 && n <= 64 &&
              ((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'));
    for (size_t i = 0; ok && i < n; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
    if (!ok)
        return error_setc(TH_EUSAGE,
                          "'%s' is not an agent name: use a letter, then letters, digits or '_' "
                          "(at most 64)",
                          name);
    return 0;
}

static struct agent_def *def_find(struct agent_runtime *rt, const char *name)
{
    for (struct agent_def *d = rt->defs; d; d = d->next)
        if (!strcmp(d->name, name))
            return d;
    return NULL;
}

static void def_reset(struct agent_runtime *rt, struct agent_def *d)
{
    free(d->role);
    free(d->description);
    free(d->strategy);
    free(d->error);
    free(d->traceback);
    d->role = d->description = d->strategy = d->error = d->traceback = NULL;
    if (rt->L) {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, d->ref);
        luaL_unref(rt->L, LUA_REGISTRYINDEX, d->ctx_ref);
    }
    d->ref = d->ctx_ref = LUA_NOREF;
}

static void def_free(struct agent_runtime *rt, struct agent_def *d)
{
    def_reset(rt, d);
    free(d->name);
    free(d->source);
    free(d->path);
    free(d);
}

static int message_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void split_traceback(const char *full, char **msg, char **tb)
{
    const char *at = strstr(full, "\nstack traceback:");
    if (at) {
        *msg = xstrndup(full, (size_t)(at - full));
        *tb = xstrdup(at + 1);
    } else {
        *msg = xstrdup(full);
        *tb = NULL;
    }
}

static const char *raw_string(lua_State *L, int idx, const char *field)
{
    lua_pushstring(L, field);
    lua_rawget(L, idx);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the table holds the string */
    return s;
}

static int def_fail(struct agent_def *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int def_fail(struct agent_def *d, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(d->error);
    d->error = xstrdup(msg);
    return error_set("%s", msg);
}

/* Builds the ctx fields every invocation of d shares, at the top of L. */
static void push_ctx_template(lua_State *L, struct agent_runtime *rt, struct agent_def *d,
                              const char *role)
{
    lua_createtable(L, 0, 12);
    int ctx = lua_gettop(L);
    lua_pushstring(L, d->name);
    lua_setfield(L, ctx, "agent");
    lua_pushstring(L, role);
    lua_setfield(L, ctx, "role");
    lua_pushstring(L, d->strategy);
    lua_setfield(L, ctx, "strategy");
    if (rt->workspace) {
        lua_pushstring(L, rt->workspace);
        lua_setfield(L, ctx, "workspace");
    }
    agent_push_config(L, rt);
    lua_setfield(L, ctx, "config");
    agent_push_task(L, rt);
    lua_setfield(L, ctx, "task");

    /* the model handle: the llm module plus what this agent may spend */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &proto_key);
    lua_getfield(L, -1, "thalamus");
    lua_getfield(L, -1, "llm");
    copy_table(L, -1, 1);
    int llm = lua_gettop(L);
    const struct config *cfg = rt->cfg;
    lua_pushboolean(L, rt->llm && strcmp(rt->strategy, "offline"));
    lua_setfield(L, llm, "configured");
    lua_pushstring(L, cfg->llm_provider);
    lua_setfield(L, llm, "provider");
    lua_pushstring(L, cfg->llm_model);
    lua_setfield(L, llm, "model");
    lua_createtable(L, 0, 2);
    const struct config_limit *lims[2] = {&cfg->llm_budget.run, NULL};
    for (size_t i = 0; i < cfg->llm_budget.sites_len; i++)
        if (!strcmp(cfg->llm_budget.sites[i].site, d->name))
            lims[1] = &cfg->llm_budget.sites[i].limit;
    for (int i = 0; i < 2; i++) {
        lua_createtable(L, 0, 2);
        if (lims[i] && lims[i]->tokens > 0) {
            lua_pushinteger(L, lims[i]->tokens);
            lua_setfield(L, -2, "tokens");
        }
        if (lims[i] && lims[i]->cost >= 0) {
            lua_pushnumber(L, lims[i]->cost);
            lua_setfield(L, -2, "cost");
        }
        lua_setfield(L, -2, i == 0 ? "run" : "site");
    }
    lua_setfield(L, llm, "budget");
    lua_setfield(L, ctx, "llm");
    lua_pop(L, 3);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &proto_key);
    lua_getfield(L, -1, "thalamus");
    lua_getfield(L, -1, "log");
    copy_table(L, -1, 1);
    lua_setfield(L, ctx, "log");
    lua_pop(L, 3);
}

/* Runs the source of agent d on L and checks the table it returns. */
static int def_load_source(struct agent_runtime *rt, lua_State *L, struct agent_def *d,
                           const char *src, size_t len, const char *chunkname)
{
    int top = lua_gettop(L);
    luaL_checkstack(L, 10, "agent definition");
    lua_pushcfunction(L, message_handler);
    int rc = 0;
    int st = luaL_loadbufferx(L, src, len, chunkname, "t");
    if (st == LUA_OK) {
        agent_push_env(L);
        lua_setupvalue(L, -2, 1);
        st = lua_pcall(L, 0, 1, top + 1);
    }
    if (st != LUA_OK) {
        const char *msg = st == LUA_ERRMEM ? "out of Lua memory" : lua_tostring(L, -1);
        char *m = NULL, *tb = NULL;
        split_traceback(msg ? msg : "error while loading", &m, &tb);
        rc = def_fail(d, "%s", m);
        d->traceback = tb;
        free(m);
        lua_settop(L, top);
        return rc;
    }
    int tbl = lua_gettop(L);
    const char *file = chunkname + 1;
    if (lua_type(L, tbl) != LUA_TTABLE) {
        rc = def_fail(d, "%s must return a table { name, role, description, run }, not a %s", file,
                      luaL_typename(L, tbl));
        goto done;
    }
    const char *name = raw_string(L, tbl, "name");
    const char *role = raw_string(L, tbl, "role");
    const char *desc = raw_string(L, tbl, "description");
    if (!name) {
        rc = def_fail(d, "%s: the field 'name' must be a string (the agent's name, '%s')", file,
                      d->name);
        goto done;
    }
    if (strcmp(name, d->name)) {
        rc = def_fail(d,
                      "%s: the field 'name' is '%s' but the file defines '%s'; make them the "
                      "same",
                      file, name, d->name);
        goto done;
    }
    if (!role || !agent_role_known(role)) {
        rc = def_fail(d,
                      "%s: the field 'role' must be one of planner, retriever, coder, critic "
                      "or tool%s%s%s",
                      file, role ? ", not '" : "", role ? role : "", role ? "'" : "");
        goto done;
    }
    lua_pushliteral(L, "run");
    lua_rawget(L, tbl);
    bool has_run = lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 1);
    if (!has_run) {
        rc = def_fail(d, "%s: the field 'run' must be a function run(ctx, input)", file);
        goto done;
    }
    lua_pushliteral(L, "description");
    lua_rawget(L, tbl);
    if (!lua_isnil(L, -1) && !desc) {
        rc = def_fail(d, "%s: the field 'description' must be a string", file);
        goto done;
    }
    lua_pop(L, 1);
    /* strategies: the ones it has; ctx.strategy is the configured one when it has it */
    char *strategy = xstrdup(rt->strategy);
    lua_pushliteral(L, "strategies");
    if (lua_rawget(L, tbl) == LUA_TTABLE) {
        const char *first = NULL;
        bool has = false;
        for (lua_Integer i = 1;; i++) {
            lua_rawgeti(L, -1, i);
            const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            lua_pop(L, 1);
            if (!s)
                break;
            if (strcmp(s, "llm") && strcmp(s, "offline")) {
                free(strategy);
                rc = def_fail(d, "%s: strategies[%lld] must be \"llm\" or \"offline\"", file,
                              (long long)i);
                goto done;
            }
            first = first ? first : s;
            has |= !strcmp(s, rt->strategy);
        }
        if (first && !has) {
            free(strategy);
            strategy = xstrdup(first);
        }
    } else if (!lua_isnil(L, -1)) {
        free(strategy);
        rc = def_fail(d,
                      "%s: the field 'strategies' must be a list such as { \"llm\", "
                      "\"offline\" }",
                      file);
        goto done;
    }
    lua_pop(L, 1);
    free(d->description);
    free(d->strategy);
    d->description = xstrdup(desc ? desc : "");
    d->strategy = strategy;
    /* the role is set last: a definition without one is not usable (this
     * part may still run out of memory) */
    char *role_copy = xstrdup(role);
    agent_box(L, role_copy, 0, free_text);
    lua_pushvalue(L, tbl);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    push_ctx_template(L, rt, d, role_copy);
    d->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    d->ref = ref;
    d->role = xstrdup(role_copy);
    agent_unbox_free(L, -1);
done:
    lua_settop(L, top);
    return rc;
}

static struct agent_def *def_new(struct agent_runtime *rt, const char *name)
{
    struct agent_def *d = xcalloc(1, sizeof *d);
    d->name = xstrdup(name);
    d->ref = d->ctx_ref = LUA_NOREF;
    d->next = rt->defs;
    rt->defs = d;
    return d;
}

static char *agent_file(struct agent_runtime *rt, const char *name, bool *builtin)
{
    char *base = xasprintf("%s.lua", name);
    const char *dirs[2] = {rt->ws_agents_dir, rt->builtin_dir};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i])
            continue;
        char *path = fs_join(dirs[i], base);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            free(base);
            *builtin = i == 1;
            return path;
        }
        free(path);
    }
    free(base);
    return NULL;
}

struct agent_def *agent_def_get(struct agent_runtime *rt, lua_State *L, const char *name)
{
    struct agent_def *d = def_find(rt, name);
    if (d) {
        if (d->error) {
            error_set("%s", d->error);
            return NULL;
        }
        if (d->role)
            return d;
    }
    if (agent_check_name(name) < 0)
        return NULL;
    bool builtin = false;
    char *path = d && d->path ? xstrdup(d->path) : agent_file(rt, name, &builtin);
    if (!path) {
        error_setc(TH_ENOTFOUND,
                   "unknown agent '%s'; 'thalamus agent list' shows the agents (a workspace "
                   "adds one as agents/%s.lua)",
                   name, name);
        return NULL;
    }
    if (!d) {
        d = def_new(rt, name);
        d->path = path;
        d->source = builtin ? xstrdup("built-in") : xasprintf("agents/%s.lua", name);
    } else {
        free(path);
    }
    struct buf src;
    buf_init(&src, AGENT_MAX_FILE);
    if (buf_read_file(&src, d->path) < 0) {
        def_fail(d, "%s", error_message());
        buf_free(&src);
        return NULL;
    }
    char *chunkname = !strcmp(d->source, "built-in") ? xasprintf("@[built-in]/%s.lua", name)
                                                     : xasprintf("@agents/%s.lua", name);
    size_t len = src.len;
    char *text = buf_detach(&src, NULL);
    agent_box(L, text, 0, free_text);
    agent_box(L, chunkname, 0, free_text);
    int rc = def_load_source(rt, L, d, text, len, chunkname);
    agent_unbox_free(L, -1);
    agent_unbox_free(L, -2);
    lua_pop(L, 2);
    return rc < 0 ? NULL : d;
}

struct define_args {
    struct agent_runtime *rt;
    struct agent_def *d;
    const char *source, *chunkname;
    int rc;
};

static int define_protected(lua_State *L)
{
    struct define_args *a = lua_touserdata(L, 1);
    char *chunkname = xasprintf("@%s", a->chunkname);
    agent_box(L, chunkname, 0, free_text);
    a->rc = def_load_source(a->rt, L, a->d, a->source, strlen(a->source), chunkname);
    agent_unbox_free(L, -1);
    return 0;
}

int agent_define(struct agent_runtime *rt, const char *name, const char *source,
                 const char *chunkname)
{
    if (agent_check_name(name) < 0)
        return TH_EUSAGE;
    struct agent_def *d = def_find(rt, name);
    if (d)
        def_reset(rt, d);
    else
        d = def_new(rt, name);
    free(d->source);
    free(d->path);
    d->path = NULL;
    d->source = xstrdup(chunkname);
    struct define_args a = {rt, d, source, chunkname, 0};
    int rc = protect(rt, define_protected, &a);
    if (rc == 0 && a.rc < 0) {
        error_set("%s", d->error);
        rc = TH_ERR;
    }
    return rc;
}

/* ---- tasks ----------------------------------------------------------------- */

static void ready_remove(struct agent_task *t)
{
    struct agent_runtime *rt = t->rt;
    if (!t->in_ready)
        return;
    struct agent_task **pp = &rt->ready_head, *prev = NULL;
    while (*pp && *pp != t) {
        prev = *pp;
        pp = &(*pp)->ready_next;
    }
    if (*pp) {
        *pp = t->ready_next;
        if (rt->ready_tail == t)
            rt->ready_tail = prev;
    }
    t->ready_next = NULL;
    t->in_ready = false;
}

static void on_ready(struct loop_timer *timer, void *ud);

static void ready_push(struct agent_task *t)
{
    struct agent_runtime *rt = t->rt;
    if (t->in_ready || rt->closing)
        return;
    t->in_ready = true;
    t->ready_next = NULL;
    if (rt->ready_tail)
        rt->ready_tail->ready_next = t;
    else
        rt->ready_head = t;
    rt->ready_tail = t;
    if (!rt->ready_timer)
        rt->ready_timer = loop_timer_add(rt->loop, 0, on_ready, rt);
}

static struct agent_task *task_new(struct agent_runtime *rt, enum task_kind kind,
                                   struct agent_def *def)
{
    struct agent_task *t = xcalloc(1, sizeof *t);
    t->rt = rt;
    t->kind = kind;
    t->state = TASK_READY;
    t->def = def;
    t->co_ref = t->fn_ref = LUA_NOREF;
    t->next = rt->tasks;
    if (rt->tasks)
        rt->tasks->prev = t;
    rt->tasks = t;
    rt->ntasks++;
    return t;
}

static void wait_release(struct agent_task *t)
{
    if (!t->wait.release)
        return;
    void (*release)(struct agent_task *, void *) = t->wait.release;
    void *data = t->wait.data;
    t->wait.release = NULL;
    t->wait.data = NULL;
    t->wait.ready = false;
    release(t, data);
}

static void task_drop_coroutine(struct agent_task *t)
{
    struct agent_runtime *rt = t->rt;
    if (t->co) {
        *(struct agent_task **)lua_getextraspace(t->co) = NULL;
        lua_settop(t->co, 0);
    }
    if (t->co_ref != LUA_NOREF)
        luaL_unref(rt->L, LUA_REGISTRYINDEX, t->co_ref);
    t->co_ref = LUA_NOREF;
    t->co = NULL;
}

static void task_free(struct agent_task *t)
{
    struct agent_runtime *rt = t->rt;
    ready_remove(t);
    wait_release(t);
    task_drop_coroutine(t);
    if (t->fn_ref != LUA_NOREF)
        luaL_unref(rt->L, LUA_REGISTRYINDEX, t->fn_ref);
    if (t->prev)
        t->prev->next = t->next;
    else
        rt->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    rt->ntasks--;
    cJSON_Delete(t->input);
    cJSON_Delete(t->output);
    free(t->run);
    free(t->node);
    free(t->error);
    free(t->traceback);
    free(t);
}

void agent_task_cancel(struct agent_task *t)
{
    task_free(t); /* releasing the wait cancels the operation and the children */
}

void agent_child_free(struct agent_task *t)
{
    task_free(t);
}

struct start_args {
    struct agent_task *t;
    int nargs;
};

static int start_protected(lua_State *L)
{
    struct start_args *a = lua_touserdata(L, 1);
    struct agent_task *t = a->t;
    lua_settop(L, 0);
    lua_State *co = lua_newthread(L);
    *(struct agent_task **)lua_getextraspace(co) = NULL;
    lua_pushvalue(L, 1);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->co = co;
    if (t->kind == TASK_FUNCTION) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
        a->nargs = 0;
        lua_xmove(L, co, 1);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->def->ref);
        lua_pushliteral(L, "run");
        lua_rawget(L, -2);
        lua_remove(L, -2);
        /* ctx: the shared fields, then this invocation's */
        lua_createtable(L, 0, 16);
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->def->ctx_ref);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -5);
        }
        lua_pop(L, 1);
        if (t->run) {
            lua_pushstring(L, t->run);
            lua_setfield(L, -2, "run");
        }
        if (t->node) {
            lua_pushstring(L, t->node);
            lua_setfield(L, -2, "node");
        }
        lua_pushinteger(L, t->depth);
        lua_setfield(L, -2, "depth");
        lua_pushinteger(L, t->attempts);
        lua_setfield(L, -2, "attempt");
        agent_push_json(L, t->input, true);
        a->nargs = 2;
        lua_xmove(L, co, 3);
    }
    *(struct agent_task **)lua_getextraspace(co) = t;
    return 0;
}

static void task_fail_now(struct agent_task *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void task_fail_now(struct agent_task *t, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    t->rc = TH_ERR;
    free(t->error);
    t->error = xstrdup(msg);
    task_deliver(t);
}

static void task_start(struct agent_task *t)
{
    t->attempts++;
    struct start_args a = {t, 0};
    double t0 = monotonic_seconds();
    int rc = protect(t->rt, start_protected, &a);
    t->busy += monotonic_seconds() - t0;
    if (rc < 0) {
        task_fail_now(t, "cannot start agent '%s': %s", t->def->name, error_message());
        return;
    }
    task_resume(t, a.nargs);
}

static void on_ready(struct loop_timer *timer, void *ud)
{
    (void)timer;
    struct agent_runtime *rt = ud;
    rt->ready_timer = NULL;
    struct agent_task *last = rt->ready_tail;
    bool more = last != NULL;
    while (more && rt->ready_head) {
        struct agent_task *t = rt->ready_head;
        more = t != last;
        rt->ready_head = t->ready_next;
        if (!rt->ready_head)
            rt->ready_tail = NULL;
        t->ready_next = NULL;
        t->in_ready = false;
        if (!t->co && t->state == TASK_READY)
            task_start(t);
        else if (t->state == TASK_WAITING)
            task_resume(t, 0);
    }
    if (rt->ready_head && !rt->ready_timer)
        rt->ready_timer = loop_timer_add(rt->loop, 0, on_ready, rt);
}

struct traceback_args {
    struct agent_task *t;
    char *tb;
};

static int traceback_protected(lua_State *L)
{
    struct traceback_args *a = lua_touserdata(L, 1);
    luaL_traceback(L, a->t->co, NULL, 0);
    const char *s = lua_tostring(L, -1);
    a->tb = s && *s ? xstrdup(s) : NULL;
    return 0;
}

static void task_error(struct agent_task *t, int status)
{
    struct agent_runtime *rt = t->rt;
    lua_State *co = t->co;
    const char *who = t->def ? t->def->name : "?";
    free(t->error);
    if (status == LUA_ERRMEM)
        t->error = xasprintf("agent '%s' ran out of memory: the Lua heap of all agents together "
                             "is capped at %zu MiB (agents.memory_mb)",
                             who, rt->mem_limit >> 20);
    else if (lua_type(co, -1) == LUA_TSTRING)
        t->error = xstrdup(lua_tostring(co, -1));
    else if (lua_type(co, -1) == LUA_TNUMBER)
        t->error = xasprintf("%g", (double)lua_tonumber(co, -1));
    else
        t->error = xasprintf("(error object is a %s value)", luaL_typename(co, -1));
    struct traceback_args a = {t, NULL};
    if (protect(rt, traceback_protected, &a) == 0)
        t->traceback = a.tb;
    t->rc = TH_ERR;
    /* give the memory of a failed task back before anything else runs */
    task_drop_coroutine(t);
    if (status == LUA_ERRMEM)
        lua_gc(rt->L, LUA_GCCOLLECT);
    task_deliver(t);
}

/* Adds input.apply_error and queues the coder again; false when its
 * attempts are used up. */
static bool coder_retry(struct agent_task *t, const char *reason, const cJSON *edits)
{
    long retries = t->rt->cfg->agents_apply_retries;
    if (t->attempts > retries)
        return false;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "reason", reason);
    cJSON_AddNumberToObject(e, "attempt", t->attempts);
    cJSON_AddItemToObject(e, "edits", cJSON_Duplicate(edits, 1));
    cJSON_DeleteItemFromObjectCaseSensitive(t->input, "apply_error");
    cJSON_AddItemToObject(t->input, "apply_error", e);
    log_debug("agent %s: edits not applied (%s); asking again", t->def->name, reason);
    task_drop_coroutine(t);
    t->state = TASK_READY;
    ready_push(t);
    return true;
}

static void task_complete(struct agent_task *t, int nres)
{
    struct agent_runtime *rt = t->rt;
    lua_State *co = t->co;
    if (t->kind == TASK_FUNCTION) {
        t->rc = 0;
        t->nresults = nres;
        task_deliver(t);
        return;
    }
    const char *name = t->def->name;
    cJSON *out = NULL;
    int idx = lua_gettop(co) - nres + 1;
    if (nres == 0) {
        lua_pushnil(co);
        idx = lua_gettop(co);
    }
    if (agent_to_json(co, idx, "", &out) < 0) {
        task_fail_now(t, "agent '%s' returned something that is not data: %s", name,
                      error_message());
        return;
    }
    task_drop_coroutine(t);
    if (agent_role_check_output(t->def->role, t->input, out, rt->cfg) < 0) {
        cJSON_Delete(out);
        task_fail_now(t, "agent '%s' (%s) returned a wrong output: %s", name, t->def->role,
                      error_message());
        return;
    }
    const cJSON *dir = cJSON_GetObjectItemCaseSensitive(t->input, "dir");
    if (!strcmp(t->def->role, "coder") && cJSON_IsString(dir)) {
        cJSON *applied = NULL;
        const cJSON *edits = cJSON_GetObjectItemCaseSensitive(out, "edits");
        int rc = rt->ws_fd < 0 ? error_set("edits can only be applied inside a workspace")
                               : agent_edits_apply(rt->ws_fd, dir->valuestring, edits, &applied);
        if (rc < 0) {
            char *reason = xstrdup(error_message());
            bool again = coder_retry(t, reason, edits);
            cJSON_Delete(out);
            if (!again)
                task_fail_now(t, "the edits of agent '%s' could not be applied (%d attempt%s): %s",
                              name, t->attempts, t->attempts == 1 ? "" : "s", reason);
            free(reason);
            return;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(out, "applied");
        cJSON_AddItemToObject(out, "applied", applied);
    }
    t->rc = 0;
    t->output = out;
    task_deliver(t);
}

static void task_resume(struct agent_task *t, int nargs)
{
    struct agent_runtime *rt = t->rt;
    struct agent_task *prev = rt->current;
    long used = rt->slice_used;
    bool doomed = rt->doomed;
    rt->current = t;
    rt->slice_used = 0;
    rt->doomed = false;
    t->state = TASK_RUNNING;
    int nres = 0;
    double t0 = monotonic_seconds();
    int st = lua_resume(t->co, NULL, nargs, &nres);
    t->busy += monotonic_seconds() - t0;
    rt->current = prev;
    rt->slice_used = used;
    rt->doomed = doomed;
    if (st == LUA_YIELD) {
        if (t->state == TASK_WAITING)
            return;
        task_drop_coroutine(t);
        task_fail_now(t,
                      "agent '%s' called coroutine.yield() in its own code; yield only "
                      "inside coroutines it creates",
                      t->def->name);
        return;
    }
    if (st == LUA_OK)
        task_complete(t, nres);
    else
        task_error(t, st);
}

static void task_deliver(struct agent_task *t)
{
    wait_release(t);
    t->state = TASK_DONE;
    if (t->parent) {
        struct agent_task *parent = t->parent;
        struct agent_children *ch = parent->wait.data;
        parent->busy += t->busy;
        if (--ch->pending == 0)
            agent_wake(parent); /* may free t: nothing after this */
        return;
    }
    if (t->cb) {
        struct agent_result res = {
            .rc = t->rc,
            .output = t->output,
            .error = t->error,
            .traceback = t->traceback,
            .agent = t->def ? t->def->name : "?",
            .attempts = t->attempts,
            .seconds = monotonic_seconds() - t->started,
            .busy = t->busy,
        };
        /* what each call costs, for agent authors (-v) and benchmarks */
        log_debug("agent '%s' %s after %.3f ms, %.3f ms of it running", res.agent,
                  t->rc < 0 ? "failed" : "answered", 1000 * res.seconds, 1000 * res.busy);
        if (t->rc < 0)
            error_setc(t->rc, "%s", t->error);
        t->cb(t, &res, t->ud);
    }
    task_free(t);
}

/* ---- waiting -------------------------------------------------------------- */

struct agent_task *agent_check_current(lua_State *L, const char *what)
{
    struct agent_task *t = agent_task_of(L);
    struct agent_runtime *rt = agent_runtime_of(L);
    if (!t || t != rt->current || t->state != TASK_RUNNING) {
        agent_raise(L,
                    "%s can only wait in an agent's own code: not inside a coroutine the agent "
                    "created (use thalamus.agents.parallel to run things at once), nor while a "
                    "file loads",
                    what);
        return NULL;
    }
    if (!lua_isyieldable(L)) {
        agent_raise(L,
                    "%s cannot wait here: inside a metamethod or a function that Lua calls from C "
                    "(table.sort, string.gsub...)",
                    what);
        return NULL;
    }
    return t;
}

void agent_wait_set(struct agent_task *t, void (*release)(struct agent_task *, void *), void *data)
{
    wait_release(t);
    ready_remove(t); /* a wake-up still queued belonged to the old wait */
    t->wait.release = release;
    t->wait.data = data;
    t->wait.ready = false;
}

int agent_yield(lua_State *L, struct agent_task *t, lua_KFunction k, lua_KContext kctx)
{
    t->state = TASK_WAITING;
    return lua_yieldk(L, 0, kctx, k);
}

int agent_wait(lua_State *L, struct agent_task *t, void (*release)(struct agent_task *, void *),
               void *data, lua_KFunction k, lua_KContext kctx)
{
    agent_wait_set(t, release, data);
    return agent_yield(L, t, k, kctx);
}

void agent_wake(struct agent_task *t)
{
    t->wait.ready = true;
    ready_remove(t);
    if (t->state == TASK_WAITING)
        task_resume(t, 0);
}

void agent_wake_later(struct agent_task *t, bool done)
{
    if (done)
        t->wait.ready = true;
    ready_push(t);
}

void agent_wait_clear(struct agent_task *t)
{
    wait_release(t);
}

/* ---- children (agents.call / parallel) ---------------------------------- */

struct agent_task *agent_spawn_child(lua_State *L, struct agent_task *parent, const char *name,
                                     const cJSON *input, int fn)
{
    struct agent_runtime *rt = parent->rt;
    if (parent->depth + 1 > AGENT_MAX_DEPTH) {
        agent_raise(L, "agents call each other more than %d levels deep", AGENT_MAX_DEPTH);
        return NULL;
    }
    struct agent_def *def = parent->def;
    if (name) {
        def = agent_def_get(rt, L, name);
        if (!def) {
            lua_pushstring(L, error_message());
            lua_error(L);
            return NULL;
        }
        if (agent_role_check_input(def->role, input) < 0) {
            agent_raise(L, "agent '%s' (%s): %s", name, def->role, error_message());
            return NULL;
        }
    }
    int fn_ref = LUA_NOREF;
    if (!name) {
        lua_pushvalue(L, fn);
        fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    struct agent_task *t = task_new(rt, name ? TASK_AGENT : TASK_FUNCTION, def);
    t->fn_ref = fn_ref;
    if (name)
        t->input =
            input && cJSON_IsObject(input) ? cJSON_Duplicate(input, 1) : cJSON_CreateObject();
    t->run = parent->run ? xstrdup(parent->run) : NULL;
    t->node = parent->node ? xstrdup(parent->node) : NULL;
    t->depth = parent->depth + 1;
    t->parent = parent;
    ready_push(t);
    return t;
}

/* ---- the runtime ------------------------------------------------------- */

int agent_runtime_new(struct agent_runtime **out, const struct agent_runtime_options *o)
{
    *out = NULL;
    if (!o->loop || !o->cfg)
        return error_setc(TH_EUSAGE, "an agent runtime needs a loop and a configuration");
    if (o->strategy && strcmp(o->strategy, "llm") && strcmp(o->strategy, "offline"))
        return error_setc(TH_EUSAGE, "the strategy must be 'llm' or 'offline', not '%s'",
                          o->strategy);
    struct agent_runtime *rt = xcalloc(1, sizeof *rt);
    rt->loop = o->loop;
    rt->cfg = o->cfg;
    rt->llm = o->llm;
    rt->memory = o->memory;
    rt->ws_fd = -1;
    rt->cpu_slice = o->cpu_slice > 0 ? o->cpu_slice : o->cfg->agents_cpu_slice;
    rt->hook_step = rt->cpu_slice < AGENT_HOOK_STEP ? (int)rt->cpu_slice : AGENT_HOOK_STEP;
    rt->mem_limit = o->memory_limit ? o->memory_limit : (size_t)o->cfg->agents_memory_mb << 20;
    if (o->strategy)
        rt->strategy = xstrdup(o->strategy);
    else
        rt->strategy =
            xstrdup(o->llm && strcmp(o->cfg->llm_provider, "offline") ? "llm" : "offline");
    int rc = 0;
    if (o->data_dir)
        rt->data_dir = xstrdup(o->data_dir);
    else if ((rc = fs_data_dir(&rt->data_dir)) < 0)
        goto fail;
    rt->builtin_dir = fs_join(rt->data_dir, "agents");
    if (o->workspace) {
        rt->workspace = xstrdup(o->workspace);
        rt->ws_agents_dir = fs_join(o->workspace, "agents");
        rt->ws_fd = open(o->workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rt->ws_fd < 0) {
            rc = error_set("cannot open the workspace '%s': %s", o->workspace, strerror(errno));
            goto fail;
        }
    }
    rt->reserve = true;
    rt->L = lua_newstate(rt_alloc, rt);
    if (!rt->L) {
        rc = error_set("cannot create a Lua state");
        goto fail;
    }
    *(struct agent_task **)lua_getextraspace(rt->L) = NULL;
    lua_sethook(rt->L, hook, LUA_MASKCOUNT, rt->hook_step);
    if ((rc = protect(rt, init_state_protected, NULL)) < 0) {
        error_prefix("cannot set up the agents' Lua state");
        goto fail;
    }
    rt->reserve = false;
    *out = rt;
    return 0;
fail:
    agent_runtime_free(rt);
    return rc;
}

void agent_runtime_free(struct agent_runtime *rt)
{
    if (!rt)
        return;
    rt->closing = true;
    for (;;) {
        struct agent_task *t = rt->tasks;
        while (t && t->parent)
            t = t->next;
        if (!t)
            break;
        agent_task_cancel(t);
    }
    if (rt->ready_timer)
        loop_timer_cancel(rt->ready_timer);
    http_client_free(rt->http);
    while (rt->defs) {
        struct agent_def *d = rt->defs;
        rt->defs = d->next;
        def_free(rt, d);
    }
    if (rt->L)
        lua_close(rt->L);
    if (rt->ws_fd >= 0)
        close(rt->ws_fd);
    free(rt->workspace);
    free(rt->data_dir);
    free(rt->builtin_dir);
    free(rt->ws_agents_dir);
    free(rt->strategy);
    free(rt);
}

const char *agent_runtime_strategy(const struct agent_runtime *rt)
{
    return rt->strategy;
}

int agent_pending(const struct agent_runtime *rt)
{
    return rt->ntasks;
}

size_t agent_memory_used(const struct agent_runtime *rt)
{
    return rt->mem_used;
}

size_t agent_collect(struct agent_runtime *rt)
{
    lua_gc(rt->L, LUA_GCCOLLECT);
    return rt->mem_used;
}

struct get_args {
    struct agent_runtime *rt;
    const char *name;
    struct agent_def *def;
};

static int get_protected(lua_State *L)
{
    struct get_args *a = lua_touserdata(L, 1);
    a->def = agent_def_get(a->rt, L, a->name);
    return 0;
}

/* Loads agent name from C; NULL with the error recorded. */
static struct agent_def *def_get_c(struct agent_runtime *rt, const char *name)
{
    struct get_args a = {rt, name, NULL};
    int rc = protect(rt, get_protected, &a);
    if (rc < 0) {
        struct agent_def *d = def_find(rt, name);
        if (d && !d->error)
            def_fail(d, "%s", error_message());
        return NULL;
    }
    return a.def;
}

int agent_start(struct agent_runtime *rt, const char *name, const cJSON *input,
                const struct agent_call_options *o, agent_done_cb cb, void *ud,
                struct agent_task **out)
{
    if (out)
        *out = NULL;
    if (input && !cJSON_IsObject(input))
        return error_setc(TH_EUSAGE, "the input of an agent must be a JSON object");
    struct agent_def *def = def_get_c(rt, name);
    if (!def)
        return error_code() ? error_code() : TH_ERR;
    cJSON *in = input ? cJSON_Duplicate(input, 1) : cJSON_CreateObject();
    if (agent_role_check_input(def->role, in) < 0) {
        cJSON_Delete(in);
        return error_prefix("agent '%s' (%s)", name, def->role);
    }
    struct agent_task *t = task_new(rt, TASK_AGENT, def);
    t->started = monotonic_seconds();
    t->input = in;
    t->run = o && o->run ? xstrdup(o->run) : NULL;
    t->node = o && o->node ? xstrdup(o->node) : NULL;
    t->cb = cb;
    t->ud = ud;
    ready_push(t);
    if (out)
        *out = t;
    return 0;
}

void agent_cancel(struct agent_task *task)
{
    if (task)
        agent_task_cancel(task);
}

/* ---- listing ----------------------------------------------------------- */

static void collect_names(const char *dir, char ***names, size_t *n, size_t *cap)
{
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua"))
            continue;
        char *name = xstrndup(e->d_name, len - 4);
        error_clear();
        bool dup = agent_check_name(name) < 0;
        for (size_t i = 0; !dup && i < *n; i++)
            dup = !strcmp((*names)[i], name);
        if (dup) {
            free(name);
            continue;
        }
        if (*n == *cap)
            *names = xreallocarray(*names, *cap = *cap ? *cap * 2 : 16, sizeof **names);
        (*names)[(*n)++] = name;
    }
    closedir(d);
    error_clear();
}

static int compare_infos(const void *a, const void *b)
{
    return strcmp(((const struct agent_info *)a)->name, ((const struct agent_info *)b)->name);
}

static char *stages_of(struct agent_runtime *rt, const char *name)
{
    struct buf b;
    buf_init(&b, 0);
    for (const char *const *s = agent_stages; *s; s++) {
        bool in = !strcmp(agent_stage_builtin(*s), name);
        size_t sl = strlen(*s);
        for (char **e = rt->cfg->agents_extra; !in && e && *e; e++)
            in = !strncmp(*e, *s, sl) && (*e)[sl] == ':' && !strcmp(*e + sl + 1, name);
        if (in)
            buf_printf(&b, "%s%s", b.len ? "," : "", *s);
    }
    return buf_detach(&b, NULL);
}

int agent_list(struct agent_runtime *rt, struct agent_info **out, size_t *n)
{
    char **names = NULL;
    size_t count = 0, cap = 0;
    collect_names(rt->ws_agents_dir, &names, &count, &cap);
    collect_names(rt->builtin_dir, &names, &count, &cap);
    for (struct agent_def *d = rt->defs; d; d = d->next) {
        bool dup = false;
        for (size_t i = 0; !dup && i < count; i++)
            dup = !strcmp(names[i], d->name);
        if (!dup) {
            if (count == cap)
                names = xreallocarray(names, cap = cap ? cap * 2 : 16, sizeof *names);
            names[count++] = xstrdup(d->name);
        }
    }
    struct agent_info *list = xcalloc(count ? count : 1, sizeof *list);
    for (size_t i = 0; i < count; i++) {
        struct agent_info *info = &list[i];
        struct agent_def *d = def_get_c(rt, names[i]);
        if (!d)
            d = def_find(rt, names[i]);
        info->name = names[i];
        if (d && !d->error && d->role) {
            info->role = xstrdup(d->role);
            info->description = xstrdup(d->description);
            info->strategy = xstrdup(d->strategy);
        } else {
            info->description = xstrdup("");
            info->strategy = xstrdup(rt->strategy);
            info->error = xstrdup(d && d->error ? d->error : error_message());
        }
        info->source = xstrdup(d && d->source ? d->source : "?");
        info->stages = stages_of(rt, names[i]);
    }
    free(names);
    error_clear();
    qsort(list, count, sizeof *list, compare_infos);
    *out = list;
    *n = count;
    return 0;
}

void agent_infos_free(struct agent_info *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].role);
        free(list[i].description);
        free(list[i].source);
        free(list[i].strategy);
        free(list[i].stages);
        free(list[i].error);
    }
    free(list);
}

int agent_stage_agents(struct agent_runtime *rt, const char *stage, const char ***out)
{
    *out = NULL;
    const char *role = agent_stage_role(stage);
    if (!role)
        return error_setc(TH_EUSAGE,
                          "unknown stage '%s'; the stages are retrieve, ideate, review, "
                          "implement and analyse",
                          stage);
    size_t n = 0, sl = strlen(stage);
    for (char **e = rt->cfg->agents_extra; e && *e; e++)
        n++;
    const char **list = xcalloc(n + 2, sizeof *list);
    size_t k = 0;
    list[k++] = agent_stage_builtin(stage);
    for (char **e = rt->cfg->agents_extra; e && *e; e++) {
        if (strncmp(*e, stage, sl) || (*e)[sl] != ':')
            continue;
        const char *name = *e + sl + 1;
        struct agent_def *d = def_get_c(rt, name);
        if (!d) {
            int rc = error_prefix("agents.extra.%s", stage);
            free(list);
            return rc;
        }
        if (strcmp(d->role, role)) {
            free(list);
            return error_setc(TH_ECONFIG,
                              "agents.extra.%s names '%s', a %s; the %s stage takes %ss", stage,
                              name, d->role, stage, role);
        }
        list[k++] = name;
    }
    *out = list;
    return 0;
}

/* ---- agent new ----------------------------------------------------------- */

int agent_new_file(const char *workspace, const char *name, const char *role, char **path)
{
    *path = NULL;
    int rc = agent_check_name(name);
    if (rc < 0)
        return rc;
    if (!agent_role_known(role))
        return error_setc(TH_EUSAGE,
                          "unknown role '%s'; use planner, retriever, coder, critic or tool", role);
    char *data = NULL, *skeleton = NULL, *dir = NULL, *target = NULL;
    struct buf src, out;
    buf_init(&src, AGENT_MAX_FILE);
    buf_init(&out, AGENT_MAX_FILE);
    if ((rc = fs_data_dir(&data)) < 0)
        goto cleanup;
    char *rel = xasprintf("agents/skeleton/%s.lua", role);
    skeleton = fs_join(data, rel);
    free(rel);
    if ((rc = buf_read_file(&src, skeleton)) < 0)
        goto cleanup;
    for (const char *p = buf_str(&src); *p;) {
        const char *at = strstr(p, "{{name}}");
        if (!at) {
            buf_puts(&out, p);
            break;
        }
        buf_append(&out, p, (size_t)(at - p));
        buf_puts(&out, name);
        p = at + 8;
    }
    dir = fs_join(workspace, "agents");
    if ((rc = fs_mkdir_p(dir, 0777)) < 0)
        goto cleanup;
    char *base = xasprintf("%s.lua", name);
    target = fs_join(dir, base);
    free(base);
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc =
            errno == EEXIST
                ? error_setc(TH_EEXISTS, "'%s' exists already; edit it, or remove it first", target)
                : error_set("cannot create '%s': %s", target, strerror(errno));
        goto cleanup;
    }
    size_t off = 0;
    while (off < out.len) {
        ssize_t w = write(fd, out.data + off, out.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = error_set("cannot write '%s': %s", target, strerror(errno));
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0 && rc == 0)
        rc = error_set("cannot write '%s': %s", target, strerror(errno));
    if (rc == 0) {
        *path = target;
        target = NULL;
    }
cleanup:
    free(data);
    free(skeleton);
    free(dir);
    free(target);
    buf_free(&src);
    buf_free(&out);
    return rc;
}
