package boot

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

const (
	testBase  = "http://10.10.1.2:8080"
	testToken = "cGF5bG9hZA.c2lnbmF0dXJl"
)

// withInstaller makes every image of the site install with kind (the
// loaded site is this test's own copy).
func withInstaller(site *schema.Site, kind schema.InstallerKind) {
	for _, img := range site.Images {
		img.Installer = kind
	}
}

func TestRenderEveryInstaller(t *testing.T) {
	tests := []struct {
		kind       schema.InstallerKind
		scriptArgs []string // in the kernel line, with NODE for the node's name
		files      []string
		configHas  map[string][]string
	}{
		{schema.InstallerAutoinstall, []string{"autoinstall", "ds=nocloud-net;s=" + testBase + "/install/NODE/" + testToken + "/"},
			[]string{FileUserData, FileMetaData, FileVendorData},
			map[string][]string{
				FileUserData: {"#cloud-config\n", "autoinstall:", "version: 1", "hostname: NODE", "package: linux-image-KVER",
					`- "openssl=OPENSSL"`, "/target/etc/anneal/build-id", "/target/etc/anneal/agent.json",
					"curl -fsS --retry 5 -o /target/usr/local/bin/anneal '" + testBase + "/agent/anneal'",
					"- (umask 077 && printf '%s' '" + testToken + "' > /target/etc/anneal/install-token)\n",
					"cat > /target/etc/systemd/system/anneal-installed.service <<'ANNEAL_EOF'\n",
					"ExecStart=/usr/local/bin/anneal agent --once --install-token-file /etc/anneal/install-token\n",
					"cat > /target/etc/systemd/system/anneal-agent.service <<'ANNEAL_EOF'\n",
					"- curtin in-target --target=/target -- systemctl enable anneal-installed.service anneal-agent.service\n"},
				FileMetaData:   {"instance-id: NODE-BUILD\n", "local-hostname: NODE\n"},
				FileVendorData: {"#cloud-config"},
			}},
		{schema.InstallerCloudInit, []string{"autoinstall", "ds=nocloud-net;s=" + testBase + "/install/NODE/" + testToken + "/"},
			[]string{FileUserData, FileMetaData, FileVendorData},
			map[string][]string{FileUserData: {"autoinstall:"}}},
		{schema.InstallerKickstart, []string{"inst.ks=" + testBase + "/install/NODE/" + testToken + "/ks.cfg", "ifname=eno1:"},
			[]string{FileKickstart},
			map[string][]string{FileKickstart: {"network --hostname=NODE\n", "%packages\n", "kernel-KVER\n",
				"openssl-OPENSSL\n", "%post --erroronfail\n", "echo BUILD > /etc/anneal/build-id\n",
				"\n(umask 077 && printf '%s' '" + testToken + "' > /etc/anneal/install-token)\n",
				"\ncat > /etc/systemd/system/anneal-installed.service <<'ANNEAL_EOF'\n",
				"\nExecStart=/usr/local/bin/anneal agent --once --install-token-file /etc/anneal/install-token\n",
				"\ncat > /etc/systemd/system/anneal-agent.service <<'ANNEAL_EOF'\n",
				"\nsystemctl enable anneal-installed.service anneal-agent.service\n%end\n"}}},
		{schema.InstallerPreseed, []string{"auto=true", "priority=critical", "url=" + testBase + "/install/NODE/" + testToken + "/preseed.cfg", "interface=eno1"},
			[]string{FilePreseed, FileInterfaces, FileNetcfg},
			map[string][]string{
				FilePreseed: {"d-i preseed/run string netcfg.sh\n", "d-i netcfg/choose_interface select eno1\n", "d-i netcfg/disable_autoconfig boolean true\n", "d-i netcfg/get_netmask string 255.255.255.0\n", "d-i netcfg/get_gateway string 10.10.1.1\n",
					"d-i pkgsel/include string ifenslave vlan", "openssl=OPENSSL", "d-i preseed/late_command string ",
					"/target/etc/network/interfaces", " && (umask 077 && printf '%s' '" + testToken + "' > /target/etc/anneal/install-token) && ",
					" && echo 'ExecStart=/usr/local/bin/anneal agent --once --install-token-file /etc/anneal/install-token' && ",
					"; } > /target/etc/systemd/system/anneal-installed.service && ",
					"; } > /target/etc/systemd/system/anneal-agent.service && ",
					" && in-target systemctl enable anneal-installed.service anneal-agent.service\n"},
				FileInterfaces: {"auto bond0\n", "bond-slaves ", "vlan-raw-device bond0\n"},
				FileNetcfg:     {"#!/bin/sh\n", "\nkill-all-dhcp; netcfg\n"},
			}},
	}
	for _, tc := range tests {
		t.Run(string(tc.kind), func(t *testing.T) {
			site := loadSite(t)
			withInstaller(site, tc.kind)
			for _, nd := range site.Nodes {
				sub := func(s string) string {
					ps := site.PatchSet(nd.PatchSet)
					return strings.NewReplacer("NODE", nd.Name, "BUILD", node.BuildSpecOf(site, nd).ID(),
						"KVER", ps.Kernel, "OPENSSL", ps.Packages["openssl"]).Replace(s)
				}
				r, err := Render(site, nd, testBase+"/", testToken)
				if err != nil {
					t.Fatalf("%s: %v", nd.Name, err)
				}
				again, err := Render(site, nd, testBase, testToken)
				if err != nil || again.Script != r.Script || !maps.Equal(again.Files, r.Files) {
					t.Errorf("%s: rendering twice differs (err %v)", nd.Name, err)
				}
				if r.Installer != tc.kind || r.BuildID != node.BuildSpecOf(site, nd).ID() {
					t.Errorf("%s: installer %s build %s", nd.Name, r.Installer, r.BuildID)
				}
				want := append([]string{FileNetworkConfig, FileBuild}, tc.files...)
				if got := slices.Sorted(maps.Keys(r.Files)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
					t.Errorf("%s: files %v, want %v", nd.Name, got, want)
				}
				kernel := kernelLine(t, r.Script)
				for _, arg := range append([]string{"initrd=initrd", "anneal.node=NODE", "anneal.build=BUILD",
					"anneal.url=" + testBase, "anneal.token=" + testToken}, tc.scriptArgs...) {
					if !strings.Contains(kernel, " "+sub(arg)) {
						t.Errorf("%s: kernel line lacks %q:\n%s", nd.Name, sub(arg), kernel)
					}
				}
				for file, wants := range tc.configHas {
					for _, w := range wants {
						if !strings.Contains(r.Files[file], sub(w)) {
							t.Errorf("%s: %s lacks %q:\n%s", nd.Name, file, sub(w), r.Files[file])
						}
					}
				}
				var build map[string]any
				if err := json.Unmarshal([]byte(r.Files[FileBuild]), &build); err != nil || build["id"] != r.BuildID || build["hostname"] != nd.Name {
					t.Errorf("%s: build.json id/hostname wrong (err %v):\n%s", nd.Name, err, r.Files[FileBuild])
				}
				if tc.kind == schema.InstallerAutoinstall || tc.kind == schema.InstallerCloudInit {
					var ud map[string]any
					if err := yaml.Unmarshal([]byte(r.Files[FileUserData]), &ud); err != nil {
						t.Errorf("%s: user-data is not YAML: %v", nd.Name, err)
					}
				}
			}
		})
	}
}

