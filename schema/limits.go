package schema

import "fmt"

// Default bounds on what a site may make the loader read and hold. A site
// repo is written by everyone who can merge a pull request, and the daemon
// loads every commit: each bound turns an input that would exhaust memory
// or CPU into a diagnostic naming the file, the field and the limit. The
// defaults leave room for ten times the 10,000-node site of bench/sitegen
// (257 files, 9 MB, at most 37 kB a file, a few hundred values a document,
// 639,287 values in all, at most 2,691 a file).
const (
	// DefaultMaxFileBytes bounds one YAML file. A file over it is never
	// read: its size is checked first.
	DefaultMaxFileBytes = 16 << 20
	// DefaultMaxSiteBytes bounds all the site's YAML files together.
	DefaultMaxSiteBytes = 256 << 20
	// DefaultMaxFiles bounds the number of YAML files in the site.
	DefaultMaxFiles = 100_000
	// DefaultMaxDocuments bounds the YAML documents of the site, all files
	// together (a file may hold several, separated by ---).
	DefaultMaxDocuments = 200_000
	// DefaultMaxKeys bounds the keys of one mapping.
	DefaultMaxKeys = 10_000
	// DefaultMaxSequence bounds the elements of one list.
	DefaultMaxSequence = 100_000
	// DefaultMaxDepth bounds how deeply mappings and lists nest (and stops
	// alias cycles).
	DefaultMaxDepth = 64
	// DefaultMaxValues bounds the values one document expands to, aliases
	// expanded: an alias bomb ("billion laughs") is an error, not a hang.
	DefaultMaxValues = 200_000
	// DefaultMaxSiteValues bounds the values of all documents together,
	// aliases expanded. Aliases multiply input: an 80 kB document may
	// expand to DefaultMaxValues, so a site within its byte limit could
	// hold thousands of such documents and take many minutes to load.
	// Ten million is 15 times the 10,000-node site; the worst site under
	// it (50 documents of 200,000 aliased values) loads in about 4 s on
	// one core.
	DefaultMaxSiteValues = 10_000_000
	// DefaultMaxFileValues bounds the values of one file's documents
	// together: a file over it is read no further than the document that
	// crosses it. It also bounds what the loader's workers still convert
	// once the site is over its limit (each finishes the file in hand).
	// Two million is ten documents at DefaultMaxValues, 700 times the
	// largest file of the 10,000-node site, three times that whole site.
	DefaultMaxFileValues = 2_000_000
)

// maxNesting is DefaultMaxDepth for code that runs after a document passed
// its limits (its depth is already bounded).
const maxNesting = DefaultMaxDepth

// Limits bound the site input of one load. A zero field means its default
// (DefaultLimits); a negative one is treated the same.
type Limits struct {
	FileBytes int64 // bytes of one file
	SiteBytes int64 // bytes of all files
	Files     int   // YAML files
	Documents int   // YAML documents, all files together
	Keys      int   // keys of one mapping
	Sequence  int   // elements of one list
	Depth     int   // nesting of mappings and lists
	Values    int   // values of one document, aliases expanded
	// SiteValues bounds the values of all documents, FileValues those of
	// one file's documents, aliases expanded. FileValues is at most
	// SiteValues.
	SiteValues int
	FileValues int
}

// DefaultLimits returns the default bounds.
func DefaultLimits() Limits {
	return Limits{
		FileBytes: DefaultMaxFileBytes,
		SiteBytes: DefaultMaxSiteBytes,
		Files:     DefaultMaxFiles,
		Documents: DefaultMaxDocuments,
		Keys:      DefaultMaxKeys,
		Sequence:  DefaultMaxSequence,
		Depth:     DefaultMaxDepth,
		Values:    DefaultMaxValues,

		SiteValues: DefaultMaxSiteValues,
		FileValues: DefaultMaxFileValues,
	}
}

// orDefaults fills unset fields with their defaults.
func (l Limits) orDefaults() Limits {
	d := DefaultLimits()
	pick := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	if l.FileBytes <= 0 {
		l.FileBytes = d.FileBytes
	}
	if l.SiteBytes <= 0 {
		l.SiteBytes = d.SiteBytes
	}
	pick(&l.Files, d.Files)
	pick(&l.Documents, d.Documents)
	pick(&l.Keys, d.Keys)
	pick(&l.Sequence, d.Sequence)
	pick(&l.Depth, d.Depth)
	pick(&l.Values, d.Values)
	pick(&l.SiteValues, d.SiteValues)
	pick(&l.FileValues, d.FileValues)
	l.FileValues = min(l.FileValues, l.SiteValues)
	return l
}

// Diagnostic codes of the limits (docs/validate-json.md).
const (
	CodeLimitFileBytes = "limit-file-size"
	CodeLimitSiteBytes = "limit-site-size"
	CodeLimitFiles     = "limit-files"
	CodeLimitDocuments = "limit-documents"
	CodeLimitKeys      = "limit-keys"
	CodeLimitSequence  = "limit-sequence"
	CodeLimitDepth     = "limit-depth"
	CodeLimitValues    = "limit-values"
	// The values of all documents, and of one file's, aliases expanded.
	CodeLimitSiteValues = "limit-site-values"
	CodeLimitFileValues = "limit-file-values"
)

func limitDiag(code, file, format string, args ...any) Diagnostic {
	return Diagnostic{Severity: SeverityError, Code: code, File: file, Message: fmt.Sprintf(format, args...)}
}
