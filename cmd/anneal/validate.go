package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// validateReport is the documented JSON of `anneal validate -o json`
// (docs/validate-json.md).
type validateReport struct {
	Valid       bool                `json:"valid"`
	Site        string              `json:"site,omitempty"`
	Errors      int                 `json:"errors"`
	Warnings    int                 `json:"warnings"`
	Diagnostics []schema.Diagnostic `json:"diagnostics"`
	Summary     *siteSummary        `json:"summary,omitempty"`
}

func newValidateCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "validate",
		Short: "Check a site repo against the schema and the cross-document rules",
		Long: `Validate checks every YAML document of the site against the embedded CUE
schema, then the rules that span documents (unique names, MACs and addresses,
references, VLANs, DNS names and zones). It reports every finding with
file:line:column and the field, not only the first.

Secret references (secret:NAME) are checked for their form; with --secrets
FILE (or $ANNEAL_SECRETS), also against the operator's grants: every secret
granted, and only for the addresses it is sent to.

Exit codes: 0 valid, 1 invalid (or unreadable), 64 usage error.`,
		Args: noArgs,
	}
	site := addSiteFlags(c)
	out := addOutputFlag(c, "text", "json", "github")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := site.checkRepoFlags(); err != nil {
			return err
		}
		// A one-shot load of the whole site: its live heap is small (about
		// 3 KB a node once loaded) and its garbage large, so collecting
		// less often saves about 28% of the CPU at 100,000 nodes for 40% more
		// peak memory (bench/README.md). GOGC, when set, wins.
		if os.Getenv("GOGC") == "" {
			defer debug.SetGCPercent(debug.SetGCPercent(validateGCPercent))
		}
		s, diags, err := site.load(c.Context())
		if err != nil && c.Context().Err() != nil {
			// SIGINT or SIGTERM (main's context): stop, saying so.
			return failure(fmt.Errorf("validate interrupted before the site was checked: %w", err))
		}
		var inv *schema.InvalidError
		if err != nil && !errors.As(err, &inv) {
			if out.value != "json" {
				return failure(err)
			}
			diags = schema.Diagnostics{{Severity: schema.SeverityError, Code: "unreadable", Message: err.Error()}}
		}
		rep := validateReport{Valid: err == nil, Diagnostics: diags}
		if rep.Diagnostics == nil {
			rep.Diagnostics = schema.Diagnostics{}
		}
		for _, d := range diags {
			if d.Severity == schema.SeverityError {
				rep.Errors++
			} else {
				rep.Warnings++
			}
		}
		if s != nil {
			rep.Site = s.Config.Name
			rep.Summary = summarize(s)
		}
		w := c.OutOrStdout()
		switch out.value {
		case "json":
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return failure(err)
			}
		case "github":
			writeGitHub(w, site, diags)
		default:
			writeText(w, site, rep)
		}
		if !rep.Valid {
			return &silentError{code: exitError}
		}
		return nil
	}
	return c
}

// validateGCPercent is validate's GOGC (the runtime's default is 100).
const validateGCPercent = 300

func writeText(w io.Writer, site *siteFlags, rep validateReport) {
	for _, d := range rep.Diagnostics {
		d.File = site.display(d.File)
		fmt.Fprintln(w, d.String())
	}
	if !rep.Valid {
		fmt.Fprintf(w, "%s: invalid: %d error(s), %d warning(s); nothing can be applied from it\n", site.where(), rep.Errors, rep.Warnings)
		return
	}
	fmt.Fprintf(w, "%s: site %q is valid (%s)\n", site.where(), rep.Site, rep.Summary.oneLine())
}

// writeGitHub prints workflow commands, so findings show on the PR diff.
func writeGitHub(w io.Writer, site *siteFlags, diags schema.Diagnostics) {
	esc := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C")
	msgEsc := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
	for _, d := range diags {
		level := "error"
		if d.Severity == schema.SeverityWarning {
			level = "warning"
		}
		msg := d.Message
		if d.Path != "" {
			msg = d.Path + ": " + msg
		}
		if d.Object != "" {
			msg = d.Object + ": " + msg
		}
		fmt.Fprintf(w, "::%s file=%s,line=%d,col=%d,title=%s::%s\n", level, esc.Replace(site.display(d.File)), d.Line, d.Column, esc.Replace("anneal "+d.Code), msgEsc.Replace(msg))
	}
}
