package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The page walk below checks, from the file's bytes and with every bound
// checked, what bbolt trusts when it reads: that every page the current
// meta page reaches lies inside the file, is of the kind its parent says,
// is reached once (no cycles), and that every element's key and value lie
// inside its page. bbolt reads its pages through unchecked pointers into
// its memory map, so a file that fails this walk can crash the process
// (index out of range, a fault past the map, endless descent through a
// cycle) where neither recover nor bbolt's own tx.Check helps: Check runs
// on a goroutine of its own and walks the same pointers. Once this walk
// passes, tx.Check is safe to run for the rest (key order, freed pages
// still in use, pages leaked).
//
// The layout is bbolt's version 2 format (go.etcd.io/bbolt/internal/common),
// in the machine's byte order, which is little-endian on every platform
// anneal ships for.

const (
	pageHeaderSize  = 16 // id uint64, flags uint16, count uint16, overflow uint32
	elementSize     = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	bucketValueSize = 16 // root pgid uint64, sequence uint64; an inline page follows when root is 0

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	noFreelist     = ^uint64(0)
	metaChecksumAt = 56 // the checksum covers the meta's first 56 bytes

	// maxTreeDepth bounds the walk: a B+tree of 4 KiB pages is a few
	// levels deep for any state anneal keeps.
	maxTreeDepth = 64
)

var le = binary.LittleEndian

// pageFile reads one bbolt file's pages with their bounds checked.
type pageFile struct {
	r        io.ReaderAt
	size     int64  // of the file
	pageSize uint64 // from the meta page
	hwm      uint64 // the meta's high-water mark: pages 0..hwm-1 exist
	seen     map[uint64]bool
}

// meta is the part of a meta page the walk needs.
type meta struct {
	pageSize, root, freelist, hwm, txid uint64
}

// verifyFile walks the page tree of the bbolt file at path; nil when every
// reachable page is sound enough for bbolt to read.
func verifyFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	return verifyPages(f, st.Size())
}

