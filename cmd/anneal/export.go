package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/spf13/cobra"
)

func newDNSCmd() *cobra.Command {
	c := &cobra.Command{Use: "dns", Short: "DNS utilities"}
	c.AddCommand(newExportCmd())
	return c
}

func newExportCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "export",
		Short: "Write one RFC 1035 zone file per zone the site declares",
		Long: `Export writes <zone>.zone for every zone of the site (e.g. east.example.net.zone,
10.10.in-addr.arpa.zone), each with an SOA, NS and every record the site
declares, valid for BIND's named-checkzone.`,
		Args: noArgs,
	}
	site := addSiteFlags(c)
	out := c.Flags().String("out", "", "directory to write the zone files into (required)")
	ns := c.Flags().String("ns", "localhost.", "name server for each zone's SOA and apex NS when the site declares none")
	serial := c.Flags().Uint32("serial", 1, "SOA serial")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if *out == "" {
			return usagef("--out is required")
		}
		s, err := site.loadValid(c.Context())
		if err != nil {
			return err
		}
		desired, err := dns.Compile(s)
		if err != nil {
			return failure(err)
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return failure(err)
		}
		for _, z := range desired.Zones {
			data, err := zoneFile(z, *ns, *serial)
			if err != nil {
				return failure(err)
			}
			path := filepath.Join(*out, z.Zone+".zone")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return failure(err)
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (%d RRsets)\n", path, len(z.RRsets))
		}
		return nil
	}
	return c
}

func zoneFile(z *dns.DesiredZone, ns string, serial uint32) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "; zone %s, written by anneal dns export\n$ORIGIN %s.\n$TTL %d\n", z.Zone, z.Zone, dns.DefaultTTL)
	fmt.Fprintf(&b, "@ IN SOA %s hostmaster.%s. %d 3600 600 1209600 300\n", ns, z.Zone, serial)
	hasNS := false
	for _, s := range z.RRsets {
		if s.Name == z.Zone && s.Type == dns.TypeNS {
			hasNS = true
		}
	}
	if !hasNS {
		fmt.Fprintf(&b, "@ IN NS %s\n", ns)
	}
	for _, s := range z.RRsets {
		rrs, err := s.RRs()
		if err != nil {
			return nil, err
		}
		for _, rr := range rrs {
			b.WriteString(rr.String())
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}
