/* folder.c: your own images, in the ImageFolder layout.
 *
 *   data.path/train/<class>/<name>.png | .jpg | .jpeg   (the extension in any case)
 *   data.path/test/<class>/<name>.png ...
 *
 * Classes are train/'s sub-folders sorted by name (byte order), numbered
 * from 0; test/ may lack a class but may not add one. Files whose names
 * start with '.' and files of other extensions are ignored. Samples are
 * taken round robin over the classes (the first file of every class, then
 * the second, ...; files sorted by name), so data.train_size and
 * data.test_size, which cap the counts, keep the classes balanced.
 *
 * Size: with data.image_size = 0 every image must have the first training
 * image's size; with data.image_size = S each is cut to its centred square
 * and resized bilinearly to S x S (image_fit.h). Channels: RGB when any
 * training image is colour, else gray; test images are converted to that.
 * Samples are normalised per channel by the training split's mean and
 * standard deviation (image_set.c), which the test split reuses. A file
 * that cannot be read, is truncated or corrupt, or has the wrong size is an
 * error naming it, or with data.on_bad_image = skip is skipped and counted
 * in the description. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/dataset.h"
#include "data/image_fit.h"
#include "data/image_set.h"

typedef struct name_list {
    char **names;
    int count, cap;
} name_list;

static void names_free(name_list *l) {
    for (int i = 0; i < l->count; i++) free(l->names[i]);
    free(l->names);
    memset(l, 0, sizeof *l);
}

static int names_add(name_list *l, const char *name) {
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **grown = realloc(l->names, sizeof(char *) * (size_t)cap);
        if (!grown) return 0;
        l->names = grown;
        l->cap = cap;
    }
    return (l->names[l->count] = strdup(name)) != NULL ? (l->count++, 1) : 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg");
}

/* The entries of dir that are folders (want_dirs) or image files, sorted. */
static pmoe_status list_dir(const char *dir, int want_dirs, name_list *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    pmoe_status s = PMOE_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4200];
        const int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (n < 0 || (size_t)n >= sizeof path) continue;
        if (stat(path, &sb) != 0) continue; /* a dangling link */
        if (want_dirs ? !S_ISDIR(sb.st_mode) : !(S_ISREG(sb.st_mode) && is_image_name(e->d_name)))
            continue;
        if (!names_add(out, e->d_name))
            s = pmoe_fail(err, PMOE_ERR_OOM, "%s: out of memory listing it", dir);
    }
    closedir(d);
    if (s) names_free(out);
    else if (out->count > 1) qsort(out->names, (size_t)out->count, sizeof(char *), by_name);
    return s;
}

typedef struct split_files {
    pmoe_image_item *items;
    char **paths;
    int64_t count;
} split_files;

static void split_free(split_files *f) {
    for (int64_t i = 0; i < f->count; i++) free(f->paths[i]);
    free(f->paths);
    free(f->items);
    memset(f, 0, sizeof *f);
}

/* The image files of split_dir/<class>/ for every class, round robin. */
static pmoe_status list_split(const char *split_dir, const name_list *classes, int train,
                              split_files *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    name_list *files = calloc((size_t)classes->count, sizeof *files);
    if (!files) return pmoe_fail(err, PMOE_ERR_OOM, "out of memory listing %s", split_dir);
    pmoe_status s = PMOE_OK;
    int64_t total = 0;
    int longest = 0;
    for (int c = 0; !s && c < classes->count; c++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", split_dir, classes->names[c]);
        struct stat sb;
        if (!train && stat(dir, &sb) != 0) continue; /* a class with no test images */
        s = list_dir(dir, 0, &files[c], err);
        if (!s && train && files[c].count == 0)
            s = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: no .png or .jpg images in this class folder",
                          dir);
        total += files[c].count;
        if (files[c].count > longest) longest = files[c].count;
    }
    if (!s && total == 0)
        s = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: no .png or .jpg images in its class folders",
                      split_dir);
    if (!s) {
        out->items = calloc((size_t)total, sizeof *out->items);
        out->paths = calloc((size_t)total, sizeof *out->paths);
        if (!out->items || !out->paths)
            s = pmoe_fail(err, PMOE_ERR_OOM, "out of memory listing %s", split_dir);
    }
    for (int i = 0; !s && i < longest; i++)
        for (int c = 0; !s && c < classes->count; c++) {
            if (i >= files[c].count) continue;
            const size_t len = strlen(split_dir) + strlen(classes->names[c]) +
                               strlen(files[c].names[i]) + 3;
            char *path = malloc(len);
            if (!path) {
                s = pmoe_fail(err, PMOE_ERR_OOM, "out of memory listing %s", split_dir);
                break;
            }
            snprintf(path, len, "%s/%s/%s", split_dir, classes->names[c], files[c].names[i]);
            out->paths[out->count] = path;
            out->items[out->count] = (pmoe_image_item){path, NULL, c};
            out->count++;
        }
    for (int c = 0; c < classes->count; c++) names_free(&files[c]);
    free(files);
    if (s) split_free(out);
    return s;
}

