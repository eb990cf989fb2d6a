/*
 * ingest_bibtex: a tolerant BibTeX reader and a small LaTeX-to-text
 * converter (see ingest.h).
 *
 * The reader follows BibTeX's own rules rather than a strict grammar: text
 * outside entries is a comment; an entry is @type{key, field = value, ...}
 * or with parentheses; values are {braced} (nesting), "quoted" (braces nest
 * inside, so a quote in braces does not end it), numbers or @string macro
 * names, joined with #; field names and entry types are case-insensitive;
 * @comment and @preamble are skipped. A malformed entry (unbalanced
 * braces, a missing '=', no title...) is reported with its key and line,
 * and reading resumes at the next line that starts with '@', so the rest of
 * the file is still read. Depends on ingest, buf, utf8, alloc and error.
 */
#include "ingest.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "utf8.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_MACROS 1000
#define MAX_FIELDS 200

/* ---- LaTeX ----------------------------------------------------------------- */

/* Precomposed letters for accent commands, by base letter (from Unicode's
 * canonical compositions within Latin-1 and Latin Extended-A/B). */
static const unsigned short acc_0[] = {
    0x0e1, 0x107, 0x0e9, 0x1f5, 0x0ed, 0x13a, 0x144, 0x0f3, 0x155, 0x15b, 0x0fa, 0x0fd, 0x17a,
    0x0c1, 0x106, 0x0c9, 0x1f4, 0x0cd, 0x139, 0x143, 0x0d3, 0x154, 0x15a, 0x0da, 0x0dd, 0x179};
static const unsigned short acc_1[] = {0x0e0, 0x0e8, 0x0ec, 0x1f9, 0x0f2, 0x0f9,
                                       0x0c0, 0x0c8, 0x0cc, 0x1f8, 0x0d2, 0x0d9};
static const unsigned short acc_2[] = {0x0e2, 0x109, 0x0ea, 0x11d, 0x125, 0x0ee, 0x135, 0x0f4,
                                       0x15d, 0x0fb, 0x175, 0x177, 0x0c2, 0x108, 0x0ca, 0x11c,
                                       0x124, 0x0ce, 0x134, 0x0d4, 0x15c, 0x0db, 0x174, 0x176};
static const unsigned short acc_3[] = {0x0e4, 0x0eb, 0x0ef, 0x0f6, 0x0fc, 0x0ff,
                                       0x0c4, 0x0cb, 0x0cf, 0x0d6, 0x0dc, 0x178};
static const unsigned short acc_4[] = {0x0e3, 0x129, 0x0f1, 0x0f5, 0x169,
                                       0x0c3, 0x128, 0x0d1, 0x0d5, 0x168};
static const unsigned short acc_5[] = {0x101, 0x113, 0x12b, 0x14d, 0x16b, 0x233,
                                       0x100, 0x112, 0x12a, 0x14c, 0x16a, 0x232};
static const unsigned short acc_6[] = {0x227, 0x10b, 0x117, 0x121, 0x22f, 0x17c, 0x226,
                                       0x10a, 0x116, 0x120, 0x130, 0x22e, 0x17b};
static const unsigned short acc_7[] = {0x103, 0x115, 0x11f, 0x12d, 0x14f, 0x16d,
                                       0x102, 0x114, 0x11e, 0x12c, 0x14e, 0x16c};
static const unsigned short acc_8[] = {
    0x1ce, 0x10d, 0x10f, 0x11b, 0x1e7, 0x21f, 0x1d0, 0x1f0, 0x1e9, 0x13e, 0x148,
    0x1d2, 0x159, 0x161, 0x165, 0x1d4, 0x17e, 0x1cd, 0x10c, 0x10e, 0x11a, 0x1e6,
    0x21e, 0x1cf, 0x1e8, 0x13d, 0x147, 0x1d1, 0x158, 0x160, 0x164, 0x1d3, 0x17d};
static const unsigned short acc_9[] = {0x151, 0x171, 0x150, 0x170};
static const unsigned short acc_10[] = {0x0e7, 0x229, 0x123, 0x137, 0x13c, 0x146,
                                        0x157, 0x15f, 0x163, 0x0c7, 0x228, 0x122,
                                        0x136, 0x13b, 0x145, 0x156, 0x15e, 0x162};
