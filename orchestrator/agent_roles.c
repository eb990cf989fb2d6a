/*
 * agent_roles: the contracts of the agents' roles, checked by the runtime
 * on every input and output (docs/agents.md lists them):
 *   planner    -> { ideas = { {title, hypothesis, changes, rationale, params?}... } }
 *   retriever  -> { items = { {kind, text, source, score}... } }, best first
 *   coder      -> { edits = { {path, content} | {path, search, replace}... } }
 *   critic     review:  input { mode = "review", ideas } ->
 *                       { scores = { {feasibility, novelty, expected_gain}... }, ranking }
 *              analyse: input { mode = "analyse", result } ->
 *                       { label = improve | maintain | decline, insight }
 *   tool       anything that is data.
 * A wrong shape is an error whose message names the field
 * ("ideas[2].title must be a non-empty string, not a number"). A planner's
 * params must lie inside task.search_space. Also the stages of the
 * research loop and the role each takes. Depends on config, confine, error
 * and cJSON.
 */
#include "agent_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "confine.h"
#include "error.h"

struct stage {
    const char *stage, *role, *builtin;
};

static const struct stage stages[] = {
    {"retrieve", "retriever", "retriever"}, {"ideate", "planner", "planner"},
    {"review", "critic", "critic"},         {"implement", "coder", "coder"},
    {"analyse", "critic", "critic"},        {NULL, NULL, NULL},
};

const char *agent_stage_role(const char *stage)
{
    for (const struct stage *s = stages; s->stage; s++)
        if (!strcmp(s->stage, stage))
            return s->role;
    return NULL;
}

const char *agent_stage_builtin(const char *stage)
{
    for (const struct stage *s = stages; s->stage; s++)
        if (!strcmp(s->stage, stage))
            return s->builtin;
    return NULL;
}

bool agent_role_known(const char *role)
{
    for (const char *const *r = agent_roles; *r; r++)
        if (!strcmp(*r, role))
            return true;
    return false;
}

static const char *type_name(const cJSON *j)
{
    if (!j)
        return "nothing";
    if (cJSON_IsNull(j))
        return "null";
    if (cJSON_IsBool(j))
        return "a boolean";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return cJSON_GetStringValue(j)[0] ? "a string" : "an empty string";
    if (cJSON_IsArray(j))
        return "a list";
    return "a table";
}

static int wrong(const char *field, const char *what, const cJSON *got)
{
    return error_set("%s must be %s, not %s", field, what, type_name(got));
}

/* A list, or an empty table (Lua's {} converts to an empty JSON object). */
static bool is_list(const cJSON *j)
{
    return cJSON_IsArray(j) || (cJSON_IsObject(j) && !j->child);
}

static const cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static int need_string(const cJSON *o, const char *prefix, const char *key, bool nonempty)
{
    const cJSON *v = get(o, key);
    char field[160];
    snprintf(field, sizeof field, "%s%s", prefix, key);
    if (!cJSON_IsString(v) || (nonempty && !v->valuestring[0]))
        return wrong(field, nonempty ? "a non-empty string" : "a string", v);
    return 0;
}

static int need_unit(const cJSON *o, const char *prefix, const char *key)
{
    const cJSON *v = get(o, key);
    char field[160];
    snprintf(field, sizeof field, "%s%s", prefix, key);
    if (!cJSON_IsNumber(v))
        return wrong(field, "a number from 0 to 1", v);
    if (!(v->valuedouble >= 0 && v->valuedouble <= 1))
        return error_set("%s must be a number from 0 to 1, not %g", field, v->valuedouble);
    return 0;
}

static const cJSON *need_list(const cJSON *o, const char *key, const char *example)
{
    const cJSON *v = get(o, key);
    if (!is_list(v)) {
        error_set("%s must be a list%s%s, not %s", key, example ? " such as " : "",
                  example ? example : "", type_name(v));
        return NULL;
    }
    return v;
}

