// Package rfc2136 writes zones to a DNS server that takes RFC 2136 dynamic
// updates signed with TSIG (BIND 9, Knot, PowerDNS with dnsupdate=yes). It
// reads zones by AXFR and the serial by an SOA query, and applies changes
// as compare-and-swap updates: every UPDATE carries prerequisites for what
// the plan saw, so a change made out of band since the plan is never
// overwritten blind.
package rfc2136

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// Defaults.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultMaxMessageSize = mdns.MaxMsgSize // 65,535: the TCP limit

	// tsigHeadroom is kept free in every UPDATE for the TSIG record the
	// message is signed with last (about 100 bytes with a long key name
	// and hmac-sha512; the rest is margin).
	tsigHeadroom = 300
	// fudge is the TSIG time window, in seconds (RFC 8945's recommendation).
	fudge = 300
)

// Config is one RFC 2136 server.
type Config struct {
	// Name is the target's name in the site, for messages.
	Name string
	// Server is "host:port" (port 53 when absent).
	Server string
	// KeyName, Algorithm and Secret are the TSIG key: Algorithm is
	// hmac-sha1, hmac-sha224, hmac-sha256 (default), hmac-sha384 or
	// hmac-sha512; Secret is the resolved base64 secret, never logged
	// or put in an error.
	KeyName   string
	Algorithm string
	Secret    string
	// Timeout bounds each exchange with the server (default 5 s).
	Timeout time.Duration
	// MaxMessageSize bounds each UPDATE message (default 65,535).
	MaxMessageSize int
}

// String describes the configuration without its secret.
func (c Config) String() string {
	return fmt.Sprintf("rfc2136 target %s at %s (key %s, %s)", c.Name, c.Server, c.KeyName, c.Algorithm)
}

// GoString keeps the secret out of %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the secret out of log/slog records.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("server", c.Server),
		slog.String("key", c.KeyName), slog.String("algorithm", c.Algorithm))
}

// algorithm returns miekg/dns's name for a TSIG algorithm and the length
// of its MAC in bytes.
func algorithm(name string) (string, int, bool) {
	switch name {
	case "hmac-sha1":
		return mdns.HmacSHA1, 20, true
	case "hmac-sha224":
		return mdns.HmacSHA224, 28, true
	case "hmac-sha256":
		return mdns.HmacSHA256, 32, true
	case "hmac-sha384":
		return mdns.HmacSHA384, 48, true
	case "hmac-sha512":
		return mdns.HmacSHA512, 64, true
	}
	return "", 0, false
}

// Target is an RFC 2136 server. It implements dns.Target and is
// safe for concurrent use.
type Target struct {
	name      string
	server    string
	keyName   string // canonical: lower case, fully qualified
	algorithm string // miekg/dns's name, fully qualified
	macSize   int
	secret    string
	timeout   time.Duration
	maxMsg    int

	messages atomic.Int64
	bytes    atomic.Int64
	largest  atomic.Int64
}

var _ dns.Target = (*Target)(nil)

