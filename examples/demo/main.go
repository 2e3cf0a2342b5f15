// Command demo is `make demo`: the example site converged against the
// simulated lab, with nothing installed but Go (git is go-git here, not
// the git CLI).
//
// It copies examples/site-repo into a fresh git repository, starts
// `anneal lab` (virtual Redfish BMCs and nodes, DNS servers) and `anneal
// serve` against the repository, waits while every node is rebuilt and
// verified, prints the drift report, commits a patch set bump for rack e1,
// shows its review plan and the canary and rolling rebuild, reverts it and
// shows the fleet converge back. It stops everything it started and
// removes its files.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/anneal-dev/anneal/lab"
)

// The example site's secrets, for the lab: the lab's BMCs and DNS servers
// and anneal resolve the same references.
var labEnv = []string{
	"ANNEAL_BMC_PASSWORD=lab-bmc-password",
	"ANNEAL_TSIG_SECRET=bGFiLXRzaWctc2VjcmV0LWZvci10aGUtZGVtbw==",
	"ANNEAL_PDNS_API_KEY=lab-pdns-api-key",
	"ANNEAL_API_TOKEN=" + demoToken,
}

// demoToken is the demo daemon's API token (serve --token): the
// dashboard's actions need it. It is the demo's, like the lab's secrets
// above, and protects nothing else.
const demoToken = "demo-api-token"

