package rollout

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

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"golang.org/x/sync/errgroup"
)

// Rollout defaults.
const (
	// DefaultInstallTimeout bounds provisioning → installed: netboot, the
	// installer, the callback.
	DefaultInstallTimeout = 45 * time.Minute
	// DefaultMaxConcurrentInstalls is the boot-storm budget when the site
	// sets none (DRP's sizing guide: 20 concurrent provisions per 4 cores).
	DefaultMaxConcurrentInstalls = 20
	// DefaultNetbootTimeout bounds power cycle → iPXE script fetched
	// (POST and firmware of a big server take minutes).
	DefaultNetbootTimeout = 10 * time.Minute
	// MaxPowerCycles bounds the power cycles of one arming.
	MaxPowerCycles = 3
	// DefaultPollInterval is how often a waiting rebuild re-reads its
	// record when no report wakes it.
	DefaultPollInterval = time.Second
)

// Engine rebuilds nodes in waves: canaries first, then the rest, with at
// most maxUnavailable per rack and per role down at once, and at most
// maxConcurrentInstalls netboots site wide. A failed canary, or more
// failures than maxFailures, halts it: nodes not started are left
// untouched on their old build.
//
// One node's rebuild: leave DNS groups (records → out of service, DNS
// synced) → arm netboot (a single-use install token, a new agent token
// generation) → BMC: next boot PXE, power cycle → wait for the install
// callback (installed) → wait for the first report of the node's new agent
// → verify its build and facts → verified, rejoin groups. Every step is written to the node's
// record first, so a restarted anneal resumes a rollout without power
// cycling a node twice.
type Engine struct {
	Site  *schema.Site
	Nodes node.Store
	// BMC returns a node's BMC (credentials resolved by cmd).
	BMC func(*schema.Node) (node.BMC, error)
	// SyncDNS converges DNS to the site with the records' availability, so
	// that nodes out of service leave their groups and verified ones
	// rejoin. Nil: DNS is not managed.
	SyncDNS func(ctx context.Context) error
	// Wake, when set, wakes waiting rebuilds on a node's report.
	Wake           *Waker
	InstallTimeout time.Duration
	// NetbootTimeout bounds power cycle → iPXE script fetched; a node
	// that misses it is cycled again (default DefaultNetbootTimeout).
	NetbootTimeout time.Duration
	PollInterval   time.Duration
	Log            *slog.Logger
	// Progress is told about every step (a terminal display, logs).
	Progress func(Event)
	// ProgressLogs says Progress logs each step: the engine does not.
	ProgressLogs bool
	Now          func() time.Time
}

// Event is one step of one node's rebuild.
type Event struct {
	Node   string `json:"node"`
	Step   string `json:"step"`
	Detail string `json:"detail,omitempty"`
	// Done and Total count finished rebuilds (verified or failed).
	Done  int `json:"done"`
	Total int `json:"total"`
}

// Rollout steps, as events name them.
const (
	StepLeave     = "leave-groups"
	StepArm       = "netboot-armed"
	StepPower     = "power-cycle"
	StepInstalled = "installed"
	StepVerified  = "verified"
	StepFailed    = "failed"
	StepRetired   = "decommissioned"
	StepPowerOff  = "powered-off"
	// StepSkipped: a node enrolled after the plan, not rebuilt (not a
	// failure: the next plan holds it).
	StepSkipped = "skipped"
)

// Actions are the plan's DAG actions the event completes.
func (e Event) Actions() []string {
	switch e.Step {
	case StepLeave:
		return []string{"leave:" + e.Node}
	case StepInstalled:
		return []string{"rebuild:" + e.Node}
	case StepVerified:
		return []string{"verify:" + e.Node}
	case StepPowerOff:
		return []string{"power-off:" + e.Node}
	case StepRetired:
		return []string{"retire:" + e.Node}
	}
	return nil
}

