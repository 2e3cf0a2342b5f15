// Package dnstest holds what tests of every dns.Target
// implementation share.
package dnstest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// WantClass fails the test unless err is a *dns.TargetError of the
// class that names the target, and returns it.
func WantClass(t testing.TB, err error, class dns.ErrorClass, target string) *dns.TargetError {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a %s error", class)
	}
	var te *dns.TargetError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *dns.TargetError", err, err)
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
func Set(t testing.TB, name string, typ dns.RRType, ttl uint32, data ...string) *dns.RRset {
	t.Helper()
	s := &dns.RRset{Name: name, Type: typ, TTL: ttl}
	for _, d := range data {
		rr, err := mdns.NewRR(fmt.Sprintf("%s. %d IN %s %s", name, ttl, typ, d))
		if err != nil {
			t.Fatalf("test data %s %s %q: %v", name, typ, d, err)
		}
		s.Data = append(s.Data, dns.CanonicalRData(rr))
	}
	s.Normalize()
	return s
}

// Create is the change that creates s.
func Create(s *dns.RRset) dns.RRsetChange {
	return dns.RRsetChange{Op: dns.OpCreate, New: s}
}

// Update is the change from old to new.
func Update(old, new *dns.RRset) dns.RRsetChange {
	return dns.RRsetChange{Op: dns.OpUpdate, Old: old, New: new}
}

// Delete is the change that deletes old.
func Delete(old *dns.RRset) dns.RRsetChange {
	return dns.RRsetChange{Op: dns.OpDelete, Old: old}
}
