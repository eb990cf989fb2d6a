/*
 * config: defaults, thalamus.lua and environment, validated against one key
 * table (see config.h).
 */
#include "config.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "log.h"
#include "text.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LUA_MEMORY_CAP     ((size_t)32 << 20)
#define LUA_HOOK_INTERVAL  100000
#define LUA_MAX_HOOK_CALLS 200 /* 20 million instructions */

enum key_type {
    KT_STRING,
    KT_ENUM,
    KT_POSINT,
    KT_ARGV,
    KT_SPACE,
    KT_SECONDS,     /* a positive number (double) */
    KT_COUNT,       /* a non-negative integer (long) */
    KT_TEMPERATURE, /* a number from 0 to 2 (double), NAN when unset */
    KT_PRICES,      /* llm.prices */
    KT_BUDGET,      /* llm.budget */
    KT_NUMBER,      /* a number (double) in the range "min,max" given in choices */
    KT_INTEGER,     /* an integer (long) in the range "min,max" given in choices */
    KT_BOOL,        /* true or false (bool) */
    KT_LIST,        /* a list of strings (char **, NULL-terminated; NULL when empty) */
    KT_ENV,         /* variable names to strings (char ** of "NAME=VALUE", sorted) */
    KT_STAGES,      /* stage names to lists of agent names (char ** of "stage:name") */
};

struct key {
    const char *name;
    enum key_type type;
    size_t offset;
    const char *def;     /* default as text; NULL: unset, or derived from the provider */
    const char *choices; /* KT_ENUM: values separated by '|'; KT_NUMBER, KT_INTEGER: "min,max" */
    const char *doc;
};

#define F(field) offsetof(struct config, field)

