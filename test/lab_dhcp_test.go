package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/lab"
	"github.com/anneal-dev/anneal/schema"
)

// freeUDP is a free UDP address on loopback.
func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// artifactMirror serves every image artifact of the example site, moved to
// it: /HOST/PATH answers "lab artifact /HOST/PATH", and the site declares
// that content's SHA-256. It counts the requests.
type artifactMirror struct {
	*httptest.Server
	mu   sync.Mutex
	hits int
}

func artifactContent(path string) []byte { return []byte("lab artifact " + path) }

func (m *artifactMirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.hits++
	m.mu.Unlock()
	_, _ = w.Write(artifactContent(r.URL.Path))
}

// labDHCPSite is the example site in a git repository, its DNS targets on
// free loopback ports and its images' artifacts on a mirror in the test
// with SHA-256 that match; it returns the repository and the mirror.
func labDHCPSite(t *testing.T) (string, *artifactMirror) {
	t.Helper()
	m := &artifactMirror{}
	m.Server = httptest.NewServer(m)
	t.Cleanup(m.Close)
	orig, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replace := map[string]string{
		"127.0.0.1:5301":        freeAddr(t),
		"127.0.0.1:5302":        freeAddr(t),
		"http://127.0.0.1:8081": "http://" + freeAddr(t),
	}
	for _, img := range orig.Images {
		arts := []*schema.Artifact{&img.Kernel, &img.Initrd, img.Rootfs}
		if img.Disk != nil {
			arts = append(arts, &img.Disk.Artifact)
		}
		for _, a := range arts {
			if a == nil || a.URL == "" {
				continue
			}
			u, err := url.Parse(a.URL)
			if err != nil {
				t.Fatal(err)
			}
			replace[u.Scheme+"://"+u.Host] = m.URL + "/" + u.Host
			sum := sha256.Sum256(artifactContent("/" + u.Host + u.Path))
			replace[a.SHA256] = hex.EncodeToString(sum[:])
		}
	}
	site := copySite(t, "../examples/site-repo", replace)
	git(t, site, "init", "-q", "-b", "main")
	git(t, site, "add", "-A")
	git(t, site, "commit", "-q", "-m", "A")
	return site, m
}

// TestLabDHCPNetboot: `anneal lab --dhcp-server` against `anneal serve
// --lab --dhcp-listen --tftp-listen`: the lab's boot URL leads nowhere, so
// every node anneal rebuilds gets there through DHCP (relayed by its rack),
// TFTP of undionly.kpxe, DHCP again as iPXE, the script the ACK names and
// the kernel and initrd of anneal's verified copies, which the lab checks
// against the site's SHA-256; the first converge verifies every active node.
func TestLabDHCPNetboot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "the lab's DHCP relays bind port 67 on loopback: run as root")
	}
	site, mirror := labDHCPSite(t)
	dhcpAddr, tftpAddr, boot := freeUDP(t), freeUDP(t), freeAddr(t)
	tftpRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(tftpRoot, "undionly.kpxe"), []byte("undionly.kpxe, as it were"), 0o644); err != nil {
		t.Fatal(err)
	}

	labDir := t.TempDir()
	cmd := exec.Command(annealBin, "lab", "--site", site, "--dir", labDir, "--boot-url", "http://127.0.0.1:1",
		"--dhcp-server", dhcpAddr, "--tftp-server", tftpAddr, "--boot-delay", "100ms", "--agent-interval", "1s")
	cmd.Env = append(baseEnv(t.TempDir()), labEnv...)
	labLogs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = labLogs, labLogs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("lab log:\n%s", labLogs.String())
		}
	})
	e, err := lab.WaitEndpoints(t.Context(), labDir, 30*time.Second)
	if err != nil {
		t.Fatalf("the lab did not start (%v):\n%s", err, labLogs.String())
	}

	api, serveLogs, _ := startServeLogged(t, labEnv, "--repo", site, "--interval", "1s", "--state", filepath.Join(t.TempDir(), "state.db"),
		"--netboot-listen", boot, "--lab", labDir, "--install-timeout", "20s", "--token", "env:ANNEAL_API_TOKEN",
		"--dhcp-listen", dhcpAddr, "--dhcp-server-ip", "127.0.0.1", "--tftp-listen", tftpAddr, "--tftp-root", tftpRoot)
	rev := git(t, site, "rev-parse", "HEAD")
	waitStatus(t, api, "revision A applied", func(s serveStatus) bool { return s.AppliedRevision == rev })

	loaded, _, err := schema.LoadDir(context.Background(), site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var list []apiNode
	getJSON(t, api+"/api/v1/nodes", &list)
	active := 0
	for _, n := range list {
		if sn := loaded.Node(n.Name); sn == nil || sn.State != schema.StateActive {
			continue
		}
		active++
		if n.Live == nil || !n.Live.UpToDate {
			t.Errorf("%s not verified on its build: %+v", n.Name, n.Live)
		}
	}
	var nodes []struct {
		Name      string `json:"name"`
		Installs  int    `json:"installs"`
		LastError string `json:"lastError"`
	}
	getJSON(t, e.Control+"/lab/v1/nodes", &nodes)
	installed := 0
	for _, n := range nodes {
		installed += n.Installs
		if n.LastError != "" {
			t.Errorf("lab node %s: %s", n.Name, n.LastError)
		}
	}
	if active == 0 || installed != active {
		t.Errorf("%d installs in the lab for %d active nodes", installed, active)
	}
	sl, ll := serveLogs.String(), labLogs.String()
	acks := strings.Count(sl, "dhcp: reply") - strings.Count(sl, "type=OFFER")
	reads := strings.Count(sl, `msg="tftp: read"`)
	fetched := strings.Count(ll, "lab: netboot images fetched") - strings.Count(ll, "verified=0")
	mirror.mu.Lock()
	hits := mirror.hits
	mirror.mu.Unlock()
	t.Logf("%d active nodes: %d DHCP ACKs, %d TFTP reads, %d netboots with verified images; %d artifact downloads by anneal", active, acks, reads, fetched, hits)
	if acks < 2*active {
		t.Errorf("%d DHCP ACKs for %d nodes, want 2 each (PXE ROM, iPXE)", acks, active)
	}
	if reads < active {
		t.Errorf("%d TFTP reads for %d nodes", reads, active)
	}
	if fetched != active {
		t.Errorf("%d netboots fetched verified images, want %d", fetched, active)
	}
	if hits == 0 {
		t.Error("anneal never fetched an artifact from the mirror")
	}
	if bytes.Contains([]byte(ll), []byte("level=WARN")) {
		t.Errorf("the lab warned:\n%s", ll)
	}
}
