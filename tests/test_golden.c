/* test_golden.c: the two-layer pMoE (joint, renormalised gate) and the CNN
 * against PyTorch.
 *
 * tests/fixtures/golden_two_layer.txt holds, per case, float32 inputs
 * (images, labels, router, expert and output weights) and what a float64
 * PyTorch autograd implementation (tools/make_golden.py) computes from them:
 * the loss, the logits, the routing (selected patches and gate values) and
 * the gradients of every weight. The test loads the same weights into the
 * engine, runs forward and backward, and compares; then again with the
 * CPU's AVX-512 kernels switched off (the portable OpenBLAS paths).
 *
 * Tolerance: "1e-5 relative", scaled per tensor: an element passes when
 * |got - want| <= 1e-5 * |want| + 1e-5 * max_i |want_i| over that tensor, so
 * a near-zero element (a gradient that cancels) is judged against the size of
 * the tensor it belongs to, not on its own. The selected patch indices must
 * match exactly. A missing or malformed fixture is a failure, not a skip. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_dot.h"
#include "model/model.h"
#include "model/two_layer.h"
#include "pmoe/config.h"
#include "test_util.h"

#define FIXTURE PMOE_SOURCE_DIR "/tests/fixtures/golden_two_layer.txt"
#define RTOL 1e-5

/* ---- the fixture ---------------------------------------------------------- */

enum { MAX_TENSORS = 16 };

typedef struct golden_tensor {
    char name[32];
    int64_t count;
    double *v;
} golden_tensor;

typedef struct golden_case {
    char name[64];
    char model[16], gate[16];
    int batch, channels, height, width, patch, experts, topl, hidden, classes;
    golden_tensor t[MAX_TENSORS];
    int tensors;
} golden_case;

typedef struct reader {
    const char *path;
    char *text; /* the whole file; comments blanked */
    char *at;   /* next unread character */
    int line;   /* line of the last token */
    char tok[256];
} reader;

static void die(const reader *r, const char *what) {
    fprintf(stderr, "FAIL %s:%d: malformed fixture: %s (near \"%s\")\n", r->path, r->line, what,
            r->tok);
    exit(1);
}

/* Next whitespace-separated token into r->tok; 0 at the end of the file. */
static int next_token(reader *r) {
    while (*r->at && isspace((unsigned char)*r->at)) {
        if (*r->at == '\n') r->line++;
        r->at++;
    }
    if (!*r->at) {
        r->tok[0] = 0;
        return 0;
    }
    size_t n = 0;
    while (*r->at && !isspace((unsigned char)*r->at)) {
        if (n + 1 >= sizeof r->tok) die(r, "token too long");
        r->tok[n++] = *r->at++;
    }
    r->tok[n] = 0;
    return 1;
}

static void expect_token(reader *r, const char *what) {
    if (!next_token(r)) die(r, what);
}

static double parse_double(reader *r) {
    expect_token(r, "the file ends inside a tensor");
    char *end;
    errno = 0;
    double v = strtod(r->tok, &end);
    if (*end || end == r->tok || errno == ERANGE || !isfinite(v)) die(r, "not a finite number");
    return v;
}

static long parse_long(const reader *r, const char *s, long lo, long hi, const char *what) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || end == s || errno || v < lo || v > hi) die(r, what);
    return v;
}

static void parse_shape(reader *r, golden_case *c) {
    /* key=value tokens up to the next keyword */
    struct {
        const char *key;
        int *dst;
    } ints[] = {
        {"batch", &c->batch}, {"channels", &c->channels}, {"height", &c->height},
        {"width", &c->width}, {"patch", &c->patch},       {"experts", &c->experts},
        {"topl", &c->topl},   {"hidden", &c->hidden},     {"classes", &c->classes},
    };
    const int n_ints = (int)(sizeof ints / sizeof ints[0]);
    for (int i = 0; i < n_ints; i++) *ints[i].dst = -1;
    for (;;) {
        char *save = r->at;
        int save_line = r->line;
        if (!next_token(r) || !strchr(r->tok, '=')) {
            r->at = save; /* not a key=value: give the token back */
            r->line = save_line;
            break;
        }
        char *eq = strchr(r->tok, '=');
        *eq = 0;
        const char *key = r->tok, *value = eq + 1;
        int known = 0;
        for (int i = 0; i < n_ints; i++)
            if (!strcmp(key, ints[i].key)) {
                *ints[i].dst = (int)parse_long(r, value, 1, 1 << 20, "bad shape value");
                known = 1;
            }
        if (!strcmp(key, "model") || !strcmp(key, "gate")) {
            char *dst = !strcmp(key, "model") ? c->model : c->gate;
            if (strlen(value) >= 16) die(r, "shape value too long");
            strcpy(dst, value);
            known = 1;
        }
        if (!known) die(r, "unknown shape key");
    }
    for (int i = 0; i < n_ints; i++)
        if (*ints[i].dst < 0) die(r, "shape line lacks a key");
    if (strcmp(c->model, "pmoe") && strcmp(c->model, "cnn"))
        die(r, "model is neither pmoe nor cnn");
    if (strcmp(c->gate, "renorm") && strcmp(c->gate, "ones"))
        die(r, "gate is neither renorm nor ones");
}

