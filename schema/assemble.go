package schema

import (
	"cmp"
	"fmt"
	"slices"
)

type metaer interface{ meta() *Meta }

// reporter collects diagnostics that point into documents.
type reporter struct{ diags Diagnostics }

func (r *reporter) add(sev Severity, m *Meta, p fieldPath, code, format string, args ...any) {
	d := Diagnostic{Severity: sev, Code: code, Path: p.String(), Message: fmt.Sprintf(format, args...)}
	if m != nil {
		d.Object = m.Kind + "/" + m.Name
		d.File, d.Line, d.Column = m.Source.File, m.Source.Line, m.Source.Column
		if m.doc != nil {
			n := m.doc.pos.resolve(m.doc.rootNode(), p, false)
			d.Line, d.Column = n.Line, n.Column
		}
	}
	r.diags = append(r.diags, d)
}

func (r *reporter) errorf(m *Meta, p fieldPath, code, format string, args ...any) {
	r.add(SeverityError, m, p, code, format, args...)
}

func (r *reporter) warnf(m *Meta, p fieldPath, code, format string, args ...any) {
	r.add(SeverityWarning, m, p, code, format, args...)
}

// where renders a document's position for "also declared at" messages.
func where(m *Meta) string {
	return fmt.Sprintf("%s/%s (%s:%d)", m.Kind, m.Name, m.Source.File, m.Source.Line)
}

// assemble sorts documents into the site, reporting duplicate names and
// missing or repeated singletons.
func assemble(docs []parsed, rej []rejected, unparsed bool) (*Site, Diagnostics) {
	r := &reporter{}
	s := &Site{rejected: map[rejected]bool{}}
	for _, x := range rej {
		s.rejected[x] = true
	}
	var configs []*SiteConfig
	var dnss []*DNS
	for _, p := range docs {
		switch o := p.obj.(type) {
		case *SiteConfig:
			configs = append(configs, o)
		case *Network:
			s.Networks = append(s.Networks, o)
		case *HardwareProfile:
			s.HardwareProfiles = append(s.HardwareProfiles, o)
		case *Image:
			s.Images = append(s.Images, o)
		case *PatchSet:
			s.PatchSets = append(s.PatchSets, o)
		case *Node:
			s.Nodes = append(s.Nodes, o)
		case *DNS:
			dnss = append(dnss, o)
		}
	}
	s.networks, s.Networks = byName(r, s.Networks)
	s.profiles, s.HardwareProfiles = byName(r, s.HardwareProfiles)
	s.images, s.Images = byName(r, s.Images)
	s.patchSets, s.PatchSets = byName(r, s.PatchSets)
	s.nodes, s.Nodes = byName(r, s.Nodes)
	switch len(configs) {
	case 0:
		if unparsed || hasRejectedKind(rej, KindSite) {
			break // its own errors are reported
		}
		r.errorf(nil, nil, "missing-site", "no Site document: a site needs exactly one document of kind Site (name, domain, regions)")
	default:
		s.Config = configs[0]
		for _, c := range configs[1:] {
			r.errorf(&c.Meta, nil, "duplicate-site", "a second Site document; the first is %s", where(&configs[0].Meta))
		}
	}
	if len(dnss) > 0 {
		s.DNS = dnss[0]
		for _, d := range dnss[1:] {
			r.errorf(&d.Meta, nil, "duplicate-dns", "a second DNS document; the first is %s", where(&dnss[0].Meta))
		}
	}
	return s, r.diags
}

// byName indexes objects by name, reporting duplicates, and returns them
// sorted by name (the first declaration wins).
func byName[T metaer](r *reporter, objs []T) (map[string]T, []T) {
	idx := make(map[string]T, len(objs))
	kept := objs[:0]
	for _, o := range objs {
		m := o.meta()
		if prev, dup := idx[m.Name]; dup {
			r.errorf(m, fieldPath{"name"}, "duplicate-name", "%s %q is declared twice; the other is %s", m.Kind, m.Name, where(prev.meta()))
			continue
		}
		idx[m.Name] = o
		kept = append(kept, o)
	}
	slices.SortFunc(kept, func(a, b T) int { return cmp.Compare(a.meta().Name, b.meta().Name) })
	return idx, kept
}

// Network returns the named network, or nil.
func (s *Site) Network(name string) *Network { return s.networks[name] }

// HardwareProfile returns the named profile, or nil.
func (s *Site) HardwareProfile(name string) *HardwareProfile { return s.profiles[name] }

// Image returns the named image, or nil.
func (s *Site) Image(name string) *Image { return s.images[name] }

// PatchSet returns the named patch set, or nil.
func (s *Site) PatchSet(name string) *PatchSet { return s.patchSets[name] }

// Node returns the named node, or nil.
func (s *Site) Node(name string) *Node { return s.nodes[name] }

func hasRejectedKind(rej []rejected, kind string) bool {
	for _, x := range rej {
		if x.kind == kind {
			return true
		}
	}
	return false
}

// rejectedRef reports whether a reference names a document that exists but
// failed its own checks: the reference is then not reported as unknown.
func (s *Site) rejectedRef(kind, name string) bool { return s.rejected[rejected{kind, name}] }
