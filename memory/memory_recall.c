/*
 * memory_recall: ranking items for a query, spreading activation along
 * links, and the Hebbian update of co_recalled links (see memory.h; every
 * formula is written out in docs/memory.md).
 *
 * A recall runs in five steps, all synchronous and bounded: (1) keyword
 * candidates from the FTS5 index by BM25, at most memory.candidates of
 * them, from a query planned so that words held by many items do not make
 * it scan (and score) a large part of the store; (2) with a query vector, cosine similarity for
 * those candidates and, while the store holds at most memory.embedding_scan_max embeddings of the
 * model, for every embedded item, fused with the keyword ranking by reciprocal rank; (3) a base
 * score per candidate from relevance, recency and importance; (4) activation spread from the best
 * seeds, one or two hops along links, each hop multiplying by activation_decay and the link's
 * weight and dividing by the sending item's fan-out; (5) the top k by
 * score, whose access statistics are refreshed. Depends on
 * memory_internal, alloc, error, log and SQLite.
 */
#include "memory_internal.h"

#include "alloc.h"
#include "error.h"
#include "log.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RRF_K           60.0 /* reciprocal rank fusion: sum of 1 / (60 + rank) */
#define MAX_FANOUT      256  /* links read per item when spreading activation */
#define MIN_ACTIVATION  0.01 /* an item reached only through links needs this much */
#define MAX_QUERY_TERMS 32
#define MAX_TERM_BYTES  100
#define COMMON_DF       1000 /* a word in more items than this is "common" */
#define MAX_PAIR_WORDS  6
#define POSTING_BUDGET  1500   /* items read for the rare words of one query */
#define COMMON_WINDOW   100000 /* newest items searched when every word is common */

/* ---- the full-text query ------------------------------------------------- */

static bool is_stop_word(const char *w, size_t n)
{
    if (n > 6)
        return false;
    char lower[8];
    for (size_t i = 0; i < n; i++)
        lower[i] = (char)tolower((unsigned char)w[i]);
    lower[n] = '\0';
    for (const char *const *s = memory_stop_words; *s; s++)
        if (!strcmp(*s, lower))
            return true;
    return false;
}

static bool word_byte(unsigned char c)
{
    return c >= 0x80 || isalnum(c);
}

static bool same_word(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    return true;
}

struct qword {
    const char *p;
    size_t n;
    long df; /* items holding the word, -1: not looked up */
};

/* The distinct words of text, stop words left out unless nothing else
 * remains; returns how many (at most MAX_QUERY_TERMS). */
static size_t query_words(const char *text, struct qword *words)
{
    bool stop[MAX_QUERY_TERMS];
    size_t nwords = 0, nstop = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (*s && nwords < MAX_QUERY_TERMS) {
        while (*s && !word_byte(*s))
            s++;
        const unsigned char *start = s;
        while (*s && word_byte(*s))
            s++;
        size_t n = (size_t)(s - start);
        if (n == 0)
            break;
        if (n > MAX_TERM_BYTES) { /* cut at a UTF-8 boundary */
            n = MAX_TERM_BYTES;
            while (n > 0 && (start[n] & 0xc0) == 0x80)
                n--;
        }
        bool dup = false;
        for (size_t i = 0; i < nwords && !dup; i++)
            dup = same_word(words[i].p, words[i].n, (const char *)start, n);
        if (dup)
            continue;
        stop[nwords] = is_stop_word((const char *)start, n);
        nstop += stop[nwords];
        words[nwords++] = (struct qword){(const char *)start, n, -1};
    }
    if (nstop == nwords) /* only stop words: search for them */
        return nwords;
    size_t out = 0;
    for (size_t i = 0; i < nwords; i++)
        if (!stop[i])
            words[out++] = words[i];
    return out;
}

/* The words (those with df <= max_df, or all when max_df < 0) as quoted
 * FTS5 strings joined by joiner. */
static char *join_words(const struct qword *words, size_t n, const char *joiner, long max_df)
{
    struct buf q;
    buf_init(&q, 0);
    for (size_t i = 0; i < n; i++) {
        if (max_df >= 0 && words[i].df > max_df)
            continue;
        /* the words hold no '"' (not a word byte), so quoting is enough */
        buf_printf(&q, "%s\"%.*s\"", q.len ? joiner : "", (int)words[i].n, words[i].p);
    }
    return buf_detach(&q, NULL);
}

char *memory_fts_query(const char *text)
{
    struct qword words[MAX_QUERY_TERMS];
    size_t n = query_words(text, words);
    return join_words(words, n, " OR ", -1);
}

/* ---- candidates ---------------------------------------------------------- */

struct cand {
    int64_t id;
    double bm25;
    int kw_rank, vec_rank;
    double cosine;
    double relevance, recency, importance, base;
    double activation, via_best;
    int64_t via_id;
    char via_type[16];
    int via_hops;
    bool scored;   /* kind, importance and recency read */
    bool excluded; /* wrong kind */
};

/* Candidates by id: an array and an open-addressing index into it. */
struct cand_set {
    struct cand *v;
    size_t n, cap;
    size_t *slots; /* index + 1, 0: empty */
    size_t nslots;
};

static size_t slot_of(int64_t id, size_t nslots)
{
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 17) & (nslots - 1);
}

