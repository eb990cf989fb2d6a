/* Tests of store: WAL and pragmas, migrations in order and only once, a
 * failing migration rolled back, foreign and newer databases refused. */
#include "check.h"
#include "error.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/thalamus-test-store-XXXXXX";

static char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
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

static const struct store_migration alpha_v1[] = {
    {1, "CREATE TABLE alpha (id INTEGER PRIMARY KEY, name TEXT)"},
};
static const struct store_migration alpha_v2[] = {
    {1, "CREATE TABLE alpha (id INTEGER PRIMARY KEY, name TEXT)"},
    {2, "ALTER TABLE alpha ADD COLUMN score REAL; INSERT INTO alpha(name) VALUES ('seed')"},
};
static const struct store_migration beta[] = {
    {1, "CREATE TABLE beta (id INTEGER PRIMARY KEY,"
        " alpha_id INTEGER NOT NULL REFERENCES alpha(id))"},
};

static void test_open_sets_pragmas(void)
{
    store_reset_migrations();
    struct store *s = NULL;
    REQUIRE(store_open(&s, db_path("pragmas.db")) == 0);
    sqlite3_stmt *st;
    REQUIRE(sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    CHECK_EQ_INT(query_int(s, "PRAGMA foreign_keys"), 1);
    CHECK_EQ_INT(query_int(s, "PRAGMA application_id"), STORE_APPLICATION_ID);
    store_close(s);
}

static void test_migrations_apply_once_in_order(void)
{
    store_reset_migrations();
    store_register_migrations("alpha", alpha_v1, 1);
    struct store *s = NULL;
    REQUIRE(store_open(&s, db_path("mig.db")) == 0);
    int v = 0;
    CHECK(store_schema_version(s, "alpha", &v) == 0 && v == 1);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM alpha"), 0);
    store_close(s);

    /* a newer build adds migration 2 and a second module */
    store_register_migrations("alpha", alpha_v2, 2);
    store_register_migrations("beta", beta, 1);
    REQUIRE(store_open(&s, db_path("mig.db")) == 0);
    CHECK(store_schema_version(s, "alpha", &v) == 0 && v == 2);
    CHECK(store_schema_version(s, "beta", &v) == 0 && v == 1);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM alpha WHERE name = 'seed'"), 1);
    store_close(s);

    /* opening again runs nothing twice */
    REQUIRE(store_open(&s, db_path("mig.db")) == 0);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM alpha WHERE name = 'seed'"), 1);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM schema_migrations"), 3);
    /* foreign keys are enforced */
    CHECK(store_exec(s, "INSERT INTO beta(alpha_id) VALUES (999)") < 0);
    CHECK_CONTAINS(error_message(), "FOREIGN KEY");
    store_close(s);
}

static void test_failing_migration_rolls_back(void)
{
    static const struct store_migration bad[] = {
        {1, "CREATE TABLE gamma (x); CREATE TABLE gamma_extra (y); THIS IS NOT SQL"},
    };
    store_reset_migrations();
    store_register_migrations("gamma", bad, 1);
    struct store *s = NULL;
    CHECK(store_open(&s, db_path("bad.db")) < 0);
    CHECK_CONTAINS(error_message(), "migration gamma/1 failed");
    store_reset_migrations();
    REQUIRE(store_open(&s, db_path("bad.db")) == 0);
    CHECK_EQ_INT(query_int(s, "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'gamma%'"), 0);
    store_close(s);
}

static void test_newer_database_refused(void)
{
    store_reset_migrations();
    store_register_migrations("alpha", alpha_v2, 2);
    struct store *s = NULL;
    REQUIRE(store_open(&s, db_path("newer.db")) == 0);
    store_close(s);
    store_register_migrations("alpha", alpha_v1, 1);
    CHECK(store_open(&s, db_path("newer.db")) < 0);
    CHECK_CONTAINS(error_message(), "written by a newer thalamus");
}

static void test_foreign_files_refused(void)
{
    store_reset_migrations();
    FILE *f = fopen(db_path("text.db"), "w");
    REQUIRE(f);
    fputs("this is not a database, just some text that is long enough to look like a header\n"
          "and more text to fill the first page of what sqlite reads as a header block.\n",
          f);
    fclose(f);
    struct store *s = NULL;
    CHECK(store_open(&s, db_path("text.db")) < 0);
    CHECK_CONTAINS(error_message(), "is not a thalamus database");

    sqlite3 *db;
    REQUIRE(sqlite3_open(db_path("other.db"), &db) == SQLITE_OK);
    sqlite3_exec(db, "CREATE TABLE someone_elses (x)", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(store_open(&s, db_path("other.db")) < 0);
    CHECK_CONTAINS(error_message(), "database of another program");
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(test_open_sets_pragmas);
    RUN(test_migrations_apply_once_in_order);
    RUN(test_failing_migration_rolls_back);
    RUN(test_newer_database_refused);
    RUN(test_foreign_files_refused);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
