/*
 * lua_mcts: the thalamus.mcts module, Monte-Carlo tree search (mcts.h) for
 * agents. thalamus.mcts.new{ expand, evaluate, terminal, ... } makes a
 * search whose nodes carry Lua values; :run() searches until the budget is
 * spent and returns the best node, :best() and :tree() read the tree,
 * :save(name) stores it in the workspace database and
 * thalamus.mcts.load(name, { callbacks }) brings it back.
 *
 * Callbacks may wait (call models, sleep, run agents). With jobs = 1 (the
 * default) they run one after the other in the coroutine that called
 * :run(), which the engine wakes when it has work and which otherwise waits
 * on the loop; with jobs = N, N iterations are in flight and every callback
 * runs in a coroutine of its own (a child task, like the functions of
 * agents.parallel), answering the engine when it returns. terminal must
 * answer at once: it runs inside the engine's selection, on a Lua thread
 * of its own. The values of the nodes live in a Lua table indexed by node
 * id; they are encoded as JSON only when the tree is saved. Depends on
 * agent_internal, mcts, workspace, store, alloc, error and cJSON.
 */
#include "agent_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "mcts.h"
#include "store.h"
#include "text.h"
#include "workspace.h"

#define DEFAULT_ITERATIONS 1000
#define MAX_JOBS           1024
#define CALLS_PER_TURN     256 /* callbacks the runner answers before letting the loop run */

static const char search_key = 'm';

enum req_kind { REQ_EXPAND, REQ_EVALUATE };

struct req {
    mcts_id node;
    int kind;
};

/* A callback running in a child task (jobs > 1). */
struct job {
    struct agent_task *task;
    mcts_id node;
    int kind;
    bool answered;
};

struct search;

/* What the coroutine running :run() waits on. The children of jobs > 1
 * report to the runtime through ch (its count never reaches zero: the
 * runner is woken by the end of the search). */
struct run_wait {
    struct agent_children ch;
    struct search *s;
};

struct search {
    struct mcts *t;
    struct agent_runtime *rt;
    int fn_ref[3];  /* expand, evaluate, terminal */
    int data_ref;   /* table: id + 1 -> the node's value */
    int thread_ref; /* the thread terminal() runs on */
    int self_ref;   /* the userdata, while a run needs it from other threads */
    lua_State *cb_L;
    bool parallel;

    /* one :run() at a time */
    struct agent_task *runner;
    struct run_wait wait; /* set while the runner waits for the engine */
    bool idle, finished, waking;
    struct req *q; /* requests for the runner (jobs = 1) */
    size_t qhead, qlen, qcap;
    struct req cur; /* the request whose callback runs */
    unsigned calls; /* callbacks run since the runner last waited */
    struct job *jobs;
    size_t njobs, jobs_cap;
    char *error; /* a callback error that stopped the search */
};

enum { FN_EXPAND, FN_EVALUATE, FN_TERMINAL };
static const char *const fn_names[] = {"expand", "evaluate", "terminal"};

static const char *const option_names[] = {"expand",
                                           "evaluate",
                                           "terminal",
                                           "policy",
                                           "c",
                                           "widen",
                                           "budget",
                                           "seed",
                                           "backup",
                                           "jobs",
                                           "root",
                                           "virtual_loss",
                                           "evaluate_children",
                                           "reevaluate",
                                           NULL};

/* ---- nodes as Lua values ---------------------------------------------------- */

static void push_data(lua_State *L, struct search *s, mcts_id id)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    lua_rawgeti(L, -1, (lua_Integer)id + 1);
    lua_remove(L, -2);
}

static const char *state_name(enum mcts_state st)
{
    return st == MCTS_TERMINAL ? "terminal" : st == MCTS_PENDING ? "pending" : "expandable";
}

static const char node_meta_key = 'N';
static const char meta_key = 'M';

/* The search of the userdata at idx, or NULL when it is something else. */
static struct search *to_search(lua_State *L, int idx)
{
    struct search *s = lua_touserdata(L, idx);
    if (!s || !lua_getmetatable(L, idx))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &meta_key);
    bool ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ok && s->t ? s : NULL;
}

