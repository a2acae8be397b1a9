/* cpu_fast.c: the CPU fast path on oneDNN (cpu_fast.h): convolution forward,
 * backward-data and backward-weights, and the pMoE layer's k experts as one
 * batch norm over k C channels and one grouped convolution.
 *
 * The model's maps are NCHW. Each convolution is made with its layouts left
 * to oneDNN ("any"), which on AVX2 picks 8-channel blocks; NCHW tensors are
 * reordered into the chosen layout on the way in and back on the way out.
 * Everything for one shape (primitive descriptors, primitives, reorders,
 * the blocked buffers, the scratchpads) is made on the shape's first call
 * and kept for the backend's life, so a training step creates nothing.
 * Layers of the same shape share one entry: nothing is kept in it between
 * a layer's forward and backward (the backward reorders its inputs again).
 *
 * Batch norm stays the reference's (cpu_batchnorm.c), here too: on NCHW maps
 * oneDNN's batch norm (its plain-layout kernel) measured 1.3-10x slower
 * than the reference's on every WRN shape (tests/time_cpu_kernels.c,
 * BENCHMARKS.md); its fast kernels want the blocked layout, which the
 * model's other ops do not read.
 *
 * Accumulating outputs (the backend's dx += ... contract) are a reorder
 * with a sum post-op from oneDNN's buffer into dx. Where oneDNN cannot make
 * a primitive for a shape, the op runs the reference (cpu_ops.h) instead.
 *
 * oneDNN runs on the same OpenMP threads as the reference. Its sums are
 * not in a fixed order: results match the reference to rounding and are
 * not bit-identical across thread counts (README, "CPU kernels"). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend/cpu_fast.h"
#include "backend/cpu_ops.h"

/* ------------------------------------------------------------ the cache */

/* A convolution's shape, groups included (the experts' grouped one). */
typedef struct conv_key {
    int64_t batch;
    int in_channels, height, width, out_channels, kernel_h, kernel_w, stride, pad, groups;
    int bias;
} conv_key;

/* One tensor argument of a primitive: the caller's NCHW memory and, when
 * the primitive wants another layout (or accumulates), its own buffer and
 * the reorder between the two. */
typedef struct slot {
    int separate; /* a buffer and a reorder stand between the two */
    dnnl_memory_t user, inner;
    dnnl_primitive_t reorder; /* user -> inner for inputs, inner -> user for outputs */
    void *buffer;
    size_t bytes;
} slot;

/* A primitive with its scratchpad. */
typedef struct prim {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    dnnl_memory_t scratch;
    void *scratch_buffer;
} prim;

typedef struct conv_entry {
    prim fwd, bwd_data, bwd_weights;
    slot f_src, f_wei, f_dst;   /* forward */
    slot d_ddst, d_wei, d_dsrc; /* backward data: dsrc accumulates */
    slot w_src, w_ddst, w_dwei; /* backward weights */
    dnnl_memory_t bias, dbias;
    int share_ddst; /* both backward primitives take dy in one blocked layout: one reorder */
    int ready_fwd, ready_bwd, failed;
} conv_entry;

typedef struct entry {
    conv_key key;
    conv_entry conv;
    struct entry *next;
} entry;

/* The experts' transposed buffers, sized for the largest call. */
typedef struct experts_work {
    float *out_t; /* rows x k e x h w: the grouped convolution's output, or dout */
    size_t bytes;
} experts_work;

struct cpu_fast {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    entry *entries;
    experts_work ex;
};

static struct cpu_fast *fast_of(pmoe_backend *be) { return ((cpu_impl *)be->impl)->fast; }

static void *buffer_alloc(size_t bytes) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

static entry *find(struct cpu_fast *f, const conv_key *key) {
    for (entry *e = f->entries; e; e = e->next)
        if (memcmp(&e->key, key, sizeof *key) == 0) return e;
    entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->key = *key;
    e->next = f->entries;
    f->entries = e;
    return e;
}

