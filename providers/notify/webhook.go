package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// Webhook request headers.
const (
	HeaderEvent     = "X-Anneal-Event"
	HeaderDelivery  = "X-Anneal-Delivery"
	HeaderSignature = "X-Anneal-Signature-256"
)

// Payload is a json webhook's body: the event and the site it is about.
type Payload struct {
	events.Event
	Site string `json:"site,omitempty"`
}

// Sign returns the X-Anneal-Signature-256 value of body: "sha256=" and the
// hex HMAC-SHA256 of the exact body bytes with key (as GitHub's
// X-Hub-Signature-256).
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify says whether sig is body's signature with key, in constant time.
func Verify(key, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(key, body)), []byte(sig))
}

// webhookBody renders an event in a format.
func webhookBody(f Format, site string, e events.Event) ([]byte, error) {
	if f == FormatSlack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{slackText(site, e)})
	}
	e.Message, e.Error, e.Summary = truncate(e.Message, maxText), truncate(e.Error, maxText), truncate(e.Summary, maxText)
	return json.Marshal(Payload{Event: e, Site: site})
}

// maxText bounds an event's message, error and summary in a json body (an
// error listing a site's findings can be long, a commit's subject is not
// bounded by git; receivers bound what they take).
const maxText = 8 << 10

// webhookRequest is the POST of an event to a webhook.
func webhookRequest(u string, key []byte, body []byte, e events.Event) request {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderEvent, string(e.Kind))
	h.Set(HeaderDelivery, strconv.FormatUint(e.Seq, 10))
	if len(key) > 0 {
		h.Set(HeaderSignature, Sign(key, body))
	}
	return request{method: http.MethodPost, url: u, header: h, body: body}
}

// maxSlackText bounds a Slack line (Slack truncates at 40,000 characters;
// a line in a channel should be far shorter).
const maxSlackText = 1000

// slackText is one readable line: site, kind, revision, node, message and
// error. Slack's control characters (&, <, >) are escaped, so text from a
// commit (an error quoting the site) cannot form a link or a mention.
func slackText(site string, e events.Event) string {
	var b strings.Builder
	b.WriteString("anneal")
	if site != "" {
		b.WriteString(" " + site)
	}
	b.WriteString(": " + string(e.Kind))
	if e.Revision != "" {
		b.WriteString(" " + shortRev(e.Revision))
	}
	if e.Node != "" {
		b.WriteString(" node " + e.Node)
	}
	if e.Step != "" {
		b.WriteString(" (" + e.Step + ")")
	}
	// Each text is cut first, so a huge one is never copied whole.
	if e.Message != "" {
		b.WriteString(": " + truncate(e.Message, maxSlackText))
	}
	if e.Error != "" {
		b.WriteString(" — error: " + truncate(e.Error, maxSlackText))
	}
	return truncate(oneLine(slackEscape(b.String())), maxSlackText)
}

func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// shortRev shortens a commit id to 12 characters (a directory's id, dir:…,
// is kept whole: it is short).
func shortRev(rev string) string {
	if isCommit(rev) {
		return rev[:12]
	}
	return truncate(rev, 40)
}

// isCommit says whether rev is a full SHA-1 or SHA-256 commit id.
func isCommit(rev string) bool {
	if len(rev) != 40 && len(rev) != 64 {
		return false
	}
	for _, c := range rev {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// oneLine replaces control characters (C0 and C1: newlines, NEL) and
// Unicode's line and paragraph separators with spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// truncate keeps at most n characters, the last an ellipsis when cut. It
// reads no further than the cut and copies only what it keeps: an event's
// text can be tens of MiB, and every sink renders every event.
func truncate(s string, n int) string {
	cut, runes := 0, 0
	for i := range s {
		if runes == n-1 {
			cut = i
		}
		if runes++; runes > n {
			return s[:cut] + "…"
		}
	}
	return s
}

// webhookDeliver sends events to one webhook.
func (n *Notifier) webhookDeliver(w Webhook) deliverFunc {
	client := newClient(w.Timeout)
	return func(ctx context.Context, e events.Event) (int, error) {
		u := w.URL
		if w.URLRef != "" {
			v, err := n.resolve(w.URLRef)
			if err != nil {
				return 0, err
			}
			if err := checkURL(v); err != nil {
				return 0, fmt.Errorf("url from %s: %w", w.URLRef, err)
			}
			u = v
		}
		var key []byte
		if w.Secret != "" {
			v, err := n.resolve(w.Secret)
			if err != nil {
				return 0, err
			}
			key = []byte(v)
		}
		body, err := webhookBody(w.Format, n.site, e)
		if err != nil {
			return 0, fmt.Errorf("encode: %w", err)
		}
		return send(ctx, client, n.retry, webhookRequest(u, key, body, e))
	}
}
