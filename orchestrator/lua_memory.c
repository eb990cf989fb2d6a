/*
 * lua_memory: the thalamus.memory module, bound to the workspace's memory
 * (memory.h). recall(query, {k, kind}) ranks items for a query;
 * remember{kind, text, title, tags, source, metadata, importance} adds an
 * item; link(a, b, type, weight) links two items; record{kind, text,
 * payload, importance} appends an episode tied to the calling agent, its
 * run and node; episodes{run, node, kind, agent, limit} reads the timeline
 * back (payloads decoded); similar(text, {kind, threshold, max}) finds near
 * duplicates. These calls are short SQLite work on the loop's thread and do
 * not yield. Outside a workspace there is no memory: available() is false
 * and the other calls raise an error. Depends on agent_internal, memory,
 * config, alloc and error.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "memory.h"

static struct memory *mem(lua_State *L, const char *fn)
{
    struct agent_runtime *rt = agent_runtime_of(L);
    if (!rt->memory)
        agent_raise(L,
                    "thalamus.memory.%s: no memory here (the memory lives in a workspace's "
                    "database)",
                    fn);
    return rt->memory;
}

static const char *field_string(lua_State *L, int idx, const char *field, bool required,
                                const char *fn)
{
    lua_getfield(L, idx, field);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1) || required)
        agent_raise(L, "thalamus.memory.%s: '%s' must be a string%s", fn, field,
                    required ? " (it is required)" : "");
    lua_pop(L, 1); /* the argument table holds the string */
    return s;
}

static double field_importance(lua_State *L, int idx, const char *fn)
{
    lua_getfield(L, idx, "importance");
    double v = 0.5;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= 0) ||
            lua_tonumber(L, -1) > 1)
            agent_raise(L, "thalamus.memory.%s: 'importance' must be a number from 0 to 1", fn);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static void free_plain(void *p, size_t n)
{
    (void)n;
    free(p);
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

/* Encodes field of the table at idx as JSON text (boxed on the stack), or
 * NULL when absent. */
static char *field_json(lua_State *L, int idx, const char *field, const char *fn)
{
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    cJSON *j = NULL;
    if (agent_to_json(L, -1, field, &j) < 0)
        agent_raise(L, "thalamus.memory.%s: %s", fn, error_message());
    lua_pop(L, 1);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    agent_box(L, s, 0, free_plain);
    return s;
}

/* Pushes JSON text as a value (the text itself when it does not parse). */
static void push_json_text(lua_State *L, const char *text)
{
    if (!text) {
        lua_pushnil(L);
        return;
    }
    cJSON *j = cJSON_Parse(text);
    if (!j) {
        lua_pushstring(L, text);
        return;
    }
    agent_box(L, j, 0, free_cjson);
    agent_push_json(L, j, true);
    agent_unbox_free(L, -2);
    lua_remove(L, -2);
}

static void set_string(lua_State *L, const char *field, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, field);
    }
}

static void set_number(lua_State *L, const char *field, double v)
{
    if (!isnan(v)) {
        lua_pushnumber(L, v);
        lua_setfield(L, -2, field);
    }
}

static void push_item(lua_State *L, const struct memory_item *it)
{
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, it->id);
    lua_setfield(L, -2, "id");
    set_string(L, "uid", it->uid);
    set_string(L, "kind", it->kind);
    set_string(L, "title", it->title);
    set_string(L, "text", it->text);
    set_string(L, "tags", it->tags);
    set_string(L, "source", it->source);
    push_json_text(L, it->metadata);
    lua_setfield(L, -2, "metadata");
    set_number(L, "importance", it->importance);
    lua_pushinteger(L, it->created_ms);
    lua_setfield(L, -2, "created_ms");
    lua_pushinteger(L, it->access_count);
    lua_setfield(L, -2, "access_count");
}

static void hits_free(void *p, size_t n)
{
    memory_hits_free(p, n);
}

