/*
 * lua_sandbox: the thalamus.sandbox module. run{argv, dir, timeout,
 * memory_mb, cpu_seconds, pids, disk_mb, network, require_results} runs a
 * program in the sandbox (sandbox.h) with the workspace's sandbox.* limits
 * unless overridden, and returns its result record as a table (status, exit
 * code, wall and CPU time, output, results.json, traceback...). argv
 * defaults to task.command; dir is a directory of the workspace that the
 * program sees as /work and that mirrors /work afterwards (without dir,
 * /work is empty and discarded). The agent waits without blocking the
 * loop; if the agent ends or is cancelled first, the run is cancelled.
 * Depends on agent_internal, sandbox, confine, config, fsutil, alloc and
 * error.
 */
#include "agent_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "confine.h"
#include "error.h"
#include "fsutil.h"
#include "sandbox.h"

#define MAX_ARGS 256

struct sandbox_wait {
    struct agent_task *t;
    struct sandbox *sb; /* NULL once finished */
    struct sandbox_result *result;
};

static void sandbox_release(struct agent_task *t, void *data)
{
    (void)t;
    struct sandbox_wait *w = data;
    if (w->sb) {
        /* the run ends later and reports to a callback with no task: orphan it */
        sandbox_cancel(w->sb);
        w->t = NULL;
        return; /* on_done frees w */
    }
    sandbox_result_free(w->result);
    free(w);
}

static void on_done(struct sandbox *sb, struct sandbox_result *result, void *ud)
{
    (void)sb;
    struct sandbox_wait *w = ud;
    w->sb = NULL;
    if (!w->t) { /* its task is gone */
        sandbox_result_free(result);
        free(w);
        return;
    }
    w->result = result;
    agent_wake(w->t);
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

static int run_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct agent_task *t = agent_task_of(L);
    struct sandbox_wait *w = t->wait.data;
    cJSON *j = sandbox_result_to_json(w->result);
    agent_box(L, j, 0, free_cjson);
    agent_push_json(L, j, true);
    agent_unbox_free(L, -2);
    agent_wait_clear(t);
    return 1;
}

static long opt_long(lua_State *L, const char *field, long def, long min)
{
    lua_getfield(L, 1, field);
    long v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < min ||
            lua_tointeger(L, -1) > INT_MAX / 1000)
            agent_raise(L, "thalamus.sandbox.run: '%s' must be an integer from %ld", field, min);
        v = (long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static void free_strv(void *p, size_t n)
{
    (void)n;
    char **v = p;
    for (char **s = v; s && *s; s++)
        free(*s);
    free(v);
}

/* sandbox.run{...} -> result */
static int lua_run(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct agent_task *t = agent_check_current(L, "thalamus.sandbox.run");
    struct agent_runtime *rt = t->rt;
    const struct config *cfg = rt->cfg;
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    sandbox_limits_default(&spec.limits);

    /* argv */
    const char **argv = lua_newuserdatauv(L, (MAX_ARGS + 1) * sizeof *argv, 0); /* 2 */
    lua_getfield(L, 1, "argv");                                                 /* 3 */
    if (lua_isnil(L, -1)) {
        if (!cfg->task_command)
            return agent_raise(L, "thalamus.sandbox.run: no argv, and task.command is not set");
        size_t i = 0;
        for (char **a = cfg->task_command; *a && i < MAX_ARGS; a++)
            argv[i++] = *a;
        argv[i] = NULL;
    } else {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (n < 1 || n > MAX_ARGS)
            return agent_raise(L, "thalamus.sandbox.run: argv must have 1 to %d strings", MAX_ARGS);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 3, i);
            if (lua_type(L, -1) != LUA_TSTRING)
                return agent_raise(L, "thalamus.sandbox.run: argv[%d] must be a string", (int)i);
            argv[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
        argv[n] = NULL;
    }
    spec.argv = (char *const *)argv;

    /* dir, confined to the workspace */
    lua_getfield(L, 1, "dir"); /* 4 */
    char *dir = NULL;
    if (!lua_isnil(L, -1)) {
        const char *rel = luaL_checkstring(L, -1);
        if (rt->ws_fd < 0)
            return agent_raise(L, "thalamus.sandbox.run: 'dir' needs a workspace");
        int dfd;
        if (confine_open_dir(rt->ws_fd, rel, false, &dfd) < 0)
            return agent_raise(L, "thalamus.sandbox.run: %s", error_message());
        close(dfd);
        char *joined = fs_join(rt->workspace, rel);
        char real[PATH_MAX], realws[PATH_MAX];
        bool inside = realpath(joined, real) && realpath(rt->workspace, realws) &&
                      !strncmp(real, realws, strlen(realws)) &&
                      (real[strlen(realws)] == '/' || real[strlen(realws)] == '\0');
        free(joined);
        if (!inside)
            return agent_raise(L, "thalamus.sandbox.run: '%s' is not inside the workspace", rel);
        dir = xstrdup(real);
    }
    char **binds = NULL;
    {
        size_t n = 0;
        for (char **b = cfg->sandbox_binds; b && *b; b++)
            n++;
        binds = xcalloc(n + 1, sizeof *binds);
        for (size_t i = 0; i < n; i++) {
            const char *b = cfg->sandbox_binds[i];
            binds[i] = b[0] == '/' || !rt->workspace ? xstrdup(b) : fs_join(rt->workspace, b);
        }
    }
    agent_box(L, binds, 0, free_strv); /* 5 */
    char **dirbox = xcalloc(2, sizeof *dirbox);
    dirbox[0] = dir;
    agent_box(L, dirbox, 0, free_strv); /* 6 */
    spec.work_dir = dir;
    spec.binds = binds;
    spec.env = cfg->sandbox_env;
    spec.isolation =
        !strcmp(cfg->sandbox_isolation, "none") ? SANDBOX_ISOLATION_NONE : SANDBOX_ISOLATION_FULL;
    lua_getfield(L, 1, "network");
    spec.network = lua_isnil(L, -1) ? cfg->sandbox_network : lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "require_results");
    spec.results_required = lua_toboolean(L, -1);
    lua_pop(L, 1);
    spec.limits.timeout_ms = (uint64_t)opt_long(L, "timeout", cfg->sandbox_timeout, 1) * 1000;
    spec.limits.memory_mb = opt_long(L, "memory_mb", cfg->sandbox_memory_mb, 1);
    spec.limits.cpu_seconds = opt_long(L, "cpu_seconds", cfg->sandbox_cpu_seconds, 0);
    spec.limits.pids = opt_long(L, "pids", cfg->sandbox_pids, 1);
    spec.limits.disk_mb = opt_long(L, "disk_mb", cfg->sandbox_disk_mb, 1);

    struct sandbox_wait *w = xcalloc(1, sizeof *w);
    w->t = t;
    if (sandbox_spawn(rt->loop, &spec, on_done, w, &w->sb) < 0) {
        free(w);
        return agent_raise(L, "thalamus.sandbox.run: %s", error_message());
    }
    agent_unbox_free(L, 5);
    agent_unbox_free(L, 6);
    lua_settop(L, 1);
    return agent_wait(L, t, sandbox_release, w, run_k, 0);
}

int luaopen_thalamus_sandbox(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"run", lua_run},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
