/*
 * cmd_memory: the memory commands, `thalamus memory SUBCOMMAND` (search,
 * add, show, link, similar, episodes, stats, forget, export, import, embed)
 * and `thalamus doctor`.
 *
 * Each subcommand opens the workspace's database (applying migrations),
 * wraps it in a struct memory tuned by the memory.* keys, does one thing and
 * prints it for people (aligned, coloured on a terminal) or, with --json,
 * for programs. When memory.embedding_model is set, search embeds the query
 * and add embeds the new item; if the endpoint fails, they say so and go on
 * with keyword search alone. doctor checks the database without opening it
 * through the store (so it never migrates or writes a damaged file) and
 * exits 1 when it finds a problem. Depends on command, memory, embed,
 * config, workspace, store, buf, log, alloc, error and cJSON.
 */
#include "command.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "buf.h"
#include "config.h"
#include "embed.h"
#include "error.h"
#include "fsutil.h"
#include "llm.h"
#include "log.h"
#include "memory.h"
#include "text.h"
#include "utf8.h"
#include "workspace.h"

/* ---- what the subcommands share ------------------------------------------- */

struct ctx {
    char *workspace;
    struct config *cfg;
    struct store *store;
    struct memory *mem;
    struct embed_options embed; /* model NULL: embeddings off */
};

static int ctx_open(struct ctx *c)
{
    memset(c, 0, sizeof *c);
    int rc = workspace_find(".", &c->workspace);
    if (rc < 0 || (rc = config_load(&c->cfg, c->workspace)) < 0)
        return rc;
    memory_register_migrations();
    if ((rc = workspace_store_open(c->workspace, &c->store)) < 0)
        return rc;
    struct memory_params p;
    memory_params_from_config(&p, c->cfg);
    if ((rc = memory_new(&c->mem, c->store, &p)) < 0)
        return rc;
    rc = embed_options_from_config(&c->embed, c->cfg);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        rc = 0;
    }
    return rc;
}

static void ctx_close(struct ctx *c)
{
    embed_options_clear(&c->embed);
    memory_free(c->mem);
    store_close(c->store);
    config_free(c->cfg);
    free(c->workspace);
}

static void print_json(cJSON *j)
{
    char *s = cJSON_Print(j);
    printf("%s\n", s);
    free(s);
}

static char *join_args(char **args, int n)
{
    struct buf b;
    buf_init(&b, 0);
    for (int i = 0; i < n; i++)
        buf_printf(&b, "%s%s", i ? " " : "", args[i]);
    return buf_detach(&b, NULL);
}

static int parse_id(const char *s, int64_t *out)
{
    const char *p = s[0] == '#' ? s + 1 : s;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno || end == p || *end || v <= 0)
        return error_setc(TH_EUSAGE,
                          "'%s' is not an item id (a positive number, as 'memory "
                          "search' shows)",
                          s);
    *out = v;
    return 0;
}

static int parse_unit(const char *option, const char *value, double *out)
{
    char *end;
    double v = strtod(value, &end);
    if (end == value || *end || !(v >= 0 && v <= 1))
        return error_setc(TH_EUSAGE, "option '--%s' needs a number from 0 to 1, got '%s'", option,
                          value);
    *out = v;
    return 0;
}

/* "2024-05-01", "2024-05-01T12:30[:00][Z]", or "3d", "12h", "30m" ago. */
static int parse_time(const char *option, const char *s, int64_t now, int64_t *out)
{
    char *end;
    double n = strtod(s, &end);
    if (end != s && (!strcmp(end, "d") || !strcmp(end, "h") || !strcmp(end, "m")) && n >= 0) {
        double unit = *end == 'd' ? 86400000.0 : *end == 'h' ? 3600000.0 : 60000.0;
        *out = now - (int64_t)(n * unit);
        return 0;
    }
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
    int k = sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used);
    if (k == 3 && (s[used] == 'T' || s[used] == ' ')) {
        int used2 = 0;
        if (sscanf(s + used + 1, "%2d:%2d%n:%2d%n", &h, &mi, &used2, &sec, &used2) >= 2)
            used += 1 + used2;
        else
            k = 0;
    }
    if (k != 3 || (s[used] && strcmp(s + used, "Z")) || mo < 1 || mo > 12 || d < 1 || d > 31 ||
        h > 23 || mi > 59 || sec > 60)
        return error_setc(TH_EUSAGE,
                          "option '--%s' needs a UTC date such as 2024-05-01 or "
                          "2024-05-01T12:30:00Z, or a time ago such as 3d, 12h or 30m; got '%s'",
                          option, s);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

