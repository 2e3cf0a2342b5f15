package dns

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// Plan is the DNS part of a plan: per target and zone, what changes.
type Plan struct {
	Zones []ZoneDiff `json:"zones"`
	// Failures are targets or zones that could not be read; their zones
	// are absent from Zones and nothing is applied to them.
	Failures []TargetFailure `json:"failures,omitempty"`
	// MassDelete is the delete budget per target.
	MassDelete []MassDelete `json:"massDelete"`
	// Findings are consistency problems seen in the live zones.
	Findings []Finding `json:"findings,omitempty"`
	// Interrupted is the unfinished apply this plan completes, if any.
	Interrupted *ApplyRecord `json:"interrupted,omitempty"`
}

// TargetFailure is a target or zone that could not be observed.
type TargetFailure struct {
	Target string `json:"target"`
	Zone   string `json:"zone,omitempty"`
	Class  string `json:"class"`
	Error  string `json:"error"`
}

// MassDelete is one target's deletes against its threshold.
type MassDelete struct {
	Target   string `json:"target"`
	Deletes  int    `json:"deletes"`
	Owned    int    `json:"owned"`
	Percent  int    `json:"percent"`
	Limit    int    `json:"limitPercent"`
	Exceeded bool   `json:"exceeded"`
}

// FindingKind names a consistency problem.
type FindingKind string

// Finding kinds.
const (
	// FindingOrphanPTR: a PTR whose name does not resolve back to its address.
	FindingOrphanPTR FindingKind = "orphan-ptr"
	// FindingMissingPTR: an address with a forward name but no PTR.
	FindingMissingPTR FindingKind = "missing-ptr"
)

// Finding is a forward/reverse consistency problem on one target.
type Finding struct {
	Kind    FindingKind `json:"kind"`
	Target  string      `json:"target"`
	Name    string      `json:"name"`
	Address string      `json:"address"`
	Detail  string      `json:"detail"`
}

// HasChanges reports whether applying the plan would write anything.
func (p *Plan) HasChanges() bool {
	return slices.ContainsFunc(p.Zones, func(z ZoneDiff) bool { return len(z.Changes) > 0 || len(z.Adopt) > 0 })
}

// HasConflicts reports whether any desired record collides with foreign data.
func (p *Plan) HasConflicts() bool {
	return slices.ContainsFunc(p.Zones, func(z ZoneDiff) bool { return len(z.Conflicts) > 0 })
}

// Planner observes DNS targets and diffs them with the desired state.
type Planner struct {
	Targets map[string]Target
	State   State
	// Concurrency bounds zones observed at once per target (default 4).
	Concurrency int
	Log         *slog.Logger
	// Declared lists, per zone, the RRsets the site declared in its recent
	// history. Where the inventory of a target's zone is empty (anneal's
	// state was lost), they count as anneal's, so records of nodes removed
	// meanwhile are still cleaned up.
	Declared map[string]map[RRsetKey]bool
	// Consistency, when set, keeps each target's consistency index from
	// one plan to the next (nil: built from scratch every plan).
	Consistency *Consistency
}