static const unsigned short acc_11[] = {0x105, 0x119, 0x12f, 0x1eb, 0x173,
                                        0x104, 0x118, 0x12e, 0x1ea, 0x172};
static const unsigned short acc_12[] = {0x0e5, 0x16f, 0x0c5, 0x16e};
static const struct accent {
    char command;
    const char *letters;
    const unsigned short *codes;
} accents[] = {
    {'\'', "acegilnorsuyzACEGILNORSUYZ", acc_0},
    {'`', "aeinouAEINOU", acc_1},
    {'^', "aceghijosuwyACEGHIJOSUWY", acc_2},
    {'"', "aeiouyAEIOUY", acc_3},
    {'~', "ainouAINOU", acc_4},
    {'=', "aeiouyAEIOUY", acc_5},
    {'.', "acegozACEGIOZ", acc_6},
    {'u', "aegiouAEGIOU", acc_7},
    {'v', "acdeghijklnorstuzACDEGHIKLNORSTUZ", acc_8},
    {'H', "ouOU", acc_9},
    {'c', "cegklnrstCEGKLNRST", acc_10},
    {'k', "aeiouAEIOU", acc_11},
    {'r', "auAU", acc_12},
};

/* Letter-like commands and what they stand for. */
static const struct {
    const char *name;
    const char *text;
} symbols[] = {
    {"ss", "\xc3\x9f"},
    {"o", "\xc3\xb8"},
    {"O", "\xc3\x98"},
    {"ae", "\xc3\xa6"},
    {"AE", "\xc3\x86"},
    {"oe", "\xc5\x93"},
    {"OE", "\xc5\x92"},
    {"aa", "\xc3\xa5"},
    {"AA", "\xc3\x85"},
    {"l", "\xc5\x82"},
    {"L", "\xc5\x81"},
    {"i", "i"},
    {"j", "j"},
    {"textendash", "\xe2\x80\x93"},
    {"textemdash", "\xe2\x80\x94"},
    {"LaTeX", "LaTeX"},
    {"TeX", "TeX"},
    {"textquoteright", "'"},
    {"textquoteleft", "'"},
    {"ldots", "..."},
    {"dots", "..."},
    {"textasciitilde", "~"},
    {"textunderscore", "_"},
    {"alpha", "alpha"},
    {"beta", "beta"},
    {"gamma", "gamma"},
    {"epsilon", "epsilon"},
    {"lambda", "lambda"},
    {"mu", "mu"},
    {"sigma", "sigma"},
};

static bool is_accent(char c)
{
    for (size_t i = 0; i < sizeof accents / sizeof accents[0]; i++)
        if (accents[i].command == c)
            return true;
    return false;
}

static void put_accented(struct buf *out, char accent, char base)
{
    for (size_t i = 0; i < sizeof accents / sizeof accents[0]; i++) {
        if (accents[i].command != accent)
            continue;
        const char *at = base ? strchr(accents[i].letters, base) : NULL;
        if (at) {
            utf8_put(out, accents[i].codes[at - accents[i].letters]);
            return;
        }
    }
    if (base)
        buf_putc(out, base); /* an unusual pair: keep the letter */
}

/* Reads an accent's argument at s[*i]: "e", "{e}", "{\i}", " e". */
static char accent_argument(const char *s, size_t len, size_t *i)
{
    size_t j = *i;
    while (j < len && s[j] == ' ')
        j++;
    bool braced = j < len && s[j] == '{';
    if (braced)
        j++;
    char base = 0;
    if (j + 1 < len && s[j] == '\\' && (s[j + 1] == 'i' || s[j + 1] == 'j')) {
        base = s[j + 1];
        j += 2;
    } else if (j < len && isalpha((unsigned char)s[j])) {
        base = s[j++];
    }
    if (braced && j < len && s[j] == '}')
        j++;
    *i = j;
    return base;
}

