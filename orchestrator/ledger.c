/*
 * ledger: experiments as git commits, written with libgit2 straight into the
 * object database (see ledger.h). Depends on alloc, buf, error, fsutil,
 * libgit2 and POSIX threads.
 */
#include "ledger.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <git2/sys/odb_backend.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"

struct stage;

struct ledger {
    git_repository *repo;
    git_odb *odb;
    struct stage *stage; /* owned by odb */
    char *workspace;
};

static int git_fail(const char *what)
{
    const git_error *e = git_error_last();
    return error_set("%s: %s", what, e && e->message ? e->message : "unknown libgit2 error");
}

/* ---- objects kept in memory until they are needed on disk ------------------ */

/* An object database backend, consulted before the repository's own, that
 * keeps in memory the objects ledger_write_tree() and a commit made later
 * write: a tree recorded just before an experiment starts, or the commit
 * of the one that just ended, reaches the disk (a few new files, each
 * costly on some file systems) only when stage_flush() runs, once the next
 * experiment is under way or at the latest before a ref, a note or a
 * commit written at once could point at it. Reads and existence checks see
 * the kept objects meanwhile, so this process can use them at once.
 * Streamed writes (large files) pass through to the disk. */
struct staged {
    git_oid id;
    git_object_t type;
    size_t len;
    unsigned char *data;
};

struct stage {
    git_odb_backend parent;
    bool accept; /* new objects are kept (inside ledger_write_tree) */
    struct staged *items;
    size_t n, cap, bytes;
};

/* Kept objects are written out when they exceed this, even mid-tree. */
#define STAGE_MAX_BYTES ((size_t)64 << 20)

static struct staged *stage_find(struct stage *s, const git_oid *id)
{
    for (size_t i = s->n; i-- > 0;)
        if (git_oid_equal(&s->items[i].id, id))
            return &s->items[i];
    return NULL;
}

static int stage_read(void **data, size_t *len, git_object_t *type, git_odb_backend *be,
                      const git_oid *id)
{
    struct staged *o = stage_find((struct stage *)be, id);
    if (!o)
        return GIT_ENOTFOUND;
    if (!(*data = git_odb_backend_data_alloc(be, o->len ? o->len : 1)))
        return -1;
    memcpy(*data, o->data, o->len);
    *len = o->len;
    *type = o->type;
    return 0;
}

static int stage_read_header(size_t *len, git_object_t *type, git_odb_backend *be,
                             const git_oid *id)
{
    struct staged *o = stage_find((struct stage *)be, id);
    if (!o)
        return GIT_ENOTFOUND;
    *len = o->len;
    *type = o->type;
    return 0;
}

static int stage_exists(git_odb_backend *be, const git_oid *id)
{
    return stage_find((struct stage *)be, id) != NULL;
}

static int stage_write(git_odb_backend *be, const git_oid *id, const void *data, size_t len,
                       git_object_t type)
{
    struct stage *s = (struct stage *)be;
    if (!s->accept)
        return GIT_PASSTHROUGH;
    if (s->n == s->cap)
        s->items = xreallocarray(s->items, s->cap = s->cap ? s->cap * 2 : 16, sizeof *s->items);
    struct staged *o = &s->items[s->n++];
    o->id = *id;
    o->type = type;
    o->len = len;
    o->data = xmalloc(len ? len : 1);
    memcpy(o->data, data, len);
    s->bytes += len;
    return 0;
}

static int stage_writestream(git_odb_stream **out, git_odb_backend *be, git_object_size_t size,
                             git_object_t type)
{
    (void)out, (void)be, (void)size, (void)type;
    return GIT_PASSTHROUGH;
}

static void stage_free(git_odb_backend *be)
{
    struct stage *s = (struct stage *)be;
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i].data);
    free(s->items);
    free(s);
}

/* Writes the kept objects to the repository's object database on disk. On
 * a failure the objects not yet written stay kept. */
static int stage_flush(struct ledger *l)
{
    struct stage *s = l->stage;
    bool accept = s->accept;
    int rc = 0;
    s->accept = false;
    while (s->n > 0) {
        /* out of the stage first, or the database would find it there */
        struct staged o = s->items[--s->n];
        git_oid id;
        if (git_odb_write(&id, l->odb, o.data, o.len, o.type) < 0) {
            s->items[s->n++] = o;
            rc = git_fail("cannot write an object to git");
            break;
        }
        s->bytes -= o.len;
        free(o.data);
    }
    s->accept = accept;
    return rc;
}

