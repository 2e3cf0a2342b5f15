package boot

import (
	"fmt"
	"strings"
)

// The install callback runs on the installed system's first boot, not in
// the installer: facts collected inside the installer (curtin in-target,
// a kickstart %post chroot, d-i's in-target) describe the installer's
// kernel, interface names and addresses, and VerifyFacts would compare
// those against the build. So every installer only lays the callback down
// in the installed system:
//
//	/etc/anneal/build-id        the build id
//	/etc/anneal/agent.json      url, node and agent token (mode 0600)
//	/etc/anneal/install-token   the single-use install token (mode 0600)
//	/usr/local/bin/anneal       the anneal binary, from BASEURL/agent/anneal
//	anneal-installed.service    posts the install callback once, on first
//	                            boot, once the network is online, retrying;
//	                            removes the token file when it succeeded
//	anneal-agent.service        `anneal agent`, reporting every 5 minutes
//
// and enables both units. The callback only marks the node installed; the
// agent's first report (with the agent token of this install, from
// agent.json) is what verifies it, so the agent starts right after the
// callback's first attempt. The token is read from its file by
// `anneal agent --install-token-file`, so it never appears on a command
// line of the installed system (ps) nor in a unit file; the units log
// nothing of it.
//
// The token's expiry is set by the rebuild engine when it arms the node:
// the arming time plus the install timeout (reconcile.DefaultInstallTimeout,
// 45 minutes, or serve --install-timeout), the same bound the engine waits
// for the callback. That window must cover netboot, the install, the
// reboot and the first boot up to network-online; a callback that comes
// later is refused (403) and the rebuild has already failed on its timeout.

// Paths in the installed system.
const (
	annealDir        = "/etc/anneal"
	buildIDPath      = annealDir + "/build-id"
	agentConfigPath  = annealDir + "/agent.json"
	installTokenPath = annealDir + "/install-token"
	binDir           = "/usr/local/bin"
	binPath          = binDir + "/anneal"
	unitDir          = "/etc/systemd/system"

	// installedUnit posts the install callback on the first boot.
	installedUnit = "anneal-installed.service"
	// agentUnit runs `anneal agent` for periodic reports.
	agentUnit = "anneal-agent.service"
)

// agentRefusedExit is the exit status of `anneal agent` when the server
// refuses the install callback for good (token used, expired or
// superseded, another build installed): systemd stops retrying.
const agentRefusedExit = 3

// installedUnitText is anneal-installed.service. Type=oneshot with
// Restart=on-failure needs systemd 244 or later (Ubuntu 20.04, Debian 11,
// RHEL 9 and newer). The start limit allows 120 starts in 30 minutes: at
// least 20 minutes of retries 10 s apart, most of the token's lifetime.
// ExecStartPost runs only after ExecStart succeeded.
var installedUnitText = fmt.Sprintf(`# anneal: posts the install callback once, on the first boot of the
# installed system, with the single-use token in %[1]s.
[Unit]
Description=anneal install callback
Wants=network-online.target
After=network-online.target
ConditionPathExists=%[1]s
StartLimitIntervalSec=30min
StartLimitBurst=120

[Service]
Type=oneshot
ExecStart=%[2]s agent --once --install-token-file %[1]s
ExecStartPost=/bin/rm -f %[1]s
Restart=on-failure
RestartSec=10s
RestartPreventExitStatus=%[3]d
TimeoutStartSec=2min
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=%[4]s
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
`, installTokenPath, binPath, agentRefusedExit, annealDir)

// agentUnitText is anneal-agent.service: the agent reporting facts every
// 5 minutes, started after the first callback attempt.
var agentUnitText = fmt.Sprintf(`# anneal: reports the facts of this node every 5 minutes.
[Unit]
Description=anneal agent
Wants=network-online.target
After=network-online.target %[1]s

[Service]
ExecStart=%[2]s agent --interval 5m
Restart=always
RestartSec=30s
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
`, installedUnit, binPath)

// firstBootUnits are the units the install writes, in order.
var firstBootUnits = []struct{ name, text string }{
	{installedUnit, installedUnitText},
	{agentUnit, agentUnitText},
}