/* Pushes the values from the root's child down to id. */
static void push_path(lua_State *L, struct search *s, mcts_id id)
{
    unsigned depth = mcts_depth(s->t, id);
    lua_createtable(L, (int)depth, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    for (unsigned i = depth; i >= 1; i--) {
        lua_rawgeti(L, -1, (lua_Integer)id + 1);
        lua_rawseti(L, -3, i);
        id = mcts_parent(s->t, id);
    }
    lua_pop(L, 1);
}

/* __index of node tables: the fields computed when first read (path is
 * kept in the table, the others are read from the tree each time). */
static int node_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (!key || lua_type(L, 2) != LUA_TSTRING)
        return 0;
    lua_pushliteral(L, "search");
    lua_rawget(L, 1);
    struct search *s = to_search(L, -1);
    lua_pushliteral(L, "id");
    lua_rawget(L, 1);
    lua_Integer id = lua_tointeger(L, -1);
    if (!s || id < 0 || (size_t)id >= mcts_size(s->t))
        return 0;
    const struct mcts *t = s->t;
    mcts_id n = (mcts_id)id;
    if (!strcmp(key, "path")) {
        push_path(L, s, n);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1);
    } else if (!strcmp(key, "parent") && mcts_parent(t, n) != MCTS_NONE) {
        lua_pushinteger(L, mcts_parent(t, n));
    } else if (!strcmp(key, "max")) {
        lua_pushnumber(L, mcts_max(t, n));
    } else if (!strcmp(key, "prior")) {
        lua_pushnumber(L, mcts_prior(t, n));
    } else if (!strcmp(key, "state")) {
        lua_pushstring(L, state_name(mcts_state(t, n)));
    } else if (!strcmp(key, "children")) {
        lua_pushinteger(L, mcts_child_count(t, n));
    } else if (!strcmp(key, "room") && mcts_child_limit(t, n) != UINT32_MAX) {
        unsigned limit = mcts_child_limit(t, n), count = mcts_child_count(t, n);
        lua_pushinteger(L, limit > count ? limit - count : 0);
    } else {
        return 0;
    }
    return 1;
}

/* Pushes node id as { id, depth, data, visits, value, search } with the
 * rest (path, parent, max, prior, state, children, room) read through
 * node_index. ud is the stack index of the search's userdata, or 0 for
 * s->self_ref (set while it runs). */
static void push_node(lua_State *L, struct search *s, mcts_id id, int ud)
{
    const struct mcts *t = s->t;
    luaL_checkstack(L, 6, "mcts node");
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, id);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, mcts_depth(t, id));
    lua_setfield(L, -2, "depth");
    push_data(L, s, id);
    lua_setfield(L, -2, "data");
    lua_pushinteger(L, mcts_visits(t, id));
    lua_setfield(L, -2, "visits");
    lua_pushnumber(L, mcts_mean(t, id));
    lua_setfield(L, -2, "value");
    if (ud)
        lua_pushvalue(L, ud);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->self_ref);
    lua_setfield(L, -2, "search");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &node_meta_key);
    lua_setmetatable(L, -2);
}

/* ---- answering the engine from callback results --------------------------------- */

static void record_error(struct search *s, const char *msg)
{
    if (!s->error)
        s->error = xstrdup(msg);
}

/* The results of expand (children list, priors list) are at top - 1 and
 * top of L; adds the children and answers. */
static void answer_expand(lua_State *L, struct search *s, mcts_id node)
{
    int top = lua_gettop(L);
    int kids = top - 1, priors = top;
    if (lua_isnil(L, kids)) {
        mcts_expanded(s->t, node, 0);
        return;
    }
    if (lua_type(L, kids) != LUA_TTABLE ||
        (!lua_isnil(L, priors) && lua_type(L, priors) != LUA_TTABLE)) {
        mcts_expanded(s->t, node,
                      error_set("expand must return a list of children (and optionally a list "
                                "of priors), not a %s",
                                luaL_typename(L, kids)));
        return;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, kids);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    int data = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        double prior = 1.0;
        if (!lua_isnil(L, priors)) {
            lua_rawgeti(L, priors, i);
            if (lua_type(L, -1) == LUA_TNUMBER)
                prior = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        mcts_id c = mcts_add_child(s->t, node, prior, NULL, 0);
        if (c == MCTS_NONE)
            break; /* progressive widening: no more room */
        lua_rawgeti(L, kids, i);
        lua_rawseti(L, data, (lua_Integer)c + 1);
    }
    lua_settop(L, top);
    mcts_expanded(s->t, node, 0);
}

