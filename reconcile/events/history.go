package events

import (
	"maps"
	"slices"
	"time"
)

// Outcomes of a revision in its history.
const (
	OutcomeApplied  = "applied"
	OutcomeRefused  = "refused"
	OutcomeFailed   = "failed"
	OutcomeAwaiting = "awaiting-approval"
	OutcomePlanned  = "planned"
	OutcomeSeen     = "seen"
)

var revisionKinds = []Kind{RevisionSeen, RevisionValidated, RevisionRefused, PlanComputed, ApprovalPending, Approved,
	Applied, ApplyFailed, RolloutHalted}

// RevisionKinds returns the kinds History reads.
func RevisionKinds() []Kind { return slices.Clone(revisionKinds) }

// RevisionRecord is one revision's history: when it was seen, validated
// and applied, and how it ended.
type RevisionRecord struct {
	Revision  string    `json:"revision"`
	Summary   string    `json:"summary,omitempty"`
	Seen      time.Time `json:"seen"`
	Validated time.Time `json:"validated,omitzero"`
	Applied   time.Time `json:"applied,omitzero"`
	// Outcome is applied, refused, failed, awaiting-approval, planned or
	// seen: what its latest event says (an applied revision stays applied;
	// a later failure of it is in Error).
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Counts are the changes of its applied plan (or of its latest plan
	// until it is applied); Plan that plan's digest.
	Counts map[string]int `json:"counts,omitempty"`
	Plan   string         `json:"plan,omitempty"`
	// Last is the time of its latest event.
	Last time.Time `json:"last"`

	first uint64 // Seq of its first event, for the order
}

// History folds events (oldest first, as a Store returns them) into one
// record per revision, newest first (by the revision's first event).
// Events of other kinds, or without a revision, are ignored.
func History(evs []Event) []RevisionRecord {
	byRev := map[string]*RevisionRecord{}
	var order []*RevisionRecord
	for _, e := range evs {
		if e.Revision == "" || !slices.Contains(revisionKinds, e.Kind) {
			continue
		}
		r := byRev[e.Revision]
		if r == nil {
			r = &RevisionRecord{Revision: e.Revision, Seen: e.Time, Outcome: OutcomeSeen, first: e.Seq}
			byRev[e.Revision] = r
			order = append(order, r)
		}
		r.Last = e.Time
		applied := r.Outcome == OutcomeApplied
		switch e.Kind {
		case RevisionSeen:
			r.Seen = e.Time
			if e.Summary != "" {
				r.Summary = e.Summary
			}
		case RevisionValidated:
			r.Validated = e.Time
		case RevisionRefused:
			r.Outcome, r.Error = OutcomeRefused, e.Error
		case PlanComputed:
			if !applied {
				r.Outcome, r.Error = OutcomePlanned, ""
				r.Counts, r.Plan = maps.Clone(e.Counts), e.Plan
			}
		case ApprovalPending:
			if !applied {
				r.Outcome, r.Plan = OutcomeAwaiting, e.Plan
			}
		case Approved:
			if !applied {
				r.Outcome = OutcomePlanned
			}
		case Applied:
			r.Outcome, r.Error, r.Applied = OutcomeApplied, "", e.Time
			if len(e.Counts) > 0 {
				r.Counts = maps.Clone(e.Counts)
			}
			if e.Plan != "" {
				r.Plan = e.Plan
			}
		case ApplyFailed, RolloutHalted:
			if !applied {
				r.Outcome = OutcomeFailed
			}
			r.Error = e.Error
		}
	}
	out := make([]RevisionRecord, 0, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		out = append(out, *order[i])
	}
	slices.SortStableFunc(out, func(a, b RevisionRecord) int {
		switch {
		case a.first > b.first:
			return -1
		case a.first < b.first:
			return 1
		}
		return 0
	})
	return out
}