/* ------------------------------------------------------------ helpers */

static int ok(dnnl_status_t s) { return s == dnnl_success; }

static const dnnl_memory_desc_t *md_of(const prim *p, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(p->pd, what, 0);
}

static int prim_make(struct cpu_fast *f, prim *p, const_dnnl_op_desc_t desc,
                     const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t attr;
    if (!ok(dnnl_primitive_attr_create(&attr))) return 0;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    const int made = ok(dnnl_primitive_desc_create(&p->pd, desc, attr, f->engine, hint));
    dnnl_primitive_attr_destroy(attr);
    if (!made) {
        p->pd = NULL;
        return 0;
    }
    if (!ok(dnnl_primitive_create(&p->p, p->pd))) return 0;
    const dnnl_memory_desc_t *smd = md_of(p, dnnl_query_scratchpad_md);
    const size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (bytes) {
        if (!(p->scratch_buffer = buffer_alloc(bytes))) return 0;
        if (!ok(dnnl_memory_create(&p->scratch, smd, f->engine, p->scratch_buffer))) return 0;
    }
    return 1;
}

static void prim_free(prim *p) {
    if (p->p) dnnl_primitive_destroy(p->p);
    if (p->pd) dnnl_primitive_desc_destroy(p->pd);
    if (p->scratch) dnnl_memory_destroy(p->scratch);
    free(p->scratch_buffer);
}

/* A slot between the caller's memory (user_md) and what the primitive wants
 * (inner_md); `output` slots reorder inner -> user, adding into the user's
 * memory when `accumulate` (then always through a buffer). */
static int slot_make(struct cpu_fast *f, slot *s, const dnnl_memory_desc_t *user_md,
                     const dnnl_memory_desc_t *inner_md, int output, int accumulate) {
    if (!ok(dnnl_memory_create(&s->user, user_md, f->engine, DNNL_MEMORY_NONE))) return 0;
    s->separate = accumulate || !dnnl_memory_desc_equal(user_md, inner_md);
    if (!s->separate) return 1;
    s->bytes = dnnl_memory_desc_get_size(inner_md);
    if (!(s->buffer = buffer_alloc(s->bytes))) return 0;
    if (!ok(dnnl_memory_create(&s->inner, inner_md, f->engine, s->buffer))) return 0;
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t po;
        if (!ok(dnnl_primitive_attr_create(&attr)) || !ok(dnnl_post_ops_create(&po))) return 0;
        dnnl_post_ops_append_sum(po, 1.0f);
        dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd;
    const dnnl_memory_desc_t *from = output ? inner_md : user_md, *to = output ? user_md : inner_md;
    const int made =
        ok(dnnl_reorder_primitive_desc_create(&pd, from, f->engine, to, f->engine, attr));
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!made) return 0;
    const int created = ok(dnnl_primitive_create(&s->reorder, pd));
    dnnl_primitive_desc_destroy(pd);
    return created;
}

static void slot_free(slot *s) {
    if (s->user) dnnl_memory_destroy(s->user);
    if (s->inner) dnnl_memory_destroy(s->inner);
    if (s->reorder) dnnl_primitive_destroy(s->reorder);
    free(s->buffer);
}

static void run_reorder(struct cpu_fast *f, dnnl_primitive_t r, dnnl_memory_t from,
                        dnnl_memory_t to) {
    const dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    dnnl_primitive_execute(r, f->stream, 2, args);
}

/* An input: the memory to hand the primitive (the user's, or the buffer
 * after the reorder). */
static dnnl_memory_t slot_in(struct cpu_fast *f, slot *s, const float *data) {
    dnnl_memory_set_data_handle(s->user, (void *)data);
    if (!s->separate) return s->user;
    run_reorder(f, s->reorder, s->user, s->inner);
    return s->inner;
}

