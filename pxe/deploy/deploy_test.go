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
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/schema"
)

const goodCmdline = "BOOT_IMAGE=vmlinuz console=ttyS0,115200n8 initrd=initrd ip=dhcp anneal.node=e1n01 anneal.build=0123456789abcdef " +
	"anneal.url=http://10.10.1.2:8080/ anneal.token=cGF5bG9hZA.c2lnbmF0dXJl quiet initrd=anneal.cpio anneal.ip=10.10.1.11/24 " +
	"anneal.mac=B0:7B:25:0B:01:01 anneal.gw=10.10.1.1 anneal.bootif=B0:7B:25:0B:01:01 anneal.unknown=x panic=30"

func TestParseCmdline(t *testing.T) {
	without := func(keys ...string) string {
		var out []string
		for _, f := range strings.Fields(goodCmdline) {
			k, _, _ := strings.Cut(f, "=")
			if !slices.Contains(keys, k) {
				out = append(out, f)
			}
		}
		return strings.Join(out, " ")
	}
	replace := func(key, v string) string {
		var out []string
		for _, f := range strings.Fields(goodCmdline) {
			if strings.HasPrefix(f, key+"=") {
				f = key + "=" + v
			}
			out = append(out, f)
		}
		return strings.Join(out, " ")
	}
	tests := []struct {
		name   string
		line   string
		errHas string // "": must parse
		check  func(t *testing.T, c Cmdline)
	}{
		{name: "good, mixed with other arguments", line: goodCmdline, check: func(t *testing.T, c Cmdline) {
			want := Cmdline{Node: "e1n01", Build: "0123456789abcdef", URL: "http://10.10.1.2:8080", Token: "cGF5bG9hZA.c2lnbmF0dXJl",
				MAC: "b0:7b:25:0b:01:01", BootIF: "b0:7b:25:0b:01:01"}
			if c.Node != want.Node || c.Build != want.Build || c.URL != want.URL || c.Token != want.Token || c.MAC != want.MAC || c.BootIF != want.BootIF {
				t.Errorf("got %+v, want %+v", c, want)
			}
			if c.IP.String() != "10.10.1.11/24" || c.GW.String() != "10.10.1.1" {
				t.Errorf("ip %v gw %v", c.IP, c.GW)
			}
		}},
		{name: "only bootif, no gateway", line: without("anneal.mac"), check: func(t *testing.T, c Cmdline) {
			if c.MAC != "" || c.BootIF != "b0:7b:25:0b:01:01" {
				t.Errorf("mac %q bootif %q", c.MAC, c.BootIF)
			}
		}},
		{name: "no gateway", line: without("anneal.gw"), check: func(t *testing.T, c Cmdline) {
			if c.GW.IsValid() {
				t.Errorf("gw %v, want none", c.GW)
			}
		}},
		{name: "only mac", line: without("anneal.bootif"), check: func(t *testing.T, c Cmdline) {
			if c.MAC != "b0:7b:25:0b:01:01" || c.BootIF != "" {
				t.Errorf("mac %q bootif %q", c.MAC, c.BootIF)
			}
		}},
		{name: "https URL", line: replace("anneal.url", "https://boot.example.net"), check: func(t *testing.T, c Cmdline) {
			if c.URL != "https://boot.example.net" {
				t.Errorf("url %q", c.URL)
			}
		}},
		{name: "missing node", line: without("anneal.node"), errHas: "missing anneal.node"},
		{name: "missing build", line: without("anneal.build"), errHas: "missing anneal.build"},
		{name: "missing url", line: without("anneal.url"), errHas: "missing anneal.url"},
		{name: "missing token", line: without("anneal.token"), errHas: "missing anneal.token"},
		{name: "missing ip", line: without("anneal.ip"), errHas: "missing anneal.ip"},
		{name: "missing mac and bootif", line: without("anneal.mac", "anneal.bootif"), errHas: "anneal.bootif or anneal.mac"},
		{name: "empty line", line: "", errHas: "missing anneal.node, anneal.build, anneal.url, anneal.token, anneal.ip"},
		{name: "empty node value", line: replace("anneal.node", ""), errHas: "missing anneal.node"},
		{name: "ip without prefix length", line: replace("anneal.ip", "10.10.1.11"), errHas: "anneal.ip"},
		{name: "ip not an address", line: replace("anneal.ip", "bogus/24"), errHas: "anneal.ip"},
		{name: "gateway not an address", line: replace("anneal.gw", "10.10.1"), errHas: "anneal.gw"},
		{name: "gateway with a prefix", line: replace("anneal.gw", "10.10.1.1/24"), errHas: "anneal.gw"},
		{name: "ftp URL", line: replace("anneal.url", "ftp://10.10.1.2"), errHas: "is not an http(s) URL"},
		{name: "URL without scheme", line: replace("anneal.url", "10.10.1.2:8080"), errHas: "is not an http(s) URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCmdline(tc.line)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want one with %q", err, tc.errHas)
				}
				if c != (Cmdline{}) {
					t.Errorf("on error, got %+v, want the zero Cmdline", c)
				}
				if strings.Contains(err.Error(), "cGF5bG9hZA.c2lnbmF0dXJl") {
					t.Errorf("error holds the token: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// rawImage is a disk image's content: not all one byte, so a dropped or
// repeated chunk shows.
func rawImage(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// failingReader returns data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestWriteImage(t *testing.T) {
	raw := rawImage(100_000)
	gz, zst := gzipped(t, raw), zstded(t, raw)
	big := rawImage(9<<20 + 17) // more than two of WriteImage's 4 MiB chunks
	errNet := errors.New("connection reset by peer")
	tests := []struct {
		name     string
		src      []byte
		srcErr   error // the source fails with it after src
		img      boot.DeployDiskImage
		limit    int64
		want     []byte // what the disk holds on success
		wantErr  bool
		imageErr bool  // the error wraps ErrImage
		maxWrite int64 // the disk gets at most this many bytes (0: no check)
		errHas   string
		progress bool
	}{
		{name: "raw", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw), Size: int64(len(raw))}, want: raw},
		{name: "raw, size not declared", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, want: raw},
		{name: "raw.gz", src: gz, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz), Size: int64(len(gz))}, want: raw},
		{name: "raw.zst", src: zst, img: boot.DeployDiskImage{Format: schema.DiskRawZstd, SHA256: sumOf(zst), Size: int64(len(zst))}, want: raw},
		{name: "raw, exactly the limit", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, limit: int64(len(raw)), want: raw},
		{name: "raw, several chunks, progress", src: big, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(big), Size: int64(len(big))}, want: big, progress: true},
		{name: "raw, wrong SHA-256", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw[1:]), Size: int64(len(raw))}, wantErr: true, imageErr: true, errHas: "SHA-256"},
		{name: "raw.gz, SHA-256 of the decompressed image", src: gz, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(raw)}, wantErr: true, imageErr: true, errHas: "SHA-256"},
		{name: "raw, declared size too small", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw), Size: int64(len(raw)) - 1}, wantErr: true, imageErr: true, errHas: "declared"},
		{name: "raw, declared size too large", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw), Size: int64(len(raw)) + 1}, wantErr: true, imageErr: true, errHas: "declared"},
		{name: "raw.gz, declared size too small", src: gz, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz), Size: int64(len(gz)) / 2}, wantErr: true, imageErr: true},
		{name: "raw.gz, declared size too large", src: gz, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz), Size: int64(len(gz)) + 10}, wantErr: true, imageErr: true},
		{name: "raw.gz, truncated, SHA-256 of what was sent", src: gz[:len(gz)/2], img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz[:len(gz)/2])}, wantErr: true, imageErr: true},
		{name: "raw.gz, truncated, SHA-256 of the whole file", src: gz[:len(gz)/2], img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz)}, wantErr: true, imageErr: true},
		{name: "raw.zst, truncated, SHA-256 of what was sent", src: zst[:len(zst)/2], img: boot.DeployDiskImage{Format: schema.DiskRawZstd, SHA256: sumOf(zst[:len(zst)/2])}, wantErr: true, imageErr: true},
		{name: "raw.gz, not gzip", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(raw)}, wantErr: true, imageErr: true, errHas: "gzip"},
		{name: "raw.zst, not zstd", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRawZstd, SHA256: sumOf(raw)}, wantErr: true, imageErr: true},
		{name: "raw, larger than the disk", src: raw, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, limit: int64(len(raw)) - 1, wantErr: true, imageErr: true, maxWrite: int64(len(raw)) - 1, errHas: "larger than the disk"},
		{name: "raw, several chunks, larger than the disk", src: big, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(big)}, limit: 5 << 20, wantErr: true, imageErr: true, maxWrite: 5 << 20},
		{name: "raw.gz, larger than the disk", src: gz, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz)}, limit: 1000, wantErr: true, imageErr: true, maxWrite: 1000},
		{name: "empty", src: nil, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(nil)}, wantErr: true, imageErr: true, errHas: "empty"},
		{name: "empty raw.gz", src: gzipped(t, nil), img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gzipped(t, nil))}, wantErr: true, imageErr: true, errHas: "empty"},
		{name: "unknown format", src: raw, img: boot.DeployDiskImage{Format: "qcow2", SHA256: sumOf(raw)}, wantErr: true, maxWrite: -1},
		{name: "raw, the source fails", src: raw[:5000], srcErr: errNet, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, wantErr: true, errHas: errNet.Error()},
		{name: "raw, the source fails after several chunks", src: big[:6<<20], srcErr: errNet, img: boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(big)}, wantErr: true, errHas: errNet.Error()},
		{name: "raw.gz, the source fails", src: gz[:len(gz)/2], srcErr: errNet, img: boot.DeployDiskImage{Format: schema.DiskRawGzip, SHA256: sumOf(gz)}, wantErr: true, errHas: errNet.Error()},
		{name: "raw.zst, the source fails", src: zst[:len(zst)/2], srcErr: errNet, img: boot.DeployDiskImage{Format: schema.DiskRawZstd, SHA256: sumOf(zst)}, wantErr: true, errHas: errNet.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var src io.Reader = bytes.NewReader(tc.src)
			if tc.srcErr != nil {
				src = &failingReader{data: slices.Clone(tc.src), err: tc.srcErr}
			}
			var disk bytes.Buffer
			var calls []int64
			n, err := WriteImage(context.Background(), &disk, src, tc.img, tc.limit, func(n int64) { calls = append(calls, n) }, 0)
			if n != int64(disk.Len()) {
				t.Errorf("returned %d bytes written, the disk got %d", n, disk.Len())
			}
			if tc.maxWrite > 0 && int64(disk.Len()) > tc.maxWrite {
				t.Errorf("wrote %d bytes, more than %d", disk.Len(), tc.maxWrite)
			}
			if tc.maxWrite < 0 && disk.Len() != 0 {
				t.Errorf("wrote %d bytes, want none", disk.Len())
			}
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(disk.Bytes(), tc.want) {
					t.Fatalf("disk holds %d bytes, not the %d-byte image", disk.Len(), len(tc.want))
				}
				if tc.progress {
					if len(calls) < 2 || calls[len(calls)-1] != int64(len(tc.want)) {
						t.Errorf("progress %v: want several calls ending at %d", calls, len(tc.want))
					}
					for i := 1; i < len(calls); i++ {
						if calls[i] <= calls[i-1] {
							t.Errorf("progress %v does not increase", calls)
						}
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; wrote %d bytes", disk.Len())
			}
			if got := errors.Is(err, ErrImage); got != tc.imageErr {
				t.Errorf("errors.Is(%v, ErrImage) = %v, want %v", err, got, tc.imageErr)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q lacks %q", err, tc.errHas)
			}
			if tc.srcErr != nil && !errors.Is(err, tc.srcErr) {
				t.Errorf("error %v does not wrap the source's", err)
			}
		})
	}
}

