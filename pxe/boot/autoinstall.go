package boot

import (
	"fmt"
	"strings"
)

// Ubuntu autoinstall (canonical-subiquity.readthedocs-hosted.com, reference
// "Autoinstall configuration"), delivered by cloud-init's NoCloud data
// source: BASEURL/install/NODE/TOKEN/{user-data,meta-data,vendor-data}.

type cloudConfig struct {
	Autoinstall *autoinstall `yaml:"autoinstall"`
}

type autoinstall struct {
	Version  int             `yaml:"version"`
	Identity aiIdentity      `yaml:"identity"`
	SSH      aiSSH           `yaml:"ssh"`
	Storage  *aiStorage      `yaml:"storage,omitempty"`
	Network  *netplanNetwork `yaml:"network"`
	Apt      *aiApt          `yaml:"apt,omitempty"`
	Kernel   *aiKernel       `yaml:"kernel,omitempty"`
	Packages []quoted        `yaml:"packages,omitempty"`
	// LateCommands run in the installer (sh -c) after the install, with
	// the installed system mounted at /target.
	LateCommands []string `yaml:"late-commands"`
}

type aiIdentity struct {
	Hostname string `yaml:"hostname"`
	Username string `yaml:"username"`
	// Password is a crypt(3) hash; "!" locks the account (access is by
	// whatever the site's tooling installs after the build).
	Password string `yaml:"password"`
}

type aiSSH struct {
	InstallServer bool `yaml:"install-server"`
	AllowPW       bool `yaml:"allow-pw"`
}

type aiStorage struct {
	Layout aiLayout `yaml:"layout"`
}

type aiLayout struct {
	Name  string            `yaml:"name"`
	Match map[string]string `yaml:"match,omitempty"`
}

// aiApt is the installer's and the installed system's archive (curtin's
// apt "primary" list; "default" is every architecture not named).
type aiApt struct {
	Primary []aiArchive `yaml:"primary"`
}

type aiArchive struct {
	Arches []string `yaml:"arches,flow"`
	URI    string   `yaml:"uri"`
}

type aiKernel struct {
	Package string `yaml:"package"`
}

type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

// renderAutoinstall renders user-data (the autoinstall), meta-data and an
// empty vendor-data.
func renderAutoinstall(in *install) (map[string]string, error) {
	ai := &autoinstall{
		Version:  1,
		Identity: aiIdentity{Hostname: in.spec.Hostname, Username: "anneal", Password: "!"},
		SSH:      aiSSH{InstallServer: true},
		Network:  in.netplan,
		// The callback runs on the installed system's first boot
		// (firstboot.go), not here in the installer.
		LateCommands: in.firstBoot(autoinstallShell),
	}
	if in.mirror != nil {
		ai.Apt = &aiApt{Primary: []aiArchive{{Arches: []string{"default"}, URI: in.mirror.String()}}}
	}
	if disk := in.installDisk(); disk != "" {
		ai.Storage = &aiStorage{Layout: aiLayout{Name: "lvm", Match: map[string]string{"path": "/dev/" + disk}}}
	}
	if k := in.spec.PatchSet.Kernel; k != "" {
		ai.Kernel = &aiKernel{Package: "linux-image-" + k}
	}
	for _, p := range in.packages("=") {
		ai.Packages = append(ai.Packages, quoted(p))
	}
	user, err := marshalYAML(cloudConfig{Autoinstall: ai})
	if err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	meta, err := marshalYAML(metaData{InstanceID: in.node.Name + "-" + in.id, LocalHostname: in.spec.Hostname})
	if err != nil {
		return nil, fmt.Errorf("meta-data: %w", err)
	}
	return map[string]string{
		FileUserData:   "#cloud-config\n" + header(in, "autoinstall") + user,
		FileMetaData:   meta,
		FileVendorData: "#cloud-config\n{}\n",
	}, nil
}

// header is a comment naming what a file installs.
func header(in *install, what string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# anneal: %s for %s, build %s\n", what, in.node.Name, in.id)
	fmt.Fprintf(&b, "# image %s %s, patch set %s\n", oneLine(in.spec.Image.Name), oneLine(in.spec.Image.Version), oneLine(in.spec.PatchSet.Name))
	return b.String()
}

// oneLine keeps a name from breaking out of a comment line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
