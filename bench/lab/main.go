// Command lab converges a fresh generated site end to end against `anneal
// lab`: DNS, netboot, rebuild and verify of every active node, through the
// real daemon and the lab's virtual Redfish BMCs and nodes.
//
//	go run ./bench/lab -nodes 1000
//
// It generates the site (policies: canaries 1, maxUnavailable 10% per rack
// and per role, maxConcurrentInstalls 100), points its DNS targets at free
// loopback ports, makes its IPMI hardware profile Redfish (the lab's BMCs
// speak Redfish only), commits it to a fresh git repository, builds
// bin/anneal into a temporary directory (or takes -anneal), starts `anneal
// lab --boot-delay 1s --agent-interval 0` and then `anneal serve --repo
// --interval 1s --netboot-listen --lab`, and times serve's start to the
// commit applied with every active node verified on its build (polling
// /api/v1/status and /api/v1/nodes). It prints the time against the goal
// (60 s) and the ideal (the ideal schedule's rounds × the boot delay: see
// bench/rollout/ideal), the reconcile's step timings, the rollout's
// progress over time, and both processes' peak RSS (VmHWM) and CPU time,
// then stops both.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anneal-dev/anneal/bench/rollout/ideal"
	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/lab"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// The generated site's secrets, as the lab and anneal both resolve them.
var labEnv = []string{
	"ANNEAL_BMC_PASSWORD=lab-bmc-password",
	"ANNEAL_TSIG_SECRET=bGFiLXRzaWctc2VjcmV0LWZvci10aGUtZGVtbw==",
	"ANNEAL_PDNS_API_KEY=lab-pdns-api-key",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lab bench:", err)
		os.Exit(1)
	}
}

