package schema

import (
	"bytes"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"go.yaml.in/yaml/v3"
)

// TestFastPathCoversKinds: every kind but DNS (whose #Target holds an `if`
// comprehension) has a fast path. A schema change that loses one is not a
// bug, but makes loading that kind several times slower: extend cuefast.go.
func TestFastPathCoversKinds(t *testing.T) {
	checks, why := compileFastChecks(schemaSource)
	for _, k := range Kinds() {
		_, ok := checks[k]
		switch {
		case k == KindDNS && ok:
			t.Errorf("#DNS compiled to a fast path; it holds a comprehension the subset does not cover")
		case k == KindDNS:
			if !errors.Is(why[k], errUnsupported) {
				t.Errorf("#DNS: %v", why[k])
			}
		case !ok:
			t.Errorf("#%s has no fast path: %v", k, why[k])
		}
	}
}

// TestFastPathUnsupported: constructs outside the subset are refused, not
// guessed at.
func TestFastPathUnsupported(t *testing.T) {
	for _, src := range []string{
		"#Node: {a: *1 | int}",            // default
		"#Node: {a: float}",               // float
		"#Node: {a: strings.MinRunes(1)}", // builtin
		"#Node: {a: 1.5}",
		"#Node: {a: 'bytes'}",
		"#Node: {a: =~\"(\"}",
		"#Node: {a!: int}",
		"#Node: {_h: int}",
		"#Node: {a: int, if a > 1 {b: int}}",
		"#Node: {let x = int, a: x}",
		"#Node: {...}",
		"#Node: {a: b}",
		"#Node: {a: >=1.5}",
		"#Node: {a: 0x10}",
		"#Node: #Node",
		"x: int\n#Node: {a: int}",
		"#Node: {#Sub: int}",
		"#Node: {(\"a\"): int}",
	} {
		checks, why := compileFastChecks([]byte(src))
		if _, ok := checks[KindNode]; ok {
			t.Errorf("%q compiled to a fast path", src)
		} else if !errors.Is(why[KindNode], errUnsupported) {
			t.Errorf("%q: %v", src, why[KindNode])
		}
	}
}

