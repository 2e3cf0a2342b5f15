package api

import (
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the daemon's Prometheus metrics, on a registry of their own.
// Observe is the reconciler's Observe hook; New serves them on /metrics
// and adds the fleet's (read from the reconciler and the node records at
// scrape time, see live); CountEvents counts the events emitted.
type Metrics struct {
	reg       *prometheus.Registry
	duration  prometheus.Histogram
	runs      prometheus.Counter
	failures  *prometheus.CounterVec
	drift     *prometheus.GaugeVec
	revision  *prometheus.GaugeVec
	suspended prometheus.Gauge
	events    *prometheus.CounterVec
	// eventsLost counts the event subscriptions lost (CountEvents).
	eventsLost prometheus.Counter
	live       *liveCollector
	// counted, when set (tests), is called after each event counted.
	counted   func()
	buildOnce sync.Once // anneal_build_info (setBuildInfo)
}

// NewMetrics registers the metrics on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anneal_reconcile_duration_seconds",
			Help: "Duration of one reconcile.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}),
		runs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "anneal_reconciles_total", Help: "Reconciles run."}),
		failures:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anneal_reconcile_failures_total", Help: "Failed reconciles by class."}, []string{"class"}),
		drift:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anneal_drift", Help: "What the last plan would change, by kind."}, []string{"kind"}),
		revision:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anneal_applied_revision_info", Help: "The applied and last good revisions (value 1)."}, []string{"revision", "last_good"}),
		suspended: prometheus.NewGauge(prometheus.GaugeOpts{Name: "anneal_suspended", Help: "1 while reconciling is suspended."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anneal_events_total",
			Help: "Events emitted (the history of GET /api/v1/events), by kind."}, []string{"kind"}),
		eventsLost: prometheus.NewCounter(prometheus.CounterOpts{Name: "anneal_events_subscriptions_lost_total",
			Help: "Times the metrics' event subscription was dropped or refused (events it missed are counted from the store when it can)."}),
		live: newLiveCollector(),
	}
	m.initEvents()
	m.reg.MustRegister(m.duration, m.runs, m.failures, m.drift, m.revision, m.suspended, m.events, m.eventsLost, m.live)
	return m
}

// Observe records a finished reconcile (reconcile.Reconciler.Observe).
func (m *Metrics) Observe(st reconcile.Status, d time.Duration) {
	m.duration.Observe(d.Seconds())
	m.runs.Inc()
	if st.LastErrorClass != "" {
		m.failures.WithLabelValues(st.LastErrorClass).Inc()
	}
	m.drift.WithLabelValues("create").Set(float64(st.Drift.Creates))
	m.drift.WithLabelValues("update").Set(float64(st.Drift.Updates))
	m.drift.WithLabelValues("delete").Set(float64(st.Drift.Deletes))
	m.drift.WithLabelValues("conflict").Set(float64(st.Drift.Conflicts))
	m.drift.WithLabelValues("rebuild").Set(float64(st.Drift.Rebuilds))
	m.drift.WithLabelValues("decommission").Set(float64(st.Drift.Decommissions))
	m.drift.WithLabelValues("held").Set(float64(st.Drift.Held))
	m.revision.Reset()
	m.revision.WithLabelValues(st.AppliedRevision, st.LastGoodRevision).Set(1)
	m.setSuspended(st.Suspended)
}

func (m *Metrics) setSuspended(v bool) {
	if v {
		m.suspended.Set(1)
	} else {
		m.suspended.Set(0)
	}
}