static void format_time(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* s cut to width display columns (roughly: one per code point), with "…". */
static void print_cut(FILE *out, const char *s, size_t width)
{
    size_t cols = 0, i = 0, n = strlen(s);
    while (i < n && cols < width) {
        size_t len = utf8_sequence_length((const unsigned char *)s + i, n - i);
        if (!len)
            len = 1;
        if (cols + 1 == width && i + len < n) {
            fputs("\xe2\x80\xa6", out);
            return;
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\t' || c == '\r')
            fputc(' ', out);
        else
            fwrite(s + i, 1, len, out);
        i += len;
        cols++;
    }
}

static const char *display_title(const struct memory_item *it)
{
    return it->title && it->title[0] ? it->title : it->text ? it->text : "";
}

static cJSON *item_json(const struct memory_item *it)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)it->id);
    cJSON_AddStringToObject(o, "uid", it->uid ? it->uid : "");
    cJSON_AddStringToObject(o, "kind", it->kind ? it->kind : "");
    cJSON_AddStringToObject(o, "title", it->title ? it->title : "");
    cJSON_AddStringToObject(o, "text", it->text ? it->text : "");
    cJSON_AddStringToObject(o, "tags", it->tags ? it->tags : "");
    if (it->source)
        cJSON_AddStringToObject(o, "source", it->source);
    else
        cJSON_AddNullToObject(o, "source");
    cJSON *meta = cJSON_Parse(it->metadata ? it->metadata : "{}");
    cJSON_AddItemToObject(o, "metadata", meta ? meta : cJSON_CreateObject());
    cJSON_AddNumberToObject(o, "importance", it->importance);
    cJSON_AddNumberToObject(o, "created_ms", (double)it->created_ms);
    cJSON_AddNumberToObject(o, "accessed_ms", (double)it->accessed_ms);
    cJSON_AddNumberToObject(o, "access_count", (double)it->access_count);
    return o;
}

static void add_number_or_null(cJSON *o, const char *name, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, name);
    else
        cJSON_AddNumberToObject(o, name, v);
}

/* Embeds one text when embeddings are configured; *vec NULL otherwise or on
 * failure (which is reported as a warning). */
static void embed_one(struct ctx *c, const char *text, float **vec, int *dim)
{
    *vec = NULL;
    *dim = 0;
    if (!c->embed.model)
        return;
    const char *texts[] = {text};
    if (embed_texts(&c->embed, texts, 1, vec, dim) < 0) {
        log_warn("%s; going on without embeddings", error_message());
        error_clear();
        *vec = NULL;
    }
}

/* ---- options, and which subcommand takes which ----------------------------- */

