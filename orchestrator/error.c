/*
 * error: records the message of the most recent failure (see error.h).
 * thalamus runs one thread, so a single static slot is enough.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char message[2048];
static int code;

static int record(int c, const char *fmt, va_list ap)
{
    vsnprintf(message, sizeof message, fmt, ap);
    code = c;
    return c;
}

int error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int c = record(TH_ERR, fmt, ap);
    va_end(ap);
    return c;
}

int error_setc(int c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(c, fmt, ap);
    va_end(ap);
    return c;
}

int error_prefix(const char *fmt, ...)
{
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return code;
    if ((size_t)n > sizeof prefix - 3)
        n = sizeof prefix - 3;
    if (!message[0])
        snprintf(message, sizeof message, "unknown error");
    memcpy(prefix + n, ": ", 3);
    size_t plen = (size_t)n + 2, mlen = strlen(message);
    if (plen + mlen >= sizeof message)
        mlen = sizeof message - plen - 1;
    memmove(message + plen, message, mlen);
    memcpy(message, prefix, plen);
    message[plen + mlen] = '\0';
    if (code == TH_OK)
        code = TH_ERR;
    return code;
}

const char *error_message(void)
{
    return message[0] ? message : "unknown error";
}

int error_code(void)
{
    return code;
}

void error_clear(void)
{
    message[0] = '\0';
    code = TH_OK;
}