// kernelLine is the script's "kernel" command.
func kernelLine(t *testing.T, script string) string {
	t.Helper()
	if !strings.HasPrefix(script, "#!ipxe\n") {
		t.Fatalf("script does not start with #!ipxe:\n%s", script)
	}
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, "kernel ") {
			return l
		}
	}
	t.Fatalf("no kernel line:\n%s", script)
	return ""
}

// yget walks a YAML document decoded into maps.
func yget(t *testing.T, v any, path ...string) any {
	t.Helper()
	for i, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s is not a mapping", strings.Join(path[:i], "."))
		}
		if v, ok = m[p]; !ok {
			t.Fatalf("%s is missing", strings.Join(path[:i+1], "."))
		}
	}
	return v
}

func TestNetplan(t *testing.T) {
	site := loadSite(t)
	// Resolvers on the internal network: they go on the device carrying the
	// default route (public, on the bridge), not on the internal VLAN.
	site.Network("internal").Resolvers = []string{"10.10.2.53", "fd00:a:0:120::53"}
	r, err := Render(site, site.Node("e2n01"), testBase, testToken)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(r.Network), &doc); err != nil {
		t.Fatalf("netplan is not YAML: %v\n%s", err, r.Network)
	}
	if r.Files[FileNetworkConfig] != r.Network {
		t.Error("network-config differs from Rendered.Network")
	}
	s := func(path ...string) string { return fmt.Sprint(yget(t, doc, append([]string{"network"}, path...)...)) }
	tests := []struct {
		path []string
		want string
	}{
		{[]string{"version"}, "2"},
		{[]string{"ethernets", "eno1", "match", "macaddress"}, "b0:7b:25:10:01:01"},
		{[]string{"ethernets", "eno1", "set-name"}, "eno1"},
		{[]string{"ethernets", "eno1", "addresses"}, "[10.10.1.16/24 fd00:a:0:110::10/64]"},
		{[]string{"ethernets", "eno1", "mtu"}, "1500"},
		{[]string{"ethernets", "ens1f0", "match", "macaddress"}, "b0:7b:25:10:02:01"},
		{[]string{"ethernets", "ens1f0", "dhcp4"}, "false"},
		{[]string{"ethernets", "ens1f1", "dhcp4"}, "false"},
		{[]string{"ethernets", "ens1f1", "mtu"}, "9000"},
		{[]string{"bonds", "bond0", "interfaces"}, "[ens1f0 ens1f1]"},
		{[]string{"bonds", "bond0", "parameters", "mode"}, "802.3ad"},
		{[]string{"bonds", "bond0", "mtu"}, "9000"},
		{[]string{"vlans", "bond0.120", "id"}, "120"},
		{[]string{"vlans", "bond0.120", "link"}, "bond0"},
		{[]string{"vlans", "bond0.120", "mtu"}, "9000"},
		{[]string{"vlans", "bond0.120", "addresses"}, "[10.10.2.16/24 fd00:a:0:120::10/64]"},
		{[]string{"vlans", "bond0.140", "addresses"}, "[10.10.4.16/24 fd00:a:0:140::10/64]"},
		{[]string{"vlans", "bond0.130", "id"}, "130"},
		{[]string{"vlans", "bond0.130", "dhcp4"}, "false"},
		{[]string{"bridges", "br-public", "interfaces"}, "[bond0.130]"},
		{[]string{"bridges", "br-public", "parameters", "stp"}, "false"},
		{[]string{"bridges", "br-public", "addresses"}, "[203.0.113.16/24 2001:db8:130::10/64]"},
		{[]string{"bridges", "br-public", "routes"}, "[map[to:default via:203.0.113.1] map[to:default via:2001:db8:130::1]]"},
		{[]string{"bridges", "br-public", "nameservers", "addresses"}, "[10.10.2.53 fd00:a:0:120::53]"},
		{[]string{"bridges", "br-public", "nameservers", "search"}, "[example.net]"},
	}
	for _, tc := range tests {
		if got := s(tc.path...); got != tc.want {
			t.Errorf("%s = %s, want %s", strings.Join(tc.path, "."), got, tc.want)
		}
	}
	// One default route per family, DNS once, no DHCP anywhere else.
	if n := strings.Count(r.Network, "to: default"); n != 2 {
		t.Errorf("%d default routes, want 2:\n%s", n, r.Network)
	}
	if n := strings.Count(r.Network, "nameservers:"); n != 1 {
		t.Errorf("%d nameservers blocks, want 1", n)
	}
	if strings.Contains(r.Network, "dhcp4: true") {
		t.Error("netplan enables DHCP")
	}
}

