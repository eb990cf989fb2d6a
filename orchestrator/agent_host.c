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
