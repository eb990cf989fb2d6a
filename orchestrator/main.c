/*
 * main: the thalamus command line.
 *
 * Parses the global options (-C DIR, -v, -q, --log-json, --version, --help),
 * dispatches to one of the commands in the table below, and turns their
 * return codes into exit statuses: 0 success, 1 failure, 2 usage error.
 * Each command declares its options and help text next to its handler, so
 * that `thalamus help COMMAND`, `COMMAND --help` and the usage errors all
 * come from one place. Depends on cli, config, log, text, workspace.
 */
#include "alloc.h"
#include "cli.h"
#include "command.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "text.h"
#include "workspace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct command *find_command(const char *name);
static void print_overview(FILE *out);
static void print_command_help(const struct command *cmd, FILE *out);

/* ---- thalamus init ----------------------------------------------------- */

static const struct cli_option init_options[] = {
    {"template", 't', "NAME", "template to copy (default: " WORKSPACE_DEFAULT_TEMPLATE ")"},
    {"force", 'f', NULL, "add the workspace to a non-empty directory (never overwrites files)"},
    {"list-templates", 0, NULL, "list the bundled templates and exit"},
    {"json", 0, NULL, "with --list-templates: print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int list_templates(bool json)
{
    struct workspace_template *list = NULL;
    size_t n = 0;
    int rc = workspace_templates(&list, &n);
    if (rc < 0)
        return rc;
    if (json) {
        cJSON *a = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", list[i].name);
            cJSON_AddStringToObject(o, "title", list[i].title);
            cJSON_AddItemToArray(a, o);
        }
        char *s = cJSON_Print(a);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(a);
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s%-14s%s %s%s\n", term_bold(stdout), list[i].name, term_reset(stdout),
                   list[i].title,
                   strcmp(list[i].name, WORKSPACE_DEFAULT_TEMPLATE) ? "" : " (default)");
    }
    workspace_templates_free(list, n);
    return 0;
}

static int cmd_init(const struct command *cmd, struct cli_args *args)
{
    const struct cli_option *o = cmd->options;
    if (cli_flag(o, args, "list-templates"))
        return list_templates(cli_flag(o, args, "json"));
    if (args->npositional != 1)
        return error_setc(TH_EUSAGE, "init needs the directory to create, e.g. 'thalamus init "
                                     "myresearch'");
    struct workspace_init_options opts = {
        .dir = args->positional[0],
        .template_name = cli_value(o, args, "template"),
        .force = cli_flag(o, args, "force"),
    };
    struct workspace_init_result r;
    int rc = workspace_init(&opts, &r);
    if (rc < 0)
        return rc;
    FILE *out = stdout;
    printf("%sCreated workspace%s %s from template '%s'\n", term_bold(out), term_reset(out), r.dir,
           opts.template_name ? opts.template_name : WORKSPACE_DEFAULT_TEMPLATE);
    for (char **f = r.files; *f; f++)
        printf("  %s%s%s\n", term_green(out), *f, term_reset(out));
    printf("Committed the baseline as %.12s on branch %s%s\n", r.commit, r.branch,
           r.reused_repo ? " of the existing repository" : "");
    if (r.default_author)
        log_warn("no git identity is configured, so the commit's author is 'thalamus "
                 "<thalamus@localhost>'; set one with 'git config --global user.name NAME' and "
                 "'git config --global user.email EMAIL'");
    printf("\nNext:\n  cd %s\n  thalamus config      # the task, metric and search space\n"
           "  $EDITOR TASK.md      # the research goal, in prose\n",
           args->positional[0]);
    workspace_init_result_free(&r);
    return 0;
}

/* ---- thalamus config --------------------------------------------------- */

