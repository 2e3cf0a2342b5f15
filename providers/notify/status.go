package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// A commit status's states, as GitHub names them; running (GitLab's) is
// pending on GitHub, failure and error are failed on GitLab.
const (
	statePending = "pending"
	stateRunning = "running"
	stateSuccess = "success"
	stateFailure = "failure"
	stateError   = "error"
)

// maxDescription bounds a status's description (GitHub's limit).
const maxDescription = 140

// StatusKinds are the kinds that set a commit status.
var StatusKinds = []events.Kind{events.RevisionSeen, events.RevisionValidated, events.PlanComputed,
	events.ApprovalPending, events.Approved, events.Applied, events.ApplyFailed, events.RolloutHalted,
	events.RevisionRefused}

// commitState is the status an event sets on its revision's commit: its
// state and description (ok false: none).
func commitState(e events.Event) (state, desc string, ok bool) {
	why := e.Error
	if why == "" {
		why = e.Message
	}
	with := func(prefix, s string) string {
		if s == "" {
			return prefix
		}
		// Cut first: the description is cut to maxDescription anyway, and
		// an event's text can be tens of MiB.
		return prefix + ": " + truncate(s, maxDescription)
	}
	switch e.Kind {
	case events.RevisionSeen, events.RevisionValidated, events.PlanComputed:
		return statePending, "planning", true
	case events.ApprovalPending:
		return statePending, with("awaiting approval", e.Message), true
	case events.Approved:
		return stateRunning, "approved, applying", true
	case events.Applied:
		return stateSuccess, with("applied", e.Message), true
	case events.ApplyFailed:
		return stateFailure, with("apply failed", why), true
	case events.RolloutHalted:
		return stateFailure, with("rollout halted", why), true
	case events.RevisionRefused:
		return stateError, with("refused", why), true
	}
	return "", "", false
}

// description is a status's one-line description, at most 140 characters.
func description(s string) string {
	return truncate(strings.TrimSpace(oneLine(s)), maxDescription)
}

// statusRequest is the forge API call setting a commit's status.
func statusRequest(s *CommitStatus, token, sha, state, desc string) (request, error) {
	h := http.Header{}
	switch s.Provider {
	case GitHub:
		if state == stateRunning {
			state = statePending
		}
		owner, repo, _ := strings.Cut(s.Repository, "/")
		body, err := json.Marshal(struct {
			State       string `json:"state"`
			TargetURL   string `json:"target_url,omitempty"`
			Description string `json:"description"`
			Context     string `json:"context"`
		}{state, s.TargetURL, desc, s.Context})
		if err != nil {
			return request{}, err
		}
		h.Set("Authorization", "Bearer "+token)
		h.Set("Accept", "application/vnd.github+json")
		h.Set("X-GitHub-Api-Version", "2022-11-28")
		h.Set("Content-Type", "application/json")
		u := fmt.Sprintf("%s/repos/%s/%s/statuses/%s", s.URL, url.PathEscape(owner), url.PathEscape(repo), sha)
		return request{method: http.MethodPost, url: u, header: h, body: body}, nil
	case GitLab:
		if state == stateFailure || state == stateError {
			state = "failed"
		}
		form := url.Values{"state": {state}, "name": {s.Context}, "description": {desc}}
		if s.TargetURL != "" {
			form.Set("target_url", s.TargetURL)
		}
		h.Set("PRIVATE-TOKEN", token)
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		u := fmt.Sprintf("%s/api/v4/projects/%s/statuses/%s", s.URL, url.PathEscape(s.Project), sha)
		return request{method: http.MethodPost, url: u, header: h, body: []byte(form.Encode())}, nil
	}
	return request{}, fmt.Errorf("unknown provider %q", s.Provider)
}

// maxRemembered bounds the commits whose last status is remembered.
const maxRemembered = 256

// statusDeliver sets commit statuses. A status the commit already has
// (the same state and description, or on GitLab the same state, which it
// refuses to set twice) is not sent again.
func (n *Notifier) statusDeliver(s *CommitStatus) deliverFunc {
	client := newClient(s.Timeout)
	var mu sync.Mutex
	last := map[string]string{}
	return func(ctx context.Context, e events.Event) (int, error) {
		state, desc, ok := commitState(e)
		if !ok || !isCommit(e.Revision) {
			return 0, nil
		}
		desc = description(desc)
		key := state + "\x00" + desc
		if s.Provider == GitLab {
			key = state
		}
		mu.Lock()
		same := last[e.Revision] == key
		mu.Unlock()
		if same {
			return 0, nil
		}
		token, err := n.resolve(s.Token)
		if err != nil {
			return 0, err
		}
		req, err := statusRequest(s, token, e.Revision, state, desc)
		if err != nil {
			return 0, err
		}
		attempts, err := send(ctx, client, n.retry, req)
		if err == nil {
			mu.Lock()
			if len(last) >= maxRemembered {
				clear(last)
			}
			last[e.Revision] = key
			mu.Unlock()
		}
		return attempts, err
	}
}