/* An output: the memory the primitive writes; slot_out_finish moves it. */
static dnnl_memory_t slot_out(slot *s, float *data) {
    dnnl_memory_set_data_handle(s->user, data);
    return s->separate ? s->inner : s->user;
}

static void slot_out_finish(struct cpu_fast *f, slot *s) {
    if (s->separate) run_reorder(f, s->reorder, s->inner, s->user);
}

static void run(struct cpu_fast *f, const prim *p, int nargs, dnnl_exec_arg_t *args) {
    if (p->scratch) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
    dnnl_primitive_execute(p->p, f->stream, nargs, args);
}

static void md_plain(dnnl_memory_desc_t *md, int ndims, const int64_t *dims,
                     dnnl_format_tag_t tag) {
    dnnl_dims_t d;
    for (int i = 0; i < ndims; i++) d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag);
}

/* ------------------------------------------------------------ convolution */

typedef struct conv_mds {
    dnnl_memory_desc_t src, wei, dst, bias, any_src, any_wei, any_dst;
    dnnl_dims_t strides, pad_l, pad_r;
} conv_mds;

static void conv_mds_make(const conv_key *k, conv_mds *m) {
    const int P = (k->height + 2 * k->pad - k->kernel_h) / k->stride + 1;
    const int Q = (k->width + 2 * k->pad - k->kernel_w) / k->stride + 1;
    const int64_t src[4] = {k->batch, k->in_channels, k->height, k->width};
    const int64_t dst[4] = {k->batch, k->out_channels, P, Q};
    const int64_t bias[1] = {k->out_channels};
    md_plain(&m->src, 4, src, dnnl_nchw);
    md_plain(&m->dst, 4, dst, dnnl_nchw);
    md_plain(&m->bias, 1, bias, dnnl_x);
    md_plain(&m->any_src, 4, src, dnnl_format_tag_any);
    md_plain(&m->any_dst, 4, dst, dnnl_format_tag_any);
    if (k->groups > 1) {
        const int64_t wei[5] = {k->groups, k->out_channels / k->groups, k->in_channels / k->groups,
                                k->kernel_h, k->kernel_w};
        md_plain(&m->wei, 5, wei, dnnl_goihw);
        md_plain(&m->any_wei, 5, wei, dnnl_format_tag_any);
    } else {
        const int64_t wei[4] = {k->out_channels, k->in_channels, k->kernel_h, k->kernel_w};
        md_plain(&m->wei, 4, wei, dnnl_oihw);
        md_plain(&m->any_wei, 4, wei, dnnl_format_tag_any);
    }
    m->strides[0] = m->strides[1] = k->stride;
    m->pad_l[0] = m->pad_l[1] = k->pad;
    /* the right padding that makes the output P x Q exactly */
    m->pad_r[0] = (P - 1) * k->stride + k->kernel_h - k->height - k->pad;
    m->pad_r[1] = (Q - 1) * k->stride + k->kernel_w - k->width - k->pad;
}

static int conv_make_fwd(struct cpu_fast *f, const conv_key *k, conv_entry *c) {
    conv_mds m;
    conv_mds_make(k, &m);
    dnnl_convolution_desc_t d;
    if (!ok(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, dnnl_convolution_direct,
                                               &m.any_src, &m.any_wei, k->bias ? &m.bias : NULL,
                                               &m.any_dst, m.strides, m.pad_l, m.pad_r)))
        return 0;
    if (!prim_make(f, &c->fwd, &d, NULL)) return 0;
    return slot_make(f, &c->f_src, &m.src, md_of(&c->fwd, dnnl_query_src_md), 0, 0) &&
           slot_make(f, &c->f_wei, &m.wei, md_of(&c->fwd, dnnl_query_weights_md), 0, 0) &&
           slot_make(f, &c->f_dst, &m.dst, md_of(&c->fwd, dnnl_query_dst_md), 1, 0) &&
           ok(dnnl_memory_create(&c->bias, &m.bias, f->engine, DNNL_MEMORY_NONE));
}

