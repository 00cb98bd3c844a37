/*
 * libevent's memory, through a per-thread cache of the blocks its buffer chains take. A read into
 * an empty evbuffer allocates a chain (a power of two: 32 KiB for iobuf's 16 KiB reads) and the
 * drain that empties the buffer frees it, so every proxied request takes four such blocks and
 * gives them back; malloc keeps only small blocks in its own per-thread cache and sends these
 * through its bins each time. Here the chain sizes are kept on free lists of the thread that freed
 * them and handed out again last in, first out, while still warm. Every other size goes straight
 * to malloc. Each thread's cache is bounded (BUFPOOL_KEEP blocks a size) and freed when the thread
 * ends.
 */
#ifndef BUFPOOL_H
#define BUFPOOL_H

#include <stddef.h>

/* Blocks of one size a thread keeps. */
#define BUFPOOL_KEEP 16

/*
 * Routes libevent's allocations through the cache (event_set_mem_functions). Call once, before
 * anything else of libevent's (evthread_use_pthreads included): a block must be freed by the
 * functions that allocated it. Returns 0, or -1 when the thread-exit hook cannot be set up (then
 * libevent keeps malloc).
 */
int bufpool_install(void);

/* The functions libevent calls once installed: malloc(), realloc() and free() with a cache. */
void *bufpool_malloc(size_t size);
void *bufpool_realloc(void *p, size_t size);
void bufpool_free(void *p);

/* How many blocks of size bytes the calling thread keeps now (for tests). */
unsigned bufpool_cached(size_t size);

/* Frees the blocks the calling thread keeps (as its exit does). */
void bufpool_flush(void);

#endif
