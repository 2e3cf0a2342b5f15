package schema

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

// The fast path of the schema check.
//
// Unifying a document with its CUE definition costs about 200 µs and 140 kB
// of garbage per Node document (Encode, Unify, Validate); at 10,000 nodes that
// was two thirds of `anneal validate`'s CPU. Nearly every document of a real
// site is valid, so the loader first runs a plain Go predicate compiled once
// from the embedded schema's syntax, and asks CUE only when that predicate
// does not accept the document. CUE alone still decides what is wrong and
// says so, with the same messages as before.
//
// The predicate is conservative: it accepts a document only when CUE would
// accept it, and it is built only from the part of the language the schema
// uses, with the same meaning CUE gives it on concrete data:
//
//   - definitions and references to them, struct literals (closed, as every
//     struct in a definition is), embedded definitions, regular and optional
//     (?) fields, pattern constraints ([#Name]: T);
//   - string, int, bool, _, string/int/bool/null literals, & and |;
//   - bounds (>=, <=, >, <, != against int or string literals) and regular
//     expressions (=~, !~, Go's regexp, as CUE uses);
//   - list literals with an optional typed ellipsis ([...T], [_, ...]).
//
// A definition that uses anything else (a comprehension such as #Target's
// `if kind == ...`, defaults, builtins, let, aliases, floats, ...) gets no
// fast path: its documents always go to CUE. Where the predicate is unsure it
// says no: a required field whose schema value is concrete, a key beginning
// with # or _, a float where an int is expected. cuefast_test.go checks, over
// the example sites and many mutations of their documents, that a document
// the predicate accepts is one CUE accepts.

// fastCheck reports whether a document value (as toValue returns it) is
// certainly accepted by a definition.
type fastCheck func(v any) bool

// fastChecks compiles the embedded schema once; kinds whose definition uses
// more than the supported subset are missing from the map.
var fastChecks = sync.OnceValue(func() map[string]fastCheck {
	out, _ := compileFastChecks(schemaSource)
	return out
})

// compileFastChecks compiles the definition of every kind, returning why a
// kind has no fast path.
func compileFastChecks(src []byte) (map[string]fastCheck, map[string]error) {
	checks := map[string]fastCheck{}
	why := map[string]error{}
	c, err := newFastCompiler(src)
	if err != nil {
		for _, k := range Kinds() {
			why[k] = err
		}
		return checks, why
	}
	for _, k := range Kinds() {
		if f, err := c.definition("#" + k); err != nil {
			why[k] = err
		} else {
			checks[k] = f.check
		}
	}
	return checks, why
}

var errUnsupported = errors.New("outside the fast path's subset of CUE")

func unsupported(n ast.Node, what string) error {
	return fmt.Errorf("%s at %v: %w", what, n.Pos(), errUnsupported)
}

type fastCompiler struct {
	defs  map[string][]ast.Expr // top-level definitions, in declaration order
	done  map[string]*shape
	busy  map[string]bool
	struc map[string]*structCheck // definitions that are struct literals, for embedding
	// tolerant compiles a struct holding a comprehension (#Target's `if
	// kind == ...`) to a shape whose check never accepts, for diagnosis
	// only (shape.go); strict compilation refuses it.
	tolerant bool
}

func newFastCompiler(src []byte) (*fastCompiler, error) {
	f, err := parser.ParseFile("anneal.cue", src)
	if err != nil {
		return nil, err
	}
	c := &fastCompiler{defs: map[string][]ast.Expr{}, done: map[string]*shape{}, busy: map[string]bool{}, struc: map[string]*structCheck{}}
	for _, d := range f.Decls {
		switch x := d.(type) {
		case *ast.Package, *ast.CommentGroup:
		case *ast.Field:
			id, ok := x.Label.(*ast.Ident)
			// Only definitions: a regular field could shadow string or int.
			if !ok || !strings.HasPrefix(id.Name, "#") || x.Constraint != token.ILLEGAL || x.Alias != nil || len(x.Attrs) > 0 {
				return nil, unsupported(x, "a top-level declaration other than a definition")
			}
			c.defs[id.Name] = append(c.defs[id.Name], x.Value)
		default:
			return nil, unsupported(d, fmt.Sprintf("top-level %T", d))
		}
	}
	return c, nil
}

func (c *fastCompiler) definition(name string) (*shape, error) {
	if f, ok := c.done[name]; ok {
		return f, nil
	}
	exprs, ok := c.defs[name]
	if !ok {
		return nil, fmt.Errorf("no definition %s: %w", name, errUnsupported)
	}
	if c.busy[name] {
		return nil, fmt.Errorf("recursive definition %s: %w", name, errUnsupported)
	}
	c.busy[name] = true
	defer delete(c.busy, name)
	var parts []*shape
	for _, e := range exprs {
		f, err := c.expr(e)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		parts = append(parts, f)
	}
	f := allShapes(parts)
	c.done[name] = f
	return f, nil
}

