/*
 * config: the effective configuration of a workspace.
 *
 * Three layers, later ones winning: built-in defaults, the workspace's
 * thalamus.lua, and environment overrides (THALAMUS_PROVIDER,
 * THALAMUS_MODEL, OPENAI_BASE_URL, ANTHROPIC_BASE_URL). thalamus.lua is
 * evaluated in a restricted Lua state (no io, os, require or file loading;
 * capped memory and instruction count) and must return a table. Every key is
 * described once in a table in config.c; validation, defaults, `thalamus
 * config` output and docs/config.md follow that table. Unknown keys and wrong
 * types are errors that name the key and what was expected. Each value
 * remembers where it came from. API keys are read from the environment only
 * and are never stored in the struct. Depends on alloc, buf, error, Lua,
 * cJSON.
 */
#ifndef THALAMUS_CONFIG_H
#define THALAMUS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>

enum config_source {
    CONFIG_DEFAULT = 0,
    CONFIG_FILE,
    CONFIG_ENV,
};

enum search_kind {
    SEARCH_RANGE,  /* min..max, real or integer, linear or log scale */
    SEARCH_CHOICE, /* one of a list of values */
};

struct search_param {
    char *name;
    enum search_kind kind;
    double min, max; /* SEARCH_RANGE */
    bool integer;    /* SEARCH_RANGE */
    bool log_scale;  /* SEARCH_RANGE */
    cJSON *choices;  /* SEARCH_CHOICE: a JSON array of strings, numbers or booleans */
};

struct config {
    /* task */
    char *task_name;
    char **task_command; /* argv, NULL-terminated; NULL when unset */
    char *task_metric;
    char *task_goal; /* "maximize" or "minimize" */
    char *task_params_file;
    struct search_param *search_space;
    size_t search_space_len;
    /* sandbox */
    long sandbox_timeout;   /* seconds */
    long sandbox_memory_mb; /* MiB */
    /* loop */
    long loop_rounds;
    long loop_ideas;
    long loop_jobs;
    /* llm */
    char *llm_provider; /* "offline", "openai" or "anthropic" */
    char *llm_model;    /* "" when unset */
    char *llm_base_url;
    char *llm_api_key_env; /* name of the variable holding the key */
    long llm_max_concurrency;

    char *file;                  /* path of thalamus.lua, NULL when none was read */
    char *workspace;             /* workspace directory, NULL outside one */
    enum config_source *sources; /* per key, in the order of config_keys */
    char **source_notes;         /* per key, e.g. the variable's name, or NULL */
};

/* Loads the configuration for workspace (a directory; NULL for none, which
 * gives defaults and environment only). A missing thalamus.lua in a
 * workspace is an error. Messages start with the file name, e.g.
 * "thalamus.lua: loop.jobs must be a positive integer, got "two"". The
 * caller frees *out with config_free(). */
int config_load(struct config **out, const char *workspace);

/* Like config_load, from an explicit file path (for tests and init). */
int config_load_file(struct config **out, const char *path, const char *workspace);

void config_free(struct config *cfg);

/* Prints the effective configuration with the source of each value. Secrets
 * are shown only as set / not set. */
void config_print(const struct config *cfg, FILE *out);

/* The effective configuration as JSON: {"file", "workspace", "values",
 * "sources"}; the caller deletes it. */
cJSON *config_to_json(const struct config *cfg);

/* Writes docs-ready Markdown describing every key (used to check that
 * docs/config.md is complete). */
void config_describe_markdown(FILE *out);

#endif
