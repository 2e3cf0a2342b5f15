package schema

import (
	_ "embed"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
)

//go:embed anneal.cue
var schemaSource []byte

// SchemaSource returns the embedded CUE schema, the source of truth for the
// shape of every document (`anneal schema` prints it).
func SchemaSource() []byte { return slices.Clone(schemaSource) }

// validator checks documents against the CUE definitions. A cue.Context is
// not safe for concurrent use, so each loader worker owns one validator.
type validator struct {
	defs map[string]cue.Value
	ctx  *cue.Context
	// fast accepts, without CUE, documents CUE certainly accepts
	// (cuefast.go); nil for a kind means CUE checks every document.
	fast map[string]fastCheck
	// shapes bound what CUE is given of a rejected document (shape.go);
	// nil for a kind means CUE is given the whole document.
	shapes map[string]*shape
	// onCUE, when set (by tests), is called with the kind of every
	// document given to CUE.
	onCUE func(kind string)
}

func newValidator() (*validator, error) {
	ctx := cuecontext.New()
	v := ctx.CompileBytes(schemaSource, cue.Filename("anneal.cue"))
	if err := v.Err(); err != nil {
		return nil, fmt.Errorf("compile embedded schema: %w", err)
	}
	defs := make(map[string]cue.Value, len(Kinds()))
	for _, k := range Kinds() {
		d := v.LookupPath(cue.ParsePath("#" + k))
		if err := d.Err(); err != nil {
			return nil, fmt.Errorf("embedded schema has no #%s: %w", k, err)
		}
		defs[k] = d
	}
	return &validator{defs: defs, ctx: ctx, fast: fastChecks(), shapes: shapes()}, nil
}

// schemaIssue is a CUE finding translated to a document path.
type schemaIssue struct {
	path    fieldPath
	key     bool // points at the key (unknown field) rather than the value
	message string
	// rank orders the messages of one field, lowest first: a branch of a
	// disjunction the value's type fits, a branch of another type, CUE's
	// summary of the disjunction.
	rank int
}

// validate checks one document's value against its kind's definition.
func (v *validator) validate(kind string, value any) []schemaIssue {
	if f := v.fast[kind]; f != nil && f(value) {
		return nil // what CUE would say: see cuefast.go
	}
	def := v.defs[kind]
	var out []schemaIssue
	seen := map[string]bool{}
	add := func(is schemaIssue) {
		k := is.path.String() + "\x00" + is.message
		if !seen[k] {
			seen[k] = true
			out = append(out, is)
		}
	}
	input := any(value)
	var d *diagnosis
	sh := v.shapes[kind]
	if sh != nil {
		d = newDiagnosis(maxSchemaIssues)
		input = d.walk(sh, value, nil)
		for _, p := range d.unknown {
			add(unknownField(def, p))
		}
	}
	if _, gone := input.(elision); !gone && (sh == nil || !sh.check(input)) {
		if v.onCUE != nil {
			v.onCUE(kind)
		}
		u := def.Unify(v.ctx.Encode(input))
		err := u.Validate(cue.Concrete(true), cue.Final())
		for _, e := range cueerrors.Errors(err) {
			is := v.translate(def, value, e)
			if d != nil && d.dropped(is.path) {
				continue
			}
			add(is)
		}
	}
	if d != nil && d.more > 0 {
		add(schemaIssue{message: d.moreMessage()})
	}
	if len(out) == 0 {
		return nil
	}
	// One message per field: a disjunction reports a summary ("2 errors in
	// empty disjunction:") and then each branch; keep the friendliest
	// message for a path: the first of the lowest rank.
	byPath := map[string]int{} // path → index in kept
	kept := out[:0]
	for _, is := range out {
		p := is.path.String()
		if i, ok := byPath[p]; ok {
			if is.rank < kept[i].rank {
				kept[i] = is
			}
			continue
		}
		byPath[p] = len(kept)
		kept = append(kept, is)
	}
	return kept
}

// emptyDisjunction is CUE's summary of a value no branch of a disjunction
// accepts; the branches follow it, each with its own error.
var emptyDisjunction = regexp.MustCompile(`^\d+ errors in empty disjunction:?$`)

var outOfBound = regexp.MustCompile(`out of bound (=~|!~|>=|<=|>|<|!=)`)

