//go:build linux

package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/anneal-dev/anneal/agent"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/schema"
)

// target is where the written root file system is mounted.
const target = "/target"

// Main runs the deploy environment as PID 1 and never returns: it
// reboots into the installed system when the deploy succeeded, and
// powers the machine off when it failed (the disk wiped of anything it
// wrote), after reporting why.
func Main(log *slog.Logger) {
	// The whole deploy is bounded: a server that stops answering leaves
	// no node in its deploy environment for ever.
	ctx, cancel := context.WithTimeout(context.Background(), deployLimit)
	defer cancel()
	err := runSafely(ctx, log)
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if err != nil {
		log.Error("deploy failed; powering off", "err", err)
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	} else {
		log.Info("deploy done; rebooting into the installed system")
	}
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		log.Error("reboot", "err", err)
	}
	for { // PID 1 must not exit
		time.Sleep(time.Hour)
	}
}

// deployLimit bounds one deploy, network up to reboot: the install
// token's lifetime (the rollout's install timeout) is 45 minutes by
// default, after which nothing the deploy environment sends is accepted.
const deployLimit = 50 * time.Minute

// runState is what a failure must report and undo: the client to the
// netboot server once the network is up, the install disk once the
// deploy started writing it.
type runState struct {
	client *Client
	disk   string
}

// runSafely is run with a panic turned into an error: a panic of PID 1
// would panic the kernel, report nothing and leave the disk as it is.
func runSafely(ctx context.Context, log *slog.Logger) (err error) {
	st := &runState{}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("deploy environment panic: %v", r)
			if st.disk != "" {
				err = wipeAfter(st.disk, err)
			}
			if st.client != nil {
				st.client.Progress(context.WithoutCancel(ctx), boot.PhaseFailed, 0, 0, err)
			}
		}
	}()
	return run(ctx, log, st)
}

func run(ctx context.Context, log *slog.Logger, st *runState) error {
	if err := mountBasics(); err != nil {
		return err
	}
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read the kernel command line: %w", err)
	}
	cmd, err := ParseCmdline(string(raw))
	if err != nil {
		return err
	}
	log.Info("deploy environment", "node", cmd.Node, "build", cmd.Build, "server", cmd.URL)
	mods, err := newModules(log)
	if err != nil {
		log.Warn("kernel modules: none loaded", "err", err)
	} else {
		mods.coldplug()
	}
	link, err := netUp(ctx, cmd, mods, log)
	if err != nil {
		return err
	}
	log.Info("network up", "link", link, "address", cmd.IP)
	c := &Client{Cmd: cmd, Log: log, HTTP: &http.Client{Timeout: 0, Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		// The server may be downloading the image before it answers (its
		// own bound is 30 minutes); the deploy's deadline bounds the rest.
		ResponseHeaderTimeout: 30 * time.Minute,
	}}}
	st.client = c
	err = deploy(ctx, c, mods, st, log)
	if err != nil {
		// Reported even when the deploy's deadline ended it.
		c.Progress(context.WithoutCancel(ctx), boot.PhaseFailed, 0, 0, err)
	}
	return err
}

// deploy is the install proper, once the network is up.
func deploy(ctx context.Context, c *Client, mods *modules, st *runState, log *slog.Logger) error {
	var raw []byte
	// The first request may come before the link is really usable
	// (carrier, the switch port): retry it for two minutes.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var err error
		if raw, err = c.File(ctx, boot.FileDeploy); err == nil {
			break
		} else if time.Now().After(deadline) || Refused(err) {
			return err
		} else {
			log.Warn("fetch deploy.json; retrying", "err", err)
			time.Sleep(2 * time.Second)
		}
	}
	cfg, err := ParseConfig(raw, c.Cmd)
	if err != nil {
		return err
	}
	c.Progress(ctx, boot.PhaseStarted, 0, cfg.Image.Size, nil)
	files := Files{Hostname: cfg.Hostname, BuildID: cfg.BuildID, Binary: "/init"}
	if exe, err := os.Executable(); err == nil {
		files.Binary = exe
	}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{boot.FileInterfaces, &files.Interfaces}, {boot.FileNetworkConfig, &files.Netplan}, {boot.FileBuild, &files.Build}, {boot.FileAgent, &files.Agent}} {
		if *f.dst, err = c.File(ctx, f.name); err != nil {
			return err
		}
	}

	disk, err := findDisk(ctx, cfg.Disk, mods)
	if err != nil {
		return err
	}
	log.Info("writing the disk image", "disk", disk, "image", cfg.Image.URL, "format", cfg.Image.Format, "size", cfg.Image.Size)
	written, err := writeDisk(ctx, c, disk, cfg.Image, st, log)
	if err != nil {
		return err
	}
	c.Progress(ctx, boot.PhaseWritten, written, written, nil)
	log.Info("disk image written and verified", "bytes", written)

	part, err := rereadPartitions(ctx, disk, cfg.Image.RootPartition)
	if err != nil {
		return wipeAfter(disk, err)
	}
	c.Progress(ctx, boot.PhaseConfigure, written, written, nil)
	if err := mountRoot(mods, part); err != nil {
		return wipeAfter(disk, err)
	}
	err = Configure(target, files)
	if uerr := unix.Unmount(target, 0); uerr != nil && err == nil {
		err = fmt.Errorf("unmount the installed system: %w", uerr)
	}
	unix.Sync()
	if err != nil {
		return wipeAfter(disk, err)
	}
	// The disk is complete and flushed: report, then the callback (which
	// uses the install token up).
	c.Progress(ctx, boot.PhaseRebooting, written, written, nil)
	if err := callback(ctx, c, files); err != nil {
		return wipeAfter(disk, err)
	}
	return nil
}

