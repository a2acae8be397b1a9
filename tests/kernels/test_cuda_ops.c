/* test_cuda_ops.c: every op of the CUDA backend against the CPU backend.
 *
 * Fresh random inputs on every run (seed printed), for several shapes: the
 * issue's B = 128, n = 64, l = 16, k = 8, d = 640; odd sizes (n = 13, k = 3,
 * d = 33); n = l = 1024; and integer inputs whose scores tie exactly, where
 * the picks must equal the CPU's. Every output starts as NaN (ints -1).
 * Copies, picks and the dispatch adjoint must match exactly; sums within a
 * tolerance scaled by the largest value of the CPU's result (the GPU sums in
 * float with fused multiply-adds in another order, the CPU partly in
 * double), with the worst error printed as a share of its limit. Without a
 * CUDA device the test exits 77 (skipped). */
#include "backend/cpu_ops.h"
#include "core/rng.h"
#include "gpu_test_buffers.h"

/* ------------------------------------------------------------ buffers */

/* gpu, seed0, hbuf, hibuf, hrand, copy_of, dev_in, dev_out, back,
 * release_all and sync_or_fail are gpu_test_buffers.h's. */

static float *hints(int64_t n, uint64_t id, int lo, int hi) {
    float *p = hbuf(n);
    pmoe_rng r = pmoe_rng_make(seed0, 0x1d7 + id);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(lo + (int)pmoe_rng_next_below(&r, (uint64_t)(hi - lo + 1)));
    return p;
}

/* ------------------------------------------------------------ GEMM */

static void test_gemm(void) {
    printf("gemm (row-major through cuBLAS)\n");
    const int64_t m = 37, n = 53, k = 129, batch = 3;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* padded leading dimensions and gaps between batch entries */
            const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
            const int64_t sa = (ta ? k : m) * lda + 7, sb = (tb ? n : k) * ldb + 1,
                          sc = m * ldc + 9;
            float *a = hrand(sa * batch, 1, -1, 1), *b = hrand(sb * batch, 2, -1, 1);
            float *c0 = hrand(sc * batch, 3, -1, 1), *want = copy_of(c0, sc * batch);
            float *da = dev_in(a, (size_t)(sa * batch) * 4),
                  *db = dev_in(b, (size_t)(sb * batch) * 4);
            float *dc = dev_in(c0, (size_t)(sc * batch) * 4);
            gpu->ops->gemm(gpu, ta, tb, m, n, k, 0.7f, da, lda, sa, db, ldb, sb, 0.3f, dc, ldc, sc,
                           batch);
            cpu_gemm(NULL, ta, tb, m, n, k, 0.7f, a, lda, sa, b, ldb, sb, 0.3f, want, ldc, sc,
                     batch);
            float *got = back(dc, (size_t)(sc * batch) * 4);
            char what[64];
            snprintf(what, sizeof what, "gemm ta=%d tb=%d 37x53x129 x3, beta 0.3", ta, tb);
            close_scaled(what, got, want, sc * batch, 1e-5);
            release_all();
        }
    sync_or_fail("gemm");
}

/* ------------------------------------------------------------ patches */

static void test_patches(pmoe_patch_shape s) {
    const int64_t pixels = s.batch * s.channels * s.height * s.width;
    const int64_t elems = s.batch * pmoe_patch_count(&s) * pmoe_patch_dim(&s);
    printf("patch extraction B%lld C%d %dx%d p%d\n", (long long)s.batch, s.channels, s.height,
           s.width, s.patch);
    float *images = hrand(pixels, 10, -1, 1), *dpatches = hrand(elems, 11, -1, 1);
    float *dpatch_out = dev_out((size_t)elems * 4), *dimage_out = dev_out((size_t)pixels * 4);
    gpu->ops->patch_extract_forward(gpu, &s, dev_in(images, (size_t)pixels * 4), dpatch_out);
    gpu->ops->patch_extract_backward(gpu, &s, dev_in(dpatches, (size_t)elems * 4), dimage_out);
    float *want = hbuf(elems), *dwant = hbuf(pixels);
    cpu_patch_extract_forward(NULL, &s, images, want);
    cpu_patch_extract_backward(NULL, &s, dpatches, dwant);
    check_exact_f("patch_extract_forward", back(dpatch_out, (size_t)elems * 4), want, elems);
    check_exact_f("patch_extract_backward", back(dimage_out, (size_t)pixels * 4), dwant, pixels);
    sync_or_fail("patch extraction");
    release_all();
}

/* ------------------------------------------------------------ router */

