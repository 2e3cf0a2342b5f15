package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// retryPolicy bounds a delivery's attempts: exponential backoff from base,
// capped at max, with jitter; at most attempts tries within total.
type retryPolicy struct {
	attempts   int
	base, max  time.Duration
	total      time.Duration
	retryAfter time.Duration // the longest Retry-After honored
}

var defaultRetry = retryPolicy{attempts: 6, base: time.Second, max: 30 * time.Second, total: 2 * time.Minute, retryAfter: time.Minute}

// maxResponse bounds what is read of a response body (then discarded: it
// only lets the connection be reused).
const maxResponse = 64 << 10

// request is one HTTP request to send, the same bytes at every attempt.
type request struct {
	method string
	url    string
	header http.Header
	body   []byte
}

// permanent is a failure a retry would not fix (a 4xx, a redirect).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// newClient is an HTTP client that follows no redirect (one could aim the
// request, its signature or its token elsewhere) and gives up on a
// request after timeout.
func newClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// send sends r with c, retrying on network errors, 5xx, 408 and 429 (after
// its Retry-After) with backoff within the policy's bounds. It returns the
// attempts made and the last error.
func send(ctx context.Context, c *http.Client, pol retryPolicy, r request) (int, error) {
	deadline := time.Now().Add(pol.total)
	for attempt := 1; ; attempt++ {
		wait, err := sendOnce(ctx, c, r)
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		var perm permanent
		if errors.As(err, &perm) {
			return attempt, err
		}
		if attempt >= pol.attempts {
			return attempt, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		d := backoff(pol, attempt)
		if wait > pol.retryAfter {
			return attempt, fmt.Errorf("gave up: the server asks to wait %s (more than %s): %w", wait, pol.retryAfter, err)
		}
		d = max(d, wait) // Retry-After is a minimum
		if time.Until(deadline) < d {
			return attempt, fmt.Errorf("gave up after %d attempts within %s: %w", attempt, pol.total, err)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the wait after a failed attempt: base·2^(attempt-1), capped,
// half of it random ("equal jitter").
func backoff(pol retryPolicy, attempt int) time.Duration {
	d := pol.base
	for i := 1; i < attempt && d < pol.max; i++ {
		d *= 2
	}
	d = min(d, pol.max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sendOnce makes one attempt. A retryable failure may come with the wait
// the server asked for (Retry-After).
func sendOnce(ctx context.Context, c *http.Client, r request) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, bytes.NewReader(r.body))
	if err != nil {
		return 0, permanent{errors.New("bad request: " + redactURLError(err).Error())}
	}
	req.Header = r.header.Clone()
	req.Header.Set("User-Agent", "anneal-notify")
	resp, err := c.Do(req)
	if err != nil {
		return 0, redactURLError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusTooManyRequests || code >= 500 || code == http.StatusRequestTimeout:
		return retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("status %s", resp.Status)
	case code >= 300 && code < 400:
		return 0, permanent{fmt.Errorf("status %s: a redirect is not followed (it could aim the request elsewhere)", resp.Status)}
	default:
		return 0, permanent{fmt.Errorf("status %s", resp.Status)}
	}
}

// retryAfter parses Retry-After: seconds or an HTTP date (0: none).
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		if s > 86400 {
			s = 86400
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// redactURLError drops the URL from a client error: its path or query may
// be a credential (a Slack webhook's address).
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("%s: timed out: %w", ue.Op, ue.Err)
		}
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