func main() {
	bin := flag.String("anneal", "bin/anneal", "the anneal binary")
	site := flag.String("site", "examples/site-repo", "the site to converge")
	keep := flag.Bool("keep", false, "at the end, leave serve and the lab running with the dashboard until Ctrl-C, and keep the work directory")
	secrets := flag.String("secrets", "examples/lab-secrets.yaml", "the operator's secret grants for the site (anneal --secrets)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *site, *secrets, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type demo struct {
	bin, work, repo, api string
	env                  []string
	procs                []*exec.Cmd
	wt                   *git.Worktree
	r                    *git.Repository
}

func run(ctx context.Context, bin, site, secrets string, keep bool) error {
	start := time.Now()
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if secrets, err = filepath.Abs(secrets); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "anneal-demo-")
	if err != nil {
		return err
	}
	d := &demo{bin: abs, work: work, repo: filepath.Join(work, "site"), env: append(os.Environ(), labEnv...)}
	defer func() {
		d.stopAll()
		if keep {
			fmt.Println("work directory kept:", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	step("a git repository with the example site (commit A)")
	if err := os.CopyFS(d.repo, os.DirFS(site)); err != nil {
		return err
	}
	if d.r, err = git.PlainInitWithOptions(d.repo, &git.PlainInitOptions{InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")}}); err != nil {
		return err
	}
	if d.wt, err = d.r.Worktree(); err != nil {
		return err
	}
	revA, err := d.commit("Site lab1: 14 nodes in 3 racks")
	if err != nil {
		return err
	}

	api, boot := freeAddr(), freeAddr()
	d.api = "http://" + api
	step("anneal lab: a virtual Redfish BMC and node per server, the site's DNS servers (BIND and PowerDNS stand-ins)")
	labDir := filepath.Join(work, "lab")
	if err := d.start("lab", "lab", "--site", d.repo, "--dir", labDir, "--secrets", secrets, "--boot-url", "http://"+boot, "--boot-delay", "1s"); err != nil {
		return err
	}
	if _, err := lab.WaitEndpoints(ctx, labDir, 20*time.Second); err != nil {
		return fmt.Errorf("the lab did not start (see %s): %w", filepath.Join(work, "lab.log"), err)
	}
	step("anneal serve: follows the repository, converges DNS, netboot and rebuilds through the lab's BMCs")
	if err := d.start("serve", "serve", "--repo", d.repo, "--branch", "main", "--interval", "1s", "--state", filepath.Join(work, "state.db"),
		"--secrets", secrets, "--listen", api, "--netboot-listen", boot, "--lab", labDir, "--install-timeout", "30s",
		"--token", "env:ANNEAL_API_TOKEN"); err != nil {
		return err
	}
	fmt.Printf("dashboard: %s/ (watch the rollouts there; its actions take the demo's API token %q)\n", d.api, demoToken)
	step("waiting for commit A to converge: every active node netboots, installs, reports and is verified")
	if err := d.anneal(ctx, "status", "--server", d.api, "--wait", revA, "--timeout", "60s"); err != nil {
		return err
	}
	step("the fleet: every active node verified on its desired build (e2n03 is in maintenance)")
	if err := d.anneal(ctx, "nodes", "--site", d.repo, "--server", d.api); err != nil {
		return err
	}

	step("commit B: rack e1 moves to patch set 2026-12")
	if err := bumpRack(filepath.Join(d.repo, "nodes", "east-e1.yaml"), "2026-12"); err != nil {
		return err
	}
	revB, err := d.commit("Rack e1: patch set 2026-12")
	if err != nil {
		return err
	}
	step("the review plan of A..B, as CI posts it on the pull request (no credentials, no live fleet)")
	_ = d.anneal(ctx, "plan", "--repo", d.repo, "--base", revA, "--head", revB) // exit 2: changes
	step("the rollout of B: the canary first, then at most one node per rack at a time")
	if err := d.anneal(ctx, "status", "--server", d.api, "--wait", revB, "--timeout", "60s"); err != nil {
		return err
	}

	step("git revert B: the fleet converges back to A's builds")
	revC, err := d.revert(revB)
	if err != nil {
		return err
	}
	if err := d.anneal(ctx, "status", "--server", d.api, "--wait", revC, "--timeout", "60s"); err != nil {
		return err
	}
	if keep {
		step(fmt.Sprintf("done in %s; serve and the lab keep running", time.Since(start).Round(100*time.Millisecond)))
		fmt.Printf("dashboard: %s/  (API token %q)\nwork directory: %s\n", d.api, demoToken, work)
		fmt.Printf("from another shell (bin/anneal):\n  anneal status --server %[1]s\n  anneal events --server %[1]s --follow\n"+
			"  export ANNEAL_API_TOKEN=%[2]s; anneal suspend --server %[1]s --token env:ANNEAL_API_TOKEN\n", d.api, demoToken)
		fmt.Println("Ctrl-C stops serve and the lab.")
		<-ctx.Done()
		return nil
	}
	step(fmt.Sprintf("done in %s; stopping serve and the lab (make demo KEEP=1 leaves them up with the dashboard at %s/)", time.Since(start).Round(100*time.Millisecond), d.api))
	return nil
}

func step(s string) { fmt.Printf("\n\x1b[1m== %s\x1b[0m\n", s) }

// anneal runs the CLI with its output on the terminal.
func (d *demo) anneal(ctx context.Context, args ...string) error {
	fmt.Printf("$ anneal %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = d.env, os.Stdout, os.Stderr
	return cmd.Run()
}

// start runs a daemon with its log in WORK/NAME.log.
func (d *demo) start(name string, args ...string) error {
	logf, err := os.Create(filepath.Join(d.work, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = d.env, logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Printf("$ anneal %s &   (log: %s)\n", strings.Join(args, " "), logf.Name())
	d.procs = append(d.procs, cmd)
	return nil
}

// stopAll stops the daemons, newest first, and waits for them.
func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
}

func (d *demo) commit(msg string) (string, error) {
	if err := d.wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return "", err
	}
	h, err := d.wt.Commit(msg, &git.CommitOptions{All: true, Author: &object.Signature{Name: "Site Operator", Email: "ops@example.net", When: time.Now()}})
	if err != nil {
		return "", err
	}
	fmt.Printf("commit %s  %s\n", h.String()[:12], msg)
	return h.String(), nil
}

// revert commits the parent's tree of rev: `git revert` of the last commit.
func (d *demo) revert(rev string) (string, error) {
	c, err := d.r.CommitObject(plumbing.NewHash(rev))
	if err != nil {
		return "", err
	}
	parent, err := c.Parent(0)
	if err != nil {
		return "", err
	}
	if err := d.wt.Checkout(&git.CheckoutOptions{Hash: parent.Hash, Force: true}); err != nil {
		return "", err
	}
	// Back on main, with the parent's files in the work tree.
	head := plumbing.NewHashReference(plumbing.NewBranchReferenceName("main"), c.Hash)
	if err := d.r.Storer.SetReference(head); err != nil {
		return "", err
	}
	if err := d.r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, head.Name())); err != nil {
		return "", err
	}
	return d.commit(fmt.Sprintf("Revert %q\n\nThis reverts commit %s.", strings.SplitN(c.Message, "\n", 2)[0], rev))
}

var (
	hardwareLine = regexp.MustCompile(`(?m)^hardwareProfile: .*$`)
	patchSetLine = regexp.MustCompile(`(?m)^patchSet: .*$`)
)

// bumpRack sets the patch set of every node in a rack file: it replaces a
// node's patchSet line, or adds one after its hardwareProfile.
func bumpRack(file, patchSet string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	line := "patchSet: \"" + patchSet + "\""
	docs := strings.Split(string(data), "\n---\n")
	for i, doc := range docs {
		if patchSetLine.MatchString(doc) {
			docs[i] = patchSetLine.ReplaceAllString(doc, line)
		} else {
			docs[i] = hardwareLine.ReplaceAllStringFunc(doc, func(l string) string { return l + "\n" + line })
		}
	}
	return os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