static int conv_make_bwd(struct cpu_fast *f, const conv_key *k, conv_entry *c) {
    conv_mds m;
    conv_mds_make(k, &m);
    dnnl_convolution_desc_t dd, wd;
    if (!ok(dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &m.any_src,
                                                     &m.any_wei, &m.any_dst, m.strides, m.pad_l,
                                                     m.pad_r)) ||
        !ok(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &m.any_src,
                                                        &m.any_wei, k->bias ? &m.bias : NULL,
                                                        &m.any_dst, m.strides, m.pad_l, m.pad_r)))
        return 0;
    if (!prim_make(f, &c->bwd_data, &dd, c->fwd.pd) ||
        !prim_make(f, &c->bwd_weights, &wd, c->fwd.pd))
        return 0;
    const prim *bd = &c->bwd_data, *bw = &c->bwd_weights;
    c->share_ddst = dnnl_memory_desc_equal(md_of(bd, dnnl_query_diff_dst_md),
                                           md_of(bw, dnnl_query_diff_dst_md));
    return slot_make(f, &c->d_ddst, &m.dst, md_of(bd, dnnl_query_diff_dst_md), 0, 0) &&
           slot_make(f, &c->d_wei, &m.wei, md_of(bd, dnnl_query_weights_md), 0, 0) &&
           slot_make(f, &c->d_dsrc, &m.src, md_of(bd, dnnl_query_diff_src_md), 1, 1) &&
           slot_make(f, &c->w_src, &m.src, md_of(bw, dnnl_query_src_md), 0, 0) &&
           slot_make(f, &c->w_ddst, &m.dst, md_of(bw, dnnl_query_diff_dst_md), 0, 0) &&
           slot_make(f, &c->w_dwei, &m.wei, md_of(bw, dnnl_query_diff_weights_md), 1, 0) &&
           ok(dnnl_memory_create(&c->dbias, &m.bias, f->engine, DNNL_MEMORY_NONE));
}

static void conv_entry_free(conv_entry *c) {
    prim_free(&c->fwd);
    prim_free(&c->bwd_data);
    prim_free(&c->bwd_weights);
    slot *slots[] = {&c->f_src,  &c->f_wei, &c->f_dst,  &c->d_ddst, &c->d_wei,
                     &c->d_dsrc, &c->w_src, &c->w_ddst, &c->w_dwei};
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) slot_free(slots[i]);
    if (c->bias) dnnl_memory_destroy(c->bias);
    if (c->dbias) dnnl_memory_destroy(c->dbias);
}

/* The entry for a shape with its forward (and, when `backward`, its
 * backward) primitives made; NULL when oneDNN cannot serve it. */
static conv_entry *conv_get(struct cpu_fast *f, const conv_key *k, int backward) {
    entry *e = find(f, k);
    if (!e) return NULL;
    conv_entry *c = &e->conv;
    if (c->failed) return NULL;
    if (!c->ready_fwd && !(c->ready_fwd = conv_make_fwd(f, k, c))) c->failed = 1;
    if (!c->failed && backward && !c->ready_bwd && !(c->ready_bwd = conv_make_bwd(f, k, c)))
        c->failed = 1;
    return c->failed ? NULL : c;
}

static conv_key conv_key_of(const pmoe_conv_shape *s, int groups, int bias) {
    conv_key k;
    memset(&k, 0, sizeof k); /* the key is compared bytewise */
    k.batch = s->batch;
    k.in_channels = s->in_channels, k.height = s->height, k.width = s->width;
    k.out_channels = s->out_channels, k.kernel_h = s->kernel_h, k.kernel_w = s->kernel_w;
    k.stride = s->stride, k.pad = s->pad, k.groups = groups, k.bias = bias;
    return k;
}

