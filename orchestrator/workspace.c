/*
 * workspace: templates, workspace creation with a baseline commit, workspace
 * discovery and the workspace's store (see workspace.h).
 */
#include "workspace.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <git2.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the workspace's own tables --------------------------------------- */

static const struct store_migration workspace_migrations[] = {
    {1, "CREATE TABLE workspace_info ("
        " key TEXT PRIMARY KEY,"
        " value TEXT NOT NULL)"},
};

int workspace_store_open(const char *workspace, struct store **out)
{
    char *state = fs_join(workspace, WORKSPACE_STATE_DIR);
    char *db = fs_join(state, "memory.db");
    int rc = fs_mkdir_p(state, 0755);
    if (rc == 0) {
        store_register_migrations("workspace", workspace_migrations,
                                  sizeof workspace_migrations / sizeof workspace_migrations[0]);
        rc = store_open(out, db);
    }
    free(state);
    free(db);
    return rc;
}

static int record_info(struct store *store, const char *key, const char *value)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(store->db,
                           "INSERT INTO workspace_info(key, value) VALUES (?1, ?2) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_DONE)
        rc = error_set("cannot write to '%s': %s", store->path, sqlite3_errmsg(store->db));
    sqlite3_finalize(st);
    return rc;
}

/* ---- templates --------------------------------------------------------- */

static char *template_title(const char *path)
{
    char *task = fs_join(path, "TASK.md");
    struct buf b;
    buf_init(&b, 1 << 20);
    char *title = NULL;
    if (buf_read_file(&b, task) == 0) {
        const char *line = buf_str(&b);
        while (*line == '#' || *line == ' ')
            line++;
        size_t len = strcspn(line, "\r\n");
        title = xstrndup(line, len);
    }
    error_clear();
    buf_free(&b);
    free(task);
    return title ? title : xstrdup("");
}

static int compare_templates(const void *a, const void *b)
{
    return strcmp(((const struct workspace_template *)a)->name,
                  ((const struct workspace_template *)b)->name);
}

int workspace_templates(struct workspace_template **out, size_t *n)
{
    char *data = NULL, *dir = NULL;
    int rc = fs_data_dir(&data);
    if (rc < 0)
        return rc;
    dir = fs_join(data, "templates");
    DIR *d = opendir(dir);
    if (!d) {
        rc = error_set("cannot read the templates in '%s': %s", dir, strerror(errno));
        goto cleanup;
    }
    size_t count = 0, cap = 4;
    struct workspace_template *list = xcalloc(cap, sizeof *list);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *path = fs_join(dir, e->d_name);
        char *lua = fs_join(path, "thalamus.lua");
        if (fs_is_dir(path) && fs_exists(lua)) {
            if (count == cap)
                list = xreallocarray(list, cap *= 2, sizeof *list);
            list[count].name = xstrdup(e->d_name);
            list[count].title = template_title(path);
            list[count].path = path;
            count++;
        } else {
            free(path);
        }
        free(lua);
    }
    closedir(d);
    qsort(list, count, sizeof *list, compare_templates);
    *out = list;
    *n = count;
cleanup:
    free(data);
    free(dir);
    return rc;
}

void workspace_templates_free(struct workspace_template *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].title);
        free(list[i].path);
    }
    free(list);
}

/* ---- init -------------------------------------------------------------- */

struct file_list {
    char **items;
    size_t n, cap;
};

static void file_list_add(struct file_list *l, const char *path)
{
    if (l->n + 1 >= l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = xreallocarray(l->items, l->cap, sizeof *l->items);
    }
    l->items[l->n++] = xstrdup(path);
    l->items[l->n] = NULL;
}

