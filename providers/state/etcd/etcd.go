// Package etcd is anneal's state store on etcd: the same state as the
// bbolt store (providers/state/bolt) — the reconciler's status, the DNS
// ownership inventory, the zone snapshot cache, the sync marks, the apply
// journal, the node records and the history of events — behind the same
// interfaces reconcile declares (dns.State, reconcile.StatusStore,
// node.Store, node.Batch, events.Store), so that several anneal daemons
// can share one state (anneal issue 15; leader election comes on top).
//
// Every key lives under one prefix per site, /anneal/<site>/:
//
//	status                            the reconciler's status (JSON)
//	journal                           the apply in flight (JSON)
//	nodes/<node>                      a node record (JSON)
//	owned/<target>/<zone>/<name>/<type>  an RRset anneal owns (empty value)
//	zones/<target>/<zone>             a zone snapshot (dns.EncodeZone)
//	sync/<target>/<zone>              a zone's sync mark (JSON)
//	eventseq                          the last event sequence number
//	events/<seq, 20 digits>           an event (JSON)
//
// Path segments are escaped (url.PathEscape), so a name holding "/" cannot
// reach another key. Read-modify-writes (UpdateNode, UpdateNodes, the
// journal, AppendEvents) are etcd transactions that compare the mod
// revisions of what they read and are retried, a bounded number of times
// (MaxAttempts), when another writer got there first: every update is
// applied exactly once, and event numbers have no gaps. Every value is
// size-checked (MaxValue) before it is written; a stored value that does
// not decode is an error naming its key (errors.Is ErrCorrupt), never a
// panic; every call is bounded by the store's timeout.
//
// Not here yet (bolt has them): a format version and its migrations,
// Backup and CheckFile (etcd's own snapshots back the state up). etcd
// keeps every revision of every key until it is compacted: the cluster
// should run with --auto-compaction-retention. The store does not elect a
// leader: two daemons writing one site stay consistent key by key but
// both drive the fleet (serve's --state etcd:// and leader election come
// with issue 15).
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxValue bounds a stored value: etcd refuses requests above 1.5 MiB by
// default, and a transaction writes several values.
const MaxValue = 1 << 20

// MaxAttempts bounds the tries of a read-modify-write that loses to
// concurrent writers.
const MaxAttempts = 64

// DefaultTimeout bounds one call to the store when Options.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// ErrCorrupt is what every error about a stored value that cannot be read
// is (errors.Is).
var ErrCorrupt = errors.New("corrupt value in etcd")

// ErrConflict says a read-modify-write lost to concurrent writers
// MaxAttempts times.
var ErrConflict = errors.New("too many concurrent writers")

// Options configures a Store.
type Options struct {
	// Timeout bounds each call (0: DefaultTimeout).
	Timeout time.Duration
	// Retention bounds the events kept (zero fields: those of
	// events.DefaultRetention).
	Retention events.Retention
}

// Store is the state of one site in etcd. It is safe for concurrent use,
// by several processes too. It does not own the client.
type Store struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration

	mu        sync.Mutex
	retention events.Retention
}

