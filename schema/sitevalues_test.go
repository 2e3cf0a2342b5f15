package schema

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
)

// aliasedImage is a valid Image whose kernelArgs alias one argument n
// times: 2n+15 values (each alias and the argument it stands for) in
// about 4n bytes.
func aliasedImage(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: anneal.dev/v1alpha1\nkind: Image\nname: %s\nversion: \"1\"\narch: amd64\ninstaller: cloud-init\n", name)
	b.WriteString("kernel: {url: \"http://boot.example.net/k\", sha256: " + strings.Repeat("a", 64) + "}\n")
	b.WriteString("initrd: {url: \"http://boot.example.net/i\", sha256: " + strings.Repeat("b", 64) + "}\n")
	b.WriteString("kernelArgs: [&a console=ttyS0")
	for range n {
		b.WriteString(", *a")
	}
	b.WriteString("]\n")
	return b.String()
}

// aliasedSite is a generated site of 100 nodes and files alias files of
// one aliasedImage each (images/alias-NN.yaml), valid under the default
// limits.
func aliasedSite(t testing.TB, files, aliases int) fstest.MapFS {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := gen.Generate(dir, gen.Options{Nodes: 100, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(filepath.Join(dir, p))
		fsys[p] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range files {
		fsys[fmt.Sprintf("images/alias-%02d.yaml", i)] = &fstest.MapFile{Data: []byte(aliasedImage(fmt.Sprintf("alias-%02d", i), aliases))}
	}
	return fsys
}

// fileValues returns each file's values, in sorted file order, parsing
// them one by one.
func fileValues(t testing.TB, fsys fs.FS, l Limits) ([]string, []int64) {
	t.Helper()
	files, err := siteFiles(context.Background(), fsys, DefaultMaxFiles)
	if err != nil {
		t.Fatal(err)
	}
	v, err := newValidator()
	if err != nil {
		t.Fatal(err)
	}
	values := make([]int64, len(files))
	for i, f := range files {
		values[i] = parseFile(context.Background(), fsys, f, v, nil, l.orDefaults(), nil).values
	}
	return files, values
}

// TestSiteValues: a site whose documents, each far under the document
// limit, expand together to more values than the site's limit is invalid
// with one diagnostic naming the first file, in sorted order, at which
// the total crosses it, whatever the number of workers; a file over its
// own limit is read no further.
func TestSiteValues(t *testing.T) {
	fsys := aliasedSite(t, 20, 2000)
	files, values := fileValues(t, fsys, Limits{})
	var total int64
	at := -1 // the 8th alias file
	var before int64
	for i, f := range files {
		if f == "images/alias-07.yaml" {
			at, before = i, total
		}
		total += values[i]
	}
	if at < 0 || values[at] != 2*2000+15 {
		t.Fatalf("alias-07 at %d, %d values; want %d", at, values[at], 2*2000+15)
	}
	t.Logf("%d files, %d values", len(files), total)

	// Valid with the defaults, and with the limit at its exact total.
	for _, l := range []Limits{{}, {SiteValues: int(total)}} {
		if _, diags, err := Load(context.Background(), fsys, LoadOptions{Limits: l}); err != nil {
			t.Fatalf("limits %+v: %v: %v", l, err, head(diags))
		}
	}

	// The limit lowered so that alias-07 crosses it by one value, or by
	// its whole first document.
	for _, limit := range []int64{before + values[at] - 1, before} {
		want := Diagnostic{Severity: SeverityError, Code: CodeLimitSiteValues, File: "images/alias-07.yaml", Line: 1, Column: 1, Object: "Image/alias-07",
			Message: fmt.Sprintf("the site's documents expand to more than %d values (aliases expanded; limit), counting up to this document", limit)}
		for _, workers := range []int{1, 2, 4, 16} {
			for range 3 {
				_, diags, err := Load(context.Background(), fsys, LoadOptions{Workers: workers, Limits: Limits{SiteValues: int(limit)}})
				var inv *InvalidError
				if !errors.As(err, &inv) || !reflect.DeepEqual(diags, Diagnostics{want}) {
					t.Fatalf("limit %d, %d workers: Load = %v, %v; want only %v", limit, workers, err, head(diags), want)
				}
			}
		}
	}
}

// TestFileValues: a file whose documents together expand to more than
// the file limit is reported at the document that crosses it and read no
// further (the broken document after it is not reported).
func TestFileValues(t *testing.T) {
	doc := func(i int) string { return aliasedImage(fmt.Sprint("img", i), 1000) } // 2015 values
	data := "---\n" + doc(0) + "---\n" + doc(1) + "---\n" + doc(2) + "---\n" + patchSetHead + "unknown: 1\n"
	fsys := fstest.MapFS{"images.yaml": {Data: []byte(data)}}
	_, diags, err := Load(context.Background(), fsys, LoadOptions{Limits: Limits{FileValues: 5000}})
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Load = %v, want an *InvalidError", err)
	}
	want := Diagnostics{{Severity: SeverityError, Code: CodeLimitFileValues, File: "images.yaml", Line: 2 + 2*(strings.Count(doc(0), "\n")+1), Column: 1, Object: "Image/img2",
		Message: "file's documents expand to more than 5000 values (aliases expanded; limit), counting up to this one; reading stopped here"}}
	if !reflect.DeepEqual(diags, want) {
		t.Fatalf("diagnostics %v, want %v", diags, want)
	}
}

// TestSiteValuesCached: files reused from the Cache count toward the
// site's limits (values and documents) as if parsed again, and the
// diagnostic points into a cached file.
func TestSiteValuesCached(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range 5 {
		fsys[fmt.Sprintf("b%d.yaml", i)] = &fstest.MapFile{Data: []byte("---\n" + aliasedImage(fmt.Sprint("img", i), 1000))} // 2015 values
	}
	tests := []struct {
		name   string
		limits Limits
		want   Diagnostic
	}{
		{"values", Limits{SiteValues: 5 * 2015}, Diagnostic{Severity: SeverityError, Code: CodeLimitSiteValues, File: "b4.yaml", Line: 2, Column: 1, Object: "Image/img4",
			Message: "the site's documents expand to more than 10075 values (aliases expanded; limit), counting up to this document"}},
		{"documents", Limits{Documents: 5}, Diagnostic{Severity: SeverityError, Code: CodeLimitDocuments, File: "b4.yaml",
			Message: "the site has more than 5 YAML documents (limit), counting up to this file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cache := NewCache()
			site := fstest.MapFS{}
			for k, v := range fsys {
				site[k] = v
			}
			// The first load fills the cache (invalid for want of a Site
			// document, within the limits).
			if _, diags, _ := Load(context.Background(), site, LoadOptions{Cache: cache, Limits: tc.limits}); len(diags) != 1 || diags[0].Code != "missing-site" {
				t.Fatalf("first load: %v", diags)
			}
			if len(cache.files) != 5 {
				t.Fatalf("cache holds %d files, want 5", len(cache.files))
			}
			// A new file, first in order, takes the site over its limit
			// at the last cached file.
			site["a.yaml"] = &fstest.MapFile{Data: []byte("---\n" + aliasedImage("a", 1000))}
			_, diags, _ := Load(context.Background(), site, LoadOptions{Cache: cache, Limits: tc.limits})
			if !reflect.DeepEqual(diags, Diagnostics{tc.want}) {
				t.Fatalf("diagnostics %v, want %v", diags, tc.want)
			}
		})
	}
}

// TestSiteValuesStopEarly: once the site is over its value limit, no
// further file is handed to a worker: of 200 files the loader parses
// about the ones up to the crossing, one more per worker, not all.
func TestSiteValuesStopEarly(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range 200 {
		fsys[fmt.Sprintf("f%03d.yaml", i)] = &fstest.MapFile{Data: []byte(aliasedImage(fmt.Sprint("img", i), 1000))} // 2015 values
	}
	for _, workers := range []int{1, 4} {
		var parsed atomic.Int64
		counting := countOpens{FS: fsys, opens: &parsed}
		_, diags, _ := Load(context.Background(), counting, LoadOptions{Workers: workers, Limits: Limits{SiteValues: 10 * 2015}})
		if len(diags) != 1 || diags[0].Code != CodeLimitSiteValues || diags[0].File != "f010.yaml" {
			t.Fatalf("%d workers: %v", workers, diags)
		}
		// f000 to f010, then at most one file in each worker's hand and
		// one handed out while the limit was crossed.
		if n := parsed.Load(); n > int64(11+workers+1) {
			t.Errorf("%d workers: %d of 200 files read, want at most %d", workers, n, 11+workers+1)
		}
	}
}

// countOpens counts the files opened for reading (not those stat'ed).
type countOpens struct {
	fs.FS
	opens *atomic.Int64
}

func (c countOpens) Stat(name string) (fs.FileInfo, error) { return fs.Stat(c.FS, name) }

func (c countOpens) Open(name string) (fs.File, error) {
	if strings.HasSuffix(name, ".yaml") {
		c.opens.Add(1)
	}
	return c.FS.Open(name)
}

// TestGeneratedSiteValues: the 10,000-node site of bench/sitegen loads
// with the default limits, with ten times its values to spare, and ten
// times its largest file's.
func TestGeneratedSiteValues(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and loads a 10,000-node site")
	}
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := gen.Generate(dir, gen.Options{Nodes: 10000, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if _, diags, err := LoadDir(context.Background(), dir, LoadOptions{}); err != nil {
		t.Fatalf("%v: %v", err, head(diags))
	}
	files, values := fileValues(t, os.DirFS(dir), Limits{})
	var total, largest int64
	for _, v := range values {
		total += v
		largest = max(largest, v)
	}
	t.Logf("%d files, %d values, at most %d a file", len(files), total, largest)
	if total*10 > DefaultMaxSiteValues || largest*10 > DefaultMaxFileValues {
		t.Errorf("%d values (at most %d a file): less than ten times as many left under the limits of %d (%d a file)", total, largest, DefaultMaxSiteValues, DefaultMaxFileValues)
	}
}

// BenchmarkLoadSiteValues loads the worst site under the value limits:
// files of one document each that aliases about 198,000 values into an
// unknown field (the review's 80 kB reproduction, just under the document
// limit), a quarter and nearly the whole of the default site limit, on one
// worker. Time per value should stay flat: the 48-file run about 4 times
// the 12-file one. The 200-file site (40 million values) is over the
// limit: the loader stops handing out files once past it, so it costs
// about what the 48-file site does, not 4 times as much.
//
//	go test ./schema -run '^$' -bench BenchmarkLoadSiteValues
func BenchmarkLoadSiteValues(b *testing.B) {
	doc := []byte(aliasedErrors(9000, 21, "v", "x"))
	for _, files := range []int{12, 48, 200} {
		b.Run(fmt.Sprint(files, "files"), func(b *testing.B) {
			fsys := fstest.MapFS{}
			for i := range files {
				fsys[fmt.Sprintf("f%03d.yaml", i)] = &fstest.MapFile{Data: doc}
			}
			ctx := context.Background()
			var values int64
			for b.Loop() {
				_, diags, err := Load(ctx, fsys, LoadOptions{Workers: 1})
				if err == nil {
					b.Fatal("loaded")
				}
				over := len(diags) == 1 && diags[0].Code == CodeLimitSiteValues
				if over != (files*198_000 > DefaultMaxSiteValues) {
					b.Fatalf("%d files: %v", files, head(diags))
				}
				values = int64(min(files*198_000, DefaultMaxSiteValues))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(values), "ns/value")
		})
	}
}