static void conv_run_forward(struct cpu_fast *f, conv_entry *c, const float *x, const float *w,
                             const float *bias, float *y) {
    dnnl_exec_arg_t args[6];
    int n = 0;
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, slot_in(f, &c->f_src, x)};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, slot_in(f, &c->f_wei, w)};
    if (bias) {
        dnnl_memory_set_data_handle(c->bias, (void *)bias);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias};
    }
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, slot_out(&c->f_dst, y)};
    run(f, &c->fwd, n, args);
    slot_out_finish(f, &c->f_dst);
}

/* dx += the data gradient (when dx), dw = the weight gradient (when dw). */
static void conv_run_backward(struct cpu_fast *f, conv_entry *c, const float *x, const float *w,
                              const float *dy, float *dx, float *dw, float *dbias) {
    if (dx) {
        dnnl_exec_arg_t args[4];
        args[0] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, slot_in(f, &c->d_ddst, dy)};
        args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, slot_in(f, &c->d_wei, w)};
        args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, slot_out(&c->d_dsrc, dx)};
        run(f, &c->bwd_data, 3, args);
        slot_out_finish(f, &c->d_dsrc);
    }
    if (dw) {
        dnnl_exec_arg_t args[5];
        int n = 0;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, slot_in(f, &c->w_src, x)};
        /* dy's blocked copy from the data gradient's reorder, when it made one */
        const int reuse = dx && c->share_ddst && c->d_ddst.separate;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST,
                                      reuse ? c->d_ddst.inner : slot_in(f, &c->w_ddst, dy)};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, slot_out(&c->w_dwei, dw)};
        if (dbias) {
            dnnl_memory_set_data_handle(c->dbias, dbias);
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, c->dbias};
        }
        run(f, &c->bwd_weights, n, args);
        slot_out_finish(f, &c->w_dwei);
    }
}

static void fast_conv2d_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                const float *w, const float *bias, float *y) {
    struct cpu_fast *f = fast_of(be);
    const conv_key k = conv_key_of(s, 1, bias != NULL);
    conv_entry *c = s->batch > 0 ? conv_get(f, &k, 0) : NULL;
    if (!c) {
        cpu_conv2d_forward(be, s, x, w, bias, y);
        return;
    }
    conv_run_forward(f, c, x, w, bias, y);
}

static void fast_conv2d_backward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                 const float *w, const float *dy, float *dx, float *dw,
                                 float *dbias) {
    struct cpu_fast *f = fast_of(be);
    /* a bias gradient without a weight gradient is left to the reference */
    const conv_key k = conv_key_of(s, 1, dbias != NULL);
    conv_entry *c = s->batch > 0 && (dw || !dbias) ? conv_get(f, &k, 1) : NULL;
    if (!c) {
        cpu_conv2d_backward(be, s, x, w, dy, dx, dw, dbias);
        return;
    }
    conv_run_backward(f, c, x, w, dy, dx, dw, dbias);
}

/* ------------------------------------------------------------ the experts */

/* k x rows x X -> rows x k x X (to_grouped) or back. */
static void regroup(const float *src, float *dst, int k, int64_t rows, int64_t X, int to_grouped) {
#pragma omp parallel for schedule(static) if (rows * k * X > 65536)
    for (int64_t t = 0; t < rows; t++)
        for (int s = 0; s < k; s++) {
            const int64_t expert_major = ((int64_t)s * rows + t) * X;
            const int64_t row_major = (t * k + s) * X;
            if (to_grouped) memcpy(dst + row_major, src + expert_major, (size_t)X * sizeof(float));
            else memcpy(dst + expert_major, src + row_major, (size_t)X * sizeof(float));
        }
}

static void nan_fill(float *p, int64_t count) {
    for (int64_t i = 0; i < count; i++) p[i] = NAN;
}

static int experts_work_fit(experts_work *w, size_t bytes) {
    if (w->bytes >= bytes) return 1;
    free(w->out_t);
    w->out_t = buffer_alloc(bytes);
    w->bytes = w->out_t ? bytes : 0;
    return w->out_t != NULL;
}

