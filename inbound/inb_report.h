/*
 * inb_report - what a mail received by sluice-inbound reports, read with
 * GMime (no MIME parsing of our own):
 *   - a DSN (RFC 3464: multipart/report; report-type=delivery-status): one
 *     entry per recipient block of its message/delivery-status part, with
 *     Final-Recipient, Original-Recipient, Action, Status, Diagnostic-Code
 *     and Remote-MTA (the address type "rfc822;" / "smtp;" stripped);
 *   - an ARF report (RFC 5965: multipart/report;
 *     report-type=feedback-report): Feedback-Type, Original-Mail-From,
 *     Original-Rcpt-To, Source-IP, User-Agent;
 *   - a plain-text bounce (no multipart/report: qmail, old Exim and
 *     Exchange forms, forwarding scripts): the first line of its text that
 *     carries a 5xx (else 4xx) SMTP reply becomes one "failed" (or
 *     "delayed") entry;
 *   - anything else is INB_REPORT_OTHER.
 * For DSN and ARF the original message's headers, when the report carries
 * them (message/rfc822, text/rfc822-headers, message/global-headers), give
 * its Message-ID, Return-Path and To: what maps a report that reached a
 * feedback-loop mailbox (not a VERP address) back to its job.
 *
 * inb_report_parse() never fails on bad input: a message GMime cannot make
 * sense of is INB_REPORT_OTHER. inb_report_reply() turns an entry into the
 * sl_reply the one classification policy (common/trouble.h) reads.
 *
 * Memory: every string of an inb_report is owned by it (inb_report_free()).
 * Threads: inb_report_init() once, before any other thread uses GMime;
 * then parsing is reentrant.
 */
#ifndef SLUICE_INB_REPORT_H
#define SLUICE_INB_REPORT_H

#include <stddef.h>

#include "smtp_reply.h"

typedef enum {
    INB_REPORT_OTHER = 0,
    INB_REPORT_DSN,
    INB_REPORT_ARF,
    INB_REPORT_PLAIN, /* a non-standard bounce: text quoting a reply */
} inb_report_kind;

typedef struct inb_dsn_rcpt {
    char *final_recipient;    /* "" when absent */
    char *original_recipient; /* "" when absent */
    char *action;             /* lower case: failed, delayed, delivered, relayed, expanded */
    char *status;             /* "5.1.1", "" when absent */
    char *diagnostic;         /* "550 5.1.1 ..." as quoted, "" when absent */
    char *remote_mta;
} inb_dsn_rcpt;

typedef struct inb_report {
    inb_report_kind kind;
    inb_dsn_rcpt *rcpts; /* DSN, PLAIN */
    size_t n_rcpts;
    /* ARF; "" when absent */
    char *feedback_type; /* lower case: abuse, fraud, not-spam, virus, other */
    char *original_mail_from;
    char *original_rcpt_to;
    char *source_ip;
    char *user_agent;
    /* The original message's headers; "" when absent. The Message-ID
     * without <>; the Return-Path and To as addresses without <>. */
    char *orig_message_id;
    char *orig_return_path;
    char *orig_to;
} inb_report;

void inb_report_init(void);
void inb_report_parse(const char *msg, size_t len, inb_report *out);
void inb_report_free(inb_report *r);

/* The reply of a DSN entry: its Diagnostic-Code when that quotes an SMTP
 * reply, else the code implied by Status (5.x.x: 550, 4.x.x: 450) with the
 * status and the diagnostic text. *out is owned by the caller
 * (sl_reply_free()). */
void inb_report_reply(const inb_dsn_rcpt *r, sl_reply *out);

const char *inb_report_kind_name(inb_report_kind k); /* "dsn", "arf", "plain", "other" */

#endif
