// Package lab is the fleet half of the simulated lab (`anneal lab`): what
// anneal meets in a data center, on loopback. A Fleet, built from a site,
// serves one virtual Redfish BMC per node on a single HTTPS listener
// (routed by the Host the client asked for: the node's BMC address from the
// site), and runs one virtual node per BMC. A node power-cycled with a
// one-time PXE override netboots against anneal's HTTP boot server the way
// iPXE and an installer would: it fetches its iPXE script by MAC, then its
// build, network configuration and agent configuration, derives its facts
// from what it was served (a wrong network configuration shows up as wrong
// facts), posts the install callback, and reports facts on an interval as
// `anneal agent` would. Its "disk" (installed build, facts, agent
// configuration) survives a lab restart under Config.StateDir.
//
// With Config.DHCP the netboot goes as on a real network: DHCP through the
// rack's relay to anneal's DHCP server, TFTP of the first-stage boot file,
// DHCP again as iPXE, the script the ACK names, and the kernel and initrds
// the script names, verified against the image's SHA-256 (see dhcp.go).
//
// Faults (a BMC that stops answering, an install that never calls back or
// reports a wrong interface, slow boots, firmware drift) are set from a file,
// at runtime through Fleet.SetFaults, or over HTTP at /lab/v1/faults.
//
// RedirectClient gives providers/bmc an HTTP client that reaches every BMC
// address of the site at the lab's listener, so the site needs no change.
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Defaults for Config.
const (
	DefaultListen = "127.0.0.1:0"
	// DefaultAgentInterval is how often `anneal agent` reports; the lab
	// command passes it unless told otherwise (Config.AgentInterval 0
	// disables agent reports).
	DefaultAgentInterval = 30 * time.Second
	DefaultRetryFor      = time.Minute
	// nodeHTTPTimeout bounds each request a virtual node makes.
	nodeHTTPTimeout = 30 * time.Second
)

// Config builds a Fleet.
type Config struct {
	// Site is the declared site; every node with a BMC address gets a
	// virtual BMC and node.
	Site *schema.Site
	// Resolve turns a node's bmc password reference into the password its
	// virtual BMC accepts (secret.Grants.Resolve: the lab plays the BMC at
	// the node's declared address, so it asks for that destination).
	Resolve func(schema.SecretRef, schema.SecretDest) (string, error)
	// Listen is the TCP address of the HTTPS listener (default
	// 127.0.0.1:0, a free port: see Fleet.Addr).
	Listen string
	// BootURL is the base URL of anneal's HTTP boot server
	// (http://127.0.0.1:8080): a PXE boot fetches {BootURL}/ipxe/{mac}.
	BootURL string
	// StateDir keeps each node's disk and power across restarts, one JSON
	// file per node; "" keeps them in memory only.
	StateDir string
	// AgentInterval is how often a running node reports its facts; 0
	// disables reports (see DefaultAgentInterval).
	AgentInterval time.Duration
	// RetryFor is how long a node's iPXE and installer keep retrying a
	// request that nothing answers or that fails with a 5xx (a restarting
	// anneal) before they give up (0: DefaultRetryFor).
	RetryFor time.Duration
	// Faults are the faults in force at start.
	Faults Faults
	// Logger receives one debug line per BMC request and the nodes' boot
	// events; nil discards.
	Logger *slog.Logger
	// HTTPClient is what the virtual nodes fetch and post with (nil: a
	// client with a 30 s timeout and no proxy).
	HTTPClient *http.Client
	// DHCP, when set, makes a PXE boot go through anneal's DHCP server
	// (relayed by the node's rack), TFTP and the script URL the DHCP ACK
	// names, and fetch and verify the kernel and initrds the script names;
	// nil fetches {BootURL}/ipxe/{mac} directly and no kernel or initrd.
	DHCP *DHCPConfig
	// Brownfield names nodes whose disk, when the lab first starts them
	// (no state file yet), already holds a system anneal did not install,
	// with no agent configuration: they start powered on and report
	// nothing until given one (Node.SetAgent, PUT
	// /lab/v1/nodes/NAME/agent: what `anneal enroll` hands out).
	Brownfield map[string]Brownfield
}

