package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// writeState writes a real store with an inventory of many RRsets (several
// leaf pages under a branch page), node records, a status and a journal,
// and returns its path and its bytes.
func writeState(t *testing.T) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	var keys []dns.RRsetKey
	for i := range 2000 {
		keys = append(keys, dns.RRsetKey{Name: fmt.Sprintf("rr-%04d.example.net", i), Type: dns.TypeA})
	}
	for _, err := range []error{
		s.RecordOwned(ctx, "bind", "example.net", keys, nil),
		s.SaveStatus(ctx, &reconcile.Status{AppliedRevision: "abc123"}),
		s.BeginApply(ctx, &dns.ApplyRecord{Revision: "r1", Pending: map[string]int{"bind/example.net": 1}}),
		s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.State = node.Verified; return nil }),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// pagesOf lists the ids of the file's pages with the given flags whose
// bytes hold contains.
func pagesOf(data []byte, flags uint16, contains string) []int {
	ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
	var ids []int
	for id := 2; (id+1)*ps <= len(data); id++ {
		p := data[id*ps : (id+1)*ps]
		if binary.LittleEndian.Uint64(p) == uint64(id) && binary.LittleEndian.Uint16(p[8:]) == flags && bytes.Contains(p, []byte(contains)) {
			ids = append(ids, id)
		}
	}
	return ids
}

// readAll calls every reading method of a store; none may panic.
func readAll(ctx context.Context, s *Store) error {
	_, err1 := s.OwnedRRsets(ctx, "bind", "example.net")
	_, err2 := s.NodeRecords(ctx)
	_, err3 := s.NodeRecord(ctx, "n1")
	_, err4 := s.LoadStatus(ctx)
	_, err5 := s.InFlight(ctx)
	_, err6 := s.SyncMark(ctx, "bind", "example.net")
	_, err7 := s.CachedZone(ctx, "bind", "example.net")
	err8 := s.UpdateNode(ctx, "n2", func(*node.Record) error { return nil })
	err9 := s.RecordOwned(ctx, "bind", "example.net", []dns.RRsetKey{{Name: "x.example.net", Type: dns.TypeA}}, nil)
	return errors.Join(err1, err2, err3, err4, err5, err6, err7, err8, err9)
}

// checkCorrupt fails the test unless err is the corruption error an
// operator can act on.
func checkCorrupt(t *testing.T, path string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	msg := err.Error()
	for _, want := range []string{"state file " + path + " is corrupt (", "`anneal backup`", "docs/operations.md", "move it aside"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error lacks %q:\n%s", want, msg)
		}
	}
}

// TestCorruptPage: a state file with a page corrupted the way a disk does
// it is refused by Open with an error naming the file, the page and how to
// restore it. Before, Open succeeded and the first OwnedRRsets panicked
// (bbolt's cursor on a page that is not a branch or leaf), on every start.
func TestCorruptPage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   uint16 // of the page to corrupt
		holding string
		corrupt func(page []byte)
		want    string
	}{
		{"inventory leaf page's type", leafPageFlag, "rr-1000.example.net",
			func(p []byte) { binary.LittleEndian.PutUint16(p[8:], 0x20) }, "not a branch or leaf page (flags 0x20)"},
		{"inventory leaf page zeroed", leafPageFlag, "rr-1000.example.net",
			func(p []byte) { clear(p) }, "says it is page 0"},
		{"inventory leaf element count", leafPageFlag, "rr-1000.example.net",
			func(p []byte) { binary.LittleEndian.PutUint16(p[10:], 0xfff0) }, "elements do not fit"},
		{"inventory leaf key offset", leafPageFlag, "rr-1000.example.net",
			func(p []byte) { binary.LittleEndian.PutUint32(p[pageHeaderSize+4:], 1<<30) }, "out of its page"},
		{"inventory branch points far away", branchPageFlag, "rr-1",
			func(p []byte) { binary.LittleEndian.PutUint64(p[pageHeaderSize+8:], 1<<40) }, "out of bounds"},
		{"inventory branch points to itself", branchPageFlag, "rr-1",
			func(p []byte) {
				binary.LittleEndian.PutUint64(p[pageHeaderSize+8:], binary.LittleEndian.Uint64(p))
			}, "reached twice"},
		{"node record's JSON", leafPageFlag, `"n1"`,
			func(p []byte) {
				i := bytes.Index(p, []byte(`{"name":"n1"`))
				copy(p[i:], `!!!!`)
			}, "node n1: invalid character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, data := writeState(t)
			ids := pagesOf(data, tc.flags, tc.holding)
			if len(ids) == 0 {
				if tc.holding == `"n1"` { // node records live inline in a leaf of the root
					ids = pagesOf(data, leafPageFlag, `{"name":"n1"`)
				}
				if len(ids) == 0 {
					t.Fatalf("no page with flags %#x holds %q", tc.flags, tc.holding)
				}
			}
			ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
			tc.corrupt(data[ids[0]*ps : (ids[0]+1)*ps])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s, err := Open(path, time.Second)
			if err == nil {
				// A value that does not decode is found when read.
				defer s.Close()
				err = readAll(ctx, s)
			}
			checkCorrupt(t, path, err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the error lacks %q:\n%v", tc.want, err)
			}
			// The backup check refuses it too.
			if _, err := CheckFile(path); err == nil {
				t.Errorf("CheckFile accepts the corrupt file")
			}
		})
	}
}