func TestWriteImageCancelled(t *testing.T) {
	raw := rawImage(1000)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var disk bytes.Buffer
	_, err := WriteImage(ctx, &disk, bytes.NewReader(raw), boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, 0, nil, 0)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrImage) || disk.Len() != 0 {
		t.Errorf("err %v, %d bytes written: want context.Canceled and nothing written", err, disk.Len())
	}
}

// failingDisk fails every write.
type failingDisk struct{}

func (failingDisk) Write([]byte) (int, error) { return 0, errors.New("I/O error") }

func TestWriteImageDiskFails(t *testing.T) {
	raw := rawImage(1000)
	_, err := WriteImage(context.Background(), failingDisk{}, bytes.NewReader(raw), boot.DeployDiskImage{Format: schema.DiskRaw, SHA256: sumOf(raw)}, 0, nil, 0)
	if err == nil || errors.Is(err, ErrImage) || !strings.Contains(err.Error(), "I/O error") {
		t.Errorf("err %v: want the disk's error, not ErrImage", err)
	}
}

// configureFiles are the files Configure writes, with the anneal binary
// a file in its own temporary directory.
func configureFiles(t *testing.T) Files {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "anneal")
	if err := os.WriteFile(bin, []byte("\x7fELF the anneal binary"), 0o700); err != nil {
		t.Fatal(err)
	}
	return Files{
		Hostname:   "e1n01",
		BuildID:    "0123456789abcdef",
		Interfaces: []byte("auto eno1\niface eno1 inet static\n"),
		Netplan:    []byte("network:\n  version: 2\n"),
		Build:      []byte(`{"id":"0123456789abcdef"}` + "\n"),
		Agent:      []byte(`{"token":"agent-token"}` + "\n"),
		Binary:     bin,
	}
}

