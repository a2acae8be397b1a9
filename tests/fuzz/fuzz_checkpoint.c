/* fuzz_checkpoint.c: libFuzzer target for what a checkpoint's metadata
 * says about its run (train/position.c) and the rules a resume applies to
 * it (train/resume.c), on a safetensors file of any content.
 *
 * A position that passes both must be one the training loop can run from:
 * the epoch within the phase's epochs (the main phase: one past, at batch
 * 0), the next batch within the epoch, the steps equal to the batches run,
 * no more correct answers than samples seen. The arithmetic is checked by
 * UBSan (no signed overflow) on crafted counts near INT64_MAX. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pmoe/train.h"
#include "train/position.h"
#include "train/resume.h"

enum { TRAIN_COUNT = 100 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pmoe_st_file f;
    pmoe_error err;
    if (pmoe_safetensors_parse(data, size, "fuzz.safetensors", &f, &err) != PMOE_OK) return 0;
    pmoe_train_position pos;
    pmoe_config now;
    if (pmoe_checkpoint_position(&f, &pos, &err) == PMOE_OK &&
        pmoe_checkpoint_config(&f, &now, &err) == PMOE_OK &&
        pmoe_resume_check_config(&f, &now, &err) == PMOE_OK &&
        pmoe_resume_check(&f, &now, TRAIN_COUNT, 1, &pos, &err) == PMOE_OK) {
        const pmoe_train_config *t = &now.train;
        const int router = pos.phase == PMOE_PHASE_ROUTER;
        const int64_t size_now = router && t->router_size > 0 && t->router_size < TRAIN_COUNT
                                     ? t->router_size
                                     : TRAIN_COUNT;
        const int64_t batch = router ? t->router_batch : t->batch;
        const int64_t batches = (size_now + batch - 1) / batch;
        const int epochs = router ? t->router_epochs : t->epochs;
        if (pos.epoch < 1 || pos.epoch > epochs || pos.next_batch > batches) abort();
        if (pos.step != (int64_t)(pos.epoch - 1) * batches + pos.next_batch) abort();
        if (pos.correct_sum > pos.next_batch * batch || pos.skipped > pos.step + pos.router_steps)
            abort();
    }
    pmoe_safetensors_free(&f);
    return 0;
}
