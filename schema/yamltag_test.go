package schema_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

const (
	imageFile  = "images/ubuntu-22.04.yaml"
	kernelSum  = "3b4c0a1e6d1f2c5e8a9b7d6c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f"
	initrdSum  = "8f7e6d5c4b3a29180f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2"
	kernelLine = "kernel:\n  url: http://boot.example.net/images/ubuntu-22.04.4/vmlinuz\n"
	initrdURL  = "  url: http://boot.example.net/images/ubuntu-22.04.4/initrd\n"
	kernelArgs = "kernelArgs:\n  - console=ttyS0,115200n8\n  - ip=dhcp\n"
)

// An explicit YAML tag other than the core schema's is refused where it is
// written (yaml.v3 decodes !!binary into raw bytes: a 64-character sha256
// would become 48 bytes), and the document never reaches the schema check
// or the model.
func TestYAMLTagsRefused(t *testing.T) {
	tests := []struct {
		name         string
		edits        []edit
		line, column int
		path, msg    string
	}{
		{"binary", []edit{{imageFile, "sha256: " + kernelSum, "sha256: !!binary " + kernelSum}},
			9, 11, "kernel.sha256", "YAML tag !!binary is not allowed: write the value as plain text"},
		{"binary, verbatim", []edit{{imageFile, "sha256: " + kernelSum, "sha256: !<tag:yaml.org,2002:binary> " + kernelSum}},
			9, 11, "kernel.sha256", "YAML tag !!binary is not allowed: write the value as plain text"},
		{"binary, through an alias, once", []edit{
			{imageFile, "sha256: " + kernelSum, "sha256: &sum !!binary " + kernelSum},
			{imageFile, "sha256: " + initrdSum, "sha256: *sum"}},
			9, 11, "kernel.sha256", "YAML tag !!binary is not allowed"},
		{"timestamp", []edit{{imageFile, "version: 22.04.4\n", "version: !!timestamp 2024-04-01\n"}},
			4, 10, "version", "YAML tag !!timestamp is not allowed: write the value as plain text"},
		{"merge on a value", []edit{{imageFile, "installer: autoinstall\n", "installer: !!merge autoinstall\n"}},
			6, 12, "installer", "YAML tag !!merge is not allowed: write the value as plain text"},
		{"local tag", []edit{{imageFile, "installer: autoinstall\n", "installer: !custom autoinstall\n"}},
			6, 12, "installer", "YAML tag !custom is not allowed: write the value as plain text"},
		{"verbatim tag", []edit{{imageFile, "installer: autoinstall\n", "installer: !<tag:example.com,2000:installer> autoinstall\n"}},
			6, 12, "installer", "YAML tag !<tag:example.com,2000:installer> is not allowed"},
		{"tag handle of a %TAG directive", []edit{
			{imageFile, "apiVersion: anneal.dev/v1alpha1\nkind: Image\nname: ubuntu-22.04\n", "%TAG !e! tag:example.com,2000:\n---\napiVersion: anneal.dev/v1alpha1\nkind: Image\nname: ubuntu-22.04\n"},
			{imageFile, "installer: autoinstall\n", "installer: !e!kind autoinstall\n"}},
			8, 12, "installer", "YAML tag !<tag:example.com,2000:kind> is not allowed"},
		{"set on a mapping", []edit{{imageFile, kernelLine, strings.Replace(kernelLine, "kernel:", "kernel: !!set", 1)}},
			7, 9, "kernel", "YAML tag !!set is not allowed: write the mapping without a tag"},
		{"omap on a list", []edit{{imageFile, kernelArgs, strings.Replace(kernelArgs, "kernelArgs:", "kernelArgs: !!omap", 1)}},
			16, 13, "kernelArgs", "YAML tag !!omap is not allowed: write the list without a tag"},
		{"pairs on a list", []edit{{imageFile, kernelArgs, strings.Replace(kernelArgs, "kernelArgs:", "kernelArgs: !!pairs", 1)}},
			16, 13, "kernelArgs", "YAML tag !!pairs is not allowed: write the list without a tag"},
		{"seq on a mapping", []edit{{imageFile, kernelLine, strings.Replace(kernelLine, "kernel:", "kernel: !!seq", 1)}},
			7, 9, "kernel", "YAML tag !!seq is not allowed on a mapping: write the mapping without a tag"},
		{"map on a value", []edit{{imageFile, "sha256: " + kernelSum, "sha256: !!map " + kernelSum}},
			9, 11, "kernel.sha256", "YAML tag !!map is not allowed on a value"},
		{"tag on a key", []edit{{imageFile, "  sha256: " + kernelSum, "  !custom sha256: " + kernelSum}},
			9, 3, "kernel.sha256", "YAML tag !custom is not allowed"},
		{"binary key", []edit{{imageFile, "  sha256: " + kernelSum, "  !!binary c2hhMjU2: " + kernelSum}},
			9, 3, "kernel.c2hhMjU2", "YAML tag !!binary is not allowed"},
		{"merge tag on the merge key", []edit{{imageFile, kernelLine, "kernel:\n  !!merge <<: {size: 1}\n  url: http://boot.example.net/images/ubuntu-22.04.4/vmlinuz\n"}},
			8, 3, "kernel.<<", "YAML tag !!merge is not allowed: write the merge key as a plain <<"},
		{"tag on the document", []edit{{imageFile, "apiVersion: anneal.dev/v1alpha1\nkind: Image\nname: ubuntu-22.04\n", "--- !image\napiVersion: anneal.dev/v1alpha1\nkind: Image\nname: ubuntu-22.04\n"}},
			1, 5, "", "YAML tag !image is not allowed: write the mapping without a tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := exampleFS(t, tt.edits...)
			site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.Load(context.Background(), fsys, schema.LoadOptions{})
			})
			var inv *schema.InvalidError
			if site != nil || !errors.As(err, &inv) {
				t.Fatalf("loaded (site %v, error %v); want the tag refused:\n%s", site != nil, err, listDiags(diags))
			}
			var tagged []schema.Diagnostic
			for _, d := range diags {
				switch {
				case d.Code == schema.CodeYAMLTag:
					tagged = append(tagged, d)
				case d.Severity == schema.SeverityError:
					// The document stops at the converter: neither CUE
					// nor the decoder (nor a check of the model) sees it.
					t.Errorf("unexpected error beside the tag: %s", d)
				}
			}
			if len(tagged) != 1 {
				t.Fatalf("want one %s diagnostic, got %d:\n%s", schema.CodeYAMLTag, len(tagged), listDiags(diags))
			}
			d := tagged[0]
			if d.File != imageFile || d.Line != tt.line || d.Column != tt.column || d.Object != "Image/ubuntu-22.04" || d.Path != tt.path || !strings.Contains(d.Message, tt.msg) {
				t.Errorf("got  %s\nwant %s:%d:%d: Image/ubuntu-22.04: %s: %s", d, imageFile, tt.line, tt.column, tt.path, tt.msg)
			}
		})
	}
}

