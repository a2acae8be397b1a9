/* config.c: reading and checking pmoe_config.
 *
 * One table describes every key: its name, where it lives in the struct, its
 * type, and its range or allowed words. Parsing INI text, applying --set
 * overrides, listing the keys, the defaults and writing the config back out all walk
 * that table, so a new key is one line here (its default included) and one
 * field in config.h. */
#include "pmoe/config.h"

#include "core/files.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    KEY_INT,
    KEY_INT64,
    KEY_UINT64,
    KEY_DOUBLE,
    KEY_STRING,
    KEY_ENUM,
    KEY_BOOL
} key_type;

enum { KEY_WORDS = 8 }; /* the most words an enum key may have */

typedef struct key_spec {
    const char *name; /* "section.key" */
    key_type type;
    size_t offset;
    size_t size;                  /* KEY_STRING: buffer size */
    double min, max;              /* numbers: inclusive range; strings: min 1 = not empty */
    const char *fallback;         /* the default, as it would be written in the INI */
    const char *words[KEY_WORDS]; /* KEY_ENUM: names, index = enum value */
} key_spec;

#define OFF(field) offsetof(pmoe_config, field)
#define SIZE(field) sizeof(((pmoe_config *)0)->field)
#define BIG 1e18
enum { INI_LONGEST_LINE = INI_MAX_LINE - 2 }; /* inih keeps INI_MAX_LINE - 1 bytes with the '\n' */

