/*
 * agent_bench: the driver of scripts/bench/agents.sh. With N agents (10,000
 * by default) on one agent runtime and one event loop it measures:
 *   - the cost of one wait round trip: each agent calls thalamus.sleep(0)
 *     R times (yield to the loop, a 0 ms timer, resume with the result),
 *     timed against the same agents with no waits, so agent start-up is
 *     left out; wall and CPU time per round trip;
 *   - the memory of a waiting agent: N agents suspended in thalamus.sleep,
 *     as Lua heap per agent (the runtime's counting allocator) and as the
 *     growth of the process's resident memory per agent (Lua heap, the C
 *     task, the timer).
 * Prints the figures; asserts nothing. Usage: agent_bench [N [R]].
 * Depends on agent, loop and config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "error.h"
#include "loop.h"
#include "bench_clock.h"

static int remaining, failures;
static struct loop *loop;

static void on_done(struct agent_task *t, const struct agent_result *res, void *ud)
{
    (void)t;
    (void)ud;
    if (res->rc < 0 && failures++ == 0)
        fprintf(stderr, "agent_bench: an agent failed: %s\n", res->error);
    if (--remaining == 0)
        loop_stop(loop);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void fail(const char *what)
{
    fprintf(stderr, "agent_bench: %s: %s\n", what, error_message());
    exit(1);
}

/* Runs n agents of name, each with {rounds = r}; returns wall and CPU seconds. */
static void run_batch(struct agent_runtime *rt, const char *name, int n, int r, double *w,
                      double *c)
{
    cJSON *input = cJSON_CreateObject();
    cJSON_AddNumberToObject(input, "rounds", r);
    remaining = n;
    double w0 = wall(), c0 = cpu();
    for (int i = 0; i < n; i++)
        if (agent_start(rt, name, input, NULL, on_done, NULL, NULL) < 0)
            fail("agent_start");
    loop_run(loop);
    *w = wall() - w0;
    *c = cpu() - c0;
    cJSON_Delete(input);
}

static void stop(struct loop_timer *t, void *ud)
{
    (void)t;
    loop_stop(ud);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000;
    int r = argc > 2 ? atoi(argv[2]) : 100;
    if (n <= 0 || r <= 0) {
        fprintf(stderr, "usage: agent_bench [AGENTS [ROUNDS]]\n");
        return 2;
    }
    unsetenv("OPENAI_API_KEY");
    unsetenv("ANTHROPIC_API_KEY");
    struct config *cfg;
    struct agent_runtime *rt;
    if (config_load(&cfg, NULL) < 0 || loop_new(&loop) < 0)
        fail("setting up");
    struct agent_runtime_options o = {.loop = loop, .cfg = cfg, .memory_limit = (size_t)1 << 30};
    if (agent_runtime_new(&rt, &o) < 0)
        fail("creating the runtime");
    const char *yielder = "local thalamus = require('thalamus')\n"
                          "return { name = 'yielder', role = 'tool', run = function(ctx, input)\n"
                          "  for i = 1, input.rounds do thalamus.sleep(0) end\n"
                          "end }\n";
    const char *idle = "return { name = 'idle', role = 'tool', run = function(ctx, input)\n"
                       "end }\n";
    const char *waiter = "local thalamus = require('thalamus')\n"
                         "return { name = 'waiter', role = 'tool', run = function(ctx, input)\n"
                         "  thalamus.sleep(3600)\n"
                         "end }\n";
    if (agent_define(rt, "yielder", yielder, "yielder") < 0 ||
        agent_define(rt, "idle", idle, "idle") < 0 ||
        agent_define(rt, "waiter", waiter, "waiter") < 0)
        fail("defining the agents");

    printf("agents: %d, wait round trips per agent: %d\n\n", n, r);
    /* memory of waiting agents */
    size_t heap0 = agent_collect(rt);
    long rss0 = rss_kib();
    remaining = n;
    for (int i = 0; i < n; i++)
        if (agent_start(rt, "waiter", NULL, NULL, on_done, NULL, NULL) < 0)
            fail("agent_start");
    loop_timer_add(loop, 0, stop, loop); /* after the queue of starts: all are waiting */
    loop_run(loop);
    int waiting = agent_pending(rt);
    size_t heap1 = agent_memory_used(rt);
    long rss1 = rss_kib();
    printf("waiting agents:                   %8d\n", waiting);
    printf("Lua heap per waiting agent:       %8.2f KiB\n",
           (double)(heap1 - heap0) / 1024.0 / waiting);
    printf("resident memory per waiting agent:%8.2f KiB (process RSS %ld -> %ld KiB)\n\n",
           (double)(rss1 - rss0) / waiting, rss0, rss1);
    /* cancel them all (their timers too) and start afresh */
    agent_runtime_free(rt);
    if (agent_runtime_new(&rt, &o) < 0 || agent_define(rt, "yielder", yielder, "yielder") < 0 ||
        agent_define(rt, "idle", idle, "idle") < 0)
        fail("creating the runtime again");
    double w0, c0, w1, c1;
    run_batch(rt, "idle", n, r, &w0, &c0); /* start-up and finish only */
    run_batch(rt, "yielder", n, r, &w1, &c1);
    double trips = (double)n * r;
    printf("start and finish of an agent:     %8.2f us wall, %8.2f us CPU\n", w0 / n * 1e6,
           c0 / n * 1e6);
    printf("one wait round trip (sleep(0)):   %8.3f us wall, %8.3f us CPU  (%.0f trips)\n",
           (w1 - w0) / trips * 1e6, (c1 - c0) / trips * 1e6, trips);

    if (failures)
        printf("failures: %d\n", failures);
    agent_runtime_free(rt);
    loop_free(loop);
    config_free(cfg);
    return failures ? 1 : 0;
}
