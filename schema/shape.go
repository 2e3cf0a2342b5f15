package schema

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"cuelang.org/go/cue/ast"
)

// Bounding what CUE is asked about an invalid document.
//
// CUE merges the errors of one evaluation in time that grows with the
// square of their number, and it reports every value below a field a
// closed struct does not allow as an error of its own: a document of 80 kB
// whose unknown field holds 200,000 values (through aliases, within the
// limits) took a minute to reject. So before CUE sees a document the fast
// path rejected, the loader walks it with the same compiled schema (a
// shape) and:
//
//   - reports an unknown field itself, with the message CUE's would have,
//     and leaves the field out of what CUE is given: its value is never
//     looked at;
//   - counts the places the schema rejects (a value of the wrong type or
//     out of bounds, a missing field, a list too short) and hands CUE at
//     most maxSchemaIssues of them: past that, a failing value is left out
//     (or a list cut before it), the issues CUE reports about what was
//     left out are dropped, and one issue says how many more there are.
//
// CUE still words every message about a value; the Go walk only decides
// which values it sees. Each one it sees yields a bounded number of errors,
// so the work on an invalid document is linear in its size.

// maxSchemaIssues bounds the places of one document the schema check
// reports; the rest are counted in one closing issue.
const maxSchemaIssues = 100

// shape is a compiled schema expression: check accepts what CUE certainly
// accepts (cuefast.go); st or list, when set, let a rejected value be
// looked into; parts are the operands of &, at most one of them a struct
// or a list. A shape with none of these is a leaf: a rejected value is
// one place, handed to CUE whole.
type shape struct {
	check fastCheck
	st    *structCheck
	list  *listCheck
	parts []*shape
}

func leaf(f fastCheck) *shape { return &shape{check: f} }

func leafOf(f fastCheck, err error) (*shape, error) {
	if err != nil {
		return nil, err
	}
	return leaf(f), nil
}

func (s *shape) composite() bool { return s.st != nil || s.list != nil || s.parts != nil }

// allShapes is the conjunction of shapes. Lists are merged into one list
// ([...#Region] & [_, ...]); otherwise a conjunction of more than one
// struct or list is a leaf.
func allShapes(parts []*shape) *shape {
	if len(parts) == 1 {
		return parts[0]
	}
	checks := make([]fastCheck, len(parts))
	composites := 0
	lists := 0
	for i, p := range parts {
		checks[i] = p.check
		if p.composite() {
			composites++
		}
		if p.list != nil {
			lists++
		}
	}
	if lists == len(parts) {
		merged := parts[0].list
		for _, p := range parts[1:] {
			if merged = merged.merge(p.list); merged == nil {
				break
			}
		}
		if merged != nil {
			return listShape(merged)
		}
	}
	s := &shape{check: all(checks)}
	if composites <= 1 {
		s.parts = parts
	}
	return s
}

// listCheck is a list: its first elements by position, then rest (nil: a
// closed list of len(fixed) elements).
type listCheck struct {
	fixed []*shape
	rest  *shape
}

func listShape(l *listCheck) *shape { return &shape{check: l.check, list: l} }

// elem is the shape of element i, or nil past the end of a closed list.
func (l *listCheck) elem(i int) *shape {
	if i < len(l.fixed) {
		return l.fixed[i]
	}
	return l.rest
}

func (l *listCheck) lengthOK(n int) bool {
	return n >= len(l.fixed) && (l.rest != nil || n == len(l.fixed))
}

func (l *listCheck) check(v any) bool {
	x, ok := v.([]any)
	if !ok || !l.lengthOK(len(x)) {
		return false
	}
	for i, e := range x {
		if !l.elem(i).check(e) {
			return false
		}
	}
	return true
}

