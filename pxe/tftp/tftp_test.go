package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/test/servers"

	"github.com/pin/tftp/v3"
)

const bigSize = 1 << 20

// needTool returns the path of a client tool; without it the test fails
// when CI is set and is skipped otherwise.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		servers.Unavailable(t, fmt.Sprintf("TFTP client %q is not installed (apt packages tftp-hpa, busybox): %v", name, err))
	}
	return p
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testRoot makes a Root with a 1 MiB random file "big.bin" and a small file
// "small.txt"; it returns the directory and the big file's content.
func testRoot(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	big := make([]byte, bigSize)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "small.txt"), []byte("hello, iPXE\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, big
}

// start serves cfg on 127.0.0.1 until the test ends; it returns the port and
// the server's log.
func start(t *testing.T, cfg Config) (int, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	cfg.Listen = "127.0.0.1:0"
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servers.ServeUntilCleanup(t, s.Serve, 20*time.Second)

	return s.Addr().(*net.UDPAddr).Port, logs
}

// run runs a client command with a deadline and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// hpaGet fetches file with tftp-hpa in binary mode. tftp-hpa's exit status
// is not reliable on every version, so a failure is also read from its output.
func hpaGet(t *testing.T, port int, file, out string) (string, error) {
	t.Helper()
	bin := needTool(t, "tftp")
	o, err := run(t, bin, "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-c", "get", file, out)
	if err == nil && strings.Contains(strings.ToLower(o), "error") {
		err = errors.New("tftp reported an error")
	}
	return o, err
}

func busyboxGet(t *testing.T, port int, file, out string) (string, error) {
	t.Helper()
	bin := needTool(t, "busybox")
	return run(t, bin, "tftp", "-g", "-r", file, "-l", out, "127.0.0.1", strconv.Itoa(port))
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d bytes identical to the served file", path, len(got), len(want))
	}
}

func TestTFTPHPAGetBinary(t *testing.T) {
	needTool(t, "tftp")
	root, big := testRoot(t)
	port, logs := start(t, Config{Root: root})
	out := filepath.Join(t.TempDir(), "big.bin")
	if o, err := hpaGet(t, port, "big.bin", out); err != nil {
		t.Fatalf("tftp get big.bin: %v\n%s", err, o)
	}
	sameFile(t, out, big)

	small := filepath.Join(t.TempDir(), "small.txt")
	if o, err := hpaGet(t, port, "small.txt", small); err != nil {
		t.Fatalf("tftp get small.txt: %v\n%s", err, o)
	}
	sameFile(t, small, []byte("hello, iPXE\n"))

	waitLog(t, logs, "file=big.bin", "bytes="+strconv.Itoa(bigSize), "client=127.0.0.1:")
}

func TestBusyboxGet(t *testing.T) {
	needTool(t, "busybox")
	root, big := testRoot(t)
	port, logs := start(t, Config{Root: root})
	out := filepath.Join(t.TempDir(), "big.bin")
	if o, err := busyboxGet(t, port, "big.bin", out); err != nil {
		t.Fatalf("busybox tftp -g big.bin: %v\n%s", err, o)
	}
	sameFile(t, out, big)
	waitLog(t, logs, "file=big.bin", "bytes="+strconv.Itoa(bigSize))
}

// waitLog waits for a log line holding every part (the server logs after the
// last ACK, which may come after the client has exited).
func waitLog(t *testing.T, logs *lockedBuffer, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			all := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					all = false
					break
				}
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in:\n%s", parts, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRefusedReads(t *testing.T) {
	needTool(t, "tftp")
	needTool(t, "busybox")
	root, _ := testRoot(t)
	// A symlink leaving Root must be refused even though its target exists.
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	port, logs := start(t, Config{Root: root})
	for _, name := range []string{"../etc/passwd", "/etc/passwd", "missing.bin", "escape", "subdir", "subdir/../small.txt"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if o, err := hpaGet(t, port, name, out); err == nil {
				t.Errorf("tftp get %q succeeded:\n%s", name, o)
			}
			if got, err := os.ReadFile(out); err == nil && len(got) > 0 {
				t.Errorf("tftp get %q wrote %d bytes", name, len(got))
			}
			out2 := filepath.Join(t.TempDir(), "out2")
			if o, err := busyboxGet(t, port, name, out2); err == nil {
				t.Errorf("busybox tftp -g %q succeeded:\n%s", name, o)
			}
			if got, err := os.ReadFile(out2); err == nil && len(got) > 0 {
				t.Errorf("busybox tftp -g %q wrote %d bytes", name, len(got))
			}
		})
	}
	waitLog(t, logs, "read refused", "file=missing.bin", "file not found")
	waitLog(t, logs, "read refused", "file=../etc/passwd")
	waitLog(t, logs, "read refused", "file=escape", "escapes")
}