// Result is what a rollout did.
type Result struct {
	Verified       []string          `json:"verified,omitempty"`
	Failed         map[string]string `json:"failed,omitempty"`
	Decommissioned []string          `json:"decommissioned,omitempty"`
	// NotStarted nodes were left on their old build (halted or blocked).
	NotStarted []string `json:"notStarted,omitempty"`
	// Halted says why the rollout stopped early ("" when it did not).
	Halted string `json:"halted,omitempty"`
}

// Err summarises a result that is not a full success.
func (r *Result) Err() error {
	if r.Halted == "" && len(r.Failed) == 0 && len(r.NotStarted) == 0 {
		return nil
	}
	var parts []string
	if r.Halted != "" {
		parts = append(parts, "halted: "+r.Halted)
	}
	for _, n := range slices.Sorted(maps.Keys(r.Failed)) {
		parts = append(parts, fmt.Sprintf("%s failed: %s", n, r.Failed[n]))
	}
	if len(r.NotStarted) > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) left on their old build", len(r.NotStarted)))
	}
	return errors.New(strings.Join(parts, "; "))
}

// AvailabilityOf derives who serves from the records when anneal rebuilds
// nodes: a node is in its groups only once verified on a build (or, when
// anneal lost its state, while it runs unobserved), and a decommissioned
// node, or one that left the site, keeps its names until it is powered
// off.
func AvailabilityOf(site *schema.Site, records map[string]*node.Record) dns.Availability {
	av := dns.Availability{OutOfService: map[string]bool{}, Retiring: map[string]bool{}}
	for _, n := range site.Nodes {
		rec := records[n.Name]
		switch {
		case !n.Exists():
			if rec != nil && rec.State != node.Retired {
				av.Retiring[n.Name] = true
			}
		case rec != nil && rec.State == node.Unknown && rec.Unobserved && rec.Power != node.PowerOff:
			// anneal lost track of it while it ran: its DNS stays as it
			// is (round-robin groups included) until it reports or is
			// rebuilt.
		case rec == nil || rec.State != node.Verified:
			av.OutOfService[n.Name] = true
		}
	}
	for _, rec := range node.Departed(site, records) {
		if rec.Declared != nil && len(rec.Declared.RRsets) > 0 {
			if av.Departed == nil {
				av.Departed = map[string][]dns.RRset{}
			}
			av.Departed[rec.Name] = rec.Declared.RRsets
		}
	}
	return av
}

// Run executes the rebuild plan. It returns when every started rebuild has
// finished, or ctx ends (rebuilds in flight are then left to resume).
func (ro *Engine) Run(ctx context.Context, plan *RebuildPlan) (*Result, error) {
	res := &Result{Failed: map[string]string{}}
	if plan == nil || plan.Count() == 0 {
		return res, nil
	}
	records, err := ro.Nodes.NodeRecords(ctx)
	if err != nil {
		return nil, err
	}
	s := ro.newScheduler(plan, records, res)
	ro.decommission(ctx, plan.Decommission, res)
	// Wave one: rebuilds an interrupted apply left in flight, and the
	// canaries. The rest only start if no canary failed.
	var first, rest []NodeRebuild
	canary := map[string]bool{}
	for _, r := range plan.Rebuilds {
		switch {
		case r.Canary:
			canary[r.Node] = true
			first = append(first, r)
		case r.Resume:
			first = append(first, r)
		default:
			rest = append(rest, r)
		}
	}
	if err := s.run(ctx, first, len(first)); err != nil {
		return res, err
	}
	var failedCanaries []string
	for _, name := range s.failedNames {
		if canary[name] {
			failedCanaries = append(failedCanaries, name)
		}
	}
	if len(failedCanaries) > 0 {
		res.Halted = fmt.Sprintf("canary %s failed", strings.Join(failedCanaries, ", "))
		for _, r := range rest {
			res.NotStarted = append(res.NotStarted, r.Node)
		}
		slices.Sort(res.NotStarted)
		return res, nil
	}
	maxFail := s.failures + ro.Site.Config.Policies.MaxFailures.Of(len(rest))
	if err := s.run(ctx, rest, maxFail); err != nil {
		return res, err
	}
	slices.Sort(res.Verified)
	slices.Sort(res.NotStarted)
	return res, nil
}

