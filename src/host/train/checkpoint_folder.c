/* checkpoint_folder.c: see checkpoint_folder.h.
 *
 * Who wrote a file is read from its safetensors header alone (the 8-byte
 * length and the JSON, never the tensors), so pruning a folder of large
 * checkpoints costs a few kilobytes per file. */
#include "train/checkpoint_folder.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/checkpoint.h"

enum { HEADER_LIMIT = 64 << 20 };

int pmoe_checkpoint_name_step(const char *name, int64_t *step) {
    const char *digits = name + 5;
    if (strncmp(name, "step-", 5) != 0) return 0;
    int64_t v = 0;
    const char *c = digits;
    for (; *c >= '0' && *c <= '9'; c++) {
        if (v > (INT64_MAX - (*c - '0')) / 10) return 0;
        v = v * 10 + (*c - '0');
    }
    if (c == digits || strcmp(c, ".safetensors") != 0) return 0;
    char canonical[64]; /* exactly the name pmoe writes for that step */
    pmoe_checkpoint_path(NULL, v, canonical, sizeof canonical);
    if (strcmp(canonical, name) != 0) return 0;
    *step = v;
    return 1;
}

static void join(const char *dir, const char *name, char *out, size_t size) {
    snprintf(out, size, "%s/%s", dir, name);
}

/* Whose checkpoint path is: 1 with its run id (or "" when it has none) for
 * a regular file whose header is a pmoe checkpoint's; 0 for anything else.
 * Never blocks on a FIFO nor follows a link. */
static int read_owner(const char *path, char owner[PMOE_RUN_ID_CHARS + 1]) {
    owner[0] = '\0';
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    uint8_t len_le[8];
    char *text = NULL;
    int is_pmoe = 0;
    uint64_t len = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 8 && read(fd, len_le, 8) == 8) {
        for (int i = 0; i < 8; i++) len |= (uint64_t)len_le[i] << (8 * i);
        if (len <= HEADER_LIMIT && len <= (uint64_t)st.st_size - 8) text = malloc(len + 1);
    }
    if (text && read(fd, text, len) == (ssize_t)len) {
        text[len] = '\0';
        cJSON *root = cJSON_ParseWithLength(text, len);
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
        const cJSON *format = cJSON_GetObjectItemCaseSensitive(meta, "format");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(meta, "run_id");
        is_pmoe = cJSON_IsString(format) &&
                  strcmp(format->valuestring, PMOE_CHECKPOINT_FORMAT) == 0;
        if (is_pmoe && cJSON_IsString(id) && pmoe_run_id_valid(id->valuestring))
            snprintf(owner, PMOE_RUN_ID_CHARS + 1, "%s", id->valuestring);
        cJSON_Delete(root);
    }
    free(text);
    close(fd);
    return is_pmoe;
}

/* One checkpoint-named entry of a folder. */
typedef struct found {
    char name[64];
    int64_t step;
    int regular; /* lstat: a regular file */
    int is_pmoe; /* its header is a pmoe checkpoint's */
    char owner[PMOE_RUN_ID_CHARS + 1];
    dev_t dev;
    ino_t ino;
} found;

/* Lists the checkpoint-named entries of dir (*count of them, in *out, to
 * free). Returns 0 when dir cannot be read. */
static int scan(const char *dir, found **out, int *count) {
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t step;
        if (strlen(e->d_name) >= sizeof((found *)0)->name ||
            !pmoe_checkpoint_name_step(e->d_name, &step))
            continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            found *grown = realloc(*out, (size_t)cap * sizeof *grown);
            if (!grown) break;
            *out = grown;
        }
        found *f = &(*out)[(*count)++];
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "%s", e->d_name);
        f->step = step;
        char path[4200];
        join(dir, e->d_name, path, sizeof path);
        struct stat st;
        f->regular = lstat(path, &st) == 0 && S_ISREG(st.st_mode);
        if (f->regular) {
            f->dev = st.st_dev;
            f->ino = st.st_ino;
            f->is_pmoe = read_owner(path, f->owner);
        }
    }
    closedir(d);
    return 1;
}