int ledger_flush(struct ledger *l)
{
    return stage_flush(l);
}

static int stage_add(git_odb *odb, struct stage **out)
{
    struct stage *s = xcalloc(1, sizeof *s);
    git_odb_init_backend(&s->parent, GIT_ODB_BACKEND_VERSION);
    s->parent.read = stage_read;
    s->parent.read_header = stage_read_header;
    s->parent.exists = stage_exists;
    s->parent.write = stage_write;
    s->parent.writestream = stage_writestream;
    s->parent.free = stage_free;
    /* above the loose (1) and packed (2) backends */
    if (git_odb_add_backend(odb, &s->parent, 1000) < 0) {
        free(s);
        return git_fail("cannot prepare the object database");
    }
    *out = s;
    return 0;
}

int ledger_open(struct ledger **out, const char *workspace)
{
    git_libgit2_init();
    /* libgit2 keeps no blobs in its object cache by default: materialising
     * an experiment read each of its files from the object database again */
    git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, (int)GIT_OBJECT_BLOB, (size_t)256 << 10);
    git_repository *repo = NULL;
    if (git_repository_open_ext(&repo, workspace, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
        git_libgit2_shutdown();
        return error_set("'%s' is not a git repository; experiments are recorded as git commits, "
                         "so run 'git init' there or create the workspace with 'thalamus init'",
                         workspace);
    }
    git_odb *odb = NULL;
    if (git_repository_odb(&odb, repo) < 0) {
        int rc = git_fail("cannot open the repository's object database");
        git_repository_free(repo);
        git_libgit2_shutdown();
        return rc;
    }
    struct stage *stage = NULL;
    int rc = stage_add(odb, &stage);
    if (rc < 0) {
        git_odb_free(odb);
        git_repository_free(repo);
        git_libgit2_shutdown();
        return rc;
    }
    struct ledger *l = xcalloc(1, sizeof *l);
    l->repo = repo;
    l->odb = odb;
    l->stage = stage;
    l->workspace = xstrdup(workspace);
    *out = l;
    return 0;
}

void ledger_free(struct ledger *l)
{
    if (!l)
        return;
    if (l->stage->n > 0) {
        /* kept objects are still unreferenced: write them if possible, and
         * keep the message of an error being reported */
        char *msg = xstrdup(error_message());
        int code = error_code();
        if (stage_flush(l) < 0) {
            if (msg[0])
                error_setc(code, "%s", msg);
            else
                error_clear();
        }
        free(msg);
    }
    git_odb_free(l->odb);
    git_repository_free(l->repo);
    free(l->workspace);
    free(l);
    git_libgit2_shutdown();
}

int ledger_head(struct ledger *l, char out[LEDGER_HEX_SIZE])
{
    git_oid oid;
    if (git_reference_name_to_id(&oid, l->repo, "HEAD") < 0)
        return error_setc(TH_ENOTFOUND, "the repository has no commit yet: commit the baseline "
                                        "experiment first");
    git_oid_tostr(out, LEDGER_HEX_SIZE, &oid);
    return 0;
}

static int lookup_commit(struct ledger *l, const char *hex, git_commit **out)
{
    git_oid oid;
    if (git_oid_fromstr(&oid, hex) < 0 || git_commit_lookup(out, l->repo, &oid) < 0)
        return error_setc(TH_ENOTFOUND, "commit '%.12s' is not in the repository", hex);
    return 0;
}

/* The tree of the experiment directory of commit hex. */
static int experiment_tree(struct ledger *l, const char *hex, git_tree **out)
{
    git_commit *c = NULL;
    git_tree *root = NULL;
    git_tree_entry *e = NULL;
    int rc = lookup_commit(l, hex, &c);
    if (rc < 0)
        return rc;
    if (git_commit_tree(&root, c) < 0) {
        rc = git_fail("cannot read a commit's tree");
        goto cleanup;
    }
    if (git_tree_entry_bypath(&e, root, LEDGER_EXPERIMENT) < 0 ||
        git_tree_entry_type(e) != GIT_OBJECT_TREE) {
        rc = error_setc(TH_ENOTFOUND, "commit '%.12s' has no '%s/' directory", hex,
                        LEDGER_EXPERIMENT);
        goto cleanup;
    }
    if (git_tree_lookup(out, l->repo, git_tree_entry_id(e)) < 0)
        rc = git_fail("cannot read the experiment's tree");
cleanup:
    git_tree_entry_free(e);
    git_tree_free(root);
    git_commit_free(c);
    return rc;
}

