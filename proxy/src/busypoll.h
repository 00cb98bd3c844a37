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
 *
 * Polling is paid for by work: each microsecond a worker spends on its events earns it one of
 * polling (up to BUSYPOLL_CREDIT_MAX_US saved), so polling never takes more CPU than the work it
 * waits for. Where events come often but each is little work (a few requests a millisecond), the
 * window alone would keep a worker polling all of its idle time; where the work is dense (many
 * clients, or a few with little wait between requests) the credit is always there.
 */
#ifndef BUSYPOLL_H
#define BUSYPOLL_H

#include <stdbool.h>
#include <stdint.h>

#include "loop.h"

#define BUSYPOLL_START_US 4
#define BUSYPOLL_MAX_US 100
#define BUSYPOLL_CREDIT_MAX_US (2 * BUSYPOLL_MAX_US)

struct busypoll {
    uint32_t window_us; /* how long to poll before sleeping; 0: sleep at once */
    uint32_t credit_us; /* polling earned by work and not yet spent */
    uint64_t work_from; /* loop_mono_us() when the last turn's work began; 0: none to count */
};

/* The worker went idle, found nothing while polling, and its sleep ended idle_us after it went
 * idle: grows or shrinks the window. */
void busypoll_slept(struct busypoll *bp, uint64_t idle_us);

/* The worker worked us microseconds: it may poll as long again (up to BUSYPOLL_CREDIT_MAX_US). */
void busypoll_worked(struct busypoll *bp, uint64_t us);

/* How long the next turn may poll: the window, as far as the credit goes. */
uint32_t busypoll_limit(const struct busypoll *bp);

/*
 * One turn of lp's loop: with on, polls for up to busypoll_limit() (until a socket's callback runs,
 * counted by lp->io_events), then sleeps if nothing came; without, sleeps at once (and the window
 * starts from nothing when polling comes back on). The time polled is spent from the credit; the
 * turn's work, from the start of the turn that found the event (or, after a sleep, from the first
 * time a callback read the clock, lp->now_us) to the next call, is credited then. Returns as
 * loop_turn().
 */
int busypoll_turn(struct busypoll *bp, struct loop *lp, bool on);

#endif