// New returns the store of site on cli. site names the key prefix
// /anneal/<site>/: not empty, no "/".
func New(cli *clientv3.Client, site string, o Options) (*Store, error) {
	if cli == nil {
		return nil, errors.New("etcd state: no client")
	}
	if site == "" || strings.ContainsAny(site, "/\x00") || site != strings.TrimSpace(site) {
		return nil, fmt.Errorf("etcd state: site %q must be a non-empty name without '/' or blanks around it", site)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Store{cli: cli, prefix: "/anneal/" + site + "/", timeout: o.Timeout, retention: o.Retention}, nil
}

// Prefix returns the store's key prefix.
func (s *Store) Prefix() string { return s.prefix }

var (
	_ dns.State             = (*Store)(nil)
	_ reconcile.StatusStore = (*Store)(nil)
	_ node.Store            = (*Store)(nil)
	_ node.Batch            = (*Store)(nil)
	_ events.Store          = (*Store)(nil)
)

func esc(s string) string { return url.PathEscape(s) }

func (s *Store) key(parts ...string) string {
	for i, p := range parts[1:] {
		parts[i+1] = esc(p)
	}
	return s.prefix + strings.Join(parts, "/")
}

func (s *Store) statusKey() string              { return s.prefix + "status" }
func (s *Store) journalKey() string             { return s.prefix + "journal" }
func (s *Store) nodeKey(name string) string     { return s.key("nodes", name) }
func (s *Store) zoneKey(t, z string) string     { return s.key("zones", t, z) }
func (s *Store) syncKey(t, z string) string     { return s.key("sync", t, z) }
func (s *Store) ownedPrefix(t, z string) string { return s.key("owned", t, z) + "/" }
func (s *Store) nodesPrefix() string            { return s.prefix + "nodes/" }

// ctx bounds a call by the store's timeout.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// corrupt names the key of a value that cannot be read.
func corrupt(key string, err error) error {
	return fmt.Errorf("%w: key %q: %w", ErrCorrupt, key, err)
}

func (s *Store) decode(key string, v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return corrupt(key, err)
	}
	return nil
}

// encode marshals v for key, refusing a value above MaxValue.
func encode(key string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", key, err)
	}
	return sized(key, b)
}

func sized(key string, b []byte) (string, error) {
	if len(b) > MaxValue {
		return "", fmt.Errorf("value of %s is %d bytes, above the limit of %d", key, len(b), MaxValue)
	}
	return string(b), nil
}

// get returns the value at key, nil if none.
func (s *Store) get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	return r.Kvs[0].Value, nil
}

func (s *Store) put(ctx context.Context, key, val string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.cli.Put(ctx, key, val)
	return err
}

// getJSON decodes the value at key into into; found is false if none.
func (s *Store) getJSON(ctx context.Context, key string, into any) (found bool, err error) {
	v, err := s.get(ctx, key)
	if err != nil || v == nil {
		return false, err
	}
	return true, s.decode(key, v, into)
}

// rmw is a read-modify-write of keys in one transaction: fn gets their
// values (nil: absent) and returns the operations to commit, which commit
// only if none of the keys changed meanwhile; otherwise it runs again, at
// most MaxAttempts times. fn may thus run more than once.
func (s *Store) rmw(ctx context.Context, keys []string, fn func(vals [][]byte) ([]clientv3.Op, error)) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	for attempt := range MaxAttempts {
		gets := make([]clientv3.Op, len(keys))
		for i, k := range keys {
			gets[i] = clientv3.OpGet(k)
		}
		r, err := s.cli.Txn(ctx).Then(gets...).Commit()
		if err != nil {
			return err
		}
		vals := make([][]byte, len(keys))
		cmps := make([]clientv3.Cmp, len(keys))
		for i, k := range keys {
			rr := r.Responses[i].GetResponseRange()
			mod := int64(0)
			if rr != nil && len(rr.Kvs) > 0 {
				vals[i] = rr.Kvs[0].Value
				mod = rr.Kvs[0].ModRevision
			}
			cmps[i] = clientv3.Compare(clientv3.ModRevision(k), "=", mod)
		}
		ops, err := fn(vals)
		if err != nil {
			return err
		}
		w, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if w.Succeeded {
			return nil
		}
		// Lost to another writer: a short random pause spreads the
		// contenders out.
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) * int64(min(attempt+1, 10))))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
	return fmt.Errorf("%w: gave up after %d attempts", ErrConflict, MaxAttempts)
}

// LoadStatus returns the reconciler's saved status, or nil.
func (s *Store) LoadStatus(ctx context.Context) (*reconcile.Status, error) {
	st := &reconcile.Status{}
	found, err := s.getJSON(ctx, s.statusKey(), st)
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	if !found {
		return nil, nil
	}
	return st, nil
}

