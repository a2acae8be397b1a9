/* cuda_backend.h: the CUDA backend's entry points, with no CUDA types.
 *
 * backend.c picks a backend through these; a build without nvcc links
 * cuda_stub.c instead of the CUDA sources, so callers never need #ifdef:
 * the stub answers "no device" and fails creation with a message. One
 * binary thus serves machines with and without a GPU: "auto" asks
 * pmoe_cuda_device_count() at run time and falls back to the CPU when it
 * answers 0, keeping its reason for the run's banner. */
#ifndef PMOE_CUDA_BACKEND_H
#define PMOE_CUDA_BACKEND_H

#include <stddef.h>

#include "backend/backend.h"

/* 1 when this build holds the CUDA backend, 0 for the stub. */
int pmoe_cuda_built(void);

/* How many CUDA devices answer (0 when none, or no driver, or no CUDA in
 * this build); when 0, why (may be NULL) gets the reason in one line, in
 * the driver's words: no driver installed, a driver too old for this
 * build's CUDA, a failing driver (its error name and string), no GPU.
 * Never prints and never fails. */
int pmoe_cuda_device_count(char *why, size_t why_size);

/* A backend on CUDA device `device` (its name: "cuda:N (GPU name)"). Fails
 * with PMOE_ERR_UNSUPPORTED when that device does not exist. */
pmoe_status pmoe_cuda_backend_create(int device, pmoe_backend **out, pmoe_error *err);

/* The backend's CUDA stream (a cudaStream_t), for callers that time or
 * launch their own work on it, such as the benchmarks; NULL for a backend
 * that is not CUDA. */
void *pmoe_cuda_backend_stream(pmoe_backend *be);

/* pmoe_backend_is_cuda(be), in backend.h, says whether be is one of these. */

#endif