// New checks a configuration and returns its target. It does not contact
// the server.
func New(cfg Config) (*Target, error) {
	if cfg.Name == "" {
		return nil, errors.New("rfc2136: target has no name")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("rfc2136 target %s: "+format, append([]any{cfg.Name}, args...)...)
	}
	server := cfg.Server
	if server == "" {
		return nil, fail("no server")
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		// No port: a host name, an IPv4 address or a bare IPv6 address.
		host := strings.TrimSuffix(strings.TrimPrefix(server, "["), "]")
		if _, perr := netip.ParseAddr(host); strings.Contains(host, ":") && perr != nil {
			return nil, fail("server %q: %w", cfg.Server, err)
		}
		server = net.JoinHostPort(host, "53")
	}
	if cfg.KeyName == "" {
		return nil, fail("no TSIG key name")
	}
	alg := strings.ToLower(strings.TrimSuffix(cmp.Or(cfg.Algorithm, "hmac-sha256"), "."))
	walg, mac, ok := algorithm(alg)
	if !ok {
		return nil, fail("TSIG key %s: algorithm %q is not supported (want hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1)", cfg.KeyName, cfg.Algorithm)
	}
	if cfg.Secret == "" {
		return nil, fail("TSIG key %s: empty secret", cfg.KeyName)
	}
	if _, err := base64.StdEncoding.DecodeString(cfg.Secret); err != nil {
		// The decoder's error quotes no input, but say it ourselves.
		return nil, fail("TSIG key %s: the secret is not valid base64", cfg.KeyName)
	}
	if cfg.Timeout < 0 || cfg.MaxMessageSize < 0 {
		return nil, fail("negative timeout or message size")
	}
	maxMsg := cmp.Or(cfg.MaxMessageSize, DefaultMaxMessageSize)
	if maxMsg > mdns.MaxMsgSize {
		return nil, fail("maximum message size %d is over the DNS limit of %d", maxMsg, mdns.MaxMsgSize)
	}
	if maxMsg < 512+tsigHeadroom {
		return nil, fail("maximum message size %d is under %d", maxMsg, 512+tsigHeadroom)
	}
	return &Target{
		name:      cfg.Name,
		server:    server,
		keyName:   mdns.CanonicalName(cfg.KeyName),
		algorithm: walg,
		macSize:   mac,
		secret:    cfg.Secret,
		timeout:   cmp.Or(cfg.Timeout, DefaultTimeout),
		maxMsg:    maxMsg,
	}, nil
}

// FromSite makes a target from a site's DNS target, resolving its TSIG
// secret reference with resolve (the operator's grants, secret.Grants.Resolve,
// asked for the target's server).
func FromSite(t schema.Target, resolve func(schema.SecretRef, schema.SecretDest) (string, error)) (*Target, error) {
	if t.Kind != schema.TargetRFC2136 {
		return nil, fmt.Errorf("dns target %s: kind %q is not %s", t.Name, t.Kind, schema.TargetRFC2136)
	}
	if t.TSIG == nil {
		return nil, fmt.Errorf("dns target %s: no tsig key", t.Name)
	}
	dest, ok := t.SecretDest()
	if !ok {
		return nil, fmt.Errorf("dns target %s: server %q: want host:port", t.Name, t.Server)
	}
	secret, err := resolve(t.TSIG.Secret, dest)
	if err != nil {
		return nil, fmt.Errorf("dns target %s: TSIG key %s: %w", t.Name, t.TSIG.Name, err)
	}
	tg, err := New(Config{
		Name:      t.Name,
		Server:    t.Server,
		KeyName:   t.TSIG.Name,
		Algorithm: t.TSIG.Algorithm,
		Secret:    secret,
	})
	if err != nil {
		// Say which granted secret holds the bad value (a TSIG secret is
		// base64, as tsig-keygen prints it).
		return nil, fmt.Errorf("%w (the value of %s)", err, t.TSIG.Secret)
	}
	return tg, nil
}

// Name is the target's name in the site.
func (t *Target) Name() string { return t.name }

// String describes the target without its secret.
func (t *Target) String() string {
	return fmt.Sprintf("rfc2136 target %s at %s (key %s)", t.name, t.server, strings.TrimSuffix(t.keyName, "."))
}

// GoString keeps the secret out of %#v.
func (t *Target) GoString() string { return t.String() }

// Stats counts the UPDATE messages a target has sent.
type Stats struct {
	// Messages is the number of UPDATE messages sent (answered or not).
	Messages int64
	// Bytes is their total size on the wire, TSIG included.
	Bytes int64
	// Largest is the size of the largest one.
	Largest int64
}

// Stats returns what the target has sent so far.
func (t *Target) Stats() Stats {
	return Stats{Messages: t.messages.Load(), Bytes: t.bytes.Load(), Largest: t.largest.Load()}
}

