package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
	"golang.org/x/sync/errgroup"
)

// Source yields revisions of the site: a git branch, or a directory.
type Source interface {
	// Latest fetches and returns the newest revision's id and summary.
	Latest(ctx context.Context) (Revision, error)
	// FS returns the site's files at a revision.
	FS(ctx context.Context, rev string) (fs.FS, error)
	// Descends reports whether next has prev in its history (always true
	// for sources without history).
	Descends(prev, next string) (bool, error)
}

// Revision identifies one version of the site.
type Revision struct {
	ID      string `json:"id"`
	Summary string `json:"summary,omitempty"`
}

// Mode is what the reconciler does with drift.
type Mode string

// Modes.
const (
	ModeConverge Mode = "converge" // apply
	ModeReport   Mode = "report"   // only compute and publish drift
)

// Status is what the reconciler publishes and keeps across restarts.
// Its three revisions differ: AppliedRevision is the last revision fully
// applied (its plan ran to the end: DNS written, netboot served, its
// rollout finished); LastGoodRevision the newest that validated, the one
// converged to (applied once its plan has run: a guarded plan waits for
// approval, a halted rollout for a retry); LastAttemptedRevision the
// newest fetched, valid or not (an invalid one is never applied, LastError
// says why).
type Status struct {
	Mode                  Mode      `json:"mode"`
	Suspended             bool      `json:"suspended"`
	AppliedRevision       string    `json:"appliedRevision"`
	LastGoodRevision      string    `json:"lastGoodRevision"`
	LastAttemptedRevision string    `json:"lastAttemptedRevision"`
	LastError             string    `json:"lastError"`
	LastErrorClass        string    `json:"lastErrorClass,omitempty"`
	LastReconcile         time.Time `json:"lastReconcile"`
	LastDurationSeconds   float64   `json:"lastDurationSeconds"`
	Reconciles            int       `json:"reconciles"`
	// Steps are the last reconcile's step durations in seconds (fetch,
	// load, compile, plan, apply).
	Steps    map[string]float64 `json:"steps,omitempty"`
	Failures int                `json:"failures"`
	Drift    Drift              `json:"drift"`
	Rollout  *RolloutStatus     `json:"rollout,omitempty"`
	// PendingApproval is the plan that waits for `anneal approve`: the
	// revision, the plan's digest and why (its guards). Approved is the
	// last approval given.
	PendingApproval *Approval `json:"pendingApproval,omitempty"`
	Approved        *Approval `json:"approved,omitempty"`
	// ObserveUntil ends the observation that follows a state with no node
	// records: until then no node without a known build is rebuilt.
	ObserveUntil time.Time `json:"observeUntil,omitzero"`
	// ObserveLost: the state was lost (the netboot key predates it), not
	// new: nodes found off are not installed without approval either.
	ObserveLost bool `json:"observeLost,omitempty"`
	// LastApplied is when a pass last applied the applied revision
	// successfully (converge mode; zero before the first).
	LastApplied time.Time `json:"lastApplied,omitzero"`
}

// Drift counts what the last plan found.
type Drift struct {
	Creates   int `json:"creates"`
	Updates   int `json:"updates"`
	Deletes   int `json:"deletes"`
	Conflicts int `json:"conflicts"`
	Failures  int `json:"failures"`
	// Rebuilds counts nodes to rebuild, Decommissions those to
	// decommission (marked so, or gone from the site), Held those held
	// back (failed, maintenance, observed).
	Rebuilds      int `json:"rebuilds"`
	Decommissions int `json:"decommissions"`
	Held          int `json:"held"`
}

// RolloutStatus is the last rollout: of which revision, how far it got,
// and whether it halted (a halted rollout is not resumed for the same
// revision until failed nodes are retried or a new revision comes).
type RolloutStatus struct {
	Revision string `json:"revision"`
	rollout.Result
	Running bool `json:"running"`
	Done    int  `json:"done"`
	Total   int  `json:"total"`
	// Canaries are the rollout's canary nodes.
	Canaries []string `json:"canaries,omitempty"`
}

// StatusStore keeps the reconciler's status across restarts.
type StatusStore interface {
	LoadStatus(ctx context.Context) (*Status, error)
	SaveStatus(ctx context.Context, s *Status) error
}

// Error classes of a reconcile, for status and metrics.
const (
	FailInvalid = "invalid-commit" // the commit does not validate: stay on the last good one
	FailRewrite = "history-rewrite"
	FailSource  = "source" // transient: fetch failed
	FailTargets = "targets"
	FailApply   = "apply"
	// FailSignature: not signed by a trusted key; never applied.
	FailSignature = "signature"
)

// Historian is implemented by sources with history: the revisions before
// one, newest first.
type Historian interface {
	History(ctx context.Context, rev string, n int) ([]string, error)
}

// DefaultHistoryDepth is how many past revisions rebuild DNS ownership
// when anneal's inventory is empty.
const DefaultHistoryDepth = 20

// Verifier is implemented by sources that check who signed a revision.
type Verifier interface {
	Verify(ctx context.Context, rev string) error
}

// RebuildConfig is what the reconciler needs to rebuild nodes.
type RebuildConfig struct {
	Nodes node.Store
	// BMC returns a node's BMC (cmd resolves credentials against the
	// operator's grants).
	BMC func(node.BMCAccess) (node.BMC, error)
	// Publish hands the netboot servers (HTTP, DHCP) the site to serve:
	// the netboot profile step, before any rebuild.
	Publish func(ctx context.Context, site *schema.Site) error
	// Wake is notified by Report; the rollout waits on it.
	Wake           *rollout.Waker
	InstallTimeout time.Duration
	NetbootTimeout time.Duration
	PollInterval   time.Duration
	Progress       func(rollout.Event)
	// FirmwareEvery is how often each node's firmware is read from its
	// BMC, in the background, for drift against its hardware profile
	// (default DefaultFirmwareEvery; negative: never).
	FirmwareEvery time.Duration
	// ObserveGrace is how long a state with no node records is observed
	// (BMC power of every node, agent reports) before a node without a
	// known build may be rebuilt (default DefaultObserveGrace).
	ObserveGrace time.Duration
	// KeyKept says the netboot key predates this process (a key file that
	// existed, or the operator's --netboot-key): a state found without node
	// records was then lost, not new, and a node that is off may be a
	// built one powered down; rebuilding it waits for approval too.
	KeyKept bool
	// Executed, when set, is told every action of the plan's DAG as it
	// completes (tests compare them with the plan).
	Executed func(revision, action string)
	// AgentSetup renders the files an enrolled machine needs to report as
	// node name with an agent token of generation gen and build id build
	// (the netboot server's; nil: Enroll is refused). See enroll.go.
	AgentSetup func(name, gen, build string) (node.AgentSetup, error)
}

