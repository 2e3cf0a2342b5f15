package boot

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cavaliergopher/cpio"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// readDeployInitrd reads a deploy initramfs back: its entries in order and
// /init's content.
func readDeployInitrd(t *testing.T, archive []byte) ([]*cpio.Header, []byte) {
	t.Helper()
	r := cpio.NewReader(bytes.NewReader(archive))
	var hdrs []*cpio.Header
	var init []byte
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read the archive: %v", err)
		}
		hdrs = append(hdrs, h)
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", h.Name, err)
		}
		if h.Name == "init" {
			init = data
		}
	}
	return hdrs, init
}

// checkDeployInitrd checks the entries: the directories, then /init.
func checkDeployInitrd(t *testing.T, archive, bin []byte) {
	t.Helper()
	hdrs, init := readDeployInitrd(t, archive)
	var names []string
	for _, h := range hdrs {
		names = append(names, h.Name)
		switch h.Name {
		case "init":
			if !h.Mode.IsRegular() || h.Mode.Perm() != 0o755 || h.Size != int64(len(bin)) {
				t.Errorf("init: mode %v size %d, want a regular file 0755 of %d bytes", h.Mode, h.Size, len(bin))
			}
		default:
			if !h.Mode.IsDir() {
				t.Errorf("%s: mode %v, want a directory", h.Name, h.Mode)
			}
		}
	}
	if want := []string{"dev", "proc", "sys", "tmp", "run", "target", "init"}; !slices.Equal(names, want) {
		t.Errorf("entries %v, want %v", names, want)
	}
	if !bytes.Equal(init, bin) {
		t.Errorf("init holds %d bytes, not the %d-byte binary", len(init), len(bin))
	}
}

func TestDeployInitrd(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 4, 5, 7, 8, 1000, 1 << 16} {
		bin := make([]byte, size)
		for i := range bin {
			bin[i] = byte(i%253 + 1)
		}
		var out bytes.Buffer
		if err := writeDeployInitrd(&out, bytes.NewReader(bin), int64(size)); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got, want := int64(out.Len()), deployInitrdSize(int64(size)); got != want {
			t.Errorf("size %d: wrote %d bytes, deployInitrdSize says %d", size, got, want)
		}
		if out.Len()%4 != 0 {
			t.Errorf("size %d: archive of %d bytes is not 4-byte aligned", size, out.Len())
		}
		checkDeployInitrd(t, out.Bytes(), bin)
	}
}

func TestDeployInitrdBinaryChanged(t *testing.T) {
	// The binary shrank between the stat and the copy.
	if err := writeDeployInitrd(io.Discard, bytes.NewReader(make([]byte, 10)), 20); err == nil {
		t.Error("a short binary was archived")
	}
}

// staticBinary builds a statically linked executable, or skips.
func staticBinary(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build a static binary")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module static\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "static")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if hasInterp(t, bin) {
		t.Skip("CGO_ENABLED=0 go build made a dynamically linked binary")
	}
	return bin
}

// hasInterp reports whether path is an ELF file with a PT_INTERP program
// header (dynamically linked).
func hasInterp(t *testing.T, path string) bool {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// dynamicBinary is a dynamically linked executable on this system, or "".
func dynamicBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/true", "/usr/bin/true", "/bin/sh", "/usr/bin/env"} {
		if hasInterp(t, p) {
			return p
		}
	}
	return ""
}

