/* cpu_dot.c: see cpu_dot.h. The kernel is compiled for AVX-512F on x86-64
 * with GCC or Clang (a function attribute, so the rest of the build keeps
 * its baseline ISA) and chosen at run time from the CPU's features. */
#include "backend/cpu_dot.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_BUILD 1
#define AVX512 __attribute__((target("avx512f")))

/* One step of 16 columns: 4 row loads, U weight loads, 4 U FMAs. */
#define DOT_STEP(load)                                                                             \
    do {                                                                                           \
        const __m512 v0 = load(x[0] + c), v1 = load(x[1] + c), v2 = load(x[2] + c),                \
                     v3 = load(x[3] + c);                                                          \
        for (int u = 0; u < U; u++) {                                                              \
            const __m512 wv = load(w + (int64_t)u * d + c);                                        \
            a0[u] = _mm512_fmadd_ps(v0, wv, a0[u]);                                                \
            a1[u] = _mm512_fmadd_ps(v1, wv, a1[u]);                                                \
            a2[u] = _mm512_fmadd_ps(v2, wv, a2[u]);                                                \
            a3[u] = _mm512_fmadd_ps(v3, wv, a3[u]);                                                \
        }                                                                                          \
    } while (0)

/* tile[q * 6 + u] = <x_q, w_u> for 4 rows and U units. Written so that, with
 * U a constant, the 4 U accumulators stay in registers: unmasked main loop,
 * one masked tail. */
AVX512 __attribute__((always_inline)) static inline void dot4(const float *const *x, const float *w,
                                                              int d, int U, float *tile) {
    __m512 a0[6], a1[6], a2[6], a3[6];
    for (int u = 0; u < U; u++) a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
    int c = 0;
#define LOAD_ALL(p) _mm512_loadu_ps(p)
    for (; c + 16 <= d; c += 16) DOT_STEP(LOAD_ALL);
    if (c < d) {
        const __mmask16 m = (__mmask16)((1u << (d - c)) - 1);
#define LOAD_TAIL(p) _mm512_maskz_loadu_ps(m, p)
        DOT_STEP(LOAD_TAIL);
    }
    for (int u = 0; u < U; u++) {
        tile[u] = _mm512_reduce_add_ps(a0[u]);
        tile[6 + u] = _mm512_reduce_add_ps(a1[u]);
        tile[12 + u] = _mm512_reduce_add_ps(a2[u]);
        tile[18 + u] = _mm512_reduce_add_ps(a3[u]);
    }
#undef LOAD_ALL
#undef LOAD_TAIL
}
#undef DOT_STEP

AVX512 static void dot4_units(const float *const *x, const float *w, int d, int U, float *tile) {
    switch (U) {
    case 1: dot4(x, w, d, 1, tile); break;
    case 2: dot4(x, w, d, 2, tile); break;
    case 3: dot4(x, w, d, 3, tile); break;
    case 4: dot4(x, w, d, 4, tile); break;
    case 5: dot4(x, w, d, 5, tile); break;
    default: dot4(x, w, d, 6, tile); break;
    }
}

void cpu_dot_rows4(const float *const x[4], int rows, const float *w, int units, int d, float *out,
                   int64_t ldo) {
    const float *xs[4];
    for (int q = 0; q < 4; q++)
        xs[q] = x[q < rows ? q : 0]; /* a short group repeats its first row */
    float tile[4 * 6];
    /* passes of at most 6 units, as even as they go (8 = 4 + 4, not 6 + 2:
     * a thin pass has too few FMAs per load) */
    const int passes = (units + 5) / 6, per_pass = (units + passes - 1) / passes;
    for (int u0 = 0; u0 < units; u0 += per_pass) {
        const int U = units - u0 < per_pass ? units - u0 : per_pass;
        dot4_units(xs, w + (int64_t)u0 * d, d, U, tile);
        for (int q = 0; q < rows; q++)
            for (int u = 0; u < U; u++) out[q * ldo + u0 + u] = tile[q * 6 + u];
    }
}
#else
#define HAVE_AVX512_BUILD 0

void cpu_dot_rows4(const float *const x[4], int rows, const float *w, int units, int d, float *out,
                   int64_t ldo) {
    for (int q = 0; q < rows; q++)
        for (int u = 0; u < units; u++) {
            float acc = 0.0f;
            for (int c = 0; c < d; c++) acc += x[q][c] * w[(int64_t)u * d + c];
            out[q * ldo + u] = acc;
        }
}
#endif

/* -1: not decided yet; then whether the AVX-512 kernels run. */
static int use_simd = -1;

int cpu_simd_kernels(int on) {
    if (on < 0 && use_simd >= 0) return use_simd;
#if HAVE_AVX512_BUILD
    __builtin_cpu_init();
    use_simd = on != 0 && __builtin_cpu_supports("avx512f");
#else
    (void)on;
    use_simd = 0;
#endif
    return use_simd;
}
