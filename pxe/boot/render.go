package boot

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Names of the files served under /install/{node}/{token}/.
const (
	FileNetworkConfig = "network-config" // netplan v2, every installer kind
	FileBuild         = "build.json"     // the build spec and its id, every kind
	FileAgent         = "agent.json"     // url, node and agent token (served, never rendered: it needs the key)
	FileUserData      = "user-data"      // autoinstall, cloud-init
	FileMetaData      = "meta-data"      // autoinstall, cloud-init
	FileVendorData    = "vendor-data"    // autoinstall, cloud-init
	FileKickstart     = "ks.cfg"         // kickstart
	FilePreseed       = "preseed.cfg"    // preseed
	FileInterfaces    = "interfaces"     // preseed: /etc/network/interfaces for the installed system
	FileNetcfg        = "netcfg.sh"      // preseed: the preseed/run script that applies the static network
	// FileDeploy (deploy.json) is image's; it also serves FileInterfaces.
)

// Rendered is everything one node's netboot install is made of, rendered
// from the site alone (deterministic: the same site, node, base URL and
// token give the same bytes).
type Rendered struct {
	Node      string               `json:"node"`
	BuildID   string               `json:"buildId"`
	Installer schema.InstallerKind `json:"installer"`
	// Script is the iPXE script that installs the build.
	Script string `json:"script"`
	// Network is the build's network as a netplan v2 file; it is also
	// Files["network-config"].
	Network string `json:"network"`
	// Files are the install configuration files by name, as served under
	// BASEURL/install/NODE/TOKEN/NAME. agent.json is not among them: it
	// carries the agent token, which needs the key (the Server adds it).
	Files map[string]string `json:"files"`
}

// buildFile is build.json: the build spec with its id.
type buildFile struct {
	ID string `json:"id"`
	node.BuildSpec
}

// agentFile is agent.json, what `anneal agent` reads from
// /etc/anneal/agent.json.
type agentFile struct {
	URL   string `json:"url"`
	Node  string `json:"node"`
	Token string `json:"token"`
}

// install is what every installer renderer works from.
type install struct {
	site    *schema.Site
	node    *schema.Node
	spec    node.BuildSpec
	id      string
	base    string // base URL, no trailing slash
	token   string
	net     *topology
	netplan *netplanNetwork
	proxied bool // artifacts through the netboot server's verified copies
	// mirror is the image's package mirror, nil for the installer's
	// default. It is not in the build spec: another mirror is not another
	// build.
	mirror *url.URL
}

// ArtifactPath is where the netboot server serves the verified copy of an
// artifact: by its SHA-256, with a name for the client's logs.
func ArtifactPath(a schema.Artifact, name string) string {
	return "/artifacts/" + a.SHA256 + "/" + name
}

// artifactURL is where the script fetches an artifact.
func (in *install) artifactURL(a schema.Artifact, name string) string {
	if in.proxied {
		return in.base + ArtifactPath(a, name)
	}
	return a.URL
}

// configURL is where the installer fetches its files.
func (in *install) configURL() string {
	return in.base + "/install/" + in.node.Name + "/" + in.token + "/"
}

// agentURL is where the installer fetches the anneal binary.
func (in *install) agentURL() string { return in.base + "/agent/anneal" }

// Render renders node's install: the iPXE script, the installer's
// configuration files and the netplan network configuration. token is the
// install token that URLs and the install callback carry (anneal render may
// pass a placeholder). Every value written into a script or a shell command
// is checked first; a value that is not safe there is an error, never
// escaped into something else.
//
// The script fetches the kernel and initrd through the netboot server's
// verified copies (ArtifactPath); RenderDirect fetches them from the
// site's URLs.
func Render(site *schema.Site, node *schema.Node, baseURL, token string) (*Rendered, error) {
	return render(site, node, baseURL, token, true)
}

// RenderDirect is Render with a script that fetches the kernel and initrd
// straight from the URLs the site gives, unverified: for a netboot server
// that keeps no verified copies (Server.ArtifactDir unset).
func RenderDirect(site *schema.Site, node *schema.Node, baseURL, token string) (*Rendered, error) {
	return render(site, node, baseURL, token, false)
}

