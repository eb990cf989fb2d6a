/*
 * ingest: records, identifier normalisation, the JSON Lines and OpenAlex
 * readers, format detection, and storing records into memory with
 * duplicates merged (see ingest.h). The BibTeX reader is in
 * ingest_bibtex.c, the Atom reader in ingest_atom.c, fetching in
 * ingest_fetch.c.
 */
#include "ingest.h"

#include "memory_internal.h"

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "log.h"
#include "utf8.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_JSONL_LINE     ((size_t)16 << 20)
#define BATCH              200 /* records per transaction */
#define MIN_TITLE_KEY      12  /* shorter titles ("Introduction") never merge */
#define MAX_ABSTRACT_WORDS 20000

/* ---- records ------------------------------------------------------------ */

void ingest_record_init(struct ingest_record *r)
{
    memset(r, 0, sizeof *r);
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void ingest_record_clear(struct ingest_record *r)
{
    free(r->title);
    free(r->abstract);
    strv_free(r->authors, r->nauthors);
    free(r->doi);
    free(r->arxiv_id);
    free(r->openalex_id);
    free(r->url);
    free(r->venue);
    strv_free(r->refs, r->nrefs);
    ingest_record_init(r);
}

void ingest_set(char **field, const char *text, size_t len)
{
    struct buf repaired, out;
    buf_init(&repaired, 0);
    buf_init(&out, 0);
    if (len > MEMORY_MAX_TEXT)
        len = utf8_truncate(text, len, MEMORY_MAX_TEXT);
    utf8_repair(&repaired, text, len, NULL);
    bool space = false;
    for (size_t i = 0; i < repaired.len; i++) {
        unsigned char c = (unsigned char)repaired.data[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            space = out.len > 0;
            continue;
        }
        if (space)
            buf_putc(&out, ' ');
        space = false;
        buf_putc(&out, (char)c);
    }
    buf_free(&repaired);
    free(*field);
    *field = out.len ? buf_detach(&out, NULL) : NULL;
    buf_free(&out);
}

void ingest_record_add_author(struct ingest_record *r, const char *name)
{
    if (r->nauthors >= INGEST_MAX_AUTHORS)
        return;
    char *clean = NULL;
    ingest_set(&clean, name, strlen(name));
    if (!clean)
        return;
    r->authors = xreallocarray(r->authors, r->nauthors + 1, sizeof *r->authors);
    r->authors[r->nauthors++] = clean;
}

void ingest_record_add_ref(struct ingest_record *r, const char *key)
{
    if (r->nrefs >= INGEST_MAX_REFS)
        return;
    for (size_t i = 0; i < r->nrefs; i++)
        if (!strcmp(r->refs[i], key))
            return;
    r->refs = xreallocarray(r->refs, r->nrefs + 1, sizeof *r->refs);
    r->refs[r->nrefs++] = xstrdup(key);
}

/* ---- identifiers ---------------------------------------------------------- */

/* Skips any of the prefixes (case-insensitive) at the start of s. */
static const char *skip_prefixes(const char *s, const char *const *prefixes)
{
    bool again = true;
    while (again) {
        again = false;
        while (isspace((unsigned char)*s))
            s++;
        for (const char *const *p = prefixes; *p; p++) {
            size_t n = strlen(*p);
            if (!strncasecmp(s, *p, n)) {
                s += n;
                again = true;
            }
        }
    }
    return s;
}

static char *trimmed_dup(const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return xstrndup(s, n);
}

char *ingest_normalize_doi(const char *s)
{
    static const char *const prefixes[] = {"https://doi.org/",
                                           "http://doi.org/",
                                           "https://dx.doi.org/",
                                           "http://dx.doi.org/",
                                           "doi.org/",
                                           "doi:",
                                           NULL};
    s = skip_prefixes(s, prefixes);
    if (strncmp(s, "10.", 3) || !strchr(s, '/'))
        return NULL;
    char *d = trimmed_dup(s);
    for (char *p = d; *p; p++) {
        if (isspace((unsigned char)*p) || (unsigned char)*p < 0x20) {
            free(d);
            return NULL;
        }
        *p = (char)tolower((unsigned char)*p);
    }
    if (strlen(d) > 300) {
        free(d);
        return NULL;
    }
    return d;
}

char *ingest_normalize_arxiv(const char *s)
{
    static const char *const prefixes[] = {"https://arxiv.org/abs/",
                                           "http://arxiv.org/abs/",
                                           "https://arxiv.org/pdf/",
                                           "http://arxiv.org/pdf/",
                                           "https://export.arxiv.org/abs/",
                                           "http://export.arxiv.org/abs/",
                                           "arxiv.org/abs/",
                                           "arxiv:",
                                           "10.48550/arxiv.",
                                           "https://doi.org/10.48550/arxiv.",
                                           NULL};
    s = skip_prefixes(s, prefixes);
    char *id = trimmed_dup(s);
    size_t n = strlen(id);
    if (n > 4 && !strcasecmp(id + n - 4, ".pdf"))
        id[n -= 4] = '\0';
    /* drop a version suffix: v followed by digits at the end */
    size_t v = n;
    while (v > 0 && isdigit((unsigned char)id[v - 1]))
        v--;
    if (v > 1 && v < n && id[v - 1] == 'v')
        id[n = v - 1] = '\0';
    bool ok = false;
    const char *dot = strchr(id, '.'), *slash = strchr(id, '/');
    if (!slash && dot && dot - id == 4) { /* 2101.00001 */
        size_t tail = strlen(dot + 1);
        ok = (tail == 4 || tail == 5) && strspn(id, "0123456789") == 4 &&
             strspn(dot + 1, "0123456789") == tail;
    } else if (slash && strlen(slash + 1) == 7 && strspn(slash + 1, "0123456789") == 7 &&
               slash > id) { /* hep-th/9901001, math.GT/0309136 */
        ok = true;
        for (const char *p = id; p < slash; p++)
            ok &= isalpha((unsigned char)*p) || *p == '-' || *p == '.';
    }
    if (!ok) {
        free(id);
        return NULL;
    }
    if (slash) /* archive names are lower case; subject classes keep theirs */
        for (char *p = id; *p && *p != '.' && *p != '/'; p++)
            *p = (char)tolower((unsigned char)*p);
    return id;
}

char *ingest_normalize_openalex(const char *s)
{
    static const char *const prefixes[] = {"https://openalex.org/", "http://openalex.org/",
                                           "openalex:", NULL};
    s = skip_prefixes(s, prefixes);
    if ((s[0] != 'W' && s[0] != 'w') || !isdigit((unsigned char)s[1]))
        return NULL;
    size_t digits = strspn(s + 1, "0123456789");
    if (s[1 + digits] && !isspace((unsigned char)s[1 + digits]))
        return NULL;
    char *id = xstrndup(s, 1 + digits);
    id[0] = 'W';
    return id;
}

char *ingest_title_key(const char *title)
{
    struct buf b;
    buf_init(&b, 0);
    bool gap = false;
    for (const unsigned char *p = (const unsigned char *)title; *p; p++) {
        if (isalnum(*p) || *p >= 0x80) {
            if (gap && b.len)
                buf_putc(&b, ' ');
            gap = false;
            buf_putc(&b, (char)tolower(*p));
        } else if (*p != '{' && *p != '}' && *p != '\\') {
            gap = true;
        }
    }
    return buf_detach(&b, NULL);
}

char *ingest_ref_key(const char *s)
{
    char *id;
    if ((id = ingest_normalize_doi(s))) {
        char *arxiv = !strncmp(id, "10.48550/arxiv.", 15) ? ingest_normalize_arxiv(id) : NULL;
        char *key = arxiv ? xasprintf("arxiv:%s", arxiv) : xasprintf("doi:%s", id);
        free(arxiv);
        free(id);
        return key;
    }
    if ((id = ingest_normalize_arxiv(s))) {
        char *key = xasprintf("arxiv:%s", id);
        free(id);
        return key;
    }
    if ((id = ingest_normalize_openalex(s))) {
        char *key = xasprintf("openalex:%s", id);
        free(id);
        return key;
    }
    return NULL;
}

/* ---- JSON helpers ---------------------------------------------------------- */

static const char *json_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

static void set_from_json(char **field, const cJSON *o, const char *name)
{
    const char *s = json_str(o, name);
    if (s)
        ingest_set(field, s, strlen(s));
}

/* A year from a number or a string that starts with four digits. */
static int parse_year(const cJSON *v, bool *bad)
{
    *bad = false;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsNumber(v) && v->valuedouble >= 1000 && v->valuedouble <= 2999 &&
        v->valuedouble == (int)v->valuedouble)
        return (int)v->valuedouble;
    if (cJSON_IsString(v) && strspn(v->valuestring, "0123456789") >= 4) {
        int y = (v->valuestring[0] - '0') * 1000 + (v->valuestring[1] - '0') * 100 +
                (v->valuestring[2] - '0') * 10 + (v->valuestring[3] - '0');
        if (y >= 1000 && y <= 2999 && !isdigit((unsigned char)v->valuestring[4]))
            return y;
    }
    *bad = true;
    return 0;
}

