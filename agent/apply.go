package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/hostfs"
	"github.com/pullship/pullship/agent/secrets"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/bundler/shared/atomicfile"
	"github.com/pullship/pullship/bundler/shared/chunks"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

// LabelSpec holds the sha256 of the container spec a container was created
// from, so that a changed spec (not only a changed image) recreates it.
const LabelSpec = "pullship.spec"

// ErrRolledBack means a release failed on a node (a step of its apply, or
// its health check) and the previous release was restored there.
var ErrRolledBack = errors.New("previous release restored")

// converge brings one node onto the target release.
func (a *Agent) converge(ctx context.Context, t *target, st *state.State, rn *schema.ReleaseNode) (Outcome, error) {
	rel := t.v.Release
	ns := st.Nodes[rn.Name]
	if ns == nil {
		ns = &state.Node{}
		st.Nodes[rn.Name] = ns
	}
	if ns.Failed == rel.Version {
		a.log.Info("release failed here before; waiting for a newer one", "node", rn.Name, "version", rel.Version, "err", ns.FailedError)
		a.keepRunning(ctx, ns, rn.Name)
		return Nothing, nil
	}
	if ns.Applied == rel.Version && ns.ManifestSHA256 == t.v.ManifestSHA256 {
		drift, err := a.drift(ctx, t, rn)
		if err != nil {
			return Nothing, err
		}
		if drift == "" {
			a.managed.set(rn)
			a.metrics.Applied.WithLabelValues(rn.Name).Set(float64(rel.Version))
			a.upkeep(ctx, rn)
			return Nothing, nil
		}
		a.log.Warn("node drifted from its release; applying it again", "node", rn.Name, "version", rel.Version, "drift", drift)
	} else {
		why, err := a.gate(ctx, t, rn)
		if err != nil {
			return Nothing, fmt.Errorf("rollout gate: %w", err)
		}
		if why != "" {
			a.log.Info("release waits for earlier waves", "node", rn.Name, "version", rel.Version, "why", why)
			a.keepRunning(ctx, ns, rn.Name)
			return Nothing, nil
		}
	}
	start := a.now()
	err := a.apply(ctx, t, rn, ns.Containers)
	a.metrics.ApplySeconds.Observe(a.now().Sub(start).Seconds())
	switch {
	case errors.Is(err, ErrRolledBack):
		a.metrics.Rollbacks.WithLabelValues(rn.Name).Inc()
		// The watcher follows the release restored, not the one that failed.
		if r, ok := a.running(rn.Name, ns); ok {
			a.managed.set(r.node)
		}
		ns.Failed, ns.FailedError = rel.Version, err.Error()
		if serr := a.st.Save(st); serr != nil {
			return Failed, errors.Join(err, serr)
		}
		a.log.Error("release rolled back", "node", rn.Name, "version", rel.Version, "err", err)
		return Failed, err
	case err != nil:
		return Failed, err
	}
	images := unitImages(rel, rn)
	var unused []string
	if !slices.Equal(nodeImages(ns.Image, ns.Images), images) {
		// Keep the images just replaced for a rollback; the ones before
		// them are no longer needed.
		unused = nodeImages(ns.PrevImage, ns.PrevImages)
		ns.PrevImage, ns.PrevImages = ns.Image, ns.Images
	}
	ns.Image, ns.Images = images[0], nil
	if len(rn.Services) > 0 {
		ns.Images = images
	}
	ns.Containers = nil
	for _, u := range rn.Units() {
		ns.Containers = append(ns.Containers, u.Container.Name)
	}
	ns.Applied, ns.ManifestSHA256, ns.Commit, ns.AppliedAt = rel.Version, t.v.ManifestSHA256, t.v.Commit.String(), a.now().UTC()
	if err := a.st.Save(st); err != nil {
		return Failed, err
	}
	for _, id := range unused {
		a.removeImage(ctx, id, st)
	}
	if err := a.st.ClearJournal(rn.Name); err != nil {
		return Failed, err
	}
	a.metrics.Applied.WithLabelValues(rn.Name).Set(float64(rel.Version))
	a.log.Info("release applied", "node", rn.Name, "version", rel.Version, "took", a.now().Sub(start).Round(time.Millisecond))
	return Converged, nil
}

