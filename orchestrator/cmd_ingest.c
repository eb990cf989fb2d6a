/*
 * cmd_ingest: `thalamus ingest`, literature into the workspace's memory.
 *
 * Reads files (JSON Lines, BibTeX, arXiv Atom XML, saved OpenAlex pages;
 * the format guessed from the name and first bytes, or --format) and
 * searches OpenAlex (--openalex QUERY) and arXiv (--arxiv QUERY) through
 * the HTTP layer, with the literature.* keys for base URLs, politeness
 * delays, retries and the reply cache (.thalamus/cache/literature). Every
 * record is merged into memory by DOI, arXiv id, OpenAlex id or normalised
 * title; citations become links. Malformed records are reported (with
 * their line or entry) and skipped, the rest is stored. When an embedding
 * model is configured, new and changed papers are embedded afterwards.
 * Exit status: 0 when everything was read, 3 when some records were
 * skipped, 1 on failure (what was stored before the failure stays), 130
 * when interrupted. Depends on command, ingest, memory, embed, http, loop,
 * config, workspace, fsutil, log and error.
 */
#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "embed.h"
#include "error.h"
#include "fsutil.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "loop.h"
#include "memory.h"
#include "workspace.h"

#define EXIT_SKIPPED  3
#define DEFAULT_LIMIT 25
#define MAX_LIMIT     10000

