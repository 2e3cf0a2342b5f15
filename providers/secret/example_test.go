package secret

import (
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

// TestExampleGrants: examples/lab-secrets.yaml grants every secret the
// example site names, for the destinations it names them for.
func TestExampleGrants(t *testing.T) {
	g, err := LoadGrants("../../examples/lab-secrets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, diags, err := schema.LoadDir(t.Context(), "../../examples/site-repo", schema.LoadOptions{Secrets: g})
	if err != nil {
		t.Fatalf("the example site with the example grants: %v\n%v", err, diags)
	}
	// And a grant that leaves one BMC out is caught.
	narrow, err := ParseGrants("narrow.yaml", []byte("secrets:\n  bmc-password:\n    from: env:X\n    bmc: [10.10.0.0/28]\n  tsig-key:\n    from: env:Y\n    dns: [127.0.0.1]\n  pdns-api-key:\n    from: env:Z\n    dns: [127.0.0.1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, diags, err = schema.LoadDir(t.Context(), "../../examples/site-repo", schema.LoadOptions{Secrets: narrow})
	if err == nil || len(diags) == 0 || diags[0].Code != "secret-not-granted" || diags[0].Line == 0 {
		t.Fatalf("narrow grants: %v %v", err, diags)
	}
}