/* Class names are saved with checkpoints one per line, and printed. */
static pmoe_status check_class_names(const char *dir, const name_list *classes, pmoe_error *err) {
    if (classes->count < 2)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: %d class folder%s; a classifier needs at least 2 (train/<class>/)",
                         dir, classes->count, classes->count == 1 ? "" : "s");
    for (int c = 0; c < classes->count; c++)
        for (const char *p = classes->names[c]; *p; p++)
            if ((unsigned char)*p < 0x20)
                return pmoe_fail(err, PMOE_ERR_FORMAT,
                                 "%s: class folder %d's name holds a control character", dir, c);
    return PMOE_OK;
}

/* Test class folders must be training classes. */
static pmoe_status check_test_classes(const char *test_dir, const name_list *classes,
                                      pmoe_error *err) {
    name_list found;
    pmoe_status s = list_dir(test_dir, 1, &found, err);
    for (int i = 0; !s && i < found.count; i++)
        if (!bsearch(&found.names[i], classes->names, (size_t)classes->count, sizeof(char *),
                     by_name))
            s = pmoe_fail(err, PMOE_ERR_FORMAT, "%s/%s: a test class that train/ does not have",
                          test_dir, found.names[i]);
    names_free(&found);
    return s;
}

static pmoe_status give_names(pmoe_dataset *ds, const name_list *classes, pmoe_error *err) {
    ds->class_names = calloc((size_t)classes->count, sizeof(char *));
    for (int c = 0; ds->class_names && c < classes->count; c++)
        if (!(ds->class_names[c] = strdup(classes->names[c])))
            return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for class names");
    return ds->class_names ? PMOE_OK
                           : pmoe_fail(err, PMOE_ERR_OOM, "out of memory for class names");
}

static void describe(pmoe_dataset *ds, const char *path, const char *split, int classes,
                     int64_t skipped) {
    const char *base = strrchr(path, '/');
    base = base && base[1] ? base + 1 : path;
    char extra[48] = "";
    if (skipped) snprintf(extra, sizeof extra, ", %lld bad files skipped", (long long)skipped);
    snprintf(ds->description, sizeof ds->description,
             "folder %.40s/%s (%lld %dx%d %s images, %d classes%s)", base, split,
             (long long)ds->count, ds->width, ds->height, ds->channels == 3 ? "RGB" : "gray",
             classes, extra);
}

pmoe_status pmoe_folder_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                             pmoe_error *err) {
    *train = *test = NULL;
    pmoe_status s = pmoe_data_check_sizes(cfg, err);
    if (s) return s;
    char train_dir[1100], test_dir[1100];
    snprintf(train_dir, sizeof train_dir, "%s/train", cfg->path);
    snprintf(test_dir, sizeof test_dir, "%s/test", cfg->path);
    name_list classes;
    s = list_dir(train_dir, 1, &classes, err);
    if (s) {
        char detail[sizeof err->message];
        snprintf(detail, sizeof detail, "%s", err->message);
        return pmoe_fail(err, s,
                         "%s (data.source = folder reads data.path/train/<class>/*.png|*.jpg "
                         "and data.path/test/<class>/...)",
                         detail);
    }
    s = check_class_names(train_dir, &classes, err);
    if (!s) s = check_test_classes(test_dir, &classes, err);
    split_files train_files = {0}, test_files = {0};
    if (!s) s = list_split(train_dir, &classes, 1, &train_files, err);
    if (!s) s = list_split(test_dir, &classes, 0, &test_files, err);
    int64_t skipped_train = 0, skipped_test = 0;
    pmoe_image_rule rule = {0};
    rule.height = rule.width = cfg->image_size;
    rule.fit = cfg->image_size ? PMOE_FIT_CROP_RESIZE : PMOE_FIT_EXACT;
    rule.skip_bad = cfg->on_bad_image == PMOE_BAD_IMAGE_SKIP;
    rule.compute_stats = 1;
    rule.limit = cfg->train_size;
    if (!s)
        s = pmoe_image_set_open(train_files.items, train_files.count, classes.count, &rule, train,
                                &skipped_train, err);
    if (!s) {
        rule.compute_stats = 0; /* the training split's statistics, its channels and size */
        rule.limit = cfg->test_size;
        s = pmoe_image_set_open(test_files.items, test_files.count, classes.count, &rule, test,
                                &skipped_test, err);
    }
    if (!s) s = give_names(*train, &classes, err);
    if (!s) s = give_names(*test, &classes, err);
    if (!s) {
        describe(*train, cfg->path, "train", classes.count, skipped_train);
        describe(*test, cfg->path, "test", classes.count, skipped_test);
    }
    split_free(&train_files);
    split_free(&test_files);
    names_free(&classes);
    if (s) {
        pmoe_dataset_free(*train);
        pmoe_dataset_free(*test);
        *train = *test = NULL;
    }
    return s;
}
