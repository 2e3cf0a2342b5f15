package schema_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/anneal-dev/anneal/schema"
)

const (
	exampleSite = "../examples/site-repo"
	brokenSites = "../examples/broken-sites"
)

// brokenSite is one folder of examples/broken-sites: a copy of the example
// site with one defect, and the diagnostic that must report it.
type brokenSite struct {
	dir    string
	code   string
	file   string // relative to the site root; "" for site-wide findings
	line   int    // 0: the finding has no position
	column int    // 0: not checked
	object string // "" for findings that are about no document
	path   string
	msg    string // a substring of the message
	// secret is a value the site leaks on purpose: it must appear in no
	// diagnostic and not in the error.
	secret string
}

var brokenTable = []brokenSite{
	// Names, references and topology.
	{dir: "duplicate-node-name", code: "duplicate-name", file: "nodes/east-e2.yaml", line: 4, column: 7, object: "Node/e1n01", path: "name", msg: `Node "e1n01" is declared twice; the other is Node/e1n01 (nodes/east-e1.yaml:2)`},
	{dir: "duplicate-region", code: "duplicate-region", file: "site.yaml", line: 14, column: 11, object: "Site/lab1", path: "regions[2].name", msg: `region "east" is declared twice`},
	{dir: "duplicate-rack", code: "duplicate-rack", file: "site.yaml", line: 14, column: 15, object: "Site/lab1", path: "regions[1].racks[1].name", msg: `rack "e2" is declared twice (also in region "east")`},
	{dir: "duplicate-site", code: "duplicate-site", file: "site2.yaml", line: 1, column: 1, object: "Site/lab2", msg: "a second Site document; the first is Site/lab1 (site.yaml:2)"},
	{dir: "duplicate-dns", code: "duplicate-dns", file: "dns2.yaml", line: 1, column: 1, object: "DNS/extra", msg: "a second DNS document; the first is DNS/dns (dns.yaml:3)"},
	{dir: "missing-site", code: "missing-site", msg: "no Site document"},
	{dir: "unknown-region", code: "unknown-region", file: "nodes/west-w1.yaml", line: 94, column: 9, object: "Node/w1n04", path: "region", msg: `region "north" is not declared`},
	{dir: "unknown-rack", code: "unknown-rack", file: "nodes/east-e1.yaml", line: 37, column: 7, object: "Node/e1n02", path: "rack", msg: `rack "e9" is not declared`},
	{dir: "rack-in-wrong-region", code: "rack-region", file: "nodes/east-e1.yaml", line: 37, column: 7, object: "Node/e1n02", path: "rack", msg: `rack "w1" is in region "west", not "east"`},
	{dir: "unknown-hardware-profile", code: "unknown-hardware-profile", file: "nodes/west-w1.yaml", line: 66, column: 18, object: "Node/w1n03", path: "hardwareProfile", msg: `hardware profile "dell-r640" is not declared; did you mean "dell-r650"?`},
	{dir: "unknown-nic", code: "unknown-nic", file: "nodes/east-e1.yaml", line: 17, column: 11, object: "Node/e1n01", path: "interfaces[3].nic", msg: `hardware profile "dell-r650" has no NIC "eno3"`},
	{dir: "unknown-network", code: "unknown-network", file: "nodes/east-e1.yaml", line: 89, column: 15, object: "Node/e1n03", path: "networks[2].network", msg: `network "storag" is not declared; did you mean "storage"?`},
	{dir: "unknown-image", code: "unknown-image", file: "nodes/east-e2.yaml", line: 159, column: 8, object: "Node/e2n05", path: "image", msg: `image "rocky-8" is not declared; did you mean "rocky-9"?`},
	{dir: "image-without-disk", code: "missing-disk-image", file: "images/ubuntu-22.04.yaml", line: 36, column: 1, object: "Image/debian-12-disk", path: "disk", msg: `installer "image" writes a whole-disk image`},
	{dir: "disk-bad-format", code: "schema", file: "images/ubuntu-22.04.yaml", line: 51, column: 11, object: "Image/debian-12-disk", path: "disk.format", msg: `"raw.xz" is not one of "raw", "raw.gz", "raw.zst"`},
	{dir: "reserved-kernel-arg", code: "reserved-kernel-arg", file: "images/ubuntu-22.04.yaml", line: 19, column: 5, object: "Image/ubuntu-22.04", path: "kernelArgs[2]", msg: `anneal.* arguments are anneal's own`},
	{dir: "unknown-default-image", code: "unknown-image", file: "site.yaml", line: 15, column: 10, object: "Site/lab1", path: "defaults.image", msg: `image "ubuntu-24.04" is not declared`},
	{dir: "no-image", code: "no-image", file: "nodes/east-e1.yaml", line: 2, column: 1, object: "Node/e1n01", msg: "node has no image and the Site has no defaults.image"},
	{dir: "unknown-patch-set", code: "unknown-patch-set", file: "nodes/east-e1.yaml", line: 92, column: 11, object: "Node/e1n03", path: "patchSet", msg: `patch set "2026-12" is not declared; did you mean "2026-10"?`},
	{dir: "unknown-group", code: "unknown-group", file: "nodes/east-e1.yaml", line: 153, column: 10, object: "Node/e1n05", path: "groups[0]", msg: `DNS group "ingres" is not declared; did you mean "ingress"?`},
	{dir: "group-network", code: "group-network", file: "nodes/west-w1.yaml", line: 30, column: 10, object: "Node/w1n01", path: "groups[0]", msg: `node is in group "api" but has no address on its network "public"`},
	{dir: "duplicate-nic", code: "duplicate-nic", file: "hardware/dell-r650.yaml", line: 12, column: 12, object: "HardwareProfile/dell-r650", path: "nics[1].name", msg: `NIC "eno1" is declared twice`},
	{dir: "duplicate-disk", code: "duplicate-disk", file: "hardware/dell-r650.yaml", line: 17, column: 12, object: "HardwareProfile/dell-r650", path: "disks[1].name", msg: `disk "nvme0n1" is declared twice`},

	// MACs and addresses.
	{dir: "duplicate-mac", code: "duplicate-mac", file: "nodes/east-e1.yaml", line: 45, column: 22, object: "Node/e1n02", path: "interfaces[0].mac", msg: "MAC b0:7b:25:0b:01:01 is also Node/e1n01 at interfaces[0].mac"},
	{dir: "duplicate-address", code: "duplicate-address", file: "nodes/east-e1.yaml", line: 39, column: 12, object: "Node/e1n02", path: "hostIndex", msg: "address 10.10.1.11 on network provisioning is also Node/e1n01 at hostIndex"},
	{dir: "address-outside-network", code: "address-outside", file: "nodes/east-e1.yaml", line: 26, column: 52, object: "Node/e1n01", path: "networks[0].ipv4", msg: "10.10.9.11 is outside network provisioning (10.10.1.0/24)"},
	{dir: "address-is-gateway", code: "address-is-gateway", file: "nodes/east-e1.yaml", line: 26, column: 52, object: "Node/e1n01", path: "networks[0].ipv4", msg: "10.10.1.1 is the gateway of network provisioning"},
	{dir: "host-index-is-gateway", code: "address-is-gateway", file: "nodes/west-w1.yaml", line: 97, column: 12, object: "Node/w1n04", path: "hostIndex", msg: "10.10.0.1 is the gateway of network bmc"},
	{dir: "address-reserved", code: "address-reserved", file: "nodes/west-w1.yaml", line: 117, column: 52, object: "Node/w1n04", path: "networks[2].ipv4", msg: "10.10.4.255 is the network or broadcast address of 10.10.4.0/24"},
	{dir: "bad-address", code: "bad-address", file: "nodes/west-w1.yaml", line: 117, column: 52, object: "Node/w1n04", path: "networks[2].ipv4", msg: `"10.10.4.300" is not an ipv4 address`},
	{dir: "host-index-out-of-range", code: "host-index-range", file: "nodes/east-e1.yaml", line: 39, column: 12, object: "Node/e1n02", path: "hostIndex", msg: "hostIndex 300 does not fit 10.10.1.0/24 (hosts 1 to 254)"},

	// Networks.
	{dir: "overlapping-cidr", code: "overlapping-prefix", file: "networks.yaml", line: 69, column: 9, object: "Network/storage", path: "ipv4.cidr", msg: "10.10.2.128/25 overlaps 10.10.2.0/24 of Network/internal"},
	{dir: "duplicate-vlan", code: "duplicate-vlan", file: "networks.yaml", line: 66, column: 7, object: "Network/storage", path: "vlan", msg: "VLAN 120 is also Network/internal"},
	{dir: "bad-prefix", code: "bad-prefix", file: "networks.yaml", line: 69, column: 9, object: "Network/storage", path: "ipv4.cidr", msg: `"10.10.4.1/24" has host bits set; did you mean 10.10.4.0/24?`},
	{dir: "gateway-outside", code: "gateway-outside", file: "networks.yaml", line: 55, column: 12, object: "Network/public", path: "ipv4.gateway", msg: "gateway 203.0.114.1 is outside 203.0.113.0/24"},
	{dir: "gateway-reserved", code: "gateway-reserved", file: "networks.yaml", line: 41, column: 12, object: "Network/internal", path: "ipv4.gateway", msg: "gateway 10.10.2.255 is the network or broadcast address"},
	{dir: "network-without-prefix", code: "network-without-prefix", file: "networks.yaml", line: 62, column: 1, object: "Network/storage", msg: "network has neither ipv4 nor ipv6"},
	{dir: "bad-pattern", code: "bad-pattern", file: "networks.yaml", line: 60, column: 12, object: "Network/public", path: "dns.pattern", msg: `pattern "{host}.pub.{region}.{domain}" has an unknown placeholder`},
	{dir: "duplicate-provisioning", code: "duplicate-provisioning", file: "networks.yaml", line: 66, column: 15, object: "Network/storage", path: "provisioning", msg: "a second provisioning network in the same scope as Network/provisioning"},
	{dir: "duplicate-bmc-network", code: "duplicate-bmc-network", file: "networks-oob.yaml", line: 5, column: 7, object: "Network/oob", path: "role", msg: "a second bmc network in the same scope as Network/bmc"},
	{dir: "network-region", code: "network-region", file: "nodes/east-e1.yaml", line: 28, column: 15, object: "Node/e1n01", path: "networks[2].network", msg: `network "storage" belongs to region "west", the node to "east"`},
	{dir: "no-bmc-address", code: "no-bmc-address", file: "nodes/west-w1.yaml", line: 10, column: 3, object: "Node/w1n01", path: "bmc", msg: `there is no network with role bmc for region "west"`},

	// A node's devices and attachments.
	{dir: "bond-member-missing", code: "unknown-member", file: "nodes/west-w1.yaml", line: 79, column: 23, object: "Node/w1n03", path: "bonds[0].members[1]", msg: `bond bond0 member "ens1f2" is not a device of this node`},
	{dir: "bond-member-reused", code: "member-reused", file: "nodes/east-e2.yaml", line: 27, column: 44, object: "Node/e2n01", path: "bridges[0].members[1]", msg: `"ens1f1" is already a member of bond bond0`},
	{dir: "bad-member", code: "bad-member", file: "nodes/east-e1.yaml", line: 112, column: 31, object: "Node/e1n04", path: "bonds[0].members[2]", msg: `"bond0" is a bond and cannot be a member of bond bond0`},
	{dir: "duplicate-device", code: "duplicate-device", file: "nodes/east-e2.yaml", line: 93, column: 12, object: "Node/e2n03", path: "bridges[0].name", msg: `device name "bond0" is already the bond at bonds[0].name`},
	{dir: "bad-link", code: "bad-link", file: "nodes/west-w1.yaml", line: 23, column: 29, object: "Node/w1n01", path: "vlans[1].link", msg: `"enp65s0f1" is a member of bond bond0 and cannot carry VLANs`},
	{dir: "vlan-mismatch", code: "vlan-mismatch", file: "nodes/east-e1.yaml", line: 28, column: 35, object: "Node/e1n01", path: "networks[2].interface", msg: `network "storage" is VLAN 140 but "bond0.140" tags VLAN 141`},
	{dir: "provisioning-on-vlan", code: "provisioning-tagged", file: "nodes/west-w1.yaml", line: 26, column: 40, object: "Node/w1n01", path: "networks[0].interface", msg: "the provisioning network must be untagged"},
	{dir: "no-provisioning-network-attachment", code: "no-provisioning", file: "nodes/west-w1.yaml", line: 55, column: 3, object: "Node/w1n02", path: "networks", msg: "node is not attached to a provisioning network"},
	{dir: "unknown-device", code: "unknown-device", file: "nodes/west-w1.yaml", line: 118, column: 34, object: "Node/w1n04", path: "networks[3].interface", msg: `interface "bond0.131" is not an interface, bond, bridge or VLAN of this node`},
	{dir: "enslaved-device", code: "enslaved-device", file: "nodes/east-e2.yaml", line: 98, column: 34, object: "Node/e2n03", path: "networks[3].interface", msg: `"bond0.130" is a bond or bridge member and cannot carry network "public" itself`},
	{dir: "two-untagged", code: "two-untagged", file: "nodes/east-e1.yaml", line: 121, column: 34, object: "Node/e1n04", path: "networks[3].interface", msg: `networks "provisioning" and "public" are both untagged on "eno1"`},
	{dir: "duplicate-attachment", code: "duplicate-attachment", file: "nodes/west-w1.yaml", line: 58, column: 15, object: "Node/w1n02", path: "networks[3].network", msg: `network "internal" is already attached at networks[1]`},
	{dir: "bmc-attachment", code: "bmc-attachment", file: "nodes/west-w1.yaml", line: 119, column: 15, object: "Node/w1n04", path: "networks[4].network", msg: `network "bmc" is the BMC network`},

	// Secrets.
	{dir: "plaintext-password", code: "schema", file: "nodes/east-e2.yaml", line: 78, column: 13, object: "Node/e2n03", path: "bmc.password", msg: "must name a secret the operator grants (secret:NAME)", secret: "hunter2"},
	{dir: "plaintext-tsig-secret", code: "schema", file: "dns.yaml", line: 45, column: 15, object: "DNS/dns", path: "targets[0].tsig.secret", msg: "must name a secret the operator grants (secret:NAME)", secret: "c2VjcmV0LXRzaWcta2V5LWRvLW5vdC1sZWFr"},

	// The schema.
	{dir: "unknown-field", code: "schema", file: "nodes/east-e1.yaml", line: 69, column: 1, object: "Node/e1n03", path: "hostIndx", msg: `unknown field "hostIndx" (a typo?); known fields here: `},
	{dir: "missing-required-field", code: "schema", file: "nodes/east-e1.yaml", line: 94, column: 1, object: "Node/e1n04", path: "hostIndex", msg: `missing required field "hostIndex"`},
	{dir: "bad-enum", code: "schema", file: "nodes/west-w1.yaml", line: 49, column: 11, object: "Node/w1n02", path: "bonds[0].mode", msg: `"lacp" is not one of "802.3ad", "active-backup"`},
	{dir: "bad-mac", code: "schema", file: "nodes/east-e2.yaml", line: 116, column: 24, object: "Node/e2n04", path: "interfaces[2].mac", msg: `"B0:7B:25:13:03:04": must be a MAC address in lower-case hex`},
	{dir: "bad-duration", code: "schema", file: "site.yaml", line: 26, column: 16, object: "Site/lab1", path: "policies.maxBuildAge", msg: `"90days": must be a duration like 90d`},
	{dir: "bad-mirror", code: "schema", file: "images/ubuntu-22.04.yaml", line: 19, column: 9, object: "Image/ubuntu-22.04", path: "mirror", msg: `"ftp://mirror.example.net/ubuntu": must be an http or https URL`},
	{dir: "percent-over-100", code: "schema", file: "site.yaml", line: 23, column: 16, object: "Site/lab1", path: "policies.maxUnavailable.perRole.compute", msg: `"250%"`},

	// YAML and documents.
	{dir: "yaml-syntax-error", code: "yaml-syntax", file: "nodes/west-w1.yaml", line: 45, column: 1, msg: "not valid YAML: did not find expected ',' or '}'"},
	{dir: "yaml-binary-tag", code: "yaml-tag", file: "images/ubuntu-22.04.yaml", line: 9, column: 11, object: "Image/ubuntu-22.04", path: "kernel.sha256", msg: "YAML tag !!binary is not allowed: write the value as plain text"},
	{dir: "duplicate-yaml-key", code: "yaml-structure", file: "nodes/east-e2.yaml", line: 107, column: 1, object: "Node/e2n04", path: "rack", msg: `key "rack" is repeated in the same mapping`},
	{dir: "not-a-mapping", code: "not-a-document", file: "notes.yaml", line: 2, column: 1, msg: "a site document must be a YAML mapping with apiVersion and kind; found a list"},
	{dir: "unknown-kind", code: "unknown-kind", file: "dns.yaml", line: 4, column: 7, msg: `unknown kind "Dns" (known kinds: DNS, HardwareProfile`},
	{dir: "missing-kind", code: "missing-kind", file: "hardware/supermicro-sys-620u.yaml", line: 1, column: 1, msg: "document has no kind"},
	{dir: "unknown-api-version", code: "unknown-api-version", file: "dns.yaml", line: 3, column: 13, msg: `apiVersion "anneal.dev/v1beta1" is not supported`},
	{dir: "missing-api-version", code: "missing-api-version", file: "dns.yaml", line: 3, column: 1, msg: "document has no apiVersion"},
	{dir: "empty-site", code: "empty-site", msg: "no *.yaml or *.yml files found"},
	{dir: "empty-yaml", code: "missing-site", msg: "no Site document"},

	// DNS.
	{dir: "invalid-dns-name", code: "bad-dns-name", file: "nodes/east-e1.yaml", line: 28, column: 5, object: "Node/e1n01", path: "networks[2]", msg: `"e1n01.stor_age.east.example.net" is not a valid DNS name`},
	{dir: "name-collision", code: "name-collision", file: "dns.yaml", line: 34, column: 12, object: "DNS/dns", path: "records[1].name", msg: `"e1n03.east.example.net" is also the name of Node/e1n03`},
	{dir: "cname-collision", code: "cname-collision", file: "nodes/east-e1.yaml", line: 31, column: 16, object: "Node/e1n01", path: "aliases[1]", msg: `"e1n02.east.example.net": a CNAME cannot share its name with other records (RFC 1034); Node/e1n02 also uses it`},
	{dir: "cname-beside-a", code: "cname-collision", file: "dns.yaml", line: 34, column: 12, object: "DNS/dns", path: "records[1].name", msg: `"ntp.example.net": a CNAME cannot share its name with other records (RFC 1034); records[0] also uses it`},
	{dir: "name-outside-zones", code: "name-outside-zones", file: "dns.yaml", line: 28, column: 11, object: "DNS/dns", path: "groups[1].fqdn", msg: `"api.example.org" is in no zone declared`},
	{dir: "no-reverse-zone", code: "no-reverse-zone", file: "nodes/east-e1.yaml", line: 28, column: 5, object: "Node/e1n01", path: "networks[2]", msg: "address fd01:a:0:140::b on network storage has no reverse zone: declare one such as 0.4.1.0.0.0.0.0.a.0.0.0.1.0.d.f.ip6.arpa"},
	{dir: "group-over-limit", code: "group-over-limit", file: "dns.yaml", line: 27, column: 5, object: "DNS/dns", path: "groups[1]", msg: `group "api" has 3 members, more than target "bind" accepts for one name and type (maxRecordsPerType 2`},
	{dir: "duplicate-zone", code: "duplicate-zone", file: "dns.yaml", line: 14, column: 11, object: "DNS/dns", path: "zones[3].name", msg: `zone "West.Example.Net." is declared twice`},
	{dir: "bad-reverse-zone", code: "bad-reverse-zone", file: "dns.yaml", line: 14, column: 11, object: "DNS/dns", path: "zones[3].name", msg: `label "256" is not an octet (0-255)`},
	{dir: "unknown-zone", code: "unknown-zone", file: "dns.yaml", line: 65, column: 9, object: "DNS/dns", path: "targets[1].zones[5]", msg: `zone "114.0.203.in-addr.arpa" is not declared in zones`},
	{dir: "zone-unserved", code: "zone-unserved", file: "dns.yaml", line: 16, column: 11, object: "DNS/dns", path: "zones[5].name", msg: `zone "114.0.203.in-addr.arpa" is not served by any target`},
	{dir: "duplicate-target", code: "duplicate-target", file: "dns.yaml", line: 54, column: 11, object: "DNS/dns", path: "targets[1].name", msg: `target "bind" is declared twice`},
	{dir: "duplicate-group", code: "duplicate-group", file: "dns.yaml", line: 27, column: 11, object: "DNS/dns", path: "groups[1].name", msg: `group "ingress" is declared twice`},
	{dir: "primary-name-unknown-network", code: "unknown-network", file: "dns.yaml", line: 9, column: 12, object: "DNS/dns", path: "primaryName.network", msg: `network "intranet" is not declared`},
	{dir: "alias-without-primary", code: "alias-without-primary", file: "nodes/east-e1.yaml", line: 31, column: 10, object: "Node/e1n01", path: "aliases", msg: "the DNS document has no primaryName"},
	{dir: "bad-wildcard", code: "bad-wildcard", file: "dns.yaml", line: 19, column: 11, object: "DNS/dns", path: "wildcards[0].name", msg: `"apps.east.example.net" is not a wildcard name`},
	{dir: "bad-record", code: "bad-record", file: "dns.yaml", line: 35, column: 46, object: "DNS/dns", path: "records[2].value", msg: `A record: "2001:db8::25" is not an IPv4 address`},
}

