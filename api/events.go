package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/events"
)

// Events is the daemon's history, as the API reads it
// (*events.Recorder implements it).
type Events interface {
	// Events returns the matching stored events, oldest first.
	Events(ctx context.Context, f events.Filter) ([]events.Event, error)
	// Subscribe streams the events emitted from now on that match f,
	// until ctx ends or the reader falls behind (the channel is closed).
	Subscribe(ctx context.Context, f events.Filter) (<-chan events.Event, error)
}

// Streams of events: at most maxStreams at once (the recorder bounds its
// subscribers too; the notifiers need some), a heartbeat comment every
// heartbeat so that proxies and the client see the stream alive, and each
// write given writeWindow to move.
const (
	maxStreams  = 32
	heartbeat   = 15 * time.Second
	writeWindow = 30 * time.Second
	// History: the default and largest number of revisions.
	defaultHistory = 50
	maxHistory     = 1000
)

// eventsAPI serves GET /api/v1/events and /api/v1/history.
type eventsAPI struct {
	src     Events
	log     *slog.Logger
	done    <-chan struct{} // closed: the streams end (nil: never)
	streams chan struct{}
	// heartbeat is the stream's heartbeat period (tests shorten it).
	heartbeat time.Duration
}

func newEventsAPI(src Events, log *slog.Logger, done <-chan struct{}) *eventsAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &eventsAPI{src: src, log: log, done: done, streams: make(chan struct{}, maxStreams), heartbeat: heartbeat}
}

func (e *eventsAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/events", e.events)
	mux.HandleFunc("GET /api/v1/history", e.history)
}

// withActor marks every request's context as the API's: the events of
// the operator actions it takes say so.
func withActor(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.ServeHTTP(w, req.WithContext(reconcile.WithActor(req.Context(), "api")))
	})
}

func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// eventParams are the query parameters of /api/v1/events.
var eventParams = []string{"revision", "node", "kind", "since", "after", "limit", "follow"}

// parseFilter reads the query's filter; follow says to stream.
func parseFilter(req *http.Request, now time.Time) (f events.Filter, follow bool, err error) {
	q := req.URL.Query()
	for k := range q {
		if !slices.Contains(eventParams, k) {
			return f, false, fmt.Errorf("unknown parameter %q (known: %s)", k, strings.Join(eventParams, ", "))
		}
	}
	one := func(k string) (string, error) {
		v := q[k]
		if len(v) > 1 {
			return "", fmt.Errorf("parameter %s given %d times", k, len(v))
		}
		if len(v) == 0 {
			return "", nil
		}
		return v[0], nil
	}
	var vals [6]string
	for i, k := range []string{"revision", "node", "since", "after", "limit", "follow"} {
		if vals[i], err = one(k); err != nil {
			return f, false, err
		}
	}
	rev, nodeName, since, after, limit, fol := vals[0], vals[1], vals[2], vals[3], vals[4], vals[5]
	if len(rev) > 64 || strings.ContainsFunc(rev, func(c rune) bool { return !isAlnum(c) }) {
		return f, false, fmt.Errorf("revision %q: want a commit id or a prefix of one (letters and digits, at most 64)", rev)
	}
	if len(nodeName) > 253 || strings.ContainsFunc(nodeName, func(c rune) bool { return !isAlnum(c) && c != '-' && c != '.' && c != '_' }) {
		return f, false, fmt.Errorf("node %q: want a node name", nodeName)
	}
	f.Revision, f.Node = rev, nodeName
	for _, list := range q["kind"] {
		for k := range strings.SplitSeq(list, ",") {
			k = strings.TrimSpace(k)
			if k == "" {
				continue
			}
			if !events.Kind(k).Valid() {
				return f, false, fmt.Errorf("unknown event kind %q; the kinds are: %s", k, kindList())
			}
			if !slices.Contains(f.Kinds, events.Kind(k)) {
				f.Kinds = append(f.Kinds, events.Kind(k))
			}
		}
	}
	if since != "" {
		if f.Since, err = ParseSince(since, now); err != nil {
			return f, false, err
		}
	}
	if after != "" {
		if f.After, err = strconv.ParseUint(after, 10, 64); err != nil {
			return f, false, fmt.Errorf("after %q: want an event's seq (a number)", after)
		}
	}
	if limit != "" {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > events.MaxLimit {
			return f, false, fmt.Errorf("limit %q: want a number from 1 to %d", limit, events.MaxLimit)
		}
		f.Limit = n
	}
	switch fol {
	case "", "0", "false":
	case "1", "true":
		follow = true
	default:
		return f, false, fmt.Errorf("follow %q: want 1 or 0", fol)
	}
	for _, a := range req.Header.Values("Accept") {
		if strings.Contains(a, "text/event-stream") {
			follow = true
		}
	}
	return f, follow, nil
}

