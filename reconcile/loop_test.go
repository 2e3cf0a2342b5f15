package reconcile

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/schema"
)

// memState is an in-memory dns.State and StatusStore. onSave, when set,
// sees every status save before it is stored (and may hold it).
type memState struct {
	mu     sync.Mutex
	status *Status
	onSave func(*Status)
}

func (m *memState) OwnedRRsets(context.Context, string, string) (map[dns.RRsetKey]bool, error) {
	return nil, nil
}
func (m *memState) RecordOwned(context.Context, string, string, []dns.RRsetKey, []dns.RRsetKey) error {
	return nil
}
func (m *memState) CachedZone(context.Context, string, string) (*dns.ZoneContent, error) {
	return nil, nil
}
func (m *memState) CacheZone(context.Context, string, *dns.ZoneContent) error { return nil }
func (m *memState) SyncMark(context.Context, string, string) (*dns.SyncMark, error) {
	return nil, nil
}
func (m *memState) SetSyncMark(context.Context, string, string, *dns.SyncMark) error { return nil }
func (m *memState) InFlight(context.Context) (*dns.ApplyRecord, error)               { return nil, nil }
func (m *memState) BeginApply(context.Context, *dns.ApplyRecord) error               { return nil }
func (m *memState) ZoneDone(context.Context, string, string) error                   { return nil }
func (m *memState) EndApply(context.Context) error                                   { return nil }

func (m *memState) LoadStatus(context.Context) (*Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status == nil {
		return nil, nil
	}
	c := *m.status
	return &c, nil
}

func (m *memState) SaveStatus(_ context.Context, s *Status) error {
	if m.onSave != nil {
		m.onSave(s)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := *s
	m.status = &c
	return nil
}

// dirSource serves one revision of a directory; with fail set, every
// fetch fails.
type dirSource struct {
	dir  string
	fail bool
}

func (d dirSource) Latest(context.Context) (Revision, error) {
	if d.fail {
		return Revision{}, errors.New("fetch failed")
	}
	return Revision{ID: "r1"}, nil
}
func (d dirSource) FS(context.Context, string) (fs.FS, error) { return os.DirFS(d.dir), nil }
func (d dirSource) Descends(string, string) (bool, error)     { return true, nil }

// TestSuspendNotOverwrittenByAPass: a pass whose status save is under way
// when SetSuspended(true) runs must not leave suspended=false persisted
// (the pass's copy of the status predates the suspend).
func TestSuspendNotOverwrittenByAPass(t *testing.T) {
	passSaving, release := make(chan struct{}), make(chan struct{})
	suspendSaved := make(chan struct{}, 1)
	st := &memState{}
	st.onSave = func(s *Status) {
		switch {
		case s.Reconciles == 1 && !s.Suspended:
			close(passSaving) // the pass's save: held until released
			<-release
		case s.Suspended:
			suspendSaved <- struct{}{}
		}
	}
	waiting := make(chan struct{})
	r := &Reconciler{Source: dirSource{fail: true}, State: st, Mode: ModeConverge,
		suspendSaving: func() { close(waiting) }}

	passDone := make(chan struct{})
	go func() {
		defer close(passDone)
		r.ReconcileOnce(context.Background())
	}()
	<-passSaving
	suspendErr := make(chan error, 1)
	go func() { suspendErr <- r.SetSuspended(context.Background(), true) }()
	// Either SetSuspended waits for the pass's save (fixed), or it saved
	// beside it (the race): release the pass's stale save after it.
	select {
	case <-waiting:
	case <-suspendSaved:
	}
	close(release)
	<-passDone
	if err := <-suspendErr; err != nil {
		t.Fatal(err)
	}
	saved, _ := st.LoadStatus(context.Background())
	if saved == nil || !saved.Suspended {
		t.Fatalf("persisted status %+v: the pass's save overwrote the suspend", saved)
	}
	if !r.Status().Suspended {
		t.Fatal("in-memory status lost the suspend")
	}
}

// blockingBMC's firmware read blocks until its ctx ends.
type blockingBMC struct {
	nodetest.BMC
	entered chan<- struct{}
	active  *atomic.Int32
}

func (b *blockingBMC) Firmware(ctx context.Context) (node.Firmware, error) {
	b.active.Add(1)
	defer b.active.Add(-1)
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return node.Firmware{}, ctx.Err()
}

// TestRunWaitsForFirmwareReads: Run's ctx cancels the background firmware
// reads, and Run returns only once they have ended and none writes to
// the node store any more.
func TestRunWaitsForFirmwareReads(t *testing.T) {
	entered := make(chan struct{}, 1)
	var active atomic.Int32
	nodes := &nodetest.Store{}
	r := &Reconciler{Source: dirSource{dir: "../examples/site-repo"}, State: &memState{}, Mode: ModeReport, Interval: time.Hour,
		Targets: func(*schema.Site) (map[string]dns.Target, error) { return map[string]dns.Target{}, nil },
		Rebuild: &RebuildConfig{Nodes: nodes,
			BMC: func(node.BMCAccess) (node.BMC, error) {
				return &blockingBMC{entered: entered, active: &active}, nil
			}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	<-entered // a firmware read is under way
	cancel()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	if n := active.Load(); n != 0 {
		t.Fatalf("%d firmware read(s) still running after Run returned", n)
	}
	recs, _ := nodes.NodeRecords(context.Background())
	for name, rec := range recs {
		if !rec.FirmwareAt.IsZero() {
			t.Errorf("%s: a read cut short by the shutdown was recorded", name)
		}
	}
}
