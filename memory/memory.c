/*
 * memory: the schema of the episodic and associative stores, the memory
 * handle with its statement cache, and the basic operations on items, keys,
 * references, links, episodes and embeddings (see memory.h). Recall lives in
 * memory_recall.c, similarity in memory_similar.c, export and import in
 * memory_io.c, the integrity check in memory_doctor.c.
 */
#include "memory_internal.h"

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "text.h"
#include "utf8.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

const char *const memory_item_kinds[] = {"paper",   "idea",       "insight", "note",
                                         "concept", "experiment", NULL};
const char *const memory_episode_kinds[] = {"idea",     "experiment", "result",   "debug",
                                            "analysis", "human_note", "llm_call", NULL};
const char *const memory_link_types[] = {"cites",    "derived_from", "similar", "co_recalled",
                                         "supports", "contradicts",  NULL};

/* Common English words left out of queries and similarity vectors. */
const char *const memory_stop_words[] = {
    "a",     "about", "after", "all",   "also",  "an",    "and",  "any",   "are",    "as",   "at",
    "be",    "been",  "but",   "by",    "can",   "could", "did",  "do",    "does",   "for",  "from",
    "had",   "has",   "have",  "he",    "her",   "his",   "how",  "i",     "if",     "in",   "into",
    "is",    "it",    "its",   "may",   "me",    "more",  "most", "my",    "no",     "not",  "of",
    "on",    "one",   "or",    "other", "our",   "out",   "over", "she",   "should", "so",   "some",
    "such",  "than",  "that",  "the",   "their", "them",  "then", "there", "these",  "they", "this",
    "those", "to",    "too",   "up",    "us",    "very",  "was",  "we",    "were",   "what", "when",
    "where", "which", "while", "who",   "why",   "will",  "with", "would", "you",    "your", NULL};

/* Page cache of a bulk load, in KiB (SQLite's default is 2,000 KiB). */
#define BULK_CACHE_KIB 65536

/* Page cache of the memory's connection, in KiB. */
#define RECALL_CACHE_KIB 40960

/* Pages in the write-ahead log that trigger a checkpoint: SQLite's default,
 * and the larger allowances of recall's access updates (40 MiB) and of bulk
 * loads (256 MiB). */
#define WAL_CHECKPOINT_FRAMES    1000
#define RECALL_CHECKPOINT_FRAMES 10000
#define BULK_CHECKPOINT_FRAMES   65536
#define DEFERRED_CHECKPOINT_FRAMES (8 * WAL_CHECKPOINT_FRAMES)

/* ---- schema ------------------------------------------------------------- */