// The core schema's tags, untagged dates and merge keys still load, each
// value as written.
func TestYAMLTagsAllowed(t *testing.T) {
	tests := []struct {
		name  string
		edits []edit
		check func(*schema.Image) string // "" when the image is as expected
	}{
		{"str on text", []edit{{imageFile, "sha256: " + kernelSum, "sha256: !!str " + kernelSum}},
			func(im *schema.Image) string { return want(im.Kernel.SHA256, kernelSum) }},
		{"str on a number", []edit{{imageFile, "version: 22.04.4\n", "version: !!str 22.04\n"}},
			func(im *schema.Image) string { return want(im.Version, "22.04") }},
		{"str, verbatim", []edit{{imageFile, "installer: autoinstall\n", "installer: !<tag:yaml.org,2002:str> autoinstall\n"}},
			func(im *schema.Image) string { return want(string(im.Installer), "autoinstall") }},
		{"int", []edit{{imageFile, "  sha256: " + kernelSum + "\n", "  sha256: " + kernelSum + "\n  size: !!int 1024\n"}},
			func(im *schema.Image) string { return want(im.Kernel.Size, 1024) }},
		{"map and seq", []edit{
			{imageFile, kernelLine, strings.Replace(kernelLine, "kernel:", "kernel: !!map", 1)},
			{imageFile, kernelArgs, strings.Replace(kernelArgs, "kernelArgs:", "kernelArgs: !!seq", 1)}},
			func(im *schema.Image) string {
				return want(im.Kernel.SHA256+" "+strings.Join(im.KernelArgs, " "), kernelSum+" console=ttyS0,115200n8 ip=dhcp")
			}},
		{"untagged date", []edit{{imageFile, "version: 22.04.4\n", "version: 2024-04-01\n"}},
			func(im *schema.Image) string { return want(im.Version, "2024-04-01") }},
		{"merge key", []edit{
			{imageFile, kernelLine, strings.Replace(kernelLine, "kernel:", "kernel: &k", 1)},
			{imageFile, initrdURL + "  sha256: " + initrdSum + "\n", "  <<: *k\n" + initrdURL}},
			func(im *schema.Image) string {
				return want(im.Initrd.SHA256+" "+im.Initrd.URL, kernelSum+" "+strings.TrimSpace(strings.TrimPrefix(initrdURL, "  url:")))
			}},
		{"merge key, list", []edit{
			{imageFile, kernelLine, strings.Replace(kernelLine, "kernel:", "kernel: &k", 1)},
			{imageFile, initrdURL + "  sha256: " + initrdSum + "\n", "  <<: [*k]\n" + initrdURL}},
			func(im *schema.Image) string { return want(im.Initrd.SHA256, kernelSum) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := exampleFS(t, tt.edits...)
			site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.Load(context.Background(), fsys, schema.LoadOptions{})
			})
			if err != nil {
				t.Fatalf("%v\n%s", err, listDiags(diags))
			}
			i := slices.IndexFunc(site.Images, func(im *schema.Image) bool { return im.Name == "ubuntu-22.04" })
			if i < 0 {
				t.Fatal("no image ubuntu-22.04")
			}
			if msg := tt.check(site.Images[i]); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func want[T comparable](got, want T) string {
	if got != want {
		return fmt.Sprintf("got %q, want %q", fmt.Sprint(got), fmt.Sprint(want))
	}
	return ""
}
