package powerdns

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// apiRRset is an RRset as the API shows it.
type apiRRset struct {
	Name     string       `json:"name"`
	Type     string       `json:"type"`
	TTL      uint32       `json:"ttl"`
	Records  []apiRecord  `json:"records"`
	Comments []apiComment `json:"comments"`
}

type apiRecord struct {
	Content  string `json:"content"`
	Disabled bool   `json:"disabled"`
}

type apiComment struct {
	Content string `json:"content"`
	Account string `json:"account"`
}

// soaEditOff reports whether a zone's soa_edit_api leaves the serial
// alone when the API changes the zone.
func soaEditOff(mode string) bool { return mode == "" || strings.EqualFold(mode, "NONE") }

// Serial returns the zone's SOA serial: one SOA query to the DNS address
// when one is configured, else one GET of the zone without its RRsets.
// Both give the serial as DNS clients see it (after SOA-EDIT). Through the
// API, a zone whose soa_edit_api is off has serial 0: its serial does not
// move when the API changes it, so it cannot tell that the zone changed
// (ReadZone says 0 for it too, which keeps the planner from trusting a
// cached copy).
func (t *Target) Serial(ctx context.Context, zone string) (uint32, error) {
	z := zoneName(zone)
	if t.dnsAddr != "" {
		return t.serialDNS(ctx, z)
	}
	var meta struct {
		Serial       *uint32 `json:"serial"`
		EditedSerial *uint32 `json:"edited_serial"`
		SOAEditAPI   string  `json:"soa_edit_api"`
	}
	err := t.call(ctx, http.MethodGet, zonePath(z)+"?rrsets=false", nil, t.timeout, decodeJSON(&meta))
	switch {
	case isStatus(err, http.StatusNotFound):
		return 0, t.notFound(ctx, z, "serial")
	case err != nil:
		return 0, t.classify(ctx, z, "serial", err)
	case soaEditOff(meta.SOAEditAPI):
		return 0, nil
	case meta.EditedSerial != nil:
		return *meta.EditedSerial, nil
	case meta.Serial != nil:
		return *meta.Serial, nil
	}
	return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("API %s: the zone has no serial", t.apiURL))
}

func (t *Target) serialDNS(ctx context.Context, z string) (uint32, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(z), mdns.TypeSOA)
	r, err := t.exchange(ctx, m)
	if err != nil {
		return 0, t.fail(z, "serial", dns.ClassTransient, fmt.Errorf("SOA query to %s: %w", t.dnsAddr, err))
	}
	switch r.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeServerFailure:
		return 0, t.fail(z, "serial", dns.ClassTransient, fmt.Errorf("SOA query to %s: SERVFAIL", t.dnsAddr))
	default:
		return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("zone not served at %s (SOA query: %s): create the zone, or check the target's server address", t.dnsAddr, rcodeName(r.Rcode)))
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*mdns.SOA); ok && r.Authoritative && zoneName(soa.Hdr.Name) == z {
			return soa.Serial, nil
		}
	}
	return 0, t.fail(z, "serial", dns.ClassPermanent, fmt.Errorf("zone not served at %s: no authoritative SOA for it (is it a zone of its own on this server?)", t.dnsAddr))
}

// exchange sends one query to the DNS address, over UDP and again over TCP
// when the answer is truncated.
func (t *Target) exchange(ctx context.Context, m *mdns.Msg) (*mdns.Msg, error) {
	m.SetEdns0(1232, false)
	c := &mdns.Client{Net: "udp", Timeout: t.timeout}
	t.queries.Add(1)
	r, _, err := c.ExchangeContext(ctx, m, t.dnsAddr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		t.queries.Add(1)
		r, _, err = c.ExchangeContext(ctx, m, t.dnsAddr)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("no answer within %s: %w", t.timeout, err)
		}
		return nil, err
	}
	return r, nil
}

