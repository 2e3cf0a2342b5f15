package main

import (
	"bytes"
	"context"
	"encoding/json"
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
install is seen. With --install-token it posts the install callback once
(what the installer runs at the end of a rebuild).`,
		Args: noArgs,
	}
	config := c.Flags().String("config", "/etc/anneal/agent.json", "the agent's config, written by the install")
	buildFile := c.Flags().String("build-id-file", "/etc/anneal/build-id", "the installed build id, written by the install")
	root := c.Flags().String("root", "/", "the filesystem root to read facts from")
	interval := c.Flags().Duration("interval", 5*time.Minute, "report interval")
	once := c.Flags().Bool("once", false, "report once and exit")
	installToken := c.Flags().String("install-token", "", "post the install callback with this single-use token, then exit")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		log := slog.New(slog.NewTextHandler(c.ErrOrStderr(), nil))
		data, err := os.ReadFile(filepath.Clean(*config))
		if err != nil {
			return failure(fmt.Errorf("agent config: %w", err))
		}
		var cfg agentConfig
		if err := json.Unmarshal(data, &cfg); err != nil {
			return failure(fmt.Errorf("agent config %s: %w", *config, err))
		}
		if cfg.URL == "" || cfg.Node == "" {
			return failure(fmt.Errorf("agent config %s: url and node are required", *config))
		}
		report := func() error {
			f, err := facts.Collect(ctx, *root)
			if err != nil {
				return err
			}
			build := ""
			if b, err := os.ReadFile(filepath.Clean(*buildFile)); err == nil {
				build = strings.TrimSpace(string(b))
			}
			if *installToken != "" {
				return agentPost(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/installed", "",
					map[string]any{"token": *installToken, "buildId": build, "facts": f})
			}
			return agentPost(ctx, cfg.URL+"/api/v1/nodes/"+cfg.Node+"/facts", cfg.Token,
				map[string]any{"buildId": build, "facts": f})
		}
		if *installToken != "" || *once {
			if err := report(); err != nil {
				return failure(err)
			}
			return nil
		}
		tick := time.NewTicker(*interval)
		defer tick.Stop()
		for {
			if err := report(); err != nil {
				log.Warn("report", "node", cfg.Node, "err", err)
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
		return fmt.Errorf("post %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