static const struct key keys[] = {
    {"task.name", KT_STRING, F(task_name), NULL, NULL,
     "Short name of the research task; defaults to the workspace directory's name."},
    {"task.command", KT_ARGV, F(task_command), NULL, NULL,
     "How to run one experiment, as a list of arguments (`{ \"python3\", \"train.py\" }`) "
     "run in a copy of `experiment/`; a single string is run with `/bin/sh -c`. The "
     "command must write `results.json`."},
    {"task.metric", KT_STRING, F(task_metric), "score", NULL,
     "Key in `results.json` that measures an experiment."},
    {"task.goal", KT_ENUM, F(task_goal), "maximize", "maximize|minimize",
     "Whether a larger or a smaller metric is better."},
    {"task.params_file", KT_STRING, F(task_params_file), "params.json", NULL,
     "JSON file in `experiment/` that holds the searchable parameters."},
    {"task.search_space", KT_SPACE, 0, NULL, NULL,
     "Parameters the offline planner may change, by name: `{ min = A, max = B }` for a "
     "real range (add `scale = \"log\"` for a log scale, which needs `min > 0`, or "
     "`integer = true` for whole numbers), or `{ choices = { ... } }` for a list of "
     "strings, numbers or booleans."},
    {"sandbox.timeout", KT_POSINT, F(sandbox_timeout), "600", NULL,
     "Wall-clock limit of one experiment, in seconds."},
    {"sandbox.memory_mb", KT_POSINT, F(sandbox_memory_mb), "2048", NULL,
     "Memory limit of one experiment, in MiB."},
    {"sandbox.cpu_seconds", KT_COUNT, F(sandbox_cpu_seconds), "0", NULL,
     "CPU time of one experiment, all its processes together, in seconds; 0: no limit "
     "besides the wall clock."},
    {"sandbox.pids", KT_POSINT, F(sandbox_pids), "256", NULL,
     "Processes and threads one experiment may have at once."},
    {"sandbox.disk_mb", KT_POSINT, F(sandbox_disk_mb), "1024", NULL,
     "Size of the file system that holds an experiment's `/work` and `/tmp` together, in "
     "MiB."},
    {"sandbox.network", KT_BOOL, F(sandbox_network), "false", NULL,
     "Whether experiments share the host's network; otherwise they have only a loopback of "
     "their own."},
    {"sandbox.isolation", KT_ENUM, F(sandbox_isolation), "full", "full|none",
     "`full` runs experiments in namespaces with a root of their own; `none` runs them with "
     "your full access (only limits and the clean environment apply), for hosts without "
     "user namespaces. Logged on every run."},
    {"sandbox.binds", KT_LIST, F(sandbox_binds), NULL, NULL,
     "Host paths experiments may read, such as datasets: `{ \"/data/mnist\" }`; "
     "`\"HOST:INSIDE\"` mounts one elsewhere. Read-only; relative host paths are relative to "
     "the workspace."},
    {"sandbox.env", KT_ENV, F(sandbox_env), NULL, NULL,
     "Extra environment variables of experiments: `{ OMP_NUM_THREADS = \"2\" }`. Names "
     "ending in `_API_KEY` are refused: API keys never enter the sandbox."},
    {"loop.rounds", KT_POSINT, F(loop_rounds), "3", NULL, "Rounds of the research loop."},
    {"loop.ideas", KT_POSINT, F(loop_ideas), "3", NULL, "Ideas proposed per expansion."},
    {"loop.jobs", KT_POSINT, F(loop_jobs), "2", NULL, "Experiments run at the same time."},
    {"loop.drafts", KT_POSINT, F(loop_drafts), "3", NULL,
     "First drafts: ideas proposed from the baseline, and kept, at the first expansion."},
    {"loop.keep", KT_POSINT, F(loop_keep), "2", NULL,
     "Ideas kept after the critic's review at each later expansion (the best ones)."},
    {"loop.debug_attempts", KT_COUNT, F(loop_debug_attempts), "2", NULL,
     "Most debug attempts in a row for a failed experiment (the maximum debug depth: an "
     "attempt that fails may be debugged again); each attempt is an experiment of its own. 0 "
     "turns debugging off."},
    {"loop.debug_probability", KT_NUMBER, F(loop_debug_probability), "0.5", "0,1",
     "Chance that a step of the search debugs a failed experiment instead of following UCT."},
    {"loop.exploration", KT_NUMBER, F(loop_exploration), "1.414", "0,100",
     "Exploration constant of UCT over the experiment tree."},
    {"loop.novelty_threshold", KT_NUMBER, F(loop_novelty_threshold), "0.9", "0,1",
     "TF-IDF similarity to a tried idea at or above which a new idea counts as the same one "
     "(and is dropped unless its parameters differ)."},
    {"loop.tolerance", KT_NUMBER, F(loop_tolerance), "0.005", "0,1",
     "Relative change of the metric within which an experiment is labelled `maintain` "
     "rather than `improve` or `decline`."},
    {"loop.experiments", KT_COUNT, F(loop_experiments), "0", NULL,
     "Most experiments of a run (the baseline not counted); 0: no limit."},
    {"loop.seconds", KT_COUNT, F(loop_seconds), "0", NULL,
     "Most wall-clock seconds of a run, over all its sessions; 0: no limit."},
    {"loop.autonomy", KT_ENUM, F(loop_autonomy), "full", "full|review-ideas|review-code",
     "How far the loop goes without asking: `full` never asks; `review-ideas` has the human "
     "approve, veto or edit the kept ideas before they run; `review-code` also the coder's "
     "change of each experiment (see docs/chat.md)."},
    {"loop.review_file", KT_STRING, F(loop_review_file), NULL, NULL,
     "Decisions file the review gates read when there is no terminal to ask on (JSON lines; "
     "see docs/chat.md); relative to the workspace."},
    {"llm.provider", KT_ENUM, F(llm_provider), NULL, "offline|openai|anthropic",
     "Model provider. Default: `openai` when `OPENAI_API_KEY` is set, else `anthropic` "
     "when `ANTHROPIC_API_KEY` is set, else `offline` (no model is called). "
     "Environment: `THALAMUS_PROVIDER`."},
    {"llm.model", KT_STRING, F(llm_model), "", NULL,
     "Model name sent to the provider. Environment: `THALAMUS_MODEL`."},
    {"llm.base_url", KT_STRING, F(llm_base_url), NULL, NULL,
     "Endpoint of the provider. Default: `https://api.openai.com/v1` for `openai` (any "
     "OpenAI-compatible server works), `https://api.anthropic.com` for `anthropic`. "
     "Environment: `OPENAI_BASE_URL` or `ANTHROPIC_BASE_URL`, for the provider in use."},
    {"llm.api_key_env", KT_STRING, F(llm_api_key_env), NULL, NULL,
     "Name of the environment variable holding the API key (keys are never written in "
     "the config). Default: `OPENAI_API_KEY` or `ANTHROPIC_API_KEY`, by provider."},
    {"llm.max_concurrency", KT_POSINT, F(llm_max_concurrency), "8", NULL,
     "Model requests in flight at once, per provider."},
    {"llm.timeout", KT_SECONDS, F(llm_timeout), "600", NULL,
     "Longest time one attempt of a model request may take, in seconds."},
    {"llm.connect_timeout", KT_SECONDS, F(llm_connect_timeout), "10", NULL,
     "Longest wait for a connection to the provider, in seconds."},
    {"llm.idle_timeout", KT_SECONDS, F(llm_idle_timeout), "60", NULL,
     "Longest silence once a reply has started (between streamed tokens), in seconds."},
    {"llm.max_retries", KT_COUNT, F(llm_max_retries), "4", NULL,
     "Retries of a failed request (connection errors, timeouts, 408, 409, 429, 5xx, 529); "
     "0 turns retrying off."},
    {"llm.retry_max_seconds", KT_SECONDS, F(llm_retry_max_seconds), "120", NULL,
     "No retry starts later than this many seconds after the first attempt."},
    {"llm.max_response_bytes", KT_POSINT, F(llm_max_response_bytes), "8388608", NULL,
     "Largest reply accepted from the provider, in bytes; a larger one is an error."},
    {"llm.temperature", KT_TEMPERATURE, F(llm_temperature), "", NULL,
     "Sampling temperature from 0 to 2; unset leaves the provider's default."},
    {"llm.max_tokens", KT_POSINT, F(llm_max_tokens), "4096", NULL,
     "Most tokens a reply may have (also what budgets reserve for a reply)."},
    {"llm.json_repairs", KT_COUNT, F(llm_json_repairs), "2", NULL,
     "How many times a structured (JSON) request is asked again after an invalid reply."},
    {"llm.cache", KT_ENUM, F(llm_cache), "off", "off|read-write|replay",
     "Response cache in the workspace database: `read-write` answers repeated requests "
     "from the cache and records new ones, `replay` answers only from the cache (a miss is "
     "an error)."},
    {"llm.anthropic_version", KT_STRING, F(llm_anthropic_version), "2023-06-01", NULL,
     "Value of the `anthropic-version` header sent to the Anthropic API."},
    {"llm.prices", KT_PRICES, 0, NULL, NULL,
     "Prices per million tokens by model, for costs and money budgets: "
     "`{ [\"gpt-4o-mini\"] = { input = 0.15, output = 0.6 } }`."},
    {"llm.budget", KT_BUDGET, 0, NULL, NULL,
     "Limits per run: `{ tokens = 200000, cost = 2.5, sites = { planner = { tokens = 50000 } "
     "} }`; `sites` limits each call site (agent) within a run. A request that could exceed "
     "a limit is refused before it is sent."},
    {"memory.weight_relevance", KT_NUMBER, F(memory_weight_relevance), "1", "0,100",
     "Weight of relevance (keyword match, fused with embedding similarity when embeddings are "
     "on; 0 to 1) in the score of a recalled item."},
    {"memory.weight_recency", KT_NUMBER, F(memory_weight_recency), "0.5", "0,100",
     "Weight of recency (1 for an item accessed just now, decaying with `memory.recency_decay`) "
     "in the score of a recalled item."},
    {"memory.weight_importance", KT_NUMBER, F(memory_weight_importance), "0.5", "0,100",
     "Weight of an item's importance (0 to 1) in its score."},
    {"memory.weight_activation", KT_NUMBER, F(memory_weight_activation), "0.5", "0,100",
     "Weight of spreading activation (0 to 1, received along links from the best items) in "
     "the score."},
    {"memory.recency_decay", KT_NUMBER, F(memory_recency_decay), "0.995", "0,1",
     "Recency factor per hour since an item was last recalled: recency = decay ^ hours "
     "(Generative Agents used 0.995)."},
    {"memory.candidates", KT_INTEGER, F(memory_candidates), "100", "1,10000",
     "Keyword (BM25) candidates a recall scores."},
    {"memory.activation_seeds", KT_INTEGER, F(memory_activation_seeds), "5", "1,100",
     "Best-scoring items that spread activation to their neighbours."},
    {"memory.activation_hops", KT_INTEGER, F(memory_activation_hops), "2", "0,2",
     "How far activation spreads along links: 0 (off), 1 or 2 hops."},
    {"memory.activation_decay", KT_NUMBER, F(memory_activation_decay), "0.5", "0,1",
     "Factor by which activation shrinks on each hop."},
    {"memory.hebbian_rate", KT_NUMBER, F(memory_hebbian_rate), "0.2", "0,1",
     "Learning rate of `co_recalled` links: items used together move their link's weight w to "
     "w + rate * (1 - w)."},
    {"memory.link_half_life_days", KT_NUMBER, F(memory_link_half_life_days), "30", "0.001,36500",
     "Half-life of `co_recalled` links, in days: an unused link's weight halves in this time."},
    {"memory.similar_threshold", KT_NUMBER, F(memory_similar_threshold), "0.5", "0,1",
     "TF-IDF cosine similarity at or above which `memory similar` (and the novelty check of "
     "ideas) counts a text as a near duplicate."},
    {"memory.embedding_model", KT_STRING, F(memory_embedding_model), "", NULL,
     "Embedding model for recall, sent to an OpenAI-compatible `/embeddings` endpoint; empty "
     "turns embeddings off."},
    {"memory.embedding_base_url", KT_STRING, F(memory_embedding_base_url), "", NULL,
     "Endpoint of the embeddings API (the part before `/embeddings`); empty means "
     "`llm.base_url`."},
    {"memory.embedding_api_key_env", KT_STRING, F(memory_embedding_api_key_env), "", NULL,
     "Environment variable holding the key of the embeddings API; empty means "
     "`llm.api_key_env`."},
    {"memory.embedding_scan_max", KT_COUNT, F(memory_embedding_scan_max), "2000", NULL,
     "Up to this many stored embeddings, recall compares the query with every one (exact "
     "vector search); above it, only with the keyword candidates."},
    {"literature.openalex_url", KT_STRING, F(literature_openalex_url), "https://api.openalex.org",
     NULL, "Base URL of the OpenAlex API (a mirror, or a local server in tests)."},
    {"literature.arxiv_url", KT_STRING, F(literature_arxiv_url),
     "https://export.arxiv.org/api/query", NULL, "URL of the arXiv query API."},
    {"literature.openalex_delay", KT_NUMBER, F(literature_openalex_delay), "0.2", "0,3600",
     "Seconds to wait between requests to OpenAlex."},
    {"literature.arxiv_delay", KT_NUMBER, F(literature_arxiv_delay), "3", "0,3600",
     "Seconds to wait between requests to arXiv (its terms ask for at least 3)."},
    {"literature.max_retries", KT_INTEGER, F(literature_max_retries), "3", "0,10",
     "Retries of a failed literature request (connection errors, timeouts, 429, 5xx), with "
     "exponential back-off."},
    {"literature.timeout", KT_SECONDS, F(literature_timeout), "60", NULL,
     "Longest time one literature request may take, in seconds."},
    {"literature.cache_days", KT_NUMBER, F(literature_cache_days), "7", "0,3650",
     "Replies of the literature APIs are kept in `.thalamus/cache/literature` and reused for "
     "this many days; 0 turns the cache off."},
    {"literature.mailto", KT_STRING, F(literature_mailto), "", NULL,
     "E-mail address sent to OpenAlex (its polite pool) and in the User-Agent; empty sends "
     "none."},
    {"agents.cpu_slice", KT_POSINT, F(agents_cpu_slice), "100000000", NULL,
     "Lua instructions an agent may run without waiting (for a model, a run, a timer, "
     "another agent); more stops it with an error, so an endless loop cannot hang thalamus."},
    {"agents.memory_mb", KT_POSINT, F(agents_memory_mb), "256", NULL,
     "Memory of all Lua agents together, in MiB; the agent whose allocation goes over it "
     "fails, the others go on."},
    {"agents.apply_retries", KT_COUNT, F(agents_apply_retries), "2", NULL,
     "Times a coder is asked again, with the reason, when its edits cannot be applied."},
    {"agents.extra", KT_STAGES, F(agents_extra), NULL, NULL,
     "More agents for stages of the research loop, after the built-in one: "
     "`{ review = { \"skeptic\" } }` runs the workspace's `agents/skeptic.lua` (a critic) "
     "at the review stage too. Stages: `retrieve`, `ideate`, `review`, `implement`, "
     "`analyse`."},
    {"think.policy", KT_ENUM, F(think_policy), "uct", "uct|puct",
     "Selection rule of `thalamus think`: `uct`, or `puct` (guided by the model's confidence "
     "in each thought)."},
    {"think.c", KT_NUMBER, F(think_c), "1", "0,100",
     "Exploration constant of `thalamus think`'s search."},
    {"think.iterations", KT_POSINT, F(think_iterations), "24", NULL,
     "Iterations of `thalamus think`'s search (each asks the model once or more)."},
    {"think.seconds", KT_NUMBER, F(think_seconds), "0", "0,86400",
     "Most wall-clock seconds `thalamus think` searches; 0: no limit."},
    {"think.width", KT_INTEGER, F(think_width), "3", "1,10",
     "Next thoughts the model proposes at each expansion."},
    {"think.depth", KT_INTEGER, F(think_depth), "4", "1,20",
     "Most thoughts in one chain; a chain that long is final."},
    {"think.jobs", KT_INTEGER, F(think_jobs), "2", "1,64",
     "Search iterations in flight at once (model requests wait in parallel)."},
    {"think.recall", KT_INTEGER, F(think_recall), "5", "0,50",
     "Memory items recalled into each prompt; 0 turns recall off."},
};

