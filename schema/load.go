package schema

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.yaml.in/yaml/v3"
)

// LoadOptions tune a load.
type LoadOptions struct {
	// Workers parse and check files in parallel; 0 means GOMAXPROCS.
	Workers int
	// Cache, when set, reuses what earlier loads parsed of files whose path
	// and content are unchanged (the daemon after a one-line commit, the
	// head of a review after its base).
	Cache *Cache
	// Secrets, when set, are the operator's grants: a reference to a
	// secret they do not grant, or one bound for an address they do not
	// allow, is an error of the site (secret-not-granted). Without them
	// only the references' form is checked (the review, validate in CI).
	Secrets SecretGrants
	// Limits bound the input (file and site sizes, files, documents, keys,
	// list lengths, nesting, values with aliases expanded); the zero value
	// means DefaultLimits.
	Limits Limits

	// onCUE, when set (by tests), is called with the kind of every document
	// given to CUE; it may be called from several goroutines at once.
	onCUE func(kind string)
}

// document is one YAML document of the site, kept while loading so that
// every check can point at the line and column of the field it is about.
type document struct {
	file string
	root *yaml.Node
	kind string
	name string
	// A document without a tree (one reused from the Cache, or one whose
	// tree was dropped once it was decoded: the trees of a large site take
	// several times the memory of its typed objects) is parsed again from
	// its file only if a diagnostic needs its positions; every document of
	// the file is parsed once then, in one pass.
	src   *sourceFile
	index int // position of the document in its file
	pos   positions
}

// sourceFile is the bytes of one site file, parsed again (once, for all
// its documents) only when a diagnostic needs a position in it.
type sourceFile struct {
	data  []byte
	once  sync.Once
	roots []*yaml.Node
}

// root returns the body of the file's i-th YAML document (empty ones
// counted), or an empty node if the file has no such document.
func (f *sourceFile) root(i int) *yaml.Node {
	f.once.Do(func() {
		dec := yaml.NewDecoder(bytes.NewReader(f.data))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); err != nil {
				return
			}
			r := &n
			if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
				r = deref(n.Content[0])
			}
			f.roots = append(f.roots, r)
		}
	})
	if i < 0 || i >= len(f.roots) {
		return &yaml.Node{}
	}
	return f.roots[i]
}

// rootNode returns the document's YAML tree, re-parsing its file if needed.
func (d *document) rootNode() *yaml.Node {
	if d.root != nil {
		return d.root
	}
	if d.src == nil {
		d.root = &yaml.Node{}
		return d.root
	}
	d.root = d.src.root(d.index)
	return d.root
}

func (d *document) object() string {
	if d.name == "" {
		return d.kind
	}
	return d.kind + "/" + d.name
}

// parsed is a document that passed its schema check, with its typed object,
// or a DNS document whose schema check is deferred (dns set, obj nil): see
// settleDNS.
type parsed struct {
	doc *document
	obj any
	dns *pendingDNS
}

// LoadDir loads the site in a directory. See Load.
func LoadDir(ctx context.Context, dir string, opts LoadOptions) (*Site, Diagnostics, error) {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("site directory %s does not exist", dir)
		}
		return nil, nil, fmt.Errorf("site directory: %w", err)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("site %s is a file, not a directory: point --site at the folder that holds the site's YAML files", dir)
	}
	return Load(ctx, os.DirFS(dir), opts)
}