func TestKickstartNetwork(t *testing.T) {
	tests := []struct {
		node    string
		kernel  []string // MAC-bound names on the kernel line
		network []string
	}{
		{
			node:   "e2n05", // rocky-9: kickstart, active-backup bond, two VLANs
			kernel: []string{"ifname=eno1:3c:ec:ef:14:01:05", "ifname=enp65s0f0:3c:ec:ef:14:02:05", "ifname=enp65s0f1:3c:ec:ef:14:03:05"},
			network: []string{
				"network --device=eno1 --bindto=mac --bootproto=static --ip=10.10.1.20 --netmask=255.255.255.0 --ipv6=fd00:a:0:110::14/64 --mtu=1500 --onboot=yes --activate",
				"network --device=bond0 --bondslaves=enp65s0f0,enp65s0f1 --bondopts=mode=active-backup,miimon=100 --bindto=mac --noipv4 --noipv6 --mtu=9000 --onboot=yes --activate",
				"network --device=bond0 --vlanid=120 --interfacename=bond0.120 --bootproto=static --ip=10.10.2.20 --netmask=255.255.255.0 --gateway=10.10.2.1 --ipv6=fd00:a:0:120::14/64 --ipv6gateway=fd00:a:0:120::1 --nameserver=10.10.2.53 --mtu=9000 --onboot=yes --activate",
				"network --device=bond0 --vlanid=140 --interfacename=bond0.140 --bootproto=static --ip=10.10.4.20 --netmask=255.255.255.0 --ipv6=fd00:a:0:140::14/64 --mtu=9000 --onboot=yes --activate",
				"network --hostname=e2n05",
			},
		},
		{
			node:   "e2n01", // 802.3ad bond, three VLANs, the public one bridged
			kernel: []string{"ifname=eno1:b0:7b:25:10:01:01", "ifname=ens1f0:b0:7b:25:10:02:01"},
			network: []string{
				"network --device=eno1 --bindto=mac --bootproto=static --ip=10.10.1.16 --netmask=255.255.255.0 --ipv6=fd00:a:0:110::10/64 --mtu=1500 --onboot=yes --activate",
				"network --device=bond0 --bondslaves=ens1f0,ens1f1 --bondopts=mode=802.3ad,miimon=100 --bindto=mac --noipv4 --noipv6 --mtu=9000 --onboot=yes --activate",
				"network --device=bond0 --vlanid=120 --interfacename=bond0.120 --bootproto=static --ip=10.10.2.16 --netmask=255.255.255.0 --ipv6=fd00:a:0:120::10/64 --mtu=9000 --onboot=yes --activate",
				"network --device=bond0 --vlanid=140 --interfacename=bond0.140 --bootproto=static --ip=10.10.4.16 --netmask=255.255.255.0 --ipv6=fd00:a:0:140::10/64 --mtu=9000 --onboot=yes --activate",
				"network --device=bond0 --vlanid=130 --interfacename=bond0.130 --noipv4 --noipv6 --onboot=yes --activate",
				"network --device=br-public --bridgeslaves=bond0.130 --bridgeopts=stp=no --bootproto=static --ip=203.0.113.16 --netmask=255.255.255.0 --gateway=203.0.113.1 --ipv6=2001:db8:130::10/64 --ipv6gateway=2001:db8:130::1 --nameserver=10.10.2.53 --onboot=yes --activate",
				"network --hostname=e2n01",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.node, func(t *testing.T) {
			site := loadSite(t)
			withInstaller(site, schema.InstallerKickstart)
			site.Network("internal").Resolvers = []string{"10.10.2.53"}
			r, err := Render(site, site.Node(tc.node), testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(r.Files[FileKickstart], "\n") {
				if strings.HasPrefix(l, "network ") {
					got = append(got, l)
				}
			}
			if !slices.Equal(got, tc.network) {
				t.Errorf("network lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.network, "\n"))
			}
			kernel := kernelLine(t, r.Script)
			for _, arg := range tc.kernel {
				if !strings.Contains(kernel, " "+arg) {
					t.Errorf("kernel line lacks %s (names bound to MACs)", arg)
				}
			}
		})
	}
}

func TestPreseedInterfacesBridge(t *testing.T) {
	site := loadSite(t)
	withInstaller(site, schema.InstallerPreseed)
	r, err := Render(site, site.Node("e2n01"), testBase, testToken)
	if err != nil {
		t.Fatal(err)
	}
	ifaces := r.Files[FileInterfaces]
	for _, want := range []string{
		"auto bond0\niface bond0 inet manual\n    bond-slaves ens1f0 ens1f1\n    bond-mode 802.3ad\n",
		"auto bond0.130\niface bond0.130 inet manual\n    vlan-raw-device bond0\n",
		"auto br-public\niface br-public inet static\n    address 203.0.113.16/24\n    gateway 203.0.113.1\n    bridge_ports bond0.130\n    bridge_stp off\n",
		"iface br-public inet6 static\n    address 2001:db8:130::10/64\n    gateway 2001:db8:130::1\n",
		"iface bond0.120 inet static\n    address 10.10.2.16/24\n    vlan-raw-device bond0\n    mtu 9000\n",
	} {
		if !strings.Contains(ifaces, want) {
			t.Errorf("interfaces lacks:\n%s\ngot:\n%s", want, ifaces)
		}
	}
	if strings.Contains(ifaces, "iface ens1f0") {
		t.Error("bond members must have no stanza of their own (bond-slaves brings them in)")
	}
	if !strings.Contains(r.Files[FilePreseed], "d-i pkgsel/include string ifenslave vlan bridge-utils ") {
		t.Error("preseed does not install ifenslave, vlan and bridge-utils")
	}
}

func TestRenderRefusesUnsafeValues(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*schema.Site)
		base   string
		token  string
	}{
		{"kernel argument with a setting expansion", func(s *schema.Site) { s.Image("ubuntu-22.04").KernelArgs = []string{"x=${net0/ip}"} }, testBase, testToken},
		{"kernel argument with a space", func(s *schema.Site) { s.Image("ubuntu-22.04").KernelArgs = []string{"a b"} }, testBase, testToken},
		{"kernel argument that is a comment", func(s *schema.Site) { s.Image("ubuntu-22.04").KernelArgs = []string{"#x"} }, testBase, testToken},
		{"kernel argument that separates commands", func(s *schema.Site) { s.Image("ubuntu-22.04").KernelArgs = []string{"||"} }, testBase, testToken},
		{"package version with a space", func(s *schema.Site) { s.PatchSet("2026-11").Packages["openssl"] = "1 2" }, testBase, testToken},
		{"package name with a quote", func(s *schema.Site) { s.PatchSet("2026-11").Packages["x'y"] = "1" }, testBase, testToken},
		{"kernel with a semicolon", func(s *schema.Site) { s.PatchSet("2026-11").Kernel = "5.15;reboot" }, testBase, testToken},
		{"unknown installer", func(s *schema.Site) { s.Image("ubuntu-22.04").Installer = "anaconda-classic" }, testBase, testToken},
		{"mirror with a quote", func(s *schema.Site) { s.Image("ubuntu-22.04").Mirror = "http://mirror.example.net/a'b" }, testBase, testToken},
		{"mirror with a space", func(s *schema.Site) { s.Image("ubuntu-22.04").Mirror = "http://mirror.example.net/a b" }, testBase, testToken},
		{"mirror with a line break", func(s *schema.Site) { s.Image("ubuntu-22.04").Mirror = "http://mirror.example.net/a\nd-i x" }, testBase, testToken},
		{"mirror with credentials", func(s *schema.Site) { s.Image("ubuntu-22.04").Mirror = "http://u:p@mirror.example.net/" }, testBase, testToken},
		{"mirror not http", func(s *schema.Site) { s.Image("ubuntu-22.04").Mirror = "ftp://mirror.example.net/debian" }, testBase, testToken},
		{"base URL with a quote", nil, "http://10.10.1.2:8080/a'b", testToken},
		{"base URL with a query", nil, "http://10.10.1.2:8080/?x=1", testToken},
		{"base URL not http", nil, "ftp://10.10.1.2/", testToken},
		{"token with a space", nil, testBase, "a b"},
		{"token with a semicolon", nil, testBase, "a;b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := loadSite(t)
			if tc.modify != nil {
				tc.modify(site)
			}
			if r, err := Render(site, site.Node("e1n01"), tc.base, tc.token); err == nil {
				t.Errorf("rendered, want an error:\n%s", r.Script)
			}
		})
	}
}