#define NKEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"task",   "sandbox",    "loop",   "llm",
                                       "memory", "literature", "agents", "think", NULL};

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

static size_t key_index(const struct key *k)
{
    return (size_t)(k - keys);
}

static char **field_str(struct config *cfg, const struct key *k)
{
    return (char **)((char *)cfg + k->offset);
}

static long *field_long(struct config *cfg, const struct key *k)
{
    return (long *)((char *)cfg + k->offset);
}

static double *field_double(struct config *cfg, const struct key *k)
{
    return (double *)((char *)cfg + k->offset);
}

static char ***field_argv(struct config *cfg, const struct key *k)
{
    return (char ***)((char *)cfg + k->offset);
}

static const char *cfield_str(const struct config *cfg, const struct key *k)
{
    return *(char *const *)((const char *)cfg + k->offset);
}

static void argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

static void set_string(struct config *cfg, const struct key *k, const char *value)
{
    char **slot = field_str(cfg, k);
    free(*slot);
    *slot = value ? xstrdup(value) : NULL;
}

static void mark(struct config *cfg, const struct key *k, enum config_source src, const char *note)
{
    size_t i = key_index(k);
    cfg->sources[i] = src;
    free(cfg->source_notes[i]);
    cfg->source_notes[i] = note ? xstrdup(note) : NULL;
}

static bool enum_allows(const char *choices, const char *value)
{
    size_t n = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, value, n))
            return true;
        p += len + (bar ? 1 : 0);
    }
    return false;
}

/* "one of a, b or c" for an enum's choices. */
static char *enum_phrase(const char *choices)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "one of ");
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        buf_printf(&b, "\"%.*s\"%s", (int)len, p,
                   bar ? (strchr(bar + 1, '|') ? ", " : " or ") : "");
        p += len + (bar ? 1 : 0);
    }
    return buf_detach(&b, NULL);
}

static void apply_defaults(struct config *cfg)
{
    cfg->llm_budget.run.cost = -1;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (!k->def)
            continue;
        if (k->type == KT_POSINT || k->type == KT_COUNT)
            *field_long(cfg, k) = strtol(k->def, NULL, 10);
        else if (k->type == KT_SECONDS || k->type == KT_TEMPERATURE || k->type == KT_NUMBER)
            *field_double(cfg, k) = k->def[0] ? strtod(k->def, NULL) : NAN;
        else if (k->type == KT_INTEGER)
            *field_long(cfg, k) = strtol(k->def, NULL, 10);
        else if (k->type == KT_STRING || k->type == KT_ENUM)
            set_string(cfg, k, k->def);
        else if (k->type == KT_BOOL)
            *(bool *)((char *)cfg + k->offset) = !strcmp(k->def, "true");
    }
}

/* ---- evaluating thalamus.lua ------------------------------------------ */

struct lua_limits {
    size_t used;
    int hook_calls;
};

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_limits *lim = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        lim->used -= old;
        free(ptr);
        return NULL;
    }
    if (nsize > old && nsize - old > LUA_MEMORY_CAP - lim->used)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        lim->used = lim->used - old + nsize;
    return p;
}

static void instruction_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lua_limits *lim;
    lua_getallocf(L, (void **)&lim);
    if (++lim->hook_calls > LUA_MAX_HOOK_CALLS)
        luaL_error(L, "evaluation did not finish after %d million instructions (an endless loop?)",
                   LUA_HOOK_INTERVAL / 1000 * LUA_MAX_HOOK_CALLS / 1000);
}

static lua_State *restricted_state(struct lua_limits *lim)
{
    lua_State *L = lua_newstate(capped_alloc, lim);
    if (!L)
        return NULL;
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    /* Nothing that reaches files, loads code or writes to standard output. */
    static const char *const removed[] = {"dofile", "loadfile", "load", "print", NULL};
    for (const char *const *name = removed; *name; name++) {
        lua_pushnil(L);
        lua_setglobal(L, *name);
    }
    lua_sethook(L, instruction_hook, LUA_MASKCOUNT, LUA_HOOK_INTERVAL);
    return L;
}

/* A short description of the Lua value at idx, for error messages. */
static char *describe_value(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        return len > 40 ? xasprintf("\"%.37s...\"", s) : xasprintf("\"%s\"", s);
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return xasprintf("%lld", (long long)lua_tointeger(L, idx));
        return xasprintf("%.17g", lua_tonumber(L, idx));
    case LUA_TBOOLEAN:
        return xstrdup(lua_toboolean(L, idx) ? "true" : "false");
    case LUA_TTABLE:
        return xstrdup("a table");
    case LUA_TNIL:
        return xstrdup("nil");
    default:
        return xasprintf("a %s", luaL_typename(L, idx));
    }
}

static int type_error(const char *file, lua_State *L, int idx, const char *name, const char *what)
{
    char *got = describe_value(L, idx);
    int rc = error_setc(TH_ECONFIG, "%s: %s must be %s, got %s", file, name, what, got);
    free(got);
    return rc;
}

/* Reads an integer from a Lua number that holds a whole value. */
static bool lua_whole(lua_State *L, int idx, long *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return false;
    if (lua_isinteger(L, idx)) {
        *out = (long)lua_tointeger(L, idx);
        return true;
    }
    double d = lua_tonumber(L, idx);
    if (d != floor(d) || fabs(d) > 9e15)
        return false;
    *out = (long)d;
    return true;
}

static bool is_sequence(lua_State *L, int idx, lua_Integer *len)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    lua_Integer count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
    }
    *len = n;
    return count == n;
}

static int read_argv(struct config *cfg, const struct key *k, lua_State *L, int idx,
                     const char *file)
{
    char **argv = NULL;
    if (lua_type(L, idx) == LUA_TSTRING) {
        argv = xcalloc(4, sizeof *argv);
        argv[0] = xstrdup("/bin/sh");
        argv[1] = xstrdup("-c");
        argv[2] = xstrdup(lua_tostring(L, idx));
    } else {
        lua_Integer n;
        if (lua_type(L, idx) != LUA_TTABLE || !is_sequence(L, idx, &n) || n == 0)
            return type_error(file, L, idx, k->name,
                              "a non-empty list of strings such as { \"python3\", \"train.py\" }");
        argv = xcalloc((size_t)n + 1, sizeof *argv);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                char *name = xasprintf("%s[%lld]", k->name, (long long)i);
                int rc = type_error(file, L, -1, name, "a string");
                free(name);
                lua_pop(L, 1);
                argv_free(argv);
                return rc;
            }
            argv[i - 1] = xstrdup(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    argv_free(*field_argv(cfg, k));
    *field_argv(cfg, k) = argv;
    return 0;
}

static void search_param_clear(struct search_param *p)
{
    free(p->name);
    cJSON_Delete(p->choices);
}

static int read_range_field(lua_State *L, const char *file, const char *pname, const char *field,
                            double *out)
{
    lua_getfield(L, -1, field);
    int rc = 0;
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1))) {
        char *name = xasprintf("task.search_space.%s.%s", pname, field);
        rc = type_error(file, L, -1, name, "a finite number");
        free(name);
    } else {
        *out = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return rc;
}

