package bmc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

// Distinctive, so that a leak in an error text is found.
const (
	simPassword   = "sim-Pa55w0rd-7d1c"
	wrongPassword = "wrong-Pa55w0rd-93fe"
)

func startSim(t *testing.T, poweredOn bool) *servers.IPMISim {
	t.Helper()
	return servers.StartIPMISim(t, servers.IPMISimOptions{Username: "admin", Password: simPassword, PoweredOn: poweredOn})
}

func simBMC(t *testing.T, s *servers.IPMISim, password string, timeout time.Duration) *BMC {
	t.Helper()
	b, err := New(Config{Name: "w1n01", Host: s.Host, Port: s.Port, Username: s.Username, Password: password, Kind: schema.BMCIPMI, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPowerState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		on   bool
		want node.PowerState
	}{
		{"off", false, node.PowerOff},
		{"on", true, node.PowerOn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, tc.on)
			b := simBMC(t, s, simPassword, 10*time.Second)
			const calls = 5
			start := time.Now()
			for range calls {
				got, err := b.PowerState(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Fatalf("PowerState = %q, want %q", got, tc.want)
				}
			}
			t.Logf("PowerState against ipmi_sim: %s a call (session included)", time.Since(start)/calls)
			if sets := s.Sets(t); len(sets) != 0 {
				t.Fatalf("reading the power state set something: %q", sets)
			}
		})
	}
}

func TestSetPower(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		on       bool
		action   node.PowerAction
		wantSets []string // what ipmi_sim told the chassis, in order
		wantOn   bool
	}{
		{"on from off", false, node.ActionOn, []string{"set power 1"}, true},
		{"on when on", true, node.ActionOn, nil, true},
		{"off from on", true, node.ActionOff, []string{"set power 0"}, false},
		{"cycle from on", true, node.ActionCycle, []string{"set power 0", "set power 1"}, true},
		{"cycle from off powers on", false, node.ActionCycle, []string{"set power 1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, tc.on)
			b := simBMC(t, s, simPassword, 10*time.Second)
			start := time.Now()
			if err := b.SetPower(t.Context(), tc.action); err != nil {
				t.Fatal(err)
			}
			t.Logf("SetPower(%s): %s", tc.action, time.Since(start))
			// ipmi_sim powers back on about 1 s after a cycle's off; the
			// chassis script records the set, then the new power state.
			deadline := time.Now().Add(5 * time.Second)
			for (!slices.Equal(s.Sets(t), tc.wantSets) || s.Power(t) != tc.wantOn) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if got := s.Sets(t); !slices.Equal(got, tc.wantSets) {
				t.Fatalf("chassis was told %q, want %q", got, tc.wantSets)
			}
			if got := s.Power(t); got != tc.wantOn {
				t.Fatalf("chassis power %v, want %v", got, tc.wantOn)
			}
			want := node.PowerOff
			if tc.wantOn {
				want = node.PowerOn
			}
			if got, err := b.PowerState(t.Context()); err != nil || got != want {
				t.Fatalf("PowerState after = %q, %v; want %q", got, err, want)
			}
		})
	}
}

func TestBootOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dev  node.BootDevice
		want string // ipmi_sim's name for it
	}{
		{node.BootPXE, "pxe"},
		{node.BootDisk, "default"},
	} {
		t.Run(string(tc.dev), func(t *testing.T) {
			t.Parallel()
			s := startSim(t, true)
			b := simBMC(t, s, simPassword, 10*time.Second)
			if tc.dev == node.BootDisk {
				// Start from pxe, so that disk is a change.
				s.Ipmitool(t, "chassis", "bootdev", "pxe")
			}
			start := time.Now()
			if err := b.BootOnce(t.Context(), tc.dev); err != nil {
				t.Fatal(err)
			}
			t.Logf("BootOnce(%s): %s", tc.dev, time.Since(start))
			if got := s.NextBoot(t); got != tc.want {
				t.Fatalf("chassis next boot %q, want %q; commands %q", got, tc.want, s.Commands(t))
			}
			// One time only: the boot flags say "next boot".
			if out := s.Ipmitool(t, "chassis", "bootparam", "get", "5"); !strings.Contains(out, "Options apply to only next boot") {
				t.Fatalf("boot flags are not one-time:\n%s", out)
			}
			if !s.Power(t) {
				t.Fatal("setting the boot device changed the power")
			}
		})
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	s := startSim(t, true)
	unused := freeUDPPort(t)
	const timeout = 4 * time.Second
	for _, tc := range []struct {
		name     string
		port     int
		password string
		class    error
		within   time.Duration
	}{
		{"wrong password", s.Port, wrongPassword, ErrAuth, timeout},
		{"nothing at the port", unused, simPassword, ErrUnreachable, timeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := New(Config{Name: "w1n01", Host: s.Host, Port: tc.port, Username: s.Username, Password: tc.password, Kind: schema.BMCIPMI, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			calls := []struct {
				name string
				call func(context.Context) error
			}{
				{"PowerState", func(ctx context.Context) error { _, err := b.PowerState(ctx); return err }},
				{"SetPower", func(ctx context.Context) error { return b.SetPower(ctx, node.ActionOff) }},
				{"BootOnce", func(ctx context.Context) error { return b.BootOnce(ctx, node.BootPXE) }},
			}
			for _, c := range calls {
				start := time.Now()
				err := c.call(t.Context())
				took := time.Since(start)
				t.Logf("%s: %s: %v", c.name, took, err)
				if err == nil {
					t.Fatalf("%s succeeded", c.name)
				}
				if took > tc.within+500*time.Millisecond {
					t.Errorf("%s took %s, timeout %s", c.name, took, timeout)
				}
				if !errors.Is(err, tc.class) {
					t.Errorf("%s: %v is not %v", c.name, err, tc.class)
				}
				var e *Error
				if !errors.As(err, &e) {
					t.Errorf("%s: %T is not an *Error", c.name, err)
				}
				msg := err.Error()
				addr := net.JoinHostPort(s.Host, strconv.Itoa(tc.port))
				if !strings.Contains(msg, "w1n01") || !strings.Contains(msg, addr) {
					t.Errorf("%s: error %q does not name the BMC (w1n01, %s)", c.name, msg, addr)
				}
				for _, pw := range []string{simPassword, wrongPassword} {
					if strings.Contains(msg, pw) || strings.Contains(fmt.Sprintf("%#v %+v", err, err), pw) {
						t.Errorf("%s: error carries a password: %q", c.name, msg)
					}
				}
			}
			if !s.Power(t) {
				t.Fatal("the simulator was powered off by a failed call")
			}
		})
	}
}

func TestCancelled(t *testing.T) {
	t.Parallel()
	s := startSim(t, true)
	b := simBMC(t, s, simPassword, 10*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.PowerState(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PowerState with a cancelled context: %v", err)
	}
}

func TestFirmwareIPMINotSupported(t *testing.T) {
	t.Parallel()
	s := startSim(t, true)
	b := simBMC(t, s, simPassword, 10*time.Second)
	fw, err := b.Firmware(t.Context())
	if !errors.Is(err, ErrNotSupported) || fw != (node.Firmware{}) {
		t.Fatalf("Firmware over IPMI = %+v, %v; want ErrNotSupported and nothing", fw, err)
	}
}

func TestFromNode(t *testing.T) {
	t.Parallel()
	s := servers.StartIPMISim(t, servers.IPMISimOptions{Username: "anneal", Password: simPassword})
	// The example site, w1n01's BMC pointed at the simulator, its
	// Supermicro profile speaking IPMI (the example's speaks Redfish, which
	// the lab simulates).
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(dir, "hardware", "supermicro-sys-620u.yaml")
	pb, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	ipmi := strings.Replace(string(pb), "\nbmc: redfish\n", "\nbmc: ipmi\n", 1)
	if !strings.Contains(ipmi, "\nbmc: ipmi\n") {
		t.Fatalf("no bmc kind in %s", profile)
	}
	if err := os.WriteFile(profile, []byte(ipmi), 0o644); err != nil {
		t.Fatal(err)
	}
	nodes := filepath.Join(dir, "nodes", "west-w1.yaml")
	b, err := os.ReadFile(nodes)
	if err != nil {
		t.Fatal(err)
	}
	const w1n01 = "name: w1n01\n"
	i := strings.Index(string(b), w1n01)
	j := strings.Index(string(b)[i:], "bmc:\n")
	if i < 0 || j < 0 {
		t.Fatalf("w1n01's bmc not found in %s", nodes)
	}
	at := i + j + len("bmc:\n")
	edited := string(b[:at]) + fmt.Sprintf("  address: %s\n  port: %d\n", s.Host, s.Port) + string(b[at:])
	if err := os.WriteFile(nodes, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	site, _, err := schema.LoadDir(t.Context(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := site.Node("w1n01")
	if n == nil {
		t.Fatal("w1n01 not in the example site")
	}
	// The operator's grants: the example site's bmc-password, for the
	// simulator's loopback address and the example's BMC network.
	grants := func(pw string) func(schema.SecretRef, schema.SecretDest) (string, error) {
		g, err := secret.ParseGrants("grants.yaml", []byte("secrets:\n  bmc-password:\n    from: env:ANNEAL_BMC_PASSWORD\n    bmc: [127.0.0.0/8, 10.10.0.0/24]\n"))
		if err != nil {
			t.Fatal(err)
		}
		g.Env = func(name string) (string, bool) { return pw, name == "ANNEAL_BMC_PASSWORD" && pw != "" }
		return g.Resolve
	}
	bmc, err := FromNode(site, n, grants(simPassword))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := bmc.Config(); cfg.Kind != schema.BMCIPMI || cfg.Name != "w1n01" || cfg.Username != "anneal" || cfg.Timeout != 0 {
		t.Fatalf("config from the node: %#v", cfg)
	}
	if err := bmc.SetPower(t.Context(), node.ActionOn); err != nil {
		t.Fatal(err)
	}
	if err := bmc.BootOnce(t.Context(), node.BootPXE); err != nil {
		t.Fatal(err)
	}
	if !s.Power(t) || s.NextBoot(t) != "pxe" {
		t.Fatalf("simulator: power %v, next boot %q; commands %q", s.Power(t), s.NextBoot(t), s.Commands(t))
	}

	// The password is resolved: an unset variable fails, naming the
	// reference.
	// The grants are asked again where the password leaves: a node aimed
	// at an address they do not allow gets no password, whatever the
	// site's own check said.
	aimed := *n
	aimed.BMC.Address = "192.0.2.66"
	if _, err := FromNode(site, &aimed, grants(simPassword)); err == nil || !strings.Contains(err.Error(), "may not be sent to bmc 192.0.2.66") {
		t.Fatalf("FromNode aimed elsewhere: %v", err)
	}
	_, err = FromNode(site, n, grants(""))
	if err == nil || !strings.Contains(err.Error(), "w1n01") || !strings.Contains(err.Error(), "ANNEAL_BMC_PASSWORD") {
		t.Fatalf("FromNode without the secret: %v", err)
	}
	// The profile decides the protocol: e1n01 is a Dell, Redfish.
	if e := site.Node("e1n01"); e != nil {
		rb, err := FromNode(site, e, grants(simPassword))
		if err != nil {
			t.Fatal(err)
		}
		if cfg := rb.Config(); cfg.Kind != schema.BMCRedfish || cfg.Host == "" {
			t.Fatalf("e1n01's config: %#v", cfg)
		}
	}
}

func TestConfigHidesPassword(t *testing.T) {
	t.Parallel()
	cfg := Config{Name: "w1n01", Host: "10.0.0.21", Username: "anneal", Password: simPassword, Kind: schema.BMCIPMI,
		HTTPClient: &http.Client{}}
	b := &BMC{cfg: cfg}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{string(js)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, &cfg), fmt.Sprintf(verb, b), fmt.Sprintf(verb, []any{cfg, b}))
	}
	outs = append(outs, fmt.Sprintf("%v", struct{ C Config }{cfg}), fmt.Sprintf("%+v", map[string]Config{"a": cfg}))
	for _, out := range outs {
		if strings.Contains(out, simPassword) || strings.Contains(out, fmt.Sprintf("%x", simPassword)) {
			t.Errorf("printed config carries the password: %s", out)
		}
	}
	if s := cfg.String(); !strings.Contains(s, "w1n01") || !strings.Contains(s, "10.0.0.21:623") {
		t.Errorf("String = %q", s)
	}
	if s := fmt.Sprintf("%#v", cfg); !strings.Contains(s, "<redacted>") || !strings.Contains(s, "HTTPClient:<set>") {
		t.Errorf("%%#v = %q", s)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	ok := Config{Name: "n", Host: "10.0.0.1", Username: "u", Password: "p", Kind: schema.BMCIPMI}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no host", func(c *Config) { c.Host = "" }, "no address"},
		{"no username", func(c *Config) { c.Username = "" }, "no username"},
		{"no password", func(c *Config) { c.Password = "" }, "no password"},
		{"bad kind", func(c *Config) { c.Kind = "amt" }, `"amt"`},
		{"bad port", func(c *Config) { c.Port = 70000 }, "out of range"},
		{"ipmi with a scheme", func(c *Config) { c.Host = "https://10.0.0.1" }, "scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tc.edit(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "p\"") {
				t.Fatalf("error carries the password: %v", err)
			}
		})
	}
}

func TestParsePower(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  string
		want node.PowerState
		ok   bool
	}{
		{"Chassis Power is on", node.PowerOn, true},
		{"Chassis Power is off\n", node.PowerOff, true},
		{"On", node.PowerOn, true},
		{"Off", node.PowerOff, true},
		{"PoweringOn", node.PowerUnknown, true},
		{"PoweringOff", node.PowerUnknown, true},
		{"Chassis Power is unknown", node.PowerUnknown, false},
		{"", node.PowerUnknown, false},
	} {
		got, ok := parsePower(tc.raw)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parsePower(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	return u.LocalAddr().(*net.UDPAddr).Port
}

// redfishStub is a TLS server that records the Host and path of each
// request; it serves a service root and refuses every session, or, when
// hang is set, answers nothing until the client gives up.
type redfishStub struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
	hang bool
}

func startRedfishStub(t *testing.T, hang bool) *redfishStub {
	t.Helper()
	s := &redfishStub{hang: hang}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.Host+" "+r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		if s.hang {
			<-r.Context().Done()
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/redfish/v1/":
			fmt.Fprint(w, `{"RedfishVersion":"1.15.0","Systems":{"@odata.id":"/redfish/v1/Systems"},`+
				`"Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}`)
		case r.Method == http.MethodPost && r.URL.Path == "/redfish/v1/SessionService/Sessions":
			http.Error(w, `{"error":{"code":"Base.1.8.InsufficientPrivilege","message":"no"}}`, http.StatusUnauthorized)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *redfishStub) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// redirecting is a client that dials addr whatever the URL says, as the
// lab's is.
func redirecting(addr string) *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
}

// TestRedfishHTTPClient: with Config.HTTPClient, bmclib speaks Redfish
// through it: the BMC's address (192.0.2.10, which nothing answers) stays
// in the Host header while the connection goes where the client dials.
func TestRedfishHTTPClient(t *testing.T) {
	t.Parallel()
	stub := startRedfishStub(t, false)
	client := redirecting(stub.Listener.Addr().String())
	cfg := Config{Name: "e1n01", Host: "192.0.2.10", Username: "anneal", Password: simPassword, Kind: schema.BMCRedfish,
		Timeout: 5 * time.Second, HTTPClient: client}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Two BMCs share the client, concurrently (bmclib sets the timeout of
	// the client it is given: each call gets its own copy).
	other := cfg
	other.Name, other.Host = "e1n02", "192.0.2.11"
	b2, err := New(other)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	start := time.Now()
	for i, bm := range []*BMC{b, b2} {
		wg.Go(func() { _, errs[i] = bm.PowerState(t.Context()) })
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, ErrAuth) {
			t.Fatalf("PowerState against a BMC that refuses the session: %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), simPassword) {
			t.Fatalf("error carries the password: %v", err)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("refusal took %s", took)
	}
	seen := stub.requests()
	for _, want := range []string{"192.0.2.10:443 GET /redfish/v1/", "192.0.2.10:443 POST /redfish/v1/SessionService/Sessions",
		"192.0.2.11:443 POST /redfish/v1/SessionService/Sessions"} {
		if !slices.Contains(seen, want) {
			t.Errorf("the stub did not see %q; it saw %q", want, seen)
		}
	}
	if client.Timeout != 0 {
		t.Errorf("the configured client was changed: timeout %s", client.Timeout)
	}
}

// TestRedfishHung: a Redfish BMC that accepts connections but never
// answers is unreachable, within the timeout (the probe is an HTTP request
// through the same client, not a TCP connect, which would succeed).
func TestRedfishHung(t *testing.T) {
	t.Parallel()
	stub := startRedfishStub(t, true)
	const timeout = 2 * time.Second
	b, err := New(Config{Name: "e1n01", Host: "192.0.2.10", Username: "anneal", Password: simPassword, Kind: schema.BMCRedfish,
		Timeout: timeout, HTTPClient: redirecting(stub.Listener.Addr().String())})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.PowerState(t.Context())
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PowerState of a hung BMC: %v, want ErrUnreachable", err)
	}
	if took > timeout+5*time.Second { // bounded by the timeout; loose for loaded CI machines
		t.Errorf("took %s, timeout %s", took, timeout)
	}
	if n := len(stub.requests()); n < 2 {
		t.Errorf("the probe did not go through the client: %d requests", n)
	}
}

func TestNewRejectsHTTPClient(t *testing.T) {
	t.Parallel()
	ok := Config{Name: "n", Host: "10.0.0.1", Username: "u", Password: "p", Kind: schema.BMCRedfish}
	bad := ok
	bad.HTTPClient = &http.Client{Transport: roundTripper(func(*http.Request) (*http.Response, error) { return nil, errors.New("no") })}
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "*http.Transport") {
		t.Fatalf("a client with another transport: %v", err)
	}
	ipmi := ok
	ipmi.Kind, ipmi.HTTPClient = schema.BMCIPMI, &http.Client{}
	if _, err := exec.LookPath("ipmitool"); err == nil {
		if _, err := New(ipmi); err == nil || !strings.Contains(err.Error(), "Redfish only") {
			t.Fatalf("an HTTP client for IPMI: %v", err)
		}
	}
	nilTransport := ok
	nilTransport.HTTPClient = &http.Client{}
	if _, err := New(nilTransport); err != nil {
		t.Fatalf("a client with the default transport: %v", err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRedfishPasswordStaysOnItsHost: a Redfish BMC at the granted address
// that sends the client elsewhere, by a redirect (Go replays a 307's body,
// the session's password) or by a service root linking its sessions to
// another host (gofish joins the endpoint and the link:
// https://granted@elsewhere/...), never gets the password sent there.
func TestRedfishPasswordStaysOnItsHost(t *testing.T) {
	t.Parallel()
	const password = "redfish-pw-5e2b"
	var leaked atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, pw, _ := r.BasicAuth()
		if strings.Contains(string(b), password) || pw == password || r.Header.Get("X-Auth-Token") != "" {
			leaked.Add(1)
		}
	}))
	other.Listener.Close()
	other.Listener = ln
	other.StartTLS()
	defer other.Close()
	otherHost := strings.TrimPrefix(other.URL, "https://")
	for _, tc := range []struct {
		name     string
		sessions string // the service root's link to its sessions
	}{
		{"redirect", "/redfish/v1/SessionService/Sessions"},
		{"link to another host", "@" + otherHost + "/redfish/v1/SessionService/Sessions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bmcSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/redfish/v1" {
					w.Header().Set("Content-Type", "application/json")
					_, _ = fmt.Fprintf(w, `{"@odata.id": "/redfish/v1/", "RedfishVersion": "1.6.0", "Systems": {"@odata.id": "/redfish/v1/Systems"},
						"SessionService": {"@odata.id": "/redfish/v1/SessionService"}, "Links": {"Sessions": {"@odata.id": %q}}}`, tc.sessions)
					return
				}
				http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
			}))
			defer bmcSrv.Close()
			u, _ := url.Parse(bmcSrv.URL)
			port, _ := strconv.Atoi(u.Port())
			b, err := New(Config{Name: "r1", Host: u.Hostname(), Port: port, Username: "anneal", Password: password, Kind: schema.BMCRedfish, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.PowerState(t.Context()); err == nil {
				t.Fatal("power state through another host succeeded")
			}
			if n := leaked.Load(); n != 0 {
				t.Fatalf("the password or session went to another host %d times", n)
			}
		})
	}
}
