/* test_host_exec.cpp: the host execution emulator itself (host_exec.h).
 *
 * Small kernels written for the purpose check that the emulator behaves as
 * the CUDA programming model says: indices over 3-D grids and blocks, a
 * __syncthreads() that really waits, shared memory that is one array per
 * block and starts poisoned, warp shuffles and ballots with the guide's
 * sub-warp rules, atomics; that a kernel missing a barrier gives different
 * results under different thread orders (what the kernel tests rely on);
 * and that faults the GPU leaves undefined (a barrier some thread never
 * reaches, a warp op with a lane missing, too much shared memory, a bad
 * launch) are reported with a message instead of hanging. */
#include <stdio.h>
#include <string.h>

#include <vector>

#include "host_exec.h"
#include "pmoe_kernels.h"

extern "C" {
#include "test_util.h"
}

static __global__ void indices_kernel(int *out) {
    const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int per_block = blockDim.x * blockDim.y * blockDim.z;
    out[block * per_block + thread] = block * 1000 + thread;
}

static __global__ void neighbour_kernel(int *out, int with_barrier) {
    PMOE_SHARED(int, buf, 96);
    const int t = threadIdx.x;
    buf[t] = t * 3 + blockIdx.x;
    if (with_barrier) __syncthreads();
    out[blockIdx.x * 96 + t] = buf[(t + 1) % 96];
}

static __global__ void poison_kernel(int *out) {
    PMOE_SHARED(int, buf, 32);
    out[threadIdx.x] = buf[threadIdx.x]; /* read before any write */
    __syncthreads();
    buf[threadIdx.x] = 5;
}