/* Parses one entry of task.search_space, the table at the top of the stack. */
static int read_search_param(lua_State *L, const char *file, const char *pname,
                             struct search_param *p)
{
    static const char *const fields[] = {"min", "max", "scale", "integer", "choices", NULL};
    char *prefix = xasprintf("task.search_space.%s", pname);
    int rc = 0;
    if (lua_type(L, -1) != LUA_TTABLE) {
        rc = type_error(file, L, -1, prefix,
                        "a table such as { min = 0.001, max = 1, scale = \"log\" } or "
                        "{ choices = { \"a\", \"b\" } }");
        goto cleanup;
    }
    /* unknown fields */
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        bool known = false;
        for (const char *const *x = fields; f && *x; x++)
            known |= !strcmp(*x, f);
        if (!known) {
            const char *hint = f ? text_closest(f, fields) : NULL;
            char *got = describe_value(L, -1);
            rc = error_setc(TH_ECONFIG,
                            "%s: unknown field %s in %s%s%s%s; expected min, max, "
                            "scale, integer or choices",
                            file, got, prefix, hint ? " (did you mean '" : "", hint ? hint : "",
                            hint ? "'?)" : "");
            free(got);
            lua_pop(L, 1);
            goto cleanup;
        }
    }
    p->name = xstrdup(pname);
    lua_getfield(L, -1, "choices");
    bool has_choices = !lua_isnil(L, -1);
    if (has_choices) {
        lua_Integer n;
        if (lua_type(L, -1) != LUA_TTABLE || !is_sequence(L, lua_gettop(L), &n) || n == 0) {
            char *name = xasprintf("%s.choices", prefix);
            rc = type_error(file, L, -1, name, "a non-empty list of strings, numbers or booleans");
            free(name);
            lua_pop(L, 1);
            goto cleanup;
        }
        p->kind = SEARCH_CHOICE;
        p->choices = cJSON_CreateArray();
        for (lua_Integer i = 1; i <= n && rc == 0; i++) {
            lua_rawgeti(L, -1, i);
            switch (lua_type(L, -1)) {
            case LUA_TSTRING:
                cJSON_AddItemToArray(p->choices, cJSON_CreateString(lua_tostring(L, -1)));
                break;
            case LUA_TNUMBER:
                cJSON_AddItemToArray(p->choices, cJSON_CreateNumber(lua_tonumber(L, -1)));
                break;
            case LUA_TBOOLEAN:
                cJSON_AddItemToArray(p->choices, cJSON_CreateBool(lua_toboolean(L, -1)));
                break;
            default: {
                char *name = xasprintf("%s.choices[%lld]", prefix, (long long)i);
                rc = type_error(file, L, -1, name, "a string, number or boolean");
                free(name);
            }
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (rc == 0) {
            for (const char *const *x = fields; *x && strcmp(*x, "choices"); x++) {
                lua_getfield(L, -1, *x);
                bool present = !lua_isnil(L, -1);
                lua_pop(L, 1);
                if (present) {
                    rc = error_setc(TH_ECONFIG, "%s: %s has choices, so it cannot also have '%s'",
                                    file, prefix, *x);
                    break;
                }
            }
        }
        goto cleanup;
    }
    lua_pop(L, 1);
    p->kind = SEARCH_RANGE;
    if ((rc = read_range_field(L, file, pname, "min", &p->min)) < 0 ||
        (rc = read_range_field(L, file, pname, "max", &p->max)) < 0)
        goto cleanup;
    if (p->min >= p->max) {
        rc = error_setc(TH_ECONFIG, "%s: %s.min (%g) must be less than %s.max (%g)", file, prefix,
                        p->min, prefix, p->max);
        goto cleanup;
    }
    lua_getfield(L, -1, "scale");
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!s || (strcmp(s, "linear") && strcmp(s, "log"))) {
            char *name = xasprintf("%s.scale", prefix);
            rc = type_error(file, L, -1, name, "\"linear\" or \"log\"");
            free(name);
        } else {
            p->log_scale = !strcmp(s, "log");
        }
    }
    lua_pop(L, 1);
    if (rc == 0 && p->log_scale && p->min <= 0)
        rc = error_setc(TH_ECONFIG, "%s: %s has a log scale, so its min must be above 0, got %g",
                        file, prefix, p->min);
    if (rc < 0)
        goto cleanup;
    lua_getfield(L, -1, "integer");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            char *name = xasprintf("%s.integer", prefix);
            rc = type_error(file, L, -1, name, "true or false");
            free(name);
        } else {
            p->integer = lua_toboolean(L, -1);
        }
    }
    lua_pop(L, 1);
    if (rc == 0 && p->integer && (p->min != floor(p->min) || p->max != floor(p->max)))
        rc = error_setc(TH_ECONFIG,
                        "%s: %s is an integer range, so min and max must be whole "
                        "numbers, got %g and %g",
                        file, prefix, p->min, p->max);
cleanup:
    free(prefix);
    return rc;
}

static int compare_params(const void *a, const void *b)
{
    return strcmp(((const struct search_param *)a)->name, ((const struct search_param *)b)->name);
}

static int read_search_space(struct config *cfg, lua_State *L, int idx, const char *file)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, "task.search_space", "a table of parameters by name");
    size_t n = 0, cap = 8;
    struct search_param *params = xcalloc(cap, sizeof *params);
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            char *got = describe_value(L, -2);
            rc = error_setc(TH_ECONFIG,
                            "%s: task.search_space has the key %s; parameter names "
                            "must be strings",
                            file, got);
            free(got);
            lua_pop(L, 2);
            break;
        }
        if (n == cap)
            params = xreallocarray(params, cap *= 2, sizeof *params);
        memset(&params[n], 0, sizeof params[n]);
        rc = read_search_param(L, file, lua_tostring(L, -2), &params[n]);
        n++;
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);
            break;
        }
    }
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            search_param_clear(&params[i]);
        free(params);
        return rc;
    }
    qsort(params, n, sizeof *params, compare_params);
    for (size_t i = 0; i < cfg->search_space_len; i++)
        search_param_clear(&cfg->search_space[i]);
    free(cfg->search_space);
    cfg->search_space = params;
    cfg->search_space_len = n;
    return 0;
}

/* ---- llm.prices and llm.budget ---------------------------------------- */

static void prices_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->llm_prices_len; i++)
        free(cfg->llm_prices[i].model);
    free(cfg->llm_prices);
    cfg->llm_prices = NULL;
    cfg->llm_prices_len = 0;
}

static void budget_free(struct config_budget *b)
{
    for (size_t i = 0; i < b->sites_len; i++)
        free(b->sites[i].site);
    free(b->sites);
    b->sites = NULL;
    b->sites_len = 0;
}

/* Reads field of the table at the top of the stack as a number >= 0. */
static int read_nonneg_field(lua_State *L, const char *file, const char *prefix, const char *field,
                             bool integer, double *out, bool *present)
{
    lua_getfield(L, -1, field);
    int rc = 0;
    *present = !lua_isnil(L, -1);
    long whole = 0;
    if (!*present) {
        /* absent */
    } else if (integer ? !lua_whole(L, -1, &whole) || whole < 0
                       : lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)) ||
                             lua_tonumber(L, -1) < 0) {
        char *name = xasprintf("%s.%s", prefix, field);
        rc = type_error(file, L, -1, name,
                        integer ? "a non-negative integer" : "a non-negative number");
        free(name);
    } else {
        *out = integer ? (double)whole : lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return rc;
}

/* Refuses fields of the table at the top of the stack that are not in allowed. */
static int check_fields(lua_State *L, const char *file, const char *prefix,
                        const char *const *allowed)
{
    int rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2)) {
        lua_pop(L, 1);
        const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        const char *hint = f ? text_closest(f, allowed) : NULL;
        bool ok = false;
        for (const char *const *a = allowed; f && *a; a++)
            ok |= !strcmp(*a, f);
        if (ok)
            continue;
        char *got = describe_value(L, -1);
        if (hint)
            rc = error_setc(TH_ECONFIG, "%s: %s has the unknown field %s; did you mean '%s'?", file,
                            prefix, got, hint);
        else
            rc = error_setc(TH_ECONFIG, "%s: %s has the unknown field %s", file, prefix, got);
        free(got);
        lua_pop(L, 1);
    }
    return rc;
}