// shellStyle is how an installer runs the install's last commands.
type shellStyle struct {
	// root is the installed system's mount point ("/target"), or "" when
	// the commands run chrooted in it (kickstart %post).
	root string
	// fetch downloads a URL: fetch+" FILE 'URL'".
	fetch string
	// writeFile is the command that writes text into path.
	writeFile func(path, text string) string
	// inTarget runs a command inside the installed system ("" when
	// already chrooted).
	inTarget string
	// relabel restores SELinux labels of the files written (kickstart).
	relabel bool
}

// How each installer runs the install's last commands.
var (
	// Subiquity runs each late-command with sh -c in the installer, the
	// installed system at /target; curtin in-target runs a command in it.
	// --target=/target is spelled out for the subiquity of 20.04 GA.
	autoinstallShell = shellStyle{root: "/target", fetch: "curl -fsS --retry 5 -o", writeFile: heredoc,
		inTarget: "curtin in-target --target=/target --"}
	// Anaconda runs %post chrooted in the installed system, SELinux
	// policy and all, so the files it writes get relabelled.
	kickstartShell = shellStyle{fetch: "curl -fsS --retry 5 -o", writeFile: heredoc, relabel: true}
	// d-i runs preseed/late_command, one line, with the installed system
	// at /target; in-target runs a command in it.
	preseedShell = shellStyle{root: "/target", fetch: "wget -q -O", writeFile: echoLines, inTarget: "in-target"}
)

// firstBoot lists the shell commands every installer runs last: they lay
// down the build id, agent.json, the binary, the install token and the two
// units in the installed system and enable the units. Nothing here runs
// the agent: the callback waits for the installed system's first boot.
func (in *install) firstBoot(st shellStyle) []string {
	r := st.root
	units := make([]string, 0, len(firstBootUnits))
	var unitPaths []string
	for _, u := range firstBootUnits {
		units = append(units, u.name)
		unitPaths = append(unitPaths, unitDir+"/"+u.name)
	}
	cmds := []string{
		"mkdir -p " + r + annealDir + " " + r + binDir + " " + r + unitDir,
		"echo " + in.id + " > " + r + buildIDPath,
		"(umask 077 && " + st.fetch + " " + r + agentConfigPath + " " + shq(in.configURL()+FileAgent) + ")",
		st.fetch + " " + r + binPath + " " + shq(in.agentURL()),
		"chmod 755 " + r + binPath,
		// printf is a shell builtin: the token is on no process's
		// command line, even in the installer. No newline: the agent
		// trims it anyway, and the command stays free of backslashes.
		"(umask 077 && printf '%s' " + shq(in.token) + " > " + r + installTokenPath + ")",
	}
	for _, u := range firstBootUnits {
		cmds = append(cmds, st.writeFile(r+unitDir+"/"+u.name, u.text))
	}
	if st.relabel {
		cmds = append(cmds, "if command -v restorecon >/dev/null 2>&1; then restorecon -R "+
			strings.Join(append([]string{annealDir, binPath}, unitPaths...), " ")+"; fi")
	}
	return append(cmds, strings.TrimSpace(st.inTarget+" systemctl enable "+strings.Join(units, " ")))
}

// heredocEOF ends a here-document; no unit line is this.
const heredocEOF = "ANNEAL_EOF"

// heredoc writes text into path with a quoted here-document (no expansion
// inside), for installers that run multi-line shell (autoinstall
// late-commands, kickstart %post).
func heredoc(path, text string) string {
	return "cat > " + path + " <<'" + heredocEOF + "'\n" + strings.TrimSuffix(text, "\n") + "\n" + heredocEOF
}

// echoLines writes text into path with one echo per line, for installers
// whose commands are one line (preseed/late_command). It puts no
// backslash, '$' or newline into the command, which debconf would have to
// carry through unchanged; the unit texts hold none of those, nor a
// quote, nor a line starting with '-' (the tests check).
func echoLines(path, text string) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	q := make([]string, len(lines))
	for i, l := range lines {
		q[i] = "echo " + shq(l)
	}
	return "{ " + strings.Join(q, " && ") + "; } > " + path
}

// Paths of anneal's files in an installed system, for installers that
// write them from Go (the image installer's deploy environment).
const (
	InstalledBuildIDPath     = buildIDPath
	InstalledAgentConfigPath = agentConfigPath
	InstalledBinPath         = binPath
	InstalledUnitDir         = unitDir
	InstalledAgentUnit       = agentUnit
)

// AgentUnitText is anneal-agent.service, the unit that runs the agent.
func AgentUnitText() string { return agentUnitText }