// unitImages returns the digests of the images of the node's services, in
// start order, each once.
func unitImages(rel *schema.Release, rn *schema.ReleaseNode) []string {
	var out []string
	for _, u := range rn.Units() {
		if img, ok := rel.ImageByName(u.Image); ok && !slices.Contains(out, img.Digest) {
			out = append(out, img.Digest)
		}
	}
	return out
}

// nodeImages is a node's image list as state records it: images for a
// node of several services, else the one image ("" none).
func nodeImages(image string, images []string) []string {
	if len(images) > 0 {
		return images
	}
	if image == "" {
		return nil
	}
	return []string{image}
}

// removeImage deletes an image this host's nodes no longer need: not a
// current or previous image of any node, and not used by any container.
func (a *Agent) removeImage(ctx context.Context, id string, st *state.State) {
	if id == "" {
		return
	}
	for _, ns := range st.Nodes {
		if slices.Contains(nodeImages(ns.Image, ns.Images), id) || slices.Contains(nodeImages(ns.PrevImage, ns.PrevImages), id) {
			return
		}
	}
	inUse, err := a.eng.ImagesInUse(ctx)
	if err != nil || slices.Contains(inUse, id) {
		return
	}
	if err := a.eng.RemoveImage(ctx, id); err != nil {
		a.log.Warn("could not remove an unused image", "image", id, "err", err)
		return
	}
	a.log.Info("removed an image no node needs any more", "image", id)
}

// keepRunning keeps up the release a node runs while it does not apply the
// target (failed here before, or held by its wave): the watcher and the
// upkeep follow that release's containers.
func (a *Agent) keepRunning(ctx context.Context, ns *state.Node, node string) {
	if r, ok := a.running(node, ns); ok {
		a.managed.set(r.node)
		a.upkeep(ctx, r.node)
	}
}

// upkeep keeps an applied node's address attached and its cluster joined
// (the periodic backstop of the event watcher).
func (a *Agent) upkeep(ctx context.Context, rn *schema.ReleaseNode) {
	if _, err := a.ensureAttached(ctx, rn); err != nil {
		a.log.Error("network attachment failed", "node", rn.Name, "err", err)
	}
	if _, err := a.ensureCluster(ctx, rn); err != nil {
		a.log.Error("cluster membership", "node", rn.Name, "err", err)
	}
}

// drift says what differs between the host and the node's release ("" when
// nothing does): the container, its image, its spec, or a file.
func (a *Agent) drift(ctx context.Context, t *target, rn *schema.ReleaseNode) (string, error) {
	for _, u := range rn.Units() {
		spec, err := containerSpec(t.v.Release, rn, &u)
		if err != nil {
			return "", err
		}
		cs, found, err := a.eng.Inspect(ctx, u.Container.Name)
		if err != nil {
			return "", err
		}
		what := "container"
		if u.Name != "" {
			what = "service " + u.Name + ": container"
		}
		switch {
		case !found:
			return what + " missing", nil
		case cs.ImageID != spec.Image:
			return what + " runs image " + cs.ImageID, nil
		case cs.Labels[LabelSpec] != spec.Labels[LabelSpec]:
			return what + " spec changed", nil
		case !cs.Running && cs.Status != "restarting":
			return what + " " + cs.Status, nil
		}
	}
	for _, f := range rn.Files {
		if !a.fileMatches(t.v.Commit, rn, f) {
			return "file " + f.Target + " changed", nil
		}
	}
	return "", nil
}

// nodeFile reads one of the node's files from the release, checked against
// the signed manifest, and decrypts it when it is encrypted to this node
// (node secrets): the bytes the host file must hold.
func (a *Agent) nodeFile(commit plumbing.Hash, rn *schema.ReleaseNode, f schema.File) ([]byte, error) {
	data, err := bundle.ReadNodeFile(a.objects, commit, rn.Name, f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerify, err)
	}
	if !f.Encrypted {
		return data, nil
	}
	n, _ := a.cfg.Node(rn.Name)
	plain, err := secrets.Decrypt(n.AgeIdentity, data, schema.MaxFileLength)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s: file %s: %w", ErrVerify, rn.Name, f.Path, err)
	}
	return plain, nil
}

// fileMatches reports whether the host file holds what the release says
// (for an encrypted file: its decryption).
func (a *Agent) fileMatches(commit plumbing.Hash, rn *schema.ReleaseNode, f schema.File) bool {
	sum, err := a.files().SHA256(f.Target)
	if err != nil {
		return false
	}
	if !f.Encrypted {
		return sum == f.SHA256
	}
	plain, err := a.nodeFile(commit, rn, f)
	if err != nil {
		return false
	}
	want := sha256.Sum256(plain)
	return hex.EncodeToString(want[:]) == sum
}

