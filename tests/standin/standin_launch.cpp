/* standin_launch.cpp: the kernel-launch glue's out-of-line half (see
 * standin_launch.h): the checks and the work item that runs a kernel
 * through the host-execution emulator. */
#include "standin_launch.h"

#include <stdio.h>

namespace pmoe_standin {

__thread int launch_status;

int take_status() {
    const int s = launch_status;
    launch_status = 0;
    return s;
}

int check_configuration(dim3 grid, dim3 block, const char *kernel) {
    const unsigned long threads = (unsigned long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        threads == 0 || threads > 1024 || block.z > 64) {
        standin_warn("launch of %s: grid %ux%ux%u, block %ux%ux%u is not a valid configuration",
                     kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return 9; /* cudaErrorInvalidConfiguration */
    }
    return 0;
}

struct kernel_work {
    const char *name;
    std::function<void()> body;
};

static int run_kernel(void *arg) {
    kernel_work *w = static_cast<kernel_work *>(arg);
    w->body();
    if (::pmoe_emu::take_status()) {
        standin_warn("kernel %s faulted: %s", w->name, ::pmoe_emu::last_message());
        return 719; /* cudaErrorLaunchFailure */
    }
    return 0;
}

static void free_kernel(void *arg) { delete static_cast<kernel_work *>(arg); }

void enqueue_kernel(standin_stream *s, const char *kernel, std::function<void()> body) {
    standin_enqueue(s, run_kernel, new kernel_work{kernel, std::move(body)}, free_kernel);
}

} /* namespace pmoe_standin */

extern "C" int standin_launch_check_pointer(const void *p, int index, const char *kernel) {
    if (!p || standin_is_device(p, nullptr)) return 0;
    standin_warn("launch of %s: argument %d (%p) is not device memory", kernel, index, p);
    return 1;
}

extern "C" int standin_launch_begin(void *cuda_stream, standin_stream **out) {
    *out = standin_stream_of(cuda_stream);
    if (standin_sticky()) return standin_sticky();
    if (!*out) return 400;                   /* cudaErrorInvalidResourceHandle */
    if (standin_fault("launch")) return 701; /* cudaErrorLaunchOutOfResources */
    return 0;
}

/* The launchers' error_string says "unknown kernel error" for a cudaError_t
 * in host execution (only nvcc's build asks the runtime); the stand-in's
 * executables link with --wrap=pmoe_k_error_string so that the runtime's
 * text reaches pmoe's message, as on a GPU. */
extern "C" const char *__real_pmoe_k_error_string(int code);
extern "C" const char *cudaGetErrorString(int code);
extern "C" const char *__wrap_pmoe_k_error_string(int code) {
    return code > 0 ? cudaGetErrorString(code) : __real_pmoe_k_error_string(code);
}
