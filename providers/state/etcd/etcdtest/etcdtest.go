// Package etcdtest runs a real etcd server for tests: the etcd server of
// the version the client is pinned at (Version), built once from the
// module cache by the nested module test/etcd and cached under
// os.TempDir, started on loopback with free ports and a data directory in
// t.TempDir, stopped when the test ends. Without a Go toolchain or module
// proxy to build it, a test is skipped, loudly (it fails under CI:
// internal/testenv).
package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/internal/testenv"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Version is the etcd server version built: the client's, in go.mod.
const Version = "v3.7.3"

// toolsModule is the nested module, relative to the repository root, that
// pins the server at Version.
const toolsModule = "test/etcd"

// Bounds of a server's start and stop.
const (
	buildTimeout = 10 * time.Minute
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
)

// build builds the server once per test binary: the result (a path or an
// error) is shared by every test.
var build = sync.OnceValues(buildServer)

// Binary returns the path of the etcd server binary, building it if the
// cache under os.TempDir lacks it, or stops the test (testenv.Unavailable).
func Binary(t testing.TB) string {
	t.Helper()
	p, err := build()
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("cannot build the etcd server %s (needs the go toolchain and the module proxy): %v", Version, err))
	}
	return p
}

func buildServer() (string, error) {
	dir := filepath.Join(os.TempDir(), "anneal-etcd-"+Version)
	bin := filepath.Join(dir, "etcd")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o100 != 0 {
		return bin, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	mod, err := findToolsModule()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// One build at a time across test binaries (go test runs packages in
	// parallel): the others wait, then find the binary.
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o100 != 0 {
		return bin, nil
	}
	// Built beside its final name and renamed: test binaries of several
	// packages may build at once, and none sees a half-written file.
	tmp, err := os.CreateTemp(dir, "etcd-build-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp.Name(), "go.etcd.io/etcd/server/v3")
	cmd.Dir = mod
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build go.etcd.io/etcd/server/v3 in %s: %w: %s", mod, err, tail(out.Bytes()))
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// findToolsModule finds test/etcd in the directories above the working
// directory (a package's, under go test).
func findToolsModule() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; {
		p := filepath.Join(d, toolsModule)
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", fmt.Errorf("no %s/go.mod above %s", toolsModule, wd)
		}
		d = up
	}
}

// Server is one running etcd member.
type Server struct {
	// Endpoint is its client URL.
	Endpoint string
	// Client is connected to it, closed when the test ends.
	Client *clientv3.Client
}

// Start starts one etcd member for the test and waits until it answers;
// it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	var errs []error
	// Free ports are picked by listening and closing: another process may
	// take one meanwhile, so a start that fails is tried again.
	for range 3 {
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		errs = append(errs, err)
	}
	t.Fatalf("etcd did not start: %v", errors.Join(errs...))
	return nil
}

func start(t testing.TB, bin string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dir := t.TempDir()
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin,
		"--name", "default",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer,
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	fail := func(err error) (*Server, error) {
		stop()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w; etcd's log: %s", err, tail(log))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		return fail(fmt.Errorf("etcd client: %w", err))
	}
	if err := waitHealthy(cli, client, exited); err != nil {
		cli.Close()
		if errors.Is(err, errExited) {
			<-exited
			err = fmt.Errorf("%w: %v", err, waitErr)
		}
		return fail(err)
	}
	t.Cleanup(func() {
		cli.Close()
		stop()
	})
	return &Server{Endpoint: client, Client: cli}, nil
}

var errExited = errors.New("etcd exited")

// waitHealthy polls the member's status until it answers with a leader,
// for at most startTimeout.
func waitHealthy(cli *clientv3.Client, endpoint string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, endpoint)
		scancel()
		if err == nil && st.Leader != 0 {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("etcd at %s not healthy within %v: %v", endpoint, startTimeout, last)
		case <-tick.C:
		}
	}
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the end of a command's output, for an error message.
func tail(b []byte) string {
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