static const struct cli_option memory_options[] = {
    {"k", 'k', "N", "search, similar: how many items to show (default 10)"},
    {"kind", 0, "KIND", "the kind of item (search, similar, add: default note) or episode"},
    {"importance", 0, "X", "add: importance from 0 to 1 (default 0.5)"},
    {"title", 0, "TEXT", "add: a title"},
    {"source", 0, "TEXT", "add: where the item comes from (default user)"},
    {"type", 0, "TYPE", "link: cites, derived_from, similar, supports or contradicts"},
    {"weight", 0, "W", "link: weight from 0 to 1 (default 1)"},
    {"threshold", 0, "X", "similar: lowest similarity shown (default memory.similar_threshold)"},
    {"no-touch", 0, NULL, "search: leave access statistics unchanged"},
    {"run", 0, "RUN", "episodes: only this run"},
    {"node", 0, "NODE", "episodes: only this node"},
    {"agent", 0, "AGENT", "episodes: only this agent"},
    {"since", 0, "TIME", "episodes: from this time (2024-05-01, 2024-05-01T12:00Z, 3d, 12h)"},
    {"until", 0, "TIME", "episodes: before this time"},
    {"limit", 0, "N", "episodes: the newest N (100); embed: at most N"},
    {"embeddings", 0, NULL, "export: include embeddings"},
    {"output", 'o', "FILE", "export: write to FILE instead of standard output"},
    {"json", 0, NULL, "print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

struct subcommand {
    const char *name;
    const char *options; /* the options it takes, space separated */
    int min_args, max_args;
    const char *usage;
    int (*run)(struct ctx *c, const struct cli_args *a, char **args, int nargs);
};

static const char *opt(const struct cli_args *a, const char *name)
{
    return cli_value(memory_options, a, name);
}

static bool flag(const struct cli_args *a, const char *name)
{
    return cli_flag(memory_options, a, name);
}

/* ---- search ------------------------------------------------------------------ */

static void print_hits(const struct ctx *c, const struct memory_hit *hits, size_t n)
{
    FILE *out = stdout;
    const struct memory_params *p = memory_get_params(c->mem);
    if (n == 0) {
        printf("nothing recalled\n");
        return;
    }
    printf("%sscore = relevance x %g + recency x %g + importance x %g + activation x %g%s\n",
           term_dim(out), p->weight_relevance, p->weight_recency, p->weight_importance,
           p->weight_activation, term_reset(out));
    printf("%s%4s %6s %9s %7s %10s %10s %6s  %-10s %s%s\n", term_bold(out), "#", "score",
           "relevance", "recency", "importance", "activation", "id", "kind", "title",
           term_reset(out));
    for (size_t i = 0; i < n; i++) {
        const struct memory_hit *h = &hits[i];
        printf("%4zu %s%6.3f%s %9.3f %7.3f %10.3f %10.3f %6lld  %-10s ", i + 1, term_bold(out),
               h->score, term_reset(out), h->relevance_part, h->recency_part, h->importance_part,
               h->activation_part, (long long)h->item.id, h->item.kind);
        print_cut(out, display_title(&h->item), 60);
        if (h->via_id)
            printf("  %s(via #%lld %s%s)%s", term_dim(out), (long long)h->via_id, h->via_type,
                   h->via_hops > 1 ? ", 2 hops" : "", term_reset(out));
        putchar('\n');
    }
}

static cJSON *hits_json(const struct memory_hit *hits, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        const struct memory_hit *h = &hits[i];
        cJSON *o = item_json(&h->item);
        cJSON_AddNumberToObject(o, "rank", (double)(i + 1));
        cJSON_AddNumberToObject(o, "score", h->score);
        cJSON *b = cJSON_AddObjectToObject(o, "breakdown");
        cJSON_AddNumberToObject(b, "relevance", h->relevance);
        cJSON_AddNumberToObject(b, "recency", h->recency);
        cJSON_AddNumberToObject(b, "importance", h->importance);
        cJSON_AddNumberToObject(b, "activation", h->activation);
        cJSON_AddNumberToObject(b, "relevance_part", h->relevance_part);
        cJSON_AddNumberToObject(b, "recency_part", h->recency_part);
        cJSON_AddNumberToObject(b, "importance_part", h->importance_part);
        cJSON_AddNumberToObject(b, "activation_part", h->activation_part);
        add_number_or_null(b, "bm25", h->bm25);
        add_number_or_null(b, "cosine", h->cosine);
        cJSON_AddNumberToObject(b, "keyword_rank", h->keyword_rank);
        cJSON_AddNumberToObject(b, "vector_rank", h->vector_rank);
        if (h->via_id) {
            cJSON *v = cJSON_AddObjectToObject(o, "via");
            cJSON_AddNumberToObject(v, "id", (double)h->via_id);
            cJSON_AddStringToObject(v, "type", h->via_type);
            cJSON_AddNumberToObject(v, "hops", h->via_hops);
        } else {
            cJSON_AddNullToObject(o, "via");
        }
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static int sub_search(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    long k = 10;
    int rc = 0;
    if (opt(a, "k") && (rc = cli_positive_int("k", opt(a, "k"), &k)) < 0)
        return rc;
    if (k > MEMORY_MAX_K)
        return error_setc(TH_EUSAGE, "option '--k' can be at most %d", MEMORY_MAX_K);
    char *query = join_args(args, nargs);
    float *vec = NULL;
    int dim = 0;
    embed_one(c, query, &vec, &dim);
    struct memory_recall_options o = {
        .query = query,
        .kind = opt(a, "kind"),
        .k = (int)k,
        .query_vec = vec,
        .dim = dim,
        .model = c->embed.model,
        .no_touch = flag(a, "no-touch"),
    };
    struct memory_hit *hits = NULL;
    size_t n = 0;
    rc = memory_recall(c->mem, &o, &hits, &n);
    if (rc == 0) {
        if (flag(a, "json")) {
            cJSON *j = hits_json(hits, n);
            print_json(j);
            cJSON_Delete(j);
        } else {
            print_hits(c, hits, n);
        }
    }
    memory_hits_free(hits, n);
    free(vec);
    free(query);
    return rc;
}

/* ---- add ----------------------------------------------------------------------- */

static int read_stdin(struct buf *b)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (buf_append(b, chunk, n) < 0)
            return error_setc(TH_EUSAGE,
                              "the text on standard input is larger than the limit "
                              "of %zu bytes",
                              MEMORY_MAX_TEXT);
    if (ferror(stdin))
        return error_set("cannot read standard input: %s", strerror(errno));
    return 0;
}

static int sub_add(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    struct memory_item it;
    memory_item_init(&it);
    int rc = 0;
    if (opt(a, "importance") &&
        (rc = parse_unit("importance", opt(a, "importance"), &it.importance)) < 0)
        return rc;
    struct buf in;
    buf_init(&in, MEMORY_MAX_TEXT);
    char *text = NULL;
    bool repaired = false;
    if (nargs == 1 && !strcmp(args[0], "-")) {
        if ((rc = read_stdin(&in)) < 0) {
            buf_free(&in);
            return rc;
        }
        /* NUL bytes would end the text early: make them U+FFFD first (each
         * byte becomes at most three) */
        struct buf clean;
        buf_init(&clean, MEMORY_MAX_TEXT * 3 + 16);
        rc = utf8_repair(&clean, buf_str(&in), in.len, &repaired);
        text = buf_detach(&clean, NULL);
        buf_free(&clean);
        if (rc < 0) {
            buf_free(&in);
            free(text);
            return rc;
        }
    } else {
        text = join_args(args, nargs);
    }
    buf_free(&in);
    it.kind = (char *)(opt(a, "kind") ? opt(a, "kind") : "note");
    it.title = (char *)opt(a, "title");
    it.source = (char *)(opt(a, "source") ? opt(a, "source") : "user");
    it.text = text;
    int64_t id = 0;
    bool repaired_again = false;
    if ((rc = memory_item_add(c->mem, &it, &id, &repaired_again)) < 0)
        goto cleanup;
    if (repaired || repaired_again)
        log_warn("the text was not valid UTF-8; invalid bytes were replaced with U+FFFD");
    float *vec = NULL;
    int dim = 0;
    char *embed_text = it.title ? xasprintf("%s\n%s", it.title, text) : xstrdup(text);
    embed_one(c, embed_text, &vec, &dim);
    free(embed_text);
    if (vec && (rc = memory_embedding_put(c->mem, id, c->embed.model, vec, dim)) < 0) {
        free(vec);
        goto cleanup;
    }
    free(vec);
    if (flag(a, "json")) {
        struct memory_item got;
        if ((rc = memory_item_get(c->mem, id, &got)) == 0) {
            cJSON *j = item_json(&got);
            print_json(j);
            cJSON_Delete(j);
            memory_item_clear(&got);
        }
    } else {
        printf("added %s #%lld\n", it.kind, (long long)id);
    }
cleanup:
    free(text);
    return rc;
}

/* ---- show -------------------------------------------------------------------- */

static void print_wrapped(const char *text, const char *indent, size_t width)
{
    const char *p = text;
    size_t col = 0;
    fputs(indent, stdout);
    while (*p) {
        if (*p == '\n') {
            printf("\n%s", indent);
            col = 0;
            p++;
            continue;
        }
        const char *end = p;
        while (*end && *end != ' ' && *end != '\n')
            end++;
        size_t len = (size_t)(end - p);
        if (col && col + len > width) {
            printf("\n%s", indent);
            col = 0;
        }
        fwrite(p, 1, len, stdout);
        col += len;
        p = end;
        while (*p == ' ') {
            if (col && col < width)
                putchar(' ');
            col++;
            p++;
        }
    }
    putchar('\n');
}

static int sub_show(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)nargs;
    int64_t id;
    int rc = parse_id(args[0], &id);
    if (rc < 0)
        return rc;
    struct memory_item it;
    struct memory_link *links = NULL;
    size_t nlinks = 0;
    char **keys = NULL;
    if ((rc = memory_item_get(c->mem, id, &it)) < 0)
        return rc;
    if ((rc = memory_links_of(c->mem, id, &links, &nlinks)) < 0 ||
        (rc = memory_keys_of(c->mem, id, &keys)) < 0)
        goto cleanup;
    if (flag(a, "json")) {
        cJSON *j = item_json(&it);
        cJSON *ka = cJSON_AddArrayToObject(j, "keys");
        for (char **k = keys; *k; k++)
            cJSON_AddItemToArray(ka, cJSON_CreateString(*k));
        cJSON *la = cJSON_AddArrayToObject(j, "links");
        for (size_t i = 0; i < nlinks; i++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddNumberToObject(l, "src", (double)links[i].src);
            cJSON_AddNumberToObject(l, "dst", (double)links[i].dst);
            cJSON_AddStringToObject(l, "type", links[i].type);
            cJSON_AddNumberToObject(l, "weight", links[i].weight);
            cJSON_AddNumberToObject(l, "stored_weight", links[i].stored_weight);
            cJSON_AddNumberToObject(l, "updated_ms", (double)links[i].updated_ms);
            cJSON_AddItemToArray(la, l);
        }
        print_json(j);
        cJSON_Delete(j);
        goto cleanup;
    }
    FILE *out = stdout;
    char created[40], accessed[40];
    format_time(it.created_ms, created, sizeof created);
    format_time(it.accessed_ms, accessed, sizeof accessed);
    printf("%s#%lld %s%s  %s\n", term_bold(out), (long long)it.id, it.kind, term_reset(out),
           it.title && it.title[0] ? it.title : "(untitled)");
    printf("%-11s %s\n", "uid", it.uid);
    printf("%-11s %s\n", "source", it.source ? it.source : "-");
    printf("%-11s %.2f\n", "importance", it.importance);
    printf("%-11s %s\n", "created", created);
    printf("%-11s %s (%ld time%s)\n", "recalled", it.access_count ? accessed : "never",
           it.access_count, it.access_count == 1 ? "" : "s");
    if (it.tags && it.tags[0])
        printf("%-11s %s\n", "tags", it.tags);
    if (keys[0]) {
        printf("%-11s", "keys");
        for (char **k = keys; *k; k++)
            printf(" %s", *k);
        putchar('\n');
    }
    if (it.metadata && strcmp(it.metadata, "{}"))
        printf("%-11s %s\n", "metadata", it.metadata);
    if (it.text && it.text[0]) {
        printf("\n");
        print_wrapped(it.text, "  ", 78);
    }
    printf("\n%sLinks%s (%zu)\n", term_bold(out), term_reset(out), nlinks);
    for (size_t i = 0; i < nlinks; i++) {
        const struct memory_link *l = &links[i];
        bool outgoing = l->src == id;
        int64_t other = outgoing ? l->dst : l->src;
        bool sym = !strcmp(l->type, "similar") || !strcmp(l->type, "co_recalled");
        struct memory_item o;
        bool have = memory_item_get(c->mem, other, &o) == 0;
        if (!have)
            error_clear();
        char ref[32];
        snprintf(ref, sizeof ref, "#%lld", (long long)other);
        printf("  %s %-7s %-13s %.3f",
               sym        ? "<->"
               : outgoing ? "-->"
                          : "<--",
               ref, l->type, l->weight);
        if (l->weight != l->stored_weight)
            printf(" %s(%.3f when last used)%s", term_dim(out), l->stored_weight, term_reset(out));
        printf("  ");
        print_cut(out, have ? display_title(&o) : "", 50);
        putchar('\n');
        if (have)
            memory_item_clear(&o);
    }
cleanup:
    memory_strv_free(keys);
    free(links);
    memory_item_clear(&it);
    return rc;
}

/* ---- link, forget, similar ------------------------------------------------------ */

static int sub_link(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)nargs;
    int64_t src, dst;
    double weight = 1;
    const char *type = opt(a, "type") ? opt(a, "type") : "supports";
    int rc = parse_id(args[0], &src);
    if (rc < 0 || (rc = parse_id(args[1], &dst)) < 0)
        return rc;
    if (opt(a, "weight") && (rc = parse_unit("weight", opt(a, "weight"), &weight)) < 0)
        return rc;
    if ((rc = memory_link_set(c->mem, src, dst, type, weight)) < 0)
        return rc;
    printf("linked #%lld %s #%lld (weight %g)\n", (long long)src, type, (long long)dst, weight);
    return 0;
}

