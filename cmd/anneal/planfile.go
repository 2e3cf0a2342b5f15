package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

// recorded is where the site was read from, as a saved plan records it
// (its "source"): the directory's absolute path, or REPO@COMMIT[:PATH]
// with a local repository's absolute path. apply PLAN.json reads the site
// from there when no --site or --repo is given.
func (f *siteFlags) recorded() string {
	if f.repo == "" {
		if abs, err := filepath.Abs(f.dir); err == nil {
			return abs
		}
		return f.dir
	}
	label := f.where()
	if m := repoSource.FindStringSubmatch(label); m != nil {
		if fi, err := os.Stat(m[1]); err == nil && fi.IsDir() {
			if abs, err := filepath.Abs(m[1]); err == nil {
				return abs + label[len(m[1]):]
			}
		}
	}
	return label
}

// repoSource is a recorded repository source: REPO@COMMIT[:PATH], COMMIT
// being 12 hex digits.
var repoSource = regexp.MustCompile(`^(.+)@([0-9a-f]{12})(?::(.*))?$`)

// siteFromPlan points the site flags at the site a saved plan records,
// unless --site or --repo was given. A plan that records no usable source
// is refused: the site it was made from must be named.
func siteFromPlan(c *cobra.Command, f *siteFlags, path string) error {
	if c.Flags().Changed("site") || c.Flags().Changed("repo") {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return failure(fmt.Errorf("read plan: %w", err))
	}
	var p struct {
		Source string `json:"source"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return failure(fmt.Errorf("plan %s is not a plan written by anneal plan -o json: %w", path, err))
	}
	src := p.Source
	switch m := repoSource.FindStringSubmatch(src); {
	case src == "":
		return failure(fmt.Errorf("plan %s does not record the site it was made from: give it with --site DIR or --repo URL", path))
	case m != nil:
		f.repo, f.rev, f.path = m[1], m[2], m[3]
	case filepath.IsAbs(src):
		if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
			return failure(fmt.Errorf("plan %s was made from the site in %s, which cannot be read here (%v): give the site with --site DIR or --repo URL", path, src, statErr(fi, err)))
		}
		f.dir = src
	default:
		return failure(fmt.Errorf("plan %s records its site as %q, a relative path (written by an older anneal): give the site with --site DIR or --repo URL", path, src))
	}
	fmt.Fprintf(c.ErrOrStderr(), "site: %s (recorded in %s)\n", strings.TrimSpace(src), path)
	return nil
}

func statErr(fi os.FileInfo, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is not a directory", fi.Name())
}