static __global__ void dynamic_kernel(float *out) {
    PMOE_SHARED_DYNAMIC(float, buf);
    PMOE_SHARED(float, fixed, 64);
    fixed[threadIdx.x] = 1.0f;
    buf[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = buf[63 - threadIdx.x] + fixed[0];
}

static __global__ void shuffle_kernel(int *out) {
    const int t = threadIdx.x, lane = t & 31;
    int *o = out + t * 8;
    o[0] = __shfl_xor_sync(0xffffffffu, t, 5);
    o[1] = __shfl_down_sync(0xffffffffu, t, 3);
    o[2] = __shfl_up_sync(0xffffffffu, t, 2);
    o[3] = __shfl_sync(0xffffffffu, t, 7);
    o[4] = __shfl_down_sync(0xffffffffu, t, 3, 8); /* within segments of 8 */
    o[5] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[6] = __all_sync(0xffffffffu, t >= 0) + 2 * __any_sync(0xffffffffu, lane == 31);
    float sum = (float)lane;
    for (int off = 16; off; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    o[7] = (int)sum;
}

static __global__ void half_warp_kernel(int *out) {
    const int lane = threadIdx.x & 31;
    if (lane < 16) out[lane] = __shfl_xor_sync(0x0000ffffu, lane, 1); /* a legal partial mask */
}

static __global__ void atomic_kernel(int *count, float *sum) {
    atomicAdd(count, 1);
    atomicAdd(sum, 0.5f);
    __syncthreads();
    atomicMax(count + 1, (int)threadIdx.x);
}

static __global__ void divergent_barrier_kernel(int *out) {
    if (threadIdx.x < 10) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

static __global__ void missing_lane_kernel(int *out) {
    const int lane = threadIdx.x & 31;
    if (lane < 16) out[lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
}

static __global__ void too_much_shared_kernel(float *out) {
    PMOE_SHARED(float, big, 13000); /* 52 KB */
    big[threadIdx.x] = 1.0f;
    out[threadIdx.x] = big[threadIdx.x];
}

static int launch_status() { return PMOE_LAUNCH_STATUS(); }

static void expect_fault(const char *what, int rc, const char *needle) {
    const char *msg = pmoe_hx_error_string(rc);
    printf("  %-30s -> %s\n", what, msg);
    CHECK_MSG(rc == PMOE_KERNEL_ERR_EMULATOR && strstr(msg, needle), "%s: rc %d, message '%s'",
              what, rc, msg);
}

int main() {
    printf("indices\n");
    {
        std::vector<int> out(2 * 3 * 2 * 4 * 2 * 3, -1);
        PMOE_LAUNCH(indices_kernel, dim3(2, 3, 2), dim3(4, 2, 3), 0, nullptr, out.data());
        CHECK(launch_status() == 0);
        bool ok = true;
        for (int b = 0; b < 12; b++)
            for (int t = 0; t < 24; t++) ok &= out[b * 24 + t] == b * 1000 + t;
        CHECK_MSG(ok, "3-D grid and block indices");
    }

    printf("barriers and thread orders\n");
    for (int order = 0; order < 3; order++) {
        pmoe_emu_set_order(order, 7);
        std::vector<int> out(2 * 96);
        PMOE_LAUNCH(neighbour_kernel, dim3(2), dim3(96), 0, nullptr, out.data(), 1);
        CHECK(launch_status() == 0);
        bool ok = true;
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 96; t++) ok &= out[b * 96 + t] == ((t + 1) % 96) * 3 + b;
        CHECK_MSG(ok, "with __syncthreads every order reads the neighbour's value (order %d)",
                  order);
    }
    {
        std::vector<int> forward(96), backward(96);
        pmoe_emu_set_order(PMOE_EMU_FORWARD, 0);
        PMOE_LAUNCH(neighbour_kernel, dim3(1), dim3(96), 0, nullptr, forward.data(), 0);
        CHECK(launch_status() == 0);
        pmoe_emu_set_order(PMOE_EMU_BACKWARD, 0);
        PMOE_LAUNCH(neighbour_kernel, dim3(1), dim3(96), 0, nullptr, backward.data(), 0);
        CHECK(launch_status() == 0);
        CHECK_MSG(forward != backward, "without the barrier the orders disagree (the race shows)");
        CHECK_MSG(forward[0] == -1, "forward order reads the poisoned, unwritten neighbour");
        pmoe_emu_set_order(PMOE_EMU_FORWARD, 0);
    }

    printf("shared memory\n");
    {
        std::vector<int> out(32, 0);
        PMOE_LAUNCH(poison_kernel, dim3(2), dim3(32), 0, nullptr, out.data());
        CHECK(launch_status() == 0);
        bool ok = true;
        for (int v : out) ok &= v == -1;
        CHECK_MSG(ok, "shared memory starts as 0xff bytes in every block (the second block too)");
        std::vector<float> f(64);
        PMOE_LAUNCH(dynamic_kernel, dim3(1), dim3(64), 64 * sizeof(float), nullptr, f.data());
        CHECK(launch_status() == 0);
        ok = true;
        for (int t = 0; t < 64; t++) ok &= f[t] == (float)(63 - t) + 1.0f;
        CHECK_MSG(ok, "dynamic and static shared arrays are separate and shared by the block");
    }

    printf("warp operations\n");
    {
        std::vector<int> out(64 * 8, -7);
        PMOE_LAUNCH(shuffle_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
        CHECK(launch_status() == 0);
        bool ok[8] = {true, true, true, true, true, true, true, true};
        for (int t = 0; t < 64; t++) {
            const int lane = t & 31, base = t - lane;
            const int *o = &out[t * 8];
            ok[0] &= o[0] == base + (lane ^ 5);
            ok[1] &= o[1] == (lane + 3 < 32 ? t + 3 : t);
            ok[2] &= o[2] == (lane >= 2 ? t - 2 : t);
            ok[3] &= o[3] == base + 7;
            ok[4] &= o[4] == ((lane & 7) + 3 < 8 ? t + 3 : t);
            ok[5] &= (unsigned)o[5] == 0x49249249u;
            ok[6] &= o[6] == 3;
            ok[7] &= o[7] == 496;
        }
        const char *names[8] = {"shfl_xor",          "shfl_down", "shfl_up", "shfl",
                                "shfl_down width 8", "ballot",    "all/any", "xor-tree sum"};
        for (int i = 0; i < 8; i++) CHECK_MSG(ok[i], "%s", names[i]);
        std::vector<int> half(16, -1);
        PMOE_LAUNCH(half_warp_kernel, dim3(1), dim3(32), 0, nullptr, half.data());
        CHECK(launch_status() == 0);
        bool hok = true;
        for (int l = 0; l < 16; l++) hok &= half[l] == (l ^ 1);
        CHECK_MSG(hok, "a partial mask exchanges among its lanes only");
    }

    printf("atomics\n");
    {
        int count[2] = {0, -1};
        float sum = 0.0f;
        PMOE_LAUNCH(atomic_kernel, dim3(3), dim3(64), 0, nullptr, count, &sum);
        CHECK(launch_status() == 0);
        CHECK(count[0] == 192 && sum == 96.0f && count[1] == 63);
    }

    printf("faults are reported\n");
    {
        std::vector<int> out(64);
        std::vector<float> f(64);
        PMOE_LAUNCH(divergent_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
        expect_fault("__syncthreads not reached", launch_status(), "__syncthreads");
        PMOE_LAUNCH(missing_lane_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
        expect_fault("warp op with absent lanes", launch_status(), "deadlock");
        PMOE_LAUNCH(too_much_shared_kernel, dim3(1), dim3(32), 0, nullptr, f.data());
        expect_fault("52 KB of shared memory", launch_status(), "48 KiB");
        PMOE_LAUNCH(indices_kernel, dim3(1), dim3(2048), 0, nullptr, out.data());
        expect_fault("2048 threads per block", launch_status(), "invalid launch");
        PMOE_LAUNCH(indices_kernel, dim3(1), dim3(2), 0, nullptr, out.data());
        CHECK_MSG(launch_status() == 0, "a good launch after faults runs normally");
    }
    return test_finish("test_host_exec");
}
