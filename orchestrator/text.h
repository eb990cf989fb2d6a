/*
 * text: small string algorithms shared by the command line and the config
 * validator: edit distance and "did you mean" suggestions. Depends on
 * nothing but libc.
 */
#ifndef THALAMUS_TEXT_H
#define THALAMUS_TEXT_H

#include <stddef.h>

/* Edit distance between a and b (case-sensitive): insertions, deletions,
 * substitutions and swaps of neighbouring characters each count one. */
size_t text_edit_distance(const char *a, const char *b);

/* The candidate closest to word when it is close enough to be a likely typo
 * (a small edit distance relative to the length, or word is a prefix of
 * exactly one candidate), else NULL. candidates is NULL-terminated. */
const char *text_closest(const char *word, const char *const *candidates);

#endif
