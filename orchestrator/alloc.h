/*
 * alloc: allocation helpers that never return NULL.
 *
 * Out of memory on the small internal allocations of thalamus is not a
 * condition the program can recover from in any useful way, so these abort
 * with a message instead of making every caller test for NULL. Anything sized
 * by outside input goes through struct buf (buf.h), which has a cap.
 * Depends on nothing.
 */
#ifndef THALAMUS_ALLOC_H
#define THALAMUS_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* realloc for an array of count elements, checking the multiplication. */
void *xreallocarray(void *p, size_t count, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A newly allocated formatted string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Says that n bytes could not be allocated and aborts (for allocators of
 * their own, such as mapped arrays). */
void alloc_fail(size_t n) __attribute__((noreturn));

#endif
