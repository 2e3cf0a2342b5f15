package labdns

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/dns"
)

// A zone file is plain RFC 1035, every owner name absolute, with two
// kinds of comment lines for what the PowerDNS API keeps beside the
// records (any other reader sees comments and skips them):
//
//	;lab:disabled NAME TTL IN TYPE RDATA    a disabled record: kept, not served
//	;lab:comments {"name":…,"type":…,"ttl":…,"comments":[…]}
const (
	disabledPrefix = ";lab:disabled "
	commentsPrefix = ";lab:comments "
)

// commentLine is the JSON of a ;lab:comments line.
type commentLine struct {
	Name     string    `json:"name"`
	Type     string    `json:"type"`
	TTL      uint32    `json:"ttl"`
	Comments []Comment `json:"comments"`
}

// zoneFileName is the file name of a zone in the state directory.
func zoneFileName(origin string) string {
	return url.PathEscape(strings.TrimSuffix(origin, ".")) + ".zone"
}

// loadZone reads a zone from its file, or makes it (an SOA and an NS
// ns1.<zone>, with ttl) and writes its file when there is none.
func loadZone(origin, file string, ttl uint32) (*zone, error) {
	z := newZone(origin, file)
	if file != "" {
		data, err := os.ReadFile(file)
		switch {
		case err == nil:
			if err := z.parse(data); err != nil {
				return nil, fmt.Errorf("zone %s: %w", strings.TrimSuffix(origin, "."), err)
			}
			return z, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("zone %s: %w", strings.TrimSuffix(origin, "."), err)
		}
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: origin, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	z.put(origin, dns.TypeSOA, &rrset{ttl: ttl, records: []record{{rr: &dns.SOA{
		Hdr: hdr(dns.TypeSOA), Ns: "ns1." + origin, Mbox: "hostmaster." + origin,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl,
	}}}})
	z.put(origin, dns.TypeNS, &rrset{ttl: ttl, records: []record{{rr: &dns.NS{Hdr: hdr(dns.TypeNS), Ns: "ns1." + origin}}}})
	if err := z.save(); err != nil {
		return nil, err
	}
	return z, nil
}

// parse fills an empty zone from its zone file.
func (z *zone) parse(data []byte) error {
	type pending struct {
		ttl      uint32
		rrs      []record
		comments []Comment
		seenTTL  bool
	}
	sets := map[setKey]*pending{}
	var order []setKey
	add := func(rr dns.RR, disabled bool, where string) error {
		h := rr.Header()
		name := dns.CanonicalName(h.Name)
		if !dns.IsSubDomain(z.origin, name) {
			return fmt.Errorf("%s: %s is not in the zone", where, h.Name)
		}
		if h.Class != dns.ClassINET {
			return fmt.Errorf("%s: class %s: only IN", where, dns.ClassToString[h.Class])
		}
		if h.Rrtype == dns.TypeSOA && name != z.origin {
			return fmt.Errorf("%s: an SOA below the apex", where)
		}
		k := setKey{name, h.Rrtype}
		p := sets[k]
		if p == nil {
			p = &pending{}
			sets[k] = p
			order = append(order, k)
		}
		if !p.seenTTL || h.Ttl < p.ttl {
			p.ttl = h.Ttl
		}
		p.seenTTL = true
		r := newRecord(rr, 0)
		r.disabled = disabled
		p.rrs = append(p.rrs, r)
		return nil
	}

	// The comment lines first.
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		where := fmt.Sprintf("%s:%d", z.file, line)
		switch {
		case strings.HasPrefix(text, disabledPrefix):
			rr, err := dns.NewRR(strings.TrimPrefix(text, disabledPrefix))
			if err != nil || rr == nil {
				return fmt.Errorf("%s: disabled record: %v", where, err)
			}
			if err := add(rr, true, where); err != nil {
				return err
			}
		case strings.HasPrefix(text, commentsPrefix):
			var c commentLine
			if err := json.Unmarshal([]byte(strings.TrimPrefix(text, commentsPrefix)), &c); err != nil {
				return fmt.Errorf("%s: comments: %w", where, err)
			}
			t, ok := dns.StringToType[strings.ToUpper(c.Type)]
			name := dns.CanonicalName(c.Name)
			if !ok || !dns.IsSubDomain(z.origin, name) {
				return fmt.Errorf("%s: comments of %s %s: not an RRset of the zone", where, c.Name, c.Type)
			}
			k := setKey{name, t}
			p := sets[k]
			if p == nil {
				p = &pending{ttl: c.TTL}
				sets[k] = p
				order = append(order, k)
			}
			p.comments = append(p.comments, c.Comments...)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", z.file, err)
	}

	// Then the records, which the comment lines are to the parser.
	zp := dns.NewZoneParser(bytes.NewReader(data), z.origin, z.file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if err := add(rr, false, z.file); err != nil {
			return err
		}
	}
	if err := zp.Err(); err != nil {
		return err
	}

	for _, k := range order {
		p := sets[k]
		s := &rrset{ttl: p.ttl, comments: p.comments}
		for _, r := range p.rrs {
			if s.index(r.rr) >= 0 {
				continue
			}
			r.rr.Header().Ttl = p.ttl
			s.records = append(s.records, r)
		}
		z.put(k.name, k.typ, s)
	}
	if soa := z.get(z.origin, dns.TypeSOA); soa == nil || len(soa.records) != 1 || soa.records[0].disabled {
		return fmt.Errorf("%s: the zone needs exactly one SOA, at its apex", z.file)
	}
	return nil
}

// render writes the zone as its zone file.
func (z *zone) render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "; zone %s, kept by the anneal lab: rewritten after every change.\n", strings.TrimSuffix(z.origin, "."))
	fmt.Fprintf(&b, "; %s… holds a disabled record, %s… an RRset's PowerDNS comments.\n", disabledPrefix, commentsPrefix)
	fmt.Fprintf(&b, "$ORIGIN %s\n", z.origin)
	for _, k := range z.keys() {
		s := z.get(k.name, k.typ)
		for _, r := range s.records {
			if r.disabled {
				b.WriteString(disabledPrefix)
			}
			b.WriteString(r.rr.String())
			b.WriteByte('\n')
		}
		if len(s.comments) > 0 {
			line, _ := json.Marshal(commentLine{Name: k.name, Type: dns.TypeToString[k.typ], TTL: s.ttl, Comments: s.comments})
			b.WriteString(commentsPrefix)
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// save writes the zone file atomically (a temporary file renamed over
// it); the caller holds the zone's lock. A zone without a file is not
// saved.
func (z *zone) save() error {
	if z.file == "" {
		return nil
	}
	return writeAtomic(z.file, z.render())
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
