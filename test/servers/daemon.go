package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/anneal-dev/anneal/internal/testenv"
)

// daemon is a server process a test runs in the foreground, its output in
// a log file, stopped by its PID.
type daemon struct {
	name    string // the program, for messages
	logPath string

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
	log  *os.File
}

// run starts argv in dir and waits until ready reports true, the process
// exits, broken finds a fatal problem in the log, or timeout passes.
func (d *daemon) run(dir string, argv []string, timeout time.Duration, ready func() bool, broken func(log string) error) error {
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	d.mu.Lock()
	d.proc, d.done, d.log = cmd, done, logf
	d.mu.Unlock()

	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (%s); log:\n%s", d.name, cmd.ProcessState, d.Log())
		default:
		}
		if broken != nil {
			if err := broken(d.Log()); err != nil {
				return err
			}
		}
		if ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready within %s; log:\n%s", d.name, timeout, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns what the server has written so far.
func (d *daemon) Log() string {
	out, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(out)
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s) and waits for
// it. It is safe to call more than once; the test's cleanup calls it too.
func (d *daemon) Stop() {
	d.mu.Lock()
	cmd, done, logf := d.proc, d.done, d.log
	d.proc, d.done, d.log = nil, nil, nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	logf.Close()
}

// freePort finds a port free on 127.0.0.1 for TCP and, when udp is set,
// for UDP too.
func freePort(udp bool) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !udp {
			l.Close()
			return port, nil
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: no port free for both UDP and TCP")
}

// axfr transfers a zone from a server and returns every record, the SOA
// first and last as the server sends them; a failure fails the test.
func axfr(t testing.TB, addr, zone string, readTimeout time.Duration) []dns.RR {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(dns.Fqdn(zone))
	tr := &dns.Transfer{DialTimeout: 5 * time.Second, ReadTimeout: readTimeout}
	env, err := tr.In(m, addr)
	if err != nil {
		t.Fatalf("servers: AXFR %s from %s: %v", zone, addr, err)
	}
	var rrs []dns.RR
	var failed error
	for e := range env {
		if e.Error != nil && failed == nil {
			failed = e.Error
		}
		rrs = append(rrs, e.RR...)
	}
	if failed != nil {
		t.Fatalf("servers: AXFR %s from %s: %v", zone, addr, failed)
	}
	return rrs
}

// Unavailable stops a test that needs something this machine lacks: it
// fails under CI (where .ci/run must have installed everything) and is
// skipped, loudly, elsewhere. It is testenv.Unavailable, the one place
// that policy lives.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	testenv.Unavailable(t, why)
}

// ServeUntilCleanup runs serve in the background until the test ends, then
// cancels its context and fails the test if serve errs or does not return
// within stop.
func ServeUntilCleanup(t testing.TB, serve func(context.Context) error, stop time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(stop):
			t.Errorf("Serve did not return within %s after its context ended", stop)
		}
	})
}
