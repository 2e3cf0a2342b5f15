package etcd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Events live under events/ keyed by their Seq in 20 decimal digits (so
// the keys sort by number); eventseq holds the last Seq given. An append
// reads eventseq and writes it with the events in one transaction that
// commits only if eventseq did not change (rmw): the numbers have no gaps
// and are never reused. Only the oldest are ever deleted (the retention).

// sinceSlack is how far before a query's Since a scan goes on: events are
// stamped before they are stored, so concurrent emitters may store them a
// little out of time order.
const sinceSlack = time.Minute

// eventPage is how many events a query or a trim reads at once.
const eventPage = 500

func (s *Store) eventSeqKey() string  { return s.prefix + "eventseq" }
func (s *Store) eventsPrefix() string { return s.prefix + "events/" }
func (s *Store) eventKey(seq uint64) string {
	return s.eventsPrefix() + fmt.Sprintf("%020d", seq)
}

func (s *Store) eventSeq(key string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(key, s.eventsPrefix()), 10, 64)
	if err != nil {
		return 0, corrupt(key, fmt.Errorf("not an event sequence number"))
	}
	return n, nil
}

// AppendEvents implements events.Store: the events are numbered and stored
// in one transaction (up to maxTxnOps-1 of them; more in several, whose
// numbers another writer's may come between), and the oldest beyond the
// retention deleted.
func (s *Store) AppendEvents(ctx context.Context, evs []events.Event) ([]events.Event, error) {
	var out []events.Event
	var last uint64
	for len(evs) > 0 {
		n := min(len(evs), maxTxnOps-1)
		stored, err := s.appendEvents(ctx, evs[:n])
		if err != nil {
			return nil, fmt.Errorf("store events: %w", err)
		}
		out = append(out, stored...)
		last = stored[len(stored)-1].Seq
		evs = evs[n:]
	}
	if out == nil {
		return nil, nil
	}
	if err := s.trimEvents(ctx, last, time.Now()); err != nil {
		return nil, fmt.Errorf("store events: %w", err)
	}
	return out, nil
}

// appendEvents numbers and stores evs in one transaction.
func (s *Store) appendEvents(ctx context.Context, evs []events.Event) ([]events.Event, error) {
	seqKey := s.eventSeqKey()
	var out []events.Event
	err := s.rmw(ctx, []string{seqKey}, func(vals [][]byte) ([]clientv3.Op, error) {
		var seq uint64
		if vals[0] != nil {
			n, err := strconv.ParseUint(string(vals[0]), 10, 64)
			if err != nil {
				return nil, corrupt(seqKey, fmt.Errorf("not a sequence number"))
			}
			seq = n
		}
		out = make([]events.Event, len(evs))
		ops := make([]clientv3.Op, 0, len(evs)+1)
		for i, e := range evs {
			seq++
			e.Seq = seq
			k := s.eventKey(seq)
			v, err := encode(k, e)
			if err != nil {
				return nil, err
			}
			ops = append(ops, clientv3.OpPut(k, v))
			out[i] = e
		}
		return append(ops, clientv3.OpPut(seqKey, strconv.FormatUint(seq, 10))), nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// trimEvents deletes the events beyond the retention at now, last being
// the newest Seq: every one numbered last-MaxEvents or below, then the
// oldest while they are older than MaxAge. Deleting is idempotent, so
// concurrent trims need no transaction.
func (s *Store) trimEvents(ctx context.Context, last uint64, now time.Time) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	p := s.eventsPrefix()
	ret := s.eventRetention()
	if max := uint64(ret.MaxEvents); last > max {
		if _, err := s.cli.Delete(ctx, p, clientv3.WithRange(s.eventKey(last-max+1))); err != nil {
			return err
		}
	}
	cut := now.Add(-ret.MaxAge)
	// Usually the oldest event is recent enough: the first page is small,
	// the next ones bigger.
	for page := int64(4); ; page = min(page*4, eventPage) {
		r, err := s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend),
			clientv3.WithLimit(page))
		if err != nil {
			return err
		}
		old := 0 // the page's first old events
		for _, kv := range r.Kvs {
			var e struct {
				Time time.Time `json:"time"`
			}
			if err := s.decode(string(kv.Key), kv.Value, &e); err != nil {
				return err
			}
			if !e.Time.Before(cut) {
				break
			}
			old++
		}
		if old == 0 {
			return nil
		}
		if _, err := s.cli.Delete(ctx, p, clientv3.WithRange(string(r.Kvs[old-1].Key)+"\x00")); err != nil {
			return err
		}
		if old < len(r.Kvs) || !r.More {
			return nil
		}
	}
}

// Events implements events.Store: the newest f.Limited() matching events,
// oldest first, read from the newest backwards a page at a time.
func (s *Store) Events(ctx context.Context, f events.Filter) ([]events.Event, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	limit := f.Limited()
	p := s.eventsPrefix()
	end := clientv3.GetPrefixRangeEnd(p)
	var out []events.Event
scan:
	for len(out) < limit {
		r, err := s.cli.Get(ctx, p, clientv3.WithRange(end),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(eventPage))
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		for _, kv := range r.Kvs {
			k := string(kv.Key)
			seq, err := s.eventSeq(k)
			if err != nil {
				return nil, fmt.Errorf("read events: %w", err)
			}
			if f.After > 0 && seq <= f.After {
				break scan
			}
			var e events.Event
			if err := s.decode(k, kv.Value, &e); err != nil {
				return nil, fmt.Errorf("read events: %w", err)
			}
			e.Seq = seq
			if !f.Since.IsZero() && e.Time.Before(f.Since.Add(-sinceSlack)) {
				break scan
			}
			if f.Match(e) {
				out = append(out, e)
				if len(out) == limit {
					break scan
				}
			}
		}
		if !r.More || len(r.Kvs) == 0 {
			break
		}
		end = string(r.Kvs[len(r.Kvs)-1].Key)
	}
	slices.Reverse(out)
	return out, nil
}

// SetEventRetention sets the retention of events (zero fields: those of
// events.DefaultRetention). It applies from the next append.
func (s *Store) SetEventRetention(r events.Retention) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retention = r
}

func (s *Store) eventRetention() events.Retention {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retention.OrDefault()
}