// loadSafely loads a site, turning a panic into a test failure that names it.
func loadSafely(t *testing.T, load func() (*schema.Site, schema.Diagnostics, error)) (site *schema.Site, diags schema.Diagnostics, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("load panicked: %v", r)
		}
	}()
	return load()
}

func TestBrokenSites(t *testing.T) {
	ctx := context.Background()
	for _, tt := range brokenTable {
		t.Run(tt.dir, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(brokenSites, tt.dir)
			site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.LoadDir(ctx, dir, schema.LoadOptions{})
			})
			var inv *schema.InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("LoadDir: want an *InvalidError, got %T: %v", err, err)
			}
			if site != nil {
				t.Errorf("LoadDir returned a Site for an invalid site")
			}
			if !reflect.DeepEqual(inv.Diagnostics, diags) {
				t.Errorf("the InvalidError does not carry the returned diagnostics")
			}
			if !diags.HasErrors() {
				t.Fatalf("no error diagnostics")
			}
			if !slices.ContainsFunc(diags, tt.matches) {
				t.Errorf("no diagnostic matches %s\ngot:\n%s", tt.want(), listDiags(diags))
			}
			checkWellFormed(t, dir, diags)
			if tt.secret != "" {
				for _, d := range diags {
					if strings.Contains(fmt.Sprintf("%#v", d), tt.secret) {
						t.Errorf("the secret %q leaks into a diagnostic: %s", tt.secret, d)
					}
				}
				if strings.Contains(err.Error(), tt.secret) {
					t.Errorf("the secret %q leaks into the error: %v", tt.secret, err)
				}
			}
			// Deterministic: the same findings, in the same order, whatever
			// the number of workers.
			for _, workers := range []int{1, 7} {
				_, again, _ := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
					return schema.LoadDir(ctx, dir, schema.LoadOptions{Workers: workers})
				})
				if !reflect.DeepEqual(diags, again) {
					t.Errorf("diagnostics differ between loads (workers %d):\nfirst:\n%s\nagain:\n%s", workers, listDiags(diags), listDiags(again))
				}
			}
		})
	}
}

