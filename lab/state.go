package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// stateVersion is the version of a node's state file.
const stateVersion = 1

// nodeFile is a node's state file: StateDir/NAME.json.
type nodeFile struct {
	Version  int             `json:"version"`
	Power    node.PowerState `json:"power"`
	Override Override        `json:"override"`
	Disk     Disk            `json:"disk"`
	Boots    int             `json:"boots"`
	Installs int             `json:"installs"`
}

func (n *Node) statePath() (string, error) {
	if strings.ContainsAny(n.name, `/\`) || !filepath.IsLocal(n.name) {
		return "", fmt.Errorf("node name %q cannot name a file", n.name)
	}
	return filepath.Join(n.f.cfg.StateDir, n.name+".json"), nil
}

// persister writes the nodes' state files in the background: a change
// marks its node dirty; one goroutine writes the dirty nodes (each once,
// however many changes it had) with a few workers, and everything left at
// shutdown, after a short delay that gathers a burst of changes. File I/O
// never runs under a node's lock or in a BMC request.
// Files are written atomically (a temporary file renamed over), not
// synced: a crash of the lab loses at most the last moment's changes.
type persister struct {
	mu    sync.Mutex
	dirty map[*Node]bool
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// persistWorkers write state files in parallel; persistDelay gathers a
// burst of changes (a boot override, a power cycle, an install) into one
// write per node.
const (
	persistWorkers = 8
	persistDelay   = 100 * time.Millisecond
)

func (f *Fleet) startPersister() {
	p := &f.persist
	p.dirty = map[*Node]bool{}
	p.kick = make(chan struct{}, 1)
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	if f.cfg.StateDir == "" {
		close(p.done)
		return
	}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.kick:
				select {
				case <-time.After(persistDelay):
				case <-p.stop:
				}
				f.flush()
			case <-p.stop:
				f.flush()
				return
			}
		}
	}()
}

// stopPersister writes what is left and stops.
func (f *Fleet) stopPersister() {
	select {
	case <-f.persist.stop:
	default:
		close(f.persist.stop)
	}
	<-f.persist.done
}

// markDirty schedules the node's state file to be written.
func (n *Node) markDirty() {
	p := &n.f.persist
	if n.f.cfg.StateDir == "" {
		return
	}
	p.mu.Lock()
	p.dirty[n] = true
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (f *Fleet) flush() {
	p := &f.persist
	p.mu.Lock()
	nodes := make([]*Node, 0, len(p.dirty))
	for n := range p.dirty {
		nodes = append(nodes, n)
	}
	clear(p.dirty)
	p.mu.Unlock()
	var g errgroup.Group // a node not saved does not stop the others
	g.SetLimit(persistWorkers)
	for _, n := range nodes {
		g.Go(func() error {
			if err := n.save(); err != nil {
				f.log.Error("lab: node state not saved", "node", n.name, "err", err)
			}
			return nil
		})
	}
	_ = g.Wait() // never an error: each node's is logged
}

// save writes the node's state file.
func (n *Node) save() error {
	path, err := n.statePath()
	if err != nil {
		return fmt.Errorf("lab node %s: %w", n.name, err)
	}
	n.mu.Lock()
	data, err := json.MarshalIndent(nodeFile{Version: stateVersion, Power: n.power, Override: n.override,
		Disk: n.disk, Boots: n.boots, Installs: n.installs}, "", "  ")
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab node %s: state: %w", n.name, err)
	}
	if err := writeAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("lab node %s: state: %w", n.name, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// loadState reads every node's state file from StateDir (made if missing).
// A node without one is new: off, nothing installed.
func (f *Fleet) loadState() error {
	dir := f.cfg.StateDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lab: state directory: %w", err)
	}
	for _, n := range f.order {
		path, err := n.statePath()
		if err != nil {
			return fmt.Errorf("lab node %s: %w", n.name, err)
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("lab node %s: state: %w", n.name, err)
		}
		var nf nodeFile
		if err := json.Unmarshal(data, &nf); err != nil {
			return fmt.Errorf("lab node %s: state %s: %w", n.name, path, err)
		}
		if nf.Version != stateVersion {
			return fmt.Errorf("lab node %s: state %s: version %d, want %d", n.name, path, nf.Version, stateVersion)
		}
		n.mu.Lock()
		n.power, n.disk, n.boots, n.installs = nf.Power, nf.Disk, nf.Boots, nf.Installs
		if nf.Override.Target != "" && nf.Override.Enabled != "" {
			n.override = nf.Override
		}
		if n.power != node.PowerOn {
			n.power = node.PowerOff
		}
		n.mu.Unlock()
	}
	return nil
}
