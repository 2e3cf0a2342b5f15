// Package deploy is anneal's deploy environment, the image installer
// (schema.InstallerImage): the anneal binary running as /init of an
// initramfs the netboot server serves (pxe/boot: DeployInitrdPath). It
// brings up the provisioning address on the NIC that netbooted, fetches
// its instructions (deploy.json) and the install files once each with the
// install token, streams the disk image to the install disk checking its
// SHA-256 and size as it writes (a wrong or short image is wiped, never
// booted), writes the node's hostname, network configuration and agent
// into the written root file system, posts the install callback and
// reboots into the installed system, which the netboot server then sends
// to its local disk. It reports each phase and the bytes written.
//
// The parts that only need files and HTTP (Cmdline, WriteImage,
// Configure, Client) are portable and tested as they are; the machine's
// side (mounts, kernel modules, links, the disk, reboot) is Linux only
// (system_linux.go) and tested by booting it in QEMU (test/vm/life_test.go).
package deploy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/schema"
)

// Cmdline is what the netboot server's script put on the kernel command
// line for the deploy environment.
type Cmdline struct {
	Node   string
	Build  string
	URL    string // the netboot server's base URL
	Token  string // the install token (never logged)
	IP     netip.Prefix
	GW     netip.Addr // zero: no default route
	MAC    string     // the NIC the site names (may be "")
	BootIF string     // the NIC iPXE booted from (may be "")
}

// ParseCmdline reads /proc/cmdline's anneal.* arguments.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	var err error
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(k, "anneal.") {
			continue
		}
		switch k {
		case "anneal.node":
			c.Node = v
		case "anneal.build":
			c.Build = v
		case "anneal.url":
			c.URL = strings.TrimRight(v, "/")
		case "anneal.token":
			c.Token = v
		case "anneal.ip":
			if c.IP, err = netip.ParsePrefix(v); err != nil {
				return Cmdline{}, fmt.Errorf("kernel argument anneal.ip: %w", err)
			}
		case "anneal.gw":
			if c.GW, err = netip.ParseAddr(v); err != nil {
				return Cmdline{}, fmt.Errorf("kernel argument anneal.gw: %w", err)
			}
		case "anneal.mac":
			c.MAC = strings.ToLower(v)
		case "anneal.bootif":
			c.BootIF = strings.ToLower(v)
		}
	}
	var missing []string
	for _, m := range []struct{ name, v string }{{"anneal.node", c.Node}, {"anneal.build", c.Build}, {"anneal.url", c.URL}, {"anneal.token", c.Token}} {
		if m.v == "" {
			missing = append(missing, m.name)
		}
	}
	if !c.IP.IsValid() {
		missing = append(missing, "anneal.ip")
	}
	if c.MAC == "" && c.BootIF == "" {
		missing = append(missing, "anneal.bootif or anneal.mac")
	}
	if len(missing) > 0 {
		return Cmdline{}, fmt.Errorf("kernel command line: missing %s: not booted by an anneal install script", strings.Join(missing, ", "))
	}
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return Cmdline{}, fmt.Errorf("kernel argument anneal.url %q is not an http(s) URL", c.URL)
	}
	return c, nil
}

// Client talks to the netboot server for one install.
type Client struct {
	Cmd  Cmdline
	HTTP *http.Client
	Log  *slog.Logger
}

// maxInstallFile bounds an install file.
const maxInstallFile = 1 << 20

// File fetches one install file (each is served once per arming).
func (c *Client) File(ctx context.Context, name string) ([]byte, error) {
	u := c.Cmd.URL + "/install/" + c.Cmd.Node + "/" + c.Cmd.Token + "/" + name
	shown := c.Cmd.URL + "/install/" + c.Cmd.Node + "/TOKEN/" + name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: bad URL", shown)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", shown, scrub(err, c.Cmd.Token))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInstallFile+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", shown, scrub(err, c.Cmd.Token))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{What: "fetch " + shown, Code: resp.StatusCode, Msg: scrubText(strings.TrimSpace(string(firstLine(body))), c.Cmd.Token)}
	}
	if len(body) > maxInstallFile {
		return nil, fmt.Errorf("fetch %s: larger than %d bytes", shown, maxInstallFile)
	}
	return body, nil
}

