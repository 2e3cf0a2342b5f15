// Package dns is anneal's DNS engine: it compiles the records a site
// declares (Compile, CompileWith), observes DNS targets and diffs them with
// the desired zones (Planner, DiffZone), applies the plan (Applier), and
// checks forward/reverse consistency. Its State is what it keeps between
// runs. Package reconcile drives it; dns imports nothing of reconcile's.
package dns

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"
)

// RRType is a DNS record type by its mnemonic (A, AAAA, PTR, ...).
type RRType string

// Record types anneal manages.
const (
	TypeA     RRType = "A"
	TypeAAAA  RRType = "AAAA"
	TypePTR   RRType = "PTR"
	TypeCNAME RRType = "CNAME"
	TypeTXT   RRType = "TXT"
	TypeMX    RRType = "MX"
	TypeSRV   RRType = "SRV"
	TypeNS    RRType = "NS"
	TypeCAA   RRType = "CAA"
	TypeSOA   RRType = "SOA"
)

// RRsetKey identifies an RRset: a name and a type. Names are canonical:
// lower case, no trailing dot.
type RRsetKey struct {
	Name string `json:"name"`
	Type RRType `json:"type"`
}

func (k RRsetKey) String() string { return k.Name + " " + string(k.Type) }

// compareRRsets orders RRsets by key: name, then type.
func compareRRsets(a, b RRset) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(string(a.Type), string(b.Type))
}

// RRset is every record of one name and type. Data holds each record's
// RDATA in canonical presentation form (see CanonicalRData), sorted and
// without duplicates, so that two RRsets compare with Equal.
type RRset struct {
	Name string   `json:"name"`
	Type RRType   `json:"type"`
	TTL  uint32   `json:"ttl"`
	Data []string `json:"data"`
}

// Key returns the RRset's name and type.
func (r *RRset) Key() RRsetKey { return RRsetKey{r.Name, r.Type} }

// Equal reports whether two RRsets hold the same TTL and records.
func (r *RRset) Equal(o *RRset) bool {
	return r.Name == o.Name && r.Type == o.Type && r.TTL == o.TTL && slices.Equal(r.Data, o.Data)
}

// Normalize sorts and de-duplicates Data.
func (r *RRset) Normalize() {
	slices.Sort(r.Data)
	r.Data = slices.Compact(r.Data)
}

// RRs renders the RRset as miekg/dns records, for providers that speak
// the wire protocol.
func (r *RRset) RRs() ([]mdns.RR, error) {
	out := make([]mdns.RR, 0, len(r.Data))
	for _, d := range r.Data {
		rr, err := mdns.NewRR(fmt.Sprintf("%s. %d IN %s %s", r.Name, r.TTL, r.Type, d))
		if err != nil {
			return nil, fmt.Errorf("render %s %s %q: %w", r.Name, r.Type, d, err)
		}
		out = append(out, rr)
	}
	return out, nil
}

// CanonicalRData returns the RDATA of rr in the one presentation form
// anneal compares: miekg/dns's, with domain names in RDATA lower-cased.
func CanonicalRData(rr mdns.RR) string {
	rr = mdns.Copy(rr)
	switch v := rr.(type) {
	case *mdns.CNAME:
		v.Target = strings.ToLower(v.Target)
	case *mdns.PTR:
		v.Ptr = strings.ToLower(v.Ptr)
	case *mdns.NS:
		v.Ns = strings.ToLower(v.Ns)
	case *mdns.MX:
		v.Mx = strings.ToLower(v.Mx)
	case *mdns.SRV:
		v.Target = strings.ToLower(v.Target)
	}
	full := rr.String()
	hdr := rr.Header().String()
	return strings.TrimPrefix(full, hdr)
}

// RRsetsFromRRs groups wire records into sorted, normalized RRsets. SOA
// records are dropped: the server owns its SOA.
func RRsetsFromRRs(rrs []mdns.RR) []RRset {
	byKey := map[RRsetKey]*RRset{}
	for _, rr := range rrs {
		h := rr.Header()
		t := RRType(mdns.TypeToString[h.Rrtype])
		if t == TypeSOA || h.Rrtype == mdns.TypeRRSIG || h.Rrtype == mdns.TypeNSEC || h.Rrtype == mdns.TypeNSEC3 || h.Rrtype == mdns.TypeTSIG {
			continue
		}
		k := RRsetKey{Name: canonicalName(h.Name), Type: t}
		set := byKey[k]
		if set == nil {
			set = &RRset{Name: k.Name, Type: t, TTL: h.Ttl}
			byKey[k] = set
		}
		set.TTL = min(set.TTL, h.Ttl)
		set.Data = append(set.Data, CanonicalRData(rr))
	}
	out := make([]RRset, 0, len(byKey))
	for _, s := range byKey {
		s.Normalize()
		out = append(out, *s)
	}
	slices.SortFunc(out, compareRRsets)
	return out
}

