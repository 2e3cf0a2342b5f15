package etcd_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/state/etcd"
	"github.com/anneal-dev/anneal/providers/state/etcd/etcdtest"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcd covers what only the etcd store has: key layout and sites,
// corrupt and oversized values, the call timeout. One server for all.
func TestEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client

	t.Run("site names", func(t *testing.T) {
		for _, site := range []string{"", "a/b", " a", "a\x00"} {
			if _, err := etcd.New(cli, site, etcd.Options{}); err == nil {
				t.Errorf("New(%q) accepted", site)
			}
		}
		if _, err := etcd.New(nil, "a", etcd.Options{}); err == nil {
			t.Error("New without a client accepted")
		}
	})

	t.Run("sites are apart", func(t *testing.T) {
		ctx := ctxT(t)
		a, err := etcd.New(cli, "apart-a", etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := etcd.New(cli, "apart-ab", etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.UpdateNode(ctx, "n", func(r *node.Record) error { r.BuildID = "x"; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AppendEvents(ctx, []events.Event{{Kind: events.Applied, Time: time.Now()}}); err != nil {
			t.Fatal(err)
		}
		recs, err := b.NodeRecords(ctx)
		if err != nil || len(recs) != 0 {
			t.Fatalf("the other site's nodes: %v, %v", recs, err)
		}
		evs, err := b.Events(ctx, events.Filter{})
		if err != nil || len(evs) != 0 {
			t.Fatalf("the other site's events: %v, %v", evs, err)
		}
		r, err := cli.Get(ctx, "/anneal/apart-a/nodes/n")
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("key /anneal/apart-a/nodes/n: %v, %v", r, err)
		}
	})

	t.Run("corrupt values", func(t *testing.T) {
		s, err := etcd.New(cli, "corrupt", etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p := s.Prefix()
		for _, tc := range []struct {
			name, key, value string
			call             func(ctx context.Context) error
		}{
			{"status", p + "status", "{", func(ctx context.Context) error { _, err := s.LoadStatus(ctx); return err }},
			{"journal", p + "journal", "[]", func(ctx context.Context) error { _, err := s.InFlight(ctx); return err }},
			{"journal update", p + "journal", "nope", func(ctx context.Context) error { return s.ZoneDone(ctx, "t", "z") }},
			{"sync mark", p + "sync/t/z", "\xff", func(ctx context.Context) error { _, err := s.SyncMark(ctx, "t", "z"); return err }},
			{"node", p + "nodes/n", "{\"name\":1}", func(ctx context.Context) error { _, err := s.NodeRecord(ctx, "n"); return err }},
			{"nodes", p + "nodes/n", "x", func(ctx context.Context) error { _, err := s.NodeRecords(ctx); return err }},
			{"node update", p + "nodes/n", "x", func(ctx context.Context) error {
				return s.UpdateNode(ctx, "n", func(*node.Record) error { return nil })
			}},
			{"node key", p + "nodes/%zz", "{}", func(ctx context.Context) error { _, err := s.NodeRecords(ctx); return err }},
			{"inventory key", p + "owned/t/z/no-type", "", func(ctx context.Context) error { _, err := s.OwnedRRsets(ctx, "t", "z"); return err }},
			{"event", p + "events/00000000000000000001", "{", func(ctx context.Context) error { _, err := s.Events(ctx, events.Filter{}); return err }},
			{"event key", p + "events/x", "{}", func(ctx context.Context) error { _, err := s.Events(ctx, events.Filter{}); return err }},
			{"event seq", p + "eventseq", "-1", func(ctx context.Context) error {
				_, err := s.AppendEvents(ctx, []events.Event{{Kind: events.Applied}})
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := ctxT(t)
				if _, err := cli.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
					t.Fatal(err)
				}
				if _, err := cli.Put(ctx, tc.key, tc.value); err != nil {
					t.Fatal(err)
				}
				err := tc.call(ctx)
				if !errors.Is(err, etcd.ErrCorrupt) || !strings.Contains(err.Error(), tc.key) {
					t.Fatalf("error %v, want ErrCorrupt naming %s", err, tc.key)
				}
			})
		}
		// A corrupt zone snapshot only costs a transfer, as in bolt.
		ctx := ctxT(t)
		if _, err := cli.Put(ctx, p+"zones/t/z", "garbage"); err != nil {
			t.Fatal(err)
		}
		if z, err := s.CachedZone(ctx, "t", "z"); z != nil || err != nil {
			t.Fatalf("corrupt zone snapshot: %v, %v; want nil, nil", z, err)
		}
	})

	t.Run("oversized values", func(t *testing.T) {
		ctx := ctxT(t)
		s, err := etcd.New(cli, "big", etcd.Options{})
		if err != nil {
			t.Fatal(err)
		}
		big := strings.Repeat("x", etcd.MaxValue)
		err = s.SaveStatus(ctx, &reconcile.Status{LastError: big})
		if err == nil || !strings.Contains(err.Error(), "above the limit") {
			t.Fatalf("SaveStatus of a big status: %v", err)
		}
		err = s.UpdateNode(ctx, "n", func(r *node.Record) error { r.Reason = big; return nil })
		if err == nil || !strings.Contains(err.Error(), "above the limit") {
			t.Fatalf("UpdateNode to a big record: %v", err)
		}
		err = s.CacheZone(ctx, "t", &dns.ZoneContent{Zone: "z.", RRsets: []dns.RRset{{Name: "a.z.", Type: "TXT", Data: []string{big}}}})
		if err == nil || !strings.Contains(err.Error(), "above the limit") {
			t.Fatalf("CacheZone of a big zone: %v", err)
		}
		if _, err := s.AppendEvents(ctx, []events.Event{{Kind: events.Applied, Message: big}}); err == nil {
			t.Fatal("AppendEvents of a big event accepted")
		}
		if r, err := s.NodeRecord(ctx, "n"); err != nil || r != nil {
			t.Fatalf("a refused record was stored: %v, %v", r, err)
		}
		// Nothing was numbered: the next event is 1.
		evs, err := s.AppendEvents(ctx, []events.Event{{Kind: events.Applied}})
		if err != nil || evs[0].Seq != 1 {
			t.Fatalf("next event: %v, %v; want seq 1", evs, err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		s, err := etcd.New(cli, "slow", etcd.Options{Timeout: time.Nanosecond})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.LoadStatus(ctxT(t))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("LoadStatus under a 1ns timeout: %v, want a deadline error", err)
		}
	})
}
