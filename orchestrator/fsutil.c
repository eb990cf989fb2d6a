/*
 * fsutil: path joining, directory creation, tree copies, atomic writes and
 * data-directory lookup (see fsutil.h).
 */
#include "fsutil.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *fs_join(const char *a, const char *b)
{
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/')
        la--;
    while (*b == '/')
        b++;
    if (la == 0)
        return xstrdup(b);
    if (la == 1 && a[0] == '/')
        return xasprintf("/%s", b);
    return xasprintf("%.*s/%s", (int)la, a, b);
}

bool fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

bool fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fs_mkdir_p(const char *path, mode_t mode)
{
    char *p = xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            rc = error_set("cannot create directory '%s': %s", p, strerror(errno));
            break;
        }
        if (!fs_is_dir(p)) {
            rc = error_set("cannot create directory '%s': a file of that name exists", p);
            break;
        }
        *s = saved;
        if (saved == '\0')
            break;
    }
    free(p);
    return rc;
}

int fs_dir_is_empty(const char *path, const char *ignore, bool *out)
{
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) {
            *out = true;
            return 0;
        }
        return error_set("cannot read directory '%s': %s", path, strerror(errno));
    }
    *out = true;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (ignore && !strcmp(e->d_name, ignore))
            continue;
        *out = false;
        break;
    }
    closedir(d);
    return 0;
}

int fs_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : error_set("cannot read '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return error_set("cannot open '%s': %s", path, strerror(errno));
        struct dirent *e;
        int rc = 0;
        while (rc == 0 && (e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char *sub = fs_join(path, e->d_name);
            rc = fs_remove_tree(sub);
            free(sub);
        }
        closedir(d);
        if (rc == 0 && rmdir(path) < 0)
            rc = error_set("cannot remove '%s': %s", path, strerror(errno));
        return rc;
    }
    if (unlink(path) < 0)
        return error_set("cannot remove '%s': %s", path, strerror(errno));
    return 0;
}

int fs_write_all(int fd, const void *buf, size_t len)
{
    const char *data = buf;
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = error_set("cannot create '%s': %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (fs_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        rc = error_set("cannot write '%s': %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto cleanup;
    }
    if (close(fd) < 0) {
        rc = error_set("cannot write '%s': %s", path, strerror(errno));
        unlink(tmp);
        goto cleanup;
    }
    if (rename(tmp, path) < 0) {
        rc = error_set("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        unlink(tmp);
    }
cleanup:
    free(tmp);
    return rc;
}

static int copy_file(const char *src, const char *dst, mode_t mode)
{
    struct buf b;
    buf_init(&b, 0);
    int rc = buf_read_file(&b, src);
    if (rc == 0)
        rc = fs_write_atomic(dst, b.data ? b.data : "", b.len, (mode & 0111) ? 0755 : 0644);
    buf_free(&b);
    return rc;
}

/* One walk over src serves both phases of a copy: first with copy false,
 * counting the files whose destination exists; then with copy true. */
struct copy_walk {
    bool copy;
    struct buf conflicts; /* the first few clashes, quoted */
    int count;
    fs_copy_cb cb;
    void *ud;
};

static void note_conflict(struct copy_walk *w, const char *rel)
{
    if (++w->count <= 5)
        buf_printf(&w->conflicts, "%s'%s'", w->count > 1 ? ", " : "", rel);
}

static int walk_tree(const char *src, const char *dst, const char *rel, struct copy_walk *w)
{
    if (w->copy && fs_mkdir_p(dst, 0755) < 0)
        return TH_ERR;
    DIR *d = opendir(src);
    if (!d)
        return error_set("cannot read directory '%s': %s", src, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "__pycache__"))
            continue;
        char *s = fs_join(src, e->d_name);
        char *t = fs_join(dst, e->d_name);
        char *r = rel[0] ? fs_join(rel, e->d_name) : xstrdup(e->d_name);
        struct stat st;
        if (lstat(s, &st) < 0) {
            rc = error_set("cannot read '%s': %s", s, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (!w->copy && fs_exists(t) && !fs_is_dir(t))
                note_conflict(w, r);
            else
                rc = walk_tree(s, t, r, w);
        } else if (!S_ISREG(st.st_mode)) {
            rc = error_set("cannot copy '%s': only regular files and directories are supported", s);
        } else if (!w->copy) {
            if (fs_exists(t))
                note_conflict(w, r);
        } else if ((rc = copy_file(s, t, st.st_mode)) == 0 && w->cb) {
            w->cb(r, w->ud);
        }
        free(s);
        free(t);
        free(r);
    }
    closedir(d);
    return rc;
}

int fs_copy_tree(const char *src, const char *dst, fs_copy_cb cb, void *ud)
{
    struct copy_walk w = {.copy = false, .cb = cb, .ud = ud};
    buf_init(&w.conflicts, 4096);
    int rc = walk_tree(src, dst, "", &w);
    if (rc == 0 && w.count > 0)
        rc = error_setc(TH_EEXISTS, "%d file%s would be overwritten: %s%s", w.count,
                        w.count == 1 ? "" : "s", buf_str(&w.conflicts), w.count > 5 ? ", ..." : "");
    if (rc == 0) {
        w.copy = true;
        rc = walk_tree(src, dst, "", &w);
    }
    buf_free(&w.conflicts);
    return rc;
}

int fs_data_dir(char **out)
{
    const char *env = getenv("THALAMUS_DATA_DIR");
    if (env && *env) {
        if (!fs_is_dir(env))
            return error_setc(TH_ENOTFOUND,
                              "THALAMUS_DATA_DIR is '%s', which is not a directory; "
                              "unset it or point it at an installed share/thalamus",
                              env);
        *out = xstrdup(env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0)
        return error_set("cannot find the thalamus binary through /proc/self/exe: %s; "
                         "set THALAMUS_DATA_DIR to the share/thalamus directory",
                         strerror(errno));
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    char *joined = fs_join(exe, THALAMUS_BIN_TO_DATA);
    char resolved[PATH_MAX];
    int rc = 0;
    if (!realpath(joined, resolved) || !fs_is_dir(resolved))
        rc = error_setc(TH_ENOTFOUND,
                        "cannot find thalamus's data directory (looked for '%s'); "
                        "reinstall with 'cmake --install' or set THALAMUS_DATA_DIR",
                        joined);
    else
        *out = xstrdup(resolved);
    free(joined);
    return rc;
}
