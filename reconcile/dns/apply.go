package dns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// MassDeleteError refuses an apply whose deletes exceed the site's
// threshold; nothing was applied.
type MassDeleteError struct{ Over []MassDelete }

func (e *MassDeleteError) Error() string {
	m := e.Over[0]
	return fmt.Sprintf("refusing to apply: target %s would delete %d of %d RRsets anneal owns (%d%%, above the site's dnsMassDeletePercent %d%%); pass --allow-mass-delete if this is intended",
		m.Target, m.Deletes, m.Owned, m.Percent, m.Limit)
}

// ApplyOptions bound an apply.
type ApplyOptions struct {
	AllowMassDelete bool
	// Revision is recorded in the journal.
	Revision string
	// Saved applies a reviewed plan exactly: a zone that changed under it
	// fails instead of being re-planned.
	Saved bool
}

// StaleError refuses a saved plan whose live state moved since it was made.
type StaleError struct{ Zones []string }

func (e *StaleError) Error() string {
	return fmt.Sprintf("refusing to apply a saved plan: the live state changed since it was made (%s); run plan again", strings.Join(e.Zones, "; "))
}

// CheckFresh verifies that every zone of a saved plan still has the SOA
// serial the plan saw.
func CheckFresh(ctx context.Context, plan *Plan, targets map[string]Target) error {
	var stale []string
	for _, z := range plan.Zones {
		t := targets[z.Target]
		if t == nil {
			stale = append(stale, fmt.Sprintf("target %s is not configured", z.Target))
			continue
		}
		serial, err := t.Serial(ctx, z.Zone)
		if err != nil {
			return err
		}
		if serial != z.Serial {
			stale = append(stale, fmt.Sprintf("%s zone %s serial %d → %d", z.Target, z.Zone, z.Serial, serial))
		}
	}
	if len(stale) > 0 {
		return &StaleError{Zones: stale}
	}
	return nil
}

// ZoneResult is what an apply did to one zone on one target.
type ZoneResult struct {
	Target   string `json:"target"`
	Zone     string `json:"zone"`
	Created  int    `json:"created"`
	Updated  int    `json:"updated"`
	Deleted  int    `json:"deleted"`
	Adopted  int    `json:"adopted"`
	Replans  int    `json:"replans,omitempty"`
	Error    string `json:"error,omitempty"`
	Class    string `json:"class,omitempty"`
	Conflict int    `json:"conflicts,omitempty"`
}

// Result is what an apply did.
type Result struct {
	Zones []ZoneResult `json:"zones"`
}

// Failed reports whether any zone failed.
func (r *Result) Failed() bool {
	return slices.ContainsFunc(r.Zones, func(z ZoneResult) bool { return z.Error != "" })
}

// Applier applies DNS plans.
type Applier struct {
	Targets map[string]Target
	State   State
	// Concurrency bounds zones applied at once per target (default 4).
	Concurrency int
	// Attempts per transient failure (default 3), Backoff the first wait.
	Attempts int
	Backoff  time.Duration
	Log      *slog.Logger
	// Progress, when set, is told about a zone each time a batch of its
	// changes finishes (a reverse zone may report twice), from the
	// goroutine that applied it: it must be safe for concurrent use.
	Progress func(ZoneResult)
}