static int compare_prices(const void *a, const void *b)
{
    return strcmp(((const struct config_price *)a)->model, ((const struct config_price *)b)->model);
}

static int read_prices(struct config *cfg, lua_State *L, int idx, const char *file)
{
    static const char *const fields[] = {"input", "output", NULL};
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, "llm.prices",
                          "a table of prices by model, such as { [\"gpt-4o-mini\"] = "
                          "{ input = 0.15, output = 0.6 } }");
    size_t n = 0, cap = 8;
    struct config_price *prices = xcalloc(cap, sizeof *prices);
    int rc = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            char *got = describe_value(L, -2);
            rc = error_setc(TH_ECONFIG,
                            "%s: llm.prices has the key %s; model names must be "
                            "strings",
                            file, got);
            free(got);
            lua_pop(L, 2);
            break;
        }
        char *prefix = xasprintf("llm.prices[\"%s\"]", lua_tostring(L, -2));
        bool has_in = false, has_out = false;
        double in = 0, out = 0;
        if (lua_type(L, -1) != LUA_TTABLE)
            rc = type_error(file, L, -1, prefix, "a table { input = N, output = N }");
        if (rc == 0)
            rc = check_fields(L, file, prefix, fields);
        if (rc == 0)
            rc = read_nonneg_field(L, file, prefix, "input", false, &in, &has_in);
        if (rc == 0)
            rc = read_nonneg_field(L, file, prefix, "output", false, &out, &has_out);
        if (rc == 0 && (!has_in || !has_out))
            rc = error_setc(TH_ECONFIG,
                            "%s: %s needs both input and output (money per million tokens)", file,
                            prefix);
        free(prefix);
        if (rc == 0) {
            if (n == cap)
                prices = xreallocarray(prices, cap *= 2, sizeof *prices);
            prices[n++] = (struct config_price){xstrdup(lua_tostring(L, -2)), in, out};
        }
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);
            break;
        }
    }
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            free(prices[i].model);
        free(prices);
        return rc;
    }
    qsort(prices, n, sizeof *prices, compare_prices);
    prices_free(cfg);
    cfg->llm_prices = prices;
    cfg->llm_prices_len = n;
    return 0;
}

/* Reads { tokens = N, cost = X } (plus sites when allow_sites) at the top of the stack. */
static int read_limit(lua_State *L, const char *file, const char *prefix, bool allow_sites,
                      struct config_limit *out)
{
    static const char *const run_fields[] = {"tokens", "cost", "sites", NULL};
    static const char *const site_fields[] = {"tokens", "cost", NULL};
    bool present;
    double tokens = 0, cost = -1;
    int rc = check_fields(L, file, prefix, allow_sites ? run_fields : site_fields);
    if (rc == 0)
        rc = read_nonneg_field(L, file, prefix, "tokens", true, &tokens, &present);
    if (rc == 0)
        rc = read_nonneg_field(L, file, prefix, "cost", false, &cost, &present);
    out->tokens = (long)tokens;
    out->cost = cost;
    return rc;
}

static int read_budget(struct config *cfg, lua_State *L, int idx, const char *file)
{
    struct config_budget b = {{0, -1}, NULL, 0};
    size_t cap = 0;
    int rc = 0;
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, "llm.budget",
                          "a table such as { tokens = 200000, cost = 2.5 }");
    lua_pushvalue(L, idx);
    rc = read_limit(L, file, "llm.budget", true, &b.run);
    lua_getfield(L, -1, "sites");
    if (rc == 0 && !lua_isnil(L, -1) && lua_type(L, -1) != LUA_TTABLE)
        rc = type_error(file, L, -1, "llm.budget.sites",
                        "a table of limits by call site, such as { planner = { tokens = 50000 } }");
    if (rc == 0 && lua_type(L, -1) == LUA_TTABLE) {
        int sidx = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, sidx)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                char *got = describe_value(L, -2);
                rc = error_setc(TH_ECONFIG,
                                "%s: llm.budget.sites has the key %s; call sites are names", file,
                                got);
                free(got);
                lua_pop(L, 2);
                break;
            }
            char *prefix = xasprintf("llm.budget.sites.%s", lua_tostring(L, -2));
            struct config_limit lim = {0, -1};
            if (lua_type(L, -1) != LUA_TTABLE)
                rc = type_error(file, L, -1, prefix, "a table { tokens = N, cost = X }");
            else
                rc = read_limit(L, file, prefix, false, &lim);
            free(prefix);
            if (rc == 0) {
                if (b.sites_len == cap)
                    b.sites = xreallocarray(b.sites, cap = cap ? 2 * cap : 4, sizeof *b.sites);
                b.sites[b.sites_len++] =
                    (struct config_site_budget){xstrdup(lua_tostring(L, -2)), lim};
            }
            lua_pop(L, 1);
            if (rc < 0) {
                lua_pop(L, 1);
                break;
            }
        }
    }
    lua_pop(L, 2);
    if (rc < 0) {
        budget_free(&b);
        return rc;
    }
    budget_free(&cfg->llm_budget);
    cfg->llm_budget = b;
    return 0;
}

/* The bounds of a KT_NUMBER or KT_INTEGER key. */
static void key_range(const struct key *k, double *lo, double *hi)
{
    char *end;
    *lo = strtod(k->choices, &end);
    *hi = strtod(end + 1, NULL);
}

/* ---- sandbox.binds and sandbox.env ----------------------------------- */

static int read_list(struct config *cfg, const struct key *k, lua_State *L, int idx,
                     const char *file)
{
    lua_Integer n;
    if (lua_type(L, idx) != LUA_TTABLE || !is_sequence(L, idx, &n))
        return type_error(file, L, idx, k->name, "a list of strings such as { \"/data\" }");
    char **list = n ? xcalloc((size_t)n + 1, sizeof *list) : NULL;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING || !*lua_tostring(L, -1)) {
            char *name = xasprintf("%s[%lld]", k->name, (long long)i);
            int rc = type_error(file, L, -1, name, "a non-empty string");
            free(name);
            lua_pop(L, 1);
            argv_free(list);
            return rc;
        }
        list[i - 1] = xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    argv_free(*field_argv(cfg, k));
    *field_argv(cfg, k) = list;
    return 0;
}

static bool env_name_ok(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_env(struct config *cfg, const struct key *k, lua_State *L, int idx,
                    const char *file)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, k->name,
                          "a table of variables such as { OMP_NUM_THREADS = \"2\" }");
    size_t n = 0, cap = 8;
    char **env = xcalloc(cap + 1, sizeof *env);
    int rc = 0;
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, idx)) {
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        size_t len = name ? strlen(name) : 0;
        if (!name || !env_name_ok(name)) {
            char *got = describe_value(L, -2);
            rc = error_setc(TH_ECONFIG,
                            "%s: %s has the key %s; variable names are letters, digits and _", file,
                            k->name, got);
            free(got);
        } else if ((len >= 8 && !strcmp(name + len - 8, "_API_KEY")) || !strcmp(name, "API_KEY")) {
            rc = error_setc(TH_ECONFIG,
                            "%s: %s.%s: API keys never enter the sandbox; remove it (keys come "
                            "from the environment, for thalamus only)",
                            file, k->name, name);
        } else if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
            char *what = xasprintf("%s.%s", k->name, name);
            rc = type_error(file, L, -1, what, "a string");
            free(what);
        } else {
            if (n == cap)
                env = xreallocarray(env, (cap *= 2) + 1, sizeof *env);
            char *value = describe_value(L, -1); /* numbers as written */
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : value;
            env[n++] = xasprintf("%s=%s", name, v);
            env[n] = NULL;
            free(value);
        }
        lua_pop(L, 1);
    }
    if (rc < 0) {
        lua_pop(L, 1);
        argv_free(env);
        return rc;
    }
    qsort(env, n, sizeof *env, compare_strings);
    argv_free(*field_argv(cfg, k));
    if (n == 0) {
        free(env);
        env = NULL;
    }
    *field_argv(cfg, k) = env;
    return 0;
}

/* ---- agents.extra --------------------------------------------------------- */

static const char *const stage_names[] = {"retrieve",  "ideate",  "review",
                                          "implement", "analyse", NULL};

static bool agent_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

/* { review = { "skeptic" }, ideate = { "wild" } } -> "review:skeptic", ... in
 * the order of stage_names, then as listed. */
