// Package planview renders a plan as text, as `anneal plan`, `anneal
// apply`, `anneal status` and the dashboard show it.
package planview

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// Palette colours plan lines (ANSI escapes on a terminal); the zero value
// prints plain.
type Palette struct{ Add, Change, Del, Warn, Reset string }

// ChangesPerZone is how many changes of a zone are shown unless full.
const ChangesPerZone = 100

func rdata(s *dns.RRset) string {
	return fmt.Sprintf("%d %s", s.TTL, strings.Join(s.Data, ", "))
}

// ChangeLine renders one change as "+ name TYPE ttl data" (or old → new).
func ChangeLine(c dns.RRsetChange) (sign, line string) {
	switch c.Op {
	case dns.OpCreate:
		return "+", fmt.Sprintf("%s %s %s", c.New.Name, c.New.Type, rdata(c.New))
	case dns.OpDelete:
		return "-", fmt.Sprintf("%s %s %s", c.Old.Name, c.Old.Type, rdata(c.Old))
	default:
		return "~", fmt.Sprintf("%s %s %s → %s", c.New.Name, c.New.Type, rdata(c.Old), rdata(c.New))
	}
}

// WriteChangeLines prints a zone's changes as +/~/- lines, coloured on a
// terminal, at most ChangesPerZone unless full.
func WriteChangeLines(w io.Writer, changes []dns.RRsetChange, full bool, pal Palette) {
	for i, ch := range changes {
		if i == ChangesPerZone && !full {
			fmt.Fprintf(w, "    … and %d more (--full or -o json shows all)\n", len(changes)-i)
			return
		}
		sign, line := ChangeLine(ch)
		col := map[string]string{"+": pal.Add, "~": pal.Change, "-": pal.Del}[sign]
		fmt.Fprintf(w, "  %s%s %s%s\n", col, sign, line, pal.Reset)
	}
}

// Text renders a plan as `anneal plan` prints it: DNS changes by zone,
// rebuilds, decommissions, held nodes, guards and the summary line.
func Text(w io.Writer, p *reconcile.Plan, full bool, pal Palette) {
	d := p.DNS
	if d.Interrupted != nil {
		fmt.Fprintf(w, "%san apply started %s did not finish (%d zone(s) pending); this plan completes it%s\n\n",
			pal.Warn, d.Interrupted.Started.Format("2006-01-02 15:04:05Z"), len(d.Interrupted.Pending), pal.Reset)
	}
	for _, z := range d.Zones {
		if len(z.Changes)+len(z.Conflicts)+len(z.Adopt) == 0 {
			continue
		}
		c, u, del := z.Counts()
		fmt.Fprintf(w, "dns %s zone %s: %d to add, %d to change, %d to delete\n", z.Target, z.Zone, c, u, del)
		WriteChangeLines(w, z.Changes, full, pal)
		for _, k := range z.Adopt {
			fmt.Fprintf(w, "  = %s (already as declared; anneal takes ownership)\n", k)
		}
		for _, cf := range z.Conflicts {
			fmt.Fprintf(w, "  %s! %s: conflict, left alone: %s%s\n", pal.Warn, cf.Key, cf.Reason, pal.Reset)
		}
	}
	for _, f := range d.Failures {
		where := f.Target
		if f.Zone != "" {
			where += " zone " + f.Zone
		}
		fmt.Fprintf(w, "%serror: dns %s: %s%s\n", pal.Del, where, FailureDetail(f), pal.Reset)
	}
	for _, f := range d.Findings {
		fmt.Fprintf(w, "%swarning: dns %s: %s: %s%s\n", pal.Warn, f.Target, f.Kind, f.Detail, pal.Reset)
	}
	for _, m := range d.MassDelete {
		if m.Exceeded {
			fmt.Fprintf(w, "%swarning: dns %s: %d of %d owned RRsets deleted (%d%%) exceeds dnsMassDeletePercent %d%%: apply needs --allow-mass-delete%s\n",
				pal.Warn, m.Target, m.Deletes, m.Owned, m.Percent, m.Limit, pal.Reset)
		}
	}
	rebuilds(w, p.Rebuilds, pal)
	for _, g := range p.Guards {
		how := "the daemon runs it once anneal approve names this plan"
		if g.Kind == reconcile.GuardDNSMassDelete {
			how += "; apply needs --allow-mass-delete"
		}
		fmt.Fprintf(w, "%sguarded (%s): %s: %s%s\n", pal.Warn, g.Kind, g.Reason, how, pal.Reset)
	}
	creates, updates, deletes, conflicts := p.Counts()
	if !p.HasChanges() && !p.HasFailures() {
		fleet := ""
		if rp := p.Rebuilds; rp != nil && len(rp.Held) > 0 {
			fleet = fmt.Sprintf("; %s held (above)", plural(len(rp.Held), "node"))
		} else if rp != nil {
			fleet = " and every node runs its build"
		}
		fmt.Fprintf(w, "No changes: the live DNS matches site %q on %s%s.\n", p.Site, plural(len(d.MassDelete), "target"), fleet)
		return
	}
	fmt.Fprintf(w, "Plan: %d to add, %d to change, %d to delete, %s, %s", creates, updates, deletes, plural(conflicts, "conflict"), plural(len(d.Failures), "failure"))
	if rp := p.Rebuilds; rp != nil {
		fmt.Fprintf(w, "; %s to rebuild, %d to decommission, %d held", plural(len(rp.Rebuilds), "node"), len(rp.Decommission), len(rp.Held))
	}
	fmt.Fprintln(w, ".")
	if p.Digest != "" {
		fmt.Fprintf(w, "Plan digest %s (%s).\n", p.Digest[:12], plural(len(p.Actions), "action"))
	}
}