// SaveStatus stores the reconciler's status.
func (s *Store) SaveStatus(ctx context.Context, st *reconcile.Status) error {
	v, err := encode(s.statusKey(), st)
	if err == nil {
		err = s.put(ctx, s.statusKey(), v)
	}
	if err != nil {
		return fmt.Errorf("save status: %w", err)
	}
	return nil
}

// OwnedRRsets lists the RRsets anneal wrote on a target's zone.
func (s *Store) OwnedRRsets(ctx context.Context, target, zone string) (map[dns.RRsetKey]bool, error) {
	p := s.ownedPrefix(target, zone)
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	r, err := s.cli.Get(cctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("read inventory %s/%s: %w", target, zone, err)
	}
	out := make(map[dns.RRsetKey]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		k := string(kv.Key)
		en, et, ok := strings.Cut(strings.TrimPrefix(k, p), "/")
		var name, typ string
		if ok {
			name, err = url.PathUnescape(en)
			if err == nil {
				typ, err = url.PathUnescape(et)
			}
		}
		if !ok || err != nil || name == "" || typ == "" {
			return nil, fmt.Errorf("read inventory %s/%s: %w", target, zone, corrupt(k, errors.New("not <name>/<type>")))
		}
		out[dns.RRsetKey{Name: name, Type: dns.RRType(typ)}] = true
	}
	return out, nil
}

// maxTxnOps stays below etcd's default limit of operations in one
// transaction (128).
const maxTxnOps = 100

// RecordOwned adds and removes RRsets from a zone's inventory. A change
// of more than maxTxnOps RRsets is written in several transactions, each
// idempotent.
func (s *Store) RecordOwned(ctx context.Context, target, zone string, add, remove []dns.RRsetKey) error {
	p := s.ownedPrefix(target, zone)
	var ops []clientv3.Op
	for _, k := range remove {
		ops = append(ops, clientv3.OpDelete(p+esc(k.Name)+"/"+esc(string(k.Type))))
	}
	for _, k := range add {
		ops = append(ops, clientv3.OpPut(p+esc(k.Name)+"/"+esc(string(k.Type)), ""))
	}
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		// A key both removed and added in one call ends added, as in bolt:
		// etcd refuses two operations on one key in a transaction, so the
		// deletes of keys also added are dropped.
		batch := dedupe(ops[:n])
		if _, err := s.cli.Txn(cctx).Then(batch...).Commit(); err != nil {
			return fmt.Errorf("record inventory %s/%s: %w", target, zone, err)
		}
		ops = ops[n:]
	}
	return nil
}

// dedupe keeps the last operation on each key.
func dedupe(ops []clientv3.Op) []clientv3.Op {
	last := map[string]int{}
	for i, op := range ops {
		last[string(op.KeyBytes())] = i
	}
	out := make([]clientv3.Op, 0, len(last))
	for i, op := range ops {
		if last[string(op.KeyBytes())] == i {
			out = append(out, op)
		}
	}
	return out
}

// CachedZone returns the last snapshot of a zone, or nil. A snapshot that
// does not decode is ignored, as in bolt: it only costs a transfer.
func (s *Store) CachedZone(ctx context.Context, target, zone string) (*dns.ZoneContent, error) {
	v, err := s.get(ctx, s.zoneKey(target, zone))
	if err != nil {
		return nil, fmt.Errorf("read zone cache %s/%s: %w", target, zone, err)
	}
	if v == nil {
		return nil, nil
	}
	z, err := dns.DecodeZone(v)
	if err != nil {
		return nil, nil
	}
	return z, nil
}

// CacheZone stores a zone snapshot.
func (s *Store) CacheZone(ctx context.Context, target string, z *dns.ZoneContent) error {
	k := s.zoneKey(target, z.Zone)
	v, err := sized(k, dns.EncodeZone(z))
	if err == nil {
		err = s.put(ctx, k, v)
	}
	if err != nil {
		return fmt.Errorf("cache zone %s/%s: %w", target, z.Zone, err)
	}
	return nil
}

