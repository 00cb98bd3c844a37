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

int
busypoll_turn(struct busypoll *bp, struct loop *lp, bool on)
{
    uint64_t idle = loop_mono_us();
    unsigned long seen = lp->io_events;
    int rc;

    if (!on)
        bp->window_us = 0;
    while (bp->window_us > 0) {
        if ((rc = loop_turn(lp, false)) != 0 || lp->io_events != seen)
            return rc;
        if (loop_mono_us() - idle >= bp->window_us)
            break;
    }
    rc = loop_turn(lp, true);
    if (rc == 0 && on)
        busypoll_slept(bp, loop_mono_us() - idle);
    return rc;
}
