package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The push webhook's bounds.
const (
	// maxWebhookBody is GitHub's own cap on a payload: a larger body is
	// refused (413), never verified or acted on by a prefix.
	maxWebhookBody = 25 << 20
	// webhookReplayWindow is how long a delivery is remembered.
	webhookReplayWindow = 24 * time.Hour
	// webhookReplayMax bounds the deliveries remembered; the oldest are
	// forgotten first.
	webhookReplayMax = 10000
)

// deliveryHeaders name a delivery's id, as each forge sends it.
var deliveryHeaders = []string{"X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery"}

// webhook is POST /api/v1/webhook. A delivery is accepted when
//   - its whole body, at most maxWebhookBody, is signed with the API token
//     as HMAC-SHA256 key (X-Hub-Signature-256: sha256=HEX; GitHub, Gitea,
//     Gogs and Forgejo send it), or it carries the bearer token; and
//   - it is not a repeat: its delivery id and its signature are remembered
//     for webhookReplayWindow, and a delivery whose id or signature was
//     seen is refused with 409. The signature does not cover the headers,
//     so the signature itself is remembered too: a captured delivery sent
//     again under a fresh id is still a repeat.
//
// The forges sign no timestamp, so a delivery older than the window is
// accepted again; all it can do is trigger one more reconcile of the
// branch's head (a webhook never names what to apply).
type webhook struct {
	token   string
	maxBody int64
	trigger func()
	seen    *replaySet
}

func newWebhook(token string, trigger func()) *webhook {
	return &webhook{token: token, maxBody: maxWebhookBody, trigger: trigger,
		seen: newReplaySet(webhookReplayWindow, webhookReplayMax)}
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var keys []string
	for _, name := range deliveryHeaders {
		if id := req.Header.Get(name); id != "" && !slices.Contains(keys, "id:"+id) {
			keys = append(keys, "id:"+id) // Gitea sends its id in all three
		}
	}
	if sig, ok := strings.CutPrefix(req.Header.Get("X-Hub-Signature-256"), "sha256="); ok && h.token != "" {
		mac := hmac.New(sha256.New, []byte(h.token))
		if _, err := io.Copy(mac, http.MaxBytesReader(w, req.Body, h.maxBody)); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				webhookReply(w, http.StatusRequestEntityTooLarge, "error", "webhook body over the limit of 25 MiB")
				return
			}
			webhookReply(w, http.StatusBadRequest, "error", "read body")
			return
		}
		want := mac.Sum(nil)
		got, err := hex.DecodeString(sig)
		if err != nil || !hmac.Equal(got, want) {
			webhookReply(w, http.StatusForbidden, "error", "webhook signature does not match")
			return
		}
		keys = append(keys, "sig:"+hex.EncodeToString(want))
	} else if !bearerOK(req, h.token) {
		webhookReply(w, http.StatusForbidden, "error", "a valid bearer token is required (serve --token)")
		return
	}
	if !h.seen.add(time.Now(), keys...) {
		webhookReply(w, http.StatusConflict, "error", "delivery already received")
		return
	}
	h.trigger()
	webhookReply(w, http.StatusAccepted, "status", "reconcile triggered")
}

// bearerOK compares the request's bearer token with token in constant
// time; no token configured accepts nothing.
func bearerOK(req *http.Request, token string) bool {
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	return token != "" && ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func webhookReply(w http.ResponseWriter, code int, key, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{key: msg})
}

// replaySet remembers keys for a window, at most max of them (the oldest
// forgotten first).
type replaySet struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	seen  map[string]struct{}
	order []replayEntry // in the order seen
}

type replayEntry struct {
	key string
	at  time.Time
}

func newReplaySet(window time.Duration, max int) *replaySet {
	return &replaySet{window: window, max: max, seen: map[string]struct{}{}}
}

// add records keys as seen at now. It returns false, recording nothing,
// when one of them was seen within the window.
func (s *replaySet) add(now time.Time, keys ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.order) > 0 && now.Sub(s.order[0].at) >= s.window {
		s.dropOldestLocked()
	}
	for _, k := range keys {
		if _, dup := s.seen[k]; dup {
			return false
		}
	}
	for _, k := range keys {
		s.seen[k] = struct{}{}
		s.order = append(s.order, replayEntry{key: k, at: now})
	}
	for len(s.order) > s.max {
		s.dropOldestLocked()
	}
	return true
}

func (s *replaySet) dropOldestLocked() {
	delete(s.seen, s.order[0].key)
	s.order[0] = replayEntry{}
	s.order = s.order[1:]
}
