package boot

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// maxReportBody bounds a report's body.
const maxReportBody = 1 << 20

// installedRequest is the body of POST /api/v1/nodes/{node}/installed.
type installedRequest struct {
	Token   string     `json:"token"`
	BuildID string     `json:"buildId"`
	Facts   node.Facts `json:"facts"`
}

// factsRequest is the body of POST /api/v1/nodes/{node}/facts.
type factsRequest struct {
	BuildID string     `json:"buildId"`
	Facts   node.Facts `json:"facts"`
}

var buildIDChars = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Refusals decided inside UpdateNode; the record is left as it was.
var (
	errTokenUsed       = refuse(http.StatusForbidden, "install token was used or superseded", nil)
	errTokenOtherBuild = refuse(http.StatusForbidden, "install token is for another build", nil)
	errAgentToken      = refuse(http.StatusForbidden, "invalid agent token",
		errors.New("not this node's current agent token: forged, another node's, or revoked by a reinstall or a revoke"))
)

// handleInstalled answers the install callback: it verifies the single-use
// install token, consumes its nonce and records the node installed (or
// failed, when it installed another build than the one armed), in one
// node.Store update. Installed is not verified: the rebuild engine waits for
// the report of the node's new agent (node.Record.Confirmed), so a
// callback posted by anyone else than the installed system verifies
// nothing.
func (s *Server) handleInstalled(w http.ResponseWriter, r *http.Request) {
	name, now := r.PathValue("node"), s.now()
	var req installedRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, r, "install callback", name, err)
		return
	}
	c, err := s.checkToken(name, req.Token, now)
	if err != nil {
		s.fail(w, r, "install callback", name, err)
		return
	}
	if !buildIDChars.MatchString(req.BuildID) {
		s.fail(w, r, "install callback", name, refuse(http.StatusBadRequest, "buildId missing or not a build id", nil))
		return
	}
	site, nd, err := s.siteNode(name)
	if err != nil {
		s.fail(w, r, "install callback", name, err)
		return
	}
	if err := s.checkSource(r, site, nd); err != nil {
		s.fail(w, r, "install callback", name, err)
		return
	}
	var mismatch string
	err = s.Nodes.UpdateNode(r.Context(), name, func(rec *node.Record) error {
		mismatch = "" // fn may run more than once
		switch {
		case rec.Nonce == "" || subtle.ConstantTimeCompare([]byte(rec.Nonce), []byte(c.Nonce)) != 1:
			return errTokenUsed
		case rec.Target != c.Build:
			return errTokenOtherBuild
		}
		rec.Nonce = "" // single use
		rec.Since = now
		// The callback's facts are kept for display, unless the new agent
		// already reported (its unit may start before the callback
		// succeeds): those are the ones that confirm the install.
		if !rec.Confirmed() {
			facts := req.Facts
			rec.Facts, rec.FactsAt, rec.FactsFrom, rec.FactsBuild = &facts, now, node.ReportInstalled, req.BuildID
		}
		if req.BuildID != rec.Target {
			mismatch = fmt.Sprintf("installed build %s, expected %s", req.BuildID, rec.Target)
			rec.State, rec.Reason = node.Failed, mismatch
			return nil
		}
		rec.State, rec.Reason = node.Installed, ""
		return nil
	})
	if err != nil {
		if !errors.Is(err, errTokenUsed) && !errors.Is(err, errTokenOtherBuild) {
			err = fmt.Errorf("update node record: %w", err)
		}
		s.fail(w, r, "install callback", name, err)
		return
	}
	s.report(node.Report{Node: name, Kind: node.ReportInstalled, BuildID: req.BuildID, Facts: req.Facts, Time: now})
	s.renders.forget(name)
	if mismatch != "" {
		s.fail(w, r, "install callback", name, refuse(http.StatusConflict, mismatch, nil))
		return
	}
	s.log().Info("boot: node installed, awaiting its agent's report", "node", name, "build", req.BuildID, "remote", remoteHost(r))
	w.WriteHeader(http.StatusNoContent)
}

// handleFacts stores an agent's facts. The agent token must be of the
// generation in the node's record (a reinstall or a revoke made every
// older one useless), and the report come from the node's address. The
// first such report after an install is what verifies it.
func (s *Server) handleFacts(w http.ResponseWriter, r *http.Request) {
	name, now := r.PathValue("node"), s.now()
	site, nd, err := s.siteNode(name)
	if err != nil {
		s.fail(w, r, "agent facts", name, err)
		return
	}
	if err := s.checkSource(r, site, nd); err != nil {
		s.fail(w, r, "agent facts", name, err)
		return
	}
	presented := bearer(r)
	if presented == "" {
		s.fail(w, r, "agent facts", name, refuse(http.StatusForbidden, "no agent token", nil))
		return
	}
	var req factsRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, r, "agent facts", name, err)
		return
	}
	if req.BuildID != "" && !buildIDChars.MatchString(req.BuildID) {
		s.fail(w, r, "agent facts", name, refuse(http.StatusBadRequest, "buildId is not a build id", nil))
		return
	}
	// The token is checked against the record inside the update, so a
	// revoke or an arming racing this report wins.
	var gen string // the generation the token was accepted at
	err = s.Nodes.UpdateNode(r.Context(), name, func(rec *node.Record) error {
		ok, adopt := checkAgentToken(s.Key, name, rec.AgentGen, presented)
		if !ok {
			return errAgentToken
		}
		if adopt != "" {
			rec.AgentGen = adopt
		}
		gen = rec.AgentGen
		facts := req.Facts
		rec.Facts, rec.FactsAt, rec.FactsFrom, rec.FactsBuild = &facts, now, node.ReportAgent, req.BuildID
		return nil
	})
	if err != nil {
		if !errors.Is(err, errAgentToken) {
			err = fmt.Errorf("update node record: %w", err)
		}
		s.fail(w, r, "agent facts", name, err)
		return
	}
	s.report(node.Report{Node: name, Kind: node.ReportAgent, BuildID: req.BuildID, Facts: req.Facts, Time: now, AgentGen: gen})
	s.log().Debug("boot: agent facts", "node", name, "build", req.BuildID, "remote", remoteHost(r))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) report(rep node.Report) {
	if s.OnReport != nil {
		s.OnReport(rep)
	}
}

// bearer is the token of an "Authorization: Bearer TOKEN" header, or "".
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// decodeBody reads a JSON body of at most maxReportBody bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReportBody))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxReportBody), nil)
		}
		return refuse(http.StatusBadRequest, "body is not the expected JSON", err)
	}
	return nil
}
