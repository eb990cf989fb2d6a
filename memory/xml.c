/*
 * xml: the pull reader (see xml.h).
 */
#include "xml.h"

#include "utf8.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT ((size_t)64 << 20)

void xml_init(struct xml_reader *x, const char *s, size_t len)
{
    memset(x, 0, sizeof *x);
    x->s = s;
    x->len = len;
    x->line = 1;
    buf_init(&x->text, MAX_TEXT);
}

static void clear_attrs(struct xml_reader *x)
{
    for (int i = 0; i < x->nattrs; i++)
        free(x->attrs[i].value);
    x->nattrs = 0;
}

void xml_free(struct xml_reader *x)
{
    clear_attrs(x);
    buf_free(&x->text);
}

static enum xml_event fail(struct xml_reader *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum xml_event fail(struct xml_reader *x, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(x->error, sizeof x->error, "line %ld: %s", x->line, msg);
    x->failed = true;
    return XML_ERROR;
}

static void advance(struct xml_reader *x, size_t n)
{
    for (size_t i = 0; i < n && x->pos < x->len; i++)
        if (x->s[x->pos++] == '\n')
            x->line++;
}

static bool starts(const struct xml_reader *x, const char *lit)
{
    size_t n = strlen(lit);
    return x->len - x->pos >= n && !memcmp(x->s + x->pos, lit, n);
}

/* Moves past the next occurrence of end; false when there is none. */
static bool skip_past(struct xml_reader *x, const char *end)
{
    size_t n = strlen(end);
    while (x->pos < x->len) {
        if (starts(x, end)) {
            advance(x, n);
            return true;
        }
        advance(x, 1);
    }
    return false;
}

static bool name_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c == ':' || c >= 0x80;
}

static bool name_char(unsigned char c)
{
    return name_start(c) || isdigit(c) || c == '-' || c == '.';
}

static bool read_name(struct xml_reader *x, char out[XML_MAX_NAME])
{
    size_t start = x->pos;
    if (x->pos >= x->len || !name_start((unsigned char)x->s[x->pos]))
        return false;
    while (x->pos < x->len && name_char((unsigned char)x->s[x->pos]))
        x->pos++;
    size_t n = x->pos - start;
    if (n >= XML_MAX_NAME)
        n = XML_MAX_NAME - 1;
    memcpy(out, x->s + start, n);
    out[n] = '\0';
    return true;
}

static void skip_space(struct xml_reader *x)
{
    while (x->pos < x->len && isspace((unsigned char)x->s[x->pos]))
        advance(x, 1);
}

/* Decodes the entity at x->pos ('&') into out. */
static int entity(struct xml_reader *x, struct buf *out)
{
    static const struct {
        const char *name;
        char c;
    } named[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}};
    const char *semi = memchr(x->s + x->pos, ';', x->len - x->pos < 16 ? x->len - x->pos : 16);
    if (!semi) {
        fail(x, "an '&' that does not start an entity (write &amp;)");
        return -1;
    }
    const char *body = x->s + x->pos + 1;
    size_t n = (size_t)(semi - body);
    if (n >= 2 && body[0] == '#') {
        bool hex = body[1] == 'x' || body[1] == 'X';
        const char *digits = body + (hex ? 2 : 1);
        size_t nd = n - (hex ? 2 : 1);
        unsigned long cp = 0;
        bool ok = nd > 0 && nd <= 8;
        for (size_t i = 0; ok && i < nd; i++) {
            int d = hex && isxdigit((unsigned char)digits[i])
                        ? (isdigit((unsigned char)digits[i]) ? digits[i] - '0'
                                                             : (tolower(digits[i]) - 'a' + 10))
                    : isdigit((unsigned char)digits[i]) ? digits[i] - '0'
                                                        : -1;
            ok = d >= 0;
            cp = cp * (hex ? 16 : 10) + (unsigned long)(d < 0 ? 0 : d);
        }
        if (!ok) {
            fail(x, "a malformed character reference '&%.*s;'", (int)n, body);
            return -1;
        }
        if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            cp = 0xfffd;
        utf8_put(out, (unsigned)cp);
    } else {
        size_t i = 0;
        for (; i < sizeof named / sizeof named[0]; i++)
            if (strlen(named[i].name) == n && !memcmp(named[i].name, body, n))
                break;
        if (i == sizeof named / sizeof named[0]) {
            fail(x, "an unknown entity '&%.*s;'", (int)n, body);
            return -1;
        }
        buf_putc(out, named[i].c);
    }
    advance(x, n + 2);
    return 0;
}