// scheduler keeps the rollout's counts of nodes down per rack and role.
type scheduler struct {
	ro          *Engine
	res         *Result
	nodes       map[string]*schema.Node
	rackLimit   map[string]int
	roleLimit   map[string]int
	rackDown    map[string]int
	roleDown    map[string]int
	budget      int
	installing  int
	failures    int
	failedNames []string
	done, total int
}

func (ro *Engine) newScheduler(plan *RebuildPlan, records map[string]*node.Record, res *Result) *scheduler {
	pol := ro.Site.Config.Policies
	s := &scheduler{ro: ro, res: res, nodes: map[string]*schema.Node{},
		rackLimit: map[string]int{}, roleLimit: map[string]int{}, rackDown: map[string]int{}, roleDown: map[string]int{},
		budget: cmp.Or(pol.MaxConcurrentInstalls, DefaultMaxConcurrentInstalls), total: len(plan.Rebuilds)}
	rackSize, roleSize := map[string]int{}, map[string]int{}
	for _, n := range ro.Site.Nodes {
		s.nodes[n.Name] = n
		if !n.Exists() || n.State == schema.StateMaintenance {
			continue // not part of the rollout's population
		}
		rackSize[rackKey(n)]++
		for _, r := range n.Roles {
			roleSize[r]++
		}
	}
	for rack, size := range rackSize {
		if p := pol.MaxUnavailable.PerRack; p.Value > 0 {
			s.rackLimit[rack] = p.Of(size)
		}
	}
	for role, p := range pol.MaxUnavailable.PerRole {
		if p.Value > 0 {
			s.roleLimit[role] = p.Of(roleSize[role])
		}
	}
	// Nodes already down and not part of this plan (failed earlier) count
	// against the limits.
	inPlan := map[string]bool{}
	for _, r := range plan.Rebuilds {
		inPlan[r.Node] = true
	}
	for name, rec := range records {
		n := s.nodes[name]
		if n == nil || inPlan[name] || !n.Exists() || n.State == schema.StateMaintenance {
			continue
		}
		switch rec.State {
		case node.Pending, node.Provisioning, node.Installed, node.Failed:
			s.down(n, 1)
		}
	}
	return s
}

func rackKey(n *schema.Node) string { return n.Region + "/" + n.Rack }

func (s *scheduler) down(n *schema.Node, d int) {
	s.rackDown[rackKey(n)] += d
	for _, r := range n.Roles {
		s.roleDown[r] += d
	}
}

// fits reports whether one more node can go down: the boot budget, its
// rack's and each of its roles' maxUnavailable.
func (s *scheduler) fits(n *schema.Node) bool {
	if s.installing >= s.budget {
		return false
	}
	if l, ok := s.rackLimit[rackKey(n)]; ok && s.rackDown[rackKey(n)] >= l {
		return false
	}
	for _, r := range n.Roles {
		if l, ok := s.roleLimit[r]; ok && s.roleDown[r] >= l {
			return false
		}
	}
	return true
}

type rebuildDone struct {
	node   string
	reason string // "" = verified
}