static void collect_file(const char *relpath, void *ud)
{
    file_list_add(ud, relpath);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int git_fail(const char *what)
{
    const git_error *e = git_error_last();
    return error_set("%s: %s", what, e && e->message ? e->message : "unknown libgit2 error");
}

/* Adds ".thalamus/" to dir/.gitignore unless a line already ignores it. */
static int ensure_gitignore(const char *dir, bool *changed)
{
    char *path = fs_join(dir, ".gitignore");
    struct buf b;
    buf_init(&b, 1 << 20);
    int rc = buf_read_file(&b, path);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        rc = 0;
    }
    if (rc < 0)
        goto cleanup;
    *changed = false;
    for (const char *line = buf_str(&b); *line;) {
        size_t len = strcspn(line, "\n");
        if ((len == 10 && !strncmp(line, ".thalamus/", 10)) ||
            (len == 11 && !strncmp(line, "/.thalamus/", 11)) ||
            (len == 9 && !strncmp(line, ".thalamus", 9)))
            goto cleanup;
        line += len + (line[len] == '\n');
    }
    if (b.len && b.data[b.len - 1] != '\n')
        buf_putc(&b, '\n');
    buf_puts(&b, "# thalamus keeps its database and run directories here\n.thalamus/\n");
    rc = fs_write_atomic(path, buf_str(&b), b.len, 0644);
    *changed = rc == 0;
cleanup:
    buf_free(&b);
    free(path);
    return rc;
}

/* The author of the baseline commit: GIT_AUTHOR_NAME / GIT_AUTHOR_EMAIL, else
 * the repository's git configuration, else a default. */
static int make_signature(git_repository *repo, git_signature **out, bool *defaulted)
{
    const char *name = getenv("GIT_AUTHOR_NAME"), *email = getenv("GIT_AUTHOR_EMAIL");
    *defaulted = false;
    if (name && *name && email && *email)
        return git_signature_now(out, name, email) < 0 ? git_fail("invalid git identity") : 0;
    if (git_signature_default(out, repo) == 0)
        return 0;
    *defaulted = true;
    return git_signature_now(out, "thalamus", "thalamus@localhost") < 0
               ? git_fail("cannot create a git signature")
               : 0;
}