// rebuilds prints the rebuild layer: each node, why, and the field
// diff of its build.
func rebuilds(w io.Writer, rp *rollout.RebuildPlan, pal Palette) {
	if rp == nil {
		return
	}
	for _, r := range rp.Rebuilds {
		tag := ""
		switch {
		case r.Canary:
			tag = " (canary)"
		case r.Resume:
			tag = " (installing: resumed)"
		}
		from := r.From
		if from == "" {
			from = "never built"
		}
		fmt.Fprintf(w, "%s~ rebuild %s%s%s [%s/%s]: %s → %s: %s\n", pal.Change, r.Node, tag, pal.Reset, r.Region, r.Rack, from, r.To, Reasons(r.Reasons))
		for _, c := range r.Changes {
			fmt.Fprintf(w, "    %s\n", c)
		}
		for _, d := range r.Drift {
			fmt.Fprintf(w, "    live: %s\n", d)
		}
	}
	for _, n := range rp.Decommission {
		why := "state: decommissioned"
		if slices.Contains(rp.Removed, n) {
			why = "left the site"
		}
		fmt.Fprintf(w, "%s- decommission %s%s (%s): leave groups, power off, remove netboot and DNS names\n", pal.Del, n, pal.Reset, why)
	}
	for _, h := range rp.Held {
		fmt.Fprintf(w, "%s! held %s%s: %s\n", pal.Warn, h.Node, pal.Reset, h.Reason)
	}
	for _, f := range rp.Firmware {
		fmt.Fprintf(w, "%swarning: firmware on %s: BIOS %q BMC %q, profile wants BIOS %q BMC %q%s\n", pal.Warn, f.Node, f.Found.BIOS, f.Found.BMC, f.Want.BIOS, f.Want.BMC, pal.Reset)
	}
}

// Reasons joins a rebuild's reasons with commas.
func Reasons(rs []node.RebuildReason) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = string(r)
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// FailureDetail is a target failure's error without the target and zone
// it repeats (dns.TargetError names them; the line already does).
func FailureDetail(f dns.TargetFailure) string {
	prefix := "dns target " + f.Target + ":"
	if f.Zone != "" {
		prefix += " zone " + f.Zone
	}
	if rest, ok := strings.CutPrefix(f.Error, prefix); ok {
		return strings.TrimSpace(rest)
	}
	return f.Error
}
