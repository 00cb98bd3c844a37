/*
 * A per-thread cache in front of malloc for libevent's buffer chains (bufpool.h says why); what
 * it keeps is poisoned under AddressSanitizer, so a use after free still shows.
 */
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/event.h>

#include "bufpool.h"

#if defined(__SANITIZE_ADDRESS__)
#define BUFPOOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUFPOOL_ASAN 1
#endif
#endif
#ifdef BUFPOOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* libevent's chain sizes: powers of two from its smallest (1 KiB on 64-bit systems) up; larger
 * chains come with bodies large enough that malloc's cost does not show. */
#define SHIFT_MIN 10
#define SHIFT_MAX 16
#define NSIZES (SHIFT_MAX - SHIFT_MIN + 1)

/* In front of every block: its size, and the next kept block while it is kept. Aligned as malloc
 * aligns, so that the block behind it is too. */
struct hdr {
    alignas(max_align_t) size_t size;
    struct hdr *next;
};

struct cache {
    struct hdr *head[NSIZES]; /* owned: kept blocks, the last freed first */
    unsigned n[NSIZES];
    bool hooked; /* the thread-exit hook will flush this thread's cache */
};

static _Thread_local struct cache kept;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool key_ok;

static void
thread_exit(void *arg)
{
    (void)arg;
    bufpool_flush();
    /* A free after this (another exit hook's) hooks the thread again: its hooks run again. */
    kept.hooked = false;
}

static void
key_make(void)
{
    key_ok = pthread_key_create(&exit_key, thread_exit) == 0;
}

/* Whether this thread's cache will be flushed when it ends: kept blocks must not outlive it. */
static bool
thread_hooked(void)
{
    if (!kept.hooked && pthread_once(&key_once, key_make) == 0 && key_ok)
        kept.hooked = pthread_setspecific(exit_key, &kept) == 0;
    return kept.hooked;
}

/* The free list for blocks of size bytes, or -1 for a size not kept. */
static int
slot(size_t size)
{
    if (size < (size_t)1 << SHIFT_MIN || size > (size_t)1 << SHIFT_MAX || (size & (size - 1)) != 0)
        return -1;
    return __builtin_ctzll(size) - SHIFT_MIN;
}

void *
bufpool_malloc(size_t size)
{
    int s = slot(size);
    struct hdr *h;

    if (s >= 0 && (h = kept.head[s]) != NULL) {
        kept.head[s] = h->next;
        kept.n[s]--;
        UNPOISON(h + 1, size);
        return h + 1;
    }
    if (size > SIZE_MAX - sizeof(*h) || (h = malloc(sizeof(*h) + size)) == NULL)
        return NULL;
    h->size = size;
    return h + 1;
}

void *
bufpool_realloc(void *p, size_t size)
{
    struct hdr *h;

    if (p == NULL)
        return bufpool_malloc(size);
    /* Every block came from malloc with its header: realloc moves both. */
    if (size > SIZE_MAX - sizeof(*h) ||
        (h = realloc((struct hdr *)p - 1, sizeof(*h) + size)) == NULL)
        return NULL;
    h->size = size;
    return h + 1;
}

void
bufpool_free(void *p)
{
    struct hdr *h;
    int s;

    if (p == NULL)
        return;
    h = (struct hdr *)p - 1;
    s = slot(h->size);
    if (s < 0 || kept.n[s] == BUFPOOL_KEEP || !thread_hooked()) {
        free(h);
        return;
    }
    POISON(p, h->size);
    h->next = kept.head[s];
    kept.head[s] = h;
    kept.n[s]++;
}

unsigned
bufpool_cached(size_t size)
{
    int s = slot(size);

    return s < 0 ? 0 : kept.n[s];
}

void
bufpool_flush(void)
{
    for (int s = 0; s < NSIZES; s++) {
        while (kept.head[s] != NULL) {
            struct hdr *h = kept.head[s];

            kept.head[s] = h->next;
            UNPOISON(h + 1, h->size);
            free(h);
        }
        kept.n[s] = 0;
    }
}

int
bufpool_install(void)
{
    if (pthread_once(&key_once, key_make) != 0 || !key_ok)
        return -1;
    event_set_mem_functions(bufpool_malloc, bufpool_realloc, bufpool_free);
    return 0;
}
