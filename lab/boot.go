package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// maxBody bounds what a node reads of any answer.
const maxBody = 4 << 20

// outcome is how a netboot ended.
type outcome int

const (
	bootFromDisk outcome = iota // the script exits, or the netboot or install failed
	installed                   // a new build is on the disk
	hung                        // the install-fail fault: the installer never finishes
)

// boot runs one boot of the node: firmware (the boot delay), the network
// when pxe, then the disk. It ends with ctx (power off, another boot, the
// lab stopping).
func (n *Node) boot(ctx context.Context, gen uint64, pxe bool) {
	if d := n.f.bootDelay(n.name); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if pxe {
		if n.netboot(ctx, gen) == hung {
			<-ctx.Done()
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
	n.runDisk(ctx, gen)
}

// netboot does what iPXE and then the installer do.
func (n *Node) netboot(ctx context.Context, gen uint64) outcome {
	if !n.setPhase(gen, PhaseNetboot) {
		return bootFromDisk
	}
	scriptURL := n.f.cfg.BootURL + "/ipxe/" + n.mac
	if n.f.cfg.DHCP != nil {
		u, err := n.dhcpBoot(ctx)
		if err != nil {
			n.fail(gen, fmt.Errorf("netboot: %w", err))
			return bootFromDisk
		}
		scriptURL = u
	}
	script, err := n.fetchScript(ctx, scriptURL)
	if err != nil {
		n.fail(gen, fmt.Errorf("netboot: %w", err))
		return bootFromDisk
	}
	if script.exit {
		n.f.log.Debug("lab: iPXE script exits: booting from disk", "node", n.name)
		return bootFromDisk
	}
	if n.f.cfg.DHCP != nil {
		// iPXE's kernel and initrd commands: a failed or wrong download
		// goes to the script's failure path, the local disk.
		if err := n.fetchImages(ctx, script); err != nil {
			n.fail(gen, fmt.Errorf("netboot: %w", err))
			return bootFromDisk
		}
	}
	p, err := installParamsOf(script.args)
	if err != nil {
		n.fail(gen, fmt.Errorf("netboot: kernel command line: %w", err))
		return bootFromDisk
	}
	if p.node != n.name {
		n.f.log.Warn("lab: the boot server gave this node another node's install", "node", n.name, "anneal.node", p.node)
	}
	if !n.setPhase(gen, PhaseInstalling) {
		return bootFromDisk
	}
	return n.install(ctx, gen, p)
}

// installParams are the anneal.* kernel arguments.
type installParams struct {
	node, build, url, token string
}

func installParamsOf(args []string) (installParams, error) {
	var p installParams
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			continue
		}
		switch k {
		case "anneal.node":
			p.node = v
		case "anneal.build":
			p.build = v
		case "anneal.url":
			p.url = strings.TrimSuffix(v, "/")
		case "anneal.token":
			p.token = v
		}
	}
	var missing []string
	for _, kv := range [][2]string{{"anneal.node", p.node}, {"anneal.build", p.build}, {"anneal.url", p.url}, {"anneal.token", p.token}} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("no %s", strings.Join(missing, ", "))
	}
	if u, err := url.Parse(p.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return p, fmt.Errorf("anneal.url %q is not an http(s) URL", p.url)
	}
	return p, nil
}

// buildFile is build.json: the build spec and its id.
type buildFile struct {
	node.BuildSpec
	ID string `json:"id"`
}

