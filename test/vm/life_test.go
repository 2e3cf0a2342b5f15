//go:build linux

package vm

// TestLife: a real machine's life under anneal serve. A QEMU VM (TCG) in
// a network namespace the test makes is node vm1 of a one-node site whose
// image uses installer "image". Its BMC is OpenIPMI's ipmi_sim, whose
// chassis control starts and stops the VM: power on starts QEMU, from the
// network once when the BMC was told to boot PXE next (the IPMI boot flag
// is for one boot), else from its disk; power off stops it.
//
// anneal serve (a static build: its binary is the deploy environment's
// /init) runs in the namespace with its DHCP, TFTP and netboot servers on
// the VM's tap device, follows a git repository of the site and drives the
// BMC with ipmitool. The site's artifacts are on a mirror in the namespace
// (busybox httpd): a real Debian kernel (linux-image-amd64), a base
// initramfs of its virtio and ext4 modules, and two disk images the test
// builds without loop devices (mkfs.ext4 -d, mkfs.vfat and syslinux
// through mtools, sfdisk): an ext4 root with busybox, whose init brings up
// the network anneal wrote (busybox ifup) and runs the anneal agent anneal
// wrote, and a FAT boot partition with syslinux, the kernel and an
// initramfs that mounts the root. Image 1 is raw, image 2 zstd-compressed.
//
// The life: the first converge installs image 1 (BMC: PXE next boot, power
// on; DHCP, iPXE, kernel, deploy environment, image written to the VM's
// virtio disk, callback, reboot from the disk, the installed agent's
// report verifies it, facts from the real kernel against the patch set's
// kernel and the image's version). A commit moves the node to image 2: it
// is rebuilt. `git revert` rebuilds it back. The test waits on the
// daemon's node records, and logs the time of each phase.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/zstd"

	"github.com/anneal-dev/anneal/test/servers"
)

const (
	lifeServerIP = "10.20.0.2"
	lifeNodeMAC  = "52:54:00:20:00:21"
	lifeMirror   = "127.0.0.1:8081"
	lifeIPMIPort = 9623
	// lifeInstallLimit bounds one rebuild, power on to verified, under TCG.
	lifeInstallLimit = 8 * time.Minute
)

// lifeModules are the kernel modules the VM needs: virtio PCI, disk and
// NIC, and ext4 (with the crc32c its metadata checksums use).
var lifeModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "ext4", "crc32c_generic"}

type lifeTools struct {
	kernel, release, mbr string
}

