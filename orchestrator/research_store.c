/*
 * research_store: the research loop's tables in the workspace store (module
 * "research") and the JSON export of a run.
 *
 * research_runs holds one row per run (status, times, provider, task,
 * baseline commit, effective settings, limits, stop reason, time used);
 * research_nodes one row per node of its experiment tree (the idea, the
 * state of the experiment, its outcome, metric, value, label and insight,
 * and its commit); research_events the decisions taken about ideas and the
 * notes. Rows are written whole (INSERT OR REPLACE) inside the caller's
 * transaction. research_export() joins them with the model usage of the
 * run. Depends on store, alloc, buf, error and cJSON.
 */
#include "research_internal.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "store.h"

static const struct store_migration research_migrations[] = {
    {1, "CREATE TABLE research_runs ("
        " id TEXT PRIMARY KEY,"
        " seq INTEGER NOT NULL UNIQUE,"
        " status TEXT NOT NULL,"
        " started TEXT NOT NULL,"
        " finished TEXT,"
        " provider TEXT,"
        " model TEXT,"
        " task_name TEXT,"
        " metric TEXT,"
        " goal TEXT,"
        " baseline TEXT NOT NULL,"
        " isolation TEXT,"
        " config TEXT,"
        " limits TEXT,"
        " stop_reason TEXT,"
        " seconds REAL NOT NULL DEFAULT 0,"
        " expansions INTEGER NOT NULL DEFAULT 0,"
        " iterations INTEGER NOT NULL DEFAULT 0,"
        " seed INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE research_nodes ("
        " run TEXT NOT NULL REFERENCES research_runs(id),"
        " id INTEGER NOT NULL,"
        " parent INTEGER,"
        " kind TEXT NOT NULL,"
        " state TEXT NOT NULL,"
        " status TEXT,"
        " title TEXT, hypothesis TEXT, rationale TEXT,"
        " idea TEXT, params TEXT, results TEXT,"
        " metric REAL, value REAL, score REAL,"
        " label TEXT, insight TEXT,"
        " commit_id TEXT, tree TEXT,"
        " debug_depth INTEGER NOT NULL DEFAULT 0,"
        " finish_order INTEGER NOT NULL DEFAULT 0,"
        " started TEXT, finished TEXT, seconds REAL,"
        " reason TEXT, traceback TEXT, output TEXT, message TEXT,"
        " PRIMARY KEY (run, id));"
        "CREATE TABLE research_events ("
        " id INTEGER PRIMARY KEY,"
        " run TEXT NOT NULL,"
        " node INTEGER,"
        " time TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " decision TEXT, reason TEXT, text TEXT);"
        "CREATE INDEX research_events_run ON research_events(run)"},
};

void research_register_migrations(void)
{
    store_register_migrations("research", research_migrations,
                              sizeof research_migrations / sizeof research_migrations[0]);
}

static int db_fail(struct store *store, const char *what)
{
    return error_set("cannot %s in '%s': %s", what, store->path, sqlite3_errmsg(store->db));
}

char *rs_now(void)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return xstrdup(s);
}

/* Binds arguments by a format: s (string or NULL), i (long), d (double, NAN
 * binds NULL), j (cJSON * printed, NULL binds NULL). */
static void bind_all(sqlite3_stmt *st, const char *fmt, va_list ap)
{
    for (int i = 1; *fmt; fmt++, i++) {
        switch (*fmt) {
        case 's': {
            /* not copied: exec_sql() unbinds before its caller goes on */
            const char *s = va_arg(ap, const char *);
            if (s)
                sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, i);
            break;
        }
        case 'i':
            sqlite3_bind_int64(st, i, va_arg(ap, long));
            break;
        case 'd': {
            double d = va_arg(ap, double);
            if (isnan(d))
                sqlite3_bind_null(st, i);
            else
                sqlite3_bind_double(st, i, d);
            break;
        }
        case 'j': {
            const cJSON *j = va_arg(ap, const cJSON *);
            char *s = j ? cJSON_PrintUnformatted(j) : NULL;
            if (s) {
                sqlite3_bind_text(st, i, s, -1, free); /* SQLite frees it */
            } else {
                sqlite3_bind_null(st, i);
            }
            break;
        }
        }
    }
}

