/*
 * sandbox_traceback: what went wrong, from a failed run's stderr.
 *
 * For Python it finds the last traceback (the one that ended the program,
 * after any "During handling of the above exception" chain) or a bare
 * SyntaxError report, and extracts the exception's type and message and
 * the frames in the experiment's own files (paths under /work, or
 * relative ones), each with a few surrounding source lines read from the
 * work directory. Those reads go through sandbox_open_beneath(): a frame
 * that names ../something or a symbolic link yields no source, never a
 * file outside /work. For every program it also keeps the last non-empty
 * lines of stderr. This feeds traceback-guided debugging. Depends on
 * alloc, buf and sandbox_internal.h.
 */
#define _GNU_SOURCE
#include "sandbox_internal.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LAST_LINES   20
#define MAX_FRAMES       50
#define MAX_LINE_CHARS   500
#define CONTEXT_LINES    2
#define MAX_SOURCE_BYTES ((size_t)4 << 20)

struct line {
    const char *s;
    size_t n;
};

static struct line *split_lines(const char *text, size_t *count)
{
    size_t n = 0, cap = 64;
    struct line *v = xmalloc(cap * sizeof *v);
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (len && s[len - 1] == '\r')
            len--;
        if (n == cap)
            v = xreallocarray(v, cap *= 2, sizeof *v);
        v[n].s = s;
        v[n].n = len;
        n++;
        if (!nl)
            break;
        s = nl + 1;
    }
    *count = n;
    return v;
}

static char *line_text(const char *s, size_t n)
{
    if (n > MAX_LINE_CHARS)
        n = MAX_LINE_CHARS;
    return sandbox_utf8_clean(s, n);
}

static bool starts(const struct line *l, const char *prefix)
{
    size_t n = strlen(prefix);
    return l->n >= n && !strncmp(l->s, prefix, n);
}

static bool blank(const struct line *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (!isspace((unsigned char)l->s[i]))
            return false;
    return true;
}

/* Parses '  File "F", line N[, in FUNC]'. */
static bool parse_frame_line(const struct line *l, char **file, int *lineno, char **func)
{
    static const char head[] = "  File \"";
    if (!starts(l, head))
        return false;
    const char *s = l->s + sizeof head - 1;
    const char *end = l->s + l->n;
    const char *q = NULL;
    for (const char *p = end; p > s; p--)
        if (p[-1] == '"' && p + 6 <= end && !strncmp(p, ", line", 6)) {
            q = p - 1;
            break;
        }
    if (!q)
        return false;
    const char *num = q + 1 + 7; /* past '", line ' */
    if (num > end)
        return false;
    char *stop;
    long n = strtol(num, &stop, 10);
    if (stop == num || stop > end)
        return false;
    *file = xstrndup(s, (size_t)(q - s));
    *lineno = (int)n;
    *func = NULL;
    if (stop + 5 <= end && !strncmp(stop, ", in ", 5))
        *func = xstrndup(stop + 5, (size_t)(end - stop - 5));
    return true;
}

/* "Type: message" or "Type": a dotted identifier at the start of a line. */
static bool parse_exception_line(const struct line *l, char **type, char **message)
{
    size_t i = 0;
    while (i < l->n && (isalnum((unsigned char)l->s[i]) || l->s[i] == '_' || l->s[i] == '.'))
        i++;
    if (i == 0 || !(isalpha((unsigned char)l->s[0]) || l->s[0] == '_'))
        return false;
    if (i == l->n) {
        *type = xstrndup(l->s, i);
        *message = xstrdup("");
        return true;
    }
    if (l->s[i] != ':')
        return false;
    *type = xstrndup(l->s, i);
    size_t start = i + 1;
    while (start < l->n && l->s[start] == ' ')
        start++;
    *message = line_text(l->s + start, l->n - start);
    return true;
}

/* The path of file relative to the work dir, or NULL when it is not one of
 * the experiment's files. */
static const char *work_relative(const char *file, const char *prefix)
{
    size_t n = strlen(prefix);
    if (!strncmp(file, prefix, n) && file[n] == '/' && file[n + 1])
        return file + n + 1;
    if (file[0] != '/' && file[0] != '<' && file[0])
        return file;
    return NULL;
}

static void read_source(struct sandbox_frame *f, int workfd, const char *rel)
{
    if (workfd < 0 || f->line <= 0)
        return;
    int fd = sandbox_open_beneath(workfd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return;
    struct buf b;
    buf_init(&b, MAX_SOURCE_BYTES);
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0 || buf_append(&b, chunk, (size_t)n) < 0)
            break;
    }
    error_clear();
    close(fd);
    size_t nlines;
    struct line *lines = split_lines(buf_str(&b), &nlines);
    int first = f->line - CONTEXT_LINES < 1 ? 1 : f->line - CONTEXT_LINES;
    int last = f->line + CONTEXT_LINES;
    if (last > (int)nlines)
        last = (int)nlines;
    if (first <= last && f->line <= (int)nlines) {
        f->first_line = first;
        f->nsource = (size_t)(last - first + 1);
        f->source = xcalloc(f->nsource, sizeof *f->source);
        for (int i = first; i <= last; i++)
            f->source[i - first] = line_text(lines[i - 1].s, lines[i - 1].n);
    }
    free(lines);
    buf_free(&b);
}