/* The kinds and types in the CHECK constraints must match the lists above. */
static const struct store_migration memory_migrations[] = {
    {1, "CREATE TABLE memory_items ("
        " id INTEGER PRIMARY KEY,"
        " uid TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL CHECK (kind IN"
        "  ('paper', 'idea', 'insight', 'note', 'concept', 'experiment')),"
        " title TEXT NOT NULL DEFAULT '',"
        " text TEXT NOT NULL,"
        " tags TEXT NOT NULL DEFAULT '',"
        " source TEXT,"
        " metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),"
        " importance REAL NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),"
        " created_ms INTEGER NOT NULL,"
        " accessed_ms INTEGER NOT NULL,"
        " access_count INTEGER NOT NULL DEFAULT 0 CHECK (access_count >= 0));"
        "CREATE INDEX memory_items_kind ON memory_items(kind);"
        "CREATE TRIGGER memory_items_identity BEFORE UPDATE OF id, uid ON memory_items"
        " BEGIN SELECT RAISE(ABORT, 'the id and uid of a memory item never change'); END;"
        /* the full-text index, kept in step by triggers; access statistics
         * are updated without touching it */
        "CREATE VIRTUAL TABLE memory_fts USING fts5(title, text, tags,"
        " content='memory_items', content_rowid='id',"
        " tokenize='porter unicode61 remove_diacritics 2');"
        "INSERT INTO memory_fts(memory_fts, rank) VALUES ('rank', 'bm25(2.0, 1.0, 0.5)');"
        "CREATE VIRTUAL TABLE memory_vocab USING fts5vocab(memory_fts, 'row');"
        "CREATE TRIGGER memory_items_ai AFTER INSERT ON memory_items BEGIN"
        " INSERT INTO memory_fts(rowid, title, text, tags)"
        "  VALUES (new.id, new.title, new.text, new.tags); END;"
        "CREATE TRIGGER memory_items_ad AFTER DELETE ON memory_items BEGIN"
        " INSERT INTO memory_fts(memory_fts, rowid, title, text, tags)"
        "  VALUES ('delete', old.id, old.title, old.text, old.tags); END;"
        "CREATE TRIGGER memory_items_au AFTER UPDATE OF title, text, tags ON memory_items BEGIN"
        " INSERT INTO memory_fts(memory_fts, rowid, title, text, tags)"
        "  VALUES ('delete', old.id, old.title, old.text, old.tags);"
        " INSERT INTO memory_fts(rowid, title, text, tags)"
        "  VALUES (new.id, new.title, new.text, new.tags); END;"
        /* identity keys (doi:, arxiv:, openalex:, title:) for merging */
        "CREATE TABLE memory_keys ("
        " key TEXT PRIMARY KEY,"
        " item_id INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE"
        ") WITHOUT ROWID;"
        "CREATE INDEX memory_keys_item ON memory_keys(item_id);"
        "CREATE TABLE memory_links ("
        " src INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE,"
        " dst INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE,"
        " type TEXT NOT NULL CHECK (type IN"
        "  ('cites', 'derived_from', 'similar', 'co_recalled', 'supports', 'contradicts')),"
        " weight REAL NOT NULL CHECK (weight > 0 AND weight <= 1),"
        " updated_ms INTEGER NOT NULL,"
        " PRIMARY KEY (src, dst, type),"
        " CHECK (src <> dst)"
        ") WITHOUT ROWID;"
        "CREATE INDEX memory_links_dst ON memory_links(dst);"
        /* references to items not (yet) in memory, linked when one arrives */
        "CREATE TABLE memory_refs ("
        " key TEXT NOT NULL,"
        " item_id INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE,"
        " type TEXT NOT NULL,"
        " PRIMARY KEY (key, item_id, type)"
        ") WITHOUT ROWID;"
        "CREATE INDEX memory_refs_item ON memory_refs(item_id);"},
    {2, "CREATE TABLE memory_episodes ("
        " id INTEGER PRIMARY KEY,"
        " uid TEXT NOT NULL UNIQUE,"
        " time_ms INTEGER NOT NULL,"
        " run TEXT,"
        " node TEXT,"
        " agent TEXT,"
        " kind TEXT NOT NULL CHECK (kind IN ('idea', 'experiment', 'result', 'debug',"
        "  'analysis', 'human_note', 'llm_call')),"
        " text TEXT NOT NULL,"
        " payload TEXT CHECK (payload IS NULL OR json_valid(payload)),"
        " importance REAL NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1));"
        "CREATE INDEX memory_episodes_run ON memory_episodes(run, node, time_ms);"
        "CREATE INDEX memory_episodes_kind ON memory_episodes(kind, time_ms);"
        "CREATE INDEX memory_episodes_time ON memory_episodes(time_ms);"
        "CREATE TRIGGER memory_episodes_no_update BEFORE UPDATE ON memory_episodes"
        " BEGIN SELECT RAISE(ABORT, 'memory_episodes is append-only: an episode is never"
        " changed'); END;"
        "CREATE TRIGGER memory_episodes_no_delete BEFORE DELETE ON memory_episodes"
        " BEGIN SELECT RAISE(ABORT, 'memory_episodes is append-only: an episode is never"
        " deleted'); END;"},
    {3, "CREATE TABLE memory_embeddings ("
        " id INTEGER PRIMARY KEY,"
        " item_id INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE,"
        " model TEXT NOT NULL,"
        " dim INTEGER NOT NULL CHECK (dim > 0),"
        " vector BLOB NOT NULL CHECK (length(vector) = 4 * dim),"
        " UNIQUE (item_id, model));"
        "CREATE INDEX memory_embeddings_model ON memory_embeddings(model);"},
    /* bulk loads: while memory_bulk holds a row (only inside a transaction
     * opened by memory_begin_bulk(), never committed), the triggers leave
     * items with an id above its base alone, and memory_commit() indexes
     * them in one pass before it commits; a larger FTS5 hash table makes
     * that pass write one segment instead of several */
    {4, "CREATE TABLE memory_bulk (base INTEGER NOT NULL);"
        "DROP TRIGGER memory_items_ai;"
        "DROP TRIGGER memory_items_ad;"
        "DROP TRIGGER memory_items_au;"
        "CREATE TRIGGER memory_items_ai AFTER INSERT ON memory_items"
        " WHEN NOT EXISTS (SELECT 1 FROM memory_bulk WHERE new.id > base) BEGIN"
        " INSERT INTO memory_fts(rowid, title, text, tags)"
        "  VALUES (new.id, new.title, new.text, new.tags); END;"
        "CREATE TRIGGER memory_items_ad AFTER DELETE ON memory_items"
        " WHEN NOT EXISTS (SELECT 1 FROM memory_bulk WHERE old.id > base) BEGIN"
        " INSERT INTO memory_fts(memory_fts, rowid, title, text, tags)"
        "  VALUES ('delete', old.id, old.title, old.text, old.tags); END;"
        "CREATE TRIGGER memory_items_au AFTER UPDATE OF title, text, tags ON memory_items"
        " WHEN NOT EXISTS (SELECT 1 FROM memory_bulk WHERE old.id > base) BEGIN"
        " INSERT INTO memory_fts(memory_fts, rowid, title, text, tags)"
        "  VALUES ('delete', old.id, old.title, old.text, old.tags);"
        " INSERT INTO memory_fts(rowid, title, text, tags)"
        "  VALUES (new.id, new.title, new.text, new.tags); END;"
        "INSERT INTO memory_fts(memory_fts, rank) VALUES ('hashsize', 16777216);"},
    /* the same CHECK constraints, written as comparisons: SQLite evaluates
     * "x IN (more than two constants)" by building a temporary b-tree of
     * the constants in every statement that checks it, which made each
     * insert of an item, a link or an episode cost about 6 microseconds
     * more (a third of storing an item). The rewrite changes only the
     * text of the constraints, not what they accept or the file's format
     * (SQLite's documented procedure for changing a CHECK constraint);
     * "RESET" has this connection read the schema again, and the new index
     * (a change of schema) tells every other connection to.
     * memory_items_score holds what recall reads of every candidate (kind,
     * importance, last access) in about 35 bytes per item, where the row
     * with its text takes 500 and more: those reads stay in the page cache
     * instead of going to random places of the table. FTS5 merges its
     * segments once 8 of a size exist instead of 4: about half the merge
     * work of a large load (each entry is rewritten log8 instead of log4
     * times the number of segments), for a few more segments to read per
     * searched word. memory_embeddings_q8 holds each embedding again in
     * 8 bits a dimension (768 bytes instead of 3 KiB for 768 dimensions):
     * recall reads one for each keyword candidate, at random places, and a
     * table four times smaller stays in the page cache (see
     * memory_quantize()). */
    {5, "PRAGMA writable_schema = ON;"
        "UPDATE sqlite_schema SET sql = replace(sql,"
        " 'kind IN  (''paper'', ''idea'', ''insight'', ''note'', ''concept'', ''experiment'')',"
        " 'kind = ''paper'' OR kind = ''idea'' OR kind = ''insight'' OR kind = ''note''"
        " OR kind = ''concept'' OR kind = ''experiment''')"
        " WHERE type = 'table' AND name = 'memory_items';"
        "UPDATE sqlite_schema SET sql = replace(sql,"
        " 'type IN  (''cites'', ''derived_from'', ''similar'', ''co_recalled'', ''supports'',"
        " ''contradicts'')',"
        " 'type = ''cites'' OR type = ''derived_from'' OR type = ''similar''"
        " OR type = ''co_recalled'' OR type = ''supports'' OR type = ''contradicts''')"
        " WHERE type = 'table' AND name = 'memory_links';"
        "UPDATE sqlite_schema SET sql = replace(sql,"
        " 'kind IN (''idea'', ''experiment'', ''result'', ''debug'',  ''analysis'',"
        " ''human_note'', ''llm_call'')',"
        " 'kind = ''idea'' OR kind = ''experiment'' OR kind = ''result'' OR kind = ''debug''"
        " OR kind = ''analysis'' OR kind = ''human_note'' OR kind = ''llm_call''')"
        " WHERE type = 'table' AND name = 'memory_episodes';"
        "PRAGMA writable_schema = RESET;"
        "CREATE INDEX memory_items_score ON memory_items(id, kind, importance, accessed_ms);"
        "INSERT INTO memory_fts(memory_fts, rank) VALUES ('automerge', 8);"
        "CREATE TABLE memory_embeddings_q8 ("
        " id INTEGER PRIMARY KEY REFERENCES memory_embeddings(id) ON DELETE CASCADE,"
        " vector BLOB NOT NULL);"},
};

void memory_register_migrations(void)
{
    store_register_migrations("memory", memory_migrations,
                              sizeof memory_migrations / sizeof memory_migrations[0]);
}

void memory_register_migrations_upto(int version)
{
    size_t n = 0;
    while (n < sizeof memory_migrations / sizeof memory_migrations[0] &&
           memory_migrations[n].version <= version)
        n++;
    store_register_migrations("memory", memory_migrations, n);
}

/* ---- statements --------------------------------------------------------- */