/* A parameter's value inside its declared range or choices. */
static int check_param(const struct search_param *p, const cJSON *v, const char *field)
{
    if (p->kind == SEARCH_CHOICE) {
        const cJSON *c;
        cJSON_ArrayForEach(c, p->choices)
        {
            if (cJSON_Compare(c, v, 1))
                return 0;
            if (cJSON_IsNumber(c) && cJSON_IsNumber(v) && c->valuedouble == v->valuedouble)
                return 0;
        }
        char *choices = cJSON_PrintUnformatted(p->choices);
        int rc = error_set("%s is not one of the choices %s of task.search_space.%s", field,
                           choices ? choices : "", p->name);
        cJSON_free(choices);
        return rc;
    }
    if (!cJSON_IsNumber(v))
        return wrong(field, "a number", v);
    double d = v->valuedouble;
    if (!(d >= p->min && d <= p->max))
        return error_set("%s is %g, outside task.search_space.%s (%g to %g)", field, d, p->name,
                         p->min, p->max);
    if (p->integer && d != floor(d))
        return error_set("%s is %g, but task.search_space.%s takes whole numbers", field, d,
                         p->name);
    return 0;
}

static int check_planner(const cJSON *out, const struct config *cfg)
{
    const cJSON *ideas = need_list(out, "ideas", "{ { title = ..., hypothesis = ... } }");
    if (!ideas)
        return TH_ERR;
    int i = 0;
    const cJSON *idea;
    cJSON_ArrayForEach(idea, ideas)
    {
        char prefix[64];
        i++;
        snprintf(prefix, sizeof prefix, "ideas[%d].", i);
        if (!cJSON_IsObject(idea)) {
            snprintf(prefix, sizeof prefix, "ideas[%d]", i);
            return wrong(prefix, "a table { title, hypothesis, changes, rationale }", idea);
        }
        if (need_string(idea, prefix, "title", true) < 0 ||
            need_string(idea, prefix, "hypothesis", true) < 0 ||
            need_string(idea, prefix, "rationale", true) < 0)
            return TH_ERR;
        const cJSON *changes = get(idea, "changes");
        char field[96];
        snprintf(field, sizeof field, "%schanges", prefix);
        if (!is_list(changes))
            return wrong(field, "a list of strings, each describing one change", changes);
        int k = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, changes)
        {
            k++;
            if (!cJSON_IsString(c) || !c->valuestring[0]) {
                snprintf(field, sizeof field, "%schanges[%d]", prefix, k);
                return wrong(field, "a non-empty string", c);
            }
        }
        const cJSON *params = get(idea, "params");
        if (!params)
            continue;
        snprintf(field, sizeof field, "%sparams", prefix);
        if (!cJSON_IsObject(params))
            return wrong(field, "a table of parameter values", params);
        const cJSON *v;
        cJSON_ArrayForEach(v, params)
        {
            for (size_t s = 0; s < cfg->search_space_len; s++) {
                const struct search_param *p = &cfg->search_space[s];
                if (strcmp(p->name, v->string))
                    continue;
                char pf[160];
                snprintf(pf, sizeof pf, "%sparams.%s", prefix, v->string);
                if (check_param(p, v, pf) < 0)
                    return TH_ERR;
            }
        }
    }
    return 0;
}

static int check_retriever(const cJSON *out)
{
    const cJSON *items = need_list(out, "items", "{ { kind, text, source, score } }");
    if (!items)
        return TH_ERR;
    int i = 0;
    double last = INFINITY;
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        char prefix[64];
        i++;
        snprintf(prefix, sizeof prefix, "items[%d].", i);
        if (!cJSON_IsObject(it)) {
            snprintf(prefix, sizeof prefix, "items[%d]", i);
            return wrong(prefix, "a table { kind, text, source, score }", it);
        }
        if (need_string(it, prefix, "kind", true) < 0 ||
            need_string(it, prefix, "text", false) < 0 ||
            need_string(it, prefix, "source", false) < 0)
            return TH_ERR;
        const cJSON *score = get(it, "score");
        if (!cJSON_IsNumber(score) || !isfinite(score->valuedouble)) {
            char field[80];
            snprintf(field, sizeof field, "%sscore", prefix);
            return wrong(field, "a number", score);
        }
        if (score->valuedouble > last)
            return error_set("items must be ranked best first, but items[%d].score (%g) is above "
                             "items[%d].score (%g)",
                             i, score->valuedouble, i - 1, last);
        last = score->valuedouble;
    }
    return 0;
}

