package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/anneal-dev/anneal/lab"
	"github.com/anneal-dev/anneal/lab/labdns"
	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

func newLabCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "lab",
		Short: "Run a simulated fleet for a site on loopback: virtual Redfish BMCs and nodes, DNS servers",
		Long: `Lab stands up, on loopback, what anneal meets in a data center for the site:
a virtual BMC per node speaking Redfish (one HTTPS listener, routed by each
node's BMC address), virtual nodes that netboot against anneal's netboot
server when power-cycled with a one-time PXE boot (script, install config,
install callback, then agent reports), and an authoritative DNS server for
each DNS target of the site (RFC 2136 with the site's TSIG key, or the
PowerDNS API subset anneal uses) on the target's own address.

The site is used unchanged; its secrets come from the operator's grants
(--secrets FILE or $ANNEAL_SECRETS, as for anneal serve; for the example
site: examples/lab-secrets.yaml), for the addresses the site gives its BMCs
and DNS servers. Run anneal serve --netboot-listen ADDR --lab DIR against it:
serve reaches every BMC address through the lab. State (DNS zones, node
disks) lives in --dir and survives a restart.

With --dhcp-server (serve's --dhcp-listen; as root: each rack's relay binds
port 67 on a loopback address) a node netboots as on a real network: DHCP
relayed by its rack, TFTP of iPXE (--tftp-server, serve's --tftp-listen),
DHCP again as iPXE, the script the ACK names, then the kernel and initrds
the script names, anneal's copies checked against the site's SHA-256.
Without it a node fetches --boot-url/ipxe/MAC directly and no kernel.

Faults (--faults FILE, or PUT /lab/v1/faults on the control API): BMC
timeouts, installs that fail, slow boots, firmware drift; a DNS server goes
away with PUT /lab/v1/dns/TARGET {"down": true}.

--brownfield NODE,... are machines anneal did not install: on the lab's first
start (no state in --dir yet) they are on and run the site's build for them,
with no agent configuration, so they report nothing until anneal enroll's
files are given to them: PUT /lab/v1/nodes/NODE/agent {"agent": AGENT.JSON,
"buildId": ID}.`,
		Args: noArgs,
	}
	site := addSiteFlags(c)
	dir := c.Flags().String("dir", "", "lab state directory (required); lab.json there tells anneal serve --lab where the lab listens")
	bootURL := c.Flags().String("boot-url", "http://127.0.0.1:8082", "anneal serve's netboot URL (its --netboot-listen)")
	bmcListen := c.Flags().String("bmc-listen", "127.0.0.1:0", "the virtual BMCs' HTTPS address")
	control := c.Flags().String("control", "127.0.0.1:0", "the lab's control API address")
	faultsFile := c.Flags().String("faults", "", "faults at start (YAML or JSON)")
	bootDelay := c.Flags().Duration("boot-delay", time.Second, "how long a virtual node takes to boot")
	agentInterval := c.Flags().Duration("agent-interval", 10*time.Second, "how often installed nodes report facts (0: never)")
	dhcpServer := c.Flags().String("dhcp-server", "", "anneal serve's DHCP server (its --dhcp-listen, host:port): nodes netboot through it, relayed by their rack's switch (needs root: the relays bind port 67 on 127.B.x.y), then fetch and verify their kernel and initrds; without it nodes fetch BOOT-URL/ipxe/MAC directly")
	tftpServer := c.Flags().String("tftp-server", "", "anneal serve's TFTP server (its --tftp-listen, host:port); default the DHCP ACK's next server, port 69")
	brownfield := c.Flags().StringSlice("brownfield", nil, "nodes that already run the site's build, installed by something else than anneal, on the lab's first start (see anneal enroll)")
	firmware := c.Flags().String("firmware", lab.FirmwarePXE, "with --dhcp-server, what the nodes' NICs boot: pxe (DHCP, TFTP of iPXE, DHCP again as iPXE) or ipxe (iPXE in ROM: DHCP as iPXE)")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		if *dir == "" {
			return usagef("--dir is required")
		}
		log := newLogger(c, c.ErrOrStderr(), slog.LevelInfo)
		site.resolving = true
		s, err := site.loadValid(ctx)
		if err != nil {
			return err
		}
		if err := site.checkSources(s); err != nil {
			return failure(err)
		}
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return failure(err)
		}
		var faults lab.Faults
		if *faultsFile != "" {
			if faults, err = lab.LoadFaults(*faultsFile); err != nil {
				return failure(err)
			}
		}
		if faults.BootDelay == 0 {
			faults.BootDelay = lab.Duration(*bootDelay)
		}
		// Before anything listens: a mistake here starts nothing.
		pre, err := brownfieldDisks(s, *brownfield, *bootURL)
		if err != nil {
			return failure(fmt.Errorf("--brownfield: %w", err))
		}
		resolve := site.resolver()
		// The DNS servers first: anneal's first reconcile writes to them.
		dnsServers := map[string]*labdns.Server{}
		if s.DNS != nil {
			for _, t := range s.DNS.Targets {
				srv, err := labdns.FromSite(s, t, resolve, filepath.Join(*dir, "dns", t.Name), log.With("dns", t.Name))
				if err != nil {
					return failure(err) // it names the target
				}
				if err := srv.Start(ctx); err != nil {
					return failure(err)
				}
				defer srv.Close()
				dnsServers[t.Name] = srv // Start logged where it serves
			}
		}
		var dhcp *lab.DHCPConfig
		if *dhcpServer != "" {
			dhcp = &lab.DHCPConfig{Server: *dhcpServer, TFTP: *tftpServer, Firmware: *firmware}
		} else if *tftpServer != "" {
			return usagef("--tftp-server needs --dhcp-server")
		}
		fleet, err := lab.New(lab.Config{Site: s, Resolve: resolve, Listen: *bmcListen, BootURL: *bootURL,
			StateDir: filepath.Join(*dir, "nodes"), AgentInterval: *agentInterval, Faults: faults, Logger: log.With("component", "fleet"), DHCP: dhcp,
			Brownfield: pre})
		if err != nil {
			return failure(err)
		}
		ln, err := net.Listen("tcp", *control)
		if err != nil {
			return failure(fmt.Errorf("control listen: %w", err))
		}
		mux := http.NewServeMux()
		mux.Handle("/lab/v1/", fleet.ControlHandler())
		mux.HandleFunc("GET /lab/v1/dns/{target}", func(w http.ResponseWriter, r *http.Request) {
			srv := dnsServers[r.PathValue("target")]
			if srv == nil {
				http.Error(w, "no such DNS target", http.StatusNotFound)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]bool{"down": srv.Down()})
		})
		mux.HandleFunc("PUT /lab/v1/dns/{target}", func(w http.ResponseWriter, r *http.Request) {
			srv := dnsServers[r.PathValue("target")]
			var body struct {
				Down bool `json:"down"`
			}
			if srv == nil {
				http.Error(w, "no such DNS target", http.StatusNotFound)
				return
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				http.Error(w, "want {\"down\": true|false}", http.StatusBadRequest)
				return
			}
			if err := srv.SetDown(body.Down); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			log.Info("lab: dns target", "target", r.PathValue("target"), "down", body.Down)
			_ = json.NewEncoder(w).Encode(map[string]bool{"down": body.Down})
		})
		// Tests and the demo drive it, from loopback: no per-source bound.
		ctlLimits := netlimit.Limits{MaxConnsPerSource: -1}
		ctl := netlimit.NewServer(mux, ctlLimits)
		go func() {
			if err := ctl.Serve(netlimit.NewListener(ln, ctlLimits, log.With("server", "lab control"))); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("lab control", "err", err)
			}
		}()
		defer ctl.Close()
		endpoints := lab.Endpoints{Redfish: fleet.Addr(), Control: "http://" + ln.Addr().String(), PID: os.Getpid()}
		remove, err := lab.WriteEndpoints(*dir, endpoints)
		if err != nil {
			return failure(err)
		}
		defer remove()
		log.Info("anneal lab", "site", s.Config.Name, "nodes", len(fleet.Nodes()), "bmc", fleet.Addr(), "control", endpoints.Control, "boot", *bootURL, "dhcp", *dhcpServer)
		err = fleet.Serve(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			return failure(err)
		}
		log.Info("anneal lab stopped")
		return nil
	}
	return c
}

// brownfieldDisks are the disks of --brownfield nodes: the build the site
// wants for each, with the network configuration anneal would render.
func brownfieldDisks(s *schema.Site, names []string, bootURL string) (map[string]lab.Brownfield, error) {
	if len(names) == 0 {
		return nil, nil
	}
	out := map[string]lab.Brownfield{}
	for _, name := range names {
		n := s.Node(name)
		if n == nil {
			return nil, fmt.Errorf("node %q is not in the site", name)
		}
		rd, err := boot.Render(s, n, bootURL, "brownfield")
		if err != nil {
			return nil, err
		}
		out[name] = lab.Brownfield{BuildID: node.BuildSpecOf(s, n).ID(), Network: []byte(rd.Network)}
	}
	return out, nil
}
