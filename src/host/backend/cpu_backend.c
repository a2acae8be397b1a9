/* cpu_backend.c: the CPU backend's memory, dense products, optimizer and
 * its table of ops.
 *
 * Memory is 64-byte aligned host memory counted in be->mem. Dense products go
 * to OpenBLAS; the elementwise loops run under OpenMP, each output element
 * written by one thread with a fixed summation order, so results do not
 * depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_fast.h"
#include "core/cores.h"
#include "backend/cpu_ops.h"
#include "core/host_memory.h"

/* Each GEMM is cut into blocks of GEMM_BLOCK rows (or columns, whichever
 * side of C is longer) and the blocks of all batch entries are shared among
 * OpenMP threads, with OpenBLAS itself kept to one thread. The cut does not
 * depend on the thread count, so neither do the results, and one thread pool
 * serves both the GEMMs and the loops (two pools fighting over two cores
 * made small steps four times slower). */
enum { GEMM_BLOCK = 64 };

void cpu_gemm(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
              int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
              int64_t batch) {
    const int split_rows = m >= n;
    const int64_t extent = split_rows ? m : n;
    const int64_t blocks = (extent + GEMM_BLOCK - 1) / GEMM_BLOCK;
    const int64_t tasks = batch * blocks;
    const double work = (double)m * (double)n * (double)k * (double)batch;
#pragma omp parallel for schedule(static) if (tasks > 1 && work > 2e5)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t i = task / blocks, start = (task % blocks) * GEMM_BLOCK;
        const int64_t len = extent - start < GEMM_BLOCK ? extent - start : GEMM_BLOCK;
        const float *ai = a + i * stride_a, *bi = b + i * stride_b;
        float *ci = c + i * stride_c;
        int64_t bm = m, bn = n;
        if (split_rows) { /* rows start.. of op(A) and of C */
            ai += trans_a ? start : start * lda;
            ci += start * ldc;
            bm = len;
        } else { /* columns start.. of op(B) and of C */
            bi += trans_b ? start * ldb : start;
            ci += start;
            bn = len;
        }
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (blasint)bm, (blasint)bn, (blasint)k,
                    alpha, ai, (blasint)lda, bi, (blasint)ldb, beta, ci, (blasint)ldc);
    }
}

void cpu_sgd_update(pmoe_backend *be, int64_t count, float *param, const float *grad,
                    float *velocity, float lr, float momentum, float weight_decay,
                    const int32_t *skip) {
    if (skip && *skip) return; /* the non-finite guard's verdict */
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) {
        float step = grad[i] + weight_decay * param[i];
        if (velocity) {
            velocity[i] = momentum * velocity[i] + step;
            step = velocity[i];
        }
        param[i] -= lr * step;
    }
}

static const pmoe_ops CPU_OPS = {
    .gemm = cpu_gemm,
    .gemm_float32 = cpu_gemm,
    .patch_extract_forward = cpu_patch_extract_forward,
    .patch_extract_backward = cpu_patch_extract_backward,
    .gate_topl_forward = cpu_gate_topl_forward,
    .gate_topl_backward = cpu_gate_topl_backward,
    .dispatch_gather = cpu_dispatch_gather,
    .dispatch_gather_backward = cpu_dispatch_gather_backward,
    .expert_forward = cpu_expert_forward,
    .expert_backward = cpu_expert_backward,
    .patch_extract_route = cpu_patch_extract_route,
    .expert_forward_gathered = cpu_expert_forward_gathered,
    .expert_backward_gathered = cpu_expert_backward_gathered,
    .combine_forward = cpu_combine_forward,
    .combine_backward = cpu_combine_backward,
    .loss_forward_backward = cpu_loss_forward_backward,
    .router_linear_loss = cpu_router_linear_loss,
    .sgd_update = cpu_sgd_update,
    .nonfinite_guard = cpu_nonfinite_guard,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .batchnorm_forward_train = cpu_batchnorm_forward_train,
    .batchnorm_forward_eval = cpu_batchnorm_forward_eval,
    .batchnorm_backward = cpu_batchnorm_backward,
    .batchnorm_moments = cpu_batchnorm_moments,
    .batchnorm_backward_input = cpu_batchnorm_backward_input,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .axpby = cpu_axpby,
    .avgpool_forward = cpu_avgpool_forward,
    .avgpool_backward = cpu_avgpool_backward,
    .channel_bias_forward = cpu_channel_bias_forward,
    .channel_bias_backward = cpu_channel_bias_backward,
    .moe_scatter_forward = cpu_moe_scatter_forward,
    .moe_scatter_backward = cpu_moe_scatter_backward,
    .moe_position_weights = cpu_moe_position_weights,
    .moe_position_weights_backward = cpu_moe_position_weights_backward,
    .patch_scale_forward = cpu_patch_scale_forward,
    .patch_scale_backward = cpu_patch_scale_backward,
    .channel_copy = cpu_channel_copy,
};

