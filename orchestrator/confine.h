/*
 * confine: file access confined beneath a directory.
 *
 * The Lua agents read workspace files and the coder's edits are written into
 * an experiment directory; neither may reach outside. A path given to these
 * functions is relative ("experiment/train.py"): absolute paths, empty
 * components, "." and ".." are refused before anything is opened. Opening
 * then resolves the path beneath a directory file descriptor with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a symbolic link that
 * stays inside works and one that leaves (or any trick with /proc) is
 * refused by the kernel. Where openat2 is missing (Linux before 5.6, or a
 * seccomp filter that hides it) the path is walked one component at a time
 * with O_NOFOLLOW, which refuses every symbolic link. Writes go through a
 * temporary file in the target's directory and a rename, so readers see the
 * old or the new file. Depends on alloc, buf and error.
 */
#ifndef THALAMUS_CONFINE_H
#define THALAMUS_CONFINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

/* Checks that path is a relative path without "..", "." or empty
 * components, at most PATH_MAX bytes, and without NUL or control characters.
 * 0, or TH_EUSAGE with a message that quotes the path and says why. */
int confine_check(const char *path);

/* Opens path beneath the directory dirfd (after confine_check()). flags are
 * open(2) flags; O_CREAT creates a missing file with mode. Fails with a
 * message quoting path: TH_ENOTFOUND when it does not exist, TH_EUSAGE when
 * it leaves the directory through a symbolic link. */
int confine_open(int dirfd, const char *path, int flags, mode_t mode, int *out);

/* Opens (creating missing directories, like mkdir -p, when create) the
 * directory path beneath dirfd; "" is dirfd itself (duplicated). */
int confine_open_dir(int dirfd, const char *path, bool create, int *out);

/* Reads the regular file path beneath dirfd into b (which keeps its cap). */
int confine_read(int dirfd, const char *path, struct buf *b);

/* Splits path into its directory part and its last component: "a/b/c" gives
 * "a/b" and "c", "c" gives "" and "c". The caller frees both. */
void confine_split(const char *path, char **dir, char **base);

#endif
