/*
 * memory: thalamus's long-term memory, in the workspace database.
 *
 * Two stores, after CoALA's split of memory by what it holds. The episodic
 * store is an append-only timeline of what happened (ideas, experiments,
 * results, debugging, analyses, human notes, model calls), each tied to a
 * run, a node of the search tree and an agent; triggers refuse UPDATE and
 * DELETE, so the history is never rewritten. The associative store holds
 * items (papers, ideas, insights, notes, concepts, experiments) with text,
 * a source, JSON metadata, an importance and access statistics, joined by
 * weighted typed links (cites, derived_from, similar, co_recalled, supports,
 * contradicts) and indexed by an FTS5 full-text index that triggers keep in
 * step with the items (in a bulk load, memory_begin_bulk(), one pass at its
 * commit does).
 *
 * memory_recall() ranks items for a query: BM25 candidates from the index
 * (fused by reciprocal rank with embedding similarity when a query vector
 * is given), scored by weighted relevance, recency and importance as in
 * Generative Agents, then spread along links from the best seeds (spreading
 * activation, decaying per hop and divided by each item's fan-out). Each hit
 * carries the breakdown of its score. memory_reinforce() is the Hebbian
 * update for items recalled together and then used; co_recalled links
 * decay with a half-life, applied lazily from their last update.
 * memory_similar() finds the items of a kind nearest to a text by TF-IDF
 * cosine (for the novelty check of new ideas). The formulas are in
 * docs/memory.md.
 *
 * Text is repaired to valid UTF-8 on the way in (utf8.h) and capped at
 * MEMORY_MAX_TEXT bytes. One struct memory serves one store connection on
 * the loop's thread; it caches prepared statements. Depends on store,
 * config, utf8, buf, alloc, error, SQLite (with FTS5) and cJSON.
 */
#ifndef THALAMUS_MEMORY_H
#define THALAMUS_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "store.h"

struct config;

#define MEMORY_MAX_TEXT  ((size_t)8 << 20) /* bytes of an item's or episode's text */
#define MEMORY_MAX_TITLE ((size_t)4096)    /* bytes of a title */
#define MEMORY_MAX_K     1000              /* most hits one recall returns */
#define MEMORY_MAX_USED  64                /* most items one reinforcement links */

/* NULL-terminated lists of the valid names, in documentation order. */
extern const char *const memory_item_kinds[];    /* paper, idea, insight, ... */
extern const char *const memory_episode_kinds[]; /* idea, experiment, result, ... */
extern const char *const memory_link_types[];    /* cites, derived_from, ... */

/* Checks that name is in list (one of the three above); the usage error
 * (TH_EUSAGE) names what (e.g. "item kind") and suggests the closest. */
int memory_check_name(const char *const *list, const char *what, const char *name);

/* Tuning of recall, activation and link decay (the memory.* keys). */
struct memory_params {
    double weight_relevance;
    double weight_recency;
    double weight_importance;
    double weight_activation;
    double recency_decay;       /* recency factor per hour since last access */
    long candidates;            /* BM25 candidates per recall */
    long activation_seeds;      /* top items that spread activation */
    long activation_hops;       /* 0 (off), 1 or 2 */
    double activation_decay;    /* factor per hop */
    double hebbian_rate;        /* learning rate of co_recalled links */
    double link_half_life_days; /* half-life of co_recalled links */
    long embedding_scan_max;    /* exact vector search up to this many embeddings */
};

/* The built-in defaults (the same as config.c's). */
void memory_params_default(struct memory_params *p);

/* The values of cfg's memory.* keys. */
void memory_params_from_config(struct memory_params *p, const struct config *cfg);

struct memory;

/* Registers the memory module's migrations with the store; call before
 * workspace_store_open() or store_open(). */
void memory_register_migrations(void);
/* The same, but only migrations up to version (for upgrade tests). */
void memory_register_migrations_upto(int version);

/* Wraps an open store (whose migrations included the memory module's).
 * params NULL means the defaults. The store stays the caller's and must
 * outlive the memory. Free with memory_free(). */
int memory_new(struct memory **out, struct store *store, const struct memory_params *params);
void memory_free(struct memory *m);

void memory_set_params(struct memory *m, const struct memory_params *params);
const struct memory_params *memory_get_params(const struct memory *m);

