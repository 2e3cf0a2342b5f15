package boot

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/anneal-dev/anneal/schema"
)

// iPXE script syntax (ipxe.org/scripting, src/core/exec.c): a line is split
// on whitespace only, with no quoting and no escapes; a token that is
// exactly "||", "&&" or ";" ends a command and a token starting with '#'
// starts a comment; "${name}" anywhere expands a setting. So a kernel
// argument such as ds=nocloud-net;s=URL is passed through as it is (the ';'
// is inside a token) and must not be escaped: a backslash would reach the
// kernel command line. Every token is checked with ipxeToken instead.

// Image names given to iPXE's kernel and initrd commands; the kernel's EFI
// stub finds the initrd by the initrd= argument.
const (
	ipxeKernelName = "vmlinuz"
	ipxeInitrdName = "initrd"
)

// renderScript is the iPXE script that installs the build: kernel and
// initrd (the netboot server's verified copies, or the image's URLs), the image's kernel arguments, the
// anneal.* arguments and the installer's own argument to find its
// configuration. On any failure it exits, so the firmware goes on to the
// local disk.
func renderScript(in *install) (string, error) {
	img := in.site.Image(in.node.Image)
	args := []string{"initrd=" + ipxeInitrdName}
	args = append(args, img.KernelArgs...)
	args = append(args,
		"anneal.node="+in.node.Name,
		"anneal.build="+in.id,
		"anneal.url="+in.base,
		"anneal.token="+in.token)
	cfg := in.configURL()
	switch img.Installer {
	case schema.InstallerAutoinstall, schema.InstallerCloudInit:
		args = append(args, "autoinstall", "ds=nocloud-net;s="+cfg)
	case schema.InstallerKickstart:
		args = append(args, "inst.ks="+cfg+FileKickstart)
		// dracut names each NIC after its MAC, so the kickstart's device
		// names are the site's (anaconda keeps them in the installed system).
		for _, d := range in.net.ofKind(devEther) {
			args = append(args, "ifname="+d.name+":"+d.mac)
		}
	case schema.InstallerPreseed:
		args = append(args, "auto=true", "priority=critical", "hostname="+in.spec.Hostname)
		if d := in.provisioningDevice(); d != nil && d.kind == devEther {
			args = append(args, "interface="+d.name)
		}
		// d-i configures the network by DHCP before it has the preseed: on
		// a provisioning network without a gateway it would ask whether
		// to go on without a default route.
		if in.provisioningGateway() == "" {
			args = append(args, "netcfg/no_default_route=true")
		}
		// Likewise it asks for name servers when the lease names none
		// (the site's networks declare no resolvers).
		if len(in.net.resolvers) == 0 {
			args = append(args, "netcfg/get_nameservers=")
		}
		args = append(args, "url="+cfg+FilePreseed)
	case schema.InstallerImage:
		da, err := deployArgs(in)
		if err != nil {
			return "", err
		}
		args = append(args, da...)
	}
	kernelURL, initrdURL := in.artifactURL(img.Kernel, ipxeKernelName), in.artifactURL(img.Initrd, ipxeInitrdName)
	for _, tok := range append([]string{kernelURL, initrdURL}, args...) {
		if err := ipxeToken(tok); err != nil {
			return "", fmt.Errorf("image %s: %w", img.Name, err)
		}
	}

	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# anneal: install %s build %s (image %s %s, %s)\n", in.node.Name, in.id, oneLine(img.Name), oneLine(img.Version), img.Installer)
	fmt.Fprintf(&b, "echo anneal: installing %s build %s\n", in.node.Name, in.id)
	if in.proxied {
		b.WriteString("# kernel and initrd: anneal's copies, verified against the image's SHA-256\n")
	} else {
		b.WriteString("# kernel and initrd: from the image's URLs, not verified by anneal\n")
	}
	if img.Installer == schema.InstallerImage {
		// The MAC of the NIC iPXE booted from (the one expansion anneal
		// writes itself): the deploy environment configures it.
		args = append(args, "anneal.bootif=${netX/mac}")
	}
	b.WriteString("imgfree\n")
	fmt.Fprintf(&b, "kernel --name %s %s %s || goto failed\n", ipxeKernelName, kernelURL, strings.Join(args, " "))
	fmt.Fprintf(&b, "initrd --name %s %s || goto failed\n", ipxeInitrdName, initrdURL)
	if img.Installer == schema.InstallerImage {
		b.WriteString("# anneal's deploy environment: /init is the anneal binary\n")
		fmt.Fprintf(&b, "initrd --name %s %s%s || goto failed\n", ipxeDeployInitrdName, in.base, DeployInitrdPath)
	}
	b.WriteString("boot || goto failed\n")
	b.WriteString(":failed\n")
	fmt.Fprintf(&b, "echo anneal: netboot of %s failed, booting from the local disk\n", in.node.Name)
	b.WriteString("exit 1\n")
	return b.String(), nil
}

// exitScript is a script that prints why and exits, so the firmware boots
// the next device (the local disk).
func exitScript(lines ...string) string {
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	for _, l := range lines {
		b.WriteString("echo anneal: " + ipxeText(l) + "\n")
	}
	b.WriteString("exit\n")
	return b.String()
}

// ipxeToken checks that s reaches the kernel as one argument, unchanged.
func ipxeToken(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty kernel argument or URL")
	case s == "||" || s == "&&" || s == ";" || strings.HasPrefix(s, "#"):
		return fmt.Errorf("kernel argument or URL %q would be read by iPXE as a command separator or comment", s)
	case strings.Contains(s, "${"):
		return fmt.Errorf("kernel argument or URL %q would be expanded by iPXE (${...})", s)
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r > unicode.MaxASCII }) >= 0:
		return fmt.Errorf("kernel argument or URL %q holds whitespace or non-printable characters", s)
	}
	return nil
}

// ipxeText makes a message safe for an echo line: printable ASCII without
// '$' (setting expansion) and with no token that separates commands.
func ipxeText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '$' || r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return '_'
		}
		return r
	}, s)
	fields := strings.Fields(s)
	for i, f := range fields {
		if f == "||" || f == "&&" || f == ";" || strings.HasPrefix(f, "#") {
			fields[i] = "_" + f
		}
	}
	return strings.Join(fields, " ")
}