/* What the experts' forward and backward share: sizes, the batch norm over
 * k C channels, the grouped convolution's entry (NULL: none), one expert's
 * convolution for the fallback, and whether the work buffer is there. */
typedef struct experts_plan {
    int k;
    int64_t X, Y, count, wsize; /* C h w, e h w, rows k C h w, one expert's weights */
    pmoe_bn_shape bn;
    pmoe_conv_shape one;
    conv_entry *grouped;
    int fits;
} experts_plan;

static experts_plan experts_plan_make(struct cpu_fast *f, const pmoe_experts_shape *s,
                                      int backward) {
    experts_plan p;
    const int64_t hw = (int64_t)s->height * s->width;
    p.k = s->experts;
    p.X = s->channels * hw, p.Y = s->out_channels * hw, p.count = s->rows * p.k * p.X;
    p.wsize = (int64_t)s->out_channels * s->channels * s->kernel * s->kernel;
    p.bn = (pmoe_bn_shape){s->rows, p.k * s->channels, hw, s->eps};
    p.one =
        (pmoe_conv_shape){s->rows,   s->channels, s->height, s->width,           s->out_channels,
                          s->kernel, s->kernel,   1,         (s->kernel - 1) / 2};
    pmoe_conv_shape all = p.one;
    all.in_channels *= p.k, all.out_channels *= p.k;
    const conv_key key = conv_key_of(&all, p.k, 0);
    p.grouped = conv_get(f, &key, backward);
    const int64_t most = p.Y > p.X ? p.Y : p.X;
    p.fits = experts_work_fit(&f->ex, (size_t)(s->rows * p.k * most) * sizeof(float));
    return p;
}

/* The grouped layout, rows x k C x h w: each expert's channels are a group
 * of one convolution and k C channels of one batch norm. Forward: the
 * input regrouped into activated (scratch), its batch norm into normed, the
 * ReLU back into activated (the convolution's input, kept for backward). */
static void fast_experts_forward(pmoe_backend *be, const pmoe_experts_shape *s, int training,
                                 const float *in, const float *bn_gamma, const float *bn_beta,
                                 float *running_mean, float *running_var, float momentum,
                                 const float *conv_w, float *save_mean, float *save_invstd,
                                 float *normed, float *activated, float *out) {
    struct cpu_fast *f = fast_of(be);
    const experts_plan p = experts_plan_make(f, s, 0);
    const int k = p.k;
    const int64_t X = p.X, Y = p.Y;
    regroup(in, activated, k, s->rows, X, 1);
    if (training)
        cpu_batchnorm_forward_train(be, &p.bn, activated, bn_gamma, bn_beta, normed, save_mean,
                                    save_invstd, running_mean, running_var, momentum);
    else
        cpu_batchnorm_forward_eval(be, &p.bn, activated, bn_gamma, bn_beta, running_mean,
                                   running_var, normed);
    cpu_relu_forward(be, p.count, normed, activated);
    if (!p.fits) { /* out of memory for the grouped output: NaN, which the loss guard reports */
        nan_fill(out, s->rows * k * Y);
        return;
    }
    if (p.grouped) {
        conv_run_forward(f, p.grouped, activated, conv_w, NULL, f->ex.out_t);
        regroup(f->ex.out_t, out, k, s->rows, Y, 0);
        return;
    }
    /* no grouped primitive: each expert's convolution through the reference,
     * on its rows copied out expert-major */
    regroup(activated, f->ex.out_t, k, s->rows, X, 0);
    for (int e = 0; e < k; e++)
        cpu_conv2d_forward(be, &p.one, f->ex.out_t + e * s->rows * X, conv_w + e * p.wsize, NULL,
                           out + e * s->rows * Y);
}