/* Splits "A and B and C" or "A; B; C" into authors. */
static void add_authors_from_string(struct ingest_record *r, const char *s)
{
    const char *sep = strstr(s, " and ") ? " and " : ";";
    size_t seplen = strlen(sep);
    while (*s) {
        const char *next = strstr(s, sep);
        size_t n = next ? (size_t)(next - s) : strlen(s);
        char *name = xstrndup(s, n);
        ingest_record_add_author(r, name);
        free(name);
        s += n + (next ? seplen : 0);
    }
}

/* ---- JSON Lines ------------------------------------------------------------ */

static int jsonl_record(const cJSON *o, struct ingest_record *r, const char **why)
{
    if (!cJSON_IsObject(o)) {
        *why = "not a JSON object";
        return -1;
    }
    set_from_json(&r->title, o, "title");
    if (!r->title) {
        *why = "no title";
        return -1;
    }
    set_from_json(&r->abstract, o, "abstract");
    if (!r->abstract)
        set_from_json(&r->abstract, o, "summary");
    const cJSON *authors = cJSON_GetObjectItemCaseSensitive(o, "authors");
    if (cJSON_IsString(authors)) {
        add_authors_from_string(r, authors->valuestring);
    } else if (cJSON_IsArray(authors)) {
        const cJSON *a;
        cJSON_ArrayForEach(a, authors)
        {
            const char *name = cJSON_IsString(a)     ? a->valuestring
                               : json_str(a, "name") ? json_str(a, "name")
                                                     : json_str(a, "display_name");
            if (!name) {
                *why = "authors must be a list of names (strings or objects with \"name\")";
                return -1;
            }
            ingest_record_add_author(r, name);
        }
    } else if (authors && !cJSON_IsNull(authors)) {
        *why = "authors must be a list of names or a string";
        return -1;
    }
    bool bad = false;
    r->year = parse_year(cJSON_GetObjectItemCaseSensitive(o, "year"), &bad);
    if (bad) {
        *why = "year must be a four-digit year";
        return -1;
    }
    const char *doi = json_str(o, "doi");
    if (doi && !(r->doi = ingest_normalize_doi(doi))) {
        *why = "doi is not a DOI (expected 10.NNNN/...)";
        return -1;
    }
    const char *arxiv = json_str(o, "arxiv_id") ? json_str(o, "arxiv_id") : json_str(o, "arxiv");
    if (arxiv && !(r->arxiv_id = ingest_normalize_arxiv(arxiv))) {
        *why = "arxiv_id is not an arXiv identifier";
        return -1;
    }
    const char *openalex = json_str(o, "openalex_id");
    if (openalex)
        r->openalex_id = ingest_normalize_openalex(openalex);
    set_from_json(&r->url, o, "url");
    if (!r->arxiv_id && r->url)
        r->arxiv_id = ingest_normalize_arxiv(r->url);
    set_from_json(&r->venue, o, "venue");
    if (!r->venue)
        set_from_json(&r->venue, o, "journal");
    const cJSON *refs = cJSON_GetObjectItemCaseSensitive(o, "references"), *ref;
    if (cJSON_IsArray(refs)) {
        cJSON_ArrayForEach(ref, refs)
        {
            char *key = cJSON_IsString(ref) ? ingest_ref_key(ref->valuestring) : NULL;
            if (key)
                ingest_record_add_ref(r, key);
            free(key);
        }
    }
    return 0;
}

