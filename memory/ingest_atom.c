/*
 * ingest_atom: arXiv's Atom feeds (the export API's replies and saved
 * copies of them) into records (see ingest.h).
 *
 * From each <entry>: <title>, <summary> (the abstract), <id> (the abs URL,
 * which gives the arXiv id), <published> (the year), <author><name>,
 * <link> (rel="alternate" for the URL), <arxiv:doi> and
 * <arxiv:journal_ref> (the venue). Namespaces are matched by local name.
 * An entry without a title or id is reported and skipped; malformed XML
 * inside an entry is reported with its line, and reading resumes at the
 * next <entry>. arXiv reports API errors as an entry whose id points to
 * its errors page: that becomes an error carrying arXiv's message.
 * Depends on ingest, xml, buf, alloc and error.
 */
#include "ingest.h"

#include "alloc.h"
#include "error.h"
#include "xml.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum field {
    F_NONE,
    F_TITLE,
    F_SUMMARY,
    F_ID,
    F_PUBLISHED,
    F_AUTHOR_NAME,
    F_DOI,
    F_JOURNAL,
};

struct entry {
    struct ingest_record r;
    char *id;
    long line;
};

static enum field field_of(const char *local, bool in_author)
{
    if (in_author)
        return !strcmp(local, "name") ? F_AUTHOR_NAME : F_NONE;
    if (!strcmp(local, "title"))
        return F_TITLE;
    if (!strcmp(local, "summary"))
        return F_SUMMARY;
    if (!strcmp(local, "id"))
        return F_ID;
    if (!strcmp(local, "published"))
        return F_PUBLISHED;
    if (!strcmp(local, "doi"))
        return F_DOI;
    if (!strcmp(local, "journal_ref"))
        return F_JOURNAL;
    return F_NONE;
}

static void store_field(struct entry *e, enum field f, const struct buf *text)
{
    const char *t = buf_str(text);
    switch (f) {
    case F_TITLE:
        ingest_set(&e->r.title, t, text->len);
        break;
    case F_SUMMARY:
        ingest_set(&e->r.abstract, t, text->len);
        break;
    case F_ID:
        ingest_set(&e->id, t, text->len);
        break;
    case F_PUBLISHED:
        while (*t && isspace((unsigned char)*t))
            t++;
        if (strspn(t, "0123456789") >= 4)
            e->r.year = (t[0] - '0') * 1000 + (t[1] - '0') * 100 + (t[2] - '0') * 10 + (t[3] - '0');
        break;
    case F_AUTHOR_NAME:
        ingest_record_add_author(&e->r, t);
        break;
    case F_DOI:
        if (!e->r.doi)
            e->r.doi = ingest_normalize_doi(t);
        break;
    case F_JOURNAL:
        ingest_set(&e->r.venue, t, text->len);
        break;
    case F_NONE:
        break;
    }
}

/* Hands a finished entry to the sink; an arXiv error entry ends reading. */
static int finish_entry(struct entry *e, long number, struct ingest_sink *sink)
{
    if (e->id && strstr(e->id, "arxiv.org/api/errors"))
        return error_set("arXiv reported an error: %s", e->r.abstract ? e->r.abstract
                                                        : e->r.title  ? e->r.title
                                                                      : e->id);
    if (e->id) {
        e->r.arxiv_id = ingest_normalize_arxiv(e->id);
        if (!e->r.url && strncmp(e->id, "http", 4) == 0)
            e->r.url = xstrdup(e->id);
    }
    snprintf(e->r.where, sizeof e->r.where, "entry %ld%s%s%s (line %ld)", number,
             e->r.arxiv_id ? " (" : "", e->r.arxiv_id ? e->r.arxiv_id : "",
             e->r.arxiv_id ? ")" : "", e->line);
    if (!e->r.title) {
        sink->malformed(sink, e->r.where, "no title");
        return 0;
    }
    if (!e->r.arxiv_id && !e->r.doi) {
        sink->malformed(sink, e->r.where, "no arXiv id (<id>) and no DOI");
        return 0;
    }
    return sink->record(sink, &e->r);
}