/* One row per key, each kept on one line. */
/* clang-format off */
static const key_spec KEYS[] = {
    {"data.source", KEY_ENUM, OFF(data.source), 0, 0, 0, "auto", {"auto", "synthetic", "mosaic", "idx", "cifar10", "noisy", "folder"}},
    {"data.path", KEY_STRING, OFF(data.path), SIZE(data.path), 0, 0, "/usr/share/datasets/fashion-mnist", {0}},
    {"data.train_size", KEY_INT64, OFF(data.train_size), 0, 1, 1e9, "10000", {0}}, /* the paper's 10,000 training mosaics */
    {"data.test_size", KEY_INT64, OFF(data.test_size), 0, 1, 1e9, "1000", {0}},
    {"data.seed", KEY_UINT64, OFF(data.seed), 0, 0, BIG, "1", {0}},
    {"data.pos_class", KEY_INT, OFF(data.pos_class), 0, 0, 9, "1", {0}}, /* the paper's task: digit 1 against digit 0 */
    {"data.neg_class", KEY_INT, OFF(data.neg_class), 0, 0, 9, "0", {0}},
    {"data.grid", KEY_INT, OFF(data.grid), 0, 1, 64, "4", {0}},
    {"data.synthetic_patches", KEY_INT, OFF(data.synthetic_patches), 0, 1, 1 << 20, "16", {0}},
    {"data.synthetic_dim", KEY_INT, OFF(data.synthetic_dim), 0, 1, 1 << 20, "64", {0}},
    {"data.synthetic_clusters", KEY_INT, OFF(data.synthetic_clusters), 0, 1, 1 << 20, "8", {0}},
    {"data.delta_d", KEY_DOUBLE, OFF(data.delta_d), 0, -1, 0.999999, "0", {0}},
    {"data.delta_r", KEY_DOUBLE, OFF(data.delta_r), 0, 0, 0.999999, "0.2", {0}},
    {"data.noise", KEY_DOUBLE, OFF(data.noise), 0, 0, 1e6, "0.1", {0}},
    {"data.image_size", KEY_INT, OFF(data.image_size), 0, 0, 4096, "0", {0}},
    {"data.background", KEY_ENUM, OFF(data.background), 0, 0, 0, "items", {"items", "noise"}},
    {"data.crop_pad", KEY_INT, OFF(data.crop_pad), 0, 0, 1024, "0", {0}},
    {"data.flip", KEY_BOOL, OFF(data.flip), 0, 0, 1, "0", {0}},
    {"data.on_bad_image", KEY_ENUM, OFF(data.on_bad_image), 0, 0, 0, "stop", {"stop", "skip"}},

    {"model.type", KEY_ENUM, OFF(model.type), 0, 0, 0, "pmoe", {"pmoe", "cnn", "wrn", "wrn_pmoe"}},
    {"model.experts", KEY_INT, OFF(model.experts), 0, 1, 4096, "8", {0}},
    {"model.topl", KEY_INT, OFF(model.topl), 0, 1, 1 << 20, "6", {0}},
    {"model.hidden", KEY_INT, OFF(model.hidden), 0, 1, 1 << 20, "40", {0}},
    {"model.patch", KEY_INT, OFF(model.patch), 0, 0, 4096, "0", {0}},
    {"model.gate", KEY_ENUM, OFF(model.gate), 0, 0, 0, "renorm", {"renorm", "softmax_all", "ones"}},
    {"model.output_init", KEY_ENUM, OFF(model.output_init), 0, 0, 0, "normal", {"normal", "sign"}},
    {"model.train_output", KEY_BOOL, OFF(model.train_output), 0, 0, 1, "0", {0}},
    {"model.expert_init_std", KEY_DOUBLE, OFF(model.expert_init_std), 0, 0, 1e3, "0.01", {0}},
    {"model.router_init_std", KEY_DOUBLE, OFF(model.router_init_std), 0, -1, 1e3, "-1", {0}},
    {"model.width", KEY_INT, OFF(model.width), 0, 1, 64, "1", {0}},
    {"model.expert_kernel", KEY_INT, OFF(model.expert_kernel), 0, 1, 3, "3", {0}},
    {"model.moe_impl", KEY_ENUM, OFF(model.moe_impl), 0, 0, 0, "sparse", {"sparse", "dense_masked"}},

    {"train.mode", KEY_ENUM, OFF(train.mode), 0, 0, 0, "joint", {"joint", "separate"}},
    {"train.epochs", KEY_INT, OFF(train.epochs), 0, 0, 1e7, "150", {0}},
    {"train.batch", KEY_INT, OFF(train.batch), 0, 1, 1 << 20, "20", {0}},
    {"train.lr", KEY_DOUBLE, OFF(train.lr), 0, 0, 1e6, "0.2", {0}},
    {"train.schedule", KEY_ENUM, OFF(train.schedule), 0, 0, 0, "constant", {"constant", "step", "cosine"}},
    {"train.warmup_epochs", KEY_INT, OFF(train.warmup_epochs), 0, 0, 1e7, "0", {0}},
    {"train.lr_steps", KEY_STRING, OFF(train.lr_steps), SIZE(train.lr_steps), 0, 0, "", {0}},
    {"train.lr_gamma", KEY_DOUBLE, OFF(train.lr_gamma), 0, 0, 1e6, "0.1", {0}},
    {"train.lr_min", KEY_DOUBLE, OFF(train.lr_min), 0, 0, 1e6, "0", {0}},
    {"train.momentum", KEY_DOUBLE, OFF(train.momentum), 0, 0, 0.999999, "0", {0}},
    {"train.weight_decay", KEY_DOUBLE, OFF(train.weight_decay), 0, 0, 1e3, "0", {0}},
    {"train.seed", KEY_UINT64, OFF(train.seed), 0, 0, BIG, "1", {0}},
    {"train.threads", KEY_INT, OFF(train.threads), 0, 0, 4096, "0", {0}},
    {"train.cpu_kernels", KEY_ENUM, OFF(train.cpu_kernels), 0, 0, 0, "reference", {"reference", "fast"}},
    {"train.precision", KEY_ENUM, OFF(train.precision), 0, 0, 0, "fp32", {"fp32", "tf32", "bf16"}},
    {"train.device", KEY_STRING, OFF(train.device), SIZE(train.device), 0, 0, "auto", {0}},
    {"train.router_epochs", KEY_INT, OFF(train.router_epochs), 0, 0, 1e7, "100", {0}},
    {"train.router_batch", KEY_INT, OFF(train.router_batch), 0, 1, 1 << 20, "20", {0}},
    {"train.router_lr", KEY_DOUBLE, OFF(train.router_lr), 0, 0, 1e6, "0.2", {0}},
    {"train.router_size", KEY_INT64, OFF(train.router_size), 0, 0, 1e9, "0", {0}},
    {"train.eval_every", KEY_INT, OFF(train.eval_every), 0, 1, 1e7, "1", {0}},
    {"train.fault_nan_step", KEY_INT64, OFF(train.fault_nan_step), 0, 0, 1e15, "0", {0}},
    {"train.checkpoint_every", KEY_INT64, OFF(train.checkpoint_every), 0, 0, 1e15, "0", {0}},
    {"train.keep", KEY_INT, OFF(train.keep), 0, 1, 1e6, "3", {0}},
    {"train.keep_best", KEY_BOOL, OFF(train.keep_best), 0, 0, 1, "0", {0}},
    {"train.checkpoint_dir", KEY_STRING, OFF(train.checkpoint_dir), SIZE(train.checkpoint_dir), 1, 0, "checkpoints", {0}},
    {"train.profile_steps", KEY_STRING, OFF(train.profile_steps), SIZE(train.profile_steps), 0, 0, "", {0}},
    {"train.profile_experts", KEY_BOOL, OFF(train.profile_experts), 0, 0, 1, "0", {0}},
    {"train.on_nonfinite", KEY_ENUM, OFF(train.on_nonfinite), 0, 0, 0, "stop", {"stop", "skip"}},
    {"train.sync_every", KEY_INT64, OFF(train.sync_every), 0, 0, 1e15, "0", {0}},
    {"train.overlap_input", KEY_BOOL, OFF(train.overlap_input), 0, 0, 1, "1", {0}},
    {"train.comm", KEY_ENUM, OFF(train.comm), 0, 0, 0, "auto", {"auto", "single", "mpi", "nccl"}},
    {"train.fault_rank", KEY_INT, OFF(train.fault_rank), 0, -1, 1 << 20, "-1", {0}},
    {"train.sync_bn", KEY_BOOL, OFF(train.sync_bn), 0, 0, 1, "0", {0}},
    {"train.expert_parallel", KEY_INT, OFF(train.expert_parallel), 0, 0, 1 << 20, "0", {0}},

    {"bench.warmup", KEY_INT, OFF(bench.warmup), 0, 0, 1e6, "20", {0}},
    {"bench.repeats", KEY_INT, OFF(bench.repeats), 0, 1, 1e6, "50", {0}},
    {"bench.sgemm_size", KEY_INT, OFF(bench.sgemm_size), 0, 0, 16384, "2048", {0}},
};
/* clang-format on */
#define NKEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static const key_spec *find_key(const char *name) {
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(KEYS[i].name, name) == 0) return &KEYS[i];
    return NULL;
}

