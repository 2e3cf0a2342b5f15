// Package bmc drives servers' baseboard management controllers with
// bmclib: IPMI through bmclib's ipmitool provider, Redfish through its
// gofish provider. A BMC implements node.BMC. Every call opens its
// own session, bounded by the configured timeout, and closes it; errors
// name the BMC (node and host:port), are classified (ErrUnreachable,
// ErrAuth, ErrFailed, ErrNotSupported) and never carry the password.
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
	"os/exec"
	"strconv"
	"strings"
	"time"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
	"github.com/bmc-toolbox/bmclib/v2/providers/ipmitool"
	"github.com/bmc-toolbox/bmclib/v2/providers/redfish"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Error classes: test with errors.Is.
var (
	// ErrUnreachable: nothing answered at the BMC's address in time.
	ErrUnreachable = errors.New("unreachable")
	// ErrAuth: the BMC answers but refuses the credentials.
	ErrAuth = errors.New("authentication failed")
	// ErrFailed: a session was open but the BMC failed or refused the
	// command, or answered something this package does not understand.
	ErrFailed = errors.New("command failed")
	// ErrNotSupported: the BMC's driver cannot do this at all.
	ErrNotSupported = errors.New("not supported by this BMC driver")
)

// DefaultTimeout bounds one call when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// ipmiCipherSuite is the lanplus cipher suite (RAKP-HMAC-SHA1, HMAC-SHA1-96,
// AES-CBC-128), which every IPMI 2.0 BMC offers. bmclib otherwise tries
// suite 3 and then 17, and a BMC without 17 costs a retry on every failure.
const ipmiCipherSuite = "3"

// Config is how to reach one BMC. Its String, GoString and Format leave the
// password out, so it may be printed or logged with any verb.
type Config struct {
	// Name is the node's, for messages.
	Name string
	// Host is the BMC's IP address or host name. For Redfish it may carry
	// a scheme ("http://10.0.0.5" for a BMC without TLS; default https).
	Host string
	// Port is the BMC's port; 0 means the protocol's (623 for IPMI, 443
	// for Redfish).
	Port     int
	Username string
	// Password is the resolved secret, never a reference.
	Password string `json:"-"`
	// Kind is the protocol the BMC speaks.
	Kind schema.BMCKind
	// Timeout bounds each call, session included (0: DefaultTimeout).
	Timeout time.Duration
	// HTTPClient, for Redfish only, is the client bmclib speaks Redfish
	// with (nil: bmclib's own, which does not verify the BMC's
	// certificate). Its Transport must be an *http.Transport (bmclib clones
	// it) or nil (http.DefaultTransport's settings). The lab sets one that
	// dials its own listener whatever the BMC's address.
	HTTPClient *http.Client `json:"-"`
}

// String describes the config without its password.
func (c Config) String() string {
	return fmt.Sprintf("bmc %s %s %s user %q timeout %s", c.Name, c.Kind, c.addr(), c.Username, c.timeout())
}

// GoString is %#v without the password.
func (c Config) GoString() string {
	pw := `""`
	if c.Password != "" {
		pw = "<redacted>"
	}
	hc := "nil"
	if c.HTTPClient != nil {
		hc = "<set>"
	}
	return fmt.Sprintf("bmc.Config{Name:%q, Host:%q, Port:%d, Username:%q, Password:%s, Kind:%q, Timeout:%s, HTTPClient:%s}",
		c.Name, c.Host, c.Port, c.Username, pw, c.Kind, c.Timeout, hc)
}

// Format prints String for every verb (GoString for %#v), so that no verb
// (%d, %+v, ...) falls back to printing the fields.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, c.GoString())
		return
	}
	fmt.Fprint(f, c.String())
}

func (c Config) port() int {
	if c.Port != 0 {
		return c.Port
	}
	if c.Kind == schema.BMCRedfish {
		return 443
	}
	return 623
}

