/*
 * agent_edits: applying a coder's edits inside an experiment directory, all
 * or nothing.
 *
 * First every edit is worked out in memory: paths are checked (relative, no
 * '..', confined beneath the directory, so a symbolic link cannot lead
 * outside), a search/replace block must match the current text exactly once,
 * and several edits of one file apply in order. Then each new file is
 * written to a temporary file beside its target and synced; only when all
 * are written are they renamed into place, and the originals are kept as
 * hard links until every rename has succeeded, so that a failure half-way
 * puts every file back. Files in a run's work directory (.thalamus/runs/)
 * are not synced: resume rebuilds those directories from git, so a crash
 * loses nothing there, and the sync would cost most of the loop's own time
 * per experiment. A failure names the edit and says why, so the coder can
 * be asked again with the reason. Depends on confine, workspace (the state
 * directory's name), buf, alloc, error and cJSON.
 */
#include "agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "confine.h"
#include "error.h"
#include "workspace.h"

#define MAX_FILES 256

struct target {
    char *path; /* relative to the directory */
    struct buf text;
    bool existed;
    mode_t mode;
    int dirfd;    /* the target's directory */
    char *base;   /* last component */
    char *tmp;    /* temporary name in dirfd, once written */
    char *backup; /* hard link to the original, once made */
    bool renamed;
};

static struct target *find_target(struct target *list, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i].path, path))
            return &list[i];
    return NULL;
}

static size_t count_occurrences(const char *hay, const char *needle, const char **first)
{
    size_t n = 0, len = strlen(needle);
    *first = NULL;
    for (const char *p = hay; (p = strstr(p, needle)); p += len) {
        if (!*first)
            *first = p;
        n++;
    }
    return n;
}

static char *first_line(const char *s)
{
    size_t n = strcspn(s, "\n");
    return n > 60 ? xasprintf("%.57s...", s) : xstrndup(s, n);
}

/* Works out the new text of every file. */
static int plan(int dirfd, const cJSON *edits, struct target **out, size_t *nout)
{
    size_t n = 0, cap = 8;
    struct target *list = xcalloc(cap, sizeof *list);
    int rc = 0, i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, edits)
    {
        i++;
        const char *path = cJSON_GetObjectItemCaseSensitive(e, "path")->valuestring;
        if ((rc = confine_check(path)) < 0) {
            error_prefix("edit %d", i);
            break;
        }
        struct target *t = find_target(list, n, path);
        if (!t) {
            if (n == MAX_FILES) {
                rc = error_set("the edits touch more than %d files", MAX_FILES);
                break;
            }
            if (n == cap)
                list = xreallocarray(list, cap *= 2, sizeof *list);
            t = &list[n++];
            memset(t, 0, sizeof *t);
            t->path = xstrdup(path);
            t->dirfd = -1;
            t->mode = 0644;
            buf_init(&t->text, AGENT_MAX_FILE);
            int fd;
            int orc = confine_open(dirfd, path, O_RDONLY, 0, &fd);
            if (orc == 0) {
                struct stat st;
                if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
                    close(fd);
                    rc = error_set("edit %d: '%s' is not a regular file", i, path);
                    break;
                }
                t->mode = st.st_mode & 07777;
                close(fd);
                if ((rc = confine_read(dirfd, path, &t->text)) < 0) {
                    error_prefix("edit %d", i);
                    break;
                }
                t->existed = true;
            } else if (orc != TH_ENOTFOUND) {
                rc = error_prefix("edit %d: '%s' is refused", i, path);
                break;
            } else {
                error_clear();
            }
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (content) {
            buf_reset(&t->text);
            if ((rc = buf_puts(&t->text, content->valuestring)) < 0) {
                error_prefix("edit %d ('%s')", i, path);
                break;
            }
            continue;
        }
        const char *search = cJSON_GetObjectItemCaseSensitive(e, "search")->valuestring;
        const char *replace = cJSON_GetObjectItemCaseSensitive(e, "replace")->valuestring;
        if (!t->existed && t->text.len == 0) {
            rc = error_set("edit %d: '%s' does not exist, so it cannot be searched; give its whole "
                           "text as content",
                           i, path);
            break;
        }
        const char *at;
        size_t count = count_occurrences(buf_str(&t->text), search, &at);
        if (count != 1) {
            char *line = first_line(search);
            if (count == 0)
                rc = error_set("edit %d: the search text (starting \"%s\") is not in '%s'; copy "
                               "it exactly from the current file",
                               i, line, path);
            else
                rc = error_set("edit %d: the search text (starting \"%s\") occurs %zu times in "
                               "'%s'; include more lines so that it matches once",
                               i, line, count, path);
            free(line);
            break;
        }
        struct buf next;
        buf_init(&next, AGENT_MAX_FILE);
        size_t pre = (size_t)(at - buf_str(&t->text));
        if (buf_append(&next, t->text.data, pre) < 0 || buf_puts(&next, replace) < 0 ||
            buf_puts(&next, at + strlen(search)) < 0) {
            buf_free(&next);
            rc = error_prefix("edit %d ('%s')", i, path);
            break;
        }
        buf_free(&t->text);
        t->text = next;
    }
    *out = list;
    *nout = n;
    return rc;
}