// run rebuilds a wave's nodes under the limits until all finished, or
// failures exceed maxFail (then no new node starts).
func (s *scheduler) run(ctx context.Context, wave []NodeRebuild, maxFail int) error {
	queue := slices.Clone(wave)
	doneCh := make(chan rebuildDone)
	inflight := 0
	var rejoin []string
	for {
		// A halt sticks: failures past the limit, or DNS that could not
		// take nodes out of their groups, start nothing more.
		halted := s.failures > maxFail || s.res.Halted != ""
		if s.failures > maxFail && s.res.Halted == "" {
			s.res.Halted = fmt.Sprintf("%d rebuild(s) failed, more than maxFailures %d", s.failures, maxFail)
		}
		var batch []NodeRebuild
		if !halted && ctx.Err() == nil {
			keep := queue[:0] // filtered in place: batch holds copies
			for _, r := range queue {
				n := s.nodes[r.Node]
				if n == nil {
					continue
				}
				// A resumed rebuild is already down: it does not wait.
				if r.Resume || s.fits(n) {
					batch = append(batch, r)
					s.down(n, 1)
					s.installing++
				} else {
					keep = append(keep, r)
				}
			}
			queue = keep
		}
		if len(batch) > 0 {
			if err := s.leave(ctx, batch); err != nil {
				for _, r := range batch {
					s.down(s.nodes[r.Node], -1)
					s.installing--
				}
				queue = append(batch, queue...)
				s.res.Halted = "DNS could not take nodes out of their groups: " + err.Error()
				halted = true
				batch = nil
			}
		}
		for _, r := range batch {
			inflight++
			go func() {
				reason := s.ro.rebuild(ctx, r, s.nodes[r.Node])
				doneCh <- rebuildDone{node: r.Node, reason: reason}
			}()
		}
		if inflight == 0 {
			if len(queue) > 0 && !halted && ctx.Err() == nil {
				// Nothing runs and nothing fits: nodes already down block it.
				s.res.Halted = "maxUnavailable is taken up by nodes that are down (failed): fix or retry them"
			}
			for _, r := range queue {
				s.res.NotStarted = append(s.res.NotStarted, r.Node)
			}
			return s.rejoin(ctx, rejoin)
		}
		select {
		case d := <-doneCh:
			inflight--
			s.finish(d, &rejoin)
			// Collect every rebuild that has finished meanwhile, then sync
			// DNS once for all of them.
			for more := true; more; {
				select {
				case d := <-doneCh:
					inflight--
					s.finish(d, &rejoin)
				default:
					more = false
				}
			}
			if err := s.rejoin(ctx, rejoin); err != nil {
				s.ro.log().Warn("rejoin DNS groups", "err", err)
			} else {
				rejoin = rejoin[:0]
			}
		case <-ctx.Done():
			// Leave the in-flight rebuilds to finish their current step;
			// their records resume them on the next run.
			for inflight > 0 {
				d := <-doneCh
				inflight--
				s.finish(d, &rejoin)
			}
			return ctx.Err()
		}
	}
}

func (s *scheduler) finish(d rebuildDone, rejoin *[]string) {
	n := s.nodes[d.node]
	s.installing--
	s.done++
	if d.reason == "" {
		s.down(n, -1)
		s.res.Verified = append(s.res.Verified, d.node)
		*rejoin = append(*rejoin, d.node)
		s.ro.emit(Event{Node: d.node, Step: StepVerified, Done: s.done, Total: s.total})
		return
	}
	if d.reason == errInterrupted {
		return // stays down: it resumes on the next run
	}
	if d.reason == skippedEnrolled {
		// Enrolled since the plan: never taken down nor armed, so it
		// neither fails the rollout nor holds a slot; the next plan holds it.
		s.down(n, -1)
		s.res.NotStarted = append(s.res.NotStarted, d.node)
		s.ro.emit(Event{Node: d.node, Step: StepSkipped, Detail: errEnrolled.Error(), Done: s.done, Total: s.total})
		return
	}
	// A failed node stays down: it counts against maxUnavailable until it
	// is retried or fixed.
	s.failures++
	s.failedNames = append(s.failedNames, d.node)
	s.res.Failed[d.node] = d.reason
	s.ro.emit(Event{Node: d.node, Step: StepFailed, Detail: d.reason, Done: s.done, Total: s.total})
}