func (v *validator) translate(def cue.Value, doc any, e cueerrors.Error) schemaIssue {
	raw := e.Path()
	path := make(fieldPath, 0, len(raw))
	for _, s := range raw {
		if strings.HasPrefix(s, "#") && len(path) == 0 {
			continue // the definition itself
		}
		if i, err := strconv.Atoi(s); err == nil {
			path = append(path, i)
			continue
		}
		path = append(path, s)
	}
	format, args := e.Msg()
	msg := fmt.Sprintf(format, args...)
	is := schemaIssue{path: path}
	switch {
	case emptyDisjunction.MatchString(msg):
		is.rank = 2
	case strings.Contains(msg, "mismatched types"):
		is.rank = 1
	}
	last := ""
	if len(path) > 0 {
		if s, ok := path[len(path)-1].(string); ok {
			last = s
		}
	}
	present := lookupValue(doc, path)
	switch {
	case strings.Contains(msg, "field not allowed"):
		// CUE may point below the unknown field (rolez.0): cut the path at
		// the first element the schema does not know.
		for i := range path {
			if _, ok := path[i].(string); ok && !schemaAt(def, path[:i+1]).Exists() {
				path = path[:i+1]
				break
			}
		}
		is = unknownField(def, path)
	case isSecretField(last):
		// Never echo the value: it may be the secret itself.
		is.message = "must name a secret the operator grants (secret:NAME); a secret, or where one is read from (env:, file:), written into the site repo is not allowed: grant it in the operator's --secrets file (from: env:NAME) and write secret:NAME here"
		if present == nil {
			is.message = "missing required field; " + is.message
		}
	case present == nil && (strings.Contains(msg, "incomplete value") || strings.Contains(msg, "non-concrete")):
		is.message = fmt.Sprintf("missing required field %q", last)
	case strings.Contains(msg, "incompatible list lengths") || strings.Contains(msg, "incomplete value [_") || strings.Contains(msg, "0 not allowed"):
		is.message = "must not be empty"
	default:
		if enum := enumValues(def, path); len(enum) > 0 {
			is.message = fmt.Sprintf("%s is not one of %s", show(present), strings.Join(enum, ", "))
		} else if hint := patternHint(boundOf(msg)); hint != "" && outOfBound.MatchString(msg) {
			is.message = fmt.Sprintf("%s: %s", show(present), hint)
		} else if hint, ok := fieldHints[last]; ok && outOfBound.MatchString(msg) {
			is.message = fmt.Sprintf("%s: %s", show(present), hint)
		} else if outOfBound.MatchString(msg) {
			is.message = fmt.Sprintf("%s is out of range (%s)", show(present), boundOf(msg))
		} else if strings.Contains(msg, "conflicting values") || strings.Contains(msg, "mismatched types") {
			is.message = fmt.Sprintf("%s has the wrong type: want %s", show(present), typeOf(def, path))
		} else {
			is.message = msg
		}
	}
	return is
}

// unknownField is the issue of a field the definition does not declare.
func unknownField(def cue.Value, path fieldPath) schemaIssue {
	last, _ := path[len(path)-1].(string)
	is := schemaIssue{path: path, key: true, message: fmt.Sprintf("unknown field %q (a typo?)", last)}
	if hint := knownFields(def, path[:len(path)-1]); hint != "" {
		is.message += "; known fields here: " + hint
	}
	return is
}

// patternHint explains a violated pattern by the definition it comes from
// (#Name, #ObjectName, #DomainName, #MAC, ...), whatever the field is called.
func patternHint(bound string) string {
	switch {
	case strings.Contains(bound, `([0-9a-f]{2}:){5}`):
		return fieldHints["mac"]
	case strings.Contains(bound, `[0-9a-f]{64}`):
		return fieldHints["sha256"]
	case strings.Contains(bound, `(\\*\\.)?`) || strings.Contains(bound, `(\*\.)?`):
		return "must be a DNS domain name (labels of letters, digits and '-', separated by dots)"
	case strings.Contains(bound, `[a-z0-9._-]`):
		return "must be a lower-case name: a-z, 0-9, '.', '_' and '-', at most 63 characters"
	case strings.Contains(bound, `[a-z0-9-]{0,61}`):
		return fieldHints["name"]
	case strings.Contains(bound, `(w|d|h|m|s)`):
		return fieldHints["maxBuildAge"]
	}
	return ""
}

func isSecretField(name string) bool {
	switch name {
	case "password", "secret", "apiKey", "token":
		return true
	}
	return false
}

