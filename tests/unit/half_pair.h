/*
 * For unit tests on a real loop: a loop on a minimal config, and a half on one end of a socketpair
 * whose other end the test holds. Include after cmocka.h.
 */
#ifndef HALF_PAIR_H
#define HALF_PAIR_H

#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "half.h"
#include "loop.h"
#include "runtime.h"

/* Sets up lp and h (h reports to cb with owner); *peer is the test's end, closed by
 * half_pair_close(). */
static inline void
half_pair_open(struct loop *lp, struct half *h, int *peer, half_cb cb, void *owner)
{
    static const char yaml[] = "services:\n  s:\n    servers: [\"127.0.0.1:1\"]\n";
    char err[CONFIG_ERR_SIZE] = "";
    struct config *cfg = config_parse("t.yaml", yaml, sizeof(yaml) - 1, err, sizeof(err));
    struct runtime *rt;
    int sv[2];

    assert_non_null(cfg);
    rt = runtime_new(cfg, err, sizeof(err));
    config_unref(cfg);
    assert_non_null(rt);
    assert_int_equal(loop_init(lp, rt, NULL, err, sizeof(err)), 0);
    runtime_unref(rt);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    *peer = sv[1];
    assert_int_equal(half_init(h, lp, sv[0], false, cb, owner), 0);
}

static inline void
half_pair_close(struct loop *lp, struct half *h, int peer)
{
    half_fini(h);
    close(peer);
    loop_fini(lp);
}

#endif
