package labdns

import (
	"strings"

	"github.com/miekg/dns"
)

// update applies an RFC 2136 UPDATE and returns the answer to send.
// signed says the request carried a verified signature with the key.
func (s *Server) update(w dns.ResponseWriter, req *dns.Msg, signed bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	zq := req.Question[0]
	log := s.log.With("zone", strings.TrimSuffix(zq.Name, "."), "from", w.RemoteAddr().String())
	refuse := func(rcode int, why string) *dns.Msg {
		log.Warn("lab dns refused an UPDATE", "rcode", dns.RcodeToString[rcode], "why", why)
		m.Rcode = rcode
		return m
	}
	switch {
	case s.tsig == nil:
		// A PowerDNS stand-in: updates are off (dnsupdate=no).
		return refuse(dns.RcodeRefused, "this server takes no UPDATEs")
	case !signed:
		return refuse(dns.RcodeNotAuth, "not signed with the TSIG key")
	case zq.Qtype != dns.TypeSOA:
		return refuse(dns.RcodeFormatError, "the zone section's type is not SOA")
	case zq.Qclass != dns.ClassINET:
		return refuse(dns.RcodeNotAuth, "the zone's class is not IN")
	}
	z := s.zones[dns.CanonicalName(zq.Name)]
	if z == nil {
		return refuse(dns.RcodeNotAuth, "the server is not authoritative for the zone")
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if rc, why := z.prerequisites(req.Answer); rc != dns.RcodeSuccess {
		// A prerequisite failing is the compare-and-swap working: Info.
		log.Info("lab dns UPDATE prerequisite failed", "rcode", dns.RcodeToString[rc], "why", why)
		m.Rcode = rc
		return m
	}
	if rc, why := z.prescan(req.Ns); rc != dns.RcodeSuccess {
		return refuse(rc, why)
	}
	serial := z.serial()
	z.begin()
	if rc, why := z.applyUpdates(req.Ns, s.recLimit); rc != dns.RcodeSuccess {
		z.rollback()
		return refuse(rc, why)
	}
	if !z.changed() {
		z.commit()
		log.Info("lab dns UPDATE changed nothing", "serial", z.serial())
		return m
	}
	if z.serial() == serial {
		// One more, unless the update set the SOA itself (RFC 2136
		// section 3.6).
		z.bumpSerial()
	}
	if err := z.save(); err != nil {
		z.rollback()
		log.Error("lab dns could not keep an UPDATE", "err", err)
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	z.commit()
	log.Info("lab dns UPDATE applied", "serial", z.serial(), "prerequisites", len(req.Answer), "updates", len(req.Ns))
	return m
}

// prerequisites checks the prerequisite section (RFC 2136 section 3.2);
// the caller holds the zone's lock.
func (z *zone) prerequisites(rrs []dns.RR) (int, string) {
	// RRsets that must exist with exactly these records (value-dependent).
	want := map[setKey][]dns.RR{}
	var order []setKey
	for _, rr := range rrs {
		h := rr.Header()
		name := dns.CanonicalName(h.Name)
		desc := h.Name + " " + dns.TypeToString[h.Rrtype]
		if h.Ttl != 0 {
			return dns.RcodeFormatError, "prerequisite " + desc + " has a TTL"
		}
		if !dns.IsSubDomain(z.origin, name) {
			return dns.RcodeNotZone, "prerequisite " + desc + " is outside the zone"
		}
		switch h.Class {
		case dns.ClassANY:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError, "prerequisite " + desc + " of class ANY has data"
			}
			if h.Rrtype == dns.TypeANY {
				if !z.nodeServed(name) {
					return dns.RcodeNameError, "name " + h.Name + " is not in use"
				}
			} else if !z.get(name, h.Rrtype).served() {
				return dns.RcodeNXRrset, "RRset " + desc + " does not exist"
			}
		case dns.ClassNONE:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError, "prerequisite " + desc + " of class NONE has data"
			}
			if h.Rrtype == dns.TypeANY {
				if z.nodeServed(name) {
					return dns.RcodeYXDomain, "name " + h.Name + " is in use"
				}
			} else if z.get(name, h.Rrtype).served() {
				return dns.RcodeYXRrset, "RRset " + desc + " exists"
			}
		case dns.ClassINET:
			k := setKey{name, h.Rrtype}
			if want[k] == nil {
				order = append(order, k)
			}
			want[k] = append(want[k], rr)
		default:
			return dns.RcodeFormatError, "prerequisite " + desc + " of class " + dns.ClassToString[h.Class]
		}
	}
	for _, k := range order {
		if !sameRecords(want[k], z.get(k.name, k.typ).servedRRs()) {
			return dns.RcodeNXRrset, "RRset " + k.name + " " + dns.TypeToString[k.typ] + " does not hold the records given"
		}
	}
	return dns.RcodeSuccess, ""
}

// sameRecords reports whether a and b hold the same records, TTL and
// the case of names aside, duplicates counting once.
func sameRecords(a, b []dns.RR) bool {
	contains := func(set []dns.RR, rr dns.RR) bool {
		for _, x := range set {
			if dns.IsDuplicate(x, rr) {
				return true
			}
		}
		return false
	}
	if len(b) == 0 {
		return false
	}
	for _, rr := range a {
		if !contains(b, rr) {
			return false
		}
	}
	for _, rr := range b {
		if !contains(a, rr) {
			return false
		}
	}
	return true
}

// metaType reports types that are never data (RFC 2136 section 3.4.1.2).
func metaType(t uint16) bool {
	switch t {
	case dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMAILA, dns.TypeMAILB, dns.TypeTSIG, dns.TypeOPT, dns.TypeTKEY:
		return true
	}
	return false
}

