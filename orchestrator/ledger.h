/*
 * ledger: the experiments of a run as git commits.
 *
 * Each experiment is a commit whose tree is its parent's tree with the
 * experiment directory (experiment/) replaced by the experiment's files, and
 * whose parent is the commit of the experiment it builds on, so the commit
 * graph is the search tree. Objects are written straight into the object
 * database and trees are built in memory: the user's working tree, index and
 * HEAD are never touched. Every experiment gets a ref
 * refs/thalamus/runs/RUN/NODE (so `git log --graph` with a --glob over a
 * run's refs shows its tree; see docs/git.md), and a note under
 * refs/notes/thalamus with its full metrics and the tail of its output.
 * Experiment directories are materialised from a commit's tree into
 * .thalamus/runs/. docs/git.md shows how to review a run with plain git.
 * Depends on alloc, buf, error, fsutil and libgit2.
 */
#ifndef THALAMUS_LEDGER_H
#define THALAMUS_LEDGER_H

#include <stdbool.h>
#include <stddef.h>

#define LEDGER_HEX_SIZE   41 /* 40 hex digits and a NUL */
#define LEDGER_NOTES_REF  "refs/notes/thalamus"
#define LEDGER_REF_PREFIX "refs/thalamus/runs/"
#define LEDGER_EXPERIMENT "experiment"

struct ledger;

/* Opens the git repository of workspace (not searching upwards). Fails with
 * a message when the directory is not a git repository. Free with
 * ledger_free(). */
int ledger_open(struct ledger **out, const char *workspace);
void ledger_free(struct ledger *l);

/* The commit HEAD points to, as hex. TH_ENOTFOUND when HEAD is unborn. */
int ledger_head(struct ledger *l, char out[LEDGER_HEX_SIZE]);

/* Whether commit (hex) exists and its tree holds the experiment directory. */
bool ledger_has_experiment(struct ledger *l, const char *commit);

/* Writes the files of the experiment directory of commit into dir, which is
 * created (with its parents) and emptied first. Executable bits and symbolic
 * links are kept. */
int ledger_materialise(struct ledger *l, const char *commit, const char *dir);

/* ledger_materialise() in two steps, so that the files are created while
 * the caller does something else: _start() reads the tree (from this
 * ledger, in the calling thread), removes dir, and has another thread
 * create it and its files (dir's parent must exist); _finish() waits for
 * that thread and returns what ledger_materialise() would have (on a
 * failure dir may hold part of the tree). Every _start() that succeeded
 * needs its _finish(), before dir is used or removed; it frees w (NULL
 * does nothing). */
struct ledger_writeout;
int ledger_materialise_start(struct ledger *l, const char *commit, const char *dir,
                             struct ledger_writeout **w);
int ledger_materialise_finish(struct ledger_writeout *w);

/* Writes the files under dir into the object database as a tree (skipping
 * results.json, __pycache__ and .git) and sets out to its id. Files are
 * stored byte for byte (no line-ending or .gitattributes filter), and one
 * already in the database is not written again. An empty directory gives
 * the empty tree. The new objects are kept in memory (this ledger reads
 * them at once) until ledger_flush(), or a commit, ref or note that could
 * point at them, writes them to disk; ledger_free() writes what is left. */
int ledger_write_tree(struct ledger *l, const char *dir, char out[LEDGER_HEX_SIZE]);

/* Writes the objects kept in memory to the repository. On a failure those
 * not written stay kept, and a later call tries again. */
int ledger_flush(struct ledger *l);

struct ledger_commit {
    const char *run, *node;  /* for the ref and the trailers */
    const char *parent;      /* commit the experiment builds on (hex) */
    const char *tree;        /* the experiment directory's tree (hex), from ledger_write_tree */
    const char *title;       /* first line of the message */
    const char *body;        /* paragraphs after the title, or NULL */
    const char *status;      /* ok, failed, timeout, invalid, oom, killed */
    const char *metric_name; /* e.g. "accuracy" */
    const char *metric;      /* the value as text, or NULL when there is none */
    const char *model;       /* "offline" or "provider/model" */
    const char *note;        /* text of the note, or NULL for none (ledger_add_notes) */
    long long time;          /* commit time, seconds since the epoch (UTC); 0: now */
    bool later;              /* keep it in memory, write no note and no ref (below) */
};

/* Commits c (author and committer: the repository's identity, else
 * "thalamus <thalamus@localhost>"), points refs/thalamus/runs/RUN/NODE at
 * it and adds the note. Sets out to the commit's id. With c->time the
 * commit is the same whenever it is made again from the same c. With
 * c->later the commit and its tree are only kept in memory like a recorded
 * tree (this ledger reads them at once), and neither the ref nor the note
 * is written: ledger_set_ref() writes the objects and then the ref. */
int ledger_commit(struct ledger *l, const struct ledger_commit *c, char out[LEDGER_HEX_SIZE]);

struct ledger_note {
    const char *commit; /* hex */
    const char *text;
};
/* Adds the notes under refs/notes/thalamus, all in one commit of the notes
 * (a note already there for one of the commits is replaced). */
int ledger_add_notes(struct ledger *l, const struct ledger_note *notes, size_t n);

/* Points refs/thalamus/runs/RUN/NODE at an existing commit (the baseline). */
int ledger_set_ref(struct ledger *l, const char *run, const char *node, const char *commit);

/* The commit refs/thalamus/runs/RUN/NODE points to; TH_ENOTFOUND when the
 * ref does not exist. */
int ledger_find(struct ledger *l, const char *run, const char *node, char out[LEDGER_HEX_SIZE]);

/* The patch from commit a to commit b, limited to the experiment directory,
 * as text in *out (the caller frees it). */
int ledger_diff(struct ledger *l, const char *a, const char *b, char **out);

/* The patch from the experiment directory of commit parent to tree (an
 * experiment directory's tree, from ledger_write_tree), with paths relative
 * to the experiment directory, as text in *out (the caller frees it). */
int ledger_diff_tree(struct ledger *l, const char *parent, const char *tree, char **out);

/* The note of commit under refs/notes/thalamus in *out (the caller frees
 * it); TH_ENOTFOUND when it has none. */
int ledger_note(struct ledger *l, const char *commit, char **out);

#endif