static const struct cli_option config_options[] = {
    {"json", 0, NULL, "print JSON"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int cmd_config(const struct command *cmd, struct cli_args *args)
{
    char *ws = NULL;
    int rc = workspace_find(".", &ws);
    if (rc == TH_ENOTFOUND) {
        error_clear();
        rc = 0;
    }
    struct config *cfg = NULL;
    if (rc == 0)
        rc = config_load(&cfg, ws);
    if (rc == 0) {
        if (cli_flag(cmd->options, args, "json")) {
            cJSON *j = config_to_json(cfg);
            char *s = cJSON_Print(j);
            printf("%s\n", s);
            free(s);
            cJSON_Delete(j);
        } else {
            config_print(cfg, stdout);
        }
    }
    config_free(cfg);
    free(ws);
    return rc;
}

/* ---- thalamus help ----------------------------------------------------- */

static const struct cli_option help_options[] = {
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

static int cmd_help(const struct command *cmd, struct cli_args *args)
{
    (void)cmd;
    if (args->npositional == 0) {
        print_overview(stdout);
        return 0;
    }
    const struct command *c = find_command(args->positional[0]);
    if (!c)
        return TH_EUSAGE; /* find_command recorded the message */
    print_command_help(c, stdout);
    return 0;
}

/* ---- the table --------------------------------------------------------- */

const struct command command_init = {
    "init",
    "DIR [--template NAME] [--force] | --list-templates",
    "create a workspace from a template",
    "Creates DIR (which must be empty, or pass --force) with thalamus.lua, TASK.md and the\n"
    "baseline experiment/ of the template, initialises a git repository on branch main (or\n"
    "reuses the one in DIR), ignores .thalamus/, and commits the baseline.",
    init_options,
    0,
    1,
    cmd_init};

const struct command command_config = {
    "config",
    "[--json]",
    "show the effective configuration",
    "Prints every configuration key with its value and where it came from: the default,\n"
    "thalamus.lua, or an environment variable (THALAMUS_PROVIDER, THALAMUS_MODEL,\n"
    "OPENAI_BASE_URL, ANTHROPIC_BASE_URL). API keys are only shown as set or not set.\n"
    "Outside a workspace it shows the defaults and the environment.",
    config_options,
    0,
    0,
    cmd_config};

const struct command command_help = {"help", "[COMMAND]",  "show help for thalamus or one command",
                                     NULL,   help_options, 0,
                                     1,      cmd_help};

/* The commands, in the order `thalamus help` lists them. */
static const struct command *const commands[] = {
    &command_init,    /* workspaces */
    &command_config,  /* configuration */
    &command_ask,     /* models */
    &command_models,  /* models */
    &command_usage,   /* models */
    &command_memory,  /* memory */
    &command_ingest,  /* memory */
    &command_doctor,  /* memory */
    &command_run,     /* research */
    &command_resume,  /* research */
    &command_runs,    /* research */
    &command_status,  /* research */
    &command_log,     /* research */
    &command_show,    /* research */
    &command_report,  /* research */
    &command_think,   /* research */
    &command_chat,    /* research */
    &command_sandbox, /* experiments */
    &command_agent,   /* agents */
    &command_help,
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
    const char *names[NCOMMANDS + 1];
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (!strcmp(commands[i]->name, name))
            return commands[i];
        names[i] = commands[i]->name;
    }
    names[NCOMMANDS] = NULL;
    const char *hint = text_closest(name, names);
    if (hint)
        error_setc(TH_EUSAGE, "unknown command '%s'; did you mean '%s'?", name, hint);
    else
        error_setc(TH_EUSAGE, "unknown command '%s'; run 'thalamus help' for the list", name);
    return NULL;
}

static const char usage_line[] = "usage: thalamus [-C DIR] [-v|-q] [--log-json] COMMAND [ARGS]";

static void print_overview(FILE *out)
{
    fprintf(out, "thalamus %s: a research orchestrator\n\n%s\n\nCommands:\n", THALAMUS_VERSION,
            usage_line);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %s%-10s%s %s\n", term_bold(out), commands[i]->name, term_reset(out),
                commands[i]->summary);
    fprintf(out, "\nGlobal options:\n"
                 "  -C DIR        run as if started in DIR\n"
                 "  -v, -vv       more detail in diagnostics (debug, trace)\n"
                 "  -q            only errors in diagnostics\n"
                 "  --log-json    diagnostics as JSON lines on stderr\n"
                 "  --version     print the version\n"
                 "\nRun 'thalamus help COMMAND' for a command's options.\n");
}

static void print_command_help(const struct command *cmd, FILE *out)
{
    fprintf(out, "usage: thalamus %s %s\n\n%s\n", cmd->name, cmd->args, cmd->summary);
    if (cmd->description)
        fprintf(out, "\n%s\n", cmd->description);
    fprintf(out, "\nOptions:\n");
    cli_print_options(cmd->options, out);
}

static int usage_error(const char *command)
{
    log_error("%s", error_message());
    if (log_json())
        return EXIT_USAGE; /* stderr carries only JSON lines */
    if (command)
        fprintf(stderr, "usage: thalamus %s %s\nrun 'thalamus help %s' for details\n", command,
                find_command(command)->args, command);
    else
        fprintf(stderr, "%s\nrun 'thalamus help' for the list of commands\n", usage_line);
    return EXIT_USAGE;
}

static int run_command(const struct command *cmd, int argc, char **argv)
{
    struct cli_args args;
    if (cli_parse(cmd->options, argc, argv, &args) < 0)
        return usage_error(cmd->name);
    int status = 0;
    if (cli_flag(cmd->options, &args, "help")) {
        print_command_help(cmd, stdout);
    } else if (args.npositional < cmd->min_args || args.npositional > cmd->max_args) {
        error_setc(TH_EUSAGE, "'%s' takes %s", cmd->name,
                   cmd->max_args == 0 ? "no arguments" : "fewer arguments");
        status = usage_error(cmd->name);
    } else {
        int rc = cmd->run(cmd, &args);
        if (rc == TH_EUSAGE) {
            status = usage_error(cmd->name);
        } else if (rc < 0) {
            log_error("%s", error_message());
            status = 1;
        } else {
            status = rc;
        }
    }
    free(args.positional);
    return status;
}

int main(int argc, char **argv)
{
    int verbosity = LOG_LEVEL_INFO;
    bool json = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-C")) {
            if (i + 1 >= argc) {
                error_setc(TH_EUSAGE, "option '-C' needs a directory");
                return usage_error(NULL);
            }
            if (chdir(argv[++i]) < 0) {
                log_error("cannot change to directory '%s': %s", argv[i], strerror(errno));
                return 1;
            }
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            verbosity = LOG_LEVEL_ERROR;
        } else if (a[1] == 'v' && strspn(a + 1, "v") == strlen(a + 1)) {
            verbosity += (int)strlen(a + 1);
        } else if (!strcmp(a, "--verbose")) {
            verbosity++;
        } else if (!strcmp(a, "--log-json")) {
            json = true;
        } else if (!strcmp(a, "--version")) {
            printf("thalamus %s\n", THALAMUS_VERSION);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_overview(stdout);
            return 0;
        } else {
            log_setup(verbosity, json);
            error_setc(TH_EUSAGE, "unknown option '%s'", a);
            return usage_error(NULL);
        }
    }
    log_setup(verbosity, json);
    if (i >= argc) {
        print_overview(stderr);
        return EXIT_USAGE;
    }
    const struct command *cmd = find_command(argv[i]);
    if (!cmd)
        return usage_error(NULL);
    log_debug("thalamus %s: command '%s'", THALAMUS_VERSION, cmd->name);
    return run_command(cmd, argc - i - 1, argv + i + 1);
}
