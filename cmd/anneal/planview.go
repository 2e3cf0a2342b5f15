package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// palette colours plan lines on a terminal; the zero value prints plain.
type palette struct{ add, change, del, warn, reset string }

func colorFor(w io.Writer) palette {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return palette{}
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return palette{}
	}
	return palette{add: "\x1b[32m", change: "\x1b[33m", del: "\x1b[31m", warn: "\x1b[35m", reset: "\x1b[0m"}
}

const changesPerZone = 100

func rdata(s *dns.RRset) string {
	return fmt.Sprintf("%d %s", s.TTL, strings.Join(s.Data, ", "))
}

// changeLine renders one change as "+ name TYPE ttl data" (or old → new).
func changeLine(c dns.RRsetChange) (sign, line string) {
	switch c.Op {
	case dns.OpCreate:
		return "+", fmt.Sprintf("%s %s %s", c.New.Name, c.New.Type, rdata(c.New))
	case dns.OpDelete:
		return "-", fmt.Sprintf("%s %s %s", c.Old.Name, c.Old.Type, rdata(c.Old))
	default:
		return "~", fmt.Sprintf("%s %s %s → %s", c.New.Name, c.New.Type, rdata(c.Old), rdata(c.New))
	}
}

// writeChangeLines prints a zone's changes as +/~/- lines, coloured on a
// terminal, at most changesPerZone unless full.
func writeChangeLines(w io.Writer, changes []dns.RRsetChange, full bool, pal palette) {
	for i, ch := range changes {
		if i == changesPerZone && !full {
			fmt.Fprintf(w, "    … and %d more (--full or -o json shows all)\n", len(changes)-i)
			return
		}
		sign, line := changeLine(ch)
		col := map[string]string{"+": pal.add, "~": pal.change, "-": pal.del}[sign]
		fmt.Fprintf(w, "  %s%s %s%s\n", col, sign, line, pal.reset)
	}
}

// writeChangeDiff prints a zone's changes as the lines of a ```diff block
// (GitHub colours + and -, and ! as a change).
func writeChangeDiff(w io.Writer, changes []dns.RRsetChange, full bool) {
	for i, ch := range changes {
		if i == changesPerZone && !full {
			fmt.Fprintf(w, "# … and %d more\n", len(changes)-i)
			return
		}
		sign, line := changeLine(ch)
		if sign == "~" {
			sign = "!"
		}
		fmt.Fprintf(w, "%s %s\n", sign, line)
	}
}