func isAlnum(c rune) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func kindList() string {
	var ks []string
	for _, k := range events.Kinds() {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// ParseSince reads a time: RFC 3339, or a duration before now (1h, 30m).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time (2026-12-02T10:00:00Z) or a positive duration before now (90m, 24h)", s)
	}
	return now.Add(-d), nil
}

func (e *eventsAPI) events(w http.ResponseWriter, req *http.Request) {
	if e.src == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "no event history in this server"})
		return
	}
	f, follow, err := parseFilter(req, time.Now())
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if follow {
		if id := req.Header.Get("Last-Event-ID"); id != "" {
			n, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				badRequest(w, "Last-Event-ID %q: want an event's seq (a number)", id)
				return
			}
			f.After = max(f.After, n)
		}
		e.stream(w, req, f)
		return
	}
	evs, err := e.src.Events(req.Context(), f)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if evs == nil {
		evs = []events.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// stream serves the events as server-sent events: the stored backlog
// matching f, then the live ones, without a gap (the subscription starts
// before the backlog is read) or a duplicate (a live event already sent
// is skipped). It ends when the client goes, or when the subscription is
// dropped for falling behind: the client reconnects with Last-Event-ID.
func (e *eventsAPI) stream(w http.ResponseWriter, req *http.Request, f events.Filter) {
	select {
	case e.streams <- struct{}{}:
		defer func() { <-e.streams }()
	default:
		w.Header().Set("Retry-After", "10")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("too many event streams (%d); retry later", maxStreams)})
		return
	}
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	live, err := e.src.Subscribe(ctx, f)
	if errors.Is(err, events.ErrTooManySubscribers) {
		w.Header().Set("Retry-After", "10")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error() + "; retry later"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	backlog := f
	if f.After > 0 && f.Limit == 0 {
		backlog.Limit = events.MaxLimit // a reconnect: all it missed, bounded
	}
	evs, err := e.src.Events(ctx, backlog)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	write := func(b []byte) bool {
		// The server's write deadline, if it has one, is extended for
		// each write: a stream is long, each write must be quick.
		if err := rc.SetWriteDeadline(time.Now().Add(writeWindow)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	last := f.After
	send := func(ev events.Event) bool {
		if ev.Seq != 0 && ev.Seq <= last {
			return true // in the backlog already
		}
		data, err := json.Marshal(ev)
		if err != nil {
			return false
		}
		var b strings.Builder
		if ev.Seq != 0 {
			fmt.Fprintf(&b, "id: %d\n", ev.Seq)
			last = ev.Seq
		}
		fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", ev.Kind, data)
		return write([]byte(b.String()))
	}
	if !write([]byte(": anneal events\n\n")) {
		return
	}
	for _, ev := range evs {
		if !send(ev) {
			return
		}
	}
	tick := time.NewTicker(e.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.done:
			return // shutting down: the client reconnects to the next one
		case ev, ok := <-live:
			if !ok {
				if ctx.Err() == nil {
					// Dropped for falling behind: say so, and end; the
					// client reconnects from its Last-Event-ID.
					write([]byte(": dropped: the reader fell behind; reconnect with Last-Event-ID\n\n"))
					e.log.Info("events: a slow stream was dropped", "remote", req.RemoteAddr)
				}
				return
			}
			if !send(ev) {
				return
			}
		case <-tick.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		}
	}
}

// history serves the revisions' history, newest first.
func (e *eventsAPI) history(w http.ResponseWriter, req *http.Request) {
	if e.src == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "no event history in this server"})
		return
	}
	limit := defaultHistory
	for k := range req.URL.Query() {
		if k != "limit" {
			badRequest(w, "unknown parameter %q (known: limit)", k)
			return
		}
	}
	if s := req.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxHistory {
			badRequest(w, "limit %q: want a number from 1 to %d", s, maxHistory)
			return
		}
		limit = n
	}
	evs, err := e.src.Events(req.Context(), events.Filter{Kinds: events.RevisionKinds(), Limit: events.MaxLimit})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	h := events.History(evs)
	writeJSON(w, http.StatusOK, h[:min(len(h), limit)])
}