bool ledger_has_experiment(struct ledger *l, const char *commit)
{
    git_tree *t = NULL;
    int rc = experiment_tree(l, commit, &t);
    git_tree_free(t);
    if (rc < 0)
        error_clear();
    return rc == 0;
}

/* ---- materialising a tree --------------------------------------------------- */

/* Materialising has two halves: listing what to create (reading the tree
 * and its blobs through libgit2, in the ledger's thread) and creating it
 * (system calls only, no libgit2 and no error_set(), so that another thread
 * can do it: ledger_materialise_start()). */

/* One thing to create: a directory, a file or a symbolic link. */
struct out_entry {
    char *path; /* under the directory being written */
    char *data; /* a file's bytes, a link's target */
    size_t len;
    git_filemode_t mode;
};

struct ledger_writeout {
    char *dir;
    struct out_entry *e;
    size_t n, cap;
    /* the outcome: 0, or the errno of the first failure, on failed_path */
    int err;
    const char *failed_what; /* "create", "write" */
    const char *failed_path;
    bool dir_made; /* dir exists already (the synchronous form makes it) */
    pthread_t thread;
    bool threaded;
};

static void writeout_free(struct ledger_writeout *w)
{
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].path);
        free(w->e[i].data);
    }
    free(w->e);
    free(w->dir);
    free(w);
}

/* Lists what tree holds, under path, into w. */
static int list_tree(struct ledger *l, git_tree *tree, const char *path, struct ledger_writeout *w)
{
    int rc = 0;
    size_t n = git_tree_entrycount(tree);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const git_tree_entry *te = git_tree_entry_byindex(tree, i);
        git_filemode_t mode = git_tree_entry_filemode(te);
        if (mode != GIT_FILEMODE_TREE && mode != GIT_FILEMODE_BLOB &&
            mode != GIT_FILEMODE_BLOB_EXECUTABLE && mode != GIT_FILEMODE_LINK)
            continue; /* submodules are left out */
        if (w->n == w->cap)
            w->e = xreallocarray(w->e, w->cap = w->cap ? w->cap * 2 : 16, sizeof *w->e);
        struct out_entry *e = &w->e[w->n++];
        memset(e, 0, sizeof *e);
        e->path = fs_join(path, git_tree_entry_name(te));
        e->mode = mode;
        if (mode == GIT_FILEMODE_TREE) {
            git_tree *sub = NULL;
            if (git_tree_lookup(&sub, l->repo, git_tree_entry_id(te)) < 0)
                rc = git_fail("cannot read a tree");
            else
                rc = list_tree(l, sub, e->path, w);
            git_tree_free(sub);
            continue;
        }
        git_blob *blob = NULL;
        if (git_blob_lookup(&blob, l->repo, git_tree_entry_id(te)) < 0) {
            rc = git_fail("cannot read a file from git");
            continue;
        }
        e->len = (size_t)git_blob_rawsize(blob);
        e->data = xmalloc(e->len + 1);
        memcpy(e->data, git_blob_rawcontent(blob), e->len);
        e->data[e->len] = '\0'; /* a link's target is a string */
        git_blob_free(blob);
    }
    return rc;
}

/* Creates what w lists; on a failure stops and records it in w. */
static void write_out(struct ledger_writeout *w)
{
    w->err = 0;
    w->failed_what = "create";
    w->failed_path = w->dir;
    if (!w->dir_made && mkdir(w->dir, 0755) < 0 && errno != EEXIST) {
        w->err = errno;
        return;
    }
    for (size_t i = 0; i < w->n; i++) {
        const struct out_entry *e = &w->e[i];
        w->failed_what = "create";
        w->failed_path = e->path;
        if (e->mode == GIT_FILEMODE_TREE) {
            if (mkdir(e->path, 0755) < 0 && errno != EEXIST)
                w->err = errno;
        } else if (e->mode == GIT_FILEMODE_LINK) {
            if (symlink(e->data, e->path) < 0)
                w->err = errno;
        } else {
            int fd = open(e->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                          e->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644);
            if (fd < 0) {
                w->err = errno;
                return;
            }
            w->failed_what = "write";
            if (fs_write_all(fd, e->data, e->len) < 0)
                w->err = errno;
            if (close(fd) < 0 && !w->err)
                w->err = errno;
        }
        if (w->err)
            return;
    }
}

