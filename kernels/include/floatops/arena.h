/* floatops/arena.h: a cache of freed array buffers, as NumPy's data allocator while a graph runs.
 *
 * A float graph frees and allocates megabyte tensors of the same sizes op after op and run after run. glibc gives
 * such blocks back to the kernel (mmap / heap trimming) and takes them anew, and every first touch of a fresh 4 KB
 * page is a page fault: ~3.5 us each in a VM, 3.4 ms for a 3.7 MB output that takes 0.2 ms to compute. This cache
 * keeps freed blocks of at least AR_MIN_BYTES (up to AR_SLOTS blocks, AR_LIMIT bytes, the oldest freed first)
 * and hands one back to an allocation of exactly its size; everything else goes to malloc / calloc / realloc /
 * free, which the cached blocks come from and return to. NumPy calls the handler with the GIL held (its own
 * small-block cache relies on that too), which serializes these functions.
 *
 * The structs are NumPy's PyDataMem_Handler (version 1, numpy/ndarraytypes.h), declared here so the build needs
 * no NumPy headers.
 */
#ifndef FLOATOPS_ARENA_H
#define FLOATOPS_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} ar_allocator;

typedef struct {
    char name[127];
    uint8_t version;
    ar_allocator allocator;
} ar_handler;

#define AR_SLOTS 64
#define AR_MIN_BYTES ((size_t)256 << 10)
#define AR_LIMIT ((size_t)128 << 20)

static struct { void *ptr; size_t size; } ar_slot[AR_SLOTS];  /* oldest first */
static int ar_count;
static size_t ar_bytes;
static unsigned long long ar_hits, ar_misses;

static void ar_drop_oldest(void) {
    free(ar_slot[0].ptr);
    ar_bytes -= ar_slot[0].size;
    memmove(ar_slot, ar_slot + 1, (size_t)(--ar_count) * sizeof ar_slot[0]);
}

static void *ar_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (size >= AR_MIN_BYTES) {
        for (int i = ar_count - 1; i >= 0; i--)  /* the most recently freed first: likely still in cache */
            if (ar_slot[i].size == size) {
                void *p = ar_slot[i].ptr;
                ar_bytes -= size;
                memmove(ar_slot + i, ar_slot + i + 1, (size_t)(--ar_count - i) * sizeof ar_slot[0]);
                ar_hits++;
                return p;
            }
        ar_misses++;
    }
    return malloc(size ? size : 1);
}

static void *ar_calloc(void *ctx, size_t nelem, size_t elsize) { (void)ctx; return calloc(nelem ? nelem : 1, elsize ? elsize : 1); }

static void *ar_realloc(void *ctx, void *ptr, size_t new_size) { (void)ctx; return realloc(ptr, new_size ? new_size : 1); }

static void ar_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    if (ptr == NULL)
        return;
    if (size < AR_MIN_BYTES || size > AR_LIMIT) {
        free(ptr);
        return;
    }
    while (ar_count == AR_SLOTS || ar_bytes + size > AR_LIMIT)
        ar_drop_oldest();
    ar_slot[ar_count].ptr = ptr;
    ar_slot[ar_count++].size = size;
    ar_bytes += size;
}

static void ar_release(void) {
    while (ar_count)
        ar_drop_oldest();
}

static ar_handler AR_HANDLER = {"refquant_arena", 1, {NULL, ar_malloc, ar_calloc, ar_realloc, ar_free}};

#endif