int ingest_read_jsonl(const char *data, size_t len, struct ingest_sink *sink)
{
    size_t pos = 0;
    long lineno = 0;
    while (pos < len) {
        lineno++;
        const char *start = data + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        size_t skip = 0;
        while (skip < n && isspace((unsigned char)start[skip]))
            skip++;
        if (skip == n)
            continue;
        struct ingest_record r;
        ingest_record_init(&r);
        snprintf(r.where, sizeof r.where, "line %ld", lineno);
        if (n > MAX_JSONL_LINE) {
            sink->malformed(sink, r.where, "the line is longer than 16 MiB");
            continue;
        }
        cJSON *o = cJSON_ParseWithLength(start, n);
        const char *why = "not valid JSON";
        if (o && jsonl_record(o, &r, &why) == 0) {
            cJSON_Delete(o);
            int rc = sink->record(sink, &r);
            ingest_record_clear(&r);
            if (rc < 0)
                return rc;
            continue;
        }
        cJSON_Delete(o);
        sink->malformed(sink, r.where, why);
        ingest_record_clear(&r);
    }
    return 0;
}

/* ---- OpenAlex ---------------------------------------------------------------- */

struct word_at {
    long pos;
    const char *word;
};

static int compare_word_at(const void *a, const void *b)
{
    long x = ((const struct word_at *)a)->pos, y = ((const struct word_at *)b)->pos;
    return x < y ? -1 : x > y;
}

