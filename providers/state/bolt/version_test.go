package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// rawFile writes a bbolt file at path with raw bbolt (no Open): fn fills
// it. With noFreelistSync the file has no freelist page, as a newer anneal
// may write it: bbolt's read-write open then writes one at once.
func rawFile(t *testing.T, path string, noFreelistSync bool, fn func(*bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: noFreelistSync})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// preVersion fills a file as anneal did before the format was versioned:
// the data buckets, no meta bucket, a node record and a status.
func preVersion(tx *bbolt.Tx) error {
	for _, b := range dataBuckets {
		if _, err := tx.CreateBucket(b); err != nil {
			return err
		}
	}
	rec, _ := json.Marshal(&node.Record{Name: "n1", State: node.Verified, BuildID: "b1"})
	st, _ := json.Marshal(&reconcile.Status{AppliedRevision: "abc123"})
	return errors.Join(tx.Bucket(bucketNodes).Put([]byte("n1"), rec), tx.Bucket(bucketStatus).Put(keyStatus, st))
}

// stamped is preVersion plus a meta bucket holding version v as is.
func stamped(v string) func(*bbolt.Tx) error {
	return func(tx *bbolt.Tx) error {
		if err := preVersion(tx); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if v == "" { // a meta bucket without the version
			return nil
		}
		return b.Put(keyFormatVersion, []byte(v))
	}
}

// rawVersion reads the stamp from the file with raw bbolt: nil when there
// is no meta bucket.
func rawVersion(t *testing.T, path string) []byte {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	_ = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			v = append([]byte{}, b.Get(keyFormatVersion)...)
		}
		return nil
	})
	return v
}

// TestStateFormatVersion: Open stamps a new file, migrates a file from before
// versioning (its data intact), and refuses, without writing a byte, a
// file from a newer anneal or one whose version is not a number;
// CheckFile reports the version, or the same refusal.
func TestStateFormatVersion(t *testing.T) {
	ctx := context.Background()
	current := strconv.Itoa(FormatVersion)
	newer := strconv.Itoa(FormatVersion + 1)
	for _, tc := range []struct {
		name  string
		build func(*bbolt.Tx) error // nil: no file before Open
		// noFreelistSync: build the file without a freelist page.
		noFreelistSync bool
		// checkVersion is what CheckFile reports before Open (-1: no
		// check, the file is not a whole anneal state).
		checkVersion int
		migrated     *Migration // from Open; Path is filled in
		err          error      // errors.Is of Open's and CheckFile's error
		errText      []string
	}{
		{name: "fresh", checkVersion: -1},
		{name: "empty bbolt file", build: func(*bbolt.Tx) error { return nil }, checkVersion: -1},
		{name: "before versioning", build: preVersion, checkVersion: 0, migrated: &Migration{From: 0, To: FormatVersion}},
		{name: "before versioning, without the nodes bucket", build: func(tx *bbolt.Tx) error {
			if err := preVersion(tx); err != nil {
				return err
			}
			return tx.DeleteBucket(bucketNodes)
		}, checkVersion: -1, migrated: &Migration{From: 0, To: FormatVersion}},
		{name: "current", build: stamped(current), checkVersion: FormatVersion},
		{name: "newer", build: stamped(newer), err: ErrFormatTooNew, errText: []string{
			"format version " + newer, "version " + current + " this anneal supports", "upgrade anneal", "restore", "backup", "left unchanged"}},
		// A read-write open would write this file's freelist: the version
		// is read before it, read-only.
		{name: "newer, without a freelist page", build: stamped(newer), noFreelistSync: true, err: ErrFormatTooNew, errText: []string{"format version " + newer}},
		{name: "much newer", build: stamped("4000000000"), err: ErrCorrupt, errText: []string{`format version "4000000000" is not a version number`}},
		{name: "not a number", build: stamped("one"), err: ErrCorrupt, errText: []string{`format version "one" is not a version number`, "restore it from a backup"}},
		{name: "negative", build: stamped("-1"), err: ErrCorrupt, errText: []string{`format version "-1" is not a version number`}},
		{name: "a NUL byte", build: stamped("\x00"), err: ErrCorrupt, errText: []string{`format version "\x00" is not a version number`}},
		{name: "no version in the meta bucket", build: stamped(""), err: ErrCorrupt, errText: []string{"the meta bucket has no formatVersion"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			var before []byte
			if tc.build != nil {
				rawFile(t, path, tc.noFreelistSync, tc.build)
				var err error
				if before, err = os.ReadFile(path); err != nil {
					t.Fatal(err)
				}
				info, err := CheckFile(path)
				switch {
				case tc.err != nil:
					if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), path) {
						t.Errorf("CheckFile: %v, want %v naming the file", err, tc.err)
					}
				case tc.checkVersion >= 0 && (err != nil || info.FormatVersion != tc.checkVersion):
					t.Errorf("CheckFile: %+v, %v; want version %d", info, err, tc.checkVersion)
				}
			}

			s, err := Open(path, time.Second)
			if tc.err != nil {
				if err == nil {
					s.Close()
					t.Fatal("opened")
				}
				if !errors.Is(err, tc.err) {
					t.Errorf("Open: %v, want %v", err, tc.err)
				}
				for _, want := range append([]string{"state file " + path}, tc.errText...) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Open's error lacks %q: %v", want, err)
					}
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
					t.Error("the refused file was written")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.migrated != nil {
				tc.migrated.Path = path
			}
			if got := s.Migrated(); (got == nil) != (tc.migrated == nil) || got != nil && *got != *tc.migrated {
				t.Errorf("Migrated() = %v, want %v", got, tc.migrated)
			}
			if tc.build != nil && tc.checkVersion == 0 { // the data came through the migration
				rec, err := s.NodeRecord(ctx, "n1")
				if err != nil || rec == nil || rec.State != node.Verified || rec.BuildID != "b1" {
					t.Errorf("node n1 after the migration: %+v, %v", rec, err)
				}
				if st, err := s.LoadStatus(ctx); err != nil || st == nil || st.AppliedRevision != "abc123" {
					t.Errorf("status after the migration: %+v, %v", st, err)
				}
			}
			// Every bucket is there.
			if err := s.UpdateNode(ctx, "n2", func(*node.Record) error { return nil }); err != nil {
				t.Error(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if v := rawVersion(t, path); string(v) != current {
				t.Errorf("stamped %q, want %q", v, current)
			}
			info, err := CheckFile(path)
			if err != nil || info.FormatVersion != FormatVersion {
				t.Errorf("CheckFile after Open: %+v, %v", info, err)
			}
			// A second Open has nothing to migrate.
			s = open(t, path)
			defer s.Close()
			if m := s.Migrated(); m != nil {
				t.Errorf("reopened: Migrated() = %v", m)
			}
		})
	}
}
