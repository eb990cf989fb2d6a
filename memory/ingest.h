/*
 * ingest: literature into the associative memory.
 *
 * Papers arrive as records (title, abstract, authors, year, DOI, arXiv id,
 * OpenAlex id, URL, venue, references) from four readers: JSON Lines,
 * BibTeX (a tolerant parser: nested braces, quoted values, @string macros,
 * # concatenation, @comment and @preamble skipped, common LaTeX accents
 * turned into Unicode), arXiv Atom XML (through xml.h), and OpenAlex JSON
 * pages. A reader hands each good record to a sink and reports each
 * malformed one with where it was (line or entry) and why; the rest of the
 * input is still read. ingest_store() merges a record into memory: an item
 * that already holds its DOI, arXiv id, OpenAlex id or normalised title is
 * completed instead of duplicated, and references become cites links (at
 * once, or when the cited paper arrives). ingest_fetch.c fetches records
 * from the OpenAlex and arXiv APIs. Depends on memory, xml, utf8, buf,
 * alloc, error, log and cJSON.
 */
#ifndef THALAMUS_INGEST_H
#define THALAMUS_INGEST_H

#include <stdbool.h>
#include <stddef.h>

#include "memory.h"

#define INGEST_MAX_FILE    ((size_t)256 << 20) /* bytes of one input file */
#define INGEST_MAX_AUTHORS 500
#define INGEST_MAX_REFS    2000

struct ingest_record {
    char *title;
    char *abstract;
    char **authors; /* display names */
    size_t nauthors;
    int year;          /* 0: unknown */
    char *doi;         /* normalised: lower case, "10.x/y" */
    char *arxiv_id;    /* without version: "2101.00001" or "hep-th/9901001" */
    char *openalex_id; /* "W2741809807" */
    char *url;
    char *venue;
    char **refs; /* keys of cited works: "doi:...", "arxiv:...", "openalex:W..." */
    size_t nrefs;
    char where[160]; /* "line 12", "entry 'vaswani2017' (line 40)" */
};

void ingest_record_init(struct ingest_record *r);
void ingest_record_clear(struct ingest_record *r);
void ingest_record_add_author(struct ingest_record *r, const char *name);
void ingest_record_add_ref(struct ingest_record *r, const char *key);
/* Sets a string field from raw text: repaired to UTF-8, whitespace collapsed. */
void ingest_set(char **field, const char *text, size_t len);

/* Normalisers; each returns a new string, or NULL when s is not one. */
char *ingest_normalize_doi(const char *s);      /* "https://doi.org/10.1/AB" -> "10.1/ab" */
char *ingest_normalize_arxiv(const char *s);    /* "arXiv:2101.00001v2" -> "2101.00001" */
char *ingest_normalize_openalex(const char *s); /* "https://openalex.org/W12" -> "W12" */
/* Lower-case words of a title joined by single spaces, without punctuation
 * or TeX braces: the key under which duplicates by title meet. */
char *ingest_title_key(const char *title);
/* A reference in any of the forms above as an item key, or NULL. */
char *ingest_ref_key(const char *s);

/* Where readers send what they read. */
struct ingest_sink {
    /* A good record; the sink may take its strings. Return <0 to stop
     * reading (a failure recorded with error_set). */
    int (*record)(struct ingest_sink *sink, struct ingest_record *r);
    /* A malformed record, skipped: where (e.g. "line 3") and why. */
    void (*malformed)(struct ingest_sink *sink, const char *where, const char *why);
};

/* The readers. Each returns 0 after reading everything it could (malformed
 * records go to sink->malformed), or <0 when the sink stopped it or the
 * input as a whole is unreadable. */
int ingest_read_jsonl(const char *data, size_t len, struct ingest_sink *sink);
int ingest_read_bibtex(const char *data, size_t len, struct ingest_sink *sink);
/* *total_results (may be NULL) gets the feed's opensearch:totalResults, -1
 * when it has none. */
int ingest_read_atom(const char *data, size_t len, struct ingest_sink *sink, long *total_results);
/* One page of OpenAlex's /works: its "results"; *next_cursor (may be NULL)
 * gets meta.next_cursor, NULL at the end. */
