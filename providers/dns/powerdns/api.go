package powerdns

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// httpError is an API answer with a status other than 2xx.
type httpError struct {
	Status int
	// Text is PowerDNS's "error" field, or the start of the body.
	Text string
}

func (e *httpError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Text)
}

// maxErrorText bounds how much of an error body goes into a message.
const maxErrorText = 512

// zonePath is the API path of a zone, under the server. PowerDNS's zone id
// is the absolute name with "/" written "=2F" (RFC 2317 zones).
func zonePath(zone string) string {
	id := strings.ReplaceAll(zone+".", "/", "=2F")
	return "/zones/" + url.PathEscape(id)
}

// call sends one API request to path under the server and, on a 2xx
// answer, hands the body to decode (nil: the body is dropped). The whole
// exchange, body included, is bounded by timeout. A non-2xx answer is an
// *httpError; anything else is the transport's or decode's error.
func (t *Target) call(ctx context.Context, method, path string, body []byte, timeout time.Duration, decode func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", t.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	t.requests.Add(1)
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return &httpError{Status: resp.StatusCode, Text: t.errorText(raw)}
	}
	if decode == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return decode(resp.Body)
}

// errorText extracts PowerDNS's message from an error body: the "error"
// field of a JSON body, else the body's first line. The key is scrubbed
// from it, in case a proxy or server ever echoes the request.
func (t *Target) errorText(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	text := ""
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		text = e.Error
	} else {
		text, _, _ = strings.Cut(strings.TrimSpace(string(raw)), "\n")
	}
	text = strings.ReplaceAll(text, t.key, "[api key]")
	if len(text) > maxErrorText {
		text = text[:maxErrorText] + "…"
	}
	return text
}

// classify turns a failed call into a classified error for op on zone.
// 404 answers are the caller's to interpret (see notFound).
func (t *Target) classify(ctx context.Context, zone, op string, err error) *dns.TargetError {
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case he.Status == http.StatusUnauthorized:
			return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API key refused by %s: %w", t.apiURL, he))
		case he.Status == http.StatusForbidden:
			return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API access refused by %s (check the API key and webserver-allow-from): %w", t.apiURL, he))
		case he.Status == http.StatusTooManyRequests || he.Status >= 500:
			return t.fail(zone, op, dns.ClassTransient, fmt.Errorf("API %s: %w", t.apiURL, he))
		case he.Status == http.StatusRequestEntityTooLarge:
			return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API %s: %w: lower the target's maximum body size", t.apiURL, he))
		default:
			return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API %s: %w", t.apiURL, he))
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return t.fail(zone, op, dns.ClassTransient, fmt.Errorf("API %s: %w", t.apiURL, cerr))
	}
	// The URL is in every message already: keep what went wrong.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = fmt.Errorf("%s: %w", strings.ToUpper(ue.Op), ue.Err)
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var cert *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &syn) || errors.As(err, &typ):
		return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API %s: unexpected answer: %w", t.apiURL, err))
	case errors.As(err, &cert) || errors.As(err, &unknownCA) || errors.As(err, &host) || errors.As(err, &invalid):
		return t.fail(zone, op, dns.ClassPermanent, fmt.Errorf("API %s: TLS: %w", t.apiURL, err))
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return t.fail(zone, op, dns.ClassTransient, fmt.Errorf("API %s: no answer in time: %w", t.apiURL, err))
	}
	// Refused or reset connections, a body cut short: try again later.
	return t.fail(zone, op, dns.ClassTransient, fmt.Errorf("API %s: %w", t.apiURL, err))
}

// isStatus reports whether err is an API answer with this status.
func isStatus(err error, status int) bool {
	var he *httpError
	return errors.As(err, &he) && he.Status == status
}

// notFound explains a 404 about a zone: the server id is wrong (or the URL
// is not PowerDNS's API), or the zone does not exist, which anneal does
// not fix: the operator creates zones.
func (t *Target) notFound(ctx context.Context, zone, op string) *dns.TargetError {
	err := t.call(ctx, http.MethodGet, "", nil, t.timeout, nil)
	if isStatus(err, http.StatusNotFound) {
		return t.fail(zone, op, dns.ClassPermanent, &missingError{fmt.Sprintf("server %q not found at %s: check the API URL and server id", t.serverID, t.apiURL)})
	}
	return t.fail(zone, op, dns.ClassPermanent, &missingError{fmt.Sprintf("zone not found on target (%s server %s): anneal does not create zones; create it with an SOA and NS records", t.apiURL, t.serverID)})
}

// missingError is a zone or server the API does not have.
type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

// decodeJSON returns a decode function for call that fills v.
func decodeJSON(v any) func(io.Reader) error {
	return func(r io.Reader) error { return json.NewDecoder(r).Decode(v) }
}