/* The outcome of w as this module's error; frees w. */
static int writeout_result(struct ledger_writeout *w)
{
    int rc = w->err
                 ? error_set("cannot %s '%s': %s", w->failed_what, w->failed_path, strerror(w->err))
                 : 0;
    writeout_free(w);
    return rc;
}

/* Creates dir, and its parents when they are missing. */
static int make_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST)
        return 0;
    if (errno == ENOENT) { /* the first experiment of a run: create the run's directory */
        char *parent = xstrdup(dir);
        char *slash = strrchr(parent, '/');
        int rc = 0;
        if (slash && slash != parent) {
            *slash = '\0';
            rc = fs_mkdir_p(parent, 0755);
        }
        free(parent);
        if (rc < 0)
            return rc;
        if (mkdir(dir, 0755) == 0 || errno == EEXIST)
            return 0;
    }
    return error_set("cannot create '%s': %s", dir, strerror(errno));
}

/* Removes dir (with make, creates it again, and its parents when they are
 * missing) and lists the experiment directory of commit for it. */
static int writeout_prepare(struct ledger *l, const char *commit, const char *dir, bool make,
                            struct ledger_writeout **out)
{
    git_tree *tree = NULL;
    int rc = experiment_tree(l, commit, &tree);
    if (rc == 0)
        rc = fs_remove_tree(dir);
    if (rc == 0 && make)
        rc = make_dir(dir);
    struct ledger_writeout *w = xcalloc(1, sizeof *w);
    w->dir = xstrdup(dir);
    w->dir_made = make;
    if (rc == 0)
        rc = list_tree(l, tree, dir, w);
    git_tree_free(tree);
    if (rc < 0) {
        writeout_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int ledger_materialise(struct ledger *l, const char *commit, const char *dir)
{
    struct ledger_writeout *w = NULL;
    int rc = writeout_prepare(l, commit, dir, true, &w);
    if (rc < 0)
        return rc;
    write_out(w);
    return writeout_result(w);
}

static void *writeout_thread(void *arg)
{
    write_out(arg);
    return NULL;
}

int ledger_materialise_start(struct ledger *l, const char *commit, const char *dir,
                             struct ledger_writeout **out)
{
    *out = NULL;
    struct ledger_writeout *w = NULL;
    /* the thread creates dir too (creating is what takes long on some
     * disks): its parent must exist */
    int rc = writeout_prepare(l, commit, dir, false, &w);
    if (rc < 0)
        return rc;
    /* the thread takes no signal: they are this one's to handle */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    w->threaded = pthread_create(&w->thread, NULL, writeout_thread, w) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!w->threaded)
        write_out(w); /* no thread to be had: at once, then */
    *out = w;
    return 0;
}

int ledger_materialise_finish(struct ledger_writeout *w)
{
    if (!w)
        return 0;
    if (w->threaded)
        pthread_join(w->thread, NULL);
    return writeout_result(w);
}

/* ---- building a tree from a directory ---------------------------------------- */

static bool skipped(const char *name)
{
    return !strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, ".git") ||
           !strcmp(name, "__pycache__") || !strcmp(name, "results.json");
}

/* Files up to this size are read into memory and stored from there; a
 * larger one is streamed by libgit2 from its path. */
#define BLOB_IN_MEMORY ((size_t)32 << 20)

/* Stores the regular file name of the directory dirfd (path names it in
 * messages) as a blob. Written from memory, an object already in the
 * database is found by its hash and not written again (a stream would
 * write a temporary file first), and no filter of .gitattributes applies:
 * the blob holds the file's bytes, as ledger_materialise writes them back. */
