/* test_cuda_guard.c: the non-finite guard (backend.h, nonfinite_guard) on
 * the CUDA backend against the CPU backend and the expected answer.
 *
 * Runs of 12 steps over random cases (guard_cases.h: NaN and Inf at random
 * places in random arrays, about half the steps poisoned), with and
 * without hold, each backend keeping its verdicts in a ring in its own
 * memory and nothing read back until the run ends, as training reads them
 * every train.sync_every steps: every verdict and the recorded first bad
 * step must equal what the case list says, on both backends. Each step
 * also queues a momentum SGD update that reads its verdict: parameters and
 * velocity must move on the good steps only (the CPU backend bit for bit
 * with cpu_sgd_update run by hand on those steps, the CUDA backend within
 * rounding). Exits 77 (skipped) without a CUDA device. */
#include "backend/cpu_ops.h"
#include "guard_cases.h"
#include "gpu_test_util.h"

enum { STEPS = 12, PARAMS = 1000 };

/* One run on be: per step, the case's arrays copied in, then the op; the
 * verdicts and the guard come back once at the end. */
static void run_on(pmoe_backend *be, const guard_case *cases, int hold, int64_t first_step,
                   const float *param0, const float *grad, int32_t *verdicts, int32_t *guard_out,
                   float *param_out, float *velocity_out) {
    static const int32_t zero[PMOE_GUARD_WORDS] = {0};
    int32_t *guard = to_device(be, zero, sizeof zero);
    int32_t *ring = poisoned(be, STEPS * sizeof(int32_t));
    float *device[STEPS][GUARD_MAX_ARRAYS];
    static const float zeros[PARAMS] = {0};
    float *param = to_device(be, param0, sizeof zeros),
          *velocity = to_device(be, zeros, sizeof zeros);
    float *dgrad = to_device(be, grad, sizeof zeros);
    for (int s = 0; s < STEPS; s++) {
        const guard_case *c = &cases[s];
        for (int i = 0; i < c->arrays; i++)
            device[s][i] = to_device(be, c->x[i], (size_t)c->count[i] * sizeof(float));
        be->ops->nonfinite_guard(be, c->arrays, (const float *const *)device[s], c->count,
                                 first_step + s, hold, guard, ring + s);
        be->ops->sgd_update(be, PARAMS, param, dgrad, velocity, 0.1f, 0.9f, 1e-3f, ring + s);
    }
    int32_t *v = from_device(be, ring, STEPS * sizeof(int32_t));
    int32_t *g = from_device(be, guard, sizeof zero);
    memcpy(verdicts, v, STEPS * sizeof(int32_t));
    memcpy(guard_out, g, sizeof zero);
    free(v);
    free(g);
    float *p = from_device(be, param, sizeof zeros), *vel = from_device(be, velocity, sizeof zeros);
    memcpy(param_out, p, sizeof zeros);
    memcpy(velocity_out, vel, sizeof zeros);
    free(p);
    free(vel);
    device_free(be, param, sizeof zeros);
    device_free(be, velocity, sizeof zeros);
    device_free(be, dgrad, sizeof zeros);
    for (int s = 0; s < STEPS; s++)
        for (int i = 0; i < cases[s].arrays; i++)
            device_free(be, device[s][i], (size_t)cases[s].count[i] * sizeof(float));
    device_free(be, ring, STEPS * sizeof(int32_t));
    device_free(be, guard, sizeof zero);
}

int main(void) {
    pmoe_backend *gpu = gpu_or_skip("test_cuda_guard");
    pmoe_backend *cpu = NULL;
    pmoe_error err = {PMOE_OK, ""};
    gpu_die(pmoe_cpu_backend_create(0, &cpu, &err), &err);
    const uint64_t seed = test_seed();
    pmoe_rng r = pmoe_rng_make(seed, 0x6a4d);
    int poisoned_steps = 0;
    for (int run = 0; run < 4; run++) {
        const int hold = run % 2;
        guard_case cases[STEPS];
        for (int s = 0; s < STEPS; s++) {
            /* the first steps clean: hold must start holding mid-run */
            cases[s] = guard_case_make(&r, run == 3 ? 200000 : 2000, s >= 4 || run == 2);
            poisoned_steps += cases[s].expect != 0;
        }
        const int64_t first_step = run == 2 ? ((int64_t)3 << 32) + 5 : 1;
        int32_t want[STEPS], want_guard[PMOE_GUARD_WORDS] = {0};
        for (int s = 0; s < STEPS; s++) {
            int32_t after[PMOE_GUARD_WORDS];
            guard_expect(&cases[s], want_guard, first_step + s, hold, after, &want[s]);
            memcpy(want_guard, after, sizeof after);
        }
        int32_t got_gpu[STEPS], got_cpu[STEPS], guard_gpu[PMOE_GUARD_WORDS],
            guard_cpu[PMOE_GUARD_WORDS];
        float *param0 = frand(PARAMS, seed + 11 * run, -1, 1),
              *grad = frand(PARAMS, seed + 7, -1, 1);
        float *p_gpu = fbuf(PARAMS), *v_gpu = fbuf(PARAMS), *p_cpu = fbuf(PARAMS),
              *v_cpu = fbuf(PARAMS), *p_want = fbuf(PARAMS), *v_want = fbuf(PARAMS);
        memcpy(p_want, param0, PARAMS * sizeof(float));
        memset(v_want, 0, PARAMS * sizeof(float));
        int applied = 0;
        for (int s = 0; s < STEPS; s++)
            if (!want[s]) {
                cpu_sgd_update(NULL, PARAMS, p_want, grad, v_want, 0.1f, 0.9f, 1e-3f, NULL);
                applied++;
            }
        run_on(gpu, cases, hold, first_step, param0, grad, got_gpu, guard_gpu, p_gpu, v_gpu);
        run_on(cpu, cases, hold, first_step, param0, grad, got_cpu, guard_cpu, p_cpu, v_cpu);
        printf("run %d (hold %d): verdicts", run, hold);
        for (int s = 0; s < STEPS; s++) printf(" %d", want[s]);
        printf("; first bad step %lld\n",
               (long long)((int64_t)(uint32_t)want_guard[PMOE_GUARD_STEP_HIGH] << 32 |
                           (uint32_t)want_guard[PMOE_GUARD_STEP_LOW]));
        check_exact_i("  cuda verdicts", got_gpu, want, STEPS);
        check_exact_i("  cpu verdicts", got_cpu, want, STEPS);
        check_exact_i("  cuda guard", guard_gpu, want_guard, PMOE_GUARD_WORDS);
        check_exact_i("  cpu guard", guard_cpu, want_guard, PMOE_GUARD_WORDS);
        printf("  SGD applied on %d of %d steps\n", applied, STEPS);
        check_exact_f("  cpu params", p_cpu, p_want, PARAMS);
        check_exact_f("  cpu velocity", v_cpu, v_want, PARAMS);
        close_scaled("  cuda params", p_gpu, p_want, PARAMS, 1e-6);
        close_scaled("  cuda velocity", v_gpu, v_want, PARAMS, 1e-6);
        free_all();
    }
    CHECK_MSG(poisoned_steps > 6 && poisoned_steps < 36, "%d of 48 steps poisoned", poisoned_steps);
    pmoe_backend_destroy(cpu);
    pmoe_backend_destroy(gpu);
    return test_finish("test_cuda_guard");
}
