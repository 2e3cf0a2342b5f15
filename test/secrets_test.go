package test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// connCounter is a server a hostile commit would like the daemon to talk
// to: it counts every connection it is offered.
type connCounter struct {
	addr  string
	conns atomic.Int64
}

func startConnCounter(t *testing.T) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &connCounter{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			conn.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return c
}

// writeGrants writes an operator's grants file.
func writeGrants(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretsStayWithTheOperator is issue 11's first finding: a merged
// commit aimed the daemon's secrets (any environment variable, any file)
// at an address of its choosing. Now a site only names secrets the
// operator grants, and only for the destinations the grants allow: every
// hostile commit below is refused as invalid and its target never sees a
// connection, while a granted destination does get the key (the harness
// can see a send).
func TestSecretsStayWithTheOperator(t *testing.T) {
	l := newDNSLab(t)
	attacker := startConnCounter(t)
	var granted atomic.Int64
	// A granted PowerDNS address that counts the requests carrying the key.
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") == l.pdns.APIKey {
			granted.Add(1)
		}
		http.Error(w, "not a PowerDNS", http.StatusServiceUnavailable)
	}))
	t.Cleanup(control.Close)
	controlAddr := control.Listener.Addr().String()

	pdnsAPI, err := url.Parse(l.pdns.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	grants := writeGrants(t, fmt.Sprintf(`secrets:
  bmc-password:
    from: env:ANNEAL_BMC_PASSWORD
    bmc: [10.10.0.0/24, "fd00:a:0:100::/64"]
  tsig-key:
    from: env:ANNEAL_TSIG_SECRET
    dns: [%q]
  pdns-api-key:
    from: env:ANNEAL_PDNS_API_KEY
    dns: [%q, %q]
`, l.bind.Addr, pdnsAPI.Host, controlAddr))

	git(t, l.site, "init", "-q", "-b", "main")
	commit := func(msg string) string {
		git(t, l.site, "add", "-A")
		git(t, l.site, "commit", "-q", "-m", msg)
		return git(t, l.site, "rev-parse", "HEAD")
	}
	a := commit("A: the site")
	env := append([]string{"ANNEAL_API_TOKEN=daemon-t0ken-7f3a", "ANNEAL_BMC_PASSWORD=bmc-pw-19c2"}, l.env...)
	api, _ := startServe(t, env, "--repo", l.site, "--state", l.state, "--interval", "200ms",
		"--token", "env:ANNEAL_API_TOKEN", "--secrets", grants)
	waitStatus(t, api, "commit A applied", func(s serveStatus) bool { return s.AppliedRevision == a })

	pdnsURL := strings.TrimSuffix(l.pdns.APIURL, "/")
	hostile := []struct {
		name  string
		file  string
		edit  func(string) string
		error string
	}{
		{"the PowerDNS API key aimed elsewhere", "dns.yaml",
			func(s string) string { return strings.Replace(s, "api: "+pdnsURL, "api: http://"+attacker.addr, 1) },
			`secret "pdns-api-key" may not be sent to dns ` + attacker.addr},
		{"the daemon's API token by environment variable", "nodes/east-e1.yaml",
			func(s string) string {
				return strings.Replace(s, "password: secret:bmc-password", "password: env:ANNEAL_API_TOKEN", 1)
			},
			"must name a secret the operator grants (secret:NAME)"},
		{"a file of the daemon's", "nodes/east-e1.yaml",
			func(s string) string {
				return strings.Replace(s, "password: secret:bmc-password", "password: file:"+l.state+".netboot-key", 1)
			},
			"must name a secret the operator grants (secret:NAME)"},
		{"a secret nobody granted", "dns.yaml",
			func(s string) string {
				return strings.Replace(s, "apiKey: secret:pdns-api-key", "apiKey: secret:api-token", 1)
			},
			`secret "api-token" is not granted`},
		{"a granted BMC password aimed at another port", "nodes/east-e1.yaml",
			func(s string) string {
				host, port, _ := net.SplitHostPort(attacker.addr)
				return strings.Replace(s, "  username: ", fmt.Sprintf("  address: %s\n  port: %s\n  username: ", host, port), 1)
			},
			`secret "bmc-password" may not be sent to bmc ` + attacker.addr},
		{"a TSIG key for another server", "dns.yaml",
			func(s string) string { return strings.Replace(s, "server: "+l.bind.Addr, "server: "+attacker.addr, 1) },
			`secret "tsig-key" may not be sent to dns ` + attacker.addr},
	}
	good := a
	for _, h := range hostile {
		edit(t, l.site, h.file, h.edit)
		rev := commit(h.name)
		st := waitStatus(t, api, h.name+" refused", func(s serveStatus) bool { return s.LastAttemptedRevision == rev && s.LastError != "" })
		if st.AppliedRevision != good || st.LastErrorClass != "invalid-commit" || !strings.Contains(st.LastError, h.error) {
			t.Fatalf("%s: status %+v, want invalid-commit with %q", h.name, st, h.error)
		}
		for _, v := range []string{"daemon-t0ken-7f3a", "bmc-pw-19c2", l.pdns.APIKey, l.bind.Secret} {
			if strings.Contains(st.LastError, v) {
				t.Fatalf("%s: the status shows a secret: %s", h.name, st.LastError)
			}
		}
		git(t, l.site, "revert", "--no-edit", "HEAD")
		good = git(t, l.site, "rev-parse", "HEAD")
		waitStatus(t, api, "the revert of "+h.name+" applied", func(s serveStatus) bool { return s.AppliedRevision == good })
	}
	if n := attacker.conns.Load(); n != 0 {
		t.Fatalf("the hostile commits' server got %d connections", n)
	}

	// A destination the operator granted does get the key: the same kind
	// of commit, aimed where the grants allow, with a record to write.
	edit(t, l.site, "dns.yaml", func(s string) string {
		s = strings.Replace(s, "value: 203.0.113.25}", "value: 203.0.113.26}", 1)
		return strings.Replace(s, "api: "+pdnsURL, "api: http://"+controlAddr, 1)
	})
	rev := commit("PowerDNS moved, as granted")
	waitStatus(t, api, "the granted move attempted", func(s serveStatus) bool {
		return s.LastAttemptedRevision == rev && granted.Load() > 0
	})
	if n := attacker.conns.Load(); n != 0 {
		t.Fatalf("the hostile commits' server got %d connections", n)
	}
}

