package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"
)

// aliasedErrors is the reproduction of the review finding: a PatchSet whose
// packages mapping of keys entries is aliased aliases times under an unknown
// field, about keys*(aliases+1) values, within every limit. CUE alone took
// a minute on 9,000 keys and 21 aliases.
func aliasedErrors(keys, aliases int, value, field string) string {
	var b strings.Builder
	b.WriteString(patchSetHead + "packages: &a {")
	for i := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "k%d: %s", i, value)
	}
	b.WriteString("}\n" + field + ": [")
	for i := range aliases {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("*a")
	}
	b.WriteString("]\n")
	return b.String()
}

// dnsHead is a DNS document up to its targets (DNS has no fast path: the
// comprehension of #Target).
const dnsHead = "apiVersion: anneal.dev/v1alpha1\nkind: DNS\nname: dns\nzones: [{name: example.net}]\n"

func manyNICs(n int, mac string) string {
	var b strings.Builder
	b.WriteString("apiVersion: anneal.dev/v1alpha1\nkind: HardwareProfile\nname: hw\nvendor: v\nmodel: m\nbmc: redfish\nnics:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - {name: n%d, speed: %s}\n", i, mac)
	}
	return b.String()
}

// TestSchemaErrorsBounded: a document the schema rejects in many places,
// directly or through aliases, is reported invalid with a bounded number of
// diagnostics: unknown fields once each (their values never looked at), at
// most maxSchemaIssues places, then one diagnostic counting the rest.
func TestSchemaErrorsBounded(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []Diagnostic // File, Line, Path, Message substring; Code schema
		more int          // the count in the closing diagnostic; 0: none
	}{
		{"unknown field holding 198k aliased values", aliasedErrors(9000, 21, "v", "x"),
			[]Diagnostic{{Line: 6, Column: 1, Path: "x", Message: `unknown field "x" (a typo?); known fields here: apiVersion, kernel, kind, name, packages`}}, 0},
		{"lists aliased under packages", aliasedErrors(3000, 21, "[v, v]", "y"),
			// Places are taken in the order of their keys: y comes after
			// the 3,000 packages, counted among the rest.
			[]Diagnostic{{Line: 5, Path: "packages.k0", Message: "a list has the wrong type: want a string"}}, 3000 + 1 - maxSchemaIssues},
		{"empty values", aliasedErrors(150, 0, `""`, "z"),
			[]Diagnostic{{Line: 5, Path: "packages.k0", Message: `"" is out of range (!="")`}}, 150 - (maxSchemaIssues - 1)},
		{"many wrong list elements", manyNICs(5000, "fast"),
			[]Diagnostic{{Line: 8, Path: "nics[0].speed", Message: `"fast": must be a link speed`}}, 5000 - maxSchemaIssues},
		{"DNS target's unknown field holding aliased values", dnsHead + "x: &a {" + strings.Repeat("a: [b, c, d], ", 1)[:0] + aliasKeys(5000) + "}\ntargets:\n  - {name: t, kind: powerdns, api: \"http://a\", apiKey: \"secret:k\", zones: [example.net], extra: [" + strings.TrimSuffix(strings.Repeat("*a, ", 30), ", ") + "]}\n",
			[]Diagnostic{
				{Line: 5, Column: 1, Path: "x", Message: `unknown field "x"`},
				{Line: 7, Path: "targets[0].extra", Message: `unknown field "extra"`},
			}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"a.yaml": {Data: []byte(tc.doc)}}
			site, diags, err := Load(context.Background(), fsys, LoadOptions{Workers: 1})
			var inv *InvalidError
			if !errors.As(err, &inv) || site != nil {
				t.Fatalf("Load = %v, %v; want an *InvalidError", site, err)
			}
			schemaDiags := 0
			moreSeen := 0
			for _, d := range diags {
				if d.Code != "schema" {
					continue
				}
				schemaDiags++
				if _, err := fmt.Sscanf(d.Message, "and %d more places", &moreSeen); err == nil && d.Path != "" {
					t.Errorf("closing diagnostic with a path: %v", d)
				}
			}
			if schemaDiags > maxSchemaIssues+1 {
				t.Errorf("%d schema diagnostics, want at most %d", schemaDiags, maxSchemaIssues+1)
			}
			if moreSeen != tc.more {
				t.Errorf("closing diagnostic counts %d more, want %d", moreSeen, tc.more)
			}
			for _, w := range tc.want {
				found := false
				for _, d := range diags {
					if d.Code == "schema" && d.File == "a.yaml" && d.Line == w.Line && (w.Column == 0 || d.Column == w.Column) && d.Path == w.Path && strings.Contains(d.Message, w.Message) {
						found = true
					}
				}
				if !found {
					t.Errorf("no diagnostic like %+v; got %d: %v", w, len(diags), head(diags))
				}
			}
		})
	}
}

func aliasKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "k%d: v", i)
	}
	return b.String()
}

// TestSchemaErrorsPruned: what CUE is given of a rejected document holds
// no unknown field and at most maxSchemaIssues rejected places, over the
// shapes of TestSchemaErrorsBounded.
func TestSchemaErrorsPruned(t *testing.T) {
	sh := shapes()
	for _, k := range Kinds() {
		if sh[k] == nil {
			t.Errorf("kind %s has no shape", k)
		}
	}
	tests := []struct {
		kind   string
		value  map[string]any
		places int
	}{
		{KindPatchSet, map[string]any{"apiVersion": APIVersion, "kind": KindPatchSet, "name": "p", "kernel": "k", "x": []any{"a"}, "packages": map[string]any{"a": "", "b": []any{}, "c": "1"}}, 3},
		{KindDNS, map[string]any{"apiVersion": APIVersion, "kind": KindDNS, "name": "d", "zones": []any{}, "targets": []any{map[string]any{"name": "t", "kind": "powerdns", "tsig": map[string]any{"nope": 1}, "y": 2}}}, 8},
		// zones empty; the target (CUE judges it), its zones missing;
		// tsig.nope, and tsig's three fields missing; y.
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			d := newDiagnosis(maxSchemaIssues)
			in := d.walk(sh[tc.kind], tc.value, nil)
			if d.reported != tc.places || d.more != 0 {
				t.Errorf("reported %d places (%d more), want %d: unknown %v", d.reported, d.more, tc.places, d.unknown)
			}
			d2 := newDiagnosis(1)
			d2.walk(sh[tc.kind], tc.value, nil)
			if d2.reported != 1 || d2.more != tc.places-1 {
				t.Errorf("cap 1: reported %d, %d more; want 1, %d", d2.reported, d2.more, tc.places-1)
			}
			m := in.(map[string]any)
			if _, ok := m["x"]; ok {
				t.Errorf("unknown field x handed to CUE")
			}
		})
	}
}

// BenchmarkLoadAliasedErrors loads the reproduction at two sizes, a
// quarter and the whole of the value limit: time per value should stay
// flat (the large run about 4 times the small one; it was 15 times, with
// minutes for the large one).
//
//	go test ./schema -run '^$' -bench BenchmarkLoadAliasedErrors
func BenchmarkLoadAliasedErrors(b *testing.B) {
	for _, keys := range []int{2250, 9000} {
		b.Run(fmt.Sprint(keys*22), func(b *testing.B) {
			fsys := fstest.MapFS{"a.yaml": {Data: []byte(aliasedErrors(keys, 21, "v", "x"))}}
			ctx := context.Background()
			for b.Loop() {
				if _, _, err := Load(ctx, fsys, LoadOptions{Workers: 1}); err == nil {
					b.Fatal("loaded")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(keys*22), "ns/value")
		})
	}
}