func lifeRequire(t *testing.T) lifeTools {
	t.Helper()
	if os.Geteuid() != 0 {
		servers.Unavailable(t, "TestLife needs root (network namespaces, a tap device)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		servers.Unavailable(t, "TestLife needs /dev/net/tun")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ip", "ipmi_sim", "ipmitool", "busybox", "ifup", "mkfs.ext4", "mkfs.vfat", "syslinux", "mcopy", "sfdisk", "git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			servers.Unavailable(t, "TestLife needs "+tool+": .ci/run installs qemu-system-x86 ipxe-qemu openipmi ipmitool busybox ifupdown e2fsprogs dosfstools syslinux mtools fdisk linux-image-amd64")
		}
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(kernels)
	if len(kernels) == 0 {
		servers.Unavailable(t, "TestLife needs a Debian kernel: .ci/run installs linux-image-amd64")
	}
	tl := lifeTools{kernel: kernels[len(kernels)-1], mbr: "/usr/lib/syslinux/mbr/mbr.bin"}
	tl.release = strings.TrimPrefix(filepath.Base(tl.kernel), "vmlinuz-")
	if _, err := os.Stat(filepath.Join("/lib/modules", tl.release, "modules.dep")); err != nil {
		servers.Unavailable(t, "TestLife: no modules for kernel "+tl.release)
	}
	if _, err := os.Stat(tl.mbr); err != nil {
		servers.Unavailable(t, "TestLife needs syslinux's MBR (syslinux-common)")
	}
	return tl
}

func TestLife(t *testing.T) {
	tl := lifeRequire(t)
	t.Parallel()
	env := newLifeEnv(t, 0, 768)

	// Artifacts: kernel, the deploy environment's module initramfs, two
	// disk images.
	mirror, dir := env.mirror, env.dir
	copyFile(t, tl.kernel, filepath.Join(mirror, "vmlinuz"))
	mods := lifeModuleFiles(t, tl.release)
	writeCpio(t, filepath.Join(mirror, "modules.cpio"), mods, nil)
	bootInitrd := filepath.Join(dir, "boot-initrd.cpio.gz")
	lifeBootInitrd(t, bootInitrd, mods)
	for _, v := range []string{"1", "2"} {
		lifeDiskImage(t, dir, v, tl, bootInitrd, filepath.Join(mirror, "life-"+v+".raw"))
	}
	compressZstd(t, filepath.Join(mirror, "life-2.raw"), filepath.Join(mirror, "life-2.raw.zst"))

	site := env.site(t, lifeSite(t, mirror, tl.release), lifeNode("life-1", "eth0"))
	env.serve(t, site)
	api, bmc, serveLog := env.api, env.bmc, env.serveLog

	// 1. First converge: image 1 installed and verified.
	start := time.Now()
	v1 := lifeWaitVerified(t, api, "", start)
	t.Logf("image 1 (raw) installed and verified in %s", time.Since(start).Round(time.Second))
	lifePhases(t, serveLog, start)

	// 2. A commit moves the node to image 2 (zstd): rebuilt.
	must(t, os.WriteFile(filepath.Join(site, "node.yaml"), []byte(lifeNode("life-2", "eth0")), 0o644))
	lifeGit(t, site, "commit", "-q", "-am", "vm1 on image 2")
	start = time.Now()
	v2 := lifeWaitVerified(t, api, v1, start)
	t.Logf("image 2 (zstd) rebuilt and verified in %s", time.Since(start).Round(time.Second))
	lifePhases(t, serveLog, start)

	// 3. git revert: rebuilt back to image 1.
	lifeGit(t, site, "revert", "--no-edit", "HEAD")
	start = time.Now()
	if back := lifeWaitVerified(t, api, v2, start); back != v1 {
		t.Fatalf("after the revert the node runs build %s, want image 1's %s", back, v1)
	}
	t.Logf("reverted to image 1 and verified in %s", time.Since(start).Round(time.Second))
	lifePhases(t, serveLog, start)
	console := cleanConsole(readFile(filepath.Join(bmc, "console.log")))
	if n := strings.Count(console, "anneal-life: installed system up: vm1"); n < 3 {
		t.Errorf("the installed system came up %d times on the console, want 3", n)
	}
	lifeWriteRates(t, filepath.Join(bmc, "console.log"), filepath.Join(mirror, "life-1.raw"))
}

// lifeWriteRates logs the deploy environment's write rates of image 1 (raw)
// beside busybox dd's of the same image in the same VM, once dd's line is
// on the console (the installed image 1 runs it in the background).
func lifeWriteRates(t *testing.T, consolePath, image string) {
	t.Helper()
	annealRe := regexp.MustCompile(`msg="image written" bytes=(\d+) seconds=(\S+) MiB/s=(\S+)`)
	ddRe := regexp.MustCompile(`anneal-life: dd: from ([0-9.]+) to ([0-9.]+)`)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		console := cleanConsole(readFile(consolePath))
		dd := ddRe.FindStringSubmatch(console)
		if dd != nil {
			var t0, t1 float64
			fmt.Sscan(dd[1], &t0)
			fmt.Sscan(dd[2], &t1)
			ddBytes, ddSecs := float64(len(mustRead(t, image))), t1-t0
			ddRate := ddBytes / (1 << 20) / ddSecs
			for _, m := range annealRe.FindAllStringSubmatch(console, -1) {
				var rate float64
				fmt.Sscan(m[3], &rate)
				t.Logf("write rate: anneal %.1f MiB/s (%s bytes in %ss), dd %.1f MiB/s (%.0f bytes in %.1fs): ratio %.2f", rate, m[1], m[2], ddRate, ddBytes, ddSecs, rate/ddRate)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no dd line on the console within 2 minutes of the last install")
			return
		}
		time.Sleep(time.Second) // the console is a file QEMU appends to
	}
}

// lifeEnv is one test's network namespace with a mirror (127.0.0.1:8081,
// and lifeServerIP:8082 on the provisioning network), a BMC driving a QEMU
// VM, and anneal serve (once started).
type lifeEnv struct {
	dir, ns, mirror, bmc string
	api, serveLog        string
	apiIP                string
	bin                  string
}

// lifeStatic is anneal built without cgo: the daemon's binary is the
// deploy environment's /init. Built once per test binary, in binDir.
var lifeStatic = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "anneal-static")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/anneal")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build a static anneal: %v\n%s", err, out)
	}
	return bin, nil
})

