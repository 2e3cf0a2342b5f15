// Package agent is what `anneal agent` runs on an installed node: it
// collects the machine's facts (providers/facts) and posts them to the
// anneal netboot server, periodically with the node's agent token, or
// once as the install callback with the install's single-use token.
// cmd/anneal fills Options from its flags.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/providers/facts"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// Config is /etc/anneal/agent.json, written by the install.
type Config struct {
	URL   string `json:"url"`
	Node  string `json:"node"`
	Token string `json:"token"`
}

// ReadConfig reads agent.json; url and node are required.
func ReadConfig(path string) (Config, error) {
	data, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return Config{}, fmt.Errorf("agent config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("agent config %s: %w", path, err)
	}
	if cfg.URL == "" || cfg.Node == "" {
		return Config{}, fmt.Errorf("agent config %s: url and node are required", path)
	}
	return cfg, nil
}

// ReadInstallToken reads the install token from path, warning when the
// file is readable by others than its owner. The token is never logged
// nor put in an error.
func ReadInstallToken(path string, log *slog.Logger) (string, error) {
	path = filepath.Clean(path)
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("install token: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 && log != nil {
		log.Warn("install token file is readable by others than its owner", "path", path, "mode", st.Mode().Perm().String())
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("install token: read %s: %w", path, err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("install token: %s is empty", path)
	}
	return token, nil
}

// Options are an agent's settings.
type Options struct {
	// ConfigPath is agent.json, read again before every report.
	ConfigPath string
	// BuildIDFile holds the installed build id (empty or missing: none
	// reported).
	BuildIDFile string
	// Root is the file system root the facts are read from.
	Root string
	// Interval is Run's report interval (positive).
	Interval time.Duration
	// Log gets Run's failed reports and ignored config changes (nil: discarded).
	Log *slog.Logger
	// Client posts the reports (nil: http.DefaultClient).
	Client *http.Client
	// Collect reads the facts (nil: facts.Collect).
	Collect func(ctx context.Context, root string) (node.Facts, error)
}

// Agent reports one machine's facts.
type Agent struct {
	opts Options
	cfg  Config // the last good agent.json
}

// New reads the agent's config: an agent does not start without one.
func New(opts Options) (*Agent, error) {
	cfg, err := ReadConfig(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.Collect == nil {
		opts.Collect = facts.Collect
	}
	return &Agent{opts: opts, cfg: cfg}, nil
}

// Config is the agent.json the last report used (or New read).
func (a *Agent) Config() Config { return a.cfg }

// Report posts the facts once with the agent token
// (POST URL/api/v1/nodes/NODE/facts).
func (a *Agent) Report(ctx context.Context) error {
	return a.post(ctx, "")
}

// Installed posts the install callback once with the install's
// single-use token (POST URL/api/v1/nodes/NODE/installed).
func (a *Agent) Installed(ctx context.Context, installToken string) error {
	return a.post(ctx, installToken)
}

// Run reports now and then every Interval until ctx ends; a failed report
// is logged and the next one tried at the next tick. It returns nil once
// ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.opts.Interval <= 0 {
		return fmt.Errorf("agent interval must be positive, got %s", a.opts.Interval)
	}
	tick := time.NewTicker(a.opts.Interval)
	defer tick.Stop()
	for {
		if err := a.Report(ctx); err != nil {
			var se *StatusError
			if errors.As(err, &se) && se.Code == http.StatusForbidden {
				a.opts.Log.Warn("report refused: this agent's token was revoked or replaced by a newer install of the node; a new one comes with the node's next install",
					"node", a.cfg.Node, "err", err)
			} else {
				a.opts.Log.Warn("report", "node", a.cfg.Node, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// post sends the facts: as the install callback with installToken, else
// as a report with the agent token.
func (a *Agent) post(ctx context.Context, installToken string) error {
	// agent.json is read again for every report: the token in it is
	// rotated by every install and can be revoked, and a new file takes
	// effect without a restart.
	if c, err := ReadConfig(a.opts.ConfigPath); err == nil {
		a.cfg = c
	} else {
		a.opts.Log.Warn("agent config: keeping the last good one", "err", err)
	}
	f, err := a.opts.Collect(ctx, a.opts.Root)
	if err != nil {
		return err
	}
	build := ""
	if b, err := os.ReadFile(filepath.Clean(a.opts.BuildIDFile)); err == nil {
		build = strings.TrimSpace(string(b))
	}
	cfg := a.cfg
	if installToken != "" {
		return a.send(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/installed", "",
			map[string]any{"token": installToken, "buildId": build, "facts": f})
	}
	return a.send(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/facts", cfg.Token,
		map[string]any{"buildId": build, "facts": f})
}

// StatusError is a server's answer other than 2xx.
type StatusError struct {
	URL    string
	Status string // "403 Forbidden"
	Code   int
	Msg    string // the start of the body
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("post %s: %s: %s", e.URL, e.Status, e.Msg)
}

// Permanent reports whether asking again cannot help: a 4xx other than
// 408 (timeout) and 429 (too many requests).
func (e *StatusError) Permanent() bool {
	return e.Code/100 == 4 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// send posts body as JSON, within 30 s.
func (a *Agent) send(ctx context.Context, url, bearer string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := a.opts.Client.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return &StatusError{URL: url, Status: resp.Status, Code: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	return nil
}
