/*
 * lua_workspace: the thalamus.workspace module: read(path), exists(path)
 * and list(dir, {recursive}) of the workspace's files, task() (the task's
 * keys and TASK.md) and config() (the configuration's values), and the
 * workspace's path. Every path is relative to the workspace and confined to
 * it (confine.h): '..', absolute paths and symbolic links that lead outside
 * are refused. Reading is all an agent can do here; its changes reach the
 * experiment as a coder's checked edits. Depends on agent_internal, confine,
 * config, fsutil, buf, alloc and error.
 */
#define _GNU_SOURCE /* O_PATH */
#include "agent_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "confine.h"
#include "error.h"

#define MAX_LIST 10000

static int workspace_fd(lua_State *L, const char *fn)
{
    struct agent_runtime *rt = agent_runtime_of(L);
    if (rt->ws_fd < 0)
        agent_raise(L, "thalamus.workspace.%s: not in a workspace", fn);
    return rt->ws_fd;
}

static void free_text(void *p, size_t n)
{
    (void)n;
    free(p);
}

/* workspace.read(path) -> text, or nil and the reason */
static int ws_read(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = workspace_fd(L, "read");
    struct buf b;
    buf_init(&b, AGENT_MAX_FILE);
    if (confine_read(fd, path, &b) < 0) {
        buf_free(&b);
        lua_pushnil(L);
        lua_pushstring(L, error_message());
        return 2;
    }
    size_t len = b.len;
    char *text = buf_detach(&b, NULL);
    agent_box(L, text, 0, free_text);
    lua_pushlstring(L, text, len);
    agent_unbox_free(L, -2);
    return 1;
}

/* workspace.exists(path) -> boolean */
static int ws_exists(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int fd = workspace_fd(L, "exists"), f;
    if (confine_open(fd, path, O_PATH, 0, &f) < 0) {
        error_clear();
        lua_pushboolean(L, 0);
        return 1;
    }
    close(f);
    lua_pushboolean(L, 1);
    return 1;
}

struct names {
    char **v;
    size_t n, cap;
};

static void names_free(void *p, size_t n)
{
    (void)n;
    struct names *list = p;
    for (size_t i = 0; i < list->n; i++)
        free(list->v[i]);
    free(list->v);
    free(list);
}

static bool skipped(const char *name)
{
    return !strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, ".git") ||
           !strcmp(name, ".thalamus") || !strcmp(name, "__pycache__");
}

static int walk(int dirfd, const char *prefix, bool recursive, struct names *out)
{
    int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
    if (!d) {
        if (dup >= 0)
            close(dup);
        return error_set("cannot list '%s': %s", *prefix ? prefix : ".", strerror(errno));
    }
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (skipped(e->d_name))
            continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        bool dir = S_ISDIR(st.st_mode);
        char *rel = *prefix ? xasprintf("%s/%s", prefix, e->d_name) : xstrdup(e->d_name);
        if (dir && recursive) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                rc = walk(sub, rel, true, out);
                close(sub);
            }
            free(rel);
            continue;
        }
        if (out->n >= MAX_LIST) {
            free(rel);
            rc = error_set("more than %d entries; list a smaller directory", MAX_LIST);
            break;
        }
        if (out->n == out->cap)
            out->v = xreallocarray(out->v, out->cap = out->cap ? out->cap * 2 : 64, sizeof *out->v);
        out->v[out->n++] = dir ? xasprintf("%s/", rel) : xstrdup(rel);
        free(rel);
    }
    closedir(d);
    return rc;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* workspace.list([dir [, {recursive = true}]]) -> sorted names relative to dir
 * (directories end with '/' unless recursive, which lists files only), or nil
 * and the reason */
static int ws_list(lua_State *L)
{
    const char *dir = luaL_optstring(L, 1, "");
    bool recursive = false;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "recursive");
        recursive = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (!strcmp(dir, "."))
        dir = "";
    int fd = workspace_fd(L, "list"), dfd;
    if (confine_open_dir(fd, dir, false, &dfd) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, error_message());
        return 2;
    }
    struct names *list = xcalloc(1, sizeof *list);
    int rc = walk(dfd, "", recursive, list);
    close(dfd);
    if (rc < 0) {
        names_free(list, 0);
        lua_pushnil(L);
        lua_pushstring(L, error_message());
        return 2;
    }
    qsort(list->v, list->n, sizeof *list->v, compare_names);
    agent_box(L, list, 0, names_free);
    lua_createtable(L, (int)list->n, 0);
    for (size_t i = 0; i < list->n; i++) {
        lua_pushstring(L, list->v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    agent_unbox_free(L, -2);
    return 1;
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

void agent_push_config(lua_State *L, struct agent_runtime *rt)
{
    cJSON *j = config_to_json(rt->cfg);
    agent_box(L, j, 0, free_cjson);
    agent_push_json(L, cJSON_GetObjectItemCaseSensitive(j, "values"), true);
    agent_unbox_free(L, -2);
    lua_remove(L, -2);
}

void agent_push_task(lua_State *L, struct agent_runtime *rt)
{
    cJSON *j = config_to_json(rt->cfg);
    agent_box(L, j, 0, free_cjson);
    const cJSON *values = cJSON_GetObjectItemCaseSensitive(j, "values");
    agent_push_json(L, cJSON_GetObjectItemCaseSensitive(values, "task"), true);
    agent_unbox_free(L, -2);
    lua_remove(L, -2);
    if (rt->ws_fd >= 0) {
        struct buf b;
        buf_init(&b, AGENT_MAX_FILE);
        if (confine_read(rt->ws_fd, "TASK.md", &b) == 0) {
            size_t len = b.len;
            char *text = buf_detach(&b, NULL);
            agent_box(L, text, 0, free_text);
            lua_pushlstring(L, text, len);
            lua_setfield(L, -3, "description");
            agent_unbox_free(L, -1);
            lua_pop(L, 1);
        } else {
            buf_free(&b);
            error_clear();
        }
    }
}

/* workspace.task() -> { name, metric, goal, params_file, command, search_space,
 * description } */
static int ws_task(lua_State *L)
{
    agent_push_task(L, agent_runtime_of(L));
    return 1;
}

/* workspace.config() -> the configuration's values, by section */
static int ws_config(lua_State *L)
{
    agent_push_config(L, agent_runtime_of(L));
    return 1;
}

int luaopen_thalamus_workspace(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"read", ws_read}, {"exists", ws_exists}, {"list", ws_list},
        {"task", ws_task}, {"config", ws_config}, {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    struct agent_runtime *rt = agent_runtime_of(L);
    if (rt->workspace) {
        lua_pushstring(L, rt->workspace);
        lua_setfield(L, -2, "path");
    }
    return 1;
}
