/*
 * research_internal: what the research loop (research.c), its records
 * (research_store.c), the review commands (cmd_run.c), the review gates
 * (research_review.c) and `thalamus chat` (chat.c) share: the rows of
 * a run and of its nodes, and the functions that read and write them.
 * Depends on store and cJSON.
 */
#ifndef THALAMUS_RESEARCH_INTERNAL_H
#define THALAMUS_RESEARCH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "research.h"

struct store;
struct config;

/* A run, as its row in research_runs. */
struct rs_run {
    char *id; /* "r1", "r2", ... */
    long seq;
    char *status; /* running, interrupted, finished, failed */
    char *started, *finished;
    char *provider, *model;
    char *task_name, *metric, *goal;
    char *baseline; /* commit the first experiments build on */
    char *isolation;
    cJSON *config; /* effective loop / task / sandbox settings */
    cJSON *limits; /* rounds, experiments, tokens, cost, seconds, target */
    char *stop_reason;
    double seconds;  /* wall time used, over every session */
    long expansions; /* rounds done */
    long iterations;
    long seed;
};

/* A node of the experiment tree, as its row in research_nodes. */
struct rs_node {
    long id;      /* 0 is the baseline */
    long parent;  /* -1 for the baseline */
    char *kind;   /* baseline, draft, improve, debug */
    char *state;  /* pending, running, committing, done */
    char *status; /* when done: ok, failed, timeout, invalid, oom, killed */
    char *title, *hypothesis, *rationale;
    cJSON *idea;    /* the planner's idea as proposed */
    cJSON *params;  /* the parameter file after the coder, or NULL */
    cJSON *results; /* results.json, or NULL */
    double metric;  /* NAN: none */
    double value;   /* NAN: not evaluated */
    double score;   /* the critic's review score, NAN when none */
    char *label, *insight;
    char *commit, *tree;
    long debug_depth; /* debug attempts in a row up to this node */
    long order;       /* the order experiments finished, 1..n; 0: not yet */
    char *started, *finished;
    double seconds;
    char *reason;    /* why the status is not ok */
    char *traceback; /* JSON of the sandbox's traceback, or NULL */
    char *output;    /* tail of stdout and stderr */
    char *message;   /* the coder's message */
};

/* "2026-01-31T12:00:00Z" for now; the caller frees it. */
char *rs_now(void);

int rs_run_next_id(struct store *store, char **id, long *seq);
int rs_run_save(struct store *store, const struct rs_run *run);
/* id NULL: the latest run. TH_ENOTFOUND with a message when there is none. */
int rs_run_load(struct store *store, const char *id, struct rs_run *out);
void rs_run_clear(struct rs_run *run);
int rs_runs_list(struct store *store, struct rs_run **out, size_t *n);
void rs_runs_free(struct rs_run *list, size_t n);

void rs_node_init(struct rs_node *n);
void rs_node_clear(struct rs_node *n);
int rs_node_save(struct store *store, const char *run, const struct rs_node *n);
/* The nodes of run by id (index i holds node i). */
int rs_nodes_load(struct store *store, const char *run, struct rs_node **out, size_t *n);
void rs_nodes_free(struct rs_node *list, size_t n);

/* Whether a process holds run's lock (it is being run now). */
bool rs_run_active(struct store *store, const char *run);

/* Records a decision (kind "decision": decision and reason) or a note. */
int rs_event_add(struct store *store, const char *run, long node, const char *kind,
                 const char *decision, const char *reason, const char *text);

/* The status a node shows: its outcome once done, else "pending" or
 * "running". */
const char *rs_node_status(const struct rs_node *n);

/* Budget used by run: tokens and cost (NAN when unknown) of its model
 * calls. */
int rs_usage(struct store *store, const char *run, long *tokens, double *cost);

/* Id of the best finished node by metric in the task's direction, -1 when
 * none has a metric. */
int research_best(const struct rs_run *run, const struct rs_node *nodes, size_t n);

/* JSON of the run's row (as research_export's "run") and of its nodes. */
cJSON *research_run_json(struct store *store, const struct rs_run *r, const struct rs_node *nodes,
                         size_t n);
cJSON *research_nodes_json(const struct rs_node *nodes, size_t n);

/* An idea's title, hypothesis and changes as one text (for the novelty
 * filter and the idea bank); the caller frees it. */
char *research_idea_text(const cJSON *idea);

/* The node's value in [0, 1] from its metric, the baseline's metric and the
 * goal (see docs/research.md). */
double research_value(const char *goal, const char *status, double metric, double baseline);

#endif