static int store_file(struct ledger *l, int dirfd, const char *name, const char *path,
                      const struct stat *st, git_oid *out)
{
    if ((size_t)st->st_size > BLOB_IN_MEMORY) {
        if (git_blob_create_from_disk(out, l->repo, path) < 0)
            return git_fail("cannot store a file in git");
        return 0;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return error_set("cannot open '%s': %s", path, strerror(errno));
    struct buf b;
    buf_init(&b, BLOB_IN_MEMORY);
    int rc = buf_read_fd(&b, fd, path);
    close(fd);
    if (rc == 0 && git_odb_write(out, l->odb, b.data ? b.data : "", b.len, GIT_OBJECT_BLOB) < 0)
        rc = git_fail("cannot store a file in git");
    buf_free(&b);
    if (rc == 0 && l->stage->bytes > STAGE_MAX_BYTES)
        rc = stage_flush(l);
    return rc;
}

/* Writes the directory dirfd (named path in messages; the fd is consumed)
 * as a tree; *empty says whether it had no entry. */
static int build_tree(struct ledger *l, int dirfd, const char *path, git_oid *out, bool *empty)
{
    git_treebuilder *tb = NULL;
    DIR *d = NULL;
    int rc = 0;
    if (git_treebuilder_new(&tb, l->repo, NULL) < 0) {
        close(dirfd);
        return git_fail("cannot build a tree");
    }
    if (!(d = fdopendir(dirfd))) {
        rc = error_set("cannot open '%s': %s", path, strerror(errno));
        close(dirfd);
        goto cleanup;
    }
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (skipped(e->d_name))
            continue;
        char *sub = fs_join(path, e->d_name);
        struct stat st;
        git_oid oid;
        git_filemode_t mode = 0;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = error_set("cannot read '%s': %s", sub, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            bool sub_empty;
            int fd = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                rc = error_set("cannot open '%s': %s", sub, strerror(errno));
            else
                rc = build_tree(l, fd, sub, &oid, &sub_empty);
            if (rc == 0 && !sub_empty)
                mode = GIT_FILEMODE_TREE;
        } else if (S_ISREG(st.st_mode)) {
            rc = store_file(l, dirfd, e->d_name, sub, &st, &oid);
            mode = (st.st_mode & 0111) ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlinkat(dirfd, e->d_name, target, sizeof target);
            if (n < 0 || (size_t)n >= sizeof target)
                rc = error_set("cannot read the link '%s'", sub);
            else if (git_odb_write(&oid, l->odb, target, (size_t)n, GIT_OBJECT_BLOB) < 0)
                rc = git_fail("cannot store a link in git");
            mode = GIT_FILEMODE_LINK;
        } /* sockets, fifos and devices are not experiment files */
        if (rc == 0 && mode && git_treebuilder_insert(NULL, tb, e->d_name, &oid, mode) < 0)
            rc = git_fail("cannot add an entry to a tree");
        free(sub);
    }
    if (rc == 0) {
        *empty = git_treebuilder_entrycount(tb) == 0;
        if (git_treebuilder_write(out, tb) < 0)
            rc = git_fail("cannot write a tree");
    }
cleanup:
    if (d)
        closedir(d);
    git_treebuilder_free(tb);
    return rc;
}

int ledger_write_tree(struct ledger *l, const char *dir, char out[LEDGER_HEX_SIZE])
{
    git_oid oid;
    bool empty;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return error_set("cannot open '%s': %s", dir, strerror(errno));
    l->stage->accept = true;
    int rc = build_tree(l, fd, dir, &oid, &empty);
    l->stage->accept = false;
    if (rc == 0)
        git_oid_tostr(out, LEDGER_HEX_SIZE, &oid);
    return rc;
}

/* ---- commits, refs and notes -------------------------------------------------- */

/* GIT_AUTHOR_NAME and GIT_AUTHOR_EMAIL, else the repository's identity,
 * else "thalamus <thalamus@localhost>" (as the baseline commit); dated now,
 * or at when (seconds since the epoch, UTC) when it is positive. */
static int signature(git_repository *repo, long long when, git_signature **out)
{
    const char *name = getenv("GIT_AUTHOR_NAME"), *email = getenv("GIT_AUTHOR_EMAIL");
    git_signature *now = NULL;
    if (!(name && *name && email && *email && git_signature_now(&now, name, email) == 0) &&
        git_signature_default(&now, repo) < 0 &&
        git_signature_now(&now, "thalamus", "thalamus@localhost") < 0)
        return git_fail("cannot create a git signature");
    if (when <= 0) {
        *out = now;
        return 0;
    }
    int rc = git_signature_new(out, now->name, now->email, (git_time_t)when, 0);
    git_signature_free(now);
    return rc < 0 ? git_fail("cannot create a git signature") : 0;
}

