/*
 * memory_similar: offline text similarity over the associative store (see
 * memory.h), used for the novelty and independence checks of new ideas
 * when no embedding model is configured, and beside one when it is.
 *
 * Measure: TF-IDF cosine. Texts become bags of the very tokens the
 * full-text index stores (SQLite's own Porter tokenizer, reached through
 * the fts5_api, so "networks" and "network" meet), each weighted by
 * (1 + ln tf) * idf with the smoothed idf = ln((N + 1) / (df + 1)) + 1,
 * where N is the number of items and df a term's document frequency, read
 * from the index's fts5vocab table. Candidates come from the keyword
 * search of recall (BM25, planned to stay cheap on large stores) and are
 * then scored exactly; when the search would keep all its matches (a kind
 * of few items, a small bank of ideas) and which items it matches can be
 * told from their terms, every item of the kind is scored straight from
 * the table instead (see may_scan()): the same result without the ranked
 * query. Why not shingled
 * Jaccard: ideas are short and paraphrased, so word n-grams rarely repeat,
 * and Jaccard weighs "the" like "dropout"; the idf weights make two ideas
 * similar only when they share the words that are rare in this workspace.
 * Depends on memory_internal, store, alloc, buf, error and SQLite (FTS5).
 */
#include "memory_internal.h"

#include "alloc.h"
#include "error.h"
#include "store.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the index's tokenizer ---------------------------------------------- */

struct memory_tokenizer {
    fts5_tokenizer api;
    Fts5Tokenizer *tok;
    char **stops; /* the stop words as the tokenizer stems them, sorted */
    size_t nstops;
};

static int compare_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int collect_stop(void *ctx, int tflags, const char *token, int len, int start, int end)
{
    (void)tflags;
    (void)start;
    (void)end;
    struct memory_tokenizer *t = ctx;
    t->stops[t->nstops++] = xstrndup(token, (size_t)len);
    return SQLITE_ABORT; /* one token per word is enough */
}

static void stem_stop_words(struct memory_tokenizer *t)
{
    size_t n = 0;
    while (memory_stop_words[n])
        n++;
    t->stops = xcalloc(n ? n : 1, sizeof *t->stops);
    for (size_t i = 0; i < n; i++)
        t->api.xTokenize(t->tok, t, FTS5_TOKENIZE_DOCUMENT, memory_stop_words[i],
                         (int)strlen(memory_stop_words[i]), collect_stop);
    qsort(t->stops, t->nstops, sizeof *t->stops, compare_str);
}

static bool is_stop(const struct memory_tokenizer *t, const char *term)
{
    return bsearch(&term, t->stops, t->nstops, sizeof *t->stops, compare_str) != NULL;
}

int memory_fts5_api(struct memory *m, fts5_api **out)
{
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db, "SELECT fts5(?1)", -1, &st, NULL) != SQLITE_OK) {
        rc = error_set("this SQLite has no FTS5 (%s); thalamus needs SQLite built with FTS5",
                       sqlite3_errmsg(m->db));
        goto cleanup;
    }
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    if (!api)
        rc = error_set("cannot reach SQLite's FTS5 interface");
    *out = api;
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static int tokenizer_open(struct memory *m)
{
    if (m->tok)
        return 0;
    fts5_api *api = NULL;
    int rc = memory_fts5_api(m, &api);
    if (rc < 0)
        return rc;
    void *ud = NULL;
    struct memory_tokenizer *t = xcalloc(1, sizeof *t);
    const char *args[] = {"unicode61", "remove_diacritics", "2"};
    if (api->xFindTokenizer(api, "porter", &ud, &t->api) != SQLITE_OK ||
        t->api.xCreate(ud, args, 3, &t->tok) != SQLITE_OK) {
        free(t);
        rc = error_set("cannot create SQLite's porter tokenizer");
        goto cleanup;
    }
    stem_stop_words(t);
    m->tok = t;
cleanup:
    return rc;
}

void memory_tokenizer_free(struct memory_tokenizer *tok)
{
    if (!tok)
        return;
    tok->api.xDelete(tok->tok);
    for (size_t i = 0; i < tok->nstops; i++)
        free(tok->stops[i]);
    free(tok->stops);
    free(tok);
}