static void test_router(const char *label, pmoe_route_shape s, int ties) {
    const int64_t B = s.batch, n = s.patches, d = s.dim, k = s.experts, l = s.topl;
    static const char *modes[] = {"renorm", "softmax_all", "ones"};
    printf("gate_topl %s %s\n", label, modes[s.gate]);
    float *patches = ties ? hints(B * n * d, 20, -1, 1) : hrand(B * n * d, 20, -1, 1);
    float *router = ties ? hints(k * d, 21, -1, 1) : hrand(k * d, 21, -0.5f, 0.5f);
    float *dpatches_patches = dev_in(patches, (size_t)(B * n * d) * 4);
    float *drouter = dev_in(router, (size_t)(k * d) * 4);
    float *dscores = dev_out((size_t)(B * n * k) * 4),
          *dgate_out = dev_out((size_t)(B * k * l) * 4);
    int32_t *dselected = dev_out((size_t)(B * k * l) * 4);
    gpu->ops->gate_topl_forward(gpu, &s, dpatches_patches, drouter, dscores, dselected, dgate_out);
    float *scores = back(dscores, (size_t)(B * n * k) * 4),
          *gate = back(dgate_out, (size_t)(B * k * l) * 4);
    int32_t *selected = back(dselected, (size_t)(B * k * l) * 4);

    float *cscores = hbuf(B * n * k), *cgate = hbuf(B * k * l);
    int32_t *cselected = hibuf(B * k * l), *own = hibuf(B * k * l);
    cpu_gate_topl_forward(NULL, &s, patches, router, cscores, cselected, cgate);
    if (ties) check_exact_f("scores (exact integers)", scores, cscores, B * n * k);
    else close_scaled("scores", scores, cscores, B * n * k, 2e-6);
    for (int64_t q = 0; q < B * k; q++)
        cpu_topl_select(scores + (q / k) * n * k + q % k, k, (int)n, (int)l, own + q * l);
    check_exact_i("picks = CPU rule on the GPU's scores", selected, own, B * k * l);
    if (ties)
        check_exact_i("picks = CPU's (ties to the lower index)", selected, cselected, B * k * l);
    close_scaled("gate", gate, cgate, B * k * l, 2e-6);

    /* Backward from the CPU's forward, so both take the same picks; the
     * patch gradient accumulates into a random start. */
    float *dgate = hrand(B * k * l, 22, -1, 1), *dp0 = hrand(B * n * d, 23, -1, 1);
    float *d_dscores = dev_out((size_t)(B * n * k) * 4), *d_drouter = dev_out((size_t)(k * d) * 4);
    float *d_dpatches = dev_in(dp0, (size_t)(B * n * d) * 4);
    gpu->ops->gate_topl_backward(
        gpu, &s, dpatches_patches, drouter, dev_in(cscores, (size_t)(B * n * k) * 4),
        dev_in(cselected, (size_t)(B * k * l) * 4), dev_in(cgate, (size_t)(B * k * l) * 4),
        dev_in(dgate, (size_t)(B * k * l) * 4), d_dscores, d_drouter, d_dpatches);
    float *w_dscores = hbuf(B * n * k), *w_drouter = hbuf(k * d);
    float *w_dpatches = copy_of(dp0, B * n * d);
    cpu_gate_topl_backward(NULL, &s, patches, router, cscores, cselected, cgate, dgate, w_dscores,
                           w_drouter, w_dpatches);
    close_scaled("dscores", back(d_dscores, (size_t)(B * n * k) * 4), w_dscores, B * n * k, 2e-6);
    close_scaled("drouter_w", back(d_drouter, (size_t)(k * d) * 4), w_drouter, k * d, 1e-5);
    close_scaled("dpatches (accumulated)", back(d_dpatches, (size_t)(B * n * d) * 4), w_dpatches,
                 B * n * d, 2e-6);
    sync_or_fail("gate_topl");
    release_all();
}

/* ------------------------------------------------------------ dispatch */

static int32_t *random_picks(const pmoe_route_shape *s, uint64_t id) {
    int32_t *sel = hibuf(s->batch * s->experts * s->topl);
    fill_random_picks(sel, s->batch * s->experts, s->patches, s->topl, seed0, 0xd15 + id);
    return sel;
}

