/* Tests of memory: the episodic store is append-only and queryable; items
 * survive invalid UTF-8 and absurd sizes; recall ranks a hand-made corpus
 * with known answers; recency and importance reorder as configured;
 * spreading activation surfaces an item reachable only through a link;
 * the Hebbian update and link decay follow the documented formulas; a
 * second connection reads while the first writes; a killed writer loses
 * nothing committed; doctor finds damage; export and import round-trip;
 * a bulk load indexes its items at commit and nowhere else, and its items
 * are recalled exactly as items added one by one; a version-1
 * database upgrades; the keyword search keeps to its bounds; the novelty
 * check scores every item of a small bank exactly as it scores the keyword
 * search's candidates. */
#include "check.h"
#include "error.h"
#include "memory.h"
#include "memory_internal.h"
#include "store.h"
#include "utf8.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/thalamus-test-memory-XXXXXX";
static int64_t fake_now = 1700000000000LL; /* 2023-11-14 */

#define HOUR_MS ((int64_t)3600000)
#define DAY_MS  (24 * HOUR_MS)

static int64_t fake_clock(void *ud)
{
    (void)ud;
    return fake_now;
}

static const char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

struct fixture {
    struct store *store;
    struct memory *mem;
};

static void open_fixture(struct fixture *f, const char *name, bool fresh)
{
    if (fresh) {
        char p[300];
        unlink(db_path(name));
        snprintf(p, sizeof p, "%s-wal", db_path(name));
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", db_path(name));
        unlink(p);
    }
    store_reset_migrations();
    memory_register_migrations();
    f->store = NULL;
    f->mem = NULL;
    if (store_open(&f->store, db_path(name)) < 0) {
        fprintf(stderr, "  %s\n", error_message());
        REQUIRE(!"store_open");
    }
    REQUIRE(memory_new(&f->mem, f->store, NULL) == 0);
    memory_set_clock(f->mem, fake_clock, NULL);
}

static void close_fixture(struct fixture *f)
{
    memory_free(f->mem);
    store_close(f->store);
}

static int64_t add(struct memory *m, const char *kind, const char *title, const char *text,
                   double importance)
{
    struct memory_item it;
    memory_item_init(&it);
    it.kind = (char *)kind;
    it.title = (char *)title;
    it.text = (char *)text;
    it.importance = importance;
    int64_t id = 0;
    if (memory_item_add(m, &it, &id, NULL) < 0)
        fprintf(stderr, "  add: %s\n", error_message());
    return id;
}

static int query_int(struct store *s, const char *sql)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

#define CHECK_NEAR(a, b)                                                                           \
    do {                                                                                           \
        double check_x_ = (a), check_y_ = (b);                                                     \
        if (!near(check_x_, check_y_))                                                             \
            CHECK_FAIL("%s == %s: %.12g != %.12g", #a, #b, check_x_, check_y_);                    \
    } while (0)

/* ---- stores ----------------------------------------------------------------- */

static void test_item_round_trip(void)
{
    struct fixture f;
    open_fixture(&f, "items.db", true);
    struct memory_item it;
    memory_item_init(&it);
    it.kind = "note";
    it.title = "A title";
    it.text = "Body text";
    it.tags = "alice bob";
    it.source = "user";
    it.metadata = "{\"year\": 2020}";
    it.importance = 0.75;
    int64_t id = 0;
    REQUIRE(memory_item_add(f.mem, &it, &id, NULL) == 0);
    struct memory_item got;
    REQUIRE(memory_item_get(f.mem, id, &got) == 0);
    CHECK_EQ_STR(got.kind, "note");
    CHECK_EQ_STR(got.title, "A title");
    CHECK_EQ_STR(got.text, "Body text");
    CHECK_EQ_STR(got.tags, "alice bob");
    CHECK_EQ_STR(got.source, "user");
    CHECK_EQ_STR(got.metadata, "{\"year\": 2020}");
    CHECK_NEAR(got.importance, 0.75);
    CHECK_EQ_INT(got.created_ms, fake_now);
    CHECK_EQ_INT(got.accessed_ms, fake_now);
    CHECK_EQ_INT(got.access_count, 0);
    CHECK_EQ_INT(strlen(got.uid), 32);
    CHECK(strspn(got.uid, "0123456789abcdef") == 32);
    int64_t by_uid = 0;
    CHECK(memory_item_by_uid(f.mem, got.uid, &by_uid) == 0 && by_uid == id);
    /* the clock stands still: later uids of the same millisecond still sort
     * after it, the random part counting up */
    char prev[33];
    snprintf(prev, sizeof prev, "%s", got.uid);
    memory_item_clear(&got);
    for (int i = 0; i < 300; i++) {
        int64_t next = add(f.mem, "note", "", "same millisecond", 0.5);
        REQUIRE(memory_item_get(f.mem, next, &got) == 0);
        CHECK(strncmp(got.uid, prev, 12) == 0 && strcmp(got.uid, prev) > 0);
        snprintf(prev, sizeof prev, "%s", got.uid);
        memory_item_clear(&got);
    }

    /* refusals: unknown kind (with a suggestion), bad importance, bad metadata */
    it.kind = "nots";
    CHECK(memory_item_add(f.mem, &it, &id, NULL) == TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "did you mean 'note'?");
    it.kind = "note";
    it.importance = 1.5;
    CHECK(memory_item_add(f.mem, &it, &id, NULL) == TH_EUSAGE);
    it.importance = 0.5;
    it.metadata = "[1, 2]";
    CHECK(memory_item_add(f.mem, &it, &id, NULL) == TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "metadata must be a JSON object");
    CHECK(memory_item_get(f.mem, 999, &got) == TH_ENOTFOUND);
    close_fixture(&f);
}

static void test_episodes_append_only(void)
{
    struct fixture f;
    open_fixture(&f, "episodes.db", true);
    const char *kinds[] = {"idea", "experiment", "result", "idea"};
    for (int i = 0; i < 4; i++) {
        struct memory_episode ep = {0};
        ep.run = i < 3 ? "run-1" : "run-2";
        ep.node = i == 1 ? "n2" : "n1";
        ep.agent = "planner";
        ep.kind = (char *)kinds[i];
        ep.text = "something happened";
        ep.payload = i == 2 ? "{\"accuracy\": 0.9}" : NULL;
        ep.importance = 0.5;
        ep.time_ms = fake_now + i * HOUR_MS;
        int64_t id;
        REQUIRE(memory_episode_add(f.mem, &ep, &id) == 0);
    }
    /* queries by run, node, kind and time range */
    struct memory_episode *list = NULL;
    size_t n = 0;
    struct memory_episode_filter by_run = {.run = "run-1"};
    REQUIRE(memory_episodes(f.mem, &by_run, &list, &n) == 0);
    CHECK_EQ_INT(n, 3);
    CHECK(n == 3 && list[0].time_ms < list[1].time_ms && list[1].time_ms < list[2].time_ms);
    CHECK(n == 3 && list[2].payload && strstr(list[2].payload, "0.9"));
    memory_episodes_free(list, n);
    struct memory_episode_filter by_node = {.run = "run-1", .node = "n2"};
    REQUIRE(memory_episodes(f.mem, &by_node, &list, &n) == 0);
    CHECK(n == 1 && !strcmp(list[0].kind, "experiment"));
    memory_episodes_free(list, n);
    struct memory_episode_filter by_kind = {.kind = "idea"};
    REQUIRE(memory_episodes(f.mem, &by_kind, &list, &n) == 0);
    CHECK_EQ_INT(n, 2);
    memory_episodes_free(list, n);
    struct memory_episode_filter by_time = {.since_ms = fake_now + HOUR_MS,
                                            .until_ms = fake_now + 3 * HOUR_MS};
    REQUIRE(memory_episodes(f.mem, &by_time, &list, &n) == 0);
    CHECK(n == 2 && !strcmp(list[0].kind, "experiment") && !strcmp(list[1].kind, "result"));
    memory_episodes_free(list, n);

    /* the history is never rewritten */
    char *err = NULL;
    CHECK(sqlite3_exec(f.store->db, "UPDATE memory_episodes SET text = 'rewritten'", NULL, NULL,
                       &err) != SQLITE_OK);
    CHECK_CONTAINS(err, "append-only");
    sqlite3_free(err);
    err = NULL;
    CHECK(sqlite3_exec(f.store->db, "DELETE FROM memory_episodes WHERE id = 1", NULL, NULL, &err) !=
          SQLITE_OK);
    CHECK_CONTAINS(err, "append-only");
    sqlite3_free(err);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_episodes"), 4);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_episodes WHERE text = "
                                    "'rewritten'"),
                 0);
    /* a bad kind or payload is refused */
    struct memory_episode bad = {.kind = "dream", .text = "x", .importance = 0.5};
    int64_t id;
    CHECK(memory_episode_add(f.mem, &bad, &id) == TH_EUSAGE);
    bad.kind = "result";
    bad.payload = "{not json";
    CHECK(memory_episode_add(f.mem, &bad, &id) == TH_EUSAGE);
    close_fixture(&f);
}

static void test_utf8_repair(void)
{
    struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"plain", 5, "plain"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"a\xff"
         "b",
         3,
         "a\xef\xbf\xbd"
         "b"},
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong: two bytes bad */
        {"x\xe2\x82", 3, "x\xef\xbf\xbd"},                           /* truncated: one U+FFFD */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* a surrogate */
        {"\xf4\x90\x80\x80", 4,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* above U+10FFFF */
        {"a\0b", 3,
         "a\xef\xbf\xbd"
         "b"},                                       /* NUL */
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"}, /* an emoji */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        bool repaired = false;
        REQUIRE(utf8_repair(&b, cases[i].in, cases[i].n, &repaired) == 0);
        CHECK_EQ_STR(buf_str(&b), cases[i].out);
        CHECK(repaired == (b.len != cases[i].n || memcmp(b.data, cases[i].in, b.len) != 0));
        CHECK(utf8_valid(buf_str(&b), b.len));
        buf_free(&b);
    }
    CHECK_EQ_INT(utf8_truncate("ab\xc3\xa9", 4, 3), 2);
}