struct token_ctx {
    memory_token_cb cb;
    void *ud;
    int rc;
};

static int on_token(void *ctx, int tflags, const char *token, int len, int start, int end)
{
    (void)start;
    (void)end;
    struct token_ctx *c = ctx;
    if (tflags & FTS5_TOKEN_COLOCATED)
        return SQLITE_OK;
    c->rc = c->cb(token, len, c->ud);
    return c->rc ? SQLITE_ABORT : SQLITE_OK;
}

int memory_tokenize(struct memory *m, const char *text, size_t len, memory_token_cb cb, void *ud)
{
    if (tokenizer_open(m) < 0)
        return TH_ERR;
    if (len > MEMORY_MAX_TEXT)
        len = MEMORY_MAX_TEXT;
    struct token_ctx c = {cb, ud, 0};
    int rc =
        m->tok->api.xTokenize(m->tok->tok, &c, FTS5_TOKENIZE_DOCUMENT, text, (int)len, on_token);
    if (c.rc)
        return c.rc;
    if (rc != SQLITE_OK)
        return error_set("cannot tokenize text (SQLite error %d)", rc);
    return 0;
}

/* ---- term vectors ------------------------------------------------------- */

/* A text's distinct terms (stop words left out), sorted, with how often
 * each occurs: what tokenizing gives, before any weight. */
struct termcount {
    char *text;
    int tf;
};

struct tfvec {
    struct termcount *terms;
    size_t n, cap;
};

struct term {
    const char *text; /* owned by the cache's struct tfvec */
    double weight;    /* (1 + ln tf) * idf */
};

struct termvec {
    struct term *terms;
    size_t n;
    double norm;
};

/* The caches of struct memory (see memory_internal.h):
 * - document frequencies by term, which hold while the full-text index is
 *   unchanged. Every write that changes it on this connection adds to or
 *   removes a row of the index's document sizes, which the connection's
 *   update hook counts (memory.c: fts_epoch). An item added on this
 *   connection (memory_item_add) is counted into the cache's frequencies
 *   instead of emptying it, as the index counts it. A commit by another
 *   connection changes PRAGMA data_version, and a rollback, which takes
 *   changes back without any hook seeing rows go, marks the cache stale
 *   through the rollback hook (memory.c). Writes that leave the index alone
 *   (episodes, links, access statistics) keep it.
 * - term counts by text, which never go stale (a text always tokenizes
 *   alike): the novelty check of several ideas in a row tokenizes each
 *   idea of the bank once. Emptied whenever it holds TF_CACHE_TEXTS texts
 *   or TF_CACHE_BYTES bytes, at the start of a call. */
#define TF_CACHE_TEXTS 4096
#define TF_CACHE_BYTES ((size_t)8 << 20)

struct memory_sim_cache {
    /* document frequencies */
    char **keys;
    long *values;
    size_t cap, used;
    bool valid;
    uint64_t epoch;    /* fts_epoch when filled */
    long data_version; /* PRAGMA data_version when filled */
    /* term counts by text */
    char **texts;
    struct tfvec *counts;
    size_t tcap, tused, tbytes;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot of key in an open-addressing table of cap (a power of two)
 * keys: where it is, or the empty slot where it goes. */
static size_t slot_of(char *const *keys, size_t cap, const char *key)
{
    size_t j = hash_str(key) & (cap - 1);
    while (keys[j] && strcmp(keys[j], key))
        j = (j + 1) & (cap - 1);
    return j;
}

/* Doubles an open-addressing table of *cap keys (256 when empty) whose
 * values, size bytes each, are in the array values; returns the new array
 * of values (the keys move to *keys). */
static void *table_grow(char ***keys, void *values, size_t size, size_t *cap)
{
    size_t ncap = *cap ? *cap * 2 : 256;
    char **nkeys = xcalloc(ncap, sizeof *nkeys);
    char *nvalues = xcalloc(ncap, size);
    for (size_t i = 0; i < *cap; i++) {
        if (!(*keys)[i])
            continue;
        size_t j = slot_of(nkeys, ncap, (*keys)[i]);
        nkeys[j] = (*keys)[i];
        memcpy(nvalues + j * size, (char *)values + i * size, size);
    }
    free(*keys);
    free(values);
    *keys = nkeys;
    *cap = ncap;
    return nvalues;
}

static long *df_slot(struct memory_sim_cache *c, const char *term, bool *found)
{
    if (c->used * 2 >= c->cap)
        c->values = table_grow(&c->keys, c->values, sizeof *c->values, &c->cap);
    size_t j = slot_of(c->keys, c->cap, term);
    *found = c->keys[j] != NULL;
    if (!*found) {
        c->keys[j] = xstrdup(term);
        c->used++;
    }
    return &c->values[j];
}

static void df_clear(struct memory_sim_cache *c)
{
    for (size_t i = 0; i < c->cap; i++)
        free(c->keys[i]);
    free(c->keys);
    free(c->values);
    c->keys = NULL;
    c->values = NULL;
    c->cap = c->used = 0;
}

static void tfvec_free(struct tfvec *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->terms[i].text);
    free(v->terms);
    memset(v, 0, sizeof *v);
}

