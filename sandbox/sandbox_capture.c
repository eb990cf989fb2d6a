/*
 * sandbox_capture: keeping a program's output within a cap, head and tail.
 *
 * An experiment may print gigabytes; what matters is how it started and
 * how it ended (the traceback is at the end). A capture keeps the first
 * half of its cap in a struct buf and the last half in a ring, counts
 * everything, and at the end joins them with a marker line saying how many
 * bytes were left out. Also home to the UTF-8 clean-up that output and
 * source lines go through before they become JSON. Depends on alloc, buf
 * and sandbox_internal.h.
 */
#include "sandbox_internal.h"

#include "alloc.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sandbox_capture_init(struct sandbox_capture *c, size_t max)
{
    if (max < 2)
        max = 2;
    buf_init(&c->head, max / 2);
    c->tail_max = max - max / 2;
    c->tail = NULL; /* made when the head is full: most programs never fill it */
    c->tail_len = 0;
    c->tail_pos = 0;
    c->total = 0;
}

void sandbox_capture_add(struct sandbox_capture *c, const char *data, size_t len)
{
    c->total += len;
    size_t room = c->head.max - c->head.len;
    size_t to_head = len < room ? len : room;
    if (to_head) {
        buf_append(&c->head, data, to_head); /* within the cap: cannot fail */
        data += to_head;
        len -= to_head;
    }
    if (len == 0)
        return;
    if (!c->tail)
        c->tail = xmalloc(c->tail_max);
    if (len >= c->tail_max) {
        memcpy(c->tail, data + len - c->tail_max, c->tail_max);
        c->tail_len = c->tail_max;
        c->tail_pos = 0;
        return;
    }
    /* append to the ring at tail_pos + tail_len */
    for (size_t i = 0; i < len; i++) {
        size_t at = (c->tail_pos + c->tail_len) % c->tail_max;
        c->tail[at] = data[i];
        if (c->tail_len < c->tail_max)
            c->tail_len++;
        else
            c->tail_pos = (c->tail_pos + 1) % c->tail_max;
    }
}

void sandbox_capture_finish(struct sandbox_capture *c, struct sandbox_output *out)
{
    struct buf b;
    size_t kept = c->head.len + c->tail_len;
    buf_init(&b, 0);
    buf_append(&b, c->head.data ? c->head.data : "", c->head.len);
    if (kept < c->total)
        buf_printf(&b, "%s[... %zu bytes left out ...]\n",
                   c->head.len && c->head.data[c->head.len - 1] != '\n' ? "\n" : "",
                   c->total - kept);
    size_t first =
        c->tail_max - c->tail_pos < c->tail_len ? c->tail_max - c->tail_pos : c->tail_len;
    if (c->tail_len) {
        buf_append(&b, c->tail + c->tail_pos, first);
        buf_append(&b, c->tail, c->tail_len - first);
    }
    out->total = c->total;
    out->truncated = kept < c->total;
    out->text = buf_detach(&b, &out->len);
    if (!out->text) {
        out->text = xstrdup("");
        out->len = 0;
    }
    sandbox_capture_free(c);
}

void sandbox_capture_free(struct sandbox_capture *c)
{
    buf_free(&c->head);
    free(c->tail);
    c->tail = NULL;
    c->tail_len = c->tail_pos = 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned min;
    unsigned cp;
    if (c >= 0x01 && c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

char *sandbox_utf8_clean(const char *text, size_t len)
{
    struct buf b;
    buf_init(&b, 0);
    const unsigned char *s = (const unsigned char *)text;
    size_t start = 0, i = 0;
    while (i < len) {
        size_t n = utf8_sequence(s + i, len - i);
        if (n) {
            i += n;
            continue;
        }
        buf_append(&b, text + start, i - start);
        buf_puts(&b, "\xef\xbf\xbd"); /* U+FFFD */
        i++;
        start = i;
    }
    buf_append(&b, text + start, i - start);
    char *out = buf_detach(&b, NULL);
    return out ? out : xstrdup("");
}
