/* standin.h: what the CPU stand-in's parts share (the runtime, cuBLAS,
 * cuDNN, NCCL and the kernel-launch glue). Test code only: the stand-in is
 * linked into pmoe-standin and the stand-in tests, never into pmoe.
 *
 * The model of a device the stand-in keeps:
 * - device memory: each cudaMalloc is its own heap block (so AddressSanitizer
 *   sees its bounds), 256-byte aligned, filled with 0xff bytes (NaN as
 *   float, -1 as int) and listed in a table; standin_device_range() tells a
 *   device range from host memory;
 * - streams: a FIFO of work per stream. Nothing runs when it is enqueued;
 *   work runs at the points the CUDA documentation names as synchronising
 *   (stream, event or device synchronize, a blocking copy, cudaFree, stream
 *   destruction) and in enqueue order, so a host that reads a result
 *   before waiting for it reads the NaN of a fresh buffer, not the answer.
 *   cudaStreamWaitEvent runs the event's stream up to the event first;
 * - errors: a failure of enqueued work (a kernel the emulator faults, an
 *   injected launch failure, an out-of-bounds range) is sticky, as on a
 *   GPU: every later runtime call returns it;
 * - faults: PMOE_STANDIN_FAULT="name:N[,name:N...]" (or standin_fault_set)
 *   makes the N-th call of the function `name` fail with that function's
 *   documented failure (cudaMalloc: out of memory; "launch": a launch
 *   failure; cuDNN calls: not supported; NCCL calls: a system error;
 *   cuBLAS: execution failed). "name:N+" fails every call from the N-th. Besides API names, "launch"
 *   makes a kernel launch return cudaErrorLaunchOutOfResources and
 *   "kernel" makes a launched kernel fault while it runs (a sticky
 *   cudaErrorLaunchFailure, seen at the next synchronisation). */
#ifndef PMOE_STANDIN_H
#define PMOE_STANDIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device memory ---- */
/* 1 when [p, p + bytes) lies inside one live device allocation. */
int standin_device_range(const void *p, size_t bytes);
/* 1 when p points into a live device allocation (bytes from p to its end in *room). */
int standin_is_device(const void *p, size_t *room);
size_t standin_device_bytes_in_use(void);

/* 1 when [p, p + bytes) lies inside one live cudaHostAlloc block (standin_pinned.c). */
int standin_is_pinned(const void *p, size_t bytes);

/* ---- streams ---- */
typedef struct standin_stream standin_stream;
/* The stream behind a cudaStream_t (NULL: the default stream); NULL when the
 * handle is not a live stream. */
standin_stream *standin_stream_of(void *cuda_stream);
/* Enqueues run(arg) on s; free_arg(arg) afterwards (may be NULL). run
 * returns 0 or a cudaError_t, which becomes the sticky error. */
void standin_enqueue(standin_stream *s, int (*run)(void *), void *arg, void (*free_arg)(void *));
/* Enqueues a fault the device raises when s gets there (a cudaError_t,
 * which becomes the sticky error). */
void standin_enqueue_fault(standin_stream *s, int cuda_error);
/* Runs s's queued work; returns the sticky error (0 when none). */
int standin_stream_drain(standin_stream *s);
/* Runs every stream's queued work. */
int standin_drain_all(void);
/* The sticky error (a cudaError_t), 0 while none; set_sticky keeps the first. */
int standin_sticky(void);
void standin_set_sticky(int cuda_error, const char *why);

/* ---- faults ---- */
/* Counts a call of `name`; 1 when this call must fail. */
int standin_fault(const char *name);
/* Fails the nth call of name from now on (every later one too when from_on). */
void standin_fault_set(const char *name, long nth, int from_on);
void standin_fault_clear(void);
/* Calls of name counted so far. */
long standin_calls(const char *name);

/* One line on stderr, "pmoe-standin: ...", for misuse a GPU would punish
 * without a message (an out-of-bounds range, a host pointer in a kernel). */
void standin_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The kernel-launch glue's checks (standin_launch.h). */
int standin_launch_check_pointer(const void *p, int index, const char *kernel);
int standin_launch_begin(void *cuda_stream, standin_stream **out);

#ifdef __cplusplus
}
#endif
#endif
