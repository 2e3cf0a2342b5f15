package rfc2136

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// update is one change as UPDATE sections: prerequisites, then updates.
type update struct {
	prereq []mdns.RR
	ops    []mdns.RR
	size   int // wire size of prereq and ops, uncompressed
}

// Apply writes changes to one zone, in order, packed into as few UPDATE
// messages as fit under the maximum message size. Each message carries
// the prerequisites of its changes, so the server applies all of it or
// none; a message whose prerequisites fail is refused with ClassConflict
// and nothing after it is sent. It returns how many leading changes the
// server committed.
//
// Prerequisites are evaluated before any update of the same message, so a
// change whose prerequisites name an RRset (or, for a CNAME, a name) that
// an earlier change of the message writes starts a new message: the
// result is the same as applying the changes one by one.
func (t *Target) Apply(ctx context.Context, zone string, changes []dns.RRsetChange) (int, error) {
	z := mdns.CanonicalName(zone)
	ups := make([]update, len(changes))
	for i := range changes {
		u, err := buildUpdate(z, &changes[i])
		if err != nil {
			return 0, t.fail(z, "apply", dns.ClassPermanent, fmt.Errorf("change %d (%s): %w", i+1, describe(&changes[i]), err))
		}
		ups[i] = u
	}
	empty := new(mdns.Msg)
	empty.SetUpdate(z)
	base := empty.Len()
	budget := t.maxMsg - tsigHeadroom

	applied := 0
	for applied < len(ups) {
		end, err := t.batch(ups, applied, base, budget)
		if err != nil {
			return applied, t.fail(z, "apply", dns.ClassPermanent, fmt.Errorf("change %d (%s): %w", applied+1, describe(&changes[applied]), err))
		}
		if err := ctx.Err(); err != nil {
			return applied, t.fail(z, "apply", dns.ClassTransient, fmt.Errorf("%d of %d changes applied: %w", applied, len(changes), err))
		}
		if err := t.send(ctx, z, ups[applied:end]); err != nil {
			var te *dns.TargetError
			if errors.As(err, &te) {
				te.Err = fmt.Errorf("%w (changes %d-%d of %d; %d applied before)", te.Err, applied+1, end, len(changes), applied)
			}
			return applied, err
		}
		applied = end
	}
	return applied, nil
}

// describe names a change for an error, even a malformed one.
func describe(c *dns.RRsetChange) string {
	if c.New == nil && c.Old == nil {
		return string(c.Op)
	}
	return string(c.Op) + " " + c.Key().String()
}

// batch returns the end of the message that starts at ups[start].
func (t *Target) batch(ups []update, start, base, budget int) (int, error) {
	if base+ups[start].size > budget {
		return 0, fmt.Errorf("needs %d bytes, over the %d a message may hold (MaxMessageSize %d less %d for TSIG)",
			base+ups[start].size, budget, t.maxMsg, tsigHeadroom)
	}
	// What the message's updates write: name -> types (TypeANY: every type).
	written := map[string]map[uint16]bool{}
	size := base
	end := start
	for end < len(ups) {
		u := ups[end]
		if end > start && (size+u.size > budget || dependsOn(u, written)) {
			break
		}
		size += u.size
		for _, rr := range u.ops {
			h := rr.Header()
			name := strings.ToLower(h.Name)
			if written[name] == nil {
				written[name] = map[uint16]bool{}
			}
			written[name][h.Rrtype] = true
		}
		end++
	}
	return end, nil
}

// dependsOn reports whether a prerequisite of u is about data an update
// already in the message writes.
func dependsOn(u update, written map[string]map[uint16]bool) bool {
	for _, p := range u.prereq {
		h := p.Header()
		types := written[strings.ToLower(h.Name)]
		if types == nil {
			continue
		}
		if h.Rrtype == mdns.TypeANY || types[h.Rrtype] || types[mdns.TypeANY] {
			return true
		}
	}
	return false
}

// buildUpdate turns a change into prerequisites (what the plan saw, or what
// a create needs absent) and updates. Each section gets its own records:
// miekg/dns rewrites the class and TTL of the records it is handed.
func buildUpdate(z string, c *dns.RRsetChange) (update, error) {
	m := new(mdns.Msg)
	m.SetUpdate(z)
	switch c.Op {
	case dns.OpCreate:
		if c.New == nil {
			return update{}, errors.New("a create without a new RRset")
		}
		ins, err := records(z, c.New)
		if err != nil {
			return update{}, err
		}
		if c.New.Type == dns.TypeCNAME {
			// A CNAME may not share its name with any other data.
			m.NameNotUsed(ins[:1])
		} else {
			m.RRsetNotUsed(ins[:1])
			m.RRsetNotUsed([]mdns.RR{&mdns.ANY{Hdr: mdns.RR_Header{Name: ins[0].Header().Name, Rrtype: mdns.TypeCNAME}}})
		}
		m.Insert(ins)
	case dns.OpUpdate:
		if c.Old == nil || c.New == nil {
			return update{}, errors.New("an update needs both the old and the new RRset")
		}
		if c.Old.Key() != c.New.Key() {
			return update{}, fmt.Errorf("an update from %s to %s: the name and type must not change", c.Old.Key(), c.New.Key())
		}
		seen, err := records(z, c.Old)
		if err != nil {
			return update{}, err
		}
		ins, err := records(z, c.New)
		if err != nil {
			return update{}, err
		}
		// RFC 2136 §2.4.2: the RRset must hold exactly these records
		// (TTL aside).
		m.Used(seen)
		m.RemoveRRset(ins[:1])
		m.Insert(ins)
	case dns.OpDelete:
		if c.Old == nil {
			return update{}, errors.New("a delete without the old RRset")
		}
		seen, err := records(z, c.Old)
		if err != nil {
			return update{}, err
		}
		m.Used(seen)
		m.RemoveRRset([]mdns.RR{&mdns.ANY{Hdr: mdns.RR_Header{Name: seen[0].Header().Name, Rrtype: seen[0].Header().Rrtype}}})
	default:
		return update{}, fmt.Errorf("unknown operation %q", c.Op)
	}
	u := update{prereq: m.Answer, ops: m.Ns}
	for _, rr := range u.prereq {
		u.size += mdns.Len(rr)
	}
	for _, rr := range u.ops {
		u.size += mdns.Len(rr)
	}
	return u, nil
}

