package lab

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// testBootServer plays anneal's HTTP boot server (pxe/boot) by its
// contract: an iPXE script per MAC with the anneal.* kernel arguments, the
// install files under /install/{node}/{token}/, the install callback and
// the agent's reports, all recorded.
type testBootServer struct {
	*httptest.Server
	t     testing.TB
	site  *schema.Site
	byMAC map[string]*schema.Node

	mu sync.Mutex
	// mode per node: "" (install), "exit", "no-network-config",
	// "callback-403"; failing[node] > 0 answers that many requests of the
	// node 503 first.
	mode      map[string]string
	failing   map[string]int
	tokens    map[string]string // node → install token
	agentTok  map[string]string // node → agent token
	scripts   map[string]int    // node → scripts fetched
	files     map[string][]string
	callbacks map[string][]callback
	reports   map[string][]agentReport
	// artifacts, when not nil, are served at /artifacts/{sha256}/{name}
	// (by the SHA-256 in the path, whatever the content) and the scripts
	// name them there, as pxe/boot's with an artifact cache; fetched
	// records the paths served.
	artifacts map[string][]byte
	fetched   []string
	changed   chan struct{}
}

type callback struct {
	Token   string     `json:"token"`
	BuildID string     `json:"buildId"`
	Facts   node.Facts `json:"facts"`
}

type agentReport struct {
	BuildID string     `json:"buildId"`
	Facts   node.Facts `json:"facts"`
	Bearer  string     `json:"-"`
}

func newTestBootServer(t testing.TB, site *schema.Site) *testBootServer {
	t.Helper()
	b := &testBootServer{
		t: t, site: site, byMAC: map[string]*schema.Node{},
		mode: map[string]string{}, failing: map[string]int{}, tokens: map[string]string{}, agentTok: map[string]string{},
		scripts: map[string]int{}, files: map[string][]string{},
		callbacks: map[string][]callback{}, reports: map[string][]agentReport{},
		changed: make(chan struct{}),
	}
	for _, n := range site.Nodes {
		for _, i := range n.Interfaces {
			hw, err := net.ParseMAC(i.MAC)
			if err != nil {
				t.Fatal(err)
			}
			b.byMAC[hw.String()] = n
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ipxe/{mac}", b.script)
	mux.HandleFunc("GET /dhcp/ipxe/{mac}", b.script) // the URL tests give the DHCP server
	mux.HandleFunc("GET /artifacts/{sha}/{name}", b.artifact)
	mux.HandleFunc("GET /install/{node}/{token}/{file}", b.file)
	mux.HandleFunc("POST /api/v1/nodes/{node}/installed", b.installed)
	mux.HandleFunc("POST /api/v1/nodes/{node}/facts", b.facts)
	b.Server = httptest.NewServer(mux)
	t.Cleanup(b.Close)
	return b
}

func (b *testBootServer) setMode(node, mode string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mode[node] = mode
}

func (b *testBootServer) setFailing(node string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failing[node] = n
}

// unavailable answers 503 while the node's failing count lasts.
func (b *testBootServer) unavailable(w http.ResponseWriter, node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failing[node] <= 0 {
		return false
	}
	b.failing[node]--
	http.Error(w, "restarting", http.StatusServiceUnavailable)
	return true
}

func (b *testBootServer) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func token() string {
	x := make([]byte, 12)
	rand.Read(x)
	return hex.EncodeToString(x)
}

func (b *testBootServer) script(w http.ResponseWriter, r *http.Request) {
	n := b.byMAC[r.PathValue("mac")]
	if n == nil {
		fmt.Fprint(w, "#!ipxe\necho unknown MAC\nexit\n")
		return
	}
	if b.unavailable(w, n.Name) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scripts[n.Name]++
	b.notifyLocked()
	if b.mode[n.Name] == "exit" {
		fmt.Fprint(w, "#!ipxe\n# not armed: boot from disk\nexit\n")
		return
	}
	tok := token()
	b.tokens[n.Name] = tok
	spec := node.BuildSpecOf(b.site, n)
	if b.artifacts != nil {
		img := b.site.Image(n.Image)
		fmt.Fprintf(w, "#!ipxe\nimgfree\nkernel --name vmlinuz /artifacts/%s/vmlinuz initrd=initrd %s anneal.node=%s anneal.build=%s anneal.url=%s anneal.token=%s || goto failed\n"+
			"initrd --name initrd %s/artifacts/%s/initrd || goto failed\nboot || goto failed\n:failed\ninitrd http://127.0.0.1:1/never\nexit 1\n",
			img.Kernel.SHA256, strings.Join(spec.Image.KernelArgs, " "), n.Name, spec.ID(), b.URL, tok, b.URL, img.Initrd.SHA256)
		return
	}
	fmt.Fprintf(w, "#!ipxe\n:start\nkernel --name vmlinuz %s initrd=initrd %s anneal.node=%s anneal.build=%s anneal.url=%s anneal.token=%s\ninitrd %s\nboot\n",
		strings.Split(spec.Image.Kernel, "#")[0], strings.Join(spec.Image.KernelArgs, " "), n.Name, spec.ID(), b.URL, tok,
		strings.Split(spec.Image.Initrd, "#")[0])
}

func (b *testBootServer) artifact(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	data, ok := b.artifacts[r.PathValue("sha")]
	if ok {
		b.fetched = append(b.fetched, r.URL.Path)
		b.notifyLocked()
	}
	b.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(data)
}

func (b *testBootServer) setArtifact(sha string, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.artifacts == nil {
		b.artifacts = map[string][]byte{}
	}
	b.artifacts[sha] = data
}

func (b *testBootServer) artifactsFetched() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.fetched...)
}

