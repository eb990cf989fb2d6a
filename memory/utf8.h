/*
 * utf8: checking and repairing UTF-8 text before it enters the database.
 *
 * Everything the memory stores comes from outside: model output, experiment
 * output, files and web APIs. SQLite stores whatever bytes it is given, but
 * the full-text tokenizer, JSON functions and terminals expect valid UTF-8,
 * so text is repaired on the way in: every maximal ill-formed subsequence
 * (overlong forms, surrogates, code points above U+10FFFF, truncated
 * sequences, stray continuation bytes) becomes one U+FFFD, as the Unicode
 * standard and WHATWG recommend, and NUL bytes become U+FFFD too so that
 * text never ends early in C. Depends on buf and error.
 */
#ifndef THALAMUS_UTF8_H
#define THALAMUS_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when the bytes at s
 * (n available) do not start one. NUL counts as valid here. */
size_t utf8_sequence_length(const unsigned char *s, size_t n);

/* Whether s[0..n) is valid UTF-8 without NUL bytes. */
bool utf8_valid(const char *s, size_t n);

/* Appends s[0..n) to out with invalid sequences and NUL bytes replaced by
 * U+FFFD; *repaired (may be NULL) tells whether anything was replaced.
 * Fails (TH_ERR) only when out's cap would be exceeded. */
int utf8_repair(struct buf *out, const char *s, size_t n, bool *repaired);

/* Number of bytes of s[0..n) to keep so that at most max bytes remain and no
 * UTF-8 sequence is cut in half (for display and snippets). */
size_t utf8_truncate(const char *s, size_t n, size_t max);

/* Appends the code point cp (which must be a valid scalar value) as UTF-8. */
int utf8_put(struct buf *out, unsigned cp);

#endif
