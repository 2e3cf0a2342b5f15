package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeNotifyFile: serve validates --notify at start and refuses to
// run on a bad file, naming the file, line and field; a notify secret is
// the daemon's own (a grant reading it is refused) and one that cannot be
// read stops the start; no value is printed.
func TestServeNotifyFile(t *testing.T) {
	for _, name := range []string{"ANNEAL_TSIG_SECRET", "ANNEAL_PDNS_API_KEY", "ANNEAL_BMC_PASSWORD"} {
		t.Setenv(name, "c2VjcmV0LWZvci10ZXN0cw==")
	}
	t.Setenv("NOTIFY_TEST_KEY", "notify-key-value-93e1")
	secrets := "../../examples/lab-secrets.yaml"
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown field", "webhooks:\n  - name: ops\n    urll: https://hooks.example.net/x\n", "notify.yaml:3:5: webhooks[0].urll: unknown field"},
		{"http", "webhooks:\n  - name: ops\n    url: http://hooks.example.net/x\n", "notify.yaml:3:10: webhooks[0].url: http to hooks.example.net: want https"},
		{"granted to the site", "webhooks:\n  - name: ops\n    url: https://hooks.example.net/x\n    secret: {env: ANNEAL_TSIG_SECRET}\n",
			`secret "tsig-key" reads env:ANNEAL_TSIG_SECRET, the daemon's own notify webhook "ops" secret: it can never be granted`},
		{"not set", "commitStatus:\n  provider: github\n  repository: example/fleet\n  token: {env: NOTIFY_TEST_UNSET}\n",
			"notify.yaml: notify commit status token: secret env:NOTIFY_TEST_UNSET: environment variable NOTIFY_TEST_UNSET is not set"},
		{"url from a secret", "webhooks:\n  - name: ops\n    url: {env: NOTIFY_TEST_KEY}\n",
			`notify.yaml:2: webhook "ops": url from env:NOTIFY_TEST_KEY: scheme "": want https`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "notify.yaml")
			if err := os.WriteFile(file, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, errs := runCLI(t, "serve", "--site", example, "--secrets", secrets, "--listen", "127.0.0.1:0",
				"--state", filepath.Join(t.TempDir(), "state.db"), "--notify", file)
			if code != exitError {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitError, out, errs)
			}
			if !strings.Contains(errs, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, errs)
			}
			if strings.Contains(out+errs, "notify-key-value-93e1") || strings.Contains(out+errs, "c2VjcmV0LWZvci10ZXN0cw==") {
				t.Errorf("a secret is printed:\n%s%s", out, errs)
			}
		})
	}
}

func TestNotifySite(t *testing.T) {
	for _, tc := range []struct {
		f    siteFlags
		want string
	}{
		{siteFlags{dir: "/srv/sites/east/"}, "east"},
		{siteFlags{dir: "."}, ""},
		{siteFlags{repo: "git@github.com:example/fleet.git"}, "fleet"},
		{siteFlags{repo: "https://git.example.net/infra/fleet/"}, "fleet"},
		{siteFlags{repo: "https://git.example.net/infra/fleet.git", path: "sites/east"}, "fleet-sites-east"},
		{siteFlags{repo: "/srv/git/my site.git"}, "my-site"},
	} {
		if got := notifySite(&tc.f); got != tc.want {
			t.Errorf("notifySite(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}