/* Replaces the clock (milliseconds since the Unix epoch) for tests; NULL
 * restores the real one. */
void memory_set_clock(struct memory *m, int64_t (*now_ms)(void *ud), void *ud);
int64_t memory_now(const struct memory *m);

/* A transaction around many writes (much faster than one per write). Not
 * nestable. memory_rollback() cannot fail. */
int memory_begin(struct memory *m);
int memory_commit(struct memory *m);
void memory_rollback(struct memory *m);

/* Leaves the usual checkpoints of the write-ahead log (copying it into the
 * database and syncing both files: tens of milliseconds on a disk) to the
 * caller, who calls memory_checkpoint_due() where a pause does not matter,
 * rather than having one run inside whichever commit fills the log. A log
 * the caller leaves to grow to 8 times the usual size is checkpointed at
 * its commit anyway. */
void memory_defer_checkpoints(struct memory *m);

/* Checkpoints the write-ahead log if it holds as much as a checkpoint is
 * due at (one that waits for no reader; outside a transaction). Returns 0,
 * or an error when the checkpoint failed other than for a busy database. */
int memory_checkpoint_due(struct memory *m);

/* Opens a transaction for a bulk load (import, ingest, batched inserts):
 * the full-text index entries of the items added in it are not written one
 * by one by the triggers but in one pass by memory_commit(), just before it
 * commits, so what is committed is always indexed. Until then those items
 * are not found by keyword search on this connection (other connections
 * see nothing of the transaction anyway). Commit or roll back as usual. */
int memory_begin_bulk(struct memory *m);
/* Whether the open transaction is a bulk load. */
bool memory_in_bulk(const struct memory *m);

/* ---- associative items -------------------------------------------------- */

struct memory_item {
    int64_t id;
    char *uid;  /* stable identity across export and import */
    char *kind; /* one of memory_item_kinds */
    char *title;
    char *text;
    char *tags;        /* extra searchable words: authors, venue, keywords */
    char *source;      /* where it came from ("user", "openalex", a file...), or NULL */
    char *metadata;    /* a JSON object */
    double importance; /* 0..1 */
    int64_t created_ms, accessed_ms;
    long access_count;
};

/* Sets every field to its default: nothing, importance 0.5. */
void memory_item_init(struct memory_item *it);
/* Frees the strings of an item filled by memory_item_get(). */
void memory_item_clear(struct memory_item *it);

/* Adds an item from the borrowed fields of it: kind and text are required;
 * title, tags, source may be NULL; metadata NULL means "{}"; uid NULL makes
 * a new one; created_ms 0 means now and accessed_ms 0 means created_ms.
 * Text is repaired to valid UTF-8 (*repaired, may be NULL, says whether it
 * had to be); over MEMORY_MAX_TEXT is an error. Sets *id. A uid that exists
 * already is TH_EEXISTS. */
int memory_item_add(struct memory *m, const struct memory_item *it, int64_t *id, bool *repaired);

/* Replaces title, text, tags, source, metadata and importance of item id
 * with those of it (NULL strings and a NAN importance keep their value). */
int memory_item_update(struct memory *m, int64_t id, const struct memory_item *it);

/* Fills *out (free with memory_item_clear()); TH_ENOTFOUND when absent. */
int memory_item_get(struct memory *m, int64_t id, struct memory_item *out);

/* Looks an item up by uid; TH_ENOTFOUND when absent. */
int memory_item_by_uid(struct memory *m, const char *uid, int64_t *id);

/* Deletes the item, its links, keys and embedding; TH_ENOTFOUND when absent. */
int memory_item_forget(struct memory *m, int64_t id);

/* Identity keys of items, such as "doi:10.1000/x", "arxiv:2101.00001",
 * "openalex:W123" or "title:attention is all you need": a key names at most
 * one item. Adding a key another item holds is TH_EEXISTS; adding one the
 * item holds already does nothing. */
int memory_key_add(struct memory *m, int64_t id, const char *key);
/* Sets *id to the item holding key; TH_ENOTFOUND when none. */
int memory_key_find(struct memory *m, const char *key, int64_t *id);
/* Records that item id refers to whatever item holds key, by a link of
 * type (usually "cites"): linked at once when an item holds key, otherwise
 * kept until an item gains that key. */
