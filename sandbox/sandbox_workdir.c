/*
 * sandbox_workdir: copying the experiment's directory into the sandbox's
 * /work and the outcome back out.
 *
 * /work is a directory on the sandbox's own size-capped tmpfs, which is
 * what makes its disk cap exact (a write past it fails with ENOSPC) and
 * keeps the host directory out of the sandbox's reach. Before the program
 * starts, the parent copies the host directory in through an fd the child
 * sent (sandbox_child.c); as root it creates each entry with the
 * sandbox's host uid as its file-system uid (setfsuid), because a file
 * system mounted in the sandbox's user namespace only accepts owners that
 * namespace maps, and so that the program owns its files. After the run,
 * the host directory is made to mirror /work: new and changed files are
 * written (through a temporary name and a rename, which never writes
 * through a hard link), unchanged ones (same size and modification time)
 * are left alone, entries gone from /work are removed, new entries belong
 * to the host directory's owner, and set-uid, set-gid and sticky bits are
 * dropped. Every step works relative to directory fds with O_NOFOLLOW, so a
 * symbolic link planted in /work is copied as a link and never followed,
 * and nothing outside the host directory is touched. Fifos, sockets and
 * device files are neither copied nor removed. Depends on alloc, error,
 * log and sandbox_internal.h.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "alloc.h"
#include "error.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 64

struct copy_ctx {
    const struct sandbox_ids *ids; /* copy in: whose fs ids create entries */
    bool chown_new;                /* copy out as root: give new entries to owner */
    uid_t owner;
    gid_t group;
    unsigned counter; /* temporary names */
};

static void as_sandbox(const struct copy_ctx *c)
{
    if (c->ids && c->ids->root_mode) {
        setfsgid(c->ids->host_gid);
        setfsuid(c->ids->host_uid);
    }
}

static void as_self(const struct copy_ctx *c)
{
    if (c->ids && c->ids->root_mode) {
        setfsuid(geteuid());
        setfsgid(getegid());
    }
}

static int copy_bytes(int from, int to)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(from, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(to, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -1;
            off += w;
        }
    }
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names in directory fd (which stays open), without . and .. */
static int list_dir(int fd, char ***out, size_t *n_out)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        return -1;
    }
    rewinddir(d);
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n == cap)
            names = xreallocarray(names, cap = cap ? 2 * cap : 32, sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, compare_names);
    *out = names;
    *n_out = n;
    return 0;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int fail(const char *what, const char *path, const char *name)
{
    return error_set("cannot %s '%s/%s': %s", what, path, name, strerror(errno));
}

/* ---- copy in ---- */

static int copy_in_dir(struct copy_ctx *c, int src, int dst, const char *path, int depth)
{
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    if (depth > MAX_DEPTH)
        return error_set("cannot copy '%s': deeper than %d levels", path, MAX_DEPTH);
    if (list_dir(src, &names, &n) < 0)
        return error_set("cannot read directory '%s': %s", path, strerror(errno));
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *name = names[i];
        struct stat st;
        if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = fail("read", path, name);
        } else if (S_ISDIR(st.st_mode)) {
            as_sandbox(c);
            int made = mkdirat(dst, name, 0700);
            as_self(c);
            int s = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int d = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (made < 0 || s < 0 || d < 0) {
                rc = fail("copy", path, name);
            } else {
                char *sub = xasprintf("%s/%s", path, name);
                rc = copy_in_dir(c, s, d, sub, depth + 1);
                free(sub);
                if (rc == 0) {
                    fchmod(d, st.st_mode & 0777);
                    struct timespec times[2] = {st.st_atim, st.st_mtim};
                    futimens(d, times);
                }
            }
            if (s >= 0)
                close(s);
            if (d >= 0)
                close(d);
        } else if (S_ISREG(st.st_mode)) {
            int s = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            as_sandbox(c);
            int d = s < 0 ? -1
                          : openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                   0600);
            as_self(c);
            if (s < 0 || d < 0 || copy_bytes(s, d) < 0)
                rc = fail("copy", path, name);
            if (d >= 0) {
                fchmod(d, st.st_mode & 0777);
                struct timespec times[2] = {st.st_atim, st.st_mtim};
                futimens(d, times);
                close(d);
            }
            if (s >= 0)
                close(s);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t len = readlinkat(src, name, target, sizeof target - 1);
            if (len < 0) {
                rc = fail("read the link", path, name);
            } else {
                target[len] = '\0';
                as_sandbox(c);
                int r = symlinkat(target, dst, name);
                as_self(c);
                if (r < 0)
                    rc = fail("copy the link", path, name);
            }
        } else {
            log_debug("not copying '%s/%s' into the sandbox: not a file, directory or link", path,
                      name);
        }
    }
    if (rc < 0 && errno == ENOSPC)
        error_prefix("the work directory does not fit in the sandbox's disk cap");
    free_names(names, n);
    return rc;
}

