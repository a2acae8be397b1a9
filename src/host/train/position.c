/* position.c: see position.h. */
#include "train/position.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "pmoe/train.h"

static const char HEX[] = "0123456789abcdef";

void pmoe_run_id_new(char out[PMOE_RUN_ID_CHARS + 1]) {
    uint8_t bytes[PMOE_RUN_ID_CHARS / 2];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n <= 0 && errno != EINTR) break;
        if (n > 0) got += (size_t)n;
    }
    if (got < sizeof bytes) { /* no entropy source: the time and process, mixed (splitmix64) */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
                     ((uint64_t)getpid() << 32);
        for (size_t i = 0; i < sizeof bytes; i++) {
            x += 0x9e3779b97f4a7c15u;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
            bytes[i] = (uint8_t)(z ^ (z >> 31));
        }
    }
    for (size_t i = 0; i < sizeof bytes; i++) {
        out[2 * i] = HEX[bytes[i] >> 4];
        out[2 * i + 1] = HEX[bytes[i] & 15];
    }
    out[PMOE_RUN_ID_CHARS] = '\0';
}

int pmoe_run_id_valid(const char *text) {
    if (!text || strlen(text) != PMOE_RUN_ID_CHARS) return 0;
    for (const char *c = text; *c; c++)
        if (!strchr(HEX, *c)) return 0;
    return 1;
}

/* Reads an integer metadata value: decimal digits only (no sign, space or
 * exponent), in [low, high], parsed in 64 bits before anyone narrows it. */
static pmoe_status meta_int(const pmoe_st_file *f, const char *key, int64_t low, int64_t high,
                            int64_t *out, pmoe_error *err) {
    const char *v = pmoe_safetensors_meta(f, key);
    int64_t x = 0;
    int ok = v && *v && strlen(v) <= 19;
    for (const char *c = v; ok && *c; c++) {
        ok = *c >= '0' && *c <= '9' && x <= (INT64_MAX - (*c - '0')) / 10;
        if (ok) x = x * 10 + (*c - '0');
    }
    if (!ok || x < low || x > high)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: metadata '%s' is %.40s%s, expected an integer in [%lld, %lld]",
                         f->origin, key, v ? v : "missing", v && strlen(v) > 40 ? "..." : "",
                         (long long)low, (long long)high);
    *out = x;
    return PMOE_OK;
}

pmoe_status pmoe_checkpoint_position(const pmoe_st_file *file, pmoe_train_position *pos,
                                     pmoe_error *err) {
    pmoe_status s = PMOE_OK;
    memset(pos, 0, sizeof *pos);
    const char *phase = pmoe_safetensors_meta(file, "phase");
    if (!phase || (strcmp(phase, "router") && strcmp(phase, "main")))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: metadata 'phase' is %.40s, expected router or main", file->origin,
                         phase ? phase : "missing");
    pos->phase = strcmp(phase, "router") == 0 ? PMOE_PHASE_ROUTER : PMOE_PHASE_MAIN;
    /* Each field alone; train/resume.c checks them against each other, the
     * config and the data. Step counts stay below 2^62, so the global step
     * (router + main) cannot overflow. */
    const int64_t steps_max = INT64_C(1) << 62;
    int64_t epoch = 0;
    s = meta_int(file, "epoch", 1, INT_MAX - 1, &epoch, err);
    if (!s) s = meta_int(file, "next_batch", 0, steps_max, &pos->next_batch, err);
    if (!s) s = meta_int(file, "step", 0, steps_max, &pos->step, err);
    if (!s) s = meta_int(file, "router_steps", 0, steps_max, &pos->router_steps, err);
    if (!s) s = meta_int(file, "skipped_steps", 0, steps_max, &pos->skipped, err);
    if (!s) s = meta_int(file, "epoch_correct_sum", 0, steps_max, &pos->correct_sum, err);
    if (s) return s;
    pos->epoch = (int)epoch;
    const char *loss = pmoe_safetensors_meta(file, "epoch_loss_sum");
    char *end = NULL;
    pos->loss_sum = loss ? strtod(loss, &end) : 0.0;
    if (!loss || end == loss || *end || !isfinite(pos->loss_sum))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: metadata 'epoch_loss_sum' is %.40s, expected a finite number",
                         file->origin, loss ? loss : "missing");
    const char *id = pmoe_safetensors_meta(file, "run_id");
    if (id && !pmoe_run_id_valid(id))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: metadata 'run_id' is %.40s, expected %d hex digits", file->origin, id,
                         PMOE_RUN_ID_CHARS);
    snprintf(pos->run_id, sizeof pos->run_id, "%s", id ? id : "");
    if (!pmoe_safetensors_meta(file, "best_epoch")) return PMOE_OK; /* none (yet) */
    int64_t best_epoch = 0;
    s = meta_int(file, "best_epoch", 1, INT_MAX - 1, &best_epoch, err);
    if (s) return s;
    const char *acc = pmoe_safetensors_meta(file, "best_test_acc");
    end = NULL;
    pos->best_acc = acc ? strtod(acc, &end) : 0.0;
    if (!acc || end == acc || *end || !(pos->best_acc >= 0.0 && pos->best_acc <= 1.0))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: metadata 'best_test_acc' is %.40s, expected a number in [0, 1]",
                         file->origin, acc ? acc : "missing");
    pos->best_epoch = (int)best_epoch;
    return PMOE_OK;
}

pmoe_status pmoe_checkpoint_config(const pmoe_st_file *file, pmoe_config *cfg, pmoe_error *err) {
    const char *text = pmoe_safetensors_meta(file, "config");
    if (!text)
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: the metadata holds no config", file->origin);
    pmoe_config_default(cfg);
    char origin[600];
    snprintf(origin, sizeof origin, "%s (saved config)", file->origin);
    return pmoe_config_apply_ini(cfg, text, origin, err);
}