/* Backward: dout regrouped, the grouped convolution's gradients (dactivated
 * and dconv_w), the ReLU's mask, the input regrouped (into the buffer dout's
 * copy used) for the batch norm's backward into dnormed, and dnormed back
 * to din. normed is left as the forward wrote it. */
static void fast_experts_backward(pmoe_backend *be, const pmoe_experts_shape *s, const float *in,
                                  const float *bn_gamma, const float *conv_w,
                                  const float *save_mean, const float *save_invstd,
                                  const float *normed, const float *activated, const float *dout,
                                  float *dnormed, float *dactivated, float *din, float *dgamma,
                                  float *dbeta, float *dconv_w) {
    struct cpu_fast *f = fast_of(be);
    const experts_plan p = experts_plan_make(f, s, 1);
    const int k = p.k;
    const int64_t X = p.X, Y = p.Y, count = p.count;
    if (!p.fits) { /* as in the forward: NaN for the guard */
        nan_fill(din, count);
        nan_fill(dconv_w, k * p.wsize);
        return;
    }
    memset(dactivated, 0, (size_t)count * sizeof(float)); /* both forms below add into it */
    if (p.grouped) {
        regroup(dout, f->ex.out_t, k, s->rows, Y, 1);
        conv_run_backward(f, p.grouped, activated, conv_w, f->ex.out_t, dactivated, dconv_w, NULL);
    } else {
        regroup(activated, f->ex.out_t, k, s->rows, X, 0);
        memset(dnormed, 0, (size_t)count * sizeof(float)); /* expert-major dactivated */
        for (int e = 0; e < k; e++)
            cpu_conv2d_backward(be, &p.one, f->ex.out_t + e * s->rows * X, conv_w + e * p.wsize,
                                dout + e * s->rows * Y, dnormed + e * s->rows * X,
                                dconv_w + e * p.wsize, NULL);
        regroup(dnormed, dactivated, k, s->rows, X, 1);
    }
    /* through the ReLU: the gradient where the activation is positive */
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++)
        dactivated[i] = cpu_where_positive(activated[i], dactivated[i], 0.0f);
    float *grouped_in = f->ex.out_t; /* free again: dout's copy is spent */
    regroup(in, grouped_in, k, s->rows, X, 1);
    memset(dnormed, 0, (size_t)count * sizeof(float)); /* the reference adds into it */
    cpu_batchnorm_backward(be, &p.bn, grouped_in, bn_gamma, save_mean, save_invstd, dactivated,
                           dnormed, dgamma, dbeta);
    regroup(dnormed, din, k, s->rows, X, 0);
}

/* ------------------------------------------------------------ open, close */

pmoe_status cpu_fast_open(cpu_impl *impl, pmoe_error *err) {
    struct cpu_fast *f = calloc(1, sizeof *f);
    if (!f) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the CPU fast path");
    if (!ok(dnnl_engine_create(&f->engine, dnnl_cpu, 0)) ||
        !ok(dnnl_stream_create(&f->stream, f->engine, dnnl_stream_default_flags))) {
        if (f->engine) dnnl_engine_destroy(f->engine);
        free(f);
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "train.cpu_kernels = fast: oneDNN has no CPU engine here; use reference");
    }
    impl->fast = f;
    pmoe_ops *o = &impl->ops;
    o->conv2d_forward = fast_conv2d_forward;
    o->conv2d_backward = fast_conv2d_backward;
    o->moe_experts_forward = fast_experts_forward;
    o->moe_experts_backward = fast_experts_backward;
    return PMOE_OK;
}

void cpu_fast_close(cpu_impl *impl) {
    struct cpu_fast *f = impl->fast;
    if (!f) return;
    for (entry *e = f->entries, *next; e; e = next) {
        next = e->next;
        conv_entry_free(&e->conv);
        free(e);
    }
    free(f->ex.out_t);
    dnnl_stream_destroy(f->stream);
    dnnl_engine_destroy(f->engine);
    free(f);
    impl->fast = NULL;
}