static int sub_forget(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)a;
    (void)nargs;
    int64_t id;
    int rc = parse_id(args[0], &id);
    if (rc < 0 || (rc = memory_item_forget(c->mem, id)) < 0)
        return rc;
    printf("forgot #%lld\n", (long long)id);
    return 0;
}

static int sub_similar(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    long k = 10;
    double threshold = c->cfg->memory_similar_threshold;
    int rc = 0;
    if (opt(a, "k") && (rc = cli_positive_int("k", opt(a, "k"), &k)) < 0)
        return rc;
    if (opt(a, "threshold") && (rc = parse_unit("threshold", opt(a, "threshold"), &threshold)) < 0)
        return rc;
    char *text = join_args(args, nargs);
    struct memory_match *list = NULL;
    size_t n = 0;
    /* with an embedding model, its cosine; without (or if it fails), TF-IDF */
    float *vec = NULL;
    int dim = 0;
    embed_one(c, text, &vec, &dim);
    const char *measure = vec ? "embedding cosine" : "tf-idf cosine";
    if (vec)
        rc = memory_similar_vector(c->mem, vec, dim, c->embed.model, opt(a, "kind"), threshold,
                                   (size_t)k, &list, &n);
    else
        rc = memory_similar(c->mem, text, opt(a, "kind"), threshold, (size_t)k, &list, &n);
    free(vec);
    free(text);
    if (rc < 0)
        return rc;
    if (flag(a, "json")) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "measure", measure);
            cJSON_AddNumberToObject(o, "id", (double)list[i].id);
            cJSON_AddStringToObject(o, "kind", list[i].kind);
            cJSON_AddStringToObject(o, "title", list[i].title);
            cJSON_AddNumberToObject(o, "similarity", list[i].similarity);
            cJSON_AddItemToArray(arr, o);
        }
        print_json(arr);
        cJSON_Delete(arr);
    } else if (n == 0) {
        printf("nothing at or above similarity %g (%s)\n", threshold, measure);
    } else {
        printf("%s%s%s\n", term_dim(stdout), measure, term_reset(stdout));
        printf("%s%10s %6s  %-10s %s%s\n", term_bold(stdout), "similarity", "id", "kind", "title",
               term_reset(stdout));
        for (size_t i = 0; i < n; i++) {
            printf("%10.3f %6lld  %-10s ", list[i].similarity, (long long)list[i].id, list[i].kind);
            print_cut(stdout, list[i].title, 60);
            putchar('\n');
        }
    }
    memory_matches_free(list, n);
    return 0;
}

