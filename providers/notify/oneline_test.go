package notify

import (
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// TestOneLineBreaks: text a commit controls (an error quoting a site file)
// stays on one line in a Slack line and a commit status's description,
// whatever the line break: C0 ones, and the C1 NEXT LINE and Unicode's
// LINE and PARAGRAPH SEPARATORs, which chat clients and browsers render
// as breaks (a forged second line under anneal's name), and other C1
// controls (a terminal's CSI).
func TestOneLineBreaks(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"LF", "x\nforged: revision.applied"},
		{"CR", "x\rforged: revision.applied"},
		{"NEL", "x\u0085forged: revision.applied"},
		{"LS", "x\u2028forged: revision.applied"},
		{"PS", "x\u2029forged: revision.applied"},
		{"CSI", "x\u009b31mforged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := events.Event{Kind: events.ApplyFailed, Revision: sha1, Error: tc.text}
			_, desc, _ := commitState(e)
			for what, s := range map[string]string{"slack": slackText("east", e), "status": description(desc)} {
				if i := strings.IndexFunc(s, func(r rune) bool {
					return r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\u2028' || r == '\u2029'
				}); i >= 0 {
					t.Errorf("%s text %q has a break or control character at %d", what, s, i)
				}
			}
		})
	}
}
