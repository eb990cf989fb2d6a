/*
 * review: the review gates of the research loop (loop.autonomy, `thalamus
 * run --review`) and the records of a human's decisions.
 *
 * At `review-ideas` the ideas an expansion is about to keep are shown to
 * the human, who approves, vetoes or edits each before any experiment
 * starts; at `review-code` the coder's change of each experiment is shown
 * as a diff too, before it runs. On a terminal the gate asks; otherwise it
 * answers from a decisions file (JSON lines, see docs/chat.md) with a
 * default for what the file does not list, and without either it refuses
 * to start, so that a run never waits for an answer nobody can give.
 * `thalamus chat` hands the gate the ideas the human approved in the chat,
 * which the first expansion of their node takes before the planner's.
 * Every decision is recorded in the store (research_events, so
 * research_export and the report show it), in memory (a human_note episode;
 * a vetoed idea also joins the idea bank, so neither the novelty filter nor
 * the planners propose it again) and in the commit message of the
 * experiment ("Review: ..."). Depends on research_internal, config,
 * memory, store, ledger (libgit2 for the code diff), buf and cJSON.
 */
#ifndef THALAMUS_REVIEW_H
#define THALAMUS_REVIEW_H

#include <stdbool.h>

#include <cjson/cJSON.h>

struct buf;
struct config;
struct memory;
struct store;
struct rs_node;
struct research_options;

enum review_level { REVIEW_FULL, REVIEW_IDEAS, REVIEW_CODE };

struct review_gate;

/* Parses "full", "review-ideas" or "review-code"; REVIEW_FULL otherwise. */
enum review_level review_level_parse(const char *s);

/* Sets *out to the gate of a run: the level is loop.autonomy, raised to
 * review-ideas by o->review; the decisions come from o->review_file (or
 * loop.review_file, relative to the workspace) when given, else from the
 * terminal. *out is NULL when nothing is reviewed and nothing was approved
 * in a chat. A level that reviews without a terminal and without a file is
 * a usage error (TH_EUSAGE) that says what to give; so is an unreadable or
 * malformed decisions file. store and mem must outlive the gate. Free with
 * review_gate_free() (NULL is fine). */
int review_gate_new(struct review_gate **out, const struct research_options *o,
                    const struct config *cfg, const char *workspace, struct store *store,
                    struct memory *mem);
void review_gate_free(struct review_gate *g);

/* The review of an expansion of node of run: ideas (the planner's, in
 * place), scores (the critic's, may be NULL) and *order (indexes into
 * ideas, best first, *norder of them, allocated) as the loop is about to
 * keep the first *keep. Ideas the chat approved for node are added first;
 * then, when ideas are reviewed, each candidate is approved (it gets a
 * "review" object), edited (its fields replaced) or vetoed (taken out of
 * *order) until *keep are approved. Decisions are recorded (a transaction
 * of their own). Returns 0, or a negative TH_E* code when the store
 * fails. g NULL changes nothing. */
int review_ideas(struct review_gate *g, const char *run, long node, cJSON *ideas,
                 const cJSON *scores, int **order, int *norder, long *keep);

/* The review of an experiment's code change at review-code: shows the diff
 * of its files (written as tree n->tree from dir, the experiment's work
 * directory) against the experiment of parent_commit and asks (or reads
 * the decisions file). Sets *veto to why the change must not run (the
 * caller frees it), else leaves it NULL; sets *edited when the human
 * changed files in dir (the caller writes the tree again). The decision is
 * recorded and marked in n->idea for the commit message. Returns 0 or a
 * negative TH_E* code. */
int review_code(struct review_gate *g, const char *run, struct rs_node *n,
                const char *parent_commit, const char *dir, char **veto, bool *edited);

/* Applies an edit to idea: "title", "hypothesis", "rationale" and "changes"
 * replace the idea's; "params" are set one by one (each also noted in the
 * idea's changes). */
void review_apply_edit(cJSON *idea, const cJSON *edit);

/* Opens $VISUAL or $EDITOR (else vi) on *obj as JSON and replaces *obj by
 * the saved object; an error (the object unchanged) when the editor fails
 * or what was saved is not a JSON object. */
int review_edit_json(cJSON **obj);

/* Appends the "Review: ..." line of node n's commit message to b, if its
 * idea or code was reviewed. */
void review_commit_lines(struct buf *b, const struct rs_node *n);

/* Records a human decision about an idea (decision "approved", "vetoed" or
 * "edited"; node the node it builds on, run may be NULL when there is no
 * run yet) in memory and, with a run, in the store; a veto also puts the
 * idea into the idea bank. Used by the gate and by `thalamus chat`. The
 * caller holds no transaction. */
int review_record(struct store *store, struct memory *mem, const char *run, long node,
                  const cJSON *idea, const char *decision, const char *by, const char *reason);

#endif