int sandbox_workdir_copy_in(const char *src, int dst_fd, const struct sandbox_ids *ids)
{
    struct copy_ctx c = {ids, false, 0, 0, 0};
    int s = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s < 0)
        return error_set("cannot open the work directory '%s': %s", src, strerror(errno));
    int rc = copy_in_dir(&c, s, dst_fd, src, 0);
    close(s);
    return rc;
}

/* ---- copy out ---- */

static int remove_entry(int dir, const char *name, int depth)
{
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dir, name, 0);
    if (depth > MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char **names = NULL;
    size_t n = 0;
    int rc = list_dir(fd, &names, &n);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = remove_entry(fd, names[i], depth + 1);
    free_names(names, n);
    close(fd);
    return rc < 0 ? rc : unlinkat(dir, name, AT_REMOVEDIR);
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return S_ISREG(b->st_mode) && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void give(const struct copy_ctx *c, int dir, const char *name, const struct stat *old)
{
    if (!c->chown_new)
        return;
    uid_t u = old ? old->st_uid : c->owner;
    gid_t g = old ? old->st_gid : c->group;
    fchownat(dir, name, u, g, AT_SYMLINK_NOFOLLOW);
}

static int copy_out_file(struct copy_ctx *c, int src, int dst, const char *name,
                         const struct stat *st, const struct stat *old)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, ".thalamus-tmp-%ld-%u", (long)getpid(), c->counter++);
    int s = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int d =
        s < 0 ? -1 : openat(dst, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = 0;
    if (s < 0 || d < 0 || copy_bytes(s, d) < 0) {
        rc = -1;
    } else {
        fchmod(d, st->st_mode & 0777);
        struct timespec times[2] = {st->st_atim, st->st_mtim};
        futimens(d, times);
    }
    int saved = errno;
    if (d >= 0)
        close(d);
    if (s >= 0)
        close(s);
    if (rc == 0) {
        give(c, dst, tmp, old);
        if (old && S_ISDIR(old->st_mode) && remove_entry(dst, name, 0) < 0)
            rc = -1;
        else if (renameat(dst, tmp, dst, name) < 0)
            rc = -1;
        saved = errno;
    }
    if (rc < 0 && d >= 0)
        unlinkat(dst, tmp, 0);
    errno = saved;
    return rc;
}

static int mirror_dir(struct copy_ctx *c, int src, int dst, const char *path, int depth);