static void cand_rehash(struct cand_set *s)
{
    free(s->slots);
    s->nslots = s->nslots ? s->nslots * 2 : 256;
    s->slots = xcalloc(s->nslots, sizeof *s->slots);
    for (size_t i = 0; i < s->n; i++) {
        size_t j = slot_of(s->v[i].id, s->nslots);
        while (s->slots[j])
            j = (j + 1) & (s->nslots - 1);
        s->slots[j] = i + 1;
    }
}

static struct cand *cand_find(struct cand_set *s, int64_t id, bool create)
{
    if (s->nslots) {
        size_t j = slot_of(id, s->nslots);
        while (s->slots[j]) {
            if (s->v[s->slots[j] - 1].id == id)
                return &s->v[s->slots[j] - 1];
            j = (j + 1) & (s->nslots - 1);
        }
    }
    if (!create)
        return NULL;
    if (s->n == s->cap)
        s->v = xreallocarray(s->v, s->cap = s->cap ? s->cap * 2 : 64, sizeof *s->v);
    struct cand *c = &s->v[s->n++];
    memset(c, 0, sizeof *c);
    c->id = id;
    c->bm25 = NAN;
    c->cosine = NAN;
    if ((s->n + 1) * 2 > s->nslots) {
        cand_rehash(s);
    } else {
        size_t j = slot_of(id, s->nslots);
        while (s->slots[j])
            j = (j + 1) & (s->nslots - 1);
        s->slots[j] = s->n;
    }
    return c;
}

static void cand_set_free(struct cand_set *s)
{
    free(s->v);
    free(s->slots);
}

/* ---- ranking ----------------------------------------------------------------- */

#define BM25_K1 1.2
#define BM25_B  0.75

/* Weights of the index's columns: title, text, tags. */
static const double column_weight[] = {2.0, 1.0, 0.5};

/* thalamus_bm25(memory_fts, DF): Okapi BM25 as FTS5's own bm25() computes
 * it (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)) but at least
 * 1e-6, an instance in column c counting column_weight[c], lengths in
 * tokens), negated so that lower is better, except that each phrase's n
 * comes in the blob DF (one double per phrase of the query) instead of
 * being counted by FTS5, which reads every item holding each phrase before
 * it returns the first row. The planner has these counts already (capped,
 * see capped_df()); N is the index's row count. */
static void rank_function(const Fts5ExtensionApi *api, Fts5Context *fts, sqlite3_context *ctx,
                          int nval, sqlite3_value **vals)
{
    int nphrase = api->xPhraseCount(fts);
    const double *df = nval == 1 ? sqlite3_value_blob(vals[0]) : NULL;
    if (!df || nphrase <= 0 || nphrase > 1024 ||
        sqlite3_value_bytes(vals[0]) != nphrase * (int)sizeof(double)) {
        sqlite3_result_error(ctx, "thalamus_bm25: the df blob does not match the phrases", -1);
        return;
    }
    sqlite3_int64 nrow = 0, ntotal = 0;
    int ntok = 0, ninst = 0;
    if (api->xRowCount(fts, &nrow) != SQLITE_OK ||
        api->xColumnTotalSize(fts, -1, &ntotal) != SQLITE_OK ||
        api->xColumnSize(fts, -1, &ntok) != SQLITE_OK ||
        api->xInstCount(fts, &ninst) != SQLITE_OK) {
        sqlite3_result_error(ctx, "thalamus_bm25: cannot read the index", -1);
        return;
    }
    double freq_small[64];
    double *freq = nphrase <= 64 ? freq_small : xcalloc((size_t)nphrase, sizeof *freq);
    memset(freq, 0, (size_t)nphrase * sizeof *freq);
    for (int i = 0; i < ninst; i++) {
        int phrase, col, off;
        if (api->xInst(fts, i, &phrase, &col, &off) == SQLITE_OK && phrase >= 0 &&
            phrase < nphrase && col >= 0 && col < 3)
            freq[phrase] += column_weight[col];
    }
    double avgdl = nrow > 0 && ntotal > 0 ? (double)ntotal / (double)nrow : 1.0;
    double norm = BM25_K1 * (1 - BM25_B + BM25_B * (double)ntok / avgdl);
    double score = 0;
    for (int i = 0; i < nphrase; i++) {
        double idf = log(((double)nrow - df[i] + 0.5) / (df[i] + 0.5));
        if (!(idf > 1e-6))
            idf = 1e-6;
        score += idf * freq[i] * (BM25_K1 + 1) / (freq[i] + norm);
    }
    if (freq != freq_small)
        free(freq);
    sqlite3_result_double(ctx, -score);
}

void memory_set_search_limits(struct memory *m, long posting_budget, long common_window)
{
    m->posting_budget = posting_budget > 0 ? posting_budget : MEMORY_POSTING_BUDGET;
    m->common_window = common_window > 0 ? common_window : MEMORY_COMMON_WINDOW;
}

int memory_register_rank(struct memory *m)
{
    fts5_api *api = NULL;
    int rc = memory_fts5_api(m, &api);
    if (rc < 0)
        return rc;
    if (api->xCreateFunction(api, "thalamus_bm25", NULL, rank_function, NULL) != SQLITE_OK)
        return error_set("cannot register the ranking function with SQLite's FTS5");
    return 0;
}

struct hit_list {
    struct memory_keyword_hit *v;
    size_t n, cap;
};

/* Appends the matches of one FTS5 query (at most limit, best first);
 * df holds the number of items holding each phrase of the query, in order. *count gets how
 * many matches there were. */