/* The one-line description of a found entry's owner. */
static const char *owner_words(const found *f, char *buf, size_t size) {
    if (!f->regular) snprintf(buf, size, "not a regular file");
    else if (!f->is_pmoe) snprintf(buf, size, "not a readable pmoe checkpoint");
    else if (!f->owner[0]) snprintf(buf, size, "written without a run id");
    else snprintf(buf, size, "run %.8s...", f->owner);
    return buf;
}

static int same_owner(const found *a, const found *b) {
    return a->regular && b->regular && a->is_pmoe && b->is_pmoe && strcmp(a->owner, b->owner) == 0;
}

pmoe_status pmoe_checkpoint_newest(const char *dir, char *out, size_t out_size, pmoe_error *err) {
    found *all;
    int n;
    if (!scan(dir, &all, &n))
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot read the folder: %s", dir, strerror(errno));
    const found *best = NULL, *other = NULL;
    for (int i = 0; i < n; i++) /* FIFOs, links and folders with a checkpoint's name: not ours */
        if (all[i].regular && (!best || all[i].step > best->step)) best = &all[i];
    for (int i = 0; best && i < n; i++)
        if (all[i].regular && !same_owner(&all[i], best) && (!other || all[i].step > other->step))
            other = &all[i];
    pmoe_status s = PMOE_OK;
    if (!best) {
        s = pmoe_fail(err, PMOE_ERR_IO, "%s: no step-<N>.safetensors checkpoint in this folder",
                      dir);
    } else if (other) {
        char a[64], b[64];
        s = pmoe_fail(err, PMOE_ERR_IO,
                      "%s: holds checkpoints of more than one run (%s: %s; %s: %s); pass the "
                      "checkpoint file itself",
                      dir, best->name, owner_words(best, a, sizeof a), other->name,
                      owner_words(other, b, sizeof b));
    } else {
        join(dir, best->name, out, out_size);
    }
    free(all);
    return s;
}

void pmoe_checkpoint_folder_init(pmoe_checkpoint_folder *f, const char *dir, const char *run_id,
                                 const char *resumed_from) {
    memset(f, 0, sizeof *f);
    f->lock_fd = -1;
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    snprintf(f->run_id, sizeof f->run_id, "%s", run_id);
    struct stat st;
    if (resumed_from && stat(resumed_from, &st) == 0) {
        f->keep_dev = st.st_dev;
        f->keep_ino = st.st_ino;
    }
}

/* Who holds the lock, in words, from what it wrote into the lock file. */
static void holder_words(int fd, char *out, size_t size) {
    char text[96] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    long pid = 0;
    if (sscanf(text, "pid %ld", &pid) == 1 && pid > 0) snprintf(out, size, " (pid %ld)", pid);
    else out[0] = '\0';
}

/* Deletes "<checkpoint name>.tmp.<digits>" regular files (best.safetensors
 * is one here): what a killed safetensors writer leaves (see
 * safetensors.c). Only under the lock, so no live writer owns them. */
static void sweep_temporaries(const pmoe_checkpoint_folder *f) {
    DIR *d = opendir(f->dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));) {
        char base[64];
        const char *tmp = strstr(e->d_name, ".safetensors.tmp.");
        if (!tmp) continue;
        const size_t base_len = (size_t)(tmp - e->d_name) + strlen(".safetensors");
        const char *pid = e->d_name + base_len + strlen(".tmp.");
        int64_t step;
        if (base_len >= sizeof base || !*pid || strspn(pid, "0123456789") != strlen(pid)) continue;
        memcpy(base, e->d_name, base_len);
        base[base_len] = '\0';
        if (!pmoe_checkpoint_name_step(base, &step) && strcmp(base, PMOE_CHECKPOINT_BEST)) continue;
        char path[4200];
        join(f->dir, e->d_name, path, sizeof path);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) unlink(path);
    }
    closedir(d);
}