static void test_invalid_utf8_and_sizes(void)
{
    struct fixture f;
    open_fixture(&f, "utf8.db", true);
    struct memory_item it;
    memory_item_init(&it);
    it.kind = "note";
    it.title = "bro\xffken \xc3";
    it.text = "gradient \xfe\xfe clipping \xed\xa0\x80 helps";
    int64_t id;
    bool repaired = false;
    REQUIRE(memory_item_add(f.mem, &it, &id, &repaired) == 0);
    CHECK(repaired);
    struct memory_item got;
    REQUIRE(memory_item_get(f.mem, id, &got) == 0);
    CHECK(utf8_valid(got.text, strlen(got.text)));
    CHECK(utf8_valid(got.title, strlen(got.title)));
    CHECK_CONTAINS(got.text, "gradient \xef\xbf\xbd\xef\xbf\xbd clipping");
    memory_item_clear(&got);
    /* the index works on the repaired text */
    struct memory_recall_options o = {.query = "clipping \xff", .k = 5, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK(n == 1 && hits[0].item.id == id);
    memory_hits_free(hits, n);

    /* large text is fine; absurd text is refused with a clear message */
    size_t big = (size_t)2 << 20;
    char *text = malloc(MEMORY_MAX_TEXT + 2);
    REQUIRE(text);
    for (size_t i = 0; i < big; i++)
        text[i] = "abcd efgh "[i % 10];
    text[big] = '\0';
    it.title = "big";
    it.text = text;
    CHECK(memory_item_add(f.mem, &it, &id, NULL) == 0);
    memset(text, 'x', MEMORY_MAX_TEXT + 1);
    text[MEMORY_MAX_TEXT + 1] = '\0';
    CHECK(memory_item_add(f.mem, &it, &id, NULL) == TH_EUSAGE);
    CHECK_CONTAINS(error_message(), "larger than the limit of 8388608 bytes");
    free(text);
    close_fixture(&f);
}

/* ---- recall ------------------------------------------------------------------ */

/* A hand-made corpus: each query below has one right answer. */
static const struct {
    const char *kind, *title, *text;
} corpus[] = {
    {"paper", "Dropout: a simple way to prevent neural networks from overfitting",
     "Randomly dropping units during training prevents co-adaptation and reduces overfitting."},
    {"paper", "Adam: a method for stochastic optimization",
     "An optimizer with adaptive estimates of first and second moments of the gradients."},
    {"paper", "Batch normalization",
     "Normalizing layer inputs over a mini-batch reduces internal "
     "covariate shift and allows higher learning rates."},
    {"idea", "Cosine learning rate schedule",
     "Anneal the learning rate along a cosine curve with warm restarts."},
    {"insight", "Label smoothing helps calibration",
     "Soft targets made the classifier less overconfident on the spirals task."},
    {"note", "GPU memory", "Mixed precision halves activation memory on the GPU."},
    {"concept", "Attention", "Weights over positions computed from query and key similarity."},
    {"experiment", "Wider hidden layer",
     "Doubling hidden units from 16 to 32 raised accuracy from 0.91 to 0.94."},
};

static int64_t corpus_ids[sizeof corpus / sizeof corpus[0]];

static void load_corpus(struct fixture *f)
{
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++)
        corpus_ids[i] = add(f->mem, corpus[i].kind, corpus[i].title, corpus[i].text, 0.5);
}

static int64_t top_hit(struct memory *m, const char *query, const char *kind)
{
    struct memory_recall_options o = {.query = query, .kind = kind, .k = 3, .no_touch = true};
    struct memory_hit *hits = NULL;
    size_t n = 0;
    if (memory_recall(m, &o, &hits, &n) < 0) {
        fprintf(stderr, "  recall: %s\n", error_message());
        return -1;
    }
    int64_t id = n ? hits[0].item.id : 0;
    memory_hits_free(hits, n);
    return id;
}

static void test_recall_known_answers(void)
{
    struct fixture f;
    open_fixture(&f, "recall.db", true);
    load_corpus(&f);
    CHECK_EQ_INT(top_hit(f.mem, "how to stop overfitting with dropout", NULL), corpus_ids[0]);
    CHECK_EQ_INT(top_hit(f.mem, "adaptive optimizer for gradients", NULL), corpus_ids[1]);
    CHECK_EQ_INT(top_hit(f.mem, "normalization of mini-batches", NULL), corpus_ids[2]);
    CHECK_EQ_INT(top_hit(f.mem, "learning rate schedules", NULL), corpus_ids[3]);
    CHECK_EQ_INT(top_hit(f.mem, "overconfident classifier", NULL), corpus_ids[4]);
    CHECK_EQ_INT(top_hit(f.mem, "GPU memory mixed precision", NULL), corpus_ids[5]);
    CHECK_EQ_INT(top_hit(f.mem, "hidden units accuracy", NULL), corpus_ids[7]);
    /* the kind filter: "learning rate" also matches the batch-norm paper */
    CHECK_EQ_INT(top_hit(f.mem, "learning rate", "paper"), corpus_ids[2]);
    CHECK_EQ_INT(top_hit(f.mem, "learning rate", "idea"), corpus_ids[3]);
    /* nothing matches: no hits, no error */
    CHECK_EQ_INT(top_hit(f.mem, "quantum chromodynamics", NULL), 0);
    CHECK_EQ_INT(top_hit(f.mem, "", NULL), 0);

    /* the breakdown adds up */
    struct memory_recall_options o = {.query = "dropout overfitting", .k = 8, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    REQUIRE(n >= 1);
    CHECK_NEAR(hits[0].relevance, 1.0);
    CHECK(hits[0].bm25 < 0);
    CHECK_EQ_INT(hits[0].keyword_rank, 1);
    for (size_t i = 0; i < n; i++) {
        CHECK_NEAR(hits[i].score, hits[i].relevance_part + hits[i].recency_part +
                                      hits[i].importance_part + hits[i].activation_part);
        CHECK_NEAR(hits[i].relevance_part, 1.0 * hits[i].relevance);
        CHECK_NEAR(hits[i].importance_part, 0.5 * hits[i].importance);
        if (i)
            CHECK(hits[i - 1].score >= hits[i].score);
    }
    memory_hits_free(hits, n);

    /* on a small store the ranking is exactly FTS5's bm25(), deletions too */
    for (int round = 0; round < 2; round++) {
        if (round == 1)
            REQUIRE(memory_item_forget(f.mem, corpus_ids[6]) == 0);
        struct memory_recall_options all = {
            .query = "learning rate networks", .k = 8, .no_touch = true};
        REQUIRE(memory_recall(f.mem, &all, &hits, &n) == 0);
        REQUIRE(n >= 3);
        sqlite3_stmt *st;
        REQUIRE(sqlite3_prepare_v2(f.store->db,
                                   "SELECT bm25(memory_fts, 2.0, 1.0, 0.5) FROM memory_fts"
                                   " WHERE memory_fts MATCH '\"learning\" OR \"rate\" OR"
                                   " \"networks\"' AND rowid = ?1",
                                   -1, &st, NULL) == SQLITE_OK);
        for (size_t i = 0; i < n; i++) {
            if (!hits[i].keyword_rank)
                continue;
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, hits[i].item.id);
            REQUIRE(sqlite3_step(st) == SQLITE_ROW);
            CHECK(fabs(sqlite3_column_double(st, 0) - hits[i].bm25) < 1e-9);
        }
        sqlite3_finalize(st);
        memory_hits_free(hits, n);
    }
    close_fixture(&f);
}

static void test_fts_query_is_safe(void)
{
    char *q = memory_fts_query("the \"dropout\" AND (NEAR overfit*) title:x -y ^z");
    CHECK_EQ_STR(q, "\"dropout\" OR \"NEAR\" OR \"overfit\" OR \"title\" OR \"x\" OR \"y\" OR "
                    "\"z\""); /* "the" and "AND" are stop words */
    free(q);
    q = memory_fts_query("the of and");
    CHECK_EQ_STR(q, "\"the\" OR \"of\" OR \"and\"");
    free(q);
    q = memory_fts_query("!!! ... ()");
    CHECK_EQ_STR(q, "");
    free(q);
    q = memory_fts_query("Dropout dropout DROPOUT");
    CHECK_EQ_STR(q, "\"Dropout\"");
    free(q);

    struct fixture f;
    open_fixture(&f, "fts.db", true);
    load_corpus(&f);
    const char *nasty[] = {"\"unbalanced",
                           "NEAR(a b",
                           "a AND OR NOT",
                           "title:foo",
                           "*",
                           "-x",
                           "^",
                           "col : \"",
                           "\xff\xfe\xfd",
                           "caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9"};
    for (size_t i = 0; i < sizeof nasty / sizeof nasty[0]; i++)
        CHECK(top_hit(f.mem, nasty[i], NULL) >= 0);
    close_fixture(&f);
}

static void test_recency_and_importance_change_the_order(void)
{
    struct fixture f;
    open_fixture(&f, "order.db", true);
    int64_t start = fake_now;
    fake_now = start - 200 * HOUR_MS;
    int64_t old = add(f.mem, "note", "", "early stopping on validation loss", 0.9);
    fake_now = start;
    int64_t fresh = add(f.mem, "note", "", "early stopping on validation loss", 0.1);

    struct memory_recall_options o = {.query = "early stopping", .k = 2, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    /* equal relevance; recency weighs more than the importance gap */
    struct memory_params p;
    memory_params_default(&p);
    p.weight_recency = 1.0;
    p.weight_importance = 0.2;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 2);
    CHECK_EQ_INT(hits[0].item.id, fresh);
    CHECK_NEAR(hits[0].recency, 1.0);
    CHECK_NEAR(hits[1].recency, pow(0.995, 200));
    CHECK_NEAR(hits[0].relevance, hits[1].relevance);
    memory_hits_free(hits, n);

    /* importance weighs more: the old, important note comes first */
    p.weight_recency = 0.2;
    p.weight_importance = 1.0;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 2);
    CHECK_EQ_INT(hits[0].item.id, old);
    CHECK_NEAR(hits[0].score, 1.0 * hits[0].relevance + 0.2 * pow(0.995, 200) + 1.0 * 0.9);
    memory_hits_free(hits, n);

    /* a faster decay makes the same 200 hours matter more */
    p.weight_recency = 1.0;
    p.weight_importance = 1.0;
    p.recency_decay = 0.99;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 2);
    CHECK_EQ_INT(hits[0].item.id, fresh); /* 1 + 0.1 > 0.99^200 + 0.9 = 1.034 */
    CHECK_NEAR(hits[1].recency, pow(0.99, 200));
    memory_hits_free(hits, n);
    p.recency_decay = 0.999; /* 0.999^200 + 0.9 = 1.719 > 1.1 */
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 2);
    CHECK_EQ_INT(hits[0].item.id, old);
    memory_hits_free(hits, n);
    close_fixture(&f);
}

static void test_recall_updates_access_statistics(void)
{
    struct fixture f;
    open_fixture(&f, "access.db", true);
    int64_t id = add(f.mem, "note", "", "weight decay regularises", 0.5);
    fake_now += 5 * HOUR_MS;
    struct memory_recall_options o = {.query = "weight decay", .k = 1, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 1);
    CHECK_NEAR(hits[0].recency, pow(0.995, 5));
    memory_hits_free(hits, n);
    struct memory_item it;
    REQUIRE(memory_item_get(f.mem, id, &it) == 0);
    CHECK_EQ_INT(it.access_count, 0);
    memory_item_clear(&it);
    o.no_touch = false;
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 1);
    memory_hits_free(hits, n);
    REQUIRE(memory_item_get(f.mem, id, &it) == 0);
    CHECK_EQ_INT(it.access_count, 1);
    CHECK_EQ_INT(it.accessed_ms, fake_now);
    memory_item_clear(&it);
    /* recalled just now: recency is back to 1 */
    o.no_touch = true;
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0 && n == 1);
    CHECK_NEAR(hits[0].recency, 1.0);
    memory_hits_free(hits, n);
    close_fixture(&f);
}