// newLifeEnv makes the namespace (index idx keeps tests apart), the
// mirrors and the BMC of a VM with memMiB of memory.
func newLifeEnv(t *testing.T, idx, memMiB int) *lifeEnv {
	t.Helper()
	bin, err := lifeStatic()
	if err != nil {
		t.Fatal(err)
	}
	e := &lifeEnv{dir: t.TempDir(), bin: bin}
	e.mirror, e.bmc = filepath.Join(e.dir, "mirror"), filepath.Join(e.dir, "bmc")
	must(t, os.MkdirAll(e.mirror, 0o755))
	e.ns, e.apiIP = lifeNetns(t, idx)
	startProc(t, e.inNS("busybox", "httpd", "-f", "-p", lifeMirror, "-h", e.mirror), filepath.Join(e.dir, "httpd.log"))
	// The same files on the provisioning network, for the VM.
	startProc(t, e.inNS("busybox", "httpd", "-f", "-vv", "-p", lifeServerIP+":8082", "-h", e.mirror), filepath.Join(e.dir, "httpd-prov.log"))
	lifeBMC(t, e.bmc, filepath.Join(e.dir, "disk.raw"), memMiB, e.inNS)
	return e
}

func (e *lifeEnv) inNS(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", e.ns}, args...)...)
}

// site makes the site's git repository: site.yaml and node.yaml.
func (e *lifeEnv) site(t *testing.T, siteYAML, nodeYAML string) string {
	t.Helper()
	site := filepath.Join(e.dir, "site")
	must(t, os.MkdirAll(site, 0o755))
	must(t, os.WriteFile(filepath.Join(site, "site.yaml"), []byte(siteYAML), 0o644))
	must(t, os.WriteFile(filepath.Join(site, "node.yaml"), []byte(nodeYAML), 0o644))
	lifeGit(t, site, "init", "-q", "-b", "main")
	lifeGit(t, site, "add", ".")
	lifeGit(t, site, "commit", "-q", "-m", "the site")
	return site
}

// serve starts anneal serve in the namespace, following site, with its
// DHCP, TFTP and netboot servers on tap0.
func (e *lifeEnv) serve(t *testing.T, site string) {
	t.Helper()
	grants := filepath.Join(e.dir, "grants.yaml")
	must(t, os.WriteFile(grants, []byte("secrets:\n  bmc-password:\n    from: env:LIFE_BMC_PASSWORD\n    bmc: [127.0.0.1/32]\n"), 0o644))
	tftp := filepath.Join(e.dir, "tftp")
	must(t, os.MkdirAll(tftp, 0o755))
	if b, err := os.ReadFile("/usr/lib/ipxe/undionly.kpxe"); err == nil {
		must(t, os.WriteFile(filepath.Join(tftp, "undionly.kpxe"), b, 0o644))
	}
	serve := e.inNS(e.bin, "serve", "--repo", site, "--interval", "1s", "--state", filepath.Join(e.dir, "state", "anneal.db"),
		"--listen", e.apiIP+":9000", "--netboot-listen", lifeServerIP+":8080",
		"--dhcp-listen", "0.0.0.0:67", "--dhcp-interface", "tap0", "--dhcp-server-ip", lifeServerIP,
		"--tftp-listen", lifeServerIP+":69", "--tftp-root", tftp)
	serve.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.dir, "ANNEAL_SECRETS=" + grants, "LIFE_BMC_PASSWORD=secret"}
	e.serveLog = filepath.Join(e.dir, "serve.log")
	startProc(t, serve, e.serveLog)
	e.api = "http://" + e.apiIP + ":9000"
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve log (tail):\n%s", tail(readFile(e.serveLog), 120))
			t.Logf("VM console (tail, the agent's reports left out):\n%s", tail(dropLines(cleanConsole(readFile(filepath.Join(e.bmc, "console.log"))), "msg=report"), 150))
			t.Logf("BMC chassis commands:\n%s", readFile(filepath.Join(e.bmc, "commands.log")))
		}
	})
}

