/*
 * memory_bench: the measurements behind scripts/bench/memory.sh, on the real
 * memory API (memory.h) and a real store (WAL, synchronous=NORMAL).
 *
 * Synthetic text: a vocabulary of 30,000 pseudo-words drawn with a Zipf
 * distribution (exponent 1), 8 words of title and 40 of text per item,
 * importance uniform in [0, 1], creation times spread over a year; every
 * item after the first cites one earlier item and is "similar" to another,
 * so that spreading activation has links to follow. Everything is
 * deterministic (item i always has the same text).
 *
 *   memory_bench insert DB FROM TO      add items FROM..TO-1 in bulk loads
 *                                       (memory_begin_bulk) of 10,000; prints
 *                                       items/s, the time of the link writes,
 *                                       of the commits (the full-text pass and
 *                                       the write-ahead log) and of closing the
 *                                       store (its last checkpoint, counted in
 *                                       the total), and the CPU time
 *   memory_bench embed DB DIM FROM TO   store DIM-float embeddings for them
 *   memory_bench recall DB N SET [DIM]  N recalls (k = 10, default tuning);
 *                                       SET is "typical" (3 words of Zipf rank
 *                                       200..30,000) or "frequent" (3 words of
 *                                       rank 20..200); DIM > 0 adds a query
 *                                       vector; prints p50, p99, mean, the
 *                                       process's peak RSS and the CPU time
 *                                       p50 / p99 (steadier than the wall clock
 *                                       on a shared machine)
 *   memory_bench size DB                database bytes, per item, and the share
 *                                       of embeddings (from dbstat)
 *
 * Each batch's items are generated before the batch is timed (the
 * generator's cost is not the memory's).
 * For experiments: BENCH_NO_LINKS=1 inserts items without links,
 * BENCH_NO_BULK=1 uses plain transactions (the triggers index each item),
 * BENCH_KIND=paper makes recall filter by that kind, and
 * BENCH_PRAGMA="PRAGMA ..." runs SQL on the connection after it opens.
 * Depends on memory, store, error and SQLite.
 */
#include "error.h"
#include "memory.h"
#include "store.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define VOCAB       30000
#define TITLE_WORDS 8
#define TEXT_WORDS  40
#define BATCH       10000
#define YEAR_MS     (365LL * 24 * 3600 * 1000)
#define NOW_MS      1735689600000LL /* 2025-01-01, fixed so runs compare */

static double cumulative[VOCAB];

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void seed(uint64_t s)
{
    rng_state = s * 0x9e3779b97f4a7c15ULL + 0x1234567ULL;
    for (int i = 0; i < 4; i++)
        rng();
}

static double uniform(void)
{
    return (double)(rng() >> 11) / (double)(1ULL << 53);
}

/* guide[g]: the first rank whose cumulative share reaches g / GUIDE, so that
 * zipf() searches only between two neighbouring guides (the same answer as
 * a search of the whole table, in a fraction of the time: generating the
 * text is inside the timed loop). */
#define GUIDE 65536
static int guide[GUIDE + 1];

static void zipf_init(void)
{
    double sum = 0;
    for (int r = 0; r < VOCAB; r++)
        cumulative[r] = sum += 1.0 / (r + 1);
    for (int r = 0; r < VOCAB; r++)
        cumulative[r] /= sum;
    int r = 0;
    for (int g = 0; g <= GUIDE; g++) {
        while (r < VOCAB - 1 && cumulative[r] < (double)g / GUIDE)
            r++;
        guide[g] = r;
    }
}