static const struct memory_hit *find_hit(const struct memory_hit *hits, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (hits[i].item.id == id)
            return &hits[i];
    return NULL;
}

static void test_spreading_activation(void)
{
    struct fixture f;
    open_fixture(&f, "spread.db", true);
    int64_t seed = add(f.mem, "paper", "Attention is all you need", "transformer attention", 0.5);
    int64_t linked = add(f.mem, "idea", "Sinusoid positions", "positional encoding", 0.5);
    int64_t far = add(f.mem, "note", "Rotary", "rotate query and key vectors", 0.5);
    int64_t other = add(f.mem, "note", "Unrelated", "bananas are yellow", 0.5);
    REQUIRE(memory_link_set(f.mem, seed, linked, "derived_from", 1.0) == 0);
    REQUIRE(memory_link_set(f.mem, linked, far, "supports", 1.0) == 0);
    REQUIRE(memory_link_set(f.mem, linked, other, "similar", 0.5) == 0);

    struct memory_recall_options o = {.query = "attention", .k = 10, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    struct memory_params p;
    memory_params_default(&p);
    p.activation_hops = 0;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK_EQ_INT(n, 1); /* without activation only the keyword match */
    memory_hits_free(hits, n);

    p.activation_hops = 1;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK_EQ_INT(n, 2);
    const struct memory_hit *h = find_hit(hits, n, linked);
    REQUIRE(h);
    CHECK_NEAR(h->relevance, 0);
    CHECK_NEAR(h->activation, 1.0 * 0.5 * 1.0 / 1); /* energy * decay * weight / fan-out */
    CHECK_EQ_INT(h->via_id, seed);
    CHECK_EQ_STR(h->via_type, "derived_from");
    CHECK_EQ_INT(h->via_hops, 1);
    CHECK(!find_hit(hits, n, far));
    memory_hits_free(hits, n);

    p.activation_hops = 2;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    h = find_hit(hits, n, far);
    REQUIRE(h);
    /* 0.5 at the middle item, which has 3 links: 0.5 * 0.5 * 1.0 / 3 */
    CHECK_NEAR(h->activation, 0.5 * 0.5 * 1.0 / 3);
    CHECK_EQ_INT(h->via_id, linked);
    CHECK_EQ_INT(h->via_hops, 2);
    h = find_hit(hits, n, other);
    REQUIRE(h);
    CHECK_NEAR(h->activation, 0.5 * 0.5 * 0.5 / 3);
    CHECK_EQ_STR(h->via_type, "similar");
    CHECK_EQ_INT(hits[0].item.id, seed);
    memory_hits_free(hits, n);

    /* with a kind filter the seeds are of that kind, but activation passes
     * through items of any kind: note -> idea -> note */
    o.kind = "note";
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK_EQ_INT(n, 0); /* no note matches "attention", so nothing seeds */
    memory_hits_free(hits, n);
    o.query = "rotate vectors";
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK_EQ_INT(n, 2);
    CHECK(n >= 1 && hits[0].item.id == far);
    CHECK(!find_hit(hits, n, linked));
    h = find_hit(hits, n, other);
    REQUIRE(h);
    CHECK_NEAR(h->activation, 0.5 * 0.5 * 0.5 / 3);
    CHECK_EQ_INT(h->via_id, linked);
    memory_hits_free(hits, n);
    close_fixture(&f);
}

static void test_hebbian_update_and_decay(void)
{
    struct fixture f;
    open_fixture(&f, "hebb.db", true);
    int64_t a = add(f.mem, "note", "", "alpha", 0.5);
    int64_t b = add(f.mem, "note", "", "beta", 0.5);
    int64_t c = add(f.mem, "note", "", "gamma", 0.5);
    struct memory_link *links;
    size_t n;

    int64_t ab[] = {b, a, a}; /* order and duplicates do not matter */
    REQUIRE(memory_reinforce(f.mem, ab, 3) == 0);
    REQUIRE(memory_links_of(f.mem, a, &links, &n) == 0 && n == 1);
    CHECK_EQ_STR(links[0].type, "co_recalled");
    CHECK_EQ_INT(links[0].src, a); /* symmetric links are stored low id first */
    CHECK_NEAR(links[0].weight, 0.2);
    free(links);
    REQUIRE(memory_reinforce(f.mem, ab, 2) == 0);
    REQUIRE(memory_links_of(f.mem, a, &links, &n) == 0 && n == 1);
    CHECK_NEAR(links[0].weight, 0.2 + 0.2 * (1 - 0.2)); /* 0.36 */
    free(links);

    /* one half-life (30 days) later the weight has halved, lazily */
    fake_now += 30 * DAY_MS;
    REQUIRE(memory_links_of(f.mem, a, &links, &n) == 0 && n == 1);
    CHECK_NEAR(links[0].weight, 0.18);
    CHECK_NEAR(links[0].stored_weight, 0.36);
    free(links);
    /* and the update starts from the decayed weight */
    REQUIRE(memory_reinforce(f.mem, ab, 2) == 0);
    REQUIRE(memory_links_of(f.mem, a, &links, &n) == 0 && n == 1);
    CHECK_NEAR(links[0].weight, 0.18 + 0.2 * (1 - 0.18)); /* 0.344 */
    CHECK_EQ_INT(links[0].updated_ms, fake_now);
    free(links);
    /* ten days: 2^(-10/30) */
    fake_now += 10 * DAY_MS;
    REQUIRE(memory_links_of(f.mem, a, &links, &n) == 0 && n == 1);
    CHECK_NEAR(links[0].weight, 0.344 * pow(0.5, 10.0 / 30.0));
    free(links);

    /* declared links do not decay */
    REQUIRE(memory_link_set(f.mem, a, c, "supports", 0.7) == 0);
    fake_now += 365 * DAY_MS;
    REQUIRE(memory_links_of(f.mem, c, &links, &n) == 0 && n == 1);
    CHECK_NEAR(links[0].weight, 0.7);
    free(links);

    /* three used together: three pairs; an unknown id changes nothing */
    int64_t abc[] = {a, b, c};
    REQUIRE(memory_reinforce(f.mem, abc, 3) == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_links WHERE type = "
                                    "'co_recalled'"),
                 3);
    int64_t bad[] = {a, 999};
    CHECK(memory_reinforce(f.mem, bad, 2) == TH_ENOTFOUND);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_links"), 4);
    close_fixture(&f);
}

static void test_keys_references_and_forget(void)
{
    struct fixture f;
    open_fixture(&f, "keys.db", true);
    int64_t citing = add(f.mem, "paper", "Citing", "we build on earlier work", 0.5);
    REQUIRE(memory_ref_add(f.mem, citing, "doi:10.1/cited", "cites") == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_refs"), 1);
    int64_t cited = add(f.mem, "paper", "Cited", "the earlier work", 0.5);
    REQUIRE(memory_key_add(f.mem, cited, "doi:10.1/cited") == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_refs"), 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_links WHERE type = 'cites'"), 1);
    int64_t holder;
    CHECK(memory_key_find(f.mem, "doi:10.1/cited", &holder) == 0 && holder == cited);
    CHECK(memory_key_add(f.mem, citing, "doi:10.1/cited") == TH_EEXISTS);
    CHECK(memory_key_add(f.mem, cited, "doi:10.1/cited") == 0);

    /* forgetting removes the item, its links, keys and index entries */
    REQUIRE(memory_item_forget(f.mem, cited) == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_links"), 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_keys"), 0);
    CHECK_EQ_INT(top_hit(f.mem, "earlier work", NULL), citing);
    CHECK(memory_item_forget(f.mem, cited) == TH_ENOTFOUND);
    close_fixture(&f);
}

/* ---- similarity and embeddings ---------------------------------------------- */

static void test_similar_for_novelty(void)
{
    struct fixture f;
    open_fixture(&f, "similar.db", true);
    load_corpus(&f);
    int64_t idea = add(f.mem, "idea", "Dropout against overfitting",
                       "Add dropout layers to reduce overfitting of the spiral classifier", 0.5);
    add(f.mem, "idea", "Bigger batches", "Increase the batch size to speed up training", 0.5);
    double sim = 0;
    REQUIRE(memory_text_similarity(f.mem, "reduce overfitting with dropout layers",
                                   "dropout layers reduce overfitting", &sim) == 0);
    CHECK(sim > 0.9);
    REQUIRE(memory_text_similarity(f.mem, "reduce overfitting with dropout",
                                   "increase the batch size", &sim) == 0);
    CHECK_NEAR(sim, 0);
    struct memory_match *list;
    size_t n;
    REQUIRE(memory_similar(f.mem, "use dropout so the classifier overfits less", "idea", 0.3, 5,
                           &list, &n) == 0);
    REQUIRE(n >= 1);
    CHECK_EQ_INT(list[0].id, idea);
    CHECK_EQ_STR(list[0].kind, "idea");
    CHECK(list[0].similarity >= 0.3 && list[0].similarity <= 1);
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_STR(list[i].kind, "idea"); /* the dropout paper is not an idea */
    memory_matches_free(list, n);
    REQUIRE(memory_similar(f.mem, "use dropout so the classifier overfits less", "idea", 0.99, 5,
                           &list, &n) == 0);
    CHECK_EQ_INT(n, 0);
    memory_matches_free(list, n);
    close_fixture(&f);
}

/* The similarity of a and b as a memory opened afresh on name computes it
 * (nothing cached). */
static double cold_similarity(const char *name, const char *a, const char *b)
{
    struct fixture g;
    open_fixture(&g, name, false);
    double sim = -1;
    REQUIRE(memory_text_similarity(g.mem, a, b, &sim) == 0);
    close_fixture(&g);
    return sim;
}

/* The similarity of a and b after a write that changed it: different from
 * before, and what a fresh connection computes. Returns it. */
static double changed_like_cold(struct memory *m, const char *db, const char *a, const char *b,
                                double before)
{
    double sim = -1;
    REQUIRE(memory_text_similarity(m, a, b, &sim) == 0);
    CHECK(fabs(sim - before) > 1e-6);
    CHECK_NEAR(sim, cold_similarity(db, a, b));
    return sim;
}

/* Document frequencies are kept between similarity calls: every kind of
 * change to the store must still show. */
