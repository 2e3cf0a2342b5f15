package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anneal-dev/anneal/providers/state/bolt"
)

func newBackupCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Copy a running anneal serve's state store, consistently, to a file",
		Long: `Backup asks a running anneal serve for a consistent copy of its state store
(GET /api/v1/state/backup: one read transaction, the daemon goes on
working), checks every page of the copy, and only then moves it to --out.
The copy is a state file: to restore, stop serve and put it in place of
--state. It holds install nonces: the API's token is required, and the
file is written readable by its owner only.`,
		Args: noArgs,
	}
	api := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the API's bearer token")
	out := c.Flags().String("out", "", "the backup file to write (required)")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if *out == "" {
			return usagef("--out is required")
		}
		token, err := resolveToken(*tokenRef)
		if err != nil {
			return failure(err)
		}
		n, info, err := backup(c.Context(), api, token, *out)
		if err != nil {
			return failure(err)
		}
		rev := ""
		if info.Status != nil {
			rev = info.Status.AppliedRevision
		}
		fmt.Fprintf(c.OutOrStdout(), "state backed up to %s: %d bytes, checked; applied revision %s; state format version %d\n",
			*out, n, cmp.Or(rev, "(none)"), info.FormatVersion)
		return nil
	}
	return c
}

// backup downloads the state into a temporary file beside out, checks it
// and renames it into place; it returns what the check found.
func backup(ctx context.Context, api *apiFlags, token, out string) (int64, *bolt.FileInfo, error) {
	client, err := api.client()
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(api.server, "/")+"/api/v1/state/backup", nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, fmt.Errorf("GET /api/v1/state/backup: cannot reach the daemon at %s: %w", api.server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, nil, newAPIError(http.MethodGet, "/api/v1/state/backup", resp.StatusCode, body)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".anneal-backup-*")
	if err != nil {
		return 0, nil, fmt.Errorf("temporary file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	n, err := io.Copy(tmp, resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != resp.ContentLength {
		err = fmt.Errorf("the server announced %d bytes", resp.ContentLength)
	}
	if err != nil {
		return n, nil, fmt.Errorf("download: after %d bytes, nothing written to %s: %w", n, out, err)
	}
	info, err := bolt.CheckFile(tmp.Name())
	if err != nil {
		return n, nil, fmt.Errorf("the copy is not whole, nothing written to %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return n, nil, fmt.Errorf("move into place: %w", err)
	}
	return n, info, nil
}