static int read_stages(struct config *cfg, const struct key *k, lua_State *L, int idx,
                       const char *file)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, k->name,
                          "a table of agent lists by stage, such as { review = { \"skeptic\" } }");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *stage = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        bool known = false;
        for (const char *const *s = stage_names; stage && *s; s++)
            known |= !strcmp(*s, stage);
        if (!known) {
            char *got = describe_value(L, -1);
            const char *hint = stage ? text_closest(stage, stage_names) : NULL;
            int rc = error_setc(TH_ECONFIG,
                                "%s: %s has the key %s; the stages are retrieve, ideate, review, "
                                "implement and analyse%s%s%s",
                                file, k->name, got, hint ? " (did you mean '" : "",
                                hint ? hint : "", hint ? "'?)" : "");
            free(got);
            lua_pop(L, 1);
            return rc;
        }
    }
    size_t n = 0, cap = 8;
    char **list = xcalloc(cap + 1, sizeof *list);
    int rc = 0;
    for (const char *const *s = stage_names; *s && rc == 0; s++) {
        lua_getfield(L, idx, *s);
        lua_Integer len = 0;
        if (lua_isnil(L, -1)) {
            /* no extra agent for this stage */
        } else if (lua_type(L, -1) != LUA_TTABLE || !is_sequence(L, lua_gettop(L), &len)) {
            char *name = xasprintf("%s.%s", k->name, *s);
            rc = type_error(file, L, -1, name, "a list of agent names such as { \"skeptic\" }");
            free(name);
        }
        for (lua_Integer i = 1; rc == 0 && i <= len; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING || !agent_name_ok(lua_tostring(L, -1))) {
                char *name = xasprintf("%s.%s[%lld]", k->name, *s, (long long)i);
                rc = type_error(file, L, -1, name,
                                "an agent name (a letter, then letters, digits or '_')");
                free(name);
            } else {
                if (n == cap)
                    list = xreallocarray(list, (cap *= 2) + 1, sizeof *list);
                list[n++] = xasprintf("%s:%s", *s, lua_tostring(L, -1));
                list[n] = NULL;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (rc < 0 || n == 0) {
        argv_free(list);
        list = NULL;
    }
    if (rc < 0)
        return rc;
    argv_free(*field_argv(cfg, k));
    *field_argv(cfg, k) = list;
    return 0;
}

/* Validates and stores the value at idx for key k. */
static int read_value(struct config *cfg, const struct key *k, lua_State *L, int idx,
                      const char *file)
{
    switch (k->type) {
    case KT_STRING:
        if (lua_type(L, idx) != LUA_TSTRING)
            return type_error(file, L, idx, k->name, "a string");
        set_string(cfg, k, lua_tostring(L, idx));
        return 0;
    case KT_ENUM: {
        if (lua_type(L, idx) != LUA_TSTRING || !enum_allows(k->choices, lua_tostring(L, idx))) {
            char *what = enum_phrase(k->choices);
            int rc = type_error(file, L, idx, k->name, what);
            free(what);
            return rc;
        }
        set_string(cfg, k, lua_tostring(L, idx));
        return 0;
    }
    case KT_POSINT: {
        long v;
        if (!lua_whole(L, idx, &v) || v <= 0)
            return type_error(file, L, idx, k->name, "a positive integer");
        *field_long(cfg, k) = v;
        return 0;
    }
    case KT_ARGV:
        return read_argv(cfg, k, L, idx, file);
    case KT_SPACE:
        return read_search_space(cfg, L, idx, file);
    case KT_SECONDS:
        if (lua_type(L, idx) != LUA_TNUMBER || !isfinite(lua_tonumber(L, idx)) ||
            lua_tonumber(L, idx) <= 0 || lua_tonumber(L, idx) > 1e6)
            return type_error(file, L, idx, k->name, "a positive number of seconds");
        *field_double(cfg, k) = lua_tonumber(L, idx);
        return 0;
    case KT_COUNT: {
        long v;
        if (!lua_whole(L, idx, &v) || v < 0)
            return type_error(file, L, idx, k->name, "a non-negative integer");
        *field_long(cfg, k) = v;
        return 0;
    }
    case KT_TEMPERATURE:
        if (lua_type(L, idx) != LUA_TNUMBER || !(lua_tonumber(L, idx) >= 0) ||
            lua_tonumber(L, idx) > 2)
            return type_error(file, L, idx, k->name, "a number from 0 to 2");
        *field_double(cfg, k) = lua_tonumber(L, idx);
        return 0;
    case KT_PRICES:
        return read_prices(cfg, L, idx, file);
    case KT_BUDGET:
        return read_budget(cfg, L, idx, file);
    case KT_NUMBER:
    case KT_INTEGER: {
        double lo, hi;
        key_range(k, &lo, &hi);
        long whole = 0;
        bool ok = k->type == KT_INTEGER ? lua_whole(L, idx, &whole) && whole >= lo && whole <= hi
                                        : lua_type(L, idx) == LUA_TNUMBER &&
                                              lua_tonumber(L, idx) >= lo &&
                                              lua_tonumber(L, idx) <= hi;
        if (!ok) {
            char *what = xasprintf("%s from %g to %g",
                                   k->type == KT_INTEGER ? "an integer" : "a number", lo, hi);
            int rc = type_error(file, L, idx, k->name, what);
            free(what);
            return rc;
        }
        if (k->type == KT_INTEGER)
            *field_long(cfg, k) = whole;
        else
            *field_double(cfg, k) = lua_tonumber(L, idx);
        return 0;
    }
    case KT_BOOL:
        if (lua_type(L, idx) != LUA_TBOOLEAN)
            return type_error(file, L, idx, k->name, "true or false");
        *(bool *)((char *)cfg + k->offset) = lua_toboolean(L, idx);
        return 0;
    case KT_LIST:
        return read_list(cfg, k, L, idx, file);
    case KT_ENV:
        return read_env(cfg, k, L, idx, file);
    case KT_STAGES:
        return read_stages(cfg, k, L, idx, file);
    }
    return error_set("%s: %s has an unhandled type", file, k->name);
}

static const char *const *keys_of_section(const char *section)
{
    static const char *names[NKEYS + 1];
    size_t n = 0, sl = strlen(section);
    for (size_t i = 0; i < NKEYS; i++)
        if (!strncmp(keys[i].name, section, sl) && keys[i].name[sl] == '.')
            names[n++] = keys[i].name + sl + 1;
    names[n] = NULL;
    return names;
}

static int unknown_key(const char *file, const char *section, const char *name)
{
    const char *const *candidates = section ? keys_of_section(section) : sections;
    const char *hint = text_closest(name, candidates);
    struct buf known;
    buf_init(&known, 0);
    for (const char *const *c = candidates; *c; c++)
        buf_printf(&known, "%s%s", c == candidates ? "" : ", ", *c);
    int rc;
    if (hint)
        rc = error_setc(TH_ECONFIG, "%s: unknown key '%s%s%s'; did you mean '%s%s%s'?", file,
                        section ? section : "", section ? "." : "", name, section ? section : "",
                        section ? "." : "", hint);
    else
        rc = error_setc(TH_ECONFIG, "%s: unknown key '%s%s%s' (known: %s)", file,
                        section ? section : "", section ? "." : "", name, buf_str(&known));
    buf_free(&known);
    return rc;
}

static int read_section(struct config *cfg, lua_State *L, const char *file, const char *section)
{
    int idx = lua_gettop(L);
    if (lua_type(L, idx) != LUA_TTABLE)
        return type_error(file, L, idx, section, "a table");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            char *got = describe_value(L, -2);
            int rc = error_setc(TH_ECONFIG, "%s: %s has the key %s; keys must be names", file,
                                section, got);
            free(got);
            lua_pop(L, 2);
            return rc;
        }
        char *full = xasprintf("%s.%s", section, lua_tostring(L, -2));
        const struct key *k = find_key(full);
        int rc = k ? read_value(cfg, k, L, lua_gettop(L), file)
                   : unknown_key(file, section, lua_tostring(L, -2));
        if (rc == 0)
            mark(cfg, k, CONFIG_FILE, NULL);
        free(full);
        lua_pop(L, 1);
        if (rc < 0) {
            lua_pop(L, 1);
            return rc;
        }
    }
    return 0;
}

