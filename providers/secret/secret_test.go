package secret

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, MaxSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TSIG": "from-env", "HUGE": strings.Repeat("x", MaxSize+1)}
	r := Resolver{Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	tests := []struct {
		ref     string
		want    string
		wantErr string
	}{
		{"env:TSIG", "from-env", ""},
		{"env:MISSING", "", "MISSING is not set"},
		{"env:HUGE", "", "longer than"},
		{"file:" + file, "from-file", ""},
		{"file:" + empty, "", "is empty"},
		{"file:" + filepath.Join(dir, "nope"), "", "no such file"},
		// Not an out-of-memory kill, not a hang (issue 11, 2).
		{"file:/dev/zero", "", "not a regular file"},
		{"file:" + fifo, "", "not a regular file"},
		{"file:" + big, "", "longer than"},
		{"hunter2", "", "want env:NAME or file:PATH"},
	}
	for _, tc := range tests {
		got, err := r.Resolve(tc.ref)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.ref, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s: error prints the value: %v", tc.ref, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
}

const grantsYAML = `# the operator's grants
secrets:
  bmc-password:
    from: env:BMC_PW
    bmc: [10.20.0.0/16, "192.0.2.7:9443", bmc1.mgmt.example.net, "2001:db8::/64"]
  tsig-key:
    from: file:%s
    dns: ["127.0.0.1:5353"]
  pdns-api-key:
    from: env:PDNS_KEY
    dns: [pdns.example.net]
`

func testGrants(t *testing.T) (*Grants, string) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "tsig.key")
	if err := os.WriteFile(key, []byte("dHNpZy1rZXk=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := ParseGrants("grants.yaml", []byte(strings.Replace(grantsYAML, "%s", key, 1)))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BMC_PW": "bmc-secret", "PDNS_KEY": "pdns-secret", "API_TOKEN": "daemon-token"}
	g.Env = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return g, key
}

func TestAllowSecret(t *testing.T) {
	g, _ := testGrants(t)
	bmc := func(host string, port int) schema.SecretDest {
		return schema.SecretDest{Use: schema.UseBMC, Host: host, Port: port}
	}
	dns := func(host string, port int) schema.SecretDest {
		return schema.SecretDest{Use: schema.UseDNS, Host: host, Port: port}
	}
	tests := []struct {
		name    string
		dest    schema.SecretDest
		wantErr string
	}{
		{"bmc-password", bmc("10.20.3.4", 0), ""},
		{"bmc-password", bmc("10.20.3.4", 623), ""},
		{"bmc-password", bmc("::ffff:10.20.3.4", 0), ""},
		{"bmc-password", bmc("10.21.0.1", 0), "may not be sent to bmc 10.21.0.1"},
		{"bmc-password", bmc("192.0.2.7", 9443), ""},
		{"bmc-password", bmc("192.0.2.7", 443), "may not be sent"},
		{"bmc-password", bmc("192.0.2.7", 0), "may not be sent"},
		{"bmc-password", bmc("BMC1.mgmt.example.net.", 0), ""},
		{"bmc-password", bmc("bmc2.mgmt.example.net", 0), "may not be sent"},
		{"bmc-password", bmc("2001:db8::42", 443), ""},
		{"bmc-password", bmc("2001:db8:1::42", 443), "may not be sent"},
		// The attack of issue 11: a granted secret aimed elsewhere.
		{"bmc-password", bmc("127.0.0.1", 9443), "may not be sent to bmc 127.0.0.1:9443"},
		{"bmc-password", dns("10.20.3.4", 53), "not granted for dns use"},
		{"tsig-key", dns("127.0.0.1", 5353), ""},
		{"tsig-key", dns("127.0.0.1", 53), "may not be sent"},
		{"tsig-key", bmc("127.0.0.1", 5353), "not granted for bmc use"},
		{"pdns-api-key", dns("pdns.example.net", 8081), ""},
		{"api-token", bmc("10.20.3.4", 0), `secret "api-token" is not granted by grants.yaml`},
	}
	for _, tc := range tests {
		err := g.AllowSecret(tc.name, tc.dest)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s to %s: %v", tc.name, tc.dest, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s to %s: error %v, want %q", tc.name, tc.dest, err, tc.wantErr)
		}
	}
	var none *Grants
	if err := none.AllowSecret("bmc-password", bmc("10.20.3.4", 0)); err == nil || !strings.Contains(err.Error(), "no --secrets file") {
		t.Errorf("nil grants: %v", err)
	}
}

