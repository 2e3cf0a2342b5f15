package lab

import (
	"fmt"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// Brownfield is a machine that runs a system anneal did not install: what
// its disk holds when the lab first starts it (see Config.Brownfield).
type Brownfield struct {
	// BuildID is the build its system is (what it reports once it has an
	// agent); required.
	BuildID string `json:"buildId"`
	// Network is its network configuration, netplan v2 (what anneal
	// render shows for the node): its facts derive from it, the node's
	// declared hostname, image and kernel, as an install's would.
	Network []byte `json:"network"`
}

// preinstall writes the brownfield nodes' disks and powers them on (they
// boot their disk when the fleet serves). loadState, after it, keeps
// what a node's state file says instead.
func (f *Fleet) preinstall() error {
	for _, name := range sortedKeys(f.cfg.Brownfield) {
		b := f.cfg.Brownfield[name]
		n := f.nodes[name]
		sn := f.cfg.Site.Node(name)
		if n == nil || sn == nil {
			return fmt.Errorf("lab: brownfield node %s: no such node with a BMC in the site", name)
		}
		if b.BuildID == "" {
			return fmt.Errorf("lab: brownfield node %s: no build id", name)
		}
		facts, err := n.factsOf(node.BuildSpecOf(f.cfg.Site, sn), b.Network)
		if err != nil {
			return fmt.Errorf("lab: brownfield node %s: %w", name, err)
		}
		n.mu.Lock()
		n.disk = Disk{BuildID: b.BuildID, InstalledAt: time.Now().UTC(), Facts: &facts}
		n.power = node.PowerOn
		n.mu.Unlock()
	}
	return nil
}

// SetAgent gives the installed system an agent configuration and, unless
// buildID is "", a build id: what an operator copies to /etc/anneal/ from
// `anneal enroll`. A running system's agent reports with it from its next
// report on (at once when it had none). It fails when nothing is
// installed.
func (n *Node) SetAgent(cfg AgentConfig, buildID string) error {
	if cfg.URL == "" || cfg.Node == "" || cfg.Token == "" {
		return fmt.Errorf("lab node %s: agent.json: url, node and token are all required", n.name)
	}
	if buildID != "" && !validBuildID(buildID) {
		return fmt.Errorf("lab node %s: %q is not a build id", n.name, buildID)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.disk.Facts == nil {
		return fmt.Errorf("lab node %s: nothing installed: no agent to configure", n.name)
	}
	n.disk.Agent = &cfg
	if buildID != "" {
		n.disk.BuildID = buildID
	}
	n.notifyLocked()
	n.markDirty()
	return nil
}

func validBuildID(s string) bool {
	return len(s) <= 128 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}
