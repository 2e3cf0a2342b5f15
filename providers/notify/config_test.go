package notify

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
)

func TestParse(t *testing.T) {
	c, err := Parse("notify.yaml", []byte(`
site: east
webhooks:
  - name: ops
    url: https://hooks.example.net/anneal?x=1
    kinds: [revision.applied, apply.failed, apply.failed]
    secret: {env: HOOK_KEY}
    timeout: 5s
  - name: chat
    url: {file: /etc/anneal/slack-url}
    format: slack
  - name: local
    url: http://127.0.0.1:9000/hook
    secret: file:/etc/anneal/hook.key
commitStatus:
  provider: github
  repository: example/fleet
  token: {env: GITHUB_TOKEN}
  targetURL: https://anneal.example.net/
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != "east" || len(c.Webhooks) != 3 || c.CommitStatus == nil {
		t.Fatalf("config %+v", c)
	}
	ops, chat, local := c.Webhooks[0], c.Webhooks[1], c.Webhooks[2]
	if ops.Format != FormatJSON || ops.Timeout != 5*time.Second || ops.Secret != "env:HOOK_KEY" ||
		!slices.Equal(ops.Kinds, []events.Kind{events.Applied, events.ApplyFailed}) {
		t.Errorf("ops %+v", ops)
	}
	if chat.Format != FormatSlack || chat.URL != "" || chat.URLRef != "file:/etc/anneal/slack-url" || chat.Kinds != nil || chat.Timeout != DefaultTimeout {
		t.Errorf("chat %+v", chat)
	}
	if local.Secret != "file:/etc/anneal/hook.key" {
		t.Errorf("local %+v", local)
	}
	if s := c.CommitStatus; s.URL != "https://api.github.com" || s.Token != "env:GITHUB_TOKEN" || s.Context != "" {
		t.Errorf("status %+v", s)
	}
	want := []Secret{{`notify webhook "ops" secret`, "env:HOOK_KEY"}, {`notify webhook "chat" url`, "file:/etc/anneal/slack-url"},
		{`notify webhook "local" secret`, "file:/etc/anneal/hook.key"}, {"notify commit status token", "env:GITHUB_TOKEN"}}
	if got := c.Secrets(); !slices.Equal(got, want) {
		t.Errorf("secrets %v, want %v", got, want)
	}

	// JSON is accepted too, tab-indented or not.
	j, err := Parse("notify.json", []byte("{\n\t\"commitStatus\": {\n\t\t\"provider\": \"gitlab\", \"url\": \"https://gitlab.example.net/\",\n\t\t\"project\": \"infra/sites/east\", \"token\": {\"file\": \"/etc/anneal/gl\"}}\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := j.CommitStatus; s.Provider != GitLab || s.URL != "https://gitlab.example.net" || s.Project != "infra/sites/east" {
		t.Errorf("gitlab %+v", s)
	}
}

func TestParseErrors(t *testing.T) {
	const hook = "webhooks:\n  - name: a\n"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "notify.yaml: empty"},
		{"no sink", "site: east\n", "notify.yaml:1:1: configures no webhook and no commitStatus"},
		{"not a mapping", "- a\n", "notify.yaml:1:1: want a mapping"},
		{"syntax", "webhooks: [\n", "notify.yaml:1: did not find expected node content"},
		{"two documents", hook + "    url: https://x.example\n---\nsite: b\n", "notify.yaml: want one document"},
		{"unknown top field", "hooks: []\n", "notify.yaml:1:1: hooks: unknown field (want site, webhooks, commitStatus)"},
		{"unknown webhook field", hook + "    url: https://x.example\n    retries: 3\n", "notify.yaml:4:5: webhooks[0].retries: unknown field"},
		{"twice", hook + "    url: https://x.example\n    url: https://y.example\n", "notify.yaml:4:5: webhooks[0].url: given twice"},
		{"no name", "webhooks:\n  - url: https://x.example\n", "notify.yaml:2:5: webhooks[0].name: required"},
		{"bad name", "webhooks:\n  - name: a b\n    url: https://x.example\n", "notify.yaml:2:11: webhooks[0].name: want letters"},
		{"same name", hook + "    url: https://x.example\n  - name: a\n    url: https://y.example\n", "notify.yaml:4:5: webhooks[1].name: webhook \"a\" is named twice"},
		{"no url", hook, "notify.yaml:2:5: webhooks[0].url: required"},
		{"http", hook + "    url: http://hooks.example.net/x\n", "notify.yaml:3:10: webhooks[0].url: http to hooks.example.net: want https"},
		{"ftp", hook + "    url: ftp://127.0.0.1/x\n", "notify.yaml:3:10: webhooks[0].url: scheme \"ftp\": want https"},
		{"relative url", hook + "    url: /hook\n", "notify.yaml:3:10: webhooks[0].url: scheme \"\""},
		{"credentials in url", hook + "    url: https://u:hunter2@x.example/\n", "notify.yaml:3:10: webhooks[0].url: credentials in the URL"},
		{"fragment", hook + "    url: https://x.example/#a\n", "webhooks[0].url: a fragment"},
		{"url list", hook + "    url: [a]\n", "notify.yaml:3:10: webhooks[0].url: want a string"},
		{"unknown kind", hook + "    url: https://x.example\n    kinds: [revision.applied, node.exploded]\n", "notify.yaml:4:31: webhooks[0].kinds[1]: unknown event kind \"node.exploded\""},
		{"empty kinds", hook + "    url: https://x.example\n    kinds: []\n", "notify.yaml:4:12: webhooks[0].kinds: want a list of event kinds"},
		{"format", hook + "    url: https://x.example\n    format: xml\n", "notify.yaml:4:13: webhooks[0].format: unknown format \"xml\""},
		{"secret inline", hook + "    url: https://x.example\n    secret: hunter2\n", "notify.yaml:4:13: webhooks[0].secret: want {env: NAME} or {file: /PATH}"},
		{"secret both", hook + "    url: https://x.example\n    secret: {env: A, file: /b}\n", "webhooks[0].secret: give env or file, not both"},
		{"secret relative", hook + "    url: https://x.example\n    secret: {file: key}\n", "notify.yaml:4:13: webhooks[0].secret: file: want an absolute path"},
		{"secret proc", hook + "    url: https://x.example\n    secret: {file: /proc/self/environ}\n", "webhooks[0].secret: file: /proc is not a place for secrets"},
		{"secret env name", hook + "    url: https://x.example\n    secret: {env: \"A=B\"}\n", "webhooks[0].secret: env: want an environment variable's name"},
		{"secret unknown", hook + "    url: https://x.example\n    secret: {vault: x}\n", "notify.yaml:4:14: webhooks[0].secret.vault: unknown field (want env, file)"},
		{"timeout", hook + "    url: https://x.example\n    timeout: 1h\n", "notify.yaml:4:14: webhooks[0].timeout: want a duration from 1s to 2m0s"},
		{"webhooks map", "webhooks: {a: 1}\n", "notify.yaml:1:11: webhooks: want a list"},
		{"status unknown", "commitStatus:\n  provider: github\n  repo: a/b\n", "notify.yaml:3:3: commitStatus.repo: unknown field"},
		{"status provider", "commitStatus:\n  provider: gitea\n", "notify.yaml:2:13: commitStatus.provider: unknown provider \"gitea\""},
		{"status no provider", "commitStatus:\n  repository: a/b\n", "notify.yaml:2:3: commitStatus.provider: required"},
		{"status no token", "commitStatus:\n  provider: github\n  repository: a/b\n", "notify.yaml:2:3: commitStatus.token: required"},
		{"status repository", "commitStatus:\n  provider: github\n  repository: a\n  token: {env: T}\n", "notify.yaml:3:15: commitStatus.repository: want owner/name"},
		{"status repository dots", "commitStatus:\n  provider: github\n  repository: a/..\n  token: {env: T}\n", "commitStatus.repository: want owner/name"},
		{"github project", "commitStatus:\n  provider: github\n  project: '12'\n  token: {env: T}\n", "notify.yaml:3:12: commitStatus.project: is GitLab's"},
		{"gitlab repository", "commitStatus:\n  provider: gitlab\n  url: https://gl.example\n  repository: a/b\n  token: {env: T}\n", "notify.yaml:4:15: commitStatus.repository: is GitHub's"},
		{"gitlab no url", "commitStatus:\n  provider: gitlab\n  project: '12'\n  token: {env: T}\n", "notify.yaml:2:3: commitStatus.url: required for gitlab"},
		{"gitlab project", "commitStatus:\n  provider: gitlab\n  url: https://gl.example\n  project: a/../b\n  token: {env: T}\n", "notify.yaml:4:12: commitStatus.project: want a numeric project id"},
		{"status http", "commitStatus:\n  provider: github\n  url: http://ghe.example/api/v3\n", "notify.yaml:3:8: commitStatus.url: http to ghe.example: want https"},
		{"status query", "commitStatus:\n  provider: github\n  url: https://ghe.example/api/v3?a=b\n", "notify.yaml:3:8: commitStatus.url: want the API's base URL"},
		{"context", "commitStatus:\n  provider: github\n  context: \"a\\nb\"\n", "notify.yaml:3:12: commitStatus.context: want a name"},
		{"target url", "commitStatus:\n  provider: github\n  targetURL: javascript:alert(1)\n", "notify.yaml:3:14: commitStatus.targetURL: want an absolute http(s) URL"},
		{"site", "site: a/b\n", "notify.yaml:1:7: site: want letters"},
		{"alias", "x: &a https://x.example\nwebhooks:\n  - name: a\n    url: *a\n", "notify.yaml:1:1: x: unknown field"},
		{"alias value", "webhooks:\n  - &h {name: a, url: https://x.example}\n  - *h\n", "notify.yaml:3:5: webhooks[1]: want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("notify.yaml", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q quotes a secret", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify.yaml")
	if err := os.WriteFile(path, []byte("webhooks:\n  - name: a\n    url: http://localhost:1/x\n    kinds: [bogus]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":4:13: webhooks[0].kinds[0]: unknown event kind") {
		t.Fatalf("error %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("error %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxConfigFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"webhooks:\n  - name: a\n    url: https://x.example\n    kinds: [revision.applied]\n    secret: {env: K}\n",
		"commitStatus: {provider: gitlab, url: 'https://gl.example', project: a/b, token: file:/k}\n",
		`{"webhooks": [{"name": "a", "url": {"env": "U"}, "format": "slack"}]}`,
		"x: &a [*a]\n",
		"webhooks: [{name: a, url: 'http://[::1]:80/'}]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		if len(c.Webhooks) == 0 && c.CommitStatus == nil {
			t.Fatal("a config with no sink")
		}
		for _, w := range c.Webhooks {
			if w.URL != "" && checkURL(w.URL) != nil || w.URL == "" && w.URLRef == "" {
				t.Fatalf("webhook %+v accepted", w)
			}
		}
	})
}

// TestOperationsExample: the example of docs/operations.md parses, and its
// example error is the one a typo in it gives.
func TestOperationsExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n# /etc/anneal/notify.yaml\n")
	if !ok {
		t.Fatal("no notify.yaml example in docs/operations.md")
	}
	example, _, _ := strings.Cut(rest, "```")
	example = "# /etc/anneal/notify.yaml\n" + example
	c, err := Parse("/etc/anneal/notify.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Webhooks) != 2 || c.CommitStatus == nil || c.Site != "east" {
		t.Errorf("example %+v", c)
	}
	_, err = Parse("/etc/anneal/notify.yaml", []byte(strings.Replace(example, "    kinds:", "    kind:", 1)))
	if err == nil || !strings.Contains(string(doc), "anneal: "+err.Error()+"\n") {
		t.Errorf("docs/operations.md does not show the error %q", err)
	}
}