static const char *const stmt_sql[ST_COUNT] = {
    [ST_ITEM_INSERT] = "INSERT INTO memory_items(uid, kind, title, text, tags, source, metadata,"
                       " importance, created_ms, accessed_ms, access_count)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_ITEM_GET] = "SELECT " MEMORY_ITEM_COLUMNS " FROM memory_items WHERE id = ?1",
    /* the covering index: a few pages instead of the rows' */
    [ST_ITEM_SCORE] = "SELECT kind, importance, accessed_ms FROM memory_items"
                      " INDEXED BY memory_items_score WHERE id = ?1",
    [ST_ITEM_TOUCH] = "UPDATE memory_items SET accessed_ms = max(accessed_ms, ?2),"
                      " access_count = access_count + 1 WHERE id = ?1",
    [ST_ITEM_BY_UID] = "SELECT id FROM memory_items WHERE uid = ?1",
    [ST_KEY_INSERT] = "INSERT INTO memory_keys(key, item_id) VALUES (?1, ?2)",
    [ST_KEY_FIND] = "SELECT item_id FROM memory_keys WHERE key = ?1",
    [ST_LINK_UPSERT] = "INSERT INTO memory_links(src, dst, type, weight, updated_ms)"
                       " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (src, dst, type) DO UPDATE"
                       " SET weight = excluded.weight, updated_ms = excluded.updated_ms",
    [ST_LINK_UPSERT_IF_NEWER] = "INSERT INTO memory_links(src, dst, type, weight, updated_ms)"
                                " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (src, dst, type) DO"
                                " UPDATE SET weight = excluded.weight,"
                                " updated_ms = excluded.updated_ms"
                                " WHERE excluded.updated_ms >= memory_links.updated_ms",
    [ST_LINK_GET] = "SELECT weight, updated_ms FROM memory_links"
                    " WHERE src = ?1 AND dst = ?2 AND type = ?3",
    [ST_LINKS_OF] = "SELECT src, dst, type, weight, updated_ms FROM memory_links WHERE src = ?1"
                    " UNION ALL"
                    " SELECT src, dst, type, weight, updated_ms FROM memory_links WHERE dst = ?1"
                    " LIMIT ?2",
    [ST_LINK_COUNT] = "SELECT (SELECT count(*) FROM memory_links WHERE src = ?1)"
                      " + (SELECT count(*) FROM memory_links WHERE dst = ?1)",
    [ST_EPISODE_INSERT] = "INSERT INTO memory_episodes(uid, time_ms, run, node, agent, kind,"
                          " text, payload, importance)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_EMBED_GET] = "SELECT dim, vector FROM memory_embeddings WHERE item_id = ?1 AND model = ?2",
    /* the unique index of (item_id, model) holds the id: the float row is
     * not read */
    [ST_EMBED_Q8_GET] = "SELECT q.vector FROM memory_embeddings e"
                        " JOIN memory_embeddings_q8 q ON q.id = e.id"
                        " WHERE e.item_id = ?1 AND e.model = ?2",
    [ST_EMBED_PUT] = "INSERT INTO memory_embeddings(item_id, model, dim, vector)"
                     " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (item_id, model) DO UPDATE"
                     " SET dim = excluded.dim, vector = excluded.vector RETURNING id",
    [ST_EMBED_Q8_PUT] = "INSERT OR REPLACE INTO memory_embeddings_q8(id, vector) VALUES (?1, ?2)",
    /* ?5: only items with an id above it (FTS5 seeks there in its index);
     * "+i.kind" keeps SQLite from driving the join from the kind index,
     * which would run the MATCH once for every item of the kind */
    [ST_FTS_CANDIDATES] = "SELECT rowid, thalamus_bm25(memory_fts, ?3) AS score FROM memory_fts"
                          " WHERE memory_fts MATCH ?1 AND rowid > ?5 ORDER BY score LIMIT ?2",
    [ST_FTS_CANDIDATES_KIND] = "SELECT f.rowid, thalamus_bm25(memory_fts, ?3) AS score"
                               " FROM memory_fts f JOIN memory_items i ON i.id = f.rowid"
                               " WHERE memory_fts MATCH ?1 AND f.rowid > ?5 AND +i.kind = ?4"
                               " ORDER BY score LIMIT ?2",
    [ST_MAX_ID] = "SELECT coalesce(max(id), 0) FROM memory_items",
    [ST_FTS_COUNT_CAPPED] = "SELECT count(*) FROM (SELECT rowid FROM memory_fts"
                            " WHERE memory_fts MATCH ?1 LIMIT ?2)",
    [ST_VOCAB_DOC] = "SELECT doc FROM memory_vocab WHERE term = ?1",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_REF_ADD] = "INSERT OR IGNORE INTO memory_refs(key, item_id, type) VALUES (?1, ?2, ?3)",
    [ST_REFS_FOR_KEY] = "SELECT item_id, type FROM memory_refs WHERE key = ?1",
    [ST_BULK_START] = "INSERT INTO memory_bulk(base)"
                      " SELECT coalesce(max(id), 0) FROM memory_items",
    [ST_BULK_INDEX] = "INSERT INTO memory_fts(rowid, title, text, tags)"
                      " SELECT id, title, text, tags FROM memory_items"
                      " WHERE id > (SELECT max(base) FROM memory_bulk) ORDER BY id",
};

sqlite3_stmt *memory_stmt(struct memory *m, enum memory_stmt id)
{
    sqlite3_stmt *st = m->stmts[id];
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
    }
    if (sqlite3_prepare_v3(m->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
        SQLITE_OK) {
        memory_db_error(m, "prepare a query on");
        sqlite3_finalize(st);
        return NULL;
    }
    m->stmts[id] = st;
    return st;
}

int memory_db_error(struct memory *m, const char *what)
{
    int code = sqlite3_extended_errcode(m->db) & 0xff;
    const char *hint = "";
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
        hint = "; the database is damaged: run 'thalamus doctor' for details";
    else if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
        hint = "; another thalamus process holds the database: try again when it has finished";
    else if (code == SQLITE_FULL)
        hint = "; the disk is full";
    return error_set("cannot %s '%s': %s%s", what, m->store->path, sqlite3_errmsg(m->db), hint);
}

void memory_bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

char *memory_column_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? xstrndup((const char *)s, (size_t)sqlite3_column_bytes(st, i)) : NULL;
}

int memory_clean_text(struct buf *out, const char *s, size_t max, const char *what, bool *repaired)
{
    size_t n = s ? strlen(s) : 0;
    if (n > max)
        return error_setc(TH_EUSAGE, "%s of %zu bytes is larger than the limit of %zu bytes", what,
                          n, max);
    buf_init(out, max + max / 2 + 16); /* U+FFFD (3 bytes) may replace 1 byte */
    if (utf8_repair(out, s ? s : "", n, repaired) < 0)
        return error_setc(TH_EUSAGE, "%s is too large once repaired to valid UTF-8", what);
    if (out->len > max) {
        buf_free(out);
        return error_setc(TH_EUSAGE, "%s is larger than the limit of %zu bytes once repaired", what,
                          max);
    }
    if (!out->data)
        buf_puts(out, "");
    return 0;
}

/* ---- the handle --------------------------------------------------------- */

void memory_params_default(struct memory_params *p)
{
    *p = (struct memory_params){
        .weight_relevance = 1.0,
        .weight_recency = 0.5,
        .weight_importance = 0.5,
        .weight_activation = 0.5,
        .recency_decay = 0.995,
        .candidates = 100,
        .activation_seeds = 5,
        .activation_hops = 2,
        .activation_decay = 0.5,
        .hebbian_rate = 0.2,
        .link_half_life_days = 30,
        .embedding_scan_max = 2000,
    };
}

void memory_params_from_config(struct memory_params *p, const struct config *cfg)
{
    *p = (struct memory_params){
        .weight_relevance = cfg->memory_weight_relevance,
        .weight_recency = cfg->memory_weight_recency,
        .weight_importance = cfg->memory_weight_importance,
        .weight_activation = cfg->memory_weight_activation,
        .recency_decay = cfg->memory_recency_decay,
        .candidates = cfg->memory_candidates,
        .activation_seeds = cfg->memory_activation_seeds,
        .activation_hops = cfg->memory_activation_hops,
        .activation_decay = cfg->memory_activation_decay,
        .hebbian_rate = cfg->memory_hebbian_rate,
        .link_half_life_days = cfg->memory_link_half_life_days,
        .embedding_scan_max = cfg->memory_embedding_scan_max,
    };
}

