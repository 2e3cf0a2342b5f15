package lab

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// ControlHandler is the lab's control API, served under /lab/v1/ on the
// fleet's listener (any Host) and mountable elsewhere:
//
//	GET /lab/v1/faults               the faults in force
//	PUT /lab/v1/faults               replace them (JSON; unknown fields and nodes refused)
//	GET /lab/v1/nodes                every node: power, boot override, phase, installed build, boots
//	GET /lab/v1/nodes/{name}         one node
//	GET /lab/v1/nodes/{name}/facts   its installed system's facts
//	PUT /lab/v1/nodes/{name}/facts   edit them by hand (drift), until the next install
//	PUT /lab/v1/nodes/{name}/agent   give its system agent.json and a build id ({"agent": {...}, "buildId": ...}: anneal enroll's files)
//
// It has no authentication: the lab listens on loopback.
func (f *Fleet) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /lab/v1/faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.Faults())
	})
	mux.HandleFunc("PUT /lab/v1/faults", func(w http.ResponseWriter, r *http.Request) {
		var faults Faults
		if !decodeStrict(w, r, &faults) {
			return
		}
		if err := f.SetFaults(faults); err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.log.Info("lab: faults set", "faults", faults)
		writeJSON(w, http.StatusOK, f.Faults())
	})
	mux.HandleFunc("GET /lab/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.Status())
	})
	mux.HandleFunc("GET /lab/v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if n := f.controlNode(w, r); n != nil {
			writeJSON(w, http.StatusOK, n.Status())
		}
	})
	mux.HandleFunc("GET /lab/v1/nodes/{name}/facts", func(w http.ResponseWriter, r *http.Request) {
		n := f.controlNode(w, r)
		if n == nil {
			return
		}
		facts, ok := n.Facts()
		if !ok {
			controlError(w, http.StatusNotFound, "node "+n.name+" has nothing installed")
			return
		}
		writeJSON(w, http.StatusOK, facts)
	})
	mux.HandleFunc("PUT /lab/v1/nodes/{name}/facts", func(w http.ResponseWriter, r *http.Request) {
		n := f.controlNode(w, r)
		if n == nil {
			return
		}
		var facts node.Facts
		if !decodeStrict(w, r, &facts) {
			return
		}
		if err := n.SetFacts(func(fs *node.Facts) { *fs = facts }); err != nil {
			controlError(w, http.StatusConflict, err.Error())
			return
		}
		f.log.Info("lab: facts edited by hand", "node", n.name)
		writeJSON(w, http.StatusOK, facts)
	})
	mux.HandleFunc("PUT /lab/v1/nodes/{name}/agent", func(w http.ResponseWriter, r *http.Request) {
		n := f.controlNode(w, r)
		if n == nil {
			return
		}
		var body struct {
			Agent   AgentConfig `json:"agent"`
			BuildID string      `json:"buildId"`
		}
		if !decodeStrict(w, r, &body) {
			return
		}
		if err := n.SetAgent(body.Agent, body.BuildID); err != nil {
			controlError(w, http.StatusConflict, err.Error())
			return
		}
		f.log.Info("lab: agent configured", "node", n.name, "build", body.BuildID)
		writeJSON(w, http.StatusOK, n.Status())
	})
	return mux
}

func (f *Fleet) controlNode(w http.ResponseWriter, r *http.Request) *Node {
	n := f.Node(r.PathValue("name"))
	if n == nil {
		controlError(w, http.StatusNotFound, "no node "+r.PathValue("name"))
	}
	return n
}

func decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		controlError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
