/*
 * command: how a thalamus command is declared.
 *
 * Each command is a struct command: its name, synopsis, help text, options
 * (see cli.h) and a handler. main.c holds the table of commands in the order
 * `thalamus help` lists them; a command defined in its own file declares its
 * struct command here. Depends on cli.
 */
#ifndef THALAMUS_COMMAND_H
#define THALAMUS_COMMAND_H

#include "cli.h"

#define EXIT_USAGE 2
/* A command stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report). */
#define EXIT_INTERRUPTED 130

struct command {
    const char *name;
    const char *args;                 /* synopsis after the name */
    const char *summary;              /* one line, for `thalamus help` */
    const char *description;          /* paragraphs for `thalamus help NAME`, or NULL */
    const struct cli_option *options; /* must include "help" */
    int min_args, max_args;           /* positional arguments accepted */
    /* Returns 0 on success, a negative TH_E* code with a recorded message on
     * failure (TH_EUSAGE prints the usage and exits 2, others exit 1), or a
     * positive number to use as the exit status as it is. */
    int (*run)(const struct command *cmd, struct cli_args *args);
};

extern const struct command command_init;
extern const struct command command_config;
extern const struct command command_help;
extern const struct command command_ask;    /* cmd_llm.c */
extern const struct command command_models; /* cmd_llm.c */
extern const struct command command_usage;  /* cmd_llm.c */

extern const struct command command_sandbox; /* cmd_sandbox.c */

extern const struct command command_agent; /* cmd_agent.c */

extern const struct command command_think; /* cmd_think.c */

extern const struct command command_memory; /* cmd_memory.c */
extern const struct command command_doctor; /* cmd_memory.c */
extern const struct command command_ingest; /* cmd_ingest.c */

extern const struct command command_report; /* cmd_report.c */

extern const struct command command_run;    /* cmd_run.c */
extern const struct command command_resume; /* cmd_run.c */
extern const struct command command_runs;   /* cmd_run.c */
extern const struct command command_status; /* cmd_run.c */
extern const struct command command_log;    /* cmd_run.c */
extern const struct command command_show;   /* cmd_run.c */

extern const struct command command_chat; /* chat.c */

#endif