var fieldHints = map[string]string{
	"name":            "must be a lower-case DNS label: a-z, 0-9 and '-', at most 63 characters, not starting or ending with '-'",
	"region":          "must be a lower-case DNS label",
	"rack":            "must be a lower-case DNS label",
	"network":         "must be a lower-case DNS label",
	"link":            "must be a lower-case DNS label",
	"nic":             "must be a lower-case DNS label",
	"mac":             "must be a MAC address in lower-case hex, like 0c:c4:7a:00:00:01",
	"sha256":          "must be 64 lower-case hex digits",
	"url":             "must be an http, https, tftp or file URL",
	"api":             "must be an http or https URL",
	"mirror":          "must be an http or https URL of a host, an optional port and a path, with no credentials, query, fragment or spaces, like http://mirror.example.net/debian",
	"maxBuildAge":     "must be a duration like 90d, 12h or 1w2d",
	"speed":           "must be a link speed like 1G, 25G or 100M",
	"size":            "must be a disk size like 960G or 1.92T, or an artifact's length in bytes (a whole number above 0)",
	"server":          "must be host:port, like 127.0.0.1:53",
	"perRack":         "must be a count or a percentage like 25%",
	"hardwareProfile": "must be a lower-case name (a-z, 0-9, '.', '_', '-')",
	"image":           "must be a lower-case name (a-z, 0-9, '.', '_', '-')",
	"patchSet":        "must be a lower-case name (a-z, 0-9, '.', '_', '-')",
	"domain":          "must be a DNS domain name",
	"fqdn":            "must be a DNS domain name",
	"target":          "must be a DNS domain name",
}

func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "the value"
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	default:
		return fmt.Sprint(x)
	}
}

func boundOf(msg string) string {
	i := strings.Index(msg, "out of bound ")
	if i < 0 {
		return msg
	}
	return strings.TrimSuffix(msg[i+len("out of bound "):], ")")
}

// schemaAt finds the schema value for a document path (list elements by
// pattern), or an invalid value.
func schemaAt(def cue.Value, path fieldPath) cue.Value {
	cur := def
	for _, e := range path {
		switch x := e.(type) {
		case string:
			next := cur.LookupPath(cue.MakePath(cue.Str(x)))
			if !next.Exists() {
				next = cur.LookupPath(cue.MakePath(cue.Str(x).Optional()))
			}
			cur = next
		case int:
			cur = cur.LookupPath(cue.MakePath(cue.AnyIndex))
		}
		if !cur.Exists() {
			return cur
		}
	}
	return cur
}

// enumValues lists the allowed strings when the field is an enumeration.
func enumValues(def cue.Value, path fieldPath) []string {
	v := schemaAt(def, path)
	if !v.Exists() {
		return nil
	}
	op, args := v.Expr()
	if op != cue.OrOp {
		return nil
	}
	var out []string
	for _, a := range args {
		s, err := a.String()
		if err != nil || !a.IsConcrete() {
			return nil
		}
		out = append(out, strconv.Quote(s))
	}
	return out
}

func typeOf(def cue.Value, path fieldPath) string {
	v := schemaAt(def, path)
	if !v.Exists() {
		return "another type"
	}
	switch k := v.IncompleteKind(); {
	case k == cue.StringKind:
		return "a string"
	case k == cue.IntKind:
		return "an integer"
	case k == cue.BoolKind:
		return "true or false"
	case k == cue.ListKind:
		return "a list"
	case k == cue.StructKind:
		return "a mapping"
	case k&cue.IntKind != 0 && k&cue.StringKind != 0:
		return "an integer or a string"
	default:
		return k.String()
	}
}

// knownFields lists the fields a definition allows at path.
func knownFields(def cue.Value, path fieldPath) string {
	v := schemaAt(def, path)
	if !v.Exists() {
		return ""
	}
	it, err := v.Fields(cue.Optional(true))
	if err != nil {
		return ""
	}
	var names []string
	for it.Next() {
		if sel := it.Selector(); sel.IsString() {
			names = append(names, sel.Unquoted())
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// lookupValue walks the plain value of a document.
func lookupValue(v any, path fieldPath) any {
	for _, e := range path {
		switch x := e.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[x]
		case int:
			l, ok := v.([]any)
			if !ok || x >= len(l) {
				return nil
			}
			v = l[x]
		}
	}
	return v
}
