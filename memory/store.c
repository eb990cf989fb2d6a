/*
 * store: SQLite connection set-up and module migrations (see store.h).
 */
#include "store.h"

#include "alloc.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODULES 32

struct registration {
    const char *module;
    const struct store_migration *list;
    size_t n;
};

static struct registration registry[MAX_MODULES];
static size_t registry_len;

void store_register_migrations(const char *module, const struct store_migration *list, size_t n)
{
    for (size_t i = 0; i < registry_len; i++) {
        if (!strcmp(registry[i].module, module)) {
            registry[i].list = list;
            registry[i].n = n;
            return;
        }
    }
    if (registry_len == MAX_MODULES) {
        fprintf(stderr, "thalamus: fatal: more than %d modules register migrations\n", MAX_MODULES);
        abort();
    }
    registry[registry_len++] = (struct registration){module, list, n};
}

int store_registered_version(const char *module)
{
    for (size_t i = 0; i < registry_len; i++)
        if (!strcmp(registry[i].module, module))
            return registry[i].n ? registry[i].list[registry[i].n - 1].version : 0;
    return 0;
}

void store_reset_migrations(void)
{
    registry_len = 0;
}

static int db_error(struct store *store, const char *what)
{
    return error_set("%s '%s': %s", what, store->path, sqlite3_errmsg(store->db));
}

int store_exec(struct store *store, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(store->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = error_set("database '%s': %s", store->path, msg ? msg : "unknown error");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int pragma_int(struct store *store, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(store, "cannot read");
        goto cleanup;
    }
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    else if (step == SQLITE_DONE)
        *out = 0;
    else
        rc = db_error(store, "cannot read");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

/* Claims a new database for thalamus, or refuses one that another program
 * owns. An empty file (no tables) is new. */
static int check_identity(struct store *store)
{
    int app_id = 0, tables = 0;
    if (pragma_int(store, "PRAGMA application_id", &app_id) < 0) {
        return error_setc(TH_ERR,
                          "'%s' is not a thalamus database (%s); move it aside and run the "
                          "command again to start a new one",
                          store->path, sqlite3_errmsg(store->db));
    }
    if (app_id == STORE_APPLICATION_ID)
        return 0;
    if (pragma_int(store, "SELECT count(*) FROM sqlite_schema", &tables) < 0)
        return TH_ERR;
    if (app_id != 0 || tables > 0)
        return error_set("'%s' is a SQLite database of another program (application id "
                         "0x%08x); move it aside and run the command again to start a new one",
                         store->path, (unsigned)app_id);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA application_id = %d", STORE_APPLICATION_ID);
    return store_exec(store, sql);
}

int store_schema_version(struct store *store, const char *module, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "SELECT coalesce(max(version), 0) FROM schema_migrations "
                           "WHERE module = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = db_error(store, "cannot read the schema version of");
        goto cleanup;
    }
    sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = db_error(store, "cannot read the schema version of");
        goto cleanup;
    }
    *out = sqlite3_column_int(st, 0);
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static int record_migration(struct store *store, const char *module, int version)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT INTO schema_migrations(module, version, applied_at) "
                           "VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int(st, 2, version) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(store, "cannot record a migration in");
    sqlite3_finalize(st);
    return rc;
}

static int migrate_module(struct store *store, const struct registration *reg)
{
    int current = 0;
    if (store_schema_version(store, reg->module, &current) < 0)
        return TH_ERR;
    int newest = reg->n ? reg->list[reg->n - 1].version : 0;
    if (current > newest)
        return error_set("'%s' was written by a newer thalamus (schema '%s' version %d, this "
                         "build knows %d); upgrade thalamus to use this workspace",
                         store->path, reg->module, current, newest);
    for (size_t i = 0; i < reg->n; i++) {
        const struct store_migration *m = &reg->list[i];
        if (m->version <= current)
            continue;
        if (store_exec(store, "BEGIN IMMEDIATE") < 0)
            return TH_ERR;
        if (store_exec(store, m->sql) < 0 || record_migration(store, reg->module, m->version) < 0) {
            error_prefix("migration %s/%d failed", reg->module, m->version);
            sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
            return TH_ERR;
        }
        if (store_exec(store, "COMMIT") < 0)
            return TH_ERR;
    }
    return 0;
}

int store_open(struct store **out, const char *path)
{
    struct store *store = xcalloc(1, sizeof *store);
    store->path = xstrdup(path);
    int rc = 0;
    if (sqlite3_open_v2(path, &store->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rc = error_set("cannot open database '%s': %s", path,
                       store->db ? sqlite3_errmsg(store->db) : "out of memory");
        goto cleanup;
    }
    sqlite3_extended_result_codes(store->db, 1);
    sqlite3_busy_timeout(store->db, 5000);
    if ((rc = check_identity(store)) < 0)
        goto cleanup;
    if ((rc = store_exec(store, "PRAGMA journal_mode = WAL;"
                                "PRAGMA synchronous = NORMAL;"
                                "PRAGMA foreign_keys = ON;")) < 0)
        goto cleanup;
    if ((rc = store_exec(store, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                " module TEXT NOT NULL,"
                                " version INTEGER NOT NULL,"
                                " applied_at TEXT NOT NULL,"
                                " PRIMARY KEY (module, version))")) < 0)
        goto cleanup;
    for (size_t i = 0; i < registry_len; i++)
        if ((rc = migrate_module(store, &registry[i])) < 0)
            goto cleanup;
    *out = store;
    return 0;
cleanup:
    store_close(store);
    return rc;
}

struct store_cached_stmt {
    const char *sql;
    sqlite3_stmt *st;
};

sqlite3_stmt *store_stmt(struct store *store, const char *sql)
{
    for (size_t i = 0; i < store->nstmts; i++)
        if (store->stmts[i].sql == sql) {
            sqlite3_clear_bindings(store->stmts[i].st);
            return store->stmts[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        return NULL;
    if (store->nstmts == store->capstmts)
        store->stmts = xreallocarray(store->stmts, store->capstmts = store->capstmts * 2 + 8,
                                     sizeof *store->stmts);
    store->stmts[store->nstmts++] = (struct store_cached_stmt){sql, st};
    return st;
}

void store_close(struct store *store)
{
    if (!store)
        return;
    for (size_t i = 0; i < store->nstmts; i++)
        sqlite3_finalize(store->stmts[i].st);
    free(store->stmts);
    sqlite3_close(store->db);
    free(store->path);
    free(store);
}