// leave takes a batch's nodes out of service (records to pending) and
// syncs DNS when any of them is in a group.
func (s *scheduler) leave(ctx context.Context, batch []NodeRebuild) error {
	grouped := false
	now := s.ro.now()
	// The records are written concurrently: a store that batches
	// transactions (bbolt) commits them together, instead of one sync per
	// node while the scheduler waits.
	// A node in no DNS group has nothing to leave: its arming is its first
	// write.
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, r := range batch {
		if r.Resume || !inGroups(s.ro.Site, s.nodes[r.Node]) {
			continue
		}
		wg.Go(func() {
			errs[i] = s.ro.Nodes.UpdateNode(ctx, r.Node, func(rec *node.Record) error {
				if rec.EnrolledHeld() {
					return nil // enrolled since the plan: its arming refuses it
				}
				rec.State, rec.Since, rec.Reason, rec.Target = node.Pending, now, "", r.To
				return nil
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, r := range batch {
		if !r.Resume && inGroups(s.ro.Site, s.nodes[r.Node]) {
			grouped = true
		}
	}
	if grouped && s.ro.SyncDNS != nil {
		if err := s.ro.SyncDNS(ctx); err != nil {
			return err
		}
	}
	for _, r := range batch {
		detail := ""
		if r.Resume || !inGroups(s.ro.Site, s.nodes[r.Node]) {
			detail = "in no DNS group (or out already)"
		}
		s.ro.emit(Event{Node: r.Node, Step: StepLeave, Detail: detail, Done: s.done, Total: s.total})
	}
	return nil
}

// rejoin syncs DNS so verified nodes rejoin their groups.
func (s *scheduler) rejoin(ctx context.Context, nodes []string) error {
	if s.ro.SyncDNS == nil || ctx.Err() != nil {
		return nil
	}
	for _, name := range nodes {
		if inGroups(s.ro.Site, s.nodes[name]) {
			return s.ro.SyncDNS(ctx)
		}
	}
	return nil
}

func inGroups(site *schema.Site, n *schema.Node) bool {
	if site.DNS == nil || n == nil {
		return false
	}
	for i := range site.DNS.Groups {
		if n.InGroup(&site.DNS.Groups[i]) {
			return true
		}
	}
	return false
}

// errInterrupted marks a rebuild cut short by shutdown: not a failure.
const errInterrupted = "\x00interrupted"

// skippedEnrolled marks a rebuild not started because its node was
// enrolled after the plan (errEnrolled): not a failure.
const skippedEnrolled = "\x00enrolled"

// rebuild runs one node's rebuild and returns "" when verified, or why it
// failed.
func (ro *Engine) rebuild(ctx context.Context, r NodeRebuild, n *schema.Node) string {
	spec := node.BuildSpecOf(ro.Site, n)
	timeout := cmp.Or(ro.InstallTimeout, DefaultInstallTimeout)
	if !r.Resume {
		nonce, err := node.NewNonce()
		if err != nil {
			return ro.fail(ctx, n.Name, err.Error())
		}
		gen, err := node.NewNonce()
		if err != nil {
			return ro.fail(ctx, n.Name, err.Error())
		}
		now := ro.now()
		err = ro.Nodes.UpdateNode(ctx, n.Name, func(rec *node.Record) error {
			if rec.EnrolledHeld() {
				return errEnrolled // enrolled since the plan: never power-cycled for it
			}
			rec.State, rec.Since, rec.Target, rec.Reason = node.Provisioning, now, r.To, ""
			rec.Nonce, rec.TokenExpires = nonce, now.Add(timeout)
			rec.Netbooted, rec.InstallFetched, rec.Fetched, rec.PowerCycles, rec.Deploy = time.Time{}, time.Time{}, nil, 1, nil
			// The node is about to be wiped: its old agent token dies now,
			// and the install hands the new agent a token of this generation.
			rec.AgentGen = gen
			rec.Attempts++
			rec.Unobserved = false
			return nil
		})
		if errors.Is(err, errEnrolled) {
			return skippedEnrolled
		}
		if err != nil {
			return ro.interrupted(ctx, err)
		}
		ro.emit(Event{Node: n.Name, Step: StepArm, Detail: "build " + r.To})
		if err := ro.powerCycle(ctx, n); err != nil {
			if ctx.Err() != nil {
				return errInterrupted
			}
			return ro.fail(ctx, n.Name, err.Error())
		}
		ro.emit(Event{Node: n.Name, Step: StepPower, Detail: "next boot PXE, power cycled"})
	}
	poll := cmp.Or(ro.PollInterval, DefaultPollInterval)
	announced := false
	for {
		// Listen before reading: a report landing between the read and the
		// wait still wakes it.
		w := ro.Wake.listen(n.Name)
		rec, err := ro.Nodes.NodeRecord(ctx, n.Name)
		if err != nil {
			w.stop()
			return ro.interrupted(ctx, err)
		}
		if rec != nil && rec.State == node.Installed && !announced {
			announced = true
			ro.emit(Event{Node: n.Name, Step: StepInstalled, Detail: "awaiting its agent's confirmation"})
		}
		if done, reason := ro.step(ctx, n, rec, r, spec, timeout); done {
			w.stop()
			return reason
		}
		if err := w.wait(ctx, poll); err != nil {
			return errInterrupted
		}
	}
}

// step looks at a waiting rebuild's record: done with "" (verified) or a
// failure reason, or not done yet.
func (ro *Engine) step(ctx context.Context, n *schema.Node, rec *node.Record, r NodeRebuild, spec node.BuildSpec, timeout time.Duration) (bool, string) {
	if rec == nil || rec.Target != r.To {
		return true, "its record changed under the rollout (retried or rebuilt by another anneal?)"
	}
	switch rec.State {
	case node.Installed:
		// The callback alone verifies nothing (anyone holding the install
		// token could post it): the installed system's agent must report.
		if rec.Confirmed() {
			return true, ro.verify(ctx, n.Name, spec, r.To)
		}
		if ro.now().After(rec.Since.Add(timeout)) {
			return true, ro.fail(ctx, n.Name, fmt.Sprintf("installed, but its agent did not report within %s of the install callback", timeout))
		}
		return false, ""
	case node.Failed:
		return true, cmp.Or(rec.Reason, "failed")
	case node.Provisioning:
		if ro.now().After(rec.Since.Add(timeout)) {
			return true, ro.fail(ctx, n.Name, fmt.Sprintf("no install callback within %s of the power cycle", timeout))
		}
		if reason := ro.netbootMissed(ctx, n, rec); reason != "" {
			return true, reason
		}
		return false, ""
	}
	return true, fmt.Sprintf("unexpected state %q while installing", rec.State)
}

// netbootMissed power-cycles a node again when it has not fetched its
// iPXE script within NetbootTimeout of its last power cycle (it booted
// while the netboot server was down, or PXE failed), at most
// MaxPowerCycles times; then the rebuild fails. Nothing was installed, so
// a second cycle repeats nothing that completed. It returns a failure
// reason, or "".
func (ro *Engine) netbootMissed(ctx context.Context, n *schema.Node, rec *node.Record) string {
	nt := cmp.Or(ro.NetbootTimeout, DefaultNetbootTimeout)
	last := rec.Since
	if !rec.Netbooted.IsZero() || ro.now().Before(last.Add(nt)) {
		return ""
	}
	if rec.PowerCycles >= MaxPowerCycles {
		return ro.fail(ctx, n.Name, fmt.Sprintf("it never fetched its iPXE script after %d power cycles %s apart (check its boot order, DHCP and the netboot server)", rec.PowerCycles, nt))
	}
	now := ro.now()
	if err := ro.Nodes.UpdateNode(ctx, n.Name, func(r *node.Record) error {
		r.Since, r.PowerCycles = now, r.PowerCycles+1
		return nil
	}); err != nil {
		return ro.interrupted(ctx, err)
	}
	if err := ro.powerCycle(ctx, n); err != nil {
		if ctx.Err() != nil {
			return errInterrupted
		}
		return ro.fail(ctx, n.Name, err.Error())
	}
	ro.emit(Event{Node: n.Name, Step: StepPower, Detail: fmt.Sprintf("no netboot within %s: next boot PXE, power cycled again", nt)})
	return ""
}

func (ro *Engine) interrupted(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return errInterrupted
	}
	return err.Error()
}

// powerCycle sets the next boot to PXE and cycles power, retrying
// transient BMC failures twice with backoff.
func (ro *Engine) powerCycle(ctx context.Context, n *schema.Node) error {
	bmc, err := ro.BMC(n)
	if err != nil {
		return fmt.Errorf("bmc: %w", err)
	}
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 2 * time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if last = bmc.BootOnce(ctx, node.BootPXE); last != nil {
			continue
		}
		if last = bmc.SetPower(ctx, node.ActionCycle); last == nil {
			return nil
		}
	}
	return last
}

// verify checks the build and facts an installed node's agent reported
// against its build.
func (ro *Engine) verify(ctx context.Context, name string, spec node.BuildSpec, build string) string {
	var reason string
	now := ro.now()
	err := ro.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		reason = ""
		var diffs []string
		switch {
		case !rec.Confirmed():
			return fmt.Errorf("node %s: no report of its agent since its install", name)
		case rec.FactsBuild != build:
			diffs = []string{fmt.Sprintf("its agent reports build %q, expected %s", rec.FactsBuild, build)}
		default:
			diffs = node.VerifyFacts(spec, *rec.Facts)
		}
		rec.Nonce = ""
		if len(diffs) > 0 {
			reason = "facts differ from the build: " + strings.Join(diffs, "; ")
			rec.State, rec.Since, rec.Reason = node.Failed, now, reason
			return nil
		}
		rec.State, rec.Since, rec.Reason = node.Verified, now, ""
		rec.BuildID, rec.BuiltAt, rec.Spec, rec.Target = build, now, &spec, ""
		return nil
	})
	if err != nil {
		return ro.interrupted(ctx, err)
	}
	return reason
}

// fail records a failed rebuild and disarms the node's netboot.
func (ro *Engine) fail(ctx context.Context, name, reason string) string {
	now := ro.now()
	err := ro.Nodes.UpdateNode(context.WithoutCancel(ctx), name, func(rec *node.Record) error {
		rec.State, rec.Since, rec.Reason, rec.Nonce = node.Failed, now, reason, ""
		return nil
	})
	if err != nil {
		ro.log().Error("record failed rebuild", "node", name, "err", err)
	}
	return reason
}

// powerOffTimeout bounds a decommission's power-off, which a newer
// revision does not cut.
const powerOffTimeout = 2 * time.Minute

// decommissionParallel bounds the power-offs of a decommission.
const decommissionParallel = 16

// decommission retires nodes together: one DNS sync takes them all out of
// their groups (names kept) → each is marked decommissioning, then powered
// off (bounded parallelism; a newer revision does not cut a power-off) →
// marked decommissioned (the netboot server no longer serves it) → one DNS
// sync removes their names. A node that fails a step is in res.Failed and
// keeps its names; the others go on.
func (ro *Engine) decommission(ctx context.Context, names []string, res *Result) {
	if len(names) == 0 {
		return
	}
	fail := func(name string, err error) { res.Failed[name] = err.Error() }
	nodes := map[string]*schema.Node{}
	var todo []string
	for _, name := range names {
		n := ro.Site.Node(name)
		if n == nil {
			rec, err := ro.Nodes.NodeRecord(ctx, name)
			if err != nil {
				fail(name, err)
				continue
			}
			if rec == nil || rec.Declared == nil {
				fail(name, fmt.Errorf("node %s left the site and anneal does not know its BMC", name))
				continue
			}
			n = node.StandIn(rec)
		}
		nodes[name] = n
		todo = append(todo, name)
	}
	if ro.SyncDNS != nil && len(todo) > 0 {
		if err := ro.SyncDNS(ctx); err != nil { // retiring: out of groups, names kept
			for _, name := range todo {
				fail(name, fmt.Errorf("leave groups: %w", err))
			}
			return
		}
	}
	var mu sync.Mutex
	var off []string
	g := new(errgroup.Group)
	g.SetLimit(decommissionParallel)
	for _, name := range todo {
		ro.emit(Event{Node: name, Step: StepLeave, Detail: "decommission: out of its groups, names kept"})
		g.Go(func() error {
			err := ro.powerOff(ctx, name, nodes[name])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail(name, err)
				return nil
			}
			off = append(off, name)
			return nil
		})
	}
	_ = g.Wait() // each power-off reports its own error
	slices.Sort(off)
	if len(off) == 0 {
		return
	}
	if ro.SyncDNS != nil {
		if err := ro.SyncDNS(ctx); err != nil {
			for _, name := range off {
				fail(name, fmt.Errorf("remove DNS records: %w", err))
			}
			return
		}
	}
	for _, name := range off {
		res.Decommissioned = append(res.Decommissioned, name)
		ro.emit(Event{Node: name, Step: StepRetired, Detail: "powered off, netboot and DNS names removed"})
	}
}

