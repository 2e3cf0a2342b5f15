package main

import (
	"fmt"

	"github.com/anneal-dev/anneal/schema"
)

// siteSummary counts what a site declares.
type siteSummary struct {
	Regions          int            `json:"regions"`
	Racks            int            `json:"racks"`
	Nodes            int            `json:"nodes"`
	NodesByState     map[string]int `json:"nodesByState"`
	Networks         int            `json:"networks"`
	HardwareProfiles int            `json:"hardwareProfiles"`
	Images           int            `json:"images"`
	PatchSets        int            `json:"patchSets"`
	Addresses        int            `json:"addresses"`
	Zones            int            `json:"zones"`
	DNSTargets       int            `json:"dnsTargets"`
}

func summarize(s *schema.Site) *siteSummary {
	sum := &siteSummary{
		Regions:          len(s.Config.Regions),
		Nodes:            len(s.Nodes),
		NodesByState:     map[string]int{},
		Networks:         len(s.Networks),
		HardwareProfiles: len(s.HardwareProfiles),
		Images:           len(s.Images),
		PatchSets:        len(s.PatchSets),
	}
	for _, r := range s.Config.Regions {
		sum.Racks += len(r.Racks)
	}
	for _, n := range s.Nodes {
		sum.NodesByState[string(n.State)]++
		for _, a := range n.Addresses {
			if a.IPv4.IsValid() {
				sum.Addresses++
			}
			if a.IPv6.IsValid() {
				sum.Addresses++
			}
		}
	}
	if s.DNS != nil {
		sum.Zones = len(s.DNS.Zones)
		sum.DNSTargets = len(s.DNS.Targets)
	}
	return sum
}

func (s *siteSummary) oneLine() string {
	return fmt.Sprintf("%d regions, %d racks, %d nodes, %d networks, %d hardware profiles, %d images, %d patch sets, %d addresses, %d zones on %d DNS targets",
		s.Regions, s.Racks, s.Nodes, s.Networks, s.HardwareProfiles, s.Images, s.PatchSets, s.Addresses, s.Zones, s.DNSTargets)
}
