package powerdns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"

	mdns "github.com/miekg/dns"
	"golang.org/x/sync/errgroup"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// patchRRset is one RRset of a PATCH body. PowerDNS 4.7 knows two
// changetypes: REPLACE (the whole RRset: records and comments) and DELETE
// (records and comments).
type patchRRset struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	TTL        uint32         `json:"ttl,omitempty"`
	ChangeType string         `json:"changetype"`
	Records    []apiRecord    `json:"records,omitempty"`
	Comments   []patchComment `json:"comments,omitempty"`
}

type patchComment struct {
	Content string `json:"content"`
	Account string `json:"account"`
}

// The PATCH body is {"rrsets":[ITEM,ITEM,...]}.
const (
	bodyHead = `{"rrsets":[`
	bodyTail = `]}`
)

// Apply writes changes to the zone in order, packed into PATCHes under the
// body limit; each PATCH is one PowerDNS transaction. Before each PATCH it
// reads the RRsets the PATCH touches and refuses to send it, with a
// ClassConflict error, when one no longer holds what its change saw (a
// create: no RRset). Every RRset written carries anneal's comment, which
// replaces the RRset's other comments. Apply returns how many leading
// changes were committed; a PATCH whose answer was lost is not counted.
// It does not create zones: a missing zone is a permanent error.
func (t *Target) Apply(ctx context.Context, zone string, changes []dns.RRsetChange) (int, error) {
	z := zoneName(zone)
	if len(changes) == 0 {
		return 0, nil
	}
	items := make([][]byte, len(changes))
	for i := range changes {
		item, err := t.render(z, &changes[i])
		if err != nil {
			return 0, t.fail(z, "apply", dns.ClassPermanent, fmt.Errorf("change %d of %d: %w", i+1, len(changes), err))
		}
		items[i] = item
	}
	batches, err := t.pack(changes, items, t.bodyLimit(ctx))
	if err != nil {
		return 0, t.fail(z, "apply", dns.ClassPermanent, err)
	}
	applied := 0
	for _, b := range batches {
		if err := ctx.Err(); err != nil {
			return applied, t.fail(z, "apply", dns.ClassTransient, err)
		}
		if err := t.check(ctx, z, changes[b.lo:b.hi]); err != nil {
			return applied, err
		}
		if err := t.patch(ctx, z, body(b, items)); err != nil {
			return applied, err
		}
		applied = b.hi
	}
	return applied, nil
}

// render checks a change and returns its RRset as a PATCH item.
func (t *Target) render(z string, c *dns.RRsetChange) ([]byte, error) {
	switch {
	case c.Old == nil && c.New == nil:
		return nil, errors.New("a change with neither old nor new RRset")
	case c.Old != nil && c.New != nil && c.Old.Key() != c.New.Key():
		return nil, fmt.Errorf("a change from %s to %s: old and new name different RRsets", c.Old.Key(), c.New.Key())
	case (c.Op == dns.OpCreate) != (c.Old == nil), (c.Op == dns.OpDelete) != (c.New == nil):
		return nil, fmt.Errorf("%s of %s: the op does not match the old and new RRsets", c.Op, c.Key())
	}
	k := c.Key()
	if k.Type == dns.TypeSOA {
		return nil, fmt.Errorf("%s: the server owns the SOA", k)
	}
	if k.Name == "" || !mdns.IsSubDomain(mdns.Fqdn(z), mdns.Fqdn(k.Name)) {
		return nil, fmt.Errorf("%s is not in zone %s", k, z)
	}
	p := patchRRset{Name: mdns.Fqdn(k.Name), Type: string(k.Type), ChangeType: "DELETE"}
	if c.New != nil {
		if len(c.New.Data) == 0 {
			return nil, fmt.Errorf("%s: an RRset without records (delete it instead)", k)
		}
		p.ChangeType = "REPLACE"
		p.TTL = c.New.TTL
		for _, d := range c.New.Data {
			content, err := toContent(k.Name, k.Type, c.New.TTL, d)
			if err != nil {
				return nil, err
			}
			p.Records = append(p.Records, apiRecord{Content: content})
		}
		p.Comments = []patchComment{{Content: MarkContent, Account: MarkAccount}}
	}
	return json.Marshal(p)
}

// batch is changes[lo:hi], sent as one PATCH of size bytes.
type batch struct{ lo, hi, size int }