// Load reads every *.yaml and *.yml file under fsys (skipping folders whose
// name starts with a dot, such as .git and .github), checks each document
// against the embedded CUE schema, decodes it into the typed model and runs
// the cross-document checks.
//
// The same code loads a directory (os.DirFS) or a git commit's tree. Every
// finding is returned, not only the first; when any is an error, the Site is
// nil and the error is an *InvalidError carrying them all. A failure to read
// is returned as a plain wrapped error.
//
// The input is bounded by opts.Limits: a site over a limit is invalid, with
// a diagnostic naming the file, the field and the limit. Load stops soon
// after ctx is done (between files, between the documents of a file, and
// before the cross-document checks) and returns ctx's error, wrapped.
func Load(ctx context.Context, fsys fs.FS, opts LoadOptions) (*Site, Diagnostics, error) {
	limits := opts.Limits.orDefaults()
	files, err := siteFiles(ctx, fsys, limits.Files)
	if err != nil {
		var lim *limitError
		if errors.As(err, &lim) {
			d := Diagnostics{lim.diag}
			return nil, d, &InvalidError{Diagnostics: d}
		}
		return nil, nil, err
	}
	if len(files) == 0 {
		d := Diagnostics{{Severity: SeverityError, Code: "empty-site", Message: "no *.yaml or *.yml files found: a site needs at least a Site document"}}
		return nil, d, &InvalidError{Diagnostics: d}
	}
	if d, err := checkSizes(ctx, fsys, files, limits); err != nil || d != nil {
		if err != nil {
			return nil, nil, err
		}
		return nil, d, &InvalidError{Diagnostics: d}
	}
	docs, rejected, diags, digest, err := parseFiles(ctx, fsys, files, opts.Workers, opts.Cache, limits, opts.onCUE)
	if err != nil {
		var lim *limitError
		if errors.As(err, &lim) {
			d := Diagnostics{lim.diag}
			return nil, d, &InvalidError{Diagnostics: d}
		}
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("load site: %w", err)
	}
	// A file that does not parse may hold the Site document: do not also
	// claim it is missing.
	unparsed := slices.ContainsFunc(diags, func(d Diagnostic) bool {
		return d.Code == "yaml-syntax" || d.Code == CodeLimitFileBytes || d.Code == CodeLimitDocuments || d.Code == CodeLimitFileValues
	})
	site, more := assemble(docs, rejected, unparsed)
	diags = append(diags, more...)
	if site.Config != nil {
		diags = append(diags, check(site, opts.Secrets)...)
	}
	diags.sort()
	if diags.HasErrors() {
		return nil, diags, &InvalidError{Diagnostics: diags}
	}
	site.Digest = digest
	return site, diags, nil
}

// limitError stops a walk at a limit; Load reports its diagnostic.
type limitError struct{ diag Diagnostic }

func (e *limitError) Error() string { return e.diag.String() }

func siteFiles(ctx context.Context, fsys fs.FS, maxFiles int) ([]string, error) {
	var files []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read site tree at %s: %w", p, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("load site: %w", err)
		}
		name := d.Name()
		if d.IsDir() {
			if p != "." && strings.HasPrefix(name, ".") {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(name, ".") {
			return nil
		}
		if ext := path.Ext(name); ext == ".yaml" || ext == ".yml" {
			if len(files) == maxFiles {
				return &limitError{limitDiag(CodeLimitFiles, "", "the site has more than %d YAML files (limit); %s is one too many", maxFiles, p)}
			}
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}

type fileResult struct {
	docs     []parsed
	rejected []rejected
	diags    Diagnostics
	sum      [sha256.Size]byte // of the file's bytes
	size     int64             // bytes read
	ndocs    int               // YAML documents, empty ones too
	values   int64             // values of its documents, aliases expanded
	// docValues are the documents that expanded to any value, in order:
	// where the site's value limit is crossed.
	docValues []docValues
	err       error
}

// docValues is one document's share of the value limits.
type docValues struct {
	line, column int
	object       string
	values       int64
}

// crossing returns the document of r at which values, already spent
// before this file, cross max (the last one if none does).
func (r *fileResult) crossing(spent, max int64) docValues {
	for _, d := range r.docValues {
		if spent += d.values; spent > max {
			return d
		}
	}
	if len(r.docValues) == 0 {
		return docValues{}
	}
	return r.docValues[len(r.docValues)-1]
}

// rejected names a document that failed its schema check. Cross-document
// checks still run without it, but do not report references to it as
// unknown: its own errors say what is wrong.
type rejected struct{ kind, name string }

// checkSizes stats every file before any is read: a file or a site over
// its byte limit is reported without reading it.
func checkSizes(ctx context.Context, fsys fs.FS, files []string, l Limits) (Diagnostics, error) {
	var diags Diagnostics
	var total int64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load site: %w", err)
		}
		st, err := fs.Stat(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", f, err)
		}
		if st.Size() > l.FileBytes {
			diags = append(diags, limitDiag(CodeLimitFileBytes, f, "file is %d bytes, more than %d (limit); it was not read", st.Size(), l.FileBytes))
		}
		total += st.Size()
	}
	if total > l.SiteBytes {
		diags = append(diags, limitDiag(CodeLimitSiteBytes, "", "the site's YAML files are %d bytes together, more than %d (limit); none was read", total, l.SiteBytes))
	}
	return diags, nil
}