static int64_t real_clock(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A rollback takes back writes that the counts and caches of m may have
 * seen: they are read again. Runs inside SQLite: touches only m. */
static void on_rollback(void *ud)
{
    struct memory *m = ud;
    m->items_total = -1;
    memory_sim_cache_stale(m->sim);
}

/* Counts the changes of the full-text index: FTS5 keeps one row per
 * indexed item in memory_fts_docsize, written as the item is indexed or
 * taken out of the index. Runs inside SQLite: touches only m. */
static void on_update(void *ud, int op, const char *db, const char *table, sqlite3_int64 rowid)
{
    (void)op;
    (void)db;
    (void)rowid;
    struct memory *m = ud;
    if (!strcmp(table, "memory_fts_docsize"))
        m->fts_epoch++;
}

/* Checkpoints the write-ahead log as SQLite's automatic checkpoint does
 * (once it holds WAL_CHECKPOINT_FRAMES pages), except after the access
 * update of a recall or a bulk load. A checkpoint copies the log into the
 * database and syncs both, tens of milliseconds, and recall's small
 * updates would pay for one every few dozen recalls: they let the log grow
 * to RECALL_CHECKPOINT_FRAMES instead; any other write, or closing the
 * database, checkpoints it. A bulk load of 10,000 items writes 5,000
 * (100,000 items stored) to 17,000 pages (1M), most of them pages of the
 * two link b-trees that every load changes again (each link goes to a
 * random place of one of them); letting the log grow to
 * BULK_CHECKPOINT_FRAMES copies such a page into the database once for
 * several loads instead of once for each. With memory_defer_checkpoints()
 * the caller checkpoints at WAL_CHECKPOINT_FRAMES and the hook only at
 * DEFERRED_CHECKPOINT_FRAMES, should the caller not. */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int frames)
{
    struct memory *m = ud;
    int limit = m->touching            ? RECALL_CHECKPOINT_FRAMES
                : m->committing_bulk   ? BULK_CHECKPOINT_FRAMES
                : m->defer_checkpoints ? DEFERRED_CHECKPOINT_FRAMES
                                       : WAL_CHECKPOINT_FRAMES;
    m->wal_frames = frames;
    if (frames >= limit &&
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) == SQLITE_OK)
        m->wal_frames = 0;
    return SQLITE_OK;
}

void memory_defer_checkpoints(struct memory *m)
{
    m->defer_checkpoints = true;
}

