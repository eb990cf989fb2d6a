/*
 * lua_json: the thalamus.json module (encode, decode, null, array) and the
 * conversions between Lua values and cJSON that the whole runtime uses for
 * agents' inputs and outputs (see agent_internal.h).
 *
 * Converting to JSON never allocates Lua memory and never runs metamethods,
 * so the runtime can call it from C outside a protected call, and a
 * malicious __index or __pairs cannot run code there. Object keys come out
 * sorted, unless the table was decoded with keep_order, whose key order is
 * kept (so that a parameter file rewritten by an agent diffs cleanly).
 * Depends on agent_internal, utf8, alloc, error and cJSON.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "utf8.h"

/* Registry keys (their addresses). */
static const char null_key = 0;  /* json.null itself: a light userdata of this address */
static const char array_key = 0; /* the metatable that marks arrays */
static const char order_key = 0; /* the string "__keyorder", anchored */
static const char box_key = 0;   /* the metatable of guard boxes */

#define NULL_VALUE ((void *)&null_key)

void agent_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, NULL_VALUE);
}

bool agent_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL_VALUE;
}

/* ---- guard boxes -------------------------------------------------------- */

struct box {
    void *p;
    size_t n;
    void (*fn)(void *p, size_t n);
};

static int box_gc(lua_State *L)
{
    struct box *b = lua_touserdata(L, 1);
    if (b && b->p) {
        void *p = b->p;
        b->p = NULL;
        b->fn(p, b->n);
    }
    return 0;
}

void agent_box(lua_State *L, void *p, size_t n, void (*fn)(void *p, size_t n))
{
    struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->p = NULL;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &box_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &box_key);
    }
    lua_setmetatable(L, -2);
    b->p = p;
    b->n = n;
    b->fn = fn;
}

void agent_unbox_free(lua_State *L, int idx)
{
    struct box *b = lua_touserdata(L, idx);
    if (b && b->p) {
        void *p = b->p;
        b->p = NULL;
        b->fn(p, b->n);
    }
}

/* ---- JSON to Lua -------------------------------------------------------- */

static void push_array_mt(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &array_key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_pushliteral(L, "json.array"); /* shared by every agent: not theirs to change */
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &array_key);
}

static void push_order_key(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &order_key) == LUA_TSTRING)
        return;
    lua_pop(L, 1);
    lua_pushliteral(L, "__keyorder");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &order_key);
}

static void push_number(lua_State *L, double d)
{
    if (d == floor(d) && fabs(d) < 9007199254740992.0)
        lua_pushinteger(L, (lua_Integer)d);
    else
        lua_pushnumber(L, d);
}

static void push_value(lua_State *L, const cJSON *j, bool drop_null, bool keep_order, int depth)
{
    if (depth > AGENT_MAX_JSON_DEPTH)
        agent_raise(L, "JSON nested more than %d levels deep", AGENT_MAX_JSON_DEPTH);
    luaL_checkstack(L, 4, "JSON nested too deeply");
    if (cJSON_IsNull(j) || !j) {
        agent_push_null(L);
    } else if (cJSON_IsFalse(j)) {
        lua_pushboolean(L, 0);
    } else if (cJSON_IsTrue(j)) {
        lua_pushboolean(L, 1);
    } else if (cJSON_IsNumber(j)) {
        push_number(L, j->valuedouble);
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsArray(j)) {
        int n = cJSON_GetArraySize(j);
        lua_createtable(L, n, 0);
        int i = 1;
        for (const cJSON *c = j->child; c; c = c->next, i++) {
            push_value(L, c, drop_null, keep_order, depth + 1);
            lua_rawseti(L, -2, i);
        }
        push_array_mt(L);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsObject(j)) {
        int n = cJSON_GetArraySize(j);
        lua_createtable(L, 0, n);
        for (const cJSON *c = j->child; c; c = c->next) {
            if (drop_null && cJSON_IsNull(c))
                continue;
            push_value(L, c, drop_null, keep_order, depth + 1);
            lua_setfield(L, -2, c->string);
        }
        if (keep_order && n > 0) {
            lua_createtable(L, 0, 1); /* the metatable */
            push_order_key(L);
            lua_createtable(L, n, 0);
            int i = 1;
            for (const cJSON *c = j->child; c; c = c->next) {
                lua_pushstring(L, c->string);
                lua_rawseti(L, -2, i++);
            }
            lua_rawset(L, -3);
            lua_setmetatable(L, -2);
        }
    } else {
        agent_push_null(L);
    }
}

void agent_push_json(lua_State *L, const cJSON *j, bool drop_null_members)
{
    push_value(L, j, drop_null_members, false, 0);
}

/* ---- Lua to JSON -------------------------------------------------------- */

struct conv {
    lua_State *L;
    struct buf where; /* the place being converted, for messages */
};

static int conv_fail(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int conv_fail(struct conv *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->where.len)
        return error_set("%s: %s", buf_str(&c->where), msg);
    return error_set("%s", msg);
}