static void answer_evaluate(lua_State *L, struct search *s, mcts_id node)
{
    int top = lua_gettop(L);
    if (lua_type(L, top - 1) != LUA_TNUMBER) {
        mcts_evaluated(s->t, node, 0,
                       error_set("evaluate must return a number from 0 to 1, not a %s",
                                 luaL_typename(L, top - 1)));
        return;
    }
    if (lua_type(L, top) == LUA_TNUMBER && lua_tonumber(L, top) > 0)
        mcts_add_tokens(s->t, (uint64_t)lua_tonumber(L, top));
    mcts_evaluated(s->t, node, lua_tonumber(L, top - 1), 0);
}

/* Answers the request whose callback just returned (status LUA_OK or
 * LUA_YIELD, two results on L) or raised (the error on top). */
static void answer(lua_State *L, struct search *s, int status, mcts_id node, int kind)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        const char *msg = lua_tostring(L, -1);
        int rc = error_set("%s", msg ? msg : "(error object is not a string)");
        if (kind == REQ_EXPAND)
            mcts_expanded(s->t, node, rc);
        else
            mcts_evaluated(s->t, node, 0, rc);
        return;
    }
    if (kind == REQ_EXPAND)
        answer_expand(L, s, node);
    else
        answer_evaluate(L, s, node);
}

/* ---- callbacks in child tasks (jobs > 1) ------------------------------------------ */

static struct job *job_of(struct search *s, struct agent_task *task)
{
    for (size_t i = 0; i < s->njobs; i++)
        if (s->jobs[i].task == task)
            return &s->jobs[i];
    return NULL;
}

static int job_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    struct agent_task *task = agent_task_of(L);
    struct search *s = lua_touserdata(L, 1);
    struct job *j = job_of(s, task);
    if (j && !j->answered) {
        j->answered = true;
        answer(L, s, status, j->node, j->kind);
    }
    return 0;
}

/* The function of a child task: the search at index 1 is pushed by start. */
static int job_main(lua_State *L)
{
    struct agent_task *task = agent_task_of(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &search_key);
    lua_pushlightuserdata(L, task);
    lua_rawget(L, -2);
    struct search *s = lua_touserdata(L, -1);
    lua_settop(L, 0);
    struct job *j = s ? job_of(s, task) : NULL;
    if (!j)
        return 0;
    lua_pushlightuserdata(L, s);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref[j->kind == REQ_EXPAND ? FN_EXPAND : FN_EVALUATE]);
    push_node(L, s, j->node, 0);
    int status = lua_pcallk(L, 1, 2, 0, 0, job_k);
    return job_k(L, status, 0);
}

/* Frees finished children; a child that ended without answering (it died
 * outside its callback) answers with its error. */
static void reap_jobs(struct search *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->njobs; i++) {
        struct job j = s->jobs[i];
        if (j.task->state != TASK_DONE) {
            s->jobs[k++] = j;
            continue;
        }
        char *msg = j.answered ? NULL : xstrdup(j.task->error ? j.task->error : "it stopped");
        lua_rawgetp(s->cb_L, LUA_REGISTRYINDEX, &search_key);
        lua_pushlightuserdata(s->cb_L, j.task);
        lua_pushnil(s->cb_L);
        lua_rawset(s->cb_L, -3);
        lua_pop(s->cb_L, 1);
        agent_child_free(j.task);
        if (msg) {
            int rc = error_set("%s", msg);
            free(msg);
            if (j.kind == REQ_EXPAND)
                mcts_expanded(s->t, j.node, rc);
            else
                mcts_evaluated(s->t, j.node, 0, rc);
        }
    }
    s->njobs = k;
}

static void spawn_job(struct search *s, mcts_id node, int kind)
{
    reap_jobs(s);
    lua_State *L = s->cb_L;
    lua_pushcfunction(L, job_main);
    struct agent_task *task = agent_spawn_child(L, s->runner, NULL, NULL, lua_gettop(L));
    lua_pop(L, 1);
    if (s->njobs == s->jobs_cap) {
        s->jobs_cap = s->jobs_cap ? 2 * s->jobs_cap : 16;
        s->jobs = xreallocarray(s->jobs, s->jobs_cap, sizeof *s->jobs);
    }
    s->jobs[s->njobs++] = (struct job){task, node, kind, false};
    /* the child finds its search through the registry */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &search_key);
    lua_pushlightuserdata(L, task);
    lua_pushlightuserdata(L, s);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* ---- the engine's callbacks ------------------------------------------------------ */

