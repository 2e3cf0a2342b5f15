package labdns

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// ednsSize is the UDP payload size the server advertises (DNS Flag
	// Day 2020) and the most it answers with over UDP.
	ednsSize = 1232
	// maxCNAMEChain bounds how many CNAMEs an answer follows.
	maxCNAMEChain = 8
	// xfrChunk is about how many bytes of records go in one AXFR message
	// (uncompressed, well under the 64 KiB a TCP message may hold).
	xfrChunk = 16 << 10
	// tsigRoom is kept free for the TSIG record of a signed UDP answer.
	tsigRoom = 200
)

// serveDNS is the handler for every DNS message.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	var signer *dns.TSIG
	if t := req.IsTsig(); t != nil {
		if code := s.checkTSIG(w, t); code != dns.RcodeSuccess {
			s.log.Warn("lab dns refused a TSIG signature", "from", w.RemoteAddr().String(),
				"opcode", dns.OpcodeToString[req.Opcode], "key", strings.TrimSuffix(t.Hdr.Name, "."), "error", dns.RcodeToString[int(code)])
			s.tsigError(w, req, t, code)
			return
		}
		signer = t
	}
	switch req.Opcode {
	case dns.OpcodeQuery:
		s.query(w, req, signer)
	case dns.OpcodeUpdate:
		s.reply(w, signer, s.update(w, req, signer != nil))
	default: // NOTIFY: the lab has no secondaries to be told of.
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		s.reply(w, signer, m)
	}
}

// checkTSIG returns the TSIG error code for a signed request (RFC 8945
// section 5.2), or RcodeSuccess.
func (s *Server) checkTSIG(w dns.ResponseWriter, t *dns.TSIG) uint16 {
	if s.tsig == nil || dns.CanonicalName(t.Hdr.Name) != s.tsig.name || dns.CanonicalName(t.Algorithm) != s.tsig.algorithm {
		return dns.RcodeBadKey
	}
	switch err := w.TsigStatus(); err {
	case nil:
		return dns.RcodeSuccess
	case dns.ErrTime:
		return dns.RcodeBadTime
	case dns.ErrSecret, dns.ErrKeyAlg:
		return dns.RcodeBadKey
	default:
		return dns.RcodeBadSig
	}
}

// tsigError answers a request whose signature failed: NOTAUTH with the
// TSIG error, unsigned unless the error is BADTIME (RFC 8945 section 5.3.2).
func (s *Server) tsigError(w dns.ResponseWriter, req *dns.Msg, t *dns.TSIG, code uint16) {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeNotAuth)
	now := time.Now().Unix()
	m.SetTsig(t.Hdr.Name, t.Algorithm, fudge, now)
	ts := m.IsTsig()
	ts.Error = code
	if code == dns.RcodeBadTime {
		// Signed, with the server's time for the client to see.
		ts.OtherLen = 6
		ts.OtherData = fmt.Sprintf("%012x", now)
		if err := w.WriteMsg(m); err != nil {
			s.log.Debug("lab dns write", "err", err)
		}
		return
	}
	// Unsigned: packed here, since miekg/dns's signing would zero the
	// time, which clients read as unsynchronized clocks.
	buf, err := m.Pack()
	if err == nil {
		_, err = w.Write(buf)
	}
	if err != nil {
		s.log.Debug("lab dns write", "err", err)
	}
}

// reply signs m when the request was signed, and sends it.
func (s *Server) reply(w dns.ResponseWriter, signer *dns.TSIG, m *dns.Msg) {
	if signer != nil {
		m.SetTsig(signer.Hdr.Name, signer.Algorithm, fudge, time.Now().Unix())
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("lab dns write", "err", err)
	}
}

func isUDP(w dns.ResponseWriter) bool {
	_, udp := w.LocalAddr().(*net.UDPAddr)
	return udp
}

// query answers a QUERY.
func (s *Server) query(w dns.ResponseWriter, req *dns.Msg, signer *dns.TSIG) {
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		m.SetEdns0(ednsSize, false)
		m.Rcode = dns.RcodeBadVers
		s.reply(w, signer, m)
		return
	}
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		m.Rcode = dns.RcodeRefused
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		s.transfer(w, req, signer)
		return
	default:
		s.answer(m, dns.CanonicalName(q.Name), q.Qtype)
	}
	if opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	if isUDP(w) {
		size := dns.MinMsgSize
		if opt != nil {
			size = max(dns.MinMsgSize, min(int(opt.UDPSize()), ednsSize))
		}
		if signer != nil {
			size -= tsigRoom
		}
		m.Truncate(size)
	} else {
		m.Truncate(dns.MaxMsgSize)
	}
	s.log.Debug("lab dns query", "name", q.Name, "type", dns.TypeToString[q.Qtype], "rcode", dns.RcodeToString[m.Rcode], "answers", len(m.Answer), "tc", m.Truncated)
	s.reply(w, signer, m)
}

