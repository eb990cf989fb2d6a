/*
 * cli: option parsing with "did you mean" suggestions (see cli.h).
 */
#include "cli.h"

#include "alloc.h"
#include "error.h"
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cli_index(const struct cli_option *options, const char *name)
{
    for (int i = 0; options[i].name; i++)
        if (!strcmp(options[i].name, name))
            return i;
    fprintf(stderr, "thalamus: fatal: option '--%s' is not declared\n", name);
    abort();
}

const char *cli_value(const struct cli_option *options, const struct cli_args *args,
                      const char *name)
{
    return args->values[cli_index(options, name)];
}

bool cli_flag(const struct cli_option *options, const struct cli_args *args, const char *name)
{
    return cli_value(options, args, name) != NULL;
}

static int unknown_long(const struct cli_option *options, const char *name, size_t len)
{
    char *given = xstrndup(name, len);
    const char *names[CLI_MAX_OPTIONS + 1];
    int n = 0;
    for (int i = 0; options[i].name && n < CLI_MAX_OPTIONS; i++)
        names[n++] = options[i].name;
    names[n] = NULL;
    const char *hint = text_closest(given, names);
    int rc = hint
                 ? error_setc(TH_EUSAGE, "unknown option '--%s'; did you mean '--%s'?", given, hint)
                 : error_setc(TH_EUSAGE, "unknown option '--%s'", given);
    free(given);
    return rc;
}

int cli_parse(const struct cli_option *options, int argc, char **argv, struct cli_args *out)
{
    memset(out, 0, sizeof *out);
    out->positional = xcalloc((size_t)argc + 1, sizeof *out->positional);
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            out->positional[out->npositional++] = arg;
            continue;
        }
        if (!strcmp(arg, "--")) {
            only_positional = true;
            continue;
        }
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            int idx = -1;
            for (int j = 0; options[j].name; j++)
                if (strlen(options[j].name) == len && !strncmp(options[j].name, name, len))
                    idx = j;
            if (idx < 0)
                goto unknown;
            const struct cli_option *o = &options[idx];
            if (!o->value_name) {
                if (eq) {
                    free(out->positional);
                    return error_setc(TH_EUSAGE, "option '--%s' takes no value", o->name);
                }
                out->values[idx] = "";
            } else if (eq) {
                out->values[idx] = eq + 1;
            } else if (i + 1 < argc) {
                out->values[idx] = argv[++i];
            } else {
                free(out->positional);
                return error_setc(TH_EUSAGE, "option '--%s' needs a value (%s)", o->name,
                                  o->value_name);
            }
            continue;
        unknown:
            free(out->positional);
            return unknown_long(options, name, len);
        }
        /* one or more short options: -vq, -n 3, -n3 */
        for (char *c = arg + 1; *c; c++) {
            int idx = -1;
            for (int j = 0; options[j].name; j++)
                if (options[j].short_name == *c)
                    idx = j;
            if (idx < 0) {
                free(out->positional);
                return error_setc(TH_EUSAGE, "unknown option '-%c'", *c);
            }
            if (!options[idx].value_name) {
                out->values[idx] = "";
                continue;
            }
            if (c[1]) {
                out->values[idx] = c + 1;
            } else if (i + 1 < argc) {
                out->values[idx] = argv[++i];
            } else {
                free(out->positional);
                return error_setc(TH_EUSAGE, "option '-%c' needs a value (%s)", *c,
                                  options[idx].value_name);
            }
            break;
        }
    }
    return 0;
}

int cli_positive_int(const char *option, const char *value, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v <= 0)
        return error_setc(TH_EUSAGE, "option '--%s' needs a positive integer, got '%s'", option,
                          value);
    *out = v;
    return 0;
}

void cli_print_options(const struct cli_option *options, FILE *out)
{
    for (int i = 0; options[i].name; i++) {
        const struct cli_option *o = &options[i];
        char left[64];
        int n = 0;
        if (o->short_name)
            n = snprintf(left, sizeof left, "-%c, ", o->short_name);
        snprintf(left + n, sizeof left - (size_t)n, "--%s%s%s", o->name, o->value_name ? " " : "",
                 o->value_name ? o->value_name : "");
        fprintf(out, "  %-26s %s\n", left, o->help);
    }
}