/* Integer keys print their bounds as integers ("[1, 1048576]", not "1.04858e+06"). */
static pmoe_status out_of_range(const key_spec *k, const char *value, pmoe_error *err) {
    if (k->type == KEY_DOUBLE)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s = %s is out of range [%g, %g]", k->name,
                         value, k->min, k->max);
    return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s = %s is out of range [%.0f, %.0f]", k->name,
                     value, k->min, k->max);
}

/* A string value must read back unchanged from the INI that
 * pmoe_config_to_ini writes (checkpoints keep the config that way, and
 * --resume reads it): inih strips outer whitespace, ends the value at a ';'
 * that starts it or follows whitespace, cannot hold a line break, and keeps
 * INI_LONGEST_LINE characters of a line. */
static pmoe_status check_ini_string(const key_spec *k, const char *value, pmoe_error *err) {
    const size_t len = strlen(value);
    const size_t line = strlen(strchr(k->name, '.') + 1) + 3 + len; /* "key = value" */
    if (line > INI_LONGEST_LINE)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: %s: value of %zu characters; at most %zu fit on one INI line, "
                         "which is how the config is saved with checkpoints",
                         k->name, len, len - (line - INI_LONGEST_LINE));
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)value[i];
        const char *why = NULL;
        if (c < 0x20 && c != '\t') why = "a control character (a line break?)";
        else if ((i == 0 || i == len - 1) && isspace(c)) why = "whitespace at either end";
        else if (c == ';' && (i == 0 || isspace((unsigned char)value[i - 1])))
            why = "a ';' at the start or after a space (INI reads a comment from there)";
        if (why)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: %s: the value holds %s at character %zu; INI cannot "
                             "keep it",
                             k->name, why, i + 1);
    }
    return PMOE_OK;
}