func TestOpenStatic(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho not ELF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fakeELF := filepath.Join(dir, "fake")
	if err := os.WriteFile(fakeELF, []byte("\x7fELF pretend"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   func(t *testing.T) string
		errHas string // "": accepted
	}{
		{"static", staticBinary, ""},
		{"dynamic", func(t *testing.T) string {
			p := dynamicBinary(t)
			if p == "" {
				t.Skip("no dynamically linked binary found")
			}
			return p
		}, "dynamically linked"},
		{"shell script", func(*testing.T) string { return text }, "not an ELF executable"},
		{"ELF magic only", func(*testing.T) string { return fakeELF }, "not an ELF executable"},
		{"directory", func(*testing.T) string { return dir }, "not a regular file"},
		{"missing", func(*testing.T) string { return filepath.Join(dir, "none") }, "agent binary"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			f, size, err := openStatic(path)
			if tc.errHas != "" {
				if err == nil {
					f.Close()
					t.Fatal("accepted")
				}
				if f != nil {
					t.Error("a file with the error")
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q lacks %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Positioned at the start, for writeDeployInitrd.
			got, err := io.ReadAll(f)
			if err != nil || size != int64(len(want)) || !bytes.Equal(got, want) {
				t.Errorf("size %d, read %d bytes (err %v), want the file's %d bytes from the start", size, len(got), err, len(want))
			}
		})
	}
}

// TestDeployInitrdRoute serves the initramfs of a static binary and
// refuses a dynamic one.
func TestDeployInitrdRoute(t *testing.T) {
	f := newFixture(t)
	if status, _ := f.get(DeployInitrdPath); status != http.StatusNotFound {
		t.Errorf("without AgentBinary: %d, want 404", status)
	}
	bin := staticBinary(t)
	g := newFixture(t, func(f *fixture) { f.srv.AgentBinary = bin })
	resp, err := g.client.Get(g.ts.URL + DeployInitrdPath)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d (err %v)", DeployInitrdPath, resp.StatusCode, err)
	}
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != deployInitrdSize(int64(len(want))) || int64(len(body)) != resp.ContentLength {
		t.Errorf("Content-Length %d, body %d bytes, want %d", resp.ContentLength, len(body), deployInitrdSize(int64(len(want))))
	}
	checkDeployInitrd(t, body, want)

	dyn := dynamicBinary(t)
	if dyn == "" {
		return
	}
	h := newFixture(t, func(f *fixture) { f.srv.AgentBinary = dyn })
	if status, body := h.get(DeployInitrdPath); status != http.StatusServiceUnavailable || strings.Contains(body, dyn) {
		t.Errorf("dynamic binary: %d %q, want 503 without the server's path", status, body)
	}
	if err := CheckDeployBinary(dyn, "amd64"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("CheckDeployBinary(dynamic) = %v, want a dynamically linked error", err)
	}
}

// withDiskImage makes node's image install a disk image.
func withDiskImage(site *schema.Site, nd string, disk *schema.DiskImage) *schema.Image {
	img := site.Image(site.Node(nd).Image)
	img.Installer = schema.InstallerImage
	img.Disk = disk
	return img
}

func testDisk() *schema.DiskImage {
	return &schema.DiskImage{Artifact: schema.Artifact{URL: "http://boot.example.net/images/ubuntu-22.04.4/disk.raw",
		SHA256: strings.Repeat("5e", 32), Size: 2 << 30}}
}

func TestRenderImageInstaller(t *testing.T) {
	tests := []struct {
		name     string
		node     string
		disk     *schema.DiskImage
		direct   bool
		wantURL  string
		format   string
		root     int
		wantDisk string
		kernel   []string // on the kernel line
	}{
		{
			name: "defaults, proxied", node: "e1n01", disk: testDisk(),
			wantURL: testBase + "/artifacts/" + strings.Repeat("5e", 32) + "/disk", format: schema.DiskRaw, root: 1, wantDisk: "nvme0n1",
			kernel: []string{"initrd=initrd", "initrd=anneal.cpio", "anneal.ip=10.10.1.11/24", "anneal.mac=b0:7b:25:0b:01:01", "anneal.gw=10.10.1.1"},
		},
		{
			name: "zstd, root partition 2, direct", node: "e1n01", direct: true,
			disk:    func() *schema.DiskImage { d := testDisk(); d.Format, d.RootPartition = schema.DiskRawZstd, 2; return d }(),
			wantURL: "http://boot.example.net/images/ubuntu-22.04.4/disk.raw", format: schema.DiskRawZstd, root: 2, wantDisk: "nvme0n1",
			kernel: []string{"initrd=anneal.cpio", "anneal.ip=10.10.1.11/24"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := loadSite(t)
			withDiskImage(site, tc.node, tc.disk)
			nd := site.Node(tc.node)
			render := Render
			if tc.direct {
				render = RenderDirect
			}
			r, err := render(site, nd, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			if r.Installer != schema.InstallerImage {
				t.Errorf("installer %s", r.Installer)
			}
			want := []string{FileNetworkConfig, FileBuild, FileDeploy, FileInterfaces}
			if got := slices.Sorted(maps.Keys(r.Files)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Errorf("files %v, want %v", got, want)
			}
			served := filesFor(schema.InstallerImage)
			for name := range r.Files {
				if !slices.Contains(served, name) {
					t.Errorf("%s is rendered but not served (filesFor)", name)
				}
			}
			if !slices.Contains(served, FileAgent) {
				t.Error("agent.json is not served to the image installer")
			}
			// The script.
			for _, w := range []string{
				"initrd --name anneal.cpio " + testBase + "/deploy/anneal.cpio || goto failed\n",
				"initrd --name initrd ",
				"boot || goto failed\n",
			} {
				if !strings.Contains(r.Script, w) {
					t.Errorf("script lacks %q:\n%s", w, r.Script)
				}
			}
			kernel := kernelLine(t, r.Script)
			for _, arg := range append([]string{"anneal.node=" + tc.node, "anneal.build=" + r.BuildID, "anneal.url=" + testBase,
				"anneal.token=" + testToken, "anneal.bootif=${netX/mac}"}, tc.kernel...) {
				if !slices.Contains(strings.Fields(kernel), arg) {
					t.Errorf("kernel line lacks %q:\n%s", arg, kernel)
				}
			}
			if strings.Index(r.Script, "initrd --name initrd ") > strings.Index(r.Script, "initrd --name anneal.cpio ") {
				t.Error("anneal's initramfs comes before the image's: its /init must win")
			}
			// deploy.json.
			var cfg DeployConfig
			dec := json.NewDecoder(strings.NewReader(r.Files[FileDeploy]))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&cfg); err != nil {
				t.Fatalf("deploy.json: %v\n%s", err, r.Files[FileDeploy])
			}
			wantCfg := DeployConfig{Node: tc.node, BuildID: r.BuildID, Hostname: tc.node, Disk: tc.wantDisk,
				Image: DeployDiskImage{URL: tc.wantURL, SHA256: tc.disk.SHA256, Size: tc.disk.Size, Format: tc.format, RootPartition: tc.root}}
			if cfg != wantCfg {
				t.Errorf("deploy.json %+v\nwant %+v", cfg, wantCfg)
			}
			if !strings.Contains(r.Files[FileInterfaces], "iface eno1 inet static\n") {
				t.Errorf("interfaces lacks eno1's static stanza:\n%s", r.Files[FileInterfaces])
			}
		})
	}
}

func TestRenderImageInstallerRefuses(t *testing.T) {
	tests := []struct {
		name   string
		modify func(site *schema.Site)
		errHas string
	}{
		{"no disk image", func(site *schema.Site) { withDiskImage(site, "e1n01", nil) }, "needs a disk image"},
		{"no provisioning address", func(site *schema.Site) {
			withDiskImage(site, "e1n01", testDisk())
			site.Network("provisioning").IPv4 = nil
		}, "no IPv4 address on the provisioning network"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := loadSite(t)
			tc.modify(site)
			r, err := Render(site, site.Node("e1n01"), testBase, testToken)
			if err == nil {
				t.Fatalf("rendered:\n%s", r.Script)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q lacks %q", err, tc.errHas)
			}
		})
	}
}