int memory_checkpoint_due(struct memory *m)
{
    if (m->in_tx || m->wal_frames < WAL_CHECKPOINT_FRAMES)
        return 0;
    int rc = sqlite3_wal_checkpoint_v2(m->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        return memory_db_error(m, "checkpoint the write-ahead log of");
    m->wal_frames = 0;
    return 0;
}

int memory_new(struct memory **out, struct store *store, const struct memory_params *params)
{
    int version = 0;
    if (store_schema_version(store, "memory", &version) < 0)
        return TH_ERR;
    if (version == 0)
        return error_set("'%s' has no memory tables (memory_register_migrations() was not called "
                         "before the store was opened)",
                         store->path);
    struct memory *m = xcalloc(1, sizeof *m);
    m->store = store;
    m->db = store->db;
    m->clock = real_clock;
    m->items_total = -1;
    memory_set_search_limits(m, 0, 0);
    if (params)
        m->params = *params;
    else
        memory_params_default(&m->params);
    int rc = memory_register_rank(m);
    if (rc < 0) {
        free(m);
        return rc;
    }
    sqlite3_wal_hook(m->db, wal_hook, m);
    sqlite3_rollback_hook(m->db, on_rollback, m);
    sqlite3_update_hook(m->db, on_update, m);
    /* recall reads the document size (BM25's length normalisation) of every
     * item a query's words hold, at random places of the index, and each
     * candidate's entry in memory_items_score: a page cache that holds
     * both for a million items (about 12 and 35 MiB) spares most of those
     * reads a system call (measured at 1M items: CPU per recall 15% lower
     * than with 16 MiB; the process's RSS 47 MiB) */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA cache_size = -%d", RECALL_CACHE_KIB);
    sqlite3_exec(m->db, sql, NULL, NULL, NULL);
    *out = m;
    return 0;
}

void memory_free(struct memory *m)
{
    if (!m)
        return;
    if (m->in_tx)
        memory_rollback(m);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(m->stmts[i]);
    memory_tokenizer_free(m->tok);
    memory_sim_cache_free(m->sim);
    sqlite3_rollback_hook(m->db, NULL, NULL);
    sqlite3_update_hook(m->db, NULL, NULL);
    /* the connection outlives m: back to SQLite's own checkpointing */
    sqlite3_wal_autocheckpoint(m->db, WAL_CHECKPOINT_FRAMES);
    free(m);
}

void memory_set_params(struct memory *m, const struct memory_params *params)
{
    m->params = *params;
}

const struct memory_params *memory_get_params(const struct memory *m)
{
    return &m->params;
}

void memory_set_clock(struct memory *m, int64_t (*now_ms)(void *ud), void *ud)
{
    m->clock = now_ms ? now_ms : real_clock;
    m->clock_ud = now_ms ? ud : NULL;
}

int64_t memory_now(const struct memory *m)
{
    return m->clock(m->clock_ud);
}

void memory_forget_counts(struct memory *m)
{
    m->items_total = -1;
}

int memory_begin(struct memory *m)
{
    if (m->in_tx)
        return error_set("a memory transaction is already open");
    if (sqlite3_exec(m->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return memory_db_error(m, "start a transaction on");
    m->in_tx = true;
    return 0;
}

/* The value of a pragma that reports a number (0 if it cannot be read). */
static int64_t pragma_value(struct memory *m, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void set_pragma(struct memory *m, const char *name, long long value)
{
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA %s = %lld", name, value);
    sqlite3_exec(m->db, sql, NULL, NULL, NULL);
}

int memory_begin_bulk(struct memory *m)
{
    int rc = memory_begin(m);
    if (rc < 0)
        return rc;
    /* from here on, memory_rollback() ends the load (m->bulk) */
    m->bulk = true;
    /* a load touches index pages all over the links and keys: a larger page
     * cache for its duration saves most of the reads and rewrites */
    m->cache_before = pragma_value(m, "PRAGMA cache_size");
    set_pragma(m, "cache_size", -BULK_CACHE_KIB);
    sqlite3_stmt *st = memory_stmt(m, ST_BULK_START);
    if (!st) {
        memory_rollback(m);
        return TH_ERR;
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = memory_db_error(m, "start a bulk load on");
        sqlite3_reset(st);
        memory_rollback(m);
        return rc;
    }
    sqlite3_reset(st);
    return 0;
}

/* After the transaction of a bulk load (its commit writes from the large
 * cache): back to the page cache of before the load, its memory to the
 * system. */
static void bulk_end(struct memory *m)
{
    m->bulk = false;
    set_pragma(m, "cache_size", m->cache_before ? m->cache_before : -2000);
    sqlite3_db_release_memory(m->db);
}

bool memory_in_bulk(const struct memory *m)
{
    return m->bulk;
}

/* The end of a bulk load, inside its transaction: index the items added
 * since it began (their final text: changes made meanwhile are included,
 * deleted ones are gone) and clear the mark, so that nothing of the load
 * is ever committed without its index entries. */
static int bulk_finish(struct memory *m)
{
    sqlite3_stmt *st = memory_stmt(m, ST_BULK_INDEX);
    if (!st)
        return TH_ERR;
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : memory_db_error(m, "index the new items of");
    sqlite3_reset(st);
    if (rc == 0 && sqlite3_exec(m->db, "DELETE FROM memory_bulk", NULL, NULL, NULL) != SQLITE_OK)
        rc = memory_db_error(m, "end a bulk load on");
    return rc;
}

int memory_commit(struct memory *m)
{
    if (!m->in_tx)
        return error_set("no memory transaction is open");
    if (m->bulk) {
        int rc = bulk_finish(m);
        if (rc < 0) {
            memory_rollback(m);
            return rc;
        }
    }
    m->committing_bulk = m->bulk;
    int step = sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL);
    m->committing_bulk = false;
    if (step != SQLITE_OK) {
        int rc = memory_db_error(m, "commit to");
        memory_rollback(m);
        return rc;
    }
    m->in_tx = false;
    if (m->bulk)
        bulk_end(m);
    return 0;
}

void memory_rollback(struct memory *m)
{
    if (sqlite3_get_autocommit(m->db) == 0)
        sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
    m->in_tx = false;
    if (m->bulk)
        bulk_end(m);
    memory_forget_counts(m);
}

int memory_check_name(const char *const *list, const char *what, const char *name)
{
    for (const char *const *p = list; *p; p++)
        if (!strcmp(*p, name))
            return 0;
    struct buf known;
    buf_init(&known, 0);
    for (const char *const *p = list; *p; p++)
        buf_printf(&known, "%s%s", p == list ? "" : ", ", *p);
    const char *hint = text_closest(name, list);
    int rc =
        hint ? error_setc(TH_EUSAGE, "unknown %s '%s'; did you mean '%s'?", what, name, hint)
             : error_setc(TH_EUSAGE, "unknown %s '%s' (known: %s)", what, name, buf_str(&known));
    buf_free(&known);
    return rc;
}

/* A new uid: 48 bits of milliseconds then 80 random bits, in hex, so that
 * uids sort by creation time and index inserts stay at the end of the index
 * (a purely random uid makes bulk inserts touch random index pages). Within
 * one millisecond (or if the clock goes back) the 80 bits are the previous
 * uid's plus one, as in monotonic ULIDs: a bulk load stores thousands of
 * items per millisecond, and random bits would scatter those inserts over
 * the index again. */
static void new_uid(struct memory *m, char out[33])
{
    static unsigned char pool[4096];
    static size_t used = sizeof pool;
    static pid_t owner; /* a forked child must not reuse its parent's bytes */
    static uint64_t last_ms;
    static unsigned char last[10];
    uint64_t ms = (uint64_t)memory_now(m) & 0xffffffffffffULL;
    if (owner == getpid() && ms <= last_ms) {
        ms = last_ms;
        for (int i = 9; i >= 0 && ++last[i] == 0; i--) /* +1, carrying */
            ;
    } else {
        if (used + 10 > sizeof pool || owner != getpid()) {
            owner = getpid();
            size_t got = 0;
            while (got < sizeof pool) {
                ssize_t r = getrandom(pool + got, sizeof pool - got, 0);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0) { /* no entropy source: fall back to the clock */
                    for (size_t i = got; i < sizeof pool; i++)
                        pool[i] = (unsigned char)(rand() ^ (int)(i * 131));
                    break;
                }
                got += (size_t)r;
            }
            used = 0;
        }
        memcpy(last, pool + used, sizeof last);
        used += sizeof last;
        last[0] &= 0x7f; /* room to count up without wrapping */
        last_ms = ms;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 11; i >= 0; i--, ms >>= 4)
        out[i] = hex[ms & 15];
    for (int i = 0; i < 10; i++) {
        out[12 + 2 * i] = hex[last[i] >> 4];
        out[13 + 2 * i] = hex[last[i] & 15];
    }
    out[32] = '\0';
}

static bool valid_uid(const char *uid)
{
    size_t n = strlen(uid);
    if (n < 8 || n > 64)
        return false;
    for (const char *p = uid; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

/* Repairs and checks metadata: a JSON object (NULL gives "{}"). */
static int clean_metadata(struct buf *out, const char *json, const char *what)
{
    if (memory_clean_text(out, json ? json : "{}", (size_t)1 << 20, what, NULL) < 0)
        return TH_ERR;
    cJSON *j = cJSON_ParseWithLength(out->data, out->len);
    bool ok = j && (cJSON_IsObject(j) || strcmp(what, "payload") == 0);
    cJSON_Delete(j);
    if (!ok) {
        buf_free(out);
        return error_setc(TH_EUSAGE, "%s must be a JSON %s", what,
                          strcmp(what, "payload") ? "object" : "value");
    }
    return 0;
}

static int check_importance(double v)
{
    if (!(v >= 0 && v <= 1))
        return error_setc(TH_EUSAGE, "importance must be a number from 0 to 1, got %g", v);
    return 0;
}

/* ---- items -------------------------------------------------------------- */

void memory_item_init(struct memory_item *it)
{
    memset(it, 0, sizeof *it);
    it->importance = 0.5;
}

void memory_item_clear(struct memory_item *it)
{
    free(it->uid);
    free(it->kind);
    free(it->title);
    free(it->text);
    free(it->tags);
    free(it->source);
    free(it->metadata);
    memory_item_init(it);
}

void memory_link_from_row(struct memory *m, sqlite3_stmt *st, int64_t now, struct memory_link *l)
{
    l->src = sqlite3_column_int64(st, 0);
    l->dst = sqlite3_column_int64(st, 1);
    snprintf(l->type, sizeof l->type, "%s", (const char *)sqlite3_column_text(st, 2));
    l->stored_weight = sqlite3_column_double(st, 3);
    l->updated_ms = sqlite3_column_int64(st, 4);
    l->weight =
        memory_link_effective_weight(&m->params, l->type, l->stored_weight, l->updated_ms, now);
}

void memory_item_from_row(sqlite3_stmt *st, struct memory_item *it)
{
    it->id = sqlite3_column_int64(st, 0);
    it->uid = memory_column_dup(st, 1);
    it->kind = memory_column_dup(st, 2);
    it->title = memory_column_dup(st, 3);
    it->text = memory_column_dup(st, 4);
    it->tags = memory_column_dup(st, 5);
    it->source = memory_column_dup(st, 6);
    it->metadata = memory_column_dup(st, 7);
    it->importance = sqlite3_column_double(st, 8);
    it->created_ms = sqlite3_column_int64(st, 9);
    it->accessed_ms = sqlite3_column_int64(st, 10);
    it->access_count = (long)sqlite3_column_int64(st, 11);
}

/* The cleaned text fields of an item. */
struct clean_item {
    struct buf title, text, tags, source, metadata;
    bool has_title, has_text, has_tags, has_source, has_metadata;
};

static void clean_item_free(struct clean_item *c)
{
    buf_free(&c->title);
    buf_free(&c->text);
    buf_free(&c->tags);
    buf_free(&c->source);
    buf_free(&c->metadata);
}

static int clean_item(struct clean_item *c, const struct memory_item *it, bool *repaired)
{
    memset(c, 0, sizeof *c);
    bool r1 = false, r2 = false, r3 = false, r4 = false;
    int rc = 0;
    if ((c->has_title = it->title != NULL) &&
        (rc = memory_clean_text(&c->title, it->title, MEMORY_MAX_TITLE, "title", &r1)) < 0)
        goto fail;
    if ((c->has_text = it->text != NULL) &&
        (rc = memory_clean_text(&c->text, it->text, MEMORY_MAX_TEXT, "text", &r2)) < 0)
        goto fail;
    if ((c->has_tags = it->tags != NULL) &&
        (rc = memory_clean_text(&c->tags, it->tags, (size_t)64 << 10, "tags", &r3)) < 0)
        goto fail;
    if ((c->has_source = it->source != NULL) &&
        (rc = memory_clean_text(&c->source, it->source, 4096, "source", &r4)) < 0)
        goto fail;
    if ((c->has_metadata = it->metadata != NULL) &&
        (rc = clean_metadata(&c->metadata, it->metadata, "metadata")) < 0)
        goto fail;
    if (repaired)
        *repaired = r1 || r2 || r3 || r4;
    return 0;
fail:
    clean_item_free(c);
    return rc;
}

int memory_item_add(struct memory *m, const struct memory_item *it, int64_t *id, bool *repaired)
{
    if (!it->kind || !it->text)
        return error_setc(TH_EUSAGE, "a memory item needs a kind and a text");
    int rc = memory_check_name(memory_item_kinds, "item kind", it->kind);
    if (rc < 0 || (rc = check_importance(it->importance)) < 0)
        return rc;
    if (it->uid && !valid_uid(it->uid))
        return error_setc(TH_EUSAGE, "'%s' is not a valid uid (8 to 64 letters, digits, '-', '_')",
                          it->uid);
    struct clean_item c;
    if ((rc = clean_item(&c, it, repaired)) < 0)
        return rc;
    char uid[33];
    if (!it->uid)
        new_uid(m, uid);
    int64_t created = it->created_ms ? it->created_ms : memory_now(m);
    uint64_t epoch = m->fts_epoch;
    sqlite3_stmt *st = memory_stmt(m, ST_ITEM_INSERT);
    if (!st) {
        rc = TH_ERR;
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, it->uid ? it->uid : uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, it->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, c.has_title ? c.title.data : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, c.text.data, (int)c.text.len, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, c.has_tags ? c.tags.data : "", -1, SQLITE_STATIC);
    memory_bind_text(st, 6, c.has_source ? c.source.data : NULL);
    sqlite3_bind_text(st, 7, c.has_metadata ? c.metadata.data : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 8, it->importance);
    sqlite3_bind_int64(st, 9, created);
    sqlite3_bind_int64(st, 10, it->accessed_ms ? it->accessed_ms : created);
    sqlite3_bind_int64(st, 11, it->access_count > 0 ? it->access_count : 0);
    int step = sqlite3_step(st);
    if (step != SQLITE_DONE) {
        if (sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_UNIQUE)
            rc = error_setc(TH_EEXISTS, "an item with uid '%s' exists already",
                            it->uid ? it->uid : uid);
        else
            rc = memory_db_error(m, "add an item to");
        sqlite3_reset(st);
        goto cleanup;
    }
    *id = sqlite3_last_insert_rowid(m->db);
    sqlite3_reset(st);
    if (m->items_total >= 0)
        m->items_total++;
    const char *cols[3] = {c.has_title ? c.title.data : "", c.text.data,
                           c.has_tags ? c.tags.data : ""};
    memory_sim_item_added(m, epoch, cols);
cleanup:
    clean_item_free(&c);
    return rc;
}

int memory_item_update(struct memory *m, int64_t id, const struct memory_item *it)
{
    int rc = isnan(it->importance) ? 0 : check_importance(it->importance);
    if (rc < 0)
        return rc;
    struct clean_item c;
    if ((rc = clean_item(&c, it, NULL)) < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(m->db,
                           "UPDATE memory_items SET title = coalesce(?2, title),"
                           " text = coalesce(?3, text), tags = coalesce(?4, tags),"
                           " source = coalesce(?5, source), metadata = coalesce(?6, metadata),"
                           " importance = coalesce(?7, importance) WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "update an item in");
        goto cleanup;
    }
    sqlite3_bind_int64(st, 1, id);
    memory_bind_text(st, 2, c.has_title ? c.title.data : NULL);
    memory_bind_text(st, 3, c.has_text ? c.text.data : NULL);
    memory_bind_text(st, 4, c.has_tags ? c.tags.data : NULL);
    memory_bind_text(st, 5, c.has_source ? c.source.data : NULL);
    memory_bind_text(st, 6, c.has_metadata ? c.metadata.data : NULL);
    if (!isnan(it->importance))
        sqlite3_bind_double(st, 7, it->importance);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = memory_db_error(m, "update an item in");
    else if (sqlite3_changes(m->db) == 0)
        rc = error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)id);
cleanup:
    sqlite3_finalize(st);
    clean_item_free(&c);
    return rc;
}

int memory_item_get(struct memory *m, int64_t id, struct memory_item *out)
{
    sqlite3_stmt *st = memory_stmt(m, ST_ITEM_GET);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st), rc = 0;
    memory_item_init(out);
    if (step == SQLITE_ROW)
        memory_item_from_row(st, out);
    else if (step == SQLITE_DONE)
        rc = error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)id);
    else
        rc = memory_db_error(m, "read an item from");
    sqlite3_reset(st);
    return rc;
}