static int read_file(struct config *cfg, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *file = slash ? slash + 1 : path;
    struct buf src;
    buf_init(&src, 1 << 20);
    struct lua_limits lim = {0, 0};
    lua_State *L = NULL;
    int rc = buf_read_file(&src, path);
    if (rc < 0) {
        if (error_code() != TH_ENOTFOUND)
            error_prefix("cannot read the configuration");
        goto cleanup;
    }
    L = restricted_state(&lim);
    if (!L) {
        rc = error_set("%s: cannot create a Lua state", file);
        goto cleanup;
    }
    char *chunkname = xasprintf("@%s", file);
    int status = luaL_loadbufferx(L, buf_str(&src), src.len, chunkname, "t");
    free(chunkname);
    if (status == LUA_OK)
        status = lua_pcall(L, 0, 1, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (status == LUA_ERRMEM)
            rc = error_setc(TH_ECONFIG, "%s: evaluation used more than %zu MiB of memory", file,
                            LUA_MEMORY_CAP >> 20);
        else if (msg && !strncmp(msg, file, strlen(file)))
            rc = error_setc(TH_ECONFIG, "%s", msg);
        else
            rc = error_setc(TH_ECONFIG, "%s: %s", file, msg ? msg : "evaluation failed");
        goto cleanup;
    }
    lua_sethook(L, NULL, 0, 0);
    if (lua_type(L, -1) != LUA_TTABLE) {
        char *got = describe_value(L, -1);
        rc = error_setc(TH_ECONFIG,
                        "%s must return a table, got %s; end the file with "
                        "'return { ... }'",
                        file, got);
        free(got);
        goto cleanup;
    }
    int top = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, top)) {
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        bool known = false;
        for (const char *const *s = sections; name && *s; s++)
            known |= !strcmp(*s, name);
        if (!name) {
            char *got = describe_value(L, -2);
            rc = error_setc(TH_ECONFIG,
                            "%s: the returned table has the key %s; keys must be "
                            "section names (task, sandbox, loop, llm, memory, "
                            "literature, agents)",
                            file, got);
            free(got);
        } else if (!known) {
            rc = unknown_key(file, NULL, name);
        } else {
            rc = read_section(cfg, L, file, name);
        }
        lua_pop(L, 1);
        if (rc < 0)
            goto cleanup;
    }
    cfg->file = xstrdup(path);
cleanup:
    if (L)
        lua_close(L);
    buf_free(&src);
    return rc;
}

/* ---- environment ------------------------------------------------------- */

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int apply_env_string(struct config *cfg, const char *keyname, const char *var)
{
    const char *v = env_value(var);
    if (!v)
        return 0;
    const struct key *k = find_key(keyname);
    if (k->type == KT_ENUM && !enum_allows(k->choices, v)) {
        char *what = enum_phrase(k->choices);
        int rc = error_setc(TH_ECONFIG, "%s: %s must be %s, got \"%s\"", var, k->name, what, v);
        free(what);
        return rc;
    }
    set_string(cfg, k, v);
    mark(cfg, k, CONFIG_ENV, var);
    return 0;
}

static void derive_default(struct config *cfg, const char *keyname, const char *value,
                           const char *note)
{
    const struct key *k = find_key(keyname);
    if (cfg->sources[key_index(k)] != CONFIG_DEFAULT)
        return;
    set_string(cfg, k, value);
    mark(cfg, k, CONFIG_DEFAULT, note);
}

static int apply_env(struct config *cfg)
{
    if (apply_env_string(cfg, "llm.provider", "THALAMUS_PROVIDER") < 0 ||
        apply_env_string(cfg, "llm.model", "THALAMUS_MODEL") < 0)
        return TH_ERR;
    if (env_value("OPENAI_API_KEY"))
        derive_default(cfg, "llm.provider", "openai", "OPENAI_API_KEY is set");
    else if (env_value("ANTHROPIC_API_KEY"))
        derive_default(cfg, "llm.provider", "anthropic", "ANTHROPIC_API_KEY is set");
    else
        derive_default(cfg, "llm.provider", "offline", "no API key in the environment");

    bool anthropic = !strcmp(cfg->llm_provider, "anthropic");
    const char *note = anthropic ? "for anthropic" : "for openai";
    derive_default(cfg, "llm.base_url",
                   anthropic ? "https://api.anthropic.com" : "https://api.openai.com/v1", note);
    derive_default(cfg, "llm.api_key_env", anthropic ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY",
                   note);
    return apply_env_string(cfg, "llm.base_url",
                            anthropic ? "ANTHROPIC_BASE_URL" : "OPENAI_BASE_URL");
}

/* ---- public ------------------------------------------------------------ */

static struct config *config_new(const char *workspace)
{
    struct config *cfg = xcalloc(1, sizeof *cfg);
    cfg->sources = xcalloc(NKEYS, sizeof *cfg->sources);
    cfg->source_notes = xcalloc(NKEYS, sizeof *cfg->source_notes);
    apply_defaults(cfg);
    if (workspace) {
        cfg->workspace = xstrdup(workspace);
        const char *base = strrchr(workspace, '/');
        base = base && base[1] ? base + 1 : workspace;
        set_string(cfg, find_key("task.name"), base);
        mark(cfg, find_key("task.name"), CONFIG_DEFAULT, "the workspace's name");
    }
    return cfg;
}

int config_load_file(struct config **out, const char *path, const char *workspace)
{
    struct config *cfg = config_new(workspace);
    int rc = 0;
    if (path && (rc = read_file(cfg, path)) < 0)
        goto fail;
    if ((rc = apply_env(cfg)) < 0)
        goto fail;
    *out = cfg;
    return 0;
fail:
    config_free(cfg);
    return rc;
}

int config_load(struct config **out, const char *workspace)
{
    if (!workspace)
        return config_load_file(out, NULL, NULL);
    char *path = fs_join(workspace, "thalamus.lua");
    int rc = config_load_file(out, path, workspace);
    if (rc == TH_ENOTFOUND)
        error_set("'%s' has no thalamus.lua; create one (see docs/config.md) or run "
                  "'thalamus init' to make a new workspace",
                  workspace);
    free(path);
    return rc;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (k->type == KT_STRING || k->type == KT_ENUM)
            free(*field_str(cfg, k));
        else if (k->type == KT_ARGV || k->type == KT_LIST || k->type == KT_ENV ||
                 k->type == KT_STAGES)
            argv_free(*field_argv(cfg, k));
        free(cfg->source_notes[i]);
    }
    for (size_t i = 0; i < cfg->search_space_len; i++)
        search_param_clear(&cfg->search_space[i]);
    free(cfg->search_space);
    prices_free(cfg);
    budget_free(&cfg->llm_budget);
    free(cfg->sources);
    free(cfg->source_notes);
    free(cfg->file);
    free(cfg->workspace);
    free(cfg);
}

static cJSON *search_param_json(const struct search_param *p)
{
    cJSON *o = cJSON_CreateObject();
    if (p->kind == SEARCH_CHOICE) {
        cJSON_AddItemToObject(o, "choices", cJSON_Duplicate(p->choices, 1));
    } else {
        cJSON_AddNumberToObject(o, "min", p->min);
        cJSON_AddNumberToObject(o, "max", p->max);
        cJSON_AddStringToObject(o, "scale", p->log_scale ? "log" : "linear");
        cJSON_AddBoolToObject(o, "integer", p->integer);
    }
    return o;
}

static cJSON *limit_json(const struct config_limit *lim)
{
    cJSON *o = cJSON_CreateObject();
    if (lim->tokens > 0)
        cJSON_AddNumberToObject(o, "tokens", (double)lim->tokens);
    if (lim->cost >= 0)
        cJSON_AddNumberToObject(o, "cost", lim->cost);
    return o;
}

