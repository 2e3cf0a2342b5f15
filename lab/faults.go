package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// InstallFault is how a node's install fails.
type InstallFault string

// Install faults.
const (
	// InstallNoCallback: the node fetches its script and install files,
	// then hangs: no callback, no agent, until it is powered off.
	InstallNoCallback InstallFault = "no-callback"
	// InstallWrongInterface: the install completes but the system comes up
	// with a wrong interface (its last VLAN on another id; without a VLAN,
	// its first interface with another MAC), in the callback and in every
	// agent report after.
	InstallWrongInterface InstallFault = "wrong-interface"
)

// Duration is a time.Duration written "1s", "250ms" in JSON and YAML.
type Duration time.Duration

// MarshalText writes the duration as time.Duration.String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "1s", "250ms", "0".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %s", v)
	}
	*d = Duration(v)
	return nil
}

// Faults are what goes wrong in the lab, by node name. The zero value is a
// healthy fleet. They are read from a JSON or YAML file (LoadFaults), set
// with Fleet.SetFaults or PUT /lab/v1/faults, and take effect at once for
// new BMC requests and boots.
type Faults struct {
	// BMCTimeout lists nodes whose BMC stops answering: every request
	// hangs until the client gives up.
	BMCTimeout []string `json:"bmcTimeout,omitempty" yaml:"bmcTimeout"`
	// InstallFail makes nodes' installs fail, each its way.
	InstallFail map[string]InstallFault `json:"installFail,omitempty" yaml:"installFail"`
	// BootDelay is how long every node stays in firmware after power on
	// before it boots (0: at once); NodeBootDelay overrides it per node.
	BootDelay     Duration            `json:"bootDelay,omitempty" yaml:"bootDelay"`
	NodeBootDelay map[string]Duration `json:"nodeBootDelay,omitempty" yaml:"nodeBootDelay"`
	// Firmware replaces what nodes' BMCs report (the hardware profile's
	// otherwise), for firmware drift.
	Firmware map[string]node.Firmware `json:"firmware,omitempty" yaml:"firmware"`
}

// LoadFaults reads faults from a JSON or YAML file; an unknown field is an
// error.
func LoadFaults(path string) (Faults, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Faults{}, fmt.Errorf("lab faults: %w", err)
	}
	f, err := ParseFaults(data)
	if err != nil {
		return Faults{}, fmt.Errorf("lab faults %s: %w", path, err)
	}
	return f, nil
}

// ParseFaults reads faults from JSON or YAML (JSON is YAML).
func ParseFaults(data []byte) (Faults, error) {
	var f Faults
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return Faults{}, err
	}
	return f, nil
}

// check names the nodes a fault refers to that the fleet does not have.
func (f Faults) check(known func(string) bool) error {
	var unknown []string
	names := slices.Clone(f.BMCTimeout)
	names = slices.AppendSeq(names, maps.Keys(f.InstallFail))
	names = slices.AppendSeq(names, maps.Keys(f.NodeBootDelay))
	names = slices.AppendSeq(names, maps.Keys(f.Firmware))
	for _, n := range names {
		if !known(n) && !slices.Contains(unknown, n) {
			unknown = append(unknown, n)
		}
	}
	var errs []error
	if len(unknown) > 0 {
		slices.Sort(unknown)
		errs = append(errs, fmt.Errorf("no such node: %s", strings.Join(unknown, ", ")))
	}
	for n, m := range f.InstallFail {
		if m != InstallNoCallback && m != InstallWrongInterface {
			errs = append(errs, fmt.Errorf("installFail %s: %q: want %q or %q", n, m, InstallNoCallback, InstallWrongInterface))
		}
	}
	return errors.Join(errs...)
}

func (f Faults) clone() Faults {
	return Faults{
		BMCTimeout:    slices.Clone(f.BMCTimeout),
		InstallFail:   maps.Clone(f.InstallFail),
		BootDelay:     f.BootDelay,
		NodeBootDelay: maps.Clone(f.NodeBootDelay),
		Firmware:      maps.Clone(f.Firmware),
	}
}

// Faults returns the faults in force.
func (f *Fleet) Faults() Faults {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.faults.clone()
}

// SetFaults replaces the faults in force. Every node named must be in the
// fleet. A BMC request already hanging keeps hanging; a boot already past
// its delay is not delayed again.
func (f *Fleet) SetFaults(faults Faults) error {
	if err := faults.check(func(n string) bool { return f.nodes[n] != nil }); err != nil {
		return fmt.Errorf("lab faults: %w", err)
	}
	f.mu.Lock()
	f.faults = faults.clone()
	f.mu.Unlock()
	return nil
}

func (f *Fleet) bmcTimeout(node string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Contains(f.faults.BMCTimeout, node)
}

func (f *Fleet) installFault(node string) InstallFault {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.faults.InstallFail[node]
}

func (f *Fleet) bootDelay(node string) time.Duration {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if d, ok := f.faults.NodeBootDelay[node]; ok {
		return time.Duration(d)
	}
	return time.Duration(f.faults.BootDelay)
}
