// Package notify tells the outside world what the daemon did: it posts
// events to the operator's webhooks (JSON signed with HMAC-SHA256, or a
// Slack-compatible line) and sets commit statuses on the forge (GitHub's
// statuses API, GitLab's commit status API), so that a merged pull request
// shows applied, failed or awaiting approval.
//
// Everything it sends to, and every secret it sends, comes from the
// operator's notify file (anneal serve --notify): a site's commit cannot
// add a destination. Each sink has one goroutine, a bounded queue (the
// oldest events are dropped when it is full) and delivers in order;
// failed deliveries are retried with backoff within bounds. Redirects are
// not followed. URLs, tokens and keys are never logged.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/events"
)

// DefaultQueue bounds the events waiting for one sink.
const DefaultQueue = 1000

// Options are what a Notifier needs beside its configuration.
type Options struct {
	// Log receives delivery failures (and successes at debug level).
	Log *slog.Logger
	// Site names the site when the file does not (Config.Site).
	Site string
	// Resolver reads secrets (its zero value: the process's environment
	// and files).
	Resolver secret.Resolver
}

// deliverFunc delivers one event, returning the attempts made.
type deliverFunc func(context.Context, events.Event) (int, error)

// Notifier delivers events to sinks.
type Notifier struct {
	log      *slog.Logger
	site     string
	resolver secret.Resolver
	retry    retryPolicy
	queue    int
	sinks    []*sink
	kinds    []events.Kind

	started bool
	wg      sync.WaitGroup
}

// sink is one destination: its filter, its delivery and its queue.
type sink struct {
	name    string
	accept  func(events.Event) bool
	deliver deliverFunc

	mu      sync.Mutex
	max     int
	queue   []events.Event
	dropped int
	wake    chan struct{}
}

