/* host_exec.h: one kernel source for nvcc and for the CPU ("host execution").
 *
 * Every .cu file in src/kernels includes this header and nothing else from
 * CUDA. Under nvcc it is a thin layer over the CUDA runtime. Compiled as C++
 * by g++ (no nvcc, no GPU), it emulates the CUDA execution model closely
 * enough that CI runs the real kernels and compares them with their CPU twins:
 *
 * - a launch runs its blocks one after another on the calling OS thread; the
 *   threads of a block are cooperative fibers (ucontext), each with its own
 *   stack, that run until they reach a barrier or finish;
 * - __syncthreads() is a real barrier: the block's fibers are resumed only
 *   once every one of them has reached it (a fiber that exits while others
 *   wait is reported as an error, as the GPU leaves that undefined);
 * - warp primitives (__shfl*_sync, __ballot_sync, __all/any_sync,
 *   __syncwarp) are exchanges among the lanes named in the mask: each lane
 *   deposits its value in the warp's double-buffered slot array and waits
 *   until every lane of the mask has arrived; a lane outside the mask, or
 *   lanes that disagree on how many warp operations they have done, are
 *   reported as errors;
 * - between barriers the runnable fibers are resumed in a chosen order:
 *   forward, backward, or a seeded shuffle drawn afresh at every barrier
 *   (pmoe_emu_set_order, or PMOE_EMU_ORDER=forward|backward|shuffle[:seed]).
 *   A kernel with a missing barrier or a race between barriers gives
 *   different results under different orders, which the tests compare;
 * - shared memory is declared with PMOE_SHARED / PMOE_SHARED_DYNAMIC. Under
 *   nvcc that is __shared__; here it is a pointer into the block's arena,
 *   which is filled with 0xFF bytes (NaN, -1) at the start of every block,
 *   so reading shared memory before writing it shows up. The n-th shared
 *   declaration a fiber reaches is the block's n-th array, so declarations
 *   must be reached by every thread (put them at the top of the kernel).
 *   Static plus dynamic shared memory above 48 KiB is an error, as it would
 *   be on the GPU without an opt-in;
 * - atomics are plain read-modify-writes (fibers switch only at barriers);
 *   device memory is host memory; the stream argument is ignored.
 *
 * Every launch goes through PMOE_LAUNCH(kernel, grid, block, shmem, stream,
 * args...) and its status is read with PMOE_LAUNCH_STATUS(). Library calls
 * (cuBLAS, cuDNN, NCCL) are not emulated. */
#ifndef PMOE_KERNELS_HOST_EXEC_H
#define PMOE_KERNELS_HOST_EXEC_H

#include <stdint.h>

#if defined(__CUDACC__)

#include <cuda_runtime.h>

#define PMOE_HOST_EXEC 0
/* A stale error of some earlier runtime call is cleared first, so that the
 * status read after the launch is not that call's. */
