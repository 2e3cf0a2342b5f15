package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/test/servers"
)

// BenchmarkServeScale runs the real daemon (built without the race
// detector) on a generated site (ANNEAL_BENCH_NODES, default 10,000) as a
// git repository, against a real BIND and a real PowerDNS, and reports:
// the first convergence, the duration of a pass with nothing to do, the
// time from a one-line commit to its apply (poll interval 1 s; mean and
// worst of ANNEAL_BENCH_COMMITS commits, default 5), and the daemon's
// peak RSS. With
// ANNEAL_BENCH_CPUPROFILE=FILE it also writes the daemon's CPU profile
// across the commit's pass (4 s) to FILE, and its heap profile after it to
// FILE.heap.
//
//	go test ./test -run '^$' -bench ServeScale -benchtime 1x -timeout 30m
func BenchmarkServeScale(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "anneal")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/anneal").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	dir, _, desired := generatedSite(b)
	var bindZones, pdnsZones []string
	for _, tz := range desired.Targets {
		if tz.Target == "bind" {
			bindZones = tz.Zones
		} else {
			pdnsZones = tz.Zones
		}
	}
	for range b.N {
		bs := servers.StartBIND(b, servers.BINDOptions{Zones: bindZones})
		ps := servers.StartPowerDNS(b, servers.PowerDNSOptions{})
		for _, z := range pdnsZones {
			ps.CreateZone(b, z)
		}
		dns, _ := os.ReadFile(filepath.Join(dir, "dns.yaml"))
		s := strings.NewReplacer("127.0.0.1:5301", bs.Addr, "http://127.0.0.1:8081", ps.APIURL, "127.0.0.1:5302", ps.DNSAddr).Replace(string(dns))
		if err := os.WriteFile(filepath.Join(dir, "dns.yaml"), []byte(s), 0o644); err != nil {
			b.Fatal(err)
		}
		gitB(b, dir, "init", "-q", "-b", "main")
		gitB(b, dir, "add", "-A")
		gitB(b, dir, "commit", "-q", "-m", "site")

		addr := freeAddr(b)
		api := "http://" + addr
		args := []string{"serve", "--repo", dir, "--state", filepath.Join(b.TempDir(), "state.db"), "--interval", "1s", "--listen", addr}
		profile := os.Getenv("ANNEAL_BENCH_CPUPROFILE")
		pprofAddr := ""
		if profile != "" {
			pprofAddr = freeAddr(b)
			args = append(args, "--pprof-listen", pprofAddr)
		}
		cmd := exec.Command(bin, args...)
		grants := filepath.Join(b.TempDir(), "secrets.yaml")
		if err := os.WriteFile(grants, []byte(gen.Grants), 0o600); err != nil {
			b.Fatal(err)
		}
		cmd.Env = append(baseEnv(b.TempDir()), "ANNEAL_TSIG_SECRET="+bs.Secret, "ANNEAL_PDNS_API_KEY="+ps.APIKey, "ANNEAL_SECRETS="+grants)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		head := gitB(b, dir, "rev-parse", "HEAD")
		waitApplied(b, api, head, 10*time.Minute)
		b.ReportMetric(time.Since(start).Seconds(), "first_converge_s")

		// A pass with nothing to do: the second one after the convergence.
		var steady struct {
			Reconciles          int     `json:"reconciles"`
			LastDurationSeconds float64 `json:"lastDurationSeconds"`
		}
		status := func() {
			_, body := httpGet(b, api+"/api/v1/status")
			if err := json.Unmarshal([]byte(body), &steady); err != nil {
				b.Fatalf("status: %v", err)
			}
		}
		status()
		for first := steady.Reconciles; steady.Reconciles < first+2; status() {
			time.Sleep(100 * time.Millisecond)
		}
		b.ReportMetric(steady.LastDurationSeconds, "steady_pass_s")

		// One-line commits, each an alias on another ingress node, made at
		// different moments of the poll interval (0, 0.2, ... 0.8 s after
		// the previous apply).
		commits := 5
		if v := os.Getenv("ANNEAL_BENCH_COMMITS"); v != "" {
			commits, _ = strconv.Atoi(v)
		}
		edits, _ := filepath.Glob(filepath.Join(dir, "nodes", "*.yaml"))
		var profiled chan struct{}
		var total, worst time.Duration
		done := 0
		for _, edit := range edits {
			if done == commits {
				break
			}
			data, _ := os.ReadFile(edit)
			changed := strings.Replace(string(data), "roles: [ingress]", fmt.Sprintf("roles: [ingress]\naliases: [bench-alias-%d]", done), 1)
			if changed == string(data) {
				continue
			}
			if err := os.WriteFile(edit, []byte(changed), 0o644); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Duration(done%5) * 200 * time.Millisecond)
			if profile != "" && done == 0 {
				// The daemon's CPU profile across the first commit's pass.
				profiled = make(chan struct{})
				go func() {
					defer close(profiled)
					if err := fetchProfile("http://"+pprofAddr+"/debug/pprof/profile?seconds=4", profile); err != nil {
						b.Error(err)
					}
				}()
				time.Sleep(200 * time.Millisecond)
			}
			gitB(b, dir, "commit", "-q", "-am", "one line")
			committed := time.Now()
			waitApplied(b, api, gitB(b, dir, "rev-parse", "HEAD"), 2*time.Minute)
			took := time.Since(committed)
			total += took
			worst = max(worst, took)
			done++
			var pass struct {
				LastReconcile       time.Time          `json:"lastReconcile"`
				LastDurationSeconds float64            `json:"lastDurationSeconds"`
				Steps               map[string]float64 `json:"steps"`
			}
			_, body := httpGet(b, api+"/api/v1/status")
			if err := json.Unmarshal([]byte(body), &pass); err != nil {
				b.Fatalf("status: %v", err)
			}
			b.Logf("commit %d applied in %.2f s: its pass started %.2f s after the commit and took %.2f s (load %.2f, compile %.2f, plan %.2f, apply %.2f)",
				done, took.Seconds(), pass.LastReconcile.Sub(committed).Seconds(), pass.LastDurationSeconds,
				pass.Steps["load"], pass.Steps["compile"], pass.Steps["plan"], pass.Steps["apply"])
		}
		if done < commits {
			b.Fatalf("only %d ingress nodes to edit", done)
		}
		b.ReportMetric(total.Seconds()/float64(done), "commit_to_applied_mean_s")
		b.ReportMetric(worst.Seconds(), "commit_to_applied_max_s")

		if profiled != nil {
			<-profiled
			if err := fetchProfile("http://"+pprofAddr+"/debug/pprof/heap?gc=1", profile+".heap"); err != nil {
				b.Error(err)
			}
		}
		rss := peakRSS(b, cmd.Process.Pid)
		b.ReportMetric(float64(rss)/1024, "daemon_peak_rss_MiB")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

func gitB(b *testing.B, dir string, args ...string) string {
	b.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.net", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func waitApplied(b *testing.B, api, rev string, limit time.Duration) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		code, body := httpGet(b, api+"/api/v1/status")
		if code == 200 && strings.Contains(body, `"appliedRevision": "`+rev+`"`) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, body := httpGet(b, api+"/api/v1/status")
	b.Fatalf("revision %s not applied within %s; status:\n%s", rev, limit, body)
}

// peakRSS reads the process's high-water RSS in KiB.
func peakRSS(b *testing.B, pid int) int {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

func fetchProfile(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s: %v", resp.Status, err)
	}
	return os.WriteFile(file, data, 0o644)
}
