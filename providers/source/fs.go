package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/schema"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Errors for tree entries the fs.FS does not follow. A site repo has no use
// for them; they are reported when opened, as *fs.PathError wrapping these.
var (
	ErrSymlink   = errors.New("is a symbolic link in the git tree (links are not followed)")
	ErrSubmodule = errors.New("is a git submodule (submodules are not read)")
	ErrTooLarge  = errors.New("is larger than a site file may be")
)

// MaxBlobBytes bounds a file the FS reads into memory: a commit cannot make
// the daemon hold a blob of gigabytes. It is the loader's default bound on
// one file, which checks Stat's size first and so never gets this far.
const MaxBlobBytes = schema.DefaultMaxFileBytes

// FS returns a read-only file system over the tree of commit h, or over its
// folder subdir ("" or "." for the whole tree). Nothing is checked out:
// files are read from the object store as they are opened. Every file and
// folder has the commit's time as its modification time.
//
// The FS implements fs.ReadDirFS, fs.ReadFileFS and fs.StatFS, and is safe
// for concurrent use. Symbolic links and submodules are listed by ReadDir
// (a submodule as an irregular folder) but fail to open.
func (r *Repo) FS(h plumbing.Hash, subdir string) (fs.FS, error) {
	sub := strings.TrimSuffix(subdir, "/")
	if sub == "" {
		sub = "."
	}
	if !fs.ValidPath(sub) {
		return nil, fmt.Errorf("site folder %q in commit %s: not a valid slash-separated relative path", subdir, h)
	}
	r.mu.Lock()
	c, err := r.commit(h)
	var root plumbing.Hash
	if err == nil {
		root = c.TreeHash
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f := &treeFS{repo: r, modTime: c.Committer.When, dirs: map[plumbing.Hash]*dirNode{}, sizes: map[plumbing.Hash]int64{}}
	f.root = entry{name: ".", mode: filemode.Dir, hash: root}
	if sub == "." {
		return f, nil
	}
	e, err := f.lookup(sub)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("site folder %s does not exist in commit %s", sub, h)
	case err != nil:
		return nil, fmt.Errorf("site folder %s in commit %s: %w", sub, h, err)
	case e.mode != filemode.Dir:
		return nil, fmt.Errorf("site folder %s in commit %s is not a folder", sub, h)
	}
	f.root = entry{name: ".", mode: filemode.Dir, hash: e.hash}
	return f, nil
}

// treeFS is an fs.FS over a git tree.
type treeFS struct {
	repo    *Repo
	root    entry
	modTime time.Time

	// mu guards the caches; it is never held together with repo.mu.
	mu    sync.Mutex
	dirs  map[plumbing.Hash]*dirNode // trees read so far, by hash
	sizes map[plumbing.Hash]int64    // blob sizes read so far
}

var (
	_ fs.ReadDirFS  = (*treeFS)(nil)
	_ fs.ReadFileFS = (*treeFS)(nil)
	_ fs.StatFS     = (*treeFS)(nil)
)

// entry is one entry of a git tree.
type entry struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
}

// dirNode is a tree's entries sorted by name (git sorts folders as if their
// name ended in a slash; fs.ReadDir wants plain name order).
type dirNode struct {
	entries []entry
	byName  map[string]int
}