// SyncMark returns a zone's sync mark, or nil.
func (s *Store) SyncMark(ctx context.Context, target, zone string) (*dns.SyncMark, error) {
	m := &dns.SyncMark{}
	found, err := s.getJSON(ctx, s.syncKey(target, zone), m)
	if err != nil {
		return nil, fmt.Errorf("read sync mark %s/%s: %w", target, zone, err)
	}
	if !found {
		return nil, nil
	}
	return m, nil
}

// SetSyncMark stores a zone's sync mark.
func (s *Store) SetSyncMark(ctx context.Context, target, zone string, m *dns.SyncMark) error {
	k := s.syncKey(target, zone)
	v, err := encode(k, m)
	if err == nil {
		err = s.put(ctx, k, v)
	}
	if err != nil {
		return fmt.Errorf("set sync mark %s/%s: %w", target, zone, err)
	}
	return nil
}

// InFlight returns the unfinished apply, or nil.
func (s *Store) InFlight(ctx context.Context) (*dns.ApplyRecord, error) {
	rec := &dns.ApplyRecord{}
	found, err := s.getJSON(ctx, s.journalKey(), rec)
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	if !found {
		return nil, nil
	}
	return rec, nil
}

// BeginApply records an apply and its pending zones. An unfinished earlier
// record is kept merged: its zones stay pending until done.
func (s *Store) BeginApply(ctx context.Context, rec *dns.ApplyRecord) error {
	return s.updateJournal(ctx, func(cur *dns.ApplyRecord) *dns.ApplyRecord { return dns.BeginJournal(cur, rec) })
}

// ZoneDone marks a zone applied.
func (s *Store) ZoneDone(ctx context.Context, target, zone string) error {
	return s.updateJournal(ctx, func(cur *dns.ApplyRecord) *dns.ApplyRecord { return dns.ZoneDoneJournal(cur, target, zone) })
}

// EndApply clears the journal when nothing is pending.
func (s *Store) EndApply(ctx context.Context) error {
	return s.updateJournal(ctx, dns.EndJournal)
}

func (s *Store) updateJournal(ctx context.Context, f func(*dns.ApplyRecord) *dns.ApplyRecord) error {
	k := s.journalKey()
	err := s.rmw(ctx, []string{k}, func(vals [][]byte) ([]clientv3.Op, error) {
		var cur *dns.ApplyRecord
		if vals[0] != nil {
			cur = &dns.ApplyRecord{}
			if err := s.decode(k, vals[0], cur); err != nil {
				return nil, err
			}
		}
		next := f(cur)
		if next == nil {
			return []clientv3.Op{clientv3.OpDelete(k)}, nil
		}
		v, err := encode(k, next)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{clientv3.OpPut(k, v)}, nil
	})
	if err != nil {
		return fmt.Errorf("update journal: %w", err)
	}
	return nil
}

// NodeRecords returns every stored node record by name.
func (s *Store) NodeRecords(ctx context.Context) (map[string]*node.Record, error) {
	p := s.nodesPrefix()
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	r, err := s.cli.Get(cctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read node records: %w", err)
	}
	out := make(map[string]*node.Record, len(r.Kvs))
	for _, kv := range r.Kvs {
		k := string(kv.Key)
		name, err := url.PathUnescape(strings.TrimPrefix(k, p))
		if err != nil {
			return nil, fmt.Errorf("read node records: %w", corrupt(k, err))
		}
		rec := &node.Record{}
		if err := s.decode(k, kv.Value, rec); err != nil {
			return nil, fmt.Errorf("read node records: %w", err)
		}
		out[name] = rec
	}
	return out, nil
}

// NodeRecord returns one node's record, or nil.
func (s *Store) NodeRecord(ctx context.Context, name string) (*node.Record, error) {
	r := &node.Record{}
	found, err := s.getJSON(ctx, s.nodeKey(name), r)
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", name, err)
	}
	if !found {
		return nil, nil
	}
	return r, nil
}

