// Package bolt is anneal's embedded state store: one bbolt file holding the
// DNS ownership inventory, the zone snapshot cache, the apply journal, the
// node records, the status and the history of events (events.go).
//
// bbolt over SQLite: the state is a handful of key spaces read and written
// by one process, with no queries beyond prefix scans; bbolt is pure Go (no
// cgo, a static binary), crash-safe (copy-on-write B+tree, fsync per
// transaction). Its layout carries a format version (FormatVersion, in the
// meta bucket): Open migrates an older file and refuses a newer one. The
// store sits behind the small interfaces reconcile declares, so a
// distributed store can replace it without touching the engine.
package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketOwned   = []byte("dns-owned")
	bucketZones   = []byte("dns-zones")
	bucketJournal = []byte("journal")
	bucketSync    = []byte("dns-sync")
	bucketStatus  = []byte("status")
	bucketNodes   = []byte("nodes")
	bucketMeta    = []byte("meta")
	keyStatus     = []byte("reconciler")
	keyInFlight   = []byte("in-flight")
	// keyFormatVersion, in bucketMeta, holds the file's format version in
	// decimal.
	keyFormatVersion = []byte("formatVersion")

	// dataBuckets are the buckets of anneal's state (all but meta).
	dataBuckets = [][]byte{bucketOwned, bucketZones, bucketJournal, bucketSync, bucketStatus, bucketNodes}
)

// FormatVersion is the state file layout this anneal reads and writes.
// Version 0 is a file written before the layout was versioned (no meta
// bucket); its layout is version 1's, so migrating it only stamps the
// version. A change of layout increments FormatVersion and appends a step
// to migrations.
const FormatVersion = 1

// migrations[v] brings a file of format version v to v+1. Open runs the
// steps a file needs, the missing buckets' creation and the new stamp in
// one transaction: a failure leaves the file as it was.
var migrations = []func(*bbolt.Tx) error{
	// 0 -> 1: the layout is unchanged; the stamp is all that is new. (A
	// file from before the nodes or status buckets existed gets them from
	// Open's creation of every missing bucket, as before versioning.)
	0: func(*bbolt.Tx) error { return nil },
}

// Migration says that Open brought an older state file to FormatVersion,
// for the caller to log.
type Migration struct {
	Path     string
	From, To int
}

func (m *Migration) String() string {
	return fmt.Sprintf("state file %s migrated from format version %d to %d", m.Path, m.From, m.To)
}

// ErrFormatTooNew is what every FormatError is (errors.Is).
var ErrFormatTooNew = errors.New("state file format is newer than this anneal supports")

// FormatError refuses a state file written by a newer anneal, in a format
// this one does not know. Nothing was written to the file.
type FormatError struct {
	Path      string
	Version   int // the file's
	Supported int // FormatVersion
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("state file %s has format version %d, newer than the version %d this anneal supports: "+
		"it was written by a newer anneal and was left unchanged; upgrade anneal to that release, or restore "+
		"the backup taken before the upgrade (see docs/operations.md, Upgrades)", e.Path, e.Version, e.Supported)
}

// Is makes errors.Is(err, ErrFormatTooNew) true.
func (e *FormatError) Is(target error) bool { return target == ErrFormatTooNew }

// Store is a bbolt-backed state store. It is safe for concurrent use.
type Store struct {
	db       *bbolt.DB
	path     string
	migrated *Migration

	evMu        sync.Mutex
	evRetention events.Retention
}

// ErrCorrupt is what every CorruptError is (errors.Is).
var ErrCorrupt = errors.New("state file is corrupt")

// CorruptError says the state file cannot be read as it is: a page that
// bbolt's consistency check refuses, one it would crash on, or a stored
// value that does not decode. Its message tells the operator how to
// recover.
type CorruptError struct {
	Path   string
	Detail error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is corrupt (%v): restore it from a backup taken with `anneal backup` "+
		"(see docs/operations.md, Back up and restore), or move it aside to start with an empty state "+
		"(anneal then rebuilds DNS ownership from the site's history and adopts or rebuilds the nodes)", e.Path, e.Detail)
}

func (e *CorruptError) Unwrap() error { return e.Detail }

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// corrupt wraps the detail of a corruption of the file at path.
func corrupt(path string, detail error) error { return &CorruptError{Path: path, Detail: detail} }

// guard runs fn, turning a panic or a memory fault inside bbolt (it reads
// its pages through unchecked pointers into its memory map) into a
// CorruptError of the file at path instead of a crash. Open verifies the
// whole file first; guard covers what goes bad after it.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = corrupt(path, fmt.Errorf("bbolt: %v", p))
		}
	}()
	return fn()
}