static char *ref_name(const char *run, const char *node)
{
    return xasprintf(LEDGER_REF_PREFIX "%s/%s", run, node);
}

static char *message_of(const struct ledger_commit *c)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    const char *title = c->title && c->title[0] ? c->title : "Experiment";
    /* the title is one line */
    buf_append(&b, title, strcspn(title, "\n"));
    buf_puts(&b, "\n\n");
    if (c->body && c->body[0]) {
        buf_puts(&b, c->body);
        if (b.data[b.len - 1] != '\n')
            buf_putc(&b, '\n');
        buf_putc(&b, '\n');
    }
    buf_printf(&b, "Thalamus-Run: %s\n", c->run);
    buf_printf(&b, "Thalamus-Node: %s\n", c->node);
    buf_printf(&b, "Thalamus-Status: %s\n", c->status);
    if (c->metric)
        buf_printf(&b, "Thalamus-Metric: %s=%s\n", c->metric_name, c->metric);
    buf_printf(&b, "Thalamus-Model: %s\n", c->model ? c->model : "offline");
    return buf_detach(&b, NULL);
}

int ledger_set_ref(struct ledger *l, const char *run, const char *node, const char *commit)
{
    git_oid oid;
    git_reference *ref = NULL;
    int rc = stage_flush(l);
    if (rc < 0)
        return rc;
    char *name = ref_name(run, node);
    if (git_oid_fromstr(&oid, commit) < 0)
        rc = error_set("'%s' is not a commit id", commit);
    else if (git_reference_create(&ref, l->repo, name, &oid, 1, "thalamus: experiment") < 0)
        rc = git_fail("cannot write the experiment's ref");
    git_reference_free(ref);
    free(name);
    return rc;
}

/* A subtree of the notes tree being rewritten: the notes of the commits
 * whose ids start with dir. */
struct note_dir {
    char dir[3];
    git_treebuilder *tb;
};

/* Writes the notes as one new commit of LEDGER_NOTES_REF whose tree holds
 * each at "ab/cdef..." (the commit id's first two hex digits, then the
 * rest), the fan-out git itself uses for large notes trees, so that adding
 * notes rewrites a tree of at most 256 entries and a small one per note,
 * not a tree of every experiment's note. git and libgit2 read notes at any
 * depth; a note of the same commit written flat (by an older thalamus, or
 * git notes on a small tree) is replaced. */