static int check_coder(const cJSON *out)
{
    const cJSON *edits = need_list(out, "edits", "{ { path = \"train.py\", content = \"...\" } }");
    if (!edits)
        return TH_ERR;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, edits)
    {
        char prefix[64], field[96];
        i++;
        snprintf(prefix, sizeof prefix, "edits[%d].", i);
        if (!cJSON_IsObject(e)) {
            snprintf(prefix, sizeof prefix, "edits[%d]", i);
            return wrong(prefix, "a table { path, content } or { path, search, replace }", e);
        }
        if (need_string(e, prefix, "path", true) < 0)
            return TH_ERR;
        if (confine_check(get(e, "path")->valuestring) < 0)
            return error_prefix("edits[%d].path", i);
        const cJSON *content = get(e, "content"), *search = get(e, "search"),
                    *replace = get(e, "replace");
        if (content && (search || replace))
            return error_set("edits[%d] has both content and search/replace; give the whole file "
                             "or one search/replace block",
                             i);
        if (content) {
            if (!cJSON_IsString(content)) {
                snprintf(field, sizeof field, "%scontent", prefix);
                return wrong(field, "a string (the whole new file)", content);
            }
            continue;
        }
        if (!search && !replace)
            return error_set("edits[%d] needs content (the whole file) or search and replace", i);
        if (need_string(e, prefix, "search", true) < 0 ||
            need_string(e, prefix, "replace", false) < 0)
            return TH_ERR;
    }
    return 0;
}

static int check_critic(const cJSON *input, const cJSON *out)
{
    const cJSON *mode = get(input, "mode");
    if (!strcmp(mode->valuestring, "analyse")) {
        const cJSON *label = get(out, "label");
        if (!cJSON_IsString(label) ||
            (strcmp(label->valuestring, "improve") && strcmp(label->valuestring, "maintain") &&
             strcmp(label->valuestring, "decline"))) {
            if (cJSON_IsString(label))
                return error_set("label must be \"improve\", \"maintain\" or \"decline\", not "
                                 "\"%s\"",
                                 label->valuestring);
            return wrong("label", "\"improve\", \"maintain\" or \"decline\"", label);
        }
        return need_string(out, "", "insight", true);
    }
    int n = cJSON_GetArraySize(get(input, "ideas"));
    const cJSON *scores = need_list(out, "scores", "{ { feasibility, novelty, expected_gain } }");
    if (!scores)
        return TH_ERR;
    if (cJSON_GetArraySize(scores) != n)
        return error_set("scores has %d entries for %d ideas; give one per idea, in their order",
                         cJSON_GetArraySize(scores), n);
    int i = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, scores)
    {
        char prefix[64];
        i++;
        snprintf(prefix, sizeof prefix, "scores[%d].", i);
        if (!cJSON_IsObject(s)) {
            snprintf(prefix, sizeof prefix, "scores[%d]", i);
            return wrong(prefix, "a table { feasibility, novelty, expected_gain }", s);
        }
        if (need_unit(s, prefix, "feasibility") < 0 || need_unit(s, prefix, "novelty") < 0 ||
            need_unit(s, prefix, "expected_gain") < 0)
            return TH_ERR;
        const cJSON *score = get(s, "score");
        if (score && (!cJSON_IsNumber(score) || !isfinite(score->valuedouble))) {
            char field[80];
            snprintf(field, sizeof field, "%sscore", prefix);
            return wrong(field, "a number", score);
        }
    }
    const cJSON *ranking = need_list(out, "ranking", "{ 2, 1, 3 } (idea positions, best first)");
    if (!ranking)
        return TH_ERR;
    if (cJSON_GetArraySize(ranking) != n)
        return error_set("ranking has %d entries for %d ideas; list every idea's position once, "
                         "best first",
                         cJSON_GetArraySize(ranking), n);
    char seen[1024] = {0};
    if (n > (int)sizeof seen)
        return error_set("a review takes at most %zu ideas", sizeof seen);
    i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, ranking)
    {
        i++;
        if (!cJSON_IsNumber(r) || r->valuedouble != floor(r->valuedouble) || r->valuedouble < 1 ||
            r->valuedouble > n) {
            char field[32];
            snprintf(field, sizeof field, "ranking[%d]", i);
            if (!cJSON_IsNumber(r))
                return wrong(field, "an idea's position (a whole number)", r);
            return error_set("%s is %g; positions go from 1 to %d", field, r->valuedouble, n);
        }
        int k = (int)r->valuedouble;
        if (seen[k - 1])
            return error_set("ranking lists idea %d twice", k);
        seen[k - 1] = 1;
    }
    return 0;
}

