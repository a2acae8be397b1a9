/* status.h: how every fallible pmoe call reports failure.
 *
 * Library code never exits: a function that can fail returns a pmoe_status
 * and, when it fails, fills a pmoe_error with one line naming the cause
 * (the file, key, step or size involved). Only main() decides to exit. */
#ifndef PMOE_STATUS_H
#define PMOE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum pmoe_status {
    PMOE_OK = 0,
    PMOE_ERR_IO,          /* a file could not be opened, read or written */
    PMOE_ERR_FORMAT,      /* a file's contents are malformed or truncated */
    PMOE_ERR_CONFIG,      /* an unknown key or a value out of range */
    PMOE_ERR_OOM,         /* an allocation failed */
    PMOE_ERR_NONFINITE,   /* a loss or gradient became NaN or infinite */
    PMOE_ERR_UNSUPPORTED, /* a valid request this build cannot serve */
    PMOE_ERR_INTERNAL,    /* a broken invariant: a bug in pmoe */
    PMOE_ERR_INTERRUPTED  /* stopped on request (a signal) after saving a checkpoint */
} pmoe_status;

typedef struct pmoe_error {
    pmoe_status code;
    char message[512];
} pmoe_error;

/* Records a failure in err (which may be NULL) and returns code, so a caller
 * writes `return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open", path);`. */
pmoe_status pmoe_fail(pmoe_error *err, pmoe_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A short name for a status code ("io", "format", ...). */
const char *pmoe_status_name(pmoe_status code);

#ifdef __cplusplus
}
#endif
#endif
