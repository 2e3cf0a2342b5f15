package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/internal/planview"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
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

const changesPerZone = planview.ChangesPerZone

// view is the palette as package planview takes it.
func (p palette) view() planview.Palette {
	return planview.Palette{Add: p.add, Change: p.change, Del: p.del, Warn: p.warn, Reset: p.reset}
}

// changeLine renders one change as "+ name TYPE ttl data" (or old → new).
func changeLine(c dns.RRsetChange) (sign, line string) { return planview.ChangeLine(c) }

// writeChangeLines prints a zone's changes as +/~/- lines, coloured on a
// terminal, at most changesPerZone unless full.
func writeChangeLines(w io.Writer, changes []dns.RRsetChange, full bool, pal palette) {
	planview.WriteChangeLines(w, changes, full, pal.view())
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

// renderText prints a plan as anneal plan shows it (package planview).
func renderText(w io.Writer, p *reconcile.Plan, full bool, pal palette) {
	planview.Text(w, p, full, pal.view())
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
		fmt.Fprintf(w, "- **error** %s %s: %s\n", f.Target, f.Zone, planview.FailureDetail(f))
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
