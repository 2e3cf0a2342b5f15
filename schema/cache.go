package schema

import (
	"crypto/sha256"
	"sync"
)

// Cache keeps what loading each file produced, by path and content, so a
// load after a commit that changed a few files parses and validates only
// those. It holds the typed documents as parsed (before any check derives
// fields from them) and the file's bytes, not YAML trees: a reused
// document is parsed again only if a diagnostic needs its positions. It
// keeps only the files of the last load. Safe for concurrent use; the zero
// value is not usable, a nil *Cache disables caching.
type Cache struct {
	mu    sync.Mutex
	files map[cacheKey]*cachedFile
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{files: map[cacheKey]*cachedFile{}} }

type cacheKey struct {
	path string
	sum  [sha256.Size]byte
}

type cachedFile struct {
	docs     []cachedDoc
	rejected []rejected
	diags    Diagnostics
	// What the file counts toward the site's limits, as if parsed again.
	ndocs     int
	values    int64
	docValues []docValues
	// The limits it was parsed under: its diagnostics and where it stopped
	// depend on them.
	limits Limits
}

type cachedDoc struct {
	kind, name string
	index      int
	obj        any // pristine: cloned out for every load
	dns        *pendingDNS
}

func (c *Cache) get(path string, sum [sha256.Size]byte, data []byte, l Limits) (fileResult, bool) {
	if c == nil {
		return fileResult{}, false
	}
	c.mu.Lock()
	f, ok := c.files[cacheKey{path, sum}]
	c.mu.Unlock()
	if !ok || f.limits != l {
		return fileResult{}, false
	}
	res := fileResult{sum: sum, rejected: f.rejected, diags: f.diags, ndocs: f.ndocs, values: f.values, docValues: f.docValues}
	src := &sourceFile{data: data}
	for _, d := range f.docs {
		doc := &document{file: path, kind: d.kind, name: d.name, src: src, index: d.index}
		if d.dns != nil {
			res.docs = append(res.docs, parsed{doc: doc, dns: d.dns})
			continue
		}
		obj, meta := cloneObject(d.obj)
		meta.doc = doc
		res.docs = append(res.docs, parsed{doc: doc, obj: obj})
	}
	return res, true
}

func (c *Cache) put(path string, res fileResult, data []byte, l Limits) {
	if c == nil || res.err != nil {
		return
	}
	f := &cachedFile{rejected: res.rejected, diags: res.diags, ndocs: res.ndocs, values: res.values, docValues: res.docValues, limits: l}
	for _, p := range res.docs {
		if p.dns != nil {
			f.docs = append(f.docs, cachedDoc{kind: p.doc.kind, name: p.doc.name, index: p.doc.index, dns: p.dns})
			continue
		}
		obj, meta := cloneObject(p.obj)
		meta.doc = nil
		f.docs = append(f.docs, cachedDoc{kind: p.doc.kind, name: p.doc.name, index: p.doc.index, obj: obj})
	}
	c.mu.Lock()
	c.files[cacheKey{path, res.sum}] = f
	c.mu.Unlock()
}

// keepOnly drops the files the last load did not read.
func (c *Cache) keepOnly(paths []string, results []fileResult) {
	if c == nil {
		return
	}
	keep := make(map[cacheKey]bool, len(paths))
	for i, p := range paths {
		keep[cacheKey{p, results[i].sum}] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.files {
		if !keep[k] {
			delete(c.files, k)
		}
	}
}

// cloneObject copies a parsed document deeply enough that the checks,
// which fill in derived fields, never touch the cached original.
func cloneObject(obj any) (any, *Meta) {
	switch o := obj.(type) {
	case *SiteConfig:
		c := *o
		return &c, &c.Meta
	case *Network:
		c := *o
		if o.IPv4 != nil {
			v := *o.IPv4
			c.IPv4 = &v
		}
		if o.IPv6 != nil {
			v := *o.IPv6
			c.IPv6 = &v
		}
		return &c, &c.Meta
	case *HardwareProfile:
		c := *o
		return &c, &c.Meta
	case *Image:
		c := *o
		return &c, &c.Meta
	case *PatchSet:
		c := *o
		return &c, &c.Meta
	case *Node:
		c := *o
		c.Addresses, c.AliasFQDNs = nil, nil
		c.PrimaryFQDN, c.PrimaryNetwork = "", ""
		return &c, &c.Meta
	case *DNS:
		c := *o
		return &c, &c.Meta
	}
	panic("cloneObject: unknown document type")
}
