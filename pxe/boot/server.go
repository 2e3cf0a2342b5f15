// Package boot is the HTTP side of anneal's netboot: the iPXE script a node
// chains into from DHCP (GET /ipxe/{mac}), the installer's configuration
// (GET /install/{node}/{token}/{file}), the install callback (POST
// /api/v1/nodes/{node}/installed), the agent's periodic facts (POST
// /api/v1/nodes/{node}/facts), the anneal binary for installers (GET
// /agent/anneal) and the MACs that netbooted without being in the site (GET
// /api/v1/discovered); for the image installer, anneal's deploy initramfs
// (GET /deploy/anneal.cpio) and its progress reports (POST
// /api/v1/nodes/{node}/progress), deploy.go.
//
// A node installs only when the rebuild engine armed it: its record in the
// node.Store is provisioning, holds a nonce that has not expired, and
// targets the build the site wants now. The script then carries an install
// token (tokens.go) that the installer presents for its files, each served
// once per arming; the install writes it to a root-only file in the
// installed system, whose first boot presents it once for the callback
// (firstboot.go). The callback only marks the node installed: it is
// verified by its new agent's first report. Every route that acts for a
// node answers only the node's own provisioning address (source.go).
// Everything else boots from the local disk.
//
// Rendering (Render) needs no server, so `anneal render` shows exactly what
// a node would get.
package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// MinKeyLen is the shortest HMAC key the Server accepts.
const MinKeyLen = 16

// Server serves netboot over HTTP. Set its fields before the first request
// and do not change them after; it is safe for concurrent use.
type Server struct {
	// Site returns the desired site being converged; nil means none is
	// loaded yet and every route that needs it answers 503.
	Site func() *schema.Site
	// Nodes holds node records: whether a node is armed, for which build,
	// with which nonce.
	Nodes node.Store
	// Key signs install and agent tokens. It is never logged.
	Key []byte
	// BaseURL is how nodes reach this server ("http://10.10.1.2:8080").
	BaseURL string
	// Log receives the server's logs; default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// OnReport is called after a node's report is stored. It runs on the
	// request's goroutine and must not block long.
	OnReport func(node.Report)
	// AgentBinary is the path of the anneal binary served at GET
	// /agent/anneal for installers to fetch; "" answers 404.
	AgentBinary string
	// ArtifactDir keeps verified copies of the images' kernels and
	// initrds, served at GET /artifacts/{sha256}/{name}: each is fetched
	// once from the site's URL and served only if its SHA-256 is the
	// declared one. Scripts point there. "" turns it off: scripts fetch the
	// site's URLs directly, unverified.
	ArtifactDir string
	// ArtifactClient fetches artifacts (default: a client of its own).
	ArtifactClient *http.Client
	// Binding says which client addresses act for a node (default
	// BindNode: only the node's provisioning addresses; source.go).
	Binding SourceBinding
	// TrustedProxies are the HTTP reverse proxies that append the client
	// to X-Forwarded-For (never a NAT gateway: it cannot add the header);
	// nobody else's header is believed.
	TrustedProxies []netip.Prefix
	// ArtifactMaxSize bounds one artifact download in bytes, whether or
	// not the image declares its size (default DefaultArtifactMaxSize).
	ArtifactMaxSize int64
	// ArtifactCacheMax bounds ArtifactDir as a whole, in bytes (default
	// DefaultArtifactCacheMax): a download that could take it over is not
	// started, so a site declaring many large images cannot fill the disk.
	ArtifactCacheMax int64

	once      sync.Once
	mux       *http.ServeMux
	initErr   error
	index     atomic.Pointer[macIndex]
	disc      discovery
	renders   renderCache
	artifacts *artifactStore
}

// renderCache keeps armed nodes' rendered installs for the site they were
// rendered from: the script and every install file of one netboot read the
// same rendering (rendering is half the server's CPU in a boot storm). A
// new site empties it, a node's install callback drops its entry, and it
// holds at most maxRenders entries (about 15 KiB each): a netboot reads
// its files within seconds, so a small cache serves a storm.
type renderCache struct {
	mu   sync.Mutex
	site *schema.Site
	m    map[renderKey]*Rendered
	// slots bounds renders in flight to twice the CPUs: rendering is CPU
	// work, so more at once only piles up their garbage (a storm of 1,000
	// machines rendering together peaked at about 100 MB).
	slots chan struct{}
}

type renderKey struct{ node, token string }

const maxRenders = 256