/* ---- episodes ---------------------------------------------------------------- */

static int sub_episodes(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    struct memory_episode_filter f = {
        .run = opt(a, "run"),
        .node = opt(a, "node"),
        .kind = opt(a, "kind"),
        .agent = opt(a, "agent"),
        .limit = 100,
        .newest = true,
    };
    int64_t now = memory_now(c->mem);
    int rc = 0;
    if (opt(a, "since") && (rc = parse_time("since", opt(a, "since"), now, &f.since_ms)) < 0)
        return rc;
    if (opt(a, "until") && (rc = parse_time("until", opt(a, "until"), now, &f.until_ms)) < 0)
        return rc;
    if (opt(a, "limit") && (rc = cli_positive_int("limit", opt(a, "limit"), &f.limit)) < 0)
        return rc;
    struct memory_episode *list = NULL;
    size_t n = 0;
    if ((rc = memory_episodes(c->mem, &f, &list, &n)) < 0)
        return rc;
    if (flag(a, "json")) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            const struct memory_episode *e = &list[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", (double)e->id);
            cJSON_AddStringToObject(o, "uid", e->uid);
            cJSON_AddNumberToObject(o, "time_ms", (double)e->time_ms);
            cJSON_AddItemToObject(o, "run",
                                  e->run ? cJSON_CreateString(e->run) : cJSON_CreateNull());
            cJSON_AddItemToObject(o, "node",
                                  e->node ? cJSON_CreateString(e->node) : cJSON_CreateNull());
            cJSON_AddItemToObject(o, "agent",
                                  e->agent ? cJSON_CreateString(e->agent) : cJSON_CreateNull());
            cJSON_AddStringToObject(o, "kind", e->kind);
            cJSON_AddStringToObject(o, "text", e->text);
            cJSON *payload = e->payload ? cJSON_Parse(e->payload) : NULL;
            cJSON_AddItemToObject(o, "payload", payload ? payload : cJSON_CreateNull());
            cJSON_AddNumberToObject(o, "importance", e->importance);
            cJSON_AddItemToArray(arr, o);
        }
        print_json(arr);
        cJSON_Delete(arr);
    } else if (n == 0) {
        printf("no episodes\n");
    } else {
        for (size_t i = 0; i < n; i++) {
            const struct memory_episode *e = &list[i];
            char when[40];
            format_time(e->time_ms, when, sizeof when);
            printf("%s%s%s  %-10s %s%s%s%s%s  ", term_dim(stdout), when, term_reset(stdout),
                   e->kind, e->run ? e->run : "-", e->node ? "/" : "", e->node ? e->node : "",
                   e->agent ? " " : "", e->agent ? e->agent : "");
            print_cut(stdout, e->text, 70);
            putchar('\n');
        }
        if ((long)n == f.limit)
            fprintf(stderr, "the newest %ld episodes; --limit N shows more\n", f.limit);
    }
    memory_episodes_free(list, n);
    return 0;
}