static void request(struct search *s, mcts_id node, int kind)
{
    if (!s->runner) {
        /* the run was abandoned: nobody will answer */
        mcts_cancel(s->t);
        return;
    }
    if (s->parallel) {
        spawn_job(s, node, kind);
        return;
    }
    if (s->qlen == s->qcap) {
        size_t cap = s->qcap ? s->qcap * 2 : 16;
        struct req *q = xreallocarray(NULL, cap, sizeof *q);
        for (size_t i = 0; i < s->qlen; i++)
            q[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = q;
        s->qhead = 0;
        s->qcap = cap;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = (struct req){node, kind};
    s->qlen++;
    if (s->idle) {
        s->idle = false;
        agent_wake(s->runner);
    }
}

static void on_expand(struct mcts *t, mcts_id node, void *ud)
{
    (void)t;
    request(ud, node, REQ_EXPAND);
}

static void on_evaluate(struct mcts *t, mcts_id node, void *ud)
{
    (void)t;
    request(ud, node, REQ_EVALUATE);
}

static int terminal_protected(lua_State *L)
{
    struct search *s = lua_touserdata(L, 1);
    mcts_id node = (mcts_id)lua_tointeger(L, 2);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref[FN_TERMINAL]);
    push_node(L, s, node, 0);
    lua_call(L, 1, 1);
    return 1;
}

static bool on_terminal(struct mcts *t, mcts_id node, void *ud)
{
    struct search *s = ud;
    if (s->fn_ref[FN_TERMINAL] == LUA_NOREF)
        return false;
    lua_State *L = s->cb_L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, terminal_protected);
    lua_pushlightuserdata(L, s);
    lua_pushinteger(L, node);
    bool yes = false;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        char *m = xasprintf("terminal (node %u): %s", node, msg ? msg : "error");
        record_error(s, m);
        free(m);
        mcts_cancel(t);
    } else {
        yes = lua_toboolean(L, -1);
    }
    lua_settop(L, top);
    return yes;
}

static void on_done(struct mcts *t, enum mcts_stop why, void *ud)
{
    (void)t;
    (void)why;
    struct search *s = ud;
    s->finished = true;
    if (s->runner && s->idle) {
        s->idle = false;
        agent_wake(s->runner);
    }
}

static const struct mcts_callbacks search_callbacks = {
    .expand = on_expand,
    .evaluate = on_evaluate,
    .terminal = on_terminal,
    .done = on_done,
};

/* ---- the userdata -------------------------------------------------------------------- */

static struct search *check_search(lua_State *L, int idx)
{
    struct search *s = to_search(L, idx);
    if (!s)
        luaL_typeerror(L, idx, "mcts search");
    return s;
}

static void search_close(lua_State *L, struct search *s)
{
    /* A run holds the userdata (self_ref, the runner's stack), so a search
     * is only collected without a run, or when the runtime closes, after
     * its tasks were cancelled: never touch s->runner here. */
    mcts_free(s->t);
    s->t = NULL;
    for (int i = 0; i < 3; i++)
        luaL_unref(L, LUA_REGISTRYINDEX, s->fn_ref[i]);
    luaL_unref(L, LUA_REGISTRYINDEX, s->data_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->thread_ref);
    s->data_ref = s->thread_ref = LUA_NOREF;
    for (int i = 0; i < 3; i++)
        s->fn_ref[i] = LUA_NOREF;
    free(s->q);
    s->q = NULL;
    free(s->jobs);
    s->jobs = NULL;
    free(s->error);
    s->error = NULL;
}

static int search_gc(lua_State *L)
{
    struct search *s = lua_touserdata(L, 1);
    if (s && s->t)
        search_close(L, s);
    return 0;
}

static int opt_number(lua_State *L, int idx, const char *field, double *out)
{
    lua_getfield(L, idx, field);
    int type = lua_type(L, -1);
    if (type != LUA_TNIL && type != LUA_TNUMBER)
        return agent_raise(L, "thalamus.mcts: '%s' must be a number, not a %s", field,
                           luaL_typename(L, -1));
    if (type == LUA_TNUMBER)
        *out = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return type == LUA_TNUMBER;
}

