package schema

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
)

// bigDNS is a DNS document of n A records (4n values and a few more),
// valid on its own.
func bigDNS(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: anneal.dev/v1alpha1\nkind: DNS\nname: %s\nzones:\n  - name: example.org\nrecords:\n", name)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: h%05d.example.org, type: A, value: 10.%d.%d.%d}\n", i, i>>16&255, i>>8&255, i&255)
	}
	return b.String()
}

// manyDNSSite is a generated site (its own DNS document in dns.yaml) and
// extra DNS documents of records records each, in files sorted after it.
func manyDNSSite(t testing.TB, extra, records int) fstest.MapFS {
	fsys := aliasedSite(t, 0, 0)
	if _, ok := fsys["dns.yaml"]; !ok {
		t.Fatal("the generated site has no dns.yaml")
	}
	for i := range extra {
		fsys[fmt.Sprintf("zz-dns/%02d.yaml", i)] = &fstest.MapFile{Data: []byte(bigDNS(fmt.Sprintf("extra-%02d", i), records))}
	}
	return fsys
}

// TestManyDNSDocuments: a site of 40 large DNS documents (about 40,000
// values each) besides its own has CUE check only its first DNS document;
// every other is a duplicate-dns error, and a warm load checks none.
func TestManyDNSDocuments(t *testing.T) {
	records := 10_000
	if testing.Short() {
		records = 1_000
	}
	testManyDNS(t, 40, records, []int{0})
}

// TestManyDNSWorkers: which DNS document is the first, and the
// duplicate-dns errors, do not depend on the workers' timing.
func TestManyDNSWorkers(t *testing.T) {
	testManyDNS(t, 40, 50, []int{1, 3, 16, 64})
}

func testManyDNS(t *testing.T, extra, records int, workerCounts []int) {
	fsys := manyDNSSite(t, extra, records)
	for _, workers := range workerCounts {
		var cueDNS atomic.Int64
		opts := LoadOptions{Workers: workers, Cache: NewCache(), onCUE: func(kind string) {
			if kind == KindDNS {
				cueDNS.Add(1)
			}
		}}
		for _, pass := range []string{"cold", "warm"} {
			cueDNS.Store(0)
			_, diags, err := Load(context.Background(), fsys, opts)
			if err == nil {
				t.Fatalf("%d workers, %s: no error", workers, pass)
			}
			var dups []Diagnostic
			for _, d := range diags {
				if d.Code == "duplicate-dns" {
					dups = append(dups, d)
				} else if d.Severity == SeverityError && !strings.HasPrefix(d.File, "zz-dns/") {
					t.Errorf("%d workers, %s: unexpected %v", workers, pass, d)
				}
			}
			if len(dups) != extra {
				t.Fatalf("%d workers, %s: %d duplicate-dns, want %d: %v", workers, pass, len(dups), extra, diags)
			}
			for i, d := range dups {
				want := Diagnostic{Severity: SeverityError, Code: "duplicate-dns", File: fmt.Sprintf("zz-dns/%02d.yaml", i), Line: 1, Column: 1, Object: fmt.Sprintf("DNS/extra-%02d", i)}
				msg := d.Message
				d.Message = ""
				if d != want || !strings.HasPrefix(msg, "a second DNS document; the first is DNS/") || !strings.Contains(msg, " (dns.yaml:") {
					t.Errorf("%d workers, %s: got %v (%s), want %v", workers, pass, d, msg, want)
				}
			}
			want := int64(1)
			if pass == "warm" {
				want = 0
			}
			if n := cueDNS.Load(); n != want {
				t.Errorf("%d workers, %s: CUE checked %d DNS documents, want %d", workers, pass, n, want)
			}
		}
	}
}

// TestManyDNSFirstRejected: when the first DNS document is rejected, it is
// still the one: the others are duplicates, not checked.
func TestManyDNSFirstRejected(t *testing.T) {
	fsys := manyDNSSite(t, 3, 10)
	fsys["dns.yaml"] = &fstest.MapFile{Data: []byte("apiVersion: anneal.dev/v1alpha1\nkind: DNS\nname: dns\nzones: 5\n")}
	var cueDNS atomic.Int64
	_, diags, _ := Load(context.Background(), fsys, LoadOptions{onCUE: func(kind string) {
		if kind == KindDNS {
			cueDNS.Add(1)
		}
	}})
	var codes []string
	for _, d := range diags {
		if strings.HasPrefix(d.File, "zz-dns/") || d.File == "dns.yaml" {
			codes = append(codes, d.File+" "+d.Code)
		}
	}
	got := strings.Join(codes, ", ")
	want := "dns.yaml schema, zz-dns/00.yaml duplicate-dns, zz-dns/01.yaml duplicate-dns, zz-dns/02.yaml duplicate-dns"
	if got != want {
		t.Errorf("diagnostics: %s\nwant %s\n%v", got, want, diags)
	}
	if n := cueDNS.Load(); n != 1 {
		t.Errorf("CUE checked %d DNS documents, want 1", n)
	}
}

// BenchmarkLoadManyDNS loads a generated site with 0, 1 and 40 extra DNS
// documents of 10,000 records (about 40,000 values) each: only the
// generated one is checked by CUE, so the three take about as long.
func BenchmarkLoadManyDNS(b *testing.B) {
	for _, extra := range []int{0, 1, 40} {
		b.Run(fmt.Sprint(extra), func(b *testing.B) {
			fsys := manyDNSSite(b, extra, 10_000)
			for b.Loop() {
				if _, _, err := Load(context.Background(), fsys, LoadOptions{}); (err == nil) != (extra == 0) {
					b.Fatal(err)
				}
			}
		})
	}
}
