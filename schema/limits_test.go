package schema

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"
)

const patchSetHead = "apiVersion: anneal.dev/v1alpha1\nkind: PatchSet\nname: p\nkernel: k\n"

// widePatchSet is a PatchSet with n packages: a valid document with one
// mapping of n keys.
func widePatchSet(n int) []byte {
	var b strings.Builder
	b.WriteString(patchSetHead + "packages:\n")
	for i := range n {
		fmt.Fprintf(&b, "  pkg%d: \"1.%d\"\n", i, i)
	}
	return []byte(b.String())
}

func longList(n int) []byte {
	var b strings.Builder
	b.WriteString(patchSetHead + "packages: {a: \"1\"}\nextra:\n")
	for range n {
		b.WriteString("- x\n")
	}
	return []byte(b.String())
}

func manyDocs(n int) []byte {
	return []byte(strings.Repeat("---\n"+patchSetHead, n))
}

// TestLimits: input over a limit is an error naming the file, the place,
// the field and the limit, and nothing is loaded.
func TestLimits(t *testing.T) {
	tests := []struct {
		name   string
		fsys   fstest.MapFS
		limits Limits
		want   Diagnostic // File, Line, Path, Code; Message is a substring
	}{
		{"keys per mapping, default", fstest.MapFS{"patches/big.yaml": {Data: widePatchSet(DefaultMaxKeys + 1)}}, Limits{},
			Diagnostic{File: "patches/big.yaml", Line: 6, Path: "packages", Code: CodeLimitKeys, Message: `mapping "packages" has 10001 keys, more than 10000 (limit)`}},
		{"keys per mapping, top of the document", fstest.MapFS{"a.yaml": {Data: []byte(patchSetHead + "x1: 1\nx2: 2\n")}}, Limits{Keys: 5},
			Diagnostic{File: "a.yaml", Line: 1, Code: CodeLimitKeys, Message: `mapping at the top of the document has 6 keys, more than 5 (limit)`}},
		{"list length, default", fstest.MapFS{"a.yaml": {Data: longList(DefaultMaxSequence + 1)}}, Limits{},
			Diagnostic{File: "a.yaml", Line: 7, Path: "extra", Code: CodeLimitSequence, Message: `list "extra" has 100001 elements, more than 100000 (limit)`}},
		{"documents in one file, default", fstest.MapFS{"a.yaml": {Data: []byte(strings.Repeat("--- ~\n", DefaultMaxDocuments+1))}}, Limits{},
			Diagnostic{File: "a.yaml", Line: DefaultMaxDocuments + 1, Code: CodeLimitDocuments, Message: "file has more than 200000 YAML documents (limit)"}},
		{"documents in the site", fstest.MapFS{"a.yaml": {Data: manyDocs(3)}, "b.yaml": {Data: manyDocs(3)}}, Limits{Documents: 5},
			Diagnostic{File: "b.yaml", Code: CodeLimitDocuments, Message: "the site has more than 5 YAML documents (limit)"}},
		{"files", fstest.MapFS{"a.yaml": {}, "b.yaml": {}, "c/d.yml": {}}, Limits{Files: 2},
			Diagnostic{Code: CodeLimitFiles, Message: "more than 2 YAML files (limit); c/d.yml is one too many"}},
		{"file size", fstest.MapFS{"a.yaml": {Data: []byte(patchSetHead)}, "nodes/big.yaml": {Data: make([]byte, 101)}}, Limits{FileBytes: 100},
			Diagnostic{File: "nodes/big.yaml", Code: CodeLimitFileBytes, Message: "file is 101 bytes, more than 100 (limit); it was not read"}},
		{"site size", fstest.MapFS{"a.yaml": {Data: make([]byte, 60)}, "b.yaml": {Data: make([]byte, 60)}}, Limits{SiteBytes: 100},
			Diagnostic{Code: CodeLimitSiteBytes, Message: "120 bytes together, more than 100 (limit)"}},
		{"depth", fstest.MapFS{"a.yaml": {Data: []byte(patchSetHead + "x: " + strings.Repeat("[", 70) + strings.Repeat("]", 70) + "\n")}}, Limits{},
			Diagnostic{File: "a.yaml", Line: 5, Path: "x" + strings.Repeat("[0]", 64), Code: CodeLimitDepth, Message: "nested more than 64 levels deep"}},
		{"alias bomb", fstest.MapFS{"a.yaml": {Data: []byte(patchSetHead + aliasBomb)}}, Limits{},
			Diagnostic{File: "a.yaml", Code: CodeLimitValues, Message: "document expands to more than 200000 values"}},
		{"alias cycle", fstest.MapFS{"a.yaml": {Data: []byte(patchSetHead + "x: &a [*a]\n")}}, Limits{},
			Diagnostic{File: "a.yaml", Line: 5, Code: CodeLimitDepth, Message: "or an alias cycle"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site, diags, err := Load(context.Background(), tc.fsys, LoadOptions{Limits: tc.limits, Workers: 2})
			var inv *InvalidError
			if !errors.As(err, &inv) || site != nil {
				t.Fatalf("Load = %v, %v; want an *InvalidError and no site", site, err)
			}
			for _, d := range diags {
				if d.Code == tc.want.Code && d.File == tc.want.File && (tc.want.Path == "" || d.Path == tc.want.Path) && strings.Contains(d.Message, tc.want.Message) &&
					(tc.want.Line == 0 || d.Line == tc.want.Line) {
					return
				}
			}
			t.Fatalf("no diagnostic like %+v; got %d: %v", tc.want, len(diags), head(diags))
		})
	}
}

