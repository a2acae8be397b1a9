/* test_precision.c: train.precision on the CPU backend (label cpu).
 *
 * The rounding function (kernels/float_round.h) against an independent
 * rounding in double arithmetic on a million random bit patterns and on the
 * cases that matter (ties to even, carries into the exponent, subnormals,
 * infinities, NaN); then the backend at tf32 and bf16: the rounded ops are
 * bit-identical to the fp32 op run on inputs rounded beforehand (so the
 * rounding is applied to exactly those inputs, and nothing else changes),
 * stay within the stated bound of fp32 (each product of two rounded inputs
 * is off by at most (2 u + u^2) |a b|, u = 2^-11 for TF32 and 2^-8 for
 * bfloat16, plus float32 summation error), the router's GEMM and the
 * router op stay float32, the fused ops that hide GEMMs leave the table,
 * and fp32 is the reference table unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_ops.h"
#include "kernels/float_round.h"
#include "test_util.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The nearest float with `kept` mantissa bits, ties to even, decided in
 * double: the two neighbours are x with the dropped bits cleared and the
 * next such value away from zero (past the largest finite: infinity, taken
 * as 2^128 for the distance, as IEEE rounding does). */
static float reference_round(float x, int kept) {
    if (!isfinite(x)) return x;
    const int dropped = 23 - kept;
    const uint32_t u = bits(x), step = 1u << dropped, lo_bits = u & ~(step - 1u);
    const uint32_t up_bits = lo_bits + step;
    const double lo = from_bits(lo_bits);
    const double up = (up_bits & 0x7fffffffu) == 0x7f800000u ? copysign(ldexp(1.0, 128), x)
                                                             : (double)from_bits(up_bits);
    const double dlo = fabs((double)x - lo), dup = fabs(up - (double)x);
    const int take_up = dup < dlo || (dup == dlo && ((lo_bits >> dropped) & 1u));
    return take_up ? from_bits(up_bits) : (float)lo;
}

