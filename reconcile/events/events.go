// Package events is anneal's history: what the daemon saw, decided and
// did, as a stream of events kept in the state store with a bounded
// retention. The reconciler emits them through a Recorder, which stores
// each (the store assigns its sequence number), logs it once, and hands
// it to live subscribers (the API's event stream, the notifiers).
package events

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"
)

// Kind names what happened.
type Kind string

// Event kinds. A revision goes seen → validated (or refused) → planned →
// (approval pending → approved) → applied or failed.
const (
	// RevisionSeen: a new revision was fetched.
	RevisionSeen Kind = "revision.seen"
	// RevisionValidated: it loads and validates.
	RevisionValidated Kind = "revision.validated"
	// RevisionRefused: invalid, unsigned, or rewriting applied history;
	// it is never applied (Error says why).
	RevisionRefused Kind = "revision.refused"
	// PlanComputed: a plan with changes was computed for a revision
	// (Counts: creates, updates, deletes, rebuilds, decommissions...).
	PlanComputed Kind = "plan.computed"
	// ApprovalPending: the plan has guards and waits for anneal approve.
	ApprovalPending Kind = "approval.pending"
	// Approved: an operator approved the plan.
	Approved Kind = "approval.given"
	// Applied: the revision is applied (Counts by layer).
	Applied Kind = "revision.applied"
	// ApplyFailed: a reconcile of the revision failed (Error, Class).
	ApplyFailed Kind = "apply.failed"
	// RolloutHalted: the rollout stopped starting nodes (Error says why).
	RolloutHalted Kind = "rollout.halted"
	// DNSWritten: one zone's changes were written (Counts).
	DNSWritten Kind = "dns.written"
	// NodeStep: one step of a node's rebuild or decommission (Step).
	NodeStep Kind = "node.step"
	// NodeRetry: an operator lifted a node's failure.
	NodeRetry Kind = "node.retry"
	// NodeEnrolled: an existing machine was enrolled (adopted without a
	// rebuild once its agent reports).
	NodeEnrolled Kind = "node.enrolled"
	// NodeAdopted: a node anneal did not build was found running its
	// desired build and adopted.
	NodeAdopted Kind = "node.adopted"
	// AgentRevoked: an operator revoked a node's agent token.
	AgentRevoked Kind = "node.agent-revoked"
	// Suspended and Resumed: reconciling was paused or resumed.
	Suspended Kind = "reconcile.suspended"
	Resumed   Kind = "reconcile.resumed"
)

// Kinds lists every kind, for flag validation and documentation.
var kinds = []Kind{RevisionSeen, RevisionValidated, RevisionRefused, PlanComputed, ApprovalPending, Approved,
	Applied, ApplyFailed, RolloutHalted, DNSWritten, NodeStep, NodeRetry, NodeEnrolled, NodeAdopted, AgentRevoked,
	Suspended, Resumed}

// Kinds returns every event kind.
func Kinds() []Kind { return slices.Clone(kinds) }

// Valid says whether k is a known kind.
func (k Kind) Valid() bool { return slices.Contains(kinds, k) }

// Event is one thing that happened.
type Event struct {
	// Seq is assigned by the store: increasing, never reused.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Revision is the site revision it concerns, if any; Summary its
	// commit's subject (on RevisionSeen).
	Revision string `json:"revision,omitempty"`
	Summary  string `json:"summary,omitempty"`
	// Node is the node it concerns, if any.
	Node string `json:"node,omitempty"`
	// Step is a node step (rollout step names) or a reconcile step.
	Step string `json:"step,omitempty"`
	// Message says what happened, in a sentence.
	Message string `json:"message"`
	// Class and Error describe a failure or refusal.
	Class string `json:"class,omitempty"`
	Error string `json:"error,omitempty"`
	// Counts are the event's figures (changes by kind, by layer).
	Counts map[string]int `json:"counts,omitempty"`
	// Plan is the digest of the plan it concerns, if any.
	Plan string `json:"plan,omitempty"`
	// Actor is who asked (an API caller: "api"), for operator actions.
	Actor string `json:"actor,omitempty"`
}

// Failure says whether the event reports something that went wrong.
func (e Event) Failure() bool {
	return e.Kind == RevisionRefused || e.Kind == ApplyFailed || e.Kind == RolloutHalted ||
		e.Kind == NodeStep && e.Error != ""
}

// Filter selects events. Zero fields match everything.
type Filter struct {
	Revision string
	Node     string
	Kinds    []Kind
	// Since keeps events at or after it; After, events with a greater Seq.
	Since time.Time
	After uint64
	// Limit keeps the newest Limit of the matching events (0: DefaultLimit).
	Limit int
}

// Limits of a query.
const (
	DefaultLimit = 500
	MaxLimit     = 10000
)

// Match says whether e passes the filter (Limit aside). A revision
// filter matches a prefix of the event's revision (a short SHA).
func (f Filter) Match(e Event) bool {
	switch {
	case f.Revision != "" && (len(e.Revision) < len(f.Revision) || e.Revision[:len(f.Revision)] != f.Revision):
		return false
	case f.Node != "" && e.Node != f.Node:
		return false
	case len(f.Kinds) > 0 && !slices.Contains(f.Kinds, e.Kind):
		return false
	case !f.Since.IsZero() && e.Time.Before(f.Since):
		return false
	case f.After > 0 && e.Seq <= f.After:
		return false
	}
	return true
}

// Limited returns the filter's limit, bounded.
func (f Filter) Limited() int {
	switch {
	case f.Limit <= 0:
		return DefaultLimit
	case f.Limit > MaxLimit:
		return MaxLimit
	}
	return f.Limit
}

