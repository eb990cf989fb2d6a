/*
 * utf8: validation and U+FFFD repair of UTF-8 text (see utf8.h). The
 * decoder follows Table 3-7 of the Unicode standard (well-formed byte
 * sequences), so overlong forms and surrogates are rejected by the ranges of
 * the second byte.
 */
#include "utf8.h"

#include "error.h"

/* The expected length of a sequence starting with byte c, and the range
 * its second byte must lie in; 0 when c cannot start one. */
static size_t lead_byte(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef) {
        if (c == 0xe0)
            *lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            *hi = 0x9f; /* no surrogates */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (c == 0xf0)
            *lo = 0x90; /* no overlong forms */
        else if (c == 0xf4)
            *hi = 0x8f; /* nothing above U+10FFFF */
        return 4;
    }
    return 0;
}

size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
    unsigned char lo, hi;
    size_t len = n ? lead_byte(s[0], &lo, &hi) : 0;
    if (len <= 1)
        return len;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Bytes of the maximal ill-formed subpart at s (n > 0 available): the
 * longest prefix of a well-formed sequence, at least one byte. */
static size_t ill_formed_length(const unsigned char *s, size_t n)
{
    unsigned char lo, hi;
    size_t want = lead_byte(s[0], &lo, &hi);
    size_t i = 1;
    if (want > 1 && i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < n && i < want && s[i] >= 0x80 && s[i] <= 0xbf)
            i++;
    }
    return i;
}

bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] == 0)
            return false;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_sequence_length(p + i, n - i);
        if (!len)
            return false;
        i += len;
    }
    return true;
}

int utf8_repair(struct buf *out, const char *s, size_t n, bool *repaired)
{
    static const char replacement[] = "\xef\xbf\xbd";
    const unsigned char *p = (const unsigned char *)s;
    bool changed = false;
    size_t i = 0, run = 0; /* run: start of the pending valid bytes */
    while (i < n) {
        size_t len = p[i] && p[i] < 0x80 ? 1 : p[i] ? utf8_sequence_length(p + i, n - i) : 0;
        if (len) {
            i += len;
            continue;
        }
        if (buf_append(out, s + run, i - run) < 0 || buf_append(out, replacement, 3) < 0)
            return TH_ERR;
        changed = true;
        i += p[i] ? ill_formed_length(p + i, n - i) : 1;
        run = i;
    }
    if (buf_append(out, s + run, n - run) < 0)
        return TH_ERR;
    if (repaired)
        *repaired = changed;
    return 0;
}

size_t utf8_truncate(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = max;
    /* back up over continuation bytes to the start of the cut sequence */
    while (i > 0 && (p[i] & 0xc0) == 0x80)
        i--;
    return i;
}

int utf8_put(struct buf *out, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return buf_append(out, b, n);
}