// powerOff records a node's decommission, powers it off through its BMC
// and records it decommissioned. The intent is recorded before the
// power-off, and the power-off is not cut by a newer revision: a revert in
// between finds the node decommissioning (and rebuilds it), never
// "verified" but off.
func (ro *Engine) powerOff(ctx context.Context, name string, n *schema.Node) error {
	bmc, err := ro.BMC(n)
	if err != nil {
		return fmt.Errorf("bmc: %w", err)
	}
	if err := ro.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		rec.State, rec.Since, rec.Nonce, rec.Target, rec.Reason = node.Retiring, ro.now(), "", "", ""
		return nil
	}); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), powerOffTimeout)
	defer cancel()
	if err := bmc.SetPower(pctx, node.ActionOff); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	ro.emit(Event{Node: name, Step: StepPowerOff, Detail: "powered off through its BMC"})
	return ro.Nodes.UpdateNode(pctx, name, func(rec *node.Record) error {
		rec.State, rec.Since = node.Retired, ro.now()
		return nil
	})
}

func (ro *Engine) emit(e Event) {
	if ro.Progress != nil {
		ro.Progress(e)
		if ro.ProgressLogs {
			return
		}
	}
	ro.log().Info("rollout", "node", e.Node, "step", e.Step, "detail", e.Detail)
}

