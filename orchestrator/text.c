/*
 * text: edit distance and typo suggestions (see text.h).
 */
#include "text.h"

#include <stdlib.h>
#include <string.h>

size_t text_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), w = lb + 1;
    size_t *d = malloc((la + 1) * w * sizeof *d);
    if (!d)
        return (size_t)-1;
    for (size_t i = 0; i <= la; i++)
        d[i * w] = i;
    for (size_t j = 0; j <= lb; j++)
        d[j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t best = d[(i - 1) * w + j - 1] + (a[i - 1] != b[j - 1]);
            if (d[(i - 1) * w + j] + 1 < best)
                best = d[(i - 1) * w + j] + 1;
            if (d[i * w + j - 1] + 1 < best)
                best = d[i * w + j - 1] + 1;
            /* two neighbouring letters swapped count as one edit */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[(i - 2) * w + j - 2] + 1 < best)
                best = d[(i - 2) * w + j - 2] + 1;
            d[i * w + j] = best;
        }
    }
    size_t result = d[la * w + lb];
    free(d);
    return result;
}

const char *text_closest(const char *word, const char *const *candidates)
{
    const char *best = NULL, *prefix_match = NULL;
    size_t best_d = (size_t)-1;
    int prefix_count = 0;
    size_t wl = strlen(word);
    for (const char *const *c = candidates; *c; c++) {
        size_t d = text_edit_distance(word, *c);
        if (d < best_d) {
            best_d = d;
            best = *c;
        }
        if (wl >= 2 && !strncmp(*c, word, wl)) {
            prefix_match = *c;
            prefix_count++;
        }
    }
    /* one typo in a short word, up to a third of a longer one */
    size_t allowed = wl <= 4 ? 1 : (wl + 2) / 3;
    if (best && best_d <= allowed && best_d < strlen(best))
        return best;
    if (prefix_count == 1)
        return prefix_match;
    return NULL;
}