static void test_dispatch(const char *label, pmoe_route_shape s) {
    const int64_t B = s.batch, n = s.patches, d = s.dim, k = s.experts, l = s.topl;
    printf("dispatch %s\n", label);
    int32_t *sel = random_picks(&s, 30);
    float *patches = hrand(B * n * d, 31, -1, 1), *dexp = hrand(k * B * l * d, 32, -1, 1);
    int32_t *dsel = dev_in(sel, (size_t)(B * k * l) * 4);
    float *out = dev_out((size_t)(k * B * l * d) * 4), *dout = dev_out((size_t)(B * n * d) * 4);
    gpu->ops->dispatch_gather(gpu, &s, dev_in(patches, (size_t)(B * n * d) * 4), dsel, out);
    gpu->ops->dispatch_gather_backward(gpu, &s, dev_in(dexp, (size_t)(k * B * l * d) * 4), dsel,
                                       dout);
    float *want = hbuf(k * B * l * d), *dwant = hbuf(B * n * d);
    cpu_dispatch_gather(NULL, &s, patches, sel, want);
    cpu_dispatch_gather_backward(NULL, &s, dexp, sel, dwant);
    check_exact_f("dispatch_gather", back(out, (size_t)(k * B * l * d) * 4), want, k * B * l * d);
    check_exact_f("dispatch_gather_backward (same adds, same order)",
                  back(dout, (size_t)(B * n * d) * 4), dwant, B * n * d);
    sync_or_fail("dispatch");
    release_all();
}

/* ------------------------------------------------------------ experts */

static void test_experts(int k, int64_t rows, int d, int h) {
    printf("experts k%d rows %lld d%d h%d\n", k, (long long)rows, d, h);
    const int64_t in_n = k * rows * d, w_n = (int64_t)k * h * d, h_n = k * rows * h;
    float *in = hrand(in_n, 40, -1, 1), *w = hrand(w_n, 41, -0.1f, 0.1f);
    float *d_in = dev_in(in, (size_t)in_n * 4), *d_w = dev_in(w, (size_t)w_n * 4);
    float *d_hidden = dev_out((size_t)h_n * 4);
    gpu->ops->expert_forward(gpu, k, rows, d, h, d_in, d_w, d_hidden);
    float *want = hbuf(h_n);
    cpu_expert_forward(NULL, k, rows, d, h, in, w, want);
    close_scaled("expert_forward (GEMM + ReLU)", back(d_hidden, (size_t)h_n * 4), want, h_n, 1e-5);

    /* Backward from the CPU's hidden, so the ReLU masks agree. */
    float *dh = hrand(h_n, 42, -1, 1);
    float *d_dh = dev_in(dh, (size_t)h_n * 4), *d_dw = dev_out((size_t)w_n * 4);
    float *d_dx = dev_out((size_t)in_n * 4);
    gpu->ops->expert_backward(gpu, k, rows, d, h, d_in, d_w, dev_in(want, (size_t)h_n * 4), d_dh,
                              d_dw, d_dx);
    float *w_dh = copy_of(dh, h_n), *w_dw = hbuf(w_n), *w_dx = hbuf(in_n);
    cpu_expert_backward(NULL, k, rows, d, h, in, w, want, w_dh, w_dw, w_dx);
    check_exact_f("dhidden masked in place", back(d_dh, (size_t)h_n * 4), w_dh, h_n);
    close_scaled("dexpert_w", back(d_dw, (size_t)w_n * 4), w_dw, w_n, 1e-5);
    close_scaled("dexpert_in", back(d_dx, (size_t)in_n * 4), w_dx, in_n, 1e-5);
    sync_or_fail("experts");
    release_all();
}

/* ------------------------------------------------------------ combine */

