package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/schema"
)

// perfCmd runs perfdhcp against anneal's DHCP server and against
// kea-dhcp4, one after the other, each alone in a network namespace whose
// veth peer (in a second namespace) carries perfdhcp: the same interface,
// addresses, MAC list and rates for both.
func perfCmd(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("perfdhcp", flag.ContinueOnError)
	fl.SetOutput(stderr)
	nodes := fl.Int("nodes", 1000, "nodes in the generated site; perfdhcp draws from their PXE MACs (-M)")
	ratesFlag := fl.String("rates", "1000,4000,16000", "perfdhcp -r rates (DORA exchanges started a second), one run each")
	period := fl.Int("period", 10, "perfdhcp -p: seconds a run")
	keaMT := fl.Bool("kea-mt", true, "also run Kea with multi-threading (2 threads: the machine has 2 cores)")
	keep := fl.Bool("keep", false, "keep the work directory (configs, perfdhcp outputs, logs)")
	cpuprofile := fl.String("cpuprofile", "", "write anneal's DHCP server CPU profile (of its last run) to this file")
	repeat := fl.Int("repeat", 3, "rounds; each figure is the median run (by leases/s)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	var rates []int
	for _, r := range strings.Split(*ratesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			return fmt.Errorf("-rates: %q is not a positive number", r)
		}
		rates = append(rates, n)
	}
	for _, tool := range []string{"ip", "perfdhcp", "kea-dhcp4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (apt-get install kea-dhcp4-server kea-admin iproute2): %w", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("perfdhcp needs root: it creates network namespaces")
	}
	work, err := os.MkdirTemp("", "netboot-perfdhcp-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(stderr, "work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}

	// The site, its reservations, and the MACs of the provisioning subnet
	// both servers share.
	siteDir := filepath.Join(work, "site")
	if _, err := gen.Generate(siteDir, gen.Options{Nodes: *nodes, Seed: 1}); err != nil {
		return err
	}
	site, _, err := schema.LoadDir(context.Background(), siteDir, schema.LoadOptions{})
	if err != nil {
		return err
	}
	machines, err := machinesOf(site)
	if err != nil {
		return err
	}
	leases := dhcp.LeasesFromSite(site)
	first := leases[machines[0].mac.String()]
	subnet := &net.IPNet{IP: first.IP.Mask(first.Mask), Mask: first.Mask}
	var macs []*machine
	for _, m := range machines {
		if subnet.Contains(m.want) {
			macs = append(macs, m)
		}
	}
	ones, _ := subnet.Mask.Size()
	srvIP, cliIP := hostIP(subnet, 2), hostIP(subnet, 3) // .1 is the gateway, nodes start at .11
	var macList bytes.Buffer
	for _, m := range macs {
		fmt.Fprintln(&macList, m.mac)
	}
	macFile := filepath.Join(work, "macs.txt")
	if err := os.WriteFile(macFile, macList.Bytes(), 0o644); err != nil {
		return err
	}

	// Two namespaces joined by a veth pair.
	tag := strconv.Itoa(os.Getpid() % 100000)
	nsS, nsC, vS, vC := "nbperf-s"+tag, "nbperf-c"+tag, "nbs"+tag, "nbc"+tag
	defer func() {
		_ = exec.Command("ip", "netns", "del", nsS).Run()
		_ = exec.Command("ip", "netns", "del", nsC).Run()
	}()
	for _, c := range [][]string{
		{"netns", "add", nsS}, {"netns", "add", nsC},
		{"link", "add", vS, "netns", nsS, "type", "veth", "peer", "name", vC, "netns", nsC},
		{"-n", nsS, "addr", "add", fmt.Sprintf("%s/%d", srvIP, ones), "dev", vS},
		{"-n", nsC, "addr", "add", fmt.Sprintf("%s/%d", cliIP, ones), "dev", vC},
		{"-n", nsS, "link", "set", "lo", "up"}, {"-n", nsC, "link", "set", "lo", "up"},
		{"-n", nsS, "link", "set", vS, "up"}, {"-n", nsC, "link", "set", vC, "up"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}

	fmt.Fprintf(stdout, "perfdhcp: %d nodes, %d MACs of subnet %s (-M %s); servers in netns %s on %s (%s), perfdhcp in netns %s on %s (%s)\n",
		len(machines), len(macs), subnet, filepath.Base(macFile), nsS, vS, srvIP, nsC, vC, cliIP)
	fmt.Fprintf(stdout, "each run: ip netns exec %s perfdhcp -4 -l %s -r RATE -p %d -M macs.txt\n", nsC, vC, *period)

	type server struct {
		name  string
		start func() (stop func() error, err error)
	}
	servers := []server{{
		name: "anneal (pxe/dhcp)",
		start: func() (func() error, error) {
			c, err := startChild([]string{"ip", "netns", "exec", nsS}, serverOptions{
				SiteDir: siteDir, DHCPAddr: "0.0.0.0:67", DHCPIface: vS, ServerIP: srvIP.String(),
				LogPath: filepath.Join(work, "anneal.log"), CPUProfile: *cpuprofile,
			}, stderr)
			if err != nil {
				return nil, err
			}
			return c.Close, nil
		},
	}}
	keaRun := func(name string, mt bool) server {
		return server{name: name, start: func() (func() error, error) {
			return startKea(work, nsS, vS, subnet, srvIP, macs, leases, mt, stderr)
		}}
	}
	servers = append(servers, keaRun("Kea 2.2, memfile, single-threaded (its default)", false))
	if *keaMT {
		servers = append(servers, keaRun("Kea 2.2, memfile, multi-threaded (2 threads)", true))
	}

	// Each rate runs every server in turn, each started fresh, so the
	// servers meet the same conditions (the machine is shared); -repeat
	// rounds, the median reported.
	runs := make([][][]perfResult, len(servers)) // server, rate, round
	for i := range runs {
		runs[i] = make([][]perfResult, len(rates))
	}
	var loads []float64
	for round := range *repeat {
		for j, r := range rates {
			for i, s := range servers {
				stop, err := s.start()
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				loads = append(loads, loadAvg())
				res, err := runPerfdhcp(work, nsC, vC, macFile, r, *period, fmt.Sprintf("%d-%d-%d", round, i, r))
				if serr := stop(); serr != nil {
					fmt.Fprintf(stderr, "stopping %s: %v\n", s.name, serr)
				}
				if err != nil {
					return fmt.Errorf("%s at %d/s: %w", s.name, r, err)
				}
				runs[i][j] = append(runs[i][j], res)
			}
		}
	}
	results := make([][]perfResult, len(servers))
	for i := range servers {
		for j := range rates {
			results[i] = append(results[i], medianRun(runs[i][j]))
		}
	}
	fmt.Fprintf(stdout, "median of %d rounds; 1-minute load average before each run: %.1f to %.1f (the machine is shared)\n",
		*repeat, slices.Min(loads), slices.Max(loads))

	fmt.Fprintf(stdout, "\n| server | -r rate | leases/s (4-way exchanges/s) | DISCOVER→OFFER drops | REQUEST→ACK drops | avg delay D-O / R-A |\n|---|---:|---:|---:|---:|---:|\n")
	for i, s := range servers {
		for j, r := range rates {
			p := results[i][j]
			fmt.Fprintf(stdout, "| %s | %d | %.0f | %d of %d | %d of %d | %.2f / %.2f ms |\n", s.name, r, p.Rate,
				p.DO.Drops, p.DO.Sent, p.RA.Drops, p.RA.Sent, p.DO.AvgMS, p.RA.AvgMS)
		}
	}
	fmt.Fprintf(stdout, "\n| -r rate | anneal leases/s | Kea leases/s (single / multi-threaded) | ratio anneal/Kea |\n|---:|---:|---:|---:|\n")
	for j, r := range rates {
		a := results[0][j].Rate
		k1 := results[1][j].Rate
		row := fmt.Sprintf("| %d | %.0f | %.0f", r, a, k1)
		ratio := fmt.Sprintf("%.2f", a/k1)
		if len(servers) > 2 {
			k2 := results[2][j].Rate
			row += fmt.Sprintf(" / %.0f", k2)
			ratio += fmt.Sprintf(" / %.2f", a/k2)
		}
		fmt.Fprintf(stdout, "%s | %s |\n", row, ratio)
	}
	best := make([]float64, len(servers))
	for i := range servers {
		for _, p := range results[i] {
			best[i] = max(best[i], p.Rate)
		}
	}
	fmt.Fprintf(stdout, "\nbest leases/s over the rates:")
	for i, s := range servers {
		fmt.Fprintf(stdout, " %s %.0f;", s.name, best[i])
	}
	fmt.Fprintf(stdout, " ratio anneal/Kea %.2f (single-threaded)", best[0]/best[1])
	if len(servers) > 2 {
		fmt.Fprintf(stdout, ", %.2f (multi-threaded)", best[0]/best[2])
	}
	fmt.Fprintln(stdout)
	return nil
}

// medianRun is the run with the median rate.
func medianRun(rs []perfResult) perfResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b perfResult) int { return cmp.Compare(a.Rate, b.Rate) })
	return s[len(s)/2]
}

