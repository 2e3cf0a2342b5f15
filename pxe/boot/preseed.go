package boot

import (
	"errors"
	"fmt"
	"strings"
)

// Debian installer preseeding (debian.org/releases/stable/amd64/apbs04).
// The installer configures only the provisioning interface (netcfg); the
// installed system's whole network is an ifupdown interfaces(5) file,
// served as BASEURL/install/NODE/TOKEN/interfaces and written into
// /target/etc/network/interfaces by the late command.
//
// d-i brings the network up with DHCP to fetch the preseed (preseed/url),
// so the netcfg answers in it come too late to matter: left alone, the
// installer keeps its DHCP lease. The installation guide's workaround
// (appendix B.4.2, "preseeding the network configuration is normally not
// possible when using network preseeding") is a preseed/run script of
// "kill-all-dhcp; netcfg", which runs netcfg again, now with the static
// answers: netcfg.sh, served beside preseed.cfg (preseed/run resolves a
// relative name against the preseed's own URL).

// renderPreseed renders preseed.cfg and the interfaces file.
func renderPreseed(in *install) (map[string]string, error) {
	prov := in.provisioningDevice()
	if prov == nil || len(prov.v4) == 0 {
		return nil, errors.New("preseed: no IPv4 address on the provisioning network (or any device) for the installer's network")
	}
	p := prov.v4[0]
	var b strings.Builder
	b.WriteString(header(in, "preseed"))
	d := func(format string, a ...any) { fmt.Fprintf(&b, "d-i "+format+"\n", a...) }
	d("debian-installer/locale string en_US.UTF-8")
	d("keyboard-configuration/xkb-keymap select us")

	// The installer's own network: the provisioning address, static.
	d("preseed/run string %s", FileNetcfg)
	d("netcfg/choose_interface select %s", prov.name)
	d("netcfg/disable_autoconfig boolean true")
	d("netcfg/get_ipaddress string %s", p.Addr())
	d("netcfg/get_netmask string %s", netmask(p))
	if gw := in.provisioningGateway(); gw != "" {
		d("netcfg/get_gateway string %s", gw)
	} else {
		// Both, as the installation guide's example gives them: an empty
		// gateway, and no default route without asking.
		d("netcfg/get_gateway string ")
		d("netcfg/no_default_route boolean true")
	}
	// Answered even when empty: an unanswered question stops the install.
	ns := make([]string, len(in.net.resolvers))
	for i, r := range in.net.resolvers {
		ns[i] = r.String()
	}
	d("netcfg/get_nameservers string %s", strings.Join(ns, " "))
	d("netcfg/confirm_static boolean true")
	d("netcfg/get_hostname string %s", in.spec.Hostname)
	d("netcfg/hostname string %s", in.spec.Hostname)
	domain := ""
	if len(in.net.search) > 0 {
		domain = in.net.search[0]
	}
	d("netcfg/get_domain string %s", domain)

	// The archive mirror (choose-mirror): the image's, or d-i's default.
	if m := in.mirror; m != nil {
		dir := m.EscapedPath()
		if dir == "" {
			dir = "/"
		}
		d("mirror/country string manual")
		d("mirror/protocol string %s", m.Scheme)
		d("mirror/%s/hostname string %s", m.Scheme, m.Host)
		d("mirror/%s/directory string %s", m.Scheme, dir)
		d("mirror/%s/proxy string", m.Scheme)
	} else {
		b.WriteString("# mirror: the image names none, so d-i picks its default (the public Debian mirrors)\n")
	}

	d("passwd/root-login boolean true")
	d("passwd/root-password-crypted password !")
	d("passwd/make-user boolean false")
	d("clock-setup/utc boolean true")
	d("time/zone string Etc/UTC")

	if disk := in.installDisk(); disk != "" {
		d("partman-auto/disk string /dev/%s", disk)
	}
	d("partman-auto/method string lvm")
	d("partman-auto-lvm/guided_size string max")
	d("partman-auto/choose_recipe select atomic")
	d("partman-lvm/device_remove_lvm boolean true")
	d("partman-md/device_remove_md boolean true")
	d("partman-lvm/confirm boolean true")
	d("partman-lvm/confirm_nooverwrite boolean true")
	d("partman-partitioning/confirm_write_new_label boolean true")
	d("partman/choose_partition select finish")
	d("partman/confirm boolean true")
	d("partman/confirm_nooverwrite boolean true")

	if k := in.spec.PatchSet.Kernel; k != "" {
		d("base-installer/kernel/image string linux-image-%s", k)
	}
	b.WriteString("tasksel tasksel/first multiselect standard, ssh-server\n")
	d("pkgsel/include string %s", strings.Join(append(ifupdownPackages(in.net), in.packages("=")...), " "))
	d("pkgsel/upgrade select none") // keep the patch set's pins
	d("grub-installer/only_debian boolean true")
	d("grub-installer/bootdev string default")
	d("finish-install/reboot_in_progress note")

	late := []string{"wget -q -O /target/etc/network/interfaces " + shq(in.configURL()+FileInterfaces)}
	// The callback runs on the installed system's first boot
	// (firstboot.go); in-target only enables its units.
	late = append(late, in.firstBoot(preseedShell)...)
	d("preseed/late_command string %s", strings.Join(late, " && "))

	return map[string]string{FilePreseed: b.String(), FileInterfaces: renderInterfaces(in.net), FileNetcfg: netcfgScript}, nil
}

