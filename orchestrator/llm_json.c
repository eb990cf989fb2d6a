/*
 * llm_json: structured replies for the LLM gateway (see llm.h): schemas of
 * required keys and their types, validation with messages a model can act
 * on, extraction of a JSON object from a reply that wraps it in prose or a
 * fenced code block, and the instruction that asks for one. The extraction
 * scans for balanced braces while skipping string literals and their
 * escapes, so braces inside strings do not confuse it, and bounds the work
 * it does on hostile text. Depends on buf, alloc, error and cJSON.
 */
#include "llm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"

#define MAX_CANDIDATES 64
#define MAX_SCAN_BYTES ((size_t)32 << 20)

static const char *const type_names[] = {"string", "number", "integer", "boolean", "object",
                                         "array",  "null",   "any",     NULL};

static bool type_known(const char *name, size_t len)
{
    for (const char *const *t = type_names; *t; t++)
        if (strlen(*t) == len && !strncmp(*t, name, len))
            return true;
    return false;
}

int llm_schema_check(const cJSON *schema)
{
    if (!cJSON_IsObject(schema))
        return error_setc(TH_EUSAGE, "a schema must be a JSON object of keys and type names, "
                                     "such as {\"title\": \"string\", \"score\": \"number\"}");
    const cJSON *item;
    cJSON_ArrayForEach(item, schema)
    {
        if (!cJSON_IsString(item))
            return error_setc(TH_EUSAGE,
                              "schema: the type of \"%s\" must be a string such as "
                              "\"number\" or \"string?\"",
                              item->string);
        const char *t = item->valuestring;
        size_t len = strlen(t);
        if (len && t[len - 1] == '?')
            len--;
        for (size_t i = 0; i <= len;) {
            size_t n = strcspn(t + i, "|?");
            if (n > len - i)
                n = len - i;
            if (!type_known(t + i, n))
                return error_setc(TH_EUSAGE,
                                  "schema: \"%s\" has the unknown type \"%s\"; use string, "
                                  "number, integer, boolean, object, array, null or any",
                                  item->string, item->valuestring);
            i += n + 1;
        }
    }
    return 0;
}

static bool type_matches(const cJSON *v, const char *name, size_t len)
{
#define IS(s) (len == strlen(s) && !strncmp(name, s, len))
    if (IS("any"))
        return true;
    if (IS("string"))
        return cJSON_IsString(v);
    if (IS("number"))
        return cJSON_IsNumber(v);
    if (IS("integer"))
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
               fabs(v->valuedouble) < 9007199254740992.0;
    if (IS("boolean"))
        return cJSON_IsBool(v);
    if (IS("object"))
        return cJSON_IsObject(v);
    if (IS("array"))
        return cJSON_IsArray(v);
    if (IS("null"))
        return cJSON_IsNull(v);
#undef IS
    return false;
}

static const char *kind_of(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return v->valuedouble == floor(v->valuedouble) ? "an integer" : "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsNull(v))
        return "null";
    return "something else";
}

/* "a string", "a number or null"... for a type expression. */
static char *type_phrase(const char *t, size_t len)
{
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < len;) {
        size_t n = strcspn(t + i, "|");
        if (n > len - i)
            n = len - i;
        const char *article =
            (n == 4 && !strncmp(t + i, "null", 4)) || (n == 3 && !strncmp(t + i, "any", 3)) ? ""
            : (t[i] == 'a' || t[i] == 'i' || t[i] == 'o')                                   ? "an "
                                                                                            : "a ";
        buf_printf(&b, "%s%s%.*s", i ? " or " : "", article, (int)n, t + i);
        i += n + 1;
    }
    return buf_detach(&b, NULL);
}

int llm_json_validate(const cJSON *obj, const cJSON *schema)
{
    if (!cJSON_IsObject(obj))
        return error_set("the reply must be a JSON object, not %s", kind_of(obj));
    if (!schema)
        return 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, schema)
    {
        const char *t = item->valuestring;
        size_t len = strlen(t);
        bool optional = len && t[len - 1] == '?';
        if (optional)
            len--;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, item->string);
        if (!v) {
            if (optional)
                continue;
            return error_set("the key \"%s\" is missing", item->string);
        }
        bool ok = false;
        for (size_t i = 0; i < len && !ok;) {
            size_t n = strcspn(t + i, "|");
            if (n > len - i)
                n = len - i;
            ok = type_matches(v, t + i, n);
            i += n + 1;
        }
        if (!ok) {
            char *want = type_phrase(t, len);
            int rc = error_set("\"%s\" must be %s, not %s", item->string, want, kind_of(v));
            free(want);
            return rc;
        }
    }
    return 0;
}