func (b *testBootServer) file(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("node"), r.PathValue("file")
	if b.unavailable(w, name) {
		return
	}
	n := b.site.Node(name)
	b.mu.Lock()
	ok := n != nil && b.tokens[name] != "" && b.tokens[name] == r.PathValue("token")
	mode := b.mode[name]
	if ok {
		b.files[name] = append(b.files[name], file)
		b.notifyLocked()
	}
	b.mu.Unlock()
	if !ok {
		http.Error(w, "bad token", http.StatusForbidden)
		return
	}
	spec := node.BuildSpecOf(b.site, n)
	switch file {
	case "build.json":
		writeTestJSON(w, struct {
			node.BuildSpec
			ID string `json:"id"`
		}{spec, spec.ID()})
	case "network-config":
		if mode == "no-network-config" {
			http.Error(w, "no network config", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(renderNetplan(b.t, spec))
	case "agent.json":
		b.mu.Lock()
		tok := token()
		b.agentTok[name] = tok
		b.mu.Unlock()
		writeTestJSON(w, AgentConfig{URL: b.URL, Node: name, Token: tok})
	default:
		http.NotFound(w, r)
	}
}

func (b *testBootServer) installed(w http.ResponseWriter, r *http.Request) {
	var c callback
	if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := r.PathValue("node")
	if b.unavailable(w, name) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mode[name] == "callback-403" {
		http.Error(w, "token expired", http.StatusForbidden)
		return
	}
	if c.Token == "" || c.Token != b.tokens[name] {
		http.Error(w, "bad token", http.StatusForbidden)
		return
	}
	b.callbacks[name] = append(b.callbacks[name], c)
	b.notifyLocked()
	w.WriteHeader(http.StatusNoContent)
}

func (b *testBootServer) facts(w http.ResponseWriter, r *http.Request) {
	var rep agentReport
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rep.Bearer = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	name := r.PathValue("node")
	b.mu.Lock()
	defer b.mu.Unlock()
	if rep.Bearer == "" || rep.Bearer != b.agentTok[name] {
		http.Error(w, "bad agent token", http.StatusUnauthorized)
		return
	}
	b.reports[name] = append(b.reports[name], rep)
	b.notifyLocked()
	w.WriteHeader(http.StatusNoContent)
}

// snapshot returns copies of what the server recorded for a node.
func (b *testBootServer) snapshot(node string) (scripts int, files []string, cbs []callback, reps []agentReport) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.scripts[node], append([]string(nil), b.files[node]...),
		append([]callback(nil), b.callbacks[node]...), append([]agentReport(nil), b.reports[node]...)
}

// waitFor waits until cond holds over the recorded requests.
func (b *testBootServer) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for {
		b.mu.Lock()
		ch := b.changed
		b.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		}
	}
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// renderNetplan renders a build spec's network as netplan v2, as the boot
// server does: ports matched by MAC and named, bonds, VLANs, bridges,
// addresses, the default routes, resolvers; a parent's MTU at least its
// VLANs'.
func renderNetplan(t testing.TB, spec node.BuildSpec) []byte {
	type m = map[string]any
	ns := spec.Network
	eth, bonds, vlans, bridges := m{}, m{}, m{}, m{}
	devs := map[string]m{}
	for _, i := range ns.Interfaces {
		d := m{"match": m{"macaddress": i.MAC}, "set-name": i.NIC}
		eth[i.NIC], devs[i.NIC] = d, d
	}
	for _, b := range ns.Bonds {
		d := m{"interfaces": b.Members, "parameters": m{"mode": b.Mode}}
		bonds[b.Name], devs[b.Name] = d, d
	}
	for _, b := range ns.Bridges {
		d := m{"interfaces": b.Members, "parameters": m{"stp": b.STP}}
		bridges[b.Name], devs[b.Name] = d, d
	}
	links := map[string]string{}
	for _, v := range ns.VLANs {
		d := m{"id": v.ID, "link": v.Link}
		vlans[v.Name], devs[v.Name] = d, d
		links[v.Name] = v.Link
	}
	raise := func(dev string, mtu int) {
		for ; dev != ""; dev = links[dev] {
			if d := devs[dev]; d != nil {
				if cur, _ := d["mtu"].(int); cur < mtu {
					d["mtu"] = mtu
				}
			}
		}
	}
	for _, a := range ns.Addresses {
		d := devs[a.Device]
		if d == nil {
			t.Fatalf("address on unknown device %s", a.Device)
		}
		var addrs []string
		for _, x := range []string{a.IPv4, a.IPv6} {
			if x != "" {
				addrs = append(addrs, x)
			}
		}
		d["addresses"] = addrs
		if a.MTU > 0 {
			raise(a.Device, a.MTU)
		}
		var routes []m
		for _, g := range []string{a.Gateway4, a.Gateway6} {
			if g != "" {
				routes = append(routes, m{"to": "default", "via": g})
			}
		}
		if routes != nil {
			d["routes"] = routes
		}
		if len(ns.Resolvers) > 0 {
			d["nameservers"] = m{"addresses": ns.Resolvers, "search": ns.Search}
		}
	}
	// A bond's MTU is its VLANs' (set above); its members follow it.
	doc := m{"network": m{"version": 2, "ethernets": eth, "bonds": bonds, "vlans": vlans, "bridges": bridges}}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
