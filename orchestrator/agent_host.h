/*
 * agent_host: everything a command needs to run agents by hand.
 *
 * `thalamus agent run`, `agent list` and `thalamus think` all run agents
 * outside the research loop: they find the workspace (when there is one),
 * load its configuration, open its store and memory, and build an event
 * loop, a model gateway and an agent runtime on top. agent_host_open() does
 * that in one place and agent_host_close() undoes it. Outside a workspace
 * the store and memory stay NULL and agents run with the configuration's
 * defaults. Depends on agent, config, llm, loop, mcts, memory, store and
 * workspace.
 */
#ifndef THALAMUS_AGENT_HOST_H
#define THALAMUS_AGENT_HOST_H

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

#endif