// netcfgScript is the preseed/run script: stop the DHCP client that
// fetched the preseed and configure the network again from its answers
// (static: netcfg/disable_autoconfig).
const netcfgScript = "#!/bin/sh\n# anneal: apply the preseed's static network (d-i installation guide, B.4.2)\nkill-all-dhcp; netcfg\n"

// ifupdownPackages are the packages ifupdown needs for the build's devices.
func ifupdownPackages(t *topology) []string {
	var pkgs []string
	if len(t.ofKind(devBond)) > 0 {
		pkgs = append(pkgs, "ifenslave")
	}
	if len(t.ofKind(devVLAN)) > 0 {
		pkgs = append(pkgs, "vlan")
	}
	if len(t.ofKind(devBridge)) > 0 {
		pkgs = append(pkgs, "bridge-utils")
	}
	return pkgs
}

// renderInterfaces writes the build's network in interfaces(5) format
// (ifupdown, with ifenslave's bond-*, vlan's vlan-raw-device and
// bridge-utils' bridge_* options). Ethernet members of a bond or bridge have
// no stanza of their own (bridge-utils-interfaces(5)); a VLAN or bond that
// is a bridge port keeps its stanza, which creates it.
func renderInterfaces(t *topology) string {
	var b strings.Builder
	b.WriteString("# anneal: the build's network (ifupdown)\n")
	b.WriteString("auto lo\niface lo inet loopback\n")
	for _, d := range t.devices {
		if d.unused() || (d.kind == devEther && d.master != "") {
			continue // bond-slaves and bridge_ports bring their ethernets in
		}
		opts := []string{}
		switch d.kind {
		case devEther:
			b.WriteString("\n# " + d.mac + "\n")
		case devBond:
			b.WriteString("\n")
			opts = append(opts, "bond-slaves "+strings.Join(d.members, " "), "bond-mode "+d.mode, fmt.Sprintf("bond-miimon %d", bondMIIMonitor))
		case devVLAN:
			b.WriteString("\n")
			opts = append(opts, "vlan-raw-device "+d.link)
		case devBridge:
			b.WriteString("\n")
			stp := "off"
			if d.stp {
				stp = "on"
			}
			opts = append(opts, "bridge_ports "+strings.Join(d.members, " "), "bridge_stp "+stp)
		}
		if d.mtu != 0 {
			opts = append(opts, fmt.Sprintf("mtu %d", d.mtu))
		}
		b.WriteString("auto " + d.name + "\n")
		dns := dnsOptions(t, d)
		// The first stanza carries the device options: inet, static when
		// the device has an IPv4 address, else manual.
		if len(d.v4) == 0 {
			stanza(&b, d.name, "inet", "manual", opts)
		} else {
			for i, p := range d.v4 {
				o := []string{"address " + p.String()}
				if i == 0 {
					if d.gw4.IsValid() {
						o = append(o, "gateway "+d.gw4.String())
					}
					o = append(append(o, opts...), dns...)
					dns = nil
				}
				stanza(&b, d.name, "inet", "static", o)
			}
		}
		for i, p := range d.v6 {
			o := []string{"address " + p.String()}
			if i == 0 && d.gw6.IsValid() {
				o = append(o, "gateway "+d.gw6.String())
			}
			if i == 0 {
				o = append(o, dns...)
			}
			stanza(&b, d.name, "inet6", "static", o)
		}
	}
	return b.String()
}

// dnsOptions are resolvconf's options for the device carrying DNS.
func dnsOptions(t *topology, d *device) []string {
	if !d.nameserver {
		return nil
	}
	var o []string
	if len(t.resolvers) > 0 {
		ns := make([]string, len(t.resolvers))
		for i, r := range t.resolvers {
			ns[i] = r.String()
		}
		o = append(o, "dns-nameservers "+strings.Join(ns, " "))
	}
	if len(t.search) > 0 {
		o = append(o, "dns-search "+strings.Join(t.search, " "))
	}
	return o
}

func stanza(b *strings.Builder, name, family, method string, opts []string) {
	fmt.Fprintf(b, "iface %s %s %s\n", name, family, method)
	for _, o := range opts {
		b.WriteString("    " + o + "\n")
	}
}
