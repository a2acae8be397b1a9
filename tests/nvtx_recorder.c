/* nvtx_recorder.c: an NVTX injection library that writes down every range
 * it is given, so a test (or a person without Nsight) can see the ranges
 * Nsight Systems would show.
 *
 * Nsight attaches the same way: on the first NVTX call the NVTX 3 headers
 * dlopen the library named by NVTX_INJECTION64_PATH and call its
 * InitializeInjectionNvtx2(), which asks for the callbacks export table and
 * stores its own functions into the headers' function-pointer slots (the
 * CORE2 module for the domain calls, CORE for the global ones). Calls this
 * library does not install stay no-ops.
 *
 * Output: PMOE_NVTX_RECORD names the file ("%p" in it becomes the process
 * id, for several processes); one line per event, message last since it
 * may hold spaces:
 *   domain <tid> <domain>
 *   thread <tid> <named os thread> <name>
 *   stream <tid> <cudaStream_t> <name>     (nvtxNameCudaStreamA)
 *   push   <tid> <domain> <depth> <payload> <message>
 *   pop    <tid> <domain> <depth>
 * <tid> is the calling thread's kernel id; <domain> is "-" outside a
 * domain; a push's depth is its level on that thread and domain (1 =
 * outermost), a pop's the level it closes (so 0 or less is a pop with
 * nothing open); <payload> is type:value (u64:5) or "none". Each line is
 * one write(2) on a descriptor opened with O_APPEND: nothing is buffered,
 * so nothing is lost if the process dies, and threads' lines do not mix.
 * Failures (no file, a full domain table) drop events and never reach the
 * host process beyond one line on stderr. */
#define _GNU_SOURCE
#define NVTX_NO_IMPL /* the types and IDs only: this library is the implementation */
#include <nvtx3/nvToolsExt.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_DOMAINS 32
#define MAX_TEXT 200

/* The handle nvtxDomainCreateA returns (the headers leave the struct to the tool). */
struct nvtxDomainRegistration_st {
    char name[64];
};
/* The handle nvtxDomainRegisterStringA returns. */
struct nvtxStringRegistration_st {
    char text[MAX_TEXT + 1];
};

static int out_fd = -1;
static pthread_mutex_t domains_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvtxDomainRegistration_st domains[MAX_DOMAINS];
static int domain_count;
/* Open ranges per thread: [0] outside any domain, [1 + i] in domains[i]. */
static __thread int depth[MAX_DOMAINS + 1];

/* Not cached: a cached id would be wrong in a forked child. */
static long tid(void) { return (long)syscall(SYS_gettid); }

static void emit(const char *fmt, ...) {
    if (out_fd < 0) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    for (ssize_t done = 0; done < n;) {
        const ssize_t w = write(out_fd, line + done, (size_t)(n - done));
        if (w <= 0) return;
        done += w;
    }
}

/* Copies text into out with spaces kept and control characters replaced,
 * so a message stays on its line. */
static void clean(char *out, size_t cap, const char *text, int keep_spaces) {
    size_t i = 0;
    for (; text && text[i] && i + 1 < cap; i++) {
        const unsigned char c = (unsigned char)text[i];
        out[i] = c < 32 || c == 127 || (c == ' ' && !keep_spaces) ? '_' : (char)c;
    }
    out[i] = '\0';
}

/* The slot of a domain handle in depth[], or -1 for one not made here. */
static int slot(nvtxDomainHandle_t d) {
    if (!d) return 0;
    const uintptr_t at = (uintptr_t)d, first = (uintptr_t)domains;
    if (at < first || at >= first + sizeof domains || (at - first) % sizeof domains[0]) return -1;
    return (int)((at - first) / sizeof domains[0]) + 1;
}

static const char *domain_name(nvtxDomainHandle_t d) {
    const int s = slot(d);
    return s == 0 ? "-" : s < 0 ? "?" : d->name;
}