static int run_match(struct memory *m, const char *kind, long limit, const char *query,
                     const double *df, size_t ndf, int64_t above, struct hit_list *out, long *count)
{
    sqlite3_stmt *st = memory_stmt(m, kind ? ST_FTS_CANDIDATES_KIND : ST_FTS_CANDIDATES);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, query, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit);
    sqlite3_bind_blob(st, 3, df, (int)(ndf * sizeof *df), SQLITE_STATIC);
    if (kind)
        sqlite3_bind_text(st, 4, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, above);
    int step;
    *count = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == out->cap)
            out->v = xreallocarray(out->v, out->cap = out->cap ? out->cap * 2 : 64, sizeof *out->v);
        out->v[out->n++] =
            (struct memory_keyword_hit){sqlite3_column_int64(st, 0), sqlite3_column_double(st, 1)};
        ++*count;
    }
    int rc = step == SQLITE_DONE ? 0 : memory_db_error(m, "search");
    sqlite3_reset(st);
    return rc;
}

/* How many items hold word, counted up to COMMON_DF + 1 only (a capped
 * count costs at most that many index entries; fts5vocab would read the
 * word's whole posting list). A count under the cap is exact: it goes to
 * the document frequencies that memory_similar.c keeps while the index is
 * unchanged, and is taken from there next time. With term_out, *term_out
 * gets the word's one token (free it), NULL when it makes none or several. */
static int capped_df(struct memory *m, const struct qword *w, long *out, char **term_out)
{
    char *term = NULL, *q = NULL;
    sqlite3_stmt *st;
    long df;
    int rc = memory_sim_df_find(m, w->p, w->n, &term, &df);
    if (rc < 0)
        goto cleanup;
    if (rc == 1) {
        *out = df <= COMMON_DF ? df : COMMON_DF + 1;
        rc = 0;
        goto cleanup;
    }
    rc = 0;
    q = xasprintf("\"%.*s\"", (int)w->n, w->p);
    if (!(st = memory_stmt(m, ST_FTS_COUNT_CAPPED))) {
        rc = TH_ERR;
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, q, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, COMMON_DF + 1);
    if (sqlite3_step(st) == SQLITE_ROW)
        *out = (long)sqlite3_column_int64(st, 0);
    else
        rc = memory_db_error(m, "search");
    sqlite3_reset(st);
    if (rc == 0 && term && *out <= COMMON_DF)
        memory_sim_df_store(m, term, *out);
cleanup:
    if (rc == 0 && term_out) {
        *term_out = term;
        term = NULL;
    }
    free(q);
    free(term);
    return rc;
}

/* "(a AND b) OR (a AND c) OR (b AND c)": items holding two of the words,
 * with df set for each phrase in that order. Each word appears in the
 * same number of pairs, so BM25 ranks as for the words once. */
static char *pairs_query(const struct qword *words, size_t n, const double *word_df, double *df,
                         size_t *ndf)
{
    struct buf q;
    buf_init(&q, 0);
    *ndf = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            buf_printf(&q, "%s(\"%.*s\" AND \"%.*s\")", q.len ? " OR " : "", (int)words[i].n,
                       words[i].p, (int)words[j].n, words[j].p);
            df[(*ndf)++] = word_df[i];
            df[(*ndf)++] = word_df[j];
        }
    return buf_detach(&q, NULL);
}

/* The counts of the words kept by max_df (all when max_df < 0), in order. */
static size_t pick_df(const struct qword *words, size_t n, const double *word_df, long max_df,
                      double *df)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (max_df < 0 || words[i].df <= max_df)
            df[k++] = word_df[i];
    return k;
}

/* The largest document frequency a word may have to be searched for when
 * the query has rare words (at most COMMON_DF items): the rare words are
 * taken rarest first while the items holding them add up to at most
 * budget (words of equal frequency together; the rarest always). */
static long rare_threshold(const struct qword *words, size_t n, long budget)
{
    long threshold = -1, sum = 0;
    for (;;) {
        long next = -1; /* the smallest rare df above threshold */
        for (size_t i = 0; i < n; i++)
            if (words[i].df <= COMMON_DF && words[i].df > threshold &&
                (next < 0 || words[i].df < next))
                next = words[i].df;
        if (next < 0)
            return threshold;
        long add = 0;
        for (size_t i = 0; i < n; i++)
            if (words[i].df == next)
                add += next;
        if (threshold >= 0 && sum + add > budget)
            return threshold;
        sum += add;
        threshold = next;
    }
}

/* The id above which a query whose words are all common searches: the
 * newest m->common_window items (ids grow with time) hold its candidates. */
static int common_window(struct memory *m, int64_t *above)
{
    sqlite3_stmt *st = memory_stmt(m, ST_MAX_ID);
    if (!st)
        return TH_ERR;
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        int64_t max = sqlite3_column_int64(st, 0);
        *above = max > m->common_window ? max - m->common_window : 0;
    } else {
        rc = memory_db_error(m, "search");
    }
    sqlite3_reset(st);
    return rc;
}

/* What a keyword search for a text asks the index: its words and how many
 * items hold each (capped, see capped_df()); with terms, each word's one
 * token too (NULL when it makes none or several). */
struct keyword_plan {
    struct qword words[MAX_QUERY_TERMS];
    double word_df[MAX_QUERY_TERMS];
    char *terms[MAX_QUERY_TERMS];
    size_t n, rare; /* words, and those held by at most COMMON_DF items */
};

static void keyword_plan_free(struct keyword_plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->terms[i]);
}

