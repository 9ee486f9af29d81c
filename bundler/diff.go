package bundler

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/pullship/pullship/bundler/shared/bundle"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"

	"github.com/pullship/pullship/schema"
)

// FindRelease returns the commit of release version (0: the newest) on the
// release branch in the cache.
func (r *Repository) FindRelease(head plumbing.Hash, version int64) (plumbing.Hash, *schema.Release, error) {
	commits, err := r.Cache.Log(head, 0)
	if err != nil {
		return plumbing.ZeroHash, nil, err
	}
	for _, c := range commits {
		data, err := r.Cache.ReadFile(c.Hash, bundle.ManifestPath, schema.MaxFileSize)
		if err != nil {
			return plumbing.ZeroHash, nil, err
		}
		rel, err := schema.ParseRelease(bundle.ManifestPath, data)
		if err != nil {
			return plumbing.ZeroHash, nil, fmt.Errorf("release commit %s: %w", short(c.Hash), err)
		}
		if version == 0 || rel.Version == version {
			return c.Hash, rel, nil
		}
		if rel.Version < version {
			break
		}
	}
	return plumbing.ZeroHash, nil, fmt.Errorf("no release %d", version)
}

// Diff writes what changes from release a to release b: per node, the
// container, network and files (files as line diffs), and per image the
// tar entries added, removed or changed with the chunk bytes b adds.
func (r *Repository) Diff(ctx context.Context, a, b int64, w io.Writer) error {
	head, err := r.Sync(ctx)
	if err != nil {
		return err
	}
	ca, ra, err := r.FindRelease(head.Releases, a)
	if err != nil {
		return err
	}
	cb, rb, err := r.FindRelease(head.Releases, b)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "release %d → %d\n", ra.Version, rb.Version)
	for _, nb := range rb.Nodes {
		na, ok := ra.Node(nb.Name)
		if !ok {
			fmt.Fprintf(w, "\nnode %s: added\n", nb.Name)
			na = &schema.ReleaseNode{}
		}
		var out strings.Builder
		serviceChanges(&out, na.Units(), nb.Units())
		if na.Network != nb.Network {
			fmt.Fprintf(&out, "  network: %+v → %+v\n", na.Network, nb.Network)
		}
		if na.Wave != nb.Wave {
			fmt.Fprintf(&out, "  wave: %d → %d\n", na.Wave, nb.Wave)
		}
		old := map[string]schema.File{}
		for _, f := range na.Files {
			old[f.Target] = f
		}
		for _, fb := range nb.Files {
			fa, had := old[fb.Target]
			delete(old, fb.Target)
			if had && fa.SHA256 == fb.SHA256 && fa.Mode == fb.Mode {
				continue
			}
			if fb.Encrypted || fa.Encrypted {
				fmt.Fprintf(&out, "  file %s: encrypted to the node, changed (%d bytes)\n", fb.Target, fb.Length)
				continue
			}
			var da []byte
			if had {
				if da, err = bundle.ReadNodeFile(r.Cache, ca, nb.Name, fa); err != nil {
					return err
				}
			}
			db, err := bundle.ReadNodeFile(r.Cache, cb, nb.Name, fb)
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "  --- %s (release %d)\n  +++ %s (release %d)\n", fb.Target, ra.Version, fb.Target, rb.Version)
			writeLineDiff(&out, string(da), string(db))
		}
		for _, f := range na.Files {
			if _, gone := old[f.Target]; gone {
				fmt.Fprintf(&out, "  file %s: removed\n", f.Target)
			}
		}
		if out.Len() > 0 {
			if ok {
				fmt.Fprintf(w, "\nnode %s:\n", nb.Name)
			}
			io.WriteString(w, out.String())
		}
	}
	for _, na := range ra.Nodes {
		if _, ok := rb.Node(na.Name); !ok {
			fmt.Fprintf(w, "\nnode %s: removed\n", na.Name)
		}
	}
	for _, ib := range rb.Images {
		ia, ok := ra.ImageByName(ib.Name)
		if ok && ia.Digest == ib.Digest {
			continue
		}
		idxB, err := bundle.ReadImageIndex(r.Cache, cb, ib)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "\nimage %s: %s\n", ib.Name, ib.Digest)
		if !ok {
			fmt.Fprintf(w, "  new image: %d entries, %d chunks\n", len(idxB.Entries), bundle.NewChunkSet(idxB).Len())
			continue
		}
		idxA, err := bundle.ReadImageIndex(r.Cache, ca, *ia)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  was %s\n", ia.Digest)
		writeImageDiff(w, idxA, idxB)
	}
	return nil
}