// mkRoot makes an installed system's root with dirs and files.
func mkRoot(t *testing.T, dirs []string, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// wantFile checks a file's content and permission bits.
func wantFile(t *testing.T, root, p string, content []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(root, p)
	st, err := os.Lstat(full)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want a regular file %v", p, st.Mode(), mode)
	}
	if got, err := os.ReadFile(full); err != nil || !bytes.Equal(got, content) {
		t.Errorf("%s: %q (err %v), want %q", p, got, err, content)
	}
}

func wantAbsent(t *testing.T, root, p string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (err %v), want it absent", p, err)
	}
}

func TestConfigure(t *testing.T) {
	rel := func(p string) string { return strings.TrimPrefix(p, "/") }
	unit := rel(boot.InstalledUnitDir) + "/" + boot.InstalledAgentUnit
	link := rel(boot.InstalledUnitDir) + "/multi-user.target.wants/" + boot.InstalledAgentUnit
	common := func(t *testing.T, root string, f Files) {
		wantFile(t, root, "etc/hostname", []byte(f.Hostname+"\n"), 0o644)
		wantFile(t, root, rel(boot.InstalledBuildIDPath), []byte(f.BuildID+"\n"), 0o644)
		wantFile(t, root, "etc/anneal/build.json", f.Build, 0o644)
		wantFile(t, root, rel(boot.InstalledAgentConfigPath), f.Agent, 0o600)
		wantFile(t, root, rel(boot.InstalledBinPath), []byte("\x7fELF the anneal binary"), 0o755)
	}
	tests := []struct {
		name   string
		dirs   []string
		files  map[string]string
		errHas []string
		check  func(t *testing.T, root string, f Files)
	}{
		{
			name: "ifupdown", dirs: []string{"etc/network"},
			check: func(t *testing.T, root string, f Files) {
				common(t, root, f)
				wantFile(t, root, "etc/network/interfaces", f.Interfaces, 0o644)
				wantAbsent(t, root, "etc/netplan")
				wantAbsent(t, root, unit)
				wantAbsent(t, root, "etc/hosts")
			},
		},
		{
			name: "netplan", dirs: []string{"etc/netplan"},
			check: func(t *testing.T, root string, f Files) {
				common(t, root, f)
				wantFile(t, root, "etc/netplan/50-anneal.yaml", f.Netplan, 0o600)
				wantAbsent(t, root, "etc/network")
			},
		},
		{
			name: "both", dirs: []string{"etc/netplan", "etc/network"},
			check: func(t *testing.T, root string, f Files) {
				wantFile(t, root, "etc/netplan/50-anneal.yaml", f.Netplan, 0o600)
				wantFile(t, root, "etc/network/interfaces", f.Interfaces, 0o644)
			},
		},
		{
			name: "neither", dirs: []string{"etc"},
			errHas: []string{"/etc/network", "/etc/netplan"},
			check: func(t *testing.T, root string, f Files) {
				wantAbsent(t, root, "etc/hostname")
				wantAbsent(t, root, rel(boot.InstalledBinPath))
			},
		},
		{
			name: "systemd", dirs: []string{"etc/netplan", rel(boot.InstalledUnitDir)},
			check: func(t *testing.T, root string, f Files) {
				common(t, root, f)
				wantFile(t, root, unit, []byte(boot.AgentUnitText()), 0o644)
				target, err := os.Readlink(filepath.Join(root, link))
				if err != nil || target != "../"+boot.InstalledAgentUnit {
					t.Errorf("%s -> %q (err %v), want ../%s", link, target, err, boot.InstalledAgentUnit)
				}
			},
		},
		{
			name: "systemd, the unit already enabled", dirs: []string{"etc/netplan", rel(boot.InstalledUnitDir) + "/multi-user.target.wants"},
			files: map[string]string{link: "stale"},
			check: func(t *testing.T, root string, f Files) {
				if target, err := os.Readlink(filepath.Join(root, link)); err != nil || target != "../"+boot.InstalledAgentUnit {
					t.Errorf("%s -> %q (err %v)", link, target, err)
				}
			},
		},
		{
			name: "image files replaced", dirs: []string{"etc/network"},
			files: map[string]string{"etc/hostname": "debian\n", "etc/network/interfaces": "auto lo\n", rel(boot.InstalledAgentConfigPath): "old"},
			check: common,
		},
		{
			name: "hosts gets the host name", dirs: []string{"etc/network"},
			files: map[string]string{"etc/hosts": "127.0.0.1 localhost\n"},
			check: func(t *testing.T, root string, f Files) {
				wantFile(t, root, "etc/hosts", []byte("127.0.0.1 localhost\n127.0.1.1 e1n01\n"), 0o644)
			},
		},
		{
			name: "hosts that names the host already", dirs: []string{"etc/network"},
			files: map[string]string{"etc/hosts": "127.0.0.1 localhost\n10.10.1.11 e1n01\n"},
			check: func(t *testing.T, root string, f Files) {
				wantFile(t, root, "etc/hosts", []byte("127.0.0.1 localhost\n10.10.1.11 e1n01\n"), 0o644)
			},
		},
		{
			name: "hosts without a final newline", dirs: []string{"etc/network"},
			files: map[string]string{"etc/hosts": "127.0.0.1 localhost"},
			check: func(t *testing.T, root string, f Files) {
				hosts, _ := os.ReadFile(filepath.Join(root, "etc/hosts"))
				if !slices.Contains(strings.Split(string(hosts), "\n"), "127.0.1.1 e1n01") || !slices.Contains(strings.Split(string(hosts), "\n"), "127.0.0.1 localhost") {
					t.Errorf("/etc/hosts %q: want the lines 127.0.0.1 localhost and 127.0.1.1 e1n01", hosts)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := mkRoot(t, tc.dirs, tc.files)
			f := configureFiles(t)
			err := Configure(root, f)
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatal("Configure succeeded, want an error")
				}
				for _, w := range tc.errHas {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			} else if err != nil {
				t.Fatal(err)
			}
			tc.check(t, root, f)
		})
	}
}

