package main

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// TestValidateStopsOnSIGTERM: SIGTERM cancels main's context (the same
// signal.NotifyContext as main), and validate then stops with a message
// saying it was interrupted, exit 1, instead of checking the site.
func TestValidateStopsOnSIGTERM(t *testing.T) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done() // the signal arrived
	var out, errs bytes.Buffer
	code := run(ctx, []string{"validate", "--site", example}, &out, &errs)
	if code != exitError {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitError, out.String(), errs.String())
	}
	if !strings.Contains(errs.String(), "validate interrupted") || !strings.Contains(errs.String(), "context canceled") {
		t.Fatalf("stderr does not say validate was interrupted:\n%s", errs.String())
	}
	if strings.Contains(out.String(), "is valid") {
		t.Fatalf("validate reported a result after SIGTERM:\n%s", out.String())
	}
}