// loadAvg is the 1-minute load average.
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	return f
}

func hostIP(n *net.IPNet, host byte) net.IP {
	ip := append(net.IP(nil), n.IP.To4()...)
	ip[3] += host
	return ip
}

// startKea writes a kea-dhcp4 configuration with one reservation per MAC
// (no pool: like anneal, Kea then answers only the reserved MACs) and runs
// it in the server namespace.
func startKea(work, ns, iface string, subnet *net.IPNet, srvIP net.IP, macs []*machine, leases map[string]dhcp.Lease, mt bool, stderr io.Writer) (func() error, error) {
	dir := filepath.Join(work, "kea-st")
	if mt {
		dir = filepath.Join(work, "kea-mt")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type reservation struct {
		HW       string `json:"hw-address"`
		IP       string `json:"ip-address"`
		Hostname string `json:"hostname"`
	}
	var res []reservation
	for _, m := range macs {
		l := leases[m.mac.String()]
		res = append(res, reservation{HW: m.mac.String(), IP: l.IP.String(), Hostname: l.Hostname})
	}
	first := leases[macs[0].mac.String()]
	opts := []map[string]any{}
	if first.Router != nil {
		opts = append(opts, map[string]any{"name": "routers", "data": first.Router.String()})
	}
	if first.Domain != "" {
		opts = append(opts, map[string]any{"name": "domain-name", "data": first.Domain})
	}
	opts = append(opts,
		map[string]any{"name": "tftp-server-name", "data": srvIP.String()},
		map[string]any{"name": "boot-file-name", "data": dhcp.DefaultBIOSBootFile})
	cfg := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{iface}},
		"lease-database": map[string]any{"type": "memfile", "persist": true,
			"name": filepath.Join(dir, "leases4.csv"), "lfc-interval": 3600},
		"valid-lifetime":               3600,
		"host-reservation-identifiers": []string{"hw-address"},
		"multi-threading":              map[string]any{"enable-multi-threading": mt, "thread-pool-size": 2, "packet-queue-size": 64},
		"subnet4": []map[string]any{{
			"id": 1, "subnet": subnet.String(),
			"next-server": srvIP.String(), "boot-file-name": dhcp.DefaultBIOSBootFile,
			"option-data":  opts,
			"reservations": res,
		}},
		"loggers": []map[string]any{{
			"name": "kea-dhcp4", "severity": "WARN",
			"output_options": []map[string]any{{"output": filepath.Join(dir, "kea.log")}},
		}},
	}}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "kea-dhcp4.conf")
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "kea-dhcp4", "-t", conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kea-dhcp4 -t: %v: %s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "kea-dhcp4", "-c", conf)
	cmd.Env = append(os.Environ(), "KEA_PIDFILE_DIR="+dir, "KEA_LOCKFILE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			return nil
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return errors.New("kea-dhcp4 did not stop on SIGTERM")
		}
	}
	// Ready when it listens on port 67 in the namespace.
	for deadline := time.Now().Add(15 * time.Second); ; {
		out, _ := exec.Command("ip", "netns", "exec", ns, "ss", "-H", "-lun", "sport", "=", ":67").Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return stop, nil
		}
		if time.Now().After(deadline) {
			_ = stop()
			return nil, errors.New("kea-dhcp4 did not listen on port 67 within 15 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// perfResult is perfdhcp's final report.
type perfResult struct {
	Rate   float64 // 4-way exchanges a second
	DO, RA perfExchange
}

type perfExchange struct {
	Sent, Received, Drops int
	AvgMS                 float64
}

var (
	reRate    = regexp.MustCompile(`Rate:\s*([0-9.]+)\s+4-way exchanges/second`)
	reSection = regexp.MustCompile(`\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*`)
)

func runPerfdhcp(work, ns, iface, macFile string, rate, period int, tag string) (perfResult, error) {
	args := []string{"netns", "exec", ns, "perfdhcp", "-4", "-l", iface, "-r", strconv.Itoa(rate), "-p", strconv.Itoa(period), "-M", macFile}
	out, err := exec.Command("ip", args...).CombinedOutput()
	_ = os.WriteFile(filepath.Join(work, "perfdhcp-"+tag+".txt"), out, 0o644)
	// perfdhcp exits 3 when packets were dropped; its report still holds.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		return perfResult{}, fmt.Errorf("perfdhcp: %v: %s", err, lastLines(string(out), 10))
	}
	return parsePerfdhcp(string(out))
}

func parsePerfdhcp(out string) (perfResult, error) {
	var p perfResult
	m := reRate.FindStringSubmatch(out)
	if m == nil {
		return p, fmt.Errorf("no rate in perfdhcp output: %s", lastLines(out, 20))
	}
	p.Rate, _ = strconv.ParseFloat(m[1], 64)
	idx := reSection.FindAllStringSubmatchIndex(out, -1)
	for i, loc := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		sec := out[loc[1]:end]
		e := perfExchange{Sent: field(sec, "sent packets"), Received: field(sec, "received packets"), Drops: field(sec, "drops")}
		if v := regexp.MustCompile(`avg delay:\s*([0-9.]+) ms`).FindStringSubmatch(sec); v != nil {
			e.AvgMS, _ = strconv.ParseFloat(v[1], 64)
		}
		if out[loc[2]:loc[3]] == "DISCOVER-OFFER" {
			p.DO = e
		} else {
			p.RA = e
		}
	}
	return p, nil
}

func field(sec, name string) int {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s*([0-9]+)`).FindStringSubmatch(sec)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
