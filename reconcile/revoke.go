package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// RevokeAgent invalidates the agent token of node name: it draws a new
// generation, so the token its agent holds (and any copy of it) is refused
// from now on. The node's next install hands its agent a token of a newer
// generation again; until then its reports are refused, so its drift is
// not seen. It is for a token that leaked or a node that left anneal.
func (r *Reconciler) RevokeAgent(ctx context.Context, name string) error {
	rb := r.Rebuild
	if rb == nil {
		return errors.New("rebuilds are not enabled")
	}
	if site := r.Site(); site != nil && site.Node(name) == nil {
		return fmt.Errorf("node %s is not in the site", name)
	}
	gen, err := node.NewNonce()
	if err != nil {
		return err
	}
	err = rb.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		if rec.Declared == nil && rec.BuildID == "" && rec.State == node.Unknown && rec.FactsAt.IsZero() {
			// No record: a revoke never creates one (the records are
			// how a lost state is told from a kept one).
			return fmt.Errorf("anneal has no record of node %s yet", name)
		}
		rec.AgentGen = gen
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke the agent token of %s: %w", name, err)
	}
	r.emit(ctx, events.Event{Kind: events.AgentRevoked, Node: name, Actor: actorOf(ctx), Message: "agent token revoked"})
	return nil
}
