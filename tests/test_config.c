/* test_config.c: every way a config can be wrong ends in PMOE_ERR_CONFIG (or
 * IO for a missing file) with a message naming the key, the file and line, or
 * the problem; good configs apply exactly; the written INI reads back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmoe/config.h"
#include "cuda/cuda_backend.h"
#include "pmoe/train.h"
#include "test_util.h"

/* Expects `call` to fail with code and a message containing needle. */
#define EXPECT_FAIL(call, code_want, needle)                                                       \
    do {                                                                                           \
        pmoe_status s_ = (call);                                                                   \
        CHECK_MSG(s_ == (code_want) && strstr(err.message, (needle)),                              \
                  "status %d (want %d), message '%s' should contain '%s'", s_, code_want,          \
                  err.message, needle);                                                            \
        err.message[0] = '\0';                                                                     \
    } while (0)

static pmoe_status train_with(const char *const *sets, int count, pmoe_error *err) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_config_set(&cfg, "data.source=synthetic", NULL);
    pmoe_config_set(&cfg, "data.train_size=40", NULL);
    pmoe_config_set(&cfg, "data.test_size=20", NULL);
    pmoe_config_set(&cfg, "train.epochs=1", NULL);
    for (int i = 0; i < count; i++) {
        pmoe_status s = pmoe_config_set(&cfg, sets[i], err);
        if (s) return s;
    }
    pmoe_train_result res;
    return pmoe_train(&cfg, NULL, NULL, &res, err);
}

