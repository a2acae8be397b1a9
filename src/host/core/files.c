/* files.c: see files.h.
 *
 * The target of an atomic write is looked at twice, when the temporary file
 * is opened (so a refused target costs no work) and again just before the
 * rename (it may have changed meanwhile); rename(2) itself would happily
 * replace a FIFO or a device node with the new file. */
#include "core/files.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_of(mode_t mode) {
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

/* PMOE_OK when path is absent or a regular file (not a link to one). */
pmoe_status pmoe_check_replaceable(const char *path, pmoe_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode)) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_IO, "%s: is %s, not a regular file; not replaced", path,
                     kind_of(st.st_mode));
}

pmoe_status pmoe_atomic_open(pmoe_atomic_file *f, const char *path, pmoe_error *err) {
    memset(f, 0, sizeof *f);
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path)
        return pmoe_fail(err, PMOE_ERR_IO, "%s: path too long", path);
    snprintf(f->temp, sizeof f->temp, "%s.tmp.%ld", path, (long)getpid());
    pmoe_status s = pmoe_check_replaceable(path, err);
    if (s) return s;
    struct stat st; /* a temporary of this process's name: left by a killed run with our pid */
    if (lstat(f->temp, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return pmoe_fail(err, PMOE_ERR_IO, "%s: %s is in the way (%s); nothing was replaced",
                             path, f->temp, kind_of(st.st_mode));
        unlink(f->temp);
    }
    const int fd = open(f->temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot create %s: %s; nothing was replaced", path,
                         f->temp, strerror(errno));
    f->stream = fdopen(fd, "wb");
    if (!f->stream) {
        const int code = errno;
        close(fd);
        unlink(f->temp);
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open %s: %s; nothing was replaced", path,
                         f->temp, strerror(code));
    }
    errno = 0; /* so a write failure's cause is what commit finds */
    return PMOE_OK;
}

void pmoe_atomic_abandon(pmoe_atomic_file *f) {
    if (!f->stream) return;
    fclose(f->stream);
    f->stream = NULL;
    unlink(f->temp);
}

static pmoe_status commit_failed(pmoe_atomic_file *f, const char *step, int code, pmoe_error *err) {
    unlink(f->temp);
    return pmoe_fail(err, PMOE_ERR_IO, "%s: %s failed: %s; nothing was replaced", f->path, step,
                     code ? strerror(code) : "an earlier write failed");
}

pmoe_status pmoe_atomic_commit(pmoe_atomic_file *f, pmoe_error *err) {
    FILE *stream = f->stream;
    f->stream = NULL;
    if (!stream) return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: not open for writing", f->path);
    const int earlier = errno; /* the cause of a failed write just before, if any */
    const int flushed = fflush(stream) == 0;
    const int code = flushed ? earlier : errno;
    if (!flushed || ferror(stream)) {
        fclose(stream);
        return commit_failed(f, "writing", code, err);
    }
    if (fsync(fileno(stream)) != 0) {
        const int e = errno;
        fclose(stream);
        return commit_failed(f, "fsync", e, err);
    }
    if (fclose(stream) != 0) return commit_failed(f, "closing", errno, err);
    pmoe_status s = pmoe_check_replaceable(f->path, err);
    if (s) {
        unlink(f->temp);
        return s;
    }
    if (rename(f->temp, f->path) != 0) return commit_failed(f, "rename", errno, err);
    /* Make the rename itself durable. */
    char dir[sizeof f->path];
    snprintf(dir, sizeof dir, "%s", f->path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
    else snprintf(dir, sizeof dir, ".");
    const int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return PMOE_OK;
}

FILE *pmoe_open_regular(const char *path, const char *role, size_t *size, pmoe_error *err) {
    const char *gap = role ? " " : "";
    role = role ? role : "";
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open%s%s: %s", path, gap, role, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open%s%s: it is %s, not a regular file", path, gap,
                  role, kind_of(st.st_mode));
        return NULL;
    }
    const int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open%s%s: %s", path, gap, role, strerror(errno));
        close(fd);
        return NULL;
    }
    if (size) *size = (size_t)st.st_size;
    return f;
}

FILE *pmoe_open_append(const char *path, int truncate, const char *role, pmoe_error *err) {
    /* O_NONBLOCK: a FIFO nobody reads would otherwise hold the run at the start */
    const int fd = open(
        path, O_WRONLY | O_CREAT | O_NONBLOCK | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND), 0666);
    if (fd < 0) {
        pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open the %s for writing: %s", path, role,
                  errno == ENXIO ? "it is a FIFO that no process reads" : strerror(errno));
        return NULL;
    }
    const int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    FILE *f = fdopen(fd, truncate ? "w" : "a");
    if (!f) {
        pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open the %s for writing: %s", path, role,
                  strerror(errno));
        close(fd);
    }
    return f;
}

pmoe_status pmoe_stream_check(FILE *stream, const char *name, pmoe_error *err) {
    errno = 0;
    const int flushed = fflush(stream) == 0;
    const int code = errno;
    if (flushed && !ferror(stream)) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_IO, "%s: writing failed: %s", name,
                     !flushed && code ? strerror(code) : "an earlier write failed");
}

pmoe_status pmoe_stream_append(FILE *stream, const char *name, const char *bytes, size_t len,
                               pmoe_error *err) {
    pmoe_status s = pmoe_stream_check(stream, name, err); /* nothing may sit in its buffer */
    if (s) return s;
    const int fd = fileno(stream);
    struct stat st;
    const off_t start = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
    for (size_t done = 0; done < len;) { /* write(2) directly: whole, or an error we see */
        const ssize_t n = write(fd, bytes + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int code = n < 0 ? errno : EIO;
            if (start >= 0 && ftruncate(fd, start) != 0) { /* the half record stays */
            }
            return pmoe_fail(err, PMOE_ERR_IO, "%s: writing failed: %s", name, strerror(code));
        }
        done += (size_t)n;
    }
    return PMOE_OK;
}

pmoe_status pmoe_make_dir(const char *dir, const char *role, pmoe_error *err) {
    if (!dir[0]) return pmoe_fail(err, PMOE_ERR_CONFIG, "the %s's name is empty", role);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot create the %s: %s", dir, role,
                         strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0)
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot create the %s: %s", dir, role,
                         strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pmoe_fail(err, PMOE_ERR_IO,
                         "%s: cannot create the %s: %s of that name is in the way", dir, role,
                         S_ISREG(st.st_mode) ? "a file" : kind_of(st.st_mode));
    if (access(dir, W_OK | X_OK) != 0)
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot write in the %s: %s", dir, role,
                         strerror(errno));
    return PMOE_OK;
}
