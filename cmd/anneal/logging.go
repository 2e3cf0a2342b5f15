package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// Log formats of --log-format.
var logFormats = []string{"text", "json"}

// addLogFormatFlag adds the persistent --log-format to the root.
func addLogFormatFlag(root *cobra.Command) {
	f := &outputFlag{value: logFormats[0], allowed: logFormats, typ: "text|json"}
	root.PersistentFlags().Var(f, "log-format", "log lines as text (logfmt) or json (one JSON object a line)")
}

// newLogger is every command's logger: to w, at level, in the format
// --log-format names.
func newLogger(c *cobra.Command, w io.Writer, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f := c.Flag("log-format"); f != nil && f.Value.String() == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
