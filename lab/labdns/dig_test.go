package labdns_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/test/servers"
)

// TestDig asks the server with BIND's dig, the tool an operator points at
// the lab.
func TestDig(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dig"); err != nil {
		servers.Unavailable(t, "dig not installed: .ci/run must apt-get install bind9-dnsutils")
	}
	l := start(t, bindConfig(t))
	seedQueries(t, l)
	host, port, err := net.SplitHostPort(l.DNSAddr())
	if err != nil {
		t.Fatal(err)
	}
	key := l.cfg.TSIG
	for _, tc := range []struct {
		name string
		args []string
		want []string // lines of the output, in order
	}{
		{"A", []string{"www.example.net", "A", "+short"}, []string{"192.0.2.1", "192.0.2.2"}},
		{"A over TCP", []string{"www.example.net", "A", "+short", "+tcp"}, []string{"192.0.2.1", "192.0.2.2"}},
		{"AAAA", []string{"www.example.net", "AAAA", "+short"}, []string{"2001:db8::1"}},
		{"PTR", []string{"-x", "10.10.2.11", "+short"}, []string{"host.east.example.net."}},
		{"PTR v6", []string{"-x", "2001:db8:130::11", "+short"}, []string{"host.east.example.net."}},
		{"CNAME", []string{"alias.example.net", "A", "+short"}, []string{"www.example.net.", "192.0.2.1", "192.0.2.2"}},
		{"wildcard", []string{"anything.apps.example.net", "A", "+short"}, []string{"ingress.example.net.", "192.0.2.80"}},
		{"authoritative", []string{"www.example.net", "A", "+noall", "+comments"}, []string{"flags: qr aa rd"}},
		{"NXDOMAIN", []string{"nope.example.net", "A", "+noall", "+comments"}, []string{"status: NXDOMAIN"}},
		{"refused", []string{"www.example.org", "A", "+noall", "+comments"}, []string{"status: REFUSED"}},
		{"truncated, retried over TCP", []string{"big.example.net", "A", "+noedns"}, []string{"Truncated, retrying in TCP mode", "ANSWER: 100,"}},
		{"AXFR signed", []string{"-y", "hmac-sha256:" + key.Name + ":" + key.Secret, "example.net", "AXFR", "+noall", "+answer"}, []string{"example.net.", "SOA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, tc.args...)
			out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("dig: %v\n%s", err, out)
			}
			text := string(out)
			at := 0
			for _, w := range tc.want {
				i := strings.Index(text[at:], w)
				if i < 0 {
					t.Fatalf("dig %s: no %q (in order) in:\n%s", strings.Join(tc.args, " "), w, text)
				}
				at += i + len(w)
			}
			if strings.Contains(text, key.Secret) && tc.name != "AXFR signed" {
				t.Fatal("dig's output holds the secret")
			}
		})
	}
}

// TestNsupdate writes with BIND's nsupdate, signed with the key: a
// prerequisite that holds, one that fails, and a wrong key.
func TestNsupdate(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("nsupdate"); err != nil {
		servers.Unavailable(t, "nsupdate not installed: .ci/run must apt-get install bind9-dnsutils")
	}
	l := start(t, bindConfig(t))
	host, port, err := net.SplitHostPort(l.DNSAddr())
	if err != nil {
		t.Fatal(err)
	}
	key := l.cfg.TSIG
	run := func(secret, script string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "nsupdate", "-t", "3", "-y", "hmac-sha256:"+key.Name+":"+secret)
		cmd.Stdin = strings.NewReader("server " + host + " " + port + "\nzone example.net\n" + script + "\nsend\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(key.Secret, "prereq nxdomain new.example.net\nupdate add new.example.net 300 A 192.0.2.7"); err != nil {
		t.Fatalf("nsupdate: %v\n%s", err, out)
	}
	if r := query(t, l.DNSAddr(), "udp", "new.example.net", 1); len(r.Answer) != 1 {
		t.Fatalf("new.example.net: %v", r)
	}
	out, err := run(key.Secret, "prereq nxdomain new.example.net\nupdate add new.example.net 300 A 192.0.2.8")
	if err == nil || !strings.Contains(out, "YXDOMAIN") {
		t.Fatalf("a failing prerequisite: %v\n%s", err, out)
	}
	out, err = run(randomSecret(t), "update add other.example.net 300 A 192.0.2.9")
	if err == nil || !strings.Contains(out, "NOTAUTH") && !strings.Contains(out, "BADSIG") {
		t.Fatalf("a wrong secret: %v\n%s", err, out)
	}
	t.Log(out)
}
