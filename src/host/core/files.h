/* files.h: opening, writing and creating files so that every failure is a
 * one-line error and no earlier good file is harmed.
 *
 * Every file pmoe writes whole (checkpoints, pictures, bench results) goes
 * through pmoe_atomic_file: it is written under a temporary name beside its
 * target, checked on every write, flush, fsync and close, and only then
 * renamed over the target; the target is never a FIFO, device, directory or
 * link (those are refused and left untouched). Files read whole are opened
 * without blocking and refused unless regular, so a FIFO never hangs a run.
 * A stream written line by line (the JSON log) appends each record whole or
 * not at all. */
#ifndef PMOE_CORE_FILES_H
#define PMOE_CORE_FILES_H

#include <stddef.h>
#include <stdio.h>

#include "pmoe/status.h"

typedef struct pmoe_atomic_file {
    FILE *stream;    /* write here; NULL once committed or abandoned */
    char path[4096]; /* the target */
    char temp[4096 + 32];
} pmoe_atomic_file;

/* Opens a temporary file beside path ("PATH.tmp.PID"). Fails, touching
 * nothing, when path exists and is not a regular file. */
pmoe_status pmoe_atomic_open(pmoe_atomic_file *f, const char *path, pmoe_error *err);

/* Checks, flushes, syncs and closes the stream, then renames it over the
 * target and syncs the folder. On any failure the temporary file is removed,
 * the target is left as it was, and the message reads "PATH: <step> failed:
 * <cause>; nothing was replaced". Always closes the stream. */
pmoe_status pmoe_atomic_commit(pmoe_atomic_file *f, pmoe_error *err);

/* What pmoe_atomic_open checks first, for a writer to ask before the work
 * that makes the file (a bench sweep's minutes): PMOE_OK when path is
 * absent or a regular file, else "PATH: is a FIFO, not a regular file; not
 * replaced" (a device, folder, link, socket likewise). */
pmoe_status pmoe_check_replaceable(const char *path, pmoe_error *err);

/* Closes and removes the temporary file (after a failure of one's own). */
void pmoe_atomic_abandon(pmoe_atomic_file *f);

/* Opens path for reading, refusing anything but a regular file before it
 * can block (a FIFO, a device). Fills *size when not NULL. Messages:
 * "PATH: cannot open ROLE: CAUSE", the cause "it is a FIFO, not a regular
 * file" for a special file; role may be NULL ("PATH: cannot open: ..."). */
FILE *pmoe_open_regular(const char *path, const char *role, size_t *size, pmoe_error *err);

/* Opens path (a file, created if missing; a device; a FIFO being read) to
 * write at its end, emptied first when truncate; a FIFO that no process
 * reads is refused rather than waited on. role names it ("log"). */
FILE *pmoe_open_append(const char *path, int truncate, const char *role, pmoe_error *err);

/* Flushes stream and reports an earlier or present write failure as
 * "NAME: writing failed: CAUSE". */
pmoe_status pmoe_stream_check(FILE *stream, const char *name, pmoe_error *err);

/* Appends bytes to stream as one record: flushed at once, and on failure
 * the file is cut back to where the record began (when it can be), so it
 * never ends in half a record. */
pmoe_status pmoe_stream_append(FILE *stream, const char *name, const char *bytes, size_t len,
                               pmoe_error *err);

/* Creates folder dir (one level) if missing and checks it is a folder we
 * may write in; role names it in the message ("checkpoint folder",
 * "--out folder"). */
pmoe_status pmoe_make_dir(const char *dir, const char *role, pmoe_error *err);

#endif