// unit is one service of a node being applied.
type unit struct {
	schema.NodeService
	spec engine.ContainerSpec
}

// what names the unit in errors and logs.
func (u *unit) what() string {
	if u.Name == "" {
		return "container " + u.Container.Name
	}
	return "service " + u.Name
}

// apply runs the journalled steps for one node, all its services as one
// unit: every image is loaded and every file read before anything changes;
// then the files are replaced, the services' containers recreated or
// reloaded in start order, and every service's health checked. A failure
// at any step rolls every service back and returns an error wrapping
// ErrRolledBack that names the service. The containers of prev (the release
// applied before) that rn no longer has are stopped first and removed once
// every service is healthy.
func (a *Agent) apply(ctx context.Context, t *target, rn *schema.ReleaseNode, prev []string) error {
	rel := t.v.Release
	var units []unit
	for _, u := range rn.Units() {
		spec, err := containerSpec(rel, rn, &u)
		if err != nil {
			return err
		}
		units = append(units, unit{u, spec})
	}
	// Everything that can be checked is checked before the host changes:
	// the node's files (read and digest-checked into memory; each is
	// bounded by the manifest) and the images (loaded from verified chunks).
	files := make([][]byte, len(rn.Files))
	changed := map[string]bool{} // services whose files differ on the host
	for i, f := range rn.Files {
		var err error
		if files[i], err = a.nodeFile(t.v.Commit, rn, f); err != nil {
			return err
		}
		if sum, err := a.files().SHA256(f.Target); err != nil || sum != sha256Hex(files[i]) {
			changed[f.Service] = true
		}
	}
	for _, u := range units {
		if err := a.ensureImage(ctx, t, rn, u.Image); err != nil {
			return err
		}
	}

	j := &state.Journal{Node: rn.Name, Version: rel.Version, Step: state.StepBegin}
	kept := map[string]bool{}
	for _, u := range units {
		kept[u.Container.Name] = true
	}
	for _, name := range prev {
		if kept[name] {
			continue
		}
		cur, found, err := a.eng.Inspect(ctx, name)
		if err != nil {
			return err
		}
		if found {
			j.Services = append(j.Services, state.ServiceJournal{Container: name, PrevImage: cur.ImageID, PrevContainer: name, Recreate: true, Drop: true})
		}
	}
	dropped := len(j.Services)
	for _, u := range units {
		cur, found, err := a.eng.Inspect(ctx, u.Container.Name)
		if err != nil {
			return err
		}
		sj := state.ServiceJournal{Name: u.Name, Container: u.Container.Name, Action: u.Container.Reload}
		if found {
			sj.PrevImage, sj.PrevContainer = cur.ImageID, cur.Name
		}
		sj.Recreate = !found || cur.ImageID != u.spec.Image || cur.Labels[LabelSpec] != u.spec.Labels[LabelSpec]
		// A one-service node is reloaded on every apply that does not
		// recreate it; a service among several only when its files change.
		sj.Reload = !sj.Recreate && (len(rn.Services) == 0 || changed[u.Name])
		j.Services = append(j.Services, sj)
	}
	if len(rn.Services) == 0 {
		sj := j.Services[dropped]
		j.PrevImage, j.PrevContainer, j.Recreate = sj.PrevImage, sj.PrevContainer, sj.Recreate
	}
	if err := a.st.WriteJournal(j); err != nil {
		return err
	}
	backupDir := a.st.Path("backup", rn.Name)
	if err := os.RemoveAll(backupDir); err != nil {
		return err
	}
	if err := os.MkdirAll(backupDir, 0o700); err != nil {
		return err
	}
	for i, f := range rn.Files {
		b := state.FileBackup{Target: f.Target, Backup: filepath.Join(backupDir, strconv.Itoa(i)), Service: f.Service}
		if err := a.backup(&b); err != nil {
			// Nothing changed yet: no backup is needed any more.
			return errors.Join(fmt.Errorf("node %s: %w; refusing to replace it", rn.Name, err), os.RemoveAll(backupDir))
		}
		j.Files = append(j.Files, b)
	}

	j.Step = state.StepFiles
	if err := a.st.WriteJournal(j); err != nil {
		return err
	}
	for i, f := range rn.Files {
		if err := a.writeNodeFile(f, files[i]); err != nil {
			return a.fail(ctx, j, rn, err)
		}
	}

	j.Step = state.StepContainer
	if err := a.st.WriteJournal(j); err != nil {
		return err
	}
	// Services that left the node stop first (they may hold ports the
	// others need), then the node's services start in order.
	for k := 0; k < dropped; k++ {
		if err := a.stopAside(ctx, j.Services[k].Container); err != nil {
			return a.fail(ctx, j, rn, fmt.Errorf("container %s (no longer in the release): %w", j.Services[k].Container, err))
		}
	}
	for k := range units {
		if err := a.startContainer(ctx, &j.Services[dropped+k], &units[k]); err != nil {
			return a.fail(ctx, j, rn, fmt.Errorf("%s: %w", units[k].what(), err))
		}
	}
	a.managed.set(rn)
	if _, err := a.ensureAttached(ctx, rn); err != nil {
		// Not a reason to roll back (the previous release would lack the
		// address as well); the health check decides, the status reports it.
		a.log.Error("network attachment failed", "node", rn.Name, "err", err)
	}

	j.Step = state.StepHealth
	if err := a.st.WriteJournal(j); err != nil {
		return err
	}
	for k := range units {
		if err := a.health(ctx, &units[k]); err != nil {
			if units[k].Name != "" {
				err = fmt.Errorf("service %s: %w", units[k].Name, err)
			}
			return a.fail(ctx, j, rn, err)
		}
	}
	if _, err := a.ensureCluster(ctx, rn); err != nil {
		a.log.Error("cluster membership", "node", rn.Name, "err", err)
	}
	for _, sj := range j.Services {
		if sj.Recreate && sj.PrevContainer != "" {
			if err := a.eng.Remove(ctx, sj.Container+engine.PrevSuffix, 10*time.Second); err != nil {
				a.log.Warn("could not remove the previous container", "node", rn.Name, "container", sj.Container, "err", err)
			}
		}
	}
	j.Step = state.StepDone
	if err := a.st.WriteJournal(j); err != nil {
		return err
	}
	return os.RemoveAll(backupDir)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// files are the host files the agent may touch: those under allowed_dirs,
// reached without following a link.
func (a *Agent) files() hostfs.Dirs { return hostfs.Dirs(a.cfg.AllowedDirs) }

// backup copies the regular file at b.Target (if any) to b.Backup.
func (a *Agent) backup(b *state.FileBackup) error {
	f, fi, err := a.files().Open(b.Target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	b.Existed, b.Mode = true, uint32(fi.Mode().Perm())
	return atomicfile.WriteFile(b.Backup, f, 0o600)
}

// restore puts back the file journal entry b replaced.
func (a *Agent) restore(b state.FileBackup) error {
	if !b.Existed {
		return a.files().Remove(b.Target)
	}
	f, err := os.Open(b.Backup)
	if err != nil {
		return fmt.Errorf("restore %s: %w", b.Target, err)
	}
	defer f.Close()
	return a.files().Write(b.Target, f, os.FileMode(b.Mode))
}

// refusedPath reports whether err is hostfs refusing a path: a link or a
// non-regular file put in the way, or a path outside allowed_dirs.
func refusedPath(err error) bool {
	return errors.Is(err, hostfs.ErrSymlink) || errors.Is(err, hostfs.ErrNotRegular) || errors.Is(err, hostfs.ErrNotAllowed)
}

// fail rolls back after a failed step and reports why.
func (a *Agent) fail(ctx context.Context, j *state.Journal, rn *schema.ReleaseNode, cause error) error {
	a.log.Error("apply failed; rolling back", "node", rn.Name, "version", j.Version, "step", j.Step, "err", cause)
	refused, err := a.rollback(ctx, j)
	if err != nil {
		return fmt.Errorf("release %d: %v; rollback failed too: %w", j.Version, cause, err)
	}
	// The cause first: a status table shows an error's beginning.
	if refused != nil {
		return fmt.Errorf("release %d: %v; %w; %v", j.Version, cause, ErrRolledBack, refused)
	}
	return fmt.Errorf("release %d: %v; %w", j.Version, cause, ErrRolledBack)
}

// rollback restores what journal j replaced: files, then the container.
// Every step is idempotent, so a crash during rollback is finished by the
// next start. A file whose path now holds a link or a non-regular file (a
// container can plant one under its bind mount) is not restored: refused
// says which, and the rest of the rollback goes on, so that no planted link
// keeps the failed release running or the agent from starting.
func (a *Agent) rollback(ctx context.Context, j *state.Journal) (refused, err error) {
	from := j.Step
	var refusals []error
	if from != state.StepRollbackContainer {
		j.Step = state.StepRollback
		if err := a.st.WriteJournal(j); err != nil {
			return nil, err
		}
		for _, b := range j.Files {
			if err := a.restore(b); refusedPath(err) {
				a.log.Error("not restoring a node file: its path was changed under the agent", "node", j.Node, "file", b.Target, "err", err)
				refusals = append(refusals, err)
			} else if err != nil {
				return nil, err
			}
		}
		j.Step = state.StepRollbackContainer
		if err := a.st.WriteJournal(j); err != nil {
			return nil, err
		}
		// The backups may hold decrypted secrets: nothing needs them now.
		if err := os.RemoveAll(a.st.Path("backup", j.Node)); err != nil {
			return nil, err
		}
	}
	refused = errors.Join(refusals...)
	// Containers in reverse start order: a service goes back before the
	// ones it depends on.
	for k := len(j.Services) - 1; k >= 0; k-- {
		if err := a.rollbackContainer(ctx, j, from, &j.Services[k]); err != nil {
			return refused, err
		}
	}
	j.Step = state.StepRolledBack
	return refused, a.st.WriteJournal(j)
}

// rollbackContainer is rollback's second half: a service's container as
// it was.
func (a *Agent) rollbackContainer(ctx context.Context, j *state.Journal, from state.Step, sj *state.ServiceJournal) error {
	name := sj.Container
	prev := name + engine.PrevSuffix
	_, prevFound, err := a.eng.Inspect(ctx, prev)
	if err != nil {
		return err
	}
	switch {
	case prevFound:
		if err := a.eng.Remove(ctx, name, 10*time.Second); err != nil {
			return err
		}
		if err := a.eng.Rename(ctx, prev, name); err != nil {
			return err
		}
		if err := a.eng.Start(ctx, name); err != nil {
			return err
		}
	case sj.Recreate && sj.PrevContainer == "":
		// There was no container before this release.
		if err := a.eng.Remove(ctx, name, 10*time.Second); err != nil {
			return err
		}
	case sj.Recreate:
		// Interrupted before the old container was renamed away: it is
		// still under its name, maybe stopped.
		cs, found, err := a.eng.Inspect(ctx, name)
		if err != nil {
			return err
		}
		if found && !cs.Running {
			if err := a.eng.Start(ctx, name); err != nil {
				return err
			}
		}
	case sj.Reload && from != state.StepBegin && from != state.StepFiles && slices.ContainsFunc(j.Files, func(b state.FileBackup) bool { return b.Service == sj.Name }):
		// The container was reloaded with the new files: reload it again
		// with the old ones.
		if err := a.reload(ctx, name, sj.Action); err != nil {
			return err
		}
	}
	return nil
}

// recover finishes what a crashed pass left: an apply interrupted at any
// step is rolled back (the pass that follows applies the release again).
func (a *Agent) recover(ctx context.Context) error {
	if _, err := a.st.Load(); err != nil {
		return err
	}
	for _, n := range a.cfg.Nodes {
		j, err := a.st.Journal(n.Name)
		if err != nil || j == nil {
			if err != nil {
				return err
			}
			continue
		}
		switch j.Step {
		case state.StepDone, state.StepRolledBack:
		default:
			a.log.Warn("an apply was interrupted; rolling it back", "node", n.Name, "version", j.Version, "step", j.Step)
			if len(j.Services) == 0 {
				// Written by an agent that knew one container per node.
				name, reload := a.containerOf(n.Name)
				j.Services = []state.ServiceJournal{{Container: name, PrevImage: j.PrevImage, PrevContainer: j.PrevContainer,
					Recreate: j.Recreate, Reload: !j.Recreate, Action: reload}}
			}
			refused, err := a.rollback(ctx, j)
			if err != nil {
				return fmt.Errorf("node %s: recover interrupted apply of release %d: %w", n.Name, j.Version, err)
			}
			if refused != nil {
				a.log.Error("interrupted apply rolled back without some node files", "node", n.Name, "version", j.Version, "err", refused)
			}
		}
		if err := a.st.ClearJournal(n.Name); err != nil {
			return err
		}
	}
	// Every apply is finished or undone: no backup (which may hold
	// decrypted secrets) is needed, whatever crash left it.
	return os.RemoveAll(a.st.Path("backup"))
}

// containerOf finds a node's container name and reload action in the newest
// accepted release (what an interrupted apply was applying).
func (a *Agent) containerOf(node string) (string, schema.Reload) {
	commit, err := a.objects.Ref(acceptedRef)
	if err == nil {
		if b, err := bundle.Read(a.objects, commit); err == nil {
			if rel, err := schema.ParseRelease(bundle.ManifestPath, b.Manifest); err == nil {
				if rn, ok := rel.Node(node); ok && rn.Container != nil {
					return rn.Container.Name, rn.Container.Reload
				}
			}
		}
	}
	return "", schema.Reload{Action: schema.ReloadNone}
}

// errLoadOver stops the rebuild of an image the engine stopped reading: its
// load is over (refused early, say), the engine's answer is what counts.
var errLoadOver = errors.New("image load over")

// ensureImage loads the node's image from verified chunks unless the engine
// has it. The fetch, the rebuild and the load run at once: each chunk is
// readable as soon as its bytes are in and its git id is checked
// (repo.LivePack), the docker-save stream is rebuilt chunk by chunk (each
// checked against the signed index's sha256 before any of its bytes are
// passed on) straight into the engine, which registers each layer while
// later chunks still arrive (see engine.Docker.LoadImage). When the remote that served the release fails
// to deliver the image (a corrupted or missing chunk, a pruned tag, a fetch
// error), the other configured remotes are tried in order: chunks are
// checked against the signed index whoever serves them, so any mirror will
// do.
func (a *Agent) ensureImage(ctx context.Context, t *target, rn *schema.ReleaseNode, name string) error {
	img, ok := t.v.Release.ImageByName(name)
	if !ok {
		return fmt.Errorf("%w: node %s names image %q, not in release %d", ErrVerify, rn.Name, name, t.v.Release.Version)
	}
	has, err := a.eng.HasImage(ctx, img.Digest)
	if err != nil || has {
		return err
	}
	start := time.Now()
	idx, err := bundle.ReadImageIndex(a.objects, t.v.Commit, *img)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrVerify, err)
	}
	// The fetch is bounded by what the store's budget leaves; when that is
	// less than the chunks it lacks may take, the store is collected
	// first, keeping the chunks of the image it holds (an earlier try's).
	need, held := missingChunks(a.objects, idx)
	a.makeRoom(need, append(held, t.v.Commit)...)
	// An image that cannot fit is not begun: its segments would stay
	// (kept for a later try) while the last of them is refused.
	if room, err := a.objects.Room(); err == nil && room < need {
		return fmt.Errorf("image %s: %w: its missing chunks take up to %d bytes, the store's budget leaves %d (store_budget_mib = %d in agent.toml)",
			img.Name, repo.ErrStoreBudget, need, max(room, 0), a.cfg.StoreBudgetMiB)
	}
	// load fetches and loads the image from r; retry says whether another
	// remote might do better (the data was bad, not the engine).
	load := func(r *repo.Remote) (retry bool, err error) {
		live := repo.NewLivePack(a.objects)
		defer live.Close()
		fetched := make(chan error, 1)
		o := bundle.FetchOptions{After: a.cutImages[img.Digest], OnResume: a.resumed(r)}
		go func() {
			err := bundle.FetchImageWith(ctx, r, a.objects, idx, live, o)
			live.Finish(err)
			fetched <- err
		}()
		// The rebuild reads the chunks the store holds already (an update's
		// unchanged ones) through a Store of its own, while the fetch
		// writes to a.objects.
		held, herr := repo.Init(a.objects.Dir())
		if herr != nil {
			held = nil
		}
		// The layers the engine holds already are not rebuilt: the load
		// says which (omit) once it has checked the config.
		omit := engine.NewOmit()
		pr, pw := io.Pipe()
		rebuilt := make(chan error, 1)
		go func() {
			err := chunks.RebuildSkipping(ctx, idx, bundle.LiveChunks{Ctx: ctx, Pack: live, Held: held}, pw, nil, omit.Skip)
			live.StopReading() // the fetch no longer keeps blobs for it
			pw.CloseWithError(err)
			rebuilt <- err
		}()
		lerr := a.eng.LoadImage(ctx, pr, img.Digest, engine.LoadOptions{Sizes: idx.FileSizes(), Omit: omit})
		pr.CloseWithError(errLoadOver)
		rerr := <-rebuilt
		// The fetch runs to its end even when the load failed: what it
		// brings is stored for the next attempt.
		ferr := <-fetched
		switch {
		case ferr == nil:
			delete(a.cutImages, img.Digest)
		case bundle.IsNetworkError(ferr):
			a.cutImages[img.Digest] = ferr
		}
		if errors.Is(ferr, repo.ErrStoreBudget) {
			// The store's, not the remote's: no other remote does better.
			return false, fmt.Errorf("image %s: %w (store_budget_mib = %d in agent.toml)", img.Name, ferr, a.cfg.StoreBudgetMiB)
		}
		if ferr != nil {
			var om *repo.ObjectMismatchError
			var sm *repo.SizeMismatchError
			if errors.As(ferr, &om) || errors.As(ferr, &sm) {
				// Altered bytes, not a network failure.
				ferr = fmt.Errorf("%w: %w", ErrVerify, ferr)
			}
			return true, ferr
		}
		if rerr != nil && !errors.Is(rerr, io.ErrClosedPipe) && !errors.Is(rerr, errLoadOver) {
			return true, fmt.Errorf("%w: image %s from %s: %w", ErrVerify, img.Name, r, rerr)
		}
		if lerr != nil {
			return false, fmt.Errorf("load image %s: %w", img.Name, lerr)
		}
		return false, nil
	}
	from := t.remote
	retry, err := load(from)
	for _, url := range a.cfg.Remotes {
		if err == nil || !retry || ctx.Err() != nil {
			break
		}
		r, oerr := a.remote(ctx, url)
		if oerr != nil || r == t.remote {
			continue
		}
		a.log.Warn("image not loadable from remote; trying the next", "node", rn.Name, "image", img.Name,
			"remote", from.String(), "next", r.String(), "err", err)
		from = r
		retry, err = load(r)
	}
	if err != nil {
		return err
	}
	a.log.Info("image loaded", "node", rn.Name, "image", img.Name, "id", img.Digest, "bytes", idx.TotalSize(), "remote", from.String(),
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// missingChunks returns what a pack of the chunks of idx that st lacks
// may take (their stored sizes and git's overhead, as the fetch bounds
// it), and the chunks st holds.
func missingChunks(st *repo.Store, idx *schema.ImageIndex) (int64, []plumbing.Hash) {
	var need int64
	var held []plumbing.Hash
	for _, c := range bundle.NewChunkSet(idx).List() {
		id := plumbing.NewHash(c.Blob)
		if st.HasObject(id) {
			held = append(held, id)
			continue
		}
		need += c.StoredSize() + 1024
	}
	return need + 1<<20, held
}

// makeRoom collects the object store when its budget leaves less than
// need, keeping extra too (what the fetch about to start builds on): a
// fetch is then bounded by what the budget leaves after the collection.
func (a *Agent) makeRoom(need int64, extra ...plumbing.Hash) {
	if room, err := a.objects.Room(); err == nil && room < need {
		a.log.Info("object store near its budget; collecting", "room_bytes", room, "need_bytes", need)
		a.collect(extra...)
	}
}

// resumed counts and logs each resume of an image fetch from r: a request
// that continues after a cut, keeping what arrived.
func (a *Agent) resumed(r *repo.Remote) func(bundle.Resume) {
	return func(res bundle.Resume) {
		a.metrics.Resumes.WithLabelValues(r.String()).Inc()
		a.log.Warn("image fetch cut; resuming", "remote", r.String(), "image", res.Image,
			"segment", fmt.Sprintf("%d/%d", res.Segment, res.Segments), "kept_bytes", res.Kept, "missing_bytes", res.Missing, "err", res.Cut)
	}
}

// startContainer recreates a service's container (keeping the previous
// one, stopped and renamed, for rollback) or reloads it.
func (a *Agent) startContainer(ctx context.Context, sj *state.ServiceJournal, u *unit) error {
	if !sj.Recreate {
		if !sj.Reload {
			return nil
		}
		return a.reload(ctx, u.Container.Name, u.Container.Reload)
	}
	if sj.PrevContainer != "" {
		if err := a.stopAside(ctx, u.Container.Name); err != nil {
			return err
		}
	}
	if u.spec.Network != "" {
		// Created when missing, with a subnet of the engine's choosing;
		// left in place when a release no longer names it (other
		// containers may still be on it).
		if err := a.eng.EnsureNetwork(ctx, u.spec.Network, ""); err != nil {
			return err
		}
	}
	_, err := a.eng.Run(ctx, u.spec)
	return err
}

// stopAside stops container name and renames it out of the way (kept for
// a rollback until the release is healthy).
func (a *Agent) stopAside(ctx context.Context, name string) error {
	prev := name + engine.PrevSuffix
	if err := a.eng.Remove(ctx, prev, 10*time.Second); err != nil {
		return err
	}
	if err := a.eng.Stop(ctx, name, 10*time.Second); err != nil {
		return err
	}
	return a.eng.Rename(ctx, name, prev)
}

// reload makes a running container pick up changed files.
func (a *Agent) reload(ctx context.Context, name string, r schema.Reload) error {
	switch r.Action {
	case schema.ReloadExec:
		res, err := a.eng.Exec(ctx, name, r.Command, time.Minute)
		if err != nil {
			return fmt.Errorf("reload %s: %w", name, err)
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("reload %s: %s exited %d: %s", name, strings.Join(r.Command, " "), res.ExitCode, clip(res.Output))
		}
	case schema.ReloadRestart:
		if err := a.eng.Restart(ctx, name, 10*time.Second); err != nil {
			return fmt.Errorf("reload %s: %w", name, err)
		}
	}
	return nil
}

// health runs a service's health check until it passes or its tries run out.
func (a *Agent) health(ctx context.Context, u *unit) error {
	h := u.Container.Health
	timeout, interval := h.Timeout.D(), h.Interval.D()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if interval <= 0 {
		interval = time.Second
	}
	var last error
	for try := 0; try <= h.Retries; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(interval):
			}
		}
		if last = a.check(ctx, u.Container.Name, h, timeout); last == nil {
			return nil
		}
	}
	return fmt.Errorf("health check: %w", last)
}

