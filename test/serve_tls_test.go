package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/state/bolt"
)

// testCA issues certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "anneal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for 127.0.0.1 with serial and its key.
func (ca *testCA) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "anneal"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestServeTLS: with --tls-cert and --tls-key the API is HTTPS only; the
// CLI reaches it trusting --ca and refuses it without; a renewed
// certificate written over the files is served without a restart, and
// one that does not load leaves the previous one in service.
func TestServeTLS(t *testing.T) {
	l := newDNSLab(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	if err := os.WriteFile(caFile, ca.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	ca.issue(t, 100, certFile, keyFile)

	mustExit(t, anneal(t, l.env, "serve", "--site", l.site, "--state", l.state, "--tls-cert", certFile), 64, "--tls-cert and --tls-key go together")

	api, _ := startServe(t, l.env, "--site", l.site, "--state", l.state, "--interval", "200ms", "--tls-cert", certFile, "--tls-key", keyFile)
	addr := strings.TrimPrefix(api, "http://")
	https := "https://" + addr
	served := func() int64 {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
			if err == nil {
				defer conn.Close()
				return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
			}
			if time.Now().After(deadline) {
				t.Fatalf("TLS to the API: %v", err)
			}
		}
	}
	if got := served(); got != 100 {
		t.Fatalf("serving certificate %d, want 100", got)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if r := anneal(t, nil, "status", "--server", https, "--ca", caFile); r.code == 0 && strings.Contains(r.stdout, "applied revision:        dir:") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("status over HTTPS:\n%s", r)
		}
	}
	mustExit(t, anneal(t, nil, "status", "--server", https), 1, "certificate signed by unknown authority")
	mustExit(t, anneal(t, nil, "status", "--server", api), 1, "400 Bad Request")
	mustExit(t, anneal(t, nil, "status", "--server", https, "--ca", certFile+".missing"), 1, "--ca")

	// Renewed in place: the next connection gets it.
	time.Sleep(10 * time.Millisecond) // a later modification time
	ca.issue(t, 101, certFile, keyFile)
	if got := served(); got != 101 {
		t.Fatalf("after renewal: serving certificate %d, want 101", got)
	}
	// A broken file: the last good certificate stays in service.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != 101 {
		t.Fatalf("after a broken certificate file: serving %d, want 101", got)
	}
	mustExit(t, anneal(t, nil, "status", "--server", https, "--ca", caFile), 0, "applied revision")
}

// TestServeBackup: anneal backup takes a consistent copy of a running
// daemon's state through its API (the token required), checks it and
// writes it only then; the copy is a state file a daemon starts from.
func TestServeBackup(t *testing.T) {
	l := newDNSLab(t)
	env := append(slices.Clone(l.env), "ANNEAL_TOKEN=s3cret-token-for-tests")
	api, serve := startServe(t, env, "--site", l.site, "--state", l.state, "--interval", "200ms", "--token", "env:ANNEAL_TOKEN")
	st := waitStatus(t, api, "the site applied, a few passes", func(s serveStatus) bool { return s.AppliedRevision != "" && s.Reconciles >= 3 })
	out := filepath.Join(t.TempDir(), "backup.db")

	mustExit(t, anneal(t, env, "backup", "--server", api, "--out", out), 1, "403", "bearer token")
	mustExit(t, anneal(t, env, "backup", "--server", api, "--token", "env:ANNEAL_TOKEN"), 64, "--out is required")
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused backup left a file: %v", err)
	}
	r := anneal(t, env, "backup", "--server", api, "--token", "env:ANNEAL_TOKEN", "--out", out)
	mustExit(t, r, 0, "checked; applied revision "+st.AppliedRevision)
	if strings.Contains(r.stdout+r.stderr, "s3cret-token-for-tests") {
		t.Fatal("the token was printed")
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", fi, err)
	}

	// Restore: stop the daemon, put the copy in place, start again: it
	// knows what it applied (no first-run ownership rebuild from history).
	_ = serve.Process.Signal(syscall.SIGTERM)
	_ = serve.Wait()
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored.db")
	if err := os.WriteFile(restored, data, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := bolt.CheckFile(restored)
	if err != nil || info.Status == nil || info.Status.Reconciles < 3 || info.FormatVersion != bolt.FormatVersion {
		t.Fatalf("the copy's check: %+v, %v", info, err)
	}
	saved := info.Status
	// A daemon on the copy counts on from the copy's passes (one on a
	// fresh state would start from zero).
	api2, _ := startServe(t, env, "--site", l.site, "--state", restored, "--interval", "200ms")
	// Its first status is the copy's (a fresh state's would count from 1);
	// then its own passes count on.
	first := waitStatus(t, api2, "the restored daemon's status", func(s serveStatus) bool { return s.Reconciles > 0 })
	got := waitStatus(t, api2, "a pass on the restored state", func(s serveStatus) bool { return s.Reconciles > saved.Reconciles })
	if first.Reconciles < saved.Reconciles || got.AppliedRevision != st.AppliedRevision {
		t.Fatalf("restored daemon: %d passes, applied %s; the copy had %d passes, applied %s", got.Reconciles, got.AppliedRevision, saved.Reconciles, st.AppliedRevision)
	}
}