static enum xml_event start_tag(struct xml_reader *x)
{
    advance(x, 1); /* '<' */
    clear_attrs(x);
    if (!read_name(x, x->name))
        return fail(x, "a '<' that does not start a tag");
    for (;;) {
        skip_space(x);
        if (x->pos >= x->len)
            return fail(x, "the input ended inside the tag <%s>", x->name);
        char c = x->s[x->pos];
        if (c == '>' || (c == '/' && starts(x, "/>"))) {
            advance(x, c == '>' ? 1 : 2);
            if (x->depth >= XML_MAX_DEPTH)
                return fail(x, "elements nest deeper than %d", XML_MAX_DEPTH);
            memcpy(x->stack[x->depth++], x->name, XML_MAX_NAME);
            x->pending_end = c == '/';
            return XML_START;
        }
        struct xml_attr a = {0};
        if (!read_name(x, a.name))
            return fail(x, "a malformed attribute in <%s>", x->name);
        skip_space(x);
        if (x->pos >= x->len || x->s[x->pos] != '=')
            return fail(x, "the attribute '%s' of <%s> has no value", a.name, x->name);
        advance(x, 1);
        skip_space(x);
        char quote = x->pos < x->len ? x->s[x->pos] : 0;
        if (quote != '"' && quote != '\'')
            return fail(x, "the value of '%s' in <%s> is not quoted", a.name, x->name);
        advance(x, 1);
        struct buf v;
        buf_init(&v, (size_t)1 << 20);
        while (x->pos < x->len && x->s[x->pos] != quote) {
            if (x->s[x->pos] == '<') {
                buf_free(&v);
                return fail(x, "a '<' inside the attribute '%s'", a.name);
            }
            if (x->s[x->pos] == '&') {
                if (entity(x, &v) < 0) {
                    buf_free(&v);
                    return XML_ERROR;
                }
                continue;
            }
            buf_putc(&v, x->s[x->pos]);
            advance(x, 1);
        }
        if (x->pos >= x->len) {
            buf_free(&v);
            return fail(x, "the value of '%s' is not closed", a.name);
        }
        advance(x, 1);
        a.value = buf_detach(&v, NULL);
        buf_free(&v);
        if (x->nattrs < XML_MAX_ATTRS)
            x->attrs[x->nattrs++] = a;
        else
            free(a.value);
    }
}

static enum xml_event end_tag(struct xml_reader *x)
{
    advance(x, 2); /* "</" */
    if (!read_name(x, x->name))
        return fail(x, "a malformed end tag");
    skip_space(x);
    if (x->pos >= x->len || x->s[x->pos] != '>')
        return fail(x, "the end tag </%s> is not closed", x->name);
    advance(x, 1);
    if (x->depth == 0)
        return fail(x, "the end tag </%s> has no start tag", x->name);
    if (strcmp(x->stack[x->depth - 1], x->name))
        return fail(x, "the end tag </%s> does not match <%s>", x->name, x->stack[x->depth - 1]);
    x->depth--;
    return XML_END;
}

enum xml_event xml_next(struct xml_reader *x)
{
    if (x->failed)
        return XML_ERROR;
    if (x->pending_end) { /* the end of <a/> */
        x->pending_end = false;
        x->depth--;
        return XML_END;
    }
    buf_reset(&x->text);
    for (;;) {
        if (x->pos >= x->len) {
            if (x->depth > 0)
                return fail(x, "the input ended inside <%s>", x->stack[x->depth - 1]);
            return XML_EOF;
        }
        if (x->s[x->pos] != '<') { /* character data up to the next tag */
            while (x->pos < x->len && x->s[x->pos] != '<') {
                if (x->s[x->pos] == '&') {
                    if (entity(x, &x->text) < 0)
                        return XML_ERROR;
                    continue;
                }
                if (buf_putc(&x->text, x->s[x->pos]) < 0)
                    return fail(x, "character data larger than %zu MiB", MAX_TEXT >> 20);
                advance(x, 1);
            }
            if (x->depth == 0) { /* outside the root: only white space */
                for (size_t i = 0; i < x->text.len; i++)
                    if (!isspace((unsigned char)x->text.data[i]))
                        return fail(x, "text outside the root element");
                buf_reset(&x->text);
                continue;
            }
            return XML_TEXT;
        }
        if (starts(x, "<!--")) {
            if (!skip_past(x, "-->"))
                return fail(x, "a comment is not closed");
        } else if (starts(x, "<![CDATA[")) {
            advance(x, 9);
            size_t start = x->pos;
            if (!skip_past(x, "]]>"))
                return fail(x, "a CDATA section is not closed");
            if (buf_append(&x->text, x->s + start, x->pos - start - 3) < 0)
                return fail(x, "a CDATA section larger than %zu MiB", MAX_TEXT >> 20);
            return XML_TEXT;
        } else if (starts(x, "<?")) {
            if (!skip_past(x, "?>"))
                return fail(x, "a processing instruction is not closed");
        } else if (starts(x, "<!DOCTYPE") || starts(x, "<!doctype")) {
            int bracket = 0;
            for (;;) {
                if (x->pos >= x->len)
                    return fail(x, "the DOCTYPE is not closed");
                char c = x->s[x->pos];
                advance(x, 1);
                if (c == '[')
                    bracket++;
                else if (c == ']')
                    bracket--;
                else if (c == '>' && bracket <= 0)
                    break;
            }
        } else if (starts(x, "</")) {
            return end_tag(x);
        } else {
            return start_tag(x);
        }
    }
}

const char *xml_local(const char *name)
{
    const char *colon = strrchr(name, ':');
    return colon ? colon + 1 : name;
}

const char *xml_attr(const struct xml_reader *x, const char *name)
{
    for (int i = 0; i < x->nattrs; i++)
        if (!strcmp(xml_local(x->attrs[i].name), name))
            return x->attrs[i].value;
    return NULL;
}

bool xml_skip_to(struct xml_reader *x, const char *tag, int depth)
{
    size_t n = strlen(tag);
    x->failed = false;
    x->pending_end = false;
    x->error[0] = '\0';
    if (depth < x->depth)
        x->depth = depth;
    while (x->pos < x->len) {
        const char *lt = memchr(x->s + x->pos, '<', x->len - x->pos);
        if (!lt)
            break;
        advance(x, (size_t)(lt - (x->s + x->pos)));
        if (x->len - x->pos > n + 1 && !memcmp(x->s + x->pos + 1, tag, n)) {
            char after = x->s[x->pos + 1 + n];
            if (after == '>' || after == '/' || isspace((unsigned char)after))
                return true;
        }
        advance(x, 1);
    }
    x->pos = x->len;
    return false;
}
