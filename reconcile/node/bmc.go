package node

import "context"

// PowerState is a server's power as its BMC reports it.
type PowerState string

// Power states.
const (
	PowerOn      PowerState = "on"
	PowerOff     PowerState = "off"
	PowerUnknown PowerState = "unknown"
)

// PowerAction is what a BMC is asked to do with power.
type PowerAction string

// Power actions.
const (
	ActionOn    PowerAction = "on"
	ActionOff   PowerAction = "off"   // hard off
	ActionCycle PowerAction = "cycle" // off then on (on if off)
)

// BootDevice is a one-time next-boot device.
type BootDevice string

// Boot devices.
const (
	BootPXE  BootDevice = "pxe"
	BootDisk BootDevice = "disk"
)

// Firmware is what a BMC reports of a server's firmware, for drift
// against its hardware profile.
type Firmware struct {
	BIOS string `json:"bios,omitempty"`
	BMC  string `json:"bmc,omitempty"`
}

// BMC is one server's baseboard management controller. Implementations
// live in providers/bmc; reconcile needs only these verbs. Every call is
// bounded by ctx; errors name the BMC and never carry its credentials.
type BMC interface {
	PowerState(ctx context.Context) (PowerState, error)
	SetPower(ctx context.Context, a PowerAction) error
	// BootOnce sets the next boot only, then the server falls back to its
	// default order.
	BootOnce(ctx context.Context, d BootDevice) error
	Firmware(ctx context.Context) (Firmware, error)
}