// DefaultObserveGrace is two default agent intervals (5 minutes) and a
// margin.
const DefaultObserveGrace = 11 * time.Minute

// Firmware observation defaults.
const (
	DefaultFirmwareEvery = time.Hour
	// firmwareParallel bounds concurrent BMC inventory reads.
	firmwareParallel = 16
)

// Reconciler is the daemon's heart: a source loop and a reconcile loop.
type Reconciler struct {
	Source Source
	// Targets builds the DNS providers of a site (cmd wires the concrete ones).
	Targets func(*schema.Site) (map[string]dns.Target, error)
	// Secrets are the operator's grants: a revision that names a secret
	// they do not grant, or aims one at an address they do not allow, is
	// invalid (never applied, nothing sent). Nil checks only the form.
	Secrets schema.SecretGrants
	State   interface {
		dns.State
		StatusStore
	}
	Mode            Mode
	Interval        time.Duration
	AllowRewrite    bool
	AllowMassDelete bool
	Log             *slog.Logger
	// Observe, when set, is told about every finished reconcile (metrics).
	Observe func(Status, time.Duration)
	// HistoryDepth bounds the past revisions read to rebuild ownership
	// when the inventory is empty (default DefaultHistoryDepth).
	HistoryDepth int
	// Rebuild, when set, makes the reconciler converge nodes too: netboot
	// profiles and immutable rebuilds. Without it anneal manages DNS only
	// and reports no rebuilds.
	Rebuild *RebuildConfig
	// Events records the history (nil: events are only logged).
	Events *events.Recorder

	hist         history
	firmwareBusy atomic.Bool // a background firmware read is running
	// retries counts the retries of failed nodes; a pass reads it before
	// the node records it plans from. haltRetries is that count as the
	// pass that halted the last rollout read it: a halt holds until a
	// pass plans from records that have a retry made since (one made
	// during a pass, after it read the records, is not in its plan: it
	// lifts the halt for the next pass, never for that one).
	retries     atomic.Uint64
	haltRetries uint64 // read and written by passes only

	mu       sync.Mutex
	status   Status
	plan     *Plan
	goodSite *schema.Site // the last revision that validated
	declared map[string]map[dns.RRsetKey]bool
	rebuilt  bool          // ownership from history was looked at once
	cache    *schema.Cache // parsed files, reused across revisions
	// badRev and badErr remember the newest revision if it did not validate.
	badRev  string
	badErr  error
	trigger chan struct{}
	// consistency keeps each target's consistency index between passes.
	consistency dns.Consistency
	// pl is the one planner; its compile cache lives across passes.
	pl Planner
	// applied is the site at appliedRev, the revision applied last: its
	// policies bound the guards of the next (appliedPolicies).
	applied    *schema.Site
	appliedRev string
	// lastExecuted is the digest of the last plan logged as executing.
	lastExecuted string
	// declaredSite is the site whose declarations were last recorded.
	declaredSite *schema.Site
	// shutdown is Run's ctx.Done(): reconciles run uncancelled (an apply
	// finishes), but a rollout stops starting nodes on it.
	shutdown <-chan struct{}
	once     sync.Once
	// saveMu serializes status saves; each takes its snapshot once it
	// holds it, so the last save written is of the newest status.
	saveMu sync.Mutex
	// bg is the background work (firmware reads): Run waits for it, and
	// bgCtx (Run's ctx, under mu) cancels it, so nothing touches the
	// store once Run has returned.
	bg    sync.WaitGroup
	bgCtx context.Context
	// suspendSaving, in tests, is called by SetSuspended between setting
	// the flag and saving it.
	suspendSaving func()
}

func (r *Reconciler) init() {
	r.once.Do(func() { r.trigger = make(chan struct{}, 1) })
}

// Trigger asks for a reconcile now (webhook, API, file watcher).
func (r *Reconciler) Trigger() {
	r.init()
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// SetSuspended suspends or resumes reconciling.
func (r *Reconciler) SetSuspended(ctx context.Context, v bool) error {
	r.mu.Lock()
	was := r.status.Suspended
	r.status.Suspended = v
	r.mu.Unlock()
	if was != v {
		r.noteSuspended(ctx, v)
	}
	if r.suspendSaving != nil {
		r.suspendSaving()
	}
	_, err := r.saveStatus(ctx)
	return err
}

// saveStatus persists the status as it is when the save starts. Saves
// are serialized and each snapshots under the save lock, so a pass that
// finishes as SetSuspended runs cannot write its older copy of the status
// (suspended=false) after the suspend was saved.
func (r *Reconciler) saveStatus(ctx context.Context) (Status, error) {
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	st := r.Status()
	return st, r.State.SaveStatus(ctx, &st)
}

// Status returns the current status.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	if st.Rollout != nil { // the live rollout changes under the lock
		ro := *st.Rollout
		st.Rollout = &ro
	}
	return st
}

// LastPlan returns the last computed plan (the drift), or nil.
func (r *Reconciler) LastPlan() *Plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.plan
}

// Site returns the site being converged (the last good), or nil.
func (r *Reconciler) Site() *schema.Site {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.goodSite
}

// Run reconciles at every interval and trigger until ctx ends. An
// in-flight reconcile finishes (or is journaled) before Run returns, and
// background firmware reads are cancelled and waited for: once Run has
// returned, nothing it started uses the store.
func (r *Reconciler) Run(ctx context.Context) error {
	r.init()
	st, err := r.State.LoadStatus(ctx)
	if err != nil {
		return fmt.Errorf("load status: %w", err)
	}
	r.mu.Lock()
	if st != nil {
		r.status = *st
	}
	r.status.Mode = r.Mode
	r.shutdown = ctx.Done()
	r.bgCtx = ctx
	r.mu.Unlock()
	defer r.bg.Wait()
	tick := time.NewTicker(r.Interval)
	defer tick.Stop()
	for {
		// A shutdown lets the reconcile in flight finish: its writes are
		// journaled as they commit either way.
		r.ReconcileOnce(context.WithoutCancel(ctx))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.trigger:
		}
	}
}