static void opt_bool(lua_State *L, int idx, const char *field, bool *out)
{
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            agent_raise(L, "thalamus.mcts: '%s' must be true or false", field);
        *out = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
}

static void opt_choice(lua_State *L, int idx, const char *field, const char *a, const char *b,
                       int *out)
{
    lua_getfield(L, idx, field);
    if (!lua_isnil(L, -1)) {
        const char *v = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING || (strcmp(v, a) && strcmp(v, b)))
            agent_raise(L, "thalamus.mcts: '%s' must be \"%s\" or \"%s\"", field, a, b);
        *out = strcmp(v, a) == 0 ? 0 : 1;
    }
    lua_pop(L, 1);
}

static uint64_t budget_count(lua_State *L, int idx, const char *field)
{
    double v = 0;
    if (opt_number(L, idx, field, &v) && !(v >= 0 && v <= 1e15))
        agent_raise(L, "thalamus.mcts: budget '%s' must be from 0 to 1e15, got %g", field, v);
    return (uint64_t)v;
}

/* Reads budget = { iterations, seconds, tokens } at idx into o. */
static void read_budget(lua_State *L, int idx, struct mcts_options *o)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    o->budget.iterations = budget_count(L, idx, "iterations");
    o->budget.tokens = budget_count(L, idx, "tokens");
    double seconds = 0;
    if (opt_number(L, idx, "seconds", &seconds) && !(seconds >= 0 && seconds <= 1e9))
        agent_raise(L, "thalamus.mcts: budget 'seconds' must be from 0 to 1e9, got %g", seconds);
    o->budget.ms = (uint64_t)llround(seconds * 1000);
}

/* Reads the options of the table at idx over the defaults in o. */
static void read_options(lua_State *L, int idx, struct mcts_options *o)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        bool known = false;
        for (const char *const *n = option_names; key && *n; n++)
            known = known || strcmp(*n, key) == 0;
        if (!known) {
            const char *near = key ? text_closest(key, option_names) : NULL;
            agent_raise(L, "thalamus.mcts: unknown option '%s'%s%s%s", key ? key : "?",
                        near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
        }
        lua_pop(L, 1);
    }
    int choice = o->policy == MCTS_PUCT;
    opt_choice(L, idx, "policy", "uct", "puct", &choice);
    o->policy = choice ? MCTS_PUCT : MCTS_UCT;
    if (o->policy == MCTS_PUCT)
        o->c = 1.25;
    choice = o->backup == MCTS_BACKUP_MAX;
    opt_choice(L, idx, "backup", "mean", "max", &choice);
    o->backup = choice ? MCTS_BACKUP_MAX : MCTS_BACKUP_MEAN;
    opt_number(L, idx, "c", &o->c);
    opt_number(L, idx, "virtual_loss", &o->virtual_loss);
    double v = 0;
    if (opt_number(L, idx, "seed", &v))
        o->seed = (uint64_t)(int64_t)v;
    if (opt_number(L, idx, "jobs", &v)) {
        if (!(v >= 1 && v <= MAX_JOBS) || v != floor(v))
            agent_raise(L, "thalamus.mcts: 'jobs' must be a whole number from 1 to %d", MAX_JOBS);
        o->max_inflight = (int)v;
    }
    opt_bool(L, idx, "evaluate_children", &o->evaluate_children);
    opt_bool(L, idx, "reevaluate", &o->reevaluate_terminal);
    lua_getfield(L, idx, "widen");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TTABLE)
            agent_raise(L, "thalamus.mcts: 'widen' must be a table { k = ..., alpha = ... }");
        int w = lua_gettop(L);
        if (!opt_number(L, w, "k", &o->widen_k))
            o->widen_k = 1;
        opt_number(L, w, "alpha", &o->widen_alpha);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "budget");
    if (!lua_isnil(L, -1))
        read_budget(L, lua_gettop(L), o);
    lua_pop(L, 1);
    if (!o->budget.iterations && !o->budget.ms && !o->budget.tokens)
        o->budget.iterations = DEFAULT_ITERATIONS;
}

/* Creates the search userdata from options o and the callbacks in the
 * table at idx, leaving it on the stack. */