// readLimited reads a file of at most max bytes, never more than max+1 of
// it even when its size was misreported.
func readLimited(fsys fs.FS, name string, max int64) ([]byte, bool, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(data)) > max {
		return nil, false, nil
	}
	return data, true, nil
}

func parseFiles(ctx context.Context, fsys fs.FS, files []string, workers int, cache *Cache, l Limits, onCUE func(string)) ([]parsed, []rejected, Diagnostics, string, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(files))
	results := make([]fileResult, len(files))
	// tally counts the values the workers convert, as they convert them,
	// so that no file is handed out once the site is over its limit. It
	// only stops the hand-out; which file crosses the limit is decided
	// below from each file's own count, in file order, so the diagnostic
	// is the same whatever the workers' timing. Files are handed out in
	// order and each is read to its end (or its own limit), so every file
	// up to the one that crosses the limit has been read.
	var tally atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	var setupErr error
	var once sync.Once
	validators := make([]*validator, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := newValidator()
			if err != nil {
				once.Do(func() { setupErr = err })
				for range next {
				}
				return
			}
			v.onCUE = onCUE
			validators[w] = v
			for i := range next {
				results[i] = parseFile(ctx, fsys, files[i], v, cache, l, &tally)
			}
		}()
	}
	handedOut := 0
	for i := range files {
		if ctx.Err() != nil || tally.Load() > int64(l.SiteValues) {
			break
		}
		next <- i
		handedOut++
	}
	close(next)
	wg.Wait()
	if setupErr != nil {
		return nil, nil, nil, "", setupErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, "", fmt.Errorf("load site: %w", err)
	}
	digest := sha256.New()
	var docs []parsed
	var rej []rejected
	var diags Diagnostics
	var read, values int64
	ndocs := 0
	for i, r := range results[:handedOut] {
		if r.err != nil {
			return nil, nil, nil, "", r.err
		}
		read += r.size
		if read > l.SiteBytes {
			return nil, nil, nil, "", &limitError{limitDiag(CodeLimitSiteBytes, files[i], "the site's YAML files are more than %d bytes together (limit), counting up to this file", l.SiteBytes)}
		}
		ndocs += r.ndocs
		if ndocs > l.Documents && r.ndocs <= l.Documents { // else the file says so
			return nil, nil, nil, "", &limitError{limitDiag(CodeLimitDocuments, files[i], "the site has more than %d YAML documents (limit), counting up to this file", l.Documents)}
		}
		if values+r.values > int64(l.SiteValues) {
			d := r.crossing(values, int64(l.SiteValues))
			return nil, nil, nil, "", &limitError{Diagnostic{Severity: SeverityError, Code: CodeLimitSiteValues, File: files[i], Line: d.line, Column: d.column, Object: d.object,
				Message: fmt.Sprintf("the site's documents expand to more than %d values (aliases expanded; limit), counting up to this document", l.SiteValues)}}
		}
		values += r.values
		docs = append(docs, r.docs...)
		rej = append(rej, r.rejected...)
		diags = append(diags, r.diags...)
	}
	if handedOut < len(files) {
		// Unreachable: the hand-out stops only once the files handed out
		// hold more values than the limit.
		return nil, nil, nil, "", fmt.Errorf("load site: stopped reading at %s under the value limit", files[handedOut])
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, "", fmt.Errorf("load site: %w", err)
	}
	docs, rej, diags = settleDNS(docs, rej, diags, validators[0], l)
	for i, r := range results {
		fmt.Fprintf(digest, "%s\x00%x\n", files[i], r.sum)
	}
	cache.keepOnly(files, results)
	return docs, rej, diags, hex.EncodeToString(digest.Sum(nil)), nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the errors of yaml.v3's parser, as opposed to its