// callback posts the install callback with the install token, the facts
// of the deploy environment and the build id written.
func callback(ctx context.Context, c *Client, files Files) error {
	dir := "/run/anneal"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg, id := filepath.Join(dir, "agent.json"), filepath.Join(dir, "build-id")
	if err := os.WriteFile(cfg, files.Agent, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(id, []byte(files.BuildID+"\n"), 0o600); err != nil {
		return err
	}
	a, err := agent.New(agent.Options{ConfigPath: cfg, BuildIDFile: id, Root: "/", Client: c.HTTP, Log: c.Log})
	if err != nil {
		return err
	}
	// Retried while the server cannot be reached or answers 5xx: the disk
	// is good and wiping it for a server's restart would waste the
	// install. A refusal after an attempt whose answer was lost means
	// that attempt got through (the token is single use).
	deadline := time.Now().Add(5 * time.Minute)
	for attempt := 1; ; attempt++ {
		err := a.Installed(ctx, c.Cmd.Token)
		if err == nil {
			return nil
		}
		var se *agent.StatusError
		permanent := errors.As(err, &se) && se.Permanent()
		switch {
		case permanent && attempt > 1 && se.Code == http.StatusForbidden:
			c.Log.Warn("install callback refused as used: an earlier attempt whose answer was lost got through", "attempt", attempt)
			return nil
		case permanent || time.Now().After(deadline) || ctx.Err() != nil:
			return fmt.Errorf("install callback: %w", scrub(err, c.Cmd.Token))
		}
		c.Log.Warn("install callback: retrying", "attempt", attempt, "err", scrub(err, c.Cmd.Token))
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*2*time.Second, 15*time.Second)):
		}
	}
}

// writeDisk streams the image onto the disk and flushes it. On any
// failure after the first write the disk is wiped.
func writeDisk(ctx context.Context, c *Client, disk string, img boot.DeployDiskImage, st *runState, log *slog.Logger) (int64, error) {
	src, err := c.Image(ctx, img)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	f, err := os.OpenFile(disk, os.O_WRONLY|unix.O_EXCL, 0)
	if err != nil {
		return 0, fmt.Errorf("open the install disk: %w", err)
	}
	defer f.Close()
	size, err := diskSize(f)
	if err != nil {
		return 0, fmt.Errorf("install disk %s: size: %w", disk, err)
	}
	// The disk is unbootable from here until the image is verified: its
	// old partition tables go first, and the image's first MiB (its own)
	// is written last. A power cut in between leaves a disk that does not
	// boot, never a half-written system that does.
	st.disk = disk
	if err := wipeFile(f, size); err != nil {
		return 0, fmt.Errorf("install disk %s: %w", disk, err)
	}
	total := img.Size
	if img.Format != schema.DiskRaw {
		total = 0 // the declared size is the compressed file's
	}
	// Progress goes out in the background, one report at a time: a slow
	// server never slows the write.
	var reporting sync.WaitGroup
	var busy atomic.Bool
	progress := func(n int64) {
		if busy.CompareAndSwap(false, true) {
			reporting.Add(1)
			go func() {
				defer reporting.Done()
				defer busy.Store(false)
				c.Progress(ctx, boot.PhaseWriting, n, total, nil)
			}()
		}
	}
	start := time.Now()
	hw := &HeadWriter{W: f}
	written, err := WriteImage(ctx, hw, src, img, size, progress, 2*time.Second)
	reporting.Wait()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		if err = hw.Commit(); err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		return written, wipeAfter(disk, err)
	}
	secs := time.Since(start).Seconds()
	log.Info("image written", "bytes", written, "seconds", fmt.Sprintf("%.1f", secs), "MiB/s", fmt.Sprintf("%.1f", float64(written)/(1<<20)/secs))
	return written, nil
}

// wipeAfter makes the disk unbootable (its first and last MiB: the MBR,
// the GPT and its backup) and returns err.
func wipeAfter(disk string, err error) error {
	if werr := wipe(disk); werr != nil {
		return fmt.Errorf("%w (and wiping the disk failed: %v)", err, werr)
	}
	return fmt.Errorf("%w (the disk was wiped)", err)
}