static void test_similarity_follows_every_write(void)
{
    const char *db = "simcache.db";
    const char *a = "dropout against overfitting", *b = "dropout and a larger batch";
    struct fixture f;
    open_fixture(&f, db, true);
    add(f.mem, "note", "", "dropout layers", 0.5);
    add(f.mem, "note", "", "batch size", 0.5);
    add(f.mem, "note", "", "weight decay", 0.5);
    double before, sim, inside;
    REQUIRE(memory_text_similarity(f.mem, a, b, &before) == 0);
    CHECK_NEAR(before, cold_similarity(db, a, b));

    /* this connection's writes: "dropout" grows common and weighs less */
    for (int i = 0; i < 5; i++)
        add(f.mem, "note", "", "dropout again", 0.5);
    before = changed_like_cold(f.mem, db, a, b, before);

    /* items added one at a time between calls, with a word in the title or
     * in the tags only, counted once when it is in both */
    struct memory_item it;
    memory_item_init(&it);
    it.kind = "note";
    it.title = "overfitting";
    it.text = "overfitting again";
    it.tags = "overfitting";
    int64_t tagged = 0;
    for (int i = 0; i < 3; i++) {
        REQUIRE(memory_item_add(f.mem, &it, &tagged, NULL) == 0);
        before = changed_like_cold(f.mem, db, a, b, before);
    }
    it.title = "";
    it.text = "nothing in common";
    it.tags = "batch";
    REQUIRE(memory_item_add(f.mem, &it, &tagged, NULL) == 0);
    before = changed_like_cold(f.mem, db, a, b, before);

    /* writes that leave the index alone: episodes, links, access statistics */
    struct memory_episode ep = {.kind = "debug", .text = "dropout dropout dropout"};
    int64_t eid;
    REQUIRE(memory_episode_add(f.mem, &ep, &eid) == 0);
    REQUIRE(memory_link_set(f.mem, tagged, tagged - 1, "similar", 0.5) == 0);
    struct memory_recall_options ro = {.query = "dropout", .k = 3};
    struct memory_hit *hits;
    size_t nhits;
    REQUIRE(memory_recall(f.mem, &ro, &hits, &nhits) == 0);
    memory_hits_free(hits, nhits);
    REQUIRE(memory_text_similarity(f.mem, a, b, &sim) == 0);
    CHECK_NEAR(sim, before);

    /* a changed text and a forgotten item */
    memory_item_init(&it);
    it.text = "dropout dropout overfitting";
    REQUIRE(memory_item_update(f.mem, tagged, &it) == 0);
    before = changed_like_cold(f.mem, db, a, b, before);
    REQUIRE(memory_item_forget(f.mem, tagged) == 0);
    before = changed_like_cold(f.mem, db, a, b, before);

    /* a bulk load, asked about before and after its items are indexed */
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    for (int i = 0; i < 4; i++)
        add(f.mem, "note", "", "dropout in bulk", 0.5);
    REQUIRE(memory_text_similarity(f.mem, a, b, &inside) == 0);
    REQUIRE(memory_commit(f.mem) == 0);
    before = changed_like_cold(f.mem, db, a, b, before);

    /* writes taken back by a rollback leave no trace */
    REQUIRE(memory_begin(f.mem) == 0);
    for (int i = 0; i < 5; i++)
        add(f.mem, "note", "", "overfitting overfitting", 0.5);
    REQUIRE(memory_text_similarity(f.mem, a, b, &inside) == 0);
    CHECK(fabs(inside - before) > 1e-6);
    memory_rollback(f.mem);
    REQUIRE(memory_text_similarity(f.mem, a, b, &sim) == 0);
    CHECK_NEAR(sim, before);

    /* another connection's writes */
    struct fixture g;
    open_fixture(&g, db, false);
    for (int i = 0; i < 5; i++)
        add(g.mem, "note", "", "a larger batch", 0.5);
    close_fixture(&g);
    changed_like_cold(f.mem, db, a, b, before);
    close_fixture(&f);
}

/* The first keyword hit's BM25 for query, through m and through a fresh
 * connection to db, which must agree: the word counts that keyword search
 * keeps between calls must follow every write. */
static void check_keyword_counts(struct memory *m, const char *db, const char *query)
{
    struct memory_keyword_hit *warm = NULL, *cold = NULL;
    size_t nwarm = 0, ncold = 0;
    REQUIRE(memory_keyword_search(m, query, NULL, 10, &warm, &nwarm) == 0);
    struct fixture g;
    open_fixture(&g, db, false);
    REQUIRE(memory_keyword_search(g.mem, query, NULL, 10, &cold, &ncold) == 0);
    close_fixture(&g);
    CHECK_EQ_INT((int)nwarm, (int)ncold);
    for (size_t i = 0; i < nwarm && i < ncold; i++) {
        CHECK(warm[i].id == cold[i].id);
        CHECK_NEAR(warm[i].bm25, cold[i].bm25);
    }
    free(warm);
    free(cold);
    /* the similarity of the query's words fills the kept counts too: the
     * next search after a write must not take them as they are */
    double self;
    REQUIRE(memory_text_similarity(m, query, query, &self) == 0);
}

static void test_keyword_counts_follow_writes(void)
{
    const char *db = "kwcache.db", *q = "dropout overfitting";
    struct fixture f;
    open_fixture(&f, db, true);
    add(f.mem, "note", "", "dropout against overfitting", 0.5);
    add(f.mem, "note", "", "overfitting with small data", 0.5);
    check_keyword_counts(f.mem, db, q);
    struct memory_keyword_hit *hits = NULL;
    size_t n = 0;
    REQUIRE(memory_keyword_search(f.mem, q, NULL, 10, &hits, &n) == 0);
    double first = n ? hits[0].bm25 : 0;
    free(hits);
    for (int i = 0; i < 4; i++)
        add(f.mem, "note", "", "dropout again", 0.5);
    REQUIRE(memory_keyword_search(f.mem, q, NULL, 10, &hits, &n) == 0);
    CHECK(n > 0 && fabs(hits[0].bm25 - first) > 1e-9);
    free(hits);
    check_keyword_counts(f.mem, db, q);
    int64_t id = add(f.mem, "note", "", "more overfitting", 0.5);
    check_keyword_counts(f.mem, db, q);
    struct memory_item it;
    memory_item_init(&it);
    it.text = "nothing to see";
    REQUIRE(memory_item_update(f.mem, id, &it) == 0);
    check_keyword_counts(f.mem, db, q);
    REQUIRE(memory_item_forget(f.mem, id - 1) == 0);
    check_keyword_counts(f.mem, db, q);
    REQUIRE(memory_begin(f.mem) == 0);
    add(f.mem, "note", "", "dropout dropout", 0.5);
    REQUIRE(memory_keyword_search(f.mem, q, NULL, 10, &hits, &n) == 0);
    free(hits);
    memory_rollback(f.mem);
    check_keyword_counts(f.mem, db, q);
    close_fixture(&f);
}

/* ---- similar: scanning a small bank gives what the search gives ------------- */

static uint64_t scan_rng = 88172645463325252ULL;

static unsigned scan_rand(unsigned n)
{
    scan_rng ^= scan_rng << 13;
    scan_rng ^= scan_rng >> 7;
    scan_rng ^= scan_rng << 17;
    return (unsigned)(scan_rng % n);
}

/* Words of the bank, with spellings that tokenize alike, stop words and
 * punctuation around them. */
static const char *const scan_vocab[] = {
    "dropout",  "overfitting", "batch",      "normalization", "learning", "rate",        "warmup",
    "schedule", "spiral",      "classifier", "layers",        "residual", "attention",   "networks",
    "network",  "gradient",    "clipping",   "momentum",      "weight",   "decay",       "noise",
    "label",    "smoothing",   "ensemble",   "pruning",       "sparse",   "convolution", "kernel",
    "pooling",  "mixup",       "curriculum", "optimizer",     "cosine",   "annealing",   "model",
    "Dröpout",  "LAYERS,",     "Momentum.",  "(kernel)",      "naïve",    "the",         "of",
    "and",      "with",        "a",          "drop-out",      "model's",  "42"};

/* Words no item holds, and words that make two tokens (an em dash is a
 * word byte to the query parser, a separator to the tokenizer). */
static const char *const scan_extra[] = {"zeppelin",      "quasar", "résumé", "dropout—noise",
                                         "spiral—kernel", "!!!",    "the",    "x"};

#define NSCAN_VOCAB (sizeof scan_vocab / sizeof scan_vocab[0])
#define NSCAN_EXTRA (sizeof scan_extra / sizeof scan_extra[0])

static void scan_words(char *out, size_t cap, unsigned min, unsigned spread)
{
    size_t len = 0;
    unsigned n = min + scan_rand(spread);
    out[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        const char *w = scan_rand(8) == 0 ? scan_extra[scan_rand(NSCAN_EXTRA)]
                                          : scan_vocab[scan_rand(NSCAN_VOCAB)];
        int k = snprintf(out + len, cap - len, "%s%s", len ? " " : "", w);
        if (k < 0 || (size_t)k >= cap - len)
            break;
        len += (size_t)k;
    }
}

/* memory_similar(m, ...) by whichever way it chooses, and by the keyword
 * search's candidates: the same items, in the same order, with the same
 * similarities. Returns whether the first way scanned. */
static bool check_similar_alike(struct memory *m, const char *text, const char *kind,
                                double threshold, size_t max)
{
    struct memory_match *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    long scans = m->similar_scans;
    REQUIRE(memory_similar(m, text, kind, threshold, max, &a, &na) == 0);
    bool scanned = m->similar_scans > scans;
    m->similar_no_scan = true;
    REQUIRE(memory_similar(m, text, kind, threshold, max, &b, &nb) == 0);
    m->similar_no_scan = false;
    CHECK(m->similar_scans == scans + scanned);
    if (na != nb)
        CHECK_FAIL("'%s' (kind %s, threshold %g, max %zu): %zu matches, the search gives %zu", text,
                   kind ? kind : "any", threshold, max, na, nb);
    for (size_t i = 0; i < na && i < nb; i++) {
        if (a[i].id != b[i].id || fabs(a[i].similarity - b[i].similarity) > 1e-12)
            CHECK_FAIL("'%s' (kind %s): match %zu is %lld at %.15g, the search's %lld at %.15g",
                       text, kind ? kind : "any", i, (long long)a[i].id, a[i].similarity,
                       (long long)b[i].id, b[i].similarity);
        CHECK_EQ_STR(a[i].kind, b[i].kind);
        CHECK_EQ_STR(a[i].title, b[i].title);
    }
    memory_matches_free(a, na);
    memory_matches_free(b, nb);
    return scanned;
}

static int64_t add_tagged(struct memory *m, const char *kind, const char *title, const char *text,
                          const char *tags)
{
    struct memory_item it;
    memory_item_init(&it);
    it.kind = (char *)kind;
    it.title = (char *)title;
    it.text = (char *)text;
    it.tags = (char *)tags;
    int64_t id = 0;
    REQUIRE(memory_item_add(m, &it, &id, NULL) == 0);
    return id;
}