pmoe_status pmoe_config_set_value(pmoe_config *cfg, const char *name, const char *value,
                                  pmoe_error *err) {
    const key_spec *k = find_key(name);
    if (!k) return pmoe_fail(err, PMOE_ERR_CONFIG, "config: unknown key '%s'", name);
    char *field = (char *)cfg + k->offset;
    char *end = NULL;
    errno = 0;
    switch (k->type) {
    case KEY_INT:
    case KEY_INT64:
    case KEY_UINT64:
    case KEY_BOOL: {
        long long v = strtoll(value, &end, 10);
        if (k->type == KEY_BOOL && (!strcmp(value, "true") || !strcmp(value, "false"))) {
            v = value[0] == 't';
            end = (char *)value + strlen(value);
        }
        if (end == value || *end != '\0')
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s: expected an integer, got '%s'",
                             k->name, value);
        if (errno == ERANGE) return out_of_range(k, value, err); /* beyond 64 bits */
        if ((double)v < k->min || (double)v > k->max) return out_of_range(k, value, err);
        if (k->type == KEY_INT64) *(int64_t *)field = v;
        else if (k->type == KEY_UINT64) *(uint64_t *)field = (uint64_t)v;
        else *(int *)field = (int)v;
        return PMOE_OK;
    }
    case KEY_DOUBLE: {
        double v = strtod(value, &end);
        if (end == value || *end != '\0')
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s: expected a number, got '%s'",
                             k->name, value);
        if (!isfinite(v) && errno != ERANGE)
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s: '%s' is not a finite number",
                             k->name, value);
        if (errno == ERANGE) /* strtod's underflow (subnormal or 0) and overflow */
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: %s: %s is too %s for a double (magnitudes from %g to %g, "
                             "or 0)",
                             k->name, value, fabs(v) < DBL_MIN ? "small" : "large", DBL_MIN,
                             DBL_MAX);
        if (v < k->min || v > k->max) return out_of_range(k, value, err);
        *(double *)field = v;
        return PMOE_OK;
    }
    case KEY_STRING: {
        if (k->min > 0 && !value[0]) /* min 1: a name that must not be empty */
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s must not be empty", k->name);
        if (strlen(value) >= k->size)
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s: value longer than %zu characters",
                             k->name, k->size - 1);
        pmoe_status st = check_ini_string(k, value, err);
        if (st) return st;
        memcpy(field, value, strlen(value) + 1);
        return PMOE_OK;
    }
    case KEY_ENUM:
        for (int i = 0; i < KEY_WORDS && k->words[i]; i++)
            if (strcmp(value, k->words[i]) == 0) {
                *(int *)field = i;
                return PMOE_OK;
            }
        {
            char allowed[128] = "";
            for (int i = 0; i < KEY_WORDS && k->words[i]; i++) {
                strncat(allowed, i ? " | " : "", sizeof allowed - strlen(allowed) - 1);
                strncat(allowed, k->words[i], sizeof allowed - strlen(allowed) - 1);
            }
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: %s: '%s' is not one of %s", k->name,
                             value, allowed);
        }
    }
    return pmoe_fail(err, PMOE_ERR_INTERNAL, "config: %s: unhandled key type", k->name);
}