// install fetches the install files, derives the facts the installed
// system will have, writes the disk and posts the install callback; then
// the node boots its new system, whatever the callback's answer (the
// installer cannot unwrite the disk: a node whose callback never arrived
// shows up through its agent's reports).
func (n *Node) install(ctx context.Context, gen uint64, p installParams) outcome {
	base := p.url + "/install/" + url.PathEscape(p.node) + "/" + url.PathEscape(p.token)
	shown := p.url + "/install/" + url.PathEscape(p.node) + "/{token}" // errors never carry the token
	var build buildFile
	var netcfg []byte
	err := n.retry(ctx, "build.json", func() error { return n.getJSON(ctx, base+"/build.json", shown+"/build.json", &build) })
	if err == nil {
		err = n.retry(ctx, "network-config", func() (err error) {
			netcfg, err = n.get(ctx, base+"/network-config", shown+"/network-config")
			return err
		})
	}
	var agent AgentConfig
	if err == nil {
		err = n.retry(ctx, "agent.json", func() error { return n.getJSON(ctx, base+"/agent.json", shown+"/agent.json", &agent) })
	}
	if err == nil && (agent.URL == "" || agent.Node == "" || agent.Token == "") {
		err = errors.New("agent.json: url, node and token are all required")
	}
	if err != nil {
		n.fail(gen, fmt.Errorf("install: %w", err))
		return bootFromDisk
	}
	if build.ID != "" && build.ID != p.build {
		n.f.log.Warn("lab: build.json's id is not the kernel line's anneal.build", "node", n.name, "id", build.ID, "anneal.build", p.build)
	}
	facts, err := n.factsOf(build.BuildSpec, netcfg)
	if err != nil {
		n.fail(gen, fmt.Errorf("install: %w", err))
		return bootFromDisk
	}
	switch n.f.installFault(n.name) {
	case InstallNoCallback:
		n.f.log.Info("lab: fault: the install hangs before its callback", "node", n.name)
		n.setPhase(gen, PhaseHung)
		return hung
	case InstallWrongInterface:
		n.f.log.Info("lab: fault: the install reports a wrong interface", "node", n.name)
		wrongInterface(&facts)
	}
	if ctx.Err() != nil {
		return bootFromDisk // powered off before the disk was written
	}
	n.mu.Lock()
	n.disk = Disk{BuildID: p.build, InstalledAt: time.Now().UTC(), Facts: &facts, Agent: &agent}
	n.installs++
	n.notifyLocked()
	n.markDirty()
	n.mu.Unlock()
	n.f.log.Info("lab: installed", "node", n.name, "build", p.build)

	body := struct {
		Token   string     `json:"token"`
		BuildID string     `json:"buildId"`
		Facts   node.Facts `json:"facts"`
	}{p.token, p.build, facts}
	cb := p.url + "/api/v1/nodes/" + url.PathEscape(p.node) + "/installed"
	if err := n.retry(ctx, "install callback", func() error { return n.post(ctx, cb, "", body) }); err != nil {
		n.fail(gen, fmt.Errorf("install callback: %w", err))
	} else {
		n.mu.Lock()
		n.callbacks++
		n.notifyLocked()
		n.mu.Unlock()
	}
	return installed
}