// lifeWaitVerified waits until the node is verified on a build other than
// prev and the one the site wants, and returns it.
func lifeWaitVerified(t *testing.T, api, prev string, since time.Time) string {
	t.Helper()
	deadline := time.Now().Add(lifeInstallLimit)
	var last string
	seen := map[string]bool{}
	for time.Now().Before(deadline) {
		var views []struct {
			Name    string `json:"name"`
			BuildID string `json:"buildId"`
			Live    *struct {
				State   string `json:"state"`
				BuildID string `json:"buildId"`
				Reason  string `json:"reason"`
				Deploy  *struct {
					Phase string `json:"phase"`
					Bytes int64  `json:"bytes"`
				} `json:"deploy"`
			} `json:"live"`
		}
		if err := lifeGetJSON(api+"/api/v1/nodes", &views); err == nil && len(views) == 1 {
			v := views[0]
			if v.Live != nil {
				state := v.Live.State
				if v.Live.Deploy != nil && !seen[v.Live.Deploy.Phase] {
					seen[v.Live.Deploy.Phase] = true
					t.Logf("  %6.1fs deploy %s (%d bytes)", time.Since(since).Seconds(), v.Live.Deploy.Phase, v.Live.Deploy.Bytes)
				}
				if state != last {
					t.Logf("  %6.1fs node %s %s %s", time.Since(since).Seconds(), v.Name, state, v.Live.Reason)
					last = state
				}
				if state == "failed" {
					t.Fatalf("the rebuild failed: %s", v.Live.Reason)
				}
				if state == "verified" && v.Live.BuildID == v.BuildID && v.BuildID != prev {
					return v.BuildID
				}
			}
		}
		time.Sleep(500 * time.Millisecond) // polling the daemon's API: it has no event stream yet
	}
	t.Fatalf("node not verified on a new build within %s (last state %q)", lifeInstallLimit, last)
	return ""
}

// lifePhases logs when the daemon's log saw each step of the last install.
func lifePhases(t *testing.T, logPath string, since time.Time) {
	t.Helper()
	steps := []struct{ name, re string }{
		{"power on", `event=node\.step .*step=power`},
		{"DHCP ack", `msg="dhcp: reply".*type=ACK`},
		{"iPXE script", `msg="boot: serving install script"`},
		{"deploy environment up", `msg="boot: deploy started"`},
		{"image written", `msg="boot: deploy written"`},
		{"callback", `msg="boot: node installed`},
		{"verified", `event=node\.step .*step=verified`},
	}
	re := regexp.MustCompile(`time=(\S+)`)
	lines := strings.Split(readFile(logPath), "\n")
	var out []string
	for _, s := range steps {
		sr := regexp.MustCompile(s.re)
		for _, l := range lines {
			m := re.FindStringSubmatch(l)
			if m == nil || !sr.MatchString(l) {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil || at.Before(since) {
				continue
			}
			out = append(out, fmt.Sprintf("%s +%.1fs", s.name, at.Sub(since).Seconds()))
			break
		}
	}
	t.Logf("  phases: %s", strings.Join(out, ", "))
}

func lifeSite(t *testing.T, mirror, release string) string {
	t.Helper()
	art := func(name string) string {
		data, err := os.ReadFile(filepath.Join(mirror, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		return fmt.Sprintf(`url: "http://%s/%s", sha256: "%s", size: %d`, lifeMirror, name, hex.EncodeToString(sum[:]), len(data))
	}
	image := func(v, disk, format string) string {
		return fmt.Sprintf(`---
apiVersion: anneal.dev/v1alpha1
kind: Image
name: life-%[1]s
version: "%[1]s.0"
arch: amd64
installer: image
kernel: {%[2]s}
initrd: {%[3]s}
kernelArgs: [console=ttyS0, panic=10]
disk: {%[4]s, format: %[5]s}
`, v, art("vmlinuz"), art("modules.cpio"), disk, format)
	}
	return lifeSiteBase(release) + image("1", art("life-1.raw"), "raw") + image("2", art("life-2.raw.zst"), "raw.zst")
}

// lifeSiteBase is the site without its images: one region, rack and
// network, the VM's hardware profile, a patch set pinning release.
func lifeSiteBase(release string) string {
	return fmt.Sprintf(`apiVersion: anneal.dev/v1alpha1
kind: Site
name: life
domain: life.test
regions:
  - name: r1
    racks:
      - name: k1
---
apiVersion: anneal.dev/v1alpha1
kind: Network
name: provisioning
role: provisioning
provisioning: true
vlan: 20
ipv4:
  cidr: 10.20.0.0/24
---
apiVersion: anneal.dev/v1alpha1
kind: HardwareProfile
name: qemu-vm
vendor: QEMU
model: Standard PC
bmc: ipmi
nics:
  - {name: eth0, speed: 1G, pxe: true}
disks:
  - {name: vda, size: 1G, type: ssd}
---
apiVersion: anneal.dev/v1alpha1
kind: PatchSet
name: kernel
kernel: %q
`, release)
}

func lifeNode(image, nic string) string {
	return fmt.Sprintf(`apiVersion: anneal.dev/v1alpha1
kind: Node
name: vm1
region: r1
rack: k1
hardwareProfile: qemu-vm
hostIndex: 21
image: %[1]s
patchSet: kernel
bmc:
  address: 127.0.0.1
  port: %[2]d
  username: admin
  password: secret:bmc-password
interfaces:
  - {nic: %[4]s, mac: %[3]q}
networks:
  - {network: provisioning, interface: %[4]s}
`, image, lifeIPMIPort, lifeNodeMAC, nic)
}

// cpioFile is one entry of an archive the test writes.
type cpioFile struct {
	name string
	mode cpio.FileMode // type and permissions
	data []byte
	link string
}

// lifeModuleFiles are lifeModules and their dependencies from the host's
// /lib/modules, with the index files the deploy environment reads.
func lifeModuleFiles(t *testing.T, release string) []cpioFile {
	t.Helper()
	base := filepath.Join("/lib/modules", release)
	dep := readFile(filepath.Join(base, "modules.dep"))
	paths := map[string][]string{}
	byName := map[string]string{}
	for _, l := range strings.Split(dep, "\n") {
		p, ds, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(p), ".ko"), "-", "_")
		byName[name] = p
		paths[p] = strings.Fields(ds)
	}
	want := map[string]bool{}
	for _, m := range lifeModules {
		p, ok := byName[m]
		if !ok {
			t.Fatalf("kernel %s has no module %s (built in?)", release, m)
		}
		want[p] = true
		for _, d := range paths[p] {
			want[d] = true
		}
	}
	var files []cpioFile
	for _, idx := range []string{"modules.dep", "modules.alias", "modules.softdep"} {
		files = append(files, cpioFile{name: "lib/modules/" + release + "/" + idx, mode: cpio.TypeReg | 0o644, data: []byte(readFile(filepath.Join(base, idx)))})
	}
	for p := range want {
		data, err := os.ReadFile(filepath.Join(base, p))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, cpioFile{name: "lib/modules/" + release + "/" + p, mode: cpio.TypeReg | 0o644, data: data})
	}
	return files
}