static int keyword_plan(struct memory *m, const char *text, bool terms, struct keyword_plan *p)
{
    memset(p->terms, 0, sizeof p->terms);
    p->rare = 0;
    p->n = query_words(text, p->words);
    if (p->n == 0)
        return 0;
    int rc = memory_sim_cache_sync(m); /* the word counts capped_df() may reuse */
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        rc = capped_df(m, &p->words[i], &p->words[i].df, terms ? &p->terms[i] : NULL);
        p->word_df[i] = (double)p->words[i].df;
        p->rare += p->words[i].df <= COMMON_DF;
    }
    if (rc < 0)
        keyword_plan_free(p);
    return rc;
}

/* BM25 candidates. An FTS5 query costs in proportion to the items that
 * hold any of its words (each is read and ranked), so words held by more
 * than COMMON_DF items are handled the way Lucene's common-terms query
 * handles them: when the query also has rarer words, candidates are the
 * items holding any of the rarer words, ranked by those (a common word's
 * idf is low); when every word is common, the items holding all of them,
 * else those holding at least two (for up to MAX_PAIR_WORDS words), else
 * any. Whether a word is common is counted with a LIMIT, and those counts
 * (exact below the limit, capped above) are the document frequencies of
 * the ranking function. Two bounds keep a search's cost fixed on large
 * stores: the rare words are taken rarest first within the posting budget
 * (rare_threshold), and a query of common words only searches the newest
 * items (common_window). In a store of at most COMMON_DF items every word
 * is rare, the query is any of the words (unless they exceed the budget),
 * and the ranking is exactly FTS5's bm25(). */
int memory_keyword_search(struct memory *m, const char *text, const char *kind, long limit,
                          struct memory_keyword_hit **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    struct keyword_plan p;
    int plan = keyword_plan(m, text, false, &p);
    if (plan < 0 || p.n == 0)
        return plan;
    const struct qword *words = p.words;
    const double *word_df = p.word_df;
    size_t n = p.n, rare = p.rare, ndf;
    struct hit_list hits = {0};
    double df[MAX_PAIR_WORDS * (MAX_PAIR_WORDS - 1) > MAX_QUERY_TERMS
                  ? MAX_PAIR_WORDS * (MAX_PAIR_WORDS - 1)
                  : MAX_QUERY_TERMS];
    long found = 0;
    int rc = 0;
    char *q;
    if (rare > 0) {
        long max_df = rare_threshold(words, n, m->posting_budget);
        q = join_words(words, n, " OR ", max_df);
        ndf = pick_df(words, n, word_df, max_df, df);
        rc = run_match(m, kind, limit, q, df, ndf, 0, &hits, &found);
        free(q);
        goto done;
    }
    ndf = pick_df(words, n, word_df, -1, df);
    int64_t window = 0;
    if ((rc = common_window(m, &window)) < 0)
        return rc;
    if (n > 1) {
        q = join_words(words, n, " AND ", -1);
        rc = run_match(m, kind, limit, q, df, ndf, window, &hits, &found);
        free(q);
    }
    if (rc == 0 && found == 0 && n > 2 && n <= MAX_PAIR_WORDS) {
        size_t npairs;
        double pair_df[MAX_PAIR_WORDS * (MAX_PAIR_WORDS - 1)];
        q = pairs_query(words, n, word_df, pair_df, &npairs);
        rc = run_match(m, kind, limit, q, pair_df, npairs, window, &hits, &found);
        free(q);
    }
    if (rc == 0 && found == 0) {
        q = join_words(words, n, " OR ", -1);
        rc = run_match(m, kind, limit, q, df, ndf, window, &hits, &found);
        free(q);
    }
done:
    if (rc < 0) {
        free(hits.v);
        return rc;
    }
    *out = hits.v;
    *nout = hits.n;
    return 0;
}

static int compare_terms(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int count_token(const char *token, int len, void *ud)
{
    (void)token;
    (void)len;
    return ++*(int *)ud > 1; /* a second token: enough */
}

int memory_keyword_terms(struct memory *m, const char *text, char ***out, size_t *nout, bool *whole)
{
    *out = NULL;
    *nout = 0;
    *whole = true;
    struct keyword_plan p;
    int rc = keyword_plan(m, text, true, &p);
    if (rc < 0)
        return rc;
    if (p.n > 0 && p.rare == 0) { /* only common words: narrowed to items holding several */
        keyword_plan_free(&p);
        return 0;
    }
    /* one query for any of the rare words within the budget, over all items
     * (memory_keyword_search() above) */
    long max_df = p.n ? rare_threshold(p.words, p.n, m->posting_budget) : -1;
    char **terms = xcalloc(p.n ? p.n : 1, sizeof *terms);
    size_t k = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (p.words[i].df > max_df)
            continue;
        if (p.terms[i]) {
            terms[k++] = p.terms[i];
            p.terms[i] = NULL;
        } else if (*whole) { /* no token (matches nothing) or a phrase */
            int count = 0;
            if ((rc = memory_tokenize(m, p.words[i].p, p.words[i].n, count_token, &count)) < 0)
                break;
            rc = 0;
            *whole = count < 2;
        }
    }
    keyword_plan_free(&p);
    if (k > 1)
        qsort(terms, k, sizeof *terms, compare_terms);
    size_t d = 0; /* distinct: "network" and "networks" make one term */
    for (size_t i = 0; i < k; i++) {
        if (d && !strcmp(terms[d - 1], terms[i]))
            free(terms[i]);
        else
            terms[d++] = terms[i];
    }
    if (rc < 0) {
        for (size_t i = 0; i < d; i++)
            free(terms[i]);
        free(terms);
        return rc;
    }
    *out = terms;
    *nout = d;
    return 1;
}