// scanner. yaml.v3 reports a scanner error at its 1-based line, but a parser
// error at the 0-based line of its mark: one line early.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

// parseFile reads and parses one file. It adds the values its documents
// expand to into tally (nil: none) as it converts them.
func parseFile(ctx context.Context, fsys fs.FS, name string, v *validator, cache *Cache, l Limits, tally *atomic.Int64) fileResult {
	var res fileResult
	data, ok, err := readLimited(fsys, name, l.FileBytes)
	if err != nil {
		res.err = fmt.Errorf("read %s: %w", name, err)
		return res
	}
	if !ok {
		res.diags = Diagnostics{limitDiag(CodeLimitFileBytes, name, "file is more than %d bytes (limit); reading stopped there", l.FileBytes)}
		return res
	}
	res.size = int64(len(data))
	res.sum = sha256.Sum256(data)
	if hit, ok := cache.get(name, res.sum, data, l); ok {
		hit.size = res.size
		if tally != nil {
			tally.Add(hit.values)
		}
		return hit
	}
	complete := true
	defer func() {
		if complete {
			cache.put(name, res, data, l)
		}
	}()
	src := &sourceFile{data: data}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for index := 0; ; index++ {
		if ctx.Err() != nil {
			complete = false // Load returns ctx's error
			return res
		}
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d := Diagnostic{Severity: SeverityError, Code: "yaml-syntax", File: name, Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				d.Line, _ = strconv.Atoi(m[1])
				if yamlParserProblems[m[2]] {
					d.Line++ // yaml.v3 gives its parser's marks 0-based
				}
				d.Column = 1
				d.Message = "not valid YAML: " + m[2]
			}
			res.diags = append(res.diags, d)
			break
		}
		if res.ndocs++; res.ndocs > l.Documents {
			res.diags = append(res.diags, Diagnostic{Severity: SeverityError, Code: CodeLimitDocuments, File: name, Line: root.Line, Column: root.Column,
				Message: fmt.Sprintf("file has more than %d YAML documents (limit)", l.Documents)})
			break
		}
		p, diags, values := parseDocument(name, &root, v, l)
		if p != nil {
			p.doc.index = index
		}
		res.diags = append(res.diags, diags...)
		if values > 0 {
			d := docValues{line: p.doc.root.Line, column: p.doc.root.Column, object: p.doc.object(), values: int64(values)}
			res.docValues = append(res.docValues, d)
			res.values += d.values
			if tally != nil {
				tally.Add(d.values)
			}
			if res.values > int64(l.FileValues) {
				res.diags = append(res.diags, Diagnostic{Severity: SeverityError, Code: CodeLimitFileValues, File: name, Line: d.line, Column: d.column, Object: d.object,
					Message: fmt.Sprintf("file's documents expand to more than %d values (aliases expanded; limit), counting up to this one; reading stopped here", l.FileValues)})
				break
			}
		}
		switch {
		case p != nil && p.obj != nil:
			// Decoded: its tree is dropped, and parsed again from src
			// only if a cross-document check reports on it.
			p.doc.root, p.doc.src = nil, src
			res.docs = append(res.docs, *p)
		case p != nil && p.dns != nil:
			res.docs = append(res.docs, *p)
		case p != nil:
			res.rejected = append(res.rejected, rejected{p.doc.kind, p.doc.name})
		}
	}
	return res
}

