package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// serverOptions configure the server half: what `anneal serve
// --netboot-listen` runs for nodes (site snapshot, bbolt node store, the
// netboot HTTP server) plus pxe/dhcp over the site's reservations.
type serverOptions struct {
	SiteDir string
	// StatePath is the bbolt file; "" runs DHCP alone (no store, no HTTP).
	StatePath string
	// HTTPAddr is the netboot HTTP listener ("127.0.0.1:0").
	HTTPAddr string
	// BaseURL is how machines reach HTTPAddr; "" is http://HTTPAddr.
	BaseURL string
	// DHCPAddr is the DHCP listener; port 0 picks a free port.
	DHCPAddr  string
	DHCPIface string
	// ServerIP is the DHCP server identifier (option 54) and siaddr.
	ServerIP string
	// LogPath receives the server's logs (slog text, level Info).
	LogPath string
	// Arm arms every node: provisioning, Target = the build the site wants,
	// a fresh nonce, expiry an hour ahead; as the rebuild engine does.
	Arm bool
	// RcvBuf, when > 0, sets SO_RCVBUF on the DHCP server's socket from
	// outside pxe/dhcp (which leaves the kernel default): an experiment,
	// reported as such.
	RcvBuf int
	// CPUProfile, when set, writes the server's CPU profile there.
	CPUProfile string
	// MaxConns bounds the netboot HTTP server's connections (0:
	// stormMaxConns); each simulated machine has an address of its own,
	// so the per-source bound is serve's default.
	MaxConns int
}

// stormMaxConns leaves room for a 10,000-machine storm at once (serve's
// default, --max-conns 4096, is sized for a boot budget).
const stormMaxConns = 16384

func (o *serverOptions) flags(fl *flag.FlagSet) {
	fl.StringVar(&o.SiteDir, "site", "", "site directory")
	fl.StringVar(&o.StatePath, "state", "", "bbolt state file (empty: DHCP only)")
	fl.StringVar(&o.HTTPAddr, "http", "127.0.0.1:0", "netboot HTTP listen address")
	fl.StringVar(&o.BaseURL, "base-url", "", "netboot URL as machines reach it (default http://HTTP)")
	fl.StringVar(&o.DHCPAddr, "dhcp", "127.0.0.1:0", "DHCP listen address (port 0: a free port)")
	fl.StringVar(&o.DHCPIface, "dhcp-iface", "", "DHCP interface (SO_BINDTODEVICE)")
	fl.StringVar(&o.ServerIP, "server-ip", "127.0.0.1", "DHCP server identifier")
	fl.StringVar(&o.LogPath, "log", os.DevNull, "server log file")
	fl.BoolVar(&o.Arm, "arm", true, "arm every node for an install")
	fl.IntVar(&o.RcvBuf, "rcvbuf", 0, "experiment: SO_RCVBUF of the DHCP socket in bytes (0: the kernel default)")
	fl.StringVar(&o.CPUProfile, "cpuprofile", "", "write the server's CPU profile to this file")
	fl.IntVar(&o.MaxConns, "max-conns", 0, "netboot HTTP connections at once (0: 16384)")
}

func (o *serverOptions) args() []string {
	return []string{"-site", o.SiteDir, "-state", o.StatePath, "-http", o.HTTPAddr, "-base-url", o.BaseURL,
		"-dhcp", o.DHCPAddr, "-dhcp-iface", o.DHCPIface, "-server-ip", o.ServerIP, "-log", o.LogPath,
		"-arm=" + strconv.FormatBool(o.Arm), "-rcvbuf", strconv.Itoa(o.RcvBuf), "-cpuprofile", o.CPUProfile,
		"-max-conns", strconv.Itoa(o.MaxConns)}
}

// serverReady is the server's first line: where it listens, what it
// loaded, and its memory before any machine boots.
type serverReady struct {
	HTTP        string   `json:"http"`
	DHCP        string   `json:"dhcp"`
	Nodes       int      `json:"nodes"`
	Leases      int      `json:"leases"`
	Armed       int      `json:"armed"`
	LoadSeconds float64  `json:"loadSeconds"`
	ArmSeconds  float64  `json:"armSeconds"`
	RcvBuf      int      `json:"rcvBuf,omitempty"` // SO_RCVBUF as the kernel reports it, when set
	Mem         memStats `json:"mem"`
	// MemGC is Mem after runtime.GC(), as a daemon that loaded its site
	// more than two minutes before (the runtime's forced GC period) is.
	MemGC memStats `json:"memGC"`
}

