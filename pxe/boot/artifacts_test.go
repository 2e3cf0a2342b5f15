package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
	// hit is signalled once per request (while its buffer lasts).
	hit chan struct{}
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{files: map[string][]byte{}, hit: make(chan struct{}, 64)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		select {
		case u.hit <- struct{}{}:
		default:
		}
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

	// The initrd on the mirror is not the one the site declares: the
	// client gets the hash, the log the details.
	code, body := f.get(initrdPath)
	if code != http.StatusBadGateway || body != "artifact unavailable: sha256 "+img.Initrd.SHA256+"\n" ||
		!strings.Contains(f.logs.String(), "the site declares "+img.Initrd.SHA256) {
		t.Fatalf("swapped initrd: %d %s\nlogs:\n%s", code, body, f.logs.String())
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

// TestArtifactDownloadOutlivesCaller: the machine whose request started a
// download hanging up does not cut the download short: a machine asking
// while it runs gets the copy, and the mirror is asked once.
func TestArtifactDownloadOutlivesCaller(t *testing.T) {
	f, u, img := artifactFixture(t)
	kernelPath := "/artifacts/" + img.Kernel.SHA256 + "/vmlinuz"
	u.mu.Lock()
	u.delay = time.Second
	u.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.ts.URL+kernelPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() {
		resp, err := f.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		first <- err
	}()
	select {
	case <-u.hit:
	case <-time.After(10 * time.Second):
		t.Fatal("the download did not start")
	}
	cancel() // the first machine hangs up mid-download
	if err := <-first; err == nil {
		t.Fatal("the cancelled request got an answer")
	}

	if code, body := f.get(kernelPath); code != http.StatusOK || sum([]byte(body)) != img.Kernel.SHA256 {
		t.Fatalf("a machine asking after the first hung up: %d, %d bytes", code, len(body))
	}
	if n := u.hits.Load(); n != 1 {
		t.Fatalf("the mirror was asked %d times for one artifact", n)
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

// badMirror is an image mirror that misbehaves on purpose. It counts the
// bytes it managed to send; a handler that waits for the client to hang up
// is also released when the test ends.
type badMirror struct {
	*httptest.Server
	sent atomic.Int64
}

// badMirrorFile is what badMirror serves as its one good file.
var badMirrorFile = bytes.Repeat([]byte("initrd bytes\n"), 5000)

func newBadMirror(t *testing.T) *badMirror {
	m := &badMirror{}
	release := make(chan struct{})
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		write := func(p []byte) bool {
			n, err := w.Write(p)
			m.sent.Add(int64(n))
			return err == nil
		}
		switch r.URL.Path {
		case "/file": // as it should be
			w.Header().Set("Content-Length", fmt.Sprint(len(badMirrorFile)))
			write(badMirrorFile)
		case "/file-chunked": // no Content-Length
			w.(http.Flusher).Flush()
			write(badMirrorFile)
		case "/file-and-more": // the file, then zeros, no Content-Length
			w.(http.Flusher).Flush()
			if write(badMirrorFile) {
				write(make([]byte, 1<<20))
			}
		case "/zeros": // 256 MiB of zeros as fast as the client reads
			w.(http.Flusher).Flush()
			zeros := make([]byte, 32<<10)
			for range (256 << 20) / len(zeros) {
				if !write(zeros) {
					return
				}
			}
		case "/announce-huge": // says 1 TiB, sends a little, then waits
			w.Header().Set("Content-Length", fmt.Sprint(int64(1)<<40))
			write(badMirrorFile[:100])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "/broken": // its error page tells too much
			http.Error(w, "upstream internals: db password hunter2", http.StatusInternalServerError)
		case "/hangup": // closes the connection without an answer
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "/redirect-hangup": // to a signed URL that hangs up
			http.Redirect(w, r, "/hangup?X-Amz-Credential=cred-SECRET3&X-Amz-Signature=sig-SECRET4", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.Close)
	t.Cleanup(func() { close(release) }) // runs before m.Close
	return m
}

// getArtifact fetches the initrd of the fixture's Ubuntu image through the
// server, failing the test rather than hanging if the server keeps
// reading a body it should have refused.
func getArtifact(t *testing.T, f *fixture, img *schema.Image) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.ts.URL+"/artifacts/"+img.Initrd.SHA256+"/initrd", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("the server did not answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestArtifactSizeLimits: a download stops at the image's declared size,
// or at Server.ArtifactMaxSize when it declares none, while streaming: a
// mirror sending more (endless zeros, the right file with more after it)
// is cut off and nothing is kept; one sending less than declared is
// refused; a Content-Length over the limit or other than the declared size
// is refused before reading, and an image declaring more than the limit is
// not fetched at all.
func TestArtifactSizeLimits(t *testing.T) {
	n := int64(len(badMirrorFile))
	for _, tc := range []struct {
		name    string
		path    string
		size    int64 // declared; 0: not
		max     int64 // Server.ArtifactMaxSize; 0: the default
		wantLog string
		maxSent int64 // 0: no bound checked
		noFetch bool
	}{
		{name: "declared size", path: "/file", size: n},
		{name: "no size, exactly the limit", path: "/file-chunked", max: n},
		{name: "endless zeros, no size", path: "/zeros", max: 1 << 20, maxSent: 64 << 20,
			wantLog: "longer than the limit of 1048576 bytes (--artifact-max-size): stopped"},
		{name: "endless zeros, size declared", path: "/zeros", size: n, maxSent: 64 << 20,
			wantLog: fmt.Sprintf("longer than the %d bytes the image declares: stopped", n)},
		{name: "the file and more", path: "/file-and-more", size: n,
			wantLog: fmt.Sprintf("longer than the %d bytes the image declares: stopped", n)},
		{name: "the file and more, no size", path: "/file-and-more", max: n + 10,
			wantLog: fmt.Sprintf("longer than the limit of %d bytes", n+10)},
		{name: "shorter than declared", path: "/file-chunked", size: n + 10,
			wantLog: fmt.Sprintf("%d bytes, the image declares %d: not served", n, n+10)},
		{name: "Content-Length other than declared", path: "/file", size: n + 10,
			wantLog: fmt.Sprintf("the mirror announces %d bytes, the image declares %d: not read", n, n+10)},
		{name: "Content-Length over the limit", path: "/announce-huge", max: 1 << 20, maxSent: 100,
			wantLog: "the mirror announces 1099511627776 bytes, over the limit of 1048576 (--artifact-max-size): not read"},
		{name: "declared over the limit", path: "/file", size: DefaultArtifactMaxSize + 1, noFetch: true,
			wantLog: fmt.Sprintf("the image declares %d bytes, over the limit of %d (--artifact-max-size): not fetched", DefaultArtifactMaxSize+1, DefaultArtifactMaxSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _, img := artifactFixture(t)
			m := newBadMirror(t)
			f.srv.ArtifactMaxSize = tc.max
			img.Initrd = schema.Artifact{URL: m.URL + tc.path, SHA256: sum(badMirrorFile), Size: tc.size}
			code, body := getArtifact(t, f, img)
			files, _ := filepath.Glob(filepath.Join(f.srv.ArtifactDir, "*"))
			temps, _ := filepath.Glob(filepath.Join(f.srv.ArtifactDir, ".fetch-*"))
			logs := f.logs.String()
			if tc.wantLog == "" {
				if code != http.StatusOK || body != string(badMirrorFile) || len(files) != 1 || len(temps) != 0 {
					t.Fatalf("%d, %d bytes; kept %v %v\nlogs:\n%s", code, len(body), files, temps, logs)
				}
				return
			}
			if code != http.StatusBadGateway || body != "artifact unavailable: sha256 "+img.Initrd.SHA256+"\n" {
				t.Errorf("%d %q, want 502 artifact unavailable", code, body)
			}
			if !strings.Contains(logs, tc.wantLog) {
				t.Errorf("logs lack %q:\n%s", tc.wantLog, logs)
			}
			if len(files) != 0 || len(temps) != 0 {
				t.Errorf("files kept: %v %v", files, temps)
			}
			if sent := m.sent.Load(); tc.maxSent > 0 && sent > tc.maxSent {
				t.Errorf("the mirror sent %d bytes, want at most %d", sent, tc.maxSent)
			}
			if tc.noFetch && m.sent.Load() != 0 {
				t.Errorf("the mirror was asked")
			}
		})
	}
}

// TestArtifactErrorsRedacted: whatever goes wrong upstream, the client
// gets a generic 502 with the hash only (no error text, no URL), and the
// log names the URL with its user information and credential parameters
// redacted, including those of a redirect.
func TestArtifactErrorsRedacted(t *testing.T) {
	for _, tc := range []struct{ name, path, wantLog string }{
		{"error page", "/broken", "500 Internal Server Error"},
		{"hang-up", "/hangup", "EOF"},
		{"redirect to a signed URL", "/redirect-hangup", "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _, img := artifactFixture(t)
			m := newBadMirror(t)
			f.secret("hunter2", "pass-SECRET0", "tok-SECRET1", "sig-SECRET2", "cred-SECRET3", "sig-SECRET4")
			u := strings.Replace(m.URL, "http://", "http://anneal:pass-SECRET0@", 1) + tc.path +
				"?v=1&token=tok-SECRET1&X-Amz-Signature=sig-SECRET2"
			img.Initrd = schema.Artifact{URL: u, SHA256: sum(badMirrorFile)}
			code, body := getArtifact(t, f, img)
			if code != http.StatusBadGateway || body != "artifact unavailable: sha256 "+img.Initrd.SHA256+"\n" {
				t.Errorf("%d %q, want 502 artifact unavailable", code, body)
			}
			logs := f.logs.String()
			want := "http://REDACTED@" + strings.TrimPrefix(m.URL, "http://") + tc.path + "?v=1&token=REDACTED&X-Amz-Signature=REDACTED"
			if !strings.Contains(logs, want) || !strings.Contains(logs, tc.wantLog) {
				t.Errorf("logs lack %q and %q:\n%s", want, tc.wantLog, logs)
			}
			// f.checkLogs, at cleanup, fails the test if a secret is logged.
		})
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://boot.example.net/images/vmlinuz", "http://boot.example.net/images/vmlinuz"},
		{"https://user:pw@mirror/x?a=1", "https://REDACTED@mirror/x?a=1"},
		{"https://tokenonly@mirror/x", "https://REDACTED@mirror/x"},
		{"https://s3.example/b/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc&X-Amz-Security-Token=t",
			"https://s3.example/b/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED"},
		{"https://m/x?sig=1;access_token=2&api_key=3&Password=4&v=5", "https://m/x?sig=REDACTED;access_token=REDACTED&api_key=REDACTED&Password=REDACTED&v=5"},
		{"https://m/x?%74oken=1", "https://m/x?%74oken=REDACTED"},
		{"https://m/x?bad%zz=1&v=2", "https://m/x?REDACTED&v=2"},
		{"https://m/x#access_token=1", "https://m/x#REDACTED"},
		{"http://[::1:bad/x?token=1", "(an unparsable URL)"},
	} {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
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
	img.Initrd = schema.Artifact{URL: u.URL + "/initrd", SHA256: sum(data), Size: int64(len(data))}
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

// TestArtifactCacheBound: a download that could take the cache over
// Server.ArtifactCacheMax is not started (a site declaring many large
// images cannot fill the disk through requests for them): the client gets
// the generic 502, the log says why, the mirror is not asked; a copy the
// cache already holds is still served.
func TestArtifactCacheBound(t *testing.T) {
	f, u, img := artifactFixture(t)
	one, two := []byte(strings.Repeat("1", 4096)), []byte(strings.Repeat("2", 4096))
	u.put("/one", one)
	u.put("/two", two)
	f.srv.ArtifactCacheMax = 6000
	img.Initrd = schema.Artifact{URL: u.URL + "/one", SHA256: sum(one), Size: int64(len(one))}
	if code, body := getArtifact(t, f, img); code != http.StatusOK || body != string(one) {
		t.Fatalf("first copy: %d %q", code, body)
	}
	asked := u.hits.Load()
	for _, a := range []schema.Artifact{
		{URL: u.URL + "/two", SHA256: sum(two), Size: int64(len(two))}, // 4096 + 4096 > 6000
		{URL: u.URL + "/two", SHA256: sum(two)},                        // no size: the download bound counts
	} {
		img.Initrd = a
		if code, body := getArtifact(t, f, img); code != http.StatusBadGateway || body != "artifact unavailable: sha256 "+a.SHA256+"\n" {
			t.Fatalf("over the cache bound: %d %q", code, body)
		}
		f.srv.artifacts.mu.Lock()
		delete(f.srv.artifacts.failed, a.SHA256) // not the retry pause under test
		f.srv.artifacts.mu.Unlock()
	}
	if u.hits.Load() != asked {
		t.Errorf("the mirror was asked %d more times", u.hits.Load()-asked)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "artifact cache full: 4096 bytes kept and 0 in flight, 4096 more would pass its bound of 6000 (--artifact-cache-max): not fetched") {
		t.Errorf("logs lack the reason:\n%s", logs)
	}
	files, _ := filepath.Glob(filepath.Join(f.srv.ArtifactDir, "*"))
	if len(files) != 1 {
		t.Errorf("cache holds %v", files)
	}
	img.Initrd = schema.Artifact{URL: u.URL + "/one", SHA256: sum(one), Size: int64(len(one))}
	if code, body := getArtifact(t, f, img); code != http.StatusOK || body != string(one) {
		t.Fatalf("the copy kept: %d %q", code, body)
	}
}
