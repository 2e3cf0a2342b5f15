package bolt

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/anneal-dev/anneal/reconcile/events"
)

func seqs(evs []events.Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// TestEventsStore: events are numbered in order across reopens, queried
// newest-limited and oldest first with every filter, and the same events
// come back as the in-memory store returns them.
func TestEventsStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var in []events.Event
	for i := range 10 {
		in = append(in, events.Event{Time: t0.Add(time.Duration(i) * time.Minute), Kind: []events.Kind{events.RevisionSeen, events.NodeStep}[i%2],
			Revision: fmt.Sprintf("rev%d", i/4), Node: map[bool]string{true: "n1"}[i%2 == 1], Message: fmt.Sprint("event ", i),
			Counts: map[string]int{"creates": i}})
	}
	got, err := s.AppendEvents(ctx, in[:6])
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(seqs(got), want) {
		t.Fatalf("seqs %v, want %v", seqs(got), want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	got, err = s.AppendEvents(ctx, in[6:])
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{7, 8, 9, 10}; !slices.Equal(seqs(got), want) {
		t.Fatalf("after a reopen: seqs %v, want %v", seqs(got), want)
	}
	mem := &events.Memory{}
	if _, err := mem.AppendEvents(ctx, in); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    events.Filter
		want []uint64
	}{
		{"all", events.Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"limit keeps the newest", events.Filter{Limit: 3}, []uint64{8, 9, 10}},
		{"node", events.Filter{Node: "n1"}, []uint64{2, 4, 6, 8, 10}},
		{"node, limited", events.Filter{Node: "n1", Limit: 2}, []uint64{8, 10}},
		{"kind", events.Filter{Kinds: []events.Kind{events.RevisionSeen}}, []uint64{1, 3, 5, 7, 9}},
		{"revision prefix", events.Filter{Revision: "rev1"}, []uint64{5, 6, 7, 8}},
		{"after", events.Filter{After: 7}, []uint64{8, 9, 10}},
		{"since", events.Filter{Since: t0.Add(7 * time.Minute)}, []uint64{8, 9, 10}},
		{"nothing matches", events.Filter{Node: "n2"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Events(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tc.want) {
				t.Fatalf("seqs %v, want %v", seqs(got), tc.want)
			}
			want, _ := mem.Events(ctx, tc.f)
			for i := range got {
				if got[i].Message != want[i].Message || !got[i].Time.Equal(want[i].Time) || got[i].Counts["creates"] != want[i].Counts["creates"] {
					t.Errorf("event %d: %+v, the memory store has %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// TestEventsRetention: an append drops the oldest events beyond the
// retention's count and those older than its age, and numbering goes on.
func TestEventsRetention(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	for _, tc := range []struct {
		name string
		ret  events.Retention
		ages []time.Duration // of the events appended, in order, one append each
		want []uint64
	}{
		{"count", events.Retention{MaxEvents: 3}, []time.Duration{5, 4, 3, 2, 1}, []uint64{3, 4, 5}},
		{"age", events.Retention{MaxAge: 3 * time.Hour}, []time.Duration{5, 4, 3 - 1, 2, 1}, []uint64{3, 4, 5}},
		{"both", events.Retention{MaxEvents: 2, MaxAge: 3 * time.Hour}, []time.Duration{5, 4, 2, 1, 1}, []uint64{4, 5}},
		{"default keeps these", events.Retention{}, []time.Duration{5, 4, 3, 2, 1}, []uint64{1, 2, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, filepath.Join(t.TempDir(), "state.db"))
			defer s.Close()
			s.SetEventRetention(tc.ret)
			for _, h := range tc.ages {
				_, err := s.AppendEvents(ctx, []events.Event{{Time: now.Add(-h * time.Hour), Kind: events.Resumed, Message: "m"}})
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Events(ctx, events.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tc.want) {
				t.Fatalf("kept %v, want %v", seqs(got), tc.want)
			}
		})
	}
}

// TestEventsOldFile: a file from before events (no events bucket) is read
// by a read-only check as it is, and Open adds the bucket without a new
// format version.
func TestEventsOldFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	rawFile(t, path, false, stamped(fmt.Sprint(FormatVersion)))
	info, err := CheckFile(path)
	if err != nil {
		t.Fatalf("CheckFile of a file without events: %v", err)
	}
	if info.FormatVersion != FormatVersion {
		t.Fatalf("version %d", info.FormatVersion)
	}
	s := open(t, path)
	defer s.Close()
	if s.Migrated() != nil {
		t.Fatalf("migrated %v: the events bucket needs no new version", s.Migrated())
	}
	if evs, err := s.Events(ctx, events.Filter{}); err != nil || len(evs) != 0 {
		t.Fatalf("events %v, %v", evs, err)
	}
	if _, err := s.AppendEvents(ctx, []events.Event{{Kind: events.Suspended, Message: "m", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.Events(ctx, events.Filter{}); err != nil || len(evs) != 1 {
		t.Fatalf("events %v, %v", evs, err)
	}
}

// TestEventsCorruptValue: an event that does not decode is a corruption
// error, on a query and on an append's trim, never a panic.
func TestEventsCorruptValue(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	if _, err := s.AppendEvents(ctx, []events.Event{{Kind: events.Suspended, Message: "m", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketEvents).Put(eventKey(1), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = open(t, path)
	defer s.Close()
	_, err = s.Events(ctx, events.Filter{})
	checkCorrupt(t, path, err)
	_, err = s.AppendEvents(ctx, []events.Event{{Kind: events.Resumed, Message: "m", Time: time.Now()}})
	checkCorrupt(t, path, err)
}

// TestEventsConcurrentAppends: appends from many goroutines (a rollout's
// nodes) each get their own numbers, none lost or repeated.
func TestEventsConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	const writers, each = 8, 10
	done := make(chan []uint64, writers)
	for w := range writers {
		go func() {
			var got []uint64
			for i := range each {
				out, err := s.AppendEvents(ctx, []events.Event{{Kind: events.NodeStep, Node: fmt.Sprint("n", w), Step: fmt.Sprint(i), Message: "m", Time: time.Now()}})
				if err != nil || len(out) != 1 {
					t.Errorf("append: %v %v", out, err)
					break
				}
				got = append(got, out[0].Seq)
			}
			done <- got
		}()
	}
	seen := map[uint64]bool{}
	for range writers {
		for _, q := range <-done {
			if seen[q] {
				t.Fatalf("seq %d given twice", q)
			}
			seen[q] = true
		}
	}
	all, err := s.Events(ctx, events.Filter{})
	if err != nil || len(all) != writers*each {
		t.Fatalf("%d events stored, want %d (%v)", len(all), writers*each, err)
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) || !seen[e.Seq] {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
}