// serverStats answers "stats": memory, node states in the store, and how
// many log records were warnings or errors.
type serverStats struct {
	Mem      memStats       `json:"mem"`
	States   map[string]int `json:"states"`
	Warnings int64          `json:"warnings"`
	LastWarn string         `json:"lastWarn,omitempty"`
}

// memStats are the process's memory: Go's view (runtime/metrics) and the
// kernel's (/proc/self/status).
type memStats struct {
	HeapLive    uint64 `json:"heapLive"`    // /gc/heap/live:bytes, as of the last GC
	HeapObjects uint64 `json:"heapObjects"` // /memory/classes/heap/objects:bytes
	GoTotal     uint64 `json:"goTotal"`     // /memory/classes/total:bytes, all Go-mapped memory
	RSS         uint64 `json:"rss"`         // VmRSS
	HWM         uint64 `json:"hwm"`         // VmHWM, peak RSS
	HeapFree    uint64 `json:"heapFree"`    // /memory/classes/heap/free:bytes, free, not yet returned
	HeapUnused  uint64 `json:"heapUnused"`  // /memory/classes/heap/unused:bytes, fragmentation in spans in use
	Stacks      uint64 `json:"stacks"`      // /memory/classes/heap/stacks:bytes + os-stacks
	Metadata    uint64 `json:"metadata"`    // /memory/classes/metadata/...: GC and allocator metadata
	RSSAnon     uint64 `json:"rssAnon"`     // RssAnon: the Go heap, stacks, runtime
	RSSFile     uint64 `json:"rssFile"`     // RssFile: the binary and the bbolt mmap
}

func readMem() memStats {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/os-stacks:bytes"},
		{Name: "/memory/classes/metadata/mcache/inuse:bytes"},
		{Name: "/memory/classes/metadata/mspan/inuse:bytes"},
		{Name: "/memory/classes/metadata/other:bytes"},
	}
	metrics.Read(samples)
	val := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	m := memStats{HeapLive: val(0), HeapObjects: val(1), GoTotal: val(2), HeapFree: val(3), HeapUnused: val(4),
		Stacks: val(5) + val(6), Metadata: val(7) + val(8) + val(9)}
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(data)) {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "VmRSS":
				m.RSS = kb << 10
			case "VmHWM":
				m.HWM = kb << 10
			case "RssAnon":
				m.RSSAnon = kb << 10
			case "RssFile":
				m.RSSFile = kb << 10
			}
		}
	}
	return m
}

// netbootServer is the running server half.
type netbootServer struct {
	ready   serverReady
	store   *bolt.Store
	http    *http.Server
	cancel  context.CancelFunc
	done    chan error
	logf    *os.File
	warn    *warnCounter
	profile *os.File
}

