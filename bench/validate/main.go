// Command validate benchmarks loading and validating a generated site:
// anneal's own `anneal validate` against the CUE CLI's `cue vet` of the
// same YAML files against the same embedded schema.
//
//	go install cuelang.org/go/cmd/cue@v0.17.1   # once: the version in go.mod
//	go run ./bench/validate -nodes 10000 -runs 3
//
// It generates the site with bench/sitegen, builds the anneal binary into a
// temporary directory and times each tool as a subprocess, reading its peak
// RSS from the child's rusage (ru_maxrss).
//
// The fair cue equivalent: every YAML document is checked against the
// definition of its kind, fully concrete, closed definitions (unknown fields
// are errors). The generator writes one kind per file, so that is one
// invocation per kind, run one after the other from the site directory:
//
//	cue vet -c -d '#Site'            anneal.cue site.yaml
//	cue vet -c -d '#Network'         anneal.cue networks.yaml
//	cue vet -c -d '#HardwareProfile' anneal.cue hardware/*.yaml
//	cue vet -c -d '#Image'           anneal.cue images/images.yaml
//	cue vet -c -d '#PatchSet'        anneal.cue images/patch-sets.yaml
//	cue vet -c -d '#DNS'             anneal.cue dns.yaml
//	cue vet -c -d '#Node'            anneal.cue nodes/*.yaml
//
// cue vet validates each document of a multi-document YAML file on its own
// against the -d schema (checked with cue v0.17.1: an error in the last
// document of the last file fails the run). Its wall time is the sum over the
// seven invocations, its peak RSS the largest of them. cue vet does only the
// per-document schema check; anneal also runs the cross-document checks
// (references, unique MACs and addresses, VLANs, DNS names and zones), so the
// comparison flatters cue.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// cueVersion is the CUE release go.mod requires; the CLI should match it.
const cueVersion = "v0.17.1"

// The goal anneal is held to at 10,000 nodes.
const (
	goalNodes = 10_000
	goalWall  = 2 * time.Second
	goalRSS   = 1 << 30
)

// kindOrder is the order cue vet is run in (the Node run dominates).
var kindOrder = []string{
	schema.KindSite, schema.KindNetwork, schema.KindHardwareProfile, schema.KindImage,
	schema.KindPatchSet, schema.KindDNS, schema.KindNode,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	nodes, runs int
	seed        uint64
	keep        bool
	cue         string
	noCue       bool
}

func run(args []string, stdout, stderr io.Writer) int {
	var c config
	fl := flag.NewFlagSet("validate", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.IntVar(&c.nodes, "nodes", goalNodes, "number of nodes of the generated site")
	fl.IntVar(&c.runs, "runs", 3, "measured runs of each tool (the median is reported)")
	fl.Uint64Var(&c.seed, "seed", 1, "sitegen seed")
	fl.BoolVar(&c.keep, "keep", false, "keep the temporary directory (site, binary, schema)")
	fl.StringVar(&c.cue, "cue", "", "path of the cue binary (default: cue on PATH, then $(go env GOPATH)/bin/cue)")
	fl.BoolVar(&c.noCue, "no-cue", false, "measure anneal only")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 || c.runs < 1 {
		fmt.Fprintln(stderr, "usage: validate [-nodes N] [-runs R] [-seed S] [-keep] [-cue PATH] [-no-cue]")
		return 2
	}
	code, err := bench(c, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "validate:", err)
		return 1
	}
	return code
}

// measurement is one subprocess run (or the sum of several).
type measurement struct {
	wall time.Duration
	cpu  time.Duration // user + system
	rss  int64         // peak resident set, bytes
}