// TestSecretsGrantsRefused: the daemon's own credentials can never be
// granted, a site naming a secret without grants is refused by commands
// that send secrets, and validate with grants names the file and line.
func TestSecretsGrantsRefused(t *testing.T) {
	l := newDNSLab(t)
	own := writeGrants(t, `secrets:
  pdns-api-key:
    from: env:ANNEAL_API_TOKEN
    dns: [127.0.0.1]
`)
	env := append([]string{"ANNEAL_API_TOKEN=daemon-t0ken-7f3a"}, l.env...)
	mustExit(t, anneal(t, env, "serve", "--site", l.site, "--state", l.state, "--token", "env:ANNEAL_API_TOKEN", "--secrets", own),
		1, `secret "pdns-api-key" reads env:ANNEAL_API_TOKEN, the daemon's own API token (--token): it can never be granted`)

	stateGrant := writeGrants(t, fmt.Sprintf(`secrets:
  pdns-api-key:
    from: file:%s.netboot-key
    dns: [127.0.0.1]
`, l.state))
	mustExit(t, anneal(t, env, "serve", "--site", l.site, "--state", l.state, "--secrets", stateGrant), 1, "the daemon's own netboot key")

	// No grants: plan and apply send secrets, so the site is refused; the
	// review and validate check only the form.
	noGrants := []string{"ANNEAL_SECRETS="}
	mustExit(t, anneal(t, append(noGrants, l.env...), "plan", "--site", l.site, "--state", l.state), 1,
		"no secret grants: give --secrets FILE (or set $ANNEAL_SECRETS)")
	mustExit(t, anneal(t, append(noGrants, l.env...), "serve", "--site", l.site, "--state", l.state), 1,
		"no secret grants: give --secrets FILE")

	// A grant whose value cannot be read: plan stops at start, and a serve
	// pass before it acts, naming every such grant the site uses (not a
	// canary's failure in the middle of a rollout).
	unset := writeGrants(t, `secrets:
  bmc-password:
    from: env:ANNEAL_NOPE
    bmc: [10.10.0.0/24]
  tsig-key:
    from: env:ANNEAL_TSIG_SECRET
    dns: [127.0.0.1]
  pdns-api-key:
    from: file:/nonexistent/pdns.key
    dns: [127.0.0.1]
`)
	// plan and apply reach DNS only: its secrets are checked; the lab
	// plays the BMCs too: all of them.
	mustExit(t, anneal(t, l.env, "plan", "--site", l.site, "--state", l.state, "--secrets", unset), 1,
		unset+`:8: secret "pdns-api-key"`, "/nonexistent/pdns.key")
	mustExit(t, anneal(t, l.env, "lab", "--site", l.site, "--dir", t.TempDir(), "--secrets", unset), 1,
		unset+`:2: secret "bmc-password"`, "ANNEAL_NOPE is not set", unset+`:8: secret "pdns-api-key"`)
	api, _ := startServe(t, l.env, "--site", l.site, "--state", l.state, "--interval", "200ms", "--secrets", unset)
	st := waitStatus(t, api, "a pass refused for the unreadable grants", func(s serveStatus) bool { return s.LastError != "" })
	if st.AppliedRevision != "" || st.LastErrorClass != "targets" || !strings.Contains(st.LastError, `secret "pdns-api-key"`) {
		t.Fatalf("serve with unreadable grants: %+v", st)
	}
	mustExit(t, anneal(t, append(noGrants, l.env...), "validate", "--site", l.site), 0)

	narrow := writeGrants(t, `secrets:
  bmc-password:
    from: env:ANNEAL_BMC_PASSWORD
    bmc: [10.10.0.0/28]
  tsig-key:
    from: env:ANNEAL_TSIG_SECRET
    dns: [127.0.0.1]
  pdns-api-key:
    from: env:ANNEAL_PDNS_API_KEY
    dns: [127.0.0.1]
`)
	r := anneal(t, nil, "validate", "--site", l.site, "--secrets", narrow)
	mustExit(t, r, 1, "nodes/", "bmc.password", `secret "bmc-password" may not be sent to bmc 10.10.0.`, narrow+":2")
}