static void tf_clear(struct memory_sim_cache *c)
{
    for (size_t i = 0; i < c->tcap; i++)
        if (c->texts[i]) {
            free(c->texts[i]);
            tfvec_free(&c->counts[i]);
        }
    free(c->texts);
    free(c->counts);
    c->texts = NULL;
    c->counts = NULL;
    c->tcap = c->tused = c->tbytes = 0;
}

void memory_sim_cache_free(struct memory_sim_cache *c)
{
    if (!c)
        return;
    df_clear(c);
    tf_clear(c);
    free(c);
}

void memory_sim_cache_stale(struct memory_sim_cache *c)
{
    if (c)
        c->valid = false;
}

/* The cache of m, its frequencies emptied when the index changed since
 * they were read, and its term counts when they grew too many. */
static int cache_get(struct memory *m, struct memory_sim_cache **out)
{
    if (!m->sim)
        m->sim = xcalloc(1, sizeof *m->sim);
    struct memory_sim_cache *c = m->sim;
    sqlite3_stmt *st = memory_stmt(m, ST_DATA_VERSION);
    if (!st)
        return TH_ERR;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return memory_db_error(m, "read the version of");
    }
    long version = (long)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (!c->valid || c->epoch != m->fts_epoch || c->data_version != version) {
        df_clear(c);
        /* this connection keeps its count of items up to date itself */
        if (c->data_version != version)
            m->items_total = -1;
        c->valid = true;
        c->epoch = m->fts_epoch;
        c->data_version = version;
    }
    if (c->tused >= TF_CACHE_TEXTS || c->tbytes >= TF_CACHE_BYTES)
        tf_clear(c);
    *out = c;
    return 0;
}

static int items_total(struct memory *m, long *out)
{
    if (m->items_total < 0) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(m->db, "SELECT count(*) FROM memory_items", -1, &st, NULL) !=
                SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            sqlite3_finalize(st);
            return memory_db_error(m, "count the items of");
        }
        m->items_total = (long)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    *out = m->items_total;
    return 0;
}

static int doc_frequency(struct memory *m, struct memory_sim_cache *cache, const char *term,
                         long *out)
{
    bool found;
    long *slot = df_slot(cache, term, &found);
    if (found) {
        *out = *slot;
        return 0;
    }
    sqlite3_stmt *st = memory_stmt(m, ST_VOCAB_DOC);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, term, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    *slot = step == SQLITE_ROW ? (long)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return memory_db_error(m, "read the index of");
    *out = *slot;
    return 0;
}

static int collect_token(const char *token, int len, void *ud)
{
    struct tfvec *v = ud;
    if (len <= 0 || len > 200)
        return 0;
    if (v->n == v->cap)
        v->terms = xreallocarray(v->terms, v->cap = v->cap ? v->cap * 2 : 64, sizeof *v->terms);
    v->terms[v->n++] = (struct termcount){xstrndup(token, (size_t)len), 1};
    return 0;
}

static int compare_counts(const void *a, const void *b)
{
    return strcmp(((const struct termcount *)a)->text, ((const struct termcount *)b)->text);
}