#define PMOE_LAUNCH(kernel, grid, block, shmem, stream, ...)                                       \
    ((void)cudaGetLastError(), ::PMOE_KERNEL_NS::note_launch(#kernel),                             \
     kernel<<<(grid), (block), (shmem), (cudaStream_t)(stream)>>>(__VA_ARGS__))
/* The status after a launch, without synchronising: the launch's own error
 * (a bad configuration, not sticky), or, once any earlier asynchronous work
 * has faulted, that sticky error, which every runtime call returns from
 * then on whether or not this launch had anything to do with it. The
 * caller tells the two apart (src/host/cuda: cuda_record_kernel) and never
 * blames a launch for a sticky fault. */
#define PMOE_LAUNCH_STATUS() ((int)cudaGetLastError())
#define PMOE_SHARED(type, name, count) __shared__ type name[count]
#define PMOE_SHARED_DYNAMIC(type, name)                                                            \
    extern __shared__ __align__(16) unsigned char pmoe_dynamic_shared_[];                          \
    type *name = reinterpret_cast<type *>(pmoe_dynamic_shared_)

#else /* host execution */

#include <math.h>
#include <stddef.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <utility>

#define PMOE_HOST_EXEC 1

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define warpSize 32

namespace pmoe_emu {

struct thread_view {
    uint3 thread_idx;
};
struct block_view {
    uint3 block_idx;
    dim3 block_dim, grid_dim;
};
/* __thread rather than thread_local: a plain pointer needs no TLS wrapper
 * function, and GCC 12's UBSan misreports loads through that wrapper. */
extern __thread thread_view *current_thread;
extern __thread block_view *current_block;

void launch_impl(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()> &body);
/* As <<<>>> does, the arguments are converted to the kernel's parameter
 * types once, at launch, and every thread gets its own copy of them. */
template <class... Params, class... Args>
inline void launch_kernel(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(Params...),
                          Args &&...args) {
    const std::tuple<Params...> params(std::forward<Args>(args)...);
    launch_impl(grid, block, shared_bytes, [&]() { std::apply(kernel, params); });
}
/* The status of the last launch on this OS thread (0 or PMOE_KERNEL_ERR_*),
 * cleared by reading, like cudaGetLastError. */
int take_status();
/* The text of the last fault take_status() reported. */
const char *last_message();

void syncthreads();
/* Deposits this lane's bits, waits for every lane of mask, and returns the
 * warp's 32 slots (valid until this lane's next-but-one warp operation). */
const uint64_t *warp_exchange(unsigned mask, uint64_t mine);
int lane_id();
/* Records that a lane read a slot outside the mask (undefined on the GPU). */
void report(const char *what);
void *shared_array(size_t bytes, size_t align);
void *dynamic_shared();

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "warp exchange of a type wider than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
template <class T>
inline T shuffle_from(unsigned mask, T v, int src) {
    const uint64_t *slots = warp_exchange(mask, to_bits(v));
    if (src < 0 || src > 31 || !((mask >> src) & 1u)) {
        report("a warp shuffle read a lane outside its mask");
        return v;
    }
    return from_bits<T>(slots[src]);
}

} /* namespace pmoe_emu */

#define threadIdx (::pmoe_emu::current_thread->thread_idx)
#define blockIdx (::pmoe_emu::current_block->block_idx)
#define blockDim (::pmoe_emu::current_block->block_dim)
#define gridDim (::pmoe_emu::current_block->grid_dim)

inline void __syncthreads() { ::pmoe_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::pmoe_emu::warp_exchange(mask, 0); }
inline void __threadfence() {}
inline void __threadfence_block() {}

/* The sub-warp arithmetic follows the CUDA programming guide: width is a
 * power of two <= 32 and lanes outside the source's segment keep their own
 * value. */
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::pmoe_emu::lane_id();
    return ::pmoe_emu::shuffle_from(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::pmoe_emu::lane_id();
    const int in_segment = (lane & (width - 1)) + (int)delta;
    return ::pmoe_emu::shuffle_from(mask, v, in_segment < width ? lane + (int)delta : lane);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::pmoe_emu::lane_id();
    return ::pmoe_emu::shuffle_from(mask, v,
                                    (lane & (width - 1)) >= (int)delta ? lane - (int)delta : lane);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::pmoe_emu::lane_id();
    const int src = lane ^ lane_mask;
    return ::pmoe_emu::shuffle_from(mask, v,
                                    (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    const uint64_t *slots = ::pmoe_emu::warp_exchange(mask, predicate ? 1u : 0u);
    unsigned bits = 0;
    for (int i = 0; i < 32; i++)
        if (((mask >> i) & 1u) && slots[i]) bits |= 1u << i;
    return bits;
}
inline int __all_sync(unsigned mask, int predicate) {
    return __ballot_sync(mask, predicate) == mask;
}
inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

/* Fibers switch only at barriers, so a read-modify-write is atomic here. */
template <class T>
inline T atomicAdd(T *address, T value) {
    T old = *address;
    *address = old + value;
    return old;
}
template <class T>
inline T atomicMax(T *address, T value) {
    T old = *address;
    if (value > old) *address = value;
    return old;
}
template <class T>
inline T atomicMin(T *address, T value) {
    T old = *address;
    if (value < old) *address = value;
    return old;
}
template <class T>
inline T atomicExch(T *address, T value) {
    T old = *address;
    *address = value;
    return old;
}
template <class T>
inline T atomicCAS(T *address, T compare, T value) {
    T old = *address;
    if (old == compare) *address = value;
    return old;
}

template <class T>
inline T __ldg(const T *p) {
    return *p;
}

#define PMOE_LAUNCH(kernel, grid, block, shmem, stream, ...)                                       \
    ::pmoe_emu::launch_kernel((grid), (block), (shmem), kernel, __VA_ARGS__)
#define PMOE_LAUNCH_STATUS() (::pmoe_emu::take_status())
#define PMOE_SHARED(type, name, count)                                                             \
    type *name = static_cast<type *>(                                                              \
        ::pmoe_emu::shared_array(sizeof(type) * (size_t)(count), alignof(type)))
#define PMOE_SHARED_DYNAMIC(type, name)                                                            \
    type *name = static_cast<type *>(::pmoe_emu::dynamic_shared())

#endif /* host execution */
#endif
