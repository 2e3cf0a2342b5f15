package labdns

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Comment is a PowerDNS RRset comment: metadata the API keeps with an
// RRset and DNS never shows.
type Comment struct {
	Content    string `json:"content"`
	Account    string `json:"account"`
	ModifiedAt int64  `json:"modified_at"`
}

// record is one record of an RRset. Its header holds the canonical owner,
// class IN, the type and the RRset's TTL.
type record struct {
	rr       dns.RR
	disabled bool // PowerDNS: kept, not served
}

// rrset is the records of one name and type, with the PowerDNS comments
// on them. A zone never modifies an rrset it holds: a change stores a new
// one, so that a transaction can put the old one back and readers can
// keep a pointer after the lock is released.
type rrset struct {
	ttl      uint32
	records  []record
	comments []Comment
}

// served reports whether the RRset has a record DNS answers with.
func (s *rrset) served() bool {
	return s != nil && slices.ContainsFunc(s.records, func(r record) bool { return !r.disabled })
}

// servedRRs returns copies of the served records.
func (s *rrset) servedRRs() []dns.RR {
	if s == nil {
		return nil
	}
	out := make([]dns.RR, 0, len(s.records))
	for _, r := range s.records {
		if !r.disabled {
			out = append(out, dns.Copy(r.rr))
		}
	}
	return out
}

// withTTL returns a copy of the RRset whose records carry ttl.
func (s *rrset) withTTL(ttl uint32) *rrset {
	n := &rrset{ttl: ttl, records: make([]record, len(s.records)), comments: s.comments}
	for i, r := range s.records {
		if r.rr.Header().Ttl != ttl {
			r.rr = dns.Copy(r.rr)
			r.rr.Header().Ttl = ttl
		}
		n.records[i] = r
	}
	return n
}

// index returns the position of a record equal to rr (TTL and the case
// of names aside; rr's class must be IN), or -1.
func (s *rrset) index(rr dns.RR) int {
	if s == nil {
		return -1
	}
	return slices.IndexFunc(s.records, func(r record) bool { return dns.IsDuplicate(r.rr, rr) })
}

// newRecord normalizes rr for storage: canonical owner, class IN, ttl.
func newRecord(rr dns.RR, ttl uint32) record {
	rr = dns.Copy(rr)
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	h.Class = dns.ClassINET
	h.Ttl = ttl
	return record{rr: rr}
}

type setKey struct {
	name string
	typ  uint16
}

// zone is one zone's data. mu guards everything below it.
type zone struct {
	origin string // canonical apex, fully qualified
	file   string // its zone file; "" keeps it in memory

	mu    sync.RWMutex
	nodes map[string]map[uint16]*rrset // owner -> type -> RRset
	// exists counts, for every name in the zone, the served names at or
	// under it: a name exists (RFC 4592) when its count is over 0, as
	// an empty non-terminal does.
	exists map[string]int
	// undo holds, during a transaction, each RRset it replaced, first
	// value first.
	undo []undoEntry
	inTx bool
}

type undoEntry struct {
	key setKey
	old *rrset
}

func newZone(origin, file string) *zone {
	return &zone{origin: origin, file: file, nodes: map[string]map[uint16]*rrset{}, exists: map[string]int{}}
}

// get returns the RRset of name and type, or nil.
func (z *zone) get(name string, typ uint16) *rrset { return z.nodes[name][typ] }

// nodeServed reports whether name owns a served record.
func (z *zone) nodeServed(name string) bool {
	for _, s := range z.nodes[name] {
		if s.served() {
			return true
		}
	}
	return false
}

// put stores s as the RRset of name and type (nil, or no records and no
// comments: none), in the transaction's undo log when one is open.
func (z *zone) put(name string, typ uint16, s *rrset) {
	if s != nil && len(s.records) == 0 && len(s.comments) == 0 {
		s = nil
	}
	old := z.nodes[name][typ]
	if old == s {
		return
	}
	if z.inTx {
		z.undo = append(z.undo, undoEntry{setKey{name, typ}, old})
	}
	before := z.nodeServed(name)
	if s == nil {
		delete(z.nodes[name], typ)
		if len(z.nodes[name]) == 0 {
			delete(z.nodes, name)
		}
	} else {
		if z.nodes[name] == nil {
			z.nodes[name] = map[uint16]*rrset{}
		}
		z.nodes[name][typ] = s
	}
	if after := z.nodeServed(name); after != before {
		d := 1
		if !after {
			d = -1
		}
		for n := name; ; n = parent(n) {
			if z.exists[n] += d; z.exists[n] == 0 {
				delete(z.exists, n)
			}
			if n == z.origin || n == "." {
				break
			}
		}
	}
}

