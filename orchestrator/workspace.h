/*
 * workspace: finding, creating and opening thalamus workspaces.
 *
 * A workspace is a git repository holding thalamus.lua, TASK.md and the
 * baseline experiment/, with the untracked .thalamus/ folder for the
 * database and run directories. workspace_init() copies a bundled template
 * (from the data directory), writes .gitignore, and commits the baseline with
 * libgit2: into a new repository on branch main, or as one new commit in an
 * existing one, without disturbing changes the user has staged.
 * workspace_find() walks up from a directory to the nearest thalamus.lua,
 * the way git finds .git. Depends on alloc, buf, error, fsutil, log, store
 * and libgit2.
 */
#ifndef THALAMUS_WORKSPACE_H
#define THALAMUS_WORKSPACE_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

#define WORKSPACE_DEFAULT_TEMPLATE "classifier"
#define WORKSPACE_STATE_DIR        ".thalamus"

struct workspace_template {
    char *name;
    char *title; /* the first heading of its TASK.md */
    char *path;
};

/* Lists the bundled templates, sorted by name. Free with
 * workspace_templates_free(). */
int workspace_templates(struct workspace_template **out, size_t *n);
void workspace_templates_free(struct workspace_template *list, size_t n);

struct workspace_init_options {
    const char *dir;
    const char *template_name; /* NULL: WORKSPACE_DEFAULT_TEMPLATE */
    bool force;                /* allow a non-empty directory (never overwrites a file) */
};

struct workspace_init_result {
    char *dir;           /* absolute path of the workspace */
    char *commit;        /* hex id of the baseline commit */
    char *branch;        /* branch the commit went to, e.g. "main" */
    bool reused_repo;    /* an existing git repository received the commit */
    bool default_author; /* no git identity was configured; a default was used */
    char **files;        /* files added, relative to dir, NULL-terminated */
};

/* Creates a workspace as described above. Refuses a non-empty directory
 * (ignoring .git) without force, and never overwrites an existing file. */
int workspace_init(const struct workspace_init_options *opts, struct workspace_init_result *out);
void workspace_init_result_free(struct workspace_init_result *r);

/* Sets *out to the absolute path of the nearest directory at or above start
 * that holds thalamus.lua. TH_ENOTFOUND with a helpful message when none. */
int workspace_find(const char *start, char **out);

/* Opens the workspace's database, creating .thalamus/ when needed and
 * applying migrations. */
int workspace_store_open(const char *workspace, struct store **out);

#endif
