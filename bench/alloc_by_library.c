/* Live bytes of large allocations by the library that asked for them (LD_PRELOAD).
 *
 * bench/bench_memory.py builds this with the system C compiler and preloads it into the traced
 * train step. Every malloc / calloc / realloc / posix_memalign / aligned_alloc / anonymous mmap of
 * at least 1 MiB is charged to the shared library of its caller; allocations made through libstdc++
 * (operator new) or libc are charged to the first other library up the stack. free / munmap of the
 * same address releases the charge. alloc_report(tag) prints one line per library holding 16 MiB or
 * more: "ALLOC tag library live_bytes peak_bytes".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define BIG ((size_t)1 << 20)
#define SLOTS (1 << 20) /* open-addressing table of live large blocks */
#define LIBS 128

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct { void *ptr; size_t size; int lib; } slots[SLOTS];
static char names[LIBS][96];
static long long live[LIBS], peak[LIBS];
static int nlibs;
static __thread int inside; /* dladdr / backtrace / fprintf may allocate and free */
static char arena[1 << 16];  /* calloc's memory while dlsym runs, before init */
static size_t arena_used;

static void init(void) {
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_mmap = dlsym(RTLD_NEXT, "mmap");
    real_munmap = dlsym(RTLD_NEXT, "munmap");
}

static const char *basename_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int is_plumbing(const char *lib) {
    return !strncmp(lib, "libstdc++", 9) || !strncmp(lib, "libc.so", 7) || strstr(lib, "alloc_by_library");
}

/* under the lock */
static int library_index(const char *lib) {
    for (int i = 0; i < nlibs; i++)
        if (!strcmp(names[i], lib)) return i;
    if (nlibs == LIBS) return LIBS - 1; /* the last slot collects the overflow */
    snprintf(names[nlibs], sizeof names[nlibs], "%s", lib);
    return nlibs++;
}

/* The file name of the library that made the allocation. Called without the lock held: dladdr and
 * backtrace take the dynamic loader's lock, and a thread inside dlopen, holding that lock, may free
 * memory (release takes ours). */
static const char *caller_library(void *ret) {
    Dl_info info;
    const char *lib = "?";
    if (dladdr(ret, &info) && info.dli_fname) lib = basename_of(info.dli_fname);
    if (!is_plumbing(lib)) return lib;
    void *frames[12];
    int depth = backtrace(frames, 12);
    for (int i = 1; i < depth; i++) {
        if (!dladdr(frames[i], &info) || !info.dli_fname) continue;
        const char *up = basename_of(info.dli_fname);
        if (!is_plumbing(up)) return up;
    }
    return lib;
}

static size_t slot_of(void *ptr) { return ((uintptr_t)ptr >> 12) & (SLOTS - 1); }

static void charge(void *ptr, size_t size, void *ret) {
    if (!ptr || size < BIG || inside) return;
    inside = 1;
    const char *name = caller_library(ret);
    pthread_mutex_lock(&lock);
    int lib = library_index(name);
    size_t h = slot_of(ptr);
    while (slots[h].ptr) h = (h + 1) & (SLOTS - 1);
    slots[h].ptr = ptr;
    slots[h].size = size;
    slots[h].lib = lib;
    live[lib] += size;
    if (live[lib] > peak[lib]) peak[lib] = live[lib];
    pthread_mutex_unlock(&lock);
    inside = 0;
}

static void release(void *ptr) {
    /* inside charge or alloc_report, dladdr / backtrace / fprintf only free their own small blocks */
    if (!ptr || inside) return;
    pthread_mutex_lock(&lock);
    size_t h = slot_of(ptr);
    while (slots[h].ptr && slots[h].ptr != ptr) h = (h + 1) & (SLOTS - 1);
    if (slots[h].ptr == ptr) {
        live[slots[h].lib] -= slots[h].size;
        slots[h].ptr = 0;
        /* re-insert the rest of the probe run, so that lookups do not stop at the hole */
        for (size_t j = (h + 1) & (SLOTS - 1); slots[j].ptr; j = (j + 1) & (SLOTS - 1)) {
            void *p = slots[j].ptr;
            size_t size = slots[j].size;
            int lib = slots[j].lib;
            slots[j].ptr = 0;
            size_t k = slot_of(p);
            while (slots[k].ptr) k = (k + 1) & (SLOTS - 1);
            slots[k].ptr = p;
            slots[k].size = size;
            slots[k].lib = lib;
        }
    }
    pthread_mutex_unlock(&lock);
}

void *malloc(size_t size) {
    if (!real_malloc) init();
    void *p = real_malloc(size);
    charge(p, size, __builtin_return_address(0));
    return p;
}

void *calloc(size_t count, size_t size) {
    if (!real_calloc) {
        /* dlsym itself may call calloc before init finishes: serve it from a static arena */
        void *p = arena + arena_used;
        arena_used += (count * size + 15) & ~(size_t)15;
        return p;
    }
    void *p = real_calloc(count, size);
    charge(p, count * size, __builtin_return_address(0));
    return p;
}

static int from_arena(void *ptr) { return (char *)ptr >= arena && (char *)ptr < arena + sizeof arena; }

/* free / realloc of a block too small to have been charged skips the table (and its lock) */
static void release_heap(void *ptr) {
    if (ptr && !from_arena(ptr) && malloc_usable_size(ptr) >= BIG) release(ptr);
}

void *realloc(void *old, size_t size) {
    if (!real_realloc) init();
    release_heap(old);
    void *p = real_realloc(old, size);
    charge(p, size, __builtin_return_address(0));
    return p;
}

void free(void *ptr) {
    if (!real_free) init();
    if (from_arena(ptr)) return;
    release_heap(ptr);
    real_free(ptr);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (!real_posix_memalign) init();
    int status = real_posix_memalign(out, alignment, size);
    if (!status) charge(*out, size, __builtin_return_address(0));
    return status;
}

void *aligned_alloc(size_t alignment, size_t size) {
    if (!real_aligned_alloc) init();
    void *p = real_aligned_alloc(alignment, size);
    charge(p, size, __builtin_return_address(0));
    return p;
}

void *mmap(void *addr, size_t size, int prot, int flags, int fd, off_t offset) {
    if (!real_mmap) init();
    void *p = real_mmap(addr, size, prot, flags, fd, offset);
    if (p != MAP_FAILED && fd < 0 && (flags & MAP_ANONYMOUS)) charge(p, size, __builtin_return_address(0));
    return p;
}

int munmap(void *addr, size_t size) {
    if (!real_munmap) init();
    if (size >= BIG) release(addr);
    return real_munmap(addr, size);
}

void alloc_report(const char *tag) {
    inside = 1;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nlibs; i++)
        if (live[i] >= (16 << 20) || peak[i] >= (16 << 20))
            fprintf(stderr, "ALLOC %s %s %lld %lld\n", tag, names[i], live[i], peak[i]);
    fflush(stderr);
    pthread_mutex_unlock(&lock);
    inside = 0;
}

/* a child forked while another thread held the lock would wait for it forever */
static void lock_for_fork(void) { pthread_mutex_lock(&lock); }
static void unlock_after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void install_fork_handlers(void) {
    pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
}