/* OpenAlex gives abstracts as {"word": [positions]}; puts them back in order. */
static char *abstract_from_index(const cJSON *index)
{
    struct word_at *words = NULL;
    size_t n = 0, cap = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, index)
    {
        const cJSON *p;
        cJSON_ArrayForEach(p, w)
        {
            if (!cJSON_IsNumber(p) || p->valuedouble < 0 || n >= MAX_ABSTRACT_WORDS)
                continue;
            if (n == cap)
                words = xreallocarray(words, cap = cap ? cap * 2 : 256, sizeof *words);
            words[n++] = (struct word_at){(long)p->valuedouble, w->string};
        }
    }
    if (n == 0) {
        free(words);
        return NULL;
    }
    qsort(words, n, sizeof *words, compare_word_at);
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s", i ? " " : "", words[i].word ? words[i].word : "");
    free(words);
    return buf_detach(&b, NULL);
}

static int openalex_record(const cJSON *o, struct ingest_record *r, const char **why)
{
    if (!cJSON_IsObject(o)) {
        *why = "not a JSON object";
        return -1;
    }
    const char *id = json_str(o, "id");
    if (id)
        r->openalex_id = ingest_normalize_openalex(id);
    set_from_json(&r->title, o, "title");
    if (!r->title)
        set_from_json(&r->title, o, "display_name");
    if (!r->title) {
        *why = "no title";
        return -1;
    }
    const char *doi = json_str(o, "doi");
    if (doi)
        r->doi = ingest_normalize_doi(doi);
    if (r->doi && !strncmp(r->doi, "10.48550/arxiv.", 15))
        r->arxiv_id = ingest_normalize_arxiv(r->doi);
    bool bad;
    r->year = parse_year(cJSON_GetObjectItemCaseSensitive(o, "publication_year"), &bad);
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(o, "authorships"))
    {
        const char *name = json_str(cJSON_GetObjectItemCaseSensitive(a, "author"), "display_name");
        if (name)
            ingest_record_add_author(r, name);
    }
    char *abstract =
        abstract_from_index(cJSON_GetObjectItemCaseSensitive(o, "abstract_inverted_index"));
    if (abstract) {
        ingest_set(&r->abstract, abstract, strlen(abstract));
        free(abstract);
    }
    const cJSON *primary = cJSON_GetObjectItemCaseSensitive(o, "primary_location");
    set_from_json(&r->venue, cJSON_GetObjectItemCaseSensitive(primary, "source"), "display_name");
    set_from_json(&r->url, primary, "landing_page_url");
    const cJSON *loc;
    cJSON_ArrayForEach(loc, cJSON_GetObjectItemCaseSensitive(o, "locations"))
    {
        const char *page = json_str(loc, "landing_page_url");
        if (!r->arxiv_id && page && strstr(page, "arxiv.org/abs/"))
            r->arxiv_id = ingest_normalize_arxiv(page);
    }
    const cJSON *ref;
    cJSON_ArrayForEach(ref, cJSON_GetObjectItemCaseSensitive(o, "referenced_works"))
    {
        char *w = cJSON_IsString(ref) ? ingest_normalize_openalex(ref->valuestring) : NULL;
        if (w) {
            char *key = xasprintf("openalex:%s", w);
            ingest_record_add_ref(r, key);
            free(key);
        }
        free(w);
    }
    return 0;
}