static const struct cli_option ingest_options[] = {
    {"openalex", 0, "QUERY", "search OpenAlex and ingest the works found"},
    {"arxiv", 0, "QUERY", "search arXiv (words, or its syntax: ti:, au:, cat:...)"},
    {"limit", 'n', "N", "with --openalex / --arxiv: at most N papers each (default 25)"},
    {"refresh", 0, NULL, "ask the APIs again even when a cached reply is fresh"},
    {"format", 'f', "FORMAT", "jsonl, bibtex, atom or openalex (default: guessed)"},
    {"json", 0, NULL, "print the counts as JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct fetch_run {
    bool done, interrupted;
    int rc;
    struct ingest_fetch_stats stats;
    struct ingest_fetch *fetch;
};

static void on_fetched(struct ingest_fetch *f, int rc, const struct ingest_fetch_stats *stats,
                       void *ud)
{
    (void)f;
    struct fetch_run *r = ud;
    r->done = true;
    r->rc = rc;
    r->stats = *stats;
}

static void on_interrupt(struct loop *loop, int signo, int count, void *ud)
{
    (void)signo;
    (void)count;
    struct fetch_run *r = ud;
    r->interrupted = true;
    loop_stop(loop);
}

static int fetch(struct ingest_session *s, const struct config *cfg, const char *cache_dir,
                 enum ingest_source source, const char *query, long limit, bool refresh,
                 bool *interrupted)
{
    struct loop *loop = NULL;
    struct http_client *http = NULL;
    struct fetch_run run = {0};
    bool openalex = source == INGEST_SOURCE_OPENALEX;
    struct ingest_fetch_options o = {
        .source = source,
        .query = query,
        .limit = limit,
        .base_url = openalex ? cfg->literature_openalex_url : cfg->literature_arxiv_url,
        .delay_seconds = openalex ? cfg->literature_openalex_delay : cfg->literature_arxiv_delay,
        .max_retries = cfg->literature_max_retries,
        .timeout_seconds = cfg->literature_timeout,
        .mailto = cfg->literature_mailto,
        .cache_dir = cache_dir,
        .cache_days = cfg->literature_cache_days,
        .refresh = refresh,
    };
    int rc = loop_new(&loop);
    if (rc == 0)
        rc = http_client_new(loop, &http);
    if (rc == 0)
        rc = loop_on_shutdown(loop, on_interrupt, &run);
    if (rc == 0)
        rc = ingest_fetch_start(&run.fetch, loop, http, s, &o, on_fetched, &run);
    while (rc == 0 && !run.done && !run.interrupted)
        rc = loop_run(loop);
    if (rc == 0 && run.interrupted) {
        *interrupted = true;
        log_error("interrupted: what was fetched so far is kept");
    } else if (rc == 0) {
        rc = run.rc;
    }
    log_info("%s: %ld page%s, %ld request%s, %ld from the cache, %ld retr%s",
             openalex ? "OpenAlex" : "arXiv", run.stats.pages, run.stats.pages == 1 ? "" : "s",
             run.stats.requests, run.stats.requests == 1 ? "" : "s", run.stats.cache_hits,
             run.stats.retries, run.stats.retries == 1 ? "y" : "ies");
    ingest_fetch_free(run.fetch);
    http_client_free(http);
    loop_free(loop);
    return rc;
}

/* Embeds the papers the session added or changed, when a model is set. */
static void embed_touched(struct memory *m, struct ingest_session *s, const struct config *cfg)
{
    struct embed_options eo;
    if (embed_options_from_config(&eo, cfg) < 0) {
        error_clear();
        return;
    }
    size_t n = 0;
    const int64_t *ids = ingest_session_touched(s, &n);
    size_t done = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += EMBED_BATCH) {
        size_t batch = n - i < EMBED_BATCH ? n - i : EMBED_BATCH;
        char *texts[EMBED_BATCH];
        size_t got = 0;
        for (size_t j = 0; j < batch && rc == 0; j++) {
            struct memory_item it;
            if ((rc = memory_item_get(m, ids[i + j], &it)) == 0) {
                texts[got++] =
                    it.title[0] ? xasprintf("%s\n%s", it.title, it.text) : xstrdup(it.text);
                memory_item_clear(&it);
            }
        }
        float *vecs = NULL;
        int dim = 0;
        if (rc == 0)
            rc = embed_texts(&eo, (const char *const *)texts, got, &vecs, &dim);
        if (rc == 0 && (rc = memory_begin(m)) == 0) {
            for (size_t j = 0; j < got && rc == 0; j++)
                rc = memory_embedding_put(m, ids[i + j], eo.model, vecs + j * (size_t)dim, dim);
            if (rc == 0)
                rc = memory_commit(m);
            else
                memory_rollback(m);
        }
        for (size_t j = 0; j < got; j++)
            free(texts[j]);
        free(vecs);
        if (rc == 0)
            done += got;
    }
    if (rc < 0) {
        log_warn("%s; %zu of %zu papers have no embedding yet: 'thalamus memory embed' adds them "
                 "later",
                 error_message(), n - done, n);
        error_clear();
    } else if (done) {
        log_info("embedded %zu paper%s with %s", done, done == 1 ? "" : "s", eo.model);
    }
    embed_options_clear(&eo);
}

