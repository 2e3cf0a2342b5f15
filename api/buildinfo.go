package api

import (
	"net/http"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/prometheus/client_golang/prometheus"
)

// StatusView is GET /api/v1/status: the reconciler's status and the
// daemon's version.
type StatusView struct {
	reconcile.Status
	// Version is the daemon's version (Config.Version), "" when unknown.
	Version string `json:"version,omitempty"`
}

// statusView is the status the API answers with.
func statusView(r Reconciler, cfg Config) StatusView {
	return StatusView{Status: r.Status(), Version: cfg.Version}
}

// setBuildInfo publishes anneal_build_info{version,revision} 1, once per
// registry (New may be called again with the same Metrics).
func (m *Metrics) setBuildInfo(version, revision string) {
	if version == "" && revision == "" {
		return
	}
	m.buildOnce.Do(func() {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anneal_build_info",
			Help: "The daemon's version and the commit it was built from (value 1)."}, []string{"version", "revision"})
		g.WithLabelValues(version, revision).Set(1)
		m.reg.MustRegister(g)
	})
}

// writeStatus answers with the status view.
func writeStatus(w http.ResponseWriter, r Reconciler, cfg Config) {
	writeJSON(w, http.StatusOK, statusView(r, cfg))
}
