package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/spf13/cobra"
)

func newEnrollCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "enroll NODE...",
		Short: "Give machines anneal did not install their agent configuration, to adopt them without a rebuild",
		Long: `Enroll onboards a machine that already runs what the site declares for it
(brownfield) without reinstalling it. The running anneal serve (--server)
issues the node a new agent token (an earlier enrollment's is revoked) and
answers with the files an install would have written: agent.json (the
netboot server's URL, the node, the token), build-id (the build the site
wants for the node) and anneal-agent.service. Enroll writes them to
--out DIR/NODE/, mode 0600, and prints where they go on the machine.

Once they are there and the agent runs, its first report is verified as an
install's: the desired build id with facts (hostname, kernel, OS version,
interfaces, addresses, routes, resolvers) that match the build adopts the
node (verified, nothing rebuilt). Otherwise it is not adopted: anneal nodes
and /api/v1/nodes show the differences, and anneal holds it; nothing is
power-cycled because of an enrollment. Fix the machine or the site (the next
report adopts it), or let anneal rebuild it: anneal nodes retry NODE.

Only a node the site declares, and that anneal has not built, is enrolled:
one anneal built, is building or failed to build is refused (409). Declare a
new machine with state: maintenance until it is adopted, so that anneal does
not rebuild it first. The token is a credential: --out - prints the files on
stdout instead (for a pipe), otherwise nothing of them is printed.`,
		Args: cobra.MinimumNArgs(1),
	}
	api := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the API's bearer token")
	out := c.Flags().String("out", "", "write each node's files to DIR/NODE/ (mode 0600); - prints them on stdout (they hold the agent token)")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if *tokenRef == "" {
			return usagef("enrolling needs the API's token: --token REF (env:NAME or file:PATH)")
		}
		if *out == "" {
			return usagef("--out DIR is required: the files hold the node's agent token (--out - prints them)")
		}
		for _, name := range args {
			if !safeName(name) {
				return usagef("%q is not a node name", name)
			}
		}
		token, err := resolveToken(*tokenRef)
		if err != nil {
			return failure(fmt.Errorf("--token: %w", err))
		}
		w := c.OutOrStdout()
		var failed []string
		for _, name := range args {
			var e reconcile.Enrollment
			if err := apiSend(ctx, api, http.MethodPost, "/api/v1/nodes/"+url.PathEscape(name)+"/enroll", token, nil, &e); err != nil {
				fmt.Fprintf(c.ErrOrStderr(), "anneal enroll: %s: %v\n", name, err)
				failed = append(failed, name)
				continue
			}
			if err := writeEnrollment(w, *out, &e); err != nil {
				fmt.Fprintf(c.ErrOrStderr(), "anneal enroll: %s: %v\n", name, err)
				failed = append(failed, name)
			}
		}
		if len(failed) > 0 {
			return failure(fmt.Errorf("not enrolled: %s", strings.Join(failed, ", ")))
		}
		return nil
	}
	return c
}

// liveState is a node's live state as anneal nodes shows it: "enrolled"
// for an enrolled node not adopted yet.
func liveState(l *api.LiveView) string {
	if l.State == "" && !l.Enrolled.IsZero() {
		return "enrolled"
	}
	return cmp.Or(l.State, "unknown")
}

// safeName reports whether s can name a directory under --out.
func safeName(s string) bool {
	return s != "" && filepath.IsLocal(s) && !strings.ContainsAny(s, `/\`) && !strings.HasPrefix(s, ".")
}

// writeEnrollment writes e's files to dir/NODE/ (mode 0600), or to w when
// dir is "-", and tells where they go and what to run on the machine.
func writeEnrollment(w io.Writer, dir string, e *reconcile.Enrollment) error {
	if e.Node == "" || len(e.Files) == 0 {
		return errors.New("the daemon answered no files")
	}
	if !safeName(e.Node) {
		return fmt.Errorf("the daemon answered node %q", e.Node)
	}
	nodeDir := filepath.Join(dir, e.Node)
	if dir != "-" {
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	fmt.Fprintf(w, "enrolled %s: it must report build %s; an earlier agent token of %s is revoked\n", e.Node, e.BuildID, e.Node)
	for _, f := range e.Files {
		if !safeName(f.Name) || !strings.HasPrefix(f.Path, "/") {
			return fmt.Errorf("the daemon answered a file %q for %q", f.Name, f.Path)
		}
		if dir == "-" {
			fmt.Fprintf(w, "# %s (mode %s)\n%s", f.Path, f.Mode, f.Content)
			if !strings.HasSuffix(f.Content, "\n") {
				fmt.Fprintln(w)
			}
			continue
		}
		if err := writePrivate(filepath.Join(nodeDir, f.Name), []byte(f.Content)); err != nil {
			return err
		}
		fmt.Fprintf(w, "  %s -> %s (mode %s)\n", filepath.Join(nodeDir, f.Name), f.Path, f.Mode)
	}
	if dir == "-" {
		return nil
	}
	fmt.Fprintf(w, "agent.json holds %s's agent token, a credential: copy it only to that machine, then delete %s.\n", e.Node, nodeDir)
	fmt.Fprintf(w, "On %s, as root, in a copy of %s:\n", e.Node, nodeDir)
	fmt.Fprintf(w, "  mkdir -p /etc/anneal\n")
	for _, f := range e.Files {
		fmt.Fprintf(w, "  install -m %s %s %s\n", f.Mode, f.Name, f.Path)
	}
	if e.BinaryURL != "" {
		fmt.Fprintf(w, "  curl -fsS -o %s %s && chmod 755 %s   # or the same anneal release by other means\n", e.BinaryPath, e.BinaryURL, e.BinaryPath)
	}
	fmt.Fprintf(w, "  %s agent --once   # one report now: 403 means this is not the node's latest enrollment\n", cmp.Or(e.BinaryPath, "anneal"))
	if e.Unit != "" {
		fmt.Fprintf(w, "  systemctl daemon-reload && systemctl enable --now %s\n", e.Unit)
	}
	fmt.Fprintf(w, "anneal adopts %s (verified, not rebuilt) when its report names build %s with facts that match the build; otherwise anneal nodes shows why, and it is held, never power-cycled.\n", e.Node, e.BuildID)
	return nil
}

// writePrivate writes data to path with mode 0600, atomically (a
// temporary file renamed over it): never readable by others, even for a
// moment, even when the file existed with another mode.
func writePrivate(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}