func (t *Target) count(size int) {
	t.messages.Add(1)
	t.bytes.Add(int64(size))
	for {
		l := t.largest.Load()
		if int64(size) <= l || t.largest.CompareAndSwap(l, int64(size)) {
			return
		}
	}
}

func (t *Target) tsigSecret() map[string]string { return map[string]string{t.keyName: t.secret} }

func (t *Target) fail(zone, op string, class dns.ErrorClass, err error) *dns.TargetError {
	return &dns.TargetError{Target: t.name, Zone: strings.TrimSuffix(zone, "."), Op: op, Class: class, Err: err}
}

// Serial returns the zone's SOA serial, from one unsigned SOA query over
// UDP (TCP when the answer is truncated).
func (t *Target) Serial(ctx context.Context, zone string) (uint32, error) {
	z := mdns.CanonicalName(zone)
	m := new(mdns.Msg)
	m.SetQuestion(z, mdns.TypeSOA)
	r, err := t.exchange(ctx, &mdns.Client{Net: "udp", Timeout: t.timeout}, m)
	if err == nil && r.Truncated {
		r, err = t.exchange(ctx, &mdns.Client{Net: "tcp", Timeout: t.timeout}, m)
	}
	if err != nil {
		return 0, t.fail(z, "serial", transportClass(err), fmt.Errorf("SOA query to %s: %w", t.server, err))
	}
	switch r.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeServerFailure:
		return 0, t.fail(z, "serial", dns.ClassTransient, fmt.Errorf("SOA query to %s: SERVFAIL (is the zone loaded?)", t.server))
	default:
		return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("SOA query to %s: %s: the server does not serve the zone", t.server, rcodeName(r.Rcode)))
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*mdns.SOA); ok && mdns.CanonicalName(soa.Hdr.Name) == z {
			if !r.Authoritative {
				return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("SOA query to %s: the answer is not authoritative: the server is not a primary for the zone", t.server))
			}
			return soa.Serial, nil
		}
	}
	return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("SOA query to %s: no SOA for the zone in the answer: the server does not serve the zone", t.server))
}

// LookupRRset asks the server for one RRset with an unsigned query over
// UDP, TCP when truncated (dns.RRsetLooker). sure is false unless
// the answer is authoritative and final: the server's own zone data.
func (t *Target) LookupRRset(ctx context.Context, zone string, k dns.RRsetKey) (*dns.RRset, bool) {
	m, ok := dns.LookupQuery(k)
	if !ok {
		return nil, false
	}
	m.SetEdns0(1232, false)
	r, err := t.exchange(ctx, &mdns.Client{Net: "udp", Timeout: t.timeout}, m)
	if err == nil && r.Truncated {
		r, err = t.exchange(ctx, &mdns.Client{Net: "tcp", Timeout: t.timeout}, m)
	}
	if err != nil {
		return nil, false
	}
	return dns.AnswerRRset(r, k)
}

// exchange sends one message and reads its answer, bounded by the
// target's timeout and stopped by ctx.
func (t *Target) exchange(ctx context.Context, c *mdns.Client, m *mdns.Msg) (*mdns.Msg, error) {
	ectx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	conn, err := c.DialContext(ectx, t.server)
	if err != nil {
		return nil, t.ioError(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ectx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ectx, m, conn)
	if err != nil {
		if r != nil && r.Rcode != mdns.RcodeSuccess {
			// An error answer to a signed request comes unsigned or with
			// a TSIG error: the rcode says more than the failed check.
			return r, nil
		}
		return r, t.ioError(ctx, err)
	}
	return r, nil
}

// ioError prefers the caller's cancellation over what it did to the socket.
func (t *Target) ioError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("no answer within %s: %w", t.timeout, err)
	}
	return err
}