const aliasBomb = `a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
`

func head(d Diagnostics) Diagnostics {
	return d[:min(len(d), 3)]
}

// TestWideMappingBelowLimit: a mapping of many keys within the limit
// decodes whole (entry by entry, see decode.go), merge keys included.
func TestWideMappingBelowLimit(t *testing.T) {
	doc := string(widePatchSet(5000)) + "---\n" + patchSetHead[:len(patchSetHead)-len("name: p\nkernel: k\n")] +
		"name: q\nkernel: k\npackages:\n  <<: {pkg0: \"9\", extra: \"2\"}\n" + strings.TrimPrefix(string(widePatchSet(100)), patchSetHead+"packages:\n")
	fsys := fstest.MapFS{"a.yaml": {Data: []byte(doc)}}
	_, diags, _ := Load(context.Background(), fsys, LoadOptions{})
	for _, d := range diags {
		if d.Code != "missing-site" {
			t.Fatalf("unexpected diagnostic: %v", d)
		}
	}
	// Decode directly: Load returns no site without a Site document.
	docs := parseFile(context.Background(), fsys, "a.yaml", mustValidator(t), nil, DefaultLimits(), nil).docs
	if len(docs) != 2 {
		t.Fatalf("parsed %d documents, want 2", len(docs))
	}
	p, q := docs[0].obj.(*PatchSet), docs[1].obj.(*PatchSet)
	if len(p.Packages) != 5000 || p.Packages["pkg4999"] != "1.4999" {
		t.Fatalf("wide mapping decoded to %d packages, pkg4999=%q", len(p.Packages), p.Packages["pkg4999"])
	}
	if len(q.Packages) != 101 || q.Packages["pkg0"] != "1.0" || q.Packages["extra"] != "2" {
		t.Fatalf("merged mapping decoded to %d packages, pkg0=%q extra=%q", len(q.Packages), q.Packages["pkg0"], q.Packages["extra"])
	}
}

func mustValidator(t *testing.T) *validator {
	t.Helper()
	v, err := newValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// countingFS serves one file of size bytes whose Stat may say otherwise,
// and counts the bytes read from it.
type countingFS struct {
	statSize, size int64
	read           atomic.Int64
}

func (c *countingFS) Open(name string) (fs.File, error) {
	switch name {
	case ".":
		return &dirFile{}, nil
	case "big.yaml":
		return &countingFile{fs: c, left: c.size}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

type countingFile struct {
	fs   *countingFS
	left int64
}

func (f *countingFile) Stat() (fs.FileInfo, error) {
	return fstest.MapFS{"big.yaml": {Data: make([]byte, f.fs.statSize)}}.Stat("big.yaml")
}
func (f *countingFile) Close() error { return nil }
func (f *countingFile) Read(p []byte) (int, error) {
	if f.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), f.left))
	for i := range p[:n] {
		p[i] = '#'
	}
	f.left -= int64(n)
	f.fs.read.Add(int64(n))
	return n, nil
}

type dirFile struct{}

func (dirFile) Stat() (fs.FileInfo, error) { return fstest.MapFS{"d/x": {}}.Stat("d") }
func (dirFile) Read([]byte) (int, error)   { return 0, io.EOF }
func (dirFile) Close() error               { return nil }
func (dirFile) ReadDir(int) ([]fs.DirEntry, error) {
	return fs.ReadDir(fstest.MapFS{"big.yaml": {}}, ".")
}

// TestFileSizeNotReadWhole: a file over the limit is refused from its size
// without reading it; a file whose size is misreported is read only up to
// the limit.
func TestFileSizeNotReadWhole(t *testing.T) {
	const limit, size = 1 << 20, 8 << 20
	for _, statSize := range []int64{size, 10} {
		t.Run(fmt.Sprint("stat ", statSize), func(t *testing.T) {
			c := &countingFS{statSize: statSize, size: size}
			_, diags, err := Load(context.Background(), c, LoadOptions{Limits: Limits{FileBytes: limit}})
			var inv *InvalidError
			if !errors.As(err, &inv) || len(diags) != 1 || diags[0].Code != CodeLimitFileBytes || diags[0].File != "big.yaml" {
				t.Fatalf("Load = %v %v; want one %s diagnostic", diags, err, CodeLimitFileBytes)
			}
			if r := c.read.Load(); r > limit+1 {
				t.Fatalf("read %d bytes of a file over the limit of %d", r, limit)
			}
		})
	}
}

// TestParseFileStopsOnCancel: a done context stops a file between its
// documents, not after the last one.
func TestParseFileStopsOnCancel(t *testing.T) {
	fsys := fstest.MapFS{"a.yaml": {Data: manyDocs(1000)}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := parseFile(ctx, fsys, "a.yaml", mustValidator(t), nil, DefaultLimits(), nil)
	if len(res.docs)+len(res.rejected) > 0 {
		t.Fatalf("parsed %d documents after the context was done", len(res.docs)+len(res.rejected))
	}
	_, _, err := Load(ctx, fsys, LoadOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a done context = %v, want context.Canceled", err)
	}
}

var _ = time.Second