func (ro *Engine) now() time.Time {
	if ro.Now != nil {
		return ro.Now()
	}
	return time.Now()
}

func (ro *Engine) log() *slog.Logger {
	if ro.Log != nil {
		return ro.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Waker wakes rebuilds waiting on a node when it reports. The zero value
// is ready; a nil *Waker only sleeps.
type Waker struct {
	mu      sync.Mutex
	waiting map[string][]chan struct{}
}

// Notify wakes everything waiting on node.
func (w *Waker) Notify(node string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	chans := w.waiting[node]
	delete(w.waiting, node)
	w.mu.Unlock()
	for _, c := range chans {
		close(c)
	}
}

// waiter is one registration with a Waker.
type waiter struct {
	w    *Waker
	node string
	ch   chan struct{}
}

// listen registers for node's next Notify; call wait or stop after.
func (w *Waker) listen(node string) *waiter {
	wt := &waiter{w: w, node: node}
	if w == nil {
		return wt
	}
	wt.ch = make(chan struct{})
	w.mu.Lock()
	if w.waiting == nil {
		w.waiting = map[string][]chan struct{}{}
	}
	w.waiting[node] = append(w.waiting[node], wt.ch)
	w.mu.Unlock()
	return wt
}

// wait returns after d, on a Notify since listen, or with ctx's error.
func (wt *waiter) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	var err error
	select {
	case <-wt.ch: // nil without a Waker: never
		return nil
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	wt.stop()
	return err
}

// stop unregisters a waiter that was not woken.
func (wt *waiter) stop() {
	w := wt.w
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting[wt.node] = slices.DeleteFunc(w.waiting[wt.node], func(c chan struct{}) bool { return c == wt.ch })
	if len(w.waiting[wt.node]) == 0 {
		delete(w.waiting, wt.node)
	}
}
