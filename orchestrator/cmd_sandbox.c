/*
 * cmd_sandbox: `thalamus sandbox run` and `thalamus sandbox check`.
 *
 * `run` runs a command in the sandbox (sandbox.h) with the limits of the
 * workspace's configuration (the defaults outside a workspace) overridden
 * by the options, streams the program's output as it comes (or prints the
 * whole result record with --json), ends with a one-line summary on
 * stderr, and exits with the program's exit status (124 after a timeout,
 * 128 + N after signal N, 127 or 126 when the command could not be run).
 * `check` prints which isolation features this host offers. Depends on
 * alloc, cli, command, config, error, fsutil, log, workspace and sandbox.
 */
#include "alloc.h"
#include "cli.h"
#include "command.h"
#include "config.h"
#include "error.h"
#include "fsutil.h"
#include "log.h"
#include "sandbox.h"
#include "workspace.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_TIMEOUT 124

static const struct cli_option sandbox_options[] = {
    {"timeout", 't', "S", "wall-clock limit in seconds (default: sandbox.timeout)"},
    {"memory", 'm', "MB", "memory limit in MiB (default: sandbox.memory_mb)"},
    {"pids", 0, "N", "processes and threads at once (default: sandbox.pids)"},
    {"cpu", 0, "S", "CPU-time limit in seconds (default: sandbox.cpu_seconds)"},
    {"disk", 0, "MB", "size of /work and /tmp together in MiB (default: sandbox.disk_mb)"},
    {"net", 0, NULL, "share the host's network (default: sandbox.network)"},
    {"dir", 'd', "DIR",
     "directory to run in as /work, updated afterwards (default: an empty "
     "scratch directory, discarded)"},
    {"require-results", 0, NULL, "a run that writes no results.json is invalid"},
    {"json", 0, NULL, "print the result record (or the check) as JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

/* Passes the program's output through as it comes; a stream whose reader
 * went away (`| head`) is no longer written, while the run goes on. */
static void stream_output(enum sandbox_stream stream, const char *data, size_t len, void *ud)
{
    bool *closed = ud;
    int i = stream == SANDBOX_STDOUT ? 0 : 1;
    if (!closed[i] &&
        fs_write_all(stream == SANDBOX_STDOUT ? STDOUT_FILENO : STDERR_FILENO, data, len) < 0)
        closed[i] = true;
}

/* The configuration of the enclosing workspace, or the defaults. */
static int load_config(struct config **out)
{
    char *ws = NULL;
    int rc = workspace_find(".", &ws);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        rc = 0;
    }
    if (rc == 0)
        rc = config_load(out, ws);
    free(ws);
    return rc;
}

static int option_long(const struct cli_option *o, const struct cli_args *args, const char *name,
                       long *value)
{
    const char *v = cli_value(o, args, name);
    return v ? cli_positive_int(name, v, value) : 0;
}

/* Binds from the configuration, with relative host paths made relative to
 * the workspace. The caller frees the list. */
static char **resolve_binds(const struct config *cfg)
{
    size_t n = 0;
    for (char **b = cfg->sandbox_binds; b && *b; b++)
        n++;
    char **out = xcalloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        const char *b = cfg->sandbox_binds[i];
        out[i] = b[0] == '/' || !cfg->workspace ? xstrdup(b) : fs_join(cfg->workspace, b);
    }
    return out;
}

static void free_list(char **list)
{
    for (char **p = list; p && *p; p++)
        free(*p);
    free(list);
}

static const char *status_colour(enum sandbox_status s, FILE *f)
{
    return s == SANDBOX_OK ? term_green(f) : s == SANDBOX_INVALID ? term_yellow(f) : term_red(f);
}

