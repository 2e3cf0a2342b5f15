package reconcile

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// TestEnrollRecorded: enrolling issues an agent token, a credential, so
// each enrollment (a first one, and one that revokes the previous token)
// is in the history as node.enrolled with its caller, like a revoke,
// and logged once; the token never appears in the event nor the log.
func TestEnrollRecorded(t *testing.T) {
	const name = "w1n01"
	r, _, gens := enrollFixture(t)
	mem := &events.Memory{}
	var logs strings.Builder
	r.Events = events.NewRecorder(mem, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := WithActor(context.Background(), "api")
	for i, again := range []bool{false, true} {
		if _, err := r.Enroll(ctx, name); err != nil {
			t.Fatal(err)
		}
		evs := allEvents(t, mem)
		if len(evs) != i+1 {
			t.Fatalf("after enroll %d: events %+v, want one node.enrolled each", i+1, evs)
		}
		e := evs[i]
		if e.Kind != events.NodeEnrolled || e.Node != name || e.Actor != "api" || e.Step == "" {
			t.Errorf("enroll %d (again %v): event %+v, want node.enrolled of %s by api with its build", i+1, again, e, name)
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 2 || strings.Count(logs.String(), "event=node.enrolled") != 2 {
		t.Errorf("the log states the enrollments %d times, want 2 (once each):\n%s", n, logs.String())
	}
	for _, gen := range *gens {
		if strings.Contains(logs.String(), gen) {
			t.Errorf("the log holds a token generation")
		}
	}
}