// corpusDocs reads every document of the example sites (valid and broken)
// and of a generated site, as the loader converts them.
func corpusDocs(t *testing.T) (docs []corpusDoc) {
	t.Helper()
	gendir := filepath.Join(t.TempDir(), "gen")
	if _, err := gen.Generate(gendir, gen.Options{Nodes: 60, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{"../examples", gendir} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			dec := yaml.NewDecoder(bytes.NewReader(data))
			for {
				var n yaml.Node
				if dec.Decode(&n) != nil {
					break
				}
				if len(n.Content) == 0 {
					continue
				}
				body := deref(n.Content[0])
				cv := newConverter(Limits{})
				v := cv.toValue(body, nil, 0)
				if len(cv.errs) > 0 {
					continue
				}
				kind, _ := scalarString(body, "kind")
				docs = append(docs, corpusDoc{file: p, kind: kind, value: v})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return docs
}

type corpusDoc struct {
	file, kind string
	value      any
}

// TestFastPathAgreesWithCUE: whatever the fast path accepts, CUE accepts,
// over every document of the corpus checked against every kind, and over
// random mutations of the valid ones. It also accepts the valid documents
// of its own kind, or it would never be used.
func TestFastPathAgreesWithCUE(t *testing.T) {
	pure, err := newValidator()
	if err != nil {
		t.Fatal(err)
	}
	pure.fast, pure.shapes = nil, nil
	checks, _ := compileFastChecks(schemaSource)
	cueOK := func(kind string, v any) bool { return len(pure.validate(kind, v)) == 0 }

	docs := corpusDocs(t)
	if len(docs) < 100 {
		t.Fatalf("only %d corpus documents", len(docs))
	}
	var valid []corpusDoc
	for _, d := range docs {
		for _, k := range Kinds() {
			f := checks[k]
			if f == nil {
				continue
			}
			// Only an acceptance needs CUE's word (and a document of
			// its own kind, to see the fast path is used).
			fast := f(d.value)
			if !fast && k != d.kind {
				continue
			}
			ok := cueOK(k, d.value)
			if fast && !ok {
				t.Errorf("%s (%s) against #%s: fast path accepts, CUE rejects: %v", d.file, d.kind, k, pure.validate(k, d.value))
			}
			if k == d.kind && ok {
				if !fast {
					t.Errorf("%s: valid %s document not accepted by the fast path", d.file, k)
				}
				valid = append(valid, d)
			}
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	// ANNEAL_FASTPATH_MUTATIONS=100000 for a longer search.
	n := 20000
	if testing.Short() {
		n = 2000
	}
	if s := os.Getenv("ANNEAL_FASTPATH_MUTATIONS"); s != "" {
		if m, err := strconv.Atoi(s); err == nil && m > 0 {
			n = m
		}
	}
	accepted := 0
	for i := range n {
		d := valid[rng.IntN(len(valid))]
		v := mutate(rng, deepCopy(d.value), 1+rng.IntN(2))
		if !checks[d.kind](v) {
			continue // CUE decides, as without the fast path
		}
		accepted++
		if !cueOK(d.kind, v) {
			t.Fatalf("mutation %d of %s (%s): fast path accepts, CUE rejects: %v\nvalue: %#v", i, d.file, d.kind, pure.validate(d.kind, v), v)
		}
	}
	// Some mutations stay valid (a name for another name): both sides of
	// the implication are exercised.
	t.Logf("%d of %d mutations accepted by the fast path, and by CUE", accepted, n)
	if accepted == 0 || accepted == n {
		t.Errorf("%d of %d mutations accepted", accepted, n)
	}
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}

var mutationValues = []any{
	nil, "", "x", "X", "a-b", "-a", "a.b", "a_b", "#x", "env:X", "file:/x", "secret",
	"10%", "100%", "101%", "25G", "1.92T", "90d", "1x", "127.0.0.1:53", "[::1]:53", "http://x", "ftp://x",
	"0c:c4:7a:00:00:01", "0C:C4:7A:00:00:01", strings.Repeat("a", 64), strings.Repeat("0", 64),
	"example.net", "*.example.net", "a..b", "redfish", "ssd", "nvme", "active", "802.3ad", "rfc2136", "powerdns",
	int64(-1), int64(0), int64(1), int64(2), int64(576), int64(4094), int64(4095), int64(65535), int64(65536),
	int64(604800), int64(604801), int64(math.MaxInt64), 1.5, 1.0, true, false,
	[]any{}, []any{"x"}, []any{int64(1)}, map[string]any{}, map[string]any{"name": "x"},
}

// mutate changes times random spots of a document value.
func mutate(rng *rand.Rand, v any, times int) any {
	for range times {
		v = mutateOnce(rng, v)
	}
	return v
}

func mutateOnce(rng *rand.Rand, v any) any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		switch r := rng.IntN(10); {
		case r == 0 || len(keys) == 0:
			x[[]string{"extra", "nme", "_h", "#d", "roles", "state", "ipv4", "mtu"}[rng.IntN(8)]] = mutationValues[rng.IntN(len(mutationValues))]
		case r == 1:
			delete(x, keys[rng.IntN(len(keys))])
		default:
			k := keys[rng.IntN(len(keys))]
			x[k] = mutateOnce(rng, x[k])
		}
		return x
	case []any:
		switch r := rng.IntN(8); {
		case r == 0 || len(x) == 0:
			return append(x, mutationValues[rng.IntN(len(mutationValues))])
		case r == 1:
			return x[:rng.IntN(len(x))]
		case r == 2:
			return append(x, deepCopy(x[rng.IntN(len(x))]))
		default:
			i := rng.IntN(len(x))
			x[i] = mutateOnce(rng, x[i])
			return x
		}
	case string:
		switch rng.IntN(4) {
		case 0:
			return strings.ToUpper(x)
		case 1:
			return x + string("a-._:%/ 0"[rng.IntN(9)])
		case 2:
			if len(x) > 0 {
				return x[1:]
			}
		}
	}
	return mutationValues[rng.IntN(len(mutationValues))]
}

// FuzzFastPath searches for a document the fast path accepts and CUE does
// not:
//
//	go test ./schema -run '^$' -fuzz FuzzFastPath -fuzztime 60s
func FuzzFastPath(f *testing.F) {
	for _, dir := range []string{"../examples/site-repo", "../examples/site-repo/nodes", "../examples/site-repo/hardware", "../examples/site-repo/images"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			for doc := range strings.SplitSeq(string(data), "\n---\n") {
				f.Add([]byte(doc))
			}
		}
	}
	pure, err := newValidator()
	if err != nil {
		f.Fatal(err)
	}
	pure.fast, pure.shapes = nil, nil
	checks, _ := compileFastChecks(schemaSource)
	f.Fuzz(func(t *testing.T, data []byte) {
		var n yaml.Node
		if yaml.Unmarshal(data, &n) != nil || len(n.Content) == 0 {
			return
		}
		cv := newConverter(Limits{})
		v := cv.toValue(n.Content[0], nil, 0)
		if len(cv.errs) > 0 {
			return
		}
		for _, k := range Kinds() {
			if f := checks[k]; f != nil && f(v) {
				if is := pure.validate(k, v); len(is) > 0 {
					t.Fatalf("fast path accepts as %s, CUE rejects: %v\n%s", k, is, data)
				}
			}
		}
	})
}
