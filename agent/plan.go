package agent

import (
	"context"
	"fmt"
	"io"

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
	if err := oneService(rn); err != nil {
		fmt.Fprintf(w, "node %s: %v\n", rn.Name, err)
		return nil
	}
	var applied int64
	if ns != nil {
		applied = ns.Applied
		if ns.Failed == rel.Version {
			fmt.Fprintf(w, "node %s: release %d failed here (%s); waiting for a newer release\n", rn.Name, rel.Version, ns.FailedError)
			return nil
		}
	}
	spec, err := containerSpec(rel, rn)
	if err != nil {
		return err
	}
	var actions []string
	has, err := a.eng.HasImage(ctx, spec.Image)
	if err != nil {
		return err
	}
	if !has {
		actions = append(actions, "load image "+rn.Image+" "+spec.Image)
	}
	changedFiles := 0
	for _, f := range rn.Files {
		if _, err := a.files().Lstat(f.Target); err != nil {
			actions = append(actions, "create "+f.Target)
			changedFiles++
		} else if !a.fileMatches(t.v.Commit, rn, f) {
			actions = append(actions, "replace "+f.Target)
			changedFiles++
		}
	}
	cs, found, err := a.eng.Inspect(ctx, rn.Container.Name)
	if err != nil {
		return err
	}
	switch {
	case !found:
		actions = append(actions, "create container "+rn.Container.Name)
	case cs.ImageID != spec.Image || cs.Labels[LabelSpec] != spec.Labels[LabelSpec]:
		actions = append(actions, "recreate container "+rn.Container.Name+" (previous kept for rollback)")
	case changedFiles > 0 && rn.Container.Reload.Action != schema.ReloadNone:
		actions = append(actions, "reload container "+rn.Container.Name+" ("+rn.Container.Reload.Action+")")
	case !cs.Running:
		actions = append(actions, "start container "+rn.Container.Name)
	}
	if len(actions) == 0 {
		fmt.Fprintf(w, "node %s: up to date on release %d\n", rn.Name, rel.Version)
		return nil
	}
	if len(rn.Container.Health.Command) > 0 {
		actions = append(actions, "check health: "+fmt.Sprint(rn.Container.Health.Command))
	}
	fmt.Fprintf(w, "node %s: release %d → %d\n", rn.Name, applied, rel.Version)
	for _, s := range actions {
		fmt.Fprintf(w, "  %s\n", s)
	}
	return nil
}