/* The sorted distinct terms of text but the stop words, with their counts. */
static int tfvec_build(struct memory *m, const char *text, struct tfvec *v)
{
    memset(v, 0, sizeof *v);
    int rc = memory_tokenize(m, text, strlen(text), collect_token, v);
    if (rc < 0) {
        tfvec_free(v);
        return rc;
    }
    if (v->n)
        qsort(v->terms, v->n, sizeof *v->terms, compare_counts);
    size_t out = 0;
    for (size_t i = 0; i < v->n; i++) { /* merge runs of equal terms, drop stop words */
        if (is_stop(m->tok, v->terms[i].text)) {
            free(v->terms[i].text);
        } else if (out && !strcmp(v->terms[out - 1].text, v->terms[i].text)) {
            v->terms[out - 1].tf++;
            free(v->terms[i].text);
        } else {
            v->terms[out++] = v->terms[i];
        }
    }
    v->n = out;
    return 0;
}

/* The term counts of text, from the cache or tokenized into it. */
static int tf_of(struct memory *m, struct memory_sim_cache *c, const char *text,
                 const struct tfvec **out)
{
    if (c->tused * 2 >= c->tcap)
        c->counts = table_grow(&c->texts, c->counts, sizeof *c->counts, &c->tcap);
    size_t j = slot_of(c->texts, c->tcap, text);
    if (!c->texts[j]) {
        struct tfvec v;
        int rc = tfvec_build(m, text, &v);
        if (rc < 0)
            return rc;
        c->texts[j] = xstrdup(text);
        c->counts[j] = v;
        c->tused++;
        c->tbytes += strlen(text) + 1 + v.n * (sizeof *v.terms + 16);
    }
    *out = &c->counts[j];
    return 0;
}

static void termvec_free(struct termvec *v)
{
    free(v->terms);
    memset(v, 0, sizeof *v);
}

/* The TF-IDF vector of the term counts tf, (1 + ln tf) * idf per distinct
 * term, and its Euclidean norm. Its terms belong to the cache: use it
 * before the next cache_get(). */
static int termvec_weigh(struct memory *m, struct memory_sim_cache *cache, const struct tfvec *tf,
                         struct termvec *v)
{
    memset(v, 0, sizeof *v);
    long total = 0;
    int rc = items_total(m, &total);
    if (rc < 0)
        return rc;
    if (tf->n == 0)
        return 0;
    v->terms = xcalloc(tf->n, sizeof *v->terms);
    double sq = 0;
    for (size_t i = 0; i < tf->n; i++) {
        long df = 0;
        if ((rc = doc_frequency(m, cache, tf->terms[i].text, &df)) < 0) {
            termvec_free(v);
            return rc;
        }
        if (df > total)
            df = total;
        double idf = log((double)(total + 1) / (double)(df + 1)) + 1.0;
        v->terms[i] = (struct term){tf->terms[i].text, (1.0 + log(tf->terms[i].tf)) * idf};
        sq += v->terms[i].weight * v->terms[i].weight;
    }
    v->n = tf->n;
    v->norm = sqrt(sq);
    return 0;
}

/* The TF-IDF vector of text (see termvec_weigh()). */
static int termvec_build(struct memory *m, struct memory_sim_cache *cache, const char *text,
                         struct termvec *v)
{
    memset(v, 0, sizeof *v);
    const struct tfvec *tf;
    int rc = tf_of(m, cache, text, &tf);
    return rc < 0 ? rc : termvec_weigh(m, cache, tf, v);
}

struct one_token {
    char *term; /* the first token */
    int count;
};

static int take_token(const char *token, int len, void *ud)
{
    struct one_token *t = ud;
    if (t->count++ == 0)
        t->term = xstrndup(token, (size_t)len);
    return t->count > 1; /* a second token: stop */
}

int memory_sim_cache_sync(struct memory *m)
{
    struct memory_sim_cache *c;
    return cache_get(m, &c);
}