static int write_notes(struct ledger *l, const struct ledger_note *notes, size_t n,
                       const git_signature *sig)
{
    git_reference *ref = NULL;
    git_commit *parent = NULL;
    git_tree *root = NULL, *tree = NULL;
    git_treebuilder *rb = NULL;
    struct note_dir *dirs = xcalloc(n, sizeof *dirs);
    size_t ndirs = 0;
    git_oid root_id, id;
    int rc = 0;
    int found = git_reference_lookup(&ref, l->repo, LEDGER_NOTES_REF);
    if (found < 0 && found != GIT_ENOTFOUND) {
        rc = git_fail("cannot read the notes");
        goto cleanup;
    }
    if (found == 0 && (git_commit_lookup(&parent, l->repo, git_reference_target(ref)) < 0 ||
                       git_commit_tree(&root, parent) < 0)) {
        rc = git_fail("cannot read the notes");
        goto cleanup;
    }
    if (git_treebuilder_new(&rb, l->repo, root) < 0) {
        rc = git_fail("cannot write the experiments' notes");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        git_oid commit, blob;
        char hex[GIT_OID_HEXSZ + 1];
        if (git_oid_fromstr(&commit, notes[i].commit) < 0) {
            rc = error_set("'%s' is not a commit id", notes[i].commit);
            goto cleanup;
        }
        git_oid_tostr(hex, sizeof hex, &commit);
        struct note_dir *d = NULL;
        for (size_t k = 0; k < ndirs && !d; k++)
            if (!memcmp(dirs[k].dir, hex, 2))
                d = &dirs[k];
        if (!d) {
            d = &dirs[ndirs++];
            memcpy(d->dir, hex, 2);
            git_tree *sub = NULL;
            const git_tree_entry *e = git_treebuilder_get(rb, d->dir);
            if (e && git_tree_entry_type(e) == GIT_OBJECT_TREE &&
                git_tree_lookup(&sub, l->repo, git_tree_entry_id(e)) < 0) {
                rc = git_fail("cannot read the notes");
                goto cleanup;
            }
            int made = git_treebuilder_new(&d->tb, l->repo, sub);
            git_tree_free(sub);
            if (made < 0) {
                rc = git_fail("cannot write the experiments' notes");
                goto cleanup;
            }
        }
        if (git_odb_write(&blob, l->odb, notes[i].text, strlen(notes[i].text), GIT_OBJECT_BLOB) <
                0 ||
            git_treebuilder_insert(NULL, d->tb, hex + 2, &blob, GIT_FILEMODE_BLOB) < 0) {
            rc = git_fail("cannot write the experiments' notes");
            goto cleanup;
        }
        if (git_treebuilder_get(rb, hex))
            git_treebuilder_remove(rb, hex);
    }
    for (size_t k = 0; k < ndirs; k++) {
        git_oid sub_id;
        if (git_treebuilder_write(&sub_id, dirs[k].tb) < 0 ||
            git_treebuilder_insert(NULL, rb, dirs[k].dir, &sub_id, GIT_FILEMODE_TREE) < 0) {
            rc = git_fail("cannot write the experiments' notes");
            goto cleanup;
        }
    }
    const git_commit *parents[1] = {parent};
    if (git_treebuilder_write(&root_id, rb) < 0 || git_tree_lookup(&tree, l->repo, &root_id) < 0 ||
        git_commit_create(&id, l->repo, LEDGER_NOTES_REF, sig, sig, NULL,
                          "Notes added by thalamus\n", tree, parent ? 1 : 0, parents) < 0)
        rc = git_fail("cannot write the experiments' notes");
cleanup:
    for (size_t k = 0; k < ndirs; k++)
        git_treebuilder_free(dirs[k].tb);
    free(dirs);
    git_treebuilder_free(rb);
    git_tree_free(tree);
    git_tree_free(root);
    git_commit_free(parent);
    git_reference_free(ref);
    return rc;
}

int ledger_add_notes(struct ledger *l, const struct ledger_note *notes, size_t n)
{
    if (n == 0)
        return 0;
    git_signature *sig = NULL;
    int rc = stage_flush(l);
    if (rc == 0)
        rc = signature(l->repo, 0, &sig);
    if (rc == 0)
        rc = write_notes(l, notes, n, sig);
    git_signature_free(sig);
    return rc;
}

int ledger_commit(struct ledger *l, const struct ledger_commit *c, char out[LEDGER_HEX_SIZE])
{
    git_commit *parent = NULL;
    git_tree *base = NULL, *tree = NULL;
    git_treebuilder *tb = NULL;
    git_signature *sig = NULL;
    git_oid sub, tree_id, commit_id;
    char *message = NULL;
    /* the experiment's tree, before anything on disk points at it */
    int rc = c->later ? 0 : stage_flush(l);
    if (rc == 0)
        rc = lookup_commit(l, c->parent, &parent);
    if (rc < 0)
        return rc;
    if ((rc = signature(l->repo, c->time, &sig)) < 0)
        goto cleanup;
    l->stage->accept = c->later;
    if (git_oid_fromstr(&sub, c->tree) < 0) {
        rc = error_set("'%s' is not a tree id", c->tree);
        goto cleanup;
    }
    if (git_commit_tree(&base, parent) < 0 || git_treebuilder_new(&tb, l->repo, base) < 0 ||
        git_treebuilder_insert(NULL, tb, LEDGER_EXPERIMENT, &sub, GIT_FILEMODE_TREE) < 0 ||
        git_treebuilder_write(&tree_id, tb) < 0 || git_tree_lookup(&tree, l->repo, &tree_id) < 0) {
        rc = git_fail("cannot build the experiment's tree");
        goto cleanup;
    }
    message = message_of(c);
    const git_commit *parents[1] = {parent};
    if (git_commit_create(&commit_id, l->repo, NULL, sig, sig, NULL, message, tree, 1, parents) <
        0) {
        rc = git_fail("cannot commit the experiment");
        goto cleanup;
    }
    git_oid_tostr(out, LEDGER_HEX_SIZE, &commit_id);
    if (c->later)
        goto cleanup; /* the caller writes the ref */
    /* The note first: the ref is what marks the experiment as committed. */
    if (c->note) {
        struct ledger_note note = {out, c->note};
        if ((rc = write_notes(l, &note, 1, sig)) < 0)
            goto cleanup;
    }
    rc = ledger_set_ref(l, c->run, c->node, out);
cleanup:
    l->stage->accept = false;
    free(message);
    git_signature_free(sig);
    git_treebuilder_free(tb);
    git_tree_free(tree);
    git_tree_free(base);
    git_commit_free(parent);
    return rc;
}