int memory_item_by_uid(struct memory *m, const char *uid, int64_t *id)
{
    sqlite3_stmt *st = memory_stmt(m, ST_ITEM_BY_UID);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    int step = sqlite3_step(st), rc = 0;
    if (step == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    else if (step == SQLITE_DONE)
        rc = error_setc(TH_ENOTFOUND, "no memory item with uid '%s'", uid);
    else
        rc = memory_db_error(m, "read an item from");
    sqlite3_reset(st);
    return rc;
}

int memory_item_forget(struct memory *m, int64_t id)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db, "DELETE FROM memory_items WHERE id = ?1", -1, &st, NULL) !=
        SQLITE_OK) {
        rc = memory_db_error(m, "forget an item in");
        goto cleanup;
    }
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = memory_db_error(m, "forget an item in");
    else if (sqlite3_changes(m->db) == 0)
        rc = error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)id);
    memory_forget_counts(m);
cleanup:
    sqlite3_finalize(st);
    return rc;
}

/* ---- keys and references ------------------------------------------------ */

int memory_key_find(struct memory *m, const char *key, int64_t *id)
{
    sqlite3_stmt *st = memory_stmt(m, ST_KEY_FIND);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int step = sqlite3_step(st), rc = 0;
    if (step == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    else if (step == SQLITE_DONE)
        rc = error_setc(TH_ENOTFOUND, "no memory item has the key '%s'", key);
    else
        rc = memory_db_error(m, "read keys from");
    sqlite3_reset(st);
    return rc;
}

/* Links every item that referred to key to id, and drops those references. */
static int resolve_refs(struct memory *m, const char *key, int64_t id)
{
    sqlite3_stmt *st = memory_stmt(m, ST_REFS_FOR_KEY);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int64_t *from = NULL;
    char(*types)[16] = NULL;
    size_t n = 0, cap = 0;
    int step, rc = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            from = xreallocarray(from, cap, sizeof *from);
            types = xreallocarray(types, cap, sizeof *types);
        }
        from[n] = sqlite3_column_int64(st, 0);
        snprintf(types[n], sizeof types[n], "%s", (const char *)sqlite3_column_text(st, 1));
        n++;
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read references from");
    sqlite3_reset(st);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (from[i] != id)
            rc = memory_link_set(m, from[i], id, types[i], 1.0);
    if (rc == 0 && n) {
        sqlite3_stmt *del = NULL;
        if (sqlite3_prepare_v2(m->db, "DELETE FROM memory_refs WHERE key = ?1", -1, &del, NULL) !=
                SQLITE_OK ||
            sqlite3_bind_text(del, 1, key, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_step(del) != SQLITE_DONE)
            rc = memory_db_error(m, "update references in");
        sqlite3_finalize(del);
    }
    free(from);
    free(types);
    return rc;
}

int memory_key_add(struct memory *m, int64_t id, const char *key)
{
    int64_t holder = 0;
    int rc = memory_key_find(m, key, &holder);
    if (rc == 0)
        return holder == id ? 0
                            : error_setc(TH_EEXISTS, "the key '%s' belongs to memory item %lld",
                                         key, (long long)holder);
    if (rc != TH_ENOTFOUND)
        return rc;
    error_clear();
    if (strlen(key) > 1024 || !utf8_valid(key, strlen(key)))
        return error_setc(TH_EUSAGE, "an item key must be valid UTF-8 of at most 1024 bytes");
    sqlite3_stmt *st = memory_stmt(m, ST_KEY_INSERT);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    int step = sqlite3_step(st);
    if (step != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_FOREIGNKEY
                 ? error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)id)
                 : memory_db_error(m, "add a key to");
        sqlite3_reset(st);
        return rc;
    }
    sqlite3_reset(st);
    return resolve_refs(m, key, id);
}