int memory_ref_add(struct memory *m, int64_t id, const char *key, const char *type);
/* The keys of an item, NULL-terminated; free with memory_strv_free(). */
int memory_keys_of(struct memory *m, int64_t id, char ***out);
void memory_strv_free(char **v);

/* ---- links -------------------------------------------------------------- */

struct memory_link {
    int64_t src, dst;
    char type[16];
    double weight;        /* effective: decayed to now for co_recalled links */
    double stored_weight; /* as written at updated_ms */
    int64_t updated_ms;
};

/* Creates or replaces the link src -> dst of type with weight (0..1]. The
 * symmetric types (similar, co_recalled) are stored with src < dst. */
int memory_link_set(struct memory *m, int64_t src, int64_t dst, const char *type, double weight);

/* Every link touching id, in either direction, strongest first; free *out. */
int memory_links_of(struct memory *m, int64_t id, struct memory_link **out, size_t *n);

/* The weight of the link at time now_ms given its stored weight and last
 * update: co_recalled links halve every link_half_life_days, other types
 * keep their weight. */
double memory_link_effective_weight(const struct memory_params *p, const char *type, double stored,
                                    int64_t updated_ms, int64_t now_ms);

/* The Hebbian update: for every pair of the n items in ids (recalled
 * together and then used), the co_recalled link's weight w, first decayed
 * to now, becomes w + hebbian_rate * (1 - w). At most MEMORY_MAX_USED ids;
 * duplicates are ignored; unknown ids are TH_ENOTFOUND. One transaction. */
int memory_reinforce(struct memory *m, const int64_t *ids, size_t n);

/* ---- episodic store ----------------------------------------------------- */

struct memory_episode {
    int64_t id;
    char *uid;
    int64_t time_ms;
    char *run, *node, *agent; /* NULL when not applicable */
    char *kind;               /* one of memory_episode_kinds */
    char *text;
    char *payload; /* a JSON value, or NULL */
    double importance;
};

/* Appends an episode from the borrowed fields of ep (kind and text required;
 * time_ms 0 means now; importance as for items; uid NULL makes one). */
int memory_episode_add(struct memory *m, const struct memory_episode *ep, int64_t *id);

struct memory_episode_filter {
    const char *run, *node, *kind, *agent; /* NULL: any */
    int64_t since_ms, until_ms;            /* 0: open; since inclusive, until exclusive */
    long limit;                            /* 0: no limit */
    bool newest;                           /* the limit keeps the newest, not the oldest */
};

/* Episodes matching filter, oldest first. Free with memory_episodes_free(). */
int memory_episodes(struct memory *m, const struct memory_episode_filter *filter,
                    struct memory_episode **out, size_t *n);
void memory_episodes_free(struct memory_episode *list, size_t n);

/* ---- embeddings --------------------------------------------------------- */

/* Stores (replacing) item id's embedding by model: dim float32 values. */
int memory_embedding_put(struct memory *m, int64_t id, const char *model, const float *vec,
                         int dim);
/* *vec (free it) and *dim of item id's embedding by model; TH_ENOTFOUND. */
int memory_embedding_get(struct memory *m, int64_t id, const char *model, float **vec, int *dim);
/* Up to limit ids of items without an embedding by model, oldest first. */
int memory_embedding_missing(struct memory *m, const char *model, long limit, int64_t **ids,
                             size_t *n);

/* Cosine similarity of two vectors (0 when either is all zeros). */
double memory_cosine(const float *a, const float *b, int dim);

/* ---- recall ------------------------------------------------------------- */

struct memory_recall_options {
    const char *query; /* free text, any bytes; never passed raw to MATCH */
    const char *kind;  /* only items of this kind, or NULL */
    int k;             /* hits wanted, 1..MEMORY_MAX_K */
    /* Optional: the query's embedding, fused with BM25 by reciprocal rank. */
    const float *query_vec;
    int dim;
    const char *model; /* the embedding model of query_vec */
    bool no_touch;     /* leave access statistics alone */
};

struct memory_hit {
    struct memory_item item;
    double score; /* the sum below */
    /* the weighted parts: */
    double relevance_part, recency_part, importance_part, activation_part;
    /* and the unweighted terms, each in [0, 1]: */
    double relevance, recency, importance, activation;
    double bm25;      /* FTS5 bm25 (lower is better), NAN when not a keyword match */
    double cosine;    /* embedding similarity, NAN when not computed */
    int keyword_rank; /* 1-based rank among the keyword candidates, 0: none */
    int vector_rank;  /* 1-based rank among the vector candidates, 0: none */
    int64_t via_id;   /* strongest activation came from this item, 0: none */
    char via_type[16];
    int via_hops;
};