static void describe_payload(char *out, size_t cap, const nvtxEventAttributes_t *a) {
    if (!a || a->size < offsetof(nvtxEventAttributes_t, payload) + sizeof a->payload) {
        snprintf(out, cap, "none");
        return;
    }
    switch (a->payloadType) {
    case NVTX_PAYLOAD_TYPE_UNSIGNED_INT64:
        snprintf(out, cap, "u64:%llu", (unsigned long long)a->payload.ullValue);
        break;
    case NVTX_PAYLOAD_TYPE_INT64:
        snprintf(out, cap, "i64:%lld", (long long)a->payload.llValue);
        break;
    case NVTX_PAYLOAD_TYPE_DOUBLE: snprintf(out, cap, "f64:%.17g", a->payload.dValue); break;
    case NVTX_PAYLOAD_TYPE_UNSIGNED_INT32:
        snprintf(out, cap, "u32:%u", (unsigned)a->payload.uiValue);
        break;
    case NVTX_PAYLOAD_TYPE_INT32: snprintf(out, cap, "i32:%d", (int)a->payload.iValue); break;
    case NVTX_PAYLOAD_TYPE_FLOAT: snprintf(out, cap, "f32:%.9g", (double)a->payload.fValue); break;
    case NVTX_PAYLOAD_UNKNOWN: snprintf(out, cap, "none"); break;
    default: snprintf(out, cap, "type%d:?", (int)a->payloadType); break;
    }
}

static void describe_message(char *out, size_t cap, const nvtxEventAttributes_t *a) {
    if (!a || a->size < offsetof(nvtxEventAttributes_t, message) + sizeof a->message) {
        snprintf(out, cap, "(none)");
        return;
    }
    switch (a->messageType) {
    case NVTX_MESSAGE_TYPE_ASCII:
        clean(out, cap, a->message.ascii ? a->message.ascii : "(null)", 1);
        break;
    case NVTX_MESSAGE_TYPE_REGISTERED:
        clean(out, cap, a->message.registered ? a->message.registered->text : "(null)", 1);
        break;
    case NVTX_MESSAGE_TYPE_UNICODE: snprintf(out, cap, "(unicode)"); break;
    default: snprintf(out, cap, "(none)"); break;
    }
}

static int push(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
    const int s = slot(d);
    const int level = s < 0 ? 0 : ++depth[s];
    char payload[64], message[MAX_TEXT + 1];
    describe_payload(payload, sizeof payload, a);
    describe_message(message, sizeof message, a);
    emit("push %ld %s %d %s %s", tid(), domain_name(d), level, payload, message);
    return level - 1;
}

static int pop(nvtxDomainHandle_t d) {
    const int s = slot(d);
    const int level = s < 0 ? 0 : depth[s]--;
    emit("pop %ld %s %d", tid(), domain_name(d), level);
    return level - 1;
}

/* ---- the functions installed into the NVTX headers' slots ---- */

static nvtxDomainHandle_t domain_create(const char *name) {
    char clean_name[sizeof domains[0].name];
    clean(clean_name, sizeof clean_name, name ? name : "(null)", 0);
    nvtxDomainHandle_t found = NULL;
    int made = 0;
    pthread_mutex_lock(&domains_lock);
    for (int i = 0; i < domain_count && !found; i++)
        if (!strcmp(domains[i].name, clean_name)) found = &domains[i];
    if (!found && domain_count < MAX_DOMAINS) {
        found = &domains[domain_count++];
        memcpy(found->name, clean_name, sizeof clean_name);
        made = 1;
    }
    pthread_mutex_unlock(&domains_lock);
    if (made) emit("domain %ld %s", tid(), found->name);
    else if (!found)
        emit("domain %ld %s (table full: its ranges are recorded as -)", tid(), clean_name);
    return found; /* NULL, the global domain, when the table is full */
}

static nvtxStringHandle_t register_string(nvtxDomainHandle_t d, const char *text) {
    (void)d;
    nvtxStringHandle_t h = calloc(1, sizeof *h); /* lives until exit, as NVTX's do */
    if (h) clean(h->text, sizeof h->text, text ? text : "(null)", 1);
    return h;
}

static int domain_push(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) { return push(d, a); }
static int domain_pop(nvtxDomainHandle_t d) { return pop(d); }
static int global_push_ex(const nvtxEventAttributes_t *a) { return push(NULL, a); }
static int global_pop(void) { return pop(NULL); }