int memory_keys_of(struct memory *m, int64_t id, char ***out)
{
    sqlite3_stmt *st = NULL;
    size_t n = 0, cap = 4;
    char **v = xcalloc(cap, sizeof *v);
    int rc = 0, step;
    if (sqlite3_prepare_v2(m->db, "SELECT key FROM memory_keys WHERE item_id = ?1 ORDER BY key", -1,
                           &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read keys from");
        goto cleanup;
    }
    sqlite3_bind_int64(st, 1, id);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n + 1 >= cap)
            v = xreallocarray(v, cap *= 2, sizeof *v);
        v[n++] = memory_column_dup(st, 0);
        v[n] = NULL;
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read keys from");
cleanup:
    sqlite3_finalize(st);
    if (rc < 0) {
        memory_strv_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

void memory_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int memory_ref_add(struct memory *m, int64_t id, const char *key, const char *type)
{
    int rc = memory_check_name(memory_link_types, "link type", type);
    if (rc < 0)
        return rc;
    int64_t target = 0;
    rc = memory_key_find(m, key, &target);
    if (rc == 0)
        return target == id ? 0 : memory_link_set(m, id, target, type, 1.0);
    if (rc != TH_ENOTFOUND)
        return rc;
    error_clear();
    sqlite3_stmt *st = memory_stmt(m, ST_REF_ADD);
    if (!st)
        return TH_ERR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : memory_db_error(m, "record a reference in");
    sqlite3_reset(st);
    return rc;
}

/* ---- links -------------------------------------------------------------- */

static bool symmetric(const char *type)
{
    return !strcmp(type, "similar") || !strcmp(type, "co_recalled");
}

double memory_link_effective_weight(const struct memory_params *p, const char *type, double stored,
                                    int64_t updated_ms, int64_t now_ms)
{
    if (strcmp(type, "co_recalled") || now_ms <= updated_ms)
        return stored;
    double days = (double)(now_ms - updated_ms) / 86400000.0;
    return stored * pow(0.5, days / p->link_half_life_days);
}

static int link_write(struct memory *m, int64_t src, int64_t dst, const char *type, double weight,
                      int64_t updated_ms, bool if_newer)
{
    int rc = memory_check_name(memory_link_types, "link type", type);
    if (rc < 0)
        return rc;
    if (!(weight > 0 && weight <= 1))
        return error_setc(TH_EUSAGE, "a link's weight must be above 0 and at most 1, got %g",
                          weight);
    if (src == dst)
        return error_setc(TH_EUSAGE, "an item cannot be linked to itself");
    if (symmetric(type) && src > dst) {
        int64_t t = src;
        src = dst;
        dst = t;
    }
    sqlite3_stmt *st = memory_stmt(m, if_newer ? ST_LINK_UPSERT_IF_NEWER : ST_LINK_UPSERT);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, src);
    sqlite3_bind_int64(st, 2, dst);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, weight);
    sqlite3_bind_int64(st, 5, updated_ms);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_FOREIGNKEY
                 ? error_setc(TH_ENOTFOUND, "cannot link %lld and %lld: no such memory item",
                              (long long)src, (long long)dst)
                 : memory_db_error(m, "write a link to");
    }
    sqlite3_reset(st);
    return rc;
}

int memory_link_set(struct memory *m, int64_t src, int64_t dst, const char *type, double weight)
{
    return link_write(m, src, dst, type, weight, memory_now(m), false);
}

int memory_link_put(struct memory *m, int64_t src, int64_t dst, const char *type, double weight,
                    int64_t updated_ms)
{
    return link_write(m, src, dst, type, weight, updated_ms, true);
}

static int compare_links(const void *a, const void *b)
{
    const struct memory_link *x = a, *y = b;
    if (x->weight != y->weight)
        return x->weight > y->weight ? -1 : 1;
    if (x->src != y->src)
        return x->src < y->src ? -1 : 1;
    return x->dst < y->dst ? -1 : x->dst > y->dst;
}

int memory_links_of(struct memory *m, int64_t id, struct memory_link **out, size_t *n)
{
    sqlite3_stmt *st = memory_stmt(m, ST_LINKS_OF);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, -1);
    int64_t now = memory_now(m);
    struct memory_link *v = NULL;
    size_t len = 0, cap = 0;
    int step, rc = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap)
            v = xreallocarray(v, cap = cap ? cap * 2 : 8, sizeof *v);
        struct memory_link *l = &v[len++];
        memory_link_from_row(m, st, now, l);
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read links from");
    sqlite3_reset(st);
    if (rc < 0) {
        free(v);
        return rc;
    }
    if (len)
        qsort(v, len, sizeof *v, compare_links);
    *out = v;
    *n = len;
    return 0;
}

/* ---- episodes ----------------------------------------------------------- */

int memory_episode_add(struct memory *m, const struct memory_episode *ep, int64_t *id)
{
    if (!ep->kind || !ep->text)
        return error_setc(TH_EUSAGE, "an episode needs a kind and a text");
    int rc = memory_check_name(memory_episode_kinds, "episode kind", ep->kind);
    if (rc < 0 || (rc = check_importance(ep->importance)) < 0)
        return rc;
    if (ep->uid && !valid_uid(ep->uid))
        return error_setc(TH_EUSAGE, "'%s' is not a valid uid", ep->uid);
    struct buf text, run, node, agent, payload;
    buf_init(&text, 1);
    buf_init(&run, 1);
    buf_init(&node, 1);
    buf_init(&agent, 1);
    buf_init(&payload, 1);
    char uid[33];
    sqlite3_stmt *st = NULL;
    if ((rc = memory_clean_text(&text, ep->text, MEMORY_MAX_TEXT, "text", NULL)) < 0 ||
        (ep->run && (rc = memory_clean_text(&run, ep->run, 256, "run", NULL)) < 0) ||
        (ep->node && (rc = memory_clean_text(&node, ep->node, 256, "node", NULL)) < 0) ||
        (ep->agent && (rc = memory_clean_text(&agent, ep->agent, 256, "agent", NULL)) < 0) ||
        (ep->payload && (rc = clean_metadata(&payload, ep->payload, "payload")) < 0))
        goto cleanup;
    if (!ep->uid)
        new_uid(m, uid);
    if (!(st = memory_stmt(m, ST_EPISODE_INSERT))) {
        rc = TH_ERR;
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, ep->uid ? ep->uid : uid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ep->time_ms ? ep->time_ms : memory_now(m));
    memory_bind_text(st, 3, ep->run ? run.data : NULL);
    memory_bind_text(st, 4, ep->node ? node.data : NULL);
    memory_bind_text(st, 5, ep->agent ? agent.data : NULL);
    sqlite3_bind_text(st, 6, ep->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, text.data, (int)text.len, SQLITE_STATIC);
    memory_bind_text(st, 8, ep->payload ? payload.data : NULL);
    sqlite3_bind_double(st, 9, ep->importance);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_UNIQUE
                 ? error_setc(TH_EEXISTS, "an episode with uid '%s' exists already",
                              ep->uid ? ep->uid : uid)
                 : memory_db_error(m, "append an episode to");
    } else {
        *id = sqlite3_last_insert_rowid(m->db);
    }
    sqlite3_reset(st);