// ReconcileOnce runs the steps once: guards, fetch, history check,
// validate, plan, apply, then one status write.
func (r *Reconciler) ReconcileOnce(ctx context.Context) {
	start := time.Now()
	r.mu.Lock()
	st := r.status
	r.mu.Unlock()
	if st.Suspended {
		return
	}
	st.Steps = map[string]float64{}
	class, err := r.steps(ctx, &st)
	st.LastReconcile = start.UTC()
	st.LastDurationSeconds = time.Since(start).Seconds()
	st.Reconciles++
	st.LastError, st.LastErrorClass = "", ""
	if err != nil {
		st.Failures++
		st.LastError, st.LastErrorClass = err.Error(), class
	}
	r.passFailed(ctx, &st, class, err)
	r.mu.Lock()
	st.Suspended = r.status.Suspended // a suspend during the run wins
	// Approvals are kept in r.status by gate and Approve (which may run
	// during the pass): theirs win.
	st.Approved, st.PendingApproval = r.status.Approved, r.status.PendingApproval
	r.status = st
	r.mu.Unlock()
	if _, serr := r.saveStatus(context.WithoutCancel(ctx)); serr != nil {
		r.log().Error("save status", "err", serr)
	}
	if r.Observe != nil {
		r.Observe(st, time.Since(start))
	}
}

func (r *Reconciler) steps(ctx context.Context, st *Status) (string, error) {
	t0 := time.Now()
	rev, err := r.Source.Latest(ctx)
	if err != nil {
		return FailSource, fmt.Errorf("fetch: %w", err)
	}
	st.Steps["fetch"] = time.Since(t0).Seconds()
	r.noteSeen(ctx, st.LastAttemptedRevision, rev)
	st.LastAttemptedRevision = rev.ID
	if st.AppliedRevision != "" && rev.ID != st.AppliedRevision && !r.AllowRewrite {
		ok, err := r.Source.Descends(st.AppliedRevision, rev.ID)
		if err != nil {
			return FailSource, fmt.Errorf("history check: %w", err)
		}
		if !ok {
			err := fmt.Errorf("refusing revision %s: it does not descend from the applied revision %s (a force-push rewrote applied history; run with --allow-rewrite to accept it)", rev.ID, st.AppliedRevision)
			r.noteRefused(ctx, rev.ID, FailRewrite, "rewrites applied history", err)
			return FailRewrite, refusedError{err}
		}
	}
	badClass := FailInvalid
	if rev.ID != st.LastGoodRevision && rev.ID != r.badRev || r.goodSite == nil && rev.ID == st.LastGoodRevision {
		var site *schema.Site
		t0 := time.Now()
		err := r.verify(ctx, rev.ID)
		if err == nil {
			site, err = r.load(ctx, rev.ID)
		}
		st.Steps["load"] = time.Since(t0).Seconds()
		var inv *schema.InvalidError
		var sig *SignatureError
		switch {
		case errors.As(err, &sig):
			r.badRev, r.badErr = rev.ID, err
		case errors.As(err, &inv):
			r.badRev, r.badErr = rev.ID, err
		case err != nil:
			return FailSource, err
		default:
			r.badRev, r.badErr = "", nil
			r.mu.Lock()
			r.goodSite = site
			r.mu.Unlock()
			r.noteValidated(ctx, st.LastGoodRevision, rev.ID)
			st.LastGoodRevision = rev.ID
		}
	}
	if r.badRev == rev.ID {
		what := "does not validate"
		if errors.As(r.badErr, new(*SignatureError)) {
			badClass, what = FailSignature, "is not signed by a trusted key"
		}
		r.noteRefused(ctx, rev.ID, badClass, what, r.badErr)
		// Stay on the last good commit: keep converging it.
		if err := r.loadGood(ctx, st); err != nil {
			return badClass, fmt.Errorf("revision %s %s (%v), and the last good revision could not be loaded: %w", rev.ID, what, r.badErr, err)
		}
		if class, err := r.converge(ctx, st, r.goodSite, st.LastGoodRevision); err != nil {
			return class, fmt.Errorf("revision %s %s: %v; converging the last good revision %s also failed: %w", rev.ID, what, r.badErr, st.LastGoodRevision, err)
		}
		return badClass, refusedError{fmt.Errorf("revision %s %s; staying on %s: %w", rev.ID, what, st.LastGoodRevision, r.badErr)}
	}
	return r.converge(ctx, st, r.goodSite, rev.ID)
}

// rebuildOwnership, once per process and only when anneal's inventory is
// empty for every zone, unions the RRsets the site declared in its recent
// history: ownership derived from the site survives the loss of the state.
func (r *Reconciler) rebuildOwnership(ctx context.Context, site *schema.Site, rev string, lost bool) {
	if r.rebuilt {
		return
	}
	r.rebuilt = true
	h, ok := r.Source.(Historian)
	if !ok {
		return
	}
	desired, err := dns.Compile(site)
	if err != nil {
		return // the plan reports it
	}
	for _, tz := range desired.Targets {
		for _, zone := range tz.Zones {
			inv, err := r.State.OwnedRRsets(ctx, tz.Target, zone)
			if err != nil || len(inv) > 0 {
				return
			}
		}
	}
	revs, err := h.History(ctx, rev, cmp.Or(r.HistoryDepth, DefaultHistoryDepth))
	if err != nil {
		r.log().Warn("ownership from history: cannot list history", "err", err)
		return
	}
	declared := map[string]map[dns.RRsetKey]bool{}
	add := func(d *dns.Desired) {
		for _, z := range d.Zones {
			if declared[z.Zone] == nil {
				declared[z.Zone] = map[dns.RRsetKey]bool{}
			}
			for _, s := range z.RRsets {
				declared[z.Zone][s.Key()] = true
			}
		}
	}
	add(desired)
	read := 0
	// Nodes the history declares that the site no longer does: anneal
	// may have lost their decommission with its state. Each gets the
	// newest declaration of it, so that its names are not deleted while
	// it may still run, and its decommission waits for approval.
	departed := map[string]*node.Declared{}
	for _, past := range revs {
		old, err := r.load(ctx, past)
		if err != nil {
			continue // an invalid past commit declared nothing anneal applied
		}
		d, err := dns.Compile(old)
		if err != nil {
			continue
		}
		add(d)
		read++
		if r.Rebuild == nil || !lost {
			continue // a new state: nodes removed before it were never anneal's
		}
		var gone []*schema.Node
		for _, n := range old.Nodes {
			if n.Exists() && site.Node(n.Name) == nil && departed[n.Name] == nil {
				gone = append(gone, n)
			}
		}
		maps.Copy(departed, node.DeclaredOf(old, gone, past))
	}
	r.declared = declared
	if len(departed) > 0 {
		r.recordDeparted(ctx, departed)
	}
	// Recorded, so that anneal plan on this state (or a backup of it),
	// and this daemon after a restart, plan from the same ownership.
	recorded := 0
	for _, tz := range desired.Targets {
		for _, zone := range tz.Zones {
			keys := slices.SortedFunc(maps.Keys(declared[zone]), func(a, b dns.RRsetKey) int { return strings.Compare(a.String(), b.String()) })
			if len(keys) == 0 {
				continue
			}
			if err := r.State.RecordOwned(ctx, tz.Target, zone, keys, nil); err != nil {
				r.log().Warn("ownership from history: record it", "target", tz.Target, "zone", zone, "err", err)
				continue
			}
			recorded += len(keys)
		}
	}
	r.log().Info("no ownership inventory: rebuilt it from the site's history", "revisions", read+1, "rrsets", recorded)
}