static struct search *search_push(lua_State *L, int idx, const struct mcts_options *o)
{
    struct search *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 3; i++)
        s->fn_ref[i] = LUA_NOREF;
    s->data_ref = s->thread_ref = s->self_ref = LUA_NOREF;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &meta_key);
    lua_setmetatable(L, -2);
    int ud = lua_gettop(L);
    s->rt = agent_runtime_of(L);
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, idx, fn_names[i]);
        if (lua_isnil(L, -1) && i != FN_TERMINAL)
            agent_raise(L, "thalamus.mcts: '%s' must be a function", fn_names[i]);
        if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
            agent_raise(L, "thalamus.mcts: '%s' must be a function, not a %s", fn_names[i],
                        luaL_typename(L, -1));
        if (lua_isnil(L, -1))
            lua_pop(L, 1);
        else
            s->fn_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_newtable(L);
    s->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->cb_L = lua_newthread(L);
    s->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->parallel = o->max_inflight > 1;
    if (mcts_new(&s->t, o, &search_callbacks, s) < 0)
        agent_raise(L, "thalamus.mcts: %s", error_message());
    lua_settop(L, ud);
    return s;
}

static void set_data(lua_State *L, struct search *s, mcts_id id, int value)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    lua_pushvalue(L, value);
    lua_rawseti(L, -2, (lua_Integer)id + 1);
    lua_pop(L, 1);
}

/* thalamus.mcts.new{ expand = fn, evaluate = fn, ... } */
static int mcts_lua_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct mcts_options o;
    mcts_options_default(&o);
    read_options(L, 1, &o);
    struct search *s = search_push(L, 1, &o);
    lua_getfield(L, 1, "root");
    set_data(L, s, 0, lua_gettop(L));
    lua_pop(L, 1);
    return 1;
}

/* ---- :run() -------------------------------------------------------------------------- */

static int run_k(lua_State *L, int status, lua_KContext ctx);

/* Ends the children of a run: finished ones are freed, others cancelled. */
static void end_jobs(struct search *s)
{
    for (size_t i = 0; i < s->njobs; i++) {
        struct agent_task *kid = s->jobs[i].task;
        lua_rawgetp(s->cb_L, LUA_REGISTRYINDEX, &search_key);
        lua_pushlightuserdata(s->cb_L, kid);
        lua_pushnil(s->cb_L);
        lua_rawset(s->cb_L, -3);
        lua_pop(s->cb_L, 1);
        if (kid->state == TASK_DONE)
            agent_child_free(kid);
        else
            agent_task_cancel(kid);
    }
    s->njobs = 0;
}

/* The runner's wait ends: normally because run_k resumes it (s->waking),
 * otherwise because its task is cancelled, which abandons the run. */
static void release_run(struct agent_task *task, void *data)
{
    (void)task;
    struct run_wait *w = data;
    struct search *s = w->s;
    s->idle = false;
    if (s->waking)
        return;
    end_jobs(s);
    s->runner = NULL;
    s->qlen = 0;
    luaL_unref(s->cb_L, LUA_REGISTRYINDEX, s->self_ref);
    s->self_ref = LUA_NOREF;
    if (s->t && !s->finished)
        mcts_cancel(s->t);
}

/* Makes the runner wait (idle: until the engine has work or ends). Children
 * of jobs > 1 count down w.ch.pending, which never reaches zero. */
static int runner_wait(lua_State *L, struct search *s, struct agent_task *task, bool idle)
{
    s->wait.ch.pending = INT_MAX / 2;
    s->wait.s = s;
    agent_wait_set(task, release_run, &s->wait);
    s->idle = idle;
    if (!idle)
        agent_wake_later(task, true);
    return agent_yield(L, task, run_k, 0);
}

static void push_best(lua_State *L, struct search *s)
{
    push_node(L, s, mcts_best(s->t), 1);
}

static void push_stats(lua_State *L, struct search *s)
{
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, (lua_Integer)mcts_iterations(s->t));
    lua_setfield(L, -2, "iterations");
    lua_pushinteger(L, (lua_Integer)mcts_size(s->t));
    lua_setfield(L, -2, "nodes");
    lua_pushinteger(L, (lua_Integer)mcts_tokens(s->t));
    lua_setfield(L, -2, "tokens");
    lua_pushstring(L, mcts_stop_name(mcts_stop_reason(s->t)));
    lua_setfield(L, -2, "stop");
}

static int run_loop(lua_State *L);

static int run_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    struct search *s = lua_touserdata(L, 1);
    s->waking = true;
    agent_wait_clear(agent_task_of(L));
    s->waking = false;
    return run_loop(L);
}

