/*
 * log: levelled, optionally coloured or JSON diagnostics on stderr (see log.h).
 */
#include "log.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int threshold = LOG_LEVEL_INFO;
static bool as_json;

static const char *const level_names[] = {"error", "warning", "info", "debug", "trace"};

void log_setup(int level, bool json)
{
    if (level < LOG_LEVEL_ERROR)
        level = LOG_LEVEL_ERROR;
    if (level > LOG_LEVEL_TRACE)
        level = LOG_LEVEL_TRACE;
    threshold = level;
    as_json = json;
}

int log_level(void)
{
    return threshold;
}

bool log_json(void)
{
    return as_json;
}

bool term_color(FILE *stream)
{
    const char *no = getenv("NO_COLOR");
    if (no && *no)
        return false;
    return isatty(fileno(stream)) == 1;
}

#define SEQ(name, code)                                                                            \
    const char *term_##name(FILE *stream)                                                          \
    {                                                                                              \
        return term_color(stream) ? code : "";                                                     \
    }
SEQ(bold, "\033[1m")
SEQ(dim, "\033[2m")
SEQ(green, "\033[32m")
SEQ(yellow, "\033[33m")
SEQ(red, "\033[31m")
SEQ(reset, "\033[0m")
#undef SEQ

static void write_json(enum log_level level, const char *msg)
{
    char stamp[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "time", stamp);
    cJSON_AddStringToObject(o, "level", level_names[level]);
    cJSON_AddStringToObject(o, "msg", msg);
    char *line = cJSON_PrintUnformatted(o);
    if (line)
        fprintf(stderr, "%s\n", line);
    free(line);
    cJSON_Delete(o);
}

static void write_text(enum log_level level, const char *msg)
{
    const char *colour = "";
    switch (level) {
    case LOG_LEVEL_ERROR:
        colour = term_red(stderr);
        break;
    case LOG_LEVEL_WARN:
        colour = term_yellow(stderr);
        break;
    case LOG_LEVEL_INFO:
        fprintf(stderr, "%s\n", msg);
        return;
    default:
        colour = term_dim(stderr);
        break;
    }
    fprintf(stderr, "%s%s:%s %s\n", colour, level_names[level], term_reset(stderr), msg);
}

void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    if ((int)level > threshold)
        return;
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (as_json)
        write_json(level, msg);
    else
        write_text(level, msg);
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}