static bool has_metatable(lua_State *L, int idx, const void *key)
{
    if (!lua_getmetatable(L, idx))
        return false;
    lua_rawgetp(L, LUA_REGISTRYINDEX, key);
    bool same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

static int convert(struct conv *c, int idx, int depth, cJSON **out);

static int convert_array(struct conv *c, int idx, lua_Integer n, int depth, cJSON **out)
{
    lua_State *L = c->L;
    cJSON *a = cJSON_CreateArray();
    size_t mark = c->where.len;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        buf_printf(&c->where, "[%lld]", (long long)i);
        cJSON *item = NULL;
        int rc = convert(c, lua_gettop(L), depth + 1, &item);
        lua_pop(L, 1);
        c->where.len = mark;
        if (c->where.data)
            c->where.data[mark] = '\0';
        if (rc < 0) {
            cJSON_Delete(a);
            return rc;
        }
        cJSON_AddItemToArray(a, item);
    }
    *out = a;
    return 0;
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int find_key(const char *const *keys, size_t n, const char *k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(keys[mid], k);
        if (cmp == 0)
            return (int)mid;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Objects: keys are collected and sorted in a first traversal, values
 * converted in a second one (pushing a key string could allocate), then
 * emitted in the decoded order if the table has one, else sorted. */
static int convert_object(struct conv *c, int idx, int depth, cJSON **out)
{
    lua_State *L = c->L;
    size_t n = 0, cap = 16;
    const char **keys = xmalloc(cap * sizeof *keys);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            int t = lua_type(L, -1);
            lua_pop(L, 1);
            free(keys);
            if (t == LUA_TNUMBER)
                return conv_fail(c, "a table with both list items and named keys (or a list "
                                    "with holes) cannot be encoded as JSON");
            return conv_fail(c, "a table key of type %s cannot be encoded as JSON",
                             lua_typename(L, t));
        }
        if (n == cap)
            keys = xreallocarray(keys, cap *= 2, sizeof *keys);
        keys[n++] = lua_tostring(L, -1); /* stays valid: the table holds the key */
    }
    qsort(keys, n, sizeof *keys, compare_keys);
    cJSON **items = xcalloc(n ? n : 1, sizeof *items);
    size_t mark = c->where.len;
    int rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, idx)) {
        int pos = find_key(keys, n, lua_tostring(L, -2));
        buf_printf(&c->where, "%s%s", mark ? "." : "", lua_tostring(L, -2));
        if (pos >= 0 && !items[pos])
            rc = convert(c, lua_gettop(L), depth + 1, &items[pos]);
        lua_pop(L, 1);
        c->where.len = mark;
        if (c->where.data)
            c->where.data[mark] = '\0';
    }
    if (rc < 0)
        lua_pop(L, 1); /* the key lua_next left */

    /* the decoded order, when the table has one */
    size_t *order = xmalloc((n ? n : 1) * sizeof *order);
    bool *used = xcalloc(n ? n : 1, sizeof *used);
    size_t norder = 0;
    if (rc == 0 && lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &order_key);
        if (lua_type(L, -1) == LUA_TSTRING && lua_rawget(L, -2) == LUA_TTABLE) {
            lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= m; i++) {
                lua_rawgeti(L, -1, i);
                int pos =
                    lua_type(L, -1) == LUA_TSTRING ? find_key(keys, n, lua_tostring(L, -1)) : -1;
                lua_pop(L, 1);
                if (pos >= 0 && !used[pos]) {
                    used[pos] = true;
                    order[norder++] = (size_t)pos;
                }
            }
        }
        lua_pop(L, 2);
    }
    for (size_t i = 0; i < n; i++)
        if (!used[i])
            order[norder++] = i;

    cJSON *o = rc == 0 ? cJSON_CreateObject() : NULL;
    for (size_t i = 0; i < norder; i++) {
        size_t pos = order[i];
        if (o && items[pos]) {
            cJSON_AddItemToObject(o, keys[pos], items[pos]);
            items[pos] = NULL;
        }
    }
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(items[i]);
    free(items);
    free(order);
    free(used);
    free(keys);
    if (rc < 0)
        return rc;
    *out = o;
    return 0;
}