// recordDeparted writes, for nodes the site's history declares and anneal
// has no record of, their newest declaration, marked unobserved.
func (r *Reconciler) recordDeparted(ctx context.Context, departed map[string]*node.Declared) {
	records, err := r.Rebuild.Nodes.NodeRecords(ctx)
	if err != nil {
		r.log().Warn("departed nodes from history: read records", "err", err)
		return
	}
	var names []string
	for name := range departed {
		if records[name] == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	err = updateNodes(ctx, r.Rebuild.Nodes, names, func(rec *node.Record) error {
		rec.Declared, rec.Unobserved = departed[rec.Name], true
		return nil
	})
	if err != nil {
		r.log().Warn("departed nodes from history: record them", "err", err)
		return
	}
	if len(names) == 0 {
		return
	}
	// Their power, as for the nodes of the site: one found off is simply
	// retired; one that is on waits for approval.
	access := map[string]node.BMCAccess{}
	for _, name := range names {
		access[name] = departed[name].Access(name)
	}
	var nodes []*schema.Node
	for _, name := range names {
		nodes = append(nodes, node.StandIn(&node.Record{Name: name, Declared: departed[name]}))
	}
	r.observePowerOf(ctx, nodes, func(n *schema.Node) (node.BMC, error) { return r.Rebuild.BMC(access[n.Name]) })
	r.log().Warn("nodes the site's history declares and the site no longer does (the state was lost): one found off is retired, one that is on waits for approval", "nodes", summarize(names))
}

// SignatureError refuses a revision the source's verifier rejected.
type SignatureError struct{ Err error }

func (e *SignatureError) Error() string { return e.Err.Error() }
func (e *SignatureError) Unwrap() error { return e.Err }

// verify checks a revision's signature when the source can.
func (r *Reconciler) verify(ctx context.Context, rev string) error {
	v, ok := r.Source.(Verifier)
	if !ok {
		return nil
	}
	if err := v.Verify(ctx, rev); err != nil {
		return &SignatureError{Err: err}
	}
	return nil
}

func (r *Reconciler) load(ctx context.Context, rev string) (*schema.Site, error) {
	fsys, err := r.Source.FS(ctx, rev)
	if err != nil {
		return nil, err
	}
	if r.cache == nil {
		r.cache = schema.NewCache()
	}
	site, _, err := schema.Load(ctx, fsys, schema.LoadOptions{Cache: r.cache, Secrets: r.Secrets})
	return site, err
}

func (r *Reconciler) loadGood(ctx context.Context, st *Status) error {
	if r.goodSite != nil {
		return nil
	}
	if st.LastGoodRevision == "" {
		return errors.New("there is none yet")
	}
	site, err := r.load(ctx, st.LastGoodRevision)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.goodSite = site
	r.mu.Unlock()
	return nil
}

// converge plans a site with the one planner and, in converge mode,
// executes the plan's actions, layer by layer: addresses and DNS, then the
// netboot profiles, then the rebuilds and decommissions (each node
// verified before it rejoins its groups). A plan with guards waits for
// its approval.
func (r *Reconciler) converge(ctx context.Context, st *Status, site *schema.Site, rev string) (string, error) {
	rb := r.Rebuild
	if rb != nil {
		if err := r.prepareNodes(ctx, st, site, rev); err != nil {
			return FailApply, err
		}
	}
	targets, err := r.Targets(site)
	if err != nil {
		return FailTargets, err
	}
	r.rebuildOwnership(ctx, site, rev, st.ObserveLost)
	r.pl.Targets, r.pl.State, r.pl.Log, r.pl.Declared, r.pl.Consistency = targets, r.State, r.Log, r.declared, &r.consistency
	r.pl.Nodes = nil
	if rb != nil {
		r.pl.Nodes = rb.Nodes
	}
	var records map[string]*node.Record
	var retries uint64
	if rb != nil {
		// The retries the records have (or more: a retry writes the
		// record, then counts).
		retries = r.retries.Load()
		// Read once: the plan and the firmware reads both use them.
		if records, err = rb.Nodes.NodeRecords(ctx); err != nil {
			return FailApply, fmt.Errorf("read node records: %w", err)
		}
	}
	t0 := time.Now()
	in := PlanInput{Site: site, Source: rev, Now: time.Now(), ObserveUntil: st.ObserveUntil, ObserveLost: st.ObserveLost,
		Records: records, Applied: r.appliedPolicies(ctx, st)}
	plan, desired, err := r.pl.Plan(ctx, in)
	st.Steps["plan"] = time.Since(t0).Seconds()
	if err != nil {
		var pe *PlanError
		if errors.As(err, &pe) {
			return pe.Class, err
		}
		return FailApply, err
	}
	if rb != nil {
		r.observeFirmware(ctx, site, records)
	}
	c, u, d, conf := plan.Counts()
	st.Drift = Drift{Creates: c, Updates: u, Deletes: d, Conflicts: conf, Failures: len(plan.DNS.Failures)}
	if plan.Rebuilds != nil {
		st.Drift.Rebuilds, st.Drift.Decommissions, st.Drift.Held = len(plan.Rebuilds.Rebuilds), len(plan.Rebuilds.Decommission), len(plan.Rebuilds.Held)
	}
	r.mu.Lock()
	r.plan = plan
	r.mu.Unlock()
	r.notePlan(ctx, rev, plan, st.Drift)
	if r.Mode == ModeReport {
		// Nothing is armed in report mode: the netboot server only needs
		// the site to answer boot-from-disk and to take agent reports.
		if rb != nil && rb.Publish != nil {
			if err := rb.Publish(ctx, site); err != nil {
				return FailApply, fmt.Errorf("netboot profiles: %w", err)
			}
		}
		if plan.HasFailures() {
			return FailTargets, fmt.Errorf("%d DNS target(s) or zone(s) could not be read", len(plan.DNS.Failures))
		}
		return "", nil
	}
	approved, wait := r.gate(st, rev, plan)
	r.flush(ctx) // the approval pending, once per plan
	if wait {
		// Nothing of the plan runs, but the netboot server keeps serving
		// the applied site (boot from disk, the installs in flight, the
		// agents' reports; on a fresh state, the new site, so that the
		// fleet can be heard from while it waits).
		if rb != nil && rb.Publish != nil {
			serve := site
			if r.applied != nil {
				serve = r.applied
			}
			if err := rb.Publish(ctx, serve); err != nil {
				return FailApply, fmt.Errorf("netboot profiles: %w", err)
			}
		}
		return "", nil
	}
	dp := plan.DNS
	if len(plan.Actions) > 1 { // more than the addresses: something to do
		if r.lastExecuted != plan.Digest {
			r.lastExecuted = plan.Digest
			r.log().Info("executing the plan", "revision", rev, "plan", shortDigest(plan.Digest), "actions", len(plan.Actions))
		}
		r.executed(rev, ActAddresses)
	}
	if dp.HasChanges() || dp.Interrupted != nil {
		t0 := time.Now()
		err := r.applyPlanDNS(ctx, targets, dp, desired, rev, approved)
		st.Steps["apply"] = time.Since(t0).Seconds()
		if err != nil {
			return FailApply, err
		}
	}
	if plan.HasFailures() {
		return FailTargets, fmt.Errorf("%d DNS target(s) or zone(s) could not be read: %s", len(dp.Failures), dp.Failures[0].Error)
	}
	if rb != nil {
		if class, err := r.rollout(ctx, st, site, rev, targets, plan.Rebuilds, approved, retries); err != nil {
			if changedBy(plan) {
				r.replan(ctx, st, in) // the drift the halt left
			}
			return class, err
		}
	}
	applied := st.Drift // what this pass's plan changed, for its event
	if changedBy(plan) {
		r.replan(ctx, st, in) // the drift is the drift now, not the plan applied
	}
	if rev == st.LastGoodRevision {
		if st.AppliedRevision != rev {
			r.noteApplied(ctx, rev, plan, applied)
		}
		st.AppliedRevision, st.LastApplied = rev, time.Now().UTC()
		r.applied, r.appliedRev = site, rev
	}
	return "", nil
}

// appliedPolicies are the policies of the revision applied last, loaded
// once per process (nil when there is none, or it cannot be loaded).
func (r *Reconciler) appliedPolicies(ctx context.Context, st *Status) *schema.Policies {
	if st.AppliedRevision == "" {
		return nil
	}
	if r.appliedRev != st.AppliedRevision {
		site, err := r.load(ctx, st.AppliedRevision)
		if err != nil {
			r.log().Warn("the applied revision's policies cannot be read; guards use the new revision's alone", "revision", st.AppliedRevision, "err", err)
			r.appliedRev = st.AppliedRevision
			r.applied = nil
			return nil
		}
		r.applied, r.appliedRev = site, st.AppliedRevision
	}
	if r.applied == nil {
		return nil
	}
	return &r.applied.Config.Policies
}

// gate decides whether plan may run. A plan without guards runs. One with
// guards runs if its revision's approval allows it (that exact plan, or a
// started approved plan that covered what it guards); otherwise it waits,
// published in the status as pendingApproval and logged once per plan.
// approved says the guards were approved (the DNS apply may then delete
// past dnsMassDeletePercent).
func (r *Reconciler) gate(st *Status, rev string, plan *Plan) (approved, wait bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.status.Approved // Approve may have run during this pass
	guards := plan.Guards
	if r.AllowMassDelete {
		guards = slices.DeleteFunc(slices.Clone(guards), func(g Guard) bool { return g.Kind == GuardDNSMassDelete })
	}
	if len(guards) == 0 {
		st.PendingApproval = nil
		r.status.PendingApproval = nil
		if cur != nil && cur.Revision == rev && cur.Started {
			// The approved plan is done: nothing of it is left to cover
			// a later plan of this revision.
			r.status.Approved = nil
			st.Approved = nil
		}
		return false, false
	}
	if cur.Allows(rev, plan) {
		if !cur.Started {
			a := *cur
			a.Started = true
			r.status.Approved = &a
			r.log().Info("executing the approved plan", "revision", rev, "plan", shortDigest(plan.Digest))
		}
		st.Approved, st.PendingApproval = r.status.Approved, nil
		r.status.PendingApproval = nil
		return true, false
	}
	prev := r.status.PendingApproval
	if prev == nil || prev.Revision != rev || prev.PlanDigest != plan.Digest {
		reasons := guardReasons(guards)
		r.status.PendingApproval = &Approval{Revision: rev, PlanDigest: plan.Digest, Reasons: reasons, Items: guardItems(guards), Since: time.Now().UTC()}
		r.queue(pendingEvent(r.status.PendingApproval))
	}
	st.PendingApproval = r.status.PendingApproval
	return false, true
}

func shortDigest(d string) string { return d[:min(len(d), 12)] }

// Approve approves the plan that awaits approval: revision (a full id or a
// prefix of at least 7 characters) and planDigest (full, or a prefix of
// at least 12) must name it. The next pass runs that plan; a different
// plan of the same revision waits for a new approval.
func (r *Reconciler) Approve(ctx context.Context, revision, planDigest string) (*Approval, error) {
	r.mu.Lock()
	p := r.status.PendingApproval
	switch {
	case p == nil:
		r.mu.Unlock()
		return nil, ErrNothingToApprove
	case !matchPrefix(p.Revision, revision, 7):
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: revision %s does not await approval; %s does (plan %s)", ErrNotPending, revision, p.Revision, shortDigest(p.PlanDigest))
	case planDigest != "" && !matchPrefix(p.PlanDigest, planDigest, 12):
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: plan %s is not the plan of revision %s that awaits approval, %s (a digest mistyped, or the live state changed since the plan was shown: review it again)", ErrNotPending, planDigest, p.Revision, shortDigest(p.PlanDigest))
	}
	a := *p
	a.At = time.Now().UTC()
	prevApproved := r.status.Approved
	r.status.Approved, r.status.PendingApproval = &a, nil
	r.mu.Unlock()
	if _, err := r.saveStatus(ctx); err != nil {
		// Not recorded: not approved (a restart would not know it).
		r.mu.Lock()
		if r.status.Approved == &a {
			r.status.Approved, r.status.PendingApproval = prevApproved, p
		}
		r.mu.Unlock()
		return nil, fmt.Errorf("record the approval: %w", err)
	}
	r.noteApproved(ctx, &a)
	r.Trigger()
	return &a, nil
}

func matchPrefix(full, given string, minLen int) bool {
	return given == full || len(given) >= minLen && strings.HasPrefix(full, given)
}

// executed reports one action of the plan's DAG as done.
func (r *Reconciler) executed(rev, action string) {
	r.mu.Lock()
	digest := ""
	if r.plan != nil {
		digest = shortDigest(r.plan.Digest)
	}
	r.mu.Unlock()
	r.log().Info("plan action done", "revision", rev, "plan", digest, "action", action)
	if rb := r.Rebuild; rb != nil && rb.Executed != nil {
		rb.Executed(rev, action)
	}
}

// prepareNodes keeps the node records in step with the site before a
// plan: a state with no node records starts an observation (BMC power of
// every node, agent reports, for ObserveGrace), and every node the site
// declares gets its declaration recorded (BMC, rack, own names), so that
// it can be decommissioned if it leaves the site.
func (r *Reconciler) prepareNodes(ctx context.Context, st *Status, site *schema.Site, rev string) error {
	rb := r.Rebuild
	if r.declaredSite == site {
		return nil
	}
	records, err := rb.Nodes.NodeRecords(ctx)
	if err != nil {
		return fmt.Errorf("read node records: %w", err)
	}
	// A state with no node records, or one whose observation was cut
	// short (records written, power never read).
	fresh := len(records) == 0
	if !fresh && st.ObserveUntil.IsZero() {
		for _, rec := range records {
			if rec.Unobserved && rec.PowerAt.IsZero() {
				fresh = true
				break
			}
		}
	}
	var nodes []*schema.Node
	for _, n := range site.Nodes {
		if n.Exists() || records[n.Name] != nil {
			nodes = append(nodes, n)
		}
	}
	declared := node.DeclaredOf(site, nodes, rev)
	changed := map[string]*node.Declared{}
	for name, d := range declared {
		if rec := records[name]; rec == nil || !node.SameDeclared(rec.Declared, d) {
			changed[name] = d
		}
	}
	if fresh && len(nodes) > 0 && len(records) == 0 {
		st.ObserveLost = rb.KeyKept
	}
	err = updateNodes(ctx, rb.Nodes, slices.Sorted(maps.Keys(changed)), func(rec *node.Record) error {
		rec.Declared = changed[rec.Name]
		if fresh {
			rec.Unobserved = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record node declarations: %w", err)
	}
	if fresh && len(nodes) > 0 {
		r.observePower(ctx, site, nodes)
		grace := cmp.Or(rb.ObserveGrace, DefaultObserveGrace)
		st.ObserveUntil = time.Now().Add(grace).UTC()
		r.log().Warn("the state has no node records (lost, or new): observing the fleet before any rebuild; a node reporting its desired build is adopted",
			"nodes", len(nodes), "until", st.ObserveUntil.Format(time.RFC3339), "lost", st.ObserveLost)
	}
	r.declaredSite = site
	return nil
}

// powerReadTimeout bounds one BMC power read of the observation.
const powerReadTimeout = 10 * time.Second

// observePower reads every node's power from its BMC (bounded
// parallelism, each read bounded) into its record: a node that is off
// and was never built may be installed; one that is on and silent runs
// something nobody can vouch for, and rebuilding it waits for approval.
func (r *Reconciler) observePower(ctx context.Context, site *schema.Site, nodes []*schema.Node) {
	var exist []*schema.Node
	for _, n := range nodes {
		if n.Exists() {
			exist = append(exist, n)
		}
	}
	r.observePowerOf(ctx, exist, func(n *schema.Node) (node.BMC, error) { return r.bmcOf(site, n, nil) })
}

// observePowerOf reads nodes' power through bmcOf into their records.
func (r *Reconciler) observePowerOf(ctx context.Context, nodes []*schema.Node, bmcOf func(*schema.Node) (node.BMC, error)) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(firmwareParallel)
	var mu sync.Mutex
	seen := map[string]node.PowerState{}
	for _, n := range nodes {
		g.Go(func() error {
			state := node.PowerUnknown
			bmc, err := bmcOf(n)
			if err == nil {
				rctx, cancel := context.WithTimeout(gctx, powerReadTimeout)
				state, err = bmc.PowerState(rctx)
				cancel()
			}
			if err != nil {
				state = node.PowerUnknown
				r.log().Warn("observe: power not read", "node", n.Name, "err", err)
			}
			mu.Lock()
			seen[n.Name] = state
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait() // every read reports its own error
	at := time.Now()
	err := updateNodes(ctx, r.Rebuild.Nodes, slices.Sorted(maps.Keys(seen)), func(rec *node.Record) error {
		rec.Power, rec.PowerAt = seen[rec.Name], at
		return nil
	})
	if err != nil {
		r.log().Warn("observe: record power", "err", err)
	}
	on := 0
	for _, p := range seen {
		if p == node.PowerOn {
			on++
		}
	}
	r.log().Info("observe: BMC power read", "nodes", len(seen), "on", on)
}

func updateNodes(ctx context.Context, s node.Store, names []string, fn func(*node.Record) error) error {
	if len(names) == 0 {
		return nil
	}
	if b, ok := s.(node.Batch); ok {
		return b.UpdateNodes(ctx, names, fn)
	}
	for _, name := range names {
		if err := s.UpdateNode(ctx, name, fn); err != nil {
			return err
		}
	}
	return nil
}

// observeFirmware reads, in the background and with bounded parallelism,
// the firmware of every node whose last reading is older than
// FirmwareEvery, into its record; the next plan reports drift. A BMC that
// does not answer or has no inventory (IPMI) is logged and retried at the
// next interval. The reads belong to Run: its ctx cancels them (a read
// cut short is not recorded) and it waits for them before returning.
func (r *Reconciler) observeFirmware(ctx context.Context, site *schema.Site, records map[string]*node.Record) {
	rb := r.Rebuild
	every := cmp.Or(rb.FirmwareEvery, DefaultFirmwareEvery)
	if every < 0 || !r.firmwareBusy.CompareAndSwap(false, true) {
		return
	}
	now := time.Now()
	var due []*schema.Node
	for _, n := range site.Nodes {
		if rec := records[n.Name]; n.Exists() && (rec == nil || now.Sub(rec.FirmwareAt) >= every) {
			due = append(due, n)
		}
	}
	if len(due) == 0 {
		r.firmwareBusy.Store(false)
		return
	}
	r.mu.Lock()
	if r.bgCtx != nil {
		ctx = r.bgCtx // the pass's ctx outlives a shutdown; the reads must not
	}
	r.mu.Unlock()
	r.bg.Go(func() {
		defer r.firmwareBusy.Store(false)
		sem := make(chan struct{}, firmwareParallel)
		var wg sync.WaitGroup
		defer wg.Wait()
		for _, n := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				bmc, err := r.bmcOf(site, n, nil)
				var fw node.Firmware
				if err == nil {
					fw, err = bmc.Firmware(ctx)
				}
				if ctx.Err() != nil {
					return // shutting down: read again at the next start
				}
				at := time.Now()
				uerr := rb.Nodes.UpdateNode(ctx, n.Name, func(rec *node.Record) error {
					rec.FirmwareAt = at // a failed read waits for the next interval too
					if err == nil {
						rec.Firmware = &fw
					}
					return nil
				})
				if err != nil {
					r.log().Debug("firmware not read", "node", n.Name, "err", err)
				} else if uerr != nil {
					r.log().Warn("record firmware", "node", n.Name, "err", uerr)
				}
			})
		}
	})
}

// rollout publishes the netboot profiles and runs the rebuilds. retries
// is the count of retries read before the records rp was planned from.
func (r *Reconciler) rollout(ctx context.Context, st *Status, site *schema.Site, rev string, targets map[string]dns.Target, rp *rollout.RebuildPlan, approved bool, retries uint64) (string, error) {
	rb := r.Rebuild
	if rb.Publish != nil {
		if err := rb.Publish(ctx, site); err != nil {
			return FailApply, fmt.Errorf("netboot profiles: %w", err)
		}
	}
	if rp.Count() > 0 {
		r.executed(rev, ActNetboot)
	}
	departed := map[string]node.BMCAccess{}
	if len(rp.Removed) > 0 {
		recs, err := rb.Nodes.NodeRecords(ctx)
		if err != nil {
			return FailApply, err
		}
		for _, name := range rp.Removed {
			if rec := recs[name]; rec != nil && rec.Declared != nil {
				departed[name] = rec.Declared.Access(name)
			}
		}
	}
	if rp.Count() > 0 {
		// A halted rollout of this revision holds until a retry made
		// since it halted is in the records rp was planned from.
		if ro := st.Rollout; ro != nil && ro.Revision == rev && ro.Halted != "" && retries <= r.haltRetries {
			// The halt's events (rollout.halted, apply.failed) were
			// stated by the pass that halted: not again.
			return FailApply, refusedError{fmt.Errorf("the rollout of %s halted (%s); retry the failed nodes (anneal nodes retry NAME, or POST /api/v1/nodes/NAME/retry) or push a fix", rev, ro.Halted)}
		}
		t0 := time.Now()
		var canaries []string
		for _, n := range rp.Rebuilds {
			if n.Canary {
				canaries = append(canaries, n.Node)
			}
		}
		live := &RolloutStatus{Revision: rev, Running: true, Total: len(rp.Rebuilds), Canaries: canaries}
		r.setRollout(live)
		ro := &rollout.Engine{Site: site, Nodes: rb.Nodes, Wake: rb.Wake, InstallTimeout: rb.InstallTimeout, NetbootTimeout: rb.NetbootTimeout, PollInterval: rb.PollInterval, Log: r.Log, ProgressLogs: true,
			BMC:     func(n *schema.Node) (node.BMC, error) { return r.bmcOf(site, n, departed) },
			SyncDNS: func(ctx context.Context) error { return r.syncDNS(ctx, site, targets, rev, approved) },
			Progress: func(e rollout.Event) {
				r.nodeStep(ctx, rev, e)
				for _, a := range e.Actions() {
					r.executed(rev, a)
				}
				if e.Total > 0 {
					r.mu.Lock()
					if r.status.Rollout != nil {
						r.status.Rollout.Done = e.Done
					}
					r.mu.Unlock()
				}
				if rb.Progress != nil {
					rb.Progress(e)
				}
			}}
		rctx, stop := r.rolloutContext(ctx, rev)
		res, err := ro.Run(rctx, rp)
		stop()
		if err != nil && context.Cause(rctx) != nil && ctx.Err() == nil {
			err = fmt.Errorf("stopped: %w; in-flight rebuilds resume from their records", context.Cause(rctx))
		}
		st.Steps["rollout"] = time.Since(t0).Seconds()
		if res != nil && len(res.Verified) > 0 {
			r.executed(rev, ActDNSRejoin)
		}
		r.noteHalted(ctx, rev, res)
		if res != nil {
			r.haltRetries = retries
			st.Rollout = &RolloutStatus{Revision: rev, Result: *res, Done: len(res.Verified) + len(res.Failed), Total: len(rp.Rebuilds), Canaries: canaries}
		}
		if err != nil {
			return FailApply, fmt.Errorf("rollout of %s: %w", rev, err)
		}
		if err := res.Err(); err != nil {
			return FailApply, fmt.Errorf("rollout of %s: %w", rev, err)
		}
	}
	var failed []string
	for _, h := range rp.Held {
		if h.Failed {
			failed = append(failed, h.Node)
		}
	}
	if len(failed) > 0 {
		// Each failure was stated as its node's failed step.
		return FailApply, refusedError{fmt.Errorf("%d node(s) failed their rebuild and are held: %s; retry them with anneal nodes retry NAME", len(failed), strings.Join(failed, ", "))}
	}
	return "", nil
}

// rolloutContext bounds a rollout: it stops (no new node starts; nodes
// installing keep their records and resume on the next pass) when the
// daemon shuts down, when reconciling is suspended, or when a newer
// revision arrives (a revert must not wait for a long rollout to end).
func (r *Reconciler) rolloutContext(ctx context.Context, rev string) (context.Context, func()) {
	rctx, cancel := context.WithCancelCause(ctx)
	every := max(cmp.Or(r.Interval, 30*time.Second), time.Second)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-r.shutdown:
				cancel(errors.New("the daemon is shutting down"))
				return
			case <-t.C:
			}
			if r.Status().Suspended {
				cancel(errors.New("reconciling was suspended"))
				return
			}
			if latest, err := r.Source.Latest(rctx); err == nil && latest.ID != rev {
				cancel(fmt.Errorf("superseded by revision %s", latest.ID))
				return
			}
		}
	}()
	return rctx, func() { cancel(nil) }
}