static void add_frame(struct sandbox_traceback *tb, char *file, int lineno, char *func, int workfd,
                      const char *prefix)
{
    const char *rel = work_relative(file, prefix);
    if (!rel) {
        free(file);
        free(func);
        return;
    }
    if (tb->nframes == MAX_FRAMES) { /* keep the innermost ones */
        struct sandbox_frame *old = &tb->frames[0];
        free(old->file);
        free(old->function);
        for (size_t i = 0; i < old->nsource; i++)
            free(old->source[i]);
        free(old->source);
        memmove(tb->frames, tb->frames + 1, (MAX_FRAMES - 1) * sizeof *tb->frames);
        tb->nframes--;
    }
    if (!tb->frames)
        tb->frames = xcalloc(MAX_FRAMES, sizeof *tb->frames);
    struct sandbox_frame *f = &tb->frames[tb->nframes++];
    memset(f, 0, sizeof *f);
    f->file = file;
    f->line = lineno;
    f->function = func;
    read_source(f, workfd, rel);
}

/* Parses frames from lines[from] on, then the exception line. */
static void parse_python(struct sandbox_traceback *tb, const struct line *lines, size_t n,
                         size_t from, int workfd, const char *prefix)
{
    size_t i = from;
    while (i < n) {
        char *file, *func;
        int lineno;
        if (parse_frame_line(&lines[i], &file, &lineno, &func)) {
            add_frame(tb, file, lineno, func, workfd, prefix);
            i++;
            continue;
        }
        if (lines[i].n > 0 && lines[i].s[0] == ' ') { /* source, carets, "[Previous line...]" */
            i++;
            continue;
        }
        if (parse_exception_line(&lines[i], &tb->type, &tb->message)) {
            tb->python = true;
            return;
        }
        i++;
    }
}

struct sandbox_traceback *sandbox_traceback_parse(const char *text, int workfd,
                                                  const char *work_prefix)
{
    if (!text || !*text)
        return NULL;
    size_t n;
    struct line *lines = split_lines(text, &n);
    struct sandbox_traceback *tb = xcalloc(1, sizeof *tb);

    size_t header = n;
    for (size_t i = n; i-- > 0;)
        if (starts(&lines[i], "Traceback (most recent call last):")) {
            header = i;
            break;
        }
    if (header < n) {
        parse_python(tb, lines, n, header + 1, workfd, work_prefix);
    } else {
        /* a SyntaxError (or similar) of the main script has no header */
        for (size_t i = n; i-- > 0;) {
            char *file, *func;
            int lineno;
            if (parse_frame_line(&lines[i], &file, &lineno, &func)) {
                free(file);
                free(func);
                parse_python(tb, lines, n, i, workfd, work_prefix);
                break;
            }
        }
    }
    if (!tb->python) {
        for (size_t i = 0; i < tb->nframes; i++) {
            free(tb->frames[i].file);
            free(tb->frames[i].function);
            for (size_t j = 0; j < tb->frames[i].nsource; j++)
                free(tb->frames[i].source[j]);
            free(tb->frames[i].source);
        }
        free(tb->frames);
        tb->frames = NULL;
        tb->nframes = 0;
        free(tb->type);
        free(tb->message);
        tb->type = tb->message = NULL;
    }

    size_t count = 0;
    for (size_t i = n; i-- > 0 && count < MAX_LAST_LINES;)
        count += !blank(&lines[i]);
    tb->lines = xcalloc(count ? count : 1, sizeof *tb->lines);
    size_t k = count;
    for (size_t i = n; i-- > 0 && k > 0;)
        if (!blank(&lines[i]))
            tb->lines[--k] = line_text(lines[i].s, lines[i].n);
    tb->nlines = count;
    free(lines);
    return tb;
}

void sandbox_traceback_free(struct sandbox_traceback *tb)
{
    if (!tb)
        return;
    for (size_t i = 0; i < tb->nframes; i++) {
        free(tb->frames[i].file);
        free(tb->frames[i].function);
        for (size_t j = 0; j < tb->frames[i].nsource; j++)
            free(tb->frames[i].source[j]);
        free(tb->frames[i].source);
    }
    free(tb->frames);
    for (size_t i = 0; i < tb->nlines; i++)
        free(tb->lines[i]);
    free(tb->lines);
    free(tb->type);
    free(tb->message);
    free(tb);
}

static void add_clean_string(cJSON *o, const char *name, const char *s)
{
    char *clean = sandbox_utf8_clean(s, strlen(s));
    cJSON_AddStringToObject(o, name, clean);
    free(clean);
}

cJSON *sandbox_traceback_to_json(const struct sandbox_traceback *tb)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "python", tb->python);
    if (tb->python) {
        add_clean_string(o, "type", tb->type);
        add_clean_string(o, "message", tb->message);
        cJSON *frames = cJSON_AddArrayToObject(o, "frames");
        for (size_t i = 0; i < tb->nframes; i++) {
            const struct sandbox_frame *f = &tb->frames[i];
            cJSON *fj = cJSON_CreateObject();
            add_clean_string(fj, "file", f->file);
            cJSON_AddNumberToObject(fj, "line", f->line);
            if (f->function)
                add_clean_string(fj, "function", f->function);
            else
                cJSON_AddNullToObject(fj, "function");
            cJSON *src = cJSON_AddArrayToObject(fj, "source");
            for (size_t j = 0; j < f->nsource; j++) {
                cJSON *lj = cJSON_CreateObject();
                cJSON_AddNumberToObject(lj, "line", f->first_line + (int)j);
                cJSON_AddStringToObject(lj, "text", f->source[j]);
                cJSON_AddItemToArray(src, lj);
            }
            cJSON_AddItemToArray(frames, fj);
        }
    }
    cJSON *lines = cJSON_AddArrayToObject(o, "lines");
    for (size_t i = 0; i < tb->nlines; i++)
        cJSON_AddItemToArray(lines, cJSON_CreateString(tb->lines[i]));
    return o;
}
