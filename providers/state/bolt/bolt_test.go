package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInventorySurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	a := dns.RRsetKey{Name: "a.example.net", Type: dns.TypeA}
	b := dns.RRsetKey{Name: "b.example.net", Type: dns.TypeAAAA}
	if err := s.RecordOwned(ctx, "bind", "example.net", []dns.RRsetKey{a, b}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordOwned(ctx, "bind", "example.net", nil, []dns.RRsetKey{a}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	got, err := s.OwnedRRsets(ctx, "bind", "example.net")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[dns.RRsetKey]bool{b: true}) {
		t.Fatalf("owned %v", got)
	}
	other, _ := s.OwnedRRsets(ctx, "pdns", "example.net")
	if len(other) != 0 {
		t.Fatalf("inventory leaks across targets: %v", other)
	}
}

func TestZoneCacheAndSyncMarks(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	if z, err := s.CachedZone(ctx, "bind", "example.net"); z != nil || err != nil {
		t.Fatalf("empty cache: %v %v", z, err)
	}
	z := &dns.ZoneContent{Zone: "example.net", Serial: 7, RRsets: []dns.RRset{{Name: "a.example.net", Type: dns.TypeA, TTL: 300, Data: []string{"10.0.0.1"}}}}
	if err := s.CacheZone(ctx, "bind", z); err != nil {
		t.Fatal(err)
	}
	got, err := s.CachedZone(ctx, "bind", "example.net")
	if err != nil || !reflect.DeepEqual(got, z) {
		t.Fatalf("cache round trip: %+v %v", got, err)
	}
	m := &dns.SyncMark{Serial: 7, Desired: "abc", Owned: 3, Findings: []dns.Finding{{Kind: dns.FindingOrphanPTR, Target: "bind"}}}
	if err := s.SetSyncMark(ctx, "bind", "", m); err != nil {
		t.Fatal(err)
	}
	if got, err := s.SyncMark(ctx, "bind", ""); err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("sync mark round trip: %+v %v", got, err)
	}
}

func TestJournal(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	rec := &dns.ApplyRecord{Started: time.Unix(1700000000, 0).UTC(), Revision: "r1", Pending: map[string]int{"bind/a": 2, "bind/b": 1}}
	if err := s.BeginApply(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.ZoneDone(ctx, "bind", "a"); err != nil {
		t.Fatal(err)
	}
	// An apply that ends with zones pending keeps the record.
	if err := s.EndApply(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.InFlight(ctx)
	if err != nil || got == nil || !reflect.DeepEqual(got.Pending, map[string]int{"bind/b": 1}) {
		t.Fatalf("in flight: %+v %v", got, err)
	}
	if err := s.ZoneDone(ctx, "bind", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.EndApply(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.InFlight(ctx); got != nil {
		t.Fatalf("journal not cleared: %+v", got)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	defer s.Close()
	_, err := Open(path, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "locked by another anneal process") {
		t.Fatalf("second open: %v", err)
	}
}

func TestNodeRecords(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	// Concurrent read-modify-writes of one record lose nothing.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.Attempts++; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// A failing update changes nothing.
	boom := errors.New("boom")
	err := s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.State = node.Failed; return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if err := s.UpdateNode(ctx, "n2", func(r *node.Record) error {
		r.State, r.BuildID = node.Verified, "b2"
		r.Facts = &node.Facts{Hostname: "n2"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	all, err := s.NodeRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all["n1"].Attempts != 50 || all["n1"].State != node.Unknown || all["n1"].Name != "n1" {
		t.Fatalf("n1 = %+v (of %d records)", all["n1"], len(all))
	}
	n2, err := s.NodeRecord(ctx, "n2")
	if err != nil || n2 == nil || n2.BuildID != "b2" || n2.Facts.Hostname != "n2" {
		t.Fatalf("n2 = %+v, %v", n2, err)
	}
	if r, err := s.NodeRecord(ctx, "absent"); r != nil || err != nil {
		t.Fatalf("absent = %+v, %v", r, err)
	}
}

// TestBackup: a backup taken while writers go on is a whole store file,
// of the size announced, holding what was there; a bbolt file that is not
// anneal's fails the check.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "state.db"))
	defer s.Close()
	if err := s.SaveStatus(ctx, &reconcile.Status{AppliedRevision: "abc123"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.State = node.Verified; return nil }); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writers go on during the backup
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.Reason = strings.Repeat("x", i%100); return nil })
		}
	}()
	var buf bytes.Buffer
	size := int64(-1)
	n, err := s.Backup(ctx, &buf, func(sz int64) { size = sz })
	close(stop)
	wg.Wait()
	if err != nil || n != size || int64(buf.Len()) != n {
		t.Fatalf("backup: %d bytes (announced %d, buffer %d), %v", n, size, buf.Len(), err)
	}
	file := filepath.Join(dir, "backup.db")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := CheckFile(file)
	if err != nil || info.Status == nil || info.Status.AppliedRevision != "abc123" || info.FormatVersion != FormatVersion {
		t.Fatalf("CheckFile: %+v, %v", info, err)
	}
	// The copy opens as a store.
	b := open(t, file)
	if rec, err := b.NodeRecord(ctx, "n1"); err != nil || rec == nil || rec.State != node.Verified {
		t.Fatalf("node record in the copy: %v, %v", rec, err)
	}
	b.Close()

	other := filepath.Join(dir, "other.db")
	db, err := bbolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := CheckFile(other); err == nil || !strings.Contains(err.Error(), "not an anneal state file") {
		t.Errorf("a bbolt file that is not anneal's: %v", err)
	}
}
