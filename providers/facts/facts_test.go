package facts

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// tree writes a fake root: /proc, /sys and /etc as the kernel and the
// distribution lay them out.
type tree struct {
	t    *testing.T
	root string
}

func (tr tree) file(rel, content string) {
	tr.t.Helper()
	p := filepath.Join(tr.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

// link makes rel a relative symbolic link to the tree path to.
func (tr tree) link(rel, to string) {
	tr.t.Helper()
	p := filepath.Join(tr.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	target, err := filepath.Rel(filepath.Dir(p), filepath.Join(tr.root, to))
	if err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) remove(rel string) {
	tr.t.Helper()
	if err := os.RemoveAll(filepath.Join(tr.root, rel)); err != nil {
		tr.t.Fatal(err)
	}
}

// fakeDev is one network device in the fake sysfs.
type fakeDev struct {
	name     string
	pci      string // PCI address of a physical NIC (device link); "" is virtual
	mac      string // address
	permMAC  string // bonding_slave/perm_hwaddr of a bond member
	mtu      int
	master   string // master link
	bondMode string // bonding/mode: a bond
	bridge   bool   // bridge/: a bridge
	vlan     bool   // uevent DEVTYPE=vlan
	lower    string // lower_NAME link
}

// devPath is where the kernel puts a device under /sys/devices.
func devPath(name, pci string) string {
	if pci == "" {
		return "sys/devices/virtual/net/" + name
	}
	return "sys/devices/pci0000:00/" + pci + "/net/" + name
}

// netdev adds d to the fake sysfs; devs names every device for links.
func (tr tree) netdev(d fakeDev, devs map[string]fakeDev) {
	tr.t.Helper()
	dir := devPath(d.name, d.pci)
	tr.link("sys/class/net/"+d.name, dir)
	tr.file(dir+"/address", d.mac+"\n")
	tr.file(dir+"/mtu", fmt.Sprintf("%d\n", d.mtu))
	uevent := fmt.Sprintf("INTERFACE=%s\nIFINDEX=7\n", d.name)
	if d.vlan {
		uevent = "DEVTYPE=vlan\n" + uevent
	}
	if d.bridge {
		uevent = "DEVTYPE=bridge\n" + uevent
		tr.file(dir+"/bridge/stp_state", "0\n")
	}
	if d.bondMode != "" {
		uevent = "DEVTYPE=bond\n" + uevent
		tr.file(dir+"/bonding/mode", d.bondMode+"\n")
	}
	tr.file(dir+"/uevent", uevent)
	if d.pci != "" {
		tr.file("sys/devices/pci0000:00/"+d.pci+"/vendor", "0x8086\n")
		tr.link(dir+"/device", "sys/devices/pci0000:00/"+d.pci)
	}
	if d.permMAC != "" {
		tr.file(dir+"/bonding_slave/perm_hwaddr", d.permMAC+"\n")
	}
	if d.master != "" {
		m := devs[d.master]
		tr.link(dir+"/master", devPath(m.name, m.pci))
		tr.link(devPath(m.name, m.pci)+"/lower_"+d.name, dir)
	}
	if d.lower != "" {
		l := devs[d.lower]
		tr.link(dir+"/lower_"+l.name, devPath(l.name, l.pci))
	}
}

// le is a /proc/net/route address: the 32-bit value in host order, in hex.
func le(ip string) string {
	a := netip.MustParseAddr(ip).As4()
	return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(a[:]))
}

// bondVLANBridgeHost writes the tree of a node with two NICs in an LACP
// bond, VLAN 100 on the bond, a bridge over that VLAN, a standalone NIC
// for provisioning, lo, a veth and the bonding_masters file.
func bondVLANBridgeHost(t *testing.T) tree {
	tr := tree{t: t, root: t.TempDir()}
	tr.file("proc/sys/kernel/hostname", "e1n01\n")
	tr.file("proc/sys/kernel/osrelease", "6.8.0-45-generic\n")
	tr.file("usr/lib/os-release", `# os-release(5)
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION='24.04.1 LTS (Noble Numbat)'
ID=ubuntu
ID_LIKE=debian
PRETTY_NAME="Ubuntu 24.04.1 LTS"

ANNEAL_NOTE="say \"hi\" for \$5 or a \\"
not an assignment
`)
	tr.link("etc/os-release", "usr/lib/os-release")
	devs := map[string]fakeDev{}
	for _, d := range []fakeDev{
		{name: "lo", mac: "00:00:00:00:00:00", mtu: 65536},
		{name: "eno1", pci: "0000:19:00.0", mac: "B0:7B:25:0B:01:01", mtu: 1500},
		{name: "ens1f0", pci: "0000:3b:00.0", mac: "b0:7b:25:0b:02:01", permMAC: "b0:7b:25:0b:02:01", mtu: 9000, master: "bond0"},
		{name: "ens1f1", pci: "0000:3b:00.1", mac: "b0:7b:25:0b:02:01", permMAC: "b0:7b:25:0b:03:01", mtu: 9000, master: "bond0"},
		{name: "bond0", mac: "b0:7b:25:0b:02:01", mtu: 9000, bondMode: "802.3ad 4"},
		{name: "bond0.100", mac: "b0:7b:25:0b:02:01", mtu: 9000, vlan: true, lower: "bond0", master: "br100"},
		{name: "br100", mac: "b0:7b:25:0b:02:01", mtu: 9000, bridge: true},
		{name: "veth5c1f", mac: "fa:2e:11:00:00:01", mtu: 1500},
	} {
		devs[d.name] = d
	}
	for _, d := range devs {
		tr.netdev(d, devs)
	}
	tr.file("sys/class/net/bonding_masters", "bond0\n")
	tr.file("proc/net/vlan/config", "VLAN Dev name\t | VLAN ID\nName-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD\nbond0.100      | 100  | bond0\n")
	tr.file("etc/resolv.conf", "# managed by anneal\nnameserver 10.10.0.53\nnameserver fd00:a::53\nsearch east.example.net\noptions ndots:2\n")
	tr.file("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
		"eno1\t00000000\t"+le("10.10.1.1")+"\t0003\t0\t0\t200\t00000000\t0\t0\t0\n"+
		"br100\t00000000\t"+le("10.10.2.1")+"\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"+
		"br100\t"+le("10.10.2.0")+"\t00000000\t0001\t0\t0\t0\t"+le("255.255.255.0")+"\t0\t0\t0\n"+
		"eno1\t"+le("10.10.1.0")+"\t00000000\t0001\t0\t0\t0\t"+le("255.255.255.0")+"\t0\t0\t0\n")
	tr.file("proc/net/ipv6_route", ""+
		"fd00000a000001200000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    br100\n"+
		"fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001    br100\n"+
		"00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd00000a000001200000000000000001 00000400 00000002 00000000 00000003    br100\n"+
		"00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
	return tr
}

// bondVLANBridgeAddrs are the addresses of bondVLANBridgeHost, with the
// link-local and loopback ones Collect leaves out.
type bondVLANBridgeAddrs struct{}

func (bondVLANBridgeAddrs) Addrs(_ context.Context, iface string) ([]netip.Prefix, error) {
	m := map[string][]string{
		"lo":     {"127.0.0.1/8", "::1/128"},
		"eno1":   {"fe80::b27b:25ff:fe0b:101/64", "10.10.1.11/24"},
		"br100":  {"fd00:a:0:120::b/64", "10.10.2.11/24", "fe80::1/64", "10.10.2.11/24"},
		"bond0":  {"fe80::2/64"},
		"ens1f0": nil,
	}
	var out []netip.Prefix
	for _, s := range m[iface] {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out, nil
}

// wantBondVLANBridge are the facts of bondVLANBridgeHost.
func wantBondVLANBridge() node.Facts {
	return node.Facts{
		Hostname: "e1n01",
		OSRelease: map[string]string{
			"NAME": "Ubuntu", "VERSION_ID": "24.04", "VERSION": "24.04.1 LTS (Noble Numbat)", "ID": "ubuntu",
			"ID_LIKE": "debian", "PRETTY_NAME": "Ubuntu 24.04.1 LTS", "ANNEAL_NOTE": `say "hi" for $5 or a \`,
		},
		Kernel: "6.8.0-45-generic",
		Interfaces: []node.FactInterface{
			{Name: "bond0", Kind: "bond", MAC: "b0:7b:25:0b:02:01", MTU: 9000, BondMode: "802.3ad"},
			{Name: "bond0.100", Kind: "vlan", MAC: "b0:7b:25:0b:02:01", MTU: 9000, Master: "br100", VLANID: 100, Link: "bond0"},
			{Name: "br100", Kind: "bridge", MAC: "b0:7b:25:0b:02:01", MTU: 9000, Addresses: []string{"10.10.2.11/24", "fd00:a:0:120::b/64"}},
			{Name: "eno1", Kind: "ether", MAC: "b0:7b:25:0b:01:01", MTU: 1500, Addresses: []string{"10.10.1.11/24"}},
			{Name: "ens1f0", Kind: "ether", MAC: "b0:7b:25:0b:02:01", MTU: 9000, Master: "bond0"},
			{Name: "ens1f1", Kind: "ether", MAC: "b0:7b:25:0b:03:01", MTU: 9000, Master: "bond0"},
		},
		Resolvers: []string{"10.10.0.53", "fd00:a::53"},
		Routes: []node.FactRoute{
			{Gateway: "10.10.2.1", Device: "br100"},
			{Gateway: "10.10.1.1", Device: "eno1"},
			{Gateway: "fd00:a:0:120::1", Device: "br100"},
		},
	}
}

func TestCollectFakeTree(t *testing.T) {
	tests := []struct {
		name   string
		change func(tr tree)
		want   func(f *node.Facts)
		addrs  AddrSource
	}{
		{
			name:  "bond of two NICs, VLAN on the bond, bridge over the VLAN",
			addrs: bondVLANBridgeAddrs{},
		},
		{
			name:   "os-release only in /usr/lib",
			change: func(tr tree) { tr.remove("etc/os-release") },
			addrs:  bondVLANBridgeAddrs{},
		},
		{
			name: "/etc/os-release wins",
			change: func(tr tree) {
				tr.remove("etc/os-release")
				tr.file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
			},
			want:  func(f *node.Facts) { f.OSRelease = map[string]string{"ID": "debian", "VERSION_ID": "12"} },
			addrs: bondVLANBridgeAddrs{},
		},
		{
			name: "no address source, no optional files, VLAN known by uevent only",
			change: func(tr tree) {
				for _, rel := range []string{"etc/os-release", "usr/lib/os-release", "etc/resolv.conf", "proc/net/route", "proc/net/ipv6_route", "proc/net/vlan"} {
					tr.remove(rel)
				}
			},
			want: func(f *node.Facts) {
				f.OSRelease, f.Resolvers, f.Routes = nil, nil, nil
				for i := range f.Interfaces {
					f.Interfaces[i].Addresses = nil
					if f.Interfaces[i].Kind == "vlan" {
						f.Interfaces[i].VLANID = 0 // only /proc/net/vlan/config has it
					}
				}
			},
		},
		{
			name: "default route without gateway",
			change: func(tr tree) {
				tr.file("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"+
					"wg0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n")
				tr.remove("proc/net/ipv6_route")
			},
			want:  func(f *node.Facts) { f.Routes = []node.FactRoute{{Device: "wg0"}} },
			addrs: bondVLANBridgeAddrs{},
		},
		{
			name: "bridge member NIC without a bond",
			change: func(tr tree) {
				devs := map[string]fakeDev{"br0": {name: "br0", mac: "b0:7b:25:0b:09:01", mtu: 1500, bridge: true}}
				tr.netdev(devs["br0"], devs)
				tr.netdev(fakeDev{name: "eno9", pci: "0000:5e:00.0", mac: "b0:7b:25:0b:09:01", mtu: 1500, master: "br0"}, devs)
			},
			want: func(f *node.Facts) {
				f.Interfaces = append(f.Interfaces,
					node.FactInterface{Name: "br0", Kind: "bridge", MAC: "b0:7b:25:0b:09:01", MTU: 1500},
					node.FactInterface{Name: "eno9", Kind: "ether", MAC: "b0:7b:25:0b:09:01", MTU: 1500, Master: "br0"})
				sortInterfaces(f.Interfaces)
			},
			addrs: bondVLANBridgeAddrs{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := bondVLANBridgeHost(t)
			if tc.change != nil {
				tc.change(tr)
			}
			want := wantBondVLANBridge()
			if tc.want != nil {
				tc.want(&want)
			}
			got, err := Collector{Root: tr.root, Addrs: tc.addrs}.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("facts:\n%s\nwant:\n%s", js(t, got), js(t, want))
			}
		})
	}
}

func sortInterfaces(is []node.FactInterface) {
	slices.SortFunc(is, func(a, b node.FactInterface) int { return strings.Compare(a.Name, b.Name) })
}

func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// brokenAddrs fails for every interface.
type brokenAddrs struct{}

func (brokenAddrs) Addrs(context.Context, string) ([]netip.Prefix, error) {
	return nil, errors.New("netlink: operation not permitted")
}

func TestCollectErrors(t *testing.T) {
	tests := []struct {
		name    string
		change  func(tr tree)
		addrs   AddrSource
		ctx     func() context.Context
		wantErr string
	}{
		{name: "no hostname", change: func(tr tree) { tr.remove("proc/sys/kernel/hostname") }, wantErr: "hostname"},
		{name: "no kernel release", change: func(tr tree) { tr.remove("proc/sys/kernel/osrelease") }, wantErr: "kernel release"},
		{name: "no /sys/class/net", change: func(tr tree) { tr.remove("sys/class/net") }, wantErr: "network interfaces"},
		{name: "bad MTU", change: func(tr tree) { tr.file(devPath("eno1", "0000:19:00.0")+"/mtu", "big\n") }, wantErr: "interface eno1: mtu"},
		{name: "bad route flags", change: func(tr tree) { tr.file("proc/net/route", "eno1\t00000000\t00000000\tzz\t0\t0\t0\t00000000\t0\t0\t0\n") }, wantErr: "/proc/net/route line 1"},
		{name: "address source fails", addrs: brokenAddrs{}, wantErr: "operation not permitted"},
		{name: "canceled", ctx: func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, wantErr: context.Canceled.Error()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := bondVLANBridgeHost(t)
			if tc.change != nil {
				tc.change(tr)
			}
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			_, err := Collector{Root: tr.root, Addrs: tc.addrs}.Collect(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