func TestConfigureTwice(t *testing.T) {
	root := mkRoot(t, []string{"etc/netplan", "etc/systemd/system"}, map[string]string{"etc/hosts": "127.0.0.1 localhost\n"})
	f := configureFiles(t)
	for i := range 2 {
		if err := Configure(root, f); err != nil {
			t.Fatalf("Configure #%d: %v", i+1, err)
		}
	}
	wantFile(t, root, "etc/hosts", []byte("127.0.0.1 localhost\n127.0.1.1 e1n01\n"), 0o644)
	wantFile(t, root, "etc/hostname", []byte("e1n01\n"), 0o644)
}

// TestConfigureConfined: symlinks in the image cannot send Configure's
// writes outside the installed system.
func TestConfigureConfined(t *testing.T) {
	tests := []struct {
		name string
		link string // in the image, to the outside file
	}{
		{"hostname", "etc/hostname"},
		{"interfaces", "etc/network/interfaces"},
		{"agent.json", strings.TrimPrefix(boot.InstalledAgentConfigPath, "/")},
		{"hosts", "etc/hosts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outside := filepath.Join(t.TempDir(), "precious")
			const was = "127.0.0.1 localhost\n"
			if err := os.WriteFile(outside, []byte(was), 0o644); err != nil {
				t.Fatal(err)
			}
			root := mkRoot(t, []string{"etc/network", filepath.Dir(tc.link)}, nil)
			if err := os.Symlink(outside, filepath.Join(root, tc.link)); err != nil {
				t.Fatal(err)
			}
			_ = Configure(root, configureFiles(t))
			if got, err := os.ReadFile(outside); err != nil || string(got) != was {
				t.Errorf("the file outside the root now holds %q (err %v)", got, err)
			}
			if st, err := os.Stat(outside); err != nil || st.Mode().Perm() != 0o644 {
				t.Errorf("the file outside the root: %v (err %v)", st.Mode(), err)
			}
		})
	}
	// A relative symlink climbing out of the root.
	t.Run("relative hostname", func(t *testing.T) {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		if err := os.MkdirAll(filepath.Join(root, "etc", "network"), 0o755); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(dir, "precious")
		if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../precious", filepath.Join(root, "etc", "hostname")); err != nil {
			t.Fatal(err)
		}
		if err := Configure(root, configureFiles(t)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(outside); string(got) != "keep" {
			t.Errorf("outside file now %q", got)
		}
		wantFile(t, root, "etc/hostname", []byte("e1n01\n"), 0o644)
	})
	// A symlinked etc directory pointing outside: writes through it are
	// refused, never made outside.
	t.Run("etc is a symlink", func(t *testing.T) {
		outsideDir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(outsideDir, "network"), 0o755); err != nil {
			t.Fatal(err)
		}
		root := t.TempDir()
		if err := os.Symlink(outsideDir, filepath.Join(root, "etc")); err != nil {
			t.Fatal(err)
		}
		_ = Configure(root, configureFiles(t))
		entries, _ := os.ReadDir(filepath.Join(outsideDir, "network"))
		if len(entries) != 0 {
			t.Errorf("Configure wrote outside the root: %v", entries)
		}
		if _, err := os.Lstat(filepath.Join(outsideDir, "hostname")); err == nil {
			t.Error("Configure wrote hostname outside the root")
		}
	})
}