static int keyword_candidates(struct memory *m, const struct memory_recall_options *o,
                              const char *text, struct cand_set *set)
{
    struct memory_keyword_hit *hits = NULL;
    size_t n = 0;
    int rc = memory_keyword_search(m, text, o->kind, m->params.candidates, &hits, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct cand *c = cand_find(set, hits[i].id, true);
        c->bm25 = hits[i].bm25;
        c->kw_rank = (int)i + 1;
    }
    free(hits);
    return rc;
}

static int compare_by_cosine(const void *a, const void *b)
{
    const struct cand *x = *(const struct cand *const *)a, *y = *(const struct cand *const *)b;
    if (x->cosine != y->cosine)
        return x->cosine > y->cosine ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Whether the store holds at most max embeddings of model. */
static int small_enough_to_scan(struct memory *m, const char *model, long max, bool *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT count(*) FROM (SELECT 1 FROM memory_embeddings"
                           " WHERE model = ?1 LIMIT ?2)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "count the embeddings of");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, max + 1);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = memory_db_error(m, "count the embeddings of");
        goto cleanup;
    }
    *out = sqlite3_column_int64(st, 0) <= max;
cleanup:
    sqlite3_finalize(st);
    return rc;
}

/* Scans every embedding of the model (and kind) and adds the
 * memory.candidates most similar items to the set. */
static int vector_scan(struct memory *m, const struct memory_recall_options *o,
                       struct cand_set *set)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    size_t keep = (size_t)m->params.candidates, held = 0;
    struct {
        int64_t id;
        double cos;
    } *best = xcalloc(keep, sizeof *best);
    if (sqlite3_prepare_v2(m->db,
                           "SELECT e.item_id, e.vector FROM memory_embeddings e"
                           " JOIN memory_items i ON i.id = e.item_id"
                           " WHERE e.model = ?1 AND e.dim = ?2 AND (?3 IS NULL OR i.kind = ?3)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read embeddings from");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, o->model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, o->dim);
    memory_bind_text(st, 3, o->kind);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const float *v = sqlite3_column_blob(st, 1);
        if (!v || sqlite3_column_bytes(st, 1) != o->dim * (int)sizeof(float))
            continue;
        double cos = memory_cosine(o->query_vec, v, o->dim);
        /* keep the best `keep` in a small array: replace the worst */
        size_t worst = 0;
        if (held < keep) {
            worst = held++;
        } else {
            for (size_t i = 1; i < held; i++)
                if (best[i].cos < best[worst].cos)
                    worst = i;
            if (cos <= best[worst].cos)
                continue;
        }
        best[worst].id = sqlite3_column_int64(st, 0);
        best[worst].cos = cos;
    }
    if (step != SQLITE_DONE) {
        rc = memory_db_error(m, "read embeddings from");
        goto cleanup;
    }
    for (size_t i = 0; i < held; i++)
        cand_find(set, best[i].id, true)->cosine = best[i].cos;
cleanup:
    sqlite3_finalize(st);
    free(best);
    return rc;
}

/* The cosine of the query and item id's embedding by o->model: from the
 * 8-bit copy (q8), or, without q8 or when the copy is missing (an
 * embedding stored by an older thalamus), from the float vector. NAN when
 * the item has none of that model and dimension. buf holds o->dim floats. */
static int candidate_cosine(struct memory *m, const struct memory_recall_options *o, int64_t id,
                            bool q8, float *buf, double *out)
{
    *out = NAN;
    sqlite3_stmt *st;
    int step;
    if (q8) {
        if (!(st = memory_stmt(m, ST_EMBED_Q8_GET)))
            return TH_ERR;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_text(st, 2, o->model, -1, SQLITE_STATIC);
        step = sqlite3_step(st);
        if (step == SQLITE_ROW && sqlite3_column_bytes(st, 0) == o->dim) {
            const signed char *v = sqlite3_column_blob(st, 0);
            if (v)
                *out = memory_cosine_q8(o->query_vec, v, o->dim);
        }
        sqlite3_reset(st);
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            return memory_db_error(m, "read an embedding from");
        if (step == SQLITE_ROW)
            return 0;
    }
    if (!(st = memory_stmt(m, ST_EMBED_GET)))
        return TH_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, o->model, -1, SQLITE_STATIC);
    step = sqlite3_step(st);
    if (step == SQLITE_ROW && sqlite3_column_int(st, 0) == o->dim) {
        /* one buffer: a blob in a database page need not be aligned for floats */
        const void *blob = sqlite3_column_blob(st, 1);
        if (blob && sqlite3_column_bytes(st, 1) == o->dim * (int)sizeof(float)) {
            memcpy(buf, blob, (size_t)o->dim * sizeof *buf);
            *out = memory_cosine(o->query_vec, buf, o->dim);
        }
    }
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return memory_db_error(m, "read an embedding from");
    return 0;
}

/* Cosines for the keyword candidates and, in a store small enough, for
 * every embedding (exact, float). In a larger store the keyword candidates'
 * cosines come from the 8-bit copies: a fourth of the bytes to read at
 * random places, for cosines within about 0.003 of the exact ones; one
 * ranking never mixes the two. */
