package boot

import (
	"errors"
	"fmt"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// AgentSetup renders what a machine anneal did not install (enrolled, see
// reconcile.Reconciler.Enroll) needs to report as node name, the files an
// install lays down (firstboot.go) minus the single-use install token and
// its callback unit: agent.json with this server's URL and the agent token
// of generation gen (the one the node's record holds, so its reports are
// checked exactly as an installed node's), the build id file holding
// build, and anneal-agent.service. It logs nothing: agent.json is a
// credential.
func (s *Server) AgentSetup(name, gen, build string) (node.AgentSetup, error) {
	switch {
	case len(s.Key) == 0:
		return node.AgentSetup{}, errors.New("agent setup: no token key configured")
	case gen == "":
		return node.AgentSetup{}, errors.New("agent setup: no token generation")
	case !buildIDChars.MatchString(build):
		return node.AgentSetup{}, fmt.Errorf("agent setup: %q is not a build id", build)
	}
	agent, err := renderAgent(s.BaseURL, name, AgentToken(s.Key, name, gen))
	if err != nil {
		return node.AgentSetup{}, err
	}
	return node.AgentSetup{
		Files: []node.AgentFile{
			{Name: "agent.json", Path: agentConfigPath, Mode: "0600", Content: agent},
			{Name: "build-id", Path: buildIDPath, Mode: "0644", Content: build + "\n"},
			{Name: agentUnit, Path: unitDir + "/" + agentUnit, Mode: "0644", Content: agentUnitText},
		},
		BinaryURL:  strings.TrimRight(s.BaseURL, "/") + "/agent/anneal",
		BinaryPath: binPath,
		Unit:       agentUnit,
	}, nil
}
