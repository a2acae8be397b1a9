/* saved_model.c: a model read back from a checkpoint, for pmoe eval and
 * pmoe route (run_open_saved), and the config a checkpoint was trained with
 * (pmoe_checkpoint_load_config, for resuming it). */
#include <stdio.h>
#include <string.h>

#include "train/run.h"

pmoe_status pmoe_checkpoint_load_config(const char *path, pmoe_config *cfg, pmoe_error *err) {
    pmoe_st_file file;
    pmoe_status s = pmoe_checkpoint_open(path, &file, err);
    if (s) return s;
    s = pmoe_checkpoint_config(&file, cfg, err);
    if (!s) { /* a resumed run writes beside its checkpoint, never into the folder it came from */
        char folder[sizeof file.origin];
        snprintf(folder, sizeof folder, "%s", file.origin);
        char *slash = strrchr(folder, '/');
        if (!slash) snprintf(folder, sizeof folder, ".");
        else *(slash == folder ? slash + 1 : slash) = '\0';
        s = pmoe_config_set_value(cfg, "train.checkpoint_dir", folder, err);
    }
    pmoe_safetensors_free(&file);
    return s;
}

/* A run whose model holds the weights saved at checkpoint. */
pmoe_status run_open_saved(run *r, const pmoe_config *cfg, const char *checkpoint, char *origin,
                           size_t origin_size, int64_t *step, pmoe_error *err) {
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    pmoe_st_file file;
    memset(&file, 0, sizeof file);
    pmoe_train_position pos;
    pmoe_status s = run_open(r, err);
    if (s) return s;
    s = pmoe_checkpoint_open(checkpoint, &file, err);
    if (!s) s = pmoe_checkpoint_restore(&file, r->model, &pos, err);
    if (!s) {
        run_adopt_saved_input(r, &file);
        snprintf(origin, origin_size, "%s", file.origin);
        *step = run_global_step(&pos);
    }
    pmoe_safetensors_free(&file);
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}