/* The smallest rank whose cumulative share is at least u. */
static int zipf(void)
{
    double u = uniform();
    int g = (int)(u * GUIDE);
    int lo = guide[g], hi = g < GUIDE ? guide[g + 1] : VOCAB - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cumulative[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Word r as syllables: distinct for every r, 2 to 4 syllables. */
static void word(int r, char *out)
{
    static const char *const syl[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "da",
                                      "fe", "go", "hu", "ji", "po", "qi", "wa", "xu", "ye", "bo"};
    int n = r + 400; /* at least two syllables */
    out[0] = '\0';
    while (n > 0) {
        strcat(out, syl[n % 20]);
        n /= 20;
    }
}

static char vocab[VOCAB][16];
static unsigned char vocab_len[VOCAB];

static void words(int count, char *out)
{
    char *p = out;
    for (int i = 0; i < count; i++) {
        int r = zipf();
        if (!vocab_len[r]) {
            word(r, vocab[r]);
            vocab_len[r] = (unsigned char)strlen(vocab[r]);
        }
        if (i)
            *p++ = ' ';
        memcpy(p, vocab[r], vocab_len[r]);
        p += vocab_len[r];
    }
    *p = '\0';
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* User and system CPU time of the process: steadier than the wall clock on
 * a machine shared with other work. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int64_t fixed_clock(void *ud)
{
    (void)ud;
    return NOW_MS;
}

static int open_memory(const char *path, struct store **s, struct memory **m)
{
    store_reset_migrations();
    memory_register_migrations();
    if (store_open(s, path) < 0 || memory_new(m, *s, NULL) < 0) {
        fprintf(stderr, "memory_bench: %s\n", error_message());
        return -1;
    }
    memory_set_clock(*m, fixed_clock, NULL);
    if (getenv("BENCH_PRAGMA"))
        sqlite3_exec((*s)->db, getenv("BENCH_PRAGMA"), NULL, NULL, NULL);
    return 0;
}

static int fail(void)
{
    fprintf(stderr, "memory_bench: %s\n", error_message());
    return 1;
}

/* One synthetic item, generated before the timed part of its batch. */
struct gen_item {
    char title[TITLE_WORDS * 16], text[TEXT_WORDS * 16];
    double importance;
    int64_t created_ms, cites, similar; /* link targets, 0: none */
};

/* Item i (id i + 1): its words, importance, age and link targets, drawn in
 * a fixed order from a generator seeded with i. */
static void generate(long i, bool links, struct gen_item *g)
{
    seed((uint64_t)i + 1);
    words(TITLE_WORDS, g->title);
    words(TEXT_WORDS, g->text);
    g->importance = uniform();
    g->created_ms = NOW_MS - (int64_t)(uniform() * YEAR_MS);
    int64_t id = i + 1;
    g->cites = g->similar = 0;
    if (id > 2 && links) {
        g->cites = 1 + (int64_t)(uniform() * (double)(id - 1));
        g->similar = 1 + (int64_t)(uniform() * (double)(id - 1));
    }
}

static int cmd_insert(const char *path, long from, long to)
{
    struct store *s;
    struct memory *m;
    if (open_memory(path, &s, &m) < 0)
        return 1;
    struct gen_item *batch = malloc(BATCH * sizeof *batch);
    double total = 0, cpu = 0, link_time = 0, commit_time = 0;
    long links = 0;
    bool bulk = !getenv("BENCH_NO_BULK"), with_links = !getenv("BENCH_NO_LINKS");
    for (long first = from; first < to; first += BATCH) {
        long count = to - first < BATCH ? to - first : BATCH;
        /* the text generator is not what is measured: it runs first */
        for (long j = 0; j < count; j++)
            generate(first + j, with_links, &batch[j]);
        double t0 = now_s(), c0 = cpu_s();
        if ((bulk ? memory_begin_bulk(m) : memory_begin(m)) < 0)
            return fail();
        for (long j = 0; j < count; j++) {
            long i = first + j;
            const struct gen_item *g = &batch[j];
            struct memory_item it;
            memory_item_init(&it);
            it.kind = i % 3 ? "paper" : "note";
            it.title = (char *)g->title;
            it.text = (char *)g->text;
            it.importance = g->importance;
            it.created_ms = g->created_ms;
            int64_t id;
            if (memory_item_add(m, &it, &id, NULL) < 0)
                return fail();
            if (id != i + 1) {
                fprintf(stderr,
                        "memory_bench: item %ld got id %lld: use an empty database or "
                        "continue where the last run stopped\n",
                        i, (long long)id);
                return 1;
            }
            if (g->cites) {
                double l0 = now_s();
                if (memory_link_set(m, id, g->cites, "cites", 1.0) < 0 ||
                    (g->similar != g->cites &&
                     memory_link_set(m, id, g->similar, "similar", 0.5) < 0))
                    return fail();
                links += 1 + (g->similar != g->cites);
                link_time += now_s() - l0;
            }
        }
        double k0 = now_s();
        if (memory_commit(m) < 0)
            return fail();
        commit_time += now_s() - k0;
        total += now_s() - t0;
        cpu += cpu_s() - c0;
    }
    /* closing copies what the write-ahead log still holds into the
     * database (the last checkpoint): part of the load's cost */
    double f0 = now_s(), fc0 = cpu_s();
    memory_free(m);
    store_close(s);
    double close_time = now_s() - f0;
    total += close_time;
    cpu += cpu_s() - fc0;
    long n = to - from;
    printf("inserted %ld items in %.2f s: %.0f items/s with links (%ld links, %.2f s of the "
           "time), %.0f items/s without the link writes; %.2f s in commits (%s), %.2f s "
           "closing the store (the last checkpoint); %.2f s of CPU (%.0f items per CPU "
           "second)\n",
           n, total, n / total, links, link_time, n / (total - link_time), commit_time,
           bulk ? "bulk loads: the full-text pass, then the WAL" : "the WAL", close_time, cpu,
           n / cpu);
    free(batch);
    return 0;
}

static void random_unit(float *v, int dim)
{
    double norm = 0;
    for (int i = 0; i < dim; i++) {
        v[i] = (float)(uniform() * 2 - 1);
        norm += (double)v[i] * v[i];
    }
    for (int i = 0; i < dim; i++)
        v[i] = (float)(v[i] / sqrt(norm));
}

static int cmd_embed(const char *path, int dim, long from, long to)
{
    struct store *s;
    struct memory *m;
    if (open_memory(path, &s, &m) < 0)
        return 1;
    float *v = malloc((size_t)dim * sizeof *v);
    double t0 = now_s();
    for (long i = from; i < to; i++) {
        if ((i - from) % BATCH == 0 && memory_begin(m) < 0)
            return fail();
        seed((uint64_t)i * 7 + 3);
        random_unit(v, dim);
        if (memory_embedding_put(m, i + 1, "bench", v, dim) < 0)
            return fail();
        if ((i - from + 1) % BATCH == 0 || i + 1 == to)
            if (memory_commit(m) < 0)
                return fail();
    }
    double total = now_s() - t0;
    printf("stored %ld embeddings of %d dimensions in %.2f s: %.0f/s\n", to - from, dim, total,
           (to - from) / total);
    free(v);
    memory_free(m);
    store_close(s);
    return 0;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_recall(const char *path, int n, const char *set, int dim)
{
    struct store *s;
    struct memory *m;
    if (open_memory(path, &s, &m) < 0)
        return 1;
    bool frequent = !strcmp(set, "frequent");
    int lo = frequent ? 20 : 200, hi = frequent ? 200 : VOCAB;
    double *ms = calloc((size_t)n, sizeof *ms), *cpu_ms = calloc((size_t)n, sizeof *cpu_ms);
    float *q = dim > 0 ? malloc((size_t)dim * sizeof *q) : NULL;
    long hits_total = 0, activated = 0;
    for (int i = 0; i < n; i++) {
        seed(1000003ULL + (uint64_t)i);
        char query[64] = "", w[16];
        for (int j = 0; j < 3; j++) {
            word(lo + (int)(uniform() * (hi - lo)), w);
            strcat(query, j ? " " : "");
            strcat(query, w);
        }
        if (q)
            random_unit(q, dim);
        struct memory_recall_options o = {.query = query,
                                          .kind = getenv("BENCH_KIND"),
                                          .k = 10,
                                          .query_vec = q,
                                          .dim = dim,
                                          .model = "bench"};
        struct memory_hit *hits;
        size_t nh;
        double t0 = now_s(), c0 = cpu_s();
        if (memory_recall(m, &o, &hits, &nh) < 0)
            return fail();
        ms[i] = (now_s() - t0) * 1000;
        cpu_ms[i] = (cpu_s() - c0) * 1000;
        hits_total += (long)nh;
        for (size_t j = 0; j < nh; j++)
            activated += hits[j].activation > 0;
        memory_hits_free(hits, nh);
    }
    qsort(ms, (size_t)n, sizeof *ms, compare_double);
    qsort(cpu_ms, (size_t)n, sizeof *cpu_ms, compare_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += ms[i];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%d recalls (%s words%s): p50 %.2f ms, p99 %.2f ms, mean %.2f ms, max %.2f ms; "
           "%.1f hits each, %.1f with activation; peak RSS %.1f MiB; CPU p50 %.2f ms, p99 %.2f "
           "ms\n",
           n, set, dim > 0 ? ", with a query vector" : "", ms[n / 2], ms[(int)ceil(n * 0.99) - 1],
           sum / n, ms[n - 1], (double)hits_total / n, (double)activated / n, ru.ru_maxrss / 1024.0,
           cpu_ms[n / 2], cpu_ms[(int)ceil(n * 0.99) - 1]);
    free(ms);
    free(cpu_ms);
    free(q);
    memory_free(m);
    store_close(s);
    return 0;
}

static long query_long(struct store *s, const char *sql)
{
    sqlite3_stmt *st;
    long v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int cmd_size(const char *path)
{
    struct store *s;
    struct memory *m;
    if (open_memory(path, &s, &m) < 0)
        return 1;
    long items = query_long(s, "SELECT count(*) FROM memory_items");
    long bytes = query_long(s, "SELECT page_count * page_size FROM pragma_page_count(), "
                               "pragma_page_size()");
    long emb =
        query_long(s, "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
                      "('memory_embeddings', 'memory_embeddings_model', 'memory_embeddings_q8', "
                      "'sqlite_autoindex_memory_embeddings_1')");
    long fts = query_long(s, "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE "
                             "'memory_fts%'");
    printf("%ld items, %.1f MiB: %.0f bytes per item (%.0f without embeddings, of which %.0f "
           "for the full-text index)\n",
           items, bytes / 1048576.0, (double)bytes / items, (double)(bytes - emb) / items,
           (double)fts / items);
    memory_free(m);
    store_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    zipf_init();
    if (argc == 5 && !strcmp(argv[1], "insert"))
        return cmd_insert(argv[2], atol(argv[3]), atol(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "embed"))
        return cmd_embed(argv[2], atoi(argv[3]), atol(argv[4]), atol(argv[5]));
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "recall"))
        return cmd_recall(argv[2], atoi(argv[3]), argv[4], argc == 6 ? atoi(argv[5]) : 0);
    if (argc == 3 && !strcmp(argv[1], "size"))
        return cmd_size(argv[2]);
    fprintf(stderr, "usage: memory_bench insert DB FROM TO | embed DB DIM FROM TO |\n"
                    "       recall DB N typical|frequent [DIM] | size DB\n");
    return 2;
}