// parseDocument checks and decodes one document. It also returns the
// values the document expanded to, aliases expanded (0 for a document
// that was never converted; at most l.Values).
func parseDocument(file string, root *yaml.Node, v *validator, l Limits) (*parsed, Diagnostics, int) {
	body := root
	if body.Kind == yaml.DocumentNode {
		if len(body.Content) == 0 {
			return nil, nil, 0 // an empty document (comments, a lone ---)
		}
		body = body.Content[0]
	}
	body = deref(body)
	at := func(n *yaml.Node, code, msg string) Diagnostics {
		return Diagnostics{{Severity: SeverityError, Code: code, File: file, Line: n.Line, Column: n.Column, Message: msg}}
	}
	if body.Kind == yaml.ScalarNode && body.ShortTag() == "!!null" {
		return nil, nil, 0
	}
	if body.Kind != yaml.MappingNode {
		return nil, at(body, "not-a-document", "a site document must be a YAML mapping with apiVersion and kind; found "+describe(body)), 0
	}
	api, apiNode := scalarString(body, "apiVersion")
	kind, kindNode := scalarString(body, "kind")
	name, _ := scalarString(body, "name")
	switch {
	case apiNode == nil:
		return nil, at(body, "missing-api-version", "document has no apiVersion (want apiVersion: "+APIVersion+")"), 0
	case api != APIVersion:
		return nil, at(apiNode, "unknown-api-version", fmt.Sprintf("apiVersion %q is not supported by this anneal (it reads %s)", api, APIVersion)), 0
	case kindNode == nil:
		return nil, at(body, "missing-kind", "document has no kind (one of "+strings.Join(Kinds(), ", ")+")"), 0
	case !slices.Contains(Kinds(), kind):
		return nil, at(kindNode, "unknown-kind", fmt.Sprintf("unknown kind %q (known kinds: %s)", kind, strings.Join(Kinds(), ", "))), 0
	}
	doc := &document{file: file, root: body, kind: kind, name: name}
	r := reporter{}
	cv := newConverter(l)
	value := cv.toValue(body, nil, 0)
	values := cv.used()
	convErrs := cv.errs
	for _, e := range convErrs {
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Code: cmp.Or(e.code, "yaml-structure"), File: file, Line: e.node.Line, Column: e.node.Column, Object: doc.object(), Path: e.path.String(), Message: e.msg})
	}
	if len(convErrs) > 0 {
		return &parsed{doc: doc}, r.diags, values
	}
	if kind == KindDNS {
		// Checked after every file is parsed, and only the site's first:
		// CUE takes about 13 µs a value of a DNS document (settleDNS).
		return &parsed{doc: doc, dns: &pendingDNS{line: body.Line, column: body.Column}}, nil, values
	}
	p, diags := checkDocument(doc, body, value, v)
	return p, diags, values
}

// checkDocument checks a converted document against its kind's schema and
// decodes it.
func checkDocument(doc *document, body *yaml.Node, value any, v *validator) (*parsed, Diagnostics) {
	file, kind := doc.file, doc.kind
	at := func(n *yaml.Node, code, msg string) Diagnostics {
		return Diagnostics{{Severity: SeverityError, Code: code, File: file, Line: n.Line, Column: n.Column, Message: msg}}
	}
	r := reporter{}
	var pos positions
	for _, is := range v.validate(kind, value) {
		n := pos.resolve(body, is.path, is.key)
		r.diags = append(r.diags, Diagnostic{Severity: SeverityError, Code: "schema", File: file, Line: n.Line, Column: n.Column, Object: doc.object(), Path: is.path.String(), Message: is.message})
	}
	if len(r.diags) > 0 {
		return &parsed{doc: doc}, r.diags
	}
	obj, meta := newObject(kind)
	if err := decodeObject(body, obj); err != nil {
		return &parsed{doc: doc}, at(body, "decode", fmt.Sprintf("%s: %v", doc.object(), err))
	}
	meta.Source = Source{File: file, Line: body.Line, Column: body.Column}
	meta.doc = doc
	return &parsed{doc: doc, obj: obj}, nil
}

func newObject(kind string) (any, *Meta) {
	switch kind {
	case KindSite:
		o := &SiteConfig{}
		return o, &o.Meta
	case KindNetwork:
		o := &Network{}
		return o, &o.Meta
	case KindHardwareProfile:
		o := &HardwareProfile{}
		return o, &o.Meta
	case KindImage:
		o := &Image{}
		return o, &o.Meta
	case KindPatchSet:
		o := &PatchSet{}
		return o, &o.Meta
	case KindNode:
		o := &Node{}
		return o, &o.Meta
	case KindDNS:
		o := &DNS{}
		return o, &o.Meta
	}
	panic("newObject: kind not in Kinds(): " + kind)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if len(n.Value) > 40 {
			return "text"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}