// statusError is an HTTP answer other than the one wanted.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// transient reports whether a request is worth retrying: nothing answered,
// or the server failed (5xx, 429).
func transient(err error) bool {
	if se, ok := errors.AsType[*statusError](err); ok {
		return se.code >= 500 || se.code == http.StatusTooManyRequests
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// retry runs fn until it succeeds, fails for good (a 4xx, a wrong
// answer) or Config.RetryFor has passed, as iPXE's retry loop and an
// installer's curl --retry would.
func (n *Node) retry(ctx context.Context, what string, fn func() error) error {
	deadline := time.Now().Add(n.f.cfg.RetryFor)
	wait := 250 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil || !transient(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		n.f.log.Debug("lab: node retrying", "node", n.name, "request", what, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// wrongInterface is the install fault's damage: the last VLAN gets another
// id, or else the first interface another MAC, or else a stray interface
// appears.
func wrongInterface(f *node.Facts) {
	for i := len(f.Interfaces) - 1; i >= 0; i-- {
		if f.Interfaces[i].Kind == node.KindVLAN {
			f.Interfaces[i].VLANID++
			return
		}
	}
	if len(f.Interfaces) > 0 {
		f.Interfaces[0].MAC = "02:00:5e:00:53:01"
		return
	}
	f.Interfaces = append(f.Interfaces, node.FactInterface{Name: "eth9", Kind: node.KindEther, MTU: 1500})
}

// runDisk boots the installed system, if any, and runs its agent until
// ctx ends.
func (n *Node) runDisk(ctx context.Context, gen uint64) {
	n.mu.Lock()
	if n.gen != gen {
		n.mu.Unlock()
		return
	}
	if n.disk.BuildID == "" {
		n.setPhaseLocked(PhaseNoOS)
		n.mu.Unlock()
		return
	}
	n.setPhaseLocked(PhaseRunning)
	n.mu.Unlock()
	// A system with no agent configuration (one anneal did not install,
	// until it is enrolled: SetAgent) reports nothing until it gets one.
	if !n.waitAgent(ctx, gen) {
		return
	}
	// The agent's first report, as the installed system comes up, is what
	// confirms an install to anneal (its callback alone verifies nothing):
	// it is retried like the callback, and made even when periodic reports
	// are off.
	err := n.retry(ctx, "agent report", func() error { return n.report(ctx, gen) })
	if err != nil && ctx.Err() == nil {
		n.f.log.Warn("lab: agent report", "node", n.name, "err", err)
	}
	interval := n.f.cfg.AgentInterval
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := n.report(ctx, gen); err != nil && ctx.Err() == nil {
			n.f.log.Warn("lab: agent report", "node", n.name, "err", err)
		}
	}
}

// waitAgent waits until the disk holds an agent configuration; false
// when the boot ended first.
func (n *Node) waitAgent(ctx context.Context, gen uint64) bool {
	for {
		n.mu.Lock()
		if n.gen != gen {
			n.mu.Unlock()
			return false
		}
		if n.disk.Agent != nil && n.disk.Agent.URL != "" {
			n.mu.Unlock()
			return true
		}
		ch := n.changed
		n.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
}

// report posts one agent report: the disk's build and its (possibly hand
// edited) facts, with the disk's agent configuration as it is now (anneal
// agent reads agent.json before every report).
func (n *Node) report(ctx context.Context, gen uint64) error {
	n.mu.Lock()
	if n.gen != gen || n.disk.Facts == nil || n.disk.Agent == nil {
		n.mu.Unlock()
		return nil
	}
	agent := *n.disk.Agent
	body := struct {
		BuildID string     `json:"buildId"`
		Facts   node.Facts `json:"facts"`
	}{n.disk.BuildID, cloneFacts(*n.disk.Facts)}
	n.mu.Unlock()
	u := strings.TrimSuffix(agent.URL, "/") + "/api/v1/nodes/" + url.PathEscape(agent.Node) + "/facts"
	if err := n.post(ctx, u, agent.Token, body); err != nil {
		return err
	}
	n.mu.Lock()
	n.reports++
	n.notifyLocked()
	n.mu.Unlock()
	return nil
}

// --- iPXE ---

// maxChains bounds chain loading.
const maxChains = 4

// fetchScript fetches the node's iPXE script from u and follows chain
// commands; the script's image URLs are resolved against the URL it came
// from.
func (n *Node) fetchScript(ctx context.Context, u string) (ipxeScript, error) {
	for range maxChains + 1 {
		var body []byte
		err := n.retry(ctx, "iPXE script", func() (err error) {
			body, err = n.get(ctx, u, u)
			return err
		})
		if err != nil {
			return ipxeScript{}, err
		}
		s, err := parseIPXE(body)
		if err != nil {
			return s, fmt.Errorf("%s: %w", u, err)
		}
		if s.chain == "" {
			s.url = u
			return s, nil
		}
		next, err := n.expand(s.chain)
		if err != nil {
			return s, fmt.Errorf("%s: chain: %w", u, err)
		}
		base, err := url.Parse(u)
		if err != nil {
			return s, err
		}
		ref, err := url.Parse(next)
		if err != nil {
			return s, fmt.Errorf("%s: chain %q: %w", u, next, err)
		}
		u = base.ResolveReference(ref).String()
	}
	return ipxeScript{}, fmt.Errorf("more than %d chained scripts", maxChains)
}

// expand replaces the iPXE settings a virtual NIC knows.
func (n *Node) expand(s string) (string, error) {
	r := strings.NewReplacer("${net0/mac}", n.mac, "${mac}", n.mac,
		"${net0/mac:hexhyp}", strings.ReplaceAll(n.mac, ":", "-"), "${mac:hexhyp}", strings.ReplaceAll(n.mac, ":", "-"))
	s = r.Replace(s)
	if i := strings.Index(s, "${"); i >= 0 {
		return "", fmt.Errorf("setting %s is not known to the lab", s[i:])
	}
	return s, nil
}

// ipxeScript is what the lab reads of an iPXE script: the first kernel,
// chain or exit command, and after a kernel the initrds up to boot.
type ipxeScript struct {
	exit    bool
	args    []string // the kernel's command line
	kernel  string   // the kernel's URL, as written
	initrds []string // the initrds' URLs, as written
	chain   string
	url     string // where the script came from
}

// parseIPXE reads an iPXE script as iPXE would decide what to boot: it
// must start with #!ipxe; the first kernel (its command line), chain (a
// URL) or exit/sanboot (boot from disk) decides.
func parseIPXE(body []byte) (ipxeScript, error) {
	lines := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n")
	i := 0
	for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
		i++
	}
	if i == len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i]), "#!ipxe") {
		return ipxeScript{}, errors.New("not an iPXE script (no #!ipxe line)")
	}
	var s *ipxeScript // after a kernel line
	for _, line := range lines[i+1:] {
		fields := command(strings.Fields(line))
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if strings.HasPrefix(fields[0], ":") {
			if s != nil {
				break // a label after the kernel: the failure path
			}
			continue
		}
		if s != nil {
			switch fields[0] {
			case "initrd", "imgfetch", "module":
				if rest := skipOptions(fields[1:]); len(rest) > 0 {
					s.initrds = append(s.initrds, rest[0])
				}
			case "boot", "exit", "sanboot", "chain", "chainload", "kernel", "imgexec":
				return *s, nil
			}
			continue
		}
		switch fields[0] {
		case "kernel", "chain", "chainload", "imgexec":
			rest := skipOptions(fields[1:])
			if len(rest) == 0 {
				return ipxeScript{}, fmt.Errorf("%s without an image", fields[0])
			}
			if fields[0] == "kernel" {
				s = &ipxeScript{kernel: rest[0], args: rest[1:]}
				continue
			}
			return ipxeScript{chain: rest[0]}, nil
		case "exit", "sanboot":
			return ipxeScript{exit: true}, nil
		}
	}
	if s != nil {
		return *s, nil
	}
	return ipxeScript{}, errors.New("the script neither loads a kernel nor exits")
}

// command is a line's first command: its fields up to "||", "&&" or ";".
func command(fields []string) []string {
	for i, f := range fields {
		if f == "||" || f == "&&" || f == ";" {
			return fields[:i]
		}
	}
	return fields
}

// skipOptions drops an image command's options (--name x, --autofree).
func skipOptions(f []string) []string {
	for len(f) > 0 && strings.HasPrefix(f[0], "-") {
		opt := f[0]
		f = f[1:]
		switch opt {
		case "--name", "-n", "--timeout", "-t":
			if len(f) > 0 {
				f = f[1:]
			}
		}
	}
	return f
}

// --- HTTP ---

// get fetches u; shown names it in errors.
func (n *Node) get(ctx context.Context, u, shown string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, err)
	}
	req.Header.Set("User-Agent", "anneal-lab-node/"+n.name)
	resp, err := n.f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, scrub(err, u, shown))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", shown, scrub(err, u, shown))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, msg: fmt.Sprintf("GET %s: %s", shown, resp.Status)}
	}
	return body, nil
}

func (n *Node) getJSON(ctx context.Context, u, shown string, v any) error {
	body, err := n.get(ctx, u, shown)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", shown, err)
	}
	return nil
}

// post posts v as JSON, with a bearer token unless "", and wants a 2xx.
func (n *Node) post(ctx context.Context, u, bearer string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "anneal-lab-node/"+n.name)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := n.f.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, msg: fmt.Sprintf("POST %s: %s: %s", u, resp.Status, strings.TrimSpace(string(msg)))}
	}
	return nil
}

// scrub replaces a URL carrying a token by its shown form in an error's
// text; the error still unwraps to the original.
func scrub(err error, u, shown string) error {
	if u == shown || !strings.Contains(err.Error(), u) {
		return err
	}
	return &scrubbed{msg: strings.ReplaceAll(err.Error(), u, shown), err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