func goodConfig() boot.DeployConfig {
	return boot.DeployConfig{
		Node: "e1n01", BuildID: "0123456789abcdef", Hostname: "e1n01", Disk: "nvme0n1",
		Image: boot.DeployDiskImage{URL: "http://10.10.1.2:8080/artifacts/" + strings.Repeat("ab", 32) + "/disk",
			SHA256: strings.Repeat("ab", 32), Size: 1 << 30, Format: schema.DiskRawZstd, RootPartition: 2},
	}
}

var parseConfigCmd = Cmdline{Node: "e1n01", Build: "0123456789abcdef"}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *boot.DeployConfig)
		data   string // instead of the marshalled config
		errHas string // "": must parse
	}{
		{name: "good"},
		{name: "no disk", modify: func(c *boot.DeployConfig) { c.Disk = "" }},
		{name: "raw", modify: func(c *boot.DeployConfig) { c.Image.Format = schema.DiskRaw }},
		{name: "raw.gz", modify: func(c *boot.DeployConfig) { c.Image.Format = schema.DiskRawGzip }},
		{name: "partition 128", modify: func(c *boot.DeployConfig) { c.Image.RootPartition = 128 }},
		{name: "not JSON", data: "{", errHas: "deploy.json"},
		{name: "another node", modify: func(c *boot.DeployConfig) { c.Node = "e1n02" }, errHas: "is for node e1n02"},
		{name: "another build", modify: func(c *boot.DeployConfig) { c.BuildID = "fedcba9876543210" }, errHas: "build fedcba9876543210"},
		{name: "sha256 too short", modify: func(c *boot.DeployConfig) { c.Image.SHA256 = "abcd" }, errHas: "SHA-256"},
		{name: "no sha256", modify: func(c *boot.DeployConfig) { c.Image.SHA256 = "" }, errHas: "SHA-256"},
		{name: "root partition 0", modify: func(c *boot.DeployConfig) { c.Image.RootPartition = 0 }, errHas: "root partition 0"},
		{name: "root partition 129", modify: func(c *boot.DeployConfig) { c.Image.RootPartition = 129 }, errHas: "root partition 129"},
		{name: "negative root partition", modify: func(c *boot.DeployConfig) { c.Image.RootPartition = -1 }, errHas: "root partition"},
		{name: "disk with a slash", modify: func(c *boot.DeployConfig) { c.Disk = "../sda" }, errHas: "not a kernel disk name"},
		{name: "disk is a path", modify: func(c *boot.DeployConfig) { c.Disk = "/dev/sda" }, errHas: "not a kernel disk name"},
		{name: "disk is ..", modify: func(c *boot.DeployConfig) { c.Disk = ".." }, errHas: "not a kernel disk name"},
		{name: "disk name too long", modify: func(c *boot.DeployConfig) { c.Disk = strings.Repeat("a", 33) }, errHas: "not a kernel disk name"},
		{name: "no host name", modify: func(c *boot.DeployConfig) { c.Hostname = "" }, errHas: "host name"},
		{name: "host name with a slash", modify: func(c *boot.DeployConfig) { c.Hostname = "a/b" }, errHas: "host name"},
		{name: "unknown format", modify: func(c *boot.DeployConfig) { c.Image.Format = "qcow2" }, errHas: "qcow2"},
		{name: "no format", modify: func(c *boot.DeployConfig) { c.Image.Format = "" }, errHas: "image format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := goodConfig()
			if tc.modify != nil {
				tc.modify(&cfg)
			}
			data := []byte(tc.data)
			if tc.data == "" {
				var err error
				if data, err = json.Marshal(cfg); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ParseConfig(data, parseConfigCmd)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want one with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != cfg {
				t.Errorf("got %+v, want %+v", got, cfg)
			}
		})
	}
}

