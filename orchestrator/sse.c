/*
 * sse: incremental server-sent events parser (see sse.h).
 *
 * Lines are cut with memchr over each chunk, so long chunks cost one pass;
 * only the unfinished tail of a chunk is copied into the line buffer.
 */
#include "sse.h"

#include <string.h>

#include "error.h"

#define SSE_DEFAULT_MAX ((size_t)1 << 20)

void sse_init(struct sse_parser *p, size_t max, sse_event_cb cb, void *ud)
{
    memset(p, 0, sizeof *p);
    if (!max)
        max = SSE_DEFAULT_MAX;
    buf_init(&p->line, max);
    buf_init(&p->data, max);
    buf_init(&p->event, 256);
    p->cb = cb;
    p->ud = ud;
}

void sse_free(struct sse_parser *p)
{
    buf_free(&p->line);
    buf_free(&p->data);
    buf_free(&p->event);
}

bool sse_pending(const struct sse_parser *p)
{
    return p->line.len > 0 || p->have_data || p->event.len > 0;
}

static int dispatch(struct sse_parser *p)
{
    int rc = 0;
    if (p->have_data) {
        size_t len = p->data.len;
        if (len && p->data.data[len - 1] == '\n')
            p->data.data[--len] = '\0';
        rc = p->cb(p->event.len ? buf_str(&p->event) : "message", buf_str(&p->data), len, p->ud);
    }
    buf_reset(&p->data);
    buf_reset(&p->event);
    p->have_data = false;
    return rc;
}

static int field(struct sse_parser *p, const char *line, size_t len)
{
    if (len == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0; /* comment */
    const char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t vlen = colon ? len - nlen - 1 : 0;
    if (vlen && *value == ' ') {
        value++;
        vlen--;
    }
    if (nlen == 4 && !memcmp(line, "data", 4)) {
        p->have_data = true;
        if (buf_append(&p->data, value, vlen) < 0 || buf_putc(&p->data, '\n') < 0)
            return error_set("an event of the stream exceeds %zu bytes", p->data.max);
    } else if (nlen == 5 && !memcmp(line, "event", 5)) {
        buf_reset(&p->event);
        if (buf_append(&p->event, value, vlen) < 0)
            return error_set("an event name of the stream exceeds %zu bytes", p->event.max);
    }
    return 0; /* id, retry and unknown fields are ignored */
}

int sse_feed(struct sse_parser *p, const char *data, size_t len)
{
    if (p->failed)
        return error_set("the event stream already failed");
    size_t i = 0;
    if (!p->started) {
        /* a UTF-8 byte-order mark may open the stream, possibly split */
        static const char bom[] = "\xEF\xBB\xBF";
        size_t have = p->line.len, j = 0;
        while (j < len && have + j < 3 && data[j] == bom[have + j])
            j++;
        if (have + j == 3) {
            buf_reset(&p->line);
            p->started = true;
            i = j;
        } else if (j == len) {
            buf_append(&p->line, data, len); /* a prefix of the mark so far */
            return 0;
        } else { /* not a mark: what was held back is text */
            struct buf held = p->line;
            buf_init(&p->line, held.max);
            p->started = true;
            int rc = sse_feed(p, buf_str(&held), held.len);
            buf_free(&held);
            return rc < 0 ? rc : sse_feed(p, data, len);
        }
    }
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = false;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        const char *start = data + i;
        size_t rest = len - i, n = 0;
        while (n < rest && start[n] != '\n' && start[n] != '\r')
            n++;
        if (n == rest) {
            if (buf_append(&p->line, start, n) < 0)
                goto too_long;
            return 0;
        }
        int rc;
        if (p->line.len) {
            if (buf_append(&p->line, start, n) < 0)
                goto too_long;
            rc = field(p, p->line.data, p->line.len);
            buf_reset(&p->line);
        } else {
            rc = field(p, start, n);
        }
        if (rc < 0) {
            p->failed = true;
            return rc;
        }
        p->after_cr = start[n] == '\r';
        i += n + 1;
    }
    return 0;
too_long:
    p->failed = true;
    return error_set("a line of the event stream exceeds %zu bytes", p->line.max);
}
