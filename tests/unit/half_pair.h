/*
 * For unit tests on a real loop: a loop on a minimal config, and a half on one end of a socketpair
 * whose other end the test holds. Include after cmocka.h.
 */
#ifndef HALF_PAIR_H
#define HALF_PAIR_H

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "half.h"
#include "loop.h"
#include "runtime.h"

/* The first member of a test's fixture: the loop, the half, and the test's end of the pair. */
struct half_pair {
    struct loop lp;
    struct half h;
    int peer; /* owned */
};

/*
 * A cmocka setup: allocates a zeroed fixture of size bytes (a struct whose first member is a
 * struct half_pair) into *state, and opens the pair; the half reports to cb with the fixture as
 * owner. half_pair_teardown() closes and frees it.
 */
static inline int
half_pair_setup(void **state, size_t size, half_cb cb)
{
    static const char yaml[] = "services:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    char err[CONFIG_ERR_SIZE] = "";
    struct half_pair *p = calloc(1, size);
    struct config *cfg = config_parse("t.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err));
    struct runtime *rt;
    int sv[2];

    assert_non_null(p);
    assert_non_null(cfg);
    rt = runtime_new(cfg, err, sizeof(err));
    config_unref(cfg);
    assert_non_null(rt);
    assert_int_equal(loop_init(&p->lp, rt, NULL, err, sizeof(err)), 0);
    runtime_unref(rt);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    p->peer = sv[1];
    assert_int_equal(half_init(&p->h, &p->lp, sv[0], false, cb, p), 0);
    *state = p;
    return 0;
}

static inline int
half_pair_teardown(void **state)
{
    struct half_pair *p = *state;

    half_fini(&p->h);
    close(p->peer);
    loop_fini(&p->lp);
    free(p);
    return 0;
}

#endif