static void print_summary(const struct sandbox_result *r)
{
    FILE *f = stderr;
    char memory[32];
    double mib = (double)r->peak_memory_bytes / (1024.0 * 1024.0);
    snprintf(memory, sizeof memory, "%.1f MiB", mib);
    fprintf(f, "%ssandbox:%s %s%s%s%s%s%s, wall %.2f s, cpu %.2f s, peak memory %s%s\n",
            term_dim(f), term_reset(f), term_bold(f), status_colour(r->status, f),
            sandbox_status_name(r->status), term_reset(f), r->reason ? ": " : "",
            r->reason ? r->reason : "", r->wall_ms / 1000, r->cpu_ms / 1000, memory,
            r->isolation == SANDBOX_ISOLATION_NONE ? " (isolation none)" : "");
    if (r->results_error && strcmp(r->results_error, "missing") && r->status != SANDBOX_INVALID)
        fprintf(f, "%ssandbox:%s results.json: %s\n", term_dim(f), term_reset(f), r->results_error);
    if (r->work_error)
        fprintf(f, "%ssandbox:%s %s\n", term_dim(f), term_reset(f), r->work_error);
}

static int exit_status(const struct sandbox_result *r)
{
    if (r->status == SANDBOX_TIMEOUT)
        return EXIT_TIMEOUT;
    if (r->signal)
        return 128 + r->signal;
    if (r->exit_code >= 0)
        return r->exit_code;
    return 1;
}

static void print_json(cJSON *j)
{
    char *s = cJSON_Print(j);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
}

static int run_sandbox(const struct cli_option *o, struct cli_args *args)
{
    if (args->npositional < 2)
        return error_setc(TH_EUSAGE, "'sandbox run' needs a command, e.g. 'thalamus sandbox run "
                                     "-- python3 train.py'");
    struct config *cfg = NULL;
    int rc = load_config(&cfg);
    if (rc < 0)
        return rc;
    struct sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    sandbox_limits_default(&spec.limits);
    long timeout = cfg->sandbox_timeout;
    long memory = cfg->sandbox_memory_mb, pids = cfg->sandbox_pids;
    long cpu = cfg->sandbox_cpu_seconds, disk = cfg->sandbox_disk_mb;
    char **binds = NULL;
    struct sandbox_result *r = NULL;
    if ((rc = option_long(o, args, "timeout", &timeout)) < 0 ||
        (rc = option_long(o, args, "memory", &memory)) < 0 ||
        (rc = option_long(o, args, "pids", &pids)) < 0 ||
        (rc = option_long(o, args, "cpu", &cpu)) < 0 ||
        (rc = option_long(o, args, "disk", &disk)) < 0)
        goto cleanup;
    if (timeout > INT_MAX / 1000) {
        rc = error_setc(TH_EUSAGE, "option '--timeout' is too large");
        goto cleanup;
    }
    bool json = cli_flag(o, args, "json");
    spec.argv = args->positional + 1;
    spec.work_dir = cli_value(o, args, "dir");
    spec.isolation =
        !strcmp(cfg->sandbox_isolation, "none") ? SANDBOX_ISOLATION_NONE : SANDBOX_ISOLATION_FULL;
    spec.network = cfg->sandbox_network || cli_flag(o, args, "net");
    binds = resolve_binds(cfg);
    spec.binds = binds;
    spec.env = cfg->sandbox_env;
    spec.limits.timeout_ms = (uint64_t)timeout * 1000;
    spec.limits.memory_mb = memory;
    spec.limits.pids = pids;
    spec.limits.cpu_seconds = cpu;
    spec.limits.disk_mb = disk;
    spec.results_required = cli_flag(o, args, "require-results");
    bool closed[2] = {false, false};
    if (!json) {
        spec.on_output = stream_output;
        spec.output_ud = closed;
        signal(SIGPIPE, SIG_IGN); /* a closed stdout is an error from write(), not death */
    }
    if ((rc = sandbox_run(&spec, &r)) < 0)
        goto cleanup;
    if (json) {
        cJSON *j = sandbox_result_to_json(r);
        print_json(j);
        cJSON_Delete(j);
    }
    print_summary(r);
    rc = exit_status(r);
cleanup:
    sandbox_result_free(r);
    free_list(binds);
    config_free(cfg);
    return rc;
}