/* ---- stats ---------------------------------------------------------------------- */

static void print_counts(const char *label, const cJSON *total, const cJSON *by)
{
    printf("%-12s %g", label, cJSON_IsNumber(total) ? total->valuedouble : 0);
    const cJSON *c;
    bool first = true;
    cJSON_ArrayForEach(c, by)
    {
        printf("%s%s %g", first ? "  (" : ", ", c->string, c->valuedouble);
        first = false;
    }
    printf("%s\n", first ? "" : ")");
}

static int sub_stats(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    cJSON *s = NULL;
    int rc = memory_stats(c->mem, &s);
    if (rc < 0)
        return rc;
    if (flag(a, "json")) {
        print_json(s);
        cJSON_Delete(s);
        return 0;
    }
    const cJSON *items = cJSON_GetObjectItem(s, "items"), *links = cJSON_GetObjectItem(s, "links"),
                *eps = cJSON_GetObjectItem(s, "episodes"), *db = cJSON_GetObjectItem(s, "database");
    print_counts("items", cJSON_GetObjectItem(items, "total"),
                 cJSON_GetObjectItem(items, "by_kind"));
    print_counts("links", cJSON_GetObjectItem(links, "total"),
                 cJSON_GetObjectItem(links, "by_type"));
    print_counts("episodes", cJSON_GetObjectItem(eps, "total"),
                 cJSON_GetObjectItem(eps, "by_kind"));
    const cJSON *emb = cJSON_GetObjectItem(s, "embeddings"), *e;
    printf("%-12s", "embeddings");
    bool any = false;
    cJSON_ArrayForEach(e, emb)
    {
        printf("%s%s %g", any ? ", " : " ", e->string, e->valuedouble);
        any = true;
    }
    printf("%s\n", any ? "" : " none");
    printf("%-12s %g identity keys, %g references waiting for their paper\n", "keys",
           cJSON_GetObjectItem(s, "keys")->valuedouble,
           cJSON_GetObjectItem(s, "pending_references")->valuedouble);
    printf("%-12s %s, %.1f KiB, memory schema %g\n", "database",
           cJSON_GetObjectItem(db, "path")->valuestring,
           cJSON_GetObjectItem(db, "bytes")->valuedouble / 1024.0,
           cJSON_GetObjectItem(db, "memory_schema")->valuedouble);
    printf("%-12s %s\n", "model",
           c->embed.model ? c->embed.model : "none: embeddings are off (memory.embedding_model)");
    cJSON_Delete(s);
    return 0;
}

/* ---- export, import, embed ------------------------------------------------------- */