static int global_push_ascii(const char *message) {
    nvtxEventAttributes_t a;
    memset(&a, 0, sizeof a);
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = message;
    return push(NULL, &a);
}

static void name_os_thread(uint32_t os_thread, const char *name) {
    char clean_name[MAX_TEXT + 1];
    clean(clean_name, sizeof clean_name, name ? name : "(null)", 1);
    emit("thread %ld %u %s", tid(), (unsigned)os_thread, clean_name);
}

/* nvtxNameCudaStreamA (CUDA runtime module): the stream's handle and name. */
static void name_cuda_stream(void *stream, const char *name) {
    char clean_name[MAX_TEXT + 1];
    clean(clean_name, sizeof clean_name, name ? name : "(null)", 1);
    emit("stream %ld %p %s", tid(), stream, clean_name);
}

/* Stores fn into slot `id` of a module's table; 0 if the headers lack it. */
static int install(const NvtxExportTableCallbacks *cb, NvtxCallbackModule module, unsigned id,
                   NvtxFunctionPointer fn) {
    NvtxFunctionTable table = NULL;
    unsigned int size = 0;
    if (!cb->GetModuleFunctionTable(module, &table, &size) || !table) return 0;
    if (id >= size || !table[id]) return 0;
    *table[id] = fn;
    return 1;
}

static int open_record(void) {
    const char *spec = getenv("PMOE_NVTX_RECORD");
    if (!spec || !*spec) {
        fprintf(stderr, "nvtx_recorder: PMOE_NVTX_RECORD is not set; recording nothing\n");
        return 0;
    }
    char path[4096];
    size_t n = 0;
    for (const char *p = spec; *p && n + 24 < sizeof path; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            n += (size_t)snprintf(path + n, sizeof path - n, "%ld", (long)getpid());
            p++;
        } else {
            path[n++] = *p;
        }
    }
    path[n] = '\0';
    out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) {
        fprintf(stderr, "nvtx_recorder: cannot open %s; recording nothing\n", path);
        return 0;
    }
    return 1;
}

#define FN(f) ((NvtxFunctionPointer)(f))

__attribute__((visibility("default"))) int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get) {
    if (!get) return 0;
    const NvtxExportTableCallbacks *cb = get(NVTX_ETID_CALLBACKS);
    if (!cb ||
        cb->struct_size < offsetof(NvtxExportTableCallbacks, GetModuleFunctionTable) +
                              sizeof cb->GetModuleFunctionTable ||
        !cb->GetModuleFunctionTable)
        return 0;
    if (!open_record()) return 0; /* 0: the headers turn every call into a no-op */
    const NvtxExportTableVersionInfo *v = get(NVTX_ETID_VERSIONINFO);
    if (v && v->struct_size >= sizeof *v && v->SetInjectionNvtxVersion)
        v->SetInjectionNvtxVersion(NVTX_VERSION);
    emit("# nvtx_recorder pid %ld nvtx %u", (long)getpid(), v ? (unsigned)v->version : 0u);
    int ok = install(cb, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainCreateA, FN(domain_create));
    ok &= install(cb, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePushEx, FN(domain_push));
    ok &= install(cb, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRangePop, FN(domain_pop));
    /* The rest are conveniences: record them where the headers have the slot. */
    install(cb, NVTX_CB_MODULE_CORE2, NVTX_CBID_CORE2_DomainRegisterStringA, FN(register_string));
    install(cb, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushEx, FN(global_push_ex));
    install(cb, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePushA, FN(global_push_ascii));
    install(cb, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_RangePop, FN(global_pop));
    install(cb, NVTX_CB_MODULE_CORE, NVTX_CBID_CORE_NameOsThreadA, FN(name_os_thread));
    install(cb, NVTX_CB_MODULE_CUDART, NVTX_CBID_CUDART_NameCudaStreamA, FN(name_cuda_stream));
    if (!ok) emit("# nvtx_recorder: the domain range slots are missing; ranges not recorded");
    return 1;
}