int main(void) {
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_config_default(&cfg);
    CHECK(pmoe_config_check(&cfg, &err) == PMOE_OK);
    /* The paper's two-layer settings are the defaults. */
    CHECK(cfg.train.lr == 0.2 && cfg.train.batch == 20 && cfg.train.momentum == 0.0);
    CHECK(cfg.model.experts == 8 && cfg.model.topl == 6 && cfg.model.hidden == 40);

    /* Good values of every type land in the struct. */
    CHECK(pmoe_config_set(&cfg, "model.topl=3", &err) == PMOE_OK && cfg.model.topl == 3);
    CHECK(pmoe_config_set(&cfg, "train.lr=0.05", &err) == PMOE_OK && cfg.train.lr == 0.05);
    CHECK(pmoe_config_set(&cfg, "model.type=cnn", &err) == PMOE_OK &&
          cfg.model.type == PMOE_MODEL_CNN);
    CHECK(pmoe_config_set(&cfg, "data.path=/x/y", &err) == PMOE_OK &&
          !strcmp(cfg.data.path, "/x/y"));
    CHECK(pmoe_config_set(&cfg, "model.train_output=true", &err) == PMOE_OK &&
          cfg.model.train_output == 1);
    CHECK(pmoe_config_set(&cfg, "data.train_size=12345", &err) == PMOE_OK &&
          cfg.data.train_size == 12345);
    CHECK(pmoe_config_set(&cfg, "train.mode=separate", &err) == PMOE_OK &&
          cfg.train.mode == PMOE_TRAIN_SEPARATE);

    /* Malformed overrides. */
    pmoe_config_default(&cfg);
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.foo=1", &err), PMOE_ERR_CONFIG,
                "unknown key 'model.foo'");
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.topl", &err), PMOE_ERR_CONFIG, "section.key=value");
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.topl=abc", &err), PMOE_ERR_CONFIG, "model.topl");
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.topl=3x", &err), PMOE_ERR_CONFIG,
                "expected an integer");
    EXPECT_FAIL(pmoe_config_set(&cfg, "train.lr=fast", &err), PMOE_ERR_CONFIG, "train.lr");
    EXPECT_FAIL(pmoe_config_set(&cfg, "train.lr=nan", &err), PMOE_ERR_CONFIG, "train.lr");
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.type=mlp", &err), PMOE_ERR_CONFIG, "pmoe | cnn");
    /* Out of range: k < 1, a class index out of range, l < 1. */
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.experts=0", &err), PMOE_ERR_CONFIG, "model.experts");
    EXPECT_FAIL(pmoe_config_set(&cfg, "data.pos_class=10", &err), PMOE_ERR_CONFIG,
                "data.pos_class");
    EXPECT_FAIL(pmoe_config_set(&cfg, "data.neg_class=-1", &err), PMOE_ERR_CONFIG,
                "data.neg_class");
    EXPECT_FAIL(pmoe_config_set(&cfg, "model.topl=0", &err), PMOE_ERR_CONFIG, "model.topl");
    CHECK(cfg.model.experts == 8 && cfg.model.topl == 6); /* failed sets change nothing */

    /* m not divisible by k; equal classes; a device that is no device. */
    pmoe_config_set(&cfg, "model.hidden=42", NULL);
    EXPECT_FAIL(pmoe_config_check(&cfg, &err), PMOE_ERR_CONFIG,
                "model.hidden = 42 is not divisible");
    pmoe_config_default(&cfg);
    pmoe_config_set(&cfg, "data.source=mosaic", NULL);
    pmoe_config_set(&cfg, "data.neg_class=1", NULL);
    EXPECT_FAIL(pmoe_config_check(&cfg, &err), PMOE_ERR_CONFIG,
                "data.pos_class and data.neg_class");
    pmoe_config_default(&cfg);
    pmoe_config_set(&cfg, "train.device=tpu", NULL);
    EXPECT_FAIL(pmoe_config_check(&cfg, &err), PMOE_ERR_CONFIG, "train.device");

    /* INI text: sections, comments, errors with origin and line. */
    pmoe_config_default(&cfg);
    CHECK(pmoe_config_apply_ini(&cfg,
                                "; a comment\n[model]\nexperts = 4\ntopl = 2\n[train]\nlr = 0.1\n",
                                "a.ini", &err) == PMOE_OK);
    CHECK(cfg.model.experts == 4 && cfg.model.topl == 2 && cfg.train.lr == 0.1);
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, "[model]\nexperts = 4\nbogus = 1\n", "b.ini", &err),
                PMOE_ERR_CONFIG, "b.ini:3: unknown key 'model.bogus'");
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, "[train]\nthis line is not ini\n", "c.ini", &err),
                PMOE_ERR_CONFIG, "c.ini:2");
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, "[nosuch]\nx = 1\n", "d.ini", &err), PMOE_ERR_CONFIG,
                "'nosuch.x'");
    /* a missing file is a config error (exit 2), like a bad key in it */
    EXPECT_FAIL(pmoe_config_load_file(&cfg, "/nonexistent/pmoe.ini", &err), PMOE_ERR_CONFIG,
                "/nonexistent/pmoe.ini");
    /* The first error in the file is the one named, with its own line. */
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, "[data]\nsource = bad\nnot ini\n", "e.ini", &err),
                PMOE_ERR_CONFIG, "e.ini:2: data.source: 'bad' is not one of");
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, "not ini\n[data]\nsource = bad\n", "f.ini", &err),
                PMOE_ERR_CONFIG, "f.ini:1: not a 'key = value' line");
    /* inih would read an indented line after a key as a new value for that
     * key (data.path = "train_size = 5"); it is refused instead. */
    pmoe_config_default(&cfg);
    EXPECT_FAIL(
        pmoe_config_apply_ini(&cfg, "[data]\npath = /a\n\n  train_size = 5\n", "g.ini", &err),
        PMOE_ERR_CONFIG, "g.ini:4: indented line after a key");
    CHECK(strcmp(cfg.data.path, "/a") == 0);
    CHECK(pmoe_config_apply_ini(&cfg,
                                "[data]\n  seed = 7\n\t; indented comment\n[model]\n  "
                                "experts = 2\r\n",
                                "h.ini", &err) == PMOE_OK);
    CHECK(cfg.data.seed == 7 && cfg.model.experts == 2);
    /* A line longer than inih's buffer would be cut in two; it is refused. */
    char long_ini[512];
    snprintf(long_ini, sizeof long_ini, "[data]\npath = /%0200d\nseed = 3\n", 0);
    EXPECT_FAIL(pmoe_config_apply_ini(&cfg, long_ini, "i.ini", &err), PMOE_ERR_CONFIG,
                "i.ini:2: line of 208 characters");
    CHECK(strcmp(cfg.data.path, "/a") == 0);
    snprintf(long_ini, sizeof long_ini, "seed=%0193d", 3); /* 198 characters: the longest */
    char ok_ini[600];
    snprintf(ok_ini, sizeof ok_ini, "[data]\n%s\n", long_ini);
    CHECK_MSG(pmoe_config_apply_ini(&cfg, ok_ini, "j.ini", &err) == PMOE_OK, "%s", err.message);
    CHECK(cfg.data.seed == 3);
    /* A string the saved INI could not carry exactly is refused up front. */
    EXPECT_FAIL(pmoe_config_set(&cfg, "train.device=a\nb", &err), PMOE_ERR_CONFIG,
                "train.device: the value holds a control character");
    EXPECT_FAIL(pmoe_config_set(&cfg, "data.path=/x ;y", &err), PMOE_ERR_CONFIG, "at character 4");
    EXPECT_FAIL(pmoe_config_set(&cfg, "data.path=/x ", &err), PMOE_ERR_CONFIG,
                "whitespace at either end");
    snprintf(long_ini, sizeof long_ini, "data.path=/%0199d", 0);
    EXPECT_FAIL(pmoe_config_set(&cfg, long_ini, &err), PMOE_ERR_CONFIG,
                "data.path: value of 200 characters; at most 191 fit");
    CHECK(pmoe_config_set(&cfg, "data.path=/x;y z", &err) == PMOE_OK);
    snprintf(long_ini, sizeof long_ini, "data.path=/%0190d", 0); /* "path = " + 191: 198 */
    CHECK_MSG(pmoe_config_set(&cfg, long_ini, &err) == PMOE_OK, "%s", err.message);
    char *saved = malloc(8192);
    pmoe_config_to_ini(&cfg, saved, 8192);
    pmoe_config back;
    pmoe_config_default(&back);
    CHECK_MSG(pmoe_config_apply_ini(&back, saved, "saved", &err) == PMOE_OK, "%s", err.message);
    CHECK(strcmp(back.data.path, cfg.data.path) == 0);
    free(saved);

    /* The written INI holds every key and reads back to the same config. */
    pmoe_config a, b;
    pmoe_config_default(&a);
    pmoe_config_set(&a, "model.topl=5", NULL);
    pmoe_config_set(&a, "train.lr=0.123456789", NULL);
    pmoe_config_set(&a, "data.source=idx", NULL);
    char text_a[16384], text_b[16384];
    int len = pmoe_config_to_ini(&a, text_a, sizeof text_a);
    CHECK(len > 0 && len < (int)sizeof text_a);
    pmoe_config_default(&b);
    CHECK(pmoe_config_apply_ini(&b, text_a, "roundtrip", &err) == PMOE_OK);
    pmoe_config_to_ini(&b, text_b, sizeof text_b);
    CHECK(strcmp(text_a, text_b) == 0);
    CHECK(b.model.topl == 5 && b.train.lr == 0.123456789 && b.data.source == PMOE_DATA_IDX);
    for (const char *const *k = pmoe_config_keys(); *k; k++) {
        const char *dot = strchr(*k, '.');
        char line[128];
        snprintf(line, sizeof line, "\n%s = ", dot + 1);
        CHECK_MSG(strstr(text_a, line) != NULL, "key %s missing from the written INI", *k);
    }

    /* Checks that need the data (synthetic: 1 x 16 "image", n = 16, natural patch 1). */
    EXPECT_FAIL(train_with((const char *[]){"model.topl=17"}, 1, &err), PMOE_ERR_CONFIG,
                "model.topl = 17 exceeds the 16 patches");
    EXPECT_FAIL(train_with((const char *[]){"model.patch=3"}, 1, &err), PMOE_ERR_CONFIG,
                "model.patch = 3 does not divide");
    EXPECT_FAIL(
        train_with((const char *[]){"train.mode=separate", "model.experts=4", "model.hidden=8"}, 3,
                   &err),
        PMOE_ERR_CONFIG, "model.experts = 2");
    EXPECT_FAIL(train_with((const char *[]){"train.mode=separate", "model.type=cnn"}, 2, &err),
                PMOE_ERR_CONFIG, "model.type = pmoe");
    if (pmoe_cuda_device_count(NULL, 0) == 0) { /* asking for a GPU that is not there */
        pmoe_status s = train_with((const char *[]){"train.device=cuda"}, 1, &err);
        CHECK_MSG(s != PMOE_OK && strstr(err.message, "train.device = cuda"), "%d: %s", s,
                  err.message);
    }
    EXPECT_FAIL(
        train_with((const char *[]){"data.source=mosaic", "data.path=/nonexistent"}, 2, &err),
        PMOE_ERR_IO, "/nonexistent");
    CHECK(train_with((const char *[]){"model.topl=16"}, 1, &err) == PMOE_OK); /* l = n is fine */
    return test_finish("test_config");
}