static void test_combine(pmoe_combine_shape s, int with_gate, int with_dout) {
    const int64_t B = s.batch, k = s.experts, l = s.topl, h = s.hidden, C = s.classes;
    printf("combine B%lld k%lld l%lld h%lld c%lld%s\n", (long long)B, (long long)k, (long long)l,
           (long long)h, (long long)C, with_gate ? "" : " G=1");
    const int64_t h_n = k * B * l * h;
    float *hidden = hrand(h_n, 50, 0, 1), *gate = with_gate ? hrand(B * k * l, 51, 0, 1) : NULL;
    float *out_w = hrand(k * h * C, 52, -1, 1), *dlogits = hrand(B * C, 53, -1, 1);
    float *d_hidden = dev_in(hidden, (size_t)h_n * 4);
    float *d_gate = gate ? dev_in(gate, (size_t)(B * k * l) * 4) : NULL;
    float *d_w = dev_in(out_w, (size_t)(k * h * C) * 4);
    float *d_logits = dev_out((size_t)(B * C) * 4), *d_dh = dev_out((size_t)h_n * 4);
    float *d_dg = gate ? dev_out((size_t)(B * k * l) * 4) : NULL;
    float *d_dw = with_dout ? dev_out((size_t)(k * h * C) * 4) : NULL;
    gpu->ops->combine_forward(gpu, &s, d_hidden, d_gate, d_w, d_logits);
    gpu->ops->combine_backward(gpu, &s, dev_in(dlogits, (size_t)(B * C) * 4), d_hidden, d_gate, d_w,
                               d_dh, d_dg, d_dw);
    float *logits = hbuf(B * C), *dh = hbuf(h_n), *dg = hbuf(B * k * l), *dw = hbuf(k * h * C);
    cpu_combine_forward(NULL, &s, hidden, gate, out_w, logits);
    cpu_combine_backward(NULL, &s, dlogits, hidden, gate, out_w, dh, gate ? dg : NULL,
                         with_dout ? dw : NULL);
    close_scaled("logits", back(d_logits, (size_t)(B * C) * 4), logits, B * C, 1e-5);
    close_scaled("dhidden", back(d_dh, (size_t)h_n * 4), dh, h_n, 1e-6);
    if (gate) close_scaled("dgate", back(d_dg, (size_t)(B * k * l) * 4), dg, B * k * l, 1e-5);
    if (with_dout) close_scaled("dout_w", back(d_dw, (size_t)(k * h * C) * 4), dw, k * h * C, 1e-5);
    sync_or_fail("combine");
    release_all();
}

/* ------------------------------------------------------------ losses, SGD, fill */

static void test_losses(void) {
    printf("losses\n");
    for (int kind = 0; kind < 2; kind++) {
        const int64_t B = 128;
        const int C = kind ? 10 : 1;
        float *logits = hrand(B * C, 60 + kind, -4, 4);
        int32_t *labels = hibuf(B);
        for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)((b * 7 + seed0) % (kind ? 10 : 2));
        float *d_dl = dev_out((size_t)(B * C) * 4), *d_stats = dev_out(8);
        gpu->ops->loss_forward_backward(gpu, (pmoe_loss_kind)kind, B, C,
                                        dev_in(logits, (size_t)(B * C) * 4),
                                        dev_in(labels, (size_t)B * 4), d_dl, d_stats);
        float *dl = hbuf(B * C), stats[2];
        cpu_loss_forward_backward(NULL, (pmoe_loss_kind)kind, B, C, logits, labels, dl, stats);
        float *got = back(d_stats, 8);
        printf(" %s\n", kind ? "softmax cross-entropy, c = 10" : "logistic");
        close_scaled("dlogits", back(d_dl, (size_t)(B * C) * 4), dl, B * C, 1e-5);
        check_close_f("mean loss", got, stats, 1, 1e-6, 1e-5);
        check_exact_f("correct predictions", got + 1, stats + 1, 1);
    }
    {
        const int64_t B = 20;
        const int n = 16, k = 2;
        float *scores = hrand(B * n * k, 62, -1, 1), *weight = hrand(B, 63, -0.1f, 0.1f);
        int32_t *pair = hibuf(B);
        for (int64_t b = 0; b < B; b++) pair[b] = 0;
        float *d_ds = dev_out((size_t)(B * n * k) * 4), *d_stats = dev_out(8);
        gpu->ops->router_linear_loss(gpu, B, n, k, dev_in(scores, (size_t)(B * n * k) * 4),
                                     dev_in(pair, (size_t)B * 4), dev_in(weight, (size_t)B * 4),
                                     d_ds, d_stats);
        float *ds = hbuf(B * n * k), stats[2];
        cpu_router_linear_loss(NULL, B, n, k, scores, pair, weight, ds, stats);
        printf(" router linear loss\n");
        check_exact_f("dscores", back(d_ds, (size_t)(B * n * k) * 4), ds, B * n * k);
        close_scaled("loss", back(d_stats, 4), stats, 1, 1e-5);
    }
    sync_or_fail("losses");
    release_all();
}

