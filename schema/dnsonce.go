package schema

import (
	"cmp"
	"fmt"
	"sync"
)

// pendingDNS is a DNS document whose schema check waits for every file to
// be parsed. A site has one DNS document, and CUE checks a DNS document
// value by value (about 13 µs a value; no Go fast path accepts it), so
// only the site's first DNS document, in file order and then document
// order, is ever given to CUE: every other one is a duplicate-dns error
// and is not checked. Without this a site of many large DNS documents,
// each within the limits, would keep CUE busy for minutes.
//
// The check's outcome is kept here, and a file reused from the Cache
// shares it, so a warm load does not check its DNS document again.
type pendingDNS struct {
	line, column int // of the document's mapping

	mu      sync.Mutex
	checked bool
	obj     any // pristine: cloned out for every load; nil if rejected
	diags   Diagnostics
}

// settleDNS checks the first DNS document of docs (in site order) with v
// and reports every other one as a duplicate, unchecked. It returns docs
// without the pending documents, the first one in its place if it passed.
func settleDNS(docs []parsed, rej []rejected, diags Diagnostics, v *validator, l Limits) ([]parsed, []rejected, Diagnostics) {
	var first *parsed // a copy: kept overwrites docs
	kept := docs[:0]
	for _, p := range docs {
		if p.dns == nil {
			kept = append(kept, p)
			continue
		}
		if first != nil {
			diags = append(diags, Diagnostic{Severity: SeverityError, Code: "duplicate-dns",
				File: p.doc.file, Line: p.dns.line, Column: p.dns.column, Object: p.doc.kind + "/" + p.doc.name,
				Message: fmt.Sprintf("a second DNS document; the first is %s/%s (%s:%d)", first.doc.kind, first.doc.name, first.doc.file, first.dns.line)})
			continue
		}
		first = &p
		obj, ds := first.dns.check(first.doc, v, l)
		diags = append(diags, ds...)
		if obj == nil {
			rej = append(rej, rejected{p.doc.kind, p.doc.name})
			continue
		}
		kept = append(kept, parsed{doc: p.doc, obj: obj})
	}
	return kept, rej, diags
}

// check checks the document once, and returns a copy of its object for
// doc (nil if it was rejected) and its diagnostics.
func (d *pendingDNS) check(doc *document, v *validator, l Limits) (any, Diagnostics) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.checked {
		d.checked = true
		body := doc.rootNode()
		cv := newConverter(l)
		value := cv.toValue(body, nil, 0)
		for _, e := range cv.errs {
			// Unreachable: the document converted without error when its
			// file was parsed, under the same limits.
			d.diags = append(d.diags, Diagnostic{Severity: SeverityError, Code: cmp.Or(e.code, "yaml-structure"), File: doc.file, Line: e.node.Line, Column: e.node.Column, Object: doc.object(), Path: e.path.String(), Message: e.msg})
		}
		if len(cv.errs) == 0 {
			p, ds := checkDocument(doc, body, value, v)
			d.diags = ds
			if p.obj != nil {
				obj, meta := cloneObject(p.obj)
				meta.doc = nil
				d.obj = obj
			}
		}
	}
	if d.obj == nil {
		return nil, d.diags
	}
	obj, meta := cloneObject(d.obj)
	meta.doc = doc
	return obj, d.diags
}
