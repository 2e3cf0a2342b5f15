package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fds is the number of descriptors process pid holds.
func fds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("descriptors of %d: %v", pid, err)
	}
	return len(ents)
}

// getFrom GETs url over a connection from source address src.
func getFrom(src, url string, timeout time.Duration) (int, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestServeConnectionLimits: one client opening many connections that
// send their headers and one body byte, then stall, cannot take the API or
// the netboot server down. The daemon runs with 200 descriptors (as one
// with 20,000 slow connections runs out of its limit): the attacker's
// connections past --max-conns-per-source are reset, /healthz answers
// another address at once, the stalled connections are closed after
// --http-read-timeout, and the daemon's descriptors stay bounded.
func TestServeConnectionLimits(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("NOT RUN: no /proc")
	}
	const (
		slow      = 300 // more than the descriptors the daemon has
		perSource = 16
		maxConns  = 64
		readLimit = 2 * time.Second
	)
	dir := t.TempDir()
	site := filepath.Join(dir, "site") // empty: serve runs, its reconciles fail
	if err := os.Mkdir(site, 0o755); err != nil {
		t.Fatal(err)
	}
	api, boot := freeAddr(t), freeAddr(t)
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n 200 && exec "$0" "$@"`, annealBin, "serve",
		"--site", site, "--state", filepath.Join(dir, "state.db"), "--interval", "1h",
		"--listen", api, "--netboot-listen", boot,
		"--max-conns", fmt.Sprint(maxConns), "--max-conns-per-source", fmt.Sprint(perSource),
		"--http-read-timeout", readLimit.String())
	cmd.Env = baseEnv(dir) // serve needs grants; the site is empty
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("serve log:\n%s", logs.String())
		}
	})
	// Up when both servers answer (the netboot server listens first).
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, err := getFrom("127.0.0.1", "http://"+api+"/healthz", 5*time.Second); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not answer /healthz in 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	base := fds(t, cmd.Process.Pid)

	tests := []struct {
		name, addr, probe string
		probeOK           func(int) bool
	}{
		{"api", api, "/healthz", func(code int) bool { return code == http.StatusOK }},
		{"netboot", boot, "/ipxe/52:54:00:00:00:01", func(code int) bool { return code > 0 }}, // answered: no site is loaded
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conns := make([]net.Conn, 0, slow)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 10 * time.Second}
			for i := range slow {
				c, err := d.Dial("tcp", tc.addr)
				if errors.Is(err, syscall.ECONNRESET) {
					continue // refused before connect returned
				}
				if err != nil {
					t.Fatalf("slow connection %d: %v", i, err)
				}
				conns = append(conns, c)
				// A write to a connection already reset may fail: refused.
				_, _ = io.WriteString(c, "POST /api/v1/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
			}
			// Connections are accepted in order: once another address is
			// answered, every slow one was accepted or refused.
			start := time.Now()
			code, err := getFrom("127.0.0.2", "http://"+tc.addr+tc.probe, 10*time.Second)
			if err != nil || !tc.probeOK(code) {
				t.Fatalf("GET %s from 127.0.0.2 with %d slow connections open: %d %v", tc.probe, slow, code, err)
			}
			t.Logf("GET %s from another address: %d in %s", tc.probe, code, time.Since(start).Round(time.Millisecond))
			if n := fds(t, cmd.Process.Pid); n > base+perSource+4 {
				t.Errorf("the daemon holds %d descriptors (%d before, per-source bound %d)", n, base, perSource)
			}
			// Every slow connection is closed by the daemon: refused at once,
			// or accepted and cut after the read timeout.
			held := 0
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if n > 0 && strings.HasPrefix(string(buf[:n]), "HTTP/1.1 ") {
						held++
					}
					if err != nil {
						if ne, ok := err.(net.Error); ok && ne.Timeout() {
							t.Fatalf("a slow connection is still open %s after the read timeout (%s)", time.Since(start).Round(time.Second), readLimit)
						}
						break
					}
				}
			}
			t.Logf("%d slow connections, all closed within %s", len(conns), time.Since(start).Round(time.Millisecond))
			if held > perSource {
				t.Errorf("%d slow connections were answered, more than the per-source bound %d", held, perSource)
			}
			if n := fds(t, cmd.Process.Pid); n > base+4 {
				t.Errorf("the daemon holds %d descriptors after the slow connections closed, %d before", n, base)
			}
		})
	}
}