// containerChanges lists the container settings that differ, one line each.
// serviceChanges writes what changed between two nodes' services: per
// service by name (the one service of a one-service node is unnamed, and
// written as before nodes had several).
func serviceChanges(out *strings.Builder, a, b []schema.NodeService) {
	prefix := func(u schema.NodeService) string {
		if u.Name == "" {
			return "  "
		}
		return "  service " + u.Name + ": "
	}
	old := map[string]schema.NodeService{}
	for _, u := range a {
		old[u.Name] = u
	}
	for _, ub := range b {
		ua, had := old[ub.Name]
		delete(old, ub.Name)
		if !had && ub.Name != "" {
			fmt.Fprintf(out, "%sadded (image %s, container %s)\n", prefix(ub), ub.Image, ub.Container.Name)
			continue
		}
		if ua.Image != ub.Image {
			fmt.Fprintf(out, "%simage: %s → %s\n", prefix(ub), ua.Image, ub.Image)
		}
		if !reflect.DeepEqual(ua.DependsOn, ub.DependsOn) || ua.Attach != ub.Attach {
			fmt.Fprintf(out, "%sdepends_on %v attach %v → depends_on %v attach %v\n", prefix(ub), ua.DependsOn, ua.Attach, ub.DependsOn, ub.Attach)
		}
		if !reflect.DeepEqual(ua.Container, ub.Container) {
			for _, line := range containerChanges(ua.Container, ub.Container) {
				fmt.Fprintf(out, "%scontainer %s\n", prefix(ub), line)
			}
		}
	}
	for _, ua := range a {
		if _, gone := old[ua.Name]; gone {
			fmt.Fprintf(out, "%sremoved\n", prefix(ua))
		}
	}
}

func containerChanges(a, b schema.Container) []string {
	var out []string
	field := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, fmt.Sprintf("%s: %v → %v", name, x, y))
		}
	}
	field("name", a.Name, b.Name)
	field("ports", a.Ports, b.Ports)
	field("binds", a.Binds, b.Binds)
	field("env", a.Env, b.Env)
	field("restart", a.Restart, b.Restart)
	field("command", a.Command, b.Command)
	field("entrypoint", a.Entrypoint, b.Entrypoint)
	field("reload", a.Reload, b.Reload)
	field("health", a.Health, b.Health)
	field("network", a.Network, b.Network)
	var ca, cb schema.Cluster
	if a.Cluster != nil {
		ca = *a.Cluster
	}
	if b.Cluster != nil {
		cb = *b.Cluster
	}
	field("cluster", ca, cb)
	return out
}

func writeLineDiff(w io.Writer, a, b string) {
	for _, d := range diff.Do(a, b) {
		prefix := "   "
		switch d.Type {
		case diffmatchpatch.DiffInsert:
			prefix = "  +"
		case diffmatchpatch.DiffDelete:
			prefix = "  -"
		}
		for _, line := range strings.SplitAfter(d.Text, "\n") {
			if line == "" {
				continue
			}
			if d.Type == diffmatchpatch.DiffEqual {
				continue
			}
			fmt.Fprintf(w, "%s%s", prefix, line)
			if !strings.HasSuffix(line, "\n") {
				fmt.Fprintln(w)
			}
		}
	}
}

func writeImageDiff(w io.Writer, a, b *schema.ImageIndex) {
	have := map[string]bool{}
	for _, c := range bundle.NewChunkSet(a).List() {
		have[c.Blob] = true
	}
	old := map[string]schema.ImageEntry{}
	for _, e := range a.Entries {
		old[e.Path] = e
	}
	var newBytes, total int64
	for _, e := range b.Entries {
		ea, had := old[e.Path]
		delete(old, e.Path)
		var entryNew int64
		for _, c := range e.StreamChunks() {
			if !have[c.Blob] {
				entryNew += c.Size
			}
		}
		newBytes += entryNew
		total += e.Size
		switch {
		case !had:
			fmt.Fprintf(w, "  + %s (%d bytes, %d new)\n", e.Path, e.Size, entryNew)
		case ea.Size != e.Size || fmt.Sprint(ea.StreamChunks()) != fmt.Sprint(e.StreamChunks()):
			fmt.Fprintf(w, "  ~ %s (%d → %d bytes, %d new in %d chunks)\n", e.Path, ea.Size, e.Size, entryNew, len(e.StreamChunks()))
		}
	}
	gone := make([]string, 0, len(old))
	for p := range old {
		gone = append(gone, p)
	}
	sort.Strings(gone)
	for _, p := range gone {
		fmt.Fprintf(w, "  - %s\n", p)
	}
	fmt.Fprintf(w, "  new chunk bytes: %d of %d\n", newBytes, total)
}