// records renders an RRset of zone z as fresh wire records.
func records(z string, set *dns.RRset) ([]mdns.RR, error) {
	if set.Type == dns.TypeSOA {
		return nil, errors.New("the server owns the SOA; anneal does not write it")
	}
	if len(set.Data) == 0 {
		return nil, fmt.Errorf("RRset %s has no records", set.Key())
	}
	if !mdns.IsSubDomain(z, mdns.CanonicalName(set.Name)) {
		return nil, fmt.Errorf("%s is not in zone %s", set.Name, strings.TrimSuffix(z, "."))
	}
	return set.RRs()
}

// send signs and sends one UPDATE and classifies the answer.
func (t *Target) send(ctx context.Context, z string, ups []update) error {
	m := new(mdns.Msg)
	m.SetUpdate(z)
	for _, u := range ups {
		m.Answer = append(m.Answer, u.prereq...)
		m.Ns = append(m.Ns, u.ops...)
	}
	m.SetTsig(t.keyName, t.algorithm, fudge, time.Now().Unix())
	size := m.Len() + t.macSize // the TSIG record is packed with an empty MAC
	c := &mdns.Client{Net: "tcp", Timeout: t.timeout, TsigSecret: t.tsigSecret()}
	t.count(size)
	r, err := t.exchange(ctx, c, m)
	if err != nil {
		if isTSIGError(err) {
			return t.fail(z, "apply", dns.ClassPermanent, fmt.Errorf(
				"UPDATE to %s: the answer failed TSIG verification with key %s; the update may or may not have been applied: %w",
				t.server, t.keyDisplay(), err))
		}
		return t.fail(z, "apply", dns.ClassTransient, fmt.Errorf(
			"UPDATE to %s (%d bytes): %w", t.server, size, err))
	}
	if r.Rcode == mdns.RcodeSuccess {
		return nil
	}
	class, msg := t.classify(r)
	return t.fail(z, "apply", class, fmt.Errorf("UPDATE to %s: %s", t.server, msg))
}

func (t *Target) keyDisplay() string { return strings.TrimSuffix(t.keyName, ".") }

// tsigErrorName names a TSIG error code (RFC 8945).
func tsigErrorName(code uint16) string {
	switch code {
	case mdns.RcodeBadSig:
		return "BADSIG"
	case mdns.RcodeBadKey:
		return "BADKEY"
	case mdns.RcodeBadTime:
		return "BADTIME"
	case mdns.RcodeBadTrunc:
		return "BADTRUNC"
	}
	return fmt.Sprintf("TSIG error %d", code)
}

// classify says what an UPDATE's error rcode means for reconcile.
func (t *Target) classify(r *mdns.Msg) (dns.ErrorClass, string) {
	rc := rcodeName(r.Rcode)
	if ts := r.IsTsig(); ts != nil && ts.Error != 0 {
		name := tsigErrorName(ts.Error)
		hint := "check the key name, algorithm and secret"
		if ts.Error == mdns.RcodeBadTime {
			hint = "the clocks of this host and the server differ by more than " + fmt.Sprint(fudge) + " s"
		}
		return dns.ClassPermanent, fmt.Sprintf("%s/%s: the server refused TSIG key %s: %s", rc, name, t.keyDisplay(), hint)
	}
	switch r.Rcode {
	case mdns.RcodeNXRrset:
		return dns.ClassConflict, "NXRRSET: the zone changed since the plan: an RRset the plan saw is gone or holds other records; nothing in this message was applied"
	case mdns.RcodeYXRrset:
		return dns.ClassConflict, "YXRRSET: the zone changed since the plan: an RRset the plan saw absent (or a CNAME) exists now; nothing in this message was applied"
	case mdns.RcodeNameError:
		return dns.ClassConflict, "NXDOMAIN: the zone changed since the plan: a name the plan saw in use is gone; nothing in this message was applied"
	case mdns.RcodeYXDomain:
		return dns.ClassConflict, "YXDOMAIN: the zone changed since the plan: a name the plan saw unused is in use now; nothing in this message was applied"
	case mdns.RcodeNotAuth:
		return dns.ClassPermanent, fmt.Sprintf("NOTAUTH: the server refused TSIG key %s or is not authoritative for the zone", t.keyDisplay())
	case mdns.RcodeRefused:
		return dns.ClassPermanent, fmt.Sprintf("REFUSED: the server refused the update signed with TSIG key %s (allow-update or update-policy of the zone must name the key)", t.keyDisplay())
	case mdns.RcodeServerFailure:
		return dns.ClassTransient, "SERVFAIL: the server failed the update (a fault, or a limit such as max-records-per-type; see its log)"
	case mdns.RcodeNotZone:
		return dns.ClassPermanent, "NOTZONE: a record is outside the zone"
	case mdns.RcodeFormatError:
		return dns.ClassPermanent, "FORMERR: the server could not parse the update"
	case mdns.RcodeNotImplemented:
		return dns.ClassPermanent, "NOTIMP: the server does not take dynamic updates"
	}
	return dns.ClassPermanent, rc + ": the server refused the update"
}
