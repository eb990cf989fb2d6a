/*
 * lua_template: the thalamus.template module, prompt templates with named
 * placeholders. render(text, values) replaces each {{name}} (spaces inside
 * the braces allowed, dots reach into nested tables: {{node.metric}}) with
 * its value: strings as they are, numbers and booleans as text, tables as
 * indented JSON. A placeholder without a value is an error that names it,
 * so a prompt never goes out with a hole in it. load(name) reads a template
 * file from agents/prompts/ (the workspace's first, then the built-in
 * ones), and file(name, values) renders one. Values are inserted as text:
 * nothing in them is expanded again. Depends on agent_internal, alloc and
 * error.
 */
#include "agent_internal.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* Parses "{{ name.path }}" at s; sets the name span and the length of the
 * whole placeholder, or returns false when s does not start one. */
static bool placeholder(const char *s, const char **name, size_t *nlen, size_t *total)
{
    if (s[0] != '{' || s[1] != '{')
        return false;
    const char *p = s + 2;
    while (*p == ' ')
        p++;
    if (!name_start(*p))
        return false;
    const char *start = p;
    for (;;) {
        while (name_char(*p))
            p++;
        if (*p == '.' && name_char(p[1]))
            p++;
        else
            break;
    }
    const char *end = p;
    while (*p == ' ')
        p++;
    if (p[0] != '}' || p[1] != '}')
        return false;
    *name = start;
    *nlen = (size_t)(end - start);
    *total = (size_t)(p + 2 - s);
    return true;
}

static void free_text(void *p, size_t n)
{
    (void)n;
    free(p);
}

/* Pushes the value of the dotted name from the table at vals (nil when a
 * part is missing). */
static void lookup(lua_State *L, int vals, const char *name, size_t len)
{
    lua_pushvalue(L, vals);
    const char *p = name, *end = name + len;
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, p, n);
        lua_gettable(L, -2);
        lua_remove(L, -2);
        p += n + (dot ? 1 : 0);
    }
}

static void add_value(lua_State *L, luaL_Buffer *b, const char *tname, const char *name,
                      size_t nlen)
{
    int v = lua_gettop(L);
    switch (lua_type(L, v)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        luaL_tolstring(L, v, NULL);
        break;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, v) ? "true" : "false");
        break;
    case LUA_TTABLE: {
        cJSON *j = NULL;
        if (agent_to_json(L, v, "", &j) < 0)
            agent_raise(L, "template%s%s: the value of {{%.*s}} cannot be shown: %s",
                        tname ? " " : "", tname ? tname : "", (int)nlen, name, error_message());
        char *s = agent_json_print(j, true);
        cJSON_Delete(j);
        agent_box(L, s, 0, free_text);
        lua_pushstring(L, s ? s : "null");
        agent_unbox_free(L, -2);
        lua_remove(L, -2);
        break;
    }
    case LUA_TNIL:
        agent_raise(L, "template%s%s: no value for the placeholder {{%.*s}}", tname ? " " : "",
                    tname ? tname : "", (int)nlen, name);
        break;
    default:
        if (agent_is_null(L, v)) {
            lua_pushliteral(L, "null");
            break;
        }
        agent_raise(L, "template%s%s: the value of {{%.*s}} is a %s, which cannot be shown",
                    tname ? " " : "", tname ? tname : "", (int)nlen, name, luaL_typename(L, v));
    }
    lua_remove(L, v);
    luaL_addvalue(b);
}

static int render(lua_State *L, int text, int vals, const char *tname)
{
    size_t len;
    const char *s = lua_tolstring(L, text, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0;
    while (i < len) {
        const char *open = memchr(s + i, '{', len - i);
        if (!open) {
            luaL_addlstring(&b, s + i, len - i);
            break;
        }
        size_t at = (size_t)(open - s);
        luaL_addlstring(&b, s + i, at - i);
        const char *name;
        size_t nlen, total;
        if (at + 1 < len && placeholder(open, &name, &nlen, &total)) {
            lookup(L, vals, name, nlen);
            add_value(L, &b, tname, name, nlen);
            i = at + total;
        } else {
            luaL_addchar(&b, '{');
            i = at + 1;
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* template.render(text, values) -> text */
static int tpl_render(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    return render(L, 1, 2, NULL);
}

static void load_template(lua_State *L, const char *name)
{
    struct agent_runtime *rt = agent_runtime_of(L);
    char *rel = xasprintf("prompts/%s", name);
    char *text = NULL, *where = NULL;
    size_t len = 0;
    int rc = agent_read_data(rt, rel, &text, &len, &where);
    free(rel);
    free(where);
    if (rc < 0)
        agent_raise(L, "template '%s': %s", name, error_message());
    agent_box(L, text, 0, free_text);
    lua_pushlstring(L, text, len);
    agent_unbox_free(L, -2);
    lua_remove(L, -2);
}

/* template.load(name) -> the text of agents/prompts/NAME */
static int tpl_load(lua_State *L)
{
    load_template(L, luaL_checkstring(L, 1));
    return 1;
}

/* template.file(name, values) -> the rendered agents/prompts/NAME */
static int tpl_file(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    load_template(L, name);
    return render(L, 3, 2, name);
}

int luaopen_thalamus_template(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"render", tpl_render},
        {"load", tpl_load},
        {"file", tpl_file},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    return 1;
}
