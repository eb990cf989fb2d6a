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

/* Price of a model, in money per million tokens (llm.prices). */
struct config_price {
    char *model;
    double input, output;
};

/* A spending limit: tokens (0: none) and money (negative: none). */
struct config_limit {
    long tokens;
    double cost;
};

struct config_site_budget {
    char *site;
    struct config_limit limit;
};

/* llm.budget: per run, and per call site within a run. */
struct config_budget {
    struct config_limit run;
    struct config_site_budget *sites;
    size_t sites_len;
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
    long sandbox_timeout;     /* seconds */
    long sandbox_memory_mb;   /* MiB */
    long sandbox_cpu_seconds; /* seconds, all processes together; 0: no limit */
    long sandbox_pids;        /* processes and threads at once */
    long sandbox_disk_mb;     /* MiB, /work and /tmp together */
    bool sandbox_network;     /* share the host's network */
    char *sandbox_isolation;  /* "full" or "none" */
    char **sandbox_binds;     /* read-only binds, NULL-terminated; NULL when none */
    char **sandbox_env;       /* "NAME=VALUE", sorted, NULL-terminated; NULL when none */
    /* loop */
    long loop_rounds;
    long loop_ideas;
    long loop_jobs;
    long loop_drafts;
    long loop_keep;
    long loop_debug_attempts;
    double loop_debug_probability;
    double loop_exploration;
    double loop_novelty_threshold;
    double loop_tolerance;
    long loop_experiments; /* 0: no limit */
    long loop_seconds;     /* 0: no limit */
    char *loop_autonomy;   /* "full", "review-ideas" or "review-code" */
    /* the decisions file of the review gates, or NULL */
    char *loop_review_file;
    /* llm */
    char *llm_provider; /* "offline", "openai" or "anthropic" */
    char *llm_model;    /* "" when unset */
    char *llm_base_url;
    char *llm_api_key_env; /* name of the variable holding the key */
    long llm_max_concurrency;
    double llm_timeout;         /* seconds, per attempt */
    double llm_connect_timeout; /* seconds */
    double llm_idle_timeout;    /* seconds of silence once a reply has started */
    long llm_max_retries;
    double llm_retry_max_seconds;
    long llm_max_response_bytes;
    double llm_temperature; /* NAN when unset: the provider's default */
    long llm_max_tokens;
    long llm_json_repairs;
    char *llm_cache; /* "off", "read-write" or "replay" */
    char *llm_anthropic_version;
    struct config_price *llm_prices; /* sorted by model */
    size_t llm_prices_len;
    struct config_budget llm_budget;
    /* memory (see memory.h) */
    double memory_weight_relevance;
    double memory_weight_recency;
    double memory_weight_importance;
    double memory_weight_activation;
    double memory_recency_decay; /* per hour since the last access */
    long memory_candidates;
    long memory_activation_seeds;
    long memory_activation_hops;
    double memory_activation_decay;
    double memory_hebbian_rate;
    double memory_link_half_life_days;
    double memory_similar_threshold;
    char *memory_embedding_model; /* "" when embeddings are off */
    char *memory_embedding_base_url;
    char *memory_embedding_api_key_env;
    long memory_embedding_scan_max;
    /* literature (see ingest.h) */
    char *literature_openalex_url;
    char *literature_arxiv_url;
    double literature_openalex_delay; /* seconds */
    double literature_arxiv_delay;    /* seconds */
    long literature_max_retries;
    double literature_timeout;    /* seconds */
    double literature_cache_days; /* 0: no cache */
    char *literature_mailto;
    /* agents (see agent.h) */
    long agents_cpu_slice;     /* instructions an agent may run without waiting */
    long agents_memory_mb;     /* MiB of Lua heap for all agents together */
    long agents_apply_retries; /* times a coder is asked again after a failed apply */
    char **agents_extra;       /* "stage:name", by stage then as listed; NULL when none */
    /* think (see cmd_think.c and docs/mcts.md) */
    char *think_policy; /* "uct" or "puct" */
    double think_c;
    long think_iterations;
    double think_seconds; /* 0: no limit */
    long think_width;
    long think_depth;
    long think_jobs;
    long think_recall;

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