func wipe(disk string) error {
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := diskSize(f)
	if err != nil {
		return err
	}
	return wipeFile(f, size)
}

// wipeFile zeroes a disk's first and last MiB and flushes them.
func wipeFile(f *os.File, size int64) error {
	zero := make([]byte, 1<<20)
	for _, off := range []int64{0, size - int64(len(zero))} {
		if off < 0 {
			continue
		}
		if _, err := f.WriteAt(zero, off); err != nil {
			return fmt.Errorf("wipe: %w", err)
		}
	}
	return f.Sync()
}

// diskSize is a block device's size (its end, as seek finds it).
func diskSize(f *os.File) (int64, error) {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return end, err
}

// mountBasics mounts what the deploy environment reads.
func mountBasics() error {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	return nil
}

// netUp configures the provisioning address on the NIC that netbooted
// (anneal.bootif, else the site's anneal.mac), waiting up to a minute for
// its driver.
func netUp(ctx context.Context, cmd Cmdline, mods *modules, log *slog.Logger) (string, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	want := []string{cmd.BootIF, cmd.MAC}
	var link netlink.Link
	deadline := time.Now().Add(time.Minute)
	for link == nil {
		links, err := netlink.LinkList()
		if err != nil {
			return "", fmt.Errorf("list links: %w", err)
		}
		for _, w := range want {
			for _, l := range links {
				if w != "" && strings.EqualFold(l.Attrs().HardwareAddr.String(), w) {
					link = l
					break
				}
			}
			if link != nil {
				break
			}
		}
		if link == nil {
			if mods != nil {
				mods.coldplug() // devices found late (USB NICs)
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("no network interface with MAC %s: its driver is not in the image's initrd", strings.Trim(strings.Join(want, " or "), " or"))
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	name := link.Attrs().Name
	if err := netlink.LinkSetUp(link); err != nil {
		return name, fmt.Errorf("%s up: %w", name, err)
	}
	addr, err := netlink.ParseAddr(cmd.IP.String())
	if err != nil {
		return name, err
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return name, fmt.Errorf("%s address %s: %w", name, cmd.IP, err)
	}
	if cmd.GW.IsValid() {
		gw := net.IP(cmd.GW.AsSlice())
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return name, fmt.Errorf("default route via %s: %w", cmd.GW, err)
		}
	}
	log.Debug("link configured", "link", name)
	return name, nil
}

// findDisk waits up to a minute for the install disk: the named one, or
// the first whole, non-removable disk by name.
func findDisk(ctx context.Context, name string, mods *modules) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		if mods != nil {
			mods.coldplug() // disks behind a controller are found after it loads (sd_mod)
		}
		if name != "" {
			if _, err := os.Stat("/sys/block/" + name); err == nil {
				return "/dev/" + name, nil
			}
		} else if d := firstDisk(); d != "" {
			return "/dev/" + d, nil
		}
		if time.Now().After(deadline) {
			if name == "" {
				return "", errors.New("no install disk found (none in /sys/block): its driver is not in the image's initrd")
			}
			return "", fmt.Errorf("install disk %s not found: the hardware profile names another disk, or its driver is not in the image's initrd", name)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func firstDisk() string {
	ents, _ := os.ReadDir("/sys/block")
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "sr") || strings.HasPrefix(n, "fd") || strings.HasPrefix(n, "zram") {
			continue
		}
		if rm, _ := os.ReadFile("/sys/block/" + n + "/removable"); strings.TrimSpace(string(rm)) == "1" {
			continue
		}
		if sz, _ := os.ReadFile("/sys/block/" + n + "/size"); strings.TrimSpace(string(sz)) == "0" {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// partitionPath is a disk's partition n: vda1, nvme0n1p1.
func partitionPath(disk string, n int) string {
	if last := disk[len(disk)-1]; last >= '0' && last <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// rereadPartitions has the kernel read the written partition table and
// waits for the root partition's device.
func rereadPartitions(ctx context.Context, disk string, root int) (string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return "", err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("re-read the partition table of %s: %w", disk, err)
	}
	part := partitionPath(disk, root)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(part); err == nil {
			return part, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the image has no partition %d (%s): set the image's disk.rootPartition", root, part)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rootFSTypes are tried in order to mount the root partition.
var rootFSTypes = []string{"ext4", "xfs", "btrfs"}

// mountRoot mounts the root partition at target, loading the file
// system's module when the kernel does not know it yet.
func mountRoot(mods *modules, part string) error {
	_ = os.MkdirAll(target, 0o755)
	var errs []string
	for _, fs := range rootFSTypes {
		err := unix.Mount(part, target, fs, 0, "")
		if errors.Is(err, unix.ENODEV) && mods != nil {
			mods.load("fs-" + fs)
			err = unix.Mount(part, target, fs, 0, "")
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fs+": "+err.Error())
	}
	return fmt.Errorf("mount the root partition %s: %s", part, strings.Join(errs, "; "))
}
