/*
 * metrics - the process-wide metrics registry and its HTTP endpoint.
 *
 * Counters, gauges and histograms are identified by name plus a label set
 * given as Prometheus label text ("site=\"google\",source=\"10.0.0.1\"",
 * or NULL for none); the first use creates the series. Names follow the
 * convention sluice_<component>_<what>_<unit>[_total]. Keep label values
 * bounded (site, source IP, pool, tenant, reply code class): never job ids
 * or recipients. Every function is thread safe.
 *
 * sl_metric_help() registers HELP text and the type for a name; a name
 * without it is rendered as untyped.
 *
 * sl_http_start() serves GET /metrics (Prometheus text 0.0.4), /healthz
 * (200 while every heartbeat of health.h is fresh, 503 naming the stalled
 * one otherwise) and /readyz (200 once the daemon
 * called sl_http_set_ready(true), 503 otherwise) from a thread of its own
 * with its own libuv loop, so a busy daemon loop never delays a scrape.
 * A connection must send its request within 10 s and at most 64 are open
 * at once (the 65th closes the oldest), so idle connections cannot use up
 * the process's descriptors or lock out a health check; both count in
 * sluice_metrics_connections_dropped_total{reason="timeout"|"cap"}.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdbool.h>
#include "util.h"

typedef enum { SL_METRIC_COUNTER, SL_METRIC_GAUGE, SL_METRIC_HISTOGRAM } sl_metric_type;

void sl_metric_help(const char *name, sl_metric_type type, const char *help);
void sl_metric_inc(const char *name, const char *labels, double v);
void sl_metric_set(const char *name, const char *labels, double v);
void sl_metric_add(const char *name, const char *labels, double v); /* gauge += v */
/* A counter or gauge series looked up once, for paths that update it for
 * every record: the registry owns it and it lives until sl_metric_drop()
 * of its name and labels (never, for most). sl_series_add() adds to a
 * counter or gauge, sl_series_set() sets a gauge. */
typedef struct sl_series sl_series;
sl_series *sl_metric_series(const char *name, const char *labels, sl_metric_type type);
void sl_series_add(sl_series *s, double v);
void sl_series_set(sl_series *s, double v);
/* Remove a series (a gauge or counter of state that was freed: a site the
 * scheduler forgot); a pointer from sl_metric_series() to it is invalid
 * afterwards. Absent: nothing happens. */
void sl_metric_drop(const char *name, const char *labels);
/* Histogram with buckets for seconds: 1ms .. 60s. */
void sl_metric_observe(const char *name, const char *labels, double v);
double sl_metric_get(const char *name, const char *labels); /* tests; 0 if absent */
void sl_metrics_render(sl_buf *out);

/* listen: "127.0.0.1:9100" (port 0: ephemeral). Returns 0 or an error;
 * *port_out gets the bound port. */
int sl_http_start(const char *listen, int *port_out, char **err);
void sl_http_set_ready(bool ready);

#endif