static void targets_free(struct target *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct target *t = &list[i];
        if (t->tmp && t->dirfd >= 0 && !t->renamed)
            unlinkat(t->dirfd, t->tmp, 0);
        if (t->backup && t->dirfd >= 0)
            unlinkat(t->dirfd, t->backup, 0);
        if (t->dirfd >= 0)
            close(t->dirfd);
        free(t->path);
        free(t->base);
        free(t->tmp);
        free(t->backup);
        buf_free(&t->text);
    }
    free(list);
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        data += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Whether dir (relative to the workspace) is in a run's work directory,
 * .thalamus/runs/..., which resume rebuilds from git. */
static bool in_run_dir(const char *dir)
{
    static const char *const parts[] = {WORKSPACE_STATE_DIR, "runs"};
    const char *p = dir;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        while (*p == '/' || (p[0] == '.' && p[1] == '/'))
            p += *p == '/' ? 1 : 2;
        size_t len = strlen(parts[i]);
        if (strncmp(p, parts[i], len) || (p[len] != '/' && p[len] != '\0'))
            return false;
        p += len;
    }
    return true;
}

/* Writes the temporary file of t, synced when durable. */
static int stage(int dirfd, struct target *t, unsigned seq, bool durable)
{
    char *dir;
    confine_split(t->path, &dir, &t->base);
    int rc = confine_open_dir(dirfd, dir, true, &t->dirfd);
    free(dir);
    if (rc < 0)
        return error_prefix("'%s' is refused", t->path);
    for (int attempt = 0; attempt < 100; attempt++) {
        free(t->tmp);
        t->tmp = xasprintf(".%s.thalamus-%d-%u-%d", t->base, (int)getpid(), seq, attempt);
        int fd =
            openat(t->dirfd, t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, t->mode);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0) {
            free(t->tmp);
            t->tmp = NULL;
            return error_set("cannot write '%s': %s", t->path, strerror(errno));
        }
        if (fchmod(fd, t->mode) < 0 ||
            write_all(fd, t->text.data ? t->text.data : "", t->text.len) < 0 ||
            (durable && fsync(fd) < 0)) {
            int err = errno;
            close(fd);
            return error_set("cannot write '%s': %s", t->path, strerror(err));
        }
        if (close(fd) < 0)
            return error_set("cannot write '%s': %s", t->path, strerror(errno));
        break;
    }
    if (!t->existed)
        return 0;
    /* keep the original until every rename succeeded */
    struct stat st;
    if (fstatat(t->dirfd, t->base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return error_set("'%s' is a directory", t->path);
    t->backup = xasprintf(".%s.thalamus-backup-%d-%u", t->base, (int)getpid(), seq);
    unlinkat(t->dirfd, t->backup, 0);
    if (linkat(t->dirfd, t->base, t->dirfd, t->backup, 0) < 0) {
        free(t->backup);
        t->backup = NULL;
        return error_set("cannot keep a copy of '%s': %s", t->path, strerror(errno));
    }
    return 0;
}

int agent_edits_apply(int ws_fd, const char *dir, const cJSON *edits, cJSON **applied)
{
    *applied = NULL;
    int rc = confine_check(dir);
    if (rc < 0)
        return error_prefix("the experiment directory");
    int dirfd;
    if ((rc = confine_open_dir(ws_fd, dir, false, &dirfd)) < 0)
        return error_prefix("the experiment directory");
    struct target *list = NULL;
    size_t n = 0;
    rc = plan(dirfd, edits, &list, &n);
    bool durable = !in_run_dir(dir);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = stage(dirfd, &list[i], (unsigned)i, durable);
    size_t done = 0;
    for (; rc == 0 && done < n; done++) {
        struct target *t = &list[done];
        if (renameat(t->dirfd, t->tmp, t->dirfd, t->base) < 0)
            rc = error_set("cannot replace '%s': %s", t->path, strerror(errno));
        else
            t->renamed = true;
    }
    if (rc < 0) {
        /* put back what was replaced */
        for (size_t i = 0; i < n; i++) {
            struct target *t = &list[i];
            if (!t->renamed)
                continue;
            if (t->backup)
                renameat(t->dirfd, t->backup, t->dirfd, t->base);
            else
                unlinkat(t->dirfd, t->base, 0);
            if (t->backup) {
                free(t->backup);
                t->backup = NULL;
            }
        }
    } else {
        cJSON *paths = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(paths, cJSON_CreateString(list[i].path));
        *applied = paths;
    }
    targets_free(list, n);
    close(dirfd);
    return rc;
}