int ingest_read_openalex(const char *data, size_t len, struct ingest_sink *sink, char **next_cursor)
{
    if (next_cursor)
        *next_cursor = NULL;
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root)
        return error_set("the OpenAlex reply is not valid JSON");
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(root, "results");
    if (!cJSON_IsArray(results)) {
        cJSON_Delete(root);
        return error_set("the OpenAlex reply has no \"results\" list");
    }
    int rc = 0, i = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, results)
    {
        i++;
        struct ingest_record r;
        ingest_record_init(&r);
        const char *why = NULL;
        int ok = openalex_record(o, &r, &why);
        if (r.openalex_id)
            snprintf(r.where, sizeof r.where, "result %d (%s)", i, r.openalex_id);
        else
            snprintf(r.where, sizeof r.where, "result %d", i);
        if (ok == 0)
            rc = sink->record(sink, &r);
        else
            sink->malformed(sink, r.where, why);
        ingest_record_clear(&r);
        if (rc < 0)
            break;
    }
    const char *cursor = json_str(cJSON_GetObjectItemCaseSensitive(root, "meta"), "next_cursor");
    if (next_cursor && cursor && rc == 0)
        *next_cursor = xstrdup(cursor);
    cJSON_Delete(root);
    return rc;
}

/* ---- formats ----------------------------------------------------------------- */

static const char *const format_names[] = {"auto", "jsonl", "bibtex", "atom", "openalex", NULL};

int ingest_format_parse(const char *name, enum ingest_format *out)
{
    for (int i = 0; format_names[i]; i++)
        if (!strcmp(format_names[i], name)) {
            *out = (enum ingest_format)i;
            return 0;
        }
    return error_setc(TH_EUSAGE, "unknown format '%s'; use jsonl, bibtex, atom or openalex", name);
}

const char *ingest_format_name(enum ingest_format f)
{
    return format_names[f];
}

