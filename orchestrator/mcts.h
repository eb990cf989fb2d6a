/*
 * mcts: a generic, asynchronous Monte-Carlo tree search.
 *
 * The engine owns the tree (nodes with visits, value sum, best value, prior,
 * state and children) and the policy: selection by UCT or PUCT, progressive
 * widening (a node may have at most ceil(widen_k * visits^widen_alpha)
 * children), virtual loss to keep concurrent selections apart, and back-up
 * of the mean or of the maximum. What a node means is the caller's: two
 * callbacks, expand and evaluate, may answer at once or later from an event
 * loop callback (a model reply, a finished experiment), so several
 * iterations are in flight together. The same seed and the same callback
 * answers give the same tree. The tree saves to and loads from the store.
 * The research loop drives its experiment tree with it, and `thalamus think`
 * its tree of thoughts. Depends on alloc, error, loop and store.
 */
#ifndef THALAMUS_MCTS_H
#define THALAMUS_MCTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mcts;
struct loop;
struct store;

/* Node ids are indexes into the tree: the root is 0, children get the next
 * free id in the order they were added. */
typedef uint32_t mcts_id;
#define MCTS_NONE ((mcts_id)UINT32_MAX)

enum mcts_policy { MCTS_UCT, MCTS_PUCT };
enum mcts_backup { MCTS_BACKUP_MEAN, MCTS_BACKUP_MAX };

enum mcts_state {
    MCTS_EXPANDABLE, /* may get (more) children */
    MCTS_PENDING,    /* an expand or evaluate callback is outstanding */
    MCTS_TERMINAL,   /* never expanded: a finished answer or a dead end */
};

/* What ended mcts_run(). */
enum mcts_stop {
    MCTS_STOP_NONE,       /* still running */
    MCTS_STOP_ITERATIONS, /* budget.iterations reached */
    MCTS_STOP_TIME,       /* budget.ms reached */
    MCTS_STOP_TOKENS,     /* budget.tokens reached (see mcts_add_tokens) */
    MCTS_STOP_EXHAUSTED,  /* nothing left to expand or evaluate */
    MCTS_STOP_CANCELLED,  /* mcts_cancel() */
    MCTS_STOP_ERROR,      /* a callback reported an error (mcts_last_error) */
};

struct mcts_options {
    enum mcts_policy policy; /* default MCTS_UCT */
    double c;                /* exploration constant; default 1.414 (UCT), 1.25 (PUCT) */
    double widen_k;          /* progressive widening; 0 disables it (default) */
    double widen_alpha;      /* default 0.5 */
    enum mcts_backup backup; /* default MCTS_BACKUP_MEAN */
    double virtual_loss;     /* value subtracted per in-flight selection; default 1 */
    int max_inflight;        /* iterations in flight at once; default 1 */
    bool evaluate_children;  /* evaluate every child an expansion adds (true) or one */
    uint64_t seed;           /* tie-breaking and random choices */
    struct {
        uint64_t iterations; /* 0: unlimited */
        uint64_t ms;         /* wall time; 0: unlimited */
        uint64_t tokens;     /* 0: unlimited */
    } budget;
    /* Evaluate a terminal node again each time it is selected (noisy
     * rewards, bandits) instead of backing up its known value (false). */
    bool reevaluate_terminal;
};

/* Fills o with the defaults above. */
void mcts_options_default(struct mcts_options *o);

/*
 * Callbacks. Each may answer inside the call or later (from a loop callback);
 * the engine never calls them re-entrantly for the same node.
 *  - expand: add children with mcts_add_child(), then call mcts_expanded().
 *    Adding no child makes the node terminal.
 *  - evaluate: call mcts_evaluated() with a value, normalised by the caller
 *    into [0, 1] (values outside are clamped; NaN is an error).
 *  - terminal (optional): whether a node is terminal before expanding it.
 *  - select (optional): lets the caller pick the node to work on instead of
 *    the policy (the research loop uses it to send failed nodes to
 *    debugging); return MCTS_NONE to let the policy choose.
 */
struct mcts_callbacks {
    void (*expand)(struct mcts *t, mcts_id node, void *ud);
    void (*evaluate)(struct mcts *t, mcts_id node, void *ud);
    bool (*terminal)(struct mcts *t, mcts_id node, void *ud);
    mcts_id (*select)(struct mcts *t, void *ud);
    /* Called once when mcts_run() stops, with the reason. */
    void (*done)(struct mcts *t, enum mcts_stop why, void *ud);
};