static int cmd_ingest(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    const char *openalex = cli_value(o, args, "openalex"), *arxiv = cli_value(o, args, "arxiv");
    if (!args->npositional && !openalex && !arxiv)
        return error_setc(TH_EUSAGE, "ingest needs a FILE, --openalex QUERY or --arxiv QUERY");
    long limit = DEFAULT_LIMIT;
    int rc = 0;
    if (cli_value(o, args, "limit") &&
        (rc = cli_positive_int("limit", cli_value(o, args, "limit"), &limit)) < 0)
        return rc;
    if (limit > MAX_LIMIT)
        return error_setc(TH_EUSAGE, "option '--limit' can be at most %d", MAX_LIMIT);
    enum ingest_format format = INGEST_AUTO;
    if (cli_value(o, args, "format") &&
        (rc = ingest_format_parse(cli_value(o, args, "format"), &format)) < 0)
        return rc;

    char *ws = NULL, *cache_dir = NULL;
    struct config *cfg = NULL;
    struct store *store = NULL;
    struct memory *mem = NULL;
    cJSON *report = cJSON_CreateArray();
    long skipped = 0;
    bool interrupted = false;
    if ((rc = workspace_find(".", &ws)) < 0 || (rc = config_load(&cfg, ws)) < 0)
        goto cleanup;
    memory_register_migrations();
    if ((rc = workspace_store_open(ws, &store)) < 0)
        goto cleanup;
    struct memory_params p;
    memory_params_from_config(&p, cfg);
    if ((rc = memory_new(&mem, store, &p)) < 0)
        goto cleanup;
    char *state = fs_join(ws, WORKSPACE_STATE_DIR);
    char *cache = fs_join(state, "cache");
    cache_dir = fs_join(cache, "literature");
    free(cache);
    free(state);

    /* each source: its own session, so that the counts are per source */
    int nsources = args->npositional + (openalex != NULL) + (arxiv != NULL);
    for (int i = 0; i < nsources && rc == 0 && !interrupted; i++) {
        const char *label;
        const char *file = NULL;
        enum ingest_source source = INGEST_SOURCE_OPENALEX;
        const char *query = NULL;
        if (i < args->npositional) {
            file = args->positional[i];
            const char *slash = strrchr(file, '/');
            label = slash ? slash + 1 : file;
        } else if (i == args->npositional && openalex) {
            label = "openalex";
            query = openalex;
        } else {
            label = "arxiv";
            source = INGEST_SOURCE_ARXIV;
            query = arxiv;
        }
        struct ingest_session *s = NULL;
        if ((rc = ingest_session_new(&s, mem, label)) < 0)
            break;
        if (file)
            rc = ingest_file(s, file, format);
        else
            rc = fetch(s, cfg, cache_dir, source, query, limit, cli_flag(o, args, "refresh"),
                       &interrupted);
        const struct ingest_counts *n = ingest_session_counts(s);
        struct ingest_counts counts = *n;
        if (rc == 0 || interrupted)
            embed_touched(mem, s, cfg);
        /* what was read before a failure is kept (a failed commit rolls back) */
        int frc = ingest_session_free(s, 0);
        if (rc == 0)
            rc = frc;
        skipped += counts.skipped;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "source", file ? file : label);
        cJSON_AddNumberToObject(r, "added", (double)counts.added);
        cJSON_AddNumberToObject(r, "merged", (double)counts.merged);
        cJSON_AddNumberToObject(r, "skipped", (double)counts.skipped);
        cJSON_AddNumberToObject(r, "links", (double)counts.links);
        cJSON_AddItemToArray(report, r);
        if (!cli_flag(o, args, "json"))
            printf("%s: %ld added, %ld merged, %ld skipped (malformed), %ld citation link%s\n",
                   file ? file : label, counts.added, counts.merged, counts.skipped, counts.links,
                   counts.links == 1 ? "" : "s");
    }
    if (cli_flag(o, args, "json")) {
        char *s = cJSON_Print(report);
        printf("%s\n", s);
        free(s);
    }
cleanup:
    cJSON_Delete(report);
    memory_free(mem);
    store_close(store);
    config_free(cfg);
    free(cache_dir);
    free(ws);
    if (rc < 0)
        return rc;
    if (interrupted)
        return EXIT_INTERRUPTED;
    return skipped ? EXIT_SKIPPED : 0;
}

const struct command command_ingest = {
    "ingest",
    "FILE... | --openalex QUERY | --arxiv QUERY [--limit N] [--refresh]",
    "add papers to memory from files, OpenAlex or arXiv",
    "Reads JSON Lines (title, abstract, authors, year, doi or url per line), BibTeX, arXiv\n"
    "Atom XML or saved OpenAlex pages, and searches OpenAlex and arXiv (politely: one request\n"
    "at a time, literature.*_delay apart, replies cached for literature.cache_days). Papers\n"
    "already in memory (same DOI, arXiv id, OpenAlex id or title) are completed, not\n"
    "duplicated; citations become links. Malformed records are reported and skipped.\n"
    "Exit status: 0 all read, 3 some records skipped, 1 failure, 130 interrupted.",
    ingest_options,
    0,
    1000,
    cmd_ingest};
