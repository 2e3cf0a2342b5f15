package boot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/anneal-dev/anneal/schema"
)

// Artifact fetch bounds.
const (
	// artifactFetchTimeout bounds one upstream download (an installer's
	// initrd is a few hundred MB).
	artifactFetchTimeout = 30 * time.Minute
	// artifactRetryAfter is how long a failed download (unreachable, wrong
	// hash) answers from memory before the next request tries again: a
	// boot storm does not hammer a broken mirror.
	artifactRetryAfter = 30 * time.Second
)

// DefaultArtifactMaxSize is the default bound of one artifact download,
// Server.ArtifactMaxSize: installer kernels, initrds and live root file
// systems are well under it, and a mirror streaming garbage is cut off
// there instead of filling the disk.
const DefaultArtifactMaxSize int64 = 4 << 30

// DefaultArtifactCacheMax is the default bound of the whole artifact
// cache, Server.ArtifactCacheMax.
const DefaultArtifactCacheMax int64 = 64 << 30

// artifactCacheMax is the bound of the whole cache.
func (s *Server) artifactCacheMax() int64 {
	if s.ArtifactCacheMax > 0 {
		return s.ArtifactCacheMax
	}
	return DefaultArtifactCacheMax
}

// artifactMaxSize is the bound of one artifact download.
func (s *Server) artifactMaxSize() int64 {
	if s.ArtifactMaxSize > 0 {
		return s.ArtifactMaxSize
	}
	return DefaultArtifactMaxSize
}

// artifactStore keeps verified copies of the images' artifacts in a
// directory, one file per SHA-256: each is downloaded once from the URL the
// site gives and kept only if its SHA-256 is the one the site declares.
// Concurrent requests for one artifact share one download.
type artifactStore struct {
	dir    string
	client *http.Client
	now    func() time.Time

	// downloads runs one download per SHA-256 however many requests
	// wait for it.
	downloads singleflight.Group

	mu       sync.Mutex
	failed   map[string]artifactFailure
	reserved int64 // the most the downloads in flight may still write
	inflight int   // downloads running: PruneArtifacts spares their temporary files
}

type artifactFailure struct {
	at  time.Time
	err error
}

// errNotDeclared: no image of the site declares this SHA-256.
var errNotDeclared = errors.New("no image of the site declares this artifact")

// declared finds the artifact of a SHA-256 among the site's images.
func declared(site *schema.Site, sum string) (schema.Artifact, bool) {
	for _, img := range site.Images {
		disk := (*schema.Artifact)(nil)
		if img.Disk != nil {
			disk = &img.Disk.Artifact
		}
		for _, a := range []*schema.Artifact{&img.Kernel, &img.Initrd, img.Rootfs, disk} {
			if a != nil && a.SHA256 == sum {
				return *a, true
			}
		}
	}
	return schema.Artifact{}, false
}

