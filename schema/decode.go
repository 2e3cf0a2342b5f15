package schema

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decoding a document into its typed object in linear time.
//
// yaml.v3 checks a mapping decoded into a Go map for repeated keys by
// comparing every key with every later one: a document with 100,000 keys
// in one map (a PatchSet's packages) took most of a minute in Node.Decode.
// toValue has already rejected repeated keys with a map, so decodeObject
// hands yaml.v3 only small mappings: it decodes a copy of the document in
// which aliases and merge keys (<<) are resolved the way toValue resolves
// them, and every wide mapping is empty; it then fills each of those Go
// maps one entry at a time.

// wideMapping is the number of keys above which a mapping is filled entry
// by entry. Closed structs of the schema have fewer fields than this, so
// every wide mapping of a valid document is a Go map.
const wideMapping = 64

// detached is a wide mapping cut out of the copy, and where it was.
type detached struct {
	path fieldPath
	node *yaml.Node // merge-free, alias-free
}

// decodeObject decodes a document that passed its schema check into obj.
func decodeObject(body *yaml.Node, obj any) error {
	var wide []detached
	cp := flatten(body, nil, &wide, 0)
	if err := cp.Decode(obj); err != nil {
		return err
	}
	root := reflect.ValueOf(obj)
	for _, w := range wide {
		m, err := fieldAt(root, w.path)
		if err != nil {
			return err
		}
		if m.Kind() != reflect.Map {
			return fmt.Errorf("%s: a mapping of %d keys where %s is expected", w.path, len(w.node.Content)/2, m.Type())
		}
		ptr := m.Addr().Interface()
		for i := 0; i+1 < len(w.node.Content); i += 2 {
			one := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: w.node.Content[i : i+2 : i+2]}
			if err := one.Decode(ptr); err != nil {
				return err
			}
		}
	}
	return nil
}

// flatten copies n without aliases and merge keys, recording and emptying
// wide mappings. The document passed toValue, so its expansion is bounded.
// path is a stack its callees append to in place and never keep (a wide
// mapping keeps a copy): one path a node would be most of the allocations
// of decoding a document.
func flatten(n *yaml.Node, path fieldPath, wide *[]detached, depth int) *yaml.Node {
	n = deref(n)
	if n == nil || depth > maxNesting+1 {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	switch n.Kind {
	case yaml.SequenceNode:
		c := *n
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, e := range n.Content {
			c.Content[i] = flatten(e, append(path, i), wide, depth+1)
		}
		return &c
	case yaml.MappingNode:
		pairs := mergedPairs(n)
		c := *n
		c.Content = make([]*yaml.Node, 0, len(pairs))
		for i := 0; i+1 < len(pairs); i += 2 {
			k := pairs[i]
			c.Content = append(c.Content, k, flatten(pairs[i+1], append(path, k.Value), wide, depth+1))
		}
		if len(c.Content)/2 > wideMapping {
			*wide = append(*wide, detached{path: slices.Clone(path), node: &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: c.Content}})
			c.Content = nil
		}
		return &c
	}
	return n
}

// mergedPairs returns a mapping's key and value nodes with merge keys
// resolved: explicit keys first, then each merged mapping's keys not set
// yet, in order (toValue's reading, and YAML's).
func mergedPairs(n *yaml.Node) []*yaml.Node {
	var merges []*yaml.Node
	var out []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if isMergeKey(n.Content[i]) {
			merges = append(merges, n.Content[i+1])
			continue
		}
		out = append(out, n.Content[i], n.Content[i+1])
	}
	if len(merges) == 0 {
		return out
	}
	set := make(map[string]bool, len(out)/2)
	for i := 0; i < len(out); i += 2 {
		set[out[i].Value] = true
	}
	for _, m := range merges {
		m = deref(m)
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, s := range srcs {
			s = deref(s)
			if s == nil || s.Kind != yaml.MappingNode {
				continue
			}
			sp := mergedPairs(s)
			for i := 0; i+1 < len(sp); i += 2 {
				if !set[sp[i].Value] {
					set[sp[i].Value] = true
					out = append(out, sp[i], sp[i+1])
				}
			}
		}
	}
	return out
}

// fieldAt walks a decoded object to the value at path, by yaml field names.
func fieldAt(v reflect.Value, path fieldPath) (reflect.Value, error) {
	for _, e := range path {
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return reflect.Value{}, fmt.Errorf("%s: not decoded", path)
			}
			v = v.Elem()
		}
		switch x := e.(type) {
		case int:
			if v.Kind() != reflect.Slice || x >= v.Len() {
				return reflect.Value{}, fmt.Errorf("%s: no element %d", path, x)
			}
			v = v.Index(x)
		case string:
			if v.Kind() != reflect.Struct {
				return reflect.Value{}, fmt.Errorf("%s: %s is not a struct", path, v.Type())
			}
			f, ok := structField(v, x)
			if !ok {
				return reflect.Value{}, fmt.Errorf("%s: %s has no field %q", path, v.Type(), x)
			}
			v = f
		}
	}
	return v, nil
}

// structField finds the field yaml.v3 decodes key into, looking into
// inline structs.
func structField(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			if sf.Type.Kind() == reflect.Struct {
				if f, ok := structField(v.Field(i), key); ok {
					return f, true
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		if name == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}