func TestDeployProgress(t *testing.T) {
	const path = "/api/v1/nodes/e1n01/progress"
	type step struct {
		path   string // default: path
		body   any    // DeployProgress with TOKEN for the install token
		status int
	}
	tok := func(p DeployProgress) DeployProgress { p.Token = "TOKEN"; return p }
	tests := []struct {
		name  string
		steps []step
		check func(t *testing.T, f *fixture, rec *node.Record, token string)
	}{
		{
			name:  "writing",
			steps: []step{{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: 4 << 20, Total: 1 << 30}), status: http.StatusNoContent}},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.Deploy == nil || *rec.Deploy != (node.DeployProgress{Phase: PhaseWriting, Bytes: 4 << 20, Total: 1 << 30, At: t0}) {
					t.Errorf("deploy %+v", rec.Deploy)
				}
				if rec.State != node.Provisioning || rec.Nonce == "" {
					t.Errorf("state %s nonce %q: a progress report must not change them", rec.State, rec.Nonce)
				}
			},
		},
		{
			name: "every phase in turn, the last one stored",
			steps: []step{
				{body: tok(DeployProgress{Phase: PhaseStarted}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: 1, Total: 2}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: 2, Total: 2}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseWritten, Bytes: 2, Total: 2}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseConfigure}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseRebooting}), status: http.StatusNoContent},
			},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.Deploy == nil || rec.Deploy.Phase != PhaseRebooting || rec.State != node.Provisioning || rec.Nonce == "" {
					t.Errorf("record %+v deploy %+v", rec, rec.Deploy)
				}
			},
		},
		{
			name:  "unknown phase",
			steps: []step{{body: tok(DeployProgress{Phase: "flashing"}), status: http.StatusBadRequest}},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.Deploy != nil {
					t.Errorf("deploy %+v stored", rec.Deploy)
				}
			},
		},
		{name: "empty phase", steps: []step{{body: tok(DeployProgress{}), status: http.StatusBadRequest}}},
		{name: "negative bytes", steps: []step{{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: -1}), status: http.StatusBadRequest}}},
		{name: "negative total", steps: []step{{body: tok(DeployProgress{Phase: PhaseWriting, Total: -1}), status: http.StatusBadRequest}}},
		{name: "not JSON", steps: []step{{body: "{phase", status: http.StatusBadRequest}}},
		{
			name:  "wrong token",
			steps: []step{{body: DeployProgress{Token: "bm90LWEtdG9rZW4.c2lnbmF0dXJl", Phase: PhaseWriting}, status: http.StatusForbidden}},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.Deploy != nil || rec.State != node.Provisioning {
					t.Errorf("record %+v deploy %+v", rec, rec.Deploy)
				}
			},
		},
		{
			name: "forged token",
			steps: []step{{body: DeployProgress{Phase: PhaseFailed,
				Token: MintInstallToken([]byte("attacker-key-0123456789abcdef"), "e1n01", "BUILD", "nonce-e1n01", t0.Add(time.Hour))}, status: http.StatusForbidden}},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.State != node.Provisioning || rec.Nonce == "" {
					t.Errorf("a forged failure changed the record: %+v", rec)
				}
			},
		},
		{name: "no token", steps: []step{{body: DeployProgress{Phase: PhaseWriting}, status: http.StatusForbidden}}},
		{name: "token of another node", steps: []step{{path: "/api/v1/nodes/e1n02/progress", body: tok(DeployProgress{Phase: PhaseWriting}), status: http.StatusForbidden}}},
		{
			name: "failed",
			steps: []step{
				{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: 10}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseFailed, Bytes: 10, Error: "disk image is not the declared one: SHA-256 00, declared 11\nsecond\x00line"}), status: http.StatusNoContent},
				{body: tok(DeployProgress{Phase: PhaseWriting, Bytes: 20}), status: http.StatusForbidden},
				{body: tok(DeployProgress{Phase: PhaseFailed}), status: http.StatusForbidden},
			},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if rec.State != node.Failed || rec.Nonce != "" || !rec.Since.Equal(t0) {
					t.Errorf("state %s nonce %q since %v: want failed, nonce consumed", rec.State, rec.Nonce, rec.Since)
				}
				if !strings.HasPrefix(rec.Reason, "deploy failed:") || !strings.Contains(rec.Reason, "SHA-256 00, declared 11") || strings.ContainsAny(rec.Reason, "\n\x00") {
					t.Errorf("reason %q", rec.Reason)
				}
				if rec.Deploy == nil || rec.Deploy.Phase != PhaseFailed || rec.Deploy.Bytes != 10 {
					t.Errorf("deploy %+v", rec.Deploy)
				}
				// The failed install cannot go on: its files and callback are refused.
				if status, _ := f.post("/api/v1/nodes/e1n01/installed", installedRequest{Token: token, BuildID: f.buildID("e1n01")}, ""); status != http.StatusForbidden {
					t.Errorf("install callback after the failure: %d, want 403", status)
				}
			},
		},
		{
			name:  "failed with a long message",
			steps: []step{{body: tok(DeployProgress{Phase: PhaseFailed, Error: strings.Repeat("x", 1000)}), status: http.StatusNoContent}},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				if len(rec.Reason) > 400 || !strings.HasPrefix(rec.Reason, "deploy failed: xxx") {
					t.Errorf("reason of %d bytes: %.60q", len(rec.Reason), rec.Reason)
				}
			},
		},
		{
			name: "node re-armed with a new nonce",
			steps: []step{
				{body: tok(DeployProgress{Phase: PhaseStarted}), status: http.StatusNoContent},
			},
			check: func(t *testing.T, f *fixture, rec *node.Record, token string) {
				f.update("e1n01", func(r *node.Record) { r.Nonce = "a-newer-nonce" })
				if status, _ := f.post(path, DeployProgress{Token: token, Phase: PhaseFailed}, ""); status != http.StatusForbidden {
					t.Errorf("old token after re-arming: %d, want 403", status)
				}
				if rec := f.record("e1n01"); rec.State != node.Provisioning || rec.Nonce != "a-newer-nonce" {
					t.Errorf("an old token's failure changed the record: %+v", rec)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.arm("e1n01")
			f.arm("e1n02")
			token := f.tokenOf("e1n01")
			for i, s := range tc.steps {
				p := path
				if s.path != "" {
					p = s.path
				}
				body := s.body
				if dp, ok := body.(DeployProgress); ok && dp.Token == "TOKEN" {
					dp.Token = token
					body = dp
				}
				if status, out := f.post(p, body, ""); status != s.status {
					t.Fatalf("step %d: status %d, want %d: %s", i, status, s.status, out)
				}
			}
			if tc.check != nil {
				tc.check(t, f, f.record("e1n01"), token)
			}
		})
	}
}

