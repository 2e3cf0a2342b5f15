// Package nodetest holds what tests of node records share: an in-memory
// node.Store and a BMC that does nothing.
package nodetest

import (
	"context"
	"sync"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// Store is an in-memory node.Store. Recs may be filled before use.
type Store struct {
	mu   sync.Mutex
	Recs map[string]*node.Record
}

// NodeRecords returns a copy of every record.
func (m *Store) NodeRecords(context.Context) (map[string]*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*node.Record{}
	for k, v := range m.Recs {
		c := *v
		out[k] = &c
	}
	return out, nil
}

// NodeRecord returns a copy of name's record, nil if none.
func (m *Store) NodeRecord(_ context.Context, name string) (*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.Recs[name]; r != nil {
		c := *r
		return &c, nil
	}
	return nil, nil
}

// UpdateNode stores what fn leaves of name's record.
func (m *Store) UpdateNode(_ context.Context, name string, fn func(*node.Record) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &node.Record{Name: name}
	if old := m.Recs[name]; old != nil {
		c := *old
		r = &c
	}
	if err := fn(r); err != nil {
		return err
	}
	if m.Recs == nil {
		m.Recs = map[string]*node.Record{}
	}
	m.Recs[name] = r
	return nil
}

// BMC answers at once: its server is on, has no firmware inventory and
// ignores every request.
type BMC struct{}

// PowerState reports the server on.
func (BMC) PowerState(context.Context) (node.PowerState, error) { return node.PowerOn, nil }

// SetPower does nothing.
func (BMC) SetPower(context.Context, node.PowerAction) error { return nil }

// BootOnce does nothing.
func (BMC) BootOnce(context.Context, node.BootDevice) error { return nil }

// Firmware reports none.
func (BMC) Firmware(context.Context) (node.Firmware, error) { return node.Firmware{}, nil }