// transportClass classifies an error from talking to the server: a TSIG
// failure is permanent, anything else (timeout, refused connection,
// closed connection, cancellation) transient.
func transportClass(err error) dns.ErrorClass {
	if isTSIGError(err) {
		return dns.ClassPermanent
	}
	var xe *xfrRcodeError
	if errors.As(err, &xe) {
		if xe.rcode == mdns.RcodeServerFailure {
			return dns.ClassTransient
		}
		return dns.ClassPermanent
	}
	return dns.ClassTransient
}

func isTSIGError(err error) bool {
	return errors.Is(err, mdns.ErrSig) || errors.Is(err, mdns.ErrSecret) || errors.Is(err, mdns.ErrKeyAlg) ||
		errors.Is(err, mdns.ErrTime) || errors.Is(err, mdns.ErrNoSig) || errors.Is(err, mdns.ErrAuth)
}

func rcodeName(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// ReadZone reads the whole zone with one AXFR signed with the target's key.
func (t *Target) ReadZone(ctx context.Context, zone string) (*dns.ZoneContent, error) {
	z := mdns.CanonicalName(zone)
	rrs, err := t.axfr(ctx, z)
	if err != nil {
		return nil, t.fail(z, "read", transportClass(err), fmt.Errorf("AXFR from %s: %w", t.server, err))
	}
	var soa *mdns.SOA
	for _, rr := range rrs {
		if s, ok := rr.(*mdns.SOA); ok && mdns.CanonicalName(s.Hdr.Name) == z {
			soa = s
			break
		}
	}
	if soa == nil {
		return nil, t.fail(z, "read", dns.ClassPermanent, fmt.Errorf("AXFR from %s: no SOA in the transfer", t.server))
	}
	return &dns.ZoneContent{
		Zone:   strings.TrimSuffix(z, "."),
		Serial: soa.Serial,
		RRsets: dns.RRsetsFromRRs(rrs),
	}, nil
}

// xfrRcodeError stands for an AXFR the server answered with an error rcode.
type xfrRcodeError struct{ rcode int }

func (e *xfrRcodeError) Error() string {
	msg := "the server refused the transfer (" + rcodeName(e.rcode) + ")"
	switch e.rcode {
	case mdns.RcodeNotAuth:
		msg += ": it is not authoritative for the zone or refused the TSIG key"
	case mdns.RcodeRefused:
		msg += ": check allow-transfer for the zone"
	}
	return msg
}

func (t *Target) axfr(ctx context.Context, z string) ([]mdns.RR, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := net.Dialer{Timeout: t.timeout}
	nc, err := d.DialContext(ctx, "tcp", t.server)
	if err != nil {
		return nil, t.ioError(ctx, err)
	}
	// Closing the socket is the only way to stop a transfer in progress;
	// the transfer's goroutine then fails its read and closes env.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	tr := &mdns.Transfer{
		Conn:         &mdns.Conn{Conn: nc},
		TsigSecret:   t.tsigSecret(),
		ReadTimeout:  t.timeout,
		WriteTimeout: t.timeout,
	}
	m := new(mdns.Msg)
	m.SetAxfr(z)
	m.SetTsig(t.keyName, t.algorithm, fudge, time.Now().Unix())
	env, err := tr.In(m, t.server)
	if err != nil {
		nc.Close()
		return nil, t.ioError(ctx, err)
	}
	var rrs []mdns.RR
	var first error
	for e := range env {
		if e.Error != nil {
			if first == nil {
				first = e.Error
			}
			continue
		}
		rrs = append(rrs, e.RR...)
	}
	if first != nil {
		var rc int
		if _, serr := fmt.Sscanf(first.Error(), "dns: bad xfr rcode: %d", &rc); serr == nil {
			return nil, &xfrRcodeError{rc}
		}
		if isTSIGError(first) {
			return nil, fmt.Errorf("TSIG key %s was refused or its secret differs from the server's: %w", strings.TrimSuffix(t.keyName, "."), first)
		}
		if errors.Is(first, io.EOF) {
			first = fmt.Errorf("the server closed the connection mid-transfer: %w", first)
		}
		return nil, t.ioError(ctx, first)
	}
	return rrs, nil
}
