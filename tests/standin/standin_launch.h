/* standin_launch.h: kernel launches of pmoe's .cu sources on the stand-in.
 *
 * The stand-in build compiles each .cu of src/kernels as C++ through a
 * generated file that includes this header, then pmoe_kernels.h (so the
 * launchers keep their pmoe_k_ names, the ones src/host/cuda calls), then
 * the .cu. Here PMOE_LAUNCH is redefined: the launch checks what a GPU
 * would refuse or fault on (a stream that does not exist, a block of more
 * than 1024 threads or an empty grid, a host pointer among the kernel's
 * arguments), converts the arguments to the kernel's parameter types as
 * <<<>>> does, and enqueues the kernel on its stream; it runs later,
 * through host_exec.h's emulator (the grid and block the launcher computed),
 * when the stream is synchronised. The launch returns a cudaError_t, and a
 * fault found while the kernel runs becomes the device's sticky error. */
#ifndef PMOE_STANDIN_LAUNCH_H
#define PMOE_STANDIN_LAUNCH_H

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "host_exec.h"
#include "standin.h"

namespace pmoe_standin {

/* The launch's own status, read by PMOE_LAUNCH_STATUS (one per thread). */
extern __thread int launch_status;
int take_status();
/* 0, or a cudaError_t for a grid or block the GPU would refuse. */
int check_configuration(dim3 grid, dim3 block, const char *kernel);
/* Enqueues body on s; its emulator status becomes a launch failure. */
void enqueue_kernel(standin_stream *s, const char *kernel, std::function<void()> body);

template <class T>
inline int check_argument(const T &value, int index, const char *kernel) {
    if constexpr (std::is_pointer<T>::value)
        return standin_launch_check_pointer((const void *)value, index, kernel);
    else return 0;
}

template <class... Params, class... Args>
int launch(const char *name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
           void *stream, Args &&...args) {
    standin_stream *s = nullptr;
    int e = standin_launch_begin(stream, &s);
    if (e) return e;
    e = check_configuration(grid, block, name);
    if (e) return e;
    auto params = std::make_shared<const std::tuple<Params...>>(std::forward<Args>(args)...);
    int bad = 0, index = 0;
    std::apply([&](const auto &...p) { ((bad |= check_argument(p, index++, name)), ...); },
               *params);
    if (bad) { /* the GPU would fault when the kernel dereferenced it */
        standin_enqueue_fault(s, 700 /* cudaErrorIllegalAddress */);
        return 0;
    }
    if (standin_fault("kernel")) { /* an injected fault while it runs */
        standin_enqueue_fault(s, 719 /* cudaErrorLaunchFailure */);
        return 0;
    }
    enqueue_kernel(s, name, [=]() {
        ::pmoe_emu::launch_impl(grid, block, shared_bytes, [&]() { std::apply(kernel, *params); });
    });
    return 0;
}

} /* namespace pmoe_standin */

#undef PMOE_LAUNCH
#undef PMOE_LAUNCH_STATUS
#define PMOE_LAUNCH(kernel, grid, block, shmem, stream, ...)                                       \
    (::PMOE_KERNEL_NS::note_launch(#kernel),                                                       \
     ::pmoe_standin::launch_status = ::pmoe_standin::launch(                                       \
         #kernel, kernel, (grid), (block), (shmem), (void *)(stream), __VA_ARGS__))
#define PMOE_LAUNCH_STATUS() (::pmoe_standin::take_status())

#endif