/* Refuses before allocating what the host does not have: Linux would grant
 * it and kill the process without a word when the pages are touched. */
static pmoe_status cpu_alloc(pmoe_backend *be, size_t bytes, void **out, pmoe_error *err) {
    size_t rounded = (bytes + 63) / 64 * 64;
    pmoe_status s = pmoe_mem_check(&be->mem, rounded, err);
    if (s) return s;
    void *p = rounded ? aligned_alloc(64, rounded) : NULL;
    if (rounded && !p)
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "out of host memory: %zu bytes asked (%.1f MiB already in use); "
                         "reduce train.batch or the model size",
                         bytes, (double)be->mem.current_bytes / 1048576.0);
    pmoe_mem_note_alloc(&be->mem, bytes);
    *out = p;
    return PMOE_OK;
}

static void cpu_release(pmoe_backend *be, void *ptr, size_t bytes) {
    if (!ptr) return;
    free(ptr);
    pmoe_mem_note_free(&be->mem, bytes);
}

static pmoe_status cpu_copy(pmoe_backend *be, void *dst, const void *src, size_t bytes,
                            pmoe_error *err) {
    if (bytes) memcpy(dst, src, bytes);
    return PMOE_OK;
}

static void cpu_fill(pmoe_backend *be, float *dst, float value, int64_t count) {
    if (count <= 0) return;
    if (value == 0.0f && !signbit(value)) { /* +0.0f is all zero bits */
        memset(dst, 0, (size_t)count * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < count; i++) dst[i] = value;
}

static pmoe_status cpu_synchronize(pmoe_backend *be, pmoe_error *err) { return PMOE_OK; }

static void cpu_destroy(pmoe_backend *be) {
    cpu_impl *impl = be->impl;
    if (impl) cpu_fast_close(impl);
    if (impl) cpu_precision_close(impl);
    free(impl);
    free(be);
}

pmoe_status pmoe_backend_set_cpu_kernels(pmoe_backend *be, pmoe_cpu_kernels kernels,
                                         pmoe_error *err) {
    if (be->destroy != cpu_destroy) return PMOE_OK; /* not a CPU backend */
    cpu_impl *impl = be->impl;
    if (kernels == PMOE_CPU_KERNELS_REFERENCE) {
        cpu_fast_close(impl);
        impl->ops = CPU_OPS;
        be->name = "cpu";
        cpu_precision_apply(be);
        return PMOE_OK;
    }
    if (impl->fast) return PMOE_OK;
    pmoe_status s = cpu_fast_open(impl, err);
    if (!s) be->name = "cpu-fast";
    cpu_precision_apply(be);
    return s;
}

pmoe_status pmoe_cpu_backend_create(int threads, pmoe_backend **out, pmoe_error *err) {
    pmoe_backend *be = calloc(1, sizeof *be);
    cpu_impl *impl = calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the CPU backend");
    }
    impl->ops = CPU_OPS;
    /* threads <= 0: the cores this process may use (affinity, a cgroup
     * quota) unless the user chose with OMP_NUM_THREADS */
    if (threads <= 0 && !getenv("OMP_NUM_THREADS")) threads = pmoe_cores_available();
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1); /* parallelism comes from cpu_gemm's blocks */
    be->name = "cpu";
    be->impl = impl;
    be->ops = &impl->ops; /* the reference until pmoe_backend_set_cpu_kernels says fast */
    be->alloc = cpu_alloc;
    be->release = cpu_release;
    be->copy_in = cpu_copy;
    be->copy_out = cpu_copy;
    be->fill = cpu_fill;
    be->synchronize = cpu_synchronize;
    be->destroy = cpu_destroy;
    be->host_memory = 1;
    be->set_precision = cpu_set_precision;
    const int64_t available = pmoe_host_memory_available(
        omp_get_max_threads(), be->mem.limit_source, sizeof be->mem.limit_source);
    be->mem.limit_bytes = available == 0 ? 1 : available; /* -1: unknown, no limit */
    *out = be;
    return PMOE_OK;
}