int mcts_new(struct mcts **out, const struct mcts_options *o, const struct mcts_callbacks *cb,
             void *ud);
void mcts_free(struct mcts *t);

/* Answers to the callbacks. rc < 0 reports an error (message in error.h),
 * which stops the run with MCTS_STOP_ERROR. */
mcts_id mcts_add_child(struct mcts *t, mcts_id parent, double prior, const char *payload,
                       size_t len);
void mcts_expanded(struct mcts *t, mcts_id node, int rc);
void mcts_evaluated(struct mcts *t, mcts_id node, double value, int rc);

/* Runs until a budget, exhaustion or cancellation. With loop NULL every
 * callback must answer inside the call and mcts_run() returns when done;
 * with a loop it returns at once and done() reports the end. */
int mcts_run(struct mcts *t, struct loop *loop);
void mcts_cancel(struct mcts *t);
void mcts_add_tokens(struct mcts *t, uint64_t tokens);

/* Reading the tree. */
size_t mcts_size(const struct mcts *t);
mcts_id mcts_parent(const struct mcts *t, mcts_id n);
mcts_id mcts_first_child(const struct mcts *t, mcts_id n);
mcts_id mcts_next_sibling(const struct mcts *t, mcts_id n);
unsigned mcts_child_count(const struct mcts *t, mcts_id n);
unsigned mcts_depth(const struct mcts *t, mcts_id n);
uint32_t mcts_visits(const struct mcts *t, mcts_id n);
double mcts_mean(const struct mcts *t, mcts_id n); /* value sum / visits, 0 unvisited */
double mcts_max(const struct mcts *t, mcts_id n);  /* best value backed up through n */
double mcts_prior(const struct mcts *t, mcts_id n);
enum mcts_state mcts_state(const struct mcts *t, mcts_id n);
const char *mcts_payload(const struct mcts *t, mcts_id n, size_t *len);
void mcts_set_payload(struct mcts *t, mcts_id n, const char *payload, size_t len);
void mcts_set_terminal(struct mcts *t, mcts_id n);
uint64_t mcts_iterations(const struct mcts *t);
/* The best node: the most visited child path for mean back-up, the node
 * with the best value for max back-up. */
mcts_id mcts_best(const struct mcts *t);

/* Records a value for n without an evaluate callback (resume: rebuilding a
 * tree from finished experiments), backing it up to the root. */
void mcts_backup(struct mcts *t, mcts_id n, double value);

/* Saves the tree (structure, statistics, payloads, iteration count) under
 * name in the store, replacing an earlier save, in one transaction; loads it
 * back. The module "mcts" registers its tables through mcts_register_migrations(). */
void mcts_register_migrations(void);
int mcts_save(const struct mcts *t, struct store *store, const char *name);
int mcts_load(struct mcts *t, struct store *store, const char *name);

/* The options a tree was saved with (to create the search that loads it).
 * TH_ENOTFOUND when no tree has that name. */
int mcts_load_options(struct mcts_options *out, struct store *store, const char *name);

/* More about the tree and the run. */
/* How many children n may have now under progressive widening (UINT32_MAX
 * when widening is off); mcts_add_child() refuses more during n's
 * expansion. The visits in the formula count as at least 1. */
unsigned mcts_child_limit(const struct mcts *t, mcts_id n);
bool mcts_has_value(const struct mcts *t, mcts_id n); /* evaluated or backed up */
bool mcts_complete(const struct mcts *t, mcts_id n);  /* nothing below can change */
uint64_t mcts_tokens(const struct mcts *t);
/* Why the last run stopped (MCTS_STOP_NONE while running or never run). */
enum mcts_stop mcts_stop_reason(const struct mcts *t);
/* The error that stopped the run with MCTS_STOP_ERROR ("" when none). */
const char *mcts_last_error(const struct mcts *t);
const char *mcts_stop_name(enum mcts_stop why); /* "iterations", "time", ... */
const struct mcts_options *mcts_get_options(const struct mcts *t);
/* Replaces the budget (between runs, e.g. to go on after a load). */
void mcts_set_budget(struct mcts *t, uint64_t iterations, uint64_t ms, uint64_t tokens);
/* sizeof one node before its payload, and the bytes the tree holds now. */
size_t mcts_node_bytes(void);
size_t mcts_memory(const struct mcts *t);

#endif