/* Runs the write sql (a literal: its statement is kept, see store_stmt()). */
static int exec_sql(struct store *store, const char *what, const char *sql, const char *fmt, ...)
{
    int rc = 0;
    sqlite3_stmt *st = store_stmt(store, sql);
    if (!st)
        return db_fail(store, what);
    va_list ap;
    va_start(ap, fmt);
    bind_all(st, fmt, ap);
    va_end(ap);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(store, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? xstrdup((const char *)s) : NULL;
}

static double col_num(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static cJSON *col_json(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? cJSON_Parse((const char *)s) : NULL;
}

/* ---- runs ------------------------------------------------------------------- */

int rs_run_next_id(struct store *store, char **id, long *seq)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store->db, "SELECT coalesce(max(seq), 0) + 1 FROM research_runs", -1,
                           &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return db_fail(store, "read the runs");
    }
    *seq = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    *id = xasprintf("r%ld", *seq);
    return 0;
}

int rs_run_save(struct store *store, const struct rs_run *r)
{
    return exec_sql(store, "save the run",
                    "INSERT OR REPLACE INTO research_runs(id, seq, status, started, finished,"
                    " provider, model, task_name, metric, goal, baseline, isolation, config,"
                    " limits, stop_reason, seconds, expansions, iterations, seed) VALUES"
                    " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
                    " ?17, ?18, ?19)",
                    "si"
                    "ssssssssss"
                    "jjsdiii",
                    r->id, r->seq, r->status, r->started, r->finished, r->provider, r->model,
                    r->task_name, r->metric, r->goal, r->baseline, r->isolation, r->config,
                    r->limits, r->stop_reason, r->seconds, r->expansions, r->iterations, r->seed);
}

#define RUN_COLUMNS                                                                                \
    "id, seq, status, started, finished, provider, model, task_name, metric, goal, baseline,"      \
    " isolation, config, limits, stop_reason, seconds, expansions, iterations, seed"

static void run_from_row(sqlite3_stmt *st, struct rs_run *r)
{
    memset(r, 0, sizeof *r);
    r->id = col_str(st, 0);
    r->seq = (long)sqlite3_column_int64(st, 1);
    r->status = col_str(st, 2);
    r->started = col_str(st, 3);
    r->finished = col_str(st, 4);
    r->provider = col_str(st, 5);
    r->model = col_str(st, 6);
    r->task_name = col_str(st, 7);
    r->metric = col_str(st, 8);
    r->goal = col_str(st, 9);
    r->baseline = col_str(st, 10);
    r->isolation = col_str(st, 11);
    r->config = col_json(st, 12);
    r->limits = col_json(st, 13);
    r->stop_reason = col_str(st, 14);
    r->seconds = sqlite3_column_double(st, 15);
    r->expansions = (long)sqlite3_column_int64(st, 16);
    r->iterations = (long)sqlite3_column_int64(st, 17);
    r->seed = (long)sqlite3_column_int64(st, 18);
}

int rs_run_load(struct store *store, const char *id, struct rs_run *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    const char *sql = id ? "SELECT " RUN_COLUMNS " FROM research_runs WHERE id = ?1 OR seq = ?2"
                         : "SELECT " RUN_COLUMNS " FROM research_runs ORDER BY seq DESC LIMIT 1";
    if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_fail(store, "read the runs");
    if (id) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        char *end;
        long seq = strtol(id, &end, 10);
        sqlite3_bind_int64(st, 2, *end || end == id ? -1 : seq);
    }
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        run_from_row(st, out);
    else if (step == SQLITE_DONE && id)
        rc = error_setc(TH_ENOTFOUND, "no run '%s'; 'thalamus runs' lists the runs", id);
    else if (step == SQLITE_DONE)
        rc = error_setc(TH_ENOTFOUND, "no run yet; start one with 'thalamus run'");
    else
        rc = db_fail(store, "read the runs");
    sqlite3_finalize(st);
    return rc;
}

void rs_run_clear(struct rs_run *r)
{
    free(r->id);
    free(r->status);
    free(r->started);
    free(r->finished);
    free(r->provider);
    free(r->model);
    free(r->task_name);
    free(r->metric);
    free(r->goal);
    free(r->baseline);
    free(r->isolation);
    cJSON_Delete(r->config);
    cJSON_Delete(r->limits);
    free(r->stop_reason);
    memset(r, 0, sizeof *r);
}