// Plan observes every zone of every target and computes the changes. A
// target that cannot be read is reported in Failures; the others are
// planned all the same.
func (p *Planner) Plan(ctx context.Context, desired *Desired) (*Plan, error) {
	plan := &Plan{}
	if p.State != nil {
		rec, err := p.State.InFlight(ctx)
		if err != nil {
			return nil, fmt.Errorf("read journal: %w", err)
		}
		plan.Interrupted = rec
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	found := map[string][]Finding{}  // targets' consistency findings, from their zones
	marked := map[string][]Finding{} // targets planned from their sync marks
	for _, tz := range desired.Targets {
		t := p.Targets[tz.Target]
		if t == nil {
			plan.Failures = append(plan.Failures, TargetFailure{Target: tz.Target, Class: ClassPermanent.String(), Error: "no provider configured for this target"})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if diffs, findings, ok := p.inSync(ctx, t, tz, desired); ok {
				mu.Lock()
				defer mu.Unlock()
				plan.Zones = append(plan.Zones, diffs...)
				marked[tz.Target] = findings
				return
			}
			diffs, live, fails := p.planTarget(ctx, t, tz, desired)
			findings := p.Consistency.Findings(tz.Target, live)
			mu.Lock()
			defer mu.Unlock()
			plan.Zones = append(plan.Zones, diffs...)
			plan.Failures = append(plan.Failures, fails...)
			found[tz.Target] = findings
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("plan DNS: %w", err)
	}
	slices.SortFunc(plan.Zones, func(a, b ZoneDiff) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Zone, b.Zone))
	})
	slices.SortFunc(plan.Failures, func(a, b TargetFailure) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Zone, b.Zone))
	})
	plan.MassDelete = massDeletes(plan.Zones, desired.MassDeletePercent)
	failed := map[string]bool{}
	for _, f := range plan.Failures {
		failed[f.Target] = true
	}
	for _, tz := range desired.Targets {
		if findings, ok := marked[tz.Target]; ok {
			plan.Findings = append(plan.Findings, findings...)
			continue
		}
		findings := found[tz.Target]
		plan.Findings = append(plan.Findings, findings...)
		if failed[tz.Target] {
			continue
		}
		var zones []ZoneDiff
		for _, z := range plan.Zones {
			if z.Target == tz.Target {
				zones = append(zones, z)
			}
		}
		if err := p.markInSync(ctx, tz.Target, zones, findings); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

func (p *Planner) planTarget(ctx context.Context, t Target, tz TargetZones, desired *Desired) ([]ZoneDiff, []*ZoneContent, []TargetFailure) {
	conc := cmp.Or(p.Concurrency, 4)
	sem := make(chan struct{}, conc)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var diffs []ZoneDiff
	var lives []*ZoneContent
	var fails []TargetFailure
	for _, zone := range tz.Zones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			zd, live, err := p.planZone(ctx, t, desired.Zone(zone))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails = append(fails, TargetFailure{Target: t.Name(), Zone: zone, Class: ClassOf(err).String(), Error: err.Error()})
				return
			}
			diffs = append(diffs, zd)
			if live != nil {
				lives = append(lives, live)
			}
		}()
	}
	wg.Wait()
	return diffs, lives, fails
}

// planZone observes one zone (from the cache when its serial has not
// moved) and diffs it. When the serial and the desired content are both
// those of the zone's sync mark, the diff is empty without reading it.
func (p *Planner) planZone(ctx context.Context, t Target, dz *DesiredZone) (ZoneDiff, *ZoneContent, error) {
	if zd, live, ok := p.zoneInSync(ctx, t, dz); ok {
		return zd, live, nil
	}
	live, err := observeZone(ctx, t, p.State, dz.Zone)
	if err != nil {
		return ZoneDiff{}, nil, err
	}
	owned, err := p.owned(ctx, t.Name(), dz.Zone)
	if err != nil {
		return ZoneDiff{}, nil, err
	}
	zd := DiffZone(t.Name(), dz, live, owned)
	if p.State != nil {
		zd.digest = dz.Digest()
	}
	return zd, live, nil
}

// zoneInSync skips reading a zone whose sync mark holds (same desired
// digest, same live serial) and that held no foreign records: its live
// content is then exactly the desired RRsets, which stand in for it in the
// target's consistency findings.
func (p *Planner) zoneInSync(ctx context.Context, t Target, dz *DesiredZone) (ZoneDiff, *ZoneContent, bool) {
	if p.State == nil {
		return ZoneDiff{}, nil, false
	}
	mark, err := p.State.SyncMark(ctx, t.Name(), dz.Zone)
	if err != nil || mark == nil || mark.Serial == 0 || mark.Foreign != 0 {
		return ZoneDiff{}, nil, false
	}
	digest := dz.Digest()
	if mark.Desired != digest {
		return ZoneDiff{}, nil, false
	}
	serial, err := t.Serial(ctx, dz.Zone)
	if err != nil || serial != mark.Serial {
		return ZoneDiff{}, nil, false
	}
	zd := ZoneDiff{Target: t.Name(), Zone: dz.Zone, Reverse: dz.Reverse, Serial: serial, Owned: mark.Owned, digest: digest}
	return zd, &ZoneContent{Zone: dz.Zone, Serial: serial, RRsets: dz.RRsets, desired: dz}, true
}

// inSync returns the diffs and findings a target's sync marks record,
// when every zone's mark holds: same desired digest, same live serial.
func (p *Planner) inSync(ctx context.Context, t Target, tz TargetZones, desired *Desired) ([]ZoneDiff, []Finding, bool) {
	if p.State == nil {
		return nil, nil, false
	}
	head, err := p.State.SyncMark(ctx, t.Name(), "")
	if err != nil || head == nil {
		return nil, nil, false
	}
	var diffs []ZoneDiff
	for _, zone := range tz.Zones {
		dz := desired.Zone(zone)
		mark, err := p.State.SyncMark(ctx, t.Name(), zone)
		if err != nil || mark == nil || mark.Serial == 0 || mark.Desired != dz.Digest() {
			return nil, nil, false
		}
		serial, err := t.Serial(ctx, zone)
		if err != nil || serial != mark.Serial {
			return nil, nil, false
		}
		diffs = append(diffs, ZoneDiff{Target: t.Name(), Zone: zone, Reverse: dz.Reverse, Serial: serial, Owned: mark.Owned, Foreign: mark.Foreign})
	}
	return diffs, head.Findings, true
}