static int convert(struct conv *c, int idx, int depth, cJSON **out)
{
    lua_State *L = c->L;
    if (depth > AGENT_MAX_JSON_DEPTH)
        return conv_fail(c, "nested more than %d levels deep (a table that contains itself?)",
                         AGENT_MAX_JSON_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        *out = cJSON_CreateNull();
        return 0;
    case LUA_TBOOLEAN:
        *out = cJSON_CreateBool(lua_toboolean(L, idx));
        return 0;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            *out = cJSON_CreateNumber((double)lua_tointeger(L, idx));
            return 0;
        }
        if (!isfinite(lua_tonumber(L, idx)))
            return conv_fail(c, "%s is not a JSON number",
                             isnan(lua_tonumber(L, idx)) ? "NaN" : "an infinity");
        *out = cJSON_CreateNumber(lua_tonumber(L, idx));
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!utf8_valid(s, len))
            return conv_fail(c, "a string that is not valid UTF-8 text (or holds a NUL byte) "
                                "cannot be encoded as JSON");
        *out = cJSON_CreateString(s);
        return 0;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL_VALUE) {
            *out = cJSON_CreateNull();
            return 0;
        }
        return conv_fail(c, "a userdata value cannot be encoded as JSON");
    case LUA_TTABLE: {
        if (!lua_checkstack(L, 6))
            return conv_fail(c, "nested too deeply");
        idx = lua_absindex(L, idx);
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        bool marked = has_metatable(L, idx, &array_key);
        lua_Integer count = 0;
        bool only_sequence = true;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            count++;
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n)
                only_sequence = false;
        }
        if (marked && !only_sequence)
            return conv_fail(c, "a table marked as a JSON array has keys other than 1..%lld",
                             (long long)n);
        if ((n > 0 && only_sequence && count == n) || (marked && count == 0))
            return convert_array(c, idx, n, depth, out);
        return convert_object(c, idx, depth, out);
    }
    default:
        return conv_fail(c, "a %s cannot be encoded as JSON", lua_typename(L, lua_type(L, idx)));
    }
}

int agent_to_json(lua_State *L, int idx, const char *where, cJSON **out)
{
    struct conv c = {.L = L};
    buf_init(&c.where, 4096);
    if (where && *where)
        buf_puts(&c.where, where);
    int top = lua_gettop(L);
    int rc = convert(&c, lua_absindex(L, idx), 0, out);
    lua_settop(L, top);
    buf_free(&c.where);
    return rc;
}

/* ---- the module ----------------------------------------------------------- */

static bool opt_flag(lua_State *L, int idx, const char *name, bool def)
{
    if (lua_isnoneornil(L, idx))
        return def;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, name);
    bool v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void free_cjson(void *p, size_t n)
{
    (void)n;
    cJSON_Delete(p);
}

static void free_plain(void *p, size_t n)
{
    (void)n;
    free(p);
}

char *agent_json_print(const cJSON *j, bool indent)
{
    char *raw = indent ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
    if (!raw || !indent)
        return raw;
    /* cJSON indents with tabs and puts one after each colon; strings hold no
     * raw tab (they are escaped), so every tab is layout */
    struct buf b;
    buf_init(&b, 0);
    bool line_start = true;
    for (const char *p = raw; *p; p++) {
        if (*p == '\t')
            buf_puts(&b, line_start ? "  " : " ");
        else
            buf_putc(&b, *p);
        if (*p == '\n')
            line_start = true;
        else if (*p != '\t')
            line_start = false;
    }
    cJSON_free(raw);
    return buf_detach(&b, NULL);
}

/* json.encode(value [, {indent = true}]) -> string */
static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    bool indent = opt_flag(L, 2, "indent", false);
    cJSON *j = NULL;
    if (agent_to_json(L, 1, "", &j) < 0)
        return agent_raise(L, "json.encode: %s", error_message());
    agent_box(L, j, 0, free_cjson);
    char *s = agent_json_print(j, indent);
    agent_unbox_free(L, -1);
    lua_pop(L, 1);
    if (!s)
        return agent_raise(L, "json.encode: out of memory");
    agent_box(L, s, 0, free_plain);
    lua_pushstring(L, s);
    agent_unbox_free(L, -2);
    return 1;
}

/* json.decode(text [, {keep_order = true, nulls = true}]) -> value, or nil and a message */
static int json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    bool keep_order = opt_flag(L, 2, "keep_order", false);
    if (strlen(s) != len) {
        lua_pushnil(L);
        lua_pushliteral(L, "invalid JSON: the text holds a NUL byte");
        return 2;
    }
    const char *end = NULL;
    /* the length includes Lua's terminating NUL, which cJSON wants to see */
    cJSON *j = cJSON_ParseWithLengthOpts(s, len + 1, &end, 1);
    if (!j) {
        size_t at = end && end >= s ? (size_t)(end - s) : 0;
        size_t line = 1;
        for (size_t i = 0; i < at && i < len; i++)
            line += s[i] == '\n';
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON at line %d (byte %d)", (int)line, (int)at + 1);
        return 2;
    }
    agent_box(L, j, 0, free_cjson);
    push_value(L, j, false, keep_order, 0);
    agent_unbox_free(L, -2);
    return 1;
}

/* json.array([t]) -> t, marked to encode as an array even when empty */
static int json_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

/* json.is_array(t) -> whether t encodes as an array */
static int json_is_array(lua_State *L)
{
    lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && has_metatable(L, 1, &array_key));
    return 1;
}

static const luaL_Reg json_funcs[] = {
    {"encode", json_encode},
    {"decode", json_decode},
    {"array", json_array},
    {"is_array", json_is_array},
    {NULL, NULL},
};

int luaopen_thalamus_json(lua_State *L)
{
    push_array_mt(L);
    push_order_key(L);
    lua_pop(L, 2);
    luaL_newlib(L, json_funcs);
    agent_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
