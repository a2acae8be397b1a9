/* cpu_fast.h: the CPU backend's fast path (train.cpu_kernels = fast).
 *
 * The fast path is the reference table (cpu_ops.h) with the deep models'
 * heavy ops replaced: convolution, batch norm and the pMoE layer's experts
 * run on oneDNN (backend/fast/cpu_fast.c), each shape's primitives made once
 * and kept for the backend's life. A build without oneDNN links
 * backend/fast/cpu_fast_stub.c, whose open fails with a one-line cause. */
#ifndef PMOE_BACKEND_CPU_FAST_H
#define PMOE_BACKEND_CPU_FAST_H

#include "backend/backend.h"

/* A CPU backend's impl: the table it runs and the fast path's state. */
typedef struct cpu_impl {
    pmoe_ops ops;
    struct cpu_fast *fast; /* NULL until the fast path is opened */
    /* train.precision (cpu_precision.c): with tf32 or bf16, be->ops is
     * `rounded`, which wraps `ops`' GEMM and convolution ops; the rounded
     * copies of their inputs live in scratch (grown, never shrunk). */
    int precision;
    pmoe_ops rounded;
    float *scratch;
    int64_t scratch_count;
} cpu_impl;

/* Points be->ops at the table train.precision asks for, (re)built from
 * impl->ops; called whenever either changes. Frees the scratch on close. */
void cpu_precision_apply(pmoe_backend *be);
void cpu_precision_close(cpu_impl *impl);
pmoe_status cpu_set_precision(pmoe_backend *be, int precision, pmoe_error *err);

/* Opens the fast path's state in impl->fast and overrides the fast ops in
 * impl->ops (which holds the reference table). */
pmoe_status cpu_fast_open(cpu_impl *impl, pmoe_error *err);
void cpu_fast_close(cpu_impl *impl);

#endif