/* memory.recall(query [, {k = 10, kind = "paper", no_touch = false}]) -> hits */
static int lua_recall(lua_State *L)
{
    const char *query = luaL_checkstring(L, 1);
    struct memory *m = mem(L, "recall");
    struct memory_recall_options o = {.query = query, .k = 10};
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "k");
        if (!lua_isnil(L, -1)) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
                lua_tointeger(L, -1) > MEMORY_MAX_K)
                return agent_raise(L, "thalamus.memory.recall: k must be an integer from 1 to %d",
                                   MEMORY_MAX_K);
            o.k = (int)lua_tointeger(L, -1);
        }
        lua_pop(L, 1);
        o.kind = field_string(L, 2, "kind", false, "recall");
        lua_getfield(L, 2, "no_touch");
        o.no_touch = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    struct memory_hit *hits = NULL;
    size_t n = 0;
    if (memory_recall(m, &o, &hits, &n) < 0)
        return agent_raise(L, "thalamus.memory.recall: %s", error_message());
    agent_box(L, hits, n, hits_free);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const struct memory_hit *h = &hits[i];
        push_item(L, &h->item);
        set_number(L, "score", h->score);
        set_number(L, "relevance", h->relevance);
        set_number(L, "recency", h->recency);
        set_number(L, "activation", h->activation);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    agent_unbox_free(L, -2);
    return 1;
}

/* memory.remember{kind, text, title, tags, source, metadata, importance, uid} -> id */
static int lua_remember(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct memory *m = mem(L, "remember");
    struct memory_item it;
    memory_item_init(&it);
    it.kind = (char *)field_string(L, 1, "kind", true, "remember");
    it.text = (char *)field_string(L, 1, "text", true, "remember");
    it.title = (char *)field_string(L, 1, "title", false, "remember");
    it.tags = (char *)field_string(L, 1, "tags", false, "remember");
    it.source = (char *)field_string(L, 1, "source", false, "remember");
    it.uid = (char *)field_string(L, 1, "uid", false, "remember");
    it.importance = field_importance(L, 1, "remember");
    it.metadata = field_json(L, 1, "metadata", "remember");
    int64_t id = 0;
    if (memory_item_add(m, &it, &id, NULL) < 0)
        return agent_raise(L, "thalamus.memory.remember: %s", error_message());
    lua_pushinteger(L, id);
    return 1;
}

/* memory.link(src, dst, type [, weight]) */
static int lua_link(lua_State *L)
{
    lua_Integer src = luaL_checkinteger(L, 1), dst = luaL_checkinteger(L, 2);
    const char *type = luaL_checkstring(L, 3);
    double weight = luaL_optnumber(L, 4, 1.0);
    struct memory *m = mem(L, "link");
    if (memory_link_set(m, src, dst, type, weight) < 0)
        return agent_raise(L, "thalamus.memory.link: %s", error_message());
    return 0;
}

/* memory.record{kind, text, payload, importance, run, node} -> id */
static int lua_record(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct memory *m = mem(L, "record");
    struct agent_task *t = agent_task_of(L);
    struct memory_episode ep;
    memset(&ep, 0, sizeof ep);
    ep.kind = (char *)field_string(L, 1, "kind", true, "record");
    ep.text = (char *)field_string(L, 1, "text", true, "record");
    ep.run = (char *)field_string(L, 1, "run", false, "record");
    ep.node = (char *)field_string(L, 1, "node", false, "record");
    if (t) {
        ep.run = ep.run ? ep.run : t->run;
        ep.node = ep.node ? ep.node : t->node;
        ep.agent = t->def ? t->def->name : NULL;
    }
    ep.importance = field_importance(L, 1, "record");
    ep.payload = field_json(L, 1, "payload", "record");
    int64_t id = 0;
    if (memory_episode_add(m, &ep, &id) < 0)
        return agent_raise(L, "thalamus.memory.record: %s", error_message());
    lua_pushinteger(L, id);
    return 1;
}

static void episodes_free(void *p, size_t n)
{
    memory_episodes_free(p, n);
}

/* memory.episodes{run, node, kind, agent, since_ms, until_ms, limit} -> list,
 * oldest first */
