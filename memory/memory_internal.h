/*
 * memory_internal: what the files of the memory module share and nothing
 * else sees: the struct memory itself, its cache of prepared statements,
 * the database error helper and the tokenizer of the full-text index.
 * Depends on memory.h and SQLite.
 */
#ifndef THALAMUS_MEMORY_INTERNAL_H
#define THALAMUS_MEMORY_INTERNAL_H

#include <sqlite3.h>

#include "buf.h"
#include "memory.h"

/* Cached prepared statements, one per query the module runs often. */
enum memory_stmt {
    ST_ITEM_INSERT,
    ST_ITEM_GET,
    ST_ITEM_SCORE,
    ST_ITEM_TOUCH,
    ST_ITEM_BY_UID,
    ST_KEY_INSERT,
    ST_KEY_FIND,
    ST_LINK_UPSERT,
    ST_LINK_UPSERT_IF_NEWER,
    ST_LINK_GET,
    ST_LINKS_OF,
    ST_LINK_COUNT,
    ST_EPISODE_INSERT,
    ST_EMBED_GET,
    ST_EMBED_Q8_GET,
    ST_EMBED_PUT,
    ST_EMBED_Q8_PUT,
    ST_FTS_CANDIDATES,
    ST_FTS_CANDIDATES_KIND,
    ST_MAX_ID,
    ST_VOCAB_DOC,
    ST_DATA_VERSION,
    ST_FTS_COUNT_CAPPED,
    ST_REF_ADD,
    ST_REFS_FOR_KEY,
    ST_BULK_START,
    ST_BULK_INDEX,
    ST_COUNT
};

struct memory_tokenizer; /* memory_similar.c */

struct memory {
    struct store *store;
    sqlite3 *db;
    struct memory_params params;
    int64_t (*clock)(void *ud);
    void *clock_ud;
    sqlite3_stmt *stmts[ST_COUNT];
    bool in_tx;
    bool bulk;            /* the transaction is a bulk load (memory_begin_bulk) */
    int64_t cache_before; /* PRAGMA cache_size before the bulk load */
    bool committing_bulk; /* committing a bulk load (see wal_hook) */
    bool touching;        /* committing recall's access update (see wal_hook) */
    bool defer_checkpoints; /* see memory_defer_checkpoints() */
    int wal_frames;         /* in the write-ahead log after the last commit */
    long posting_budget;  /* see memory_set_search_limits() */
    long common_window;
    struct memory_tokenizer *tok;
    long items_total; /* cached document count for IDF, -1: unknown */
    /* counts the changes of the full-text index made on this connection
     * (the update hook of memory.c) */
    uint64_t fts_epoch;
    /* document frequencies and term counts, kept between similarity calls
     * (see memory_similar.c) */
    struct memory_sim_cache *sim;
    /* for tests: memory_similar() takes its candidates from the keyword
     * search even where it may score every item of the kind instead
     * (similar_no_scan); similar_scans counts the calls that scanned */
    bool similar_no_scan;
    long similar_scans;
};

/* Frees the caches of memory_similar.c (NULL: none). */
void memory_sim_cache_free(struct memory_sim_cache *c);

/* Marks their frequencies (NULL: none) as out of date. */
void memory_sim_cache_stale(struct memory_sim_cache *c);

/* Tells memory_similar.c that memory_item_add() indexed an item with
 * these title, text and tags (NULL: empty) and fts_epoch was epoch_before
 * before it. */
void memory_sim_item_added(struct memory *m, uint64_t epoch_before, const char *const cols[3]);

/* Empties the cached frequencies if the index changed since they were
 * read: once before a series of memory_sim_df_find() calls. */
int memory_sim_cache_sync(struct memory *m);

/* The cached document frequency of a query word of n bytes (as of the
 * last memory_sim_cache_sync()): 1 with *df set when it is known, 0 when
 * not, or a negative TH_E*. When the word is one term, *term (free it) is
 * that term, for memory_sim_df_store() once its frequency is read. */
int memory_sim_df_find(struct memory *m, const char *word, size_t n, char **term, long *df);

/* Caches the exact document frequency of term, read from the index after
 * memory_sim_df_find() and before any write. */
void memory_sim_df_store(struct memory *m, const char *term, long df);

