package notify

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// TestWebhookBodyBounded: every text of an event a commit controls (an
// error quoting the site, a revision's subject: the first line of a commit
// message, which git does not bound) is cut to maxText characters in a
// json webhook body, so a commit cannot make each delivery megabytes.
func TestWebhookBodyBounded(t *testing.T) {
	huge := strings.Repeat("é", 1<<20)
	for _, tc := range []struct {
		name  string
		event events.Event
		field func(Payload) string
	}{
		{"message", events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: huge}, func(p Payload) string { return p.Message }},
		{"error", events.Event{Kind: events.RevisionRefused, Revision: sha1, Error: huge}, func(p Payload) string { return p.Error }},
		{"summary", events.Event{Kind: events.RevisionSeen, Revision: sha1, Summary: huge}, func(p Payload) string { return p.Summary }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := webhookBody(FormatJSON, "east", tc.event)
			if err != nil {
				t.Fatal(err)
			}
			var p Payload
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			if n := utf8.RuneCountInString(tc.field(p)); n > maxText || len(body) > 4*maxText+4096 {
				t.Errorf("%s of %d characters in a body of %d bytes, want at most %d characters", tc.name, n, len(body), maxText)
			}
			if !strings.HasSuffix(tc.field(p), "…") {
				t.Errorf("%s not marked as cut", tc.name)
			}
		})
	}
}