func render(site *schema.Site, node *schema.Node, baseURL, token string, proxied bool) (*Rendered, error) {
	if site == nil || node == nil {
		return nil, errors.New("render: no site or node")
	}
	in, err := newInstall(site, node, baseURL, token)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", node.Name, err)
	}
	in.proxied = proxied
	r := &Rendered{Node: node.Name, BuildID: in.id, Installer: schema.InstallerKind(in.spec.Image.Installer), Files: map[string]string{}}
	if r.Network, err = renderNetplan(in.net); err != nil {
		return nil, fmt.Errorf("render %s: network: %w", node.Name, err)
	}
	r.Files[FileNetworkConfig] = r.Network
	build, err := json.MarshalIndent(buildFile{ID: in.id, BuildSpec: in.spec}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render %s: build.json: %w", node.Name, err)
	}
	r.Files[FileBuild] = string(build) + "\n"

	var files map[string]string
	switch r.Installer {
	case schema.InstallerAutoinstall, schema.InstallerCloudInit:
		files, err = renderAutoinstall(in)
	case schema.InstallerKickstart:
		files, err = renderKickstart(in)
	case schema.InstallerPreseed:
		files, err = renderPreseed(in)
	case schema.InstallerImage:
		files, err = renderDeploy(in)
	default:
		err = fmt.Errorf("image %s: installer %q is not one of autoinstall, cloud-init, kickstart, preseed, image", in.spec.Image.Name, r.Installer)
	}
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", node.Name, err)
	}
	for name, content := range files {
		r.Files[name] = content
	}
	if r.Script, err = renderScript(in); err != nil {
		return nil, fmt.Errorf("render %s: iPXE script: %w", node.Name, err)
	}
	return r, nil
}

// newInstall compiles the node's build and checks every value the
// renderers write.
func newInstall(site *schema.Site, nd *schema.Node, baseURL, token string) (*install, error) {
	base, err := checkBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if !tokenChars.MatchString(token) {
		return nil, errors.New("install token holds characters other than base64url and '.'")
	}
	if !safeName(nd.Name) {
		return nil, fmt.Errorf("node name %q is not a plain host name", nd.Name)
	}
	img := site.Image(nd.Image)
	if img == nil {
		return nil, fmt.Errorf("image %q is not in the site", nd.Image)
	}
	in := &install{site: site, node: nd, spec: node.BuildSpecOf(site, nd), base: base, token: token}
	in.id = in.spec.ID()
	if !safeName(in.spec.Hostname) {
		return nil, fmt.Errorf("host name %q is not a plain host name", in.spec.Hostname)
	}
	if k := in.spec.PatchSet.Kernel; k != "" && !versionChars.MatchString(k) {
		return nil, fmt.Errorf("patch set %s: kernel %q holds characters a package version cannot", in.spec.PatchSet.Name, k)
	}
	for name, v := range in.spec.PatchSet.Packages {
		if !packageChars.MatchString(name) || !versionChars.MatchString(v) {
			return nil, fmt.Errorf("patch set %s: package %q version %q holds characters a package name or version cannot", in.spec.PatchSet.Name, name, v)
		}
	}
	if in.net, err = topologyOf(in.spec.Network); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	in.netplan = netplanOf(in.net)
	if img.Mirror != "" {
		if in.mirror, err = checkMirror(img.Mirror); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
	}
	return in, nil
}

// mirrorChars are urlChars and '$' (dnf's $basearch in a repository URL):
// a mirror is written into preseed, kickstart and YAML, never a shell.
var mirrorChars = regexp.MustCompile(`^[A-Za-z0-9._~:/@%+=,\[\]$-]+$`)

// checkMirror checks an image's mirror as the schema does (an http(s) URL
// of a host, optional port and path, nothing else): the renderers write it
// as is.
func checkMirror(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("mirror %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("mirror %q: want http(s)://host[:port][/path]", s)
	}
	if !mirrorChars.MatchString(s) {
		return nil, fmt.Errorf("mirror %q holds characters an installer's configuration cannot", s)
	}
	return u, nil
}

