package events

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Memory is a Store in memory, with a retention: for tests, and for
// commands that keep no state.
type Memory struct {
	Retention Retention

	mu  sync.Mutex
	seq uint64
	evs []Event
	now func() time.Time
}

// AppendEvents implements Store.
func (m *Memory) AppendEvents(_ context.Context, evs []Event) ([]Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Event, len(evs))
	for i, e := range evs {
		m.seq++
		e.Seq = m.seq
		out[i] = e
	}
	m.evs = append(m.evs, out...)
	m.evs = Trim(m.evs, m.Retention, m.clock())
	return out, nil
}

// Events implements Store.
func (m *Memory) Events(_ context.Context, f Filter) ([]Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Select(m.evs, f), nil
}

func (m *Memory) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// Trim drops, from events oldest first, those beyond r: the oldest past
// MaxEvents, and those older than MaxAge at now. Zero limits keep all.
func Trim(evs []Event, r Retention, now time.Time) []Event {
	if r.MaxEvents > 0 && len(evs) > r.MaxEvents {
		evs = evs[len(evs)-r.MaxEvents:]
	}
	if r.MaxAge > 0 {
		cut := now.Add(-r.MaxAge)
		i := 0
		for i < len(evs) && evs[i].Time.Before(cut) {
			i++
		}
		evs = evs[i:]
	}
	return evs
}

// Select returns the newest f.Limited() events of evs (oldest first)
// that match f, oldest first.
func Select(evs []Event, f Filter) []Event {
	limit := f.Limited()
	var out []Event
	for i := len(evs) - 1; i >= 0 && len(out) < limit; i-- {
		if f.Match(evs[i]) {
			out = append(out, evs[i])
		}
	}
	slices.Reverse(out)
	return out
}