static void test_sgd_fill(void) {
    printf("SGD and fill\n");
    const int64_t n = 100003;
    for (int momentum = 0; momentum < 2; momentum++) {
        float *p = hrand(n, 70, -1, 1), *g = hrand(n, 71, -1, 1), *v = hrand(n, 72, -1, 1);
        float *d_p = dev_in(p, (size_t)n * 4), *d_v = momentum ? dev_in(v, (size_t)n * 4) : NULL;
        gpu->ops->sgd_update(gpu, n, d_p, dev_in(g, (size_t)n * 4), d_v, 0.2f,
                             momentum ? 0.9f : 0.0f, 1e-3f, NULL);
        cpu_sgd_update(NULL, n, p, g, momentum ? v : NULL, 0.2f, momentum ? 0.9f : 0.0f, 1e-3f,
                       NULL);
        close_scaled(momentum ? "param (momentum)" : "param", back(d_p, (size_t)n * 4), p, n, 1e-6);
        if (momentum) close_scaled("velocity", back(d_v, (size_t)n * 4), v, n, 1e-6);
    }
    float *d = dev_out((size_t)n * 4);
    gpu->fill(gpu, d, 0.25f, n);
    float *got = back(d, (size_t)n * 4);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= got[i] == 0.25f;
    CHECK_MSG(ok, "fill");
    sync_or_fail("sgd");
    release_all();
}

static void test_failures(void) {
    printf("failures are reported, not hidden\n");
    /* An unsupported shape (l > n) is recorded and returned by synchronize. */
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *be = NULL;
    gpu_die(pmoe_cuda_backend_create(0, &be, &err), &err);
    pmoe_route_shape s = {1, 4, 3, 2, 5, PMOE_GATE_RENORM};
    void *buf = NULL;
    gpu_die(be->alloc(be, 1024, &buf, &err), &err);
    be->ops->gate_topl_forward(be, &s, buf, buf, buf, buf, buf);
    pmoe_status st = be->synchronize(be, &err);
    printf("  l > n: %s\n", err.message);
    CHECK(st == PMOE_ERR_UNSUPPORTED && strstr(err.message, "l=5") != NULL);
    be->release(be, buf, 1024);
    pmoe_backend_destroy(be);
    /* An impossible allocation names the bytes asked and what to reduce. */
    gpu_die(pmoe_cuda_backend_create(0, &be, &err), &err);
    err.message[0] = 0;
    st = be->alloc(be, (size_t)1 << 50, &buf, &err);
    printf("  1 PiB: %s\n", err.message);
    CHECK(st == PMOE_ERR_OOM && strstr(err.message, "1125899906842624 bytes") &&
          strstr(err.message, "train.batch"));
    CHECK(be->synchronize(be, &err) == PMOE_OK); /* the backend still works after an OOM */
    pmoe_backend_destroy(be);
}

int main(void) {
    gpu_test_begin("test_cuda_ops");
    test_gemm();
    test_patches((pmoe_patch_shape){128, 40, 32, 32, 4}); /* n = 64, d = 640 */
    test_patches((pmoe_patch_shape){3, 3, 13, 10, 4});
    const pmoe_route_shape main_shape = {128, 64, 640, 8, 16, PMOE_GATE_RENORM};
    for (int mode = 0; mode < 3; mode++) {
        pmoe_route_shape s = main_shape;
        s.gate = (pmoe_gate_mode)mode;
        test_router("B128 n64 l16 k8 d640", s, 0);
        s = (pmoe_route_shape){32, 64, 64, 8, 16, (pmoe_gate_mode)mode};
        test_router("ties B32 n64 l16 k8 d64", s, 1);
    }
    test_router("B7 n13 l5 k3 d33", (pmoe_route_shape){7, 13, 33, 3, 5, PMOE_GATE_RENORM}, 0);
    test_router("B2 n1024 l1024 k4 d12",
                (pmoe_route_shape){2, 1024, 12, 4, 1024, PMOE_GATE_SOFTMAX_ALL}, 0);
    test_router("B3 n16 l6 k20 d784", (pmoe_route_shape){3, 16, 784, 20, 6, PMOE_GATE_RENORM}, 0);
    test_dispatch("B128 n64 l16 k8 d640", main_shape);
    test_dispatch("B7 n13 l5 k3 d33", (pmoe_route_shape){7, 13, 33, 3, 5, PMOE_GATE_RENORM});
    test_dispatch("B2 n2000 l700 k8 d3", (pmoe_route_shape){2, 2000, 3, 8, 700, PMOE_GATE_RENORM});
    test_experts(8, 128 * 16, 640, 5);
    test_experts(8, 128 * 16, 640, 80);
    test_experts(3, 35, 33, 7);
    test_combine((pmoe_combine_shape){128, 8, 16, 5, 1}, 1, 1);
    test_combine((pmoe_combine_shape){128, 8, 16, 80, 10}, 1, 1);
    test_combine((pmoe_combine_shape){7, 1, 13, 6, 2}, 0, 0);
    test_losses();
    test_sgd_fill();
    test_failures();
    pmoe_backend_destroy(gpu);
    return test_finish("test_cuda_ops");
}