// filesFor lists the files an installer kind serves (agent.json included).
func filesFor(kind schema.InstallerKind) []string {
	common := []string{FileNetworkConfig, FileBuild, FileAgent}
	switch kind {
	case schema.InstallerAutoinstall, schema.InstallerCloudInit:
		return append(common, FileUserData, FileMetaData, FileVendorData)
	case schema.InstallerKickstart:
		return append(common, FileKickstart)
	case schema.InstallerPreseed:
		return append(common, FilePreseed, FileInterfaces, FileNetcfg)
	case schema.InstallerImage:
		return append(common, FileDeploy, FileInterfaces)
	}
	return nil
}

// renderAgent renders agent.json.
func renderAgent(baseURL, node, agentToken string) (string, error) {
	data, err := json.MarshalIndent(agentFile{URL: strings.TrimRight(baseURL, "/"), Node: node, Token: agentToken}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("agent.json: %w", err)
	}
	return string(data) + "\n", nil
}

// packages lists the patch set's pins as name+sep+version, sorted by name.
func (in *install) packages(sep string) []string {
	names := make([]string, 0, len(in.spec.PatchSet.Packages))
	for name := range in.spec.PatchSet.Packages {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]string, len(names))
	for i, name := range names {
		out[i] = name + sep + in.spec.PatchSet.Packages[name]
	}
	return out
}

// installDisk is the disk to install on: the first disk of the node's
// hardware profile, or "" to leave the choice to the installer.
func (in *install) installDisk() string {
	if hp := in.site.HardwareProfile(in.node.HardwareProfile); hp != nil && len(hp.Disks) > 0 && safeName(hp.Disks[0].Name) {
		return hp.Disks[0].Name
	}
	return ""
}

var (
	// nameChars: interface, host, domain and disk names and bond modes.
	nameChars    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	packageChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]*$`)
	versionChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+:~_-]*$`)
	tokenChars   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	// urlChars excludes whitespace, quotes, '$', ';', '#', '?', '&',
	// backslash and backquote: a base URL is written into iPXE, YAML and
	// shell.
	urlChars = regexp.MustCompile(`^[A-Za-z0-9._~:/@%+=,\[\]-]+$`)
)

func safeName(s string) bool { return len(s) <= 253 && nameChars.MatchString(s) }

// checkBaseURL checks the URL nodes reach the server by and returns it
// without a trailing slash.
func checkBaseURL(s string) (string, error) {
	s = strings.TrimRight(s, "/")
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("base URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("base URL %q: want http(s)://host[:port][/path]", s)
	}
	if !urlChars.MatchString(s) {
		return "", fmt.Errorf("base URL %q holds characters that are not safe in scripts", s)
	}
	return s, nil
}

// shq single-quotes s for a POSIX shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// addrString is an address's text, or "" for the zero address.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// provisioningAddress is the node's address on the provisioning network, or
// its first addressed network when none is marked provisioning.
func (in *install) provisioningAddress() *node.AddressSpec {
	var first *node.AddressSpec
	for i, a := range in.spec.Network.Addresses {
		if a.IPv4 == "" && a.IPv6 == "" {
			continue
		}
		if n := in.site.Network(a.Network); n != nil && n.Provisioning {
			return &in.spec.Network.Addresses[i]
		}
		if first == nil {
			first = &in.spec.Network.Addresses[i]
		}
	}
	return first
}

// provisioningDevice is the device the installer's network comes up on.
func (in *install) provisioningDevice() *device {
	if a := in.provisioningAddress(); a != nil {
		return in.net.byName[a.Device]
	}
	return nil
}

// provisioningGateway is the provisioning network's IPv4 gateway, which the
// installer uses whether or not the build's default route goes there.
func (in *install) provisioningGateway() string {
	a := in.provisioningAddress()
	if a == nil {
		return ""
	}
	if n := in.site.Network(a.Network); n != nil && n.IPv4 != nil {
		return addrString(n.IPv4.GW)
	}
	return ""
}
