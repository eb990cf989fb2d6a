/*
 * buf: a growable byte buffer with a hard cap.
 *
 * Anything that grows from outside input (HTTP bodies, model output,
 * experiment output, files read from a workspace) is collected in a struct
 * buf. Growing past the cap fails with TH_ERR and a message instead of
 * consuming memory without bound. The data is always NUL-terminated, so a
 * buffer of text can be used as a C string. Depends on alloc and error.
 */
#ifndef THALAMUS_BUF_H
#define THALAMUS_BUF_H

#include <stdarg.h>
#include <stddef.h>

#define BUF_DEFAULT_MAX ((size_t)64 << 20) /* 64 MiB */

struct buf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes used, not counting the terminator */
    size_t cap; /* bytes allocated */
    size_t max; /* hard cap on len */
};

/* Initialises an empty buffer that refuses to grow past max bytes (0 means
 * BUF_DEFAULT_MAX). Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Append functions return 0, or TH_ERR when the cap would be exceeded; on
 * failure the buffer is left unchanged. */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);

/* Reads fd to its end into b (which keeps its cap); path names the file in
 * messages. Does not close fd. */
int buf_read_fd(struct buf *b, int fd, const char *path);

/* Reads a whole file into b (which keeps its cap). */
int buf_read_file(struct buf *b, const char *path);

/* The contents as a C string; "" for an empty buffer. Never NULL. */
const char *buf_str(const struct buf *b);

/* Empties the buffer, keeping its allocation. */
void buf_reset(struct buf *b);

/* Hands the data to the caller (who frees it) and empties the buffer. */
char *buf_detach(struct buf *b, size_t *len_out);

void buf_free(struct buf *b);

#endif
