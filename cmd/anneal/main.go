// Command anneal reconciles a bare-metal fleet with the site repo that
// declares it: validate, plan and apply, or run as a daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, decided in one place (exitCode): an error wins over drift.
const (
	exitOK      = 0  // valid, no changes
	exitError   = 1  // invalid site or a failure
	exitChanges = 2  // plan: changes present
	exitUsage   = 64 // bad flags or arguments (sysexits EX_USAGE)
)

func main() {
	runAsInit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	code := exitCode(err)
	if err != nil && !errors.As(err, new(*silentError)) {
		fmt.Fprintf(stderr, "anneal: %v\n", err)
		if code == exitUsage {
			fmt.Fprintln(stderr, "Run 'anneal --help' for usage.")
		}
	}
	return code
}

// exitError carries a code chosen by a command.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// silentError is a result the command already reported on its output
// (invalid site, drift): only the exit code is left to give.
type silentError struct{ code int }

func (e *silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func failure(err error) error { return &codedError{code: exitError, err: err} }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var s *silentError
	if errors.As(err, &s) {
		return s.code
	}
	var c *codedError
	if errors.As(err, &c) {
		return c.code
	}
	// Anything cobra returns itself is about the command line.
	return exitUsage
}