static cJSON *value_json(const struct config *cfg, const struct key *k)
{
    switch (k->type) {
    case KT_STRING:
    case KT_ENUM: {
        const char *s = cfield_str(cfg, k);
        return s ? cJSON_CreateString(s) : cJSON_CreateNull();
    }
    case KT_POSINT:
        return cJSON_CreateNumber((double)*(const long *)((const char *)cfg + k->offset));
    case KT_ARGV: {
        char *const *argv = *(char **const *)((const char *)cfg + k->offset);
        if (!argv)
            return cJSON_CreateNull();
        cJSON *a = cJSON_CreateArray();
        for (char *const *p = argv; *p; p++)
            cJSON_AddItemToArray(a, cJSON_CreateString(*p));
        return a;
    }
    case KT_SPACE: {
        cJSON *o = cJSON_CreateObject();
        for (size_t i = 0; i < cfg->search_space_len; i++)
            cJSON_AddItemToObject(o, cfg->search_space[i].name,
                                  search_param_json(&cfg->search_space[i]));
        return o;
    }
    case KT_COUNT:
    case KT_INTEGER:
        return cJSON_CreateNumber((double)*(const long *)((const char *)cfg + k->offset));
    case KT_SECONDS:
    case KT_NUMBER:
    case KT_TEMPERATURE: {
        double d = *(const double *)((const char *)cfg + k->offset);
        return isnan(d) ? cJSON_CreateNull() : cJSON_CreateNumber(d);
    }
    case KT_PRICES: {
        cJSON *o = cJSON_CreateObject();
        for (size_t i = 0; i < cfg->llm_prices_len; i++) {
            cJSON *p = cJSON_AddObjectToObject(o, cfg->llm_prices[i].model);
            cJSON_AddNumberToObject(p, "input", cfg->llm_prices[i].input);
            cJSON_AddNumberToObject(p, "output", cfg->llm_prices[i].output);
        }
        return o;
    }
    case KT_BUDGET: {
        cJSON *o = limit_json(&cfg->llm_budget.run);
        if (cfg->llm_budget.sites_len) {
            cJSON *sites = cJSON_AddObjectToObject(o, "sites");
            for (size_t i = 0; i < cfg->llm_budget.sites_len; i++)
                cJSON_AddItemToObject(sites, cfg->llm_budget.sites[i].site,
                                      limit_json(&cfg->llm_budget.sites[i].limit));
        }
        return o;
    }
    case KT_BOOL:
        return cJSON_CreateBool(*(const bool *)((const char *)cfg + k->offset));
    case KT_LIST:
    case KT_ENV: {
        char *const *v = *(char **const *)((const char *)cfg + k->offset);
        cJSON *c = k->type == KT_LIST ? cJSON_CreateArray() : cJSON_CreateObject();
        for (char *const *p = v; p && *p; p++) {
            if (k->type == KT_LIST) {
                cJSON_AddItemToArray(c, cJSON_CreateString(*p));
            } else {
                const char *eq = strchr(*p, '=');
                char *name = xstrndup(*p, (size_t)(eq - *p));
                cJSON_AddStringToObject(c, name, eq + 1);
                free(name);
            }
        }
        return c;
    }
    case KT_STAGES: {
        char *const *v = *(char **const *)((const char *)cfg + k->offset);
        cJSON *o = cJSON_CreateObject();
        for (char *const *p = v; p && *p; p++) {
            const char *colon = strchr(*p, ':');
            char *stage = xstrndup(*p, (size_t)(colon - *p));
            cJSON *list = cJSON_GetObjectItemCaseSensitive(o, stage);
            if (!list)
                list = cJSON_AddArrayToObject(o, stage);
            cJSON_AddItemToArray(list, cJSON_CreateString(colon + 1));
            free(stage);
        }
        return o;
    }
    }
    return cJSON_CreateNull();
}

static char *source_text(const struct config *cfg, size_t i)
{
    const char *note = cfg->source_notes[i];
    switch (cfg->sources[i]) {
    case CONFIG_FILE:
        return xstrdup("thalamus.lua");
    case CONFIG_ENV:
        return xasprintf("environment %s", note ? note : "");
    case CONFIG_DEFAULT:
        break;
    }
    return note ? xasprintf("default (%s)", note) : xstrdup("default");
}

static bool api_key_set(const struct config *cfg)
{
    return cfg->llm_api_key_env && env_value(cfg->llm_api_key_env);
}

cJSON *config_to_json(const struct config *cfg)
{
    cJSON *root = cJSON_CreateObject();
    if (cfg->file)
        cJSON_AddStringToObject(root, "file", cfg->file);
    else
        cJSON_AddNullToObject(root, "file");
    if (cfg->workspace)
        cJSON_AddStringToObject(root, "workspace", cfg->workspace);
    else
        cJSON_AddNullToObject(root, "workspace");
    cJSON *values = cJSON_AddObjectToObject(root, "values");
    cJSON *sources = cJSON_AddObjectToObject(root, "sources");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *dot = strchr(k->name, '.');
        char section[32];
        snprintf(section, sizeof section, "%.*s", (int)(dot - k->name), k->name);
        cJSON *sec = cJSON_GetObjectItemCaseSensitive(values, section);
        if (!sec)
            sec = cJSON_AddObjectToObject(values, section);
        cJSON_AddItemToObject(sec, dot + 1, value_json(cfg, k));
        char *src = source_text(cfg, i);
        cJSON_AddStringToObject(sources, k->name, src);
        free(src);
    }
    cJSON *llm = cJSON_GetObjectItemCaseSensitive(values, "llm");
    cJSON_AddStringToObject(llm, "api_key", api_key_set(cfg) ? "(set)" : "(not set)");
    return root;
}

static void print_row(FILE *out, const char *name, const char *value, const char *source)
{
    int pad = 30 - (int)strlen(value);
    fprintf(out, "%-32s %s%s%s%*s  %s# %s%s\n", name, term_bold(out), value, term_reset(out),
            pad > 0 ? pad : 0, "", term_dim(out), source, term_reset(out));
}

void config_print(const struct config *cfg, FILE *out)
{
    if (cfg->file)
        fprintf(out, "%s# %s%s\n", term_dim(out), cfg->file, term_reset(out));
    else
        fprintf(out, "%s# not in a workspace: defaults and environment only%s\n", term_dim(out),
                term_reset(out));
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        char *src = source_text(cfg, i);
        if (k->type == KT_SPACE) {
            if (cfg->search_space_len == 0)
                print_row(out, k->name, "{}", src);
            for (size_t j = 0; j < cfg->search_space_len; j++) {
                const struct search_param *p = &cfg->search_space[j];
                char *name = xasprintf("%s.%s", k->name, p->name);
                char *value;
                if (p->kind == SEARCH_CHOICE) {
                    char *c = cJSON_PrintUnformatted(p->choices);
                    value = xasprintf("one of %s", c);
                    free(c);
                } else {
                    value =
                        xasprintf("%g .. %g%s%s", p->min, p->max, p->log_scale ? ", log scale" : "",
                                  p->integer ? ", integer" : "");
                }
                print_row(out, name, value, src);
                free(name);
                free(value);
            }
        } else {
            cJSON *v = value_json(cfg, k);
            char *text = cJSON_PrintUnformatted(v);
            print_row(out, k->name, text ? text : "null", src);
            free(text);
            cJSON_Delete(v);
        }
        free(src);
    }
    char *var_note = xasprintf("environment %s", cfg->llm_api_key_env ? cfg->llm_api_key_env : "");
    print_row(out, "llm.api_key", api_key_set(cfg) ? "(set)" : "(not set)", var_note);
    free(var_note);
}

void config_describe_markdown(FILE *out)
{
    fprintf(out, "| key | type | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const char *type = "";
        char *choices = NULL;
        switch (k->type) {
        case KT_STRING:
            type = "string";
            break;
        case KT_ENUM:
            choices = enum_phrase(k->choices);
            type = choices;
            break;
        case KT_POSINT:
            type = "positive integer";
            break;
        case KT_ARGV:
            type = "list of strings, or a string";
            break;
        case KT_SPACE:
        case KT_PRICES:
        case KT_BUDGET:
            type = "table";
            break;
        case KT_SECONDS:
            type = "seconds (a positive number)";
            break;
        case KT_COUNT:
            type = "non-negative integer";
            break;
        case KT_TEMPERATURE:
            type = "number from 0 to 2";
            break;
        case KT_NUMBER:
        case KT_INTEGER: {
            double lo, hi;
            key_range(k, &lo, &hi);
            choices = xasprintf("%s from %g to %g", k->type == KT_INTEGER ? "integer" : "number",
                                lo, hi);
            type = choices;
            break;
        }
        case KT_BOOL:
            type = "boolean";
            break;
        case KT_LIST:
            type = "list of strings";
            break;
        case KT_ENV:
            type = "table of strings";
            break;
        case KT_STAGES:
            type = "table of lists of agent names";
            break;
        }
        char *def = k->def ? (k->def[0] ? xasprintf("`%s`", k->def) : xstrdup("(unset)"))
                           : xstrdup("see meaning");
        fprintf(out, "| `%s` | %s | %s | %s |\n", k->name, type, def, k->doc);
        free(def);
        free(choices);
    }
}
