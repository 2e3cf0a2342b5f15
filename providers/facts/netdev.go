package facts

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// vlanInfo is one line of /proc/net/vlan/config.
type vlanInfo struct {
	id     int
	parent string
}

// interfaces reads the network devices in /sys/class/net, sorted by name.
// It skips lo and virtual devices (no "device" link: veth, tun, dummy...)
// unless they are bonds, bridges or VLANs, and devices that vanish while
// they are read.
func interfaces(ctx context.Context, root string, addrs AddrSource) ([]node.FactInterface, error) {
	dir := filepath.Join(root, "sys/class/net")
	ents, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, fmt.Errorf("facts: network interfaces: %w", err)
	}
	vlans, err := vlanConfig(root)
	if err != nil {
		return nil, err
	}
	var out []node.FactInterface
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if e.Name() == "lo" {
			continue
		}
		fi, ok, err := readInterface(ctx, filepath.Join(dir, e.Name()), vlans, addrs)
		if err != nil {
			return nil, fmt.Errorf("facts: interface %s: %w", e.Name(), err)
		}
		if ok {
			out = append(out, fi)
		}
	}
	return out, nil
}

// readInterface reads one device directory of /sys/class/net; ok is false
// for a device that is skipped.
func readInterface(ctx context.Context, dev string, vlans map[string]vlanInfo, addrs AddrSource) (fi node.FactInterface, ok bool, err error) {
	name := filepath.Base(dev)
	st, err := os.Stat(dev)
	if errors.Is(err, fs.ErrNotExist) {
		return fi, false, nil // gone since the listing
	}
	if err != nil {
		return fi, false, err
	}
	if !st.IsDir() {
		return fi, false, nil // bonding_masters and other files
	}
	fi.Name = name
	isBond, err := exists(filepath.Join(dev, "bonding"))
	if err != nil {
		return fi, false, err
	}
	isBridge, err := exists(filepath.Join(dev, "bridge"))
	if err != nil {
		return fi, false, err
	}
	vlan, isVLAN := vlans[name]
	if !isBond && !isBridge && !isVLAN {
		devtype, err := ueventValue(filepath.Join(dev, "uevent"), "DEVTYPE")
		if err != nil {
			return fi, false, err
		}
		isVLAN = devtype == "vlan"
	}
	switch {
	case isBond:
		fi.Kind = node.KindBond
		mode, err := readOptional(dev, "bonding/mode") // "active-backup 1"
		if err != nil {
			return fi, false, err
		}
		if f := strings.Fields(mode); len(f) > 0 {
			fi.BondMode = f[0]
		}
	case isBridge:
		fi.Kind = node.KindBridge
	case isVLAN:
		fi.Kind = node.KindVLAN
		fi.VLANID, fi.Link = vlan.id, vlan.parent
		if fi.Link == "" {
			if fi.Link, err = lowerLink(dev); err != nil {
				return fi, false, err
			}
		}
	default:
		fi.Kind = node.KindEther
		physical, err := exists(filepath.Join(dev, "device"))
		if err != nil {
			return fi, false, err
		}
		if !physical {
			return fi, false, nil
		}
	}
	if fi.MAC, err = macOf(dev); err != nil {
		return fi, false, err
	}
	mtu, err := readOptional(dev, "mtu")
	if err != nil {
		return fi, false, err
	}
	if mtu != "" {
		if fi.MTU, err = strconv.Atoi(mtu); err != nil {
			return fi, false, fmt.Errorf("mtu: %w", err)
		}
	}
	if target, err := os.Readlink(filepath.Join(dev, "master")); err == nil {
		fi.Master = filepath.Base(target)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fi, false, err
	}
	if addrs != nil {
		ps, err := addrs.Addrs(ctx, name)
		if err != nil {
			return fi, false, err
		}
		fi.Addresses = globalAddrs(ps)
	}
	return fi, true, nil
}

// macOf is the device's MAC, lower-case: for a bond member its permanent
// address (bonding_slave/perm_hwaddr), since bonding gives members the
// bond's address; else "address".
func macOf(dev string) (string, error) {
	mac, err := readOptional(dev, "bonding_slave/perm_hwaddr")
	if err != nil {
		return "", err
	}
	if mac == "" {
		if mac, err = readOptional(dev, "address"); err != nil {
			return "", err
		}
	}
	if hw, err := net.ParseMAC(mac); err == nil {
		return hw.String(), nil
	}
	return mac, nil
}

// lowerLink is the device a stacked device sits on, from its lower_NAME
// link; "" when there is none.
func lowerLink(dev string) (string, error) {
	ents, err := os.ReadDir(dev)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if l, ok := strings.CutPrefix(e.Name(), "lower_"); ok && l != "" {
			return l, nil
		}
	}
	return "", nil
}

// vlanConfig reads /proc/net/vlan/config (written by the 8021q module):
// after two header lines, "NAME | VID | PARENT" per VLAN device. It is
// empty when the file does not exist.
func vlanConfig(root string) (map[string]vlanInfo, error) {
	vlans := map[string]vlanInfo{}
	f, err := os.Open(filepath.Join(root, "proc/net/vlan/config"))
	if errors.Is(err, fs.ErrNotExist) {
		return vlans, nil
	}
	if err != nil {
		return nil, fmt.Errorf("facts: VLANs: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "|")
		if len(parts) != 3 {
			continue // the header lines
		}
		id, err := strconv.Atoi(strings.TrimSpace(parts[1]))
		if err != nil {
			continue // "VLAN Dev name | VLAN ID" has two fields; be safe anyway
		}
		vlans[strings.TrimSpace(parts[0])] = vlanInfo{id: id, parent: strings.TrimSpace(parts[2])}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("facts: /proc/net/vlan/config: %w", err)
	}
	return vlans, nil
}

// ueventValue is the value of key in a sysfs uevent file, "" if absent.
func ueventValue(path, key string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v, nil
		}
	}
	return "", nil
}

// exists reports whether path exists (following links).
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