// path returns the verified copy of a, downloading it first if needed (at
// most maxSize bytes, and only if the cache keeps under maxTotal bytes).
// A caller whose ctx ends stops waiting; the download goes on for the
// others, under a context of its own bounded by artifactFetchTimeout.
func (s *artifactStore) path(ctx context.Context, a schema.Artifact, maxSize, maxTotal int64) (string, error) {
	file := filepath.Join(s.dir, a.SHA256)
	if _, err := os.Stat(file); err == nil {
		return file, nil
	}
	s.mu.Lock()
	err := s.recentFailure(a.SHA256)
	s.mu.Unlock()
	if err != nil {
		return "", err
	}
	// Not this requester's ctx: the others wait on the download too.
	dctx := context.WithoutCancel(ctx)
	ch := s.downloads.DoChan(a.SHA256, func() (any, error) {
		return nil, s.download(dctx, a, file, maxSize, maxTotal)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return file, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// recentFailure is the error of the artifact's last download if it failed
// less than artifactRetryAfter ago. s.mu must be held.
func (s *artifactStore) recentFailure(sum string) error {
	if f, ok := s.failed[sum]; ok && s.now().Sub(f.at) < artifactRetryAfter {
		return f.err
	}
	return nil
}

// download is the one download of a into file that concurrent requests
// share (downloads runs it): it reserves room in the cache for it, fetches,
// and records a failure so that requests within artifactRetryAfter are
// answered from memory.
func (s *artifactStore) download(ctx context.Context, a schema.Artifact, file string, maxSize, maxTotal int64) error {
	// A download that ended between the caller's look and this one
	// (downloads forgets a key once its download returns).
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	s.mu.Lock()
	if err := s.recentFailure(a.SHA256); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.failed == nil {
		s.failed = map[string]artifactFailure{}
	}
	// Room for the whole download, before a byte is fetched: what the
	// cache holds, what the downloads in flight may still write, and this
	// one's bound.
	need := maxSize
	if a.Size > 0 {
		need = min(a.Size, maxSize)
	}
	if used := s.usage(); used+s.reserved+need > maxTotal {
		err := fmt.Errorf("artifact cache full: %d bytes kept and %d in flight, %d more would pass its bound of %d (--artifact-cache-max): not fetched", used, s.reserved, need, maxTotal)
		s.failed[a.SHA256] = artifactFailure{at: s.now(), err: err}
		s.mu.Unlock()
		return err
	}
	s.reserved += need
	s.inflight++
	s.mu.Unlock()

	fctx, cancel := context.WithTimeout(ctx, artifactFetchTimeout)
	defer cancel()
	err := s.fetch(fctx, a, file, maxSize)

	// Recorded before downloads forgets the key: a request after that
	// finds the copy or the failure.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= need
	s.inflight--
	if err != nil {
		s.failed[a.SHA256] = artifactFailure{at: s.now(), err: err}
	} else {
		delete(s.failed, a.SHA256)
	}
	return err
}

// usage is the bytes the cache's finished copies take (downloads in
// flight are counted by their reservation).
func (s *artifactStore) usage() int64 {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".fetch-") {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// fetch downloads a into file through a temporary file in the same
// directory, renamed into place only when its SHA-256 is the declared one.
// The download stops at the image's declared size, or at maxSize when it
// declares none (an image declaring more than maxSize is not fetched); a
// shorter one than declared is refused too. Its errors name the URL only
// redacted: they are logged.
func (s *artifactStore) fetch(ctx context.Context, a schema.Artifact, file string, maxSize int64) error {
	where := redactURL(a.URL)
	limit := maxSize
	if a.Size > 0 {
		if a.Size > maxSize {
			return fmt.Errorf("fetch %s: the image declares %d bytes, over the limit of %d (--artifact-max-size): not fetched", where, a.Size, maxSize)
		}
		limit = a.Size
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("artifact cache: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", where, withoutURL(err))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", where, withoutURL(err))
	}
	defer resp.Body.Close() // unread: the connection is dropped, not drained
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", where, resp.Status)
	}
	switch {
	case a.Size > 0 && resp.ContentLength >= 0 && resp.ContentLength != a.Size:
		return fmt.Errorf("fetch %s: the mirror announces %d bytes, the image declares %d: not read", where, resp.ContentLength, a.Size)
	case resp.ContentLength > limit:
		return fmt.Errorf("fetch %s: the mirror announces %d bytes, over the limit of %d (--artifact-max-size): not read", where, resp.ContentLength, limit)
	}
	tmp, err := os.CreateTemp(s.dir, ".fetch-*")
	if err != nil {
		return fmt.Errorf("artifact cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	// One byte past the limit tells a longer body from one just as long.
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, limit+1))
	switch {
	case err != nil:
		err = fmt.Errorf("fetch %s: after %d bytes: %w", where, n, err)
	case n > limit && a.Size > 0:
		err = fmt.Errorf("fetch %s: longer than the %d bytes the image declares: stopped", where, a.Size)
	case n > limit:
		err = fmt.Errorf("fetch %s: longer than the limit of %d bytes (--artifact-max-size): stopped", where, limit)
	case a.Size > 0 && n != a.Size:
		err = fmt.Errorf("fetch %s: %d bytes, the image declares %d: not served", where, n, a.Size)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("artifact cache: %w", cerr)
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return fmt.Errorf("fetch %s: its SHA-256 is %s (%d bytes), the site declares %s: not served", where, got, n, a.SHA256)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("artifact cache: %w", err)
	}
	return nil
}

// withoutURL drops the URL net/http puts in its errors (*url.Error): it
// may carry credentials, in its query or a redirect's. The caller names
// the URL, redacted.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// redactURL returns a URL fit for logs: its user information, the values
// of query parameters whose names suggest a credential (token, signature
// and sig, X-Amz-Signature, X-Amz-Credential, key, secret, password,
// auth, session, ...) and its fragment are replaced by "REDACTED".
// url.URL.Redacted hides a password only.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
		u.ForceQuery = false
	}
	if u.Fragment != "" || u.RawFragment != "" {
		u.Fragment, u.RawFragment = "REDACTED", ""
	}
	return u.String()
}

// redactQuery redacts the values of a raw query's credential parameters,
// keeping their order (';' separates too, as some servers read it).
func redactQuery(q string) string {
	var b strings.Builder
	for q != "" {
		i := strings.IndexAny(q, "&;")
		part, sep := q, ""
		if i >= 0 {
			part, sep, q = q[:i], q[i:i+1], q[i+1:]
		} else {
			q = ""
		}
		name, _, _ := strings.Cut(part, "=")
		if n, err := url.QueryUnescape(name); err == nil && sensitiveParam(n) {
			part = name + "=REDACTED"
		} else if err != nil {
			part = "REDACTED"
		}
		b.WriteString(part)
		b.WriteString(sep)
	}
	return b.String()
}

// sensitiveParam reports whether a query parameter's name suggests it
// carries a credential. It errs on the side of redacting.
func sensitiveParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"token", "sig", "secret", "pass", "pwd", "key", "credential", "auth", "session", "cookie"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// handleArtifact serves GET /artifacts/{sha256}/{name}: a verified copy of
// an artifact some image of the site declares (anything else is 404, so
// the server is no open proxy). The name is only for the client's logs.
func (s *Server) handleArtifact(w http.ResponseWriter, r *http.Request) {
	site := s.Site()
	if site == nil {
		http.Error(w, "no site loaded yet", http.StatusServiceUnavailable)
		return
	}
	sum := r.PathValue("sha256")
	if s.artifacts == nil {
		http.Error(w, "this netboot server keeps no artifact copies (no ArtifactDir)", http.StatusNotFound)
		return
	}
	a, ok := declared(site, sum)
	if !ok {
		s.log().Warn("boot: artifact refused", "sha256", sum, "from", remoteHost(r), "err", errNotDeclared)
		http.NotFound(w, r)
		return
	}
	file, err := s.artifacts.path(r.Context(), a, s.artifactMaxSize(), s.artifactCacheMax())
	if err != nil {
		if r.Context().Err() == nil {
			// The details (the mirror's answer, its URL) are the
			// operator's: the client gets the hash only.
			s.log().Error("boot: artifact not available", "sha256", sum, "url", redactURL(a.URL), "err", err)
			http.Error(w, "artifact unavailable: sha256 "+sum, http.StatusBadGateway)
		}
		return
	}
	f, err := os.Open(file)
	if err != nil {
		s.log().Error("boot: open artifact", "sha256", sum, "err", err)
		http.Error(w, "artifact not available", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "artifact not available", http.StatusInternalServerError)
		return
	}
	// The modification time says when a copy was last served, for
	// PruneArtifacts.
	now := s.now()
	_ = os.Chtimes(file, now, now)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// PruneArtifacts removes the copies no image of the current site declares
// that were not served for unused (a revert within that time finds its
// copies still there; after it, they are downloaded and verified again),
// and downloads a crash left half done. It returns how many files it
// removed.
func (s *Server) PruneArtifacts(unused time.Duration) (int, error) {
	if err := s.Check(); err != nil {
		return 0, err
	}
	site := s.Site()
	if s.artifacts == nil || site == nil {
		return 0, nil
	}
	entries, err := os.ReadDir(s.ArtifactDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune artifacts: %w", err)
	}
	s.artifacts.mu.Lock()
	defer s.artifacts.mu.Unlock() // no download starts or ends meanwhile
	removed := 0
	var errs []error
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		name, age := e.Name(), s.now().Sub(info.ModTime())
		switch {
		case strings.HasPrefix(name, ".fetch-"):
			if s.artifacts.inflight > 0 || age < artifactFetchTimeout {
				continue
			}
		case age < unused:
			continue
		default:
			if _, ok := declared(site, name); ok {
				continue
			}
		}
		if err := os.Remove(filepath.Join(s.ArtifactDir, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
		s.log().Info("boot: artifact copy pruned", "file", name, "unused", age.Round(time.Second))
	}
	return removed, errors.Join(errs...)
}
