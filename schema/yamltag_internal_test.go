package schema

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

// yaml.v3 decodes a !!binary sha256 of 64 hex digits (valid base64) into
// 48 raw bytes; parseDocument refuses the tag before the decoder sees it.
func TestBinaryNeverDecoded(t *testing.T) {
	const src = `apiVersion: anneal.dev/v1alpha1
kind: Image
name: i
version: "1"
arch: amd64
installer: autoinstall
kernel:
  url: http://boot.example.net/vmlinuz
  sha256: !!binary 3b4c0a1e6d1f2c5e8a9b7d6c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
initrd:
  url: http://boot.example.net/initrd
  sha256: 8f7e6d5c4b3a29180f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2
`
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(src), &root); err != nil {
		t.Fatal(err)
	}
	// The hazard: decoded as it is, the checksum is 48 bytes of binary.
	var raw Image
	if err := decodeObject(root.Content[0], &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Kernel.SHA256) != 48 {
		t.Fatalf("yaml.v3 decoded the !!binary sha256 to %d bytes, want 48 (the hazard this test is about)", len(raw.Kernel.SHA256))
	}

	v, err := newValidator()
	if err != nil {
		t.Fatal(err)
	}
	p, diags, _ := parseDocument("images/i.yaml", &root, v, Limits{})
	if p == nil || p.obj != nil || p.dns != nil {
		t.Fatalf("the document was accepted: %+v", p)
	}
	if len(diags) != 1 {
		t.Fatalf("want one diagnostic, got %v", diags)
	}
	const want = "images/i.yaml:9:11: Image/i: kernel.sha256: YAML tag !!binary is not allowed: write the value as plain text [yaml-tag]"
	if got := diags[0].String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