// UpdateNode is a read-modify-write of one node's record in one etcd
// transaction, retried when another writer changed the record meanwhile:
// fn may run more than once and must only change the record it is given.
func (s *Store) UpdateNode(ctx context.Context, name string, fn func(*node.Record) error) error {
	if err := s.updateNodes(ctx, []string{name}, fn, false); err != nil {
		return fmt.Errorf("update node %s: %w", name, err)
	}
	return nil
}

// MaxBatch is how many distinct nodes one transaction of UpdateNodes
// updates: etcd refuses more than 128 operations in one (its default
// --max-txn-ops), and each node takes a read and a write.
const MaxBatch = maxTxnOps / 2

// UpdateNodes is UpdateNode for many nodes: every record is updated, or
// none (the first error aborts them all). Up to MaxBatch nodes are one
// transaction. More are written MaxBatch at a time, after a first run of
// fn over every record as read (fn may run more than once) so that an
// error of fn writes nothing; only an error in the writes themselves (or
// fn failing on a record changed meanwhile) leaves the earlier batches
// written.
func (s *Store) UpdateNodes(ctx context.Context, names []string, fn func(*node.Record) error) error {
	if len(names) == 0 {
		return nil
	}
	err := func() error {
		batches := batchNames(names, MaxBatch)
		if len(batches) > 1 {
			if err := s.tryNodes(ctx, names, fn); err != nil {
				return err
			}
		}
		for _, b := range batches {
			if err := s.updateNodes(ctx, b, fn, true); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		return fmt.Errorf("update %d node records: %w", len(names), err)
	}
	return nil
}

// batchNames splits names into batches of at most n distinct names, every
// occurrence of a name in the batch of its first, in order.
func batchNames(names []string, n int) [][]string {
	batch := map[string]int{}
	var out [][]string
	distinct := 0
	for _, name := range names {
		if _, ok := batch[name]; !ok {
			batch[name] = distinct / n
			distinct++
		}
		i := batch[name]
		if i == len(out) {
			out = append(out, nil)
		}
		out[i] = append(out[i], name)
	}
	return out
}

// tryNodes runs fn over the records as stored, writing nothing: the first
// error is UpdateNodes'.
func (s *Store) tryNodes(ctx context.Context, names []string, fn func(*node.Record) error) error {
	recs, err := s.NodeRecords(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		r := recs[name]
		if r == nil {
			r = &node.Record{Name: name}
			recs[name] = r
		}
		r.Name = name
		if err := fn(r); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	return nil
}

func (s *Store) updateNodes(ctx context.Context, names []string, fn func(*node.Record) error, many bool) error {
	// One read and one write per key in a transaction: a name given twice
	// is updated twice, as bolt does, but read once.
	var keys []string
	idx := map[string]int{}
	for _, n := range names {
		if _, ok := idx[n]; !ok {
			idx[n] = len(keys)
			keys = append(keys, s.nodeKey(n))
		}
	}
	if len(keys)*2 > maxTxnOps {
		return fmt.Errorf("%d nodes in one transaction, above the limit of %d", len(keys), maxTxnOps/2)
	}
	return s.rmw(ctx, keys, func(vals [][]byte) ([]clientv3.Op, error) {
		recs := make([]*node.Record, len(keys))
		for _, name := range names {
			i := idx[name]
			if recs[i] == nil {
				recs[i] = &node.Record{Name: name}
				if vals[i] != nil {
					if err := s.decode(keys[i], vals[i], recs[i]); err != nil {
						return nil, err
					}
				}
			}
			if err := fn(recs[i]); err != nil {
				if many {
					return nil, fmt.Errorf("node %s: %w", name, err)
				}
				return nil, err
			}
			recs[i].Name = name
		}
		ops := make([]clientv3.Op, len(keys))
		for i, r := range recs {
			v, err := encode(keys[i], r)
			if err != nil {
				return nil, err
			}
			ops[i] = clientv3.OpPut(keys[i], v)
		}
		return ops, nil
	})
}
