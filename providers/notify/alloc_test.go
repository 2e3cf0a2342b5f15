package notify

import (
	"runtime"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// TestHugeTextCostsItsCut: an event's text can be tens of MiB (a refused
// revision's error listing every finding, a commit subject git does not
// bound). Rendering it for a sink allocates about what is sent, not
// several times the whole text: each sink renders each event, so a
// multiple of the text per sink could exhaust the daemon's memory.
func TestHugeTextCostsItsCut(t *testing.T) {
	huge := strings.Repeat("é<", 8<<20) // 24 MiB
	e := events.Event{Kind: events.RevisionRefused, Revision: sha1, Summary: huge, Message: huge, Error: huge}
	for _, tc := range []struct {
		name   string
		render func() int
	}{
		{"json", func() int {
			b, err := webhookBody(FormatJSON, "east", e)
			if err != nil {
				t.Fatal(err)
			}
			return len(b)
		}},
		{"slack", func() int {
			b, err := webhookBody(FormatSlack, "east", e)
			if err != nil {
				t.Fatal(err)
			}
			return len(b)
		}},
		{"commit status", func() int { _, d, _ := commitState(e); return len(description(d)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			n := tc.render()
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
				t.Errorf("rendering %d bytes from a %d-byte text allocated %d bytes", n, len(huge), alloc)
			}
		})
	}
}

// TestTruncate: at most n characters, the last an ellipsis when cut.
func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "ab…"},
		{"ééé", 3, "ééé"},
		{"éééé", 3, "éé…"},
		{"a\xffbc", 3, "a\xff…"},
		{"ab", 1, "…"},
		{"a", 1, "a"},
	} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