static bool has_match(struct memory *m, const char *text, int64_t id)
{
    struct memory_match *list = NULL;
    size_t n = 0;
    REQUIRE(memory_similar(m, text, "idea", 0.01, 100, &list, &n) == 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= list[i].id == id;
    memory_matches_free(list, n);
    return found;
}

static void test_similar_scan_matches_search(void)
{
    struct fixture f;
    open_fixture(&f, "simscan.db", true);
    static const char *const kinds[] = {"idea", "idea", "idea", "note", "paper"};
    int64_t ids[64];
    char title[256], text[1024], tags[256];
    REQUIRE(memory_begin(f.mem) == 0);
    for (int i = 0; i < 64; i++) {
        scan_words(title, sizeof title, 1, 3);
        scan_words(text, sizeof text, 4, 10);
        scan_words(tags, sizeof tags, 1, 2);
        ids[i] =
            add_tagged(f.mem, kinds[i % 5], i % 7 == 3 ? "" : title, text, i % 3 == 1 ? tags : "");
    }
    REQUIRE(memory_commit(f.mem) == 0);
    /* changed and forgotten items, one of them an idea with an empty title */
    struct memory_item it;
    for (int i = 0; i < 64; i += 9) {
        memory_item_init(&it);
        scan_words(text, sizeof text, 3, 6);
        it.text = text;
        REQUIRE(memory_item_update(f.mem, ids[i], &it) == 0);
    }
    for (int i = 5; i < 64; i += 13)
        REQUIRE(memory_item_forget(f.mem, ids[i]) == 0);

    static const char *const qkinds[] = {"idea", "idea", NULL, "note"};
    static const double thresholds[] = {0.01, 0.1, 0.3, 0.6};
    static const size_t maxes[] = {1, 3, 5, 100};
    int scanned = 0, searched = 0;
    char q[2048];
    for (int i = 0; i < 300; i++) {
        scan_words(q, sizeof q, 1, 7);
        bool s = check_similar_alike(f.mem, q, qkinds[scan_rand(4)], thresholds[scan_rand(4)],
                                     maxes[scan_rand(4)]);
        scanned += s;
        searched += !s;
    }
    /* most queries scan; a word of two tokens makes one search */
    CHECK(scanned > 200);
    CHECK(searched > 0);
    /* long texts, and a posting budget that leaves words out: the scan
     * takes the items the search matches, by a kept word in any column */
    memory_set_search_limits(f.mem, 40, 0);
    scanned = searched = 0;
    for (int i = 0; i < 150; i++) {
        scan_words(q, sizeof q, 8, 40);
        bool s = check_similar_alike(f.mem, q, qkinds[scan_rand(4)], thresholds[scan_rand(2)],
                                     maxes[scan_rand(4)]);
        scanned += s;
        searched += !s;
    }
    CHECK(scanned > 75);
    memory_set_search_limits(f.mem, 0, 0);
    CHECK(check_similar_alike(f.mem, "Dropout, LAYERS and the Dröpout!", "idea", 0.01, 5));
    CHECK(check_similar_alike(f.mem, "zeppelin quasar", NULL, 0.01, 5));
    CHECK(!check_similar_alike(f.mem, "dropout—noise", "idea", 0.01, 5));
    CHECK(!check_similar_alike(f.mem, "dropout noise", "idea", 0, 5)); /* threshold 0 */
    CHECK(!check_similar_alike(f.mem, "the and of", "idea", 0, 5));    /* matches of similarity 0 */

    /* words the search leaves out: past its first 32, or beyond its posting
     * budget; a candidate by its tags */
    struct buf longq;
    buf_init(&longq, 0);
    for (size_t i = 0; i < 34; i++)
        buf_printf(&longq, "w%zu ", i);
    buf_printf(&longq, "dropout momentum");
    CHECK(check_similar_alike(f.mem, buf_str(&longq), "idea", 0.01, 5));
    buf_free(&longq);
    int64_t by_tag = add_tagged(f.mem, "idea", "", "dropout while brewing", "zymurgy");
    int64_t no_tag = add_tagged(f.mem, "idea", "", "dropout while brewing", "");
    memory_set_search_limits(f.mem, 1, 0);
    CHECK(check_similar_alike(f.mem, "dropout momentum layers kernel", "idea", 0.01, 5));
    CHECK(check_similar_alike(f.mem, "zymurgy dropout brewing", "idea", 0.01, 100));
    CHECK(has_match(f.mem, "zymurgy dropout brewing", by_tag));
    CHECK(!has_match(f.mem, "zymurgy dropout brewing", no_tag)); /* "dropout" left out */
    memory_set_search_limits(f.mem, 0, 0);
    CHECK(has_match(f.mem, "zymurgy dropout brewing", no_tag));
    /* a bulk load's items are not in the index before its commit */
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    add(f.mem, "idea", "dropout", "dropout momentum in bulk", 0.5);
    CHECK(!check_similar_alike(f.mem, "dropout momentum", "idea", 0.01, 5));
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK(check_similar_alike(f.mem, "dropout momentum", "idea", 0.01, 5));

    /* more items of the kind than the search keeps: only then the search */
    REQUIRE(memory_begin(f.mem) == 0);
    for (int i = 0; i < 50; i++) {
        scan_words(text, sizeof text, 4, 10);
        add(f.mem, "note", "", text, 0.5);
    }
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK(!check_similar_alike(f.mem, "dropout momentum", NULL, 0.01, 5));
    CHECK(check_similar_alike(f.mem, "dropout momentum", NULL, 0.01, 30)); /* keeps 120 */
    CHECK(check_similar_alike(f.mem, "dropout momentum", "idea", 0.01, 5));
    /* the search's best 100 by BM25, which weighs tags, hold none of the
     * items a scan would find */
    REQUIRE(memory_begin(f.mem) == 0);
    for (int i = 0; i < 100; i++)
        add_tagged(f.mem, "concept", "", "x", "dropout dropout dropout dropout");
    REQUIRE(memory_commit(f.mem) == 0);
    add(f.mem, "concept", "", "dropout against overfitting in rather small networks", 0.5);
    CHECK(!check_similar_alike(f.mem, "dropout", "concept", 0.01, 5));

    /* a word in more than 1,000 items is common: left out of a search with
     * rarer words, and a search of common words only narrows to items
     * holding several */
    REQUIRE(memory_begin(f.mem) == 0);
    for (int i = 0; i < 1001; i++)
        add(f.mem, "paper", "", i % 2 ? "model noise" : "model kernel", 0.5);
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK(check_similar_alike(f.mem, "model dropout", "idea", 0.01, 5));
    CHECK(check_similar_alike(f.mem, "model noise", "idea", 0.01, 5));
    CHECK(!check_similar_alike(f.mem, "model", "idea", 0.01, 5));
    for (int i = 0; i < 40; i++) {
        scan_words(q, sizeof q, 1, 12);
        check_similar_alike(f.mem, q, "idea", thresholds[scan_rand(4)], maxes[scan_rand(4)]);
    }
    close_fixture(&f);
}

static void test_embeddings_fused_by_reciprocal_rank(void)
{
    struct fixture f;
    open_fixture(&f, "embed.db", true);
    int64_t kw = add(f.mem, "note", "", "contrastive learning of representations", 0.5);
    int64_t sem = add(f.mem, "note", "", "SimCLR pulls augmented views together", 0.5);
    int64_t none = add(f.mem, "note", "", "tomato soup recipe", 0.5);
    float vk[4] = {0.5f, 0.5f, 0, 0}, vs[4] = {1, 0.1f, 0, 0}, vn[4] = {0, 0, 1, 0};
    REQUIRE(memory_embedding_put(f.mem, kw, "toy", vk, 4) == 0);
    REQUIRE(memory_embedding_put(f.mem, sem, "toy", vs, 4) == 0);
    REQUIRE(memory_embedding_put(f.mem, none, "toy", vn, 4) == 0);
    float *back;
    int dim;
    REQUIRE(memory_embedding_get(f.mem, sem, "toy", &back, &dim) == 0);
    CHECK(dim == 4 && back[0] == 1 && back[1] == 0.1f);
    free(back);
    CHECK_NEAR(memory_cosine(vk, vn, 4), 0);

    float q[4] = {1, 0, 0, 0};
    struct memory_recall_options o = {.query = "contrastive representations",
                                      .k = 3,
                                      .query_vec = q,
                                      .dim = 4,
                                      .model = "toy",
                                      .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    struct memory_params p;
    memory_params_default(&p);
    p.activation_hops = 0;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    const struct memory_hit *hk = find_hit(hits, n, kw), *hs = find_hit(hits, n, sem);
    REQUIRE(hk && hs);
    /* kw: keyword rank 1, vector rank 2; sem: vector rank 1 only */
    CHECK_EQ_INT(hk->keyword_rank, 1);
    CHECK_EQ_INT(hk->vector_rank, 2);
    CHECK_EQ_INT(hs->keyword_rank, 0);
    CHECK_EQ_INT(hs->vector_rank, 1);
    double fk = 1.0 / 61 + 1.0 / 62, fs = 1.0 / 61;
    CHECK_NEAR(hk->relevance, 1.0);
    CHECK_NEAR(hs->relevance, fs / fk);
    CHECK_NEAR(hs->cosine, memory_cosine(q, vs, 4));
    CHECK_EQ_INT(hits[0].item.id, kw);
    memory_hits_free(hits, n);

    /* similarity by embeddings: the nearest of the kind, above the threshold */
    struct memory_match *list;
    size_t nm;
    REQUIRE(memory_similar_vector(f.mem, q, 4, "toy", "note", 0.5, 5, &list, &nm) == 0);
    CHECK_EQ_INT(nm, 2);
    CHECK(nm == 2 && list[0].id == sem && list[1].id == kw);
    CHECK(nm == 2 && near(list[0].similarity, memory_cosine(q, vs, 4)));
    memory_matches_free(list, nm);
    REQUIRE(memory_similar_vector(f.mem, q, 4, "toy", "idea", 0.0, 5, &list, &nm) == 0);
    CHECK_EQ_INT(nm, 0);
    memory_matches_free(list, nm);

    /* with exact scanning off, only the keyword candidates get a cosine,
     * from the 8-bit copies ({127, 127, 0, 0}: exact here) */
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_embeddings_q8"), 3);
    p.embedding_scan_max = 0;
    memory_set_params(f.mem, &p);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK(!find_hit(hits, n, sem));
    hk = find_hit(hits, n, kw);
    CHECK(hk && hk->vector_rank == 1 && fabs(hk->cosine - memory_cosine(q, vk, 4)) < 1e-6);
    memory_hits_free(hits, n);
    /* an embedding without its copy (stored before migration 5): the float
     * vector serves */
    REQUIRE(store_exec(f.store, "DELETE FROM memory_embeddings_q8") == 0);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    hk = find_hit(hits, n, kw);
    CHECK(hk && hk->vector_rank == 1 && fabs(hk->cosine - memory_cosine(q, vk, 4)) < 1e-6);
    memory_hits_free(hits, n);
    /* replacing an embedding replaces its copy; forgetting the item drops both */
    float vk2[4] = {0, 0, 0, 2};
    REQUIRE(memory_embedding_put(f.mem, kw, "toy", vk2, 4) == 0);
    REQUIRE(memory_embedding_put(f.mem, kw, "toy", vk2, 4) == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_embeddings_q8"), 1);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    hk = find_hit(hits, n, kw);
    CHECK(hk && fabs(hk->cosine) < 1e-9);
    memory_hits_free(hits, n);
    REQUIRE(memory_item_forget(f.mem, kw) == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_embeddings_q8"), 0);
    close_fixture(&f);
}

/* The 8-bit copies against the float vectors: 768 dimensions, values
 * uniform in [-1, 1] or with a few large ones, 500 pairs. */
static void test_quantized_cosines(void)
{
    enum { DIM = 768, PAIRS = 500 };
    static float a[DIM], b[DIM];
    static signed char qb[DIM];
    uint64_t x = 12345;
    double worst = 0;
    for (int p = 0; p < PAIRS; p++) {
        for (int i = 0; i < DIM; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            a[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2 - 1);
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            /* b leans towards a, so that cosines spread over [0, 1) */
            b[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2 - 1) + a[i] * (p % 5) * 0.5f;
        }
        if (p % 2) /* a few outliers make the scale coarse */
            b[p % DIM] = 8;
        memory_quantize(b, DIM, qb);
        double err = fabs(memory_cosine_q8(a, qb, DIM) - memory_cosine(a, b, DIM));
        if (err > worst)
            worst = err;
    }
    CHECK(worst < 0.01);
    float zero[4] = {0};
    signed char qz[4];
    memory_quantize(zero, 4, qz);
    CHECK(qz[0] == 0 && qz[3] == 0 && memory_cosine_q8(a, qz, 4) == 0);
    if (getenv("TEST_MEMORY_VERBOSE"))
        fprintf(stderr, "  largest cosine error of the 8-bit copies: %.5f\n", worst);
}

/* ---- reliability --------------------------------------------------------------- */

static void test_reader_during_write(void)
{
    struct fixture w;
    open_fixture(&w, "wal.db", true);
    add(w.mem, "note", "", "committed before the reader", 0.5);
    /* the writer holds an open transaction with more rows */
    REQUIRE(memory_begin(w.mem) == 0);
    for (int i = 0; i < 50; i++)
        add(w.mem, "note", "", "written inside the transaction", 0.5);

    /* a second connection reads (and recalls) without waiting */
    struct store *rs = NULL;
    REQUIRE(store_open(&rs, db_path("wal.db")) == 0);
    sqlite3_busy_timeout(rs->db, 0); /* a blocked read would fail at once */
    struct memory *rm = NULL;
    REQUIRE(memory_new(&rm, rs, NULL) == 0);
    CHECK_EQ_INT(query_int(rs, "SELECT count(*) FROM memory_items"), 1);
    struct memory_recall_options o = {.query = "committed reader", .k = 5, .no_touch = true};
    struct memory_hit *hits;
    size_t n;
    CHECK(memory_recall(rm, &o, &hits, &n) == 0 && n == 1);
    memory_hits_free(hits, n);
    o.query = "inside the transaction";
    CHECK(memory_recall(rm, &o, &hits, &n) == 0 && n == 0);
    memory_hits_free(hits, n);
    /* a second writer cannot start while the first holds the lock */
    struct memory_item it;
    memory_item_init(&it);
    it.kind = "note";
    it.text = "blocked";
    int64_t id;
    CHECK(memory_item_add(rm, &it, &id, NULL) < 0);
    CHECK_CONTAINS(error_message(), "another thalamus process holds the database");

    REQUIRE(memory_commit(w.mem) == 0);
    CHECK_EQ_INT(query_int(rs, "SELECT count(*) FROM memory_items"), 51);
    memory_free(rm);
    store_close(rs);
    close_fixture(&w);
}

static void test_killed_writer_loses_nothing_committed(void)
{
    struct fixture f;
    open_fixture(&f, "killed.db", true);
    close_fixture(&f);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct store *s = NULL;
        struct memory *m = NULL;
        if (store_open(&s, db_path("killed.db")) < 0 || memory_new(&m, s, NULL) < 0)
            _exit(3);
        for (int i = 0; i < 20; i++) /* committed one by one */
            add(m, "note", "", "committed", 0.5);
        memory_begin_bulk(m); /* a bulk load, committed: indexed at its commit */
        for (int i = 0; i < 20; i++)
            add(m, "note", "", "bulkcommitted", 0.5);
        if (memory_commit(m) < 0)
            _exit(5);
        memory_begin_bulk(m);
        for (int i = 0; i < 20; i++)
            add(m, "note", "", "uncommitted", 0.5);
        raise(SIGKILL); /* dies inside the transaction */
        _exit(4);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    open_fixture(&f, "killed.db", false);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_items WHERE text = 'committed'"),
                 20);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_items WHERE text = 'uncommitted'"),
                 0);
    CHECK_EQ_INT(top_hit(f.mem, "uncommitted", NULL), 0);
    CHECK(top_hit(f.mem, "bulkcommitted", NULL) > 20);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_bulk"), 0);
    close_fixture(&f);
    cJSON *report = NULL;
    REQUIRE(memory_doctor(db_path("killed.db"), false, &report) == 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(report, "ok")));
    cJSON_Delete(report);
}

static bool fts_consistent(struct store *s)
{
    return store_exec(s, "INSERT INTO memory_fts(memory_fts) VALUES ('integrity-check')") == 0;
}

static void update_text(struct memory *m, int64_t id, const char *text)
{
    struct memory_item it;
    memory_item_init(&it);
    it.text = (char *)text;
    it.importance = NAN;
    if (memory_item_update(m, id, &it) < 0)
        fprintf(stderr, "  update: %s\n", error_message());
}

static void test_bulk_load_indexes_at_commit(void)
{
    struct fixture f;
    open_fixture(&f, "bulk.db", true);
    int64_t old = add(f.mem, "note", "", "original wording", 0.5);
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    CHECK(memory_in_bulk(f.mem));
    CHECK(memory_begin(f.mem) < 0); /* not nestable either */
    int64_t a = add(f.mem, "note", "", "zebra crossing", 0.5);
    int64_t b = add(f.mem, "note", "", "yak shaving", 0.5);
    int64_t c = add(f.mem, "note", "", "walrus tusk", 0.5);
    REQUIRE(a > old && b > a && c > b);
    /* the triggers left them alone: not searchable until the commit */
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_fts WHERE memory_fts MATCH "
                                    "'zebra OR yak OR walrus'"),
                 0);
    CHECK_EQ_INT(top_hit(f.mem, "zebra", NULL), 0);
    update_text(f.mem, b, "yak grooming");      /* a new item changed: indexed as it ends */
    REQUIRE(memory_item_forget(f.mem, c) == 0); /* a new item gone: never indexed */
    update_text(f.mem, old, "renamed wording"); /* an older item: the trigger at once */
    CHECK_EQ_INT(top_hit(f.mem, "renamed", NULL), old);
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK(!memory_in_bulk(f.mem));
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_bulk"), 0);
    CHECK(fts_consistent(f.store));
    CHECK_EQ_INT(top_hit(f.mem, "zebra", NULL), a);
    CHECK_EQ_INT(top_hit(f.mem, "grooming", NULL), b);
    CHECK_EQ_INT(top_hit(f.mem, "shaving", NULL), 0);
    CHECK_EQ_INT(top_hit(f.mem, "walrus", NULL), 0);
    CHECK_EQ_INT(top_hit(f.mem, "renamed", NULL), old);
    CHECK_EQ_INT(top_hit(f.mem, "original", NULL), 0);

    /* a rolled back load leaves nothing, not even its mark */
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    add(f.mem, "note", "", "quokka", 0.5);
    memory_rollback(f.mem);
    CHECK(!memory_in_bulk(f.mem));
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_bulk"), 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_items WHERE text = 'quokka'"), 0);
    CHECK(fts_consistent(f.store));
    /* and single writes are indexed by the triggers again, at once */
    int64_t d = add(f.mem, "note", "", "platypus", 0.5);
    CHECK_EQ_INT(top_hit(f.mem, "platypus", NULL), d);
    /* an ordinary transaction is not a bulk load: the triggers index */
    REQUIRE(memory_begin(f.mem) == 0);
    CHECK(!memory_in_bulk(f.mem));
    int64_t e = add(f.mem, "note", "", "echidna", 0.5);
    CHECK_EQ_INT(top_hit(f.mem, "echidna", NULL), e);
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK(fts_consistent(f.store));
    close_fixture(&f);
}