static int open_or_init_repo(const char *dir, git_repository **repo, bool *reused)
{
    if (git_repository_open_ext(repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0) {
        if (git_repository_is_bare(*repo))
            return error_set("'%s' is a bare git repository; a workspace needs a working tree",
                             dir);
        *reused = true;
        return 0;
    }
    git_repository_init_options opts;
    git_repository_init_options_init(&opts, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
    opts.flags = GIT_REPOSITORY_INIT_MKPATH;
    opts.initial_head = "main";
    *reused = false;
    if (git_repository_init_ext(repo, dir, &opts) < 0)
        return git_fail("cannot initialise a git repository");
    return 0;
}

/* Commits files (relative to the working tree) on top of HEAD, building the
 * tree from HEAD's tree rather than from the index, then stages the same
 * files so that `git status` is clean for them. */
static int commit_files(git_repository *repo, const struct file_list *files, const char *message,
                        git_signature *sig, git_oid *commit_id, char **branch)
{
    git_reference *head = NULL;
    git_commit *parent = NULL;
    git_tree *base = NULL, *tree = NULL;
    git_treebuilder *tb = NULL;
    git_index *index = NULL;
    git_tree_update *updates = xcalloc(files->n ? files->n : 1, sizeof *updates);
    const char *workdir = git_repository_workdir(repo);
    git_oid tree_id;
    int rc = 0;

    int head_rc = git_repository_head(&head, repo);
    if (head_rc == 0) {
        if (git_commit_lookup(&parent, repo, git_reference_target(head)) < 0 ||
            git_commit_tree(&base, parent) < 0) {
            rc = git_fail("cannot read HEAD");
            goto cleanup;
        }
        *branch = xstrdup(git_reference_shorthand(head));
    } else if (head_rc == GIT_EUNBORNBRANCH || head_rc == GIT_ENOTFOUND) {
        git_oid empty;
        if (git_treebuilder_new(&tb, repo, NULL) < 0 || git_treebuilder_write(&empty, tb) < 0 ||
            git_tree_lookup(&base, repo, &empty) < 0) {
            rc = git_fail("cannot create an empty tree");
            goto cleanup;
        }
        git_reference *sym = NULL;
        if (git_reference_lookup(&sym, repo, "HEAD") == 0 && git_reference_symbolic_target(sym)) {
            const char *t = git_reference_symbolic_target(sym);
            *branch = xstrdup(strncmp(t, "refs/heads/", 11) ? t : t + 11);
        } else {
            *branch = xstrdup("HEAD");
        }
        git_reference_free(sym);
    } else {
        rc = git_fail("cannot read HEAD");
        goto cleanup;
    }

    for (size_t i = 0; i < files->n; i++) {
        char *abs = fs_join(workdir, files->items[i]);
        struct stat st;
        git_tree_update *u = &updates[i];
        u->action = GIT_TREE_UPDATE_UPSERT;
        u->path = files->items[i];
        u->filemode = stat(abs, &st) == 0 && (st.st_mode & 0111) ? GIT_FILEMODE_BLOB_EXECUTABLE
                                                                 : GIT_FILEMODE_BLOB;
        free(abs);
        if (git_blob_create_from_workdir(&u->id, repo, files->items[i]) < 0) {
            rc = git_fail("cannot add a file to git");
            goto cleanup;
        }
    }
    if (git_tree_create_updated(&tree_id, repo, base, files->n, updates) < 0 ||
        git_tree_lookup(&tree, repo, &tree_id) < 0) {
        rc = git_fail("cannot build the baseline tree");
        goto cleanup;
    }
    const git_commit *parents[1] = {parent};
    if (git_commit_create(commit_id, repo, "HEAD", sig, sig, NULL, message, tree, parent ? 1 : 0,
                          parents) < 0) {
        rc = git_fail("cannot commit the baseline");
        goto cleanup;
    }
    if (git_repository_index(&index, repo) < 0) {
        rc = git_fail("cannot open the git index");
        goto cleanup;
    }
    for (size_t i = 0; i < files->n; i++) {
        if (git_index_add_bypath(index, files->items[i]) < 0) {
            rc = git_fail("cannot stage a file");
            goto cleanup;
        }
    }
    if (git_index_write(index) < 0)
        rc = git_fail("cannot write the git index");
cleanup:
    git_index_free(index);
    git_tree_free(tree);
    git_tree_free(base);
    git_treebuilder_free(tb);
    git_commit_free(parent);
    git_reference_free(head);
    free(updates);
    return rc;
}

static int find_template(const char *name, char **path)
{
    struct workspace_template *list = NULL;
    size_t n = 0;
    int rc = workspace_templates(&list, &n);
    if (rc < 0)
        return rc;
    struct buf names;
    buf_init(&names, 0);
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(list[i].name, name)) {
            *path = xstrdup(list[i].path);
            goto cleanup;
        }
        buf_printf(&names, "%s%s", i ? ", " : "", list[i].name);
    }
    rc = error_setc(TH_EUSAGE,
                    "no template named '%s' (available: %s); see 'thalamus init "
                    "--list-templates'",
                    name, n ? buf_str(&names) : "none");
cleanup:
    buf_free(&names);
    workspace_templates_free(list, n);
    return rc;
}