// New builds a notifier from a validated configuration. Every secret it
// names is read now (and again at each delivery, so a rotated file is
// picked up): one that cannot be read is an error.
func New(c *Config, o Options) (*Notifier, error) {
	n := &Notifier{log: o.Log, site: c.Site, resolver: o.Resolver, retry: defaultRetry, queue: DefaultQueue}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.site == "" {
		n.site = o.Site
	}
	var errs []error
	for _, s := range c.Secrets() {
		if _, err := n.resolve(s.Ref); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", c.File, s.What, err))
		}
	}
	for _, w := range c.Webhooks {
		if w.URLRef == "" {
			continue
		}
		if v, err := n.resolve(w.URLRef); err == nil {
			if err := checkURL(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: webhook %q: url from %s: %w", w.where, w.Name, w.URLRef, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, w := range c.Webhooks {
		kinds := w.Kinds
		accept := func(e events.Event) bool { return slices.Contains(kinds, e.Kind) }
		if kinds == nil {
			kinds = append(slices.Clone(DefaultKinds), events.NodeStep)
			accept = func(e events.Event) bool {
				return slices.Contains(DefaultKinds, e.Kind) || e.Kind == events.NodeStep && e.Failure()
			}
		}
		n.add("webhook "+w.Name, kinds, accept, n.webhookDeliver(w))
	}
	if s := c.CommitStatus; s != nil {
		st := *s
		if st.Context == "" {
			st.Context = "anneal"
			if n.site != "" {
				st.Context += "/" + n.site
			}
		}
		accept := func(e events.Event) bool {
			_, _, ok := commitState(e)
			return ok && isCommit(e.Revision)
		}
		n.add("commit status "+st.Provider, StatusKinds, accept, n.statusDeliver(&st))
	}
	return n, nil
}

func (n *Notifier) add(name string, kinds []events.Kind, accept func(events.Event) bool, d deliverFunc) {
	n.sinks = append(n.sinks, &sink{name: name, accept: accept, deliver: d, wake: make(chan struct{}, 1)})
	for _, k := range kinds {
		if !slices.Contains(n.kinds, k) {
			n.kinds = append(n.kinds, k)
		}
	}
}

// resolve reads a secret; its errors name the reference, never a value.
func (n *Notifier) resolve(r Ref) (string, error) {
	return n.resolver.Resolve(string(r))
}

// Run delivers the events rec emits from now on until ctx ends, and
// returns once every sink's goroutine has stopped.
func (n *Notifier) Run(ctx context.Context, rec *events.Recorder) error {
	if err := n.Start(ctx, rec); err != nil {
		return err
	}
	n.Wait()
	return nil
}

// Start subscribes to rec now (the events emitted after it returns are
// delivered) and starts the notifier's goroutines, which stop when ctx
// ends: Wait waits for them. A Notifier starts once.
func (n *Notifier) Start(ctx context.Context, rec *events.Recorder) error {
	if n.started {
		return errors.New("notify: started twice")
	}
	filter := events.Filter{Kinds: n.kinds}
	ch, err := rec.Subscribe(ctx, filter)
	if err != nil {
		return fmt.Errorf("notify: subscribe: %w", err)
	}
	n.startSinks(ctx)
	n.wg.Go(func() { n.follow(ctx, rec, filter, ch) })
	return nil
}

// startSinks starts one goroutine per sink.
func (n *Notifier) startSinks(ctx context.Context) {
	n.started = true
	for _, s := range n.sinks {
		s.max = n.queue
		n.wg.Go(func() { n.work(ctx, s) })
	}
}

// Wait waits for the goroutines Start started to stop.
func (n *Notifier) Wait() { n.wg.Wait() }

// follow hands the subscription's events to the sinks. When the recorder
// drops the subscription (this reader fell behind), it subscribes again
// and catches up from the store after the last event it saw.
func (n *Notifier) follow(ctx context.Context, rec *events.Recorder, filter events.Filter, ch <-chan events.Event) {
	var last uint64
	for {
		e, ok := <-ch
		if ok {
			if e.Seq != 0 && e.Seq <= last {
				continue
			}
			last = max(last, e.Seq)
			n.dispatch(e)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("notify: fell behind the event stream; catching up from the store", "after", last)
		for {
			var err error
			if ch, err = rec.Subscribe(ctx, filter); err == nil {
				break
			}
			n.log.Warn("notify: subscribe again", "err", err)
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		missed := filter
		missed.After, missed.Limit = last, events.MaxLimit
		evs, err := rec.Events(ctx, missed)
		if err != nil {
			n.log.Warn("notify: events missed while behind are lost", "after", last, "err", err)
		}
		for _, e := range evs {
			if e.Seq > last {
				last = e.Seq
				n.dispatch(e)
			}
		}
	}
}

// dispatch queues e for every sink that wants it.
func (n *Notifier) dispatch(e events.Event) {
	for _, s := range n.sinks {
		if s.accept(e) {
			s.push(e)
		}
	}
}

// push queues e, dropping the oldest event when the queue is full.
func (s *sink) push(e events.Event) {
	s.mu.Lock()
	if len(s.queue) >= s.max {
		s.queue = slices.Delete(s.queue, 0, 1)
		s.dropped++
	}
	s.queue = append(s.queue, e)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// pop takes the oldest event, waiting for one until ctx ends; it also
// returns how many were dropped since the last pop.
func (s *sink) pop(ctx context.Context) (events.Event, int, bool) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			e := s.queue[0]
			s.queue = slices.Delete(s.queue, 0, 1)
			dropped := s.dropped
			s.dropped = 0
			s.mu.Unlock()
			return e, dropped, true
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return events.Event{}, 0, false
		case <-s.wake:
		}
	}
}

// work delivers a sink's events one at a time, in order.
func (n *Notifier) work(ctx context.Context, s *sink) {
	for {
		e, dropped, ok := s.pop(ctx)
		if !ok {
			return
		}
		if dropped > 0 {
			n.log.Warn("notify: queue full: the oldest events were dropped", "sink", s.name, "dropped", dropped)
		}
		attempts, err := s.deliver(ctx, e)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			n.log.Warn("notify: delivery failed", "sink", s.name, "event", string(e.Kind), "seq", e.Seq, "attempts", attempts, "err", err)
		case attempts > 0:
			n.log.Debug("notify: delivered", "sink", s.name, "event", string(e.Kind), "seq", e.Seq, "attempts", attempts)
		}
	}
}
