package schema

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

// FuzzLoad feeds arbitrary bytes to the loader as one site file. The seed
// corpus (testdata/fuzz/FuzzLoad) holds the whole example site as one
// multi-document file, so mutations reach the schema and the cross-document
// checks, not only the YAML parser.
//
//	go test ./schema -run '^$' -fuzz FuzzLoad -fuzztime 60s
func FuzzLoad(f *testing.F) {
	f.Add([]byte("apiVersion: anneal.dev/v1alpha1\nkind: Site\nname: s\ndomain: example.net\nregions: [{name: r, racks: [{name: a}]}]\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("apiVersion: anneal.dev/v1alpha1\nkind: Site\nname: !!binary c2l0ZQ==\ndomain: !e example.net\nregions: !!seq [{<<: {name: r}, racks: !!set {a: null}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"site.yaml": {Data: data}}
		ctx := context.Background()
		site, diags, err := Load(ctx, fsys, LoadOptions{Workers: 1})
		if err == nil {
			if site == nil || diags.HasErrors() {
				t.Fatalf("nil error but site=%v errors=%d", site, diags.Errors())
			}
			return
		}
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Fatalf("a readable site must fail only as *InvalidError, got %T: %v", err, err)
		}
		if site != nil || !diags.HasErrors() {
			t.Fatalf("invalid site returned a Site or no error diagnostics")
		}
		for _, d := range diags {
			if d.Message == "" || d.Code == "" {
				t.Fatalf("diagnostic without message or code: %+v", d)
			}
			if d.File != "" && d.File != "site.yaml" {
				t.Fatalf("diagnostic names unknown file %q", d.File)
			}
			if d.Line < 0 || d.Column < 0 || d.File != "" && d.Line == 0 && d.Code != "yaml-syntax" {
				t.Fatalf("diagnostic without a position: %+v", d)
			}
			if strings.Contains(d.Message, "panic") {
				t.Fatalf("diagnostic mentions a panic: %+v", d)
			}
		}
		_, again, _ := Load(ctx, fsys, LoadOptions{Workers: 1})
		if !reflect.DeepEqual(diags, again) {
			t.Fatalf("diagnostics differ between two loads of the same input")
		}
	})
}