// pack groups items, in order, into PATCH bodies of at most limit bytes,
// never two changes of one RRset in one body (PowerDNS would apply both to
// the state before the PATCH).
func (t *Target) pack(changes []dns.RRsetChange, items [][]byte, limit int) ([]batch, error) {
	var out []batch
	cur := batch{size: len(bodyHead) + len(bodyTail)}
	seen := map[dns.RRsetKey]bool{}
	for i, item := range items {
		if len(bodyHead)+len(item)+len(bodyTail) > limit {
			return nil, fmt.Errorf("change %d of %d (%s) alone is a %d-byte PATCH, over the maximum body size of %d bytes",
				i+1, len(items), changes[i].Key(), len(bodyHead)+len(item)+len(bodyTail), limit)
		}
		k := changes[i].Key()
		if cur.hi > cur.lo && (cur.size+1+len(item) > limit || seen[k]) {
			out = append(out, cur)
			cur = batch{lo: i, hi: i, size: len(bodyHead) + len(bodyTail)}
			clear(seen)
		}
		if cur.hi > cur.lo {
			cur.size++ // the comma
		}
		cur.size += len(item)
		cur.hi = i + 1
		seen[k] = true
	}
	return append(out, cur), nil
}

// bodyLimit returns the largest PATCH body to send: MaxBodyBytes, lowered
// under the server's webserver-max-bodysize when GET /config tells it
// (asked once per Target; a failed ask is repeated at the next Apply and
// does not fail this one). PowerDNS does not answer "Expect:
// 100-continue", so a body over its limit is not refused before it is
// sent: it gets a 400, or a connection reset mid-upload.
func (t *Target) bodyLimit(ctx context.Context) int {
	t.limitMu.Lock()
	defer t.limitMu.Unlock()
	if !t.limitKnown {
		var settings []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		}
		if err := t.call(ctx, http.MethodGet, "/config", nil, t.timeout, decodeJSON(&settings)); err == nil {
			t.limitKnown = true
			for _, s := range settings {
				if s.Name != "webserver-max-bodysize" {
					continue
				}
				if mb, err := strconv.Atoi(s.Value); err == nil && mb > 0 {
					t.serverLimit = mb << 20
				}
			}
		}
	}
	if t.serverLimit > 0 {
		return max(minBodyBytes, min(t.maxBody, t.serverLimit-bodyHeadroom))
	}
	return t.maxBody
}

// body joins a batch's items into a PATCH body.
func body(b batch, items [][]byte) []byte {
	out := make([]byte, 0, b.size)
	out = append(out, bodyHead...)
	for i, item := range items[b.lo:b.hi] {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, item...)
	}
	return append(out, bodyTail...)
}

// patch sends one PATCH body.
func (t *Target) patch(ctx context.Context, z string, body []byte) error {
	t.countPatch(len(body))
	err := t.call(ctx, http.MethodPatch, zonePath(z), body, t.bulkTimeout, nil)
	if err == nil {
		return nil
	}
	var he *httpError
	if errors.As(err, &he) {
		switch {
		case he.Status == http.StatusNotFound:
			return t.notFound(ctx, z, "apply")
		case he.Status == http.StatusUnprocessableEntity && strings.Contains(he.Text, "Conflicts with pre-existing RRset"):
			// A CNAME and other data at one name: someone wrote the other
			// since the plan. Re-planning shows it as a conflict.
			return t.fail(z, "apply", dns.ClassConflict, fmt.Errorf("API %s: %w", t.apiURL, he))
		case he.Status == http.StatusBadRequest && !strings.HasPrefix(he.Text, "{") && strings.EqualFold(he.Text, "Bad Request"):
			return t.fail(z, "apply", dns.ClassPermanent, fmt.Errorf("API %s: %w (PowerDNS answers so to a body over webserver-max-bodysize: this one was %d bytes; lower the target's maximum body size or raise webserver-max-bodysize)", t.apiURL, he, len(body)))
		}
	}
	if len(body) > 1<<20 && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		// PowerDNS closes the connection on a body over its limit,
		// sometimes before the client has read its 400.
		return t.fail(z, "apply", dns.ClassTransient, fmt.Errorf("API %s: PATCH of %d bytes: %w (a body over the server's webserver-max-bodysize can end so: lower the target's maximum body size or raise webserver-max-bodysize)", t.apiURL, len(body), err))
	}
	return t.classify(ctx, z, "apply", err)
}