func (a *Agent) check(ctx context.Context, name string, h schema.Health, timeout time.Duration) error {
	cs, found, err := a.eng.Inspect(ctx, name)
	if err != nil {
		return err
	}
	if !found || !cs.Running {
		return fmt.Errorf("container %s is not running", name)
	}
	if len(h.Command) == 0 {
		return nil
	}
	res, err := a.eng.Exec(ctx, name, h.Command, timeout)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("%s exited %d: %s", strings.Join(h.Command, " "), res.ExitCode, clip(res.Output))
	}
	if h.Expect != "" && !bytes.Contains(res.Output, []byte(h.Expect)) {
		return fmt.Errorf("%s printed %q, not %q", strings.Join(h.Command, " "), clip(res.Output), h.Expect)
	}
	return nil
}

// writeNodeFile writes one verified file under an allowed directory,
// creating missing parent directories there.
// A link anywhere on the way is refused, not followed (package hostfs).
func (a *Agent) writeNodeFile(f schema.File, data []byte) error {
	return a.files().Write(f.Target, bytes.NewReader(data), os.FileMode(f.Mode))
}

// containerSpec is the engine spec of one service's container.
func containerSpec(rel *schema.Release, rn *schema.ReleaseNode, u *schema.NodeService) (engine.ContainerSpec, error) {
	img, ok := rel.ImageByName(u.Image)
	if !ok {
		return engine.ContainerSpec{}, fmt.Errorf("node %s: image %q not in release %d", rn.Name, u.Image, rel.Version)
	}
	c := u.Container
	env := make([]string, 0, len(c.Env))
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	spec := engine.ContainerSpec{
		Name: c.Name, Image: img.Digest, Cmd: c.Command, Entrypoint: c.Entrypoint, Env: env,
		Ports: c.Ports, Binds: c.Binds, RestartPolicy: c.Restart, Network: c.Network,
		Labels: map[string]string{engine.LabelNode: rn.Name, engine.LabelVersion: strconv.FormatInt(rel.Version, 10)},
	}
	h := sha256.New()
	fields := []any{spec.Image, spec.Cmd, spec.Entrypoint, spec.Env, spec.Ports, spec.Binds, spec.RestartPolicy, rn.Network}
	if c.Network != "" {
		// Only when set: the containers of releases without it keep
		// their spec digest, and are not recreated by an upgrade.
		fields = append(fields, c.Network)
	}
	fmt.Fprintf(h, "%q\n", fields)
	spec.Labels[LabelSpec] = hex.EncodeToString(h.Sum(nil))[:32]
	return spec, nil
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
