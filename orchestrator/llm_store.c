/*
 * llm_store: the LLM gateway's tables in the workspace store (see llm.h and
 * llm_internal.h). llm_usage holds one row per model call: when, which
 * provider and model, who called (agent, run, call site), tokens, cost
 * (NULL without a price), latency, attempts and outcome, with an error
 * message that the gateway has already cleared of secrets. llm_cache maps
 * the SHA-256 of a request (provider, model, messages, parameters) to its
 * reply. Budgets read their spending from llm_usage. Depends on store,
 * alloc, buf, error and SQLite.
 */
#include "llm_internal.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static const struct store_migration llm_migrations[] = {
    {1, "CREATE TABLE llm_usage ("
        " id INTEGER PRIMARY KEY,"
        " time TEXT NOT NULL,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " agent TEXT,"
        " run TEXT,"
        " site TEXT,"
        " prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL,"
        " usage_estimated INTEGER NOT NULL DEFAULT 0,"
        " cost REAL,"
        " latency_ms INTEGER NOT NULL,"
        " attempts INTEGER NOT NULL,"
        " outcome TEXT NOT NULL,"
        " error TEXT);"
        "CREATE INDEX llm_usage_run ON llm_usage(run, site);"
        "CREATE TABLE llm_cache ("
        " key TEXT PRIMARY KEY,"
        " provider TEXT NOT NULL,"
        " model TEXT NOT NULL,"
        " text TEXT NOT NULL,"
        " finish_reason TEXT,"
        " prompt_tokens INTEGER NOT NULL,"
        " completion_tokens INTEGER NOT NULL,"
        " created_at TEXT NOT NULL)"},
};

void llm_register_migrations(void)
{
    store_register_migrations("llm", llm_migrations,
                              sizeof llm_migrations / sizeof llm_migrations[0]);
}

static int db_fail(struct store *store, const char *what)
{
    return error_set("cannot %s in '%s': %s", what, store->path, sqlite3_errmsg(store->db));
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

int llm_store_usage(struct store *store, const struct llm_usage_row *r)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT INTO llm_usage(time, provider, model, agent, run, site,"
                           " prompt_tokens, completion_tokens, usage_estimated, cost, latency_ms,"
                           " attempts, outcome, error) VALUES"
                           " (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                           " ?8, ?9, ?10, ?11, ?12, ?13)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "record model usage");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, r->provider, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->model ? r->model : "", -1, SQLITE_STATIC);
    bind_text_or_null(st, 3, r->agent);
    bind_text_or_null(st, 4, r->run);
    bind_text_or_null(st, 5, r->site);
    sqlite3_bind_int64(st, 6, r->prompt_tokens);
    sqlite3_bind_int64(st, 7, r->completion_tokens);
    sqlite3_bind_int(st, 8, r->usage_estimated);
    if (r->cost_known)
        sqlite3_bind_double(st, 9, r->cost);
    else
        sqlite3_bind_null(st, 9);
    sqlite3_bind_int64(st, 10, r->latency_ms);
    sqlite3_bind_int(st, 11, r->attempts);
    sqlite3_bind_text(st, 12, r->outcome, -1, SQLITE_STATIC);
    bind_text_or_null(st, 13, r->error);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(store, "record model usage");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

int llm_store_spent(struct store *store, const char *run, const char *site, long *tokens,
                    double *cost)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0),"
                           " coalesce(sum(cost), 0) FROM llm_usage"
                           " WHERE run = ?1 AND (?2 IS NULL OR site = ?2)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read model usage");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    bind_text_or_null(st, 2, site);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = db_fail(store, "read model usage");
        goto cleanup;
    }
    *tokens = (long)sqlite3_column_int64(st, 0);
    *cost = sqlite3_column_double(st, 1);
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static char *column_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return xstrdup(s ? (const char *)s : "");
}

int llm_cache_get(struct store *store, const char *key, struct llm_cached *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(store->db,
                           "SELECT text, model, finish_reason, prompt_tokens, completion_tokens"
                           " FROM llm_cache WHERE key = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read the response cache");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        rc = TH_ENOTFOUND;
        goto cleanup;
    }
    if (step != SQLITE_ROW) {
        rc = db_fail(store, "read the response cache");
        goto cleanup;
    }
    out->text = column_dup(st, 0);
    out->model = column_dup(st, 1);
    out->finish_reason = column_dup(st, 2);
    out->prompt_tokens = (long)sqlite3_column_int64(st, 3);
    out->completion_tokens = (long)sqlite3_column_int64(st, 4);