static int vector_candidates(struct memory *m, const struct memory_recall_options *o,
                             struct cand_set *set)
{
    bool scan = false;
    int rc = small_enough_to_scan(m, o->model, m->params.embedding_scan_max, &scan);
    if (rc < 0)
        return rc;
    float *buf = xmalloc((size_t)o->dim * sizeof *buf);
    for (size_t i = 0; i < set->n && rc == 0; i++)
        rc = candidate_cosine(m, o, set->v[i].id, !scan, buf, &set->v[i].cosine);
    free(buf);
    if (rc == 0 && scan)
        rc = vector_scan(m, o, set);
    if (rc < 0)
        return rc;
    /* rank everything that has a cosine */
    struct cand **order = xcalloc(set->n ? set->n : 1, sizeof *order);
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++)
        if (!isnan(set->v[i].cosine))
            order[n++] = &set->v[i];
    qsort(order, n, sizeof *order, compare_by_cosine);
    for (size_t i = 0; i < n; i++)
        order[i]->vec_rank = (int)i + 1;
    free(order);
    return 0;
}

static void relevance(struct memory *m, struct cand_set *set, bool fused)
{
    (void)m;
    double top = 0;
    for (size_t i = 0; i < set->n; i++) {
        struct cand *c = &set->v[i];
        if (fused)
            c->relevance = (c->kw_rank ? 1.0 / (RRF_K + c->kw_rank) : 0) +
                           (c->vec_rank ? 1.0 / (RRF_K + c->vec_rank) : 0);
        else
            c->relevance = c->kw_rank && -c->bm25 > 0 ? -c->bm25 : 0;
        if (c->relevance > top)
            top = c->relevance;
    }
    for (size_t i = 0; i < set->n; i++) {
        struct cand *c = &set->v[i];
        if (top > 0)
            c->relevance /= top;
        else if (c->kw_rank) /* matches whose BM25 is 0: equally relevant */
            c->relevance = 1;
    }
}

/* Reads kind, importance and last access of c and computes its base score. */
static int score_base(struct memory *m, struct cand *c, const char *kind, int64_t now)
{
    if (c->scored)
        return 0;
    c->scored = true;
    sqlite3_stmt *st = memory_stmt(m, ST_ITEM_SCORE);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, c->id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) { /* forgotten meanwhile */
        c->excluded = true;
        sqlite3_reset(st);
        return 0;
    }
    if (step != SQLITE_ROW) {
        sqlite3_reset(st);
        return memory_db_error(m, "read an item from");
    }
    const char *k = (const char *)sqlite3_column_text(st, 0);
    c->excluded = kind && (!k || strcmp(k, kind));
    c->importance = sqlite3_column_double(st, 1);
    int64_t accessed = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    double hours = now > accessed ? (double)(now - accessed) / 3600000.0 : 0;
    c->recency = pow(m->params.recency_decay, hours);
    const struct memory_params *p = &m->params;
    c->base = p->weight_relevance * c->relevance + p->weight_recency * c->recency +
              p->weight_importance * c->importance;
    return 0;
}

/* ---- spreading activation ------------------------------------------------ */

struct neighbours {
    int64_t id;
    struct memory_link *links;
    size_t n;
    long fanout;
};

struct link_cache {
    struct neighbours *v;
    size_t n, cap;
};

static void link_cache_free(struct link_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].links);
    free(c->v);
}

/* Up to MAX_FANOUT links of id and its total number of links. */
static int neighbours_of(struct memory *m, struct link_cache *cache, int64_t id,
                         const struct neighbours **out)
{
    for (size_t i = 0; i < cache->n; i++)
        if (cache->v[i].id == id) {
            *out = &cache->v[i];
            return 0;
        }
    sqlite3_stmt *st = memory_stmt(m, ST_LINKS_OF);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, MAX_FANOUT);
    int64_t now = memory_now(m);
    struct memory_link *links = xcalloc(MAX_FANOUT, sizeof *links);
    size_t n = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && n < MAX_FANOUT) {
        struct memory_link *l = &links[n++];
        memory_link_from_row(m, st, now, l);
    }
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        free(links);
        return memory_db_error(m, "read links from");
    }
    long fanout = (long)n;
    if (n == MAX_FANOUT) { /* a hub: count all its links */
        sqlite3_stmt *cnt = memory_stmt(m, ST_LINK_COUNT);
        if (!cnt) {
            free(links);
            return TH_ERR;
        }
        sqlite3_bind_int64(cnt, 1, id);
        if (sqlite3_step(cnt) == SQLITE_ROW)
            fanout = (long)sqlite3_column_int64(cnt, 0);
        sqlite3_reset(cnt);
    }
    if (cache->n == cache->cap)
        cache->v = xreallocarray(cache->v, cache->cap = cache->cap ? cache->cap * 2 : 16,
                                 sizeof *cache->v);
    cache->v[cache->n] = (struct neighbours){id, links, n, fanout};
    *out = &cache->v[cache->n++];
    return 0;
}

static void receive(struct cand_set *set, int64_t id, double amount, int64_t from, const char *type,
                    int hops)
{
    struct cand *c = cand_find(set, id, true);
    c->activation += amount;
    if (amount > c->via_best) {
        c->via_best = amount;
        c->via_id = from;
        snprintf(c->via_type, sizeof c->via_type, "%s", type);
        c->via_hops = hops;
    }
}