int memory_sim_df_find(struct memory *m, const char *word, size_t n, char **term, long *df)
{
    *term = NULL;
    struct one_token t = {0};
    int rc = memory_tokenize(m, word, n, take_token, &t);
    if (rc < 0 && t.count < 2) {
        free(t.term);
        return rc;
    }
    if (t.count != 1) { /* no token, or a phrase */
        free(t.term);
        return 0;
    }
    *term = t.term;
    struct memory_sim_cache *c = m->sim;
    if (!c || !c->valid || !c->cap)
        return 0;
    size_t j = slot_of(c->keys, c->cap, t.term);
    if (!c->keys[j])
        return 0;
    *df = c->values[j];
    return 1;
}

void memory_sim_df_store(struct memory *m, const char *term, long df)
{
    struct memory_sim_cache *c = m->sim;
    bool found;
    if (c && c->valid)
        *df_slot(c, term, &found) = df;
}

/* Counts the item just added (its title, text and tags, as the index
 * holds them) into the cached frequencies, see above: only when they were
 * up to date before the insert and the insert is the one change to the
 * index since. The frequencies of stop words are never looked up. */
void memory_sim_item_added(struct memory *m, uint64_t epoch_before, const char *const cols[3])
{
    struct memory_sim_cache *c = m->sim;
    if (!c || !c->valid || c->epoch != epoch_before || m->fts_epoch != epoch_before + 1)
        return;
    struct tfvec v[3];
    int built = 0;
    while (built < 3 && c->used) {
        if (tfvec_build(m, cols[built] ? cols[built] : "", &v[built]) < 0) {
            error_clear();
            break;
        }
        built++;
    }
    if (built == 3) { /* each distinct term of the item, in any column, once */
        for (int i = 0; i < 3; i++)
            for (size_t k = 0; k < v[i].n; k++) {
                bool earlier = false;
                for (int e = 0; e < i && !earlier; e++)
                    earlier = v[e].n && bsearch(&v[i].terms[k], v[e].terms, v[e].n,
                                                sizeof *v[e].terms, compare_counts) != NULL;
                size_t j = slot_of(c->keys, c->cap, v[i].terms[k].text);
                if (!earlier && c->keys[j])
                    c->values[j]++;
            }
    }
    if (built == 3 || !c->used)
        c->epoch = m->fts_epoch;
    for (int i = 0; i < built; i++)
        tfvec_free(&v[i]);
}

static double termvec_cosine(const struct termvec *a, const struct termvec *b)
{
    if (a->norm == 0 || b->norm == 0)
        return 0;
    double dot = 0;
    size_t i = 0, j = 0;
    while (i < a->n && j < b->n) {
        int c = strcmp(a->terms[i].text, b->terms[j].text);
        if (c == 0)
            dot += a->terms[i++].weight * b->terms[j++].weight;
        else if (c < 0)
            i++;
        else
            j++;
    }
    double cos = dot / (a->norm * b->norm);
    return cos > 1 ? 1 : cos;
}

int memory_text_similarity(struct memory *m, const char *a, const char *b, double *out)
{
    struct memory_sim_cache *cache;
    struct termvec va, vb;
    int rc = cache_get(m, &cache);
    if (rc == 0 && (rc = termvec_build(m, cache, a, &va)) == 0) {
        if ((rc = termvec_build(m, cache, b, &vb)) == 0) {
            *out = termvec_cosine(&va, &vb);
            termvec_free(&vb);
        }
        termvec_free(&va);
    }
    return rc;
}

/* ---- nearest items ------------------------------------------------------ */

static int compare_matches(const void *a, const void *b)
{
    const struct memory_match *x = a, *y = b;
    if (x->similarity != y->similarity)
        return x->similarity > y->similarity ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* How many items of kind (NULL: any) the store holds, counted up to
 * limit + 1 only. */
static int count_items(struct memory *m, const char *kind, long limit, long *out)
{
    if (!kind)
        return items_total(m, out);
    sqlite3_stmt *st = store_stmt(
        m->store, "SELECT count(*) FROM (SELECT 1 FROM memory_items WHERE kind = ?1 LIMIT ?2)");
    if (!st)
        return memory_db_error(m, "count the items of");
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit + 1);
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        *out = (long)sqlite3_column_int64(st, 0);
    else
        rc = memory_db_error(m, "count the items of");
    sqlite3_reset(st);
    return rc;
}