func rcodeName(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// ReadZone reads the whole zone with one GET of the zone: its records, the
// ownership marks and the serial come from one snapshot. PowerDNS 4.7 does
// not bound response bodies (webserver-max-bodysize is for requests), so
// this works for large zones: about 40 MB of JSON and 2 s for 200,000
// records, decoded as a stream.
//
// When the GET fails for another reason than a refused key or a missing
// zone (a proxy limiting responses, a time-out, an API error) and a DNS
// address is configured, ReadZone falls back to an AXFR: then Marked is
// nil, since comments are not in DNS.
func (t *Target) ReadZone(ctx context.Context, zone string) (*dns.ZoneContent, error) {
	z := zoneName(zone)
	zc, err := t.readAPI(ctx, z, "read")
	if err == nil {
		return zc, nil
	}
	if t.dnsAddr == "" || ctx.Err() != nil || !fallsBack(err) {
		return nil, err
	}
	zc, aerr := t.readAXFR(ctx, z)
	if aerr != nil {
		return nil, t.fail(z, "read", err.Class, fmt.Errorf("%w; fallback AXFR from %s: %v", err.Err, t.dnsAddr, aerr))
	}
	t.fallbacks.Add(1)
	return zc, nil
}

// fallsBack reports whether an API read error leaves AXFR worth trying:
// not when the key is refused or the zone or server is missing.
func fallsBack(err error) bool {
	var me *missingError
	if errors.As(err, &me) {
		return false
	}
	var he *httpError
	if errors.As(err, &he) {
		switch he.Status {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return false
		}
	}
	return true
}

// readAPI reads the zone with one GET, for op (read, or apply's check).
func (t *Target) readAPI(ctx context.Context, z, op string) (*dns.ZoneContent, *dns.TargetError) {
	zc := &dns.ZoneContent{Zone: z, Marked: map[dns.RRsetKey]bool{}}
	t.zoneReads.Add(1)
	err := t.call(ctx, http.MethodGet, zonePath(z), nil, t.bulkTimeout, func(r io.Reader) error {
		return decodeZone(r, zc)
	})
	if isStatus(err, http.StatusNotFound) {
		return nil, t.notFound(ctx, z, op)
	}
	if err != nil {
		return nil, t.classify(ctx, z, op, err)
	}
	return zc, nil
}

// decodeZone reads a zone's JSON as a stream, one RRset at a time, into
// zc: enabled records only (disabled ones are not served), without the
// SOA, with the RRsets carrying anneal's comment in Marked.
func decodeZone(r io.Reader, zc *dns.ZoneContent) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var serial, edited *uint32
	soaEdit := ""
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case "serial":
			err = dec.Decode(&serial)
		case "edited_serial":
			err = dec.Decode(&edited)
		case "soa_edit_api":
			err = dec.Decode(&soaEdit)
		case "rrsets":
			err = decodeRRsets(dec, zc)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	switch {
	case edited != nil:
		zc.Serial = *edited
	case serial != nil:
		zc.Serial = *serial
	default:
		return errors.New("the zone has no serial")
	}
	if soaEditOff(soaEdit) {
		zc.Serial = 0 // see Serial
	}
	slices.SortFunc(zc.RRsets, func(a, b dns.RRset) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Type, b.Type))
	})
	return nil
}