static int compare_by_base(const void *a, const void *b)
{
    const struct cand *x = *(const struct cand *const *)a, *y = *(const struct cand *const *)b;
    if (x->base != y->base)
        return x->base > y->base ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Spreads activation from the seeds: a seed s with energy e_s gives each
 * neighbour n e_s * decay * w(s, n) / fanout(s); on a second hop, n passes
 * on its share the same way, never back to s. */
static int spread(struct memory *m, struct cand_set *set)
{
    const struct memory_params *p = &m->params;
    if (p->activation_hops <= 0 || p->activation_decay <= 0 || set->n == 0)
        return 0;
    size_t ncand = set->n;
    struct cand **order = xcalloc(ncand, sizeof *order);
    size_t n = 0;
    for (size_t i = 0; i < ncand; i++)
        order[n++] = &set->v[i];
    qsort(order, n, sizeof *order, compare_by_base);
    size_t nseeds = n < (size_t)p->activation_seeds ? n : (size_t)p->activation_seeds;
    struct seed {
        int64_t id;
        double energy;
    } seeds[100];
    double top = n ? order[0]->base : 0;
    size_t s_used = 0;
    for (size_t i = 0; i < nseeds && s_used < 100; i++)
        if (order[i]->base > 0 && top > 0)
            seeds[s_used++] = (struct seed){order[i]->id, order[i]->base / top};
    free(order); /* set->v moves as items are added below */
    struct link_cache cache = {0};
    int rc = 0;
    for (size_t s = 0; s < s_used && rc == 0; s++) {
        const struct neighbours *nb;
        if ((rc = neighbours_of(m, &cache, seeds[s].id, &nb)) < 0)
            break;
        if (nb->fanout == 0)
            continue;
        /* copy: the cache may grow (and move) during the second hop */
        size_t n1 = nb->n;
        long fan1 = nb->fanout;
        struct memory_link *first = xcalloc(n1, sizeof *first);
        memcpy(first, nb->links, n1 * sizeof *first);
        for (size_t i = 0; i < n1 && rc == 0; i++) {
            const struct memory_link *l = &first[i];
            int64_t mid = l->src == seeds[s].id ? l->dst : l->src;
            double a1 = seeds[s].energy * p->activation_decay * l->weight / (double)fan1;
            if (a1 <= 0)
                continue;
            receive(set, mid, a1, seeds[s].id, l->type, 1);
            if (p->activation_hops < 2 || a1 * p->activation_decay < 1e-9)
                continue;
            const struct neighbours *nb2;
            if ((rc = neighbours_of(m, &cache, mid, &nb2)) < 0)
                break;
            for (size_t j = 0; j < nb2->n; j++) {
                const struct memory_link *l2 = &nb2->links[j];
                int64_t far = l2->src == mid ? l2->dst : l2->src;
                if (far == seeds[s].id)
                    continue;
                double a2 = a1 * p->activation_decay * l2->weight / (double)nb2->fanout;
                if (a2 > 0)
                    receive(set, far, a2, mid, l2->type, 2);
            }
        }
        free(first);
    }
    link_cache_free(&cache);
    return rc;
}

/* ---- the recall ---------------------------------------------------------- */

static int compare_hits(const void *a, const void *b)
{
    const struct memory_hit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->item.id < y->item.id ? -1 : x->item.id > y->item.id;
}

static int touch(struct memory *m, const struct memory_hit *hits, size_t n, int64_t now)
{
    bool own_tx = !m->in_tx;
    if (own_tx && memory_begin(m) < 0)
        return TH_ERR;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_stmt *st = memory_stmt(m, ST_ITEM_TOUCH);
        if (!st) {
            rc = TH_ERR;
            break;
        }
        sqlite3_bind_int64(st, 1, hits[i].item.id);
        sqlite3_bind_int64(st, 2, now);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = memory_db_error(m, "update access statistics in");
        sqlite3_reset(st);
    }
    if (own_tx) {
        m->touching = true;
        if (rc == 0)
            rc = memory_commit(m);
        else
            memory_rollback(m);
        m->touching = false;
    }
    return rc;
}