/* Whether each term of v is one of the sorted terms. */
static bool terms_cover(char *const *terms, size_t n, const struct termvec *v)
{
    size_t j = 0;
    for (size_t i = 0; i < v->n; i++) {
        while (j < n && strcmp(terms[j], v->terms[i].text) < 0)
            j++;
        if (j == n || strcmp(terms[j], v->terms[i].text))
            return false;
    }
    return true;
}

/* Whether the item with the term counts tf shares a term with v. */
static bool shares_term(const struct termvec *v, const struct tfvec *tf)
{
    size_t i = 0, j = 0;
    while (i < v->n && j < tf->n) {
        int c = strcmp(v->terms[i].text, tf->terms[j].text);
        if (c == 0)
            return true;
        if (c < 0)
            i++;
        else
            j++;
    }
    return false;
}

/* Whether the term counts tf hold one of the sorted terms. */
static bool holds_term(char *const *terms, size_t n, const struct tfvec *tf)
{
    size_t i = 0, j = 0;
    while (i < n && j < tf->n) {
        int c = strcmp(terms[i], tf->terms[j].text);
        if (c == 0)
            return true;
        if (c < 0)
            i++;
        else
            j++;
    }
    return false;
}

/* How memory_similar() takes its candidates, see may_scan(). */
struct scan_plan {
    bool scan; /* every item of the kind rather than the keyword search's */
    /* NULL: each item holding a term of qv is a candidate; else only those
     * that hold one of these terms too */
    char **terms;
    size_t nterms;
};

static void scan_plan_free(struct scan_plan *p)
{
    for (size_t i = 0; i < p->nterms; i++)
        free(p->terms[i]);
    free(p->terms);
    memset(p, 0, sizeof *p);
}

/* Whether memory_similar() may score every item of kind instead of the
 * keyword search's candidates, with the same result. With a threshold
 * above 0 only an item that holds a term of the text's vector qv (in its
 * title or text) can reach it, and it is then one of the search's
 * candidates when (1) the search keeps all its matches: the kind has at
 * most limit items, (2) the index holds the item: no bulk load of this
 * connection is open, whose items are indexed only at its commit, and (3)
 * the search matches the item. The search looks for each of its words
 * alone; when each term of qv is one of those words, (3) holds for every
 * such item (the plan has no terms). When not (a word left out as common,
 * or past the search's first 32), the plan keeps the searched terms, and
 * the scan checks (3) itself: the item holds one of them in its title,
 * text or tags. That needs every searched word to be one term (not a
 * phrase) that the term counts keep (not a stop word). Fills qv when the
 * plan scans. */
static int may_scan(struct memory *m, struct memory_sim_cache *cache, const char *text,
                    const char *kind, double threshold, long limit, struct termvec *qv,
                    struct scan_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    if (!(threshold > 0) || m->bulk || m->similar_no_scan)
        return 0;
    long count = 0;
    int rc = count_items(m, kind, limit, &count);
    if (rc < 0 || count > limit)
        return rc;
    bool whole;
    if ((rc = memory_keyword_terms(m, text, &plan->terms, &plan->nterms, &whole)) != 1 ||
        (rc = termvec_build(m, cache, text, qv)) < 0) {
        scan_plan_free(plan);
        return rc < 0 ? rc : 0;
    }
    if (terms_cover(plan->terms, plan->nterms, qv)) {
        scan_plan_free(plan);
        plan->scan = true;
        return 0;
    }
    plan->scan = whole;
    for (size_t i = 0; i < plan->nterms && plan->scan; i++)
        plan->scan = strlen(plan->terms[i]) <= 200 && !is_stop(m->tok, plan->terms[i]);
    if (!plan->scan) {
        scan_plan_free(plan);
        termvec_free(qv);
    } else if (!plan->terms) { /* no searched term: an empty list, not "every item" */
        plan->terms = xcalloc(1, sizeof *plan->terms);
    }
    return 0;
}

static void add_match(struct memory_match **list, size_t *len, size_t *cap, int64_t id, double sim,
                      sqlite3_stmt *st, int kind_col, const char *title, const char *body)
{
    if (*len == *cap)
        *list = xreallocarray(*list, *cap = *cap ? *cap * 2 : 16, sizeof **list);
    if (!title || !title[0])
        title = body;
    (*list)[(*len)++] = (struct memory_match){id, sim, memory_column_dup(st, kind_col),
                                              xstrdup(title ? title : "")};
}

