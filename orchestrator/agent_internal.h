/*
 * agent_internal: what the parts of the agent runtime share and nothing
 * else includes: the runtime and task structures (agent.c), how a binding
 * makes a coroutine wait and how the event loop wakes it, the conversions
 * between Lua values and cJSON (lua_json.c), guard boxes that free C memory
 * when a Lua error unwinds past it, the role contracts (agent_roles.c), the
 * coder's edits (agent_edits.c), and the luaopen_* function of each
 * thalamus module (lua_*.c, one file per module). Depends on agent, buf,
 * Lua and cJSON.
 */
#ifndef THALAMUS_AGENT_INTERNAL_H
#define THALAMUS_AGENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>

#include "agent.h"

#define AGENT_HOOK_STEP      1000              /* instructions between hook calls */
#define AGENT_MEMORY_RESERVE ((size_t)4 << 20) /* for the runtime's own bookkeeping */
#define AGENT_MAX_FILE       ((size_t)8 << 20) /* an agent, library or workspace file */
#define AGENT_MAX_JSON_DEPTH 100
#define AGENT_MAX_PARALLEL   10000

struct agent_task;
struct http_client;

/* What a waiting call leaves in its task: release() cancels the operation
 * if it is still pending and frees data; it runs when the task ends or is
 * cancelled while waiting, when the continuation consumed the result
 * (agent_wait_clear()), or before the next wait (leftovers of a
 * continuation that raised an error). */
struct agent_wait {
    void (*release)(struct agent_task *t, void *data);
    void *data;
    bool ready; /* the operation finished: the continuation may read data */
};

/* An agent file, loaded once per runtime. */
struct agent_def {
    char *name;
    char *role; /* NULL when loading failed */
    char *description;
    char *source;   /* "built-in" or the workspace path */
    char *path;     /* the file read, or NULL for agent_define() */
    char *strategy; /* what ctx.strategy is for this agent */
    char *error;    /* why loading failed, else NULL */
    char *traceback;
    int ref;     /* registry: the agent's table */
    int ctx_ref; /* registry: the ctx fields shared by its invocations */
    struct agent_def *next;
};

enum task_kind { TASK_AGENT, TASK_FUNCTION };
enum task_state { TASK_READY, TASK_RUNNING, TASK_WAITING, TASK_DONE };

struct agent_task {
    struct agent_runtime *rt;
    enum task_kind kind;
    enum task_state state;
    struct agent_def *def; /* the agent (for a function: its parent's agent) */
    lua_State *co;         /* NULL until started */
    int co_ref;            /* registry: the coroutine */
    int fn_ref;            /* TASK_FUNCTION: registry ref of the function */
    cJSON *input;          /* TASK_AGENT */
    char *run, *node;
    int depth;
    int attempts; /* coder: runs so far */
    double started; /* agent_start(): CLOCK_MONOTONIC seconds */
    double busy;    /* seconds spent running it (and the calls it waited for) */
    struct agent_wait wait;
    bool in_ready;

    /* the outcome */
    int rc;
    cJSON *output; /* TASK_AGENT, when rc is 0 */
    int nresults;  /* TASK_FUNCTION: values left on co's stack */
    char *error, *traceback;

    /* who waits for it */
    struct agent_task *parent; /* a Lua caller (agents.call / parallel) */
    agent_done_cb cb;          /* or a C caller */
    void *ud;

    struct agent_task *ready_next;
    struct agent_task *prev, *next; /* every task of the runtime */
};

struct agent_runtime {
    lua_State *L;
    struct loop *loop;
    const struct config *cfg;
    char *workspace;
    int ws_fd; /* -1 outside a workspace */
    char *data_dir;
    char *builtin_dir, *ws_agents_dir; /* ws_agents_dir NULL outside a workspace */
    struct llm *llm;
    struct memory *memory;
    struct http_client *http; /* thalamus.http, made on first use */
    char *strategy;

    /* limits */
    long cpu_slice;
    int hook_step;
    long slice_used;
    bool doomed;
    size_t mem_limit, mem_used, mem_peak;
    bool reserve; /* the runtime's own code may use AGENT_MEMORY_RESERVE more */

    struct agent_def *defs;
    struct agent_task *tasks;
    int ntasks;
    struct agent_task *current; /* the task whose coroutine runs */
    struct agent_task *ready_head, *ready_tail;
    struct loop_timer *ready_timer;
    bool closing;
};

/* ---- agent.c: for the bindings ---------------------------------------- */

struct agent_runtime *agent_runtime_of(lua_State *L);

/* luaL_error() with printf's formats (lua_pushfstring knows only a few):
 * raises the message, prefixed with the Lua caller's position. */
int agent_raise(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The task whose own code runs in L, or a Lua error saying that what (e.g.
 * "thalamus.llm.chat") can only wait in an agent's own code (not in a
 * coroutine the agent made, nor while a file loads). */
struct agent_task *agent_check_current(lua_State *L, const char *what);

/* The task running L's code, or NULL (no error). */
struct agent_task *agent_task_of(lua_State *L);

/* Records what t waits for and yields L; k runs when agent_wake() resumes
 * it. Returns what lua_yieldk returns (use as `return agent_wait(...)`). */
int agent_wait(lua_State *L, struct agent_task *t, void (*release)(struct agent_task *, void *),
               void *data, lua_KFunction k, lua_KContext kctx);

/* agent_wait() in two steps, for a call that must register what it starts
 * (and have it released if it raises an error) before it yields. */
