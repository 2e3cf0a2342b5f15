// Command netboot measures anneal's netboot path at fleet scale: a boot
// storm of simulated machines against the DHCP server (pxe/dhcp) and the
// netboot HTTP server (pxe/boot) over a real bbolt node store, DHCP
// throughput against ISC Kea with perfdhcp, and the server's memory.
//
//	go run ./bench/netboot storm -nodes 1000     # boot storm, per-phase latencies, memory
//	go run ./bench/netboot storm -nodes 10000    # the same at 10,000 machines
//	go run ./bench/netboot storm -nodes 10000 -spread 20s
//	go run ./bench/netboot perfdhcp -nodes 1000  # anneal vs kea-dhcp4 under perfdhcp (root, netns)
//
// The storm runs the server half (site, bbolt store, DHCP, HTTP) in a child
// process of this program (the serve subcommand), so the memory figures are
// the server's alone; -inprocess runs it in this process instead. Figures
// are printed as a table; nothing here fails on a time, only on errors.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "storm":
		err = stormCmd(args[1:], stdout, stderr)
	case "perfdhcp":
		err = perfCmd(args[1:], stdout, stderr)
	case "serve":
		err = serveCmd(args[1:], stderr)
	default:
		usage(stderr)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "netboot:", err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  netboot storm [-nodes N] [-spread D] [-inprocess] [-rcvbuf BYTES] [-cpuprofile F] [-keep]
      boot storm of N simulated machines (root: relays bind port 67)
  netboot perfdhcp [-nodes N] [-rates R,R] [-period S] [-repeat K] [-kea-mt] [-keep]
      anneal vs kea-dhcp4 under perfdhcp (root: network namespaces)
  netboot serve ...
      the server half (started by storm and perfdhcp)
`)
}
