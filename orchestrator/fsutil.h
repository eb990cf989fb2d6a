/*
 * fsutil: file-system helpers shared by the commands.
 *
 * Joining paths, creating directory chains, checking emptiness, copying a
 * template tree without overwriting anything, writing files atomically
 * (temporary file, fsync, rename), and locating the data directory (templates
 * and built-in agents) relative to the running binary, so that an installed
 * thalamus never depends on its source tree. Depends on alloc, buf, error.
 */
#ifndef THALAMUS_FSUTIL_H
#define THALAMUS_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* "a/b", with exactly one slash between the parts; the caller frees it. */
char *fs_join(const char *a, const char *b);

bool fs_exists(const char *path);
bool fs_is_dir(const char *path);

/* Creates path and its missing parents (like mkdir -p). */
int fs_mkdir_p(const char *path, mode_t mode);

/* Sets *out to whether directory path holds nothing but the entry named
 * ignore (which may be NULL). A missing directory counts as empty. */
int fs_dir_is_empty(const char *path, const char *ignore, bool *out);

/* Removes path, a file or a directory with all it holds (symbolic links
 * are removed, not followed). A missing path is fine. */
int fs_remove_tree(const char *path);

/* Writes all len bytes to fd, retrying short writes and EINTR. Returns 0, or
 * -1 with errno set (no message is recorded: callers word their own). */
int fs_write_all(int fd, const void *buf, size_t len);

/* Writes data to path through a temporary file in the same directory, fsynced
 * and renamed into place, so that readers see the old or the new file, never
 * half of one. */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Called for each regular file a copy creates, with its path relative to the
 * destination. */
typedef void (*fs_copy_cb)(const char *relpath, void *ud);

/* Copies the tree under src into dst (created if missing), keeping the
 * executable bit, skipping __pycache__ folders. Refuses (TH_EEXISTS, nothing
 * written) when any file to copy already exists in dst; the message lists the
 * first ones. Symbolic links and special files in src are refused. */
int fs_copy_tree(const char *src, const char *dst, fs_copy_cb cb, void *ud);

/* The directory holding thalamus's templates/ and agents/: THALAMUS_DATA_DIR
 * when set, otherwise share/thalamus next to the binary's bin/ directory.
 * The caller frees *out. */
int fs_data_dir(char **out);

#endif
