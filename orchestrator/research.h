/*
 * research: the research loop of `thalamus run` and `thalamus resume`, and
 * the records it keeps.
 *
 * A run grows a tree of experiments with the MCTS engine: expanding a node
 * asks the retriever, planner and critic for ideas that build on it (novel
 * ones only, the best few kept), evaluating a node has the coder edit the
 * parent's files, runs them in the sandbox (with traceback-guided debug
 * attempts as nodes of their own), has the critic analyse and label the
 * result, and commits it to the git ledger. Runs, nodes, decisions, notes
 * and usage live in the store (module "research"), every state change in a
 * transaction, so a run interrupted at any moment resumes where it stopped.
 * research_export() gives one run as a JSON document for reports and
 * `--json` output. Depends on agent, config, ledger, llm, log, loop, mcts,
 * memory, sandbox, store and workspace.
 */
#ifndef THALAMUS_RESEARCH_H
#define THALAMUS_RESEARCH_H

#include <stdbool.h>

#include <cjson/cJSON.h>
#include <math.h>

struct store;

enum research_progress {
    RESEARCH_PROGRESS_AUTO,  /* a live status on a terminal, else one line per event */
    RESEARCH_PROGRESS_LINES, /* one line per event */
    RESEARCH_PROGRESS_JSON,  /* one JSON object per event on standard output */
};

/* What `thalamus run` and `thalamus resume` ask for. Zero (or NULL, or NAN
 * for target) leaves a setting to the configuration. */
struct research_options {
    const char *workspace; /* absolute path */
    const char *resume;    /* run to continue ("" for the latest); NULL starts a new run */
    long rounds, ideas, jobs, experiments, seconds, drafts, keep, iterations;
    long tokens;   /* replaces llm.budget's tokens per run */
    double cost;   /* replaces llm.budget's cost per run; NAN: keep it */
    double target; /* stop once the best metric reaches it; NAN: none */
    long seed;     /* 0: from the clock */
    enum research_progress progress;
    bool review;             /* --review: at least review-ideas (see review.h) */
    const char *review_file; /* --review-file: decisions when there is no terminal */
    const cJSON *approved;   /* ideas approved in `thalamus chat`: [{node, idea}] */
};

/* Runs (or resumes) a research loop in the workspace until a limit, the
 * target, exhaustion or Ctrl-C. Returns 0 when the run ended normally, 130
 * when it was interrupted (it can be resumed), or a negative TH_E* code with
 * a message. */
int research_run(const struct research_options *o);

/* Registers the "research" module's migrations with the store. Call before
 * store_open(). */
void research_register_migrations(void);

/*
 * Sets *out to a new JSON document describing run (its id; NULL means the
 * latest run): the run (status, times, provider, model, task, baseline, best,
 * stop reason, isolation, effective config, budget used and limits), its
 * nodes (id, parent, status, metric, commit, title, hypothesis, rationale,
 * kind, label, insight, order, times, params), insights, notes, decisions and
 * usage per agent. TH_ENOTFOUND with a message when the run does not exist
 * (or there is no run at all). The caller frees *out with cJSON_Delete().
 */
int research_export(struct store *store, const char *run, cJSON **out);

#endif
