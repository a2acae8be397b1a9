/* gate_topl.cu: the fused router. One block per sample does, in one launch,
 * the scores of its n patches against the k routers, the top-l of every
 * expert, and the gate values; a second kernel turns dgate into dscores.
 *
 * Scores: a warp takes 4 patches x 8 routers at a time, so each patch value
 * it loads feeds 8 products and each router value 4, and the 32 partial
 * sums are reduced across the warp by a transpose-reduce (31 shuffles, lane
 * L ends with sum L). Each patch row is read from memory once per sample
 * (when k <= 8; a further pass per 8 routers, from cache, beyond that).
 *
 * Top-l: the rank of candidate j is the number of patches that beat it,
 * where i beats j when s_i > s_j, or s_i == s_j and i < j; j is picked when
 * rank < l and lands in slot rank. That is exactly the CPU's order (best
 * first, ties to the lower index), needs no sorting network and no shared
 * state, and works for any n and l <= n at O(n^2 / 32) comparisons per
 * expert per lane. NaN ranks below every number (ties by index among NaN),
 * so the ranks always form a permutation and every slot is written; the CPU
 * twin does not define an order for NaN.
 *
 * The block reads back the scores it wrote to global memory after a
 * __syncthreads(), which makes them visible within the block. */
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

enum { PATCH_GROUP = 4, EXPERT_GROUP = 8, MAX_WARPS = 16 };

/* One step of the transpose-reduce: a lane keeps the half of its 2*OFFSET
 * entries that its lane bit OFFSET selects and adds the partner's copy of
 * that half. OFFSET is a template argument so that every index is a
 * constant and acc stays in registers. */
template <int OFFSET>
static __device__ __forceinline__ void transpose_step(float (&acc)[32], int lane) {
    const bool upper = (lane & OFFSET) != 0;
#pragma unroll
    for (int i = 0; i < OFFSET; i++) {
        const float send = upper ? acc[i] : acc[i + OFFSET];
        const float keep = upper ? acc[i + OFFSET] : acc[i];
        acc[i] = keep + __shfl_xor_sync(PMOE_FULL_MASK, send, OFFSET);
    }
}

/* On entry each lane holds 32 partial sums; on return lane L holds the
 * warp-wide sum of entry L (31 shuffles instead of 32 x 5). */
static __device__ __forceinline__ float warp_transpose_sum32(float (&acc)[32], int lane) {
    transpose_step<16>(acc, lane);
    transpose_step<8>(acc, lane);
    transpose_step<4>(acc, lane);
    transpose_step<2>(acc, lane);
    transpose_step<1>(acc, lane);
    return acc[0];
}

/* 1 when score u of patch i beats score v of patch j (see the header). */
static __device__ __forceinline__ int beats(float u, int i, float v, int j) {
    const bool u_nan = u != u, v_nan = v != v;
    if (v_nan) return u_nan ? i < j : 1;
    return !u_nan && (u > v || (u == v && i < j));
}