/* The cached statement for id, prepared on first use from its SQL and reset
 * with bindings cleared; NULL (with error_set) when preparing fails. */
sqlite3_stmt *memory_stmt(struct memory *m, enum memory_stmt id);

/* Records "cannot WHAT in 'db': sqlite message", with a hint to run
 * 'thalamus doctor' when SQLite reports corruption. Returns TH_ERR. */
int memory_db_error(struct memory *m, const char *what);

/* Repairs s (NUL-terminated, may be NULL) into out, capped at max bytes;
 * the error names what ("text", "title"...). */
int memory_clean_text(struct buf *out, const char *s, size_t max, const char *what, bool *repaired);

/* Binds text or NULL. */
void memory_bind_text(sqlite3_stmt *st, int i, const char *s);

/* A copy of column i, or NULL for SQL NULL. */
char *memory_column_dup(sqlite3_stmt *st, int i);

/* Fills an item from a row of "SELECT id, uid, kind, title, text, tags,
 * source, metadata, importance, created_ms, accessed_ms, access_count". */
void memory_item_from_row(sqlite3_stmt *st, struct memory_item *it);

/* Fills l from a row of (src, dst, type, weight, updated_ms), with its
 * weight as of now (decay applied). */
void memory_link_from_row(struct memory *m, sqlite3_stmt *st, int64_t now, struct memory_link *l);
#define MEMORY_ITEM_COLUMNS                                                                        \
    "id, uid, kind, title, text, tags, source, metadata, importance, created_ms, accessed_ms, "    \
    "access_count"

/* SQLite's FTS5 interface for the memory's connection (memory_similar.c). */
int memory_fts5_api(struct memory *m, fts5_api **out);

/* Registers the ranking function thalamus_bm25 on the memory's connection
 * (memory_recall.c); memory_new() calls it. */
int memory_register_rank(struct memory *m);

/* Calls cb for each token the full-text index would make of text (Porter
 * stemmed, lower case, diacritics removed). cb returns 0 to go on. */
typedef int (*memory_token_cb)(const char *token, int len, void *ud);
int memory_tokenize(struct memory *m, const char *text, size_t len, memory_token_cb cb, void *ud);
void memory_tokenizer_free(struct memory_tokenizer *tok);

/* Writes a link with an explicit last-update time (for import): an existing
 * link is replaced only when updated_ms is not older than its own. */
int memory_link_put(struct memory *m, int64_t src, int64_t dst, const char *type, double weight,
                    int64_t updated_ms);

/* The keyword search of recall (memory_recall.c): up to limit items of
 * kind (NULL: any) matching text, best BM25 first, with their bm25. The
 * query is planned so that its cost stays bounded on large stores (see
 * keyword_candidates there). The caller frees *out. */
struct memory_keyword_hit {
    int64_t id;
    double bm25;
};
int memory_keyword_search(struct memory *m, const char *text, const char *kind, long limit,
                          struct memory_keyword_hit **out, size_t *n);

/* The terms of text that memory_keyword_search() searches for each alone,
 * when its query is one for the items holding any of its words (those
 * held by few enough items and among its first 32, see query_words and
 * rare_threshold there), whatever the kind and limit: 1 with the terms
 * (sorted, distinct: free each and *out) of the searched words that make
 * exactly one token, so that every item holding one of them in any column
 * matches the search, and *whole true when no searched word makes several
 * tokens (a phrase), so that the search matches no other item; 0 when the
 * search narrows to items holding several words (every word is common),
 * or a negative TH_E*. */
int memory_keyword_terms(struct memory *m, const char *text, char ***out, size_t *n, bool *whole);

/* Common English words (lower case, NULL-terminated) that carry no topic:
 * left out of full-text queries and of similarity vectors. */
extern const char *const memory_stop_words[];

/* The 8-bit copy of an embedding that recall reads (memory_embeddings_q8):
 * each value divided by the largest magnitude, times 127, rounded. Cosine
 * does not depend on that scale, so none is stored. */
void memory_quantize(const float *v, int dim, signed char *out);

/* Cosine similarity of a float vector and an 8-bit one (0 when either is
 * all zeros). */
double memory_cosine_q8(const float *a, const signed char *b, int dim);

/* Removes the memory's cached row count (after inserts and deletes). */
void memory_forget_counts(struct memory *m);

#endif