int rs_runs_list(struct store *store, struct rs_run **out, size_t *n)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(store->db, "SELECT " RUN_COLUMNS " FROM research_runs ORDER BY seq", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(store, "read the runs");
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        run_from_row(st, &(*out)[(*n)++]);
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) {
        rs_runs_free(*out, *n);
        *out = NULL;
        *n = 0;
        return db_fail(store, "read the runs");
    }
    return 0;
}

void rs_runs_free(struct rs_run *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rs_run_clear(&list[i]);
    free(list);
}

/* ---- nodes ------------------------------------------------------------------ */

void rs_node_init(struct rs_node *n)
{
    memset(n, 0, sizeof *n);
    n->parent = -1;
    n->metric = n->value = n->score = n->seconds = NAN;
}

void rs_node_clear(struct rs_node *n)
{
    free(n->kind);
    free(n->state);
    free(n->status);
    free(n->title);
    free(n->hypothesis);
    free(n->rationale);
    cJSON_Delete(n->idea);
    cJSON_Delete(n->params);
    cJSON_Delete(n->results);
    free(n->label);
    free(n->insight);
    free(n->commit);
    free(n->tree);
    free(n->started);
    free(n->finished);
    free(n->reason);
    free(n->traceback);
    free(n->output);
    free(n->message);
    rs_node_init(n);
}

int rs_node_save(struct store *store, const char *run, const struct rs_node *n)
{
    return exec_sql(
        store, "save an experiment",
        "INSERT OR REPLACE INTO research_nodes(run, id, parent, kind, state, status, title,"
        " hypothesis, rationale, idea, params, results, metric, value, score, label, insight,"
        " commit_id, tree, debug_depth, finish_order, started, finished, seconds, reason,"
        " traceback, output, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
        " ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
        "siissssss"
        "jjjdddssss"
        "iissdssss",
        run, n->id, n->parent, n->kind, n->state, n->status, n->title, n->hypothesis, n->rationale,
        n->idea, n->params, n->results, n->metric, n->value, n->score, n->label, n->insight,
        n->commit, n->tree, n->debug_depth, n->order, n->started, n->finished, n->seconds,
        n->reason, n->traceback, n->output, n->message);
}

int rs_nodes_load(struct store *store, const char *run, struct rs_node **out, size_t *count)
{
    sqlite3_stmt *st = NULL;
    *out = NULL;
    *count = 0;
    if (sqlite3_prepare_v2(store->db,
                           "SELECT id, parent, kind, state, status, title, hypothesis, rationale,"
                           " idea, params, results, metric, value, score, label, insight,"
                           " commit_id, tree, debug_depth, finish_order, started, finished,"
                           " seconds, reason, traceback, output, message FROM research_nodes"
                           " WHERE run = ?1 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(store, "read the experiments");
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct rs_node *n = &(*out)[(*count)++];
        rs_node_init(n);
        n->id = (long)sqlite3_column_int64(st, 0);
        n->parent =
            sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : (long)sqlite3_column_int64(st, 1);
        n->kind = col_str(st, 2);
        n->state = col_str(st, 3);
        n->status = col_str(st, 4);
        n->title = col_str(st, 5);
        n->hypothesis = col_str(st, 6);
        n->rationale = col_str(st, 7);
        n->idea = col_json(st, 8);
        n->params = col_json(st, 9);
        n->results = col_json(st, 10);
        n->metric = col_num(st, 11);
        n->value = col_num(st, 12);
        n->score = col_num(st, 13);
        n->label = col_str(st, 14);
        n->insight = col_str(st, 15);
        n->commit = col_str(st, 16);
        n->tree = col_str(st, 17);
        n->debug_depth = (long)sqlite3_column_int64(st, 18);
        n->order = (long)sqlite3_column_int64(st, 19);
        n->started = col_str(st, 20);
        n->finished = col_str(st, 21);
        n->seconds = col_num(st, 22);
        n->reason = col_str(st, 23);
        n->traceback = col_str(st, 24);
        n->output = col_str(st, 25);
        n->message = col_str(st, 26);
    }
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) {
        rs_nodes_free(*out, *count);
        *out = NULL;
        *count = 0;
        return db_fail(store, "read the experiments");
    }
    for (size_t i = 0; i < *count; i++)
        if ((*out)[i].id != (long)i) {
            rs_nodes_free(*out, *count);
            *out = NULL;
            *count = 0;
            return error_set("the experiments of run '%s' are not numbered 0..n in '%s'", run,
                             store->path);
        }
    return 0;
}

