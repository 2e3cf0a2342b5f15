package schema

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fieldPath addresses a value inside a document: string keys and int indexes.
type fieldPath []any

// String renders interfaces[2].mac.
func (p fieldPath) String() string {
	var b strings.Builder
	for _, e := range p {
		switch v := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, v)
		}
	}
	return b.String()
}

// with returns a copy of p extended by more elements.
func (p fieldPath) with(more ...any) fieldPath {
	out := make(fieldPath, 0, len(p)+len(more))
	return append(append(out, p...), more...)
}

// positions resolves paths in one document, indexing each wide mapping the
// first time a path crosses it: reporting every key of a mapping of 10,000
// keys would otherwise scan the mapping once per key. A nil *positions
// indexes nothing. Not safe for concurrent use.
type positions struct {
	index map[*yaml.Node]map[string][2]*yaml.Node
}

// resolve finds the node at path below root. With key set and the last
// element a mapping key, it returns the key node (where "field not allowed"
// should point). When the path leaves the document, it returns the deepest
// node reached, so an error about a missing field points at its parent.
func (ps *positions) resolve(root *yaml.Node, path fieldPath, key bool) *yaml.Node {
	cur := root
	for i, e := range path {
		cur = deref(cur)
		switch v := e.(type) {
		case string:
			k, val := ps.entry(cur, v)
			if val == nil {
				return cur
			}
			if key && i == len(path)-1 {
				return k
			}
			cur = val
		case int:
			if cur.Kind != yaml.SequenceNode || v < 0 || v >= len(cur.Content) {
				return cur
			}
			cur = cur.Content[v]
		}
	}
	return cur
}

// entry is mappingEntry, through the index for a wide mapping.
func (ps *positions) entry(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if ps == nil || m == nil || m.Kind != yaml.MappingNode || len(m.Content) <= 2*wideMapping {
		return mappingEntry(m, key)
	}
	ix, ok := ps.index[m]
	if !ok {
		pairs := mergedPairs(m)
		ix = make(map[string][2]*yaml.Node, len(pairs)/2)
		for i := 0; i+1 < len(pairs); i += 2 {
			if _, dup := ix[pairs[i].Value]; !dup {
				ix[pairs[i].Value] = [2]*yaml.Node{pairs[i], pairs[i+1]}
			}
		}
		if ps.index == nil {
			ps.index = map[*yaml.Node]map[string][2]*yaml.Node{}
		}
		ps.index[m] = ix
	}
	e := ix[key]
	return e[0], e[1]
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// mappingEntry returns the key and value nodes of key in a mapping, looking
// through merge keys (<<) the way YAML resolves them: explicit keys win.
func mappingEntry(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	var merged []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Value == key && k.Tag != "!!merge" {
			return k, m.Content[i+1]
		}
		if isMergeKey(k) {
			merged = append(merged, m.Content[i+1])
		}
	}
	for _, v := range merged {
		v = deref(v)
		if v.Kind == yaml.SequenceNode {
			for _, s := range v.Content {
				if k, val := mappingEntry(deref(s), key); val != nil {
					return k, val
				}
			}
			continue
		}
		if k, val := mappingEntry(v, key); val != nil {
			return k, val
		}
	}
	return nil, nil
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "!!merge" || k.Tag == "")
}

// scalarString returns the value of a scalar field, or "".
func scalarString(m *yaml.Node, key string) (string, *yaml.Node) {
	_, v := mappingEntry(m, key)
	v = deref(v)
	if v == nil || v.Kind != yaml.ScalarNode {
		return "", v
	}
	return v.Value, v
}

// nodeError is a problem found while converting YAML, at a node.
type nodeError struct {
	node *yaml.Node
	path fieldPath
	msg  string
	code string // "" means yaml-structure
}

// converter turns YAML nodes into plain values, collecting problems.
type converter struct {
	errs   []nodeError
	limits Limits
	budget int
	// tagged are the nodes already reported for their tag: a node reached
	// through many aliases is reported once.
	tagged map[*yaml.Node]bool
}

