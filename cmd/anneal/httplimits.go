package main

import (
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/pxe/stack"
	"github.com/spf13/cobra"
)

// httpLimitFlags bound what clients can hold of serve's HTTP servers (the
// API, netboot, pprof), each server on its own.
type httpLimitFlags struct {
	maxConns, maxConnsPerSource int
	readTimeout, writeTimeout   time.Duration
	idleTimeout                 time.Duration
	// perSourceSet: --max-conns-per-source was given (serve --lab keeps it
	// off on the netboot server otherwise: every virtual node is 127.0.0.1).
	perSourceSet func() bool
}

func addHTTPLimitFlags(c *cobra.Command) *httpLimitFlags {
	f := &httpLimitFlags{}
	c.Flags().IntVar(&f.maxConns, "max-conns", netlimit.DefaultMaxConns, "connections each HTTP server (API, netboot, pprof) keeps open at once; more are reset at once (0: no bound)")
	c.Flags().IntVar(&f.maxConnsPerSource, "max-conns-per-source", netlimit.DefaultMaxConnsPerSource, "connections each HTTP server keeps open at once from one client address (an IPv6 /64); 0: no bound (netboot behind NAT)")
	c.Flags().DurationVar(&f.readTimeout, "http-read-timeout", netlimit.DefaultReadTimeout, "a request's headers and body must arrive within this (headers within 10 s at most)")
	c.Flags().DurationVar(&f.writeTimeout, "http-write-timeout", netlimit.DefaultWriteTimeout, "a response that moves no bytes this long is cut: a progress deadline, so long downloads of a steady reader are not")
	c.Flags().DurationVar(&f.idleTimeout, "http-idle-timeout", netlimit.DefaultIdleTimeout, "a kept-alive connection idle this long is closed")
	f.perSourceSet = func() bool { return c.Flags().Changed("max-conns-per-source") }
	return f
}

// limits are one server's, with bodies bounded by maxBody.
func (f *httpLimitFlags) limits(maxBody int64) netlimit.Limits {
	off := func(v int) int {
		if v <= 0 {
			return -1
		}
		return v
	}
	offDur := func(d time.Duration) time.Duration {
		if d <= 0 {
			return -1
		}
		return d
	}
	header := netlimit.DefaultReadHeaderTimeout
	if f.readTimeout > 0 {
		header = min(header, f.readTimeout)
	}
	return netlimit.Limits{
		MaxConns: off(f.maxConns), MaxConnsPerSource: off(f.maxConnsPerSource),
		ReadHeaderTimeout: header, ReadTimeout: offDur(f.readTimeout),
		WriteTimeout: offDur(f.writeTimeout), IdleTimeout: offDur(f.idleTimeout),
		MaxBodyBytes: maxBody,
	}
}

// netbootLimits are the netboot server's: with --lab, every virtual node
// comes from 127.0.0.1, so the per-source bound is off unless given.
func (f *httpLimitFlags) netbootLimits(lab bool) netlimit.Limits {
	l := f.limits(stack.MaxBody)
	if lab && !f.perSourceSet() {
		l.MaxConnsPerSource = -1
	}
	return l
}

// apiMaxBody bounds the API's request bodies.
const apiMaxBody = api.MaxBody
