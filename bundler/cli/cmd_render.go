package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/render"
	"github.com/pullship/pullship/bundler/shared/cliutil"
	"github.com/pullship/pullship/schema"
)

type renderOptions struct {
	fleet     string
	secretsID string
}

func newRenderCmd(env Env) *cobra.Command {
	var o renderOptions
	cmd := &cobra.Command{
		Use:   "render --fleet fleet.toml",
		Short: "Show what every node of a fleet will run, without releasing",
		Long: `render renders the fleet's templates for every node, as release does, and
prints what each node's release entry holds: its services in start order
(image, container, what they depend on, which one the overlay address is
attached to) and its files with the service a change of each reloads. It
reads no repository and no image, and publishes nothing.`,
		Example: `  pullship render --fleet fleet.toml`,
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runRender(cmd.Context(), env, o) },
	}
	cmd.Flags().StringVar(&o.fleet, "fleet", "", "fleet.toml (its templates are read relative to it)")
	cmd.Flags().StringVar(&o.secretsID, "secrets-identity", "", "age identity file that decrypts the fleet's node secrets")
	return cmd
}

func runRender(_ context.Context, env Env, o renderOptions) error {
	if o.fleet == "" {
		return cliutil.Usage(errors.New("render: --fleet is required"))
	}
	data, err := os.ReadFile(o.fleet)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	f, err := render.ParseFleet(o.fleet, data)
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	var ids []age.Identity
	if o.secretsID != "" {
		if ids, err = bundler.LoadSecretsIdentity(o.secretsID); err != nil {
			return fmt.Errorf("render: %w", err)
		}
	}
	dir := filepath.Dir(o.fleet)
	r, err := render.RenderWith(f, dir, render.Options{Secrets: bundler.NodeSecrets(dir, ids)})
	if err != nil {
		return fmt.Errorf("render: %w", err)
	}
	refs := map[string]string{}
	for _, s := range f.All() {
		refs[s.ReleaseImageName()] = s.Image
	}
	for _, n := range r.Nodes {
		writeRenderedNode(env.Stdout, &n, refs)
	}
	return nil
}

// writeRenderedNode prints one node's services and files.
func writeRenderedNode(w io.Writer, n *render.Node, refs map[string]string) {
	rn := &n.Release
	net := rn.Network.Driver
	if rn.Network.Address != "" {
		net += " " + rn.Network.Address
	}
	fmt.Fprintf(w, "node %s (region %s, wave %d, network %s)\n", rn.Name, rn.Region, rn.Wave, net)
	for _, u := range rn.Units() {
		name := u.Name
		if name == "" {
			name = "service"
		} else {
			name = "service " + name
		}
		var notes []string
		if len(u.DependsOn) > 0 {
			notes = append(notes, "after "+strings.Join(u.DependsOn, ", "))
		}
		if u.Attach && rn.Network.Driver != schema.DriverNone {
			notes = append(notes, "attached")
		}
		if u.Container.Cluster != nil {
			notes = append(notes, "clustered as "+u.Container.Cluster.Self)
		}
		if u.Container.Network != "" {
			notes = append(notes, "on network "+u.Container.Network)
		}
		note := ""
		if len(notes) > 0 {
			note = " (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintf(w, "  %s: image %s (%s), container %s, reload %s%s\n", name, u.Image, refs[u.Image], u.Container.Name, u.Container.Reload.Action, note)
	}
	for i, file := range rn.Files {
		reloads := ""
		if file.Service != "" {
			reloads = ", reloads " + file.Service
		}
		secret := ""
		if n.Files[i].Secret {
			secret = ", uses secrets"
		}
		fmt.Fprintf(w, "  file %s → %s (%04o, %d bytes%s%s)\n", file.Path, file.Target, uint32(file.Mode), file.Length, secret, reloads)
	}
}