cleanup:
    sqlite3_finalize(st);
    return rc;
}

int llm_cache_put(struct store *store, const char *key, const char *provider,
                  const struct llm_cached *v)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT OR REPLACE INTO llm_cache(key, provider, model, text,"
                           " finish_reason, prompt_tokens, completion_tokens, created_at) VALUES"
                           " (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "write the response cache");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, provider, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, v->model ? v->model : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, v->text, -1, SQLITE_STATIC);
    bind_text_or_null(st, 5, v->finish_reason);
    sqlite3_bind_int64(st, 6, v->prompt_tokens);
    sqlite3_bind_int64(st, 7, v->completion_tokens);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_fail(store, "write the response cache");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

void llm_cached_free(struct llm_cached *c)
{
    free(c->text);
    free(c->model);
    free(c->finish_reason);
    memset(c, 0, sizeof *c);
}

/* ---- the usage report -------------------------------------------------- */

/* Rows of "SELECT <group columns>, calls, prompt, completion, cost,
 * priced_calls" as objects named by the group columns. */
static int report_rows(struct store *store, const char *sql, const char *run,
                       const char *const *names, int ngroup, cJSON *into)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_fail(store, "read model usage");
        goto cleanup;
    }
    bind_text_or_null(st, 1, run);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        for (int i = 0; i < ngroup; i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            if (v)
                cJSON_AddStringToObject(o, names[i], (const char *)v);
            else
                cJSON_AddNullToObject(o, names[i]);
        }
        long long calls = sqlite3_column_int64(st, ngroup);
        long long pt = sqlite3_column_int64(st, ngroup + 1);
        long long ct = sqlite3_column_int64(st, ngroup + 2);
        double cost = sqlite3_column_double(st, ngroup + 3);
        long long unpriced = sqlite3_column_int64(st, ngroup + 4);
        cJSON_AddNumberToObject(o, "calls", (double)calls);
        cJSON_AddNumberToObject(o, "prompt_tokens", (double)pt);
        cJSON_AddNumberToObject(o, "completion_tokens", (double)ct);
        cJSON_AddNumberToObject(o, "total_tokens", (double)(pt + ct));
        if (unpriced)
            cJSON_AddNullToObject(o, "cost");
        else
            cJSON_AddNumberToObject(o, "cost", cost);
        cJSON_AddItemToArray(into, o);
    }
    if (step != SQLITE_DONE)
        rc = db_fail(store, "read model usage");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

#define AGGREGATES                                                                                 \
    " count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"             \
    " coalesce(sum(cost), 0),"                                                                     \
    " sum(cost IS NULL AND outcome = 'ok' AND prompt_tokens + completion_tokens > 0)"              \
    " FROM llm_usage WHERE (?1 IS NULL OR run = ?1)"

int llm_usage_report(struct store *store, const char *run, cJSON **out)
{
    static const char *const none[] = {NULL};
    static const char *const model[] = {"provider", "model"};
    static const char *const caller[] = {"agent", "site"};
    cJSON *root = cJSON_CreateObject();
    cJSON *total = cJSON_CreateArray();
    int rc = report_rows(store, "SELECT" AGGREGATES, run, none, 0, total);
    if (rc == 0) {
        cJSON_AddItemToObject(root, "total", cJSON_DetachItemFromArray(total, 0));
        rc = report_rows(store,
                         "SELECT provider, model," AGGREGATES
                         " GROUP BY provider, model ORDER BY provider, model",
                         run, model, 2, cJSON_AddArrayToObject(root, "by_model"));
    }
    if (rc == 0)
        rc = report_rows(store,
                         "SELECT agent, site," AGGREGATES
                         " GROUP BY agent, site ORDER BY agent IS NULL, agent, site",
                         run, caller, 2, cJSON_AddArrayToObject(root, "by_caller"));
    cJSON_Delete(total);
    if (rc < 0) {
        cJSON_Delete(root);
        return rc;
    }
    if (run)
        cJSON_AddStringToObject(root, "run", run);
    else
        cJSON_AddNullToObject(root, "run");
    *out = root;
    return 0;
}