// merge is l & o, or nil when it is not simply a list (closed lists of
// other lengths).
func (l *listCheck) merge(o *listCheck) *listCheck {
	if l.rest == nil && o.rest == nil && len(l.fixed) != len(o.fixed) ||
		l.rest == nil && len(o.fixed) > len(l.fixed) || o.rest == nil && len(l.fixed) > len(o.fixed) {
		return nil
	}
	out := &listCheck{}
	for i := range max(len(l.fixed), len(o.fixed)) {
		out.fixed = append(out.fixed, allShapes([]*shape{l.elem(i), o.elem(i)}))
	}
	if l.rest != nil && o.rest != nil {
		out.rest = allShapes([]*shape{l.rest, o.rest})
	}
	return out
}

// comprehension adds the fields a comprehension's struct may declare
// (tolerant compilation): a key declared by none is unknown, whatever the
// condition.
func (c *fastCompiler) comprehension(s *structCheck, x *ast.Comprehension) error {
	body, ok := x.Value.(*ast.StructLit)
	if !ok {
		return unsupported(x, "a comprehension whose value is not a struct")
	}
	b, err := c.structLit(body)
	if err != nil {
		return err
	}
	if len(b.patterns) > 0 {
		return unsupported(x, "a pattern constraint in a comprehension")
	}
	for name, f := range b.fields {
		s.addCond(name, f)
	}
	for name, f := range b.cond {
		s.addCond(name, f)
	}
	return nil
}

// addCond records a field a comprehension may declare. Declared by several
// comprehensions, it is a leaf: which one applies is CUE's to decide.
func (s *structCheck) addCond(name string, f *shape) {
	if s.cond == nil {
		s.cond = map[string]*shape{}
	}
	if prev, ok := s.cond[name]; ok {
		f = leaf(anyOf([]fastCheck{prev.check, f.check}))
	}
	s.cond[name] = f
}

// shapes compiles the embedded schema tolerantly once: every kind has one.
var shapes = sync.OnceValue(func() map[string]*shape {
	out, _ := compileShapes(schemaSource)
	return out
})

func compileShapes(src []byte) (map[string]*shape, map[string]error) {
	out := map[string]*shape{}
	why := map[string]error{}
	c, err := newFastCompiler(src)
	if err != nil {
		for _, k := range Kinds() {
			why[k] = err
		}
		return out, why
	}
	c.tolerant = true
	for _, k := range Kinds() {
		if s, err := c.definition("#" + k); err != nil {
			why[k] = err
		} else {
			out[k] = s
		}
	}
	return out, why
}

// elision stands for a value left out of CUE's input.
type elision struct{}

// diagnosis walks a rejected document, building what CUE is given.
type diagnosis struct {
	max      int
	reported int         // places handed to CUE or reported, at most max
	more     int         // places past max
	unknown  []fieldPath // unknown fields, reported from Go
	// Issues CUE reports at (or, for under, below) these paths are about
	// what was left out of its input.
	under, at map[string]bool
}

func newDiagnosis(max int) *diagnosis {
	return &diagnosis{max: max, under: map[string]bool{}, at: map[string]bool{}}
}

func (d *diagnosis) full() bool { return d.reported >= d.max }

// place counts one place the schema rejects: reported, or one more.
func (d *diagnosis) place(path fieldPath) bool {
	if d.full() {
		d.more++
		d.at[path.String()] = true
		return false
	}
	d.reported++
	return true
}

// walk returns v as CUE is to see it, or elision{}.
func (d *diagnosis) walk(s *shape, v any, path fieldPath) any {
	if s.check(v) {
		return v
	}
	if d.full() {
		d.more += countPlaces(s, v)
		return elision{}
	}
	switch {
	case s.st != nil:
		if m, ok := v.(map[string]any); ok {
			return d.walkStruct(s.st, m, path)
		}
	case s.list != nil:
		if l, ok := v.([]any); ok {
			return d.walkList(s.list, l, path)
		}
	case s.parts != nil:
		for _, p := range s.parts {
			if !p.composite() && !p.check(v) {
				d.place(path)
				return v
			}
		}
		for _, p := range s.parts {
			if p.composite() {
				return d.walk(p, v, path)
			}
		}
	}
	d.place(path)
	return v
}