func TestClientFile(t *testing.T) {
	const token = "cGF5bG9hZA.c2lnbmF0dXJl"
	tests := []struct {
		name    string
		status  int
		body    string
		want    string // body returned on success
		errHas  string
		refused bool
	}{
		{name: "ok", status: http.StatusOK, body: "network:\n  version: 2\n", want: "network:\n  version: 2\n"},
		{name: "exactly the limit", status: http.StatusOK, body: strings.Repeat("x", maxInstallFile), want: strings.Repeat("x", maxInstallFile)},
		{name: "forbidden", status: http.StatusForbidden, body: "install token expired\nmore\n", errHas: "403 Forbidden: install token expired", refused: true},
		{name: "gone", status: http.StatusGone, body: "install file already served in this arming\n", errHas: "410", refused: true},
		{name: "forbidden, the server echoes the URL", status: http.StatusForbidden, body: "refused GET /install/e1n01/" + token + "/network-config\n", errHas: "403", refused: true},
		{name: "unavailable", status: http.StatusServiceUnavailable, body: "no site loaded\n", errHas: "503"},
		{name: "too large", status: http.StatusOK, body: strings.Repeat("x", maxInstallFile+1), errHas: "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gotPath string
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotPath = r.URL.Path
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer ts.Close()
			c := &Client{Cmd: Cmdline{Node: "e1n01", URL: ts.URL, Token: token}, HTTP: ts.Client(), Log: slog.New(slog.DiscardHandler)}
			body, err := c.File(context.Background(), "network-config")
			if gotPath != "/install/e1n01/"+token+"/network-config" {
				t.Errorf("fetched %s", gotPath)
			}
			if tc.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				if string(body) != tc.want {
					t.Errorf("body %d bytes, want %d", len(body), len(tc.want))
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, body %d bytes", len(body))
			}
			if body != nil {
				t.Errorf("body %d bytes with the error", len(body))
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q lacks %q", err, tc.errHas)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error holds the token: %q", err)
			}
			if !strings.Contains(err.Error(), "/install/e1n01/TOKEN/network-config") {
				t.Errorf("error %q does not name the file", err)
			}
			if Refused(err) != tc.refused {
				t.Errorf("Refused(%v) = %v, want %v", err, Refused(err), tc.refused)
			}
			var se *StatusError
			if tc.status != http.StatusOK && (!errors.As(err, &se) || se.Code != tc.status) {
				t.Errorf("error %v is not a *StatusError with code %d", err, tc.status)
			}
		})
	}
}