func (r *Reconciler) setRollout(ro *RolloutStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Rollout = ro
}

// syncDNS converges DNS to the site with the node records' availability:
// the rollout calls it so that nodes leave their groups before they go
// down and rejoin once verified.
func (r *Reconciler) syncDNS(ctx context.Context, site *schema.Site, targets map[string]dns.Target, rev string, approved bool) error {
	recs, err := r.Rebuild.Nodes.NodeRecords(ctx)
	if err != nil {
		return err
	}
	desired, err := r.pl.Compile(site, rollout.AvailabilityOf(site, recs))
	if err != nil {
		return err
	}
	planner := dns.Planner{Targets: targets, State: r.State, Log: r.Log, Declared: r.declared, Consistency: &r.consistency}
	dp, err := planner.Plan(ctx, desired)
	if err != nil {
		return err
	}
	if len(dp.Failures) > 0 {
		return fmt.Errorf("DNS target %s: %s", dp.Failures[0].Target, dp.Failures[0].Error)
	}
	if !dp.HasChanges() {
		return nil
	}
	return r.applyDNS(ctx, targets, dp, desired, rev, approved)
}

// applyDNS applies a DNS plan; a zone that failed fails it.
func (r *Reconciler) applyDNS(ctx context.Context, targets map[string]dns.Target, dp *dns.Plan, desired *dns.Desired, rev string, approved bool) error {
	applier := dns.Applier{Targets: targets, State: r.State, Log: r.Log}
	res, err := applier.Apply(ctx, dp, desired, dns.ApplyOptions{AllowMassDelete: r.AllowMassDelete || approved, Revision: rev})
	if err != nil {
		return err
	}
	r.dnsWritten(ctx, rev, res)
	if res.Failed() {
		return fmt.Errorf("apply of %s: %s", rev, firstFailure(res))
	}
	return nil
}

