// Package dnstest holds what tests of every reconcile.DNSTarget
// implementation share.
package dnstest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

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

// Set makes an RRset, its data canonicalized as reconcile does (so it
// compares equal to what a server hands back).
func Set(t testing.TB, name string, typ reconcile.RRType, ttl uint32, data ...string) *reconcile.RRset {
	t.Helper()
	s := &reconcile.RRset{Name: name, Type: typ, TTL: ttl}
	for _, d := range data {
		rr, err := dns.NewRR(fmt.Sprintf("%s. %d IN %s %s", name, ttl, typ, d))
		if err != nil {
			t.Fatalf("test data %s %s %q: %v", name, typ, d, err)
		}
		s.Data = append(s.Data, reconcile.CanonicalRData(rr))
	}
	s.Normalize()
	return s
}

// Create is the change that creates s.
func Create(s *reconcile.RRset) reconcile.RRsetChange {
	return reconcile.RRsetChange{Op: reconcile.OpCreate, New: s}
}

// Update is the change from old to new.
func Update(old, new *reconcile.RRset) reconcile.RRsetChange {
	return reconcile.RRsetChange{Op: reconcile.OpUpdate, Old: old, New: new}
}

// Delete is the change that deletes old.
func Delete(old *reconcile.RRset) reconcile.RRsetChange {
	return reconcile.RRsetChange{Op: reconcile.OpDelete, Old: old}
}
