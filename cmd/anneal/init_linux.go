//go:build linux

package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/anneal-dev/anneal/pxe/deploy"
)

// runAsInit runs the image installer's deploy environment when this
// binary is /init of anneal's deploy initramfs (PID 1, started as
// "/init"); it never returns then.
func runAsInit() {
	if os.Getpid() != 1 || filepath.Base(os.Args[0]) != "init" {
		return
	}
	deploy.Main(slog.New(slog.NewTextHandler(os.Stderr, nil)))
}