// Store keeps events with a bounded retention.
type Store interface {
	// AppendEvents stores events in order, assigning each its Seq, and
	// drops the oldest beyond the retention. It returns them numbered.
	AppendEvents(ctx context.Context, evs []Event) ([]Event, error)
	// Events returns the matching events, oldest first: the newest
	// f.Limited() of them.
	Events(ctx context.Context, f Filter) ([]Event, error)
}

// Retention bounds the events a store keeps: the newest MaxEvents, none
// older than MaxAge.
type Retention struct {
	MaxEvents int
	MaxAge    time.Duration
}

// DefaultRetention keeps 100,000 events for 90 days.
var DefaultRetention = Retention{MaxEvents: 100_000, MaxAge: 90 * 24 * time.Hour}

// OrDefault returns r with its zero (or negative) fields taken from
// DefaultRetention.
func (r Retention) OrDefault() Retention {
	if r.MaxEvents <= 0 {
		r.MaxEvents = DefaultRetention.MaxEvents
	}
	if r.MaxAge <= 0 {
		r.MaxAge = DefaultRetention.MaxAge
	}
	return r
}

// Recorder emits events: stored, logged once, sent to subscribers. The
// zero value is not usable; use NewRecorder. A nil *Recorder discards
// events, so emitters need no checks.
type Recorder struct {
	store Store
	log   *slog.Logger
	now   func() time.Time

	mu   sync.Mutex
	subs map[*subscription]struct{}
}

// NewRecorder returns a recorder storing to store (nil: events are only
// logged and streamed) and logging to log (nil: not logged).
func NewRecorder(store Store, log *slog.Logger) *Recorder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{store: store, log: log, now: time.Now, subs: map[*subscription]struct{}{}}
}

// Emit records events. A store failure is logged, not returned: history
// never stops a reconcile. The events are logged (once each: emitters do
// not log them again) and streamed to subscribers even so.
func (r *Recorder) Emit(ctx context.Context, evs ...Event) {
	if r == nil || len(evs) == 0 {
		return
	}
	now := r.now().UTC()
	evs = slices.Clone(evs)
	for i := range evs {
		if evs[i].Time.IsZero() {
			evs[i].Time = now
		}
		// A commit's subject and a refused revision's findings are the
		// site repo's text: bounded before they are stored or sent.
		evs[i].Summary = Cut(evs[i].Summary, MaxText)
		evs[i].Message = Cut(evs[i].Message, MaxText)
		evs[i].Error = Cut(evs[i].Error, MaxText)
	}
	if r.store != nil {
		stored, err := r.store.AppendEvents(context.WithoutCancel(ctx), evs)
		if err != nil {
			r.log.Error("events: store", "err", err, "events", len(evs))
		} else {
			evs = stored
		}
	}
	for _, e := range evs {
		r.logEvent(ctx, e)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.subs {
		for _, e := range evs {
			if s.filter.Match(e) {
				s.send(e)
			}
		}
	}
}

// logEvent logs e once: failures at Warn, the rest at Info.
func (r *Recorder) logEvent(ctx context.Context, e Event) {
	attrs := []any{"event", string(e.Kind)}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, k, v)
		}
	}
	add("revision", e.Revision)
	add("node", e.Node)
	add("step", e.Step)
	add("plan", e.Plan)
	add("class", e.Class)
	add("actor", e.Actor)
	keys := make([]string, 0, len(e.Counts))
	for k := range e.Counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		attrs = append(attrs, k, e.Counts[k])
	}
	add("err", e.Error)
	level := slog.LevelInfo
	if e.Failure() {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, e.Message, attrs...)
}

// Events queries the store (nil store: none).
func (r *Recorder) Events(ctx context.Context, f Filter) ([]Event, error) {
	if r == nil || r.store == nil {
		return nil, nil
	}
	return r.store.Events(ctx, f)
}

// SubscriberBuffer is how many events a subscriber may fall behind before
// it is dropped (its channel closed: the reader lost events and must
// query the store from its last Seq).
const SubscriberBuffer = 256

// MaxSubscribers bounds live subscribers (event streams, notifiers).
const MaxSubscribers = 64

// ErrTooManySubscribers refuses a subscriber beyond MaxSubscribers.
var ErrTooManySubscribers = fmt.Errorf("too many event subscribers (%d)", MaxSubscribers)

type subscription struct {
	filter Filter
	ch     chan Event
	closed bool
}

// send delivers e, or closes the subscription if the reader fell behind
// (called under r.mu).
func (s *subscription) send(e Event) {
	if s.closed {
		return
	}
	select {
	case s.ch <- e:
	default:
		s.closed = true
		close(s.ch)
	}
}

// Subscribe streams the events emitted from now on that match f (its
// Limit and After ignored for live events) until ctx ends or the reader
// falls more than SubscriberBuffer events behind; then the channel is
// closed. To follow without a gap, subscribe first, then query the store,
// and skip streamed events with a Seq already seen.
func (r *Recorder) Subscribe(ctx context.Context, f Filter) (<-chan Event, error) {
	if r == nil {
		return nil, fmt.Errorf("events: no recorder")
	}
	f.After = 0
	s := &subscription{filter: f, ch: make(chan Event, SubscriberBuffer)}
	r.mu.Lock()
	if len(r.subs) >= MaxSubscribers {
		r.mu.Unlock()
		return nil, ErrTooManySubscribers
	}
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs, s)
		if !s.closed {
			s.closed = true
			close(s.ch)
		}
	})
	return s.ch, nil
}

// MaxText bounds an event's summary, message and error, in bytes.
const MaxText = 16 << 10

// Cut returns s cut to at most max bytes, at a rune boundary, marked
// with an ellipsis when cut.
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = " …"
	end := max - len(mark)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + mark
}
