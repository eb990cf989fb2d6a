/*
 * agent_host: everything a command needs to run agents by hand.
 *
 * `thalamus agent run`, `agent list` and `thalamus think` all run agents
 * outside the research loop: they find the workspace (when there is one),
 * load its configuration, open its store and memory, and build an event
 * loop, a model gateway and an agent runtime on top. agent_host_open() does
 * that in one place and agent_host_close() undoes it. Outside a workspace
 * the store and memory stay NULL and agents run with the configuration's
 * defaults. agent_host_run() runs one agent to its end, cancelling it on
 * Ctrl-C. Depends on agent, config, llm, loop, mcts, memory, store and
 * workspace.
 */
#ifndef THALAMUS_AGENT_HOST_H
#define THALAMUS_AGENT_HOST_H

#include "agent.h"

struct agent_host {
    char *workspace; /* NULL outside a workspace */
    struct config *cfg;
    struct store *store;   /* NULL outside a workspace */
    struct memory *memory; /* NULL outside a workspace */
    struct loop *loop;
    struct llm *gw;
    struct agent_runtime *rt;
};

/* Opens everything from the current directory; strategy (NULL: the
 * configuration decides) is the agents' "llm" or "offline". On failure the
 * message is set and what was opened must still be released with
 * agent_host_close(), which is safe on a zeroed or half-open host. */
int agent_host_open(struct agent_host *h, const char *strategy);
void agent_host_close(struct agent_host *h);

/* Runs agent name on input (as agent_start()) on the host's loop until it
 * finishes, or until SIGINT or SIGTERM cancels it. cb receives the result
 * (it need not stop the loop). Returns 0 when cb was called,
 * EXIT_INTERRUPTED (command.h) when the agent was cancelled, or a negative
 * TH_E* code when it could not start or did not finish. */
int agent_host_run(struct agent_host *h, const char *name, const cJSON *input,
                   const struct agent_call_options *o, agent_done_cb cb, void *ud);

#endif