func canonicalName(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// ZoneContent is a zone as a DNS target holds it.
type ZoneContent struct {
	Zone   string `json:"zone"`
	Serial uint32 `json:"serial"`
	// RRsets sorted by key, without the SOA.
	RRsets []RRset `json:"rrsets"`
	// Marked lists RRsets the target itself marks as anneal's (PowerDNS
	// RRset comments); nil when the target keeps no such mark.
	Marked map[RRsetKey]bool `json:"-"`

	// desired is set when RRsets are a desired zone's (a zone in sync),
	// which keeps what consistency checks parse of them.
	desired *DesiredZone
}

// ChangeOp is what a change does to an RRset.
type ChangeOp string

// Change operations.
const (
	OpCreate ChangeOp = "create"
	OpUpdate ChangeOp = "update"
	OpDelete ChangeOp = "delete"
)

// RRsetChange is one change to one RRset, with what the plan saw, so that
// the target can refuse it when the zone changed in between (RFC 2136
// prerequisites; compare-and-swap).
type RRsetChange struct {
	Op ChangeOp `json:"op"`
	// Old is the RRset the plan observed; nil for a create.
	Old *RRset `json:"old,omitempty"`
	// New is the desired RRset; nil for a delete.
	New *RRset `json:"new,omitempty"`
}

// Key returns the RRset the change is about.
func (c *RRsetChange) Key() RRsetKey {
	if c.New != nil {
		return c.New.Key()
	}
	return c.Old.Key()
}

// Target is a DNS server anneal writes zones to. Implementations live
// in providers/dns; the engine only needs these verbs.
type Target interface {
	// Name is the target's name in the site (for messages and state).
	Name() string
	// Serial returns the zone's SOA serial with one query.
	Serial(ctx context.Context, zone string) (uint32, error)
	// ReadZone reads every record of the zone.
	ReadZone(ctx context.Context, zone string) (*ZoneContent, error)
	// Apply writes changes to one zone, in order, packed into as few
	// transactions as the protocol allows, each refusing to apply if the
	// zone no longer holds what the change saw. It returns how many leading
	// changes were committed; on a refused transaction the error wraps a
	// *TargetError of class ClassConflict.
	Apply(ctx context.Context, zone string, changes []RRsetChange) (applied int, err error)
}

// RRsetLooker is a Target that can ask the server itself for one RRset
// with one DNS query. The applier reads a few changes back through it
// instead of transferring the whole zone; any doubt sends it back to
// ReadZone.
type RRsetLooker interface {
	// LookupRRset returns the RRset the server answers for k (nil: none).
	// sure is false when the answer cannot be taken as the zone's own
	// content: an error, a truncated or non-authoritative answer, a
	// referral, or no DNS address to ask.
	LookupRRset(ctx context.Context, zone string, k RRsetKey) (set *RRset, sure bool)
}

// AnswerRRset is k's RRset in r, the answer to a query for k: only records
// of k's own name and type count (not a CNAME it was answered with, nor
// the records a CNAME leads to). sure is false unless r is authoritative
// and final (NOERROR or NXDOMAIN).
func AnswerRRset(r *mdns.Msg, k RRsetKey) (set *RRset, sure bool) {
	qtype, known := mdns.StringToType[string(k.Type)]
	if r == nil || !known || !r.Authoritative || r.Truncated || r.Rcode != mdns.RcodeSuccess && r.Rcode != mdns.RcodeNameError {
		return nil, false
	}
	var rrs []mdns.RR
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && canonicalName(h.Name) == k.Name {
			rrs = append(rrs, rr)
		}
	}
	sets := RRsetsFromRRs(rrs)
	if len(sets) == 0 {
		return nil, true
	}
	return &sets[0], true
}

// LookupQuery is the query LookupRRset sends for k: no recursion.
func LookupQuery(k RRsetKey) (*mdns.Msg, bool) {
	qtype, known := mdns.StringToType[string(k.Type)]
	if !known {
		return nil, false
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(k.Name), qtype)
	m.RecursionDesired = false
	return m, true
}

// WriteLimiter is implemented by targets that can take only so many zone
// writes at once (PowerDNS on sqlite: one); the applier honours it.
type WriteLimiter interface {
	ConcurrentWrites() int
}

// ErrorClass says what the reconcile loop should do about an error.
type ErrorClass int

// Error classes.
const (
	// ClassPermanent: retrying will not help (bad key, zone not served).
	ClassPermanent ErrorClass = iota
	// ClassTransient: back off and retry (timeout, refused connection, SERVFAIL).
	ClassTransient
	// ClassConflict: the live data changed since the plan; re-plan.
	ClassConflict
)

func (c ErrorClass) String() string {
	return [...]string{"permanent", "transient", "conflict"}[c]
}

// TargetError is a failure talking to a DNS target, naming it.
type TargetError struct {
	Target string
	Zone   string
	Op     string // read, serial, apply
	Class  ErrorClass
	Err    error
}

func (e *TargetError) Error() string {
	zone := ""
	if e.Zone != "" {
		zone = " zone " + e.Zone
	}
	return fmt.Sprintf("dns target %s:%s %s: %v", e.Target, zone, e.Op, e.Err)
}

func (e *TargetError) Unwrap() error { return e.Err }

// ClassOf returns the class of an error (permanent when unclassified).
func ClassOf(err error) ErrorClass {
	var te *TargetError
	if errors.As(err, &te) {
		return te.Class
	}
	return ClassPermanent
}