static void entry_clear(struct entry *e)
{
    ingest_record_clear(&e->r);
    free(e->id);
    e->id = NULL;
}

int ingest_read_atom(const char *data, size_t len, struct ingest_sink *sink, long *total_results)
{
    if (total_results)
        *total_results = -1;
    bool in_total = false;
    struct buf total;
    buf_init(&total, 64);
    struct xml_reader x;
    xml_init(&x, data, len);
    struct entry e = {0};
    struct buf text;
    buf_init(&text, (size_t)16 << 20);
    ingest_record_init(&e.r);
    int rc = 0, entry_depth = -1, field_depth = -1, author_depth = -1;
    enum field field = F_NONE;
    long entries = 0;
    bool saw_root = false;
    for (;;) {
        enum xml_event ev = xml_next(&x);
        if (ev == XML_EOF)
            break;
        if (ev == XML_ERROR) {
            if (entry_depth < 0) {
                rc = error_set("not a valid Atom feed: %s", x.error);
                break;
            }
            char where[160];
            snprintf(where, sizeof where, "entry %ld (line %ld)", entries, e.line);
            char why[300];
            snprintf(why, sizeof why, "malformed XML: %s", x.error);
            sink->malformed(sink, where, why);
            entry_clear(&e);
            ingest_record_init(&e.r);
            field = F_NONE;
            field_depth = author_depth = -1;
            int depth = entry_depth;
            entry_depth = -1;
            if (!xml_skip_to(&x, "entry", depth))
                break;
            continue;
        }
        if (ev == XML_START) {
            const char *local = xml_local(x.name);
            if (!saw_root) {
                saw_root = true;
                if (strcmp(local, "feed") && strcmp(local, "entry")) {
                    rc =
                        error_set("not an Atom feed: the root element is <%s>, not <feed>", x.name);
                    break;
                }
            }
            in_total = entry_depth < 0 && !strcmp(local, "totalResults");
            if (in_total)
                buf_reset(&total);
            if (entry_depth < 0 && !strcmp(local, "entry")) {
                entry_depth = x.depth - 1;
                entries++;
                e.line = x.line;
            } else if (entry_depth >= 0 && field == F_NONE) {
                int level = x.depth - 1 - entry_depth; /* 1: a child of <entry> */
                if (level == 1 && !strcmp(local, "author")) {
                    author_depth = x.depth - 1;
                } else if (level == 1 && !strcmp(local, "link")) {
                    const char *rel = xml_attr(&x, "rel"), *href = xml_attr(&x, "href");
                    if (href && (!rel || !strcmp(rel, "alternate")) && !e.r.url)
                        e.r.url = xstrdup(href);
                } else if (level == 1 || (level == 2 && author_depth >= 0)) {
                    field = field_of(local, level == 2);
                    if (field != F_NONE) {
                        field_depth = x.depth - 1;
                        buf_reset(&text);
                    }
                }
            }
        } else if (ev == XML_TEXT) {
            if (in_total && buf_append(&total, x.text.data, x.text.len) < 0)
                error_clear();
            if (field != F_NONE && buf_append(&text, x.text.data, x.text.len) < 0) {
                error_clear(); /* keep what fits */
            }
        } else if (ev == XML_END) {
            if (in_total) {
                in_total = false;
                char *end;
                long n = strtol(buf_str(&total), &end, 10);
                if (total_results && end != buf_str(&total) && n >= 0)
                    *total_results = n;
            }
            if (field != F_NONE && x.depth == field_depth) {
                store_field(&e, field, &text);
                field = F_NONE;
                field_depth = -1;
            } else if (author_depth >= 0 && x.depth == author_depth) {
                author_depth = -1;
            } else if (entry_depth >= 0 && x.depth == entry_depth) {
                rc = finish_entry(&e, entries, sink);
                entry_clear(&e);
                ingest_record_init(&e.r);
                entry_depth = -1;
                if (rc < 0)
                    break;
            }
        }
    }
    if (rc == 0 && !saw_root)
        rc = error_set("not an Atom feed: no XML elements");
    entry_clear(&e);
    buf_free(&text);
    buf_free(&total);
    xml_free(&x);
    return rc;
}
