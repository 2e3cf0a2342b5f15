package events

import (
	"reflect"
	"testing"
	"time"
)

func TestHistory(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	seq := uint64(0)
	ev := func(m int, k Kind, rev string, mod func(*Event)) Event {
		seq++
		e := Event{Seq: seq, Time: at(m), Kind: k, Revision: rev, Message: string(k)}
		if mod != nil {
			mod(&e)
		}
		return e
	}
	counts := map[string]int{"creates": 3, "rebuilds": 1}
	for _, tc := range []struct {
		name string
		evs  []Event
		want []RevisionRecord
	}{
		{"none", nil, []RevisionRecord{}},
		{"applied", []Event{
			ev(0, RevisionSeen, "a", func(e *Event) { e.Summary = "add e1n04" }),
			ev(1, RevisionValidated, "a", nil),
			ev(2, PlanComputed, "a", func(e *Event) { e.Counts, e.Plan = counts, "d1" }),
			ev(3, NodeStep, "a", func(e *Event) { e.Node = "e1n01" }), // not a revision kind
			ev(4, Applied, "a", func(e *Event) { e.Counts = map[string]int{"dns": 3}; e.Plan = "d1" }),
			ev(5, ApplyFailed, "a", func(e *Event) { e.Error = "target down" }), // later: stays applied
		}, []RevisionRecord{{Revision: "a", Summary: "add e1n04", Seen: at(0), Validated: at(1), Applied: at(4), Outcome: OutcomeApplied,
			Error: "target down", Counts: map[string]int{"dns": 3}, Plan: "d1", Last: at(5)}}},
		{"refused, then a newer one awaits approval, one seen only", []Event{
			ev(0, RevisionSeen, "b", nil),
			ev(1, RevisionRefused, "b", func(e *Event) { e.Error = "does not validate" }),
			ev(2, RevisionSeen, "c", nil),
			ev(3, RevisionValidated, "c", nil),
			ev(4, PlanComputed, "c", func(e *Event) { e.Counts, e.Plan = counts, "d2" }),
			ev(5, ApprovalPending, "c", func(e *Event) { e.Plan = "d2" }),
			ev(6, RevisionSeen, "d", nil),
		}, []RevisionRecord{
			{Revision: "d", Seen: at(6), Outcome: OutcomeSeen, Last: at(6)},
			{Revision: "c", Seen: at(2), Validated: at(3), Outcome: OutcomeAwaiting, Counts: counts, Plan: "d2", Last: at(5)},
			{Revision: "b", Seen: at(0), Outcome: OutcomeRefused, Error: "does not validate", Last: at(1)},
		}},
		{"approved then failed; planned; seen trimmed away", []Event{
			ev(0, ApprovalPending, "e", func(e *Event) { e.Plan = "d3" }),
			ev(1, Approved, "e", nil),
			ev(2, RolloutHalted, "e", func(e *Event) { e.Error = "canary failed" }),
			ev(3, PlanComputed, "f", func(e *Event) { e.Counts, e.Plan = counts, "d4" }),
			ev(4, Approved, "", nil), // no revision: ignored
		}, []RevisionRecord{
			{Revision: "f", Seen: at(3), Outcome: OutcomePlanned, Counts: counts, Plan: "d4", Last: at(3)},
			{Revision: "e", Seen: at(0), Outcome: OutcomeFailed, Error: "canary failed", Plan: "d3", Last: at(2)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := History(tc.evs)
			for i := range got {
				got[i].first = 0
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("History:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