int ledger_find(struct ledger *l, const char *run, const char *node, char out[LEDGER_HEX_SIZE])
{
    char *name = ref_name(run, node);
    git_oid oid;
    int rc = 0;
    if (git_reference_name_to_id(&oid, l->repo, name) < 0)
        rc = error_setc(TH_ENOTFOUND, "no ref '%s'", name);
    else
        git_oid_tostr(out, LEDGER_HEX_SIZE, &oid);
    free(name);
    return rc;
}

static int print_line(const git_diff_delta *delta, const git_diff_hunk *hunk,
                      const git_diff_line *line, void *payload)
{
    struct buf *b = payload;
    (void)delta;
    (void)hunk;
    if (line->origin == GIT_DIFF_LINE_CONTEXT || line->origin == GIT_DIFF_LINE_ADDITION ||
        line->origin == GIT_DIFF_LINE_DELETION)
        buf_putc(b, line->origin);
    buf_append(b, line->content, line->content_len);
    return 0;
}

/* The patch from tree a to tree b (opts may be NULL) as text in *out. */
static int diff_text(struct ledger *l, git_tree *a, git_tree *b, const git_diff_options *opts,
                     char **out)
{
    git_diff *diff = NULL;
    struct buf text;
    buf_init(&text, 4 << 20);
    int rc = 0;
    if (git_diff_tree_to_tree(&diff, l->repo, a, b, opts) < 0 ||
        git_diff_print(diff, GIT_DIFF_FORMAT_PATCH, print_line, &text) < 0)
        rc = git_fail("cannot compute the diff");
    else
        *out = text.data ? buf_detach(&text, NULL) : xstrdup("");
    buf_free(&text);
    git_diff_free(diff);
    return rc;
}

int ledger_diff(struct ledger *l, const char *a, const char *b, char **out)
{
    git_commit *ca = NULL, *cb = NULL;
    git_tree *ta = NULL, *tb = NULL;
    int rc = lookup_commit(l, a, &ca);
    if (rc == 0)
        rc = lookup_commit(l, b, &cb);
    if (rc < 0)
        goto cleanup;
    if (git_commit_tree(&ta, ca) < 0 || git_commit_tree(&tb, cb) < 0) {
        rc = git_fail("cannot read a commit's tree");
        goto cleanup;
    }
    git_diff_options opts;
    git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
    char *paths[1] = {LEDGER_EXPERIMENT};
    opts.pathspec.strings = paths;
    opts.pathspec.count = 1;
    rc = diff_text(l, ta, tb, &opts, out);
cleanup:
    git_tree_free(ta);
    git_tree_free(tb);
    git_commit_free(ca);
    git_commit_free(cb);
    return rc;
}

int ledger_diff_tree(struct ledger *l, const char *parent, const char *tree, char **out)
{
    git_tree *pt = NULL, *nt = NULL;
    git_oid oid;
    int rc = experiment_tree(l, parent, &pt);
    if (rc < 0)
        return rc;
    if (git_oid_fromstr(&oid, tree) < 0 || git_tree_lookup(&nt, l->repo, &oid) < 0)
        rc = error_setc(TH_ENOTFOUND, "tree '%.12s' is not in the repository", tree);
    else
        rc = diff_text(l, pt, nt, NULL, out);
    git_tree_free(pt);
    git_tree_free(nt);
    return rc;
}

int ledger_note(struct ledger *l, const char *commit, char **out)
{
    git_oid oid;
    git_note *note = NULL;
    if (git_oid_fromstr(&oid, commit) < 0)
        return error_set("'%s' is not a commit id", commit);
    if (git_note_read(&note, l->repo, LEDGER_NOTES_REF, &oid) < 0)
        return error_setc(TH_ENOTFOUND, "commit '%.12s' has no note", commit);
    *out = xstrdup(git_note_message(note));
    git_note_free(note);
    return 0;
}