static void parse_tensor(reader *r, golden_case *c) {
    if (c->tensors == MAX_TENSORS) die(r, "too many tensors in a case");
    golden_tensor *t = &c->t[c->tensors++];
    expect_token(r, "tensor without a name");
    if (strlen(r->tok) >= sizeof t->name) die(r, "tensor name too long");
    strcpy(t->name, r->tok);
    for (int i = 0; i < c->tensors - 1; i++)
        if (!strcmp(c->t[i].name, t->name)) die(r, "tensor given twice");
    expect_token(r, "tensor without a count");
    t->count = parse_long(r, r->tok, 1, 1 << 24, "bad tensor count");
    t->v = malloc((size_t)t->count * sizeof(double));
    if (!t->v) die(r, "out of memory");
    for (int64_t i = 0; i < t->count; i++) t->v[i] = parse_double(r);
}

/* Reads every case; exits with a clear message when the file is missing or
 * does not follow the format. */
static golden_case *load_fixture(const char *path, int *n_cases) {
    reader r = {.path = path, .line = 1};
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr,
                "FAIL: cannot open the fixture %s: %s\n"
                "  (regenerate it with /usr/bin/python3 tools/make_golden.py)\n",
                path, strerror(errno));
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    r.text = malloc((size_t)size + 1);
    if (!r.text || fread(r.text, 1, (size_t)size, f) != (size_t)size) die(&r, "cannot read");
    fclose(f);
    r.text[size] = 0;
    /* Blank comment lines ('#' in the first column), keeping the newlines. */
    for (char *p = r.text; *p;) {
        if (*p == '#')
            while (*p && *p != '\n') *p++ = ' ';
        while (*p && *p != '\n') p++;
        if (*p) p++;
    }
    r.at = r.text;

    if (!next_token(&r) || strcmp(r.tok, "format")) die(&r, "expected \"format pmoe-golden 1\"");
    expect_token(&r, "format without a name");
    if (strcmp(r.tok, "pmoe-golden")) die(&r, "not a pmoe-golden file");
    expect_token(&r, "format without a version");
    if (strcmp(r.tok, "1")) die(&r, "unsupported format version");

    golden_case *cases = NULL;
    int n = 0;
    while (next_token(&r)) {
        if (strcmp(r.tok, "case")) die(&r, "expected \"case\"");
        golden_case *grown = realloc(cases, (size_t)(n + 1) * sizeof *cases);
        if (!grown) die(&r, "out of memory");
        cases = grown;
        golden_case *c = &cases[n++];
        memset(c, 0, sizeof *c);
        expect_token(&r, "case without a name");
        if (strlen(r.tok) >= sizeof c->name) die(&r, "case name too long");
        strcpy(c->name, r.tok);
        expect_token(&r, "case without a shape line");
        if (strcmp(r.tok, "shape")) die(&r, "expected \"shape\" after \"case\"");
        parse_shape(&r, c);
        for (;;) {
            expect_token(&r, "the file ends inside a case (no \"end\")");
            if (!strcmp(r.tok, "end")) break;
            if (strcmp(r.tok, "tensor")) die(&r, "expected \"tensor\" or \"end\"");
            parse_tensor(&r, c);
        }
    }
    if (!n) die(&r, "no cases");
    free(r.text);
    *n_cases = n;
    return cases;
}

static void free_fixture(golden_case *cases, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cases[i].tensors; j++) free(cases[i].t[j].v);
    free(cases);
}