// StatusError is the netboot server's answer other than success.
type StatusError struct {
	What string
	Code int
	Msg  string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.What, e.Code, http.StatusText(e.Code), e.Msg)
}

// Refused reports whether the server refused the request for good (a
// 4xx): asking again cannot help.
func Refused(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code/100 == 4
}

// Progress reports a phase; a report that fails is logged, never fatal.
func (c *Client) Progress(ctx context.Context, phase string, written, total int64, failure error) {
	p := boot.DeployProgress{Token: c.Cmd.Token, Phase: phase, Bytes: written, Total: total}
	if failure != nil {
		p.Error = scrub(failure, c.Cmd.Token).Error()
	}
	if err := c.post(ctx, "/api/v1/nodes/"+c.Cmd.Node+"/progress", p); err != nil {
		c.Log.Warn("deploy: progress report", "phase", phase, "err", err)
	}
}

func (c *Client) post(ctx context.Context, route string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Cmd.URL+route, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", route, scrub(err, c.Cmd.Token))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return &StatusError{What: "post " + route, Code: resp.StatusCode, Msg: scrubText(strings.TrimSpace(string(firstLine(msg))), c.Cmd.Token)}
	}
	return nil
}

// Image opens the disk image's download.
func (c *Client) Image(ctx context.Context, img boot.DeployDiskImage) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("disk image %s: %w", img.URL, err)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("disk image %s: %w", img.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, &StatusError{What: "disk image " + img.URL, Code: resp.StatusCode, Msg: scrubText(strings.TrimSpace(string(firstLine(msg))), c.Cmd.Token)}
	}
	return resp.Body, nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return b
}

// scrubText removes the install token from a text (a server's message
// that echoes the URL).
func scrubText(s, token string) string {
	if token == "" {
		return s
	}
	return strings.ReplaceAll(s, token, "TOKEN")
}

// scrub removes the install token from an error (a URL in it).
func scrub(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), token, "TOKEN"))
}

// ParseConfig reads deploy.json and checks it.
func ParseConfig(data []byte, cmd Cmdline) (boot.DeployConfig, error) {
	var cfg boot.DeployConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, fmt.Errorf("deploy.json: %w", err)
	}
	switch {
	case cfg.Node != cmd.Node || cfg.BuildID != cmd.Build:
		return cfg, fmt.Errorf("deploy.json is for node %s build %s, this boot for %s build %s", cfg.Node, cfg.BuildID, cmd.Node, cmd.Build)
	case len(cfg.Image.SHA256) != 64:
		return cfg, errors.New("deploy.json: image sha256 is not a SHA-256")
	case cfg.Image.RootPartition < 1 || cfg.Image.RootPartition > 128:
		return cfg, fmt.Errorf("deploy.json: root partition %d out of 1..128", cfg.Image.RootPartition)
	case cfg.Disk != "" && (strings.ContainsAny(cfg.Disk, "/.") || len(cfg.Disk) > 32):
		return cfg, fmt.Errorf("deploy.json: disk %q is not a kernel disk name", cfg.Disk)
	case cfg.Hostname == "" || strings.ContainsAny(cfg.Hostname, "/ \n"):
		return cfg, fmt.Errorf("deploy.json: host name %q", cfg.Hostname)
	}
	switch cfg.Image.Format {
	case schema.DiskRaw, schema.DiskRawGzip, schema.DiskRawZstd:
	default:
		return cfg, fmt.Errorf("deploy.json: image format %q is not raw, raw.gz or raw.zst", cfg.Image.Format)
	}
	return cfg, nil
}

// ErrImage is a disk image that is not the one the site declares: its
// SHA-256 or size differ, or it does not decompress. The disk must not be
// booted.
var ErrImage = errors.New("disk image is not the declared one")