// prescan checks the update section before anything is applied (RFC
// 2136 section 3.4.1).
func (z *zone) prescan(rrs []dns.RR) (int, string) {
	for _, rr := range rrs {
		h := rr.Header()
		desc := h.Name + " " + dns.TypeToString[h.Rrtype]
		if !dns.IsSubDomain(z.origin, dns.CanonicalName(h.Name)) {
			return dns.RcodeNotZone, "update " + desc + " is outside the zone"
		}
		switch h.Class {
		case dns.ClassINET:
			if metaType(h.Rrtype) || h.Rdlength == 0 {
				return dns.RcodeFormatError, "update " + desc + " is not a record to add"
			}
		case dns.ClassANY:
			if h.Ttl != 0 || h.Rdlength != 0 || metaType(h.Rrtype) && h.Rrtype != dns.TypeANY {
				return dns.RcodeFormatError, "update " + desc + ": a deletion of class ANY with a TTL or data"
			}
		case dns.ClassNONE:
			if h.Ttl != 0 || metaType(h.Rrtype) {
				return dns.RcodeFormatError, "update " + desc + ": a deletion of class NONE with a TTL or of a meta type"
			}
		default:
			return dns.RcodeFormatError, "update " + desc + " of class " + dns.ClassToString[h.Class]
		}
	}
	return dns.RcodeSuccess, ""
}

// applyUpdates applies the update section in order (RFC 2136 section
// 3.4.2), inside the caller's transaction. Like BIND it ignores, without
// an error, data beside a CNAME (and a CNAME beside data), the removal
// of the SOA or of the apex NS RRset, and an SOA whose serial is not
// newer. recLimit > 0 fails the whole update with SERVFAIL when an RRset
// would hold more records.
func (z *zone) applyUpdates(rrs []dns.RR, recLimit int) (int, string) {
	for _, rr := range rrs {
		h := rr.Header()
		name := dns.CanonicalName(h.Name)
		apex := name == z.origin
		switch h.Class {
		case dns.ClassINET:
			if rc, why := z.add(name, rr, recLimit); rc != dns.RcodeSuccess {
				return rc, why
			}
		case dns.ClassANY:
			if h.Rrtype == dns.TypeANY {
				for t, set := range z.nodes[name] {
					if !apex || t != dns.TypeSOA && t != dns.TypeNS {
						z.put(name, t, &rrset{comments: set.comments})
					}
				}
			} else if !apex || h.Rrtype != dns.TypeSOA && h.Rrtype != dns.TypeNS {
				if set := z.get(name, h.Rrtype); set != nil {
					z.put(name, h.Rrtype, &rrset{comments: set.comments})
				}
			}
		case dns.ClassNONE:
			set := z.get(name, h.Rrtype)
			in := dns.Copy(rr)
			in.Header().Class = dns.ClassINET
			i := set.index(in)
			if i < 0 || h.Rrtype == dns.TypeSOA {
				continue
			}
			if apex && h.Rrtype == dns.TypeNS && len(set.servedRRs()) == 1 && !set.records[i].disabled {
				continue // the zone keeps its last apex NS
			}
			n := &rrset{ttl: set.ttl, comments: set.comments}
			n.records = append(append(n.records, set.records[:i]...), set.records[i+1:]...)
			z.put(name, h.Rrtype, n)
		}
	}
	return dns.RcodeSuccess, ""
}

// add adds one record (RFC 2136 section 3.4.2.2).
func (z *zone) add(name string, rr dns.RR, recLimit int) (int, string) {
	h := rr.Header()
	t := h.Rrtype
	if t == dns.TypeSOA {
		if name == z.origin && serialNewer(rr.(*dns.SOA).Serial, z.serial()) {
			old := z.get(name, t)
			z.put(name, t, &rrset{ttl: h.Ttl, records: []record{newRecord(rr, h.Ttl)}, comments: old.comments})
		}
		return dns.RcodeSuccess, ""
	}
	hasCNAME := z.get(name, dns.TypeCNAME).served()
	if t == dns.TypeCNAME {
		for other, set := range z.nodes[name] {
			if other != dns.TypeCNAME && !dnssecType(other) && set.served() {
				return dns.RcodeSuccess, "" // data at the name: ignored
			}
		}
		old := z.get(name, t)
		n := &rrset{ttl: h.Ttl, records: []record{newRecord(rr, h.Ttl)}}
		if old != nil {
			n.comments = old.comments
		}
		z.put(name, t, n)
		return dns.RcodeSuccess, ""
	}
	if hasCNAME && !dnssecType(t) {
		return dns.RcodeSuccess, "" // a CNAME at the name: ignored
	}
	old := z.get(name, t)
	n := &rrset{ttl: h.Ttl}
	if old != nil {
		// A TTL given with a record applies to its whole RRset, as BIND does.
		n = old.withTTL(h.Ttl)
		if i := old.index(rr); i >= 0 && !old.records[i].disabled {
			if old.ttl != h.Ttl {
				z.put(name, t, n)
			}
			return dns.RcodeSuccess, ""
		}
	}
	n.records = append(n.records, newRecord(rr, h.Ttl))
	if recLimit > 0 && len(n.records) > recLimit {
		return dns.RcodeServerFailure, "RRset " + h.Name + " " + dns.TypeToString[t] + " would hold more than max-records-per-type"
	}
	z.put(name, t, n)
	return dns.RcodeSuccess, ""
}

func dnssecType(t uint16) bool {
	switch t {
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeKEY:
		return true
	}
	return false
}

// serialNewer reports whether serial a is after b (RFC 1982).
func serialNewer(a, b uint32) bool { return a != b && a-b < 1<<31 }
