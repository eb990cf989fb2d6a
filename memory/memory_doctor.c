/*
 * memory_doctor: the integrity check behind `thalamus doctor` (see
 * memory.h). It opens the database on a connection of its own, without
 * creating or migrating anything, in SQLite's defensive mode, and runs each
 * check whatever the previous ones found, so that a damaged file gets a
 * full report instead of the first error: the file header, the application
 * id, PRAGMA integrity_check (or quick_check), PRAGMA foreign_key_check, the
 * FTS5 index against its content table, the append-only triggers of the
 * episodic store, the journal mode, and the schema versions of every module
 * against those this build registered. The FTS5 check is an INSERT command,
 * so it runs inside a transaction that is rolled back. Depends on store,
 * memory, buf, alloc, error, SQLite and cJSON.
 */
#include "memory_internal.h"

#include "alloc.h"
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_DETAIL_LINES 10

static void add_check(cJSON *checks, bool *all_ok, const char *name, bool ok, const char *detail)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddBoolToObject(c, "ok", ok);
    cJSON_AddStringToObject(c, "detail", detail ? detail : "");
    cJSON_AddItemToArray(checks, c);
    if (!ok)
        *all_ok = false;
}

/* Checks the first 16 bytes: "SQLite format 3\0". */
static bool sqlite_header(const char *path, char *detail, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(detail, n, "cannot open: %s", strerror(errno));
        return false;
    }
    char head[16] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got == 0) {
        snprintf(detail, n, "the file is empty (a new database)");
        return true;
    }
    if (got < sizeof head || memcmp(head, "SQLite format 3", 16) != 0) {
        snprintf(detail, n,
                 "the file does not start with the SQLite header: it is not a "
                 "database, or it was overwritten");
        return false;
    }
    snprintf(detail, n, "SQLite format 3");
    return true;
}

/* Runs a pragma whose rows are messages, "ok" meaning healthy. */
static void message_pragma(sqlite3 *db, const char *sql, const char *name, cJSON *checks, bool *ok)
{
    sqlite3_stmt *st = NULL;
    struct buf detail;
    buf_init(&detail, 1 << 16);
    bool healthy = true;
    int rows = 0, step = SQLITE_ERROR;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            const char *msg = (const char *)sqlite3_column_text(st, 0);
            if (rows == 0 && msg && !strcmp(msg, "ok"))
                break;
            healthy = false;
            if (rows++ < MAX_DETAIL_LINES)
                buf_printf(&detail, "%s%s", detail.len ? "; " : "", msg ? msg : "?");
        }
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        healthy = false;
        buf_printf(&detail, "%s%s", detail.len ? "; " : "", sqlite3_errmsg(db));
    } else if (rows > MAX_DETAIL_LINES) {
        buf_printf(&detail, "; and %d more", rows - MAX_DETAIL_LINES);
    }
    add_check(checks, ok, name, healthy, healthy ? "ok" : buf_str(&detail));
    sqlite3_finalize(st);
    buf_free(&detail);
}

static void foreign_keys(sqlite3 *db, cJSON *checks, bool *ok)
{
    sqlite3_stmt *st = NULL;
    struct buf detail;
    buf_init(&detail, 1 << 16);
    int rows = 0, step = SQLITE_ERROR;
    if (sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &st, NULL) == SQLITE_OK) {
        while ((step = sqlite3_step(st)) == SQLITE_ROW)
            if (rows++ < MAX_DETAIL_LINES)
                buf_printf(&detail, "%s%s row %lld refers to a missing row of %s",
                           detail.len ? "; " : "", (const char *)sqlite3_column_text(st, 0),
                           (long long)sqlite3_column_int64(st, 1),
                           (const char *)sqlite3_column_text(st, 2));
    }
    bool failed = step != SQLITE_DONE;
    if (failed)
        buf_printf(&detail, "%s%s", detail.len ? "; " : "", sqlite3_errmsg(db));
    else if (rows > MAX_DETAIL_LINES)
        buf_printf(&detail, "; and %d more", rows - MAX_DETAIL_LINES);
    bool healthy = !failed && rows == 0;
    add_check(checks, ok, "foreign_keys", healthy, healthy ? "ok" : buf_str(&detail));
    sqlite3_finalize(st);
    buf_free(&detail);
}

static int exists_in_schema(sqlite3 *db, const char *type, const char *name)
{
    sqlite3_stmt *st = NULL;
    int found = -1;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        found = step == SQLITE_ROW ? 1 : step == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    return found;
}

static void fulltext(sqlite3 *db, cJSON *checks, bool *ok)
{
    int has = exists_in_schema(db, "table", "memory_fts");
    if (has <= 0) {
        add_check(checks, ok, "fulltext", has == 0,
                  has == 0 ? "no full-text index yet" : sqlite3_errmsg(db));
        return;
    }
    char *err = NULL;
    bool healthy = true;
    char detail[512] = "the index matches the items";
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "INSERT INTO memory_fts(memory_fts, rank) VALUES ('integrity-check', 1)",
                     NULL, NULL, &err) != SQLITE_OK) {
        healthy = false;
        snprintf(detail, sizeof detail,
                 "%s (rebuild it with: sqlite3 .thalamus/memory.db "
                 "\"INSERT INTO memory_fts(memory_fts) VALUES ('rebuild')\")",
                 err ? err : sqlite3_errmsg(db));
    }
    sqlite3_free(err);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    add_check(checks, ok, "fulltext", healthy, detail);
}