// answer fills m with the answer to qname and qtype: from the most
// specific zone, following CNAMEs into any zone the server has.
func (s *Server) answer(m *dns.Msg, qname string, qtype uint16) {
	z := s.zoneFor(qname)
	if z == nil {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	seen := map[string]bool{}
	for name, hops := qname, 0; ; hops++ {
		seen[name] = true
		r := z.lookup(name, qtype)
		m.Answer = append(m.Answer, r.answer...)
		m.Ns, m.Extra, m.Rcode = r.authority, r.extra, r.rcode
		if r.referral && hops == 0 {
			m.Authoritative = false
		}
		if r.cname == "" || hops+1 >= maxCNAMEChain || seen[r.cname] {
			return
		}
		if z = s.zoneFor(r.cname); z == nil {
			return // out of the server's zones: the client follows it
		}
		name = r.cname
	}
}

// result is one zone's answer to one name and type.
type result struct {
	answer, authority, extra []dns.RR
	rcode                    int
	referral                 bool
	cname                    string // canonical target of a CNAME answer, to follow
}

// lookup answers qname (canonical, in the zone) and qtype from the zone
// alone (RFC 1034 section 4.3.2, authoritative part, with RFC 4592
// wildcards).
func (z *zone) lookup(qname string, qtype uint16) result {
	z.mu.RLock()
	defer z.mu.RUnlock()
	if cut := z.cut(qname); cut != "" && (cut != qname || qtype != dns.TypeDS) {
		ns := z.get(cut, dns.TypeNS).servedRRs()
		return result{authority: ns, extra: z.glue(ns), referral: true}
	}
	if z.nodeServed(qname) {
		return z.fromNode(qname, qname, qtype)
	}
	if z.exists[qname] > 0 {
		// An empty non-terminal: NODATA.
		return result{authority: []dns.RR{z.negativeSOA()}}
	}
	// The closest encloser, and the wildcard at it (RFC 4592 section 3.3).
	ce := parent(qname)
	for ce != z.origin && z.exists[ce] == 0 {
		ce = parent(ce)
	}
	if wild := "*." + ce; z.nodeServed(wild) {
		return z.fromNode(wild, qname, qtype)
	}
	return result{rcode: dns.RcodeNameError, authority: []dns.RR{z.negativeSOA()}}
}

// cut returns the highest delegation (served NS below the apex) at or
// above qname, or "".
func (z *zone) cut(qname string) string {
	var chain []string
	for n := qname; n != z.origin && n != "."; n = parent(n) {
		chain = append(chain, n)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		if z.get(chain[i], dns.TypeNS).served() {
			return chain[i]
		}
	}
	return ""
}

// glue returns the zone's addresses of the name servers in ns.
func (z *zone) glue(ns []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range ns {
		target := dns.CanonicalName(rr.(*dns.NS).Ns)
		if !dns.IsSubDomain(z.origin, target) {
			continue
		}
		out = append(out, z.get(target, dns.TypeA).servedRRs()...)
		out = append(out, z.get(target, dns.TypeAAAA).servedRRs()...)
	}
	return out
}

// fromNode answers from the records at owner, which is qname or the
// wildcard that synthesizes it.
func (z *zone) fromNode(owner, qname string, qtype uint16) result {
	synth := func(rrs []dns.RR) []dns.RR {
		if owner != qname {
			for _, rr := range rrs {
				rr.Header().Name = qname
			}
		}
		return rrs
	}
	if qtype == dns.TypeANY {
		var out []dns.RR
		types := make([]uint16, 0, len(z.nodes[owner]))
		for t := range z.nodes[owner] {
			types = append(types, t)
		}
		slices.Sort(types)
		for _, t := range types {
			out = append(out, z.get(owner, t).servedRRs()...)
		}
		return result{answer: synth(out)}
	}
	if s := z.get(owner, qtype); s.served() {
		return result{answer: synth(s.servedRRs())}
	}
	if c := z.get(owner, dns.TypeCNAME); c.served() {
		rrs := synth(c.servedRRs())
		return result{answer: rrs, cname: dns.CanonicalName(rrs[0].(*dns.CNAME).Target)}
	}
	return result{authority: []dns.RR{z.negativeSOA()}}
}

// transfer answers an AXFR (or an IXFR, with the whole zone: RFC 1995
// section 4 allows it) over TCP. Over UDP an AXFR is refused and an IXFR
// gets the SOA alone, which tells the client to come back over TCP.
func (s *Server) transfer(w dns.ResponseWriter, req *dns.Msg, signer *dns.TSIG) {
	q := req.Question[0]
	z := s.zones[dns.CanonicalName(q.Name)]
	m := new(dns.Msg)
	m.SetReply(req)
	switch {
	case z == nil:
		m.Rcode = dns.RcodeNotAuth
	case isUDP(w) && q.Qtype == dns.TypeIXFR:
		m.Authoritative = true
		z.mu.RLock()
		m.Answer = []dns.RR{dns.Copy(z.soa())}
		z.mu.RUnlock()
	case isUDP(w):
		m.Rcode = dns.RcodeRefused
	}
	if z == nil || isUDP(w) {
		s.log.Debug("lab dns transfer refused", "zone", q.Name, "rcode", dns.RcodeToString[m.Rcode])
		s.reply(w, signer, m)
		return
	}
	z.mu.RLock()
	rrs := z.transfer()
	z.mu.RUnlock()
	for len(rrs) > 0 {
		n, size := 0, 0
		for n < len(rrs) && (n == 0 || size+dns.Len(rrs[n]) <= xfrChunk) {
			size += dns.Len(rrs[n])
			n++
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		m.Compress = true
		m.Answer = rrs[:n]
		rrs = rrs[n:]
		if signer != nil {
			m.SetTsig(signer.Hdr.Name, signer.Algorithm, fudge, time.Now().Unix())
		}
		if err := w.WriteMsg(m); err != nil {
			s.log.Debug("lab dns transfer cut short", "zone", q.Name, "err", err)
			return
		}
		// Every later message's MAC covers the previous one and the
		// timers (RFC 8945 section 5.3.1).
		w.TsigTimersOnly(true)
	}
	s.log.Debug("lab dns transfer", "zone", q.Name, "from", w.RemoteAddr().String(), "signed", signer != nil)
}
