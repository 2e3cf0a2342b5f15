package dns

import (
	"fmt"
	"slices"
)

// ZoneDiff is what it takes to bring one zone on one target to the desired
// state, and what was deliberately left alone.
type ZoneDiff struct {
	Target  string `json:"target"`
	Zone    string `json:"zone"`
	Reverse bool   `json:"reverse"`
	// Serial is the SOA serial the diff was computed against.
	Serial uint32 `json:"serial"`
	// Changes in the order they must be sent: deletes, updates, creates
	// (a CNAME anneal owns is removed before data takes its name).
	Changes []RRsetChange `json:"changes"`
	// Conflicts are desired RRsets that collide with records anneal does
	// not own; they are reported and left.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Adopt lists foreign RRsets that already hold exactly what the site
	// declares: anneal takes ownership without writing anything.
	Adopt []RRsetKey `json:"adopt,omitempty"`
	// Owned counts the live RRsets anneal owns (the mass-delete base).
	Owned int `json:"owned"`
	// Foreign counts live RRsets anneal does not own and leaves alone.
	Foreign int `json:"foreign"`

	digest string // of the desired zone, when it was read (for sync marks)
}

// Conflict is a desired RRset that cannot be written without clobbering
// data anneal does not own.
type Conflict struct {
	Key     RRsetKey `json:"key"`
	Live    *RRset   `json:"live,omitempty"`
	Desired *RRset   `json:"desired"`
	Reason  string   `json:"reason"`
}

// Counts returns how many creates, updates and deletes the diff holds.
func (z *ZoneDiff) Counts() (creates, updates, deletes int) {
	for _, c := range z.Changes {
		switch c.Op {
		case OpCreate:
			creates++
		case OpUpdate:
			updates++
		case OpDelete:
			deletes++
		}
	}
	return
}

// Ownership says which live RRsets anneal owns in a zone.
type Ownership func(RRsetKey) bool

// DiffZone compares the desired RRsets of a zone with its live content.
//
// Ownership is by RRset. An owned RRset is anneal's to change or delete;
// a foreign one is never touched: if the site wants it with other data it
// is a conflict, if with the same data it is adopted. The zone's SOA and
// its apex NS are the server's unless the site declares apex NS.
func DiffZone(target string, desired *DesiredZone, live *ZoneContent, owned Ownership) ZoneDiff {
	zd := ZoneDiff{Target: target, Zone: desired.Zone, Reverse: desired.Reverse, Serial: live.Serial}
	want := make(map[RRsetKey]*RRset, len(desired.RRsets))
	for i := range desired.RRsets {
		want[desired.RRsets[i].Key()] = &desired.RRsets[i]
	}
	have := make(map[RRsetKey]*RRset, len(live.RRsets))
	cnameAt := map[string]*RRset{}
	dataAt := map[string][]RRsetKey{}
	for i := range live.RRsets {
		s := &live.RRsets[i]
		have[s.Key()] = s
		if s.Type == TypeCNAME {
			cnameAt[s.Name] = s
		} else {
			dataAt[s.Name] = append(dataAt[s.Name], s.Key())
		}
	}
	isOwned := func(k RRsetKey) bool { return owned != nil && owned(k) || live.Marked[k] }
	var deletes, updates, creates []RRsetChange
	for i := range live.RRsets {
		s := &live.RRsets[i]
		k := s.Key()
		if k.Type == TypeSOA || k.Type == TypeNS && k.Name == desired.Zone && want[k] == nil {
			continue
		}
		if !isOwned(k) {
			if want[k] == nil {
				zd.Foreign++
			}
			continue
		}
		zd.Owned++
		if want[k] == nil {
			old := *s
			deletes = append(deletes, RRsetChange{Op: OpDelete, Old: &old})
		}
	}
	for _, w := range desired.RRsets {
		k := w.Key()
		live := have[k]
		switch {
		case live == nil:
			if reason := blockedName(k, cnameAt, dataAt, isOwned, want); reason != "" {
				zd.Conflicts = append(zd.Conflicts, Conflict{Key: k, Desired: &w, Reason: reason})
				continue
			}
			creates = append(creates, RRsetChange{Op: OpCreate, New: &w})
		case live.Equal(&w):
			if !isOwned(k) {
				zd.Adopt = append(zd.Adopt, k)
			}
		case isOwned(k):
			old := *live
			updates = append(updates, RRsetChange{Op: OpUpdate, Old: &old, New: &w})
		default:
			old := *live
			zd.Conflicts = append(zd.Conflicts, Conflict{Key: k, Live: &old, Desired: &w,
				Reason: "a record anneal did not create holds this name and type with other data"})
		}
	}
	zd.Changes = slices.Concat(deletes, updates, creates)
	return zd
}

// blockedName finds why a new RRset cannot be created: RFC 1034 forbids a
// CNAME beside other data, and servers silently ignore such an insert.
func blockedName(k RRsetKey, cnameAt map[string]*RRset, dataAt map[string][]RRsetKey, owned func(RRsetKey) bool, want map[RRsetKey]*RRset) string {
	// Live data that stays: foreign, or anneal's and still desired.
	stays := func(x RRsetKey) bool { return !owned(x) || want[x] != nil }
	if c := cnameAt[k.Name]; c != nil && k.Type != TypeCNAME && stays(c.Key()) {
		if owned(c.Key()) {
			return fmt.Sprintf("the site also declares a CNAME (%s) at this name", c.Data[0])
		}
		return fmt.Sprintf("a CNAME (%s) anneal does not own sits at this name", c.Data[0])
	}
	if k.Type == TypeCNAME && slices.ContainsFunc(dataAt[k.Name], stays) {
		return "other records sit at this name and stay; a CNAME must stand alone (RFC 1034)"
	}
	return ""
}