func startServer(o serverOptions) (*netbootServer, error) {
	ns := &netbootServer{warn: &warnCounter{}}
	var err error
	if ns.logf, err = os.OpenFile(o.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	log := slog.New(&countingHandler{Handler: slog.NewTextHandler(ns.logf, &slog.HandlerOptions{Level: slog.LevelInfo}), c: ns.warn})

	t0 := time.Now()
	site, _, err := schema.LoadDir(context.Background(), o.SiteDir, schema.LoadOptions{})
	if err != nil {
		ns.logf.Close()
		return nil, fmt.Errorf("load site: %w", err)
	}
	ns.ready.LoadSeconds = time.Since(t0).Seconds()
	ns.ready.Nodes = len(site.Nodes)
	var current atomic.Pointer[schema.Site]
	current.Store(site)
	leases := dhcp.LeasesFromSite(site)
	ns.ready.Leases = len(leases)

	ctx, cancel := context.WithCancel(context.Background())
	ns.cancel = cancel
	fail := func(err error) (*netbootServer, error) {
		ns.close()
		return nil, err
	}

	base := o.BaseURL
	if o.StatePath != "" {
		if ns.store, err = bolt.Open(o.StatePath, 5*time.Second); err != nil {
			return fail(err)
		}
		if o.Arm {
			t1 := time.Now()
			if ns.ready.Armed, err = armAll(ctx, ns.store, site); err != nil {
				return fail(err)
			}
			ns.ready.ArmSeconds = time.Since(t1).Seconds()
		}
		ln, err := net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			return fail(err)
		}
		ns.ready.HTTP = ln.Addr().String()
		if base == "" {
			base = "http://" + ln.Addr().String()
		}
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		// The storm's machines are loopback addresses, not their
		// reservations: the lab binding lets loopback stand for a node.
		srv := &boot.Server{Site: current.Load, Nodes: ns.store, Key: key, BaseURL: base, Log: log.With("component", "netboot"),
			Binding: boot.BindLab}
		if err := srv.Check(); err != nil {
			ln.Close()
			return fail(err)
		}
		limits := netlimit.Limits{MaxConns: cmp.Or(o.MaxConns, stormMaxConns)}
		ns.http = netlimit.NewServer(srv, limits)
		bounded := netlimit.NewListener(ln, limits, log.With("server", "netboot"))
		go func() { _ = ns.http.Serve(bounded) }()
	}
	if base == "" {
		base = "http://" + o.ServerIP + ":8080"
	}

	dhcpAddr, err := net.ResolveUDPAddr("udp4", o.DHCPAddr)
	if err != nil {
		return fail(err)
	}
	if dhcpAddr.Port == 0 {
		c, err := net.ListenUDP("udp4", dhcpAddr)
		if err != nil {
			return fail(err)
		}
		dhcpAddr = c.LocalAddr().(*net.UDPAddr)
		c.Close()
	}
	ds, err := dhcp.New(dhcp.Config{
		Interface: o.DHCPIface,
		Addr:      dhcpAddr,
		ServerIP:  net.ParseIP(o.ServerIP),
		Lookup:    dhcp.LookupFrom(leases),
		IPXEScriptURL: func(mac net.HardwareAddr) string {
			return base + "/ipxe/" + mac.String()
		},
		Log: log.With("component", "dhcp"),
	})
	if err != nil {
		return fail(err)
	}
	ns.ready.DHCP = dhcpAddr.String()
	if o.RcvBuf > 0 {
		if ns.ready.RcvBuf, err = setRcvBuf(dhcpAddr.Port, o.RcvBuf); err != nil {
			_ = ds.Close()
			return fail(err)
		}
	}
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			_ = ds.Close()
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			_ = ds.Close()
			return fail(err)
		}
		ns.profile = f
	}
	ns.done = make(chan error, 1)
	go func() { ns.done <- ds.Serve(ctx) }()
	ns.ready.Mem = readMem()
	runtime.GC()
	ns.ready.MemGC = readMem()
	return ns, nil
}

// armAll arms every node that exists, as the rebuild engine does before a
// power cycle, through the store's own UpdateNode (concurrently, so bbolt
// batches the transactions).
func armAll(ctx context.Context, st node.Store, site *schema.Site) (int, error) {
	now := time.Now()
	var (
		g     errgroup.Group // a node that fails does not stop the others
		armed atomic.Int64
		mu    sync.Mutex
		errs  []error
	)
	g.SetLimit(32)
	for _, n := range site.Nodes {
		if !n.Exists() {
			continue
		}
		g.Go(func() error {
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			target := node.BuildSpecOf(site, n).ID()
			err := st.UpdateNode(ctx, n.Name, func(r *node.Record) error {
				r.State, r.Since, r.Reason = node.Provisioning, now, ""
				r.Target, r.Nonce, r.TokenExpires = target, hex.EncodeToString(b), now.Add(time.Hour)
				r.Attempts = 1
				return nil
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return nil
			}
			armed.Add(1)
			return nil
		})
	}
	_ = g.Wait() // never an error: each node's is in errs
	return int(armed.Load()), errors.Join(errs...)
}

// stats reads memory as it is (how ""), after a full collection ("gc":
// Go heap live is then the heap in use) or after the runtime has returned
// every free page to the kernel ("free", debug.FreeOSMemory).
func (ns *netbootServer) stats(how string) (serverStats, error) {
	switch how {
	case "gc":
		runtime.GC()
	case "free":
		debug.FreeOSMemory()
	}
	st := serverStats{Mem: readMem(), States: map[string]int{}}
	st.Warnings, st.LastWarn = ns.warn.get()
	if ns.store != nil {
		recs, err := ns.store.NodeRecords(context.Background())
		if err != nil {
			return st, err
		}
		for _, r := range recs {
			st.States[string(r.State)]++
		}
	}
	return st, nil
}

func (ns *netbootServer) close() {
	if ns.cancel != nil {
		ns.cancel()
	}
	if ns.done != nil {
		<-ns.done
	}
	if ns.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = ns.http.Shutdown(ctx)
		cancel()
	}
	if ns.store != nil {
		_ = ns.store.Close()
	}
	if ns.profile != nil {
		pprof.StopCPUProfile()
		_ = ns.profile.Close()
	}
	_ = ns.logf.Close()
}