// Fleet is the lab's fleet: the virtual BMCs and nodes of one site. Create
// it with New, run it with Serve.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	srv    *http.Server
	cert   tls.Certificate
	pool   *x509.CertPool
	client *http.Client

	nodes map[string]*Node // by name
	order []*Node          // as in the site
	byBMC map[string]*Node // by BMC host: address and name, lower case

	// ctx bounds every node's boot and agent; cancelled when Serve returns
	// or on Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	persist persister

	// relays are the racks' DHCP relays, by region/rack (Config.DHCP).
	relays map[string]*relay

	mu     sync.RWMutex
	faults Faults
	closed bool
}

// New builds the fleet from the site, loads the nodes' disks from
// StateDir, makes the listener's self-signed certificate and binds the
// listener. It does not serve: see Serve.
func New(cfg Config) (*Fleet, error) {
	if cfg.Site == nil {
		return nil, errors.New("lab: no site")
	}
	if cfg.Resolve == nil {
		return nil, errors.New("lab: no secret resolver")
	}
	if cfg.BootURL == "" {
		return nil, errors.New("lab: no boot server URL")
	}
	if cfg.AgentInterval < 0 {
		return nil, fmt.Errorf("lab: negative agent interval %s", cfg.AgentInterval)
	}
	if cfg.RetryFor < 0 {
		return nil, fmt.Errorf("lab: negative retry time %s", cfg.RetryFor)
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = DefaultRetryFor
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	cfg.BootURL = strings.TrimSuffix(cfg.BootURL, "/")
	var dhcpServer *net.UDPAddr
	if d := cfg.DHCP; d != nil {
		dc := *d
		cfg.DHCP = &dc
		switch dc.Firmware {
		case "":
			dc.Firmware = FirmwarePXE
		case FirmwarePXE, FirmwareIPXE:
		default:
			return nil, fmt.Errorf("lab: firmware %q is neither %q nor %q", dc.Firmware, FirmwarePXE, FirmwareIPXE)
		}
		var err error
		if dhcpServer, err = net.ResolveUDPAddr("udp4", dc.Server); err != nil || dhcpServer.Port == 0 {
			return nil, fmt.Errorf("lab: DHCP server %q: want an IPv4 host:port (%v)", dc.Server, err)
		}
		if dc.TFTP != "" {
			if _, err := net.ResolveUDPAddr("udp4", dc.TFTP); err != nil {
				return nil, fmt.Errorf("lab: TFTP server %q: %w", dc.TFTP, err)
			}
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		cfg:   cfg,
		log:   log,
		nodes: map[string]*Node{},
		byBMC: map[string]*Node{},
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.client = cfg.HTTPClient
	if f.client == nil {
		f.client = &http.Client{Timeout: nodeHTTPTimeout, Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	if err := f.buildNodes(); err != nil {
		f.cancel()
		return nil, err
	}
	if err := f.SetFaults(cfg.Faults); err != nil {
		f.cancel()
		return nil, err
	}
	if err := f.preinstall(); err != nil {
		f.cancel()
		return nil, err
	}
	if err := f.loadState(); err != nil {
		f.cancel()
		return nil, err
	}
	if dhcpServer != nil {
		var racks []string
		for _, n := range f.order {
			if !slices.Contains(racks, n.rack) {
				racks = append(racks, n.rack)
			}
		}
		relays, err := startRelays(racks, dhcpServer)
		if err != nil {
			f.cancel()
			return nil, fmt.Errorf("lab: %w", err)
		}
		f.relays = relays
	}
	var hosts []string
	for h := range f.byBMC {
		hosts = append(hosts, h)
	}
	f.startPersister()
	cert, pool, err := selfSigned(hosts, time.Now())
	if err != nil {
		f.cancel()
		f.stopPersister()
		f.closeRelays()
		return nil, fmt.Errorf("lab: certificate: %w", err)
	}
	f.cert, f.pool = cert, pool
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		f.cancel()
		f.stopPersister()
		f.closeRelays()
		return nil, fmt.Errorf("lab: listen: %w", err)
	}
	// Every client is the one daemon on loopback: no per-source bound, and
	// generous timeouts for a thousand handshakes at once.
	limits := netlimit.Limits{MaxConns: 8192, MaxConnsPerSource: -1,
		ReadHeaderTimeout: time.Minute, ReadTimeout: 2 * time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	f.ln = netlimit.NewListener(ln, limits, log)
	f.srv = netlimit.NewServer(f.handler(), limits)
	f.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CurvePreferences: labCurves}
	f.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	// Connections' contexts stay under context.Background: deriving
	// thousands of them from f.ctx contends on its lock. A hung request
	// watches f.ctx itself.
	return f, nil
}

// buildNodes makes one virtual node per site node with a BMC address.
func (f *Fleet) buildNodes() error {
	site := f.cfg.Site
	for _, sn := range site.Nodes {
		host := normHost(sn.BMC.Address)
		if host == "" {
			f.log.Debug("lab: node has no bmc address: no virtual BMC", "node", sn.Name)
			continue
		}
		if sn.BMC.Password == "" {
			return fmt.Errorf("lab: node %s: no bmc password reference", sn.Name)
		}
		pw, err := f.cfg.Resolve(sn.BMC.Password, sn.BMCSecretDest())
		if err != nil {
			return fmt.Errorf("lab: node %s: bmc password: %w", sn.Name, err)
		}
		n := newNode(f, site, sn, host, pw)
		if other, dup := f.byBMC[host]; dup {
			return fmt.Errorf("lab: node %s: bmc address %s is also node %s's", sn.Name, host, other.name)
		}
		f.byBMC[host] = n
		for _, a := range sn.Addresses {
			if a.Interface != "bmc" {
				continue
			}
			for _, alias := range []string{a.FQDN, addrString(a.IPv4), addrString(a.IPv6)} {
				if h := normHost(alias); h != "" && f.byBMC[h] == nil {
					f.byBMC[h] = n
				}
			}
		}
		f.nodes[sn.Name] = n
		f.order = append(f.order, n)
	}
	return nil
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// normHost is a Host header or address without port, brackets, trailing
// dot, in lower case.
func normHost(h string) string {
	h = strings.TrimSpace(h)
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i] // IPv6 zone
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// Addr is the listener's address (host:port): where RedirectClient sends
// every BMC connection.
func (f *Fleet) Addr() string { return f.ln.Addr().String() }

// CertPool holds the listener's self-signed certificate, for a client that
// verifies it (its names are every BMC address and name of the site,
// localhost, 127.0.0.1 and ::1).
func (f *Fleet) CertPool() *x509.CertPool { return f.pool }

// Node returns a virtual node by name, or nil.
func (f *Fleet) Node(name string) *Node { return f.nodes[name] }

// Nodes returns the virtual nodes in site order.
func (f *Fleet) Nodes() []*Node { return append([]*Node(nil), f.order...) }

// Serve serves the BMCs and the control API until ctx ends, then stops the
// listener, powers nothing off but stops every node's boot and agent (a
// node's power and disk are kept in StateDir), and returns. Nodes that were
// on when the lab last stopped boot again (their disk, or a pending
// override) as Serve starts.
func (f *Fleet) Serve(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return errors.New("lab: fleet closed")
	}
	f.mu.Unlock()
	for _, n := range f.order {
		n.resume()
	}
	errc := make(chan error, 1)
	go func() { errc <- f.srv.ServeTLS(f.ln, "", "") }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	f.shutdown()
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("lab: serve: %w", err)
}

// Close stops a fleet that is not serving (or makes a serving one return):
// it releases the listener and stops the nodes.
func (f *Fleet) Close() error {
	f.shutdown()
	return nil
}

func (f *Fleet) shutdown() {
	f.mu.Lock()
	already := f.closed
	f.closed = true
	f.mu.Unlock()
	if already {
		f.wg.Wait()
		return
	}
	f.cancel() // hung BMC requests and node goroutines end
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(sctx); err != nil {
		f.srv.Close()
	}
	f.ln.Close()
	f.wg.Wait()
	f.stopPersister()
	f.closeRelays()
}

func (f *Fleet) closeRelays() {
	for _, r := range f.relays {
		r.close()
	}
}

// Status lists every node's status, in site order.
func (f *Fleet) Status() []NodeStatus {
	out := make([]NodeStatus, 0, len(f.order))
	for _, n := range f.order {
		out = append(out, n.Status())
	}
	return out
}

// spawn runs fn as a node goroutine, unless the fleet is shutting down.
func (f *Fleet) spawn(fn func()) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fn()
	}()
	return true
}

// firmwareOf is the node's firmware: a fault's override, else its
// hardware profile's.
func (f *Fleet) firmwareOf(n *Node) node.Firmware {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if fw, ok := f.faults.Firmware[n.name]; ok {
		return fw
	}
	return n.profileFW
}