func bench(c config, stdout, stderr io.Writer) (int, error) {
	tmp, err := os.MkdirTemp("", "anneal-bench-")
	if err != nil {
		return 1, err
	}
	if c.keep {
		fmt.Fprintf(stdout, "keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	cueBin, cueErr := "", error(nil)
	if !c.noCue {
		cueBin, cueErr = findCue(c.cue)
		if cueErr != nil {
			fmt.Fprintf(stderr, "%v\n\n", cueErr)
		} else if v := cueVersionOf(cueBin); !strings.Contains(v, cueVersion) {
			fmt.Fprintf(stderr, "warning: %s is %q, not %s as in go.mod; install the matching one with\n  go install cuelang.org/go/cmd/cue@%s\n\n", cueBin, v, cueVersion, cueVersion)
		}
	}

	site := filepath.Join(tmp, "site")
	t0 := time.Now()
	res, err := gen.Generate(site, gen.Options{Nodes: c.nodes, Seed: c.seed})
	if err != nil {
		return 1, fmt.Errorf("generate: %w", err)
	}
	fmt.Fprintf(stdout, "site: %d nodes, %d regions, %d racks, %d networks, %d zones; %d files, %.1f MiB (generated in %.1fs)\n",
		res.Nodes, res.Regions, res.Racks, res.Networks, res.Zones, len(res.AllFiles()), float64(res.Bytes)/(1<<20), time.Since(t0).Seconds())

	anneal := filepath.Join(tmp, "anneal")
	if err := buildAnneal(anneal); err != nil {
		return 1, err
	}
	schemaFile := filepath.Join(tmp, "anneal.cue")
	if err := os.WriteFile(schemaFile, schema.SchemaSource(), 0o644); err != nil {
		return 1, err
	}
	fmt.Fprintf(stdout, "machine: %s/%s, %d CPUs, load average %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), loadAvg())
	fmt.Fprintf(stdout, "anneal: %s validate --site %s\n", anneal, site)
	if cueBin != "" {
		fmt.Fprintf(stdout, "cue:    %s; from %s, per kind: cue vet -c -d '#Kind' %s FILES...\n", cueVersionOf(cueBin), site, schemaFile)
	}

	// One warm-up run of each tool (page cache, binary), not measured.
	if _, err := runAnneal(anneal, site); err != nil {
		return 1, err
	}
	if cueBin != "" {
		if _, _, err := runCue(cueBin, schemaFile, site, res.Files); err != nil {
			return 1, err
		}
	}
	var annealRuns, cueRuns []measurement
	var perKind map[string]measurement
	for i := range c.runs {
		m, err := runAnneal(anneal, site)
		if err != nil {
			return 1, err
		}
		annealRuns = append(annealRuns, m)
		fmt.Fprintf(stdout, "run %d: anneal %.2fs %.0f MiB", i+1, m.wall.Seconds(), mib(m.rss))
		if cueBin != "" {
			m, kinds, err := runCue(cueBin, schemaFile, site, res.Files)
			if err != nil {
				return 1, err
			}
			cueRuns = append(cueRuns, m)
			perKind = kinds
			fmt.Fprintf(stdout, "; cue vet %.2fs %.0f MiB", m.wall.Seconds(), mib(m.rss))
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "load average after: %s\n\n", loadAvg())

	a := median(annealRuns)
	fmt.Fprintf(stdout, "%-26s %10s %10s %14s\n", fmt.Sprintf("median of %d run(s)", c.runs), "wall s", "CPU s", "peak RSS MiB")
	row := func(name string, m measurement) {
		fmt.Fprintf(stdout, "%-26s %10.2f %10.2f %14.0f\n", name, m.wall.Seconds(), m.cpu.Seconds(), mib(m.rss))
	}
	row("anneal validate", a)
	if len(cueRuns) > 0 {
		cm := median(cueRuns)
		row("cue vet (7 runs, by kind)", cm)
		fmt.Fprintf(stdout, "%-26s %10.1fx %9.1fx %13.1fx\n", "ratio cue/anneal", cm.wall.Seconds()/a.wall.Seconds(), cm.cpu.Seconds()/a.cpu.Seconds(), float64(cm.rss)/float64(a.rss))
		fmt.Fprintf(stdout, "\ncue vet by kind (last run):")
		for _, k := range kindOrder {
			if m, ok := perKind[k]; ok {
				fmt.Fprintf(stdout, " %s %.2fs/%.0fMiB", k, m.wall.Seconds(), mib(m.rss))
			}
		}
		fmt.Fprintln(stdout)
	}

	fmt.Fprintln(stdout)
	met := a.wall <= goalWall && a.rss <= goalRSS
	word := map[bool]string{true: "MET", false: "NOT MET"}
	fmt.Fprintf(stdout, "goal: anneal validate of %d nodes in <= %.0f s wall and <= 1 GiB peak RSS\n", goalNodes, goalWall.Seconds())
	if c.nodes != goalNodes {
		fmt.Fprintf(stdout, "      (this run has %d nodes; the goal is stated for %d)\n", c.nodes, goalNodes)
	}
	fmt.Fprintf(stdout, "      %s: %.2f s (%s), %.0f MiB (%s)\n", word[met],
		a.wall.Seconds(), word[a.wall <= goalWall], mib(a.rss), word[a.rss <= goalRSS])

	if cueErr != nil {
		fmt.Fprintf(stderr, "\ncue vet was not measured: %v\n", cueErr)
		return 1, nil
	}
	return 0, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// median by wall time (peak RSS and CPU of the same run).
func median(ms []measurement) measurement {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measurement) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// buildAnneal builds cmd/anneal of the module the benchmark runs in.
func buildAnneal(out string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	if mod == "" || mod == os.DevNull {
		return errors.New("run this from inside the anneal module (go run ./bench/validate)")
	}
	cmd := exec.Command("go", "build", "-o", out, "github.com/anneal-dev/anneal/cmd/anneal")
	cmd.Dir = filepath.Dir(mod)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build cmd/anneal: %v\n%s", err, b)
	}
	return nil
}

// findCue finds the cue CLI: the -cue flag, PATH, then GOBIN and
// $(go env GOPATH)/bin.
func findCue(flagPath string) (string, error) {
	if flagPath != "" {
		if _, err := os.Stat(flagPath); err != nil {
			return "", fmt.Errorf("cue binary %s: %w", flagPath, err)
		}
		return flagPath, nil
	}
	if p, err := exec.LookPath("cue"); err == nil {
		return p, nil
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
			dirs = append(dirs, strings.TrimSpace(lines[0]))
		}
		if len(lines) > 1 {
			for _, gp := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(gp, "bin"))
			}
		}
	}
	name := "cue"
	if runtime.GOOS == "windows" {
		name = "cue.exe"
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("the CUE CLI (cue) is not installed: not on PATH nor in %s.\nInstall the version anneal uses (go.mod: cuelang.org/go %s) with\n\n  go install cuelang.org/go/cmd/cue@%s\n\nor pass -cue /path/to/cue (or -no-cue to measure anneal alone)", strings.Join(dirs, ", "), cueVersion, cueVersion)
}

func cueVersionOf(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown version"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

func runAnneal(bin, site string) (measurement, error) {
	m, out, err := timed(exec.Command(bin, "validate", "--site", site))
	if err != nil {
		return m, fmt.Errorf("anneal validate failed: %v\n%s", err, tail(out))
	}
	return m, nil
}

// runCue runs cue vet once per kind, sequentially, from the site directory.
func runCue(bin, schemaFile, site string, files map[string][]string) (measurement, map[string]measurement, error) {
	var total measurement
	kinds := map[string]measurement{}
	for _, k := range kindOrder {
		fs := files[k]
		if len(fs) == 0 {
			continue
		}
		args := append([]string{"vet", "-c", "-d", "#" + k, schemaFile}, fs...)
		cmd := exec.Command(bin, args...)
		cmd.Dir = site
		m, out, err := timed(cmd)
		if err != nil {
			return total, nil, fmt.Errorf("cue vet -d '#%s' failed: %v\n%s", k, err, tail(out))
		}
		kinds[k] = m
		total.wall += m.wall
		total.cpu += m.cpu
		total.rss = max(total.rss, m.rss)
	}
	return total, kinds, nil
}

// timed runs a command and returns its wall time, CPU time and peak RSS.
func timed(cmd *exec.Cmd) (measurement, []byte, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	m := measurement{wall: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		m.cpu = ps.UserTime() + ps.SystemTime()
		m.rss = maxRSS(ps)
	}
	return m, out.Bytes(), err
}

func tail(b []byte) string {
	const max = 4000
	if len(b) > max {
		return "...\n" + string(b[len(b)-max:])
	}
	return string(b)
}
