package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/anneal-dev/anneal/providers/state/bolt"
)

// rawState writes a state file with raw bbolt: anneal's buckets, a
// status, and a meta bucket holding version unless it is "" (a file from
// before versioning).
func rawState(t *testing.T, version string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range []string{"dns-owned", "dns-zones", "journal", "dns-sync", "status", "nodes"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		st, _ := json.Marshal(map[string]any{"appliedRevision": "abc123"})
		if err := tx.Bucket([]byte("status")).Put([]byte("reconciler"), st); err != nil {
			return err
		}
		if version == "" {
			return nil
		}
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return meta.Put([]byte("formatVersion"), []byte(version))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStateFormatVersion: serve and plan refuse a state file of a newer
// format, exit 1 with the message that names the file, both versions and
// the way back, and leave the file as it was; they migrate a file from
// before versioning and log it.
func TestStateFormatVersion(t *testing.T) {
	for _, name := range []string{"ANNEAL_TSIG_SECRET", "ANNEAL_PDNS_API_KEY", "ANNEAL_BMC_PASSWORD"} {
		t.Setenv(name, "c2VjcmV0LWZvci10ZXN0cw==")
	}
	secrets := "../../examples/lab-secrets.yaml"
	newer := strconv.Itoa(bolt.FormatVersion + 1)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"serve", []string{"serve", "--site", example, "--secrets", secrets, "--listen", "127.0.0.1:0"}},
		{"plan", []string{"plan", "--site", example, "--secrets", secrets}},
	} {
		t.Run(tc.name+" newer", func(t *testing.T) {
			path := rawState(t, newer)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			code, out, errs := runCLI(t, append(tc.args, "--state", path)...)
			if code != exitError {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitError, out, errs)
			}
			for _, want := range []string{"state file " + path + " has format version " + newer,
				"version " + strconv.Itoa(bolt.FormatVersion) + " this anneal supports", "upgrade anneal", "restore the backup", "docs/operations.md"} {
				if !strings.Contains(errs, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errs)
				}
			}
			if after, _ := os.ReadFile(path); string(after) != string(before) {
				t.Error("the refused file was written")
			}
		})
	}
	t.Run("plan migrates", func(t *testing.T) {
		path := rawState(t, "")
		// The lab's DNS targets are not running: plan fails after the
		// state is open, which is enough.
		_, _, errs := runCLI(t, "plan", "--site", example, "--secrets", secrets, "--state", path)
		want := `msg="state file migrated to this anneal's format" file=` + path + " from=0 to=" + strconv.Itoa(bolt.FormatVersion)
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
		info, err := bolt.CheckFile(path)
		if err != nil || info.FormatVersion != bolt.FormatVersion || info.Status == nil || info.Status.AppliedRevision != "abc123" {
			t.Errorf("after plan: %+v, %v", info, err)
		}
	})
}
