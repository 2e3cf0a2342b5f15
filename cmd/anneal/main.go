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

	"github.com/spf13/cobra"
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
	started := false
	root := newRoot(stdout, stderr)
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		// Past cobra's checks of flags and arguments: from here on an
		// error is the command's, not the command line's.
		started = true
		return nil
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !started && !errors.As(err, new(*codedError)) && !errors.As(err, new(*silentError)) {
		err = &usageError{err}
	}
	code := exitCode(err)
	if err != nil && !errors.As(err, new(*silentError)) {
		// The command's path names it once: errors inside never repeat it.
		path := "anneal"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		if code == exitUsage {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", path)
		}
	}
	return code
}

// usageError is a mistake on the command line (a flag, an argument, a
// missing or conflicting option): it prints the hint to --help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef is a usage error of a command, found after cobra's own checks.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
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
	if errors.As(err, new(*usageError)) {
		return exitUsage
	}
	return exitError
}