// check is the compare-and-swap guard of one batch: every RRset it touches
// must still hold what its change saw. With a DNS address, DNS answers it
// first: one query per RRset for a small batch, an AXFR for a large one.
// Any doubt there (a difference, a referral, a wildcard's synthesized
// answer, an error) is settled by reading the zone through the API, which
// alone declares a conflict.
func (t *Target) check(ctx context.Context, z string, changes []dns.RRsetChange) error {
	if t.dnsAddr != "" {
		if len(changes) <= t.dnsLimit {
			if t.checkDNS(ctx, z, changes) {
				return nil
			}
		} else if t.checkAXFR(ctx, z, changes) {
			return nil
		}
	}
	live, err := t.readAPI(ctx, z, "apply")
	if err != nil {
		return err
	}
	if c := conflict(live.RRsets, changes); c != nil {
		return t.fail(z, "apply", dns.ClassConflict, fmt.Errorf("%s changed since the plan: the plan saw %s, the server holds %s; this batch of %d changes was not sent",
			c.change.Key(), describe(c.change.Old), describe(c.cur), len(changes)))
	}
	return nil
}

type mismatch struct {
	change *dns.RRsetChange
	cur    *dns.RRset
}

// conflict returns the first change whose RRset in live is not the one it
// saw.
func conflict(live []dns.RRset, changes []dns.RRsetChange) *mismatch {
	have := make(map[dns.RRsetKey]*dns.RRset, len(live))
	for i := range live {
		have[live[i].Key()] = &live[i]
	}
	for i := range changes {
		c := &changes[i]
		if cur := have[c.Key()]; !same(c.Old, cur) {
			return &mismatch{c, cur}
		}
	}
	return nil
}

// checkAXFR reports whether a transfer of the zone shows every RRset as
// its change saw it.
func (t *Target) checkAXFR(ctx context.Context, z string, changes []dns.RRsetChange) bool {
	rrs, err := t.axfr(ctx, z)
	return err == nil && conflict(dns.RRsetsFromRRs(rrs), changes) == nil
}

// checkDNS reports whether DNS answers show every RRset as its change saw
// it; false means "not sure", never "conflict".
func (t *Target) checkDNS(ctx context.Context, z string, changes []dns.RRsetChange) bool {
	// The first answer not as its change saw it cancels the rest: the API
	// settles it, stop asking.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(dnsCheckParallel)
	for i := range changes {
		if gctx.Err() != nil {
			break
		}
		c := &changes[i]
		g.Go(func() error {
			if cur, sure := t.LookupRRset(gctx, z, c.Key()); !sure || !same(c.Old, cur) {
				return errNotSure
			}
			return nil
		})
	}
	return g.Wait() == nil && ctx.Err() == nil
}

// errNotSure: a DNS answer did not show an RRset as its change saw it
// (checkDNS).
var errNotSure = errors.New("not sure")

// LookupRRset asks the DNS address for one RRset (dns.RRsetLooker);
// sure is false without a DNS address, and unless the answer is
// authoritative and final (no referral, no error). The API purges
// PowerDNS's caches of a zone it changes, so an answer after a PATCH is
// the PATCH's result.
func (t *Target) LookupRRset(ctx context.Context, zone string, k dns.RRsetKey) (*dns.RRset, bool) {
	if t.dnsAddr == "" {
		return nil, false
	}
	m, ok := dns.LookupQuery(k)
	if !ok {
		return nil, false
	}
	r, err := t.exchange(ctx, m)
	if err != nil {
		return nil, false
	}
	return dns.AnswerRRset(r, k)
}

// same reports whether the server's RRset is the one a change saw (both
// absent, or equal TTL and records).
func same(saw, cur *dns.RRset) bool {
	if saw == nil || cur == nil {
		return saw == nil && cur == nil
	}
	a, b := *saw, *cur
	a.Data, b.Data = slices.Clone(a.Data), slices.Clone(b.Data)
	a.Normalize()
	b.Normalize()
	return a.Equal(&b)
}

// describe renders an RRset briefly for a conflict message.
func describe(s *dns.RRset) string {
	if s == nil {
		return "no such RRset"
	}
	const show = 3
	data := s.Data
	more := ""
	if len(data) > show {
		more = fmt.Sprintf(" and %d more", len(data)-show)
		data = data[:show]
	}
	return fmt.Sprintf("TTL %d [%s%s]", s.TTL, strings.Join(data, ", "), more)
}