static __global__ void __launch_bounds__(MAX_WARPS * 32)
    gate_topl_forward_kernel(int n, int d, int k, int l, int gate_mode,
                             const float *__restrict__ patches, const float *__restrict__ router_w,
                             float *scores, int32_t *selected, float *__restrict__ gate) {
    const int64_t b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float *x = patches + b * n * (int64_t)d;
    float *s = scores + b * n * (int64_t)k;

    /* Scores. Rows past n or k are clamped to row 0 so the inner loop has no
     * branch; their sums are computed and dropped. */
    const int patch_groups = (n + PATCH_GROUP - 1) / PATCH_GROUP;
    const int tasks = patch_groups * ((k + EXPERT_GROUP - 1) / EXPERT_GROUP);
    for (int task = warp; task < tasks; task += warps) {
        const int j0 = (task % patch_groups) * PATCH_GROUP;
        const int e0 = (task / patch_groups) * EXPERT_GROUP;
        const float *xr[PATCH_GROUP];
        const float *wr[EXPERT_GROUP];
#pragma unroll
        for (int p = 0; p < PATCH_GROUP; p++) xr[p] = x + (int64_t)(j0 + p < n ? j0 + p : 0) * d;
#pragma unroll
        for (int q = 0; q < EXPERT_GROUP; q++)
            wr[q] = router_w + (int64_t)(e0 + q < k ? e0 + q : 0) * d;
        float acc[32];
#pragma unroll
        for (int i = 0; i < 32; i++) acc[i] = 0.0f;
            /* Unrolled twice so each warp keeps 8 row loads in flight. */
#pragma unroll 2
        for (int i = lane; i < d; i += 32) {
            float xv[PATCH_GROUP], wv[EXPERT_GROUP];
#pragma unroll
            for (int p = 0; p < PATCH_GROUP; p++) xv[p] = xr[p][i];
#pragma unroll
            for (int q = 0; q < EXPERT_GROUP; q++) wv[q] = __ldg(wr[q] + i);
#pragma unroll
            for (int p = 0; p < PATCH_GROUP; p++)
#pragma unroll
                for (int q = 0; q < EXPERT_GROUP; q++) acc[p * EXPERT_GROUP + q] += xv[p] * wv[q];
        }
        const float total = warp_transpose_sum32(acc, lane);
        const int p = lane / EXPERT_GROUP, q = lane % EXPERT_GROUP;
        if (j0 + p < n && e0 + q < k) s[(int64_t)(j0 + p) * k + e0 + q] = total;
    }
    __syncthreads();

    /* Top-l and gate values, one warp per expert. */
    for (int e = warp; e < k; e += warps) {
        const float *column = s + e; /* score of patch j at column[j k] */
        int32_t *picks = selected + (b * k + e) * (int64_t)l;
        float *g = gate + (b * k + e) * (int64_t)l;
        for (int j = lane; j < n; j += 32) {
            const float v = column[(int64_t)j * k];
            int rank = 0;
            for (int i = 0; i < n; i++) rank += beats(column[(int64_t)i * k], i, v, j);
            if (rank < l) picks[rank] = j;
        }
        __syncwarp(); /* the picks of every lane are visible to all */
        if (gate_mode == PMOE_KERNEL_GATE_ONES) {
            for (int t = lane; t < l; t += 32) g[t] = 1.0f;
            continue;
        }
        const float top = column[(int64_t)picks[0] * k]; /* the best score */
        float denom = 0.0f;
        if (gate_mode == PMOE_KERNEL_GATE_RENORM)
            for (int t = lane; t < l; t += 32) denom += expf(column[(int64_t)picks[t] * k] - top);
        else
            for (int j = lane; j < n; j += 32) denom += expf(column[(int64_t)j * k] - top);
        denom = warp_sum(denom);
        for (int t = lane; t < l; t += 32) g[t] = expf(column[(int64_t)picks[t] * k] - top) / denom;
    }
}

/* dscores of one sample, one warp per expert. Renorm: G_t (dG_t - dot) at
 * the picks, 0 elsewhere; softmax over all n: -P_j dot everywhere plus
 * G_t dG_t at the picks; ones: 0. dot = sum_t G_t dG_t. The column is
 * written whole first and the picks adjusted after a __syncwarp, so every
 * element is written and no two lanes write one element at once. */
