// Package ideal computes the schedule of a rollout run by an engine with no
// overhead of its own: the same limits as rollout.Engine (the canary
// wave first, then at most maxConcurrentInstalls installs site wide and
// maxUnavailable per rack and per role down at once, nodes taken in plan
// order), every node taking the same time. With equal durations a greedy
// scheduler runs in rounds: every node of a round finishes at once and the
// next round starts; the ideal wall time is rounds × one node's time.
//
// It reads the policies the way reconcile's scheduler does (populations:
// nodes that exist and are not in maintenance; a percentage rounds down,
// never below one) and is checked against nothing but the benchmarks that
// print it next to the measured wall time.
package ideal

import (
	"cmp"

	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// Schedule is the rounds of an ideal rollout: nodes started per round.
type Schedule struct {
	// First are the rounds of the first wave (canaries and resumed
	// rebuilds), Rest those of the other nodes.
	First, Rest []int
	// Blocked counts nodes no round could start (a limit of 0).
	Blocked int
	// Budget is maxConcurrentInstalls as the engine applies it.
	Budget int
}

// Rounds is the number of rounds in all.
func (s Schedule) Rounds() int { return len(s.First) + len(s.Rest) }

// Of computes the ideal schedule of plan on site.
func Of(site *schema.Site, plan *rollout.RebuildPlan) Schedule {
	pol := site.Config.Policies
	s := Schedule{Budget: cmp.Or(pol.MaxConcurrentInstalls, rollout.DefaultMaxConcurrentInstalls)}
	nodes := map[string]*schema.Node{}
	rackSize, roleSize := map[string]int{}, map[string]int{}
	for _, n := range site.Nodes {
		nodes[n.Name] = n
		if !n.Exists() || n.State == schema.StateMaintenance {
			continue
		}
		rackSize[rackKey(n)]++
		for _, r := range n.Roles {
			roleSize[r]++
		}
	}
	rackLimit, roleLimit := map[string]int{}, map[string]int{}
	if p := pol.MaxUnavailable.PerRack; p.Value > 0 {
		for rack, size := range rackSize {
			rackLimit[rack] = p.Of(size)
		}
	}
	for role, p := range pol.MaxUnavailable.PerRole {
		if p.Value > 0 {
			roleLimit[role] = p.Of(roleSize[role])
		}
	}
	var first, rest []rollout.NodeRebuild
	for _, r := range plan.Rebuilds {
		if nodes[r.Node] == nil {
			continue
		}
		if r.Canary || r.Resume {
			first = append(first, r)
		} else {
			rest = append(rest, r)
		}
	}
	round := func(queue []rollout.NodeRebuild) (started int, keep []rollout.NodeRebuild) {
		rackDown, roleDown := map[string]int{}, map[string]int{}
		for _, r := range queue {
			n := nodes[r.Node]
			fits := r.Resume || started < s.Budget
			if l, ok := rackLimit[rackKey(n)]; ok && !r.Resume && rackDown[rackKey(n)] >= l {
				fits = false
			}
			for _, role := range n.Roles {
				if l, ok := roleLimit[role]; ok && !r.Resume && roleDown[role] >= l {
					fits = false
				}
			}
			if !fits {
				keep = append(keep, r)
				continue
			}
			started++
			rackDown[rackKey(n)]++
			for _, role := range n.Roles {
				roleDown[role]++
			}
		}
		return started, keep
	}
	run := func(queue []rollout.NodeRebuild) (rounds []int) {
		for len(queue) > 0 {
			n, keep := round(queue)
			if n == 0 {
				s.Blocked += len(keep)
				break
			}
			rounds = append(rounds, n)
			queue = keep
		}
		return rounds
	}
	s.First = run(first)
	s.Rest = run(rest)
	return s
}

func rackKey(n *schema.Node) string { return n.Region + "/" + n.Rack }