/* The tensor `name` of case c with exactly `count` values, or a failure. */
static const golden_tensor *need(const golden_case *c, const char *name, int64_t count) {
    for (int i = 0; i < c->tensors; i++)
        if (!strcmp(c->t[i].name, name)) {
            if (c->t[i].count != count) {
                fprintf(stderr, "FAIL: case %s: tensor %s has %lld values, the model needs %lld\n",
                        c->name, name, (long long)c->t[i].count, (long long)count);
                exit(1);
            }
            return &c->t[i];
        }
    fprintf(stderr, "FAIL: case %s: the fixture lacks tensor %s\n", c->name, name);
    exit(1);
}

/* ---- the comparison ------------------------------------------------------- */

static float *to_float(const golden_tensor *t) {
    float *f = malloc((size_t)t->count * sizeof(float));
    if (!f) exit(2);
    for (int64_t i = 0; i < t->count; i++) f[i] = (float)t->v[i];
    return f;
}

static void copy_to_device(pmoe_backend *be, void *dst, const void *src, size_t bytes) {
    pmoe_error err = {0};
    if (be->copy_in(be, dst, src, bytes, &err)) {
        fprintf(stderr, "FAIL: copy_in: %s\n", err.message);
        exit(1);
    }
}

/* Reads back `count` floats of backend memory. */
static float *from_device(pmoe_backend *be, const void *src, int64_t count) {
    float *f = malloc((size_t)count * sizeof(float));
    pmoe_error err = {0};
    if (!f || be->copy_out(be, f, src, (size_t)count * sizeof(float), &err)) {
        fprintf(stderr, "FAIL: copy_out: %s\n", err.message);
        exit(1);
    }
    return f;
}

/* rtol 1e-5 per element plus atol 1e-5 * max |want| over the tensor. */
static void compare(const golden_case *c, const char *what, const float *got,
                    const golden_tensor *want) {
    double scale = 0.0;
    for (int64_t i = 0; i < want->count; i++) scale = fmax(scale, fabs(want->v[i]));
    char label[128];
    snprintf(label, sizeof label, "%s %s", c->name, what);
    check_close(label, got, want->v, want->count, RTOL * scale, RTOL);
}