static bool contains(const char *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (data[i] == needle[0] && !memcmp(data + i, needle, n))
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

enum ingest_format ingest_format_guess(const char *name, const char *data, size_t len)
{
    if (name && (ends_with(name, ".bib") || ends_with(name, ".bibtex")))
        return INGEST_BIBTEX;
    if (name && (ends_with(name, ".jsonl") || ends_with(name, ".ndjson")))
        return INGEST_JSONL;
    if (name && (ends_with(name, ".xml") || ends_with(name, ".atom")))
        return INGEST_ATOM;
    size_t i = 0;
    if (len >= 3 && !memcmp(data, "\xef\xbb\xbf", 3))
        i = 3;
    while (i < len && isspace((unsigned char)data[i]))
        i++;
    if (i < len && data[i] == '<')
        return INGEST_ATOM;
    if (i < len && data[i] == '@')
        return INGEST_BIBTEX;
    if (i < len && data[i] == '{') {
        /* JSON Lines has a whole object on its first line; a JSON document
         * spread over lines with "results" is an OpenAlex page */
        const char *nl = memchr(data + i, '\n', len - i);
        size_t first = nl ? (size_t)(nl - data - i) : len - i;
        cJSON *line = cJSON_ParseWithLength(data + i, first);
        bool whole_line = line != NULL;
        bool page = line && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(line, "results"));
        cJSON_Delete(line);
        if (page || (!whole_line && contains(data + i, len - i, "\"results\"")))
            return INGEST_OPENALEX;
        return INGEST_JSONL;
    }
    return memchr(data, '@', len) ? INGEST_BIBTEX : INGEST_JSONL;
}

/* ---- storing ------------------------------------------------------------------- */

struct ingest_session {
    struct ingest_sink sink; /* first, so that the sink converts back */
    struct memory *mem;
    char *source;
    struct ingest_counts counts;
    long pending;      /* records in the open transaction */
    bool own_tx;       /* whether this session opened it */
    long cites_before; /* cites links when the session started */
    int64_t *touched;
    size_t ntouched, cap_touched;
    int rc;
};

