/*
 * confine: opening, reading and creating files beneath a directory without
 * leaving it (see confine.h).
 */
#include "confine.h"

#include "alloc.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* 1: openat2 works, 0: not tried yet, -1: unavailable (walk instead). */
static int have_openat2;

int confine_check(const char *path)
{
    if (!path || !*path)
        return error_setc(TH_EUSAGE, "an empty path is not allowed");
    size_t len = strlen(path);
    if (len >= PATH_MAX)
        return error_setc(TH_EUSAGE, "the path '%.60s...' is too long", path);
    if (path[0] == '/')
        return error_setc(TH_EUSAGE,
                          "'%s' is an absolute path; use a path relative to the directory", path);
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return error_setc(TH_EUSAGE, "the path '%s' holds a control character", path);
    const char *p = path;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0)
            return error_setc(TH_EUSAGE,
                              "the path '%s' has an empty component ('//' or a "
                              "trailing '/')",
                              path);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return error_setc(TH_EUSAGE, "the path '%s' goes up with '..'; paths must stay inside",
                              path);
        if (n == 1 && p[0] == '.')
            return error_setc(TH_EUSAGE, "the path '%s' has a '.' component", path);
        p += n;
        if (*p == '/') {
            p++;
            if (!*p)
                return error_setc(TH_EUSAGE, "the path '%s' ends with '/'", path);
        }
    }
    return 0;
}

static int open_error(const char *path, int err)
{
    switch (err) {
    case ENOENT:
        return error_setc(TH_ENOTFOUND, "'%s' does not exist", path);
    case EXDEV:
    case ELOOP:
        return error_setc(TH_EUSAGE, "'%s' leads outside through a symbolic link", path);
    case ENOTDIR:
        return error_setc(TH_EUSAGE, "a component of '%s' is not a directory", path);
    default:
        return error_set("cannot open '%s': %s", path, strerror(err));
    }
}

static int try_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long fd;
    do
        fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (fd < 0 && errno == EINTR);
    return (int)fd;
}

/* The fallback: one component at a time, refusing every symbolic link. */
static int walk_open(int dirfd, const char *path, int flags, mode_t mode)
{
    int cur = dirfd;
    const char *p = path;
    for (;;) {
        const char *slash = strchr(p, '/');
        if (!slash) {
            int fd = openat(cur, p, flags | O_NOFOLLOW | O_CLOEXEC, mode);
            int err = errno;
            if (cur != dirfd)
                close(cur);
            errno = err;
            return fd;
        }
        char comp[NAME_MAX + 1];
        size_t n = (size_t)(slash - p);
        if (n > NAME_MAX) {
            if (cur != dirfd)
                close(cur);
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        if (cur != dirfd)
            close(cur);
        if (next < 0) {
            errno = err == ENOTDIR ? ELOOP : err; /* a symlink to a directory */
            return -1;
        }
        cur = next;
        p = slash + 1;
    }
}

int confine_open(int dirfd, const char *path, int flags, mode_t mode, int *out)
{
    int rc = confine_check(path);
    if (rc < 0)
        return rc;
    int fd = -1;
    if (have_openat2 >= 0) {
        fd = try_openat2(dirfd, path, flags, mode);
        if (fd >= 0) {
            have_openat2 = 1;
        } else if (have_openat2 == 0 && (errno == ENOSYS || errno == EPERM)) {
            have_openat2 = -1; /* not there, or filtered: walk from now on */
        } else {
            int err = errno;
            if (err == ELOOP && (flags & O_NOFOLLOW))
                err = EXDEV;
            return open_error(path, err);
        }
    }
    if (fd < 0) {
        fd = walk_open(dirfd, path, flags, mode);
        if (fd < 0)
            return open_error(path, errno);
    }
    *out = fd;
    return 0;
}

int confine_open_dir(int dirfd, const char *path, bool create, int *out)
{
    if (!path || !*path) {
        int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return error_set("cannot duplicate a directory descriptor: %s", strerror(errno));
        *out = fd;
        return 0;
    }
    int rc = confine_check(path);
    if (rc < 0)
        return rc;
    rc = confine_open(dirfd, path, O_RDONLY | O_DIRECTORY, 0, out);
    if (rc != TH_ENOTFOUND || !create)
        return rc;
    /* create the missing components one by one */
    error_clear();
    char *copy = xstrdup(path);
    int parent = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (parent < 0) {
        free(copy);
        return error_set("cannot duplicate a directory descriptor: %s", strerror(errno));
    }
    char *p = copy;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        if (mkdirat(parent, p, 0777) < 0 && errno != EEXIST) {
            rc =
                error_set("cannot create the directory '%s' of '%s': %s", p, path, strerror(errno));
            break;
        }
        int next;
        if ((rc = confine_open(parent, p, O_RDONLY | O_DIRECTORY, 0, &next)) < 0) {
            error_prefix("cannot open '%s'", path);
            break;
        }
        close(parent);
        parent = next;
        if (!slash) {
            *out = parent;
            parent = -1;
            break;
        }
        p = slash + 1;
    }
    if (parent >= 0)
        close(parent);
    free(copy);
    return rc;
}

int confine_read(int dirfd, const char *path, struct buf *b)
{
    int fd;
    int rc = confine_open(dirfd, path, O_RDONLY, 0, &fd);
    if (rc < 0)
        return rc;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return error_setc(TH_EUSAGE, "'%s' is not a regular file", path);
    }
    rc = buf_read_fd(b, fd, path);
    close(fd);
    return rc;
}

void confine_split(const char *path, char **dir, char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        *dir = xstrdup("");
        *base = xstrdup(path);
        return;
    }
    *dir = xstrndup(path, (size_t)(slash - path));
    *base = xstrdup(slash + 1);
}