func TestAllowList(t *testing.T) {
	needTool(t, "tftp")
	root, _ := testRoot(t)
	port, _ := start(t, Config{Root: root, Files: []string{"small.txt"}})
	out := filepath.Join(t.TempDir(), "small.txt")
	if o, err := hpaGet(t, port, "small.txt", out); err != nil {
		t.Fatalf("tftp get small.txt: %v\n%s", err, o)
	}
	sameFile(t, out, []byte("hello, iPXE\n"))
	if o, err := hpaGet(t, port, "big.bin", filepath.Join(t.TempDir(), "big.bin")); err == nil {
		t.Fatalf("big.bin is not in the allow-list but was served:\n%s", o)
	}
	if _, err := New(Config{Listen: "127.0.0.1:0", Root: root, Files: []string{"../x"}}); err == nil {
		t.Fatal("New accepted a Files entry with a directory part")
	}
}

func TestPutRefused(t *testing.T) {
	bin := needTool(t, "tftp")
	root, _ := testRoot(t)
	port, logs := start(t, Config{Root: root})
	local := filepath.Join(t.TempDir(), "upload.bin")
	if err := os.WriteFile(local, []byte("not welcome"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := run(t, bin, "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-c", "put", local, "upload.bin")
	if err == nil && !strings.Contains(strings.ToLower(o), "error") {
		t.Fatalf("tftp put succeeded:\n%s", o)
	}
	if _, err := os.Stat(filepath.Join(root, "upload.bin")); err == nil {
		t.Fatal("upload.bin was written to Root")
	}
	waitLog(t, logs, "write refused", "file=upload.bin")
}

// TestTransferSize uses pin/tftp's client, which asks for tsize (RFC 2349).
func TestTransferSize(t *testing.T) {
	root, big := testRoot(t)
	port, _ := start(t, Config{Root: root})
	c, err := tftp.NewClient(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	c.RequestTSize(true)
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive("big.bin", "octet")
	if err != nil {
		t.Fatal(err)
	}
	n, ok := wt.(tftp.IncomingTransfer).Size()
	if !ok || n != bigSize {
		t.Fatalf("tsize = %d, %v; want %d, true", n, ok, bigSize)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), big) {
		t.Fatalf("got %d bytes, want the %d served", buf.Len(), len(big))
	}
}

func TestServeIPXE(t *testing.T) {
	const file = "undionly.kpxe"
	want, err := os.ReadFile(filepath.Join(DefaultRoot, file))
	if err != nil {
		servers.Unavailable(t, fmt.Sprintf("%s/%s is not there (apt package ipxe): %v", DefaultRoot, file, err))
	}
	needTool(t, "tftp")
	port, _ := start(t, Config{}) // default Root
	out := filepath.Join(t.TempDir(), file)
	if o, err := hpaGet(t, port, file, out); err != nil {
		t.Fatalf("tftp get %s: %v\n%s", file, err, o)
	}
	sameFile(t, out, want)
}

func TestServeStopsWithContext(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", Root: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("second Serve succeeded")
	}
}

// TestAllowListedSymlink: Debian's /usr/lib/ipxe/ipxe.efi is a symlink to
// /boot/ipxe.efi. Allow-listed, it is served from its target; the same
// link not allow-listed stays refused.
func TestAllowListedSymlink(t *testing.T) {
	needTool(t, "tftp")
	root, _ := testRoot(t)
	outside := filepath.Join(t.TempDir(), "ipxe-x86_64.efi")
	if err := os.WriteFile(outside, []byte("an EFI binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "ipxe.efi")); err != nil {
		t.Fatal(err)
	}
	port, _ := start(t, Config{Root: root, Files: []string{"ipxe.efi", "small.txt"}})
	out := filepath.Join(t.TempDir(), "ipxe.efi")
	if o, err := hpaGet(t, port, "ipxe.efi", out); err != nil {
		t.Fatalf("tftp get ipxe.efi: %v\n%s", err, o)
	}
	sameFile(t, out, []byte("an EFI binary"))
	open, _ := start(t, Config{Root: root})
	if o, err := hpaGet(t, open, "ipxe.efi", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatalf("a symlink out of Root was served without an allow-list:\n%s", o)
	}
}