char *llm_json_instruction(const cJSON *schema)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "Reply with only one JSON object: no prose before or after it, no code fence");
    if (schema && cJSON_GetArraySize(schema) > 0) {
        buf_puts(&b, ". Its keys:");
        const cJSON *item;
        int i = 0;
        cJSON_ArrayForEach(item, schema)
        {
            const char *t = item->valuestring;
            size_t len = strlen(t);
            bool optional = len && t[len - 1] == '?';
            if (optional)
                len--;
            buf_printf(&b, "%s \"%s\" (%.*s%s)", i++ ? "," : "", item->string, (int)len, t,
                       optional ? ", optional" : "");
        }
    }
    buf_puts(&b, ".");
    return buf_detach(&b, NULL);
}

/* ---- extraction -------------------------------------------------------- */

struct extraction {
    const cJSON *schema;
    cJSON *found;      /* the first object that validates */
    char *first_error; /* validation error of the first object seen */
    bool saw_object;
    int tries;
};

enum candidate {
    CAND_NONE,   /* not a JSON object */
    CAND_OBJECT, /* an object that does not validate */
    CAND_DONE,   /* found, or too many tries: the search is over */
};

/* Tries text[0..len) as a JSON object. */
static enum candidate try_candidate(struct extraction *x, const char *text, size_t len)
{
    if (x->tries++ >= MAX_CANDIDATES)
        return CAND_DONE;
    while (len && (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')) {
        text++;
        len--;
    }
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\r' ||
                   text[len - 1] == '\t'))
        len--;
    if (!len || *text != '{')
        return CAND_NONE;
    cJSON *obj = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        return CAND_NONE;
    }
    if (llm_json_validate(obj, x->schema) == 0) {
        x->found = obj;
        return CAND_DONE;
    }
    if (!x->saw_object)
        x->first_error = xstrdup(error_message());
    x->saw_object = true;
    cJSON_Delete(obj);
    return CAND_OBJECT;
}

/* The end (one past the closing brace) of the balanced object starting at
 * text[start] == '{', or 0 when it does not close. */
static size_t balanced_end(const char *text, size_t len, size_t start, size_t *budget)
{
    int depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = start; i < len; i++) {
        if (*budget == 0)
            return 0;
        (*budget)--;
        char c = text[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"')
            in_string = true;
        else if (c == '{')
            depth++;
        else if (c == '}' && --depth == 0)
            return i + 1;
    }
    return 0;
}

static bool try_fences(struct extraction *x, const char *text)
{
    const char *p = text;
    while ((p = strstr(p, "```"))) {
        const char *body = strchr(p + 3, '\n'); /* skip the info string (json, JSON...) */
        if (!body)
            return false;
        body++;
        const char *end = strstr(body, "```");
        if (!end)
            end = body + strlen(body); /* an unclosed fence runs to the end */
        if (try_candidate(x, body, (size_t)(end - body)) == CAND_DONE)
            return true;
        if (!*end)
            return false;
        p = end + 3;
    }
    return false;
}

int llm_json_extract(const char *text, const cJSON *schema, cJSON **out)
{
    struct extraction x = {.schema = schema};
    size_t len = strlen(text), budget = MAX_SCAN_BYTES;
    *out = NULL;
    bool over = try_candidate(&x, text, len) == CAND_DONE || try_fences(&x, text);
    for (size_t i = 0; !over && i < len; i++) {
        if (text[i] != '{')
            continue;
        size_t end = balanced_end(text, len, i, &budget);
        if (!end) {
            if (budget == 0)
                break;
            continue;
        }
        enum candidate c = try_candidate(&x, text + i, end - i);
        over = c == CAND_DONE;
        if (c == CAND_OBJECT)
            i = end - 1; /* a parsed object is one unit: no search for objects inside it */
    }
    int rc = 0;
    if (x.found) {
        *out = x.found;
        error_clear();
    } else if (x.first_error) {
        rc = error_set("%s", x.first_error);
    } else {
        rc = error_set("the reply holds no JSON object");
    }
    free(x.first_error);
    return rc;
}
