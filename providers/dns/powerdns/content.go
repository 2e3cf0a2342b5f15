package powerdns

import (
	"fmt"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// PowerDNS's API takes and returns a record's RDATA as "content" in zone
// file presentation form: names absolute with their trailing dot (MX, SRV,
// CNAME, PTR, NS targets), TXT as quoted strings, the MX and SRV
// priorities inside the content. That is miekg/dns's form too, which is
// reconcile's canonical form, with three differences handled here:
//
//   - PowerDNS keeps what it was given: names in RDATA in their original
//     case and a TXT string over 255 bytes as one string (it splits it only
//     on the wire). Reading parses the content with miekg/dns and renders it
//     canonically, so the API's view equals the DNS view (AXFR, queries).
//   - PowerDNS renders an IPv4-mapped AAAA as "::ffff:192.0.2.1" but
//     refuses that form as input: writing renders it in hex.
//   - A type miekg/dns does not know (PowerDNS's ALIAS, LUA) is kept as
//     PowerDNS wrote it: anneal never writes those.

// toContent renders one RDATA of an RRset as PowerDNS content.
func toContent(name string, typ dns.RRType, ttl uint32, data string) (string, error) {
	rr, err := parseRR(name, typ, ttl, data)
	if err != nil {
		return "", err
	}
	if a, ok := rr.(*mdns.AAAA); ok {
		if v4 := a.AAAA.To4(); v4 != nil {
			return fmt.Sprintf("::ffff:%x:%x", uint16(v4[0])<<8|uint16(v4[1]), uint16(v4[2])<<8|uint16(v4[3])), nil
		}
	}
	return dns.CanonicalRData(rr), nil
}

// fromContent turns PowerDNS content into reconcile's canonical RDATA; ok
// is false when miekg/dns cannot parse it, and the content is returned as
// it is.
func fromContent(name string, typ dns.RRType, ttl uint32, content string) (string, bool) {
	rr, err := parseRR(name, typ, ttl, content)
	if err != nil {
		return content, false
	}
	return dns.CanonicalRData(rr), true
}

// parseRR parses one record of name and type from its RDATA.
func parseRR(name string, typ dns.RRType, ttl uint32, data string) (mdns.RR, error) {
	if strings.ContainsAny(data, "\n\r") {
		return nil, fmt.Errorf("%s %s %q: a line break in RDATA", name, typ, data)
	}
	rr, err := mdns.NewRR(fmt.Sprintf("%s %d IN %s %s", mdns.Fqdn(name), ttl, typ, data))
	if err != nil {
		return nil, fmt.Errorf("%s %s %q: %w", name, typ, data, err)
	}
	if rr == nil {
		return nil, fmt.Errorf("%s %s: empty RDATA", name, typ)
	}
	if want, ok := mdns.StringToType[string(typ)]; ok && rr.Header().Rrtype != want {
		return nil, fmt.Errorf("%s %s %q: parses as %s", name, typ, data, mdns.TypeToString[rr.Header().Rrtype])
	}
	return rr, nil
}