/* Every key at its table default. A default the key's own parser refuses
 * would leave the field zero; test_config holds every default to reading
 * back from pmoe keys' INI unchanged. */
void pmoe_config_default(pmoe_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < NKEYS; i++)
        pmoe_config_set_value(cfg, KEYS[i].name, KEYS[i].fallback, NULL);
}

pmoe_status pmoe_config_set(pmoe_config *cfg, const char *assignment, pmoe_error *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "config: '%s' is not of the form section.key=value",
                         assignment);
    char name[128];
    size_t len = (size_t)(eq - assignment);
    if (len >= sizeof name)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "config: key too long in '%s'", assignment);
    memcpy(name, assignment, len);
    name[len] = '\0';
    return pmoe_config_set_value(cfg, name, eq + 1, err);
}

/* INI text goes to inih through our own line reader, which counts lines (so
 * a bad value is reported on its own line, not on an earlier syntax error's)
 * and rejects two inputs inih would otherwise misread without a word: a line
 * longer than inih's buffer, which it splits into two lines, and an indented
 * line after a key, which it takes as a new value for that key (a
 * "continuation", even across blank and comment lines), so "path = /a" then
 * "  train_size = 5" would set data.path to "train_size = 5". */
typedef struct ini_state {
    pmoe_config *cfg;
    const char *next; /* the text not yet read */
    int line;         /* the line inih is parsing */
    int after_key;    /* a key line since the last [section] */
    pmoe_status status;
    int error_line;
    pmoe_error first; /* the first failure we detected (a key's, or the reader's) */
} ini_state;

static void ini_record(ini_state *st, pmoe_status code, const pmoe_error *e) {
    if (st->status != PMOE_OK) return;
    st->status = code;
    st->error_line = st->line;
    st->first = *e;
}

/* inih's reader: one line per call, so inih's line numbers are ours. */
static char *ini_read_line(char *str, int num, void *stream) {
    ini_state *st = stream;
    const char *p = st->next;
    if (*p == '\0' || st->status != PMOE_OK) return NULL;
    st->line++;
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    pmoe_error e;
    if (len > INI_LONGEST_LINE || len + 2 > (size_t)num) {
        pmoe_fail(&e, PMOE_ERR_CONFIG,
                  "line of %zu characters, longer than the %d an INI line may have (give a "
                  "longer value with --set section.key=value)",
                  len, INI_LONGEST_LINE);
        ini_record(st, PMOE_ERR_CONFIG, &e);
        return NULL;
    }
    const char *start = p;
    if (st->line == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0) start += 3; /* a UTF-8 BOM */
    const char *text = start;
    while (text < p + len &&
           (*text == ' ' || *text == '\t' || *text == '\r' || *text == '\v' || *text == '\f'))
        text++;
    const int blank = text == p + len || *text == '\r';
    const int comment = !blank && (*text == ';' || *text == '#');
    if (!blank && !comment) {
        if (text > start && st->after_key) {
            pmoe_fail(&e, PMOE_ERR_CONFIG,
                      "indented line after a key: INI would read it as a second line of that "
                      "key's value, which pmoe does not take (remove the indentation)");
            ini_record(st, PMOE_ERR_CONFIG, &e);
            return NULL;
        }
        st->after_key = *text != '[';
    }
    const size_t copy = eol ? len + 1 : len;
    memcpy(str, p, copy);
    str[copy] = '\0';
    st->next = p + copy;
    return str;
}

/* inih calls this per key; returning 0 makes inih report the line. */
static int on_ini_key(void *user, const char *section, const char *name, const char *value) {
    ini_state *st = user;
    char key[160];
    snprintf(key, sizeof key, "%s.%s", section, name);
    pmoe_error local;
    pmoe_status s = pmoe_config_set_value(st->cfg, key, value, &local);
    if (s == PMOE_OK) return 1;
    ini_record(st, s, &local);
    return 0;
}

