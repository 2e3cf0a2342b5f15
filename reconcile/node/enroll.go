package node

// AgentFile is one file an enrolled machine needs: its name, where it goes
// on the machine, its mode there, and its content.
type AgentFile struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Mode    string `json:"mode"` // octal, "0600"
	Content string `json:"content"`
}

// AgentSetup is what a machine anneal did not install needs to report as
// its node, as an install would have laid it down: agent.json (url, node,
// agent token), the build id, the agent's unit; and where to fetch the
// anneal binary. It holds a credential (the agent token in agent.json).
type AgentSetup struct {
	Files []AgentFile `json:"files"`
	// BinaryURL is where the netboot server serves the anneal binary, and
	// BinaryPath where an install puts it.
	BinaryURL  string `json:"binaryUrl"`
	BinaryPath string `json:"binaryPath"`
	// Unit is the systemd unit that runs the agent (one of Files).
	Unit string `json:"unit"`
}

// EnrolledHeld reports whether the node was enrolled (anneal enroll) and
// not adopted yet: anneal holds it (never arms nor power-cycles it) until
// its agent reports its build with matching facts, or a retry releases it.
func (r *Record) EnrolledHeld() bool {
	return r != nil && r.State == Unknown && r.BuildID == "" && !r.Enrolled.IsZero()
}
