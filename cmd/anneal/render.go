package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/spf13/cobra"
)

// placeholderToken stands in for the single-use install token, which only
// the running netboot server mints (it needs the key and an armed node).
const placeholderToken = "INSTALL-TOKEN"

func newRenderCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "render --node NAME",
		Short: "Print what a node's rebuild would be served: iPXE script, install config, network config",
		Long: `Render prints, for one node, exactly what the netboot server hands it during a
rebuild: the iPXE script (kernel, initrd, command line), the install
configuration for its image's installer (autoinstall/cloud-init, kickstart,
preseed, or image: deploy.json for anneal's deploy environment) and its network configuration (netplan v2), all derived from the
site alone. The install token is shown as ` + placeholderToken + `: the running
server mints a single-use one per rebuild.`,
		Args: noArgs,
	}
	site := addSiteFlags(c)
	node := c.Flags().String("node", "", "the node to render (required)")
	_ = c.RegisterFlagCompletionFunc("node", completeNodes(site, nil))
	baseURL := c.Flags().String("netboot-url", "http://netboot.invalid:8080", "the netboot server's base URL as nodes reach it")
	direct := c.Flags().Bool("direct-artifacts", false, "a script that fetches the kernel and initrd from the image's URLs (as serve --artifact-cache none), not the netboot server's verified copies")
	file := c.Flags().String("file", "", "print only this file (script, network-config, user-data, ks.cfg, ...)")
	out := addOutputFlag(c, "text", "json")
	c.RunE = func(c *cobra.Command, _ []string) error {
		if *node == "" {
			return usagef("--node is required")
		}
		s, err := site.loadValid(c.Context())
		if err != nil {
			return err
		}
		n := s.Node(*node)
		if n == nil {
			return usagef("node %q is not in the site", *node)
		}
		render := boot.Render
		if *direct {
			render = boot.RenderDirect
		}
		r, err := render(s, n, *baseURL, placeholderToken)
		if err != nil {
			return failure(err)
		}
		w := c.OutOrStdout()
		if *file != "" {
			switch body, ok := r.Files[*file]; {
			case *file == "script":
				fmt.Fprint(w, r.Script)
			case ok:
				fmt.Fprint(w, body)
			default:
				return usagef("%s has no file %q (it has: script, %v)", *node, *file, slices.Sorted(maps.Keys(r.Files)))
			}
			return nil
		}
		if out.value == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(r); err != nil {
				return failure(err)
			}
			return nil
		}
		fmt.Fprintf(w, "# node %s, build %s, installer %s\n\n==> iPXE script (GET /ipxe/MAC)\n%s\n", r.Node, r.BuildID, r.Installer, r.Script)
		for _, name := range slices.Sorted(maps.Keys(r.Files)) {
			fmt.Fprintf(w, "==> %s (GET /install/%s/%s/%s)\n%s\n", name, r.Node, placeholderToken, name, r.Files[name])
		}
		return nil
	}
	return c
}
