/*
 * budget - see budget.h.
 */
#include "budget.h"

uint64_t sl_budget_job_max(const sl_config *cfg)
{
    uint64_t j = cfg && cfg->scheduler.max_job_bytes ? cfg->scheduler.max_job_bytes
                                                     : SL_BUDGET_JOB_DEFAULT;
    /* librdkafka takes a message.max.bytes of at most 10^9. */
    return j < SL_BUDGET_JOB_CEILING ? j : SL_BUDGET_JOB_CEILING;
}

uint64_t sl_budget_record_max(const sl_config *cfg)
{
    return sl_budget_job_max(cfg) + SL_BUDGET_HEADROOM + SL_BUDGET_RECORD_OVERHEAD;
}

uint64_t sl_budget_topic_max(const sl_config *cfg)
{
    return sl_budget_record_max(cfg) + SL_BUDGET_BATCH_FRAMING;
}

uint64_t sl_budget_dlq_copy_max(const sl_config *cfg)
{
    return sl_budget_job_max(cfg) + SL_BUDGET_HEADROOM;
}

uint64_t sl_budget_message_max(const sl_config *cfg)
{
    uint64_t j = sl_budget_job_max(cfg);
    return j > 2 * SL_BUDGET_ENVELOPE ? j - SL_BUDGET_ENVELOPE : j / 2;
}