// busyboxFiles are busybox and the libraries it links, at their paths.
func busyboxFiles(t *testing.T) []cpioFile {
	t.Helper()
	files := []cpioFile{{name: "bin/busybox", mode: cpio.TypeReg | 0o755, data: mustRead(t, "/bin/busybox")}}
	out, err := exec.Command("ldd", "/bin/busybox").Output()
	if err != nil {
		t.Fatalf("ldd busybox: %v", err)
	}
	for _, m := range regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1) {
		real, err := filepath.EvalSymlinks(m)
		if err != nil {
			continue
		}
		files = append(files, cpioFile{name: strings.TrimPrefix(m, "/"), mode: cpio.TypeReg | 0o755, data: mustRead(t, real)})
	}
	for _, a := range []string{"sh", "mount", "umount", "modprobe", "sleep", "switch_root", "cat", "echo", "mkdir", "hostname", "ip", "run-parts", "seq", "ls", "uname", "wget", "dd", "cut"} {
		files = append(files, cpioFile{name: "bin/" + a, mode: cpio.TypeSymlink | 0o777, link: "busybox"})
	}
	return files
}

// lifeBootInitrd is the installed system's initramfs: it loads the
// modules, mounts the root partition and switches to it.
func lifeBootInitrd(t *testing.T, path string, mods []cpioFile) {
	t.Helper()
	init := `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
modprobe -a virtio_pci virtio_blk virtio_net crc32c_generic ext4
for i in $(seq 1 100); do [ -b /dev/vda1 ] && break; sleep 0.1; done
mkdir -p /root
mount -t ext4 /dev/vda1 /root || { echo "anneal-life: cannot mount the root"; exec sh; }
mount --move /dev /root/dev
umount /proc /sys
exec switch_root /root /sbin/init
`
	files := append(busyboxFiles(t), mods...)
	files = append(files, cpioFile{name: "init", mode: cpio.TypeReg | 0o755, data: []byte(init)})
	writeCpio(t, path, files, []string{"dev", "proc", "sys", "root"})
}

