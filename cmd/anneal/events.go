package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/spf13/cobra"
)

func newEventsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "events",
		Short: "Show what a running anneal serve saw, decided and did",
		Long: `events lists the history a running anneal serve keeps in its state store:
every revision seen, validated or refused (and why), each plan computed,
approvals, revisions applied (with their counts) or failed, rollouts halted,
each node's rebuild steps, each DNS zone written, suspend and resume.

The filters combine: --node, --revision (a prefix of a commit id), --kind
(repeated, or comma-separated), --since (a duration before now, 1h, or an
RFC 3339 time). Without --follow the newest --limit events are shown, oldest
first. --follow shows them, then streams new ones as they happen until
interrupted, reconnecting (from the last event shown) when the stream drops.`,
		Args: noArgs,
	}
	apiF := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	nodeName := c.Flags().String("node", "", "only the events of this node")
	revision := c.Flags().String("revision", "", "only the events of this revision (a commit id or a prefix of one)")
	kinds := c.Flags().StringSlice("kind", nil, "only events of this kind (repeat, or comma-separate): "+kindNames())
	since := c.Flags().String("since", "", "only events since this: a duration before now (90m, 24h) or an RFC 3339 time")
	limit := c.Flags().Int("limit", 0, fmt.Sprintf("show the newest N events (default %d, at most %d)", events.DefaultLimit, events.MaxLimit))
	follow := c.Flags().BoolP("follow", "f", false, "stream new events until interrupted")
	out := addOutputFlag(c, "text", "json")
	_ = c.RegisterFlagCompletionFunc("node", completeNodes(nil, apiF))
	_ = c.RegisterFlagCompletionFunc("kind", completeKinds)
	c.RunE = func(c *cobra.Command, _ []string) error {
		q := url.Values{}
		for _, k := range *kinds {
			if !events.Kind(k).Valid() {
				return usagef("--kind %q: unknown event kind; the kinds are: %s", k, kindNames())
			}
		}
		if len(*kinds) > 0 {
			q.Set("kind", strings.Join(*kinds, ","))
		}
		if *since != "" {
			if _, err := api.ParseSince(*since, time.Now()); err != nil {
				return usagef("--%w", err)
			}
			q.Set("since", *since)
		}
		if *limit < 0 || *limit > events.MaxLimit {
			return usagef("--limit %d: want a number from 1 to %d", *limit, events.MaxLimit)
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		for k, v := range map[string]string{"node": *nodeName, "revision": *revision} {
			if v != "" {
				q.Set(k, v)
			}
		}
		w := c.OutOrStdout()
		show := func(e events.Event) error {
			if out.value == "json" {
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "%s\n", b)
				return err
			}
			_, err := fmt.Fprintln(w, eventLine(e))
			return err
		}
		if *follow {
			if err := followEvents(c.Context(), apiF, q, show); err != nil {
				return failure(err)
			}
			return nil
		}
		var evs []events.Event
		if err := apiCall(c.Context(), apiF, http.MethodGet, "/api/v1/events?"+q.Encode(), "", &evs); err != nil {
			return failure(err)
		}
		if out.value == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if evs == nil {
				evs = []events.Event{}
			}
			return enc.Encode(evs)
		}
		for _, e := range evs {
			if err := show(e); err != nil {
				return err
			}
		}
		return nil
	}
	return c
}

