/* compare_checkpoints.c: are two pmoe checkpoints the same model?
 *
 *   compare_checkpoints A.safetensors B.safetensors [TOLERANCE]
 *
 * Every tensor of A must be in B with the same shape (and the other way
 * round). With TOLERANCE 0 (the default) the values must be equal bit for
 * bit; otherwise each element within TOLERANCE relative to the tensor's
 * largest magnitude. Prints the largest difference found, absolute and
 * relative, and which tensor holds it; exits 0 when the files agree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: compare_checkpoints A B [TOLERANCE]\n");
        return 2;
    }
    const double tolerance = argc > 3 ? atof(argv[3]) : 0.0;
    pmoe_st_file a, b;
    pmoe_error err = {PMOE_OK, ""};
    if (pmoe_safetensors_read(argv[1], &a, &err) || pmoe_safetensors_read(argv[2], &b, &err)) {
        fprintf(stderr, "compare_checkpoints: %s\n", err.message);
        return 2;
    }
    int bad = 0;
    double worst_rel = 0.0, worst_abs = 0.0;
    const char *worst = "";
    int64_t differing = 0, compared = 0;
    if (a.tensor_count != b.tensor_count) {
        fprintf(stderr, "tensor counts differ: %d and %d\n", a.tensor_count, b.tensor_count);
        bad = 1;
    }
    for (int t = 0; t < a.tensor_count; t++) {
        const pmoe_st_tensor *x = &a.tensors[t], *y = pmoe_safetensors_find(&b, x->name);
        if (!y || y->count != x->count || y->ndim != x->ndim) {
            fprintf(stderr, "%s: missing or of another shape in %s\n", x->name, argv[2]);
            bad = 1;
            continue;
        }
        double scale = 0.0;
        for (int64_t i = 0; i < x->count; i++)
            if (fabs(x->data[i]) > scale) scale = fabs(x->data[i]);
        for (int64_t i = 0; i < x->count; i++) {
            compared++;
            const double d = fabs((double)x->data[i] - (double)y->data[i]);
            const int same_bits = memcmp(&x->data[i], &y->data[i], sizeof(float)) == 0;
            if (!same_bits) differing++;
            const double rel = scale > 0.0 ? d / scale : d;
            if (rel > worst_rel || (!same_bits && worst_rel == 0.0 && !worst[0])) {
                worst_rel = rel;
                worst_abs = d;
                worst = x->name;
            }
            if (tolerance == 0.0 ? !same_bits : !(rel <= tolerance)) bad = 1;
        }
    }
    printf("compared %lld values in %d tensors: %lld differ in bits; largest difference %.3g "
           "(%.3g of the tensor's largest magnitude) in %s\n",
           (long long)compared, a.tensor_count, (long long)differing, worst_abs, worst_rel,
           worst[0] ? worst : "-");
    pmoe_safetensors_free(&a);
    pmoe_safetensors_free(&b);
    return bad;
}