// setRcvBuf finds this process's UDP socket bound to port (the DHCP
// server's, which pxe/dhcp does not expose) and sets its SO_RCVBUF with
// SO_RCVBUFFORCE (root), returning what the kernel then reports.
func setRcvBuf(port, size int) (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_DGRAM {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if in4, ok := sa.(*syscall.SockaddrInet4); err != nil || !ok || in4.Port != port {
			continue
		}
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size); err != nil {
			return 0, fmt.Errorf("SO_RCVBUFFORCE: %w", err)
		}
		return syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}
	return 0, fmt.Errorf("no UDP socket on port %d in this process", port)
}

// serveCmd is the child: it prints serverReady as one JSON line, answers
// each "stats [gc|free]" line on stdin with serverStats, and stops at EOF.
func serveCmd(args []string, stderr io.Writer) error {
	var o serverOptions
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	o.flags(fl)
	if err := fl.Parse(args); err != nil {
		return err
	}
	ns, err := startServer(o)
	if err != nil {
		return err
	}
	defer ns.close()
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(ns.ready); err != nil {
		return err
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, how, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if cmd != "stats" {
			continue
		}
		st, err := ns.stats(how)
		if err != nil {
			return err
		}
		if err := enc.Encode(st); err != nil {
			return err
		}
	}
	return nil
}

// serverHandle is the server half, in this process or a child.
type serverHandle interface {
	Ready() serverReady
	Stats(how string) (serverStats, error)
	Close() error
}

type inProcess struct{ ns *netbootServer }

func (p inProcess) Ready() serverReady                    { return p.ns.ready }
func (p inProcess) Stats(how string) (serverStats, error) { return p.ns.stats(how) }
func (p inProcess) Close() error                          { p.ns.close(); return nil }

// child runs `netboot serve` as a child process, optionally through a
// prefix command (ip netns exec NS).
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	ready serverReady
}

func startChild(prefix []string, o serverOptions, stderr io.Writer) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := append(append(append([]string{}, prefix...), exe, "serve"), o.args()...)
	c := &child{cmd: exec.Command(argv[0], argv[1:]...)}
	c.cmd.Stderr = stderr
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.out = bufio.NewScanner(out)
	c.out.Buffer(nil, 1<<20)
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	if err := c.readJSON(&c.ready); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("server did not start: %w", err)
	}
	return c, nil
}

func (c *child) readJSON(v any) error {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return err
		}
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(c.out.Bytes(), v)
}

func (c *child) Ready() serverReady { return c.ready }

func (c *child) Stats(how string) (serverStats, error) {
	var st serverStats
	if _, err := io.WriteString(c.in, "stats "+how+"\n"); err != nil {
		return st, err
	}
	return st, c.readJSON(&st)
}

// Close ends the child by closing its stdin, then by its PID if it lingers.
func (c *child) Close() error {
	_ = c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		return <-done
	}
}

// warnCounter counts log records at Warn or above and keeps the last one.
type warnCounter struct {
	mu   sync.Mutex
	n    int64
	last string
}

func (w *warnCounter) add(msg string) {
	w.mu.Lock()
	w.n++
	w.last = msg
	w.mu.Unlock()
}

func (w *warnCounter) get() (int64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.last
}

type countingHandler struct {
	slog.Handler
	c *warnCounter
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		h.c.add(msg)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithAttrs(as), c: h.c}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{Handler: h.Handler.WithGroup(name), c: h.c}
}
