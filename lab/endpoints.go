package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// EndpointsFile is the file in a lab's directory that says, while the lab
// runs, how to reach it: `anneal lab` writes it, `anneal serve --lab`, the
// demo and the benchmarks read it.
const EndpointsFile = "lab.json"

// Endpoints is what EndpointsFile holds.
type Endpoints struct {
	// Redfish is the loopback address of the lab's virtual BMCs; every
	// BMC address of the site is reached through it (RedirectClient).
	Redfish string `json:"redfish"`
	// Control is the lab's control API (faults, virtual node states).
	Control string `json:"control"`
	PID     int    `json:"pid"`
}

// WriteEndpoints writes dir's EndpointsFile whole (through a temporary file
// renamed into place, so a reader never sees half of it) and returns the
// function that removes it when the lab stops.
func WriteEndpoints(dir string, e Endpoints) (remove func(), err error) {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, EndpointsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("lab endpoints: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("lab endpoints: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}

// ReadEndpoints reads dir's EndpointsFile; an error wrapping
// fs.ErrNotExist means no lab runs there.
func ReadEndpoints(dir string) (*Endpoints, error) {
	data, err := os.ReadFile(filepath.Join(dir, EndpointsFile))
	if err != nil {
		return nil, fmt.Errorf("lab: %w (is `anneal lab --dir %s` running?)", err, dir)
	}
	var e Endpoints
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("lab %s: %w", dir, err)
	}
	return &e, nil
}

// WaitEndpoints waits up to timeout for a lab starting in dir to write its
// EndpointsFile, and returns what it holds.
func WaitEndpoints(ctx context.Context, dir string, timeout time.Duration) (*Endpoints, error) {
	deadline := time.Now().Add(timeout)
	for {
		e, err := ReadEndpoints(dir)
		if err == nil {
			return e, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not appear within %s", filepath.Join(dir, EndpointsFile), timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