// bareHost is Host without a scheme or IPv6 brackets.
func (c Config) bareHost() string {
	h := c.Host
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

func (c Config) addr() string {
	return net.JoinHostPort(c.bareHost(), strconv.Itoa(c.port()))
}

func (c Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

// BMC is one server's BMC. It holds no session between calls and is safe
// for concurrent use.
type BMC struct {
	cfg Config
}

var _ node.BMC = (*BMC)(nil)

// New checks a config and returns its BMC. It does not contact the BMC.
func New(cfg Config) (*BMC, error) {
	who := "bmc " + cfg.Name
	if cfg.Name == "" {
		who = "bmc"
	}
	if cfg.Host == "" {
		return nil, fmt.Errorf("%s: no address", who)
	}
	if cfg.Username == "" {
		return nil, fmt.Errorf("%s (%s): no username", who, cfg.addr())
	}
	if cfg.Password == "" {
		return nil, fmt.Errorf("%s (%s): no password", who, cfg.addr())
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("%s: port %d out of range", who, cfg.Port)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%s (%s): negative timeout %s", who, cfg.addr(), cfg.Timeout)
	}
	switch cfg.Kind {
	case schema.BMCIPMI:
		if strings.Contains(cfg.Host, "://") {
			return nil, fmt.Errorf("%s: IPMI address %q has a scheme: give a host name or IP", who, cfg.Host)
		}
		if _, err := exec.LookPath("ipmitool"); err != nil {
			return nil, fmt.Errorf("%s (%s): IPMI needs ipmitool on the PATH: %w", who, cfg.addr(), err)
		}
	case schema.BMCRedfish:
	default:
		return nil, fmt.Errorf("%s (%s): BMC kind %q: want %q or %q", who, cfg.addr(), cfg.Kind, schema.BMCRedfish, schema.BMCIPMI)
	}
	if hc := cfg.HTTPClient; hc != nil {
		if cfg.Kind != schema.BMCRedfish {
			return nil, fmt.Errorf("%s (%s): an HTTP client is for Redfish only, not %s", who, cfg.addr(), cfg.Kind)
		}
		if _, ok := hc.Transport.(*http.Transport); hc.Transport != nil && !ok {
			return nil, fmt.Errorf("%s (%s): the HTTP client's transport is a %T: bmclib needs an *http.Transport", who, cfg.addr(), hc.Transport)
		}
	}
	return &BMC{cfg: cfg}, nil
}

// FromNode builds a node's BMC from the site: address, port and username
// from the node's bmc, the password through resolve (the operator's grants,
// asked for the BMC's address), the protocol from its
// hardware profile.
func FromNode(site *schema.Site, n *schema.Node, resolve func(schema.SecretRef, schema.SecretDest) (string, error)) (*BMC, error) {
	a, err := node.AccessOf(site, n)
	if err != nil {
		return nil, err
	}
	return FromAccess(a, resolve)
}

// FromAccess builds the BMC client of a node from how to reach it (the
// site's declaration, or for a node that left the site, its record's):
// the password is resolved through the operator's grants for exactly
// that address.
func FromAccess(a node.BMCAccess, resolve func(schema.SecretRef, schema.SecretDest) (string, error)) (*BMC, error) {
	if a.BMC.Password == "" {
		return nil, fmt.Errorf("bmc %s: node has no bmc password reference", a.Node)
	}
	pw, err := resolve(a.BMC.Password, a.SecretDest())
	if err != nil {
		return nil, fmt.Errorf("bmc %s: password: %w", a.Node, err)
	}
	return New(Config{
		Name:     a.Node,
		Host:     a.BMC.Address,
		Port:     a.BMC.Port,
		Username: a.BMC.Username,
		Password: pw,
		Kind:     a.Kind,
	})
}

// Config returns the BMC's config.
func (b *BMC) Config() Config { return b.cfg }

// String names the BMC, without its password.
func (b *BMC) String() string { return b.cfg.String() }

// Format prints String for every verb, never the fields.
func (b *BMC) Format(f fmt.State, verb rune) { b.cfg.Format(f, verb) }

// PowerState reports the server's power.
func (b *BMC) PowerState(ctx context.Context) (node.PowerState, error) {
	var state node.PowerState
	err := b.do(ctx, "power status", func(ctx context.Context, c *bmclib.Client) error {
		raw, err := c.GetPowerState(ctx)
		if err != nil {
			return err
		}
		s, ok := parsePower(raw)
		if !ok {
			return &classified{class: ErrFailed, msg: fmt.Sprintf("unrecognised power state %q", raw)}
		}
		state = s
		return nil
	})
	if err != nil {
		return node.PowerUnknown, err
	}
	return state, nil
}

// parsePower maps bmclib's raw power text to a state: ipmitool's "Chassis
// Power is on", Redfish's "On", "Off", "PoweringOn", ... A transition is
// PowerUnknown; text it does not know is not ok.
func parsePower(raw string) (node.PowerState, bool) {
	s := strings.ToLower(strings.TrimSpace(raw))
	s = strings.TrimPrefix(s, "chassis power is ")
	switch s {
	case "on":
		return node.PowerOn, true
	case "off":
		return node.PowerOff, true
	case "poweringon", "poweringoff", "paused":
		return node.PowerUnknown, true
	}
	return node.PowerUnknown, false
}

// SetPower powers the server on, off (hard) or cycles it (on if it is
// off, as the contract says; a BMC refuses to cycle a server that is off).
func (b *BMC) SetPower(ctx context.Context, a node.PowerAction) error {
	switch a {
	case node.ActionOn, node.ActionOff, node.ActionCycle:
	default:
		return &Error{BMC: b.who(), Op: "power " + string(a), Class: ErrNotSupported, Detail: "unknown power action"}
	}
	return b.do(ctx, "power "+string(a), func(ctx context.Context, c *bmclib.Client) error {
		verb := string(a)
		if a == node.ActionCycle {
			raw, err := c.GetPowerState(ctx)
			if err != nil {
				return err
			}
			if s, _ := parsePower(raw); s == node.PowerOff {
				verb = "on"
			}
		}
		ok, err := c.SetPowerState(ctx, verb)
		if err != nil {
			return err
		}
		if !ok {
			return &classified{class: ErrFailed, msg: "the BMC did not confirm power " + verb}
		}
		return nil
	})
}

// BootOnce sets the next boot device, for one boot only (legacy boot
// flags: efiBoot false).
func (b *BMC) BootOnce(ctx context.Context, d node.BootDevice) error {
	switch d {
	case node.BootPXE, node.BootDisk:
	default:
		return &Error{BMC: b.who(), Op: "boot once " + string(d), Class: ErrNotSupported, Detail: "unknown boot device"}
	}
	return b.do(ctx, "boot once "+string(d), func(ctx context.Context, c *bmclib.Client) error {
		ok, err := c.SetBootDevice(ctx, string(d), false, false)
		if err != nil {
			return err
		}
		if !ok {
			return &classified{class: ErrFailed, msg: "the BMC did not confirm the boot device"}
		}
		return nil
	})
}

// Firmware reads the BIOS and BMC firmware versions from the BMC's
// inventory. Only Redfish has one: with IPMI it returns ErrNotSupported
// (bmclib's ipmitool provider reads no inventory, and no version is
// guessed).
func (b *BMC) Firmware(ctx context.Context) (node.Firmware, error) {
	if b.cfg.Kind != schema.BMCRedfish {
		return node.Firmware{}, &Error{BMC: b.who(), Op: "firmware", Class: ErrNotSupported,
			Detail: "bmclib's ipmitool provider reads no firmware inventory"}
	}
	var fw node.Firmware
	err := b.do(ctx, "firmware", func(ctx context.Context, c *bmclib.Client) error {
		dev, err := c.Inventory(ctx)
		if err != nil {
			return err
		}
		if dev != nil && dev.BIOS != nil && dev.BIOS.Firmware != nil {
			fw.BIOS = dev.BIOS.Firmware.Installed
		}
		if dev != nil && dev.BMC != nil && dev.BMC.Firmware != nil {
			fw.BMC = dev.BMC.Firmware.Installed
		}
		if fw.BIOS == "" && fw.BMC == "" {
			return &classified{class: ErrFailed, msg: "the inventory has no BIOS or BMC firmware version"}
		}
		return nil
	})
	return fw, err
}

// who names the BMC in errors: "w1n01 (10.0.0.21:623)".
func (b *BMC) who() string {
	if b.cfg.Name == "" {
		return b.cfg.addr()
	}
	return b.cfg.Name + " (" + b.cfg.addr() + ")"
}

// client builds a bmclib client restricted to the one driver of the
// config's kind. bmclib's logger stays logr.Discard.
func (b *BMC) client() *bmclib.Client {
	host := b.cfg.bareHost()
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6: bmclib joins host and port with ":"
	}
	port := strconv.Itoa(b.cfg.port())
	if b.cfg.Kind == schema.BMCRedfish {
		if i := strings.Index(b.cfg.Host, "://"); i >= 0 {
			host = b.cfg.Host[:i+3] + host
		}
		opts := []bmclib.Option{bmclib.WithRedfishPort(port)}
		opts = append(opts, bmclib.WithHTTPClient(b.httpClient()))
		c := bmclib.NewClient(host, b.cfg.Username, b.cfg.Password, opts...)
		c.Registry.Drivers = c.Registry.For(redfish.ProviderName)
		return c
	}
	c := bmclib.NewClient(host, b.cfg.Username, b.cfg.Password,
		bmclib.WithIpmitoolPort(port), bmclib.WithIpmitoolCipherSuite(ipmiCipherSuite))
	c.Registry.Drivers = c.Registry.For(ipmitool.ProviderName)
	return c
}

// httpClient is a copy of the configured HTTP client for one bmclib client
// (bmclib's Open sets the client's Timeout, so a shared one would race),
// with a nil transport made explicit (bmclib asserts an *http.Transport).
//
// Without a configured client it is bmclib's default (BMC certificates are
// self-signed). Either way a redirect to another host is refused: the
// password goes to the BMC's granted address only.
func (b *BMC) httpClient() *http.Client {
	var hc http.Client
	if b.cfg.HTTPClient != nil {
		hc = *b.cfg.HTTPClient
	} else {
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true,
			TLSHandshakeTimeout: 30 * time.Second, ResponseHeaderTimeout: 60 * time.Second}
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok || tr == nil {
		tr = http.DefaultTransport.(*http.Transport)
	}
	tr = tr.Clone()
	// Only the BMC's own address: not a redirect's, not a host a Redfish
	// answer links to (gofish joins the endpoint and the link it is given).
	secret.PinDial(tr, b.cfg.addr())
	hc.Transport = tr
	hc.CheckRedirect = secret.SameHostRedirects
	return &hc
}

// closeTimeout bounds closing a session (a Redfish logout) after the call.
const closeTimeout = 2 * time.Second

// do opens a session, runs fn and closes the session, all within the
// timeout, less a share kept to probe the BMC when the call fails, so that
// the error can say whether the BMC is unreachable or refused the
// credentials.
func (b *BMC) do(ctx context.Context, op string, fn func(context.Context, *bmclib.Client) error) error {
	timeout := b.cfg.timeout()
	probe := min(time.Second, timeout/5)
	callCtx, cancel := context.WithTimeout(ctx, timeout-probe)
	defer cancel()

	c := b.client()
	if len(c.Registry.Drivers) == 0 {
		return &Error{BMC: b.who(), Op: op, Class: ErrNotSupported, Detail: "bmclib has no " + string(b.cfg.Kind) + " driver available"}
	}
	err := c.Open(callCtx)
	if err == nil {
		err = fn(callCtx, c)
		closeCtx, cancelClose := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		_ = c.Close(closeCtx) // a logout that fails leaves a session to expire
		cancelClose()
	}
	if err == nil {
		return nil
	}
	return b.classify(ctx, callCtx, op, err, probe)
}

// classified is an error whose class is already known.
type classified struct {
	class error
	msg   string
}

func (e *classified) Error() string { return e.msg }

// classify turns a failure into an *Error: the caller's cancellation, an
// answer the BMC gave, or, when the session could not be set up, a probe
// that tells an unreachable BMC from refused credentials.
func (b *BMC) classify(ctx, callCtx context.Context, op string, err error, probe time.Duration) error {
	e := &Error{BMC: b.who(), Op: op, Detail: b.detail(err)}
	if c, ok := errors.AsType[*classified](err); ok {
		e.Class = c.class
		return e
	}
	if ctx.Err() != nil {
		e.Class, e.ctxErr = ctx.Err(), ctx.Err()
		return e
	}
	text := strings.ToLower(err.Error())
	// The call's deadline, or the HTTP client's own timeout that bmclib
	// sets from it and that can fire a moment earlier.
	timedOut := callCtx.Err() != nil || strings.Contains(text, "client.timeout exceeded") ||
		strings.Contains(text, "context deadline exceeded")
	if timedOut {
		e.ctxErr = context.DeadlineExceeded
		e.Detail = fmt.Sprintf("no answer within %s", b.cfg.timeout()-probe)
	}
	switch {
	case strings.Contains(text, "401") || strings.Contains(text, "unauthorized") ||
		strings.Contains(text, "invalid user name") || strings.Contains(text, "unauthorized name"):
		e.Class = ErrAuth
		return e
	case timedOut || noSession(text):
		pctx, cancel := context.WithTimeout(ctx, probe)
		defer cancel()
		if b.answers(pctx) {
			e.Class = ErrAuth
			e.Detail += "; the BMC answers but no session could be established: wrong username or password?"
		} else {
			e.Class = ErrUnreachable
			e.Detail += "; nothing answers at " + b.cfg.addr()
		}
		return e
	}
	e.Class = ErrFailed
	return e
}

// noSession reports whether an error text says the session could not even
// be set up.
func noSession(text string) bool {
	for _, s := range []string{
		"unable to establish ipmi", "connection refused", "no route to host",
		"i/o timeout", "no such host", "network is unreachable", "connection reset",
	} {
		if strings.Contains(text, s) {
			return true
		}
	}
	return false
}

// answers reports whether something answers at the BMC's address without
// credentials: for IPMI an RMCP Get Channel Authentication Capabilities
// request (which every BMC answers before any session), for Redfish a GET
// of the service root (which the Redfish specification serves without
// authentication), through the configured HTTP client: a BMC that accepts
// connections but no longer answers HTTP does not answer.
func (b *BMC) answers(ctx context.Context) bool {
	if b.cfg.Kind == schema.BMCRedfish {
		return b.redfishAnswers(ctx)
	}
	return rmcpAnswers(ctx, b.cfg.addr())
}

func (b *BMC) redfishAnswers(ctx context.Context) bool {
	scheme := "https"
	if strings.HasPrefix(strings.ToLower(b.cfg.Host), "http://") {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+b.cfg.addr()+"/redfish/v1/", nil)
	if err != nil {
		return false
	}
	hc := b.httpClient()
	hc.Timeout = 0 // ctx bounds the probe
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return true // a BMC that wants credentials even for the root
	}
	// Anything else must be a service root: an empty answer from a server
	// that gave up on the request is not a Redfish service.
	var root struct {
		Version string `json:"RedfishVersion"`
		ID      string `json:"@odata.id"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&root)
	return resp.StatusCode/100 == 2 && err == nil && (root.Version != "" || root.ID != "")
}

// getChannelAuthCap is an IPMI 1.5 session-less Get Channel Authentication
// Capabilities request (channel: this one, with IPMI 2.0 data; privilege:
// administrator) in an RMCP packet.
var getChannelAuthCap = []byte{
	0x06, 0x00, 0xff, 0x07, // RMCP: version 1, sequence ff (no ack), class IPMI
	0x00, 0, 0, 0, 0, 0, 0, 0, 0, // session: auth type none, sequence 0, session 0
	0x09,             // message length
	0x20, 0x18, 0xc8, // BMC address, NetFn App, checksum
	0x81, 0x00, 0x38, // remote console, sequence 0, command
	0x8e, 0x04, 0xb5, // channel 0xe with v2 data, administrator, checksum
}

func rmcpAnswers(ctx context.Context, addr string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	_ = conn.SetDeadline(deadline)
	buf := make([]byte, 512)
	// UDP may drop a datagram: send again every 200 ms until the deadline.
	for time.Now().Before(deadline) {
		if _, err := conn.Write(getChannelAuthCap); err != nil {
			return false
		}
		next := time.Now().Add(200 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		_ = conn.SetReadDeadline(next)
		n, err := conn.Read(buf)
		if err == nil && n >= 4 && buf[0] == 0x06 {
			return true
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return false // ICMP port unreachable: refused
		}
	}
	return false
}

// detail is a driver's error on one line, without bmclib's "no Opener
// implementations found" (the one driver failed: it said why) and without
// the password, should a driver ever echo it.
func (b *BMC) detail(err error) string {
	s := strings.ReplaceAll(err.Error(), "* no Opener implementations found", "")
	s = strings.Join(strings.Fields(s), " ")
	if b.cfg.Password != "" {
		s = strings.ReplaceAll(s, b.cfg.Password, "[redacted]")
	}
	return s
}

// Error is a failed BMC call. errors.Is matches its Class (ErrUnreachable,
// ErrAuth, ErrFailed, ErrNotSupported, or the caller's context error) and,
// when the call's own timeout expired, context.DeadlineExceeded.
type Error struct {
	// BMC names it: "w1n01 (10.0.0.21:623)".
	BMC string
	// Op is the call: "power status", "power on", "boot once pxe", ...
	Op    string
	Class error
	// Detail is what the driver said, without the password.
	Detail string

	ctxErr error
}

func (e *Error) Error() string {
	return fmt.Sprintf("bmc %s: %s: %v: %s", e.BMC, e.Op, e.Class, e.Detail)
}

// Unwrap returns the class and, after a timeout, the context error.
func (e *Error) Unwrap() []error {
	if e.ctxErr != nil && e.ctxErr != e.Class {
		return []error{e.Class, e.ctxErr}
	}
	return []error{e.Class}
}