void agent_wait_set(struct agent_task *t, void (*release)(struct agent_task *, void *), void *data);
int agent_yield(lua_State *L, struct agent_task *t, lua_KFunction k, lua_KContext kctx);

/* What a task waiting for other tasks (agents.call / parallel) holds as its
 * wait data; each child lowers pending when it finishes, and the last one
 * wakes the parent. */
struct agent_children {
    int n, pending;
    struct agent_task **kids;
};

/* Marks the wait as finished and resumes t now: for loop callbacks (timers,
 * request completions), never from inside Lua code or curl callbacks. */
void agent_wake(struct agent_task *t);

/* Marks the wait as finished (when done) and resumes t from the loop soon:
 * safe from any callback. */
void agent_wake_later(struct agent_task *t, bool done);

/* Releases what the current wait of t holds (from its continuation, after
 * reading the result). */
void agent_wait_clear(struct agent_task *t);

/* Creates a child task of parent (agents.call / parallel). For an agent:
 * name and input (copied). For a function: the function at index fn of L.
 * Returns NULL with a Lua error raised on L for an unknown agent, a bad
 * input or too deep a nesting. */
struct agent_task *agent_spawn_child(lua_State *L, struct agent_task *parent, const char *name,
                                     const cJSON *input, int fn);

/* Frees a finished child once its parent has read its result. */
void agent_child_free(struct agent_task *t);

/* Cancels an unfinished task and frees it (any kind, no callback). */
void agent_task_cancel(struct agent_task *t);

/* Loads agent name (once); NULL with error_message() when it is unknown or
 * does not load. Runs the agent file on L. */
struct agent_def *agent_def_get(struct agent_runtime *rt, lua_State *L, const char *name);

/* Reads a file of the agents' directories: the workspace's agents/ first,
 * then the built-in one. rel is checked with confine_check(). */
int agent_read_data(struct agent_runtime *rt, const char *rel, char **text, size_t *len,
                    char **where);

/* Pushes a new environment for an agent or library file (all libraries as
 * fresh copies, its own require and load). */
void agent_push_env(lua_State *L);

/* ---- lua_json.c: values --------------------------------------------- */

/* Pushes j as a Lua value: objects and arrays become tables (arrays marked
 * so that they encode as arrays even when empty), null becomes json.null,
 * or nothing inside an object when drop_null_members. */
void agent_push_json(lua_State *L, const cJSON *j, bool drop_null_members);

/* Converts the value at idx to JSON without allocating Lua memory and
 * without calling metamethods: nil and json.null give null, tables give
 * arrays (keys 1..n, or marked) or objects (string keys, sorted, or in the
 * decoded order), numbers must be finite. Sets *out, or returns TH_ERR with
 * a message naming the place, e.g. "ideas[2].score: NaN is not a JSON
 * number". where prefixes the place ("" for none). */
int agent_to_json(lua_State *L, int idx, const char *where, cJSON **out);

void agent_push_null(lua_State *L);
bool agent_is_null(lua_State *L, int idx);

/* Guards C memory while Lua may raise: pushes a userdata that frees p with
 * fn(p, n) when collected, unless agent_unbox() took it back first. */
void agent_box(lua_State *L, void *p, size_t n, void (*fn)(void *p, size_t n));
/* Frees the boxed pointer of the box at idx now. */
void agent_unbox_free(lua_State *L, int idx);

/* ---- agent_roles.c ------------------------------------------------------ */

bool agent_role_known(const char *role);

/* Checks the input of role; TH_EUSAGE with a message naming the field. */
int agent_role_check_input(const char *role, const cJSON *input);

/* Checks output against role's contract (for a critic, given its input);
 * TH_ERR with a message naming the field. */
int agent_role_check_output(const char *role, const cJSON *input, const cJSON *output,
                            const struct config *cfg);

/* The stage's role ("ideate" -> "planner"), NULL for an unknown stage. */
const char *agent_stage_role(const char *stage);

/* The built-in agent serving a stage. */
const char *agent_stage_builtin(const char *stage);

/* ---- agent_edits.c ------------------------------------------------------ */

/* Applies a coder's edits (checked by agent_role_check_output) inside dir,
 * a directory beneath ws_fd, all or nothing. Sets *applied to the list of
 * paths written. Fails with the reason, naming the edit. */
int agent_edits_apply(int ws_fd, const char *dir, const cJSON *edits, cJSON **applied);

/* ---- the modules (lua_*.c) ------------------------------------------- */

int luaopen_thalamus_json(lua_State *L);
int luaopen_thalamus_log(lua_State *L);
int luaopen_thalamus_llm(lua_State *L);
int luaopen_thalamus_memory(lua_State *L);
int luaopen_thalamus_sandbox(lua_State *L);
int luaopen_thalamus_http(lua_State *L);
int luaopen_thalamus_agents(lua_State *L);
int luaopen_thalamus_workspace(lua_State *L);
int luaopen_thalamus_template(lua_State *L);
int luaopen_thalamus_mcts(lua_State *L);
/* lua_sleep.c: adds sleep, now and clock to the table at the top. */
int luaopen_thalamus_sleep(lua_State *L);

/* lua_log.c: prints the arguments like print(), as an info line of the
 * current agent (standard output belongs to results). */
int agent_lua_print(lua_State *L);

/* lua_workspace.c: the task as a table (name, metric, goal, params_file,
 * command, search_space, description from TASK.md). */
void agent_push_task(lua_State *L, struct agent_runtime *rt);
/* The configuration's values as a table. */
void agent_push_config(lua_State *L, struct agent_runtime *rt);

#endif