func decodeRRsets(dec *json.Decoder, zc *dns.ZoneContent) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	// Two API RRsets could name one key (a name in two cases, written
	// to the database directly): they are merged.
	index := map[dns.RRsetKey]int{}
	for dec.More() {
		var a apiRRset
		if err := dec.Decode(&a); err != nil {
			return err
		}
		typ := dns.RRType(strings.ToUpper(a.Type))
		if typ == dns.TypeSOA {
			continue
		}
		set := dns.RRset{Name: zoneName(a.Name), Type: typ, TTL: a.TTL}
		if marked(a.Comments) {
			// Kept even from an entry without records: PowerDNS merges
			// comments into their RRset's entry, but need not.
			zc.Marked[set.Key()] = true
		}
		for _, rec := range a.Records {
			if rec.Disabled {
				continue
			}
			data, _ := fromContent(set.Name, typ, a.TTL, rec.Content)
			set.Data = append(set.Data, data)
		}
		if len(set.Data) == 0 {
			// Comments alone, or disabled records only: nothing served.
			continue
		}
		if i, dup := index[set.Key()]; dup {
			prev := &zc.RRsets[i]
			prev.Data = append(prev.Data, set.Data...)
			prev.TTL = min(prev.TTL, set.TTL)
			prev.Normalize()
		} else {
			set.Normalize()
			index[set.Key()] = len(zc.RRsets)
			zc.RRsets = append(zc.RRsets, set)
		}
	}
	// Marks count only on RRsets the zone serves.
	for k := range zc.Marked {
		if _, ok := index[k]; !ok {
			delete(zc.Marked, k)
		}
	}
	return expectDelim(dec, ']')
}

func marked(comments []apiComment) bool {
	return slices.ContainsFunc(comments, func(c apiComment) bool { return c.Account == MarkAccount })
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("unexpected answer: want %q, got %v", want, tok)
	}
	return nil
}

// readAXFR reads the zone by AXFR from the DNS address: no marks.
func (t *Target) readAXFR(ctx context.Context, z string) (*dns.ZoneContent, error) {
	rrs, err := t.axfr(ctx, z)
	if err != nil {
		return nil, err
	}
	soa, ok := rrs[0].(*mdns.SOA)
	if !ok {
		return nil, errors.New("the transfer does not start with the SOA")
	}
	return &dns.ZoneContent{Zone: z, Serial: soa.Serial, RRsets: dns.RRsetsFromRRs(rrs)}, nil
}

// xfrRcodeError is an AXFR the server answered with an error rcode.
type xfrRcodeError struct{ rcode int }

func (e *xfrRcodeError) Error() string {
	msg := "the server refused the transfer (" + rcodeName(e.rcode) + ")"
	if e.rcode == mdns.RcodeRefused || e.rcode == mdns.RcodeNotAuth {
		msg += ": check allow-axfr-ips, and that the zone exists"
	}
	return msg
}

// axfr transfers a zone: every record, the SOA first and last. Each
// message must come within the timeout; the whole transfer within the
// bulk timeout.
func (t *Target) axfr(ctx context.Context, z string) ([]mdns.RR, error) {
	t.axfrs.Add(1)
	ctx, cancel := context.WithTimeout(ctx, t.bulkTimeout)
	defer cancel()
	d := net.Dialer{Timeout: t.timeout}
	nc, err := d.DialContext(ctx, "tcp", t.dnsAddr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// Closing the socket is how a blocked read learns of ctx.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	co := &mdns.Conn{Conn: nc}
	q := new(mdns.Msg)
	q.SetAxfr(mdns.Fqdn(z))
	_ = nc.SetWriteDeadline(time.Now().Add(t.timeout))
	if err := co.WriteMsg(q); err != nil {
		return nil, ctxOr(ctx, err)
	}
	var rrs []mdns.RR
	soas := 0
	for soas < 2 {
		_ = nc.SetReadDeadline(time.Now().Add(t.timeout))
		in, err := co.ReadMsg()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("the server closed the connection mid-transfer: %w", err)
			}
			return nil, ctxOr(ctx, err)
		}
		if in.Id != q.Id {
			return nil, mdns.ErrId
		}
		if in.Rcode != mdns.RcodeSuccess {
			return nil, &xfrRcodeError{in.Rcode}
		}
		for _, rr := range in.Answer {
			if _, ok := rr.(*mdns.SOA); ok {
				soas++
			} else if len(rrs) == 0 {
				return nil, errors.New("the transfer does not start with the SOA")
			}
			rrs = append(rrs, rr)
		}
	}
	return rrs, nil
}

// ctxOr prefers the context's error over what cancellation did to a socket.
func ctxOr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}