static int lua_episodes(lua_State *L)
{
    struct memory *m = mem(L, "episodes");
    struct memory_episode_filter f;
    memset(&f, 0, sizeof f);
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        f.run = field_string(L, 1, "run", false, "episodes");
        f.node = field_string(L, 1, "node", false, "episodes");
        f.kind = field_string(L, 1, "kind", false, "episodes");
        f.agent = field_string(L, 1, "agent", false, "episodes");
        static const char *const nums[] = {"since_ms", "until_ms", "limit"};
        int64_t *slots[] = {&f.since_ms, &f.until_ms, NULL};
        for (int i = 0; i < 3; i++) {
            lua_getfield(L, 1, nums[i]);
            if (!lua_isnil(L, -1)) {
                if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
                    return agent_raise(L,
                                       "thalamus.memory.episodes: '%s' must be a "
                                       "non-negative integer",
                                       nums[i]);
                if (slots[i])
                    *slots[i] = lua_tointeger(L, -1);
                else
                    f.limit = (long)lua_tointeger(L, -1);
            }
            lua_pop(L, 1);
        }
    }
    struct memory_episode *list = NULL;
    size_t n = 0;
    if (memory_episodes(m, &f, &list, &n) < 0)
        return agent_raise(L, "thalamus.memory.episodes: %s", error_message());
    agent_box(L, list, n, episodes_free);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const struct memory_episode *e = &list[i];
        lua_createtable(L, 0, 10);
        lua_pushinteger(L, e->id);
        lua_setfield(L, -2, "id");
        set_string(L, "uid", e->uid);
        lua_pushinteger(L, e->time_ms);
        lua_setfield(L, -2, "time_ms");
        set_string(L, "run", e->run);
        set_string(L, "node", e->node);
        set_string(L, "agent", e->agent);
        set_string(L, "kind", e->kind);
        set_string(L, "text", e->text);
        push_json_text(L, e->payload);
        lua_setfield(L, -2, "payload");
        set_number(L, "importance", e->importance);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    agent_unbox_free(L, -2);
    return 1;
}

static void matches_free(void *p, size_t n)
{
    memory_matches_free(p, n);
}

/* memory.similar(text [, {kind, threshold, max}]) -> { {id, similarity, kind, title} } */
static int lua_similar(lua_State *L)
{
    const char *text = luaL_checkstring(L, 1);
    struct memory *m = mem(L, "similar");
    struct agent_runtime *rt = agent_runtime_of(L);
    const char *kind = NULL;
    double threshold = rt->cfg->memory_similar_threshold;
    lua_Integer max = 10;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        kind = field_string(L, 2, "kind", false, "similar");
        lua_getfield(L, 2, "threshold");
        if (!lua_isnil(L, -1))
            threshold = luaL_checknumber(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 2, "max");
        if (!lua_isnil(L, -1))
            max = luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        if (max < 1 || max > MEMORY_MAX_K)
            return agent_raise(L, "thalamus.memory.similar: max must be from 1 to %d",
                               MEMORY_MAX_K);
    }
    struct memory_match *list = NULL;
    size_t n = 0;
    if (memory_similar(m, text, kind, threshold, (size_t)max, &list, &n) < 0)
        return agent_raise(L, "thalamus.memory.similar: %s", error_message());
    agent_box(L, list, n, matches_free);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, list[i].id);
        lua_setfield(L, -2, "id");
        lua_pushnumber(L, list[i].similarity);
        lua_setfield(L, -2, "similarity");
        set_string(L, "kind", list[i].kind);
        set_string(L, "title", list[i].title);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    agent_unbox_free(L, -2);
    return 1;
}

/* memory.available() -> whether there is a memory */
static int lua_available(lua_State *L)
{
    lua_pushboolean(L, agent_runtime_of(L)->memory != NULL);
    return 1;
}

int luaopen_thalamus_memory(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"recall", lua_recall},       {"remember", lua_remember},
        {"link", lua_link},           {"record", lua_record},
        {"episodes", lua_episodes},   {"similar", lua_similar},
        {"available", lua_available}, {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