func newConverter(l Limits) *converter {
	l = l.orDefaults()
	return &converter{limits: l, budget: l.Values}
}

// used is the number of values converted so far, aliases expanded: the
// document's share of the site's value limits. It stops at the document's
// limit.
func (cv *converter) used() int { return cv.limits.Values - cv.budget }

// toValue converts a YAML node to plain Go values (map[string]any, []any,
// string, int64, float64, bool, nil) for CUE, reporting duplicate keys,
// non-string keys, alias cycles, alias bombs and input over the limits
// instead of guessing. A mapping or list over its limit is not looked into.
func (cv *converter) toValue(n *yaml.Node, path fieldPath, depth int) any {
	errs := &cv.errs
	if cv.budget <= 0 {
		return nil
	}
	cv.budget--
	if cv.budget == 0 {
		*errs = append(*errs, nodeError{n, path, fmt.Sprintf("document expands to more than %d values (through aliases or in all; limit)", cv.limits.Values), CodeLimitValues})
		return nil
	}
	if depth > cv.limits.Depth {
		*errs = append(*errs, nodeError{n, path, fmt.Sprintf("document nested more than %d levels deep, or an alias cycle (limit)", cv.limits.Depth), CodeLimitDepth})
		return nil
	}
	switch {
	case n.Kind == yaml.MappingNode && len(n.Content)/2 > cv.limits.Keys:
		*errs = append(*errs, nodeError{n, path, fmt.Sprintf("mapping %s has %d keys, more than %d (limit)", describePath(path), len(n.Content)/2, cv.limits.Keys), CodeLimitKeys})
		return nil
	case n.Kind == yaml.SequenceNode && len(n.Content) > cv.limits.Sequence:
		*errs = append(*errs, nodeError{n, path, fmt.Sprintf("list %s has %d elements, more than %d (limit)", describePath(path), len(n.Content), cv.limits.Sequence), CodeLimitSequence})
		return nil
	}
	if msg := tagProblem(n); msg != "" {
		cv.refuseTag(n, path, msg)
		return nil
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil
		}
		return cv.toValue(n.Alias, path, depth+1)
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return cv.toValue(n.Content[0], path, depth+1)
	case yaml.SequenceNode:
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			out[i] = cv.toValue(c, path.with(i), depth+1)
		}
		return out
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		explicit := make(map[string]bool, len(n.Content)/2)
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if msg := tagProblem(k); msg != "" {
				cv.refuseTag(k, path.with(k.Value), msg)
				continue
			}
			if isMergeKey(k) {
				merges = append(merges, v)
				continue
			}
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" && k.ShortTag() != "!!int" && k.ShortTag() != "!!bool" {
				*errs = append(*errs, nodeError{k, path, "mapping keys must be plain strings", ""})
				continue
			}
			if explicit[k.Value] {
				*errs = append(*errs, nodeError{k, path.with(k.Value), fmt.Sprintf("key %q is repeated in the same mapping", k.Value), ""})
				continue
			}
			explicit[k.Value] = true
			out[k.Value] = cv.toValue(v, path.with(k.Value), depth+1)
		}
		for _, m := range merges {
			m = deref(m)
			srcs := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				srcs = m.Content
			}
			for _, s := range srcs {
				mv, ok := cv.toValue(s, path, depth+1).(map[string]any)
				if !ok {
					*errs = append(*errs, nodeError{s, path, "a merge key (<<) needs a mapping or a list of mappings", ""})
					continue
				}
				for k, v := range mv {
					if _, set := out[k]; !set {
						out[k] = v
					}
				}
			}
		}
		return out
	case yaml.ScalarNode:
		return scalarValue(n, path, errs)
	}
	return nil
}