int agent_role_check_input(const char *role, const cJSON *input)
{
    if (!cJSON_IsObject(input))
        return error_setc(TH_EUSAGE, "the input must be a table of named fields");
    if (!strcmp(role, "critic")) {
        const cJSON *mode = get(input, "mode");
        if (!cJSON_IsString(mode) ||
            (strcmp(mode->valuestring, "review") && strcmp(mode->valuestring, "analyse")))
            return error_setc(TH_EUSAGE, "a critic's input needs mode = \"review\" (with ideas) or "
                                         "\"analyse\" (with result)");
        if (!strcmp(mode->valuestring, "review")) {
            const cJSON *ideas = get(input, "ideas");
            if (!is_list(ideas) || cJSON_GetArraySize(ideas) == 0)
                return error_setc(TH_EUSAGE,
                                  "a review needs ideas: a non-empty list of the ideas to score");
            const cJSON *idea;
            int i = 0;
            cJSON_ArrayForEach(idea, ideas)
            {
                i++;
                if (!cJSON_IsObject(idea))
                    return error_setc(TH_EUSAGE, "ideas[%d] must be a table (an idea), not %s", i,
                                      type_name(idea));
            }
        } else if (!cJSON_IsObject(get(input, "result"))) {
            return error_setc(TH_EUSAGE, "an analysis needs result: the experiment's result "
                                         "(metric, status, params)");
        }
    } else if (!strcmp(role, "coder")) {
        const cJSON *dir = get(input, "dir");
        if (dir && (!cJSON_IsString(dir) || confine_check(dir->valuestring) < 0))
            return error_setc(TH_EUSAGE,
                              "a coder's dir must be a directory of the workspace, relative to "
                              "it (such as \"experiment\")");
        const cJSON *idea = get(input, "idea");
        if (idea && !cJSON_IsObject(idea))
            return error_setc(TH_EUSAGE, "a coder's idea must be a table, not %s", type_name(idea));
        if (!idea && !get(input, "failure"))
            return error_setc(TH_EUSAGE,
                              "a coder needs an idea to implement (or a failure to debug)");
    }
    return 0;
}

int agent_role_check_output(const char *role, const cJSON *input, const cJSON *output,
                            const struct config *cfg)
{
    if (!strcmp(role, "tool"))
        return 0;
    if (!cJSON_IsObject(output)) {
        static const char *const examples[][2] = {
            {"planner", "{ ideas = {...} }"},
            {"retriever", "{ items = {...} }"},
            {"coder", "{ edits = {...} }"},
            {"critic", "{ scores = {...}, ranking = {...} } or { label = ..., insight = ... }"},
        };
        const char *ex = "a table";
        for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++)
            if (!strcmp(examples[i][0], role))
                ex = examples[i][1];
        return error_set("a %s returns %s, not %s", role, ex,
                         cJSON_IsNull(output) ? "nothing" : type_name(output));
    }
    if (!strcmp(role, "planner"))
        return check_planner(output, cfg);
    if (!strcmp(role, "retriever"))
        return check_retriever(output);
    if (!strcmp(role, "coder"))
        return check_coder(output);
    if (!strcmp(role, "critic"))
        return check_critic(input, output);
    return 0;
}