void rs_nodes_free(struct rs_node *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rs_node_clear(&list[i]);
    free(list);
}

const char *rs_node_status(const struct rs_node *n)
{
    if (n->state && !strcmp(n->state, "done") && n->status)
        return n->status;
    if (n->state && !strcmp(n->state, "pending"))
        return "pending";
    return "running";
}

int rs_event_add(struct store *store, const char *run, long node, const char *kind,
                 const char *decision, const char *reason, const char *text)
{
    char *now = rs_now();
    int rc = exec_sql(store, "record a decision",
                      "INSERT INTO research_events(run, node, time, kind, decision, reason, text)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                      "sisssss", run, node, now, kind, decision, reason, text);
    free(now);
    return rc;
}

int rs_usage(struct store *store, const char *run, long *tokens, double *cost)
{
    sqlite3_stmt *st = NULL;
    *tokens = 0;
    *cost = 0;
    /* the llm module may not be registered (review commands): no usage then */
    if (sqlite3_prepare_v2(store->db,
                           "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0),"
                           " sum(cost), count(*), count(cost) FROM llm_usage WHERE run = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *tokens = (long)sqlite3_column_int64(st, 0);
        long calls = (long)sqlite3_column_int64(st, 2), priced = (long)sqlite3_column_int64(st, 3);
        *cost = calls == 0 ? 0 : (priced < calls ? NAN : sqlite3_column_double(st, 1));
    }
    sqlite3_finalize(st);
    return 0;
}

double research_value(const char *goal, const char *status, double metric, double baseline)
{
    if (!status || strcmp(status, "ok") || isnan(metric) || isinf(metric))
        return 0;
    double sign = goal && !strcmp(goal, "minimize") ? -1 : 1;
    double gain;
    if (isnan(baseline))
        gain = sign * metric;
    else
        gain = sign * (metric - baseline) / fmax(fabs(baseline), 1e-9);
    /* 0.5 at the baseline, 0.73 for 10 % better, 0.27 for 10 % worse; the
     * lowest value, 0, is kept for failures */
    double v = 1 / (1 + exp(-10 * gain));
    return fmin(fmax(v, 1e-6), 1);
}

bool rs_run_active(struct store *store, const char *run)
{
    char *dir = xstrdup(store->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    char *path = xasprintf("%s/runs/%s/lock", slash ? dir : ".", run);
    free(dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return false;
    bool held = flock(fd, LOCK_SH | LOCK_NB) < 0;
    close(fd);
    return held;
}

/* ---- export ----------------------------------------------------------------- */

static void add_str(cJSON *o, const char *key, const char *s)
{
    if (s)
        cJSON_AddStringToObject(o, key, s);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_num(cJSON *o, const char *key, double d)
{
    if (isnan(d) || isinf(d))
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, d);
}

static const char *node_id(const struct rs_node *n, char buf[32])
{
    snprintf(buf, 32, "n%ld", n->id);
    return buf;
}

static const struct rs_node *best_node(const struct rs_run *run, const struct rs_node *nodes,
                                       size_t n)
{
    const struct rs_node *best = NULL;
    double sign = run->goal && !strcmp(run->goal, "minimize") ? -1 : 1;
    for (size_t i = 0; i < n; i++) {
        const struct rs_node *x = &nodes[i];
        if (strcmp(rs_node_status(x), "ok") || isnan(x->metric))
            continue;
        if (!best || sign * x->metric > sign * best->metric)
            best = x;
    }
    return best;
}

int research_best(const struct rs_run *run, const struct rs_node *nodes, size_t n)
{
    const struct rs_node *b = best_node(run, nodes, n);
    return b ? (int)b->id : -1;
}

static cJSON *node_json(const struct rs_node *n)
{
    char id[32], parent[32];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", node_id(n, id));
    if (n->parent >= 0) {
        snprintf(parent, sizeof parent, "n%ld", n->parent);
        cJSON_AddStringToObject(o, "parent", parent);
    } else {
        cJSON_AddNullToObject(o, "parent");
    }
    cJSON_AddStringToObject(o, "status", rs_node_status(n));
    add_num(o, "metric", n->metric);
    add_str(o, "commit", n->commit);
    add_str(o, "title", n->title ? n->title : "");
    add_str(o, "hypothesis", n->hypothesis);
    add_str(o, "rationale", n->rationale);
    add_str(o, "kind", n->kind);
    add_str(o, "label", n->label);
    add_str(o, "insight", n->insight);
    if (n->order > 0)
        cJSON_AddNumberToObject(o, "order", (double)n->order);
    else
        cJSON_AddNullToObject(o, "order");
    add_str(o, "started", n->started);
    add_str(o, "finished", n->finished);
    add_num(o, "seconds", n->seconds);
    if (n->params)
        cJSON_AddItemToObject(o, "params", cJSON_Duplicate(n->params, true));
    else if (n->idea && cJSON_IsObject(cJSON_GetObjectItem(n->idea, "params")))
        cJSON_AddItemToObject(o, "params",
                              cJSON_Duplicate(cJSON_GetObjectItem(n->idea, "params"), true));
    else
        cJSON_AddNullToObject(o, "params");
    add_num(o, "value", n->value);
    add_num(o, "score", n->score);
    cJSON_AddNumberToObject(o, "debug_depth", (double)n->debug_depth);
    add_str(o, "reason", n->reason);
    if (n->results)
        cJSON_AddItemToObject(o, "results", cJSON_Duplicate(n->results, true));
    else
        cJSON_AddNullToObject(o, "results");
    cJSON *changes = n->idea ? cJSON_GetObjectItem(n->idea, "changes") : NULL;
    if (cJSON_IsArray(changes))
        cJSON_AddItemToObject(o, "changes", cJSON_Duplicate(changes, true));
    return o;
}

cJSON *research_nodes_json(const struct rs_node *nodes, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, node_json(&nodes[i]));
    return a;
}

static int add_events(struct store *store, const char *run, cJSON *doc)
{
    sqlite3_stmt *st = NULL;
    cJSON *notes = cJSON_AddArrayToObject(doc, "notes");
    cJSON *decisions = cJSON_AddArrayToObject(doc, "decisions");
    if (sqlite3_prepare_v2(store->db,
                           "SELECT node, time, kind, decision, reason, text FROM research_events"
                           " WHERE run = ?1 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(store, "read the decisions");
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 2);
        cJSON *e = cJSON_CreateObject();
        if (kind && !strcmp(kind, "note")) {
            add_str(e, "text", (const char *)sqlite3_column_text(st, 5));
            add_str(e, "time", (const char *)sqlite3_column_text(st, 1));
            cJSON_AddItemToArray(notes, e);
        } else {
            if (sqlite3_column_type(st, 0) == SQLITE_NULL) {
                cJSON_AddNullToObject(e, "node");
            } else {
                char id[32];
                snprintf(id, sizeof id, "n%lld", (long long)sqlite3_column_int64(st, 0));
                cJSON_AddStringToObject(e, "node", id);
            }
            add_str(e, "decision", (const char *)sqlite3_column_text(st, 3));
            add_str(e, "reason", (const char *)sqlite3_column_text(st, 4));
            add_str(e, "time", (const char *)sqlite3_column_text(st, 1));
            cJSON_AddItemToArray(decisions, e);
        }
    }
    sqlite3_finalize(st);
    return 0;
}

static void add_usage(struct store *store, const char *run, cJSON *doc)
{
    sqlite3_stmt *st = NULL;
    cJSON *usage = cJSON_AddArrayToObject(doc, "usage");
    if (sqlite3_prepare_v2(store->db,
                           "SELECT coalesce(agent, '?'), count(*), sum(prompt_tokens),"
                           " sum(completion_tokens), sum(cost), count(cost) FROM llm_usage"
                           " WHERE run = ?1 GROUP BY 1 ORDER BY 1",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return; /* no llm table: no model was ever called */
    }
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "agent", (const char *)sqlite3_column_text(st, 0));
        long calls = (long)sqlite3_column_int64(st, 1);
        cJSON_AddNumberToObject(u, "requests", (double)calls);
        cJSON_AddNumberToObject(u, "input_tokens", (double)sqlite3_column_int64(st, 2));
        cJSON_AddNumberToObject(u, "output_tokens", (double)sqlite3_column_int64(st, 3));
        if (sqlite3_column_int64(st, 5) == calls)
            cJSON_AddNumberToObject(u, "cost", sqlite3_column_double(st, 4));
        else
            cJSON_AddNullToObject(u, "cost");
        cJSON_AddItemToArray(usage, u);
    }
    sqlite3_finalize(st);
}

cJSON *research_run_json(struct store *store, const struct rs_run *r, const struct rs_node *nodes,
                         size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    /* a run left "running" by a process that is gone was interrupted */
    bool gone = r->status && !strcmp(r->status, "running") && !rs_run_active(store, r->id);
    add_str(o, "status", gone ? "interrupted" : r->status);
    add_str(o, "started", r->started);
    add_str(o, "finished", r->finished);
    add_str(o, "provider", r->provider);
    add_str(o, "model", r->model && r->model[0] ? r->model : NULL);
    cJSON *task = cJSON_AddObjectToObject(o, "task");
    add_str(task, "name", r->task_name);
    add_str(task, "metric", r->metric);
    add_str(task, "goal", r->goal);
    cJSON *base = cJSON_AddObjectToObject(o, "baseline");
    cJSON_AddStringToObject(base, "node", "n0");
    add_num(base, "metric", n > 0 ? nodes[0].metric : NAN);
    add_str(base, "commit", r->baseline);
    add_str(base, "status", n > 0 ? rs_node_status(&nodes[0]) : NULL);
    const struct rs_node *b = best_node(r, nodes, n);
    if (b) {
        char id[32];
        cJSON *best = cJSON_AddObjectToObject(o, "best");
        cJSON_AddStringToObject(best, "node", node_id(b, id));
        add_num(best, "metric", b->metric);
        add_str(best, "commit", b->commit);
        add_str(best, "title", b->title);
    } else {
        cJSON_AddNullToObject(o, "best");
    }
    add_str(o, "stop_reason",
            gone ? "the process ended without saving (killed or crashed)" : r->stop_reason);
    add_str(o, "isolation", r->isolation);
    cJSON_AddItemToObject(o, "config",
                          r->config ? cJSON_Duplicate(r->config, true) : cJSON_CreateObject());
    cJSON *budget = cJSON_AddObjectToObject(o, "budget");
    long experiments = 0;
    for (size_t i = 1; i < n; i++)
        if (nodes[i].order > 0)
            experiments++;
    long tokens;
    double cost;
    rs_usage(store, r->id, &tokens, &cost);
    cJSON_AddNumberToObject(budget, "experiments", (double)experiments);
    cJSON_AddNumberToObject(budget, "rounds", (double)r->expansions);
    cJSON_AddNumberToObject(budget, "iterations", (double)r->iterations);
    cJSON_AddNumberToObject(budget, "tokens", (double)tokens);
    add_num(budget, "cost", cost);
    cJSON_AddNumberToObject(budget, "seconds", r->seconds);
    cJSON_AddItemToObject(budget, "limits",
                          r->limits ? cJSON_Duplicate(r->limits, true) : cJSON_CreateObject());
    return o;
}

int research_export(struct store *store, const char *run, cJSON **out)
{
    struct rs_run r;
    struct rs_node *nodes = NULL;
    size_t n = 0;
    int rc = rs_run_load(store, run, &r);
    if (rc < 0)
        return rc;
    if ((rc = rs_nodes_load(store, r.id, &nodes, &n)) < 0)
        goto cleanup;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "run", research_run_json(store, &r, nodes, n));
    cJSON_AddItemToObject(doc, "nodes", research_nodes_json(nodes, n));
    cJSON *insights = cJSON_AddArrayToObject(doc, "insights");
    for (size_t i = 0; i < n; i++) {
        if (!nodes[i].insight || !nodes[i].insight[0])
            continue;
        char id[32];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "node", node_id(&nodes[i], id));
        add_str(e, "label", nodes[i].label);
        cJSON_AddStringToObject(e, "text", nodes[i].insight);
        cJSON_AddItemToArray(insights, e);
    }
    if ((rc = add_events(store, r.id, doc)) < 0) {
        cJSON_Delete(doc);
        goto cleanup;
    }
    add_usage(store, r.id, doc);
    *out = doc;
cleanup:
    rs_nodes_free(nodes, n);
    rs_run_clear(&r);
    return rc;
}
