/*
 * sandbox_results: reading results.json from a finished sandbox's /work,
 * and opening files beneath a directory without being led out of it.
 *
 * The experiment contract says the program writes results.json, a JSON
 * object. The file is untrusted: it is opened relative to the work
 * directory's fd with O_NOFOLLOW (a symbolic link, to /etc/passwd or to
 * ../anything, is refused, never read), must be a regular file (a fifo
 * would block, a directory is no JSON), and may not exceed a size cap.
 * Whatever is wrong becomes a reason the run is invalid, never a crash.
 * Depends on alloc, buf, error and cJSON.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sandbox_open_beneath(int dirfd, const char *rel, int flags)
{
    if (!rel[0] || rel[0] == '/') {
        errno = EINVAL;
        return -1;
    }
    int cur = dirfd;
    for (const char *s = rel;;) {
        size_t n = strcspn(s, "/");
        char name[256];
        if (n == 0 || n >= sizeof name || (n == 1 && s[0] == '.') ||
            (n == 2 && s[0] == '.' && s[1] == '.')) {
            if (cur != dirfd)
                close(cur);
            errno = n == 0 || n >= sizeof name ? EINVAL : EPERM;
            return -1;
        }
        memcpy(name, s, n);
        name[n] = '\0';
        bool last = s[n] == '\0';
        int next = openat(cur, name,
                          last ? flags | O_NOFOLLOW | O_CLOEXEC
                               : O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        if (cur != dirfd)
            close(cur);
        errno = saved;
        if (next < 0 || last)
            return next;
        cur = next;
        s += n + 1;
    }
}

void sandbox_results_read(int dirfd, size_t max_bytes, cJSON **results, char **error)
{
    *results = NULL;
    *error = NULL;
    if (dirfd < 0) {
        *error = xstrdup("missing");
        return;
    }
    int fd =
        openat(dirfd, "results.json", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            *error = xstrdup("missing");
        else if (errno == ELOOP)
            *error = xstrdup("results.json is a symbolic link; it must be a regular file in "
                             "/work");
        else
            *error = xasprintf("cannot open results.json: %s", strerror(errno));
        return;
    }
    struct stat st;
    struct buf b;
    buf_init(&b, max_bytes);
    if (fstat(fd, &st) < 0) {
        *error = xasprintf("cannot read results.json: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        *error = xstrdup("results.json is not a regular file");
    } else if ((size_t)st.st_size > max_bytes) {
        *error = xasprintf("results.json is larger than the limit of %zu bytes", max_bytes);
    } else {
        char chunk[65536];
        for (;;) {
            ssize_t n = read(fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                *error = xasprintf("cannot read results.json: %s", strerror(errno));
                break;
            }
            if (n == 0)
                break;
            if (buf_append(&b, chunk, (size_t)n) < 0) {
                error_clear();
                *error = xasprintf("results.json is larger than the limit of %zu bytes", max_bytes);
                break;
            }
        }
    }
    close(fd);
    if (!*error) {
        cJSON *j = cJSON_ParseWithLength(buf_str(&b), b.len);
        if (!j) {
            const char *at = cJSON_GetErrorPtr();
            size_t off = at && at >= buf_str(&b) && at <= buf_str(&b) + b.len
                             ? (size_t)(at - buf_str(&b))
                             : b.len;
            *error = b.len == 0 ? xstrdup("results.json is empty")
                                : xasprintf("results.json is not valid JSON (at byte %zu)", off);
        } else if (!cJSON_IsObject(j)) {
            *error = xasprintf("results.json must hold a JSON object, got %s",
                               cJSON_IsArray(j)    ? "an array"
                               : cJSON_IsString(j) ? "a string"
                               : cJSON_IsNumber(j) ? "a number"
                                                   : "a literal");
            cJSON_Delete(j);
        } else {
            *results = j;
        }
    }
    buf_free(&b);
}
