package boot

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/schema"
)

// upstream is an image mirror: it serves files by path, counts requests,
// and can be slowed down.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	hits  atomic.Int64
	delay time.Duration
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{files: map[string][]byte{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		data, ok := u.files[r.URL.Path]
		delay := u.delay
		u.mu.Unlock()
		time.Sleep(delay)
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(data)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) put(path string, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[path] = data
}

func sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// artifactFixture is a fixture whose server keeps verified copies, and
// whose site's Ubuntu image is on a test mirror: kernel as declared,
// initrd declared with the SHA-256 of other bytes than the mirror has
// until fixInitrd.
func artifactFixture(t *testing.T) (*fixture, *upstream, *schema.Image) {
	f := newFixture(t)
	f.srv.ArtifactDir = filepath.Join(t.TempDir(), "artifacts")
	u := newUpstream(t)
	kernel := []byte(strings.Repeat("kernel bytes ", 1000))
	u.put("/vmlinuz", kernel)
	u.put("/initrd", []byte("an initrd someone swapped on the mirror"))
	img := f.site.Image(f.site.Node("e1n01").Image)
	img.Kernel = schema.Artifact{URL: u.URL + "/vmlinuz", SHA256: sum(kernel)}
	img.Initrd = schema.Artifact{URL: u.URL + "/initrd", SHA256: sum([]byte("the initrd the site reviewed"))}
	return f, u, img
}

// TestArtifacts: the script points at the server's verified copies; a copy
// is fetched once however many machines ask at once, served from disk
// after; bytes whose SHA-256 is not the declared one are never served nor
// kept, and a broken mirror is not asked again for a while; an artifact
// no image declares is 404 (no open proxy).
func TestArtifacts(t *testing.T) {
	f, u, img := artifactFixture(t)
	f.arm("e1n01")
	status, script := f.get("/ipxe/" + f.site.Node("e1n01").Interfaces[0].MAC)
	kernelPath := "/artifacts/" + img.Kernel.SHA256 + "/vmlinuz"
	initrdPath := "/artifacts/" + img.Initrd.SHA256 + "/initrd"
	if status != http.StatusOK || !strings.Contains(script, "kernel --name vmlinuz "+f.srv.BaseURL+kernelPath+" ") ||
		!strings.Contains(script, "initrd --name initrd "+f.srv.BaseURL+initrdPath+" ") || strings.Contains(script, u.URL) {
		t.Fatalf("script (%d) does not fetch through the server:\n%s", status, script)
	}

	// Twenty machines ask for the kernel at once: one download.
	u.mu.Lock()
	u.delay = 200 * time.Millisecond
	u.mu.Unlock()
	var wg sync.WaitGroup
	bodies := make([]string, 20)
	codes := make([]int, 20)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.client.Get(f.ts.URL + kernelPath)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			codes[i], bodies[i] = resp.StatusCode, string(b)
		}()
	}
	wg.Wait()
	for i := range bodies {
		if codes[i] != http.StatusOK || sum([]byte(bodies[i])) != img.Kernel.SHA256 {
			t.Fatalf("request %d: %d, %d bytes", i, codes[i], len(bodies[i]))
		}
	}
	if n := u.hits.Load(); n != 1 {
		t.Fatalf("the mirror was asked %d times for one artifact", n)
	}
	// Later machines: from disk.
	if code, body := f.get(kernelPath); code != http.StatusOK || sum([]byte(body)) != img.Kernel.SHA256 || u.hits.Load() != 1 {
		t.Fatalf("cached kernel: %d, %d bytes, mirror asked %d times", code, len(body), u.hits.Load())
	}

	// The initrd on the mirror is not the one the site declares.
	code, body := f.get(initrdPath)
	if code != http.StatusBadGateway || !strings.Contains(body, "the site declares "+img.Initrd.SHA256) {
		t.Fatalf("swapped initrd: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(f.srv.ArtifactDir, img.Initrd.SHA256)); !os.IsNotExist(err) {
		t.Fatalf("the swapped initrd was kept: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(f.srv.ArtifactDir, ".fetch-*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	hits := u.hits.Load()
	if code, _ := f.get(initrdPath); code != http.StatusBadGateway || u.hits.Load() != hits {
		t.Fatalf("a second request within %s: %d, mirror asked %d more times", artifactRetryAfter, code, u.hits.Load()-hits)
	}
	// The mirror is fixed; after the pause the next request fetches again.
	u.put("/initrd", []byte("the initrd the site reviewed"))
	f.setNow(t0.Add(artifactRetryAfter + time.Second))
	if code, body := f.get(initrdPath); code != http.StatusOK || body != "the initrd the site reviewed" {
		t.Fatalf("fixed mirror: %d %q", code, body)
	}

	// Not declared by any image, or not even a SHA-256: 404, the mirror
	// not asked.
	hits = u.hits.Load()
	for _, path := range []string{"/artifacts/" + sum([]byte("anything")) + "/x", "/artifacts/..%2f..%2fetc/passwd"} {
		if code, _ := f.get(path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	if u.hits.Load() != hits {
		t.Errorf("the mirror was asked for an undeclared artifact")
	}
}

// TestArtifactsOff: without ArtifactDir the script fetches the site's URLs
// directly and says they are not verified, and /artifacts is 404.
func TestArtifactsOff(t *testing.T) {
	f := newFixture(t)
	f.arm("e1n01")
	img := f.site.Image(f.site.Node("e1n01").Image)
	_, script := f.get("/ipxe/" + f.site.Node("e1n01").Interfaces[0].MAC)
	if !strings.Contains(script, "kernel --name vmlinuz "+img.Kernel.URL+" ") || !strings.Contains(script, "not verified by anneal") {
		t.Fatalf("script:\n%s", script)
	}
	if code, _ := f.get("/artifacts/" + img.Kernel.SHA256 + "/vmlinuz"); code != http.StatusNotFound {
		t.Fatalf("/artifacts without a directory: %d", code)
	}
}

// TestPruneArtifacts: copies the site no longer declares go once unused
// for the given time, declared ones stay however old, serving one counts
// as use, and a download a crash left half done goes.
func TestPruneArtifacts(t *testing.T) {
	f, _, img := artifactFixture(t)
	if code, _ := f.get("/artifacts/" + img.Kernel.SHA256 + "/vmlinuz"); code != http.StatusOK {
		t.Fatalf("kernel: %d", code)
	}
	dir := f.srv.ArtifactDir
	old := t0.Add(-30 * 24 * time.Hour)
	write := func(name string, at time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	gone, recent := sum([]byte("an image the site dropped")), sum([]byte("an image dropped yesterday"))
	write(gone, old)
	write(recent, t0.Add(-24*time.Hour))
	write(".fetch-123", old)
	kernel := filepath.Join(dir, img.Kernel.SHA256)
	if err := os.Chtimes(kernel, old, old); err != nil {
		t.Fatal(err)
	}
	n, err := f.srv.PruneArtifacts(7 * 24 * time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
	for name, want := range map[string]bool{gone: false, ".fetch-123": false, recent: true, img.Kernel.SHA256: true} {
		if _, err := os.Stat(filepath.Join(dir, name)); (err == nil) != want {
			t.Errorf("%s: kept %v, want %v", name, err == nil, want)
		}
	}
	// Serving a copy marks it used.
	if code, _ := f.get("/artifacts/" + img.Kernel.SHA256 + "/vmlinuz"); code != http.StatusOK {
		t.Fatalf("kernel: %d", code)
	}
	if st, err := os.Stat(kernel); err != nil || !st.ModTime().Equal(t0) {
		t.Fatalf("served copy's time: %v, %v; want %v", st.ModTime(), err, t0)
	}
}

// BenchmarkArtifactServe: 50 machines at once fetching a 16 MiB initrd
// from the server's verified copy, against a plain http.FileServer of the
// same file on the same machine (the ratio is the cost of the checks and
// the bookkeeping):
//
//	go test ./pxe/boot -run '^$' -bench ArtifactServe -benchtime 20x
func BenchmarkArtifactServe(b *testing.B) {
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	u := newUpstream(b)
	u.put("/initrd", data)
	site := loadSite(b)
	img := site.Image(site.Node("e1n01").Image)
	img.Initrd = schema.Artifact{URL: u.URL + "/initrd", SHA256: sum(data)}
	dir := b.TempDir()
	srv := &Server{Site: func() *schema.Site { return site }, Nodes: newMemStore(), Key: testKey, BaseURL: "http://127.0.0.1:1",
		ArtifactDir: filepath.Join(dir, "artifacts"), Log: newTestLogger(io.Discard)}
	anneal := httptest.NewServer(srv)
	defer anneal.Close()
	if err := os.WriteFile(filepath.Join(dir, "initrd"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	plain := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer plain.Close()
	const machines = 50
	fetchAll := func(b *testing.B, url string) {
		var wg sync.WaitGroup
		for range machines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if err != nil || n != int64(len(data)) || resp.StatusCode != http.StatusOK {
					b.Errorf("%s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
				}
			}()
		}
		wg.Wait()
	}
	for _, tc := range []struct{ name, url string }{
		{"anneal", anneal.URL + "/artifacts/" + img.Initrd.SHA256 + "/initrd"},
		{"plain-fileserver", plain.URL + "/initrd"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			fetchAll(b, tc.url) // the first fetch downloads and verifies
			b.SetBytes(machines * int64(len(data)))
			for b.Loop() {
				fetchAll(b, tc.url)
			}
		})
	}
}
