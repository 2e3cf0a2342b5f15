package test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
)

// siteDoc is one node document of the site: the file it lives in and its
// text.
type siteDoc struct {
	file, name, text string
}

// nodeDocs splits the node files of a site into documents.
func nodeDocs(t *testing.T, site string) []siteDoc {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(site, "nodes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	nameRe := regexp.MustCompile(`(?m)^name: (\S+)$`)
	var out []siteDoc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for doc := range strings.SplitSeq(string(b), "---\n") {
			if m := nameRe.FindStringSubmatch(doc); m != nil {
				out = append(out, siteDoc{file: filepath.Base(f), name: m[1], text: doc})
			}
		}
	}
	return out
}

// writeNodeDocs writes the documents back, one file per rack.
func writeNodeDocs(t *testing.T, site string, docs []siteDoc) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(site, "nodes", "*.yaml"))
	for _, f := range files {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	byFile := map[string][]string{}
	for _, d := range docs {
		byFile[d.file] = append(byFile[d.file], strings.TrimRight(d.text, "\n")+"\n")
	}
	for f, texts := range byFile {
		if err := os.WriteFile(filepath.Join(site, "nodes", f), []byte(strings.Join(texts, "---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// setField sets a top-level scalar field of a node document.
func setField(doc, field, value string) string {
	re := regexp.MustCompile(`(?m)^` + field + `: .*$`)
	if re.MatchString(doc) {
		return re.ReplaceAllString(doc, field+": "+value)
	}
	return strings.TrimRight(doc, "\n") + "\n" + field + ": " + value + "\n"
}

func fieldOf(doc, field string) string {
	m := regexp.MustCompile(`(?m)^` + field + `: (.*)$`).FindStringSubmatch(doc)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// stateBackup copies the daemon's state through its backup endpoint.
func stateBackup(t *testing.T, api string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, api+"/api/v1/state/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer lab-api-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("state backup: %s", resp.Status)
	}
	p := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLabPlanIsWhatRuns drives a random sequence of commits (nodes removed
// and added back, patch set bumps, aliases, maintenance, decommissions and
// recommissions) through the lab and the daemon. Before each commit is
// applied, the daemon is suspended, its state copied through the backup
// endpoint, and `anneal plan -o json` run against that copy and the live
// lab; after the daemon applied the commit, the plan it executed must be
// that plan (the same digest) and the actions it reported done must be
// exactly the plan's actions. ANNEAL_TEST_SEED replays a sequence.
func TestLabPlanIsWhatRuns(t *testing.T) {
	seed := uint64(rand.Int64())
	if s := os.Getenv("ANNEAL_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ANNEAL_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with ANNEAL_TEST_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 12))

	bindAddr, pdnsDNS, pdnsAPI := freeAddr(t), freeAddr(t), freeAddr(t)
	site := copySite(t, "../examples/site-repo", map[string]string{
		"127.0.0.1:5301":        bindAddr,
		"127.0.0.1:5302":        pdnsDNS,
		"http://127.0.0.1:8081": "http://" + pdnsAPI,
	})
	boot := freeAddr(t)
	labDir := t.TempDir()
	// The lab simulates every node of the example; the site starts
	// without two of them, added later.
	control := startLab(t, site, labDir, "http://"+boot)
	docs := nodeDocs(t, site)
	var out []siteDoc
	for _, d := range docs {
		if d.name == "w1n04" || d.name == "e2n05" {
			out = append(out, d)
		}
	}
	docs = slices.DeleteFunc(docs, func(d siteDoc) bool {
		return slices.ContainsFunc(out, func(o siteDoc) bool { return o.name == d.name })
	})
	writeNodeDocs(t, site, docs)
	git(t, site, "init", "-q", "-b", "main")
	git(t, site, "add", "-A")
	git(t, site, "commit", "-q", "-m", "A")
	revA := git(t, site, "rev-parse", "HEAD")
	_ = control

	state := filepath.Join(t.TempDir(), "state.db")
	api, logs, _ := startServeLogged(t, labEnv, "--repo", site, "--interval", "1s", "--state", state, "--netboot-listen", boot, "--lab", labDir,
		"--install-timeout", "30s", "--token", "env:ANNEAL_API_TOKEN", "--observe-grace", "20s")
	applied := func(rev string) {
		t.Helper()
		waitStatus(t, api, "revision "+rev[:8]+" applied", func(s serveStatus) bool { return s.AppliedRevision == rev })
	}
	applied(revA)

	type step struct {
		name string
		do   func() bool // edits the site; false: not applicable now
	}
	pick := func(ok func(siteDoc) bool) int {
		var idx []int
		for i, d := range docs {
			if ok(d) {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			return -1
		}
		return idx[rng.IntN(len(idx))]
	}
	active := func(d siteDoc) bool { s := fieldOf(d.text, "state"); return s == "" || s == "active" }
	steps := []step{
		{"remove a node", func() bool {
			i := pick(active)
			if i < 0 {
				return false
			}
			out = append(out, docs[i])
			docs = slices.Delete(docs, i, i+1)
			return true
		}},
		{"add a node back", func() bool {
			if len(out) == 0 {
				return false
			}
			i := rng.IntN(len(out))
			docs = append(docs, out[i])
			out = slices.Delete(out, i, i+1)
			return true
		}},
		{"bump a node's patch set", func() bool {
			i := pick(active)
			if i < 0 {
				return false
			}
			next := `"2026-12"`
			if strings.Trim(fieldOf(docs[i].text, "patchSet"), `"`) == "2026-12" {
				next = `"2026-11"`
			}
			docs[i].text = setField(docs[i].text, "patchSet", next)
			return true
		}},
		{"alias a node", func() bool {
			i := pick(func(d siteDoc) bool { return active(d) && fieldOf(d.text, "aliases") == "" })
			if i < 0 {
				return false
			}
			docs[i].text = setField(docs[i].text, "aliases", fmt.Sprintf("[alias%d]", rng.IntN(1000)))
			return true
		}},
		{"maintenance", func() bool {
			i := pick(active)
			if i < 0 {
				return false
			}
			docs[i].text = setField(docs[i].text, "state", "maintenance")
			return true
		}},
		{"back from maintenance", func() bool {
			i := pick(func(d siteDoc) bool { return fieldOf(d.text, "state") == "maintenance" })
			if i < 0 {
				return false
			}
			docs[i].text = setField(docs[i].text, "state", "active")
			return true
		}},
		{"decommission", func() bool {
			i := pick(active)
			if i < 0 {
				return false
			}
			docs[i].text = setField(docs[i].text, "state", "decommissioned")
			return true
		}},
		{"recommission", func() bool {
			i := pick(func(d siteDoc) bool { return fieldOf(d.text, "state") == "decommissioned" })
			if i < 0 {
				return false
			}
			docs[i].text = setField(docs[i].text, "state", "active")
			return true
		}},
	}

	backup := func() string { return stateBackup(t, api) }
	doneRe := regexp.MustCompile(`msg="plan action done" revision=(\S+) plan=(\S+) action=(\S+)`)

	const n = 6
	for k := 0; k < n; k++ {
		var s step
		for {
			s = steps[rng.IntN(len(steps))]
			if s.do() {
				break
			}
		}
		send(t, http.MethodPost, api+"/api/v1/suspend", "lab-api-token", "")
		writeNodeDocs(t, site, docs)
		git(t, site, "add", "-A")
		git(t, site, "commit", "-q", "-m", fmt.Sprintf("step %d: %s", k+1, s.name))
		rev := git(t, site, "rev-parse", "HEAD")

		r := anneal(t, labEnv, "plan", "-o", "json", "--site", site, "--state", backup())
		if r.code != 0 && r.code != 2 {
			t.Fatalf("step %d (%s): plan: %s", k+1, s.name, r)
		}
		var plan reconcile.Plan
		if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
			t.Fatalf("step %d: plan -o json: %v\n%s", k+1, err, r.stdout)
		}
		var want []string
		for _, a := range plan.Actions {
			want = append(want, a.ID)
		}
		slices.Sort(want)
		send(t, http.MethodPost, api+"/api/v1/resume", "lab-api-token", "")
		applied(rev)

		var got []string
		for _, m := range doneRe.FindAllStringSubmatch(logs.String(), -1) {
			if m[1] == rev && m[2] == plan.Digest[:12] {
				got = append(got, m[3])
			}
		}
		slices.Sort(got)
		got = slices.Compact(got)
		t.Logf("step %d: %s: %d planned actions, %d executed (plan %.12s)", k+1, s.name, len(want), len(got), plan.Digest)
		if len(want) <= 1 {
			if len(got) > 0 {
				t.Errorf("step %d (%s): the plan had nothing to do, the daemon executed %v", k+1, s.name, got)
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("step %d (%s): the daemon executed\n  %v\nthe plan printed for the same revision and state\n  %v", k+1, s.name, got, want)
		}
	}
}