// TestDeployProgressLogs: a failure and a refusal are logged, the token
// is not (the fixture checks the logs).
func TestDeployProgressLogs(t *testing.T) {
	f := newFixture(t)
	f.arm("e1n01")
	token := f.tokenOf("e1n01")
	if status, _ := f.post("/api/v1/nodes/e1n01/progress", DeployProgress{Token: token, Phase: PhaseFailed, Error: "fetch /install/e1n01/TOKEN/deploy.json: 500"}, ""); status != http.StatusNoContent {
		t.Fatalf("status %d", status)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `msg="boot: deploy failed" node=e1n01`) {
		t.Errorf("logs lack the failure:\n%s", logs)
	}
	if status, _ := f.post("/api/v1/nodes/e1n01/progress", DeployProgress{Token: token, Phase: PhaseWriting}, ""); status != http.StatusForbidden {
		t.Errorf("after the failure: %d, want 403", status)
	}
	if !strings.Contains(f.logs.String(), "level=WARN") {
		t.Error("a refused report is not logged at warn")
	}
}

func TestPrintable(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{name: "plain", in: "disk image is not the declared one", max: 300, want: "disk image is not the declared one"},
		{name: "control characters", in: "a\nb\tc\x00d\x1b[31m", max: 300, want: "a b c d [31m"},
		{name: "cut", in: "abcdef", max: 3, want: "abc…"},
		{name: "exactly max", in: "abc", max: 3, want: "abc"},
		{name: "cut inside a multi-byte character", in: "x" + strings.Repeat("é", 10), max: 4, want: "xé…"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := printable(tc.in, tc.max)
			if got != tc.want || !utf8.ValidString(got) {
				t.Errorf("printable(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}