pmoe_status pmoe_config_apply_ini(pmoe_config *cfg, const char *text, const char *origin,
                                  pmoe_error *err) {
    ini_state st = {cfg, text, 0, 0, PMOE_OK, 0, {PMOE_OK, ""}};
    /* inih's first failing line: ours (a key or the reader) or its own syntax error. */
    int line = ini_parse_stream(ini_read_line, &st, on_ini_key, &st);
    if (!origin) origin = "config";
    if (st.status != PMOE_OK && (line == 0 || st.error_line <= line)) {
        const char *msg = st.first.message;
        if (strncmp(msg, "config: ", 8) == 0) msg += 8;
        return pmoe_fail(err, st.status, "%s:%d: %s", origin, st.error_line, msg);
    }
    if (line != 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "%s:%d: not a 'key = value' line or [section]",
                         origin, line);
    return PMOE_OK;
}

pmoe_status pmoe_config_load_file(pmoe_config *cfg, const char *path, pmoe_error *err) {
    pmoe_error why = {PMOE_OK, ""};
    FILE *f = pmoe_open_regular(path, "config", NULL, &why);
    if (!f) /* a config error (exit 2), as a bad key in the file would be */
        return pmoe_fail(err, PMOE_ERR_CONFIG, "%s", why.message);
    enum { LIMIT = 1 << 20 };
    char *text = malloc(LIMIT + 1);
    if (!text) {
        fclose(f);
        return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate %d bytes for the config", path,
                         LIMIT + 1);
    }
    size_t got = fread(text, 1, LIMIT + 1, f);
    int read_error = ferror(f);
    fclose(f);
    pmoe_status s;
    if (read_error) s = pmoe_fail(err, PMOE_ERR_IO, "%s: read error", path);
    else if (got > LIMIT) s = pmoe_fail(err, PMOE_ERR_CONFIG, "%s: config larger than 1 MiB", path);
    else if (memchr(text, '\0', got))
        s = pmoe_fail(err, PMOE_ERR_CONFIG, "%s: config holds a NUL byte", path);
    else {
        text[got] = '\0';
        s = pmoe_config_apply_ini(cfg, text, path, err);
    }
    free(text);
    return s;
}

pmoe_status pmoe_config_check(const pmoe_config *cfg, pmoe_error *err) {
    const pmoe_model_config *m = &cfg->model;
    if (m->type == PMOE_MODEL_PMOE && m->hidden % m->experts != 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.hidden = %d is not divisible by model.experts = %d",
                         m->hidden, m->experts);
    if (m->type == PMOE_MODEL_PMOE && cfg->train.mode == PMOE_TRAIN_SEPARATE &&
        m->gate != PMOE_GATE_RENORM && m->gate != PMOE_GATE_ONES)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.gate = %s has no meaning with train.mode = separate "
                         "(its expert phase uses G = 1)",
                         pmoe_gate_mode_name(m->gate));
    if (pmoe_model_is_deep(m->type) && cfg->train.mode == PMOE_TRAIN_SEPARATE)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.mode = separate is defined for the two-layer models "
                         "only, not model.type = %s",
                         pmoe_model_type_name(m->type));
    if (m->type == PMOE_MODEL_WRN_PMOE && m->expert_kernel != 1 && m->expert_kernel != 3)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "config: model.expert_kernel = %d (1 or 3)",
                         m->expert_kernel);
    if (m->type == PMOE_MODEL_WRN_PMOE && (64 * m->width) % m->experts != 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.experts = %d does not divide the pMoE layer's %d "
                         "channels (64 x model.width)",
                         m->experts, 64 * m->width);
    if (cfg->data.source == PMOE_DATA_MOSAIC && cfg->data.pos_class == cfg->data.neg_class)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: data.pos_class and data.neg_class are both %d",
                         cfg->data.pos_class);
    long long first = 0, last = 0;
    int used = 0;
    if (cfg->train.profile_steps[0] &&
        (sscanf(cfg->train.profile_steps, "%lld:%lld%n", &first, &last, &used) != 2 ||
         cfg->train.profile_steps[used] != '\0' || first < 1 || last < first))
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.profile_steps = '%s' is not A:B with 1 <= A <= B",
                         cfg->train.profile_steps);
    const char *dev = cfg->train.device;
    if (strcmp(dev, "auto") && strcmp(dev, "cpu") && strcmp(dev, "cuda") &&
        strncmp(dev, "cuda:", 5))
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.device: '%s' is not one of auto | cpu | cuda | cuda:N",
                         dev);
    return PMOE_OK;
}