char *ingest_latex_to_text(const char *s, size_t len)
{
    struct buf out;
    buf_init(&out, 0);
    for (size_t i = 0; i < len;) {
        char c = s[i];
        if (c == '{' || c == '}' || c == '$') {
            i++;
        } else if (c == '~') {
            buf_putc(&out, ' ');
            i++;
        } else if (c == '-' && i + 2 < len && s[i + 1] == '-' && s[i + 2] == '-') {
            buf_puts(&out, "\xe2\x80\x94");
            i += 3;
        } else if (c == '-' && i + 1 < len && s[i + 1] == '-') {
            buf_puts(&out, "\xe2\x80\x93");
            i += 2;
        } else if (c != '\\' || i + 1 >= len) {
            buf_putc(&out, c);
            i++;
        } else if (is_accent(s[i + 1]) && !isalpha((unsigned char)s[i + 1])) {
            char accent = s[i + 1];
            i += 2;
            put_accented(&out, accent, accent_argument(s, len, &i));
        } else if (is_accent(s[i + 1]) && i + 2 < len &&
                   (s[i + 2] == '{' || s[i + 2] == ' ')) { /* \c{c}, \v s */
            char accent = s[i + 1];
            i += 2;
            put_accented(&out, accent, accent_argument(s, len, &i));
        } else if (strchr("&%$#_{}", s[i + 1])) {
            buf_putc(&out, s[i + 1]);
            i += 2;
        } else if (isalpha((unsigned char)s[i + 1])) {
            size_t start = ++i;
            while (i < len && isalpha((unsigned char)s[i]))
                i++;
            size_t n = i - start;
            for (size_t k = 0; k < sizeof symbols / sizeof symbols[0]; k++)
                if (strlen(symbols[k].name) == n && !strncmp(symbols[k].name, s + start, n)) {
                    buf_puts(&out, symbols[k].text);
                    break;
                }
            /* other commands (\emph, \textbf...) vanish; their argument stays */
            if (i < len && s[i] == ' ')
                i++;
            if (i + 1 < len && s[i] == '{' && s[i + 1] == '}')
                i += 2;
        } else { /* "\\", "\,", "\ " and the like */
            buf_putc(&out, ' ');
            i += 2;
        }
    }
    char *result = NULL;
    ingest_set(&result, buf_str(&out), out.len);
    buf_free(&out);
    return result ? result : xstrdup("");
}

/* ---- the reader ------------------------------------------------------------ */

struct macro {
    char *name; /* lower case */
    char *value;
};

struct field {
    char *name; /* lower case */
    char *value;
};

struct bib {
    const char *s;
    size_t len, pos;
    size_t line_pos; /* line_at() counts newlines incrementally */
    long line;
    struct macro *macros;
    size_t nmacros;
    struct field fields[MAX_FIELDS];
    size_t nfields;
    char why[200];
};

static long line_at(struct bib *b, size_t pos)
{
    if (pos < b->line_pos) {
        b->line_pos = 0;
        b->line = 1;
    }
    for (; b->line_pos < pos && b->line_pos < b->len; b->line_pos++)
        if (b->s[b->line_pos] == '\n')
            b->line++;
    return b->line;
}

static void skip_space(struct bib *b)
{
    while (b->pos < b->len && isspace((unsigned char)b->s[b->pos]))
        b->pos++;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || strchr("_-:.+/'", c);
}

