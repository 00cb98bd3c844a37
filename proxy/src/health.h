/*
 * Active health checks: every server of every service that has a `health_check` is sent
 * "GET path" each interval from one loop (the main thread's), and the verdict, down after
 * HEALTH_FALL failures in a row and up after HEALTH_RISE successes, goes to the balancer
 * (balancer_mark_probe()); picking servers, and what a verdict means for a pick, is left to the
 * balancer.
 */
#ifndef HEALTH_H
#define HEALTH_H

#include "loop.h"
#include "runtime.h"

/* Consecutive failed probes that take a server down, and successful ones that bring it back. */
#define HEALTH_FALL 3
#define HEALTH_RISE 2
/* The longest response head a probe reads; a longer one is a failure. */
#define HEALTH_HEAD_MAX 16384

/* One process's prober for one runtime. */
struct health;

/*
 * Starts probing, on lp, every service of rt whose config has a health_check: the first round at
 * once (on lp's next turn), then one every interval of that service. Each round takes the
 * balancer's current set, so servers that discovery adds are probed in the first round that sees
 * them and servers it removes are forgotten. Takes a reference to rt, dropped by health_stop().
 *
 * prev, when not NULL, is the prober of the runtime being replaced (a reload): a server that a
 * service of the same name, probing the same path, already judged keeps its verdict and its
 * counts, and a down one is marked down in rt's balancer at once, so a reload does not send
 * requests to a server known to be down. prev is only read: start the new prober, then stop prev.
 *
 * Returns the prober, or NULL when there is nothing to probe (no service has a health_check) or
 * memory ran out; the latter is logged here, and portier then serves without active checks.
 * health_stop(NULL) is a no-op, so the caller can keep NULL as it is. Call on lp's thread only.
 */
struct health *health_start(struct loop *lp, struct runtime *rt, const struct health *prev);

/*
 * Stops probing: no round starts any more, and probes in flight are closed (their connections
 * freed at the end of the loop's turn; no callback reaches the prober). Verdicts already given stay
 * in rt's balancers, so requests still running on that runtime keep skipping down servers; a
 * runtime that goes on serving needs a new prober (health_start() with this one as prev). The
 * prober itself and its runtime reference are dropped at the end of the loop's turn (loop_defer),
 * so h may be stopped from anywhere on lp's thread, a callback included, but not used afterwards;
 * lp must turn once more, or be finished with loop_fini(), for that memory to be freed.
 * health_stop(NULL) is a no-op.
 */
void health_stop(struct health *h);

#endif