type options struct {
	nodes      int
	seed       uint64
	bin        string
	bootDelay  time.Duration
	interval   time.Duration
	timeout    time.Duration
	pol        gen.Policies
	keep       bool
	perfRecord bool
	goal       time.Duration
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fl := flag.NewFlagSet("lab", flag.ContinueOnError)
	var o options
	fl.IntVar(&o.nodes, "nodes", 1000, "nodes in the generated site")
	fl.Uint64Var(&o.seed, "seed", 1, "sitegen seed")
	fl.StringVar(&o.bin, "anneal", "", "the anneal binary (default: go build ./cmd/anneal into the work directory)")
	fl.DurationVar(&o.bootDelay, "boot-delay", time.Second, "the lab's simulated boot time")
	fl.DurationVar(&o.interval, "interval", time.Second, "serve's poll interval")
	fl.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fl.DurationVar(&o.goal, "goal", time.Minute, "the goal the wall time is compared with")
	fl.IntVar(&o.pol.Canaries, "canaries", 1, "policy canaries")
	fl.StringVar(&o.pol.PerRack, "per-rack", "10%", "policy maxUnavailable.perRack (empty: none)")
	perRole := fl.String("per-role", "10%", "policy maxUnavailable.perRole for every role (compute, storage, ingress, api); empty: none")
	fl.IntVar(&o.pol.MaxConcurrentInstalls, "max-installs", 100, "policy maxConcurrentInstalls")
	fl.BoolVar(&o.keep, "keep", false, "keep the work directory (site, logs, state)")
	fl.BoolVar(&o.perfRecord, "perf", false, "record serve with `perf record -g` (Linux perf) into the work directory; implies -keep")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if *perRole != "" {
		o.pol.PerRole = map[string]string{}
		for _, r := range []string{"compute", "storage", "ingress", "api"} {
			o.pol.PerRole[r] = *perRole
		}
	}
	if o.perfRecord {
		o.keep = true
	}
	work, err := os.MkdirTemp("", "anneal-bench-lab-")
	if err != nil {
		return err
	}
	b := &bench{o: o, work: work, out: out}
	defer func() {
		b.stopAll()
		if o.keep {
			fmt.Fprintln(out, "work directory kept:", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	return b.run(ctx)
}

type bench struct {
	o     options
	work  string
	out   io.Writer
	procs []*proc
}

// proc is a started process; done is closed once it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (b *bench) run(ctx context.Context) error {
	o := b.o
	siteDir := filepath.Join(b.work, "site")
	if _, err := gen.Generate(siteDir, gen.Options{Nodes: o.nodes, Seed: o.seed, Policies: &o.pol}); err != nil {
		return err
	}
	bindAddr, pdnsDNS, pdnsAPI, boot, api := freeAddr(), freeAddr(), freeAddr(), freeAddr(), freeAddr()
	if err := rewrite(filepath.Join(siteDir, "dns.yaml"), strings.NewReplacer(
		"127.0.0.1:5301", bindAddr, "http://127.0.0.1:8081", "http://"+pdnsAPI, "127.0.0.1:5302", pdnsDNS)); err != nil {
		return err
	}
	if err := rewrite(filepath.Join(siteDir, "hardware", "supermicro-sys-620u.yaml"), strings.NewReplacer("\nbmc: ipmi\n", "\nbmc: redfish\n")); err != nil {
		return err
	}
	site, diags, err := schema.LoadDir(ctx, siteDir, schema.LoadOptions{})
	if err != nil {
		return err
	}
	if len(diags) > 0 {
		return fmt.Errorf("generated site: %v", diags[0])
	}
	plan := rollout.PlanRebuilds(site, nil, time.Now())
	sched := ideal.Of(site, plan)
	active := map[string]bool{}
	for _, n := range site.Nodes {
		active[n.Name] = n.Exists() && n.State != schema.StateMaintenance
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "generated site"}} {
		if _, err := git(siteDir, args...); err != nil {
			return err
		}
	}
	head, err := git(siteDir, "rev-parse", "HEAD")
	if err != nil {
		return err
	}
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(b.work, "anneal")
		t := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/anneal")
		cmd.Dir, cmd.Stderr = moduleRoot(), os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/anneal: %w", err)
		}
		fmt.Fprintf(b.out, "built %s in %s\n", bin, time.Since(t).Round(100*time.Millisecond))
	}
	pol := site.Config.Policies
	fmt.Fprintf(b.out, "site: %d nodes, %d to rebuild (%d in maintenance); canaries %d, perRack %s, perRole %s, maxConcurrentInstalls %d\n",
		len(site.Nodes), len(plan.Rebuilds), len(plan.Held), pol.Canaries, o.pol.PerRack, perRoleOf(o.pol.PerRole), sched.Budget)
	fmt.Fprintf(b.out, "ideal schedule: %d round(s): first wave %v, then %v\n", sched.Rounds(), sched.First, sched.Rest)

	labDir := filepath.Join(b.work, "lab")
	// The operator's grants, outside the site's folder.
	if err := os.WriteFile(filepath.Join(b.work, "secrets.yaml"), []byte(gen.Grants), 0o600); err != nil {
		return err
	}
	t := time.Now()
	labProc, err := b.start("lab", bin, "lab", "--site", siteDir, "--dir", labDir, "--boot-url", "http://"+boot,
		"--boot-delay", o.bootDelay.String(), "--agent-interval", "0")
	if err != nil {
		return err
	}
	if _, err := lab.WaitEndpoints(ctx, labDir, 2*time.Minute); err != nil {
		return fmt.Errorf("the lab did not start (see %s): %w", filepath.Join(b.work, "lab.log"), err)
	}
	fmt.Fprintf(b.out, "anneal lab up in %s (pid %d)\n", time.Since(t).Round(10*time.Millisecond), labProc.cmd.Process.Pid)

	start := time.Now()
	serve, err := b.start("serve", bin, "serve", "--repo", siteDir, "--branch", "main", "--interval", o.interval.String(),
		"--state", filepath.Join(b.work, "state.db"), "--listen", api, "--netboot-listen", boot, "--lab", labDir,
		"--install-timeout", "5m")
	if err != nil {
		return err
	}
	if o.perfRecord {
		perf := exec.Command("perf", "record", "-g", "-F", "499", "-o", filepath.Join(b.work, "serve.perf"), "-p", strconv.Itoa(serve.cmd.Process.Pid))
		perf.Stdout, perf.Stderr = io.Discard, io.Discard
		if _, err := b.startCmd(perf); err != nil {
			return fmt.Errorf("perf: %w", err)
		}
	}
	base := "http://" + api
	var (
		ready, rolloutSeen time.Duration
		progress           []string
		lastDone           = -1
		st                 status
	)
	deadline := start.Add(o.timeout)
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("not applied within %s; last status: %+v (logs in %s)", o.timeout, st, b.work)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if serve.exited() {
			return fmt.Errorf("serve exited (see %s)", filepath.Join(b.work, "serve.log"))
		}
		st = status{}
		if err := getJSON(base+"/api/v1/status", &st); err == nil {
			el := time.Since(start)
			if ready == 0 {
				ready = el
			}
			if st.Rollout != nil {
				if rolloutSeen == 0 {
					rolloutSeen = el
				}
				if st.Rollout.Done != lastDone && (st.Rollout.Done-lastDone >= 100 || st.Rollout.Done == st.Rollout.Total) {
					progress = append(progress, fmt.Sprintf("%.1f s: %d/%d", el.Seconds(), st.Rollout.Done, st.Rollout.Total))
					lastDone = st.Rollout.Done
				}
			}
			if st.AppliedRevision == head {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	applied := time.Since(start)
	var nodes []apiNode
	if err := getJSON(base+"/api/v1/nodes", &nodes); err != nil {
		return err
	}
	verified := 0
	var bad []string
	for _, n := range nodes {
		if !active[n.Name] {
			continue
		}
		if n.Live != nil && n.Live.State == string(node.Verified) && n.Live.UpToDate && n.Live.BuildID == n.BuildID {
			verified++
		} else {
			bad = append(bad, n.Name)
		}
	}
	checked := time.Since(start)
	serveRSS, serveCPU := procStats(serve.cmd.Process.Pid)
	labRSS, labCPU := procStats(labProc.cmd.Process.Pid)
	var labNodes []struct {
		Name  string `json:"name"`
		Boots int    `json:"boots"`
	}
	boots := 0
	if ep, err := lab.ReadEndpoints(labDir); err == nil {
		if err := getJSON(ep.Control+"/lab/v1/nodes", &labNodes); err == nil {
			for _, n := range labNodes {
				boots += n.Boots
			}
		}
	}
	b.stopAll()

	if len(bad) > 0 {
		return fmt.Errorf("applied, but %d active node(s) not verified on their build: %v", len(bad), bad[:min(len(bad), 10)])
	}
	idealWall := time.Duration(sched.Rounds()) * o.bootDelay
	w := b.out
	fmt.Fprintf(w, "\n| %d nodes, boot %s | figure | goal |\n|---|---:|---|\n", o.nodes, o.bootDelay)
	fmt.Fprintf(w, "| serve start → commit applied, every active node verified | %.1f s | ≤ %s: %s |\n",
		applied.Seconds(), o.goal, map[bool]string{true: "met", false: "missed"}[applied <= o.goal])
	fmt.Fprintf(w, "| ideal: %d rounds × %s boot | %.1f s | |\n", sched.Rounds(), o.bootDelay, idealWall.Seconds())
	fmt.Fprintf(w, "| ratio wall / ideal | %.1f× | |\n", applied.Seconds()/idealWall.Seconds())
	fmt.Fprintf(w, "| nodes verified (active) / lab boots | %d / %d | |\n", verified, boots)
	fmt.Fprintf(w, "| serve: API up, rollout started (first seen) | %.1f s, %.1f s | |\n", ready.Seconds(), rolloutSeen.Seconds())
	fmt.Fprintf(w, "| reconciles / failures | %d / %d | |\n", st.Reconciles, st.Failures)
	fmt.Fprintf(w, "| serve peak RSS (VmHWM), CPU | %.0f MiB, %.1f s | |\n", float64(serveRSS)/1024, serveCPU)
	fmt.Fprintf(w, "| lab peak RSS (VmHWM), CPU | %.0f MiB, %.1f s | |\n", float64(labRSS)/1024, labCPU)
	fmt.Fprintf(w, "\nsteps of the reconcile that applied it (s): %s\n", stepsString(st.Steps))
	fmt.Fprintf(w, "rollout progress (done/total): %s\n", strings.Join(progress, ", "))
	fmt.Fprintf(w, "(nodes checked %.1f s after serve start)\n", checked.Seconds())
	return nil
}

type status struct {
	AppliedRevision string             `json:"appliedRevision"`
	LastError       string             `json:"lastError"`
	Reconciles      int                `json:"reconciles"`
	Failures        int                `json:"failures"`
	Steps           map[string]float64 `json:"steps"`
	Rollout         *struct {
		Done    int  `json:"done"`
		Total   int  `json:"total"`
		Running bool `json:"running"`
	} `json:"rollout"`
}

type apiNode struct {
	Name    string `json:"name"`
	BuildID string `json:"buildId"`
	Live    *struct {
		State    string `json:"state"`
		BuildID  string `json:"buildId"`
		UpToDate bool   `json:"upToDate"`
	} `json:"live"`
}

func stepsString(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %.3f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func perRoleOf(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	vals := map[string]bool{}
	for _, v := range m {
		vals[v] = true
	}
	if len(vals) == 1 {
		for v := range vals {
			return v + " each"
		}
	}
	return fmt.Sprint(m)
}

// start runs a daemon with its log in WORK/NAME.log.
func (b *bench) start(name, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(b.work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + b.work, "ANNEAL_SECRETS=" + filepath.Join(b.work, "secrets.yaml")}, labEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := b.startCmd(cmd)
	if err != nil {
		logf.Close()
		return nil, err
	}
	go func() { <-p.done; logf.Close() }()
	return p, nil
}

func (b *bench) startCmd(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	b.procs = append(b.procs, p)
	return p, nil
}

// stopAll stops what start started, newest first (SIGTERM, then SIGKILL
// after 15 s), and waits for each.
func (b *bench) stopAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		p := b.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	b.procs = nil
}

// procStats reads a process's peak RSS (VmHWM, KiB) and CPU seconds.
func procStats(pid int) (hwmKiB int, cpu float64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				hwmKiB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			}
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (in parentheses): utime and stime
		// are the 12th and 13th, in clock ticks (100 a second on Linux).
		if i := bytes.LastIndexByte(data, ')'); i >= 0 {
			f := strings.Fields(string(data[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				s, _ := strconv.ParseFloat(f[12], 64)
				cpu = (u + s) / 100
			}
		}
	}
	return hwmKiB, cpu
}

func rewrite(path string, r *strings.Replacer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := r.Replace(string(data))
	if s == string(data) {
		return fmt.Errorf("%s: nothing to rewrite", path)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.net", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleRoot is the directory of the module's go.mod, for go build.
func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

var client = &http.Client{Timeout: 10 * time.Second}

func getJSON(url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