// view, update and batch are bbolt's transactions under guard.
func (s *Store) view(fn func(*bbolt.Tx) error) error {
	return guard(s.path, func() error { return s.db.View(fn) })
}

func (s *Store) update(fn func(*bbolt.Tx) error) error {
	return guard(s.path, func() error { return s.db.Update(fn) })
}

func (s *Store) batch(fn func(*bbolt.Tx) error) error {
	return guard(s.path, func() error { return s.db.Batch(fn) })
}

// decode unmarshals a stored JSON value; one that does not decode is a
// corruption of the file.
func (s *Store) decode(what string, v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return corrupt(s.path, fmt.Errorf("%s: %w", what, err))
	}
	return nil
}

// Open opens (creating if needed) the state file at path. Only one process
// may hold it: a second Open waits up to timeout and then fails, so two
// reconcilers never drive one fleet from one state. An existing file is
// verified first, every page of it: a corrupt one is a *CorruptError
// (errors.Is ErrCorrupt) that says how to restore it, never a crash later.
//
// An existing file is opened read-only first, verified and its format
// version read: a file newer than FormatVersion is a *FormatError
// (errors.Is ErrFormatTooNew) and is never opened for writing; a version
// that is not a number is a *CorruptError. An older file is migrated in
// one transaction (Migrated says so, for the caller to log); a new file is
// stamped with FormatVersion.
func Open(path string, timeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	start := time.Now()
	verified := false
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		// Under the shared lock nobody writes the file while it is verified.
		r, err := openDB(path, true, timeout)
		if err != nil {
			return nil, err
		}
		s := &Store{db: r, path: path}
		err = s.verify()
		if err == nil {
			err = s.view(func(tx *bbolt.Tx) error {
				_, _, err := s.formatVersion(tx)
				return err
			})
		}
		r.Close()
		if err != nil {
			return nil, err
		}
		verified = true
	}
	if timeout > 0 { // one wait in all, not one per open
		timeout = max(timeout-time.Since(start), time.Millisecond)
	}
	db, err := openDB(path, false, timeout)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path}
	// A file that did not exist (or was empty) a moment ago: verified now,
	// with the lock held.
	if !verified {
		if err := s.verify(); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.migrate(); err != nil {
		db.Close()
		var ce *CorruptError
		var fe *FormatError
		if errors.As(err, &ce) || errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("init state %s: %w", path, err)
	}
	return s, nil
}

// openDB opens the bbolt file at path under guard, read-only (a shared
// lock) or read-write (an exclusive one), and names what went wrong.
func openDB(path string, readOnly bool, timeout time.Duration) (*bbolt.DB, error) {
	var db *bbolt.DB
	err := guard(path, func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: readOnly, Timeout: timeout})
		return err
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state %s is locked by another anneal process", path)
	}
	var ce *CorruptError
	switch {
	case errors.As(err, &ce):
		return nil, err
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, corrupt(path, err)
	case err != nil:
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return db, nil
}

// formatVersion reads the file's format version: 0 when it has no meta
// bucket (fresh when it has no bucket at all). A version newer than
// FormatVersion is a *FormatError, one that is not a number a
// *CorruptError.
func (s *Store) formatVersion(tx *bbolt.Tx) (v int, fresh bool, err error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		k, _ := tx.Cursor().First()
		return 0, k == nil, nil
	}
	raw := b.Get(keyFormatVersion)
	if raw == nil {
		return 0, false, corrupt(s.path, fmt.Errorf("the %s bucket has no %s", bucketMeta, keyFormatVersion))
	}
	n, err := strconv.ParseUint(string(raw), 10, 31)
	if err != nil {
		shown := raw
		if len(shown) > 32 {
			shown = shown[:32]
		}
		return 0, false, corrupt(s.path, fmt.Errorf("format version %q is not a version number (a decimal integer below 2^31)", shown))
	}
	if n > FormatVersion {
		return int(n), false, &FormatError{Path: s.path, Version: int(n), Supported: FormatVersion}
	}
	return int(n), false, nil
}

