/*
 * agent: the Lua agent runtime.
 *
 * Agents are Lua 5.4 files that return { name, role, description, run }.
 * One runtime holds one Lua state for all of them: each agent file is
 * compiled once into an environment of its own, and every invocation runs
 * run(ctx, input) in its own coroutine, so ten thousand waiting agents cost a
 * few KiB each. Calls that wait (thalamus.llm, thalamus.sandbox.run,
 * thalamus.http, thalamus.sleep, thalamus.agents.call and parallel) yield to
 * the event loop with a continuation (lua_yieldk) and are resumed with their
 * result, also from inside pcall. An invocation's error is contained: it ends that
 * invocation with the Lua message and traceback and nothing else. An
 * instruction-count hook stops an invocation that computes longer than
 * agents.cpu_slice instructions without waiting, and a counting allocator
 * caps the Lua heap of the runtime at agents.memory_mb (exhaustion is an
 * error of the invocation that was allocating). Agents see the base library
 * (without dofile, loadfile, or binary chunks in load), string, table, math,
 * utf8, coroutine and the thalamus modules (lua_*.c); files only through
 * thalamus.workspace, confined to the workspace. Outputs are checked against
 * the contract of the agent's role (agent_roles.c), and a coder's edits are
 * applied atomically inside its experiment directory (agent_edits.c), a
 * failed apply going back to the coder with the reason.
 *
 * Built-in agents live in the data directory's agents/ (fs_data_dir()); a
 * workspace's agents/NAME.lua replaces the built-in of that name, and
 * agents.extra adds agents to stages of the research loop. docs/agents.md is
 * the user's guide. Depends on loop, llm, memory, sandbox, config, confine,
 * fsutil, buf, alloc, error, log, Lua and cJSON.
 */
#ifndef THALAMUS_AGENT_H
#define THALAMUS_AGENT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

struct loop;
struct llm;
struct memory;
struct config;
struct agent_runtime;
struct agent_task;

#define AGENT_MAX_DEPTH 8 /* agents calling agents */

/* The roles and the research-loop stages, NULL-terminated. */
extern const char *const agent_roles[];  /* planner, retriever, coder, critic */
extern const char *const agent_stages[]; /* retrieve, ideate, review, implement, analyse */

struct agent_runtime_options {
    struct loop *loop;        /* required */
    const struct config *cfg; /* required; must outlive the runtime */
    const char *workspace;    /* absolute path, or NULL outside a workspace */
    struct llm *llm;          /* NULL: model calls fail */
    struct memory *memory;    /* NULL: thalamus.memory calls fail */
    const char *data_dir;     /* built-in agents in data_dir/agents; NULL: fs_data_dir() */
    const char *strategy;     /* "llm" or "offline"; NULL: by llm.provider */
    long cpu_slice;           /* instructions; 0: agents.cpu_slice */
    size_t memory_limit;      /* bytes of Lua heap; 0: agents.memory_mb */
};

/* Creates a runtime. Fails when the Lua state cannot be created, the data
 * directory cannot be found, or the options are invalid. Free with
 * agent_runtime_free(). */
int agent_runtime_new(struct agent_runtime **out, const struct agent_runtime_options *o);

/* Cancels every invocation (no callbacks) and frees the runtime. Not from one
 * of its callbacks. */
void agent_runtime_free(struct agent_runtime *rt);

/* "llm" or "offline": the strategy agents are told to use (ctx.strategy). */
const char *agent_runtime_strategy(const struct agent_runtime *rt);

/* One agent as `thalamus agent list` shows it. */
struct agent_info {
    char *name;
    char *role;        /* NULL when the file could not be loaded */
    char *description; /* "" when none */
    char *source;      /* "built-in" or the path of the workspace's file */
    char *strategy;    /* what ctx.strategy will be: "llm" or "offline" */
    char *stages;      /* stages it serves, comma-separated ("" for none) */
    char *error;       /* why the file could not be loaded, else NULL */
};

/* Loads every built-in and workspace agent and describes them, sorted by
 * name. An agent file that does not load is listed with its error. Free with
 * agent_infos_free(). */
int agent_list(struct agent_runtime *rt, struct agent_info **out, size_t *n);
void agent_infos_free(struct agent_info *list, size_t n);

/* The agents of a stage of the research loop: the built-in one, then those
 * agents.extra adds, in order (NULL-terminated, the caller frees the array,
 * not the strings). Fails when an extra agent does not exist or has the wrong
 * role for the stage. */
int agent_stage_agents(struct agent_runtime *rt, const char *stage, const char ***out);

/* The outcome of an invocation, valid only while the done callback runs. */
struct agent_result {
    int rc;                /* 0, or a negative TH_E* code */
    const cJSON *output;   /* the checked output when rc is 0 */
    const char *error;     /* what failed, when rc < 0 */
    const char *traceback; /* the Lua traceback of the failure, or NULL */
    const char *agent;     /* the agent's name */
    int attempts;          /* coder: runs until the edits applied (1 normally) */
    double seconds;        /* wall time from agent_start() to this result */
    double busy;           /* of which running the agent's code (and its sub-calls), not
                              waiting for models, tools or the event loop */
};

typedef void (*agent_done_cb)(struct agent_task *task, const struct agent_result *res, void *ud);

struct agent_call_options {
    const char *run;  /* ctx.run: the run the call belongs to (budgets, usage), or NULL */
    const char *node; /* ctx.node, or NULL */
};

/* Starts agent name with input (an object; NULL means {}). The result
 * arrives through cb from the loop, never from inside this call. Fails at
 * once (no callback) for an unknown agent (TH_ENOTFOUND), an agent file that
 * does not load, or an input the role refuses (TH_EUSAGE). *out (may be
 * NULL) receives the task, for agent_cancel(). */
int agent_start(struct agent_runtime *rt, const char *name, const cJSON *input,
                const struct agent_call_options *o, agent_done_cb cb, void *ud,
                struct agent_task **out);

/* Cancels an invocation started with agent_start(): what it waits for is
 * cancelled, the agents it called too, and no callback follows. Not from its
 * own done callback. */
void agent_cancel(struct agent_task *task);

/* Invocations not finished yet (those started from C and from Lua). */
int agent_pending(const struct agent_runtime *rt);

/* Defines (or replaces) agent name from Lua source, as if it were a
 * workspace file called chunkname; for tests and benchmarks. */
int agent_define(struct agent_runtime *rt, const char *name, const char *source,
                 const char *chunkname);

/* Bytes of Lua heap in use by the runtime. */
size_t agent_memory_used(const struct agent_runtime *rt);

/* Runs a full garbage collection of the Lua heap; returns agent_memory_used(). */
size_t agent_collect(struct agent_runtime *rt);

/* Writes a commented starting file for a new agent of role to
 * workspace/agents/name.lua (from data_dir/agents/skeleton/role.lua).
 * TH_EEXISTS when the file exists, TH_EUSAGE for a bad name or role. Sets
 * *path (the caller frees it). */
int agent_new_file(const char *workspace, const char *name, const char *role, char **path);

/* j as JSON text, indented with two spaces when indent (as agents' outputs
 * and json.encode print it); the caller frees it with free(). */
char *agent_json_print(const cJSON *j, bool indent);

/* Checks an agent name: a letter, then letters, digits or '_', at most 64. */
int agent_check_name(const char *name);

#endif