// fieldShape is the shape of key k of a struct, or nil for an unknown field.
func (st *structCheck) fieldShape(k string) *shape {
	f, declared := st.fields[k]
	if !declared {
		f, declared = st.cond[k]
	}
	var parts []*shape
	if declared {
		parts = append(parts, f)
	}
	for _, p := range st.patterns {
		if p.key(k) {
			parts = append(parts, p.value)
		}
	}
	switch len(parts) {
	case 0:
		return nil
	case 1:
		return parts[0]
	}
	return allShapes(parts)
}

// unsure reports a key the fast path leaves to CUE (not a plain field).
func unsure(k string) bool { return k == "" || k[0] == '#' || k[0] == '_' }

func (d *diagnosis) walkStruct(st *structCheck, m map[string]any, path fieldPath) any {
	if st.cond != nil {
		d.place(path) // CUE judges it
	}
	for _, name := range slices.Sorted(maps.Keys(st.required)) {
		if _, ok := m[name]; !ok {
			d.place(path.with(name))
		}
	}
	out := make(map[string]any, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		x, p := m[k], path.with(k)
		if unsure(k) {
			// Whether CUE allows the key does not depend on its value.
			if d.place(p) {
				out[k] = nil
			}
			continue
		}
		f := st.fieldShape(k)
		if f == nil {
			if !d.full() {
				d.reported++
				d.unknown = append(d.unknown, p)
			} else {
				d.more++
			}
			continue
		}
		r := d.walk(f, x, p)
		if _, gone := r.(elision); gone {
			d.under[p.String()] = true
			continue
		}
		out[k] = r
	}
	return out
}

func (d *diagnosis) walkList(lc *listCheck, l []any, path fieldPath) any {
	if !lc.lengthOK(len(l)) {
		d.place(path)
	}
	out := make([]any, 0, len(l))
	for i, x := range l {
		el := lc.elem(i)
		if el == nil {
			break // CUE reports the length
		}
		r := d.walk(el, x, path.with(i))
		if _, gone := r.(elision); gone {
			for j := i + 1; j < len(l) && lc.elem(j) != nil; j++ {
				d.more += countPlaces(lc.elem(j), l[j])
			}
			if len(out) == 0 {
				return elision{}
			}
			if lc.lengthOK(len(l)) && !lc.lengthOK(len(out)) {
				d.at[path.String()] = true
			}
			return out
		}
		out = append(out, r)
	}
	if len(out) < len(l) {
		out = append(out, l[len(out):]...)
	}
	return out
}

// countPlaces counts what walk would report of a value, without building
// anything.
func countPlaces(s *shape, v any) int {
	if s.check(v) {
		return 0
	}
	switch {
	case s.st != nil:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		n := 0
		if s.st.cond != nil {
			n++
		}
		for name := range s.st.required {
			if _, ok := m[name]; !ok {
				n++
			}
		}
		for k, x := range m {
			if f := s.st.fieldShape(k); f != nil && !unsure(k) {
				n += countPlaces(f, x)
			} else {
				n++
			}
		}
		return n
	case s.list != nil:
		l, ok := v.([]any)
		if !ok {
			break
		}
		n := 0
		if !s.list.lengthOK(len(l)) {
			n++
		}
		for i, x := range l {
			el := s.list.elem(i)
			if el == nil {
				break
			}
			n += countPlaces(el, x)
		}
		return n
	case s.parts != nil:
		for _, p := range s.parts {
			if !p.composite() && !p.check(v) {
				return 1
			}
		}
		for _, p := range s.parts {
			if p.composite() {
				return countPlaces(p, v)
			}
		}
	}
	return 1
}

// dropped reports an issue about what was left out of CUE's input.
func (d *diagnosis) dropped(p fieldPath) bool {
	if d.at[p.String()] {
		return true
	}
	for i := 1; i <= len(p); i++ {
		if d.under[p[:i].String()] {
			return true
		}
	}
	return false
}

func (d *diagnosis) moreMessage() string {
	return fmt.Sprintf("and %d more places in this document the schema rejects (only the first %d are reported)", d.more, d.max)
}