static char *read_name(struct bib *b)
{
    size_t start = b->pos;
    while (b->pos < b->len && name_char(b->s[b->pos]))
        b->pos++;
    if (b->pos == start)
        return NULL;
    char *n = xstrndup(b->s + start, b->pos - start);
    for (char *p = n; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return n;
}

static void fields_clear(struct bib *b)
{
    for (size_t i = 0; i < b->nfields; i++) {
        free(b->fields[i].name);
        free(b->fields[i].value);
    }
    b->nfields = 0;
}

static int fail(struct bib *b, const char *fmt, const char *arg)
{
    snprintf(b->why, sizeof b->why, fmt, arg ? arg : "");
    return -1;
}

/* A braced value at b->pos ('{'): appends what is between the outer braces. */
static int read_braced(struct bib *b, struct buf *out)
{
    int depth = 0;
    size_t start = b->pos + 1;
    for (; b->pos < b->len; b->pos++) {
        char c = b->s[b->pos];
        if (c == '\\' && b->pos + 1 < b->len) { /* \{ and \} do not count */
            b->pos++;
            continue;
        }
        if (c == '{') {
            depth++;
        } else if (c == '}' && --depth == 0) {
            buf_append(out, b->s + start, b->pos - start);
            b->pos++;
            return 0;
        }
    }
    return fail(b, "unbalanced braces: the file ended inside a value%s", NULL);
}

/* A quoted value at b->pos ('"'); braces nest, a quote inside them is text. */
static int read_quoted(struct bib *b, struct buf *out)
{
    int depth = 0;
    size_t start = ++b->pos;
    for (; b->pos < b->len; b->pos++) {
        char c = b->s[b->pos];
        if (c == '\\' && b->pos + 1 < b->len) {
            b->pos++;
            continue;
        }
        if (c == '{')
            depth++;
        else if (c == '}' && depth > 0)
            depth--;
        else if (c == '"' && depth == 0) {
            buf_append(out, b->s + start, b->pos - start);
            b->pos++;
            return 0;
        }
    }
    return fail(b, "a quoted value is not closed%s", NULL);
}

static const char *macro_value(struct bib *b, const char *name)
{
    static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                         "jul", "aug", "sep", "oct", "nov", "dec"};
    for (size_t i = 0; i < b->nmacros; i++)
        if (!strcmp(b->macros[i].name, name))
            return b->macros[i].value;
    for (size_t i = 0; i < 12; i++)
        if (!strcmp(months[i], name))
            return months[i];
    return NULL;
}

/* value = part (# part)*, each part braced, quoted, a number or a macro. */
static int read_value(struct bib *b, struct buf *out)
{
    for (;;) {
        skip_space(b);
        if (b->pos >= b->len)
            return fail(b, "the file ended where a value was expected%s", NULL);
        char c = b->s[b->pos];
        if (c == '{') {
            if (read_braced(b, out) < 0)
                return -1;
        } else if (c == '"') {
            if (read_quoted(b, out) < 0)
                return -1;
        } else if (isdigit((unsigned char)c)) {
            size_t start = b->pos;
            while (b->pos < b->len && isdigit((unsigned char)b->s[b->pos]))
                b->pos++;
            buf_append(out, b->s + start, b->pos - start);
        } else {
            char *name = read_name(b);
            if (!name)
                return fail(b, "a value must be {braced}, \"quoted\", a number or a macro%s", NULL);
            const char *v = macro_value(b, name);
            buf_puts(out, v ? v : name);
            free(name);
        }
        skip_space(b);
        if (b->pos < b->len && b->s[b->pos] == '#') {
            b->pos++;
            continue;
        }
        return 0;
    }
}

/* Reads "name = value, ..." up to the closing delimiter. */
static int read_fields(struct bib *b, char close)
{
    for (;;) {
        skip_space(b);
        while (b->pos < b->len && b->s[b->pos] == ',') { /* trailing or doubled commas */
            b->pos++;
            skip_space(b);
        }
        if (b->pos >= b->len)
            return fail(b, "unbalanced braces: the entry is not closed%s", NULL);
        if (b->s[b->pos] == close) {
            b->pos++;
            return 0;
        }
        char *name = read_name(b);
        if (!name)
            return fail(b, "expected a field name, found '%.1s'", b->s + b->pos);
        skip_space(b);
        if (b->pos >= b->len || b->s[b->pos] != '=') {
            int rc = fail(b, "expected '=' after the field '%s'", name);
            free(name);
            return rc;
        }
        b->pos++;
        struct buf value;
        buf_init(&value, (size_t)16 << 20);
        if (read_value(b, &value) < 0) {
            free(name);
            buf_free(&value);
            return -1;
        }
        if (b->nfields < MAX_FIELDS) {
            b->fields[b->nfields].name = name;
            b->fields[b->nfields].value = buf_detach(&value, NULL);
            b->nfields++;
        } else {
            free(name);
        }
        buf_free(&value);
        skip_space(b);
        if (b->pos < b->len && b->s[b->pos] != ',' && b->s[b->pos] != close)
            return fail(b, "expected ',' or the end of the entry after the field '%s'",
                        b->fields[b->nfields - 1].name);
    }
}