static void append_only(sqlite3 *db, cJSON *checks, bool *ok)
{
    int table = exists_in_schema(db, "table", "memory_episodes");
    if (table <= 0) {
        add_check(checks, ok, "append_only", table == 0,
                  table == 0 ? "no episodic store yet" : sqlite3_errmsg(db));
        return;
    }
    int upd = exists_in_schema(db, "trigger", "memory_episodes_no_update");
    int del = exists_in_schema(db, "trigger", "memory_episodes_no_delete");
    bool healthy = upd == 1 && del == 1;
    add_check(checks, ok, "append_only", healthy,
              healthy ? "episodes refuse UPDATE and DELETE"
                      : "a trigger that keeps memory_episodes append-only is missing");
}

static void schema_versions(sqlite3 *db, cJSON *checks, bool *ok, cJSON *versions)
{
    sqlite3_stmt *st = NULL;
    struct buf detail;
    buf_init(&detail, 1 << 16);
    bool healthy = true;
    int step = SQLITE_ERROR;
    if (sqlite3_prepare_v2(db,
                           "SELECT module, max(version) FROM schema_migrations GROUP BY module"
                           " ORDER BY module",
                           -1, &st, NULL) == SQLITE_OK) {
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            const char *module = (const char *)sqlite3_column_text(st, 0);
            int applied = sqlite3_column_int(st, 1);
            int known = store_registered_version(module ? module : "");
            cJSON *v = cJSON_AddObjectToObject(versions, module ? module : "?");
            cJSON_AddNumberToObject(v, "applied", applied);
            cJSON_AddNumberToObject(v, "known", known);
            buf_printf(&detail, "%s%s %d", detail.len ? ", " : "", module ? module : "?", applied);
            if (known && applied > known) {
                healthy = false;
                buf_printf(&detail, " (newer than this build's %d: upgrade thalamus)", known);
            } else if (known && applied < known) {
                buf_printf(&detail, " (%d pending; applied when a command opens the database)",
                           known);
            }
        }
    }
    if (step != SQLITE_DONE) {
        healthy = false;
        buf_printf(&detail, "%scannot read schema_migrations: %s", detail.len ? "; " : "",
                   sqlite3_errmsg(db));
    }
    add_check(checks, ok, "schema", healthy, detail.len ? buf_str(&detail) : "no migrations yet");
    sqlite3_finalize(st);
    buf_free(&detail);
}

int memory_doctor(const char *path, bool quick, cJSON **report)
{
    struct stat sb;
    if (stat(path, &sb) < 0)
        return error_setc(errno == ENOENT ? TH_ENOTFOUND : TH_ERR, "cannot check '%s': %s", path,
                          strerror(errno));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", path);
    cJSON_AddNumberToObject(root, "bytes", (double)sb.st_size);
    cJSON *checks = cJSON_AddArrayToObject(root, "checks");
    cJSON *versions = cJSON_CreateObject();
    bool ok = true;
    char detail[512];
    sqlite3 *db = NULL;
    bool header = sqlite_header(path, detail, sizeof detail);
    add_check(checks, &ok, "file", header, detail);
    if (!header)
        goto done;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        add_check(checks, &ok, "open", false, db ? sqlite3_errmsg(db) : "out of memory");
        goto done;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_stmt *st = NULL;
    int app_id = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        app_id = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (app_id == STORE_APPLICATION_ID)
        add_check(checks, &ok, "identity", true, "a thalamus database");
    else if (app_id == -1)
        add_check(checks, &ok, "identity", false, sqlite3_errmsg(db));
    else {
        snprintf(detail, sizeof detail,
                 app_id == 0 ? "no thalamus application id: not created by thalamus"
                             : "application id 0x%08x: the database of another program",
                 (unsigned)app_id);
        add_check(checks, &ok, "identity", false, detail);
    }
    message_pragma(db, quick ? "PRAGMA quick_check" : "PRAGMA integrity_check",
                   quick ? "quick_check" : "integrity_check", checks, &ok);
    foreign_keys(db, checks, &ok);
    fulltext(db, checks, &ok);
    append_only(db, checks, &ok);
    st = NULL;
    char mode[32] = "?";
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    snprintf(detail, sizeof detail, "%s%s", mode,
             strcmp(mode, "wal") ? " (expected wal: readers may wait for writers)" : "");
    add_check(checks, &ok, "journal", !strcmp(mode, "wal"), detail);
    schema_versions(db, checks, &ok, versions);
done:
    sqlite3_close(db);
    cJSON_AddItemToObject(root, "schema_versions", versions);
    cJSON_AddBoolToObject(root, "ok", ok);
    *report = root;
    return 0;
}
