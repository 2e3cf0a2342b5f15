package dnstest

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// Memory is a dns.Target whose zones live in memory, at serial 1: for
// tests of what drives targets (the reconciler, the API), not of targets.
type Memory struct {
	TargetName string

	mu    sync.Mutex
	zones map[string]map[dns.RRsetKey]dns.RRset
}

// Name implements dns.Target.
func (z *Memory) Name() string { return z.TargetName }

// Serial implements dns.Target: always 1.
func (z *Memory) Serial(context.Context, string) (uint32, error) { return 1, nil }

// ReadZone implements dns.Target: the zone's RRsets sorted by key.
func (z *Memory) ReadZone(_ context.Context, zone string) (*dns.ZoneContent, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	zc := &dns.ZoneContent{Zone: zone, Serial: 1}
	for _, s := range z.zones[zone] {
		zc.RRsets = append(zc.RRsets, s)
	}
	slices.SortFunc(zc.RRsets, func(a, b dns.RRset) int { return strings.Compare(a.Key().String(), b.Key().String()) })
	return zc, nil
}

// Apply implements dns.Target.
func (z *Memory) Apply(_ context.Context, zone string, changes []dns.RRsetChange) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.zones == nil {
		z.zones = map[string]map[dns.RRsetKey]dns.RRset{}
	}
	if z.zones[zone] == nil {
		z.zones[zone] = map[dns.RRsetKey]dns.RRset{}
	}
	for _, c := range changes {
		if c.New == nil {
			delete(z.zones[zone], c.Key())
		} else {
			z.zones[zone][c.Key()] = *c.New
		}
	}
	return len(changes), nil
}

// Count is how many RRsets the target holds, in all its zones.
func (z *Memory) Count() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	n := 0
	for _, rrs := range z.zones {
		n += len(rrs)
	}
	return n
}
