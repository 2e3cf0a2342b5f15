package schema

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// SecretPrefix starts every secret reference in a site: secret:NAME names a
// secret the operator grants. Where its value is read from and where it may
// be sent are the operator's (anneal --secrets), never the site's.
const SecretPrefix = "secret:"

// SecretRef is a site's reference to a granted secret: secret:NAME.
type SecretRef string

// Name is the granted secret's name ("" for a malformed reference).
func (r SecretRef) Name() string {
	name, ok := strings.CutPrefix(string(r), SecretPrefix)
	if !ok {
		return ""
	}
	return name
}

// SecretUse is what a secret is sent for.
type SecretUse string

// Uses of a secret. A grant names the uses it allows, so a BMC password can
// never be sent as a DNS key and the other way round.
const (
	// UseBMC: a node's BMC password, sent to the BMC's address.
	UseBMC SecretUse = "bmc"
	// UseDNS: a DNS target's TSIG secret (to its server) or PowerDNS API
	// key (to its API URL).
	UseDNS SecretUse = "dns"
)

// SecretDest is where the site would send a secret: its use and the
// address. Port 0 means the protocol's default port.
type SecretDest struct {
	Use  SecretUse
	Host string // an IP address or a host name, without brackets
	Port int
}

func (d SecretDest) String() string {
	host := d.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if d.Port == 0 {
		return string(d.Use) + " " + host
	}
	return string(d.Use) + " " + host + ":" + strconv.Itoa(d.Port)
}

// SecretGrants decides whether a site may send a named secret to a
// destination: the operator's grants (providers/secret). A load with
// grants fails, naming the field, for every reference the grants refuse.
type SecretGrants interface {
	// AllowSecret returns nil when the secret is granted for dest. Its
	// error explains the refusal and never contains a secret's value.
	AllowSecret(name string, dest SecretDest) error
}

// BMCSecretDest is where the node's BMC password goes.
func (n *Node) BMCSecretDest() SecretDest {
	return SecretDest{Use: UseBMC, Host: n.BMC.Address, Port: n.BMC.Port}
}

// SecretDest is where the target's secret goes: the TSIG secret to the
// RFC 2136 server, the API key to the PowerDNS API's host. ok is false when
// the address cannot be parsed (the schema has reported it).
func (t *Target) SecretDest() (SecretDest, bool) {
	switch t.Kind {
	case TargetRFC2136:
		host, port, err := net.SplitHostPort(t.Server)
		if err != nil {
			host, port = strings.Trim(t.Server, "[]"), "53" // DNS's port
		}
		if host == "" {
			return SecretDest{}, false
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return SecretDest{}, false
		}
		return SecretDest{Use: UseDNS, Host: host, Port: p}, true
	case TargetPowerDNS:
		u, err := url.Parse(t.API)
		if err != nil || u.Hostname() == "" {
			return SecretDest{}, false
		}
		d := SecretDest{Use: UseDNS, Host: u.Hostname()}
		if p := u.Port(); p != "" {
			if d.Port, err = strconv.Atoi(p); err != nil {
				return SecretDest{}, false
			}
		} else if u.Scheme == "https" {
			d.Port = 443
		} else {
			d.Port = 80
		}
		return d, true
	}
	return SecretDest{}, false
}

// SecretNames lists the secrets the site names for the given uses (every
// use when none is given), sorted, each once.
func (s *Site) SecretNames(uses ...SecretUse) []string {
	seen := map[string]bool{}
	add := func(r SecretRef) {
		if n := r.Name(); n != "" {
			seen[n] = true
		}
	}
	if len(uses) == 0 || slices.Contains(uses, UseBMC) {
		for _, n := range s.Nodes {
			add(n.BMC.Password)
		}
	}
	if s.DNS != nil && (len(uses) == 0 || slices.Contains(uses, UseDNS)) {
		for _, t := range s.DNS.Targets {
			if t.TSIG != nil {
				add(t.TSIG.Secret)
			}
			add(t.APIKey)
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// secrets checks every secret reference of the site against the grants.
func (c *checker) secrets(g SecretGrants) {
	if g == nil {
		return
	}
	for _, n := range c.site.Nodes {
		if n.BMC.Password == "" || n.BMC.Address == "" {
			continue // reported by the schema or the BMC check
		}
		if err := g.AllowSecret(n.BMC.Password.Name(), n.BMCSecretDest()); err != nil {
			c.errorf(&n.Meta, fieldPath{"bmc", "password"}, "secret-not-granted", "%v", err)
		}
	}
	d := c.site.DNS
	if d == nil {
		return
	}
	for i := range d.Targets {
		t := &d.Targets[i]
		var ref SecretRef
		var at fieldPath
		switch {
		case t.Kind == TargetRFC2136 && t.TSIG != nil:
			ref, at = t.TSIG.Secret, fieldPath{"targets", i, "tsig", "secret"}
		case t.Kind == TargetPowerDNS:
			ref, at = t.APIKey, fieldPath{"targets", i, "apiKey"}
		default:
			continue
		}
		dest, ok := t.SecretDest()
		if ref == "" || !ok {
			continue
		}
		if err := g.AllowSecret(ref.Name(), dest); err != nil {
			c.errorf(&d.Meta, at, "secret-not-granted", "%v", err)
		}
	}
}