/* Recalls up to o->k items for o->query, best first (see docs/memory.md for
 * the formula), and refreshes the access time and count of those returned
 * unless o->no_touch. A query without searchable words gives no hits and is
 * not an error. Free *out with memory_hits_free(). */
int memory_recall(struct memory *m, const struct memory_recall_options *o, struct memory_hit **out,
                  size_t *n);
void memory_hits_free(struct memory_hit *hits, size_t n);

/* The bounds of recall's keyword search on large stores (docs/memory.md):
 * the rare words of a query are searched rarest first while the items
 * holding them add up to at most posting_budget; a query whose words are
 * all common searches the newest common_window items. 0 restores the
 * default; for tests and benchmarks. */
#define MEMORY_POSTING_BUDGET 1500
#define MEMORY_COMMON_WINDOW  100000
void memory_set_search_limits(struct memory *m, long posting_budget, long common_window);

/* Turns free text into a safe FTS5 query: words (letters, digits and any
 * non-ASCII characters) become double-quoted strings joined by OR; English
 * stop words are left out unless nothing else remains; at most 32 terms.
 * *out is "" when the text has no words. The caller frees *out. */
char *memory_fts_query(const char *text);

/* ---- similarity ---------------------------------------------------------- */

struct memory_match {
    int64_t id;
    double similarity; /* TF-IDF cosine, 0..1 */
    char *kind;
    char *title;
};

/* Items of kind (NULL: any) whose TF-IDF cosine similarity to text is at
 * least threshold, most similar first, at most max. Tokens are those of the
 * full-text index (Porter-stemmed words) and inverse document frequencies
 * come from the index. Free with memory_matches_free(). */
int memory_similar(struct memory *m, const char *text, const char *kind, double threshold,
                   size_t max, struct memory_match **out, size_t *n);
void memory_matches_free(struct memory_match *list, size_t n);

/* The same with embeddings: items of kind (NULL: any) whose embedding by
 * model has a cosine similarity of at least threshold with vec (dim
 * floats), most similar first, at most max. Every embedding of the kind is
 * compared (ideas, the usual kind, are few). */
int memory_similar_vector(struct memory *m, const float *vec, int dim, const char *model,
                          const char *kind, double threshold, size_t max, struct memory_match **out,
                          size_t *n);

/* TF-IDF cosine similarity of two texts against the store's corpus
 * statistics (what memory_similar() computes for each candidate). */
int memory_text_similarity(struct memory *m, const char *a, const char *b, double *out);

/* ---- statistics, export and import ------------------------------------ */

/* Counts of items by kind, links by type, episodes by kind, embeddings by
 * model, keys, and the size of the database. The caller deletes *out. */
int memory_stats(struct memory *m, cJSON **out);

struct memory_io_counts {
    long items, links, episodes, embeddings, keys;
    long items_existing; /* import: items whose uid was already there */
    long skipped;        /* import: malformed lines */
};

/* Writes every item (with its keys), link, episode and, when embeddings,
 * embedding as one JSON object per line (see docs/memory.md). */
int memory_export(struct memory *m, FILE *out, bool embeddings, struct memory_io_counts *counts);

/* Reads what memory_export() wrote, in one transaction. Items and episodes
 * whose uid exists already are not duplicated, so importing twice changes
 * nothing. A malformed line is reported (log_warn, with its number) and
 * skipped. */
int memory_import(struct memory *m, FILE *in, const char *name, struct memory_io_counts *counts);

/* ---- integrity ---------------------------------------------------------- */

/* Checks the database at path without changing it: that it is a SQLite
 * database of thalamus, PRAGMA integrity_check (quick_check when quick),
 * foreign keys, the full-text index against the items, the append-only
 * triggers, and the schema versions against those this build knows. *report
 * gets {"path", "ok", "checks": [{"name", "ok", "detail"}...]}; the caller
 * deletes it. Returns 0 when the checks could run (whatever they found),
 * TH_ENOTFOUND when there is no database. */
int memory_doctor(const char *path, bool quick, cJSON **report);

#endif
