package main

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
	"github.com/spf13/cobra"
)

// agentConfig is /etc/anneal/agent.json, written by the install.
type agentConfig struct {
	URL   string `json:"url"`
	Node  string `json:"node"`
	Token string `json:"token"`
}

func newAgentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Report this machine's facts to anneal (runs on installed nodes)",
		Long: `Agent reads this machine's facts (os-release, kernel, interfaces with MACs,
bonds, VLANs, bridges, addresses, default routes, resolvers) and posts them to
the anneal server named in --config, so that drift made by hand after an
install is seen. Its first report after an install is what verifies the
install: the callback alone does not. The token in --config is this install's:
every reinstall replaces it and anneal can revoke it (reports are then refused,
403); the file is read again before every report.

With --install-token-file it posts the install callback once instead: what
anneal-installed.service runs on the first boot of a rebuilt node, with the
single-use token the install wrote to /etc/anneal/install-token (mode 0600).
--install-token takes the token itself, which then shows in ps; prefer the
file. When the server refuses the callback for good (token used, expired or
superseded, node not armed, another build installed) the agent exits 3, so
that the unit stops retrying (RestartPreventExitStatus=3); other failures
exit 1.`,
		Args: noArgs,
	}
	config := c.Flags().String("config", "/etc/anneal/agent.json", "the agent's config, written by the install")
	buildFile := c.Flags().String("build-id-file", "/etc/anneal/build-id", "the installed build id, written by the install")
	root := c.Flags().String("root", "/", "the filesystem root to read facts from")
	interval := c.Flags().Duration("interval", 5*time.Minute, "report interval")
	once := c.Flags().Bool("once", false, "report once and exit")
	installToken := c.Flags().String("install-token", "", "post the install callback with this single-use token, then exit (visible in ps: prefer --install-token-file)")
	installTokenFile := c.Flags().String("install-token-file", "", "post the install callback with the single-use token read from this file, then exit")
	c.MarkFlagsMutuallyExclusive("install-token", "install-token-file")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		log := slog.New(slog.NewTextHandler(c.ErrOrStderr(), nil))
		if *interval <= 0 {
			return fmt.Errorf("--interval must be positive, got %s", *interval)
		}
		token := *installToken
		if *installTokenFile != "" {
			var err error
			if token, err = readInstallToken(*installTokenFile, log); err != nil {
				return failure(err)
			}
		}
		cfg, err := readAgentConfig(*config)
		if err != nil {
			return failure(err)
		}
		report := func() error {
			// agent.json is read again for every report: the token in it
			// is rotated by every install and can be revoked, and a new
			// file takes effect without a restart.
			if c, err := readAgentConfig(*config); err == nil {
				cfg = c
			} else {
				log.Warn("agent config: keeping the last good one", "err", err)
			}
			f, err := facts.Collect(ctx, *root)
			if err != nil {
				return err
			}
			build := ""
			if b, err := os.ReadFile(filepath.Clean(*buildFile)); err == nil {
				build = strings.TrimSpace(string(b))
			}
			if token != "" {
				return agentPost(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/installed", "",
					map[string]any{"token": token, "buildId": build, "facts": f})
			}
			return agentPost(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/facts", cfg.Token,
				map[string]any{"buildId": build, "facts": f})
		}
		if token != "" || *once {
			err := report()
			var se *statusError
			if token != "" && errors.As(err, &se) && se.permanent() {
				return &codedError{code: exitAgentRefused, err: err}
			}
			if err != nil {
				return failure(err)
			}
			return nil
		}
		tick := time.NewTicker(*interval)
		defer tick.Stop()
		for {
			if err := report(); err != nil {
				var se *statusError
				if errors.As(err, &se) && se.code == http.StatusForbidden {
					log.Warn("report refused: this agent's token was revoked or replaced by a newer install of the node; a new one comes with the node's next install",
						"node", cfg.Node, "err", err)
				} else {
					log.Warn("report", "node", cfg.Node, "err", err)
				}
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}
	return c
}

// readAgentConfig reads agent.json.
func readAgentConfig(path string) (agentConfig, error) {
	data, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		return agentConfig{}, fmt.Errorf("agent config: %w", err)
	}
	var cfg agentConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return agentConfig{}, fmt.Errorf("agent config %s: %w", path, err)
	}
	if cfg.URL == "" || cfg.Node == "" {
		return agentConfig{}, fmt.Errorf("agent config %s: url and node are required", path)
	}
	return cfg, nil
}

// exitAgentRefused is the exit status of a refused install callback;
// anneal-installed.service (pxe/boot) names it in RestartPreventExitStatus.
const exitAgentRefused = 3

// readInstallToken reads the install token from path. The token is never
// logged nor put in an error.
func readInstallToken(path string, log *slog.Logger) (string, error) {
	path = filepath.Clean(path)
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("install token: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
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

// statusError is a server's answer other than 2xx.
type statusError struct {
	url    string
	status string
	code   int
	msg    string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("post %s: %s: %s", e.url, e.status, e.msg)
}

// permanent reports whether asking again cannot help: a 4xx other than
// 408 (timeout) and 429 (too many requests).
func (e *statusError) permanent() bool {
	return e.code/100 == 4 && e.code != http.StatusRequestTimeout && e.code != http.StatusTooManyRequests
}

func agentPost(ctx context.Context, url, bearer string, body any) error {
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return &statusError{url: url, status: resp.Status, code: resp.StatusCode, msg: strings.TrimSpace(string(msg))}
	}
	return nil
}
