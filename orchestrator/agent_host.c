/*
 * agent_host: opens the workspace, configuration, store, memory, event
 * loop, model gateway and agent runtime for commands that run agents by
 * hand (see agent_host.h). Depends on agent, config, error, llm, loop,
 * mcts, memory, store and workspace.
 */
#include "agent_host.h"

#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "command.h"
#include "config.h"
#include "error.h"
#include "llm.h"
#include "loop.h"
#include "mcts.h"
#include "memory.h"
#include "store.h"
#include "workspace.h"

int agent_host_open(struct agent_host *h, const char *strategy)
{
    memset(h, 0, sizeof *h);
    int rc = workspace_find(".", &h->workspace);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        rc = 0;
    }
    if (rc < 0 || (rc = config_load(&h->cfg, h->workspace)) < 0)
        return rc;
    if (h->workspace) {
        /* agents may record model calls, use memory and save searches */
        llm_register_migrations();
        memory_register_migrations();
        mcts_register_migrations();
        if ((rc = workspace_store_open(h->workspace, &h->store)) < 0)
            return rc;
        struct memory_params params;
        memory_params_from_config(&params, h->cfg);
        if ((rc = memory_new(&h->memory, h->store, &params)) < 0)
            return rc;
    }
    if ((rc = loop_new(&h->loop)) < 0 || (rc = llm_new(&h->gw, h->loop, h->cfg, h->store)) < 0)
        return rc;
    struct agent_runtime_options o = {
        .loop = h->loop,
        .cfg = h->cfg,
        .workspace = h->workspace,
        .llm = h->gw,
        .memory = h->memory,
        .strategy = strategy,
    };
    return agent_runtime_new(&h->rt, &o);
}

void agent_host_close(struct agent_host *h)
{
    agent_runtime_free(h->rt);
    llm_free(h->gw);
    memory_free(h->memory);
    loop_free(h->loop);
    store_close(h->store);
    config_free(h->cfg);
    free(h->workspace);
    memset(h, 0, sizeof *h);
}

struct host_run {
    struct agent_host *h;
    agent_done_cb cb;
    void *ud;
    struct agent_task *task;
    bool finished, interrupted;
};

static void host_run_done(struct agent_task *task, const struct agent_result *res, void *ud)
{
    struct host_run *run = ud;
    run->task = NULL;
    run->finished = true;
    run->cb(task, res, run->ud);
    loop_stop(run->h->loop);
}

static void host_run_interrupt(struct loop *loop, int signo, int count, void *ud)
{
    struct host_run *run = ud;
    (void)signo;
    (void)count;
    if (run->finished)
        return;
    agent_cancel(run->task);
    run->task = NULL;
    run->interrupted = true;
    loop_stop(loop);
}

int agent_host_run(struct agent_host *h, const char *name, const cJSON *input,
                   const struct agent_call_options *o, agent_done_cb cb, void *ud)
{
    struct host_run run = {.h = h, .cb = cb, .ud = ud};
    int rc = agent_start(h->rt, name, input, o, host_run_done, &run, &run.task);
    if (rc == 0 && (rc = loop_on_shutdown(h->loop, host_run_interrupt, &run)) == 0) {
        rc = loop_run(h->loop);
        loop_on_shutdown(h->loop, NULL, NULL); /* run is about to go */
    }
    if (rc < 0) {
        if (run.task)
            agent_cancel(run.task);
        return rc;
    }
    if (run.interrupted)
        return EXIT_INTERRUPTED;
    if (!run.finished) {
        agent_cancel(run.task);
        return error_set("agent '%s' did not finish", name);
    }
    return 0;
}
