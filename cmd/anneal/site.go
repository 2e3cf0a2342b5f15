package main

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// siteFlags select where a site is read from.
type siteFlags struct {
	dir string
}

func addSiteFlags(c *cobra.Command) *siteFlags {
	f := &siteFlags{}
	c.Flags().StringVar(&f.dir, "site", ".", "directory holding the site's YAML files")
	return f
}

// load reads and checks the site. Diagnostics come back for an invalid site
// (err is then a *schema.InvalidError); err alone means it could not be read.
func (f *siteFlags) load(ctx context.Context) (*schema.Site, schema.Diagnostics, error) {
	site, diags, err := schema.LoadDir(ctx, f.dir, schema.LoadOptions{})
	return site, diags, err
}

// display turns a site-relative file into a path the user can open.
func (f *siteFlags) display(file string) string {
	if file == "" {
		return f.dir
	}
	return filepath.Join(f.dir, filepath.FromSlash(file))
}

// loadValid loads a site that must be valid, for commands other than validate.
func (f *siteFlags) loadValid(ctx context.Context) (*schema.Site, error) {
	site, _, err := f.load(ctx)
	var inv *schema.InvalidError
	if errors.As(err, &inv) {
		return nil, failure(errors.New(f.relocate(inv)))
	}
	if err != nil {
		return nil, failure(err)
	}
	return site, nil
}

func (f *siteFlags) relocate(inv *schema.InvalidError) string {
	ds := make(schema.Diagnostics, len(inv.Diagnostics))
	for i, d := range inv.Diagnostics {
		d.File = f.display(d.File)
		ds[i] = d
	}
	return (&schema.InvalidError{Diagnostics: ds}).Error() + " (run anneal validate for all of them)"
}