func TestIPXEText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"MAC 02:00:00:00:00:01 is not in site lab1", "MAC 02:00:00:00:00:01 is not in site lab1"},
		{"a ${x} b", "a _{x} b"},
		{"a || b ; c && d #e", "a _|| b _; c _&& d _#e"},
		{"line\nbreak", "line_break"},
	}
	for _, tc := range tests {
		if got := ipxeText(tc.in); got != tc.want {
			t.Errorf("ipxeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestNetplanGenerate feeds every node's network-config to the real
// netplan, which writes systemd-networkd units into a scratch root.
func TestNetplanGenerate(t *testing.T) {
	netplan := testenv.LookPath(t, "netplan", "netplan.io")
	site := loadSite(t)
	for _, node := range site.Nodes {
		t.Run(node.Name, func(t *testing.T) {
			r, err := Render(site, node, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			conf := filepath.Join(root, "etc", "netplan")
			if err := os.MkdirAll(conf, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(conf, "50-anneal.yaml"), []byte(r.Network), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), netplan, "generate", "--root-dir", root).CombinedOutput()
			if err != nil {
				t.Fatalf("netplan generate: %v\n%s\n%s", err, out, r.Network)
			}
			units := filepath.Join(root, "run", "systemd", "network")
			for _, i := range node.Interfaces {
				want := "PermanentMACAddress=" + strings.ToLower(i.MAC)
				if data, err := os.ReadFile(filepath.Join(units, "10-netplan-"+i.NIC+".link")); err != nil || !strings.Contains(string(data), want) {
					t.Errorf("%s.link lacks %s (err %v)", i.NIC, want, err)
				}
			}
			for _, b := range node.Bonds {
				want := "Mode=" + b.Mode
				if data, err := os.ReadFile(filepath.Join(units, "10-netplan-"+b.Name+".netdev")); err != nil || !strings.Contains(string(data), want) {
					t.Errorf("%s.netdev lacks %s (err %v)", b.Name, want, err)
				}
			}
			for _, v := range node.VLANs {
				want := fmt.Sprintf("Id=%d", v.ID)
				if data, err := os.ReadFile(filepath.Join(units, "10-netplan-"+v.Name+".netdev")); err != nil || !strings.Contains(string(data), want) {
					t.Errorf("%s.netdev lacks %s (err %v)", v.Name, want, err)
				}
			}
		})
	}
}

// TestIfupdownParses reads every node's interfaces file with the real
// ifupdown (ifquery), as the installed Debian system will.
func TestIfupdownParses(t *testing.T) {
	ifquery := testenv.LookPath(t, "ifquery", "ifupdown")
	site := loadSite(t)
	withInstaller(site, schema.InstallerPreseed)
	for _, nd := range site.Nodes {
		t.Run(nd.Name, func(t *testing.T) {
			r, err := Render(site, nd, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "interfaces")
			if err := os.WriteFile(path, []byte(r.Files[FileInterfaces]), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), ifquery, "-i", path, "--list", "--all").CombinedOutput()
			if err != nil {
				t.Fatalf("ifquery: %v\n%s", err, out)
			}
			listed := strings.Fields(string(out))
			for _, a := range node.BuildSpecOf(site, nd).Network.Addresses {
				if !slices.Contains(listed, a.Device) {
					t.Errorf("%s (network %s) is not brought up; ifquery lists %v", a.Device, a.Network, listed)
				}
			}
			for _, b := range nd.Bonds {
				out, err := exec.CommandContext(t.Context(), ifquery, "-i", path, b.Name).CombinedOutput()
				if want := "bond-mode: " + b.Mode; err != nil || !strings.Contains(string(out), want) {
					t.Errorf("ifquery %s: %v, lacks %q:\n%s", b.Name, err, want, out)
				}
			}
		})
	}
}
