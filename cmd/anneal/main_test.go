package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const example = "../../examples/site-repo"

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeSite(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestExitCodes(t *testing.T) {
	broken := writeSite(t, map[string]string{"site.yaml": "apiVersion: anneal.dev/v1alpha1\nkind: Site\nname: Bad_Name\n"})
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderr    string
		notStderr string
	}{
		{"valid example", []string{"validate", "--site", example}, exitOK, `site "lab1" is valid`, "", ""},
		{"invalid site", []string{"validate", "--site", broken}, exitError, "site.yaml:3:7: Site/Bad_Name: name:", "", ""},
		{"missing directory", []string{"validate", "--site", "/nonexistent/site"}, exitError, "", "does not exist", ""},
		{"file not directory", []string{"validate", "--site", example + "/site.yaml"}, exitError, "", "is a file, not a directory", ""},
		{"unknown flag", []string{"validate", "--frob"}, exitUsage, "", "unknown flag", "panic"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", "unknown command", ""},
		{"stray argument", []string{"validate", "extra"}, exitUsage, "", "takes no arguments", ""},
		{"bad output format", []string{"validate", "-o", "xml"}, exitUsage, "", `invalid argument "xml" for "-o, --output" flag: "xml" is not one of text, json, github`, ""},
		{"nodes of example", []string{"nodes", "--site", example}, exitOK, "e1n01", "", ""},
		{"nodes of invalid site", []string{"nodes", "--site", broken}, exitError, "", "invalid site", ""},
		{"schema", []string{"schema"}, exitOK, "#Node:", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errs)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out)
			}
			if !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errs)
			}
			if tc.notStderr != "" && strings.Contains(errs, tc.notStderr) {
				t.Errorf("stderr has %q:\n%s", tc.notStderr, errs)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	secret := "s3cr3t-Hunter2"
	dir := writeSite(t, map[string]string{
		"site.yaml": "apiVersion: anneal.dev/v1alpha1\nkind: Site\nname: s\ndomain: example.net\nregions: [{name: r, racks: [{name: a}]}]\n",
		"net.yaml":  "apiVersion: anneal.dev/v1alpha1\nkind: Network\nname: prov\nrole: provisioning\nprovisioning: true\nvlan: 5000\nipv4: {cidr: 10.0.0.0/24}\n",
		"dns.yaml":  "apiVersion: anneal.dev/v1alpha1\nkind: DNS\nname: dns\nzones: [{name: example.net}]\ntargets:\n- name: b\n  kind: rfc2136\n  server: 127.0.0.1:53\n  zones: [example.net]\n  tsig: {name: k, algorithm: hmac-sha256, secret: " + secret + "}\n",
	})
	for _, format := range []string{"json", "text", "github"} {
		code, out, errs := runCLI(t, "validate", "--site", dir, "-o", format)
		if code != exitError {
			t.Fatalf("%s: exit %d, want %d", format, code, exitError)
		}
		if strings.Contains(out+errs, secret) {
			t.Fatalf("%s: output prints the secret:\n%s%s", format, out, errs)
		}
		if format != "json" {
			continue
		}
		var rep validateReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("json output does not parse: %v\n%s", err, out)
		}
		if rep.Valid || rep.Errors != 2 || len(rep.Diagnostics) != 2 {
			t.Fatalf("want 2 errors, got %+v", rep)
		}
		got := map[string]bool{}
		for _, d := range rep.Diagnostics {
			got[d.File+":"+d.Path] = true
			if d.Line == 0 || d.Column == 0 || d.Code == "" {
				t.Errorf("diagnostic lacks position or code: %+v", d)
			}
		}
		if !got["net.yaml:vlan"] || !got["dns.yaml:targets[0].tsig.secret"] {
			t.Errorf("diagnostics miss the vlan or the secret: %+v", rep.Diagnostics)
		}
	}
}

func TestValidateJSONValid(t *testing.T) {
	code, out, _ := runCLI(t, "validate", "--site", example, "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var rep validateReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Valid || rep.Site != "lab1" || rep.Summary == nil || rep.Summary.Nodes < 12 || rep.Diagnostics == nil {
		t.Fatalf("unexpected report: %+v", rep)
	}
}