static int callback_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    struct search *s = lua_touserdata(L, 1);
    answer(L, s, status, s->cur.node, s->cur.kind);
    return run_loop(L);
}

/* The coroutine of :run(): answers requests until the search ends. The
 * search is at index 1. */
static int run_loop(lua_State *L)
{
    struct search *s = lua_touserdata(L, 1);
    struct agent_task *task = agent_task_of(L);
    while (!s->finished) {
        lua_settop(L, 1);
        if (!s->qlen) {
            s->calls = 0;
            return runner_wait(L, s, task, true);
        }
        if (++s->calls > CALLS_PER_TURN) {
            /* let the loop and the other agents run, and start a new CPU slice */
            s->calls = 0;
            return runner_wait(L, s, task, false);
        }
        s->cur = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
        lua_rawgeti(L, LUA_REGISTRYINDEX,
                    s->fn_ref[s->cur.kind == REQ_EXPAND ? FN_EXPAND : FN_EVALUATE]);
        push_node(L, s, s->cur.node, 1);
        int status = lua_pcallk(L, 1, 2, 0, 0, callback_k);
        answer(L, s, status, s->cur.node, s->cur.kind);
    }
    lua_settop(L, 1);
    end_jobs(s);
    s->runner = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
    s->self_ref = LUA_NOREF;
    if (s->error)
        return agent_raise(L, "thalamus.mcts: %s", s->error);
    if (mcts_stop_reason(s->t) == MCTS_STOP_ERROR)
        return agent_raise(L, "thalamus.mcts: %s", mcts_last_error(s->t));
    push_best(L, s);
    push_stats(L, s);
    return 2;
}

