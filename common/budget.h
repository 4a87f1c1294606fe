/*
 * budget - the one size budget of sluice: how large a job may be, and how
 * large every Kafka record that carries it may grow on its way.
 *
 * A job the contract accepts is at most sl_budget_job_max() octets as
 * encoded on the jobs topic (scheduler.max_job_bytes, 1 MiB by default; 0
 * means the default, never "unlimited"; more than 512 MiB is capped). On its way it grows: classify adds
 * the site and at most SL_BUDGET_MX_MAX MX hosts, shape wraps it in a
 * Dispatch (pool, route, send time, rate), the sender adds the attempt and
 * due time for a retry topic. SL_BUDGET_HEADROOM bounds all of that, and
 * SL_BUDGET_RECORD_OVERHEAD bounds what Kafka puts around one record (key,
 * headers, framing). So:
 *
 *   sl_budget_record_max()  = job max + headroom + record overhead: the
 *       message.max.bytes of every sluice producer (sl_producer_new()), so
 *       any record a stage produces for an accepted job is never refused
 *       by the client;
 *   sl_budget_topic_max()   = record max + one batch's framing: the
 *       max.message.bytes `sluice topics ensure` gives every topic, so the
 *       broker never refuses such a record either;
 *   sl_budget_dlq_copy_max() = job max + headroom: the DLQ keeps at most
 *       this much of a record's bytes (sl_dlq_publish() truncates the copy
 *       and says so in headers), so the DLQ takes any record it is given;
 *   sl_budget_message_max() = job max - SL_BUDGET_ENVELOPE: the largest
 *       message sluice-submit takes (its SIZE), leaving room for the
 *       Received field and the envelope of a job of up to 100 recipients.
 *
 * Pure functions of the configuration; any thread.
 */
#ifndef SLUICE_BUDGET_H
#define SLUICE_BUDGET_H

#include <stdint.h>

#include "config.h"

#define SL_BUDGET_JOB_DEFAULT (1024u * 1024)
#define SL_BUDGET_JOB_CEILING (512u * 1024 * 1024) /* a larger max_job_bytes is capped */
#define SL_BUDGET_HEADROOM (64u * 1024)
#define SL_BUDGET_RECORD_OVERHEAD (16u * 1024)
#define SL_BUDGET_BATCH_FRAMING 4096u
#define SL_BUDGET_ENVELOPE (32u * 1024)
/* classify keeps at most this many MX hosts in a job (the most preferred). */
#define SL_BUDGET_MX_MAX 32
/* Recipients in one job (RFC 5321 4.5.3.1.8's minimum a server takes). */
#define SL_BUDGET_JOB_RCPTS_MAX 100
/* A job_id, and a DLQ reason header, are at most this long. */
#define SL_BUDGET_JOB_ID_MAX 255
#define SL_BUDGET_REASON_MAX 1024

uint64_t sl_budget_job_max(const sl_config *cfg);
uint64_t sl_budget_record_max(const sl_config *cfg);
uint64_t sl_budget_topic_max(const sl_config *cfg);
uint64_t sl_budget_dlq_copy_max(const sl_config *cfg);
uint64_t sl_budget_message_max(const sl_config *cfg);

#endif
