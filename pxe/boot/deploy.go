package boot

import (
	"crypto/subtle"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cavaliergopher/cpio"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// The image installer (schema.InstallerImage) runs anneal's own deploy
// environment: the image's kernel boots with two initramfs archives, the
// image's (the kernel modules the hardware needs) and anneal's
// (DeployInitrdPath: /init is the static anneal binary, pxe/deploy). It
// configures the provisioning address on the NIC that netbooted, fetches
// deploy.json and the install files once each with the install token,
// streams the disk image from the verified /artifacts copy to the install
// disk checking its SHA-256 as it writes, writes the node's network
// configuration, hostname and agent into the written root file system,
// posts the install callback and reboots into the installed system. It
// reports its phase and the bytes written to DeployProgressPath as it goes.

// FileDeploy is deploy.json, the deploy environment's instructions.
const FileDeploy = "deploy.json"

// DeployInitrdPath serves anneal's deploy initramfs.
const DeployInitrdPath = "/deploy/anneal.cpio"

// ipxeDeployInitrdName is the deploy initramfs's name in the script.
const ipxeDeployInitrdName = "anneal.cpio"

// DeployConfig is deploy.json.
type DeployConfig struct {
	Node     string `json:"node"`
	BuildID  string `json:"buildId"`
	Hostname string `json:"hostname"`
	// Disk is the install disk's kernel name ("nvme0n1"), "" for the
	// first disk the deploy environment finds.
	Disk  string          `json:"disk,omitempty"`
	Image DeployDiskImage `json:"image"`
}

// DeployDiskImage is the disk image to write: where to fetch it (the
// netboot server's verified copy, or the site's URL when it keeps none),
// its SHA-256 and size (0: not declared) as fetched, its format and the
// root partition's number.
type DeployDiskImage struct {
	URL           string `json:"url"`
	SHA256        string `json:"sha256"`
	Size          int64  `json:"size,omitempty"`
	Format        string `json:"format"`
	RootPartition int    `json:"rootPartition"`
}

// Deploy phases reported to DeployProgressPath, in order.
const (
	PhaseStarted   = "started"   // network up, deploy.json fetched
	PhaseWriting   = "writing"   // the image is being written; bytes so far
	PhaseWritten   = "written"   // written, SHA-256 and size verified
	PhaseConfigure = "configure" // writing hostname, network and agent
	PhaseRebooting = "rebooting" // callback posted; booting the installed system
	PhaseFailed    = "failed"    // the deploy stopped; the disk was made unbootable
)

var deployPhases = []string{PhaseStarted, PhaseWriting, PhaseWritten, PhaseConfigure, PhaseRebooting, PhaseFailed}

// DeployProgress is the body of POST /api/v1/nodes/{node}/progress.
type DeployProgress struct {
	Token string `json:"token"`
	Phase string `json:"phase"`
	Bytes int64  `json:"bytes,omitempty"`
	Total int64  `json:"total,omitempty"`
	// Error is why a failed deploy stopped.
	Error string `json:"error,omitempty"`
}

// renderDeploy renders deploy.json.
func renderDeploy(in *install) (map[string]string, error) {
	img := in.site.Image(in.node.Image)
	if img == nil || img.Disk == nil {
		return nil, fmt.Errorf("image %s: installer image needs a disk image", in.node.Image)
	}
	d := img.Disk
	cfg := DeployConfig{
		Node: in.node.Name, BuildID: in.id, Hostname: in.spec.Hostname, Disk: in.installDisk(),
		Image: DeployDiskImage{URL: in.artifactURL(d.Artifact, "disk"), SHA256: d.SHA256, Size: d.Size,
			Format: d.FormatOrDefault(), RootPartition: d.Root()},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("deploy.json: %w", err)
	}
	return map[string]string{FileDeploy: string(data) + "\n", FileInterfaces: renderInterfaces(in.net)}, nil
}

// deployArgs are the deploy environment's kernel arguments: the
// provisioning address it configures on the NIC that netbooted
// (anneal.bootif, which iPXE fills in), the MAC the site gives that NIC
// when it is a plain Ethernet device, and the gateway.
func deployArgs(in *install) ([]string, error) {
	prov := in.provisioningDevice()
	if prov == nil || len(prov.v4) == 0 {
		return nil, errors.New("installer image: no IPv4 address on the provisioning network for the deploy environment")
	}
	args := []string{"initrd=" + ipxeDeployInitrdName, "anneal.ip=" + prov.v4[0].String()}
	if prov.kind == devEther && prov.mac != "" {
		args = append(args, "anneal.mac="+prov.mac)
	}
	if gw := in.provisioningGateway(); gw != "" {
		args = append(args, "anneal.gw="+gw)
	}
	return args, nil
}

// handleProgress stores a deploy environment's progress. The install token
// must be the armed one (it is not consumed: the callback does that); a
// failed deploy marks the node failed and consumes it.
func (s *Server) handleProgress(w http.ResponseWriter, r *http.Request) {
	name, now := r.PathValue("node"), s.now()
	var req DeployProgress
	if err := decodeBody(w, r, &req); err != nil {
		s.fail(w, r, "deploy progress", name, err)
		return
	}
	known := false
	for _, p := range deployPhases {
		known = known || p == req.Phase
	}
	if !known || req.Bytes < 0 || req.Total < 0 {
		s.fail(w, r, "deploy progress", name, refuse(http.StatusBadRequest, "unknown phase or negative byte count", nil))
		return
	}
	c, err := s.checkToken(name, req.Token, now)
	if err != nil {
		s.fail(w, r, "deploy progress", name, err)
		return
	}
	site, nd, err := s.siteNode(name)
	if err != nil {
		s.fail(w, r, "deploy progress", name, err)
		return
	}
	if err := s.checkSource(r, site, nd); err != nil {
		s.fail(w, r, "deploy progress", name, err)
		return
	}
	reason := "deploy failed: " + printable(req.Error, 300)
	var prev string
	err = s.Nodes.UpdateNode(r.Context(), name, func(rec *node.Record) error {
		switch {
		case rec.Nonce == "" || subtle.ConstantTimeCompare([]byte(rec.Nonce), []byte(c.Nonce)) != 1:
			return errTokenUsed
		case rec.Target != c.Build:
			return errTokenOtherBuild
		}
		prev = ""
		if rec.Deploy != nil {
			prev = rec.Deploy.Phase
		}
		rec.Deploy = &node.DeployProgress{Phase: req.Phase, Bytes: req.Bytes, Total: req.Total, At: now}
		if req.Phase == PhaseFailed {
			rec.Nonce = ""
			rec.State, rec.Reason, rec.Since = node.Failed, reason, now
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, errTokenUsed) && !errors.Is(err, errTokenOtherBuild) {
			err = fmt.Errorf("update node record: %w", err)
		}
		s.fail(w, r, "deploy progress", name, err)
		return
	}
	switch {
	case req.Phase == PhaseFailed:
		s.renders.forget(name)
		s.log().Warn("boot: deploy failed", "node", name, "reason", reason, "bytes", req.Bytes, "remote", remoteHost(r))
	case req.Phase != prev:
		s.log().Info("boot: deploy "+req.Phase, "node", name, "bytes", req.Bytes, "total", req.Total, "remote", remoteHost(r))
	}
	w.WriteHeader(http.StatusNoContent)
}

// printable bounds a client's message and keeps printable characters only.
func printable(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// handleDeployInitrd serves anneal's deploy initramfs: a newc archive
// whose /init is AgentBinary (which must be statically linked: nothing
// else is in it), and the directories the deploy environment mounts on.
func (s *Server) handleDeployInitrd(w http.ResponseWriter, r *http.Request) {
	if s.AgentBinary == "" {
		http.NotFound(w, r)
		return
	}
	f, size, err := openStatic(s.AgentBinary)
	if err != nil {
		s.log().Error("boot: deploy initramfs", "err", err)
		http.Error(w, "no deploy initramfs", http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(deployInitrdSize(size)))
	if r.Method == http.MethodHead {
		return
	}
	if err := writeDeployInitrd(w, f, size); err != nil {
		s.log().Warn("boot: deploy initramfs cut short", "remote", remoteHost(r), "err", err)
	}
}

// deployDirs are the deploy initramfs's directories.
var deployDirs = []string{"dev", "proc", "sys", "tmp", "run", "target"}

// writeDeployInitrd writes the archive: the directories, then /init.
func writeDeployInitrd(w io.Writer, bin io.Reader, size int64) error {
	cw := cpio.NewWriter(w)
	for _, d := range deployDirs {
		if err := cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
			return err
		}
	}
	if err := cw.WriteHeader(&cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: size}); err != nil {
		return err
	}
	if n, err := io.Copy(cw, io.LimitReader(bin, size)); err != nil {
		return err
	} else if n != size {
		return fmt.Errorf("agent binary changed while it was served: %d of %d bytes", n, size)
	}
	return cw.Close()
}

// deployInitrdSize is writeDeployInitrd's length for a binary of size
// bytes: newc headers are 110 bytes, name (with its NUL) and data are
// padded to 4 bytes, and the archive ends with "TRAILER!!!".
func deployInitrdSize(size int64) int64 {
	pad := func(n int64) int64 { return (n + 3) &^ 3 }
	entry := func(name string, data int64) int64 { return pad(110+int64(len(name))+1) + pad(data) }
	var n int64
	for _, d := range deployDirs {
		n += entry(d, 0)
	}
	return n + entry("init", size) + entry("TRAILER!!!", 0)
}

// CheckDeployBinary checks that the binary at path can be the deploy
// environment's /init on nodes of arch ("amd64", "arm64"; "" skips the
// check): a statically linked ELF executable for that machine.
func CheckDeployBinary(path, arch string) error {
	if path == "" {
		return errors.New("no agent binary to build the deploy initramfs from")
	}
	f, _, err := openStatic(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("agent binary %s: %w", path, err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if arch != "" && ef.Machine != want {
		return fmt.Errorf("agent binary %s is for %s, the image's nodes are %s: run the daemon built for their architecture", path, ef.Machine, arch)
	}
	return nil
}

// openStatic opens a statically linked ELF executable: the deploy
// environment has no dynamic loader nor libraries.
func openStatic(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("agent binary: %w", err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("agent binary %s is not a regular file", path)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("agent binary %s is not an ELF executable: %w", path, err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			f.Close()
			return nil, 0, fmt.Errorf("agent binary %s is dynamically linked; the deploy environment needs a static one (CGO_ENABLED=0 go build ./cmd/anneal)", path)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}