func verifyPages(r io.ReaderAt, size int64) error {
	m, err := currentMeta(r, size)
	if err != nil {
		return err
	}
	if m.hwm > uint64(size)/m.pageSize {
		return fmt.Errorf("the file is %d bytes but its pages reach %d: truncated", size, m.hwm*m.pageSize)
	}
	pf := &pageFile{r: r, size: size, pageSize: m.pageSize, hwm: m.hwm, seen: map[uint64]bool{}}
	if m.freelist != noFreelist {
		if err := pf.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	return pf.walk(m.root, 0)
}

// currentMeta returns the meta page bbolt uses: the valid one of the two
// with the higher transaction id.
func currentMeta(r io.ReaderAt, size int64) (meta, error) {
	var best meta
	var errs []error
	found := false
	// Page 0's meta gives the page size; page 1 sits one page after it.
	var pageSize uint64
	for i := range 2 {
		off := int64(i) * int64(pageSize)
		buf := make([]byte, pageHeaderSize+64)
		if off+int64(len(buf)) > size {
			errs = append(errs, fmt.Errorf("meta page %d: past the end of the file (%d bytes)", i, size))
			break
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return meta{}, fmt.Errorf("meta page %d: %w", i, err)
		}
		m, err := parseMeta(buf)
		if err != nil {
			errs = append(errs, fmt.Errorf("meta page %d: %w", i, err))
			if i == 0 {
				pageSize = uint64(os.Getpagesize()) // bbolt's guess too
			}
			continue
		}
		if i == 0 {
			pageSize = m.pageSize
		}
		if !found || m.txid > best.txid {
			best, found = m, true
		}
	}
	if !found {
		return meta{}, errors.Join(errs...)
	}
	return best, nil
}

func parseMeta(buf []byte) (meta, error) {
	if flags := le.Uint16(buf[8:]); flags&metaPageFlag == 0 {
		return meta{}, fmt.Errorf("not a meta page (flags %#x)", flags)
	}
	b := buf[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(b[:metaChecksumAt])
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return meta{}, errors.New("not a bbolt file (bad magic)")
	case le.Uint32(b[4:]) != boltVersion:
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", le.Uint32(b[4:]), boltVersion)
	case le.Uint64(b[metaChecksumAt:]) != h.Sum64():
		return meta{}, errors.New("checksum mismatch")
	}
	m := meta{pageSize: uint64(le.Uint32(b[8:])), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if m.pageSize < 1024 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return meta{}, fmt.Errorf("page size %d", m.pageSize)
	}
	return m, nil
}

// page reads page id with its overflow pages, checking that they lie
// below the high-water mark and inside the file and were not reached
// before.
func (pf *pageFile) page(id uint64) ([]byte, error) {
	if id < 2 || id >= pf.hwm {
		return nil, fmt.Errorf("page %d: out of bounds (the file has pages 2 to %d)", id, pf.hwm-1)
	}
	head := make([]byte, pageHeaderSize)
	if _, err := pf.r.ReadAt(head, int64(id*pf.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := le.Uint64(head); got != id {
		return nil, fmt.Errorf("page %d: says it is page %d", id, got)
	}
	overflow := uint64(le.Uint32(head[12:]))
	if id+overflow >= pf.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages reach past the last page %d", id, overflow, pf.hwm-1)
	}
	for i := id; i <= id+overflow; i++ {
		if pf.seen[i] {
			return nil, fmt.Errorf("page %d: reached twice", i)
		}
		pf.seen[i] = true
	}
	buf := make([]byte, (overflow+1)*pf.pageSize)
	if _, err := pf.r.ReadAt(buf, int64(id*pf.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return buf, nil
}

func (pf *pageFile) checkFreelist(id uint64) error {
	buf, err := pf.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags := le.Uint16(buf[8:]); flags != freelistPageFlag {
		return fmt.Errorf("page %d: the freelist page has flags %#x", id, flags)
	}
	data := buf[pageHeaderSize:]
	count := uint64(le.Uint16(buf[10:]))
	if count == 0xFFFF {
		count = le.Uint64(data)
		data = data[8:]
	}
	if count > uint64(len(data))/8 {
		return fmt.Errorf("page %d: the freelist says %d free pages, its page holds at most %d", id, count, len(data)/8)
	}
	for i := range count {
		if free := le.Uint64(data[i*8:]); free < 2 || free >= pf.hwm {
			return fmt.Errorf("page %d: the freelist names page %d, out of bounds", id, free)
		}
	}
	return nil
}

// walk checks the branch or leaf page id and everything below it.
func (pf *pageFile) walk(id uint64, depth int) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: the tree is deeper than %d levels", id, maxTreeDepth)
	}
	buf, err := pf.page(id)
	if err != nil {
		return err
	}
	return pf.walkPage(id, buf, depth)
}

// walkPage checks the elements of a branch or leaf page held in buf (a
// page of the file, or an inline bucket's page inside a value).
func (pf *pageFile) walkPage(id uint64, buf []byte, depth int) error {
	flags, count := le.Uint16(buf[8:]), int(le.Uint16(buf[10:]))
	if flags != branchPageFlag && flags != leafPageFlag {
		return fmt.Errorf("page %d: not a branch or leaf page (flags %#x)", id, flags)
	}
	if pageHeaderSize+count*elementSize > len(buf) {
		return fmt.Errorf("page %d: %d elements do not fit in %d bytes", id, count, len(buf))
	}
	for i := range count {
		at := pageHeaderSize + i*elementSize
		e := buf[at : at+elementSize]
		if flags == branchPageFlag {
			if _, err := span(buf, at, le.Uint32(e[0:]), le.Uint32(e[4:])); err != nil {
				return fmt.Errorf("page %d: element %d: key %w", id, i, err)
			}
			if err := pf.walk(le.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		pos, ksize, vsize := le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		if _, err := span(buf, at, pos, ksize); err != nil {
			return fmt.Errorf("page %d: element %d: key %w", id, i, err)
		}
		value, err := span(buf, at, pos+ksize, vsize)
		if err != nil || pos+ksize < pos {
			return fmt.Errorf("page %d: element %d: value out of its page", id, i)
		}
		if le.Uint32(e[0:])&bucketLeafFlag == 0 {
			continue
		}
		if len(value) < bucketValueSize {
			return fmt.Errorf("page %d: element %d: a bucket of %d bytes", id, i, len(value))
		}
		if root := le.Uint64(value); root != 0 {
			if err := pf.walk(root, depth+1); err != nil {
				return err
			}
			continue
		}
		inline := value[bucketValueSize:]
		if len(inline) < pageHeaderSize {
			return fmt.Errorf("page %d: element %d: an inline bucket of %d bytes", id, i, len(inline))
		}
		if depth >= maxTreeDepth {
			return fmt.Errorf("page %d: buckets nested deeper than %d levels", id, maxTreeDepth)
		}
		if err := pf.walkPage(id, inline, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// span returns buf[at+pos : at+pos+n] when it lies inside buf.
func span(buf []byte, at int, pos, n uint32) ([]byte, error) {
	start := uint64(at) + uint64(pos)
	end := start + uint64(n)
	if end > uint64(len(buf)) {
		return nil, fmt.Errorf("out of its page (%d bytes at %d, the page has %d)", n, start, len(buf))
	}
	return buf[start:end], nil
}
