package schema

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Severity of a diagnostic.
type Severity string

// Severities. An error makes the site invalid; a warning does not.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one finding about the site, pinned to where it was written.
//
// Its JSON form is the documented output of `anneal validate -o json`
// (docs/validate-json.md); keep the field names stable.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	// Code is a stable identifier of the rule, e.g. "duplicate-mac".
	Code   string `json:"code"`
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
	// Object is the document the finding is about, as Kind/name.
	Object string `json:"object,omitempty"`
	// Path is the field inside the document, e.g. interfaces[2].mac.
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// String renders file:line:col: Object: path: message.
func (d Diagnostic) String() string {
	var b strings.Builder
	if d.File != "" {
		b.WriteString(d.File)
		if d.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", d.Line, d.Column)
		}
		b.WriteString(": ")
	}
	if d.Severity == SeverityWarning {
		b.WriteString("warning: ")
	}
	if d.Object != "" {
		b.WriteString(d.Object)
		b.WriteString(": ")
	}
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	if d.Code != "" {
		fmt.Fprintf(&b, " [%s]", d.Code)
	}
	return b.String()
}

// Diagnostics is every finding of a load, sorted by file and position.
type Diagnostics []Diagnostic

// HasErrors reports whether any finding makes the site invalid.
func (ds Diagnostics) HasErrors() bool {
	return slices.ContainsFunc(ds, func(d Diagnostic) bool { return d.Severity == SeverityError })
}

// Errors counts the findings of severity error.
func (ds Diagnostics) Errors() int {
	n := 0
	for _, d := range ds {
		if d.Severity == SeverityError {
			n++
		}
	}
	return n
}

func (ds Diagnostics) sort() {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// InvalidError is returned by Load when the site has errors. It carries every
// diagnostic, not only the first.
type InvalidError struct {
	Diagnostics Diagnostics
}

func (e *InvalidError) Error() string {
	n := e.Diagnostics.Errors()
	first := ""
	for _, d := range e.Diagnostics {
		if d.Severity == SeverityError {
			first = d.String()
			break
		}
	}
	if n == 1 {
		return "invalid site: " + first
	}
	return fmt.Sprintf("invalid site: %d errors, first: %s", n, first)
}