func TestClientFileUnreachable(t *testing.T) {
	const token = "cGF5bG9hZA.c2lnbmF0dXJl"
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	c := &Client{Cmd: Cmdline{Node: "e1n01", URL: url, Token: token}, HTTP: &http.Client{}, Log: slog.New(slog.DiscardHandler)}
	_, err := c.File(context.Background(), "deploy.json")
	if err == nil || strings.Contains(err.Error(), token) || Refused(err) {
		t.Errorf("err %v: want an error without the token, not refused", err)
	}
}

func TestRefused(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("x"), false},
		{&StatusError{Code: 400}, true},
		{&StatusError{Code: 499}, true},
		{&StatusError{Code: 500}, false},
		{&StatusError{Code: 302}, false},
		{errors.Join(errors.New("wrapped"), &StatusError{Code: 403}), true},
	}
	for _, tc := range tests {
		if got := Refused(tc.err); got != tc.want {
			t.Errorf("Refused(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(goodCmdline)
	f.Add("")
	f.Add("anneal.node=a anneal.build=b anneal.url=http://x anneal.token=t anneal.ip=10.0.0.1/8 anneal.bootif=AA")
	f.Add("anneal.ip=::1/128 anneal.gw=fe80::1%eth0 anneal.url=https:// anneal.node= ==== anneal.=")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			if c != (Cmdline{}) {
				t.Errorf("error %v with %+v", err, c)
			}
			return
		}
		if c.Node == "" || c.Build == "" || c.Token == "" || !c.IP.IsValid() || (c.MAC == "" && c.BootIF == "") {
			t.Errorf("parsed %+v: a required value is missing", c)
		}
		if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") || strings.HasSuffix(c.URL, "/") {
			t.Errorf("URL %q", c.URL)
		}
		if c.MAC != strings.ToLower(c.MAC) || c.BootIF != strings.ToLower(c.BootIF) {
			t.Errorf("MACs not lower case: %q %q", c.MAC, c.BootIF)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	good, err := json.Marshal(goodConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("{"))
	f.Add([]byte(`{"node":"e1n01","buildId":"0123456789abcdef","hostname":"h","disk":"..","image":{"sha256":"` + strings.Repeat("0", 64) + `","format":"raw","rootPartition":1}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data, parseConfigCmd)
		if err != nil {
			return
		}
		if cfg.Node != parseConfigCmd.Node || cfg.BuildID != parseConfigCmd.Build || len(cfg.Image.SHA256) != 64 ||
			cfg.Image.RootPartition < 1 || cfg.Image.RootPartition > 128 || strings.ContainsAny(cfg.Disk, "/.") || cfg.Hostname == "" {
			t.Errorf("accepted %+v", cfg)
		}
		switch cfg.Image.Format {
		case schema.DiskRaw, schema.DiskRawGzip, schema.DiskRawZstd:
		default:
			t.Errorf("accepted format %q", cfg.Image.Format)
		}
	})
}

// memDisk is an io.WriterAt over a byte slice.
type memDisk []byte

func (m memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write past the end of the disk")
	}
	return copy(m[off:], p), nil
}

// TestHeadWriter: the image's first MiB reaches the disk only at Commit,
// whatever the sizes of the writes; the rest goes to its offset as it comes.
func TestHeadWriter(t *testing.T) {
	img := make([]byte, 3<<20+123)
	for i := range img {
		img[i] = byte(i*7 + 1)
	}
	for _, chunk := range []int{1, 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 4 << 20} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			disk := make(memDisk, len(img)+(1<<20))
			h := &HeadWriter{W: disk}
			for off := 0; off < len(img); off += chunk {
				p := img[off:min(off+chunk, len(img))]
				if n, err := h.Write(p); err != nil || n != len(p) {
					t.Fatalf("Write(%d bytes at %d) = %d, %v", len(p), off, n, err)
				}
			}
			if !bytes.Equal(disk[:1<<20], make([]byte, 1<<20)) {
				t.Fatal("the first MiB reached the disk before Commit")
			}
			if !bytes.Equal(disk[1<<20:len(img)], img[1<<20:]) {
				t.Fatal("the rest of the image is not at its offset")
			}
			if err := h.Commit(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(disk[:len(img)], img) {
				t.Fatal("after Commit the disk does not hold the image")
			}
		})
	}
	// A write past the end of the disk is an error, with what was written.
	small := make(memDisk, 2<<20)
	if _, err := (&HeadWriter{W: small}).Write(make([]byte, 3<<20)); err == nil {
		t.Fatal("a write past the disk's end succeeded")
	}
}
