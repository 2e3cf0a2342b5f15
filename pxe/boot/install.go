package boot

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// statusError is a refused request: the HTTP status, the short reason the
// client gets, and the error that is logged. Neither ever holds a token.
type statusError struct {
	status int
	reason string
	err    error
}

func (e *statusError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

func (e *statusError) Unwrap() error { return e.err }

func refuse(status int, reason string, err error) *statusError {
	return &statusError{status: status, reason: reason, err: err}
}

// fail logs a refused request and answers it. Client mistakes and refusals
// are warnings; failures of the server's own backends are errors.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, route, node string, err error) {
	var se *statusError
	if !errors.As(err, &se) {
		se = refuse(http.StatusInternalServerError, "internal error", err)
	}
	level := slog.LevelWarn
	if se.status >= 500 {
		level = slog.LevelError
	}
	s.log().Log(r.Context(), level, "boot: refused "+route, "node", node, "remote", remoteHost(r), "status", se.status, "reason", se.Error())
	http.Error(w, se.reason, se.status)
}

// checkToken verifies an install token for the node named in the path.
func (s *Server) checkToken(name, token string, now time.Time) (InstallClaims, error) {
	if token == "" {
		return InstallClaims{}, refuse(http.StatusForbidden, "no install token", nil)
	}
	c, err := CheckInstallToken(s.Key, token, now)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return InstallClaims{}, refuse(http.StatusForbidden, "install token expired", err)
	case err != nil:
		return InstallClaims{}, refuse(http.StatusForbidden, "invalid install token", err)
	case c.Node != name:
		return InstallClaims{}, refuse(http.StatusForbidden, "install token is for another node", fmt.Errorf("token for %s", c.Node))
	}
	return c, nil
}

// siteNode is the current site and the named node in it.
func (s *Server) siteNode(name string) (*schema.Site, *schema.Node, error) {
	site := s.Site()
	if site == nil {
		return nil, nil, refuse(http.StatusServiceUnavailable, "no site loaded", nil)
	}
	node := site.Node(name)
	if node == nil {
		return nil, nil, refuse(http.StatusNotFound, "node is not in the site", nil)
	}
	return site, node, nil
}

// errFetchedTwice refuses a second fetch of an install file in one arming.
var errFetchedTwice = refuse(http.StatusGone, "install file already served in this arming",
	errors.New("possible netboot hijack: the installer fetches each file once"))

// checkArmed checks an install token's claims against the node's record
// and the site: still armed, same nonce, same build, and the build is the
// one the site wants now (else the files would describe another build).
func checkArmed(c InstallClaims, rec *node.Record, want string, now time.Time) error {
	switch {
	case !rec.Armed(now):
		return refuse(http.StatusForbidden, "node is not armed for an install", nil)
	case subtle.ConstantTimeCompare([]byte(rec.Nonce), []byte(c.Nonce)) != 1:
		return refuse(http.StatusForbidden, "install token was used or superseded", nil)
	case rec.Target != c.Build:
		return refuse(http.StatusForbidden, "install token is for another build", fmt.Errorf("token build %s, armed %s", c.Build, rec.Target))
	case want != c.Build:
		return refuse(http.StatusConflict, fmt.Sprintf("the site moved on: it wants build %s, the node is armed for %s", want, c.Build), nil)
	}
	return nil
}

// handleInstall answers GET /install/{node}/{token}/{file}.
func (s *Server) handleInstall(w http.ResponseWriter, r *http.Request) {
	name, file, token, now := r.PathValue("node"), r.PathValue("file"), r.PathValue("token"), s.now()
	body, contentType, err := s.installFile(r, name, token, file, now)
	if err != nil {
		s.fail(w, r, "install file "+file, name, err)
		return
	}
	s.log().Info("boot: serving install file", "node", name, "file", file, "remote", remoteHost(r))
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(body))
}

func (s *Server) installFile(r *http.Request, name, token, file string, now time.Time) (body, contentType string, err error) {
	c, err := s.checkToken(name, token, now)
	if err != nil {
		return "", "", err
	}
	site, nd, err := s.siteNode(name)
	if err != nil {
		return "", "", err
	}
	if err := s.checkSource(r, site, nd); err != nil {
		return "", "", err
	}
	rec, err := s.Nodes.NodeRecord(r.Context(), name)
	if err != nil {
		return "", "", fmt.Errorf("read node record: %w", err)
	}
	if err := checkArmed(c, rec, node.BuildSpecOf(site, nd).ID(), now); err != nil {
		return "", "", err
	}
	kind := schema.InstallerKind("")
	if img := site.Image(nd.Image); img != nil {
		kind = img.Installer
	}
	if !slices.Contains(filesFor(kind), file) {
		return "", "", refuse(http.StatusNotFound, fmt.Sprintf("no file %q for installer %q", file, string(kind)), nil)
	}
	contentType = "text/plain; charset=utf-8"
	if strings.HasSuffix(file, ".json") {
		contentType = "application/json"
	}
	var rd *Rendered
	if file != FileAgent {
		if rd, err = s.render(site, nd, token); err != nil {
			return "", "", err
		}
	}
	// Each file once per arming, marked before it is sent: a second fetch
	// is someone else holding the token (or an installer retrying a
	// transfer that broke, which the operator then retries).
	var gen string
	if err := s.Nodes.UpdateNode(r.Context(), name, func(rec *node.Record) error {
		if err := checkArmed(c, rec, rec.Target, now); err != nil {
			return err
		}
		if slices.Contains(rec.Fetched, file) {
			return errFetchedTwice
		}
		rec.Fetched = append(rec.Fetched, file)
		if rec.InstallFetched.IsZero() {
			rec.InstallFetched = now
		}
		gen = rec.AgentGen
		return nil
	}); err != nil {
		var se *statusError
		if !errors.As(err, &se) {
			err = fmt.Errorf("record install file fetched: %w", err)
		}
		return "", "", err
	}
	if file == FileAgent {
		body, err = renderAgent(s.BaseURL, name, AgentToken(s.Key, name, gen))
		return body, contentType, err
	}
	return rd.Files[file], contentType, nil
}