func (tt brokenSite) matches(d schema.Diagnostic) bool {
	return d.Severity == schema.SeverityError &&
		d.Code == tt.code &&
		d.File == tt.file &&
		d.Line == tt.line &&
		(tt.column == 0 || d.Column == tt.column) &&
		d.Object == tt.object &&
		d.Path == tt.path &&
		strings.Contains(d.Message, tt.msg)
}

func (tt brokenSite) want() string {
	return fmt.Sprintf("code=%s file=%q line=%d column=%d object=%q path=%q message~%q", tt.code, tt.file, tt.line, tt.column, tt.object, tt.path, tt.msg)
}

func listDiags(ds schema.Diagnostics) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "  %s\n", d)
	}
	return b.String()
}

// checkWellFormed checks what every diagnostic promises: a code and a
// message, a file relative to the site root that exists, a position with
// the file, and the documented order.
func checkWellFormed(t *testing.T, dir string, diags schema.Diagnostics) {
	t.Helper()
	for _, d := range diags {
		if d.Code == "" || d.Message == "" {
			t.Errorf("diagnostic without code or message: %+v", d)
		}
		if d.Severity != schema.SeverityError && d.Severity != schema.SeverityWarning {
			t.Errorf("diagnostic with severity %q: %s", d.Severity, d)
		}
		if d.File == "" {
			if d.Line != 0 || d.Column != 0 {
				t.Errorf("diagnostic with a position but no file: %+v", d)
			}
			continue
		}
		if !fs.ValidPath(d.File) || strings.Contains(d.File, `\`) {
			t.Errorf("diagnostic file %q is not a slash-separated path relative to the site root", d.File)
		} else if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(d.File))); err != nil {
			t.Errorf("diagnostic file %q does not exist: %v", d.File, err)
		}
		if d.Line < 1 || d.Column < 1 {
			t.Errorf("diagnostic in a file without a position: %+v", d)
		}
		if d.Object != "" && !strings.Contains(d.Object, "/") {
			t.Errorf("diagnostic object %q is not Kind/name", d.Object)
		}
	}
	sorted := slices.IsSortedFunc(diags, func(a, b schema.Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		)
	})
	if !sorted {
		t.Errorf("diagnostics are not sorted by file, line, column, path and message:\n%s", listDiags(diags))
	}
}

// Every folder of the corpus has a row, and every row a folder: a new broken
// site without its expected diagnostic fails here.
func TestBrokenSitesCovered(t *testing.T) {
	entries, err := os.ReadDir(brokenSites)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}
	for _, tt := range brokenTable {
		rows[tt.dir]++
	}
	folders := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		folders[e.Name()] = true
		if rows[e.Name()] == 0 {
			t.Errorf("examples/broken-sites/%s has no row in brokenTable (schema/broken_test.go)", e.Name())
		}
	}
	for dir, n := range rows {
		if !folders[dir] {
			t.Errorf("brokenTable row %q has no folder examples/broken-sites/%s", dir, dir)
		}
		if n > 1 {
			t.Errorf("brokenTable has %d rows for %q", n, dir)
		}
	}
}

func TestExampleSiteValid(t *testing.T) {
	site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
		return schema.LoadDir(context.Background(), exampleSite, schema.LoadOptions{})
	})
	if err != nil {
		t.Fatalf("the example site is invalid: %v\n%s", err, listDiags(diags))
	}
	if site == nil {
		t.Fatal("no Site")
	}
	if n := diags.Errors(); n != 0 {
		t.Fatalf("%d errors:\n%s", n, listDiags(diags))
	}
	if len(diags) > 0 {
		t.Logf("warnings:\n%s", listDiags(diags))
	}
	if site.Config.Name != "lab1" || len(site.Nodes) != 14 || len(site.Networks) != 5 || site.DNS == nil {
		t.Errorf("unexpected site: %s, %d nodes, %d networks, DNS %v", site.Config.Name, len(site.Nodes), len(site.Networks), site.DNS != nil)
	}
}

// exampleFS is the example site in memory, with edits: each replaces text
// that must occur exactly once in the file (a file that does not exist yet
// is created from the new text).
type edit struct{ file, old, new string }

func exampleFS(t *testing.T, edits ...edit) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	root := os.DirFS(exampleSite)
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(root, p)
		fsys[p] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		f, ok := fsys[e.file]
		if !ok {
			fsys[e.file] = &fstest.MapFile{Data: []byte(e.new)}
			continue
		}
		if n := strings.Count(string(f.Data), e.old); n != 1 {
			t.Fatalf("edit of %s: %q occurs %d times", e.file, e.old, n)
		}
		f.Data = []byte(strings.Replace(string(f.Data), e.old, e.new, 1))
	}
	return fsys
}

// Variants of the example that must stay valid: each once tripped a check,
// or sits at the edge of one.
func TestValidVariants(t *testing.T) {
	tests := []struct {
		name  string
		edits []edit
		warn  string // a warning code that must be reported
	}{
		{
			name: "static round robin",
			edits: []edit{{"dns.yaml",
				"  - {name: ntp.example.net, type: A, value: 10.10.2.2}\n",
				"  - {name: ntp.example.net, type: A, value: 10.10.2.2}\n  - {name: ntp.example.net, type: A, value: 10.10.2.3}\n"}},
		},
		{
			name: "static dual stack",
			edits: []edit{{"dns.yaml",
				"  - {name: mail.example.net, type: A, value: 203.0.113.25}\n",
				"  - {name: mail.example.net, type: A, value: 203.0.113.25}\n  - {name: mail.example.net, type: AAAA, value: \"2001:db8:130::25\"}\n"}},
		},
		{
			name: "decommissioned node keeps its MACs and hostIndex",
			edits: []edit{{"nodes/spare.yaml", "", strings.Join([]string{
				"apiVersion: anneal.dev/v1alpha1", "kind: Node", "name: e1n99", "region: east", "rack: e1",
				"hardwareProfile: dell-r650", "hostIndex: 11", "state: decommissioned",
				"bmc: {mac: \"b0:7b:25:0b:00:01\", username: anneal, password: secret:bmc-password}",
				"interfaces: [{nic: eno1, mac: \"b0:7b:25:0b:01:01\"}]",
				"networks: [{network: provisioning, interface: eno1}]", ""}, "\n")}},
		},
		{
			name:  "a role that can never be rebuilt is a warning",
			edits: []edit{{"site.yaml", "      storage: 1\n", "      storage: 0\n"}},
			warn:  "rollout-blocked",
		},
		{
			// A mirror with a port, an https one at an IPv6 address, and
			// a BaseOS repository with dnf's $basearch.
			name: "mirrors",
			edits: []edit{
				{"images/ubuntu-22.04.yaml", "  - ip=dhcp\n", "  - ip=dhcp\nmirror: http://mirror.example.net:3142/ubuntu/\n"},
				{"images/ubuntu-22.04.yaml", "  - inst.text\n", "  - inst.text\nmirror: https://[2001:db8::80]/rocky/9.4/BaseOS/$basearch/os\n"},
			},
		},
		{
			name:  "100% is a percentage",
			edits: []edit{{"site.yaml", "      compute: \"25%\"\n", "      compute: \"100%\"\n"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.Load(context.Background(), exampleFS(t, tt.edits...), schema.LoadOptions{})
			})
			if err != nil || site == nil {
				t.Fatalf("want a valid site, got %v:\n%s", err, listDiags(diags))
			}
			if tt.warn != "" && !slices.ContainsFunc(diags, func(d schema.Diagnostic) bool {
				return d.Code == tt.warn && d.Severity == schema.SeverityWarning
			}) {
				t.Errorf("no %s warning:\n%s", tt.warn, listDiags(diags))
			}
		})
	}
}

// Sites with more than one defect, or defects the corpus cannot hold as a
// folder, with the diagnostic that must be among the findings.
func TestInvalidVariants(t *testing.T) {
	tests := []struct {
		name  string
		edits []edit
		want  brokenSite // dir unused
	}{
		{
			// DNS findings about a node's addresses point at the attachment
			// that made the address, even when an earlier one was skipped.
			name: "dns finding after a skipped attachment",
			edits: []edit{
				{"nodes/east-e1.yaml", "  - {network: storage, interface: bond0.140}\n  - {network: public, interface: bond0.130}\nroles: [api]\naliases",
					"  - {network: storag, interface: bond0.140}\n  - {network: public, interface: bond0.130}\nroles: [api]\naliases"},
				{"networks.yaml", `  pattern: "{node}.pub.{region}.{domain}"`, `  pattern: "{node}.pub_lic.{region}.{domain}"`},
			},
			want: brokenSite{code: "bad-dns-name", file: "nodes/east-e1.yaml", line: 29, column: 5, object: "Node/e1n01", path: "networks[3]", msg: `"e1n01.pub_lic.east.example.net"`},
		},
		{
			// The CNAME is blamed whether it sorts before or after the name it
			// collides with.
			name:  "alias at an earlier node's name",
			edits: []edit{{"nodes/east-e1.yaml", "roles: [compute]\npatchSet: \"2026-10\"\n", "roles: [compute]\npatchSet: \"2026-10\"\naliases: [e1n01]\n"}},
			want:  brokenSite{code: "cname-collision", file: "nodes/east-e1.yaml", line: 93, column: 11, object: "Node/e1n03", path: "aliases[0]", msg: "Node/e1n01 also uses it"},
		},
		{
			// A zone picks the interface a link-local BMC is reached on.
			name:  "a BMC address with an IPv6 zone",
			edits: []edit{{"nodes/east-e1.yaml", "bmc:\n  mac: b0:7b:25:0b:00:01\n", "bmc:\n  address: \"fd00:a:0:100::5%lo\"\n  mac: b0:7b:25:0b:00:01\n"}},
			want:  brokenSite{code: "bad-address", file: "nodes/east-e1.yaml", line: 10, column: 12, object: "Node/e1n01", path: "bmc.address", msg: "takes no IPv6 zone"},
		},
		{
			name:  "a duration past time.Duration",
			edits: []edit{{"site.yaml", "  maxBuildAge: 90d\n", "  maxBuildAge: 99999999999w\n"}},
			want:  brokenSite{code: "decode", file: "site.yaml", line: 2, column: 1, msg: `duration "99999999999w" is too long`},
		},
		{
			name:  "a mirror with credentials",
			edits: []edit{{"images/ubuntu-22.04.yaml", "  - ip=dhcp\n", "  - ip=dhcp\nmirror: http://user:pw@mirror.example.net/ubuntu\n"}},
			want:  brokenSite{code: "schema", file: "images/ubuntu-22.04.yaml", line: 19, column: 9, object: "Image/ubuntu-22.04", path: "mirror", msg: "must be an http or https URL of a host"},
		},
		{
			name:  "a mirror with a query",
			edits: []edit{{"images/ubuntu-22.04.yaml", "  - inst.text\n", "  - inst.text\nmirror: \"http://mirror.example.net/rocky?arch=x86_64\"\n"}},
			want:  brokenSite{code: "schema", file: "images/ubuntu-22.04.yaml", line: 35, column: 9, object: "Image/rocky-9", path: "mirror", msg: "no credentials, query"},
		},
		{
			name:  "a mirror with a space",
			edits: []edit{{"images/ubuntu-22.04.yaml", "  - ip=dhcp\n", "  - ip=dhcp\nmirror: \"http://mirror.example.net/ub untu\"\n"}},
			want:  brokenSite{code: "schema", file: "images/ubuntu-22.04.yaml", line: 19, column: 9, object: "Image/ubuntu-22.04", path: "mirror", msg: "must be an http or https URL"},
		},
		{
			name:  "perRack over 100%",
			edits: []edit{{"site.yaml", "    perRack: 1\n", "    perRack: \"101%\"\n"}},
			want:  brokenSite{code: "schema", file: "site.yaml", line: 21, column: 14, object: "Site/lab1", path: "policies.maxUnavailable.perRack", msg: `"101%": must be a count or a percentage like 25%`},
		},
		{
			name:  "perRack neither a count nor a percentage",
			edits: []edit{{"site.yaml", "    perRack: 1\n", "    perRack: many\n"}},
			want:  brokenSite{code: "schema", file: "site.yaml", line: 21, column: 14, object: "Site/lab1", path: "policies.maxUnavailable.perRack", msg: `"many": must be a count or a percentage like 25%`},
		},
		{
			name:  "perRole count below zero",
			edits: []edit{{"site.yaml", "      storage: 1\n", "      storage: -1\n"}},
			want:  brokenSite{code: "schema", file: "site.yaml", line: 24, column: 16, object: "Site/lab1", path: "policies.maxUnavailable.perRole.storage", msg: "-1 is out of range (>=0)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site, diags, err := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.Load(context.Background(), exampleFS(t, tt.edits...), schema.LoadOptions{})
			})
			var inv *schema.InvalidError
			if !errors.As(err, &inv) || site != nil {
				t.Fatalf("want an *InvalidError and no Site, got %v", err)
			}
			if !slices.ContainsFunc(diags, tt.want.matches) {
				t.Errorf("no diagnostic matches %s\ngot:\n%s", tt.want.want(), listDiags(diags))
			}
		})
	}
}

// yaml.v3 reports its parser's errors one line early; the loader corrects
// them, and leaves its scanner's errors alone.
func TestYAMLSyntaxLines(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		msg       string
	}{
		{"unclosed flow mapping", "a: 1\nb:\n  - {x: 1}\n  - {x: 2\n  - {x: 3}\nc: 4\n", 4, "did not find expected ',' or '}'"},
		{"unclosed flow sequence", "a: 1\nb: [1, 2\nc: 3\n", 2, "did not find expected ',' or ']'"},
		{"key out of line", "a: 1\nb:\n  c: 1\n d: 2\ne: 3\n", 4, "did not find expected key"},
		{"mapping after a sequence", "- a\nb: 1\n", 2, "did not find expected '-' indicator"},
		{"value indented too far", "a: 1\nb: 2\n  c: 3\nd: 4\n", 3, "mapping values are not allowed in this context"},
		{"tab indentation", "a: 1\nb:\n\t- x\n", 3, "found character that cannot start any token"},
		{"unclosed quote", "a: 1\nb: \"abc\nc: 2\n", 2, "found unexpected end of stream"},
		{"second document", "apiVersion: anneal.dev/v1alpha1\n---\nb: 2\n  c: 3\n", 4, "mapping values are not allowed in this context"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := fstest.MapFS{"site.yaml": {Data: []byte(tt.src)}}
			_, diags, _ := loadSafely(t, func() (*schema.Site, schema.Diagnostics, error) {
				return schema.Load(context.Background(), fsys, schema.LoadOptions{})
			})
			i := slices.IndexFunc(diags, func(d schema.Diagnostic) bool { return d.Code == "yaml-syntax" })
			if i < 0 {
				t.Fatalf("no yaml-syntax diagnostic:\n%s", listDiags(diags))
			}
			d := diags[i]
			if d.File != "site.yaml" || d.Line != tt.line || !strings.Contains(d.Message, tt.msg) {
				t.Errorf("got %s, want site.yaml line %d: %s", d, tt.line, tt.msg)
			}
		})
	}
}