// WriteImage streams the disk image src into disk, decompressing it as
// its format says, and checks the SHA-256 and size of what it read (the
// artifact as declared, compressed or not) once it reached the end. It
// writes at most limit bytes to disk (0: no limit) and calls progress
// with the bytes written so far, at most every interval. It returns the
// bytes written; an error wrapping ErrImage means the image was wrong or
// short, and whatever it wrote must not boot.
func WriteImage(ctx context.Context, disk io.Writer, src io.Reader, img boot.DeployDiskImage, limit int64, progress func(int64), interval time.Duration) (int64, error) {
	sum := sha256.New()
	counted := &countingReader{r: io.TeeReader(src, sum)}
	var data io.Reader = counted
	switch img.Format {
	case schema.DiskRaw:
	case schema.DiskRawGzip:
		zr, err := gzip.NewReader(counted)
		if err != nil {
			if counted.readErr != nil {
				return 0, fmt.Errorf("read the disk image: %w", counted.readErr)
			}
			return 0, fmt.Errorf("%w: gzip: %v", ErrImage, err)
		}
		defer zr.Close()
		data = zr
	case schema.DiskRawZstd:
		zr, err := zstd.NewReader(counted, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return 0, fmt.Errorf("%w: zstd: %v", ErrImage, err)
		}
		defer zr.Close()
		data = zr
	default:
		return 0, fmt.Errorf("image format %q is not raw, raw.gz or raw.zst", img.Format)
	}
	if img.Size > 0 {
		// Read one byte past the declared size to see a longer file.
		counted.r = io.LimitReader(counted.r, img.Size+1)
	}
	buf := make([]byte, 4<<20)
	var written int64
	last := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		// Fill the buffer; unlike io.ReadFull, an io.ErrUnexpectedEOF
		// here is the decompressor's (a truncated stream), not a short
		// last chunk.
		n := 0
		var rerr error
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = data.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if limit > 0 && written+int64(n) > limit {
				return written, fmt.Errorf("%w: it is larger than the disk (%d bytes)", ErrImage, limit)
			}
			if _, err := disk.Write(buf[:n]); err != nil {
				return written, fmt.Errorf("write the disk at byte %d: %w", written, err)
			}
			written += int64(n)
			if progress != nil && time.Since(last) >= interval {
				progress(written)
				last = time.Now()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if counted.readErr != nil {
				return written, fmt.Errorf("read the disk image at byte %d: %w", counted.n, counted.readErr)
			}
			return written, fmt.Errorf("%w: %v", ErrImage, rerr)
		}
	}
	// Drain what the decompressor did not read (a trailer), so the hash
	// covers the whole file.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return written, fmt.Errorf("read the disk image at byte %d: %w", counted.n, err)
	}
	if counted.readErr != nil {
		return written, fmt.Errorf("read the disk image at byte %d: %w", counted.n, counted.readErr)
	}
	if img.Size > 0 && counted.n != img.Size {
		return written, fmt.Errorf("%w: %d bytes, declared %d", ErrImage, counted.n, img.Size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != img.SHA256 {
		return written, fmt.Errorf("%w: SHA-256 %s, declared %s", ErrImage, got, img.SHA256)
	}
	if written == 0 {
		return 0, fmt.Errorf("%w: it is empty", ErrImage)
	}
	return written, nil
}

// countingReader counts what it reads and keeps the read error of the
// source (a transport error is not a wrong image).
type countingReader struct {
	r       io.Reader
	n       int64
	readErr error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.readErr = err
	}
	return n, err
}

// headSize is the part of a disk image HeadWriter holds back: its
// partition table(s) and boot code.
const headSize = 1 << 20

// HeadWriter writes a disk image to W at offset 0 as it comes, except
// its first MiB, which it keeps until Commit: until then whatever was
// written does not boot (the caller zeroed the disk's first MiB before).
type HeadWriter struct {
	W    io.WriterAt
	head []byte
	off  int64
}

