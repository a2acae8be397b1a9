/* status.c: filling pmoe_error messages (see include/pmoe/status.h). */
#include "pmoe/status.h"

#include <stdarg.h>
#include <stdio.h>

pmoe_status pmoe_fail(pmoe_error *err, pmoe_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *pmoe_status_name(pmoe_status code) {
    switch (code) {
    case PMOE_OK: return "ok";
    case PMOE_ERR_IO: return "io";
    case PMOE_ERR_FORMAT: return "format";
    case PMOE_ERR_CONFIG: return "config";
    case PMOE_ERR_OOM: return "out of memory";
    case PMOE_ERR_NONFINITE: return "non-finite";
    case PMOE_ERR_UNSUPPORTED: return "unsupported";
    case PMOE_ERR_INTERNAL: return "internal";
    case PMOE_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown";
}
