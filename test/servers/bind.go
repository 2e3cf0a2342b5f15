// Package servers starts real servers for tests: each one runs in the
// foreground, listens on 127.0.0.1 on a free port, keeps its state under the
// test's temporary directory, and is stopped by its PID when the test ends.
package servers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// bindMissing is the message a test gets when BIND is not installed.
const bindMissing = "BIND not installed: .ci/run must apt-get install bind9 (named, nsupdate: packages bind9 bind9-utils bind9-dnsutils)"

// emptyZone is every zone's file at start: an SOA and an out-of-zone NS,
// which needs no glue.
const emptyZone = `$TTL 300
@ IN SOA localhost. hostmaster.localhost. 1 3600 600 86400 300
@ IN NS localhost.
`

// readyTimeout bounds how long named may take to answer its first query.
const readyTimeout = 10 * time.Second

// BINDOptions configure a BIND server for a test.
type BINDOptions struct {
	// Zones the server is primary for, each starting with only an SOA and
	// an NS localhost. record.
	Zones []string
	// KeyName is the TSIG key allowed to update the zones (default "anneal").
	KeyName string
	// Algorithm is the TSIG algorithm (default hmac-sha256).
	Algorithm string
	// Secret is the base64 TSIG secret (default: 32 random bytes).
	Secret string
	// MaxRecordsPerType sets max-records-per-type (0: BIND's default).
	MaxRecordsPerType int
}

// BIND is a running named.
type BIND struct {
	// Addr is where it listens, UDP and TCP: "127.0.0.1:PORT".
	Addr      string
	KeyName   string
	Algorithm string
	Secret    string
	// Dir holds named.conf, the zone files, their journals and named.log.
	Dir   string
	Zones []string

	port int

	daemon
}

// StartBIND starts named for the test and stops it when the test ends. It
// skips the test when named is not installed, or fails it if the CI
// environment variable is set.
func StartBIND(t testing.TB, opts BINDOptions) *BIND {
	t.Helper()
	for _, tool := range []string{"named", "nsupdate"} {
		if _, err := exec.LookPath(tool); err != nil {
			Unavailable(t, bindMissing)
		}
	}
	if len(opts.Zones) == 0 {
		t.Fatal("servers.StartBIND: no zones")
	}
	b := &BIND{
		KeyName:   opts.KeyName,
		Algorithm: opts.Algorithm,
		Secret:    opts.Secret,
		Dir:       t.TempDir(),
	}
	b.name, b.logPath = "named", filepath.Join(b.Dir, "named.log")
	if b.KeyName == "" {
		b.KeyName = "anneal"
	}
	if b.Algorithm == "" {
		b.Algorithm = "hmac-sha256"
	}
	if b.Secret == "" {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatalf("servers.StartBIND: random key: %v", err)
		}
		b.Secret = base64.StdEncoding.EncodeToString(key)
	}
	for _, z := range opts.Zones {
		z = strings.TrimSuffix(strings.ToLower(z), ".")
		b.Zones = append(b.Zones, z)
		if err := os.WriteFile(filepath.Join(b.Dir, "db."+z), []byte(emptyZone), 0o644); err != nil {
			t.Fatalf("servers.StartBIND: %v", err)
		}
	}
	t.Cleanup(b.Stop)

	// The port is free when we look, but another process may take it before
	// named binds it: try a few ports.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort(true)
		if err != nil {
			t.Fatalf("servers.StartBIND: %v", err)
		}
		b.port = port
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := os.WriteFile(filepath.Join(b.Dir, "named.conf"), []byte(b.conf(opts.MaxRecordsPerType)), 0o644); err != nil {
			t.Fatalf("servers.StartBIND: %v", err)
		}
		lastErr = b.start()
		if lastErr == nil {
			return b
		}
		b.Stop()
		if !strings.Contains(lastErr.Error(), "address in use") {
			break
		}
	}
	t.Fatalf("servers.StartBIND: %v", lastErr)
	return nil
}

func (b *BIND) conf(maxRecords int) string {
	var c strings.Builder
	fmt.Fprintf(&c, `options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	managed-keys-directory %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
	dnssec-validation no;
	allow-transfer { any; };
`, b.Dir, filepath.Join(b.Dir, "named.pid"), filepath.Join(b.Dir, "session.key"), b.Dir, b.port)
	if maxRecords > 0 {
		fmt.Fprintf(&c, "\tmax-records-per-type %d;\n", maxRecords)
	}
	c.WriteString("};\ncontrols { };\n")
	fmt.Fprintf(&c, "key %q { algorithm %s; secret %q; };\n", b.KeyName, b.Algorithm, b.Secret)
	for _, z := range b.Zones {
		fmt.Fprintf(&c, "zone %q { type primary; file %q; allow-update { key %q; }; };\n", z, "db."+z, b.KeyName)
	}
	return c.String()
}

// start runs named and waits until it answers an SOA query for every zone.
func (b *BIND) start() error {
	return b.run(b.Dir, []string{"named", "-g", "-c", filepath.Join(b.Dir, "named.conf")}, readyTimeout, b.ready, func(log string) error {
		if strings.Contains(log, "address in use") {
			return fmt.Errorf("named could not bind %s: address in use; log:\n%s", b.Addr, log)
		}
		return nil
	})
}

// ready reports whether every zone answers an authoritative SOA.
func (b *BIND) ready() bool {
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	for _, z := range b.Zones {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(z), dns.TypeSOA)
		r, _, err := c.Exchange(m, b.Addr)
		if err != nil || r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) == 0 {
			return false
		}
	}
	return true
}

// Restart stops named if it runs and starts it again on the same port,
// with the zones as they were (named keeps its journals in Dir).
func (b *BIND) Restart(t testing.TB) {
	t.Helper()
	b.Stop()
	if err := b.start(); err != nil {
		b.Stop()
		t.Fatalf("servers: restart named: %v", err)
	}
}

// Nsupdate runs the real nsupdate, signed with the server's key, against
// the server: script holds update commands ("update add www.example.net.
// 300 A 192.0.2.1", "zone ..."); the server line is added, and a final
// "send" when the script has none. It fails the test when nsupdate fails.
func (b *BIND) Nsupdate(t testing.TB, script string) {
	t.Helper()
	if err := b.NsupdateErr(script); err != nil {
		t.Fatal(err)
	}
}

// NsupdateErr is Nsupdate returning the failure (nsupdate exits non-zero
// when the server refuses the update).
func (b *BIND) NsupdateErr(script string) error {
	var in strings.Builder
	fmt.Fprintf(&in, "server 127.0.0.1 %d\n", b.port)
	in.WriteString(script)
	if !strings.HasSuffix(script, "\n") {
		in.WriteString("\n")
	}
	hasSend := false
	for _, l := range strings.Split(script, "\n") {
		if strings.TrimSpace(l) == "send" {
			hasSend = true
		}
	}
	if !hasSend {
		in.WriteString("send\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsupdate", "-t", "5", "-y", b.Algorithm+":"+b.KeyName+":"+b.Secret)
	cmd.Stdin = strings.NewReader(in.String())
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nsupdate: %v\nscript:\n%s\noutput:\n%s", err, in.String(), out.String())
	}
	return nil
}

// AXFR transfers a zone (unsigned: transfers are open) and returns every
// record, the SOA first and last as the server sends them.
func (b *BIND) AXFR(t testing.TB, zone string) []dns.RR {
	t.Helper()
	return axfr(t, b.Addr, zone, 10*time.Second)
}
