package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
	bbolt "go.etcd.io/bbolt"
)

// The events bucket holds anneal's history (reconcile/events): each event
// under its Seq, big-endian (the bucket's NextSequence, so never reused),
// as JSON. Only the oldest are ever deleted (the retention), so the keys
// are contiguous and the bucket's length is last - first + 1.
//
// The bucket is optional: Open creates it in a file that lacks it (one
// written before events existed) without a new format version, since an
// added bucket is all that changed and an older anneal ignores it; a
// read-only open of such a file (CheckFile, a backup's check) reads no
// events.
var bucketEvents = []byte("events")

// optionalBuckets are created by Open when missing but not required of a
// state file (CheckFile).
var optionalBuckets = [][]byte{bucketEvents}

// sinceSlack is how far before a query's Since a scan goes on: events are
// stamped before they are stored, so concurrent emitters may store them a
// little out of time order.
const sinceSlack = time.Minute

func eventKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// SetEventRetention sets the retention of events (zero fields: those of
// events.DefaultRetention). It applies from the next append.
func (s *Store) SetEventRetention(r events.Retention) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	s.evRetention = r
}

func (s *Store) eventRetention() events.Retention {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	return s.evRetention.OrDefault()
}

// AppendEvents implements events.Store: the events are numbered and stored
// in one transaction, and the oldest beyond the retention deleted.
// Concurrent appends (a rollout's nodes) share a transaction (bbolt's
// Batch): one disk sync for them all.
func (s *Store) AppendEvents(ctx context.Context, evs []events.Event) ([]events.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ret := s.eventRetention()
	out := make([]events.Event, len(evs))
	err := s.batch(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		for i, e := range evs {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			v, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode event: %w", err)
			}
			if err := b.Put(eventKey(seq), v); err != nil {
				return err
			}
			out[i] = e
		}
		return s.trimEvents(b, ret, time.Now())
	})
	if err != nil {
		return nil, fmt.Errorf("store events: %w", err)
	}
	return out, nil
}

// trimEvents deletes the oldest events beyond r at now.
func (s *Store) trimEvents(b *bbolt.Bucket, r events.Retention, now time.Time) error {
	c := b.Cursor()
	lastK, _ := c.Last()
	if lastK == nil {
		return nil
	}
	if len(lastK) != 8 {
		return corrupt(s.path, fmt.Errorf("event key %x is not a sequence number", lastK))
	}
	last := binary.BigEndian.Uint64(lastK)
	cut := now.Add(-r.MaxAge)
	for k, v := c.First(); k != nil; k, v = c.First() {
		if len(k) != 8 {
			return corrupt(s.path, fmt.Errorf("event key %x is not a sequence number", k))
		}
		if n := last - binary.BigEndian.Uint64(k) + 1; int64(n) <= int64(r.MaxEvents) {
			var e struct {
				Time time.Time `json:"time"`
			}
			if err := s.decode("event "+fmt.Sprint(binary.BigEndian.Uint64(k)), v, &e); err != nil {
				return err
			}
			if !e.Time.Before(cut) {
				return nil
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Events implements events.Store: the newest f.Limited() matching events,
// oldest first, read from the newest backwards (a small limit reads little).
func (s *Store) Events(ctx context.Context, f events.Filter) ([]events.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit := f.Limited()
	var out []events.Event
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if b == nil {
			return nil // a file from before events, opened read-only
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			if len(k) != 8 {
				return corrupt(s.path, fmt.Errorf("event key %x is not a sequence number", k))
			}
			seq := binary.BigEndian.Uint64(k)
			if f.After > 0 && seq <= f.After {
				break
			}
			var e events.Event
			if err := s.decode(fmt.Sprintf("event %d", seq), v, &e); err != nil {
				return err
			}
			e.Seq = seq
			if !f.Since.IsZero() && e.Time.Before(f.Since.Add(-sinceSlack)) {
				break
			}
			if f.Match(e) {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	slices.Reverse(out)
	return out, nil
}

var _ events.Store = (*Store)(nil)
