/*
 * cli: command-line option parsing for thalamus's commands.
 *
 * Each command declares its options in a NULL-terminated array of struct
 * cli_option; cli_parse() accepts `--name value`, `--name=value`, `-x value`,
 * grouped short flags, and `--` to end options, and collects positional
 * arguments. A wrong option is a usage error (TH_EUSAGE) whose message
 * suggests the closest option. Also prints the option list for --help.
 * Depends on alloc, error, text.
 */
#ifndef THALAMUS_CLI_H
#define THALAMUS_CLI_H

#include <stdbool.h>
#include <stdio.h>

#define CLI_MAX_OPTIONS 32

struct cli_option {
    const char *name;       /* long name without dashes, e.g. "force" */
    char short_name;        /* e.g. 'f', or 0 */
    const char *value_name; /* e.g. "NAME" when the option takes a value, else NULL */
    const char *help;
};

struct cli_args {
    const char *values[CLI_MAX_OPTIONS]; /* value of option i; "" for a given flag; NULL: absent */
    char **positional;                   /* points into argv */
    int npositional;
};

/* Parses argv[0..argc) (not including the command name). Positional
 * arguments after options are allowed, and everything after "--" is
 * positional. The caller frees out->positional with free(). */
int cli_parse(const struct cli_option *options, int argc, char **argv, struct cli_args *out);

/* Index of the option named name in options (which must contain it). */
int cli_index(const struct cli_option *options, const char *name);

/* The value of option name, or NULL when it was not given. */
const char *cli_value(const struct cli_option *options, const struct cli_args *args,
                      const char *name);
bool cli_flag(const struct cli_option *options, const struct cli_args *args, const char *name);

/* Parses a positive integer option value; a usage error names the option. */
int cli_positive_int(const char *option, const char *value, long *out);

/* Prints the aligned option list. */
void cli_print_options(const struct cli_option *options, FILE *out);

#endif
