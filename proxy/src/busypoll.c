#include "busypoll.h"

void
busypoll_slept(struct busypoll *bp, uint64_t idle_us)
{
    uint32_t w = bp->window_us;

    if (idle_us <= w)
        return; /* polling would have caught it: the window is right */
    if (idle_us <= BUSYPOLL_MAX_US) {
        w = w < BUSYPOLL_START_US ? BUSYPOLL_START_US : w * 2;
        bp->window_us = w < BUSYPOLL_MAX_US ? w : BUSYPOLL_MAX_US;
        return;
    }
    w /= 2;
    bp->window_us = w < BUSYPOLL_START_US ? 0 : w;
}

void
busypoll_worked(struct busypoll *bp, uint64_t us)
{
    uint64_t c = bp->credit_us + us;

    bp->credit_us = c < BUSYPOLL_CREDIT_MAX_US ? (uint32_t)c : BUSYPOLL_CREDIT_MAX_US;
}

uint32_t
busypoll_limit(const struct busypoll *bp)
{
    return bp->window_us < bp->credit_us ? bp->window_us : bp->credit_us;
}

static void
spend(struct busypoll *bp, uint64_t us)
{
    bp->credit_us = us < bp->credit_us ? bp->credit_us - (uint32_t)us : 0;
}

int
busypoll_turn(struct busypoll *bp, struct loop *lp, bool on)
{
    uint64_t idle = loop_mono_us(), polled = idle, done;
    unsigned long seen = lp->io_events;
    uint32_t limit;
    int rc;

    if (!on)
        bp->window_us = 0;
    if (bp->work_from != 0 && idle > bp->work_from)
        busypoll_worked(bp, idle - bp->work_from);
    limit = busypoll_limit(bp);
    while (limit > 0) {
        if ((rc = loop_turn(lp, false)) != 0 || lp->io_events != seen) {
            spend(bp, polled - idle);
            bp->work_from = polled;
            return rc;
        }
        polled = loop_mono_us();
        if (polled - idle >= limit)
            break;
    }
    spend(bp, polled - idle);
    rc = loop_turn(lp, true);
    done = loop_mono_us();
    /* The wait counts until the turn's work is done: after long turns the window shrinks and the
     * worker sleeps more, taking more events a wake, which is what a saturated worker wants. */
    if (rc == 0 && on)
        busypoll_slept(bp, done - idle);
    /* The callbacks read the turn's clock as they begin their work (their timers): the work began
     * then, near enough. A turn that never read it did next to nothing. */
    bp->work_from = lp->now_us != 0 ? lp->now_us : done;
    return rc;
}