static void test_rounding(void) {
    printf("rounding to TF32 and bfloat16\n");
    const float one = 1.0f;
    CHECK(pmoe_round_bf16(one) == one);
    CHECK(pmoe_round_bf16(1.0f + 0x1p-8f) == 1.0f);               /* a tie to even: down */
    CHECK(pmoe_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f); /* a tie to even: up */
    CHECK(pmoe_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    CHECK(pmoe_round_bf16(-(1.0f + 3 * 0x1p-8f)) == -(1.0f + 0x1p-6f));
    CHECK(pmoe_round_tf32(1.0f + 0x1p-11f) == 1.0f);
    CHECK(pmoe_round_tf32(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
    CHECK(pmoe_round_bf16(2.0f - 0x1p-9f) == 2.0f);        /* carry into the exponent */
    CHECK(isinf(pmoe_round_bf16(from_bits(0x7f7fffffu)))); /* past the largest: inf */
    CHECK(isinf(pmoe_round_bf16(INFINITY)) && isinf(pmoe_round_tf32(-INFINITY)));
    CHECK(isnan(pmoe_round_bf16(NAN)) && isnan(pmoe_round_tf32(NAN)));
    CHECK(isnan(pmoe_round_bf16(from_bits(0x7f800001u)))); /* a NaN whose payload rounds away */
    CHECK(bits(pmoe_round_bf16(from_bits(0x00008000u))) == 0u); /* subnormal tie: even */
    CHECK(bits(pmoe_round_bf16(from_bits(0x00018000u))) == 0x00020000u);
    CHECK(pmoe_round_as(0.1f, PMOE_ROUND_NONE) == 0.1f);
    uint64_t state = 0x9e3779b97f4a7c15ull;
    int64_t bad_bf16 = 0, bad_tf32 = 0, n = 1000000;
    for (int64_t i = 0; i < n; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const float x = from_bits((uint32_t)(state >> 32));
        if (!isfinite(x)) continue;
        bad_bf16 += bits(pmoe_round_bf16(x)) != bits(reference_round(x, 7));
        bad_tf32 += bits(pmoe_round_tf32(x)) != bits(reference_round(x, 10));
    }
    CHECK_MSG(bad_bf16 == 0 && bad_tf32 == 0, "%lld bf16 and %lld tf32 of %lld differ",
              (long long)bad_bf16, (long long)bad_tf32, (long long)n);
    printf("  %lld random floats: TF32 and bfloat16 equal to rounding in double, ties to even\n",
           (long long)n);
}

static void round_all(float *x, int64_t n, int precision) {
    for (int64_t i = 0; i < n; i++) x[i] = pmoe_round_as(x[i], precision);
}

/* got against the fp32 result: |got - want| <= (2u + u^2) sum |a b| + 2^-20 sum |a b|
 * per element (the second term: two float32 sums in different rounding). */
static void within_bound(const char *what, const float *got, const float *want, const double *mass,
                         int64_t n, double u) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double limit = (2 * u + u * u) * mass[i] + 0x1p-20 * mass[i] + 1e-30;
        const double share = fabs((double)got[i] - want[i]) / limit;
        if (!(share <= worst)) worst = share;
    }
    CHECK_MSG(worst <= 1.0, "%s: worst %.3f of the bound", what, worst);
    printf("  %s: worst %.3f of the bound (2u + u^2 + 2^-20) sum |a b|\n", what, worst);
}

static void test_gemm(pmoe_backend *be, int precision, double u, const char *name) {
    const int64_t m = 37, n = 29, k = 301, batch = 3;
    const float *a = frand(batch * m * k, 11, -1, 1), *b = frand(batch * n * k, 12, -1, 1);
    float *want = fbuf(batch * m * n), *got = fbuf(batch * m * n), *again = fbuf(batch * m * n);
    float *ar = fcopy(a, batch * m * k), *br = fcopy(b, batch * n * k);
    double *mass = dbuf(batch * m * n);
    round_all(ar, batch * m * k, precision);
    round_all(br, batch * n * k, precision);
    /* C = A B^T (B stored n x k): the experts' layout */
    cpu_gemm(NULL, 0, 1, m, n, k, 1.0f, a, k, m * k, b, k, n * k, 0.0f, want, n, m * n, batch);
    cpu_gemm(NULL, 0, 1, m, n, k, 1.0f, ar, k, m * k, br, k, n * k, 0.0f, again, n, m * n, batch);
    be->ops->gemm(be, 0, 1, m, n, k, 1.0f, a, k, m * k, b, k, n * k, 0.0f, got, n, m * n, batch);
    for (int64_t i = 0; i < batch; i++)
        for (int64_t r = 0; r < m; r++)
            for (int64_t c = 0; c < n; c++) {
                double s = 0.0;
                for (int64_t p = 0; p < k; p++)
                    s += fabs((double)a[(i * m + r) * k + p] * b[(i * n + c) * k + p]);
                mass[(i * m + r) * n + c] = s;
            }
    char what[96];
    snprintf(what, sizeof what, "%s gemm = fp32 gemm of rounded inputs", name);
    check_exact_f(what, got, again, batch * m * n);
    snprintf(what, sizeof what, "%s gemm against fp32", name);
    within_bound(what, got, want, mass, batch * m * n, u);
    be->ops->gemm_float32(be, 0, 1, m, n, k, 1.0f, a, k, m * k, b, k, n * k, 0.0f, got, n, m * n,
                          batch);
    snprintf(what, sizeof what, "%s gemm_float32 (the router's) = fp32", name);
    check_exact_f(what, got, want, batch * m * n);
}

static void test_conv(pmoe_backend *be, int precision, double u, const char *name) {
    const pmoe_conv_shape s = {4, 5, 9, 7, 6, 3, 3, 1, 1};
    const int64_t nx = 4 * 5 * 9 * 7, nw = 6 * 5 * 9, ny = 4 * 6 * 9 * 7;
    const float *x = frand(nx, 21, -1, 1), *w = frand(nw, 22, -1, 1), *dy = frand(ny, 23, -1, 1);
    float *xr = fcopy(x, nx), *wr = fcopy(w, nw), *dyr = fcopy(dy, ny);
    round_all(xr, nx, precision);
    round_all(wr, nw, precision);
    round_all(dyr, ny, precision);
    const float *bias = frand(6, 24, -1, 1);
    float *y = fbuf(ny), *y_again = fbuf(ny), *y_fp32 = fbuf(ny);
    be->ops->conv2d_forward(be, &s, x, w, bias, y);
    cpu_conv2d_forward(NULL, &s, xr, wr, bias, y_again);
    cpu_conv2d_forward(NULL, &s, x, w, bias, y_fp32);
    char what[96];
    snprintf(what, sizeof what, "%s conv forward = fp32 conv of rounded inputs", name);
    check_exact_f(what, y, y_again, ny);
    /* the mass of each output: the same convolution of |x| and |w| */
    float *ax = fcopy(x, nx), *aw = fcopy(w, nw), *am = fbuf(ny);
    for (int64_t i = 0; i < nx; i++) ax[i] = fabsf(ax[i]);
    for (int64_t i = 0; i < nw; i++) aw[i] = fabsf(aw[i]);
    cpu_conv2d_forward(NULL, &s, ax, aw, NULL, am);
    double *mass = dbuf(ny);
    for (int64_t i = 0; i < ny; i++) /* the bias adds one more float32 rounding */
        mass[i] = am[i] * (1 + 0x1p-16) + fabs((double)bias[(i / 63) % 6]) * 0x1p-10;
    snprintf(what, sizeof what, "%s conv forward against fp32", name);
    within_bound(what, y, y_fp32, mass, ny, u);

    float *dx = frand(nx, 25, -1, 1), *dx_again = fcopy(dx, nx);
    float *dw = fbuf(nw), *dw_again = fbuf(nw), *db = fbuf(6), *db_fp32 = fbuf(6);
    be->ops->conv2d_backward(be, &s, x, w, dy, dx, dw, db);
    cpu_conv2d_backward(NULL, &s, xr, wr, dyr, dx_again, dw_again, NULL);
    cpu_channel_bias_backward(NULL, 4, 6, 63, dy, db_fp32);
    snprintf(what, sizeof what, "%s conv backward dx = fp32 of rounded inputs", name);
    check_exact_f(what, dx, dx_again, nx);
    snprintf(what, sizeof what, "%s conv backward dw = fp32 of rounded inputs", name);
    check_exact_f(what, dw, dw_again, nw);
    snprintf(what, sizeof what, "%s conv dbias from dy unrounded", name);
    check_exact_f(what, db, db_fp32, 6);
}

/* The experts' ops: the rounded ops on rounded copies, dhidden too. */
static void test_experts(pmoe_backend *be, int precision, const char *name) {
    const int k = 3, d = 20, h = 7;
    const int64_t rows = 11, nx = k * rows * d, nw = k * h * d, nh = k * rows * h;
    const float *in = frand(nx, 31, -1, 1), *w = frand(nw, 32, -1, 1);
    float *inr = fcopy(in, nx), *wr = fcopy(w, nw);
    round_all(inr, nx, precision);
    round_all(wr, nw, precision);
    float *hid = fbuf(nh), *hid_again = fbuf(nh);
    be->ops->expert_forward(be, k, rows, d, h, in, w, hid);
    cpu_expert_forward(NULL, k, rows, d, h, inr, wr, hid_again);
    char what[96];
    snprintf(what, sizeof what, "%s expert_forward = fp32 of rounded inputs", name);
    check_exact_f(what, hid, hid_again, nh);
    float *dh = frand(nh, 33, -1, 1), *dh_again = fcopy(dh, nh);
    round_all(dh_again, nh, precision);
    float *dw = fbuf(nw), *dw_again = fbuf(nw), *din = fbuf(nx), *din_again = fbuf(nx);
    be->ops->expert_backward(be, k, rows, d, h, in, w, hid, dh, dw, din);
    cpu_expert_backward(NULL, k, rows, d, h, inr, wr, hid_again, dh_again, dw_again, din_again);
    snprintf(what, sizeof what, "%s expert_backward dW = fp32 of rounded inputs", name);
    check_exact_f(what, dw, dw_again, nw);
    snprintf(what, sizeof what, "%s expert_backward dX = fp32 of rounded inputs", name);
    check_exact_f(what, din, din_again, nx);
}

int main(void) {
    test_rounding();
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    CHECK(pmoe_cpu_backend_create(1, &be, &err) == PMOE_OK);
    const pmoe_ops *reference = be->ops;
    CHECK(pmoe_backend_set_precision(be, PMOE_PRECISION_FP32, &err) == PMOE_OK);
    CHECK(be->ops == reference && be->ops->gemm == cpu_gemm);
    const struct {
        pmoe_precision p;
        double u;
    } modes[] = {{PMOE_PRECISION_TF32, 0x1p-11}, {PMOE_PRECISION_BF16, 0x1p-8}};
    for (int i = 0; i < 2; i++) {
        const char *name = pmoe_precision_name(modes[i].p);
        printf("train.precision = %s on the CPU backend\n", name);
        CHECK(pmoe_backend_set_precision(be, modes[i].p, &err) == PMOE_OK);
        CHECK(be->ops->gemm != cpu_gemm && be->ops->gemm_float32 == cpu_gemm);
        CHECK(be->ops->gate_topl_forward == cpu_gate_topl_forward &&
              be->ops->gate_topl_backward == cpu_gate_topl_backward); /* the router: float32 */
        CHECK(!be->ops->expert_forward_gathered && !be->ops->expert_backward_gathered &&
              !be->ops->moe_experts_forward && !be->ops->moe_experts_backward);
        test_gemm(be, (int)modes[i].p, modes[i].u, name);
        test_conv(be, (int)modes[i].p, modes[i].u, name);
        test_experts(be, (int)modes[i].p, name);
        free_all();
    }
    CHECK(pmoe_backend_set_precision(be, PMOE_PRECISION_FP32, &err) == PMOE_OK);
    CHECK(be->ops->gemm == cpu_gemm && be->ops->expert_forward_gathered != NULL);
    CHECK(pmoe_backend_set_precision(be, (pmoe_precision)7, &err) == PMOE_ERR_CONFIG);
    pmoe_backend_destroy(be);
    return test_finish("test_precision");
}