int ingest_read_openalex(const char *data, size_t len, struct ingest_sink *sink,
                         char **next_cursor);

/* LaTeX to plain UTF-8 text: accents to precomposed letters, escaped
 * specials unescaped, grouping braces and formatting commands removed. */
char *ingest_latex_to_text(const char *s, size_t len);

enum ingest_format {
    INGEST_AUTO = 0,
    INGEST_JSONL,
    INGEST_BIBTEX,
    INGEST_ATOM,
    INGEST_OPENALEX,
};

/* "jsonl", "bibtex", "atom" or "openalex" to a format; TH_EUSAGE else. */
int ingest_format_parse(const char *name, enum ingest_format *out);
const char *ingest_format_name(enum ingest_format f);
/* Guesses the format from a file's name and first bytes. */
enum ingest_format ingest_format_guess(const char *name, const char *data, size_t len);

/* ---- storing ------------------------------------------------------------- */

struct ingest_counts {
    long added;   /* new items */
    long merged;  /* records merged into items already in memory */
    long skipped; /* malformed records */
    long links;   /* cites links made */
};

struct ingest_session;

/* Starts storing records into m, with source as the items' source (e.g.
 * "openalex" or the file's name). Writes go in transactions of a few
 * hundred records, so an interruption keeps what was committed. */
int ingest_session_new(struct ingest_session **out, struct memory *m, const char *source);
/* Stores (merging) one record. */
int ingest_store(struct ingest_session *s, struct ingest_record *r);
/* Counts a malformed record and logs where and why. */
void ingest_report_malformed(struct ingest_session *s, const char *where, const char *why);
/* A sink that stores into the session. */
struct ingest_sink *ingest_session_sink(struct ingest_session *s);
/* Ids of the items added or changed so far (for embedding them). */
const int64_t *ingest_session_touched(struct ingest_session *s, size_t *n);
/* Commits what is pending (and keeps the session usable). */
int ingest_session_flush(struct ingest_session *s);
const struct ingest_counts *ingest_session_counts(struct ingest_session *s);
/* Commits and frees; pass rc < 0 to roll back only the uncommitted batch. */
int ingest_session_free(struct ingest_session *s, int rc);

/* Reads a whole file (capped at INGEST_MAX_FILE) in the given format (or
 * guessed) into the session. */
int ingest_file(struct ingest_session *s, const char *path, enum ingest_format format);

/* ---- fetching from OpenAlex and arXiv (ingest_fetch.c) --------------------- */

struct loop;
struct http_client;
struct ingest_fetch;

enum ingest_source {
    INGEST_SOURCE_OPENALEX,
    INGEST_SOURCE_ARXIV,
};

struct ingest_fetch_options {
    enum ingest_source source;
    const char *query; /* OpenAlex: full-text search; arXiv: words, or its own syntax */
    long limit;        /* most records */
    const char *base_url;
    double delay_seconds; /* between the end of a reply and the next request */
    long max_retries;
    double timeout_seconds;
    const char *mailto;    /* NULL or "": none */
    const char *cache_dir; /* NULL: no cache */
    double cache_days;     /* how long a cached reply is fresh; 0: no cache */
    bool refresh;          /* ignore cached replies (still store new ones) */
};

struct ingest_fetch_stats {
    long pages, requests, retries, cache_hits, records;
};

/* Called once when the fetch ends: rc 0, or <0 with error_set(). The fetch
 * may be freed from inside the callback. */
typedef void (*ingest_fetch_done_cb)(struct ingest_fetch *f, int rc,
                                     const struct ingest_fetch_stats *stats, void *ud);

/* Starts fetching into session; the work happens on loop (run it). Options
 * are copied. Fails at once only for a bad query, limit or URL. */
int ingest_fetch_start(struct ingest_fetch **out, struct loop *loop, struct http_client *http,
                       struct ingest_session *session, const struct ingest_fetch_options *o,
                       ingest_fetch_done_cb done, void *ud);
/* Cancels what is in flight (the done callback is not called) and frees. */
void ingest_fetch_free(struct ingest_fetch *f);

#endif