static int mirror_entry(struct copy_ctx *c, int src, int dst, const char *path, const char *name,
                        int depth)
{
    struct stat st, old;
    if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return fail("read", "/work", name);
    bool exists = fstatat(dst, name, &old, AT_SYMLINK_NOFOLLOW) == 0;
    if (S_ISDIR(st.st_mode)) {
        if (exists && !S_ISDIR(old.st_mode)) {
            if (remove_entry(dst, name, 0) < 0)
                return fail("replace", path, name);
            exists = false;
        }
        if (!exists) {
            if (mkdirat(dst, name, 0700) < 0)
                return fail("create", path, name);
            give(c, dst, name, NULL);
        }
        int s = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int d = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int rc;
        if (s < 0 || d < 0) {
            rc = fail("open", path, name);
        } else {
            char *sub = xasprintf("%s/%s", path, name);
            rc = mirror_dir(c, s, d, sub, depth + 1);
            free(sub);
            if (rc == 0)
                fchmod(d, st.st_mode & 0777);
        }
        if (s >= 0)
            close(s);
        if (d >= 0)
            close(d);
        return rc;
    }
    if (S_ISREG(st.st_mode)) {
        if (exists && same_file(&st, &old))
            return 0;
        if (copy_out_file(c, src, dst, name, &st, exists ? &old : NULL) < 0)
            return fail("write", path, name);
        return 0;
    }
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX], current[PATH_MAX];
        ssize_t len = readlinkat(src, name, target, sizeof target - 1);
        if (len < 0)
            return fail("read the link", "/work", name);
        target[len] = '\0';
        if (exists && S_ISLNK(old.st_mode)) {
            ssize_t cl = readlinkat(dst, name, current, sizeof current - 1);
            if (cl == len && !memcmp(current, target, (size_t)len))
                return 0;
        }
        if (exists && remove_entry(dst, name, 0) < 0)
            return fail("replace", path, name);
        if (symlinkat(target, dst, name) < 0)
            return fail("create the link", path, name);
        give(c, dst, name, NULL);
        return 0;
    }
    return 0; /* fifos, sockets, devices: not copied */
}

static int mirror_dir(struct copy_ctx *c, int src, int dst, const char *path, int depth)
{
    char **names = NULL, **have = NULL;
    size_t n = 0, nhave = 0;
    int rc = 0;
    if (depth > MAX_DEPTH)
        return error_set("cannot copy back '%s': deeper than %d levels", path, MAX_DEPTH);
    if (list_dir(src, &names, &n) < 0)
        return error_set("cannot read the sandbox's /work: %s", strerror(errno));
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = mirror_entry(c, src, dst, path, names[i], depth);
    if (rc == 0 && list_dir(dst, &have, &nhave) < 0)
        rc = error_set("cannot read directory '%s': %s", path, strerror(errno));
    for (size_t i = 0; i < nhave && rc == 0; i++) {
        if (bsearch(&have[i], names, n, sizeof *names, compare_names))
            continue;
        struct stat old;
        if (fstatat(dst, have[i], &old, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (!S_ISDIR(old.st_mode) && !S_ISREG(old.st_mode) && !S_ISLNK(old.st_mode))
            continue; /* never copied in, so not removed either */
        if (remove_entry(dst, have[i], 0) < 0)
            rc = fail("remove", path, have[i]);
    }
    free_names(names, n);
    free_names(have, nhave);
    return rc;
}

int sandbox_workdir_copy_out(int src_fd, const char *dst)
{
    struct copy_ctx c = {NULL, false, 0, 0, 0};
    int d = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return error_set("cannot open the work directory '%s': %s", dst, strerror(errno));
    struct stat st;
    if (fstat(d, &st) == 0 && geteuid() == 0) {
        c.chown_new = true;
        c.owner = st.st_uid;
        c.group = st.st_gid;
    }
    int rc = mirror_dir(&c, src_fd, d, dst, 0);
    close(d);
    return rc;
}

int sandbox_workdir_remove(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || !slash[1])
        return error_set("cannot remove '%s': not a path to a directory entry", path);
    char *parent = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
    int dir = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (dir < 0 || remove_entry(dir, slash + 1, 0) < 0)
        rc = error_set("cannot remove '%s': %s", path, strerror(errno));
    if (dir >= 0)
        close(dir);
    free(parent);
    return rc;
}