/* Item i of a small deterministic corpus: words of a 48-word vocabulary
 * drawn with a skewed distribution, so that some are common and some rare. */
static void corpus_item(int i, char *title, char *text)
{
    static const char *const vocab[] = {
        "neuron",  "synapse", "cortex",   "gradient", "kernel",  "tensor",  "lattice", "quantum",
        "photon",  "enzyme",  "protein",  "genome",   "spectra", "plasma",  "fluid",   "vortex",
        "entropy", "graph",   "manifold", "topology", "prior",   "bayes",   "markov",  "chain",
        "sampler", "decoder", "encoder",  "token",    "lexicon", "grammar", "parser",  "corpus",
        "glacier", "basalt",  "mantle",   "crust",    "tide",    "estuary", "delta",   "canyon",
        "falcon",  "heron",   "otter",    "beaver",   "lichen",  "fungus",  "orchid",  "cactus"};
    uint64_t x = (uint64_t)i * 2654435761u + 12345;
    char *outs[2] = {title, text};
    int counts[2] = {3, 12};
    for (int part = 0; part < 2; part++) {
        char *p = outs[part];
        for (int w = 0; w < counts[part]; w++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            unsigned r = (unsigned)(x % 48);
            unsigned idx = r * r / 48; /* skewed toward the first words */
            p += sprintf(p, "%s%s", w ? " " : "", vocab[idx]);
        }
    }
}

/* The corpus's items 0..n-1 with two links each, in bulk loads of batch
 * items (0: one by one, each its own transaction). */
