/* tensor.c: shape printing and allocation accounting (see tensor.h). */
#include "core/tensor.h"

#include <stdio.h>

void pmoe_tensor_shape_string(const pmoe_tensor *t, char *out, size_t out_size) {
    size_t used = 0;
    used += (size_t)snprintf(out, out_size, "[");
    for (int i = 0; i < t->ndim && used < out_size; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%s%lld", i ? ", " : "",
                                 (long long)t->shape[i]);
    if (used < out_size) snprintf(out + used, out_size - used, "]");
}

void pmoe_mem_note_alloc(pmoe_mem_stats *m, size_t bytes) {
    m->current_bytes += (int64_t)bytes;
    m->allocations++;
    if (m->current_bytes > m->peak_bytes) m->peak_bytes = m->current_bytes;
}

void pmoe_mem_note_free(pmoe_mem_stats *m, size_t bytes) {
    m->current_bytes -= (int64_t)bytes;
    m->allocations--;
}

pmoe_status pmoe_mem_check_for(const pmoe_mem_stats *m, size_t bytes, const char *what,
                               pmoe_error *err) {
    const int64_t taken = m->current_bytes + m->held_bytes;
    if (m->limit_bytes <= 0 || (int64_t)bytes <= m->limit_bytes - taken) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_OOM,
                     "out of host memory: %zu bytes asked%s%s with %.1f MiB in use, of %.1f MiB "
                     "available (%s); reduce train.batch or the model size",
                     bytes, what ? " for " : "", what ? what : "", (double)taken / 1048576.0,
                     (double)m->limit_bytes / 1048576.0, m->limit_source);
}

pmoe_status pmoe_mem_check(const pmoe_mem_stats *m, size_t bytes, pmoe_error *err) {
    return pmoe_mem_check_for(m, bytes, NULL, err);
}
