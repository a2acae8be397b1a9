/* float_round.h: float32 rounded to TF32 (10 mantissa bits) or bfloat16
 * (7 mantissa bits), kept in a float. The one rounding function of
 * train.precision: the CPU backend, the CUDA kernel that rounds conv and
 * GEMM inputs, and the test stand-in of cuBLAS / cuDNN all call these, so
 * the CPU and the CUDA backend round the same inputs to the same bits.
 *
 * Round to nearest, ties to even, on the bit pattern: add half of the
 * dropped part's unit minus one, plus the lowest kept bit (so an exact tie
 * goes to the even neighbour), then clear the dropped bits. A carry out of
 * the mantissa moves the exponent up, which is the right answer (and gives
 * infinity past the largest finite value, as IEEE rounding does).
 * Subnormals round the same way (their mantissa is the same bit field);
 * infinities are unchanged; a NaN stays a NaN (quietened, so the clearing
 * cannot turn it into an infinity). Plain C and CUDA alike: no intrinsics. */
#ifndef PMOE_FLOAT_ROUND_H
#define PMOE_FLOAT_ROUND_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define PMOE_ROUND_FN static __host__ __device__ __forceinline__
#else
#define PMOE_ROUND_FN static inline
#endif

/* Keeps the top (23 - dropped) mantissa bits of x, rounding to nearest even. */
PMOE_ROUND_FN float pmoe_round_mantissa(float x, int dropped) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) { /* infinity or NaN */
        if (u & 0x007fffffu) u |= 0x00400000u;
        memcpy(&x, &u, sizeof u);
        return x;
    }
    const uint32_t half = (1u << (dropped - 1)) - 1u, lowest_kept = (u >> dropped) & 1u;
    u += half + lowest_kept;
    u &= ~((1u << dropped) - 1u);
    memcpy(&x, &u, sizeof u);
    return x;
}

/* TF32: 1 sign, 8 exponent, 10 mantissa bits (what tensor cores read of a float). */
PMOE_ROUND_FN float pmoe_round_tf32(float x) { return pmoe_round_mantissa(x, 13); }

/* bfloat16: 1 sign, 8 exponent, 7 mantissa bits. */
PMOE_ROUND_FN float pmoe_round_bf16(float x) { return pmoe_round_mantissa(x, 16); }

/* The precisions of train.precision, numbered as pmoe_precision (config.h). */
enum { PMOE_ROUND_NONE = 0, PMOE_ROUND_TF32 = 1, PMOE_ROUND_BF16 = 2 };

/* x rounded as `precision` (PMOE_ROUND_*) asks. */
PMOE_ROUND_FN float pmoe_round_as(float x, int precision) {
    return precision == PMOE_ROUND_TF32   ? pmoe_round_tf32(x)
           : precision == PMOE_ROUND_BF16 ? pmoe_round_bf16(x)
                                          : x;
}

#endif
