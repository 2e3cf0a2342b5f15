package api

import (
	"context"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// EventSource is what CountEvents reads; *events.Recorder is one.
type EventSource interface {
	Subscribe(ctx context.Context, f events.Filter) (<-chan events.Event, error)
	Events(ctx context.Context, f events.Filter) ([]events.Event, error)
}

// Bounds of CountEvents' retries when a subscription is refused.
const (
	eventRetryMin = time.Second
	eventRetryMax = time.Minute
)

// initEvents creates anneal_events_total for every kind, at 0, so that
// rate() and increase() see the first event of a kind.
func (m *Metrics) initEvents() {
	for _, k := range events.Kinds() {
		m.events.WithLabelValues(string(k))
	}
}

// CountEvents counts the events src emits, by kind, in
// anneal_events_total, until ctx ends; run it in a goroutine the caller
// owns (serve: go m.CountEvents(ctx, recorder)). A subscription that is
// dropped (the counter fell behind) is renewed, and the events it missed
// are counted from src's store (those with a Seq after the last counted);
// a refused one is retried with a backoff. Each loss counts in
// anneal_events_subscriptions_lost_total.
func (m *Metrics) CountEvents(ctx context.Context, src EventSource) {
	var last uint64 // the greatest Seq counted
	wait := eventRetryMin
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		ch, err := src.Subscribe(sctx, events.Filter{})
		if err != nil {
			cancel()
			m.eventsLost.Inc()
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			wait = min(2*wait, eventRetryMax)
			continue
		}
		wait = eventRetryMin
		if last > 0 {
			// Subscribed first, then read: what the lost subscription
			// missed is in the store, and what both have is skipped.
			missed, err := src.Events(sctx, events.Filter{After: last, Limit: events.MaxLimit})
			if err == nil {
				for _, e := range missed {
					m.countEvent(e, &last)
				}
			}
		}
		for e := range ch {
			m.countEvent(e, &last)
		}
		cancel()
		if ctx.Err() == nil {
			m.eventsLost.Inc()
		}
	}
}

// countEvent counts e unless its Seq was counted already (events not
// stored have none and are always counted).
func (m *Metrics) countEvent(e events.Event, last *uint64) {
	if e.Seq != 0 {
		if e.Seq <= *last {
			return
		}
		*last = e.Seq
	}
	kind := string(e.Kind)
	if !e.Kind.Valid() {
		kind = "unknown" // bounded labels
	}
	m.events.WithLabelValues(kind).Inc()
	if m.counted != nil {
		m.counted()
	}
}
