package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

func stormCmd(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("storm", flag.ContinueOnError)
	fl.SetOutput(stderr)
	nodes := fl.Int("nodes", 1000, "nodes in the generated site, all armed, all booting at once")
	inproc := fl.Bool("inprocess", false, "run the server in this process (memory figures then include the clients)")
	keep := fl.Bool("keep", false, "keep the work directory (site, bbolt state, server log)")
	dir := fl.String("dir", "", "work directory (default: a new temporary directory)")
	rcvbuf := fl.Int("rcvbuf", 0, "experiment: set SO_RCVBUF of anneal's DHCP socket to this many bytes (0: kernel default, as pxe/dhcp leaves it)")
	spread := fl.Duration("spread", 0, "power the machines on evenly over this long instead of all at once")
	cpuprofile := fl.String("cpuprofile", "", "write the server's CPU profile to this file")
	if err := fl.Parse(args); err != nil {
		return err
	}
	work := *dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "netboot-bench-"); err != nil {
			return err
		}
	}
	if *keep {
		fmt.Fprintln(stderr, "work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}

	ctx := context.Background()
	siteDir := filepath.Join(work, "site")
	if _, err := gen.Generate(siteDir, gen.Options{Nodes: *nodes, Seed: 1}); err != nil {
		return err
	}
	site, _, err := schema.LoadDir(ctx, siteDir, schema.LoadOptions{})
	if err != nil {
		return err
	}
	machines, err := machinesOf(site)
	if err != nil {
		return err
	}

	opts := serverOptions{
		SiteDir: siteDir, StatePath: filepath.Join(work, "state.db"),
		HTTPAddr: "127.0.0.1:0", DHCPAddr: "127.0.0.1:0", ServerIP: "127.0.0.1",
		LogPath: filepath.Join(work, "server.log"), Arm: true, RcvBuf: *rcvbuf, CPUProfile: *cpuprofile,
	}
	var srv serverHandle
	if *inproc {
		ns, err := startServer(opts)
		if err != nil {
			return err
		}
		srv = inProcess{ns}
	} else {
		c, err := startChild(nil, opts, stderr)
		if err != nil {
			return err
		}
		srv = c
	}
	defer srv.Close()
	ready := srv.Ready()

	server, err := net.ResolveUDPAddr("udp4", ready.DHCP)
	if err != nil {
		return err
	}
	relays := map[string]*relay{}
	for _, m := range machines {
		r := relays[m.rack]
		if r == nil {
			k := len(relays)
			if r, err = newRelay(net.IPv4(127, 67, byte(1+k/250), byte(1+k%250)), server); err != nil {
				return err
			}
			defer r.close()
			relays[m.rack] = r
		}
		m.relay = r
	}

	base := "http://" + ready.HTTP
	results := make([]timing, len(machines))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, m := range machines {
		delay := *spread * time.Duration(i) / time.Duration(len(machines))
		wg.Go(func() {
			<-start
			if delay > 0 {
				time.Sleep(delay)
			}
			results[i] = m.boot(ctx, base)
		})
	}
	time.Sleep(200 * time.Millisecond) // every machine waits at the line
	load := loadAvg()
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)

	var mem [3]serverStats
	for i, how := range []string{"", "gc", "free"} {
		if mem[i], err = srv.Stats(how); err != nil {
			return fmt.Errorf("server stats: %w", err)
		}
	}
	st := mem[0]
	report(stdout, *inproc, *spread, len(machines), len(relays), ready, mem, wall, results)
	fmt.Fprintf(stdout, "1-minute load average at the start: %.1f (2 cores, shared machine)\n", load)
	if n := failures(results); n > 0 || st.States["installed"] != len(machines) || st.Warnings > 0 {
		return fmt.Errorf("storm had errors: %d machines failed, %d of %d records installed, %d server warnings",
			n, st.States["installed"], len(machines), st.Warnings)
	}
	return nil
}

func failures(rs []timing) int {
	n := 0
	for _, r := range rs {
		if r.err != nil {
			n++
		}
	}
	return n
}

