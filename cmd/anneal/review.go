package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/anneal-dev/anneal/internal/planview"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
)

func reviewCounts(r *reconcile.Review) (rebuilds, other, dnsChanges int) {
	for _, n := range r.Nodes {
		if n.Rebuild {
			rebuilds++
		} else {
			other++
		}
	}
	for _, z := range r.DNS {
		dnsChanges += len(z.Changes)
	}
	return
}

func reasonsText(rs []node.RebuildReason) string { return planview.Reasons(rs) }

func renderReviewText(w io.Writer, r *reconcile.Review, full bool, pal palette) {
	fmt.Fprintf(w, "Review of site %q: %s → %s\n\n", r.Site, r.Base, r.Head)
	for _, n := range r.Nodes {
		head := fmt.Sprintf("node %s (%s/%s)", n.Node, n.Region, n.Rack)
		switch {
		case n.Change == reconcile.NodeAdded:
			fmt.Fprintf(w, "%s+ %s: new, first build %s%s\n", pal.add, head, n.HeadBuild, pal.reset)
		case n.Change == reconcile.NodeRemoved || n.Change == reconcile.NodeDecommissioned:
			fmt.Fprintf(w, "%s- %s: %s (leave groups, power off, remove netboot and DNS)%s\n", pal.del, head, n.Change, pal.reset)
		case n.Rebuild:
			fmt.Fprintf(w, "%s~ %s: REBUILD (%s), build %s → %s%s\n", pal.change, head, reasonsText(n.Reasons), n.BaseBuild, n.HeadBuild, pal.reset)
		default:
			fmt.Fprintf(w, "  %s: changed, no rebuild\n", head)
		}
		for _, f := range n.BuildFields {
			fmt.Fprintf(w, "      %s\n", f)
		}
		for _, f := range n.OtherFields {
			fmt.Fprintf(w, "      %s\n", f)
		}
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintln(w)
	}
	for _, z := range r.DNS {
		c, u, d := z.Counts()
		fmt.Fprintf(w, "dns zone %s: %d to add, %d to change, %d to delete\n", z.Zone, c, u, d)
		writeChangeLines(w, z.Changes, full, pal)
	}
	if len(r.Policies) > 0 {
		fmt.Fprintln(w)
	}
	for _, p := range r.Policies {
		mark := "policy"
		if p.Blocking {
			mark = pal.warn + "BLOCKING policy"
		}
		fmt.Fprintf(w, "%s %s, %s: %s%s\n", mark, p.Policy, p.Scope, p.Detail, pal.reset)
	}
	rebuilds, other, dnsChanges := reviewCounts(r)
	if !r.HasChanges() {
		fmt.Fprintln(w, "No changes to the desired state.")
		return
	}
	fmt.Fprintf(w, "\nReview: %s, %d other node change(s), %d DNS change(s).\n", plural(rebuilds, "rebuild"), other, dnsChanges)
}

func renderReviewMarkdown(w io.Writer, r *reconcile.Review, full bool) {
	rebuilds, other, dnsChanges := reviewCounts(r)
	if !r.HasChanges() {
		fmt.Fprintf(w, "### anneal review of `%s`: no changes\n\n`%s` → `%s` changes nothing in the desired state.\n", r.Site, r.Base, r.Head)
		return
	}
	fmt.Fprintf(w, "### anneal review of `%s`: %s, %d other node change(s), %d DNS change(s)\n\n", r.Site, plural(rebuilds, "rebuild"), other, dnsChanges)
	fmt.Fprintf(w, "`%s` → `%s`\n\n", r.Base, r.Head)
	for _, p := range r.Policies {
		if p.Blocking {
			fmt.Fprintf(w, "> **Blocking: %s** (%s): %s\n\n", p.Policy, p.Scope, p.Detail)
		}
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintln(w, "| node | rack | change | why |")
		fmt.Fprintln(w, "|---|---|---|---|")
		for _, n := range r.Nodes {
			change := string(n.Change)
			if n.Rebuild {
				change = "**rebuild**"
			}
			var why []string
			for _, f := range append(n.BuildFields, n.OtherFields...) {
				why = append(why, "`"+strings.ReplaceAll(f.String(), "|", `\|`)+"`")
			}
			if n.Change == reconcile.NodeAdded {
				why = []string{"new node"}
			}
			if len(why) > 6 && !full {
				why = append(why[:6], fmt.Sprintf("and %d more", len(why)-6))
			}
			fmt.Fprintf(w, "| %s | %s/%s | %s | %s |\n", n.Node, n.Region, n.Rack, change, strings.Join(why, "<br>"))
		}
		fmt.Fprintln(w)
	}
	for _, z := range r.DNS {
		c, u, d := z.Counts()
		fmt.Fprintf(w, "<details><summary>DNS <code>%s</code>: +%d ~%d -%d</summary>\n\n```diff\n", z.Zone, c, u, d)
		writeChangeDiff(w, z.Changes, full)
		fmt.Fprintln(w, "```\n\n</details>")
	}
	var notes []string
	for _, p := range r.Policies {
		if !p.Blocking {
			notes = append(notes, fmt.Sprintf("- %s (%s): %s", p.Policy, p.Scope, p.Detail))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nRollout:\n%s\n", strings.Join(notes, "\n"))
	}
}