// lifeDiskImage builds image v: partition 1 ext4 (the root), partition 2
// FAT (syslinux, kernel, initramfs; active), syslinux's MBR.
func lifeDiskImage(t *testing.T, dir, v string, tl lifeTools, bootInitrd, out string) {
	t.Helper()
	root := filepath.Join(dir, "root-"+v)
	for _, d := range []string{"bin", "sbin", "lib", "lib64", "etc/network/if-pre-up.d", "etc/network/if-up.d", "etc/network/if-down.d", "etc/network/if-post-down.d",
		"etc/anneal", "proc", "sys", "dev", "run", "tmp", "var/run", "usr/local/bin", "root"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for _, f := range busyboxFiles(t) {
		p := filepath.Join(root, f.name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if f.link != "" {
			must(t, os.Symlink(f.link, p))
		} else {
			must(t, os.WriteFile(p, f.data, 0o755))
		}
	}
	// Debian's ifupdown (it runs busybox's ip and run-parts) applies the
	// /etc/network/interfaces anneal wrote.
	copyFile(t, "/sbin/ifup", filepath.Join(root, "sbin/ifup"))
	must(t, os.Chmod(filepath.Join(root, "sbin/ifup"), 0o755))
	init := `#!/bin/sh
export PATH=/bin:/sbin:/usr/local/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs run /run
mkdir -p /run/network
hostname -F /etc/hostname
ifup -a || echo "anneal-life: ifup failed"
echo "anneal-life: installed system up: $(cat /etc/hostname) image ` + v + ` build $(cat /etc/anneal/build-id)"
if [ -e /etc/anneal-life-measure ] && [ -b /dev/vdb ]; then
  # The same image, written by busybox's wget and dd to a scratch disk,
  # for the write rate's yardstick.
  (t0=$(cut -d " " -f 1 /proc/uptime); wget -q -O - http://` + lifeServerIP + `:8082/life-1.raw | dd of=/dev/vdb bs=4M conv=fsync 2>/dev/null; t1=$(cut -d " " -f 1 /proc/uptime); echo "anneal-life: dd: from $t0 to $t1" > /dev/console) &
fi
exec /usr/local/bin/anneal agent --interval 3s
`
	must(t, os.WriteFile(filepath.Join(root, "sbin/init"), []byte(init), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("NAME=\"anneal life\"\nID=life\nVERSION_ID="+v+"\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("unconfigured\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("127.0.0.1 localhost\n"), 0o644))
	if v == "1" {
		must(t, os.WriteFile(filepath.Join(root, "etc/anneal-life-measure"), nil, 0o644))
	}

	const mib = 1 << 20
	rootSize, bootSize := int64(96*mib), int64(32*mib)
	p1, p2 := filepath.Join(dir, "p1-"+v+".img"), filepath.Join(dir, "p2-"+v+".img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", root, "-L", "root", p1, fmt.Sprint(rootSize/1024)+"k")
	run(t, "mkfs.vfat", "-C", p2, fmt.Sprint(bootSize/1024))
	run(t, "syslinux", "--install", p2)
	cfg := filepath.Join(dir, "syslinux-"+v+".cfg")
	must(t, os.WriteFile(cfg, []byte("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.gz console=ttyS0 panic=10\n"), 0o644))
	run(t, "mcopy", "-i", p2, tl.kernel, "::vmlinuz")
	run(t, "mcopy", "-i", p2, bootInitrd, "::initrd.gz")
	run(t, "mcopy", "-i", p2, cfg, "::syslinux.cfg")

	total := mib + rootSize + bootSize + mib
	f, err := os.Create(out)
	must(t, err)
	must(t, f.Truncate(total))
	must(t, f.Close())
	sf := exec.Command("sfdisk", "-q", out)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nstart=2048, size=%d, type=83\nstart=%d, size=%d, type=6, bootable\n",
		rootSize/512, 2048+rootSize/512, bootSize/512))
	if o, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, o)
	}
	disk, err := os.OpenFile(out, os.O_WRONLY, 0)
	must(t, err)
	defer disk.Close()
	mbr := mustRead(t, tl.mbr)
	if _, err := disk.WriteAt(mbr[:440], 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		file string
		off  int64
	}{{p1, mib}, {p2, mib + rootSize}} {
		if _, err := disk.WriteAt(mustRead(t, p.file), p.off); err != nil {
			t.Fatal(err)
		}
	}
}

