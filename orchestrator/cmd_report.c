/*
 * cmd_report: `thalamus report [RUN] [--out DIR] [--json] [--from FILE]`.
 *
 * Exports a run of the workspace (the latest when RUN is not given) with
 * research_export() and renders it with report_render() into DIR, by
 * default .thalamus/reports/RUN/ in the workspace, then prints the paths of
 * the files written (as JSON with --json). --from renders a run document
 * exported earlier (the run.json a report leaves beside it) without opening
 * a workspace. Depends on alloc, buf, cli, command, error, fsutil, report,
 * research, workspace and cJSON.
 */
#include "command.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "error.h"
#include "fsutil.h"
#include "report.h"
#include "research.h"
#include "store.h"
#include "workspace.h"

#define DOCUMENT_MAX ((size_t)256 << 20)

static const struct cli_option report_options[] = {
    {"out", 'o', "DIR", "directory to write into (default: .thalamus/reports/RUN/)"},
    {"from", 0, "FILE", "render a run document exported earlier (a report's run.json)"},
    {"json", 0, NULL, "print the paths written as JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int read_document(const char *path, cJSON **out)
{
    struct buf b;
    buf_init(&b, DOCUMENT_MAX);
    int rc = buf_read_file(&b, path);
    if (rc == 0) {
        const char *end = NULL;
        *out = cJSON_ParseWithLengthOpts(buf_str(&b), b.len, &end, 0);
        if (!*out)
            rc = error_setc(TH_EUSAGE,
                            "'%s' is not a run document: invalid JSON at byte %zu; give a "
                            "file that 'thalamus report' wrote (run.json)",
                            path, end ? (size_t)(end - buf_str(&b)) : (size_t)0);
        else if (!cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            rc = error_setc(TH_EUSAGE, "'%s' is not a run document: it holds no JSON object", path);
        }
    }
    buf_free(&b);
    return rc;
}

/* The run's id as a directory name; ids that would leave the reports
 * directory are replaced. */
static const char *safe_name(const cJSON *doc)
{
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(doc, "run");
    const cJSON *id = cJSON_IsObject(run) ? cJSON_GetObjectItemCaseSensitive(run, "id") : NULL;
    const char *s = cJSON_IsString(id) ? id->valuestring : NULL;
    if (!s || !s[0] || strlen(s) > 128 || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..") ||
        s[0] == '.')
        return "run";
    return s;
}

static int export_run(const char *workspace, const char *run, cJSON **out)
{
    struct store *store = NULL;
    research_register_migrations();
    int rc = workspace_store_open(workspace, &store);
    if (rc == 0)
        rc = research_export(store, run, out);
    store_close(store);
    return rc;
}

static void print_paths(const struct report_files *f, const cJSON *doc, bool json)
{
    if (json) {
        cJSON *o = cJSON_CreateObject();
        const cJSON *run = cJSON_GetObjectItemCaseSensitive(doc, "run");
        const cJSON *id = cJSON_IsObject(run) ? cJSON_GetObjectItemCaseSensitive(run, "id") : NULL;
        if (cJSON_IsString(id))
            cJSON_AddStringToObject(o, "run", id->valuestring);
        else
            cJSON_AddNullToObject(o, "run");
        cJSON_AddStringToObject(o, "html", f->html);
        cJSON_AddStringToObject(o, "markdown", f->markdown);
        cJSON_AddStringToObject(o, "metric_svg", f->metric_svg);
        cJSON_AddStringToObject(o, "tree_svg", f->tree_svg);
        cJSON_AddStringToObject(o, "document", f->document);
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
        return;
    }
    printf("%s\n%s\n%s\n%s\n%s\n", f->html, f->markdown, f->metric_svg, f->tree_svg, f->document);
}

static int run_report(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    const char *from = cli_value(o, args, "from");
    const char *out_dir = cli_value(o, args, "out");
    const char *run = args->npositional ? args->positional[0] : NULL;
    char *workspace = NULL, *dir = NULL;
    cJSON *doc = NULL;
    struct report_files files = {0};
    int rc = 0;

    if (from && run) {
        rc = error_setc(TH_EUSAGE, "give a RUN or '--from FILE', not both");
        goto cleanup;
    }
    if (!from || !out_dir) {
        rc = workspace_find(".", &workspace);
        if (rc < 0) {
            if (from)
                rc = error_setc(TH_EUSAGE,
                                "not in a workspace: give '--out DIR' to say where the report "
                                "of '%s' goes",
                                from);
            goto cleanup;
        }
    }
    rc = from ? read_document(from, &doc) : export_run(workspace, run, &doc);
    if (rc < 0)
        goto cleanup;
    if (out_dir)
        dir = xstrdup(out_dir);
    else
        dir = xasprintf("%s/%s/reports/%s", workspace, WORKSPACE_STATE_DIR, safe_name(doc));
    if ((rc = report_render(doc, dir, &files)) < 0)
        goto cleanup;
    print_paths(&files, doc, cli_flag(o, args, "json"));

cleanup:
    report_files_free(&files);
    cJSON_Delete(doc);
    free(dir);
    free(workspace);
    return rc;
}

const struct command command_report = {
    "report",
    "[RUN] [--out DIR] [--json]",
    "write an HTML and Markdown report of a run",
    "Writes the report of RUN (the latest run when not given) into\n"
    ".thalamus/reports/RUN/ of the workspace, or into DIR with --out:\n"
    "report.html, one self-contained page (open it in any browser, offline),\n"
    "report.md with its figures metric.svg and tree.svg, and run.json, the run\n"
    "as a JSON document. The report shows the metric of every experiment in the\n"
    "order they finished with the best so far, the experiment tree, a table of\n"
    "the experiments, the insights, notes and decisions, model usage by agent\n"
    "and the configuration. --from FILE renders a run.json written earlier,\n"
    "without a workspace when --out is given. Prints the paths written.",
    report_options,
    0,
    1,
    run_report,
};