// begin opens a transaction: every put until commit or rollback can be
// undone.
func (z *zone) begin() {
	z.inTx = true
	z.undo = z.undo[:0]
}

// rollback undoes the transaction's puts, last first.
func (z *zone) rollback() {
	z.inTx = false
	for i := len(z.undo) - 1; i >= 0; i-- {
		u := z.undo[i]
		z.put(u.key.name, u.key.typ, u.old)
	}
	z.undo = z.undo[:0]
}

// changed reports whether the open transaction has changed anything.
func (z *zone) changed() bool { return len(z.undo) > 0 }

// commit closes the transaction.
func (z *zone) commit() {
	z.inTx = false
	z.undo = z.undo[:0]
}

// soa returns the zone's SOA record.
func (z *zone) soa() *dns.SOA {
	s := z.get(z.origin, dns.TypeSOA)
	return s.records[0].rr.(*dns.SOA)
}

// serial returns the zone's SOA serial.
func (z *zone) serial() uint32 { return z.soa().Serial }

// bumpSerial adds one to the SOA serial (RFC 1982: it wraps).
func (z *zone) bumpSerial() {
	old := z.get(z.origin, dns.TypeSOA)
	soa := dns.Copy(old.records[0].rr).(*dns.SOA)
	soa.Serial++
	z.put(z.origin, dns.TypeSOA, &rrset{ttl: old.ttl, records: []record{{rr: soa}}, comments: old.comments})
}

// negativeSOA is the SOA for the authority section of a negative answer:
// its TTL is the lesser of its own and its minimum (RFC 2308 section 3).
func (z *zone) negativeSOA() dns.RR {
	soa := dns.Copy(z.soa()).(*dns.SOA)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

// keys returns the zone's RRset keys in a stable order: the apex first,
// its SOA before anything, then names in DNS canonical order (RFC 4034
// section 6.1), types by number.
func (z *zone) keys() []setKey {
	names := make([]string, 0, len(z.nodes))
	for n := range z.nodes {
		names = append(names, n)
	}
	slices.SortFunc(names, canonicalCompare)
	var out []setKey
	for _, n := range names {
		types := make([]uint16, 0, len(z.nodes[n]))
		for t := range z.nodes[n] {
			types = append(types, t)
		}
		slices.SortFunc(types, func(a, b uint16) int {
			switch {
			case a == b:
				return 0
			case a == dns.TypeSOA:
				return -1
			case b == dns.TypeSOA:
				return 1
			}
			return cmp.Compare(a, b)
		})
		for _, t := range types {
			out = append(out, setKey{n, t})
		}
	}
	return out
}

// canonicalCompare orders names as RFC 4034 section 6.1 does: label by
// label from the root, so that the apex comes first and a name right
// before its children.
func canonicalCompare(a, b string) int {
	la, lb := dns.SplitDomainName(a), dns.SplitDomainName(b)
	for i, j := len(la)-1, len(lb)-1; i >= 0 && j >= 0; i, j = i-1, j-1 {
		if c := strings.Compare(la[i], lb[j]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(la), len(lb))
}

// transfer returns every served record, the SOA first and last, as AXFR
// sends them.
func (z *zone) transfer() []dns.RR {
	soa := dns.Copy(z.soa())
	out := []dns.RR{soa}
	for _, k := range z.keys() {
		if k.typ == dns.TypeSOA && k.name == z.origin {
			continue
		}
		out = append(out, z.get(k.name, k.typ).servedRRs()...)
	}
	return append(out, dns.Copy(soa))
}

// parent returns the name one label up ("." for a top-level name).
func parent(name string) string {
	if name == "." {
		return "."
	}
	next, end := dns.NextLabel(name, 0)
	if end {
		return "."
	}
	return name[next:]
}

// nowComment stamps a comment the API is given without a time.
func nowComment(c Comment) Comment {
	if c.ModifiedAt == 0 {
		c.ModifiedAt = time.Now().Unix()
	}
	return c
}