func report(w io.Writer, inproc bool, spread time.Duration, n, relays int, ready serverReady, mem [3]serverStats, wall time.Duration, rs []timing) {
	st := mem[0]
	where := "a child process (the serve subcommand)"
	if inproc {
		where = "this process (memory includes the simulated machines)"
	}
	when := "at once"
	if spread > 0 {
		when = "powered on evenly over " + spread.String()
	}
	fmt.Fprintf(w, "Boot storm: %d machines %s through %d relays; server in %s\n", n, when, relays, where)
	if ready.RcvBuf > 0 {
		fmt.Fprintf(w, "EXPERIMENT: SO_RCVBUF of the DHCP socket set from outside pxe/dhcp; the kernel reports %d bytes\n", ready.RcvBuf)
	}
	fmt.Fprintf(w, "site: %d nodes, %d DHCP reservations, loaded in %.2f s; %d records armed in bbolt in %.2f s\n",
		ready.Nodes, ready.Leases, ready.LoadSeconds, ready.Armed, ready.ArmSeconds)
	retrans := 0
	for _, r := range rs {
		retrans += r.retransmits
	}
	fmt.Fprintf(w, "\n| | figure |\n|---|---:|\n")
	fmt.Fprintf(w, "| wall time, first DISCOVER to last callback | %.2f s |\n", wall.Seconds())
	fmt.Fprintf(w, "| machines failed | %d |\n", failures(rs))
	fmt.Fprintf(w, "| DHCP retransmissions (iPXE backoff 1, 2, 4, 8 s) | %d |\n", retrans)
	fmt.Fprintf(w, "| records installed after the storm | %d of %d |\n", st.States["installed"], n)
	fmt.Fprintf(w, "| server log records at warning or error | %d |\n", st.Warnings)

	type phase struct {
		name string
		ds   []time.Duration
	}
	var ph [7]phase
	ph[0].name = "DHCP DISCOVER → OFFER"
	ph[1].name = "DHCP REQUEST → ACK"
	ph[2].name = "DHCP, whole exchange"
	ph[3].name = "GET /ipxe/{mac}"
	ph[4].name = "GET /install/{node}/{token}/{file}"
	ph[5].name = "POST /api/v1/nodes/{node}/installed"
	ph[6].name = "machine, DISCOVER to callback answered"
	errs := map[string]int{}
	for _, r := range rs {
		if r.err != nil {
			errs[r.phase+": "+r.err.Error()]++
			continue
		}
		ph[0].ds = append(ph[0].ds, r.discover)
		ph[1].ds = append(ph[1].ds, r.request)
		ph[2].ds = append(ph[2].ds, r.dhcp)
		ph[3].ds = append(ph[3].ds, r.script)
		ph[4].ds = append(ph[4].ds, r.files...)
		ph[5].ds = append(ph[5].ds, r.callback)
		ph[6].ds = append(ph[6].ds, r.total)
	}
	fmt.Fprintf(w, "\n| phase (successful machines) | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
	for _, p := range ph {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", p.name, len(p.ds), ms(pct(p.ds, 0.50)), ms(pct(p.ds, 0.99)), ms(pct(p.ds, 1)))
	}
	if len(errs) > 0 {
		keys := make([]string, 0, len(errs))
		for k := range errs {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return errs[keys[i]] > errs[keys[j]] })
		fmt.Fprintln(w, "\nerrors:")
		for i, k := range keys {
			if i == 10 {
				fmt.Fprintf(w, "  ... %d more kinds\n", len(keys)-i)
				break
			}
			fmt.Fprintf(w, "  %5d  %s\n", errs[k], k)
		}
	}
	if st.LastWarn != "" {
		fmt.Fprintf(w, "\nlast server warning: %s\n", st.LastWarn)
	}

	fmt.Fprintf(w, "\n| server memory, %d machines | Go heap live | Go heap objects | Go total | VmRSS (anon + file) | VmHWM |\n|---|---:|---:|---:|---:|---:|\n", n)
	row := func(name string, m memStats) {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s (%s + %s) | %s |\n", name, mib(m.HeapLive), mib(m.HeapObjects), mib(m.GoTotal),
			mib(m.RSS), mib(m.RSSAnon), mib(m.RSSFile), mib(m.HWM))
	}
	row("site loaded, nodes armed", ready.Mem)
	row("then runtime.GC(), before the storm", ready.MemGC)
	row("after the storm", mem[0].Mem)
	row("after the storm, then runtime.GC()", mem[1].Mem)
	row("then debug.FreeOSMemory()", mem[2].Mem)
	f := mem[2].Mem
	fmt.Fprintf(w, "\nGo's own accounting at the last row: heap objects %s, unused in spans in use %s, free not yet returned %s, stacks %s, runtime metadata %s\n",
		mib(f.HeapObjects), mib(f.HeapUnused), mib(f.HeapFree), mib(f.Stacks), mib(f.Metadata))
	per := func(b uint64) float64 { return float64(b) / float64(n) * 1000 / 1e6 }
	fmt.Fprintf(w, "\nper 1,000 machines (MB = 10^6 bytes; goal ≤ 50 MB): VmRSS after the storm %.1f MB, peak (VmHWM) %.1f MB, heap in use %.1f MB, VmRSS once freed pages are returned %.1f MB\n",
		per(mem[0].Mem.RSS), per(mem[2].Mem.HWM), per(mem[1].Mem.HeapLive), per(mem[2].Mem.RSS))
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
