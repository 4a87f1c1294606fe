/*
 * shape - the second scheduler stage: sited -> dispatch.
 *
 * Each record of the sited topic (consumer group sluice-shape) joins its
 * site's queue (sched_fq: a flow per (tenant, campaign, pool), one FIFO per
 * priority in each: transactional, then normal, then bulk). A site is
 * pumped on arrival and by its own timer: the next job is the oldest of
 * the highest priority among the flows whose tenant / campaign limits
 * (sched_limit) have a token within the look-ahead, flows served round
 * robin, so a capped tenant never delays another; for that job it picks a source IP of the job's pool (weighted round robin
 * over the IPs that are usable for the site: not suspended or disabled by
 * backoff, warm-up cap for the day not spent, token available within the
 * look-ahead), takes a token from that (site, IP) bucket and from each of its
 * limits, and publishes a Dispatch keyed "ip/site" stamped with send_at_ms
 * (when all those tokens are available), the pair's current rate and the
 * site's connection limits, TLS policy, route and SOCKS5 proxy. A site waiting for tokens only arms
 * its own timer: it never delays another site.
 * A pool none of whose IPs can send holds back only its own flows: pump
 * passes over them, and parks the job on a retry topic when the pool
 * cannot send for at least the shortest retry delay. A held job past its
 * expiry, or whose send time would fall after it, becomes an EXPIRED event
 * instead of a Dispatch.
 *
 * Memory: at most scheduler.max_buffered jobs wait in shape. Beyond it the
 * tail of the longest queue is parked on the retry topic whose delay fits
 * the time that queue needs to drain (not_before_ms set), so a flood for
 * one slow site costs Kafka space, not scheduler memory. A record held in
 * a queue keeps its input offset un-stored until its Dispatch (or parked
 * copy) is acknowledged.
 *
 * Adaptive backoff: sched_shape_feedback() applies a matched backoff rule
 * to a (site, IP) pair; every state change publishes a SHAPING event and
 * sets the gauges sluice_shape_rate_per_second{site,source} and
 * sluice_shape_state{site,source,state}; while a pair may not send,
 * sluice_shape_suspended_until_seconds{site,source,cause} says until when
 * and why. sched_shape_down() suspends a pair whose destination a sender
 * reported down (cause "destination-down") until the sender's next probe:
 * when it ends, the next dispatch is that probe.
 *
 * Idle state: every scheduler.idle_state_timeout / 4 (1 s .. 1 min) the
 * tick frees each pair unused for the timeout and back at its defaults
 * (backoff normal at the configured rate, bucket full, no warm-up count of
 * today), with its metric series, then each site left with no pair, no
 * queued job and no armed timer, and the tenant / campaign limit buckets
 * no flow holds (sched_limits_sweep()); gauges sluice_shape_sites and
 * sluice_shape_pairs count what is held. So memory follows the sites in
 * use, not every site ever seen.
 *
 * Site state: the owner of a site (its sited partition is assigned here;
 * murmur2 of the site name) writes the site's pairs (warm-up count of the
 * day, backoff) to the compacted state topic keyed by site: at once on a
 * backoff change, at most every 100 ms for counts. Before shaping, a
 * starting shaper reads the whole topic on a pool thread (not ready until
 * then), and each new assignment reads its partitions' sites on the
 * consumer thread (the consumer's on_assign hook) for the loop to apply
 * before the next record.
 *
 * On stop, queued jobs are dispatched at once with their reserved send
 * times when an IP can take them, else parked, so the consumer drains;
 * dirty site state is written.
 * Loop thread only, except the on_assign hook (consumer thread; it hands
 * its result over under a mutex).
 */
#ifndef SLUICE_SCHED_SHAPE_H
#define SLUICE_SCHED_SHAPE_H

#include "sched_ctx.h"

/* How far ahead of its send time a job is handed to the senders. */
#define SCHED_SHAPE_LOOKAHEAD_MS 1000

sched_shape *sched_shape_new(sched_ctx *ctx, char **err);
bool sched_shape_ready(const sched_shape *s);
void sched_shape_stop(sched_shape *s, sl_drained_cb cb, void *arg);
void sched_shape_free(sched_shape *s);
size_t sched_shape_buffered(const sched_shape *s);

/* A reply matched rule for (site, ip): adapt. Unknown site or IP: the
 * pair's state is created, so the next job already sees it. at_ms is the
 * reply's time (0: unknown): a halving reply no later than the pair's last
 * halving is in that one already (a reply read again at start) and
 * changes nothing. op (may be NULL): the event's record, held until the
 * state-topic write of the change (when this scheduler owns the site) is
 * acknowledged, so the live feedback's mark never passes a change that
 * is not stored (docs/scheduler.md, "The feedback groups"). */
void sched_shape_feedback(sched_shape *s, const char *site, const char *ip,
                          const sl_backoff_rule *rule, const char *reply, int64_t at_ms,
                          sched_op *op);
/* A sender reported every MX of site down from ip until until_ms (its next
 * probe): the pair is suspended until then (sched_backoff_down()); a
 * later report extends it. At or before now: nothing. */
void sched_shape_down(sched_shape *s, const char *site, const char *ip, int64_t until_ms,
                      const char *reply, sched_op *op);

#endif
