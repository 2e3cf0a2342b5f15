package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/anneal-dev/anneal/api"
	"github.com/spf13/cobra"
)

// apiError is a non-2xx answer of the API: its JSON {"error": ...} as a
// message, never the raw body.
type apiError struct {
	method, path string
	code         int
	msg          string
	api          bool // the body was the API's JSON error
}

func newAPIError(method, path string, code int, body []byte) *apiError {
	var e struct {
		Error string `json:"error"`
	}
	msg, isAPI := "", false
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg, isAPI = e.Error, true
	} else {
		// Not the API's JSON (a proxy's page, plain text): its first line,
		// bounded and printable.
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		line = strings.Map(func(r rune) rune {
			if unicode.IsPrint(r) {
				return r
			}
			return -1
		}, line)
		if len(line) > 200 {
			line = line[:200] + "…"
		}
		msg = line
	}
	return &apiError{method: method, path: path, code: code, msg: msg, api: isAPI}
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.method, e.path, e.code, http.StatusText(e.code))
	if e.msg != "" {
		s += ": " + e.msg
	}
	if e.code == http.StatusForbidden && !strings.Contains(e.msg, "started without --token") {
		s += "; give the API's token with --token REF (env:NAME or file:PATH)"
	}
	return s
}

func newSuspendCmd() *cobra.Command {
	return newControlCmd("suspend", "Suspend a running anneal serve: it fetches and applies nothing until anneal resume",
		"suspended: nothing is fetched or applied until anneal resume")
}

func newResumeCmd() *cobra.Command {
	return newControlCmd("resume", "Resume a suspended anneal serve (it reconciles at once)",
		"resumed: a reconcile is triggered")
}

func newReconcileCmd() *cobra.Command {
	return newControlCmd("reconcile", "Ask a running anneal serve to reconcile now (fetch, plan, apply); refused while it is suspended",
		"reconcile triggered; follow it with anneal status")
}

// newControlCmd is `anneal VERB`: POST /api/v1/VERB on a running serve,
// with its bearer token.
func newControlCmd(verb, short, done string) *cobra.Command {
	c := &cobra.Command{
		Use:   verb,
		Short: short,
		Args:  noArgs,
	}
	server := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the API's bearer token")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if *tokenRef == "" {
			return usagef("%s needs the API's token: --token REF (env:NAME or file:PATH)", verb)
		}
		token, err := resolveToken(*tokenRef)
		if err != nil {
			return failure(fmt.Errorf("--token: %w", err))
		}
		if verb == "reconcile" {
			// A suspended daemon ignores the trigger: say so rather than
			// "triggered" (flux reconcile refuses a suspended resource too).
			var st api.StatusView
			if err := apiCall(c.Context(), server, http.MethodGet, "/api/v1/status", "", &st); err != nil {
				return failure(err)
			}
			if st.Suspended {
				return failure(errors.New("the daemon is suspended: a reconcile runs nothing until anneal resume"))
			}
			if err := apiCall(c.Context(), server, http.MethodPost, "/api/v1/reconcile", token, nil); err != nil {
				return failure(err)
			}
			fmt.Fprintln(c.OutOrStdout(), done)
			return nil
		}
		var st api.StatusView
		if err := apiCall(c.Context(), server, http.MethodPost, "/api/v1/"+verb, token, &st); err != nil {
			return failure(err)
		}
		if st.Suspended != (verb == "suspend") {
			return failure(fmt.Errorf("the daemon answered, but its status says suspended=%t", st.Suspended))
		}
		fmt.Fprintln(c.OutOrStdout(), done)
		return nil
	}
	return c
}
