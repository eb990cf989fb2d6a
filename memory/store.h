/*
 * store: the workspace's SQLite database (.thalamus/memory.db).
 *
 * Opens the database with write-ahead logging (so readers such as
 * `thalamus memory search` work while a run writes), foreign keys on and a
 * busy timeout, marks it with thalamus's application id so that a foreign
 * file is recognised instead of misused, and brings its schema up to date by
 * running numbered migrations. Each module owns its tables: it lists its
 * migrations in a static array and registers them with
 * store_register_migrations() before the store is opened; every migration
 * runs in its own transaction and is recorded in the schema_migrations
 * table. Depends on error, alloc and SQLite.
 */
#ifndef THALAMUS_STORE_H
#define THALAMUS_STORE_H

#include <sqlite3.h>
#include <stddef.h>

/* 'THAL' */
#define STORE_APPLICATION_ID 0x5448414c

struct store_migration {
    int version;     /* 1, 2, 3, ... within the module, in order */
    const char *sql; /* one or more statements */
};

struct store_cached_stmt;

struct store {
    sqlite3 *db;
    char *path;
    struct store_cached_stmt *stmts; /* see store_stmt() */
    size_t nstmts, capstmts;
};

/* Registers the migrations of module (a short name such as "core" or
 * "memory"). list must stay valid for the life of the program and be
 * ordered by version, starting at 1. Registering a module twice replaces its
 * list. */
void store_register_migrations(const char *module, const struct store_migration *list, size_t n);

/* The newest migration version registered for module, 0 when none is. */
int store_registered_version(const char *module);

/* Forgets every registration (for tests). */
void store_reset_migrations(void);

/* Opens (creating if needed) the database at path and applies the pending
 * migrations of every registered module. Fails with a message that names the
 * file when it is not a SQLite database, belongs to another program, or was
 * written by a newer thalamus. Free with store_close(). */
int store_open(struct store **out, const char *path);

void store_close(struct store *store);

/* Highest applied migration of module, 0 when none. */
int store_schema_version(struct store *store, const char *module, int *out);

/* Runs sql (no results expected). */
int store_exec(struct store *store, const char *sql);

/* The statement of sql, prepared on its first use and kept until
 * store_close(), for the statements a long run repeats: sql must be a
 * string that lives as long as the store (a literal), as it is looked up
 * by address. Returns it with no bindings; the caller resets it after use
 * (sqlite3_reset), as an unreset statement keeps its read open. NULL (see
 * sqlite3_errmsg) when it does not compile. */
sqlite3_stmt *store_stmt(struct store *store, const char *sql);

#endif
