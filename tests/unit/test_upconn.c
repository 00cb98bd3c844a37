/*
 * Unit tests for upconn.c's default dial: the socket it hands over has Nagle off and a receive
 * buffer that stays at UPCONN_RCVBUF while a large transfer runs through it, where the kernel's
 * autotuning grows an ordinary socket's (checked on one beside it, so the test fails if the
 * buffer is not fixed, and skips where autotuning is off).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upconn.h"

/* Enough bytes for autotuning to grow an ordinary socket's buffer many times over on loopback. */
#define TRANSFER_BYTES (64L * 1024 * 1024)

struct fixture {
    int lfd;
    struct balancer_addr addr;
};

static int
setup(void **state)
{
    static struct fixture f;
    struct sockaddr_in *sin = (struct sockaddr_in *)&f.addr.addr;

    memset(&f, 0, sizeof(f));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f.addr.addrlen = sizeof(*sin);
    f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (f.lfd < 0 || bind(f.lfd, (struct sockaddr *)sin, f.addr.addrlen) < 0 ||
        getsockname(f.lfd, (struct sockaddr *)sin, &f.addr.addrlen) < 0 || listen(f.lfd, 4) < 0)
        return -1;
    *state = &f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;

    close(f->lfd);
    return 0;
}

/* Waits until fd is connected: the dial is non-blocking. */
static void
wait_connected(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = -1;
    socklen_t len = sizeof(err);

    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len), 0);
    assert_int_equal(err, 0);
}

static int
rcvbuf(int fd)
{
    int v = 0;
    socklen_t len = sizeof(v);

    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len), 0);
    return v;
}

/* Sends TRANSFER_BYTES from the accepted side of fd's connection to fd, reading as it goes. */
static void
transfer(struct fixture *f, int fd)
{
    static char buf[256 * 1024];
    int sfd = accept(f->lfd, NULL, NULL);
    long sent = 0, got = 0;

    assert_true(sfd >= 0);
    assert_int_equal(shutdown(sfd, SHUT_RD), 0);
    while (got < TRANSFER_BYTES) {
        struct pollfd p[2] = {{.fd = sfd, .events = sent < TRANSFER_BYTES ? POLLOUT : 0},
                              {.fd = fd, .events = POLLIN}};
        ssize_t n;

        assert_true(poll(p, 2, 5000) > 0);
        if (p[0].revents & POLLOUT) {
            size_t want = (size_t)(TRANSFER_BYTES - sent) < sizeof(buf)
                              ? (size_t)(TRANSFER_BYTES - sent)
                              : sizeof(buf);
            n = send(sfd, buf, want, MSG_DONTWAIT);
            assert_true(n > 0 || errno == EAGAIN);
            sent += n > 0 ? n : 0;
        }
        if (p[1].revents & POLLIN) {
            n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            assert_true(n > 0 || (n < 0 && errno == EAGAIN));
            got += n > 0 ? n : 0;
        }
    }
    close(sfd);
}

static void
test_dial_sets_nodelay(void **state)
{
    struct fixture *f = *state;
    bool connecting = false;
    int fd = upconn_dial_tcp(&f->addr, &connecting), v = 0, sfd;
    socklen_t len = sizeof(v);

    assert_true(fd >= 0);
    wait_connected(fd);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    assert_int_equal(v, 1);
    sfd = accept(f->lfd, NULL, NULL);
    assert_true(sfd >= 0);
    close(sfd);
    close(fd);
}

static void
test_dial_rcvbuf_stays_fixed_under_bulk(void **state)
{
    struct fixture *f = *state;
    bool connecting = false;
    int fd, plain, start, grown;

    /* The control: an ordinary socket's buffer grows under the same transfer, or this machine
     * does not autotune and the test cannot tell a fixed buffer from a default one. */
    plain = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(plain >= 0);
    assert_int_equal(connect(plain, (struct sockaddr *)&f->addr.addr, f->addr.addrlen), 0);
    start = rcvbuf(plain);
    transfer(f, plain);
    grown = rcvbuf(plain);
    close(plain);
    if (grown <= start) {
        print_message("receive buffers do not autotune here (%d -> %d): skipped\n", start, grown);
        skip();
    }

    fd = upconn_dial_tcp(&f->addr, &connecting);
    assert_true(fd >= 0);
    wait_connected(fd);
    /* The kernel doubles what is asked, for its bookkeeping. */
    assert_int_equal(rcvbuf(fd), 2 * UPCONN_RCVBUF);
    transfer(f, fd);
    assert_int_equal(rcvbuf(fd), 2 * UPCONN_RCVBUF);
    close(fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dial_sets_nodelay),
        cmocka_unit_test(test_dial_rcvbuf_stays_fixed_under_bulk),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