func renderText(w io.Writer, p *reconcile.Plan, full bool, pal palette) {
	d := p.DNS
	if d.Interrupted != nil {
		fmt.Fprintf(w, "%san apply started %s did not finish (%d zone(s) pending); this plan completes it%s\n\n",
			pal.warn, d.Interrupted.Started.Format("2006-01-02 15:04:05Z"), len(d.Interrupted.Pending), pal.reset)
	}
	for _, z := range d.Zones {
		if len(z.Changes)+len(z.Conflicts)+len(z.Adopt) == 0 {
			continue
		}
		c, u, del := z.Counts()
		fmt.Fprintf(w, "dns %s zone %s: %d to add, %d to change, %d to delete\n", z.Target, z.Zone, c, u, del)
		writeChangeLines(w, z.Changes, full, pal)
		for _, k := range z.Adopt {
			fmt.Fprintf(w, "  = %s (already as declared; anneal takes ownership)\n", k)
		}
		for _, cf := range z.Conflicts {
			fmt.Fprintf(w, "  %s! %s: conflict, left alone: %s%s\n", pal.warn, cf.Key, cf.Reason, pal.reset)
		}
	}
	for _, f := range d.Failures {
		where := f.Target
		if f.Zone != "" {
			where += " zone " + f.Zone
		}
		fmt.Fprintf(w, "%serror: dns %s: %s%s\n", pal.del, where, failureDetail(f), pal.reset)
	}
	for _, f := range d.Findings {
		fmt.Fprintf(w, "%swarning: dns %s: %s: %s%s\n", pal.warn, f.Target, f.Kind, f.Detail, pal.reset)
	}
	for _, m := range d.MassDelete {
		if m.Exceeded {
			fmt.Fprintf(w, "%swarning: dns %s: %d of %d owned RRsets deleted (%d%%) exceeds dnsMassDeletePercent %d%%: apply needs --allow-mass-delete%s\n",
				pal.warn, m.Target, m.Deletes, m.Owned, m.Percent, m.Limit, pal.reset)
		}
	}
	renderRebuilds(w, p.Rebuilds, pal)
	for _, g := range p.Guards {
		how := "the daemon runs it once anneal approve names this plan"
		if g.Kind == reconcile.GuardDNSMassDelete {
			how += "; apply needs --allow-mass-delete"
		}
		fmt.Fprintf(w, "%sguarded (%s): %s: %s%s\n", pal.warn, g.Kind, g.Reason, how, pal.reset)
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

// renderRebuilds prints the rebuild layer: each node, why, and the field
// diff of its build.
func renderRebuilds(w io.Writer, rp *rollout.RebuildPlan, pal palette) {
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
		fmt.Fprintf(w, "%s~ rebuild %s%s%s [%s/%s]: %s → %s: %s\n", pal.change, r.Node, tag, pal.reset, r.Region, r.Rack, from, r.To, reasonsText(r.Reasons))
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
		fmt.Fprintf(w, "%s- decommission %s%s (%s): leave groups, power off, remove netboot and DNS names\n", pal.del, n, pal.reset, why)
	}
	for _, h := range rp.Held {
		fmt.Fprintf(w, "%s! held %s%s: %s\n", pal.warn, h.Node, pal.reset, h.Reason)
	}
	for _, f := range rp.Firmware {
		fmt.Fprintf(w, "%swarning: firmware on %s: BIOS %q BMC %q, profile wants BIOS %q BMC %q%s\n", pal.warn, f.Node, f.Found.BIOS, f.Found.BMC, f.Want.BIOS, f.Want.BMC, pal.reset)
	}
}

func renderMarkdown(w io.Writer, p *reconcile.Plan, full bool) {
	creates, updates, deletes, conflicts := p.Counts()
	d := p.DNS
	switch {
	case p.HasFailures():
		fmt.Fprintf(w, "### anneal plan for `%s`: failed to read %s\n\n", p.Site, plural(len(d.Failures), "target"))
	case !p.HasChanges():
		fmt.Fprintf(w, "### anneal plan for `%s`: no changes\n\nThe live DNS matches the site.\n", p.Site)
		return
	default:
		fmt.Fprintf(w, "### anneal plan for `%s`: %d to add, %d to change, %d to delete, %s\n\n", p.Site, creates, updates, deletes, plural(conflicts, "conflict"))
	}
	fmt.Fprintln(w, "| target | zone | add | change | delete | conflicts |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	for _, z := range d.Zones {
		c, u, del := z.Counts()
		if c+u+del+len(z.Conflicts) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | `%s` | %d | %d | %d | %d |\n", z.Target, z.Zone, c, u, del, len(z.Conflicts))
	}
	for _, z := range d.Zones {
		if len(z.Changes)+len(z.Conflicts) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n<details><summary>%s <code>%s</code></summary>\n\n```diff\n", z.Target, z.Zone)
		writeChangeDiff(w, z.Changes, full)
		for _, cf := range z.Conflicts {
			fmt.Fprintf(w, "# conflict, left alone: %s: %s\n", cf.Key, cf.Reason)
		}
		fmt.Fprintln(w, "```\n\n</details>")
	}
	if len(d.Failures)+len(d.Findings) > 0 {
		fmt.Fprintln(w)
	}
	for _, f := range d.Failures {
		fmt.Fprintf(w, "- **error** %s %s: %s\n", f.Target, f.Zone, failureDetail(f))
	}
	for _, f := range d.Findings {
		fmt.Fprintf(w, "- warning %s: %s: %s\n", f.Target, f.Kind, f.Detail)
	}
	for _, m := range d.MassDelete {
		if m.Exceeded {
			fmt.Fprintf(w, "- **mass delete**: %s would delete %d of %d owned RRsets (%d%% > %d%%)\n", m.Target, m.Deletes, m.Owned, m.Percent, m.Limit)
		}
	}
}

// progress shows an apply as it goes: one line rewritten in place on a
// terminal, a plain line per finished batch otherwise (logs, CI).
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	total  int
	zones  int
	done   map[string]int
	failed int
	start  time.Time
}

func newProgress(w io.Writer, plan *dns.Plan) *progress {
	p := &progress{w: w, tty: colorFor(w) != palette{}, done: map[string]int{}, start: time.Now()}
	for _, z := range plan.Zones {
		if n := len(z.Changes) + len(z.Adopt); n > 0 {
			p.total += n
			p.zones++
		}
	}
	return p
}

func (p *progress) update(r dns.ZoneResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[r.Target+"/"+r.Zone] = r.Created + r.Updated + r.Deleted + r.Adopted
	if r.Error != "" {
		p.failed++
	}
	sum := 0
	for _, n := range p.done {
		sum += n
	}
	if !p.tty {
		status := "ok"
		if r.Error != "" {
			status = "FAILED: " + r.Error
		}
		fmt.Fprintf(p.w, "applied dns %s zone %s: +%d ~%d -%d =%d: %s\n", r.Target, r.Zone, r.Created, r.Updated, r.Deleted, r.Adopted, status)
		return
	}
	fmt.Fprintf(p.w, "\r\x1b[Kapplying: %d/%d RRsets, %d/%d zones touched, %d failed, %s", sum, p.total, len(p.done), p.zones, p.failed, time.Since(p.start).Round(100*time.Millisecond))
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && len(p.done) > 0 {
		fmt.Fprintln(p.w)
	}
}

func renderResult(w io.Writer, res *dns.Result) {
	var c, u, d, failed int
	for _, z := range res.Zones {
		c += z.Created
		u += z.Updated
		d += z.Deleted
		if z.Error != "" {
			failed++
			fmt.Fprintf(w, "error: dns %s zone %s: %s\n", z.Target, z.Zone, z.Error)
		}
	}
	fmt.Fprintf(w, "Apply: %d added, %d changed, %d deleted; %s failed.\n", c, u, d, plural(failed, "zone"))
}

// failureDetail is a target failure's error without the target and zone
// it repeats (dns.TargetError names them; the line already does).
func failureDetail(f dns.TargetFailure) string {
	prefix := "dns target " + f.Target + ":"
	if f.Zone != "" {
		prefix += " zone " + f.Zone
	}
	if rest, ok := strings.CutPrefix(f.Error, prefix); ok {
		return strings.TrimSpace(rest)
	}
	return f.Error
}