// migrate brings the file to FormatVersion in one transaction: every
// missing bucket created, the migration steps the file's version needs
// run, the version stamped. A newer file is refused before anything is
// written (the transaction is rolled back).
func (s *Store) migrate() error {
	return s.update(func(tx *bbolt.Tx) error {
		v, fresh, err := s.formatVersion(tx)
		if err != nil {
			return err
		}
		for _, b := range append(slices.Clone(dataBuckets), optionalBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if !fresh && v == FormatVersion {
			return nil
		}
		if !fresh {
			for from := v; from < FormatVersion; from++ {
				if err := migrations[from](tx); err != nil {
					return fmt.Errorf("migrate format version %d to %d: %w", from, from+1, err)
				}
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keyFormatVersion, []byte(strconv.Itoa(FormatVersion))); err != nil {
			return err
		}
		if !fresh {
			s.migrated = &Migration{Path: s.path, From: v, To: FormatVersion}
		}
		return nil
	})
}

// Migrated says whether Open migrated the file from an older format
// version, and from which: nil when it was current or new.
func (s *Store) Migrated() *Migration { return s.migrated }

// verify checks every page of the store's file: first a bounds-checked walk
// of the file's bytes (verifyFile), then bbolt's consistency check, which
// the walk makes safe to run.
func (s *Store) verify() error {
	if err := verifyFile(s.path); err != nil {
		return corrupt(s.path, err)
	}
	return s.view(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return corrupt(s.path, errors.Join(errs...))
		}
		return nil
	})
}

// Close releases the file.
func (s *Store) Close() error { return s.db.Close() }

// FileInfo is what CheckFile reports of a sound state file.
type FileInfo struct {
	// FormatVersion is the file's layout version: 0 for a file written
	// before versioning, which Open migrates.
	FormatVersion int
	// Status is the reconciler's status it holds, nil if none.
	Status *reconcile.Status
}

// CheckFile opens a store file read-only, checks every page of it
// (bbolt's consistency check) and its format version, and reports the
// version and the status it holds: how a backup is known to be sound
// before it replaces anything. A file newer than FormatVersion is a
// *FormatError: this anneal cannot vouch for it. The file must be as long
// as Backup announced: bbolt maps a file and reads past the end of a
// truncated one.
func CheckFile(path string) (*FileInfo, error) {
	var db *bbolt.DB
	err := guard(path, func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	s := &Store{db: db, path: path}
	if err := s.verify(); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	info := &FileInfo{}
	err = s.view(func(tx *bbolt.Tx) error {
		v, _, err := s.formatVersion(tx)
		if err != nil {
			return err
		}
		info.FormatVersion = v
		var errs []error
		for _, b := range dataBuckets {
			if tx.Bucket(b) == nil {
				errs = append(errs, fmt.Errorf("no %s bucket: not an anneal state file", b))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if info.Status, err = s.LoadStatus(context.Background()); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	return info, nil
}

// Backup writes a consistent copy of the whole store to w (one read
// transaction: writers go on meanwhile), and returns its size. sized, when
// not nil, is told the size before anything is written. The copy is a
// store file of its own: Open reads it.
func (s *Store) Backup(ctx context.Context, w io.Writer, sized func(int64)) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		if sized != nil {
			sized(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("back up the state: %w", err)
	}
	return n, nil
}

func zoneKey(target, zone string) []byte { return []byte(target + "\x00" + zone) }

func rrsetKey(k dns.RRsetKey) []byte { return []byte(k.Name + "\x00" + string(k.Type)) }

// OwnedRRsets lists the RRsets anneal wrote on a target's zone.
func (s *Store) OwnedRRsets(ctx context.Context, target, zone string) (map[dns.RRsetKey]bool, error) {
	out := map[dns.RRsetKey]bool{}
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOwned).Bucket(zoneKey(target, zone))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			name, typ, ok := strings.Cut(string(k), "\x00")
			if !ok {
				return corrupt(s.path, fmt.Errorf("inventory %s/%s: key %q has no type", target, zone, k))
			}
			out[dns.RRsetKey{Name: name, Type: dns.RRType(typ)}] = true
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read inventory %s/%s: %w", target, zone, err)
	}
	return out, ctx.Err()
}

// RecordOwned adds and removes RRsets from a zone's inventory.
func (s *Store) RecordOwned(ctx context.Context, target, zone string, add, remove []dns.RRsetKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		b, err := tx.Bucket(bucketOwned).CreateBucketIfNotExists(zoneKey(target, zone))
		if err != nil {
			return err
		}
		for _, k := range remove {
			if err := b.Delete(rrsetKey(k)); err != nil {
				return err
			}
		}
		for _, k := range add {
			if err := b.Put(rrsetKey(k), nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// CachedZone returns the last snapshot of a zone, or nil.
func (s *Store) CachedZone(ctx context.Context, target, zone string) (*dns.ZoneContent, error) {
	var data []byte
	err := s.view(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketZones).Get(zoneKey(target, zone)); v != nil {
			data = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil || data == nil {
		return nil, err
	}
	z, err := dns.DecodeZone(data)
	if err != nil {
		return nil, nil // a corrupt cache entry only costs a transfer
	}
	return z, ctx.Err()
}

// CacheZone stores a zone snapshot.
func (s *Store) CacheZone(ctx context.Context, target string, z *dns.ZoneContent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data := dns.EncodeZone(z)
	return s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketZones).Put(zoneKey(target, z.Zone), data)
	})
}

// SyncMark returns a zone's sync mark, or nil.
func (s *Store) SyncMark(ctx context.Context, target, zone string) (*dns.SyncMark, error) {
	var m *dns.SyncMark
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketSync).Get(zoneKey(target, zone))
		if v == nil {
			return nil
		}
		m = &dns.SyncMark{}
		return s.decode("sync mark "+target+"/"+zone, v, m)
	})
	if err != nil {
		return nil, fmt.Errorf("read sync mark %s/%s: %w", target, zone, err)
	}
	return m, ctx.Err()
}

// SetSyncMark stores a zone's sync mark.
func (s *Store) SetSyncMark(ctx context.Context, target, zone string, m *dns.SyncMark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSync).Put(zoneKey(target, zone), v)
	})
}