static int sub_export(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    const char *path = opt(a, "output");
    char *tmp = path ? xasprintf("%s.tmp-%d", path, (int)getpid()) : NULL;
    FILE *out = stdout;
    if (tmp && !(out = fopen(tmp, "w"))) {
        int rc = error_set("cannot write '%s': %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    struct memory_io_counts counts;
    int rc = memory_export(c->mem, out, flag(a, "embeddings"), &counts);
    if (tmp) {
        if (fclose(out) != 0 && rc == 0)
            rc = error_set("cannot write '%s': %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) < 0)
            rc = error_set("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        if (rc < 0)
            unlink(tmp);
        free(tmp);
    }
    if (rc == 0)
        log_info("exported %ld items, %ld links, %ld episodes, %ld embeddings%s%s", counts.items,
                 counts.links, counts.episodes, counts.embeddings, path ? " to " : "",
                 path ? path : "");
    return rc;
}

static int sub_import(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)a;
    (void)nargs;
    const char *path = args[0];
    FILE *in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!in)
        return error_set("cannot open '%s': %s", path, strerror(errno));
    struct memory_io_counts n;
    int rc = memory_import(c->mem, in, strcmp(path, "-") ? path : "standard input", &n);
    if (in != stdin)
        fclose(in);
    if (rc < 0)
        return rc;
    printf("imported %ld items (%ld already there), %ld links, %ld episodes, %ld embeddings",
           n.items, n.items_existing, n.links, n.episodes, n.embeddings);
    if (n.skipped)
        printf("; %ld malformed line%s skipped", n.skipped, n.skipped == 1 ? "" : "s");
    putchar('\n');
    return n.skipped ? 3 : 0;
}

static int sub_embed(struct ctx *c, const struct cli_args *a, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    if (!c->embed.model)
        return error_setc(TH_ECONFIG, "no embedding model is configured: set "
                                      "memory.embedding_model in thalamus.lua");
    long limit = 0;
    int rc = 0;
    if (opt(a, "limit") && (rc = cli_positive_int("limit", opt(a, "limit"), &limit)) < 0)
        return rc;
    int64_t *ids = NULL;
    size_t n = 0;
    if ((rc = memory_embedding_missing(c->mem, c->embed.model, limit, &ids, &n)) < 0)
        return rc;
    size_t done = 0;
    for (size_t i = 0; i < n && rc == 0; i += EMBED_BATCH) {
        size_t batch = n - i < EMBED_BATCH ? n - i : EMBED_BATCH;
        char *texts[EMBED_BATCH];
        size_t got = 0;
        for (size_t j = 0; j < batch && rc == 0; j++) {
            struct memory_item it;
            if ((rc = memory_item_get(c->mem, ids[i + j], &it)) == 0) {
                texts[got++] =
                    it.title[0] ? xasprintf("%s\n%s", it.title, it.text) : xstrdup(it.text);
                memory_item_clear(&it);
            }
        }
        float *vecs = NULL;
        int dim = 0;
        if (rc == 0)
            rc = embed_texts(&c->embed, (const char *const *)texts, got, &vecs, &dim);
        if (rc == 0 && (rc = memory_begin(c->mem)) == 0) {
            for (size_t j = 0; j < got && rc == 0; j++)
                rc = memory_embedding_put(c->mem, ids[i + j], c->embed.model,
                                          vecs + j * (size_t)dim, dim);
            if (rc == 0)
                rc = memory_commit(c->mem);
            else
                memory_rollback(c->mem);
        }
        if (rc == 0)
            done += got;
        for (size_t j = 0; j < got; j++)
            free(texts[j]);
        free(vecs);
    }
    free(ids);
    printf("embedded %zu item%s with %s\n", done, done == 1 ? "" : "s", c->embed.model);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------ */

static const struct subcommand subcommands[] = {
    {"search", "k kind no-touch json", 1, 1000, "search QUERY [--k N] [--kind K] [--json]",
     sub_search},
    {"add", "kind importance title source json", 1, 1000,
     "add TEXT|- [--kind note] [--importance X] [--title T] [--source S]", sub_add},
    {"show", "json", 1, 1, "show ID [--json]", sub_show},
    {"link", "type weight", 2, 2, "link ID ID [--type T] [--weight W]", sub_link},
    {"forget", "", 1, 1, "forget ID", sub_forget},
    {"similar", "k kind threshold json", 1, 1000, "similar TEXT [--kind K] [--threshold X]",
     sub_similar},
    {"episodes", "run node kind agent since until limit json", 0, 0,
     "episodes [--run R] [--node N] [--kind K] [--since T] [--until T]", sub_episodes},
    {"stats", "json", 0, 0, "stats [--json]", sub_stats},
    {"export", "embeddings output", 0, 0, "export [--output FILE] [--embeddings]", sub_export},
    {"import", "", 1, 1, "import FILE|-", sub_import},
    {"embed", "limit", 0, 0, "embed [--limit N]", sub_embed},
};

#define NSUB (sizeof subcommands / sizeof subcommands[0])

static bool takes(const struct subcommand *s, const char *option)
{
    size_t n = strlen(option);
    for (const char *p = s->options; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        if (len == n && !strncmp(p, option, n))
            return true;
        p += len + (sp ? 1 : 0);
    }
    return false;
}

static int cmd_memory(const struct command *cmd, struct cli_args *args)
{
    (void)cmd;
    const char *name = args->positional[0];
    const struct subcommand *sub = NULL;
    const char *names[NSUB + 1];
    for (size_t i = 0; i < NSUB; i++) {
        names[i] = subcommands[i].name;
        if (!strcmp(subcommands[i].name, name))
            sub = &subcommands[i];
    }
    names[NSUB] = NULL;
    if (!sub) {
        const char *hint = text_closest(name, names);
        return hint ? error_setc(TH_EUSAGE, "unknown memory command '%s'; did you mean '%s'?", name,
                                 hint)
                    : error_setc(TH_EUSAGE,
                                 "unknown memory command '%s'; run 'thalamus help memory'", name);
    }
    for (int i = 0; memory_options[i].name; i++)
        if (args->values[i] && strcmp(memory_options[i].name, "help") &&
            !takes(sub, memory_options[i].name))
            return error_setc(TH_EUSAGE,
                              "option '--%s' does not apply to 'memory %s' (usage: "
                              "memory %s)",
                              memory_options[i].name, sub->name, sub->usage);
    int nargs = args->npositional - 1;
    if (nargs < sub->min_args || nargs > sub->max_args)
        return error_setc(TH_EUSAGE, "usage: thalamus memory %s", sub->usage);
    struct ctx c;
    int rc = ctx_open(&c);
    if (rc == 0)
        rc = sub->run(&c, args, args->positional + 1, nargs);
    ctx_close(&c);
    return rc;
}

const struct command command_memory = {
    "memory",
    "search|add|show|link|forget|similar|episodes|stats|export|import|embed [ARGS]",
    "search, add to and inspect the workspace's memory",
    "  memory search QUERY [--k N] [--kind K] [--no-touch] [--json]\n"
    "      recall items, ranked, with the score's breakdown (see docs/memory.md)\n"
    "  memory add TEXT|- [--kind note] [--importance X] [--title T] [--source S]\n"
    "      add an item (- reads the text from standard input)\n"
    "  memory show ID [--json]           an item with its keys and links\n"
    "  memory link ID ID [--type supports] [--weight 1]\n"
    "  memory forget ID                  delete an item, its links and keys\n"
    "  memory similar TEXT [--kind K] [--threshold X]\n"
    "      the nearest items (the novelty check of ideas): by the cosine of embeddings\n"
    "      when memory.embedding_model is set, else by TF-IDF cosine\n"
    "  memory episodes [--run R] [--node N] [--kind K] [--agent A] [--since T] [--until T]\n"
    "      the episodic timeline, oldest first\n"
    "  memory stats [--json]             counts and the database's size\n"
    "  memory export [--output FILE] [--embeddings]\n"
    "  memory import FILE|-              JSON Lines, as export writes them; importing twice\n"
    "                                    adds nothing; exit status 3 if lines were skipped\n"
    "  memory embed [--limit N]          embed items that have no embedding yet\n"
    "Item kinds: paper, idea, insight, note, concept, experiment.",
    memory_options,
    1,
    1000,
    cmd_memory};

/* ---- thalamus doctor ---------------------------------------------------------------- */

static const struct cli_option doctor_options[] = {
    {"quick", 0, NULL, "PRAGMA quick_check instead of the full integrity_check"},
    {"json", 0, NULL, "print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int cmd_doctor(const struct command *cmd, struct cli_args *args)
{
    char *ws = NULL;
    int rc = workspace_find(".", &ws);
    if (rc < 0)
        return rc;
    char *state = fs_join(ws, WORKSPACE_STATE_DIR);
    char *path = fs_join(state, "memory.db");
    free(state);
    free(ws);
    /* the versions this build knows, to compare with the file's */
    memory_register_migrations();
    llm_register_migrations();
    cJSON *report = NULL;
    rc = memory_doctor(path, cli_flag(cmd->options, args, "quick"), &report);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        printf("no database yet at %s: nothing to check\n", path);
        free(path);
        return 0;
    }
    free(path);
    if (rc < 0)
        return rc;
    bool ok = cJSON_IsTrue(cJSON_GetObjectItem(report, "ok"));
    if (cli_flag(cmd->options, args, "json")) {
        print_json(report);
    } else {
        FILE *out = stdout;
        printf("%s%s%s (%.1f KiB)\n", term_bold(out),
               cJSON_GetObjectItem(report, "path")->valuestring, term_reset(out),
               cJSON_GetObjectItem(report, "bytes")->valuedouble / 1024.0);
        const cJSON *c;
        int problems = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(report, "checks"))
        {
            bool good = cJSON_IsTrue(cJSON_GetObjectItem(c, "ok"));
            problems += !good;
            printf("  %s%-5s%s %-16s %s\n", good ? term_green(out) : term_red(out),
                   good ? "ok" : "FAIL", term_reset(out),
                   cJSON_GetObjectItem(c, "name")->valuestring,
                   cJSON_GetObjectItem(c, "detail")->valuestring);
        }
        if (ok)
            printf("all checks passed\n");
        else
            printf("%d problem%s found; keep a copy of the file before repairing it (sqlite3's "
                   ".recover, or 'thalamus memory export' from a working copy)\n",
                   problems, problems == 1 ? "" : "s");
    }
    cJSON_Delete(report);
    return ok ? 0 : 1;
}

const struct command command_doctor = {
    "doctor",
    "[--quick] [--json]",
    "check the workspace's database for damage",
    "Checks .thalamus/memory.db without changing it: that it is a SQLite database made by\n"
    "thalamus, SQLite's integrity check (or the quicker quick_check), foreign keys, the\n"
    "full-text index against the items, the append-only triggers of the episodic store,\n"
    "the journal mode, and the schema version of each module against this build's. Exit\n"
    "status 0 when everything is fine, 1 when a check fails.",
    doctor_options,
    0,
    0,
    cmd_doctor};
