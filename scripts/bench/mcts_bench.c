/*
 * mcts_bench: the driver of scripts/bench/mcts.sh. Measures the search
 * engine (mcts.h) on a synthetic tree: every node has WIDTH children with
 * hashed priors, values are a hash of the node id, and nothing is terminal,
 * so the tree grows with every iteration.
 *   - iterations per second with the evaluator in C, for UCT and PUCT, with
 *     one child evaluated per expansion and with every child evaluated, and
 *     with progressive widening;
 *   - iterations per second with the expand and evaluate callbacks in Lua
 *     (thalamus.mcts inside an agent, callbacks run in the agent's
 *     coroutine);
 *   - the size of a node (sizeof) and the bytes the tree holds per node
 *     (node array with its spare capacity, the work queue and slots).
 * Prints the figures; asserts nothing. Usage: mcts_bench [ITERATIONS
 * [LUA_ITERATIONS]] (default 2000000 and 200000). Depends on mcts, agent,
 * loop and config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "config.h"
#include "error.h"
#include "loop.h"
#include "mcts.h"
#include "bench_clock.h"

#define WIDTH 4

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void bench_expand(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    for (unsigned i = 0; i < WIDTH; i++)
        mcts_add_child(t, n, (double)(mix(n * WIDTH + i) % 1000) / 1000.0, NULL, 0);
    mcts_expanded(t, n, 0);
}

static void bench_evaluate(struct mcts *t, mcts_id n, void *ud)
{
    (void)ud;
    mcts_evaluated(t, n, (double)(mix(n) % 1024) / 1023.0, 0);
}

static void fail(const char *what)
{
    fprintf(stderr, "mcts_bench: %s: %s\n", what, error_message());
    exit(1);
}

static void run_c(const char *label, uint64_t iterations, enum mcts_policy policy,
                  bool evaluate_children, double widen_k)
{
    struct mcts_options o;
    mcts_options_default(&o);
    o.policy = policy;
    o.c = policy == MCTS_PUCT ? 1.25 : 1.414;
    o.evaluate_children = evaluate_children;
    o.widen_k = widen_k;
    o.budget.iterations = iterations;
    o.seed = 1;
    struct mcts_callbacks cb = {.expand = bench_expand, .evaluate = bench_evaluate};
    struct mcts *t;
    if (mcts_new(&t, &o, &cb, NULL) < 0)
        fail("mcts_new");
    double w0 = wall(), c0 = cpu();
    if (mcts_run(t, NULL) < 0)
        fail("mcts_run");
    double w = wall() - w0, c = cpu() - c0;
    size_t n = mcts_size(t);
    unsigned deepest = 0;
    for (mcts_id i = (mcts_id)n - 1; i > 0 && i + 2000 > n; i--) {
        unsigned d = mcts_depth(t, i);
        deepest = d > deepest ? d : deepest;
    }
    printf("%-32s %9.0f it/s CPU %9.0f wall  %8zu nodes  depth %2u  %5.1f bytes/node\n", label,
           (double)mcts_iterations(t) / c, (double)mcts_iterations(t) / w, n, deepest,
           (double)mcts_memory(t) / (double)n);
    mcts_free(t);
}

static struct loop *loop;
static int lua_failed;
static double lua_wall;
static cJSON *lua_out;

static void on_done(struct agent_task *task, const struct agent_result *res, void *ud)
{
    (void)task;
    (void)ud;
    if (res->rc < 0) {
        fprintf(stderr, "mcts_bench: the Lua search failed: %s\n", res->error);
        lua_failed = 1;
    } else {
        lua_out = cJSON_Duplicate(res->output, 1);
    }
    loop_stop(loop);
}

static void run_lua(struct agent_runtime *rt, const char *label, long iterations,
                    const char *policy, bool evaluate_children)
{
    cJSON *input = cJSON_CreateObject();
    cJSON_AddNumberToObject(input, "iterations", (double)iterations);
    cJSON_AddStringToObject(input, "policy", policy);
    cJSON_AddBoolToObject(input, "evaluate_children", evaluate_children);
    double w0 = wall(), c0 = cpu();
    if (agent_start(rt, "search", input, NULL, on_done, NULL, NULL) < 0)
        fail("agent_start");
    loop_run(loop);
    lua_wall = wall() - w0;
    double c = cpu() - c0;
    cJSON_Delete(input);
    if (lua_failed)
        exit(1);
    double its = cJSON_GetNumberValue(cJSON_GetObjectItem(lua_out, "iterations"));
    double nodes = cJSON_GetNumberValue(cJSON_GetObjectItem(lua_out, "nodes"));
    printf("%-32s %9.0f it/s CPU %9.0f wall  %8.0f nodes\n", label, its / c, its / lua_wall, nodes);
    cJSON_Delete(lua_out);
    lua_out = NULL;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 2000000;
    long lua_iterations = argc > 2 ? atol(argv[2]) : 200000;
    if (iterations <= 0 || lua_iterations <= 0) {
        fprintf(stderr, "usage: mcts_bench [ITERATIONS [LUA_ITERATIONS]]\n");
        return 2;
    }
    printf("node: %zu bytes before its payload; children per expansion: %d\n\n", mcts_node_bytes(),
           WIDTH);
    printf("evaluator in C (%ld iterations):\n", iterations);
    run_c("  UCT, one child evaluated", (uint64_t)iterations, MCTS_UCT, false, 0);
    run_c("  PUCT, one child evaluated", (uint64_t)iterations, MCTS_PUCT, false, 0);
    run_c("  UCT, every child evaluated", (uint64_t)iterations, MCTS_UCT, true, 0);
    run_c("  UCT, widening k=1 alpha=0.5", (uint64_t)iterations, MCTS_UCT, false, 1);

    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    struct config *cfg;
    struct agent_runtime *rt;
    if (config_load(&cfg, NULL) < 0 || loop_new(&loop) < 0)
        fail("setting up");
    struct agent_runtime_options o = {.loop = loop, .cfg = cfg, .memory_limit = (size_t)2 << 30};
    if (agent_runtime_new(&rt, &o) < 0)
        fail("creating the runtime");
    const char *search =
        "local thalamus = require('thalamus')\n"
        "return { name = 'search', role = 'tool', run = function(ctx, input)\n"
        "  local s = thalamus.mcts.new{ root = 0, policy = input.policy, seed = 1,\n"
        "    evaluate_children = input.evaluate_children,\n"
        "    budget = { iterations = input.iterations },\n"
        "    expand = function(node)\n"
        "      local d = node.data\n"
        "      return { d * 4 + 1, d * 4 + 2, d * 4 + 3, d * 4 + 4 }, { 0.4, 0.3, 0.2, 0.1 }\n"
        "    end,\n"
        "    evaluate = function(node) return (node.data * 2654435761 % 1024) / 1023 end }\n"
        "  local _, stats = s:run()\n"
        "  return stats\n"
        "end }\n";
    if (agent_define(rt, "search", search, "search") < 0)
        fail("defining the agent");
    printf("\ncallbacks in Lua (%ld iterations):\n", lua_iterations);
    run_lua(rt, "  UCT, one child evaluated", lua_iterations, "uct", false);
    run_lua(rt, "  PUCT, one child evaluated", lua_iterations, "puct", false);
    run_lua(rt, "  UCT, every child evaluated", lua_iterations, "uct", true);
    agent_runtime_free(rt);
    loop_free(loop);
    config_free(cfg);
    return 0;
}