/* The shortest %g text that reads back as v exactly: 0.2, not
 * 0.20000000000000001 (17 significant digits always suffice). */
static int format_double(char *out, size_t size, double v) {
    for (int digits = 1; digits < 17; digits++) {
        const int n = snprintf(out, size, "%.*g", digits, v);
        if (strtod(out, NULL) == v) return n;
    }
    return snprintf(out, size, "%.17g", v);
}

int pmoe_config_to_ini(const pmoe_config *cfg, char *out, int out_size) {
    int used = 0;
    char section[32] = "";
    for (int i = 0; i < NKEYS; i++) {
        const key_spec *k = &KEYS[i];
        const char *dot = strchr(k->name, '.');
        int seclen = (int)(dot - k->name);
        char line[1200];
        int n = 0;
        if (strncmp(section, k->name, (size_t)seclen) != 0 || section[seclen] != '\0') {
            snprintf(section, sizeof section, "%.*s", seclen, k->name);
            n += snprintf(line + n, sizeof line - (size_t)n, "%s[%s]\n", used ? "\n" : "", section);
        }
        const char *field = (const char *)cfg + k->offset;
        n += snprintf(line + n, sizeof line - (size_t)n, "%s = ", dot + 1);
        switch (k->type) {
        case KEY_INT:
        case KEY_BOOL:
            n += snprintf(line + n, sizeof line - (size_t)n, "%d", *(const int *)field);
            break;
        case KEY_INT64:
            n += snprintf(line + n, sizeof line - (size_t)n, "%lld",
                          (long long)*(const int64_t *)field);
            break;
        case KEY_UINT64:
            n += snprintf(line + n, sizeof line - (size_t)n, "%llu",
                          (unsigned long long)*(const uint64_t *)field);
            break;
        case KEY_DOUBLE:
            n += format_double(line + n, sizeof line - (size_t)n, *(const double *)field);
            break;
        case KEY_STRING: n += snprintf(line + n, sizeof line - (size_t)n, "%s", field); break;
        case KEY_ENUM:
            n += snprintf(line + n, sizeof line - (size_t)n, "%s", k->words[*(const int *)field]);
            break;
        }
        n += snprintf(line + n, sizeof line - (size_t)n, "\n");
        if (used < out_size) snprintf(out + used, (size_t)(out_size - used), "%s", line);
        used += n;
    }
    return used;
}

const char *const *pmoe_config_keys(void) {
    static const char *names[NKEYS + 1];
    if (!names[0])
        for (int i = 0; i < NKEYS; i++) names[i] = KEYS[i].name;
    return names;
}

static const char *word_of(const char *key, int value) {
    const key_spec *k = find_key(key);
    return (k && value >= 0 && value < KEY_WORDS && k->words[value]) ? k->words[value] : "?";
}
const char *pmoe_data_source_name(pmoe_data_source s) { return word_of("data.source", (int)s); }
const char *pmoe_model_type_name(pmoe_model_type t) { return word_of("model.type", (int)t); }
const char *pmoe_train_mode_name(pmoe_train_mode m) { return word_of("train.mode", (int)m); }
const char *pmoe_gate_mode_name(pmoe_gate_mode g) { return word_of("model.gate", (int)g); }
int pmoe_model_is_deep(pmoe_model_type t) {
    return t == PMOE_MODEL_WRN || t == PMOE_MODEL_WRN_PMOE;
}