// tree returns the entries of the tree h, reading it once.
func (f *treeFS) tree(h plumbing.Hash) (*dirNode, error) {
	f.mu.Lock()
	d := f.dirs[h]
	f.mu.Unlock()
	if d != nil {
		return d, nil
	}
	f.repo.mu.Lock()
	t, err := object.GetTree(f.repo.repo.Storer, h)
	f.repo.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	d = &dirNode{entries: make([]entry, 0, len(t.Entries)), byName: make(map[string]int, len(t.Entries))}
	for _, te := range t.Entries {
		if te.Name == "" || te.Name == "." || te.Name == ".." || strings.ContainsAny(te.Name, "/\x00") {
			return nil, fmt.Errorf("tree %s holds an invalid entry name %q", h, te.Name)
		}
		d.entries = append(d.entries, entry{name: te.Name, mode: te.Mode, hash: te.Hash})
	}
	slices.SortFunc(d.entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	for i, e := range d.entries {
		d.byName[e.name] = i
	}
	f.mu.Lock()
	if prev := f.dirs[h]; prev != nil {
		d = prev
	} else {
		f.dirs[h] = d
	}
	f.mu.Unlock()
	return d, nil
}

// lookup finds the entry at a valid path. Missing paths give fs.ErrNotExist;
// a symlink or submodule on the way gives ErrSymlink or ErrSubmodule.
func (f *treeFS) lookup(name string) (entry, error) {
	if name == "." {
		return f.root, nil
	}
	cur := f.root
	rest, walked := name, ""
	for {
		elem, more, _ := strings.Cut(rest, "/")
		if err := checkFollow(cur); err != nil {
			return entry{}, fmt.Errorf("%s %w", walked, err)
		}
		if cur.mode != filemode.Dir {
			return entry{}, fs.ErrNotExist
		}
		d, err := f.tree(cur.hash)
		if err != nil {
			return entry{}, err
		}
		i, ok := d.byName[elem]
		if !ok {
			return entry{}, fs.ErrNotExist
		}
		cur = d.entries[i]
		walked = path.Join(walked, elem)
		if more == "" {
			return cur, nil
		}
		rest = more
	}
}

// checkFollow refuses to open or descend into links and submodules.
func checkFollow(e entry) error {
	switch e.mode {
	case filemode.Symlink:
		return ErrSymlink
	case filemode.Submodule:
		return ErrSubmodule
	}
	return nil
}

// resolve is lookup for an operation that opens the entry itself.
func (f *treeFS) resolve(op, name string) (entry, error) {
	if !fs.ValidPath(name) {
		return entry{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	e, err := f.lookup(name)
	if err == nil {
		err = checkFollow(e)
	}
	if err == nil && !isFile(e.mode) && e.mode != filemode.Dir {
		err = fmt.Errorf("unsupported git file mode %v", e.mode)
	}
	if err != nil {
		return entry{}, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return e, nil
}

func isFile(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

// Open opens a file or folder.
func (f *treeFS) Open(name string) (fs.File, error) {
	e, err := f.resolve("open", name)
	if err != nil {
		return nil, err
	}
	if e.mode == filemode.Dir {
		d, err := f.tree(e.hash)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dirFile{fs: f, info: f.info(e, 0), dir: d}, nil
	}
	data, err := f.blob(e.hash)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{info: f.info(e, int64(len(data))), r: bytes.NewReader(data)}, nil
}

// ReadFile reads a whole file; the caller owns the returned bytes.
func (f *treeFS) ReadFile(name string) ([]byte, error) {
	e, err := f.resolve("read", name)
	if err != nil {
		return nil, err
	}
	if e.mode == filemode.Dir {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	data, err := f.blob(e.hash)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return data, nil
}

// ReadDir lists a folder, sorted by name.
func (f *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := f.resolve("readdir", name)
	if err != nil {
		return nil, err
	}
	if e.mode != filemode.Dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	d, err := f.tree(e.hash)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return f.dirEntries(d.entries), nil
}

func (f *treeFS) dirEntries(es []entry) []fs.DirEntry {
	out := make([]fs.DirEntry, len(es))
	for i, e := range es {
		out[i] = dirEntry{fs: f, e: e}
	}
	return out
}

// Stat describes a file or folder (following nothing: a link or submodule
// is an error, as for Open).
func (f *treeFS) Stat(name string) (fs.FileInfo, error) {
	e, err := f.resolve("stat", name)
	if err != nil {
		return nil, err
	}
	var size int64
	if isFile(e.mode) {
		if size, err = f.size(e.hash); err != nil {
			return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
		}
	}
	return f.info(e, size), nil
}

// blob reads a file's content.
func (f *treeFS) blob(h plumbing.Hash) ([]byte, error) {
	f.repo.mu.Lock()
	defer f.repo.mu.Unlock()
	b, err := object.GetBlob(f.repo.repo.Storer, h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	if b.Size > MaxBlobBytes {
		return nil, fmt.Errorf("blob %s of %d bytes %w (%d bytes)", h, b.Size, ErrTooLarge, MaxBlobBytes)
	}
	rd, err := b.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	data := make([]byte, 0, b.Size)
	buf := bytes.NewBuffer(data)
	n, err := io.Copy(buf, io.LimitReader(rd, MaxBlobBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	if n > MaxBlobBytes {
		return nil, fmt.Errorf("blob %s %w (%d bytes)", h, ErrTooLarge, MaxBlobBytes)
	}
	return buf.Bytes(), nil
}

// size is a file's size, read from the object's header when the storage
// allows it.
func (f *treeFS) size(h plumbing.Hash) (int64, error) {
	f.mu.Lock()
	n, ok := f.sizes[h]
	f.mu.Unlock()
	if ok {
		return n, nil
	}
	f.repo.mu.Lock()
	var err error
	if s, ok := f.repo.repo.Storer.(interface {
		EncodedObjectSize(plumbing.Hash) (int64, error)
	}); ok {
		n, err = s.EncodedObjectSize(h)
	} else {
		var b *object.Blob
		if b, err = object.GetBlob(f.repo.repo.Storer, h); err == nil {
			n = b.Size
		}
	}
	f.repo.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("size of blob %s: %w", h, err)
	}
	f.mu.Lock()
	f.sizes[h] = n
	f.mu.Unlock()
	return n, nil
}

func (f *treeFS) info(e entry, size int64) *fileInfo {
	return &fileInfo{name: e.name, size: size, mode: fsMode(e.mode), modTime: f.modTime}
}

// fsMode maps a git file mode: files are read-only, executables keep their
// execute bits, a submodule is an irregular folder.
func fsMode(m filemode.FileMode) fs.FileMode {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o555
	case filemode.Executable:
		return 0o555
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	case filemode.Submodule:
		return fs.ModeDir | fs.ModeIrregular | 0o555
	case filemode.Regular, filemode.Deprecated:
		return 0o444
	}
	return fs.ModeIrregular | 0o444
}

type fileInfo struct {
	name    string
	size    int64
	mode    fs.FileMode
	modTime time.Time
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.size }
func (i *fileInfo) Mode() fs.FileMode  { return i.mode }
func (i *fileInfo) ModTime() time.Time { return i.modTime }
func (i *fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *fileInfo) Sys() any           { return nil }

// dirEntry is a listed entry; its Info does not follow links (like lstat).
type dirEntry struct {
	fs *treeFS
	e  entry
}

func (d dirEntry) Name() string      { return d.e.name }
func (d dirEntry) IsDir() bool       { return fsMode(d.e.mode).IsDir() }
func (d dirEntry) Type() fs.FileMode { return fsMode(d.e.mode).Type() }
func (d dirEntry) String() string    { return fs.FormatDirEntry(d) }
func (d dirEntry) Info() (fs.FileInfo, error) {
	var size int64
	if isFile(d.e.mode) {
		var err error
		if size, err = d.fs.size(d.e.hash); err != nil {
			return nil, &fs.PathError{Op: "stat", Path: d.e.name, Err: err}
		}
	}
	return d.fs.info(d.e, size), nil
}

// file is an opened file, its content read whole (site files are small).
type file struct {
	info   *fileInfo
	r      *bytes.Reader
	closed bool
}

func (f *file) Stat() (fs.FileInfo, error) {
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.info.name, Err: fs.ErrClosed}
	}
	return f.info, nil
}

func (f *file) Read(p []byte) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.info.name, Err: fs.ErrClosed}
	}
	return f.r.Read(p)
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.info.name, Err: fs.ErrClosed}
	}
	return f.r.ReadAt(p, off)
}

func (f *file) Seek(off int64, whence int) (int64, error) {
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.info.name, Err: fs.ErrClosed}
	}
	return f.r.Seek(off, whence)
}

func (f *file) Close() error {
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.info.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

// dirFile is an opened folder.
type dirFile struct {
	fs     *treeFS
	info   *fileInfo
	dir    *dirNode
	off    int
	closed bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "stat", Path: d.info.name, Err: fs.ErrClosed}
	}
	return d.info, nil
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}

func (d *dirFile) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.info.name, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}

// ReadDir lists the next n entries (all remaining ones when n <= 0).
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.info.name, Err: fs.ErrClosed}
	}
	rest := d.dir.entries[d.off:]
	if n <= 0 {
		d.off = len(d.dir.entries)
		return d.fs.dirEntries(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.off += len(rest)
	return d.fs.dirEntries(rest), nil
}

var _ fs.ReadDirFile = (*dirFile)(nil)

// String names the FS in messages.
func (f *treeFS) String() string { return fmt.Sprintf("git tree %s", f.root.hash) }