static const char *field(struct bib *b, const char *name)
{
    for (size_t i = 0; i < b->nfields; i++)
        if (!strcmp(b->fields[i].name, name))
            return b->fields[i].value;
    return NULL;
}

static void set_latex(char **dst, const char *raw)
{
    if (!raw)
        return;
    char *t = ingest_latex_to_text(raw, strlen(raw));
    if (t[0])
        *dst = t;
    else
        free(t);
}

/* "Last, First" -> "First Last"; "Last, Jr, First" -> "First Last Jr". */
static void add_author(struct ingest_record *r, const char *raw, size_t n)
{
    char *text = ingest_latex_to_text(raw, n);
    char *c1 = strchr(text, ',');
    if (!strcasecmp(text, "others")) {
        free(text);
        return;
    }
    if (c1) {
        *c1 = '\0';
        char *rest = c1 + 1, *c2 = strchr(rest, ',');
        char *name;
        if (c2) {
            *c2 = '\0';
            name = xasprintf("%s %s %s", c2 + 1, text, rest);
        } else {
            name = xasprintf("%s %s", rest, text);
        }
        ingest_record_add_author(r, name);
        free(name);
    } else {
        ingest_record_add_author(r, text);
    }
    free(text);
}

/* Splits on " and " at brace depth 0. */
static void split_authors(struct ingest_record *r, const char *s)
{
    int depth = 0;
    size_t start = 0, n = strlen(s);
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? s[i] : '\0';
        if (c == '{')
            depth++;
        else if (c == '}' && depth > 0)
            depth--;
        bool sep = depth == 0 && i + 5 <= n && isspace((unsigned char)c) &&
                   !strncasecmp(s + i + 1, "and", 3) && isspace((unsigned char)s[i + 4]);
        if (sep || c == '\0') {
            if (i > start)
                add_author(r, s + start, i - start);
            if (sep)
                i += 4;
            start = i + 1;
        }
    }
}

/* Strips braces and spaces from an identifier field. */
static char *plain(const char *raw)
{
    struct buf b;
    buf_init(&b, 0);
    for (const char *p = raw; *p; p++)
        if (*p != '{' && *p != '}' && !isspace((unsigned char)*p))
            buf_putc(&b, *p);
    return buf_detach(&b, NULL);
}

static int entry_record(struct bib *b, struct ingest_record *r)
{
    set_latex(&r->title, field(b, "title"));
    if (!r->title)
        return fail(b, "no title%s", NULL);
    set_latex(&r->abstract, field(b, "abstract"));
    const char *author = field(b, "author");
    if (!author)
        author = field(b, "editor");
    if (author)
        split_authors(r, author);
    const char *year = field(b, "year");
    if (year) {
        const char *p = year;
        while (*p && !isdigit((unsigned char)*p))
            p++;
        if (strspn(p, "0123456789") >= 4)
            r->year = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    }
    if (field(b, "doi")) {
        char *d = plain(field(b, "doi"));
        r->doi = ingest_normalize_doi(d);
        free(d);
    }
    if (field(b, "url")) {
        char *u = plain(field(b, "url"));
        ingest_set(&r->url, u, strlen(u));
        free(u);
    }
    const char *eprint = field(b, "eprint");
    const char *prefix =
        field(b, "archiveprefix") ? field(b, "archiveprefix") : field(b, "eprinttype");
    if (eprint && (!prefix || !strcasecmp(prefix, "arxiv"))) {
        char *e = plain(eprint);
        r->arxiv_id = ingest_normalize_arxiv(e);
        free(e);
    }
    if (!r->arxiv_id && r->url)
        r->arxiv_id = ingest_normalize_arxiv(r->url);
    const char *journal = field(b, "journal");
    if (!r->arxiv_id && journal && strstr(journal, "arXiv:"))
        r->arxiv_id = ingest_normalize_arxiv(strstr(journal, "arXiv:"));
    set_latex(&r->venue, journal ? journal : field(b, "booktitle"));
    return 0;
}

