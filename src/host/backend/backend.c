/* backend.c: choosing a backend for train.device, and tensor allocation.
 *
 * Until a CUDA backend registers, "auto" means the CPU, and an explicit
 * "cuda" request fails with a message rather than silently running on the
 * CPU. */
#include <string.h>

#include "backend/backend.h"

pmoe_status pmoe_backend_create(const char *device, int threads, pmoe_backend **out,
                                pmoe_error *err) {
    if (strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0)
        return pmoe_cpu_backend_create(threads, out, err);
    if (strcmp(device, "cuda") == 0 || strncmp(device, "cuda:", 5) == 0)
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "train.device = %s: this build has no CUDA backend; use cpu or auto",
                         device);
    return pmoe_fail(err, PMOE_ERR_CONFIG,
                     "train.device: '%s' is not one of auto | cpu | cuda | cuda:N", device);
}

void pmoe_backend_destroy(pmoe_backend *be) {
    if (be) be->destroy(be);
}

pmoe_status pmoe_tensor_alloc(pmoe_backend *be, pmoe_tensor *t, int ndim, const int64_t *shape,
                              pmoe_error *err) {
    memset(t, 0, sizeof *t);
    if (ndim < 1 || ndim > PMOE_MAX_DIMS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "tensor with %d dimensions", ndim);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    void *p = NULL;
    pmoe_status s = be->alloc(be, (size_t)pmoe_tensor_numel(t) * sizeof(float), &p, err);
    t->data = p;
    return s;
}

void pmoe_tensor_release(pmoe_backend *be, pmoe_tensor *t) {
    if (t->data) be->release(be, t->data, (size_t)pmoe_tensor_numel(t) * sizeof(float));
    t->data = NULL;
}