// structOf returns the struct a definition is, for embedding.
func (c *fastCompiler) structOf(name string, at ast.Node) (*structCheck, error) {
	if s, ok := c.struc[name]; ok {
		return s, nil
	}
	exprs, ok := c.defs[name]
	if !ok || len(exprs) != 1 {
		return nil, unsupported(at, "an embedding other than one struct definition")
	}
	lit, ok := exprs[0].(*ast.StructLit)
	if !ok {
		return nil, unsupported(at, "an embedding other than one struct definition")
	}
	if c.busy[name] {
		return nil, fmt.Errorf("recursive definition %s: %w", name, errUnsupported)
	}
	c.busy[name] = true
	defer delete(c.busy, name)
	s, err := c.structLit(lit)
	if err != nil {
		return nil, err
	}
	c.struc[name] = s
	return s, nil
}

func all(fs []fastCheck) fastCheck {
	if len(fs) == 1 {
		return fs[0]
	}
	return func(v any) bool {
		for _, f := range fs {
			if !f(v) {
				return false
			}
		}
		return true
	}
}

func anyOf(fs []fastCheck) fastCheck {
	return func(v any) bool {
		for _, f := range fs {
			if f(v) {
				return true
			}
		}
		return false
	}
}

func (c *fastCompiler) expr(e ast.Expr) (*shape, error) {
	switch x := e.(type) {
	case *ast.ParenExpr:
		return c.expr(x.X)
	case *ast.Ident:
		return c.ident(x)
	case *ast.BasicLit:
		return leafOf(literalCheck(x))
	case *ast.BinaryExpr:
		l, err := c.expr(x.X)
		if err != nil {
			return nil, err
		}
		r, err := c.expr(x.Y)
		if err != nil {
			return nil, err
		}
		switch x.Op {
		case token.AND:
			return allShapes([]*shape{l, r}), nil
		case token.OR:
			return leaf(anyOf([]fastCheck{l.check, r.check})), nil
		}
		return nil, unsupported(x, "operator "+x.Op.String())
	case *ast.UnaryExpr:
		return leafOf(boundCheck(x))
	case *ast.StructLit:
		s, err := c.structLit(x)
		if err != nil {
			return nil, err
		}
		return &shape{check: s.check, st: s}, nil
	case *ast.ListLit:
		return c.list(x)
	}
	return nil, unsupported(e, fmt.Sprintf("%T", e))
}

func (c *fastCompiler) ident(x *ast.Ident) (*shape, error) {
	if strings.HasPrefix(x.Name, "#") {
		return c.definition(x.Name)
	}
	switch x.Name {
	case "_":
		return leaf(func(any) bool { return true }), nil
	case "string":
		return leaf(func(v any) bool { _, ok := v.(string); return ok }), nil
	case "int":
		return leaf(func(v any) bool { _, ok := v.(int64); return ok }), nil
	case "bool":
		return leaf(func(v any) bool { _, ok := v.(bool); return ok }), nil
	}
	return nil, unsupported(x, "identifier "+x.Name)
}

// stringLit unquotes a plain double-quoted CUE string (not bytes, not
// multi-line, not interpolated).
func stringLit(x *ast.BasicLit) (string, bool) {
	if x.Kind != token.STRING || !strings.HasPrefix(x.Value, `"`) || strings.HasPrefix(x.Value, `"""`) {
		return "", false
	}
	s, err := literal.Unquote(x.Value)
	return s, err == nil
}