static void run_case(pmoe_backend *be, const golden_case *c) {
    const int pmoe = !strcmp(c->model, "pmoe");
    const int n = (c->height / c->patch) * (c->width / c->patch),
              d = c->channels * c->patch * c->patch;
    const int64_t B = c->batch, k = c->experts, l = c->topl, h = c->hidden / c->experts,
                  C = c->classes;
    printf("case %s: %s B=%lld n=%d d=%d k=%lld l=%lld h=%lld c=%lld\n", c->name, c->model,
           (long long)B, n, d, (long long)k, (long long)l, (long long)h, (long long)C);
    if (c->height % c->patch || c->width % c->patch || c->hidden % c->experts ||
        (!pmoe && (k != 1 || l != n)) || l > n || strcmp(c->gate, pmoe ? "renorm" : "ones")) {
        fprintf(stderr, "FAIL: case %s: inconsistent shape line\n", c->name);
        exit(1);
    }

    pmoe_config cfg;
    pmoe_config_default(&cfg);
    cfg.model.type = pmoe ? PMOE_MODEL_PMOE : PMOE_MODEL_CNN;
    cfg.model.experts = c->experts;
    cfg.model.topl = c->topl;
    cfg.model.hidden = c->hidden;
    cfg.model.patch = c->patch;
    cfg.model.gate = PMOE_GATE_RENORM;
    cfg.model.train_output = 1;
    cfg.train.mode = PMOE_TRAIN_JOINT;
    cfg.train.momentum = 0.0;

    pmoe_model *m = NULL;
    pmoe_error err = {0};
    if (pmoe_model_create(be, &cfg, c->channels, c->height, c->width, c->patch, c->classes, B, &m,
                          &err)) {
        fprintf(stderr, "FAIL: case %s: pmoe_model_create: %s\n", c->name, err.message);
        test_failed++;
        return;
    }
    const two_layer_model *t = two_layer_of(m);
    CHECK(t->patch_count == n && t->patch_dim == d && t->experts == k && t->topl == l &&
          t->hidden == h && m->classes == C && t->has_router == pmoe);

    /* Inputs. */
    const golden_tensor *images = need(c, "images", B * c->channels * c->height * c->width);
    const golden_tensor *labels = need(c, "labels", B);
    const golden_tensor *experts = need(c, "experts", k * h * d);
    const golden_tensor *output = need(c, "output", k * h * C);
    float *f = to_float(images);
    copy_to_device(be, m->images, f, (size_t)images->count * sizeof(float));
    free(f);
    int32_t *lab = malloc((size_t)B * sizeof(int32_t));
    for (int64_t b = 0; b < B; b++) {
        lab[b] = (int32_t)labels->v[b];
        if (lab[b] != labels->v[b] || lab[b] < 0 || lab[b] >= (C == 1 ? 2 : C)) {
            fprintf(stderr, "FAIL: case %s: bad label %g\n", c->name, labels->v[b]);
            exit(1);
        }
    }
    copy_to_device(be, m->labels, lab, (size_t)B * sizeof(int32_t));
    free(lab);
    const golden_tensor *sources[PARAM_COUNT] = {pmoe ? need(c, "router", k * d) : NULL, experts,
                                                 output};
    for (int i = 0; i < PARAM_COUNT; i++) {
        if (!sources[i]) continue;
        CHECK(m->params[i].value.data != NULL && m->params[i].trainable);
        CHECK(pmoe_tensor_numel(&m->params[i].value) == sources[i]->count);
        f = to_float(sources[i]);
        copy_to_device(be, m->params[i].value.data, f, (size_t)sources[i]->count * sizeof(float));
        free(f);
    }

    /* Forward, loss and backward. */
    pmoe_model_forward(m, B);
    double loss = NAN;
    int64_t correct = -1;
    if (pmoe_model_loss(m, 1, &loss, &correct, &err) || be->synchronize(be, &err)) {
        fprintf(stderr, "FAIL: case %s: loss: %s\n", c->name, err.message);
        test_failed++;
        pmoe_model_free(m);
        return;
    }

    float got_loss = (float)loss;
    compare(c, "loss", &got_loss, need(c, "loss", 1));
    float *got = from_device(be, m->logits, B * C);
    compare(c, "logits", got, need(c, "logits", B * C));
    free(got);
    if (pmoe) {
        const golden_tensor *sel = need(c, "selected", B * k * l);
        int32_t *got_sel = malloc((size_t)sel->count * sizeof(int32_t));
        if (be->copy_out(be, got_sel, t->selected, (size_t)sel->count * sizeof(int32_t), &err))
            exit(1);
        int64_t wrong = 0, first = -1;
        for (int64_t i = 0; i < sel->count; i++)
            if (got_sel[i] != (int32_t)sel->v[i]) {
                wrong++;
                if (first < 0) first = i;
            }
        char label[128];
        snprintf(label, sizeof label, "%s selected (exact)", c->name);
        printf("  %-44s n=%-7lld %lld differ\n", label, (long long)sel->count, (long long)wrong);
        CHECK_MSG(wrong == 0,
                  "case %s: %lld selected indices differ, first at %lld: got %d want %g", c->name,
                  (long long)wrong, (long long)first, got_sel[first], sel->v[first]);
        free(got_sel);
        got = from_device(be, t->gate, B * k * l);
        compare(c, "gate", got, need(c, "gate", B * k * l));
        free(got);
    }
    static const char *grad_names[PARAM_COUNT] = {"router_grad", "experts_grad", "output_grad"};
    for (int i = 0; i < PARAM_COUNT; i++) {
        if (!sources[i]) continue;
        got = from_device(be, m->params[i].grad.data, sources[i]->count);
        compare(c, grad_names[i], got, need(c, grad_names[i], sources[i]->count));
        free(got);
    }
    pmoe_model_free(m);
}

int main(void) {
    int n_cases = 0;
    golden_case *cases = load_fixture(FIXTURE, &n_cases);
    pmoe_backend *be = NULL;
    pmoe_error err = {0};
    if (pmoe_cpu_backend_create(1, &be, &err)) {
        fprintf(stderr, "FAIL: cpu backend: %s\n", err.message);
        return 1;
    }
    printf("fixture %s: %d cases; rtol %.0e, atol %.0e * max |want| per tensor\n", FIXTURE, n_cases,
           RTOL, RTOL);
    for (int i = 0; i < n_cases; i++) run_case(be, &cases[i]);
    /* Again through the portable paths (OpenBLAS, no AVX-512 kernels: what
     * CPUs without AVX-512 run), which CI's AVX-512 machine would otherwise
     * never take end to end. */
    if (cpu_simd_kernels(-1)) {
        printf("again with the AVX-512 kernels off (the portable paths)\n");
        cpu_simd_kernels(0);
        for (int i = 0; i < n_cases; i++) run_case(be, &cases[i]);
        cpu_simd_kernels(1);
    }
    CHECK_MSG(n_cases == 4, "expected the 4 cases of make_golden.py, found %d", n_cases);
    be->destroy(be);
    free_fixture(cases, n_cases);
    return test_finish("test_golden");
}