/* search:run([budget]) -> best node, stats */
static int search_run(lua_State *L)
{
    struct search *s = check_search(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        struct mcts_options o = *mcts_get_options(s->t);
        read_budget(L, 2, &o);
        mcts_set_budget(s->t, o.budget.iterations, o.budget.ms, o.budget.tokens);
    }
    lua_settop(L, 1);
    if (s->runner)
        return agent_raise(L, "thalamus.mcts: this search is already running");
    struct agent_task *task = agent_check_current(L, "search:run");
    if (s->parallel && task->depth + 1 > AGENT_MAX_DEPTH)
        return agent_raise(L, "thalamus.mcts: agents call each other more than %d levels deep",
                           AGENT_MAX_DEPTH);
    free(s->error);
    s->error = NULL;
    s->finished = false;
    s->qlen = 0;
    s->calls = 0;
    if (mcts_run(s->t, s->rt->loop) < 0)
        return agent_raise(L, "thalamus.mcts: %s", error_message());
    s->runner = task;
    lua_pushvalue(L, 1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return runner_wait(L, s, task, true);
}

/* search:best() -> node */
static int search_best(lua_State *L)
{
    struct search *s = check_search(L, 1);
    push_best(L, s);
    return 1;
}

/* search:tree() -> list of nodes, in id order (tree[id + 1]) */
static int search_tree(lua_State *L)
{
    struct search *s = check_search(L, 1);
    size_t n = mcts_size(s->t);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        push_node(L, s, (mcts_id)i, 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* search:node(id) -> node or nil */
static int search_node(lua_State *L)
{
    struct search *s = check_search(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    if (id < 0 || (size_t)id >= mcts_size(s->t)) {
        lua_pushnil(L);
        return 1;
    }
    push_node(L, s, (mcts_id)id, 1);
    return 1;
}

/* search:cancel(): the run ends once the callbacks in flight have answered */
static int search_cancel(lua_State *L)
{
    struct search *s = check_search(L, 1);
    mcts_cancel(s->t);
    return 0;
}

/* search:add_tokens(n): counts model tokens against budget.tokens */
static int search_add_tokens(lua_State *L)
{
    struct search *s = check_search(L, 1);
    lua_Number n = luaL_checknumber(L, 2);
    if (n > 0)
        mcts_add_tokens(s->t, (uint64_t)n);
    return 0;
}

static void free_text(void *p, size_t n)
{
    (void)n;
    free(p);
}

static struct store *open_store(lua_State *L, struct search *s, const char *what)
{
    struct agent_runtime *rt = s ? s->rt : agent_runtime_of(L);
    if (!rt->workspace) {
        agent_raise(L, "thalamus.mcts: %s needs a workspace (run inside one)", what);
        return NULL;
    }
    mcts_register_migrations();
    struct store *store = NULL;
    if (workspace_store_open(rt->workspace, &store) < 0) {
        agent_raise(L, "thalamus.mcts: %s", error_message());
        return NULL;
    }
    return store;
}

static void clear_payloads(struct search *s)
{
    for (size_t i = 0; i < mcts_size(s->t); i++)
        mcts_set_payload(s->t, (mcts_id)i, NULL, 0);
}

/* search:save(name): stores the tree, its options and the nodes' values
 * (as JSON) in the workspace database, replacing an earlier save */
static int search_save(lua_State *L)
{
    struct search *s = check_search(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (s->runner)
        return agent_raise(L, "thalamus.mcts: cannot save '%s' while the search runs", name);
    size_t n = mcts_size(s->t);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    int data = lua_gettop(L);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, data, (lua_Integer)i + 1);
        cJSON *j = NULL;
        char where[64];
        snprintf(where, sizeof where, "node %zu", i);
        if (agent_to_json(L, -1, where, &j) < 0) {
            clear_payloads(s);
            return agent_raise(L, "thalamus.mcts: cannot save '%s': %s", name, error_message());
        }
        char *text = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        mcts_set_payload(s->t, (mcts_id)i, text, strlen(text));
        free(text);
        lua_pop(L, 1);
    }
    struct store *store = open_store(L, s, "saving");
    int rc = mcts_save(s->t, store, name);
    store_close(store);
    clear_payloads(s);
    if (rc < 0)
        return agent_raise(L, "thalamus.mcts: %s", error_message());
    return 0;
}

/* thalamus.mcts.load(name, { expand = fn, evaluate = fn, terminal = fn }) */
static int mcts_lua_load(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct store *store = open_store(L, NULL, "loading");
    struct mcts_options o;
    if (mcts_load_options(&o, store, name) < 0) {
        char *msg = xstrdup(error_message());
        store_close(store);
        agent_box(L, msg, 0, free_text);
        return agent_raise(L, "thalamus.mcts: %s", msg);
    }
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(key, "expand") && strcmp(key, "evaluate") && strcmp(key, "terminal")) {
            store_close(store);
            return agent_raise(L,
                               "thalamus.mcts.load: only expand, evaluate and terminal are "
                               "given when loading, not '%s' (the options were saved)",
                               key);
        }
        lua_pop(L, 1);
    }
    struct search *s = NULL;
    /* the store stays open through the Lua calls below: guard it */
    agent_box(L, store, 0, (void (*)(void *, size_t))(void (*)(void))store_close);
    int box = lua_gettop(L);
    s = search_push(L, 2, &o);
    int ud = lua_gettop(L);
    if (mcts_load(s->t, store, name) < 0)
        return agent_raise(L, "thalamus.mcts: %s", error_message());
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->data_ref);
    int data = lua_gettop(L);
    for (size_t i = 0; i < mcts_size(s->t); i++) {
        size_t len;
        const char *text = mcts_payload(s->t, (mcts_id)i, &len);
        cJSON *j = len ? cJSON_ParseWithLength(text, len) : NULL;
        if (len && !j)
            return agent_raise(L, "thalamus.mcts: saved tree '%s' has a damaged node %zu", name, i);
        if (j) {
            agent_box(L, j, 0, (void (*)(void *, size_t))(void (*)(void))cJSON_Delete);
            agent_push_json(L, j, false);
            lua_rawseti(L, data, (lua_Integer)i + 1);
            agent_unbox_free(L, -1);
            lua_pop(L, 1);
        }
    }
    clear_payloads(s);
    agent_unbox_free(L, box);
    lua_pushvalue(L, ud);
    return 1;
}

int luaopen_thalamus_mcts(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"run", search_run},
        {"best", search_best},
        {"tree", search_tree},
        {"node", search_node},
        {"save", search_save},
        {"cancel", search_cancel},
        {"add_tokens", search_add_tokens},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"new", mcts_lua_new},
        {"load", mcts_lua_load},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 3);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, search_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "mcts search");
    lua_setfield(L, -2, "__name");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &meta_key);
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &search_key);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, node_index);
    lua_setfield(L, -2, "__index");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &node_meta_key);
    luaL_newlib(L, funcs);
    return 1;
}