cleanup:
    buf_free(&text);
    buf_free(&run);
    buf_free(&node);
    buf_free(&agent);
    buf_free(&payload);
    return rc;
}

int memory_episodes(struct memory *m, const struct memory_episode_filter *f,
                    struct memory_episode **out, size_t *n)
{
    static const struct memory_episode_filter none = {0};
    if (!f)
        f = &none;
    if (f->kind) {
        int rc = memory_check_name(memory_episode_kinds, "episode kind", f->kind);
        if (rc < 0)
            return rc;
    }
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    struct memory_episode *v = NULL;
    size_t len = 0, cap = 0;
#define EPISODES_MATCHING                                                                          \
    "SELECT id, uid, time_ms, run, node, agent, kind, text, payload, importance"                   \
    " FROM memory_episodes WHERE (?1 IS NULL OR run = ?1) AND (?2 IS NULL OR node = ?2)"           \
    " AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR agent = ?4)"                                \
    " AND time_ms >= ?5 AND time_ms < ?6"
    const char *sql = f->newest ? "SELECT * FROM (" EPISODES_MATCHING
                                  " ORDER BY time_ms DESC, id DESC LIMIT ?7) ORDER BY time_ms, id"
                                : EPISODES_MATCHING " ORDER BY time_ms, id LIMIT ?7";
#undef EPISODES_MATCHING
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read episodes from");
        goto cleanup;
    }
    memory_bind_text(st, 1, f->run);
    memory_bind_text(st, 2, f->node);
    memory_bind_text(st, 3, f->kind);
    memory_bind_text(st, 4, f->agent);
    sqlite3_bind_int64(st, 5, f->since_ms);
    sqlite3_bind_int64(st, 6, f->until_ms ? f->until_ms : INT64_MAX);
    sqlite3_bind_int64(st, 7, f->limit > 0 ? f->limit : -1);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap)
            v = xreallocarray(v, cap = cap ? cap * 2 : 16, sizeof *v);
        struct memory_episode *e = &v[len++];
        e->id = sqlite3_column_int64(st, 0);
        e->uid = memory_column_dup(st, 1);
        e->time_ms = sqlite3_column_int64(st, 2);
        e->run = memory_column_dup(st, 3);
        e->node = memory_column_dup(st, 4);
        e->agent = memory_column_dup(st, 5);
        e->kind = memory_column_dup(st, 6);
        e->text = memory_column_dup(st, 7);
        e->payload = memory_column_dup(st, 8);
        e->importance = sqlite3_column_double(st, 9);
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read episodes from");
cleanup:
    sqlite3_finalize(st);
    if (rc < 0) {
        memory_episodes_free(v, len);
        return rc;
    }
    *out = v;
    *n = len;
    return 0;
}

void memory_episodes_free(struct memory_episode *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].uid);
        free(list[i].run);
        free(list[i].node);
        free(list[i].agent);
        free(list[i].kind);
        free(list[i].text);
        free(list[i].payload);
    }
    free(list);
}

/* ---- embeddings --------------------------------------------------------- */

int memory_embedding_put(struct memory *m, int64_t id, const char *model, const float *vec, int dim)
{
    if (dim <= 0 || dim > 65536)
        return error_setc(TH_EUSAGE, "an embedding needs 1 to 65536 dimensions, got %d", dim);
    for (int i = 0; i < dim; i++)
        if (!isfinite(vec[i]))
            return error_set("the embedding of memory item %lld has a non-finite value",
                             (long long)id);
    sqlite3_stmt *st = memory_stmt(m, ST_EMBED_PUT);
    if (!st)
        return TH_ERR;
    int rc = 0;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, dim);
    sqlite3_bind_blob(st, 4, vec, dim * (int)sizeof(float), SQLITE_STATIC);
    int step = sqlite3_step(st);
    int64_t eid = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    if (step == SQLITE_ROW)
        step = sqlite3_step(st);
    if (step != SQLITE_DONE)
        rc = sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_FOREIGNKEY
                 ? error_setc(TH_ENOTFOUND, "no memory item %lld", (long long)id)
                 : memory_db_error(m, "store an embedding in");
    sqlite3_reset(st);
    if (rc < 0)
        return rc;
    /* the 8-bit copy that recall reads */
    signed char *q = xmalloc((size_t)dim);
    memory_quantize(vec, dim, q);
    if (!(st = memory_stmt(m, ST_EMBED_Q8_PUT))) {
        free(q);
        return TH_ERR;
    }
    sqlite3_bind_int64(st, 1, eid);
    sqlite3_bind_blob(st, 2, q, dim, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = memory_db_error(m, "store an embedding in");
    sqlite3_reset(st);
    free(q);
    return rc;
}

int memory_embedding_get(struct memory *m, int64_t id, const char *model, float **vec, int *dim)
{
    sqlite3_stmt *st = memory_stmt(m, ST_EMBED_GET);
    if (!st)
        return TH_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
    int step = sqlite3_step(st), rc = 0;
    if (step == SQLITE_ROW) {
        int d = sqlite3_column_int(st, 0);
        const void *blob = sqlite3_column_blob(st, 1);
        if (d <= 0 || sqlite3_column_bytes(st, 1) != d * (int)sizeof(float) || !blob) {
            rc = error_set("the embedding of memory item %lld is malformed", (long long)id);
        } else {
            *vec = xmalloc((size_t)d * sizeof(float));
            memcpy(*vec, blob, (size_t)d * sizeof(float));
            *dim = d;
        }
    } else if (step == SQLITE_DONE) {
        rc = error_setc(TH_ENOTFOUND, "memory item %lld has no embedding by '%s'", (long long)id,
                        model);
    } else {
        rc = memory_db_error(m, "read an embedding from");
    }
    sqlite3_reset(st);
    return rc;
}

int memory_embedding_missing(struct memory *m, const char *model, long limit, int64_t **ids,
                             size_t *n)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    int64_t *v = NULL;
    size_t len = 0, cap = 0;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT id FROM memory_items i WHERE NOT EXISTS (SELECT 1 FROM"
                           " memory_embeddings e WHERE e.item_id = i.id AND e.model = ?1)"
                           " ORDER BY id LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read embeddings from");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit > 0 ? limit : -1);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap)
            v = xreallocarray(v, cap = cap ? cap * 2 : 64, sizeof *v);
        v[len++] = sqlite3_column_int64(st, 0);
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read embeddings from");
cleanup:
    sqlite3_finalize(st);
    if (rc < 0) {
        free(v);
        return rc;
    }
    *ids = v;
    *n = len;
    return 0;
}

void memory_quantize(const float *v, int dim, signed char *out)
{
    double max = 0;
    for (int i = 0; i < dim; i++)
        if (fabs(v[i]) > max)
            max = fabs(v[i]);
    for (int i = 0; i < dim; i++)
        out[i] = max > 0 ? (signed char)lrint(v[i] / max * 127.0) : 0;
}

double memory_cosine_q8(const float *a, const signed char *b, int dim)
{
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na == 0 || nb == 0)
        return 0;
    return dot / (sqrt(na) * sqrt(nb));
}

double memory_cosine(const float *a, const float *b, int dim)
{
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na == 0 || nb == 0)
        return 0;
    return dot / (sqrt(na) * sqrt(nb));
}