/* Moves past a bad entry: to the next line that starts with '@'. */
static void resync(struct bib *b, size_t entry_start)
{
    size_t p = entry_start + 1;
    for (; p < b->len; p++) {
        if (b->s[p] != '@')
            continue;
        size_t q = p;
        while (q > 0 && (b->s[q - 1] == ' ' || b->s[q - 1] == '\t'))
            q--;
        if (q == 0 || b->s[q - 1] == '\n')
            break;
    }
    b->pos = p;
}

static void add_macro(struct bib *b, const char *name, const char *value)
{
    for (size_t i = 0; i < b->nmacros; i++)
        if (!strcmp(b->macros[i].name, name)) {
            free(b->macros[i].value);
            b->macros[i].value = xstrdup(value);
            return;
        }
    if (b->nmacros >= MAX_MACROS)
        return;
    b->macros = xreallocarray(b->macros, b->nmacros + 1, sizeof *b->macros);
    b->macros[b->nmacros++] = (struct macro){xstrdup(name), xstrdup(value)};
}

int ingest_read_bibtex(const char *data, size_t len, struct ingest_sink *sink)
{
    struct bib b = {.s = data, .len = len, .line = 1};
    int rc = 0;
    long entries = 0;
    while (rc == 0 && b.pos < b.len) {
        const char *at = memchr(b.s + b.pos, '@', b.len - b.pos);
        if (!at)
            break;
        size_t start = (size_t)(at - b.s);
        long line = line_at(&b, start);
        b.pos = start + 1;
        skip_space(&b);
        char *type = read_name(&b);
        skip_space(&b);
        if (!type || b.pos >= b.len || (b.s[b.pos] != '{' && b.s[b.pos] != '(')) {
            free(type); /* a stray '@' in a comment */
            continue;
        }
        char close = b.s[b.pos] == '{' ? '}' : ')';
        b.pos++;
        if (!strcmp(type, "comment") || !strcmp(type, "preamble")) {
            struct buf skip;
            buf_init(&skip, (size_t)16 << 20);
            b.pos--; /* read_braced wants the opening brace */
            if (close != '}' || read_braced(&b, &skip) < 0)
                resync(&b, start);
            buf_free(&skip);
            free(type);
            continue;
        }
        entries++;
        fields_clear(&b);
        struct ingest_record r;
        ingest_record_init(&r);
        char *key = NULL;
        int bad = 0;
        if (!strcmp(type, "string")) {
            bad = read_fields(&b, close);
            for (size_t i = 0; bad == 0 && i < b.nfields; i++)
                add_macro(&b, b.fields[i].name, b.fields[i].value);
            if (bad < 0) {
                snprintf(r.where, sizeof r.where, "@string (line %ld)", line);
                sink->malformed(sink, r.where, b.why);
                resync(&b, start);
            }
            ingest_record_clear(&r);
            free(type);
            continue;
        }
        skip_space(&b);
        size_t kstart = b.pos;
        while (b.pos < b.len && b.s[b.pos] != ',' && b.s[b.pos] != close &&
               !isspace((unsigned char)b.s[b.pos]) && b.s[b.pos] != '@')
            b.pos++;
        key = xstrndup(b.s + kstart, b.pos - kstart);
        if (key[0])
            snprintf(r.where, sizeof r.where, "entry '%.80s' (line %ld)", key, line);
        else
            snprintf(r.where, sizeof r.where, "entry %ld (line %ld)", entries, line);
        skip_space(&b);
        if (!key[0] || b.pos >= b.len || (b.s[b.pos] != ',' && b.s[b.pos] != close))
            bad = fail(&b, "expected a key and a comma after @%s{", type);
        else
            bad = read_fields(&b, close);
        if (bad == 0)
            bad = entry_record(&b, &r);
        if (bad == 0) {
            rc = sink->record(sink, &r);
        } else {
            sink->malformed(sink, r.where, b.why);
            resync(&b, start);
        }
        ingest_record_clear(&r);
        free(key);
        free(type);
    }
    fields_clear(&b);
    for (size_t i = 0; i < b.nmacros; i++) {
        free(b.macros[i].name);
        free(b.macros[i].value);
    }
    free(b.macros);
    return rc;
}