func TestGrantsResolve(t *testing.T) {
	g, _ := testGrants(t)
	ok := schema.SecretDest{Use: schema.UseBMC, Host: "10.20.0.9"}
	v, err := g.Resolve("secret:bmc-password", ok)
	if err != nil || v != "bmc-secret" {
		t.Fatalf("resolve: %q, %v", v, err)
	}
	v, err = g.Resolve("secret:tsig-key", schema.SecretDest{Use: schema.UseDNS, Host: "127.0.0.1", Port: 5353})
	if err != nil || v != "dHNpZy1rZXk=" {
		t.Fatalf("resolve file: %q, %v", v, err)
	}
	for _, tc := range []struct {
		ref     schema.SecretRef
		dest    schema.SecretDest
		wantErr string
	}{
		{"secret:bmc-password", schema.SecretDest{Use: schema.UseBMC, Host: "127.0.0.1", Port: 9443}, "may not be sent"},
		{"env:API_TOKEN", ok, "want secret:NAME"},
		{"file:/etc/passwd", ok, "want secret:NAME"},
		{"secret:nope", ok, "not granted"},
	} {
		v, err := g.Resolve(tc.ref, tc.dest)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || v != "" {
			t.Errorf("%s: %q, %v; want error %q", tc.ref, v, err, tc.wantErr)
		}
	}

	// The daemon's own credentials: the same variable or file cannot be
	// granted, and a value equal to one is refused when resolved.
	if err := g.Forbid("API token", "env:BMC_PW", ""); err == nil || !strings.Contains(err.Error(), "can never be granted") {
		t.Errorf("forbid env: %v", err)
	}
	g, key := testGrants(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(key, link); err != nil {
		t.Fatal(err)
	}
	if err := g.Forbid("netboot key", "file:"+link, ""); err == nil || !strings.Contains(err.Error(), `grants.yaml:6: secret "tsig-key" reads file:`) {
		t.Errorf("forbid file through a symlink: %v", err)
	}
	// A key the daemon has not written yet, its folder reached through a
	// symbolic link: still the same file.
	real := t.TempDir()
	linkDir := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(real, linkDir); err != nil {
		t.Fatal(err)
	}
	g, err = ParseGrants("grants.yaml", []byte("secrets:\n  k:\n    from: file:"+filepath.Join(real, "s.db.netboot-key")+"\n    bmc: [10.0.0.0/8]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Forbid("netboot key", filepath.Join(linkDir, "s.db.netboot-key"), ""); err == nil || !strings.Contains(err.Error(), "can never be granted") {
		t.Errorf("forbid a file not yet written, through a symlinked folder: %v", err)
	}
	g, _ = testGrants(t)
	if err := g.Forbid("API token", "env:API_TOKEN", "bmc-secret"); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Resolve("secret:bmc-password", ok); err == nil || !strings.Contains(err.Error(), "the daemon's own API token") || v != "" {
		t.Errorf("a value equal to the API token: %q, %v", v, err)
	}
}

func TestParseGrantsErrors(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"empty", "", "empty"},
		{"not a mapping", "- a\n", "g.yaml:1: want a mapping"},
		{"unknown top key", "secret: {}\n", `g.yaml:1: unknown field "secret"`},
		{"no from", "secrets:\n  x:\n    bmc: [10.0.0.0/8]\n", `g.yaml:3: secret "x": from is required`},
		{"no destination", "secrets:\n  x:\n    from: env:X\n", "grants no destination"},
		{"bad from", "secrets:\n  x:\n    from: hunter2\n    bmc: [10.0.0.0/8]\n", "g.yaml:3: secret \"x\": from: want env:NAME or file:PATH"},
		{"relative file", "secrets:\n  x:\n    from: file:key\n    bmc: [10.0.0.0/8]\n", "want an absolute path"},
		{"proc", "secrets:\n  x:\n    from: file:/proc/self/environ\n    bmc: [10.0.0.0/8]\n", "/proc is not a place for secrets"},
		{"dev zero", "secrets:\n  x:\n    from: file:/dev/zero\n    bmc: [10.0.0.0/8]\n", "/dev is not a place for secrets"},
		{"bad dest", "secrets:\n  x:\n    from: env:X\n    bmc: [10.0.0.0/8, 'not a host!']\n", `g.yaml:4: secret "x": bmc: "not a host!"`},
		{"cidr with port", "secrets:\n  x:\n    from: env:X\n    bmc: ['10.0.0.0/8:443']\n", "not a CIDR"},
		{"bad cidr", "secrets:\n  x:\n    from: env:X\n    bmc: [10.10.0.0/33]\n", `"10.10.0.0/33": not a CIDR`},
		{"short cidr", "secrets:\n  x:\n    from: env:X\n    bmc: [10.10.0/24]\n", "not a CIDR"},
		{"mistyped ip", "secrets:\n  x:\n    from: env:X\n    bmc: [10.10.0.300]\n", "not an IP address"},
		{"value after env:", "secrets:\n  x:\n    from: \"env:hunter2 VERYSECRET\"\n    bmc: [10.0.0.1]\n", "want env:NAME"},
		{"indentation", "secrets:\n  x:\n    from: env:X\n   bmc: [10.0.0.1]\n", "g.yaml:1: did not find expected key"},
		{"unknown use", "secrets:\n  x:\n    from: env:X\n    ldap: [10.0.0.1]\n", `g.yaml:4: secret "x": unknown field "ldap"`},
		{"bad name", "secrets:\n  -x:\n    from: env:X\n    bmc: [10.0.0.1]\n", `secret name "-x"`},
		{"twice", "secrets:\n  x:\n    from: env:X\n    bmc: [10.0.0.1]\n  x:\n    from: env:Y\n    bmc: [10.0.0.1]\n", "granted twice"},
		{"yaml syntax", "secrets: [\n", "g.yaml"},
	}
	for _, tc := range tests {
		_, err := ParseGrants("g.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error prints a value: %v", tc.name, err)
		}
	}
}

