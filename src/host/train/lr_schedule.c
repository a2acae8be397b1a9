/* lr_schedule.c: learning-rate schedules (see lr_schedule.h). */
#include "train/lr_schedule.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

pmoe_status pmoe_lr_steps_parse(const char *text, int64_t *epochs, int *count, pmoe_error *err) {
    *count = 0;
    const char *p = text;
    while (*p) {
        char *end = NULL;
        errno = 0;
        const long long e = strtoll(p, &end, 10);
        if (end == p || errno || e < 1 || (*end && *end != ','))
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.lr_steps = '%s' is not a list of epochs E1,E2,... "
                             "(integers >= 1)",
                             text);
        if (*count == PMOE_MAX_LR_STEPS)
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: train.lr_steps: more than %d epochs",
                             PMOE_MAX_LR_STEPS);
        if (*count > 0 && e <= epochs[*count - 1])
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.lr_steps = '%s': the epochs must increase", text);
        epochs[(*count)++] = e;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return pmoe_fail(err, PMOE_ERR_CONFIG, "config: train.lr_steps = '%s' ends in a comma",
                             text);
    }
    return PMOE_OK;
}

pmoe_status pmoe_lr_schedule_check(const pmoe_train_config *t, pmoe_error *err) {
    int64_t epochs[PMOE_MAX_LR_STEPS];
    int count = 0;
    pmoe_status s = pmoe_lr_steps_parse(t->lr_steps, epochs, &count, err);
    if (s) return s;
    if (t->schedule == PMOE_SCHEDULE_STEP && count == 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.schedule = step needs train.lr_steps (epochs after which "
                         "the rate is multiplied by train.lr_gamma)");
    if (t->schedule == PMOE_SCHEDULE_COSINE && t->lr_min > t->lr)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "config: train.lr_min = %g is above train.lr = %g",
                         t->lr_min, t->lr);
    return PMOE_OK;
}

pmoe_lr_schedule pmoe_lr_schedule_make(const pmoe_train_config *t, double base, int epochs,
                                       int64_t steps_per_epoch) {
    pmoe_lr_schedule s = {0};
    s.kind = t->schedule;
    s.base = base;
    s.min = t->lr_min < base ? t->lr_min : base;
    s.gamma = t->lr_gamma;
    s.steps_per_epoch = steps_per_epoch;
    s.total_steps = (int64_t)epochs * steps_per_epoch;
    s.warmup_steps = (int64_t)t->warmup_epochs * steps_per_epoch;
    pmoe_lr_steps_parse(t->lr_steps, s.milestones, &s.milestone_count, NULL);
    return s;
}

double pmoe_lr_at(const pmoe_lr_schedule *s, int64_t step) {
    double lr = s->base;
    if (s->kind == PMOE_SCHEDULE_STEP) {
        for (int i = 0; i < s->milestone_count; i++)
            if (step >= s->milestones[i] * s->steps_per_epoch) lr *= s->gamma;
    } else if (s->kind == PMOE_SCHEDULE_COSINE) {
        const int64_t span = s->total_steps - s->warmup_steps;
        double u = span > 0 && step > s->warmup_steps
                       ? (double)(step - s->warmup_steps) / (double)span
                       : 0.0;
        if (u > 1.0) u = 1.0;
        lr = s->min + (s->base - s->min) * 0.5 * (1.0 + cos(3.14159265358979323846 * u));
    }
    if (step < s->warmup_steps) lr *= (double)(step + 1) / (double)s->warmup_steps;
    return lr;
}
