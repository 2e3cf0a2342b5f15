package boot

import (
	"fmt"
	"slices"
	"strings"
)

// Kickstart for anaconda (pykickstart; "network" reference:
// pykickstart.readthedocs.io/en/latest/kickstart-docs.html#network).
// Device names are the site's, bound to MACs twice: the iPXE script passes
// dracut an ifname=NAME:MAC argument per interface (the installer's names),
// and --bindto=mac ties each ethernet's, bond's and bridge's connection in
// the installed system to its (or its members') MAC. VLANs cannot take
// --bindto; their parent carries it.

// renderKickstart renders ks.cfg.
func renderKickstart(in *install) (map[string]string, error) {
	netLines, err := kickstartNetwork(in.net, in.spec.Hostname)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString(header(in, "kickstart"))
	b.WriteString("text\nlang en_US.UTF-8\nkeyboard us\ntimezone Etc/UTC --utc\nrootpw --lock\nfirstboot --disable\n")
	for _, l := range netLines {
		b.WriteString(l + "\n")
	}
	if in.mirror != nil {
		// The installation source: the image's BaseOS repository.
		b.WriteString("url --url=" + in.mirror.String() + "\n")
	}
	if disk := in.installDisk(); disk != "" {
		fmt.Fprintf(&b, "ignoredisk --only-use=%s\n", disk)
		fmt.Fprintf(&b, "zerombr\nclearpart --all --initlabel --drives=%s\n", disk)
	} else {
		b.WriteString("zerombr\nclearpart --all --initlabel\n")
	}
	b.WriteString("autopart --type=lvm\nreboot\n\n")

	b.WriteString("%packages\n@core\ncurl\n")
	if k := in.spec.PatchSet.Kernel; k != "" {
		b.WriteString("kernel-" + k + "\n")
	}
	for _, p := range in.packages("-") {
		b.WriteString(p + "\n")
	}
	b.WriteString("%end\n\n")

	// %post runs chrooted in the installed system, with the installer's
	// network up; the callback waits for the first boot (firstboot.go).
	b.WriteString("%post --erroronfail\nset -e\n")
	for _, c := range in.firstBoot(kickstartShell) {
		b.WriteString(c + "\n")
	}
	b.WriteString("%end\n")
	return map[string]string{FileKickstart: b.String()}, nil
}

// kickstartNetwork is one "network" line per configured device: addressed
// ethernets and VLAN parents, bonds (--bondslaves, --bondopts), VLANs
// (--device=LINK --vlanid --interfacename), bridges (--bridgeslaves,
// --bridgeopts), then the host name. Bond and bridge members have no line
// of their own: their master names them.
func kickstartNetwork(t *topology, hostname string) ([]string, error) {
	var lines []string
	for _, d := range t.devices {
		if d.kind == devEther && (d.master != "" || d.unused()) {
			continue
		}
		opts := []string{"network"}
		switch d.kind {
		case devEther:
			opts = append(opts, "--device="+d.name, "--bindto=mac")
		case devBond:
			opts = append(opts, "--device="+d.name, "--bondslaves="+strings.Join(d.members, ","),
				fmt.Sprintf("--bondopts=mode=%s,miimon=%d", d.mode, bondMIIMonitor), "--bindto=mac")
		case devVLAN:
			opts = append(opts, "--device="+d.link, fmt.Sprintf("--vlanid=%d", d.vlanID), "--interfacename="+d.name)
		case devBridge:
			stp := "no"
			if d.stp {
				stp = "yes"
			}
			opts = append(opts, "--device="+d.name, "--bridgeslaves="+strings.Join(d.members, ","), "--bridgeopts=stp="+stp)
			if !slices.ContainsFunc(d.members, func(m string) bool { return t.byName[m].kind != devEther }) {
				opts = append(opts, "--bindto=mac")
			}
		}
		addr, err := kickstartAddresses(t, d)
		if err != nil {
			return nil, err
		}
		opts = append(opts, addr...)
		if d.mtu != 0 {
			opts = append(opts, fmt.Sprintf("--mtu=%d", d.mtu))
		}
		opts = append(opts, "--onboot=yes", "--activate")
		lines = append(lines, strings.Join(opts, " "))
	}
	return append(lines, "network --hostname="+hostname), nil
}

// kickstartAddresses are a device's address options; kickstart holds one
// address per family and device.
func kickstartAddresses(t *topology, d *device) ([]string, error) {
	if len(d.v4) > 1 || len(d.v6) > 1 {
		return nil, fmt.Errorf("kickstart: device %s carries more than one address of a family, which a network line cannot say", d.name)
	}
	var opts []string
	if len(d.v4) == 1 {
		p := d.v4[0]
		opts = append(opts, "--bootproto=static", "--ip="+p.Addr().String(), "--netmask="+netmask(p))
		if d.gw4.IsValid() {
			opts = append(opts, "--gateway="+d.gw4.String())
		}
	} else {
		opts = append(opts, "--noipv4")
	}
	if len(d.v6) == 1 {
		opts = append(opts, "--ipv6="+d.v6[0].String())
		if d.gw6.IsValid() {
			opts = append(opts, "--ipv6gateway="+d.gw6.String())
		}
	} else if len(d.v4) == 0 {
		opts = append(opts, "--noipv6")
	}
	if d.nameserver && len(t.resolvers) > 0 {
		ns := make([]string, len(t.resolvers))
		for i, r := range t.resolvers {
			ns[i] = r.String()
		}
		opts = append(opts, "--nameserver="+strings.Join(ns, ","))
	}
	return opts, nil
}
