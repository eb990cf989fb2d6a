/*
 * error: the single error convention of thalamus.
 *
 * Every fallible function returns an int: 0 (TH_OK) on success, a negative
 * TH_E* code on failure. The function that detects the failure records a
 * human-readable message with error_set(), which returns the code so that
 * `return error_set("cannot open '%s': %s", path, strerror(errno));` reads
 * naturally. Callers that add context use error_prefix(). Messages follow
 * git's guidelines: lowercase, no full stop, the failing thing quoted, and a
 * hint on how to fix a user's mistake. Depends on nothing.
 */
#ifndef THALAMUS_ERROR_H
#define THALAMUS_ERROR_H

enum {
    TH_OK = 0,
    TH_ERR = -1,       /* generic failure */
    TH_ENOTFOUND = -2, /* a named thing does not exist */
    TH_EUSAGE = -3,    /* the user asked for something malformed */
    TH_EEXISTS = -4,   /* refusing to overwrite something */
    TH_ECONFIG = -5,   /* the configuration is invalid */
};

/* Records a printf-style message and returns TH_ERR. */
int error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Records a message with a specific code and returns that code. */
int error_setc(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "context: " to the recorded message; returns the recorded code. */
int error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The last recorded message ("unknown error" when none); never NULL. */
const char *error_message(void);

/* The code recorded with the last message, TH_OK when none. */
int error_code(void);

void error_clear(void);

#endif