/* Scores every item of kind (NULL: any) against qv, see may_scan():
 * 0, or 1 when an item is too long for its term counts to be those of the
 * index (the text is cut at MEMORY_MAX_TEXT), or a negative TH_E*. */
static int scan_items(struct memory *m, struct memory_sim_cache *cache, const struct termvec *qv,
                      const struct scan_plan *plan, const char *kind, double threshold,
                      struct memory_match **list, size_t *len)
{
    sqlite3_stmt *st =
        kind ? store_stmt(m->store,
                          "SELECT id, kind, title, text, tags FROM memory_items WHERE kind = ?1")
             : store_stmt(m->store, "SELECT id, kind, title, text, tags FROM memory_items");
    if (!st)
        return memory_db_error(m, "search");
    if (kind)
        sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    size_t cap = 0;
    char *doc = NULL;
    size_t doccap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *title = (const char *)sqlite3_column_text(st, 2);
        const char *body = (const char *)sqlite3_column_text(st, 3);
        const char *tags = (const char *)sqlite3_column_text(st, 4);
        size_t tn = title ? strlen(title) : 0, bn = body ? strlen(body) : 0;
        if (tn + 1 + bn > MEMORY_MAX_TEXT || (tags && strlen(tags) > MEMORY_MAX_TEXT)) {
            rc = 1;
            break;
        }
        if (tn + bn + 2 > doccap)
            doc = xrealloc(doc, doccap = tn + bn + 2);
        memcpy(doc, title ? title : "", tn); /* as the keyword candidates: title, line, text */
        doc[tn] = '\n';
        memcpy(doc + tn + 1, body ? body : "", bn);
        doc[tn + 1 + bn] = '\0';
        const struct tfvec *tf, *tagtf;
        struct termvec dv;
        if ((rc = tf_of(m, cache, doc, &tf)) < 0)
            break;
        if (!shares_term(qv, tf)) /* similarity 0 */
            continue;
        if (plan->terms && !holds_term(plan->terms, plan->nterms, tf)) { /* a match by its tags? */
            if ((rc = tf_of(m, cache, tags ? tags : "", &tagtf)) < 0)
                break;
            if (!holds_term(plan->terms, plan->nterms, tagtf))
                continue;                             /* not a candidate of the search */
            if ((rc = tf_of(m, cache, doc, &tf)) < 0) /* again: the table may have grown */
                break;
        }
        if ((rc = termvec_weigh(m, cache, tf, &dv)) < 0)
            break;
        double sim = termvec_cosine(qv, &dv);
        termvec_free(&dv);
        if (sim < threshold)
            continue;
        add_match(list, len, &cap, sqlite3_column_int64(st, 0), sim, st, 1, title, body);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = memory_db_error(m, "search");
    sqlite3_reset(st);
    free(doc);
    if (rc == 0)
        m->similar_scans++;
    return rc;
}