func FuzzParseGrants(f *testing.F) {
	f.Add([]byte(grantsYAML))
	f.Add([]byte("secrets:\n  x:\n    from: env:X\n    bmc: [10.0.0.0/8, '[::1]:443']\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGrants("f.yaml", data)
		if err != nil {
			return
		}
		for _, n := range g.Names() {
			_ = g.AllowSecret(n, schema.SecretDest{Use: schema.UseBMC, Host: "10.0.0.1"})
		}
	})
}

// TestCheckSources: every grant whose value cannot be read is named at
// once, before anything is sent.
func TestCheckSources(t *testing.T) {
	g, err := ParseGrants("g.yaml", []byte("secrets:\n  a:\n    from: env:SET\n    bmc: [10.0.0.1]\n  b:\n    from: env:UNSET\n    bmc: [10.0.0.1]\n  c:\n    from: file:/nonexistent/key\n    dns: [10.0.0.1]\n  d:\n    from: env:TOKEN\n    dns: [10.0.0.1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	g.Env = func(k string) (string, bool) {
		v, ok := map[string]string{"SET": "value-a", "TOKEN": "daemon-token"}[k]
		return v, ok
	}
	if err := g.Forbid("API token", "env:API_TOKEN", "daemon-token"); err != nil {
		t.Fatal(err)
	}
	err = g.CheckSources()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`g.yaml:5: secret "b"`, "UNSET is not set", `g.yaml:8: secret "c"`, "no such file", `g.yaml:11: secret "d": its value is the daemon's own API token`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `"a"`) || strings.Contains(err.Error(), "value-a") || strings.Contains(err.Error(), "daemon-token") {
		t.Errorf("error names a good grant or a value:\n%v", err)
	}
	// Only the secrets a command will send: a readable one, and a name
	// not granted (the grant check's business).
	if err := g.CheckSources("a", "not-granted"); err != nil {
		t.Errorf("CheckSources(a): %v", err)
	}
	if err := g.CheckSources("b"); err == nil || strings.Contains(err.Error(), `"c"`) {
		t.Errorf("CheckSources(b): %v", err)
	}
}
