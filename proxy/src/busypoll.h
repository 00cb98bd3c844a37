/*
 * Busy polling: before a worker sleeps in epoll_wait, it polls its loop (non-blocking turns) for a
 * short while when events have lately come soon after it went idle.
 *
 * A sleep costs more than the wait when the next event is microseconds away: the CPU halts, and the
 * CPU that sends the next event (a client, a pod) pays to wake it, an interrupt between CPUs, and
 * in a guest whose host does not halt-poll a VM exit as well. A proxy that finishes its turns
 * sooner than its peers sleeps more often and so makes the busier CPU pay more. The window adapts
 * as Linux's cpuidle haltpoll governor does: it grows (from BUSYPOLL_START_US, doubling, up to
 * BUSYPOLL_MAX_US) when a sleep ended soon enough that polling would have caught its event, and
 * halves when a sleep lasted longer than that. An idle or lightly loaded worker (events further
 * apart than BUSYPOLL_MAX_US) soon sleeps at once again and polls for nothing.
 */
#ifndef BUSYPOLL_H
#define BUSYPOLL_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

#define BUSYPOLL_START_US 4
#define BUSYPOLL_MAX_US 100

struct busypoll {
    uint32_t window_us; /* how long to poll before sleeping; 0: sleep at once */
};

/* The worker went idle, found nothing while polling, and its sleep ended idle_us after it went
 * idle: grows or shrinks the window. */
void busypoll_slept(struct busypoll *bp, uint64_t idle_us);

/*
 * One turn of lp's loop: with on, polls for up to bp's window (until a socket's callback runs,
 * counted by lp->io_events), then sleeps if nothing came; without, sleeps at once (and the window
 * starts from nothing when polling comes back on). Returns as loop_turn().
 */
int busypoll_turn(struct busypoll *bp, struct loop *lp, bool on);

#endif