static void load_skewed_corpus(struct memory *m, int n, int batch)
{
    for (int i = 0; i < n; i++) {
        if (batch && i % batch == 0)
            REQUIRE(memory_begin_bulk(m) == 0);
        char title[128], text[512];
        corpus_item(i, title, text);
        struct memory_item it;
        memory_item_init(&it);
        it.kind = i % 3 ? "paper" : "idea";
        it.title = title;
        it.text = text;
        it.importance = (i % 10) / 10.0;
        it.created_ms = fake_now - (int64_t)(i % 50) * DAY_MS;
        int64_t id = 0;
        REQUIRE(memory_item_add(m, &it, &id, NULL) == 0);
        REQUIRE(id == i + 1);
        if (id > 2) {
            CHECK(memory_link_set(m, id, 1 + (id * 7) % (id - 1), "cites", 1.0) == 0);
            int64_t sim = 1 + (id * 13) % (id - 1);
            if (sim != 1 + (id * 7) % (id - 1))
                CHECK(memory_link_set(m, id, sim, "similar", 0.5) == 0);
        }
        if (batch && (i % batch == batch - 1 || i == n - 1))
            REQUIRE(memory_commit(m) == 0);
    }
}

static long long pragma_ll(struct store *s, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_bulk_load_recalls_like_single_adds(void)
{
    struct fixture one, bulk;
    open_fixture(&one, "corpus-one.db", true);
    open_fixture(&bulk, "corpus-bulk.db", true);
    long long cache = pragma_ll(bulk.store, "PRAGMA cache_size");
    enum { N = 600 };
    load_skewed_corpus(one.mem, N, 0);
    load_skewed_corpus(bulk.mem, N, 250);
    /* a load gives back its page cache when it ends, by commit or by
     * rollback */
    CHECK_EQ_INT(pragma_ll(bulk.store, "PRAGMA cache_size"), cache);
    REQUIRE(memory_begin_bulk(bulk.mem) == 0);
    CHECK(pragma_ll(bulk.store, "PRAGMA cache_size") != cache);
    add(bulk.mem, "note", "", "rolled back", 0.5);
    memory_rollback(bulk.mem);
    CHECK_EQ_INT(pragma_ll(bulk.store, "PRAGMA cache_size"), cache);
    CHECK(fts_consistent(bulk.store));
    CHECK_EQ_INT(query_int(bulk.store, "SELECT count(*) FROM memory_links"),
                 query_int(one.store, "SELECT count(*) FROM memory_links"));

    /* the same hits, in the same order, with the same scores to the bit */
    static const char *const queries[] = {"neuron cortex", "lichen orchid",  "quantum photon",
                                          "cactus",        "fungus heron",   "markov chain sampler",
                                          "basalt mantle", "decoder grammar"};
    int compared = 0;
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        struct memory_recall_options o = {.query = queries[q], .k = 10, .no_touch = true};
        struct memory_hit *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        REQUIRE(memory_recall(one.mem, &o, &a, &na) == 0);
        REQUIRE(memory_recall(bulk.mem, &o, &b, &nb) == 0);
        CHECK_EQ_INT(na, nb);
        for (size_t i = 0; i < na && i < nb; i++) {
            CHECK_EQ_INT(a[i].item.id, b[i].item.id);
            CHECK(a[i].score == b[i].score);
            CHECK(a[i].bm25 == b[i].bm25 || (isnan(a[i].bm25) && isnan(b[i].bm25)));
            CHECK(a[i].activation == b[i].activation);
            compared++;
        }
        memory_hits_free(a, na);
        memory_hits_free(b, nb);
    }
    CHECK(compared >= 40);
    /* and the same neighbours for the novelty check */
    for (int i = 0; i < 4; i++) {
        char title[128], text[512];
        corpus_item(N + i, title, text);
        struct memory_match *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        REQUIRE(memory_similar(one.mem, text, NULL, 0.1, 10, &a, &na) == 0);
        REQUIRE(memory_similar(bulk.mem, text, NULL, 0.1, 10, &b, &nb) == 0);
        CHECK(na > 0);
        CHECK_EQ_INT(na, nb);
        for (size_t j = 0; j < na && j < nb; j++) {
            CHECK_EQ_INT(a[j].id, b[j].id);
            CHECK(a[j].similarity == b[j].similarity);
        }
        memory_matches_free(a, na);
        memory_matches_free(b, nb);
    }
    close_fixture(&one);
    close_fixture(&bulk);
}

static void test_upgrade_from_version_1(void)
{
    const char *name = "v1.db";
    unlink(db_path(name));
    store_reset_migrations();
    memory_register_migrations_upto(1);
    struct store *s = NULL;
    REQUIRE(store_open(&s, db_path(name)) == 0);
    int v = 0;
    CHECK(store_schema_version(s, "memory", &v) == 0 && v == 1);
    REQUIRE(store_exec(s, "INSERT INTO memory_items(uid, kind, title, text, created_ms,"
                          " accessed_ms) VALUES ('legacy0000000001', 'note', 'legacy title',"
                          " 'written by version one', 1, 1)") == 0);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM sqlite_schema WHERE name = 'memory_bulk'"), 0);
    store_close(s);

    struct fixture f;
    open_fixture(&f, name, false); /* every migration registered: 2 to 5 run */
    CHECK(store_schema_version(f.store, "memory", &v) == 0 && v == 5);
    /* migration 5: the CHECK constraints are comparisons now, and still
     * refuse what they refused (raw SQL, past the C checks) */
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE"
                                    " '%kind IN%' OR sql LIKE '%type IN%'"),
                 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE"
                                    " '%kind = ''experiment''%'"),
                 2);
    CHECK(store_exec(f.store, "INSERT INTO memory_items(uid, kind, text, created_ms,"
                              " accessed_ms) VALUES ('badkind000000001', 'poem', 't', 1, 1)") < 0);
    CHECK(store_exec(f.store,
                     "INSERT INTO memory_items(uid, kind, text, created_ms,"
                     " accessed_ms) VALUES ('goodkind00000001', 'concept', 't', 1, 1)") == 0);
    CHECK(store_exec(f.store, "INSERT INTO memory_links(src, dst, type, weight, updated_ms)"
                              " VALUES (1, 2, 'likes', 1, 1)") < 0);
    CHECK(store_exec(f.store, "INSERT INTO memory_links(src, dst, type, weight, updated_ms)"
                              " VALUES (1, 2, 'contradicts', 1, 1)") == 0);
    CHECK(store_exec(f.store, "INSERT INTO memory_episodes(uid, time_ms, kind, text)"
                              " VALUES ('badepisode000001', 1, 'dream', 't')") < 0);
    CHECK(store_exec(f.store, "INSERT INTO memory_episodes(uid, time_ms, kind, text)"
                              " VALUES ('goodepisode00001', 1, 'llm_call', 't')") == 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM pragma_integrity_check"
                                    " WHERE integrity_check = 'ok'"),
                 1);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_bulk"), 0);
    CHECK_EQ_INT(query_int(f.store, "SELECT v FROM memory_fts_config WHERE k = 'hashsize'"),
                 16777216);
    CHECK_EQ_INT(query_int(f.store, "SELECT v FROM memory_fts_config WHERE k = 'automerge'"), 8);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM sqlite_schema"
                                    " WHERE name = 'memory_items_score'"),
                 1);
    CHECK(fts_consistent(f.store));
    CHECK_EQ_INT(top_hit(f.mem, "legacy", NULL), 1);
    update_text(f.mem, 1, "rewritten after the upgrade");
    CHECK_EQ_INT(top_hit(f.mem, "rewritten", NULL), 1);
    CHECK_EQ_INT(top_hit(f.mem, "version", NULL), 0);
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    int64_t id = add(f.mem, "paper", "", "loaded in bulk after the upgrade", 0.5);
    REQUIRE(memory_commit(f.mem) == 0);
    CHECK_EQ_INT(top_hit(f.mem, "bulk", NULL), id);
    CHECK(fts_consistent(f.store));
    close_fixture(&f);
}

/* The bounds of the keyword search on large stores, made small enough for
 * a test with memory_set_search_limits(). */
static void test_keyword_search_bounds(void)
{
    struct fixture f;
    open_fixture(&f, "bounds.db", true);
    REQUIRE(memory_begin_bulk(f.mem) == 0);
    int64_t gamma = add(f.mem, "note", "", "gamma", 0.5);
    int64_t beta = add(f.mem, "note", "", "beta", 0.5);
    for (int i = 0; i < 4; i++)
        add(f.mem, "note", "", "beta filler", 0.5);
    int64_t alpha = add(f.mem, "note", "alpha alpha", "alpha", 1.0);
    for (int i = 0; i < 7; i++)
        add(f.mem, "note", "", "alpha filler", 0.5);
    /* "omega" in more than 1,000 items: a common word; the oldest matter most */
    int64_t first_omega = 0, last_omega = 0;
    for (int i = 0; i < 1010; i++) {
        last_omega = add(f.mem, "note", "", "omega", i < 500 ? 1.0 : 0.0);
        if (!first_omega)
            first_omega = last_omega;
    }
    REQUIRE(memory_commit(f.mem) == 0);

    struct memory_hit *hits;
    size_t n;
    struct memory_recall_options o = {.query = "alpha beta gamma", .k = 50, .no_touch = true};
    /* default budget: every rare word is searched, the alpha item wins */
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    REQUIRE(n > 0);
    CHECK_EQ_INT(hits[0].item.id, alpha);
    memory_hits_free(hits, n);
    /* a budget of 10 items: gamma (1) and beta (5) fit, alpha (8) does not */
    memory_set_search_limits(f.mem, 10, 0);
    REQUIRE(memory_recall(f.mem, &o, &hits, &n) == 0);
    CHECK_EQ_INT(n, 6);
    bool saw_gamma = false, saw_beta = false;
    for (size_t i = 0; i < n; i++) {
        CHECK(!strstr(hits[i].item.text, "alpha"));
        saw_gamma |= hits[i].item.id == gamma;
        saw_beta |= hits[i].item.id == beta;
    }
    CHECK(saw_gamma && saw_beta);
    memory_hits_free(hits, n);

    /* every word common: by default the whole store is searched */
    struct memory_recall_options c = {.query = "omega", .k = 5, .no_touch = true};
    memory_set_search_limits(f.mem, 0, 0);
    REQUIRE(memory_recall(f.mem, &c, &hits, &n) == 0);
    REQUIRE(n == 5);
    CHECK(hits[0].item.id >= first_omega && hits[0].item.id < first_omega + 500);
    memory_hits_free(hits, n);
    /* with a window of 20 items, only the 20 newest are */
    memory_set_search_limits(f.mem, 0, 20);
    REQUIRE(memory_recall(f.mem, &c, &hits, &n) == 0);
    REQUIRE(n == 5);
    for (size_t i = 0; i < n; i++)
        CHECK(hits[i].item.id > last_omega - 20);
    memory_hits_free(hits, n);
    close_fixture(&f);
}

static const cJSON *find_check(const cJSON *report, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(report, "checks"))
    {
        if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name))
            return c;
    }
    return NULL;
}

