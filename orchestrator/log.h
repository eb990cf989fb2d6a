/*
 * log: levelled diagnostics on stderr.
 *
 * Standard output belongs to a command's results; everything the program says
 * about what it is doing goes through here to stderr. Levels are raised with
 * -v and lowered with -q. On a terminal, levels are coloured (unless NO_COLOR
 * is set); --log-json turns every line into a JSON object with the fields
 * time, level and msg, for machines. Also home to the small terminal helpers
 * (colour on/off) that command output shares. Depends on nothing but libc.
 */
#ifndef THALAMUS_LOG_H
#define THALAMUS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN = 1,
    LOG_LEVEL_INFO = 2, /* the default */
    LOG_LEVEL_DEBUG = 3,
    LOG_LEVEL_TRACE = 4,
};

/* Sets the threshold and format. level is clamped to the valid range. */
void log_setup(int level, bool json);

int log_level(void);
bool log_json(void);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap);

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_trace(...) log_write(LOG_LEVEL_TRACE, __VA_ARGS__)

/* True when stream is a terminal and NO_COLOR is not set. */
bool term_color(FILE *stream);

/* ANSI sequences, or "" when colour is off for the stream. */
const char *term_bold(FILE *stream);
const char *term_dim(FILE *stream);
const char *term_green(FILE *stream);
const char *term_yellow(FILE *stream);
const char *term_red(FILE *stream);
const char *term_reset(FILE *stream);

#endif
