// Package tftp is anneal's read-only TFTP server for the provisioning
// network: it hands PXE firmware the first-stage iPXE binaries
// (undionly.kpxe, ipxe.efi, snponly.efi) named by the DHCP server.
//
// The protocol is github.com/pin/tftp/v3; this package only decides what may
// be read. A request names one plain file directly in Config.Root: names with
// a slash, a backslash or "..", absolute names and anything that is not a
// regular file are refused. Files are opened through an os.Root, so a symlink
// that leaves Root is refused too (on Debian, /usr/lib/ipxe/ipxe.efi is a
// symlink to /boot/ipxe.efi: serve it from a Root that holds the file itself).
// Write requests are always refused.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pin/tftp/v3"
)

// Defaults for Config.
const (
	DefaultListen = ":69"
	DefaultRoot   = "/usr/lib/ipxe"
)

// Config configures a Server.
type Config struct {
	// Listen is the UDP address to listen on; default ":69".
	Listen string
	// Root is the directory served; default /usr/lib/ipxe.
	Root string
	// Files, if not empty, is the allow-list of file names in Root; empty
	// allows every regular file directly in Root. An allow-listed name
	// may be a symlink out of Root (Debian's /usr/lib/ipxe/ipxe.efi points
	// to /boot/ipxe.efi): it is resolved once, at New, and served from its
	// target; any other symlink out of Root is refused.
	Files []string
	// Timeout is the retransmission timeout of a transfer; zero keeps the
	// pin/tftp default (5 s).
	Timeout time.Duration
	// Log receives one line per transfer; default slog.Default().
	Log *slog.Logger
}

// Server is a read-only TFTP server. Create it with New.
type Server struct {
	cfg     Config
	log     *slog.Logger
	root    *os.Root
	allowed map[string]bool   // nil: every regular file in root
	linked  map[string]string // allow-listed symlinks: name → resolved target
	conn    *net.UDPConn
	srv     *tftp.Server

	mu     sync.Mutex
	served bool
}

// Errors sent to clients (pin/tftp sends every error with code 1, "file not
// found"; the message is the text below).
var (
	errNotFound = errors.New("file not found")
	errReadOnly = errors.New("access violation: server is read-only")
	errBadName  = errors.New("access violation: only plain file names are served")
)

// New checks cfg, fills in defaults, opens Root and binds the server's
// socket (so Addr is known as soon as New returns; Serve answers requests).
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("tftp: Config.Timeout %s is negative", cfg.Timeout)
	}
	var allowed map[string]bool
	if len(cfg.Files) > 0 {
		allowed = make(map[string]bool, len(cfg.Files))
		for _, f := range cfg.Files {
			if !plainName(f) {
				return nil, fmt.Errorf("tftp: Config.Files: %q is not a plain file name", f)
			}
			allowed[f] = true
		}
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("tftp: open root: %w", err)
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.Listen)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("tftp: listen address %q: %w", cfg.Listen, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("tftp: listen on %s: %w", cfg.Listen, err)
	}
	linked := map[string]string{}
	for name := range allowed {
		fi, err := root.Lstat(name)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue // absent files are "not found" at request time
		}
		target, err := filepath.EvalSymlinks(filepath.Join(cfg.Root, name))
		if err != nil {
			root.Close()
			conn.Close()
			return nil, fmt.Errorf("tftp: allow-listed %s: %w", name, err)
		}
		linked[name] = target
	}
	s := &Server{cfg: cfg, log: cfg.Log, root: root, allowed: allowed, linked: linked, conn: conn}
	s.srv = tftp.NewServer(s.read, s.write)
	if cfg.Timeout > 0 {
		s.srv.SetTimeout(cfg.Timeout)
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Serve answers TFTP requests until ctx ends, then shuts the pin/tftp server
// down (waiting for transfers in flight), closes the socket and Root, and
// returns nil. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.served {
		s.mu.Unlock()
		return errors.New("tftp: Serve called twice")
	}
	s.served = true
	s.mu.Unlock()
	defer s.root.Close()

	s.log.Info("tftp: serving", "addr", s.Addr().String(), "root", s.cfg.Root, "files", s.cfg.Files)
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.conn) }()
	select {
	case <-ctx.Done():
		s.srv.Shutdown()
		s.conn.Close()
		<-done
		return nil
	case err := <-done:
		s.conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return errors.New("tftp: server stopped")
		}
		return fmt.Errorf("tftp: serve: %w", err)
	}
}

// Close releases the socket and Root of a server that is not serving.
func (s *Server) Close() error {
	err := s.conn.Close()
	s.root.Close()
	return err
}

// plainName reports whether name is one file name with no directory part.
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." &&
		!strings.ContainsAny(name, "/\\\x00") && !strings.Contains(name, "..")
}

// remote is the client address of a transfer, or "" if unknown.
func remote(t any) string {
	if ot, ok := t.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		return a.String()
	}
	if it, ok := t.(tftp.IncomingTransfer); ok {
		a := it.RemoteAddr()
		return a.String()
	}
	return ""
}

// read is the pin/tftp read handler: it sends one file of Root.
func (s *Server) read(name string, rf io.ReaderFrom) error {
	start := time.Now()
	log := s.log.With("client", remote(rf), "file", name)
	f, size, err := s.open(name)
	if err != nil {
		log.Warn("tftp: read refused", "err", err)
		if errors.Is(err, errBadName) {
			return errBadName
		}
		return errNotFound // the client learns nothing more
	}
	defer f.Close()
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(size) // used only when the client asked for tsize
	}
	n, err := rf.ReadFrom(f)
	if err != nil {
		log.Warn("tftp: read failed", "bytes", n, "size", size, "err", err)
		return err
	}
	log.Info("tftp: read", "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// open opens name in Root if it may be served and returns it with its size.
func (s *Server) open(name string) (*os.File, int64, error) {
	if !plainName(name) {
		return nil, 0, errBadName
	}
	if s.allowed != nil && !s.allowed[name] {
		return nil, 0, fmt.Errorf("%w: not in the allow-list", errNotFound)
	}
	// os.Root refuses symlinks that leave Root, except the allow-listed
	// ones resolved at New.
	var f *os.File
	var err error
	if target, ok := s.linked[name]; ok {
		f, err = os.Open(target)
	} else {
		f, err = s.root.Open(name)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, errNotFound
		}
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: not a regular file (%s)", errNotFound, fi.Mode().Type())
	}
	return f, fi.Size(), nil
}

// write is the pin/tftp write handler: it refuses every write.
func (s *Server) write(name string, wt io.WriterTo) error {
	s.log.Warn("tftp: write refused", "client", remote(wt), "file", name)
	return errReadOnly
}