// LoadStatus returns the reconciler's saved status, or nil.
func (s *Store) LoadStatus(ctx context.Context) (*reconcile.Status, error) {
	var st *reconcile.Status
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketStatus).Get(keyStatus)
		if v == nil {
			return nil
		}
		st = &reconcile.Status{}
		return s.decode("status", v, st)
	})
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	return st, ctx.Err()
}

// SaveStatus stores the reconciler's status.
func (s *Store) SaveStatus(ctx context.Context, st *reconcile.Status) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketStatus).Put(keyStatus, v) })
}

// InFlight returns the unfinished apply, or nil.
func (s *Store) InFlight(ctx context.Context) (*dns.ApplyRecord, error) {
	var rec *dns.ApplyRecord
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketJournal).Get(keyInFlight)
		if v == nil {
			return nil
		}
		rec = &dns.ApplyRecord{}
		return s.decode("journal", v, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return rec, ctx.Err()
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
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		var cur *dns.ApplyRecord
		if v := b.Get(keyInFlight); v != nil {
			cur = &dns.ApplyRecord{}
			if err := s.decode("journal", v, cur); err != nil {
				return err
			}
		}
		next := f(cur)
		if next == nil {
			return b.Delete(keyInFlight)
		}
		v, err := json.Marshal(next)
		if err != nil {
			return err
		}
		return b.Put(keyInFlight, v)
	})
}

var (
	_ dns.State             = (*Store)(nil)
	_ reconcile.StatusStore = (*Store)(nil)
)

// NodeRecords returns every stored node record by name.
func (s *Store) NodeRecords(ctx context.Context) (map[string]*node.Record, error) {
	out := map[string]*node.Record{}
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
			r := &node.Record{}
			if err := s.decode("node "+string(k), v, r); err != nil {
				return err
			}
			out[string(k)] = r
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read node records: %w", err)
	}
	return out, ctx.Err()
}

// NodeRecord returns one node's record, or nil.
func (s *Store) NodeRecord(ctx context.Context, name string) (*node.Record, error) {
	var r *node.Record
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketNodes).Get([]byte(name))
		if v == nil {
			return nil
		}
		r = &node.Record{}
		return s.decode("node "+name, v, r)
	})
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", name, err)
	}
	return r, ctx.Err()
}

// UpdateNode is a read-modify-write of one node's record in one
// transaction. Concurrent updates are batched into shared transactions
// (bbolt's Batch), so fn may run more than once: it must only change the
// record it is given.
func (s *Store) UpdateNode(ctx context.Context, name string, fn func(*node.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.batch(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		r := &node.Record{Name: name}
		if v := b.Get([]byte(name)); v != nil {
			if err := s.decode("node "+name, v, r); err != nil {
				return err
			}
		}
		if err := fn(r); err != nil {
			return err
		}
		r.Name = name
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return fmt.Errorf("update node %s: %w", name, err)
	}
	return nil
}

// UpdateNodes is UpdateNode for many nodes in one transaction: every
// record is updated, or none (the first error aborts them all).
func (s *Store) UpdateNodes(ctx context.Context, names []string, fn func(*node.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		for _, name := range names {
			r := &node.Record{Name: name}
			if v := b.Get([]byte(name)); v != nil {
				if err := s.decode("node "+name, v, r); err != nil {
					return err
				}
			}
			if err := fn(r); err != nil {
				return fmt.Errorf("node %s: %w", name, err)
			}
			r.Name = name
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(name), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update %d node records: %w", len(names), err)
	}
	return nil
}
