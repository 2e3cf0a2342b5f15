package source

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

// TestFSBlobBound: a blob over MaxBlobBytes in a commit is refused by the
// FS (not read into memory), and the loader reports it from its size as a
// site error naming the file and the limit.
func TestFSBlobBound(t *testing.T) {
	big := strings.Repeat("# filler\n", MaxBlobBytes/9+2)
	work := newWorkRepo(t, map[string]string{"site.yaml": "apiVersion: anneal.dev/v1alpha1\n", "nodes/big.yaml": big})
	r := open(t, Options{URL: work})
	fsys, err := r.FS(mustResolve(t, r, ""), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.ReadFile(fsys, "nodes/big.yaml"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadFile of a %d-byte blob = %v, want ErrTooLarge", len(big), err)
	}
	if _, err := fsys.Open("nodes/big.yaml"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Open of a %d-byte blob = %v, want ErrTooLarge", len(big), err)
	}
	_, diags, err := schema.Load(context.Background(), fsys, schema.LoadOptions{})
	var inv *schema.InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Load = %v, want an invalid site", err)
	}
	for _, d := range diags {
		if d.Code == schema.CodeLimitFileBytes && d.File == "nodes/big.yaml" && strings.Contains(d.Message, "(limit)") {
			return
		}
	}
	t.Fatalf("no %s diagnostic for nodes/big.yaml: %v", schema.CodeLimitFileBytes, diags)
}