func (h *HeadWriter) Write(p []byte) (int, error) {
	n := 0
	if h.off < headSize {
		k := min(int64(len(p)), headSize-h.off)
		h.head = append(h.head, p[:k]...)
		h.off += k
		n, p = int(k), p[k:]
	}
	if len(p) > 0 {
		m, err := h.W.WriteAt(p, h.off)
		h.off += int64(m)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Commit writes the held-back first MiB.
func (h *HeadWriter) Commit() error {
	_, err := h.W.WriteAt(h.head, 0)
	return err
}

// Files are what Configure writes into the installed system.
type Files struct {
	Hostname string
	BuildID  string
	// Interfaces is /etc/network/interfaces (ifupdown), Netplan the
	// netplan v2 file: each is written where the image has its tool's
	// directory.
	Interfaces []byte
	Netplan    []byte
	Build      []byte // build.json
	Agent      []byte // agent.json (the agent token: mode 0600)
	Binary     string // path of the anneal binary to copy in
}

// Configure writes the node's files into the installed system mounted at
// root, confined to it (a symlink in the image cannot send a write
// elsewhere). The image must have a network configuration directory
// anneal writes (/etc/network for ifupdown, /etc/netplan for netplan):
// an installed system without the node's network would never report.
func Configure(root string, f Files) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("installed system: %w", err)
	}
	defer r.Close()
	isDir := func(p string) bool {
		st, err := r.Stat(p)
		return err == nil && st.IsDir()
	}
	write := func(p string, data []byte, mode os.FileMode) error {
		if err := r.MkdirAll(path.Dir(p), 0o755); err != nil {
			return fmt.Errorf("installed system: %w", err)
		}
		// Remove first: the image's file may be a symlink, and the new
		// one must have mode.
		if err := r.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("installed system: %w", err)
		}
		if err := r.WriteFile(p, data, mode); err != nil {
			return fmt.Errorf("installed system: %w", err)
		}
		return nil
	}
	network := false
	if isDir("etc/netplan") {
		if err := write("etc/netplan/50-anneal.yaml", f.Netplan, 0o600); err != nil {
			return err
		}
		network = true
	}
	if isDir("etc/network") {
		if err := write("etc/network/interfaces", f.Interfaces, 0o644); err != nil {
			return err
		}
		network = true
	}
	if !network {
		return errors.New("installed system: the image has neither /etc/network (ifupdown) nor /etc/netplan (netplan): anneal cannot give it the node's network")
	}
	bin, err := os.ReadFile(f.Binary)
	if err != nil {
		return fmt.Errorf("anneal binary: %w", err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"etc/hostname", []byte(f.Hostname + "\n"), 0o644},
		{strings.TrimPrefix(boot.InstalledBuildIDPath, "/"), []byte(f.BuildID + "\n"), 0o644},
		{"etc/anneal/build.json", f.Build, 0o644},
		{strings.TrimPrefix(boot.InstalledAgentConfigPath, "/"), f.Agent, 0o600},
		{strings.TrimPrefix(boot.InstalledBinPath, "/"), bin, 0o755},
	} {
		if err := write(w.path, w.data, w.mode); err != nil {
			return err
		}
	}
	if hosts, err := r.ReadFile("etc/hosts"); err == nil && !bytes.Contains(append(hosts, '\n'), []byte(" "+f.Hostname+"\n")) {
		if len(hosts) > 0 && hosts[len(hosts)-1] != '\n' {
			hosts = append(hosts, '\n')
		}
		hosts = append(hosts, []byte("127.0.1.1 "+f.Hostname+"\n")...)
		if err := write("etc/hosts", hosts, 0o644); err != nil {
			return err
		}
	}
	// systemd images run the agent from its unit; others start
	// `anneal agent` from their own init.
	unitDir := strings.TrimPrefix(boot.InstalledUnitDir, "/")
	if isDir(unitDir) {
		if err := write(unitDir+"/"+boot.InstalledAgentUnit, []byte(boot.AgentUnitText()), 0o644); err != nil {
			return err
		}
		link := unitDir + "/multi-user.target.wants/" + boot.InstalledAgentUnit
		if err := r.MkdirAll(path.Dir(link), 0o755); err != nil {
			return fmt.Errorf("installed system: %w", err)
		}
		_ = r.Remove(link)
		if err := r.Symlink("../"+boot.InstalledAgentUnit, link); err != nil {
			return fmt.Errorf("installed system: %w", err)
		}
	}
	return nil
}
