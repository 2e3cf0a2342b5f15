package schema

import (
	"fmt"
	"slices"
	"strings"
)

// checker runs the cross-document checks over an assembled site. They are
// plain Go over maps, so their cost grows linearly with the site.
type checker struct {
	reporter
	site *Site
	// owners of addresses and MACs site wide, for uniqueness.
	addrs map[addrKey]owner
	macs  map[string]owner
	// rackRegion maps each declared rack to its region.
	rackRegion map[string]string
}

type owner struct {
	meta *Meta
	path fieldPath
}

func (o owner) String() string {
	return fmt.Sprintf("%s/%s at %s (%s:%d)", o.meta.Kind, o.meta.Name, o.path, o.meta.Source.File, o.meta.Source.Line)
}

func check(s *Site, grants SecretGrants) Diagnostics {
	c := &checker{site: s, addrs: make(map[addrKey]owner, 6*len(s.Nodes)), macs: make(map[string]owner, 5*len(s.Nodes)), rackRegion: map[string]string{}}
	c.siteConfig()
	c.networks()
	c.profiles()
	c.images()
	for _, n := range s.Nodes {
		c.node(n)
	}
	if s.DNS != nil {
		c.dns(s.DNS)
	} else if groupsUsed(s) && !hasRejectedDNS(s) {
		for _, n := range s.Nodes {
			if len(n.Groups) > 0 {
				c.errorf(&n.Meta, fieldPath{"groups"}, "unknown-group", "node is in DNS groups but the site has no DNS document declaring them")
			}
		}
	}
	c.secrets(grants)
	c.release()
	return c.diags
}

// missing reports whether a reference is unknown: not declared, and not a
// declared document that failed its schema check (already reported).
func (c *checker) missing(kind, name string, found bool) bool {
	return !found && !c.site.rejectedRef(kind, name)
}

func hasRejectedDNS(s *Site) bool {
	for r := range s.rejected {
		if r.kind == KindDNS {
			return true
		}
	}
	return false
}

func groupsUsed(s *Site) bool {
	return slices.ContainsFunc(s.Nodes, func(n *Node) bool { return len(n.Groups) > 0 })
}

// release drops the YAML trees kept for positions: the loaded site is a
// compact, immutable snapshot.
func (c *checker) release() {
	s := c.site
	s.rejected = nil
	if s.Config != nil {
		s.Config.doc = nil
	}
	if s.DNS != nil {
		s.DNS.doc = nil
	}
	for _, o := range s.Networks {
		o.doc = nil
	}
	for _, o := range s.HardwareProfiles {
		o.doc = nil
	}
	for _, o := range s.Images {
		o.doc = nil
	}
	for _, o := range s.PatchSets {
		o.doc = nil
	}
	for _, o := range s.Nodes {
		o.doc = nil
	}
}

func (c *checker) siteConfig() {
	cfg := c.site.Config
	m := &cfg.Meta
	regions := map[string]int{}
	racks := map[string]string{}
	for i, r := range cfg.Regions {
		if j, dup := regions[r.Name]; dup {
			c.errorf(m, fieldPath{"regions", i, "name"}, "duplicate-region", "region %q is declared twice (also regions[%d])", r.Name, j)
			continue
		}
		regions[r.Name] = i
		for k, rk := range r.Racks {
			if other, dup := racks[rk.Name]; dup {
				c.errorf(m, fieldPath{"regions", i, "racks", k, "name"}, "duplicate-rack", "rack %q is declared twice (also in region %q); rack names are unique site wide", rk.Name, other)
				continue
			}
			racks[rk.Name] = r.Name
			c.rackRegion[rk.Name] = r.Name
		}
	}
	if d := cfg.Defaults.Image; d != "" && c.missing(KindImage, d, c.site.Image(d) != nil) {
		c.errorf(m, fieldPath{"defaults", "image"}, "unknown-image", "image %q is not declared%s", d, suggest(d, names(c.site.Images)))
	}
	if d := cfg.Defaults.PatchSet; d != "" && c.missing(KindPatchSet, d, c.site.PatchSet(d) != nil) {
		c.errorf(m, fieldPath{"defaults", "patchSet"}, "unknown-patch-set", "patch set %q is not declared%s", d, suggest(d, names(c.site.PatchSets)))
	}
	for role := range cfg.Policies.MaxUnavailable.PerRole {
		if p := cfg.Policies.MaxUnavailable.PerRole[role]; p.Percent && p.Value == 0 || !p.Percent && p.Value == 0 {
			c.warnf(m, fieldPath{"policies", "maxUnavailable", "perRole", role}, "rollout-blocked", "maxUnavailable 0 for role %q: nodes with this role can never be rebuilt", role)
		}
	}
}

func (c *checker) regionOf(rack string) (string, bool) {
	r, ok := c.rackRegion[rack]
	return r, ok
}

func (c *checker) hasRegion(name string) bool {
	return slices.ContainsFunc(c.site.Config.Regions, func(r Region) bool { return r.Name == name })
}

func (c *checker) profiles() {
	for _, p := range c.site.HardwareProfiles {
		seen := map[string]bool{}
		for i, nic := range p.NICs {
			if seen[nic.Name] {
				c.errorf(&p.Meta, fieldPath{"nics", i, "name"}, "duplicate-nic", "NIC %q is declared twice", nic.Name)
			}
			seen[nic.Name] = true
		}
		disks := map[string]bool{}
		for i, d := range p.Disks {
			if disks[d.Name] {
				c.errorf(&p.Meta, fieldPath{"disks", i, "name"}, "duplicate-disk", "disk %q is declared twice", d.Name)
			}
			disks[d.Name] = true
		}
	}
}

// images checks that an image installer has its disk image and no other
// installer is given one (it would be ignored).
func (c *checker) images() {
	for _, img := range c.site.Images {
		switch {
		case img.Installer == InstallerImage && img.Disk == nil:
			c.errorf(&img.Meta, fieldPath{"disk"}, "missing-disk-image", "installer \"image\" writes a whole-disk image: give disk (url, sha256, and format when compressed)")
		case img.Installer != InstallerImage && img.Disk != nil:
			c.errorf(&img.Meta, fieldPath{"disk"}, "unused-disk-image", "disk is only written by installer \"image\"; installer %q would ignore it", string(img.Installer))
		}
		for i, a := range img.KernelArgs {
			key, _, _ := strings.Cut(a, "=")
			switch {
			case strings.HasPrefix(key, "anneal."):
				c.errorf(&img.Meta, fieldPath{"kernelArgs", i}, "reserved-kernel-arg", "kernel argument %q: anneal.* arguments are anneal's own (node, build, token, addresses): an image cannot set them", a)
			case img.Installer == InstallerImage && (key == "init" || key == "rdinit"):
				c.errorf(&img.Meta, fieldPath{"kernelArgs", i}, "reserved-kernel-arg", "kernel argument %q: installer \"image\" boots anneal's deploy environment as /init; another init would never write the disk", a)
			}
		}
	}
}

func names[T metaer](objs []T) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.meta().Name
	}
	return out
}

// suggest returns "; did you mean X?" for the closest known name, if close.
func suggest(got string, known []string) string {
	best, bestD := "", len(got)/2+2
	for _, k := range known {
		if d := editDistance(got, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		if len(known) > 0 && len(known) <= 8 {
			return " (declared: " + strings.Join(known, ", ") + ")"
		}
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
