/*
 * lua_log: the thalamus.log module (debug, info, warn, error) and the
 * agents' print(). Lines go to thalamus's diagnostics on stderr (log.h),
 * prefixed with the agent's name, because standard output carries command
 * results. With more than one argument the first is a string.format
 * pattern. Depends on agent_internal and log.
 */
#include "agent_internal.h"

#include "log.h"

static const char *prefix(lua_State *L)
{
    struct agent_task *t = agent_task_of(L);
    if (!t)
        return lua_pushliteral(L, "agents: ");
    return lua_pushfstring(L, "agent %s: ", t->def ? t->def->name : "?");
}

static int log_at(lua_State *L, enum log_level level)
{
    int n = lua_gettop(L);
    if (n == 0)
        return 0;
    if ((int)level > log_level())
        return 0;
    const char *msg;
    if (n > 1) {
        lua_pushvalue(L, lua_upvalueindex(1)); /* string.format */
        lua_insert(L, 1);
        lua_call(L, n, 1);
        msg = luaL_tolstring(L, -1, NULL);
    } else {
        msg = luaL_tolstring(L, 1, NULL);
    }
    const char *pre = prefix(L);
    log_write(level, "%s%s", pre, msg);
    return 0;
}

static int log_debug_fn(lua_State *L)
{
    return log_at(L, LOG_LEVEL_DEBUG);
}

static int log_info_fn(lua_State *L)
{
    return log_at(L, LOG_LEVEL_INFO);
}

static int log_warn_fn(lua_State *L)
{
    return log_at(L, LOG_LEVEL_WARN);
}

static int log_error_fn(lua_State *L)
{
    return log_at(L, LOG_LEVEL_ERROR);
}

int agent_lua_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
        (void)s;
        (void)len;
    }
    luaL_pushresult(&b);
    const char *msg = lua_tostring(L, -1);
    const char *pre = prefix(L);
    log_write(LOG_LEVEL_INFO, "%s%s", pre, msg);
    return 0;
}

int luaopen_thalamus_log(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"debug", log_debug_fn}, {"info", log_info_fn}, {"warn", log_warn_fn},
        {"error", log_error_fn}, {NULL, NULL},
    };
    luaL_newlibtable(L, funcs);
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    luaL_setfuncs(L, funcs, 1);
    return 1;
}