// forget drops a node's renderings (its install is done).
func (c *renderCache) forget(node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if k.node == node {
			delete(c.m, k)
		}
	}
}

// render is Render through the cache.
func (s *Server) render(site *schema.Site, node *schema.Node, token string) (*Rendered, error) {
	c := &s.renders
	k := renderKey{node.Name, token}
	c.mu.Lock()
	if c.site != site || len(c.m) >= maxRenders {
		c.site, c.m = site, map[renderKey]*Rendered{}
	}
	rd := c.m[k]
	c.mu.Unlock()
	if rd != nil {
		return rd, nil
	}
	c.slots <- struct{}{}
	rd, err := render(site, node, s.BaseURL, token, s.artifacts != nil)
	<-c.slots
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.site == site {
		c.m[k] = rd
	}
	c.mu.Unlock()
	return rd, nil
}

// Check reports whether the Server is configured well enough to serve; a
// misconfigured Server answers every request with 500.
func (s *Server) Check() error {
	s.once.Do(s.init)
	return s.initErr
}

func (s *Server) init() {
	switch {
	case s.Site == nil:
		s.initErr = errors.New("boot: Server.Site is nil")
	case s.Nodes == nil:
		s.initErr = errors.New("boot: Server.Nodes is nil")
	case len(s.Key) < MinKeyLen:
		s.initErr = fmt.Errorf("boot: Server.Key is %d bytes, want at least %d", len(s.Key), MinKeyLen)
	default:
		if _, err := checkBaseURL(s.BaseURL); err != nil {
			s.initErr = fmt.Errorf("boot: Server.BaseURL: %w", err)
		} else if s.Binding, err = ParseSourceBinding(string(s.Binding)); err != nil {
			s.initErr = fmt.Errorf("boot: Server.Binding: %w", err)
		}
	}
	if s.initErr != nil {
		s.log().Error("boot: server misconfigured", "err", s.initErr)
		return
	}
	s.renders.slots = make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ipxe/{mac}", s.handleIPXE)
	mux.HandleFunc("GET /install/{node}/{token}/{file}", s.handleInstall)
	mux.HandleFunc("POST /api/v1/nodes/{node}/installed", s.handleInstalled)
	mux.HandleFunc("POST /api/v1/nodes/{node}/facts", s.handleFacts)
	mux.HandleFunc("GET /api/v1/discovered", s.handleDiscovered)
	mux.HandleFunc("GET /agent/anneal", s.handleAgentBinary)
	mux.HandleFunc("GET "+DeployInitrdPath, s.handleDeployInitrd)
	mux.HandleFunc("POST /api/v1/nodes/{node}/progress", s.handleProgress)
	mux.HandleFunc("GET /artifacts/{sha256}/{name}", s.handleArtifact)
	if s.ArtifactDir != "" {
		client := s.ArtifactClient
		if client == nil {
			client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		}
		s.artifacts = &artifactStore{dir: s.ArtifactDir, client: client, now: s.now}
	}
	s.mux = mux
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.Check(); err != nil {
		http.Error(w, "netboot server misconfigured", http.StatusInternalServerError)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// macIndex maps every interface MAC of a site's nodes to its node, built
// once per site snapshot.
type macIndex struct {
	site  *schema.Site
	nodes map[string]*schema.Node
}

func (s *Server) nodeByMAC(site *schema.Site, mac string) *schema.Node {
	idx := s.index.Load()
	if idx == nil || idx.site != site {
		idx = &macIndex{site: site, nodes: map[string]*schema.Node{}}
		for _, n := range site.Nodes {
			for _, i := range n.Interfaces {
				if hw, err := net.ParseMAC(i.MAC); err == nil {
					idx.nodes[hw.String()] = n
				}
			}
		}
		s.index.Store(idx)
	}
	return idx.nodes[mac]
}

// handleIPXE answers GET /ipxe/{mac}: the install script of an armed node,
// or a script that says why not and exits to the local disk.
func (s *Server) handleIPXE(w http.ResponseWriter, r *http.Request) {
	hw, err := net.ParseMAC(r.PathValue("mac"))
	if err != nil || len(hw) != 6 {
		http.Error(w, "not a MAC address", http.StatusBadRequest)
		return
	}
	mac, remote, now := hw.String(), remoteHost(r), s.now()
	site := s.Site()
	if site == nil {
		s.log().Warn("boot: no site loaded, not answering netboot", "mac", mac, "remote", remote)
		http.Error(w, "no site loaded", http.StatusServiceUnavailable)
		return
	}
	nd := s.nodeByMAC(site, mac)
	if nd == nil {
		s.disc.seen(mac, remote, now)
		s.log().Warn("boot: netboot from a MAC not in the site", "mac", mac, "site", siteName(site), "remote", remote)
		writeScript(w, exitScript(fmt.Sprintf("MAC %s is not in site %s", mac, siteName(site))))
		return
	}
	if err := s.checkSource(r, site, nd); err != nil {
		s.fail(w, r, "iPXE script", nd.Name, err)
		return
	}
	rec, err := s.Nodes.NodeRecord(r.Context(), nd.Name)
	if err != nil {
		s.log().Error("boot: read node record, not booting", "node", nd.Name, "mac", mac, "err", err)
		http.Error(w, "node store unavailable", http.StatusInternalServerError)
		return
	}
	want := node.BuildSpecOf(site, nd).ID()
	if why := notArmed(nd, rec, want, now); why != "" {
		s.log().Info("boot: node not armed, booting from local disk", "node", nd.Name, "mac", mac, "reason", why, "remote", remote)
		writeScript(w, exitScript(fmt.Sprintf("%s is not armed for an install: %s", nd.Name, why), "booting from the local disk"))
		return
	}
	if !rec.InstallFetched.IsZero() {
		// The installer already ran from this arming: this is the installed
		// system's reboot on a machine that netboots first.
		s.log().Info("boot: install already fetched, booting from local disk", "node", nd.Name, "mac", mac, "remote", remote)
		writeScript(w, exitScript(fmt.Sprintf("%s already fetched its install", nd.Name), "booting from the local disk"))
		return
	}
	if err := s.Nodes.UpdateNode(r.Context(), nd.Name, func(rec *node.Record) error {
		rec.Netbooted = now
		return nil
	}); err != nil {
		s.log().Error("boot: record netboot, not booting", "node", nd.Name, "err", err)
		http.Error(w, "node store unavailable", http.StatusInternalServerError)
		return
	}
	if img := site.Image(nd.Image); img != nil && img.Installer == schema.InstallerImage {
		// The deploy environment is this server's binary: refuse here,
		// where the operator sees it, not in a kernel panic on the node.
		if err := CheckDeployBinary(s.AgentBinary, img.Arch); err != nil {
			s.log().Error("boot: no deploy environment for installer image, not booting", "node", nd.Name, "err", err)
			http.Error(w, "no deploy environment", http.StatusServiceUnavailable)
			return
		}
	}
	token := MintInstallToken(s.Key, nd.Name, rec.Target, rec.Nonce, rec.TokenExpires)
	rd, err := s.render(site, nd, token)
	if err != nil {
		s.log().Error("boot: render install, not booting", "node", nd.Name, "err", err)
		http.Error(w, "cannot render the install", http.StatusInternalServerError)
		return
	}
	s.log().Info("boot: serving install script", "node", nd.Name, "mac", mac, "build", rd.BuildID, "installer", string(rd.Installer), "remote", remote)
	writeScript(w, rd.Script)
}

// notArmed says why a node's next netboot must not install, or "" when it
// installs want.
func notArmed(nd *schema.Node, rec *node.Record, want string, now time.Time) string {
	switch {
	case !nd.Exists():
		return "the node is decommissioned"
	case rec == nil:
		return "anneal has no record of it"
	case rec.State == node.Unknown:
		return "no rebuild of it is in progress"
	case rec.State != node.Provisioning:
		return fmt.Sprintf("its state is %q, not provisioning", string(rec.State))
	case rec.Nonce == "":
		return "its install token was already used"
	case !now.Before(rec.TokenExpires):
		return "its arming expired at " + rec.TokenExpires.UTC().Format(time.RFC3339)
	case rec.Target != want:
		return fmt.Sprintf("it is armed for build %s but the site now wants %s", rec.Target, want)
	}
	return ""
}

func writeScript(w http.ResponseWriter, script string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(script))
}

// handleAgentBinary serves the anneal binary for installers.
func (s *Server) handleAgentBinary(w http.ResponseWriter, r *http.Request) {
	if s.AgentBinary == "" {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(s.AgentBinary)
	if err != nil {
		s.log().Error("boot: open agent binary", "err", err)
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.log().Error("boot: agent binary is not a regular file", "path", s.AgentBinary, "err", err)
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "anneal", st.ModTime(), f)
}

func siteName(site *schema.Site) string {
	if site.Config != nil {
		return site.Config.Name
	}
	return "(unnamed)"
}

// remoteHost is the client's IP address, without the port.
func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