int memory_similar(struct memory *m, const char *text, const char *kind, double threshold,
                   size_t max, struct memory_match **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (kind) {
        int rc = memory_check_name(memory_item_kinds, "item kind", kind);
        if (rc < 0)
            return rc;
    }
    struct buf clean;
    int rc = memory_clean_text(&clean, text, MEMORY_MAX_TEXT, "text", NULL);
    if (rc < 0)
        return rc;
    struct memory_sim_cache *cache = NULL;
    struct termvec qv = {0};
    struct memory_match *list = NULL;
    struct memory_keyword_hit *cands = NULL;
    size_t len = 0, cap = 0, ncands = 0;
    sqlite3_stmt *st = NULL;
    struct scan_plan plan = {0};
    if (max == 0)
        goto cleanup;
    /* candidates: the keyword search of recall, bounded on large stores */
    long limit = max * 4 > 100 ? (long)max * 4 : 100;
    if ((rc = cache_get(m, &cache)) < 0 ||
        (rc = may_scan(m, cache, clean.data, kind, threshold, limit, &qv, &plan)) < 0)
        goto cleanup;
    if (plan.scan) { /* or every item of the kind, when that gives the same */
        if (qv.n && (rc = scan_items(m, cache, &qv, &plan, kind, threshold, &list, &len)) < 0)
            goto cleanup;
        if (rc == 0)
            goto sort;
        memory_matches_free(list, len); /* an item too long to judge: the search after all */
        list = NULL;
        len = 0;
        rc = 0;
        termvec_free(&qv);
    }
    if ((rc = memory_keyword_search(m, clean.data, kind, limit, &cands, &ncands)) < 0 ||
        ncands == 0)
        goto cleanup;
    if ((rc = cache_get(m, &cache)) < 0 || (rc = termvec_build(m, cache, clean.data, &qv)) < 0)
        goto cleanup;
    if (sqlite3_prepare_v2(m->db, "SELECT kind, title, text FROM memory_items WHERE id = ?1", -1,
                           &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "search");
        goto cleanup;
    }
    for (size_t c = 0; c < ncands; c++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, cands[c].id);
        int step = sqlite3_step(st);
        if (step == SQLITE_DONE)
            continue;
        if (step != SQLITE_ROW) {
            rc = memory_db_error(m, "search");
            goto cleanup;
        }
        const char *title = (const char *)sqlite3_column_text(st, 1);
        const char *body = (const char *)sqlite3_column_text(st, 2);
        char *doc = xasprintf("%s\n%s", title ? title : "", body ? body : "");
        struct termvec dv;
        rc = termvec_build(m, cache, doc, &dv);
        free(doc);
        if (rc < 0)
            goto cleanup;
        double sim = termvec_cosine(&qv, &dv);
        termvec_free(&dv);
        if (sim < threshold)
            continue;
        add_match(&list, &len, &cap, cands[c].id, sim, st, 0, title, body);
    }
sort:
    if (len)
        qsort(list, len, sizeof *list, compare_matches);
    while (len > max) {
        len--;
        free(list[len].kind);
        free(list[len].title);
    }
cleanup:
    sqlite3_finalize(st);
    free(cands);
    scan_plan_free(&plan);
    termvec_free(&qv);
    buf_free(&clean);
    if (rc < 0) {
        memory_matches_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int memory_similar_vector(struct memory *m, const float *vec, int dim, const char *model,
                          const char *kind, double threshold, size_t max, struct memory_match **out,
                          size_t *n)
{
    *out = NULL;
    *n = 0;
    if (kind) {
        int rc = memory_check_name(memory_item_kinds, "item kind", kind);
        if (rc < 0)
            return rc;
    }
    sqlite3_stmt *st = NULL;
    struct memory_match *list = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT i.id, i.kind, i.title, i.text, e.vector FROM memory_embeddings e"
                           " JOIN memory_items i ON i.id = e.item_id"
                           " WHERE e.model = ?1 AND e.dim = ?2 AND (?3 IS NULL OR i.kind = ?3)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read embeddings from");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, dim);
    memory_bind_text(st, 3, kind);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const float *v = sqlite3_column_blob(st, 4);
        if (!v || sqlite3_column_bytes(st, 4) != dim * (int)sizeof(float))
            continue;
        double sim = memory_cosine(vec, v, dim);
        if (sim < threshold)
            continue;
        const char *title = (const char *)sqlite3_column_text(st, 2);
        if (!title || !title[0])
            title = (const char *)sqlite3_column_text(st, 3);
        if (len == cap)
            list = xreallocarray(list, cap = cap ? cap * 2 : 16, sizeof *list);
        list[len++] = (struct memory_match){sqlite3_column_int64(st, 0), sim,
                                            memory_column_dup(st, 1), xstrdup(title ? title : "")};
    }
    if (step != SQLITE_DONE) {
        rc = memory_db_error(m, "read embeddings from");
        goto cleanup;
    }
    if (len)
        qsort(list, len, sizeof *list, compare_matches);
    while (len > max) {
        len--;
        free(list[len].kind);
        free(list[len].title);
    }
cleanup:
    sqlite3_finalize(st);
    if (rc < 0) {
        memory_matches_free(list, len);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

void memory_matches_free(struct memory_match *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].kind);
        free(list[i].title);
    }
    free(list);
}