// Apply writes a plan. Per target, in order: PTR deletes (reverse zones),
// then forward zones, then PTR creates and updates, so a reverse record
// never names a forward name that does not exist. Targets are independent:
// one failing does not stop the others. Each zone is read back after
// writing; a server that acknowledged but did not apply is an error.
func (a *Applier) Apply(ctx context.Context, plan *Plan, desired *Desired, opts ApplyOptions) (*Result, error) {
	if !opts.AllowMassDelete {
		var over []MassDelete
		for _, m := range plan.MassDelete {
			if m.Exceeded {
				over = append(over, m)
			}
		}
		if len(over) > 0 {
			return nil, &MassDeleteError{Over: over}
		}
	}
	if a.State != nil {
		rec := &ApplyRecord{Started: time.Now().UTC(), Revision: opts.Revision, Pending: map[string]int{}}
		for _, z := range plan.Zones {
			if len(z.Changes)+len(z.Adopt) > 0 {
				rec.Pending[z.Target+"/"+z.Zone] = len(z.Changes)
			}
		}
		if len(rec.Pending) > 0 {
			if err := a.State.BeginApply(ctx, rec); err != nil {
				return nil, fmt.Errorf("journal: %w", err)
			}
		}
	}
	byTarget := map[string][]ZoneDiff{}
	for _, z := range plan.Zones {
		byTarget[z.Target] = append(byTarget[z.Target], z)
	}
	res := &Result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for target, zones := range byTarget {
		t := a.Targets[target]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs := a.applyTarget(ctx, t, zones, desired, opts.Saved)
			mu.Lock()
			res.Zones = append(res.Zones, rs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(res.Zones, func(x, y ZoneResult) int {
		return cmp.Or(cmp.Compare(x.Target, y.Target), cmp.Compare(x.Zone, y.Zone))
	})
	if a.State != nil && !res.Failed() && len(plan.Failures) == 0 && ctx.Err() == nil {
		// Every zone the plan covered now holds the desired state, including
		// zones an interrupted earlier apply left pending that needed
		// nothing more this time.
		for _, z := range plan.Zones {
			if err := a.State.ZoneDone(ctx, z.Target, z.Zone); err != nil {
				return res, fmt.Errorf("journal: %w", err)
			}
		}
		if err := a.State.EndApply(ctx); err != nil {
			return res, fmt.Errorf("journal: %w", err)
		}
	}
	return res, ctx.Err()
}

// phase is one step of a target's apply.
type phase struct {
	reverse bool
	pick    func(RRsetChange) bool
}

// forwardNames lists every name the desired forward zones hold.
func forwardNames(d *Desired) map[string]bool {
	out := map[string]bool{}
	for _, z := range d.Zones {
		if z.Reverse {
			continue
		}
		for _, s := range z.RRsets {
			out[s.Name] = true
		}
	}
	return out
}

// orphaning reports whether a change deletes a PTR whose name is going
// away: such deletes go before the forward zones change, so a PTR never
// names a missing name. Other PTR deletes (an address moved, the name
// stays) ride with the PTR creates, one message per zone.
func orphaning(c RRsetChange, kept map[string]bool) bool {
	if c.Op != OpDelete || c.Old.Type != TypePTR {
		return false
	}
	for _, d := range c.Old.Data {
		if !kept[canonicalName(d)] {
			return true
		}
	}
	return false
}

func (a *Applier) applyTarget(ctx context.Context, t Target, zones []ZoneDiff, desired *Desired, saved bool) []ZoneResult {
	results := map[string]*ZoneResult{}
	serials := map[string]*uint32{} // per zone, the serial its cached copy is at
	for _, z := range zones {
		results[z.Zone] = &ZoneResult{Target: z.Target, Zone: z.Zone, Conflict: len(z.Conflicts)}
		serials[z.Zone] = new(z.Serial)
	}
	kept := forwardNames(desired)
	first := func(c RRsetChange) bool { return orphaning(c, kept) }
	last := func(c RRsetChange) bool { return !orphaning(c, kept) }
	all := func(RRsetChange) bool { return true }
	phases := []phase{{reverse: true, pick: first}, {reverse: false, pick: all}, {reverse: true, pick: last}}
	conc := cmp.Or(a.Concurrency, 4)
	if l, ok := t.(WriteLimiter); ok && l.ConcurrentWrites() > 0 {
		conc = min(conc, l.ConcurrentWrites())
	}
	for i, ph := range phases {
		// A zone's failure is its result's: the other zones go on.
		var g errgroup.Group
		g.SetLimit(conc)
		for _, z := range zones {
			if z.Reverse != ph.reverse || results[z.Zone].Error != "" {
				continue
			}
			var changes []RRsetChange
			for _, c := range z.Changes {
				if ph.pick(c) {
					changes = append(changes, c)
				}
			}
			adopt := z.Adopt
			if i == 0 {
				adopt = nil // adopt once, in the later reverse phase
			}
			if len(changes) == 0 && len(adopt) == 0 {
				continue
			}
			g.Go(func() error {
				r := results[z.Zone]
				a.applyZone(ctx, t, z.Zone, changes, adopt, desired.Zone(z.Zone), r, !saved, serials[z.Zone])
				if a.Progress != nil {
					a.Progress(*r)
				}
				return nil
			})
		}
		_ = g.Wait() // never an error: each zone's is in its result
	}
	out := make([]ZoneResult, 0, len(results))
	for _, z := range zones {
		r := results[z.Zone]
		if a.State != nil && r.Error == "" && len(z.Changes)+len(z.Adopt) > 0 {
			if err := a.State.ZoneDone(ctx, z.Target, z.Zone); err != nil {
				r.Error = fmt.Sprintf("journal: %v", err)
			}
		}
		out = append(out, *r)
	}
	return out
}

// applyZone sends one zone's changes, records ownership of what landed,
// re-plans once if the zone changed under the plan, and reads it back.
func (a *Applier) applyZone(ctx context.Context, t Target, zone string, changes []RRsetChange, adopt []RRsetKey, dz *DesiredZone, r *ZoneResult, replan bool, serial *uint32) {
	fail := func(err error) {
		r.Error = err.Error()
		r.Class = ClassOf(err).String()
		a.log().Warn("dns apply failed", "target", t.Name(), "zone", zone, "class", r.Class, "err", err)
	}
	if err := a.record(ctx, t.Name(), zone, nil, adopt); err != nil {
		fail(err)
		return
	}
	r.Adopted += len(adopt)
	for attempt := 0; ; attempt++ {
		n, err := a.send(ctx, t, zone, changes)
		if rerr := a.record(ctx, t.Name(), zone, changes[:n], nil); rerr != nil {
			fail(rerr)
			return
		}
		count(r, changes[:n])
		if err == nil {
			break
		}
		if ClassOf(err) != ClassConflict || attempt > 0 || !replan {
			fail(err)
			return
		}
		// The zone changed between plan and apply: observe again and
		// re-plan this zone against what is there now.
		r.Replans++
		a.log().Info("dns zone changed since the plan; re-planning", "target", t.Name(), "zone", zone, "err", err)
		live, rerr := t.ReadZone(ctx, zone)
		if rerr != nil {
			fail(rerr)
			return
		}
		owned, oerr := a.ownership(ctx, t.Name(), zone)
		if oerr != nil {
			fail(oerr)
			return
		}
		zd := DiffZone(t.Name(), dz, live, owned)
		changes = keep(zd.Changes, changes[n:])
		r.Conflict = len(zd.Conflicts)
		if len(changes) == 0 {
			break
		}
	}
	whole, err := a.verify(ctx, t, zone, changes)
	if err != nil {
		fail(err)
		return
	}
	if !whole && r.Replans == 0 {
		a.patchCache(ctx, t, zone, changes, serial)
	}
}

// patchCache brings the zone's cached copy up to date with changes that
// were just written and confirmed one by one, so that the next plan does
// not read the whole zone again. Only when nothing else wrote meanwhile:
// the copy is at the serial the changes were planned against, and the
// server's serial moved by exactly one (one transaction: ours). Anything
// else leaves the copy as it is, and its serial tells the next plan to
// read the zone.
func (a *Applier) patchCache(ctx context.Context, t Target, zone string, changes []RRsetChange, serial *uint32) {
	if a.State == nil || *serial == 0 {
		return
	}
	now, err := t.Serial(ctx, zone)
	if err != nil || now != *serial+1 {
		return
	}
	cached, err := a.State.CachedZone(ctx, t.Name(), zone)
	if err != nil || cached == nil || cached.Serial != *serial {
		return
	}
	patched := patchZone(cached, changes)
	patched.Serial = now
	if err := a.State.CacheZone(ctx, t.Name(), patched); err != nil {
		a.log().Warn("dns apply: zone cache not updated", "target", t.Name(), "zone", zone, "err", err)
		return
	}
	*serial = now
}

// patchZone is z with changes made: RRsets replaced, added and removed,
// and, where the target marks anneal's RRsets, the written ones marked.
func patchZone(z *ZoneContent, changes []RRsetChange) *ZoneContent {
	sets := make(map[RRsetKey]RRset, len(z.RRsets)+len(changes))
	for _, s := range z.RRsets {
		sets[s.Key()] = s
	}
	var marked map[RRsetKey]bool
	if z.Marked != nil {
		marked = maps.Clone(z.Marked)
	}
	for _, c := range changes {
		k := c.Key()
		if c.New == nil {
			delete(sets, k)
			delete(marked, k)
			continue
		}
		sets[k] = *c.New
		if marked != nil {
			marked[k] = true
		}
	}
	out := &ZoneContent{Zone: z.Zone, Serial: z.Serial, RRsets: slices.Collect(maps.Values(sets)), Marked: marked}
	slices.SortFunc(out.RRsets, compareRRsets)
	return out
}

// keep restricts a re-planned zone to the RRsets the phase was applying.
func keep(replanned, pending []RRsetChange) []RRsetChange {
	want := map[RRsetKey]bool{}
	for _, c := range pending {
		want[c.Key()] = true
	}
	var out []RRsetChange
	for _, c := range replanned {
		if want[c.Key()] {
			out = append(out, c)
		}
	}
	return out
}

func count(r *ZoneResult, done []RRsetChange) {
	for _, c := range done {
		switch c.Op {
		case OpCreate:
			r.Created++
		case OpUpdate:
			r.Updated++
		case OpDelete:
			r.Deleted++
		}
	}
}

// send applies changes with retries on transient failures.
func (a *Applier) send(ctx context.Context, t Target, zone string, changes []RRsetChange) (int, error) {
	done := 0
	wait := cmp.Or(a.Backoff, 200*time.Millisecond)
	attempts := cmp.Or(a.Attempts, 3)
	for try := 1; ; try++ {
		n, err := t.Apply(ctx, zone, changes[done:])
		done += n
		if err == nil || ClassOf(err) != ClassTransient || try >= attempts {
			return done, err
		}
		a.log().Info("dns apply: transient failure, retrying", "target", t.Name(), "zone", zone, "attempt", try, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 3
	}
}

func (a *Applier) record(ctx context.Context, target, zone string, done []RRsetChange, adopt []RRsetKey) error {
	if a.State == nil || len(done)+len(adopt) == 0 {
		return nil
	}
	add := slices.Clone(adopt)
	var remove []RRsetKey
	for _, c := range done {
		if c.Op == OpDelete {
			remove = append(remove, c.Key())
		} else {
			add = append(add, c.Key())
		}
	}
	if err := a.State.RecordOwned(ctx, target, zone, add, remove); err != nil {
		return fmt.Errorf("record ownership in %s/%s: %w", target, zone, err)
	}
	return nil
}

func (a *Applier) ownership(ctx context.Context, target, zone string) (Ownership, error) {
	p := Planner{State: a.State}
	return p.owned(ctx, target, zone)
}

// lookupVerifyLimit is the most changes the applier reads back one RRset
// at a time; more are read back with the whole zone.
const lookupVerifyLimit = 64

// verify reads the changes back: every change must show. Servers answer
// NOERROR to updates they silently ignore (data beside a CNAME). A few
// changes are asked for one by one when the target can (RRsetLooker); the
// zone is read whole when there are many, or when any answer is not the
// change's (which the whole zone then settles: a wildcard's synthesized
// answer, an error, a cache, or a change the server did not take).
//
// whole reports whether the zone was read whole (and cached as read).
func (a *Applier) verify(ctx context.Context, t Target, zone string, changes []RRsetChange) (whole bool, err error) {
	if l, ok := t.(RRsetLooker); ok && len(changes) <= lookupVerifyLimit && confirmed(ctx, l, zone, changes) {
		return false, nil
	}
	live, err := t.ReadZone(ctx, zone)
	if err != nil {
		return true, fmt.Errorf("read back: %w", err)
	}
	if a.State != nil {
		if err := a.State.CacheZone(ctx, t.Name(), live); err != nil {
			return true, fmt.Errorf("write zone cache: %w", err)
		}
	}
	have := make(map[RRsetKey]*RRset, len(live.RRsets))
	for i := range live.RRsets {
		have[live.RRsets[i].Key()] = &live.RRsets[i]
	}
	var missed []string
	for _, c := range changes {
		got := have[c.Key()]
		switch {
		case c.New == nil && got != nil:
			missed = append(missed, c.Key().String()+" still present")
		case c.New != nil && (got == nil || !got.Equal(c.New)):
			missed = append(missed, c.Key().String()+" not as written")
		}
	}
	if len(missed) > 0 {
		if len(missed) > 5 {
			missed = append(missed[:5], fmt.Sprintf("and %d more", len(missed)-5))
		}
		return true, &TargetError{Target: t.Name(), Zone: zone, Op: "read back", Class: ClassPermanent,
			Err: errors.New("the server acknowledged the update but does not hold it (a CNAME beside other data?): " + strings.Join(missed, ", "))}
	}
	return true, nil
}

// confirmed reports whether the server answers every change's RRset as
// the change wrote it (absent for a delete); false means "not sure".
func confirmed(ctx context.Context, l RRsetLooker, zone string, changes []RRsetChange) bool {
	// The first answer not as written settles it: the rest are cancelled.
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range changes {
		c := &changes[i]
		g.Go(func() error {
			got, sure := l.LookupRRset(ctx, zone, c.Key())
			if !sure || (c.New == nil) != (got == nil) || c.New != nil && !got.Equal(c.New) {
				return errUnsure
			}
			return nil
		})
	}
	return g.Wait() == nil
}

// errUnsure: a DNS answer did not show a change as written (confirmed).
var errUnsure = errors.New("not confirmed")

func (a *Applier) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}