int workspace_init(const struct workspace_init_options *opts, struct workspace_init_result *out)
{
    const char *template_name =
        opts->template_name ? opts->template_name : WORKSPACE_DEFAULT_TEMPLATE;
    char *template_path = NULL;
    struct file_list files = {0};
    git_repository *repo = NULL;
    git_signature *sig = NULL;
    struct store *store = NULL;
    char *message = NULL;
    char abs[PATH_MAX];
    bool empty = true, gitignore_changed = false;
    git_oid commit_id;
    int rc;

    memset(out, 0, sizeof *out);
    git_libgit2_init();
    if ((rc = find_template(template_name, &template_path)) < 0)
        goto cleanup;
    if (fs_exists(opts->dir) && !fs_is_dir(opts->dir)) {
        rc = error_setc(TH_EEXISTS, "'%s' exists and is not a directory", opts->dir);
        goto cleanup;
    }
    if ((rc = fs_dir_is_empty(opts->dir, ".git", &empty)) < 0)
        goto cleanup;
    if (!empty && !opts->force) {
        rc = error_setc(TH_EEXISTS,
                        "'%s' is not empty; choose a new directory, or pass "
                        "--force to add the workspace files to it (existing files are never "
                        "overwritten)",
                        opts->dir);
        goto cleanup;
    }
    if ((rc = fs_mkdir_p(opts->dir, 0755)) < 0)
        goto cleanup;
    if (!realpath(opts->dir, abs)) {
        rc = error_set("cannot resolve '%s': %s", opts->dir, strerror(errno));
        goto cleanup;
    }
    if ((rc = fs_copy_tree(template_path, abs, collect_file, &files)) < 0) {
        if (rc == TH_EEXISTS)
            error_prefix("cannot add template '%s' to '%s'", template_name, opts->dir);
        goto cleanup;
    }
    if ((rc = ensure_gitignore(abs, &gitignore_changed)) < 0)
        goto cleanup;
    if (gitignore_changed)
        file_list_add(&files, ".gitignore");
    if (files.n)
        qsort(files.items, files.n, sizeof *files.items, compare_strings);

    if ((rc = open_or_init_repo(abs, &repo, &out->reused_repo)) < 0 ||
        (rc = make_signature(repo, &sig, &out->default_author)) < 0)
        goto cleanup;
    message = xasprintf("Baseline from template '%s'\n\n"
                        "The thalamus workspace as created by 'thalamus init': the task\n"
                        "(TASK.md), its configuration (thalamus.lua) and the baseline\n"
                        "experiment that the research loop builds on.\n\n"
                        "Thalamus-Template: %s\n",
                        template_name, template_name);
    if ((rc = commit_files(repo, &files, message, sig, &commit_id, &out->branch)) < 0)
        goto cleanup;

    char hex[GIT_OID_HEXSZ + 1];
    git_oid_tostr(hex, sizeof hex, &commit_id);
    if ((rc = workspace_store_open(abs, &store)) < 0 ||
        (rc = record_info(store, "template", template_name)) < 0 ||
        (rc = record_info(store, "baseline_commit", hex)) < 0 ||
        (rc = record_info(store, "created_with", "thalamus " THALAMUS_VERSION)) < 0)
        goto cleanup;
    out->dir = xstrdup(abs);
    out->commit = xstrdup(hex);
    out->files = files.items;
    files.items = NULL;
cleanup:
    if (rc < 0) {
        free(out->branch);
        out->branch = NULL;
    }
    store_close(store);
    for (size_t i = 0; i < files.n && files.items; i++)
        free(files.items[i]);
    free(files.items);
    free(message);
    git_signature_free(sig);
    git_repository_free(repo);
    free(template_path);
    git_libgit2_shutdown();
    return rc;
}

void workspace_init_result_free(struct workspace_init_result *r)
{
    for (char **f = r->files; f && *f; f++)
        free(*f);
    free(r->files);
    free(r->dir);
    free(r->commit);
    free(r->branch);
    memset(r, 0, sizeof *r);
}

/* ---- discovery --------------------------------------------------------- */

int workspace_find(const char *start, char **out)
{
    char path[PATH_MAX];
    if (!realpath(start, path))
        return error_set("cannot resolve '%s': %s", start, strerror(errno));
    for (;;) {
        char *lua = fs_join(path, "thalamus.lua");
        bool found = fs_exists(lua);
        free(lua);
        if (found) {
            *out = xstrdup(path);
            return 0;
        }
        char *slash = strrchr(path, '/');
        if (!slash || slash == path)
            break;
        *slash = '\0';
    }
    return error_setc(TH_ENOTFOUND,
                      "not in a thalamus workspace ('%s' and its parents hold no thalamus.lua); "
                      "run 'thalamus init DIR' to create one, or pass -C DIR",
                      start);
}