// applyPlanDNS applies the plan's DNS layer and reports each zone's
// action done.
func (r *Reconciler) applyPlanDNS(ctx context.Context, targets map[string]dns.Target, dp *dns.Plan, desired *dns.Desired, rev string, approved bool) error {
	if err := r.applyDNS(ctx, targets, dp, desired, rev, approved); err != nil {
		return err
	}
	for _, z := range dp.Zones {
		if len(z.Changes) > 0 {
			r.executed(rev, "dns:"+z.Target+"/"+z.Zone)
		}
	}
	return nil
}

// bmcOf is n's BMC: from the site, or for a node that left it, from its
// record's declaration.
func (r *Reconciler) bmcOf(site *schema.Site, n *schema.Node, departed map[string]node.BMCAccess) (node.BMC, error) {
	if site.Node(n.Name) == nil {
		a, ok := departed[n.Name]
		if !ok {
			return nil, fmt.Errorf("node %s left the site and anneal does not know its BMC", n.Name)
		}
		return r.Rebuild.BMC(a)
	}
	a, err := node.AccessOf(site, n)
	if err != nil {
		return nil, err
	}
	return r.Rebuild.BMC(a)
}

// Report takes a node's report (already stored by the netboot server):
// it wakes a rollout waiting on the node, and adopts a node anneal never
// built whose agent reports the desired build with matching facts.
func (r *Reconciler) Report(ctx context.Context, rep node.Report) {
	rb := r.Rebuild
	if rb == nil {
		return
	}
	rb.Wake.Notify(rep.Node)
	site := r.Site()
	if site == nil || rep.Kind != node.ReportAgent {
		return
	}
	n := site.Node(rep.Node)
	if n == nil || !n.Exists() {
		return
	}
	spec := node.BuildSpecOf(site, n)
	if why := adoptionRefused(spec, rep); why != "" {
		r.notAdopted(ctx, rep.Node, why) // an enrolled node shows why (enroll.go)
		return
	}
	now := time.Now()
	adopted, enrolled := false, false
	err := rb.Nodes.UpdateNode(ctx, rep.Node, func(rec *node.Record) error {
		// A revoke or re-enroll between the report's token check and
		// here wins: a report made with a token no longer valid adopts
		// nothing.
		if rec.State == node.Unknown && rec.AgentGen == rep.AgentGen {
			rec.State, rec.Since, rec.BuildID, rec.Spec, rec.BuiltAt = node.Verified, now, spec.ID(), &spec, now
			rec.Unobserved, rec.Reason = false, ""
			adopted, enrolled = true, !rec.Enrolled.IsZero()
		}
		return nil
	})
	if err != nil {
		r.log().Warn("adopt node", "node", rep.Node, "err", err)
	} else if adopted {
		r.noteAdopted(ctx, rep.Node, spec.ID(), enrolled)
	}
}

// Retry clears a failed node so the next reconcile rebuilds it, and lifts
// a halted rollout's hold.
func (r *Reconciler) Retry(ctx context.Context, name string) error {
	rb := r.Rebuild
	if rb == nil {
		return errors.New("rebuilds are not enabled")
	}
	var was node.State
	err := rb.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		was = rec.State
		if rec.State != node.Failed && !rec.EnrolledHeld() {
			return fmt.Errorf("node %s is %s, not failed", name, cmp.Or(string(rec.State), "unknown to anneal"))
		}
		rec.State, rec.Since, rec.Reason, rec.Target, rec.Nonce = node.Pending, time.Now(), "", "", ""
		return nil
	})
	if err != nil {
		return err
	}
	r.retries.Add(1) // after the write: a pass that counts it reads the record
	r.noteRetry(ctx, name, was)
	r.Trigger()
	return nil
}

func firstFailure(res *dns.Result) string {
	for _, z := range res.Zones {
		if z.Error != "" {
			return fmt.Sprintf("%s zone %s: %s", z.Target, z.Zone, z.Error)
		}
	}
	return ""
}

func (r *Reconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}