func writeCpio(t *testing.T, path string, files []cpioFile, dirs []string) {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if strings.HasSuffix(path, ".gz") {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	cw := cpio.NewWriter(w)
	made := map[string]bool{}
	mkdir := func(d string) {
		var parts []string
		for _, p := range strings.Split(d, "/") {
			parts = append(parts, p)
			full := strings.Join(parts, "/")
			if full == "" || full == "." || made[full] {
				continue
			}
			made[full] = true
			must(t, cw.WriteHeader(&cpio.Header{Name: full, Mode: cpio.TypeDir | 0o755}))
		}
	}
	for _, d := range dirs {
		mkdir(d)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	for _, f := range files {
		mkdir(filepath.Dir(f.name))
		h := &cpio.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Linkname: f.link}
		if f.link != "" {
			h.Size = int64(len(f.link))
		}
		must(t, cw.WriteHeader(h))
		if f.link != "" {
			_, err := cw.Write([]byte(f.link))
			must(t, err)
		} else {
			_, err := cw.Write(f.data)
			must(t, err)
		}
	}
	must(t, cw.Close())
	if zw != nil {
		must(t, zw.Close())
	}
	must(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

func compressZstd(t *testing.T, src, dst string) {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	must(t, err)
	must(t, os.WriteFile(dst, enc.EncodeAll(mustRead(t, src), nil), 0o644))
}

// lifeNetns makes the namespace: tap0 (the provisioning network, the
// servers at .2) and a veth pair to the test for serve's API; it returns
// the namespace and the API's address in it.
func lifeNetns(t *testing.T, idx int) (string, string) {
	t.Helper()
	suffix := fmt.Sprintf("%d%d", os.Getpid()%10000, idx)
	ns, host, peer := "anneal-life-"+suffix, "alh"+suffix, "aln"+suffix
	hostIP, nsIP := fmt.Sprintf("10.21.%d.1", idx), fmt.Sprintf("10.21.%d.2", idx)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, c := range [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap"},
		{"ip", "-n", ns, "addr", "add", lifeServerIP + "/24", "dev", "tap0"},
		{"ip", "-n", ns, "link", "set", "tap0", "up"},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns},
		{"ip", "addr", "add", hostIP + "/30", "dev", host},
		{"ip", "link", "set", host, "up"},
		{"ip", "-n", ns, "addr", "add", nsIP + "/30", "dev", peer},
		{"ip", "-n", ns, "link", "set", peer, "up"},
	} {
		run(t, c...)
	}
	return ns, nsIP
}

// lifeChassis is ipmi_sim's chassis control for a QEMU VM: power on
// starts QEMU (once from the network when the boot flag says pxe, which
// it then clears), power off kills it; state is the process.
const lifeChassis = `#!/bin/sh
d=%[1]q
echo "$*" >> "$d/commands.log"
running() { [ -f "$d/qemu.pid" ] && kill -0 "$(cat "$d/qemu.pid")" 2>/dev/null; }
start() {
  boot="order=c"
  if [ "$(cat "$d/boot")" = pxe ]; then boot="once=n,order=c"; echo default > "$d/boot"; fi
  echo "=== anneal-life: power on, boot $boot, $(date +%%s)" >> "$d/console.log"
  qemu-system-x86_64 -accel tcg -m %[4]d -display none -daemonize -pidfile "$d/qemu.pid" \
    -chardev file,id=ser,path="$d/console.log",append=on -serial chardev:ser \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=%[2]s \
    -drive file=%[3]q,format=raw,if=virtio -drive file="$d/scratch.raw",format=raw,if=virtio \
    -boot "$boot" >> "$d/qemu.log" 2>&1
}
stop() {
  if running; then
    kill "$(cat "$d/qemu.pid")"
    while running; do sleep 0.1; done
  fi
  rm -f "$d/qemu.pid"
}
if [ "$1" = get ]; then
  shift
  for p in "$@"; do
    case $p in
      power) if running; then echo power:1; else echo power:0; fi;;
      boot) echo "boot:$(cat "$d/boot")";;
    esac
  done
  exit 0
fi
if [ "$1" = set ]; then
  shift
  while [ $# -ge 2 ]; do
    case $1 in
      power) if [ "$2" = 1 ]; then running || start; else stop; fi;;
      boot) echo "$2" > "$d/boot";;
    esac
    shift 2
  done
  exit 0
fi
exit 1
`

// lifeBMC starts ipmi_sim in the namespace, the VM's disk empty and the
// VM off.
func lifeBMC(t *testing.T, dir, disk string, memMiB int, inNS func(...string) *exec.Cmd) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "state"), 0o755))
	f, err := os.Create(disk)
	must(t, err)
	must(t, f.Truncate(256<<20))
	must(t, f.Close())
	f, err = os.Create(filepath.Join(dir, "scratch.raw"))
	must(t, err)
	must(t, f.Truncate(256<<20))
	must(t, f.Close())
	for name, content := range map[string]string{"boot": "default\n", "commands.log": "", "console.log": "",
		"bmc.emu":    servers.BMCEmu,
		"chassis.sh": fmt.Sprintf(lifeChassis, dir, lifeNodeMAC, disk, memMiB),
		"lan.conf":   servers.LanConf(lifeIPMIPort, filepath.Join(dir, "chassis.sh"), "admin", "secret")} {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o755))
	}
	startProc(t, inNS("ipmi_sim", "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "bmc.emu"), "-s", filepath.Join(dir, "state"), "-n"), filepath.Join(dir, "ipmi_sim.log"))
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "qemu.pid")); err == nil {
			_ = exec.Command("kill", strings.TrimSpace(string(b))).Run()
		}
	})
}

