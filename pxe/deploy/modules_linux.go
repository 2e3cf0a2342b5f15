//go:build linux

package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// modules loads kernel modules from the initramfs's /lib/modules/RELEASE
// as udev's coldplug does: for every device's modalias, the modules whose
// alias patterns match it (modules.alias), dependencies first
// (modules.dep) and soft pre-dependencies too (modules.softdep).
type modules struct {
	dir     string
	log     *slog.Logger
	aliases []alias
	deps    map[string]modInfo // by module name
	softpre map[string][]string
	loaded  map[string]bool
	seen    map[string]bool // modaliases coldplug handled
}

type alias struct{ pattern, module string }

type modInfo struct {
	path string   // relative to dir
	deps []string // module names, in modules.dep's order
}

func newModules(log *slog.Logger) (*modules, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, err
	}
	dir := "/lib/modules/" + unix.ByteSliceToString(u.Release[:])
	return loadModuleIndex(dir, log)
}

// loadModuleIndex reads a modules directory's index files.
func loadModuleIndex(dir string, log *slog.Logger) (*modules, error) {
	m := &modules{dir: dir, log: log, deps: map[string]modInfo{}, softpre: map[string][]string{}, loaded: map[string]bool{}, seen: map[string]bool{}}
	if err := eachLine(filepath.Join(dir, "modules.dep"), func(l string) {
		p, ds, ok := strings.Cut(l, ":")
		if !ok {
			return
		}
		info := modInfo{path: p}
		for _, d := range strings.Fields(ds) {
			info.deps = append(info.deps, modName(d))
		}
		m.deps[modName(p)] = info
	}); err != nil {
		return nil, err
	}
	_ = eachLine(filepath.Join(dir, "modules.alias"), func(l string) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "alias" {
			m.aliases = append(m.aliases, alias{pattern: f[1], module: modName(f[2])})
		}
	})
	_ = eachLine(filepath.Join(dir, "modules.softdep"), func(l string) {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					m.softpre[modName(f[1])] = append(m.softpre[modName(f[1])], w)
				}
			}
		}
	})
	if b, err := os.ReadFile("/proc/modules"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				m.loaded[f[0]] = true
			}
		}
	}
	return m, nil
}

func eachLine(p string, fn func(string)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			fn(l)
		}
	}
	return sc.Err()
}

// modName is a module's name from its file: kernel/fs/ext4/ext4.ko.xz →
// ext4; '-' and '_' are the same in module names.
func modName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// coldplug loads the modules of every device not seen before, again
// while loading one made new devices appear (a PCI bus's virtio
// devices), at most 8 rounds. Called again, it handles only new devices.
func (m *modules) coldplug() {
	seen := m.seen
	for round := 0; round < 8; round++ {
		fresh := false
		_ = filepath.WalkDir("/sys/devices", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "modalias" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			ma := strings.TrimSpace(string(b))
			if ma == "" || seen[ma] {
				return nil
			}
			seen[ma] = true
			fresh = true
			m.load(ma)
			return nil
		})
		if !fresh {
			return
		}
	}
}

// load loads the modules a name or modalias resolves to.
func (m *modules) load(name string) {
	if mod := strings.ReplaceAll(name, "-", "_"); m.deps[mod].path != "" {
		m.insert(mod, 0)
		return
	}
	for _, a := range m.aliases {
		if ok, _ := path.Match(a.pattern, name); ok || a.pattern == name {
			m.insert(a.module, 0)
		}
	}
}

// insert loads one module after its dependencies.
func (m *modules) insert(name string, depth int) {
	if m.loaded[name] || depth > 32 {
		return
	}
	info, ok := m.deps[name]
	if !ok {
		// An alias to a module that is built in or not in this initrd.
		return
	}
	m.loaded[name] = true
	for _, s := range m.softpre[name] {
		m.load(s)
	}
	for i := len(info.deps) - 1; i >= 0; i-- {
		m.insert(info.deps[i], depth+1)
	}
	if err := finit(filepath.Join(m.dir, info.path)); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("load kernel module", "module", name, "err", err)
		}
		return
	}
	m.log.Debug("loaded kernel module", "module", name)
}

func finit(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(p, ".ko") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE: the kernel decompresses it
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", p, err)
	}
	return nil
}