func kindNames() string {
	var ks []string
	for _, k := range events.Kinds() {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// eventLine is one event as a line: time, kind, revision, node, step,
// message, counts, error.
func eventLine(e events.Event) string {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-19s  %-12s  %-8s  ", e.Time.UTC().Format(time.RFC3339), e.Kind, dash(short(e.Revision)), dash(e.Node))
	if e.Step != "" && e.Kind == events.NodeStep && e.Step != e.Message {
		b.WriteString(e.Step + ": ")
	}
	b.WriteString(e.Message)
	if e.Summary != "" {
		fmt.Fprintf(&b, " %q", e.Summary)
	}
	if e.Actor != "" {
		fmt.Fprintf(&b, " (by %s)", e.Actor)
	}
	if c := countsText(e.Counts); c != "" {
		b.WriteString("  " + c)
	}
	if e.Error != "" {
		b.WriteString("  error: " + e.Error)
	}
	return b.String()
}

func countsText(c map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}

// followBackoff bounds the wait before a reconnect.
const (
	followBackoffMin = time.Second
	followBackoffMax = 30 * time.Second
)

// followEvents streams the events of q (server-sent events) to print
// until ctx ends, reconnecting with Last-Event-ID when the stream drops.
// A refusal of the request itself (a bad filter) ends it with the error.
func followEvents(ctx context.Context, apiF *apiFlags, q url.Values, show func(events.Event) error) error {
	client, err := apiF.client()
	if err != nil {
		return err
	}
	q.Set("follow", "1")
	u := strings.TrimSuffix(apiF.server, "/") + "/api/v1/events?" + q.Encode()
	var last uint64
	wait := followBackoffMin
	for {
		got, retryAfter, err := streamOnce(ctx, client, u, &last, show)
		if ctx.Err() != nil {
			return nil // interrupted: done
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return perm.err
		}
		if got {
			wait = followBackoffMin
		}
		if retryAfter > 0 {
			wait = retryAfter
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, followBackoffMax)
	}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

// streamOnce reads one stream until it ends; got says it delivered an
// event, retryAfter is the server's Retry-After on a 503.
func streamOnce(ctx context.Context, client *http.Client, u string, last *uint64, show func(events.Event) error) (got bool, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, 0, &permanentError{err}
	}
	req.Header.Set("Accept", "text/event-stream")
	if *last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*last, 10))
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		msg := strings.TrimSpace(string(body))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		err := fmt.Errorf("GET /api/v1/events: %s: %s", resp.Status, msg)
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode >= 500 {
			s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			return false, time.Duration(s) * time.Second, err
		}
		return false, 0, &permanentError{err}
	}
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return got, 0, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data == "" {
				continue
			}
			var e events.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				return got, 0, fmt.Errorf("event stream: %w", err)
			}
			data = ""
			if e.Seq != 0 && e.Seq <= *last {
				continue
			}
			if err := show(e); err != nil {
				return got, 0, &permanentError{err}
			}
			got = true
			if e.Seq > *last {
				*last = e.Seq
			}
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
}

func newHistoryCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "history",
		Short: "Show the revisions a running anneal serve saw and what became of them",
		Long: `history shows, newest first, each revision a running anneal serve saw: when,
when it was applied, its outcome (applied, refused, failed, awaiting-approval,
planned, seen) and the changes of its plan. It is read from the events the
daemon keeps (anneal events shows them one by one).`,
		Args: noArgs,
	}
	apiF := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	limit := c.Flags().Int("limit", 20, "show the newest N revisions (at most 1000)")
	out := addOutputFlag(c, "text", "json")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if *limit < 1 || *limit > 1000 {
			return usagef("--limit %d: want a number from 1 to 1000", *limit)
		}
		var recs []events.RevisionRecord
		if err := apiCall(c.Context(), apiF, http.MethodGet, "/api/v1/history?limit="+strconv.Itoa(*limit), "", &recs); err != nil {
			return failure(err)
		}
		w := c.OutOrStdout()
		if out.value == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if recs == nil {
				recs = []events.RevisionRecord{}
			}
			return enc.Encode(recs)
		}
		if len(recs) == 0 {
			fmt.Fprintln(w, "no revision in the history yet")
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REVISION\tSEEN\tAPPLIED\tOUTCOME\tCHANGES\tSUMMARY")
		at := func(t time.Time) string {
			if t.IsZero() {
				return "-"
			}
			return t.UTC().Format("2006-01-02 15:04:05")
		}
		for _, r := range recs {
			changes := countsText(r.Counts)
			if changes == "" {
				changes = "-"
			}
			outcome := r.Outcome
			if r.Error != "" {
				outcome += " (" + truncate(r.Error, 60) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", short(r.Revision), at(r.Seen), at(r.Applied), outcome, changes, truncate(r.Summary, 50))
		}
		return tw.Flush()
	}
	return c
}

func truncate(s string, n int) string {
	if s = strings.ReplaceAll(s, "\n", " "); len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// eventFlags are serve's flags of the event history's retention.
type eventFlags struct {
	maxEvents int
	maxAge    time.Duration
}

func addEventFlags(c *cobra.Command) *eventFlags {
	f := &eventFlags{}
	c.Flags().IntVar(&f.maxEvents, "events-max", events.DefaultRetention.MaxEvents, "events of the history kept in the state store (the oldest beyond are dropped)")
	c.Flags().DurationVar(&f.maxAge, "events-max-age", events.DefaultRetention.MaxAge, "events older than this are dropped from the history")
	return f
}

// check refuses a retention that keeps nothing (a usage error).
func (f *eventFlags) check() error {
	if f.maxEvents < 1 || f.maxAge <= 0 {
		return usagef("--events-max and --events-max-age must be positive")
	}
	return nil
}

// recorder sets st's retention and returns the recorder of the history
// on it, logging to log.
func (f *eventFlags) recorder(c *cobra.Command, st *bolt.Store, log *slog.Logger) (*events.Recorder, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	st.SetEventRetention(events.Retention{MaxEvents: f.maxEvents, MaxAge: f.maxAge})
	return events.NewRecorder(st, log), nil
}
