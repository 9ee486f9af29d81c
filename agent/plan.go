package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/schema"
)

// Plan writes what a pass would do, touching nothing on the host (it
// fetches into the state directory's object store and reads the engine).
func (a *Agent) Plan(ctx context.Context, w io.Writer) error {
	st, err := a.st.Load()
	if err != nil {
		return err
	}
	t, err := a.poll(ctx, st)
	if err != nil {
		return err
	}
	rel := t.v.Release
	fmt.Fprintf(w, "release %d (commit %.12s, from %s), signed by %d of %d required keys\n",
		rel.Version, t.v.Commit, t.remote, len(t.v.Signatures.Valid), t.v.Signatures.Threshold)
	for _, n := range a.cfg.Nodes {
		rn, _ := rel.Node(n.Name)
		if err := a.planNode(ctx, w, t, st.Nodes[n.Name], rn); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) planNode(ctx context.Context, w io.Writer, t *target, ns *state.Node, rn *schema.ReleaseNode) error {
	rel := t.v.Release
	var applied int64
	if ns != nil {
		applied = ns.Applied
		if ns.Failed == rel.Version {
			fmt.Fprintf(w, "node %s: release %d failed here (%s); waiting for a newer release\n", rn.Name, rel.Version, ns.FailedError)
			return nil
		}
	}
	var actions []string
	units := rn.Units()
	specs := make([]engine.ContainerSpec, len(units))
	loaded := map[string]bool{}
	for k := range units {
		spec, err := containerSpec(rel, rn, &units[k])
		if err != nil {
			return err
		}
		specs[k] = spec
		if loaded[spec.Image] {
			continue
		}
		loaded[spec.Image] = true
		has, err := a.eng.HasImage(ctx, spec.Image)
		if err != nil {
			return err
		}
		if !has {
			actions = append(actions, servicePrefix(&units[k])+"load image "+units[k].Image+" "+spec.Image)
		}
	}
	changed := map[string]bool{} // services whose files differ
	for _, f := range rn.Files {
		if _, err := a.files().Lstat(f.Target); err != nil {
			actions = append(actions, "create "+f.Target)
			changed[f.Service] = true
		} else if !a.fileMatches(t.v.Commit, rn, f) {
			actions = append(actions, "replace "+f.Target)
			changed[f.Service] = true
		}
	}
	var checks []string
	for k, u := range units {
		spec, prefix := specs[k], servicePrefix(&u)
		// A one-service node reloads whenever its files change; a service
		// among several when its own files do.
		reload := changed[u.Name] || (len(rn.Services) == 0 && len(changed) > 0)
		name := u.Container.Name
		cs, found, err := a.eng.Inspect(ctx, name)
		if err != nil {
			return err
		}
		switch {
		case !found:
			actions = append(actions, prefix+"create container "+name)
		case cs.ImageID != spec.Image || cs.Labels[LabelSpec] != spec.Labels[LabelSpec]:
			actions = append(actions, prefix+"recreate container "+name+" (previous kept for rollback)")
		case reload && u.Container.Reload.Action != schema.ReloadNone:
			actions = append(actions, prefix+"reload container "+name+" ("+u.Container.Reload.Action+")")
		case !cs.Running:
			actions = append(actions, prefix+"start container "+name)
		}
		if len(u.Container.Health.Command) > 0 {
			checks = append(checks, prefix+"check health: "+fmt.Sprint(u.Container.Health.Command))
		}
	}
	if len(actions) == 0 {
		fmt.Fprintf(w, "node %s: up to date on release %d\n", rn.Name, rel.Version)
		return nil
	}
	actions = append(actions, checks...)
	fmt.Fprintf(w, "node %s: release %d → %d\n", rn.Name, applied, rel.Version)
	for _, s := range actions {
		fmt.Fprintf(w, "  %s\n", s)
	}
	return nil
}

// servicePrefix names a service in plan lines ("" for a one-service node).
func servicePrefix(u *schema.NodeService) string {
	if u.Name == "" {
		return ""
	}
	return "service " + u.Name + ": "
}
