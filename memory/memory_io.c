/*
 * memory_io: statistics of the memory, and its export and import as JSON
 * Lines (see memory.h and docs/memory.md for the format). Records refer to
 * items by uid, never by row id, so an export moves between workspaces and
 * importing the same file twice adds nothing. Depends on memory_internal,
 * buf, log, alloc, error, SQLite and cJSON.
 */
#include "memory_internal.h"

#include "alloc.h"
#include "error.h"
#include "log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT_FORMAT   "thalamus-memory"
#define EXPORT_VERSION  1
#define MAX_IMPORT_LINE ((size_t)128 << 20)

/* ---- statistics ------------------------------------------------------------ */

/* Adds {name: count} pairs from a two-column query to a new object of o. */
static int add_counts(struct memory *m, cJSON *o, const char *name, const char *sql, long *total)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    cJSON *by = cJSON_AddObjectToObject(o, name);
    *total = 0;
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "read statistics of");
        goto cleanup;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(st, 0);
        long n = (long)sqlite3_column_int64(st, 1);
        cJSON_AddNumberToObject(by, k ? k : "(none)", (double)n);
        *total += n;
    }
    if (step != SQLITE_DONE)
        rc = memory_db_error(m, "read statistics of");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static int query_long(struct memory *m, const char *sql, long *out)
{
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        rc = memory_db_error(m, "read statistics of");
    else
        *out = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

int memory_stats(struct memory *m, cJSON **out)
{
    cJSON *root = cJSON_CreateObject();
    long total = 0, n = 0;
    int rc = 0;
    cJSON *items = cJSON_AddObjectToObject(root, "items");
    if ((rc = add_counts(m, items, "by_kind",
                         "SELECT kind, count(*) FROM memory_items GROUP BY kind ORDER BY kind",
                         &total)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(items, "total", (double)total);
    cJSON *links = cJSON_AddObjectToObject(root, "links");
    if ((rc = add_counts(m, links, "by_type",
                         "SELECT type, count(*) FROM memory_links GROUP BY type ORDER BY type",
                         &total)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(links, "total", (double)total);
    cJSON *episodes = cJSON_AddObjectToObject(root, "episodes");
    if ((rc = add_counts(m, episodes, "by_kind",
                         "SELECT kind, count(*) FROM memory_episodes GROUP BY kind ORDER BY kind",
                         &total)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(episodes, "total", (double)total);
    if ((rc = add_counts(m, root, "embeddings",
                         "SELECT model, count(*) FROM memory_embeddings GROUP BY model"
                         " ORDER BY model",
                         &total)) < 0)
        goto cleanup;
    if ((rc = query_long(m, "SELECT count(*) FROM memory_keys", &n)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(root, "keys", (double)n);
    if ((rc = query_long(m, "SELECT count(*) FROM memory_refs", &n)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(root, "pending_references", (double)n);
    cJSON *db = cJSON_AddObjectToObject(root, "database");
    cJSON_AddStringToObject(db, "path", m->store->path);
    long pages = 0, page_size = 0, freelist = 0;
    if ((rc = query_long(m, "PRAGMA page_count", &pages)) < 0 ||
        (rc = query_long(m, "PRAGMA page_size", &page_size)) < 0 ||
        (rc = query_long(m, "PRAGMA freelist_count", &freelist)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(db, "bytes", (double)pages * (double)page_size);
    cJSON_AddNumberToObject(db, "free_bytes", (double)freelist * (double)page_size);
    int version = 0;
    if ((rc = store_schema_version(m->store, "memory", &version)) < 0)
        goto cleanup;
    cJSON_AddNumberToObject(db, "memory_schema", version);
cleanup:
    if (rc < 0) {
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return 0;
}

/* ---- base64, for embeddings ------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_encode(const unsigned char *p, size_t n)
{
    char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Decodes s into *out (free it); -1 when s is not base64. */
static long base64_decode(const char *s, unsigned char **out)
{
    size_t n = strlen(s);
    if (n % 4)
        return -1;
    unsigned char *buf = xmalloc(n / 4 * 3 + 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            const char *c = s[i + j] == '=' ? NULL : strchr(b64, s[i + j]);
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                pad++;
            } else if (!c || !s[i + j] || pad) {
                free(buf);
                return -1;
            }
            v = v << 6 | (c ? (unsigned)(c - b64) : 0);
        }
        buf[len++] = (unsigned char)(v >> 16);
        if (pad < 2)
            buf[len++] = (unsigned char)(v >> 8);
        if (pad < 1)
            buf[len++] = (unsigned char)v;
    }
    *out = buf;
    return (long)len;
}

/* ---- export ---------------------------------------------------------------- */

static int emit(FILE *out, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return error_set("cannot encode a record as JSON");
    int ok = fputs(s, out) >= 0 && fputc('\n', out) != EOF;
    free(s);
    return ok ? 0 : error_set("cannot write the export: %s", "write error");
}

static void add_string_or_null(cJSON *o, const char *name, sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    if (s)
        cJSON_AddStringToObject(o, name, s);
    else
        cJSON_AddNullToObject(o, name);
}

static void add_raw_json(cJSON *o, const char *name, sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    cJSON *v = s ? cJSON_Parse(s) : NULL;
    cJSON_AddItemToObject(o, name, v ? v : cJSON_CreateNull());
}

static int export_items(struct memory *m, FILE *out, struct memory_io_counts *c)
{
    sqlite3_stmt *st = NULL, *keys = NULL, *refs = NULL;
    int rc = 0, step;
    if (sqlite3_prepare_v2(m->db, "SELECT " MEMORY_ITEM_COLUMNS " FROM memory_items ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(m->db, "SELECT key FROM memory_keys WHERE item_id = ?1 ORDER BY key", -1,
                           &keys, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(m->db,
                           "SELECT key, type FROM memory_refs WHERE item_id = ?1 ORDER BY key", -1,
                           &refs, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "export");
        goto cleanup;
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "item");
        add_string_or_null(o, "uid", st, 1);
        add_string_or_null(o, "kind", st, 2);
        add_string_or_null(o, "title", st, 3);
        add_string_or_null(o, "text", st, 4);
        add_string_or_null(o, "tags", st, 5);
        add_string_or_null(o, "source", st, 6);
        add_raw_json(o, "metadata", st, 7);
        cJSON_AddNumberToObject(o, "importance", sqlite3_column_double(st, 8));
        cJSON_AddNumberToObject(o, "created_ms", (double)sqlite3_column_int64(st, 9));
        cJSON_AddNumberToObject(o, "accessed_ms", (double)sqlite3_column_int64(st, 10));
        cJSON_AddNumberToObject(o, "access_count", (double)sqlite3_column_int64(st, 11));
        int64_t id = sqlite3_column_int64(st, 0);
        cJSON *ka = cJSON_AddArrayToObject(o, "keys");
        sqlite3_reset(keys);
        sqlite3_bind_int64(keys, 1, id);
        while (sqlite3_step(keys) == SQLITE_ROW) {
            cJSON_AddItemToArray(ka,
                                 cJSON_CreateString((const char *)sqlite3_column_text(keys, 0)));
            c->keys++;
        }
        cJSON *ra = cJSON_AddArrayToObject(o, "refs");
        sqlite3_reset(refs);
        sqlite3_bind_int64(refs, 1, id);
        while (sqlite3_step(refs) == SQLITE_ROW) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "key", (const char *)sqlite3_column_text(refs, 0));
            cJSON_AddStringToObject(r, "type", (const char *)sqlite3_column_text(refs, 1));
            cJSON_AddItemToArray(ra, r);
        }
        rc = emit(out, o);
        c->items++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = memory_db_error(m, "export");
cleanup:
    sqlite3_finalize(st);
    sqlite3_finalize(keys);
    sqlite3_finalize(refs);
    return rc;
}

static int export_links(struct memory *m, FILE *out, struct memory_io_counts *c)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    if (sqlite3_prepare_v2(
            m->db,
            "SELECT a.uid, b.uid, l.type, l.weight, l.updated_ms FROM memory_links l"
            " JOIN memory_items a ON a.id = l.src JOIN memory_items b ON b.id = l.dst"
            " ORDER BY l.src, l.dst, l.type",
            -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "export");
        goto cleanup;
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "link");
        add_string_or_null(o, "src", st, 0);
        add_string_or_null(o, "dst", st, 1);
        add_string_or_null(o, "link_type", st, 2);
        cJSON_AddNumberToObject(o, "weight", sqlite3_column_double(st, 3));
        cJSON_AddNumberToObject(o, "updated_ms", (double)sqlite3_column_int64(st, 4));
        rc = emit(out, o);
        c->links++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = memory_db_error(m, "export");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static int export_episodes(struct memory *m, FILE *out, struct memory_io_counts *c)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT uid, time_ms, run, node, agent, kind, text, payload, importance"
                           " FROM memory_episodes ORDER BY time_ms, id",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "export");
        goto cleanup;
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "episode");
        add_string_or_null(o, "uid", st, 0);
        cJSON_AddNumberToObject(o, "time_ms", (double)sqlite3_column_int64(st, 1));
        add_string_or_null(o, "run", st, 2);
        add_string_or_null(o, "node", st, 3);
        add_string_or_null(o, "agent", st, 4);
        add_string_or_null(o, "kind", st, 5);
        add_string_or_null(o, "text", st, 6);
        add_raw_json(o, "payload", st, 7);
        cJSON_AddNumberToObject(o, "importance", sqlite3_column_double(st, 8));
        rc = emit(out, o);
        c->episodes++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = memory_db_error(m, "export");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

static int export_embeddings(struct memory *m, FILE *out, struct memory_io_counts *c)
{
    sqlite3_stmt *st = NULL;
    int rc = 0, step;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT i.uid, e.model, e.dim, e.vector FROM memory_embeddings e"
                           " JOIN memory_items i ON i.id = e.item_id ORDER BY e.item_id, e.model",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = memory_db_error(m, "export");
        goto cleanup;
    }
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "embedding");
        add_string_or_null(o, "item", st, 0);
        add_string_or_null(o, "model", st, 1);
        cJSON_AddNumberToObject(o, "dim", sqlite3_column_int(st, 2));
        char *v = base64_encode(sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3));
        cJSON_AddStringToObject(o, "vector", v);
        free(v);
        rc = emit(out, o);
        c->embeddings++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = memory_db_error(m, "export");
cleanup:
    sqlite3_finalize(st);
    return rc;
}

int memory_export(struct memory *m, FILE *out, bool embeddings, struct memory_io_counts *counts)
{
    struct memory_io_counts c = {0};
    /* one read transaction, so that the export is a consistent snapshot */
    if (sqlite3_exec(m->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return memory_db_error(m, "export");
    cJSON *head = cJSON_CreateObject();
    cJSON_AddStringToObject(head, "type", EXPORT_FORMAT);
    cJSON_AddNumberToObject(head, "version", EXPORT_VERSION);
    cJSON_AddNumberToObject(head, "exported_ms", (double)memory_now(m));
    int rc = emit(out, head);
    if (rc == 0)
        rc = export_items(m, out, &c);
    if (rc == 0)
        rc = export_links(m, out, &c);
    if (rc == 0)
        rc = export_episodes(m, out, &c);
    if (rc == 0 && embeddings)
        rc = export_embeddings(m, out, &c);
    sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL);
    if (rc == 0 && fflush(out) != 0)
        rc = error_set("cannot write the export");
    if (counts)
        *counts = c;
    return rc;
}

/* ---- import ---------------------------------------------------------------- */

/* Reads one line (without its newline) into line; *eof when nothing was
 * left. A line longer than the buffer's cap is an error. */
static int read_line(FILE *in, struct buf *line, bool *eof)
{
    buf_reset(line);
    char chunk[65536];
    *eof = true;
    while (fgets(chunk, sizeof chunk, in)) {
        *eof = false;
        size_t n = strlen(chunk);
        bool end = n && chunk[n - 1] == '\n';
        if (buf_append(line, chunk, end ? n - 1 : n) < 0)
            return TH_ERR;
        if (end)
            return 0;
    }
    if (ferror(in))
        return error_set("read error");
    return 0;
}

static const char *str_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool num_field(const cJSON *o, const char *name, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    *out = v->valuedouble;
    return true;
}

static int import_item(struct memory *m, const cJSON *o, const char *where,
                       struct memory_io_counts *c)
{
    struct memory_item it;
    memory_item_init(&it);
    it.uid = (char *)str_field(o, "uid");
    it.kind = (char *)str_field(o, "kind");
    it.title = (char *)str_field(o, "title");
    it.text = (char *)str_field(o, "text");
    it.tags = (char *)str_field(o, "tags");
    it.source = (char *)str_field(o, "source");
    if (!it.uid || !it.kind || !it.text)
        return error_setc(TH_EUSAGE, "%s: an item needs uid, kind and text", where);
    int64_t id = 0;
    int rc = memory_item_by_uid(m, it.uid, &id);
    if (rc == 0) {
        c->items_existing++;
        return 0;
    }
    if (rc != TH_ENOTFOUND)
        return rc;
    error_clear();
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    char *meta_text = cJSON_IsObject(meta) ? cJSON_PrintUnformatted(meta) : NULL;
    it.metadata = meta_text;
    double v;
    if (num_field(o, "importance", &v))
        it.importance = v;
    if (num_field(o, "created_ms", &v) && v > 0)
        it.created_ms = (int64_t)v;
    if (num_field(o, "accessed_ms", &v) && v > 0)
        it.accessed_ms = (int64_t)v;
    if (num_field(o, "access_count", &v) && v >= 0)
        it.access_count = (long)v;
    rc = memory_item_add(m, &it, &id, NULL);
    free(meta_text);
    if (rc < 0)
        return rc == TH_EUSAGE ? error_prefix("%s", where) : rc;
    c->items++;
    const cJSON *k;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(o, "keys"))
    {
        if (!cJSON_IsString(k))
            continue;
        rc = memory_key_add(m, id, k->valuestring);
        if (rc == TH_EEXISTS || rc == TH_EUSAGE) {
            log_warn("%s: %s; the key is left out", where, error_message());
            error_clear();
            continue;
        }
        if (rc < 0)
            return rc;
        c->keys++;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(o, "refs"))
    {
        const char *key = str_field(r, "key"), *type = str_field(r, "type");
        if (key && type && (rc = memory_ref_add(m, id, key, type)) < 0) {
            if (rc != TH_EUSAGE)
                return rc;
            log_warn("%s: %s; the reference is left out", where, error_message());
            error_clear();
        }
    }
    return 0;
}

static int uid_to_id(struct memory *m, const char *uid, const char *where, int64_t *id)
{
    if (!uid)
        return error_setc(TH_EUSAGE, "%s: a uid is missing", where);
    int rc = memory_item_by_uid(m, uid, id);
    if (rc == TH_ENOTFOUND)
        return error_setc(TH_EUSAGE, "%s: no item has the uid '%s'", where, uid);
    return rc;
}

static int import_link(struct memory *m, const cJSON *o, const char *where,
                       struct memory_io_counts *c)
{
    int64_t src, dst;
    double weight, updated;
    const char *type = str_field(o, "link_type");
    int rc = uid_to_id(m, str_field(o, "src"), where, &src);
    if (rc < 0 || (rc = uid_to_id(m, str_field(o, "dst"), where, &dst)) < 0)
        return rc;
    if (!type || !num_field(o, "weight", &weight) || !num_field(o, "updated_ms", &updated))
        return error_setc(TH_EUSAGE, "%s: a link needs link_type, weight and updated_ms", where);
    if ((rc = memory_link_put(m, src, dst, type, weight, (int64_t)updated)) < 0)
        return rc == TH_EUSAGE ? error_prefix("%s", where) : rc;
    c->links++;
    return 0;
}

static int import_episode(struct memory *m, const cJSON *o, const char *where,
                          struct memory_io_counts *c)
{
    struct memory_episode ep = {0};
    ep.uid = (char *)str_field(o, "uid");
    ep.run = (char *)str_field(o, "run");
    ep.node = (char *)str_field(o, "node");
    ep.agent = (char *)str_field(o, "agent");
    ep.kind = (char *)str_field(o, "kind");
    ep.text = (char *)str_field(o, "text");
    ep.importance = 0.5;
    double v;
    if (!ep.uid || !ep.kind || !ep.text || !num_field(o, "time_ms", &v) || v <= 0)
        return error_setc(TH_EUSAGE, "%s: an episode needs uid, time_ms, kind and text", where);
    ep.time_ms = (int64_t)v;
    if (num_field(o, "importance", &v))
        ep.importance = v;
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(o, "payload");
    char *payload_text = payload && !cJSON_IsNull(payload) ? cJSON_PrintUnformatted(payload) : NULL;
    ep.payload = payload_text;
    int64_t id;
    int rc = memory_episode_add(m, &ep, &id);
    free(payload_text);
    if (rc == TH_EEXISTS) {
        error_clear();
        return 0;
    }
    if (rc < 0)
        return rc == TH_EUSAGE ? error_prefix("%s", where) : rc;
    c->episodes++;
    return 0;
}

static int import_embedding(struct memory *m, const cJSON *o, const char *where,
                            struct memory_io_counts *c)
{
    int64_t id;
    double dim;
    const char *model = str_field(o, "model"), *vector = str_field(o, "vector");
    int rc = uid_to_id(m, str_field(o, "item"), where, &id);
    if (rc < 0)
        return rc;
    if (!model || !vector || !num_field(o, "dim", &dim))
        return error_setc(TH_EUSAGE, "%s: an embedding needs item, model, dim and vector", where);
    unsigned char *bytes = NULL;
    long len = base64_decode(vector, &bytes);
    if (len < 0 || dim < 1 || len != (long)dim * 4) {
        free(bytes);
        return error_setc(TH_EUSAGE, "%s: the vector does not hold %g float32 values", where, dim);
    }
    float *vec = xmalloc((size_t)len);
    memcpy(vec, bytes, (size_t)len);
    free(bytes);
    rc = memory_embedding_put(m, id, model, vec, (int)dim);
    free(vec);
    if (rc < 0)
        return rc == TH_EUSAGE || rc == TH_ERR ? error_prefix("%s", where) : rc;
    c->embeddings++;
    return 0;
}

static int import_record(struct memory *m, const cJSON *o, const char *where,
                         struct memory_io_counts *c)
{
    const char *type = str_field(o, "type");
    if (!cJSON_IsObject(o) || !type)
        return error_setc(TH_EUSAGE, "%s: not a JSON object with a \"type\"", where);
    if (!strcmp(type, EXPORT_FORMAT)) {
        double v = 0;
        if (!num_field(o, "version", &v) || v > EXPORT_VERSION)
            return error_set("%s: the export has format version %g; this thalamus reads up to "
                             "%d, so upgrade thalamus",
                             where, v, EXPORT_VERSION);
        return 0;
    }
    if (!strcmp(type, "item"))
        return import_item(m, o, where, c);
    if (!strcmp(type, "link"))
        return import_link(m, o, where, c);
    if (!strcmp(type, "episode"))
        return import_episode(m, o, where, c);
    if (!strcmp(type, "embedding"))
        return import_embedding(m, o, where, c);
    return error_setc(TH_EUSAGE, "%s: unknown record type '%s'", where, type);
}

int memory_import(struct memory *m, FILE *in, const char *name, struct memory_io_counts *counts)
{
    struct memory_io_counts c = {0};
    struct buf line;
    buf_init(&line, MAX_IMPORT_LINE);
    int rc = memory_begin_bulk(m);
    if (rc < 0)
        return rc;
    for (long lineno = 1;; lineno++) {
        bool eof;
        if ((rc = read_line(in, &line, &eof)) < 0) {
            error_prefix("%s:%ld", name, lineno);
            break;
        }
        if (eof)
            break;
        if (line.len == 0)
            continue;
        char where[512];
        snprintf(where, sizeof where, "%s:%ld", name, lineno);
        cJSON *o = cJSON_ParseWithLength(line.data, line.len);
        if (!o) {
            log_warn("%s: not valid JSON; line skipped", where);
            c.skipped++;
            continue;
        }
        rc = import_record(m, o, where, &c);
        cJSON_Delete(o);
        if (rc == TH_EUSAGE || rc == TH_ENOTFOUND || rc == TH_EEXISTS) {
            log_warn("%s; line skipped", error_message());
            error_clear();
            c.skipped++;
            rc = 0;
        } else if (rc < 0) {
            break;
        }
    }
    buf_free(&line);
    if (rc == 0)
        rc = memory_commit(m);
    else
        memory_rollback(m);
    if (counts)
        *counts = c;
    return rc;
}