// TestCorruptFileNeverPanics: random bytes at random offsets in the
// file's pages, and the file truncated at various lengths: Open either
// refuses it with ErrCorrupt or gives a store whose every method returns,
// errors being ErrCorrupt, and none panics.
func TestCorruptFileNeverPanics(t *testing.T) {
	path, data := writeState(t)
	ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
	pages := len(data) / ps
	r := rand.New(rand.NewPCG(11, 7))
	type mutation struct {
		name string
		data []byte
	}
	var muts []mutation
	for i := range 60 {
		d := bytes.Clone(data)
		page := 2 + r.IntN(pages-2)
		if i%4 == 0 { // now and then the metas too
			page = r.IntN(2)
		}
		for range 1 + r.IntN(8) {
			off := page*ps + r.IntN(ps)
			if i%3 == 0 {
				off = page*ps + r.IntN(64) // the header and first elements
			}
			d[off] = byte(r.Uint32())
		}
		muts = append(muts, mutation{fmt.Sprintf("page %d bytes", page), d})
	}
	for _, n := range []int{0, 100, ps, 2 * ps, 3*ps + 17, len(data) / 2, len(data) - ps, len(data) - 1} {
		muts = append(muts, mutation{fmt.Sprintf("truncated to %d", n), bytes.Clone(data[:n])})
	}
	ctx := context.Background()
	for i, m := range muts {
		t.Run(fmt.Sprintf("%02d %s", i, m.name), func(t *testing.T) {
			file := filepath.Join(filepath.Dir(path), fmt.Sprintf("m%02d.db", i))
			if err := os.WriteFile(file, m.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(file, time.Second)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && len(m.data) >= 2*ps {
					t.Fatalf("Open: %v, want ErrCorrupt", err)
				}
				return
			}
			defer s.Close()
			if err := readAll(ctx, s); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a read of an opened store: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestCorruptAfterOpen: a page that goes bad while the store is open (the
// disk, or someone writing the file) makes the store's methods return the
// corruption error, not crash the daemon: bbolt's panics and its faults
// past the file are caught at the store's boundary.
func TestCorruptAfterOpen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   uint16
		holding string
		corrupt func(page []byte)
	}{
		{"leaf page's type", leafPageFlag, "rr-1000.example.net", func(p []byte) { binary.LittleEndian.PutUint16(p[8:], 0x20) }},
		{"branch points far away", branchPageFlag, "rr-1", func(p []byte) { binary.LittleEndian.PutUint64(p[pageHeaderSize+8:], 1<<40) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, data := writeState(t)
			s := open(t, path)
			defer s.Close()
			id := pagesOf(data, tc.flags, tc.holding)[0]
			ps := int(binary.LittleEndian.Uint32(data[pageHeaderSize+8:]))
			page := bytes.Clone(data[id*ps : (id+1)*ps])
			tc.corrupt(page)
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(page, int64(id*ps)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			_, err = s.OwnedRRsets(context.Background(), "bind", "example.net")
			checkCorrupt(t, path, err)
		})
	}
}