// markInSync records a sync mark for every zone of the target that
// matched the desired state, and, when they all did, the target's
// findings under the empty zone name (the whole-target fast path).
func (p *Planner) markInSync(ctx context.Context, target string, zones []ZoneDiff, findings []Finding) error {
	if p.State == nil {
		return nil
	}
	all := true
	for _, zd := range zones {
		if zd.digest == "" || zd.Serial == 0 || len(zd.Changes)+len(zd.Conflicts)+len(zd.Adopt) > 0 {
			all = false
			continue
		}
		if err := p.setMark(ctx, target, zd.Zone, &SyncMark{Serial: zd.Serial, Desired: zd.digest, Owned: zd.Owned, Foreign: zd.Foreign}); err != nil {
			return err
		}
	}
	if !all {
		return nil
	}
	return p.setMark(ctx, target, "", &SyncMark{Findings: findings})
}

// setMark writes a sync mark unless the same one is stored: each write is
// a commit of the state store, and most marks of a target whose zone
// changed are the same as before.
func (p *Planner) setMark(ctx context.Context, target, zone string, mark *SyncMark) error {
	if old, err := p.State.SyncMark(ctx, target, zone); err == nil && old != nil &&
		old.Serial == mark.Serial && old.Desired == mark.Desired && old.Owned == mark.Owned && old.Foreign == mark.Foreign &&
		slices.Equal(old.Findings, mark.Findings) {
		return nil
	}
	if err := p.State.SetSyncMark(ctx, target, zone, mark); err != nil {
		return fmt.Errorf("write sync mark of %s/%s: %w", target, zone, err)
	}
	return nil
}

func (p *Planner) owned(ctx context.Context, target, zone string) (Ownership, error) {
	if p.State == nil {
		return nil, nil
	}
	inv, err := p.State.OwnedRRsets(ctx, target, zone)
	if err != nil {
		return nil, fmt.Errorf("read inventory of %s/%s: %w", target, zone, err)
	}
	if len(inv) == 0 && p.Declared[zone] != nil {
		declared := p.Declared[zone]
		return func(k RRsetKey) bool { return declared[k] }, nil
	}
	return func(k RRsetKey) bool { return inv[k] }, nil
}

// observeZone reads a zone, or takes it from the cache when the SOA serial
// is the one cached.
func observeZone(ctx context.Context, t Target, cache ZoneCache, zone string) (*ZoneContent, error) {
	if cache != nil {
		serial, err := t.Serial(ctx, zone)
		if err != nil {
			return nil, err
		}
		cached, err := cache.CachedZone(ctx, t.Name(), zone)
		if err != nil {
			return nil, fmt.Errorf("read zone cache of %s/%s: %w", t.Name(), zone, err)
		}
		if cached != nil && cached.Serial == serial && serial != 0 {
			return cached, nil
		}
	}
	live, err := t.ReadZone(ctx, zone)
	if err != nil {
		return nil, err
	}
	if cache != nil {
		if err := cache.CacheZone(ctx, t.Name(), live); err != nil {
			return nil, fmt.Errorf("write zone cache of %s/%s: %w", t.Name(), zone, err)
		}
	}
	return live, nil
}

func massDeletes(zones []ZoneDiff, limit int) []MassDelete {
	by := map[string]*MassDelete{}
	var order []string
	for _, z := range zones {
		m := by[z.Target]
		if m == nil {
			m = &MassDelete{Target: z.Target, Limit: limit}
			by[z.Target] = m
			order = append(order, z.Target)
		}
		_, _, d := z.Counts()
		m.Deletes += d
		m.Owned += z.Owned
	}
	out := make([]MassDelete, 0, len(order))
	for _, t := range order {
		m := by[t]
		if m.Owned > 0 {
			m.Percent = (m.Deletes*100 + m.Owned - 1) / m.Owned
		}
		m.Exceeded = m.Deletes > 0 && m.Percent > m.Limit
		out = append(out, *m)
	}
	return out
}