static int check_sandbox(const struct cli_option *o, struct cli_args *args)
{
    if (args->npositional > 1)
        return error_setc(TH_EUSAGE, "'sandbox check' takes no arguments");
    struct config *cfg = NULL;
    int rc = load_config(&cfg);
    if (rc < 0)
        return rc;
    bool none = !strcmp(cfg->sandbox_isolation, "none");
    struct sandbox_report *rep = sandbox_check();
    if (cli_flag(o, args, "json")) {
        cJSON *j = sandbox_report_to_json(rep);
        cJSON_AddStringToObject(j, "isolation", cfg->sandbox_isolation);
        print_json(j);
        cJSON_Delete(j);
    } else {
        FILE *f = stdout;
        if (rep->can_isolate)
            fprintf(f, "%sSandbox isolation is available on this host.%s\n", term_bold(f),
                    term_reset(f));
        else
            fprintf(f, "%s%sSandbox isolation is NOT available on this host.%s\n%s\n", term_bold(f),
                    term_red(f), term_reset(f), rep->problem);
        fprintf(f, "\n");
        for (size_t i = 0; i < rep->nfeatures; i++) {
            const struct sandbox_feature *x = &rep->features[i];
            fprintf(f, "  %-26s %s%-3s%s  %s\n", x->name,
                    x->active ? term_green(f) : term_yellow(f), x->active ? "yes" : "no",
                    term_reset(f), x->detail);
        }
        if (rep->run_ms >= 0)
            fprintf(f, "\n  test run: /bin/true in a sandbox took %.1f ms\n", rep->run_ms);
        else if (rep->run_error)
            fprintf(f, "\n  test run failed: %s\n", rep->run_error);
        fprintf(f, "  configured isolation: %s%s\n", cfg->sandbox_isolation,
                none ? " (experiments run WITHOUT isolation)" : "");
    }
    if (none)
        log_warn("sandbox.isolation is \"none\": experiments run with your full access to this "
                 "host");
    rc = rep->can_isolate && rep->run_ms >= 0 ? 0 : 1;
    sandbox_report_free(rep);
    config_free(cfg);
    return rc;
}

static int cmd_sandbox(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    const char *sub = args->positional[0];
    if (!strcmp(sub, "run"))
        return run_sandbox(o, args);
    if (!strcmp(sub, "check"))
        return check_sandbox(o, args);
    return error_setc(TH_EUSAGE, "unknown sandbox subcommand '%s'; use 'run' or 'check'", sub);
}

const struct command command_sandbox = {
    "sandbox",
    "run [--timeout S] [--memory MB] [--pids N] [--cpu S] [--disk MB] [--net] [--dir DIR] "
    "[--json] -- CMD [ARGS...] | check [--json]",
    "run a command in the sandbox, or check the host's isolation",
    "'run' runs CMD isolated the way experiments run: new user, pid, mount, network, ipc and\n"
    "uts namespaces, a read-only view of the system, DIR (or an empty scratch directory) as\n"
    "/work on a size-capped file system, a private /tmp, no network unless --net, a seccomp\n"
    "filter, a clean environment and the limits of the workspace's configuration (sandbox.*)\n"
    "or of the options. The output is streamed as it comes; a summary line (status, wall\n"
    "time, CPU time, peak memory) ends it on stderr, and --json prints the whole result\n"
    "record instead. After the run DIR mirrors /work. The exit status is the program's:\n"
    "124 after a timeout, 128+N after signal N, 127 or 126 when CMD cannot be run.\n"
    "Put '--' before CMD so that its options are not taken for thalamus's.\n"
    "\n"
    "'check' lists which isolation features this host offers, and the fallbacks in use.\n"
    "See docs/sandbox.md.",
    sandbox_options,
    1,
    INT_MAX,
    cmd_sandbox};