static void test_doctor_and_damaged_files(void)
{
    struct fixture f;
    open_fixture(&f, "doctor.db", true);
    load_corpus(&f);
    for (int i = 0; i < 300; i++)
        add(f.mem, "note", "filler", "filler text to spread the table over many pages", 0.5);
    close_fixture(&f);

    cJSON *report = NULL;
    REQUIRE(memory_doctor(db_path("doctor.db"), false, &report) == 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(report, "ok")));
    const cJSON *schema = find_check(report, "schema");
    REQUIRE(schema);
    CHECK_CONTAINS(cJSON_GetObjectItem(schema, "detail")->valuestring, "memory 5");
    cJSON_Delete(report);

    /* a stale full-text index is found */
    REQUIRE(store_open(&f.store, db_path("doctor.db")) == 0);
    REQUIRE(store_exec(f.store, "DROP TRIGGER memory_items_au;"
                                "UPDATE memory_items SET text = 'changed' WHERE id = 1") == 0);
    store_close(f.store);
    REQUIRE(memory_doctor(db_path("doctor.db"), false, &report) == 0);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(report, "ok")));
    const cJSON *fts = find_check(report, "fulltext");
    CHECK(fts && cJSON_IsFalse(cJSON_GetObjectItem(fts, "ok")));
    cJSON_Delete(report);

    /* overwrite pages in the middle of the file */
    FILE *fp = fopen(db_path("doctor.db"), "r+b");
    REQUIRE(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    REQUIRE(size > 8 * 4096);
    char junk[4096 * 3];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 37 + 11);
    fseek(fp, 4096 * 3, SEEK_SET);
    fwrite(junk, 1, sizeof junk, fp);
    fclose(fp);
    REQUIRE(memory_doctor(db_path("doctor.db"), false, &report) == 0);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(report, "ok")));
    const cJSON *integrity = find_check(report, "integrity_check");
    CHECK(integrity && cJSON_IsFalse(cJSON_GetObjectItem(integrity, "ok")));
    cJSON_Delete(report);
    REQUIRE(memory_doctor(db_path("doctor.db"), true, &report) == 0);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(report, "ok")));
    cJSON_Delete(report);

    /* a file that is not a database at all: a clear message, no crash */
    fp = fopen(db_path("garbage.db"), "wb");
    REQUIRE(fp);
    fputs("this is not a database, just some text that happens to be here\n", fp);
    for (int i = 0; i < 200; i++)
        fputs("more text more text more text\n", fp);
    fclose(fp);
    store_reset_migrations();
    memory_register_migrations();
    struct store *s = NULL;
    CHECK(store_open(&s, db_path("garbage.db")) < 0);
    CHECK_CONTAINS(error_message(), "is not a thalamus database");
    REQUIRE(memory_doctor(db_path("garbage.db"), false, &report) == 0);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(report, "ok")));
    const cJSON *file = find_check(report, "file");
    CHECK(file && cJSON_IsFalse(cJSON_GetObjectItem(file, "ok")));
    cJSON_Delete(report);
    CHECK(memory_doctor(db_path("missing.db"), false, &report) == TH_ENOTFOUND);
}

static char *read_all(FILE *f)
{
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    return s;
}

/* The export without its first line (which holds the export time). */
static char *export_body(struct memory *m, struct memory_io_counts *c)
{
    FILE *f = tmpfile();
    if (!f || memory_export(m, f, true, c) < 0) {
        if (f)
            fclose(f);
        return NULL;
    }
    char *all = read_all(f);
    fclose(f);
    char *nl = strchr(all, '\n');
    char *body = strdup(nl ? nl + 1 : "");
    free(all);
    return body;
}

static void test_export_import_round_trip(void)
{
    struct fixture a;
    open_fixture(&a, "export.db", true);
    load_corpus(&a);
    REQUIRE(memory_key_add(a.mem, corpus_ids[0], "doi:10.5555/dropout") == 0);
    REQUIRE(memory_ref_add(a.mem, corpus_ids[0], "doi:10.1/missing", "cites") == 0);
    REQUIRE(memory_link_set(a.mem, corpus_ids[0], corpus_ids[4], "supports", 0.8) == 0);
    int64_t pair[] = {corpus_ids[1], corpus_ids[3]};
    REQUIRE(memory_reinforce(a.mem, pair, 2) == 0);
    struct memory_episode ep = {.run = "r1",
                                .kind = "result",
                                .text = "accuracy 0.93 \xe2\x9c\x93",
                                .payload = "{\"accuracy\": 0.93}",
                                .importance = 0.7};
    int64_t eid;
    REQUIRE(memory_episode_add(a.mem, &ep, &eid) == 0);
    float v[3] = {0.25f, -1.5f, 3.0f};
    REQUIRE(memory_embedding_put(a.mem, corpus_ids[2], "toy", v, 3) == 0);
    struct memory_io_counts ca;
    char *first = export_body(a.mem, &ca);
    REQUIRE(first);
    CHECK_EQ_INT(ca.items, 8);
    CHECK_EQ_INT(ca.links, 2);
    CHECK_EQ_INT(ca.episodes, 1);
    CHECK_EQ_INT(ca.embeddings, 1);
    CHECK_EQ_INT(ca.keys, 1);

    FILE *f = tmpfile();
    REQUIRE(f && memory_export(a.mem, f, true, NULL) == 0);
    struct fixture b;
    open_fixture(&b, "import.db", true);
    rewind(f);
    struct memory_io_counts cb;
    REQUIRE(memory_import(b.mem, f, "export.jsonl", &cb) == 0);
    CHECK_EQ_INT(cb.items, 8);
    CHECK_EQ_INT(cb.links, 2);
    CHECK_EQ_INT(cb.episodes, 1);
    CHECK_EQ_INT(cb.embeddings, 1);
    CHECK_EQ_INT(cb.skipped, 0);
    char *second = export_body(b.mem, NULL);
    REQUIRE(second);
    CHECK_EQ_STR(second, first);
    /* importing again adds nothing */
    rewind(f);
    REQUIRE(memory_import(b.mem, f, "export.jsonl", &cb) == 0);
    CHECK_EQ_INT(cb.items, 0);
    CHECK_EQ_INT(cb.items_existing, 8);
    CHECK_EQ_INT(cb.episodes, 0);
    char *third = export_body(b.mem, NULL);
    CHECK_EQ_STR(third, first);
    fclose(f);

    /* a malformed line is skipped, the rest imported */
    f = tmpfile();
    fputs("{\"type\":\"item\",\"uid\":\"aaaaaaaaaaaa\",\"kind\":\"note\",\"text\":\"fine\"}\n"
          "{broken json\n"
          "{\"type\":\"item\",\"uid\":\"bbbbbbbbbbbb\",\"kind\":\"bogus\",\"text\":\"x\"}\n"
          "{\"type\":\"link\",\"src\":\"aaaaaaaaaaaa\",\"dst\":\"nope\",\"link_type\":\"cites\","
          "\"weight\":1,\"updated_ms\":1}\n"
          "{\"type\":\"item\",\"uid\":\"cccccccccccc\",\"kind\":\"note\",\"text\":\"also fine\"}\n",
          f);
    rewind(f);
    struct fixture c;
    open_fixture(&c, "import2.db", true);
    REQUIRE(memory_import(c.mem, f, "mixed.jsonl", &cb) == 0);
    CHECK_EQ_INT(cb.items, 2);
    CHECK_EQ_INT(cb.skipped, 3);
    fclose(f);
    free(first);
    free(second);
    free(third);
    close_fixture(&c);
    close_fixture(&b);
    close_fixture(&a);
}

static void test_stats(void)
{
    struct fixture f;
    open_fixture(&f, "stats.db", true);
    load_corpus(&f);
    cJSON *s = NULL;
    REQUIRE(memory_stats(f.mem, &s) == 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "items"), "total")->valuedouble, 8);
    CHECK_EQ_INT(cJSON_GetObjectItem(
                     cJSON_GetObjectItem(cJSON_GetObjectItem(s, "items"), "by_kind"), "paper")
                     ->valuedouble,
                 3);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "database"), "bytes")->valuedouble > 0);
    cJSON_Delete(s);
    close_fixture(&f);
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* With checkpoints deferred, commits leave the database file alone even
 * when the write-ahead log holds more than SQLite's automatic checkpoint
 * would let it (1000 pages); memory_checkpoint_due() then copies the log
 * in, and nothing is lost on the way. */
static void test_checkpoints_deferred(void)
{
    struct fixture f;
    open_fixture(&f, "deferred.db", true);
    memory_defer_checkpoints(f.mem);
    CHECK_EQ_INT(memory_checkpoint_due(f.mem), 0); /* nothing due yet */
    add(f.mem, "note", "first", "the first note", 0.5);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", db_path("deferred.db"));
    long long db_before = file_size(db_path("deferred.db"));
    /* header 32 bytes, then each page with its 24-byte frame header */
    long long frames = 0;
    int added = 1;
    char text[2200];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    while (frames < 1200 && added < 5000) {
        text[added % 2000] = 'a' + (char)(added % 26); /* no two alike */
        REQUIRE(memory_begin(f.mem) == 0);
        add(f.mem, "note", "", text, 0.5);
        REQUIRE(memory_commit(f.mem) == 0);
        added++;
        frames = (file_size(wal) - 32) / (4096 + 24);
    }
    CHECK(frames >= 1200);
    CHECK_EQ_INT((int)file_size(db_path("deferred.db")), (int)db_before);
    CHECK_EQ_INT(memory_checkpoint_due(f.mem), 0);
    CHECK(file_size(db_path("deferred.db")) > db_before);
    CHECK_EQ_INT(query_int(f.store, "SELECT count(*) FROM memory_items"), added);
    close_fixture(&f);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_item_round_trip);
    RUN(test_episodes_append_only);
    RUN(test_utf8_repair);
    RUN(test_invalid_utf8_and_sizes);
    RUN(test_recall_known_answers);
    RUN(test_fts_query_is_safe);
    RUN(test_recency_and_importance_change_the_order);
    RUN(test_recall_updates_access_statistics);
    RUN(test_spreading_activation);
    RUN(test_hebbian_update_and_decay);
    RUN(test_keys_references_and_forget);
    RUN(test_similar_for_novelty);
    RUN(test_similarity_follows_every_write);
    RUN(test_keyword_counts_follow_writes);
    RUN(test_similar_scan_matches_search);
    RUN(test_embeddings_fused_by_reciprocal_rank);
    RUN(test_quantized_cosines);
    RUN(test_reader_during_write);
    RUN(test_killed_writer_loses_nothing_committed);
    RUN(test_checkpoints_deferred);
    RUN(test_bulk_load_indexes_at_commit);
    RUN(test_bulk_load_recalls_like_single_adds);
    RUN(test_upgrade_from_version_1);
    RUN(test_keyword_search_bounds);
    RUN(test_doctor_and_damaged_files);
    RUN(test_export_import_round_trip);
    RUN(test_stats);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return check_summary();
}
