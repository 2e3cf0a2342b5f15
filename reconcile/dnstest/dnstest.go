// Package dnstest holds what tests of every reconcile.DNSTarget
// implementation share.
package dnstest

import (
	"errors"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
)

// WantClass fails the test unless err is a *reconcile.TargetError of the
// class that names the target, and returns it.
func WantClass(t testing.TB, err error, class reconcile.ErrorClass, target string) *reconcile.TargetError {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a %s error", class)
	}
	var te *reconcile.TargetError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *reconcile.TargetError", err, err)
	}
	if te.Class != class {
		t.Fatalf("error class %s, want %s: %v", te.Class, class, err)
	}
	if te.Target != target || !strings.Contains(err.Error(), target) {
		t.Fatalf("error does not name the target %s: %v", target, err)
	}
	return te
}