int memory_recall(struct memory *m, const struct memory_recall_options *o, struct memory_hit **out,
                  size_t *n)
{
    *out = NULL;
    *n = 0;
    if (o->k < 1 || o->k > MEMORY_MAX_K)
        return error_setc(TH_EUSAGE, "the number of items to recall must be from 1 to %d, got %d",
                          MEMORY_MAX_K, o->k);
    if (o->kind) {
        int rc = memory_check_name(memory_item_kinds, "item kind", o->kind);
        if (rc < 0)
            return rc;
    }
    bool vector = o->query_vec && o->dim > 0 && o->model;
    struct buf clean;
    int rc = memory_clean_text(&clean, o->query ? o->query : "", MEMORY_MAX_TEXT, "query", NULL);
    if (rc < 0)
        return rc;
    char *query = memory_fts_query(clean.data);
    struct cand_set set = {0};
    struct memory_hit *hits = NULL;
    size_t nhits = 0;
    int64_t now = memory_now(m);
    /* one read transaction for the hundreds of small reads below: each
     * statement run outside a transaction would open and close a read
     * transaction of its own (locks on the write-ahead log's index, system
     * calls each time), and all of them see the same state of the store */
    bool reading = false;
    if (!query[0] && !vector)
        goto cleanup;
    if (!m->in_tx && sqlite3_get_autocommit(m->db)) {
        if (sqlite3_exec(m->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
            rc = memory_db_error(m, "search");
            goto cleanup;
        }
        reading = true;
    }
    if (query[0] && (rc = keyword_candidates(m, o, clean.data, &set)) < 0)
        goto cleanup;
    if (vector && (rc = vector_candidates(m, o, &set)) < 0)
        goto cleanup;
    relevance(m, &set, vector);
    for (size_t i = 0; i < set.n; i++)
        if ((rc = score_base(m, &set.v[i], o->kind, now)) < 0)
            goto cleanup;
    size_t ncand = set.n;
    if ((rc = spread(m, &set)) < 0)
        goto cleanup;
    /* items reached only through links: recency and importance, no relevance */
    for (size_t i = ncand; i < set.n; i++)
        if ((rc = score_base(m, &set.v[i], o->kind, now)) < 0)
            goto cleanup;

    const struct memory_params *p = &m->params;
    hits = xcalloc(set.n ? set.n : 1, sizeof *hits);
    for (size_t i = 0; i < set.n; i++) {
        struct cand *c = &set.v[i];
        if (c->excluded || (i >= ncand && c->activation < MIN_ACTIVATION))
            continue;
        struct memory_hit *h = &hits[nhits++];
        double act = c->activation > 1 ? 1 : c->activation;
        h->item.id = c->id;
        h->relevance = c->relevance;
        h->recency = c->recency;
        h->importance = c->importance;
        h->activation = act;
        h->relevance_part = p->weight_relevance * c->relevance;
        h->recency_part = p->weight_recency * c->recency;
        h->importance_part = p->weight_importance * c->importance;
        h->activation_part = p->weight_activation * act;
        h->score = h->relevance_part + h->recency_part + h->importance_part + h->activation_part;
        h->bm25 = c->bm25;
        h->cosine = c->cosine;
        h->keyword_rank = c->kw_rank;
        h->vector_rank = c->vec_rank;
        h->via_id = c->via_id;
        snprintf(h->via_type, sizeof h->via_type, "%s", c->via_type);
        h->via_hops = c->via_hops;
    }
    qsort(hits, nhits, sizeof *hits, compare_hits);
    if (nhits > (size_t)o->k)
        nhits = (size_t)o->k;
    for (size_t i = 0; i < nhits; i++) {
        int64_t id = hits[i].item.id;
        if ((rc = memory_item_get(m, id, &hits[i].item)) < 0) {
            hits[i].item.id = id;
            goto cleanup;
        }
    }
    if (reading) {
        reading = false;
        if (sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            rc = memory_db_error(m, "search");
            goto cleanup;
        }
    }
    if (!o->no_touch && nhits && (rc = touch(m, hits, nhits, now)) < 0) {
        /* a writer that holds the database for longer than the busy timeout
         * costs the access statistics, not the answer */
        int code = sqlite3_extended_errcode(m->db) & 0xff;
        if (code != SQLITE_BUSY && code != SQLITE_LOCKED)
            goto cleanup;
        log_warn("access statistics not updated: %s", error_message());
        error_clear();
        rc = 0;
    }
cleanup:
    if (reading)
        sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
    cand_set_free(&set);
    free(query);
    buf_free(&clean);
    if (rc < 0) {
        memory_hits_free(hits, nhits);
        return rc;
    }
    *out = hits;
    *n = nhits;
    return 0;
}

void memory_hits_free(struct memory_hit *hits, size_t n)
{
    if (!hits)
        return;
    for (size_t i = 0; i < n; i++)
        memory_item_clear(&hits[i].item);
    free(hits);
}

/* ---- the Hebbian update --------------------------------------------------- */

static int compare_ids(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int strengthen(struct memory *m, int64_t a, int64_t b, int64_t now)
{
    sqlite3_stmt *st = memory_stmt(m, ST_LINK_GET);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    sqlite3_bind_text(st, 3, "co_recalled", -1, SQLITE_STATIC);
    double w = 0;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        w = memory_link_effective_weight(&m->params, "co_recalled", sqlite3_column_double(st, 0),
                                         sqlite3_column_int64(st, 1), now);
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return memory_db_error(m, "read links from");
    double nw = w + m->params.hebbian_rate * (1.0 - w);
    if (nw > 1)
        nw = 1;
    if (!(nw > 0))
        return 0;
    return memory_link_set(m, a, b, "co_recalled", nw);
}

int memory_reinforce(struct memory *m, const int64_t *ids, size_t n)
{
    if (n > MEMORY_MAX_USED)
        return error_setc(TH_EUSAGE, "at most %d items can be reinforced together, got %zu",
                          MEMORY_MAX_USED, n);
    int64_t v[MEMORY_MAX_USED];
    size_t len = 0;
    if (n)
        memcpy(v, ids, n * sizeof *ids);
    qsort(v, n, sizeof *v, compare_ids);
    for (size_t i = 0; i < n; i++)
        if (len == 0 || v[len - 1] != v[i])
            v[len++] = v[i];
    for (size_t i = 0; i < len; i++) {
        sqlite3_stmt *st = memory_stmt(m, ST_ITEM_SCORE);
        if (!st)
            return TH_ERR;
        sqlite3_bind_int64(st, 1, v[i]);
        int step = sqlite3_step(st);
        sqlite3_reset(st);
        if (step == SQLITE_DONE)
            return error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)v[i]);
        if (step != SQLITE_ROW)
            return memory_db_error(m, "read an item from");
    }
    if (len < 2)
        return 0;
    bool own_tx = !m->in_tx;
    if (own_tx && memory_begin(m) < 0)
        return TH_ERR;
    int64_t now = memory_now(m);
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++)
        for (size_t j = i + 1; j < len && rc == 0; j++)
            rc = strengthen(m, v[i], v[j], now);
    if (own_tx) {
        if (rc == 0)
            rc = memory_commit(m);
        else
            memory_rollback(m);
    }
    return rc;
}