static __global__ void gate_topl_backward_kernel(int n, int k, int l, int gate_mode,
                                                 const float *__restrict__ scores,
                                                 const int32_t *__restrict__ selected,
                                                 const float *__restrict__ gate,
                                                 const float *__restrict__ dgate, float *dscores) {
    const int64_t b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int e = warp; e < k; e += warps) {
        const float *column = scores + b * n * (int64_t)k + e;
        float *dcolumn = dscores + b * n * (int64_t)k + e;
        const int64_t slot = (b * k + e) * (int64_t)l;
        if (gate_mode == PMOE_KERNEL_GATE_ONES) {
            for (int j = lane; j < n; j += 32) dcolumn[(int64_t)j * k] = 0.0f;
            continue;
        }
        float dot = 0.0f;
        for (int t = lane; t < l; t += 32) dot += gate[slot + t] * dgate[slot + t];
        dot = warp_sum(dot);
        if (gate_mode == PMOE_KERNEL_GATE_RENORM) {
            for (int j = lane; j < n; j += 32) dcolumn[(int64_t)j * k] = 0.0f;
            __syncwarp();
            for (int t = lane; t < l; t += 32) {
                const int32_t j = selected[slot + t];
                if ((unsigned)j < (unsigned)n)
                    dcolumn[(int64_t)j * k] = gate[slot + t] * (dgate[slot + t] - dot);
            }
        } else {
            const int32_t best = selected[slot];
            const float top = (unsigned)best < (unsigned)n ? column[(int64_t)best * k] : 0.0f;
            float denom = 0.0f;
            for (int j = lane; j < n; j += 32) denom += expf(column[(int64_t)j * k] - top);
            denom = warp_sum(denom);
            for (int j = lane; j < n; j += 32)
                dcolumn[(int64_t)j * k] = -(expf(column[(int64_t)j * k] - top) / denom) * dot;
            __syncwarp();
            for (int t = lane; t < l; t += 32) {
                const int32_t j = selected[slot + t];
                if ((unsigned)j < (unsigned)n)
                    dcolumn[(int64_t)j * k] += gate[slot + t] * dgate[slot + t];
            }
        }
    }
}

static int check_route(const char *op, int64_t batch, int n, int k, int l, int gate_mode) {
    if (batch < 0 || batch > 0x7fffffff || n < 1 || k < 1 || l < 1 || l > n ||
        gate_mode < PMOE_KERNEL_GATE_RENORM || gate_mode > PMOE_KERNEL_GATE_ONES)
        return argument_error("%s: bad shape B=%lld n=%d k=%d l=%d gate=%d", op, (long long)batch,
                              n, k, l, gate_mode);
    return 0;
}

extern "C" int PMOE_KERNEL(gate_topl_forward)(int64_t batch, int patches, int dim, int experts,
                                              int topl, int gate_mode, const float *patch_data,
                                              const float *router_w, float *scores,
                                              int32_t *selected, float *gate, void *stream) {
    int rc = check_route("gate_topl_forward", batch, patches, experts, topl, gate_mode);
    if (!rc && dim < 1) rc = argument_error("gate_topl_forward: d = %d", dim);
    if (rc || !batch) return rc;
    const int tasks = ((patches + PATCH_GROUP - 1) / PATCH_GROUP) *
                      ((experts + EXPERT_GROUP - 1) / EXPERT_GROUP);
    int warps = tasks > experts ? tasks : experts;
    warps = warps < 4 ? 4 : warps > MAX_WARPS ? MAX_WARPS : warps;
    PMOE_LAUNCH(gate_topl_forward_kernel, dim3((unsigned)batch), dim3(32 * warps), 0, stream,
                patches, dim, experts, topl, gate_mode, patch_data, router_w, scores, selected,
                gate);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(gate_topl_backward_scores)(int64_t batch, int patches, int experts,
                                                      int topl, int gate_mode, const float *scores,
                                                      const int32_t *selected, const float *gate,
                                                      const float *dgate, float *dscores,
                                                      void *stream) {
    int rc = check_route("gate_topl_backward", batch, patches, experts, topl, gate_mode);
    if (rc || !batch) return rc;
    const int warps = experts < 4 ? experts : 4;
    PMOE_LAUNCH(gate_topl_backward_kernel, dim3((unsigned)batch), dim3(32 * warps), 0, stream,
                patches, experts, topl, gate_mode, scores, selected, gate, dgate, dscores);
    return PMOE_LAUNCH_STATUS();
}