// intLit parses a plain decimal CUE integer.
func intLit(x *ast.BasicLit) (int64, bool) {
	if x.Kind != token.INT {
		return 0, false
	}
	for _, r := range x.Value {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(x.Value, 10, 64)
	return n, err == nil
}

func literalCheck(x *ast.BasicLit) (fastCheck, error) {
	switch x.Kind {
	case token.STRING:
		if s, ok := stringLit(x); ok {
			return func(v any) bool { t, ok := v.(string); return ok && t == s }, nil
		}
	case token.INT:
		if n, ok := intLit(x); ok {
			return func(v any) bool { i, ok := v.(int64); return ok && i == n }, nil
		}
	case token.TRUE, token.FALSE:
		b := x.Kind == token.TRUE
		return func(v any) bool { t, ok := v.(bool); return ok && t == b }, nil
	case token.NULL:
		return func(v any) bool { return v == nil }, nil
	}
	return nil, unsupported(x, "literal "+x.Value)
}

func boundCheck(x *ast.UnaryExpr) (fastCheck, error) {
	lit, ok := x.X.(*ast.BasicLit)
	if !ok {
		return nil, unsupported(x, "a bound on something other than a literal")
	}
	switch x.Op {
	case token.MAT, token.NMAT:
		s, ok := stringLit(lit)
		if !ok {
			return nil, unsupported(x, "a regular expression that is not a plain string")
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, unsupported(x, "an invalid regular expression")
		}
		want := x.Op == token.MAT
		return func(v any) bool { t, ok := v.(string); return ok && re.MatchString(t) == want }, nil
	case token.NEQ:
		if s, ok := stringLit(lit); ok {
			return func(v any) bool { t, ok := v.(string); return ok && t != s }, nil
		}
		if n, ok := intLit(lit); ok {
			return func(v any) bool { i, ok := v.(int64); return ok && i != n }, nil
		}
	case token.GEQ, token.LEQ, token.GTR, token.LSS:
		n, ok := intLit(lit)
		if !ok {
			break
		}
		op := x.Op
		return func(v any) bool {
			i, ok := v.(int64)
			if !ok {
				return false
			}
			switch op {
			case token.GEQ:
				return i >= n
			case token.LEQ:
				return i <= n
			case token.GTR:
				return i > n
			default:
				return i < n
			}
		}, nil
	}
	return nil, unsupported(x, "bound "+x.Op.String()+" "+lit.Value)
}

func (c *fastCompiler) list(x *ast.ListLit) (*shape, error) {
	var fixed []*shape
	var rest *shape // nil: a closed list
	for i, e := range x.Elts {
		if el, ok := e.(*ast.Ellipsis); ok {
			if i != len(x.Elts)-1 {
				return nil, unsupported(e, "an ellipsis before the end of a list")
			}
			rest = leaf(func(any) bool { return true })
			if el.Type != nil {
				f, err := c.expr(el.Type)
				if err != nil {
					return nil, err
				}
				rest = f
			}
			break
		}
		f, err := c.expr(e)
		if err != nil {
			return nil, err
		}
		fixed = append(fixed, f)
	}
	return listShape(&listCheck{fixed: fixed, rest: rest}), nil
}

// structCheck is a closed struct: its fields, the required ones among them,
// and pattern constraints on other keys.
type structCheck struct {
	fields   map[string]*shape
	required map[string]bool
	patterns []pattern
	// cond holds the fields a comprehension may declare (tolerant
	// compilation only); a struct with one never passes its check.
	cond map[string]*shape
}

type pattern struct {
	key   fastCheck
	value *shape
}

func (s *structCheck) addField(name string, f *shape, required bool) {
	if prev, ok := s.fields[name]; ok {
		f = allShapes([]*shape{prev, f})
	}
	s.fields[name] = f
	if required {
		s.required[name] = true
	}
}

func (c *fastCompiler) structLit(x *ast.StructLit) (*structCheck, error) {
	s := &structCheck{fields: map[string]*shape{}, required: map[string]bool{}}
	for _, d := range x.Elts {
		switch d := d.(type) {
		case *ast.CommentGroup:
		case *ast.EmbedDecl:
			id, ok := d.Expr.(*ast.Ident)
			if !ok || !strings.HasPrefix(id.Name, "#") {
				return nil, unsupported(d, "an embedding other than a definition")
			}
			e, err := c.structOf(id.Name, d)
			if err != nil {
				return nil, err
			}
			for name, f := range e.fields {
				s.addField(name, f, e.required[name])
			}
			s.patterns = append(s.patterns, e.patterns...)
			for name, f := range e.cond {
				s.addCond(name, f)
			}
		case *ast.Comprehension:
			if !c.tolerant {
				return nil, unsupported(d, fmt.Sprintf("%T in a struct", d))
			}
			if err := c.comprehension(s, d); err != nil {
				return nil, err
			}
		case *ast.Field:
			if d.Alias != nil || len(d.Attrs) > 0 {
				return nil, unsupported(d, "a field alias or attribute")
			}
			f, err := c.expr(d.Value)
			if err != nil {
				return nil, err
			}
			switch l := d.Label.(type) {
			case *ast.Ident:
				if strings.HasPrefix(l.Name, "#") || strings.HasPrefix(l.Name, "_") || d.Constraint == token.NOT {
					return nil, unsupported(d, "a definition, hidden or required (!) field in a struct")
				}
				s.addField(l.Name, f, d.Constraint != token.OPTION)
			case *ast.BasicLit:
				name, ok := stringLit(l)
				if !ok || d.Constraint == token.NOT {
					return nil, unsupported(d, "a field label")
				}
				s.addField(name, f, d.Constraint != token.OPTION)
			case *ast.ListLit:
				// [K]: V, a pattern constraint.
				if len(l.Elts) != 1 || d.Constraint != token.ILLEGAL {
					return nil, unsupported(d, "a pattern constraint")
				}
				k, err := c.expr(l.Elts[0])
				if err != nil {
					return nil, err
				}
				s.patterns = append(s.patterns, pattern{key: k.check, value: f})
			default:
				return nil, unsupported(d, fmt.Sprintf("a %T label", d.Label))
			}
		default:
			return nil, unsupported(d, fmt.Sprintf("%T in a struct", d))
		}
	}
	return s, nil
}

func (s *structCheck) check(v any) bool {
	m, ok := v.(map[string]any)
	if !ok || s.cond != nil {
		return false
	}
	for name := range s.required {
		if _, ok := m[name]; !ok {
			return false
		}
	}
	for k, x := range m {
		if k == "" || k[0] == '#' || k[0] == '_' {
			return false // not a plain regular field: let CUE judge
		}
		f, declared := s.fields[k]
		if declared && !f.check(x) {
			return false
		}
		matched := false
		for _, p := range s.patterns {
			if p.key(k) {
				matched = true
				if !p.value.check(x) {
					return false
				}
			}
		}
		if !declared && !matched {
			return false // closed: an unknown field
		}
	}
	return true
}
