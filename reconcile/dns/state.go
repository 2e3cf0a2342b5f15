package dns

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Inventory remembers which RRsets anneal wrote on each target and zone:
// ownership is an inventory (stale = owned − desired). A record whose
// delete failed stays owned and is retried on the next pass.
type Inventory interface {
	OwnedRRsets(ctx context.Context, target, zone string) (map[RRsetKey]bool, error)
	RecordOwned(ctx context.Context, target, zone string, add, remove []RRsetKey) error
}

// ZoneCache keeps the last content anneal saw of a zone, so a zone whose
// SOA serial has not moved is not transferred again.
type ZoneCache interface {
	// CachedZone returns nil and no error when nothing is cached.
	CachedZone(ctx context.Context, target, zone string) (*ZoneContent, error)
	CacheZone(ctx context.Context, target string, z *ZoneContent) error
}

// SyncMark records that a zone held exactly the desired state: at this
// SOA serial, for desired content with this digest. Marks are set for all
// of a target's zones at once; while every one of them holds, the target's
// diff is empty and the planner reads none of its zones. The mark stored
// under the empty zone name carries the target's consistency findings.
type SyncMark struct {
	Serial   uint32    `json:"serial"`
	Desired  string    `json:"desired"`
	Owned    int       `json:"owned"`
	Foreign  int       `json:"foreign"`
	Findings []Finding `json:"findings,omitempty"`
}

// SyncMarks stores one SyncMark per target and zone.
type SyncMarks interface {
	// SyncMark returns nil and no error when none is stored.
	SyncMark(ctx context.Context, target, zone string) (*SyncMark, error)
	SetSyncMark(ctx context.Context, target, zone string, m *SyncMark) error
}

// Journal records an apply in flight, so an interrupted one is reported
// and completed by the next pass (the next plan is computed from the live
// state, so it holds exactly what is left).
type Journal interface {
	// InFlight returns the unfinished apply, or nil.
	InFlight(ctx context.Context) (*ApplyRecord, error)
	BeginApply(ctx context.Context, rec *ApplyRecord) error
	// ZoneDone marks one target's zone as applied and verified.
	ZoneDone(ctx context.Context, target, zone string) error
	EndApply(ctx context.Context) error
}

// State is what DNS planning and applying keep between runs.
type State interface {
	Inventory
	ZoneCache
	SyncMarks
	Journal
}

// ApplyRecord is the journal entry of an apply.
type ApplyRecord struct {
	Started  time.Time `json:"started"`
	Revision string    `json:"revision"`
	// Pending zones as "target/zone" with their change counts.
	Pending map[string]int `json:"pending"`
}

// Journal transitions, the same in every state store: each takes the
// journal as stored (nil: none) and returns what to store (nil: delete).

// BeginJournal merges a new apply into an unfinished earlier record: its
// zones stay pending until done.
func BeginJournal(cur, rec *ApplyRecord) *ApplyRecord {
	if cur == nil {
		return rec
	}
	if cur.Pending == nil {
		cur.Pending = map[string]int{}
	}
	for k, v := range rec.Pending {
		cur.Pending[k] = v
	}
	cur.Revision = rec.Revision
	return cur
}

// ZoneDoneJournal marks target's zone applied.
func ZoneDoneJournal(cur *ApplyRecord, target, zone string) *ApplyRecord {
	if cur != nil {
		delete(cur.Pending, target+"/"+zone)
	}
	return cur
}

// EndJournal clears the journal when nothing is pending.
func EndJournal(cur *ApplyRecord) *ApplyRecord {
	if cur != nil && len(cur.Pending) > 0 {
		return cur
	}
	return nil
}

// EncodeZone writes a zone snapshot compactly: a header line, then one
// line per record: name, type, TTL, owned-mark, RDATA, tab-separated.
func EncodeZone(z *ZoneContent) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "zone\t%s\t%d\n", z.Zone, z.Serial)
	for _, s := range z.RRsets {
		mark := "-"
		if z.Marked[s.Key()] {
			mark = "m"
		}
		for _, d := range s.Data {
			b.WriteString(s.Name)
			b.WriteByte('\t')
			b.WriteString(string(s.Type))
			b.WriteByte('\t')
			b.WriteString(strconv.FormatUint(uint64(s.TTL), 10))
			b.WriteByte('\t')
			b.WriteString(mark)
			b.WriteByte('\t')
			b.WriteString(d)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// DecodeZone reads what EncodeZone wrote.
func DecodeZone(data []byte) (*ZoneContent, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	if !sc.Scan() {
		return nil, fmt.Errorf("zone snapshot: empty")
	}
	head := strings.Split(sc.Text(), "\t")
	if len(head) != 3 || head[0] != "zone" {
		return nil, fmt.Errorf("zone snapshot: bad header %q", sc.Text())
	}
	serial, err := strconv.ParseUint(head[2], 10, 32)
	if err != nil {
		return nil, fmt.Errorf("zone snapshot: serial: %w", err)
	}
	z := &ZoneContent{Zone: head[1], Serial: uint32(serial)}
	var cur *RRset
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("zone snapshot: bad line %q", sc.Text())
		}
		ttl, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("zone snapshot: ttl: %w", err)
		}
		if cur == nil || cur.Name != f[0] || string(cur.Type) != f[1] {
			z.RRsets = append(z.RRsets, RRset{Name: f[0], Type: RRType(f[1]), TTL: uint32(ttl)})
			cur = &z.RRsets[len(z.RRsets)-1]
			if f[3] == "m" {
				if z.Marked == nil {
					z.Marked = map[RRsetKey]bool{}
				}
				z.Marked[cur.Key()] = true
			}
		}
		cur.Data = append(cur.Data, f[4])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("zone snapshot: %w", err)
	}
	return z, nil
}