static int count_cites(struct memory *m, long *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db, "SELECT count(*) FROM memory_links WHERE type = 'cites'", -1, &st,
                           NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        rc = memory_db_error(m, "count the links of");
    else
        *out = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

static int sink_record(struct ingest_sink *sink, struct ingest_record *r)
{
    return ingest_store((struct ingest_session *)sink, r);
}

static void sink_malformed(struct ingest_sink *sink, const char *where, const char *why)
{
    ingest_report_malformed((struct ingest_session *)sink, where, why);
}

int ingest_session_new(struct ingest_session **out, struct memory *m, const char *source)
{
    struct ingest_session *s = xcalloc(1, sizeof *s);
    s->sink.record = sink_record;
    s->sink.malformed = sink_malformed;
    s->mem = m;
    s->source = xstrdup(source);
    int rc = count_cites(m, &s->cites_before);
    if (rc < 0) {
        free(s->source);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

struct ingest_sink *ingest_session_sink(struct ingest_session *s)
{
    return &s->sink;
}

void ingest_report_malformed(struct ingest_session *s, const char *where, const char *why)
{
    s->counts.skipped++;
    log_warn("%s: %s: %s; skipped", s->source, where, why);
}

static void touched(struct ingest_session *s, int64_t id)
{
    for (size_t i = s->ntouched; i > 0 && i + 8 > s->ntouched; i--)
        if (s->touched[i - 1] == id)
            return;
    if (s->ntouched == s->cap_touched)
        s->touched =
            xreallocarray(s->touched, s->cap_touched = s->cap_touched * 2 + 64, sizeof *s->touched);
    s->touched[s->ntouched++] = id;
}

const int64_t *ingest_session_touched(struct ingest_session *s, size_t *n)
{
    *n = s->ntouched;
    return s->touched;
}

/* The metadata object of a record. */
static cJSON *record_metadata(const struct ingest_record *r)
{
    cJSON *o = cJSON_CreateObject();
    if (r->nauthors) {
        cJSON *a = cJSON_AddArrayToObject(o, "authors");
        for (size_t i = 0; i < r->nauthors; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(r->authors[i]));
    }
    if (r->year)
        cJSON_AddNumberToObject(o, "year", r->year);
    if (r->doi)
        cJSON_AddStringToObject(o, "doi", r->doi);
    if (r->arxiv_id)
        cJSON_AddStringToObject(o, "arxiv_id", r->arxiv_id);
    if (r->openalex_id)
        cJSON_AddStringToObject(o, "openalex_id", r->openalex_id);
    if (r->url)
        cJSON_AddStringToObject(o, "url", r->url);
    if (r->venue)
        cJSON_AddStringToObject(o, "venue", r->venue);
    return o;
}

/* Searchable extras: authors, venue and year. */
static char *tags_of(const cJSON *meta)
{
    struct buf b;
    buf_init(&b, (size_t)60 << 10);
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(meta, "authors"))
    {
        if (cJSON_IsString(a))
            buf_printf(&b, "%s%s", b.len ? "; " : "", a->valuestring);
    }
    const char *venue = json_str(meta, "venue");
    if (venue)
        buf_printf(&b, "%s%s", b.len ? "; " : "", venue);
    const cJSON *year = cJSON_GetObjectItemCaseSensitive(meta, "year");
    if (cJSON_IsNumber(year))
        buf_printf(&b, "%s%d", b.len ? "; " : "", (int)year->valuedouble);
    return buf_detach(&b, NULL);
}

static void record_keys(const struct ingest_record *r, char *keys[4])
{
    memset(keys, 0, 4 * sizeof *keys);
    int n = 0;
    if (r->doi)
        keys[n++] = xasprintf("doi:%s", r->doi);
    if (r->arxiv_id)
        keys[n++] = xasprintf("arxiv:%s", r->arxiv_id);
    if (r->openalex_id)
        keys[n++] = xasprintf("openalex:%s", r->openalex_id);
    char *t = ingest_title_key(r->title);
    if (strlen(t) >= MIN_TITLE_KEY)
        keys[n++] = xasprintf("title:%s", t);
    free(t);
}

/* Completes item id with what the record knows and the item lacks. */
static int merge_into(struct ingest_session *s, int64_t id, const struct ingest_record *r)
{
    struct memory_item old;
    int rc = memory_item_get(s->mem, id, &old);
    if (rc < 0)
        return rc;
    cJSON *meta = cJSON_Parse(old.metadata ? old.metadata : "{}");
    if (!cJSON_IsObject(meta)) {
        cJSON_Delete(meta);
        meta = cJSON_CreateObject();
    }
    cJSON *fresh = record_metadata(r);
    bool changed = false;
    cJSON *f;
    cJSON_ArrayForEach(f, fresh)
    {
        cJSON *have = cJSON_GetObjectItemCaseSensitive(meta, f->string);
        if (!have || cJSON_IsNull(have)) {
            cJSON_DeleteItemFromObjectCaseSensitive(meta, f->string);
            cJSON_AddItemToObject(meta, f->string, cJSON_Duplicate(f, 1));
            changed = true;
        }
    }
    struct memory_item upd;
    memory_item_init(&upd);
    upd.importance = NAN;
    char *meta_text = NULL, *tags = NULL;
    if (changed) {
        meta_text = cJSON_PrintUnformatted(meta);
        tags = tags_of(meta);
        upd.metadata = meta_text;
        upd.tags = tags;
    }
    if (r->abstract && strlen(r->abstract) > strlen(old.text ? old.text : "")) {
        upd.text = r->abstract;
        changed = true;
    }
    if ((!old.title || !old.title[0]) && r->title) {
        upd.title = r->title;
        changed = true;
    }
    if (changed)
        rc = memory_item_update(s->mem, id, &upd);
    free(meta_text);
    free(tags);
    cJSON_Delete(meta);
    cJSON_Delete(fresh);
    memory_item_clear(&old);
    return rc;
}

static int add_new(struct ingest_session *s, const struct ingest_record *r, int64_t *id)
{
    cJSON *meta = record_metadata(r);
    char *meta_text = cJSON_PrintUnformatted(meta);
    char *tags = tags_of(meta);
    struct memory_item it;
    memory_item_init(&it);
    it.kind = "paper";
    it.title = r->title;
    it.text = r->abstract ? r->abstract : "";
    it.tags = tags;
    it.source = s->source;
    it.metadata = meta_text;
    int rc = memory_item_add(s->mem, &it, id, NULL);
    free(meta_text);
    free(tags);
    cJSON_Delete(meta);
    return rc;
}

int ingest_session_flush(struct ingest_session *s)
{
    if (!s->own_tx)
        return 0;
    s->own_tx = false;
    s->pending = 0;
    return memory_commit(s->mem);
}

int ingest_store(struct ingest_session *s, struct ingest_record *r)
{
    if (!r->title)
        return error_setc(TH_EUSAGE, "%s: no title", r->where);
    int rc = 0;
    if (!s->own_tx && !s->mem->in_tx) { /* else the caller's transaction holds all */
        if ((rc = memory_begin_bulk(s->mem)) < 0)
            return rc;
        s->own_tx = true;
    }
    char *keys[4];
    record_keys(r, keys);
    int64_t id = 0;
    bool found = false;
    for (int i = 0; i < 4 && keys[i] && !found; i++) {
        rc = memory_key_find(s->mem, keys[i], &id);
        if (rc == 0)
            found = true;
        else if (rc != TH_ENOTFOUND)
            goto cleanup;
    }
    error_clear();
    rc = found ? merge_into(s, id, r) : add_new(s, r, &id);
    if (rc < 0)
        goto cleanup;
    if (found)
        s->counts.merged++;
    else
        s->counts.added++;
    touched(s, id);
    for (int i = 0; i < 4 && keys[i]; i++) {
        rc = memory_key_add(s->mem, id, keys[i]);
        if (rc == TH_EEXISTS) { /* another item holds it: two records, one paper */
            log_debug("%s: %s", r->where, error_message());
            error_clear();
            rc = 0;
        } else if (rc < 0) {
            goto cleanup;
        }
    }
    for (size_t i = 0; i < r->nrefs; i++)
        if ((rc = memory_ref_add(s->mem, id, r->refs[i], "cites")) < 0)
            goto cleanup;
    if (s->own_tx && ++s->pending >= BATCH)
        rc = ingest_session_flush(s);
cleanup:
    for (int i = 0; i < 4; i++)
        free(keys[i]);
    return rc;
}

const struct ingest_counts *ingest_session_counts(struct ingest_session *s)
{
    long now = 0;
    if (count_cites(s->mem, &now) == 0)
        s->counts.links = now - s->cites_before;
    return &s->counts;
}

int ingest_session_free(struct ingest_session *s, int rc)
{
    if (!s)
        return rc;
    if (s->own_tx) {
        if (rc < 0) {
            memory_rollback(s->mem);
            s->own_tx = false;
        } else {
            rc = ingest_session_flush(s);
        }
    }
    free(s->source);
    free(s->touched);
    free(s);
    return rc;
}

int ingest_file(struct ingest_session *s, const char *path, enum ingest_format format)
{
    struct buf data;
    buf_init(&data, INGEST_MAX_FILE);
    int rc = buf_read_file(&data, path);
    if (rc < 0) {
        buf_free(&data);
        return rc;
    }
    if (format == INGEST_AUTO)
        format = ingest_format_guess(path, buf_str(&data), data.len);
    log_debug("reading '%s' as %s", path, ingest_format_name(format));
    const char *text = buf_str(&data);
    size_t len = data.len;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) { /* a byte-order mark */
        text += 3;
        len -= 3;
    }
    switch (format) {
    case INGEST_JSONL:
        rc = ingest_read_jsonl(text, len, &s->sink);
        break;
    case INGEST_BIBTEX:
        rc = ingest_read_bibtex(text, len, &s->sink);
        break;
    case INGEST_ATOM:
        rc = ingest_read_atom(text, len, &s->sink, NULL);
        break;
    case INGEST_OPENALEX:
    case INGEST_AUTO:
        rc = ingest_read_openalex(text, len, &s->sink, NULL);
        break;
    }
    buf_free(&data);
    if (rc < 0)
        error_prefix("'%s'", path);
    return rc;
}
