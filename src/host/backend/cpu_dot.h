/* cpu_dot.h: dot products of a few rows against a few unit weights, the
 * inner kernel of the CPU backend's thin products: the fused experts'
 * forward (h = m / k units, 5 on the mosaic) and the router's scores (k
 * units). OpenBLAS vectorises such thin products over rows and broadcasts
 * the few columns, 5 FMAs per load; on CPUs with AVX-512 these kernels
 * vectorise along d instead, 4 rows by up to 6 units per pass, 20 or more
 * FMAs per 9 loads. Each dot product runs in an order fixed by d alone. */
#ifndef PMOE_BACKEND_CPU_DOT_H
#define PMOE_BACKEND_CPU_DOT_H

#include <stdint.h>

/* Whether the AVX-512 kernels run: on = 1 asks for them (granted only where
 * the CPU has AVX-512F), 0 forbids them, -1 only asks. Returns the setting
 * in force; the default is on. Ops that use them have a portable path
 * (OpenBLAS) for CPUs without, which tests reach by switching them off. */
int cpu_simd_kernels(int on);

/* out[q * ldo + u] = <x[q], w + u d> for q < rows (1..4) and u < units, each
 * a sum over d in a fixed order; only for cpu_simd_kernels(-1) == 1. */
void cpu_dot_rows4(const float *const x[4], int rows, const float *w, int units, int d, float *out,
                   int64_t ldo);

#endif