pmoe_status pmoe_checkpoint_folder_claim(pmoe_checkpoint_folder *f, int refuse_foreign,
                                         pmoe_error *err) {
    if (f->claimed) return PMOE_OK;
    pmoe_status s = pmoe_checkpoint_make_dir(f->dir, err);
    if (s) return s;
    char path[4200];
    join(f->dir, PMOE_CHECKPOINT_LOCK, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        const int code = fd < 0 ? errno : EINVAL;
        if (fd >= 0) close(fd);
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open the checkpoint folder's lock: %s", path,
                         code == EINVAL ? "not a regular file" : strerror(code));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int code = errno;
        char who[40];
        holder_words(fd, who, sizeof who);
        close(fd);
        if (code == EWOULDBLOCK)
            return pmoe_fail(err, PMOE_ERR_IO,
                             "%s: another pmoe run%s is writing checkpoints in this folder; wait "
                             "for it to end, or set train.checkpoint_dir to another folder",
                             f->dir, who);
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot lock: %s", path, strerror(code));
    }
    char text[96];
    const int len = snprintf(text, sizeof text, "pid %ld run %s\n", (long)getpid(), f->run_id);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)len, 0) != len) {
        /* only a courtesy to the next run's message: the lock is what counts */
    }
    f->lock_fd = fd;
    f->claimed = 1;
    found *all = NULL;
    int n = 0;
    if (refuse_foreign) scan(f->dir, &all, &n);
    for (int i = 0; i < n; i++) {
        if (all[i].is_pmoe && strcmp(all[i].owner, f->run_id) == 0) continue;
        char words[64];
        s = pmoe_fail(err, PMOE_ERR_IO,
                      "%s: holds another run's checkpoint %s (%s), whose names this run's would "
                      "take; resume that run, or set train.checkpoint_dir to another folder",
                      f->dir, all[i].name, owner_words(&all[i], words, sizeof words));
        break;
    }
    free(all);
    if (s) {
        pmoe_checkpoint_folder_release(f);
        return s;
    }
    sweep_temporaries(f);
    return PMOE_OK;
}

pmoe_status pmoe_checkpoint_folder_may_write(const pmoe_checkpoint_folder *f, const char *path,
                                             pmoe_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return PMOE_OK; /* nothing there */
    char owner[PMOE_RUN_ID_CHARS + 1];
    if (S_ISREG(st.st_mode) && read_owner(path, owner) && strcmp(owner, f->run_id) == 0)
        return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_IO, "%s exists and was not written by this run; not replaced",
                     path);
}

pmoe_status pmoe_checkpoint_folder_check_best(const pmoe_checkpoint_folder *f, pmoe_error *err) {
    char path[4200];
    join(f->dir, PMOE_CHECKPOINT_BEST, path, sizeof path);
    struct stat st;
    if (lstat(path, &st) != 0) return PMOE_OK; /* nothing there yet */
    char owner[PMOE_RUN_ID_CHARS + 1] = "";
    const int is_pmoe = S_ISREG(st.st_mode) && read_owner(path, owner);
    if (is_pmoe && strcmp(owner, f->run_id) == 0) return PMOE_OK;
    char words[64];
    if (!S_ISREG(st.st_mode)) snprintf(words, sizeof words, "not a regular file");
    else if (!is_pmoe) snprintf(words, sizeof words, "not a readable pmoe checkpoint");
    else if (!owner[0]) snprintf(words, sizeof words, "written without a run id");
    else snprintf(words, sizeof words, "written by another run, run %.8s...", owner);
    return pmoe_fail(err, PMOE_ERR_IO,
                     "%s is %s, which train.keep_best would replace; move it away, or set "
                     "train.checkpoint_dir to another folder",
                     path, words);
}

static int newest_first(const void *a, const void *b) {
    const found *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

void pmoe_checkpoint_folder_prune(const pmoe_checkpoint_folder *f, int keep) {
    if (!f->claimed || keep <= 0) return;
    found *all;
    int n;
    if (!scan(f->dir, &all, &n)) return;
    qsort(all, (size_t)n, sizeof *all, newest_first);
    int kept = 0;
    for (int i = 0; i < n; i++) {
        const found *c = &all[i];
        if (!c->regular || !c->is_pmoe || strcmp(c->owner, f->run_id) != 0) continue;
        if (kept++ < keep) continue;
        if (c->dev == f->keep_dev && c->ino == f->keep_ino) continue;
        char path[4200];
        join(f->dir, c->name, path, sizeof path);
        struct stat st; /* still the file that was read, not a replacement */
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == c->dev &&
            st.st_ino == c->ino)
            unlink(path);
    }
    free(all);
}

void pmoe_checkpoint_folder_release(pmoe_checkpoint_folder *f) {
    if (f->claimed) close(f->lock_fd); /* closing drops the flock */
    f->claimed = 0;
    f->lock_fd = -1;
}