// startProc starts a long-running process, its output to logPath, and
// stops it when the test ends.
func startProc(t *testing.T, cmd *exec.Cmd, logPath string) {
	t.Helper()
	out, err := os.Create(logPath)
	must(t, err)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		out.Close()
	})
}

func lifeGetJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func lifeGit(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=life", "-c", "user.email=life@example.net"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.WriteFile(dst, mustRead(t, src), 0o644))
}

func dropLines(s, sub string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, sub) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>c]|\r`)

func cleanConsole(s string) string { return ansi.ReplaceAllString(s, "") }

// diImages is where Debian's netboot installer is (package
// debian-installer-12-netboot-amd64).
const diImages = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"

// TestDebianInstaller: the real Debian installer (d-i) netboots through
// anneal serve, as TestLife's VM does, with anneal's preseed, and gets as
// far as offline allows without a prompt: it configures the preseed's
// static network and asks the image's mirror (a mirror on the
// provisioning network with no archive) for the suite's Release file. A
// question left unanswered before that step would stop it, and the
// mirror would never be asked.
func TestDebianInstaller(t *testing.T) {
	lifeRequire(t)
	if _, err := os.Stat(filepath.Join(diImages, "initrd.gz")); err != nil {
		servers.Unavailable(t, "TestDebianInstaller needs d-i's netboot images: .ci/run installs debian-installer-12-netboot-amd64")
	}
	t.Parallel()
	// d-i asks about its low memory mode below about 1 GiB.
	env := newLifeEnv(t, 1, 2048)
	copyFile(t, filepath.Join(diImages, "linux"), filepath.Join(env.mirror, "di-linux"))
	copyFile(t, filepath.Join(diImages, "initrd.gz"), filepath.Join(env.mirror, "di-initrd.gz"))
	must(t, os.MkdirAll(filepath.Join(env.mirror, "debian"), 0o755))
	art := func(name string) string {
		sum := sha256.Sum256(mustRead(t, filepath.Join(env.mirror, name)))
		return fmt.Sprintf(`{url: "http://%s/%s", sha256: "%s"}`, lifeMirror, name, hex.EncodeToString(sum[:]))
	}
	// The NIC as d-i names it: virtio-net in QEMU's PCI slot 3.
	site := env.site(t, strings.Replace(lifeSiteBase("6.1.0-0-amd64"), "  - {name: eth0,", "  - {name: ens3,", 1)+fmt.Sprintf(`---
apiVersion: anneal.dev/v1alpha1
kind: Image
name: debian-12
version: "12"
arch: amd64
installer: preseed
kernel: %s
initrd: %s
kernelArgs: [console=ttyS0]
mirror: http://%s:8082/debian
`, art("di-linux"), art("di-initrd.gz"), lifeServerIP), lifeNode("debian-12", "ens3"))
	env.serve(t, site)

	start := time.Now()
	release := regexp.MustCompile(`url:/debian/dists/[a-z]+/Release`)
	const diLimit = 10 * time.Minute // 4 minutes here under TCG with the machine loaded
	deadline := start.Add(diLimit)
	for !release.MatchString(readFile(filepath.Join(env.dir, "httpd-prov.log"))) {
		if time.Now().After(deadline) {
			t.Fatalf("d-i did not ask the mirror for the suite's Release within %s: it stopped at a question (console above)", diLimit)
		}
		time.Sleep(time.Second) // the mirror's log is a file busybox httpd appends to
	}
	t.Logf("d-i reached the mirror step with no prompt %s after the start", time.Since(start).Round(time.Second))
	lifePhases(t, env.serveLog, start)
	if got := readFile(env.serveLog); !strings.Contains(got, `file=preseed.cfg`) {
		t.Errorf("the preseed was not served (serve log):\n%s", tail(got, 40))
	}
}