func scalarValue(n *yaml.Node, path fieldPath, errs *[]nodeError) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		b, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			*errs = append(*errs, nodeError{n, path, fmt.Sprintf("%q is not a boolean", n.Value), ""})
		}
		return b
	case "!!int":
		s := strings.ReplaceAll(n.Value, "_", "")
		if strings.HasPrefix(s, "0o") {
			s = "0" + s[2:]
		}
		i, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			*errs = append(*errs, nodeError{n, path, fmt.Sprintf("%q is not an integer that fits in 64 bits", n.Value), ""})
		}
		return i
	case "!!float":
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			*errs = append(*errs, nodeError{n, path, fmt.Sprintf("%q is not a finite number", n.Value), ""})
			return 0.0
		}
		return f
	case "!!str", "!!timestamp":
		// An untagged date (2024-05-01) resolves to !!timestamp: it is
		// text. An explicit tag other than the core schema's never gets
		// here (tagProblem).
		return n.Value
	default:
		// An untagged << as a value (!!merge).
		*errs = append(*errs, nodeError{n, path, fmt.Sprintf("%q reads as YAML tag %s: quote it to write it as text", n.Value, showTag(n)), CodeYAMLTag})
		return n.Value
	}
}

// CodeYAMLTag is the code of a value written with an explicit YAML tag
// other than the core schema's (!!binary, !!timestamp, !!set, !foo,
// !<...>): yaml.v3 would decode some of them into something else than the
// text written (!!binary into raw bytes), so the loader refuses them.
const CodeYAMLTag = "yaml-tag"

// coreTags are the explicit tags a site may use, with the kind of node
// each may tag: they only say what the value already reads as (!!str 123
// is the text "123").
var coreTags = map[string]yaml.Kind{
	"!!str":   yaml.ScalarNode,
	"!!int":   yaml.ScalarNode,
	"!!float": yaml.ScalarNode,
	"!!bool":  yaml.ScalarNode,
	"!!null":  yaml.ScalarNode,
	"!!map":   yaml.MappingNode,
	"!!seq":   yaml.SequenceNode,
}

// tagProblem returns why n's explicit tag is refused, or "" when n has
// no explicit tag or one of coreTags on a node of its kind.
func tagProblem(n *yaml.Node) string {
	if n == nil || n.Style&yaml.TaggedStyle == 0 {
		return ""
	}
	kind, core := coreTags[n.ShortTag()]
	if core && kind == n.Kind {
		return ""
	}
	what := "value"
	switch n.Kind {
	case yaml.MappingNode:
		what = "mapping"
	case yaml.SequenceNode:
		what = "list"
	}
	if n.ShortTag() == "!!merge" && n.Kind == yaml.ScalarNode && n.Value == "<<" {
		return "YAML tag !!merge is not allowed: write the merge key as a plain <<"
	}
	if core {
		return fmt.Sprintf("YAML tag %s is not allowed on a %s: write the %s without a tag", showTag(n), what, what)
	}
	if what == "value" {
		return fmt.Sprintf("YAML tag %s is not allowed: write the value as plain text", showTag(n))
	}
	return fmt.Sprintf("YAML tag %s is not allowed: write the %s without a tag", showTag(n), what)
}

// refuseTag reports n's tag, once per node.
func (cv *converter) refuseTag(n *yaml.Node, path fieldPath, msg string) {
	if cv.tagged[n] {
		return
	}
	if cv.tagged == nil {
		cv.tagged = map[*yaml.Node]bool{}
	}
	cv.tagged[n] = true
	cv.errs = append(cv.errs, nodeError{n, path, msg, CodeYAMLTag})
}

// showTag renders n's tag as it could be written: !!binary, !foo, or
// !<foo> for a verbatim tag outside the core schema's namespace.
func showTag(n *yaml.Node) string {
	t := n.ShortTag()
	if !strings.HasPrefix(t, "!") {
		return "!<" + t + ">"
	}
	return t
}

// describePath names a mapping or list for a limit's message: "packages",
// or "at the top of the document".
func describePath(p fieldPath) string {
	if len(p) == 0 {
		return "at the top of the document"
	}
	return strconv.Quote(p.String())
}
