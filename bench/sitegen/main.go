// Command sitegen writes a valid synthetic anneal site of any size, in the
// format of examples/site-repo, for scale tests and benchmarks:
//
//	go run ./bench/sitegen -nodes 10000 -out /tmp/site-10k [-seed 1]
//	go run ./cmd/anneal validate --site /tmp/site-10k
//
// The same flags always write the same bytes. See package
// github.com/anneal-dev/anneal/bench/sitegen/gen for the layout.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("sitegen", flag.ContinueOnError)
	fl.SetOutput(stderr)
	nodes := fl.Int("nodes", 1000, fmt.Sprintf("number of nodes (1 to %d)", gen.MaxNodes))
	out := fl.String("out", "", "directory to write the site into (must be empty or not exist)")
	seed := fl.Uint64("seed", 1, "seed for roles, hardware, bridges and patch-set pins")
	force := fl.Bool("force", false, "first remove what a previous sitegen run wrote into -out")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: sitegen -nodes N -out DIR [-seed S] [-force]\n\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fl.NArg() > 0 {
		fl.Usage()
		return 2
	}
	if *force {
		if err := clean(*out); err != nil {
			fmt.Fprintln(stderr, "sitegen:", err)
			return 1
		}
	}
	res, err := gen.Generate(*out, gen.Options{Nodes: *nodes, Seed: *seed})
	if err != nil {
		fmt.Fprintln(stderr, "sitegen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d nodes, %d regions, %d racks, %d networks, %d zones; %d files, %.1f MiB\n",
		*out, res.Nodes, res.Regions, res.Racks, res.Networks, res.Zones, len(res.AllFiles()), float64(res.Bytes)/(1<<20))
	return 0
}

// clean removes the files and folders sitegen writes, and nothing else; the
// directory must then be empty for Generate to accept it.
func clean(dir string) error {
	for _, p := range []string{"site.yaml", "networks.yaml", "dns.yaml", "hardware", "images", "nodes"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			return err
		}
	}
	return nil
}
